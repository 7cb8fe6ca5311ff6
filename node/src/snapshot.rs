//! Snapshot envelopes ([`Kind::Snapshot`]): a chat shard's whole document, sealed
//! under the epoch key, which a peer far behind loads instead of replaying every
//! envelope (one signature, one AEAD and one Automerge `load` instead of thousands).
//!
//! Body, postcard [`Body`]:
//! - `lasts`: for every writer the snapshot covers, the exact bytes of that writer's
//!   envelope at its last covered seq, signed by the writer. What the snapshot covers
//!   (writer → last seq, [`Snapshot::covers`]) is read from them, in clear, so a
//!   replicator knows it without the key.
//! - `sealed`: nonce(24) ‖ XChaCha20-Poly1305(epoch content key, `Automerge::save()`),
//!   associated data "outpost/v1/snapshot\0" ‖ version ‖ header.
//!
//! Header: `author` is the member that made it, `seq` the number of changes it
//! covers (the sum of its covers), `incarnation` 0, no parents.
//!
//! Trust: a snapshot's maker cannot forge anyone else's changes. The lasts are
//! verified like any envelope, and a member checks the document against the changes
//! they carry (`outpost_crdt::chat::snapshot::open`): every change inside must lie on
//! a signed writer chain and pass the chat rules.

use serde::{Deserialize, Serialize};

use crate::{
    crypto::EpochKey,
    envelope::{self, DecodeError, Envelope, Header, Kind, MAX_SNAPSHOT_BYTES},
    identity::DeviceKeys,
    ids::{DocId, EnvelopeId, SpaceId},
    sync::VersionVector,
};

/// Most writers one snapshot may cover: a room's writer count grows by one per
/// daemon run of each member; beyond this, history syncs change by change.
pub const MAX_SNAPSHOT_WRITERS: usize = 4096;

/// The body of a snapshot envelope (envelope format 1; a change is a new format).
#[derive(Serialize, Deserialize)]
struct Body {
    lasts: Vec<Vec<u8>>,
    sealed: Vec<u8>,
}

/// Why a snapshot envelope is refused, before any key is used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("not a snapshot envelope")]
    NotSnapshot,
    #[error("the snapshot body does not decode")]
    Body,
    #[error("the snapshot covers more than {MAX_SNAPSHOT_WRITERS} writers")]
    TooManyWriters,
    #[error("a writer's last envelope in the snapshot is malformed: {0}")]
    Last(DecodeError),
    #[error("a writer's last envelope is not content of the snapshot's document")]
    Foreign,
    #[error("the snapshot has two last envelopes for one writer")]
    DuplicateWriter,
    #[error("the snapshot header's seq is not the number of changes it covers")]
    Count,
    #[error("a snapshot header has no parents and incarnation 0")]
    Header,
    #[error("the document is too large for one snapshot ({0} bytes)")]
    TooLarge(usize),
}

/// A snapshot envelope whose clear part is checked: signed by its maker, each
/// last envelope signed by its writer and content of the same document.
#[derive(Debug, Clone)]
pub struct Snapshot {
    env: Envelope,
    lasts: Vec<Envelope>,
    covers: VersionVector,
    /// Where the sealed document starts in the envelope's body: it is the body's
    /// last field, so it runs to the end (kept as an offset, not a second copy).
    sealed_at: usize,
}

impl Snapshot {
    /// Checks a snapshot from a peer: its body and the signature of every last envelope.
    pub fn verify(env: Envelope) -> Result<Self, Error> {
        Self::parse(env, Envelope::decode_all)
    }

    /// Re-reads a snapshot this node verified before storing it (start-up).
    pub(crate) fn from_stored(env: Envelope) -> Result<Self, Error> {
        Self::parse(env, |raw| raw.into_iter().map(Envelope::decode_stored).collect())
    }

