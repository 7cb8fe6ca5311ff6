//! Removal, demotion and key epochs between daemon processes.
//!
//! - A removed device reads nothing written after its removal: with every key
//!   the full control log could ever give it, not one byte of any later envelope
//!   or snapshot opens.
//! - Partitioned changes converge: an admin adds while the owner removes, the
//!   removed member writes concurrently, an admin is demoted while adding. After
//!   the partition heals, every node shows the same members, roles and epoch.
//! - A member offline during two epoch changes comes back and reads everything.

mod common;

use std::{collections::BTreeMap, time::Duration};

use common::{Node, plaintext_reachable, plaintext_reachable_after, wait_until};
use outpost_node::control::ControlOp;
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(60);

/// (members with roles, epoch) as a node sees them.
fn view(node: &Node, space: &str) -> Option<(BTreeMap<String, String>, String)> {
    let members = node.try_json(&["space", "members", space, "--json"]).ok()?;
    let roles = members["members"]
        .as_array()?
        .iter()
        .map(|m| {
            (
                m["device"].as_str().unwrap().to_string(),
                m["role"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let epoch = node.space_status(space)?["epoch"].as_str()?.to_string();
    Some((roles, epoch))
}

/// Waits until every node shows the same members, roles and epoch; returns them.
fn converged(nodes: &[&Node], space: &str) -> (BTreeMap<String, String>, String) {
    wait_until(CONVERGE, "members, roles and epoch to agree", || {
        let views: Vec<_> = nodes.iter().map(|n| view(n, space)).collect::<Option<_>>()?;
        views.iter().all(|v| *v == views[0]).then(|| views[0].clone())
    })
}

fn is_clean(node: &Node, space: &str) -> bool {
    node.space_status(space)
        .is_some_and(|s| s["key_problem"].is_null() && s["readable"] == true)
}

#[test]
fn a_removed_device_reads_nothing_written_after_its_removal() {
    let root = tempfile::tempdir().unwrap();
    let mut a = Node::init(root.path(), "a");
    let mut b = Node::init(root.path(), "b");
    let mut c = Node::init(root.path(), "c");
    a.start(&[]);
    b.start(&[a.addr()]);
    c.start(&[a.addr(), b.addr()]);
    let space = a.create_chat("ops", &[&b, &c], &[]);
    for node in [&a, &b, &c] {
        node.send(&space, &format!("hello from {}", node.name));
    }
    wait_until(CONVERGE, "three messages everywhere", || {
        [&a, &b, &c]
            .iter()
            .all(|n| n.log_texts(&space).len() == 3)
            .then_some(())
    });
    let (_, first_epoch) = converged(&[&a, &b, &c], &space);

    // B is a writer: it may not remove anyone (exit code 4, nothing changes).
    let out = b.cli(&["space", "remove", &space, &c.device_id()]);
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));

    let removed = a.json(&["space", "remove", &space, &c.device_id(), "--json"]);
    assert_ne!(removed["epoch"], first_epoch.as_str());
    let (members, epoch) = converged(&[&a, &b], &space);
    assert!(!members.contains_key(&c.device_id()));
    assert_eq!(epoch, removed["epoch"].as_str().unwrap());
    wait_until(CONVERGE, "c to learn it was removed", || {
        (c.space_status(&space)?["role"] == "removed").then_some(())
    });
    // C may no longer write.
    let out = c.cli(&["chat", "send", &space, "still here?"]);
    assert!(!out.status.success());

    for i in 0..5 {
        a.send(&space, &format!("secret from a {i}"));
        b.send(&space, &format!("secret from b {i}"));
    }
    wait_until(CONVERGE, "a and b to agree on 13 messages", || {
        let (la, lb) = (a.log_texts(&space), b.log_texts(&space));
        (la.len() == 13 && la == lb).then_some(())
    });
    assert!(is_clean(&a, &space) && is_clean(&b, &space));
    // C's own view holds nothing written after its removal.
    std::thread::sleep(Duration::from_secs(3));
    assert!(c.log_texts(&space).iter().all(|t| !t.starts_with("secret")));

    for n in [&mut a, &mut b, &mut c] {
        n.stop();
    }
    for home in [&a.home, &b.home] {
        let (before, after) = plaintext_reachable(home, &c.home, &space);
        assert!(before > 0, "the check opens what c was entitled to");
        assert_eq!(after, 0, "c's keys open nothing written after its removal");
    }
}

/// Owner A, admin B and writer C share a space, all connected; D is not started.
fn team(root: &std::path::Path) -> (String, [Node; 4]) {
    let [mut a, mut b, mut c, d] = ["a", "b", "c", "d"].map(|name| Node::init(root, name));
    a.start(&[]);
    b.start(&[a.addr()]);
    c.start(&[a.addr(), b.addr()]);
    let space = a.create_chat("ops", &[&b, &c], &[]);
    a.json(&["space", "role", &space, &b.device_id(), "admin", "--json"]);
    converged(&[&a, &b, &c], &space);
    (space, [a, b, c, d])
}

/// Partition: the owner removes C on one side while the admin adds D and C
/// writes on the other. After healing: C is out, D is in, C's concurrent message
/// stays (it was valid where it was written), every node has the same members,
/// roles and epoch, and D reads the new epoch (a member rotated for it).
#[test]
fn a_partitioned_add_remove_and_edit_converge() {
    let root = tempfile::tempdir().unwrap();
    let (space, [mut a, mut b, mut c, mut d]) = team(root.path());
    let d_card = d.card();

    // Partition: A alone; B and C (and D) together.
    a.stop();
    a.start(&[]);
    b.stop();
    c.stop();
    b.start(&[]);
    c.start(&[b.addr()]);
    d.start(&[b.addr()]);
    a.json(&["space", "remove", &space, &c.device_id(), "--json"]);
    a.send(&space, "a during the partition");
    b.json(&["space", "invite", &space, &d_card, "--json"]);
    c.send(&space, "c during the partition");
    wait_until(CONVERGE, "b and d to see c's message", || {
        [&b, &d]
            .iter()
            .all(|n| n.log_texts(&space).contains(&"c during the partition".to_string()))
            .then_some(())
    });

    // Heal.
    a.stop();
    a.start(&[b.addr(), c.addr(), d.addr()]);
    let (members, _) = converged(&[&a, &b, &d], &space);
    assert!(!members.contains_key(&c.device_id()), "the removal wins");
    assert_eq!(members.get(&d.device_id()).map(String::as_str), Some("writer"));
    assert_eq!(members.get(&b.device_id()).map(String::as_str), Some("admin"));
    wait_until(CONVERGE, "the epoch to reach d", || {
        [&a, &b, &d].iter().all(|n| is_clean(n, &space)).then_some(())
    });
    let (_, epoch) = converged(&[&a, &b, &d], &space);
    a.send(&space, "after the heal");
    wait_until(CONVERGE, "a, b and d to hold the same log", || {
        let logs: Vec<_> = [&a, &b, &d].iter().map(|n| n.log_texts(&space)).collect();
        (logs[0].len() == 3 && logs.iter().all(|l| *l == logs[0])).then_some(())
    });
    let log = a.log_texts(&space);
    assert!(
        log.contains(&"c during the partition".to_string()),
        "valid at its causal point"
    );
    assert!(!c.log_texts(&space).contains(&"after the heal".to_string()));
    // The ops that made C's removal and D's addition are effective everywhere.
    for n in [&a, &b, &d] {
        let s: Value = n.space_status(&space).unwrap();
        assert_eq!(s["ignored_ops"], 0);
        assert_eq!(s["epoch"], epoch.as_str());
    }
    for n in [&mut a, &mut b, &mut c, &mut d] {
        n.stop();
    }
    let (_, after) = plaintext_reachable(&a.home, &c.home, &space);
    assert_eq!(after, 0);
}

/// Partition: the owner demotes admin B while B adds D. B's concurrent add is
/// void on every node (strong remove): D is not a member anywhere, B is a writer,
/// and the epoch that D could derive through the void add is replaced.
#[test]
fn a_demotion_voids_the_demoted_admins_concurrent_add() {
    let root = tempfile::tempdir().unwrap();
    let (space, [mut a, mut b, mut c, mut d]) = team(root.path());
    let d_card = d.card();

    a.stop();
    a.start(&[]);
    b.stop();
    b.start(&[]);
    d.start(&[b.addr()]);
    a.json(&["space", "role", &space, &b.device_id(), "writer", "--json"]);
    b.json(&["space", "invite", &space, &d_card, "--json"]);
    wait_until(CONVERGE, "d to join on b's side", || is_clean(&d, &space).then_some(()));

    a.stop();
    a.start(&[b.addr(), c.addr()]);
    let (members, _) = converged(&[&a, &b, &c], &space);
    assert!(
        !members.contains_key(&d.device_id()),
        "added by a concurrently demoted admin"
    );
    assert_eq!(members.get(&b.device_id()).map(String::as_str), Some("writer"));
    wait_until(CONVERGE, "a clean epoch everywhere", || {
        [&a, &b, &c].iter().all(|n| is_clean(n, &space)).then_some(())
    });
    converged(&[&a, &b, &c], &space);
    for n in [&a, &b, &c] {
        assert_eq!(n.space_status(&space).unwrap()["ignored_ops"], 1);
    }
    a.send(&space, "not for d");
    std::thread::sleep(Duration::from_secs(3));
    for n in [&mut a, &mut b, &mut c, &mut d] {
        n.stop();
    }
    // After: the demotion is in the envelope's causal past.
    let (_, after) = plaintext_reachable_after(
        &a.home,
        &d.home,
        &space,
        |op, _| matches!(op, ControlOp::SetRole(s) if s.role == outpost_node::control::Role::Writer),
    );
    assert_eq!(after, 0, "d opens nothing sealed after the demotion was merged");
}

/// B is offline while the key changes twice (C removed; E added and removed);
/// when it comes back it reads every message, from all three epochs.
#[test]
fn a_member_offline_during_two_epoch_changes_reads_everything() {
    let root = tempfile::tempdir().unwrap();
    let mut a = Node::init(root.path(), "a");
    let mut b = Node::init(root.path(), "b");
    let mut c = Node::init(root.path(), "c");
    let e = Node::init(root.path(), "e");
    a.start(&[]);
    b.start(&[a.addr()]);
    c.start(&[a.addr()]);
    let space = a.create_chat("ops", &[&b, &c], &[]);
    a.send(&space, "epoch one");
    converged(&[&a, &b, &c], &space);
    b.stop();
    a.json(&["space", "remove", &space, &c.device_id(), "--json"]);
    a.send(&space, "epoch two");
    a.json(&["space", "invite", &space, &e.card(), "--json"]);
    a.json(&["space", "remove", &space, &e.device_id(), "--json"]);
    a.send(&space, "epoch three");
    b.restart();
    wait_until(CONVERGE, "b to read all three epochs", || {
        (b.log_texts(&space) == ["epoch one", "epoch two", "epoch three"]).then_some(())
    });
    assert!(is_clean(&b, &space));
    let (_, epoch) = converged(&[&a, &b], &space);
    assert_eq!(b.space_status(&space).unwrap()["epoch"], epoch.as_str());
}

/// `space leave` and `space rotate` from the CLI: a writer leaves (the others
/// re-key without it), any member rotates, and the last owner cannot leave.
#[test]
fn leave_and_rotate_from_the_cli() {
    let root = tempfile::tempdir().unwrap();
    let (space, [a, b, c, _d]) = team(root.path());
    let (_, before) = converged(&[&a, &b, &c], &space);
    let left = c.json(&["space", "leave", &space, "--json"]);
    assert_ne!(left["epoch"], before.as_str());
    let (members, epoch) = converged(&[&a, &b], &space);
    assert!(!members.contains_key(&c.device_id()));
    assert_eq!(c.space_status(&space).unwrap()["role"], "removed");
    let rotated = b.json(&["space", "rotate", &space, "--json"]);
    assert_ne!(rotated["epoch"], epoch.as_str());
    let (_, now) = converged(&[&a, &b], &space);
    assert_eq!(now, rotated["epoch"].as_str().unwrap());
    let out = a.cli(&["space", "leave", &space]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("without an owner"));
    a.send(&space, "a stays");
    wait_until(CONVERGE, "b to read it", || {
        b.log_texts(&space).contains(&"a stays".to_string()).then_some(())
    });
}
