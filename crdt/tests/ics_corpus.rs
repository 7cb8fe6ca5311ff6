//! iCalendar import and export over a corpus of files modelled on what Google
//! Calendar, Outlook/Exchange and Apple Calendar write (`tests/ics/*.ics`).
//!
//! Each file is imported into a fresh calendar through `Write::Import`, every
//! event is expanded over 2027 in a fixed viewer zone, and the occurrences are
//! compared with `<name>.expected`, whose lines were worked out by hand (see
//! the notes at the top of each). Then the round trips: re-importing a file
//! writes nothing, exporting and importing into the same document writes
//! nothing, and into a fresh one gives the same occurrences; the exported text
//! is valid RFC 5545 (CRLF, folded at 75 octets, parses back with calcard).

use std::path::PathBuf;

use calcard::icalendar::{ICalendar, ICalendarComponentType, ICalendarProperty, ICalendarValue};
use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use outpost_crdt::{
    Change, DocId, Error,
    calendar::{CalendarDoc, EventData, Write, ics},
    writer::actor_id,
};

/// Floating and all-day times are read here (a zone with DST, so floating
/// times visibly move in UTC in spring and autumn).
const VIEWER: Tz = chrono_tz::Europe::Berlin;
const ORGANIZER: &str = "5e1f0c2a9b8d7e6f";
const NOW_MS: i64 = 1_798_761_600_000; // 2027-01-01T00:00:00Z
const DOC: DocId = DocId([9; 16]);

fn corpus() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/ics");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("corpus directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "ics"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "the corpus has {} files", files.len());
    files
        .into_iter()
        .map(|p| {
            let name = p.file_stem().expect("file name").to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (name, text)
        })
        .collect()
}

fn expected(name: &str) -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/ics/{name}.expected"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

fn year() -> (DateTime<Utc>, DateTime<Utc>) {
    (
        Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(2028, 1, 1, 0, 0, 0).unwrap(),
    )
}

