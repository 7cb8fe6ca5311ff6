//! One space as the core holds it: membership, key, version vector, pending
//! envelopes, and (for members holding the key) the readable chat document.
//!
//! The decisions here are pure functions of the envelopes and the space state:
//! [`Space::classify`] says what to do with an envelope, identically on every node.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use outpost_crdt::{
    Change, ChangeHash,
    chat::{ChatDoc, Checked},
};

use super::pending::{PENDING_BYTES_PER_SPACE_CAP, PENDING_PER_SPACE_CAP, Pending};
use crate::{
    control::{SpaceKind, SpaceState},
    crypto::EpochKey,
    envelope::{Envelope, Kind},
    ids::{ActorKey, DeviceId, DocId, EnvelopeId},
    sync::VersionVector,
};

/// What to do with an envelope.
pub(crate) enum Verdict {
    /// Already stored (same bytes).
    Duplicate,
    /// Valid; store it. Carries the decrypted, checked change for readers.
    Accept(Option<Box<Checked>>),
    /// Not yet decidable: parents or earlier seqs missing.
    Wait,
    /// Signed by its author for a (writer, seq) that holds a different envelope:
    /// refused, and the author is flagged.
    Equivocation,
    /// Invalid, on every node alike.
    Reject(&'static str),
}

/// What a peer is known to hold of this space.
#[derive(Debug, Default, Clone)]
pub(crate) struct PeerView {
    pub(crate) vv: VersionVector,
    pub(crate) last_sync_ms: Option<u64>,
}

/// The readable side of a space (members holding the epoch key).
pub(crate) struct Readable {
    pub(crate) key: EpochKey,
    pub(crate) chat: ChatDoc,
    pub(crate) genesis_hash: ChangeHash,
    pub(crate) change_of_env: HashMap<EnvelopeId, ChangeHash>,
    pub(crate) env_of_change: HashMap<ChangeHash, EnvelopeId>,
    pub(crate) device_of_actor: HashMap<ActorKey, DeviceId>,
}

pub(crate) struct Space {
    pub(crate) state: SpaceState,
    pub(crate) name: Option<String>,
    pub(crate) readable: Option<Readable>,
    /// Why this device cannot read the space, when it should be able to.
    pub(crate) key_problem: Option<String>,
    pub(crate) vv: VersionVector,
    /// Arrival order of every stored envelope (a topological order).
    pub(crate) order: HashMap<EnvelopeId, u64>,
    pub(crate) next_order: u64,
    pub(crate) pending: Pending,
    pub(crate) peers: BTreeMap<DeviceId, PeerView>,
    pub(crate) rejected: u64,
    /// Devices that signed two different envelopes for one (writer, seq).
    pub(crate) equivocators: BTreeSet<DeviceId>,
}

impl Space {
    /// The only content document of a chat space in this version: shard 0.
    pub(crate) fn chat_doc(&self) -> DocId {
        self.state.space.chat_shard(0)
    }

    pub(crate) fn new(state: SpaceState, key: Option<Result<EpochKey, String>>) -> Self {
        let chat_doc = state.space.chat_shard(0);
        let (readable, key_problem) = match key {
            Some(Ok(key)) => {
                let (_, genesis_hash) = ChatDoc::genesis(&chat_doc);
                let readable = Readable {
                    key,
                    chat: ChatDoc::new(chat_doc),
                    genesis_hash,
                    change_of_env: HashMap::new(),
                    env_of_change: HashMap::new(),
                    device_of_actor: HashMap::new(),
                };
                (Some(readable), None)
            }
            Some(Err(why)) => (None, Some(why)),
            None => (None, None),
        };
        let name = readable.as_ref().and_then(|r| state.name(&r.key));
        debug_assert_eq!(state.kind, SpaceKind::Chat);
        Self {
            state,
            name,
            readable,
            key_problem,
            vv: VersionVector::default(),
            order: HashMap::new(),
            next_order: 0,
            pending: Pending::new(PENDING_PER_SPACE_CAP, PENDING_BYTES_PER_SPACE_CAP),
            peers: BTreeMap::new(),
            rejected: 0,
            equivocators: BTreeSet::new(),
        }
    }

