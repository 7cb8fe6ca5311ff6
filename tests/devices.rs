//! Users with several devices, between daemon processes.
//!
//! Alice's first device (her user's primary) is in three spaces. She links a
//! second device (`device link` / `device join`, both confirming the code); it
//! is added to all three with her role, reads their whole histories, and writes
//! as Alice. Then she revokes it: it is removed from the three spaces under new
//! key epochs, the others keep working, and with every key the control log could
//! ever give it, nothing written after the revocation opens.

mod common;

use std::time::Duration;

use common::{Node, link, plaintext_reachable, user_of, wait_until};

const CONVERGE: Duration = Duration::from_secs(60);

#[test]
fn a_linked_device_reads_every_space_of_its_user_and_nothing_after_revocation() {
    let root = tempfile::tempdir().unwrap();
    let mut laptop = Node::init(root.path(), "laptop");
    let mut phone = Node::init(root.path(), "phone");
    let mut bob = Node::init(root.path(), "bob");
    laptop.start(&[]);
    bob.start(&[laptop.addr()]);
    phone.start(&[laptop.addr(), bob.addr()]);
    let alice = user_of(&laptop);
    assert_ne!(user_of(&phone), alice, "a fresh device starts as its own user");

    let spaces: Vec<String> = (0..3)
        .map(|i| bob.create_chat(&format!("room {i}"), &[&laptop], &[]))
        .collect();
    for (i, space) in spaces.iter().enumerate() {
        bob.send(space, &format!("bob in room {i}"));
        wait_until(CONVERGE, "the laptop to read the room", || {
            (!laptop.log_texts(space).is_empty()).then_some(())
        });
        laptop.send(space, &format!("alice in room {i}"));
    }
    // A bad ticket is the person's mistake: exit code 2.
    let out = phone.cli(&["device", "join", "opl1garbage", "--yes"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));

    let linked = link(&laptop, &phone);
    assert_eq!(linked["spaces"].as_array().unwrap().len(), 3);
    assert_eq!(user_of(&phone), alice);
    for space in &spaces {
        wait_until(CONVERGE, "the phone to read the room's history", || {
            (phone.log_texts(space).len() == 2 && phone.log_texts(space) == bob.log_texts(space)).then_some(())
        });
        let members = bob.json(&["space", "members", space, "--json"]);
        let phone_entry = members["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["device"] == phone.device_id().as_str())
            .cloned()
            .expect("the phone is a member");
        assert_eq!(phone_entry["user"], alice.as_str());
        assert_eq!(phone_entry["role"], "writer");
    }
    let devices = laptop.json(&["device", "list", "--json"]);
    assert_eq!(devices.as_array().unwrap().len(), 2);
    phone.send(&spaces[0], "alice from her phone");
    wait_until(CONVERGE, "bob to read the phone's message", || {
        bob.log_texts(&spaces[0])
            .contains(&"alice from her phone".to_string())
            .then_some(())
    });
    // A space made later for Alice (named by her laptop's card only) reaches
    // her phone too: the laptop adds its user's other devices. Removing Alice,
    // the user, removes both.
    let later = bob.create_chat("later", &[&laptop], &[]);
    bob.send(&later, "for alice, on every device");
    wait_until(CONVERGE, "the phone to be added by the laptop and read", || {
        phone
            .log_texts(&later)
            .contains(&"for alice, on every device".to_string())
            .then_some(())
    });
    let removed = bob.json(&["space", "remove", &later, &alice, "--json"]);
    assert!(removed["epoch"].is_string());
    let members = bob.json(&["space", "members", &later, "--json"]);
    assert_eq!(members["members"].as_array().unwrap().len(), 1, "only bob is left");

    // Only the device holding the user key links; bob cannot revoke alice's phone.
    let out = phone.cli(&["device", "link", "--yes"]);
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    let out = bob.cli(&["device", "revoke", &phone.device_id()]);
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));

    // The phone is lost.
    let revoked = laptop.json(&["device", "revoke", &phone.device_id(), "--json"]);
    assert_eq!(revoked["spaces"].as_array().unwrap().len(), 3);
    for space in &spaces {
        wait_until(CONVERGE, "bob to see the phone gone", || {
            let members = bob.json(&["space", "members", space, "--json"]);
            let gone = members["members"]
                .as_array()?
                .iter()
                .all(|m| m["device"] != phone.device_id().as_str());
            gone.then_some(())
        });
        let before = bob.log_texts(space).len();
        laptop.send(space, "after the phone was lost");
        bob.send(space, "bob after the phone was lost");
        wait_until(CONVERGE, "laptop and bob to agree", || {
            let (l, b) = (laptop.log_texts(space), bob.log_texts(space));
            (l.len() == before + 2 && l == b).then_some(())
        });
    }
    let list = laptop.json(&["device", "list", "--json"]);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|d| d["device"] == phone.device_id().as_str() && d["status"] == "revoked")
    );
    std::thread::sleep(Duration::from_secs(2));
    for space in &spaces {
        assert!(phone.log_texts(space).iter().all(|t| !t.contains("lost")));
    }
    for n in [&mut laptop, &mut phone, &mut bob] {
        n.stop();
    }
    for space in &spaces {
        let (before, after) = plaintext_reachable(&bob.home, &phone.home, space);
        assert!(before > 0);
        assert_eq!(after, 0, "the revoked phone opens nothing written after");
    }
}
