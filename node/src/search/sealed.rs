//! The search index at rest: every file tantivy writes is sealed, so the
//! index directory holds no plaintext of what it indexes (design-rationale
//! S1: local caches of readable text are sealed with a node storage key).
//!
//! A file is a header (magic, random salt) and chunks of [`PLAIN`] bytes,
//! each sealed with ChaCha20-Poly1305 (the attachment chunk cipher) under a
//! key derived from the node's index key and the file's salt: one key per
//! file, so counter nonces never repeat. Tantivy's files are written once and
//! read in small ranges; a read opens only the chunks it touches and keeps
//! the last few open per file. A chunk that fails to open (changed on disk,
//! or another device's key) is an I/O error, which tantivy reports; the
//! indexer then rebuilds the index.

use std::{
    collections::VecDeque,
    fmt,
    io::{self, Write},
    ops::Range,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use tantivy::{
    Directory,
    directory::{
        AntiCallToken, DirectoryLock, FileHandle, Lock, OwnedBytes, TerminatingWrite, WatchCallback, WatchHandle,
        WritePtr,
        error::{DeleteError, LockError, OpenReadError, OpenWriteError},
    },
};
use zeroize::Zeroizing;

use crate::blobs::cipher::{FileKey, open_chunk, seal_chunk};

const MAGIC: &[u8; 8] = b"OPSIDX01";
const SALT: usize = 16;
const HEADER: usize = MAGIC.len() + SALT;
const TAG: usize = 16;
/// Plaintext bytes per chunk: a sealed chunk is 16 KiB.
const PLAIN: usize = (16 << 10) - TAG;
const SEALED: usize = PLAIN + TAG;
/// Chunks kept open per file handle (a term dictionary block is read many times).
const CACHED_CHUNKS: usize = 8;

/// The key every index file's key derives from.
#[derive(Clone)]
pub struct IndexKey(Arc<Zeroizing<[u8; 32]>>);

impl IndexKey {
    pub fn new(key: [u8; 32]) -> Self {
        Self(Arc::new(Zeroizing::new(key)))
    }

    fn file_key(&self, salt: &[u8]) -> FileKey {
        let mut input = Vec::with_capacity(SALT + 32);
        input.extend_from_slice(salt);
        input.extend_from_slice(&self.0[..]);
        FileKey(blake3::derive_key("outpost 2026-12 search index file key", &input))
    }
}

impl fmt::Debug for IndexKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IndexKey(..)")
    }
}

/// A tantivy [`Directory`] that seals what it stores in `inner`.
#[derive(Clone, Debug)]
pub struct SealedDirectory {
    inner: Box<dyn Directory>,
    key: IndexKey,
}

impl SealedDirectory {
    pub fn new(inner: Box<dyn Directory>, key: IndexKey) -> Self {
        Self { inner, key }
    }
}

fn broken(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("search index file {}: {what}", path.display()),
    )
}

/// Sealed size of a file of `plain` bytes: the header and at least one
/// chunk, the last marked as such (so a truncated file does not open).
fn sealed_len(plain: usize) -> usize {
    HEADER + plain + TAG * plain.div_ceil(PLAIN).max(1)
}

/// The plaintext size of a sealed file of `sealed` bytes, if it is one.
fn plain_len(sealed: usize) -> Option<usize> {
    let body = sealed.checked_sub(HEADER)?;
    let chunks = body.div_ceil(SEALED).max(1);
    let plain = body.checked_sub(chunks * TAG)?;
    (sealed_len(plain) == sealed).then_some(plain)
}

/// Seals a whole small file at once (`atomic_write`).
fn seal_all(key: &IndexKey, plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(sealed_len(plain.len()));
    let mut writer = ChunkSealer::new(key, &mut out).expect("writing to a Vec does not fail");
    writer.push(plain).expect("writing to a Vec does not fail");
    writer.finish().expect("writing to a Vec does not fail");
    out
}

