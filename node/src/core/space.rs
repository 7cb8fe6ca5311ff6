//! One space as the core holds it: membership, key, version vector, pending
//! envelopes, and (for members holding the key) the readable chat document.
//!
//! The decisions here are pure functions of the envelopes and the space state:
//! [`Space::classify`] says what to do with an envelope, identically on every node.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use outpost_crdt::{
    ActorId, Change, ChangeHash,
    doc::{Checked, Doc, Model},
    snapshot as doc_snapshot,
};

use super::pending::{PENDING_BYTES_PER_SPACE_CAP, PENDING_PER_SPACE_CAP, Pending};
use crate::{
    control::{Epoch, History, Keyring, MAX_STORED_CONTROL_OPS, SpaceState},
    envelope::{Envelope, Kind},
    identity::DeviceKeys,
    ids::{ActorKey, DeviceId, DocId, EnvelopeId, EpochId},
    snapshot::Snapshot,
    store::Placed,
    sync::VersionVector,
};

/// Most envelopes remembered as invalid per space (built on a frozen writer): a
/// frozen device can sign without end; beyond this, its further envelopes are
/// still refused but their descendants only wait.
pub(crate) const MAX_INVALID_PER_SPACE: usize = 65_536;

/// Most snapshots held per space. A member replaces what it holds with one fresh
/// snapshot of its own document when it serves one; a replicator keeps those that
/// no other covers.
pub(crate) const MAX_SNAPSHOTS_PER_SPACE: usize = 4;
/// Largest content a reader may write (its answers to invitations): checked
/// in clear, before decrypting.
pub(crate) const MAX_READER_CONTENT_BYTES: usize = 4 << 10;
/// The last shard a room may write into: 2^20 shards of thousands of
/// messages each are more than any room holds.
pub(crate) const MAX_SHARD: u32 = 1 << 20;

/// Where an envelope and its parents are stored (None: not stored), as
/// [`Space::placements`] found them for [`Space::classify`].
pub(crate) struct Placements(Vec<(EnvelopeId, Option<Placed>)>);

impl Placements {
    fn of(&self, id: &EnvelopeId) -> Option<Placed> {
        self.0.iter().find(|(i, _)| i == id).and_then(|(_, p)| *p)
    }
}

