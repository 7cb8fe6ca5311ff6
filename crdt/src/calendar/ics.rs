//! iCalendar (RFC 5545) import and export.
//!
//! [`parse`] reads what Google Calendar, Outlook/Exchange and Apple Calendar
//! write into [`EventData`], one per UID, ready for [`super::Write::Import`].
//! [`write`] turns a calendar's events back into a file those clients accept.
//!
//! The text layer (unfolding, unescaping, parameters, typed values) is
//! calcard's, and so is the mapping of TZIDs to IANA zones (VTIMEZONE blocks
//! with their `X-LIC-LOCATION` and `X-MICROSOFT-CDO-TZID`, Windows names such
//! as "China Standard Time"). What a file *means* for this calendar model is
//! decided here:
//!
//! - Times stay as the author wrote them: a local time and its zone. A UTC
//!   time (`Z`) is a time in the zone `UTC`, a time without a zone floats, a
//!   date is an all-day event. A zone this build does not know is the one
//!   lossy case: its times are converted to UTC instants (with the file's own
//!   VTIMEZONE offsets when it has them) and a warning names it.
//! - Exceptions (EXDATE, RDATE, RECURRENCE-ID) become occurrence keys: the
//!   occurrence's original start as a local time *in the series' zone*,
//!   whatever zone the file wrote them in.
//! - A separate VEVENT with a RECURRENCE-ID becomes an override carrying only
//!   what differs from the series; a cancelled one becomes an EXDATE.
//! - Nothing is dropped silently: whatever cannot be represented (to-dos,
//!   absolute alarms, an event without a start, over-long text) is reported
//!   in [`Parsed::warnings`].
//!
//! [`parse`] is deterministic: the same file gives the same events, so
//! importing it twice writes nothing the second time. Exporting a calendar and
//! parsing the result gives back the same events (a rule comes back in
//! calcard's canonical order of parts, which is how imported rules are stored).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use calcard::{
    Entry, Parser,
    common::{PartialDateTime, timezone::Tz as CalTz},
    icalendar::{
        ICalendar, ICalendarClassification, ICalendarComponent, ICalendarComponentType, ICalendarDuration,
        ICalendarEntry, ICalendarParameterName, ICalendarParameterValue, ICalendarPeriod, ICalendarProperty,
        ICalendarRelated, ICalendarStatus, ICalendarValue, timezone::TzResolver,
    },
};
use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use chrono_tz::Tz;
use rrule::{RRule, Unvalidated};

use super::{
    Event, EventData, Overrides, parse_key,
    recur::{Rule, as_naive_utc},
    rules::{MAX_DESCRIPTION_BYTES, MAX_REMINDER_MINUTES, MAX_SHORT_BYTES},
    time::{When, instant},
};

/// What a file holds, as this calendar model reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    /// The calendar's name (`X-WR-CALNAME`, or RFC 7986 `NAME`).
    pub name: Option<String>,
    /// One per UID (and one per instance whose series is not in the file),
    /// in the order the file first mentions them.
    pub events: Vec<EventData>,
    /// What was skipped or changed on the way in, one sentence each.
    pub warnings: Vec<String>,
}

/// Why a text is not a calendar at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IcsError {
    #[error("not an iCalendar file: it has no BEGIN:VCALENDAR … END:VCALENDAR")]
    NotICalendar,
}

/// Longest physical line of a written file, in octets (RFC 5545 §3.1).
const MAX_LINE_OCTETS: usize = 75;

/// Onsets of one VTIMEZONE observance expanded to find the one in force: a
/// yearly rule from 1601 (as Exchange writes them) has about 430 up to now.
/// The bound keeps a hostile rule (FREQ=SECONDLY) cheap for every time read.
const MAX_OBSERVANCE_ONSETS: u16 = 1_000;

/// The PRODID of written files.
const PRODID: &str = "-//Outpost//Outpost Calendar//EN";

// ---------------------------------------------------------------------------
// Import
// ---------------------------------------------------------------------------

/// Reads an iCalendar file. Fails only when the text holds no VCALENDAR;
/// everything inside one that cannot be imported is skipped with a warning.
pub fn parse(text: &str) -> Result<Parsed, IcsError> {
    let calendars = read_calendars(text)?;
    let mut warnings = Warnings::default();
    let mut name = None;
    let mut vevents = Vec::new();
    let mut not_events = 0usize;
    for cal in &calendars {
        let zones = Zones::new(cal);
        // `read_calendars` keeps only calendars whose first component is a VCALENDAR.
        let root = &cal.components[0];
        if name.is_none() {
            name = calendar_name(root);
        }
        for &id in &root.component_ids {
            let Some(component) = cal.component_by_id(id) else {
                continue;
            };
            match component.component_type {
                ICalendarComponentType::VEvent => {
                    if let Some(v) = Vevent::read(cal, id, component, &zones, &mut warnings) {
                        vevents.push(v);
                    }
                }
                ICalendarComponentType::VTodo
                | ICalendarComponentType::VJournal
                | ICalendarComponentType::VFreebusy => {
                    not_events += 1;
                }
                _ => {}
            }
        }
    }
    if not_events > 0 {
        warnings.push(format!(
            "skipped {not_events} to-do, journal or free/busy entr{} (only events are imported)",
            if not_events == 1 { "y" } else { "ies" }
        ));
    }
    let events = assemble(vevents, &mut warnings);
    Ok(Parsed {
        name,
        events,
        warnings: warnings.list,
    })
}

/// Every VCALENDAR in `text` (a file may concatenate several).
fn read_calendars(text: &str) -> Result<Vec<ICalendar>, IcsError> {
    let mut parser = Parser::new(text);
    let mut calendars = Vec::new();
    // Each entry consumes at least one byte; the bound only guards against a
    // parser that stops advancing.
    for _ in 0..=text.len() {
        match parser.entry() {
            Entry::ICalendar(cal)
                if cal
                    .components
                    .first()
                    .is_some_and(|root| root.component_type == ICalendarComponentType::VCalendar) =>
            {
                calendars.push(cal)
            }
            Entry::Eof | Entry::TooManyComponents => break,
            _ => {}
        }
    }
    if calendars.is_empty() {
        Err(IcsError::NotICalendar)
    } else {
        Ok(calendars)
    }
}

