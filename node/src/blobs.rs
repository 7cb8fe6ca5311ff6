//! Attachments on disk. A file is encrypted under its own key as it is
//! imported ([`cipher`]) and named by the BLAKE3 hash of its ciphertext
//! ([`BlobId`]); a bao outboard (the hash tree, 16 KiB groups) beside it lets
//! any range be served with the proof that it belongs to that hash. So peers
//! that cannot read a file can still check and pass on what they hold, and a
//! download verifies every range as it arrives and resumes from what is on
//! disk after a broken link or a restart.
//!
//! Layout under the node's home (`blobs/`):
//! - `ID.data`, `ID.obao`: a complete blob and its outboard. The data file is
//!   renamed into place last, so its presence means complete.
//! - `partial/ID.data`, `partial/ID.obao`: a download, both preallocated
//!   sparse. Unwritten hashes are zero and never verify, so what survives a
//!   crash is exactly the ranges whose data and hashes both check out.
//! - `tmp/`: imports in progress, cleared at start.
//!
//! Everything here is blocking file I/O: callers run it on blocking threads.
//! Memory stays flat: imports and reads stream chunk by chunk, ranges are
//! at most [`MAX_RANGE_BYTES`].

pub mod cipher;

use std::{
    collections::HashMap,
    fs::{self, File, OpenOptions},
    io::{self, BufReader, BufWriter, Read, Write},
    ops::Range,
    path::{Path, PathBuf},
    sync::Mutex,
};

use bao_tree::{
    BaoTree, BlockSize, ChunkNum, ChunkRanges,
    io::{
        DecodeError,
        outboard::PreOrderOutboard,
        sync::{decode_ranges, encode_ranges_validated, outboard, valid_ranges},
    },
};
use serde::{Deserialize, Serialize};

use self::cipher::CIPHER_CHUNK;
pub use self::cipher::FileKey;
pub use self::cipher::PLAIN_CHUNK;
pub use crate::ids::BlobId;

/// The hash tree's leaf groups: 16 chunks of 1 KiB.
pub const BLOCK: BlockSize = BlockSize::from_chunk_log(4);
/// Bytes of one bao chunk, the unit ranges are counted in.
pub const CHUNK_BYTES: u64 = 1024;
/// Most ciphertext one range request asks for (and one answer carries).
pub const MAX_RANGE_BYTES: u64 = 1 << 20;
/// The largest attachment accepted.
pub const MAX_FILE_BYTES: u64 = 64 << 30;

/// A file just imported: what its message's body must carry.
#[derive(Debug, Clone)]
pub struct Imported {
    pub id: BlobId,
    /// Plaintext bytes.
    pub size: u64,
    pub key: FileKey,
}

/// How far a download is, as `file get` shows it. Bytes of ciphertext.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Verified on disk.
    pub have: u64,
    pub total: u64,
    /// Already verified on disk when this run took the download up.
    pub resumed_from: u64,
    /// Received from peers in this run.
    pub fetched: u64,
}

/// The node's attachments.
#[derive(Debug)]
pub struct Blobs {
    dir: PathBuf,
    /// Downloads under way in this run.
    progress: Mutex<HashMap<BlobId, Progress>>,
}

impl Blobs {
    /// Opens (creating) the store in `dir`, dropping unfinished imports.
    pub fn open(dir: PathBuf) -> io::Result<Self> {
        fs::create_dir_all(dir.join("partial"))?;
        let tmp = dir.join("tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&tmp)?;
        Ok(Self {
            dir,
            progress: Mutex::new(HashMap::new()),
        })
    }

    fn complete_path(&self, id: &BlobId, ext: &str) -> PathBuf {
        self.dir.join(format!("{id}.{ext}"))
    }

    fn partial_path(&self, id: &BlobId, ext: &str) -> PathBuf {
        self.dir.join("partial").join(format!("{id}.{ext}"))
    }

    /// This node holds the whole blob.
    pub fn has(&self, id: &BlobId) -> bool {
        self.complete_path(id, "data").exists()
    }

    /// Starts importing a file: write its plaintext, then [`Import::finish`].
    pub fn import(&self) -> io::Result<Import> {
        let name: [u8; 16] = rand::random();
        let tmp = self.dir.join("tmp").join(data_encoding::HEXLOWER.encode(&name));
        let file = File::create(&tmp)?;
        Ok(Import {
            dir: self.dir.clone(),
            tmp,
            out: BufWriter::with_capacity(CIPHER_CHUNK, file),
            key: FileKey::random(),
            buf: Vec::with_capacity(PLAIN_CHUNK),
            index: 0,
            size: 0,
            finished: false,
        })
    }

    /// Deletes the blob, whole or partial (a retraction). Absent is fine.
    pub fn delete(&self, id: &BlobId) -> io::Result<()> {
        for path in [
            self.complete_path(id, "data"),
            self.complete_path(id, "obao"),
            self.partial_path(id, "data"),
            self.partial_path(id, "obao"),
        ] {
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        self.progress.lock().expect("progress lock").remove(id);
        Ok(())
    }

    /// The verified encoding of `chunks` (a range of 1 KiB chunks) of a
    /// complete blob, for a peer; `None` when this node does not hold it
    /// whole. Data that no longer matches its hash is an error, never sent.
    pub fn encode(&self, id: &BlobId, chunks: Range<u64>) -> io::Result<Option<Vec<u8>>> {
        let data = match File::open(self.complete_path(id, "data")) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let tree = BaoTree::new(data.metadata()?.len(), BLOCK);
        if chunks.start >= chunks.end
            || chunks.end > tree.chunks().0
            || (chunks.end - chunks.start) * CHUNK_BYTES > MAX_RANGE_BYTES
        {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "range out of bounds"));
        }
        let ob = PreOrderOutboard {
            root: bao_tree::blake3::Hash::from_bytes(id.0),
            tree,
            data: File::open(self.complete_path(id, "obao"))?,
        };
        let mut out = Vec::with_capacity(((chunks.end - chunks.start) * CHUNK_BYTES) as usize + 4096);
        let ranges = ChunkRanges::from(ChunkNum(chunks.start)..ChunkNum(chunks.end));
        encode_ranges_validated(data, &ob, &ranges, &mut out).map_err(io::Error::other)?;
        Ok(Some(out))
    }

