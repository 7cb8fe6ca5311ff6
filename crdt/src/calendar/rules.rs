//! The calendar rules, version 1: what a member's change may do to a calendar.
//!
//! The root and the events map are frozen after the genesis, except that a
//! member with write access may create an event (a new map under a new id).
//! Inside an event map only the known fields are written, each with its type
//! and size, and deleted only by editors. A reader (or any member) may answer
//! an invitation: put its own `attendee/<user>` answer on an existing event,
//! and nothing else. The organizer is set once, by the creating change, to its
//! author. Values that need parsing (times, rules) are checked for type and
//! size only: a consensus rule must not depend on a parser's version, and a
//! value that does not parse reads as absent.

use std::collections::HashMap;

use automerge::{
    Change, ObjType, ScalarValue,
    legacy::{Key, ObjectId, OpType},
};

use super::{
    ATTENDEE, CANCELLED, CREATED_AT, DESCRIPTION, EXDATE, LOCATION, ORGANIZER, OVERRIDE, PRIVATE, RDATE, REMIND, RULE,
    Rsvp, SEAL, SEAL_COMMIT, SEALED, TITLE, UID, WHEN,
};
use crate::{Author, text::OpRef};

/// Longest event id.
pub const MAX_ID_BYTES: usize = 64;
/// Longest field key (prefix, occurrence key and field name).
const MAX_KEY_BYTES: usize = 256;
/// Longest title, location, uid or rule.
pub const MAX_SHORT_BYTES: usize = 1 << 10;
/// Longest description.
pub const MAX_DESCRIPTION_BYTES: usize = 16 << 10;
/// Longest stored time.
const MAX_WHEN_BYTES: usize = 128;
/// What sealing adds to a field: a nonce and an AEAD tag, with room to spare.
const SEALING_BYTES: usize = 64;
/// Longest wrap of a private event's key for one device.
const MAX_WRAP_BYTES: usize = 256;
/// Latest reminder: four weeks before, in minutes.
pub const MAX_REMINDER_MINUTES: u32 = 4 * 7 * 24 * 60;

/// Why a change breaks the calendar rules (version [`super::RULES_VERSION`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("the change has no dependencies (every change descends from the genesis)")]
    NoDeps,
    #[error("the change touches the root or the events map other than by creating an event")]
    Schema,
    #[error("event id is empty or longer than {MAX_ID_BYTES} bytes")]
    EventId,
    #[error("only members with write access create and edit events")]
    NotEditor,
    #[error("each member answers only for itself (others may only be invited)")]
    ReaderWrite,
    #[error("an op on an object this document does not hold (yet)")]
    UnknownObject,
    #[error("unknown event field `{0}`")]
    Field(String),
    #[error("event field `{0}` has the wrong type or size")]
    Value(String),
    #[error("the organizer is set once, by the event's creator, to itself")]
    Organizer,
    #[error("event field `{0}` is set once, by the change creating the event")]
    SetOnce(String),
}

impl Violation {
    /// A fixed description, for logs and counters.
    pub fn reason(&self) -> &'static str {
        match self {
            Violation::NoDeps => "calendar rules: a change without dependencies",
            Violation::Schema => "calendar rules: touches the schema",
            Violation::EventId => "calendar rules: bad event id",
            Violation::NotEditor => "calendar rules: a reader edits events",
            Violation::ReaderWrite => "calendar rules: a reader writes more than its answer",
            Violation::UnknownObject => "calendar rules: unknown object",
            Violation::Field(_) => "calendar rules: unknown field",
            Violation::Value(_) => "calendar rules: bad field value",
            Violation::Organizer => "calendar rules: organizer is not the creator",
            Violation::SetOnce(_) => "calendar rules: a set-once field changed",
        }
    }
}

