//! `/outpost/blob/1`: attachments moved in verified ranges.
//!
//! A request names a blob and a range of 1 KiB chunks (at most
//! [`MAX_RANGE_BYTES`]); the answer is that range in bao encoding, which the
//! receiver checks against the blob's id (the BLAKE3 hash of its ciphertext)
//! before writing a byte. A node serves only complete blobs, only to devices
//! of a space whose message refers to the blob, and answers "not here"
//! otherwise, so a peer learns nothing from asking.
//!
//! A download ([`Download`]) starts from what its partial file already
//! verifies (after a broken link or a restart), asks the space's connected
//! members for the rest, a few ranges at a time, moves on to another peer
//! when one fails or does not hold it, and hands the finished blob to the core.

use std::{
    collections::{HashMap, VecDeque},
    io,
    ops::Range,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{AsyncRead, AsyncWrite};
use libp2p::{
    PeerId, StreamProtocol,
    request_response::{self, OutboundRequestId, ResponseChannel},
};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::{Internal, NetActor, codec};
use crate::{
    blobs::{BLOCK, BlobId, CHUNK_BYTES, MAX_RANGE_BYTES, Partial, Progress},
    core::FileWant,
    ids::DeviceId,
};

pub(super) const PROTOCOL: &str = "/outpost/blob/1";
/// A request is an id and two numbers.
const MAX_REQUEST_BYTES: usize = 128;
/// A range and its proof (the hashes of its path: a few KiB).
const MAX_RESPONSE_BYTES: usize = MAX_RANGE_BYTES as usize + (64 << 10);
/// Ranges in flight per download: bounds its memory (× 1 MiB) while keeping
/// the link busy.
const RANGES_IN_FLIGHT: usize = 4;
/// Downloads moving at once; the others wait their turn.
const ACTIVE_DOWNLOADS: usize = 4;
/// How long a peer that did not have a blob is not asked again (it may have
/// fetched it since).
const ASK_AGAIN: Duration = Duration::from_secs(10);
/// Chunks per request.
const RANGE_CHUNKS: u64 = MAX_RANGE_BYTES / CHUNK_BYTES;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct BlobRequest {
    pub id: BlobId,
    /// 1 KiB chunks `start..end`.
    pub start: u64,
    pub end: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) enum BlobResponse {
    /// The range, bao-encoded.
    Range(Vec<u8>),
    /// Not held whole here, or not for the asker.
    NotHere,
}

#[derive(Debug, Clone, Default)]
pub(super) struct BlobCodec;

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

async fn read<T: AsyncRead + Unpin + Send, V: serde::de::DeserializeOwned>(io: &mut T, cap: usize) -> io::Result<V> {
    let frame = codec::read_frame(io, cap).await?.map_err(invalid)?;
    postcard::from_bytes(&frame).map_err(invalid)
}

async fn write<T: AsyncWrite + Unpin + Send>(io: &mut T, value: &impl Serialize, cap: usize) -> io::Result<()> {
    codec::write_frame(io, postcard::to_stdvec(value).map_err(invalid)?, cap).await
}

impl request_response::Codec for BlobCodec {
    type Protocol = StreamProtocol;
    type Request = BlobRequest;
    type Response = BlobResponse;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<BlobRequest> {
        read(io, MAX_REQUEST_BYTES).await
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<BlobResponse> {
        read(io, MAX_RESPONSE_BYTES).await
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: BlobRequest,
    ) -> io::Result<()> {
        write(io, &req, MAX_REQUEST_BYTES).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: BlobResponse,
    ) -> io::Result<()> {
        write(io, &res, MAX_RESPONSE_BYTES).await
    }
}

/// What the blob tasks report back to the actor.
pub(super) enum BlobWork {
    Respond {
        channel: ResponseChannel<BlobResponse>,
        response: BlobResponse,
    },
    Opened {
        id: BlobId,
        opened: io::Result<(Partial, Vec<Range<u64>>)>,
    },
    Written {
        id: BlobId,
        range: Range<u64>,
        peer: PeerId,
        ok: bool,
    },
    Finished {
        id: BlobId,
        ok: bool,
    },
}

/// One blob being fetched.
struct Download {
    want: FileWant,
    /// `None` while its partial file is being opened and checked.
    partial: Option<Arc<Mutex<Partial>>>,
    /// Ranges not asked for yet.
    todo: VecDeque<Range<u64>>,
    in_flight: usize,
    /// Ranges being verified and written.
    writing: usize,
    /// Peers that did not have it, or sent a range that failed to verify, and since when.
    skip: HashMap<PeerId, Instant>,
    progress: Progress,
    finishing: bool,
}

/// The node's downloads, and its serving budget.
#[derive(Default)]
pub(super) struct Downloads {
    active: HashMap<BlobId, Download>,
    /// Waiting for a turn, in order.
    queued: VecDeque<FileWant>,
    requests: HashMap<OutboundRequestId, (BlobId, Range<u64>, PeerId)>,
    /// When the serving rate limit lets the next answer go.
    next_send: Option<Instant>,
}

/// `ranges` cut into requests: aligned to the tree's 16 KiB groups (so each
/// verifies on its own), at most [`RANGE_CHUNKS`] each.
fn pieces(ranges: Vec<Range<u64>>, chunks: u64) -> VecDeque<Range<u64>> {
    let group = 1u64 << BLOCK.chunk_log();
    let mut out = VecDeque::new();
    for r in ranges {
        let mut start = r.start / group * group;
        let end = r.end.div_ceil(group).saturating_mul(group).min(chunks);
        while start < end {
            let next = (start + RANGE_CHUNKS).min(end);
            out.push_back(start..next);
            start = next;
        }
    }
    out
}

fn range_bytes(range: &Range<u64>, total: u64) -> u64 {
    (range.end * CHUNK_BYTES).min(total) - range.start * CHUNK_BYTES
}

impl NetActor {
    /// A blob the core wants: fetched now, or when a slot frees up.
    pub(super) fn want_blob(&mut self, want: FileWant) {
        if let Some(d) = self.downloads.active.get_mut(&want.id) {
            d.want.holders = want.holders;
            return;
        }
        if self.downloads.queued.iter().any(|w| w.id == want.id) {
            return;
        }
        self.downloads.queued.push_back(want);
        self.start_downloads();
    }

    /// Stops fetching a blob (its message was retracted).
    pub(super) fn drop_blob(&mut self, id: &BlobId) {
        self.downloads.active.remove(id);
        self.downloads.queued.retain(|w| w.id != *id);
        self.downloads.requests.retain(|_, (b, _, _)| b != id);
        self.start_downloads();
    }

    fn start_downloads(&mut self) {
        while self.downloads.active.len() < ACTIVE_DOWNLOADS
            && let Some(want) = self.downloads.queued.pop_front()
        {
            let id = want.id;
            let size = want.cipher_size;
            self.downloads.active.insert(
                id,
                Download {
                    want,
                    partial: None,
                    todo: VecDeque::new(),
                    in_flight: 0,
                    writing: 0,
                    skip: HashMap::new(),
                    progress: Progress::default(),
                    finishing: false,
                },
            );
            let blobs = self.core.blobs();
            let out = self.internal_tx.clone();
            self.spawn(async move {
                let opened = tokio::task::spawn_blocking(move || {
                    let partial = blobs.partial(id, size)?;
                    let missing = partial.missing()?;
                    Ok((partial, missing))
                })
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e)));
                let _ = out.send(Internal::Blob(BlobWork::Opened { id, opened })).await;
            });
        }
    }

    pub(super) fn handle_blob_work(&mut self, work: BlobWork) {
        match work {
            BlobWork::Respond { channel, response } => {
                let _ = self.swarm.behaviour_mut().blob.send_response(channel, response);
            }
            BlobWork::Opened { id, opened } => {
                let Some(d) = self.downloads.active.get_mut(&id) else {
                    return;
                };
                match opened {
                    Ok((partial, missing)) => {
                        let total = partial.size();
                        d.todo = pieces(missing, partial.chunks());
                        let left: u64 = d.todo.iter().map(|r| range_bytes(r, total)).sum();
                        d.progress = Progress {
                            have: total - left,
                            total,
                            resumed_from: total - left,
                            fetched: 0,
                        };
                        if d.progress.have > 0 {
                            info!(file = %id.fmt_short(), have = d.progress.have, total, "resuming a download from what is on disk");
                        }
                        d.partial = Some(Arc::new(Mutex::new(partial)));
                        self.core.blobs().set_progress(id, d.progress);
                        self.pump_blob(id);
                    }
                    Err(error) => {
                        warn!(file = %id.fmt_short(), %error, "cannot open the download's file; dropping it until asked again");
                        self.drop_blob(&id);
                    }
                }
            }
            BlobWork::Written { id, range, peer, ok } => {
                let Some(d) = self.downloads.active.get_mut(&id) else {
                    return;
                };
                d.writing -= 1;
                if ok {
                    let n = range_bytes(&range, d.progress.total);
                    d.progress.have += n;
                    d.progress.fetched += n;
                    self.core.blobs().set_progress(id, d.progress);
                } else {
                    warn!(file = %id.fmt_short(), %peer, "a range failed to verify; asking another peer");
                    d.skip.insert(peer, Instant::now());
                    d.todo.push_front(range);
                }
                self.pump_blob(id);
            }
            BlobWork::Finished { id, ok } => {
                self.downloads.active.remove(&id);
                if ok {
                    info!(file = %id.fmt_short(), "file downloaded");
                    let core = self.core.clone();
                    self.spawn(async move { core.file_fetched(id).await });
                } else {
                    warn!(file = %id.fmt_short(), "cannot move the downloaded file into place; will try again");
                }
                self.start_downloads();
            }
        }
    }

    /// Asks connected holders for the next ranges, or finishes a download
    /// whose every range is written.
    pub(super) fn pump_blob(&mut self, id: BlobId) {
        let Some(d) = self.downloads.active.get_mut(&id) else {
            return;
        };
        let Some(partial) = d.partial.clone() else {
            return;
        };
        if d.todo.is_empty() && d.in_flight == 0 && d.writing == 0 {
            if !d.finishing {
                d.finishing = true;
                let out = self.internal_tx.clone();
                self.spawn(async move {
                    let ok = tokio::task::spawn_blocking(move || {
                        let partial = partial.lock().expect("partial lock");
                        // Every range verified as it arrived; finishing checks once more.
                        partial.missing().is_ok_and(|m| m.is_empty()) && partial.finish().is_ok()
                    })
                    .await
                    .unwrap_or(false);
                    let _ = out.send(Internal::Blob(BlobWork::Finished { id, ok })).await;
                });
            }
            return;
        }
        let now = Instant::now();
        d.skip.retain(|_, since| now.duration_since(*since) < ASK_AGAIN);
        let mut load: HashMap<PeerId, usize> = self
            .connected
            .iter()
            .filter(|(p, c)| d.want.holders.contains(&c.device) && !d.skip.contains_key(p))
            .map(|(p, _)| (*p, 0))
            .collect();
        for (blob, _, peer) in self.downloads.requests.values() {
            if *blob == id
                && let Some(n) = load.get_mut(peer)
            {
                *n += 1;
            }
        }
        while d.in_flight < RANGES_IN_FLIGHT {
            let Some(peer) = load.iter().min_by_key(|(_, n)| **n).map(|(p, _)| *p) else {
                break;
            };
            let Some(range) = d.todo.pop_front() else {
                break;
            };
            let request = BlobRequest {
                id,
                start: range.start,
                end: range.end,
            };
            let rid = self.swarm.behaviour_mut().blob.send_request(&peer, request);
            self.downloads.requests.insert(rid, (id, range, peer));
            d.in_flight += 1;
            *load.get_mut(&peer).expect("picked from it") += 1;
        }
    }

    /// Every download that waits for a peer tries again (a peer connected,
    /// or time passed).
    pub(super) fn pump_blobs(&mut self) {
        let ids: Vec<BlobId> = self.downloads.active.keys().copied().collect();
        for id in ids {
            self.pump_blob(id);
        }
    }

    pub(super) fn handle_blob_event(&mut self, event: request_response::Event<BlobRequest, BlobResponse>) {
        use request_response::{Event, Message};
        match event {
            Event::Message {
                peer,
                message: Message::Request { request, channel, .. },
                ..
            } => self.serve_blob(peer, request, channel),
            Event::Message {
                peer,
                message: Message::Response { request_id, response },
                ..
            } => {
                let Some((id, range, _)) = self.downloads.requests.remove(&request_id) else {
                    return;
                };
                let Some(d) = self.downloads.active.get_mut(&id) else {
                    return;
                };
                d.in_flight -= 1;
                match response {
                    BlobResponse::Range(encoded) => {
                        let partial = d.partial.clone().expect("requests start once opened");
                        d.writing += 1;
                        let out = self.internal_tx.clone();
                        let written = range.clone();
                        self.spawn(async move {
                            let ok = tokio::task::spawn_blocking(move || {
                                partial.lock().expect("partial lock").write(written, &encoded).is_ok()
                            })
                            .await
                            .unwrap_or(false);
                            let _ = out
                                .send(Internal::Blob(BlobWork::Written { id, range, peer, ok }))
                                .await;
                        });
                    }
                    BlobResponse::NotHere => {
                        debug!(file = %id.fmt_short(), %peer, "peer does not have the file");
                        d.skip.insert(peer, Instant::now());
                        d.todo.push_front(range);
                    }
                }
                self.pump_blob(id);
            }
            Event::OutboundFailure {
                request_id,
                peer,
                error,
                ..
            } => {
                let Some((id, range, _)) = self.downloads.requests.remove(&request_id) else {
                    return;
                };
                if let Some(d) = self.downloads.active.get_mut(&id) {
                    debug!(file = %id.fmt_short(), %peer, %error, "a range request failed; asking again");
                    d.in_flight -= 1;
                    d.todo.push_front(range);
                    if !self.connected.contains_key(&peer) {
                        d.skip.remove(&peer);
                    }
                }
                self.pump_blob(id);
            }
            Event::InboundFailure { .. } | Event::ResponseSent { .. } => {}
        }
    }

    /// Answers a range request, off the actor: the core says whether the
    /// asker may have the blob, a blocking task reads and encodes it, and the
    /// serving rate limit (if any) spaces the answers.
    fn serve_blob(&mut self, peer: PeerId, request: BlobRequest, channel: ResponseChannel<BlobResponse>) {
        let Some(device) = self.connected.get(&peer).map(|c| c.device) else {
            return;
        };
        let delay = self.upload_delay(range_bytes(&(request.start..request.end), u64::MAX));
        let (core, out) = (self.core.clone(), self.internal_tx.clone());
        self.spawn(async move {
            let response = encode_for(&core, device, request).await;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let _ = out.send(Internal::Blob(BlobWork::Respond { channel, response })).await;
        });
    }

    /// How long an answer of `bytes` waits under the serving rate limit.
    fn upload_delay(&mut self, bytes: u64) -> Duration {
        let Some(rate) = self.upload_rate else {
            return Duration::ZERO;
        };
        let now = Instant::now();
        let start = self.downloads.next_send.map_or(now, |t| t.max(now));
        self.downloads.next_send = Some(start + Duration::from_secs_f64(bytes as f64 / rate as f64));
        start - now
    }
}

