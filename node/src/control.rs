//! Control log: signed plaintext operations that define a space's members, roles and
//! key epochs.
//!
//! The log is a DAG: `Genesis` is its root; every later operation names, as its
//! envelope's `parents`, the control heads its author had seen (its *causal
//! point*). An operation is valid only if its author's role at its causal point
//! allows it, so validity is a pure function of the operation and its causal past:
//! identical on every node, and once valid, always valid.
//!
//! Operations so far:
//! - `Genesis` creates the space, names its members (with roles) and replicate-only
//!   nodes, and grants the first epoch key by wrapping it for every member device;
//! - `Add` adds a member device with a role, wrapping the current epoch key for it.
//!   Owners and admins may add; only an owner may add an owner.
//! - `AddReplicator` names a replicate-only node. Owners and admins may.
//!
//! The membership at heads H is the genesis plus every `Add` and `AddReplicator`
//! in the causal past of H. Ambiguity from concurrent operations resolves toward
//! less authority: concurrent adds of one device keep the lower role, and a device
//! both added and named a replicator concurrently is a replicator. Later operations (remove, rotate, …)
//! append variants to [`ControlOp`]; they never reorder.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};

use crate::{
    crypto::{EpochKey, Wrap},
    envelope::{Envelope, Header, Kind},
    identity::{DeviceCert, DeviceKeys},
    ids::{DeviceId, EnvelopeId, EpochId, SpaceId, derive16},
};

/// Validation rules this build implements; a space names the version it follows.
pub const RULES_VERSION: u16 = 1;
/// Most member devices a space may name in one operation: bounds wrap sets
/// (≈ 110 bytes per device) so a genesis stays far below the envelope cap.
pub const MAX_MEMBERS: usize = 2048;
/// Most replicate-only nodes a space may name.
pub const MAX_REPLICATORS: usize = 64;
/// Longest space name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
const SPACE_ID_CONTEXT: &str = "outpost/space-id/v1";
const NAME_AAD: &[u8] = b"outpost/v1/space-name\0";

/// A control-log operation (postcard: append variants, never reorder).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlOp {
    Genesis(Genesis),
    Add(Add),
    /// Names a replicate-only node: it stores and forwards the space, never reads it.
    AddReplicator(DeviceId),
}

/// Adds a member device to a space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Add {
    pub member: Member,
    /// The epoch whose key `wrap` carries: the epoch at the operation's causal point.
    pub epoch: EpochId,
    /// That epoch's key, wrapped for the new device.
    pub wrap: Wrap,
}

/// Most control operations a space may hold after its genesis (each is a few
/// hundred bytes and is folded in memory).
pub const MAX_CONTROL_OPS: usize = 16_384;

/// What kind of space this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpaceKind {
    Chat,
}

/// A member's role. Ordered by authority. (JSON spells it in lower case; postcard
/// encodes the variant index.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Reader,
    Writer,
    Admin,
    Owner,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub cert: DeviceCert,
    pub role: Role,
}

/// The first operation of every space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    pub rules_version: u16,
    /// Random; with the creator's key it determines the space id.
    pub nonce: [u8; 16],
    pub kind: SpaceKind,
    /// The space name, sealed under the first epoch (relays never see it).
    pub name_nonce: [u8; 24],
    pub name_sealed: Vec<u8>,
    pub members: Vec<Member>,
    pub replicators: Vec<DeviceId>,
    /// Commitment to the first epoch key.
    pub epoch_commit: [u8; 32],
    pub wraps: WrapSet,
}

/// How an epoch key reaches member devices. An enum so a tree scheme can come later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WrapSet {
    Direct(Vec<Wrap>),
}

