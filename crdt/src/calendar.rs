//! Calendars: events as entries of one map, each event a flat map of fields.
//!
//! Schema (created by genesis): `ROOT.events: Map<event id, Map<field, scalar>>`.
//! An event's fields are scalars under fixed keys, and its sets and exceptions
//! are flattened into keys too (`exdate/20261202T090000`,
//! `override/20261202T090000/title`, `attendee/<user>`), never nested objects:
//! two people creating the same nested map offline would make two objects under
//! one key, and one side's fields would vanish. With one key per field, the
//! merge rules are Automerge's map rules, field by field:
//!
//! - Concurrent writes to *different* fields all survive (one moves the
//!   meeting, the other renames it: both show).
//! - Concurrent writes to the *same* field: one value wins, the same on every
//!   node (Automerge's order: the op with the higher Lamport counter, then actor).
//! - The time is one field (`when`: start, end and zone together), so two
//!   concurrent moves never mix one's start with the other's end.
//! - Sets (cancelled occurrences, extra dates, attendees, reminders) are keys:
//!   concurrent additions all survive.
//! - Cancelling the whole series sets `cancelled`; it is not a deletion, so a
//!   concurrent edit cannot resurrect half an event, and it wins over the edit.
//! - Exceptions follow their day when the series is moved ([`recur`]).
//!
//! Who may write what is the calendar rules ([`rules`]): members with write
//! access create and edit events; any member, readers included, answers an
//! invitation, but only for their own user.

pub mod ics;
mod recur;
pub mod rules;
pub mod time;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use automerge::{
    ActorId, Automerge, Change, ChangeHash, ObjId, ObjType, ROOT, ReadDoc, ScalarValue, ScalarValueRef, Value,
    ValueRef,
    transaction::{CommitOptions, Transactable, Transaction},
};
use chrono::{DateTime, Utc};

pub use recur::{MAX_OCCURRENCES, Overrides, RuleError, parse_key};
pub use rules::Violation;
use time::When;

use crate::{Author, DocId, Error, genesis, text::OpRef};

const EVENTS: &str = "events";

/// The calendar rules implemented here; a space names the version it follows.
pub const RULES_VERSION: u16 = 1;

/// An answer to an invitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rsvp {
    NeedsAction,
    Accepted,
    Declined,
    Tentative,
}

impl Rsvp {
    pub fn as_str(self) -> &'static str {
        match self {
            Rsvp::NeedsAction => "needs-action",
            Rsvp::Accepted => "accepted",
            Rsvp::Declined => "declined",
            Rsvp::Tentative => "tentative",
        }
    }

    pub fn parse(s: &str) -> Option<Rsvp> {
        Some(match s {
            "needs-action" => Rsvp::NeedsAction,
            "accepted" | "accept" => Rsvp::Accepted,
            "declined" | "decline" => Rsvp::Declined,
            "tentative" => Rsvp::Tentative,
            _ => return None,
        })
    }
}

/// An event series (or a single event) as every node reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: String,
    /// The iCalendar UID: kept through import and export.
    pub uid: String,
    /// The user who created it.
    pub organizer: String,
    pub title: String,
    pub location: String,
    pub description: String,
    /// `None` when the stored time does not parse (the event shows nowhere).
    pub when: Option<When>,
    /// The RRULE value, as written.
    pub rule: Option<String>,
    /// Extra occurrences (RDATE), as occurrence keys.
    pub rdates: BTreeSet<String>,
    /// Cancelled occurrences (EXDATE), as occurrence keys.
    pub exdates: BTreeSet<String>,
    /// Per-occurrence changes, by occurrence key.
    pub overrides: BTreeMap<String, Overrides>,
    pub attendees: BTreeMap<String, Rsvp>,
    /// Minutes before each occurrence to remind.
    pub reminders: BTreeSet<u32>,
    pub private: bool,
    pub cancelled: bool,
    /// The creator's clock when it created the event (a claim).
    pub created_at_ms: i64,
    /// A private event's text fields, sealed by the node (field name →
    /// ciphertext): only its people's devices hold the key.
    pub sealed: BTreeMap<String, Vec<u8>>,
    /// The sealing key's public parts (`commit`, `to/<device>` wraps).
    pub seal: BTreeMap<String, Vec<u8>>,
}

