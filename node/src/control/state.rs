//! The state of one space's control log: every operation held, validity at an
//! operation's causal point ([`SpaceState::check`]), and the resolved state at
//! the current heads and at any other causal point.

use super::*;

/// The membership of a space as its control log defines it.
#[derive(Debug, Clone)]
pub struct SpaceState {
    pub space: SpaceId,
    pub kind: SpaceKind,
    pub history: History,
    pub genesis: EnvelopeId,
    /// The current epoch (at the current heads).
    pub epoch: EpochId,
    /// The members at the current heads.
    pub members: BTreeMap<DeviceId, Member>,
    pub replicators: BTreeSet<DeviceId>,
    /// Every operation, the genesis included, by envelope id.
    pub(super) ops: BTreeMap<EnvelopeId, Applied>,
    /// Every epoch ever started → its commitment.
    pub(super) commits: BTreeMap<EpochId, [u8; 32]>,
    /// Every epoch ever started → the depth of the operation that started it
    /// (the shallowest, should two start it).
    depths: BTreeMap<EpochId, u32>,
    /// The control log's heads: operations no other names as a parent.
    heads: BTreeSet<EnvelopeId>,
    /// The state at the current heads.
    current: Arc<Resolved>,
    /// States at other causal points (content names older heads; operations are
    /// checked at theirs). Valid forever: a causal past never changes. Bounded.
    resolved_at: Arc<Mutex<HashMap<Vec<EnvelopeId>, Arc<Resolved>>>>,
}

/// A valid operation with its place in the DAG.
#[derive(Debug, Clone)]
pub(super) struct Applied {
    pub(super) parents: Vec<EnvelopeId>,
    pub(super) author: DeviceId,
    pub(super) op: ControlOp,
    /// 0 for the genesis, else one more than its deepest parent: with the id, a
    /// canonical topological order.
    pub(super) depth: u32,
    /// A `SetRole` that lowered the role the target had at its causal point.
    pub(super) demotes: bool,
}

impl SpaceState {
    /// Validates a genesis envelope and returns the state it defines.
    pub fn from_genesis(env: &Envelope) -> Result<Self, InvalidOp> {
        let h = env.header();
        let ControlOp::Genesis(g) = env.control_op().map_err(|_| InvalidOp::Decode)? else {
            return Err(InvalidOp::Position);
        };
        if space_id(&h.author, &g.nonce) != h.space {
            return Err(InvalidOp::SpaceId);
        }
        if h.seq != 1
            || !h.parents.is_empty()
            || !h.control_heads.is_empty()
            || h.epoch != EpochId([0; 16])
            || h.doc != h.space.control_doc()
        {
            return Err(InvalidOp::Position);
        }
        // The name is sealed; its ciphertext is the name plus a 16-byte tag.
        if g.name_sealed.len() > MAX_NAME_BYTES + 16
            || g.department
                .as_ref()
                .is_some_and(|d| d.sealed.len() > MAX_NAME_BYTES + 16)
        {
            return Err(InvalidOp::Name);
        }
        if g.rules_version != RULES_VERSION {
            return Err(InvalidOp::RulesVersion(g.rules_version));
        }
        if g.kind.needs_shared_history() && g.history != History::Shared {
            return Err(InvalidOp::DocHistory);
        }
        if g.members.len() > MAX_MEMBERS || g.replicators.len() > MAX_REPLICATORS {
            return Err(InvalidOp::TooMany(g.members.len() + g.replicators.len()));
        }
        let mut members = BTreeMap::new();
        for m in &g.members {
            if !m.cert.verify() {
                return Err(InvalidOp::Cert);
            }
            if members.insert(m.cert.device, m.clone()).is_some() {
                return Err(InvalidOp::Duplicate);
            }
        }
        if members.get(&h.author).map(|m: &Member| m.role) != Some(Role::Owner) {
            return Err(InvalidOp::Creator);
        }
        let replicators: BTreeSet<DeviceId> = g.replicators.iter().copied().collect();
        if replicators.len() != g.replicators.len() || replicators.iter().any(|r| members.contains_key(r)) {
            return Err(InvalidOp::Duplicate);
        }
        wraps_match(g.wraps.wraps(), members.keys().copied().collect())?;
        let epoch = EpochKey::id_of(&h.space, &g.epoch_commit);
        let kind = g.kind;
        let history = g.history;
        let ops = BTreeMap::from([(
            env.id(),
            Applied {
                parents: Vec::new(),
                author: h.author,
                op: ControlOp::Genesis(g),
                depth: 0,
                demotes: false,
            },
        )]);
        let current = resolve::resolve(&h.space, &ops, &[env.id()]).expect("the genesis is its own past");
        Ok(Self {
            space: h.space,
            kind,
            history,
            genesis: env.id(),
            epoch,
            members: current.members.clone(),
            replicators: current.replicators.clone(),
            commits: BTreeMap::from([(
                epoch,
                *ops[&env.id()].op.rotation().expect("a genesis starts an epoch").0,
            )]),
            depths: BTreeMap::from([(epoch, 0)]),
            ops,
            heads: BTreeSet::from([env.id()]),
            current: Arc::new(current),
            resolved_at: Arc::default(),
        })
    }

