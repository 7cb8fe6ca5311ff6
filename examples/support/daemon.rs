//! One `outpost` daemon process with its own home, for the benches that run
//! real daemons (`bench`, `doc_bench`, `chat_bench`): finding the binary,
//! starting daemons that dial each other, waiting for them, reading their
//! status and logs. Included with `#[path]`: not an example of its own.

// Each bench uses part of it.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result, bail, ensure};
use outpost_node::{client::Client, ids::SpaceId};

pub struct Daemon {
    pub name: &'static str,
    pub home: PathBuf,
    /// Its loopback TCP port.
    pub port: u16,
    log: PathBuf,
    child: Option<Child>,
    pub client: Client,
}

impl Daemon {
    /// `outpost init` in a new home under `root`.
    pub fn init(bin: &Path, root: &Path, name: &'static str) -> Result<Self> {
        let home = root.join(name);
        let out = Command::new(bin)
            .arg("--home")
            .arg(&home)
            .args(["init", "--name", name])
            .output()
            .with_context(|| format!("running {}", bin.display()))?;
        ensure!(
            out.status.success(),
            "outpost init ({name}) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        Ok(Self {
            name,
            log: root.join(format!("{name}.log")),
            client: Client::for_home(&home),
            home,
            port,
            child: None,
        })
    }

    pub fn addr(&self) -> String {
        format!("/ip4/127.0.0.1/tcp/{}", self.port)
    }

    /// Starts the daemon as the integration tests do (loopback TCP, mDNS off,
    /// re-offers every 2 s), dialling `peer` if given. Does not wait for it.
    pub fn spawn(&mut self, bin: &Path, peer: Option<&str>) -> Result<()> {
        self.spawn_with_peers(bin, peer.as_slice())
    }

    /// [`Daemon::spawn`] dialling every one of `peers` (`--peer` each).
    pub fn spawn_with_peers(&mut self, bin: &Path, peers: &[&str]) -> Result<()> {
        let log = std::fs::File::create(&self.log)?;
        let mut cmd = Command::new(bin);
        cmd.arg("--home")
            .arg(&self.home)
            .args(["daemon", "--no-mdns", "--resync-secs", "2", "--listen"])
            .arg(self.addr());
        for peer in peers {
            cmd.args(["--peer", peer]);
        }
        let child = cmd
            // BENCH_DAEMON_LOG (a RUST_LOG filter) traces the daemons into
            // their logs, kept with --keep.
            .env(
                "RUST_LOG",
                std::env::var("BENCH_DAEMON_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting daemon {}", self.name))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits (at most 20 s) until the daemon's API answers.
    pub async fn wait_api(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.status().await.is_err() {
            self.check_alive()?;
            ensure!(Instant::now() < deadline, "daemon {}'s API did not come up", self.name);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Fails with the log's tail if the daemon has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            bail!("daemon {} exited ({status}); log tail:\n{tail}", self.name);
        }
        Ok(())
    }

    /// The device card others invite (`outpost id --json`).
    pub fn card(&self, bin: &Path) -> Result<String> {
        let out = Command::new(bin)
            .arg("--home")
            .arg(&self.home)
            .args(["id", "--json"])
            .output()?;
        ensure!(
            out.status.success(),
            "outpost id failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        Ok(v["card"].as_str().context("`id --json` has no card")?.to_string())
    }

    /// `/v1/status` as JSON: only a few fields are read, so a bench keeps
    /// working with a daemon built from a slightly different revision.
    pub async fn status(&self) -> Result<serde_json::Value> {
        Ok(self.client.get("/v1/status").await?)
    }

    /// The status of one space on this node, if it has it.
    pub async fn space_status(&self, space: SpaceId) -> Option<serde_json::Value> {
        let status = self.status().await.ok()?;
        let space = space.to_string();
        status["spaces"]
            .as_array()?
            .iter()
            .find(|s| s["space"].as_str() == Some(space.as_str()))
            .cloned()
    }

    /// Envelopes this node stores for `space`.
    pub async fn envelopes(&self, space: SpaceId) -> u64 {
        self.space_status(space)
            .await
            .and_then(|s| s["envelopes"].as_u64())
            .unwrap_or(0)
    }

    /// Peers connected now (0 while the API is down).
    pub async fn peers(&self) -> usize {
        self.status()
            .await
            .ok()
            .and_then(|s| s["peers"].as_array().map(Vec::len))
            .unwrap_or(0)
    }

    /// The warning and error lines of the daemon's log.
    pub fn warning_lines(&self) -> Vec<String> {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The `outpost` binary to run: `given`, else the one next to this example
/// (target/<profile>/outpost); and a note when the sources are newer than it
/// (a stale daemon would measure old code).
pub fn locate_outpost(given: Option<&Path>) -> Result<(PathBuf, Option<String>)> {
    let bin = match given {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .context("the example should live in target/<profile>/examples")?
            .join("outpost"),
    };
    ensure!(
        bin.exists(),
        "{} is missing: build it first with `cargo build --release -p outpost-cli` (or pass --outpost PATH)",
        bin.display()
    );
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let newest = ["node/src", "cli/src", "crdt/src"]
        .iter()
        .filter_map(|d| newest_mtime(&root.join(d)))
        .max();
    let stale = match (built, newest) {
        (Some(built), Some(newest)) if newest > built => Some(format!(
            "{} is older than the node sources: rebuild with `cargo build --release -p outpost-cli`",
            bin.display()
        )),
        _ => None,
    };
    Ok((bin, stale))
}

/// A daemon of each name, homes under `root`, each dialling all the others.
/// Does not wait for them: see [`connect`].
pub fn start_mesh<const N: usize>(bin: &Path, root: &Path, names: [&'static str; N]) -> Result<[Daemon; N]> {
    let mut nodes = Vec::with_capacity(N);
    for name in names {
        nodes.push(Daemon::init(bin, root, name)?);
    }
    let addrs: Vec<String> = nodes.iter().map(Daemon::addr).collect();
    for (i, node) in nodes.iter_mut().enumerate() {
        let peers: Vec<&str> = (0..N).filter(|&j| j != i).map(|j| addrs[j].as_str()).collect();
        node.spawn_with_peers(bin, &peers)?;
    }
    Ok(nodes.try_into().unwrap_or_else(|_| unreachable!("one daemon per name")))
}

/// Waits until every daemon's API answers, then (within `timeout`) until each
/// is connected to all the others: how long the connecting took.
pub async fn connect(nodes: &mut [Daemon], timeout: Duration) -> Result<Duration> {
    for d in nodes.iter_mut() {
        d.wait_api().await?;
    }
    let setup = Instant::now();
    let (nodes, others) = (&*nodes, nodes.len() - 1);
    wait_for(timeout, "the daemons to connect", move || async move {
        for d in nodes {
            if d.peers().await < others {
                return None;
            }
        }
        Some(())
    })
    .await?;
    Ok(setup.elapsed())
}

/// Polls `check` every 10 ms until it yields a value or `timeout` passes.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The newest modification time of any file under `dir`: whether a built
/// binary is older than the sources.
pub fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// A note of the warnings a daemon logged, if any: how many, and the first few
/// kinds with their counts.
pub fn warnings_note(d: &Daemon) -> Option<String> {
    let lines = d.warning_lines();
    if lines.is_empty() {
        return None;
    }
    let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
    for line in &lines {
        let line = strip_ansi(line);
        let text = line.split_once(' ').map_or(line.as_str(), |(_, rest)| rest).trim();
        let text: String = text.chars().take(160).collect();
        *kinds.entry(text).or_default() += 1;
    }
    let list: Vec<String> = kinds.into_iter().take(6).map(|(k, n)| format!("{n}× {k}")).collect();
    Some(format!(
        "daemon {} logged {} warnings/errors: {}",
        d.name,
        lines.len(),
        list.join("; ")
    ))
}

/// Removes terminal colour codes (`ESC [ … m`) from a log line.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