fn calendar_name(root: &ICalendarComponent) -> Option<String> {
    let x_wr = ICalendarProperty::Other("X-WR-CALNAME".into());
    root.property(&x_wr)
        .or_else(|| root.property(&ICalendarProperty::Name))
        .map(text_of)
        .filter(|n| !n.is_empty())
}

/// Warnings, each said once.
#[derive(Default)]
struct Warnings {
    list: Vec<String>,
}

impl Warnings {
    fn push(&mut self, warning: String) {
        if !self.list.contains(&warning) {
            self.list.push(warning);
        }
    }
}

/// A date or time as a property gave it, its zone resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stamp {
    Date(NaiveDate),
    Floating(NaiveDateTime),
    /// A local time in a zone: `UTC` for `Z` times, and for times in a zone
    /// this build does not know (already converted to UTC).
    Zoned(NaiveDateTime, Tz),
}

impl Stamp {
    /// The zone of a timed value (`None` for floating times and dates).
    fn zone(self) -> Option<Tz> {
        match self {
            Stamp::Zoned(_, zone) => Some(zone),
            _ => None,
        }
    }

    /// This time as a wall-clock time in `zone`; as written when either side
    /// floats, midnight for a date.
    fn local_in(self, zone: Option<Tz>) -> NaiveDateTime {
        match (self, zone) {
            (Stamp::Zoned(t, from), Some(to)) if from != to => instant(t, from).with_timezone(&to).naive_local(),
            (Stamp::Zoned(t, _) | Stamp::Floating(t), _) => t,
            (Stamp::Date(d), _) => d.and_time(NaiveTime::MIN),
        }
    }
}

/// How the file's TZIDs read: as IANA zones where calcard can name one, else
/// through the file's own VTIMEZONE offsets.
struct Zones<'a> {
    cal: &'a ICalendar,
    resolver: TzResolver<&'a str>,
}

impl<'a> Zones<'a> {
    fn new(cal: &'a ICalendar) -> Self {
        Zones {
            cal,
            resolver: cal.build_tz_resolver(),
        }
    }

    /// The local time `local` written with `TZID=tzid`.
    fn read(&self, tzid: &str, local: NaiveDateTime, w: &mut Warnings) -> Stamp {
        if let Some(CalTz::Tz(zone)) = self.resolver.resolve(tzid) {
            return Stamp::Zoned(local, zone);
        }
        match self.block(tzid).and_then(|block| block_offset(self.cal, block, local)) {
            Some(offset) => {
                w.push(format!(
                    "time zone `{tzid}` is not one this build knows: its times were converted to UTC with the \
                     file's VTIMEZONE offsets (a series may be an hour off across daylight-saving changes)"
                ));
                Stamp::Zoned(local - Duration::seconds(offset.into()), Tz::UTC)
            }
            None => {
                w.push(format!(
                    "time zone `{tzid}` is not known and the file does not define it: its times are read as UTC"
                ));
                Stamp::Zoned(local, Tz::UTC)
            }
        }
    }

    /// The VTIMEZONE block with TZID `tzid`.
    fn block(&self, tzid: &str) -> Option<&'a ICalendarComponent> {
        self.cal.timezones().find(|tz| {
            tz.property(&ICalendarProperty::Tzid)
                .and_then(|e| e.values.first())
                .and_then(ICalendarValue::as_text)
                == Some(tzid)
        })
    }

    /// Every date or time of `entry` (a PERIOD counts by its start).
    fn stamps(&self, entry: &ICalendarEntry, w: &mut Warnings) -> Vec<Stamp> {
        entry
            .values
            .iter()
            .filter_map(|value| match value {
                ICalendarValue::PartialDateTime(p) => Some(p.as_ref()),
                ICalendarValue::Period(ICalendarPeriod::Range { start, .. })
                | ICalendarValue::Period(ICalendarPeriod::Duration { start, .. }) => Some(start),
                _ => None,
            })
            .filter_map(|p| self.stamp(entry, p, w))
            .collect()
    }

    fn stamp(&self, entry: &ICalendarEntry, p: &PartialDateTime, w: &mut Warnings) -> Option<Stamp> {
        let date = NaiveDate::from_ymd_opt(p.year?.into(), p.month?.into(), p.day?.into())?;
        let (Some(hour), Some(minute)) = (p.hour, p.minute) else {
            return Some(Stamp::Date(date));
        };
        // A leap second reads as the second before it.
        let time = NaiveTime::from_hms_opt(hour.into(), minute.into(), p.second.unwrap_or(0).min(59).into())?;
        let local = date.and_time(time);
        if let Some(hours) = p.tz_hour {
            // `Z`, or a numeric offset some writers append.
            let offset = i64::from(hours) * 3600 + i64::from(p.tz_minute.unwrap_or(0)) * 60;
            let offset = if p.tz_minus { -offset } else { offset };
            return Some(Stamp::Zoned(local - Duration::seconds(offset), Tz::UTC));
        }
        Some(match entry.tz_id() {
            Some(tzid) => self.read(tzid, local, w),
            None => Stamp::Floating(local),
        })
    }
}

/// The UTC offset (seconds east) a VTIMEZONE block gives at the wall-clock
/// time `local`: the TZOFFSETTO of the observance with the latest onset at or
/// before it (onsets are wall-clock times, RFC 5545 §3.6.5), or the earliest
/// observance's TZOFFSETFROM before any onset.
fn block_offset(cal: &ICalendar, block: &ICalendarComponent, local: NaiveDateTime) -> Option<i32> {
    let observances = block
        .component_ids
        .iter()
        .filter_map(|id| cal.component_by_id(*id))
        .filter(|c| {
            matches!(
                c.component_type,
                ICalendarComponentType::Standard | ICalendarComponentType::Daylight
            )
        });
    let mut latest: Option<(NaiveDateTime, i32)> = None;
    let mut earliest: Option<(NaiveDateTime, i32)> = None;
    for observance in observances {
        let Some(start) = observance_start(observance) else {
            continue;
        };
        let offset = |prop: ICalendarProperty| {
            observance
                .property(&prop)
                .and_then(|e| e.values.first())
                .and_then(ICalendarValue::as_partial_date_time)
                .and_then(utc_offset)
        };
        let (Some(from), Some(to)) = (
            offset(ICalendarProperty::Tzoffsetfrom),
            offset(ICalendarProperty::Tzoffsetto),
        ) else {
            continue;
        };
        if earliest.is_none_or(|(t, _)| start < t) {
            earliest = Some((start, from));
        }
        if let Some(onset) = last_onset(observance, start, local)
            && latest.is_none_or(|(t, _)| onset > t)
        {
            latest = Some((onset, to));
        }
    }
    latest.or(earliest).map(|(_, offset)| offset)
}

