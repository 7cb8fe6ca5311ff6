//! Sealed envelopes: the only form in which space content travels or is stored.
//!
//! Wire format, version 1 (see docs/protocol.md):
//!
//! ```text
//! version: u8 = 1
//! header_len: varint ≤ MAX_HEADER_BYTES, header: postcard(Header)
//! body_len: varint ≤ MAX_BODY_BYTES,     body
//! signature: [u8; 64]   ed25519 by header.author over
//!                       "outpost/v1/<kind>\0" ‖ version ‖ u32le(header_len) ‖ header ‖ body
//! ```
//!
//! Content body = nonce(24) ‖ XChaCha20-Poly1305(epoch content key, change bytes),
//! associated data "outpost/v1/content\0" ‖ version ‖ header. Control body =
//! postcard(ControlOp), signed plaintext. Snapshot body: see [`crate::snapshot`]. The id of an envelope is BLAKE3 of its
//! exact bytes; the signature covers exactly the stored bytes, never a re-encoding.

use serde::{Deserialize, Serialize};

use crate::{
    control::ControlOp,
    crypto::EpochKey,
    identity::{self, DeviceKeys},
    ids::{ActorKey, DeviceId, DocId, EnvelopeId, EpochId, SpaceId},
};

/// The envelope format version this build writes and reads.
pub const VERSION: u8 = 1;
/// Largest envelope accepted: a chat change is a few hundred bytes; 1 MiB leaves room
/// for big pastes while bounding what one peer can make us hold per envelope.
pub const MAX_ENVELOPE_BYTES: usize = 1 << 20;
/// Largest snapshot envelope: a whole document, which must still travel in one
/// sync frame ([`crate::sync::MAX_FRAME_BYTES`] is 4 MiB). A bigger document is
/// synced change by change (chat history is sharded to stay well below this).
pub const MAX_SNAPSHOT_BYTES: usize = 3 << 20;
/// Largest header: ids plus parents and control heads stay well below this.
pub const MAX_HEADER_BYTES: usize = 8 << 10;
/// Most parents an envelope may name: a change depends on the heads its author saw;
/// more than this many concurrent heads means a misbehaving author.
pub const MAX_PARENTS: usize = 64;
/// Most control-log heads an envelope may name.
pub const MAX_CONTROL_HEADS: usize = 16;
const NONCE_LEN: usize = 24;
const SIG_LEN: usize = 64;

/// What an envelope carries.
///
/// postcard encodes the variant index: never reorder, only append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// Signed plaintext membership and key operations.
    Control,
    /// One encrypted Automerge change.
    Content,
    /// A whole document sealed under the epoch key, with the signed last envelope of
    /// every writer it covers (see [`crate::snapshot`]).
    Snapshot,
    /// A chat message's body (its text), sealed under the epoch key outside the
    /// Automerge document, so it can be deleted. Its header names the change
    /// whose skeleton points at it: same doc, actor and `seq`, no parents.
    Body,
    /// Signed, in clear: the bodies a retraction deletes (their envelope ids).
    /// Its header names the change that carries the retraction, like a body's.
    Tombstone,
    /// A device's last-writer-wins value (a read receipt), sealed under the
    /// epoch key: `doc` names what it is about, `seq` is a counter, and a
    /// newer one replaces the older for (space, doc, author). No parents.
    State,
}

/// Most bodies one tombstone names.
pub const MAX_TOMBSTONE_TARGETS: usize = 256;

impl Kind {
    fn signing_context(self) -> &'static [u8] {
        match self {
            Kind::Control => b"outpost/v1/control\0",
            Kind::Content => b"outpost/v1/content\0",
            Kind::Snapshot => b"outpost/v1/snapshot\0",
            Kind::Body => b"outpost/v1/body\0",
            Kind::Tombstone => b"outpost/v1/tombstone\0",
            Kind::State => b"outpost/v1/state\0",
        }
    }

    /// Whether envelopes of this kind are kept beside the space's log (bodies
    /// and tombstones ride with a content change; states stand alone).
    pub fn is_side(self) -> bool {
        matches!(self, Kind::Body | Kind::Tombstone | Kind::State)
    }
}

