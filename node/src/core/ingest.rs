//! Ingesting envelopes from peers (or from the pending set): classify, store in
//! arrival order, apply to the documents, announce. Geneses first, snapshots in
//! the same loop, equivocations frozen.

use super::*;

impl Core {
    /// Judges again the `Succession` operations waiting in pending sets: a
    /// policy version they may wait for arrived. (Everything else there waits
    /// for parents, not for the policy.)
    pub(super) fn retry_successions(&mut self, tx: &mut Txn, effects: &mut Effects) -> store::Result<()> {
        let mut waiting = Vec::new();
        for space in self.spaces.values_mut() {
            let (successions, rest): (Vec<_>, Vec<_>) = space
                .pending
                .take_all()
                .into_iter()
                .partition(|e| matches!(e.control_op(), Ok(ControlOp::Succession(_))));
            for env in rest {
                space.pending.insert(env);
            }
            waiting.extend(successions);
        }
        if !waiting.is_empty() {
            self.ingest_with(tx, None, Vec::new(), waiting, effects)?;
        }
        Ok(())
    }

    /// Verifies, stores and applies envelopes from a peer (or from the pending set).
    pub(super) fn ingest(
        &mut self,
        tx: &mut Txn,
        from: Option<DeviceId>,
        queue: Vec<Envelope>,
        effects: &mut Effects,
    ) -> store::Result<Ack> {
        self.ingest_with(tx, from, queue, Vec::new(), effects)
    }

