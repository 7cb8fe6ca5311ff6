//! Control log: signed plaintext operations that define a space's members, roles and
//! key epochs.
//!
//! This slice has one operation, `Genesis`, which creates the space, names its
//! members (with roles) and replicate-only nodes, and grants the first epoch key by
//! wrapping it for every member device. Later operations (add, remove, rotate, …)
//! append variants to [`ControlOp`]; they never reorder.

use std::collections::{BTreeMap, BTreeSet};

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
}

/// What kind of space this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpaceKind {
    Chat,
}

/// A member's role. Ordered by authority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
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
    pub members: BTreeMap<DeviceId, Member>,
    pub replicators: BTreeSet<DeviceId>,
    genesis_op: Genesis,
}

impl SpaceState {
    /// Validates a genesis envelope and returns the state it defines.
    pub fn from_genesis(env: &Envelope) -> Result<Self, InvalidOp> {
        let h = env.header();
        let ControlOp::Genesis(g) = env.control_op().map_err(|_| InvalidOp::Decode)?;
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
        })
    }

    /// Whether `device` may receive this space's envelopes (member or replicator).
    pub fn entitled(&self, device: &DeviceId) -> bool {
        self.members.contains_key(device) || self.replicators.contains(device)
    }

    /// Whether `device` may write content.
    pub fn may_write(&self, device: &DeviceId) -> bool {
        self.members.get(device).is_some_and(|m| m.role >= Role::Writer)
    }

    /// The current control heads (genesis only, in this slice).
    pub fn heads(&self) -> Vec<EnvelopeId> {
        vec![self.genesis]
    }

    /// Unwraps the current epoch key, if this device is a member.
    pub fn unwrap_key(&self, keys: &DeviceKeys) -> Option<Result<EpochKey, crate::crypto::Error>> {
        let WrapSet::Direct(wraps) = &self.genesis_op.wraps;
        let wrap = wraps.iter().find(|w| w.recipient == keys.device_id())?;
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
