//! This user's devices: linking a new one (the primary's side and the joining
//! side, see [`crate::link`]), listing them, revoking one, and adding a user's
//! other devices to a space this device was just added to.

use super::*;
use crate::{
    identity::UserKeys,
    link::{self, JoinOutcome, JoinRequest, JoinResponse, Ticket},
};

/// One device of this user, as recorded here (`user-devices-1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub cert: DeviceCert,
    pub revoked: bool,
    /// When this node recorded it (local clock).
    pub since_ms: u64,
}

/// A device as `device list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceView {
    pub device: DeviceId,
    pub user: UserId,
    /// "this device", "active" or "revoked".
    pub status: String,
    pub since_ms: u64,
}

/// Where a link ticket made here stands (`device link` polls it).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum LinkState {
    /// No device has asked to join yet.
    Waiting {
        expires_ms: u64,
    },
    /// A device asks to join; confirm if it shows the same code.
    Requested {
        device: DeviceId,
        code: String,
    },
    Linked {
        device: DeviceId,
    },
    Expired,
}

/// A ticket made here, until it is used or expires (memory only).
pub(super) struct PendingLink {
    ticket: Ticket,
    /// The joining device's certificate (device half) and the answer it waits for.
    request: Option<(DeviceCert, oneshot::Sender<JoinOutcome>)>,
    linked: Option<DeviceId>,
}

/// What a confirmed link did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Linked {
    pub device: DeviceId,
    /// Spaces the new device was added to.
    pub spaces: Vec<SpaceId>,
}

/// What joining a user did, on the joining device.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Joined {
    pub user: UserId,
    /// The user's other devices.
    pub siblings: Vec<DeviceId>,
}

/// What revoking a device did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Revoked {
    pub device: DeviceId,
    /// Spaces it was removed from (each under a new key epoch).
    pub spaces: Vec<SpaceId>,
}

/// Most link tickets outstanding at once.
const MAX_PENDING_LINKS: usize = 16;

impl Core {
    /// Reads this user's device records (start-up).
    pub(super) fn load_devices(&mut self) -> store::Result<()> {
        self.devices.clear();
        for bytes in self.store.user_devices()? {
            if let Ok(record) = postcard::from_bytes::<DeviceRecord>(&bytes)
                && record.cert.verify()
            {
                self.devices.insert(record.cert.device, record);
            }
        }
        Ok(())
    }

    /// Makes a link ticket naming this device at `addrs`. Only the device holding
    /// the user key can.
    pub(super) fn link_ticket(&mut self, addrs: Vec<String>) -> Result<Ticket> {
        let Some(user) = &self.user_keys else {
            return Err(Error::NotAllowed(
                "this device does not hold its user's key: link new devices from the device that created the user (the first one)".into(),
            ));
        };
        let now = crate::clock::now_ms();
        self.links
            .retain(|_, l| l.ticket.expires_ms > now && l.linked.is_none());
        if self.links.len() >= MAX_PENDING_LINKS {
            return Err(Error::Invalid(format!(
                "{MAX_PENDING_LINKS} link tickets are outstanding; wait for them to expire"
            )));
        }
        let ticket = Ticket {
            user: user.user_id(),
            device: self.me,
            addrs,
            secret: rand::random(),
            expires_ms: now + link::TICKET_TTL_MS,
        };
        self.links.insert(
            ticket.id(),
            PendingLink {
                ticket: ticket.clone(),
                request: None,
                linked: None,
            },
        );
        Ok(ticket)
    }

    pub(super) fn link_state(&self, id: [u8; 16]) -> LinkState {
        let Some(link) = self.links.get(&id) else {
            return LinkState::Expired;
        };
        if let Some(device) = link.linked {
            return LinkState::Linked { device };
        }
        if link.ticket.expires_ms <= crate::clock::now_ms() {
            return LinkState::Expired;
        }
        match &link.request {
            Some((cert, _)) => LinkState::Requested {
                device: cert.device,
                code: link::confirmation_code(&link.ticket.secret, &self.me, &cert.device),
            },
            None => LinkState::Waiting {
                expires_ms: link.ticket.expires_ms,
            },
        }
    }

    /// A device asks to join through a ticket made here (from the network). The
    /// answer waits for the person to confirm ([`Core::confirm_link`]).
    pub(super) fn join_request(&mut self, from: DeviceId, request: JoinRequest, reply: oneshot::Sender<JoinOutcome>) {
        let refuse = |reply: oneshot::Sender<JoinOutcome>, why: &str| {
            let _ = reply.send(JoinOutcome::Refused(why.into()));
        };
        let now = crate::clock::now_ms();
        let Some(link) = self.links.get_mut(&request.ticket) else {
            return refuse(reply, "no such ticket here (expired, used, or the daemon restarted)");
        };
        if link.ticket.expires_ms <= now || link.linked.is_some() {
            return refuse(reply, "the ticket has expired or was used");
        }
        let cert = request.cert;
        if cert.device != from
            || cert.user != link.ticket.user
            || link::proof(&link.ticket.secret, &cert) != request.proof
        {
            warn!(device = %from.fmt_short(), "refused a device-link request that does not prove the ticket");
            return refuse(reply, "the request does not match the ticket");
        }
        if link.request.as_ref().is_some_and(|(held, _)| held.device != from) {
            return refuse(reply, "another device already asked to join with this ticket");
        }
        info!(device = %from.fmt_short(), "a device asks to join this user; confirm with `outpost device link`");
        link.request = Some((cert, reply));
    }

