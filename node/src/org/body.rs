//! The policy body: the org chart and the rules every node enforces.
//!
//! Departments form a tree by construction: a department's parent comes before
//! it in the list, so there is no cycle to detect after decoding, only an index
//! to check.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::PolicyError;
use crate::{identity::DeviceCert, ids::DeviceId};

/// Most departments a policy holds.
pub const MAX_DEPARTMENTS: usize = 100_000;
/// Most members a policy holds.
pub const MAX_MEMBERS: usize = 200_000;
/// Deepest department path (the root department is depth 1).
pub const MAX_DEPTH: usize = 32;
/// Longest text field (names, titles, ids, emails, phones), in bytes.
pub const MAX_FIELD_BYTES: usize = 256;
/// Most devices one member has.
pub const MAX_DEVICES_PER_MEMBER: usize = 64;
/// Most anchor devices an org names.
pub const MAX_ANCHORS: usize = 16;
/// Most members one version offboards.
pub const MAX_OFFBOARDINGS: usize = 1024;

/// One policy version's content (postcard, fields in this order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub name: String,
    pub departments: Vec<Department>,
    pub members: Vec<OrgMember>,
    pub rules: SpaceRules,
    /// Devices no node may open a session with, whoever they belonged to.
    pub revoked: Vec<DeviceId>,
    /// The org's anchor devices: relay and rendezvous for every node, and
    /// replicators of every space whose owners or admins follow the org (they
    /// store and forward ciphertext they cannot read).
    pub anchors: Vec<DeviceId>,
    /// The members this version offboards, each with its successor: a
    /// statement of this version only (the next one starts empty). Spaces use
    /// it to hand a departing owner's place to the successor
    /// (`control::Succession`).
    pub offboardings: Vec<Offboarding>,
}