fn parse(name: &str, text: &str) -> ics::Parsed {
    ics::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Imports `parsed` into `doc` in one change.
fn import(doc: &mut CalendarDoc, parsed: &ics::Parsed) -> Result<Change, Error> {
    let writes: Vec<Write> = parsed
        .events
        .iter()
        .map(|data| Write::Import {
            organizer: ORGANIZER.to_string(),
            data: data.clone(),
            seal: Default::default(),
        })
        .collect();
    doc.write(actor_id(&[1; 32], &DOC, 1), &writes, NOW_MS)
}

fn imported(name: &str, parsed: &ics::Parsed) -> CalendarDoc {
    let mut doc = CalendarDoc::new(DOC);
    if !parsed.events.is_empty() {
        import(&mut doc, parsed).unwrap_or_else(|e| panic!("{name}: import failed: {e}"));
    }
    doc
}

/// What a calendar shows over 2027, in the `.expected` format, sorted.
fn lines(doc: &CalendarDoc, calendar: Option<&str>) -> Vec<String> {
    let (from, to) = year();
    let one_line = |s: &str| s.replace('\n', "\\n");
    let mut out = vec![format!("calendar {}", calendar.unwrap_or("-"))];
    for event in doc.events() {
        let (occurrences, cut) = event.occurrences(from, to, VIEWER);
        assert!(!cut, "{}: occurrences were cut", event.uid);
        for o in occurrences {
            let mut line = format!(
                "{} {} {} {}",
                o.start.format("%Y-%m-%dT%H:%M:%SZ"),
                o.end.format("%Y-%m-%dT%H:%M:%SZ"),
                event.uid,
                one_line(&o.title)
            );
            if !o.location.is_empty() {
                line.push_str(&format!(" | {}", one_line(&o.location)));
            }
            out.push(line);
        }
        let reminders: Vec<String> = event.reminders.iter().map(u32::to_string).collect();
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        out.push(format!(
            "event {} reminders={} private={} cancelled={}",
            event.uid,
            if reminders.is_empty() {
                "-".to_string()
            } else {
                reminders.join(",")
            },
            yes_no(event.private),
            yes_no(event.cancelled),
        ));
    }
    out.sort();
    out
}

/// Fails with the lines missing and the lines unexpected.
fn assert_same_lines(name: &str, what: &str, want: &[String], got: &[String]) {
    if want == got {
        return;
    }
    let missing: Vec<&String> = want.iter().filter(|l| !got.contains(l)).collect();
    let extra: Vec<&String> = got.iter().filter(|l| !want.contains(l)).collect();
    panic!(
        "{name}: {what}\n  missing ({}):\n    {}\n  unexpected ({}):\n    {}\n",
        missing.len(),
        missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n    "),
        extra.len(),
        extra.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n    "),
    );
}

#[test]
fn corpus_files_give_the_expected_occurrences() {
    for (name, text) in corpus() {
        let parsed = parse(&name, &text);
        let doc = imported(&name, &parsed);
        let got = lines(&doc, parsed.name.as_deref());
        assert_same_lines(
            &name,
            "occurrences differ from the .expected file",
            &expected(&name),
            &got,
        );
    }
}

#[test]
fn line_endings_do_not_matter() {
    for (name, text) in corpus() {
        let lf = text.replace("\r\n", "\n");
        let crlf = lf.replace('\n', "\r\n");
        assert_eq!(parse(&name, &lf), parse(&name, &crlf), "{name}");
    }
}

#[test]
fn reimporting_the_same_file_writes_nothing() {
    for (name, text) in corpus() {
        let parsed = parse(&name, &text);
        let mut doc = imported(&name, &parsed);
        let again = parse(&name, &text);
        assert!(
            matches!(import(&mut doc, &again), Err(Error::EmptyChange)),
            "{name}: the second import wrote"
        );
    }
}

#[test]
fn export_then_import_into_the_same_document_writes_nothing() {
    for (name, text) in corpus() {
        let parsed = parse(&name, &text);
        let mut doc = imported(&name, &parsed);
        let exported = ics::write(parsed.name.as_deref().unwrap_or(&name), &doc.events(), stamp());
        let back = parse(&name, &exported);
        assert!(
            back.warnings.is_empty(),
            "{name}: exported file warns: {:?}",
            back.warnings
        );
        assert_eq!(back.events.len(), parsed.events.len(), "{name}");
        match import(&mut doc, &back) {
            Err(Error::EmptyChange) => {}
            Ok(_) => {
                let before = parsed.events.iter();
                let changed: Vec<&str> = before
                    .zip(&back.events)
                    .filter(|(a, b)| a != b)
                    .map(|(a, _)| a.uid.as_str())
                    .collect();
                panic!("{name}: importing the export wrote a change (events differing: {changed:?})")
            }
            Err(e) => panic!("{name}: {e}"),
        }
    }
}

#[test]
fn export_then_import_into_a_fresh_document_gives_the_same_occurrences() {
    for (name, text) in corpus() {
        let parsed = parse(&name, &text);
        let doc = imported(&name, &parsed);
        let exported = ics::write(parsed.name.as_deref().unwrap_or("-"), &doc.events(), stamp());
        let back = parse(&name, &exported);
        let by_uid = |events: &[EventData]| {
            let mut events = events.to_vec();
            events.sort_by(|a, b| a.uid.cmp(&b.uid));
            events
        };
        assert_eq!(
            by_uid(&back.events),
            by_uid(&parsed.events),
            "{name}: the export reads back as other events"
        );
        let fresh = imported(&name, &back);
        let name_back = back.name.as_deref().filter(|n| *n != "-");
        assert_same_lines(
            &name,
            "the export shows other occurrences",
            &lines(&doc, parsed.name.as_deref()),
            &lines(&fresh, name_back),
        );
    }
}

fn stamp() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2027, 6, 1, 12, 0, 0).unwrap()
}

