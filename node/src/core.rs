//! The core actor: owns the store, the spaces and their documents, on its own
//! thread. Everything else talks to it through a [`CoreHandle`].
//!
//! Group commit: the thread takes every command that is waiting (up to
//! [`BATCH_CAP`]), runs all writes in one durable redb transaction, commits, and only
//! then replies and announces. Sends to one space in a batch become one Automerge
//! change (one envelope); arriving envelopes are applied with one `apply_changes`
//! call per document.
//!
//! The actor's work is split by job: `load` (start-up), `ingest` (envelopes from
//! peers), `snapshots` (snapshots from peers), `serve` (answering offers, catch-up,
//! making snapshots), `members` (invites), `equivocation` (freeze and purge);
//! `space` holds one space's state and its pure validation, `pending` the bounded
//! waiting sets.

mod calendar;
mod chat;
mod devices;
mod docs;
mod equivocation;
mod files;
mod inbox;
mod ingest;
mod load;
mod members;
mod org;
mod pending;
mod quiet;
mod receipts;
mod reminders;
mod serve;
mod shards;
mod snapshots;
mod space;

pub use self::serve::CATCH_UP_BYTES;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    panic::AssertUnwindSafe,
    path::PathBuf,
    sync::Arc,
};

use outpost_crdt::doc::{Checked, Effect};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, info, warn};

pub use self::{
    calendar::{
        AgendaItem, AttendeeView, CalAnswer, CalEdit, CalQuery, CalScope, CalWritten, EventChange, FreeBusyView,
        Interval, MAX_ICS_BYTES, NewEvent,
    },
    chat::{
        ChatDone, ChatOp, DirectRoom, EditView, MessageView, Outgoing, ReactionView, RetractedView, RoomView, read_body,
    },
    devices::{DeviceRecord, DeviceView, Joined, LinkState, Linked, Revoked, join_request},
    docs::{
        BlameView, DiffView, DocAnswer, DocEdit, DocFormat, DocQuery, DocView, MAX_DOC_WRITE_BYTES,
        MAX_SPLICES_PER_WRITE, Splice, VersionView, Written,
    },
    files::{FileRef, FileRefError, FileStatus, FileView, FileWant, MAX_FILE_NAME_BYTES, check_file_name},
    inbox::{InboxEntry, MAX_INBOX_LIMIT, ReminderView},
    org::{DEFAULT_EXPIRY_DAYS, DirEntry, DraftView, MAX_DIR_RESULTS, OrgCommand, OrgNet, OrgView, Proposal},
    quiet::{Quiet, QuietHours, QuietView},
    receipts::{MAX_RECEIPT_WRITERS, MarkedRead},
    reminders::{CATCH_UP_MS, LATE_AFTER_MS, MAX_REMINDERS_PER_EVENT, SIBLING_STEP_MS},
};
use self::{
    devices::PendingLink,
    equivocation::freeze,
    members::admits,
    pending::{ORPHAN_BYTES_CAP, ORPHAN_CAP, Pending},
    snapshots::{SnapshotOutcome, hold_stored_snapshot},
    space::{ContentChange, PeerView, SnapshotContent, SnapshotVerdict, Space, Verdict},
};
use crate::{
    control::{self, ControlOp, Epoch, History, Keyring, Posting, Role, SpaceKind, SpaceState},
    crypto::EpochKey,
    envelope::{Envelope, Header, Kind},
    identity::{DeviceCert, DeviceKeys, UserKeys},
    ids::{ActorKey, DeviceId, DocId, EnvelopeId, EpochId, SpaceId, UserId},
    link::{JoinOutcome, JoinRequest, JoinResponse, Ticket},
    snapshot::Snapshot,
    store::{self, NewEnvelope, Participation, Store, Txn},
    sync::{Ack, SpaceVv, VersionVector},
};

/// Most commands handled in one group commit.
pub const BATCH_CAP: usize = 1024;
/// Capacity of the command channel: callers wait (backpressure) beyond this.
pub const COMMAND_CAP: usize = 4096;
/// Capacity of the event broadcast; a subscriber lagging further re-syncs.
pub const EVENT_CAP: usize = 8192;
/// Longest message text accepted, in bytes (a chat rule every node enforces).
pub use outpost_crdt::chat::MAX_TEXT_BYTES;
/// Longest client request id (idempotency key), in bytes.
pub const MAX_CLIENT_ID_BYTES: usize = 128;
/// Most messages returned by one log request.
pub const MAX_LOG_LIMIT: usize = 100_000;

/// A user-facing failure of a core operation.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("no space {0} on this node")]
    UnknownSpace(SpaceId),
    #[error("this device may not write in space {0}: its user is not a writer there (readers only view)")]
    NotWritable(SpaceId),
    #[error("this device cannot read space {space}: {why}")]
    KeyMissing { space: SpaceId, why: String },
    #[error(
        "unknown device or user {0}: pass a device card (`outpost id` on that device prints it), or connect to one of the user's devices first"
    )]
    UnknownDevice(String),
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("not allowed: {0}")]
    NotAllowed(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// An org action this device's admin key (or its absence) does not allow.
    #[error("not allowed: {0}")]
    NotAdmin(String),
    #[error("storage failure; the operation was not applied")]
    Store(#[source] Arc<store::Error>),
    #[error("the node is shutting down")]
    Stopped,
}

pub type Result<T> = std::result::Result<T, Error>;

/// Something that happened, for the network actor and the API's event stream.
#[derive(Debug, Clone)]
pub enum Event {
    /// Envelopes were durably stored; push them to connected entitled peers.
    Stored {
        space: SpaceId,
        envelopes: Arc<Vec<Vec<u8>>>,
        entitled: Arc<BTreeSet<DeviceId>>,
        from: Option<DeviceId>,
    },
    /// A message became visible.
    Message { space: SpaceId, message: MessageView },
    /// Messages of a chat room were edited, reacted to or retracted, or its
    /// settings or read receipts changed: followers re-read what they show.
    /// `docs` are the room's documents whose messages changed (none for
    /// receipts).
    ChatUpdated { space: SpaceId, docs: Vec<DocId> },
    /// A shared document changed.
    Document { space: SpaceId },
    /// A calendar changed.
    Calendar { space: SpaceId },
    /// Reminders this device fired: the network tells the sibling devices
    /// `to` that are connected.
    Claims {
        to: Vec<DeviceId>,
        claims: Vec<reminders::Claim>,
    },
    /// A notification for this device's user (see `outpost inbox`).
    Inbox { entry: InboxEntry },
    /// The log changed in bulk (a snapshot was merged, or a frozen writer's
    /// messages were removed): followers re-read instead of receiving one event each.
    Reload { space: SpaceId, messages: u64 },
    /// The org policy advanced, or its drafts changed: tell every peer.
    Policy,
    /// A file to download (`file get`).
    FileWanted(FileWant),
    /// A file was deleted here (its message retracted): stop fetching it.
    FileDropped(crate::blobs::BlobId),
}

/// What to look up in the org directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirQuery {
    /// Name, department path, title or member id.
    Search(String),
    /// A department path: its members and those of departments under it.
    Department(String),
}

/// Per-space state for `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpaceStatus {
    pub space: SpaceId,
    pub name: Option<String>,
    pub kind: String,
    /// "member", "replicator", or "removed" (this device is no longer in the
    /// space: it keeps what it could read, and receives nothing new).
    pub role: String,
    /// Whether members added later read the history ("shared") or only what
    /// is written from their join on ("from-join").
    pub history: History,
    /// Who may post ("writers", or "admins" in an announcement room).
    #[serde(default)]
    pub posting: Posting,
    /// The current key epoch (merged id when concurrent rotations merged).
    pub epoch: EpochId,
    /// From-join spaces: stored envelopes this device cannot open because they
    /// were written before it joined (it stores and forwards them).
    pub before_join: usize,
    /// Control operations in the log that have no effect under strong remove
    /// (their author was removed or demoted concurrently), on every node alike.
    pub ignored_ops: usize,
    /// Control operations refused as invalid (e.g. signed by a non-admin).
    pub invalid_ops: u64,
    /// One word for people and scripts: "synced" (nothing waits, no known peer
    /// lacks anything either way), "syncing" (peers are known to lack changes or
    /// to hold changes we lack), "stuck" (envelopes wait for parents nobody has
    /// sent, or the key does not open). `peers`, `pending` and `key_problem` say why.
    pub sync: SyncState,
    pub readable: bool,
    pub key_problem: Option<String>,
    pub envelopes: u64,
    pub writers: usize,
    pub pending: usize,
    /// Bytes of the envelopes waiting for their parents.
    pub pending_bytes: usize,
    pub rejected: u64,
    /// Snapshots held: whole documents that stand in for the envelopes they cover.
    pub snapshots: usize,
    /// Chat message bodies and tombstones held (beside the log; a retraction
    /// deletes bodies).
    #[serde(default)]
    pub sides: u64,
    /// A large room's documents: shards in memory, and closed shards set
    /// aside (stored, not in memory; loaded when something reaches them).
    #[serde(default)]
    pub shards_loaded: usize,
    #[serde(default)]
    pub shards_set_aside: usize,
    /// Devices caught signing two different envelopes for one (writer, seq). Only
    /// a device's own key can do that: a cloned or compromised device.
    pub equivocating: Vec<DeviceId>,
    pub peers: Vec<PeerSyncStatus>,
}

/// See [`SpaceStatus::sync`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    Synced,
    Syncing,
    Stuck,
}

