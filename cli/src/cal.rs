//! `outpost cal`: shared calendars.

use std::path::PathBuf;

use anyhow::{Context, bail};
use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use clap::{Args, Subcommand, ValueEnum};
use outpost_crdt::calendar::time::{self as caltime, Typed};
use outpost_node::{
    api::{CalWrite, CreateDoc, Created},
    client::Client,
    core::{AgendaItem, CalAnswer, CalEdit, CalQuery, CalScope, CalWritten, EventChange, NewEvent, SpaceSummary},
    ids::SpaceId,
};

use crate::{exit::Usage, output};

#[derive(Subcommand)]
pub(crate) enum CalCmd {
    /// Create a shared calendar. Members see its events and are invited to
    /// them; writers add and edit events offline, and edits merge field by
    /// field when devices sync. Prints the calendar's id.
    New {
        name: String,
        /// A member's device card (or id, if this node has met it); repeat.
        #[arg(long)]
        member: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// List the calendars this node holds.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Add an event. Times are local times in --tz (default: this machine's
    /// zone), kept as such: a weekly 09:00 meeting stays at 09:00 across
    /// daylight-saving changes.
    ///
    /// Example: outpost cal add Team --title Standup --start "2026-12-01 09:00"
    /// --end 09:15 --rrule "FREQ=WEEKLY;BYDAY=MO,WE" --remind 10m
    Add {
        /// The calendar (id, unique id prefix, or name).
        cal: String,
        #[command(flatten)]
        event: AddArgs,
        #[arg(long)]
        json: bool,
    },
    /// Change an event: the whole series (EVENT, or --all), one occurrence
    /// (EVENT@DATE as `cal agenda` prints it, or --this), or an occurrence and
    /// the ones after it (EVENT@DATE --following).
    Edit {
        /// EVENT (an id prefix of 4+ characters) or EVENT@DATE for one occurrence.
        event: String,
        #[command(flatten)]
        scope: ScopeArgs,
        #[command(flatten)]
        change: EditArgs,
        #[arg(long)]
        json: bool,
    },
    /// Cancel an event: the whole series, one occurrence (EVENT@DATE), or an
    /// occurrence and the ones after it (EVENT@DATE --following).
    Cancel {
        event: String,
        #[command(flatten)]
        scope: ScopeArgs,
        #[arg(long)]
        json: bool,
    },
    /// Answer an invitation (readers of the calendar may answer too).
    Rsvp {
        event: String,
        #[arg(value_enum)]
        answer: Answer,
        #[arg(long)]
        json: bool,
    },
    /// The occurrences of events in a window (default: the next 7 days from
    /// today), recurrences expanded, shown in --tz.
    Agenda {
        /// Calendars to show (default: all).
        cal: Vec<String>,
        /// First day (YYYY-MM-DD) or time (YYYY-MM-DD HH:MM); default today.
        #[arg(long)]
        from: Option<String>,
        /// End (exclusive); default 7 days after --from.
        #[arg(long)]
        to: Option<String>,
        /// Zone the agenda is shown in (default: this machine's).
        #[arg(long)]
        tz: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// When people are busy, from the calendars this node reads (events they
    /// organise or were invited to and did not decline; private ones show as
    /// busy only).
    Freebusy {
        /// Members, by name, e-mail name or user id prefix (8+ hex).
        #[arg(required = true)]
        user: Vec<String>,
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        tz: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Import an iCalendar (.ics) file from Google Calendar, Outlook or Apple
    /// Calendar. Events are matched by UID: importing again updates them and
    /// duplicates nothing.
    Import {
        cal: String,
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Write a calendar as an iCalendar (.ics) file other calendar apps import.
    Export {
        cal: String,
        #[arg(short, long, value_name = "FILE.ics")]
        output: PathBuf,
    },
}

#[derive(Args)]
pub(crate) struct AddArgs {
    #[arg(long)]
    title: String,
    /// "YYYY-MM-DD HH:MM", or YYYY-MM-DD for an all-day event.
    #[arg(long)]
    start: String,
    /// "YYYY-MM-DD HH:MM", HH:MM (same day), or YYYY-MM-DD (last day of an
    /// all-day event). Default: one hour after the start.
    #[arg(long)]
    end: Option<String>,
    /// IANA zone of the times, e.g. Asia/Shanghai (default: this machine's).
    #[arg(long)]
    tz: Option<String>,
    /// Floating time: the same wall-clock time in every zone.
    #[arg(long, conflicts_with = "tz")]
    floating: bool,
    #[arg(long)]
    all_day: bool,
    /// An RFC 5545 rule, e.g. "FREQ=WEEKLY;BYDAY=MO,WE" or "FREQ=MONTHLY;BYDAY=-1FR;COUNT=6".
    #[arg(long)]
    rrule: Option<String>,
    #[arg(long)]
    location: Option<String>,
    #[arg(long)]
    description: Option<String>,
    /// A member to invite (name, e-mail name or user id prefix); repeat.
    #[arg(long)]
    attendee: Vec<String>,
    /// Remind before each occurrence: 10m, 1h, 1d, 1w; repeat.
    #[arg(long)]
    remind: Vec<String>,
    /// Others see only that you are busy.
    #[arg(long)]
    private: bool,
}

#[derive(Args)]
#[group(multiple = false)]
pub(crate) struct ScopeArgs {
    /// Only the occurrence named (EVENT@DATE).
    #[arg(long)]
    this: bool,
    /// The occurrence named and every one after it (the series is split
    /// there, as calendar apps do; edit prints the new series' id).
    #[arg(long)]
    following: bool,
    /// The whole series.
    #[arg(long)]
    all: bool,
}

impl ScopeArgs {
    fn scope(&self) -> Option<CalScope> {
        if self.this {
            Some(CalScope::This)
        } else if self.following {
            Some(CalScope::Following)
        } else if self.all {
            Some(CalScope::All)
        } else {
            None
        }
    }
}

#[derive(Args)]
pub(crate) struct EditArgs {
    #[arg(long)]
    title: Option<String>,
    /// A new start: "YYYY-MM-DD HH:MM" or HH:MM (same day). Keeps the length
    /// unless --end is given.
    #[arg(long)]
    start: Option<String>,
    #[arg(long)]
    end: Option<String>,
    #[arg(long)]
    tz: Option<String>,
    /// A new rule; "" stops the repetition.
    #[arg(long)]
    rrule: Option<String>,
    #[arg(long)]
    location: Option<String>,
    #[arg(long)]
    description: Option<String>,
    #[arg(long)]
    invite: Vec<String>,
    #[arg(long)]
    uninvite: Vec<String>,
    /// Replace the reminders (repeat); `--remind none` removes them.
    #[arg(long)]
    remind: Vec<String>,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Answer {
    Accept,
    Decline,
    Tentative,
}

pub(crate) async fn run(client: &Client, cmd: CalCmd) -> anyhow::Result<()> {
    match cmd {
        CalCmd::New { name, member, json } => {
            let created: Created = client
                .post(
                    "/v1/calendars",
                    &CreateDoc {
                        name,
                        members: member,
                        replicators: Vec::new(),
                    },
                )
                .await?;
            if json {
                output::json(&created)?;
            } else {
                println!("{}", created.space);
            }
        }
        CalCmd::List { json } => {
            let cals = calendars(client).await?;
            if json {
                output::json(&cals)?;
            } else {
                for c in cals {
                    println!("{}  {}", c.space, c.name.as_deref().unwrap_or("(not readable here)"));
                }
            }
        }
        CalCmd::Add { cal, event, json } => {
            let space = find_calendar(client, &cal).await?;
            let tz = if event.floating {
                None
            } else {
                Some(event.tz.unwrap_or_else(local_zone))
            };
            let new = NewEvent {
                title: event.title,
                start: event.start,
                end: event.end,
                tz,
                all_day: event.all_day,
                rrule: event.rrule,
                location: event.location,
                description: event.description,
                attendees: event.attendee,
                remind: event.remind,
                private: event.private,
            };
            let written = write(client, Some(space), CalEdit::Add(new)).await?;
            print_written(&written, json)?;
        }
        CalCmd::Edit {
            event,
            scope,
            change,
            json,
        } => {
            let remind = match change.remind.as_slice() {
                [] => None,
                [none] if none == "none" => Some(Vec::new()),
                _ => Some(change.remind),
            };
            let change = EventChange {
                title: change.title,
                start: change.start,
                end: change.end,
                tz: change.tz,
                rrule: change.rrule,
                location: change.location,
                description: change.description,
                // Privacy is set when an event is added (`cal add --private`).
                private: None,
                invite: change.invite,
                uninvite: change.uninvite,
                remind,
            };
            let edit = CalEdit::Edit {
                event,
                scope: scope.scope(),
                change,
            };
            print_written(&write(client, None, edit).await?, json)?;
        }
        CalCmd::Cancel { event, scope, json } => {
            let edit = CalEdit::Cancel {
                event,
                scope: scope.scope(),
            };
            print_written(&write(client, None, edit).await?, json)?;
        }
        CalCmd::Rsvp { event, answer, json } => {
            let answer = match answer {
                Answer::Accept => "accepted",
                Answer::Decline => "declined",
                Answer::Tentative => "tentative",
            };
            let edit = CalEdit::Rsvp {
                event,
                answer: answer.into(),
            };
            print_written(&write(client, None, edit).await?, json)?;
        }
        CalCmd::Agenda {
            cal,
            from,
            to,
            tz,
            json,
        } => {
            let mut spaces = Vec::new();
            for c in &cal {
                spaces.push(find_calendar(client, c).await?);
            }
            let (from, to, tz) = window(from, to, tz)?;
            let query = CalQuery::Agenda { spaces, from, to, tz };
            let CalAnswer::Agenda(items) = client.post("/v1/cal/read", &query).await? else {
                bail!("the daemon answered another question");
            };
            if json {
                output::json(&items)?;
            } else {
                print_agenda(&items);
            }
        }
        CalCmd::Freebusy {
            user,
            from,
            to,
            tz,
            json,
        } => {
            let (from, to, tz) = window(from, to, tz)?;
            let query = CalQuery::FreeBusy {
                users: user,
                from,
                to,
                tz,
            };
            let CalAnswer::FreeBusy(people) = client.post("/v1/cal/read", &query).await? else {
                bail!("the daemon answered another question");
            };
            if json {
                output::json(&people)?;
            } else {
                for p in people {
                    println!("{} ({})", p.name, &p.user[..p.user.len().min(12)]);
                    if p.busy.is_empty() {
                        println!("  free");
                    }
                    for b in p.busy {
                        println!("  busy {} – {}", b.start, b.end);
                    }
                }
            }
        }
        CalCmd::Import { cal, file, json } => {
            let space = find_calendar(client, &cal).await?;
            let ics = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {} as UTF-8 text", file.display()))?;
            let written = write(client, Some(space), CalEdit::Import { ics }).await?;
            if json {
                output::json(&written)?;
            } else {
                for w in &written.warnings {
                    eprintln!("warning: {w}");
                }
                let what = if written.changed {
                    "imported"
                } else {
                    "already up to date:"
                };
                println!("{what} {} events", written.imported);
            }
        }
        CalCmd::Export { cal, output } => {
            let space = find_calendar(client, &cal).await?;
            let CalAnswer::Export { ics, .. } = client.post("/v1/cal/read", &CalQuery::Export { space }).await? else {
                bail!("the daemon answered another question");
            };
            std::fs::write(&output, ics).with_context(|| format!("cannot write {}", output.display()))?;
        }
    }
    Ok(())
}

async fn write(client: &Client, space: Option<SpaceId>, edit: CalEdit) -> anyhow::Result<CalWritten> {
    Ok(client.post("/v1/cal", &CalWrite { space, edit }).await?)
}

/// The window a person asked for: `from` (default today) to `to` (default a
/// week later), in `tz` (default this machine's zone).
fn window(
    from: Option<String>,
    to: Option<String>,
    tz: Option<String>,
) -> anyhow::Result<(DateTime<Utc>, DateTime<Utc>, String)> {
    let tz = tz.unwrap_or_else(local_zone);
    let zone = caltime::parse_zone(&tz).map_err(|e| Usage(e.to_string()))?;
    let from = match from {
        Some(f) => moment(&f, zone)?,
        None => {
            let now = DateTime::from_timestamp_millis(outpost_node::clock::now_ms() as i64).unwrap_or_default();
            caltime::instant(now.with_timezone(&zone).date_naive().and_time(NaiveTime::MIN), zone)
        }
    };
    let to = match to {
        Some(t) => moment(&t, zone)?,
        None => from + Duration::days(7),
    };
    Ok((from, to, tz))
}

fn print_written(written: &CalWritten, json: bool) -> anyhow::Result<()> {
    for w in &written.warnings {
        eprintln!("warning: {w}");
    }
    if json {
        output::json(written)?;
    } else if let Some(event) = &written.event {
        println!("{event}");
    }
    Ok(())
}

async fn calendars(client: &Client) -> anyhow::Result<Vec<SpaceSummary>> {
    let spaces: Vec<SpaceSummary> = client.get("/v1/spaces").await?;
    Ok(spaces.into_iter().filter(|s| s.kind == "calendar").collect())
}

/// A calendar by id, unique id prefix, or name.
async fn find_calendar(client: &Client, name: &str) -> anyhow::Result<SpaceId> {
    let cals = calendars(client).await?;
    let matches: Vec<&SpaceSummary> = cals
        .iter()
        .filter(|c| c.space.to_string().starts_with(name) || c.name.as_deref() == Some(name))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one.space),
        [] => Err(Usage(format!(
            "no calendar `{name}` on this node: see `outpost cal list`, or create one with `outpost cal new`"
        ))
        .into()),
        _ => Err(Usage(format!(
            "`{name}` names {} calendars: use more of the id (`outpost cal list`)",
            matches.len()
        ))
        .into()),
    }
}

/// A typed date or time in `zone` as an instant.
pub(crate) fn moment(typed: &str, zone: chrono_tz::Tz) -> anyhow::Result<DateTime<Utc>> {
    let local = match typed.parse::<Typed>().map_err(|e| Usage(e.to_string()))? {
        Typed::Date(d) => d.and_time(NaiveTime::MIN),
        Typed::DateTime(t) => t,
        Typed::Time(_) => {
            return Err(Usage(format!("`{typed}`: give a date, YYYY-MM-DD or \"YYYY-MM-DD HH:MM\"")).into());
        }
    };
    Ok(caltime::instant(local, zone))
}

/// This machine's zone, by name.
fn local_zone() -> String {
    outpost_node::clock::local_zone().name().to_string()
}

fn print_agenda(items: &[AgendaItem]) {
    let mut day: Option<NaiveDate> = None;
    for item in items {
        let start = DateTime::parse_from_rfc3339(&item.start).ok();
        let date = start
            .map(|s| s.date_naive())
            .or_else(|| item.start.parse::<NaiveDate>().ok());
        if date != day {
            if let Some(d) = date {
                println!("{}", d.format("%a %Y-%m-%d"));
            }
            day = date;
        }
        let time = match (start, DateTime::parse_from_rfc3339(&item.end).ok()) {
            (Some(s), Some(e)) => format!("{}–{}", s.format("%H:%M"), e.format("%H:%M")),
            _ => "all day    ".into(),
        };
        let mut notes = Vec::new();
        if item.recurring {
            notes.push("repeats".to_string());
        }
        if item.changed {
            notes.push("changed".into());
        }
        if !item.location.is_empty() {
            notes.push(format!("@ {}", item.location));
        }
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!("  ({})", notes.join(", "))
        };
        println!(
            "  {time}  {}  [{}]{notes}  {}",
            item.title, item.calendar, item.occurrence
        );
    }
}