fn observance_start(observance: &ICalendarComponent) -> Option<NaiveDateTime> {
    let p = observance
        .property(&ICalendarProperty::Dtstart)?
        .values
        .first()?
        .as_partial_date_time()?;
    let date = NaiveDate::from_ymd_opt(p.year?.into(), p.month?.into(), p.day?.into())?;
    date.and_hms_opt(
        p.hour.unwrap_or(0).into(),
        p.minute.unwrap_or(0).into(),
        p.second.unwrap_or(0).into(),
    )
}

/// An offset value (`+0100`, `-0430`) in seconds east of UTC.
fn utc_offset(p: &PartialDateTime) -> Option<i32> {
    let seconds = i32::from(p.tz_hour?) * 3600 + i32::from(p.tz_minute.unwrap_or(0)) * 60;
    Some(if p.tz_minus { -seconds } else { seconds })
}

/// The latest onset of an observance at or before `local`: its DTSTART, its
/// RRULE's and its RDATEs'.
fn last_onset(observance: &ICalendarComponent, start: NaiveDateTime, local: NaiveDateTime) -> Option<NaiveDateTime> {
    if start > local {
        return None;
    }
    let mut onsets = vec![start];
    let rules = observance.properties(&ICalendarProperty::Rrule).flat_map(|e| &e.values);
    for value in rules {
        let ICalendarValue::RecurrenceRule(rule) = value else {
            continue;
        };
        let mut rule = rule.as_ref().clone();
        // UNTIL is applied separately: observances give it in UTC while their
        // DTSTART is local, and the minutes between do not matter here.
        let until = rule.until.take().and_then(|u| partial_naive(&u));
        let Ok(mut parsed) = rule.to_string().parse::<RRule<Unvalidated>>() else {
            continue;
        };
        if let Some(until) = until {
            parsed = parsed.until(as_naive_utc(until));
        }
        let Ok(set) = parsed.build(as_naive_utc(start)) else {
            continue;
        };
        let result = set.before(as_naive_utc(local)).all(MAX_OBSERVANCE_ONSETS);
        onsets.extend(result.dates.last().map(|d| d.naive_utc()));
    }
    let rdates = observance.properties(&ICalendarProperty::Rdate).flat_map(|e| &e.values);
    onsets.extend(
        rdates
            .filter_map(ICalendarValue::as_partial_date_time)
            .filter_map(partial_naive),
    );
    onsets.into_iter().filter(|t| *t <= local).max()
}

fn partial_naive(p: &PartialDateTime) -> Option<NaiveDateTime> {
    NaiveDate::from_ymd_opt(p.year?.into(), p.month?.into(), p.day?.into())?.and_hms_opt(
        p.hour.unwrap_or(0).into(),
        p.minute.unwrap_or(0).into(),
        p.second.unwrap_or(0).min(59).into(),
    )
}

/// One VEVENT, read and checked, before series and instances are matched.
#[derive(Debug, Clone)]
struct Vevent {
    uid: String,
    /// The original start of the occurrence this VEVENT replaces.
    recurrence_id: Option<Stamp>,
    sequence: i64,
    start: Stamp,
    end: Option<Stamp>,
    duration: Option<ICalendarDuration>,
    title: String,
    location: String,
    description: String,
    rule: Option<String>,
    rdates: Vec<Stamp>,
    exdates: Vec<Stamp>,
    reminders: BTreeSet<u32>,
    private: bool,
    cancelled: bool,
}

impl Vevent {
    /// Reads VEVENT `id`; `None` (with a warning) when it has no usable start.
    fn read(cal: &ICalendar, id: u32, c: &ICalendarComponent, zones: &Zones<'_>, w: &mut Warnings) -> Option<Vevent> {
        let title = c.property(&ICalendarProperty::Summary).map(text_of).unwrap_or_default();
        let one = |prop: ICalendarProperty, w: &mut Warnings| {
            c.property(&prop).and_then(|e| zones.stamps(e, w).into_iter().next())
        };
        let recurrence_id = one(ICalendarProperty::RecurrenceId, w);
        // An instance without a start keeps its original one.
        let start = one(ICalendarProperty::Dtstart, w).or(recurrence_id);
        let uid = match c.uid().map(str::trim).filter(|u| !u.is_empty()) {
            Some(uid) => uid.to_string(),
            None => {
                let uid = made_up_uid(&title, start);
                w.push(format!("event \"{title}\" has no UID: it was given `{uid}`"));
                uid
            }
        };
        let label = format!("event \"{title}\" ({uid})");
        if uid.len() > MAX_SHORT_BYTES {
            w.push(format!(
                "skipped an event whose UID is longer than {MAX_SHORT_BYTES} bytes"
            ));
            return None;
        }
        if recurrence_id.is_some()
            && c.property(&ICalendarProperty::RecurrenceId)
                .is_some_and(this_and_future)
        {
            w.push(format!(
                "{label}: RANGE=THISANDFUTURE is applied to the one occurrence only"
            ));
        }
        let Some(start) = start else {
            w.push(format!("skipped {label}: it has no DTSTART"));
            return None;
        };
        let rule = read_rule(c, &label, w);
        let mut all =
            |prop: ICalendarProperty| -> Vec<Stamp> { c.properties(&prop).flat_map(|e| zones.stamps(e, w)).collect() };
        let rdates = all(ICalendarProperty::Rdate);
        let exdates = all(ICalendarProperty::Exdate);
        let class = c.property(&ICalendarProperty::Class).and_then(|e| e.values.first());
        Some(Vevent {
            recurrence_id,
            sequence: c
                .property(&ICalendarProperty::Sequence)
                .and_then(|e| e.values.first())
                .and_then(ICalendarValue::as_integer)
                .unwrap_or(0),
            start,
            end: one(ICalendarProperty::Dtend, w),
            duration: c
                .property(&ICalendarProperty::Duration)
                .and_then(|e| match e.values.first() {
                    Some(ICalendarValue::Duration(d)) => Some(d.clone()),
                    _ => None,
                }),
            title: limit("title", title, MAX_SHORT_BYTES, &label, w),
            location: limit(
                "location",
                read_text(c, ICalendarProperty::Location),
                MAX_SHORT_BYTES,
                &label,
                w,
            ),
            description: limit(
                "description",
                read_text(c, ICalendarProperty::Description),
                MAX_DESCRIPTION_BYTES,
                &label,
                w,
            ),
            rule,
            rdates,
            exdates,
            reminders: read_reminders(cal, id, &label, w),
            private: matches!(
                class,
                Some(ICalendarValue::Classification(
                    ICalendarClassification::Private | ICalendarClassification::Confidential
                ))
            ),
            cancelled: c.status() == Some(&ICalendarStatus::Cancelled),
            uid,
        })
    }

