//! Chat rooms: message *skeletons* in Automerge, their text outside it.
//!
//! Automerge keeps every value it was ever given (deleted text stays in `save()`
//! and in every change), so a message's text could never be retracted if it lived
//! here. The document holds a skeleton per message that names its *body*, a
//! separately sealed blob the node stores and deletes on its own (see the node's
//! `chat` module); the text never enters the document.
//!
//! Schema (created by genesis, so no container is ever made twice):
//!
//! ```text
//! ROOT.messages : Map<id, Map{ body, sent_at, reply_to?, mentions?, all? }>
//! ROOT.edits    : Map<id, Map{ target, body, sent_at }>   a new body for a message
//! ROOT.reactions: Map<"TARGET USER EMOJI", true>           one user's reaction
//! ROOT.retracted: Map<TARGET, Timestamp>                   carries a retraction
//! ROOT.room     : Map{ topic, welcome, announcement, retract_window, pin/TARGET,
//!                       copy/TARGET }
//! ```
//!
//! Message ids are `[a-z0-9]{1,64}`; a message is named across the room's
//! documents by its *ref*, `DOC:ID` (32 hex digits of the document id, a colon,
//! the id), so an edit or a reaction written into a newer document (a later
//! epoch's) can point at an older one. A body is named by 64 hex digits.
//!
//! Display order is (Lamport counter of the creating op, actor): it respects
//! causality and is identical on every node. The author of an entry is not a
//! field: it is the actor that created it, which the node maps to a device and a
//! user through the signed envelope that carried it.

mod rules;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Mutex,
};

use automerge::{
    ActorId, Automerge, Change, ChangeHash, ObjId, ObjType, ROOT, ReadDoc, ScalarValue, Value,
    transaction::{CommitOptions, Transactable},
};

pub use rules::{RULES_VERSION, Violation, is_reaction};

use crate::{Author, DocId, Error, genesis};

const MESSAGES: &str = "messages";
const EDITS: &str = "edits";
const REACTIONS: &str = "reactions";
const RETRACTED: &str = "retracted";
const ROOM: &str = "room";
/// Longest message id accepted in a change (node ids are 16 characters).
pub const MAX_ID_BYTES: usize = 64;
/// Longest message text a body may hold, in bytes.
pub const MAX_TEXT_BYTES: usize = 64 << 10;
/// Most users one message mentions by name.
pub const MAX_MENTIONS: usize = 64;
/// Longest reaction (an emoji or a short word), in bytes.
pub const MAX_REACTION_BYTES: usize = 32;
/// Longest room topic, in bytes.
pub const MAX_TOPIC_BYTES: usize = 1 << 10;
/// Longest welcome message, in bytes.
pub const MAX_WELCOME_BYTES: usize = 4 << 10;
/// Longest retraction window an admin may set: ten years, in seconds.
pub const MAX_RETRACT_WINDOW_S: i64 = 10 * 366 * 24 * 3600;
/// The retraction window of a room whose admins set none: a day.
pub const DEFAULT_RETRACT_WINDOW_S: i64 = 24 * 3600;

/// A message to post. Its text is in the body named by `body`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// Unique message id (chosen by the node; never reused).
    pub id: String,
    /// The body's id (64 hex digits).
    pub body: String,
    /// The ref of the message this one answers.
    pub reply_to: Option<String>,
    /// Users mentioned (64 hex digits each).
    pub mentions: Vec<String>,
    /// Mentions everyone in the room (`@all`).
    pub all: bool,
}

/// A room setting only owners and admins change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomWrite {
    Topic(String),
    Welcome(String),
    /// The room's pinned announcement (a message ref), or none.
    Announcement(Option<String>),
    /// How long (seconds) authors may retract their own messages.
    RetractWindow(i64),
    /// Pins (true) or unpins a message.
    Pin(String, bool),
    /// A copy of the message `target` (its current text, sealed again in the
    /// body `body`, under this document's epoch): what members who cannot
    /// read `target`'s document are shown when it is announced or pinned.
    Copy {
        target: String,
        body: String,
    },
}

/// One write into a chat document; [`ChatDoc::write`] makes a change of several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Post(NewMessage),
    /// A new body for the message `target` (only its author's edits show).
    Edit {
        id: String,
        target: String,
        body: String,
    },
    /// The author's reaction `emoji` on `target`, added or taken back.
    React {
        target: String,
        emoji: String,
        on: bool,
    },
    /// Carries the retraction of `target` (its tombstone travels with this change).
    Retract {
        target: String,
    },
    Room(RoomWrite),
}

