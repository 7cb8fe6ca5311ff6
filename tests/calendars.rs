//! Calendars between daemon processes: events sync and expand across
//! daylight-saving changes, concurrent edits made across a partition merge by
//! the documented rules, a reader answers but cannot edit, and ICS files
//! import, export and re-import without duplicates.

mod common;

use std::{path::Path, time::Duration};

use common::{Node, pair, user_of, wait_until};
use serde_json::Value;

fn new_calendar(a: &Node, member: &Node) -> String {
    a.json(&["cal", "new", "Team", "--member", &member.card(), "--json"])["space"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The agenda of December 2026 (UTC) as (occurrence, start, title, location).
fn agenda(node: &Node, from: &str, to: &str) -> Vec<(String, String, String, String)> {
    let items = node.json(&["cal", "agenda", "--from", from, "--to", to, "--tz", "UTC", "--json"]);
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let s = |k: &str| i[k].as_str().unwrap_or_default().to_string();
            (s("occurrence"), s("start"), s("title"), s("location"))
        })
        .collect()
}

fn event_id(written: &Value) -> String {
    written["event"].as_str().expect("an event id").to_string()
}

fn partition(a: &mut Node, b: &mut Node) {
    a.stop();
    b.stop();
    a.start(&[]);
    b.start(&[]);
}

fn heal(a: &Node, b: &mut Node) {
    b.stop();
    b.start(&[a.addr()]);
}

#[test]
fn events_sync_and_keep_their_local_time_across_dst() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = pair(root.path());
    let cal = new_calendar(&a, &b);
    let written = a.json(&[
        "cal",
        "add",
        "Team",
        "--title",
        "Standup",
        "--start",
        "2026-10-26 09:00",
        "--end",
        "09:15",
        "--tz",
        "America/New_York",
        "--rrule",
        "FREQ=WEEKLY;BYDAY=MO;COUNT=3",
        "--location",
        "会议室 A",
        "--json",
    ]);
    let id = event_id(&written);
    assert_eq!(written["space"], cal.as_str());
    let expected = [
        "2026-10-26T13:00:00+00:00",
        "2026-11-02T14:00:00+00:00",
        "2026-11-09T14:00:00+00:00",
    ];
    let on_b = wait_until(Duration::from_secs(30), "b to receive the event", || {
        b.try_json(&[
            "cal",
            "agenda",
            "--from",
            "2026-10-01",
            "--to",
            "2026-12-01",
            "--tz",
            "UTC",
            "--json",
        ])
        .ok()
        .filter(|v| v.as_array().is_some_and(|a| a.len() == 3))
    });
    let starts: Vec<&str> = on_b
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["start"].as_str().unwrap())
        .collect();
    assert_eq!(starts, expected, "09:00 New York is 13:00Z in EDT and 14:00Z in EST");
    assert_eq!(on_b[0]["location"], "会议室 A");
    assert_eq!(on_b[0]["occurrence"], format!("{id}@20261026T090000").as_str());
    // Shown in Shanghai: the same instants, local times there.
    let in_shanghai = b.json(&[
        "cal",
        "agenda",
        "--from",
        "2026-10-01",
        "--to",
        "2026-12-01",
        "--tz",
        "Asia/Shanghai",
        "--json",
    ]);
    assert_eq!(in_shanghai[1]["start"], "2026-11-02T22:00:00+08:00");
    // The human agenda names the day and the occurrence.
    let out = b.cli(&[
        "cal",
        "agenda",
        "--from",
        "2026-11-02",
        "--to",
        "2026-11-03",
        "--tz",
        "UTC",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Mon 2026-11-02") && text.contains("14:00–14:15  Standup"),
        "{text}"
    );

    // Mistakes get a clear error and a non-zero exit.
    let err = a.fails(&["cal", "add", "Team", "--title", "X", "--start", "tomorrow"], 2);
    assert!(err.contains("YYYY-MM-DD"), "{err}");
    let err = a.fails(
        &[
            "cal",
            "add",
            "Team",
            "--title",
            "X",
            "--start",
            "2026-12-01 09:00",
            "--tz",
            "Mars/Base",
        ],
        2,
    );
    assert!(err.contains("IANA"), "{err}");
    let err = a.fails(
        &[
            "cal",
            "add",
            "Team",
            "--title",
            "X",
            "--start",
            "2026-12-01 09:00",
            "--rrule",
            "FREQ=SOMETIMES",
        ],
        2,
    );
    assert!(err.contains("FREQ=SOMETIMES"), "{err}");
    let err = a.fails(&["cal", "edit", &format!("{id}@2026-11-03"), "--title", "Nope"], 2);
    assert!(err.contains("not an occurrence"), "{err}");
    let err = a.fails(&["cal", "add", "Nowhere", "--title", "X", "--start", "2026-12-01"], 2);
    assert!(err.contains("no calendar"), "{err}");
}