impl Event {
    /// An event `id` with no fields yet.
    pub fn empty(id: &str) -> Event {
        Event {
            id: id.to_string(),
            uid: String::new(),
            organizer: String::new(),
            title: String::new(),
            location: String::new(),
            description: String::new(),
            when: None,
            rule: None,
            rdates: BTreeSet::new(),
            exdates: BTreeSet::new(),
            overrides: BTreeMap::new(),
            attendees: BTreeMap::new(),
            reminders: BTreeSet::new(),
            private: false,
            cancelled: false,
            created_at_ms: 0,
            sealed: BTreeMap::new(),
            seal: BTreeMap::new(),
        }
    }
}

/// One occurrence of an event, with its exceptions applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occurrence {
    pub event: String,
    /// The occurrence's original local start (its RECURRENCE-ID).
    pub key: String,
    pub when: When,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub title: String,
    pub location: String,
    pub description: String,
    /// Part of a series.
    pub recurring: bool,
    /// Changed from the series for this occurrence alone.
    pub changed: bool,
}

/// Fields to set; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields {
    pub title: Option<String>,
    pub location: Option<String>,
    pub description: Option<String>,
    pub when: Option<When>,
    /// An RRULE value; an empty string makes the event single.
    pub rule: Option<String>,
    pub private: Option<bool>,
    /// Sealed text fields (`title`, `location`, `description` → ciphertext).
    pub sealed: BTreeMap<String, Vec<u8>>,
    /// Parts of the sealing key to add (`commit`, `to/<device>`); series only.
    pub seal: BTreeMap<String, Vec<u8>>,
}

/// An event's whole state, as an imported file gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventData {
    pub uid: String,
    pub title: String,
    pub location: String,
    pub description: String,
    pub when: When,
    pub rule: Option<String>,
    pub rdates: BTreeSet<String>,
    pub exdates: BTreeSet<String>,
    pub overrides: BTreeMap<String, Overrides>,
    pub reminders: BTreeSet<u32>,
    pub private: bool,
    pub cancelled: bool,
    /// Sealed text fields of a private event (the node fills them in).
    pub sealed: BTreeMap<String, Vec<u8>>,
}

/// Which occurrences an edit or cancellation applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The whole series.
    All,
    /// The one occurrence with this key.
    This(String),
}

/// One change to a calendar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// A new event; `fields` must give a title and a time.
    Add {
        id: String,
        uid: String,
        organizer: String,
        fields: Fields,
        attendees: Vec<String>,
        reminders: Vec<u32>,
    },
    Edit {
        id: String,
        scope: Scope,
        fields: Fields,
        invite: Vec<String>,
        uninvite: Vec<String>,
        /// Replaces the reminders when given.
        reminders: Option<Vec<u32>>,
    },
    Cancel {
        id: String,
        scope: Scope,
    },
    Rsvp {
        id: String,
        user: String,
        answer: Rsvp,
    },
    /// "This and following": the series `id` ends before its occurrence
    /// `key`, and a new series `new_id` (with `fields`, which the caller
    /// completes: title and time at least) goes on from there with the rest
    /// of the rule (a COUNT is shared out), the people, the reminders and the
    /// exceptions from `key` on. Splitting is what iCalendar clients do; see
    /// the module docs for how it merges.
    Split {
        id: String,
        key: String,
        new_id: String,
        new_uid: String,
        organizer: String,
        fields: Fields,
    },
    /// Ends the series `id` before its occurrence `key` (cancel "this and following").
    Truncate {
        id: String,
        key: String,
    },
    /// Makes the event with `data.uid` equal to `data` (creating it under
    /// [`id_for_uid`] if there is none), writing only the fields that differ:
    /// importing the same file twice writes nothing the second time.
    /// Attendees and answers are left as they are; `seal` adds the parts of a
    /// private event's key (see [`Fields::seal`]) it lacks.
    Import {
        organizer: String,
        data: EventData,
        seal: BTreeMap<String, Vec<u8>>,
    },
}

/// Why a write cannot be made (before any change exists).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    #[error("no event `{0}` in this calendar")]
    NoEvent(String),
    #[error("event `{0}` already exists")]
    Exists(String),
    #[error("a new event needs a title and a start")]
    Incomplete,
    #[error("event `{event}` has no occurrence `{key}`")]
    NoOccurrence { event: String, key: String },
    #[error("{0} applies to the whole series, not one occurrence: use --all")]
    SeriesOnly(&'static str),
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error("{0}")]
    Field(String),
}

/// A change that passed [`CalendarDoc::validate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    change: Change,
}

impl Checked {
    pub fn change(&self) -> &Change {
        &self.change
    }
}

