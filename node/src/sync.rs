//! The sync protocol `/outpost/sync/1`: frames and the pure logic that decides what
//! to send. No I/O here; [`crate::net`] moves the frames.
//!
//! A session, each way, on every (re)connect and periodically:
//!
//! 1. `Offer`: my device certificate and, for every space I know the peer may hold
//!    (it is a member or named replicator), my version vector. I never name a space
//!    to a peer not entitled to it.
//! 2. An offer is a pull: the peer answers with its version vectors for the same
//!    spaces (empty for a space it does not have yet, which means "send
//!    everything") and pushes the `Envelopes` I lack, in topological order, in
//!    frames of bounded size. Its answer to my offer only updates my view of it:
//!    both sides offer, so each pulls what it lacks once per round.
//! 3. The receiver acks each frame with counts; envelopes whose parents are
//!    missing wait in its pending table and trigger a fresh offer.
//! 4. Live: every newly stored envelope is pushed at once to connected entitled
//!    peers (the doorbell is the envelope itself). Reconciliation by offer stays the
//!    source of truth; a lost push is repaired by the next offer.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{
    envelope::{Envelope, Header, Kind, MAX_CONTROL_HEADS, MAX_PARENTS},
    identity::{DeviceCert, Sig},
    ids::{ActorKey, DeviceId, DocId, EnvelopeId, EpochId, SpaceId},
    link::{JoinOutcome, JoinRequest},
    org::{
        MAX_DRAFTS, MAX_VERSIONS_PER_FRAME, PolicyFrame,
        enroll::{EnrollOutcome, EnrollRequest},
    },
};

/// The protocol id; a breaking change gets a new number.
pub const PROTOCOL: &str = "/outpost/sync/1";
/// Largest frame read from a peer, checked before allocating: a frame of
/// envelopes targets 1 MiB (or one envelope of up to 1 MiB), and offers of a
/// few hundred spaces stay far below this.
pub const MAX_FRAME_BYTES: usize = 4 << 20;
/// Most spaces in one offer.
pub const MAX_SPACES_PER_OFFER: usize = 4096;
/// Most writers in one version vector: a space's writer count grows with daemon
/// runs; snapshots (later) collapse them.
pub const MAX_WRITERS_PER_VV: usize = 65_536;
/// Most envelopes in one frame; with the byte cap, bounds what a frame can make us do.
pub const MAX_ENVELOPES_PER_FRAME: usize = 4096;
/// Target size of an outgoing envelope frame, well below [`MAX_FRAME_BYTES`].
pub const TARGET_FRAME_BYTES: usize = 1 << 20;

/// For each writer, the highest seq held with every lower seq also held.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionVector(pub BTreeMap<ActorKey, u64>);

impl VersionVector {
    pub fn get(&self, actor: &ActorKey) -> u64 {
        self.0.get(actor).copied().unwrap_or(0)
    }

    /// Records `seq` of `actor` as held (callers add seqs in order).
    pub fn advance(&mut self, actor: ActorKey, seq: u64) {
        let entry = self.0.entry(actor).or_insert(0);
        *entry = (*entry).max(seq);
    }

    /// Holds everything `other` holds too (pointwise maximum).
    pub fn merge(&mut self, other: &VersionVector) {
        for (actor, seq) in &other.0 {
            self.advance(*actor, *seq);
        }
    }

    /// What `theirs` lacks of `self`: (actor, first missing seq, last seq).
    pub fn missing_in(&self, theirs: &VersionVector) -> Vec<(ActorKey, u64, u64)> {
        self.0
            .iter()
            .filter_map(|(actor, &mine)| {
                let have = theirs.get(actor);
                (mine > have).then_some((*actor, have + 1, mine))
            })
            .collect()
    }

    /// How many changes `theirs` lacks of `self`.
    pub fn count_missing_in(&self, theirs: &VersionVector) -> u64 {
        self.missing_in(theirs).iter().map(|(_, from, to)| to - from + 1).sum()
    }
}

/// One space's version vector in an offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceVv {
    pub space: SpaceId,
    pub vv: VersionVector,
}

