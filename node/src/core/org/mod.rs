//! The org this node follows: its highest verified policy version, the drafts
//! being signed, and the exchange with peers (`org init|follow|propose|sign|
//! publish|show`, and [`PolicyFrame`]s on every connection).
//!
//! Every version is verified against the one before it (see `crate::org`); the
//! highest verified version is durable before anything depends on it, so a
//! restart never rolls back. What the policy makes this node do is in
//! `enforce`, the directory in `directory`, enrollment in `enroll`.

mod departments;
mod directory;
mod enforce;
mod enroll;
mod succession;

use self::enroll::{Held, Invite};
pub use self::{
    directory::{DirEntry, MAX_DIR_RESULTS},
    enforce::OrgNet,
};
use super::*;
use crate::org::{
    AdminKey, AdminKeys, Header, MAX_DRAFTS, MAX_VERSIONS_PER_FRAME, OrgId, Policy, PolicyError, PolicyFrame, Signed,
    Verified,
    body::{MemberStatus, Offboarding, OrgRole},
};

/// Default validity of a version: long, so branches offline for weeks keep
/// working (design-rationale D2).
pub const DEFAULT_EXPIRY_DAYS: u64 = 180;
const DAY_MS: u64 = 86_400_000;
/// Largest version made here: one version, with room for its signatures and
/// the frame around it, fits one sync frame.
const MAX_VERSION_BYTES: usize = crate::sync::MAX_FRAME_BYTES - (64 << 10);

/// What this node knows of its org.
#[derive(Debug)]
pub(super) struct OrgState {
    pub(super) id: OrgId,
    pub(super) current: Option<Verified>,
    pub(super) drafts: BTreeMap<[u8; 32], Signed>,
    /// Evidence of a fork: two different versions with one number.
    pub(super) fork: Option<String>,
    /// Invites this (admin) device issued, by ticket id.
    invites: BTreeMap<[u8; 16], Invite>,
    /// Every verified version that offboards members: its header hash and
    /// offboardings, which spaces' `Succession` operations name.
    pub(super) successions: BTreeMap<u64, ([u8; 32], Vec<Offboarding>)>,
    /// As an anchor: enrollment requests held for offline admin devices, by
    /// requesting device.
    held: BTreeMap<DeviceId, Held>,
}

impl OrgState {
    /// An org followed, with no version yet.
    fn new(id: OrgId) -> Self {
        Self {
            id,
            current: None,
            drafts: BTreeMap::new(),
            fork: None,
            invites: BTreeMap::new(),
            successions: BTreeMap::new(),
            held: BTreeMap::new(),
        }
    }

    /// Makes `verified` the current version, noting its offboardings.
    fn advance(&mut self, verified: Verified) {
        let offboardings = &verified.policy().offboardings;
        if !offboardings.is_empty() {
            self.successions
                .insert(verified.header.version, (verified.hash, offboardings.clone()));
        }
        self.current = Some(verified);
    }
}

/// An org command from the API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrgCommand {
    /// Create an org with this device's admin key and `admins`, `threshold` of
    /// which sign every version.
    Init {
        name: String,
        admins: Vec<AdminKey>,
        threshold: u16,
        expires_days: Option<u64>,
    },
    /// Follow the org `org` (its id commits to its first admins).
    Follow {
        org: OrgId,
    },
    /// Propose the next version.
    Propose(Box<Proposal>),
    Sign {
        draft: String,
    },
    Publish {
        draft: String,
    },
}

