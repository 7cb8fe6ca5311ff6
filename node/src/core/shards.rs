//! A large room's closed shards, set aside (issue 7, point 6: memory does not
//! grow with a room's history).
//!
//! A room writes new messages into the last shard of its run, and what points
//! at a message into that message's own shard. So only three shards are
//! *open*: shard 0 (the room's settings, what snapshots cover) and the last
//! two (the latest messages). Every other shard is *closed*: it changes only
//! when someone edits, reacts to or retracts one of its messages.
//!
//! A room whose history starts at each join has a run of shards per epoch.
//! Each run's shard 0 stays open: it holds the room's settings under that
//! epoch and what points at messages of earlier epochs (whose own shards are
//! sealed under keys nobody writes with any more), and it holds no messages,
//! so it stays small. The current epoch's last two shards are open too; every
//! other shard of an earlier epoch is closed.
//!
//! A closed shard is set aside: its Automerge document and the per-change
//! maps leave memory, and a row in `closed-shards-1` keeps what the node must
//! know without it (each writer's last seq then; each writer's message
//! counters, for unread counts), with its message ids in `message-shards-1`
//! (so a command naming an old message loads its one shard). Its envelopes
//! stay in the log as before. A start-up replay records a closed shard's
//! envelopes without decrypting them, unless its writers moved on since its
//! row was written (a crash between a late change and setting it aside
//! again): then the shard is read from its envelopes and set aside anew.
//!
//! A closed shard is loaded back, from its writers' stored envelopes, when a
//! change for it arrives, when this device writes into it, or when a read
//! reaches it; at most [`LOADED_CLOSED`] stay loaded (least recently used go
//! first). Shards loaded and not changed are set aside again without a write;
//! changed ones rewrite their row in the batch that changed them.

use serde::{Deserialize, Serialize};

use std::collections::HashSet;

use super::{receipts::retracted_counters, space::actor_key, *};

/// Closed shards kept loaded after use, per room.
pub(crate) const LOADED_CLOSED: usize = 2;

/// What is stored of a closed shard set aside.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct ShardRow {
    /// Each writer's last seq when the row was written: a replay that finds
    /// more reads the shard again.
    pub(crate) writers: BTreeMap<ActorKey, u64>,
    /// Each writer's message counters (Lamport), for unread counts.
    pub(crate) counters: BTreeMap<ActorKey, Vec<u64>>,
    /// The ids of its messages retracted (left out of `counters`), so that
    /// the search index drops them without loading the shard.
    pub(crate) retracted: Vec<String>,
}

/// A closed shard set aside, as held in memory: a few bytes per writer.
#[derive(Debug, Clone)]
pub(crate) struct Parked {
    /// Each writer's highest message counter in the shard.
    pub(crate) top: BTreeMap<ActorKey, u64>,
    /// The epoch its content is sealed under: where it stands in the room
    /// (see `space::position`).
    pub(crate) epoch: Epoch,
}

impl Parked {
    pub(crate) fn of(row: &ShardRow, epoch: Epoch) -> Self {
        let top = row
            .counters
            .iter()
            .filter_map(|(actor, counters)| Some((*actor, *counters.iter().max()?)))
            .collect();
        Self { top, epoch }
    }
}

impl Space {
    /// Whether `doc`, holding content sealed under `epoch`, is a closed shard
    /// of this room: not the first of its run, and not one of the last two
    /// of the run this device writes (in a from-join room, every shard of an
    /// earlier epoch's run but its first).
    pub(crate) fn is_closed(&self, doc: &DocId, epoch: &Epoch) -> bool {
        let Some((first, k)) = self.state.shard_place(doc, &epoch.id) else {
            return false;
        };
        let max = self.max_shard.get(&first).copied().unwrap_or(0);
        let current = self.state.content_doc(&self.state.current().epoch.id);
        k >= 1 && (k.saturating_add(2) <= max || first != current)
    }
}

