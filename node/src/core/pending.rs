//! Bounded sets of envelopes waiting for something: their parents (per space) or
//! their space's genesis (orphans). Both caps, count and bytes, hold at all
//! times, so a peer sending envelopes that can never be applied cannot grow
//! memory past them.

use std::collections::BTreeMap;

use crate::{envelope::Envelope, ids::EnvelopeId};

/// Most envelopes a space may hold waiting for parents.
pub(crate) const PENDING_PER_SPACE_CAP: usize = 10_000;
/// Most bytes of envelopes a space may hold waiting: with envelopes of up to
/// 1 MiB, the count cap alone would allow 10 GiB.
pub(crate) const PENDING_BYTES_PER_SPACE_CAP: usize = 16 << 20;
/// Most envelopes of not-yet-known spaces held (in memory only) for their genesis.
pub(crate) const ORPHAN_CAP: usize = 1024;
/// Most bytes of such envelopes.
pub(crate) const ORPHAN_BYTES_CAP: usize = 4 << 20;

/// Waiting envelopes with their total size, under a count and a byte cap.
pub(crate) struct Pending {
    envelopes: BTreeMap<EnvelopeId, Envelope>,
    bytes: usize,
    max_count: usize,
    max_bytes: usize,
}

impl Pending {
    pub(crate) fn new(max_count: usize, max_bytes: usize) -> Self {
        Self {
            envelopes: BTreeMap::new(),
            bytes: 0,
            max_count,
            max_bytes,
        }
    }

    /// Whether one more envelope of `len` bytes fits under both caps.
    pub(crate) fn admits(&self, len: usize) -> bool {
        self.envelopes.len() < self.max_count && self.bytes + len <= self.max_bytes
    }

    /// Whether `env` is held already or would fit.
    pub(crate) fn holds_or_admits(&self, env: &Envelope) -> bool {
        self.envelopes.contains_key(&env.id()) || self.admits(env.as_bytes().len())
    }

    /// Adds `env` if it fits; returns whether it is held.
    pub(crate) fn insert(&mut self, env: Envelope) -> bool {
        if self.envelopes.contains_key(&env.id()) {
            return true;
        }
        let len = env.as_bytes().len();
        if !self.admits(len) {
            return false;
        }
        self.bytes += len;
        self.envelopes.insert(env.id(), env);
        true
    }

    pub(crate) fn remove(&mut self, id: &EnvelopeId) -> Option<Envelope> {
        let env = self.envelopes.remove(id)?;
        self.bytes -= env.as_bytes().len();
        Some(env)
    }

    /// Takes out every envelope `pred` selects.
    pub(crate) fn take_where(&mut self, mut pred: impl FnMut(&Envelope) -> bool) -> Vec<Envelope> {
        let ids: Vec<EnvelopeId> = self.envelopes.values().filter(|e| pred(e)).map(Envelope::id).collect();
        ids.iter().filter_map(|id| self.remove(id)).collect()
    }

    /// Takes out every envelope, to be classified again.
    pub(crate) fn take_all(&mut self) -> Vec<Envelope> {
        self.bytes = 0;
        std::mem::take(&mut self.envelopes).into_values().collect()
    }

    pub(crate) fn clear(&mut self) {
        self.take_all();
    }

    /// Every waiting envelope.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Envelope> {
        self.envelopes.values()
    }

    pub(crate) fn len(&self) -> usize {
        self.envelopes.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.envelopes.is_empty()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        crypto::EpochKey,
        envelope::{Header, Kind},
        identity::DeviceKeys,
        ids::SpaceId,
    };

    fn envelope(keys: &DeviceKeys, seq: u64, body: usize) -> Envelope {
        let epoch = EpochKey::generate(SpaceId([1; 16]));
        let header = Header {
            kind: Kind::Content,
            space: epoch.space,
            doc: epoch.space.chat_shard(0),
            epoch: epoch.id,
            author: keys.device_id(),
            incarnation: 1,
            seq,
            parents: Vec::new(),
            control_heads: Vec::new(),
        };
        Envelope::seal_content(keys, header, &epoch, &vec![0; body])
    }

    #[test]
    fn both_caps_hold() {
        let keys = DeviceKeys::generate();
        let mut by_count = Pending::new(2, 1 << 20);
        assert!(by_count.insert(envelope(&keys, 1, 10)));
        assert!(by_count.insert(envelope(&keys, 2, 10)));
        assert!(!by_count.insert(envelope(&keys, 3, 10)));
        assert_eq!(by_count.len(), 2);

        let mut by_bytes = Pending::new(100, 1000);
        let big = envelope(&keys, 1, 600);
        assert!(by_bytes.insert(big.clone()));
        assert!(by_bytes.insert(big.clone()), "a duplicate is held once");
        assert_eq!(by_bytes.bytes(), big.as_bytes().len());
        assert!(!by_bytes.insert(envelope(&keys, 2, 600)));
        assert_eq!(by_bytes.take_where(|e| e.header().seq == 1).len(), 1);
        assert_eq!((by_bytes.len(), by_bytes.bytes()), (0, 0));
    }
}
