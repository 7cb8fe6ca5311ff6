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
//! A download whose file cannot be opened or finished is tried again after a
//! growing wait; one whose holders are all offline gives its turn to one
//! that can move.
//!
//! Nothing a peer sends reaches arithmetic unchecked: a request's range is
//! validated before anything else looks at it, and the serving rate limit is
//! charged with the answer's real length, in saturating arithmetic.

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
/// the link busy. A range's answer takes about 13 ms on loopback (of which
/// the server's permission check and encoding are 3 ms); 4 in flight moved
/// 200 MB/s, 8 move 218 MB/s (BENCHMARKS.md, "Attachments").
const RANGES_IN_FLIGHT: usize = 8;
/// Downloads moving at once; the others wait their turn.
const ACTIVE_DOWNLOADS: usize = 4;
/// How long a peer that did not have a blob is not asked again (it may have
/// fetched it since).
const ASK_AGAIN: Duration = Duration::from_secs(10);
/// Chunks per request.
const RANGE_CHUNKS: u64 = MAX_RANGE_BYTES / CHUNK_BYTES;
/// First wait before a download whose file could not be opened or finished
/// (a full disk, a permission) is tried again; each failure in a row doubles it.
const RETRY_FIRST: Duration = Duration::from_secs(5);
/// Longest wait between such attempts: a fixed disk is noticed within minutes.
const RETRY_MAX: Duration = Duration::from_secs(300);
/// Most serving time queued behind the rate limit. Beyond it an asker is told
/// "not here" at once (and asks another holder) rather than piling up
/// answers, and their tasks, for minutes.
const MAX_UPLOAD_BACKLOG: Duration = Duration::from_secs(30);
/// Most one answer is charged to the rate limit, so an absurdly low rate
/// cannot push the schedule past what `Instant` can hold.
const MAX_UPLOAD_CHARGE: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct BlobRequest {
    pub id: BlobId,
    /// 1 KiB chunks `start..end`.
    pub start: u64,
    pub end: u64,
}

/// An answer. On the wire it is what postcard makes of this enum (the
/// variant's index, then a range as its length and its bytes), but written
/// and read by hand: serde moves a `Vec<u8>` byte by byte, a few ms of CPU
/// per 1 MiB range on each side.
#[derive(Debug, Clone)]
pub(super) enum BlobResponse {
    /// The range, bao-encoded.
    Range(Vec<u8>),
    /// Not held whole here, or not for the asker.
    NotHere,
}

/// [`BlobResponse`] variant indexes (postcard varints of one byte).
const TAG_RANGE: u8 = 0;
const TAG_NOT_HERE: u8 = 1;

impl BlobResponse {
    fn into_frame(self) -> Vec<u8> {
        match self {
            BlobResponse::Range(mut bytes) => {
                let mut header = vec![TAG_RANGE];
                header.extend(postcard::to_stdvec(&(bytes.len() as u64)).expect("a varint serializes"));
                // One memmove in place: `Blobs::encode` leaves room at the end.
                bytes.splice(0..0, header);
                bytes
            }
            BlobResponse::NotHere => vec![TAG_NOT_HERE],
        }
    }

    fn from_frame(mut frame: Vec<u8>) -> io::Result<Self> {
        match frame.split_first() {
            Some((&TAG_RANGE, rest)) => {
                let (len, bytes) = postcard::take_from_bytes::<u64>(rest).map_err(invalid)?;
                if len != bytes.len() as u64 {
                    return Err(invalid("a blob range's length does not match its frame"));
                }
                let header = frame.len() - bytes.len();
                frame.drain(..header);
                Ok(BlobResponse::Range(frame))
            }
            Some((&TAG_NOT_HERE, [])) => Ok(BlobResponse::NotHere),
            _ => Err(invalid("not a blob answer")),
        }
    }
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
        let frame = codec::read_frame(io, MAX_RESPONSE_BYTES).await?.map_err(invalid)?;
        BlobResponse::from_frame(frame)
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
        codec::write_frame(io, res.into_frame(), MAX_RESPONSE_BYTES).await
    }
}

