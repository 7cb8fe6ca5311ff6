//! Live use from the CLI against running daemons: `chat tail` follows messages
//! as they arrive from a peer (over QUIC here), and a daemon with a tail
//! attached still shuts down cleanly on SIGTERM, ending the tail.

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use common::{Node, outpost_bin, wait_until};

#[test]
fn tail_follows_a_peer_over_quic_and_ends_with_the_daemon() {
    let root = tempfile::tempdir().unwrap();
    let mut a = Node::init_quic(root.path(), "a");
    let mut b = Node::init_quic(root.path(), "b");
    a.start(&[]);
    b.start(&[a.addr()]);
    let space = a.create_chat("live", &[&b], &[]);
    a.send(&space, "before tail");
    wait_until(Duration::from_secs(30), "b to hold the first message", || {
        (b.log_texts(&space) == ["before tail"]).then_some(())
    });

    let mut tail = Command::new(outpost_bin())
        .arg("--home")
        .arg(&b.home)
        .args(["chat", "tail", &space, "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stdout = tail.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines_tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let next_text = || -> String {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("a line from chat tail");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        v["text"].as_str().unwrap().to_string()
    };
    // The backlog first, then live messages as they arrive from the peer.
    assert_eq!(next_text(), "before tail");
    for i in 0..3 {
        let text = format!("live {i}");
        a.send(&space, &text);
        assert_eq!(next_text(), text);
    }
    // The link is QUIC.
    let status = b.json(&["status", "--json"]);
    let peer = &status["peers"][0];
    assert!(peer["address"].as_str().unwrap().contains("quic-v1"), "{status}");

    // SIGTERM with a tail attached: the daemon exits cleanly and the tail ends.
    assert!(
        b.stop_gracefully(Duration::from_secs(10)),
        "daemon did not shut down cleanly"
    );
    let out = tail.wait_with_output().unwrap();
    reader.join().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("closed the event stream"), "{err}");
}