/// The signed header. Everything a relay needs to store, order and forward an
/// envelope is here, in clear; nothing here reveals content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub kind: Kind,
    pub space: SpaceId,
    pub doc: DocId,
    /// The epoch whose key sealed the body; all zero for control envelopes.
    pub epoch: EpochId,
    pub author: DeviceId,
    pub incarnation: u64,
    /// Equals the Automerge change's seq for content.
    pub seq: u64,
    /// Envelopes carrying the change's dependencies (never Automerge hashes in clear).
    pub parents: Vec<EnvelopeId>,
    /// The control-log heads the author wrote under.
    pub control_heads: Vec<EnvelopeId>,
}

impl Header {
    /// The Automerge actor this header's author writes as.
    pub fn actor(&self) -> ActorKey {
        ActorKey(outpost_crdt::writer::actor_bytes(
            &self.author.0,
            &self.doc,
            self.incarnation,
        ))
    }
}

/// Why bytes are not a well-formed envelope.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("envelope of {0} bytes exceeds the {MAX_ENVELOPE_BYTES}-byte cap")]
    TooLarge(usize),
    #[error("unknown envelope version {0}")]
    Version(u8),
    #[error("envelope truncated")]
    Truncated,
    #[error("header of {0} bytes exceeds the cap")]
    HeaderTooLarge(usize),
    #[error("header does not decode")]
    Header,
    #[error("{0} parents or control heads exceed the cap")]
    TooManyRefs(usize),
    #[error("trailing bytes after the signature")]
    Trailing,
    #[error("bad signature")]
    Signature,
    #[error("a {0:?} envelope has a malformed body")]
    Body(Kind),
}

/// A decoded, signature-checked envelope. Holding one means: well-formed, within
/// caps, and signed by `header.author`. Nothing more (membership is checked later).
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    bytes: Vec<u8>,
    id: EnvelopeId,
    header: Header,
    header_start: usize,
    header_end: usize,
    body_start: usize,
    sig_start: usize,
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field("id", &self.id)
            .field("kind", &self.header.kind)
            .field("author", &self.header.author)
            .field("seq", &self.header.seq)
            .finish()
    }
}

impl Envelope {
    /// Parses `bytes` and verifies the author's signature.
    pub fn decode(bytes: Vec<u8>) -> Result<Self, DecodeError> {
        let env = Self::parse(bytes)?;
        if identity::verify(&env.header.author, &env.signing_input(), &env.signature()) {
            Ok(env)
        } else {
            Err(DecodeError::Signature)
        }
    }

    /// Decodes many envelopes at once, verifying their signatures in batches
    /// (about twice as fast as one by one), split over the machine's cores when
    /// there are many; the result is exactly what [`Envelope::decode`] gives for each.
    pub fn decode_all(raw: Vec<Vec<u8>>) -> Vec<Result<Self, DecodeError>> {
        /// Below this many signatures per core, one batch on one thread is faster.
        const PER_THREAD: usize = 256;
        let parsed: Vec<Result<Self, DecodeError>> = raw.into_iter().map(Self::parse).collect();
        let ok: Vec<&Self> = parsed.iter().filter_map(|r| r.as_ref().ok()).collect();
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .clamp(1, 4)
            .min(ok.len() / PER_THREAD)
            .max(1);
        let verify = |chunk: &[&Self]| {
            identity::verify_batch(
                chunk
                    .iter()
                    .map(|e| (&e.header.author, e.signing_input(), e.signature())),
            )
        };
        let all_good = if threads == 1 {
            verify(&ok)
        } else {
            std::thread::scope(|scope| {
                let workers: Vec<_> = ok
                    .chunks(ok.len().div_ceil(threads))
                    .map(|chunk| scope.spawn(move || verify(chunk)))
                    .collect();
                workers.into_iter().all(|w| w.join().unwrap_or(false))
            })
        };
        if all_good {
            return parsed;
        }
        // Some signature is bad: find which, one by one.
        parsed
            .into_iter()
            .map(|r| {
                r.and_then(|env| {
                    if identity::verify(&env.header.author, &env.signing_input(), &env.signature()) {
                        Ok(env)
                    } else {
                        Err(DecodeError::Signature)
                    }
                })
            })
            .collect()
    }