/// The changes a proposal makes to the current version.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Proposal {
    /// Only compute what would change (`diff`); store and sign nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// A new org chart (`org import`): departments and members, replacing
    /// the current ones; members keep their devices, role and status by id.
    pub chart: Option<crate::org::import::Chart>,
    /// Department paths to hide from everyone outside them except admins.
    #[serde(default)]
    pub hide: Vec<String>,
    /// Department paths to show again.
    #[serde(default)]
    pub unhide: Vec<String>,
    /// Devices to list under members (member id, device): what enrollment approves.
    #[serde(default)]
    pub devices: Vec<(String, DeviceId)>,
    /// Members to make super admins of the directory (they see hidden departments).
    #[serde(default)]
    pub super_admins: Vec<String>,
    /// Members to make admins of a department's subtree: (member id, path).
    #[serde(default)]
    pub department_admins: Vec<(String, String)>,
    /// Members to make plain members again (no admin role).
    #[serde(default)]
    pub plain_members: Vec<String>,
    /// Whether members below admin may create spaces.
    pub members_create_spaces: Option<bool>,
    /// Whether members may invite devices outside the org into spaces.
    pub invite_outsiders: Option<bool>,
    pub name: Option<String>,
    #[serde(default)]
    pub add_admins: Vec<AdminKey>,
    #[serde(default)]
    pub remove_admins: Vec<AdminKey>,
    pub threshold: Option<u16>,
    #[serde(default)]
    pub revoke: Vec<DeviceId>,
    /// Devices to name as the org's anchors.
    #[serde(default)]
    pub add_anchors: Vec<DeviceId>,
    #[serde(default)]
    pub remove_anchors: Vec<DeviceId>,
    /// Members to offboard, each with its successor.
    #[serde(default)]
    pub offboard: Vec<(String, String)>,
    pub expires_days: Option<u64>,
}

/// The org as `org show` prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrgView {
    pub org: OrgId,
    /// Highest verified version (0: none yet).
    pub version: u64,
    pub name: Option<String>,
    pub issued_at_ms: Option<u64>,
    pub expires_at_ms: Option<u64>,
    /// Past its expiry: the node keeps working and applies revocations, but
    /// grants nothing new until a fresh version arrives.
    pub degraded: bool,
    pub fork: Option<String>,
    pub admins: Vec<AdminKey>,
    pub threshold: u16,
    pub departments: usize,
    pub members: usize,
    pub revoked: Vec<DeviceId>,
    #[serde(default)]
    pub anchors: Vec<DeviceId>,
    /// This device's admin key, if it holds one.
    pub admin_key: Option<AdminKey>,
    pub drafts: Vec<DraftView>,
    /// A dry run's answer: what the proposal would change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<Vec<String>>,
}

/// A draft version and how far its signing is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DraftView {
    pub id: String,
    pub version: u64,
    pub signatures: usize,
    pub needed: usize,
    /// Enough signatures to publish.
    pub ready: bool,
    /// What changes against the current version, for people.
    pub diff: Vec<String>,
}

impl Core {
    /// Runs one org command; the outer error aborts the batch.
    pub(super) fn org_command(
        &mut self,
        tx: &mut Txn,
        cmd: OrgCommand,
        effects: &mut Effects,
    ) -> store::Result<Result<OrgView>> {
        let outcome = match cmd {
            OrgCommand::Init {
                name,
                admins,
                threshold,
                expires_days,
            } => self.org_init(tx, name, admins, threshold, expires_days)?,
            OrgCommand::Follow { org } => self.org_follow(tx, org)?,
            OrgCommand::Propose(p) if p.dry_run => {
                let diff = self.proposed_policy(&p).map(|(old, new)| old.policy().diff(&new));
                return Ok(diff.and_then(|diff| {
                    let mut view = self.org_view()?;
                    view.dry_run = Some(diff);
                    Ok(view)
                }));
            }
            OrgCommand::Propose(p) => self.org_propose(tx, *p)?,
            OrgCommand::Sign { draft } => self.org_sign(tx, &draft)?,
            OrgCommand::Publish { draft } => self.org_publish(tx, &draft, effects)?,
        };
        Ok(outcome.and_then(|()| self.org_view()))
    }

    /// Whether this device holds one of the current version's admin keys.
    fn holds_admin_key(&self) -> bool {
        self.admin_keys().ok().flatten().is_some_and(|k| {
            self.org
                .as_ref()
                .and_then(|o| o.current.as_ref())
                .is_some_and(|c| c.header.admins.contains(&k.public()))
        })
    }

    fn admin_keys(&self) -> Result<Option<AdminKeys>> {
        let Some(home) = &self.home else {
            return Ok(None);
        };
        AdminKeys::load(home).map_err(|e| Error::Invalid(format!("the admin key does not load: {e}")))
    }