/// Opens a whole sealed file (`atomic_read`).
fn open_all(key: &IndexKey, path: &Path, sealed: &[u8]) -> io::Result<Vec<u8>> {
    let reader = ChunkOpener::new(key, path, sealed.len(), |range| Ok(sealed[range].to_vec()))?;
    reader.read(0..reader.len)
}

/// Writes sealed chunks to `out` as plaintext comes in.
struct ChunkSealer<W> {
    key: FileKey,
    out: W,
    buffer: Zeroizing<Vec<u8>>,
    index: u64,
}

impl<W: Write> ChunkSealer<W> {
    fn new(key: &IndexKey, mut out: W) -> io::Result<Self> {
        let salt: [u8; SALT] = rand::random();
        out.write_all(MAGIC)?;
        out.write_all(&salt)?;
        Ok(Self {
            key: key.file_key(&salt),
            out,
            buffer: Zeroizing::new(Vec::with_capacity(PLAIN)),
            index: 0,
        })
    }

    /// Buffers `data`; a full chunk is sealed only once more data follows,
    /// so the chunk left at [`ChunkSealer::finish`] is the last one.
    fn push(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.buffer.len() == PLAIN {
                let sealed = seal_chunk(&self.key, self.index, false, &self.buffer);
                self.out.write_all(&sealed)?;
                self.buffer.clear();
                self.index += 1;
            }
            let take = (PLAIN - self.buffer.len()).min(data.len());
            self.buffer.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        let sealed = seal_chunk(&self.key, self.index, true, &self.buffer);
        self.out.write_all(&sealed)?;
        self.buffer.clear();
        self.out.flush()
    }
}

/// An opened chunk's plaintext.
type Chunk = Arc<Zeroizing<Vec<u8>>>;
/// Reads a byte range of a sealed file from the inner directory.
type Fetch = Box<dyn Fn(Range<usize>) -> io::Result<Vec<u8>> + Send + Sync>;

/// Opens the chunks of one sealed file, reading them with `fetch` (a byte
/// range of the sealed file).
struct ChunkOpener<F> {
    key: FileKey,
    path: PathBuf,
    fetch: F,
    len: usize,
    chunks: usize,
    /// Recently opened chunks, most recent last.
    cache: Mutex<VecDeque<(usize, Chunk)>>,
}

impl<F: Fn(Range<usize>) -> io::Result<Vec<u8>>> ChunkOpener<F> {
    fn new(key: &IndexKey, path: &Path, sealed: usize, fetch: F) -> io::Result<Self> {
        let len = plain_len(sealed).ok_or_else(|| broken(path, "not a sealed index file (wrong size)"))?;
        let header = fetch(0..HEADER)?;
        if &header[..MAGIC.len()] != MAGIC {
            return Err(broken(path, "not a sealed index file"));
        }
        Ok(Self {
            key: key.file_key(&header[MAGIC.len()..]),
            path: path.to_path_buf(),
            fetch,
            len,
            chunks: len.div_ceil(PLAIN).max(1),
            cache: Mutex::new(VecDeque::new()),
        })
    }

    fn chunk(&self, index: usize) -> io::Result<Chunk> {
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(at) = cache.iter().position(|(i, _)| *i == index) {
            let hit = cache.remove(at).expect("position is in bounds");
            cache.push_back(hit.clone());
            return Ok(hit.1);
        }
        let start = HEADER + index * SEALED;
        let end = (start + SEALED).min(sealed_len(self.len));
        let sealed = (self.fetch)(start..end)?;
        let last = index + 1 == self.chunks;
        let plain = open_chunk(&self.key, index as u64, last, &sealed)
            .ok_or_else(|| broken(&self.path, "a chunk does not open (changed, or sealed by another node)"))?;
        let plain = Arc::new(Zeroizing::new(plain));
        if cache.len() == CACHED_CHUNKS {
            cache.pop_front();
        }
        cache.push_back((index, plain.clone()));
        Ok(plain)
    }

