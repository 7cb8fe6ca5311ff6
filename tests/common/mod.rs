//! Test harness: real `outpost` daemons as separate processes on loopback.
//!
//! Nothing here sleeps to synchronise: [`wait_until`] polls a condition against a
//! deadline and fails with a description of what never happened.
#![allow(dead_code, unreachable_pub)]

pub mod org;

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use outpost_node::{
    control::{ControlOp, Keyring, SpaceState},
    envelope::{Envelope, Kind},
    identity::DeviceKeys,
    ids::{DeviceId, SpaceId},
    snapshot::Snapshot,
    store::Store,
};
use serde_json::Value;

/// The `outpost` binary built by this `cargo test` run (the cli package's own
/// integration tests make cargo build it next to the test executables).
pub fn outpost_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps");
    let bin = dir.join("outpost");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .expect("local addr")
        .port()
}

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what`.
pub fn wait_until<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One node: a home directory and, while running, its daemon process.
pub struct Node {
    pub name: String,
    pub home: PathBuf,
    pub port: u16,
    pub peers: Vec<String>,
    /// Listen (and be dialled) over QUIC instead of TCP.
    pub quic: bool,
    /// `--resync-secs` (2 unless a test needs to rule periodic resync out).
    pub resync_secs: u32,
    /// More `daemon` flags (e.g. `--anchor`); with `--no-listen` the node
    /// listens nowhere.
    pub daemon_args: Vec<&'static str>,
    child: Option<Child>,
    log_index: usize,
}

impl Node {
    /// Creates the identity of a node named `name` under `root`.
    pub fn init(root: &Path, name: &str) -> Self {
        let home = root.join(name);
        let node = Self {
            name: name.into(),
            home,
            port: free_port(),
            peers: Vec::new(),
            quic: false,
            resync_secs: 2,
            daemon_args: Vec::new(),
            child: None,
            log_index: 0,
        };
        let out = node.cli(&["init", "--name", name]);
        assert!(
            out.status.success(),
            "init {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        node
    }

    /// Like [`Node::init`], for a node reached over QUIC.
    pub fn init_quic(root: &Path, name: &str) -> Self {
        let mut node = Self::init(root, name);
        node.quic = true;
        node.port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("bind an ephemeral UDP port")
            .port();
        node
    }

    /// The multiaddr other nodes dial.
    pub fn addr(&self) -> String {
        if self.quic {
            format!("/ip4/127.0.0.1/udp/{}/quic-v1", self.port)
        } else {
            format!("/ip4/127.0.0.1/tcp/{}", self.port)
        }
    }

    /// Starts the daemon, dialling `peers`, and waits until its API answers.
    pub fn start(&mut self, peers: &[String]) {
        assert!(self.child.is_none(), "{} already running", self.name);
        self.peers = peers.to_vec();
        self.log_index += 1;
        let log = std::fs::File::create(self.home.join(format!("daemon-{}.log", self.log_index))).expect("create log");
        let mut cmd = Command::new(outpost_bin());
        let resync = self.resync_secs.to_string();
        cmd.arg("--home")
            .arg(&self.home)
            .args(["daemon", "--no-mdns", "--resync-secs", &resync])
            .args(&self.daemon_args);
        if !self.daemon_args.contains(&"--no-listen") {
            cmd.args(["--listen", &self.addr()]);
        }
        for p in peers {
            cmd.args(["--peer", p]);
        }
        cmd.env("RUST_LOG", "info,libp2p=warn")
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(cmd.spawn().expect("spawn daemon"));
        let name = self.name.clone();
        wait_until(Duration::from_secs(20), &format!("{name}'s API"), || {
            self.try_json(&["status", "--json"]).ok()
        });
    }

    /// Restarts with the same peers.
    pub fn restart(&mut self) {
        let peers = self.peers.clone();
        self.start(&peers);
    }

    /// Stops the daemon gracefully (SIGTERM).
    pub fn stop(&mut self) {
        self.stop_gracefully(Duration::from_secs(10));
    }

    /// Sends SIGTERM and returns whether the daemon exited by itself, cleanly,
    /// within `within` (otherwise it is killed).
    pub fn stop_gracefully(&mut self, within: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Kills the daemon with SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The daemon's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The daemon's resident memory in KiB (Linux `/proc`).
    pub fn rss_kib(&self) -> Option<u64> {
        self.proc_status_kib("VmRSS:")
    }

    /// The most resident memory the daemon has used so far, in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.proc_status_kib("VmHWM:")
    }

    fn proc_status_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(outpost_bin())
            .arg("--home")
            .arg(&self.home)
            .args(args)
            .output()
            .expect("run outpost")
    }

    /// Runs a command that prints JSON; Err(stderr) when it fails.
    /// Runs a command that must fail with exit `code`; returns its stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.cli(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "{} {args:?}: {stderr}", self.name);
        stderr
    }

    pub fn try_json(&self, args: &[&str]) -> Result<Value, String> {
        let out = self.cli(args);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("bad JSON from {args:?}: {e}"))
    }

    pub fn json(&self, args: &[&str]) -> Value {
        self.try_json(args)
            .unwrap_or_else(|e| panic!("{} {args:?} failed: {e}", self.name))
    }

    /// This node's `status --json` entry for `space`, if it keeps the space.
    pub fn space_status(&self, space: &str) -> Option<Value> {
        let status = self.try_json(&["status", "--json"]).ok()?;
        status["spaces"]
            .as_array()?
            .iter()
            .find(|x| x["space"] == space)
            .cloned()
    }

    /// A space's members as this node sees them: (device, role).
    pub fn members(&self, space: &str) -> Option<Vec<(String, String)>> {
        let m = self.try_json(&["space", "members", space, "--json"]).ok()?;
        Some(
            m["members"]
                .as_array()?
                .iter()
                .map(|m| (m["device"].as_str().unwrap().into(), m["role"].as_str().unwrap().into()))
                .collect(),
        )
    }

    pub fn card(&self) -> String {
        self.json(&["id", "--json"])["card"].as_str().expect("card").to_string()
    }

    pub fn device_id(&self) -> String {
        self.json(&["id", "--json"])["device_id"]
            .as_str()
            .expect("device id")
            .to_string()
    }

    /// Creates a chat space and returns its id.
    pub fn create_chat(&self, name: &str, members: &[&Node], replicators: &[&Node]) -> String {
        let mut args = vec!["chat".to_string(), "create".into(), name.into(), "--json".into()];
        for m in members {
            args.extend(["--member".into(), m.card()]);
        }
        for r in replicators {
            args.extend(["--replicator".into(), r.card()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.json(&args)["space"].as_str().expect("space id").to_string()
    }

    /// Sends a message; returns its id.
    pub fn send(&self, space: &str, text: &str) -> String {
        self.json(&["chat", "send", space, text, "--json"])["id"]
            .as_str()
            .expect("message id")
            .to_string()
    }

    /// The full chat log as JSON (the cross-node comparable form).
    pub fn log(&self, space: &str) -> Value {
        self.json(&["chat", "log", space, "--json", "--limit", "100000"])
    }

    pub fn log_texts(&self, space: &str) -> Vec<String> {
        self.try_json(&["chat", "log", space, "--json", "--limit", "100000"])
            .map(|v| {
                v.as_array()
                    .expect("array")
                    .iter()
                    .map(|m| m["text"].as_str().expect("text").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every daemon log this node wrote, concatenated.
    pub fn logs(&self) -> String {
        (1..=self.log_index)
            .filter_map(|i| std::fs::read_to_string(self.home.join(format!("daemon-{i}.log"))).ok())
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Two daemons named a and b, b dialling a.
pub fn pair(root: &Path) -> (Node, Node) {
    let mut a = Node::init(root, "a");
    let mut b = Node::init(root, "b");
    a.start(&[]);
    b.start(&[a.addr()]);
    (a, b)
}

/// The user id of `node`'s device.
pub fn user_of(node: &Node) -> String {
    node.json(&["id", "--json"])["user_id"].as_str().unwrap().to_string()
}

/// Links `new` to the user of `primary`, both sides confirming with `--yes`;
/// returns what the primary reports (the spaces the device was added to).
pub fn link(primary: &Node, new: &Node) -> Value {
    let mut linker = Command::new(outpost_bin())
        .arg("--home")
        .arg(&primary.home)
        .args(["device", "link", "--yes", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn device link");
    let mut lines = BufReader::new(linker.stdout.take().unwrap()).lines();
    let ticket: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let ticket = ticket["ticket"].as_str().unwrap().to_string();
    let joined = new.json(&["device", "join", &ticket, "--yes", "--json"]);
    assert_eq!(joined["user"], user_of(primary).as_str());
    let linked: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert!(linker.wait().unwrap().success());
    linked
}

/// With every key the control log stored at `home` can give the device whose
/// home is `removed` (wraps addressed to it, links from them, merges), tries to
/// open every content envelope and snapshot of `space`. Returns the plaintext
/// bytes opened from those made before and after the device's removal.
pub fn plaintext_reachable(home: &std::path::Path, removed: &std::path::Path, space: &str) -> (usize, usize) {
    plaintext_reachable_after(
        home,
        removed,
        space,
        |op, me| matches!(op, ControlOp::Remove(r) if r.devices.contains(me)),
    )
}

/// Like [`plaintext_reachable`], with "after" meaning: a control operation for
/// which `cut(op, device)` holds is in the causal past of the envelope's
/// control heads.
pub fn plaintext_reachable_after(
    home: &std::path::Path,
    removed: &std::path::Path,
    space: &str,
    cut: impl Fn(&ControlOp, &DeviceId) -> bool,
) -> (usize, usize) {
    let me: DeviceId = DeviceKeys::load(removed)
        .expect("the removed device's identity")
        .device_id();
    let Opened {
        store,
        space,
        log,
        ring,
    } = open_store(home, removed, space);
    assert!(!ring.is_empty(), "the removed device held keys before its removal");
    // Written after the removal: a removal of the device is in the causal past
    // of the envelope's control heads (content from before the device was
    // added is history it may read).
    let parents: std::collections::HashMap<_, _> = log
        .iter()
        .filter(|e| e.header().kind == Kind::Control)
        .map(|e| (e.id(), e.header().parents.clone()))
        .collect();
    let removals: Vec<_> = log
        .iter()
        .filter(|e| e.control_op().is_ok_and(|op| cut(&op, &me)))
        .map(Envelope::id)
        .collect();
    assert!(!removals.is_empty(), "the cut is in the log");
    let after_removal = |env: &Envelope| {
        let mut seen = std::collections::HashSet::new();
        let mut stack = env.header().control_heads.clone();
        while let Some(id) = stack.pop() {
            if removals.contains(&id) {
                return true;
            }
            if seen.insert(id) {
                stack.extend(parents.get(&id).into_iter().flatten().copied());
            }
        }
        false
    };
    let snapshots: Vec<Envelope> = store
        .snapshots(&space)
        .unwrap()
        .into_iter()
        .map(|b| Envelope::decode(b).unwrap())
        .collect();
    let (mut before, mut after) = (0, 0);
    for env in log.iter().filter(|e| e.header().kind == Kind::Content) {
        let opened: usize = ring
            .keys()
            .filter_map(|k| env.open_content(k).ok())
            .map(|p| p.len())
            .sum();
        if after_removal(env) {
            after += opened
        } else {
            before += opened
        }
    }
    // Chat message texts live in body envelopes beside the log.
    for env in store
        .sides(&space)
        .unwrap()
        .into_iter()
        .map(|b| Envelope::decode(b).unwrap())
    {
        let opened: usize = ring
            .keys()
            .filter_map(|k| env.open_value(k).ok())
            .map(|p| p.len())
            .sum();
        if after_removal(&env) {
            after += opened
        } else {
            before += opened
        }
    }
    for env in snapshots {
        let snap = Snapshot::verify(env.clone()).unwrap();
        let opened: usize = ring.keys().filter_map(|k| snap.open(k).ok()).map(|p| p.len()).sum();
        if after_removal(&env) {
            after += opened
        } else {
            before += opened
        }
    }
    (before, after)
}

/// A stopped daemon's store, with a space's log and the keys the device whose
/// home is `reader` gets from that log.
pub struct Opened {
    pub store: Store,
    pub space: SpaceId,
    pub log: Vec<Envelope>,
    pub ring: Keyring,
}

pub fn open_store(home: &Path, reader: &Path, space: &str) -> Opened {
    let keys = DeviceKeys::load(reader).expect("the reader's identity");
    let space: SpaceId = space.parse().unwrap();
    let store = Store::open(home).expect("open the store of a stopped daemon");
    let mut log = Vec::new();
    store
        .scan_log(&space, 0, |_, bytes| {
            log.push(Envelope::decode(bytes).expect("stored envelopes verify"));
            std::ops::ControlFlow::<()>::Continue(())
        })
        .unwrap();
    let mut state = SpaceState::from_genesis(&log[0]).unwrap();
    for env in log.iter().filter(|e| e.header().kind == Kind::Control).skip(1) {
        state.apply(env);
    }
    let mut ring = Keyring::default();
    ring.unlock(&state, &keys);
    Opened {
        store,
        space,
        log,
        ring,
    }
}

/// Everything the device whose home is `reader` can decrypt of `space` in the
/// store at `home` (a stopped daemon's): every change, and every chat body.
pub fn decryptable(home: &Path, reader: &Path, space: &str) -> Vec<Vec<u8>> {
    let Opened {
        store,
        space,
        log,
        ring,
    } = open_store(home, reader, space);
    let mut out = Vec::new();
    for env in log.iter().filter(|e| e.header().kind == Kind::Content) {
        out.extend(ring.keys().filter_map(|k| env.open_content(k).ok()));
    }
    for env in store
        .sides(&space)
        .unwrap()
        .into_iter()
        .map(|b| Envelope::decode(b).unwrap())
    {
        out.extend(ring.keys().filter_map(|k| env.open_value(k).ok()));
    }
    out
}
