//! The chat rules, version 2: what a change to a chat document may do, checked
//! op by op before it reaches Automerge, with the change's [`Author`] (its user
//! and role, read by the node from the control log at the envelope's causal
//! point). A pure function of the change, the fixed schema and the author, so
//! every node decides identically.
//!
//! - `messages`, `edits`: only new entries (`Make(Map)`, no predecessor, an id of
//!   `[a-z0-9]{1,64}`), whose fields are each set once by the creating change,
//!   with their types and sizes; a message needs a body, an edit a target and a
//!   body. Nobody changes or deletes an entry, so nobody rewrites another's
//!   message. (An edit names any target; only its author's edits show, which
//!   every node decides alike from the signed authors.)
//! - `reactions`: a key `TARGET USER EMOJI` set to `true` or deleted, only with
//!   the author's own user: nobody reacts for someone else.
//! - `retracted`: a ref set to a timestamp (never deleted). It carries the
//!   tombstone; whether the retraction takes effect is the tombstone's rule.
//! - `room`: owners and admins only, known keys with their types and sizes
//!   (`copy/REF` set to a body id: a message sealed again for later members).
//! - Nothing else: not the root, not the schema.

use automerge::{
    Change, ObjId, ObjType, ScalarValue,
    legacy::{Key, ObjectId, OpId, OpType},
};

use super::{
    Checked, Edit, MAX_ID_BYTES, MAX_MENTIONS, MAX_REACTION_BYTES, MAX_RETRACT_WINDOW_S, MAX_TOPIC_BYTES,
    MAX_WELCOME_BYTES, Message, RoomWrite, Schema, Write, parse_ref,
};
use crate::Author;

use std::collections::BTreeSet;

/// Chat validation rules implemented here; a space names the version it follows.
pub const RULES_VERSION: u16 = 2;

/// Why a change breaks the chat rules (version [`RULES_VERSION`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("the change has no dependencies (every change descends from the genesis)")]
    NoDeps,
    #[error("the change touches an object it may not (the schema or another entry)")]
    ForeignObject,
    #[error("only new entries may be created in the message and edit maps")]
    MessageMapOp,
    #[error("a message id is empty, longer than {MAX_ID_BYTES} bytes, or not lowercase letters and digits")]
    MessageId,
    #[error("an entry field is unknown, of the wrong type or size, or set twice")]
    EntryField,
    #[error("a message needs a body; an edit a target and a body")]
    MissingField,
    #[error("a reaction is malformed (TARGET USER EMOJI set to true, or deleted)")]
    Reaction,
    #[error("a reaction may only be the author's own")]
    NotYours,
    #[error("a retraction names a malformed message or is not a timestamp")]
    Retraction,
    #[error("only owners and admins change the room's settings")]
    NotAdmin,
    #[error("a room setting is unknown, of the wrong type, or too long")]
    RoomField,
    #[error("readers do not post")]
    NotWriter,
}

impl Violation {
    /// A fixed description, for logs and counters.
    pub fn reason(&self) -> &'static str {
        match self {
            Violation::NoDeps => "chat rules: a change without dependencies",
            Violation::ForeignObject => "chat rules: touches the schema or another entry",
            Violation::MessageMapOp => "chat rules: not a new entry",
            Violation::MessageId => "chat rules: bad message id",
            Violation::EntryField => "chat rules: bad entry field",
            Violation::MissingField => "chat rules: entry without its required fields",
            Violation::Reaction => "chat rules: bad reaction",
            Violation::NotYours => "chat rules: a reaction for someone else",
            Violation::Retraction => "chat rules: bad retraction",
            Violation::NotAdmin => "chat rules: room settings by a non-admin",
            Violation::RoomField => "chat rules: bad room setting",
            Violation::NotWriter => "chat rules: a post by a reader",
        }
    }
}

