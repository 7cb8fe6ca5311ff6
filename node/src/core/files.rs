//! Attachments in chat. A message's sealed body may carry a [`FileRef`]: the
//! file's id (BLAKE3 of its ciphertext), name, size and its key. The key
//! lives only there, so retracting the message deletes it with the body; the
//! ciphertext is then deleted too, everywhere it was fetched.
//!
//! Who may fetch a file from this node is recorded per body (`files-1`): the
//! devices of a room whose message names it. A download asked for with
//! `file get` is recorded (`file-wants-1`) until it completes, so a restart
//! takes it up again; the network moves it ([`crate::net`]'s blob protocol)
//! and the bytes live in [`crate::blobs`].

use super::*;
use crate::blobs::{self, BlobId, FileKey, Progress};

/// Longest file name kept (bytes).
pub const MAX_FILE_NAME_BYTES: usize = 255;

/// A file as its message's body carries it (postcard: append fields only
/// in a new body variant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    pub id: BlobId,
    pub name: String,
    /// Plaintext bytes.
    pub size: u64,
    pub key: FileKey,
}

/// Why a [`FileRef`] is refused. A peer's body is checked as it is read:
/// a refused file is left out (its message's text still shows).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileRefError {
    #[error("a file name is 1 to {MAX_FILE_NAME_BYTES} bytes: got {0} bytes")]
    NameLength(usize),
    #[error("a file name is not a path: no '/', '\\', control characters, \".\" or \"..\": got {0:?}")]
    NameNotPlain(String),
    #[error("attachments are at most {max} GiB: this one states {0} bytes", max = blobs::MAX_FILE_BYTES >> 30)]
    TooLarge(u64),
}

/// Checks a file's name: a plain name, never a path, so saving it by name
/// cannot write outside the directory it is saved in.
pub(super) fn check_name(name: &str) -> std::result::Result<(), FileRefError> {
    if name.is_empty() || name.len() > MAX_FILE_NAME_BYTES {
        return Err(FileRefError::NameLength(name.len()));
    }
    if name == "." || name == ".." || name.chars().any(|c| c == '/' || c == '\\' || c.is_control()) {
        return Err(FileRefError::NameNotPlain(name.to_string()));
    }
    Ok(())
}

impl FileRef {
    /// The checks every file read from a body passes: a plain name, a size
    /// this node accepts (so its ciphertext size cannot overflow).
    pub fn check(&self) -> std::result::Result<(), FileRefError> {
        check_name(&self.name)?;
        if self.size > blobs::MAX_FILE_BYTES || blobs::cipher::checked_cipher_size(self.size).is_none() {
            return Err(FileRefError::TooLarge(self.size));
        }
        Ok(())
    }

    /// The same file: a later body naming this blob with another name,
    /// size or key is not believed.
    fn same(&self, other: &FileRef) -> bool {
        self == other
    }

    pub fn view(&self) -> FileView {
        FileView {
            id: self.id,
            name: self.name.clone(),
            size: self.size,
        }
    }
}

/// A message's file as the API shows it (never the key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileView {
    pub id: BlobId,
    pub name: String,
    pub size: u64,
}

/// A file to fetch: where, how big, and who may hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileWant {
    pub id: BlobId,
    pub space: SpaceId,
    /// Ciphertext bytes.
    pub cipher_size: u64,
    /// The room's other member devices: any of them may hold it.
    pub holders: Vec<DeviceId>,
}

/// Where a file stands on this node (`file get`, `GET /v1/files/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStatus {
    pub id: BlobId,
    pub name: String,
    pub size: u64,
    pub space: SpaceId,
    /// Held whole here: it can be read.
    pub complete: bool,
    /// A download under way in this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
}

/// Checks a file's name before it is sealed into a body.
pub fn check_file_name(name: &str) -> Result<()> {
    check_name(name).map_err(|e| Error::Invalid(e.to_string()))
}

impl Core {
    fn blob_store(&self) -> Result<&Arc<blobs::Blobs>> {
        self.blobs
            .as_ref()
            .ok_or_else(|| Error::Invalid("this node keeps no files (no home directory)".into()))
    }

