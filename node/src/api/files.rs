//! Attachments over the local API: a file uploaded with its message, fetched
//! from peers, and read back. Bodies stream both ways, so memory stays flat
//! whatever the file's size.

use axum::{
    body::Body,
    extract::{Path, Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{AppState, Failure, Json, error, parse_space};
use crate::{
    blobs::{Imported, PLAIN_CHUNK},
    core::{self, FileRef, FileStatus, Sent},
};

/// Pieces of a file in flight between the socket and the disk: bounds the
/// memory an upload or a read holds.
const PIECES_IN_FLIGHT: usize = 8;

/// `POST /v1/chats/{space}/files?name=N[&text=T][&reply_to=M][&client_id=C]`,
/// the file's bytes as the body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Upload {
    pub name: String,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub reply_to: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
}

fn io_failure(e: std::io::Error) -> Failure {
    let status = match e.kind() {
        std::io::ErrorKind::FileTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(
        status,
        "file",
        e.to_string(),
        Some("check disk space and the daemon log"),
    )
}

/// Imports the body into the store (encrypting as it arrives), then posts the
/// message that carries the file; answers once both are durable.
pub(super) async fn upload(
    State(s): State<AppState>,
    Path(space): Path<String>,
    Query(q): Query<Upload>,
    body: Body,
) -> Result<Json<Sent>, Failure> {
    let space = parse_space(&space)?;
    core::check_file_name(&q.name)?;
    let blobs = s.core.blobs();
    // `Some(piece)` is data, `None` the end: a body that breaks off imports nothing.
    let (tx, mut rx) = mpsc::channel::<Option<axum::body::Bytes>>(PIECES_IN_FLIGHT);
    let store = blobs.clone();
    let import = tokio::task::spawn_blocking(move || -> std::io::Result<Imported> {
        let mut import = store.import()?;
        loop {
            match rx.blocking_recv() {
                Some(Some(piece)) => import.write(&piece)?,
                Some(None) => return import.finish(),
                None => return Err(std::io::Error::other("the upload broke off")),
            }
        }
    });
    let mut stream = body.into_data_stream();
    let mut broke = None;
    while let Some(piece) = stream.next().await {
        match piece {
            Ok(piece) => {
                if tx.send(Some(piece)).await.is_err() {
                    break; // the import failed: its error is reported below
                }
            }
            Err(e) => {
                broke = Some(e.to_string());
                break;
            }
        }
    }
    if broke.is_none() {
        let _ = tx.send(None).await;
    }
    drop(tx);
    let imported = import
        .await
        .map_err(|e| io_failure(std::io::Error::other(e)))?
        .map_err(|e| match &broke {
            Some(why) => error(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("the upload broke off: {why}"),
                None,
            ),
            None => io_failure(e),
        })?;
    let outgoing = core::Outgoing {
        text: q.text,
        reply_to: q.reply_to,
        client_id: q.client_id,
        file: Some(FileRef {
            id: imported.id,
            name: q.name,
            size: imported.size,
            key: imported.key.clone(),
        }),
    };
    match s.core.send_message(space, outgoing).await {
        Ok(sent) => Ok(Json(sent)),
        Err(e) => {
            let _ = tokio::task::spawn_blocking(move || blobs.delete(&imported.id)).await;
            Err(e.into())
        }
    }
}

/// `POST /v1/files/{id}/get`: fetch it from peers unless it is here.
pub(super) async fn get(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<FileStatus>, Failure> {
    Ok(Json(s.core.file_get(id).await?))
}

/// `GET /v1/files/{id}`: where it stands (download progress included).
pub(super) async fn show(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<FileStatus>, Failure> {
    Ok(Json(s.core.file_status(id).await?))
}

/// `GET /v1/files/{id}/content`: the plaintext, decrypted as it streams.
pub(super) async fn content(State(s): State<AppState>, Path(id): Path<String>) -> Result<Response, Failure> {
    let file = s.core.file_to_read(id).await?;
    let blobs = s.core.blobs();
    let size = file.size;
    let mut reader = tokio::task::spawn_blocking(move || blobs.reader(&file.id, file.key.clone(), file.size))
        .await
        .map_err(|e| io_failure(std::io::Error::other(e)))?
        .map_err(io_failure)?;
    let (tx, rx) = mpsc::channel::<std::io::Result<axum::body::Bytes>>(PIECES_IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        loop {
            let mut piece = vec![0u8; PLAIN_CHUNK];
            match reader.read(&mut piece) {
                Ok(0) => return,
                Ok(n) => {
                    piece.truncate(n);
                    if tx.blocking_send(Ok(piece.into())).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
