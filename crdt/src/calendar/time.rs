//! Calendar time: what an author wrote (local times and an IANA zone) and the
//! instants it means.
//!
//! An event is stored as its author wrote it, never as UTC: "09:00 in Berlin,
//! weekly" must stay 09:00 across daylight-saving changes, and a zone's rules
//! may change after the event was written. Instants are computed at the edges,
//! with the zone data compiled into this build (chrono-tz), so every node of a
//! build computes the same instants.
//!
//! Local times a zone skips or repeats follow RFC 5545 §3.3.5: a time in a gap
//! is read with the offset before the gap (02:30 on a spring-forward night is
//! 03:30), a repeated time means its first occurrence.

use std::{fmt, str::FromStr};

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

/// Why a calendar time did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("`{0}` is not a date or time: write YYYY-MM-DD, YYYY-MM-DD HH:MM or HH:MM")]
    Syntax(String),
    #[error("`{0}` is not a time zone: use an IANA name such as Asia/Shanghai or Europe/Berlin")]
    Zone(String),
    #[error("the event ends ({end}) before it starts ({start})")]
    EndBeforeStart { start: String, end: String },
    #[error("an all-day event takes dates only, and a timed one date and time for both start and end")]
    Mixed,
    #[error(
        "calendar times lie between the years {FIRST_YEAR} and {LAST_YEAR}, and an event lasts at most {MAX_LENGTH_DAYS} days"
    )]
    Range,
}

/// The years a calendar time may lie in. Bounded so that no arithmetic on a
/// stored time can overflow (a peer's value is read on every node).
pub const FIRST_YEAR: i32 = 1900;
pub const LAST_YEAR: i32 = 2999;
/// The longest event.
pub const MAX_LENGTH_DAYS: i64 = 400;

/// Whether `t` lies in the years calendars use.
pub fn in_range(t: NaiveDateTime) -> bool {
    (FIRST_YEAR..=LAST_YEAR).contains(&t.year())
}

/// When an event (or one occurrence of it) happens, as its author wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// From `start` to `end`, local times in `zone`. Without a zone the times
    /// are *floating*: the same wall-clock time wherever the viewer is.
    Timed {
        start: NaiveDateTime,
        end: NaiveDateTime,
        zone: Option<Tz>,
    },
    /// Whole days from `start` up to `end`, exclusive (a one-day event ends the
    /// next day). All-day events float: a holiday is a date, not an instant.
    AllDay { start: NaiveDate, end: NaiveDate },
}

impl When {
    /// A timed event, checked: it may not end before it starts.
    pub fn timed(start: NaiveDateTime, end: NaiveDateTime, zone: Option<Tz>) -> Result<Self, TimeError> {
        if end < start {
            return Err(TimeError::EndBeforeStart {
                start: start.to_string(),
                end: end.to_string(),
            });
        }
        if !in_range(start) || !in_range(end) || end - start > Duration::days(MAX_LENGTH_DAYS) {
            return Err(TimeError::Range);
        }
        Ok(When::Timed { start, end, zone })
    }

    /// An all-day event of the days `first..=last`.
    pub fn all_day(first: NaiveDate, last: NaiveDate) -> Result<Self, TimeError> {
        if last < first {
            return Err(TimeError::EndBeforeStart {
                start: first.to_string(),
                end: last.to_string(),
            });
        }
        let end = last.succ_opt().unwrap_or(last);
        Self::days(first, end)
    }

    /// Whole days `start..end` (exclusive), checked.
    fn days(start: NaiveDate, end: NaiveDate) -> Result<Self, TimeError> {
        let midnight = |d: NaiveDate| d.and_time(NaiveTime::MIN);
        if end <= start
            || !in_range(midnight(start))
            || !in_range(midnight(end))
            || end - start > Duration::days(MAX_LENGTH_DAYS)
        {
            return Err(TimeError::Range);
        }
        Ok(When::AllDay { start, end })
    }

