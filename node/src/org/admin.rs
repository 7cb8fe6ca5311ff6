//! Admin keys: ed25519 keys that sign policy versions, distinct from device
//! keys (an admin's device can be lost without losing the admin set).

use std::{fmt, path::Path};

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{
    identity::{Error, Sig, read_key_file, write_key_file},
    ids::{ParseIdError, hex_id},
};

/// The admin key file in a node's home (on admins' devices only).
pub const ADMIN_KEY_FILE: &str = "org-admin.key";
const ADMIN_KEY_MAGIC: &[u8; 8] = b"OPAKEY\x00\x01";

hex_id!(
    /// An admin's public key.
    AdminKey, 32, "an admin key"
);

impl AdminKey {
    /// Whether `sig` is this key's signature of `msg` (strict verification: a
    /// policy signature is checked alike on every node, one at a time).
    pub fn verify(&self, msg: &[u8], sig: &Sig) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        key.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&sig.0))
            .is_ok()
    }
}

/// An admin's signing key. Zeroized on drop, never printed.
pub struct AdminKeys {
    signing: SigningKey,
}

impl fmt::Debug for AdminKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminKeys")
            .field("public", &self.public())
            .finish_non_exhaustive()
    }
}

impl AdminKeys {
    pub fn generate() -> Self {
        let secret = Zeroizing::new(rand::random::<[u8; 32]>());
        Self {
            signing: SigningKey::from_bytes(&secret),
        }
    }

    pub fn public(&self) -> AdminKey {
        AdminKey(self.signing.verifying_key().to_bytes())
    }

    pub fn sign(&self, msg: &[u8]) -> Sig {
        Sig(self.signing.sign(msg).to_bytes())
    }

    /// This device's admin key, if it holds one.
    pub fn load(home: &Path) -> Result<Option<Self>, Error> {
        match read_key_file(home, ADMIN_KEY_FILE, ADMIN_KEY_MAGIC, 32) {
            Ok(bytes) => Ok(Some(Self {
                signing: SigningKey::from_bytes(&bytes[..32].try_into().expect("32 bytes")),
            })),
            Err(Error::Missing(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// This device's admin key, made (and stored, 0600) on first use.
    pub fn load_or_create(home: &Path) -> Result<Self, Error> {
        if let Some(keys) = Self::load(home)? {
            return Ok(keys);
        }
        let keys = Self::generate();
        write_key_file(home, ADMIN_KEY_FILE, ADMIN_KEY_MAGIC, &keys.signing.to_bytes(), false)?;
        Ok(keys)
    }
}
