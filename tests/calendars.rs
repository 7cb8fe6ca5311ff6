//! Calendars between daemon processes: events sync and expand across
//! daylight-saving changes, concurrent edits made across a partition merge by
//! the documented rules, a reader answers but cannot edit, and ICS files
//! import, export and re-import without duplicates.

mod common;

use std::{path::Path, time::Duration};

use common::{Node, user_of, wait_until};
use serde_json::Value;

/// Two daemons, b dialling a.
fn pair(root: &Path) -> (Node, Node) {
    let mut a = Node::init(root, "a");
    let mut b = Node::init(root, "b");
    a.start(&[]);
    b.start(&[a.addr()]);
    (a, b)
}

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
