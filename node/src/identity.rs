//! Device identity: an ed25519 signing key (also the libp2p identity) and an X25519
//! key-agreement key, bound together by a signature (the device certificate).
//!
//! Key files are written 0600 inside a 0700 home; secrets zeroize on drop and never
//! print.

use std::{
    fs,
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::ids::DeviceId;

/// File name of the device's secret keys inside the home.
pub const KEY_FILE: &str = "device.key";
/// Magic + format version at the start of the key file.
const KEY_FILE_MAGIC: &[u8; 8] = b"OPDKEY\x00\x01";
/// Signature context binding the X25519 key to the device.
const CERT_CONTEXT: &[u8] = b"outpost/v1/device-cert\0";
/// Prefix of a printable device card.
const CARD_PREFIX: &str = "opd1";

/// Why loading or creating an identity failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no device identity in {0}: run `outpost init` first")]
    Missing(PathBuf),
    #[error("a device identity already exists in {0}")]
    AlreadyExists(PathBuf),
    #[error("the key file {0} is not an Outpost device key (wrong size or version)")]
    Corrupt(PathBuf),
    #[error("cannot access {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A device's secret keys.
pub struct DeviceKeys {
    signing: SigningKey,
    agreement: x25519_dalek::StaticSecret,
}

impl std::fmt::Debug for DeviceKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceKeys")
            .field("device", &self.device_id())
            .finish_non_exhaustive()
    }
}

impl DeviceKeys {
    /// Fresh random keys.
    pub fn generate() -> Self {
        let signing = Zeroizing::new(rand::random::<[u8; 32]>());
        let agreement = Zeroizing::new(rand::random::<[u8; 32]>());
        Self::from_secret_bytes(&signing, &agreement)
    }

    fn from_secret_bytes(signing: &[u8; 32], agreement: &[u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(signing),
            agreement: x25519_dalek::StaticSecret::from(*agreement),
        }
    }

    pub fn device_id(&self) -> DeviceId {
        DeviceId(self.signing.verifying_key().to_bytes())
    }

    pub fn agreement_public(&self) -> [u8; 32] {
        x25519_dalek::PublicKey::from(&self.agreement).to_bytes()
    }

    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.signing.sign(msg).to_bytes()
    }

    pub(crate) fn agreement_secret(&self) -> &x25519_dalek::StaticSecret {
        &self.agreement
    }

    /// The certificate binding this device's X25519 key to its signing key.
    pub fn cert(&self) -> DeviceCert {
        let device = self.device_id();
        let agreement = self.agreement_public();
        let sig = self.sign(&DeviceCert::signing_input(&device, &agreement));
        DeviceCert {
            device,
            agreement,
            sig: Sig(sig),
        }
    }

    /// The libp2p identity: the same ed25519 key.
    pub fn libp2p_keypair(&self) -> libp2p::identity::Keypair {
        let mut secret = self.signing.to_bytes();
        libp2p::identity::Keypair::ed25519_from_bytes(&mut secret)
            .expect("a 32-byte ed25519 secret is always a valid libp2p key")
    }

    /// Loads the keys from `home`.
    pub fn load(home: &Path) -> Result<Self, Error> {
        let path = home.join(KEY_FILE);
        let bytes = Zeroizing::new(fs::read(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                Error::Missing(home.to_path_buf())
            } else {
                Error::Io {
                    path: path.clone(),
                    source,
                }
            }
        })?);
        if bytes.len() != 8 + 64 || &bytes[..8] != KEY_FILE_MAGIC {
            return Err(Error::Corrupt(path));
        }
        let mut signing = Zeroizing::new([0u8; 32]);
        let mut agreement = Zeroizing::new([0u8; 32]);
        signing.copy_from_slice(&bytes[8..40]);
        agreement.copy_from_slice(&bytes[40..72]);
        Ok(Self::from_secret_bytes(&signing, &agreement))
    }

    /// Creates a new identity in `home` (0700), written 0600. Refuses to overwrite.
    pub fn create(home: &Path) -> Result<Self, Error> {
        ensure_private_dir(home)?;
        let path = home.join(KEY_FILE);
        let keys = Self::generate();
        let mut contents = Zeroizing::new(Vec::with_capacity(72));
        contents.extend_from_slice(KEY_FILE_MAGIC);
        contents.extend_from_slice(&keys.signing.to_bytes());
        contents.extend_from_slice(&keys.agreement.to_bytes());
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Error::AlreadyExists(home.to_path_buf())
                } else {
                    io(e)
                }
            })?;
        file.write_all(&contents).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(keys)
    }
}

/// Creates `dir` with mode 0700, or forces an existing one to 0700.
pub fn ensure_private_dir(dir: &Path) -> Result<(), Error> {
    let io = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io)
}

/// A 64-byte signature (serde handles arrays up to 32 natively).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Sig(pub [u8; 64]);

impl Serialize for Sig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Sig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes: &[u8] = serde::Deserialize::deserialize(d)?;
        let arr: [u8; 64] = bytes
            .try_into()
            .map_err(|_| serde::de::Error::invalid_length(bytes.len(), &"64 bytes"))?;
        Ok(Sig(arr))
    }
}

impl std::fmt::Debug for Sig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sig({})", data_encoding::HEXLOWER.encode(&self.0[..4]))
    }
}

