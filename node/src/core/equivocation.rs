//! Equivocation: freezing a writer caught signing two envelopes for one
//! position, purging what the freeze made invalid, and rebuilding a space.

use std::ops::ControlFlow;

use super::*;

impl Core {
    /// Removes what a writer's freeze made invalid: its envelopes from the freeze on,
    /// every envelope built on them (both remembered in `invalid-1`), and the held
    /// snapshots that cover them. Envelopes that built on a dropped snapshot's
    /// history go back to pending until a peer serves it again. Then the space is
    /// rebuilt from the store. Runs in its own transaction, after the batch that
    /// froze the writer committed.
    pub(super) fn purge(&mut self, space_id: SpaceId) -> store::Result<()> {
        let Some(space) = self.spaces.get(&space_id) else {
            return Ok(());
        };
        let frozen: BTreeMap<ActorKey, u64> = space.frozen.iter().map(|(a, (from, _))| (*a, *from)).collect();
        let (dropped, kept): (Vec<&Snapshot>, Vec<&Snapshot>) =
            space.snapshots.iter().partition(|snap| space.covers_frozen(snap));
        let mut known: BTreeSet<EnvelopeId> = kept.iter().flat_map(|s| s.lasts().iter().map(Envelope::id)).collect();
        let snapshots_left = !kept.is_empty();
        let mut invalid = space.invalid.clone();
        let mut tx = self.store.begin()?;
        for snap in &dropped {
            tx.remove_snapshot(&space_id, &snap.id())?;
        }
        let dropped = dropped.len();
        let (mut removed, mut requeued) = (0u64, 0u64);
        let failed = self.store.scan_log(&space_id, 0, |order, bytes| {
            let Ok(env) = Envelope::decode_stored(bytes) else {
                return ControlFlow::Continue(());
            };
            let h = env.header();
            if h.kind == Kind::Control && h.parents.is_empty() {
                // The genesis.
                known.insert(env.id());
                return ControlFlow::Continue(());
            }
            let bad = frozen.get(&h.actor()).is_some_and(|from| h.seq >= *from)
                || h.parents.iter().chain(&h.control_heads).any(|p| invalid.contains(p));
            // Without a snapshot left, a parent never stored is one only a
            // dropped snapshot held.
            let unparented = !snapshots_left && h.parents.iter().any(|p| !known.contains(p));
            let written = if bad {
                removed += 1;
                invalid.insert(env.id());
                tx.delete_envelope(&new_envelope(&env), order)
                    .and_then(|()| tx.put_invalid(&space_id, &env.id()))
            } else if unparented {
                requeued += 1;
                tx.delete_envelope(&new_envelope(&env), order)
                    .and_then(|()| tx.put_pending(&env.id(), &space_id, env.as_bytes()))
            } else {
                known.insert(env.id());
                Ok(())
            };
            match written {
                Ok(()) => ControlFlow::Continue(()),
                Err(e) => ControlFlow::Break(e),
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        tx.commit()?;
        self.rebuild(space_id)?;
        warn!(space = %space_id.fmt_short(), removed, requeued, snapshots = dropped, "purged what a frozen writer made invalid");
        let _ = self.events.send(Event::Reload {
            space: space_id,
            messages: removed,
        });
        Ok(())
    }

    /// Rebuilds a space from the store (after a purge, or once this device got its
    /// key), keeping what is not on disk: peer views, counters, flags.
    pub(super) fn rebuild(&mut self, space_id: SpaceId) -> store::Result<()> {
        let frozen: Vec<store::Frozen> = self
            .store
            .frozen()?
            .into_iter()
            .filter(|f| f.space == space_id)
            .collect();
        let pending: Vec<Envelope> = self
            .store
            .pending()?
            .into_iter()
            .filter_map(|b| Envelope::decode_stored(b).ok())
            .filter(|e| e.header().space == space_id)
            .collect();
        let old = self.spaces.remove(&space_id);
        if let Err(why) = self.load_space(space_id, frozen, pending) {
            warn!(space = %space_id.fmt_short(), %why, "space could not be rebuilt");
        }
        if let (Some(old), Some(new)) = (old, self.spaces.get_mut(&space_id)) {
            new.peers = old.peers;
            new.rejected = old.rejected;
            new.invalid_control = old.invalid_control;
            new.equivocators.extend(old.equivocators);
        }
        // Bodies stored while their key was missing name files only now
        // readable: recorded, so they can be fetched and served.
        if self.spaces.contains_key(&space_id) {
            self.record_files(space_id)?;
        }
        Ok(())
    }
}

/// Freezes the writer of `second`, caught signing it for a (writer, seq) that
/// holds `first`: from that seq on its envelopes are invalid on every node that
/// learns the twins (they are sent to every peer). Returns whether the freeze is
/// new or earlier than the one known, i.e. whether a purge must follow.
pub(super) fn freeze(tx: &mut Txn, space: &mut Space, first: Vec<u8>, second: &Envelope) -> store::Result<bool> {
    let h = second.header();
    let actor = h.actor();
    space.equivocators.insert(h.author);
    if space.frozen.get(&actor).is_some_and(|(from, _)| *from <= h.seq) {
        return Ok(false);
    }
    let frozen = store::Frozen {
        space: h.space,
        actor,
        seq: h.seq,
        twins: [first, second.as_bytes().to_vec()],
    };
    tx.put_frozen(&frozen)?;
    space.frozen.insert(actor, (frozen.seq, frozen.twins));
    Ok(true)
}