/// A message skeleton as every node reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: String,
    /// The body's id (64 hex digits).
    pub body: String,
    /// Milliseconds since the Unix epoch, as claimed by the author.
    pub sent_at_ms: i64,
    pub reply_to: Option<String>,
    pub mentions: Vec<String>,
    pub all: bool,
    /// The actor that created the entry.
    pub actor: ActorId,
    /// Lamport counter of the creating op: the primary display order key.
    pub lamport: u64,
}

/// An edit: a new body for `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub id: String,
    pub target: String,
    pub body: String,
    pub sent_at_ms: i64,
    pub actor: ActorId,
    pub lamport: u64,
}

/// A user's reaction on a message.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reaction {
    pub target: String,
    pub user: String,
    pub emoji: String,
}

/// A copy of a message, written by an owner or admin (see [`RoomWrite::Copy`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// The ref of the message copied.
    pub target: String,
    /// The body holding the copy (64 hex digits), written as `actor`.
    pub body: String,
    pub actor: ActorId,
}

/// A retraction carried by the document: who wrote it and when they claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retraction {
    pub target: String,
    pub at_ms: i64,
    pub actor: ActorId,
}

/// The room's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Room {
    pub topic: Option<String>,
    pub welcome: Option<String>,
    pub announcement: Option<String>,
    /// Seconds; [`DEFAULT_RETRACT_WINDOW_S`] when never set.
    pub retract_window_s: i64,
    /// Pinned message refs, sorted.
    pub pins: Vec<String>,
}

impl Room {
    /// Whether nothing was ever set (every field at its default).
    pub fn is_unset(&self) -> bool {
        self.topic.is_none()
            && self.welcome.is_none()
            && self.announcement.is_none()
            && self.pins.is_empty()
            && self.retract_window_s == DEFAULT_RETRACT_WINDOW_S
    }

    /// The writes that set these settings in a document that has none.
    pub fn writes(&self) -> Vec<RoomWrite> {
        let mut out = Vec::new();
        out.extend(self.topic.clone().map(RoomWrite::Topic));
        out.extend(self.welcome.clone().map(RoomWrite::Welcome));
        if let Some(a) = &self.announcement {
            out.push(RoomWrite::Announcement(Some(a.clone())));
        }
        if self.retract_window_s != DEFAULT_RETRACT_WINDOW_S {
            out.push(RoomWrite::RetractWindow(self.retract_window_s));
        }
        out.extend(self.pins.iter().map(|p| RoomWrite::Pin(p.clone(), true)));
        out
    }
}

/// A change that passed [`ChatDoc::validate`], with what it creates.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    change: Change,
    created: Vec<Message>,
    edits: Vec<Edit>,
    retractions: Vec<String>,
    /// Whether it touches anything beyond new messages (edits, reactions,
    /// retractions, room settings): the node refreshes what it shows.
    updates: bool,
    /// The documents holding the messages its edits, reactions and
    /// retractions name (as their refs say).
    targets: BTreeSet<DocId>,
    /// The refs of the messages it gives a body (an edit, a copy) or retracts.
    rebodied: BTreeSet<String>,
}

impl Checked {
    pub fn change(&self) -> &Change {
        &self.change
    }

    /// The messages the change creates, in op order.
    pub fn created(&self) -> &[Message] {
        &self.created
    }

    /// The edits the change creates.
    pub fn edits(&self) -> &[Edit] {
        &self.edits
    }

    /// The refs whose retraction the change carries.
    pub fn retractions(&self) -> &[String] {
        &self.retractions
    }

    /// Whether the change does more than post messages.
    pub fn updates(&self) -> bool {
        self.updates
    }

    /// The documents whose messages its edits, reactions and retractions name.
    pub fn targets(&self) -> &BTreeSet<DocId> {
        &self.targets
    }

    /// The refs of the messages it edits, copies or retracts: where a body
    /// and a retraction may have crossed.
    pub fn rebodied(&self) -> &BTreeSet<String> {
        &self.rebodied
    }
}

/// The objects of the schema, as the rules and writes need them.
#[derive(Debug, Clone)]
pub(crate) struct Schema {
    pub(crate) messages: ObjId,
    pub(crate) edits: ObjId,
    pub(crate) reactions: ObjId,
    pub(crate) retracted: ObjId,
    pub(crate) room: ObjId,
}