    fn parse(
        env: Envelope,
        decode: impl FnOnce(Vec<Vec<u8>>) -> Vec<Result<Envelope, DecodeError>>,
    ) -> Result<Self, Error> {
        let h = env.header();
        if h.kind != Kind::Snapshot {
            return Err(Error::NotSnapshot);
        }
        if !h.parents.is_empty() || h.incarnation != 0 {
            return Err(Error::Header);
        }
        let body: Body = match postcard::take_from_bytes(env.body()) {
            Ok((body, [])) => body,
            _ => return Err(Error::Body),
        };
        if body.lasts.len() > MAX_SNAPSHOT_WRITERS {
            return Err(Error::TooManyWriters);
        }
        let lasts = decode(body.lasts)
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::Last)?;
        let mut covers = VersionVector::default();
        let mut total = 0u64;
        for last in &lasts {
            let l = last.header();
            if l.kind != Kind::Content || l.space != h.space || l.doc != h.doc {
                return Err(Error::Foreign);
            }
            if covers.0.insert(l.actor(), l.seq).is_some() {
                return Err(Error::DuplicateWriter);
            }
            total = total.saturating_add(l.seq);
        }
        if total != h.seq {
            return Err(Error::Count);
        }
        let sealed_at = env.body().len() - body.sealed.len();
        debug_assert_eq!(&env.body()[sealed_at..], body.sealed.as_slice());
        Ok(Self {
            env,
            lasts,
            covers,
            sealed_at,
        })
    }

    /// Seals `doc` (an `Automerge::save()`) as a snapshot made by `keys`, covering
    /// exactly the writers whose last envelopes are `lasts`.
    pub fn make(
        keys: &DeviceKeys,
        epoch: &EpochKey,
        doc_id: DocId,
        control_heads: Vec<EnvelopeId>,
        lasts: Vec<Envelope>,
        doc: &[u8],
    ) -> Result<Self, Error> {
        let size = doc.len() + lasts.iter().map(|l| l.as_bytes().len() + 4).sum::<usize>();
        if size + 1024 > MAX_SNAPSHOT_BYTES {
            return Err(Error::TooLarge(size));
        }
        let header = Header {
            kind: Kind::Snapshot,
            space: epoch.space,
            doc: doc_id,
            epoch: epoch.id,
            author: keys.device_id(),
            incarnation: 0,
            seq: lasts.iter().map(|l| l.header().seq).sum(),
            parents: Vec::new(),
            control_heads,
        };
        let env = Envelope::sign_with(keys, header, |header_bytes| {
            let body = Body {
                lasts: lasts.iter().map(|l| l.as_bytes().to_vec()).collect(),
                sealed: envelope::seal(epoch, Kind::Snapshot, header_bytes, doc),
            };
            postcard::to_stdvec(&body).expect("snapshot bodies serialize")
        });
        Self::from_stored(env)
    }

    /// Decrypts the document (`Automerge::save()` bytes).
    pub fn open(&self, epoch: &EpochKey) -> Result<Vec<u8>, crate::crypto::Error> {
        self.env.open_sealed(epoch, &self.env.body()[self.sealed_at..])
    }

    /// For each covered writer, its last covered seq.
    pub fn covers(&self) -> &VersionVector {
        &self.covers
    }

    /// Each covered writer's envelope at its last covered seq.
    pub fn lasts(&self) -> &[Envelope] {
        &self.lasts
    }

    pub fn envelope(&self) -> &Envelope {
        &self.env
    }

    pub fn id(&self) -> EnvelopeId {
        self.env.id()
    }

    pub fn space(&self) -> SpaceId {
        self.env.header().space
    }

    /// Whether `vv` holds everything this snapshot covers.
    pub fn is_covered_by(&self, vv: &VersionVector) -> bool {
        self.covers.missing_in(vv).is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last(keys: &DeviceKeys, epoch: &EpochKey, incarnation: u64, seq: u64) -> Envelope {
        let header = Header {
            kind: Kind::Content,
            space: epoch.space,
            doc: epoch.space.chat_shard(0),
            epoch: epoch.id,
            author: keys.device_id(),
            incarnation,
            seq,
            parents: Vec::new(),
            control_heads: Vec::new(),
        };
        Envelope::seal_content(keys, header, epoch, b"change")
    }

    #[test]
    fn make_verify_open() {
        let maker = DeviceKeys::generate();
        let writer = DeviceKeys::generate();
        let epoch = EpochKey::generate(SpaceId([5; 16]));
        let lasts = vec![last(&maker, &epoch, 1, 7), last(&writer, &epoch, 2, 3)];
        let snap = Snapshot::make(&maker, &epoch, epoch.space.chat_shard(0), Vec::new(), lasts, b"the doc").unwrap();
        assert_eq!(snap.envelope().header().seq, 10);
        let back = Snapshot::verify(Envelope::decode(snap.envelope().as_bytes().to_vec()).unwrap()).unwrap();
        assert_eq!(back.covers(), snap.covers());
        assert_eq!(back.covers().0.len(), 2);
        assert_eq!(back.open(&epoch).unwrap(), b"the doc");
        assert!(back.open(&EpochKey::generate(epoch.space)).is_err());
        assert!(!snap.envelope().as_bytes().windows(7).any(|w| w == b"the doc"));
    }

    fn snapshot_header(maker: &DeviceKeys, epoch: &EpochKey, seq: u64) -> Header {
        Header {
            kind: Kind::Snapshot,
            space: epoch.space,
            doc: epoch.space.chat_shard(0),
            epoch: epoch.id,
            author: maker.device_id(),
            incarnation: 0,
            seq,
            parents: Vec::new(),
            control_heads: Vec::new(),
        }
    }

    /// A snapshot envelope with exactly these last envelopes, however wrong.
    fn raw_snapshot(maker: &DeviceKeys, epoch: &EpochKey, lasts: Vec<Vec<u8>>, seq: u64) -> Envelope {
        Envelope::sign_with(maker, snapshot_header(maker, epoch, seq), |header_bytes| {
            let sealed = envelope::seal(epoch, Kind::Snapshot, header_bytes, b"doc");
            postcard::to_stdvec(&Body { lasts, sealed }).unwrap()
        })
    }

    #[test]
    fn a_forged_last_or_a_foreign_one_is_refused() {
        let maker = DeviceKeys::generate();
        let epoch = EpochKey::generate(SpaceId([5; 16]));
        let good = last(&maker, &epoch, 1, 1).into_bytes();
        assert!(Snapshot::verify(raw_snapshot(&maker, &epoch, vec![good.clone()], 1)).is_ok());

        let foreign = last(&maker, &EpochKey::generate(SpaceId([6; 16])), 1, 1).into_bytes();
        let env = raw_snapshot(&maker, &epoch, vec![foreign], 1);
        assert_eq!(Snapshot::verify(env).err(), Some(Error::Foreign));

        let again = last(&maker, &epoch, 1, 2).into_bytes();
        let env = raw_snapshot(&maker, &epoch, vec![good.clone(), again], 3);
        assert_eq!(Snapshot::verify(env).err(), Some(Error::DuplicateWriter));

        let env = raw_snapshot(&maker, &epoch, vec![good.clone()], 5);
        assert_eq!(Snapshot::verify(env).err(), Some(Error::Count));

        let mut forged = good;
        let n = forged.len();
        forged[n - 1] ^= 1;
        let env = raw_snapshot(&maker, &epoch, vec![forged], 1);
        assert_eq!(Snapshot::verify(env).err(), Some(Error::Last(DecodeError::Signature)));
    }

    proptest::proptest! {
        /// A snapshot with any byte flipped, cut or extended is refused without a panic,
        /// by the envelope decoder or by the snapshot's own checks.
        #[test]
        fn mutated_snapshots_are_refused(pos in 0usize..4096, xor in 1u8..=255, cut in 0usize..4096) {
            let maker = DeviceKeys::generate();
            let epoch = EpochKey::generate(SpaceId([5; 16]));
            let lasts = vec![last(&maker, &epoch, 1, 3)];
            let snap = Snapshot::make(&maker, &epoch, epoch.space.chat_shard(0), Vec::new(), lasts, b"doc").unwrap();
            let bytes = snap.envelope().as_bytes().to_vec();
            let mut flipped = bytes.clone();
            let i = pos % flipped.len();
            flipped[i] ^= xor;
            let refused = |b: Vec<u8>| Envelope::decode(b).map_or(true, |env| Snapshot::verify(env).is_err());
            proptest::prop_assert!(refused(flipped));
            proptest::prop_assert!(refused(bytes[..cut % bytes.len()].to_vec()));
        }

        /// Arbitrary bytes signed as a snapshot body never panic the checks.
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let maker = DeviceKeys::generate();
            let epoch = EpochKey::generate(SpaceId([5; 16]));
            let env = Envelope::sign_with(&maker, snapshot_header(&maker, &epoch, 0), |_| body.clone());
            let _ = Snapshot::verify(env);
        }
    }

    #[test]
    fn oversized_documents_are_not_snapshotted() {
        let maker = DeviceKeys::generate();
        let epoch = EpochKey::generate(SpaceId([5; 16]));
        let big = vec![0u8; MAX_SNAPSHOT_BYTES];
        let err = Snapshot::make(&maker, &epoch, epoch.space.chat_shard(0), Vec::new(), Vec::new(), &big).unwrap_err();
        assert!(matches!(err, Error::TooLarge(_)));
    }
}
