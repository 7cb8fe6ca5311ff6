//! A client of the local API over the node's Unix socket (used by the CLI).

use std::path::{Path, PathBuf};

use futures::Stream;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, body::Bytes};
use hyper_util::rt::TokioIo;
use serde::{Serialize, de::DeserializeOwned};

use crate::api::ApiError;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("daemon not running (no API socket at {}): start it with `outpost daemon`", .0.display())]
    NotRunning(PathBuf),
    #[error("{}", .0.message)]
    Api(ApiError, StatusCode),
    #[error("talking to the daemon failed: {0}")]
    Transport(String),
}

/// Talks to one daemon.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    /// The client of the daemon serving `home`.
    pub fn for_home(home: &Path) -> Self {
        Self {
            socket: crate::home::client_socket_path(home),
        }
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, Error> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    Error::NotRunning(self.socket.clone())
                }
                _ => Error::Transport(e.to_string()),
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Error::Transport(e.to_string()))?;
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "outpost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| Error::Transport(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| Error::Transport(e.to_string()))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::Transport(e.to_string()))?
            .to_bytes();
        let err = serde_json::from_slice::<ApiError>(&bytes).unwrap_or(ApiError {
            code: "http".into(),
            message: format!("the daemon answered {status}"),
            hint: None,
        });
        Err(Error::Api(err, status))
    }

    async fn json<T: DeserializeOwned>(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<T, Error> {
        let resp = self.request(method, path, body).await?;
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::Transport(e.to_string()))?
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| Error::Transport(format!("unexpected answer: {e}")))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        self.json(Method::GET, path, None).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, Error> {
        let body = serde_json::to_vec(body).map_err(|e| Error::Transport(e.to_string()))?;
        self.json(Method::POST, path, Some(body)).await
    }

    /// Streams newline-delimited JSON values.
    pub async fn stream<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<impl Stream<Item = Result<T, Error>> + use<T>, Error> {
        let resp = self.request(Method::GET, path, None).await?;
        let body = resp.into_body();
        Ok(futures::stream::unfold(
            (body, Vec::<u8>::new()),
            |(mut body, mut buf)| async move {
                loop {
                    if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=pos).collect();
                        let item =
                            serde_json::from_slice(&line).map_err(|e| Error::Transport(format!("bad event: {e}")));
                        return Some((item, (body, buf)));
                    }
                    match body.frame().await {
                        Some(Ok(frame)) => {
                            if let Ok(data) = frame.into_data() {
                                buf.extend_from_slice(&data);
                            }
                        }
                        Some(Err(e)) => {
                            return Some((Err(Error::Transport(e.to_string())), (body, buf)));
                        }
                        None => return None,
                    }
                }
            },
        ))
    }
}