impl Core {
    /// Loads a closed shard set aside back into memory from its writers'
    /// stored envelopes; a shard already loaded counts as used now. Keeps
    /// up to [`LOADED_CLOSED`] closed shards loaded beyond what a read needs
    /// (see [`Core::release_shards`]).
    pub(super) fn load_shard(&mut self, space_id: SpaceId, doc: DocId) -> store::Result<()> {
        let Some(space) = self.spaces.get_mut(&space_id) else {
            return Ok(());
        };
        let Some(r) = space.readable.as_mut() else {
            return Ok(());
        };
        if r.parked.remove(&doc).is_none() {
            if let Some(at) = r.recent.iter().position(|d| *d == doc) {
                r.recent.remove(at);
                r.recent.push_back(doc);
            }
            return Ok(());
        }
        let writers: Vec<ActorKey> = r
            .doc_of_actor
            .iter()
            .filter(|(_, d)| **d == doc)
            .map(|(actor, _)| *actor)
            .collect();
        let mut envelopes = Vec::new();
        for actor in writers {
            let from = space.stored_from.get(&actor).copied().unwrap_or(1);
            for bytes in self.store.writer_range(&space_id, &actor, from, space.vv.get(&actor))? {
                if let Ok(env) = Envelope::decode_stored(bytes) {
                    envelopes.push(env);
                }
            }
        }
        // The log's order is causal: parents before children.
        let ids: Vec<EnvelopeId> = envelopes.iter().map(Envelope::id).collect();
        let places = self.store.placed_all(&space_id, &ids)?;
        let mut envelopes: Vec<(u64, Envelope)> = places
            .into_iter()
            .zip(envelopes)
            .map(|(placed, env)| (placed.map_or(u64::MAX, |p| p.order), env))
            .collect();
        envelopes.sort_by_key(|(order, _)| *order);
        let envelopes: Vec<Envelope> = envelopes.into_iter().map(|(_, env)| env).collect();
        let mut changes = Vec::with_capacity(envelopes.len());
        for env in &envelopes {
            let opened = space.open_stored(env);
            let r = space.readable.as_mut().expect("checked above");
            match &opened {
                Some((_, _, change, _)) => r.map_change(env, change.hash()),
                None => r.locked.insert(env.id(), doc, space.state.history),
            }
            changes.extend(opened);
        }
        let r = space.readable.as_mut().expect("checked above");
        if let Err(why) = load::apply_stored(r, space_id, changes) {
            warn!(space = %space_id.fmt_short(), doc = ?doc, %why, "a closed shard could not be loaded whole");
        }
        r.recent.push_back(doc);
        debug!(space = %space_id.fmt_short(), doc = ?doc, envelopes = envelopes.len(), "closed shard loaded");
        Ok(())
    }

    /// The ids of a room's retracted messages, those of closed shards set
    /// aside read from their rows (nothing is loaded).
    pub(super) fn retracted_ids(&self, space_id: SpaceId) -> Result<Vec<String>> {
        let space = self.spaces.get(&space_id).ok_or(Error::UnknownSpace(space_id))?;
        let readable = chat::readable_of(space)?;
        let tombstones = |body: &EnvelopeId| self.store.tombstones(&space_id, body).unwrap_or_default();
        let mut ids: BTreeSet<String> = self
            .retractions_in(space, readable, None, tombstones)
            .into_iter()
            .map(|r| r.entry.id)
            .collect();
        for doc in readable.parked.keys() {
            let row = self
                .store
                .closed_shard(&space_id, doc)
                .map_err(|e| Error::Store(Arc::new(e)))?;
            if let Some(row) = row.and_then(|bytes| postcard::from_bytes::<ShardRow>(&bytes).ok()) {
                ids.extend(row.retracted);
            }
        }
        Ok(ids.into_iter().collect())
    }

    /// Loads the closed shards holding messages of `space_id` whose id
    /// starts with `name`, so that commands naming an old message find it.
    pub(super) fn bring_message(&mut self, space_id: SpaceId, name: &str) -> store::Result<()> {
        let name = name.trim().to_lowercase();
        if name.is_empty() {
            return Ok(());
        }
        let Some(r) = self.spaces.get(&space_id).and_then(|s| s.readable.as_ref()) else {
            return Ok(());
        };
        if r.parked.is_empty() {
            return Ok(());
        }
        // Two are enough to tell "one message" from "ambiguous".
        let found = self.store.message_shards(&space_id, &name, 2)?;
        for (_, doc) in found {
            self.load_shard(space_id, doc)?;
        }
        Ok(())
    }

    /// Loads the shards `docs` of a room that are set aside.
    pub(super) fn bring_docs(&mut self, space_id: SpaceId, docs: &[DocId]) -> store::Result<()> {
        for doc in docs {
            let parked = self
                .spaces
                .get(&space_id)
                .and_then(|s| s.readable.as_ref())
                .is_some_and(|r| r.parked.contains_key(doc));
            if parked {
                self.load_shard(space_id, *doc)?;
            }
        }
        Ok(())
    }

    /// After a read: closed shards loaded beyond [`LOADED_CLOSED`] and not
    /// changed are set aside again (their rows are current).
    pub(super) fn release_shards(&mut self, space_id: SpaceId) {
        let Some(space) = self.spaces.get_mut(&space_id) else {
            return;
        };
        let Some(r) = space.readable.as_mut() else { return };
        let over = r.recent.len().saturating_sub(LOADED_CLOSED);
        let clean: Vec<DocId> = r
            .recent
            .iter()
            .take(over)
            .filter(|d| !r.dirty.contains(d))
            .copied()
            .collect();
        for doc in clean {
            // Its row is current: nothing is written, so nothing to leave out.
            set_aside(space, doc, &HashSet::new());
        }
    }