/// Why a control operation is invalid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidOp {
    #[error("control operation does not decode")]
    Decode,
    #[error("space id is not derived from the creator and nonce")]
    SpaceId,
    #[error("genesis must be seq 1 of the control document, with no parents, control heads or epoch")]
    Position,
    #[error("rules version {0} is not known to this build")]
    RulesVersion(u16),
    #[error("the creator must be an owner of the space")]
    Creator,
    #[error("a member's device certificate does not verify")]
    Cert,
    #[error("{0} members or replicators exceed the cap")]
    TooMany(usize),
    #[error("the wrap set does not match the member devices")]
    Wraps,
    #[error("a device is listed twice")]
    Duplicate,
    #[error("space name exceeds {MAX_NAME_BYTES} bytes")]
    Name,
    #[error("a space has exactly one genesis")]
    SecondGenesis,
    #[error("the operation's causal point names control operations this node does not hold")]
    UnknownParents,
    #[error("the author's role at the operation's causal point does not allow it")]
    NotAllowed,
    #[error("the device is already a member or replicator at the operation's causal point")]
    AlreadyMember,
    #[error("the key wrap is for another epoch or device than the operation names")]
    Wrap,
    #[error("the space holds {MAX_CONTROL_OPS} control operations, its cap")]
    TooManyOps,
}

impl InvalidOp {
    /// A fixed description, for logs and counters.
    pub fn reason(&self) -> &'static str {
        match self {
            InvalidOp::Decode => "control: does not decode",
            InvalidOp::SpaceId => "control: space id not derived from its creator",
            InvalidOp::Position => "control: malformed header for a control operation",
            InvalidOp::RulesVersion(_) => "control: unknown rules version",
            InvalidOp::Creator => "control: the creator is not an owner",
            InvalidOp::Cert => "control: a device certificate does not verify",
            InvalidOp::TooMany(_) => "control: too many members or replicators",
            InvalidOp::Wraps => "control: wrap set does not match the members",
            InvalidOp::Duplicate => "control: a device listed twice",
            InvalidOp::Name => "control: space name too long",
            InvalidOp::SecondGenesis => "control: a second genesis",
            InvalidOp::UnknownParents => "control: unknown causal point",
            InvalidOp::NotAllowed => "control: the author's role does not allow it",
            InvalidOp::AlreadyMember => "control: the device is already in the space",
            InvalidOp::Wrap => "control: key wrap for another epoch or device",
            InvalidOp::TooManyOps => "control: too many operations",
        }
    }
}

/// Derives the id of a space created by `creator` with `nonce`.
pub fn space_id(creator: &DeviceId, nonce: &[u8; 16]) -> SpaceId {
    let mut input = creator.0.to_vec();
    input.extend_from_slice(nonce);
    SpaceId(derive16(SPACE_ID_CONTEXT, &input))
}

/// Creates a new space: its genesis envelope and first epoch key.
pub fn create_space(
    keys: &DeviceKeys,
    incarnation: u64,
    name: &str,
    kind: SpaceKind,
    others: &[DeviceCert],
    replicators: &[DeviceId],
) -> Result<(Envelope, EpochKey), InvalidOp> {
    if name.len() > MAX_NAME_BYTES {
        return Err(InvalidOp::Name);
    }
    let nonce: [u8; 16] = rand::random();
    let space = space_id(&keys.device_id(), &nonce);
    let epoch = EpochKey::generate(space);
    let mut members = vec![Member {
        cert: keys.cert(),
        role: Role::Owner,
    }];
    for cert in others {
        if cert.device != keys.device_id() {
            members.push(Member {
                cert: *cert,
                role: Role::Writer,
            });
        }
    }
    let wraps = members.iter().map(|m| epoch.wrap_for(&m.cert)).collect();
    let (name_nonce, name_sealed) = epoch.seal(&name_aad(&space), name.as_bytes());
    let genesis = Genesis {
        rules_version: RULES_VERSION,
        nonce,
        kind,
        name_nonce,
        name_sealed,
        members,
        replicators: replicators.to_vec(),
        epoch_commit: epoch.commitment(),
        wraps: WrapSet::Direct(wraps),
    };
    let header = Header {
        kind: Kind::Control,
        space,
        doc: space.control_doc(),
        epoch: EpochId([0; 16]),
        author: keys.device_id(),
        incarnation,
        seq: 1,
        parents: Vec::new(),
        control_heads: Vec::new(),
    };
    let env = Envelope::sign_control(keys, header, &ControlOp::Genesis(genesis));
    // Our own genesis must pass the checks every peer applies.
    SpaceState::from_genesis(&env)?;
    Ok((env, epoch))
}