#[test]
fn concurrent_edits_across_a_partition_merge_by_the_rules() {
    let root = tempfile::tempdir().unwrap();
    let (mut a, mut b) = pair(root.path());
    new_calendar(&a, &b);
    let review = event_id(&a.json(&[
        "cal",
        "add",
        "Team",
        "--title",
        "Review",
        "--start",
        "2026-12-03 14:00",
        "--tz",
        "Asia/Shanghai",
        "--json",
    ]));
    let daily = event_id(&a.json(&[
        "cal",
        "add",
        "Team",
        "--title",
        "Daily",
        "--start",
        "2026-12-07 09:00",
        "--end",
        "09:15",
        "--tz",
        "Europe/Berlin",
        "--rrule",
        "FREQ=DAILY;COUNT=5",
        "--json",
    ]));
    wait_until(Duration::from_secs(30), "b to receive both events", || {
        (agenda(&b, "2026-12-01", "2027-01-01").len() == 6).then_some(())
    });

    partition(&mut a, &mut b);
    // One moves the review, the other renames it and sets a room.
    a.json(&["cal", "edit", &review, "--start", "2026-12-04 10:00", "--json"]);
    b.json(&[
        "cal",
        "edit",
        &review,
        "--title",
        "Design review",
        "--location",
        "3F",
        "--json",
    ]);
    // One cancels Wednesday's daily; the other moves the series to 10:00 and renames it.
    a.json(&["cal", "cancel", &format!("{daily}@2026-12-09"), "--json"]);
    b.json(&[
        "cal",
        "edit",
        &daily,
        "--start",
        "10:00",
        "--title",
        "Daily (new time)",
        "--all",
        "--json",
    ]);
    heal(&a, &mut b);

    let expected = vec![
        (
            format!("{review}@20261204T100000"),
            "2026-12-04T02:00:00+00:00",
            "Design review",
            "3F",
        ),
        (
            format!("{daily}@20261207T100000"),
            "2026-12-07T09:00:00+00:00",
            "Daily (new time)",
            "",
        ),
        (
            format!("{daily}@20261208T100000"),
            "2026-12-08T09:00:00+00:00",
            "Daily (new time)",
            "",
        ),
        (
            format!("{daily}@20261210T100000"),
            "2026-12-10T09:00:00+00:00",
            "Daily (new time)",
            "",
        ),
        (
            format!("{daily}@20261211T100000"),
            "2026-12-11T09:00:00+00:00",
            "Daily (new time)",
            "",
        ),
    ];
    let expected: Vec<(String, String, String, String)> = expected
        .into_iter()
        .map(|(o, s, t, l)| (o, s.to_string(), t.to_string(), l.to_string()))
        .collect();
    for node in [&a, &b] {
        wait_until(
            Duration::from_secs(30),
            "both nodes to show the merged calendar",
            || (agenda(node, "2026-12-01", "2027-01-01") == expected).then_some(()),
        );
    }
}