/// What the blob tasks report back to the actor. Download events carry the
/// generation of the download they were started for: one for a download
/// dropped or restarted since is stale and ignored, so the counters of the
/// current one stay exact.
pub(super) enum BlobWork {
    /// An answer ready for a peer: charged to the rate limit, then sent.
    Encoded {
        channel: ResponseChannel<BlobResponse>,
        response: BlobResponse,
    },
    /// An answer whose rate-limit wait is over.
    Respond {
        channel: ResponseChannel<BlobResponse>,
        response: BlobResponse,
    },
    Opened {
        id: BlobId,
        generation: u64,
        opened: io::Result<Opened>,
    },
    Written {
        id: BlobId,
        generation: u64,
        range: Range<u64>,
        peer: PeerId,
        ok: bool,
    },
    Finished {
        id: BlobId,
        generation: u64,
        ok: bool,
    },
    /// The downloads the core records, read again after this actor missed
    /// some of its events.
    Wants(Vec<FileWant>),
}

/// A download's file, as opening it found it.
pub(super) enum Opened {
    /// Partial: the chunk ranges still missing.
    Partial(Partial, Vec<Range<u64>>),
    /// Already whole here (fetched by an earlier run that stopped before
    /// telling the core): nothing to download.
    Complete,
}

/// One blob being fetched.
struct Download {
    want: FileWant,
    /// Which (re)start of a download of this blob this is.
    generation: u64,
    /// `None` while its partial file is being opened and checked.
    partial: Option<Arc<Mutex<Partial>>>,
    /// Ranges not asked for yet.
    todo: VecDeque<Range<u64>>,
    in_flight: usize,
    /// Ranges received and being verified and written (their bytes are in memory).
    writing: usize,
    /// Peers that did not have it, failed a request, or sent a range that
    /// failed to verify, and since when.
    skip: HashMap<PeerId, Instant>,
    progress: Progress,
    finishing: bool,
}

impl Download {
    fn new(want: FileWant, generation: u64) -> Self {
        Self {
            want,
            generation,
            partial: None,
            todo: VecDeque::new(),
            in_flight: 0,
            writing: 0,
            skip: HashMap::new(),
            progress: Progress::default(),
            finishing: false,
        }
    }

    /// More ranges it may ask for now. Answers waiting to be written count
    /// with those in flight: together they bound its memory to
    /// [`RANGES_IN_FLIGHT`] ranges.
    fn room(&self) -> usize {
        RANGES_IN_FLIGHT.saturating_sub(self.in_flight.saturating_add(self.writing))
    }

    /// Opened, nothing asked or being written, not finishing: giving its
    /// slot away loses nothing but the check of its file when taken up again.
    fn idle(&self) -> bool {
        self.partial.is_some() && self.in_flight == 0 && self.writing == 0 && !self.finishing
    }
}

/// A range asked of a peer.
struct RangeRequest {
    id: BlobId,
    generation: u64,
    range: Range<u64>,
    peer: PeerId,
    /// When it was asked (traced with the answer).
    asked: Instant,
}

/// The serving rate limit: answers are spaced so that, on average, at most
/// `rate` bytes a second go out. Plain data; the caller supplies the time.
#[derive(Debug)]
struct UploadLimiter {
    /// Bytes a second, at least 1.
    rate: u64,
    /// When the next answer may go.
    next_send: Option<Instant>,
}

impl UploadLimiter {
    fn new(rate: u64) -> Self {
        Self {
            rate: rate.max(1),
            next_send: None,
        }
    }

    /// How long an answer of `bytes` waits before it goes, charging the
    /// limit for it; `None` (nothing charged) when the backlog is full.
    fn charge(&mut self, bytes: u64, now: Instant) -> Option<Duration> {
        let start = self.next_send.map_or(now, |t| t.max(now));
        let wait = start.saturating_duration_since(now);
        if wait > MAX_UPLOAD_BACKLOG {
            return None;
        }
        let nanos = u128::from(bytes) * 1_000_000_000 / u128::from(self.rate);
        let cost = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)).min(MAX_UPLOAD_CHARGE);
        self.next_send = Some(start.checked_add(cost).unwrap_or(start));
        Some(wait)
    }
}

/// The wait before the next attempt after `failures` in a row (at least 1).
fn retry_delay(failures: u32) -> Duration {
    let factor = 1u32.checked_shl(failures.saturating_sub(1)).unwrap_or(u32::MAX);
    RETRY_FIRST.saturating_mul(factor).min(RETRY_MAX)
}

