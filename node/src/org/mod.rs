//! The organisation policy: a chain of versions, each signed by a threshold of
//! the admin keys the previous version names, that every node verifies and
//! enforces offline.
//!
//! A version is a small signed **header** and a **body** (the org chart and the
//! rules). The header commits to the body by hash and to the previous version by
//! the hash of its exact header bytes; signatures cover the exact header bytes,
//! so what is stored is what was signed. Version 1 is self-signed by a
//! threshold of its own admins, and the org id commits to that admin set: a node
//! that knows the org id (from an invite ticket) needs no trust on first sight.
//!
//! Rules (see docs/protocol.md, "Organisation policy"):
//! - version = previous + 1, `prev` = hash of the previous header, same org;
//! - at least `threshold` distinct signatures of the previous version's admins,
//!   and, when the admin set or threshold changes, of the new set as well;
//! - `issued_at < expires_at`; the body hashes to `body`;
//! - a node keeps the highest verified version: older ones are rollbacks, a
//!   different one with the same number is a fork (reported as a compromise).

pub mod admin;
pub mod body;
pub mod enroll;
pub mod import;
#[cfg(test)]
mod tests;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use self::{
    admin::{AdminKey, AdminKeys},
    body::Policy,
};
use crate::ids::{ParseIdError, derive16};

/// Most admin keys a version may name.
pub const MAX_ADMINS: usize = 64;
/// Largest header, in bytes (it holds at most [`MAX_ADMINS`] keys).
pub const MAX_HEADER_BYTES: usize = 4 << 10;
/// Largest body, in bytes: about 50,000 members.
pub const MAX_BODY_BYTES: usize = 16 << 20;
const ORG_ID_CONTEXT: &str = "outpost/org-id/v1";
const SIGNING_CONTEXT: &[u8] = b"outpost/v1/policy-header\0";

crate::ids::hex_id!(
    /// An organisation: a commitment to its first admin set and threshold.
    OrgId, 16, "an org id"
);

/// The signed part of a version (postcard, fields in this order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub org: OrgId,
    /// Random, fixed at version 1: with its admins and threshold it gives the org id.
    pub nonce: [u8; 16],
    pub version: u64,
    /// BLAKE3 of the previous version's header bytes; zero for version 1.
    pub prev: [u8; 32],
    pub issued_at_ms: u64,
    pub expires_at_ms: u64,
    /// The admin keys that sign the next version, sorted, distinct.
    pub admins: Vec<AdminKey>,
    pub threshold: u16,
    /// BLAKE3 of the body bytes.
    pub body: [u8; 32],
}

/// One admin's signature over a header's exact bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub key: AdminKey,
    pub sig: crate::identity::Sig,
}

/// A version as it is stored and sent: the exact header bytes, signatures over
/// them, and the body bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed {
    pub header: Vec<u8>,
    pub signatures: Vec<Signature>,
    pub body: Vec<u8>,
}

/// What two nodes exchange about their org when they connect, before anything
/// else: the sender's highest version, the versions after what the other side
/// holds (as far as known), and the drafts being signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyFrame {
    pub org: OrgId,
    /// The sender's highest verified version (0: none yet).
    pub have: u64,
    pub versions: Vec<Signed>,
    pub drafts: Vec<Signed>,
}

/// Most versions one frame carries (a node further behind asks again).
pub const MAX_VERSIONS_PER_FRAME: usize = 64;
/// Most drafts a node keeps and sends.
pub const MAX_DRAFTS: usize = 16;

/// A version that verified against the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub header: Header,
    /// BLAKE3 of the header bytes: what the next version names as `prev`.
    pub hash: [u8; 32],
    pub signed: Signed,
    /// The body, decoded and checked once, when the version verified.
    policy: Policy,
}

/// Why a version is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("the policy version does not decode or breaks a size cap")]
    Decode,
    #[error("the policy version belongs to another organisation")]
    WrongOrg,
    #[error("version 1 does not derive the org id from its admins")]
    OrgId,
    #[error("version {got} is older than the version {have} this node holds (a rollback)")]
    Rollback { have: u64, got: u64 },
    #[error(
        "two different policy versions {version} are signed: the admin keys may be compromised, or an admin signed two drafts"
    )]
    Fork { version: u64 },
    #[error("version {got} does not follow version {have}: the versions in between are needed")]
    Gap { have: u64, got: u64 },
    #[error("the version does not name the previous version's hash")]
    Prev,
    #[error("{have} valid signatures of the admins, {need} needed")]
    UnderSigned { have: usize, need: usize },
    #[error("the body does not match the hash the header signs")]
    Body,
    #[error("the admin set is empty, unsorted, too large, or its threshold is out of range")]
    Admins,
    #[error("the version expires before it is issued")]
    Expiry,
}