#[test]
fn a_reader_answers_an_invitation_but_cannot_edit() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = pair(root.path());
    let cal = a.json(&["cal", "new", "Board", "--json"])["space"]
        .as_str()
        .unwrap()
        .to_string();
    a.json(&["space", "invite", &cal, &b.card(), "--role", "reader", "--json"]);
    let bob = user_of(&b);
    let id = event_id(&a.json(&[
        "cal",
        "add",
        "Board",
        "--title",
        "Board meeting",
        "--start",
        "2026-12-10 15:00",
        "--tz",
        "UTC",
        "--attendee",
        &bob[..12],
        "--json",
    ]));
    wait_until(Duration::from_secs(30), "the reader to see the event", || {
        (agenda(&b, "2026-12-01", "2027-01-01").len() == 1).then_some(())
    });
    b.json(&["cal", "rsvp", &id, "accept", "--json"]);
    wait_until(Duration::from_secs(30), "the organizer to see the answer", || {
        let items = a.json(&["cal", "agenda", "--from", "2026-12-01", "--to", "2027-01-01", "--json"]);
        (items[0]["attendees"][0]["answer"] == "accepted").then_some(())
    });
    let err = b.fails(&["cal", "edit", &id, "--title", "Mine now"], 4);
    assert!(err.contains("reader"), "{err}");
    // Someone not invited cannot answer.
    let other = event_id(&a.json(&[
        "cal",
        "add",
        "Board",
        "--title",
        "Prep",
        "--start",
        "2026-12-09 15:00",
        "--tz",
        "UTC",
        "--json",
    ]));
    wait_until(Duration::from_secs(30), "the reader to see the second event", || {
        (agenda(&b, "2026-12-01", "2027-01-01").len() == 2).then_some(())
    });
    let err = b.fails(&["cal", "rsvp", &other, "accept"], 4);
    assert!(err.contains("not invited"), "{err}");
}