/// What one peer is known to hold of a space.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerSyncStatus {
    pub device: DeviceId,
    /// Changes we hold that the peer is known to lack.
    pub they_lack: u64,
    /// Changes the peer holds that we lack.
    pub we_lack: u64,
    pub last_sync_ms: Option<u64>,
}

/// A space as listed by `chat list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpaceSummary {
    pub space: SpaceId,
    pub name: Option<String>,
    pub kind: String,
    pub history: History,
    #[serde(default)]
    pub posting: Posting,
    /// A department room's department path (its members follow the chart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    pub readable: bool,
    pub members: Vec<DeviceId>,
    pub replicators: Vec<DeviceId>,
    /// Chat rooms: messages of others this device's user has not read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unread: Option<u64>,
    /// A direct-message room: the other user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct: Option<UserId>,
    /// Its notifications are held back on this device.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub muted: bool,
}

/// A member of a space, as `space members` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberView {
    pub device: DeviceId,
    /// The user the device belongs to (a member is a user: all its devices).
    pub user: UserId,
    pub role: Role,
    /// Who added it; `None` for members named by the genesis.
    pub added_by: Option<DeviceId>,
    /// This device.
    pub me: bool,
}

/// A space to create: a chat room or a shared document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewSpace {
    pub name: String,
    #[serde(default)]
    pub kind: SpaceKind,
    /// Whether members added later read what was written before they joined.
    #[serde(default)]
    pub history: History,
    /// Who may post: every writer, or only owners and admins (an announcement room).
    #[serde(default)]
    pub posting: Posting,
    /// A department room: its members follow the org chart (this department
    /// and those below it). Org admins only.
    #[serde(default)]
    pub department: Option<String>,
    /// Device cards or ids.
    #[serde(default)]
    pub members: Vec<String>,
    #[serde(default)]
    pub replicators: Vec<String>,
}

/// A space's members and replicate-only nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Members {
    pub space: SpaceId,
    pub members: Vec<MemberView>,
    pub replicators: Vec<DeviceId>,
}

/// What an invitation grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    /// A member with this role: it gets the key.
    Member(Role),
    /// A replicate-only node: it stores and forwards ciphertext, never the key.
    Replicator,
}

/// What an invitation produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Invited {
    pub device: DeviceId,
    pub grant: Grant,
    /// The control operation that added it.
    pub op: EnvelopeId,
}

/// A change to a space's membership or keys, made by this device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberChange {
    /// Removes a member user, every device of it (named by a device card, device
    /// id or user id), or a replicator. Starts a new epoch the removed devices
    /// never receive.
    Remove(String),
    /// Removes one device (a device of one's own user, or as owner/admin).
    RemoveDevice(String),
    /// Changes a member user's role (all its devices).
    SetRole(String, Role),
    /// Removes this user (all its devices) from the space.
    Leave,
    /// Starts a new epoch for the current members.
    Rotate,
}

/// What a membership change produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Changed {
    /// The signed control operation.
    pub op: EnvelopeId,
    /// The space's epoch after it.
    pub epoch: EpochId,
}

/// What a send produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sent {
    pub id: String,
    /// True when this retried request had already been stored.
    pub duplicate: bool,
}

/// What to push to a peer after an offer exchange.
pub struct OfferOutcome {
    pub response: Vec<SpaceVv>,
    pub push: Vec<Vec<u8>>,
    /// The push stopped at [`CATCH_UP_BYTES`]: ask for the rest with
    /// [`CoreHandle::catch_up`] once the peer has acknowledged it.
    pub more: bool,
}

type Reply<T> = oneshot::Sender<Result<T>>;

enum ToCore {
    Org {
        cmd: OrgCommand,
        reply: Reply<OrgView>,
    },
    OrgShow {
        reply: Reply<OrgView>,
    },
    /// What the network needs of the org's policy.
    OrgNet {
        reply: Reply<OrgNet>,
    },
    /// Applies the current policy to every space (at start-up).
    EnforcePolicy,
    /// An org invite ticket for a member (admins).
    OrgInvite {
        member: String,
        addrs: Vec<String>,
        anchors: Vec<String>,
        reply: Reply<crate::org::enroll::EnrollTicket>,
    },
    /// As an anchor: hold a request for an offline admin device.
    HoldEnroll {
        from: DeviceId,
        request: Box<crate::org::enroll::EnrollRequest>,
        reply: Reply<crate::org::enroll::EnrollOutcome>,
    },
    /// The requests held for an admin device.
    HeldFor {
        admin: DeviceId,
        reply: Reply<Vec<crate::org::enroll::EnrollRequest>>,
    },
    /// The admin device answered the request held for `device` (with `proof`).
    ReleaseHeld {
        device: DeviceId,
        proof: [u8; 32],
    },
    /// A device asks to enroll with an invite this device issued.
    TakeEnroll {
        from: DeviceId,
        request: Box<crate::org::enroll::EnrollRequest>,
        reply: Reply<crate::org::enroll::EnrollOutcome>,
    },
    /// The directory: members matching a query, or of a department.
    Directory {
        query: DirQuery,
        reply: Reply<Vec<DirEntry>>,
    },
    /// A peer's policy frame: the answer is what it lacks.
    TakePolicy {
        from: DeviceId,
        frame: Box<crate::org::PolicyFrame>,
        reply: Reply<Option<crate::org::PolicyFrame>>,
    },
    /// What to tell a peer about the org when connecting.
    PolicyFrame {
        reply: Reply<Option<crate::org::PolicyFrame>>,
    },
    CreateChat {
        chat: Box<NewSpace>,
        reply: Reply<SpaceId>,
    },
    DocWrite {
        space: SpaceId,
        edit: DocEdit,
        reply: Reply<Written>,
    },
    DocRead {
        space: SpaceId,
        query: DocQuery,
        reply: Reply<DocAnswer>,
    },
    CalWrite {
        space: Option<SpaceId>,
        edit: CalEdit,
        reply: Reply<CalWritten>,
    },
    CalRead {
        query: CalQuery,
        reply: Reply<CalAnswer>,
    },
    /// The clock: fire the reminders that came due.
    Remind,
    /// Reminders a sibling device fired.
    TakeClaims {
        from: DeviceId,
        claims: Vec<reminders::Claim>,
    },
    /// Recent reminder claims, for a sibling device that connected.
    ClaimsFor {
        peer: DeviceId,
        reply: Reply<Vec<reminders::Claim>>,
    },
    Inbox {
        limit: usize,
        reply: Reply<Vec<InboxEntry>>,
    },
    SetPosting {
        space: SpaceId,
        posting: Posting,
        reply: Reply<Changed>,
    },
    Send {
        space: SpaceId,
        outgoing: Outgoing,
        reply: Reply<Sent>,
    },
    ChatWrite {
        space: Option<SpaceId>,
        op: ChatOp,
        reply: Reply<ChatDone>,
    },
    Room {
        space: SpaceId,
        reply: Reply<RoomView>,
    },
    WhoIs {
        name: String,
        reply: Reply<Option<UserId>>,
    },
    WantedFor {
        peer: DeviceId,
        reply: Reply<Vec<(SpaceId, Vec<EnvelopeId>)>>,
    },
    SidesFor {
        peer: DeviceId,
        space: SpaceId,
        ids: Vec<EnvelopeId>,
        reply: Reply<(Vec<Vec<u8>>, bool)>,
    },
    AskAgain {
        space: SpaceId,
    },
    MarkRead {
        space: SpaceId,
        reply: Reply<MarkedRead>,
    },
    FileGet {
        name: String,
        reply: Reply<FileStatus>,
    },
    FileShow {
        name: String,
        reply: Reply<FileStatus>,
    },
    FileToRead {
        name: String,
        reply: Reply<FileRef>,
    },
    FileWants {
        reply: Reply<Vec<FileWant>>,
    },
    MayFetch {
        device: DeviceId,
        id: crate::blobs::BlobId,
        reply: oneshot::Sender<bool>,
    },
    FileFetched {
        id: crate::blobs::BlobId,
    },
    Direct {
        who: String,
        reply: Reply<DirectRoom>,
    },
    Quiet {
        change: Quiet,
        reply: Reply<QuietView>,
    },
    QuietShow {
        reply: Reply<QuietView>,
    },
    Ingest {
        from: DeviceId,
        /// Decoded and signature-checked by the handle, off the core thread.
        envelopes: Vec<Envelope>,
        reply: Reply<Ack>,
    },
    LearnCert {
        cert: DeviceCert,
    },
    Messages {
        space: SpaceId,
        limit: usize,
        reply: Reply<Vec<MessageView>>,
    },
    ShardMessages {
        space: SpaceId,
        docs: Vec<DocId>,
        reply: Reply<Vec<MessageView>>,
    },
    Retracted {
        space: SpaceId,
        reply: Reply<Vec<String>>,
    },
    Spaces {
        reply: Reply<Vec<SpaceSummary>>,
    },
    Status {
        reply: Reply<Vec<SpaceStatus>>,
    },
    MakeOffer {
        peer: DeviceId,
        reply: Reply<Vec<SpaceVv>>,
    },
    TakeOffer {
        peer: DeviceId,
        spaces: Vec<SpaceVv>,
        reply: Reply<OfferOutcome>,
    },
    CatchUp {
        peer: DeviceId,
        reply: Reply<OfferOutcome>,
    },
    Invite {
        space: SpaceId,
        member: String,
        grant: Grant,
        reply: Reply<Invited>,
    },
    Members {
        space: SpaceId,
        reply: Reply<Members>,
    },
    Change {
        space: SpaceId,
        change: MemberChange,
        reply: Reply<Changed>,
    },
    LinkTicket {
        addrs: Vec<String>,
        reply: Reply<Ticket>,
    },
    LinkState {
        id: [u8; 16],
        reply: Reply<LinkState>,
    },
    JoinRequest {
        from: DeviceId,
        request: Box<JoinRequest>,
        reply: oneshot::Sender<JoinOutcome>,
    },
    ConfirmLink {
        id: [u8; 16],
        reply: Reply<Linked>,
    },
    Joined {
        user: UserId,
        response: Box<JoinResponse>,
        reply: Reply<Joined>,
    },
    Devices {
        reply: Reply<Vec<DeviceView>>,
    },
    Revoke {
        device: String,
        reply: Reply<Revoked>,
    },
    PeerHolds {
        peer: DeviceId,
        spaces: Vec<SpaceVv>,
    },
}