/// The node's downloads, and its serving budget.
pub(super) struct Downloads {
    active: HashMap<BlobId, Download>,
    /// Waiting for a turn, in order.
    queued: VecDeque<FileWant>,
    /// Downloads whose file could not be opened or finished, and when they
    /// are tried again.
    retrying: HashMap<BlobId, (FileWant, Instant)>,
    /// Failures in a row per blob (reset when its download completes).
    failures: HashMap<BlobId, u32>,
    requests: HashMap<OutboundRequestId, RangeRequest>,
    /// The generation the next (re)started download gets.
    next_generation: u64,
    /// `None`: serving is not rate limited.
    limiter: Option<UploadLimiter>,
}

impl Downloads {
    /// `upload_rate`: bytes a second this node serves at most, if limited.
    pub(super) fn new(upload_rate: Option<u64>) -> Self {
        Self {
            active: HashMap::new(),
            queued: VecDeque::new(),
            retrying: HashMap::new(),
            failures: HashMap::new(),
            requests: HashMap::new(),
            next_generation: 0,
            limiter: upload_rate.map(UploadLimiter::new),
        }
    }

    /// Makes `want` an active download under a new generation, replacing
    /// any earlier one of the same blob (its requests are forgotten).
    fn activate(&mut self, want: FileWant) -> u64 {
        let generation = self.next_generation;
        self.next_generation += 1;
        let id = want.id;
        self.requests.retain(|_, r| r.id != id);
        self.active.insert(id, Download::new(want, generation));
        generation
    }

    /// The download of `id` if `generation` is its current one.
    fn current(&mut self, id: &BlobId, generation: u64) -> Option<&mut Download> {
        self.active.get_mut(id).filter(|d| d.generation == generation)
    }

    /// Takes the active download of `id` out and schedules another attempt
    /// after a wait that grows with each failure in a row; returns the wait.
    fn retry_later(&mut self, id: &BlobId, now: Instant) -> Option<Duration> {
        let d = self.active.remove(id)?;
        self.requests.retain(|_, r| r.id != *id);
        let failures = self.failures.entry(*id).or_insert(0);
        *failures = failures.saturating_add(1);
        let wait = retry_delay(*failures);
        self.retrying.insert(*id, (d.want, now + wait));
        Some(wait)
    }

    /// Moves the downloads whose wait is over back into the queue.
    fn requeue_due(&mut self, now: Instant) {
        let due: Vec<BlobId> = self
            .retrying
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some((want, _)) = self.retrying.remove(&id) {
                self.queued.push_back(want);
            }
        }
    }

    /// Forgets every trace of a download of `id`.
    fn remove(&mut self, id: &BlobId) {
        self.active.remove(id);
        self.queued.retain(|w| w.id != *id);
        self.retrying.remove(id);
        self.failures.remove(id);
        self.requests.retain(|_, r| r.id != *id);
    }
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

/// Ciphertext bytes of chunks `range` of a blob of `total` bytes (local
/// ranges only: they lie within the blob).
fn range_bytes(range: &Range<u64>, total: u64) -> u64 {
    range
        .end
        .saturating_mul(CHUNK_BYTES)
        .min(total)
        .saturating_sub(range.start.saturating_mul(CHUNK_BYTES))
}

/// A request's range is one this node would ever answer: non-empty, at most
/// [`RANGE_CHUNKS`]. (Whether it lies within the blob is checked against
/// the blob's size when it is encoded.)
fn sane_request(request: &BlobRequest) -> bool {
    request.start < request.end && request.end - request.start <= RANGE_CHUNKS
}

impl NetActor {
    /// A blob the core wants: fetched now, or when a slot frees up.
    pub(super) fn want_blob(&mut self, want: FileWant) {
        let downloads = &mut self.downloads;
        if let Some(d) = downloads.active.get_mut(&want.id) {
            d.want.holders = want.holders;
            return;
        }
        if let Some((w, _)) = downloads.retrying.get_mut(&want.id) {
            w.holders = want.holders;
            return;
        }
        if let Some(w) = downloads.queued.iter_mut().find(|w| w.id == want.id) {
            w.holders = want.holders;
            return;
        }
        downloads.queued.push_back(want);
        self.start_downloads();
    }

    /// Stops fetching a blob (its message was retracted).
    pub(super) fn drop_blob(&mut self, id: &BlobId) {
        self.downloads.remove(id);
        self.start_downloads();
    }