/// Verifies an ed25519 signature by `device` over `msg`.
///
/// Validity is a consensus rule (every node must agree on every envelope), so
/// single and batch checks use the same equation: the cofactored one of batch
/// verification. A plain single check is cofactorless, and a signature crafted
/// with small-order components could pass one and fail the other.
pub fn verify(device: &DeviceId, msg: &[u8], sig: &[u8; 64]) -> bool {
    verify_batch(std::iter::once((device, msg.to_vec(), *sig)))
}

/// Verifies many (device, message, signature) triples at once; true only if
/// every one is valid. About twice as fast as one by one; on false, check them
/// singly to find the bad one.
pub fn verify_batch<'a>(items: impl Iterator<Item = (&'a DeviceId, Vec<u8>, [u8; 64])>) -> bool {
    let mut keys = Vec::new();
    let mut messages = Vec::new();
    let mut signatures = Vec::new();
    // A frame's envelopes come from few devices: decompress each key once (the
    // decompression costs about half of one signature's share of a batch).
    let mut decompressed: std::collections::HashMap<&DeviceId, VerifyingKey> = std::collections::HashMap::new();
    for (device, message, sig) in items {
        let key = match decompressed.get(device) {
            Some(key) => *key,
            None => {
                let Ok(key) = VerifyingKey::from_bytes(&device.0) else {
                    return false;
                };
                decompressed.insert(device, key);
                key
            }
        };
        keys.push(key);
        messages.push(message);
        signatures.push(ed25519_dalek::Signature::from_bytes(&sig));
    }
    let messages: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
}

/// A device's public keys, bound by the device's own signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCert {
    pub device: DeviceId,
    /// X25519 public key for key wrapping.
    pub agreement: [u8; 32],
    pub sig: Sig,
}

/// Why a device card did not parse.
#[derive(Debug, thiserror::Error)]
pub enum CardError {
    #[error("a device card starts with `{CARD_PREFIX}`; print one with `outpost id`")]
    Prefix,
    #[error("the device card is damaged (bad characters or length)")]
    Encoding,
    #[error("the device card's signature does not verify")]
    Signature,
}

impl DeviceCert {
    fn signing_input(device: &DeviceId, agreement: &[u8; 32]) -> Vec<u8> {
        let mut m = Vec::with_capacity(CERT_CONTEXT.len() + 64);
        m.extend_from_slice(CERT_CONTEXT);
        m.extend_from_slice(&device.0);
        m.extend_from_slice(agreement);
        m
    }

    /// Whether the signature binds the agreement key to the device.
    pub fn verify(&self) -> bool {
        verify(
            &self.device,
            &Self::signing_input(&self.device, &self.agreement),
            &self.sig.0,
        )
    }

    /// A printable form to hand to other people (`opd1…`).
    pub fn to_card(&self) -> String {
        let mut raw = Vec::with_capacity(128);
        raw.extend_from_slice(&self.device.0);
        raw.extend_from_slice(&self.agreement);
        raw.extend_from_slice(&self.sig.0);
        format!(
            "{CARD_PREFIX}{}",
            data_encoding::BASE32_NOPAD.encode(&raw).to_lowercase()
        )
    }

    /// Parses and verifies a card.
    pub fn from_card(card: &str) -> Result<Self, CardError> {
        let body = card.trim().strip_prefix(CARD_PREFIX).ok_or(CardError::Prefix)?;
        let raw = data_encoding::BASE32_NOPAD
            .decode(body.to_uppercase().as_bytes())
            .map_err(|_| CardError::Encoding)?;
        if raw.len() != 128 {
            return Err(CardError::Encoding);
        }
        let mut device = [0u8; 32];
        let mut agreement = [0u8; 32];
        let mut sig = [0u8; 64];
        device.copy_from_slice(&raw[..32]);
        agreement.copy_from_slice(&raw[32..64]);
        sig.copy_from_slice(&raw[64..]);
        let cert = Self {
            device: DeviceId(device),
            agreement,
            sig: Sig(sig),
        };
        if cert.verify() {
            Ok(cert)
        } else {
            Err(CardError::Signature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_load_round_trip_with_private_modes() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let keys = DeviceKeys::create(&home).unwrap();
        let loaded = DeviceKeys::load(&home).unwrap();
        assert_eq!(keys.device_id(), loaded.device_id());
        assert_eq!(keys.agreement_public(), loaded.agreement_public());
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&home), 0o700);
        assert_eq!(mode(&home.join(KEY_FILE)), 0o600);
        assert!(matches!(DeviceKeys::create(&home), Err(Error::AlreadyExists(_))));
    }

    #[test]
    fn card_round_trip_and_tamper() {
        let cert = DeviceKeys::generate().cert();
        assert!(cert.verify());
        let card = cert.to_card();
        assert_eq!(DeviceCert::from_card(&card).unwrap(), cert);
        let mut other = DeviceKeys::generate().cert();
        other.agreement = cert.agreement;
        assert!(matches!(
            DeviceCert::from_card(&other.to_card()),
            Err(CardError::Signature)
        ));
        assert!(matches!(DeviceCert::from_card("xyz"), Err(CardError::Prefix)));
    }

    #[test]
    fn libp2p_identity_is_the_device_key() {
        let keys = DeviceKeys::generate();
        let kp = keys.libp2p_keypair();
        let pk = kp.public().try_into_ed25519().unwrap();
        assert_eq!(pk.to_bytes(), keys.device_id().0);
    }
}