    /// The person confirmed the code: the user key signs the new device, which is
    /// recorded and added (with this device's role) to every space this device is
    /// a member of; then the joining device gets its answer.
    pub(super) fn confirm_link(
        &mut self,
        tx: &mut Txn,
        id: [u8; 16],
        effects: &mut Effects,
    ) -> store::Result<Result<Linked>> {
        let now = crate::clock::now_ms();
        let Some(link) = self.links.get_mut(&id) else {
            return Ok(Err(Error::Invalid("no such link ticket (expired or used)".into())));
        };
        if link.ticket.expires_ms <= now {
            return Ok(Err(Error::Invalid("the ticket has expired".into())));
        }
        let Some((half, reply)) = link.request.take() else {
            return Ok(Err(Error::Invalid(
                "no device has asked to join with this ticket yet".into(),
            )));
        };
        if reply.is_closed() {
            return Ok(Err(Error::Invalid(
                "the new device stopped waiting (confirm within a minute of its request); run `outpost device join` there again".into(),
            )));
        }
        let Some(cert) = self.user_keys.as_ref().and_then(|u| u.complete(&half)) else {
            let _ = reply.send(JoinOutcome::Refused("the certificate does not verify".into()));
            return Ok(Err(Error::Invalid(
                "the joining device's certificate does not verify".into(),
            )));
        };
        link.linked = Some(cert.device);
        self.record_device(tx, cert, false)?;
        let siblings = self
            .devices
            .values()
            .filter(|r| !r.revoked && r.cert.device != cert.device && !self.removed_anywhere(&r.cert.device))
            .map(|r| r.cert)
            .collect();
        let spaces = self.add_device_everywhere(tx, &cert, effects)?;
        let response = JoinResponse {
            user_sig: cert.user_sig,
            siblings,
        };
        effects.on_commit.push(Box::new(move |err| {
            let _ = reply.send(match err {
                None => JoinOutcome::Accepted(response),
                Some(_) => JoinOutcome::Refused("the primary could not store the link; try again".into()),
            });
        }));
        info!(device = %cert.device.fmt_short(), spaces = spaces.len(), "linked a new device to this user");
        Ok(Ok(Linked {
            device: cert.device,
            spaces,
        }))
    }

    /// Adds `cert` (a device of this user) to every space this device is a member
    /// of and it is not in, with this device's role.
    fn add_device_everywhere(
        &mut self,
        tx: &mut Txn,
        cert: &DeviceCert,
        effects: &mut Effects,
    ) -> store::Result<Vec<SpaceId>> {
        let mine: Vec<(SpaceId, Role)> = self
            .spaces
            .values()
            .filter(|s| !s.state.entitled(&cert.device))
            .filter_map(|s| Some((s.state.space, s.state.members.get(&self.me)?.role)))
            .collect();
        let mut added = Vec::new();
        for (space, role) in mine {
            match self.invite_cert(tx, space, *cert, Grant::Member(role), effects)? {
                Ok(_) => added.push(space),
                Err(e) => {
                    warn!(space = %space.fmt_short(), device = %cert.device.fmt_short(), error = %e, "could not add a device of this user to a space")
                }
            }
        }
        Ok(added)
    }

    /// After this device was added to spaces: adds its user's other active
    /// devices there too, unless a space here removed them before (revoked by a
    /// sibling, or removed by an admin: a decision, not an omission).
    pub(super) fn add_my_devices(
        &mut self,
        tx: &mut Txn,
        space_id: SpaceId,
        effects: &mut Effects,
    ) -> store::Result<()> {
        let Some(space) = self.spaces.get(&space_id) else {
            return Ok(());
        };
        let Some(role) = space.state.members.get(&self.me).map(|m| m.role) else {
            return Ok(());
        };
        let missing: Vec<DeviceCert> = self
            .devices
            .values()
            .filter(|r| !r.revoked && r.cert.device != self.me && r.cert.user == self.keys.user_id())
            .filter(|r| !space.state.entitled(&r.cert.device) && !self.removed_anywhere(&r.cert.device))
            .map(|r| r.cert)
            .collect();
        for cert in missing {
            if let Err(e) = self.invite_cert(tx, space_id, cert, Grant::Member(role), effects)? {
                warn!(space = %space_id.fmt_short(), device = %cert.device.fmt_short(), error = %e, "could not add a device of this user to a space");
            }
        }
        Ok(())
    }

