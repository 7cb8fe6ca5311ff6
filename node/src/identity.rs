//! Device and user identity.
//!
//! A device has an ed25519 signing key (also its libp2p identity) and an X25519
//! key-agreement key. A user (a person) has an ed25519 user key that certifies the
//! user's devices. The device certificate binds all of it, signed both ways: the
//! device signs (its agreement key, its user), and the user key signs (the
//! device, its agreement key). Neither side alone can claim the other.
//!
//! `outpost init` creates a device and a new user whose key stays on that device
//! (the user's *primary*); `device join` moves a device to another user (see
//! `core::devices`). Key files are written 0600 inside a 0700 home; secrets
//! zeroize on drop and never print.

use std::{
    fs,
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::RwLock,
};

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::ids::{DeviceId, UserId};

/// File name of the device's secret keys inside the home.
pub const KEY_FILE: &str = "device.key";
/// File name of the user key, on the device that created the user.
pub const USER_KEY_FILE: &str = "user.key";
/// File name of the device's user link: the user id and the user's signature.
pub const USER_LINK_FILE: &str = "user.link";
/// Magic + format version at the start of the key files.
const KEY_FILE_MAGIC: &[u8; 8] = b"OPDKEY\x00\x01";
const USER_KEY_MAGIC: &[u8; 8] = b"OPUKEY\x00\x01";
const USER_LINK_MAGIC: &[u8; 8] = b"OPULNK\x00\x01";
/// Signature context of the device's half of its certificate.
const CERT_CONTEXT: &[u8] = b"outpost/v1/device-cert\0";
/// Signature context of the user's half.
const USER_LINK_CONTEXT: &[u8] = b"outpost/v1/user-link\0";
/// Prefix of a printable device card.
const CARD_PREFIX: &str = "opd1";
/// Bytes in a card: device, agreement key, user, two signatures.
const CARD_BYTES: usize = 32 + 32 + 32 + 64 + 64;

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

/// A device's secret keys, and its certificate (which names its user).
pub struct DeviceKeys {
    signing: SigningKey,
    agreement: x25519_dalek::StaticSecret,
    /// Changes only when the device joins another user.
    cert: RwLock<DeviceCert>,
}

impl std::fmt::Debug for DeviceKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceKeys")
            .field("device", &self.device_id())
            .finish_non_exhaustive()
    }
}

impl DeviceKeys {
    /// Fresh random keys, for a new user of their own.
    pub fn generate() -> Self {
        Self::generate_for(&UserKeys::generate())
    }

    /// Fresh random keys for a device of `user`.
    pub fn generate_for(user: &UserKeys) -> Self {
        let signing = Zeroizing::new(rand::random::<[u8; 32]>());
        let agreement = Zeroizing::new(rand::random::<[u8; 32]>());
        let keys = Self::from_secret_bytes(&signing, &agreement, user.user_id(), Sig([0; 64]));
        let link = user.link(&keys.device_id(), &keys.agreement_public());
        keys.set_user(user.user_id(), link);
        keys
    }

    fn from_secret_bytes(signing: &[u8; 32], agreement: &[u8; 32], user: UserId, user_sig: Sig) -> Self {
        let signing = SigningKey::from_bytes(signing);
        let agreement = x25519_dalek::StaticSecret::from(*agreement);
        let device = DeviceId(signing.verifying_key().to_bytes());
        let agreement_public = x25519_dalek::PublicKey::from(&agreement).to_bytes();
        let sig = signing
            .sign(&DeviceCert::signing_input(&device, &agreement_public, &user))
            .to_bytes();
        let cert = DeviceCert {
            device,
            agreement: agreement_public,
            user,
            sig: Sig(sig),
            user_sig,
        };
        Self {
            signing,
            agreement,
            cert: RwLock::new(cert),
        }
    }

    /// Makes this a device of `user`, whose key signed `user_sig` (see
    /// [`UserKeys::link`]). Fails, changing nothing, if the signature is not the
    /// user's over this device.
    pub fn set_user(&self, user: UserId, user_sig: Sig) -> bool {
        let device = self.device_id();
        let agreement = self.agreement_public();
        let cert = DeviceCert {
            device,
            agreement,
            user,
            sig: Sig(self.sign(&DeviceCert::signing_input(&device, &agreement, &user))),
            user_sig,
        };
        if !cert.verify() {
            return false;
        }
        *self.cert.write().unwrap_or_else(std::sync::PoisonError::into_inner) = cert;
        true
    }

    /// This device's certificate for `user`, with the device's half signed and the
    /// user's half empty (a join request: the user's key signs it).
    pub fn cert_for_user(&self, user: UserId) -> DeviceCert {
        let device = self.device_id();
        let agreement = self.agreement_public();
        DeviceCert {
            device,
            agreement,
            user,
            sig: Sig(self.sign(&DeviceCert::signing_input(&device, &agreement, &user))),
            user_sig: Sig([0; 64]),
        }
    }

