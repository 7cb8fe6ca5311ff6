//! Three daemons as separate processes on loopback (mDNS off, explicit `--peer`):
//! messages flow every way; one daemon stops while the others keep writing; after
//! its restart all three show identical `chat log --json`. The restarted daemon
//! missed most of the room, so it catches up through a snapshot, merged with the
//! messages it already held.

mod common;

use std::time::Duration;

use common::{Node, wait_until};

const CONVERGE: Duration = Duration::from_secs(60);

fn converged(nodes: &[&Node], space: &str, count: usize) -> Option<serde_json::Value> {
    let logs: Vec<serde_json::Value> = nodes
        .iter()
        .filter_map(|n| n.try_json(&["chat", "log", space, "--json", "--limit", "100000"]).ok())
        .collect();
    let first = logs.first()?;
    (logs.len() == nodes.len() && first.as_array()?.len() == count && logs.iter().all(|l| l == first))
        .then(|| first.clone())
}

#[test]
fn three_daemons_converge_through_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let mut a = Node::init(root.path(), "a");
    let mut b = Node::init(root.path(), "b");
    let mut c = Node::init(root.path(), "c");
    a.start(&[b.addr(), c.addr()]);
    b.start(&[a.addr(), c.addr()]);
    c.start(&[a.addr(), b.addr()]);

    let space = a.create_chat("ops", &[&b, &c], &[]);
    wait_until(CONVERGE, "b and c to join the space", || {
        (b.try_json(&["chat", "log", &space, "--json"]).is_ok()
            && c.try_json(&["chat", "log", &space, "--json"]).is_ok())
        .then_some(())
    });

    for i in 0..4 {
        a.send(&space, &format!("a{i}"));
        b.send(&space, &format!("b{i}"));
        c.send(&space, &format!("c{i}"));
    }
    wait_until(CONVERGE, "12 messages everywhere", || {
        converged(&[&a, &b, &c], &space, 12)
    });

    // C goes away; A and B keep writing: 80 changes, most of the room.
    c.stop();
    for i in 4..44 {
        a.send(&space, &format!("a{i}"));
        b.send(&space, &format!("b{i}"));
    }
    wait_until(CONVERGE, "a and b to converge while c is down", || {
        converged(&[&a, &b], &space, 92)
    });
    let down = c.try_json(&["status"]).unwrap_err();
    assert!(down.contains("daemon not running"), "{down}");

    // C comes back and catches up; it also writes again.
    c.restart();
    wait_until(CONVERGE, "c to catch up after its restart", || {
        converged(&[&a, &b, &c], &space, 92)
    });
    c.send(&space, "c-back");
    let log = wait_until(CONVERGE, "all three to converge after the restart", || {
        converged(&[&a, &b, &c], &space, 93)
    });
    let c_status = c.space_status(&space).unwrap();
    assert!(
        c_status["snapshots"].as_u64().unwrap() >= 1,
        "c caught up through a snapshot: {c_status}"
    );
    for node in [&a, &b, &c] {
        assert_eq!(node.space_status(&space).unwrap()["rejected"], 0);
    }

    let texts: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    for expected in ["a0", "b3", "c3", "a8", "b43", "c-back"] {
        assert!(texts.contains(&expected), "{expected} missing from {texts:?}");
    }
    // Order is causal: everything C saw before writing "c-back" comes before it.
    let pos = |t: &str| texts.iter().position(|x| *x == t).unwrap();
    assert!(pos("a43") < pos("c-back") && pos("b43") < pos("c-back"));
    // Authors are attributed to the right devices.
    let a_id = a.device_id();
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .filter(|m| m["text"].as_str().unwrap().starts_with('a'))
            .all(|m| m["author"] == a_id.as_str())
    );

    // Status tells "synced": no peer lacks anything.
    let status = wait_until(CONVERGE, "status to show every peer synced", || {
        let s = a.json(&["status", "--json"]);
        let space_status = a.space_status(&space)?;
        let peers = space_status["peers"].as_array()?;
        let all_zero = peers.iter().all(|p| p["they_lack"] == 0 && p["we_lack"] == 0);
        (peers.len() == 2 && all_zero && space_status["sync"] == "synced").then_some(s)
    });
    assert_eq!(status["peers"].as_array().unwrap().len(), 2);
    assert!(
        status["peers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["link"] == "direct")
    );
}
