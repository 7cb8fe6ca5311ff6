//! The calendar model: recurrence across daylight-saving changes, exceptions,
//! the merge rules for concurrent edits, and the calendar rules.

use automerge::transaction::Transaction;
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use outpost_crdt::{
    ActorId, Author, Change, DocId, Error, Violation,
    calendar::{self, CalendarDoc, Fields, Rsvp, Scope, Write, time::When},
    writer::actor_id,
};

const DOC: DocId = DocId([9; 16]);
const ALICE: &str = "a11ce";
const BOB: &str = "b0b";

fn actor(n: u8) -> ActorId {
    actor_id(&[n; 32], &DOC, 1)
}

fn editor(user: &str) -> Author {
    Author {
        user: user.into(),
        editor: true,
        admin: false,
    }
}

fn reader(user: &str) -> Author {
    Author {
        user: user.into(),
        editor: false,
        admin: false,
    }
}

fn local(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
}

fn utc(s: &str) -> DateTime<Utc> {
    Utc.from_utc_datetime(&local(s))
}

fn zone(name: &str) -> Tz {
    name.parse().unwrap()
}

fn timed(start: &str, end: &str, tz: &str) -> When {
    When::timed(local(start), local(end), Some(zone(tz))).unwrap()
}

fn add(id: &str, title: &str, when: When, rule: Option<&str>) -> Write {
    Write::Add {
        id: id.into(),
        uid: format!("{id}@test"),
        organizer: ALICE.into(),
        fields: Fields {
            title: Some(title.into()),
            when: Some(when),
            rule: rule.map(Into::into),
            ..Fields::default()
        },
        attendees: vec![BOB.into()],
        reminders: vec![15],
    }
}

fn edit(id: &str, scope: Scope, fields: Fields) -> Write {
    Write::Edit {
        id: id.into(),
        scope,
        fields,
        invite: vec![],
        uninvite: vec![],
        reminders: None,
    }
}

/// Start instants (UTC, minutes) of an event's occurrences in a window.
fn starts(cal: &CalendarDoc, id: &str, from: &str, to: &str) -> Vec<String> {
    let (occurrences, limited) = cal.event(id).unwrap().occurrences(utc(from), utc(to), zone("UTC"));
    assert!(!limited);
    occurrences
        .iter()
        .map(|o| o.start.format("%Y-%m-%d %H:%M").to_string())
        .collect()
}

/// A calendar with one event written by Alice, and Bob's replica of it.
fn shared(write: Write) -> (CalendarDoc, CalendarDoc) {
    let mut a = CalendarDoc::new(DOC);
    let change = a.write(actor(1), &[write], 1).unwrap();
    let mut b = CalendarDoc::new(DOC);
    b.apply(vec![change], &editor(ALICE)).unwrap();
    (a, b)
}

fn sync(a: &mut CalendarDoc, a_changes: Vec<Change>, b: &mut CalendarDoc, b_changes: Vec<Change>) {
    a.apply(b_changes, &editor(BOB)).unwrap();
    b.apply(a_changes, &editor(ALICE)).unwrap();
    assert_eq!(a.events(), b.events(), "replicas converge");
}

#[test]
fn a_weekly_meeting_keeps_its_local_time_across_new_york_dst() {
    // Monday 09:00 in New York: 14:00Z in EST (UTC−5), 13:00Z in EDT (UTC−4).
    // 2026-03-08 and 2026-11-01 are the changes.
    let (cal, _) = shared(add(
        "standup",
        "Standup",
        timed("2026-03-02 09:00", "2026-03-02 09:30", "America/New_York"),
        Some("FREQ=WEEKLY;BYDAY=MO"),
    ));
    assert_eq!(
        starts(&cal, "standup", "2026-03-01 00:00", "2026-03-17 00:00"),
        ["2026-03-02 14:00", "2026-03-09 13:00", "2026-03-16 13:00"]
    );
    assert_eq!(
        starts(&cal, "standup", "2026-10-25 00:00", "2026-11-10 00:00"),
        ["2026-10-26 13:00", "2026-11-02 14:00", "2026-11-09 14:00"]
    );
}

