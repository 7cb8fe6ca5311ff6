//! Calendars: adding, editing, cancelling and answering events, the agenda,
//! and ICS import and export. A calendar space holds one calendar document,
//! synced, sealed and validated like any other (see `space`); the model and
//! its merge rules are `outpost_crdt::calendar`.
//!
//! Times come in as a person types them (`2026-12-01 09:00`, `2026-12-01`,
//! `10:30`) with an IANA zone, and are stored as local time plus zone.

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;
use outpost_crdt::calendar::{
    self, CalendarDoc, Event, Fields, Rsvp, Scope, Write,
    time::{self as caltime, Typed, When},
};

use super::{
    docs::{MAX_CHANGE_BYTES, member_users, mentioned},
    *,
};

mod private;

/// A write to a calendar.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CalEdit {
    Add(NewEvent),
    /// Changes an event: the whole series, or one occurrence (`EVENT@KEY`).
    Edit {
        event: String,
        #[serde(default)]
        scope: Option<CalScope>,
        change: EventChange,
    },
    Cancel {
        event: String,
        #[serde(default)]
        scope: Option<CalScope>,
    },
    /// Answers an invitation for this device's user.
    Rsvp {
        event: String,
        answer: String,
    },
    /// Imports an iCalendar file's events (matched by UID: a re-import updates).
    Import {
        ics: String,
    },
}

/// Which occurrences an edit or cancellation means. Default: the occurrence
/// when the event reference names one, else the series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CalScope {
    This,
    /// This occurrence and the ones after it: the series is split there.
    Following,
    All,
}

/// An event to add.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NewEvent {
    pub title: String,
    /// `YYYY-MM-DD HH:MM`, or `YYYY-MM-DD` for an all-day event.
    pub start: String,
    /// A date and time, a time on the start's date, or a date (all-day, the
    /// last day). Default: an hour after a timed start, the same day for a date.
    #[serde(default)]
    pub end: Option<String>,
    /// IANA zone of the times; none: floating (same wall-clock time anywhere).
    #[serde(default)]
    pub tz: Option<String>,
    #[serde(default)]
    pub all_day: bool,
    #[serde(default)]
    pub rrule: Option<String>,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Members of the calendar, by name, e-mail local part or user id prefix.
    #[serde(default)]
    pub attendees: Vec<String>,
    /// Reminders before each occurrence: `15m`, `1h`, `1d`, `2w`.
    #[serde(default)]
    pub remind: Vec<String>,
    #[serde(default)]
    pub private: bool,
}

/// Changes to an event; absent fields stay as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EventChange {
    #[serde(default)]
    pub title: Option<String>,
    /// A new start: a date and time, or a time on the same date. The length
    /// is kept unless `end` is given too.
    #[serde(default)]
    pub start: Option<String>,
    #[serde(default)]
    pub end: Option<String>,
    #[serde(default)]
    pub tz: Option<String>,
    /// A new rule; empty: the event stops repeating.
    #[serde(default)]
    pub rrule: Option<String>,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub private: Option<bool>,
    #[serde(default)]
    pub invite: Vec<String>,
    #[serde(default)]
    pub uninvite: Vec<String>,
    #[serde(default)]
    pub remind: Option<Vec<String>>,
}

