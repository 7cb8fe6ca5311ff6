//! Start-up: rebuilding every space from the store (log replay, control
//! operations, snapshots, frozen writers, pending envelopes).

use std::ops::ControlFlow;

use super::*;

/// A stored change decrypted: its document, epoch, the change, and the
/// author the document rules judge it as.
pub(super) type StoredChange = (DocId, Epoch, outpost_crdt::Change, outpost_crdt::Author);

/// A space rebuilt from its log, the stored changes it can read, and what
/// the log holds of each closed shard set aside.
type Replayed = (Space, Vec<StoredChange>, BTreeMap<DocId, Aside>);

/// A closed shard set aside, as a replay finds it.
#[derive(Default)]
pub(super) struct Aside {
    /// Its writers' last seqs as stored.
    writers: BTreeMap<ActorKey, u64>,
    /// The epoch its content is sealed under (none when nothing is stored).
    epoch: Option<Epoch>,
}

impl Space {
    /// A stored content envelope opened, when this device holds its key and
    /// its parents opened: the checks ingest makes after decrypting, for
    /// content stored locked (the change is the author's, at its seq).
    pub(super) fn open_stored(&self, env: &Envelope) -> Option<StoredChange> {
        let r = self.readable.as_ref()?;
        let h = env.header();
        if h.kind != Kind::Content || h.parents.iter().any(|p| r.locked.holds(p)) {
            return None;
        }
        let epoch = self.state.epoch_at(&h.control_heads)?;
        let plain = env.open_content(&self.key_of(env)?).ok()?;
        let change = outpost_crdt::Change::from_bytes(plain).ok()?;
        let bound = change.actor_id().to_bytes() == h.actor().0 && change.seq() == h.seq;
        let author = self.state.author_at(&h.control_heads, &h.author)?;
        bound.then_some((h.doc, epoch, change, author))
    }
}

/// Applies stored changes (accepted in causal order) to their documents.
/// Content stored while this device lacked its key was checked only in clear;
/// the document rules are checked now. A change that breaks them is left out
/// (and logged), never allowed to stop the space from loading.
pub(super) fn apply_stored(
    r: &mut space::Readable,
    space_id: SpaceId,
    changes: Vec<StoredChange>,
) -> std::result::Result<(), String> {
    let mut by_doc: BTreeMap<DocId, (Epoch, Vec<Checked>)> = BTreeMap::new();
    // Each change's objects are created by it, the document, or a change
    // stored before it. Only the text and calendar rules look objects up;
    // chat changes are not decoded for it.
    let created = match r.model {
        outpost_crdt::doc::Model::Text | outpost_crdt::doc::Model::Calendar => {
            outpost_crdt::doc::created_objects(changes.iter().map(|(_, _, c, _)| c))
        }
        outpost_crdt::doc::Model::Chat => Default::default(),
    };
    let pending = |obj: &outpost_crdt::text::OpRef| created.get(obj).copied();
    for (doc, epoch, change, author) in changes {
        let shard = r.shard_mut(doc, &epoch);
        match shard.doc.validate_with(change, &author, &pending) {
            Ok(c) => by_doc.entry(doc).or_insert_with(|| (epoch, Vec::new())).1.push(c),
            Err(v) => {
                warn!(space = %space_id.fmt_short(), reason = v.reason(), "a stored change breaks the document rules; left out")
            }
        }
    }
    for (doc, (epoch, checked)) in by_doc {
        let shard = r.shard_mut(doc, &epoch);
        // The store is not a trust boundary for Automerge input: a panic
        // leaves this space unread, never the node down.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| shard.doc.apply_checked(checked)))
            .map_err(|_| "Automerge panicked applying stored changes".to_string())?
            .map_err(|e| format!("stored changes do not apply: {e}"))?;
    }
    Ok(())
}

