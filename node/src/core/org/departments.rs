//! Department rooms: spaces whose members follow the org chart. The room's
//! genesis seals its department path; each owner or admin of the room adds
//! the devices of the members of that department and of those below it, and
//! removes the members who are no longer there, whenever the policy or the
//! room changes.

use super::*;
use crate::org::body::within;

impl Core {
    /// For `chat create --department PATH`: the path as the policy spells it,
    /// and the certificates of its members' devices this node has met. Org
    /// admins and super admins make rooms for any department, a department
    /// admin for its own subtree.
    pub(in crate::core) fn department_room(&self, path: &str) -> Result<(String, Vec<DeviceCert>)> {
        let policy = self.current_policy()?;
        if self.org_degraded() {
            return Err(Error::NotAdmin(
                "the org policy has expired: nothing new is granted until a fresh version is published".into(),
            ));
        }
        let path = path.trim_matches('/');
        if policy.department(path).is_none() {
            return Err(Error::NotFound(format!(
                "no department {path:?} in the policy (`outpost dir dept` lists them)"
            )));
        }
        let role = policy
            .members
            .iter()
            .find(|m| m.devices.contains(&self.me))
            .map(|m| m.role);
        let allowed = self.holds_admin_key()
            || match role {
                Some(OrgRole::SuperAdmin) => true,
                Some(OrgRole::DepartmentAdmin(d)) => within(path, &policy.path(d)),
                _ => false,
            };
        if !allowed {
            return Err(Error::NotAdmin(
                "only the org's admins, and a department's admin for its subtree, make department rooms".into(),
            ));
        }
        let certs = department_devices(policy, path)
            .iter()
            .filter(|d| **d != self.me)
            .filter_map(|d| self.certs.get(d).copied())
            .collect();
        Ok((path.into(), certs))
    }

    /// Brings the members of the department rooms among `spaces` where this
    /// device is an owner or admin in line with the chart: the department's
    /// devices this node has met are added as writers; a writer or reader whose
    /// user has no device in the department is removed (owners and admins, who
    /// run the room, stay).
    pub(in crate::core) fn enforce_departments(
        &mut self,
        tx: &mut Txn,
        spaces: &BTreeSet<SpaceId>,
        effects: &mut Effects,
    ) -> store::Result<()> {
        let Ok(policy) = self.current_policy() else {
            return Ok(());
        };
        let me = self.me;
        let grants = !self.org_degraded();
        let mut adds = Vec::new();
        let mut removals = Vec::new();
        for space in spaces.iter().filter_map(|id| self.spaces.get(id)) {
            let Some(path) = &space.department else {
                continue;
            };
            let members = &space.state.members;
            if members.get(&me).is_none_or(|m| m.role < Role::Admin) {
                continue;
            }
            let desired = department_devices(policy, path);
            // The users with a device in the department, by the room's own
            // certificates first: every admin of the room decides alike for
            // its members, whatever certificates it has met.
            let users: BTreeSet<UserId> = desired
                .iter()
                .filter_map(|d| members.get(d).map(|m| &m.cert).or_else(|| self.certs.get(d)))
                .map(|c| c.user)
                .collect();
            let id = space.state.space;
            adds.extend(
                desired
                    .iter()
                    .filter(|d| grants && !space.state.entitled(d) && **d != me)
                    .filter_map(|d| self.certs.get(d).copied())
                    .map(|cert| (id, cert)),
            );
            removals.extend(
                members
                    .values()
                    .filter(|m| m.role < Role::Admin && !users.contains(&m.cert.user))
                    .map(|m| (id, m.cert.device)),
            );
        }
        for (space, cert) in adds {
            match self.invite_cert(tx, space, cert, Grant::Member(Role::Writer), effects)? {
                Ok(_) => {
                    info!(space = %space.fmt_short(), device = %cert.device.fmt_short(), "added a department member to its room")
                }
                Err(e) => {
                    warn!(space = %space.fmt_short(), device = %cert.device.fmt_short(), error = %e, "could not add a department member to its room")
                }
            }
        }
        self.remove_for_org(tx, removals, "it left the room's department", effects)
    }
}

/// The devices of the active members of department `path` and those below
/// it, none revoked.
fn department_devices(policy: &Policy, path: &str) -> BTreeSet<DeviceId> {
    let inside: BTreeSet<u32> = (0..policy.departments.len() as u32)
        .filter(|&i| within(&policy.path(i), path))
        .collect();
    policy
        .members
        .iter()
        .filter(|m| m.status == MemberStatus::Active && inside.contains(&m.department))
        .flat_map(|m| m.devices.iter().copied())
        .filter(|d| !policy.is_revoked(d))
        .collect()
}