    /// Takes up the downloads the core records, and drops those it no longer
    /// does (their retraction was among the events missed).
    fn reload_wants(&mut self, wants: Vec<FileWant>) {
        let listed: std::collections::HashSet<BlobId> = wants.iter().map(|w| w.id).collect();
        let gone: Vec<BlobId> = (self.downloads.active.keys())
            .chain(self.downloads.queued.iter().map(|w| &w.id))
            .chain(self.downloads.retrying.keys())
            .filter(|id| !listed.contains(id))
            .copied()
            .collect();
        for id in gone {
            self.downloads.remove(&id);
        }
        for want in wants {
            self.want_blob(want);
        }
        self.start_downloads();
    }

    /// After missing core events: reads the recorded downloads again.
    pub(super) fn reload_blob_wants(&mut self) {
        let (core, out) = (self.core.clone(), self.internal_tx.clone());
        self.spawn(async move {
            match core.file_wants().await {
                Ok(wants) => {
                    let _ = out.send(Internal::Blob(BlobWork::Wants(wants))).await;
                }
                Err(error) => warn!(%error, "cannot read the downloads to take up"),
            }
        });
    }

    /// Some connected peer is one of the blob's holders.
    fn holder_connected(&self, want: &FileWant) -> bool {
        self.connected.values().any(|c| want.holders.contains(&c.device))
    }

    /// Fills the free slots from the queue, those with a holder online first.
    fn start_downloads(&mut self) {
        while self.downloads.active.len() < ACTIVE_DOWNLOADS {
            let next = (self.downloads.queued.iter())
                .position(|w| self.holder_connected(w))
                .unwrap_or(0);
            let Some(want) = self.downloads.queued.remove(next) else {
                break;
            };
            self.start_download(want);
        }
    }