/// What a calendar write did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CalWritten {
    pub space: SpaceId,
    /// The event written (none for an import).
    pub event: Option<String>,
    /// Whether anything changed (a re-import of the same file changes nothing).
    pub changed: bool,
    /// For an import: the events in the file (changed or not).
    #[serde(default)]
    pub imported: usize,
    /// What an import could not take as it was.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// A question about calendars.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CalQuery {
    /// Occurrences in `[from, to)` of the given calendars (all when empty),
    /// with times shown in `tz`.
    Agenda {
        #[serde(default)]
        spaces: Vec<SpaceId>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        tz: String,
    },
    /// One calendar as an iCalendar file.
    Export { space: SpaceId },
    /// When each user is busy in `[from, to)`, from the calendars this device
    /// reads (events they organise or were invited to and did not decline).
    FreeBusy {
        users: Vec<String>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        tz: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CalAnswer {
    Agenda(Vec<AgendaItem>),
    Export { name: String, ics: String },
    FreeBusy(Vec<FreeBusyView>),
}

/// One user's busy time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FreeBusyView {
    /// As asked for.
    pub name: String,
    pub user: String,
    /// Merged busy intervals, RFC 3339 in the query's zone.
    pub busy: Vec<Interval>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Interval {
    pub start: String,
    pub end: String,
}

/// One occurrence, as the agenda shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AgendaItem {
    pub space: SpaceId,
    pub calendar: String,
    /// `EVENT@KEY`: what `cal edit --this` and `cal cancel --this` take.
    pub occurrence: String,
    pub event: String,
    pub title: String,
    /// RFC 3339, in the agenda's zone (a date for all-day events).
    pub start: String,
    pub end: String,
    pub all_day: bool,
    /// The event's own zone (none: floating or all-day).
    pub tz: Option<String>,
    pub location: String,
    pub recurring: bool,
    /// Changed for this occurrence alone.
    pub changed: bool,
    pub private: bool,
    /// A private event of someone else: only that the time is busy shows.
    pub busy_only: bool,
    pub organizer: String,
    pub attendees: Vec<AttendeeView>,
    /// The rule, as stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rrule: Option<String>,
    pub reminders: Vec<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AttendeeView {
    pub user: String,
    pub answer: Rsvp,
}

/// An event a write names: its id, and the occurrence when it names one.
#[derive(Debug, Default)]
struct EventRef {
    id: String,
    key: Option<String>,
}

/// Events one imported change holds (a change is one envelope).
const IMPORT_EVENTS_PER_CHANGE: usize = 100;

/// Longest agenda window: a year and a bit (a query cannot be unbounded).
const MAX_AGENDA_DAYS: i64 = 400;
/// Largest ICS file one import takes.
pub const MAX_ICS_BYTES: usize = 4 << 20;
/// Shortest event id prefix accepted.
const MIN_EVENT_PREFIX: usize = 4;

impl Core {
    /// Writes to a calendar as one change. `space` is required to add or
    /// import; event references are looked up in every calendar otherwise.
    pub(super) fn write_calendar(
        &mut self,
        tx: &mut Txn,
        space: Option<SpaceId>,
        edit: CalEdit,
        effects: &mut Effects,
    ) -> store::Result<Result<CalWritten>> {
        let (space_id, event_ref) = match self.calendar_for(space, &edit) {
            Ok(found) => found,
            Err(e) => return Ok(Err(e)),
        };
        let target = match self.write_target(tx, space_id, SpaceKind::Calendar, effects)? {
            Ok(target) => target,
            Err(e) => return Ok(Err(e)),
        };
        let (writes, event, warnings) = match self.calendar_writes(space_id, &target, edit, event_ref) {
            Ok(w) => w,
            Err(e) => return Ok(Err(e)),
        };
        let imported = writes.iter().filter(|w| matches!(w, Write::Import { .. })).count();
        // Adding an event or moving one: warn of its people's other commitments.
        let timed = writes.iter().any(|w| match w {
            Write::Add { .. } | Write::Split { .. } => true,
            Write::Edit { fields, invite, .. } => fields.when.is_some() || fields.rule.is_some() || !invite.is_empty(),
            _ => false,
        });
        let mut warnings = warnings;
        // An import goes in changes of a bounded number of events (each one
        // envelope); anything else is one change.
        let chunk = if imported > 0 {
            IMPORT_EVENTS_PER_CHANGE
        } else {
            writes.len().max(1)
        };
        let mut changed = false;
        for writes in writes.chunks(chunk) {
            match self.write_chunk(tx, space_id, &target, writes, &mut warnings, effects)? {
                Ok(wrote) => changed |= wrote,
                Err(e) => return Ok(Err(e)),
            }
        }
        if changed {
            effects.events.push(super::Event::Calendar { space: space_id });
        }
        if let (Some(id), true, true) = (&event, timed, changed) {
            let conflicts = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.conflicts(space_id, id)));
            warnings.extend(conflicts.unwrap_or_default());
        }
        Ok(Ok(CalWritten {
            space: space_id,
            event,
            changed,
            imported,
            warnings,
        }))
    }

    /// Makes `writes` one change (checked against the rules and the envelope
    /// size first) and seals it. An import too big for one envelope is halved
    /// until it fits; a single event that does not fit is skipped, with a
    /// warning. Whether anything changed.
    fn write_chunk(
        &mut self,
        tx: &mut Txn,
        space_id: SpaceId,
        target: &WriteTarget,
        writes: &[Write],
        warnings: &mut Vec<String>,
        effects: &mut Effects,
    ) -> store::Result<Result<bool>> {
        let now = crate::clock::now_ms() as i64;
        let calendar = self.calendar_mut(space_id, target);
        let change = match calendar.write_as(&target.author, target.actor.clone(), writes, now, MAX_CHANGE_BYTES) {
            Ok(change) => change,
            Err(outpost_crdt::Error::EmptyChange) => return Ok(Ok(false)),
            Err(outpost_crdt::Error::TooLarge(bytes)) => {
                let imports = writes.iter().all(|w| matches!(w, Write::Import { .. }));
                if imports && writes.len() > 1 {
                    let (a, b) = writes.split_at(writes.len() / 2);
                    let first = match self.write_chunk(tx, space_id, target, a, warnings, effects)? {
                        Ok(wrote) => wrote,
                        Err(e) => return Ok(Err(e)),
                    };
                    return Ok(self
                        .write_chunk(tx, space_id, target, b, warnings, effects)?
                        .map(|second| first || second));
                }
                if let [Write::Import { data, .. }] = writes {
                    warnings.push(format!(
                        "skipped {}: {} KiB, more than one change takes",
                        data.uid,
                        bytes >> 10
                    ));
                    return Ok(Ok(false));
                }
                return Ok(Err(Error::Invalid(format!(
                    "this write would be {} KiB, more than one change takes (at most {} KiB): shorten the text",
                    bytes >> 10,
                    MAX_CHANGE_BYTES >> 10
                ))));
            }
            Err(outpost_crdt::Error::Calendar(e)) => return Ok(Err(Error::Invalid(e.to_string()))),
            Err(outpost_crdt::Error::Rules(v)) => {
                return Ok(Err(Error::NotAllowed(format!(
                    "the calendar's rules refuse this write: {v}"
                ))));
            }
            Err(e) => return Ok(Err(Error::Invalid(format!("the calendar refused the write: {e}")))),
        };
        if let Err(e) = self.seal_local(tx, space_id, target, &change, effects)? {
            return Ok(Err(e));
        }
        Ok(Ok(true))
    }

    /// The calendar a write goes to, and the event it names.
    fn calendar_for(&self, space: Option<SpaceId>, edit: &CalEdit) -> Result<(SpaceId, Option<EventRef>)> {
        let reference = match edit {
            CalEdit::Add(_) | CalEdit::Import { .. } => None,
            CalEdit::Edit { event, .. } | CalEdit::Cancel { event, .. } | CalEdit::Rsvp { event, .. } => Some(event),
        };
        let Some(reference) = reference else {
            let space = space.ok_or_else(|| Error::Invalid("name the calendar to add to".into()))?;
            return Ok((space, None));
        };
        let (prefix, key) = match reference.split_once('@') {
            Some((id, key)) => (id, Some(key)),
            None => (reference.as_str(), None),
        };
        if prefix.len() < MIN_EVENT_PREFIX {
            return Err(Error::Invalid(format!(
                "event `{prefix}`: give at least {MIN_EVENT_PREFIX} characters of its id (see `outpost cal agenda`)"
            )));
        }
        let mut found: Vec<(SpaceId, Event)> = Vec::new();
        for (id, s) in &self.spaces {
            if s.state.kind != SpaceKind::Calendar || space.is_some_and(|want| want != *id) {
                continue;
            }
            if let Some(cal) = calendar_of(s) {
                found.extend(
                    cal.events()
                        .into_iter()
                        .filter(|e| e.id.starts_with(prefix))
                        .map(|e| (*id, e)),
                );
            }
        }
        match found.as_slice() {
            [] => Err(Error::NotFound(format!(
                "no event `{prefix}` in any calendar this device reads"
            ))),
            [(space, event)] => {
                let key = match key {
                    Some(k) => Some(occurrence_key(event, k)?),
                    None => None,
                };
                Ok((
                    *space,
                    Some(EventRef {
                        id: event.id.clone(),
                        key,
                    }),
                ))
            }
            _ => Err(Error::Invalid(format!(
                "`{prefix}` names {} events: give more of the id",
                found.len()
            ))),
        }
    }

    /// The model's writes for an edit, the event written, and warnings.
    fn calendar_writes(
        &self,
        space_id: SpaceId,
        target: &WriteTarget,
        edit: CalEdit,
        event_ref: Option<EventRef>,
    ) -> Result<(Vec<Write>, Option<String>, Vec<String>)> {
        let space = &self.spaces[&space_id];
        let me = target.author.user.clone();
        let editor = target.author.editor;
        let read_only = || {
            Error::NotAllowed(
                "you are a reader in this calendar: you may answer invitations (`cal rsvp`), not edit events".into(),
            )
        };
        let scope_of = |scope: Option<CalScope>, key: &Option<String>| -> Result<Scope> {
            match (scope, key) {
                (Some(CalScope::All), _) | (None, None) => Ok(Scope::All),
                (Some(CalScope::This) | None, Some(key)) => Ok(Scope::This(key.clone())),
                (Some(CalScope::This | CalScope::Following), None) => Err(Error::Invalid(
                    "--this and --following need an occurrence: EVENT@DATE, as `outpost cal agenda` prints it".into(),
                )),
                (Some(CalScope::Following), Some(_)) => unreachable!("handled before"),
            }
        };
        let EventRef { id, key } = event_ref.unwrap_or_default();
        let following = |scope: Option<CalScope>| scope == Some(CalScope::Following);
        match edit {
            CalEdit::Edit { scope, change, .. } if following(scope) => {
                if !editor {
                    return Err(read_only());
                }
                let key = scope_of(Some(CalScope::This), &key).map(|_| key.unwrap_or_default())?;
                let new_id = new_event_id();
                let write = self.split(space, &me, &id, &key, &new_id, change)?;
                Ok((vec![write], Some(new_id), Vec::new()))
            }
            CalEdit::Cancel { scope, .. } if following(scope) => {
                if !editor {
                    return Err(read_only());
                }
                let key = scope_of(Some(CalScope::This), &key).map(|_| key.unwrap_or_default())?;
                Ok((vec![Write::Truncate { id: id.clone(), key }], Some(id), Vec::new()))
            }
            CalEdit::Add(new) => {
                if !editor {
                    return Err(read_only());
                }
                let when = new_when(&new)?;
                let id = new_event_id();
                let attendees = self.resolve_users(space, &new.attendees)?;
                let mut fields = Fields {
                    title: Some(non_empty_title(&new.title)?),
                    location: new.location,
                    description: new.description,
                    when: Some(when),
                    rule: new.rrule.filter(|r| !r.trim().is_empty()),
                    private: new.private.then_some(true),
                    ..Fields::default()
                };
                if new.private {
                    // Sealed for the organizer's and the attendees' devices only.
                    let (key, mut seal) = private::new_key(&space_id, &id);
                    let people: BTreeSet<String> = attendees.iter().cloned().chain([me.clone()]).collect();
                    seal.extend(private::wraps_for(&key, None, private::devices_of(space, &people)));
                    private::seal_fields(&key, &id, None, &mut fields);
                    fields.seal = seal;
                }
                let write = Write::Add {
                    uid: format!("{id}@outpost"),
                    id: id.clone(),
                    organizer: me,
                    fields,
                    attendees,
                    reminders: parse_reminders(&new.remind)?,
                };
                Ok((vec![write], Some(id), Vec::new()))
            }
            CalEdit::Edit { scope, change, .. } => {
                if !editor {
                    return Err(read_only());
                }
                let (event, _) = self.event_of(space, &id)?;
                let scope = scope_of(scope, &key)?;
                let when = changed_when(&event, &scope, &change)?;
                let invite = self.resolve_users(space, &change.invite)?;
                let mut fields = Fields {
                    title: change.title.map(|t| non_empty_title(&t)).transpose()?,
                    location: change.location,
                    description: change.description,
                    when,
                    rule: change.rrule,
                    private: change.private,
                    ..Fields::default()
                };
                if event.private {
                    self.private_edit(space, &event, &scope, &invite, &mut fields)?;
                } else if change.private == Some(true) {
                    return Err(Error::Invalid(
                        "make an event private when you add it (`cal add --private`): its text so far stays in the calendar's history".into(),
                    ));
                }
                let write = Write::Edit {
                    id: id.clone(),
                    scope,
                    fields,
                    invite,
                    uninvite: self.resolve_users(space, &change.uninvite)?,
                    reminders: change.remind.as_deref().map(parse_reminders).transpose()?,
                };
                Ok((vec![write], Some(id), Vec::new()))
            }
            CalEdit::Cancel { scope, .. } => {
                if !editor {
                    return Err(read_only());
                }
                let scope = scope_of(scope, &key)?;
                Ok((vec![Write::Cancel { id: id.clone(), scope }], Some(id), Vec::new()))
            }
            CalEdit::Rsvp { answer, .. } => {
                let answer = Rsvp::parse(&answer).ok_or_else(|| {
                    Error::Invalid(format!("`{answer}` is not an answer: use accept, decline or tentative"))
                })?;
                let (event, _) = self.event_of(space, &id)?;
                if !event.attendees.contains_key(&me) {
                    return Err(Error::NotAllowed(format!(
                        "you are not invited to `{}`: the organizer adds attendees with `cal edit EVENT --invite USER`",
                        event.title
                    )));
                }
                Ok((
                    vec![Write::Rsvp {
                        id: id.clone(),
                        user: me,
                        answer,
                    }],
                    Some(id),
                    Vec::new(),
                ))
            }
            CalEdit::Import { ics } => {
                if !editor {
                    return Err(read_only());
                }
                if ics.len() > MAX_ICS_BYTES {
                    return Err(Error::Invalid(format!(
                        "an import takes at most {} MiB of iCalendar text",
                        MAX_ICS_BYTES >> 20
                    )));
                }
                let parsed =
                    // The parser is not a trust boundary: a panic in it is a bad file.
                    std::panic::catch_unwind(|| calendar::ics::parse(&ics))
                        .map_err(|_| Error::Invalid("the iCalendar file has a value out of range".into()))?
                        .map_err(|e| Error::Invalid(format!("not an iCalendar file: {e}")))?;
                let mut warnings = parsed.warnings;
                let mut writes = Vec::with_capacity(parsed.events.len());
                for data in parsed.events {
                    if let Some(write) = self.import_write(space, &me, &target.actor, data, &mut warnings) {
                        writes.push(write);
                    }
                }
                Ok((writes, None, warnings))
            }
        }
    }

    /// One event, its private text revealed when this device may read it
    /// (the flag says it may).
    pub(super) fn event_of(&self, space: &Space, id: &str) -> Result<(Event, bool)> {
        let mut event = calendar_of(space)
            .and_then(|c| c.event(id))
            .ok_or_else(|| Error::NotFound(format!("no event `{id}`")))?;
        let readable = private::reveal(&space.state.space, &mut event, &self.keys);
        Ok((event, readable))
    }

    /// Every event of a calendar, private text revealed where this device may.
    fn events_of(&self, space: &Space) -> Vec<(Event, bool)> {
        let Some(cal) = calendar_of(space) else {
            return Vec::new();
        };
        cal.events()
            .into_iter()
            .map(|mut e| {
                let readable = private::reveal(&space.state.space, &mut e, &self.keys);
                (e, readable)
            })
            .collect()
    }

    /// The split for "edit this and following": a new series from occurrence
    /// `key` on, with the event's fields as they show and `change` applied.
    fn split(&self, space: &Space, me: &str, id: &str, key: &str, new_id: &str, change: EventChange) -> Result<Write> {
        if !change.invite.is_empty()
            || !change.uninvite.is_empty()
            || change.remind.is_some()
            || change.private.is_some()
        {
            return Err(Error::Invalid(
                "with --following, change the time, rule and text; invite, remind or change privacy on the new series afterwards".into(),
            ));
        }
        let (event, readable) = self.event_of(space, id)?;
        if !readable {
            return Err(Error::NotAllowed(
                "this private event's text is sealed for its organizer and attendees: only their devices split it"
                    .into(),
            ));
        }
        let this = Scope::This(key.to_string());
        let when = match changed_when(&event, &this, &change)? {
            Some(when) => when,
            None => {
                let series = event
                    .when
                    .ok_or_else(|| Error::Invalid(format!("event `{id}` has no valid time")))?;
                occurrence_when(&event, &series, key)
            }
        };
        let keep = |new: Option<String>, old: &str| new.or_else(|| (!old.is_empty()).then(|| old.to_string()));
        let mut fields = Fields {
            title: Some(match change.title {
                Some(t) => non_empty_title(&t)?,
                None => event.title.clone(),
            }),
            location: keep(change.location, &event.location),
            description: keep(change.description, &event.description),
            when: Some(when),
            rule: change.rrule,
            private: event.private.then_some(true),
            ..Fields::default()
        };
        if event.private {
            let (key, mut seal) = private::new_key(&space.state.space, new_id);
            // The new series' key goes to those who held the old one.
            let people: BTreeSet<String> = private::holders(space, &event)
                .into_iter()
                .chain([event.organizer.clone(), me.to_string()])
                .collect();
            seal.extend(private::wraps_for(&key, None, private::devices_of(space, &people)));
            private::seal_fields(&key, new_id, None, &mut fields);
            fields.seal = seal;
        }
        Ok(Write::Split {
            id: id.to_string(),
            key: key.to_string(),
            new_id: new_id.to_string(),
            new_uid: format!("{}_R{key}", event.uid),
            organizer: me.to_string(),
            fields,
        })
    }

    /// Seals what an edit of a private event writes, and wraps its key for
    /// the people's devices that lack it. Only a device holding the key may
    /// change its text.
    fn private_edit(
        &self,
        space: &Space,
        event: &Event,
        scope: &Scope,
        invite: &[String],
        fields: &mut Fields,
    ) -> Result<()> {
        if fields.private == Some(false) {
            return Err(Error::Invalid(
                "a private event stays private (its key is set when it is made): add a public copy instead".into(),
            ));
        }
        let Some(key) = private::open_key(&space.state.space, event, &self.keys) else {
            let text = fields.title.is_some() || fields.location.is_some() || fields.description.is_some();
            if text || !invite.is_empty() {
                return Err(Error::NotAllowed(
                    "this private event's text is sealed for its organizer and attendees: only their devices change it or invite"
                        .into(),
                ));
            }
            return Ok(());
        };
        let occurrence = match scope {
            Scope::All => None,
            Scope::This(k) => Some(k.as_str()),
        };
        private::seal_fields(&key, &event.id, occurrence, fields);
        // The key goes to the people who hold it already (their new devices
        // too), the organizer, and whom this write invites: never to someone
        // who merely wrote an answer into the event.
        let people: BTreeSet<String> = private::holders(space, event)
            .into_iter()
            .chain(invite.iter().cloned())
            .chain([event.organizer.clone()])
            .collect();
        fields.seal = private::wraps_for(&key, Some(event), private::devices_of(space, &people));
        Ok(())
    }

    /// The write for one imported event; a private one is sealed (under its
    /// existing key when it was imported before, so nothing changes).
    fn import_write(
        &self,
        space: &Space,
        me: &str,
        actor: &outpost_crdt::ActorId,
        mut data: calendar::EventData,
        warnings: &mut Vec<String>,
    ) -> Option<Write> {
        let mut seal = BTreeMap::new();
        let existing = calendar_of(space).and_then(|c| c.event_by_uid(&data.uid));
        // Privacy is set when an event is made: an event already here keeps it.
        if let Some(e) = existing.as_ref().filter(|e| e.private != data.private) {
            warnings.push(format!(
                "{}: stays {} (privacy is set when an event is made)",
                data.uid,
                if e.private { "private" } else { "public" }
            ));
            data.private = e.private;
        }
        if data.private {
            let id = existing
                .as_ref()
                .map_or_else(|| calendar::id_for_uid(&data.uid, actor), |e| e.id.clone());
            let key = match existing.as_ref().filter(|e| !e.seal.is_empty()) {
                Some(e) => match private::open_key(&space.state.space, e, &self.keys) {
                    Some(key) => key,
                    None => {
                        warnings.push(format!(
                            "skipped the private event {}: it is sealed for other people",
                            data.uid
                        ));
                        return None;
                    }
                },
                None => {
                    let (key, commit) = private::new_key(&space.state.space, &id);
                    seal = commit;
                    key
                }
            };
            let people = BTreeSet::from([me.to_string()]);
            seal.extend(private::wraps_for(
                &key,
                existing.as_ref(),
                private::devices_of(space, &people),
            ));
            private::seal_data(&key, &id, &mut data);
        }
        Some(Write::Import {
            organizer: me.to_string(),
            data,
            seal,
        })
    }

    /// Member users by name (as mentions resolve them); each must be a member.
    fn resolve_users(&self, space: &Space, names: &[String]) -> Result<Vec<String>> {
        let members = member_users(space);
        let aliases = self.mention_aliases();
        names
            .iter()
            .map(|name| {
                mentioned(&members, &aliases, name.trim_start_matches('@')).ok_or_else(|| {
                    Error::Invalid(format!(
                        "`{name}` is not one member of this calendar: name a member (org name, e-mail name or 8+ hex of the user id); add people with `outpost space add`"
                    ))
                })
            })
            .collect()
    }

    fn calendar_mut(&mut self, space_id: SpaceId, target: &WriteTarget) -> &mut CalendarDoc {
        let readable = self.spaces.get_mut(&space_id).and_then(|s| s.readable.as_mut());
        readable
            .expect("write_target checked the key")
            .shard_mut(target.doc, &target.epoch)
            .doc
            .calendar_mut()
            .expect("a calendar space holds a calendar document")
    }

    pub(super) fn read_calendar(&self, query: CalQuery) -> Result<CalAnswer> {
        match query {
            CalQuery::Agenda { spaces, from, to, tz } => {
                let viewer = caltime::parse_zone(&tz).map_err(|e| Error::Invalid(e.to_string()))?;
                if to <= from || to - from > Duration::days(MAX_AGENDA_DAYS) {
                    return Err(Error::Invalid(format!(
                        "the agenda spans a positive window of at most {MAX_AGENDA_DAYS} days"
                    )));
                }
                let mut items = Vec::new();
                for (id, s) in &self.spaces {
                    if s.state.kind != SpaceKind::Calendar || (!spaces.is_empty() && !spaces.contains(id)) {
                        continue;
                    }
                    if calendar_of(s).is_none() {
                        if spaces.contains(id) {
                            return Err(Error::KeyMissing {
                                space: *id,
                                why: s
                                    .key_problem
                                    .clone()
                                    .unwrap_or_else(|| "this device holds no key".into()),
                            });
                        }
                        continue;
                    }
                    for (event, readable) in self.events_of(s) {
                        let (occurrences, _) = event.occurrences(from, to, viewer);
                        let name = s.name.as_deref().unwrap_or("");
                        items.extend(
                            occurrences
                                .iter()
                                .map(|o| agenda_item(*id, name, &event, readable, o, viewer)),
                        );
                    }
                }
                items.sort_by(|a, b| (&a.start, &a.occurrence).cmp(&(&b.start, &b.occurrence)));
                Ok(CalAnswer::Agenda(items))
            }
            CalQuery::FreeBusy { users, from, to, tz } => {
                let viewer = caltime::parse_zone(&tz).map_err(|e| Error::Invalid(e.to_string()))?;
                if to <= from || to - from > Duration::days(MAX_AGENDA_DAYS) {
                    return Err(Error::Invalid(format!(
                        "free/busy spans a positive window of at most {MAX_AGENDA_DAYS} days"
                    )));
                }
                let known = self.calendar_users();
                let aliases = self.mention_aliases();
                users
                    .into_iter()
                    .map(|name| {
                        let user = mentioned(&known, &aliases, name.trim_start_matches('@')).ok_or_else(|| {
                            Error::Invalid(format!(
                                "`{name}` is not one member of a calendar here: name a member (org name, e-mail name or 8+ hex of the user id)"
                            ))
                        })?;
                        let busy = merge(self.busy(&user, from, to, viewer, None).into_iter().map(|b| (b.start, b.end)))
                            .into_iter()
                            .map(|(start, end)| Interval {
                                start: start.with_timezone(&viewer).to_rfc3339(),
                                end: end.with_timezone(&viewer).to_rfc3339(),
                            })
                            .collect();
                        Ok(FreeBusyView { name, user, busy })
                    })
                    .collect::<Result<Vec<_>>>()
                    .map(CalAnswer::FreeBusy)
            }
            CalQuery::Export { space } => {
                let s = self.spaces.get(&space).ok_or(Error::UnknownSpace(space))?;
                expect_kind(s, SpaceKind::Calendar)?;
                // What this device reads: others' private events as busy time.
                let events: Vec<Event> = self
                    .events_of(s)
                    .into_iter()
                    .map(|(mut e, readable)| {
                        if !readable {
                            e.title = "Busy".into();
                            e.location.clear();
                            e.description.clear();
                            e.overrides.values_mut().for_each(|o| {
                                (o.title, o.location, o.description) = (None, None, None);
                            });
                        }
                        e
                    })
                    .collect();
                let stamp = DateTime::from_timestamp_millis(crate::clock::now_ms() as i64).unwrap_or_default();
                Ok(CalAnswer::Export {
                    name: s.name.clone().unwrap_or_default(),
                    ics: calendar::ics::write(s.name.as_deref().unwrap_or("Outpost"), &events, stamp),
                })
            }
        }
    }
}

