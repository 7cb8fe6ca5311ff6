//! Outpost benchmarks, in one run, side by side with their baselines:
//!
//! 1. Two real daemons (separate `outpost` processes) on loopback, mDNS off, each
//!    dialling the other, one chat space created on A with B as member:
//!    - send → visible on B latency at a fixed offered load (one send every 5 ms);
//!    - single-client serial send rate (bounded by one durable commit per send);
//!    - sustained throughput with many concurrent clients, acknowledged on A and
//!      end to end (all messages visible on B).
//! 2. Sealed sync vs raw Automerge sync of the same changes, in-process: a fresh core
//!    ingesting the sealed envelopes in sync frames (verify, decrypt, check, store
//!    durably, apply) against Automerge applying the same change bytes, and against
//!    Automerge's own sync protocol; with the sealed path split into its parts.
//!
//! ```text
//! cargo build --release -p outpost-cli     # the daemon the bench starts (target/release/outpost)
//! cargo run --release --example bench      # default sizes: about a minute on 2 cores
//! cargo run --release --example bench -- --help
//! ```
//!
//! A measurement tool: it asserts nothing about wall-clock time. BENCHMARKS.md says
//! what each number means and holds the latest results.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    hint::black_box,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, anyhow, bail, ensure};
use automerge::sync::{Message as SyncMessage, State as SyncState, SyncDoc};
use futures::StreamExt;
use outpost_crdt::{Change, chat::ChatDoc};
use outpost_node::{
    api::{ApiEvent, CreateChat, Created, SendMessage, StatusResponse},
    client::Client,
    control::SpaceState,
    core::{self, Event, MAX_LOG_LIMIT, Sent, SpaceSummary},
    envelope::Envelope,
    identity::DeviceKeys,
    ids::{DeviceId, SpaceId},
    store::{NewEnvelope, Store},
    sync::{self, Ack, Request, Response, SpaceVv, VersionVector},
};
use tokio::sync::mpsc;

const HELP: &str = "\
Outpost benchmark (see BENCHMARKS.md)

USAGE: cargo run --release --example bench -- [OPTIONS]

Needs target/release/outpost: cargo build --release -p outpost-cli

Two daemons:
  --latency-messages N   messages in the latency run               [2000]
  --interval-ms MS       offered load of the latency run: one send every MS ms [5]
  --serial N             messages sent by one client, one at a time [500]
  --messages N           messages in the throughput run            [20000]
  --clients N            concurrent clients in the throughput run  [64]
  --outpost PATH         the outpost binary        [next to this example's exe]
Sealed vs raw sync (in-process):
  --history N            messages in each history                  [10000]
  --per-change K         messages per change in the batched history [10]
                         (a second history always has 1 message per change)
  --reps N               repetitions; the median is reported       [3]
General:
  --only daemons|sync    run one part only
  --json                 print the results as JSON instead of tables
  --keep                 keep the daemons' homes and logs (path printed)
";

/// Ordinary chat text: each message is a ~70-byte line.
const FILLER: &str = "the quick brown fox jumps over the lazy dog, 0123456789";

// ---------------------------------------------------------------------------
// Options

#[derive(Debug, Clone)]
struct Opts {
    latency_messages: usize,
    interval: Duration,
    serial: usize,
    messages: usize,
    clients: usize,
    outpost: Option<PathBuf>,
    history: usize,
    per_change: usize,
    reps: usize,
    daemons: bool,
    sync: bool,
    json: bool,
    keep: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            latency_messages: 2000,
            interval: Duration::from_millis(5),
            serial: 500,
            messages: 20_000,
            clients: 64,
            outpost: None,
            history: 10_000,
            per_change: 10,
            reps: 3,
            daemons: true,
            sync: true,
            json: false,
            keep: false,
        }
    }
}

fn value<T: FromStr>(args: &mut impl Iterator<Item = String>, name: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    let raw = args.next().with_context(|| format!("{name} needs a value"))?;
    raw.parse().map_err(|e| anyhow!("{name} {raw:?}: {e}"))
}

fn parse_opts() -> Result<Option<Opts>> {
    let mut o = Opts::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--latency-messages" => o.latency_messages = value(&mut args, &arg)?,
            "--interval-ms" => o.interval = Duration::from_secs_f64(value::<f64>(&mut args, &arg)? / 1e3),
            "--serial" => o.serial = value(&mut args, &arg)?,
            "--messages" => o.messages = value(&mut args, &arg)?,
            "--clients" => o.clients = value::<usize>(&mut args, &arg)?.max(1),
            "--outpost" => o.outpost = Some(value(&mut args, &arg)?),
            "--history" => o.history = value::<usize>(&mut args, &arg)?.max(1),
            "--per-change" => o.per_change = value::<usize>(&mut args, &arg)?.max(1),
            "--reps" => o.reps = value::<usize>(&mut args, &arg)?.max(1),
            "--only" => match value::<String>(&mut args, &arg)?.as_str() {
                "daemons" => o.sync = false,
                "sync" => o.daemons = false,
                other => bail!("--only takes `daemons` or `sync`, not {other:?}"),
            },
            "--json" => o.json = true,
            "--keep" => o.keep = true,
            "-h" | "--help" => {
                print!("{HELP}");
                return Ok(None);
            }
            // `cargo bench`-style harness flags are ignored.
            "--bench" => {}
            other => bail!("unknown option {other:?}; see --help"),
        }
    }
    Ok(Some(o))
}

// ---------------------------------------------------------------------------
// Results

#[derive(Debug, Clone, Copy)]
enum Target {
    AtMost(f64),
    AtLeast(f64),
}

impl Target {
    fn met(self, v: f64) -> bool {
        match self {
            Target::AtMost(t) => v <= t,
            Target::AtLeast(t) => v >= t,
        }
    }

    fn describe(self, unit: &str) -> String {
        match self {
            Target::AtMost(t) => format!("≤ {} {unit}", fmt_value(t, unit)),
            Target::AtLeast(t) => format!("≥ {} {unit}", fmt_value(t, unit)),
        }
    }
}