/// A cheap handle to the core actor.
#[derive(Clone)]
pub struct CoreHandle {
    tx: mpsc::Sender<ToCore>,
    events: broadcast::Sender<Event>,
    device: DeviceId,
    blobs: Arc<crate::blobs::Blobs>,
}

impl CoreHandle {
    /// Resolves once the core has stopped taking commands: every handle is
    /// gone, or its thread panicked.
    pub async fn stopped(&self) {
        self.tx.closed().await;
    }

    /// Whether the core has stopped taking commands.
    pub fn is_stopped(&self) -> bool {
        self.tx.is_closed()
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> ToCore) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    pub fn device(&self) -> DeviceId {
        self.device
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Creates a chat space; `members` and `replicators` are device cards or ids.
    pub async fn create_chat(
        &self,
        name: String,
        history: History,
        members: Vec<String>,
        replicators: Vec<String>,
    ) -> Result<SpaceId> {
        self.create(NewSpace {
            name,
            kind: SpaceKind::Chat,
            history,
            posting: Posting::Writers,
            department: None,
            members,
            replicators,
        })
        .await
    }

    /// Creates a space as `chat` describes.
    pub async fn create(&self, chat: NewSpace) -> Result<SpaceId> {
        self.call(|reply| ToCore::CreateChat {
            chat: Box::new(chat),
            reply,
        })
        .await
    }

    /// Sets who may post in a space (owners and admins).
    pub async fn set_posting(&self, space: SpaceId, posting: Posting) -> Result<Changed> {
        self.call(|reply| ToCore::SetPosting { space, posting, reply }).await
    }

    /// Posts a message; returns once it is durably stored.
    pub async fn send(&self, space: SpaceId, text: String, client_id: Option<String>) -> Result<Sent> {
        let outgoing = Outgoing {
            text,
            reply_to: None,
            client_id,
            file: None,
        };
        self.send_message(space, outgoing).await
    }

    /// Posts a message (a reply, with mentions); returns once it is durable.
    pub async fn send_message(&self, space: SpaceId, outgoing: Outgoing) -> Result<Sent> {
        self.call(|reply| ToCore::Send { space, outgoing, reply }).await
    }

    /// Edits, retracts, reacts to a message, or changes a room's settings.
    pub async fn chat_write(&self, space: Option<SpaceId>, op: ChatOp) -> Result<ChatDone> {
        self.call(|reply| ToCore::ChatWrite { space, op, reply }).await
    }

    /// The chat bodies this node lacks that `peer` may hold, per space.
    pub async fn wanted_for(&self, peer: DeviceId) -> Result<Vec<(SpaceId, Vec<EnvelopeId>)>> {
        self.call(|reply| ToCore::WantedFor { peer, reply }).await
    }

    /// The bodies (or their tombstones) `peer` asks for, that this node holds.
    /// Also says whether more were held than fit one answer.
    pub async fn sides_for(
        &self,
        peer: DeviceId,
        space: SpaceId,
        ids: Vec<EnvelopeId>,
    ) -> Result<(Vec<Vec<u8>>, bool)> {
        self.call(|reply| ToCore::SidesFor {
            peer,
            space,
            ids,
            reply,
        })
        .await
    }

    /// Mutes or unmutes a room, or sets the quiet hours.
    pub async fn set_quiet(&self, change: Quiet) -> Result<QuietView> {
        self.call(|reply| ToCore::Quiet { change, reply }).await
    }

    /// The do-not-disturb settings.
    pub async fn quiet(&self) -> Result<QuietView> {
        self.call(|reply| ToCore::QuietShow { reply }).await
    }

    /// The direct-message room with the user `who` names (made when there is none).
    pub async fn direct(&self, who: String) -> Result<DirectRoom> {
        self.call(|reply| ToCore::Direct { who, reply }).await
    }

    /// Marks a chat room read by this device's user, up to what it holds.
    pub async fn mark_read(&self, space: SpaceId) -> Result<MarkedRead> {
        self.call(|reply| ToCore::MarkRead { space, reply }).await
    }

    /// The node's attachment store.
    pub fn blobs(&self) -> Arc<crate::blobs::Blobs> {
        self.blobs.clone()
    }

    /// Fetches the file `name` names (an id or unique prefix) unless it is here.
    pub async fn file_get(&self, name: String) -> Result<FileStatus> {
        self.call(|reply| ToCore::FileGet { name, reply }).await
    }

    /// Where the file `name` names stands here.
    pub async fn file_status(&self, name: String) -> Result<FileStatus> {
        self.call(|reply| ToCore::FileShow { name, reply }).await
    }

    /// The file `name` names, with its key, when it is held whole here.
    pub async fn file_to_read(&self, name: String) -> Result<FileRef> {
        self.call(|reply| ToCore::FileToRead { name, reply }).await
    }

    /// Downloads asked for and not finished.
    pub async fn file_wants(&self) -> Result<Vec<FileWant>> {
        self.call(|reply| ToCore::FileWants { reply }).await
    }

    /// Whether `device` may fetch file `id` from this node.
    pub async fn may_fetch(&self, device: DeviceId, id: crate::blobs::BlobId) -> bool {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(ToCore::MayFetch { device, id, reply }).await.is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// A download finished.
    pub async fn file_fetched(&self, id: crate::blobs::BlobId) {
        let _ = self.tx.send(ToCore::FileFetched { id }).await;
    }

    /// A peer held more of the bodies asked for than it sent: ask again now.
    pub async fn ask_again(&self, space: SpaceId) {
        let _ = self.tx.send(ToCore::AskAgain { space }).await;
    }

    /// A room's topic, welcome message, announcement and pinned messages.
    pub async fn room(&self, space: SpaceId) -> Result<RoomView> {
        self.call(|reply| ToCore::Room { space, reply }).await
    }

    /// The one user `name` names among the members of this device's spaces,
    /// as an `@mention` would resolve it (org name, e-mail name, 8+ hex of
    /// the user id); none when no one or several.
    pub async fn who_is(&self, name: String) -> Result<Option<UserId>> {
        self.call(|reply| ToCore::WhoIs { name, reply }).await
    }

    /// Verifies, stores and applies envelopes received from `from`.
    ///
    /// Decoding and signature checks (the costliest part, ~40 µs an envelope) run
    /// here on a blocking thread, in parallel with the core's work on earlier
    /// batches; malformed envelopes are warned about naming the peer and counted
    /// as rejected in the ack.
    pub async fn ingest(&self, from: DeviceId, envelopes: Vec<Vec<u8>>) -> Result<Ack> {
        let (envelopes, malformed) = tokio::task::spawn_blocking(move || decode_from(from, envelopes))
            .await
            .map_err(|_| Error::Stopped)?;
        let mut ack = self.call(|reply| ToCore::Ingest { from, envelopes, reply }).await?;
        ack.rejected += malformed;
        Ok(ack)
    }

    pub async fn learn_cert(&self, cert: DeviceCert) {
        let _ = self.tx.send(ToCore::LearnCert { cert }).await;
    }

    /// Runs an org command (`org init|follow|propose|sign|publish`).
    pub async fn org(&self, cmd: OrgCommand) -> Result<OrgView> {
        self.call(|reply| ToCore::Org { cmd, reply }).await
    }

    pub async fn org_show(&self) -> Result<OrgView> {
        self.call(|reply| ToCore::OrgShow { reply }).await
    }

    /// An invite ticket for `member`, naming `addrs` to reach this device.
    /// An invite ticket for `member`, naming this device at `addrs` and its
    /// `anchors` (which hold the request while this device is offline).
    pub async fn org_invite(
        &self,
        member: String,
        addrs: Vec<String>,
        anchors: Vec<String>,
    ) -> Result<crate::org::enroll::EnrollTicket> {
        self.call(|reply| ToCore::OrgInvite {
            member,
            addrs,
            anchors,
            reply,
        })
        .await
    }

    /// As an anchor: holds `request` for its offline admin device, durably.
    pub async fn hold_enroll(
        &self,
        from: DeviceId,
        request: crate::org::enroll::EnrollRequest,
    ) -> Result<crate::org::enroll::EnrollOutcome> {
        self.call(|reply| ToCore::HoldEnroll {
            from,
            request: Box::new(request),
            reply,
        })
        .await
    }

    /// The enrollment requests this anchor holds for `admin`.
    pub async fn held_for(&self, admin: DeviceId) -> Result<Vec<crate::org::enroll::EnrollRequest>> {
        self.call(|reply| ToCore::HeldFor { admin, reply }).await
    }

    /// Drops the request held for `device` with `proof` (its admin device
    /// answered it).
    pub async fn release_held(&self, device: DeviceId, proof: [u8; 32]) {
        let _ = self.tx.send(ToCore::ReleaseHeld { device, proof }).await;
    }

    /// Answers a device's enrollment request.
    pub async fn take_enroll(
        &self,
        from: DeviceId,
        request: crate::org::enroll::EnrollRequest,
    ) -> Result<crate::org::enroll::EnrollOutcome> {
        self.call(|reply| ToCore::TakeEnroll {
            from,
            request: Box::new(request),
            reply,
        })
        .await
    }

    /// The org directory as this device may see it.
    pub async fn directory(&self, query: DirQuery) -> Result<Vec<DirEntry>> {
        self.call(|reply| ToCore::Directory { query, reply }).await
    }

    /// What the network needs of the org's current policy: who is revoked,
    /// who is admitted, which devices are anchors.
    pub async fn org_net(&self) -> Result<OrgNet> {
        self.call(|reply| ToCore::OrgNet { reply }).await
    }

    /// Takes a peer's policy frame; returns what the peer lacks.
    pub async fn take_policy(
        &self,
        from: DeviceId,
        frame: crate::org::PolicyFrame,
    ) -> Result<Option<crate::org::PolicyFrame>> {
        self.call(|reply| ToCore::TakePolicy {
            from,
            frame: Box::new(frame),
            reply,
        })
        .await
    }

    /// What to tell a peer about the org when connecting (`None`: no org).
    pub async fn policy_frame(&self) -> Result<Option<crate::org::PolicyFrame>> {
        self.call(|reply| ToCore::PolicyFrame { reply }).await
    }

    /// Writes an edit to a document space; returns once it is durable.
    pub async fn write_doc(&self, space: SpaceId, edit: DocEdit) -> Result<Written> {
        self.call(|reply| ToCore::DocWrite { space, edit, reply }).await
    }

    /// Fires the reminders that came due (the daemon's clock calls this).
    pub async fn remind(&self) {
        let _ = self.tx.send(ToCore::Remind).await;
    }

    /// Records reminders a sibling device fired.
    pub async fn take_claims(&self, from: DeviceId, claims: Vec<reminders::Claim>) {
        let _ = self.tx.send(ToCore::TakeClaims { from, claims }).await;
    }

    /// Reminders this user's devices fired lately, for `peer` (empty unless it
    /// is a device of this user).
    pub async fn claims_for(&self, peer: DeviceId) -> Result<Vec<reminders::Claim>> {
        self.call(|reply| ToCore::ClaimsFor { peer, reply }).await
    }

    /// Writes to a calendar; returns once it is durable.
    pub async fn write_calendar(&self, space: Option<SpaceId>, edit: CalEdit) -> Result<CalWritten> {
        self.call(|reply| ToCore::CalWrite { space, edit, reply }).await
    }

    pub async fn read_calendar(&self, query: CalQuery) -> Result<CalAnswer> {
        self.call(|reply| ToCore::CalRead { query, reply }).await
    }

    /// The newest `limit` notifications for this device's user, oldest first.
    pub async fn inbox(&self, limit: usize) -> Result<Vec<InboxEntry>> {
        self.call(|reply| ToCore::Inbox { limit, reply }).await
    }

    pub async fn read_doc(&self, space: SpaceId, query: DocQuery) -> Result<DocAnswer> {
        self.call(|reply| ToCore::DocRead { space, query, reply }).await
    }

    pub async fn messages(&self, space: SpaceId, limit: usize) -> Result<Vec<MessageView>> {
        self.call(|reply| ToCore::Messages { space, limit, reply }).await
    }

    /// Every message of the shards `docs` of a room (closed ones loaded for
    /// it), with their edits, reactions and retraction: what changed when
    /// those shards did (see [`Event::ChatUpdated`]).
    pub async fn shard_messages(&self, space: SpaceId, docs: Vec<DocId>) -> Result<Vec<MessageView>> {
        self.call(|reply| ToCore::ShardMessages { space, docs, reply }).await
    }

    /// The ids of a room's retracted messages, however old (closed shards
    /// answer from their stored rows: nothing is loaded).
    pub async fn retracted(&self, space: SpaceId) -> Result<Vec<String>> {
        self.call(|reply| ToCore::Retracted { space, reply }).await
    }

    pub async fn spaces(&self) -> Result<Vec<SpaceSummary>> {
        self.call(|reply| ToCore::Spaces { reply }).await
    }

    pub async fn status(&self) -> Result<Vec<SpaceStatus>> {
        self.call(|reply| ToCore::Status { reply }).await
    }

    pub async fn make_offer(&self, peer: DeviceId) -> Result<Vec<SpaceVv>> {
        self.call(|reply| ToCore::MakeOffer { peer, reply }).await
    }

    pub async fn take_offer(&self, peer: DeviceId, spaces: Vec<SpaceVv>) -> Result<OfferOutcome> {
        self.call(|reply| ToCore::TakeOffer { peer, spaces, reply }).await
    }

    /// Adds a member device (card or known device id) or a replicator; returns once
    /// the signed operation is durable.
    pub async fn invite(&self, space: SpaceId, member: String, grant: Grant) -> Result<Invited> {
        self.call(|reply| ToCore::Invite {
            space,
            member,
            grant,
            reply,
        })
        .await
    }

    /// Removes a member, changes a role, leaves or rotates; returns once the signed
    /// operation is durable.
    pub async fn change_members(&self, space: SpaceId, change: MemberChange) -> Result<Changed> {
        self.call(|reply| ToCore::Change { space, change, reply }).await
    }

    /// A ticket for linking a new device to this user (see [`crate::link`]).
    pub async fn link_ticket(&self, addrs: Vec<String>) -> Result<Ticket> {
        self.call(|reply| ToCore::LinkTicket { addrs, reply }).await
    }

    pub async fn link_state(&self, id: [u8; 16]) -> Result<LinkState> {
        self.call(|reply| ToCore::LinkState { id, reply }).await
    }

    /// A device asks to join through a ticket made here; resolves when the person
    /// confirms (or the ticket is refused).
    pub async fn join_request(&self, from: DeviceId, request: JoinRequest) -> JoinOutcome {
        let (reply, rx) = oneshot::channel();
        let request = Box::new(request);
        if self
            .tx
            .send(ToCore::JoinRequest { from, request, reply })
            .await
            .is_err()
        {
            return JoinOutcome::Refused("the node is shutting down".into());
        }
        rx.await
            .unwrap_or_else(|_| JoinOutcome::Refused("the ticket was not confirmed".into()))
    }

    pub async fn confirm_link(&self, id: [u8; 16]) -> Result<Linked> {
        self.call(|reply| ToCore::ConfirmLink { id, reply }).await
    }

    /// The primary accepted this device into `user`.
    pub async fn joined(&self, user: UserId, response: JoinResponse) -> Result<Joined> {
        let response = Box::new(response);
        self.call(|reply| ToCore::Joined { user, response, reply }).await
    }

    pub async fn devices(&self) -> Result<Vec<DeviceView>> {
        self.call(|reply| ToCore::Devices { reply }).await
    }

    /// Revokes a device of this user (card or device id); returns once the
    /// removals are durable.
    pub async fn revoke(&self, device: String) -> Result<Revoked> {
        self.call(|reply| ToCore::Revoke { device, reply }).await
    }

    pub async fn members(&self, space: SpaceId) -> Result<Members> {
        self.call(|reply| ToCore::Members { space, reply }).await
    }

    /// The next part of what `peer` lacks, after it acknowledged a partial push.
    pub async fn catch_up(&self, peer: DeviceId) -> Result<OfferOutcome> {
        self.call(|reply| ToCore::CatchUp { peer, reply }).await
    }

    /// Records what `peer` says it holds (its answer to our offer, or an ack).
    pub async fn note_peer_holds(&self, peer: DeviceId, spaces: Vec<SpaceVv>) {
        let _ = self.tx.send(ToCore::PeerHolds { peer, spaces }).await;
    }
}

/// Starts the core on its own thread. It stops when every handle is dropped.
pub fn spawn(
    home: PathBuf,
    keys: Arc<DeviceKeys>,
) -> std::result::Result<(CoreHandle, std::thread::JoinHandle<()>), store::Error> {
    spawn_with(home, keys, Options::default())
}

/// How a core is tuned (defaults serve every real node; tests and
/// benchmarks change them).
#[derive(Debug, Clone)]
pub struct Options {
    /// Messages a room's shard holds before this node writes into the next
    /// ([`chat::SHARD_MESSAGES`]). Receivers accept any shard, so nodes with
    /// different settings still agree.
    pub shard_messages: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            shard_messages: chat::SHARD_MESSAGES,
        }
    }
}