    fn label(&self) -> String {
        format!("event \"{}\" ({})", self.title, self.uid)
    }

    /// When this VEVENT happens. Without DTEND the length is DURATION, else
    /// `default` (an instance's series length), else none for a timed event
    /// and one day for an all-day one (RFC 5545 §3.6.1).
    fn when(&self, default: Option<Duration>, w: &mut Warnings) -> When {
        match self.start {
            Stamp::Date(start) => {
                let days = match (self.end, &self.duration) {
                    (Some(Stamp::Date(end)), _) => (end - start).num_days(),
                    (Some(end), _) => (end.local_in(None).date() - start).num_days(),
                    (None, Some(d)) if !d.neg => i64::from(d.weeks) * 7 + i64::from(d.days),
                    (None, _) => default.map_or(1, |d| d.num_days()),
                };
                if days < 1 && (self.end.is_some() || self.duration.is_some()) {
                    w.push(format!(
                        "{}: it does not end after it starts: made one day long",
                        self.label()
                    ));
                }
                When::AllDay {
                    start,
                    // (Bounded: a file's duration cannot overflow the date.)
                    end: start + Duration::days(days.clamp(1, super::time::MAX_LENGTH_DAYS)),
                }
            }
            Stamp::Floating(start) | Stamp::Zoned(start, _) => {
                let zone = self.start.zone();
                let end = match (self.end, &self.duration) {
                    (Some(end), _) => end.local_in(zone),
                    (None, Some(d)) if !d.neg => add_duration(start, zone, d),
                    (None, _) => start + default.unwrap_or_else(Duration::zero),
                };
                if end < start {
                    w.push(format!("{}: it ends before it starts: made zero length", self.label()));
                }
                When::Timed {
                    start,
                    end: end.max(start),
                    zone,
                }
            }
        }
    }
}

/// A UID for an event that has none, made from its title and start, so a
/// second import of the same file finds the same event.
fn made_up_uid(title: &str, start: Option<Stamp>) -> String {
    let start = match start {
        Some(Stamp::Date(d)) => d.format("%Y%m%d").to_string(),
        Some(Stamp::Floating(t)) => t.format("%Y%m%dT%H%M%S").to_string(),
        Some(Stamp::Zoned(t, zone)) => format!("{} {}", t.format("%Y%m%dT%H%M%S"), zone.name()),
        None => String::new(),
    };
    let mut hasher = blake3::Hasher::new_derive_key("outpost/calendar/ics-missing-uid/v1");
    hasher.update(title.as_bytes());
    hasher.update(&[0]);
    hasher.update(start.as_bytes());
    let hex: String = hasher.finalize().as_bytes()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{hex}@import.outpost")
}

fn this_and_future(entry: &ICalendarEntry) -> bool {
    matches!(
        entry.parameter(&ICalendarParameterName::Range),
        Some(ICalendarParameterValue::Bool(true))
    )
}

/// A text property's value (parts a writer split at unescaped `;` rejoined).
fn text_of(entry: &ICalendarEntry) -> String {
    entry
        .values
        .iter()
        .filter_map(ICalendarValue::as_text)
        .collect::<Vec<_>>()
        .join(";")
}

fn read_text(c: &ICalendarComponent, prop: ICalendarProperty) -> String {
    c.property(&prop).map(text_of).unwrap_or_default()
}

/// `value`, cut at a character boundary to at most `max` bytes.
fn limit(field: &str, mut value: String, max: usize, label: &str, w: &mut Warnings) -> String {
    if value.len() > max {
        let mut cut = max;
        while !value.is_char_boundary(cut) {
            cut -= 1;
        }
        value.truncate(cut);
        w.push(format!("{label}: the {field} was cut to {max} bytes"));
    }
    value
}

/// The RRULE value as text. calcard parses it; its text form keeps every part
/// and UNTIL as written (a date, a local time or a UTC time), in RFC order.
fn read_rule(c: &ICalendarComponent, label: &str, w: &mut Warnings) -> Option<String> {
    let mut rules = c.properties(&ICalendarProperty::Rrule).flat_map(|e| e.values.first());
    let rule = match rules.next()? {
        ICalendarValue::RecurrenceRule(rule) => rule.to_string(),
        other => other.as_text().unwrap_or_default().to_string(),
    };
    if rules.next().is_some() {
        w.push(format!("{label}: only the first of its RRULEs is kept"));
    }
    if c.has_property(&ICalendarProperty::Exrule) {
        w.push(format!("{label}: EXRULE is not supported and was ignored"));
    }
    Some(rule)
}

