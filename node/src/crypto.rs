//! Key material and the two encryption primitives: sealing content under an epoch
//! key, and wrapping an epoch key for one device (X25519 + HKDF + AEAD).
//!
//! Every purpose has its own context string (HKDF `info`, AEAD associated data, key
//! derivation context), so no ciphertext or key of one purpose is accepted by another.

use chacha20poly1305::{
    XChaCha20Poly1305, XNonce,
    aead::{Aead, KeyInit, Payload},
};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::{
    identity::{DeviceCert, DeviceKeys},
    ids::{DeviceId, EpochId, SpaceId, derive16},
};

const WRAP_INFO: &[u8] = b"outpost/v1/wrap\0";
const EPOCH_COMMIT_CONTEXT: &str = "outpost/epoch-commit/v1";
const EPOCH_ID_CONTEXT: &str = "outpost/epoch-id/v1";
const CONTENT_KEY_CONTEXT: &str = "outpost/content-key/v1";
const MERGED_KEY_CONTEXT: &str = "outpost/epoch-merge/v1";
const SIV_NONCE_CONTEXT: &str = "outpost/siv-nonce/v1";
const LINK_AAD: &[u8] = b"outpost/v1/history-link\0";

/// Why decryption or unwrapping failed. Deliberately carries no detail: an AEAD
/// failure must not leak which part was wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("decryption failed (wrong key, or the data was altered)")]
    Aead,
    #[error("the key agreement was not contributory (low-order public key)")]
    NonContributory,
    #[error("the unwrapped key does not match the epoch's commitment")]
    Commitment,
}

/// A 32-byte symmetric secret. Zeroized on drop; never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; 32]);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    pub fn random() -> Self {
        Self(rand::random())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

/// A space's key for one epoch, with its public commitment and id.
#[derive(Debug, Clone)]
pub struct EpochKey {
    pub space: SpaceId,
    pub id: EpochId,
    key: SecretKey,
    content: SecretKey,
}

impl EpochKey {
    /// A fresh random epoch key for `space`.
    pub fn generate(space: SpaceId) -> Self {
        Self::from_secret(space, SecretKey::random())
    }

    fn from_secret(space: SpaceId, key: SecretKey) -> Self {
        let commit = Self::commitment_of(&key);
        let id = Self::id_of(&space, &commit);
        let mut input = key.0.to_vec();
        input.extend_from_slice(&space.0);
        input.extend_from_slice(&id.0);
        let content = SecretKey(blake3::derive_key(CONTENT_KEY_CONTEXT, &input));
        input.zeroize();
        Self {
            space,
            id,
            key,
            content,
        }
    }

    /// The commitment published with the epoch, so no one can hand different members
    /// different keys under one epoch id (the AEAD is not key-committing).
    pub fn commitment(&self) -> [u8; 32] {
        Self::commitment_of(&self.key)
    }

    fn commitment_of(key: &SecretKey) -> [u8; 32] {
        *blake3::keyed_hash(&key.0, EPOCH_COMMIT_CONTEXT.as_bytes()).as_bytes()
    }

    /// Epoch id = H(space ‖ commitment): unique per key, computable before wrapping.
    pub fn id_of(space: &SpaceId, commit: &[u8; 32]) -> EpochId {
        let mut input = space.0.to_vec();
        input.extend_from_slice(commit);
        EpochId(derive16(EPOCH_ID_CONTEXT, &input))
    }