#[test]
fn exported_files_are_rfc_5545() {
    for (name, text) in corpus() {
        let parsed = parse(&name, &text);
        let doc = imported(&name, &parsed);
        let events = doc.events();
        let exported = ics::write("Exported", &events, stamp());

        // CRLF everywhere, no physical line over 75 octets, continuation
        // lines start with a space.
        assert!(exported.ends_with("\r\n"), "{name}");
        assert!(!exported.replace("\r\n", "").contains('\n'), "{name}: a bare LF");
        for line in exported.split("\r\n").filter(|l| !l.is_empty()) {
            assert!(line.len() <= 75, "{name}: {} octets: {line}", line.len());
        }
        let logical: Vec<String> = exported
            .replace("\r\n ", "")
            .split("\r\n")
            .map(str::to_string)
            .collect();
        for required in [
            "BEGIN:VCALENDAR",
            "VERSION:2.0",
            "PRODID:-//Outpost//Outpost Calendar//EN",
            "CALSCALE:GREGORIAN",
            "METHOD:PUBLISH",
            "X-WR-CALNAME:Exported",
            "DTSTAMP:20270601T120000Z",
        ] {
            assert!(logical.iter().any(|l| l == required), "{name}: no {required}");
        }

        // calcard reads it back: one VEVENT per event and per override, a
        // VTIMEZONE per zone used (none for UTC), the titles unfolded and
        // unescaped.
        let cal = ICalendar::parse(&exported).unwrap_or_else(|e| panic!("{name}: calcard: {e:?}"));
        let of_type = |t: ICalendarComponentType| cal.components.iter().filter(|c| c.component_type == t).count();
        let overrides: usize = events
            .iter()
            .map(|e| e.overrides.keys().filter(|k| !e.exdates.contains(*k)).count())
            .sum();
        assert_eq!(
            of_type(ICalendarComponentType::VEvent),
            events.len() + overrides,
            "{name}"
        );
        let mut zones: Vec<String> = events
            .iter()
            .filter_map(|e| e.when.and_then(|w| w.zone()))
            .filter(|z| *z != Tz::UTC)
            .map(|z| z.name().to_string())
            .collect();
        zones.sort();
        zones.dedup();
        let mut tzids: Vec<String> = cal
            .timezones()
            .filter_map(|tz| tz.property(&ICalendarProperty::Tzid))
            .filter_map(|e| e.values.first().and_then(ICalendarValue::as_text).map(str::to_string))
            .collect();
        tzids.sort();
        assert_eq!(tzids, zones, "{name}: VTIMEZONEs");
        let resolver = cal.build_tz_resolver();
        for tzid in &tzids {
            assert!(
                resolver.resolve(tzid).is_some(),
                "{name}: calcard cannot resolve {tzid}"
            );
        }
        for event in &events {
            if event.title.is_empty() {
                continue;
            }
            let found = cal.components.iter().any(|c| {
                c.component_type == ICalendarComponentType::VEvent
                    && c.uid() == Some(event.uid.as_str())
                    && c.property(&ICalendarProperty::Summary)
                        .and_then(|s| s.values.first())
                        .and_then(ICalendarValue::as_text)
                        == Some(event.title.as_str())
            });
            assert!(found, "{name}: calcard does not read back the title of {}", event.uid);
        }
    }
}

#[test]
fn export_is_deterministic_and_skips_events_without_a_time() {
    let (name, text) = corpus().into_iter().find(|(n, _)| n == "google").expect("google.ics");
    let doc = imported(&name, &parse(&name, &text));
    let events = doc.events();
    assert_eq!(ics::write("x", &events, stamp()), ics::write("x", &events, stamp()));
    let mut broken = events.clone();
    broken[0].when = None;
    let without = ics::write("x", &broken, stamp());
    assert!(
        !without.contains(&format!("UID:{}", broken[0].uid)),
        "an event without a time was written"
    );
    assert_eq!(parse(&name, &without).events.len(), events.len() - 1);
}

fn warned(parsed: &ics::Parsed, needle: &str) -> bool {
    parsed.warnings.iter().any(|w| w.contains(needle))
}

#[test]
fn edge_cases_are_reported() {
    let (name, text) = corpus()
        .into_iter()
        .find(|(n, _)| n == "edge-cases")
        .expect("edge-cases.ics");
    let parsed = parse(&name, &text);
    for needle in [
        "skipped 3 to-do, journal or free/busy entries",
        "skipped event \"Someday: team dinner\" (no-start@example.com): it has no DTSTART",
        "4 events share UID `planning-dup@example.com`",
        "imported as the single event `orphan-7@example.com/20270302T150000`",
        "skipped event \"Design review\" (orphan-8@example.com): a cancelled occurrence",
        "an alarm at a fixed time was ignored",
        "an alarm relative to the end was ignored",
        "an alarm 50400 minutes before was ignored",
        "an alarm PT10M after the start was ignored",
        "the title was cut to 1024 bytes",
    ] {
        assert!(
            warned(&parsed, needle),
            "{name}: no warning with `{needle}` in {:#?}",
            parsed.warnings
        );
    }
    let review = parsed
        .events
        .iter()
        .find(|e| e.uid == "friday-review-2027@example.com")
        .expect("series");
    assert_eq!(
        review.description,
        "Line one\nLine two, with a comma; and a semicolon\nBackslash: \\ done"
    );
    let keys = |set: &std::collections::BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>();
    assert_eq!(
        keys(&review.exdates),
        ["20270514T083000", "20270521T083000", "20270604T083000"]
    );
    assert_eq!(keys(&review.rdates), ["20270616T083000", "20270618T083000"]);
    assert_eq!(parsed.name.as_deref(), Some("Edge cases; mixed, sources"));
}

