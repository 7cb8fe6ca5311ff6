//! Serving peers: answering offers with what they lack (genesis and control
//! operations first, then snapshots when they lack much, then envelopes), in
//! bounded parts, and making the snapshots a member serves.

use std::ops::ControlFlow;

use super::*;

/// An envelope with its log position.
/// A log position, its envelope, and the side envelopes (chat bodies,
/// tombstones) that ride with it.
pub(super) type LogEntry = (u64, Envelope, Vec<Vec<u8>>);

/// A peer lacking at least this share of a space's changes (in percent) gets a
/// snapshot instead of the envelopes: loading a document beats replaying most of it.
pub(super) const SNAPSHOT_WHEN_LACKING_PERCENT: u64 = 50;

/// Most bytes pushed in answer to one offer (or one catch-up): bounds the memory a
/// peer lacking a large history makes this node use, and stays well within the
/// network's per-peer outbox.
pub const CATCH_UP_BYTES: usize = 8 << 20;

/// A member makes a fresh snapshot to serve when the newest one it holds leaves
/// more than this many changes (or an eighth of the space) to send as envelopes.
pub(super) const SNAPSHOT_STALE_CHANGES: u64 = 256;

impl Core {
    /// Our version vectors for every space `peer` is entitled to.
    pub(super) fn offer_for(&self, peer: &DeviceId) -> Vec<SpaceVv> {
        self.spaces
            .values()
            .filter(|s| s.state.entitled(peer))
            .map(|s| SpaceVv {
                space: s.state.space,
                vv: s.vv.clone(),
            })
            .collect()
    }

    pub(super) fn take_offer(&mut self, peer: DeviceId, theirs: Vec<SpaceVv>) -> Result<OfferOutcome> {
        let mut response = self.offer_for(&peer);
        let offered: BTreeSet<SpaceId> = response.iter().map(|s| s.space).collect();
        // Spaces the peer has and we do not: an empty vector asks for everything.
        // (Whether we keep the space is decided when its genesis arrives.)
        for s in &theirs {
            if !self.spaces.contains_key(&s.space) {
                response.push(SpaceVv {
                    space: s.space,
                    vv: VersionVector::default(),
                });
            }
        }
        let mut theirs_by_space: BTreeMap<SpaceId, VersionVector> =
            theirs.into_iter().map(|s| (s.space, s.vv)).collect();
        // Spaces we hold that the peer did not mention: it lacks all of them.
        for space in &offered {
            theirs_by_space.entry(*space).or_default();
        }
        let (push, more) = self.missing_for(peer, theirs_by_space)?;
        Ok(OfferOutcome { response, push, more })
    }

    /// Records what `peer` holds and returns what it lacks of its entitled spaces:
    /// per space, the genesis if it lacks it, then snapshots when it lacks much
    /// (or what only a snapshot holds here), then envelopes in topological order.
    /// At most about [`CATCH_UP_BYTES`]: the flag says more follows (the network
    /// asks for it with [`CoreHandle::catch_up`] once the peer acknowledged these).
    pub(super) fn missing_for(
        &mut self,
        peer: DeviceId,
        theirs: BTreeMap<SpaceId, VersionVector>,
    ) -> Result<(Vec<Vec<u8>>, bool)> {
        let now = crate::clock::now_ms();
        let mut out = Vec::new();
        let mut budget = CATCH_UP_BYTES;
        let mut more = false;
        for (space_id, their_vv) in theirs {
            let Some(space) = self.spaces.get(&space_id) else {
                continue;
            };
            if !space.state.entitled(&peer) {
                continue;
            }
            let snapshot = wants_snapshot(space, &peer, &their_vv);
            if snapshot {
                self.refresh_snapshot(space_id)?;
            }
            let Some(space) = self.spaces.get_mut(&space_id) else {
                continue;
            };
            let mut floor = their_vv.clone();
            let mut snapshots = Vec::new();
            if snapshot {
                for snap in space.snapshots.iter().filter(|s| !s.is_covered_by(&their_vv)) {
                    floor.merge(snap.covers());
                    snapshots.push(snap.envelope().as_bytes().to_vec());
                }
            }
            budget = budget.saturating_sub(snapshots.iter().map(Vec::len).sum());
            let (found, truncated) = if budget == 0 {
                (Vec::new(), !space.vv.missing_in(&floor).is_empty())
            } else {
                envelopes_beyond(&self.store, space, &floor, budget).map_err(|e| Error::Store(Arc::new(e)))?
            };
            budget = budget.saturating_sub(found.iter().map(entry_bytes).sum());
            more |= truncated;
            // Control operations (the genesis first) go before snapshots and content,
            // which name them as control heads and would wait for them.
            let (control, content): (Vec<LogEntry>, Vec<LogEntry>) = found
                .into_iter()
                .partition(|(_, e, _)| e.header().kind == Kind::Control);
            out.extend(control.into_iter().map(|(_, e, _)| e.into_bytes()));
            out.extend(snapshots);
            for (_, env, sides) in content {
                // A change's bodies and tombstone ride right behind it.
                out.push(env.into_bytes());
                out.extend(sides);
            }
            let view = space.peers.entry(peer).or_default();
            // Read receipts it was not sent yet in this run (one per device).
            for (device, receipt) in &space.receipts {
                if view.receipts_sent.get(device).is_none_or(|c| *c < receipt.counter) {
                    view.receipts_sent.insert(*device, receipt.counter);
                    out.push(receipt.bytes.as_ref().clone());
                }
            }
            // Every peer learns each freeze once per run: the twins are the evidence,
            // and a peer holding either one freezes the writer as this node did.
            for (actor, (_, twins)) in &space.frozen {
                if view.evidence_sent.insert(*actor) {
                    out.extend(twins.iter().cloned());
                }
            }
            // Version vectors only grow: merge, so a late offer never hides an
            // acknowledgement that overtook it. What we are about to push counts
            // as theirs only once acknowledged.
            for (actor, seq) in their_vv.0 {
                view.vv.advance(actor, seq);
            }
            view.last_sync_ms = Some(now);
        }
        Ok((out, more))
    }