/// A message id: `[a-z0-9]{1,64}`.
pub(crate) fn is_message_id(id: &str) -> bool {
    (1..=MAX_ID_BYTES).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// 64 lowercase hex digits: a body id or a user id.
fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_ref(s: &str) -> bool {
    parse_ref(s).is_some()
}

/// A reaction: one emoji or short word, 1–[`MAX_REACTION_BYTES`] bytes, no whitespace.
pub fn is_reaction(e: &str) -> bool {
    !e.is_empty() && e.len() <= MAX_REACTION_BYTES && !e.chars().any(char::is_whitespace)
}

/// A reaction key's (target, user, emoji), when well formed.
pub(crate) fn parse_reaction_key(key: &str) -> Option<(&str, &str, &str)> {
    let mut parts = key.splitn(3, ' ');
    let (target, user, emoji) = (parts.next()?, parts.next()?, parts.next()?);
    (is_ref(target) && is_hex64(user) && is_reaction(emoji)).then_some((target, user, emoji))
}

fn mentions_ok(m: &str) -> bool {
    let users: Vec<&str> = m.split(' ').collect();
    (1..=MAX_MENTIONS).contains(&users.len()) && users.iter().all(|u| is_hex64(u))
}

/// A room setting's key and value, when allowed.
fn room_field_ok(key: &str, value: &OpType) -> bool {
    match (key, value) {
        ("topic", OpType::Put(ScalarValue::Str(t))) => t.len() <= MAX_TOPIC_BYTES,
        ("welcome", OpType::Put(ScalarValue::Str(t))) => t.len() <= MAX_WELCOME_BYTES,
        ("announcement", OpType::Put(ScalarValue::Str(t))) => t.is_empty() || is_ref(t),
        ("retract_window", OpType::Put(ScalarValue::Int(s))) => (0..=MAX_RETRACT_WINDOW_S).contains(s),
        (key, OpType::Put(ScalarValue::Boolean(true)) | OpType::Delete) => key.strip_prefix("pin/").is_some_and(is_ref),
        (key, OpType::Put(ScalarValue::Str(body))) => key.strip_prefix("copy/").is_some_and(is_ref) && is_hex64(body),
        _ => false,
    }
}

/// Checks a local write against the same rules, before anything is written.
pub(crate) fn check_write(w: &Write, author: &Author) -> Result<(), Violation> {
    let ok = |cond: bool, v: Violation| if cond { Ok(()) } else { Err(v) };
    match w {
        Write::Post(m) => {
            ok(author.may_edit(), Violation::NotWriter)?;
            ok(is_message_id(&m.id), Violation::MessageId)?;
            ok(is_hex64(&m.body), Violation::EntryField)?;
            ok(m.reply_to.as_deref().is_none_or(is_ref), Violation::EntryField)?;
            ok(
                m.mentions.is_empty() || mentions_ok(&m.mentions.join(" ")),
                Violation::EntryField,
            )
        }
        Write::Edit { id, target, body } => {
            ok(author.may_edit(), Violation::NotWriter)?;
            ok(is_message_id(id), Violation::MessageId)?;
            ok(is_ref(target) && is_hex64(body), Violation::EntryField)
        }
        Write::React { target, emoji, .. } => {
            ok(author.may_edit(), Violation::NotWriter)?;
            ok(
                is_ref(target) && is_hex64(&author.user) && is_reaction(emoji),
                Violation::Reaction,
            )
        }
        Write::Retract { target } => ok(is_ref(target), Violation::Retraction),
        Write::Room(room) => {
            ok(author.admin, Violation::NotAdmin)?;
            let (key, value) = match room {
                RoomWrite::Topic(t) => ("topic".to_string(), OpType::Put(ScalarValue::Str(t.as_str().into()))),
                RoomWrite::Welcome(t) => ("welcome".to_string(), OpType::Put(ScalarValue::Str(t.as_str().into()))),
                RoomWrite::Announcement(t) => (
                    "announcement".to_string(),
                    OpType::Put(ScalarValue::Str(t.as_deref().unwrap_or("").into())),
                ),
                RoomWrite::RetractWindow(s) => ("retract_window".to_string(), OpType::Put(ScalarValue::Int(*s))),
                RoomWrite::Pin(target, on) => (
                    format!("pin/{target}"),
                    if *on {
                        OpType::Put(ScalarValue::Boolean(true))
                    } else {
                        OpType::Delete
                    },
                ),
                RoomWrite::Copy { target, body } => (
                    format!("copy/{target}"),
                    OpType::Put(ScalarValue::Str(body.as_str().into())),
                ),
            };
            ok(room_field_ok(&key, &value), Violation::RoomField)
        }
    }
}

/// What an entry created by the change is, with the fields it has set.
enum Entry {
    Message(Message, Vec<String>),
    Edit(Edit, Vec<String>),
}

fn legacy(id: &ObjId) -> ObjectId {
    match id {
        ObjId::Id(counter, actor, _) => ObjectId::Id(OpId(*counter, actor.clone())),
        ObjId::Root => ObjectId::Root,
    }
}

pub(super) fn validate(schema: &Schema, change: Change, author: &Author) -> Result<Checked, Violation> {
    if change.deps().is_empty() {
        return Err(Violation::NoDeps);
    }
    let [messages, edits, reactions, retracted, room] = [
        &schema.messages,
        &schema.edits,
        &schema.reactions,
        &schema.retracted,
        &schema.room,
    ]
    .map(legacy);
    let start = change.start_op().get();
    let actor = change.actor_id().clone();
    let mut entries: Vec<(OpId, Entry)> = Vec::new();
    let mut retractions = Vec::new();
    let mut updates = false;
    // The documents whose messages the markers of this change name.
    let mut targets = BTreeSet::new();
    let mut target = |r: &str| targets.extend(parse_ref(r).map(|(doc, _)| doc));
    let mut rebodied = BTreeSet::new();
    for (i, op) in change.decode().operations.into_iter().enumerate() {
        let Key::Map(key) = &op.key else {
            return Err(Violation::ForeignObject);
        };
        if op.insert {
            return Err(Violation::ForeignObject);
        }
        let counter = start + i as u64;
        if op.obj == messages || op.obj == edits {
            if !op.pred.is_empty() || !matches!(op.action, OpType::Make(ObjType::Map)) {
                return Err(Violation::MessageMapOp);
            }
            if !is_message_id(key) {
                return Err(Violation::MessageId);
            }
            if !author.may_edit() {
                return Err(Violation::NotWriter);
            }
            let entry = if op.obj == messages {
                Entry::Message(
                    Message {
                        id: key.to_string(),
                        body: String::new(),
                        sent_at_ms: 0,
                        reply_to: None,
                        mentions: Vec::new(),
                        all: false,
                        actor: actor.clone(),
                        lamport: counter,
                    },
                    Vec::new(),
                )
            } else {
                updates = true;
                Entry::Edit(
                    Edit {
                        id: key.to_string(),
                        target: String::new(),
                        body: String::new(),
                        sent_at_ms: 0,
                        actor: actor.clone(),
                        lamport: counter,
                    },
                    Vec::new(),
                )
            };
            entries.push((OpId(counter, actor.clone()), entry));
            continue;
        }
        if op.obj == reactions {
            let (reacted, user, _) = parse_reaction_key(key).ok_or(Violation::Reaction)?;
            if !matches!(op.action, OpType::Put(ScalarValue::Boolean(true)) | OpType::Delete) {
                return Err(Violation::Reaction);
            }
            if user != author.user || !author.may_edit() {
                return Err(Violation::NotYours);
            }
            target(reacted);
            updates = true;
            continue;
        }
        if op.obj == retracted {
            if !is_ref(key) || !matches!(op.action, OpType::Put(ScalarValue::Timestamp(_))) {
                return Err(Violation::Retraction);
            }
            target(key);
            rebodied.insert(key.to_string());
            retractions.push(key.to_string());
            updates = true;
            continue;
        }
        if op.obj == room {
            if !author.admin {
                return Err(Violation::NotAdmin);
            }
            if !room_field_ok(key, &op.action) {
                return Err(Violation::RoomField);
            }
            if let Some(copied) = key.strip_prefix("copy/") {
                rebodied.insert(copied.to_string());
            }
            updates = true;
            continue;
        }
        let ObjectId::Id(obj) = &op.obj else {
            return Err(Violation::ForeignObject);
        };
        let (_, entry) = entries
            .iter_mut()
            .find(|(id, _)| id == obj)
            .ok_or(Violation::ForeignObject)?;
        let fields = match entry {
            Entry::Message(_, f) | Entry::Edit(_, f) => f,
        };
        if !op.pred.is_empty() || fields.iter().any(|f| f == key.as_str()) {
            return Err(Violation::EntryField);
        }
        fields.push(key.to_string());
        match (entry, key.as_str(), op.action) {
            (Entry::Message(m, _), "body", OpType::Put(ScalarValue::Str(s))) if is_hex64(&s) => m.body = s.to_string(),
            (Entry::Message(m, _), "sent_at", OpType::Put(ScalarValue::Timestamp(t))) => m.sent_at_ms = t,
            (Entry::Message(m, _), "reply_to", OpType::Put(ScalarValue::Str(s))) if is_ref(&s) => {
                m.reply_to = Some(s.to_string())
            }
            (Entry::Message(m, _), "mentions", OpType::Put(ScalarValue::Str(s))) if mentions_ok(&s) => {
                m.mentions = s.split(' ').map(str::to_string).collect()
            }
            (Entry::Message(m, _), "all", OpType::Put(ScalarValue::Boolean(true))) => m.all = true,
            (Entry::Edit(e, _), "target", OpType::Put(ScalarValue::Str(s))) if is_ref(&s) => e.target = s.to_string(),
            (Entry::Edit(e, _), "body", OpType::Put(ScalarValue::Str(s))) if is_hex64(&s) => e.body = s.to_string(),
            (Entry::Edit(e, _), "sent_at", OpType::Put(ScalarValue::Timestamp(t))) => e.sent_at_ms = t,
            _ => return Err(Violation::EntryField),
        }
    }
    let mut created = Vec::new();
    let mut new_edits = Vec::new();
    for (_, entry) in entries {
        match entry {
            Entry::Message(m, _) if !m.body.is_empty() => created.push(m),
            Entry::Edit(e, _) if !e.body.is_empty() && !e.target.is_empty() => {
                target(&e.target);
                rebodied.insert(e.target.clone());
                new_edits.push(e)
            }
            _ => return Err(Violation::MissingField),
        }
    }
    Ok(Checked {
        change,
        created,
        edits: new_edits,
        retractions,
        updates,
        targets,
        rebodied,
    })
}
