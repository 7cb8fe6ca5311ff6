//! `--history from-join` between daemon processes.
//!
//! Alice makes a from-join room with Bob; they talk; Alice invites Erin. Erin
//! reads the room's name and everything written from her join on, never what
//! came before (she stores and forwards it, and `status` counts it as written
//! before she joined, not as a key problem). Alice and Bob read everything.
//! Erin links a phone: it reads what Erin reads, no more. With every key the
//! control log gives either of Erin's devices, nothing written before her join
//! opens.

mod common;

use std::time::Duration;

use common::{Node, link, plaintext_reachable_after, wait_until};
use outpost_node::{control::ControlOp, ids::DeviceId};
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(60);

/// A room `owner` makes with `member`, whose history starts at each join.
fn from_join_room(owner: &Node, member: &Node) -> String {
    let card = member.card();
    let args = [
        "chat",
        "create",
        "branch",
        "--member",
        &card,
        "--history",
        "from-join",
        "--json",
    ];
    owner.json(&args)["space"].as_str().unwrap().to_string()
}

#[test]
fn a_newcomer_reads_from_its_join_on_and_its_other_device_reads_the_same() {
    let root = tempfile::tempdir().unwrap();
    let mut alice = Node::init(root.path(), "alice");
    let mut bob = Node::init(root.path(), "bob");
    let mut erin = Node::init(root.path(), "erin");
    let mut phone = Node::init(root.path(), "erin-phone");
    alice.start(&[]);
    bob.start(&[alice.addr()]);
    erin.start(&[alice.addr(), bob.addr()]);
    phone.start(&[alice.addr(), bob.addr(), erin.addr()]);

    let space = from_join_room(&alice, &bob);
    alice.send(&space, "before: the old plan");
    wait_until(CONVERGE, "Bob to read Alice's message", || {
        (bob.log_texts(&space).len() == 1).then_some(())
    });
    bob.send(&space, "before: agreed");
    wait_until(CONVERGE, "Alice to read Bob's reply", || {
        (alice.log_texts(&space).len() == 2).then_some(())
    });

    // Members are users: Alice names Erin by her user id (she has met Erin's device).
    let erin_user = common::user_of(&erin);
    wait_until(CONVERGE, "Alice to invite Erin by her user id", || {
        alice.try_json(&["space", "invite", &space, &erin_user, "--json"]).ok()
    });
    let listed = wait_until(CONVERGE, "Erin to hold the room and read its name", || {
        let spaces = erin.try_json(&["chat", "list", "--json"]).ok()?;
        let room = spaces
            .as_array()?
            .iter()
            .find(|s| s["space"] == space.as_str())?
            .clone();
        room["readable"].as_bool()?.then_some(room)
    });
    assert_eq!(listed["name"], "branch", "the join carries the name under its own key");
    assert_eq!(listed["history"], "from-join");

    alice.send(&space, "after: welcome Erin");
    wait_until(CONVERGE, "Erin to read the welcome", || {
        (erin.log_texts(&space) == ["after: welcome Erin"]).then_some(())
    });
    erin.send(&space, "after: thanks");
    let everything = [
        "before: the old plan",
        "before: agreed",
        "after: welcome Erin",
        "after: thanks",
    ];
    for node in [&alice, &bob] {
        wait_until(CONVERGE, "the members to read all four messages", || {
            (node.log_texts(&space) == everything).then_some(())
        });
    }
    assert_eq!(erin.log_texts(&space), everything[2..]);
    let status = wait_until(CONVERGE, "Erin to hold the history she cannot read", || {
        let s = erin.space_status(&space)?;
        (s["before_join"].as_u64()? >= 2 && s["sync"] == "synced").then_some(s)
    });
    assert_eq!(
        status["key_problem"],
        Value::Null,
        "history from before a join is no key problem"
    );
    assert_eq!(status["history"], "from-join");

    // Erin's phone is another device of a member: it reads what Erin reads.
    link(&erin, &phone);
    wait_until(CONVERGE, "Erin's phone to read from her join on", || {
        (phone.log_texts(&space) == everything[2..]).then_some(())
    });
    phone.send(&space, "after: from my phone");
    wait_until(CONVERGE, "Alice to read the phone's message", || {
        (alice.log_texts(&space).len() == 5).then_some(())
    });

    // A restart rebuilds the per-epoch documents and the locked history alike.
    erin.stop();
    erin.restart();
    wait_until(CONVERGE, "Erin to read the same after a restart", || {
        let texts = erin.log_texts(&space);
        (texts.len() == 3 && texts[..2] == everything[2..]).then_some(())
    });
    assert_eq!(erin.space_status(&space).unwrap()["key_problem"], Value::Null);

    // With every key the log gives Erin's devices: nothing from before her join.
    let erin_device: DeviceId = erin.device_id().parse().unwrap();
    let joined_erin =
        |op: &ControlOp, _: &DeviceId| matches!(op, ControlOp::Add(a) if a.member.cert.device == erin_device);
    for node in [&mut alice, &mut bob, &mut erin, &mut phone] {
        node.stop();
    }
    for device in [&erin, &phone] {
        let (before, after) = plaintext_reachable_after(&alice.home, &device.home, &space, joined_erin);
        assert_eq!(
            before,
            0,
            "{}: plaintext from before Erin's join",
            device.home.display()
        );
        assert!(after > 0, "the same keys open what came after");
    }
    // Bob, a member from the start, opens both.
    let (before, after) = plaintext_reachable_after(&alice.home, &bob.home, &space, joined_erin);
    assert!(before > 0 && after > 0);
}