/// Signs an `AddReplicator` of `device`, made at the current heads of `state`, and
/// checks it as every peer will (see [`add_member`] for `writer`).
pub fn add_replicator(
    keys: &DeviceKeys,
    state: &SpaceState,
    writer: (u64, u64, Option<EnvelopeId>),
    device: DeviceId,
) -> Result<Envelope, InvalidOp> {
    let env = Envelope::sign_control(
        keys,
        control_header(keys, state, writer),
        &ControlOp::AddReplicator(device),
    );
    state.check(&env)?;
    Ok(env)
}

/// The header of a control operation by `keys` at the current heads of `state`.
fn control_header(keys: &DeviceKeys, state: &SpaceState, writer: (u64, u64, Option<EnvelopeId>)) -> Header {
    let (incarnation, seq, previous) = writer;
    let mut parents = state.heads();
    if let Some(previous) = previous
        && !parents.contains(&previous)
    {
        parents.push(previous);
    }
    Header {
        kind: Kind::Control,
        space: state.space,
        doc: state.space.control_doc(),
        epoch: EpochId([0; 16]),
        author: keys.device_id(),
        incarnation,
        seq,
        parents,
        control_heads: Vec::new(),
    }
}

/// Signs an `Add` of `cert` with `role`, made at the current heads of `state`, and
/// checks it as every peer will. `parents` are the heads plus, when the writer has
/// written before, its previous operation (a writer's envelopes form a chain).
pub fn add_member(
    keys: &DeviceKeys,
    state: &SpaceState,
    epoch: &EpochKey,
    writer: (u64, u64, Option<EnvelopeId>),
    cert: &DeviceCert,
    role: Role,
) -> Result<Envelope, InvalidOp> {
    let header = control_header(keys, state, writer);
    let add = Add {
        member: Member { cert: *cert, role },
        epoch: epoch.id,
        wrap: epoch.wrap_for(cert),
    };
    let env = Envelope::sign_control(keys, header, &ControlOp::Add(add));
    state.check(&env)?;
    Ok(env)
}

fn name_aad(space: &SpaceId) -> Vec<u8> {
    let mut aad = NAME_AAD.to_vec();
    aad.extend_from_slice(&space.0);
    aad
}

/// The membership of a space as its control log defines it.
#[derive(Debug, Clone)]
pub struct SpaceState {
    pub space: SpaceId,
    pub kind: SpaceKind,
    pub genesis: EnvelopeId,
    pub epoch: EpochId,
    /// The members at the current heads (the whole log).
    pub members: BTreeMap<DeviceId, Member>,
    pub replicators: BTreeSet<DeviceId>,
    genesis_op: Genesis,
    /// Every operation after the genesis, by envelope id.
    ops: BTreeMap<EnvelopeId, Applied>,
    /// The control log's heads: operations no other names as a parent.
    heads: BTreeSet<EnvelopeId>,
    /// Roles at causal points other than the current heads (see `may_write_at`).
    /// Valid forever: an operation's causal past never changes.
    roles_at: Arc<Mutex<RolesAt>>,
}

/// Roles by causal point (sorted heads).
type RolesAt = HashMap<Vec<EnvelopeId>, BTreeMap<DeviceId, Role>>;

