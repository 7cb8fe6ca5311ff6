//! Taking snapshots from peers: verify, check against the signed writer chains,
//! merge (members) and hold them; and holding stored ones at start-up.

use super::*;

/// What became of a snapshot from a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SnapshotOutcome {
    /// Held (and merged, for members).
    Held,
    /// Names control operations not held yet: it waits with the pending envelopes.
    Wait,
    /// Refused or a duplicate (counted in the ack).
    Done,
}

/// Most messages announced one by one when a snapshot makes them visible at once;
/// beyond this, one [`Event::Reload`] tells followers to re-read.
pub(super) const MAX_MESSAGE_EVENTS_PER_SNAPSHOT: usize = 256;

impl Core {
    /// Takes a snapshot from a peer: checks it, merges its document (members) and
    /// holds it. Returns whether it was accepted.
    pub(super) fn ingest_snapshot(
        &mut self,
        tx: &mut Txn,
        from: Option<DeviceId>,
        env: &Envelope,
        ack: &mut Ack,
        effects: &mut Effects,
        purges: &mut BTreeSet<SpaceId>,
    ) -> store::Result<SnapshotOutcome> {
        let peer = from.map(|d| d.fmt_short()).unwrap_or_default();
        let space_id = env.header().space;
        let maker = env.header().author;
        let Some(space) = self.spaces.get_mut(&space_id) else {
            return Ok(SnapshotOutcome::Done);
        };
        let mut refuse = |space: &mut Space, reason: &dyn std::fmt::Display| {
            warn!(%peer, space = %space_id.fmt_short(), maker = %maker.fmt_short(), %reason, "rejected a snapshot");
            space.rejected += 1;
            ack.rejected += 1;
        };
        // Checked before the last envelopes' signatures, which cost time per writer.
        if !space.state.may_write(&maker) {
            refuse(space, &"made by a device that may not write in this space");
            return Ok(SnapshotOutcome::Done);
        }
        let snap = match Snapshot::verify(env.clone()) {
            Ok(snap) => snap,
            Err(e) => {
                refuse(space, &e);
                return Ok(SnapshotOutcome::Done);
            }
        };
        let store = &self.store;
        let verdict = space.classify_snapshot(&snap, |actor, seq| {
            store.writer_at(&space_id, actor, seq).ok().flatten()
        });
        let content = match verdict {
            SnapshotVerdict::Wait => return Ok(SnapshotOutcome::Wait),
            SnapshotVerdict::Duplicate => {
                ack.duplicate += 1;
                if let Some(peer) = from {
                    space.note_peer_covers(peer, snap.covers());
                }
                return Ok(SnapshotOutcome::Done);
            }
            SnapshotVerdict::Reject(reason) => {
                refuse(space, &reason);
                return Ok(SnapshotOutcome::Done);
            }
            SnapshotVerdict::Equivocation(last) => {
                refuse(
                    space,
                    &"equivocation: a writer's last envelope differs from the one stored; the writer is frozen before it and the device flagged",
                );
                let h = last.header();
                if let Some(first) = held_envelope(&self.store, space, &h.actor(), h.seq)?
                    && freeze(tx, space, first, &last)?
                {
                    purges.insert(space_id);
                }
                return Ok(SnapshotOutcome::Done);
            }
            SnapshotVerdict::Accept(content) => content,
        };
        // Members merge first: a merge refused leaves nothing held.
        let mut created = Vec::new();
        let mut lasts = Vec::new();
        let doc = space.main_doc();
        let epoch = space.state.epoch_at(&snap.envelope().header().control_heads);
        if let (Some(content), Some(readable), Some(epoch)) = (content, space.readable.as_mut(), epoch) {
            let SnapshotContent { opened, lasts: mapped } = *content;
            lasts = mapped;
            let shard = readable.shard_mut(doc, &epoch);
            let merged = std::panic::catch_unwind(AssertUnwindSafe(|| shard.doc.absorb(opened)));
            match merged {
                Ok(Ok(effects)) => created = effects,
                Ok(Err(outpost_crdt::snapshot::AbsorbError::Equivocation { actor, .. })) => {
                    let actor = space::actor_key(&actor);
                    let device = snap
                        .lasts()
                        .iter()
                        .find(|l| l.header().actor() == actor)
                        .map(|l| l.header().author);
                    // The writer's two signed chains disagree at (actor, seq), but the
                    // twin inside the snapshot is no signed envelope a peer could check
                    // on its own: flag the device, refuse the snapshot, freeze nothing.
                    refuse(
                        space,
                        &"equivocation: the snapshot holds another change for a (writer, seq) this node holds",
                    );
                    space.equivocators.extend(device);
                    return Ok(SnapshotOutcome::Done);
                }
                Ok(Err(e)) => {
                    refuse(space, &e);
                    return Ok(SnapshotOutcome::Done);
                }
                Err(_) => {
                    refuse(space, &"Automerge panicked merging the snapshot");
                    return Ok(SnapshotOutcome::Done);
                }
            }
        }
        tx.put_snapshot(&space_id, &snap.id(), snap.envelope().as_bytes())?;
        if let Some(peer) = from {
            space.note_peer_covers(peer, snap.covers());
        }
        let covers = snap.covers().count_missing_in(&VersionVector::default());
        for dropped in space.hold_snapshot(snap, &lasts) {
            tx.remove_snapshot(&space_id, &dropped)?;
        }
        ack.stored += 1;
        info!(%peer, space = %space_id.fmt_short(), changes = covers, effects = created.len(), "merged a snapshot");
        if created.len() > MAX_MESSAGE_EVENTS_PER_SNAPSHOT {
            // Not announced one by one: the bodies its messages lack are
            // asked of peers (announced messages are checked as they go).
            // (A retracted one is answered with its tombstone, which ends the want.)
            for effect in &created {
                if let Effect::Message(m) = effect
                    && let Ok(body) = m.body.parse()
                    && tx.side(&space_id, &body)?.is_none()
                {
                    let author = space.readable.as_ref().map(|r| r.author_of(&m.actor));
                    space.want_body(body, author.unwrap_or(DeviceId([0; 32])));
                }
            }
        }
        if let Some(readable) = space.readable.as_ref() {
            if created.len() > MAX_MESSAGE_EVENTS_PER_SNAPSHOT {
                effects.events.push(Event::Reload {
                    space: space_id,
                    messages: created.len() as u64,
                });
            } else {
                // Snapshots are of rooms with shared history: one run of
                // shards, whatever the epoch.
                let main = (space.main_doc(), &space.state.current().epoch);
                effect_events(&space.state, main, readable, created, effects);
            }
        }
        Ok(SnapshotOutcome::Held)
    }
}

/// Holds a snapshot read from the store at start-up; members merge its document
/// (checked again: the store is not a trust boundary for Automerge input).
pub(super) fn hold_stored_snapshot(space: &mut Space, bytes: Vec<u8>) -> std::result::Result<(), String> {
    let env = Envelope::decode_stored(bytes).map_err(|e| e.to_string())?;
    let snap = Snapshot::from_stored(env).map_err(|e| e.to_string())?;
    let mut lasts = Vec::new();
    if space.readable.is_some() {
        let SnapshotContent { opened, lasts: mapped } = space.open_snapshot(&snap)?;
        let doc = space.main_doc();
        let epoch = space.state.epoch_at(&snap.envelope().header().control_heads);
        if let (Some(readable), Some(epoch)) = (space.readable.as_mut(), epoch) {
            std::panic::catch_unwind(AssertUnwindSafe(|| readable.shard_mut(doc, &epoch).doc.absorb(opened)))
                .map_err(|_| "Automerge panicked merging it".to_string())?
                .map_err(|e| e.to_string())?;
        }
        lasts = mapped;
    }
    space.hold_snapshot(snap, &lasts);
    Ok(())
}