/// The texts of a `chat info` answer's pinned messages, sorted.
fn pinned_texts(info: &Value) -> Option<Vec<String>> {
    let mut texts: Vec<String> = info["pinned"]
        .as_array()?
        .iter()
        .map(|m| m["text"].as_str().map(str::to_string))
        .collect::<Option<_>>()?;
    texts.sort();
    Some(texts)
}

/// A newcomer to a from-join room cannot read what came before its join, yet
/// is shown the room's announcement and the messages owners and admins pinned:
/// the inviting owner seals copies of them under the new epoch. The author's
/// later edit reaches the copy; a retraction deletes the copy on the
/// newcomer's node too. A writer's pinned message is not copied; an earlier
/// message pinned after the join is copied then; the newcomer, an admin,
/// unpins a message it knows by its copy only.
#[test]
fn a_newcomer_is_shown_the_announcement_and_admins_pins_from_before_its_join() {
    let root = tempfile::tempdir().unwrap();
    let mut alice = Node::init(root.path(), "alice");
    let mut bob = Node::init(root.path(), "bob");
    let mut erin = Node::init(root.path(), "erin");
    alice.start(&[]);
    bob.start(&[alice.addr()]);
    erin.start(&[alice.addr(), bob.addr()]);
    let space = from_join_room(&alice, &bob);
    let note = alice.json(&["chat", "announce", &space, "Freeze starts Friday", "--json"])["message"]
        .as_str()
        .unwrap()
        .to_string();
    let rules = alice.send(&space, "Rules: be kind");
    alice.json(&["chat", "pin", &rules, "--json"]);
    let decision = alice.send(&space, "Decision: ship it");
    wait_until(CONVERGE, "Bob to read the room", || {
        (bob.log_texts(&space).len() == 3).then_some(())
    });
    let faq = bob.send(&space, "FAQ: ask in thread");
    wait_until(CONVERGE, "Alice to read Bob's FAQ", || {
        alice.try_json(&["chat", "pin", &faq, "--json"]).ok()
    });

    let erin_user = common::user_of(&erin);
    wait_until(CONVERGE, "Alice to invite Erin as an admin", || {
        alice
            .try_json(&["space", "invite", &space, &erin_user, "--role", "admin", "--json"])
            .ok()
    });
    let info = wait_until(CONVERGE, "Erin to be shown the announcement and the pins", || {
        let info = erin.try_json(&["chat", "info", &space, "--json"]).ok()?;
        (info["announcement"]["text"] == "Freeze starts Friday").then_some(info)
    });
    assert!(
        erin.log_texts(&space).is_empty(),
        "Erin reads no message from before her join"
    );
    assert_eq!(
        info["announcement"]["id"],
        note.as_str(),
        "the copy shows as the original"
    );
    assert_eq!(info["announcement"]["author"], alice.device_id().as_str());
    assert_eq!(
        pinned_texts(&info).unwrap(),
        ["Freeze starts Friday", "Rules: be kind"],
        "the owner's pins are shown; the writer's FAQ is not copied"
    );
    let bob_info = bob.json(&["chat", "info", &space, "--json"]);
    assert_eq!(
        pinned_texts(&bob_info).unwrap().len(),
        3,
        "members from before read all pins"
    );

    // A message from before the join pinned after it is copied as it is pinned.
    alice.json(&["chat", "pin", &decision, "--json"]);
    wait_until(CONVERGE, "Erin to be shown the message pinned after her join", || {
        let info = erin.json(&["chat", "info", &space, "--json"]);
        (pinned_texts(&info)?.len() == 3).then_some(())
    });

    // The author's edit, written after the join, reaches the copy.
    alice.json(&["chat", "edit", &note, "Freeze starts Monday", "--json"]);
    let info = wait_until(CONVERGE, "Erin to see the edited announcement", || {
        let info = erin.json(&["chat", "info", &space, "--json"]);
        (info["announcement"]["text"] == "Freeze starts Monday").then_some(info)
    });
    assert_eq!(info["announcement"]["history"][0]["text"], "Freeze starts Friday");

    // A retraction deletes the copy with the original.
    alice.json(&["chat", "retract", &note, "--json"]);
    wait_until(CONVERGE, "the announcement to leave Erin's view", || {
        let info = erin.json(&["chat", "info", &space, "--json"]);
        (info["announcement"].is_null() && pinned_texts(&info)? == ["Decision: ship it", "Rules: be kind"])
            .then_some(())
    });
    // Erin, an admin, takes down a pin she knows by its copy only.
    erin.json(&["chat", "pin", &rules, "--unpin", "--json"]);
    wait_until(CONVERGE, "Alice to see Erin's unpin", || {
        let info = alice.json(&["chat", "info", &space, "--json"]);
        let pinned = pinned_texts(&info)?;
        (!pinned.iter().any(|t| t == "Rules: be kind") && pinned.len() == 3).then_some(())
    });
    erin.stop();
    let readable: String = common::decryptable(&erin.home, &erin.home, &space)
        .iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    assert!(readable.contains("Rules: be kind"), "the test reads what Erin holds");
    assert!(
        !readable.contains("Freeze starts"),
        "Erin's store holds no text of the retracted announcement"
    );
    for node in [&mut alice, &mut bob] {
        node.stop();
    }
}