/// What to do with an envelope.
pub(crate) enum Verdict {
    /// Already stored (same bytes).
    Duplicate,
    /// Valid; store it. Carries the decrypted, checked change for readers.
    Accept(Option<Box<ContentChange>>),
    /// Not yet decidable: parents or earlier seqs missing.
    Wait,
    /// Signed by its author for a (writer, seq) that holds a different envelope:
    /// the writer is frozen before that seq, the author flagged.
    Equivocation,
    /// Invalid, on every node alike.
    Reject(&'static str),
    /// Its (writer, seq) is held only inside a snapshot, which does not name the
    /// envelope: it cannot be compared with what is held. Two different ones for
    /// one position are still equivocation (the core remembers what it saw).
    Covered,
    /// Invalid for good: an envelope of a frozen writer at or past its freeze, or one
    /// that builds on such an envelope. Remembered, so its descendants are refused too.
    Invalid(&'static str),
}

/// What to do with a snapshot.
pub(crate) enum SnapshotVerdict {
    /// Covers nothing this node does not hold.
    Duplicate,
    /// Names control operations this node does not hold yet.
    Wait,
    /// Valid; hold it. Members get the checked document to merge.
    Accept(Option<Box<SnapshotContent>>),
    /// A writer's last envelope (carried here) differs from the one stored for
    /// its (writer, seq).
    Equivocation(Box<Envelope>),
    Reject(&'static str),
}

/// An accepted content change, decrypted and checked, with the document it
/// belongs to and the epoch it was sealed under.
pub(crate) struct ContentChange {
    pub(crate) doc: DocId,
    pub(crate) epoch: Epoch,
    pub(crate) checked: Checked,
}

/// A snapshot's document, checked, with the changes its last envelopes carry.
pub(crate) struct SnapshotContent {
    pub(crate) opened: doc_snapshot::Opened,
    /// For each last envelope: its id and the hash of its change.
    pub(crate) lasts: Vec<(EnvelopeId, ChangeHash)>,
}

/// What a peer is known to hold of this space.
#[derive(Debug, Default, Clone)]
pub(crate) struct PeerView {
    pub(crate) vv: VersionVector,
    pub(crate) last_sync_ms: Option<u64>,
    /// Frozen writers whose evidence this peer was sent (this run).
    pub(crate) evidence_sent: BTreeSet<ActorKey>,
    /// The counter of each device's receipt this peer was sent (this run).
    pub(crate) receipts_sent: BTreeMap<DeviceId, u64>,
}

/// Content a member stores but cannot apply yet: sealed under an epoch
/// whose key this device lacks, or built on such content.
#[derive(Debug, Default)]
pub(crate) struct Locked {
    /// Each locked envelope, with its document, in a room with shared
    /// history: a document holds content of several epochs, and content
    /// built on locked content is locked too, so each is looked up.
    envelopes: HashMap<EnvelopeId, DocId>,
    /// How many locked envelopes each document holds. In a room whose history
    /// starts at each join, a document is one epoch's and its content's
    /// parents are in it, so it is locked whole: only the count is kept, and
    /// a newcomer's history from before its join costs nothing per envelope.
    per_doc: HashMap<DocId, usize>,
    total: usize,
}

impl Locked {
    /// Records envelope `id` of document `doc` as locked, in a space of `history`.
    pub(crate) fn insert(&mut self, id: EnvelopeId, doc: DocId, history: History) {
        if history == History::Shared && self.envelopes.insert(id, doc).is_some() {
            return;
        }
        *self.per_doc.entry(doc).or_default() += 1;
        self.total += 1;
    }

    /// Whether envelope `id` is locked (where it matters: content built on it
    /// is locked too). In a from-join room, content's parents are in its
    /// document, locked whole or not at all.
    pub(crate) fn holds(&self, id: &EnvelopeId) -> bool {
        self.envelopes.contains_key(id)
    }

    /// Whether document `doc` holds locked content.
    pub(crate) fn in_doc(&self, doc: &DocId) -> bool {
        self.per_doc.contains_key(doc)
    }

    pub(crate) fn len(&self) -> usize {
        self.total
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.total == 0
    }
}

/// The readable side of a space (members holding an epoch key).
pub(crate) struct Readable {
    /// The model of every document of the space (its kind's).
    pub(crate) model: Model,
    /// The documents this device reads, made at their first change: the
    /// space's one document, or in a from-join space one per epoch
    /// ([`SpaceState::content_doc`]).
    pub(crate) docs: BTreeMap<DocId, Shard>,
    /// Content stored but not applied: sealed under an epoch whose key this
    /// device lacks, or built on such content. Applied by a rebuild once the
    /// key arrives.
    pub(crate) locked: Locked,
    /// The epochs locked content is sealed under (not counting content locked
    /// only for a locked parent): a key for one of them calls for a rebuild.
    pub(crate) locked_epochs: BTreeMap<EpochId, Epoch>,
    pub(crate) change_of_env: HashMap<EnvelopeId, (DocId, ChangeHash)>,
    pub(crate) env_of_change: HashMap<ChangeHash, EnvelopeId>,
    pub(crate) device_of_actor: HashMap<ActorKey, DeviceId>,
    /// The document each writer writes (a writer is one device in one document).
    pub(crate) doc_of_actor: HashMap<ActorKey, DocId>,
    /// A sharded room's closed shards set aside: stored, summarised, not in
    /// `docs` (see `core::shards`).
    pub(crate) parked: BTreeMap<DocId, super::shards::Parked>,
    /// Closed shards loaded back on demand, the most recently used last.
    pub(crate) recent: VecDeque<DocId>,
    /// Those of `recent` changed since they were loaded: their stored rows are
    /// rewritten before they are set aside again.
    pub(crate) dirty: BTreeSet<DocId>,
}

/// A room's latest messages (see [`Readable::latest`]).
pub(crate) struct Latest {
    pub(crate) messages: Vec<outpost_crdt::chat::Message>,
    /// The documents they come from, the oldest first.
    pub(crate) docs: Vec<DocId>,
    /// A closed shard set aside that the messages stop short at.
    pub(crate) set_aside: Option<DocId>,
}

/// One document of a space.
pub(crate) struct Shard {
    pub(crate) doc: Doc,
    /// The epoch its content is sealed under (one per document in a from-join
    /// space): it orders the documents for display.
    pub(crate) epoch: Epoch,
}

pub(crate) struct Space {
    pub(crate) state: SpaceState,
    pub(crate) name: Option<String>,
    /// A department room's department path (sealed like the name).
    pub(crate) department: Option<String>,
    /// The epoch keys this device holds (see [`Space::unlock`]).
    pub(crate) keys: Keyring,
    /// Epochs whose key was sent to this device but does not open (a broken or
    /// malicious wrap or link): a rotation does not wait for them.
    pub(crate) failed_keys: BTreeSet<crate::ids::EpochId>,
    /// Present iff `keys` holds any key.
    pub(crate) readable: Option<Readable>,
    /// Why this device cannot read (all of) the space, when it should be able to.
    pub(crate) key_problem: Option<String>,
    pub(crate) vv: VersionVector,
    /// Where envelopes recorded since the last commit are; the store's
    /// `places-1` table holds the others (see [`Space::placements`]).
    pub(crate) fresh: HashMap<EnvelopeId, Placed>,
    /// How many envelopes are stored (the log's length, gaps aside).
    pub(crate) stored: u64,
    /// The log position of the next envelope stored (arrival order, a
    /// topological order).
    pub(crate) next_order: u64,
    pub(crate) pending: Pending,
    pub(crate) peers: BTreeMap<DeviceId, PeerView>,
    pub(crate) rejected: u64,
    /// Control operations among `rejected`.
    pub(crate) invalid_control: u64,
    /// Devices that signed two different envelopes for one (writer, seq).
    pub(crate) equivocators: BTreeSet<DeviceId>,
    /// Writers frozen for equivocation → the seq from which their envelopes are
    /// invalid, with the two envelopes signed for that seq (the evidence).
    pub(crate) frozen: BTreeMap<ActorKey, (u64, [Vec<u8>; 2])>,
    /// Envelopes refused for good (see [`Verdict::Invalid`]).
    pub(crate) invalid: HashSet<EnvelopeId>,
    /// Envelopes seen for positions only a snapshot holds ([`Verdict::Covered`]),
    /// kept to catch a twin arriving later (memory only, bounded).
    pub(crate) covered_seen: HashMap<(ActorKey, u64), Vec<u8>>,
    /// Snapshots held (at most [`MAX_SNAPSHOTS_PER_SPACE`]), none covered by another.
    pub(crate) snapshots: Vec<Snapshot>,
    /// Each writer's newest envelope held, stored or a snapshot's last: (seq, id).
    /// A writer's next envelope must name it as a parent.
    pub(crate) last_env: HashMap<ActorKey, (u64, EnvelopeId)>,
    /// The first seq of each writer stored as an envelope; below it, only
    /// snapshots hold that writer's changes.
    pub(crate) stored_from: HashMap<ActorKey, u64>,
    /// The last envelopes of held snapshots: known ids that are not stored.
    pub(crate) snapshot_lasts: BTreeSet<EnvelopeId>,
    /// The highest shard stored content is written into, per run of shards
    /// (keyed by its first document: the room's, or in a from-join room each
    /// epoch's; see [`SpaceState::shard_place`]).
    pub(crate) max_shard: BTreeMap<DocId, u32>,
    /// Side envelopes (chat bodies, tombstones) held in the store.
    pub(crate) sides_held: u64,
    /// Each member device's newest read receipt (chat rooms).
    pub(crate) receipts: BTreeMap<DeviceId, super::receipts::Receipt>,
    /// Chat bodies named by messages held here but not stored (they did not
    /// come beside their change, e.g. it came in a snapshot): asked of peers
    /// at each sync, with the peer last asked and when (ms). At most
    /// [`MAX_WANTED_BODIES`].
    pub(crate) wanted_bodies: BTreeMap<EnvelopeId, Want>,
}

/// A chat body this node lacks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Want {
    /// The device whose message (or edit) names it: a tombstone answering
    /// for it counts only if it may delete that device's body.
    pub(crate) author: DeviceId,
    /// The peer last asked, and when (ms).
    pub(crate) asked: Option<(DeviceId, u64)>,
}

/// Most missing bodies a space remembers to ask for (more are found again
/// when the log is read).
pub(crate) const MAX_WANTED_BODIES: usize = 100_000;

impl Space {
    /// Remembers to ask peers for a chat body this node lacks.
    pub(crate) fn want_body(&mut self, id: EnvelopeId, author: DeviceId) {
        if self.wanted_bodies.len() < MAX_WANTED_BODIES {
            self.wanted_bodies.entry(id).or_insert(Want { author, asked: None });
        }
    }

    /// The document snapshots cover: a shared-history space's one document
    /// (from-join spaces are not snapshotted in this version).
    pub(crate) fn main_doc(&self) -> DocId {
        self.state.space.chat_shard(0)
    }

    /// A space as `state` defines it, readable with `keys` when it holds any.
    pub(crate) fn new(state: SpaceState, keys: Keyring) -> Self {
        let readable = (!keys.is_empty()).then(|| Readable {
            model: state.kind.model(),
            docs: BTreeMap::new(),
            locked: Locked::default(),
            locked_epochs: BTreeMap::new(),
            change_of_env: HashMap::new(),
            env_of_change: HashMap::new(),
            device_of_actor: HashMap::new(),
            doc_of_actor: HashMap::new(),
            parked: BTreeMap::new(),
            recent: VecDeque::new(),
            dirty: BTreeSet::new(),
        });
        let name = state.name(&keys);
        let department = state.department(&keys);
        Self {
            state,
            name,
            department,
            keys,
            failed_keys: BTreeSet::new(),
            readable,
            key_problem: None,
            vv: VersionVector::default(),
            fresh: HashMap::new(),
            stored: 0,
            next_order: 0,
            pending: Pending::new(PENDING_PER_SPACE_CAP, PENDING_BYTES_PER_SPACE_CAP),
            peers: BTreeMap::new(),
            rejected: 0,
            invalid_control: 0,
            equivocators: BTreeSet::new(),
            frozen: BTreeMap::new(),
            invalid: HashSet::new(),
            covered_seen: HashMap::new(),
            snapshots: Vec::new(),
            last_env: HashMap::new(),
            stored_from: HashMap::new(),
            snapshot_lasts: BTreeSet::new(),
            max_shard: BTreeMap::new(),
            sides_held: 0,
            receipts: BTreeMap::new(),
            wanted_bodies: BTreeMap::new(),
        }
    }

    /// Unlocks what the control log now gives `device` and says in `key_problem`
    /// what is still missing. Returns whether a new key opened: the caller
    /// rebuilds the space if that makes stored content readable.
    pub(crate) fn unlock(&mut self, device: &DeviceKeys) -> bool {
        let before = self.keys.len();
        let failed = self.keys.unlock(&self.state, device);
        let gained = self.keys.len() > before;
        self.failed_keys = failed.iter().map(|(epoch, _)| *epoch).collect();
        if self.name.is_none() {
            self.name = self.state.name(&self.keys);
        }
        if self.department.is_none() {
            self.department = self.state.department(&self.keys);
        }
        let me = device.device_id();
        let current = &self.state.current().epoch;
        // In a from-join space, content this device cannot open was written
        // before it joined: history it is not meant to read, not a problem.
        let locked = match self.state.history {
            History::Shared => self.readable.as_ref().map_or(0, |r| r.locked.len()),
            History::FromJoin => 0,
        };
        // A broken key matters while it is the current epoch's (or an open tip):
        // a rotation replaces it (this device makes one), and then it is history.
        let open = &self.state.current().open_tips;
        let broken = failed
            .iter()
            .find(|(epoch, _)| current.parts.contains(epoch) || open.contains(epoch));
        self.key_problem = if let Some((epoch, e)) = broken {
            Some(format!(
                "the key of epoch {} was sent to this device but does not open ({e}); this device rotates the space's key when it can write, or any member can with `outpost space rotate`",
                epoch.fmt_short()
            ))
        } else if self.state.members.contains_key(&me) && self.keys.key_for(current).is_none() {
            Some(format!(
                "no key yet for the current epoch {}: it was made without this device (a concurrent change); any member holding it rotates the key, and it arrives with the control log from any peer",
                current.id.fmt_short()
            ))
        } else if locked > 0 && !gained {
            Some(format!(
                "{locked} envelopes are sealed under epochs this device holds no key for"
            ))
        } else {
            None
        };
        gained
    }

    /// Whether this device may rotate now: it holds (or was sent a broken key for)
    /// every open tip. Otherwise a member that holds them rotates, and this device
    /// waits rather than cutting off history it could still receive.
    pub(crate) fn can_rotate(&self) -> bool {
        self.state
            .current()
            .open_tips
            .iter()
            .all(|t| self.keys.get(t).is_some() || self.failed_keys.contains(t))
    }

    /// Whether the keys held would let this node read stored content it could not.
    pub(crate) fn needs_rebuild(&self) -> bool {
        match &self.readable {
            None => !self.keys.is_empty(),
            Some(r) => r.locked_epochs.values().any(|e| self.keys.key_for(e).is_some()),
        }
    }

    /// Stored content this device cannot open in a from-join space: written
    /// before it joined.
    pub(crate) fn before_join(&self) -> usize {
        match (self.state.history, &self.readable) {
            (History::FromJoin, Some(r)) => r.locked.len(),
            (History::FromJoin, None) => (self.stored as usize).saturating_sub(self.state.len()),
            (History::Shared, _) => 0,
        }
    }

    /// Whether this node holds the envelope `id`, stored or as a snapshot's
    /// last (`placed` holds what is known of `id`: see [`Space::placements`]).
    fn holds(&self, placed: &Placements, id: &EnvelopeId) -> bool {
        placed.of(id).is_some() || self.snapshot_lasts.contains(id)
    }

    /// Where `env` and its parents are stored, if they are: recorded since
    /// the last commit (in memory), else as `stored` finds them (the store).
    /// What [`Space::classify`] needs to know of the log.
    pub(crate) fn placements<E>(
        &self,
        env: &Envelope,
        stored: impl FnOnce(&[EnvelopeId]) -> Result<Vec<Option<Placed>>, E>,
    ) -> Result<Placements, E> {
        let ids: Vec<EnvelopeId> = std::iter::once(env.id())
            .chain(env.header().parents.iter().copied())
            .collect();
        let unknown: Vec<EnvelopeId> = ids.iter().filter(|id| !self.fresh.contains_key(id)).copied().collect();
        let mut found = if unknown.is_empty() {
            Vec::new()
        } else {
            stored(&unknown)?
        }
        .into_iter();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let placed = match self.fresh.get(&id) {
                Some(p) => Some(*p),
                None => found.next().flatten(),
            };
            out.push((id, placed));
        }
        Ok(Placements(out))
    }

    /// The batch that recorded envelopes committed: the store places them now.
    pub(crate) fn committed(&mut self) {
        self.fresh = HashMap::new();
    }

    /// Decides what to do with `env`, given everything stored so far
    /// (`placed`: where `env` and its parents are, from [`Space::placements`]).
    pub(crate) fn classify(
        &self,
        env: &Envelope,
        placed: &Placements,
        stored_at: impl Fn(&ActorKey, u64) -> Option<EnvelopeId>,
    ) -> Verdict {
        let h = env.header();
        if h.kind == Kind::Snapshot {
            return Verdict::Reject("a snapshot outside the snapshot path");
        }
        if placed.of(&env.id()).is_some() {
            return Verdict::Duplicate;
        }
        let actor = h.actor();
        if let Some((from, twins)) = self.frozen.get(&actor)
            && h.seq >= *from
        {
            if twins.iter().any(|t| EnvelopeId::of(t) == env.id()) {
                return Verdict::Duplicate;
            }
            return Verdict::Invalid("its writer is frozen: the device signed two envelopes for one position");
        }
        // Control heads count too: content written under a frozen writer's control
        // operation builds on it.
        if h.parents
            .iter()
            .chain(&h.control_heads)
            .any(|p| self.invalid.contains(p))
        {
            return Verdict::Invalid("builds on an envelope of a frozen writer");
        }
        let have = self.vv.get(&actor);
        if h.seq == 0 {
            return Verdict::Reject("seq 0");
        }
        if h.seq <= have {
            // Same (actor, seq), different bytes: the writer equivocated.
            let held = stored_at(&actor, h.seq).or_else(|| self.snapshot_last(&actor, h.seq).map(Envelope::id));
            return match held {
                Some(id) if id == env.id() => Verdict::Duplicate,
                Some(_) => Verdict::Equivocation,
                None => Verdict::Covered,
            };
        }
        match h.kind {
            Kind::Control => self.classify_control(env, h.seq == have + 1),
            Kind::Content => self.classify_content(env, placed, h.seq == have + 1),
            Kind::Snapshot => unreachable!("snapshots returned above"),
            Kind::Body | Kind::Tombstone | Kind::State => unreachable!("side envelopes are ingested beside the log"),
        }
    }

    /// A control operation after the genesis (see `control`): valid iff its author's
    /// role at its causal point (its parents) allows it.
    fn classify_control(&self, env: &Envelope, next_in_seq: bool) -> Verdict {
        let h = env.header();
        // A resource limit, not a validity rule: beyond it operations wait (in
        // the bounded pending set) instead of being judged.
        if !next_in_seq || !self.state.knows(&h.parents) || self.state.len() >= MAX_STORED_CONTROL_OPS {
            return Verdict::Wait;
        }
        if let Some(reason) = self.breaks_chain(env) {
            return Verdict::Reject(reason);
        }
        match self.state.check(env) {
            Ok(()) => Verdict::Accept(None),
            Err(e) => Verdict::Reject(e.reason()),
        }
    }

    /// A writer's envelopes form a chain: each names the writer's previous one.
    fn breaks_chain(&self, env: &Envelope) -> Option<&'static str> {
        let h = env.header();
        match self.last_env.get(&h.actor()) {
            Some((seq, previous)) if *seq + 1 == h.seq && !h.parents.contains(previous) => {
                Some("does not name its writer's previous envelope as a parent")
            }
            _ => None,
        }
    }

