//! What the org's policy makes this node do: no place for revoked devices,
//! and the space rules for its own `chat create` and invites.

use super::*;

/// What the network needs of the org's policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrgNet {
    /// The org this node follows (its rendezvous namespace), if any.
    pub org: Option<OrgId>,
    /// No session with these.
    pub revoked: BTreeSet<DeviceId>,
    /// Devices the policy admits; `None` without a policy.
    pub admitted: Option<BTreeSet<DeviceId>>,
    pub anchors: BTreeSet<DeviceId>,
}

impl Core {
    pub(in crate::core) fn org_net(&self) -> OrgNet {
        let Some(org) = &self.org else {
            return OrgNet::default();
        };
        let policy = org.current.as_ref().map(Verified::policy);
        OrgNet {
            org: Some(org.id),
            revoked: self.revoked_by_org(),
            admitted: policy.map(Policy::admitted),
            anchors: policy.map(|p| p.anchors.iter().copied().collect()).unwrap_or_default(),
        }
    }

    /// Past the current version's expiry: the node keeps working and applies
    /// revocations, but grants nothing new (no replicators, owners or
    /// department members named from the policy) until a fresh version arrives.
    pub(in crate::core) fn org_degraded(&self) -> bool {
        self.org
            .as_ref()
            .and_then(|o| o.current.as_ref())
            .is_some_and(|c| c.expired(crate::clock::now_ms()))
    }

    /// The org's anchors that should replicate a new space.
    pub(in crate::core) fn org_anchors(&self) -> Vec<DeviceId> {
        if self.org_degraded() {
            return Vec::new();
        }
        self.current_policy()
            .map(|p| p.anchors.iter().copied().filter(|d| *d != self.me).collect())
            .unwrap_or_default()
    }

    /// The devices the current policy revokes: no session with them, and no
    /// place in any space.
    pub(in crate::core) fn revoked_by_org(&self) -> BTreeSet<DeviceId> {
        self.org
            .as_ref()
            .and_then(|o| o.current.as_ref())
            .map(|c| c.policy().revoked.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The org's space rules for adding `device` to a space here: never a
    /// revoked device, and no device outside the org when the policy says
    /// members invite none. (Rules this node applies to its own actions; other
    /// nodes cannot check them until spaces name their policy version.)
    pub(in crate::core) fn org_may_add(&self, cert: &crate::identity::DeviceCert) -> Result<()> {
        let Ok(policy) = self.current_policy() else {
            return Ok(());
        };
        let device = &cert.device;
        if policy.is_revoked(device) {
            return Err(Error::NotAdmin(format!(
                "device {} is revoked by the org's policy",
                device.fmt_short()
            )));
        }
        // This user's own devices are never outsiders to it.
        let in_org = cert.user == self.keys.user_id() || policy.members.iter().any(|m| m.devices.contains(device));
        if !policy.rules.invite_outsiders && !in_org && !self.org_manager(policy) {
            return Err(Error::NotAdmin(format!(
                "device {} is not in the org, and the org's policy lets only admins invite people outside it",
                device.fmt_short()
            )));
        }
        Ok(())
    }

    /// The org's rule on who creates spaces, for this device.
    pub(in crate::core) fn org_may_create_space(&self) -> Result<()> {
        let Ok(policy) = self.current_policy() else {
            return Ok(());
        };
        if !policy.rules.members_create_spaces && !self.org_manager(policy) {
            return Err(Error::NotAdmin(
                "the org's policy lets only admins create spaces".into(),
            ));
        }
        Ok(())
    }

    /// Whether this device manages the org: it holds one of the version's admin
    /// keys, or it is a device of a super admin or department admin.
    fn org_manager(&self, policy: &Policy) -> bool {
        self.holds_admin_key()
            || policy
                .members
                .iter()
                .any(|m| m.devices.contains(&self.me) && !matches!(m.role, crate::org::body::OrgRole::Member))
    }

    /// Applies the policy to `spaces`. Where this device is an owner or admin:
    /// every device the policy revokes is removed (the space moves to a new key
    /// epoch without it), and every anchor is named a replicator. Where an
    /// offboarded member still owns the space: its successor takes its place
    /// (`enforce_successions`, by any member). Others in the
    /// space do the same when they can; concurrent removals of one device, or
    /// namings of one replicator, merge. Runs when a version is accepted, at
    /// start-up, and when control operations change a space.
    pub(in crate::core) fn enforce_policy(
        &mut self,
        tx: &mut Txn,
        spaces: &BTreeSet<SpaceId>,
        effects: &mut Effects,
    ) -> store::Result<()> {
        // First, so the successor inherits before revocation removes the owner.
        self.enforce_successions(tx, spaces, effects)?;
        let Ok(policy) = self.current_policy() else {
            return Ok(());
        };
        let me = self.me;
        let grants = !self.org_degraded();
        let mut removals = Vec::new();
        let mut namings = Vec::new();
        let administered = spaces
            .iter()
            .filter_map(|id| self.spaces.get(id))
            .filter(|s| s.state.members.get(&me).is_some_and(|m| m.role >= Role::Admin));
        for s in administered {
            let space = s.state.space;
            removals.extend(
                policy
                    .revoked
                    .iter()
                    .filter(|d| s.state.entitled(d) && **d != me)
                    .map(|d| (space, *d)),
            );
            namings.extend(
                policy
                    .anchors
                    .iter()
                    .filter(|d| grants && !s.state.entitled(d) && **d != me)
                    .map(|d| (space, *d)),
            );
        }
        self.remove_for_org(tx, removals, "the org revoked it", effects)?;
        for (space, device) in namings {
            if let Err(e) = self.invite_replicator(tx, space, device, effects)? {
                warn!(space = %space.fmt_short(), device = %device.fmt_short(), error = %e, "could not name the org's anchor a replicator");
            }
        }
        self.enforce_departments(tx, spaces, effects)
    }

    /// Removes each (space, device) as this owner or admin, under a new epoch,
    /// logging `why`; a removal that fails is logged and the rest go on.
    pub(in crate::core) fn remove_for_org(
        &mut self,
        tx: &mut Txn,
        removals: Vec<(SpaceId, DeviceId)>,
        why: &str,
        effects: &mut Effects,
    ) -> store::Result<()> {
        for (space, device) in removals {
            let change = MemberChange::RemoveDevice(device.to_string());
            match self.change_members(tx, space, change, effects)? {
                Ok(_) => info!(space = %space.fmt_short(), device = %device.fmt_short(), why, "removed a device"),
                Err(e) => {
                    warn!(space = %space.fmt_short(), device = %device.fmt_short(), why, error = %e, "could not remove a device")
                }
            }
        }
        Ok(())
    }
}
