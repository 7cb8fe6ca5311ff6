//! The core actor: owns the store, the spaces and their documents, on its own
//! thread. Everything else talks to it through a [`CoreHandle`].
//!
//! Group commit: the thread takes every command that is waiting (up to
//! [`BATCH_CAP`]), runs all writes in one durable redb transaction, commits, and only
//! then replies and announces. Sends to one space in a batch become one Automerge
//! change (one envelope); arriving envelopes are applied with one `apply_changes`
//! call per document.

mod pending;
mod space;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    panic::AssertUnwindSafe,
    path::PathBuf,
    sync::Arc,
};

use outpost_crdt::chat::{Checked, Message, NewMessage};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, info, warn};

use self::{
    pending::{ORPHAN_BYTES_CAP, ORPHAN_CAP, Pending},
    space::{PeerView, SnapshotContent, SnapshotVerdict, Space, Verdict},
};
use crate::{
    control::{self, ControlOp, Role, SpaceKind, SpaceState},
    envelope::{Envelope, Header, Kind},
    identity::{DeviceCert, DeviceKeys},
    ids::{ActorKey, DeviceId, DocId, EnvelopeId, SpaceId},
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
/// Most messages announced one by one when a snapshot makes them visible at once;
/// beyond this, one [`Event::Reload`] tells followers to re-read.
const MAX_MESSAGE_EVENTS_PER_SNAPSHOT: usize = 256;
/// A peer lacking at least this share of a space's changes (in percent) gets a
/// snapshot instead of the envelopes: loading a document beats replaying most of it.
const SNAPSHOT_WHEN_LACKING_PERCENT: u64 = 50;
/// Most bytes pushed in answer to one offer (or one catch-up): bounds the memory a
/// peer lacking a large history makes this node use, and stays well within the
/// network's per-peer outbox.
pub const CATCH_UP_BYTES: usize = 8 << 20;
/// A member makes a fresh snapshot to serve when the newest one it holds leaves
/// more than this many changes (or an eighth of the space) to send as envelopes.
const SNAPSHOT_STALE_CHANGES: u64 = 256;

/// A user-facing failure of a core operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no space {0} on this node")]
    UnknownSpace(SpaceId),
    #[error("this device may not write in space {0}")]
    NotWritable(SpaceId),
    #[error("this device cannot read space {space}: {why}")]
    KeyMissing { space: SpaceId, why: String },
    #[error("unknown device {0}: pass its device card (`outpost id` on that device prints it) or connect to it first")]
    UnknownDevice(String),
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("not allowed: {0}")]
    NotAllowed(String),
    #[error("storage failure; the operation was not applied")]
    Store(#[source] Arc<store::Error>),
    #[error("the node is shutting down")]
    Stopped,
}

pub type Result<T> = std::result::Result<T, Error>;

/// A message as the API shows it; only replicated fields, identical on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageView {
    pub id: String,
    pub author: DeviceId,
    pub text: String,
    /// Author's claimed send time (ms since the Unix epoch); never used for order.
    pub sent_at_ms: i64,
    pub lamport: u64,
}

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
    /// The log changed in bulk (a snapshot was merged, or a frozen writer's
    /// messages were removed): followers re-read instead of receiving one event each.
    Reload { space: SpaceId, messages: u64 },
}

/// Per-space state for `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpaceStatus {
    pub space: SpaceId,
    pub name: Option<String>,
    pub kind: String,
    /// "member" or "replicator".
    pub role: String,
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
    pub readable: bool,
    pub members: Vec<DeviceId>,
    pub replicators: Vec<DeviceId>,
}

/// A member of a space, as `space members` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberView {
    pub device: DeviceId,
    pub role: Role,
    /// Who added it; `None` for members named by the genesis.
    pub added_by: Option<DeviceId>,
    /// This device.
    pub me: bool,
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
    CreateChat {
        name: String,
        members: Vec<String>,
        replicators: Vec<String>,
        reply: Reply<SpaceId>,
    },
    Send {
        space: SpaceId,
        text: String,
        client_id: Option<String>,
        reply: Reply<Sent>,
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
}

impl CoreHandle {
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
    pub async fn create_chat(&self, name: String, members: Vec<String>, replicators: Vec<String>) -> Result<SpaceId> {
        self.call(|reply| ToCore::CreateChat {
            name,
            members,
            replicators,
            reply,
        })
        .await
    }

    /// Posts a message; returns once it is durably stored.
    pub async fn send(&self, space: SpaceId, text: String, client_id: Option<String>) -> Result<Sent> {
        self.call(|reply| ToCore::Send {
            space,
            text,
            client_id,
            reply,
        })
        .await
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

    pub async fn messages(&self, space: SpaceId, limit: usize) -> Result<Vec<MessageView>> {
        self.call(|reply| ToCore::Messages { space, limit, reply }).await
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
    let store = Store::open(&home)?;
    let (events, _) = broadcast::channel(EVENT_CAP);
    let mut core = Core::new(keys, store, events.clone());
    core.load()?;
    let (tx, rx) = mpsc::channel(COMMAND_CAP);
    let handle = CoreHandle {
        tx,
        events,
        device: core.me,
    };
    let thread = std::thread::Builder::new()
        .name("outpost-core".into())
        .spawn(move || core.run(rx))
        .expect("spawning a thread succeeds unless the OS is out of resources");
    Ok((handle, thread))
}

struct Core {
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
    events: broadcast::Sender<Event>,
}

/// Whether the control operations `ops` (of any space, in any order) make `me` a
/// member or replicator of the space `genesis` creates: they are checked and
/// applied as their causal order allows, exactly as ingest would.
fn admits(genesis: &Envelope, ops: &[&Envelope], me: &DeviceId) -> bool {
    let Ok(mut state) = SpaceState::from_genesis(genesis) else {
        return false;
    };
    let mut left: Vec<&Envelope> = ops
        .iter()
        .copied()
        .filter(|e| e.header().space == state.space && e.header().kind == Kind::Control)
        .collect();
    loop {
        let before = left.len();
        left.retain(|env| {
            if !state.knows(&env.header().parents) {
                return true;
            }
            if state.check(env).is_ok() {
                state.apply(env);
            }
            false
        });
        if state.entitled(me) {
            return true;
        }
        if left.len() == before {
            return false;
        }
    }
}

/// What became of a snapshot from a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SnapshotOutcome {
    /// Held (and merged, for members).
    Held,
    /// Names control operations not held yet: it waits with the pending envelopes.
    Wait,
    /// Refused or a duplicate (counted in the ack).
    Done,
}

/// Runs once a batch's transaction has committed (`None`) or failed.
type OnCommit = Box<dyn FnOnce(Option<&Arc<store::Error>>) + Send>;

/// A send waiting for its group: text, client request id, reply.
type PendingSend = (String, Option<String>, Reply<Sent>);

/// What a batch does once its transaction has committed (or failed).
#[derive(Default)]
struct Effects {
    on_commit: Vec<OnCommit>,
    events: Vec<Event>,
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
}

impl Core {
    fn new(keys: Arc<DeviceKeys>, store: Store, events: broadcast::Sender<Event>) -> Self {
        Self {
            me: keys.device_id(),
            keys,
            store,
            spaces: BTreeMap::new(),
            certs: HashMap::new(),
            incarnations: HashMap::new(),
            orphans: Pending::new(ORPHAN_CAP, ORPHAN_BYTES_CAP),
            purges: BTreeSet::new(),
            rebuilds: BTreeSet::new(),
            events,
        }
    }