    /// Checks a control operation (not the genesis) against its causal point:
    /// `Ok` means it is valid now and forever. The caller has verified the
    /// signature and that the envelope is its writer's next.
    pub fn check(&self, env: &Envelope) -> Result<(), InvalidOp> {
        let h = env.header();
        if h.kind != Kind::Control
            || h.doc != self.space.control_doc()
            || h.epoch != EpochId([0; 16])
            || !h.control_heads.is_empty()
            || h.parents.is_empty()
        {
            return Err(InvalidOp::Position);
        }
        let op = env.control_op().map_err(|_| InvalidOp::Decode)?;
        let at = self.resolved(&h.parents).ok_or(InvalidOp::UnknownParents)?;
        let author = at.standing(&h.author);
        // Caps, counted over the causal past so every node decides alike. Owners
        // and admins may always remove (a member filling the log can be removed);
        // other members may make only so many operations.
        let manager = matches!(&author, Some(Standing::Member(m)) if m.role >= Role::Admin);
        if at.past_len >= MAX_CONTROL_OPS && !(manager && matches!(op, ControlOp::Remove(_))) {
            return Err(InvalidOp::TooManyOps);
        }
        if !manager && at.authored.get(&h.author).copied().unwrap_or(0) >= MAX_OPS_PER_MEMBER {
            return Err(InvalidOp::TooManyOps);
        }
        if !resolve::permits(author, &h.author, &op, |d| at.members.get(d).cloned()) {
            return Err(InvalidOp::NotAllowed);
        }
        let member_devices = || at.members.keys().copied().collect::<BTreeSet<_>>();
        match &op {
            ControlOp::Genesis(_) => return Err(InvalidOp::SecondGenesis),
            ControlOp::Add(add) => {
                let device = add.member.cert.device;
                if at.standing(&device).is_some() {
                    return Err(InvalidOp::AlreadyMember);
                }
                if !add.member.cert.verify() {
                    return Err(InvalidOp::Cert);
                }
                let newcomer = joins(self.history, &at.members, &add.member.cert.user);
                match &add.key {
                    AddKey::Current { epoch, wrap, grants } if !newcomer => {
                        if at.epoch.is_merged() || *epoch != at.epoch.id || wrap.recipient != device {
                            return Err(InvalidOp::Wrap);
                        }
                        if !grants.is_empty() && self.history == History::Shared {
                            return Err(InvalidOp::JoinForm);
                        }
                        let sorted = grants.windows(2).all(|w| w[0].epoch < w[1].epoch);
                        let known = grants.iter().all(|g| {
                            g.wrap.recipient == device && g.epoch != *epoch && at.epochs_seen.contains(&g.epoch)
                        });
                        if !sorted || !known {
                            return Err(InvalidOp::Wrap);
                        }
                    }
                    AddKey::Join { rotate, name } if newcomer => {
                        if name.sealed.len() > MAX_NAME_BYTES + 16 {
                            return Err(InvalidOp::Name);
                        }
                        if !rotate.links.is_empty() {
                            return Err(InvalidOp::Rotation);
                        }
                        let mut recipients = member_devices();
                        recipients.insert(device);
                        self.check_rotation(&at, rotate, recipients)?;
                    }
                    _ => return Err(InvalidOp::JoinForm),
                }
            }
            ControlOp::AddReplicator(device) => {
                if at.standing(device).is_some() {
                    return Err(InvalidOp::AlreadyMember);
                }
            }
            ControlOp::Remove(remove) => {
                let gone: BTreeSet<DeviceId> = remove.devices.iter().copied().collect();
                if gone.len() != remove.devices.len() {
                    return Err(InvalidOp::Duplicate);
                }
                if gone.is_empty() || gone.iter().any(|d| at.standing(d).is_none()) {
                    return Err(InvalidOp::NotMember);
                }
                if !at
                    .members
                    .values()
                    .any(|m| m.role == Role::Owner && !gone.contains(&m.cert.device))
                {
                    return Err(InvalidOp::LastOwner);
                }
                let stay: BTreeSet<DeviceId> = member_devices().difference(&gone).copied().collect();
                match &remove.rotate {
                    None if gone.iter().any(|d| at.members.contains_key(d)) => return Err(InvalidOp::Wraps),
                    None => {}
                    Some(rotate) => self.check_rotation(&at, rotate, stay)?,
                }
            }
            ControlOp::SetRole(set) => {
                let held = at.members.get(&set.device).ok_or(InvalidOp::NotMember)?.role;
                if held == set.role {
                    return Err(InvalidOp::SameRole);
                }
                let owners_left = at
                    .members
                    .values()
                    .filter(|m| m.role == Role::Owner && m.cert.device != set.device)
                    .count();
                if owners_left == 0 && set.role != Role::Owner {
                    return Err(InvalidOp::LastOwner);
                }
            }
            ControlOp::Rotate(rotate) => self.check_rotation(&at, rotate, member_devices())?,
            ControlOp::SetPosting(posting) => {
                if *posting == at.posting {
                    return Err(InvalidOp::SameRole);
                }
            }
            ControlOp::Succession(s) => {
                let leaving: BTreeSet<DeviceId> = s.leaving.iter().copied().collect();
                let successors: BTreeSet<DeviceId> = s.successors.iter().map(|m| m.cert.device).collect();
                if leaving.len() != s.leaving.len()
                    || successors.len() != s.successors.len()
                    || s.successors.is_empty()
                    || !leaving.is_disjoint(&successors)
                    || s.leaving.len() > MAX_MEMBERS
                    || s.successors.len() > MAX_MEMBERS
                {
                    return Err(InvalidOp::Duplicate);
                }
                if s.member.len() > MAX_NAME_BYTES {
                    return Err(InvalidOp::Name);
                }
                if s.successors.iter().any(|m| m.role != Role::Owner || !m.cert.verify()) {
                    return Err(InvalidOp::Cert);
                }
                if successors.iter().any(|d| at.replicators.contains(d)) {
                    return Err(InvalidOp::AlreadyMember);
                }
                let newcomer = s
                    .successors
                    .iter()
                    .any(|m| joins(self.history, &at.members, &m.cert.user));
                if s.join != newcomer || (s.join && !s.rotate.links.is_empty()) {
                    return Err(InvalidOp::JoinForm);
                }
                let after: BTreeSet<DeviceId> = member_devices()
                    .difference(&leaving)
                    .copied()
                    .chain(successors)
                    .collect();
                self.check_rotation(&at, &s.rotate, after)?;
            }
        }
        Ok(())
    }