    fn classify_content(&self, env: &Envelope, placed: &Placements, next_in_seq: bool) -> Verdict {
        let h = env.header();
        if h.control_heads.is_empty() {
            return Verdict::Reject("content names no control heads");
        }
        if !self.state.knows(&h.control_heads) {
            // Control operations travel like any envelope: they may come later.
            return Verdict::Wait;
        }
        let Some(epoch) = self.state.epoch_at(&h.control_heads) else {
            return Verdict::Wait;
        };
        if h.epoch != epoch.id {
            return Verdict::Reject("sealed under an epoch that is not the space's epoch at its control heads");
        }
        if !self.state.is_content_doc(&h.doc, &epoch.id) {
            return Verdict::Reject("written into another document than its epoch's");
        }
        let Some(author) = self.state.author_at(&h.control_heads, &h.author) else {
            return Verdict::Reject("author may not write in this space");
        };
        // A reader writes only its answers (calendars): small, checkable in
        // clear, so replicators that cannot decrypt are not filled either.
        if !author.editor && env.body().len() > MAX_READER_CONTENT_BYTES {
            return Verdict::Reject("a reader's content is larger than an answer");
        }
        // A run of shards opens one after another: shard k + 2 waits until
        // shard k + 1 holds something, so nobody makes a room skip to a far
        // shard (or thousands of empty ones at once).
        if let Some((first, k)) = self.state.shard_place(&h.doc, &h.epoch) {
            if k > MAX_SHARD {
                return Verdict::Reject("written into a shard past the last one");
            }
            // Shard 0 always counts as there (a snapshot may hold it all).
            if k > self.max_shard.get(&first).copied().unwrap_or(0).saturating_add(1) {
                return Verdict::Wait;
            }
        }
        if !next_in_seq {
            return Verdict::Wait;
        }
        if let Some(reason) = self.breaks_chain(env) {
            return Verdict::Reject(reason);
        }
        // Parents this node never saw: without a snapshot they have not arrived
        // yet; with one, they may be envelopes the snapshot covers (only their
        // changes are known, checked below by members). Snapshots cover the
        // first document only.
        let main = self.main_doc();
        let unknown = h.parents.iter().filter(|p| !self.holds(placed, p)).count();
        if unknown > 0 && (self.snapshots.is_empty() || h.doc != main) {
            return Verdict::Wait;
        }
        // Judged in clear from the parents' headers, alike on every node.
        let doc_of = |p: &EnvelopeId| match placed.of(p) {
            Some(held) => held.doc,
            None => Some(main),
        };
        if h.parents.iter().any(|p| doc_of(p) != Some(h.doc)) {
            return Verdict::Reject("a parent envelope is content of another document");
        }
        let Some(readable) = &self.readable else {
            // Replicate-only: everything checkable in clear has been checked.
            return Verdict::Accept(None);
        };
        let key = self.keys.key_for(&epoch);
        let Some(key) = key.filter(|_| !h.parents.iter().any(|p| readable.locked.holds(p))) else {
            // This device lacks the key (or a parent's): stored like a replicator
            // would, locked until the key arrives.
            return Verdict::Accept(None);
        };
        let Ok(plain) = env.open_content(&key) else {
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
        // parents carry, or the genesis when it names no parents. A parent known
        // only through a snapshot's document (not by id) must be a change the
        // document holds.
        let deps = change.deps();
        let fresh;
        let document = match readable.docs.get(&h.doc) {
            Some(shard) => &shard.doc,
            None => {
                // The document's first change (or one built on changes of this
                // batch): its deterministic genesis stands in.
                fresh = Doc::new(readable.model, h.doc);
                &fresh
            }
        };
        if h.parents.is_empty() {
            if deps != [document.genesis_hash()] {
                return Verdict::Reject("Automerge dependencies differ from the header parents");
            }
        } else {
            let mut known = Vec::with_capacity(h.parents.len());
            for p in h.parents.iter().filter(|p| self.holds(placed, p)) {
                match readable.change_of_env.get(p) {
                    Some((doc, _)) if *doc != h.doc => {
                        return Verdict::Reject("a parent envelope is content of another document");
                    }
                    Some((_, hash)) => known.push(*hash),
                    None => return Verdict::Reject("a parent envelope carries no change"),
                }
            }
            if deps.len() != h.parents.len() || known.iter().any(|k| !deps.contains(k)) {
                return Verdict::Reject("Automerge dependencies differ from the header parents");
            }
            if deps.iter().any(|d| !known.contains(d) && !document.has_change(d)) {
                return Verdict::Wait;
            }
        }
        match document.validate(change, &author) {
            Ok(checked) => Verdict::Accept(Some(Box::new(ContentChange {
                doc: h.doc,
                epoch,
                checked,
            }))),
            // It touches an object a change still to come creates (a malicious
            // one never comes: the envelope waits in the bounded pending set).
            Err(violation) if Doc::is_premature(&violation) => Verdict::Wait,
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

    /// A peer that sent a snapshot holds what it covers.
    pub(crate) fn note_peer_covers(&mut self, peer: DeviceId, covers: &VersionVector) {
        if self.state.entitled(&peer) {
            let view = self.peers.entry(peer).or_default();
            for (actor, seq) in &covers.0 {
                view.vv.advance(*actor, *seq);
            }
        }
    }

    /// Records an accepted envelope in memory at the next log position (the
    /// caller persists it there).
    pub(crate) fn record(&mut self, env: &Envelope, change: Option<&Change>) -> u64 {
        let order = self.next_order;
        self.record_at(env, change, order);
        let h = env.header();
        let doc = (h.kind == Kind::Content).then_some(h.doc);
        self.fresh.insert(env.id(), Placed { order, doc });
        order
    }

    /// Records an envelope stored at log position `order` (start-up replay: a
    /// purge may have left gaps, and new positions must follow the last one).
    pub(crate) fn record_at(&mut self, env: &Envelope, change: Option<&Change>, order: u64) {
        self.record_inner(env, change, false, order);
    }

    /// Records a stored content envelope of a closed shard set aside: readable
    /// (its key is held), but neither decrypted nor applied until the shard
    /// is loaded (start-up replay).
    pub(crate) fn record_aside(&mut self, env: &Envelope, order: u64) {
        self.record_inner(env, None, true, order);
        if let Some(r) = self.readable.as_mut() {
            let h = env.header();
            r.device_of_actor.insert(h.actor(), h.author);
            r.doc_of_actor.insert(h.actor(), h.doc);
        }
    }

    fn record_inner(&mut self, env: &Envelope, change: Option<&Change>, aside: bool, order: u64) {
        let h = env.header();
        self.next_order = self.next_order.max(order + 1);
        self.stored += 1;
        if h.kind == Kind::Content
            && let Some((first, k)) = self.state.shard_place(&h.doc, &h.epoch)
        {
            let max = self.max_shard.entry(first).or_insert(k);
            *max = (*max).max(k);
        }
        self.stored_from.entry(h.actor()).or_insert(h.seq);
        self.advance_writer(env);
        self.pending.remove(&env.id());
        match (self.readable.as_mut(), change) {
            (Some(r), Some(change)) => r.map_change(env, change.hash()),
            (Some(r), None) if h.kind == Kind::Content && !aside => {
                r.locked.insert(env.id(), h.doc, self.state.history);
                if !h.parents.iter().any(|p| r.locked.holds(p))
                    && let Some(epoch) = self.state.epoch_at(&h.control_heads)
                {
                    r.locked_epochs.insert(epoch.id, epoch);
                }
            }
            _ => {}
        }
    }

    /// Remembers an envelope as invalid for good (bounded; see [`MAX_INVALID_PER_SPACE`]).
    pub(crate) fn mark_invalid(&mut self, id: EnvelopeId) -> bool {
        self.invalid.len() < MAX_INVALID_PER_SPACE && self.invalid.insert(id)
    }

    /// The last envelope of a held snapshot at (actor, seq), if there is one.
    pub(crate) fn snapshot_last(&self, actor: &ActorKey, seq: u64) -> Option<&Envelope> {
        self.snapshots
            .iter()
            .flat_map(|s| s.lasts())
            .find(|l| l.header().seq == seq && l.header().actor() == *actor)
    }

    /// Remembers an envelope whose position only a snapshot holds; returns a
    /// different one seen before for the same position (equivocation), if any.
    /// Bounded: past the cap, nothing more is remembered.
    pub(crate) fn note_covered(&mut self, env: &Envelope) -> Option<Vec<u8>> {
        const MAX_COVERED_SEEN: usize = 1024;
        let key = (env.header().actor(), env.header().seq);
        match self.covered_seen.get(&key) {
            Some(seen) if EnvelopeId::of(seen) != env.id() => Some(seen.clone()),
            Some(_) => None,
            None => {
                if self.covered_seen.len() < MAX_COVERED_SEEN {
                    self.covered_seen.insert(key, env.as_bytes().to_vec());
                }
                None
            }
        }
    }

    /// Whether a snapshot covers a frozen writer at or past its freeze.
    pub(crate) fn covers_frozen(&self, snap: &Snapshot) -> bool {
        self.frozen
            .iter()
            .any(|(actor, (from, _))| snap.covers().get(actor) >= *from)
    }

    /// `env` is held (stored or a snapshot's last): its writer is held up to it.
    fn advance_writer(&mut self, env: &Envelope) {
        let h = env.header();
        self.vv.advance(h.actor(), h.seq);
        let last = self.last_env.entry(h.actor()).or_insert((h.seq, env.id()));
        if h.seq > last.0 {
            *last = (h.seq, env.id());
        }
    }

    /// Decides what to do with a snapshot (its clear part already verified).
    /// `stored_at` finds the envelope stored for a (writer, seq).
    pub(crate) fn classify_snapshot(
        &self,
        snap: &Snapshot,
        stored_at: impl Fn(&ActorKey, u64) -> Option<EnvelopeId>,
    ) -> SnapshotVerdict {
        let h = snap.envelope().header();
        if h.doc != self.main_doc() || self.state.history != History::Shared {
            return SnapshotVerdict::Reject("snapshot of an unknown document (only shared-history spaces use them)");
        }
        if snap
            .lasts()
            .iter()
            .any(|l| !self.state.knows(&l.header().control_heads))
            || !self.state.knows(&h.control_heads)
        {
            return SnapshotVerdict::Wait;
        }
        if !self.sealed_at_its_heads(snap.envelope()) {
            return SnapshotVerdict::Reject("snapshot sealed under another epoch than the one at its control heads");
        }
        if !self.state.may_write_at(&h.control_heads, &h.author) {
            return SnapshotVerdict::Reject("snapshot made by a device that may not write in this space");
        }
        for last in snap.lasts() {
            let l = last.header();
            if !self.sealed_at_its_heads(last) || self.state.author_at(&l.control_heads, &l.author).is_none() {
                return SnapshotVerdict::Reject("a snapshot's writer may not write in this space");
            }
            if l.seq <= self.vv.get(&l.actor())
                && stored_at(&l.actor(), l.seq).is_some_and(|stored| stored != last.id())
            {
                return SnapshotVerdict::Equivocation(Box::new(last.clone()));
            }
            if self.frozen.get(&l.actor()).is_some_and(|(from, _)| l.seq >= *from) {
                return SnapshotVerdict::Reject("snapshot covers a frozen writer past its freeze");
            }
        }
        if snap.is_covered_by(&self.vv) || self.snapshots.iter().any(|s| s.id() == snap.id()) {
            return SnapshotVerdict::Duplicate;
        }
        if self.snapshots.len() >= MAX_SNAPSHOTS_PER_SPACE
            && !self.snapshots.iter().any(|held| held.is_covered_by(snap.covers()))
        {
            return SnapshotVerdict::Reject("this node holds as many snapshots of the space as it keeps");
        }
        if self.readable.is_none() {
            return SnapshotVerdict::Accept(None);
        }
        if std::iter::once(snap.envelope())
            .chain(snap.lasts())
            .any(|e| self.key_of(e).is_none())
        {
            // A member lacking a key waits for it (snapshots are an optimisation;
            // the envelopes they cover also arrive one by one).
            return SnapshotVerdict::Wait;
        }
        match self.open_snapshot(snap) {
            Ok(content) => SnapshotVerdict::Accept(Some(Box::new(content))),
            Err(reason) => SnapshotVerdict::Reject(reason),
        }
    }

    /// Whether `env` names the epoch at its own control heads (known ones).
    fn sealed_at_its_heads(&self, env: &Envelope) -> bool {
        let h = env.header();
        self.state.epoch_at(&h.control_heads).is_some_and(|e| e.id == h.epoch)
    }

    /// The key of the epoch `env` is sealed under, if this device holds it.
    pub(crate) fn key_of(&self, env: &Envelope) -> Option<crate::crypto::EpochKey> {
        let epoch = self.state.epoch_at(&env.header().control_heads)?;
        (epoch.id == env.header().epoch).then(|| self.keys.key_for(&epoch))?
    }

    /// Decrypts a snapshot and checks its document against its last envelopes
    /// (see `outpost_crdt::snapshot`). Members only.
    pub(crate) fn open_snapshot(&self, snap: &Snapshot) -> Result<SnapshotContent, &'static str> {
        let Some(key) = self.key_of(snap.envelope()) else {
            return Err("this device holds no key for the snapshot's epoch");
        };
        let Ok(doc) = snap.open(&key) else {
            return Err("snapshot does not decrypt under the epoch key");
        };
        let mut declared: BTreeMap<ActorId, (u64, ChangeHash, outpost_crdt::Author)> = BTreeMap::new();
        let mut lasts = Vec::with_capacity(snap.lasts().len());
        for last in snap.lasts() {
            let l = last.header();
            let Some(change) = self
                .key_of(last)
                .and_then(|key| last.open_content(&key).ok())
                .and_then(|plain| Change::from_bytes(plain).ok())
            else {
                return Err("a snapshot's last envelope does not open");
            };
            if change.actor_id().to_bytes() != actor_bytes(&l.actor()) || change.seq() != l.seq {
                return Err("a snapshot's last envelope has another actor or seq inside");
            }
            let Some(author) = self.state.author_at(&l.control_heads, &l.author) else {
                return Err("a snapshot's writer may not write in this space");
            };
            declared.insert(change.actor_id().clone(), (change.seq(), change.hash(), author));
            lasts.push((last.id(), change.hash()));
        }
        let model = self.state.kind.model();
        let opened = std::panic::catch_unwind(|| doc_snapshot::open(model, &self.main_doc(), &doc, &declared));
        match opened {
            Ok(Ok(opened)) => Ok(SnapshotContent { opened, lasts }),
            Ok(Err(e)) => Err(snapshot_reason(&e)),
            Err(_) => Err("Automerge panicked loading the snapshot"),
        }
    }

    /// Holds an accepted snapshot: its covers join the version vector, and the
    /// snapshots it covers are dropped. Returns the ids dropped (the caller
    /// removes them from the store). Members merge the document separately.
    ///
    /// `lasts` maps the snapshot's last envelopes to their changes, in the order of
    /// [`Snapshot::lasts`] (from [`Space::open_snapshot`]); it is empty for a
    /// snapshot this node made, whose lasts it holds already.
    pub(crate) fn hold_snapshot(&mut self, snap: Snapshot, lasts: &[(EnvelopeId, ChangeHash)]) -> Vec<EnvelopeId> {
        for last in snap.lasts() {
            self.advance_writer(last);
        }
        if let Some(r) = self.readable.as_mut() {
            for (last, (id, hash)) in snap.lasts().iter().zip(lasts) {
                debug_assert_eq!(last.id(), *id);
                r.map_change(last, *hash);
            }
        }
        let (dropped, kept): (Vec<Snapshot>, Vec<Snapshot>) = std::mem::take(&mut self.snapshots)
            .into_iter()
            .partition(|held| held.is_covered_by(snap.covers()));
        self.snapshots = kept;
        self.snapshots.push(snap);
        self.snapshot_lasts = self
            .snapshots
            .iter()
            .flat_map(|s| s.lasts().iter().map(Envelope::id))
            .collect();
        dropped.iter().map(Snapshot::id).collect()
    }

    /// The writers whose changes the chat document holds, with the device of each.
    pub(crate) fn content_writers(&self, doc: DocId) -> impl Iterator<Item = (&ActorKey, u64)> + '_ {
        self.vv
            .0
            .iter()
            .filter(move |(actor, _)| {
                self.readable
                    .as_ref()
                    .is_some_and(|r| r.doc_of_actor.get(actor) == Some(&doc))
            })
            .map(|(a, s)| (a, *s))
    }

    /// The number of changes held: stored or covered by a snapshot.
    pub(crate) fn changes_held(&self) -> u64 {
        self.vv.0.values().sum()
    }
}

impl Readable {
    /// The document `doc`, made at its genesis when this is its first change.
    pub(crate) fn shard_mut(&mut self, doc: DocId, epoch: &Epoch) -> &mut Shard {
        let model = self.model;
        self.docs.entry(doc).or_insert_with(|| Shard {
            doc: Doc::new(model, doc),
            epoch: epoch.clone(),
        })
    }

