//! Control log: signed plaintext operations that define a space's members, roles and
//! key epochs.
//!
//! The log is a DAG: `Genesis` is its root; every later operation names, as its
//! envelope's `parents`, the control heads its author had seen (its *causal
//! point*). Two rules decide what the log means, both pure functions of the DAG,
//! so every node that holds the same operations computes the same result:
//!
//! - **Validity** ([`SpaceState::check`]): an operation is valid iff its author's
//!   role in the state *at its causal point* allows it and it is well formed
//!   there. Once valid, always valid; an invalid operation is refused everywhere.
//! - **Resolution** ([`resolve`]): the state at heads H is a fold over the causal
//!   past of H with *strong remove*: an operation whose author was removed or
//!   demoted concurrently is void (mutual removals all take effect), what depended
//!   on a void operation loses its effect too, a removal beats a concurrent re-add,
//!   and concurrent role changes keep the lower role. See docs/protocol.md.
//!
//! Key epochs: the genesis, every `Rotate` and every `Remove` of a member start an
//! epoch (id = hash of the key's commitment). The epoch at H is the one rotation
//! not followed by another; concurrent rotations give a *merged* epoch whose key
//! only a holder of every component can derive ([`Epoch`]). Each rotation links
//! back to the epochs before it (a history link), so the newest key opens the
//! whole history. Keys themselves live in a [`Keyring`].

mod keyring;
mod resolve;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};

pub use self::{
    keyring::Keyring,
    resolve::{Epoch, Resolved, Standing},
};
use crate::{
    crypto::{EpochKey, HistoryLink, Wrap},
    envelope::{Envelope, Header, Kind},
    identity::{DeviceCert, DeviceKeys},
    ids::{DeviceId, EnvelopeId, EpochId, SpaceId, derive16},
};

/// Validation rules this build implements; a space names the version it follows.
pub const RULES_VERSION: u16 = 1;
/// Most member devices a space may name in one operation: bounds wrap sets
/// (≈ 110 bytes per device) so a genesis or rotation stays far below the envelope cap.
pub const MAX_MEMBERS: usize = 2048;
/// Most replicate-only nodes a space may name.
pub const MAX_REPLICATORS: usize = 64;
/// Longest space name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Most control operations an operation's causal past may hold, its genesis
/// included (a consensus rule: counted over the causal past, not what a node
/// holds). Resolution keeps one ancestor bit per pair of operations (2 MiB here).
pub const MAX_CONTROL_OPS: usize = 4096;
/// Most control operations a member below admin may make in a space (counted
/// in an operation's causal past): adding and revoking its own devices, leaving,
/// rotating. Owners and admins are bounded by [`MAX_CONTROL_OPS`] only.
pub const MAX_OPS_PER_MEMBER: usize = 256;
/// Most control operations a node stores per space: a resource limit, not a
/// validity rule (beyond it operations wait, bounded, rather than being
/// refused), against floods of concurrent operations with small pasts.
pub const MAX_STORED_CONTROL_OPS: usize = 2 * MAX_CONTROL_OPS;
const SPACE_ID_CONTEXT: &str = "outpost/space-id/v1";
const NAME_AAD: &[u8] = b"outpost/v1/space-name\0";

/// A control-log operation (postcard: append variants, never reorder).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlOp {
    Genesis(Genesis),
    Add(Add),
    /// Names a replicate-only node: it stores and forwards the space, never reads it.
    AddReplicator(DeviceId),
    Remove(Remove),
    SetRole(SetRole),
    Rotate(Rotate),
}

/// Adds a member device to a space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Add {
    pub member: Member,
    /// The epoch whose key `wrap` carries: the epoch at the operation's causal
    /// point, which must not be a merged epoch (rotate first).
    pub epoch: EpochId,
    /// That epoch's key, wrapped for the new device.
    pub wrap: Wrap,
}

/// Removes member devices or replicators. Removing a member starts a new epoch
/// in the same signed operation, so "removed but not yet rotated" never exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remove {
    pub devices: Vec<DeviceId>,
    /// Present iff a member device is removed: the new epoch for the rest.
    pub rotate: Option<Rotate>,
}

/// Changes a member's role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetRole {
    pub device: DeviceId,
    pub role: Role,
}

/// Starts a new epoch: a fresh key wrapped for exactly the member devices at the
/// operation's causal point, linked back to the epoch(s) it follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotate {
    /// Commitment to the new key; the epoch id derives from it.
    pub commit: [u8; 32],
    pub wraps: WrapSet,
    /// Earlier epochs' keys sealed under the new key: for *tips* at the causal
    /// point (epochs no other links to) its author holds, sorted by parent id.
    pub links: Vec<HistoryLink>,
}

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

