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
mod state;
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
    state::SpaceState,
};
use crate::{
    crypto::{EpochKey, HistoryLink, Wrap},
    envelope::{Envelope, Header, Kind},
    identity::{DeviceCert, DeviceKeys},
    ids::{DeviceId, DocId, EnvelopeId, EpochId, SpaceId, UserId, derive16},
};

/// Validation rules this build implements; a space names the version it follows.
/// Version 2: chat messages are skeletons whose text is in body envelopes,
/// with edits, reactions, retraction and room settings (`outpost_crdt::chat`).
pub const RULES_VERSION: u16 = 2;
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
const DEPARTMENT_AAD: &[u8] = b"outpost/v1/space-department\0";

/// A control-log operation (postcard: append variants, never reorder).
// Most operations are `Add`s, the largest variant (a certificate and a wrap):
// boxing it would save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlOp {
    Genesis(Genesis),
    Add(Add),
    /// Names a replicate-only node: it stores and forwards the space, never reads it.
    AddReplicator(DeviceId),
    Remove(Remove),
    SetRole(SetRole),
    Rotate(Rotate),
    /// The org hands an offboarded owner's place to its successor.
    Succession(Succession),
    /// Who may post content: everyone who writes, or only owners and admins
    /// (an announcement room).
    SetPosting(Posting),
}

/// Who may post content in a space.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Posting {
    /// Every member with a role of writer or above.
    #[default]
    Writers,
    /// Only owners and admins: an announcement room.
    Admins,
}

/// The org's policy version `policy` offboards `member`: its devices
/// (`leaving`) leave the space and its successor's devices become owners, under
/// a new epoch for the members after. Any member may make it; it is valid only
/// where `leaving` holds an owner at its causal point, and only as the policy
/// version states it (checked by the core against the verified chain: an
/// operation naming a version this node does not hold yet waits for it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Succession {
    pub policy: u64,
    /// BLAKE3 of that version's header.
    pub policy_hash: [u8; 32],
    pub member: String,
    pub leaving: Vec<DeviceId>,
    /// The successor's devices, each an owner.
    pub successors: Vec<Member>,
    /// A from-join space and a successor user new to it: the new epoch links
    /// nothing (the successor reads from here on), like any join.
    pub join: bool,
    pub rotate: Rotate,
}

/// Adds a member device to a space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Add {
    pub member: Member,
    pub key: AddKey,
}

/// How an `Add` gives the new device its keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AddKey {
    /// The key of the epoch at the operation's causal point (which must not be
    /// merged: rotate first), wrapped for the new device. In a from-join space
    /// this form adds another device of a user already in the space, and
    /// `grants` carry that user's keys of earlier epochs; elsewhere `grants` is
    /// empty (history links give the rest).
    Current {
        epoch: EpochId,
        wrap: Wrap,
        grants: Vec<KeyGrant>,
    },
    /// A from-join space, a user not in it yet: a new epoch for the members and
    /// the newcomer, linked to no earlier epoch, with the space name sealed
    /// under it (the newcomer holds no key the genesis name opens with).
    Join { rotate: Rotate, name: SealedName },
}

/// An earlier epoch's key wrapped for a new device of a member's user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyGrant {
    pub epoch: EpochId,
    pub wrap: Wrap,
}

/// The space name sealed under an epoch key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedName {
    pub nonce: [u8; 24],
    pub sealed: Vec<u8>,
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpaceKind {
    #[default]
    Chat,
    /// A shared document (rich text).
    Doc,
    /// A shared calendar.
    Calendar,
}

impl SpaceKind {
    /// The document model this kind of space holds.
    pub fn model(self) -> outpost_crdt::doc::Model {
        match self {
            SpaceKind::Chat => outpost_crdt::doc::Model::Chat,
            SpaceKind::Doc => outpost_crdt::doc::Model::Text,
            SpaceKind::Calendar => outpost_crdt::doc::Model::Calendar,
        }
    }

    /// Whether the space's content is one document whose state is built from
    /// its whole history (a text, a calendar): every member must read all of
    /// it, so history is shared.
    pub fn needs_shared_history(self) -> bool {
        matches!(self, SpaceKind::Doc | SpaceKind::Calendar)
    }

    /// Whether readers write content too: in a calendar a reader answers
    /// invitations (the calendar rules let it write nothing else).
    pub fn readers_write(self) -> bool {
        self == SpaceKind::Calendar
    }
}

/// Whether a new member reads what was written before it joined.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum History {
    /// Every member reads the whole history: each epoch key links back to the
    /// ones before it.
    #[default]
    Shared,
    /// A new user reads from its join on: the join starts an epoch linked to no
    /// earlier one, and content is written into one document per epoch, so
    /// nothing after a join depends on what was written before it.
    FromJoin,
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
    pub history: History,
    pub posting: Posting,
    /// A department room: the org department path (its members follow the
    /// chart), sealed under the first epoch like the name.
    pub department: Option<SealedName>,
}