    /// Decides what to do with `env`, given everything stored so far.
    pub(crate) fn classify(&self, env: &Envelope, stored_at: impl Fn(&ActorKey, u64) -> Option<EnvelopeId>) -> Verdict {
        let h = env.header();
        if self.order.contains_key(&env.id()) {
            return Verdict::Duplicate;
        }
        let actor = h.actor();
        let have = self.vv.get(&actor);
        if h.seq == 0 {
            return Verdict::Reject("seq 0");
        }
        if h.seq <= have {
            // Same (actor, seq), different bytes: the writer equivocated.
            return match stored_at(&actor, h.seq) {
                Some(id) if id == env.id() => Verdict::Duplicate,
                _ => Verdict::Equivocation,
            };
        }
        match h.kind {
            Kind::Control => {
                // Genesis is the only control operation in this version, and it is
                // stored when the space is created.
                Verdict::Reject("unexpected control operation")
            }
            Kind::Content => self.classify_content(env, h.seq == have + 1),
        }
    }

    fn classify_content(&self, env: &Envelope, next_in_seq: bool) -> Verdict {
        let h = env.header();
        if h.doc != self.chat_doc() {
            return Verdict::Reject("unknown document");
        }
        if h.control_heads != self.state.heads() {
            return Verdict::Reject("control heads unknown to this space");
        }
        if h.epoch != self.state.epoch {
            return Verdict::Reject("sealed under an epoch that is not the space's epoch at its control heads");
        }
        if !self.state.may_write(&h.author) {
            return Verdict::Reject("author may not write in this space");
        }
        if !next_in_seq || h.parents.iter().any(|p| !self.order.contains_key(p)) {
            return Verdict::Wait;
        }
        let Some(readable) = &self.readable else {
            // Replicate-only: everything checkable in clear has been checked.
            return Verdict::Accept(None);
        };
        let Ok(plain) = env.open_content(&readable.key) else {
            return Verdict::Reject("does not decrypt under the epoch key");
        };
        let Ok(change) = Change::from_bytes(plain) else {
            return Verdict::Reject("body is not an Automerge change");
        };
        if change.actor_id().to_bytes() != actor_bytes(&h.actor()) {
            return Verdict::Reject("Automerge actor is not the one bound to the author's key");
        }
        if change.seq() != h.seq {
            return Verdict::Reject("Automerge seq differs from the header seq");
        }
        // The change's Automerge deps must be exactly the changes its header
        // parents carry, or the genesis when it names no parents.
        let mut expected: Vec<ChangeHash> = if h.parents.is_empty() {
            vec![readable.genesis_hash]
        } else {
            let found: Vec<ChangeHash> = h
                .parents
                .iter()
                .filter_map(|p| readable.change_of_env.get(p).copied())
                .collect();
            if found.len() != h.parents.len() {
                return Verdict::Reject("a parent envelope carries no change");
            }
            found
        };
        let mut deps = change.deps().to_vec();
        expected.sort();
        deps.sort();
        if deps != expected {
            return Verdict::Reject("Automerge dependencies differ from the header parents");
        }
        match readable.chat.validate(change) {
            Ok(checked) => Verdict::Accept(Some(Box::new(checked))),
            Err(violation) => Verdict::Reject(violation.reason()),
        }
    }

    /// Whoever sent us an envelope holds it: count it in that peer's view, so
    /// `status` can say "synced" without waiting for the next offer.
    pub(crate) fn note_peer_holds(&mut self, peer: DeviceId, env: &Envelope) {
        if self.state.entitled(&peer) {
            let h = env.header();
            self.peers.entry(peer).or_default().vv.advance(h.actor(), h.seq);
        }
    }

    /// Records an accepted envelope in memory (the caller persists it).
    pub(crate) fn record(&mut self, env: &Envelope, change: Option<&Change>) -> u64 {
        let h = env.header();
        let order = self.next_order;
        self.next_order += 1;
        self.order.insert(env.id(), order);
        self.vv.advance(h.actor(), h.seq);
        self.pending.remove(&env.id());
        if let (Some(r), Some(change)) = (self.readable.as_mut(), change) {
            r.change_of_env.insert(env.id(), change.hash());
            r.env_of_change.insert(change.hash(), env.id());
            r.device_of_actor.insert(h.actor(), h.author);
        }
        order
    }
}

fn actor_bytes(actor: &ActorKey) -> &[u8] {
    &actor.0
}