/// A valid operation after the genesis, with its place in the DAG.
#[derive(Debug, Clone)]
struct Applied {
    parents: Vec<EnvelopeId>,
    author: DeviceId,
    op: ControlOp,
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
        if g.name_sealed.len() > MAX_NAME_BYTES + 16 {
            return Err(InvalidOp::Name);
        }
        if g.rules_version != RULES_VERSION {
            return Err(InvalidOp::RulesVersion(g.rules_version));
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
        if members.get(&h.author).map(|m| m.role) != Some(Role::Owner) {
            return Err(InvalidOp::Creator);
        }
        let replicators: BTreeSet<DeviceId> = g.replicators.iter().copied().collect();
        if replicators.len() != g.replicators.len() || replicators.iter().any(|r| members.contains_key(r)) {
            return Err(InvalidOp::Duplicate);
        }
        let WrapSet::Direct(wraps) = &g.wraps;
        let wrapped: BTreeSet<DeviceId> = wraps.iter().map(|w| w.recipient).collect();
        if wrapped.len() != wraps.len() || wrapped != members.keys().copied().collect() {
            return Err(InvalidOp::Wraps);
        }
        Ok(Self {
            space: h.space,
            kind: g.kind,
            genesis: env.id(),
            epoch: EpochKey::id_of(&h.space, &g.epoch_commit),
            members,
            replicators,
            genesis_op: g,
            ops: BTreeMap::new(),
            heads: BTreeSet::from([env.id()]),
            roles_at: Arc::default(),
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
        if self.ops.len() >= MAX_CONTROL_OPS {
            return Err(InvalidOp::TooManyOps);
        }
        let (members, replicators) = self.membership_at(&h.parents).ok_or(InvalidOp::UnknownParents)?;
        let author = members.get(&h.author).map(|m| m.role);
        let (device, granted) = match &op {
            ControlOp::Genesis(_) => return Err(InvalidOp::SecondGenesis),
            ControlOp::Add(add) => (add.member.cert.device, add.member.role),
            // Naming a replicator grants no role; an admin's authority suffices.
            ControlOp::AddReplicator(device) => (*device, Role::Reader),
        };
        let allowed = match (author, granted) {
            (Some(Role::Owner), _) => true,
            (Some(Role::Admin), role) => role <= Role::Admin,
            _ => false,
        };
        if !allowed {
            return Err(InvalidOp::NotAllowed);
        }
        if members.contains_key(&device) || replicators.contains(&device) {
            return Err(InvalidOp::AlreadyMember);
        }
        if let ControlOp::Add(add) = &op {
            if !add.member.cert.verify() {
                return Err(InvalidOp::Cert);
            }
            if add.epoch != self.epoch || add.wrap.recipient != device {
                return Err(InvalidOp::Wrap);
            }
        }
        Ok(())
    }

    /// Applies a control operation that passed [`SpaceState::check`].
    pub fn apply(&mut self, env: &Envelope) {
        let Ok(op) = env.control_op() else {
            return;
        };
        if matches!(op, ControlOp::Genesis(_)) {
            return;
        }
        let h = env.header();
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
            },
        );
        (self.members, self.replicators) = self
            .membership_at(&self.heads.iter().copied().collect::<Vec<_>>())
            .expect("the heads are known operations");
    }

    /// Whether every id is the genesis or a known operation.
    pub fn knows(&self, heads: &[EnvelopeId]) -> bool {
        heads.iter().all(|h| *h == self.genesis || self.ops.contains_key(h))
    }

    /// The members at the causal point `heads` (see [`SpaceState::membership_at`]).
    pub fn members_at(&self, heads: &[EnvelopeId]) -> Option<BTreeMap<DeviceId, Member>> {
        self.membership_at(heads).map(|(members, _)| members)
    }

    /// Members and replicators at the causal point `heads`: the genesis's plus every
    /// `Add` and `AddReplicator` in the causal past. Concurrent adds of one device
    /// keep the lower role; a device both added and named a replicator is a
    /// replicator. `None` when a head is unknown.
    pub fn membership_at(&self, heads: &[EnvelopeId]) -> Option<(BTreeMap<DeviceId, Member>, BTreeSet<DeviceId>)> {
        let mut members: BTreeMap<DeviceId, Member> = self
            .genesis_op
            .members
            .iter()
            .map(|m| (m.cert.device, m.clone()))
            .collect();
        let mut replicators: BTreeSet<DeviceId> = self.genesis_op.replicators.iter().copied().collect();
        let mut seen = BTreeSet::new();
        let mut stack: Vec<EnvelopeId> = heads.to_vec();
        while let Some(id) = stack.pop() {
            if id == self.genesis || !seen.insert(id) {
                continue;
            }
            let op = self.ops.get(&id)?;
            stack.extend(op.parents.iter().copied());
            match &op.op {
                ControlOp::Add(add) => {
                    let m = &add.member;
                    members
                        .entry(m.cert.device)
                        .and_modify(|held| held.role = held.role.min(m.role))
                        .or_insert_with(|| m.clone());
                }
                ControlOp::AddReplicator(device) => {
                    replicators.insert(*device);
                }
                ControlOp::Genesis(_) => {}
            }
        }
        members.retain(|device, _| !replicators.contains(device));
        Some((members, replicators))
    }