    /// Whether any document holds the change `hash`.
    pub(crate) fn has_change(&self, hash: &ChangeHash) -> bool {
        self.docs.values().any(|s| s.doc.has_change(hash))
    }

    /// The documents in display order (see [`position`]).
    pub(crate) fn ordered(&self, state: &SpaceState) -> Vec<(&DocId, &Shard)> {
        let mut shards: Vec<(&DocId, &Shard)> = self.docs.iter().collect();
        shards.sort_by_cached_key(|(doc, s)| position(state, doc, &s.epoch));
        shards
    }

    /// The latest `limit` messages in display order, read from the last
    /// documents only, and the documents they come from (the oldest first):
    /// a room's latest messages cost its last shard or two, not its history.
    /// They stop short at a closed shard set aside, named in the answer: the
    /// caller loads it and asks again, or makes do with the messages after it.
    pub(crate) fn latest(&self, state: &SpaceState, limit: usize) -> Latest {
        let mut out: Vec<Vec<outpost_crdt::chat::Message>> = Vec::new();
        let mut docs = Vec::new();
        let mut count = 0;
        let mut set_aside = None;
        // Loaded documents and those set aside, in display order.
        let mut every: Vec<(Position, &DocId, Option<&Shard>)> = self
            .docs
            .iter()
            .map(|(doc, shard)| (position(state, doc, &shard.epoch), doc, Some(shard)))
            .chain(
                self.parked
                    .iter()
                    .map(|(doc, p)| (position(state, doc, &p.epoch), doc, None)),
            )
            .collect();
        every.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        for (_, doc, shard) in every.into_iter().rev() {
            if count >= limit {
                break;
            }
            let Some(shard) = shard else {
                set_aside = Some(*doc);
                break;
            };
            let Some(chat) = shard.doc.chat() else { continue };
            let messages = chat.latest(limit - count);
            count += messages.len();
            out.push(messages);
            docs.push(*doc);
        }
        docs.reverse();
        let mut all: Vec<outpost_crdt::chat::Message> = out.into_iter().rev().flatten().collect();
        let skip = all.len().saturating_sub(limit);
        all.drain(..skip);
        Latest {
            messages: all,
            docs,
            set_aside,
        }
    }