/// A request frame. postcard: append variants, never reorder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Offer {
        cert: Box<DeviceCert>,
        spaces: Vec<SpaceVv>,
    },
    Envelopes {
        envelopes: Vec<Vec<u8>>,
    },
    /// The same envelopes with their shared header fields sent once per group
    /// (see [`pack`]); the receiver rebuilds the exact bytes and verifies them.
    Packed {
        groups: Vec<PackedGroup>,
    },
    /// A device asks to join this device's user (see [`crate::link`]).
    Join(Box<JoinRequest>),
    /// The sender's org policy: sent first on every connection, and when a new
    /// version is published. Answered with [`Response::Policy`].
    Policy(Box<PolicyFrame>),
    /// A device asks an admin's device to enroll it (see [`crate::org::enroll`]);
    /// an anchor takes it for an admin device that is offline.
    Enroll(Box<EnrollRequest>),
    /// An anchor hands over a request it held for this (admin) device.
    EnrollRelayed(Box<EnrollRequest>),
    /// Reminders fired by the sender, a device of the receiver's user: the
    /// receiver does not fire them again (see `core::reminders`). Sent when
    /// one fires and when siblings connect. Answered with `Response::Ack`.
    Claims(Vec<Claim>),
    /// Chat bodies the sender lacks (it read their ids in messages it
    /// holds): answered with [`Response::Sides`], each body or the tombstone
    /// that deleted it.
    Bodies {
        space: SpaceId,
        ids: Vec<EnvelopeId>,
    },
}

/// Most bodies asked for in one request.
pub const MAX_BODIES_PER_REQUEST: usize = 1024;

/// A reminder a device fired: (calendar, event, occurrence, minutes before).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub space: SpaceId,
    pub event: String,
    pub key: String,
    pub minutes: u32,
    pub fired_at_ms: i64,
}

/// Most reminder claims in one frame.
pub const MAX_CLAIMS: usize = 4096;

/// Consecutive envelopes that share kind, space, doc, epoch, writer and control
/// heads: those fields travel once. About 160 bytes less per envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackedGroup {
    pub kind: Kind,
    pub space: SpaceId,
    pub doc: DocId,
    pub epoch: EpochId,
    pub author: DeviceId,
    pub incarnation: u64,
    pub control_heads: Vec<EnvelopeId>,
    pub items: Vec<PackedItem>,
}

/// One envelope of a group: what differs from its neighbours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackedItem {
    pub seq: u64,
    pub parents: PackedParents,
    pub body: Vec<u8>,
    pub sig: Sig,
}

/// An envelope's parents. postcard: append variants, never reorder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PackedParents {
    /// Exactly the previous envelope of the group (a writer's usual case).
    Previous,
    Listed(Vec<EnvelopeId>),
}

/// Packs envelopes (in order) into groups that factor out shared header fields.
pub fn pack(envelopes: &[Envelope]) -> Vec<PackedGroup> {
    let mut groups: Vec<PackedGroup> = Vec::new();
    let mut previous: Option<EnvelopeId> = None;
    for env in envelopes {
        let h = env.header();
        let same_group = groups.last().is_some_and(|g| {
            g.kind == h.kind
                && g.space == h.space
                && g.doc == h.doc
                && g.epoch == h.epoch
                && g.author == h.author
                && g.incarnation == h.incarnation
                && g.control_heads == h.control_heads
        });
        if !same_group {
            groups.push(PackedGroup {
                kind: h.kind,
                space: h.space,
                doc: h.doc,
                epoch: h.epoch,
                author: h.author,
                incarnation: h.incarnation,
                control_heads: h.control_heads.clone(),
                items: Vec::new(),
            });
            previous = None;
        }
        let parents = match (h.parents.as_slice(), previous) {
            ([only], Some(prev)) if *only == prev => PackedParents::Previous,
            _ => PackedParents::Listed(h.parents.clone()),
        };
        groups
            .last_mut()
            .expect("a group was just ensured")
            .items
            .push(PackedItem {
                seq: h.seq,
                parents,
                body: env.body().to_vec(),
                sig: Sig(env.signature()),
            });
        previous = Some(env.id());
    }
    groups
}