    /// Whether `device` may write content at the causal point `heads`. Content
    /// mostly names the current heads, whose membership is kept; other causal
    /// points are folded once and remembered (a bounded cache).
    pub fn may_write_at(&self, heads: &[EnvelopeId], device: &DeviceId) -> bool {
        const CACHED: usize = 64;
        if heads.len() == self.heads.len() && heads.iter().all(|h| self.heads.contains(h)) {
            return self.may_write(device);
        }
        let mut key = heads.to_vec();
        key.sort();
        let mut cache = self.roles_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !cache.contains_key(&key) {
            let Some(members) = self.members_at(heads) else {
                return false;
            };
            if cache.len() >= CACHED {
                cache.clear();
            }
            let roles = members.into_iter().map(|(d, m)| (d, m.role)).collect();
            cache.insert(key.clone(), roles);
        }
        cache[&key].get(device).is_some_and(|role| *role >= Role::Writer)
    }

    /// Who added each member after the genesis (for `space members`).
    pub fn added_by(&self, device: &DeviceId) -> Option<DeviceId> {
        self.ops
            .values()
            .find(|op| match &op.op {
                ControlOp::Add(add) => add.member.cert.device == *device,
                ControlOp::AddReplicator(named) => named == device,
                ControlOp::Genesis(_) => false,
            })
            .map(|op| op.author)
    }

    /// Whether `device` may receive this space's envelopes (member or replicator).
    pub fn entitled(&self, device: &DeviceId) -> bool {
        self.members.contains_key(device) || self.replicators.contains(device)
    }

    /// Whether `device` may write content.
    pub fn may_write(&self, device: &DeviceId) -> bool {
        self.members.get(device).is_some_and(|m| m.role >= Role::Writer)
    }

    /// The current control heads, sorted.
    pub fn heads(&self) -> Vec<EnvelopeId> {
        self.heads.iter().copied().collect()
    }

    /// Unwraps the current epoch key, if this device is a member: from the
    /// genesis, or from the operation that added it.
    pub fn unwrap_key(&self, keys: &DeviceKeys) -> Option<Result<EpochKey, crate::crypto::Error>> {
        let me = keys.device_id();
        let WrapSet::Direct(wraps) = &self.genesis_op.wraps;
        let wrap = wraps.iter().find(|w| w.recipient == me).or_else(|| {
            self.ops
                .values()
                .filter_map(|op| match &op.op {
                    ControlOp::Add(add) => Some(&add.wrap),
                    _ => None,
                })
                .find(|w| w.recipient == me)
        })?;
        Some(EpochKey::unwrap(self.space, &self.genesis_op.epoch_commit, wrap, keys))
    }

