//! The redb store. Owned by the core thread (see [`crate::core`]); nothing else opens
//! the database.
//!
//! Tables are versioned by name (`envelopes-1`); a format change adds a new table
//! and a numbered migration. The database holds only sealed envelopes and public
//! metadata: no plaintext content and no key material (epoch keys are re-derived
//! at start-up by unwrapping with the device key).

use std::{ops::ControlFlow, path::Path};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use crate::ids::{ActorKey, BlobId, DeviceId, DocId, EnvelopeId, SpaceId};

/// Schema version recorded in `meta-1`; bumped with each migration.
pub const SCHEMA_VERSION: u64 = 1;
/// redb's page cache: bounded so a node's memory does not grow with its store
/// (redb's default is 1 GiB).
const CACHE_BYTES: usize = 64 << 20;
/// File name of the database inside the home.
pub const DB_FILE: &str = "outpost.redb";

const META: TableDefinition<&str, u64> = TableDefinition::new("meta-1");
/// Envelope id → exact envelope bytes.
const ENVELOPES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("envelopes-1");
/// (space, arrival order) → envelope id. Arrival order is a topological order: an
/// envelope is stored only after its parents.
const SPACE_LOG: TableDefinition<(&[u8; 16], u64), &[u8; 32]> = TableDefinition::new("space-log-1");
/// (space, envelope id) → where it is: its log position and, for content,
/// its document. Answers "is this envelope held?" and "is this parent in
/// its child's document?" without a map in memory per envelope.
const PLACES: TableDefinition<(&[u8; 16], &[u8; 32]), PlaceRow> = TableDefinition::new("places-1");
/// (log position, document of content).
type PlaceRow = (u64, Option<&'static [u8; 16]>);
/// (space, arrival order) → envelope id of the control operations alone (the
/// genesis first): the membership is read at start-up without reading every
/// message's envelope.
const CONTROL_LOG: TableDefinition<(&[u8; 16], u64), &[u8; 32]> = TableDefinition::new("control-log-1");
/// `META` key set once `places-1` and `control-log-1` index every stored envelope (a store
/// written before the table existed is indexed at its first start).
const PLACES_COMPLETE: &str = "places-complete";
/// (space, actor, seq) → envelope id: serves "send me actor A from seq n".
const WRITERS: TableDefinition<WriterKey, &[u8; 32]> = TableDefinition::new("writers-1");
/// (space, actor, seq).
type WriterKey = (&'static [u8; 16], &'static [u8; 16], u64);
/// Spaces this node keeps → how it participates.
const SPACES: TableDefinition<&[u8; 16], u8> = TableDefinition::new("spaces-1");
/// Envelopes waiting for their parents: id → (space, bytes).
const PENDING: TableDefinition<&[u8; 32], (&[u8; 16], &[u8])> = TableDefinition::new("pending-1");
/// (space, client request id) → message id: makes retried sends idempotent.
const CLIENT_IDS: TableDefinition<(&[u8; 16], &str), &str> = TableDefinition::new("client-ids-1");
/// Writers frozen for equivocation: (space, actor) → (seq, first twin, second twin).
/// The writer's signed envelopes at `seq` differ; it is frozen at `seq − 1`, and the
/// twins are the evidence every peer is sent.
const FROZEN: TableDefinition<(&[u8; 16], &[u8; 16]), FrozenRow> = TableDefinition::new("frozen-1");
/// (freeze seq, first twin, second twin).
type FrozenRow = (u64, &'static [u8], &'static [u8]);
/// Envelopes refused for good because they are, or build on, an envelope of a
/// frozen writer: (space, envelope id) → 0. Their descendants are refused too.
const INVALID: TableDefinition<(&[u8; 16], &[u8; 32]), u8> = TableDefinition::new("invalid-1");
/// Snapshots this node holds: (space, snapshot envelope id) → exact envelope bytes.
/// Kept apart from `envelopes-1`: a snapshot is not in the space's log or writer
/// index, and a newer one replaces it.
const SNAPSHOTS: TableDefinition<(&[u8; 16], &[u8; 32]), &[u8]> = TableDefinition::new("snapshots-1");
/// The inbox: arrival seq → postcard(`core::inbox::InboxRow`). Local and derived:
/// references only (space, mention or event id, author, time), never text;
/// what a notification is about is read from the document when it is shown.
const INBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("inbox-2");
/// Notifications recorded: (space, actor, op counter) → inbox seq, so a mention
/// is notified once however often its change arrives.
const INBOX_SEEN: TableDefinition<(&[u8; 16], &[u8; 16], u64), u64> = TableDefinition::new("inbox-seen-1");
/// Reminders fired by this user's devices: `space/event/occurrence/minutes` →
/// postcard(`core::reminders::ClaimRow`), from this device or a sibling. A
/// reminder fires only when no device of the user claimed it. `~scanned` →
/// the time (ms, LE) up to which this device looked for due reminders.
const REMINDERS: TableDefinition<&str, &[u8]> = TableDefinition::new("reminders-1");
/// Side envelopes (chat bodies and tombstones, see `envelope::Kind::Body`):
/// (space, envelope id) → exact bytes. Kept apart from the log: a body is
/// deleted when its message is retracted, which a log entry never is.
const SIDES: TableDefinition<(&[u8; 16], &[u8; 32]), &[u8]> = TableDefinition::new("sides-1");
/// (space, actor, seq, side id) → (): the sides that ride with the change at
/// (actor, seq), pushed beside its envelope.
const SIDES_OF: TableDefinition<SideKey, ()> = TableDefinition::new("sides-of-1");
/// (space, actor, seq, side id).
type SideKey = (&'static [u8; 16], &'static [u8; 16], u64, &'static [u8; 32]);
/// Tombstones naming a body: (space, body id, tombstone id) → (). Every
/// tombstone that names a body is recorded, never removed: whether one may
/// delete the body is decided against the body's author wherever it matters
/// (a forged one deletes nothing, and cannot undo a real one).
const TOMBSTONED: TableDefinition<TombKey, ()> = TableDefinition::new("tombstoned-1");
/// (space, body id, tombstone id).
type TombKey = (&'static [u8; 16], &'static [u8; 32], &'static [u8; 32]);
/// This device's do-not-disturb settings: `mute/{space}` → [1], `quiet` →
/// postcard(`core::QuietHours`).
const CHAT_SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("chat-settings-1");
/// Read receipts (`envelope::Kind::State`): (space, device) → the device's
/// newest one. A newer one replaces the row.
const STATES: TableDefinition<(&[u8; 16], &[u8; 32]), &[u8]> = TableDefinition::new("states-1");
/// Attachments referred to by chat bodies: (file id, space, body id) → ().
/// Who may fetch a file from this node: the devices of a space whose body
/// names it. A retraction removes its body's row.
const FILES: TableDefinition<FileRowKey, ()> = TableDefinition::new("files-1");
/// (file id, space, body id).
type FileRowKey = (&'static [u8; 32], &'static [u8; 16], &'static [u8; 32]);
/// Downloads asked for and not finished: file id → (space, ciphertext bytes).
/// Taken up again at start.
const FILE_WANTS: TableDefinition<&[u8; 32], (&[u8; 16], u64)> = TableDefinition::new("file-wants-1");
/// Device certificates learnt from peers: device → postcard(DeviceCert).
const CERTS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("device-certs-1");
/// This device's user's devices (linked here, or known when this device joined):
/// device → postcard(`core::devices::DeviceRecord`).
const USER_DEVICES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("user-devices-1");
/// The org this node follows: `org` → id; `version/{n:020}` → a verified
/// version; `draft/{hex}` → a draft; `signed-for/{n:020}` → the draft this
/// device's admin key signed for version n (it signs no other).
const ORG: TableDefinition<&str, &[u8]> = TableDefinition::new("org-1");
/// A room's closed shards set aside (not held in memory): (space, doc) → a
/// postcard `ShardRow` (each writer's last seq then, its message counters).
const CLOSED_SHARDS: TableDefinition<(&[u8; 16], &[u8; 16]), &[u8]> = TableDefinition::new("closed-shards-1");
/// Where a closed shard's messages are: (space, message id) → its shard, so
/// a command naming an old message loads that one shard.
const MESSAGE_SHARDS: TableDefinition<(&[u8; 16], &str), &[u8; 16]> = TableDefinition::new("message-shards-1");

/// A store failure. Always fatal for the operation; the node reports it and the
/// caller's write is not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the database is already open: is another daemon running on this home?")]
    AlreadyOpen,
    #[error("database schema version {found} is newer than this build ({SCHEMA_VERSION})")]
    FutureSchema { found: u64 },
    #[error("the store could not start a transaction")]
    Unavailable,
    #[error("database error")]
    Redb(#[source] Box<redb::Error>),
    #[error("cannot open the file store")]
    Files(#[source] std::io::Error),
}

impl<E: Into<redb::Error>> From<E> for Error {
    fn from(e: E) -> Self {
        match e.into() {
            redb::Error::DatabaseAlreadyOpen => Error::AlreadyOpen,
            other => Error::Redb(Box::new(other)),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// How this node takes part in a space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Participation {
    /// Named in the control log (member or replicator). The only kind in schema 1:
    /// a node keeps a space only when the space names it, so non-members get zero
    /// bytes. Other values are reserved.
    Named = 1,
}

/// An open store.
pub struct Store {
    db: Database,
}

/// A writer frozen for equivocation, with the evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frozen {
    pub space: SpaceId,
    pub actor: ActorKey,
    /// The seq at which the writer signed two envelopes; it is frozen at `seq − 1`.
    pub seq: u64,
    /// The two envelopes (exact bytes) signed for (actor, seq).
    pub twins: [Vec<u8>; 2],
}

/// Where a stored envelope is: its position in its space's log and, for
/// content, its document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub order: u64,
    pub doc: Option<DocId>,
}

/// One envelope to persist, with the indexes that locate it.
pub struct NewEnvelope<'a> {
    pub id: EnvelopeId,
    pub space: SpaceId,
    pub actor: ActorKey,
    pub seq: u64,
    /// The document of a content envelope; None for a control operation
    /// (the only other kind in a space's log).
    pub doc: Option<DocId>,
    pub bytes: &'a [u8],
}

impl Store {
    /// Opens (or creates) the database in `home`.
    pub fn open(home: &Path) -> Result<Self> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(home.join(DB_FILE))?;
        let store = Self { db };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&self) -> Result<()> {
        let mut tx = self.begin()?;
        {
            let mut meta = tx.open_table(META)?;
            let found = meta.get("schema")?.map(|v| v.value());
            match found {
                None => {
                    meta.insert("schema", SCHEMA_VERSION)?;
                    // Nothing stored yet: the index is complete from the start.
                    meta.insert(PLACES_COMPLETE, 1)?;
                }
                Some(v) if v > SCHEMA_VERSION => return Err(Error::FutureSchema { found: v }),
                Some(_) => {}
            }
        }
        // Create every table so readers never see "table does not exist".
        tx.open_table(ENVELOPES)?;
        tx.open_table(SPACE_LOG)?;
        tx.open_table(WRITERS)?;
        tx.open_table(SPACES)?;
        tx.open_table(PENDING)?;
        tx.open_table(CLIENT_IDS)?;
        tx.open_table(CERTS)?;
        tx.open_table(USER_DEVICES)?;
        tx.open_table(ORG)?;
        tx.open_table(FROZEN)?;
        tx.open_table(INVALID)?;
        tx.open_table(SNAPSHOTS)?;
        tx.open_table(INBOX)?;
        tx.open_table(INBOX_SEEN)?;
        tx.open_table(REMINDERS)?;
        tx.open_table(SIDES)?;
        tx.open_table(SIDES_OF)?;
        tx.open_table(TOMBSTONED)?;
        tx.open_table(STATES)?;
        tx.open_table(CHAT_SETTINGS)?;
        tx.open_table(FILES)?;
        tx.open_table(FILE_WANTS)?;
        tx.open_table(CLOSED_SHARDS)?;
        tx.open_table(MESSAGE_SHARDS)?;
        tx.open_table(PLACES)?;
        tx.open_table(CONTROL_LOG)?;
        tx.set_two_phase_commit(true);
        tx.commit()?;
        Ok(())
    }

    /// A durable write transaction. Peer-supplied data lands here, so two-phase
    /// commit is on (redb's default checksum is not cryptographic).
    pub fn begin(&self) -> Result<Txn> {
        let mut tx = self.db.begin_write()?;
        tx.set_two_phase_commit(true);
        Ok(Txn { tx })
    }

    /// Every space with its participation.
    pub fn spaces(&self) -> Result<Vec<(SpaceId, Participation)>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(SPACES)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, _) = row?;
            out.push((SpaceId(*k.value()), Participation::Named));
        }
        Ok(out)
    }

    /// Visits a space's envelopes in arrival (topological) order from log position
    /// `from` on, in one read transaction and without buffering: `visit` gets each
    /// (position, exact bytes) and stops the scan by returning `Break`, whose value
    /// is returned.
    pub fn scan_log<B>(
        &self,
        space: &SpaceId,
        from: u64,
        visit: impl FnMut(u64, Vec<u8>) -> ControlFlow<B>,
    ) -> Result<Option<B>> {
        self.scan(SPACE_LOG, space, from, visit)
    }

    /// [`Store::scan_log`] of the control operations alone.
    pub fn scan_control<B>(
        &self,
        space: &SpaceId,
        visit: impl FnMut(u64, Vec<u8>) -> ControlFlow<B>,
    ) -> Result<Option<B>> {
        self.scan(CONTROL_LOG, space, 0, visit)
    }

    fn scan<B>(
        &self,
        table: TableDefinition<(&[u8; 16], u64), &[u8; 32]>,
        space: &SpaceId,
        from: u64,
        mut visit: impl FnMut(u64, Vec<u8>) -> ControlFlow<B>,
    ) -> Result<Option<B>> {
        let tx = self.db.begin_read()?;
        let log = tx.open_table(table)?;
        let envs = tx.open_table(ENVELOPES)?;
        for row in log.range((&space.0, from)..=(&space.0, u64::MAX))? {
            let (k, id) = row?;
            if let Some(bytes) = envs.get(id.value())?
                && let ControlFlow::Break(b) = visit(k.value().1, bytes.value().to_vec())
            {
                return Ok(Some(b));
            }
        }
        Ok(None)
    }

    /// Envelopes of `actor` in `space` with seq in `from..=to`.
    pub fn writer_range(&self, space: &SpaceId, actor: &ActorKey, from: u64, to: u64) -> Result<Vec<Vec<u8>>> {
        let tx = self.db.begin_read()?;
        let writers = tx.open_table(WRITERS)?;
        let envs = tx.open_table(ENVELOPES)?;
        let mut out = Vec::new();
        for row in writers.range((&space.0, &actor.0, from)..=(&space.0, &actor.0, to))? {
            let (_, id) = row?;
            if let Some(bytes) = envs.get(id.value())? {
                out.push(bytes.value().to_vec());
            }
        }
        Ok(out)
    }

    /// The envelope stored at (space, actor, seq), if any.
    pub fn writer_at(&self, space: &SpaceId, actor: &ActorKey, seq: u64) -> Result<Option<EnvelopeId>> {
        let tx = self.db.begin_read()?;
        let writers = tx.open_table(WRITERS)?;
        Ok(writers.get((&space.0, &actor.0, seq))?.map(|v| EnvelopeId(*v.value())))
    }

    /// Every pending envelope.
    pub fn pending(&self) -> Result<Vec<Vec<u8>>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(PENDING)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (_, v) = row?;
            out.push(v.value().1.to_vec());
        }
        Ok(out)
    }

    /// The side envelope (body or tombstone) `id` of `space`, if held.
    pub fn side(&self, space: &SpaceId, id: &EnvelopeId) -> Result<Option<Vec<u8>>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(SIDES)?;
        Ok(table.get((&space.0, &id.0))?.map(|v| v.value().to_vec()))
    }

    /// The side envelopes held for the change at (actor, seq).
    pub fn sides_of(&self, space: &SpaceId, actor: &ActorKey, seq: u64) -> Result<Vec<Vec<u8>>> {
        let tx = self.db.begin_read()?;
        let index = tx.open_table(SIDES_OF)?;
        let sides = tx.open_table(SIDES)?;
        let mut out = Vec::new();
        for row in index.range((&space.0, &actor.0, seq, &[0u8; 32])..=(&space.0, &actor.0, seq, &[0xff; 32]))? {
            let (k, _) = row?;
            if let Some(bytes) = sides.get((&space.0, k.value().3))? {
                out.push(bytes.value().to_vec());
            }
        }
        Ok(out)
    }

    /// The tombstones that name `body`, with their bytes.
    pub fn tombstones(&self, space: &SpaceId, body: &EnvelopeId) -> Result<Vec<Vec<u8>>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(TOMBSTONED)?;
        let sides = tx.open_table(SIDES)?;
        let mut out = Vec::new();
        for row in table.range((&space.0, &body.0, &[0u8; 32])..=(&space.0, &body.0, &[0xff; 32]))? {
            let (k, _) = row?;
            if let Some(bytes) = sides.get((&space.0, k.value().2))? {
                out.push(bytes.value().to_vec());
            }
        }
        Ok(out)
    }

    /// Every side envelope of `space` (bodies and tombstones), for inspection.
    pub fn sides(&self, space: &SpaceId) -> Result<Vec<Vec<u8>>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(SIDES)?;
        let mut out = Vec::new();
        for row in table.range((&space.0, &[0u8; 32])..=(&space.0, &[0xff; 32]))? {
            out.push(row?.1.value().to_vec());
        }
        Ok(out)
    }

    /// The do-not-disturb settings.
    pub fn chat_settings(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(CHAT_SETTINGS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// The (file, space, body) rows of files whose id starts with `prefix`.
    pub fn files(&self, prefix: &[u8]) -> Result<Vec<(BlobId, SpaceId, EnvelopeId)>> {
        let (mut low, mut high) = ([0u8; 32], [0xffu8; 32]);
        let n = prefix.len().min(32);
        low[..n].copy_from_slice(&prefix[..n]);
        high[..n].copy_from_slice(&prefix[..n]);
        let tx = self.db.begin_read()?;
        let table = tx.open_table(FILES)?;
        let mut out = Vec::new();
        for row in table.range((&low, &[0u8; 16], &[0u8; 32])..=(&high, &[0xff; 16], &[0xff; 32]))? {
            let (k, _) = row?;
            let (file, space, body) = k.value();
            out.push((BlobId(*file), SpaceId(*space), EnvelopeId(*body)));
        }
        Ok(out)
    }

    /// Downloads not finished: (file, space, ciphertext bytes).
    pub fn file_wants(&self) -> Result<Vec<(BlobId, SpaceId, u64)>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(FILE_WANTS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            let (space, size) = v.value();
            out.push((BlobId(*k.value()), SpaceId(*space), size));
        }
        Ok(out)
    }

    /// Where the envelope `id` of `space` is stored, if it is.
    pub fn placed(&self, space: &SpaceId, id: &EnvelopeId) -> Result<Option<Placed>> {
        Ok(self.placed_all(space, std::iter::once(id))?.pop().flatten())
    }

    /// [`Store::placed`] of each of `ids`, in one read transaction.
    pub fn placed_all<'a>(
        &self,
        space: &SpaceId,
        ids: impl IntoIterator<Item = &'a EnvelopeId>,
    ) -> Result<Vec<Option<Placed>>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(PLACES)?;
        let mut out = Vec::new();
        for id in ids {
            out.push(table.get((&space.0, &id.0))?.map(|v| {
                let (order, doc) = v.value();
                Placed {
                    order,
                    doc: doc.map(|d| DocId(*d)),
                }
            }));
        }
        Ok(out)
    }

    /// Indexes the place of every stored envelope, once, in a store written
    /// before `places-1` existed; `doc_of` reads a stored envelope's document
    /// (None when its bytes do not decode). Returns how many were indexed.
    pub fn complete_places(&self, doc_of: impl Fn(&[u8]) -> Option<Option<DocId>>) -> Result<u64> {
        let mut tx = self.begin()?;
        if tx.open_table(META)?.get(PLACES_COMPLETE)?.is_some() {
            return Ok(0);
        }
        let mut indexed = 0;
        {
            let log = tx.tx.open_table(SPACE_LOG)?;
            let envs = tx.tx.open_table(ENVELOPES)?;
            let mut places = tx.tx.open_table(PLACES)?;
            let mut control = tx.tx.open_table(CONTROL_LOG)?;
            for row in log.iter()? {
                let (k, id) = row?;
                let (space, order) = k.value();
                let Some(bytes) = envs.get(id.value())? else { continue };
                let Some(doc) = doc_of(bytes.value()) else { continue };
                places.insert((space, id.value()), (order, doc.as_ref().map(|d| &d.0)))?;
                if doc.is_none() {
                    control.insert((space, order), id.value())?;
                }
                indexed += 1;
            }
        }
        tx.open_table(META)?.insert(PLACES_COMPLETE, 1)?;
        tx.commit()?;
        Ok(indexed)
    }

    /// Every closed shard of `space` set aside, with its row.
    pub fn closed_shards(&self, space: &SpaceId) -> Result<Vec<(DocId, Vec<u8>)>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(CLOSED_SHARDS)?;
        let mut out = Vec::new();
        for row in table.range((&space.0, &[0u8; 16])..=(&space.0, &[0xff; 16]))? {
            let (k, v) = row?;
            out.push((DocId(*k.value().1), v.value().to_vec()));
        }
        Ok(out)
    }

    /// The row of one closed shard of `space`.
    pub fn closed_shard(&self, space: &SpaceId, doc: &DocId) -> Result<Option<Vec<u8>>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(CLOSED_SHARDS)?;
        Ok(table.get((&space.0, &doc.0))?.map(|v| v.value().to_vec()))
    }

    /// The closed shards holding messages of `space` whose id starts with
    /// `prefix`: (id, shard), at most `limit`.
    pub fn message_shards(&self, space: &SpaceId, prefix: &str, limit: usize) -> Result<Vec<(String, DocId)>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(MESSAGE_SHARDS)?;
        let mut out = Vec::new();
        for row in table.range((&space.0, prefix)..)? {
            let (k, v) = row?;
            let (row_space, id) = k.value();
            if row_space != &space.0 || !id.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((id.to_string(), DocId(*v.value())));
        }
        Ok(out)
    }

    /// Every state envelope (read receipt) of `space`, one per device.
    pub fn states(&self, space: &SpaceId) -> Result<Vec<Vec<u8>>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(STATES)?;
        let mut out = Vec::new();
        for row in table.range((&space.0, &[0u8; 32])..=(&space.0, &[0xff; 32]))? {
            out.push(row?.1.value().to_vec());
        }
        Ok(out)
    }

    /// Those of `ids` that are neither held as side envelopes nor retracted.
    pub fn missing_sides(&self, space: &SpaceId, ids: &[EnvelopeId]) -> Result<Vec<EnvelopeId>> {
        let tx = self.db.begin_read()?;
        let sides = tx.open_table(SIDES)?;
        let mut out = Vec::new();
        for id in ids {
            if sides.get((&space.0, &id.0))?.is_none() {
                out.push(*id);
            }
        }
        Ok(out)
    }

    /// How many side envelopes of `space` this node holds.
    pub fn side_count(&self, space: &SpaceId) -> Result<u64> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(SIDES)?;
        let mut n = 0;
        for row in table.range((&space.0, &[0u8; 32])..=(&space.0, &[0xff; 32]))? {
            row?;
            n += 1;
        }
        Ok(n)
    }

    pub fn client_id(&self, space: &SpaceId, client_id: &str) -> Result<Option<String>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(CLIENT_IDS)?;
        Ok(table.get((&space.0, client_id))?.map(|v| v.value().to_string()))
    }

    /// The newest `limit` inbox rows, oldest first: (seq, row bytes).
    pub fn inbox(&self, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(INBOX)?;
        let mut out = Vec::new();
        for row in table.iter()?.rev().take(limit) {
            let (k, v) = row?;
            out.push((k.value(), v.value().to_vec()));
        }
        out.reverse();
        Ok(out)
    }

    /// The reminder claim (or scan mark) stored under `key`, if any.
    pub fn claim(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(REMINDERS)?;
        Ok(table.get(key)?.map(|v| v.value().to_vec()))
    }

    /// Every reminder claim (and the scan mark): (key, row bytes).
    pub fn claims(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(REMINDERS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Every frozen writer: (space, actor, freeze seq, first twin, second twin).
    pub fn frozen(&self) -> Result<Vec<Frozen>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(FROZEN)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            let (space, actor) = k.value();
            let (seq, first, second) = v.value();
            out.push(Frozen {
                space: SpaceId(*space),
                actor: ActorKey(*actor),
                seq,
                twins: [first.to_vec(), second.to_vec()],
            });
        }
        Ok(out)
    }

    /// The envelopes of `space` refused for building on a frozen writer.
    pub fn invalid(&self, space: &SpaceId) -> Result<Vec<EnvelopeId>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(INVALID)?;
        let mut out = Vec::new();
        for row in table.range((&space.0, &[0u8; 32])..=(&space.0, &[0xffu8; 32]))? {
            out.push(EnvelopeId(*row?.0.value().1));
        }
        Ok(out)
    }

    /// The snapshots held for `space` (exact envelope bytes).
    pub fn snapshots(&self, space: &SpaceId) -> Result<Vec<Vec<u8>>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(SNAPSHOTS)?;
        let mut out = Vec::new();
        for row in table.range((&space.0, &[0u8; 32])..=(&space.0, &[0xffu8; 32]))? {
            out.push(row?.1.value().to_vec());
        }
        Ok(out)
    }

    /// Every stored device certificate (postcard bytes).
    pub fn certs(&self) -> Result<Vec<Vec<u8>>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(CERTS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            out.push(row?.1.value().to_vec());
        }
        Ok(out)
    }

    /// This user's devices as recorded here (postcard bytes).
    /// Every row of the org table, in key order.
    pub fn org_rows(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(ORG)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// One row of the org table.
    pub fn org_row(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(ORG)?;
        Ok(table.get(key)?.map(|v| v.value().to_vec()))
    }

    pub fn user_devices(&self) -> Result<Vec<Vec<u8>>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(USER_DEVICES)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            out.push(row?.1.value().to_vec());
        }
        Ok(out)
    }
}

