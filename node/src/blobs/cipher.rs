//! How an attachment is encrypted: in chunks of [`PLAIN_CHUNK`] bytes, each
//! sealed with ChaCha20-Poly1305 under the file's own random key, the chunk's
//! index as the nonce and "is this the last chunk" bound in. A sealed chunk is
//! exactly 64 KiB (four 16 KiB bao chunk groups), so any verified range of the
//! ciphertext decrypts on its own, and a download resumes chunk by chunk.
//!
//! A key encrypts one file only, so counter nonces never repeat. Binding the
//! last-chunk flag stops a truncated file from decrypting as a shorter one.

use chacha20poly1305::{
    ChaCha20Poly1305, Nonce,
    aead::{Aead, KeyInit, Payload},
};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

const AAD_CONTEXT: &[u8] = b"outpost/file-chunk/v1";
const TAG: usize = 16;
/// Plaintext bytes per chunk.
pub const PLAIN_CHUNK: usize = 65_520;
/// Ciphertext bytes per full chunk: 64 KiB.
pub const CIPHER_CHUNK: usize = PLAIN_CHUNK + TAG;

/// A file's key, carried only in its message's sealed body: retracting the
/// message deletes it. Zeroized on drop; never printed.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
pub struct FileKey(pub [u8; 32]);

impl std::fmt::Debug for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileKey(..)")
    }
}

impl FileKey {
    pub fn random() -> Self {
        Self(rand::random())
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new_from_slice(&self.0).expect("the key is 32 bytes")
    }
}

/// Chunks a file of `plain` bytes is sealed in: at least one (an empty file
/// is one empty last chunk), so every ciphertext ends in a chunk marked last.
pub fn chunks(plain: u64) -> u64 {
    plain.div_ceil(PLAIN_CHUNK as u64).max(1)
}

/// The ciphertext size of a file of `plain` bytes (at most
/// [`crate::blobs::MAX_FILE_BYTES`]: checked where a size is taken in).
pub fn cipher_size(plain: u64) -> u64 {
    checked_cipher_size(plain).unwrap_or(u64::MAX)
}

/// The ciphertext size of a file of `plain` bytes, `None` past `u64`.
pub fn checked_cipher_size(plain: u64) -> Option<u64> {
    (TAG as u64)
        .checked_mul(chunks(plain))
        .and_then(|tags| plain.checked_add(tags))
}

fn nonce(index: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&index.to_le_bytes());
    Nonce::from(n)
}

fn aad(index: u64, last: bool) -> Vec<u8> {
    let mut aad = AAD_CONTEXT.to_vec();
    aad.extend_from_slice(&index.to_le_bytes());
    aad.push(last as u8);
    aad
}

pub fn seal_chunk(key: &FileKey, index: u64, last: bool, plain: &[u8]) -> Vec<u8> {
    debug_assert!(plain.len() <= PLAIN_CHUNK);
    let aad = aad(index, last);
    key.cipher()
        .encrypt(&nonce(index), Payload { msg: plain, aad: &aad })
        .expect("ChaCha20-Poly1305 encrypts any chunk")
}

/// The plaintext of chunk `index`, or `None` when it was altered (or the key is wrong).
pub fn open_chunk(key: &FileKey, index: u64, last: bool, sealed: &[u8]) -> Option<Vec<u8>> {
    let aad = aad(index, last);
    key.cipher()
        .decrypt(&nonce(index), Payload { msg: sealed, aad: &aad })
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_and_bind_index_and_end() {
        let key = FileKey::random();
        let sealed = seal_chunk(&key, 3, false, b"hello");
        assert_eq!(sealed.len(), 5 + TAG);
        assert_eq!(open_chunk(&key, 3, false, &sealed).unwrap(), b"hello");
        assert!(open_chunk(&key, 4, false, &sealed).is_none(), "moved chunk");
        assert!(open_chunk(&key, 3, true, &sealed).is_none(), "truncation");
        assert!(open_chunk(&FileKey::random(), 3, false, &sealed).is_none(), "other key");
    }

    #[test]
    fn sizes() {
        assert_eq!(CIPHER_CHUNK, 64 << 10);
        assert_eq!(cipher_size(0), 16);
        assert_eq!(cipher_size(PLAIN_CHUNK as u64), CIPHER_CHUNK as u64);
        assert_eq!(cipher_size(PLAIN_CHUNK as u64 + 1), CIPHER_CHUNK as u64 + 17);
    }
}