impl Schema {
    fn of(doc: &Automerge) -> Option<Self> {
        let map = |key: &str| match doc.get(ROOT, key) {
            Ok(Some((Value::Object(ObjType::Map), id))) => Some(id),
            _ => None,
        };
        Some(Self {
            messages: map(MESSAGES)?,
            edits: map(EDITS)?,
            reactions: map(REACTIONS)?,
            retracted: map(RETRACTED)?,
            room: map(ROOM)?,
        })
    }
}

/// One chat document (a shard of a room, or a from-join room's epoch).
#[derive(Debug)]
pub struct ChatDoc {
    pub(crate) doc: Automerge,
    pub(crate) schema: Schema,
    genesis: ChangeHash,
    /// The messages in display order, read from the document once and then
    /// kept up to date as messages are written and applied: reading a
    /// message's fields from Automerge costs microseconds each, so showing
    /// the latest messages of a shard of thousands must not read them all.
    /// `None` until first needed, and again after the document was changed
    /// behind this model's back ([`ChatDoc::automerge_mut`]).
    order: Mutex<Option<Order>>,
}

/// Messages by display key (Lamport counter, actor bytes).
type Order = BTreeMap<(u64, Vec<u8>), Message>;

fn order_key(m: &Message) -> (u64, Vec<u8>) {
    (m.lamport, m.actor.to_bytes().to_vec())
}

impl ChatDoc {
    /// A document at genesis.
    pub fn new(doc_id: DocId) -> Self {
        let (doc, genesis) = Self::genesis(&doc_id);
        let schema = Schema::of(&doc).expect("genesis creates the schema");
        Self {
            doc,
            schema,
            genesis,
            order: Mutex::new(None),
        }
    }

    /// The hash of this document's genesis change: the one dependency of a
    /// writer's first change when nothing else is there.
    pub fn genesis_hash(&self) -> ChangeHash {
        self.genesis
    }

    /// The genesis document and the hash of its only change.
    pub fn genesis(doc_id: &DocId) -> (Automerge, ChangeHash) {
        genesis::build(doc_id, |tx| {
            for map in [MESSAGES, EDITS, REACTIONS, RETRACTED, ROOM] {
                tx.put_object(ROOT, map, ObjType::Map)?;
            }
            Ok(())
        })
    }

    /// Posts messages as `actor` in one transaction, producing one change.
    pub fn post(&mut self, actor: ActorId, author: &Author, msgs: &[NewMessage], now_ms: i64) -> Result<Change, Error> {
        let writes: Vec<Write> = msgs.iter().cloned().map(Write::Post).collect();
        self.write(actor, author, &writes, now_ms)
    }

    /// Makes `writes` as `actor`, written by `author`, in one change.
    ///
    /// Each write is checked against the chat rules first (the same checks
    /// [`ChatDoc::validate`] applies), so nothing is written when one is refused.
    /// `now_ms` is the author's wall clock, recorded as a claim, never used to order.
    pub fn write(&mut self, actor: ActorId, author: &Author, writes: &[Write], now_ms: i64) -> Result<Change, Error> {
        for w in writes {
            rules::check_write(w, author).map_err(|v| Error::Rules(crate::Violation::Chat(v)))?;
        }
        self.doc.set_actor(actor);
        let s = self.schema.clone();
        let mut posted = Vec::new();
        let mut tx = self.doc.transaction();
        for w in writes {
            match w {
                Write::Post(m) => {
                    let entry = tx.put_object(&s.messages, m.id.as_str(), ObjType::Map)?;
                    if let ObjId::Id(lamport, actor, _) = &entry {
                        posted.push(Message {
                            id: m.id.clone(),
                            body: m.body.clone(),
                            sent_at_ms: now_ms,
                            reply_to: m.reply_to.clone(),
                            mentions: m.mentions.clone(),
                            all: m.all,
                            actor: actor.clone(),
                            lamport: *lamport,
                        });
                    }
                    tx.put(&entry, "body", m.body.as_str())?;
                    tx.put(&entry, "sent_at", ScalarValue::Timestamp(now_ms))?;
                    if let Some(target) = &m.reply_to {
                        tx.put(&entry, "reply_to", target.as_str())?;
                    }
                    if !m.mentions.is_empty() {
                        tx.put(&entry, "mentions", m.mentions.join(" "))?;
                    }
                    if m.all {
                        tx.put(&entry, "all", true)?;
                    }
                }
                Write::Edit { id, target, body } => {
                    let entry = tx.put_object(&s.edits, id.as_str(), ObjType::Map)?;
                    tx.put(&entry, "target", target.as_str())?;
                    tx.put(&entry, "body", body.as_str())?;
                    tx.put(&entry, "sent_at", ScalarValue::Timestamp(now_ms))?;
                }
                Write::React { target, emoji, on } => {
                    let key = reaction_key(target, &author.user, emoji);
                    if *on {
                        tx.put(&s.reactions, key, true)?;
                    } else if tx.get(&s.reactions, key.as_str())?.is_some() {
                        tx.delete(&s.reactions, key)?;
                    }
                }
                Write::Retract { target } => {
                    tx.put(&s.retracted, target.as_str(), ScalarValue::Timestamp(now_ms))?;
                }
                Write::Room(room) => match room {
                    RoomWrite::Topic(t) => tx.put(&s.room, "topic", t.as_str())?,
                    RoomWrite::Welcome(t) => tx.put(&s.room, "welcome", t.as_str())?,
                    RoomWrite::Announcement(Some(target)) => tx.put(&s.room, "announcement", target.as_str())?,
                    RoomWrite::Announcement(None) => tx.put(&s.room, "announcement", "")?,
                    RoomWrite::RetractWindow(secs) => tx.put(&s.room, "retract_window", ScalarValue::Int(*secs))?,
                    RoomWrite::Pin(target, true) => tx.put(&s.room, format!("pin/{target}"), true)?,
                    RoomWrite::Pin(target, false) => {
                        let key = format!("pin/{target}");
                        if tx.get(&s.room, key.as_str())?.is_some() {
                            tx.delete(&s.room, key)?;
                        }
                    }
                    RoomWrite::Copy { target, body } => tx.put(&s.room, format!("copy/{target}"), body.as_str())?,
                },
            }
        }
        let (hash, _) = tx.commit_with(CommitOptions::default().with_time(now_ms));
        let hash = hash.ok_or(Error::EmptyChange)?;
        self.note_created(&posted);
        self.doc.get_change_by_hash(&hash).ok_or(Error::EmptyChange)
    }

