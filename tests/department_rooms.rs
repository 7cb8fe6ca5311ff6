//! Department rooms between daemon processes: the org admin makes a room for
//! 总部/技术部; the members of that department and of those below it are in it,
//! others are not; when a new chart moves people, the room follows.

mod common;

use std::{collections::BTreeSet, time::Duration};

use common::{
    Node,
    org::{org_of_one, publish},
    wait_until,
};

const CONVERGE: Duration = Duration::from_secs(60);

/// The devices in `space` as `node` sees it.
fn devices(node: &Node, space: &str) -> Option<BTreeSet<String>> {
    let m = node.try_json(&["space", "members", space, "--json"]).ok()?;
    Some(
        m["members"]
            .as_array()?
            .iter()
            .map(|m| m["device"].as_str().unwrap().to_string())
            .collect(),
    )
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
    let org = org_of_one(&admin);
    for node in [&bob, &carol, &dave] {
        assert!(node.cli(&["org", "follow", &org]).status.success());
    }
    let chart = root.path().join("chart.csv");
    let write_chart = |bob_dept: &str, carol_dept: &str| {
        std::fs::write(
            &chart,
            format!("工号,姓名,部门\n1001,Bob,{bob_dept}\n1002,Carol,{carol_dept}\n1003,Dave,总部/技术部/前端组\n"),
        )
        .unwrap();
    };
    write_chart("总部/技术部", "总部/市场部");
    assert_eq!(
        admin.json(&["org", "import", chart.to_str().unwrap(), "--json"])["version"],
        2
    );
    let (a, b, c, d) = (admin.device_id(), bob.device_id(), carol.device_id(), dave.device_id());
    let listed = [format!("1001={b}"), format!("1002={c}"), format!("1003={d}")];
    let args: Vec<&str> = listed.iter().flat_map(|l| ["--device", l.as_str()]).collect();
    assert_eq!(publish(&admin, &args), 3);
    wait_until(CONVERGE, "the admin to meet everyone", || {
        let peers = admin.json(&["status", "--json"])["peers"].as_array()?.len();
        (peers == 3).then_some(())
    });

    // Only org admins make department rooms, of departments that exist.
    let not_admin = bob.cli(&["chat", "create", "mine", "--department", "总部/技术部"]);
    assert_eq!(
        not_admin.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&not_admin.stderr)
    );
    let unknown = admin.cli(&["chat", "create", "x", "--department", "总部/不存在"]);
    assert_eq!(
        unknown.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );

    // A department admin makes rooms for its own subtree only.
    assert_eq!(publish(&admin, &["--department-admin", "1003=总部/技术部/前端组"]), 4);
    wait_until(CONVERGE, "dave to hold version 4", || {
        (common::org::version(&dave) == 4).then_some(())
    });
    let elsewhere = dave.cli(&["chat", "create", "x", "--department", "总部/市场部"]);
    assert_eq!(
        elsewhere.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&elsewhere.stderr)
    );
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
    write_chart("总部/市场部", "总部/技术部");
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