/// A write transaction: every write of one group commit.
pub struct Txn {
    tx: WriteTransaction,
}

impl Txn {
    fn open_table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &mut self,
        def: TableDefinition<K, V>,
    ) -> Result<redb::Table<'_, K, V>> {
        Ok(self.tx.open_table(def)?)
    }

    fn set_two_phase_commit(&mut self, on: bool) {
        self.tx.set_two_phase_commit(on);
    }

    /// Stores an envelope at position `order` of its space's log.
    pub fn put_envelope(&mut self, env: &NewEnvelope<'_>, order: u64) -> Result<()> {
        self.put_envelopes(std::iter::once((env, order)))
    }

    /// Stores envelopes at their positions, opening each table once.
    pub fn put_envelopes<'a, 'b: 'a>(
        &mut self,
        envs: impl IntoIterator<Item = (&'a NewEnvelope<'b>, u64)> + Clone,
    ) -> Result<()> {
        let mut table = self.open_table(ENVELOPES)?;
        for (env, _) in envs.clone() {
            table.insert(&env.id.0, env.bytes)?;
        }
        drop(table);
        let mut table = self.open_table(SPACE_LOG)?;
        for (env, order) in envs.clone() {
            table.insert((&env.space.0, order), &env.id.0)?;
        }
        drop(table);
        let mut table = self.open_table(PLACES)?;
        for (env, order) in envs.clone() {
            table.insert((&env.space.0, &env.id.0), (order, env.doc.as_ref().map(|d| &d.0)))?;
        }
        drop(table);
        let mut table = self.open_table(CONTROL_LOG)?;
        for (env, order) in envs.clone().into_iter().filter(|(env, _)| env.doc.is_none()) {
            table.insert((&env.space.0, order), &env.id.0)?;
        }
        drop(table);
        let mut table = self.open_table(WRITERS)?;
        for (env, _) in envs.clone() {
            table.insert((&env.space.0, &env.actor.0, env.seq), &env.id.0)?;
        }
        drop(table);
        let mut table = self.open_table(PENDING)?;
        for (env, _) in envs {
            table.remove(&env.id.0)?;
        }
        Ok(())
    }

    /// Sets a closed shard of `space` aside with its row, and indexes its
    /// messages' ids.
    pub fn put_closed_shard<'a>(
        &mut self,
        space: &SpaceId,
        doc: &DocId,
        row: &[u8],
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<()> {
        self.open_table(CLOSED_SHARDS)?.insert((&space.0, &doc.0), row)?;
        let mut table = self.open_table(MESSAGE_SHARDS)?;
        for id in ids {
            table.insert((&space.0, id), &doc.0)?;
        }
        Ok(())
    }

    /// Stores a side envelope that rides with the change at (actor, seq).
    pub fn put_side(
        &mut self,
        space: &SpaceId,
        actor: &ActorKey,
        seq: u64,
        id: &EnvelopeId,
        bytes: &[u8],
    ) -> Result<()> {
        self.open_table(SIDES)?.insert((&space.0, &id.0), bytes)?;
        self.open_table(SIDES_OF)?
            .insert((&space.0, &actor.0, seq, &id.0), ())?;
        Ok(())
    }

    pub fn put_chat_setting(&mut self, key: &str, value: &[u8]) -> Result<()> {
        self.open_table(CHAT_SETTINGS)?.insert(key, value)?;
        Ok(())
    }

    pub fn remove_chat_setting(&mut self, key: &str) -> Result<()> {
        self.open_table(CHAT_SETTINGS)?.remove(key)?;
        Ok(())
    }

    pub fn put_file(&mut self, file: &BlobId, space: &SpaceId, body: &EnvelopeId) -> Result<()> {
        self.open_table(FILES)?.insert((&file.0, &space.0, &body.0), ())?;
        Ok(())
    }

    /// The (space, body) rows naming `file`, as this transaction sees them.
    pub fn files_of(&mut self, file: &BlobId) -> Result<Vec<(SpaceId, EnvelopeId)>> {
        let table = self.open_table(FILES)?;
        let mut out = Vec::new();
        for row in table.range((&file.0, &[0u8; 16], &[0u8; 32])..=(&file.0, &[0xff; 16], &[0xff; 32]))? {
            let (k, _) = row?;
            let (_, space, body) = k.value();
            out.push((SpaceId(*space), EnvelopeId(*body)));
        }
        Ok(out)
    }

    /// Removes a body's file row; true when no other body names the file.
    pub fn remove_file(&mut self, file: &BlobId, space: &SpaceId, body: &EnvelopeId) -> Result<bool> {
        let mut table = self.open_table(FILES)?;
        table.remove((&file.0, &space.0, &body.0))?;
        let left = table
            .range((&file.0, &[0u8; 16], &[0u8; 32])..=(&file.0, &[0xff; 16], &[0xff; 32]))?
            .next()
            .is_some();
        Ok(!left)
    }

    pub fn put_file_want(&mut self, file: &BlobId, space: &SpaceId, size: u64) -> Result<()> {
        self.open_table(FILE_WANTS)?.insert(&file.0, (&space.0, size))?;
        Ok(())
    }

    pub fn remove_file_want(&mut self, file: &BlobId) -> Result<()> {
        self.open_table(FILE_WANTS)?.remove(&file.0)?;
        Ok(())
    }

    /// The inbox row `seq`, as this transaction sees it.
    pub fn inbox_row(&mut self, seq: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.open_table(INBOX)?.get(seq)?.map(|v| v.value().to_vec()))
    }

    /// Rewrites the inbox row `seq`.
    pub fn put_inbox_row(&mut self, seq: u64, row: &[u8]) -> Result<()> {
        self.open_table(INBOX)?.insert(seq, row)?;
        Ok(())
    }

    /// Stores `device`'s newest state envelope of `space`, replacing the older.
    pub fn put_state(&mut self, space: &SpaceId, device: &DeviceId, bytes: &[u8]) -> Result<()> {
        self.open_table(STATES)?.insert((&space.0, &device.0), bytes)?;
        Ok(())
    }

    /// The side envelope `id`, as this transaction sees it (written earlier in
    /// the batch or committed).
    pub fn side(&mut self, space: &SpaceId, id: &EnvelopeId) -> Result<Option<Vec<u8>>> {
        Ok(self
            .open_table(SIDES)?
            .get((&space.0, &id.0))?
            .map(|v| v.value().to_vec()))
    }

    /// How many side envelopes ride with the change at (actor, seq), as this
    /// transaction sees it.
    pub fn sides_of_count(&mut self, space: &SpaceId, actor: &ActorKey, seq: u64) -> Result<u64> {
        let table = self.open_table(SIDES_OF)?;
        let mut n = 0;
        for row in table.range((&space.0, &actor.0, seq, &[0u8; 32])..=(&space.0, &actor.0, seq, &[0xff; 32]))? {
            row?;
            n += 1;
        }
        Ok(n)
    }

    /// Deletes a side envelope (a retracted body); true if it was held.
    pub fn delete_side(&mut self, space: &SpaceId, actor: &ActorKey, seq: u64, id: &EnvelopeId) -> Result<bool> {
        let held = self.open_table(SIDES)?.remove((&space.0, &id.0))?.is_some();
        self.open_table(SIDES_OF)?.remove((&space.0, &actor.0, seq, &id.0))?;
        Ok(held)
    }

    /// The tombstones that name `body`, with their bytes, as this
    /// transaction sees them.
    pub fn tombstones(&mut self, space: &SpaceId, body: &EnvelopeId) -> Result<Vec<Vec<u8>>> {
        let ids: Vec<[u8; 32]> = {
            let table = self.open_table(TOMBSTONED)?;
            let mut ids = Vec::new();
            for row in table.range((&space.0, &body.0, &[0u8; 32])..=(&space.0, &body.0, &[0xff; 32]))? {
                ids.push(*row?.0.value().2);
            }
            ids
        };
        let sides = self.open_table(SIDES)?;
        let mut out = Vec::new();
        for id in ids {
            if let Some(bytes) = sides.get((&space.0, &id))? {
                out.push(bytes.value().to_vec());
            }
        }
        Ok(out)
    }

    /// Records that `tombstone` names `body`.
    pub fn put_tombstoned(&mut self, space: &SpaceId, body: &EnvelopeId, tombstone: &EnvelopeId) -> Result<()> {
        self.open_table(TOMBSTONED)?
            .insert((&space.0, &body.0, &tombstone.0), ())?;
        Ok(())
    }

    /// Deletes the notification recorded for (space, actor, counter), keeping
    /// the record that it was seen (so it is never notified again).
    pub fn remove_inbox(&mut self, space: &SpaceId, actor: &ActorKey, counter: u64) -> Result<()> {
        let seq = self
            .open_table(INBOX_SEEN)?
            .get((&space.0, &actor.0, counter))?
            .map(|v| v.value());
        if let Some(seq) = seq {
            self.open_table(INBOX)?.remove(seq)?;
        }
        Ok(())
    }

    pub fn put_space(&mut self, space: &SpaceId, p: Participation) -> Result<()> {
        self.open_table(SPACES)?.insert(&space.0, p as u8)?;
        Ok(())
    }

    pub fn put_pending(&mut self, id: &EnvelopeId, space: &SpaceId, bytes: &[u8]) -> Result<()> {
        self.open_table(PENDING)?.insert(&id.0, (&space.0, bytes))?;
        Ok(())
    }

    pub fn remove_pending(&mut self, id: &EnvelopeId) -> Result<()> {
        self.open_table(PENDING)?.remove(&id.0)?;
        Ok(())
    }

    /// Records a notification once: `None` when (space, actor, counter) was
    /// recorded before, else its inbox seq.
    pub fn put_inbox(&mut self, space: &SpaceId, actor: &ActorKey, counter: u64, row: &[u8]) -> Result<Option<u64>> {
        if self
            .open_table(INBOX_SEEN)?
            .get((&space.0, &actor.0, counter))?
            .is_some()
        {
            return Ok(None);
        }
        let seq = {
            let mut inbox = self.open_table(INBOX)?;
            let seq = inbox.last()?.map_or(0, |(k, _)| k.value() + 1);
            inbox.insert(seq, row)?;
            seq
        };
        self.open_table(INBOX_SEEN)?
            .insert((&space.0, &actor.0, counter), seq)?;
        Ok(Some(seq))
    }

    /// Appends an inbox row that needs no dedup key (its caller checked);
    /// returns its seq.
    pub fn push_inbox(&mut self, row: &[u8]) -> Result<u64> {
        let mut inbox = self.open_table(INBOX)?;
        let seq = inbox.last()?.map_or(0, |(k, _)| k.value() + 1);
        inbox.insert(seq, row)?;
        Ok(seq)
    }

    /// The reminder claim stored under `key`, seeing this transaction's writes.
    pub fn claim(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.open_table(REMINDERS)?.get(key)?.map(|v| v.value().to_vec()))
    }

    /// Stores a reminder claim (or the scan mark) under `key`, replacing one.
    pub fn put_claim(&mut self, key: &str, row: &[u8]) -> Result<()> {
        self.open_table(REMINDERS)?.insert(key, row)?;
        Ok(())
    }

    /// Drops a reminder claim (one old enough to matter no more).
    pub fn remove_claim(&mut self, key: &str) -> Result<()> {
        self.open_table(REMINDERS)?.remove(key)?;
        Ok(())
    }

    pub fn put_client_id(&mut self, space: &SpaceId, client_id: &str, msg_id: &str) -> Result<()> {
        self.open_table(CLIENT_IDS)?.insert((&space.0, client_id), msg_id)?;
        Ok(())
    }

    /// Freezes `frozen.actor` at `frozen.seq − 1`, keeping the twins as evidence.
    pub fn put_frozen(&mut self, frozen: &Frozen) -> Result<()> {
        let [first, second] = &frozen.twins;
        self.open_table(FROZEN)?.insert(
            (&frozen.space.0, &frozen.actor.0),
            (frozen.seq, first.as_slice(), second.as_slice()),
        )?;
        Ok(())
    }

    pub fn put_invalid(&mut self, space: &SpaceId, id: &EnvelopeId) -> Result<()> {
        self.open_table(INVALID)?.insert((&space.0, &id.0), 0)?;
        Ok(())
    }

    /// Removes a stored envelope from every table that indexes it.
    pub fn delete_envelope(&mut self, env: &NewEnvelope<'_>, order: u64) -> Result<()> {
        self.open_table(ENVELOPES)?.remove(&env.id.0)?;
        self.open_table(SPACE_LOG)?.remove((&env.space.0, order))?;
        self.open_table(PLACES)?.remove((&env.space.0, &env.id.0))?;
        self.open_table(CONTROL_LOG)?.remove((&env.space.0, order))?;
        self.open_table(WRITERS)?
            .remove((&env.space.0, &env.actor.0, env.seq))?;
        Ok(())
    }

    pub fn put_snapshot(&mut self, space: &SpaceId, id: &EnvelopeId, bytes: &[u8]) -> Result<()> {
        self.open_table(SNAPSHOTS)?.insert((&space.0, &id.0), bytes)?;
        Ok(())
    }

    pub fn remove_snapshot(&mut self, space: &SpaceId, id: &EnvelopeId) -> Result<()> {
        self.open_table(SNAPSHOTS)?.remove((&space.0, &id.0))?;
        Ok(())
    }

    pub fn put_cert(&mut self, device: &DeviceId, cert: &[u8]) -> Result<()> {
        self.open_table(CERTS)?.insert(&device.0, cert)?;
        Ok(())
    }

    pub fn put_user_device(&mut self, device: &DeviceId, record: &[u8]) -> Result<()> {
        self.open_table(USER_DEVICES)?.insert(&device.0, record)?;
        Ok(())
    }

    pub fn put_org(&mut self, key: &str, value: &[u8]) -> Result<()> {
        self.open_table(ORG)?.insert(key, value)?;
        Ok(())
    }

    pub fn remove_org(&mut self, key: &str) -> Result<()> {
        self.open_table(ORG)?.remove(key)?;
        Ok(())
    }

    /// Commits durably: when this returns Ok, the writes survive a crash.
    pub fn commit(self) -> Result<()> {
        self.tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let space = SpaceId([1; 16]);
        {
            let store = Store::open(dir.path()).unwrap();
            let mut tx = store.begin().unwrap();
            tx.put_space(&space, Participation::Named).unwrap();
            let env = NewEnvelope {
                id: EnvelopeId([9; 32]),
                space,
                actor: ActorKey([2; 16]),
                seq: 1,
                doc: Some(DocId([4; 16])),
                bytes: b"abc",
            };
            tx.put_envelope(&env, 0).unwrap();
            tx.put_client_id(&space, "c1", "m1").unwrap();
            tx.put_snapshot(&space, &EnvelopeId([7; 32]), b"snap").unwrap();
            tx.put_snapshot(&SpaceId([2; 16]), &EnvelopeId([8; 32]), b"other")
                .unwrap();
            tx.commit().unwrap();
            assert!(matches!(Store::open(dir.path()), Err(Error::AlreadyOpen)));
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.spaces().unwrap(), vec![(space, Participation::Named)]);
        let mut log = Vec::new();
        store
            .scan_log(&space, 0, |order, bytes| {
                log.push((order, bytes));
                ControlFlow::<()>::Continue(())
            })
            .unwrap();
        assert_eq!(log, vec![(0, b"abc".to_vec())]);
        assert_eq!(
            store.writer_range(&space, &ActorKey([2; 16]), 1, 5).unwrap(),
            vec![b"abc".to_vec()]
        );
        assert_eq!(store.client_id(&space, "c1").unwrap().as_deref(), Some("m1"));
        assert_eq!(store.snapshots(&space).unwrap(), vec![b"snap".to_vec()]);
        let placed = Placed {
            order: 0,
            doc: Some(DocId([4; 16])),
        };
        assert_eq!(store.placed(&space, &EnvelopeId([9; 32])).unwrap(), Some(placed));
        assert_eq!(store.placed(&SpaceId([2; 16]), &EnvelopeId([9; 32])).unwrap(), None);
    }

    #[test]
    fn a_store_from_before_the_places_index_is_indexed_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let space = SpaceId([1; 16]);
        let envelope = |n: u8, doc| NewEnvelope {
            id: EnvelopeId([n; 32]),
            space,
            actor: ActorKey([2; 16]),
            seq: u64::from(n),
            doc,
            bytes: if doc.is_some() { b"content" } else { b"control" },
        };
        let mut tx = store.begin().unwrap();
        tx.put_envelope(&envelope(1, None), 0).unwrap();
        tx.put_envelope(&envelope(2, Some(DocId([5; 16]))), 1).unwrap();
        // As a store written before the index existed: no rows, no mark.
        tx.tx.open_table(PLACES).unwrap().retain(|_, _| false).unwrap();
        tx.tx.open_table(CONTROL_LOG).unwrap().retain(|_, _| false).unwrap();
        tx.open_table(META).unwrap().remove(PLACES_COMPLETE).unwrap();
        tx.commit().unwrap();
        assert_eq!(store.placed(&space, &EnvelopeId([2; 32])).unwrap(), None);

        let doc_of = |bytes: &[u8]| Some((bytes == b"content").then_some(DocId([5; 16])));
        assert_eq!(store.complete_places(doc_of).unwrap(), 2);
        let placed = store
            .placed_all(&space, [&EnvelopeId([1; 32]), &EnvelopeId([2; 32])])
            .unwrap();
        assert_eq!(
            placed,
            [
                Some(Placed { order: 0, doc: None }),
                Some(Placed {
                    order: 1,
                    doc: Some(DocId([5; 16]))
                })
            ]
        );
        assert_eq!(store.complete_places(doc_of).unwrap(), 0, "indexed once");
        let mut control = Vec::new();
        store
            .scan_control(&space, |order, bytes| {
                control.push((order, bytes));
                ControlFlow::<()>::Continue(())
            })
            .unwrap();
        assert_eq!(control, [(0, b"control".to_vec())], "the control operation alone");
    }
}