impl Header {
    /// The header of version 1 of a new org (random nonce; admins sorted and
    /// deduplicated).
    pub fn first(
        mut admins: Vec<AdminKey>,
        threshold: u16,
        issued_at_ms: u64,
        expires_at_ms: u64,
        body: &[u8],
    ) -> Self {
        admins.sort();
        admins.dedup();
        let nonce: [u8; 16] = rand::random();
        Self {
            org: org_id(&admins, threshold, &nonce),
            nonce,
            version: 1,
            prev: [0; 32],
            issued_at_ms,
            expires_at_ms,
            admins,
            threshold,
            body: *blake3::hash(body).as_bytes(),
        }
    }

    /// The header of the version after `prev`.
    pub fn next(
        prev: &Verified,
        mut admins: Vec<AdminKey>,
        threshold: u16,
        issued_at_ms: u64,
        expires_at_ms: u64,
        body: &[u8],
    ) -> Self {
        admins.sort();
        admins.dedup();
        Self {
            org: prev.header.org,
            nonce: prev.header.nonce,
            version: prev.header.version + 1,
            prev: prev.hash,
            issued_at_ms,
            expires_at_ms,
            admins,
            threshold,
            body: *blake3::hash(body).as_bytes(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("headers serialize")
    }

    /// The org id version 1's admins, threshold and nonce give.
    pub fn derived_org(&self) -> OrgId {
        org_id(&self.admins, self.threshold, &self.nonce)
    }
}

/// The org id of a first admin set.
pub fn org_id(admins: &[AdminKey], threshold: u16, nonce: &[u8; 16]) -> OrgId {
    let mut input = Vec::with_capacity(admins.len() * 32 + 18);
    for a in admins {
        input.extend_from_slice(&a.0);
    }
    input.extend_from_slice(&threshold.to_le_bytes());
    input.extend_from_slice(nonce);
    OrgId(derive16(ORG_ID_CONTEXT, &input))
}

/// What an admin signs: a context string and the exact header bytes.
fn signing_input(header: &[u8]) -> Vec<u8> {
    let mut input = SIGNING_CONTEXT.to_vec();
    input.extend_from_slice(header);
    input
}

impl Signed {
    /// A new, unsigned version with `header` over `body`.
    pub fn new(header: &Header, body: Vec<u8>) -> Self {
        Self {
            header: header.encode(),
            signatures: Vec::new(),
            body,
        }
    }

    /// The header, checked for well-formedness (caps, canonical bytes, admin set).
    pub fn header(&self) -> Result<Header, PolicyError> {
        if self.header.len() > MAX_HEADER_BYTES || self.body.len() > MAX_BODY_BYTES {
            return Err(PolicyError::Decode);
        }
        let header: Header = postcard::from_bytes(&self.header).map_err(|_| PolicyError::Decode)?;
        if header.encode() != self.header {
            return Err(PolicyError::Decode);
        }
        let sorted = header.admins.windows(2).all(|w| w[0] < w[1]);
        let threshold = usize::from(header.threshold);
        if header.admins.is_empty() || header.admins.len() > MAX_ADMINS || !sorted {
            return Err(PolicyError::Admins);
        }
        if threshold == 0 || threshold > header.admins.len() {
            return Err(PolicyError::Admins);
        }
        if header.issued_at_ms >= header.expires_at_ms {
            return Err(PolicyError::Expiry);
        }
        if *blake3::hash(&self.body).as_bytes() != header.body {
            return Err(PolicyError::Body);
        }
        Ok(header)
    }

    /// The hash a following version names as `prev`.
    pub fn hash(&self) -> [u8; 32] {
        *blake3::hash(&self.header).as_bytes()
    }

    /// Adds `keys`' signature (once).
    pub fn sign(&mut self, keys: &AdminKeys) {
        let key = keys.public();
        let sig = keys.sign(&signing_input(&self.header));
        // A signature held for this key that does not verify is replaced.
        self.signatures.retain(|s| s.key != key);
        self.signatures.push(Signature { key, sig });
        self.signatures.sort_by_key(|s| s.key);
    }

    /// Keeps only signatures that verify, by keys of `allowed`, one per key:
    /// what a node keeps of a draft from a peer (anyone can append bytes).
    pub fn retain_valid(&mut self, allowed: &[AdminKey]) {
        let input = signing_input(&self.header);
        let mut seen = Vec::new();
        self.signatures.retain(|s| {
            let keep = allowed.contains(&s.key) && !seen.contains(&s.key) && s.key.verify(&input, &s.sig);
            if keep {
                seen.push(s.key);
            }
            keep
        });
        self.signatures.sort_by_key(|s| s.key);
    }

    /// Merges the valid signatures (by keys of `allowed`) of another copy of
    /// the same version; returns whether any was new.
    pub fn merge(&mut self, other: &Signed, allowed: &[AdminKey]) -> bool {
        let mut incoming = other.clone();
        incoming.retain_valid(allowed);
        let before = self.signatures.len();
        for s in incoming.signatures {
            if !self.signatures.iter().any(|held| held.key == s.key) {
                self.signatures.push(s);
            }
        }
        self.signatures.sort_by_key(|s| s.key);
        self.signatures.len() > before
    }

    /// How many distinct keys of `admins` validly signed.
    pub fn signed_by(&self, admins: &[AdminKey]) -> usize {
        let input = signing_input(&self.header);
        let mut counted: Vec<AdminKey> = Vec::new();
        for s in &self.signatures {
            if admins.contains(&s.key) && !counted.contains(&s.key) && s.key.verify(&input, &s.sig) {
                counted.push(s.key);
            }
        }
        counted.len()
    }

    /// Verifies version 1 of `org`: self-signed by a threshold of its admins,
    /// which the org id commits to.
    pub fn verify_first(self, org: &OrgId) -> Result<Verified, PolicyError> {
        let header = self.header()?;
        if header.org != *org {
            return Err(PolicyError::WrongOrg);
        }
        if header.version != 1 || header.prev != [0; 32] {
            return Err(PolicyError::Gap {
                have: 0,
                got: header.version,
            });
        }
        if header.derived_org() != *org {
            return Err(PolicyError::OrgId);
        }
        self.signed_by_threshold(&header.admins, header.threshold)?;
        self.verified(header)
    }

    /// At least `threshold` of `admins` signed.
    fn signed_by_threshold(&self, admins: &[AdminKey], threshold: u16) -> Result<(), PolicyError> {
        let need = usize::from(threshold);
        let have = self.signed_by(admins);
        if have < need {
            return Err(PolicyError::UnderSigned { have, need });
        }
        Ok(())
    }

    /// The verified form, once the body decodes and passes its checks: a
    /// version whose body is malformed is refused like an unsigned one.
    fn verified(self, header: Header) -> Result<Verified, PolicyError> {
        let policy = Policy::decode(&self.body)?;
        Ok(Verified {
            hash: self.hash(),
            header,
            signed: self,
            policy,
        })
    }

    /// The verified form of a version this node verified before (its stored
    /// chain), with its header and body checked again.
    pub fn reverified(self) -> Result<Verified, PolicyError> {
        let header = self.header()?;
        self.verified(header)
    }

    /// Verifies this version as the next after `prev`.
    pub fn verify_next(self, prev: &Verified) -> Result<Verified, PolicyError> {
        let header = self.header()?;
        let have_version = prev.header.version;
        if header.org != prev.header.org || header.nonce != prev.header.nonce {
            return Err(PolicyError::WrongOrg);
        }
        if header.version <= have_version {
            return Err(if header.version == have_version && self.hash() != prev.hash {
                PolicyError::Fork {
                    version: header.version,
                }
            } else {
                PolicyError::Rollback {
                    have: have_version,
                    got: header.version,
                }
            });
        }
        if header.version != have_version + 1 {
            return Err(PolicyError::Gap {
                have: have_version,
                got: header.version,
            });
        }
        if header.prev != prev.hash {
            return Err(PolicyError::Prev);
        }
        self.signed_by_threshold(&prev.header.admins, prev.header.threshold)?;
        // A new admin set must consent too: K of the old and K' of the new.
        if header.admins != prev.header.admins || header.threshold != prev.header.threshold {
            self.signed_by_threshold(&header.admins, header.threshold)?;
        }
        self.verified(header)
    }
}

impl Verified {
    /// The policy body (checked against the header hash when verified).
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Whether the version is past its expiry at `now_ms`. A node's clock may
    /// lag (a dead RTC, an old VM image): time is at least the version's issue
    /// time.
    pub fn expired(&self, now_ms: u64) -> bool {
        now_ms.max(self.header.issued_at_ms) >= self.header.expires_at_ms
    }
}