impl WrapSet {
    pub fn wraps(&self) -> &[Wrap] {
        let WrapSet::Direct(wraps) = self;
        wraps
    }
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
    #[error("the device is not a member (or replicator) at the operation's causal point")]
    NotMember,
    #[error("the key wrap is for another epoch or device than the operation names")]
    Wrap,
    #[error("the rotation reuses an earlier epoch or does not link exactly the epochs it follows")]
    Rotation,
    #[error("the operation would leave the space without an owner")]
    LastOwner,
    #[error("the member already has that role")]
    SameRole,
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
            InvalidOp::NotMember => "control: the device is not in the space",
            InvalidOp::Wrap => "control: key wrap for another epoch or device",
            InvalidOp::Rotation => "control: rotation reuses an epoch or links the wrong parents",
            InvalidOp::LastOwner => "control: would leave the space without an owner",
            InvalidOp::SameRole => "control: the member already has that role",
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

/// A writer's position for its next control operation: (incarnation, seq, its
/// previous operation). A writer's envelopes form a chain.
pub type WriterPos = (u64, u64, Option<EnvelopeId>);

/// The header of a control operation by `author` at the current heads of
/// `state`: its parents are the heads plus, when the writer wrote before, its
/// previous operation.
pub fn control_header(author: DeviceId, state: &SpaceState, writer: WriterPos) -> Header {
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
        author,
        incarnation,
        seq,
        parents,
        control_heads: Vec::new(),
    }
}

/// Signs `op` at the current heads of `state` and checks it as every peer will.
fn sign(keys: &DeviceKeys, state: &SpaceState, writer: WriterPos, op: &ControlOp) -> Result<Envelope, InvalidOp> {
    let env = Envelope::sign_control(keys, control_header(keys.device_id(), state, writer), op);
    state.check(&env)?;
    Ok(env)
}

/// Signs an `Add` of `cert` with `role` at the current heads of `state`. `epoch`
/// is the key of the current epoch, which must not be merged.
pub fn add_member(
    keys: &DeviceKeys,
    state: &SpaceState,
    epoch: &EpochKey,
    writer: WriterPos,
    cert: &DeviceCert,
    role: Role,
) -> Result<Envelope, InvalidOp> {
    let add = Add {
        member: Member { cert: *cert, role },
        epoch: epoch.id,
        wrap: epoch.wrap_for(cert),
    };
    sign(keys, state, writer, &ControlOp::Add(add))
}

/// Signs an `AddReplicator` of `device` at the current heads of `state`.
pub fn add_replicator(
    keys: &DeviceKeys,
    state: &SpaceState,
    writer: WriterPos,
    device: DeviceId,
) -> Result<Envelope, InvalidOp> {
    sign(keys, state, writer, &ControlOp::AddReplicator(device))
}

/// Signs a `Remove` of `devices` at the current heads of `state`. When a member
/// goes, the operation carries a new epoch for the others, linked to `tips` (the
/// keys of [`Resolved::tips`]); returns that new key too.
pub fn remove(
    keys: &DeviceKeys,
    state: &SpaceState,
    writer: WriterPos,
    devices: &[DeviceId],
    tips: &[EpochKey],
) -> Result<(Envelope, Option<EpochKey>), InvalidOp> {
    let gone: BTreeSet<DeviceId> = devices.iter().copied().collect();
    let (rotate, key) = if gone.iter().any(|d| state.members.contains_key(d)) {
        let stay = state.members.values().filter(|m| !gone.contains(&m.cert.device));
        let (rotate, key) = new_rotation(state.space, stay, tips);
        (Some(rotate), Some(key))
    } else {
        (None, None)
    };
    let op = ControlOp::Remove(Remove {
        devices: devices.to_vec(),
        rotate,
    });
    Ok((sign(keys, state, writer, &op)?, key))
}

/// Signs a `SetRole` at the current heads of `state`.
pub fn set_role(
    keys: &DeviceKeys,
    state: &SpaceState,
    writer: WriterPos,
    device: DeviceId,
    role: Role,
) -> Result<Envelope, InvalidOp> {
    sign(keys, state, writer, &ControlOp::SetRole(SetRole { device, role }))
}

/// Signs a `Rotate` for the current members of `state`, linked to `tips` (the
/// keys of [`Resolved::tips`]); returns the new key.
pub fn rotate(
    keys: &DeviceKeys,
    state: &SpaceState,
    writer: WriterPos,
    tips: &[EpochKey],
) -> Result<(Envelope, EpochKey), InvalidOp> {
    let (rotate, key) = new_rotation(state.space, state.members.values(), tips);
    Ok((sign(keys, state, writer, &ControlOp::Rotate(rotate))?, key))
}

