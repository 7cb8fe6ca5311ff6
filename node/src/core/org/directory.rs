//! The org directory (`dir search`, `dir dept`), as this device may see it:
//! hidden departments only from inside and by admins.

use super::*;

/// A member as the directory shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    pub id: String,
    pub name: String,
    pub department: String,
    pub title: String,
    pub email: String,
    pub phone: String,
    pub head: bool,
    pub status: crate::org::body::MemberStatus,
}

/// Most directory entries one answer holds.
pub const MAX_DIR_RESULTS: usize = 500;

impl Core {
    /// Members matching `query` (name, department path, title or id; case
    /// blind), as far as this device may see them.
    pub(in crate::core) fn dir_search(&self, query: &str) -> Result<Vec<DirEntry>> {
        let needle = query.trim().to_lowercase();
        if needle.is_empty() {
            return Err(Error::Invalid("search for a name, department or title".into()));
        }
        self.directory(|m, path| {
            [&m.name, path, &m.title, &m.id]
                .iter()
                .any(|f| f.to_lowercase().contains(&needle))
        })
    }

    /// The members of the department at `path` and of those under it.
    pub(in crate::core) fn dir_dept(&self, path: &str) -> Result<Vec<DirEntry>> {
        let path = path.trim().trim_matches('/').to_string();
        let found = self.directory(|_, p| crate::org::body::within(p, &path))?;
        if found.is_empty() {
            // Hidden and empty look alike from outside: both are "no such department".
            let policy = self.current_policy()?;
            let visible = self.visible(policy);
            let seen = (0..policy.departments.len() as u32).any(|i| visible[i as usize] && policy.path(i) == path);
            if !seen {
                return Err(Error::NotFound(format!("no department {path:?}")));
            }
        }
        Ok(found)
    }

    pub(super) fn current_policy(&self) -> Result<&Policy> {
        self.org
            .as_ref()
            .and_then(|o| o.current.as_ref())
            .map(Verified::policy)
            .ok_or_else(|| Error::NotFound("no org policy on this node (`outpost org follow`)".into()))
    }

    /// What a person may be called by in an `@mention`: for each org member
    /// with devices, their member id, their name (when it has no blanks) and
    /// their e-mail's local part, lower case. Empty without an org.
    pub(in crate::core) fn mention_aliases(&self) -> Vec<(Vec<String>, Vec<DeviceId>)> {
        let Ok(policy) = self.current_policy() else {
            return Vec::new();
        };
        policy
            .members
            .iter()
            .filter(|m| !m.devices.is_empty())
            .map(|m| {
                let mut aliases = vec![m.id.to_lowercase()];
                if !m.name.trim().is_empty() && !m.name.contains(char::is_whitespace) {
                    aliases.push(m.name.to_lowercase());
                }
                if let Some((local, _)) = m.email.split_once('@')
                    && !local.is_empty()
                {
                    aliases.push(local.to_lowercase());
                }
                (aliases, m.devices.clone())
            })
            .collect()
    }

    /// Which departments this device may see: as the member whose devices
    /// include it, and as an admin when it holds one of the version's admin keys.
    fn visible(&self, policy: &Policy) -> Vec<bool> {
        let viewer = policy.members.iter().find(|m| m.devices.contains(&self.me));
        policy.visible_departments(viewer, self.holds_admin_key())
    }

    fn directory(&self, matches: impl Fn(&crate::org::body::OrgMember, &str) -> bool) -> Result<Vec<DirEntry>> {
        let policy = self.current_policy()?;
        let visible = self.visible(policy);
        let mut paths: BTreeMap<u32, String> = BTreeMap::new();
        let mut out = Vec::new();
        for m in &policy.members {
            if !visible.get(m.department as usize).copied().unwrap_or(false) {
                continue;
            }
            let path = paths.entry(m.department).or_insert_with(|| policy.path(m.department));
            if matches(m, path) {
                out.push(DirEntry {
                    id: m.id.clone(),
                    name: m.name.clone(),
                    department: path.clone(),
                    title: m.title.clone(),
                    email: m.email.clone(),
                    phone: m.phone.clone(),
                    head: m.head,
                    status: m.status,
                });
                if out.len() >= MAX_DIR_RESULTS {
                    break;
                }
            }
        }
        Ok(out)
    }
}