    /// Encrypts `plaintext` with a fresh random 24-byte nonce, binding `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> ([u8; 24], Vec<u8>) {
        let nonce: [u8; 24] = rand::random();
        let ct = aead(&self.content)
            .encrypt(&XNonce::from(nonce), Payload { msg: plaintext, aad })
            .expect("XChaCha20-Poly1305 encrypts any message below 256 GiB");
        (nonce, ct)
    }

    /// Encrypts `plaintext` with a nonce derived from the key, `aad` and the
    /// plaintext (SIV-style): the same text under the same key and `aad`
    /// seals to the same bytes. For a private calendar event's fields, so a
    /// re-import of the same file writes nothing new; it reveals only that a
    /// field kept its value.
    pub fn seal_deterministic(&self, aad: &[u8], plaintext: &[u8]) -> ([u8; 24], Vec<u8>) {
        // A subkey of its own for the nonce, never the cipher key itself.
        let mut nonce_key = blake3::derive_key(SIV_NONCE_CONTEXT, &self.content.0);
        let mut hasher = blake3::Hasher::new_keyed(&nonce_key);
        nonce_key.zeroize();
        hasher.update(&(aad.len() as u64).to_le_bytes());
        hasher.update(aad);
        hasher.update(plaintext);
        let mut nonce = [0u8; 24];
        nonce.copy_from_slice(&hasher.finalize().as_bytes()[..24]);
        let ct = aead(&self.content)
            .encrypt(&XNonce::from(nonce), Payload { msg: plaintext, aad })
            .expect("XChaCha20-Poly1305 encrypts any message below 256 GiB");
        (nonce, ct)
    }

    pub fn open(&self, nonce: &[u8; 24], aad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, Error> {
        aead(&self.content)
            .decrypt(&XNonce::from(*nonce), Payload { msg: ciphertext, aad })
            .map_err(|_| Error::Aead)
    }

    /// Wraps this key for one recipient device (ephemeral-static X25519).
    pub fn wrap_for(&self, recipient: &DeviceCert) -> Wrap {
        let ephemeral = x25519_dalek::StaticSecret::from(rand::random::<[u8; 32]>());
        let ephemeral_pub = x25519_dalek::PublicKey::from(&ephemeral).to_bytes();
        let shared = ephemeral.diffie_hellman(&x25519_dalek::PublicKey::from(recipient.agreement));
        // Our own ephemeral is random, so the result is contributory unless the
        // recipient's key is low-order; such a cert could never unwrap, so the
        // wrap is still produced and simply fails on the other side.
        let info = wrap_info(
            &self.space,
            &self.id,
            &recipient.device,
            &recipient.agreement,
            &ephemeral_pub,
        );
        let wrap_key = hkdf_key(shared.as_bytes(), &info);
        let nonce: [u8; 24] = rand::random();
        let ciphertext = aead(&wrap_key)
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &self.key.0,
                    aad: &info,
                },
            )
            .expect("a 32-byte key always encrypts");
        Wrap {
            recipient: recipient.device,
            ephemeral: ephemeral_pub,
            nonce,
            ciphertext,
        }
    }

    /// The key of a merged epoch (several concurrent rotations): derived from every
    /// component key, so only a device holding all of them can derive it. `parts`
    /// must be sorted by epoch id, as [`crate::control::Epoch`] keeps them.
    pub fn merge(space: SpaceId, id: EpochId, parts: &[&EpochKey]) -> Self {
        let mut input = space.0.to_vec();
        input.extend_from_slice(&id.0);
        for part in parts {
            input.extend_from_slice(&part.id.0);
            input.extend_from_slice(&part.key.0);
        }
        let secret = SecretKey(blake3::derive_key(MERGED_KEY_CONTEXT, &input));
        input.zeroize();
        let mut key = Self::from_secret(space, secret);
        key.id = id;
        key
    }

    /// A history link: `parent`'s key sealed under this (newer) key, so a holder of
    /// this key can read what was written under the parent.
    pub fn link_to(&self, parent: &EpochKey) -> HistoryLink {
        let (nonce, sealed) = self.seal(&link_aad(&self.space, &self.id, &parent.id), &parent.key.0);
        HistoryLink {
            parent: parent.id,
            nonce,
            sealed,
        }
    }

    /// Follows a history link from this key, checking the parent's commitment.
    pub fn follow(&self, link: &HistoryLink, parent_commit: &[u8; 32]) -> Result<EpochKey, Error> {
        let mut raw = self.open(
            &link.nonce,
            &link_aad(&self.space, &self.id, &link.parent),
            &link.sealed,
        )?;
        let bytes: [u8; 32] = raw.as_slice().try_into().map_err(|_| Error::Aead)?;
        raw.zeroize();
        let key = Self::from_secret(self.space, SecretKey(bytes));
        if key.commitment() != *parent_commit || key.id != link.parent {
            return Err(Error::Commitment);
        }
        Ok(key)
    }

    /// Unwraps `wrap` with this device's keys and checks the epoch's commitment.
    pub fn unwrap(space: SpaceId, commit: &[u8; 32], wrap: &Wrap, keys: &DeviceKeys) -> Result<Self, Error> {
        let epoch = Self::id_of(&space, commit);
        let shared = keys
            .agreement_secret()
            .diffie_hellman(&x25519_dalek::PublicKey::from(wrap.ephemeral));
        if !shared.was_contributory() {
            return Err(Error::NonContributory);
        }
        let info = wrap_info(
            &space,
            &epoch,
            &keys.device_id(),
            &keys.agreement_public(),
            &wrap.ephemeral,
        );
        let wrap_key = hkdf_key(shared.as_bytes(), &info);
        let mut raw = aead(&wrap_key)
            .decrypt(
                &XNonce::from(wrap.nonce),
                Payload {
                    msg: &wrap.ciphertext,
                    aad: &info,
                },
            )
            .map_err(|_| Error::Aead)?;
        let bytes: [u8; 32] = raw.as_slice().try_into().map_err(|_| Error::Aead)?;
        raw.zeroize();
        let key = Self::from_secret(space, SecretKey(bytes));
        if key.commitment() != *commit {
            return Err(Error::Commitment);
        }
        Ok(key)
    }
}