    /// The joining side: the primary accepted; this device now belongs to the
    /// ticket's user. Durable before the reply: the link file, then the records.
    pub(super) fn joined(
        &mut self,
        tx: &mut Txn,
        user: UserId,
        response: JoinResponse,
    ) -> store::Result<Result<Joined>> {
        if !self.keys.set_user(user, response.user_sig) {
            return Ok(Err(Error::Invalid(
                "the primary's signature over this device does not verify".into(),
            )));
        }
        if let Some(home) = &self.home
            && let Err(e) = self.keys.save_user_link(home)
        {
            return Ok(Err(Error::Invalid(format!("could not save the user link: {e}"))));
        }
        // This device no longer holds a user key of its own (it belongs to `user`).
        self.user_keys = None;
        self.record_device(tx, self.keys.cert(), false)?;
        let mut siblings = Vec::new();
        for cert in response.siblings {
            if cert.user == user && cert.verify() && cert.device != self.me {
                siblings.push(cert.device);
                self.record_device(tx, cert, false)?;
            }
        }
        info!(user = %user.fmt_short(), "this device joined a user");
        Ok(Ok(Joined { user, siblings }))
    }

    pub(super) fn device_list(&self) -> Vec<DeviceView> {
        let user = self.keys.user_id();
        let mut out: Vec<DeviceView> = self
            .devices
            .values()
            .filter(|r| r.cert.user == user)
            .map(|r| DeviceView {
                device: r.cert.device,
                user,
                status: if r.cert.device == self.me {
                    "this device".into()
                } else if r.revoked {
                    "revoked".into()
                } else {
                    "active".into()
                },
                since_ms: r.since_ms,
            })
            .collect();
        out.sort_by_key(|d| (d.status != "this device", d.since_ms));
        out
    }

    /// Revokes a device of this user: removed (with a new key epoch) from every
    /// space this device shares with it, and never added back by this device.
    pub(super) fn revoke(&mut self, tx: &mut Txn, text: &str, effects: &mut Effects) -> store::Result<Result<Revoked>> {
        let device = match self.resolve_device(text) {
            Ok(d) => d,
            Err(e) => return Ok(Err(e)),
        };
        if device == self.me {
            return Ok(Err(Error::Invalid(
                "a device cannot revoke itself: run `outpost device revoke` on another device of yours (or `outpost space leave`)".into(),
            )));
        }
        let user = self.keys.user_id();
        let cert = self.devices.get(&device).map(|r| r.cert).or_else(|| {
            self.spaces
                .values()
                .find_map(|s| s.state.members.get(&device).map(|m| m.cert))
        });
        let Some(cert) = cert.filter(|c| c.user == user) else {
            return Ok(Err(Error::NotAllowed(format!(
                "device {} is not a device of this user",
                device.fmt_short()
            ))));
        };
        self.record_device(tx, cert, true)?;
        let shared: Vec<SpaceId> = self
            .spaces
            .values()
            .filter(|s| s.state.entitled(&device) && s.state.members.contains_key(&self.me))
            .map(|s| s.state.space)
            .collect();
        let mut spaces = Vec::new();
        for space in shared {
            match self.change_members(tx, space, MemberChange::RemoveDevice(device.to_string()), effects)? {
                Ok(_) => spaces.push(space),
                Err(e) => {
                    warn!(space = %space.fmt_short(), error = %e, "could not remove a revoked device from a space")
                }
            }
        }
        info!(device = %device.fmt_short(), spaces = spaces.len(), "revoked a device of this user");
        Ok(Ok(Revoked { device, spaces }))
    }

    /// Whether any space here ever removed `device`: a sibling revoked it, or an
    /// admin removed it on purpose. Either way it is not added back automatically.
    pub(super) fn removed_anywhere(&self, device: &DeviceId) -> bool {
        self.spaces.values().any(|s| s.state.ever_removed(device))
    }

    fn record_device(&mut self, tx: &mut Txn, cert: DeviceCert, revoked: bool) -> store::Result<()> {
        let record = DeviceRecord {
            cert,
            revoked,
            since_ms: self
                .devices
                .get(&cert.device)
                .map_or_else(crate::clock::now_ms, |r| r.since_ms),
        };
        tx.put_user_device(&cert.device, &postcard::to_stdvec(&record).expect("records serialize"))?;
        self.devices.insert(cert.device, record);
        Ok(())
    }
}

/// The joining device's request for `ticket`.
pub fn join_request(keys: &DeviceKeys, ticket: &Ticket) -> JoinRequest {
    let cert = keys.cert_for_user(ticket.user);
    JoinRequest {
        ticket: ticket.id(),
        proof: link::proof(&ticket.secret, &cert),
        cert,
    }
}

/// Loads the user key from `home` (only the device that created the user has it).
pub(super) fn load_user_keys(home: &std::path::Path) -> Option<UserKeys> {
    match UserKeys::load(home) {
        Ok(keys) => keys,
        Err(e) => {
            warn!(error = %e, "the user key does not load; this device cannot link new devices");
            None
        }
    }
}
