//! `org offboard` between daemon processes.
//!
//! Bob owns a room, alone, with Carol as a writer. Bob leaves the org with
//! Dave as his successor. The org's admin is in neither the room nor any
//! space: Carol's node, holding the new version, hands Bob's place to Dave
//! (a `Succession`). Dave becomes the room's owner, reads its history and acts
//! as owner; Bob's device is out of the room and gets no session.

mod common;

use std::time::Duration;

use common::{
    Node,
    org::{Member, org_with_members, version},
    wait_until,
};

const CONVERGE: Duration = Duration::from_secs(60);

#[test]
fn an_offboarded_owner_hands_its_spaces_to_the_successor() {
    let root = tempfile::tempdir().unwrap();
    let mut admin = Node::init(root.path(), "admin");
    let mut bob = Node::init(root.path(), "bob");
    let mut carol = Node::init(root.path(), "carol");
    let mut dave = Node::init(root.path(), "dave");
    admin.start(&[]);
    carol.start(&[admin.addr()]);
    bob.start(&[admin.addr(), carol.addr()]);
    dave.start(&[admin.addr(), carol.addr()]);

    let chart = root.path().join("chart.csv");
    let in_tech = |id, node| Member {
        id,
        node,
        department: "总部/技术部",
    };
    org_with_members(
        &admin,
        &chart,
        &[in_tech("1001", &bob), in_tech("1002", &carol), in_tech("1003", &dave)],
    );
    let (b, c, d) = (bob.device_id(), carol.device_id(), dave.device_id());

    let space = bob.create_chat("team", &[&carol], &[]);
    bob.send(&space, "the plan, by bob");
    wait_until(CONVERGE, "carol to read bob's message", || {
        (carol.log_texts(&space).len() == 1).then_some(())
    });

    // Bad input changes nothing.
    admin.fails(&["org", "offboard", "1001", "--successor", "9999"], 2);
    admin.fails(&["org", "offboard", "1001", "--successor", "1001"], 2);
    assert_eq!(version(&admin), 3);

    // The admin must have met Dave's device to name it in the version.
    wait_until(CONVERGE, "the admin to meet dave", || {
        let peers = admin.json(&["status", "--json"])["peers"].clone();
        peers
            .as_array()?
            .iter()
            .any(|p| p["device"] == d.as_str())
            .then_some(())
    });
    let offboarded = admin.json(&["org", "offboard", "1001", "--successor", "1003", "--json"]);
    assert_eq!(offboarded["version"], 4);
    assert!(
        offboarded["revoked"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == b.as_str())
    );
    admin.fails(&["org", "offboard", "1001", "--successor", "1003"], 2);

    // Carol (a writer) hands the room to Dave; everyone still in it agrees.
    for node in [&carol, &dave] {
        let got = wait_until(CONVERGE, &format!("{} to see dave as the owner", node.name), || {
            node.members(&space)
                .filter(|m| m.contains(&(d.clone(), "owner".into())))
        });
        assert!(
            !got.iter().any(|(dev, _)| *dev == b),
            "bob's device left the room: {got:?}"
        );
        assert!(got.contains(&(c.clone(), "writer".into())));
    }
    // Dave reads the history under the new epoch, and acts as owner.
    let history = wait_until(CONVERGE, "dave to read the history", || {
        let log = dave.log_texts(&space);
        (!log.is_empty()).then_some(log)
    });
    assert_eq!(history, ["the plan, by bob"]);
    let promoted = dave.cli(&["space", "role", &space, &c, "admin"]);
    assert!(
        promoted.status.success(),
        "{}",
        String::from_utf8_lossy(&promoted.stderr)
    );
    dave.send(&space, "dave here");
    wait_until(CONVERGE, "carol to read dave and be an admin", || {
        let admin_now = carol.members(&space)?.contains(&(c.clone(), "admin".into()));
        (admin_now && carol.log_texts(&space).contains(&"dave here".to_string())).then_some(())
    });

    // Bob's device gets no session from the nodes holding the version.
    wait_until(CONVERGE, "bob to be cut off", || {
        let peers = bob.json(&["status", "--json"])["peers"].clone();
        peers.as_array()?.is_empty().then_some(())
    });
}