    /// The decrypted space name.
    pub fn name(&self, key: &EpochKey) -> Option<String> {
        let g = &self.genesis_op;
        let raw = key.open(&g.name_nonce, &name_aad(&self.space), &g.name_sealed).ok()?;
        String::from_utf8(raw).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genesis_round_trip_and_key_access() {
        let alice = DeviceKeys::generate();
        let bob = DeviceKeys::generate();
        let relay = DeviceKeys::generate();
        let (env, key) = create_space(&alice, 1, "ops", SpaceKind::Chat, &[bob.cert()], &[relay.device_id()]).unwrap();
        let env = Envelope::decode(env.into_bytes()).unwrap();
        let state = SpaceState::from_genesis(&env).unwrap();
        assert_eq!(state.epoch, key.id);
        assert!(state.may_write(&bob.device_id()));
        assert!(state.entitled(&relay.device_id()) && !state.may_write(&relay.device_id()));
        let bob_key = state.unwrap_key(&bob).unwrap().unwrap();
        assert_eq!(state.name(&bob_key).as_deref(), Some("ops"));
        assert!(state.unwrap_key(&relay).is_none());
    }

    #[test]
    fn a_device_is_member_or_replicator_not_both() {
        let alice = DeviceKeys::generate();
        let bob = DeviceKeys::generate();
        let err = create_space(&alice, 1, "ops", SpaceKind::Chat, &[bob.cert()], &[bob.device_id()]).unwrap_err();
        assert_eq!(err, InvalidOp::Duplicate);
    }

    fn writer(seq: u64) -> (u64, u64, Option<EnvelopeId>) {
        (7, seq, None)
    }

    #[test]
    fn owners_and_admins_add_members_and_the_membership_follows_the_dag() {
        let alice = DeviceKeys::generate();
        let bob = DeviceKeys::generate();
        let carol = DeviceKeys::generate();
        let dave = DeviceKeys::generate();
        let (genesis, key) = create_space(&alice, 1, "ops", SpaceKind::Chat, &[bob.cert()], &[]).unwrap();
        let mut state = SpaceState::from_genesis(&genesis).unwrap();
        // Bob is a writer: he may not add anyone.
        let err = add_member(&bob, &state, &key, writer(1), &carol.cert(), Role::Reader).unwrap_err();
        assert_eq!(err, InvalidOp::NotAllowed);
        // Alice adds Carol as an admin; Carol's key comes from the operation.
        let add = add_member(&alice, &state, &key, writer(1), &carol.cert(), Role::Admin).unwrap();
        let before = state.heads();
        state.apply(&add);
        assert_eq!(state.heads(), vec![add.id()]);
        assert_eq!(state.members[&carol.device_id()].role, Role::Admin);
        assert_eq!(state.unwrap_key(&carol).unwrap().unwrap().id, key.id);
        assert_eq!(state.added_by(&carol.device_id()), Some(alice.device_id()));
        // At the causal point before the add, Carol was no member.
        assert!(!state.may_write_at(&before, &carol.device_id()));
        assert!(state.may_write_at(&state.heads(), &carol.device_id()));
        // Carol, an admin, may add Dave, but not as an owner, and not twice.
        let err = add_member(&carol, &state, &key, writer(1), &dave.cert(), Role::Owner).unwrap_err();
        assert_eq!(err, InvalidOp::NotAllowed);
        let err = add_member(&carol, &state, &key, writer(1), &bob.cert(), Role::Reader).unwrap_err();
        assert_eq!(err, InvalidOp::AlreadyMember);
        let add_dave = add_member(&carol, &state, &key, writer(1), &dave.cert(), Role::Writer).unwrap();
        assert_eq!(state.check(&add_dave), Ok(()));
        // The same operation checked against a state without Carol's add: unknown
        // causal point, so nodes wait for it instead of judging.
        let fresh = SpaceState::from_genesis(&genesis).unwrap();
        assert_eq!(fresh.check(&add_dave), Err(InvalidOp::UnknownParents));
    }

    #[test]
    fn concurrent_adds_of_one_device_keep_the_lower_role() {
        let alice = DeviceKeys::generate();
        let bob = DeviceKeys::generate();
        let carol = DeviceKeys::generate();
        let (genesis, key) = create_space(&alice, 1, "ops", SpaceKind::Chat, &[], &[]).unwrap();
        let mut state = SpaceState::from_genesis(&genesis).unwrap();
        let as_admin = add_member(&alice, &state, &key, writer(1), &carol.cert(), Role::Admin).unwrap();
        let add_bob = add_member(&alice, &state, &key, (8, 1, None), &bob.cert(), Role::Owner).unwrap();
        state.apply(&add_bob);
        // Concurrently (same causal point as the first), Bob adds Carol as a reader.
        let mut header = as_admin.header().clone();
        header.author = bob.device_id();
        let as_reader = Envelope::sign_control(
            &bob,
            Header {
                parents: vec![add_bob.id()],
                ..header
            },
            &ControlOp::Add(Add {
                member: Member {
                    cert: carol.cert(),
                    role: Role::Reader,
                },
                epoch: key.id,
                wrap: key.wrap_for(&carol.cert()),
            }),
        );
        assert_eq!(state.check(&as_admin), Ok(()));
        assert_eq!(state.check(&as_reader), Ok(()));
        let mut one = state.clone();
        one.apply(&as_admin);
        one.apply(&as_reader);
        let mut other = state.clone();
        other.apply(&as_reader);
        other.apply(&as_admin);
        assert_eq!(one.members[&carol.device_id()].role, Role::Reader);
        assert_eq!(one.members, other.members);
        assert_eq!(one.heads(), other.heads());
    }

    /// Delivers to `to` every operation of `from` it lacks, in an order its causal
    /// points allow (as a node does), checking each as it would.
    fn sync(from: &[Envelope], to: &mut SpaceState, to_ops: &mut Vec<Envelope>) {
        let mut missing: Vec<&Envelope> = from.iter().filter(|e| !to_ops.contains(e)).collect();
        while !missing.is_empty() {
            let before = missing.len();
            missing.retain(|env| {
                if !to.knows(&env.header().parents) {
                    return true;
                }
                assert_eq!(
                    to.check(env),
                    Ok(()),
                    "an operation valid where it was made is valid everywhere"
                );
                to.apply(env);
                to_ops.push((*env).clone());
                false
            });
            assert!(missing.len() < before, "causal delivery always makes progress");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, .. Default::default() })]

