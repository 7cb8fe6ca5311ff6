//! Length-prefixed frames for `/outpost/sync/1`: u32 big-endian length, then the
//! postcard frame. The length is checked against the cap before anything is
//! allocated.
//!
//! An inbound request that breaks a cap or does not decode is handed to the
//! network actor as `Err(FrameError)` rather than failing the stream inside
//! libp2p: only the actor knows which peer sent it, and it warns naming them.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

use crate::sync::{self, FrameError, MAX_FRAME_BYTES, Request, Response};

#[derive(Debug, Clone, Default)]
pub(crate) struct SyncCodec;

/// An inbound request as read: a decoded frame, or why it was refused.
pub(crate) type Inbound = Result<Request, FrameError>;

/// Reads one frame; `Ok(Err(_))` when the declared length breaks the cap (the
/// body is not read).
pub(super) async fn read_frame<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    cap: usize,
) -> io::Result<Result<Vec<u8>, FrameError>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > cap {
        return Ok(Err(FrameError::TooLarge(len)));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(Ok(buf))
}

pub(super) async fn write_frame<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    bytes: Vec<u8>,
    cap: usize,
) -> io::Result<()> {
    if bytes.len() > cap {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "outgoing frame exceeds the cap",
        ));
    }
    io.write_all(&(bytes.len() as u32).to_be_bytes()).await?;
    io.write_all(&bytes).await?;
    io.close().await
}

fn invalid(e: sync::FrameError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl libp2p::request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = Inbound;
    type Response = Response;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Inbound> {
        // Packed frames are rebuilt here, so the actor sees plain envelopes only.
        Ok(read_frame(io, MAX_FRAME_BYTES)
            .await?
            .and_then(|frame| match sync::decode_request(&frame)? {
                Request::Packed { groups } => sync::unpack(groups).map(|envelopes| Request::Envelopes { envelopes }),
                other => Ok(other),
            }))
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Response> {
        read_frame(io, MAX_FRAME_BYTES)
            .await?
            .and_then(|frame| sync::decode_response(&frame))
            .map_err(invalid)
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Inbound,
    ) -> io::Result<()> {
        let req = req.map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        write_frame(io, sync::encode(&req), MAX_FRAME_BYTES).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Response,
    ) -> io::Result<()> {
        write_frame(io, sync::encode(&res), MAX_FRAME_BYTES).await
    }
}