    /// The device that writes as `actor`; all zero for an actor this node cannot
    /// attribute (never the case for a change it accepted).
    pub(crate) fn author_of(&self, actor: &ActorId) -> DeviceId {
        self.device_of_actor
            .get(&actor_key(actor))
            .copied()
            .unwrap_or(DeviceId([0; 32]))
    }

    pub(crate) fn map_change(&mut self, env: &Envelope, hash: ChangeHash) {
        let h = env.header();
        self.change_of_env.insert(env.id(), (h.doc, hash));
        self.env_of_change.insert(hash, env.id());
        self.device_of_actor.insert(h.actor(), h.author);
        self.doc_of_actor.insert(h.actor(), h.doc);
    }
}

/// Where a document stands in a room's display order. A room with shared
/// history orders its shards by index (a message causally after another is in
/// the same shard or a later one); a from-join room orders its epochs' runs by
/// epoch rank (content causally after other content is sealed under an epoch
/// of equal or higher rank: see [`SpaceState::epoch_rank`]), then each run's
/// shards by index. Documents that are no shard come first.
pub(crate) type Position = (Option<u32>, (u32, crate::ids::EpochId), Option<u32>);

pub(crate) fn position(state: &SpaceState, doc: &DocId, epoch: &Epoch) -> Position {
    let rank = state.epoch_rank(epoch);
    match state.history {
        History::Shared => (state.space.shard_of(doc), rank, None),
        History::FromJoin => (None, rank, state.space.epoch_shard_of(&epoch.id, doc)),
    }
}

/// The node's key for an Automerge actor (actors are 16 bytes; see `writer`).
pub(crate) fn actor_key(actor: &ActorId) -> ActorKey {
    let mut out = [0u8; 16];
    let bytes = actor.to_bytes();
    let n = bytes.len().min(16);
    out[..n].copy_from_slice(&bytes[..n]);
    ActorKey(out)
}

/// A fixed description of why a snapshot's document is refused, for logs and counters.
fn snapshot_reason(e: &doc_snapshot::SnapshotError) -> &'static str {
    use doc_snapshot::SnapshotError as E;
    match e {
        E::Load => "snapshot: not a loadable document",
        E::MissingDeps => "snapshot: changes with missing dependencies",
        E::Genesis => "snapshot: wrong genesis",
        E::UnknownWriter => "snapshot: a change by an undeclared writer",
        E::Seq => "snapshot: a duplicate seq or one past a writer's last",
        E::Gap => "snapshot: a writer's changes have a gap",
        E::NotChained => "snapshot: a change does not follow its writer's previous one",
        E::LastChange => "snapshot: a writer's last change differs from the signed one",
        E::Rules(v) => v.reason(),
    }
}

fn actor_bytes(actor: &ActorKey) -> &[u8] {
    &actor.0
}