    /// Decodes an envelope this node verified before storing it: everything is
    /// checked but the signature, which start-up would otherwise re-verify for
    /// every stored envelope. Never use it on bytes from a peer.
    pub(crate) fn decode_stored(bytes: Vec<u8>) -> Result<Self, DecodeError> {
        Self::parse(bytes)
    }

    /// Parses and checks everything but the signature.
    fn parse(bytes: Vec<u8>) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_SNAPSHOT_BYTES {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        let (&version, rest) = bytes.split_first().ok_or(DecodeError::Truncated)?;
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        let (header_len, rest) = read_varint(rest)?;
        if header_len > MAX_HEADER_BYTES {
            return Err(DecodeError::HeaderTooLarge(header_len));
        }
        let header_start = bytes.len() - rest.len();
        let header_bytes = rest.get(..header_len).ok_or(DecodeError::Truncated)?;
        let header_end = header_start + header_len;
        let (body_len, rest) = read_varint(&rest[header_len..])?;
        let body_start = bytes.len() - rest.len();
        if rest.len() < body_len.saturating_add(SIG_LEN) {
            return Err(DecodeError::Truncated);
        }
        if rest.len() != body_len + SIG_LEN {
            return Err(DecodeError::Trailing);
        }
        let header: Header = postcard::from_bytes(header_bytes).map_err(|_| DecodeError::Header)?;
        // One byte form per header: postcard ignores trailing bytes, so an author
        // could otherwise sign several encodings of one header (distinct ids).
        if encode_header(&header) != header_bytes {
            return Err(DecodeError::Header);
        }
        if header.kind != Kind::Snapshot && bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        if header.parents.len() > MAX_PARENTS || header.control_heads.len() > MAX_CONTROL_HEADS {
            return Err(DecodeError::TooManyRefs(
                header.parents.len() + header.control_heads.len(),
            ));
        }
        if header.kind.is_side() && !header.parents.is_empty() {
            return Err(DecodeError::Body(header.kind));
        }
        let sig_start = body_start + body_len;
        if header.kind == Kind::Tombstone && tombstone_targets(&bytes[body_start..sig_start]).is_none() {
            return Err(DecodeError::Body(Kind::Tombstone));
        }
        Ok(Self {
            id: EnvelopeId::of(&bytes),
            bytes,
            header,
            header_start,
            header_end,
            body_start,
            sig_start,
        })
    }

    fn signing_input(&self) -> Vec<u8> {
        signing_input(self.header.kind, self.header_bytes(), self.body())
    }

    pub fn signature(&self) -> [u8; SIG_LEN] {
        self.bytes[self.sig_start..]
            .try_into()
            .expect("parse leaves exactly 64 bytes of signature")
    }

    /// Seals one Automerge change under `epoch`.
    pub fn seal_content(keys: &DeviceKeys, header: Header, epoch: &EpochKey, change: &[u8]) -> Self {
        debug_assert_eq!(header.kind, Kind::Content);
        debug_assert_eq!(header.author, keys.device_id());
        let header_bytes = encode_header(&header);
        let body = seal(epoch, header.kind, &header_bytes, change);
        Self::assemble(keys, header, header_bytes, body)
    }