#[test]
fn free_busy_conflicts_and_private_events() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = pair(root.path());
    new_calendar(&a, &b);
    let (alice, bob) = (user_of(&a), user_of(&b));
    let add = |title: &str, start: &str, end: &str, extra: &[&str]| -> Value {
        let mut args = vec![
            "cal", "add", "Team", "--title", title, "--start", start, "--end", end, "--tz", "UTC",
        ];
        args.extend_from_slice(extra);
        args.push("--json");
        a.json(&args)
    };
    let review = add("Review", "2026-12-03 14:00", "15:00", &["--attendee", &bob[..10]]);
    assert!(review["warnings"].as_array().unwrap().is_empty(), "{review}");
    add(
        "Dentist",
        "2026-12-03 16:00",
        "17:00",
        &["--private", "--location", "Clinic"],
    );
    // Over Bob's review: the writer is warned, the event is still added.
    let clash = add("Planning", "2026-12-03 14:30", "15:30", &["--attendee", &bob[..10]]);
    let warnings = clash["warnings"].to_string();
    assert!(warnings.contains(&bob[..12]) && warnings.contains("Review"), "{clash}");
    assert!(clash["event"].is_string());

    // Bob sees the private event only as busy time.
    let items = wait_until(Duration::from_secs(30), "b to receive the three events", || {
        let items = b.json(&[
            "cal",
            "agenda",
            "--from",
            "2026-12-03",
            "--to",
            "2026-12-04",
            "--tz",
            "UTC",
            "--json",
        ]);
        (items.as_array().unwrap().len() == 3).then_some(items)
    });
    let private = &items[2];
    assert_eq!(private["title"], "busy");
    assert_eq!(private["busy_only"], true);
    assert_eq!(private["location"], "");
    let mine = a.json(&[
        "cal",
        "agenda",
        "--from",
        "2026-12-03",
        "--to",
        "2026-12-04",
        "--tz",
        "UTC",
        "--json",
    ]);
    assert_eq!(mine[2]["title"], "Dentist", "the organizer sees it all");
    // Its text is sealed for Alice's devices: Bob, a writer, may move it but
    // not read or change its text.
    let dentist = mine[2]["event"].as_str().unwrap().to_string();
    let err = b.fails(&["cal", "edit", &dentist, "--title", "Gossip"], 4);
    assert!(err.contains("sealed"), "{err}");
    let exported = root.path().join("b.ics");
    b.cli(&["cal", "export", "Team", "-o", &exported.display().to_string()]);
    let text = std::fs::read_to_string(&exported).unwrap();
    assert!(
        !text.contains("Dentist") && !text.contains("Clinic") && text.contains("Busy"),
        "{text}"
    );
    // A private event Bob is invited to: his devices hold its key.
    add(
        "1:1",
        "2026-12-04 10:00",
        "10:30",
        &["--private", "--attendee", &bob[..10]],
    );
    wait_until(Duration::from_secs(30), "b to read the private 1:1", || {
        let items = b.json(&[
            "cal",
            "agenda",
            "--from",
            "2026-12-04",
            "--to",
            "2026-12-05",
            "--tz",
            "UTC",
            "--json",
        ]);
        (items[0]["title"] == "1:1" && items[0]["busy_only"] == false).then_some(())
    });

    // Free/busy: Alice organises all three (merged where they overlap); Bob
    // takes part in two.
    let fb = b.json(&[
        "cal",
        "freebusy",
        &alice[..10],
        &bob[..10],
        "--from",
        "2026-12-03",
        "--to",
        "2026-12-04",
        "--tz",
        "UTC",
        "--json",
    ]);
    let busy = |i: usize| -> Vec<(String, String)> {
        fb[i]["busy"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["start"].as_str().unwrap().to_string(),
                    b["end"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let span = |s: &str, e: &str| (format!("2026-12-03T{s}:00+00:00"), format!("2026-12-03T{e}:00+00:00"));
    assert_eq!(busy(0), [span("14:00", "15:30"), span("16:00", "17:00")]);
    assert_eq!(busy(1), [span("14:00", "15:30")]);
    // Declining frees the time.
    b.json(&["cal", "rsvp", review["event"].as_str().unwrap(), "decline", "--json"]);
    let fb = b.json(&[
        "cal",
        "freebusy",
        &bob[..10],
        "--from",
        "2026-12-03",
        "--to",
        "2026-12-04",
        "--tz",
        "UTC",
        "--json",
    ]);
    assert_eq!(fb[0]["busy"][0]["start"], "2026-12-03T14:30:00+00:00");
    let err = b.fails(
        &[
            "cal",
            "freebusy",
            "nobody-here",
            "--from",
            "2026-12-03",
            "--to",
            "2026-12-04",
        ],
        2,
    );
    assert!(err.contains("nobody-here"), "{err}");
}

#[test]
fn ics_files_import_export_and_reimport_without_duplicates() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = pair(root.path());
    a.json(&["cal", "new", "Imported", "--member", &b.card(), "--json"]);
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("crdt/tests/ics");
    let year = |node: &Node| {
        node.json(&[
            "cal",
            "agenda",
            "--from",
            "2027-01-01",
            "--to",
            "2028-01-01",
            "--tz",
            "Europe/Berlin",
            "--json",
        ])
    };
    let mut total = 0;
    for file in [
        "google.ics",
        "outlook.ics",
        "apple.ics",
        "chinese.ics",
        "edge-cases.ics",
    ] {
        let path = corpus.join(file).display().to_string();
        let first = a.json(&["cal", "import", "Imported", &path, "--json"]);
        assert_eq!(first["changed"], true, "{file}: {first}");
        assert!(first["imported"].as_u64().unwrap() > 0);
        let again = a.json(&["cal", "import", "Imported", &path, "--json"]);
        assert_eq!(again["changed"], false, "{file}: a re-import changes nothing");
        total += first["imported"].as_u64().unwrap();
    }
    let on_a = year(&a);
    let count = on_a.as_array().unwrap().len();
    assert!(count > 100, "a year of occurrences: {count}");
    assert!(on_a.to_string().contains("双周例会"), "non-ASCII titles survive");
    // The same occurrences on b; the private ones (CLASS:PRIVATE in the file)
    // are sealed for the importer's devices, so b sees them as busy time.
    let public = |v: &Value| -> Vec<(Value, Value, Value, Value)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let title = if i["private"] == true {
                    Value::Null
                } else {
                    i["title"].clone()
                };
                (i["occurrence"].clone(), i["start"].clone(), i["end"].clone(), title)
            })
            .collect()
    };
    let on_b = wait_until(Duration::from_secs(30), "b to hold the same year", || {
        let on_b = year(&b);
        (public(&on_b) == public(&on_a)).then_some(on_b)
    });
    let private: Vec<&Value> = on_b
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["private"] == true)
        .collect();
    assert!(!private.is_empty());
    assert!(
        private.iter().all(|i| i["busy_only"] == true && i["title"] == "busy"),
        "{private:?}"
    );

    // Export, and import the export: nothing changes, nothing is duplicated.
    let out = root.path().join("export.ics");
    a.cli(&["cal", "export", "Imported", "-o", &out.display().to_string()]);
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.starts_with("BEGIN:VCALENDAR\r\n") && text.contains("BEGIN:VTIMEZONE"),
        "{}",
        &text[..200]
    );
    assert!(text.matches("BEGIN:VEVENT").count() as u64 >= total);
    let back = a.json(&["cal", "import", "Imported", &out.display().to_string(), "--json"]);
    assert_eq!(back["changed"], false, "{back}");
    assert_eq!(year(&a), on_a);
    // Into a fresh calendar on the other node: the same occurrences.
    b.json(&["cal", "new", "Copy", "--json"]);
    b.json(&["cal", "import", "Copy", &out.display().to_string(), "--json"]);
    let copy = b.json(&[
        "cal",
        "agenda",
        "Copy",
        "--from",
        "2027-01-01",
        "--to",
        "2028-01-01",
        "--tz",
        "Europe/Berlin",
        "--json",
    ]);
    let strip = |v: &Value| -> Vec<(Value, Value, Value)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|i| (i["start"].clone(), i["end"].clone(), i["title"].clone()))
            .collect()
    };
    assert_eq!(strip(&copy), strip(&on_a));
    let err = a.fails(
        &[
            "cal",
            "import",
            "Imported",
            &root.path().join("missing.ics").display().to_string(),
        ],
        1,
    );
    assert!(err.contains("missing.ics"), "{err}");
    let not_ics = root.path().join("notes.txt");
    std::fs::write(&not_ics, "just some notes").unwrap();
    let err = a.fails(&["cal", "import", "Imported", &not_ics.display().to_string()], 2);
    assert!(err.contains("iCalendar"), "{err}");
}

