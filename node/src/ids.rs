//! Identifier newtypes. Each prints in full with `Display` (hex) and as a short
//! prefix with `fmt_short` for logs.

use std::fmt;

use serde::{Deserialize, Serialize};

pub use outpost_crdt::DocId;

/// Why a textual id did not parse.
#[derive(Debug, thiserror::Error)]
#[error("{what} must be {len} hex characters, got {got:?}")]
pub struct ParseIdError {
    pub(crate) what: &'static str,
    pub(crate) len: usize,
    pub(crate) got: String,
}

macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident, $len:literal, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; $len]);

        /// Hex in human-readable formats (JSON), raw bytes in binary ones (postcard).
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&self.to_string())
                } else {
                    self.0.serialize(s)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                    s.parse().map_err(serde::de::Error::custom)
                } else {
                    <[u8; $len]>::deserialize(d).map(Self)
                }
            }
        }

        impl $name {
            /// The first 8 hex characters, for logs.
            pub fn fmt_short(&self) -> String {
                data_encoding::HEXLOWER.encode(&self.0[..4])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&data_encoding::HEXLOWER.encode(&self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.fmt_short())
            }
        }

        impl std::str::FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let err = || ParseIdError { what: $what, len: $len * 2, got: s.to_string() };
                let bytes = data_encoding::HEXLOWER_PERMISSIVE.decode(s.trim().as_bytes()).map_err(|_| err())?;
                let arr: [u8; $len] = bytes.try_into().map_err(|_| err())?;
                Ok(Self(arr))
            }
        }

    };
}
pub(crate) use hex_id;

hex_id!(
    /// A device: its ed25519 public key (also its libp2p identity).
    DeviceId, 32, "a device id"
);
hex_id!(
    /// A user (a person): the ed25519 key that certifies the user's devices.
    UserId, 32, "a user id"
);
hex_id!(
    /// A space: the unit of sharing, sync and access.
    SpaceId, 16, "a space id"
);
hex_id!(
    /// A key epoch of a space (derived from the epoch key's commitment, never a counter).
    EpochId, 16, "an epoch id"
);
hex_id!(
    /// A sealed envelope: BLAKE3 of its exact bytes.
    EnvelopeId, 32, "an envelope id"
);
hex_id!(
    /// An attachment: BLAKE3 of its ciphertext (the root of its bao tree).
    BlobId, 32, "a file id"
);
hex_id!(
    /// An Automerge actor (derived from device, document and incarnation).
    ActorKey, 16, "an actor id"
);

impl SpaceId {
    /// The document holding this space's control log.
    pub fn control_doc(&self) -> DocId {
        DocId(derive16("outpost/control-doc/v1", &self.0))
    }

    /// What the space's read receipts are about (the `doc` of its
    /// [`crate::envelope::Kind::State`] envelopes).
    pub fn receipts_doc(&self) -> DocId {
        DocId(derive16("outpost/receipts/v1", &self.0))
    }

    /// Shard `k` of this space's content: a room's messages roll over into
    /// the next shard as one fills; other spaces use shard 0 only. The id is
    /// the space's shard prefix and `k`, so every node, a replicator included,
    /// tells in clear whether a document is a shard of this space.
    pub fn chat_shard(&self, k: u32) -> DocId {
        shard_in(self.shard_prefix(), k)
    }

    /// Which shard of this space `doc` is, if it is one.
    pub fn shard_of(&self, doc: &DocId) -> Option<u32> {
        index_in(self.shard_prefix(), doc)
    }

    fn shard_prefix(&self) -> [u8; 12] {
        prefix12(derive16("outpost/chat-shard/v2", &self.0))
    }