/// One calendar document.
#[derive(Debug)]
pub struct CalendarDoc {
    doc: Automerge,
    events: ObjId,
    genesis: ChangeHash,
}

// Field keys inside an event map.
const UID: &str = "uid";
const ORGANIZER: &str = "organizer";
const CREATED_AT: &str = "created_at";
const TITLE: &str = "title";
const LOCATION: &str = "location";
const DESCRIPTION: &str = "description";
const WHEN: &str = "when";
const RULE: &str = "rrule";
const PRIVATE: &str = "private";
const CANCELLED: &str = "cancelled";
const RDATE: &str = "rdate/";
const EXDATE: &str = "exdate/";
const OVERRIDE: &str = "override/";
const ATTENDEE: &str = "attendee/";
const REMIND: &str = "remind/";
const SEALED: &str = "sealed-";
const SEAL: &str = "seal/";
const SEAL_COMMIT: &str = "seal/commit";

impl CalendarDoc {
    /// A calendar at genesis.
    pub fn new(doc_id: DocId) -> Self {
        let (doc, genesis) = Self::genesis(&doc_id);
        let events = events_object(&doc);
        Self { doc, events, genesis }
    }

    /// The genesis document and the hash of its only change.
    pub fn genesis(doc_id: &DocId) -> (Automerge, ChangeHash) {
        genesis::build(doc_id, |tx| {
            tx.put_object(ROOT, EVENTS, ObjType::Map)?;
            Ok(())
        })
    }

    pub fn genesis_hash(&self) -> ChangeHash {
        self.genesis
    }

    /// Makes `writes` as `actor`, in one change. Each write is checked against
    /// the calendar as it is (events exist, occurrences exist, rules parse).
    pub fn write(&mut self, actor: ActorId, writes: &[Write], now_ms: i64) -> Result<Change, Error> {
        for w in writes {
            self.check_write(w).map_err(Error::Calendar)?;
        }
        let events = self.events.clone();
        let by_uid = self.ids_by_uid(writes);
        write_all(&mut self.doc, &events, actor, writes, &by_uid, now_ms)
    }

    /// [`CalendarDoc::write`], made on a copy and checked against the
    /// calendar rules for `author` and a size (`max_bytes`, what one envelope
    /// takes) before the document takes it: a change every other node would
    /// refuse, or that cannot be sealed, never enters this one.
    pub fn write_as(
        &mut self,
        author: &Author,
        actor: ActorId,
        writes: &[Write],
        now_ms: i64,
        max_bytes: usize,
    ) -> Result<Change, Error> {
        for w in writes {
            self.check_write(w).map_err(Error::Calendar)?;
        }
        let by_uid = self.ids_by_uid(writes);
        let mut copy = self.doc.fork();
        let change = write_all(&mut copy, &self.events, actor, writes, &by_uid, now_ms)?;
        if change.raw_bytes().len() > max_bytes {
            return Err(Error::TooLarge(change.raw_bytes().len()));
        }
        let checked = self
            .validate(change, author)
            .map_err(|v| Error::Rules(crate::Violation::Calendar(v)))?;
        self.doc.apply_changes([checked.change.clone()])?;
        Ok(checked.change)
    }

    /// Imports find their event by UID (an event made here and exported comes
    /// back with the UID it left with).
    fn ids_by_uid(&self, writes: &[Write]) -> HashMap<String, String> {
        if writes.iter().any(|w| matches!(w, Write::Import { .. })) {
            self.events().into_iter().map(|e| (e.uid, e.id)).collect()
        } else {
            HashMap::new()
        }
    }

