//! Department rooms between daemon processes: the org admin makes a room for
//! 总部/技术部; the members of that department and of those below it are in it,
//! others are not; when a new chart moves people, the room follows.

mod common;

use std::{collections::BTreeSet, time::Duration};

use common::{
    Node,
    org::{Member, org_with_members, publish, write_chart},
    wait_until,
};

const CONVERGE: Duration = Duration::from_secs(60);

/// The devices in `space` as `node` sees it.
fn devices(node: &Node, space: &str) -> Option<BTreeSet<String>> {
    Some(node.members(space)?.into_iter().map(|(device, _)| device).collect())
}

#[test]
fn a_department_room_follows_the_org_chart() {
    let root = tempfile::tempdir().unwrap();
    let mut admin = Node::init(root.path(), "admin");
    let mut bob = Node::init(root.path(), "bob");
    let mut carol = Node::init(root.path(), "carol");
    let mut dave = Node::init(root.path(), "dave");
    admin.start(&[]);
    for node in [&mut bob, &mut carol, &mut dave] {
        node.start(&[admin.addr()]);
    }
    let chart = root.path().join("chart.csv");
    let chart_with = |bob_dept, carol_dept| {
        [
            Member {
                id: "1001",
                node: &bob,
                department: bob_dept,
            },
            Member {
                id: "1002",
                node: &carol,
                department: carol_dept,
            },
            Member {
                id: "1003",
                node: &dave,
                department: "总部/技术部/前端组",
            },
        ]
    };
    org_with_members(&admin, &chart, &chart_with("总部/技术部", "总部/市场部"));
    let (a, b, c, d) = (admin.device_id(), bob.device_id(), carol.device_id(), dave.device_id());
    wait_until(CONVERGE, "the admin to meet everyone", || {
        let peers = admin.json(&["status", "--json"])["peers"].as_array()?.len();
        (peers == 3).then_some(())
    });

    // Only org admins make department rooms, of departments that exist.
    bob.fails(&["chat", "create", "mine", "--department", "总部/技术部"], 4);
    admin.fails(&["chat", "create", "x", "--department", "总部/不存在"], 5);

    // A department admin makes rooms for its own subtree only.
    assert_eq!(publish(&admin, &["--department-admin", "1003=总部/技术部/前端组"]), 4);
    wait_until(CONVERGE, "dave to hold version 4", || {
        (common::org::version(&dave) == 4).then_some(())
    });
    dave.fails(&["chat", "create", "x", "--department", "总部/市场部"], 4);
    let own = dave.json(&[
        "chat",
        "create",
        "frontend",
        "--department",
        "总部/技术部/前端组",
        "--json",
    ]);
    assert!(own["space"].is_string());

    let created = admin.json(&["chat", "create", "tech", "--department", "总部/技术部", "--json"]);
    let space = created["space"].as_str().unwrap().to_string();
    let expected: BTreeSet<String> = [&a, &b, &d].map(|s| s.to_string()).into();
    assert_eq!(
        devices(&admin, &space).unwrap(),
        expected,
        "the department and the one below it"
    );
    let listed = admin.json(&["chat", "list", "--json"]);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["department"] == "总部/技术部")
    );
    admin.send(&space, "tech all-hands at ten");
    for node in [&bob, &dave] {
        wait_until(CONVERGE, &format!("{} to read the room", node.name), || {
            (node.log_texts(&space) == ["tech all-hands at ten"]).then_some(())
        });
    }
    assert!(devices(&carol, &space).is_none(), "carol is in another department");

    // A new chart moves Bob out and Carol in: the room follows.
    write_chart(&chart, &chart_with("总部/市场部", "总部/技术部"));
    assert_eq!(
        admin.json(&["org", "import", chart.to_str().unwrap(), "--json"])["version"],
        5
    );
    let moved: BTreeSet<String> = [&a, &c, &d].map(|s| s.to_string()).into();
    for node in [&admin, &carol, &dave] {
        wait_until(
            CONVERGE,
            &format!("{} to see the room follow the chart", node.name),
            || (devices(node, &space)? == moved).then_some(()),
        );
    }
    wait_until(CONVERGE, "carol to read the room's history", || {
        (carol.log_texts(&space) == ["tech all-hands at ten"]).then_some(())
    });
}