#[test]
fn zones_are_resolved_or_reported() {
    let (name, text) = corpus().into_iter().find(|(n, _)| n == "zones").expect("zones.ics");
    let parsed = parse(&name, &text);
    let zone_of = |uid: &str| {
        let event = parsed.events.iter().find(|e| e.uid == uid).expect(uid);
        event.when.zone().map(|z| z.name().to_string())
    };
    assert_eq!(zone_of("cdo-tzid@example.com").as_deref(), Some("Europe/Berlin"));
    assert_eq!(zone_of("lic-location@example.com").as_deref(), Some("Europe/Berlin"));
    assert_eq!(zone_of("display-name@example.com").as_deref(), Some("Europe/Berlin"));
    assert_eq!(
        zone_of("windows-eastern@example.com").as_deref(),
        Some("America/New_York")
    );
    assert_eq!(zone_of("custom-summer@example.com").as_deref(), Some("UTC"));
    assert_eq!(zone_of("unknown-zone@example.com").as_deref(), Some("UTC"));
    assert!(warned(
        &parsed,
        "time zone `Customized Time Zone` is not one this build knows"
    ));
    assert!(warned(
        &parsed,
        "time zone `Mars/Olympus_Mons` is not known and the file does not define it"
    ));
    assert_eq!(parsed.warnings.len(), 2, "{:#?}", parsed.warnings);
    for (file, text) in corpus().into_iter().filter(|(n, _)| n != "zones" && n != "edge-cases") {
        assert_eq!(parse(&file, &text).warnings, Vec::<String>::new(), "{file}");
    }
}

#[test]
fn rules_keep_until_as_written() {
    let (name, text) = corpus().into_iter().find(|(n, _)| n == "google").expect("google.ics");
    let parsed = parse(&name, &text);
    let rule = |uid: &str| parsed.events.iter().find(|e| e.uid == uid).and_then(|e| e.rule.clone());
    assert_eq!(
        rule("0k1i2d3s4t5a6n7d8u9p0a1b2c@google.com").as_deref(),
        Some("FREQ=WEEKLY;UNTIL=20270331T132959Z;BYDAY=MO,WE;WKST=SU")
    );
    let (name, text) = corpus()
        .into_iter()
        .find(|(n, _)| n == "floating")
        .expect("floating.ics");
    let parsed = parse(&name, &text);
    let run = parsed.events.iter().find(|e| e.title == "Morning run").expect("run");
    assert_eq!(
        run.rule.as_deref(),
        Some("FREQ=WEEKLY;UNTIL=20270131T235959;BYDAY=MO,TH")
    );
}

/// RFC 5545 §3.8.5.3: when DTEND gives the length, every instance has the
/// same *exact* duration. On the nights the clocks change, an instance
/// spanning the change keeps its length in real time, not on the wall clock.
#[test]
fn occurrences_spanning_a_dst_change_keep_their_exact_length() {
    let text = "BEGIN:VCALENDAR\r\n\
        BEGIN:VEVENT\r\nUID:gap\r\nSUMMARY:Gap\r\nDTSTART;TZID=America/New_York:20270307T023000\r\n\
        DTEND;TZID=America/New_York:20270307T033000\r\nRRULE:FREQ=WEEKLY;COUNT=2\r\nEND:VEVENT\r\n\
        BEGIN:VEVENT\r\nUID:fold\r\nSUMMARY:Fold\r\nDTSTART;TZID=America/New_York:20271031T013000\r\n\
        DTEND;TZID=America/New_York:20271031T020000\r\nRRULE:FREQ=WEEKLY;COUNT=2\r\nEND:VEVENT\r\n\
        END:VCALENDAR\r\n";
    let parsed = parse("dst", text);
    let doc = imported("dst", &parsed);
    let (from, to) = year();
    let mut got = Vec::new();
    for event in doc.events() {
        for o in event.occurrences(from, to, VIEWER).0 {
            got.push(format!(
                "{} {} {}",
                event.uid,
                o.start.format("%m-%dT%H:%MZ"),
                o.end.format("%m-%dT%H:%MZ")
            ));
        }
    }
    got.sort();
    // 02:30 does not exist on 03-14: it is 02:30 EST = 07:30Z, and the hour
    // ends at 08:30Z (the wall clock's 03:30 EDT is 07:30Z: zero length).
    // 01:30 on 11-07 happens twice: the first (EDT) = 05:30Z, and the half
    // hour ends at 06:00Z (the wall clock's 02:00 EST is 07:00Z: 90 minutes).
    assert_eq!(
        got,
        [
            "fold 10-31T05:30Z 10-31T06:00Z",
            "fold 11-07T05:30Z 11-07T06:00Z",
            "gap 03-07T07:30Z 03-07T08:30Z",
            "gap 03-14T07:30Z 03-14T08:30Z",
        ]
    );
}
