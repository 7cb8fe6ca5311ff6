//! The anchor role between daemon processes: relay and rendezvous for nodes
//! that open no port, and store-and-forward for members who are never online at
//! the same time.

mod common;

use std::time::Duration;

use common::{
    Node,
    org::{org_of_one, publish, version},
    wait_until,
};
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(60);

fn status(node: &Node) -> Value {
    node.json(&["status", "--json"])
}

/// The link kind `node` reports for its session with `other`, if connected.
fn link_to(node: &Node, other: &Node) -> Option<String> {
    let id = other.device_id();
    status(node)["peers"]
        .as_array()?
        .iter()
        .find(|p| p["device"] == id.as_str())
        .map(|p| p["link"].as_str().unwrap().to_string())
}

/// Alice and Bob open no port (`--no-listen`) and know only the anchor's
/// address. Each registers its relayed address at the anchor, finds the other
/// there, and they sync over a circuit through the anchor's relay: more than
/// libp2p's default 128 KiB circuit budget goes through.
#[test]
fn nodes_that_open_no_port_meet_and_sync_through_the_anchor() {
    let root = tempfile::tempdir().unwrap();
    let mut anchor = Node::init(root.path(), "anchor");
    let mut alice = Node::init(root.path(), "alice");
    let mut bob = Node::init(root.path(), "bob");
    anchor.daemon_args = vec!["--anchor"];
    alice.daemon_args = vec!["--no-listen"];
    bob.daemon_args = vec!["--no-listen"];
    anchor.start(&[]);
    alice.start(&[anchor.addr()]);
    bob.start(&[anchor.addr()]);

    assert_eq!(status(&anchor)["anchor"], true);
    assert!(
        status(&alice)["listen"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a.as_str().unwrap().contains("p2p-circuit")),
        "alice listens only through the relay"
    );
    let link = wait_until(CONVERGE, "alice and bob to find each other at the anchor", || {
        link_to(&alice, &bob).filter(|_| link_to(&bob, &alice).is_some())
    });
    assert_eq!(link, "relayed");
    assert_eq!(link_to(&bob, &alice).as_deref(), Some("relayed"));
    for node in [&alice, &bob] {
        assert_eq!(
            status(node)["anchors"][0],
            anchor.device_id().as_str(),
            "{} uses the anchor",
            node.name
        );
    }

    let space = alice.create_chat("through the relay", &[&bob], &[]);
    // 40 messages of 4 KiB: well past libp2p's default circuit budget.
    let texts: Vec<String> = (0..40).map(|i| format!("{i:02}-{}", "x".repeat(4096))).collect();
    for t in &texts {
        alice.send(&space, t);
    }
    let got = wait_until(CONVERGE, "bob to read alice's messages", || {
        let got = bob.log_texts(&space);
        (got.len() == texts.len()).then_some(got)
    });
    assert_eq!(got, texts);
    bob.send(&space, "and back");
    wait_until(CONVERGE, "alice to read bob's reply", || {
        alice.log_texts(&space).contains(&"and back".to_string()).then_some(())
    });
    // The anchor relayed ciphertext of a space it is not in: it holds none of it.
    assert!(anchor.space_status(&space).is_none());
}