    /// What `peer` still lacks after it acknowledged a partial push: the next part,
    /// from what it is known to hold (its offers and acks).
    pub(super) fn catch_up(&mut self, peer: DeviceId) -> Result<OfferOutcome> {
        let theirs: BTreeMap<SpaceId, VersionVector> = self
            .spaces
            .values()
            .filter(|s| s.state.entitled(&peer))
            .map(|s| {
                (
                    s.state.space,
                    s.peers.get(&peer).map(|v| v.vv.clone()).unwrap_or_default(),
                )
            })
            .collect();
        let (push, more) = self.missing_for(peer, theirs)?;
        Ok(OfferOutcome {
            response: Vec::new(),
            push,
            more,
        })
    }

    /// Makes sure a member holds a snapshot close to its whole document before
    /// serving one: it makes a fresh one when those it holds leave more than
    /// [`SNAPSHOT_STALE_CHANGES`] changes (or an eighth of the space) uncovered.
    /// The new snapshot is durable before it is served and replaces the others.
    pub(super) fn refresh_snapshot(&mut self, space_id: SpaceId) -> Result<()> {
        let store_err = |e: store::Error| Error::Store(Arc::new(e));
        let Some(space) = self.spaces.get(&space_id) else {
            return Ok(());
        };
        // A snapshot is sealed under the current epoch: only when this device holds
        // its key, that key reaches exactly the members, and nothing is locked.
        let current = space.state.current();
        let (Some(readable), Some(key)) = (space.readable.as_ref(), space.keys.key_for(&current.epoch)) else {
            return Ok(());
        };
        if !current.is_clean() || !readable.locked.is_empty() || space.state.history != History::Shared {
            return Ok(());
        }
        let Some(shard) = readable.docs.get(&space.main_doc()) else {
            return Ok(());
        };
        let mut covered = VersionVector::default();
        for snap in &space.snapshots {
            covered.merge(snap.covers());
        }
        // Only the first shard is snapshotted: a room's later shards travel as envelopes.
        let main = space.main_doc();
        let (mut uncovered, mut held) = (0, 0);
        for (actor, seq) in space.content_writers(main) {
            uncovered += seq.saturating_sub(covered.get(actor));
            held += seq;
        }
        if !space.snapshots.is_empty() && uncovered <= SNAPSHOT_STALE_CHANGES.max(held / 8) {
            return Ok(());
        }
        let mut lasts = Vec::new();
        for (actor, seq) in space.content_writers(main) {
            let last = held_envelope(&self.store, space, actor, seq)
                .map_err(store_err)?
                .and_then(|b| Envelope::decode_stored(b).ok());
            let Some(last) = last else {
                warn!(space = %space_id.fmt_short(), writer = %actor.fmt_short(), "no envelope for a writer's last change; serving envelopes instead of a snapshot");
                return Ok(());
            };
            lasts.push(last);
        }
        let doc = shard.doc.save();
        let snap = match Snapshot::make(&self.keys, &key, space.main_doc(), space.state.heads(), lasts, &doc) {
            Ok(snap) => snap,
            Err(e) => {
                debug!(space = %space_id.fmt_short(), error = %e, "no snapshot; serving envelopes");
                return Ok(());
            }
        };
        let mut tx = self.store.begin().map_err(store_err)?;
        tx.put_snapshot(&space_id, &snap.id(), snap.envelope().as_bytes())
            .map_err(store_err)?;
        let replaced: Vec<EnvelopeId> = space
            .snapshots
            .iter()
            .filter(|held| held.is_covered_by(snap.covers()))
            .map(Snapshot::id)
            .collect();
        for id in &replaced {
            tx.remove_snapshot(&space_id, id).map_err(store_err)?;
        }
        tx.commit().map_err(store_err)?;
        let changes = snap.envelope().header().seq;
        let bytes = snap.envelope().as_bytes().len();
        if let Some(space) = self.spaces.get_mut(&space_id) {
            space.hold_snapshot(snap, &[]);
        }
        info!(space = %space_id.fmt_short(), changes, bytes, "made a snapshot");
        Ok(())
    }