    fn check_write(&self, w: &Write) -> Result<(), WriteError> {
        let exists = |id: &str| self.event(id).ok_or_else(|| WriteError::NoEvent(id.to_string()));
        let check_rule = |rule: &Option<String>, when: Option<When>| -> Result<(), WriteError> {
            match (rule.as_deref().filter(|r| !r.is_empty()), when) {
                (Some(rule), Some(when)) => recur::Rule::parse(rule, &when).map(|_| ()).map_err(WriteError::from),
                _ => Ok(()),
            }
        };
        let check_scope = |event: &Event, scope: &Scope| match scope {
            Scope::All => Ok(()),
            Scope::This(key) => {
                let found = match (event.when, parse_key(key)) {
                    (Some(when), Some(start)) => event.is_occurrence(&when, start),
                    _ => false,
                };
                if found {
                    Ok(())
                } else {
                    Err(WriteError::NoOccurrence {
                        event: event.id.clone(),
                        key: key.clone(),
                    })
                }
            }
        };
        match w {
            Write::Add { id, fields, .. } => {
                if self.event(id).is_some() {
                    return Err(WriteError::Exists(id.clone()));
                }
                let titled = fields.title.is_some() || fields.sealed.contains_key(TITLE);
                if !titled || fields.when.is_none() {
                    return Err(WriteError::Incomplete);
                }
                check_rule(&fields.rule, fields.when)
            }
            Write::Edit { id, scope, fields, .. } => {
                let event = exists(id)?;
                check_scope(&event, scope)?;
                if let Scope::This(_) = scope {
                    if fields.rule.is_some() {
                        return Err(WriteError::SeriesOnly("the recurrence rule"));
                    }
                    if fields.private.is_some() {
                        return Err(WriteError::SeriesOnly("privacy"));
                    }
                }
                let rule = fields.rule.clone().or(event.rule.clone());
                check_rule(&rule, fields.when.or(event.when))
            }
            Write::Cancel { id, scope } => check_scope(&exists(id)?, scope),
            Write::Split { id, key, .. } | Write::Truncate { id, key } => {
                let event = exists(id)?;
                check_scope(&event, &Scope::This(key.clone()))?;
                if let Write::Split { fields, new_id, .. } = w {
                    let titled = fields.title.is_some() || fields.sealed.contains_key(TITLE);
                    if !titled || fields.when.is_none() {
                        return Err(WriteError::Incomplete);
                    }
                    if self.event(new_id).is_some() {
                        return Err(WriteError::Exists(new_id.clone()));
                    }
                }
                recur::split_rule(&event, key).map(|_| ()).map_err(WriteError::from)
            }
            Write::Import { data, .. } => check_rule(&data.rule, Some(data.when)),
            Write::Rsvp { id, .. } => exists(id).map(|_| ()),
        }
    }

    /// Checks `change` against the calendar rules for `author`.
    pub fn validate(&self, change: Change, author: &Author) -> Result<Checked, Violation> {
        self.validate_with(change, author, &|_| None)
    }

    /// [`CalendarDoc::validate`], with `pending` giving the objects created by
    /// changes applied before this one but not yet.
    pub fn validate_with(
        &self,
        change: Change,
        author: &Author,
        pending: &dyn Fn(&OpRef) -> Option<ObjType>,
    ) -> Result<Checked, Violation> {
        let events = match &self.events {
            ObjId::Id(counter, actor, _) => (*counter, actor.clone()),
            ObjId::Root => unreachable!("the events map is created by the genesis"),
        };
        let held = |obj: &OpRef| crate::text::object_type(&self.doc, obj).or_else(|| pending(obj));
        // Whether an event id was taken in the change's causal past. The node
        // applies calendar changes as they are accepted, so their
        // dependencies are in the document (a replay at start-up checks
        // changes accepted before; their dependencies may be pending).
        let deps = change.deps().to_vec();
        let known = self.doc.get_missing_deps(&deps).is_empty();
        let existed = |id: &str| known && matches!(self.doc.get_at(&self.events, id, &deps), Ok(Some(_)));
        rules::check(&change, &events, author, &held, &existed)?;
        Ok(Checked { change })
    }

    /// Validates and applies remote changes by `author` in one call.
    pub fn apply(&mut self, changes: Vec<Change>, author: &Author) -> Result<(), Error> {
        let checked = changes
            .into_iter()
            .map(|c| self.validate(c, author).map(|c| c.change))
            .collect::<Result<Vec<_>, _>>()
            .map_err(crate::Violation::Calendar)?;
        self.doc.apply_changes(checked)?;
        Ok(())
    }

    /// One event by id.
    pub fn event(&self, id: &str) -> Option<Event> {
        match self.doc.get(&self.events, id) {
            Ok(Some((Value::Object(ObjType::Map), obj))) => Some(read_event(&self.doc, id, &obj)),
            _ => None,
        }
    }

    /// Every event, by id.
    pub fn events(&self) -> Vec<Event> {
        self.doc
            .map_range(&self.events, ..)
            .filter(|item| matches!(item.value, ValueRef::Object(ObjType::Map)))
            .map(|item| read_event(&self.doc, &item.key, &item.id()))
            .collect()
    }

    /// The event imported with `uid`, if any.
    pub fn event_by_uid(&self, uid: &str) -> Option<Event> {
        self.events().into_iter().find(|e| e.uid == uid)
    }

    pub fn automerge(&self) -> &Automerge {
        &self.doc
    }

