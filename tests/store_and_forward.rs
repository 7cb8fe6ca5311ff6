//! Store-and-forward: A writes while member B is offline and only the
//! replicate-only node R is up; A goes away; B comes up and receives everything
//! from R. R's database and logs contain none of the plaintext.

mod common;

use std::time::Duration;

use common::{Node, wait_until};

#[test]
fn replicator_forwards_what_it_cannot_read() {
    let root = tempfile::tempdir().unwrap();
    let mut a = Node::init(root.path(), "a");
    let mut b = Node::init(root.path(), "b");
    let mut r = Node::init(root.path(), "r");
    r.start(&[]);
    a.start(&[r.addr()]);

    let canary = format!("canary-{:016x}", rand::random::<u64>());
    let space_name = format!("secret-room-{canary}");
    let space = a.create_chat(&space_name, &[&b], &[&r]);
    let texts: Vec<String> = (0..20).map(|i| format!("{canary}-message-{i}")).collect();
    for t in &texts {
        a.send(&space, t);
    }
    // R holds every envelope A holds (genesis + 20 messages).
    let envelopes = |n: &Node| -> Option<u64> { n.space_status(&space)?["envelopes"].as_u64() };
    let total = envelopes(&a).unwrap();
    assert_eq!(total, 21);
    wait_until(Duration::from_secs(30), "r to store every envelope", || {
        (envelopes(&r) == Some(total)).then_some(())
    });

    // R cannot read it: a clear error with its own exit code.
    let out = r.cli(&["chat", "log", &space]);
    assert_eq!(out.status.code(), Some(6), "{}", String::from_utf8_lossy(&out.stderr));
    let r_space = r.space_status(&space).unwrap();
    assert_eq!(r_space["role"], "replicator");
    assert_eq!(r_space["readable"], false);
    assert!(r_space["name"].is_null(), "the space name is sealed");

    a.stop();
    b.start(&[r.addr()]);
    let got = wait_until(Duration::from_secs(60), "b to receive everything from r", || {
        let got = b.log_texts(&space);
        (got.len() == texts.len()).then_some(got)
    });
    assert_eq!(got, texts);

    // Nothing of the plaintext at rest or in the logs of R.
    r.stop();
    let mut haystack = Vec::new();
    for entry in std::fs::read_dir(&r.home).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            haystack.extend(std::fs::read(&path).unwrap());
        }
    }
    assert!(!haystack.is_empty());
    let found = haystack.windows(canary.len()).any(|w| w == canary.as_bytes());
    assert!(!found, "plaintext found in the replicator's home");
}
