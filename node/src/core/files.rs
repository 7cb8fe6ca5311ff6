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

impl FileRef {
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
    if name.is_empty() || name.len() > MAX_FILE_NAME_BYTES || name.contains(['/', '\0']) {
        return Err(Error::Invalid(format!(
            "a file name is 1 to {MAX_FILE_NAME_BYTES} bytes without '/': got {name:?}"
        )));
    }
    Ok(())
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

    /// Notes the file a stored body names (members only: others cannot read it).
    pub(super) fn record_file(&self, tx: &mut Txn, space_id: SpaceId, body: &Envelope) -> store::Result<()> {
        let file = self
            .spaces
            .get(&space_id)
            .and_then(|space| self.open_body(space, body))
            .and_then(|plain| plain.into_parts().1);
        if let Some(file) = file {
            tx.put_file(&file.id, &space_id, &body.id())?;
        }
        Ok(())
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