    pub(crate) fn automerge_mut(&mut self) -> &mut Automerge {
        &mut self.doc
    }

    pub fn has_change(&self, hash: &ChangeHash) -> bool {
        self.doc.get_missing_deps(&[*hash]).is_empty()
    }

    /// Replaces the document with a merged one (after a snapshot absorb).
    pub(crate) fn replace(&mut self, doc: Automerge) {
        self.events = events_object(&doc);
        self.doc = doc;
    }
}

/// The id an event imported with `uid` by `actor` gets. An import that
/// finds the UID updates that event instead; two imports made concurrently
/// on two devices make two events (both show) rather than one hiding the other.
pub fn id_for_uid(uid: &str, actor: &ActorId) -> String {
    let mut input = actor.to_bytes().to_vec();
    input.extend_from_slice(uid.as_bytes());
    let hash = blake3::derive_key("outpost/calendar/event-id/v1", &input);
    hash[..10].iter().map(|b| format!("{b:02x}")).collect()
}

/// Makes `writes` as `actor` in one transaction on `doc`.
fn write_all(
    doc: &mut Automerge,
    events: &ObjId,
    actor: ActorId,
    writes: &[Write],
    by_uid: &HashMap<String, String>,
    now_ms: i64,
) -> Result<Change, Error> {
    doc.set_actor(actor.clone());
    let mut tx = doc.transaction();
    for w in writes {
        match w {
            Write::Import { organizer, data, seal } => {
                let id = by_uid
                    .get(&data.uid)
                    .cloned()
                    .unwrap_or_else(|| id_for_uid(&data.uid, &actor));
                import_one(&mut tx, events, &id, organizer, data, seal, now_ms)?
            }
            _ => write_one(&mut tx, events, w, now_ms)?,
        }
    }
    let (hash, _) = tx.commit_with(CommitOptions::default().with_time(now_ms));
    let hash = hash.ok_or(Error::EmptyChange)?;
    doc.get_change_by_hash(&hash).ok_or(Error::EmptyChange)
}

fn events_object(doc: &Automerge) -> ObjId {
    match doc.get(ROOT, EVENTS) {
        Ok(Some((Value::Object(ObjType::Map), id))) => id,
        _ => unreachable!("the genesis creates the events map"),
    }
}