#[derive(Debug)]
struct Row {
    section: String,
    key: String,
    label: String,
    value: f64,
    unit: &'static str,
    target: Option<Target>,
}

impl Row {
    fn target(&mut self, t: Target) -> &mut Self {
        self.target = Some(t);
        self
    }
}

#[derive(Debug, Default)]
struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Report {
    fn add(&mut self, section: &str, key: &str, label: &str, value: f64, unit: &'static str) -> &mut Row {
        self.rows.push(Row {
            section: section.into(),
            key: key.into(),
            label: label.into(),
            value,
            unit,
            target: None,
        });
        self.rows.last_mut().expect("just pushed")
    }

    fn note(&mut self, text: impl Into<String>) {
        let text = text.into();
        eprintln!("[bench] note: {text}");
        self.notes.push(text);
    }

    fn print_tables(&self, header: &str) {
        println!("{header}");
        let mut section = None;
        for r in &self.rows {
            if section != Some(&r.section) {
                section = Some(&r.section);
                println!("\n### {}\n", r.section);
                println!("| metric | value | target | |");
                println!("|---|---:|---|---|");
            }
            let (target, verdict) = match r.target {
                Some(t) => (t.describe(r.unit), if t.met(r.value) { "met" } else { "**missed**" }),
                None => (String::new(), ""),
            };
            println!(
                "| {} | {} {} | {target} | {verdict} |",
                r.label,
                fmt_value(r.value, r.unit),
                r.unit
            );
        }
        if !self.notes.is_empty() {
            println!("\nNotes:");
            for n in &self.notes {
                println!("- {n}");
            }
        }
    }

    fn to_json(&self, machine: &serde_json::Value, opts: &Opts, date: &str) -> serde_json::Value {
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "section": r.section,
                    "key": r.key,
                    "label": r.label,
                    "value": r.value,
                    "unit": r.unit,
                    "target": r.target.map(|t| t.describe(r.unit)),
                    "met": r.target.map(|t| t.met(r.value)),
                })
            })
            .collect();
        serde_json::json!({
            "date": date,
            "machine": machine,
            "options": format!("{opts:?}"),
            "results": rows,
            "notes": self.notes,
        })
    }
}

fn fmt_value(v: f64, unit: &str) -> String {
    match unit {
        "ms" if v < 10.0 => format!("{v:.2}"),
        "ms" | "µs" | "msgs/change" => format!("{v:.1}"),
        "×" | "s" => format!("{v:.2}"),
        _ => format!("{v:.0}"),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The `q` quantile of sorted samples (nearest rank).
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    quantile(&v, 0.5)
}

fn today() -> String {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0) as i64;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    serde_json::json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "memory_gib": (mem_kb as f64 / 1_048_576.0).round(),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "release_build": !cfg!(debug_assertions),
    })
}

// ---------------------------------------------------------------------------
// Process accounting (Linux /proc)

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// User + system CPU seconds of a process (`self` for this one).
fn cpu_seconds(pid: &str, ticks: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks)
}