    /// A rotation wraps for exactly `recipients`, starts an epoch not seen in
    /// its causal past, and links only tips there (sorted, each once): its author
    /// links those it can open, so one undecryptable epoch cannot stop everyone
    /// from ever rotating again.
    fn check_rotation(&self, at: &Resolved, rotate: &Rotate, recipients: BTreeSet<DeviceId>) -> Result<(), InvalidOp> {
        wraps_match(rotate.wraps.wraps(), recipients)?;
        let id = EpochKey::id_of(&self.space, &rotate.commit);
        let sorted = rotate.links.windows(2).all(|w| w[0].parent < w[1].parent);
        let all_tips = rotate.links.iter().all(|l| at.tips.contains(&l.parent));
        if at.epochs_seen.contains(&id) || !sorted || !all_tips {
            return Err(InvalidOp::Rotation);
        }
        Ok(())
    }

    /// Applies a control operation that passed [`SpaceState::check`]. One whose
    /// parents are not all known is ignored (the caller applies in causal order).
    pub fn apply(&mut self, env: &Envelope) {
        let Ok(op) = env.control_op() else {
            return;
        };
        let h = env.header();
        if matches!(op, ControlOp::Genesis(_)) || self.ops.contains_key(&env.id()) || !self.knows(&h.parents) {
            return;
        }
        let depth = 1 + h
            .parents
            .iter()
            .filter_map(|p| self.ops.get(p))
            .map(|a| a.depth)
            .max()
            .unwrap_or(0);
        let demotes = match &op {
            ControlOp::SetRole(set) => self
                .resolved(&h.parents)
                .and_then(|at| at.members.get(&set.device).map(|m| set.role < m.role))
                .unwrap_or(false),
            _ => false,
        };
        if let Some((commit, _, _)) = op.rotation() {
            let id = EpochKey::id_of(&self.space, commit);
            self.commits.insert(id, *commit);
            let d = self.depths.entry(id).or_insert(depth);
            *d = (*d).min(depth);
        }
        // Made at the current heads: nothing is concurrent with it.
        let linear =
            h.parents.iter().all(|p| self.heads.contains(p)) && self.heads.iter().all(|p| h.parents.contains(p));
        let extended = linear.then(|| self.current.extended(&self.space, &h.author, &op));
        for p in &h.parents {
            self.heads.remove(p);
        }
        self.heads.insert(env.id());
        self.ops.insert(
            env.id(),
            Applied {
                parents: h.parents.clone(),
                author: h.author,
                op,
                depth,
                demotes,
            },
        );
        match extended {
            Some(next) => {
                debug_assert_eq!(
                    Some(&next),
                    resolve::resolve(&self.space, &self.ops, &self.heads()).as_ref(),
                    "extending the state equals resolving it again"
                );
                self.set_current(next);
            }
            None => self.refresh(),
        }
    }