impl Core {
    /// Rebuilds every in-memory structure from the store.
    pub(super) fn load(&mut self) -> store::Result<()> {
        self.spaces.clear();
        self.orphans.clear();
        let indexed = self.store.complete_places(|bytes| {
            let env = Envelope::decode_stored(bytes.to_vec()).ok()?;
            let h = env.header();
            Some((h.kind == Kind::Content).then_some(h.doc))
        })?;
        if indexed > 0 {
            info!(
                envelopes = indexed,
                "indexed where stored envelopes are (once, for this version)"
            );
        }
        self.org = org::load_org(&self.store)?;
        self.load_devices()?;
        self.load_dnd()?;
        let cert = self.keys.cert();
        if self.devices.get(&self.me).map(|r| r.cert) != Some(cert) {
            let mut tx = self.store.begin()?;
            let record = DeviceRecord {
                cert,
                revoked: false,
                since_ms: crate::clock::now_ms(),
            };
            tx.put_user_device(&self.me, &postcard::to_stdvec(&record).expect("records serialize"))?;
            tx.commit()?;
            self.devices.insert(self.me, record);
        }
        for bytes in self.store.certs()? {
            if let Ok(cert) = postcard::from_bytes::<DeviceCert>(&bytes)
                && cert.verify()
            {
                self.certs.insert(cert.device, cert);
            }
        }
        let mut frozen: BTreeMap<SpaceId, Vec<store::Frozen>> = BTreeMap::new();
        for f in self.store.frozen()? {
            frozen.entry(f.space).or_default().push(f);
        }
        let mut pending: BTreeMap<SpaceId, Vec<Envelope>> = BTreeMap::new();
        for bytes in self.store.pending()? {
            if let Ok(env) = Envelope::decode_stored(bytes) {
                pending.entry(env.header().space).or_default().push(env);
            }
        }
        for (space_id, _) in self.store.spaces()? {
            let frozen = frozen.remove(&space_id).unwrap_or_default();
            let pending = pending.remove(&space_id).unwrap_or_default();
            if let Err(why) = self.load_space(space_id, frozen, pending) {
                warn!(space = %space_id.fmt_short(), %why, "space could not be loaded");
            }
        }
        // A crash between freezing a writer and purging its envelopes leaves them
        // stored: purge now.
        let unpurged: Vec<SpaceId> = self
            .spaces
            .values()
            .filter(|s| {
                s.frozen.iter().any(|(actor, (from, _))| s.vv.get(actor) >= *from)
                    || s.snapshots.iter().any(|snap| s.covers_frozen(snap))
            })
            .map(|s| s.state.space)
            .collect();
        for space_id in unpurged {
            self.purge(space_id)?;
        }
        // Closed shards read whole at this start (a room's first with them
        // set aside, or stale rows) are set aside now.
        let mut tx = self.store.begin()?;
        self.settle_shards(&mut tx)?;
        tx.commit()?;
        info!(spaces = self.spaces.len(), "store loaded");
        Ok(())
    }

    /// Rebuilds one space from the store: its log, snapshots and invalid ids, plus
    /// its frozen writers and pending envelopes (read by the caller).
    pub(super) fn load_space(
        &mut self,
        space_id: SpaceId,
        frozen: Vec<store::Frozen>,
        pending: Vec<Envelope>,
    ) -> std::result::Result<(), String> {
        // Keys come from the whole control log (a later operation may give this
        // device the key of earlier content), so read it first.
        let mut keys = Keyring::default();
        keys.unlock(&self.control_state(space_id)?, &self.keys);
        // Closed shards set aside at the last run stay aside, unless their
        // writers moved on since (their rows are then stale: loaded below).
        let mut rows: BTreeMap<DocId, shards::ShardRow> = BTreeMap::new();
        for (doc, bytes) in self.store.closed_shards(&space_id).map_err(|e| e.to_string())? {
            match postcard::from_bytes(&bytes) {
                Ok(row) => drop(rows.insert(doc, row)),
                Err(_) => {
                    warn!(space = %space_id.fmt_short(), "a closed shard's row does not decode; the shard is read from its envelopes")
                }
            }
        }
        let aside: BTreeSet<DocId> = rows.keys().copied().collect();
        let (mut space, mut changes, held) = self.replay_log(space_id, keys, &aside)?;
        space.unlock(&self.keys);
        for f in frozen {
            if let Ok(env) = Envelope::decode_stored(f.twins[0].clone()) {
                space.equivocators.insert(env.header().author);
            }
            space.frozen.insert(f.actor, (f.seq, f.twins));
        }
        for id in self.store.invalid(&space_id).map_err(|e| e.to_string())? {
            space.mark_invalid(id);
        }
        space.sides_held = self.store.side_count(&space_id).map_err(|e| e.to_string())?;
        for env in pending {
            space.pending.insert(env);
        }
        // Snapshots first: stored envelopes may build on changes only they hold.
        let snapshots = self.store.snapshots(&space_id).map_err(|e| e.to_string())?;
        for bytes in snapshots {
            if let Err(why) = hold_stored_snapshot(&mut space, bytes) {
                warn!(space = %space_id.fmt_short(), %why, "a stored snapshot could not be loaded; skipped");
            }
        }
        let mut stale = Vec::new();
        if let Some(r) = space.readable.as_mut() {
            changes.retain(|(_, _, c, _)| !r.has_change(&c.hash()));
            apply_stored(r, space_id, changes)?;
            for (doc, aside) in held {
                let row = &rows[&doc];
                let epoch = match aside.epoch {
                    Some(epoch) if row.writers == aside.writers => epoch,
                    // Stale: read again whole right below.
                    epoch => {
                        stale.push(doc);
                        epoch.unwrap_or_else(|| space.state.current().epoch.clone())
                    }
                };
                r.parked.insert(doc, shards::Parked::of(row, epoch));
            }
        }
        self.spaces.insert(space_id, space);
        for doc in stale {
            self.load_shard(space_id, doc).map_err(|e| e.to_string())?;
        }
        // Bodies that never came (a crash between a change and its bodies, a
        // snapshot) are asked of peers.
        self.find_missing_bodies(space_id)
            .and_then(|()| self.load_receipts(space_id))
            .map_err(|e| e.to_string())
    }

