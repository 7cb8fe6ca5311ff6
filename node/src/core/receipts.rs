//! Read receipts: what each device had seen of a room when its user marked
//! it read, as last-writer-wins [`Kind::State`] envelopes (one per device and
//! room, newest wins; relays keep only that one), never Automerge writes (they
//! would bloat the history forever, and readers may not write content).
//!
//! A receipt holds, per writer (Automerge actor), the highest Lamport counter
//! of a message by that writer the device held. A writer's messages are held
//! in order (its changes apply in seq order), so message `m` was held, and is
//! read, iff `seen[m.actor] >= m.lamport`. That is exact and causal: a message
//! arriving late from another writer is unread whatever its place in the log.
//! A user has read what any of its devices has read (pointwise maximum).

use std::collections::HashSet;

use super::{space::actor_key, *};

/// Most writers one receipt names (a room's writer count grows with daemon
/// runs; beyond this, the writers with the lowest counters are left out).
pub const MAX_RECEIPT_WRITERS: usize = 4096;

/// A receipt's plaintext. postcard: append variants, never reorder.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum ReceiptPlain {
    V1 { seen: Vec<(ActorKey, u64)> },
}

/// One device's newest receipt in a room.
#[derive(Debug, Clone)]
pub(crate) struct Receipt {
    /// The envelope's counter (its `seq`).
    pub(crate) counter: u64,
    /// Per writer, the highest message counter seen; `None` when this node
    /// cannot read it (a replicator, or the key is missing).
    pub(crate) seen: Option<BTreeMap<ActorKey, u64>>,
    /// The exact envelope, forwarded to peers.
    pub(crate) bytes: Arc<Vec<u8>>,
}

/// What `chat read` did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MarkedRead {
    pub space: SpaceId,
    /// Messages of others that were unread before.
    pub newly_read: u64,
}

impl Core {
    /// Marks everything this device holds of a chat room as read by its user.
    pub(super) fn mark_read(
        &mut self,
        tx: &mut Txn,
        space_id: SpaceId,
        effects: &mut Effects,
    ) -> store::Result<Result<MarkedRead>> {
        let Some(space) = self.spaces.get(&space_id) else {
            return Ok(Err(Error::UnknownSpace(space_id)));
        };
        if let Err(e) = expect_kind(space, SpaceKind::Chat) {
            return Ok(Err(e));
        }
        if !space.state.members.contains_key(&self.me) {
            return Ok(Err(Error::NotWritable(space_id)));
        }
        let newly_read = self.unread(space);
        let (epoch, key) = match self.sealing_key(tx, space_id, effects)? {
            Ok(k) => k,
            Err(e) => return Ok(Err(e)),
        };
        let space = self.spaces.get(&space_id).expect("found above");
        let readable = space.readable.as_ref().expect("sealing_key found a key");
        let seen = seen_now(readable);
        let previous = space.receipts.get(&self.me).map_or(0, |r| r.counter);
        let counter = (previous + 1).max(crate::clock::now_ms());
        let header = Header {
            kind: Kind::State,
            space: space_id,
            doc: space_id.receipts_doc(),
            epoch: epoch.id,
            author: self.me,
            incarnation: 0,
            seq: counter,
            parents: Vec::new(),
            control_heads: space.state.heads(),
        };
        let plain = ReceiptPlain::V1 {
            seen: seen.iter().map(|(a, c)| (*a, *c)).collect(),
        };
        let plain = postcard::to_stdvec(&plain).expect("receipts serialize");
        let env = Envelope::seal_value(&self.keys, header, &key, &plain);
        tx.put_state(&space_id, &self.me, env.as_bytes())?;
        let space = self.spaces.get_mut(&space_id).expect("found above");
        space.receipts.insert(
            self.me,
            Receipt {
                counter,
                seen: Some(seen),
                bytes: Arc::new(env.as_bytes().to_vec()),
            },
        );
        effects.events.push(stored_event(space, vec![env.into_bytes()], None));
        // No document changed: what the log shows as read did.
        effects.chat_updated.entry(space_id).or_default();
        Ok(Ok(MarkedRead {
            space: space_id,
            newly_read,
        }))
    }

    /// A receipt from a peer: kept when it is newer than the one held for its
    /// device, once the control heads it names are known.
    pub(super) fn ingest_state(&mut self, tx: &mut Txn, env: &Envelope) -> store::Result<SideOutcome> {
        let h = env.header();
        let Some(space) = self.spaces.get(&h.space) else {
            return Ok(SideOutcome::Wait);
        };
        if h.doc != h.space.receipts_doc() {
            return Ok(SideOutcome::Rejected("a state value about something unknown"));
        }
        if !space.state.knows(&h.control_heads) {
            return Ok(SideOutcome::Wait);
        }
        let Some(resolved) = space.state.resolved(&h.control_heads) else {
            return Ok(SideOutcome::Wait);
        };
        if h.control_heads.is_empty() || !resolved.members.contains_key(&h.author) {
            return Ok(SideOutcome::Rejected("a receipt by a device that is not a member"));
        }
        if resolved.epoch.id != h.epoch {
            return Ok(SideOutcome::Rejected(
                "sealed under an epoch that is not the space's epoch at its control heads",
            ));
        }
        if space.receipts.get(&h.author).is_some_and(|r| r.counter >= h.seq) {
            return Ok(SideOutcome::Duplicate);
        }
        let receipt = open_receipt(space, env);
        tx.put_state(&h.space, &h.author, env.as_bytes())?;
        let space = self.spaces.get_mut(&h.space).expect("found above");
        space.receipts.insert(h.author, receipt);
        Ok(SideOutcome::Stored)
    }

