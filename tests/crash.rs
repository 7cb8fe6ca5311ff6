//! Crash safety: `kill -9` a daemon again and again while `chat send` runs against
//! it. Every send that returned success must be present after restart and reach
//! the peer. The soak variant (ignored) runs many more rounds.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::{Node, wait_until};

fn crash_rounds(rounds: usize) {
    let root = tempfile::tempdir().unwrap();
    let mut a = Node::init(root.path(), "a");
    let mut b = Node::init(root.path(), "b");
    b.start(&[]);
    a.start(&[b.addr()]);
    let space = a.create_chat("crash", &[&b], &[]);

    let mut acknowledged: Vec<String> = Vec::new();
    let mut counter = 0usize;
    for round in 0..rounds {
        if !a.is_running() {
            a.restart();
        }
        // A writer thread sends until the daemon dies under it.
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let stop = stop.clone();
            let home = a.home.clone();
            let space = space.clone();
            let start = counter;
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                let mut i = start;
                while !stop.load(Ordering::SeqCst) {
                    let text = format!("m{i}");
                    i += 1;
                    let out = std::process::Command::new(common::outpost_bin())
                        .arg("--home")
                        .arg(&home)
                        .args(["chat", "send", &space, &text])
                        .output()
                        .expect("run outpost");
                    if out.status.success() {
                        acked.push(text);
                    }
                }
                (acked, i)
            })
        };
        // Let a few sends land, then kill at a varying moment.
        std::thread::sleep(Duration::from_millis(40 + (round as u64 * 37) % 160));
        a.kill9();
        stop.store(true, Ordering::SeqCst);
        let (acked, next) = writer.join().unwrap();
        counter = next;
        acknowledged.extend(acked);
    }
    assert!(
        acknowledged.len() >= rounds,
        "too few sends succeeded: {}",
        acknowledged.len()
    );
    eprintln!("{rounds} kill -9 rounds, {} acknowledged sends", acknowledged.len());

    a.restart();
    let check = |node: &Node| {
        let texts = node.log_texts(&space);
        acknowledged.iter().all(|t| texts.contains(t)).then_some(texts)
    };
    let texts = wait_until(
        Duration::from_secs(20),
        "every acknowledged message on the restarted node",
        || check(&a),
    );
    assert!(texts.len() >= acknowledged.len());
    wait_until(
        Duration::from_secs(60),
        "every acknowledged message on the peer",
        || check(&b),
    );
    // Both nodes agree on everything, including sends whose outcome was unknown.
    wait_until(Duration::from_secs(60), "identical logs", || {
        (a.log(&space) == b.log(&space)).then_some(())
    });
}

#[test]
fn acknowledged_messages_survive_kill_9() {
    crash_rounds(50);
}

#[test]
#[ignore = "soak: run with `cargo test --test crash -- --ignored`"]
fn acknowledged_messages_survive_kill_9_soak() {
    crash_rounds(500);
}