    fn org_init(
        &mut self,
        tx: &mut Txn,
        name: String,
        others: Vec<AdminKey>,
        threshold: u16,
        expires_days: Option<u64>,
    ) -> store::Result<Result<()>> {
        if let Some(org) = &self.org {
            return Ok(Err(Error::Invalid(format!("this node already follows org {}", org.id))));
        }
        let Some(home) = self.home.clone() else {
            return Ok(Err(Error::Invalid("this node has no home for an admin key".into())));
        };
        let mine = match AdminKeys::load_or_create(&home) {
            Ok(k) => k,
            Err(e) => return Ok(Err(Error::Invalid(format!("the admin key: {e}")))),
        };
        let mut admins = others;
        admins.push(mine.public());
        admins.sort();
        admins.dedup();
        if threshold == 0 || usize::from(threshold) > admins.len() {
            return Ok(Err(Error::Invalid(format!(
                "a threshold of {threshold} does not fit {} admin keys: it is 1 to {}",
                admins.len(),
                admins.len()
            ))));
        }
        let body = Policy {
            name,
            ..Policy::default()
        };
        if let Err(why) = body.check() {
            return Ok(Err(Error::Invalid(why)));
        }
        let body = body.encode();
        let now = crate::clock::now_ms();
        let expires = now + expires_days.unwrap_or(DEFAULT_EXPIRY_DAYS).max(1) * DAY_MS;
        let header = Header::first(admins, threshold, now, expires, &body);
        let org = header.org;
        let mut draft = Signed::new(&header, body);
        draft.sign(&mine);
        tx.put_org("org", &org.0)?;
        self.org = Some(OrgState::new(org));
        self.store_draft(tx, draft, 1)?;
        info!(org = %org.fmt_short(), "created an org");
        Ok(Ok(()))
    }

    fn org_follow(&mut self, tx: &mut Txn, org: OrgId) -> store::Result<Result<()>> {
        match &self.org {
            Some(held) if held.id == org => return Ok(Ok(())),
            Some(held) => {
                return Ok(Err(Error::Invalid(format!(
                    "this node already follows org {}",
                    held.id
                ))));
            }
            None => {}
        }
        tx.put_org("org", &org.0)?;
        self.org = Some(OrgState::new(org));
        info!(org = %org.fmt_short(), "following an org; its policy arrives from any peer that holds it");
        Ok(Ok(()))
    }

    /// The current version and the policy `p` makes of it, checked.
    fn proposed_policy(&self, p: &Proposal) -> Result<(Verified, Policy)> {
        let Some(current) = self.org.as_ref().and_then(|o| o.current.clone()) else {
            return Err(Error::Invalid(
                "no published policy version yet: publish version 1 first (`outpost org publish`)".into(),
            ));
        };
        let mut policy = current.policy().clone();
        // Offboardings are statements of the version that makes them.
        policy.offboardings.clear();
        if let Some(chart) = &p.chart {
            policy = chart.apply(&policy);
        }
        if let Some(name) = &p.name {
            policy.name.clone_from(name);
        }
        let find_dept = |policy: &Policy, path: &str| {
            policy.department(path).ok_or_else(|| {
                Error::Invalid(format!(
                    "no department {path:?} in the policy (`outpost dir dept` lists them)"
                ))
            })
        };
        for (paths, hidden) in [(&p.hide, true), (&p.unhide, false)] {
            for path in paths {
                let i = find_dept(&policy, path)?;
                policy.departments[i as usize].hidden = hidden;
            }
        }
        for (member, device) in &p.devices {
            let m = policy
                .members
                .iter_mut()
                .find(|m| m.id == *member)
                .ok_or_else(|| Error::Invalid(format!("no member {member:?} in the policy")))?;
            if !m.devices.contains(device) {
                m.devices.push(*device);
            }
        }
        let roles = p
            .super_admins
            .iter()
            .map(|m| Ok((m, OrgRole::SuperAdmin)))
            .chain(
                p.department_admins
                    .iter()
                    .map(|(m, path)| Ok((m, OrgRole::DepartmentAdmin(find_dept(&policy, path)?)))),
            )
            .chain(p.plain_members.iter().map(|m| Ok((m, OrgRole::Member))))
            .collect::<Result<Vec<_>>>()?;
        for (member, role) in roles {
            let m = policy
                .members
                .iter_mut()
                .find(|m| m.id == *member)
                .ok_or_else(|| Error::Invalid(format!("no member {member:?} in the policy")))?;
            m.role = role;
        }
        for d in &p.revoke {
            if !policy.revoked.contains(d) {
                policy.revoked.push(*d);
            }
        }
        for (member, successor) in &p.offboard {
            let offboarding = self.offboarding(&mut policy, member, successor)?;
            policy.offboardings.push(offboarding);
        }
        // A revoked anchor stops being one.
        policy
            .anchors
            .retain(|d| !p.remove_anchors.contains(d) && !policy.revoked.contains(d));
        for d in &p.add_anchors {
            if !policy.anchors.contains(d) {
                policy.anchors.push(*d);
            }
        }
        if let Some(on) = p.members_create_spaces {
            policy.rules.members_create_spaces = on;
        }
        if let Some(on) = p.invite_outsiders {
            policy.rules.invite_outsiders = on;
        }
        policy.check().map_err(Error::Invalid)?;
        Ok((current, policy))
    }