/// Reminders from the VALARMs of component `id`: triggers relative to the
/// start, in whole minutes before it (rounded up, so a reminder is never late).
fn read_reminders(cal: &ICalendar, id: u32, label: &str, w: &mut Warnings) -> BTreeSet<u32> {
    let mut minutes = BTreeSet::new();
    for alarm in cal.alarms_for_id(id) {
        let action = alarm
            .property(&ICalendarProperty::Action)
            .and_then(|e| e.values.first());
        // Apple writes ACTION:NONE for "no alert".
        if action
            .and_then(ICalendarValue::as_text)
            .is_some_and(|a| a.eq_ignore_ascii_case("NONE"))
        {
            continue;
        }
        let Some(trigger) = alarm.property(&ICalendarProperty::Trigger) else {
            w.push(format!("{label}: an alarm without TRIGGER was ignored"));
            continue;
        };
        if matches!(
            trigger.parameter(&ICalendarParameterName::Related),
            Some(ICalendarParameterValue::Related(ICalendarRelated::End))
        ) {
            w.push(format!(
                "{label}: an alarm relative to the end was ignored (reminders count from the start)"
            ));
            continue;
        }
        match trigger.values.first() {
            Some(ICalendarValue::Duration(d)) if d.neg || d.is_empty() => {
                let before = (-d.as_seconds()).max(0);
                let m = (before + 59) / 60;
                match u32::try_from(m) {
                    Ok(m) if m <= MAX_REMINDER_MINUTES => {
                        minutes.insert(m);
                    }
                    _ => w.push(format!(
                        "{label}: an alarm {m} minutes before was ignored (at most {MAX_REMINDER_MINUTES})"
                    )),
                }
            }
            Some(ICalendarValue::Duration(d)) => {
                w.push(format!("{label}: an alarm {d} after the start was ignored"));
            }
            Some(ICalendarValue::PartialDateTime(_)) => {
                w.push(format!(
                    "{label}: an alarm at a fixed time was ignored (reminders are relative)"
                ));
            }
            _ => w.push(format!("{label}: an alarm with an unreadable TRIGGER was ignored")),
        }
    }
    minutes
}

/// Adds an RFC 5545 duration: weeks and days are nominal (the same wall-clock
/// time days later), hours, minutes and seconds exact (across a DST change
/// the wall clock shows the shift).
fn add_duration(start: NaiveDateTime, zone: Option<Tz>, d: &ICalendarDuration) -> NaiveDateTime {
    // Bounded to the longest event, so a file's duration cannot overflow.
    let longest = super::time::MAX_LENGTH_DAYS;
    let nominal = start + Duration::days((i64::from(d.weeks) * 7 + i64::from(d.days)).min(longest));
    let seconds = i64::from(d.hours) * 3600 + i64::from(d.minutes) * 60 + i64::from(d.seconds);
    let exact = Duration::seconds(seconds.min(longest * 86_400));
    match zone {
        Some(zone) => (instant(nominal, zone) + exact).with_timezone(&zone).naive_local(),
        None => nominal + exact,
    }
}

/// Matches instances to their series, one [`EventData`] per UID.
fn assemble(vevents: Vec<Vevent>, w: &mut Warnings) -> Vec<EventData> {
    let mut order: Vec<String> = Vec::new();
    let mut masters: HashMap<String, Vec<Vevent>> = HashMap::new();
    let mut instances: HashMap<String, Vec<Vevent>> = HashMap::new();
    for v in vevents {
        if !masters.contains_key(&v.uid) && !instances.contains_key(&v.uid) {
            order.push(v.uid.clone());
        }
        let group = if v.recurrence_id.is_some() {
            &mut instances
        } else {
            &mut masters
        };
        group.entry(v.uid.clone()).or_default().push(v);
    }
    let mut events = Vec::new();
    for uid in order {
        let instances = instances.remove(&uid).unwrap_or_default();
        match masters.remove(&uid).and_then(|m| latest(m, &format!("UID `{uid}`"), w)) {
            Some(master) => events.push(series(master, instances, w)),
            None => events.extend(instances.into_iter().filter_map(|i| orphan(i, w))),
        }
    }
    events
}

/// Of several VEVENTs for one thing, the one with the highest SEQUENCE (then
/// the last in the file), as a client applying them in order would keep.
fn latest(mut candidates: Vec<Vevent>, what: &str, w: &mut Warnings) -> Option<Vevent> {
    if candidates.len() > 1 {
        w.push(format!(
            "{} events share {what}: kept the one with the highest SEQUENCE (then the last)",
            candidates.len()
        ));
    }
    // A stable sort keeps file order among equal sequences.
    candidates.sort_by_key(|v| v.sequence);
    candidates.pop()
}

/// A series (or single event) with its instances applied.
fn series(master: Vevent, instances: Vec<Vevent>, w: &mut Warnings) -> EventData {
    let when = master.when(None, w);
    let label = master.label();
    let rule = master.rule.clone().filter(|rule| match Rule::parse(rule, &when) {
        Ok(_) if rule.len() <= MAX_SHORT_BYTES => true,
        Ok(_) => {
            w.push(format!(
                "{label}: its RRULE is too long and was dropped (the first occurrence is kept)"
            ));
            false
        }
        Err(e) => {
            w.push(format!(
                "{label}: {e}: the rule was dropped (the first occurrence is kept)"
            ));
            false
        }
    });
    let key = |s: Stamp| occurrence_key(&when, s);
    let mut data = EventData {
        uid: master.uid.clone(),
        title: master.title.clone(),
        location: master.location.clone(),
        description: master.description.clone(),
        when,
        rule,
        rdates: master.rdates.iter().map(|s| key(*s)).collect(),
        exdates: master.exdates.iter().map(|s| key(*s)).collect(),
        overrides: BTreeMap::new(),
        reminders: master.reminders.clone(),
        private: master.private,
        cancelled: master.cancelled,
        sealed: BTreeMap::new(),
    };
    let mut by_key: BTreeMap<String, Vec<Vevent>> = BTreeMap::new();
    for instance in instances {
        if let Some(rid) = instance.recurrence_id {
            by_key.entry(key(rid)).or_default().push(instance);
        }
    }
    for (key, candidates) in by_key {
        let Some(instance) = latest(candidates, &format!("UID `{}` and RECURRENCE-ID {key}", master.uid), w) else {
            continue;
        };
        // In a cancelled series the instances are written cancelled too
        // ([`write`]): that cancels nothing more.
        if instance.cancelled && !master.cancelled {
            data.exdates.insert(key);
            continue;
        }
        let o = instance_overrides(&master, &when, &key, &instance, w);
        if !o.is_empty() {
            data.overrides.insert(key, o);
        }
    }
    data
}

