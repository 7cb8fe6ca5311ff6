//! Keeps the search index current, off the write path: new messages are
//! added as the core announces them; the shards of a room whose messages
//! changed (edits, retractions, bodies arriving late), however old, and a
//! document that changed are read again and replaced; everything is
//! committed in one batch a second.
//!
//! What changed while the daemon was down is found at start: each space's
//! *stamp* (envelopes + side envelopes held) is recorded when the space is
//! indexed in full, and a space whose stamp differs is indexed again. A
//! space touched only by single additions loses its stamp, so a crash
//! before the batch commits costs one re-index at the next start, never a
//! missing entry. A room read back only to its latest messages (a large
//! one) also drops the entries of its older messages retracted meanwhile:
//! the core names them without loading their shards.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::sync::broadcast;
use tracing::{debug, info, warn};

use super::{Entry, Error, HitKind, SearchIndex, sealed::IndexKey};
use crate::{
    core::{self, CoreHandle, DocAnswer, DocFormat, DocQuery, Event, MAX_LOG_LIMIT, MessageView},
    ids::{DocId, SpaceId},
};

/// How often changes are committed (design-rationale: batched commits).
const COMMIT_EVERY: Duration = Duration::from_secs(1);

/// How the indexer reads.
#[derive(Debug, Clone)]
pub struct Options {
    /// How many of a room's latest messages a full read of it covers
    /// ([`MAX_LOG_LIMIT`]); older ones keep their entries, but for those
    /// retracted.
    pub deep_read: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            deep_read: MAX_LOG_LIMIT,
        }
    }
}

/// Starts the indexer for the index in `dir`; returns the index (for
/// queries) once it is open, and the indexer's task: it holds a core handle,
/// so the daemon aborts it to let the core stop (what it had not committed
/// is indexed again at the next start: those spaces' stamps are gone).
/// Indexing what is missing goes on in the background.
pub fn spawn(
    dir: PathBuf,
    key: IndexKey,
    core: CoreHandle,
) -> Result<(Arc<SearchIndex>, tokio::task::JoinHandle<()>), Error> {
    spawn_with(dir, key, core, Options::default())
}

/// [`spawn`] with `options`.
pub fn spawn_with(
    dir: PathBuf,
    key: IndexKey,
    core: CoreHandle,
    options: Options,
) -> Result<(Arc<SearchIndex>, tokio::task::JoinHandle<()>), Error> {
    let (index, fresh) = SearchIndex::open(&dir, key)?;
    if fresh {
        info!("search index created: indexing everything this device can read");
    }
    let index = Arc::new(index);
    let stamps = if fresh { Stamps::default() } else { Stamps::load(&dir) };
    let indexer = Indexer {
        options,
        events: core.subscribe(),
        core,
        index: index.clone(),
        stamps,
        dir,
        rooms: HashMap::new(),
        deep: HashSet::new(),
        docs: HashSet::new(),
        known: HashMap::new(),
        added: false,
        purge: false,
        lost: false,
    };
    let task = tokio::spawn(indexer.run());
    Ok((index, task))
}

/// Each fully indexed space's stamp, persisted beside the index.
#[derive(Default)]
struct Stamps(BTreeMap<SpaceId, u64>);

impl Stamps {
    fn path(dir: &Path) -> PathBuf {
        dir.join("stamps.json")
    }

    fn load(dir: &Path) -> Self {
        std::fs::read(Self::path(dir))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .map(Self)
            .unwrap_or_default()
    }

    fn save(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join("stamps.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&self.0).expect("stamps serialize"))?;
        std::fs::rename(tmp, Self::path(dir))
    }
}

struct Indexer {
    options: Options,
    core: CoreHandle,
    events: broadcast::Receiver<Event>,
    index: Arc<SearchIndex>,
    stamps: Stamps,
    dir: PathBuf,
    /// Rooms to read again at the next commit: the shards whose messages
    /// changed in this run (read whole, closed ones too: see
    /// `CoreHandle::shard_messages`), so a large room's history is not read
    /// for them.
    rooms: HashMap<SpaceId, BTreeSet<DocId>>,
    /// Rooms to read as far back as a read goes (the latest
    /// [`Options::deep_read`]): changed while the daemon was down, rebuilt,
    /// or failed.
    deep: HashSet<SpaceId>,
    docs: HashSet<SpaceId>,
    /// What each room read in this run holds in the index: message id → its
    /// text, so reading a room again rewrites only what changed.
    known: HashMap<SpaceId, HashMap<String, String>>,
    /// Entries were added since the last commit.
    added: bool,
    /// Entries were removed: merge their segments away at the commit.
    purge: bool,
    /// A commit failed: read every space again.
    lost: bool,
}

/// The entry of a message, unless it has no text to find.
fn message_entry(space: SpaceId, m: &MessageView) -> Option<Entry> {
    if m.retracted.is_some() || m.missing {
        return None;
    }
    let mut text = m.text.clone();
    if let Some(file) = &m.file {
        text.push('\n');
        text.push_str(&file.name);
    }
    (!text.trim().is_empty()).then(|| Entry {
        space,
        kind: HitKind::Message,
        id: Some(m.id.clone()),
        author: Some(m.author),
        user: m.user,
        at_ms: m.sent_at_ms,
        text,
    })
}

impl Indexer {
    async fn run(mut self) {
        self.catch_up().await;
        let mut tick = tokio::time::interval(COMMIT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.events.recv() => match event {
                    Ok(event) => self.note(event),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        warn!(missed, "the search indexer fell behind; checking every space");
                        self.catch_up().await;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = tick.tick() => {
                    self.flush().await;
                    if std::mem::take(&mut self.lost) {
                        self.catch_up().await;
                    }
                }
            }
        }
        self.flush().await;
        debug!("search indexer stopped");
    }

