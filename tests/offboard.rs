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
    org::{org_of_one, publish, version},
    wait_until,
};
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(60);

/// `node`'s view of the room's members: (device, role).
fn members(node: &Node, space: &str) -> Option<Vec<(String, String)>> {
    let m: Value = node.try_json(&["space", "members", space, "--json"]).ok()?;
    Some(
        m["members"]
            .as_array()?
            .iter()
            .map(|m| (m["device"].as_str().unwrap().into(), m["role"].as_str().unwrap().into()))
            .collect(),
    )
}

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

    let org = org_of_one(&admin);
    for node in [&bob, &carol, &dave] {
        let out = node.cli(&["org", "follow", &org]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let chart = root.path().join("chart.csv");
    std::fs::write(
        &chart,
        "工号,姓名,部门\n1001,Bob,总部/技术部\n1002,Carol,总部/技术部\n1003,Dave,总部/技术部\n",
    )
    .unwrap();
    let imported = admin.json(&["org", "import", chart.to_str().unwrap(), "--json"]);
    assert_eq!(imported["version"], 2);
    let (b, c, d) = (bob.device_id(), carol.device_id(), dave.device_id());
    let devices = [format!("1001={b}"), format!("1002={c}"), format!("1003={d}")];
    let args: Vec<&str> = devices.iter().flat_map(|d| ["--device", d.as_str()]).collect();
    assert_eq!(publish(&admin, &args), 3);

    let space = bob.create_chat("team", &[&carol], &[]);
    bob.send(&space, "the plan, by bob");
    wait_until(CONVERGE, "carol to read bob's message", || {
        (carol.log_texts(&space).len() == 1).then_some(())
    });

    // Bad input changes nothing.
    let unknown = admin.cli(&["org", "offboard", "1001", "--successor", "9999"]);
    assert_eq!(
        unknown.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    let to_self = admin.cli(&["org", "offboard", "1001", "--successor", "1001"]);
    assert_eq!(to_self.status.code(), Some(2));
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
    let again = admin.cli(&["org", "offboard", "1001", "--successor", "1003"]);
    assert_eq!(again.status.code(), Some(2), "already offboarded");

    // Carol (a writer) hands the room to Dave; everyone still in it agrees.
    for node in [&carol, &dave] {
        let got = wait_until(CONVERGE, &format!("{} to see dave as the owner", node.name), || {
            members(node, &space).filter(|m| m.contains(&(d.clone(), "owner".into())))
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
        let admin_now = members(&carol, &space)?.contains(&(c.clone(), "admin".into()));
        (admin_now && carol.log_texts(&space).contains(&"dave here".to_string())).then_some(())
    });

    // Bob's device gets no session from the nodes holding the version.
    wait_until(CONVERGE, "bob to be cut off", || {
        let peers = bob.json(&["status", "--json"])["peers"].clone();
        peers.as_array()?.is_empty().then_some(())
    });
}