/// Rebuilds the exact envelope bytes of packed groups. Nothing is trusted: the
/// bytes are decoded and their signatures verified like any others.
pub fn unpack(groups: Vec<PackedGroup>) -> Result<Vec<Vec<u8>>, FrameError> {
    let mut out = Vec::new();
    for g in groups {
        if g.control_heads.len() > MAX_CONTROL_HEADS {
            return Err(FrameError::Cap("control heads per group"));
        }
        let mut previous: Option<EnvelopeId> = None;
        for item in g.items {
            let parents = match item.parents {
                PackedParents::Previous => vec![previous.ok_or(FrameError::Decode)?],
                PackedParents::Listed(list) if list.len() > MAX_PARENTS => {
                    return Err(FrameError::Cap("parents per envelope"));
                }
                PackedParents::Listed(list) => list,
            };
            let header = Header {
                kind: g.kind,
                space: g.space,
                doc: g.doc,
                epoch: g.epoch,
                author: g.author,
                incarnation: g.incarnation,
                seq: item.seq,
                parents,
                control_heads: g.control_heads.clone(),
            };
            let bytes = Envelope::raw_from_parts(&header, &item.body, &item.sig.0);
            previous = Some(EnvelopeId::of(&bytes));
            out.push(bytes);
        }
    }
    Ok(out)
}

/// A response frame. postcard: append variants, never reorder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Offer {
        spaces: Vec<SpaceVv>,
    },
    Ack(Ack),
    Joined(Box<JoinOutcome>),
    /// What the sender of a [`Request::Policy`] lacks (`None`: another org, or none).
    Policy(Option<Box<PolicyFrame>>),
    Enrolled(Box<EnrollOutcome>),
    /// The side envelopes (bodies, tombstones) a [`Request::Bodies`] asked for
    /// that the answering node holds, within one frame.
    Sides {
        space: SpaceId,
        envelopes: Vec<Vec<u8>>,
        /// More were held than fit: ask again.
        more: bool,
    },
}

/// Most sibling devices a join answer may list.
pub const MAX_SIBLINGS: usize = 256;

/// What the receiver did with a frame of envelopes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub stored: u32,
    pub duplicate: u32,
    pub pending: u32,
    pub rejected: u32,
    /// The receiver's version vectors for the spaces the frame touched, so the
    /// sender knows exactly what it now holds.
    pub vv: Vec<SpaceVv>,
}

/// Why a frame is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_BYTES}-byte cap")]
    TooLarge(usize),
    #[error("frame does not decode")]
    Decode,
    #[error("frame exceeds a collection cap ({0})")]
    Cap(&'static str),
}

/// Decodes a frame and enforces every collection cap.
pub fn decode_request(bytes: &[u8]) -> Result<Request, FrameError> {
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(bytes.len()));
    }
    let req: Request = decode_exact(bytes)?;
    match &req {
        Request::Offer { spaces, .. } => check_offer(spaces)?,
        Request::Envelopes { envelopes } => {
            if envelopes.len() > MAX_ENVELOPES_PER_FRAME {
                return Err(FrameError::Cap("envelopes per frame"));
            }
        }
        Request::Packed { groups } => {
            if groups.iter().map(|g| g.items.len()).sum::<usize>() > MAX_ENVELOPES_PER_FRAME {
                return Err(FrameError::Cap("envelopes per frame"));
            }
        }
        Request::Join(_) => {}
        Request::Policy(frame) => check_policy(frame)?,
        Request::Enroll(_) | Request::EnrollRelayed(_) => {}
        Request::Claims(claims) => {
            if claims.len() > MAX_CLAIMS {
                return Err(FrameError::Cap("reminder claims per frame"));
            }
        }
        Request::Bodies { ids, .. } => {
            if ids.len() > MAX_BODIES_PER_REQUEST {
                return Err(FrameError::Cap("bodies per request"));
            }
        }
    }
    Ok(req)
}

pub fn decode_response(bytes: &[u8]) -> Result<Response, FrameError> {
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(bytes.len()));
    }
    let resp: Response = decode_exact(bytes)?;
    match &resp {
        Response::Offer { spaces } => check_offer(spaces)?,
        Response::Joined(outcome) => {
            if let JoinOutcome::Accepted(r) = outcome.as_ref()
                && r.siblings.len() > MAX_SIBLINGS
            {
                return Err(FrameError::Cap("sibling devices"));
            }
        }
        Response::Ack(_) => {}
        Response::Policy(Some(frame)) => check_policy(frame)?,
        Response::Policy(None) | Response::Enrolled(_) => {}
        Response::Sides { envelopes, .. } => {
            if envelopes.len() > MAX_ENVELOPES_PER_FRAME {
                return Err(FrameError::Cap("envelopes per frame"));
            }
        }
    }
    Ok(resp)
}