/// [`spawn`] with `options`.
pub fn spawn_with(
    home: PathBuf,
    keys: Arc<DeviceKeys>,
    options: Options,
) -> std::result::Result<(CoreHandle, std::thread::JoinHandle<()>), store::Error> {
    let store = Store::open(&home)?;
    let blobs = Arc::new(crate::blobs::Blobs::open(home.join("blobs")).map_err(store::Error::Files)?);
    let (events, _) = broadcast::channel(EVENT_CAP);
    let mut core = Core::new(keys, store, events.clone());
    core.shard_messages = options.shard_messages.max(1);
    core.blobs = Some(blobs.clone());
    core.user_keys = devices::load_user_keys(&home).filter(|u| u.user_id() == core.keys.user_id());
    core.home = Some(home);
    core.load()?;
    let (tx, rx) = mpsc::channel(COMMAND_CAP);
    // What a policy asks of spaces may not have happened before a stop (a
    // crash, or this device became an owner while it could not act).
    let _ = tx.try_send(ToCore::EnforcePolicy);
    let handle = CoreHandle {
        tx,
        events,
        device: core.me,
        blobs,
    };
    let thread = std::thread::Builder::new()
        .name("outpost-core".into())
        .spawn(move || core.run(rx))
        .expect("spawning a thread succeeds unless the OS is out of resources");
    Ok((handle, thread))
}

