//! Large rooms between daemon processes (issue 7, point 6), with shards of
//! 10 messages (`daemon --shard-messages 10`, a test knob; real nodes use
//! 5,000): a room's messages roll over into shards, closed ones are set
//! aside on every node, `chat log` shows the latest from the last shards
//! and the whole history on demand, a retraction and an edit of a message in
//! a closed shard reach every node, unread counts leave the retracted one
//! out, and a restart keeps it all. A room whose history starts at each join
//! does the same per epoch, and its newcomer reads from the join on.

mod common;

use std::time::Duration;

use common::{Node, user_of, wait_until};
use serde_json::Value;

const SYNC: Duration = Duration::from_secs(60);

/// Closed shards `node` holds set aside for `space`.
fn set_aside(node: &Node, space: &str) -> u64 {
    node.space_status(space)
        .and_then(|s| s["shards_set_aside"].as_u64())
        .unwrap_or(0)
}

fn unread(node: &Node, space: &str) -> Option<u64> {
    let spaces = node.try_json(&["chat", "list", "--json"]).ok()?;
    spaces.as_array()?.iter().find(|s| s["space"] == space)?["unread"].as_u64()
}

fn texts(log: &Value) -> Vec<String> {
    log.as_array()
        .expect("a log")
        .iter()
        .map(|m| m["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn node(root: &std::path::Path, name: &str) -> Node {
    let mut node = Node::init(root, name);
    node.daemon_args = vec!["--shard-messages", "10"];
    node
}

#[test]
fn rooms_roll_over_into_shards_and_closed_ones_are_set_aside() {
    let root = tempfile::tempdir().unwrap();
    let mut a = node(root.path(), "a");
    let mut b = node(root.path(), "b");
    a.start(&[]);
    b.start(&[a.addr()]);

    let room = a.create_chat("big", &[&b], &[]);
    let ids: Vec<String> = (0..65).map(|i| a.send(&room, &format!("m{i}"))).collect();
    let want: Vec<String> = (0..65).map(|i| format!("m{i}")).collect();
    wait_until(SYNC, "b to read all 65", || (b.log_texts(&room) == want).then_some(()));
    // Shards 0–6: 1–4 are closed, set aside but for the two a read used last.
    for n in [&a, &b] {
        wait_until(SYNC, &format!("{} to set closed shards aside", n.name), || {
            (set_aside(n, &room) >= 2).then_some(())
        });
    }
    let latest = b.json(&["chat", "log", &room, "--limit", "5", "--json"]);
    assert_eq!(texts(&latest), want[60..]);

    // A retraction and an edit of messages in closed shards reach b.
    a.json(&["chat", "retract", &ids[12], "--json"]);
    a.json(&["chat", "edit", &ids[15], "m15, edited", "--json"]);
    wait_until(SYNC, "b to show the retraction and the edit", || {
        let log = b.log(&room);
        let log = log.as_array()?;
        (log[12]["retracted"].is_object() && log[15]["text"] == "m15, edited").then_some(())
    });
    assert_eq!(b.log(&room)[12]["text"], "", "no text of the retracted message");
    wait_until(SYNC, "b's unread count to leave the retracted message out", || {
        (unread(&b, &room) == Some(64)).then_some(())
    });

    // A restart keeps it: closed shards aside, the same log and count.
    let before = b.log(&room);
    b.stop();
    b.restart();
    // The search index may read the room back at start: the two shards
    // it used last stay loaded.
    assert!(set_aside(&b, &room) >= 2);
    assert_eq!(unread(&b, &room), Some(64));
    assert_eq!(b.log(&room), before);
}

#[test]
fn a_room_whose_history_starts_at_each_join_shards_each_epoch() {
    let root = tempfile::tempdir().unwrap();
    let mut a = node(root.path(), "a");
    let mut b = node(root.path(), "b");
    let mut c = node(root.path(), "c");
    a.start(&[]);
    b.start(&[a.addr()]);
    c.start(&[a.addr(), b.addr()]);

    let b_card = b.card();
    let created = a.json(&[
        "chat",
        "create",
        "branch",
        "--member",
        &b_card,
        "--history",
        "from-join",
        "--json",
    ]);
    let room = created["space"].as_str().unwrap().to_string();
    let before: Vec<String> = (0..35).map(|i| a.send(&room, &format!("m{i}"))).collect();
    wait_until(SYNC, "b to read the first 35", || {
        (b.log_texts(&room).len() == 35).then_some(())
    });

    // c joins: a new epoch, whose messages start a run of shards of their own.
    let c_user = user_of(&c);
    wait_until(SYNC, "a to invite c", || {
        a.try_json(&["space", "invite", &room, &c_user, "--json"]).ok()
    });
    for i in 0..15 {
        a.send(&room, &format!("n{i}"));
    }
    let after: Vec<String> = (0..15).map(|i| format!("n{i}")).collect();
    wait_until(SYNC, "c to read from its join on", || {
        (c.log_texts(&room) == after).then_some(())
    });
    // Every shard of the earlier epoch is closed: set aside on a.
    wait_until(SYNC, "a to set the earlier epoch's shards aside", || {
        (set_aside(&a, &room) >= 2).then_some(())
    });

    // An edit of an earlier epoch's message reaches b, not c.
    a.json(&["chat", "edit", &before[3], "m3, edited", "--json"]);
    let mut want: Vec<String> = (0..35).map(|i| format!("m{i}")).collect();
    want[3] = "m3, edited".into();
    want.extend(after.iter().cloned());
    wait_until(SYNC, "b to show the edit", || {
        (b.log_texts(&room) == want).then_some(())
    });
    assert_eq!(a.log(&room), b.log(&room));
    assert_eq!(c.log_texts(&room), after);
    let latest = b.json(&["chat", "log", &room, "--limit", "20", "--json"]);
    assert_eq!(texts(&latest), want[30..]);
}