#[test]
fn berlin_and_shanghai_over_a_year() {
    // Berlin 09:00: 08:00Z in CET, 07:00Z in CEST (2026-03-29 to 2026-10-25).
    let (cal, _) = shared(add(
        "jour-fixe",
        "Jour fixe",
        timed("2026-01-05 09:00", "2026-01-05 10:00", "Europe/Berlin"),
        Some("FREQ=MONTHLY;BYDAY=1MO;COUNT=12"),
    ));
    let berlin = starts(&cal, "jour-fixe", "2026-01-01 00:00", "2027-01-01 00:00");
    assert_eq!(berlin.len(), 12);
    assert_eq!(berlin[2], "2026-03-02 08:00", "first Monday of March: still CET");
    assert_eq!(berlin[3], "2026-04-06 07:00", "first Monday of April: CEST");
    assert_eq!(berlin[9], "2026-10-05 07:00");
    assert_eq!(berlin[10], "2026-11-02 08:00", "back to CET");
    // Shanghai has no daylight saving: 09:00 is always 01:00Z.
    let (cal, _) = shared(add(
        "zaohui",
        "早会",
        timed("2026-01-01 09:00", "2026-01-01 09:15", "Asia/Shanghai"),
        Some("FREQ=WEEKLY;BYDAY=TH"),
    ));
    let shanghai = starts(&cal, "zaohui", "2026-01-01 00:00", "2027-01-01 00:00");
    assert_eq!(shanghai.len(), 53);
    assert!(shanghai.iter().all(|s| s.ends_with("01:00")), "{shanghai:?}");
}

#[test]
fn skipped_and_repeated_hours_follow_rfc_5545() {
    // Daily at 02:30 in New York: on 2026-03-08 02:30 does not exist (03:30
    // EDT is meant, 07:30Z); on 2026-11-01 it happens once (EDT 01:30 is
    // repeated, 02:30 is not), so 02:30 EST = 07:30Z.
    let (cal, _) = shared(add(
        "backup",
        "Backup",
        timed("2026-03-07 02:30", "2026-03-07 02:45", "America/New_York"),
        Some("FREQ=DAILY"),
    ));
    assert_eq!(
        starts(&cal, "backup", "2026-03-07 00:00", "2026-03-10 00:00"),
        ["2026-03-07 07:30", "2026-03-08 07:30", "2026-03-09 06:30"]
    );
    // 01:30 on 2026-11-01 happens twice: the first (EDT, 05:30Z) is meant.
    let (cal, _) = shared(add(
        "night",
        "Night job",
        timed("2026-10-31 01:30", "2026-10-31 01:45", "America/New_York"),
        Some("FREQ=DAILY;COUNT=3"),
    ));
    assert_eq!(
        starts(&cal, "night", "2026-10-30 00:00", "2026-11-05 00:00"),
        ["2026-10-31 05:30", "2026-11-01 05:30", "2026-11-02 06:30"]
    );
}

#[test]
fn until_as_a_date_a_local_time_and_utc() {
    let when = timed("2026-12-01 09:00", "2026-12-01 10:00", "Asia/Shanghai");
    for rule in [
        "FREQ=DAILY;UNTIL=20261203",
        "FREQ=DAILY;UNTIL=20261203T090000",
        "FREQ=DAILY;UNTIL=20261203T010000Z",
    ] {
        let (cal, _) = shared(add("e", "E", when, Some(rule)));
        assert_eq!(
            starts(&cal, "e", "2026-11-01 00:00", "2027-01-01 00:00").len(),
            3,
            "{rule}"
        );
    }
}

#[test]
fn all_day_and_floating_events_follow_the_viewer() {
    let (cal, _) = shared(add(
        "holiday",
        "Holiday",
        When::all_day(local("2026-12-24 00:00").date(), local("2026-12-25 00:00").date()).unwrap(),
        None,
    ));
    let event = cal.event("holiday").unwrap();
    let (in_shanghai, _) = event.occurrences(utc("2026-12-01 00:00"), utc("2027-01-01 00:00"), zone("Asia/Shanghai"));
    assert_eq!(in_shanghai[0].start, utc("2026-12-23 16:00"));
    assert_eq!(in_shanghai[0].end, utc("2026-12-25 16:00"));
    let (in_ny, _) = event.occurrences(
        utc("2026-12-01 00:00"),
        utc("2027-01-01 00:00"),
        zone("America/New_York"),
    );
    assert_eq!(in_ny[0].start, utc("2026-12-24 05:00"));
}