    /// The local start, as the recurrence rule counts it (midnight for a day).
    pub fn local_start(&self) -> NaiveDateTime {
        match self {
            When::Timed { start, .. } => *start,
            When::AllDay { start, .. } => start.and_time(NaiveTime::MIN),
        }
    }

    /// The length in local (wall-clock) time, as written. (Occurrences of a
    /// timed series last the series' exact length instead, see `recur`; the
    /// two differ only for one spanning a clock change.)
    pub fn local_length(&self) -> Duration {
        match self {
            When::Timed { start, end, .. } => *end - *start,
            When::AllDay { start, end } => *end - *start,
        }
    }

    /// The zone times are read in; `None` for floating and all-day events.
    pub fn zone(&self) -> Option<Tz> {
        match self {
            When::Timed { zone, .. } => *zone,
            When::AllDay { .. } => None,
        }
    }

    pub fn is_all_day(&self) -> bool {
        matches!(self, When::AllDay { .. })
    }

    /// The same kind of time, moved to start at `local_start`, keeping the length.
    pub fn starting_at(&self, local_start: NaiveDateTime) -> When {
        match *self {
            When::Timed { start, end, zone } => When::Timed {
                start: local_start,
                end: local_start + (end - start),
                zone,
            },
            When::AllDay { start, end } => When::AllDay {
                start: local_start.date(),
                end: local_start.date() + (end - start),
            },
        }
    }

    /// The instants this time means. Floating and all-day times are read in
    /// `viewer` (the zone the agenda is shown in).
    pub fn instants(&self, viewer: Tz) -> (DateTime<Utc>, DateTime<Utc>) {
        let zone = self.zone().unwrap_or(viewer);
        let start = self.local_start();
        (instant(start, zone), instant(start + self.local_length(), zone))
    }

    /// The key naming an occurrence that starts at `local` (RFC 5545's
    /// RECURRENCE-ID in basic format): `20261202T090000`, or `20261202` for a day.
    pub fn key_at(&self, local: NaiveDateTime) -> String {
        match self {
            When::Timed { .. } => local.format("%Y%m%dT%H%M%S").to_string(),
            When::AllDay { .. } => local.format("%Y%m%d").to_string(),
        }
    }
}

/// The stored form: `2026-12-01T09:00:00/2026-12-01T10:00:00 Asia/Shanghai`,
/// without the zone for a floating time, `2026-12-24/2026-12-25` for a day.
impl fmt::Display for When {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            When::Timed { start, end, zone } => {
                write!(
                    f,
                    "{}/{}",
                    start.format("%Y-%m-%dT%H:%M:%S"),
                    end.format("%Y-%m-%dT%H:%M:%S")
                )?;
                match zone {
                    Some(zone) => write!(f, " {}", zone.name()),
                    None => Ok(()),
                }
            }
            When::AllDay { start, end } => write!(f, "{}/{}", start.format("%Y-%m-%d"), end.format("%Y-%m-%d")),
        }
    }
}

impl FromStr for When {
    type Err = TimeError;

    fn from_str(s: &str) -> Result<Self, TimeError> {
        let syntax = || TimeError::Syntax(s.to_string());
        let (range, zone) = match s.split_once(' ') {
            Some((range, zone)) => (range, Some(parse_zone(zone)?)),
            None => (s, None),
        };
        let (start, end) = range.split_once('/').ok_or_else(syntax)?;
        if let (Ok(start), Ok(end)) = (
            NaiveDate::parse_from_str(start, "%Y-%m-%d"),
            NaiveDate::parse_from_str(end, "%Y-%m-%d"),
        ) {
            if zone.is_some() || end <= start {
                return Err(syntax());
            }
            return Self::days(start, end);
        }
        let time = |t: &str| NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S").map_err(|_| syntax());
        When::timed(time(start)?, time(end)?, zone)
    }
}

/// An IANA zone by name (`UTC` included).
pub fn parse_zone(name: &str) -> Result<Tz, TimeError> {
    name.parse::<Tz>().map_err(|_| TimeError::Zone(name.to_string()))
}

