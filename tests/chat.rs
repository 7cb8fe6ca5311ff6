//! Chat as an organisation uses it, between daemon processes: replies,
//! mentions (by name and `@all`, also after a long time offline), edits with
//! their history, reactions, retraction that deletes the text on every node
//! (replicators included), and room settings (topic, announcement, pins) that
//! only owners and admins change.

mod common;

use std::{path::Path, time::Duration};

use common::{Node, decryptable, link, pair, user_of, wait_until};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// The message `id` in `node`'s log, once it is there with its text.
fn message(node: &Node, space: &str, id: &str) -> Option<Value> {
    let log = node.try_json(&["chat", "log", space, "--json"]).ok()?;
    log.as_array()?.iter().find(|m| m["id"] == id).cloned()
}

fn wait_message(node: &Node, space: &str, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    wait_until(WAIT, what, || message(node, space, id).filter(|m| check(m)))
}

/// Runs a command that must succeed.
fn ok(node: &Node, args: &[&str]) {
    let out = node.cli(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn inbox(node: &Node) -> Vec<Value> {
    node.json(&["inbox", "--json"]).as_array().unwrap().clone()
}

#[test]
fn replies_mentions_edits_and_reactions_reach_every_node() {
    let root = tempfile::tempdir().unwrap();
    let (a, mut b) = pair(root.path());
    let space = a.create_chat("ops", &[&b], &[]);
    let b_user = user_of(&b);

    // A mention by a prefix of the user id (or an org name) lands in b's inbox.
    let hello = a.send(&space, &format!("hello @{} and welcome", &b_user[..10]));
    let seen = wait_message(&b, &space, &hello, "the mention on b", |m| m["text"] != "");
    assert_eq!(seen["mentions"], serde_json::json!([b_user]));
    let entry = wait_until(WAIT, "the mention in b's inbox", || {
        inbox(&b).into_iter().find(|e| e["message"] == hello.as_str())
    });
    assert_eq!(entry["kind"], "mention");
    assert!(entry["context"].as_str().unwrap().starts_with("hello @"));
    assert!(inbox(&a).is_empty(), "a mentioned someone else");

    // b answers; the reply names its target on both nodes.
    let reply = b.json(&["chat", "send", &space, "thanks!", "--reply-to", &hello[..6], "--json"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let on_a = wait_message(&a, &space, &reply, "the reply on a", |m| m["text"] == "thanks!");
    assert_eq!(on_a["reply_to"], hello.as_str());

    // a edits its message twice: the newest text shows, the earlier ones stay
    // in its history.
    a.json(&["chat", "edit", &hello, "hello b", "--json"]);
    a.json(&["chat", "edit", &hello[..8], "hello b, welcome", "--json"]);
    let edited = wait_message(&b, &space, &hello, "the edits on b", |m| {
        m["text"] == "hello b, welcome"
    });
    let history: Vec<&str> = edited["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert_eq!(history[1..], ["hello b"]);
    assert!(history[0].starts_with("hello @"));
    // Only its author edits a message: b may not, and nothing changes.
    let err = b.fails(&["chat", "edit", &hello, "forged"], 4);
    assert!(err.contains("author"), "{err}");

    // Reactions, by both; b takes one back.
    a.json(&["chat", "react", &reply, "👍", "--json"]);
    b.json(&["chat", "react", &reply, "👍", "--json"]);
    b.json(&["chat", "react", &reply, "🎉", "--json"]);
    b.json(&["chat", "react", &reply, "🎉", "--remove", "--json"]);
    let mut users = vec![user_of(&a), b_user.clone()];
    users.sort();
    let reactions = serde_json::json!([{"emoji": "👍", "users": users}]);
    wait_message(&a, &space, &reply, "the reactions on a", |m| {
        m["reactions"] == reactions
    });

    // @all reaches everyone else, also a device that was offline when it was
    // sent: the notification comes on first arrival, however late.
    b.stop();
    let all = a.send(&space, "@all the release is out");
    std::thread::sleep(Duration::from_secs(2));
    b.start(&[a.addr()]);
    let entry = wait_until(WAIT, "@all in b's inbox after its downtime", || {
        inbox(&b).into_iter().find(|e| e["message"] == all.as_str())
    });
    assert_eq!(entry["kind"], "all");
    assert_eq!(entry["context"], "@all the release is out");

    // Both nodes print the same log.
    wait_until(WAIT, "identical logs", || {
        (a.log(&space) == b.log(&space)).then_some(())
    });
    // Bad input is refused with a clear message, and nothing is written.
    let err = a.fails(&["chat", "react", &reply, "two words"], 2);
    assert!(err.contains("emoji"), "{err}");
    let err = a.fails(&["chat", "edit", "zzzzzzzz", "x"], 5);
    assert!(err.contains("no message"), "{err}");
}

/// Every piece of text a device of `reader` can decrypt of `space` in the store
/// of `node` (stopped), as one string.
fn decryptable_text(node: &Path, reader: &Path, space: &str) -> String {
    decryptable(node, reader, space)
        .iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect()
}

#[test]
fn a_retraction_deletes_the_text_on_every_node_replicators_included() {
    let root = tempfile::tempdir().unwrap();
    let (mut a, mut b) = pair(root.path());
    let mut r = Node::init(root.path(), "r");
    r.start(&[a.addr()]);
    let space = a.create_chat("ops", &[&b], &[&r]);
    let keep = a.send(&space, "this one stays");
    let secret = a.send(&space, "the launch code is 7-3-1 @all");
    a.json(&["chat", "edit", &secret, "the launch code is 7-3-1, really", "--json"]);
    wait_message(&b, &space, &secret, "the edit on b", |m| {
        m["text"] == "the launch code is 7-3-1, really"
    });
    wait_until(WAIT, "b's @all notification", || {
        inbox(&b).into_iter().find(|e| e["message"] == secret.as_str())
    });
    let sides = |n: &Node| n.space_status(&space).and_then(|s| s["sides"].as_u64());
    // r stores the three bodies beside the changes, without reading them.
    wait_until(WAIT, "r to hold every body", || (sides(&r) == Some(3)).then_some(()));

    // b, a writer, may not retract a's message.
    let err = b.fails(&["chat", "retract", &secret], 4);
    assert!(err.contains("author"), "{err}");
    // a, its author, may.
    a.json(&["chat", "retract", &secret[..8], "--json"]);
    let gone = wait_message(&b, &space, &secret, "the retraction on b", |m| {
        !m["retracted"].is_null()
    });
    assert_eq!(gone["text"], "");
    assert!(gone.get("history").is_none(), "no earlier text shows either");
    // Relays delete the bodies too: two gone, the tombstone held.
    wait_until(WAIT, "r to delete the bodies", || (sides(&r) == Some(2)).then_some(()));
    wait_until(WAIT, "b's notification purged", || {
        (!inbox(&b).iter().any(|e| e["message"] == secret.as_str())).then_some(())
    });
    assert_eq!(a.log(&space), b.log(&space));

    a.stop();
    b.stop();
    r.stop();
    // Nothing any member could decrypt from any node's store holds the text
    // any more, while what was not retracted is still there.
    for node in [&a, &b, &r] {
        let text = decryptable_text(&node.home, &b.home, &space);
        assert!(
            !text.contains("launch code"),
            "{} still holds the retracted text",
            node.name
        );
        assert!(text.contains("this one stays"), "{} lost a message", node.name);
    }
    let _ = keep;
}

#[test]
fn authors_retract_within_the_rooms_window_and_admins_any_time() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = pair(root.path());
    let space = a.create_chat("ops", &[&b], &[]);
    let mine = b.send(&space, "b's own words");
    wait_message(&a, &space, &mine, "b's message on a", |m| m["text"] != "");
    // Only owners and admins set the window; then b may no longer retract.
    let err = b.fails(&["chat", "retract-window", &space, "0"], 4);
    assert!(err.contains("owners and admins"), "{err}");
    let err = b.fails(&["chat", "retract-window", &space, "2 weeks"], 2);
    assert!(err.contains("duration"), "{err}");
    ok(&a, &["chat", "retract-window", &space, "0"]);
    wait_until(WAIT, "the window on b", || {
        (b.json(&["chat", "info", &space, "--json"])["retract_window_s"] == 0).then_some(())
    });
    let err = b.fails(&["chat", "retract", &mine], 4);
    assert!(err.contains("retract their messages for no time"), "{err}");
    // The owner retracts anyone's message, any time.
    a.json(&["chat", "retract", &mine, "--json"]);
    wait_message(&b, &space, &mine, "the retraction on b", |m| !m["retracted"].is_null());
}

#[test]
fn owners_set_the_topic_announcement_and_pins_and_newcomers_see_them() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = pair(root.path());
    let space = a.create_chat("ops", &[&b], &[]);
    ok(&a, &["chat", "topic", &space, "Launch week"]);
    ok(&a, &["chat", "welcome", &space, "Read the pinned notes first."]);
    let note = a.json(&["chat", "announce", &space, "Freeze starts Friday", "--json"])["message"]
        .as_str()
        .unwrap()
        .to_string();
    let faq = b.send(&space, "FAQ: ask in thread");
    a.json(&["chat", "pin", &faq, "--json"]);
    // A writer may not change the room's settings.
    let err = b.fails(&["chat", "topic", &space, "mine now"], 4);
    assert!(err.contains("owners and admins"), "{err}");
    let info = wait_until(WAIT, "the settings on b", || {
        let info = b.json(&["chat", "info", &space, "--json"]);
        (info["pinned"].as_array()?.len() == 2).then_some(info)
    });
    assert_eq!(info["topic"], "Launch week");
    assert_eq!(info["welcome"], "Read the pinned notes first.");
    assert_eq!(info["announcement"]["id"], note.as_str());
    assert_eq!(info["announcement"]["text"], "Freeze starts Friday");

    // A member added later is shown the same on its first sync.
    let mut c = Node::init(root.path(), "c");
    c.start(&[a.addr()]);
    a.json(&["space", "invite", &space, &c.card(), "--json"]);
    let info = wait_until(WAIT, "the settings on the newcomer", || {
        let info = c.try_json(&["chat", "info", &space, "--json"]).ok()?;
        (info["announcement"]["text"] == "Freeze starts Friday" && info["pinned"].as_array()?.len() == 2)
            .then_some(info)
    });
    assert_eq!(info["welcome"], "Read the pinned notes first.");
    a.json(&["chat", "pin", &faq, "--unpin", "--json"]);
    wait_until(WAIT, "the unpin on c", || {
        let info = c.json(&["chat", "info", &space, "--json"]);
        (info["pinned"].as_array()?.len() == 1).then_some(())
    });
}

fn unread(node: &Node, space: &str) -> Option<u64> {
    let spaces = node.json(&["chat", "list", "--json"]);
    spaces.as_array()?.iter().find(|s| s["space"] == space)?["unread"].as_u64()
}

fn read_by(node: &Node, space: &str, id: &str) -> Vec<String> {
    message(node, space, id)
        .and_then(|m| m.get("read_by").cloned())
        .and_then(|r| serde_json::from_value(r).ok())
        .unwrap_or_default()
}

#[test]
fn read_receipts_are_per_user_and_rooms_count_unread_messages() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = pair(root.path());
    let space = a.create_chat("ops", &[&b], &[]);
    let b_user = user_of(&b);
    let one = a.send(&space, "one");
    let two = a.send(&space, "two");
    wait_message(&b, &space, &two, "both messages on b", |m| m["text"] == "two");
    assert_eq!(unread(&b, &space), Some(2));
    assert_eq!(unread(&a, &space), Some(0), "one's own messages are never unread");
    assert!(read_by(&a, &space, &one).is_empty());

    let marked = b.json(&["chat", "read", &space, "--json"]);
    assert_eq!(marked["newly_read"], 2);
    assert_eq!(unread(&b, &space), Some(0));
    wait_until(WAIT, "b's receipt on a", || {
        (read_by(&a, &space, &one) == [b_user.clone()] && read_by(&a, &space, &two) == [b_user.clone()]).then_some(())
    });

    // A message sent after the receipt is unread, whatever its place.
    let three = a.send(&space, "three");
    wait_message(&b, &space, &three, "the third on b", |m| m["text"] == "three");
    assert_eq!(unread(&b, &space), Some(1));
    assert!(read_by(&a, &space, &three).is_empty());

    // Per user, not per device: b's second device reads it, and a sees b
    // (once), and b's first device counts it read.
    let mut phone = Node::init(root.path(), "phone");
    phone.start(&[a.addr(), b.addr()]);
    link(&b, &phone);
    wait_message(&phone, &space, &three, "the room on b's phone", |m| {
        m["text"] == "three"
    });
    phone.json(&["chat", "read", &space, "--json"]);
    wait_until(WAIT, "the phone's receipt on a", || {
        (read_by(&a, &space, &three) == [b_user.clone()]).then_some(())
    });
    wait_until(WAIT, "the phone's receipt on b's laptop", || {
        (unread(&b, &space) == Some(0)).then_some(())
    });
    // b's laptop shows the phone's receipt as b's.
    assert_eq!(read_by(&b, &space, &three), [b_user]);
}

#[test]
fn a_direct_message_room_is_found_again_and_both_users_own_it() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = pair(root.path());
    let (a_user, b_user) = (user_of(&a), user_of(&b));
    let made = a.json(&["chat", "dm", &b.card(), "hi b", "--json"]);
    assert_eq!(made["created"], true);
    let space = made["space"].as_str().unwrap().to_string();
    // Named by the user id once met: the same room, nothing new.
    let again = a.json(&["chat", "dm", &b_user, "--json"]);
    assert_eq!(
        (again["created"].as_bool(), again["space"].as_str()),
        (Some(false), Some(space.as_str()))
    );
    // b sees it as a direct room with a, and finds the same room.
    let listed = wait_until(WAIT, "the direct room on b", || {
        let spaces = b.json(&["chat", "list", "--json"]);
        spaces
            .as_array()?
            .iter()
            .find(|s| s["space"] == space.as_str())
            .cloned()
    });
    assert_eq!(listed["direct"], a_user.as_str());
    let from_b = b.json(&["chat", "dm", &a_user, "--json"]);
    assert_eq!(
        (from_b["created"].as_bool(), from_b["space"].as_str()),
        (Some(false), Some(space.as_str()))
    );
    assert_eq!(b.log_texts(&space), ["hi b"]);
    let roles = wait_until(WAIT, "both users owners", || {
        let members = b.members(&space)?;
        members.iter().all(|(_, role)| role == "owner").then_some(members)
    });
    assert_eq!(roles.len(), 2);
    let err = a.fails(&["chat", "dm", &a_user], 2);
    assert!(err.contains("someone else"), "{err}");
}

#[test]
fn muted_rooms_and_quiet_hours_hold_back_notifications_not_messages() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = pair(root.path());
    let space = a.create_chat("ops", &[&b], &[]);
    let b_user = user_of(&b);
    let muted = b.json(&["chat", "mute", &space, "--json"]);
    assert_eq!(muted["muted"], serde_json::json!([space]));
    let first = a.send(&space, &format!("@{} ping", &b_user[..10]));
    // The message arrives; its notification is kept, held back.
    wait_message(&b, &space, &first, "the message on b", |m| m["text"] != "");
    let held = wait_until(WAIT, "the held mention", || {
        inbox(&b).into_iter().find(|e| e["message"] == first.as_str())
    });
    assert_eq!(held["held"], true);
    b.json(&["chat", "mute", &space, "--unmute", "--json"]);
    wait_until(WAIT, "the mention released on unmute", || {
        let e = inbox(&b).into_iter().find(|e| e["message"] == first.as_str())?;
        e.get("held").is_none().then_some(())
    });

    // Quiet hours covering the whole day hold back every room's notifications.
    let err = b.fails(&["chat", "quiet", "7pm"], 2);
    assert!(err.contains("HH:MM-HH:MM"), "{err}");
    let quiet = b.json(&["chat", "quiet", "00:00-23:59", "--json"]);
    assert_eq!(quiet["quiet_hours"], "00:00-23:59");
    let second = a.send(&space, "@all standup");
    let held = wait_until(WAIT, "the held @all", || {
        inbox(&b).into_iter().find(|e| e["message"] == second.as_str())
    });
    assert_eq!(held["held"], true);
    b.json(&["chat", "quiet", "off", "--json"]);
    wait_until(WAIT, "the @all released after the quiet hours", || {
        let e = inbox(&b).into_iter().find(|e| e["message"] == second.as_str())?;
        e.get("held").is_none().then_some(())
    });
}