    /// The receipts stored for a space, read at start-up.
    pub(super) fn load_receipts(&mut self, space_id: SpaceId) -> store::Result<()> {
        let stored = self.store.states(&space_id)?;
        let Some(space) = self.spaces.get_mut(&space_id) else {
            return Ok(());
        };
        for bytes in stored {
            let Ok(env) = Envelope::decode_stored(bytes) else {
                continue;
            };
            let receipt = open_receipt(space, &env);
            space.receipts.insert(env.header().author, receipt);
        }
        Ok(())
    }

    /// What each user has seen of a room: per writer, the highest message
    /// counter any of the user's devices has marked read.
    pub(super) fn seen_by_user(&self, space: &Space) -> BTreeMap<UserId, BTreeMap<ActorKey, u64>> {
        let mut out: BTreeMap<UserId, BTreeMap<ActorKey, u64>> = BTreeMap::new();
        for (device, receipt) in &space.receipts {
            let (Some(user), Some(seen)) = (self.user_of(space, device), &receipt.seen) else {
                continue;
            };
            let mine = out.entry(user).or_default();
            for (actor, counter) in seen {
                let entry = mine.entry(*actor).or_insert(0);
                *entry = (*entry).max(*counter);
            }
        }
        out
    }

    /// How many messages of others this device's user has not read in a
    /// room. A retracted message is not counted: there is nothing left to read.
    pub(super) fn unread(&self, space: &Space) -> u64 {
        let Some(readable) = space.readable.as_ref() else {
            return 0;
        };
        let tombstones = |body: &EnvelopeId| (self.store.tombstones(&space.state.space, body)).unwrap_or_default();
        let retracted = retracted_counters(self.retractions_in(space, readable, None, tombstones));
        let me = self.keys.user_id();
        let seen = self.seen_by_user(space).remove(&me).unwrap_or_default();
        let mut authors: HashMap<ActorKey, bool> = HashMap::new();
        let mut mine = |actor: ActorKey| {
            *authors.entry(actor).or_insert_with(|| {
                let device = readable.device_of_actor.get(&actor);
                device.is_some_and(|d| self.user_of(space, d) == Some(me))
            })
        };
        let unseen = |actor: &ActorKey, counter: u64| seen.get(actor).is_none_or(|c| *c < counter);
        let mut unread = 0;
        for shard in readable.docs.values() {
            let Some(chat) = shard.doc.chat() else { continue };
            for m in chat.messages() {
                let actor = actor_key(&m.actor);
                if !mine(actor) && unseen(&actor, m.lamport) && !retracted.contains(&(actor, m.lamport)) {
                    unread += 1;
                }
            }
        }
        // A closed shard set aside is counted from its stored counters (its
        // retracted messages left out), read only when it may hold something
        // unread.
        for (doc, parked) in &readable.parked {
            if !parked
                .top
                .iter()
                .any(|(actor, top)| !mine(*actor) && unseen(actor, *top))
            {
                continue;
            }
            let row = self.store.closed_shard(&space.state.space, doc).ok().flatten();
            let Some(row) = row.and_then(|b| postcard::from_bytes::<super::shards::ShardRow>(&b).ok()) else {
                continue;
            };
            for (actor, counters) in &row.counters {
                if !mine(*actor) {
                    unread += counters.iter().filter(|c| unseen(actor, **c)).count() as u64;
                }
            }
        }
        unread
    }
}

/// The (writer, counter) of each message entry `retractions` take effect on.
pub(super) fn retracted_counters(retractions: Vec<super::chat::Retracted>) -> HashSet<(ActorKey, u64)> {
    (retractions.into_iter())
        .map(|r| (actor_key(&r.entry.actor), r.entry.lamport))
        .collect()
}

/// Per writer, the highest message counter held in a room's documents (at
/// most [`MAX_RECEIPT_WRITERS`] writers, the most recent ones).
fn seen_now(readable: &space::Readable) -> BTreeMap<ActorKey, u64> {
    let mut seen: BTreeMap<ActorKey, u64> = BTreeMap::new();
    for shard in readable.docs.values() {
        let Some(chat) = shard.doc.chat() else { continue };
        for m in chat.messages() {
            let entry = seen.entry(actor_key(&m.actor)).or_insert(0);
            *entry = (*entry).max(m.lamport);
        }
    }
    for (actor, top) in readable.parked.values().flat_map(|p| &p.top) {
        let entry = seen.entry(*actor).or_insert(0);
        *entry = (*entry).max(*top);
    }
    if seen.len() > MAX_RECEIPT_WRITERS {
        let mut by_counter: Vec<(ActorKey, u64)> = seen.into_iter().collect();
        by_counter.sort_by_key(|(_, c)| std::cmp::Reverse(*c));
        by_counter.truncate(MAX_RECEIPT_WRITERS);
        seen = by_counter.into_iter().collect();
    }
    seen
}

/// A receipt as this node can read it (its values only with the epoch's key).
fn open_receipt(space: &Space, env: &Envelope) -> Receipt {
    let h = env.header();
    let seen = space
        .key_of(env)
        .and_then(|k| env.open_value(&k).ok())
        .and_then(|p| postcard::from_bytes::<ReceiptPlain>(&p).ok())
        .map(|ReceiptPlain::V1 { seen }| seen.into_iter().take(MAX_RECEIPT_WRITERS).collect());
    Receipt {
        counter: h.seq,
        seen,
        bytes: Arc::new(env.as_bytes().to_vec()),
    }
}