    /// Recomputes the state at the current heads.
    fn refresh(&mut self) {
        let heads = self.heads();
        let resolved = resolve::resolve(&self.space, &self.ops, &heads).expect("the heads are known operations");
        self.set_current(resolved);
    }

    fn set_current(&mut self, resolved: Resolved) {
        self.members = resolved.members.clone();
        self.replicators = resolved.replicators.clone();
        self.epoch = resolved.epoch.id;
        self.current = Arc::new(resolved);
    }

    /// The state at the causal point `heads`; `None` when a head is unknown.
    pub fn resolved(&self, heads: &[EnvelopeId]) -> Option<Arc<Resolved>> {
        const CACHED: usize = 64;
        let mut key = heads.to_vec();
        key.sort();
        key.dedup();
        if key.len() == self.heads.len() && key.iter().all(|h| self.heads.contains(h)) {
            return Some(self.current.clone());
        }
        if !self.knows(&key) {
            return None;
        }
        let mut cache = self
            .resolved_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(hit) = cache.get(&key) {
            return Some(hit.clone());
        }
        let resolved = Arc::new(resolve::resolve(&self.space, &self.ops, &key)?);
        if cache.len() >= CACHED {
            cache.clear();
        }
        cache.insert(key, resolved.clone());
        Some(resolved)
    }

    /// The state at the current heads.
    pub fn current(&self) -> &Resolved {
        &self.current
    }

    /// Whether every id is a known operation.
    pub fn knows(&self, heads: &[EnvelopeId]) -> bool {
        heads.iter().all(|h| self.ops.contains_key(h))
    }

    /// The members at the causal point `heads`.
    pub fn members_at(&self, heads: &[EnvelopeId]) -> Option<BTreeMap<DeviceId, Member>> {
        self.resolved(heads).map(|r| r.members.clone())
    }

