//! A client of the local API over the node's Unix socket (used by the CLI).

use std::path::{Path, PathBuf};

use futures::{Stream, StreamExt};
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
        self.request_with(
            method,
            path,
            "application/json",
            Full::new(Bytes::from(body.unwrap_or_default())),
        )
        .await
    }

    async fn request_with<B>(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: B,
    ) -> Result<hyper::Response<hyper::body::Incoming>, Error>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
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
            .header("content-type", content_type)
            .body(body)
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
        read_json(self.request(method, path, body).await?).await
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        self.json(Method::GET, path, None).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, Error> {
        let body = serde_json::to_vec(body).map_err(|e| Error::Transport(e.to_string()))?;
        self.json(Method::POST, path, Some(body)).await
    }

    /// Posts a stream of bytes (a file) and reads the JSON answer.
    pub async fn post_stream<T: DeserializeOwned>(
        &self,
        path: &str,
        pieces: impl Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static,
    ) -> Result<T, Error> {
        let body = http_body_util::StreamBody::new(pieces.map(|p| p.map(|b| hyper::body::Frame::data(Bytes::from(b)))));
        read_json(
            self.request_with(Method::POST, path, "application/octet-stream", body)
                .await?,
        )
        .await
    }

    /// Reads a response body as a stream of bytes (a file).
    pub async fn get_stream(&self, path: &str) -> Result<impl Stream<Item = Result<Bytes, Error>> + use<>, Error> {
        let body = self.request(Method::GET, path, None).await?.into_body();
        Ok(futures::stream::unfold(body, |mut body| async move {
            loop {
                match body.frame().await? {
                    Ok(frame) => {
                        if let Ok(data) = frame.into_data() {
                            return Some((Ok(data), body));
                        }
                    }
                    Err(e) => return Some((Err(Error::Transport(e.to_string())), body)),
                }
            }
        }))
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

async fn read_json<T: DeserializeOwned>(resp: hyper::Response<hyper::body::Incoming>) -> Result<T, Error> {
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| Error::Transport(e.to_string()))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| Error::Transport(format!("unexpected answer: {e}")))
}