    /// Shard `k` of what is sealed under `epoch` in a room whose history
    /// starts at each join: each epoch's messages roll over into shards of
    /// their own, so nothing written after a join depends on anything before
    /// it. Like [`SpaceId::chat_shard`], the id is a prefix (of the space and
    /// the epoch) and `k`, told in clear from the envelope's header.
    pub fn epoch_shard(&self, epoch: &EpochId, k: u32) -> DocId {
        shard_in(self.epoch_prefix(epoch), k)
    }

    /// Which shard of epoch `epoch`'s run `doc` is, if it is one.
    pub fn epoch_shard_of(&self, epoch: &EpochId, doc: &DocId) -> Option<u32> {
        index_in(self.epoch_prefix(epoch), doc)
    }

    fn epoch_prefix(&self, epoch: &EpochId) -> [u8; 12] {
        let mut input = self.0.to_vec();
        input.extend_from_slice(&epoch.0);
        prefix12(derive16("outpost/epoch-shard/v1", &input))
    }
}

/// Shard `k` of the run of shards named by `prefix`.
fn shard_in(prefix: [u8; 12], k: u32) -> DocId {
    let mut id = [0u8; 16];
    id[..12].copy_from_slice(&prefix);
    id[12..].copy_from_slice(&k.to_be_bytes());
    DocId(id)
}

/// Which shard of the run named by `prefix` `doc` is, if it is one.
fn index_in(prefix: [u8; 12], doc: &DocId) -> Option<u32> {
    (doc.0[..12] == prefix).then(|| u32::from_be_bytes(doc.0[12..].try_into().expect("4 bytes")))
}

fn prefix12(full: [u8; 16]) -> [u8; 12] {
    full[..12].try_into().expect("12 of 16 bytes")
}

impl EnvelopeId {
    /// The id of an envelope's exact bytes.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }
}

/// The first 16 bytes of BLAKE3's key derivation: the one way ids are derived.
pub(crate) fn derive16(context: &str, input: &[u8]) -> [u8; 16] {
    let full = blake3::derive_key(context, input);
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text() {
        let id = SpaceId([0xab; 16]);
        assert_eq!(id.to_string().parse::<SpaceId>().unwrap(), id);
        assert!("xyz".parse::<SpaceId>().is_err());
        assert!("abab".parse::<SpaceId>().is_err());
        assert_eq!(id.fmt_short(), "abababab");
    }

    #[test]
    fn json_is_hex_and_postcard_is_raw() {
        let id = DeviceId([0xcd; 32]);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{}\"", "cd".repeat(32)));
        assert_eq!(serde_json::from_str::<DeviceId>(&json).unwrap(), id);
        let bin = postcard::to_stdvec(&id).unwrap();
        assert_eq!(bin.len(), 32);
        assert_eq!(postcard::from_bytes::<DeviceId>(&bin).unwrap(), id);
    }

    #[test]
    fn derived_docs_differ() {
        let s = SpaceId([1; 16]);
        assert_ne!(s.control_doc(), s.chat_shard(0));
        assert_ne!(s.chat_shard(0), s.chat_shard(1));
        for k in [0, 1, 7, u32::MAX] {
            assert_eq!(s.shard_of(&s.chat_shard(k)), Some(k));
            assert_eq!(SpaceId([2; 16]).shard_of(&s.chat_shard(k)), None);
        }
        assert_eq!(s.shard_of(&s.control_doc()), None);
        let (e3, e4) = (EpochId([3; 16]), EpochId([4; 16]));
        for k in [0, 1, u32::MAX] {
            let doc = s.epoch_shard(&e3, k);
            assert_eq!(s.shard_of(&doc), None);
            assert_eq!(s.epoch_shard_of(&e3, &doc), Some(k));
            assert_eq!(s.epoch_shard_of(&e4, &doc), None);
            assert_eq!(SpaceId([2; 16]).epoch_shard_of(&e3, &doc), None);
            assert_eq!(s.epoch_shard_of(&e3, &s.chat_shard(k)), None);
        }
        assert_ne!(s.epoch_shard(&e3, 0), s.epoch_shard(&e4, 0));
    }
}
