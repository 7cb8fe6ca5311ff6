//! Linking a new device to a user: the ticket, the join request and its answer.
//!
//! 1. The user's primary device (it holds the user key) makes a short-lived
//!    [`Ticket`]: its device id and addresses, the user id, a random secret and
//!    an expiry. The person carries it to the new device (`outpost device join`).
//! 2. The new device dials the primary (Noise authenticates it as the device the
//!    ticket names) and sends a [`JoinRequest`]: its certificate already signed
//!    by the device for the ticket's user (the user's half left empty), and a
//!    proof that it knows the secret, bound to that certificate.
//! 3. Both sides show the same six-digit [`confirmation_code`] (from the secret
//!    and both device ids); the person confirms on the primary, which then
//!    signs the user's half and answers with a [`JoinResponse`]. A leaked ticket
//!    alone cannot add a device: the code would not be the one the person sees on
//!    the device they hold, and the primary asks before it signs.
//!
//! The primary then adds the new device, with its own role, to every space it
//! is a member of; the device gets the keys and history from there.

use serde::{Deserialize, Serialize};

use crate::{
    identity::{DeviceCert, Sig},
    ids::{DeviceId, UserId},
};

const TICKET_PREFIX: &str = "opl1";
const PROOF_CONTEXT: &str = "outpost/link-proof/v1";
const CODE_CONTEXT: &str = "outpost/link-code/v1";
const TICKET_ID_CONTEXT: &str = "outpost/link-ticket/v1";
/// How long a ticket is valid.
pub const TICKET_TTL_MS: u64 = 10 * 60 * 1000;
/// Most addresses a ticket carries.
const MAX_TICKET_ADDRS: usize = 16;

/// What the new device needs to reach the primary and prove it was handed the ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub user: UserId,
    /// The primary device.
    pub device: DeviceId,
    pub addrs: Vec<String>,
    pub secret: [u8; 16],
    pub expires_ms: u64,
}

/// Why a ticket did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TicketError {
    #[error(
        "a device-link ticket starts with `{TICKET_PREFIX}`; `outpost device link` on your other device prints one"
    )]
    Prefix,
    #[error("the ticket is damaged (bad characters or length)")]
    Encoding,
    #[error("the ticket has expired; make a new one with `outpost device link`")]
    Expired,
}

impl Ticket {
    /// The id both sides use for this ticket (never the secret itself).
    pub fn id(&self) -> [u8; 16] {
        ticket_id(&self.secret)
    }

    pub fn to_text(&self) -> String {
        encode_ticket(TICKET_PREFIX, self)
    }

    /// Parses a ticket; refuses one expired at `now_ms`.
    pub fn from_text(text: &str, now_ms: u64) -> Result<Self, TicketError> {
        let ticket: Ticket = decode_ticket(TICKET_PREFIX, text).map_err(|bad_prefix| {
            if bad_prefix {
                TicketError::Prefix
            } else {
                TicketError::Encoding
            }
        })?;
        if ticket.addrs.len() > MAX_TICKET_ADDRS || ticket.addrs.iter().any(|a| a.len() > 256) {
            return Err(TicketError::Encoding);
        }
        if ticket.expires_ms <= now_ms {
            return Err(TicketError::Expired);
        }
        Ok(ticket)
    }
}

/// A ticket as text: `prefix` then the postcard bytes in lower-case base32.
pub(crate) fn encode_ticket<T: Serialize>(prefix: &str, ticket: &T) -> String {
    let raw = postcard::to_stdvec(ticket).expect("tickets serialize");
    format!("{prefix}{}", data_encoding::BASE32_NOPAD.encode(&raw).to_lowercase())
}

/// Reads a ticket written by [`encode_ticket`]; `Err(true)` when the prefix is
/// not `prefix`, `Err(false)` when the rest does not decode.
pub(crate) fn decode_ticket<T: serde::de::DeserializeOwned>(prefix: &str, text: &str) -> Result<T, bool> {
    let body = text.trim().strip_prefix(prefix).ok_or(true)?;
    let raw = data_encoding::BASE32_NOPAD
        .decode(body.to_uppercase().as_bytes())
        .map_err(|_| false)?;
    postcard::from_bytes(&raw).map_err(|_| false)
}

/// The id of the ticket whose secret is `secret`.
pub fn ticket_id(secret: &[u8; 16]) -> [u8; 16] {
    let mut id = [0u8; 16];
    id.copy_from_slice(&blake3::derive_key(TICKET_ID_CONTEXT, secret)[..16]);
    id
}

/// The six-digit code both devices show, from the secret and both device ids.
pub fn confirmation_code(secret: &[u8; 16], primary: &DeviceId, joining: &DeviceId) -> String {
    let mut input = secret.to_vec();
    input.extend_from_slice(&primary.0);
    input.extend_from_slice(&joining.0);
    let hash = blake3::derive_key(CODE_CONTEXT, &input);
    let n = u32::from_le_bytes(hash[..4].try_into().expect("4 bytes")) % 1_000_000;
    format!("{:03} {:03}", n / 1000, n % 1000)
}

/// Proof that the sender of `cert` holds the ticket's secret.
pub fn proof(secret: &[u8; 16], cert: &DeviceCert) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(secret);
    key[16..].copy_from_slice(&ticket_id(secret));
    let mut input = PROOF_CONTEXT.as_bytes().to_vec();
    input.extend_from_slice(&cert.device.0);
    input.extend_from_slice(&cert.agreement);
    input.extend_from_slice(&cert.user.0);
    *blake3::keyed_hash(&key, &input).as_bytes()
}

/// The joining device's request (over the sync protocol).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub ticket: [u8; 16],
    /// Signed by the joining device for the ticket's user; `user_sig` is empty.
    pub cert: DeviceCert,
    pub proof: [u8; 32],
}

/// The primary's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinOutcome {
    Accepted(JoinResponse),
    Refused(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinResponse {
    /// The user's half of the joining device's certificate.
    pub user_sig: Sig,
    /// The user's other devices (active), so the new device can add them to
    /// spaces it is invited to.
    pub siblings: Vec<DeviceCert>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::DeviceKeys;

    #[test]
    fn ticket_round_trip_expiry_and_code() {
        let primary = DeviceKeys::generate();
        let ticket = Ticket {
            user: primary.user_id(),
            device: primary.device_id(),
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
            secret: [7; 16],
            expires_ms: 1_000,
        };
        let text = ticket.to_text();
        assert_eq!(Ticket::from_text(&text, 999).unwrap(), ticket);
        assert_eq!(Ticket::from_text(&text, 1_000), Err(TicketError::Expired));
        assert_eq!(Ticket::from_text("opd1abc", 0), Err(TicketError::Prefix));
        assert_eq!(Ticket::from_text("opl1!!", 0), Err(TicketError::Encoding));
        let joining = DeviceKeys::generate();
        let code = confirmation_code(&ticket.secret, &primary.device_id(), &joining.device_id());
        assert_eq!(code.len(), 7);
        assert_ne!(
            code,
            confirmation_code(&[8; 16], &primary.device_id(), &joining.device_id())
        );
        // The proof binds the certificate.
        assert_ne!(proof(&[7; 16], &joining.cert()), proof(&[7; 16], &primary.cert()));
    }
}