    /// Adds messages now in the document to the display order (if it was built).
    fn note_created(&mut self, created: &[Message]) {
        let order = self.order.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(order) = order {
            for m in created {
                order.insert(order_key(m), m.clone());
            }
        }
    }

    /// Runs `f` on the display order, reading it from the document first if needed.
    fn with_order<R>(&self, f: impl FnOnce(&Order) -> R) -> R {
        let mut order = self.order.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let order = order.get_or_insert_with(|| {
            self.entries(&self.schema.messages, read_message)
                .into_iter()
                .map(|m| (order_key(&m), m))
                .collect()
        });
        f(order)
    }

    /// The document for changes this model does not see: the display order
    /// is read again at its next use.
    pub(crate) fn automerge_mut(&mut self) -> &mut Automerge {
        *self.order.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        &mut self.doc
    }

    /// Checks `change`, written by `author`, against the chat rules before it
    /// may be applied, and reads what it creates from its ops (so applying
    /// needs no document reads).
    pub fn validate(&self, change: Change, author: &Author) -> Result<Checked, Violation> {
        rules::validate(&self.schema, change, author)
    }

    /// Validates and applies remote changes, each by `author`, in one call
    /// (Automerge's apply costs time proportional to the document on every
    /// call, so callers batch). Returns the messages created, in display order.
    pub fn apply(&mut self, changes: Vec<Change>, author: &Author) -> Result<Vec<Message>, Error> {
        let checked = changes
            .into_iter()
            .map(|c| self.validate(c, author))
            .collect::<Result<Vec<_>, _>>()
            .map_err(crate::Violation::Chat)?;
        self.apply_checked(checked)
    }

    /// Applies changes that passed [`ChatDoc::validate`], in one call.
    pub fn apply_checked(&mut self, checked: Vec<Checked>) -> Result<Vec<Message>, Error> {
        let mut created = Vec::new();
        let changes: Vec<Change> = checked
            .into_iter()
            .map(|c| {
                created.extend(c.created);
                c.change
            })
            .collect();
        self.doc.apply_changes(changes)?;
        sort_for_display(&mut created);
        self.note_created(&created);
        Ok(created)
    }

    /// One message by id.
    pub fn message(&self, id: &str) -> Option<Message> {
        let (value, entry) = self.doc.get(&self.schema.messages, id).ok()??;
        if !matches!(value, Value::Object(ObjType::Map)) {
            return None;
        }
        read_message(&self.doc, id, entry)
    }