/// The instant a local time in `zone` means (RFC 5545 §3.3.5 for skipped and
/// repeated times).
pub fn instant(local: NaiveDateTime, zone: Tz) -> DateTime<Utc> {
    match zone.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        LocalResult::None => {
            // In a gap: read with the offset in force before it. A day earlier
            // is before any gap (no zone skips more than a day).
            let before = zone.offset_from_utc_datetime(&(local - Duration::days(1))).fix();
            DateTime::from_naive_utc_and_offset(local - Duration::seconds(before.local_minus_utc().into()), Utc)
        }
    }
}

/// A date or time a person typed: `2026-12-01`, `2026-12-01 09:00`,
/// `2026-12-01T09:00:00`, or a bare `09:00` (on a date the caller supplies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Typed {
    Date(NaiveDate),
    DateTime(NaiveDateTime),
    Time(NaiveTime),
}

impl FromStr for Typed {
    type Err = TimeError;

    fn from_str(s: &str) -> Result<Self, TimeError> {
        let s = s.trim();
        if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            return Ok(Typed::Date(d));
        }
        for format in [
            "%Y-%m-%d %H:%M",
            "%Y-%m-%dT%H:%M",
            "%Y-%m-%d %H:%M:%S",
            "%Y-%m-%dT%H:%M:%S",
        ] {
            if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
                return Ok(Typed::DateTime(t));
            }
        }
        for format in ["%H:%M", "%H:%M:%S"] {
            if let Ok(t) = NaiveTime::parse_from_str(s, format) {
                return Ok(Typed::Time(t));
            }
        }
        Err(TimeError::Syntax(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
    }

    #[test]
    fn stored_form_round_trips() {
        for s in [
            "2026-12-01T09:00:00/2026-12-01T10:30:00 Asia/Shanghai",
            "2026-12-01T09:00:00/2026-12-01T10:30:00",
            "2026-12-24/2026-12-26",
        ] {
            assert_eq!(s.parse::<When>().unwrap().to_string(), s);
        }
        for bad in [
            "2026-12-01T10:00:00/2026-12-01T09:00:00",
            "2026-12-01/2026-12-01",
            "2026-12-01T09:00:00/2026-12-01T10:00:00 Mars/Olympus",
            "2026-12-01/2026-12-02 UTC",
            "tomorrow",
        ] {
            assert!(bad.parse::<When>().is_err(), "{bad}");
        }
    }

    #[test]
    fn skipped_and_repeated_local_times_follow_rfc_5545() {
        let ny: Tz = "America/New_York".parse().unwrap();
        // 2026-03-08 02:30 does not exist in New York: it reads as 03:30 EDT.
        assert_eq!(
            instant(local("2026-03-08 02:30"), ny).to_string(),
            "2026-03-08 07:30:00 UTC"
        );
        // 2026-11-01 01:30 happens twice: the first (EDT, UTC−4) is meant.
        assert_eq!(
            instant(local("2026-11-01 01:30"), ny).to_string(),
            "2026-11-01 05:30:00 UTC"
        );
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        assert_eq!(
            instant(local("2026-03-29 02:30"), berlin).to_string(),
            "2026-03-29 01:30:00 UTC"
        );
        assert_eq!(
            instant(local("2026-10-25 02:30"), berlin).to_string(),
            "2026-10-25 00:30:00 UTC"
        );
    }

    #[test]
    fn typed_times() {
        assert_eq!(
            "2026-12-01".parse::<Typed>().unwrap(),
            Typed::Date(NaiveDate::from_ymd_opt(2026, 12, 1).unwrap())
        );
        assert_eq!(
            "2026-12-01 09:00".parse::<Typed>().unwrap(),
            Typed::DateTime(local("2026-12-01 09:00"))
        );
        assert!(matches!("9:30".parse::<Typed>().unwrap(), Typed::Time(_)));
        assert!("next friday".parse::<Typed>().is_err());
    }
}