fn write_one(tx: &mut Transaction<'_>, events: &ObjId, w: &Write, now_ms: i64) -> Result<(), Error> {
    let event_obj = |tx: &Transaction<'_>, id: &str| match tx.get(events, id) {
        Ok(Some((Value::Object(ObjType::Map), obj))) => Ok(obj),
        _ => Err(Error::Calendar(WriteError::NoEvent(id.to_string()))),
    };
    match w {
        Write::Add {
            id,
            uid,
            organizer,
            fields,
            attendees,
            reminders,
        } => {
            let obj = tx.put_object(events, id.as_str(), ObjType::Map)?;
            tx.put(&obj, UID, uid.as_str())?;
            tx.put(&obj, ORGANIZER, organizer.as_str())?;
            tx.put(&obj, CREATED_AT, ScalarValue::Timestamp(now_ms))?;
            put_fields(tx, &obj, "", fields)?;
            for user in attendees {
                tx.put(&obj, format!("{ATTENDEE}{user}"), Rsvp::NeedsAction.as_str())?;
            }
            for minutes in reminders {
                tx.put(&obj, format!("{REMIND}{minutes}"), true)?;
            }
        }
        Write::Edit {
            id,
            scope,
            fields,
            invite,
            uninvite,
            reminders,
        } => {
            let obj = event_obj(tx, id)?;
            match scope {
                Scope::All => {
                    put_fields(tx, &obj, "", fields)?;
                    // "All occurrences" means every one shows the new value:
                    // clear the per-occurrence values of the fields given.
                    // (A private event's fields come sealed.)
                    let given = |f: &str, clear: bool| clear || fields.sealed.contains_key(f);
                    let given = [
                        (TITLE, given(TITLE, fields.title.is_some())),
                        (LOCATION, given(LOCATION, fields.location.is_some())),
                        (DESCRIPTION, given(DESCRIPTION, fields.description.is_some())),
                        (WHEN, fields.when.is_some()),
                    ];
                    let stale: Vec<String> = tx
                        .map_range(&obj, OVERRIDE.to_string()..)
                        .map(|item| item.key.to_string())
                        .take_while(|k| k.starts_with(OVERRIDE))
                        .filter(|k| {
                            given.iter().any(|(f, on)| {
                                *on && (k.ends_with(&format!("/{f}")) || k.ends_with(&format!("/{SEALED}{f}")))
                            })
                        })
                        .collect();
                    for key in stale {
                        tx.delete(&obj, key)?;
                    }
                }
                Scope::This(key) => put_fields(tx, &obj, &format!("{OVERRIDE}{key}/"), fields)?,
            }
            let current: BTreeMap<String, Rsvp> = read_event(tx, id, &obj).attendees;
            for user in invite.iter().filter(|u| !current.contains_key(*u)) {
                tx.put(&obj, format!("{ATTENDEE}{user}"), Rsvp::NeedsAction.as_str())?;
            }
            for user in uninvite.iter().filter(|u| current.contains_key(*u)) {
                tx.delete(&obj, format!("{ATTENDEE}{user}"))?;
            }
            if let Some(reminders) = reminders {
                let now = read_event(tx, id, &obj).reminders;
                for gone in now.iter().filter(|m| !reminders.contains(m)) {
                    tx.delete(&obj, format!("{REMIND}{gone}"))?;
                }
                for new in reminders.iter().filter(|m| !now.contains(m)) {
                    tx.put(&obj, format!("{REMIND}{new}"), true)?;
                }
            }
        }
        Write::Cancel { id, scope } => {
            let obj = event_obj(tx, id)?;
            match scope {
                Scope::All => tx.put(&obj, CANCELLED, true)?,
                Scope::This(key) => tx.put(&obj, format!("{EXDATE}{key}"), true)?,
            }
        }
        Write::Rsvp { id, user, answer } => {
            let obj = event_obj(tx, id)?;
            tx.put(&obj, format!("{ATTENDEE}{user}"), answer.as_str())?;
        }
        Write::Split {
            id,
            key,
            new_id,
            new_uid,
            organizer,
            fields,
        } => {
            let obj = event_obj(tx, id)?;
            let event = read_event(tx, id, &obj);
            let (before, after) = recur::split_rule(&event, key).map_err(WriteError::from)?;
            let moved = truncate(tx, &obj, key, &before)?;
            let new = tx.put_object(events, new_id.as_str(), ObjType::Map)?;
            tx.put(&new, UID, new_uid.as_str())?;
            tx.put(&new, ORGANIZER, organizer.as_str())?;
            tx.put(&new, CREATED_AT, ScalarValue::Timestamp(now_ms))?;
            let mut fields = fields.clone();
            if fields.rule.is_none() {
                fields.rule = Some(after);
            }
            put_fields(tx, &new, "", &fields)?;
            for (k, value) in moved {
                tx.put(&new, k, value)?;
            }
            // Each person answers the new series again (only the author may
            // carry its own answer over).
            for (user, answer) in &event.attendees {
                let answer = if *user == *organizer {
                    *answer
                } else {
                    Rsvp::NeedsAction
                };
                tx.put(&new, format!("{ATTENDEE}{user}"), answer.as_str())?;
            }
            // The series' organizer stays one of its people.
            if event.organizer != *organizer && !event.attendees.contains_key(&event.organizer) {
                tx.put(
                    &new,
                    format!("{ATTENDEE}{}", event.organizer),
                    Rsvp::NeedsAction.as_str(),
                )?;
            }
            for minutes in &event.reminders {
                tx.put(&new, format!("{REMIND}{minutes}"), true)?;
            }
        }
        Write::Truncate { id, key } => {
            let obj = event_obj(tx, id)?;
            let event = read_event(tx, id, &obj);
            let (before, _) = recur::split_rule(&event, key).map_err(WriteError::from)?;
            truncate(tx, &obj, key, &before)?;
        }
        Write::Import { .. } => unreachable!("imports are written by import_one"),
    }
    Ok(())
}