/// One busy stretch of a user's.
struct Busy {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    /// What it is, when this device may say.
    title: Option<String>,
}

/// Most conflicts listed per write.
const MAX_CONFLICTS_SHOWN: usize = 5;
/// Occurrences of a new event checked for conflicts.
const CONFLICT_OCCURRENCES: usize = 50;

impl Core {
    /// The users of every calendar's members (for naming people in free/busy).
    fn calendar_users(&self) -> Vec<(DeviceId, UserId)> {
        let mut users: Vec<(DeviceId, UserId)> = self
            .spaces
            .values()
            .filter(|s| s.state.kind == SpaceKind::Calendar)
            .flat_map(|s| s.state.members.values().map(|m| (m.cert.device, m.cert.user)))
            .collect();
        users.sort();
        users.dedup();
        users
    }

    /// When `user` is busy in `[from, to)`: occurrences of events in every
    /// calendar this device reads that the user organises or was invited to
    /// and did not decline, except `skip`.
    fn busy(&self, user: &str, from: DateTime<Utc>, to: DateTime<Utc>, viewer: Tz, skip: Option<&str>) -> Vec<Busy> {
        let mut out = Vec::new();
        for s in self.spaces.values().filter(|s| s.state.kind == SpaceKind::Calendar) {
            for (e, readable) in self.events_of(s) {
                if Some(e.id.as_str()) == skip || !takes_part(&e, user) {
                    continue;
                }
                let (occurrences, _) = e.occurrences(from, to, viewer);
                out.extend(occurrences.into_iter().map(|o| Busy {
                    start: o.start,
                    end: o.end,
                    title: readable.then_some(o.title),
                }));
            }
        }
        out
    }