        /// Three partitioned replicas add members concurrently (whoever holds an
        /// owner or admin role there) and sync in random pairs; once everything is
        /// exchanged, all hold the same members, roles and heads.
        #[test]
        fn replicas_converge_on_the_same_membership(steps in proptest::collection::vec((0usize..3, 0usize..3, 0usize..6, 0usize..4, proptest::prelude::any::<bool>()), 1..40)) {
            let devices: Vec<DeviceKeys> = (0..7).map(|_| DeviceKeys::generate()).collect();
            let (genesis, key) = create_space(&devices[0], 1, "ops", SpaceKind::Chat, &[], &[]).unwrap();
            let base = SpaceState::from_genesis(&genesis).unwrap();
            let mut replicas: Vec<(SpaceState, Vec<Envelope>)> = (0..3).map(|_| (base.clone(), Vec::new())).collect();
            let roles = [Role::Reader, Role::Writer, Role::Admin, Role::Owner];
            let mut incarnation = 100;
            for (node, other, device, role, is_sync) in steps {
                if is_sync {
                    if node != other {
                        let from = replicas[other].1.clone();
                        let (state, ops) = &mut replicas[node];
                        sync(&from, state, ops);
                    }
                    continue;
                }
                // Some member with authority on this replica adds a device.
                let (state, ops) = &mut replicas[node];
                let target = &devices[device + 1];
                let author = devices.iter().find(|d| {
                    state.members.get(&d.device_id()).is_some_and(|m| m.role >= Role::Admin)
                });
                let Some(author) = author else { continue };
                incarnation += 1;
                match add_member(author, state, &key, (incarnation, 1, None), &target.cert(), roles[role]) {
                    Ok(env) => {
                        state.apply(&env);
                        ops.push(env);
                    }
                    Err(e) => proptest::prop_assert!(
                        matches!(e, InvalidOp::AlreadyMember | InvalidOp::NotAllowed),
                        "{e:?}"
                    ),
                }
            }
            for _ in 0..2 {
                for i in 0..3 {
                    for j in 0..3 {
                        if i != j {
                            let from = replicas[j].1.clone();
                            let (state, ops) = &mut replicas[i];
                            sync(&from, state, ops);
                        }
                    }
                }
            }
            for (state, _) in &replicas[1..] {
                proptest::prop_assert_eq!(&state.members, &replicas[0].0.members);
                proptest::prop_assert_eq!(state.heads(), replicas[0].0.heads());
            }
        }
    }

    #[test]
    fn forged_genesis_is_rejected() {
        let alice = DeviceKeys::generate();
        let mallory = DeviceKeys::generate();
        let (env, _) = create_space(&alice, 1, "ops", SpaceKind::Chat, &[], &[]).unwrap();
        // Mallory re-signs Alice's genesis for the same space id: the id is bound to
        // the creator's key, so it no longer derives.
        let mut header = env.header().clone();
        header.author = mallory.device_id();
        let forged = Envelope::sign_control(&mallory, header, &env.control_op().unwrap());
        assert_eq!(SpaceState::from_genesis(&forged).unwrap_err(), InvalidOp::SpaceId);
    }
}