/// Ends a series before its occurrence `key` with the rule `before`: the
/// extra dates and exceptions from `key` on leave it. Returns those that move
/// to the part after (sealed texts stay: they are bound to this event).
fn truncate(
    tx: &mut Transaction<'_>,
    obj: &ObjId,
    key: &str,
    before: &str,
) -> Result<Vec<(String, ScalarValue)>, Error> {
    tx.put(obj, RULE, before)?;
    let from = parse_key(key);
    let later = |k: &str| parse_key(k).is_some_and(|t| Some(t) >= from);
    let mut moved = Vec::new();
    let keys: Vec<(String, ScalarValue)> = tx
        .map_range(obj, ..)
        .filter_map(|item| match &item.value {
            ValueRef::Scalar(v) => Some((item.key.to_string(), ScalarValue::from(v))),
            _ => None,
        })
        .collect();
    for (k, value) in keys {
        let occurrence = k.strip_prefix(RDATE).or_else(|| k.strip_prefix(EXDATE)).or_else(|| {
            k.strip_prefix(OVERRIDE)
                .and_then(|rest| rest.split_once('/'))
                .map(|(o, _)| o)
        });
        if occurrence.is_some_and(&later) {
            if !k.contains(SEALED) {
                moved.push((k.clone(), value));
            }
            tx.delete(obj, k.as_str())?;
        }
    }
    Ok(moved)
}

/// Makes event `id` hold `data`, writing only the keys that differ.
fn import_one(
    tx: &mut Transaction<'_>,
    events: &ObjId,
    id: &str,
    organizer: &str,
    data: &EventData,
    seal: &BTreeMap<String, Vec<u8>>,
    now_ms: i64,
) -> Result<(), Error> {
    let obj = match tx.get(events, id)? {
        Some((Value::Object(ObjType::Map), obj)) => obj,
        _ => {
            let obj = tx.put_object(events, id, ObjType::Map)?;
            tx.put(&obj, UID, data.uid.as_str())?;
            tx.put(&obj, ORGANIZER, organizer)?;
            tx.put(&obj, CREATED_AT, ScalarValue::Timestamp(now_ms))?;
            obj
        }
    };
    let wanted = flatten(data);
    // Everything but identity, the attendees' answers and the sealing key's
    // parts is the file's.
    let managed =
        |k: &str| ![UID, ORGANIZER, CREATED_AT].contains(&k) && !k.starts_with(ATTENDEE) && !k.starts_with(SEAL);
    let mut have: BTreeMap<String, ScalarValue> = BTreeMap::new();
    for item in tx.map_range(&obj, ..) {
        if let ValueRef::Scalar(v) = &item.value
            && managed(&item.key)
        {
            have.insert(item.key.to_string(), ScalarValue::from(v));
        }
    }
    for key in have.keys().filter(|k| !wanted.contains_key(*k)) {
        tx.delete(&obj, key.as_str())?;
    }
    for (key, value) in wanted {
        if have.get(&key) != Some(&value) {
            tx.put(&obj, key, value)?;
        }
    }
    for (name, bytes) in seal {
        let key = format!("{SEAL}{name}");
        if tx.get(&obj, key.as_str())?.is_none() {
            tx.put(&obj, key, ScalarValue::Bytes(bytes.clone()))?;
        }
    }
    Ok(())
}

/// An event's stored keys and values (false flags are absent keys).
fn flatten(d: &EventData) -> BTreeMap<String, ScalarValue> {
    let mut out: BTreeMap<String, ScalarValue> = BTreeMap::new();
    let mut text = |key: String, value: &str| {
        if !value.is_empty() {
            out.insert(key, ScalarValue::Str(value.into()));
        }
    };
    text(TITLE.into(), &d.title);
    text(LOCATION.into(), &d.location);
    text(DESCRIPTION.into(), &d.description);
    text(WHEN.into(), &d.when.to_string());
    text(RULE.into(), d.rule.as_deref().unwrap_or(""));
    for (key, o) in &d.overrides {
        let fields = [
            (TITLE, &o.title),
            (LOCATION, &o.location),
            (DESCRIPTION, &o.description),
            (WHEN, &o.when),
        ];
        for (field, value) in fields {
            if let Some(value) = value {
                out.insert(
                    format!("{OVERRIDE}{key}/{field}"),
                    ScalarValue::Str(value.as_str().into()),
                );
            }
        }
        for (field, bytes) in &o.sealed {
            out.insert(
                format!("{OVERRIDE}{key}/{SEALED}{field}"),
                ScalarValue::Bytes(bytes.clone()),
            );
        }
    }
    for (field, bytes) in &d.sealed {
        out.insert(format!("{SEALED}{field}"), ScalarValue::Bytes(bytes.clone()));
    }
    let flags = d
        .rdates
        .iter()
        .map(|k| format!("{RDATE}{k}"))
        .chain(d.exdates.iter().map(|k| format!("{EXDATE}{k}")))
        .chain(d.reminders.iter().map(|m| format!("{REMIND}{m}")))
        .chain(d.private.then(|| PRIVATE.to_string()))
        .chain(d.cancelled.then(|| CANCELLED.to_string()));
    for key in flags {
        out.insert(key, ScalarValue::Boolean(true));
    }
    out
}