/// The occurrence key of an exception time, in the series' own terms: its
/// wall-clock time in the series' zone, a date for an all-day series. A bare
/// date in a timed series names that day's occurrence at the series' time.
fn occurrence_key(series: &When, s: Stamp) -> String {
    let local = match (s, series) {
        (Stamp::Date(d), When::Timed { start, .. }) => d.and_time(start.time()),
        _ => s.local_in(series.zone()),
    };
    series.key_at(local)
}

/// What an instance changes of its series' occurrence `key`.
fn instance_overrides(master: &Vevent, series: &When, key: &str, instance: &Vevent, w: &mut Warnings) -> Overrides {
    let differs = |mine: &String, theirs: &String| (mine != theirs).then(|| mine.clone());
    let own = instance.when(Some(series.local_length()), w);
    let original = parse_key(key).map(|t| series.starting_at(t));
    Overrides {
        title: differs(&instance.title, &master.title),
        location: differs(&instance.location, &master.location),
        description: differs(&instance.description, &master.description),
        when: (original.is_none_or(|o| !same_time(&own, &o))).then(|| own.to_string()),
        sealed: BTreeMap::new(),
    }
}

/// Whether two times are the same: equal as written, or zoned times meaning
/// the same instants (an instance written in UTC for a series in New York).
fn same_time(a: &When, b: &When) -> bool {
    a == b || (a.zone().is_some() && b.zone().is_some() && a.instants(Tz::UTC) == b.instants(Tz::UTC))
}

/// An instance whose series is not in the file: a single event of its own.
fn orphan(instance: Vevent, w: &mut Warnings) -> Option<EventData> {
    let when = instance.when(None, w);
    let key = instance.recurrence_id.map(|rid| occurrence_key(&when, rid))?;
    let uid = format!("{}/{key}", instance.uid);
    if instance.cancelled {
        w.push(format!(
            "skipped {}: a cancelled occurrence of a series not in the file",
            instance.label()
        ));
        return None;
    }
    w.push(format!(
        "{}: occurrence {key} of a series not in the file: imported as the single event `{uid}`",
        instance.label()
    ));
    Some(EventData {
        uid,
        title: instance.title,
        location: instance.location,
        description: instance.description,
        when,
        rule: None,
        rdates: BTreeSet::new(),
        exdates: BTreeSet::new(),
        overrides: BTreeMap::new(),
        reminders: instance.reminders,
        private: instance.private,
        cancelled: false,
        sealed: BTreeMap::new(),
    })
}

// ---------------------------------------------------------------------------
// Export
// ---------------------------------------------------------------------------

/// Writes `events` as an iCalendar file (RFC 5545, CRLF, folded at 75 octets)
/// named `name`, every DTSTAMP `stamp`. Events whose time does not parse are
/// left out. Each zone used gets a VTIMEZONE (UTC times are written with `Z`,
/// floating ones without a zone), each override a VEVENT with RECURRENCE-ID.
pub fn write(name: &str, events: &[Event], stamp: DateTime<Utc>) -> String {
    let events: Vec<(&Event, When)> = events.iter().filter_map(|e| e.when.map(|when| (e, when))).collect();
    let mut out = Lines::default();
    out.line("BEGIN:VCALENDAR");
    out.line("VERSION:2.0");
    out.line(&format!("PRODID:{PRODID}"));
    out.line("CALSCALE:GREGORIAN");
    out.line("METHOD:PUBLISH");
    out.prop("X-WR-CALNAME", &[], &escape(name));
    for (zone, (first, last)) in zones_used(&events, stamp) {
        for line in vtimezone(&zone, first, last) {
            out.line(&line);
        }
    }
    let stamp = stamp.format("%Y%m%dT%H%M%SZ").to_string();
    for (event, when) in &events {
        write_event(&mut out, event, when, &stamp);
    }
    out.line("END:VCALENDAR");
    out.text
}

/// Physical lines: each logical line folded to [`MAX_LINE_OCTETS`] octets
/// (a continuation starts with a space, which counts) and ended with CRLF.
#[derive(Default)]
struct Lines {
    text: String,
}

impl Lines {
    fn line(&mut self, line: &str) {
        fold_into(&mut self.text, line);
    }

    /// `NAME;P1=V1;P2=V2:value` (`value` already escaped as its type needs).
    fn prop(&mut self, name: &str, params: &[(&str, String)], value: &str) {
        let mut line = name.to_string();
        for (param, v) in params {
            line.push(';');
            line.push_str(param);
            line.push('=');
            line.push_str(&param_value(v));
        }
        line.push(':');
        line.push_str(value);
        self.line(&line);
    }
}

/// Appends `line` folded: no physical line longer than 75 octets, never a
/// UTF-8 character split across two (RFC 5545 §3.1).
fn fold_into(out: &mut String, line: &str) {
    let mut room = MAX_LINE_OCTETS;
    for ch in line.chars() {
        if ch.len_utf8() > room {
            out.push_str("\r\n ");
            room = MAX_LINE_OCTETS - 1;
        }
        out.push(ch);
        room -= ch.len_utf8();
    }
    out.push_str("\r\n");
}

/// TEXT escaping (RFC 5545 §3.3.11); a line break is `\n` however it was typed.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\n' => out.push_str("\\n"),
            '\r' => {
                if chars.peek() != Some(&'\n') {
                    out.push_str("\\n");
                }
            }
            _ => out.push(ch),
        }
    }
    out
}

/// A parameter value, quoted when it holds `:`, `;` or `,` (a quote cannot be
/// written at all, RFC 5545 §3.2).
fn param_value(v: &str) -> String {
    let v = v.replace('"', "");
    if v.contains([':', ';', ',']) {
        format!("\"{v}\"")
    } else {
        v
    }
}

/// Every zone the events use (series and moved occurrences; not UTC), with
/// the range of years its VTIMEZONE must cover.
fn zones_used(events: &[(&Event, When)], stamp: DateTime<Utc>) -> BTreeMap<String, (i32, i32)> {
    let mut zones: BTreeMap<String, (i32, i32)> = BTreeMap::new();
    let mut note = |when: &When| {
        if let Some(zone) = when.zone().filter(|z| *z != Tz::UTC) {
            let year = when.local_start().year();
            let span = zones.entry(zone.name().to_string()).or_insert((year, year));
            *span = (span.0.min(year), span.1.max(year).max(stamp.year()));
        }
    };
    for (event, when) in events {
        note(when);
        for o in event.overrides.values() {
            if let Some(moved) = o.when.as_deref().and_then(|w| w.parse::<When>().ok()) {
                note(&moved);
            }
        }
    }
    zones
}