fn check_policy(frame: &PolicyFrame) -> Result<(), FrameError> {
    if frame.versions.len() > MAX_VERSIONS_PER_FRAME || frame.drafts.len() > MAX_DRAFTS {
        return Err(FrameError::Cap("policy versions or drafts per frame"));
    }
    Ok(())
}

/// Decodes a whole frame: trailing bytes make it invalid.
fn decode_exact<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, FrameError> {
    match postcard::take_from_bytes(bytes) {
        Ok((frame, [])) => Ok(frame),
        _ => Err(FrameError::Decode),
    }
}

fn check_offer(spaces: &[SpaceVv]) -> Result<(), FrameError> {
    if spaces.len() > MAX_SPACES_PER_OFFER {
        return Err(FrameError::Cap("spaces per offer"));
    }
    if spaces.iter().any(|s| s.vv.0.len() > MAX_WRITERS_PER_VV) {
        return Err(FrameError::Cap("writers per version vector"));
    }
    Ok(())
}

pub fn encode<T: Serialize>(frame: &T) -> Vec<u8> {
    postcard::to_stdvec(frame).expect("frames always serialize")
}

/// Whether an envelope of `len` bytes joins a frame that holds `count` envelopes
/// of `bytes` in total: frames stay within [`TARGET_FRAME_BYTES`] and
/// [`MAX_ENVELOPES_PER_FRAME`], and a larger envelope gets a frame of its own.
pub fn fits_in_frame(count: usize, bytes: usize, len: usize) -> bool {
    count == 0 || (bytes + len <= TARGET_FRAME_BYTES && count < MAX_ENVELOPES_PER_FRAME)
}

/// Splits envelopes into frames by [`fits_in_frame`].
pub fn into_frames(envelopes: Vec<Vec<u8>>) -> Vec<Vec<Vec<u8>>> {
    let mut frames = Vec::new();
    let mut current: Vec<Vec<u8>> = Vec::new();
    let mut size = 0;
    for env in envelopes {
        if !fits_in_frame(current.len(), size, env.len()) {
            frames.push(std::mem::take(&mut current));
            size = 0;
        }
        size += env.len();
        current.push(env);
    }
    if !current.is_empty() {
        frames.push(current);
    }
    frames
}

/// Exponential redial backoff. Jitter comes from the caller (sans-IO).
#[derive(Debug, Clone)]
pub struct Backoff {
    current: Duration,
}

impl Backoff {
    pub const INITIAL: Duration = Duration::from_millis(250);
    /// Cap: a returning peer is found within this long even after a long outage.
    pub const MAX: Duration = Duration::from_secs(10);

    pub fn new() -> Self {
        Self { current: Self::INITIAL }
    }