    /// The file `name` names (its id, or a unique prefix of at least 8 hex
    /// characters) among the messages this user can read, with its room.
    pub(super) fn find_file(&self, name: &str) -> Result<(SpaceId, FileRef)> {
        let name = name.trim().to_ascii_lowercase();
        if !(8..=64).contains(&name.len()) || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Invalid(format!(
                "a file id is 8 to 64 hex characters (as `outpost chat log` shows it): got {name:?}"
            )));
        }
        let prefix = data_encoding::HEXLOWER
            .decode(&name.as_bytes()[..name.len() / 2 * 2])
            .expect("checked hex");
        let mut found: Vec<(SpaceId, FileRef)> = Vec::new();
        for (id, space_id, body) in self.store.files(&prefix).map_err(|e| Error::Store(Arc::new(e)))? {
            if !id.to_string().starts_with(&name) || found.iter().any(|(_, f)| f.id == id) {
                continue;
            }
            let Some(space) = self.spaces.get(&space_id) else {
                continue;
            };
            let bytes = self
                .store
                .side(&space_id, &body)
                .map_err(|e| Error::Store(Arc::new(e)))?;
            let file = bytes
                .and_then(|b| Envelope::decode_stored(b).ok())
                .and_then(|env| self.open_body(space, &env))
                .and_then(|plain| plain.into_parts().1)
                .filter(|f| f.id == id);
            if let Some(file) = file {
                found.push((space_id, file));
            }
        }
        match found.len() {
            0 => Err(Error::NotFound(format!(
                "no file {name} in the rooms this device can read (retracted, or its message has not arrived)"
            ))),
            1 => Ok(found.pop().expect("one")),
            n => Err(Error::Invalid(format!("{name} names {n} files: give more of the id"))),
        }
    }

    fn file_status(&self, space: SpaceId, file: &FileRef) -> Result<FileStatus> {
        let blobs = self.blob_store()?;
        Ok(FileStatus {
            id: file.id,
            name: file.name.clone(),
            size: file.size,
            space,
            complete: blobs.has(&file.id),
            progress: blobs.progress(&file.id),
        })
    }

    /// Where the file `name` stands here.
    pub(super) fn file_status_of(&self, name: &str) -> Result<FileStatus> {
        let (space, file) = self.find_file(name)?;
        self.file_status(space, &file)
    }

    /// Fetches the file `name` names unless it is here: recorded, so a
    /// restart takes it up again, and handed to the network.
    pub(super) fn file_get(
        &mut self,
        tx: &mut Txn,
        name: &str,
        effects: &mut Effects,
    ) -> store::Result<Result<FileStatus>> {
        let (space, file) = match self.find_file(name) {
            Ok(found) => found,
            Err(e) => return Ok(Err(e)),
        };
        let status = match self.file_status(space, &file) {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        if !status.complete {
            let cipher_size = blobs::cipher::cipher_size(file.size);
            tx.put_file_want(&file.id, &space, cipher_size)?;
            effects
                .events
                .push(Event::FileWanted(self.file_want(space, file.id, cipher_size)));
        }
        Ok(Ok(status))
    }

    fn file_want(&self, space: SpaceId, id: BlobId, cipher_size: u64) -> FileWant {
        let holders = self
            .spaces
            .get(&space)
            .map(|s| s.state.members.keys().filter(|d| **d != self.me).copied().collect())
            .unwrap_or_default();
        FileWant {
            id,
            space,
            cipher_size,
            holders,
        }
    }

    /// Downloads asked for and not finished (the network takes them up at start).
    pub(super) fn file_wants(&self) -> store::Result<Vec<FileWant>> {
        Ok(self
            .store
            .file_wants()?
            .into_iter()
            .map(|(id, space, size)| self.file_want(space, id, size))
            .collect())
    }

    /// A download finished: no longer taken up at start.
    pub(super) fn file_fetched(&mut self, tx: &mut Txn, id: BlobId) -> store::Result<()> {
        tx.remove_file_want(&id)
    }

    /// The file `name` names with its key, to read it (held whole here).
    pub(super) fn file_to_read(&self, name: &str) -> Result<FileRef> {
        let (space, file) = self.find_file(name)?;
        if !self.file_status(space, &file)?.complete {
            return Err(Error::NotFound(format!(
                "file {} is not here yet: fetch it with `outpost file get {}`",
                file.id.fmt_short(),
                file.id
            )));
        }
        Ok(file)
    }

    /// `device` may fetch file `id` from this node: it is a member of a room
    /// whose message names the file.
    pub(super) fn may_fetch(&self, device: &DeviceId, id: &BlobId) -> bool {
        self.store.files(&id.0).is_ok_and(|rows| {
            rows.iter().any(|(file, space, _)| {
                file == id
                    && self
                        .spaces
                        .get(space)
                        .is_some_and(|s| s.state.members.contains_key(device))
            })
        })
    }

    /// Notes the file a stored body names (members only: others cannot read
    /// it). A body naming a blob that an earlier body names differently
    /// (another name, size or key) is ambiguous: the first recorded stays
    /// the file, the later one is not recorded.
    pub(super) fn record_file(&self, tx: &mut Txn, space_id: SpaceId, body: &Envelope) -> store::Result<()> {
        let Some(space) = self.spaces.get(&space_id) else {
            return Ok(());
        };
        let Some(file) = self.open_body(space, body).and_then(|plain| plain.into_parts().1) else {
            return Ok(());
        };
        let body_id = body.id();
        for (other_space, other_body) in tx.files_of(&file.id)? {
            if other_body == body_id {
                return Ok(());
            }
            let earlier = self
                .spaces
                .get(&other_space)
                .zip(tx.side(&other_space, &other_body)?)
                .and_then(|(s, bytes)| Envelope::decode_stored(bytes).ok().and_then(|e| self.open_body(s, &e)))
                .and_then(|plain| plain.into_parts().1);
            if earlier.is_some_and(|earlier| !earlier.same(&file)) {
                warn!(
                    file = %file.id.fmt_short(),
                    space = %space_id.fmt_short(),
                    author = %body.header().author.fmt_short(),
                    "a message names a file another message names differently; keeping the first"
                );
                return Ok(());
            }
        }
        tx.put_file(&file.id, &space_id, &body_id)
    }

    /// Records the files of every stored body of a space (after a rebuild:
    /// bodies that arrived before this device held their key name files
    /// only now readable).
    pub(super) fn record_files(&self, space_id: SpaceId) -> store::Result<()> {
        let sides = self.store.sides(&space_id)?;
        let mut tx = self.store.begin()?;
        for bytes in sides {
            let Ok(env) = Envelope::decode_stored(bytes) else {
                continue;
            };
            if env.header().kind == Kind::Body {
                self.record_file(&mut tx, space_id, &env)?;
            }
        }
        tx.commit()
    }

    /// A body is being deleted: its file row goes, and the file itself (after
    /// the commit) once no other body names it.
    pub(super) fn forget_file(&mut self, tx: &mut Txn, space_id: SpaceId, body: &Envelope) -> store::Result<()> {
        let file = self
            .spaces
            .get(&space_id)
            .and_then(|space| self.open_body(space, body))
            .and_then(|plain| plain.into_parts().1);
        if let Some(file) = file
            && tx.remove_file(&file.id, &space_id, &body.id())?
        {
            tx.remove_file_want(&file.id)?;
            self.dropped_files.insert(file.id);
        }
        Ok(())
    }

    /// After a commit: deletes the files retracted messages named.
    pub(super) fn delete_dropped_files(&mut self) {
        for id in std::mem::take(&mut self.dropped_files) {
            if let Some(blobs) = &self.blobs
                && let Err(error) = blobs.delete(&id)
            {
                warn!(file = %id.fmt_short(), %error, "cannot delete a retracted message's file");
            }
            let _ = self.events.send(Event::FileDropped(id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, size: u64) -> FileRef {
        FileRef {
            id: BlobId([7; 32]),
            name: name.to_string(),
            size,
            key: FileKey([1; 32]),
        }
    }

    #[test]
    fn a_peers_file_must_have_a_plain_name_and_a_sane_size() {
        assert_eq!(file("plans.pdf", 10).check(), Ok(()));
        assert_eq!(file("ünïcode name.txt", blobs::MAX_FILE_BYTES).check(), Ok(()));
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "a\\b",
            "a\nb",
            "nul\0",
            "bell\u{7}",
            "del\u{7f}",
        ] {
            assert!(file(bad, 1).check().is_err(), "{bad:?} is refused");
        }
        assert!(file(&"x".repeat(MAX_FILE_NAME_BYTES), 1).check().is_ok());
        assert!(file(&"x".repeat(MAX_FILE_NAME_BYTES + 1), 1).check().is_err());
        assert_eq!(
            file("big", blobs::MAX_FILE_BYTES + 1).check(),
            Err(FileRefError::TooLarge(blobs::MAX_FILE_BYTES + 1))
        );
        assert!(file("huge", u64::MAX).check().is_err());
        // The local API's check is the same rule.
        assert!(check_file_name("a\\b").is_err() && check_file_name("ok.txt").is_ok());
    }
}