    /// Seals a chat message's body ([`Kind::Body`]) or a state value
    /// ([`Kind::State`]) under `epoch`.
    pub fn seal_value(keys: &DeviceKeys, header: Header, epoch: &EpochKey, plaintext: &[u8]) -> Self {
        debug_assert!(matches!(header.kind, Kind::Body | Kind::State));
        debug_assert!(header.parents.is_empty());
        let kind = header.kind;
        Self::sign_with(keys, header, |h| seal(epoch, kind, h, plaintext))
    }

    /// Decrypts a body or state envelope's plaintext.
    pub fn open_value(&self, epoch: &EpochKey) -> Result<Vec<u8>, crate::crypto::Error> {
        if !matches!(self.header.kind, Kind::Body | Kind::State) {
            return Err(crate::crypto::Error::Aead);
        }
        self.open_sealed(epoch, self.body())
    }

    /// Signs a tombstone naming the bodies to delete (at most
    /// [`MAX_TOMBSTONE_TARGETS`]).
    pub fn sign_tombstone(keys: &DeviceKeys, header: Header, targets: &[EnvelopeId]) -> Self {
        debug_assert_eq!(header.kind, Kind::Tombstone);
        debug_assert!(targets.len() <= MAX_TOMBSTONE_TARGETS);
        let body = postcard::to_stdvec(targets).expect("ids always serialize");
        Self::sign_with(keys, header, |_| body)
    }