    /// A space changed: it no longer counts as indexed in full, on disk at
    /// once (a crash before the next commit must not leave it looking
    /// indexed: a retraction changes no count a stamp holds).
    fn forget_stamp(&mut self, space: SpaceId) {
        if self.stamps.0.remove(&space).is_some()
            && let Err(error) = self.stamps.save(&self.dir)
        {
            warn!(%error, "cannot record what the search index holds");
        }
    }

    fn note(&mut self, event: Event) {
        match &event {
            Event::Message { space, .. } | Event::Reload { space, .. } | Event::Document { space } => {
                self.forget_stamp(*space)
            }
            // Read receipts change no text.
            Event::ChatUpdated { space, docs } if !docs.is_empty() => self.forget_stamp(*space),
            _ => {}
        }
        match event {
            Event::Message { space, message } => {
                if let Some(entry) = message_entry(space, &message) {
                    match self.index.put(&entry) {
                        Ok(()) => {
                            self.added = true;
                            if let Some(known) = self.known.get_mut(&space) {
                                known.insert(message.id.clone(), entry.text);
                            }
                        }
                        Err(error) => {
                            warn!(%error, "cannot index a message; its room is read again");
                            self.deep.insert(space);
                        }
                    }
                }
            }
            Event::ChatUpdated { space, docs } if !docs.is_empty() => {
                self.rooms.entry(space).or_default().extend(docs);
            }
            Event::Reload { space, .. } => {
                // Rebuilt (a purge may have removed messages outright): indexed anew.
                self.index.remove_space(space);
                self.known.remove(&space);
                self.purge = true;
                self.deep.insert(space);
                self.docs.insert(space);
            }
            Event::Document { space } => {
                self.docs.insert(space);
            }
            _ => {}
        }
    }

    /// Indexes again every space whose stamp changed since it was indexed,
    /// and drops the spaces this device can no longer read.
    async fn catch_up(&mut self) {
        let (Ok(spaces), Ok(status)) = (self.core.spaces().await, self.core.status().await) else {
            return;
        };
        let stamp: BTreeMap<SpaceId, u64> = status.iter().map(|s| (s.space, s.envelopes + s.sides)).collect();
        let readable: HashSet<SpaceId> = spaces.iter().filter(|s| s.readable).map(|s| s.space).collect();
        for gone in self
            .stamps
            .0
            .keys()
            .filter(|s| !readable.contains(s))
            .copied()
            .collect::<Vec<_>>()
        {
            self.index.remove_space(gone);
            self.stamps.0.remove(&gone);
            self.purge = true;
        }
        for s in spaces.iter().filter(|s| s.readable) {
            if self.stamps.0.get(&s.space) == stamp.get(&s.space) {
                continue;
            }
            match s.kind.as_str() {
                "chat" => self.deep.insert(s.space),
                "doc" => self.docs.insert(s.space),
                _ => false,
            };
        }
        self.flush().await;
    }