struct Core {
    /// Messages a room's shard holds before this node writes into the next.
    shard_messages: usize,
    keys: Arc<DeviceKeys>,
    me: DeviceId,
    store: Store,
    spaces: BTreeMap<SpaceId, Space>,
    certs: HashMap<DeviceId, DeviceCert>,
    /// This run's incarnation per document written to (see `outpost_crdt::writer`).
    incarnations: HashMap<DocId, u64>,
    /// Envelopes of spaces not known yet, waiting for their genesis (memory only).
    orphans: Pending,
    /// Spaces where a writer was frozen in the current batch: purged after it commits.
    purges: BTreeSet<SpaceId>,
    /// Spaces this device was added to in the current batch: rebuilt with the key
    /// after it commits.
    rebuilds: BTreeSet<SpaceId>,
    /// Spaces where this device gained a key in the current batch: the files
    /// of bodies it stored unreadable are recorded after it commits.
    refiles: BTreeSet<SpaceId>,
    /// The attachment store (none for a core without a home, in tests).
    blobs: Option<Arc<crate::blobs::Blobs>>,
    /// Files of messages retracted in the current batch: deleted after it commits.
    dropped_files: BTreeSet<crate::blobs::BlobId>,
    events: broadcast::Sender<Event>,
    /// The node's home (where the user link is saved); `None` in some tests.
    home: Option<PathBuf>,
    /// The org this node follows, if any.
    org: Option<org::OrgState>,
    /// The org's policy or drafts changed in this batch: peers are told after
    /// the commit (`Event::Policy`).
    policy_changed: bool,
    /// The user key, on the device that created the user (it links new devices).
    user_keys: Option<UserKeys>,
    /// This user's devices as recorded here.
    devices: BTreeMap<DeviceId, DeviceRecord>,
    /// The reminder scan mark as last stored (see `reminders`).
    reminder_mark: Option<i64>,
    /// When this run started (local clock, ms).
    started_ms: i64,
    /// A peer's calendar change was applied: the next reminder scan looks
    /// back `reminders::RESCAN_MS` (what arrived may have come due already).
    reminder_rescan: bool,
    /// Muted rooms, quiet hours and the notifications they hold back.
    dnd: quiet::Dnd,
    /// Link tickets made here and not yet used or expired (memory only).
    links: HashMap<[u8; 16], PendingLink>,
}

/// Runs once a batch's transaction has committed (`None`) or failed.
type OnCommit = Box<dyn FnOnce(Option<&Arc<store::Error>>) + Send>;

/// A send waiting for its group: text, client request id, reply.
/// Where this device writes in a space (see `Core::write_target`).
#[derive(Clone)]
struct WriteTarget {
    /// This device as the document rules judge its change.
    author: outpost_crdt::Author,
    actor: outpost_crdt::ActorId,
    doc: DocId,
    epoch: Epoch,
    incarnation: u64,
    key: crate::crypto::EpochKey,
}

pub use self::chat::SHARD_MESSAGES;
use self::chat::{PendingSend, SideOutcome};

/// What a batch does once its transaction has committed (or failed).
#[derive(Default)]
struct Effects {
    on_commit: Vec<OnCommit>,
    events: Vec<Event>,
    /// Mentions applied in this batch, recorded in the inbox before it commits.
    mentions: Vec<inbox::NewMention>,
    /// Chat messages that became visible in this batch: announced (and their
    /// mentions recorded) before it commits, once their bodies are stored.
    chat: Vec<(SpaceId, outpost_crdt::chat::Message)>,
    /// Chat rooms whose messages were edited, reacted to or retracted (in
    /// which documents), or whose receipts changed.
    chat_updated: BTreeMap<SpaceId, BTreeSet<DocId>>,
    /// Per room, the refs of messages a peer's change edited, copied or
    /// retracted: checked for bodies a retraction missed (`chat::sweep`).
    rebodied: BTreeMap<SpaceId, BTreeSet<String>>,
}

impl Effects {
    fn reply<T: Send + 'static>(&mut self, reply: Reply<T>, value: T) {
        self.on_commit.push(Box::new(move |err| {
            let _ = reply.send(match err {
                None => Ok(value),
                Some(e) => Err(Error::Store(e.clone())),
            });
        }));
    }

    /// Replies with `outcome` once the batch commits; a caller's mistake (the
    /// error) is answered at once, since nothing of it was written.
    fn reply_result<T: Send + 'static>(&mut self, reply: Reply<T>, outcome: Result<T>) {
        match outcome {
            Ok(value) => self.reply(reply, value),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }
}

impl Core {
    fn new(keys: Arc<DeviceKeys>, store: Store, events: broadcast::Sender<Event>) -> Self {
        Self {
            shard_messages: chat::SHARD_MESSAGES,
            me: keys.device_id(),
            keys,
            store,
            spaces: BTreeMap::new(),
            certs: HashMap::new(),
            incarnations: HashMap::new(),
            orphans: Pending::new(ORPHAN_CAP, ORPHAN_BYTES_CAP),
            purges: BTreeSet::new(),
            rebuilds: BTreeSet::new(),
            refiles: BTreeSet::new(),
            blobs: None,
            dropped_files: BTreeSet::new(),
            events,
            home: None,
            org: None,
            policy_changed: false,
            user_keys: None,
            devices: BTreeMap::new(),
            reminder_mark: None,
            started_ms: crate::clock::now_ms() as i64,
            reminder_rescan: false,
            dnd: quiet::Dnd::default(),
            links: HashMap::new(),
        }
    }

