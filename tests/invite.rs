//! `outpost space invite` between daemon processes: an owner adds a device that
//! was never named by the space; it receives the key and the whole history from
//! the members it is connected to, writes, and every node agrees on who is in the
//! space. A writer's invite is refused with exit code 4. A replicator named later
//! holds the space but cannot read it (exit code 6).

mod common;

use std::time::Duration;

use common::{Node, wait_until};

const CONVERGE: Duration = Duration::from_secs(60);

fn member_count(node: &Node, space: &str) -> Option<usize> {
    let members = node.try_json(&["space", "members", space, "--json"]).ok()?;
    members["members"].as_array().map(Vec::len)
}

#[test]
fn an_invited_device_gets_the_history_and_joins_the_conversation() {
    let root = tempfile::tempdir().unwrap();
    let mut a = Node::init(root.path(), "a");
    let mut b = Node::init(root.path(), "b");
    let mut c = Node::init(root.path(), "c");
    let mut r = Node::init(root.path(), "r");
    a.start(&[b.addr(), c.addr(), r.addr()]);
    b.start(&[a.addr()]);
    c.start(&[a.addr()]);
    r.start(&[a.addr()]);

    let space = a.create_chat("ops", &[&b], &[]);
    for i in 0..5 {
        a.send(&space, &format!("before c joined {i}"));
    }
    wait_until(CONVERGE, "b to have the history", || {
        (b.log_texts(&space).len() == 5).then_some(())
    });
    // C is connected to A but not in the space: it holds nothing of it.
    assert!(c.space_status(&space).is_none());

    // B is a writer: it may not add members.
    let out = b.cli(&["space", "invite", &space, &c.card()]);
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not allowed"));

    let invited = a.json(&["space", "invite", &space, &c.card(), "--role", "writer", "--json"]);
    assert_eq!(invited["grant"]["member"], "writer");
    assert_eq!(invited["device"], c.device_id().as_str());

    let history = wait_until(CONVERGE, "c to read the history", || {
        let texts = c.log_texts(&space);
        (texts.len() == 5).then_some(texts)
    });
    assert_eq!(history, a.log_texts(&space));
    c.send(&space, "hello from c");
    wait_until(CONVERGE, "everyone to see c's message and c as a member", || {
        let all = [&a, &b, &c];
        let logs: Vec<Vec<String>> = all.iter().map(|n| n.log_texts(&space)).collect();
        (logs.iter().all(|l| l.len() == 6 && *l == logs[0]) && all.iter().all(|n| member_count(n, &space) == Some(3)))
            .then_some(())
    });
    let members = c.json(&["space", "members", &space, "--json"]);
    let me = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["me"] == true)
        .unwrap()
        .clone();
    assert_eq!(me["role"], "writer");
    assert_eq!(me["added_by"], a.device_id().as_str());
    let human = String::from_utf8_lossy(&c.cli(&["space", "members", &space]).stdout).into_owned();
    assert!(human.contains("(this device)") && human.contains("owner"), "{human}");

    // A replicator named later stores the space and cannot read it.
    let invited = a.json(&["space", "invite", &space, &r.card(), "--replicator", "--json"]);
    assert_eq!(invited["grant"], "replicator");
    let status = wait_until(CONVERGE, "r to hold all of the space", || {
        let s = r.space_status(&space)?;
        (s["role"] == "replicator" && s["sync"] == "synced" && s["envelopes"].as_u64()? >= 8).then_some(s)
    });
    assert_eq!(status["readable"], false);
    let out = r.cli(&["chat", "log", &space]);
    assert_eq!(out.status.code(), Some(6), "{}", String::from_utf8_lossy(&out.stderr));
}