    /// Reads again what changed, then commits.
    async fn flush(&mut self) {
        if self.rooms.is_empty() && self.deep.is_empty() && self.docs.is_empty() && !self.added && !self.purge {
            return;
        }
        // Stamps read before the spaces are: a stamp never covers more than was indexed.
        let stamps: BTreeMap<SpaceId, u64> = match self.core.status().await {
            Ok(status) => status.iter().map(|s| (s.space, s.envelopes + s.sides)).collect(),
            Err(_) => return,
        };
        let deep = std::mem::take(&mut self.deep);
        let rooms = std::mem::take(&mut self.rooms);
        let reads = (deep.iter().map(|space| (*space, None))).chain(
            rooms
                .into_iter()
                .filter(|(space, _)| !deep.contains(space))
                .map(|(s, docs)| (s, Some(docs))),
        );
        for (space, docs) in reads {
            let deep = docs.is_none();
            let messages = match docs {
                None => self.core.messages(space, self.options.deep_read).await,
                Some(docs) => self.core.shard_messages(space, docs.into_iter().collect()).await,
            };
            match messages {
                Ok(messages) => {
                    self.reindex_room(space, &messages);
                    // Older messages than the read reached may have been
                    // retracted while nobody indexed.
                    if deep && messages.len() >= self.options.deep_read {
                        self.drop_retracted(space).await;
                    }
                    self.record(space, &stamps);
                }
                Err(core::Error::KeyMissing { .. } | core::Error::UnknownSpace(_)) => {
                    self.index.remove_space(space);
                    self.known.remove(&space);
                    self.purge = true;
                }
                Err(error) => debug!(%error, space = %space.fmt_short(), "room not indexed"),
            }
        }
        for space in std::mem::take(&mut self.docs) {
            let query = DocQuery::Show {
                at: None,
                format: DocFormat::Text,
            };
            match self.core.read_doc(space, query).await {
                Ok(DocAnswer::Show(view)) => {
                    let entry = Entry {
                        space,
                        kind: HitKind::Document,
                        id: None,
                        author: None,
                        user: None,
                        // When it was last written; a new one, when it was indexed.
                        at_ms: view.edited_ms.unwrap_or(crate::clock::now_ms() as i64),
                        text: format!("{}\n{}", view.name.unwrap_or_default(), view.content),
                    };
                    if let Err(error) = self.index.put(&entry) {
                        warn!(%error, "cannot index a document");
                    }
                    self.purge = true;
                    self.record(space, &stamps);
                }
                Ok(_) => {}
                Err(error) => debug!(%error, space = %space.fmt_short(), "document not indexed"),
            }
        }
        let (index, purge) = (self.index.clone(), std::mem::take(&mut self.purge));
        self.added = false;
        let committed = tokio::task::spawn_blocking(move || index.commit(purge)).await;
        match committed {
            Ok(Ok(())) => {
                if let Err(error) = self.stamps.save(&self.dir) {
                    warn!(%error, "cannot record what the search index holds; it is checked again at start");
                }
            }
            Ok(Err(error)) => {
                warn!(%error, "search index commit failed; every space is indexed again");
                self.forget_all();
            }
            Err(error) => {
                warn!(%error, "search index commit panicked; every space is indexed again");
                self.forget_all();
            }
        }
    }

    /// Nothing counts as indexed any more: the next pass reads every space.
    fn forget_all(&mut self) {
        self.stamps = Stamps::default();
        let _ = self.stamps.save(&self.dir);
        self.known.clear();
        self.purge = true;
        self.lost = true;
    }

    /// Brings a room's entries in line with `messages` (some of its
    /// messages: its latest, or those of the shards that changed): the first
    /// time in a run all of them, later only those whose text changed; those
    /// without text now (retracted) are deleted and purged. Entries of other
    /// messages are left as they are.
    fn reindex_room(&mut self, space: SpaceId, messages: &[MessageView]) {
        let known = self.known.entry(space).or_default();
        for m in messages {
            match message_entry(space, m) {
                Some(entry) => {
                    if known.get(&m.id) != Some(&entry.text) {
                        if let Err(error) = self.index.put(&entry) {
                            warn!(%error, "cannot index a message");
                        }
                        self.added = true;
                        known.insert(m.id.clone(), entry.text);
                    }
                }
                // Retracted (or never with text): gone from the index.
                None => {
                    if known.remove(&m.id).is_some() || m.retracted.is_some() {
                        self.index.remove(space, Some(&m.id));
                        self.purge = true;
                    }
                }
            }
        }
    }

    /// Removes the entries of every retracted message of a room.
    async fn drop_retracted(&mut self, space: SpaceId) {
        let ids = match self.core.retracted(space).await {
            Ok(ids) => ids,
            Err(error) => {
                debug!(%error, space = %space.fmt_short(), "retracted messages not known");
                return;
            }
        };
        let known = self.known.entry(space).or_default();
        for id in ids {
            known.remove(&id);
            self.index.remove(space, Some(&id));
            self.purge = true;
        }
    }

    fn record(&mut self, space: SpaceId, stamps: &BTreeMap<SpaceId, u64>) {
        match stamps.get(&space) {
            Some(stamp) => self.stamps.0.insert(space, *stamp),
            None => self.stamps.0.remove(&space),
        };
    }
}