    fn read(&self, range: Range<usize>) -> io::Result<Vec<u8>> {
        if range.start > range.end || range.end > self.len {
            return Err(broken(&self.path, "read past the end"));
        }
        let mut out = Vec::with_capacity(range.len());
        let mut at = range.start;
        while at < range.end {
            let index = at / PLAIN;
            let chunk = self.chunk(index)?;
            let from = at - index * PLAIN;
            let to = (range.end - index * PLAIN).min(chunk.len());
            out.extend_from_slice(&chunk[from..to]);
            at = index * PLAIN + to;
        }
        Ok(out)
    }
}

/// A sealed file open for reading.
struct SealedFile {
    opener: ChunkOpener<Fetch>,
}

impl fmt::Debug for SealedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedFile")
            .field("path", &self.opener.path)
            .field("len", &self.opener.len)
            .finish()
    }
}

impl tantivy::HasLen for SealedFile {
    fn len(&self) -> usize {
        self.opener.len
    }
}

impl FileHandle for SealedFile {
    fn read_bytes(&self, range: Range<usize>) -> io::Result<OwnedBytes> {
        self.opener.read(range).map(OwnedBytes::new)
    }
}

/// A sealed file being written.
struct SealedWriter {
    sealer: ChunkSealer<WritePtr>,
}

impl Write for SealedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.sealer.push(data)?;
        Ok(data.len())
    }

    /// Sealing works in whole chunks: a flush writes nothing until the file
    /// ends (tantivy reads a file only after terminating it).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TerminatingWrite for SealedWriter {
    fn terminate_ref(&mut self, token: AntiCallToken) -> io::Result<()> {
        self.sealer.finish()?;
        self.sealer.out.terminate_ref(token)
    }
}

impl Directory for SealedDirectory {
    fn get_file_handle(&self, path: &Path) -> Result<Arc<dyn FileHandle>, OpenReadError> {
        let inner = self.inner.get_file_handle(path)?;
        let sealed = inner.len();
        let fetch = move |range: Range<usize>| inner.read_bytes(range).map(|b| b.as_slice().to_vec());
        let opener = ChunkOpener::new(&self.key, path, sealed, Box::new(fetch) as Box<_>)
            .map_err(|io_error| OpenReadError::wrap_io_error(io_error, path.to_path_buf()))?;
        Ok(Arc::new(SealedFile { opener }))
    }

    fn delete(&self, path: &Path) -> Result<(), DeleteError> {
        self.inner.delete(path)
    }

    fn exists(&self, path: &Path) -> Result<bool, OpenReadError> {
        self.inner.exists(path)
    }

    fn open_write(&self, path: &Path) -> Result<WritePtr, OpenWriteError> {
        let out = self.inner.open_write(path)?;
        let sealer = ChunkSealer::new(&self.key, out)
            .map_err(|io_error| OpenWriteError::wrap_io_error(io_error, path.to_path_buf()))?;
        let writer = SealedWriter { sealer };
        Ok(io::BufWriter::new(Box::new(writer)))
    }

    fn atomic_read(&self, path: &Path) -> Result<Vec<u8>, OpenReadError> {
        let sealed = self.inner.atomic_read(path)?;
        open_all(&self.key, path, &sealed).map_err(|e| OpenReadError::wrap_io_error(e, path.to_path_buf()))
    }

    fn atomic_write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.inner.atomic_write(path, &seal_all(&self.key, data))
    }

    fn sync_directory(&self) -> io::Result<()> {
        self.inner.sync_directory()
    }

    fn acquire_lock(&self, lock: &Lock) -> Result<DirectoryLock, LockError> {
        // Lock files hold nothing: the inner directory's own locking serves.
        self.inner.acquire_lock(lock)
    }

    fn watch(&self, callback: WatchCallback) -> tantivy::Result<WatchHandle> {
        self.inner.watch(callback)
    }
}

