//! What the org's policy makes this node do: no place for revoked devices,
//! and the space rules for its own `chat create` and invites.

use super::*;

impl Core {
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

    /// Removes every device the policy revokes from each space where this
    /// device may remove it (an owner or admin): each such space moves to a new
    /// key epoch without it. Others in the space do the same when they can;
    /// concurrent removals of one device merge.
    pub(in crate::core) fn enforce_revocations(&mut self, tx: &mut Txn, effects: &mut Effects) -> store::Result<()> {
        let revoked = self.revoked_by_org();
        if revoked.is_empty() {
            return Ok(());
        }
        let me = self.me;
        let work: Vec<(SpaceId, DeviceId)> = self
            .spaces
            .values()
            .filter(|s| s.state.members.get(&me).is_some_and(|m| m.role >= Role::Admin))
            .flat_map(|s| {
                revoked
                    .iter()
                    .filter(|d| s.state.entitled(d) && **d != me)
                    .map(move |d| (s.state.space, *d))
            })
            .collect();
        for (space, device) in work {
            match self.change_members(tx, space, MemberChange::RemoveDevice(device.to_string()), effects)? {
                Ok(_) => {
                    info!(space = %space.fmt_short(), device = %device.fmt_short(), "removed a device the org revoked")
                }
                Err(e) => {
                    warn!(space = %space.fmt_short(), device = %device.fmt_short(), error = %e, "could not remove a device the org revoked")
                }
            }
        }
        Ok(())
    }
}