    /// [`Core::ingest`], with envelopes taken from the pending sets (`retry`).
    fn ingest_with(
        &mut self,
        tx: &mut Txn,
        from: Option<DeviceId>,
        queue: Vec<Envelope>,
        retry: Vec<Envelope>,
        effects: &mut Effects,
    ) -> store::Result<Ack> {
        let peer = from.map(|d| d.fmt_short()).unwrap_or_default();
        let mut ack = Ack::default();
        // Geneses first: content of a new space waits for it.
        let (geneses, mut queue): (Vec<_>, Vec<_>) = queue.into_iter().partition(|e| {
            !self.spaces.contains_key(&e.header().space) && matches!(e.control_op(), Ok(ControlOp::Genesis(_)))
        });
        // Whether this device was a member of each space touched by control
        // operations, before this batch: when it becomes one, it adds its user's
        // other devices.
        let mut was_member: BTreeMap<SpaceId, bool> = BTreeMap::new();
        for env in geneses {
            // A genesis that does not name this device is kept when an operation
            // that comes with it (or waits as an orphan) adds this device.
            let space = env.header().space;
            let mut ops: Vec<&Envelope> = queue.iter().filter(|e| e.header().space == space).collect();
            ops.extend(self.orphans.iter().filter(|e| e.header().space == space));
            let admitted = admits(&env, &ops, &self.me);
            match self.accept_genesis(tx, env, from, admitted, effects)? {
                Ok(true) => {
                    ack.stored += 1;
                    was_member.insert(space, false);
                }
                Ok(false) => ack.duplicate += 1,
                Err(reason) => {
                    warn!(%peer, %reason, "rejected a space genesis");
                    ack.rejected += 1;
                }
            }
        }
        let spaces = &self.spaces;
        queue.extend(self.orphans.take_where(|e| spaces.contains_key(&e.header().space)));
        // Envelopes refused because a waiting set is full: reported once per batch.
        let mut dropped = 0u32;

        // Accepted envelopes with their log positions, written together at the end.
        let mut accepted: Vec<(Envelope, u64)> = Vec::new();
        let mut to_apply: BTreeMap<SpaceId, Vec<ContentChange>> = BTreeMap::new();
        let mut from_pending: BTreeSet<EnvelopeId> = retry.iter().map(Envelope::id).collect();
        queue.extend(retry);
        let mut purges = BTreeSet::new();
        // Side envelopes stored, pushed on after the space's accepted envelopes.
        let mut sides: BTreeMap<SpaceId, Vec<Vec<u8>>> = BTreeMap::new();
        let mut snapshot_spaces = BTreeSet::new();
        let mut control_spaces = BTreeSet::new();
        loop {
            let mut waiting = Vec::new();
            let mut progressed = BTreeSet::new();
            for env in queue.drain(..) {
                let space_id = env.header().space;
                if env.header().kind == Kind::Snapshot && self.spaces.contains_key(&space_id) {
                    let outcome = self.ingest_snapshot(tx, from, &env, &mut ack, effects, &mut purges)?;
                    if outcome == SnapshotOutcome::Wait {
                        waiting.push(env);
                        continue;
                    }
                    if outcome == SnapshotOutcome::Held {
                        // What waited for changes the snapshot holds may be ready now.
                        progressed.insert(space_id);
                        snapshot_spaces.insert(space_id);
                    }
                    if let Some(space) = self.spaces.get_mut(&space_id) {
                        unpend(tx, space, &env.id(), &from_pending)?;
                    }
                    continue;
                }
                if env.header().kind.is_side() && self.spaces.contains_key(&space_id) {
                    let outcome = self.ingest_side(tx, &env)?;
                    let fresh = !from_pending.contains(&env.id());
                    let space = self.spaces.get_mut(&space_id).expect("checked above");
                    match outcome {
                        SideOutcome::Wait => {
                            waiting.push(env);
                            continue;
                        }
                        outcome @ (SideOutcome::Stored | SideOutcome::Changed) => {
                            ack.stored += u32::from(fresh);
                            if matches!(outcome, SideOutcome::Changed) {
                                // A tombstone or a body lands in its message's document.
                                let doc = env.header().doc;
                                effects.chat_updated.entry(space_id).or_default().insert(doc);
                            }
                            unpend(tx, space, &env.id(), &from_pending)?;
                            sides.entry(space_id).or_default().push(env.into_bytes());
                        }
                        SideOutcome::Duplicate => {
                            ack.duplicate += u32::from(fresh);
                            unpend(tx, space, &env.id(), &from_pending)?;
                        }
                        SideOutcome::Rejected(reason) => {
                            warn!(%peer, space = %space_id.fmt_short(), author = %env.header().author.fmt_short(), %reason, "rejected a side envelope");
                            space.rejected += 1;
                            ack.rejected += u32::from(fresh);
                            unpend(tx, space, &env.id(), &from_pending)?;
                        }
                    }
                    continue;
                }
                // Content for a closed shard set aside is judged against it
                // loaded; only its writer's next change can need it (what is
                // held is a duplicate, what is further on waits), so a peer
                // resending what this node holds loads nothing.
                let h = env.header();
                if h.kind == Kind::Content
                    && self.spaces.get(&space_id).is_some_and(|s| {
                        h.seq == s.vv.get(&h.actor()) + 1
                            && s.readable.as_ref().is_some_and(|r| r.parked.contains_key(&h.doc))
                    })
                {
                    self.load_shard(space_id, h.doc)?;
                }
                let org_verdict = self.org_verdict(&env);
                let Some(space) = self.spaces.get_mut(&space_id) else {
                    if self.orphans.insert(env) {
                        ack.pending += 1;
                    } else {
                        dropped += 1;
                    }
                    continue;
                };
                // What this node holds at (actor, seq): accepted earlier in this
                // batch (not committed yet), or stored.
                let store = &self.store;
                let held_at = |actor: &ActorKey, seq: u64| -> Option<Vec<u8>> {
                    accepted
                        .iter()
                        .find(|(e, _)| e.header().seq == seq && e.header().actor() == *actor)
                        .map(|(e, _)| e.as_bytes().to_vec())
                        .or_else(|| store.writer_range(&space_id, actor, seq, seq).ok()?.pop())
                };
                let placed = space.placements(&env, |ids| store.placed_all(&space_id, ids))?;
                let verdict = match space.classify(&env, &placed, |actor, seq| {
                    held_at(actor, seq).map(|b| EnvelopeId::of(&b))
                }) {
                    // Valid by the space's rules; an operation the org authorises
                    // also needs the policy version it names.
                    Verdict::Accept(checked) => org_verdict.unwrap_or(Verdict::Accept(checked)),
                    other => other,
                };
                if let (Some(peer), Verdict::Duplicate | Verdict::Accept(_)) = (from, &verdict) {
                    space.note_peer_holds(peer, &env);
                }
                // A text change is applied at once: the next one may edit the
                // block markers it creates, which its validation must see.
                let mut apply_now = false;
                match verdict {
                    Verdict::Duplicate => {
                        if !from_pending.contains(&env.id()) {
                            ack.duplicate += 1;
                        }
                        unpend(tx, space, &env.id(), &from_pending)?;
                    }
                    Verdict::Reject(reason) => {
                        warn!(%peer, space = %space_id.fmt_short(), author = %env.header().author.fmt_short(), %reason, "rejected an envelope");
                        space.rejected += 1;
                        if env.header().kind == Kind::Control {
                            space.invalid_control += 1;
                        }
                        ack.rejected += u32::from(!from_pending.contains(&env.id()));
                        unpend(tx, space, &env.id(), &from_pending)?;
                    }
                    Verdict::Equivocation => {
                        let h = env.header();
                        warn!(%peer, space = %space_id.fmt_short(), author = %h.author.fmt_short(), seq = h.seq, "rejected an envelope: equivocation, its author signed a different envelope for the same (writer, seq); the writer is frozen before it and the device flagged");
                        space.rejected += 1;
                        ack.rejected += u32::from(!from_pending.contains(&env.id()));
                        let first = held_at(&h.actor(), h.seq)
                            .or_else(|| space.snapshot_last(&h.actor(), h.seq).map(|l| l.as_bytes().to_vec()));
                        if let Some(first) = first
                            && freeze(tx, space, first, &env)?
                        {
                            purges.insert(space_id);
                        }
                        unpend(tx, space, &env.id(), &from_pending)?;
                    }
                    Verdict::Covered => match space.note_covered(&env) {
                        None => {
                            if !from_pending.contains(&env.id()) {
                                ack.duplicate += 1;
                            }
                            unpend(tx, space, &env.id(), &from_pending)?;
                        }
                        Some(first) => {
                            let h = env.header();
                            warn!(%peer, space = %space_id.fmt_short(), author = %h.author.fmt_short(), seq = h.seq, "rejected an envelope: equivocation, two different envelopes for one (writer, seq); the writer is frozen before it and the device flagged");
                            space.rejected += 1;
                            ack.rejected += u32::from(!from_pending.contains(&env.id()));
                            if freeze(tx, space, first, &env)? {
                                purges.insert(space_id);
                            }
                            unpend(tx, space, &env.id(), &from_pending)?;
                        }
                    },
                    Verdict::Invalid(reason) => {
                        debug!(%peer, space = %space_id.fmt_short(), author = %env.header().author.fmt_short(), %reason, "refused an envelope of a frozen writer");
                        space.rejected += 1;
                        ack.rejected += u32::from(!from_pending.contains(&env.id()));
                        if space.mark_invalid(env.id()) {
                            tx.put_invalid(&space_id, &env.id())?;
                        }
                        unpend(tx, space, &env.id(), &from_pending)?;
                    }
                    Verdict::Wait => waiting.push(env),
                    Verdict::Accept(checked) => {
                        let change = checked.map(|c| *c);
                        let order = space.record(&env, change.as_ref().map(|c| c.checked.change()));
                        if env.header().kind == Kind::Control {
                            was_member
                                .entry(space_id)
                                .or_insert_with(|| space.state.members.contains_key(&self.me));
                            space.state.apply(&env);
                            control_spaces.insert(space_id);
                            // A key arrived (added to the space, or a rotation or link):
                            // rebuild once the batch is durable, so what arrived before
                            // it gets decrypted.
                            if space.unlock(&self.keys) {
                                if space.needs_rebuild() {
                                    self.rebuilds.insert(space_id);
                                }
                                // Bodies stored before the key may name files.
                                self.refiles.insert(space_id);
                            }
                        }
                        if !from_pending.contains(&env.id()) {
                            ack.stored += 1;
                        }
                        // Text and calendar rules look at the document: the
                        // next change may build on what this one created.
                        apply_now = change.is_some()
                            && space
                                .readable
                                .as_ref()
                                .is_some_and(|r| r.model != outpost_crdt::doc::Model::Chat);
                        to_apply.entry(space_id).or_default().extend(change);
                        accepted.push((env, order));
                        progressed.insert(space_id);
                    }
                }
                if apply_now && let Some(changes) = to_apply.remove(&space_id) {
                    self.apply_changes(space_id, changes, effects);
                }
            }
            if progressed.is_empty() {
                queue = waiting;
                break;
            }
            // Anything that waited may be ready now, including earlier pending ones.
            queue = waiting;
            for space_id in progressed {
                if let Some(space) = self.spaces.get_mut(&space_id) {
                    for env in space.pending.take_all() {
                        from_pending.insert(env.id());
                        queue.push(env);
                    }
                }
            }
        }
        for env in queue {
            let space_id = env.header().space;
            let Some(space) = self.spaces.get_mut(&space_id) else {
                continue;
            };
            let fresh = !from_pending.contains(&env.id());
            if !space.pending.holds_or_admits(&env) {
                if !fresh {
                    tx.remove_pending(&env.id())?;
                }
                dropped += 1;
                continue;
            }
            if fresh {
                tx.put_pending(&env.id(), &space_id, env.as_bytes())?;
                ack.pending += 1;
            }
            space.pending.insert(env);
        }
        // Membership changed: what the org's policy asks of the space (this
        // device may have become its admin); then a member holding the key
        // rotates it if the epoch no longer matches the members (the
        // clean-epoch rule), in this same batch.
        self.enforce_policy(tx, &control_spaces, effects)?;
        for space_id in control_spaces {
            if let Err(e) = self.make_epoch_clean(tx, space_id, false, effects)? {
                debug!(space = %space_id.fmt_short(), error = %e, "the epoch is not clean, and this device cannot rotate it");
            }
        }
        for (space_id, was) in was_member {
            let now = self
                .spaces
                .get(&space_id)
                .is_some_and(|s| s.state.members.contains_key(&self.me));
            if now && !was {
                self.add_my_devices(tx, space_id, effects)?;
            }
        }
        self.purges.extend(purges);
        if dropped > 0 {
            warn!(%peer, dropped, "refused envelopes that wait for parents or a genesis: waiting sets are full");
            ack.rejected += dropped;
        }
        let rows: Vec<(NewEnvelope<'_>, u64)> = accepted.iter().map(|(e, o)| (new_envelope(e), *o)).collect();
        tx.put_envelopes(rows.iter().map(|(e, o)| (e, *o)))?;
        drop(rows);
        let mut stored: BTreeMap<SpaceId, Vec<Vec<u8>>> = BTreeMap::new();
        for (env, _) in accepted {
            stored.entry(env.header().space).or_default().push(env.into_bytes());
        }
        for (space_id, mut sides) in sides {
            stored.entry(space_id).or_default().append(&mut sides);
        }
        let touched: BTreeSet<SpaceId> = stored.keys().copied().chain(snapshot_spaces).collect();
        for (space_id, changes) in to_apply {
            self.apply_changes(space_id, changes, effects);
        }
        ack.vv = touched
            .iter()
            .filter_map(|id| self.spaces.get(id))
            .filter(|s| from.is_none_or(|peer| s.state.entitled(&peer)))
            .map(|s| SpaceVv {
                space: s.state.space,
                vv: s.vv.clone(),
            })
            .collect();
        for (space_id, envelopes) in stored {
            if let Some(space) = self.spaces.get(&space_id) {
                effects.events.push(stored_event(space, envelopes, from));
            }
        }
        Ok(ack)
    }

    /// Keeps a new space from its genesis, if the genesis names this device or
    /// `admitted` (an operation that arrived with it adds this device).
    pub(super) fn accept_genesis(
        &mut self,
        tx: &mut Txn,
        env: Envelope,
        from: Option<DeviceId>,
        admitted: bool,
        effects: &mut Effects,
    ) -> store::Result<std::result::Result<bool, String>> {
        let state = match SpaceState::from_genesis(&env) {
            Ok(s) => s,
            Err(e) => return Ok(Err(e.to_string())),
        };
        if let Some(existing) = self.spaces.get(&state.space) {
            return Ok(if existing.state.genesis == env.id() {
                Ok(false)
            } else {
                Err("a different genesis for a known space".into())
            });
        }
        if !state.entitled(&self.me) && !admitted {
            return Ok(Err("this device is neither member nor replicator of the space".into()));
        }
        let mut keys = Keyring::default();
        keys.unlock(&state, &self.keys);
        let space_id = state.space;
        let mut space = Space::new(state, keys);
        space.unlock(&self.keys);
        if let Some(why) = &space.key_problem {
            warn!(space = %space_id.fmt_short(), %why, "joined a space whose key does not open");
        }
        let order = space.record(&env, None);
        if let Some(peer) = from {
            space.note_peer_holds(peer, &env);
        }
        tx.put_space(&space_id, Participation::Named)?;
        tx.put_envelope(&new_envelope(&env), order)?;
        effects.events.push(stored_event(&space, vec![env.into_bytes()], from));
        info!(space = %space_id.fmt_short(), readable = space.readable.is_some(), "joined a space");
        self.spaces.insert(space_id, space);
        Ok(Ok(true))
    }

    /// Applies accepted changes to a space's documents, one call per document. A
    /// panic inside Automerge cannot take the node down: the panic is caught and
    /// logged; the envelopes stay stored and the document is rebuilt from them at
    /// the next start.
    pub(super) fn apply_changes(&mut self, space_id: SpaceId, changes: Vec<ContentChange>, effects: &mut Effects) {
        let Some(space) = self.spaces.get_mut(&space_id) else {
            return;
        };
        let Some(readable) = space.readable.as_mut() else {
            return;
        };
        if readable.model == outpost_crdt::doc::Model::Calendar {
            // Events (or invitations) may arrive after their reminders came due.
            self.reminder_rescan = true;
        }
        let mut by_doc: BTreeMap<DocId, (Epoch, Vec<Checked>)> = BTreeMap::new();
        for ContentChange { doc, epoch, checked } in changes {
            by_doc.entry(doc).or_insert_with(|| (epoch, Vec::new())).1.push(checked);
        }
        // Documents in display order, so events come in the order of the log.
        let mut by_doc: Vec<(DocId, (Epoch, Vec<Checked>))> = by_doc.into_iter().collect();
        by_doc.sort_by_cached_key(|(doc, (epoch, _))| space::position(&space.state, doc, epoch));
        for (doc, (epoch, changes)) in by_doc {
            if readable.recent.contains(&doc) {
                readable.dirty.insert(doc);
            }
            let shard = readable.shard_mut(doc, &epoch);
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| shard.doc.apply_checked(changes)));
            match result {
                Ok(Ok(applied)) => effect_events(&space.state, (doc, &epoch), readable, applied, effects),
                Ok(Err(e)) => {
                    warn!(space = %space_id.fmt_short(), error = %e, "Automerge refused validated changes")
                }
                Err(_) => {
                    warn!(space = %space_id.fmt_short(), "Automerge panicked applying stored changes; this space's view may be incomplete until the daemon restarts")
                }
            }
        }
    }
}

/// An envelope judged for good leaves the pending set, and its stored row
/// goes too if it was waiting (in memory now, or taken out earlier in this
/// batch to be judged again).
fn unpend(tx: &mut Txn, space: &mut Space, id: &EnvelopeId, from_pending: &BTreeSet<EnvelopeId>) -> store::Result<()> {
    if space.pending.remove(id).is_some() || from_pending.contains(id) {
        tx.remove_pending(id)?;
    }
    Ok(())
}