#[cfg(test)]
mod tests {
    use tantivy::directory::RamDirectory;

    use super::*;

    fn dir() -> (SealedDirectory, RamDirectory) {
        let ram = RamDirectory::create();
        (SealedDirectory::new(Box::new(ram.clone()), IndexKey::new([7; 32])), ram)
    }

    fn write(dir: &SealedDirectory, path: &str, data: &[u8]) {
        let mut w = dir.open_write(Path::new(path)).unwrap();
        for piece in data.chunks(1000) {
            w.write_all(piece).unwrap();
        }
        w.flush().unwrap();
        w.into_inner().map_err(|e| e.into_error()).unwrap().terminate().unwrap();
    }

    #[test]
    fn files_of_every_size_read_back_in_any_range_and_hold_no_plaintext() {
        let (sealed, ram) = dir();
        for size in [0, 1, PLAIN - 1, PLAIN, PLAIN + 1, 3 * PLAIN, 3 * PLAIN + 17] {
            let data: Vec<u8> = (0..size).map(|i| b"secret words "[i % 13]).collect();
            let path = format!("f{size}");
            write(&sealed, &path, &data);
            let raw = ram.open_read(Path::new(&path)).unwrap().read_bytes().unwrap();
            assert_eq!(raw.len(), sealed_len(size));
            assert!(!raw.as_slice().windows(6).any(|w| w == b"secret"), "plaintext at rest");
            let file = sealed.get_file_handle(Path::new(&path)).unwrap();
            assert_eq!(file.len(), size);
            assert_eq!(file.read_bytes(0..size).unwrap().as_slice(), &data[..]);
            for (a, b) in [(0, size / 2), (size / 3, size), (size.saturating_sub(5), size)] {
                assert_eq!(
                    file.read_bytes(a..b).unwrap().as_slice(),
                    &data[a..b],
                    "{size}: {a}..{b}"
                );
            }
        }
        sealed.atomic_write(Path::new("meta.json"), b"{\"secret\":1}").unwrap();
        assert_eq!(sealed.atomic_read(Path::new("meta.json")).unwrap(), b"{\"secret\":1}");
        let raw = ram.atomic_read(Path::new("meta.json")).unwrap();
        assert!(!raw.windows(6).any(|w| w == b"secret"));
    }

    #[test]
    fn altered_truncated_or_foreign_files_do_not_open() {
        let (sealed, ram) = dir();
        let data = vec![42u8; 2 * PLAIN + 100];
        write(&sealed, "f", &data);
        let raw = ram.open_read(Path::new("f")).unwrap().read_bytes().unwrap().to_vec();

        let mut flipped = raw.clone();
        flipped[HEADER + SEALED + 3] ^= 1;
        ram.atomic_write(Path::new("g"), &flipped).unwrap();
        let file = sealed.get_file_handle(Path::new("g")).unwrap();
        assert!(file.read_bytes(0..10).is_ok(), "the first chunk is intact");
        assert!(file.read_bytes(PLAIN..PLAIN + 10).is_err());

        // Dropping the last chunk leaves a file whose (new) last chunk is not marked last.
        ram.atomic_write(Path::new("t"), &raw[..HEADER + 2 * SEALED]).unwrap();
        let file = sealed.get_file_handle(Path::new("t")).unwrap();
        assert!(file.read_bytes(PLAIN..PLAIN + 10).is_err());
        ram.atomic_write(Path::new("short"), &raw[..HEADER + 3]).unwrap();
        assert!(sealed.get_file_handle(Path::new("short")).is_err());

        let other = SealedDirectory::new(Box::new(ram.clone()), IndexKey::new([8; 32]));
        let file = other.get_file_handle(Path::new("f")).unwrap();
        assert!(file.read_bytes(0..10).is_err(), "another node's key");
    }
}
