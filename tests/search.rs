//! `outpost search` against running daemons: Chinese and English words and
//! their prefixes, any part of a Chinese text, in messages and documents; only what the asking device can
//! read (a replicator storing a room's sealed envelopes finds nothing in it);
//! a retracted message leaves the results of every node; the index is
//! rebuilt when its directory is deleted.

mod common;

use std::time::Duration;

use common::{Node, user_of, wait_until};
use serde_json::Value;

const SYNC: Duration = Duration::from_secs(60);

/// The message ids (or `doc:SPACE` for documents) `node` finds for `args`.
fn found(node: &Node, args: &[&str]) -> Vec<String> {
    let mut full = vec!["search"];
    full.extend_from_slice(args);
    full.push("--json");
    let hits = node.json(&full);
    let mut ids: Vec<String> = hits
        .as_array()
        .expect("an array of hits")
        .iter()
        .map(|h| match h["kind"].as_str() {
            Some("document") => format!("doc:{}", h["space"].as_str().unwrap()),
            _ => h["id"].as_str().expect("message id").to_string(),
        })
        .collect();
    ids.sort();
    ids
}

fn sorted(ids: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// Waits until `node` finds exactly `want` for `args`.
fn finds(node: &Node, args: &[&str], want: &[&str]) {
    let want = sorted(want);
    let mut last = Vec::new();
    let what = format!("{} to find {want:?} for {args:?}", node.name);
    wait_until(SYNC, &what, || {
        last = found(node, args);
        (last == want).then_some(())
    });
}

#[test]
fn finds_chinese_and_english_in_what_each_device_can_read() {
    let root = tempfile::tempdir().unwrap();
    let mut a = Node::init(root.path(), "a");
    let mut b = Node::init(root.path(), "b");
    let mut c = Node::init(root.path(), "c");
    a.start(&[]);
    b.start(&[a.addr()]);
    c.start(&[a.addr(), b.addr()]);

    // c stores the room's sealed envelopes (a replicator) but cannot read them.
    let ops = a.create_chat("ops", &[&b], &[&c]);
    let report = a.send(&ops, "部署报告已经完成，请查收");
    let english = a.send(&ops, "The deployment finished at noon");
    let budget = b.send(&ops, "明天开会讨论预算 budget");
    // c's own room with a, which a and c read and b does not.
    let own = c.create_chat("c-room", &[&a], &[]);
    let c_deploy = c.send(&own, "deployment window for the c cluster");

    // Whole words, Chinese words inside a sentence, and prefixes.
    finds(&b, &["报告"], &[&report]);
    finds(&b, &["部署"], &[&report]);
    finds(&b, &["deploy"], &[&english]);
    finds(&b, &["预算"], &[&budget]);
    finds(&b, &["Budget"], &[&budget]);
    finds(&a, &["deploy"], &[&english, &c_deploy]);
    finds(&a, &["deploy", "--space", &ops], &[&english]);
    finds(&a, &["报告 查收"], &[&report]);
    // Any part of a Chinese text, across jieba's word boundaries (部署 / 报告).
    finds(&b, &["署报"], &[&report]);
    finds(&b, &["告"], &[&report]);
    assert!(found(&a, &["报告 noon"]).is_empty(), "every word must match");

    // The replicator holds the room's envelopes, and finds nothing in them.
    wait_until(SYNC, "c to store the room's messages", || {
        let status = c.space_status(&ops)?;
        (status["envelopes"].as_u64()? >= 4).then_some(())
    });
    finds(&c, &["deploy"], &[&c_deploy]);
    assert!(found(&c, &["报告"]).is_empty(), "c reads no message of ops");
    assert!(found(&b, &["cluster"]).is_empty(), "b is not in c-room");

    // --from: by user id, or by a prefix of it.
    let b_user = user_of(&b);
    finds(&a, &["budget", "--from", &b_user], &[&budget]);
    assert!(found(&a, &["deploy", "--from", &b_user[..10]]).is_empty());
    let err = a.fails(&["search", "deploy", "--from", "nobody"], 2);
    assert!(err.contains("names no one"), "{err}");

    // Dates: everything was written just now.
    finds(&a, &["deploy", "--after", "2000-01-01"], &[&english, &c_deploy]);
    assert!(found(&a, &["deploy", "--before", "2000-01-01"]).is_empty());
    let err = a.fails(
        &["search", "deploy", "--after", "2030-01-01", "--before", "2029-01-01"],
        2,
    );
    assert!(err.contains("--after must be earlier"), "{err}");

    // Documents: found by their text and their name.
    let plan = root.path().join("plan.md");
    std::fs::write(&plan, "# 季度计划\n\nQuarterly roadmap for the storage team.\n").unwrap();
    let out = a.json(&[
        "doc",
        "new",
        "Roadmap",
        "--member",
        &b.card(),
        "--from",
        plan.to_str().unwrap(),
        "--json",
    ]);
    let doc = format!("doc:{}", out["space"].as_str().unwrap());
    finds(&b, &["季度"], &[&doc]);
    finds(&b, &["roadm"], &[&doc]);
    assert!(found(&c, &["roadmap"]).is_empty());

    // Retraction: the message leaves every node's results.
    a.json(&["chat", "retract", &report, "--json"]);
    finds(&a, &["报告"], &[]);
    finds(&b, &["报告"], &[]);

    // A deleted index is rebuilt from the store at the next start.
    b.stop();
    std::fs::remove_dir_all(b.home.join("search")).expect("b has a search index");
    b.start(&[a.addr()]);
    finds(&b, &["deploy"], &[&english]);
    finds(&b, &["季度"], &[&doc]);
    assert!(found(&b, &["报告"]).is_empty(), "the retracted message stays gone");

    // Bad input: a clear error and exit code 2.
    let err = a.fails(&["search", "  ,  "], 2);
    assert!(err.contains("no words"), "{err}");
    let long = "字".repeat(300);
    let err = a.fails(&["search", &long], 2);
    assert!(err.contains("at most"), "{err}");
}

/// The human output names the room and shows the matching text.
#[test]
fn human_output_shows_room_and_snippet() {
    let root = tempfile::tempdir().unwrap();
    let mut a = Node::init(root.path(), "a");
    a.start(&[]);
    let room = a.create_chat("研发部", &[], &[]);
    a.send(&room, "服务器迁移计划已经批准");
    wait_until(SYNC, "the message to be indexed", || {
        let hits: Value = a.json(&["search", "迁移", "--json"]);
        (hits.as_array()?.len() == 1).then_some(())
    });
    let out = a.cli(&["search", "迁移"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("研发部"), "{text}");
    assert!(text.contains("服务器迁移计划已经批准"), "{text}");
}