    /// The delay before the next attempt; `jitter` in [0, 1) spreads redials.
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let delay = self.current.mul_f64(1.0 + jitter.clamp(0.0, 1.0) * 0.5);
        self.current = (self.current * 2).min(Self::MAX);
        delay
    }

    pub fn reset(&mut self) {
        self.current = Self::INITIAL;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{crypto::EpochKey, identity::DeviceKeys};

    /// A writer's chain of `n` envelopes (each the parent of the next), after
    /// one envelope of another writer.
    fn chain(n: u64) -> Vec<Envelope> {
        let (alice, bob) = (DeviceKeys::generate(), DeviceKeys::generate());
        let epoch = EpochKey::generate(SpaceId([4; 16]));
        let header = |keys: &DeviceKeys, seq: u64, parents: Vec<EnvelopeId>| Header {
            kind: Kind::Content,
            space: epoch.space,
            doc: epoch.space.chat_shard(0),
            epoch: epoch.id,
            author: keys.device_id(),
            incarnation: 7,
            seq,
            parents,
            control_heads: vec![EnvelopeId([9; 32])],
        };
        let first = Envelope::seal_content(&bob, header(&bob, 1, vec![]), &epoch, b"b1");
        let mut out = vec![first.clone()];
        let mut parents = vec![first.id()];
        for seq in 1..=n {
            let env = Envelope::seal_content(&alice, header(&alice, seq, parents), &epoch, &seq.to_le_bytes());
            parents = vec![env.id()];
            out.push(env);
        }
        out
    }

    #[test]
    fn packing_round_trips_and_saves_the_shared_header() {
        let envs = chain(20);
        let raw: Vec<Vec<u8>> = envs.iter().map(|e| e.as_bytes().to_vec()).collect();
        let groups = pack(&envs);
        assert_eq!(groups.len(), 2, "bob's envelope, then alice's chain");
        assert!(matches!(groups[1].items[1].parents, PackedParents::Previous));
        let packed = Request::Packed { groups };
        let plain = Request::Envelopes { envelopes: raw.clone() };
        let (packed_len, plain_len) = (encode(&packed).len(), encode(&plain).len());
        assert!(packed_len * 2 < plain_len, "{packed_len} vs {plain_len} bytes");
        let Request::Packed { groups } = decode_request(&encode(&packed)).unwrap() else {
            panic!("a packed frame decodes as packed");
        };
        assert_eq!(unpack(groups).unwrap(), raw);
    }

    #[test]
    fn unpacking_rebuilds_nothing_it_cannot_verify() {
        let envs = chain(3);
        let mut groups = pack(&envs);
        groups[1].items[2].body[0] ^= 1;
        let rebuilt = unpack(groups).unwrap();
        assert!(
            Envelope::decode(rebuilt[3].clone()).is_err(),
            "a changed body fails its signature"
        );
        let mut groups = pack(&envs);
        groups[1].items[0].parents = PackedParents::Previous;
        assert_eq!(
            unpack(groups),
            Err(FrameError::Decode),
            "no previous envelope in a new group"
        );
    }

    proptest::proptest! {
        /// Arbitrary frames never panic the decoder, and what decodes respects
        /// every collection cap.
        #[test]
        fn arbitrary_frames_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            match decode_request(&bytes) {
                Ok(Request::Envelopes { envelopes }) => {
                    proptest::prop_assert!(envelopes.len() <= MAX_ENVELOPES_PER_FRAME);
                }
                Ok(Request::Packed { groups }) => {
                    let _ = unpack(groups);
                }
                _ => {}
            }
            let _ = decode_response(&bytes);
        }
    }

    #[test]
    fn missing_ranges() {
        let a = ActorKey([1; 16]);
        let b = ActorKey([2; 16]);
        let mut ours = VersionVector::default();
        ours.advance(a, 5);
        ours.advance(b, 2);
        let mut theirs = VersionVector::default();
        theirs.advance(a, 3);
        theirs.advance(b, 9);
        assert_eq!(ours.missing_in(&theirs), vec![(a, 4, 5)]);
        assert_eq!(ours.count_missing_in(&theirs), 2);
        assert_eq!(theirs.count_missing_in(&ours), 7);
    }

    #[test]
    fn frames_are_bounded() {
        let envs = vec![vec![0u8; TARGET_FRAME_BYTES / 3]; 10];
        let frames = into_frames(envs);
        assert!(
            frames
                .iter()
                .all(|f| f.iter().map(Vec::len).sum::<usize>() <= TARGET_FRAME_BYTES)
        );
        assert_eq!(frames.iter().map(Vec::len).sum::<usize>(), 10);
        let many = vec![vec![1u8]; MAX_ENVELOPES_PER_FRAME + 1];
        assert_eq!(into_frames(many).len(), 2);
    }

    #[test]
    fn oversized_and_garbage_frames_are_refused() {
        assert_eq!(
            decode_request(&vec![0; MAX_FRAME_BYTES + 1]),
            Err(FrameError::TooLarge(MAX_FRAME_BYTES + 1))
        );
        assert_eq!(decode_request(&[0xff, 0xff, 0xff]), Err(FrameError::Decode));
        let too_many = Request::Envelopes {
            envelopes: vec![vec![]; MAX_ENVELOPES_PER_FRAME + 1],
        };
        assert_eq!(
            decode_request(&encode(&too_many)),
            Err(FrameError::Cap("envelopes per frame"))
        );
    }

    #[test]
    fn backoff_grows_to_cap_and_resets() {
        let mut b = Backoff::new();
        let first = b.next_delay(0.0);
        assert_eq!(first, Backoff::INITIAL);
        for _ in 0..20 {
            b.next_delay(0.0);
        }
        assert_eq!(b.next_delay(0.0), Backoff::MAX);
        b.reset();
        assert_eq!(b.next_delay(0.0), Backoff::INITIAL);
    }
}