/// The org names its anchor in the policy. Space owners then name it a
/// replicator: of a space created before (when the version arrives) and of a
/// new one (from its genesis). Alice writes while Bob is offline and goes away;
/// Bob, who never meets Alice, reads everything from the anchor, which cannot.
#[test]
fn the_org_anchor_stores_and_forwards_what_it_cannot_read() {
    let root = tempfile::tempdir().unwrap();
    let mut anchor = Node::init(root.path(), "anchor");
    let mut alice = Node::init(root.path(), "alice");
    let mut bob = Node::init(root.path(), "bob");
    anchor.daemon_args = vec!["--anchor"];
    anchor.start(&[]);
    alice.start(&[anchor.addr()]);

    let org = org_of_one(&alice);
    let followed = anchor.cli(&["org", "follow", &org]);
    assert!(
        followed.status.success(),
        "{}",
        String::from_utf8_lossy(&followed.stderr)
    );
    let before = alice.create_chat("before the anchor", &[&bob], &[]);
    let anchor_id = anchor.device_id();
    assert_eq!(publish(&alice, &["--anchor", &anchor_id]), 2);
    let shown = alice.json(&["org", "show", "--json"]);
    assert_eq!(shown["anchors"][0], anchor_id.as_str());
    wait_until(CONVERGE, "the anchor to hold version 2", || {
        (version(&anchor) == 2).then_some(())
    });

    let after = alice.create_chat("after the anchor", &[&bob], &[]);
    for space in [&before, &after] {
        let role = wait_until(CONVERGE, "the anchor to replicate the space", || {
            anchor
                .space_status(space)
                .map(|s| s["role"].as_str().unwrap().to_string())
        });
        assert_eq!(role, "replicator");
    }
    let texts: Vec<String> = (0..10).map(|i| format!("while bob is away {i}")).collect();
    for space in [&before, &after] {
        for t in &texts {
            alice.send(space, t);
        }
    }
    let envelopes = |n: &Node, s: &str| n.space_status(s).and_then(|s| s["envelopes"].as_u64());
    for space in [&before, &after] {
        let total = envelopes(&alice, space).unwrap();
        wait_until(CONVERGE, "the anchor to store every envelope", || {
            (envelopes(&anchor, space) == Some(total)).then_some(())
        });
    }
    alice.stop();

    bob.start(&[anchor.addr()]);
    for space in [&before, &after] {
        let got = wait_until(CONVERGE, "bob to receive everything from the anchor", || {
            let got = bob.log_texts(space);
            (got.len() == texts.len()).then_some(got)
        });
        assert_eq!(got, texts);
        anchor.fails(&["chat", "log", space], 6);
    }
}

/// The admin's device is offline when a new device enrolls: the ticket names
/// the admin's anchor, which holds the request (durably: across its own
/// restart) and hands it over when the admin's device comes back; the new
/// version reaches the new device through the anchor.
#[test]
fn the_anchor_takes_an_enrollment_while_the_admin_is_offline() {
    let root = tempfile::tempdir().unwrap();
    let mut anchor = Node::init(root.path(), "anchor");
    let mut admin = Node::init(root.path(), "admin");
    let mut laptop = Node::init(root.path(), "laptop");
    anchor.daemon_args = vec!["--anchor"];
    anchor.start(&[]);
    admin.start(&[anchor.addr()]);
    let org = org_of_one(&admin);
    assert!(anchor.cli(&["org", "follow", &org]).status.success());
    let chart = root.path().join("chart.csv");
    std::fs::write(&chart, "工号,姓名,部门\n1002,李娜,总部/法务部\n").unwrap();
    assert_eq!(
        admin.json(&["org", "import", chart.to_str().unwrap(), "--json"])["version"],
        2
    );
    // The policy names the anchor: only then do the org's nodes use it.
    assert_eq!(publish(&admin, &["--anchor", &anchor.device_id()]), 3);
    wait_until(CONVERGE, "the admin to use the anchor", || {
        status(&admin)["anchors"].as_array()?.first().map(|_| ())
    });
    let ticket = admin.json(&["org", "invite", "1002", "--json"])["ticket"]
        .as_str()
        .unwrap()
        .to_string();
    admin.stop();

    laptop.start(&[anchor.addr()]);
    let queued = laptop.json(&["org", "enroll", &ticket, "--json"]);
    assert_eq!(queued["queued"]["anchor"], anchor.device_id().as_str(), "{queued}");
    assert!(version(&laptop) < 4, "nothing is granted until the admin's device acts");

    anchor.stop();
    anchor.restart();
    admin.restart();
    wait_until(
        CONVERGE,
        "the laptop to be listed in version 4, through the anchor",
        || (version(&laptop) == 4).then_some(()),
    );
    // Version 4 is the enrollment, made by the admin's device from the request
    // the anchor handed over.
    assert!(admin.logs().contains("enrolled a device"), "{}", admin.logs());
    assert!(anchor.logs().contains("handing a held enrollment request"));
}