    /// Offboards `member` in `policy` (its devices revoked) with `successor`,
    /// whose devices' certificates this node must have met.
    fn offboarding(&self, policy: &mut Policy, member: &str, successor: &str) -> Result<Offboarding> {
        let unknown = |id: &str| {
            Error::Invalid(format!(
                "no member {id:?} in the policy (`outpost dir search` finds them)"
            ))
        };
        let heir = policy
            .members
            .iter()
            .find(|m| m.id == successor)
            .ok_or_else(|| unknown(successor))?;
        if heir.status != MemberStatus::Active || member == successor {
            return Err(Error::Invalid(format!(
                "the successor {successor:?} must be another member, still active"
            )));
        }
        let successors = heir
            .devices
            .iter()
            .filter(|d| !policy.revoked.contains(d))
            .map(|d| {
                self.certs.get(d).copied().ok_or_else(|| {
                    Error::Invalid(format!(
                        "this node has never met device {} of the successor {successor:?}: run this where that device has connected (or enroll it here)",
                        d.fmt_short()
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if successors.is_empty() {
            return Err(Error::Invalid(format!(
                "the successor {successor:?} has no device in the policy: enroll one first (`outpost org invite {successor}`)"
            )));
        }
        let leaving = policy
            .members
            .iter_mut()
            .find(|m| m.id == member)
            .ok_or_else(|| unknown(member))?;
        if leaving.status == MemberStatus::Offboarded {
            return Err(Error::Invalid(format!("member {member:?} is already offboarded")));
        }
        leaving.status = MemberStatus::Offboarded;
        let devices = leaving.devices.clone();
        for d in &devices {
            if !policy.revoked.contains(d) {
                policy.revoked.push(*d);
            }
        }
        Ok(Offboarding {
            member: member.into(),
            successor: successor.into(),
            leaving: devices,
            successors,
        })
    }

    fn org_propose(&mut self, tx: &mut Txn, p: Proposal) -> store::Result<Result<()>> {
        let (current, policy) = match self.proposed_policy(&p) {
            Ok(x) => x,
            Err(e) => return Ok(Err(e)),
        };
        let mut admins = current.header.admins.clone();
        admins.retain(|a| !p.remove_admins.contains(a));
        admins.extend(p.add_admins);
        admins.sort();
        admins.dedup();
        let threshold = p.threshold.unwrap_or(current.header.threshold);
        if admins.is_empty() || threshold == 0 || usize::from(threshold) > admins.len() {
            return Ok(Err(Error::Invalid(format!(
                "{} admin keys with a threshold of {threshold}: the threshold is 1 to the number of admins",
                admins.len()
            ))));
        }
        let now = crate::clock::now_ms().max(current.header.issued_at_ms + 1);
        let days = p.expires_days.unwrap_or(DEFAULT_EXPIRY_DAYS).max(1);
        let body = policy.encode();
        let header = Header::next(&current, admins, threshold, now, now + days * DAY_MS, &body);
        let mut draft = Signed::new(&header, body);
        // A version travels whole in one sync frame until bodies are chunked
        // (design-rationale D5): refuse one that could not reach anyone.
        let size = postcard::to_stdvec(&draft).map_or(usize::MAX, |b| b.len());
        if size > MAX_VERSION_BYTES {
            return Ok(Err(Error::Invalid(format!(
                "the new version is {:.1} MB; a version travels in one {} MB sync frame in this build (about 50,000 members with short fields fit)",
                size as f64 / 1e6,
                MAX_VERSION_BYTES / 1_000_000
            ))));
        }
        match self.sign_as_admin(&mut draft, &current, &header)? {
            Ok(()) => {}
            Err(e) => return Ok(Err(e)),
        }
        if !self.store_draft(tx, draft, header.version)? {
            return Ok(Err(Error::Invalid(format!(
                "{MAX_DRAFTS} drafts are waiting already: publish them or let a new version replace them"
            ))));
        }
        Ok(Ok(()))
    }

    /// Adds this device's admin signature to `draft` (of `header`, following
    /// `prev`), once per version: an admin never signs two drafts for one version,
    /// so with a threshold above half the admins no fork can be signed.
    fn sign_as_admin(&self, draft: &mut Signed, prev: &Verified, header: &Header) -> store::Result<Result<()>> {
        let keys = match self.admin_keys() {
            Ok(Some(k)) => k,
            Ok(None) => {
                return Ok(Err(Error::NotAdmin(
                    "this device holds no admin key (`outpost org keygen` makes one; the admins add it)".into(),
                )));
            }
            Err(e) => return Ok(Err(e)),
        };
        let me = keys.public();
        let proposing = draft.signatures.iter().all(|s| !prev.header.admins.contains(&s.key));
        if proposing && !prev.header.admins.contains(&me) {
            return Ok(Err(Error::NotAdmin(format!(
                "admin key {me} is not an admin of version {}: a draft starts with a current admin's signature",
                prev.header.version
            ))));
        }
        if !prev.header.admins.contains(&me) && !header.admins.contains(&me) {
            return Ok(Err(Error::NotAdmin(format!(
                "admin key {me} is not an admin of version {} or of the draft",
                prev.header.version
            ))));
        }
        if let Err(e) = self.check_signed_for(header.version, draft) {
            return Ok(Err(e));
        }
        draft.sign(&keys);
        Ok(Ok(()))
    }

    fn check_signed_for(&self, version: u64, draft: &Signed) -> Result<()> {
        let key = format!("signed-for/{version:020}");
        match self.store.org_row(&key).map_err(|e| Error::Store(Arc::new(e)))? {
            Some(id) if id != draft.hash() => Err(Error::NotAdmin(format!(
                "this admin key already signed another draft for version {version}; signing a second would allow a fork"
            ))),
            _ => Ok(()),
        }
    }

    fn org_sign(&mut self, tx: &mut Txn, draft: &str) -> store::Result<Result<()>> {
        let (id, mut signed) = match self.find_draft(draft) {
            Ok(found) => found,
            Err(e) => return Ok(Err(e)),
        };
        let header = match signed.header() {
            Ok(h) => h,
            Err(e) => return Ok(Err(Error::Invalid(e.to_string()))),
        };
        let outcome = match self.org.as_ref().and_then(|o| o.current.clone()) {
            Some(current) => self.sign_as_admin(&mut signed, &current, &header)?,
            // Version 1: its own admins sign it.
            None => match self.admin_keys() {
                Ok(Some(keys)) if header.admins.contains(&keys.public()) => {
                    signed.sign(&keys);
                    Ok(())
                }
                Ok(_) => Err(Error::NotAdmin("this device holds none of the org's admin keys".into())),
                Err(e) => Err(e),
            },
        };
        if let Err(e) = outcome {
            return Ok(Err(e));
        }
        let _ = id;
        self.store_draft(tx, signed, header.version)?;
        Ok(Ok(()))
    }

    fn org_publish(&mut self, tx: &mut Txn, draft: &str, effects: &mut Effects) -> store::Result<Result<()>> {
        let (_, signed) = match self.find_draft(draft) {
            Ok(found) => found,
            Err(e) => return Ok(Err(e)),
        };
        match self.accept_version(tx, signed)? {
            Ok(v) => {
                info!(version = v, "published a policy version");
                self.policy_advanced(tx, effects)?;
                Ok(Ok(()))
            }
            Err(e) => Ok(Err(Error::Invalid(format!("the draft cannot be published: {e}")))),
        }
    }

    /// Verifies `signed` as the next version and makes it current (durably);
    /// the caller then applies it ([`Core::policy_advanced`]).
    fn accept_version(&mut self, tx: &mut Txn, signed: Signed) -> store::Result<std::result::Result<u64, PolicyError>> {
        let Some(org) = self.org.as_ref() else {
            return Ok(Err(PolicyError::WrongOrg));
        };
        let candidate = signed.clone();
        let verified = match &org.current {
            None => signed.verify_first(&org.id),
            Some(current) => signed.verify_next(current),
        };
        let verified = match verified {
            Ok(v) => v,
            Err(PolicyError::Fork { version }) => {
                // A fork only if the other version is as well signed as the one
                // held: anyone can send an unsigned header with a used number.
                if self.signed_as_version(candidate, version)? {
                    let why = format!(
                        "two different policy versions {version} are signed by the admins: an admin key may be compromised"
                    );
                    warn!(%why, "policy fork");
                    if let Some(org) = self.org.as_mut() {
                        org.fork = Some(why);
                    }
                }
                return Ok(Err(PolicyError::Fork { version }));
            }
            Err(e) => return Ok(Err(e)),
        };
        let Some(org) = self.org.as_mut() else {
            return Ok(Err(PolicyError::WrongOrg));
        };
        let version = verified.header.version;
        tx.put_org(
            &format!("version/{version:020}"),
            &postcard::to_stdvec(&verified.signed).expect("versions serialize"),
        )?;
        let stale: Vec<[u8; 32]> = org
            .drafts
            .iter()
            .filter(|(_, d)| d.header().is_ok_and(|h| h.version <= version))
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            org.drafts.remove(&id);
            tx.remove_org(&draft_key(&id))?;
        }
        org.advance(verified);
        self.policy_changed = true;
        Ok(Ok(version))
    }

    /// After new versions were accepted (once per frame or publication): the
    /// successions that waited for them are judged, then the policy is applied
    /// to every space (so a node that just took another member's succession
    /// does not make its own).
    fn policy_advanced(&mut self, tx: &mut Txn, effects: &mut Effects) -> store::Result<()> {
        self.retry_successions(tx, effects)?;
        let spaces: BTreeSet<SpaceId> = self.spaces.keys().copied().collect();
        self.enforce_policy(tx, &spaces, effects)
    }

    /// Keeps a draft, merging the signatures of a copy held; tells peers when
    /// anything changed (and only then: two nodes holding the same draft stop).
    /// Keeps only valid signatures by admins of the current version or of the
    /// draft's own admin set, so nobody can plant a bad signature under an
    /// admin's key (which would block that admin's real one) or grow a draft.
    /// Returns whether the draft is held.
    /// Whether `candidate` verifies as version `version` of this org's chain
    /// (against the stored version before it).
    fn signed_as_version(&self, candidate: Signed, version: u64) -> store::Result<bool> {
        let Some(org) = &self.org else {
            return Ok(false);
        };
        if version == 1 {
            return Ok(candidate.verify_first(&org.id).is_ok());
        }
        let Some(raw) = self.store.org_row(&format!("version/{:020}", version - 1))? else {
            return Ok(false);
        };
        let Ok(previous) = postcard::from_bytes::<Signed>(&raw) else {
            return Ok(false);
        };
        // The stored chain was verified when stored; rebuild the verified form.
        let Ok(previous) = previous.reverified() else {
            return Ok(false);
        };
        Ok(candidate.verify_next(&previous).is_ok())
    }

    fn store_draft(&mut self, tx: &mut Txn, mut draft: Signed, version: u64) -> store::Result<bool> {
        let id = draft.hash();
        let mine = self.admin_keys().ok().flatten().map(|k| k.public());
        let Some(org) = self.org.as_mut() else {
            return Ok(false);
        };
        let mut allowed = draft.header().map(|h| h.admins).unwrap_or_default();
        if let Some(current) = &org.current {
            allowed.extend(current.header.admins.iter().copied());
        }
        if let Some(held) = org.drafts.get_mut(&id) {
            if !held.merge(&draft, &allowed) {
                return Ok(true);
            }
        } else if org.drafts.len() < MAX_DRAFTS {
            draft.retain_valid(&allowed);
            org.drafts.insert(id, draft);
        } else {
            return Ok(false);
        }
        self.policy_changed = true;
        let Some(org) = self.org.as_mut() else {
            return Ok(false);
        };
        let held = &org.drafts[&id];
        tx.put_org(&draft_key(&id), &postcard::to_stdvec(held).expect("drafts serialize"))?;
        // Remember what this device's admin key signed for the version.
        if let Some(me) = mine
            && held.signatures.iter().any(|s| s.key == me)
        {
            tx.put_org(&format!("signed-for/{version:020}"), &id)?;
        }
        Ok(true)
    }

    fn find_draft(&self, prefix: &str) -> Result<([u8; 32], Signed)> {
        let org = self
            .org
            .as_ref()
            .ok_or_else(|| Error::Invalid("this node follows no org (`outpost org init` or `org follow`)".into()))?;
        let prefix = prefix.trim().to_lowercase();
        let found: Vec<_> = org
            .drafts
            .iter()
            .filter(|(id, _)| data_encoding::HEXLOWER.encode(&id[..]).starts_with(&prefix))
            .collect();
        match found.as_slice() {
            [(id, d)] if !prefix.is_empty() => Ok((**id, (*d).clone())),
            [] => Err(Error::NotFound(format!(
                "no draft {prefix} (`outpost org show` lists them)"
            ))),
            _ => Err(Error::Invalid(format!(
                "{prefix} matches several drafts; give more of its id"
            ))),
        }
    }

    /// The org as `org show` prints it.
    pub(super) fn org_view(&self) -> Result<OrgView> {
        let org = self
            .org
            .as_ref()
            .ok_or_else(|| Error::NotFound("this node follows no org (`outpost org init` or `org follow`)".into()))?;
        let policy = org.current.as_ref().map(Verified::policy);
        let header = org.current.as_ref().map(|c| &c.header);
        let admin_key = self.admin_keys().ok().flatten().map(|k| k.public());
        let now = crate::clock::now_ms();
        let drafts = org
            .drafts
            .iter()
            .filter_map(|(id, d)| {
                let h = d.header().ok()?;
                let (signers, needed) = match &org.current {
                    Some(c) => (c.header.admins.clone(), usize::from(c.header.threshold)),
                    None => (h.admins.clone(), usize::from(h.threshold)),
                };
                let signatures = d.signed_by(&signers);
                let diff = match (&policy, Policy::decode(&d.body)) {
                    (Some(old), Ok(new)) => old.diff(&new),
                    (None, Ok(new)) => vec![format!("create org {:?}", new.name)],
                    (_, Err(e)) => vec![e.to_string()],
                };
                let ready = match &org.current {
                    Some(c) => d.clone().verify_next(c).is_ok(),
                    None => d.clone().verify_first(&org.id).is_ok(),
                };
                Some(DraftView {
                    id: data_encoding::HEXLOWER.encode(&id[..]),
                    version: h.version,
                    signatures,
                    needed,
                    ready,
                    diff,
                })
            })
            .collect();
        Ok(OrgView {
            org: org.id,
            version: header.map_or(0, |h| h.version),
            name: policy.as_ref().map(|p| p.name.clone()),
            issued_at_ms: header.map(|h| h.issued_at_ms),
            expires_at_ms: header.map(|h| h.expires_at_ms),
            degraded: org.current.as_ref().is_some_and(|c| c.expired(now)),
            fork: org.fork.clone(),
            admins: header.map(|h| h.admins.clone()).unwrap_or_default(),
            threshold: header.map_or(0, |h| h.threshold),
            departments: policy.as_ref().map_or(0, |p| p.departments.len()),
            members: policy.as_ref().map_or(0, |p| p.members.len()),
            revoked: policy.map(|p| p.revoked.clone()).unwrap_or_default(),
            anchors: policy.map(|p| p.anchors.clone()).unwrap_or_default(),
            admin_key,
            drafts,
            dry_run: None,
        })
    }

    /// What to tell a peer about the org: our highest version and, past what
    /// it holds (`their`), the versions it lacks, within the frame budget; and
    /// our drafts.
    pub(super) fn policy_frame(&self, their: u64) -> store::Result<Option<PolicyFrame>> {
        let Some(org) = &self.org else {
            return Ok(None);
        };
        let have = org.current.as_ref().map_or(0, |c| c.header.version);
        // Versions first (what the peer lacks), then drafts, all within one frame.
        let mut bytes = 0;
        let mut fits = |signed: &Signed| {
            let size = signed.header.len() + signed.body.len() + 128 * signed.signatures.len();
            bytes += size;
            bytes <= MAX_VERSION_BYTES
        };
        let mut versions = Vec::new();
        for v in their.saturating_add(1)..=have {
            let Some(raw) = self.store.org_row(&format!("version/{v:020}"))? else {
                break;
            };
            let Ok(signed) = postcard::from_bytes::<Signed>(&raw) else {
                break;
            };
            if versions.len() >= MAX_VERSIONS_PER_FRAME || !fits(&signed) {
                break;
            }
            versions.push(signed);
        }
        let drafts = org.drafts.values().filter(|d| fits(d)).cloned().collect();
        Ok(Some(PolicyFrame {
            org: org.id,
            have,
            versions,
            drafts,
        }))
    }

    /// The first frame for a peer: our highest version only (a peer further
    /// behind says so in its answer, and gets the rest).
    pub(super) fn policy_hello(&self) -> store::Result<Option<PolicyFrame>> {
        let have = self
            .org
            .as_ref()
            .and_then(|o| o.current.as_ref())
            .map_or(0, |c| c.header.version);
        self.policy_frame(have.saturating_sub(1))
    }

    /// Takes a peer's frame: versions verified in order (each durable), drafts
    /// for the next version merged. Returns our answer: what the peer lacks.
    pub(super) fn take_policy(
        &mut self,
        tx: &mut Txn,
        from: DeviceId,
        frame: PolicyFrame,
        effects: &mut Effects,
    ) -> store::Result<Option<PolicyFrame>> {
        if self.org.as_ref().is_none_or(|o| o.id != frame.org) {
            return Ok(None);
        }
        let mut advanced = false;
        for signed in frame.versions {
            match self.accept_version(tx, signed)? {
                Ok(version) => {
                    info!(peer = %from.fmt_short(), version, "new policy version");
                    advanced = true;
                }
                Err(PolicyError::Rollback { .. }) => {}
                Err(e) => {
                    warn!(peer = %from.fmt_short(), error = %e, "refused a policy version");
                    break;
                }
            }
        }
        if advanced {
            self.policy_advanced(tx, effects)?;
        }
        // Drafts for the next version, each signed by an admin already (of the
        // current version, or for version 1 of the admin set the org id commits
        // to): nobody else fills the bounded set of drafts.
        let current = self.org.as_ref().and_then(|o| o.current.clone());
        for draft in frame.drafts.into_iter().take(MAX_DRAFTS) {
            let Ok(h) = draft.header() else {
                continue;
            };
            let admitted = match &current {
                Some(c) => h.version == c.header.version + 1 && draft.signed_by(&c.header.admins) > 0,
                None => h.version == 1 && h.derived_org() == frame.org && draft.signed_by(&h.admins) > 0,
            };
            if admitted && h.org == frame.org {
                self.store_draft(tx, draft, h.version)?;
            }
        }
        self.policy_frame(frame.have)
    }
}

fn draft_key(id: &[u8; 32]) -> String {
    format!("draft/{}", data_encoding::HEXLOWER.encode(id))
}

/// Loads the org rows at start-up: the id, every version verified in order
/// (the store is not a trust boundary), the drafts.
pub(super) fn load_org(store: &Store) -> store::Result<Option<OrgState>> {
    let rows = store.org_rows()?;
    let Some(id) = rows
        .iter()
        .find(|(k, _)| k == "org")
        .and_then(|(_, v)| <[u8; 16]>::try_from(v.as_slice()).ok())
        .map(OrgId)
    else {
        return Ok(None);
    };
    let mut state = OrgState::new(id);
    for (key, value) in &rows {
        if let Some((device, held)) = enroll::held_row(key, value) {
            state.held.insert(device, held);
            continue;
        }
        if let Some(id) = key.strip_prefix("invite/") {
            let id = data_encoding::HEXLOWER
                .decode(id.as_bytes())
                .ok()
                .and_then(|b| <[u8; 16]>::try_from(b).ok());
            if let (Some(id), Ok(invite)) = (id, postcard::from_bytes::<Invite>(value)) {
                state.invites.insert(id, invite);
            }
            continue;
        }
        let Ok(signed) = postcard::from_bytes::<Signed>(value) else {
            continue;
        };
        if key.starts_with("version/") {
            let verified = match &state.current {
                None => signed.verify_first(&id),
                Some(c) => signed.verify_next(c),
            };
            match verified {
                Ok(v) => state.advance(v),
                Err(e) => warn!(error = %e, "a stored policy version does not verify; later ones are ignored"),
            }
        } else if key.starts_with("draft/") {
            state.drafts.insert(signed.hash(), signed);
        }
    }
    Ok(Some(state))
}