    /// The bodies a tombstone deletes; empty for any other kind.
    pub fn tombstone_targets(&self) -> Vec<EnvelopeId> {
        match self.header.kind {
            Kind::Tombstone => tombstone_targets(self.body()).unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// Signs an envelope whose body `make_body` builds; it gets the encoded
    /// header, to seal parts of the body with the header as associated data
    /// ([`seal`]).
    pub(crate) fn sign_with(keys: &DeviceKeys, header: Header, make_body: impl FnOnce(&[u8]) -> Vec<u8>) -> Self {
        debug_assert_eq!(header.author, keys.device_id());
        let header_bytes = encode_header(&header);
        let body = make_body(&header_bytes);
        Self::assemble(keys, header, header_bytes, body)
    }

    /// Signs a control operation.
    pub fn sign_control(keys: &DeviceKeys, header: Header, op: &ControlOp) -> Self {
        debug_assert_eq!(header.kind, Kind::Control);
        let header_bytes = encode_header(&header);
        let body = postcard::to_stdvec(op).expect("control ops always serialize");
        Self::assemble(keys, header, header_bytes, body)
    }

    /// The exact bytes of the envelope with this header, body and signature (no
    /// check is made: decode the result to verify it). Packed sync frames send
    /// headers factored out and rebuild envelopes with this.
    pub fn raw_from_parts(header: &Header, body: &[u8], sig: &[u8; SIG_LEN]) -> Vec<u8> {
        let header_bytes = encode_header(header);
        let mut bytes = Vec::with_capacity(1 + 10 + header_bytes.len() + body.len() + SIG_LEN);
        bytes.push(VERSION);
        write_varint(&mut bytes, header_bytes.len());
        bytes.extend_from_slice(&header_bytes);
        write_varint(&mut bytes, body.len());
        bytes.extend_from_slice(body);
        bytes.extend_from_slice(sig);
        bytes
    }

    fn assemble(keys: &DeviceKeys, header: Header, header_bytes: Vec<u8>, body: Vec<u8>) -> Self {
        let sig = keys.sign(&signing_input(header.kind, &header_bytes, &body));
        let mut bytes = Vec::with_capacity(1 + 10 + header_bytes.len() + body.len() + SIG_LEN);
        bytes.push(VERSION);
        write_varint(&mut bytes, header_bytes.len());
        let header_start = bytes.len();
        bytes.extend_from_slice(&header_bytes);
        let header_end = bytes.len();
        write_varint(&mut bytes, body.len());
        let body_start = bytes.len();
        bytes.extend_from_slice(&body);
        let sig_start = bytes.len();
        bytes.extend_from_slice(&sig);
        Self {
            id: EnvelopeId::of(&bytes),
            bytes,
            header,
            header_start,
            header_end,
            body_start,
            sig_start,
        }
    }

    /// Decrypts a content envelope's change bytes.
    pub fn open_content(&self, epoch: &EpochKey) -> Result<Vec<u8>, crate::crypto::Error> {
        if self.header.kind != Kind::Content {
            return Err(crate::crypto::Error::Aead);
        }
        self.open_sealed(epoch, self.body())
    }

    /// Decrypts `sealed` (nonce ‖ ciphertext, part of this envelope's body) that
    /// was sealed with this envelope's kind and header as associated data.
    pub(crate) fn open_sealed(&self, epoch: &EpochKey, sealed: &[u8]) -> Result<Vec<u8>, crate::crypto::Error> {
        if sealed.len() < NONCE_LEN {
            return Err(crate::crypto::Error::Aead);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| crate::crypto::Error::Aead)?;
        epoch.open(&nonce, &sealed_aad(self.header.kind, self.header_bytes()), ct)
    }

    /// Decodes a control envelope's operation.
    pub fn control_op(&self) -> Result<ControlOp, DecodeError> {
        if self.header.kind != Kind::Control {
            return Err(DecodeError::Body(self.header.kind));
        }
        match postcard::take_from_bytes(self.body()) {
            Ok((op, [])) => Ok(op),
            _ => Err(DecodeError::Body(Kind::Control)),
        }
    }

    pub fn id(&self) -> EnvelopeId {
        self.id
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The exact bytes, as signed, stored and forwarded.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    fn header_bytes(&self) -> &[u8] {
        &self.bytes[self.header_start..self.header_end]
    }

    /// The body as signed: sealed ciphertext (content) or the control op.
    pub fn body(&self) -> &[u8] {
        &self.bytes[self.body_start..self.sig_start]
    }
}

/// A tombstone body: postcard of at most [`MAX_TOMBSTONE_TARGETS`] ids, nothing after.
fn tombstone_targets(body: &[u8]) -> Option<Vec<EnvelopeId>> {
    match postcard::take_from_bytes::<Vec<EnvelopeId>>(body) {
        Ok((ids, [])) if !ids.is_empty() && ids.len() <= MAX_TOMBSTONE_TARGETS => Some(ids),
        _ => None,
    }
}

fn encode_header(header: &Header) -> Vec<u8> {
    postcard::to_stdvec(header).expect("headers always serialize")
}

fn signing_input(kind: Kind, header: &[u8], body: &[u8]) -> Vec<u8> {
    let ctx = kind.signing_context();
    let mut m = Vec::with_capacity(ctx.len() + 5 + header.len() + body.len());
    m.extend_from_slice(ctx);
    m.push(VERSION);
    m.extend_from_slice(&(header.len() as u32).to_le_bytes());
    m.extend_from_slice(header);
    m.extend_from_slice(body);
    m
}

/// nonce(24) ‖ XChaCha20-Poly1305(epoch content key, plaintext), bound to the
/// envelope's kind and exact header bytes.
pub(crate) fn seal(epoch: &EpochKey, kind: Kind, header: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let (nonce, ct) = epoch.seal(&sealed_aad(kind, header), plaintext);
    let mut sealed = Vec::with_capacity(NONCE_LEN + ct.len());
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(&ct);
    sealed
}

fn sealed_aad(kind: Kind, header: &[u8]) -> Vec<u8> {
    let ctx = kind.signing_context();
    let mut aad = Vec::with_capacity(ctx.len() + 1 + header.len());
    aad.extend_from_slice(ctx);
    aad.push(VERSION);
    aad.extend_from_slice(header);
    aad
}

/// LEB128, at most 4 bytes (values below 2^28, far above every cap).
fn read_varint(buf: &[u8]) -> Result<(usize, &[u8]), DecodeError> {
    let mut value = 0usize;
    for (i, &b) in buf.iter().enumerate().take(4) {
        value |= ((b & 0x7f) as usize) << (7 * i);
        if b & 0x80 == 0 {
            // Reject non-minimal encodings so every length has one byte form.
            if i > 0 && b == 0 {
                return Err(DecodeError::Truncated);
            }
            return Ok((value, &buf[i + 1..]));
        }
    }
    Err(DecodeError::Truncated)
}

fn write_varint(out: &mut Vec<u8>, mut value: usize) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(keys: &DeviceKeys, epoch: &EpochKey) -> Header {
        Header {
            kind: Kind::Content,
            space: epoch.space,
            doc: epoch.space.chat_shard(0),
            epoch: epoch.id,
            author: keys.device_id(),
            incarnation: 9,
            seq: 1,
            parents: vec![EnvelopeId([1; 32])],
            control_heads: vec![EnvelopeId([2; 32])],
        }
    }

    #[test]
    fn seal_decode_open() {
        let keys = DeviceKeys::generate();
        let epoch = EpochKey::generate(SpaceId([3; 16]));
        let env = Envelope::seal_content(&keys, header(&keys, &epoch), &epoch, b"change");
        let back = Envelope::decode(env.as_bytes().to_vec()).unwrap();
        assert_eq!(back, env);
        assert_eq!(back.open_content(&epoch).unwrap(), b"change");
        let other = EpochKey::generate(SpaceId([3; 16]));
        assert!(back.open_content(&other).is_err());
        assert!(!env.as_bytes().windows(6).any(|w| w == b"change"));
    }

    #[test]
    fn every_flipped_byte_is_rejected() {
        let keys = DeviceKeys::generate();
        let epoch = EpochKey::generate(SpaceId([3; 16]));
        let env = Envelope::seal_content(&keys, header(&keys, &epoch), &epoch, b"change");
        for i in 0..env.as_bytes().len() {
            let mut bytes = env.as_bytes().to_vec();
            bytes[i] ^= 0x01;
            assert!(Envelope::decode(bytes).is_err(), "flip at {i} accepted");
        }
        for len in 0..env.as_bytes().len() {
            assert!(Envelope::decode(env.as_bytes()[..len].to_vec()).is_err());
        }
    }

    #[test]
    fn caps_are_enforced() {
        assert_eq!(
            Envelope::decode(vec![1; MAX_SNAPSHOT_BYTES + 1]),
            Err(DecodeError::TooLarge(MAX_SNAPSHOT_BYTES + 1))
        );
        assert_eq!(Envelope::decode(vec![2, 0]), Err(DecodeError::Version(2)));
        let keys = DeviceKeys::generate();
        let epoch = EpochKey::generate(SpaceId([3; 16]));
        // Only snapshots may exceed the envelope cap.
        let big = Envelope::seal_content(&keys, header(&keys, &epoch), &epoch, &vec![0; MAX_ENVELOPE_BYTES]);
        let len = big.as_bytes().len();
        assert_eq!(Envelope::decode(big.into_bytes()), Err(DecodeError::TooLarge(len)));
        let mut h = header(&keys, &epoch);
        h.parents = vec![EnvelopeId([0; 32]); MAX_PARENTS + 1];
        let env = Envelope::seal_content(&keys, h, &epoch, b"x");
        assert!(matches!(
            Envelope::decode(env.into_bytes()),
            Err(DecodeError::TooManyRefs(_))
        ));
    }

    proptest::proptest! {
        /// Decoding arbitrary bytes never panics.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = Envelope::decode(bytes);
        }

        /// Any mutation of a valid envelope (byte flips, truncation, extension) is
        /// rejected without panicking.
        #[test]
        fn mutations_are_rejected(pos in 0usize..400, xor in 1u8..=255, cut in 0usize..400, extra in 1usize..8) {
            let keys = DeviceKeys::generate();
            let epoch = EpochKey::generate(SpaceId([3; 16]));
            let env = Envelope::seal_content(&keys, header(&keys, &epoch), &epoch, b"change");
            let bytes = env.as_bytes().to_vec();
            let mut flipped = bytes.clone();
            let i = pos % flipped.len();
            flipped[i] ^= xor;
            proptest::prop_assert!(Envelope::decode(flipped).is_err());
            proptest::prop_assert!(Envelope::decode(bytes[..cut % bytes.len()].to_vec()).is_err());
            let mut longer = bytes.clone();
            longer.extend(std::iter::repeat_n(0u8, extra));
            proptest::prop_assert!(Envelope::decode(longer).is_err());
        }
    }

    #[test]
    fn batch_decoding_finds_the_bad_signature() {
        let keys = DeviceKeys::generate();
        let other = DeviceKeys::generate();
        let epoch = EpochKey::generate(SpaceId([3; 16]));
        let mut raw: Vec<Vec<u8>> = (1..=5)
            .map(|seq| {
                let signer = if seq % 2 == 0 { &keys } else { &other };
                let mut h = header(signer, &epoch);
                h.seq = seq;
                Envelope::seal_content(signer, h, &epoch, b"change").into_bytes()
            })
            .collect();
        let all_good = Envelope::decode_all(raw.clone());
        assert!(all_good.iter().all(Result::is_ok));
        raw[3][10] ^= 1;
        raw.push(vec![9; 3]);
        let verdicts: Vec<Result<(), DecodeError>> = Envelope::decode_all(raw.clone())
            .into_iter()
            .map(|r| r.map(drop))
            .collect();
        let one_by_one: Vec<Result<(), DecodeError>> = raw.into_iter().map(|b| Envelope::decode(b).map(drop)).collect();
        assert_eq!(verdicts, one_by_one);
        assert_eq!(verdicts.iter().filter(|v| v.is_err()).count(), 2);
    }

    #[test]
    fn batches_split_over_threads_find_the_bad_signature_too() {
        let keys = DeviceKeys::generate();
        let epoch = EpochKey::generate(SpaceId([3; 16]));
        let mut raw: Vec<Vec<u8>> = (1..=1100)
            .map(|seq| {
                let mut h = header(&keys, &epoch);
                h.seq = seq;
                Envelope::seal_content(&keys, h, &epoch, b"change").into_bytes()
            })
            .collect();
        assert!(Envelope::decode_all(raw.clone()).iter().all(Result::is_ok));
        let last = raw[1000].len() - 1;
        raw[1000][last] ^= 1;
        let verdicts = Envelope::decode_all(raw);
        let bad: Vec<usize> = (0..verdicts.len()).filter(|&i| verdicts[i].is_err()).collect();
        assert_eq!(bad, [1000]);
        assert_eq!(verdicts[1000], Err(DecodeError::Signature));
    }

    #[test]
    fn non_canonical_headers_are_rejected() {
        let keys = DeviceKeys::generate();
        let epoch = EpochKey::generate(SpaceId([3; 16]));
        let h = header(&keys, &epoch);
        let mut header_bytes = encode_header(&h);
        header_bytes.push(0);
        let body = seal(&epoch, Kind::Content, &header_bytes, b"change");
        let env = Envelope::assemble(&keys, h, header_bytes, body);
        assert_eq!(Envelope::decode(env.into_bytes()), Err(DecodeError::Header));
    }

    #[test]
    fn varint_round_trip() {
        for v in [0usize, 1, 127, 128, 300, 16_383, 16_384, MAX_ENVELOPE_BYTES] {
            let mut buf = Vec::new();
            write_varint(&mut buf, v);
            assert_eq!(read_varint(&buf).unwrap(), (v, &[][..]));
        }
    }
}