/// The VTIMEZONE of IANA zone `zone` (calcard's, from this build's zone data),
/// covering `first` to two years after `last` and continuing with yearly
/// rules after that; its lines unfolded.
fn vtimezone(zone: &str, first: i32, last: i32) -> Vec<String> {
    let year_start =
        |y: i32| NaiveDate::from_ymd_opt(y, 1, 1).map(|d| d.and_time(NaiveTime::MIN).and_utc().timestamp());
    let (Some(from), Some(to)) = (year_start(first), year_start(last.saturating_add(2))) else {
        return Vec::new();
    };
    let mut cal = ICalendar {
        components: vec![ICalendarComponent::new(ICalendarComponentType::VCalendar)],
    };
    // A day's margin before the first year, as a zone's first local day may
    // start before 1 January in UTC.
    if cal.add_timezone(zone, from - 86_400, to).is_none() {
        return Vec::new();
    }
    let text = cal.to_string().replace("\r\n ", "").replace("\r\n\t", "");
    text.split("\r\n")
        .filter(|l| !l.is_empty() && *l != "BEGIN:VCALENDAR" && *l != "END:VCALENDAR")
        .map(str::to_string)
        .collect()
}

fn write_event(out: &mut Lines, e: &Event, when: &When, stamp: &str) {
    out.line("BEGIN:VEVENT");
    out.prop("UID", &[], &escape(&e.uid));
    out.prop("DTSTAMP", &[], stamp);
    write_times(out, when);
    if let Some(rule) = &e.rule {
        out.prop("RRULE", &[], rule.trim().strip_prefix("RRULE:").unwrap_or(rule.trim()));
    }
    for (name, keys) in [("RDATE", &e.rdates), ("EXDATE", &e.exdates)] {
        let times: BTreeSet<NaiveDateTime> = keys.iter().filter_map(|k| exception_time(e, when, k)).collect();
        if let Some((params, _)) = times.first().map(|t| time_value(when, *t)) {
            let values: Vec<String> = times.iter().map(|t| time_value(when, *t).1).collect();
            out.prop(name, &params, &values.join(","));
        }
    }
    write_texts(out, &e.title, &e.location, &e.description);
    write_flags(out, e);
    write_alarms(out, e);
    out.line("END:VEVENT");
    for (key, o) in &e.overrides {
        if e.exdates.contains(key) || o.is_empty() {
            continue;
        }
        if let Some(original) = exception_time(e, when, key) {
            write_instance(out, e, when, original, o, stamp);
        }
    }
}

/// One changed occurrence: a VEVENT with the series' UID and RECURRENCE-ID,
/// holding the occurrence's effective fields (RFC 5545 §3.8.4.4).
fn write_instance(out: &mut Lines, e: &Event, series: &When, original: NaiveDateTime, o: &Overrides, stamp: &str) {
    let own = o
        .when
        .as_deref()
        .and_then(|w| w.parse::<When>().ok())
        .unwrap_or_else(|| series.starting_at(original));
    out.line("BEGIN:VEVENT");
    out.prop("UID", &[], &escape(&e.uid));
    out.prop("DTSTAMP", &[], stamp);
    let (params, value) = time_value(series, original);
    out.prop("RECURRENCE-ID", &params, &value);
    write_times(out, &own);
    let pick = |over: &Option<String>, series: &String| over.clone().unwrap_or_else(|| series.clone());
    write_texts(
        out,
        &pick(&o.title, &e.title),
        &pick(&o.location, &e.location),
        &pick(&o.description, &e.description),
    );
    write_flags(out, e);
    write_alarms(out, e);
    out.line("END:VEVENT");
}

fn write_times(out: &mut Lines, when: &When) {
    let (params, value) = time_value(when, when.local_start());
    out.prop("DTSTART", &params, &value);
    let end = when.local_start() + when.local_length();
    let (params, value) = time_value(when, end);
    out.prop("DTEND", &params, &value);
}

fn write_texts(out: &mut Lines, title: &str, location: &str, description: &str) {
    for (name, value) in [("SUMMARY", title), ("LOCATION", location), ("DESCRIPTION", description)] {
        if !value.is_empty() {
            out.prop(name, &[], &escape(value));
        }
    }
}

fn write_flags(out: &mut Lines, e: &Event) {
    if e.private {
        out.line("CLASS:PRIVATE");
    }
    if e.cancelled {
        out.line("STATUS:CANCELLED");
    }
}

fn write_alarms(out: &mut Lines, e: &Event) {
    let text = if e.title.is_empty() {
        "Reminder"
    } else {
        e.title.as_str()
    };
    for minutes in &e.reminders {
        out.line("BEGIN:VALARM");
        out.line("ACTION:DISPLAY");
        out.line(&format!("TRIGGER:-PT{minutes}M"));
        out.prop("DESCRIPTION", &[], &escape(text));
        out.line("END:VALARM");
    }
}