    /// The download of blob `id` of `size` ciphertext bytes: opened where an
    /// earlier run left it, or started.
    pub fn partial(&self, id: BlobId, size: u64) -> io::Result<Partial> {
        let tree = BaoTree::new(size, BLOCK);
        let open = |path: PathBuf, len: u64| -> io::Result<File> {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?;
            if file.metadata()?.len() != len {
                file.set_len(len)?;
            }
            Ok(file)
        };
        let data = open(self.partial_path(&id, "data"), size)?;
        let ob = open(self.partial_path(&id, "obao"), tree.outboard_size())?;
        Ok(Partial {
            id,
            dir: self.dir.clone(),
            data,
            outboard: PreOrderOutboard {
                root: bao_tree::blake3::Hash::from_bytes(id.0),
                tree,
                data: ob,
            },
        })
    }

    /// Reads a complete blob's plaintext, decrypting chunk by chunk.
    pub fn reader(&self, id: &BlobId, key: FileKey, size: u64) -> io::Result<PlainReader> {
        let file = File::open(self.complete_path(id, "data"))?;
        let cipher_len = file.metadata()?.len();
        if cipher_len != cipher::cipher_size(size) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the stored file does not have the size its message states",
            ));
        }
        Ok(PlainReader {
            file: BufReader::with_capacity(CIPHER_CHUNK, file),
            key,
            index: 0,
            chunks: cipher::chunks(size),
            size,
            left: Vec::new(),
            pos: 0,
        })
    }

    /// Records how far the download of `id` is (shown by `file get`).
    pub fn set_progress(&self, id: BlobId, progress: Progress) {
        self.progress.lock().expect("progress lock").insert(id, progress);
    }

    pub fn progress(&self, id: &BlobId) -> Option<Progress> {
        self.progress.lock().expect("progress lock").get(id).copied()
    }

    pub fn forget_progress(&self, id: &BlobId) {
        self.progress.lock().expect("progress lock").remove(id);
    }
}

/// A file being imported: plaintext in, sealed chunks out to a temporary file.
/// Dropped unfinished (an upload broke off, a write failed), it removes its
/// temporary files: `tmp/` is otherwise cleared only at the next start.
pub struct Import {
    dir: PathBuf,
    tmp: PathBuf,
    out: BufWriter<File>,
    key: FileKey,
    /// Plaintext not sealed yet: a full chunk is sealed only once more data
    /// shows it is not the last.
    buf: Vec<u8>,
    index: u64,
    size: u64,
    /// Moved into the store: nothing left to remove.
    finished: bool,
}

impl Drop for Import {
    fn drop(&mut self) {
        if !self.finished {
            // Absent already (never created, or failed half-way) is fine.
            let _ = fs::remove_file(&self.tmp);
            let _ = fs::remove_file(self.tmp.with_extension("obao"));
        }
    }
}