/// "YYYY-MM-DD HH:MM:SS" in UTC, `secs` from now.
fn utc_in(secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(secs))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// The reminders in a node's inbox.
fn reminders(node: &Node) -> Vec<Value> {
    let inbox = node.json(&["inbox", "--json"]);
    inbox
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "reminder")
        .cloned()
        .collect()
}

#[test]
fn a_reminder_fires_once_not_again_after_a_restart_and_late_after_downtime() {
    let root = tempfile::tempdir().unwrap();
    let mut a = Node::init(root.path(), "a");
    a.start(&[]);
    a.json(&["cal", "new", "Solo", "--json"]);
    // Due in 10 s: one minute before a start 70 s from now.
    let start = utc_in(70);
    let id = event_id(&a.json(&[
        "cal",
        "add",
        "Solo",
        "--title",
        "Call Shanghai",
        "--start",
        &start,
        "--tz",
        "UTC",
        "--remind",
        "1m",
        "--json",
    ]));
    let fired = wait_until(Duration::from_secs(40), "the reminder", || {
        let r = reminders(&a);
        (!r.is_empty()).then_some(r)
    });
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0]["context"], "Call Shanghai");
    assert_eq!(fired[0]["reminder"]["minutes"], 1);
    assert_eq!(fired[0]["reminder"]["late"], false);
    assert!(fired[0]["reminder"]["occurrence"].as_str().unwrap().starts_with(&id));
    a.stop();
    a.restart();
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(reminders(&a).len(), 1, "not again after a restart");

    // Due in 5 s, but the daemon is down until well after: delivered late.
    let start = utc_in(65);
    a.json(&[
        "cal", "add", "Solo", "--title", "Stand-up", "--start", &start, "--tz", "UTC", "--remind", "1m", "--json",
    ]);
    a.stop();
    std::thread::sleep(Duration::from_secs(70));
    a.start(&[]);
    let late = wait_until(Duration::from_secs(40), "the late reminder", || {
        let r = reminders(&a);
        (r.len() == 2).then_some(r)
    });
    assert_eq!(late[1]["context"], "Stand-up");
    assert_eq!(late[1]["reminder"]["late"], true, "{}", late[1]);
}