    /// Opens a download's partial file off the actor (checking what it
    /// already verifies), unless the blob is whole here already.
    fn start_download(&mut self, want: FileWant) {
        let id = want.id;
        let size = want.cipher_size;
        let generation = self.downloads.activate(want);
        let blobs = self.core.blobs();
        let out = self.internal_tx.clone();
        let spawned = self.spawn(async move {
            let opened = tokio::task::spawn_blocking(move || {
                if blobs.has(&id) {
                    return Ok(Opened::Complete);
                }
                let partial = blobs.partial(id, size)?;
                let missing = partial.missing()?;
                Ok(Opened::Partial(partial, missing))
            })
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e)));
            let _ = out
                .send(Internal::Blob(BlobWork::Opened { id, generation, opened }))
                .await;
        });
        if !spawned {
            self.retry_blob(&id, "no task slot to open the download's file");
        }
    }

    /// A download that cannot go on now (its file failed to open or finish)
    /// is tried again after a wait, and its slot goes to the next one.
    fn retry_blob(&mut self, id: &BlobId, why: &str) {
        if let Some(wait) = self.downloads.retry_later(id, Instant::now()) {
            warn!(file = %id.fmt_short(), retry_in = ?wait, "{why}; trying again later");
        }
        self.start_downloads();
    }

    /// A download is complete here: the core stops asking for it.
    fn blob_complete(&mut self, id: BlobId) {
        self.downloads.active.remove(&id);
        self.downloads.failures.remove(&id);
        self.downloads.requests.retain(|_, r| r.id != id);
        self.core.blobs().forget_progress(&id);
        let core = self.core.clone();
        self.spawn(async move { core.file_fetched(id).await });
        self.start_downloads();
    }

    pub(super) fn handle_blob_work(&mut self, work: BlobWork) {
        match work {
            BlobWork::Encoded { channel, response } => self.respond_limited(channel, response),
            BlobWork::Respond { channel, response } => {
                let _ = self.swarm.behaviour_mut().blob.send_response(channel, response);
            }
            BlobWork::Opened { id, generation, opened } => self.blob_opened(id, generation, opened),
            BlobWork::Written {
                id,
                generation,
                range,
                peer,
                ok,
            } => {
                let Some(d) = self.downloads.current(&id, generation) else {
                    return;
                };
                d.writing = d.writing.saturating_sub(1);
                if ok {
                    let n = range_bytes(&range, d.progress.total);
                    d.progress.have = d.progress.have.saturating_add(n).min(d.progress.total);
                    d.progress.fetched = d.progress.fetched.saturating_add(n);
                    self.core.blobs().set_progress(id, d.progress);
                } else {
                    warn!(file = %id.fmt_short(), %peer, "a range failed to verify; asking another peer");
                    d.skip.insert(peer, Instant::now());
                    d.todo.push_front(range);
                }
                self.pump_blob(id);
            }
            BlobWork::Finished { id, generation, ok } => {
                if self.downloads.current(&id, generation).is_none() {
                    return;
                }
                if ok {
                    info!(file = %id.fmt_short(), "file downloaded");
                    self.blob_complete(id);
                } else {
                    self.retry_blob(&id, "cannot move the downloaded file into place");
                }
            }
            BlobWork::Wants(wants) => self.reload_wants(wants),
        }
    }

    fn blob_opened(&mut self, id: BlobId, generation: u64, opened: io::Result<Opened>) {
        let Some(d) = self.downloads.current(&id, generation) else {
            return;
        };
        match opened {
            Ok(Opened::Complete) => {
                debug!(file = %id.fmt_short(), "the file is here already");
                self.blob_complete(id);
            }
            Ok(Opened::Partial(partial, missing)) => {
                let total = partial.size();
                d.todo = pieces(missing, partial.chunks());
                let left: u64 = d.todo.iter().map(|r| range_bytes(r, total)).sum();
                let have = total.saturating_sub(left);
                d.progress = Progress {
                    have,
                    total,
                    resumed_from: have,
                    fetched: 0,
                };
                if have > 0 {
                    info!(file = %id.fmt_short(), have, total, "resuming a download from what is on disk");
                }
                d.partial = Some(Arc::new(Mutex::new(partial)));
                self.core.blobs().set_progress(id, d.progress);
                self.pump_blob(id);
            }
            Err(error) => {
                warn!(file = %id.fmt_short(), %error, "cannot open the download's file");
                self.retry_blob(&id, "cannot open the download's file");
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
                let generation = d.generation;
                let out = self.internal_tx.clone();
                let spawned = self.spawn(async move {
                    let ok = tokio::task::spawn_blocking(move || {
                        let partial = partial.lock().expect("partial lock: no holder panics");
                        // Every range was verified before it was written (or,
                        // resumed, when the download was opened), so the file
                        // is not hashed again here: 200 MB would cost 0.1 s. What
                        // rots on disk later never leaves it: serving validates
                        // each range, and reading authenticates each chunk.
                        partial.finish().is_ok()
                    })
                    .await
                    .unwrap_or(false);
                    let _ = out
                        .send(Internal::Blob(BlobWork::Finished { id, generation, ok }))
                        .await;
                });
                if !spawned && let Some(d) = self.downloads.active.get_mut(&id) {
                    // The next pump tries again.
                    d.finishing = false;
                }
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
        for r in self.downloads.requests.values() {
            if r.id == id
                && let Some(n) = load.get_mut(&r.peer)
            {
                *n += 1;
            }
        }
        while d.room() > 0 {
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
            self.downloads.requests.insert(
                rid,
                RangeRequest {
                    id,
                    generation: d.generation,
                    range,
                    peer,
                    asked: now,
                },
            );
            d.in_flight += 1;
            if let Some(n) = load.get_mut(&peer) {
                *n += 1;
            }
        }
    }

    /// Every download that waits for a peer tries again (a peer connected,
    /// or time passed); downloads whose wait after a failure is over queue
    /// again; idle ones without a holder online give their slot away.
    pub(super) fn pump_blobs(&mut self) {
        self.downloads.requeue_due(Instant::now());
        self.yield_idle_slots();
        self.start_downloads();
        let ids: Vec<BlobId> = self.downloads.active.keys().copied().collect();
        for id in ids {
            self.pump_blob(id);
        }
    }

    /// An active download that cannot move (no holder online, nothing in
    /// flight) goes back to the end of the queue when a queued one could
    /// move instead. Only then: so downloads never take turns for nothing.
    fn yield_idle_slots(&mut self) {
        let mut movable = (self.downloads.queued.iter())
            .filter(|w| self.holder_connected(w))
            .count();
        if movable == 0 {
            return;
        }
        let stuck: Vec<BlobId> = (self.downloads.active.values())
            .filter(|d| d.idle() && !self.holder_connected(&d.want))
            .map(|d| d.want.id)
            .collect();
        for id in stuck {
            if movable == 0 {
                break;
            }
            if let Some(d) = self.downloads.active.remove(&id) {
                debug!(file = %id.fmt_short(), "no holder online; giving the download's turn to another");
                self.downloads.queued.push_back(d.want);
                movable -= 1;
            }
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
                let Some(r) = self.downloads.requests.remove(&request_id) else {
                    return;
                };
                self.blob_response(r, peer, response);
            }
            Event::OutboundFailure {
                request_id,
                peer,
                error,
                ..
            } => {
                let Some(r) = self.downloads.requests.remove(&request_id) else {
                    return;
                };
                let id = r.id;
                if let Some(d) = self.downloads.current(&id, r.generation) {
                    debug!(file = %id.fmt_short(), %peer, %error, "a range request failed; asking another peer");
                    d.in_flight = d.in_flight.saturating_sub(1);
                    d.todo.push_front(r.range);
                    d.skip.insert(peer, Instant::now());
                }
                self.pump_blob(id);
            }
            Event::InboundFailure { .. } | Event::ResponseSent { .. } => {}
        }
    }

    /// An answer to one of our range requests: written (verified first) off
    /// the actor, or the range asked of another peer.
    fn blob_response(&mut self, r: RangeRequest, peer: PeerId, response: BlobResponse) {
        let RangeRequest {
            id,
            generation,
            range,
            asked,
            ..
        } = r;
        let Some(d) = self.downloads.current(&id, generation) else {
            return;
        };
        d.in_flight = d.in_flight.saturating_sub(1);
        let partial = match (response, d.partial.clone()) {
            (BlobResponse::Range(encoded), Some(partial)) => Some((encoded, partial)),
            (BlobResponse::Range(_), None) => None,
            (BlobResponse::NotHere, _) => {
                debug!(file = %id.fmt_short(), %peer, "peer does not have the file");
                d.skip.insert(peer, Instant::now());
                None
            }
        };
        let Some((encoded, partial)) = partial else {
            d.todo.push_front(range);
            self.pump_blob(id);
            return;
        };
        d.writing += 1;
        let out = self.internal_tx.clone();
        let (written, again) = (range.clone(), range.clone());
        let answered = asked.elapsed();
        let spawned = self.spawn(async move {
            let ok = tokio::task::spawn_blocking(move || {
                let start = Instant::now();
                let mut partial = partial.lock().expect("partial lock: no holder panics");
                let locked = start.elapsed();
                let ok = partial.write(written.clone(), &encoded).is_ok();
                debug!(file = %id.fmt_short(), chunks = ?written, ?answered, ?locked, written = ?start.elapsed(), ok, "range received");
                ok
            })
            .await
            .unwrap_or(false);
            let _ = out
                .send(Internal::Blob(BlobWork::Written {
                    id,
                    generation,
                    range,
                    peer,
                    ok,
                }))
                .await;
        });
        if !spawned && let Some(d) = self.downloads.current(&id, generation) {
            // Dropped unwritten: asked again.
            d.writing = d.writing.saturating_sub(1);
            d.todo.push_front(again);
        }
        self.pump_blob(id);
    }

    /// Answers a range request: a malformed range at once, otherwise off the
    /// actor (the core says whether the asker may have the blob, a blocking
    /// task reads and encodes it), then through the serving rate limit.
    fn serve_blob(&mut self, peer: PeerId, request: BlobRequest, channel: ResponseChannel<BlobResponse>) {
        let Some(device) = self.connected.get(&peer).map(|c| c.device) else {
            return;
        };
        if !sane_request(&request) {
            debug!(%peer, start = request.start, end = request.end, "a malformed range request");
            let _ = (self.swarm.behaviour_mut().blob).send_response(channel, BlobResponse::NotHere);
            return;
        }
        let (core, out) = (self.core.clone(), self.internal_tx.clone());
        self.spawn(async move {
            let response = encode_for(&core, device, request).await;
            let _ = out.send(Internal::Blob(BlobWork::Encoded { channel, response })).await;
        });
    }

    /// Sends an answer once the serving rate limit lets it go: charged with
    /// its real length; refused ("not here") when the backlog is full.
    fn respond_limited(&mut self, channel: ResponseChannel<BlobResponse>, response: BlobResponse) {
        let bytes = match &response {
            BlobResponse::Range(encoded) => encoded.len() as u64,
            // Costs nothing to send, so waits for nothing.
            BlobResponse::NotHere => 0,
        };
        let wait = match self.downloads.limiter.as_mut() {
            Some(limiter) if bytes > 0 => limiter.charge(bytes, Instant::now()),
            _ => Some(Duration::ZERO),
        };
        match wait {
            Some(wait) if wait.is_zero() => {
                let _ = self.swarm.behaviour_mut().blob.send_response(channel, response);
            }
            Some(wait) => {
                let out = self.internal_tx.clone();
                self.spawn(async move {
                    tokio::time::sleep(wait).await;
                    let _ = out.send(Internal::Blob(BlobWork::Respond { channel, response })).await;
                });
            }
            None => {
                debug!("serving backlog full; answering \"not here\" so the peer asks another holder");
                let _ = (self.swarm.behaviour_mut().blob).send_response(channel, BlobResponse::NotHere);
            }
        }
    }
}