    /// At the end of a batch that wrote: in every room, closed shards
    /// loaded and not among the [`LOADED_CLOSED`] recently used are set aside
    /// (their rows written), and the rows of those changed are rewritten.
    pub(super) fn settle_shards(&mut self, tx: &mut Txn) -> store::Result<()> {
        let ids: Vec<SpaceId> = self.spaces.keys().copied().collect();
        for space_id in ids {
            let space = &self.spaces[&space_id];
            let Some(r) = space.readable.as_ref() else { continue };
            if r.model != outpost_crdt::doc::Model::Chat {
                continue;
            }
            let over = r.recent.len().saturating_sub(LOADED_CLOSED);
            let evicted: Vec<DocId> = r.recent.iter().take(over).copied().collect();
            let closed: Vec<DocId> = r
                .docs
                .iter()
                .filter(|(d, shard)| space.is_closed(d, &shard.epoch) && !r.recent.contains(d))
                .map(|(d, _)| *d)
                .collect();
            let dirty: Vec<DocId> = r.dirty.iter().filter(|d| !evicted.contains(d)).copied().collect();
            let written: Vec<DocId> = evicted.iter().chain(&closed).chain(&dirty).copied().collect();
            // Rows leave retracted messages out, by the tombstones of this
            // batch too: the transaction reads them.
            let retracted = if written.is_empty() {
                HashSet::new()
            } else {
                let tombstones = |body: &EnvelopeId| tx.tombstones(&space_id, body).unwrap_or_default();
                retracted_counters(self.retractions_in(space, r, Some(&written), tombstones))
            };
            let space = self.spaces.get_mut(&space_id).expect("listed above");
            for doc in evicted.into_iter().chain(closed) {
                if let Some((row, ids)) = set_aside(space, doc, &retracted) {
                    put_row(tx, &space_id, doc, &row, &ids)?;
                }
            }
            for doc in dirty {
                if let Some((row, ids)) = summary(space, doc, &retracted) {
                    put_row(tx, &space_id, doc, &row, &ids)?;
                }
            }
            if let Some(r) = space.readable.as_mut() {
                r.dirty.clear();
            }
        }
        Ok(())
    }
}

fn put_row(tx: &mut Txn, space_id: &SpaceId, doc: DocId, row: &ShardRow, ids: &[String]) -> store::Result<()> {
    let bytes = postcard::to_stdvec(row).expect("rows serialize");
    tx.put_closed_shard(space_id, &doc, &bytes, ids.iter().map(String::as_str))
}

/// A loaded closed shard's row and message ids, as stored when it is set
/// aside; the counters leave out the `retracted` messages.
fn summary(space: &Space, doc: DocId, retracted: &HashSet<(ActorKey, u64)>) -> Option<(ShardRow, Vec<String>)> {
    let r = space.readable.as_ref()?;
    let chat = r.docs.get(&doc)?.doc.chat()?;
    let mut row = ShardRow::default();
    let mut ids = Vec::new();
    for m in chat.messages() {
        let actor = actor_key(&m.actor);
        if retracted.contains(&(actor, m.lamport)) {
            row.retracted.push(m.id.clone());
        } else {
            row.counters.entry(actor).or_default().push(m.lamport);
        }
        ids.push(m.id);
    }
    row.writers = r
        .doc_of_actor
        .iter()
        .filter(|(_, d)| **d == doc)
        .map(|(actor, _)| (*actor, space.vv.get(actor)))
        .collect();
    Some((row, ids))
}

/// Sets a loaded closed shard aside: its document and per-change maps leave
/// memory. Returns what to store for it (the caller writes it unless its row
/// is current). None when it is not loaded, or holds content this device
/// cannot open (kept loaded: a key may still come).
fn set_aside(space: &mut Space, doc: DocId, retracted: &HashSet<(ActorKey, u64)>) -> Option<(ShardRow, Vec<String>)> {
    let r = space.readable.as_ref()?;
    if r.locked.in_doc(&doc) {
        return None;
    }
    let (row, ids) = summary(space, doc, retracted)?;
    let r = space.readable.as_mut()?;
    let shard = r.docs.remove(&doc)?;
    r.parked.insert(doc, Parked::of(&row, shard.epoch));
    r.recent.retain(|d| *d != doc);
    r.dirty.remove(&doc);
    let gone: Vec<EnvelopeId> = r
        .change_of_env
        .iter()
        .filter(|(_, (d, _))| *d == doc)
        .map(|(id, _)| *id)
        .collect();
    for id in gone {
        if let Some((_, hash)) = r.change_of_env.remove(&id) {
            r.env_of_change.remove(&hash);
        }
    }
    Some((row, ids))
}