#[test]
fn a_reminder_fires_on_one_device_of_a_user_not_on_each() {
    let root = tempfile::tempdir().unwrap();
    let mut laptop = Node::init(root.path(), "laptop");
    let mut phone = Node::init(root.path(), "phone");
    laptop.start(&[]);
    phone.start(&[laptop.addr()]);
    laptop.json(&["cal", "new", "Mine", "--json"]);
    common::link(&laptop, &phone);
    wait_until(Duration::from_secs(30), "the phone to hold the calendar", || {
        phone
            .json(&["cal", "list", "--json"])
            .as_array()
            .is_some_and(|c| c.len() == 1 && c[0]["name"] == "Mine")
            .then_some(())
    });
    // Due in 15 s, with both devices up and connected.
    let start = utc_in(75);
    laptop.json(&[
        "cal", "add", "Mine", "--title", "Dentist", "--start", &start, "--tz", "UTC", "--remind", "1m", "--json",
    ]);
    wait_until(Duration::from_secs(30), "the phone to hold the event", || {
        let items = phone.json(&["cal", "agenda", "--tz", "UTC", "--json"]);
        (items.as_array().unwrap().len() == 1).then_some(())
    });
    let total = |laptop: &Node, phone: &Node| reminders(laptop).len() + reminders(phone).len();
    wait_until(Duration::from_secs(40), "the reminder on one device", || {
        (total(&laptop, &phone) > 0).then_some(())
    });
    // Past every device's turn: still one.
    std::thread::sleep(Duration::from_secs(35));
    assert_eq!(
        total(&laptop, &phone),
        1,
        "laptop {:?}, phone {:?}",
        reminders(&laptop),
        reminders(&phone)
    );
    laptop.stop();
    laptop.restart();
    phone.stop();
    phone.start(&[laptop.addr()]);
    std::thread::sleep(Duration::from_secs(15));
    assert_eq!(total(&laptop, &phone), 1, "not again after both restart");
}

#[test]
fn this_and_following_splits_a_series_on_every_node() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = pair(root.path());
    new_calendar(&a, &b);
    let id = event_id(&a.json(&[
        "cal",
        "add",
        "Team",
        "--title",
        "Retro",
        "--start",
        "2026-12-01 09:00",
        "--tz",
        "UTC",
        "--rrule",
        "FREQ=WEEKLY;COUNT=6",
        "--json",
    ]));
    let new = event_id(&a.json(&[
        "cal",
        "edit",
        &format!("{id}@2026-12-15"),
        "--following",
        "--start",
        "10:00",
        "--title",
        "Retro (new slot)",
        "--json",
    ]));
    assert_ne!(new, id);
    a.json(&["cal", "cancel", &format!("{new}@2026-12-29"), "--following", "--json"]);
    let expected: Vec<(String, String)> = [
        ("2026-12-01T09:00:00+00:00", "Retro"),
        ("2026-12-08T09:00:00+00:00", "Retro"),
        ("2026-12-15T10:00:00+00:00", "Retro (new slot)"),
        ("2026-12-22T10:00:00+00:00", "Retro (new slot)"),
    ]
    .iter()
    .map(|(s, t)| (s.to_string(), t.to_string()))
    .collect();
    for node in [&a, &b] {
        wait_until(Duration::from_secs(30), "the split series on both nodes", || {
            let shown: Vec<(String, String)> = agenda(node, "2026-11-01", "2027-03-01")
                .into_iter()
                .map(|(_, s, t, _)| (s, t))
                .collect();
            (shown == expected).then_some(())
        });
    }
    let err = a.fails(&["cal", "edit", &id, "--following", "--title", "x"], 2);
    assert!(err.contains("occurrence"), "{err}");
}