async fn encode_for(core: &crate::core::CoreHandle, device: DeviceId, request: BlobRequest) -> BlobResponse {
    let start = Instant::now();
    if !sane_request(&request) || !core.may_fetch(device, request.id).await {
        return BlobResponse::NotHere;
    }
    let allowed = start.elapsed();
    let blobs = core.blobs();
    let encoded = tokio::task::spawn_blocking(move || blobs.encode(&request.id, request.start..request.end)).await;
    debug!(file = %request.id.fmt_short(), chunks = ?(request.start..request.end), ?allowed, encoded = ?start.elapsed(), "range served");
    match encoded {
        Ok(Ok(Some(bytes))) => BlobResponse::Range(bytes),
        Ok(Ok(None)) => BlobResponse::NotHere,
        Ok(Err(error)) if error.kind() == io::ErrorKind::InvalidInput => {
            debug!(file = %request.id.fmt_short(), %error, "a range request beyond the file");
            BlobResponse::NotHere
        }
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
    fn answers_are_written_by_hand_as_postcard_writes_them() {
        // What serde and postcard made of the answer before (and what older
        // nodes send and expect): the wire format is unchanged.
        #[derive(Serialize, Deserialize)]
        enum Postcard {
            Range(Vec<u8>),
            NotHere,
        }
        for range in [vec![], vec![7u8; 3000], vec![1u8; MAX_RANGE_BYTES as usize]] {
            let frame = BlobResponse::Range(range.clone()).into_frame();
            assert_eq!(frame, postcard::to_stdvec(&Postcard::Range(range.clone())).unwrap());
            assert!(matches!(BlobResponse::from_frame(frame), Ok(BlobResponse::Range(r)) if r == range));
        }
        let frame = BlobResponse::NotHere.into_frame();
        assert_eq!(frame, postcard::to_stdvec(&Postcard::NotHere).unwrap());
        assert!(matches!(BlobResponse::from_frame(frame), Ok(BlobResponse::NotHere)));
        // A peer's garbage is an error, never a panic.
        let mut short = postcard::to_stdvec(&Postcard::Range(vec![5; 10])).unwrap();
        short.pop();
        for bad in [
            vec![],
            vec![9],
            vec![TAG_NOT_HERE, 0],
            vec![TAG_RANGE],
            vec![TAG_RANGE, 0xff],
            short,
        ] {
            assert!(BlobResponse::from_frame(bad).is_err());
        }
    }

    #[test]
    fn pieces_align_to_groups_and_cap_size() {
        let p = pieces(vec![0..3000, 3010..3020], 3020);
        assert_eq!(p, VecDeque::from([0..1024, 1024..2048, 2048..3008, 3008..3020]));
        assert!(pieces(Vec::new(), 10).is_empty());
    }

    fn want(id: u8) -> FileWant {
        FileWant {
            id: BlobId([id; 32]),
            space: crate::ids::SpaceId([0; 16]),
            cipher_size: 10 << 20,
            holders: Vec::new(),
        }
    }

    #[test]
    fn malformed_ranges_are_refused_before_any_arithmetic() {
        let request = |start, end| BlobRequest {
            id: BlobId([1; 32]),
            start,
            end,
        };
        assert!(sane_request(&request(0, RANGE_CHUNKS)));
        assert!(!sane_request(&request(5, 5)), "empty");
        assert!(!sane_request(&request(u64::MAX, 0)), "start after end");
        assert!(!sane_request(&request(0, RANGE_CHUNKS + 1)), "too long");
        assert!(!sane_request(&request(0, u64::MAX)), "huge");
        let (high, low) = (u64::MAX, 0);
        assert_eq!(range_bytes(&(high..low), u64::MAX), 0, "never panics");
    }

    #[test]
    fn the_rate_limit_charges_real_lengths_and_bounds_its_backlog() {
        let now = Instant::now();
        let mut limiter = UploadLimiter::new(1 << 20);
        assert_eq!(limiter.charge(1 << 20, now), Some(Duration::ZERO));
        assert_eq!(limiter.charge(1 << 19, now), Some(Duration::from_secs(1)));
        // Enormous answers and a zero rate cannot overflow or panic.
        let mut tiny = UploadLimiter::new(0);
        assert_eq!(tiny.charge(u64::MAX, now), Some(Duration::ZERO));
        assert_eq!(tiny.charge(1, now), None, "backlog full: refused, not queued");
        assert_eq!(tiny.charge(u64::MAX, now + Duration::from_secs(3600)), None);
        // Once the backlog drains below the bound, answers go again.
        let mut limiter = UploadLimiter::new(1000);
        assert_eq!(limiter.charge(40_000, now), Some(Duration::ZERO));
        assert_eq!(limiter.charge(1, now), None);
        assert_eq!(
            limiter.charge(1, now + Duration::from_secs(20)),
            Some(Duration::from_secs(20))
        );
    }

    #[test]
    fn answers_waiting_to_be_written_count_against_ranges_in_flight() {
        let mut d = Download::new(want(1), 0);
        assert_eq!(d.room(), RANGES_IN_FLIGHT);
        d.writing = RANGES_IN_FLIGHT - 1;
        assert_eq!(d.room(), 1);
        d.in_flight = 1;
        assert_eq!(d.room(), 0);
        d.writing = RANGES_IN_FLIGHT * 2;
        assert_eq!(d.room(), 0, "never underflows");
    }

    #[test]
    fn events_of_an_earlier_download_of_the_same_blob_are_stale() {
        let mut downloads = Downloads::new(None);
        let id = want(1).id;
        let first = downloads.activate(want(1));
        assert!(downloads.current(&id, first).is_some());
        // Dropped and asked for again: the first run's events must not touch it.
        downloads.remove(&id);
        assert!(downloads.current(&id, first).is_none());
        let second = downloads.activate(want(1));
        assert_ne!(first, second);
        assert!(downloads.current(&id, first).is_none());
        assert!(downloads.current(&id, second).is_some());
    }

    #[test]
    fn a_failed_download_is_retried_after_a_growing_capped_wait() {
        assert_eq!(retry_delay(1), RETRY_FIRST);
        assert_eq!(retry_delay(2), RETRY_FIRST * 2);
        assert_eq!(retry_delay(40), RETRY_MAX);
        assert_eq!(retry_delay(u32::MAX), RETRY_MAX);
        let mut downloads = Downloads::new(None);
        let id = want(1).id;
        let now = Instant::now();
        downloads.activate(want(1));
        assert_eq!(downloads.retry_later(&id, now), Some(RETRY_FIRST));
        assert!(downloads.active.is_empty(), "its slot is free");
        downloads.requeue_due(now + RETRY_FIRST / 2);
        assert!(downloads.queued.is_empty(), "not before its wait");
        downloads.requeue_due(now + RETRY_FIRST);
        assert_eq!(downloads.queued.front().map(|w| w.id), Some(id));
        // A second failure in a row waits longer.
        let want = downloads.queued.pop_front().unwrap();
        downloads.activate(want);
        assert_eq!(downloads.retry_later(&id, now), Some(RETRY_FIRST * 2));
        downloads.remove(&id);
        assert!(downloads.retrying.is_empty() && downloads.failures.is_empty());
    }

    #[test]
    fn range_bytes_clamp_at_the_end() {
        assert_eq!(range_bytes(&(0..2), 1500), 1500);
        assert_eq!(range_bytes(&(1..2), 4096), 1024);
    }
}