#[test]
fn commands_naming_a_space_this_node_does_not_hold_fail_cleanly() {
    let root = tempfile::tempdir().unwrap();
    let mut a = Node::init(root.path(), "a");
    a.start(&[]);
    // A well-formed id of a space `a` was never invited to: the daemon must
    // answer "unknown space", never stop (every command below once reached
    // the core with it).
    let space = "5a".repeat(16);
    let card = a.card();
    let message = format!("{space}/0/{}", "77".repeat(8));
    let commands: &[&[&str]] = &[
        &["chat", "info", &space],
        &["chat", "log", &space],
        &["chat", "send", &space, "hello"],
        &["chat", "announce", &space, "hello"],
        &["chat", "topic", &space, "t"],
        &["chat", "welcome", &space, "w"],
        &["chat", "retract-window", &space, "1h"],
        &["chat", "read", &space],
        &["chat", "mute", &space],
        &["chat", "edit", &message, "x"],
        &["chat", "retract", &message],
        &["chat", "react", &message, "👍"],
        &["chat", "pin", &message],
        &["doc", "show", &space],
        &["doc", "history", &space],
        &["doc", "blame", &space],
        &["cal", "agenda", &space],
        &["cal", "export", &space, "-o", "/dev/null"],
        &["space", "members", &space],
        &["space", "invite", &space, &card],
        &["space", "rotate", &space],
        &["space", "leave", &space],
        &["space", "posting", &space, "admins"],
        &["search", "hello", "--space", &space],
    ];
    for args in commands {
        let out = a.cli(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(&space) || stderr.contains("no "), "{args:?}: {stderr}");
        assert!(
            a.try_json(&["status", "--json"]).is_ok(),
            "the daemon stopped after {args:?}: {stderr}"
        );
    }
}