    pub(super) fn note_peer_holds(&mut self, peer: DeviceId, spaces: Vec<SpaceVv>) {
        let now = crate::clock::now_ms();
        for SpaceVv { space, vv } in spaces {
            if let Some(s) = self.spaces.get_mut(&space)
                && s.state.entitled(&peer)
            {
                let view = s.peers.entry(peer).or_insert_with(PeerView::default);
                for (actor, seq) in vv.0 {
                    view.vv.advance(actor, seq);
                }
                view.last_sync_ms = Some(now);
            }
        }
    }
}

/// The envelopes of `space` beyond `floor`, up to about `budget` bytes (at least
/// one); the flag says some were left out. The control operations missing come
/// first, then the rest in arrival (topological) order: a newcomer must hold the
/// operation that adds it before it keeps the space's genesis, and in a long
/// history that operation comes last. Scans the space's log from the first
/// missing envelope, so memory stays within the budget however much the peer lacks.
pub(super) fn envelopes_beyond(
    store: &Store,
    space: &Space,
    floor: &VersionVector,
    budget: usize,
) -> store::Result<(Vec<LogEntry>, bool)> {
    let mut part = Part {
        out: Vec::new(),
        size: 0,
        budget,
    };
    let truncated = store.scan_control(&space.state.space, |order, bytes| {
        let Ok(env) = Envelope::decode_stored(bytes) else {
            return ControlFlow::Continue(());
        };
        if env.header().seq <= floor.get(&env.header().actor()) {
            return ControlFlow::Continue(());
        }
        part.take((order, env, Vec::new()))
    })?;
    if truncated.is_some() {
        return Ok((part.out, true));
    }
    let missing = space.vv.missing_in(floor);
    let mut start = u64::MAX;
    for (actor, from, to) in &missing {
        // Below `stored_from` only snapshots hold the writer: nothing to send there.
        let first = (*from).max(space.stored_from.get(actor).copied().unwrap_or(u64::MAX));
        if first <= *to
            && let Some(id) = store.writer_at(&space.state.space, actor, first)?
            && let Some(placed) = store.placed(&space.state.space, &id)?
        {
            start = start.min(placed.order);
        }
    }
    if start == u64::MAX {
        return Ok((part.out, false));
    }
    let mut failure = None;
    let truncated = store.scan_log(&space.state.space, start, |order, bytes| {
        let Ok(env) = Envelope::decode_stored(bytes) else {
            return ControlFlow::Continue(());
        };
        let h = env.header();
        // Control operations went first.
        if h.seq <= floor.get(&h.actor()) || h.kind == Kind::Control {
            return ControlFlow::Continue(());
        }
        let sides = match h.kind {
            Kind::Content => match store.sides_of(&space.state.space, &h.actor(), h.seq) {
                Ok(sides) => sides,
                Err(e) => {
                    failure = Some(e);
                    return ControlFlow::Break(());
                }
            },
            _ => Vec::new(),
        };
        part.take((order, env, sides))
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    Ok((part.out, truncated.is_some()))
}

/// The entries of one push, up to about `budget` bytes (at least one).
struct Part {
    out: Vec<LogEntry>,
    size: usize,
    budget: usize,
}

impl Part {
    /// Takes `entry`, or stops the scan when it would pass the budget.
    fn take(&mut self, entry: LogEntry) -> ControlFlow<()> {
        let len = entry_bytes(&entry);
        if !self.out.is_empty() && self.size + len > self.budget {
            return ControlFlow::Break(());
        }
        self.size += len;
        self.out.push(entry);
        ControlFlow::Continue(())
    }
}

/// Whether to serve a peer that holds `theirs` with snapshots: when it lacks at
/// least [`SNAPSHOT_WHEN_LACKING_PERCENT`] of the space (and more than a few
/// changes), or when part of what it lacks is held here only inside snapshots.
pub(super) fn wants_snapshot(space: &Space, peer: &DeviceId, theirs: &VersionVector) -> bool {
    const MIN_CHANGES: u64 = 64;
    let missing = space.vv.missing_in(theirs);
    let only_in_snapshots = missing
        .iter()
        .any(|(actor, from, _)| space.stored_from.get(actor).is_none_or(|first| from < first));
    let lacking: u64 = missing.iter().map(|(_, from, to)| to - from + 1).sum();
    let can = space.readable.is_some() || !space.snapshots.is_empty();
    if space.state.replicators.contains(peer) {
        // A replicator cannot read a snapshot's messages to fetch their bodies:
        // it gets the envelopes, with the bodies beside them.
        return only_in_snapshots;
    }
    only_in_snapshots
        || (can && lacking >= MIN_CHANGES && lacking * 100 >= space.changes_held() * SNAPSHOT_WHEN_LACKING_PERCENT)
}

/// What an entry costs to send: its envelope and its sides.
fn entry_bytes((_, env, sides): &LogEntry) -> usize {
    env.as_bytes().len() + sides.iter().map(Vec::len).sum::<usize>()
}
