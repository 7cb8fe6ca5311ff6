//! Attachments between daemon processes: a 200 MB file sent with a message,
//! fetched by another member while its daemon is killed (-9) midway, taken up
//! again from what was verified on disk, fetched by a third member from the
//! second while the sender is down, and deleted everywhere by a retraction.

mod common;
mod inproc;

use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use common::{Node, outpost_bin, wait_until};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(90);
const SIZE: usize = 200 << 20;

/// `len` bytes no compressor or dedup could shortcut, and their BLAKE3.
fn write_random(path: &Path, len: usize) -> blake3::Hash {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut hasher = blake3::Hasher::new();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..len / block.len() {
        for word in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        hasher.update(&block);
        file.write_all(&block).unwrap();
    }
    file.flush().unwrap();
    hasher.finalize()
}

fn hash_file(path: &Path) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(std::fs::File::open(path).unwrap()).unwrap();
    hasher.finalize()
}

fn file_status(node: &Node, id: &str) -> Option<Value> {
    node.try_json(&["file", "show", id, "--json"]).ok()
}

/// The downloaded share so far (ciphertext bytes verified on disk).
fn have(node: &Node, id: &str) -> u64 {
    file_status(node, id)
        .and_then(|s| s["progress"]["have"].as_u64())
        .unwrap_or(0)
}

