//! Enrolling a device through the org: an admin's `org invite MEMBER` prints a
//! ticket; `org enroll TICKET` on the new device asks the admin's device, which
//! checks the ticket's one-time secret and proposes the next policy version with
//! the device listed under the member. The device is in the org once that
//! version is published (at once with a threshold of 1).
//!
//! The ticket carries the org id, so the new device also learns which org to
//! trust from it: no trust on first sight over the LAN. It also names the
//! admin device's anchors: when the admin's device is offline, an anchor holds
//! the request and hands it to that device when it next connects.
//! The request is self-authenticating (the proof binds the secret to the
//! device, the certificate is the device's), so it may travel through anyone.

use serde::{Deserialize, Serialize};

use super::OrgId;
use crate::{
    identity::DeviceCert,
    ids::DeviceId,
    link::{decode_ticket, encode_ticket},
};

const TICKET_PREFIX: &str = "opo1";
const PROOF_CONTEXT: &str = "outpost/org-enroll-proof/v1";
/// How long an invite is valid.
pub const INVITE_TTL_MS: u64 = 7 * 24 * 3600 * 1000;
/// Most addresses a ticket carries.
const MAX_TICKET_ADDRS: usize = 16;
/// Most invites an admin device holds open.
pub const MAX_OPEN_INVITES: usize = 1024;

/// What a new device needs to enroll: the org, the member it becomes a device
/// of, the admin device to ask and how to reach it, and the one-time secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollTicket {
    pub org: OrgId,
    pub member: String,
    pub admin: DeviceId,
    pub addrs: Vec<String>,
    pub secret: [u8; 16],
    pub expires_ms: u64,
    /// Anchors the admin device uses (`…/p2p/PEER`): they take the request
    /// when the admin's device cannot be reached.
    pub anchors: Vec<String>,
}

/// Why an invite ticket does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TicketError {
    #[error("an org invite ticket starts with `{TICKET_PREFIX}`; an admin prints one with `outpost org invite MEMBER`")]
    Prefix,
    #[error("the ticket is damaged (bad characters or length)")]
    Encoding,
    #[error("the ticket has expired; ask an admin for a new one (`outpost org invite MEMBER`)")]
    Expired,
}

impl EnrollTicket {
    pub fn to_text(&self) -> String {
        encode_ticket(TICKET_PREFIX, self)
    }

    /// Parses a ticket; refuses one expired at `now_ms`.
    pub fn from_text(text: &str, now_ms: u64) -> Result<Self, TicketError> {
        let ticket: EnrollTicket = decode_ticket(TICKET_PREFIX, text).map_err(|bad_prefix| {
            if bad_prefix {
                TicketError::Prefix
            } else {
                TicketError::Encoding
            }
        })?;
        if ticket.addrs.len() > MAX_TICKET_ADDRS
            || ticket.anchors.len() > MAX_TICKET_ADDRS
            || ticket.addrs.iter().chain(&ticket.anchors).any(|a| a.len() > 256)
            || ticket.member.len() > 256
        {
            return Err(TicketError::Encoding);
        }
        if ticket.expires_ms <= now_ms {
            return Err(TicketError::Expired);
        }
        Ok(ticket)
    }

    /// The request `cert`'s device sends with this ticket.
    pub fn request(&self, cert: DeviceCert) -> EnrollRequest {
        EnrollRequest {
            org: self.org,
            admin: self.admin,
            member: self.member.clone(),
            proof: proof(&self.secret, &cert.device),
            cert,
        }
    }
}

/// A device asks to be enrolled as a device of `member`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub org: OrgId,
    /// The admin device the ticket names (an anchor holds the request for it).
    pub admin: DeviceId,
    pub member: String,
    /// Proves the ticket's secret, bound to the requesting device.
    pub proof: [u8; 32],
    pub cert: DeviceCert,
}

/// The admin device's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnrollOutcome {
    /// The device is listed in version `version`: published already, or a
    /// draft the other admins sign.
    Accepted {
        version: u64,
        published: bool,
    },
    Refused(String),
    /// The admin's device could not be reached: `anchor` holds the request and
    /// hands it over when that device connects. (Appended: variants keep their
    /// wire index.)
    Queued {
        anchor: DeviceId,
    },
}

/// The proof of `secret` for `device`: only a holder of the secret makes it,
/// and it is good for that device only.
pub fn proof(secret: &[u8; 16], device: &DeviceId) -> [u8; 32] {
    let key = blake3::derive_key(PROOF_CONTEXT, secret);
    *blake3::keyed_hash(&key, &device.0).as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::DeviceKeys;

    #[test]
    fn a_ticket_round_trips_and_its_proof_binds_the_device() {
        let ticket = EnrollTicket {
            org: OrgId([3; 16]),
            member: "1002".into(),
            admin: DeviceId([1; 32]),
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
            secret: [9; 16],
            expires_ms: 2_000,
            anchors: Vec::new(),
        };
        let text = ticket.to_text();
        assert!(text.starts_with("opo1"));
        assert_eq!(EnrollTicket::from_text(&text, 1_000), Ok(ticket.clone()));
        assert_eq!(EnrollTicket::from_text(&text, 2_000), Err(TicketError::Expired));
        assert_eq!(EnrollTicket::from_text("opl1abc", 0), Err(TicketError::Prefix));
        assert_eq!(EnrollTicket::from_text("opo1!!", 0), Err(TicketError::Encoding));
        let a = DeviceKeys::generate();
        let b = DeviceKeys::generate();
        let request = ticket.request(a.cert());
        assert_eq!(request.proof, proof(&ticket.secret, &a.device_id()));
        assert_ne!(request.proof, proof(&ticket.secret, &b.device_id()));
        assert_ne!(request.proof, proof(&[8; 16], &a.device_id()));
    }
}