    /// Warnings for the people of event `id` busy at one of its next occurrences.
    fn conflicts(&self, space_id: SpaceId, id: &str) -> Vec<String> {
        let Ok((event, _)) = self.event_of(&self.spaces[&space_id], id) else {
            return Vec::new();
        };
        let Some(when) = event.when else {
            return Vec::new();
        };
        let zone = when.zone().unwrap_or(chrono_tz::UTC);
        let (first, _) = when.instants(zone);
        let (mut ours, _) = event.occurrences(first, first + Duration::days(366), zone);
        ours.truncate(CONFLICT_OCCURRENCES);
        let (Some(from), Some(to)) = (ours.first().map(|o| o.start), ours.iter().map(|o| o.end).max()) else {
            return Vec::new();
        };
        let mut people: Vec<&String> = event
            .attendees
            .iter()
            .filter(|(_, a)| **a != Rsvp::Declined)
            .map(|(u, _)| u)
            .collect();
        people.push(&event.organizer);
        people.sort();
        people.dedup();
        let mut warnings = Vec::new();
        for user in people {
            let clashes: Vec<String> = self
                .busy(user, from, to, zone, Some(id))
                .into_iter()
                .filter(|b| ours.iter().any(|o| b.start < o.end && o.start < b.end))
                .map(|b| {
                    format!(
                        "{}–{} ({})",
                        b.start.with_timezone(&zone).format("%Y-%m-%d %H:%M"),
                        b.end.with_timezone(&zone).format("%H:%M"),
                        b.title.as_deref().unwrap_or("busy")
                    )
                })
                .collect();
            if clashes.is_empty() {
                continue;
            }
            let more = clashes.len().saturating_sub(MAX_CONFLICTS_SHOWN);
            let mut line = format!(
                "{} is busy then: {}",
                &user[..user.len().min(12)],
                clashes[..clashes.len().min(MAX_CONFLICTS_SHOWN)].join(", ")
            );
            if more > 0 {
                line.push_str(&format!(" and {more} more"));
            }
            warnings.push(line);
        }
        warnings
    }
}