/// How a new space is set up, beyond its members.
#[derive(Debug, Clone, Default)]
pub struct SpaceOptions {
    pub history: History,
    pub posting: Posting,
    /// A department room's department path.
    pub department: Option<String>,
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
    #[error("a document space shares its whole history (its text is built from it)")]
    DocHistory,
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
    #[error("the member already has that role (or the space that posting rule)")]
    SameRole,
    #[error("the space holds {MAX_CONTROL_OPS} control operations, its cap")]
    TooManyOps,
    #[error(
        "a from-join space adds a new user with a new epoch linked to nothing, and another device of a member with the current key"
    )]
    JoinForm,
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
            InvalidOp::DocHistory => "control: a document or calendar space with history from join",
            InvalidOp::UnknownParents => "control: unknown causal point",
            InvalidOp::NotAllowed => "control: the author's role does not allow it",
            InvalidOp::AlreadyMember => "control: the device is already in the space",
            InvalidOp::NotMember => "control: the device is not in the space",
            InvalidOp::Wrap => "control: key wrap for another epoch or device",
            InvalidOp::Rotation => "control: rotation reuses an epoch or links the wrong parents",
            InvalidOp::LastOwner => "control: would leave the space without an owner",
            InvalidOp::SameRole => "control: the member already has that role",
            InvalidOp::TooManyOps => "control: too many operations",
            InvalidOp::JoinForm => "control: an add of the wrong form for the space's history",
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
    history: History,
    others: &[DeviceCert],
    replicators: &[DeviceId],
) -> Result<(Envelope, EpochKey), InvalidOp> {
    let options = SpaceOptions {
        history,
        ..SpaceOptions::default()
    };
    create_space_with(keys, incarnation, name, kind, &options, others, replicators)
}