impl Import {
    pub fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        self.size += bytes.len() as u64;
        if self.size > MAX_FILE_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("attachments are at most {} GiB", MAX_FILE_BYTES >> 30),
            ));
        }
        while !bytes.is_empty() {
            if self.buf.len() == PLAIN_CHUNK {
                self.seal(false)?;
            }
            let take = (PLAIN_CHUNK - self.buf.len()).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
        Ok(())
    }

    fn seal(&mut self, last: bool) -> io::Result<()> {
        let sealed = cipher::seal_chunk(&self.key, self.index, last, &self.buf);
        self.out.write_all(&sealed)?;
        self.buf.clear();
        self.index += 1;
        Ok(())
    }

    /// Seals the last chunk, hashes the ciphertext, and moves the blob into
    /// the store, durably: once this returns, a crash does not lose it.
    pub fn finish(mut self) -> io::Result<Imported> {
        self.seal(true)?;
        self.out.flush()?;
        let file = self.out.get_ref();
        file.sync_all()?;
        let cipher_len = file.metadata()?.len();
        let tree = BaoTree::new(cipher_len, BLOCK);
        let ob_tmp = self.tmp.with_extension("obao");
        let mut ob = PreOrderOutboard {
            root: bao_tree::blake3::Hash::from_bytes([0; 32]),
            tree,
            data: File::create(&ob_tmp)?,
        };
        let root = outboard(
            BufReader::with_capacity(CIPHER_CHUNK, File::open(&self.tmp)?),
            tree,
            &mut ob,
        )?;
        ob.data.sync_all()?;
        let id = BlobId(*root.as_bytes());
        fs::rename(&ob_tmp, self.dir.join(format!("{id}.obao")))?;
        fs::rename(&self.tmp, self.dir.join(format!("{id}.data")))?;
        self.finished = true;
        sync_dir(&self.dir)?;
        Ok(Imported {
            id,
            size: self.size,
            key: self.key.clone(),
        })
    }
}

/// A download in progress: verified ranges written in place.
pub struct Partial {
    id: BlobId,
    dir: PathBuf,
    data: File,
    outboard: PreOrderOutboard<File>,
}

impl Partial {
    pub fn id(&self) -> BlobId {
        self.id
    }

    /// Total 1 KiB chunks.
    pub fn chunks(&self) -> u64 {
        self.outboard.tree.chunks().0
    }

    /// Ciphertext bytes.
    pub fn size(&self) -> u64 {
        self.outboard.tree.size()
    }

    /// The chunk ranges not yet verified on disk (hashes every byte there:
    /// run once when a download is taken up).
    pub fn missing(&self) -> io::Result<Vec<Range<u64>>> {
        let mut valid = ChunkRanges::empty();
        for range in valid_ranges(&self.outboard, self.data.try_clone()?, &ChunkRanges::all()) {
            valid |= ChunkRanges::from(range?);
        }
        let all = ChunkRanges::from(ChunkNum(0)..ChunkNum(self.chunks()));
        let missing = all - valid;
        let bounds = missing.boundaries();
        Ok(bounds
            .chunks(2)
            .map(|b| b[0].0..b.get(1).map_or(self.chunks(), |e| e.0))
            .collect())
    }

    /// Verifies one answer for `chunks` against the blob's hash and writes it.
    pub fn write(&mut self, chunks: Range<u64>, encoded: &[u8]) -> Result<(), DecodeError> {
        let ranges = ChunkRanges::from(ChunkNum(chunks.start)..ChunkNum(chunks.end));
        decode_ranges(encoded, &ranges, &mut self.data, &mut self.outboard)
    }

    /// Moves a download whose every range verified into the store, durably.
    pub fn finish(&self) -> io::Result<()> {
        self.data.sync_all()?;
        self.outboard.data.sync_all()?;
        let id = self.id;
        let partial = self.dir.join("partial");
        fs::rename(partial.join(format!("{id}.obao")), self.dir.join(format!("{id}.obao")))?;
        fs::rename(partial.join(format!("{id}.data")), self.dir.join(format!("{id}.data")))?;
        sync_dir(&self.dir)
    }
}

/// A blob's plaintext, decrypted chunk by chunk as it is read.
pub struct PlainReader {
    file: BufReader<File>,
    key: FileKey,
    index: u64,
    chunks: u64,
    size: u64,
    left: Vec<u8>,
    pos: usize,
}

impl PlainReader {
    /// Plaintext bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Read for PlainReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.left.len() {
            if self.index == self.chunks {
                return Ok(0);
            }
            let last = self.index + 1 == self.chunks;
            let len = if last {
                (cipher::cipher_size(self.size) - self.index * CIPHER_CHUNK as u64) as usize
            } else {
                CIPHER_CHUNK
            };
            let mut sealed = vec![0u8; len];
            self.file.read_exact(&mut sealed)?;
            self.left = cipher::open_chunk(&self.key, self.index, last, &sealed).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("chunk {} of the file does not decrypt: altered on disk?", self.index),
                )
            })?;
            self.pos = 0;
            self.index += 1;
        }
        let n = out.len().min(self.left.len() - self.pos);
        out[..n].copy_from_slice(&self.left[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests;