    fn run(mut self, mut rx: mpsc::Receiver<ToCore>) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < BATCH_CAP {
                match rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            // The reminders' clock ticks every second; a tick with nothing
            // to fire costs no transaction.
            let ticks = batch.len();
            batch.retain(|c| !matches!(c, ToCore::Remind));
            let now = crate::clock::now_ms() as i64;
            if batch.len() < ticks && (self.remind_needed(now) || self.dnd.release_due(now)) {
                batch.push(ToCore::Remind);
            }
            if batch.is_empty() {
                continue;
            }
            self.handle_batch(batch);
        }
        debug!("core stopped");
    }

    fn handle_batch(&mut self, batch: Vec<ToCore>) {
        let mut effects = Effects::default();
        let mut reads = Vec::new();
        let mut sends: BTreeMap<SpaceId, Vec<PendingSend>> = BTreeMap::new();
        let mut tx = match self.store.begin() {
            Ok(tx) => Some(tx),
            Err(e) => {
                warn!(error = %e, "cannot begin a store transaction");
                None
            }
        };
        let mut failure: Option<Arc<store::Error>> = None;
        for cmd in batch {
            // After a failure the transaction is lost: later writes in the batch are
            // refused with a storage error (never silently dropped); reads still run.
            let (None, Some(txn)) = (&failure, tx.as_mut()) else {
                reads.push(cmd);
                continue;
            };
            let result = match cmd {
                ToCore::CreateChat { chat, reply } => match self.create_chat(txn, &chat, &mut effects) {
                    Ok(Ok(space)) => {
                        effects.reply(reply, space);
                        Ok(())
                    }
                    Ok(Err(e)) => {
                        let _ = reply.send(Err(e));
                        Ok(())
                    }
                    Err(e) => Err(e),
                },
                ToCore::DocWrite { space, edit, reply } => self
                    .write_doc(txn, space, edit, &mut effects)
                    .map(|outcome| effects.reply_result(reply, outcome)),
                ToCore::CalWrite { space, edit, reply } => self
                    .write_calendar(txn, space, edit, &mut effects)
                    .map(|outcome| effects.reply_result(reply, outcome)),
                ToCore::Remind => {
                    let now = crate::clock::now_ms() as i64;
                    self.remind(txn, now, &mut effects)
                        .and_then(|()| self.release_notifications(txn, now, &mut effects))
                }
                ToCore::TakeClaims { from, claims } => self.take_claims(txn, from, claims),
                ToCore::ClaimsFor { peer, reply } => self
                    .recent_claims(txn, peer, crate::clock::now_ms() as i64)
                    .map(|claims| effects.reply(reply, claims)),
                ToCore::Send { space, outgoing, reply } => {
                    sends.entry(space).or_default().push((outgoing, reply));
                    Ok(())
                }
                ToCore::ChatWrite { space, op, reply } => self
                    .chat_write(txn, space, op, &mut effects)
                    .map(|r| effects.reply_result(reply, r)),
                ToCore::MarkRead { space, reply } => self
                    .mark_read(txn, space, &mut effects)
                    .map(|r| effects.reply_result(reply, r)),
                ToCore::FileGet { name, reply } => self
                    .file_get(txn, &name, &mut effects)
                    .map(|r| effects.reply_result(reply, r)),
                ToCore::FileFetched { id } => self.file_fetched(txn, id),
                ToCore::Direct { who, reply } => self
                    .direct_room(txn, &who, &mut effects)
                    .map(|r| effects.reply_result(reply, r)),
                ToCore::Quiet { change, reply } => self.set_quiet(txn, change).map(|r| effects.reply_result(reply, r)),
                ToCore::Ingest { from, envelopes, reply } => self
                    .ingest(txn, Some(from), envelopes, &mut effects)
                    .map(|ack| effects.reply(reply, ack)),
                ToCore::LearnCert { cert } => self.learn_cert(txn, cert, &mut effects),
                ToCore::Invite {
                    space,
                    member,
                    grant,
                    reply,
                } => self
                    .invite(txn, space, &member, grant, &mut effects)
                    .map(|outcome| effects.reply_result(reply, outcome)),
                ToCore::Change { space, change, reply } => self
                    .change_members(txn, space, change, &mut effects)
                    .map(|outcome| effects.reply_result(reply, outcome)),
                ToCore::ConfirmLink { id, reply } => self
                    .confirm_link(txn, id, &mut effects)
                    .map(|outcome| effects.reply_result(reply, outcome)),
                ToCore::Joined { user, response, reply } => self
                    .joined(txn, user, *response)
                    .map(|outcome| effects.reply_result(reply, outcome)),
                ToCore::SetPosting { space, posting, reply } => self
                    .set_posting(txn, space, posting, &mut effects)
                    .map(|outcome| effects.reply_result(reply, outcome)),
                ToCore::Revoke { device, reply } => self
                    .revoke(txn, &device, &mut effects)
                    .map(|outcome| effects.reply_result(reply, outcome)),
                ToCore::Org { cmd, reply } => self
                    .org_command(txn, cmd, &mut effects)
                    .map(|outcome| effects.reply_result(reply, outcome)),
                ToCore::TakePolicy { from, frame, reply } => self
                    .take_policy(txn, from, *frame, &mut effects)
                    .map(|outcome| effects.reply(reply, outcome)),
                ToCore::OrgInvite {
                    member,
                    addrs,
                    anchors,
                    reply,
                } => self
                    .org_invite(txn, &member, addrs, anchors)
                    .map(|outcome| effects.reply_result(reply, outcome)),
                ToCore::HoldEnroll { from, request, reply } => self
                    .hold_enroll(txn, from, *request)
                    .map(|outcome| effects.reply(reply, outcome)),
                ToCore::ReleaseHeld { device, proof } => self.release_held(txn, device, proof),
                ToCore::TakeEnroll { from, request, reply } => self
                    .take_enroll(txn, from, *request, &mut effects)
                    .map(|outcome| effects.reply(reply, outcome)),
                ToCore::EnforcePolicy => {
                    let spaces: BTreeSet<SpaceId> = self.spaces.keys().copied().collect();
                    self.enforce_policy(txn, &spaces, &mut effects)
                }
                other => {
                    reads.push(other);
                    Ok(())
                }
            };
            if let Err(e) = result {
                failure = Some(Arc::new(e));
            }
        }
        if failure.is_none() {
            if let Some(txn) = tx.as_mut() {
                for (space, group) in sends {
                    if let Err(e) = self.send_group(txn, space, group, &mut effects) {
                        failure = Some(Arc::new(e));
                        break;
                    }
                }
                if failure.is_none()
                    && let Err(e) = self
                        .announce_chat(txn, &mut effects)
                        .and_then(|()| self.record_mentions(txn, &mut effects))
                        .and_then(|()| self.settle_shards(txn))
                {
                    failure = Some(Arc::new(e));
                }
            }
        } else {
            for (_, group) in sends {
                for (_, reply) in group {
                    let _ = reply.send(Err(Error::Store(failure.clone().expect("failure is set"))));
                }
            }
        }
        let outcome = match (failure, tx) {
            (Some(e), _) => Some(e),
            (None, Some(tx)) => tx.commit().err().map(Arc::new),
            (None, None) => None,
        };
        match &outcome {
            None => {
                for space in self.spaces.values_mut() {
                    space.committed();
                }
                for event in effects.events.drain(..) {
                    let _ = self.events.send(event);
                }
                if std::mem::take(&mut self.policy_changed) {
                    let _ = self.events.send(Event::Policy);
                }
                self.delete_dropped_files();
                for space in std::mem::take(&mut self.purges) {
                    if let Err(e) = self.purge(space) {
                        warn!(space = %space.fmt_short(), error = %e, "purging a frozen writer failed; it is retried at the next start");
                    }
                }
                for space in std::mem::take(&mut self.refiles) {
                    if let Err(e) = self.record_files(space) {
                        warn!(space = %space.fmt_short(), error = %e, "recording the files of bodies readable now failed");
                    }
                }
                for space in std::mem::take(&mut self.rebuilds) {
                    match self.rebuild(space) {
                        Ok(()) => {
                            info!(space = %space.fmt_short(), "added to a space: it is readable now");
                            let _ = self.events.send(Event::Reload { space, messages: 0 });
                        }
                        Err(e) => {
                            warn!(space = %space.fmt_short(), error = %e, "rebuilding a space failed; it is rebuilt at the next start")
                        }
                    }
                }
            }
            Some(e) => {
                warn!(error = %e, "group commit failed; nothing in it was acknowledged");
                self.policy_changed = false;
                self.purges.clear();
                self.rebuilds.clear();
                self.refiles.clear();
                self.dropped_files.clear();
                if let Err(e) = self.load() {
                    warn!(error = %e, "reloading after a failed commit failed too");
                }
            }
        }
        for done in effects.on_commit {
            done(outcome.as_ref());
        }
        for cmd in reads {
            self.handle_read(cmd);
        }
    }

    fn handle_read(&mut self, cmd: ToCore) {
        match cmd {
            ToCore::Messages { space, limit, reply } => {
                let _ = reply.send(self.chat_log(space, limit));
            }
            ToCore::ShardMessages { space, docs, reply } => {
                let _ = reply.send(self.shard_log(space, &docs));
            }
            ToCore::Retracted { space, reply } => {
                let _ = reply.send(self.retracted_ids(space));
            }
            ToCore::Room { space, reply } => {
                let shown = self.shown_docs(space);
                let view = match self.bring_docs(space, &shown) {
                    Ok(()) => self.room_view(space),
                    Err(e) => Err(Error::Store(Arc::new(e))),
                };
                self.release_shards(space);
                let _ = reply.send(view);
            }
            ToCore::WhoIs { name, reply } => {
                let members: Vec<(DeviceId, UserId)> = self.spaces.values().flat_map(docs::member_users).collect();
                let user = docs::mentioned(&members, &self.mention_aliases(), &name).and_then(|u| u.parse().ok());
                let _ = reply.send(Ok(user));
            }
            ToCore::FileShow { name, reply } => {
                let _ = reply.send(self.file_status_of(&name));
            }
            ToCore::FileToRead { name, reply } => {
                let _ = reply.send(self.file_to_read(&name));
            }
            ToCore::FileWants { reply } => {
                let _ = reply.send(self.file_wants().map_err(|e| Error::Store(Arc::new(e))));
            }
            ToCore::MayFetch { device, id, reply } => {
                let _ = reply.send(self.may_fetch(&device, &id));
            }
            ToCore::WantedFor { peer, reply } => {
                let _ = reply.send(Ok(self.wanted_for(peer)));
            }
            ToCore::SidesFor {
                peer,
                space,
                ids,
                reply,
            } => {
                let _ = reply.send(Ok(self.sides_for(peer, space, &ids)));
            }
            ToCore::AskAgain { space } => self.ask_again(space),
            ToCore::Spaces { reply } => {
                let _ = reply.send(Ok(self.summaries()));
            }
            ToCore::Status { reply } => {
                let _ = reply.send(Ok(self.status()));
            }
            ToCore::MakeOffer { peer, reply } => {
                let _ = reply.send(Ok(self.offer_for(&peer)));
            }
            ToCore::TakeOffer { peer, spaces, reply } => {
                let _ = reply.send(self.take_offer(peer, spaces));
            }
            ToCore::CatchUp { peer, reply } => {
                let _ = reply.send(self.catch_up(peer));
            }
            ToCore::Members { space, reply } => {
                let _ = reply.send(self.members(space));
            }
            ToCore::DocRead { space, query, reply } => {
                let _ = reply.send(self.read_doc(space, query));
            }
            ToCore::CalRead { query, reply } => {
                // Expanding a peer's rules is not trusted to be panic-free.
                let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.read_calendar(query)))
                    .unwrap_or_else(|_| {
                        Err(Error::Invalid(
                            "a calendar holds a value this node cannot expand".into(),
                        ))
                    });
                let _ = reply.send(answer);
            }
            ToCore::Inbox { limit, reply } => {
                let _ = reply.send(self.inbox(limit));
            }
            ToCore::DocWrite { reply, .. } => fail_unavailable(reply),
            ToCore::CalWrite { reply, .. } => fail_unavailable(reply),
            ToCore::ClaimsFor { reply, .. } => fail_unavailable(reply),
            ToCore::Remind | ToCore::TakeClaims { .. } => {}
            ToCore::Invite { reply, .. } => fail_unavailable(reply),
            ToCore::Change { reply, .. } => fail_unavailable(reply),
            ToCore::ConfirmLink { reply, .. } => fail_unavailable(reply),
            ToCore::Joined { reply, .. } => fail_unavailable(reply),
            ToCore::Revoke { reply, .. } => fail_unavailable(reply),
            ToCore::Org { reply, .. } => fail_unavailable(reply),
            ToCore::TakePolicy { reply, .. } => fail_unavailable(reply),
            ToCore::OrgInvite { reply, .. } => fail_unavailable(reply),
            ToCore::TakeEnroll { reply, .. } => fail_unavailable(reply),
            ToCore::HoldEnroll { reply, .. } => fail_unavailable(reply),
            ToCore::ReleaseHeld { .. } => {}
            ToCore::HeldFor { admin, reply } => {
                let _ = reply.send(Ok(self.held_for(&admin)));
            }
            ToCore::EnforcePolicy => {}
            ToCore::OrgShow { reply } => {
                let _ = reply.send(self.org_view());
            }
            ToCore::OrgNet { reply } => {
                let _ = reply.send(Ok(self.org_net()));
            }
            ToCore::Directory { query, reply } => {
                let _ = reply.send(match query {
                    DirQuery::Search(q) => self.dir_search(&q),
                    DirQuery::Department(path) => self.dir_dept(&path),
                });
            }
            ToCore::PolicyFrame { reply } => {
                let _ = reply.send(self.policy_hello().map_err(|e| Error::Store(Arc::new(e))));
            }
            ToCore::LinkTicket { addrs, reply } => {
                let _ = reply.send(self.link_ticket(addrs));
            }
            ToCore::LinkState { id, reply } => {
                let _ = reply.send(Ok(self.link_state(id)));
            }
            ToCore::JoinRequest { from, request, reply } => self.join_request(from, *request, reply),
            ToCore::Devices { reply } => {
                let _ = reply.send(Ok(self.device_list()));
            }
            ToCore::PeerHolds { peer, spaces } => self.note_peer_holds(peer, spaces),
            // Writes reach here only when no transaction could be opened.
            ToCore::CreateChat { reply, .. } => fail_unavailable(reply),
            ToCore::SetPosting { reply, .. } => fail_unavailable(reply),
            ToCore::Send { reply, .. } => fail_unavailable(reply),
            ToCore::ChatWrite { reply, .. } => fail_unavailable(reply),
            ToCore::MarkRead { reply, .. } => fail_unavailable(reply),
            ToCore::FileGet { reply, .. } => fail_unavailable(reply),
            ToCore::FileFetched { .. } => {}
            ToCore::Direct { reply, .. } => fail_unavailable(reply),
            ToCore::Quiet { reply, .. } => fail_unavailable(reply),
            ToCore::QuietShow { reply } => {
                let _ = reply.send(Ok(self.quiet_view()));
            }
            ToCore::Ingest { reply, .. } => fail_unavailable(reply),
            ToCore::LearnCert { .. } => {}
        }
    }

    fn learn_cert(&mut self, tx: &mut Txn, cert: DeviceCert, effects: &mut Effects) -> store::Result<()> {
        if !cert.verify() || self.certs.get(&cert.device) == Some(&cert) {
            return Ok(());
        }
        tx.put_cert(&cert.device, &postcard::to_stdvec(&cert).expect("certs serialize"))?;
        self.certs.insert(cert.device, cert);
        // A department's device met for the first time joins its rooms.
        let rooms: BTreeSet<SpaceId> = self
            .spaces
            .values()
            .filter(|s| s.department.is_some())
            .map(|s| s.state.space)
            .collect();
        self.enforce_departments(tx, &rooms, effects)
    }

    fn resolve_cert(&self, text: &str) -> Result<DeviceCert> {
        if let Ok(cert) = DeviceCert::from_card(text) {
            return Ok(cert);
        }
        let device: DeviceId = text.parse().map_err(|_| Error::UnknownDevice(text.to_string()))?;
        if device == self.me {
            return Ok(self.keys.cert());
        }
        if let Some(cert) = self.certs.get(&device) {
            return Ok(*cert);
        }
        // A user id: one of the user's devices this node has met (the others
        // follow once it is in, see `devices`). Ids of users and devices look
        // alike, and a device id is tried first.
        // A device removed from some space (revoked or lost) comes last.
        let user = UserId(device.0);
        // Certificates met in offers, and those of the members of every space
        // this node keeps (named in their signed control logs).
        let members = self
            .spaces
            .values()
            .flat_map(|s| s.state.members.values().map(|m| &m.cert));
        self.certs
            .values()
            .chain(members)
            .filter(|c| c.user == user || c.device == device)
            .min_by_key(|c| (self.removed_anywhere(&c.device), c.device))
            .copied()
            .ok_or_else(|| Error::UnknownDevice(text.to_string()))
    }

    fn resolve_device(&self, text: &str) -> Result<DeviceId> {
        match DeviceCert::from_card(text) {
            Ok(cert) => Ok(cert.device),
            Err(_) => text.parse().map_err(|_| Error::UnknownDevice(text.to_string())),
        }
    }

    /// Creates a chat space. The outer error aborts the batch; the inner one is the
    /// caller's mistake.
    fn create_chat(&mut self, tx: &mut Txn, chat: &NewSpace, effects: &mut Effects) -> store::Result<Result<SpaceId>> {
        let name = chat.name.as_str();
        let mut certs = match chat
            .members
            .iter()
            .map(|m| self.resolve_cert(m))
            .collect::<Result<Vec<_>>>()
        {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        let department = match chat.department.as_deref().map(|path| self.department_room(path)) {
            None => None,
            Some(Ok((path, members))) => {
                for cert in members {
                    if !certs.contains(&cert) {
                        certs.push(cert);
                    }
                }
                Some(path)
            }
            Some(Err(e)) => return Ok(Err(e)),
        };
        let mut replicators = match chat
            .replicators
            .iter()
            .map(|r| self.resolve_device(r))
            .collect::<Result<Vec<_>>>()
        {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        // The org's anchors replicate every space from its genesis.
        for anchor in self.org_anchors() {
            if !replicators.contains(&anchor) && !certs.iter().any(|c| c.device == anchor) {
                replicators.push(anchor);
            }
        }
        if name.trim().is_empty() {
            return Ok(Err(Error::Invalid("a space needs a non-empty name".into())));
        }
        if chat.kind.needs_shared_history() && chat.history == History::FromJoin {
            // A document's (or calendar's) current state is built from its
            // whole history: a newcomer could not read it without reading what
            // came before.
            return Ok(Err(Error::Invalid(
                "documents and calendars share their whole history with their members; `from-join` is for chat rooms"
                    .into(),
            )));
        }
        if let Err(e) = self
            .org_may_create_space()
            .and_then(|()| certs.iter().try_for_each(|c| self.org_may_add(c)))
        {
            return Ok(Err(e));
        }
        let control_doc_incarnation = rand::random();
        let (genesis, key) = match control::create_space_with(
            &self.keys,
            control_doc_incarnation,
            name,
            chat.kind,
            &control::SpaceOptions {
                history: chat.history,
                posting: chat.posting,
                department,
            },
            &certs,
            &replicators,
        ) {
            Ok(x) => x,
            Err(e) => return Ok(Err(Error::Invalid(e.to_string()))),
        };
        let state = SpaceState::from_genesis(&genesis).expect("create_space validated its own genesis");
        let space_id = state.space;
        let mut keys = Keyring::default();
        keys.insert(key);
        let mut space = Space::new(state, keys);
        let order = space.record(&genesis, None);
        tx.put_space(&space_id, Participation::Named)?;
        tx.put_envelope(&new_envelope(&genesis), order)?;
        effects
            .events
            .push(stored_event(&space, vec![genesis.into_bytes()], None));
        self.spaces.insert(space_id, space);
        info!(space = %space_id.fmt_short(), kind = ?chat.kind, "space created");
        // Members are users: this user's other devices join too.
        self.add_my_devices(tx, space_id, effects)?;
        Ok(Ok(space_id))
    }

    /// Where this device writes in a space of `kind` now, after checking it
    /// may: the current epoch (cleaned of non-members first), its document,
    /// this run's actor for it and the key. The outer error aborts the batch;
    /// the inner one tells the caller why it cannot write.
    fn write_target(
        &mut self,
        tx: &mut Txn,
        space_id: SpaceId,
        kind: SpaceKind,
        effects: &mut Effects,
    ) -> store::Result<Result<WriteTarget>> {
        let me = self.me;
        let Some(space) = self.spaces.get(&space_id) else {
            return Ok(Err(Error::UnknownSpace(space_id)));
        };
        if let Err(e) = expect_kind(space, kind) {
            return Ok(Err(e));
        }
        if space.state.author_at(&space.state.heads(), &me).is_none() {
            return Ok(Err(if space.state.is_writer(&me) {
                Error::NotAllowed("this is an announcement room: only its owners and admins post".into())
            } else {
                Error::NotWritable(space_id)
            }));
        }
        let (epoch, key) = match self.sealing_key(tx, space_id, effects)? {
            Ok(k) => k,
            Err(e) => return Ok(Err(e)),
        };
        let space = self.spaces.get(&space_id).expect("found above");
        let doc = space.state.content_doc(&epoch.id);
        let incarnation = *self.incarnations.entry(doc).or_insert_with(rand::random);
        let author = space
            .state
            .author_at(&space.state.heads(), &me)
            .expect("checked above; cleaning the epoch removes no member");
        Ok(Ok(WriteTarget {
            author,
            actor: outpost_crdt::writer::actor_id(&me.0, &doc, incarnation),
            doc,
            epoch,
            incarnation,
            key,
        }))
    }

    /// The current epoch and its key, to seal under now: the epoch cleaned of
    /// non-members first (nobody seals under an epoch a non-member can derive).
    fn sealing_key(
        &mut self,
        tx: &mut Txn,
        space_id: SpaceId,
        effects: &mut Effects,
    ) -> store::Result<Result<(Epoch, EpochKey)>> {
        if let Err(e) = self.make_epoch_clean(tx, space_id, false, effects)? {
            return Ok(Err(Error::KeyMissing {
                space: space_id,
                why: e.to_string(),
            }));
        }
        let Some(space) = self.spaces.get(&space_id) else {
            return Ok(Err(Error::UnknownSpace(space_id)));
        };
        let epoch = space.state.current().epoch.clone();
        let (Some(_), Some(key)) = (space.readable.as_ref(), space.keys.key_for(&epoch)) else {
            let why = space
                .key_problem
                .clone()
                .unwrap_or_else(|| "this device holds no key for the current epoch".into());
            return Ok(Err(Error::KeyMissing { space: space_id, why }));
        };
        Ok(Ok((epoch, key)))
    }

    /// Seals a change this device made into `target`'s document as a content
    /// envelope, records and stores it, and announces it to peers.
    fn seal_local(
        &mut self,
        tx: &mut Txn,
        space_id: SpaceId,
        target: &WriteTarget,
        change: &outpost_crdt::Change,
        effects: &mut Effects,
    ) -> store::Result<Result<EnvelopeId>> {
        let space = self.spaces.get_mut(&space_id).expect("the caller found the space");
        let readable = space.readable.as_ref().expect("the caller checked the key");
        let genesis_hash = readable.docs[&target.doc].doc.genesis_hash();
        // Every dependency is a head of the document, and every head is a stored
        // envelope or a snapshot's last (a writer's earlier changes have its later
        // ones as dependants), so each has a known envelope.
        let parents: Vec<EnvelopeId> = change
            .deps()
            .iter()
            .filter(|d| **d != genesis_hash)
            .filter_map(|d| readable.env_of_change.get(d).copied())
            .collect();
        if parents.len() + usize::from(change.deps().contains(&genesis_hash)) != change.deps().len() {
            warn!(space = %space_id.fmt_short(), "a dependency of a new change has no known envelope; the write is refused and the document reloads");
            return Err(store::Error::Unavailable);
        }
        let header = Header {
            kind: Kind::Content,
            space: space_id,
            doc: target.doc,
            epoch: target.epoch.id,
            author: self.me,
            incarnation: target.incarnation,
            seq: change.seq(),
            parents,
            control_heads: space.state.heads(),
        };
        let env = Envelope::seal_content(&self.keys, header, &target.key, change.raw_bytes());
        let id = env.id();
        let order = space.record(&env, Some(change));
        tx.put_envelope(&new_envelope(&env), order)?;
        effects.events.push(stored_event(space, vec![env.into_bytes()], None));
        Ok(Ok(id))
    }

    fn summaries(&self) -> Vec<SpaceSummary> {
        self.spaces
            .values()
            .map(|s| SpaceSummary {
                space: s.state.space,
                name: s.name.clone(),
                kind: match s.state.kind {
                    SpaceKind::Chat => "chat".into(),
                    SpaceKind::Doc => "doc".into(),
                    SpaceKind::Calendar => "calendar".into(),
                },
                history: s.state.history,
                posting: s.state.current().posting,
                department: s.department.clone(),
                readable: s.readable.is_some(),
                members: s.state.members.keys().copied().collect(),
                replicators: s.state.replicators.iter().copied().collect(),
                unread: (s.state.kind == SpaceKind::Chat && s.readable.is_some()).then(|| self.unread(s)),
                direct: s.name.as_deref().and_then(|n| chat::dm_peer(n, self.keys.user_id())),
                muted: self.dnd.muted.contains(&s.state.space),
            })
            .collect()
    }

    fn status(&self) -> Vec<SpaceStatus> {
        self.spaces.values().map(|s| self.space_status(s)).collect()
    }

    fn space_status(&self, s: &Space) -> SpaceStatus {
        let peers: Vec<PeerSyncStatus> = s
            .peers
            .iter()
            .map(|(device, view)| PeerSyncStatus {
                device: *device,
                they_lack: s.vv.count_missing_in(&view.vv),
                we_lack: view.vv.count_missing_in(&s.vv),
                last_sync_ms: view.last_sync_ms,
            })
            .collect();
        let sync = if !s.pending.is_empty() || s.key_problem.is_some() {
            SyncState::Stuck
        } else if peers.iter().any(|p| p.they_lack > 0 || p.we_lack > 0) {
            SyncState::Syncing
        } else {
            SyncState::Synced
        };
        SpaceStatus {
            space: s.state.space,
            name: s.name.clone(),
            kind: "chat".into(),
            role: if s.state.members.contains_key(&self.me) {
                "member".into()
            } else if s.state.replicators.contains(&self.me) {
                "replicator".into()
            } else {
                "removed".into()
            },
            history: s.state.history,
            posting: s.state.current().posting,
            epoch: s.state.epoch,
            before_join: s.before_join(),
            ignored_ops: s.state.current().void.len(),
            invalid_ops: s.invalid_control,
            sync,
            readable: s.readable.is_some(),
            key_problem: s.key_problem.clone(),
            envelopes: s.next_order,
            writers: s.vv.0.len(),
            pending: s.pending.len(),
            pending_bytes: s.pending.bytes(),
            rejected: s.rejected,
            snapshots: s.snapshots.len(),
            sides: s.sides_held,
            shards_loaded: s.readable.as_ref().map_or(0, |r| r.docs.len()),
            shards_set_aside: s.readable.as_ref().map_or(0, |r| r.parked.len()),
            equivocating: s.equivocators.iter().copied().collect(),
            peers,
        }
    }
}

/// Decodes and signature-checks envelopes from `from`; returns the good ones
/// and how many were malformed (each warned about, naming the peer).
fn decode_from(from: DeviceId, raw: Vec<Vec<u8>>) -> (Vec<Envelope>, u32) {
    let mut malformed = 0;
    let envelopes = Envelope::decode_all(raw)
        .into_iter()
        .filter_map(|decoded| {
            decoded
                .inspect_err(|error| {
                    warn!(peer = %from.fmt_short(), %error, "rejected a malformed envelope");
                    malformed += 1;
                })
                .ok()
        })
        .collect();
    (envelopes, malformed)
}

fn fail_unavailable<T>(reply: Reply<T>) {
    let _ = reply.send(Err(Error::Store(Arc::new(store::Error::Unavailable))));
}

/// The exact bytes of the envelope this node holds at (actor, seq) of `space`:
/// stored, or the last envelope of a held snapshot.
fn held_envelope(store: &Store, space: &Space, actor: &ActorKey, seq: u64) -> store::Result<Option<Vec<u8>>> {
    if let Some(bytes) = store.writer_range(&space.state.space, actor, seq, seq)?.pop() {
        return Ok(Some(bytes));
    }
    Ok(space.snapshot_last(actor, seq).map(|l| l.as_bytes().to_vec()))
}

fn new_envelope(env: &Envelope) -> NewEnvelope<'_> {
    let h = env.header();
    NewEnvelope {
        id: env.id(),
        space: h.space,
        actor: h.actor(),
        seq: h.seq,
        doc: (h.kind == Kind::Content).then_some(h.doc),
        bytes: env.as_bytes(),
    }
}