/// Checks `change`'s ops, written by `author`. `events` is the events map;
/// `object_type` gives the type of an object the change did not create;
/// `existed` says whether an event id was taken in the change's causal past
/// (the same answer on every node, whatever else it holds).
pub(super) fn check(
    change: &Change,
    events: &OpRef,
    author: &Author,
    object_type: &dyn Fn(&OpRef) -> Option<ObjType>,
    existed: &dyn Fn(&str) -> bool,
) -> Result<(), Violation> {
    if change.deps().is_empty() {
        return Err(Violation::NoDeps);
    }
    let start = change.start_op().get();
    let actor = change.actor_id();
    // Events this change creates.
    let mut created: HashMap<OpRef, ()> = HashMap::new();
    for (i, op) in change.decode().operations.into_iter().enumerate() {
        let id: OpRef = (start + i as u64, actor.clone());
        let obj: OpRef = match op.obj {
            ObjectId::Root => return Err(Violation::Schema),
            ObjectId::Id(id) => (id.0, id.1),
        };
        let Key::Map(key) = &op.key else {
            return Err(Violation::Schema);
        };
        if op.insert {
            return Err(Violation::Schema);
        }
        if obj == *events {
            if !matches!(op.action, OpType::Make(ObjType::Map)) || !op.pred.is_empty() {
                return Err(Violation::Schema);
            }
            if key.is_empty() || key.len() > MAX_ID_BYTES {
                return Err(Violation::EventId);
            }
            if !author.may_edit() {
                return Err(Violation::NotEditor);
            }
            // A second map under a taken id would hide the first event.
            if existed(key) {
                return Err(Violation::Schema);
            }
            created.insert(id, ());
            continue;
        }
        // Every other map in a calendar is an event (nothing else may be made).
        let new = created.contains_key(&obj);
        if !new && object_type(&obj) != Some(ObjType::Map) {
            return Err(match object_type(&obj) {
                None => Violation::UnknownObject,
                Some(_) => Violation::Schema,
            });
        }
        if !author.may_edit() {
            // A reader's one write: its own answer.
            let own = key.strip_prefix(ATTENDEE) == Some(author.user.as_str());
            let answer = matches!(&op.action, OpType::Put(ScalarValue::Str(s)) if Rsvp::parse(s).is_some());
            if !own || !answer || new {
                return Err(Violation::ReaderWrite);
            }
            continue;
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(Violation::Field(key.chars().take(64).collect()));
        }
        // Set once, by the creating change: who made it, whether it is
        // private, and the private key's commitment (so no later writer can
        // make a private event public or swap its key).
        let once = [ORGANIZER, UID, PRIVATE, SEAL_COMMIT].contains(&key.as_str());
        match &op.action {
            OpType::Delete => {
                if once || key.starts_with(SEAL) {
                    return Err(Violation::SetOnce(key.to_string()));
                }
                field_kind(key)?;
            }
            OpType::Put(_) if once && !new => return Err(Violation::SetOnce(key.to_string())),
            OpType::Put(value) => {
                if key.as_str() == ORGANIZER {
                    match value {
                        ScalarValue::Str(user) if user.as_str() == author.user => continue,
                        _ => return Err(Violation::Organizer),
                    }
                }
                if !field_kind(key)?.accepts(value) {
                    return Err(Violation::Value(key.to_string()));
                }
                // An editor invites (or un-answers) others; each answers for itself.
                if let (Some(user), ScalarValue::Str(answer)) = (key.strip_prefix(ATTENDEE), value)
                    && user != author.user
                    && answer.as_str() != Rsvp::NeedsAction.as_str()
                {
                    return Err(Violation::ReaderWrite);
                }
            }
            _ => return Err(Violation::Value(key.to_string())),
        }
    }
    Ok(())
}

/// What a field holds.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Text(usize),
    Bytes(usize),
    Flag,
    Time,
    Answer,
}

impl Kind {
    fn accepts(self, value: &ScalarValue) -> bool {
        match (self, value) {
            (Kind::Text(max), ScalarValue::Str(s)) => s.len() <= max,
            (Kind::Bytes(max), ScalarValue::Bytes(b)) => b.len() <= max,
            (Kind::Flag, ScalarValue::Boolean(_)) => true,
            (Kind::Time, ScalarValue::Timestamp(_)) => true,
            (Kind::Answer, ScalarValue::Str(s)) => Rsvp::parse(s).is_some(),
            _ => false,
        }
    }
}

/// The kind of the field stored under `key`.
fn field_kind(key: &str) -> Result<Kind, Violation> {
    let unknown = || Violation::Field(key.chars().take(64).collect());
    // A text field, or its sealed form (a private event's).
    let plain = |name: &str| match name {
        TITLE | LOCATION => Some(Kind::Text(MAX_SHORT_BYTES)),
        DESCRIPTION => Some(Kind::Text(MAX_DESCRIPTION_BYTES)),
        WHEN => Some(Kind::Text(MAX_WHEN_BYTES)),
        _ => match name.strip_prefix(SEALED)? {
            TITLE | LOCATION => Some(Kind::Bytes(MAX_SHORT_BYTES + SEALING_BYTES)),
            DESCRIPTION => Some(Kind::Bytes(MAX_DESCRIPTION_BYTES + SEALING_BYTES)),
            _ => None,
        },
    };
    if let Some(kind) = plain(key) {
        return Ok(kind);
    }
    match key {
        UID | RULE => return Ok(Kind::Text(MAX_SHORT_BYTES)),
        PRIVATE | CANCELLED => return Ok(Kind::Flag),
        CREATED_AT => return Ok(Kind::Time),
        _ => {}
    }
    let occurrence_key = |k: &str| !k.is_empty() && k.len() <= 32 && k.bytes().all(|b| b.is_ascii_alphanumeric());
    if let Some(k) = key.strip_prefix(RDATE).or_else(|| key.strip_prefix(EXDATE)) {
        return if occurrence_key(k) {
            Ok(Kind::Flag)
        } else {
            Err(unknown())
        };
    }
    match key.strip_prefix(SEAL) {
        Some("commit") => return Ok(Kind::Bytes(32)),
        Some(to) if to.strip_prefix("to/").is_some_and(|d| !d.is_empty() && d.len() <= 128) => {
            return Ok(Kind::Bytes(MAX_WRAP_BYTES));
        }
        Some(_) => return Err(unknown()),
        None => {}
    }
    if let Some(user) = key.strip_prefix(ATTENDEE) {
        return if !user.is_empty() && user.len() <= 128 {
            Ok(Kind::Answer)
        } else {
            Err(unknown())
        };
    }
    if let Some(m) = key.strip_prefix(REMIND) {
        return match m.parse::<u32>() {
            Ok(m) if m <= MAX_REMINDER_MINUTES && key == format!("{REMIND}{m}") => Ok(Kind::Flag),
            _ => Err(unknown()),
        };
    }
    if let Some((k, field)) = key.strip_prefix(OVERRIDE).and_then(|k| k.split_once('/'))
        && occurrence_key(k)
    {
        return plain(field).ok_or_else(unknown);
    }
    Err(unknown())
}