/// A member leaves the org; `successor` takes over the spaces it owned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offboarding {
    pub member: String,
    pub successor: String,
    /// The member's devices, all revoked by this version.
    pub leaving: Vec<DeviceId>,
    /// The successor's devices that become owners, with their certificates
    /// (spaces name members by certificate).
    pub successors: Vec<DeviceCert>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Department {
    pub name: String,
    /// Index of the parent department, always lower than this one's; `None` for a root.
    pub parent: Option<u32>,
    /// Hidden from everyone outside it except admins.
    pub hidden: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgMember {
    /// The org's own member id (e.g. an employee number): stable across versions.
    pub id: String,
    pub name: String,
    pub department: u32,
    pub title: String,
    pub email: String,
    pub phone: String,
    pub head: bool,
    pub role: OrgRole,
    pub devices: Vec<DeviceId>,
    pub status: MemberStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrgRole {
    Member,
    /// Administers the subtree of this department.
    DepartmentAdmin(u32),
    SuperAdmin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    Active,
    Offboarded,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceRules {
    /// Whether members below admin may create spaces.
    pub members_create_spaces: bool,
    /// Whether members may invite people outside the org.
    pub invite_outsiders: bool,
}

impl Default for SpaceRules {
    fn default() -> Self {
        Self {
            members_create_spaces: true,
            invite_outsiders: false,
        }
    }
}

/// Whether department `path` is `root` or below it (a longer name beside it
/// is another department).
pub fn within(path: &str, root: &str) -> bool {
    path == root || path.strip_prefix(root).is_some_and(|rest| rest.starts_with('/'))
}

impl Policy {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("policies serialize")
    }

    /// Decodes and checks a body: canonical bytes, caps, a department tree,
    /// unique member ids, references in range.
    pub fn decode(bytes: &[u8]) -> Result<Self, PolicyError> {
        let policy: Policy = postcard::from_bytes(bytes).map_err(|_| PolicyError::Decode)?;
        if policy.encode() != bytes {
            return Err(PolicyError::Decode);
        }
        policy.check().map_err(|_| PolicyError::Decode)?;
        Ok(policy)
    }

    /// The structural rules of a body, with a reason a person can act on.
    pub fn check(&self) -> Result<(), String> {
        if self.departments.len() > MAX_DEPARTMENTS || self.members.len() > MAX_MEMBERS {
            return Err("too many departments or members".into());
        }
        if self.name.len() > MAX_FIELD_BYTES {
            return Err("the org name is too long".into());
        }
        for (i, d) in self.departments.iter().enumerate() {
            if d.name.is_empty() || d.name.len() > MAX_FIELD_BYTES || d.name.contains('/') {
                return Err(format!(
                    "department {i}: a name is 1 to {MAX_FIELD_BYTES} bytes, without '/'"
                ));
            }
            if d.parent.is_some_and(|p| p as usize >= i) {
                return Err(format!("department {i}: its parent must come before it"));
            }
            if self.depth(i as u32) > MAX_DEPTH {
                return Err(format!("department {i}: deeper than {MAX_DEPTH} levels"));
            }
        }
        let mut ids = BTreeSet::new();
        for m in &self.members {
            let fields = [&m.id, &m.name, &m.title, &m.email, &m.phone];
            if m.id.is_empty() || fields.iter().any(|f| f.len() > MAX_FIELD_BYTES) {
                return Err(format!(
                    "member {:?}: an id is required and fields are at most {MAX_FIELD_BYTES} bytes",
                    m.id
                ));
            }
            if !ids.insert(m.id.as_str()) {
                return Err(format!("member {:?} is listed twice", m.id));
            }
            let in_range = |d: u32| (d as usize) < self.departments.len();
            if !in_range(m.department) || matches!(m.role, OrgRole::DepartmentAdmin(d) if !in_range(d)) {
                return Err(format!("member {:?} names an unknown department", m.id));
            }
            if m.devices.len() > MAX_DEVICES_PER_MEMBER {
                return Err(format!("member {:?} has too many devices", m.id));
            }
        }
        if self.anchors.len() > MAX_ANCHORS {
            return Err(format!("at most {MAX_ANCHORS} anchors"));
        }
        if let Some(d) = self.anchors.iter().find(|d| self.is_revoked(d)) {
            return Err(format!("anchor {} is revoked", d.fmt_short()));
        }
        if self.anchors.iter().collect::<BTreeSet<_>>().len() != self.anchors.len() {
            return Err("an anchor is listed twice".into());
        }
        if self.offboardings.len() > MAX_OFFBOARDINGS {
            return Err(format!("at most {MAX_OFFBOARDINGS} offboardings per version"));
        }
        for o in &self.offboardings {
            self.check_offboarding(o)?;
        }
        Ok(())
    }

    /// An offboarding names an offboarded member with exactly its devices, all
    /// revoked, and an active successor with certificates for devices it lists.
    fn check_offboarding(&self, o: &Offboarding) -> Result<(), String> {
        let find = |id: &str| self.members.iter().find(|m| m.id == id);
        let (Some(member), Some(successor)) = (find(&o.member), find(&o.successor)) else {
            return Err(format!("offboarding {:?}: an unknown member or successor", o.member));
        };
        let same = |a: &[DeviceId], b: &[DeviceId]| {
            a.iter().collect::<BTreeSet<_>>() == b.iter().collect::<BTreeSet<_>>() && a.len() == b.len()
        };
        if member.status != MemberStatus::Offboarded || !same(&o.leaving, &member.devices) {
            return Err(format!(
                "offboarding {:?}: the member is not offboarded with these devices",
                o.member
            ));
        }
        if o.leaving.iter().any(|d| !self.is_revoked(d)) {
            return Err(format!(
                "offboarding {:?}: every device of the member is revoked",
                o.member
            ));
        }
        let devices: BTreeSet<DeviceId> = o.successors.iter().map(|c| c.device).collect();
        if successor.status != MemberStatus::Active
            || o.member == o.successor
            || o.successors.is_empty()
            || devices.len() != o.successors.len()
            || o.successors
                .iter()
                .any(|c| !successor.devices.contains(&c.device) || !c.verify())
        {
            return Err(format!(
                "offboarding {:?}: the successor {:?} must be active, another member, with certificates of its devices",
                o.member, o.successor
            ));
        }
        Ok(())
    }

    /// The devices the policy admits: every active member's devices and the
    /// anchors, none revoked.
    pub fn admitted(&self) -> BTreeSet<DeviceId> {
        self.members
            .iter()
            .filter(|m| m.status == MemberStatus::Active)
            .flat_map(|m| m.devices.iter())
            .chain(&self.anchors)
            .filter(|d| !self.is_revoked(d))
            .copied()
            .collect()
    }

    /// The depth of department `i` (a root is 1).
    fn depth(&self, i: u32) -> usize {
        let mut depth = 1;
        let mut at = self.departments[i as usize].parent;
        while let Some(p) = at {
            depth += 1;
            at = self.departments.get(p as usize).and_then(|d| d.parent);
            if depth > MAX_DEPTH {
                break;
            }
        }
        depth
    }

    /// The department at `path` (slashes around it ignored), if there is one.
    pub fn department(&self, path: &str) -> Option<u32> {
        let path = path.trim_matches('/');
        (0..self.departments.len() as u32).find(|&i| self.path(i) == path)
    }

    /// The path of department `i`, e.g. `总部/技术部/前端组`.
    pub fn path(&self, i: u32) -> String {
        let mut parts = Vec::new();
        let mut at = Some(i);
        while let Some(d) = at.and_then(|d| self.departments.get(d as usize)) {
            parts.push(d.name.as_str());
            at = d.parent;
            if parts.len() > MAX_DEPTH {
                break;
            }
        }
        parts.reverse();
        parts.join("/")
    }

    /// The departments `viewer` may see. A hidden department (and everything
    /// under it) is visible only to its own members (anyone in its subtree),
    /// to super admins, to admins of a department above or at it, and to
    /// holders of an org admin key (`admin`).
    pub fn visible_departments(&self, viewer: Option<&OrgMember>, admin: bool) -> Vec<bool> {
        let n = self.departments.len();
        let super_admin = admin || viewer.is_some_and(|v| v.role == OrgRole::SuperAdmin);
        // Ancestors-or-self of the viewer's department and of the department it administers.
        let chain = |start: Option<u32>| {
            let mut out = BTreeSet::new();
            let mut at = start;
            while let Some(d) = at {
                if !out.insert(d) {
                    break;
                }
                at = self.departments.get(d as usize).and_then(|x| x.parent);
            }
            out
        };
        let inside = chain(viewer.map(|v| v.department));
        let administered = match viewer.map(|v| v.role) {
            Some(OrgRole::DepartmentAdmin(d)) => Some(d),
            _ => None,
        };
        let mut visible = vec![true; n];
        for i in 0..n {
            let d = &self.departments[i];
            // Parents come first, so the parent's answer is already known.
            let parent_ok = d.parent.is_none_or(|p| visible[p as usize]);
            let own_ok = !d.hidden
                || super_admin
                || inside.contains(&(i as u32))
                || administered.is_some_and(|a| chain(Some(i as u32)).contains(&a));
            visible[i] = parent_ok && own_ok;
        }
        visible
    }

    /// Whether `device` is revoked by this policy.
    pub fn is_revoked(&self, device: &DeviceId) -> bool {
        self.revoked.contains(device)
    }

    /// What changes from `self` to `next`, one line each, for people.
    pub fn diff(&self, next: &Policy) -> Vec<String> {
        let mut out = Vec::new();
        if self.name != next.name {
            out.push(format!("name: {:?} -> {:?}", self.name, next.name));
        }
        let paths = |p: &Policy| -> BTreeSet<String> { (0..p.departments.len() as u32).map(|i| p.path(i)).collect() };
        let (old_paths, new_paths) = (paths(self), paths(next));
        out.extend(new_paths.difference(&old_paths).map(|p| format!("+ department {p}")));
        out.extend(old_paths.difference(&new_paths).map(|p| format!("- department {p}")));
        let by_id = |p: &Policy| -> BTreeMap<String, (OrgMember, String)> {
            p.members
                .iter()
                .map(|m| (m.id.clone(), (m.clone(), p.path(m.department))))
                .collect()
        };
        let (old, new) = (by_id(self), by_id(next));
        for (id, (m, path)) in &new {
            match old.get(id) {
                None => out.push(format!("+ member {id} {} ({path})", m.name)),
                Some((before, old_path)) if (before, old_path) != (m, path) => {
                    out.push(format!("~ member {id} {} ({old_path} -> {path})", m.name))
                }
                Some(_) => {}
            }
        }
        for (id, (m, path)) in &old {
            if !new.contains_key(id) {
                out.push(format!("- member {id} {} ({path})", m.name));
            }
        }
        for d in next.revoked.iter().filter(|d| !self.revoked.contains(d)) {
            out.push(format!("revoke device {d}"));
        }
        for o in &next.offboardings {
            out.push(format!("offboard member {} (successor {})", o.member, o.successor));
        }
        for d in next.anchors.iter().filter(|d| !self.anchors.contains(d)) {
            out.push(format!("+ anchor {d}"));
        }
        for d in self.anchors.iter().filter(|d| !next.anchors.contains(d)) {
            out.push(format!("- anchor {d}"));
        }
        if self.rules != next.rules {
            out.push(format!("rules: {:?} -> {:?}", self.rules, next.rules));
        }
        out
    }
}