fn stored_event(space: &Space, envelopes: Vec<Vec<u8>>, from: Option<DeviceId>) -> Event {
    let entitled: BTreeSet<DeviceId> = space
        .state
        .members
        .keys()
        .chain(space.state.replicators.iter())
        .copied()
        .collect();
    Event::Stored {
        space: space.state.space,
        envelopes: Arc::new(envelopes),
        entitled: Arc::new(entitled),
        from,
    }
}

/// Fails with a pointer to the right command when `space` is not of `kind`.
fn expect_kind(space: &Space, kind: SpaceKind) -> Result<()> {
    match (space.state.kind, kind) {
        (a, b) if a == b => Ok(()),
        (SpaceKind::Doc, _) => Err(Error::Invalid(
            "this space is a shared document, not a chat: use `outpost doc`".into(),
        )),
        (SpaceKind::Chat, _) => Err(Error::Invalid(
            "this space is a chat, not a document or calendar: use `outpost chat`".into(),
        )),
        (SpaceKind::Calendar, _) => Err(Error::Invalid("this space is a calendar: use `outpost cal`".into())),
    }
}

/// The events for what applying changes to a space's documents made visible;
/// mentions wait in `effects` for the inbox.
/// What changes `applied` to document `doc` of a space (sealed under `epoch`)
/// made, as events and work for the end of the batch.
fn effect_events(
    state: &SpaceState,
    (doc, epoch): (DocId, &Epoch),
    readable: &space::Readable,
    applied: Vec<Effect>,
    effects: &mut Effects,
) {
    let space = state.space;
    match readable.model {
        outpost_crdt::doc::Model::Text => effects.events.push(Event::Document { space }),
        outpost_crdt::doc::Model::Calendar => effects.events.push(Event::Calendar { space }),
        outpost_crdt::doc::Model::Chat => {}
    }
    for effect in applied {
        match effect {
            Effect::Message(m) => effects.chat.push((space, m)),
            Effect::ChatUpdated { targets, rebodied } => {
                if !rebodied.is_empty() {
                    effects.rebodied.entry(space).or_default().extend(rebodied);
                }
                let docs = effects.chat_updated.entry(space).or_default();
                docs.insert(doc);
                // Markers that count for other documents' messages change those.
                if chat::speaks_for_others(state, &doc, epoch) {
                    docs.extend(targets);
                }
            }
            Effect::Mention(mention) => effects.mentions.push(inbox::NewMention {
                space,
                by: readable.author_of(&mention.actor),
                mention,
            }),
        }
    }
}
