//! Enrollment on the admin's side: invite tickets issued here, and the
//! requests that come with them (see `crate::org::enroll`); and on an
//! anchor's side: requests held, durably, for admin devices that are offline.

use super::*;
use crate::org::enroll::{EnrollOutcome, EnrollRequest, EnrollTicket, INVITE_TTL_MS, MAX_OPEN_INVITES};

/// Enrollment requests an anchor holds in all, and for one admin device.
const MAX_HELD: usize = 1024;
const MAX_HELD_PER_ADMIN: usize = 64;

/// A request this anchor holds for an offline admin device (`held/{device}`
/// in `org-1`, one per requesting device).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Held {
    request: EnrollRequest,
    since_ms: u64,
}

/// An invite this device issued (`invite/{id}` in `org-1`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Invite {
    member: String,
    secret: [u8; 16],
    expires_ms: u64,
    /// The device that enrolled with it: an invite is good once.
    used_by: Option<DeviceId>,
}

impl Core {
    /// An invite for `member`: a ticket the new device enrolls with, good once,
    /// for [`INVITE_TTL_MS`]. This device must hold one of the current
    /// version's admin keys, and the policy must be fresh (an expired one grants
    /// nothing new).
    pub(in crate::core) fn org_invite(
        &mut self,
        tx: &mut Txn,
        member: &str,
        addrs: Vec<String>,
        anchors: Vec<String>,
    ) -> store::Result<Result<EnrollTicket>> {
        let current = match self.org_admin_check() {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        let policy = current.policy();
        if !policy.members.iter().any(|m| m.id == member) {
            return Ok(Err(Error::NotFound(format!(
                "no member {member:?} in the policy (`outpost dir search` finds members; `outpost org import` adds them)"
            ))));
        }
        let now = crate::clock::now_ms();
        let org = self.org.as_mut().expect("checked above");
        let stale: Vec<[u8; 16]> = org
            .invites
            .iter()
            .filter(|(_, i)| i.expires_ms <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            org.invites.remove(&id);
            tx.remove_org(&invite_key(&id))?;
        }
        if org.invites.len() >= MAX_OPEN_INVITES {
            return Ok(Err(Error::Invalid(format!(
                "{MAX_OPEN_INVITES} invites are open; wait for some to be used or to expire"
            ))));
        }
        let ticket = EnrollTicket {
            org: org.id,
            member: member.to_string(),
            admin: self.me,
            addrs,
            secret: rand::random(),
            expires_ms: now + INVITE_TTL_MS,
            anchors,
        };
        let invite = Invite {
            member: member.to_string(),
            secret: ticket.secret,
            expires_ms: ticket.expires_ms,
            used_by: None,
        };
        let id = invite_id(&ticket.secret);
        tx.put_org(
            &invite_key(&id),
            &postcard::to_stdvec(&invite).expect("invites serialize"),
        )?;
        org.invites.insert(id, invite);
        info!(member, "issued an org invite");
        Ok(Ok(ticket))
    }

    /// The current version, when this device may grant in the org's name: it
    /// holds one of the version's admin keys and the version has not expired.
    fn org_admin_check(&self) -> Result<Verified> {
        let current = self
            .org
            .as_ref()
            .and_then(|o| o.current.clone())
            .ok_or_else(|| Error::NotFound("this node has no published org policy".into()))?;
        if !self.holds_admin_key() {
            return Err(Error::NotAdmin("this device holds none of the org's admin keys".into()));
        }
        if self.org_degraded() {
            return Err(Error::NotAdmin(
                "the org policy has expired: nothing new is granted until a fresh version is published".into(),
            ));
        }
        Ok(current)
    }

    /// A device asks to enroll with an invite this device issued: the proof is
    /// checked, the invite used up, and the next version proposed with the
    /// device listed under the member (published at once when this admin's
    /// signature is enough).
    pub(in crate::core) fn take_enroll(
        &mut self,
        tx: &mut Txn,
        from: DeviceId,
        request: EnrollRequest,
        effects: &mut Effects,
    ) -> store::Result<EnrollOutcome> {
        let refuse = |why: &str| EnrollOutcome::Refused(why.to_string());
        if let Err(e) = self.org_admin_check() {
            return Ok(refuse(&e.to_string()));
        }
        let Some(org) = self.org.as_ref() else {
            return Ok(refuse("this node follows no org"));
        };
        if request.org != org.id {
            return Ok(refuse("the ticket is for another org"));
        }
        if request.cert.device != from || !request.cert.verify() {
            return Ok(refuse("the request's certificate is not the requesting device's"));
        }
        if self.revoked_by_org().contains(&from) {
            return Ok(refuse("this device is revoked by the org"));
        }
        let now = crate::clock::now_ms();
        let found = org
            .invites
            .iter()
            .find(|(_, i)| i.member == request.member && crate::org::enroll::proof(&i.secret, &from) == request.proof);
        let Some((id, invite)) = found.map(|(id, i)| (*id, i.clone())) else {
            return Ok(refuse("no such invite: the ticket is unknown here or was withdrawn"));
        };
        let current_version = self
            .org
            .as_ref()
            .and_then(|o| o.current.as_ref())
            .map_or(0, |c| c.header.version);
        let listed = self.current_policy().is_ok_and(|p| {
            p.members
                .iter()
                .any(|m| m.id == invite.member && m.devices.contains(&from))
        });
        match invite.used_by {
            Some(device) if device != from => return Ok(refuse("the invite was used already")),
            // The same device asking again (a lost answer): nothing new is proposed.
            Some(_) if listed => {
                return Ok(EnrollOutcome::Accepted {
                    version: current_version,
                    published: true,
                });
            }
            Some(_) => {
                return Ok(EnrollOutcome::Accepted {
                    version: current_version + 1,
                    published: false,
                });
            }
            None if invite.expires_ms <= now => return Ok(refuse("the invite has expired")),
            None => {}
        }
        let proposal = Proposal {
            devices: vec![(invite.member.clone(), from)],
            ..Proposal::default()
        };
        if let Err(e) = self.org_propose(tx, proposal)? {
            return Ok(refuse(&format!("the admin's node could not propose the version: {e}")));
        }
        let used = Invite {
            used_by: Some(from),
            ..invite
        };
        tx.put_org(
            &invite_key(&id),
            &postcard::to_stdvec(&used).expect("invites serialize"),
        )?;
        if let Some(org) = self.org.as_mut() {
            org.invites.insert(id, used);
        }
        self.learn_enrolled(tx, request.cert)?;
        // Publish at once when this admin's signature is enough.
        let next = self.org.as_ref().and_then(|o| {
            let current = o.current.as_ref()?;
            o.drafts
                .iter()
                .find(|(_, d)| {
                    d.header().is_ok_and(|h| h.version == current.header.version + 1)
                        && Signed::clone(d).verify_next(current).is_ok()
                })
                .map(|(id, _)| data_encoding::HEXLOWER.encode(id))
        });
        let version = self
            .org
            .as_ref()
            .and_then(|o| o.current.as_ref())
            .map_or(0, |c| c.header.version)
            + 1;
        let published = match next {
            Some(draft) => self.org_publish(tx, &draft, effects)?.is_ok(),
            None => false,
        };
        info!(member = %request.member, device = %from.fmt_short(), version, published, "enrolled a device");
        Ok(EnrollOutcome::Accepted { version, published })
    }

    /// As an anchor: holds `request` from `from` for its admin device, durably,
    /// until that device answers it. The anchor cannot check the proof (only
    /// the admin device knows the secret), so it bounds what it holds: one per
    /// requesting device, [`MAX_HELD_PER_ADMIN`] per admin device,
    /// [`MAX_HELD`] in all, none older than an invite lives.
    pub(in crate::core) fn hold_enroll(
        &mut self,
        tx: &mut Txn,
        from: DeviceId,
        request: EnrollRequest,
    ) -> store::Result<EnrollOutcome> {
        let refuse = |why: &str| Ok(EnrollOutcome::Refused(why.into()));
        if request.cert.device != from || !request.cert.verify() {
            return refuse("the request's certificate is not the requesting device's");
        }
        if request.member.len() > crate::org::body::MAX_FIELD_BYTES {
            return refuse("the member id is too long");
        }
        if self.revoked_by_org().contains(&from) {
            return refuse("this device is revoked by the org");
        }
        let Some(org) = self.org.as_mut().filter(|o| o.id == request.org) else {
            return refuse("this anchor does not serve the ticket's org");
        };
        let now = crate::clock::now_ms();
        let stale: Vec<DeviceId> = org
            .held
            .iter()
            .filter(|(d, h)| **d == from || h.since_ms + INVITE_TTL_MS <= now)
            .map(|(d, _)| *d)
            .collect();
        for device in stale {
            org.held.remove(&device);
            tx.remove_org(&held_key(&device))?;
        }
        let for_admin = org.held.values().filter(|h| h.request.admin == request.admin).count();
        if org.held.len() >= MAX_HELD || for_admin >= MAX_HELD_PER_ADMIN {
            return refuse("the anchor holds too many requests; try again later");
        }
        info!(admin = %request.admin.fmt_short(), device = %from.fmt_short(), "holding an enrollment request for an offline admin device");
        let held = Held { request, since_ms: now };
        tx.put_org(
            &held_key(&from),
            &postcard::to_stdvec(&held).expect("requests serialize"),
        )?;
        org.held.insert(from, held);
        Ok(EnrollOutcome::Queued { anchor: self.me })
    }

    /// The requests held for `admin`, none older than an invite lives.
    pub(in crate::core) fn held_for(&self, admin: &DeviceId) -> Vec<EnrollRequest> {
        let now = crate::clock::now_ms();
        self.org
            .iter()
            .flat_map(|o| o.held.values())
            .filter(|h| h.request.admin == *admin && h.since_ms + INVITE_TTL_MS > now)
            .map(|h| h.request.clone())
            .collect()
    }

    /// The admin device answered the request held for `device` with `proof`:
    /// it goes (not a newer request from that device, with another proof).
    pub(in crate::core) fn release_held(
        &mut self,
        tx: &mut Txn,
        device: DeviceId,
        proof: [u8; 32],
    ) -> store::Result<()> {
        if let Some(org) = self.org.as_mut()
            && org.held.get(&device).is_some_and(|h| h.request.proof == proof)
        {
            org.held.remove(&device);
            tx.remove_org(&held_key(&device))?;
        }
        Ok(())
    }

    /// Keeps an enrolled device's certificate, so spaces can name it by id.
    fn learn_enrolled(&mut self, tx: &mut Txn, cert: crate::identity::DeviceCert) -> store::Result<()> {
        if self.certs.get(&cert.device) != Some(&cert) {
            tx.put_cert(&cert.device, &postcard::to_stdvec(&cert).expect("certs serialize"))?;
            self.certs.insert(cert.device, cert);
        }
        Ok(())
    }
}

fn invite_id(secret: &[u8; 16]) -> [u8; 16] {
    crate::ids::derive16("outpost/org-invite-id/v1", secret)
}

fn invite_key(id: &[u8; 16]) -> String {
    format!("invite/{}", data_encoding::HEXLOWER.encode(id))
}

fn held_key(device: &DeviceId) -> String {
    format!("held/{device}")
}

/// A held request from its stored row (`held/{device}`), if it decodes.
pub(super) fn held_row(key: &str, value: &[u8]) -> Option<(DeviceId, Held)> {
    let device = key.strip_prefix("held/")?.parse().ok()?;
    Some((device, postcard::from_bytes(value).ok()?))
}