    /// Whether `device` may write content at the causal point `heads`.
    pub fn may_write_at(&self, heads: &[EnvelopeId], device: &DeviceId) -> bool {
        self.resolved(heads).is_some_and(|r| r.may_post(device))
    }

    /// `device` as the document rules judge its content at the causal point
    /// `heads`: its user and whether it may edit. `None` when it may write no
    /// content there at all (not a member; a reader, except where readers
    /// write, see [`SpaceKind::readers_write`]).
    pub fn author_at(&self, heads: &[EnvelopeId], device: &DeviceId) -> Option<outpost_crdt::Author> {
        let resolved = self.resolved(heads)?;
        let member = resolved.members.get(device)?;
        let editor = resolved.may_post(device);
        (editor || self.kind.readers_write()).then(|| outpost_crdt::Author {
            user: member.cert.user.to_string(),
            editor,
            admin: member.role >= Role::Admin,
        })
    }

    /// The epoch at the causal point `heads`.
    pub fn epoch_at(&self, heads: &[EnvelopeId]) -> Option<Epoch> {
        self.resolved(heads).map(|r| r.epoch.clone())
    }

    /// Whether adding a device of `user` now is a join (a from-join space, a user
    /// with no member device): it must start an epoch linked to nothing.
    pub fn is_join(&self, user: &UserId) -> bool {
        joins(self.history, &self.members, user)
    }

    /// Whether content sealed under `epoch` may be written into `doc`: in a
    /// chat room any shard of its run (messages roll over into the next shard
    /// as one fills), otherwise its [`SpaceState::content_doc`]. Judged in
    /// clear, alike on every node.
    pub fn is_content_doc(&self, doc: &DocId, epoch: &EpochId) -> bool {
        match self.kind {
            SpaceKind::Chat => self.shard_place(doc, epoch).is_some(),
            _ => *doc == self.content_doc(epoch),
        }
    }

    /// Where content sealed under `epoch` is written first: the space's first
    /// document (a room's settings; its messages from shard 0 on), or in a
    /// from-join space the first shard of the epoch's own run (so nothing
    /// written after a join depends on anything before it).
    pub fn content_doc(&self, epoch: &EpochId) -> DocId {
        self.shard(epoch, 0)
    }

    /// Shard `k` of the run content sealed under `epoch` is written into:
    /// the room's run, or in a from-join room the epoch's own.
    pub fn shard(&self, epoch: &EpochId, k: u32) -> DocId {
        match self.history {
            History::Shared => self.space.chat_shard(k),
            History::FromJoin => self.space.epoch_shard(epoch, k),
        }
    }

    /// Where `doc`, holding content sealed under `epoch`, stands among the
    /// room's shards: the first document of its run ([`SpaceState::content_doc`]:
    /// the room's, or in a from-join room its epoch's) and its index in the
    /// run. None when `doc` is no shard such content may be in.
    pub fn shard_place(&self, doc: &DocId, epoch: &EpochId) -> Option<(DocId, u32)> {
        let k = match self.history {
            History::Shared => self.space.shard_of(doc),
            History::FromJoin => self.space.epoch_shard_of(epoch, doc),
        }?;
        Some((self.content_doc(epoch), k))
    }

    /// A display rank for content sealed under `epoch`: the depth of the
    /// deepest operation starting one of its parts, then the epoch id. Content
    /// causally after other content is sealed under an epoch of equal or higher
    /// rank (its control heads include the other's), so ordering documents by
    /// rank keeps causal order across them.
    pub fn epoch_rank(&self, epoch: &Epoch) -> (u32, EpochId) {
        let depth = epoch
            .parts
            .iter()
            .filter_map(|p| self.depths.get(p))
            .max()
            .copied()
            .unwrap_or(0);
        (depth, epoch.id)
    }

    /// Who added each member after the genesis (for `space members`): the author
    /// of the newest add of that device.
    pub fn added_by(&self, device: &DeviceId) -> Option<DeviceId> {
        self.ops
            .values()
            .filter(|op| match &op.op {
                ControlOp::Add(add) => add.member.cert.device == *device,
                ControlOp::AddReplicator(named) => named == device,
                _ => false,
            })
            .max_by_key(|op| op.depth)
            .map(|op| op.author)
    }