#[test]
fn one_occurrence_moved_renamed_and_one_cancelled() {
    let (mut cal, _) = shared(add(
        "sync",
        "Sync",
        timed("2026-12-07 10:00", "2026-12-07 11:00", "Europe/Berlin"),
        Some("FREQ=WEEKLY"),
    ));
    let moved = Fields {
        title: Some("Sync (moved)".into()),
        when: Some(timed("2026-12-15 15:00", "2026-12-15 16:00", "Europe/Berlin")),
        ..Fields::default()
    };
    cal.write(
        actor(1),
        &[
            edit("sync", Scope::This("20261214T100000".into()), moved),
            Write::Cancel {
                id: "sync".into(),
                scope: Scope::This("20261221T100000".into()),
            },
        ],
        2,
    )
    .unwrap();
    let (occurrences, _) =
        cal.event("sync")
            .unwrap()
            .occurrences(utc("2026-12-01 00:00"), utc("2027-01-01 00:00"), zone("UTC"));
    let shown: Vec<(String, String)> = occurrences
        .iter()
        .map(|o| (o.start.format("%m-%d %H:%M").to_string(), o.title.clone()))
        .collect();
    assert_eq!(
        shown,
        [
            ("12-07 09:00".to_string(), "Sync".to_string()),
            ("12-15 14:00".into(), "Sync (moved)".into()),
            ("12-28 09:00".into(), "Sync".into()),
        ]
    );
    // An occurrence that does not exist cannot be edited.
    let bad = edit("sync", Scope::This("20261215T100000".into()), Fields::default());
    assert!(matches!(
        cal.write(actor(1), &[bad], 3),
        Err(Error::Calendar(calendar::WriteError::NoOccurrence { .. }))
    ));
}

#[test]
fn one_moves_the_event_while_the_other_renames_it() {
    let (mut a, mut b) = shared(add(
        "review",
        "Review",
        timed("2026-12-03 14:00", "2026-12-03 15:00", "Asia/Shanghai"),
        None,
    ));
    let moved = Fields {
        when: Some(timed("2026-12-04 10:00", "2026-12-04 11:00", "Asia/Shanghai")),
        ..Fields::default()
    };
    let renamed = Fields {
        title: Some("Design review".into()),
        location: Some("3F 会议室".into()),
        ..Fields::default()
    };
    let ca = a.write(actor(1), &[edit("review", Scope::All, moved)], 2).unwrap();
    let cb = b.write(actor(2), &[edit("review", Scope::All, renamed)], 2).unwrap();
    sync(&mut a, vec![ca], &mut b, vec![cb]);
    let e = a.event("review").unwrap();
    assert_eq!(e.title, "Design review");
    assert_eq!(e.location, "3F 会议室");
    assert_eq!(e.when.unwrap().local_start(), local("2026-12-04 10:00"));
}

#[test]
fn a_cancelled_occurrence_stays_cancelled_when_the_series_moves() {
    // Alice cancels Wednesday's occurrence; Bob, offline, moves the series
    // from 09:00 to 10:00 and renames it. Wednesday stays cancelled (the
    // exception follows its day), the rest move and are renamed.
    let (mut a, mut b) = shared(add(
        "daily",
        "Daily",
        timed("2026-12-07 09:00", "2026-12-07 09:15", "Europe/Berlin"),
        Some("FREQ=DAILY;COUNT=5"),
    ));
    let cancel = Write::Cancel {
        id: "daily".into(),
        scope: Scope::This("20261209T090000".into()),
    };
    let series = Fields {
        title: Some("Daily (new time)".into()),
        when: Some(timed("2026-12-07 10:00", "2026-12-07 10:15", "Europe/Berlin")),
        ..Fields::default()
    };
    let ca = a.write(actor(1), &[cancel], 2).unwrap();
    let cb = b.write(actor(2), &[edit("daily", Scope::All, series)], 2).unwrap();
    sync(&mut a, vec![ca], &mut b, vec![cb]);
    let (occurrences, _) =
        a.event("daily")
            .unwrap()
            .occurrences(utc("2026-12-01 00:00"), utc("2027-01-01 00:00"), zone("UTC"));
    let shown: Vec<String> = occurrences
        .iter()
        .map(|o| o.start.format("%d %H:%M").to_string())
        .collect();
    assert_eq!(shown, ["07 09:00", "08 09:00", "10 09:00", "11 09:00"]);
    assert!(occurrences.iter().all(|o| o.title == "Daily (new time)"));
}