    /// Rebuilds every in-memory structure from the store.
    fn load(&mut self) -> store::Result<()> {
        self.spaces.clear();
        self.orphans.clear();
        for bytes in self.store.certs()? {
            if let Ok(cert) = postcard::from_bytes::<DeviceCert>(&bytes)
                && cert.verify()
            {
                self.certs.insert(cert.device, cert);
            }
        }
        let mut frozen: BTreeMap<SpaceId, Vec<store::Frozen>> = BTreeMap::new();
        for f in self.store.frozen()? {
            frozen.entry(f.space).or_default().push(f);
        }
        let mut pending: BTreeMap<SpaceId, Vec<Envelope>> = BTreeMap::new();
        for bytes in self.store.pending()? {
            if let Ok(env) = Envelope::decode_stored(bytes) {
                pending.entry(env.header().space).or_default().push(env);
            }
        }
        for (space_id, _) in self.store.spaces()? {
            let frozen = frozen.remove(&space_id).unwrap_or_default();
            let pending = pending.remove(&space_id).unwrap_or_default();
            if let Err(why) = self.load_space(space_id, frozen, pending) {
                warn!(space = %space_id.fmt_short(), %why, "space could not be loaded");
            }
        }
        // A crash between freezing a writer and purging its envelopes leaves them
        // stored: purge now.
        let unpurged: Vec<SpaceId> = self
            .spaces
            .values()
            .filter(|s| {
                s.frozen.iter().any(|(actor, (from, _))| s.vv.get(actor) >= *from)
                    || s.snapshots.iter().any(|snap| s.covers_frozen(snap))
            })
            .map(|s| s.state.space)
            .collect();
        for space_id in unpurged {
            self.purge(space_id)?;
        }
        info!(spaces = self.spaces.len(), "store loaded");
        Ok(())
    }

    /// Rebuilds one space from the store: its log, snapshots and invalid ids, plus
    /// its frozen writers and pending envelopes (read by the caller).
    fn load_space(
        &mut self,
        space_id: SpaceId,
        frozen: Vec<store::Frozen>,
        pending: Vec<Envelope>,
    ) -> std::result::Result<(), String> {
        let (mut space, mut changes) = self.replay_log(space_id, None)?;
        // A device added after the genesis learns its key from a later operation:
        // replay once more with it, so the content before that operation decrypts.
        if space.readable.is_none()
            && let Some(key) = self.unwrap_key(&space.state)
        {
            (space, changes) = self.replay_log(space_id, Some(key))?;
        }
        for f in frozen {
            if let Ok(env) = Envelope::decode_stored(f.twins[0].clone()) {
                space.equivocators.insert(env.header().author);
            }
            space.frozen.insert(f.actor, (f.seq, f.twins));
        }
        for id in self.store.invalid(&space_id).map_err(|e| e.to_string())? {
            space.mark_invalid(id);
        }
        for env in pending {
            space.pending.insert(env);
        }
        // Snapshots first: stored envelopes may build on changes only they hold.
        let snapshots = self.store.snapshots(&space_id).map_err(|e| e.to_string())?;
        for bytes in snapshots {
            if let Err(why) = hold_stored_snapshot(&mut space, bytes) {
                warn!(space = %space_id.fmt_short(), %why, "a stored snapshot could not be loaded; skipped");
            }
        }
        if let Some(r) = space.readable.as_mut() {
            changes.retain(|c| !r.chat.has_change(&c.hash()));
            r.chat
                .apply(changes)
                .map_err(|e| format!("stored changes do not apply: {e}"))?;
        }
        self.spaces.insert(space_id, space);
        Ok(())
    }

    /// Replays a space's log in arrival order: the genesis, control operations
    /// (applied to the membership) and content (recorded, and decrypted when the
    /// key is known). `key` overrides what the genesis grants this device.
    fn replay_log(
        &self,
        space_id: SpaceId,
        mut key: Option<std::result::Result<crate::crypto::EpochKey, String>>,
    ) -> std::result::Result<(Space, Vec<outpost_crdt::Change>), String> {
        const CHUNK: usize = 4096;
        let mut after = None;
        let mut space: Option<Space> = None;
        let mut changes = Vec::new();
        loop {
            let rows = self
                .store
                .space_log(&space_id, after, CHUNK)
                .map_err(|e| e.to_string())?;
            let done = rows.len() < CHUNK;
            for (order, bytes) in rows {
                after = Some(order);
                let env =
                    Envelope::decode_stored(bytes).map_err(|e| format!("stored envelope does not decode: {e}"))?;
                let s = match space.as_mut() {
                    Some(s) => s,
                    None => {
                        let state = SpaceState::from_genesis(&env).map_err(|e| e.to_string())?;
                        let key = key.take().or_else(|| self.unwrap_key(&state));
                        let mut s = Space::new(state, key);
                        s.record_at(&env, None, order);
                        space = Some(s);
                        continue;
                    }
                };
                if env.header().kind == Kind::Control {
                    s.state.apply(&env);
                }
                let change = s.readable.as_ref().and_then(|r| {
                    let plain = env.open_content(&r.key).ok()?;
                    outpost_crdt::Change::from_bytes(plain).ok()
                });
                s.record_at(&env, change.as_ref(), order);
                changes.extend(change);
            }
            if done {
                break;
            }
        }
        Ok((space.ok_or("the space has no genesis")?, changes))
    }