/// Whether `user` takes part in `e`: organises it or was invited, and did not decline.
pub(super) fn takes_part(e: &Event, user: &str) -> bool {
    match e.attendees.get(user) {
        Some(answer) => *answer != Rsvp::Declined,
        None => e.organizer == user,
    }
}

/// Overlapping or touching intervals joined, in order.
fn merge(intervals: impl Iterator<Item = (DateTime<Utc>, DateTime<Utc>)>) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut all: Vec<_> = intervals.collect();
    all.sort();
    let mut out: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    for (start, end) in all {
        match out.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

/// The time of occurrence `key` of a series at `series`: its own when moved.
fn occurrence_when(event: &Event, series: &When, key: &str) -> When {
    let moved = event
        .overrides
        .get(key)
        .and_then(|o| o.when.as_deref())
        .and_then(|w| w.parse().ok());
    moved.unwrap_or_else(|| series.starting_at(calendar::parse_key(key).unwrap_or(series.local_start())))
}

/// A calendar space's document, when this device reads it.
pub(super) fn calendar_of(space: &Space) -> Option<&CalendarDoc> {
    space
        .readable
        .as_ref()
        .and_then(|r| r.docs.get(&space.main_doc()))
        .and_then(|d| d.doc.calendar())
}

/// One occurrence for the agenda; `readable` is false for a private event
/// this device holds no key of (only its time shows).
fn agenda_item(
    space: SpaceId,
    name: &str,
    e: &Event,
    readable: bool,
    o: &calendar::Occurrence,
    viewer: Tz,
) -> AgendaItem {
    let busy_only = !readable;
    let (start, end) = match o.when {
        When::AllDay { start, end } => (start.to_string(), (end - Duration::days(1)).to_string()),
        When::Timed { .. } => (
            o.start.with_timezone(&viewer).to_rfc3339(),
            o.end.with_timezone(&viewer).to_rfc3339(),
        ),
    };
    let hide = |s: &str| if busy_only { String::new() } else { s.to_string() };
    AgendaItem {
        space,
        calendar: name.to_string(),
        occurrence: format!("{}@{}", o.event, o.key),
        event: o.event.clone(),
        title: if busy_only { "busy".into() } else { o.title.clone() },
        start,
        end,
        all_day: o.when.is_all_day(),
        tz: o.when.zone().map(|z| z.name().to_string()),
        location: hide(&o.location),
        recurring: o.recurring,
        changed: o.changed,
        private: e.private,
        busy_only,
        organizer: e.organizer.clone(),
        attendees: if busy_only {
            Vec::new()
        } else {
            e.attendees
                .iter()
                .map(|(user, answer)| AttendeeView {
                    user: user.clone(),
                    answer: *answer,
                })
                .collect()
        },
        rrule: if busy_only { None } else { e.rule.clone() },
        reminders: e.reminders.iter().copied().collect(),
    }
}

/// The occurrence key a person typed after `@`: the key itself
/// (`20261202T090000`), an ISO time (`2026-12-02T09:00`), or a date when the
/// event has one occurrence that day.
fn occurrence_key(event: &Event, typed: &str) -> Result<String> {
    let Some(when) = event.when else {
        return Err(Error::Invalid(format!("event `{}` has no valid time", event.id)));
    };
    if let Some(start) = calendar::parse_key(typed.trim()) {
        // Canonical, as the series names its occurrences.
        return Ok(when.key_at(start));
    }
    let bad = || {
        Error::Invalid(format!(
            "`{typed}` is not an occurrence of `{}`: use EVENT@YYYY-MM-DD or the occurrence `outpost cal agenda` prints",
            event.id
        ))
    };
    match typed.parse::<Typed>().map_err(|_| bad())? {
        Typed::DateTime(t) => Ok(when.key_at(t)),
        Typed::Date(d) => {
            // The occurrence starting that day (in the series' own local time).
            let from = caltime::instant(d.and_time(NaiveTime::MIN), when.zone().unwrap_or(chrono_tz::UTC));
            let zone = when.zone().unwrap_or(chrono_tz::UTC);
            let (found, _) = event.occurrences(from - Duration::days(1), from + Duration::days(2), zone);
            let mut keys = found
                .into_iter()
                .filter(|o| calendar::parse_key(&o.key).is_some_and(|k| k.date() == d))
                .map(|o| o.key);
            match (keys.next(), keys.next()) {
                (Some(k), None) => Ok(k),
                (Some(_), Some(_)) => Err(Error::Invalid(format!(
                    "`{}` has several occurrences on {d}: name one as EVENT@{}T09:00",
                    event.id, d
                ))),
                _ => Err(bad()),
            }
        }
        Typed::Time(_) => Err(bad()),
    }
}

/// The time of a new event.
fn new_when(new: &NewEvent) -> Result<When> {
    let zone = new
        .tz
        .as_deref()
        .map(caltime::parse_zone)
        .transpose()
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let invalid = |e: caltime::TimeError| Error::Invalid(e.to_string());
    let start: Typed = new.start.parse().map_err(invalid)?;
    let end: Option<Typed> = new.end.as_deref().map(str::parse).transpose().map_err(invalid)?;
    match (start, end) {
        (Typed::Date(first), None) => When::all_day(first, first).map_err(invalid),
        (Typed::Date(first), Some(Typed::Date(last))) => When::all_day(first, last).map_err(invalid),
        (Typed::DateTime(s), _) if new.all_day => When::all_day(s.date(), s.date()).map_err(invalid),
        (Typed::DateTime(s), None) => When::timed(s, s + Duration::hours(1), zone).map_err(invalid),
        (Typed::DateTime(s), Some(Typed::DateTime(e))) => When::timed(s, e, zone).map_err(invalid),
        (Typed::DateTime(s), Some(Typed::Time(t))) => When::timed(s, s.date().and_time(t), zone).map_err(invalid),
        (Typed::Time(_), _) => Err(Error::Invalid(
            "a new event's start needs a date: YYYY-MM-DD HH:MM (or YYYY-MM-DD for all day)".into(),
        )),
        _ => Err(invalid(caltime::TimeError::Mixed)),
    }
}

/// The new time an edit asks for, if any: a moved start keeps the length,
/// a bare time keeps the date (the occurrence's, for one occurrence).
fn changed_when(event: &Event, scope: &Scope, change: &EventChange) -> Result<Option<When>> {
    if change.start.is_none() && change.end.is_none() && change.tz.is_none() {
        return Ok(None);
    }
    let Some(series) = event.when else {
        return Err(Error::Invalid(format!(
            "event `{}` has no valid time to change",
            event.id
        )));
    };
    let current = match scope {
        Scope::All => series,
        Scope::This(key) => occurrence_when(event, &series, key),
    };
    let invalid = |e: caltime::TimeError| Error::Invalid(e.to_string());
    let zone = match change.tz.as_deref() {
        Some(tz) => Some(caltime::parse_zone(tz).map_err(invalid)?),
        None => current.zone(),
    };
    let on = |typed: Typed, day: NaiveDate| match typed {
        Typed::DateTime(t) => Ok(t),
        Typed::Time(t) => Ok(day.and_time(t)),
        Typed::Date(_) => Err(invalid(caltime::TimeError::Mixed)),
    };
    match current {
        When::AllDay { start, end } => {
            let first = match change.start.as_deref().map(str::parse).transpose().map_err(invalid)? {
                Some(Typed::Date(d)) => d,
                None => start,
                Some(_) => return Err(invalid(caltime::TimeError::Mixed)),
            };
            let last = match change.end.as_deref().map(str::parse).transpose().map_err(invalid)? {
                Some(Typed::Date(d)) => d,
                None => first + (end - start) - Duration::days(1),
                Some(_) => return Err(invalid(caltime::TimeError::Mixed)),
            };
            When::all_day(first, last).map(Some).map_err(invalid)
        }
        When::Timed { start, end, .. } => {
            let new_start = match change.start.as_deref() {
                Some(s) => on(s.parse().map_err(invalid)?, start.date())?,
                None => start,
            };
            let new_end = match change.end.as_deref() {
                Some(e) => on(e.parse().map_err(invalid)?, new_start.date())?,
                None => new_start + (end - start),
            };
            When::timed(new_start, new_end, zone).map(Some).map_err(invalid)
        }
    }
}

fn non_empty_title(title: &str) -> Result<String> {
    let title = title.trim();
    if title.is_empty() {
        return Err(Error::Invalid("an event needs a non-empty title".into()));
    }
    if title.len() > calendar::rules::MAX_SHORT_BYTES {
        return Err(Error::Invalid(format!(
            "a title is at most {} bytes",
            calendar::rules::MAX_SHORT_BYTES
        )));
    }
    Ok(title.to_string())
}

/// `15m`, `2h`, `1d`, `1w` (or bare minutes) as minutes before the start.
fn parse_reminders(typed: &[String]) -> Result<Vec<u32>> {
    if typed.len() > MAX_REMINDERS_PER_EVENT {
        return Err(Error::Invalid(format!(
            "an event has at most {MAX_REMINDERS_PER_EVENT} reminders"
        )));
    }
    typed
        .iter()
        .map(|t| {
            let t = t.trim();
            let (number, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
            let factor = match unit {
                "" | "m" | "min" => 1,
                "h" => 60,
                "d" => 24 * 60,
                "w" => 7 * 24 * 60,
                _ => 0,
            };
            match number.parse::<u32>().ok().and_then(|n| n.checked_mul(factor)) {
                Some(m) if factor > 0 && m <= calendar::rules::MAX_REMINDER_MINUTES => Ok(m),
                _ => Err(Error::Invalid(format!(
                    "reminder `{t}`: write a time before the start such as 10m, 1h, 1d or 1w (at most 4w)"
                ))),
            }
        })
        .collect()
}

fn new_event_id() -> String {
    let bytes: [u8; 10] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