    /// Whether any operation in the log removes `device` (effective or not).
    pub fn ever_removed(&self, device: &DeviceId) -> bool {
        self.ops
            .values()
            .any(|op| matches!(&op.op, ControlOp::Remove(r) if r.devices.contains(device)))
    }

    /// Whether `device` may receive this space's envelopes (member or replicator).
    pub fn entitled(&self, device: &DeviceId) -> bool {
        self.members.contains_key(device) || self.replicators.contains(device)
    }

    /// Whether `device` may write content.
    pub fn may_write(&self, device: &DeviceId) -> bool {
        self.current.may_post(device)
    }

    /// Whether `device` may write at all (a writer, in any room).
    pub fn is_writer(&self, device: &DeviceId) -> bool {
        self.members.get(device).is_some_and(|m| m.role >= Role::Writer)
    }

    /// The current control heads, sorted.
    pub fn heads(&self) -> Vec<EnvelopeId> {
        self.heads.iter().copied().collect()
    }

    /// How many operations the log holds, the genesis included.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Always false: a state has its genesis.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The current epoch key for this device, if it can derive it (tests, tools).
    pub fn unwrap_key(&self, keys: &DeviceKeys) -> Option<Result<EpochKey, crate::crypto::Error>> {
        let mut ring = Keyring::default();
        let problems = ring.unlock(self, keys);
        match ring.key_for(&self.current.epoch) {
            Some(key) => Some(Ok(key)),
            None => problems.into_iter().next().map(|(_, e)| Err(e)),
        }
    }

    /// The decrypted space name: sealed under the first epoch, and again under
    /// every from-join epoch a newcomer starts (the earliest one held opens it).
    /// A department room's department path, if this is one and `ring` opens
    /// the first epoch.
    pub fn department(&self, ring: &Keyring) -> Option<String> {
        self.ops.values().find_map(|applied| match &applied.op {
            ControlOp::Genesis(g) => {
                let sealed = g.department.as_ref()?;
                let epoch = EpochKey::id_of(&self.space, &g.epoch_commit);
                let raw = ring
                    .get(&epoch)?
                    .open(&sealed.nonce, &department_aad(&self.space), &sealed.sealed)
                    .ok()?;
                String::from_utf8(raw).ok()
            }
            _ => None,
        })
    }

    pub fn name(&self, ring: &Keyring) -> Option<String> {
        let mut sealed: Vec<(u32, EpochId, &[u8; 24], &[u8])> = self
            .ops
            .values()
            .filter_map(|applied| match &applied.op {
                ControlOp::Genesis(g) => Some((
                    0,
                    EpochKey::id_of(&self.space, &g.epoch_commit),
                    &g.name_nonce,
                    g.name_sealed.as_slice(),
                )),
                ControlOp::Add(Add {
                    key: AddKey::Join { rotate, name },
                    ..
                }) => Some((
                    applied.depth,
                    EpochKey::id_of(&self.space, &rotate.commit),
                    &name.nonce,
                    name.sealed.as_slice(),
                )),
                _ => None,
            })
            .collect();
        sealed.sort_by_key(|(depth, ..)| *depth);
        sealed.iter().find_map(|(_, epoch, nonce, ciphertext)| {
            let raw = ring.get(epoch)?.open(nonce, &name_aad(&self.space), ciphertext).ok()?;
            String::from_utf8(raw).ok()
        })
    }
}

/// Whether adding a device of `user` to `members` is a join (see [`History`]).
pub(super) fn joins(history: History, members: &BTreeMap<DeviceId, Member>, user: &UserId) -> bool {
    history == History::FromJoin && !members.values().any(|m| m.cert.user == *user)
}

/// Checks that `wraps` hold exactly one wrap per device of `devices`.
fn wraps_match(wraps: &[Wrap], devices: BTreeSet<DeviceId>) -> Result<(), InvalidOp> {
    let wrapped: BTreeSet<DeviceId> = wraps.iter().map(|w| w.recipient).collect();
    if wrapped.len() != wraps.len() || wrapped != devices {
        return Err(InvalidOp::Wraps);
    }
    Ok(())
}
