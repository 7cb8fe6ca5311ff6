use automerge::transaction::Transaction;
use proptest::prelude::*;

use super::*;
use crate::writer::actor_id;

fn author(user: u8) -> Author {
    Author {
        user: format!("{user:02x}").repeat(32),
        editor: true,
        admin: false,
    }
}

fn admin(user: u8) -> Author {
    Author {
        admin: true,
        ..author(user)
    }
}

fn body(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn msg(id: &str, n: u8) -> NewMessage {
    NewMessage {
        id: id.into(),
        body: body(n),
        reply_to: None,
        mentions: Vec::new(),
        all: false,
    }
}

const DOC: DocId = DocId([4; 16]);

fn target(id: &str) -> String {
    msg_ref(&DOC, id)
}

/// The author's reaction `emoji` on message `x`, added or taken back.
fn react(emoji: &str, on: bool) -> Write {
    Write::React {
        target: target("x"),
        emoji: emoji.into(),
        on,
    }
}

#[test]
fn genesis_is_identical_everywhere() {
    let (a, ha) = ChatDoc::genesis(&DOC);
    let (b, hb) = ChatDoc::genesis(&DOC);
    assert_eq!(ha, hb);
    assert_eq!(a.save(), b.save());
    assert_ne!(ChatDoc::genesis(&DocId([8; 16])).1, ha);
}

#[test]
fn refs_round_trip_and_only_canonical_ones_parse() {
    let r = msg_ref(&DOC, "abc123");
    assert_eq!(r, format!("{}:abc123", "04".repeat(16)));
    assert_eq!(parse_ref(&r), Some((DOC, "abc123")));
    for bad in [
        format!("{}:ABC", "04".repeat(16)),
        format!("{}:abc", "04".repeat(15)),
        format!("{}:abc", "0A".repeat(16)),
        format!("{}:", "04".repeat(16)),
        "abc".into(),
    ] {
        assert_eq!(parse_ref(&bad), None, "{bad}");
    }
}

#[test]
fn posts_with_replies_and_mentions_apply_elsewhere() {
    let mut a = ChatDoc::new(DOC);
    let alice = actor_id(&[1; 32], &DOC, 1);
    let first = a.post(alice.clone(), &author(1), &[msg("x", 1)], 5).unwrap();
    assert_eq!(first.deps(), &[ChatDoc::genesis(&DOC).1]);
    let reply = NewMessage {
        reply_to: Some(target("x")),
        mentions: vec![author(2).user],
        all: true,
        ..msg("y", 2)
    };
    let second = a.post(alice, &author(1), &[reply], 6).unwrap();
    let mut b = ChatDoc::new(DOC);
    let created = b.apply(vec![first, second], &author(1)).unwrap();
    assert_eq!(created, a.messages());
    assert_eq!(b.messages(), a.messages());
    let y = b.message("y").unwrap();
    assert_eq!(y.reply_to, Some(target("x")));
    assert_eq!(y.mentions, vec![author(2).user]);
    assert!(y.all);
    assert_eq!(y.body, body(2));
    assert_eq!(y.sent_at_ms, 6);
}

#[test]
fn edits_reactions_retractions_and_room_settings_read_back() {
    let mut a = ChatDoc::new(DOC);
    let alice = actor_id(&[1; 32], &DOC, 1);
    let bob = actor_id(&[2; 32], &DOC, 1);
    a.post(alice.clone(), &author(1), &[msg("x", 1)], 5).unwrap();
    let edits = [
        Write::Edit {
            id: "e1".into(),
            target: target("x"),
            body: body(3),
        },
        react("👍", true),
    ];
    a.write(alice.clone(), &author(1), &edits, 6).unwrap();
    a.write(bob.clone(), &author(2), &[react("🎉", true)], 7).unwrap();
    let second_edit = Write::Edit {
        id: "e2".into(),
        target: target("x"),
        body: body(4),
    };
    a.write(alice.clone(), &author(1), &[second_edit], 8).unwrap();
    let edits: Vec<String> = a.edits().into_iter().map(|e| e.body).collect();
    assert_eq!(edits, [body(3), body(4)], "in display order, the newest last");
    let emojis: Vec<(String, String)> = a.reactions().into_iter().map(|r| (r.user, r.emoji)).collect();
    assert_eq!(emojis.len(), 2);
    a.write(bob.clone(), &author(2), &[react("🎉", false)], 9).unwrap();
    assert_eq!(a.reactions().len(), 1, "taken back");
    a.write(
        bob.clone(),
        &admin(2),
        &[
            Write::Room(RoomWrite::Topic("Launch".into())),
            Write::Room(RoomWrite::Pin(target("x"), true)),
            Write::Room(RoomWrite::RetractWindow(120)),
            Write::Room(RoomWrite::Announcement(Some(target("x")))),
        ],
        10,
    )
    .unwrap();
    a.write(alice, &author(1), &[Write::Retract { target: target("x") }], 11)
        .unwrap();
    let copy = RoomWrite::Copy {
        target: target("x"),
        body: body(5),
    };
    a.write(bob.clone(), &admin(2), &[Write::Room(copy)], 12).unwrap();
    let copies = a.copies();
    assert_eq!(copies.len(), 1);
    assert_eq!(
        (copies[0].target.as_str(), copies[0].body.as_str()),
        (target("x").as_str(), body(5).as_str())
    );
    assert_eq!(copies[0].actor, bob, "the copy is its writer's");
    let room = a.room();
    assert_eq!(room.topic.as_deref(), Some("Launch"));
    assert_eq!(room.pins, [target("x")]);
    assert_eq!(room.retract_window_s, 120);
    assert_eq!(room.announcement, Some(target("x")));
    let r = a.retractions();
    assert_eq!(
        (r.len(), r[0].target.as_str(), r[0].at_ms),
        (1, target("x").as_str(), 11)
    );
    assert_eq!(ChatDoc::new(DOC).room().retract_window_s, DEFAULT_RETRACT_WINDOW_S);
}

#[test]
fn local_writes_are_checked_before_anything_is_written() {
    let mut a = ChatDoc::new(DOC);
    let alice = actor_id(&[1; 32], &DOC, 1);
    let refused = |r: Result<Change, Error>| match r {
        Err(Error::Rules(crate::Violation::Chat(v))) => v,
        other => panic!("expected a rules error, got {other:?}"),
    };
    let topic = Write::Room(RoomWrite::Topic("x".into()));
    assert_eq!(
        refused(a.write(alice.clone(), &author(1), &[topic], 1)),
        Violation::NotAdmin
    );
    assert_eq!(
        refused(a.post(alice.clone(), &author(1), &[msg("Bad Id", 1)], 1)),
        Violation::MessageId
    );
    let reader = Author {
        editor: false,
        ..author(1)
    };
    assert_eq!(refused(a.post(alice, &reader, &[msg("x", 1)], 1)), Violation::NotWriter);
    assert!(a.messages().is_empty());
}

/// A change made directly on a copy of `room`'s document, bypassing the model.
fn raw_change(room: &ChatDoc, actor: ActorId, edit: impl FnOnce(&mut Transaction<'_>, &Schema)) -> Change {
    let mut doc = room.automerge().fork().with_actor(actor);
    let mut tx = doc.transaction();
    edit(&mut tx, &room.schema);
    let (hash, _) = tx.commit_with(CommitOptions::default().with_time(1));
    doc.get_change_by_hash(&hash.unwrap()).unwrap()
}

#[test]
fn the_rules_refuse_what_no_honest_writer_makes() {
    let mut room = ChatDoc::new(DOC);
    let alice = actor_id(&[1; 32], &DOC, 1);
    let mallory = actor_id(&[2; 32], &DOC, 1);
    room.post(alice, &author(1), &[msg("x", 1)], 5).unwrap();
    let (_, entry) = room.doc.get(&room.schema.messages, "x").unwrap().unwrap();
    let m = author(2);
    let check = |change: Change, who: &Author| room.validate(change, who).map(drop);

    let wipe = raw_change(&room, mallory.clone(), |tx, _| {
        tx.put_object(ROOT, MESSAGES, ObjType::Map).unwrap();
    });
    assert_eq!(check(wipe, &m), Err(Violation::ForeignObject));
    let rewrite = raw_change(&room, mallory.clone(), |tx, _| {
        tx.put(&entry, "body", body(9)).unwrap();
    });
    assert_eq!(check(rewrite, &m), Err(Violation::ForeignObject));
    let delete = raw_change(&room, mallory.clone(), |tx, s| tx.delete(&s.messages, "x").unwrap());
    assert_eq!(check(delete, &m), Err(Violation::MessageMapOp));
    let overwrite = raw_change(&room, mallory.clone(), |tx, s| {
        tx.put_object(&s.messages, "x", ObjType::Map).unwrap();
    });
    assert_eq!(check(overwrite, &m), Err(Violation::MessageMapOp));
    let upper = raw_change(&room, mallory.clone(), |tx, s| {
        let e = tx.put_object(&s.messages, "Z", ObjType::Map).unwrap();
        tx.put(&e, "body", body(1)).unwrap();
    });
    assert_eq!(check(upper, &m), Err(Violation::MessageId));
    let text_inside = raw_change(&room, mallory.clone(), |tx, s| {
        let e = tx.put_object(&s.messages, "z", ObjType::Map).unwrap();
        tx.put(&e, "body", body(1)).unwrap();
        tx.put(&e, "text", "plaintext in the document").unwrap();
    });
    assert_eq!(check(text_inside, &m), Err(Violation::EntryField));
    let no_body = raw_change(&room, mallory.clone(), |tx, s| {
        let e = tx.put_object(&s.messages, "z", ObjType::Map).unwrap();
        tx.put(&e, "sent_at", ScalarValue::Timestamp(1)).unwrap();
    });
    assert_eq!(check(no_body, &m), Err(Violation::MissingField));
    let twice = raw_change(&room, mallory.clone(), |tx, s| {
        let e = tx.put_object(&s.messages, "z", ObjType::Map).unwrap();
        tx.put(&e, "body", body(1)).unwrap();
        tx.put(&e, "body", body(2)).unwrap();
    });
    assert_eq!(check(twice, &m), Err(Violation::EntryField));
    let for_alice = raw_change(&room, mallory.clone(), |tx, s| {
        tx.put(&s.reactions, reaction_key(&target("x"), &author(1).user, "👍"), true)
            .unwrap();
    });
    assert_eq!(check(for_alice, &m), Err(Violation::NotYours));
    let odd_reaction = raw_change(&room, mallory.clone(), |tx, s| {
        tx.put(&s.reactions, reaction_key(&target("x"), &m.user, "👍"), "yes")
            .unwrap();
    });
    assert_eq!(check(odd_reaction, &m), Err(Violation::Reaction));
    let settings = raw_change(&room, mallory.clone(), |tx, s| {
        tx.put(&s.room, "topic", "mine now").unwrap();
    });
    assert_eq!(check(settings.clone(), &m), Err(Violation::NotAdmin));
    assert_eq!(check(settings, &admin(2)), Ok(()));
    let unknown_setting = raw_change(&room, mallory.clone(), |tx, s| {
        tx.put(&s.room, "owner", "me").unwrap();
    });
    assert_eq!(check(unknown_setting, &admin(2)), Err(Violation::RoomField));
    let long_topic = raw_change(&room, mallory.clone(), |tx, s| {
        tx.put(&s.room, "topic", "x".repeat(MAX_TOPIC_BYTES + 1)).unwrap();
    });
    assert_eq!(check(long_topic, &admin(2)), Err(Violation::RoomField));
    let copy = raw_change(&room, mallory.clone(), |tx, s| {
        tx.put(&s.room, format!("copy/{}", target("x")), body(9)).unwrap();
    });
    assert_eq!(check(copy.clone(), &m), Err(Violation::NotAdmin));
    assert_eq!(check(copy, &admin(2)), Ok(()));
    let copy_without_body = raw_change(&room, mallory.clone(), |tx, s| {
        tx.put(&s.room, format!("copy/{}", target("x")), "not a body").unwrap();
    });
    assert_eq!(check(copy_without_body, &admin(2)), Err(Violation::RoomField));
    let copy_of_nothing = raw_change(&room, mallory.clone(), |tx, s| {
        tx.put(&s.room, "copy/x", body(9)).unwrap();
    });
    assert_eq!(check(copy_of_nothing, &admin(2)), Err(Violation::RoomField));
    let unretract = raw_change(&room, mallory.clone(), |tx, s| {
        tx.put(&s.retracted, target("x"), ScalarValue::Timestamp(1)).unwrap();
        tx.delete(&s.retracted, target("x")).unwrap();
    });
    assert_eq!(check(unretract, &m), Err(Violation::Retraction));
    let reader_post = raw_change(&room, mallory, |tx, s| {
        let e = tx.put_object(&s.messages, "z", ObjType::Map).unwrap();
        tx.put(&e, "body", body(1)).unwrap();
    });
    let reader = Author { editor: false, ..m };
    assert_eq!(check(reader_post, &reader), Err(Violation::NotWriter));
}

#[test]
fn a_reused_id_hides_no_message() {
    let mut a = ChatDoc::new(DOC);
    let mut b = ChatDoc::new(DOC);
    let ca = a
        .post(actor_id(&[1; 32], &DOC, 1), &author(1), &[msg("same", 1)], 1)
        .unwrap();
    let cb = b
        .post(actor_id(&[2; 32], &DOC, 1), &author(2), &[msg("same", 2)], 1)
        .unwrap();
    let created = a.apply(vec![cb], &author(2)).unwrap();
    assert_eq!(created.iter().map(|m| m.body.clone()).collect::<Vec<_>>(), [body(2)]);
    assert_eq!(b.apply(vec![ca], &author(1)).unwrap()[0].body, body(1));
    assert_eq!(a.messages().len(), 2);
    assert_eq!(a.messages(), b.messages());
}

proptest! {
    /// Any delivery order of the same changes gives the same log, edits and reactions.
    #[test]
    fn order_of_delivery_does_not_matter(seed in any::<u64>(), n in 1usize..12) {
        let mut writers = [ChatDoc::new(DOC), ChatDoc::new(DOC)];
        let mut changes = [Vec::new(), Vec::new()];
        for i in 0..n {
            let w = (seed >> i) as usize & 1;
            let actor = actor_id(&[w as u8; 32], &DOC, 7);
            let who = author(w as u8);
            let writes = vec![
                Write::Post(msg(&format!("m{i}"), i as u8)),
                Write::React { target: target("m0"), emoji: format!("e{}", i % 3), on: (seed >> (i + 20)) & 1 == 0 },
                Write::Edit { id: format!("e{i}"), target: target("m0"), body: body(100 + i as u8) },
            ];
            changes[w].push((writers[w].write(actor, &who, &writes, i as i64).unwrap(), who));
        }
        let mut forward = ChatDoc::new(DOC);
        let mut reversed = ChatDoc::new(DOC);
        for (c, who) in changes[0].iter().chain(&changes[1]) {
            forward.apply(vec![c.clone()], who).unwrap();
        }
        for (c, who) in changes[1].iter().chain(&changes[0]) {
            reversed.apply(vec![c.clone()], who).unwrap();
        }
        prop_assert_eq!(forward.messages(), reversed.messages());
        prop_assert_eq!(forward.edits(), reversed.edits());
        prop_assert_eq!(forward.reactions(), reversed.reactions());
    }
}

/// The display order kept as messages are written and applied (and after
/// the document is changed behind the model's back) is the one a fresh read
/// of the whole document gives.
#[test]
fn the_kept_display_order_is_a_fresh_read() {
    let fresh_read = |d: &ChatDoc| {
        let mut all = d.entries(&d.schema.messages, read_message);
        sort_for_display(&mut all);
        all
    };
    let (mut a, mut b) = (ChatDoc::new(DOC), ChatDoc::new(DOC));
    let (actor_a, actor_b) = (actor_id(&[1; 32], &DOC, 1), actor_id(&[2; 32], &DOC, 1));
    // Both build their order before anything is written.
    assert!(a.messages().is_empty() && b.latest(5).is_empty());
    let mut from_a = Vec::new();
    for i in 0..20u8 {
        from_a.push(
            a.post(actor_a.clone(), &author(1), &[msg(&format!("a{i}"), i)], 1_000)
                .unwrap(),
        );
        // b writes concurrently: same counters, other actor.
        b.post(actor_b.clone(), &author(2), &[msg(&format!("b{i}"), i)], 1_000)
            .unwrap();
    }
    // A reused id: both entries show.
    b.post(actor_b.clone(), &author(2), &[msg("a3", 99)], 1_000).unwrap();
    b.apply(from_a, &author(1)).unwrap();
    assert_eq!(b.messages(), fresh_read(&b));
    assert_eq!(b.messages().len(), 41);
    assert_eq!(b.latest(7), fresh_read(&b)[34..]);
    assert_eq!(b.latest(100), fresh_read(&b));
    // A merge through the raw document is seen too.
    a.automerge_mut().merge(&mut b.doc.clone()).unwrap();
    assert_eq!(a.messages(), fresh_read(&a));
    assert_eq!(a.messages(), b.messages());
}