    fn unwrap_key(&self, state: &SpaceState) -> Option<std::result::Result<crate::crypto::EpochKey, String>> {
        state
            .unwrap_key(&self.keys)
            .map(|r| r.map_err(|e| format!("epoch key wrap does not open: {e}")))
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
                ToCore::CreateChat {
                    name,
                    members,
                    replicators,
                    reply,
                } => match self.create_chat(txn, &name, &members, &replicators, &mut effects) {
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
                ToCore::Send {
                    space,
                    text,
                    client_id,
                    reply,
                } => {
                    sends.entry(space).or_default().push((text, client_id, reply));
                    Ok(())
                }
                ToCore::Ingest { from, envelopes, reply } => self
                    .ingest(txn, Some(from), envelopes, &mut effects)
                    .map(|ack| effects.reply(reply, ack)),
                ToCore::LearnCert { cert } => self.learn_cert(txn, cert),
                ToCore::Invite {
                    space,
                    member,
                    grant,
                    reply,
                } => match self.invite(txn, space, &member, grant, &mut effects) {
                    Ok(Ok(invited)) => {
                        effects.reply(reply, invited);
                        Ok(())
                    }
                    Ok(Err(e)) => {
                        let _ = reply.send(Err(e));
                        Ok(())
                    }
                    Err(e) => Err(e),
                },
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
            }
        } else {
            for (_, group) in sends {
                for (_, _, reply) in group {
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
                for event in effects.events.drain(..) {
                    let _ = self.events.send(event);
                }
                for space in std::mem::take(&mut self.purges) {
                    if let Err(e) = self.purge(space) {
                        warn!(space = %space.fmt_short(), error = %e, "purging a frozen writer failed; it is retried at the next start");
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
                self.purges.clear();
                self.rebuilds.clear();
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
                let _ = reply.send(self.messages(space, limit));
            }
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
            ToCore::Invite { reply, .. } => fail_unavailable(reply),
            ToCore::PeerHolds { peer, spaces } => self.note_peer_holds(peer, spaces),
            // Writes reach here only when no transaction could be opened.
            ToCore::CreateChat { reply, .. } => fail_unavailable(reply),
            ToCore::Send { reply, .. } => fail_unavailable(reply),
            ToCore::Ingest { reply, .. } => fail_unavailable(reply),
            ToCore::LearnCert { .. } => {}
        }
    }

    fn learn_cert(&mut self, tx: &mut Txn, cert: DeviceCert) -> store::Result<()> {
        if !cert.verify() || self.certs.get(&cert.device) == Some(&cert) {
            return Ok(());
        }
        tx.put_cert(&cert.device, &postcard::to_stdvec(&cert).expect("certs serialize"))?;
        self.certs.insert(cert.device, cert);
        Ok(())
    }

    fn resolve_cert(&self, text: &str) -> Result<DeviceCert> {
        if let Ok(cert) = DeviceCert::from_card(text) {
            return Ok(cert);
        }
        let device: DeviceId = text.parse().map_err(|_| Error::UnknownDevice(text.to_string()))?;
        if device == self.me {
            return Ok(self.keys.cert());
        }
        self.certs
            .get(&device)
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
    fn create_chat(
        &mut self,
        tx: &mut Txn,
        name: &str,
        members: &[String],
        replicators: &[String],
        effects: &mut Effects,
    ) -> store::Result<Result<SpaceId>> {
        let certs = match members.iter().map(|m| self.resolve_cert(m)).collect::<Result<Vec<_>>>() {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        let replicators = match replicators
            .iter()
            .map(|r| self.resolve_device(r))
            .collect::<Result<Vec<_>>>()
        {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        if name.trim().is_empty() {
            return Ok(Err(Error::Invalid("a space needs a non-empty name".into())));
        }
        let control_doc_incarnation = rand::random();
        let (genesis, key) = match control::create_space(
            &self.keys,
            control_doc_incarnation,
            name,
            SpaceKind::Chat,
            &certs,
            &replicators,
        ) {
            Ok(x) => x,
            Err(e) => return Ok(Err(Error::Invalid(e.to_string()))),
        };
        let state = SpaceState::from_genesis(&genesis).expect("create_space validated its own genesis");
        let space_id = state.space;
        let mut space = Space::new(state, Some(Ok(key)));
        let order = space.record(&genesis, None);
        tx.put_space(&space_id, Participation::Named)?;
        tx.put_envelope(&new_envelope(&genesis), order)?;
        effects
            .events
            .push(stored_event(&space, vec![genesis.into_bytes()], None));
        self.spaces.insert(space_id, space);
        info!(space = %space_id.fmt_short(), "chat space created");
        Ok(Ok(space_id))
    }

    /// Adds a member device (a signed `Add`) or a replicator (`AddReplicator`) to a
    /// space (see `control`). The outer error aborts the batch; the inner one is the
    /// caller's mistake.
    fn invite(
        &mut self,
        tx: &mut Txn,
        space_id: SpaceId,
        member: &str,
        grant: Grant,
        effects: &mut Effects,
    ) -> store::Result<Result<Invited>> {
        let (cert, device) = match grant {
            Grant::Member(_) => match self.resolve_cert(member) {
                Ok(cert) => (Some(cert), cert.device),
                Err(e) => return Ok(Err(e)),
            },
            Grant::Replicator => match self.resolve_device(member) {
                Ok(device) => (None, device),
                Err(e) => return Ok(Err(e)),
            },
        };
        let me = self.me;
        let Some(space) = self.spaces.get_mut(&space_id) else {
            return Ok(Err(Error::UnknownSpace(space_id)));
        };
        let mine = space.state.members.get(&me).map(|m| m.role);
        if !matches!(mine, Some(Role::Owner | Role::Admin)) {
            return Ok(Err(Error::NotAllowed(
                "only owners and admins of a space may add members".into(),
            )));
        }
        if grant == Grant::Member(Role::Owner) && mine != Some(Role::Owner) {
            return Ok(Err(Error::NotAllowed("only an owner may add an owner".into())));
        }
        if space.state.entitled(&device) {
            return Ok(Err(Error::Invalid(format!(
                "device {} is already in the space",
                device.fmt_short()
            ))));
        }
        let Some(readable) = space.readable.as_ref() else {
            return Ok(Err(Error::KeyMissing {
                space: space_id,
                why: space
                    .key_problem
                    .clone()
                    .unwrap_or_else(|| "no key for the current epoch".into()),
            }));
        };
        let doc = space_id.control_doc();
        let incarnation = *self.incarnations.entry(doc).or_insert_with(rand::random);
        let actor = ActorKey(outpost_crdt::writer::actor_bytes(&me.0, &doc, incarnation));
        let seq = space.vv.get(&actor) + 1;
        let previous = space.last_env.get(&actor).map(|(_, id)| *id);
        let writer = (incarnation, seq, previous);
        let made = match (grant, &cert) {
            (Grant::Member(role), Some(cert)) => {
                control::add_member(&self.keys, &space.state, &readable.key, writer, cert, role)
            }
            _ => control::add_replicator(&self.keys, &space.state, writer, device),
        };
        let env = match made {
            Ok(env) => env,
            Err(e) => return Ok(Err(Error::Invalid(e.to_string()))),
        };
        let order = space.record(&env, None);
        space.state.apply(&env);
        tx.put_envelope(&new_envelope(&env), order)?;
        let invited = Invited {
            device,
            grant,
            op: env.id(),
        };
        effects.events.push(stored_event(space, vec![env.into_bytes()], None));
        info!(space = %space_id.fmt_short(), device = %device.fmt_short(), ?grant, "added to a space");
        if let Some(cert) = cert
            && self.certs.get(&cert.device) != Some(&cert)
        {
            tx.put_cert(&cert.device, &postcard::to_stdvec(&cert).expect("certs serialize"))?;
            self.certs.insert(cert.device, cert);
        }
        Ok(Ok(invited))
    }

    fn members(&self, space_id: SpaceId) -> Result<Members> {
        let space = self.spaces.get(&space_id).ok_or(Error::UnknownSpace(space_id))?;
        let state = &space.state;
        Ok(Members {
            space: space_id,
            members: state
                .members
                .values()
                .map(|m| MemberView {
                    device: m.cert.device,
                    role: m.role,
                    added_by: state.added_by(&m.cert.device),
                    me: m.cert.device == self.me,
                })
                .collect(),
            replicators: state.replicators.iter().copied().collect(),
        })
    }

    /// Posts every waiting send of one space as one Automerge change.
    fn send_group(
        &mut self,
        tx: &mut Txn,
        space_id: SpaceId,
        group: Vec<PendingSend>,
        effects: &mut Effects,
    ) -> store::Result<()> {
        let me = self.me;
        let Some(space) = self.spaces.get_mut(&space_id) else {
            for (_, _, reply) in group {
                let _ = reply.send(Err(Error::UnknownSpace(space_id)));
            }
            return Ok(());
        };
        if !space.state.may_write(&me) {
            for (_, _, reply) in group {
                let _ = reply.send(Err(Error::NotWritable(space_id)));
            }
            return Ok(());
        }
        let doc = space.chat_doc();
        let incarnation = *self.incarnations.entry(doc).or_insert_with(rand::random);
        let Some(readable) = space.readable.as_mut() else {
            let why = space
                .key_problem
                .clone()
                .unwrap_or_else(|| "no key for the current epoch".into());
            for (_, _, reply) in group {
                let _ = reply.send(Err(Error::KeyMissing {
                    space: space_id,
                    why: why.clone(),
                }));
            }
            return Ok(());
        };
        let mut msgs = Vec::new();
        let mut waiting: Vec<PendingSend> = Vec::new();
        let mut batch_ids: HashMap<String, String> = HashMap::new();
        for (text, client_id, reply) in group {
            if client_id.as_ref().is_some_and(|c| c.len() > MAX_CLIENT_ID_BYTES) {
                let _ = reply.send(Err(Error::Invalid(format!(
                    "a client id is at most {MAX_CLIENT_ID_BYTES} bytes"
                ))));
                continue;
            }
            if text.len() > MAX_TEXT_BYTES {
                let _ = reply.send(Err(Error::Invalid(format!(
                    "message of {} bytes exceeds {MAX_TEXT_BYTES}",
                    text.len()
                ))));
                continue;
            }
            if let Some(cid) = &client_id
                && let Some(id) = self
                    .store
                    .client_id(&space_id, cid)?
                    .or_else(|| batch_ids.get(cid).cloned())
            {
                effects.reply(reply, Sent { id, duplicate: true });
                continue;
            }
            let id = new_message_id();
            if let Some(cid) = &client_id {
                batch_ids.insert(cid.clone(), id.clone());
            }
            msgs.push(NewMessage { id: id.clone(), text });
            waiting.push((id, client_id, reply));
        }
        if msgs.is_empty() {
            return Ok(());
        }
        let actor = outpost_crdt::writer::actor_id(&me.0, &doc, incarnation);
        let change = match readable.chat.post(actor, &msgs, crate::clock::now_ms() as i64) {
            Ok(c) => c,
            Err(e) => {
                for (_, _, reply) in waiting {
                    let _ = reply.send(Err(Error::Invalid(format!("the document refused the message: {e}"))));
                }
                return Ok(());
            }
        };
        // Every dependency is a head of the document, and every head is a stored
        // envelope or a snapshot's last (a writer's earlier changes have its later
        // ones as dependants), so each has a known envelope.
        let parents: Vec<EnvelopeId> = change
            .deps()
            .iter()
            .filter(|d| **d != readable.genesis_hash)
            .filter_map(|d| readable.env_of_change.get(d).copied())
            .collect();
        if parents.len() + usize::from(change.deps().contains(&readable.genesis_hash)) != change.deps().len() {
            warn!(space = %space_id.fmt_short(), "a dependency of a new change has no known envelope; the send is refused and the document reloads");
            for (_, _, reply) in waiting {
                let _ = reply.send(Err(Error::Invalid(
                    "internal: the document is out of step with the store; retry".into(),
                )));
            }
            return Err(store::Error::Unavailable);
        }
        let header = Header {
            kind: Kind::Content,
            space: space_id,
            doc,
            epoch: space.state.epoch,
            author: me,
            incarnation,
            seq: change.seq(),
            parents,
            control_heads: space.state.heads(),
        };
        let env = Envelope::seal_content(&self.keys, header, &readable.key, change.raw_bytes());
        let created: Vec<MessageView> = msgs
            .iter()
            .filter_map(|m| readable.chat.message(&m.id))
            .map(|m| view(&m, me))
            .collect();
        let order = space.record(&env, Some(&change));
        tx.put_envelope(&new_envelope(&env), order)?;
        for (id, client_id, reply) in waiting {
            if let Some(cid) = client_id {
                tx.put_client_id(&space_id, &cid, &id)?;
            }
            effects.reply(reply, Sent { id, duplicate: false });
        }
        effects.events.push(stored_event(space, vec![env.into_bytes()], None));
        for message in created {
            effects.events.push(Event::Message {
                space: space_id,
                message,
            });
        }
        Ok(())
    }

    /// Verifies, stores and applies envelopes from a peer (or from the pending set).
    fn ingest(
        &mut self,
        tx: &mut Txn,
        from: Option<DeviceId>,
        queue: Vec<Envelope>,
        effects: &mut Effects,
    ) -> store::Result<Ack> {
        let peer = from.map(|d| d.fmt_short()).unwrap_or_default();
        let me = self.me;
        let mut ack = Ack::default();
        // Geneses first: content of a new space waits for it.
        let (geneses, mut queue): (Vec<_>, Vec<_>) = queue.into_iter().partition(|e| {
            !self.spaces.contains_key(&e.header().space) && matches!(e.control_op(), Ok(ControlOp::Genesis(_)))
        });
        for env in geneses {
            // A genesis that does not name this device is kept when an operation
            // that comes with it (or waits as an orphan) adds this device.
            let space = env.header().space;
            let mut ops: Vec<&Envelope> = queue.iter().filter(|e| e.header().space == space).collect();
            ops.extend(self.orphans.iter().filter(|e| e.header().space == space));
            let admitted = admits(&env, &ops, &self.me);
            match self.accept_genesis(tx, env, from, admitted, effects)? {
                Ok(true) => ack.stored += 1,
                Ok(false) => ack.duplicate += 1,
                Err(reason) => {
                    warn!(%peer, %reason, "rejected a space genesis");
                    ack.rejected += 1;
                }
            }
        }
        let spaces = &self.spaces;
        queue.extend(self.orphans.take_where(|e| spaces.contains_key(&e.header().space)));
        // Envelopes refused because a waiting set is full: reported once per batch.
        let mut dropped = 0u32;

        // Accepted envelopes with their log positions, written together at the end.
        let mut accepted: Vec<(Envelope, u64)> = Vec::new();
        let mut to_apply: BTreeMap<SpaceId, Vec<Checked>> = BTreeMap::new();
        let mut from_pending = BTreeSet::new();
        let mut purges = BTreeSet::new();
        let mut snapshot_spaces = BTreeSet::new();
        loop {
            let mut waiting = Vec::new();
            let mut progressed = BTreeSet::new();
            for env in queue.drain(..) {
                let space_id = env.header().space;
                if env.header().kind == Kind::Snapshot && self.spaces.contains_key(&space_id) {
                    let outcome = self.ingest_snapshot(tx, from, &env, &mut ack, effects, &mut purges)?;
                    if outcome == SnapshotOutcome::Wait {
                        waiting.push(env);
                        continue;
                    }
                    if outcome == SnapshotOutcome::Held {
                        // What waited for changes the snapshot holds may be ready now.
                        progressed.insert(space_id);
                        snapshot_spaces.insert(space_id);
                    }
                    if let Some(space) = self.spaces.get_mut(&space_id)
                        && space.pending.remove(&env.id()).is_some()
                    {
                        tx.remove_pending(&env.id())?;
                    }
                    continue;
                }
                let Some(space) = self.spaces.get_mut(&space_id) else {
                    if self.orphans.insert(env) {
                        ack.pending += 1;
                    } else {
                        dropped += 1;
                    }
                    continue;
                };
                // What this node holds at (actor, seq): accepted earlier in this
                // batch (not committed yet), or stored.
                let store = &self.store;
                let held_at = |actor: &ActorKey, seq: u64| -> Option<Vec<u8>> {
                    accepted
                        .iter()
                        .find(|(e, _)| e.header().seq == seq && e.header().actor() == *actor)
                        .map(|(e, _)| e.as_bytes().to_vec())
                        .or_else(|| store.writer_range(&space_id, actor, seq, seq).ok()?.pop())
                };
                let verdict = space.classify(&env, |actor, seq| held_at(actor, seq).map(|b| EnvelopeId::of(&b)));
                if let (Some(peer), Verdict::Duplicate | Verdict::Accept(_)) = (from, &verdict) {
                    space.note_peer_holds(peer, &env);
                }
                match verdict {
                    Verdict::Duplicate => {
                        if !from_pending.contains(&env.id()) {
                            ack.duplicate += 1;
                        }
                        if space.pending.remove(&env.id()).is_some() {
                            tx.remove_pending(&env.id())?;
                        }
                    }
                    Verdict::Reject(reason) => {
                        warn!(%peer, space = %space_id.fmt_short(), author = %env.header().author.fmt_short(), %reason, "rejected an envelope");
                        space.rejected += 1;
                        ack.rejected += 1;
                        if space.pending.remove(&env.id()).is_some() {
                            tx.remove_pending(&env.id())?;
                        }
                    }
                    Verdict::Equivocation => {
                        let h = env.header();
                        warn!(%peer, space = %space_id.fmt_short(), author = %h.author.fmt_short(), seq = h.seq, "rejected an envelope: equivocation, its author signed a different envelope for the same (writer, seq); the writer is frozen before it and the device flagged");
                        space.rejected += 1;
                        ack.rejected += 1;
                        let first = held_at(&h.actor(), h.seq)
                            .or_else(|| space.snapshot_last(&h.actor(), h.seq).map(|l| l.as_bytes().to_vec()));
                        if let Some(first) = first
                            && freeze(tx, space, first, &env)?
                        {
                            purges.insert(space_id);
                        }
                        if space.pending.remove(&env.id()).is_some() {
                            tx.remove_pending(&env.id())?;
                        }
                    }
                    Verdict::Covered => match space.note_covered(&env) {
                        None => {
                            if !from_pending.contains(&env.id()) {
                                ack.duplicate += 1;
                            }
                            if space.pending.remove(&env.id()).is_some() {
                                tx.remove_pending(&env.id())?;
                            }
                        }
                        Some(first) => {
                            let h = env.header();
                            warn!(%peer, space = %space_id.fmt_short(), author = %h.author.fmt_short(), seq = h.seq, "rejected an envelope: equivocation, two different envelopes for one (writer, seq); the writer is frozen before it and the device flagged");
                            space.rejected += 1;
                            ack.rejected += 1;
                            if freeze(tx, space, first, &env)? {
                                purges.insert(space_id);
                            }
                        }
                    },
                    Verdict::Invalid(reason) => {
                        debug!(%peer, space = %space_id.fmt_short(), author = %env.header().author.fmt_short(), %reason, "refused an envelope of a frozen writer");
                        space.rejected += 1;
                        ack.rejected += 1;
                        if space.mark_invalid(env.id()) {
                            tx.put_invalid(&space_id, &env.id())?;
                        }
                        if space.pending.remove(&env.id()).is_some() {
                            tx.remove_pending(&env.id())?;
                        }
                    }
                    Verdict::Wait => waiting.push(env),
                    Verdict::Accept(checked) => {
                        let change = checked.map(|c| *c);
                        let order = space.record(&env, change.as_ref().map(Checked::change));
                        if env.header().kind == Kind::Control {
                            space.state.apply(&env);
                            // Added to a space it could not read: rebuild it with the key
                            // once the batch is durable (what arrived before gets decrypted).
                            if space.readable.is_none() && space.state.members.contains_key(&me) {
                                self.rebuilds.insert(space_id);
                            }
                        }
                        if !from_pending.contains(&env.id()) {
                            ack.stored += 1;
                        }
                        to_apply.entry(space_id).or_default().extend(change);
                        accepted.push((env, order));
                        progressed.insert(space_id);
                    }
                }
            }
            if progressed.is_empty() {
                queue = waiting;
                break;
            }
            // Anything that waited may be ready now, including earlier pending ones.
            queue = waiting;
            for space_id in progressed {
                if let Some(space) = self.spaces.get_mut(&space_id) {
                    for env in space.pending.take_all() {
                        from_pending.insert(env.id());
                        queue.push(env);
                    }
                }
            }
        }
        for env in queue {
            let space_id = env.header().space;
            let Some(space) = self.spaces.get_mut(&space_id) else {
                continue;
            };
            let fresh = !from_pending.contains(&env.id());
            if !space.pending.holds_or_admits(&env) {
                if !fresh {
                    tx.remove_pending(&env.id())?;
                }
                dropped += 1;
                continue;
            }
            if fresh {
                tx.put_pending(&env.id(), &space_id, env.as_bytes())?;
                ack.pending += 1;
            }
            space.pending.insert(env);
        }
        self.purges.extend(purges);
        if dropped > 0 {
            warn!(%peer, dropped, "refused envelopes that wait for parents or a genesis: waiting sets are full");
            ack.rejected += dropped;
        }
        let rows: Vec<(NewEnvelope<'_>, u64)> = accepted.iter().map(|(e, o)| (new_envelope(e), *o)).collect();
        tx.put_envelopes(rows.iter().map(|(e, o)| (e, *o)))?;
        drop(rows);
        let mut stored: BTreeMap<SpaceId, Vec<Vec<u8>>> = BTreeMap::new();
        for (env, _) in accepted {
            stored.entry(env.header().space).or_default().push(env.into_bytes());
        }
        let touched: BTreeSet<SpaceId> = stored.keys().copied().chain(snapshot_spaces).collect();
        for (space_id, changes) in to_apply {
            self.apply_changes(space_id, changes, effects);
        }
        ack.vv = touched
            .iter()
            .filter_map(|id| self.spaces.get(id))
            .filter(|s| from.is_none_or(|peer| s.state.entitled(&peer)))
            .map(|s| SpaceVv {
                space: s.state.space,
                vv: s.vv.clone(),
            })
            .collect();
        for (space_id, envelopes) in stored {
            if let Some(space) = self.spaces.get(&space_id) {
                effects.events.push(stored_event(space, envelopes, from));
            }
        }
        Ok(ack)
    }

    /// Takes a snapshot from a peer: checks it, merges its document (members) and
    /// holds it. Returns whether it was accepted.
    fn ingest_snapshot(
        &mut self,
        tx: &mut Txn,
        from: Option<DeviceId>,
        env: &Envelope,
        ack: &mut Ack,
        effects: &mut Effects,
        purges: &mut BTreeSet<SpaceId>,
    ) -> store::Result<SnapshotOutcome> {
        let peer = from.map(|d| d.fmt_short()).unwrap_or_default();
        let space_id = env.header().space;
        let maker = env.header().author;
        let Some(space) = self.spaces.get_mut(&space_id) else {
            return Ok(SnapshotOutcome::Done);
        };
        let mut refuse = |space: &mut Space, reason: &dyn std::fmt::Display| {
            warn!(%peer, space = %space_id.fmt_short(), maker = %maker.fmt_short(), %reason, "rejected a snapshot");
            space.rejected += 1;
            ack.rejected += 1;
        };
        // Checked before the last envelopes' signatures, which cost time per writer.
        if !space.state.may_write(&maker) {
            refuse(space, &"made by a device that may not write in this space");
            return Ok(SnapshotOutcome::Done);
        }
        let snap = match Snapshot::verify(env.clone()) {
            Ok(snap) => snap,
            Err(e) => {
                refuse(space, &e);
                return Ok(SnapshotOutcome::Done);
            }
        };
        let store = &self.store;
        let verdict = space.classify_snapshot(&snap, |actor, seq| {
            store.writer_at(&space_id, actor, seq).ok().flatten()
        });
        let content = match verdict {
            SnapshotVerdict::Wait => return Ok(SnapshotOutcome::Wait),
            SnapshotVerdict::Duplicate => {
                ack.duplicate += 1;
                if let Some(peer) = from {
                    space.note_peer_covers(peer, snap.covers());
                }
                return Ok(SnapshotOutcome::Done);
            }
            SnapshotVerdict::Reject(reason) => {
                refuse(space, &reason);
                return Ok(SnapshotOutcome::Done);
            }
            SnapshotVerdict::Equivocation(last) => {
                refuse(
                    space,
                    &"equivocation: a writer's last envelope differs from the one stored; the writer is frozen before it and the device flagged",
                );
                let h = last.header();
                let first = match self.store.writer_range(&space_id, &h.actor(), h.seq, h.seq)?.pop() {
                    Some(first) => Some(first),
                    None => space.snapshot_last(&h.actor(), h.seq).map(|l| l.as_bytes().to_vec()),
                };
                if let Some(first) = first
                    && freeze(tx, space, first, &last)?
                {
                    purges.insert(space_id);
                }
                return Ok(SnapshotOutcome::Done);
            }
            SnapshotVerdict::Accept(content) => content,
        };
        // Members merge first: a merge refused leaves nothing held.
        let mut created = Vec::new();
        let mut lasts = Vec::new();
        if let (Some(content), Some(readable)) = (content, space.readable.as_mut()) {
            let SnapshotContent { opened, lasts: mapped } = *content;
            lasts = mapped;
            let merged = std::panic::catch_unwind(AssertUnwindSafe(|| readable.chat.absorb(opened)));
            match merged {
                Ok(Ok(messages)) => created = messages,
                Ok(Err(outpost_crdt::chat::snapshot::AbsorbError::Equivocation { actor, .. })) => {
                    let actor = space::actor_key(&actor);
                    let device = snap
                        .lasts()
                        .iter()
                        .find(|l| l.header().actor() == actor)
                        .map(|l| l.header().author);
                    // The writer's two signed chains disagree at (actor, seq), but the
                    // twin inside the snapshot is no signed envelope a peer could check
                    // on its own: flag the device, refuse the snapshot, freeze nothing.
                    refuse(
                        space,
                        &"equivocation: the snapshot holds another change for a (writer, seq) this node holds",
                    );
                    space.equivocators.extend(device);
                    return Ok(SnapshotOutcome::Done);
                }
                Ok(Err(e)) => {
                    refuse(space, &e);
                    return Ok(SnapshotOutcome::Done);
                }
                Err(_) => {
                    refuse(space, &"Automerge panicked merging the snapshot");
                    return Ok(SnapshotOutcome::Done);
                }
            }
        }
        tx.put_snapshot(&space_id, &snap.id(), snap.envelope().as_bytes())?;
        if let Some(peer) = from {
            space.note_peer_covers(peer, snap.covers());
        }
        let covers = snap.covers().count_missing_in(&VersionVector::default());
        for dropped in space.hold_snapshot(snap, &lasts) {
            tx.remove_snapshot(&space_id, &dropped)?;
        }
        ack.stored += 1;
        info!(%peer, space = %space_id.fmt_short(), changes = covers, messages = created.len(), "merged a snapshot");
        if let Some(readable) = space.readable.as_ref() {
            if created.len() > MAX_MESSAGE_EVENTS_PER_SNAPSHOT {
                effects.events.push(Event::Reload {
                    space: space_id,
                    messages: created.len() as u64,
                });
            } else {
                for m in &created {
                    effects.events.push(Event::Message {
                        space: space_id,
                        message: view(m, readable.author_of(&m.actor)),
                    });
                }
            }
        }
        Ok(SnapshotOutcome::Held)
    }

    /// Removes what a writer's freeze made invalid: its envelopes from the freeze on,
    /// every envelope built on them (both remembered in `invalid-1`), and the held
    /// snapshots that cover them. Envelopes that built on a dropped snapshot's
    /// history go back to pending until a peer serves it again. Then the space is
    /// rebuilt from the store. Runs in its own transaction, after the batch that
    /// froze the writer committed.
    fn purge(&mut self, space_id: SpaceId) -> store::Result<()> {
        const CHUNK: usize = 4096;
        let Some(space) = self.spaces.get(&space_id) else {
            return Ok(());
        };
        let frozen: BTreeMap<ActorKey, u64> = space.frozen.iter().map(|(a, (from, _))| (*a, *from)).collect();
        let (dropped, kept): (Vec<&Snapshot>, Vec<&Snapshot>) =
            space.snapshots.iter().partition(|snap| space.covers_frozen(snap));
        let mut known: BTreeSet<EnvelopeId> = kept.iter().flat_map(|s| s.lasts().iter().map(Envelope::id)).collect();
        let snapshots_left = !kept.is_empty();
        let mut invalid = space.invalid.clone();
        let mut tx = self.store.begin()?;
        for snap in &dropped {
            tx.remove_snapshot(&space_id, &snap.id())?;
        }
        let dropped = dropped.len();
        let (mut removed, mut requeued) = (0u64, 0u64);
        let mut after = None;
        loop {
            let rows = self.store.space_log(&space_id, after, CHUNK)?;
            let done = rows.len() < CHUNK;
            for (order, bytes) in rows {
                after = Some(order);
                let Ok(env) = Envelope::decode_stored(bytes) else {
                    continue;
                };
                let h = env.header();
                if h.kind == Kind::Control && h.parents.is_empty() {
                    // The genesis.
                    known.insert(env.id());
                    continue;
                }
                let bad = frozen.get(&h.actor()).is_some_and(|from| h.seq >= *from)
                    || h.parents.iter().chain(&h.control_heads).any(|p| invalid.contains(p));
                // Without a snapshot left, a parent never stored is one only a
                // dropped snapshot held.
                let unparented = !snapshots_left && h.parents.iter().any(|p| !known.contains(p));
                if bad {
                    tx.delete_envelope(&new_envelope(&env), order)?;
                    tx.put_invalid(&space_id, &env.id())?;
                    invalid.insert(env.id());
                    removed += 1;
                } else if unparented {
                    tx.delete_envelope(&new_envelope(&env), order)?;
                    tx.put_pending(&env.id(), &space_id, env.as_bytes())?;
                    requeued += 1;
                } else {
                    known.insert(env.id());
                }
            }
            if done {
                break;
            }
        }
        tx.commit()?;
        self.rebuild(space_id)?;
        warn!(space = %space_id.fmt_short(), removed, requeued, snapshots = dropped, "purged what a frozen writer made invalid");
        let _ = self.events.send(Event::Reload {
            space: space_id,
            messages: removed,
        });
        Ok(())
    }

    /// Rebuilds a space from the store (after a purge, or once this device got its
    /// key), keeping what is not on disk: peer views, counters, flags.
    fn rebuild(&mut self, space_id: SpaceId) -> store::Result<()> {
        let frozen: Vec<store::Frozen> = self
            .store
            .frozen()?
            .into_iter()
            .filter(|f| f.space == space_id)
            .collect();
        let pending: Vec<Envelope> = self
            .store
            .pending()?
            .into_iter()
            .filter_map(|b| Envelope::decode_stored(b).ok())
            .filter(|e| e.header().space == space_id)
            .collect();
        let old = self.spaces.remove(&space_id);
        if let Err(why) = self.load_space(space_id, frozen, pending) {
            warn!(space = %space_id.fmt_short(), %why, "space could not be rebuilt");
        }
        if let (Some(old), Some(new)) = (old, self.spaces.get_mut(&space_id)) {
            new.peers = old.peers;
            new.rejected = old.rejected;
            new.equivocators.extend(old.equivocators);
        }
        Ok(())
    }

    /// Applies accepted changes to a space's document in one call. A panic inside
    /// Automerge cannot take the node down: the panic is caught and logged; the
    /// envelopes stay stored and the document is rebuilt from them at the next start.
    fn apply_changes(&mut self, space_id: SpaceId, changes: Vec<Checked>, effects: &mut Effects) {
        let Some(space) = self.spaces.get_mut(&space_id) else {
            return;
        };
        let Some(readable) = space.readable.as_mut() else {
            return;
        };
        if changes.is_empty() {
            return;
        }
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| readable.chat.apply_checked(changes)));
        match result {
            Ok(Ok(created)) => {
                for m in created {
                    effects.events.push(Event::Message {
                        space: space_id,
                        message: view(&m, readable.author_of(&m.actor)),
                    });
                }
            }
            Ok(Err(e)) => {
                warn!(space = %space_id.fmt_short(), error = %e, "Automerge refused validated changes")
            }
            Err(_) => {
                warn!(space = %space_id.fmt_short(), "Automerge panicked applying stored changes; this space's view may be incomplete until the daemon restarts")
            }
        }
    }

    /// Keeps a new space from its genesis, if the genesis names this device or
    /// `admitted` (an operation that arrived with it adds this device).
    fn accept_genesis(
        &mut self,
        tx: &mut Txn,
        env: Envelope,
        from: Option<DeviceId>,
        admitted: bool,
        effects: &mut Effects,
    ) -> store::Result<std::result::Result<bool, String>> {
        let state = match SpaceState::from_genesis(&env) {
            Ok(s) => s,
            Err(e) => return Ok(Err(e.to_string())),
        };
        if let Some(existing) = self.spaces.get(&state.space) {
            return Ok(if existing.state.genesis == env.id() {
                Ok(false)
            } else {
                Err("a different genesis for a known space".into())
            });
        }
        if !state.entitled(&self.me) && !admitted {
            return Ok(Err("this device is neither member nor replicator of the space".into()));
        }
        let key = self.unwrap_key(&state);
        let space_id = state.space;
        let mut space = Space::new(state, key);
        if let Some(why) = &space.key_problem {
            warn!(space = %space_id.fmt_short(), %why, "joined a space whose key does not open");
        }
        let order = space.record(&env, None);
        if let Some(peer) = from {
            space.note_peer_holds(peer, &env);
        }
        tx.put_space(&space_id, Participation::Named)?;
        tx.put_envelope(&new_envelope(&env), order)?;
        effects.events.push(stored_event(&space, vec![env.into_bytes()], from));
        info!(space = %space_id.fmt_short(), readable = space.readable.is_some(), "joined a space");
        self.spaces.insert(space_id, space);
        Ok(Ok(true))
    }

    fn messages(&self, space_id: SpaceId, limit: usize) -> Result<Vec<MessageView>> {
        let space = self.spaces.get(&space_id).ok_or(Error::UnknownSpace(space_id))?;
        let readable = space.readable.as_ref().ok_or_else(|| Error::KeyMissing {
            space: space_id,
            why: space
                .key_problem
                .clone()
                .unwrap_or_else(|| "this device is a replicator: it stores the space but holds no key".into()),
        })?;
        let all = readable.chat.messages();
        let skip = all.len().saturating_sub(limit.min(MAX_LOG_LIMIT));
        Ok(all[skip..]
            .iter()
            .map(|m| view(m, readable.author_of(&m.actor)))
            .collect())
    }

    fn summaries(&self) -> Vec<SpaceSummary> {
        self.spaces
            .values()
            .map(|s| SpaceSummary {
                space: s.state.space,
                name: s.name.clone(),
                kind: "chat".into(),
                readable: s.readable.is_some(),
                members: s.state.members.keys().copied().collect(),
                replicators: s.state.replicators.iter().copied().collect(),
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
            } else {
                "replicator".into()
            },
            sync,
            readable: s.readable.is_some(),
            key_problem: s.key_problem.clone(),
            envelopes: s.next_order,
            writers: s.vv.0.len(),
            pending: s.pending.len(),
            pending_bytes: s.pending.bytes(),
            rejected: s.rejected,
            snapshots: s.snapshots.len(),
            equivocating: s.equivocators.iter().copied().collect(),
            peers,
        }
    }

    /// Our version vectors for every space `peer` is entitled to.
    fn offer_for(&self, peer: &DeviceId) -> Vec<SpaceVv> {
        self.spaces
            .values()
            .filter(|s| s.state.entitled(peer))
            .map(|s| SpaceVv {
                space: s.state.space,
                vv: s.vv.clone(),
            })
            .collect()
    }

    fn take_offer(&mut self, peer: DeviceId, theirs: Vec<SpaceVv>) -> Result<OfferOutcome> {
        let mut response = self.offer_for(&peer);
        let offered: BTreeSet<SpaceId> = response.iter().map(|s| s.space).collect();
        // Spaces the peer has and we do not: an empty vector asks for everything.
        // (Whether we keep the space is decided when its genesis arrives.)
        for s in &theirs {
            if !self.spaces.contains_key(&s.space) {
                response.push(SpaceVv {
                    space: s.space,
                    vv: VersionVector::default(),
                });
            }
        }
        let mut theirs_by_space: BTreeMap<SpaceId, VersionVector> =
            theirs.into_iter().map(|s| (s.space, s.vv)).collect();
        // Spaces we hold that the peer did not mention: it lacks all of them.
        for space in &offered {
            theirs_by_space.entry(*space).or_default();
        }
        let (push, more) = self.missing_for(peer, theirs_by_space)?;
        Ok(OfferOutcome { response, push, more })
    }

    /// Records what `peer` holds and returns what it lacks of its entitled spaces:
    /// per space, the genesis if it lacks it, then snapshots when it lacks much
    /// (or what only a snapshot holds here), then envelopes in topological order.
    /// At most about [`CATCH_UP_BYTES`]: the flag says more follows (the network
    /// asks for it with [`CoreHandle::catch_up`] once the peer acknowledged these).
    fn missing_for(
        &mut self,
        peer: DeviceId,
        theirs: BTreeMap<SpaceId, VersionVector>,
    ) -> Result<(Vec<Vec<u8>>, bool)> {
        let now = crate::clock::now_ms();
        let mut out = Vec::new();
        let mut budget = CATCH_UP_BYTES;
        let mut more = false;
        for (space_id, their_vv) in theirs {
            let Some(space) = self.spaces.get(&space_id) else {
                continue;
            };
            if !space.state.entitled(&peer) {
                continue;
            }
            let snapshot = wants_snapshot(space, &their_vv);
            if snapshot {
                self.refresh_snapshot(space_id)?;
            }
            let Some(space) = self.spaces.get_mut(&space_id) else {
                continue;
            };
            let mut floor = their_vv.clone();
            let mut snapshots = Vec::new();
            if snapshot {
                for snap in space.snapshots.iter().filter(|s| !s.is_covered_by(&their_vv)) {
                    floor.merge(snap.covers());
                    snapshots.push(snap.envelope().as_bytes().to_vec());
                }
            }
            budget = budget.saturating_sub(snapshots.iter().map(Vec::len).sum());
            let (found, truncated) = if budget == 0 {
                (Vec::new(), !space.vv.missing_in(&floor).is_empty())
            } else {
                envelopes_beyond(&self.store, space, &floor, budget).map_err(|e| Error::Store(Arc::new(e)))?
            };
            budget = budget.saturating_sub(found.iter().map(|(_, e)| e.as_bytes().len()).sum());
            more |= truncated;
            // Control operations (the genesis first) go before snapshots and content,
            // which name them as control heads and would wait for them.
            let (control, content): (Vec<LogEntry>, Vec<LogEntry>) =
                found.into_iter().partition(|(_, e)| e.header().kind == Kind::Control);
            out.extend(control.into_iter().map(|(_, e)| e.into_bytes()));
            out.extend(snapshots);
            out.extend(content.into_iter().map(|(_, e)| e.into_bytes()));
            let view = space.peers.entry(peer).or_default();
            // Every peer learns each freeze once per run: the twins are the evidence,
            // and a peer holding either one freezes the writer as this node did.
            for (actor, (_, twins)) in &space.frozen {
                if view.evidence_sent.insert(*actor) {
                    out.extend(twins.iter().cloned());
                }
            }
            // Version vectors only grow: merge, so a late offer never hides an
            // acknowledgement that overtook it. What we are about to push counts
            // as theirs only once acknowledged.
            for (actor, seq) in their_vv.0 {
                view.vv.advance(actor, seq);
            }
            view.last_sync_ms = Some(now);
        }
        Ok((out, more))
    }

    /// What `peer` still lacks after it acknowledged a partial push: the next part,
    /// from what it is known to hold (its offers and acks).
    fn catch_up(&mut self, peer: DeviceId) -> Result<OfferOutcome> {
        let theirs: BTreeMap<SpaceId, VersionVector> = self
            .spaces
            .values()
            .filter(|s| s.state.entitled(&peer))
            .map(|s| {
                (
                    s.state.space,
                    s.peers.get(&peer).map(|v| v.vv.clone()).unwrap_or_default(),
                )
            })
            .collect();
        let (push, more) = self.missing_for(peer, theirs)?;
        Ok(OfferOutcome {
            response: Vec::new(),
            push,
            more,
        })
    }

    /// Makes sure a member holds a snapshot close to its whole document before
    /// serving one: it makes a fresh one when those it holds leave more than
    /// [`SNAPSHOT_STALE_CHANGES`] changes (or an eighth of the space) uncovered.
    /// The new snapshot is durable before it is served and replaces the others.
    fn refresh_snapshot(&mut self, space_id: SpaceId) -> Result<()> {
        let store_err = |e: store::Error| Error::Store(Arc::new(e));
        let Some(space) = self.spaces.get(&space_id) else {
            return Ok(());
        };
        let Some(readable) = space.readable.as_ref() else {
            return Ok(());
        };
        let mut covered = VersionVector::default();
        for snap in &space.snapshots {
            covered.merge(snap.covers());
        }
        let uncovered = space.vv.count_missing_in(&covered);
        if !space.snapshots.is_empty() && uncovered <= SNAPSHOT_STALE_CHANGES.max(space.changes_held() / 8) {
            return Ok(());
        }
        let mut lasts = Vec::new();
        for (actor, seq) in space.content_writers() {
            let last = if space.stored_from.get(actor).is_some_and(|first| *first <= seq) {
                let bytes = self
                    .store
                    .writer_range(&space_id, actor, seq, seq)
                    .map_err(store_err)?
                    .pop();
                bytes.and_then(|b| Envelope::decode_stored(b).ok())
            } else {
                space.snapshot_last(actor, seq).cloned()
            };
            let Some(last) = last else {
                warn!(space = %space_id.fmt_short(), writer = %actor.fmt_short(), "no envelope for a writer's last change; serving envelopes instead of a snapshot");
                return Ok(());
            };
            lasts.push(last);
        }
        let doc = readable.chat.save();
        let snap = match Snapshot::make(
            &self.keys,
            &readable.key,
            space.chat_doc(),
            space.state.heads(),
            lasts,
            &doc,
        ) {
            Ok(snap) => snap,
            Err(e) => {
                debug!(space = %space_id.fmt_short(), error = %e, "no snapshot; serving envelopes");
                return Ok(());
            }
        };
        let mut tx = self.store.begin().map_err(store_err)?;
        tx.put_snapshot(&space_id, &snap.id(), snap.envelope().as_bytes())
            .map_err(store_err)?;
        let replaced: Vec<EnvelopeId> = space
            .snapshots
            .iter()
            .filter(|held| held.is_covered_by(snap.covers()))
            .map(Snapshot::id)
            .collect();
        for id in &replaced {
            tx.remove_snapshot(&space_id, id).map_err(store_err)?;
        }
        tx.commit().map_err(store_err)?;
        let changes = snap.envelope().header().seq;
        let bytes = snap.envelope().as_bytes().len();
        if let Some(space) = self.spaces.get_mut(&space_id) {
            space.hold_snapshot(snap, &[]);
        }
        info!(space = %space_id.fmt_short(), changes, bytes, "made a snapshot");
        Ok(())
    }

    fn note_peer_holds(&mut self, peer: DeviceId, spaces: Vec<SpaceVv>) {
        let now = crate::clock::now_ms();
        for SpaceVv { space, vv } in spaces {
            if let Some(s) = self.spaces.get_mut(&space)
                && s.state.entitled(&peer)
            {
                let view = s.peers.entry(peer).or_insert_with(PeerView::default);
                for (actor, seq) in vv.0 {
                    view.vv.advance(actor, seq);
                }
                view.last_sync_ms = Some(now);
            }
        }
    }
}

/// Freezes the writer of `second`, caught signing it for a (writer, seq) that
/// holds `first`: from that seq on its envelopes are invalid on every node that
/// learns the twins (they are sent to every peer). Returns whether the freeze is
/// new or earlier than the one known, i.e. whether a purge must follow.
fn freeze(tx: &mut Txn, space: &mut Space, first: Vec<u8>, second: &Envelope) -> store::Result<bool> {
    let h = second.header();
    let actor = h.actor();
    space.equivocators.insert(h.author);
    if space.frozen.get(&actor).is_some_and(|(from, _)| *from <= h.seq) {
        return Ok(false);
    }
    let frozen = store::Frozen {
        space: h.space,
        actor,
        seq: h.seq,
        twins: [first, second.as_bytes().to_vec()],
    };
    tx.put_frozen(&frozen)?;
    space.frozen.insert(actor, (frozen.seq, frozen.twins));
    Ok(true)
}

/// An envelope with its log position.
type LogEntry = (u64, Envelope);

/// The envelopes of `space` beyond `floor`, in arrival (topological) order, up to
/// about `budget` bytes (at least one); the flag says some were left out. Scans the
/// space's log from the first missing envelope, so memory stays within the budget
/// however much the peer lacks.
fn envelopes_beyond(
    store: &Store,
    space: &Space,
    floor: &VersionVector,
    budget: usize,
) -> store::Result<(Vec<LogEntry>, bool)> {
    const CHUNK: usize = 1024;
    let missing = space.vv.missing_in(floor);
    let mut start = u64::MAX;
    for (actor, from, to) in &missing {
        // Below `stored_from` only snapshots hold the writer: nothing to send there.
        let first = (*from).max(space.stored_from.get(actor).copied().unwrap_or(u64::MAX));
        if first <= *to
            && let Some(id) = store.writer_at(&space.state.space, actor, first)?
            && let Some(order) = space.order.get(&id)
        {
            start = start.min(*order);
        }
    }
    let mut out = Vec::new();
    if start == u64::MAX {
        return Ok((out, false));
    }
    let mut size = 0;
    let mut after = start.checked_sub(1);
    loop {
        let rows = store.space_log(&space.state.space, after, CHUNK)?;
        let done = rows.len() < CHUNK;
        for (order, bytes) in rows {
            after = Some(order);
            let Ok(env) = Envelope::decode_stored(bytes) else {
                continue;
            };
            let h = env.header();
            if h.seq <= floor.get(&h.actor()) {
                continue;
            }
            let len = env.as_bytes().len();
            if !out.is_empty() && size + len > budget {
                return Ok((out, true));
            }
            size += len;
            out.push((order, env));
        }
        if done {
            return Ok((out, false));
        }
    }
}

/// Holds a snapshot read from the store at start-up; members merge its document
/// (checked again: the store is not a trust boundary for Automerge input).
fn hold_stored_snapshot(space: &mut Space, bytes: Vec<u8>) -> std::result::Result<(), String> {
    let env = Envelope::decode_stored(bytes).map_err(|e| e.to_string())?;
    let snap = Snapshot::from_stored(env).map_err(|e| e.to_string())?;
    let mut lasts = Vec::new();
    if space.readable.is_some() {
        let SnapshotContent { opened, lasts: mapped } = space.open_snapshot(&snap)?;
        if let Some(readable) = space.readable.as_mut() {
            std::panic::catch_unwind(AssertUnwindSafe(|| readable.chat.absorb(opened)))
                .map_err(|_| "Automerge panicked merging it".to_string())?
                .map_err(|e| e.to_string())?;
        }
        lasts = mapped;
    }
    space.hold_snapshot(snap, &lasts);
    Ok(())
}

/// Whether to serve a peer that holds `theirs` with snapshots: when it lacks at
/// least [`SNAPSHOT_WHEN_LACKING_PERCENT`] of the space (and more than a few
/// changes), or when part of what it lacks is held here only inside snapshots.
fn wants_snapshot(space: &Space, theirs: &VersionVector) -> bool {
    const MIN_CHANGES: u64 = 64;
    let missing = space.vv.missing_in(theirs);
    let only_in_snapshots = missing
        .iter()
        .any(|(actor, from, _)| space.stored_from.get(actor).is_none_or(|first| from < first));
    let lacking: u64 = missing.iter().map(|(_, from, to)| to - from + 1).sum();
    let can = space.readable.is_some() || !space.snapshots.is_empty();
    only_in_snapshots
        || (can && lacking >= MIN_CHANGES && lacking * 100 >= space.changes_held() * SNAPSHOT_WHEN_LACKING_PERCENT)
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

fn new_envelope(env: &Envelope) -> NewEnvelope<'_> {
    let h = env.header();
    NewEnvelope {
        id: env.id(),
        space: h.space,
        actor: h.actor(),
        seq: h.seq,
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

fn view(m: &Message, author: DeviceId) -> MessageView {
    MessageView {
        id: m.id.clone(),
        author,
        text: m.text.clone(),
        sent_at_ms: m.sent_at_ms,
        lamport: m.lamport,
    }
}

/// A new message id: 80 random bits, base32 (16 characters).
fn new_message_id() -> String {
    data_encoding::BASE32_NOPAD
        .encode(&rand::random::<[u8; 10]>())
        .to_lowercase()
}
