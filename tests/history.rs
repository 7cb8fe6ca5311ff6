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

    let bob_card = bob.card();
    let created = alice.json(&[
        "chat",
        "create",
        "branch",
        "--member",
        &bob_card,
        "--history",
        "from-join",
        "--json",
    ]);
    let space = created["space"].as_str().unwrap().to_string();
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