/// The parameters and value of the local time `t` written the way `kind` is:
/// a date, a floating time, a UTC time or a time with TZID.
fn time_value(kind: &When, t: NaiveDateTime) -> (Vec<(&'static str, String)>, String) {
    let basic = t.format("%Y%m%dT%H%M%S").to_string();
    match kind {
        When::AllDay { .. } => (vec![("VALUE", "DATE".to_string())], t.format("%Y%m%d").to_string()),
        When::Timed { zone: None, .. } => (Vec::new(), basic),
        When::Timed { zone: Some(zone), .. } if *zone == Tz::UTC => (Vec::new(), format!("{basic}Z")),
        When::Timed { zone: Some(zone), .. } => (vec![("TZID", zone.name().to_string())], basic),
    }
}

/// The original local start an exception key names, as other clients must
/// see it to match an occurrence. A key that matches none but shares its day
/// with an occurrence at the series' time is written as that occurrence: the
/// exception followed its day when the series was moved (see `recur`).
fn exception_time(e: &Event, when: &When, key: &str) -> Option<NaiveDateTime> {
    let t = parse_key(key)?;
    if e.is_occurrence(when, t) {
        return Some(t);
    }
    let same_day = t.date().and_time(when.local_start().time());
    Some(if same_day != t && e.is_occurrence(when, same_day) {
        same_day
    } else {
        t
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn folded(line: &str) -> String {
        let mut out = String::new();
        fold_into(&mut out, line);
        out
    }

    #[test]
    fn folding_keeps_lines_short_and_characters_whole() {
        // ASCII: 75 octets fit on the first line, 74 on each continuation.
        let ascii = format!("DESCRIPTION:{}", "x".repeat(200));
        let out = folded(&ascii);
        let lines: Vec<&str> = out.trim_end_matches("\r\n").split("\r\n").collect();
        assert_eq!(lines[0].len(), 75);
        assert!(lines[1..].iter().all(|l| l.starts_with(' ') && l.len() <= 75));
        assert_eq!(out.replace("\r\n ", "").trim_end(), ascii);

        // Multi-byte: 3-byte CJK and 4-byte emoji never straddle a fold.
        for text in [
            "会议室".repeat(40),
            "🎉".repeat(40),
            format!("x{}", "ü".repeat(80)),
            "é".repeat(37),
        ] {
            let line = format!("SUMMARY:{text}");
            let out = folded(&line);
            assert!(out.ends_with("\r\n"));
            for physical in out.trim_end_matches("\r\n").split("\r\n") {
                assert!(physical.len() <= 75, "{} octets: {physical}", physical.len());
                assert!(!physical.is_empty());
            }
            // Unfolding (dropping CRLF and the one space) gives the line back.
            assert_eq!(out.replace("\r\n ", "").trim_end_matches("\r\n"), line);
        }
        // A line of exactly 75 octets is not folded.
        let exact = format!("SUMMARY:{}", "a".repeat(67));
        assert_eq!(folded(&exact), format!("{exact}\r\n"));
    }

    #[test]
    fn text_escaping() {
        assert_eq!(escape("a,b;c\\d\ne\r\nf\rg"), "a\\,b\\;c\\\\d\\ne\\nf\\ng");
    }

    #[test]
    fn durations_are_nominal_days_and_exact_hours() {
        let ny: Tz = "America/New_York".parse().unwrap();
        let t = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
        let d = |days: u32, hours: u32| ICalendarDuration {
            days,
            hours,
            ..Default::default()
        };
        // P1D over the spring change: 09:00 the next day.
        assert_eq!(
            add_duration(t("2027-03-13 09:00"), Some(ny), &d(1, 0)),
            t("2027-03-14 09:00")
        );
        // PT24H over it is 24 real hours: 10:00 on the wall clock, which skipped an hour.
        assert_eq!(
            add_duration(t("2027-03-13 09:00"), Some(ny), &d(0, 24)),
            t("2027-03-14 10:00")
        );
        assert_eq!(
            add_duration(t("2027-03-13 09:00"), None, &d(0, 24)),
            t("2027-03-14 09:00")
        );
    }

    fn event(when: &str, rule: Option<&str>) -> Event {
        Event {
            uid: "series@example.com".into(),
            organizer: "00".into(),
            title: "Sync".into(),
            when: Some(when.parse().unwrap()),
            rule: rule.map(str::to_string),
            ..Event::empty("e1")
        }
    }

    fn stamp() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap()
    }

    #[test]
    fn a_made_up_uid_is_stable() {
        let text = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nSUMMARY:No UID\r\nDTSTART:20270105T090000Z\r\n\
                    END:VEVENT\r\nEND:VCALENDAR\r\n";
        let (a, b) = (parse(text).unwrap(), parse(text).unwrap());
        assert_eq!(a.events[0].uid, b.events[0].uid);
        assert!(a.events[0].uid.ends_with("@import.outpost"));
        assert!(a.warnings[0].contains("has no UID"), "{:?}", a.warnings);
    }

    #[test]
    fn exceptions_that_followed_their_day_are_written_as_that_days_occurrence() {
        // The series moved from 09:00 to 10:00 after 01-14 was cancelled and
        // 01-21 renamed: other clients must see the 10:00 occurrences.
        let mut e = event(
            "2027-01-07T10:00:00/2027-01-07T11:00:00 Europe/Berlin",
            Some("FREQ=WEEKLY"),
        );
        e.exdates.insert("20270114T090000".into());
        e.overrides.insert(
            "20270121T090000".into(),
            Overrides {
                title: Some("Sync (short)".into()),
                ..Overrides::default()
            },
        );
        let text = write("x", &[e], stamp()).replace("\r\n ", "");
        assert!(text.contains("EXDATE;TZID=Europe/Berlin:20270114T100000\r\n"), "{text}");
        assert!(
            text.contains("RECURRENCE-ID;TZID=Europe/Berlin:20270121T100000\r\n"),
            "{text}"
        );
    }

    #[test]
    fn a_cancelled_series_keeps_its_changed_occurrences() {
        let mut e = event(
            "2027-01-07T10:00:00/2027-01-07T11:00:00 Europe/Berlin",
            Some("FREQ=WEEKLY"),
        );
        e.cancelled = true;
        e.overrides.insert(
            "20270114T100000".into(),
            Overrides {
                location: Some("Room 2".into()),
                ..Overrides::default()
            },
        );
        let back = parse(&write("x", &[e.clone()], stamp())).unwrap();
        assert_eq!(back.events.len(), 1);
        assert!(back.events[0].cancelled);
        assert!(back.events[0].exdates.is_empty());
        assert_eq!(back.events[0].overrides, e.overrides);
    }

    #[test]
    fn times_with_a_numeric_offset_are_utc_instants() {
        let text = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\nDTSTART:20270105T090000+0800\r\n\
                    DURATION:PT1H\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        let when = parse(text).unwrap().events[0].when;
        assert_eq!(when.to_string(), "2027-01-05T01:00:00/2027-01-05T02:00:00 UTC");
    }

    #[test]
    fn not_a_calendar() {
        assert_eq!(parse("hello"), Err(IcsError::NotICalendar));
        assert_eq!(
            parse("BEGIN:VCARD\r\nFN:x\r\nEND:VCARD\r\n"),
            Err(IcsError::NotICalendar)
        );
        assert!(parse("BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n").unwrap().events.is_empty());
    }
}