/// Puts the given fields under `prefix` (empty for the series, or an
/// occurrence's override prefix).
fn put_fields(tx: &mut Transaction<'_>, obj: &ObjId, prefix: &str, f: &Fields) -> Result<(), Error> {
    let texts = [
        (TITLE, &f.title),
        (LOCATION, &f.location),
        (DESCRIPTION, &f.description),
    ];
    for (name, value) in texts {
        if let Some(value) = value {
            tx.put(obj, format!("{prefix}{name}"), value.as_str())?;
        }
    }
    if let Some(when) = &f.when {
        tx.put(obj, format!("{prefix}{WHEN}"), when.to_string())?;
    }
    match f.rule.as_deref() {
        Some("") if tx.get(obj, RULE)?.is_some() => tx.delete(obj, RULE)?,
        Some("") => {}
        Some(rule) => tx.put(obj, RULE, rule)?,
        None => {}
    }
    if let Some(private) = f.private {
        tx.put(obj, PRIVATE, private)?;
    }
    for (name, bytes) in &f.sealed {
        tx.put(
            obj,
            format!("{prefix}{SEALED}{name}"),
            ScalarValue::Bytes(bytes.clone()),
        )?;
    }
    for (name, bytes) in &f.seal {
        tx.put(obj, format!("{SEAL}{name}"), ScalarValue::Bytes(bytes.clone()))?;
    }
    Ok(())
}

fn read_event(doc: &impl ReadDoc, id: &str, obj: &ObjId) -> Event {
    let mut e = Event::empty(id);
    for item in doc.map_range(obj, ..) {
        let key: &str = &item.key;
        let ValueRef::Scalar(value) = &item.value else { continue };
        let text = match value {
            ScalarValueRef::Str(s) => Some(s.to_string()),
            _ => None,
        };
        let flag = matches!(value, ScalarValueRef::Boolean(true));
        let bytes = match value {
            ScalarValueRef::Bytes(b) => Some(b.to_vec()),
            _ => None,
        };
        match key {
            UID => e.uid = text.unwrap_or_default(),
            ORGANIZER => e.organizer = text.unwrap_or_default(),
            TITLE => e.title = text.unwrap_or_default(),
            LOCATION => e.location = text.unwrap_or_default(),
            DESCRIPTION => e.description = text.unwrap_or_default(),
            WHEN => e.when = text.and_then(|t| t.parse().ok()),
            RULE => e.rule = text.filter(|r| !r.is_empty()),
            PRIVATE => e.private = flag,
            CANCELLED => e.cancelled = flag,
            CREATED_AT => {
                if let ScalarValueRef::Timestamp(t) = value {
                    e.created_at_ms = *t;
                }
            }
            _ => {
                if let Some(k) = key.strip_prefix(RDATE).filter(|_| flag) {
                    e.rdates.insert(k.to_string());
                } else if let Some(k) = key.strip_prefix(EXDATE).filter(|_| flag) {
                    e.exdates.insert(k.to_string());
                } else if let Some(user) = key.strip_prefix(ATTENDEE) {
                    if let Some(answer) = text.as_deref().and_then(Rsvp::parse) {
                        e.attendees.insert(user.to_string(), answer);
                    }
                } else if let Some(m) = key.strip_prefix(REMIND).filter(|_| flag) {
                    if let Ok(m) = m.parse() {
                        e.reminders.insert(m);
                    }
                } else if let Some((occurrence, field)) = key.strip_prefix(OVERRIDE).and_then(|k| k.rsplit_once('/')) {
                    let o = e.overrides.entry(occurrence.to_string()).or_default();
                    match field {
                        TITLE => o.title = text,
                        LOCATION => o.location = text,
                        DESCRIPTION => o.description = text,
                        WHEN => o.when = text,
                        _ => {
                            if let (Some(name), Some(bytes)) = (field.strip_prefix(SEALED), bytes) {
                                o.sealed.insert(name.to_string(), bytes);
                            }
                        }
                    }
                } else if let (Some(name), Some(bytes)) = (key.strip_prefix(SEALED), bytes.clone()) {
                    e.sealed.insert(name.to_string(), bytes);
                } else if let (Some(name), Some(bytes)) = (key.strip_prefix(SEAL), bytes) {
                    e.seal.insert(name.to_string(), bytes);
                }
            }
        }
    }
    e.overrides.retain(|_, o| !o.is_empty());
    e
}