#[test]
fn cancelling_the_series_wins_over_a_concurrent_edit() {
    let (mut a, mut b) = shared(add(
        "party",
        "Party",
        timed("2026-12-18 18:00", "2026-12-18 22:00", "Asia/Shanghai"),
        None,
    ));
    let ca = a
        .write(
            actor(1),
            &[Write::Cancel {
                id: "party".into(),
                scope: Scope::All,
            }],
            2,
        )
        .unwrap();
    let renamed = Fields {
        title: Some("Year-end party".into()),
        ..Fields::default()
    };
    let cb = b.write(actor(2), &[edit("party", Scope::All, renamed)], 2).unwrap();
    sync(&mut a, vec![ca], &mut b, vec![cb]);
    let e = b.event("party").unwrap();
    assert!(e.cancelled);
    assert_eq!(e.title, "Year-end party", "no field is lost");
    assert!(
        e.occurrences(utc("2026-12-01 00:00"), utc("2027-01-01 00:00"), zone("UTC"))
            .0
            .is_empty()
    );
}

#[test]
fn editing_all_occurrences_clears_their_own_values_of_that_field() {
    let (mut cal, _) = shared(add(
        "w",
        "Weekly",
        timed("2026-12-07 10:00", "2026-12-07 11:00", "Asia/Shanghai"),
        Some("FREQ=WEEKLY"),
    ));
    let one = Fields {
        title: Some("Special".into()),
        location: Some("Roof".into()),
        ..Fields::default()
    };
    cal.write(actor(1), &[edit("w", Scope::This("20261214T100000".into()), one)], 2)
        .unwrap();
    let all = Fields {
        title: Some("Renamed".into()),
        ..Fields::default()
    };
    cal.write(actor(1), &[edit("w", Scope::All, all)], 3).unwrap();
    let e = cal.event("w").unwrap();
    let o = &e.overrides["20261214T100000"];
    assert_eq!(o.title, None, "the series title now shows on every occurrence");
    assert_eq!(
        o.location.as_deref(),
        Some("Roof"),
        "other fields of the occurrence stay"
    );
}

#[test]
fn a_reader_may_answer_for_itself_and_nothing_else() {
    let (mut a, mut b) = shared(add(
        "m",
        "Meeting",
        timed("2026-12-03 14:00", "2026-12-03 15:00", "Asia/Shanghai"),
        None,
    ));
    let answer = b
        .write(
            actor(2),
            &[Write::Rsvp {
                id: "m".into(),
                user: BOB.into(),
                answer: Rsvp::Accepted,
            }],
            2,
        )
        .unwrap();
    assert!(a.validate(answer.clone(), &reader(BOB)).is_ok());
    assert_eq!(
        a.validate(answer.clone(), &reader("mallory")).map(drop),
        Err(calendar::Violation::ReaderWrite),
        "an answer for another user"
    );
    a.apply(vec![answer], &reader(BOB)).unwrap();
    assert_eq!(a.event("m").unwrap().attendees[BOB], Rsvp::Accepted);

    let rename = b
        .write(
            actor(2),
            &[edit(
                "m",
                Scope::All,
                Fields {
                    title: Some("Mine now".into()),
                    ..Fields::default()
                },
            )],
            3,
        )
        .unwrap();
    assert_eq!(
        a.validate(rename.clone(), &reader(BOB)).map(drop),
        Err(calendar::Violation::ReaderWrite)
    );
    assert!(a.validate(rename, &editor(BOB)).is_ok());

    let mut c = CalendarDoc::new(DOC);
    let new = c
        .write(
            actor(3),
            &[add(
                "x",
                "X",
                timed("2026-12-03 14:00", "2026-12-03 15:00", "UTC"),
                None,
            )],
            1,
        )
        .unwrap();
    assert_eq!(
        a.validate(new.clone(), &reader(BOB)).map(drop),
        Err(calendar::Violation::NotEditor)
    );
    // The organizer is the creator: another user cannot be named.
    assert_eq!(
        a.validate(new, &editor(BOB)).map(drop),
        Err(calendar::Violation::Organizer)
    );
}