#[test]
fn a_large_attachment_resumes_after_kill_9_and_comes_from_any_holder() {
    let root = tempfile::tempdir().unwrap();
    let mut a = Node::init(root.path(), "a");
    let mut b = Node::init(root.path(), "b");
    let mut c = Node::init(root.path(), "c");
    // A thin uplink at the sender, so the receiver is killed mid-transfer.
    a.daemon_args = vec!["--max-upload-rate", "40M"];
    a.start(&[]);
    b.start(&[a.addr()]);
    c.start(&[a.addr(), b.addr()]);
    let space = a.create_chat("files", &[&b, &c], &[]);

    let source = root.path().join("plans.bin");
    let original = write_random(&source, SIZE);
    let sent = a.json(&[
        "chat",
        "send",
        &space,
        "the plans",
        "--file",
        source.to_str().unwrap(),
        "--json",
    ]);
    let message = sent["id"].as_str().unwrap().to_string();
    let file = wait_until(WAIT, "the message with its file on b", || {
        let log = b.try_json(&["chat", "log", &space, "--json"]).ok()?;
        let m = log.as_array()?.iter().find(|m| m["id"] == message.as_str())?.clone();
        m.get("file").cloned()
    });
    assert_eq!(file["name"], "plans.bin");
    assert_eq!(file["size"], SIZE as u64);
    let id = file["id"].as_str().unwrap().to_string();
    let a_peak = a.peak_rss_kib().unwrap();

    // b fetches; once a quarter is there, its daemon dies without warning.
    let out = root.path().join("b-plans.bin");
    let mut getter = Command::new(outpost_bin())
        .arg("--home")
        .arg(&b.home)
        .args(["file", "get", &id, "-o", out.to_str().unwrap(), "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let total = outpost_node::blobs::cipher::cipher_size(SIZE as u64);
    let before_kill = wait_until(WAIT, "a quarter of the file on b", || {
        let n = have(&b, &id);
        (n >= total / 4).then_some(n)
    });
    b.kill9();
    let _ = getter.kill();
    let _ = getter.wait();
    assert!(before_kill < total, "the download had not finished when b was killed");
    assert!(!out.exists());

    // Restarted, b takes the download up from what it verified on disk.
    b.restart();
    let resumed = wait_until(WAIT, "the download taken up again on b", || {
        file_status(&b, &id)?.get("progress").cloned().filter(|p| p.is_object())
    });
    let resumed_from = resumed["resumed_from"].as_u64().unwrap();
    assert!(
        resumed_from >= before_kill,
        "resumed from {resumed_from}, but {before_kill} bytes were verified before the kill"
    );
    let mut getter = Command::new(outpost_bin())
        .arg("--home")
        .arg(&b.home)
        .args(["file", "get", &id[..12], "-o", out.to_str().unwrap(), "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Only what was missing comes over the network: every verified byte is
    // either one found on disk or one fetched in this run.
    let mut seen = 0;
    wait_until(WAIT, "the download finished on b", || {
        let status = file_status(&b, &id)?;
        if let Some(p) = status.get("progress").filter(|p| p.is_object()) {
            let field = |k: &str| p[k].as_u64().unwrap();
            assert_eq!(field("resumed_from"), resumed_from, "taken up once");
            assert_eq!(field("have"), field("resumed_from") + field("fetched"));
            seen += 1;
        }
        (status["complete"] == true).then_some(())
    });
    assert!(getter.wait().unwrap().success());
    assert!(seen > 0, "progress was shown while it downloaded");
    assert_eq!(hash_file(&out), original, "b's copy is the file that was sent");
    wait_until(WAIT, "a finished download's progress forgotten", || {
        file_status(&b, &id)?.get("progress").is_none().then_some(())
    });
    let b_peak = b.peak_rss_kib().unwrap();

    // Memory stays flat: neither side held the file in memory.
    eprintln!(
        "peak RSS: sender {a_peak} KiB, receiver {b_peak} KiB, file {} KiB",
        SIZE >> 10
    );
    assert!(
        a_peak < (SIZE as u64 >> 10) / 2,
        "the sender's memory grew with the file: {a_peak} KiB"
    );
    assert!(
        b_peak < (SIZE as u64 >> 10) / 2,
        "the receiver's memory grew with the file: {b_peak} KiB"
    );

    // With the sender gone, c gets the file from b.
    a.stop();
    let c_out = root.path().join("c-plans.bin");
    let saved = c.json(&["file", "get", &id, "-o", c_out.to_str().unwrap(), "--json"]);
    assert_eq!(saved["name"], "plans.bin");
    assert_eq!(
        hash_file(&c_out),
        original,
        "c's copy, from b, is the file that was sent"
    );

    // An existing target is not overwritten without --force.
    let err = c.fails(&["file", "get", &id, "-o", c_out.to_str().unwrap()], 2);
    assert!(err.contains("--force"), "{err}");

    // The author retracts the message: the file is deleted on every node.
    a.restart();
    a.json(&["chat", "retract", &message, "--json"]);
    for node in [&b, &c] {
        wait_until(WAIT, "the file deleted by the retraction", || {
            let gone = !node.home.join("blobs").join(format!("{id}.data")).exists();
            (gone && file_status(node, &id).is_none()).then_some(())
        });
        node.fails(&["file", "get", &id, "-o", "/dev/null"], 5);
    }
}

#[test]
fn bad_file_requests_get_clear_errors() {
    let root = tempfile::tempdir().unwrap();
    let mut a = Node::init(root.path(), "a");
    a.start(&[]);
    let space = a.create_chat("solo", &[], &[]);
    let err = a.fails(&["chat", "send", &space, "--file", "/nonexistent/file"], 2);
    assert!(err.contains("cannot read"), "{err}");
    let err = a.fails(&["chat", "send", &space], 2);
    assert!(err.contains("--file"), "{err}");
    let err = a.fails(&["file", "get", "xyz"], 2);
    assert!(err.contains("hex"), "{err}");
    a.fails(&["file", "get", &"ab".repeat(16)], 5);

    // A small file round-trips, its caption and name intact.
    let small = root.path().join("报告 v2.txt");
    std::fs::write(&small, "季度报告\n".repeat(1000)).unwrap();
    let sent = a.json(&[
        "chat",
        "send",
        &space,
        "见附件",
        "--file",
        small.to_str().unwrap(),
        "--json",
    ]);
    let log = a.json(&["chat", "log", &space, "--json"]);
    let m = log
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == sent["id"])
        .unwrap()
        .clone();
    assert_eq!(m["text"], "见附件");
    assert_eq!(m["file"]["name"], "报告 v2.txt");
    let id = m["file"]["id"].as_str().unwrap();
    let out = root.path().join("copy.txt");
    a.json(&["file", "get", id, "-o", out.to_str().unwrap(), "--json"]);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&small).unwrap());
}

/// `*.data` files in a node's store: its complete blobs.
fn blob_count(node: &Node) -> usize {
    std::fs::read_dir(node.home.join("blobs"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "data"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_retried_upload_leaves_no_orphan_and_a_get_can_time_out() {
    let root = tempfile::tempdir().unwrap();
    let mut a = Node::init(root.path(), "a");
    let mut b = Node::init(root.path(), "b");
    a.start(&[]);
    b.start(&[a.addr()]);
    let space = a.create_chat("retries", &[&b], &[]);
    let source = root.path().join("notes.txt");
    std::fs::write(&source, "minutes\n".repeat(5000)).unwrap();
    let send = || {
        a.json(&[
            "chat",
            "send",
            &space,
            "the notes",
            "--file",
            source.to_str().unwrap(),
            "--client-id",
            "once",
            "--json",
        ])
    };
    let first = send();
    assert_eq!(first["duplicate"], false);
    let again = send();
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["id"], first["id"]);
    // The retry imported the file again: that copy, named by nothing, goes.
    wait_until(WAIT, "only the original's file left on a", || {
        (blob_count(&a) == 1).then_some(())
    });

    let message = first["id"].as_str().unwrap().to_string();
    let file = wait_until(WAIT, "the message with its file on b", || {
        let log = b.try_json(&["chat", "log", &space, "--json"]).ok()?;
        let m = log.as_array()?.iter().find(|m| m["id"] == message.as_str())?.clone();
        m.get("file").cloned()
    });
    let id = file["id"].as_str().unwrap().to_string();

    // With the only holder down, a get with a timeout gives up clearly; the
    // download stays wanted in the daemon.
    a.stop();
    let out = root.path().join("b-notes.txt");
    let err = b.fails(&["file", "get", &id, "-o", out.to_str().unwrap(), "--timeout", "2"], 1);
    assert!(err.contains("continues in the daemon"), "{err}");
    assert!(err.contains("outpost file show"), "{err}");
    assert!(!out.exists());

    // Once the holder is back, the download the daemon kept finishes.
    a.restart();
    wait_until(WAIT, "the kept download finished on b", || {
        file_status(&b, &id).filter(|s| s["complete"] == true).map(|_| ())
    });
    b.json(&["file", "get", &id, "-o", out.to_str().unwrap(), "--json"]);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&source).unwrap());
}

/// In process: a peer's later message naming a known blob with another name
/// (or size, or key) does not change what the file is.
#[test]
fn a_later_message_cannot_rename_a_known_file() {
    use outpost_node::{
        blobs::{BlobId, FileKey},
        control::History,
        core,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (alice, bob) = (inproc::Node::new(), inproc::Node::new());
        let space = (alice.core)
            .create_chat("room".into(), History::Shared, vec![bob.cert().to_card()], vec![])
            .await
            .unwrap();
        let send = |text: &str, name: &str, size: u64, key: u8| {
            let outgoing = core::Outgoing {
                text: text.into(),
                file: Some(core::FileRef {
                    id: BlobId([5; 32]),
                    name: name.into(),
                    size,
                    key: FileKey([key; 32]),
                }),
                ..Default::default()
            };
            alice.core.send_message(space, outgoing)
        };
        send("the plans", "plans.pdf", 1000, 1).await.unwrap();
        // Several, so a store order that happened to favour the first cannot pass for the rule.
        for i in 0..4u8 {
            send("update", &format!("plans-{i}.sh"), 1000 + u64::from(i), 2 + i)
                .await
                .unwrap();
        }
        let push = inproc::served(&alice, &bob, space).await;
        inproc::deliver(&alice, &bob, push).await;
        let texts: Vec<String> = (bob.core.messages(space, 10).await.unwrap())
            .into_iter()
            .map(|m| m.text)
            .collect();
        assert_eq!(texts.len(), 5, "every message arrived: {texts:?}");
        let status = bob.core.file_status(BlobId([5; 32]).to_string()).await.unwrap();
        assert_eq!((status.name.as_str(), status.size), ("plans.pdf", 1000));
    });
}