    /// The user this device belongs to.
    pub fn user_id(&self) -> UserId {
        self.cert().user
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

    /// The key this node seals its local caches with (the search index):
    /// derived from the device's signing key, so it never leaves the device
    /// and needs no file of its own.
    pub fn storage_key(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(blake3::derive_key(
            "outpost 2026-12 node storage key",
            self.signing.as_bytes(),
        ))
    }

    pub(crate) fn agreement_secret(&self) -> &x25519_dalek::StaticSecret {
        &self.agreement
    }

    /// The certificate binding this device's X25519 key and user to its signing key.
    pub fn cert(&self) -> DeviceCert {
        *self.cert.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The libp2p identity: the same ed25519 key.
    pub fn libp2p_keypair(&self) -> libp2p::identity::Keypair {
        let mut secret = self.signing.to_bytes();
        libp2p::identity::Keypair::ed25519_from_bytes(&mut secret)
            .expect("a 32-byte ed25519 secret is always a valid libp2p key")
    }

    /// Loads the keys and user link from `home`.
    pub fn load(home: &Path) -> Result<Self, Error> {
        let bytes = read_key_file(home, KEY_FILE, KEY_FILE_MAGIC, 64)?;
        let link = read_key_file(home, USER_LINK_FILE, USER_LINK_MAGIC, 96)?;
        let mut signing = Zeroizing::new([0u8; 32]);
        let mut agreement = Zeroizing::new([0u8; 32]);
        signing.copy_from_slice(&bytes[..32]);
        agreement.copy_from_slice(&bytes[32..64]);
        let user = UserId(link[..32].try_into().expect("32 bytes"));
        let user_sig = Sig(link[32..96].try_into().expect("64 bytes"));
        let keys = Self::from_secret_bytes(&signing, &agreement, user, user_sig);
        if !keys.cert().verify() {
            return Err(Error::Corrupt(home.join(USER_LINK_FILE)));
        }
        Ok(keys)
    }

    /// Creates a new identity in `home` (0700), files written 0600: a device, and
    /// a new user whose key stays here. Refuses to overwrite.
    pub fn create(home: &Path) -> Result<Self, Error> {
        ensure_private_dir(home)?;
        let user = UserKeys::generate();
        let keys = Self::generate_for(&user);
        let mut contents = Zeroizing::new(Vec::with_capacity(64));
        contents.extend_from_slice(&keys.signing.to_bytes());
        contents.extend_from_slice(&keys.agreement.to_bytes());
        write_key_file(home, KEY_FILE, KEY_FILE_MAGIC, &contents, false)?;
        write_key_file(home, USER_KEY_FILE, USER_KEY_MAGIC, &user.signing.to_bytes(), false)?;
        keys.save_user_link(home)?;
        Ok(keys)
    }

    /// Writes the current user link to `home` (replacing it), so the device stays
    /// with its user across restarts.
    pub fn save_user_link(&self, home: &Path) -> Result<(), Error> {
        let cert = self.cert();
        let mut link = Vec::with_capacity(96);
        link.extend_from_slice(&cert.user.0);
        link.extend_from_slice(&cert.user_sig.0);
        write_key_file(home, USER_LINK_FILE, USER_LINK_MAGIC, &link, true)
    }
}

/// A user's key: certifies the user's devices. Held by the device that created
/// the user.
pub struct UserKeys {
    signing: SigningKey,
}

impl std::fmt::Debug for UserKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserKeys")
            .field("user", &self.user_id())
            .finish_non_exhaustive()
    }
}

impl UserKeys {
    pub fn generate() -> Self {
        let secret = Zeroizing::new(rand::random::<[u8; 32]>());
        Self {
            signing: SigningKey::from_bytes(&secret),
        }
    }

    pub fn user_id(&self) -> UserId {
        UserId(self.signing.verifying_key().to_bytes())
    }

    /// Completes `cert` (the device's half, from [`DeviceKeys::cert_for_user`]) with
    /// the user's half; `None` unless the result verifies.
    pub fn complete(&self, cert: &DeviceCert) -> Option<DeviceCert> {
        let done = DeviceCert {
            user_sig: self.link(&cert.device, &cert.agreement),
            ..*cert
        };
        (done.user == self.user_id() && done.verify()).then_some(done)
    }

    /// The user's half of a device certificate: the user claims the device.
    pub fn link(&self, device: &DeviceId, agreement: &[u8; 32]) -> Sig {
        Sig(self
            .signing
            .sign(&DeviceCert::link_input(&self.user_id(), device, agreement))
            .to_bytes())
    }