    /// A space's control log as stored (its operations were checked when
    /// stored), read from `control-log-1` alone: no message envelope is read.
    fn control_state(&self, space_id: SpaceId) -> std::result::Result<SpaceState, String> {
        let mut state: Option<SpaceState> = None;
        let failed = self
            .store
            .scan_control(&space_id, |_, bytes| {
                let env = match Envelope::decode_stored(bytes) {
                    Ok(env) if env.header().kind == Kind::Control => env,
                    Ok(_) => return ControlFlow::Continue(()),
                    Err(e) => return ControlFlow::Break(format!("stored envelope does not decode: {e}")),
                };
                match state.as_mut() {
                    Some(state) => state.apply(&env),
                    None => match SpaceState::from_genesis(&env) {
                        Ok(genesis) => state = Some(genesis),
                        Err(e) => return ControlFlow::Break(e.to_string()),
                    },
                }
                ControlFlow::Continue(())
            })
            .map_err(|e| e.to_string())?;
        if let Some(why) = failed {
            return Err(why);
        }
        state.ok_or_else(|| "the space has no genesis".into())
    }

    /// Replays a space's log in arrival order: the genesis, control operations
    /// (applied to the membership) and content (recorded, and decrypted when
    /// `keys` hold its epoch's key and its parents opened).
    /// Content of the closed shards in `aside` that this device could read is
    /// recorded without being decrypted: those shards stay set aside.
    pub(super) fn replay_log(
        &self,
        space_id: SpaceId,
        keys: Keyring,
        aside: &BTreeSet<DocId>,
    ) -> std::result::Result<Replayed, String> {
        let mut keys = Some(keys);
        let mut space: Option<Space> = None;
        let mut changes = Vec::new();
        let mut held: BTreeMap<DocId, Aside> = aside.iter().map(|d| (*d, Aside::default())).collect();
        let failed = self
            .store
            .scan_log(&space_id, 0, |order, bytes| {
                let env = match Envelope::decode_stored(bytes) {
                    Ok(env) => env,
                    Err(e) => return ControlFlow::Break(format!("stored envelope does not decode: {e}")),
                };
                let s = match space.as_mut() {
                    Some(s) => s,
                    None => {
                        let state = match SpaceState::from_genesis(&env) {
                            Ok(state) => state,
                            Err(e) => return ControlFlow::Break(e.to_string()),
                        };
                        let mut s = Space::new(state, keys.take().unwrap_or_default());
                        s.record_at(&env, None, order);
                        space = Some(s);
                        return ControlFlow::Continue(());
                    }
                };
                if env.header().kind == Kind::Control {
                    s.state.apply(&env);
                }
                let h = env.header();
                if let Some(held) = held.get_mut(&h.doc)
                    && h.kind == Kind::Content
                    && s.key_of(&env).is_some()
                    && s.readable
                        .as_ref()
                        .is_some_and(|r| !h.parents.iter().any(|p| r.locked.holds(p)))
                {
                    held.writers.insert(h.actor(), h.seq);
                    if held.epoch.is_none() {
                        held.epoch = s.state.epoch_at(&h.control_heads);
                    }
                    s.record_aside(&env, order);
                    return ControlFlow::Continue(());
                }
                let change = s.open_stored(&env);
                s.record_at(&env, change.as_ref().map(|(_, _, c, _)| c), order);
                changes.extend(change);
                ControlFlow::Continue(())
            })
            .map_err(|e| e.to_string())?;
        if let Some(why) = failed {
            return Err(why);
        }
        Ok((space.ok_or("the space has no genesis")?, changes, held))
    }
}