fn new_rotation<'a>(
    space: SpaceId,
    recipients: impl Iterator<Item = &'a Member>,
    tips: &[EpochKey],
) -> (Rotate, EpochKey) {
    let key = EpochKey::generate(space);
    let wraps = recipients.map(|m| key.wrap_for(&m.cert)).collect();
    let mut links: Vec<HistoryLink> = tips.iter().map(|parent| key.link_to(parent)).collect();
    links.sort_by_key(|l| l.parent);
    let rotate = Rotate {
        commit: key.commitment(),
        wraps: WrapSet::Direct(wraps),
        links,
    };
    (rotate, key)
}

fn name_aad(space: &SpaceId) -> Vec<u8> {
    let mut aad = NAME_AAD.to_vec();
    aad.extend_from_slice(&space.0);
    aad
}

impl ControlOp {
    /// The epoch this operation starts, with its commitment, wraps and links.
    fn rotation(&self) -> Option<(&[u8; 32], &[Wrap], &[HistoryLink])> {
        match self {
            ControlOp::Genesis(g) => Some((&g.epoch_commit, g.wraps.wraps(), &[])),
            ControlOp::Rotate(r) | ControlOp::Remove(Remove { rotate: Some(r), .. }) => {
                Some((&r.commit, r.wraps.wraps(), &r.links))
            }
            _ => None,
        }
    }

    /// Whether this operation takes authority away from others (strong remove).
    fn is_removal(&self, demotes: bool) -> bool {
        matches!(self, ControlOp::Remove(_)) || (matches!(self, ControlOp::SetRole(_)) && demotes)
    }
}

/// The membership of a space as its control log defines it.
#[derive(Debug, Clone)]
pub struct SpaceState {
    pub space: SpaceId,
    pub kind: SpaceKind,
    pub genesis: EnvelopeId,
    /// The current epoch (at the current heads).
    pub epoch: EpochId,
    /// The members at the current heads.
    pub members: BTreeMap<DeviceId, Member>,
    pub replicators: BTreeSet<DeviceId>,
    /// Every operation, the genesis included, by envelope id.
    ops: BTreeMap<EnvelopeId, Applied>,
    /// Every epoch ever started → its commitment.
    commits: BTreeMap<EpochId, [u8; 32]>,
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
struct Applied {
    parents: Vec<EnvelopeId>,
    author: DeviceId,
    op: ControlOp,
    /// 0 for the genesis, else one more than its deepest parent: with the id, a
    /// canonical topological order.
    depth: u32,
    /// A `SetRole` that lowered the role the target had at its causal point.
    demotes: bool,
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
            genesis: env.id(),
            epoch,
            members: current.members.clone(),
            replicators: current.replicators.clone(),
            commits: BTreeMap::from([(
                epoch,
                *ops[&env.id()].op.rotation().expect("a genesis starts an epoch").0,
            )]),
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
                if at.epoch.is_merged() || add.epoch != at.epoch.id || add.wrap.recipient != device {
                    return Err(InvalidOp::Wrap);
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
            self.commits.insert(EpochKey::id_of(&self.space, commit), *commit);
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
        self.resolved(heads)
            .is_some_and(|r| r.members.get(device).is_some_and(|m| m.role >= Role::Writer))
    }

    /// The epoch at the causal point `heads`.
    pub fn epoch_at(&self, heads: &[EnvelopeId]) -> Option<Epoch> {
        self.resolved(heads).map(|r| r.epoch.clone())
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

    /// The decrypted space name (sealed under the first epoch).
    pub fn name(&self, ring: &Keyring) -> Option<String> {
        let ControlOp::Genesis(g) = &self.ops[&self.genesis].op else {
            unreachable!("the genesis entry holds the genesis");
        };
        let key = ring.get(&EpochKey::id_of(&self.space, &g.epoch_commit))?;
        let raw = key.open(&g.name_nonce, &name_aad(&self.space), &g.name_sealed).ok()?;
        String::from_utf8(raw).ok()
    }
}

/// Checks that `wraps` hold exactly one wrap per device of `devices`.
fn wraps_match(wraps: &[Wrap], devices: BTreeSet<DeviceId>) -> Result<(), InvalidOp> {
    let wrapped: BTreeSet<DeviceId> = wraps.iter().map(|w| w.recipient).collect();
    if wrapped.len() != wraps.len() || wrapped != devices {
        return Err(InvalidOp::Wraps);
    }
    Ok(())
}