async fn encode_for(core: &crate::core::CoreHandle, device: DeviceId, request: BlobRequest) -> BlobResponse {
    if request.end <= request.start || request.end - request.start > RANGE_CHUNKS {
        return BlobResponse::NotHere;
    }
    if !core.may_fetch(device, request.id).await {
        return BlobResponse::NotHere;
    }
    let blobs = core.blobs();
    let encoded = tokio::task::spawn_blocking(move || blobs.encode(&request.id, request.start..request.end)).await;
    match encoded {
        Ok(Ok(Some(bytes))) => BlobResponse::Range(bytes),
        Ok(Ok(None)) => BlobResponse::NotHere,
        Ok(Err(error)) => {
            warn!(file = %request.id.fmt_short(), %error, "cannot serve a range of a file");
            BlobResponse::NotHere
        }
        Err(_) => BlobResponse::NotHere,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_align_to_groups_and_cap_size() {
        let p = pieces(vec![0..3000, 3010..3020], 3020);
        assert_eq!(p, VecDeque::from([0..1024, 1024..2048, 2048..3008, 3008..3020]));
        assert!(pieces(Vec::new(), 10).is_empty());
    }

    #[test]
    fn range_bytes_clamp_at_the_end() {
        assert_eq!(range_bytes(&(0..2), 1500), 1500);
        assert_eq!(range_bytes(&(1..2), 4096), 1024);
    }
}