fn rss_mib(pid: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// CPU seconds of A, B and this process since `start`.
struct CpuMeter {
    pids: [String; 3],
    start: [f64; 3],
    ticks: f64,
}

impl CpuMeter {
    fn start(a: &Daemon, b: &Daemon, ticks: f64) -> Self {
        let pids = [a.pid(), b.pid(), "self".to_string()];
        let start = pids.clone().map(|p| cpu_seconds(&p, ticks).unwrap_or(0.0));
        Self { pids, start, ticks }
    }

    fn stop(&self) -> [f64; 3] {
        let mut out = [0.0; 3];
        for ((o, pid), start) in out.iter_mut().zip(&self.pids).zip(self.start) {
            *o = cpu_seconds(pid, self.ticks).unwrap_or(0.0) - start;
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Daemons

struct Daemon {
    name: &'static str,
    home: PathBuf,
    port: u16,
    log: PathBuf,
    child: Option<Child>,
    client: Client,
}

impl Daemon {
    fn init(bin: &Path, root: &Path, name: &'static str) -> Result<Self> {
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

    fn addr(&self) -> String {
        format!("/ip4/127.0.0.1/tcp/{}", self.port)
    }

    fn start(&mut self, bin: &Path, peer: &str) -> Result<()> {
        let log = std::fs::File::create(&self.log)?;
        let child = Command::new(bin)
            .arg("--home")
            .arg(&self.home)
            .args(["daemon", "--no-mdns", "--resync-secs", "2", "--listen"])
            .arg(self.addr())
            .args(["--peer", peer])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting daemon {}", self.name))?;
        self.child = Some(child);
        Ok(())
    }

    fn pid(&self) -> String {
        self.child.as_ref().map(|c| c.id().to_string()).unwrap_or_default()
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!("daemon {} exited ({status}); log tail:\n{}", self.name, tail.join("\n"));
        }
        Ok(())
    }

    fn card(&self, bin: &Path) -> Result<String> {
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

    async fn status(&self) -> Result<StatusResponse> {
        Ok(self.client.get("/v1/status").await?)
    }

    /// Envelopes this node stores for `space`.
    async fn envelopes(&self, space: SpaceId) -> Result<u64> {
        let status = self.status().await?;
        Ok(status
            .spaces
            .iter()
            .find(|s| s.space == space)
            .map_or(0, |s| s.envelopes))
    }

    fn warnings(&self) -> (usize, Vec<String>) {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut count = 0;
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for line in log.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")) {
            count += 1;
            // Drop the timestamp; keep the level, target and message.
            let text = line.split_once(' ').map_or(line, |(_, rest)| rest).trim();
            let text: String = text.chars().take(160).collect();
            *kinds.entry(text).or_default() += 1;
        }
        let list = kinds.into_iter().take(6).map(|(k, n)| format!("{n}× {k}")).collect();
        (count, list)
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

/// The `outpost` binary next to this example: target/<profile>/outpost.
fn locate_outpost(opts: &Opts, report: &mut Report) -> Result<PathBuf> {
    let bin = match &opts.outpost {
        Some(p) => p.clone(),
        None => {
            let exe = std::env::current_exe()?;
            let dir = exe
                .parent()
                .and_then(Path::parent)
                .context("the example should live in target/<profile>/examples")?;
            dir.join("outpost")
        }
    };
    ensure!(
        bin.exists(),
        "{} is missing: build it first with `cargo build --release -p outpost-cli` (or pass --outpost PATH)",
        bin.display()
    );
    // A stale daemon binary would measure old code: compare with the sources.
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let newest = ["node/src", "cli/src", "crdt/src"]
        .iter()
        .filter_map(|d| newest_mtime(&root.join(d)))
        .max();
    if let (Some(built), Some(newest)) = (built, newest)
        && newest > built
    {
        report.note(format!(
            "{} is older than the node sources: rebuild with `cargo build --release -p outpost-cli`",
            bin.display()
        ));
    }
    Ok(bin)
}

fn newest_mtime(dir: &Path) -> Option<SystemTime> {
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

/// Polls `check` every 20 ms until it yields a value or `timeout` passes.
async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

type Arrivals = mpsc::UnboundedReceiver<(String, Instant)>;

/// Collects arrival times of messages whose text starts with `prefix` until `want`
/// of them arrived or `deadline` passed. Other messages are dropped.
async fn collect(events: &mut Arrivals, prefix: &str, want: usize, deadline: Instant) -> HashMap<String, Instant> {
    let mut seen = HashMap::with_capacity(want);
    while seen.len() < want {
        match tokio::time::timeout_at(deadline.into(), events.recv()).await {
            Ok(Some((text, at))) => {
                if text.starts_with(prefix) {
                    seen.entry(text).or_insert(at);
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    seen
}

async fn send(client: &Client, path: &str, text: String) -> Result<Sent> {
    Ok(client.post(path, &SendMessage { text, client_id: None }).await?)
}

async fn daemons(opts: &Opts, report: &mut Report) -> Result<()> {
    let bin = locate_outpost(opts, report)?;
    let ticks = clock_ticks();
    // On the real disk (/tmp is ext4 here): fsync costs what it costs.
    let root = tempfile::Builder::new().prefix("outpost-bench-").tempdir()?;
    eprintln!("[bench] daemons: homes in {}", root.path().display());
    let mut a = Daemon::init(&bin, root.path(), "a")?;
    let mut b = Daemon::init(&bin, root.path(), "b")?;
    a.start(&bin, &b.addr())?;
    b.start(&bin, &a.addr())?;
    let result = run_daemons(opts, report, &bin, &mut a, &mut b, ticks).await;
    for d in [&a, &b] {
        let (count, kinds) = d.warnings();
        if count > 0 {
            report.note(format!(
                "daemon {} logged {count} warnings/errors: {}",
                d.name,
                kinds.join("; ")
            ));
        }
        if let Some(rss) = rss_mib(&d.pid()) {
            report.add(
                "daemons: resources",
                &format!("rss_{}", d.name),
                &format!("RSS of daemon {} at the end", d.name),
                rss,
                "MiB",
            );
        }
    }
    drop(a);
    drop(b);
    if opts.keep {
        let path = root.keep();
        report.note(format!("daemon homes and logs kept in {}", path.display()));
    }
    result
}

async fn run_daemons(
    opts: &Opts,
    report: &mut Report,
    bin: &Path,
    a: &mut Daemon,
    b: &mut Daemon,
    ticks: f64,
) -> Result<()> {
    // Both APIs up, then connected to each other.
    for d in [&mut *a, &mut *b] {
        let deadline = Instant::now() + Duration::from_secs(20);
        while d.status().await.is_err() {
            d.check_alive()?;
            ensure!(Instant::now() < deadline, "daemon {}'s API did not come up", d.name);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let (ar, br) = (&*a, &*b);
    let setup = Instant::now();
    wait_for(Duration::from_secs(20), "the daemons to connect", move || async move {
        let a_peers = ar.status().await.ok()?.peers.len();
        let b_peers = br.status().await.ok()?.peers.len();
        (a_peers > 0 && b_peers > 0).then_some(())
    })
    .await?;
    eprintln!("[bench] daemons connected after {:.0} ms", ms(setup.elapsed()));

    let card = b.card(bin)?;
    let created: Created = a
        .client
        .post(
            "/v1/chats",
            &CreateChat {
                name: "bench".into(),
                members: vec![card],
                replicators: vec![],
            },
        )
        .await?;
    let space = created.space;
    wait_for(Duration::from_secs(20), "B to join the space", move || async move {
        let spaces: Vec<SpaceSummary> = br.client.get("/v1/spaces").await.ok()?;
        spaces.iter().any(|s| s.space == space && s.readable).then_some(())
    })
    .await?;
    let path = format!("/v1/chats/{space}/messages");

    // B's live event stream, time-stamped as it arrives.
    let mut stream = Box::pin(
        b.client
            .stream::<ApiEvent>(&format!("/v1/events?space={space}"))
            .await?,
    );
    let (tx, mut arrivals) = mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        while let Some(Ok(ApiEvent::Message { message, .. })) = stream.next().await {
            if tx.send((message.text, Instant::now())).is_err() {
                break;
            }
        }
    });

    // Warm-up: connections, caches, first envelopes.
    for i in 0..20 {
        send(&a.client, &path, format!("warm-{i:03} {FILLER}")).await?;
    }
    let warm = collect(&mut arrivals, "warm-", 20, Instant::now() + Duration::from_secs(30)).await;
    ensure!(warm.len() == 20, "only {} of 20 warm-up messages reached B", warm.len());

    latency(opts, report, a, b, &path, &mut arrivals, ticks).await?;
    serial(opts, report, a, &path, &mut arrivals).await?;
    throughput(opts, report, a, b, space, &path, &mut arrivals, ticks).await?;
    reader.abort();
    a.check_alive()?;
    b.check_alive()?;
    Ok(())
}

/// Send → visible on B at a fixed offered load (open loop: a slow send does not
/// delay the next one).
async fn latency(
    opts: &Opts,
    report: &mut Report,
    a: &Daemon,
    b: &Daemon,
    path: &str,
    arrivals: &mut Arrivals,
    ticks: f64,
) -> Result<()> {
    let n = opts.latency_messages;
    if n == 0 {
        return Ok(());
    }
    eprintln!("[bench] latency: {n} messages, one every {:.1} ms", ms(opts.interval));
    let cpu = CpuMeter::start(a, b, ticks);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        tokio::time::sleep_until((start + opts.interval * i as u32).into()).await;
        let client = a.client.clone();
        let path = path.to_string();
        tasks.spawn(async move {
            let text = format!("lat-{i:06} {FILLER}");
            let t0 = Instant::now();
            let ok = send(&client, &path, text.clone()).await.is_ok();
            (text, t0, Instant::now(), ok)
        });
    }
    let offered_for = start.elapsed();
    let mut sent = Vec::with_capacity(n);
    while let Some(r) = tasks.join_next().await {
        sent.push(r?);
    }
    let failed = sent.iter().filter(|s| !s.3).count();
    let last = sent.iter().map(|s| s.1).max().unwrap_or(start);
    let seen = collect(arrivals, "lat-", n - failed, last + Duration::from_secs(30)).await;
    let used = cpu.stop();
    let mut visible: Vec<Duration> = sent
        .iter()
        .filter_map(|(text, t0, _, _)| seen.get(text).map(|at| at.saturating_duration_since(*t0)))
        .collect();
    let mut acked: Vec<Duration> = sent.iter().filter(|s| s.3).map(|s| s.2 - s.1).collect();
    visible.sort();
    acked.sort();
    let sec = "daemons: send → visible on B at a fixed load";
    report.add(
        sec,
        "latency_offered",
        "offered load (achieved)",
        n as f64 / offered_for.as_secs_f64(),
        "msgs/s",
    );
    report
        .add(
            sec,
            "latency_p50",
            "send → visible on B, p50",
            ms(quantile(&visible, 0.5)),
            "ms",
        )
        .target(Target::AtMost(10.0));
    report.add(
        sec,
        "latency_p90",
        "send → visible on B, p90",
        ms(quantile(&visible, 0.9)),
        "ms",
    );
    report
        .add(
            sec,
            "latency_p99",
            "send → visible on B, p99",
            ms(quantile(&visible, 0.99)),
            "ms",
        )
        .target(Target::AtMost(50.0));
    report.add(
        sec,
        "latency_max",
        "send → visible on B, max",
        ms(quantile(&visible, 1.0)),
        "ms",
    );
    report.add(
        sec,
        "latency_ack_p50",
        "send → acknowledged by A (durable), p50",
        ms(quantile(&acked, 0.5)),
        "ms",
    );
    report.add(
        sec,
        "latency_ack_p99",
        "send → acknowledged by A (durable), p99",
        ms(quantile(&acked, 0.99)),
        "ms",
    );
    report.add(
        sec,
        "latency_cpu_a",
        "CPU of daemon A during the run",
        used[0] / n as f64 * 1e6,
        "µs/msg",
    );
    report.add(
        sec,
        "latency_cpu_b",
        "CPU of daemon B during the run",
        used[1] / n as f64 * 1e6,
        "µs/msg",
    );
    let missing = n - visible.len();
    report.add(
        sec,
        "latency_missing",
        "messages not visible on B within 30 s",
        missing as f64,
        "msgs",
    );
    if failed > 0 {
        report.note(format!("latency run: {failed} sends failed"));
    }
    Ok(())
}

/// One client, one send at a time: each waits for its durable commit.
async fn serial(opts: &Opts, report: &mut Report, a: &Daemon, path: &str, arrivals: &mut Arrivals) -> Result<()> {
    let n = opts.serial;
    if n == 0 {
        return Ok(());
    }
    eprintln!("[bench] serial: {n} messages from one client");
    let mut acks = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t0 = Instant::now();
        send(&a.client, path, format!("ser-{i:06} {FILLER}")).await?;
        acks.push(t0.elapsed());
    }
    let elapsed = start.elapsed();
    acks.sort();
    let sec = "daemons: one client, serial sends";
    report.add(
        sec,
        "serial_rate",
        "acknowledged sends/s, one client",
        n as f64 / elapsed.as_secs_f64(),
        "msgs/s",
    );
    report.add(
        sec,
        "serial_ack_p50",
        "send → acknowledged, p50",
        ms(quantile(&acks, 0.5)),
        "ms",
    );
    report.add(
        sec,
        "serial_ack_p99",
        "send → acknowledged, p99",
        ms(quantile(&acks, 0.99)),
        "ms",
    );
    let seen = collect(arrivals, "ser-", n, Instant::now() + Duration::from_secs(30)).await;
    if seen.len() < n {
        report.note(format!("serial run: only {} of {n} messages seen on B", seen.len()));
    }
    Ok(())
}

/// Many concurrent clients for a fixed message count: acknowledged rate on A, and
/// the time until B shows them all.
#[allow(clippy::too_many_arguments)]
async fn throughput(
    opts: &Opts,
    report: &mut Report,
    a: &Daemon,
    b: &Daemon,
    space: SpaceId,
    path: &str,
    arrivals: &mut Arrivals,
    ticks: f64,
) -> Result<()> {
    let n = opts.messages;
    if n == 0 {
        return Ok(());
    }
    eprintln!(
        "[bench] throughput: {n} messages from {} concurrent clients",
        opts.clients
    );
    let envelopes_before = a.envelopes(space).await?;
    let cpu = CpuMeter::start(a, b, ticks);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..opts.clients {
        let client = a.client.clone();
        let path = path.to_string();
        let next = next.clone();
        tasks.spawn(async move {
            let mut acks = Vec::new();
            let mut failed = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let t0 = Instant::now();
                match send(&client, &path, format!("tp-{i:07} {FILLER}")).await {
                    Ok(_) => acks.push(t0.elapsed()),
                    Err(_) => failed += 1,
                }
            }
            (acks, failed)
        });
    }
    let mut acks = Vec::with_capacity(n);
    let mut failed = 0;
    while let Some(r) = tasks.join_next().await {
        let (acked, f) = r?;
        acks.extend(acked);
        failed += f;
    }
    let acked_at = start.elapsed();
    let cpu_acked = cpu.stop();
    let want = n - failed;
    let seen = collect(arrivals, "tp-", want, Instant::now() + Duration::from_secs(120)).await;
    let cpu_all = cpu.stop();
    let envelopes_after = a.envelopes(space).await?;
    let e2e = seen.values().max().map(|t| t.saturating_duration_since(start));
    acks.sort();
    let sec = "daemons: sustained throughput";
    report.add(sec, "tp_clients", "concurrent clients", opts.clients as f64, "");
    report
        .add(
            sec,
            "tp_acked_rate",
            "acknowledged on A",
            acks.len() as f64 / acked_at.as_secs_f64(),
            "msgs/s",
        )
        .target(Target::AtLeast(5000.0));
    if seen.len() == want {
        let e2e = e2e.unwrap_or(acked_at);
        report
            .add(
                sec,
                "tp_e2e_rate",
                "end to end: all visible on B",
                want as f64 / e2e.as_secs_f64(),
                "msgs/s",
            )
            .target(Target::AtLeast(5000.0));
        report.add(
            sec,
            "tp_b_lag",
            "B complete after A's last ack",
            ms(e2e.saturating_sub(acked_at)),
            "ms",
        );
    } else {
        report.add(
            sec,
            "tp_missing",
            "messages not visible on B within 120 s",
            (want - seen.len()) as f64,
            "msgs",
        );
        let (ea, eb) = (a.envelopes(space).await?, b.envelopes(space).await?);
        report.note(format!(
            "throughput: the event stream showed {} of {want} messages; envelopes stored A={ea} B={eb}",
            seen.len()
        ));
    }
    let changes = envelopes_after.saturating_sub(envelopes_before).max(1);
    report.add(
        sec,
        "tp_group",
        "messages per change on A (group commit size)",
        n as f64 / changes as f64,
        "msgs/change",
    );
    report.add(
        sec,
        "tp_ack_p50",
        "send → acknowledged, p50 (under load)",
        ms(quantile(&acks, 0.5)),
        "ms",
    );
    report.add(
        sec,
        "tp_ack_p99",
        "send → acknowledged, p99 (under load)",
        ms(quantile(&acks, 0.99)),
        "ms",
    );
    let per_msg = |cpu: f64| cpu / n as f64 * 1e6;
    report.add(sec, "tp_cpu_a", "CPU of daemon A", per_msg(cpu_all[0]), "µs/msg");
    report.add(sec, "tp_cpu_b", "CPU of daemon B", per_msg(cpu_all[1]), "µs/msg");
    report.add(
        sec,
        "tp_cpu_bench",
        "CPU of the bench clients",
        per_msg(cpu_all[2]),
        "µs/msg",
    );
    report.add(
        sec,
        "tp_cpu_busy",
        "CPU busy while sending (A+B+bench, of 2 cores)",
        (cpu_acked.iter().sum::<f64>()) / acked_at.as_secs_f64() * 100.0 / available_cpus(),
        "%",
    );
    if failed > 0 {
        report.note(format!("throughput run: {failed} sends failed"));
    }
    Ok(())
}

fn available_cpus() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

// ---------------------------------------------------------------------------
// Sealed vs raw sync, in-process

/// A history built by a real core: sealed envelopes in the order it stored them.
struct History {
    per_change: usize,
    messages: usize,
    space: SpaceId,
    author: DeviceId,
    reader: Arc<DeviceKeys>,
    /// The genesis first, then content envelopes in topological order.
    sealed: Vec<Vec<u8>>,
}

/// A scratch directory where durability costs nothing (tmpfs) when there is one:
/// only for building histories, never for what is measured.
fn scratch_dir() -> Result<tempfile::TempDir> {
    if let Ok(d) = tempfile::Builder::new().prefix("outpost-bench-").tempdir_in("/dev/shm") {
        return Ok(d);
    }
    Ok(tempfile::Builder::new().prefix("outpost-bench-").tempdir()?)
}

/// A temp directory on the real disk (/tmp), where durable commits pay for fsync.
fn disk_dir() -> Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new().prefix("outpost-bench-").tempdir()?)
}

async fn stop_core(core: core::CoreHandle, thread: std::thread::JoinHandle<()>) {
    drop(core);
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
}

/// Has a core post `messages` in waves of `per_change` concurrent sends (the core
/// turns each wave into one change) and captures what it stores.
async fn build_history(messages: usize, per_change: usize) -> Result<History> {
    let author_keys = Arc::new(DeviceKeys::generate());
    let reader = Arc::new(DeviceKeys::generate());
    let dir = scratch_dir()?;
    let (core, thread) = core::spawn(dir.path().to_path_buf(), author_keys.clone())?;
    let mut events = core.subscribe();
    let space = core
        .create_chat("bench".into(), vec![reader.cert().to_card()], vec![])
        .await?;
    let mut sealed = Vec::new();
    let mut drain = |events: &mut tokio::sync::broadcast::Receiver<Event>| -> Result<()> {
        loop {
            match events.try_recv() {
                Ok(Event::Stored { envelopes, .. }) => sealed.extend(envelopes.iter().cloned()),
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::TryRecvError::Empty) => return Ok(()),
                Err(e) => bail!("history events: {e}"),
            }
        }
    };
    drain(&mut events)?;
    let mut i = 0;
    while i < messages {
        let wave = per_change.min(messages - i);
        let sends = (i..i + wave).map(|k| core.send(space, format!("msg-{k:07} {FILLER}"), None));
        for r in futures::future::join_all(sends).await {
            r?;
        }
        i += wave;
        drain(&mut events)?;
    }
    stop_core(core, thread).await;
    Ok(History {
        per_change,
        messages,
        space,
        author: author_keys.device_id(),
        reader,
        sealed,
    })
}

/// Splits `items` into consecutive groups of the given sizes.
fn split<T: Clone>(items: &[T], sizes: &[usize]) -> Vec<Vec<T>> {
    let mut out = Vec::with_capacity(sizes.len());
    let mut at = 0;
    for &n in sizes {
        out.push(items[at..at + n].to_vec());
        at += n;
    }
    out
}

/// A fresh core ingesting every frame, one after the other, as sync delivers them.
async fn sealed_ingest(h: &History, frames: &[Vec<Vec<u8>>]) -> Result<Duration> {
    let dir = disk_dir()?;
    let (core, thread) = core::spawn(dir.path().to_path_buf(), h.reader.clone())?;
    let input = frames.to_vec();
    let start = Instant::now();
    let mut stored = 0usize;
    for frame in input {
        let ack = core.ingest(h.author, frame).await?;
        ensure!(
            ack.rejected == 0 && ack.pending == 0,
            "ingest refused envelopes: {ack:?}"
        );
        stored += ack.stored as usize;
    }
    let elapsed = start.elapsed();
    ensure!(
        stored == h.sealed.len(),
        "stored {stored} of {} envelopes",
        h.sealed.len()
    );
    let shown = core.messages(h.space, MAX_LOG_LIMIT).await?.len();
    ensure!(
        shown == h.messages,
        "the ingesting core shows {shown} of {} messages",
        h.messages
    );
    stop_core(core, thread).await;
    Ok(elapsed)
}

/// Automerge's own sync protocol from a doc holding the history to one holding only
/// the genesis. Returns (time, bytes each way incl. a 4-byte length prefix, messages).
fn raw_sync(source: &automerge::Automerge, empty: &automerge::Automerge) -> Result<(Duration, usize, usize, usize)> {
    let mut src = source.clone();
    let mut dst = empty.clone();
    let (mut s_src, mut s_dst) = (SyncState::new(), SyncState::new());
    let (mut to_dst, mut to_src, mut count) = (0, 0, 0);
    let start = Instant::now();
    loop {
        let mut quiet = true;
        if let Some(m) = dst.generate_sync_message(&mut s_dst) {
            let bytes = m.encode();
            to_src += bytes.len() + 4;
            count += 1;
            src.receive_sync_message(&mut s_src, SyncMessage::decode(&bytes)?)?;
            quiet = false;
        }
        if let Some(m) = src.generate_sync_message(&mut s_src) {
            let bytes = m.encode();
            to_dst += bytes.len() + 4;
            count += 1;
            dst.receive_sync_message(&mut s_dst, SyncMessage::decode(&bytes)?)?;
            quiet = false;
        }
        if quiet {
            break;
        }
    }
    let elapsed = start.elapsed();
    ensure!(dst.get_heads() == src.get_heads(), "raw sync did not converge");
    Ok((elapsed, to_dst, to_src, count))
}

/// A sync frame's bytes on a stream: a 4-byte length, then the postcard frame.
fn request_len(frame: &Request) -> usize {
    sync::encode(frame).len() + 4
}

fn response_len(frame: &Response) -> usize {
    sync::encode(frame).len() + 4
}

#[derive(Default)]
struct Timings {
    sealed: Vec<Duration>,
    verify: Vec<Duration>,
    decrypt: Vec<Duration>,
    store: Vec<Duration>,
    chat_apply: Vec<Duration>,
    raw_frames: Vec<Duration>,
    raw_one: Vec<Duration>,
    raw_sync: Vec<Duration>,
    load: Vec<Duration>,
}

async fn sealed_vs_raw(h: &History, reps: usize, report: &mut Report) -> Result<()> {
    let frames = sync::into_frames(h.sealed.clone());
    let decoded: Vec<Envelope> = h
        .sealed
        .iter()
        .map(|b| Envelope::decode(b.clone()))
        .collect::<Result<_, _>>()?;
    let state = SpaceState::from_genesis(&decoded[0]).map_err(|e| anyhow!("genesis: {e}"))?;
    let key = state
        .unwrap_key(&h.reader)
        .context("the reader is not a member")?
        .map_err(|e| anyhow!("unwrap: {e}"))?;
    let doc_id = h.space.chat_shard(0);
    let content = &decoded[1..];
    let raw: Vec<Vec<u8>> = content
        .iter()
        .map(|e| e.open_content(&key))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow!("decrypt: {e}"))?;
    let changes = raw.len();
    // The same frame boundaries for every variant.
    let mut sizes: Vec<usize> = frames.iter().map(Vec::len).collect();
    sizes[0] -= 1; // the genesis
    let raw_frames = split(&raw, &sizes);
    let env_frames = split(&decoded, &frames.iter().map(Vec::len).collect::<Vec<_>>());
    let change_frames: Vec<Vec<Change>> = raw_frames
        .iter()
        .map(|f| {
            f.iter()
                .map(|b| Change::from_bytes(b.clone()))
                .collect::<Result<_, _>>()
        })
        .collect::<Result<_, _>>()?;

    // Byte counts.
    let raw_bytes: usize = raw.iter().map(Vec::len).sum();
    let sealed_bytes: usize = h.sealed.iter().map(Vec::len).sum();
    let mut vv = VersionVector::default();
    for e in &decoded {
        vv.advance(e.header().actor(), e.header().seq);
    }
    let ours = SpaceVv { space: h.space, vv };
    // On connect both sides offer: A names the space with its version vector, B
    // (which lacks the space) names nothing; each answers. Then A pushes every frame
    // once and B acks each with its new version vector.
    let author_cert = state
        .members
        .get(&h.author)
        .map(|m| m.cert)
        .context("the author is a member")?;
    let mut wire = request_len(&Request::Offer {
        cert: author_cert,
        spaces: vec![ours.clone()],
    }) + response_len(&Response::Offer {
        spaces: vec![SpaceVv {
            space: h.space,
            vv: VersionVector::default(),
        }],
    }) + request_len(&Request::Offer {
        cert: h.reader.cert(),
        spaces: vec![],
    }) + response_len(&Response::Offer {
        spaces: vec![ours.clone()],
    });
    for f in &frames {
        wire += request_len(&Request::Envelopes { envelopes: f.clone() });
        wire += response_len(&Response::Ack(Ack {
            stored: f.len() as u32,
            vv: vec![ours.clone()],
            ..Ack::default()
        }));
    }

    let (genesis_doc, _) = ChatDoc::genesis(&doc_id);
    let mut full = genesis_doc.clone();
    full.apply_changes(change_frames.iter().flatten().cloned())?;
    let saved = full.save();

    let mut t = Timings::default();
    let mut sync_bytes = (0, 0, 0);
    for rep in 0..reps {
        eprintln!("[bench]   rep {}/{reps}", rep + 1);
        t.sealed.push(sealed_ingest(h, &frames).await?);

        let copies = h.sealed.clone();
        let start = Instant::now();
        let envs: Vec<Envelope> = copies.into_iter().map(Envelope::decode).collect::<Result<_, _>>()?;
        t.verify.push(start.elapsed());
        black_box(envs);

        let start = Instant::now();
        for e in content {
            let plain = e.open_content(&key).map_err(|e| anyhow!("decrypt: {e}"))?;
            black_box(Change::from_bytes(plain)?);
        }
        t.decrypt.push(start.elapsed());

        let dir = disk_dir()?;
        let store = Store::open(dir.path())?;
        let start = Instant::now();
        let mut order = 0;
        for frame in &env_frames {
            let mut tx = store.begin()?;
            for e in frame {
                let hd = e.header();
                let new = NewEnvelope {
                    id: e.id(),
                    space: hd.space,
                    actor: hd.actor(),
                    seq: hd.seq,
                    bytes: e.as_bytes(),
                };
                tx.put_envelope(&new, order)?;
                order += 1;
            }
            tx.commit()?;
        }
        t.store.push(start.elapsed());
        drop(store);

        let input = change_frames.clone();
        let start = Instant::now();
        let mut chat = ChatDoc::new(doc_id);
        let mut shown = 0;
        for f in input {
            shown += chat.apply(f)?.len();
        }
        t.chat_apply.push(start.elapsed());
        ensure!(
            shown == h.messages,
            "ChatDoc::apply produced {shown} of {} messages",
            h.messages
        );

        let input = raw_frames.clone();
        let start = Instant::now();
        let mut doc = genesis_doc.clone();
        for f in input {
            let batch = f.into_iter().map(Change::from_bytes).collect::<Result<Vec<_>, _>>()?;
            doc.apply_changes(batch)?;
        }
        t.raw_frames.push(start.elapsed());
        ensure!(doc.get_heads() == full.get_heads());

        let input = raw.clone();
        let start = Instant::now();
        let mut doc = genesis_doc.clone();
        let batch = input
            .into_iter()
            .map(Change::from_bytes)
            .collect::<Result<Vec<_>, _>>()?;
        doc.apply_changes(batch)?;
        t.raw_one.push(start.elapsed());

        let (elapsed, to_dst, to_src, count) = raw_sync(&full, &genesis_doc)?;
        t.raw_sync.push(elapsed);
        sync_bytes = (to_dst, to_src, count);

        let start = Instant::now();
        black_box(automerge::Automerge::load(&saved)?);
        t.load.push(start.elapsed());
    }

    let m = h.messages as f64;
    let sec = format!(
        "sync, {} messages in {changes} changes ({:.1} per change), {} frames",
        h.messages,
        m / changes as f64,
        frames.len()
    );
    let s = sec.as_str();
    let k = if h.per_change == 1 { "single" } else { "batched" };
    let key = |name: &str| format!("{k}_{name}");
    let sealed = median(t.sealed);
    let verify = median(t.verify);
    let decrypt = median(t.decrypt);
    let store = median(t.store);
    let chat_apply = median(t.chat_apply);
    let raw_frames_t = median(t.raw_frames);
    let raw_one = median(t.raw_one);
    let raw_sync_t = median(t.raw_sync);
    let raw_wire = sync_bytes.0 + sync_bytes.1;

    report.add(
        s,
        &key("sealed_ingest"),
        "sealed: fresh core ingests all frames (verify, decrypt, check, store durably, apply)",
        ms(sealed),
        "ms",
    );
    report.add(
        s,
        &key("raw_apply"),
        "raw: Automerge parses + applies the same changes, same batches",
        ms(raw_frames_t),
        "ms",
    );
    report.add(
        s,
        &key("raw_apply_one"),
        "raw: … in one apply_changes call",
        ms(raw_one),
        "ms",
    );
    report.add(
        s,
        &key("raw_sync"),
        "raw: Automerge sync protocol, full doc → genesis-only doc",
        ms(raw_sync_t),
        "ms",
    );
    report
        .add(
            s,
            &key("ratio_time_apply"),
            "time sealed / raw apply",
            ms(sealed) / ms(raw_frames_t),
            "×",
        )
        .target(Target::AtMost(1.5));
    report
        .add(
            s,
            &key("ratio_time_sync"),
            "time sealed / raw sync protocol",
            ms(sealed) / ms(raw_sync_t),
            "×",
        )
        .target(Target::AtMost(1.5));
    let no_store = sealed.saturating_sub(store);
    report.add(
        s,
        &key("sealed_minus_store"),
        "sealed minus durable storage (measured apart)",
        ms(no_store),
        "ms",
    );
    report.add(
        s,
        &key("ratio_time_no_store"),
        "time (sealed − storage) / raw apply",
        ms(no_store) / ms(raw_frames_t),
        "×",
    );
    report.add(
        s,
        &key("part_verify"),
        "part: decode + verify signatures (all envelopes)",
        ms(verify),
        "ms",
    );
    report.add(
        s,
        &key("part_decrypt"),
        "part: decrypt + parse changes",
        ms(decrypt),
        "ms",
    );
    report.add(
        s,
        &key("part_store"),
        "part: durable redb writes, one commit per frame (2PC)",
        ms(store),
        "ms",
    );
    report.add(
        s,
        &key("part_chat_apply"),
        "part: ChatDoc::apply per frame (apply_changes + diff → new messages)",
        ms(chat_apply),
        "ms",
    );
    report.add(
        s,
        &key("part_rest"),
        "part: rest of the core (classify, indexes, events)",
        ms(sealed.saturating_sub(verify + decrypt + store + chat_apply)),
        "ms",
    );
    report.add(
        s,
        &key("sealed_per_msg"),
        "sealed ingest per message",
        sealed.as_secs_f64() * 1e6 / m,
        "µs",
    );
    report.add(
        s,
        &key("raw_per_msg"),
        "raw apply per message",
        raw_frames_t.as_secs_f64() * 1e6 / m,
        "µs",
    );
    report.add(
        s,
        &key("load"),
        "reference: Automerge::load of the saved doc (snapshot path)",
        ms(median(t.load)),
        "ms",
    );
    report.add(
        s,
        &key("bytes_raw_changes"),
        "raw change bytes per message",
        raw_bytes as f64 / m,
        "B",
    );
    report.add(
        s,
        &key("bytes_sealed"),
        "sealed envelope bytes per message",
        sealed_bytes as f64 / m,
        "B",
    );
    report.add(
        s,
        &key("bytes_sealed_wire"),
        "sealed sync on the wire (offers, frames, acks)",
        wire as f64,
        "B",
    );
    report.add(
        s,
        &key("bytes_raw_sync"),
        "raw sync on the wire (both ways)",
        raw_wire as f64,
        "B",
    );
    report.add(
        s,
        &key("raw_sync_msgs"),
        "raw sync messages exchanged",
        sync_bytes.2 as f64,
        "",
    );
    report
        .add(
            s,
            &key("ratio_bytes_sync"),
            "bytes sealed / raw sync protocol",
            wire as f64 / raw_wire as f64,
            "×",
        )
        .target(Target::AtMost(1.5));
    report.add(
        s,
        &key("ratio_bytes_changes"),
        "bytes sealed / raw changes",
        wire as f64 / raw_bytes as f64,
        "×",
    );
    Ok(())
}

/// Cost of one durable commit on this disk: what every group commit pays.
fn commit_cost(report: &mut Report) -> Result<()> {
    const TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("t");
    let dir = disk_dir()?;
    let db = redb::Database::create(dir.path().join("commit.redb"))?;
    let row = vec![7u8; 500];
    let sec = "storage: one durable redb commit (one 500-byte row)";
    for two_phase in [false, true] {
        let mut samples = Vec::with_capacity(200);
        for i in 0..200u64 {
            let start = Instant::now();
            let mut tx = db.begin_write()?;
            tx.set_two_phase_commit(two_phase);
            tx.open_table(TABLE)?.insert(i, row.as_slice())?;
            tx.commit()?;
            samples.push(start.elapsed());
        }
        samples.sort();
        let name = if two_phase {
            "2PC on (as the node's Store)"
        } else {
            "2PC off"
        };
        let k = if two_phase { "commit_2pc" } else { "commit" };
        report.add(
            sec,
            &format!("{k}_p50"),
            &format!("{name}, p50"),
            ms(quantile(&samples, 0.5)),
            "ms",
        );
        report.add(
            sec,
            &format!("{k}_p99"),
            &format!("{name}, p99"),
            ms(quantile(&samples, 0.99)),
            "ms",
        );
    }
    Ok(())
}

async fn sync_part(opts: &Opts, report: &mut Report) -> Result<()> {
    commit_cost(report)?;
    let mut shapes = vec![opts.per_change];
    if opts.per_change != 1 {
        shapes.push(1);
    }
    for per_change in shapes {
        eprintln!(
            "[bench] sync: building a history of {} messages, {per_change} per change",
            opts.history
        );
        let start = Instant::now();
        let h = build_history(opts.history, per_change).await?;
        eprintln!(
            "[bench]   built {} envelopes in {:.1} s",
            h.sealed.len(),
            start.elapsed().as_secs_f64()
        );
        sealed_vs_raw(&h, opts.reps, report).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------

async fn run(opts: &Opts, report: &mut Report) -> Result<()> {
    if opts.daemons {
        daemons(opts, report).await?;
    }
    if opts.sync {
        sync_part(opts, report).await?;
    }
    Ok(())
}

fn main() -> Result<()> {
    let Some(opts) = parse_opts()? else {
        return Ok(());
    };
    if cfg!(debug_assertions) {
        eprintln!("[bench] warning: not a release build; run with `cargo run --release --example bench`");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut report = Report::default();
    let started = Instant::now();
    let outcome = runtime.block_on(async {
        tokio::select! {
            r = run(&opts, &mut report) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        }
    });
    let date = today();
    let machine = machine();
    if opts.json {
        println!("{:#}", report.to_json(&machine, &opts, &date));
    } else {
        report.print_tables(&format!(
            "Outpost benchmark, {date}, {} CPUs ({}), {:.0} s",
            machine["cpus"],
            machine["cpu_model"].as_str().unwrap_or(""),
            started.elapsed().as_secs_f64()
        ));
    }
    outcome
}