/// [`create_space`] with every option.
pub fn create_space_with(
    keys: &DeviceKeys,
    incarnation: u64,
    name: &str,
    kind: SpaceKind,
    options: &SpaceOptions,
    others: &[DeviceCert],
    replicators: &[DeviceId],
) -> Result<(Envelope, EpochKey), InvalidOp> {
    if name.len() > MAX_NAME_BYTES || options.department.as_ref().is_some_and(|d| d.len() > MAX_NAME_BYTES) {
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
    let SealedName {
        nonce: name_nonce,
        sealed: name_sealed,
    } = seal_name(&epoch, name);
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
        history: options.history,
        posting: options.posting,
        department: options
            .department
            .as_ref()
            .map(|d| seal_text(&epoch, &department_aad(&space), d)),
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
    add_device(keys, state, epoch, &[], writer, cert, role)
}

/// [`add_member`] granting the keys of earlier epochs `grants` too: a from-join
/// space, another device of a user already in it.
pub fn add_device(
    keys: &DeviceKeys,
    state: &SpaceState,
    epoch: &EpochKey,
    grants: &[EpochKey],
    writer: WriterPos,
    cert: &DeviceCert,
    role: Role,
) -> Result<Envelope, InvalidOp> {
    let mut grants: Vec<KeyGrant> = grants
        .iter()
        .filter(|k| k.id != epoch.id)
        .map(|k| KeyGrant {
            epoch: k.id,
            wrap: k.wrap_for(cert),
        })
        .collect();
    grants.sort_by_key(|g| g.epoch);
    let add = Add {
        member: Member { cert: *cert, role },
        key: AddKey::Current {
            epoch: epoch.id,
            wrap: epoch.wrap_for(cert),
            grants,
        },
    };
    sign(keys, state, writer, &ControlOp::Add(add))
}

/// Signs the `Add` of a new user's device `cert` to a from-join space: a new
/// epoch for the members and the newcomer, linked to nothing, carrying the space
/// `name`. Returns the new key too.
pub fn join(
    keys: &DeviceKeys,
    state: &SpaceState,
    writer: WriterPos,
    cert: &DeviceCert,
    role: Role,
    name: &str,
) -> Result<(Envelope, EpochKey), InvalidOp> {
    let member = Member { cert: *cert, role };
    let (rotate, key) = new_rotation(state.space, state.members.values().chain([&member]), &[]);
    let name = seal_name(&key, name);
    let add = Add {
        member,
        key: AddKey::Join { rotate, name },
    };
    Ok((sign(keys, state, writer, &ControlOp::Add(add))?, key))
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

/// What a policy version states about one offboarded member, for
/// [`succession`].
#[derive(Debug, Clone)]
pub struct SuccessionFact<'a> {
    pub policy: u64,
    pub policy_hash: [u8; 32],
    pub member: &'a str,
    pub leaving: &'a [DeviceId],
    pub successors: &'a [DeviceCert],
}

/// Signs a `Succession` at the current heads of `state`: `fact`'s leaving
/// devices go, its successors become owners, under a new epoch linked to `tips`
/// (none for a from-join newcomer). Returns the new key.
pub fn succession(
    keys: &DeviceKeys,
    state: &SpaceState,
    writer: WriterPos,
    fact: &SuccessionFact<'_>,
    tips: &[EpochKey],
) -> Result<(Envelope, EpochKey), InvalidOp> {
    let successors: Vec<Member> = fact
        .successors
        .iter()
        .map(|cert| Member {
            cert: *cert,
            role: Role::Owner,
        })
        .collect();
    let join = successors
        .iter()
        .any(|m| state::joins(state.history, &state.members, &m.cert.user));
    let after: Vec<Member> = state
        .members
        .values()
        .filter(|m| {
            !fact.leaving.contains(&m.cert.device) && !fact.successors.iter().any(|c| c.device == m.cert.device)
        })
        .cloned()
        .chain(successors.iter().cloned())
        .collect();
    let (rotate, key) = new_rotation(state.space, after.iter(), if join { &[] } else { tips });
    let op = ControlOp::Succession(Succession {
        policy: fact.policy,
        policy_hash: fact.policy_hash,
        member: fact.member.into(),
        leaving: fact.leaving.to_vec(),
        successors,
        join,
        rotate,
    });
    Ok((sign(keys, state, writer, &op)?, key))
}

/// Signs a `SetPosting` at the current heads of `state`.
pub fn set_posting(
    keys: &DeviceKeys,
    state: &SpaceState,
    writer: WriterPos,
    posting: Posting,
) -> Result<Envelope, InvalidOp> {
    sign(keys, state, writer, &ControlOp::SetPosting(posting))
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

fn seal_name(key: &EpochKey, name: &str) -> SealedName {
    seal_text(key, &name_aad(&key.space), name)
}

fn seal_text(key: &EpochKey, aad: &[u8], text: &str) -> SealedName {
    let (nonce, sealed) = key.seal(aad, text.as_bytes());
    SealedName { nonce, sealed }
}

fn name_aad(space: &SpaceId) -> Vec<u8> {
    let mut aad = NAME_AAD.to_vec();
    aad.extend_from_slice(&space.0);
    aad
}

fn department_aad(space: &SpaceId) -> Vec<u8> {
    let mut aad = DEPARTMENT_AAD.to_vec();
    aad.extend_from_slice(&space.0);
    aad
}

impl ControlOp {
    /// The epoch this operation starts, with its commitment, wraps and links.
    fn rotation(&self) -> Option<(&[u8; 32], &[Wrap], &[HistoryLink])> {
        match self {
            ControlOp::Genesis(g) => Some((&g.epoch_commit, g.wraps.wraps(), &[])),
            ControlOp::Rotate(r)
            | ControlOp::Remove(Remove { rotate: Some(r), .. })
            | ControlOp::Succession(Succession { rotate: r, .. }) => Some((&r.commit, r.wraps.wraps(), &r.links)),
            ControlOp::Add(Add {
                key: AddKey::Join { rotate: r, .. },
                ..
            }) => Some((&r.commit, r.wraps.wraps(), &r.links)),
            _ => None,
        }
    }

    /// Whether this operation is a from-join `Add` of a new user: everything
    /// before it is history the newcomer does not read.
    fn is_join(&self) -> bool {
        matches!(
            self,
            ControlOp::Add(Add {
                key: AddKey::Join { .. },
                ..
            }) | ControlOp::Succession(Succession { join: true, .. })
        )
    }

    /// Every epoch key this operation wraps, with its epoch: a rotation's wraps,
    /// or an `Add`'s current key and grants.
    fn key_wraps(&self, space: &SpaceId) -> Vec<(EpochId, &Wrap)> {
        match self {
            ControlOp::Add(Add {
                key: AddKey::Current { epoch, wrap, grants },
                ..
            }) => std::iter::once((*epoch, wrap))
                .chain(grants.iter().map(|g| (g.epoch, &g.wrap)))
                .collect(),
            op => match op.rotation() {
                Some((commit, wraps, _)) => {
                    let id = EpochKey::id_of(space, commit);
                    wraps.iter().map(|w| (id, w)).collect()
                }
                None => Vec::new(),
            },
        }
    }

    /// Whether this operation takes authority away from others (strong remove).
    fn is_removal(&self, demotes: bool) -> bool {
        matches!(self, ControlOp::Remove(_) | ControlOp::Succession(_))
            || (matches!(self, ControlOp::SetRole(_)) && demotes)
    }
}