#[test]
fn the_rules_refuse_what_the_schema_does_not_have() {
    use automerge::{ROOT, transaction::Transactable};
    let (a, events, event) = one_event();
    let forge = |f: &dyn Fn(&mut Transaction<'_>)| forge(&a, f);
    let wipe = forge(&|tx| tx.delete(ROOT, "events").unwrap());
    assert_eq!(
        a.validate(wipe, &editor(BOB)).map(drop),
        Err(calendar::Violation::Schema)
    );
    let unknown = forge(&|tx| tx.put(&event, "colour", "red").unwrap());
    assert!(matches!(
        a.validate(unknown, &editor(BOB)),
        Err(calendar::Violation::Field(_))
    ));
    let wrong_type = forge(&|tx| tx.put(&event, "title", 7).unwrap());
    assert!(matches!(
        a.validate(wrong_type, &editor(BOB)),
        Err(calendar::Violation::Value(_))
    ));
    let nested = forge(&|tx| {
        tx.put_object(&event, "title", automerge::ObjType::Text).unwrap();
    });
    assert!(a.validate(nested, &editor(BOB)).is_err());
    let delete_event = forge(&|tx| tx.delete(&events, "m").unwrap());
    assert_eq!(
        a.validate(delete_event, &editor(BOB)).map(drop),
        Err(calendar::Violation::Schema)
    );
    let long = forge(&|tx| tx.put(&event, "title", "x".repeat(2000)).unwrap());
    assert!(matches!(
        a.validate(long, &editor(BOB)),
        Err(calendar::Violation::Value(_))
    ));
    let _ = Violation::Calendar(calendar::Violation::Schema).reason();
}

/// A calendar holding one event "m", with the ids of `events` and of "m".
fn one_event() -> (CalendarDoc, automerge::ObjId, automerge::ObjId) {
    use automerge::{ROOT, ReadDoc};
    let (a, _) = shared(add(
        "m",
        "M",
        timed("2026-12-03 14:00", "2026-12-03 15:00", "UTC"),
        None,
    ));
    let events = a.automerge().get(ROOT, "events").unwrap().unwrap().1;
    let event = a.automerge().get(&events, "m").unwrap().unwrap().1;
    (a, events, event)
}

/// A change made by hand (as a hostile writer would) on a copy of `cal`.
fn forge(cal: &CalendarDoc, f: &dyn Fn(&mut Transaction<'_>)) -> Change {
    use automerge::ReadDoc;
    let mut doc = cal.automerge().fork().with_actor(actor(4));
    let mut tx = doc.transaction();
    f(&mut tx);
    let (hash, _) = tx.commit();
    doc.get_change_by_hash(&hash.unwrap()).unwrap()
}

mod convergence {
    //! Property: any two sets of concurrent edits, applied in either order,
    //! give the same calendar and the same occurrences on both replicas.

    use proptest::prelude::*;

    use super::*;

    fn op() -> impl Strategy<Value = Write> {
        let day = 7u32..14;
        prop_oneof![
            "[a-z]{1,8}".prop_map(|t| edit(
                "s",
                Scope::All,
                Fields {
                    title: Some(t),
                    ..Fields::default()
                }
            )),
            (8u32..18).prop_map(|h| edit(
                "s",
                Scope::All,
                Fields {
                    when: Some(timed(
                        &format!("2026-12-07 {h:02}:00"),
                        &format!("2026-12-07 {h:02}:30"),
                        "Europe/Berlin"
                    )),
                    ..Fields::default()
                }
            )),
            day.clone().prop_map(|d| Write::Cancel {
                id: "s".into(),
                scope: Scope::This(format!("202612{d:02}T090000")),
            }),
            (day, "[a-z]{1,8}").prop_map(|(d, t)| edit(
                "s",
                Scope::This(format!("202612{d:02}T090000")),
                Fields {
                    location: Some(t),
                    ..Fields::default()
                }
            )),
            Just(Write::Cancel {
                id: "s".into(),
                scope: Scope::All
            }),
            // Editors invite others (their own answers are tested elsewhere).
            "[A-Z]{1,4}".prop_map(|r| Write::Rsvp {
                id: "s".into(),
                user: r,
                answer: Rsvp::NeedsAction
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn concurrent_edits_converge(ours in prop::collection::vec(op(), 1..5), theirs in prop::collection::vec(op(), 1..5)) {
            let (mut a, mut b) = shared(add(
                "s",
                "Series",
                timed("2026-12-07 09:00", "2026-12-07 09:30", "Europe/Berlin"),
                Some("FREQ=DAILY;COUNT=7"),
            ));
            let mut ca = Vec::new();
            for (i, w) in ours.iter().enumerate() {
                // A write that no longer applies (its occurrence moved away) is skipped.
                if let Ok(c) = a.write(actor(1), std::slice::from_ref(w), 10 + i as i64) {
                    ca.push(c);
                }
            }
            let mut cb = Vec::new();
            for (i, w) in theirs.iter().enumerate() {
                if let Ok(c) = b.write(actor(2), std::slice::from_ref(w), 10 + i as i64) {
                    cb.push(c);
                }
            }
            a.apply(cb, &editor(BOB)).unwrap();
            b.apply(ca, &editor(ALICE)).unwrap();
            prop_assert_eq!(a.events(), b.events());
            let window = (utc("2026-12-01 00:00"), utc("2027-01-01 00:00"));
            let occ = |c: &CalendarDoc| c.event("s").unwrap().occurrences(window.0, window.1, zone("UTC")).0;
            prop_assert_eq!(occ(&a), occ(&b));
        }
    }
}

#[test]
fn this_and_following_splits_the_series() {
    let (mut cal, _) = shared(add(
        "w",
        "Weekly",
        timed("2026-12-07 09:00", "2026-12-07 10:00", "Europe/Berlin"),
        Some("FREQ=WEEKLY;COUNT=6"),
    ));
    cal.write(
        actor(1),
        &[Write::Cancel {
            id: "w".into(),
            scope: Scope::This("20261228T090000".into()),
        }],
        2,
    )
    .unwrap();
    let split = Write::Split {
        id: "w".into(),
        key: "20261221T090000".into(),
        new_id: "w2".into(),
        new_uid: "w@test_R20261221T090000".into(),
        organizer: ALICE.into(),
        fields: Fields {
            title: Some("Weekly (new room)".into()),
            when: Some(timed("2026-12-21 10:00", "2026-12-21 11:00", "Europe/Berlin")),
            ..Fields::default()
        },
    };
    cal.write(actor(1), &[split], 3).unwrap();
    let before = starts(&cal, "w", "2026-12-01 00:00", "2027-03-01 00:00");
    assert_eq!(before, ["2026-12-07 08:00", "2026-12-14 08:00"]);
    let after = cal.event("w2").unwrap();
    assert_eq!(
        after.rule.as_deref(),
        Some("FREQ=WEEKLY;COUNT=4"),
        "the COUNT is shared out"
    );
    assert_eq!(after.attendees, cal.event("w").unwrap().attendees);
    assert!(
        after.exdates.contains("20261228T090000"),
        "exceptions from the split on move"
    );
    let (occ, _) = after.occurrences(utc("2026-12-01 00:00"), utc("2027-03-01 00:00"), zone("UTC"));
    let shown: Vec<String> = occ
        .iter()
        .map(|o| format!("{} {}", o.start.format("%m-%d %H:%M"), o.title))
        .collect();
    // The cancelled 28th follows its day to the new time.
    assert_eq!(
        shown,
        [
            "12-21 09:00 Weekly (new room)",
            "01-04 09:00 Weekly (new room)",
            "01-11 09:00 Weekly (new room)"
        ]
    );
    // Cancel this and following: the series ends before it.
    cal.write(
        actor(1),
        &[Write::Truncate {
            id: "w2".into(),
            key: "20270104T100000".into(),
        }],
        4,
    )
    .unwrap();
    assert_eq!(
        starts(&cal, "w2", "2026-12-01 00:00", "2027-03-01 00:00"),
        ["2026-12-21 09:00"]
    );
    // Splitting at the first occurrence is an edit of the whole series.
    let first = Write::Truncate {
        id: "w".into(),
        key: "20261207T090000".into(),
    };
    assert!(matches!(
        cal.write(actor(1), &[first], 5),
        Err(Error::Calendar(calendar::WriteError::Rule(_)))
    ));
}

#[test]
fn hostile_values_neither_crash_nor_stall_nor_take_over() {
    use automerge::transaction::Transactable;
    let (a, events, event) = one_event();
    let forge = |f: &dyn Fn(&mut Transaction<'_>)| forge(&a, f);
    // Another map under a taken id would hide the event.
    let replace = forge(&|tx| {
        let e = tx.put_object(&events, "m", automerge::ObjType::Map).unwrap();
        tx.put(&e, "organizer", BOB).unwrap();
    });
    assert_eq!(
        a.validate(replace, &editor(BOB)).map(drop),
        Err(calendar::Violation::Schema)
    );
    // An editor invites others but does not answer for them.
    let forged = forge(&|tx| tx.put(&event, format!("attendee/{BOB}"), "declined").unwrap());
    assert_eq!(
        a.validate(forged.clone(), &editor(ALICE)).map(drop),
        Err(calendar::Violation::ReaderWrite)
    );
    assert!(a.validate(forged, &editor(BOB)).is_ok(), "Bob answers for himself");
    // Privacy and the private key's commitment are set once.
    for (key, value) in [
        ("private", automerge::ScalarValue::Boolean(true)),
        ("seal/commit", vec![0u8; 32].into()),
    ] {
        let later = forge(&|tx| tx.put(&event, key, value.clone()).unwrap());
        assert!(
            matches!(a.validate(later, &editor(BOB)), Err(calendar::Violation::SetOnce(_))),
            "{key}"
        );
    }

    // A time out of range reads as no time: nothing to expand, no panic.
    let mut cal = CalendarDoc::new(DOC);
    let mut far = a.automerge().fork().with_actor(actor(5));
    let mut tx = far.transaction();
    let e = tx.put_object(&events, "far", automerge::ObjType::Map).unwrap();
    tx.put(&e, "title", "Far").unwrap();
    tx.put(&e, "when", "-262000-01-01T00:00:00/+262000-01-01T00:00:00")
        .unwrap();
    tx.put(&e, "rdate/99991231T000000", true).unwrap();
    tx.commit();
    cal.apply(far.get_changes(&[]).into_iter().skip(1).collect(), &editor(ALICE))
        .unwrap();
    let far = cal.event("far").unwrap();
    assert_eq!(far.when, None);
    assert!(
        far.occurrences(DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC, zone("UTC"))
            .0
            .is_empty()
    );

    // A rule far too dense for the window is cut, not walked for hours.
    let (dense, _) = shared(add(
        "dense",
        "Dense",
        timed("1900-01-01 00:00", "1900-01-01 00:00", "UTC"),
        Some("FREQ=SECONDLY"),
    ));
    let started = std::time::Instant::now();
    let (shown, limited) =
        dense
            .event("dense")
            .unwrap()
            .occurrences(utc("2026-01-01 00:00"), utc("2027-01-01 00:00"), zone("UTC"));
    assert!(limited && shown.is_empty());
    // A minutely rule from long ago expands a day near now (shifted, not walked).
    let (minutely, _) = shared(add(
        "minutely",
        "Minutely",
        timed("1950-01-01 00:00", "1950-01-01 00:00", "UTC"),
        Some("FREQ=MINUTELY;INTERVAL=30"),
    ));
    let (shown, limited) =
        minutely
            .event("minutely")
            .unwrap()
            .occurrences(utc("2026-12-01 00:00"), utc("2026-12-02 00:00"), zone("UTC"));
    assert!(!limited);
    assert_eq!(shown.len(), 48);
    assert_eq!(shown[0].start, utc("2026-12-01 00:00"));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "expansion is bounded"
    );
}