/// An epoch key encrypted for one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wrap {
    pub recipient: DeviceId,
    pub ephemeral: [u8; 32],
    pub nonce: [u8; 24],
    pub ciphertext: Vec<u8>,
}

/// An older epoch's key sealed under a newer one (see [`EpochKey::link_to`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryLink {
    pub parent: EpochId,
    pub nonce: [u8; 24],
    pub sealed: Vec<u8>,
}

fn link_aad(space: &SpaceId, epoch: &EpochId, parent: &EpochId) -> Vec<u8> {
    let mut aad = LINK_AAD.to_vec();
    aad.extend_from_slice(&space.0);
    aad.extend_from_slice(&epoch.0);
    aad.extend_from_slice(&parent.0);
    aad
}

fn aead(key: &SecretKey) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new_from_slice(&key.0).expect("the key is 32 bytes")
}

fn hkdf_key(ikm: &[u8], info: &[u8]) -> SecretKey {
    let mut out = [0u8; 32];
    hkdf::Hkdf::<sha2::Sha256>::new(None, ikm)
        .expand(info, &mut out)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    SecretKey(out)
}

/// Binds a wrap to space, epoch, recipient device and keys, and the ephemeral key.
fn wrap_info(
    space: &SpaceId,
    epoch: &EpochId,
    recipient: &DeviceId,
    recipient_x: &[u8; 32],
    ephemeral: &[u8; 32],
) -> Vec<u8> {
    let mut info = Vec::with_capacity(WRAP_INFO.len() + 16 + 16 + 32 + 32 + 32);
    info.extend_from_slice(WRAP_INFO);
    info.extend_from_slice(&space.0);
    info.extend_from_slice(&epoch.0);
    info.extend_from_slice(&recipient.0);
    info.extend_from_slice(recipient_x);
    info.extend_from_slice(ephemeral);
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap_and_binding() {
        let space = SpaceId([5; 16]);
        let alice = DeviceKeys::generate();
        let bob = DeviceKeys::generate();
        let epoch = EpochKey::generate(space);
        let wrap = epoch.wrap_for(&alice.cert());
        let got = EpochKey::unwrap(space, &epoch.commitment(), &wrap, &alice).unwrap();
        assert_eq!(got.id, epoch.id);
        let (nonce, ct) = epoch.seal(b"ad", b"hello");
        assert_eq!(got.open(&nonce, b"ad", &ct).unwrap(), b"hello");
        assert_eq!(got.open(&nonce, b"other ad", &ct), Err(Error::Aead));
        // Bob cannot use Alice's wrap; a wrap is bound to its space.
        assert!(EpochKey::unwrap(space, &epoch.commitment(), &wrap, &bob).is_err());
        assert!(EpochKey::unwrap(SpaceId([6; 16]), &epoch.commitment(), &wrap, &alice).is_err());
        // A commitment to another key is refused.
        let other = EpochKey::generate(space);
        assert!(EpochKey::unwrap(space, &other.commitment(), &wrap, &alice).is_err());
    }

    #[test]
    fn history_links_and_merged_keys() {
        let space = SpaceId([5; 16]);
        let old = EpochKey::generate(space);
        let new = EpochKey::generate(space);
        let link = new.link_to(&old);
        let got = new.follow(&link, &old.commitment()).unwrap();
        assert_eq!((got.id, got.commitment()), (old.id, old.commitment()));
        // Only the newer key opens the link, and only for the committed parent.
        assert!(old.follow(&link, &old.commitment()).is_err());
        assert_eq!(new.follow(&link, &new.commitment()).unwrap_err(), Error::Commitment);
        // A merged key depends on every component.
        let id = EpochId([9; 16]);
        let third = EpochKey::generate(space);
        let a = EpochKey::merge(space, id, &[&old, &new]);
        let b = EpochKey::merge(space, id, &[&old, &new]);
        let c = EpochKey::merge(space, id, &[&old, &third]);
        let (nonce, ct) = a.seal(b"ad", b"x");
        assert_eq!(b.open(&nonce, b"ad", &ct).unwrap(), b"x");
        assert!(c.open(&nonce, b"ad", &ct).is_err());
        assert_eq!(a.id, id);
    }

    #[test]
    fn low_order_ephemeral_is_rejected() {
        let space = SpaceId([5; 16]);
        let alice = DeviceKeys::generate();
        let epoch = EpochKey::generate(space);
        let mut wrap = epoch.wrap_for(&alice.cert());
        wrap.ephemeral = [0; 32];
        assert_eq!(
            EpochKey::unwrap(space, &epoch.commitment(), &wrap, &alice).unwrap_err(),
            Error::NonContributory
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let k = EpochKey::generate(SpaceId([1; 16]));
        assert!(!format!("{k:?}").contains(&format!("{:?}", k.key.0[0..4].to_vec())));
        assert_eq!(format!("{:?}", SecretKey::random()), "SecretKey(..)");
    }
}