    /// Every entry under message id `id` (writers may reuse an id concurrently).
    pub fn entries_named(&self, id: &str) -> Vec<Message> {
        self.doc
            .get_all(&self.schema.messages, id)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(_, entry)| read_message(&self.doc, id, entry))
            .collect()
    }

    /// How many message entries the document holds.
    pub fn len(&self) -> usize {
        self.doc.length(&self.schema.messages)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every message, in display order.
    ///
    /// When writers created the same id concurrently, every entry shows: a writer
    /// cannot hide another's message by reusing its id.
    pub fn messages(&self) -> Vec<Message> {
        self.with_order(|order| order.values().cloned().collect())
    }

    /// The last `n` messages, in display order.
    pub fn latest(&self, n: usize) -> Vec<Message> {
        self.with_order(|order| {
            let mut out: Vec<Message> = order.values().rev().take(n).cloned().collect();
            out.reverse();
            out
        })
    }

    /// Every edit, in display order (so the last one for a target is its newest).
    pub fn edits(&self) -> Vec<Edit> {
        let mut out: Vec<Edit> = self.entries(&self.schema.edits, read_edit);
        out.sort_by(|a, b| (a.lamport, a.actor.to_bytes()).cmp(&(b.lamport, b.actor.to_bytes())));
        out
    }

    /// Every entry of `map` read by `read`, concurrent entries under one key included.
    fn entries<T>(&self, map: &ObjId, read: impl Fn(&Automerge, &str, ObjId) -> Option<T>) -> Vec<T> {
        let mut out = Vec::new();
        for item in self.doc.map_range(map, ..) {
            let key = item.key.to_string();
            if item.conflict {
                let all = self.doc.get_all(map, key.as_str()).unwrap_or_default();
                out.extend(all.into_iter().filter_map(|(_, id)| read(&self.doc, &key, id)));
            } else {
                out.extend(read(&self.doc, &key, item.id()));
            }
        }
        out
    }

    /// Every reaction that stands, sorted.
    pub fn reactions(&self) -> Vec<Reaction> {
        let mut out: Vec<Reaction> = self
            .doc
            .map_range(&self.schema.reactions, ..)
            .filter_map(|item| {
                let value: Value<'static> = item.value.into();
                if value != Value::Scalar(std::borrow::Cow::Owned(ScalarValue::Boolean(true))) {
                    return None;
                }
                let (target, user, emoji) = rules::parse_reaction_key(&item.key)?;
                Some(Reaction {
                    target: target.into(),
                    user: user.into(),
                    emoji: emoji.into(),
                })
            })
            .collect();
        out.sort();
        out
    }

    /// Every retraction the document carries (one per ref: the winning write).
    pub fn retractions(&self) -> Vec<Retraction> {
        self.doc
            .map_range(&self.schema.retracted, ..)
            .filter_map(|item| {
                let ObjId::Id(_, actor, _) = item.id() else {
                    return None;
                };
                match Value::from(item.value) {
                    Value::Scalar(s) => match s.as_ref() {
                        ScalarValue::Timestamp(t) => Some(Retraction {
                            target: item.key.to_string(),
                            at_ms: *t,
                            actor,
                        }),
                        _ => None,
                    },
                    Value::Object(_) => None,
                }
            })
            .collect()
    }

    /// The room's settings.
    pub fn room(&self) -> Room {
        let mut room = Room {
            retract_window_s: DEFAULT_RETRACT_WINDOW_S,
            ..Room::default()
        };
        let mut pins = BTreeMap::new();
        for item in self.doc.map_range(&self.schema.room, ..) {
            let Value::Scalar(value) = Value::from(item.value) else {
                continue;
            };
            match (item.key.as_ref(), value.as_ref()) {
                ("topic", ScalarValue::Str(t)) => room.topic = Some(t.to_string()).filter(|t| !t.is_empty()),
                ("welcome", ScalarValue::Str(t)) => room.welcome = Some(t.to_string()).filter(|t| !t.is_empty()),
                ("announcement", ScalarValue::Str(t)) => {
                    room.announcement = Some(t.to_string()).filter(|t| !t.is_empty())
                }
                ("retract_window", ScalarValue::Int(s)) => room.retract_window_s = *s,
                (key, ScalarValue::Boolean(true)) => {
                    if let Some(target) = key.strip_prefix("pin/") {
                        pins.insert(target.to_string(), ());
                    }
                }
                _ => {}
            }
        }
        room.pins = pins.into_keys().collect();
        room
    }

    /// Every copy of a message the room holds (concurrent ones included).
    pub fn copies(&self) -> Vec<Copy> {
        let mut out = Vec::new();
        for item in self.doc.map_range(&self.schema.room, ..) {
            let Some(target) = item.key.strip_prefix("copy/") else {
                continue;
            };
            for (value, id) in self
                .doc
                .get_all(&self.schema.room, item.key.as_ref())
                .unwrap_or_default()
            {
                if let (Value::Scalar(s), ObjId::Id(_, actor, _)) = (value, id)
                    && let ScalarValue::Str(body) = s.as_ref()
                {
                    out.push(Copy {
                        target: target.to_string(),
                        body: body.to_string(),
                        actor,
                    });
                }
            }
        }
        out
    }

    /// The underlying document, for saving and inspection.
    pub fn automerge(&self) -> &Automerge {
        &self.doc
    }

    /// The whole document, compressed: what a snapshot seals.
    pub fn save(&self) -> Vec<u8> {
        self.doc.save()
    }

    /// Whether the change with this hash is part of the document.
    pub fn has_change(&self, hash: &ChangeHash) -> bool {
        self.doc.get_missing_deps(&[*hash]).is_empty()
    }

    /// Replaces the document with a merged one (after a snapshot absorb).
    pub(crate) fn replace(&mut self, doc: Automerge) {
        self.schema = Schema::of(&doc).expect("a checked snapshot has the genesis, which creates the schema");
        self.doc = doc;
        *self.order.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}

/// The ref naming message `id` of document `doc` across a room's documents.
pub fn msg_ref(doc: &DocId, id: &str) -> String {
    let mut out = String::with_capacity(33 + id.len());
    for b in doc.0 {
        out.push_str(&format!("{b:02x}"));
    }
    out.push(':');
    out.push_str(id);
    out
}

/// The document and id a ref names, when it is well formed.
pub fn parse_ref(target: &str) -> Option<(DocId, &str)> {
    let (doc, id) = target.split_once(':')?;
    if doc.len() != 32 || !rules::is_message_id(id) {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(doc.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    // Only the canonical lowercase spelling is a ref (one ref per message).
    (doc.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))).then_some((DocId(out), id))
}

/// The key of `user`'s reaction `emoji` on `target`.
fn reaction_key(target: &str, user: &str, emoji: &str) -> String {
    format!("{target} {user} {emoji}")
}

/// Display order: (Lamport counter of the creating op, actor). Identical everywhere.
pub(crate) fn sort_for_display(msgs: &mut [Message]) {
    msgs.sort_by(|a, b| (a.lamport, a.actor.to_bytes()).cmp(&(b.lamport, b.actor.to_bytes())));
}

/// The scalar `field` of the map `entry`.
fn scalar(doc: &Automerge, entry: &ObjId, field: &str) -> Option<ScalarValue> {
    match doc.get(entry, field) {
        Ok(Some((Value::Scalar(s), _))) => Some(s.into_owned()),
        _ => None,
    }
}

fn string(doc: &Automerge, entry: &ObjId, field: &str) -> Option<String> {
    match scalar(doc, entry, field)? {
        ScalarValue::Str(s) => Some(s.to_string()),
        _ => None,
    }
}

fn timestamp(doc: &Automerge, entry: &ObjId, field: &str) -> i64 {
    match scalar(doc, entry, field) {
        Some(ScalarValue::Timestamp(t)) => t,
        _ => 0,
    }
}

fn read_message(doc: &Automerge, id: &str, entry: ObjId) -> Option<Message> {
    let ObjId::Id(lamport, actor, _) = entry.clone() else {
        return None;
    };
    Some(Message {
        id: id.to_string(),
        body: string(doc, &entry, "body")?,
        sent_at_ms: timestamp(doc, &entry, "sent_at"),
        reply_to: string(doc, &entry, "reply_to"),
        mentions: string(doc, &entry, "mentions")
            .map(|m| m.split(' ').map(str::to_string).collect())
            .unwrap_or_default(),
        all: scalar(doc, &entry, "all") == Some(ScalarValue::Boolean(true)),
        actor,
        lamport,
    })
}

fn read_edit(doc: &Automerge, id: &str, entry: ObjId) -> Option<Edit> {
    let ObjId::Id(lamport, actor, _) = entry.clone() else {
        return None;
    };
    Some(Edit {
        id: id.to_string(),
        target: string(doc, &entry, "target")?,
        body: string(doc, &entry, "body")?,
        sent_at_ms: timestamp(doc, &entry, "sent_at"),
        actor,
        lamport,
    })
}

#[cfg(test)]
mod tests;