    /// The user key in `home`, if this device holds it (it created the user).
    pub fn load(home: &Path) -> Result<Option<Self>, Error> {
        match read_key_file(home, USER_KEY_FILE, USER_KEY_MAGIC, 32) {
            Ok(bytes) => Ok(Some(Self {
                signing: SigningKey::from_bytes(&bytes[..32].try_into().expect("32 bytes")),
            })),
            Err(Error::Missing(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Reads `magic ‖ len bytes` from `home/name`.
pub(crate) fn read_key_file(home: &Path, name: &str, magic: &[u8; 8], len: usize) -> Result<Zeroizing<Vec<u8>>, Error> {
    let path = home.join(name);
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
    if bytes.len() != 8 + len || &bytes[..8] != magic {
        return Err(Error::Corrupt(path));
    }
    Ok(Zeroizing::new(bytes[8..].to_vec()))
}

/// Writes `magic ‖ contents` to `home/name`, 0600, durably. Without `replace`,
/// refuses to overwrite; with it, writes a temporary file and renames it over.
pub(crate) fn write_key_file(
    home: &Path,
    name: &str,
    magic: &[u8; 8],
    contents: &[u8],
    replace: bool,
) -> Result<(), Error> {
    let path = home.join(name);
    let target = if replace {
        home.join(format!("{name}.new"))
    } else {
        path.clone()
    };
    let io = |source| Error::Io {
        path: path.clone(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if replace {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(&target).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Error::AlreadyExists(home.to_path_buf())
        } else {
            io(e)
        }
    })?;
    let mut bytes = Zeroizing::new(magic.to_vec());
    bytes.extend_from_slice(contents);
    file.write_all(&bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    if replace {
        fs::rename(&target, &path).map_err(io)?;
    }
    Ok(())
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

/// A device's public keys and its user, signed by both the device and the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCert {
    pub device: DeviceId,
    /// X25519 public key for key wrapping.
    pub agreement: [u8; 32],
    /// The user this device belongs to.
    pub user: UserId,
    /// The device's signature over (device, agreement, user).
    pub sig: Sig,
    /// The user's signature over (user, device, agreement).
    pub user_sig: Sig,
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
    fn signing_input(device: &DeviceId, agreement: &[u8; 32], user: &UserId) -> Vec<u8> {
        let mut m = Vec::with_capacity(CERT_CONTEXT.len() + 96);
        m.extend_from_slice(CERT_CONTEXT);
        m.extend_from_slice(&device.0);
        m.extend_from_slice(agreement);
        m.extend_from_slice(&user.0);
        m
    }

    fn link_input(user: &UserId, device: &DeviceId, agreement: &[u8; 32]) -> Vec<u8> {
        let mut m = Vec::with_capacity(USER_LINK_CONTEXT.len() + 96);
        m.extend_from_slice(USER_LINK_CONTEXT);
        m.extend_from_slice(&user.0);
        m.extend_from_slice(&device.0);
        m.extend_from_slice(agreement);
        m
    }

    /// Whether the device and its user both signed: the agreement key and the user
    /// are the device's, and the user claims the device.
    pub fn verify(&self) -> bool {
        verify_batch(
            [
                (
                    &self.device,
                    Self::signing_input(&self.device, &self.agreement, &self.user),
                    self.sig.0,
                ),
                (
                    &DeviceId(self.user.0),
                    Self::link_input(&self.user, &self.device, &self.agreement),
                    self.user_sig.0,
                ),
            ]
            .into_iter(),
        )
    }

    /// A printable form to hand to other people (`opd1…`).
    pub fn to_card(&self) -> String {
        let mut raw = Vec::with_capacity(CARD_BYTES);
        raw.extend_from_slice(&self.device.0);
        raw.extend_from_slice(&self.agreement);
        raw.extend_from_slice(&self.user.0);
        raw.extend_from_slice(&self.sig.0);
        raw.extend_from_slice(&self.user_sig.0);
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
        if raw.len() != CARD_BYTES {
            return Err(CardError::Encoding);
        }
        let part = |from: usize, to: usize| raw[from..to].to_vec();
        let cert = Self {
            device: DeviceId(part(0, 32).try_into().expect("32 bytes")),
            agreement: part(32, 64).try_into().expect("32 bytes"),
            user: UserId(part(64, 96).try_into().expect("32 bytes")),
            sig: Sig(part(96, 160).try_into().expect("64 bytes")),
            user_sig: Sig(part(160, 224).try_into().expect("64 bytes")),
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
        assert_eq!(mode(&home.join(USER_KEY_FILE)), 0o600);
        assert_eq!(loaded.cert(), keys.cert());
        let user = UserKeys::load(&home)
            .unwrap()
            .expect("the creating device holds the user key");
        assert_eq!(user.user_id(), keys.user_id());
        // Moving to another user: only with that user's signature over this device.
        let other = UserKeys::generate();
        assert!(!loaded.set_user(other.user_id(), user.link(&keys.device_id(), &keys.agreement_public())));
        assert!(loaded.set_user(other.user_id(), other.link(&keys.device_id(), &keys.agreement_public())));
        loaded.save_user_link(&home).unwrap();
        assert_eq!(DeviceKeys::load(&home).unwrap().user_id(), other.user_id());
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
        // A user cannot claim someone else's device, nor a device another user.
        let mut claimed = cert;
        claimed.user = other.user;
        claimed.user_sig = other.user_sig;
        assert!(!claimed.verify());
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
