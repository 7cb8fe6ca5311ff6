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
//!    A chat change holds message skeletons only; each message's text travels in a
//!    sealed *body* envelope beside the change (`Kind::Body`). The sealed paths
//!    carry what a real peer gets, changes and bodies; the raw baseline applies
//!    and syncs the same changes, in which each message names its body by id where
//!    a plain Automerge chat would hold the text. So that the text is accounted
//!    for, the bench also rebuilds the history as a plain Automerge chat (the same
//!    changes, the text in place of the body id) and reports its bytes and its
//!    sync protocol beside the baseline, as a reference.
//!
//!    A fresh peer (one lacking at least half of a space) is no longer served
//!    envelope by envelope: the author's core answers its offer with the genesis,
//!    one snapshot envelope (the whole document sealed under the epoch key, made on
//!    first need, stored durably and then reused) and the few envelopes after it.
//!    The peer checks one signature per writer's last change, opens one AEAD and
//!    runs one Automerge `load` instead of verifying, decrypting and applying
//!    thousands of envelopes. That path carries the fresh-peer targets: the
//!    server's cost is reported apart (making the snapshot for the first fresh
//!    peer, serving the held one to later peers), and the ratio to Automerge's sync
//!    protocol counts server + client, as the raw protocol's time counts both
//!    sides. The envelope-by-envelope rows stay, without targets: sync still sends
//!    envelopes to peers lacking less than half (the incremental and live cases).
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
    collections::HashMap,
    hint::black_box,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail, ensure};
use automerge::{
    ReadDoc,
    sync::{Message as SyncMessage, State as SyncState, SyncDoc},
    transaction::Transactable,
};
use outpost_crdt::{
    Change,
    chat::{ChatDoc, NewMessage},
};
use outpost_node::{
    control::{self, SpaceState},
    core::{self, Event, MAX_LOG_LIMIT, read_body},
    envelope::{Envelope, Kind},
    identity::{DeviceCert, DeviceKeys},
    ids::{DeviceId, EnvelopeId, SpaceId},
    store::{NewEnvelope, Store, Txn},
    sync::{self, Ack, Request, Response, SpaceVv, VersionVector},
};
use tokio::sync::mpsc;

#[path = "support/chat.rs"]
mod chat;
#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/harness.rs"]
mod harness;
#[path = "support/measure.rs"]
mod measure;
use chat::{chat_text, create_room, send, watch_messages};
use daemon::{Daemon, connect, locate_outpost, start_mesh, warnings_note};
use harness::{print_notes, results_json, revision_and_cpus, until_interrupted, warn_if_debug};
use measure::{CpuMeter, available_cpus, busy_note, clock_ticks, machine, median, ms, quantile, rss_mib, today};

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

fn parse_opts() -> Result<Option<Opts>> {
    harness::parse(HELP, Opts::default(), |o, arg, args| {
        match arg {
            "--latency-messages" => o.latency_messages = args.value(arg)?,
            "--interval-ms" => o.interval = Duration::from_secs_f64(args.value::<f64>(arg)? / 1e3),
            "--serial" => o.serial = args.value(arg)?,
            "--messages" => o.messages = args.value(arg)?,
            "--clients" => o.clients = args.value::<usize>(arg)?.max(1),
            "--outpost" => o.outpost = Some(args.value(arg)?),
            "--history" => o.history = args.value::<usize>(arg)?.max(1),
            "--per-change" => o.per_change = args.value::<usize>(arg)?.max(1),
            "--reps" => o.reps = args.value::<usize>(arg)?.max(1),
            "--only" => match args.value::<String>(arg)?.as_str() {
                "daemons" => o.sync = false,
                "sync" => o.daemons = false,
                other => bail!("--only takes `daemons` or `sync`, not {other:?}"),
            },
            "--json" => o.json = true,
            "--keep" => o.keep = true,
            _ => return Ok(false),
        }
        Ok(true)
    })
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
        print_notes(&self.notes);
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
        results_json(date, machine, opts, rows.into(), &self.notes)
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

// ---------------------------------------------------------------------------
// Daemons

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

async fn daemons(opts: &Opts, report: &mut Report) -> Result<()> {
    let (bin, stale) = locate_outpost(opts.outpost.as_deref())?;
    if let Some(stale) = stale {
        report.note(stale);
    }
    let ticks = clock_ticks();
    // On the real disk (/tmp is ext4 here): fsync costs what it costs.
    let root = tempfile::Builder::new().prefix("outpost-bench-").tempdir()?;
    eprintln!("[bench] daemons: homes in {}", root.path().display());
    let mut nodes = start_mesh(&bin, root.path(), ["a", "b"])?;
    let result = run_daemons(opts, report, &bin, &mut nodes, ticks).await;
    for d in &nodes {
        if let Some(note) = warnings_note(d) {
            report.note(note);
        }
        if let Some(rss) = rss_mib(&d.pid().to_string()) {
            report.add(
                "daemons: resources",
                &format!("rss_{}", d.name),
                &format!("RSS of daemon {} at the end", d.name),
                rss,
                "MiB",
            );
        }
    }
    drop(nodes);
    if opts.keep {
        let path = root.keep();
        report.note(format!("daemon homes and logs kept in {}", path.display()));
    }
    result
}

async fn run_daemons(opts: &Opts, report: &mut Report, bin: &Path, nodes: &mut [Daemon; 2], ticks: f64) -> Result<()> {
    // Both APIs up, then connected to each other.
    let setup = connect(nodes, Duration::from_secs(20)).await?;
    eprintln!("[bench] daemons connected after {:.0} ms", ms(setup));
    let [a, b] = nodes;

    let space = create_room(bin, a, &[&*b], "bench", Duration::from_secs(20)).await?;
    let path = format!("/v1/chats/{space}/messages");

    // B's live event stream, time-stamped as it arrives.
    let (tx, mut arrivals) = mpsc::unbounded_channel();
    let lagged = Arc::new(AtomicU64::new(0));
    let reader = watch_messages(b, space, lagged.clone(), move |text, at| {
        tx.send((text.to_string(), at)).is_ok()
    })
    .await?;

    // Warm-up: connections, caches, first envelopes.
    for i in 0..20 {
        send(&a.client, &path, chat_text(&format!("warm-{i:03}"))).await?;
    }
    let warm = collect(&mut arrivals, "warm-", 20, Instant::now() + Duration::from_secs(30)).await;
    ensure!(warm.len() == 20, "only {} of 20 warm-up messages reached B", warm.len());

    let pair = Pair {
        a: &*a,
        b: &*b,
        space,
        path: path.clone(),
        ticks,
    };
    let fixed_load = format!("one send every {:.1} ms", ms(opts.interval));
    let first = LatencyRun {
        n: opts.latency_messages,
        tag: "lat-",
        key: "latency",
        section: format!("daemons: send → visible on B, {fixed_load}"),
    };
    latency(opts, report, &pair, &mut arrivals, &first).await?;
    serial(opts, report, a, &path, &mut arrivals).await?;
    throughput(opts, report, &pair, &mut arrivals).await?;
    let again = LatencyRun {
        n: (opts.latency_messages / 4).max(1).min(opts.latency_messages),
        tag: "late-",
        key: "latency_after",
        section: format!("daemons: send → visible on B again after the throughput run (bigger doc), {fixed_load}"),
    };
    latency(opts, report, &pair, &mut arrivals, &again).await?;
    reader.abort();
    let missed = lagged.load(Ordering::Relaxed);
    if missed > 0 {
        report.note(format!(
            "B's /v1/events stream reported `lagged`: {missed} events dropped by the daemon for this subscriber"
        ));
    }
    a.check_alive()?;
    b.check_alive()?;
    Ok(())
}

/// The two running daemons and the space they share.
struct Pair<'a> {
    a: &'a Daemon,
    b: &'a Daemon,
    space: SpaceId,
    path: String,
    ticks: f64,
}

/// One latency run: how many messages, their text tag, where the results go.
struct LatencyRun {
    n: usize,
    tag: &'static str,
    key: &'static str,
    section: String,
}

/// Send → visible on B at a fixed offered load (open loop: a slow send does not
/// delay the next one).
async fn latency(
    opts: &Opts,
    report: &mut Report,
    pair: &Pair<'_>,
    arrivals: &mut Arrivals,
    run: &LatencyRun,
) -> Result<()> {
    let (a, b, path, ticks, n) = (pair.a, pair.b, pair.path.as_str(), pair.ticks, run.n);
    if n == 0 {
        return Ok(());
    }
    let doc = pair.a.envelopes(pair.space).await;
    eprintln!(
        "[bench] latency: {n} messages, one every {:.1} ms ({doc} envelopes in the space)",
        ms(opts.interval)
    );
    let cpu = CpuMeter::start(vec![a.pid().to_string(), b.pid().to_string()], ticks);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        tokio::time::sleep_until((start + opts.interval * i as u32).into()).await;
        let client = a.client.clone();
        let path = path.to_string();
        let tag = run.tag;
        tasks.spawn(async move {
            let text = chat_text(&format!("{tag}{i:06}"));
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
    let seen = collect(arrivals, run.tag, n - failed, last + Duration::from_secs(30)).await;
    let used = cpu.stop();
    let mut visible: Vec<Duration> = sent
        .iter()
        .filter_map(|(text, t0, _, _)| seen.get(text).map(|at| at.saturating_duration_since(*t0)))
        .collect();
    let mut acked: Vec<Duration> = sent.iter().filter(|s| s.3).map(|s| s.2 - s.1).collect();
    visible.sort();
    acked.sort();
    let sec = run.section.as_str();
    report.add(
        sec,
        &format!("{}_offered", run.key),
        "offered load (achieved)",
        n as f64 / offered_for.as_secs_f64(),
        "msgs/s",
    );
    report
        .add(
            sec,
            &format!("{}_p50", run.key),
            "send → visible on B, p50",
            ms(quantile(&visible, 0.5)),
            "ms",
        )
        .target(Target::AtMost(10.0));
    report.add(
        sec,
        &format!("{}_p90", run.key),
        "send → visible on B, p90",
        ms(quantile(&visible, 0.9)),
        "ms",
    );
    report
        .add(
            sec,
            &format!("{}_p99", run.key),
            "send → visible on B, p99",
            ms(quantile(&visible, 0.99)),
            "ms",
        )
        .target(Target::AtMost(50.0));
    report.add(
        sec,
        &format!("{}_max", run.key),
        "send → visible on B, max",
        ms(quantile(&visible, 1.0)),
        "ms",
    );
    report.add(
        sec,
        &format!("{}_ack_p50", run.key),
        "send → acknowledged by A (durable), p50",
        ms(quantile(&acked, 0.5)),
        "ms",
    );
    report.add(
        sec,
        &format!("{}_ack_p99", run.key),
        "send → acknowledged by A (durable), p99",
        ms(quantile(&acked, 0.99)),
        "ms",
    );
    report.add(
        sec,
        &format!("{}_cpu_a", run.key),
        "CPU of daemon A per message (incl. its idle work)",
        used.ours[0] / n as f64 * 1e6,
        "µs/msg",
    );
    report.add(
        sec,
        &format!("{}_cpu_b", run.key),
        "CPU of daemon B per message (incl. its idle work)",
        used.ours[1] / n as f64 * 1e6,
        "µs/msg",
    );
    report.add(
        sec,
        &format!("{}_noise", run.key),
        "CPU used by other processes meanwhile (noise)",
        used.others_pct,
        "%",
    );
    let missing = n - visible.len();
    report.add(
        sec,
        &format!("{}_missing", run.key),
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
        send(&a.client, path, chat_text(&format!("ser-{i:06}"))).await?;
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
async fn throughput(opts: &Opts, report: &mut Report, pair: &Pair<'_>, arrivals: &mut Arrivals) -> Result<()> {
    let (a, b, space, path, ticks) = (pair.a, pair.b, pair.space, pair.path.as_str(), pair.ticks);
    let n = opts.messages;
    if n == 0 {
        return Ok(());
    }
    eprintln!(
        "[bench] throughput: {n} messages from {} concurrent clients",
        opts.clients
    );
    let envelopes_before = a.envelopes(space).await;
    let cpu = CpuMeter::start(vec![a.pid().to_string(), b.pid().to_string(), "self".into()], ticks);
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
                match send(&client, &path, chat_text(&format!("tp-{i:07}"))).await {
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
    // Done on B = B stores every envelope A has (status, polled every 20 ms); its
    // event stream should show the messages at the same moment.
    let envelopes_after = a.envelopes(space).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut stored_at = None;
    while Instant::now() < deadline {
        if b.envelopes(space).await >= envelopes_after {
            stored_at = Some(start.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let grace = if stored_at.is_some() { 3 } else { 0 };
    let seen = collect(arrivals, "tp-", want, Instant::now() + Duration::from_secs(grace)).await;
    let cpu_all = cpu.stop();
    let shown_at = (seen.len() == want)
        .then(|| seen.values().max().map(|t| t.saturating_duration_since(start)))
        .flatten();
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
    match shown_at.or(stored_at) {
        Some(e2e) => {
            report
                .add(
                    sec,
                    "tp_e2e_rate",
                    "end to end: all stored and shown on B",
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
        }
        None => {
            report
                .add(
                    sec,
                    "tp_e2e_rate",
                    "end to end: B incomplete after 120 s",
                    0.0,
                    "msgs/s",
                )
                .target(Target::AtLeast(5000.0));
        }
    }
    if seen.len() < want {
        report.add(
            sec,
            "tp_events_lost",
            "messages B stored but its /v1/events stream never showed",
            (want - seen.len()) as f64,
            "msgs",
        );
        report.note(format!(
            "throughput: B's event stream showed {} of {want} messages although B stored every envelope \
             ({}); the end-to-end time is when B's status showed them all stored",
            seen.len(),
            if stored_at.is_some() {
                "status agrees with A"
            } else {
                "B never caught up"
            },
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
    report.add(sec, "tp_cpu_a", "CPU of daemon A", per_msg(cpu_all.ours[0]), "µs/msg");
    report.add(sec, "tp_cpu_b", "CPU of daemon B", per_msg(cpu_all.ours[1]), "µs/msg");
    report.add(
        sec,
        "tp_cpu_bench",
        "CPU of the bench clients",
        per_msg(cpu_all.ours[2]),
        "µs/msg",
    );
    report.add(
        sec,
        "tp_cpu_busy",
        "CPU busy while sending (A+B+bench, of 2 cores)",
        (cpu_acked.ours.iter().sum::<f64>()) / acked_at.as_secs_f64() * 100.0 / available_cpus(),
        "%",
    );
    report.add(
        sec,
        "tp_noise",
        "CPU used by other processes meanwhile (noise)",
        cpu_all.others_pct,
        "%",
    );
    if failed > 0 {
        report.note(format!("throughput run: {failed} sends failed"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Sealed vs raw sync, in-process

/// A history built by a real core: sealed envelopes in the order it stored them,
/// and the author core's home, kept so the author can serve the history again.
struct History {
    per_change: usize,
    messages: usize,
    space: SpaceId,
    author: DeviceId,
    author_keys: Arc<DeviceKeys>,
    /// The author core's home (stopped; scratch, tmpfs when there is one): copy it
    /// before starting a core on it, so every run starts from the same store.
    dir: tempfile::TempDir,
    reader: Arc<DeviceKeys>,
    /// What a real peer gets, in the order the core stored and pushed it
    /// (`Event::Stored`): the genesis first, then each content envelope (one
    /// Automerge change, in topological order) followed by its chat bodies (one
    /// [`Kind::Body`] envelope per message, holding its text).
    sealed: Vec<Vec<u8>>,
}

/// A history's envelopes told apart by their header's kind, as a peer's ingest
/// tells them apart: the i-th entry is the position in `sealed` of the content
/// envelope carrying the i-th Automerge change; the envelopes after it up to the
/// next change are its bodies. One more entry, `sealed.len()`, closes the last.
fn change_positions(decoded: &[Envelope]) -> Result<Vec<usize>> {
    ensure!(
        decoded.first().is_some_and(|g| g.header().kind == Kind::Control),
        "a history starts with its genesis"
    );
    let mut at = Vec::new();
    for (i, e) in decoded.iter().enumerate().skip(1) {
        let h = e.header();
        match h.kind {
            Kind::Content => at.push(i),
            Kind::Body => {
                // A body names the change it rides with: same writer and seq.
                let change = at.last().map(|&c| decoded[c].header());
                ensure!(
                    change.is_some_and(|c| c.actor() == h.actor() && c.seq == h.seq),
                    "envelope {i} is a body that does not follow its change"
                );
            }
            other => bail!("envelope {i} is a {other:?} envelope; the bench expects changes and bodies only"),
        }
    }
    at.push(decoded.len());
    Ok(at)
}

/// How many content envelopes (Automerge changes) each frame holds.
fn changes_per_frame(frames: &[Vec<Vec<u8>>]) -> Result<Vec<usize>> {
    frames
        .iter()
        .map(|f| {
            f.iter().try_fold(0, |n, b| {
                let e = Envelope::decode(b.clone()).map_err(|e| anyhow!("history envelope: {e}"))?;
                Ok(n + usize::from(e.header().kind == Kind::Content))
            })
        })
        .collect()
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
        .create_chat(
            "bench".into(),
            control::History::Shared,
            vec![reader.cert().to_card()],
            vec![],
        )
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
        let sends = (i..i + wave).map(|k| core.send(space, chat_text(&format!("msg-{k:07}")), None));
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
        author_keys,
        dir,
        reader,
        sealed,
    })
}

/// Copies a directory's files (recursively) into `to`.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
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

/// A fresh core ingesting frames one after the other, as sync delivers them. The
/// `before` frames are ingested first, untimed; the `timed` ones are measured.
async fn sealed_ingest(h: &History, before: &[Vec<Vec<u8>>], timed: &[Vec<Vec<u8>>]) -> Result<Duration> {
    let dir = disk_dir()?;
    let (core, thread) = core::spawn(dir.path().to_path_buf(), h.reader.clone())?;
    let mut stored = 0usize;
    let mut elapsed = Duration::ZERO;
    for (frames, measure) in [(before, false), (timed, true)] {
        let input = frames.to_vec();
        let start = Instant::now();
        for frame in input {
            let ack = core.ingest(h.author, frame).await?;
            ensure!(
                ack.rejected == 0 && ack.pending == 0,
                "ingest refused envelopes: {ack:?}"
            );
            stored += ack.stored as usize;
        }
        if measure {
            elapsed = start.elapsed();
        }
    }
    let given: usize = before.iter().chain(timed).map(Vec::len).sum();
    ensure!(stored == given, "stored {stored} of {given} envelopes");
    if given == h.sealed.len() {
        ensure_all_shown(&core, h, "the ingesting core").await?;
    }
    stop_core(core, thread).await;
    Ok(elapsed)
}

/// What one run of Automerge's sync protocol cost.
#[derive(Debug, Default, Clone, Copy)]
struct RawSync {
    time: Duration,
    /// Bytes both ways, each message with a 4-byte length prefix (as our frames).
    bytes: usize,
    messages: usize,
}

/// Automerge's own sync protocol between a doc holding the history and one holding
/// part of it (or only the genesis), fresh sync states on both sides.
fn raw_sync(source: &automerge::Automerge, behind: &automerge::Automerge) -> Result<RawSync> {
    let mut src = source.clone();
    let mut dst = behind.clone();
    let (mut s_src, mut s_dst) = (SyncState::new(), SyncState::new());
    let mut out = RawSync::default();
    let start = Instant::now();
    loop {
        let mut quiet = true;
        if let Some(m) = dst.generate_sync_message(&mut s_dst) {
            let bytes = m.encode();
            out.bytes += bytes.len() + 4;
            out.messages += 1;
            src.receive_sync_message(&mut s_src, SyncMessage::decode(&bytes)?)?;
            quiet = false;
        }
        if let Some(m) = src.generate_sync_message(&mut s_src) {
            let bytes = m.encode();
            out.bytes += bytes.len() + 4;
            out.messages += 1;
            dst.receive_sync_message(&mut s_dst, SyncMessage::decode(&bytes)?)?;
            quiet = false;
        }
        if quiet {
            break;
        }
    }
    out.time = start.elapsed();
    ensure!(dst.get_heads() == src.get_heads(), "raw sync did not converge");
    Ok(out)
}

/// A sync frame's bytes on a stream: a 4-byte length, then the postcard frame.
fn request_len(frame: &Request) -> usize {
    sync::encode(frame).len() + 4
}

fn response_len(frame: &Response) -> usize {
    sync::encode(frame).len() + 4
}

/// Bytes of a sealed sync session: on connect both sides offer and answer (A names
/// the space with its version vector; B names it with what it holds, if anything),
/// then A pushes `frames` once and B acks each: with the acks B actually sent when
/// given, else with an ack naming A's full version vector.
fn sealed_wire(
    h: &History,
    author: DeviceCert,
    full: &SpaceVv,
    theirs: &SpaceVv,
    frames: &[Vec<Vec<u8>>],
    acks: Option<&[Ack]>,
) -> usize {
    let mut wire = request_len(&Request::Offer {
        cert: Box::new(author),
        spaces: vec![full.clone()],
    }) + response_len(&Response::Offer {
        spaces: vec![theirs.clone()],
    }) + request_len(&Request::Offer {
        cert: Box::new(h.reader.cert()),
        spaces: if theirs.vv.0.is_empty() {
            vec![]
        } else {
            vec![theirs.clone()]
        },
    }) + response_len(&Response::Offer {
        spaces: vec![full.clone()],
    });
    for (i, f) in frames.iter().enumerate() {
        // As the node pushes them: packed, shared header fields once per group.
        let envelopes: Vec<Envelope> = f
            .iter()
            .map(|b| Envelope::decode(b.clone()).expect("history envelopes decode"))
            .collect();
        wire += request_len(&Request::Packed {
            groups: sync::pack(&envelopes),
        });
        wire += match acks.and_then(|a| a.get(i)) {
            Some(ack) => response_len(&Response::Ack(ack.clone())),
            None => response_len(&Response::Ack(Ack {
                stored: f.len() as u32,
                vv: vec![full.clone()],
                ..Ack::default()
            })),
        };
    }
    wire
}

/// One fresh peer synced the way the node does it now: the author's core serves
/// the genesis, one snapshot and any envelopes after it; a fresh core ingests them,
/// then asks for the chat bodies the snapshot's messages name (a snapshot holds
/// the skeletons only), as the network does after a frame that stored something.
struct SnapshotSync {
    /// `take_offer` for the first fresh peer: makes, seals and durably stores the
    /// snapshot, then reads what follows it.
    serve_first: Duration,
    /// `take_offer` for a later fresh peer: the held snapshot is served again.
    serve_held: Duration,
    /// The fresh core ingesting the push, frame by frame.
    ingest: Duration,
    /// The server answering the client's `Request::Bodies` (`sides_for`).
    bodies_server: Duration,
    /// The client listing the bodies it lacks (`wanted_for`) and ingesting the
    /// answers.
    bodies_client: Duration,
    /// `Request::Bodies` sent (one per space and round).
    body_requests: usize,
    bodies: usize,
    /// Bytes on the wire: offers, packed frames, the acks the client sent, the
    /// bodies asked for and their answers.
    wire: usize,
    /// Of `wire`: the bodies' requests and answers.
    bodies_wire: usize,
    frames: usize,
    envelopes: usize,
    snapshot_bytes: usize,
}

/// The snapshot envelopes among `push`, decoded.
fn snapshots_in(push: &[Vec<u8>]) -> Result<Vec<Envelope>> {
    let mut out = Vec::new();
    for bytes in push {
        let env = Envelope::decode(bytes.clone()).map_err(|e| anyhow!("pushed envelope: {e}"))?;
        if env.header().kind == Kind::Snapshot {
            out.push(env);
        }
    }
    Ok(out)
}

/// The real fresh-peer path: the author core (on a copy of its home on the real
/// disk, so every rep starts without a snapshot and the snapshot's commit pays for
/// fsync) takes an empty offer from the reader twice, then a fresh reader core on
/// the real disk ingests what the first offer pushed and fetches the bodies from
/// the author core, until it lacks none.
async fn snapshot_sync(h: &History, author_cert: DeviceCert, full: &SpaceVv) -> Result<SnapshotSync> {
    let empty = SpaceVv {
        space: h.space,
        vv: VersionVector::default(),
    };
    let reader = h.reader.device_id();

    let server_dir = disk_dir()?;
    copy_dir(h.dir.path(), server_dir.path())?;
    let (server, server_thread) = core::spawn(server_dir.path().to_path_buf(), h.author_keys.clone())?;
    let start = Instant::now();
    let first = server.take_offer(reader, vec![empty.clone()]).await?;
    let serve_first = start.elapsed();
    // Another fresh peer (the same device with an empty vector: what the server
    // pushes depends only on the vector offered).
    let start = Instant::now();
    let again = server.take_offer(reader, vec![empty.clone()]).await?;
    let serve_held = start.elapsed();

    let snaps = snapshots_in(&first.push)?;
    ensure!(
        snaps.len() == 1,
        "the first fresh peer got {} snapshot envelopes, not 1 ({} envelopes pushed)",
        snaps.len(),
        first.push.len()
    );
    let held = snapshots_in(&again.push)?;
    ensure!(
        held.len() == 1 && held[0].id() == snaps[0].id(),
        "a later fresh peer did not get the held snapshot ({} snapshot envelopes)",
        held.len()
    );
    ensure!(
        again.push.len() == first.push.len(),
        "later fresh peer got {} envelopes, the first {}",
        again.push.len(),
        first.push.len()
    );
    let snapshot_bytes = snaps[0].as_bytes().len();
    let envelopes = first.push.len();

    let frames = sync::into_frames(first.push);
    let dir = disk_dir()?;
    let (core, thread) = core::spawn(dir.path().to_path_buf(), h.reader.clone())?;
    let input = frames.clone();
    let mut acks = Vec::with_capacity(frames.len());
    let start = Instant::now();
    for frame in input {
        acks.push(core.ingest(h.author, frame).await?);
    }
    let ingest = start.elapsed();
    for ack in &acks {
        ensure!(
            ack.rejected == 0 && ack.pending == 0,
            "snapshot ingest refused envelopes: {ack:?}"
        );
    }
    let stored: usize = acks.iter().map(|a| a.stored as usize).sum();
    ensure!(stored == envelopes, "stored {stored} of {envelopes} pushed envelopes");

    // The bodies, as the network pulls them (`pull_bodies`): the client lists
    // what it lacks, asks the server, ingests the answer (and asks again at once
    // when the answer said more was held than fit), until it lacks none.
    let (mut bodies_server, mut bodies_client) = (Duration::ZERO, Duration::ZERO);
    let (mut body_requests, mut bodies, mut bodies_wire) = (0, 0, 0);
    loop {
        let start = Instant::now();
        let wanted = core.wanted_for(h.author).await?;
        bodies_client += start.elapsed();
        if wanted.is_empty() {
            break;
        }
        ensure!(body_requests <= h.messages, "the client keeps asking for bodies");
        for (space, ids) in wanted {
            body_requests += 1;
            bodies_wire += request_len(&Request::Bodies {
                space,
                ids: ids.clone(),
            });
            let start = Instant::now();
            let (envelopes, more) = server.sides_for(reader, space, ids).await?;
            bodies_server += start.elapsed();
            ensure!(!envelopes.is_empty(), "the author holds none of the bodies asked for");
            bodies_wire += response_len(&Response::Sides {
                space,
                envelopes: envelopes.clone(),
                more,
            });
            let start = Instant::now();
            let ack = core.ingest(h.author, envelopes).await?;
            if more {
                core.ask_again(space).await;
            }
            bodies_client += start.elapsed();
            ensure!(
                ack.rejected == 0 && ack.pending == 0,
                "body ingest refused envelopes: {ack:?}"
            );
            bodies += ack.stored as usize;
        }
    }
    stop_core(server, server_thread).await;
    drop(server_dir);
    ensure_all_shown(&core, h, "the core that ingested the snapshot").await?;
    stop_core(core, thread).await;

    Ok(SnapshotSync {
        serve_first,
        serve_held,
        ingest,
        bodies_server,
        bodies_client,
        body_requests,
        bodies,
        wire: sealed_wire(h, author_cert, full, &empty, &frames, Some(&acks)) + bodies_wire,
        bodies_wire,
        frames: frames.len(),
        envelopes,
        snapshot_bytes,
    })
}

/// Checks that `core` shows every message of the history, each with its text
/// (its body arrived).
async fn ensure_all_shown(core: &core::CoreHandle, h: &History, who: &str) -> Result<()> {
    let shown = core.messages(h.space, MAX_LOG_LIMIT).await?;
    ensure!(
        shown.len() == h.messages,
        "{who} shows {} of {} messages",
        shown.len(),
        h.messages
    );
    let missing = shown.iter().filter(|m| m.missing || m.text.is_empty()).count();
    ensure!(missing == 0, "{who} lacks the text of {missing} messages");
    Ok(())
}

fn vv_of(space: SpaceId, envelopes: &[Envelope]) -> SpaceVv {
    let mut vv = VersionVector::default();
    for e in envelopes {
        vv.advance(e.header().actor(), e.header().seq);
    }
    SpaceVv { space, vv }
}

/// Parses every frame's change bytes and applies each frame with one call.
fn raw_apply(doc: &mut automerge::Automerge, frames: Vec<Vec<Vec<u8>>>) -> Result<()> {
    for f in frames {
        let batch = f.into_iter().map(Change::from_bytes).collect::<Result<Vec<_>, _>>()?;
        doc.apply_changes(batch)?;
    }
    Ok(())
}

/// Stores a body as ingest does (`ingest_side`): the reads it makes first (held
/// already? deleted by a tombstone that came first? how many sides its change
/// has?), then the write into `sides-1` (and `sides-of-1`). `id` and `seq` are
/// the body's own, or others to store copies.
fn store_body(tx: &mut Txn, space: &SpaceId, id: EnvelopeId, seq: u64, body: &Envelope) -> Result<()> {
    let actor = body.header().actor();
    black_box(tx.side(space, &id)?);
    black_box(tx.tombstones(space, &id)?);
    black_box(tx.sides_of_count(space, &actor, seq)?);
    tx.put_side(space, &actor, seq, &id, body.as_bytes())?;
    Ok(())
}

/// The reference for what the bodies carry: the history as a plain Automerge chat
/// would write it, its text inside its changes. Each change of the history is
/// made again from the same genesis, by the same actor at the same time, with
/// the same messages, each holding its text (`texts`, by body id) where the
/// skeleton names its body.
fn plain_chat(
    genesis: &automerge::Automerge,
    rules: &ChatDoc,
    changes: &[Change],
    texts: &HashMap<String, String>,
) -> Result<automerge::Automerge> {
    let mut doc = genesis.clone();
    let messages = match doc.get(automerge::ROOT, "messages")? {
        Some((_, id)) => id,
        None => bail!("the chat doc has no messages map"),
    };
    for c in changes {
        let checked = rules
            .validate(c.clone(), &bench_author())
            .map_err(|v| anyhow!("chat rules: {v}"))?;
        doc.set_actor(c.actor_id().clone());
        let mut tx = doc.transaction();
        for m in checked.created() {
            let text = texts
                .get(&m.body)
                .context("a message whose body is not in the history")?;
            let entry = tx.put_object(&messages, m.id.as_str(), automerge::ObjType::Map)?;
            tx.put(&entry, "text", text.as_str())?;
            tx.put(&entry, "sent_at", automerge::ScalarValue::Timestamp(m.sent_at_ms))?;
        }
        tx.commit_with(automerge::transaction::CommitOptions::default().with_time(c.timestamp()));
    }
    Ok(doc)
}

#[derive(Default)]
struct Timings {
    snap_first: Vec<Duration>,
    snap_held: Vec<Duration>,
    snap_client: Vec<Duration>,
    snap_bodies_server: Vec<Duration>,
    snap_bodies_client: Vec<Duration>,
    sealed: Vec<Duration>,
    verify: Vec<Duration>,
    decrypt: Vec<Duration>,
    validate: Vec<Duration>,
    store: Vec<Duration>,
    chat_apply: Vec<Duration>,
    raw_frames: Vec<Duration>,
    raw_one: Vec<Duration>,
    raw_patches: Vec<Duration>,
    raw_sync: Vec<Duration>,
    plain_sync: Vec<Duration>,
    load: Vec<Duration>,
    inc_sealed: Vec<Duration>,
    inc_raw: Vec<Duration>,
    inc_sync: Vec<Duration>,
    live_sealed: Vec<Duration>,
    live_chat: Vec<Duration>,
    live_raw: Vec<Duration>,
    live_patches: Vec<Duration>,
    post: Vec<Duration>,
    raw_commit: Vec<Duration>,
    store_one: Vec<Duration>,
}

/// Local posts timed on the live-receive doc.
const POSTS: usize = 50;

/// Changes received one per frame in the live-receive case.
const LIVE_CHANGES: usize = 200;

/// Share of the history the incremental case's receiver already holds.
const INCREMENTAL_HELD: f64 = 0.8;

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
    let author_cert = state
        .members
        .get(&h.author)
        .map(|m| m.cert)
        .context("the author is a member")?;
    let doc_id = h.space.chat_shard(0);
    // Told apart as ingest tells them: content envelopes carry the Automerge
    // changes, body envelopes the messages' text beside them.
    let at = change_positions(&decoded)?;
    let changes = at.len() - 1;
    let raw: Vec<Vec<u8>> = at[..changes]
        .iter()
        .map(|&i| decoded[i].open_content(&key))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow!("decrypt: {e}"))?;
    let bodies: Vec<&Envelope> = decoded.iter().filter(|e| e.header().kind == Kind::Body).collect();
    ensure!(
        bodies.len() == h.messages,
        "{} bodies for {} messages",
        bodies.len(),
        h.messages
    );
    // Each body's text, by the body's id (what a skeleton names).
    let texts: HashMap<String, String> = bodies
        .iter()
        .map(|e| {
            let (text, _) = read_body(e, &key).context("a body that does not open")?;
            Ok((e.id().to_string(), text))
        })
        .collect::<Result<_>>()?;
    // The same frame boundaries for every variant: the raw ones hold the changes
    // of each sealed frame (its bodies have no raw counterpart; see `plain_chat`).
    let raw_frames = split(&raw, &changes_per_frame(&frames)?);
    let env_frames = split(&decoded, &frames.iter().map(Vec::len).collect::<Vec<_>>());
    let change_frames: Vec<Vec<Change>> = raw_frames
        .iter()
        .map(|f| {
            f.iter()
                .map(|b| Change::from_bytes(b.clone()))
                .collect::<Result<_, _>>()
        })
        .collect::<Result<_, _>>()?;

    // Incremental: the receiver holds the first 80% of the changes, with their
    // bodies.
    let held = ((changes as f64 * INCREMENTAL_HELD) as usize).clamp(1, changes.saturating_sub(1).max(1));
    let inc_before = sync::into_frames(h.sealed[..at[held]].to_vec());
    let inc_frames = sync::into_frames(h.sealed[at[held]..].to_vec());
    let inc_raw_frames = split(&raw[held..], &changes_per_frame(&inc_frames)?);

    // Bytes.
    let raw_bytes: usize = raw.iter().map(Vec::len).sum();
    let sealed_bytes: usize = h.sealed.iter().map(Vec::len).sum();
    let body_bytes: usize = bodies.iter().map(|e| e.as_bytes().len()).sum();
    let text_bytes: usize = texts.values().map(String::len).sum();
    let full_vv = vv_of(h.space, &decoded);
    let empty_vv = SpaceVv {
        space: h.space,
        vv: VersionVector::default(),
    };
    let wire = sealed_wire(h, author_cert, &full_vv, &empty_vv, &frames, None);
    let inc_wire = sealed_wire(
        h,
        author_cert,
        &full_vv,
        &vv_of(h.space, &decoded[..at[held]]),
        &inc_frames,
        None,
    );
    let inc_raw_bytes: usize = raw[held..].iter().map(Vec::len).sum();
    let inc_body_bytes: usize = h.sealed[at[held]..]
        .iter()
        .zip(&decoded[at[held]..])
        .filter(|(_, e)| e.header().kind == Kind::Body)
        .map(|(b, _)| b.len())
        .sum();

    let (genesis_doc, _) = ChatDoc::genesis(&doc_id);
    let mut full = genesis_doc.clone();
    full.apply_changes(change_frames.iter().flatten().cloned())?;
    let saved = full.save();
    let mut partial = genesis_doc.clone();
    raw_apply(&mut partial, vec![raw[..held].to_vec()])?;
    let all_changes: Vec<Change> = change_frames.iter().flatten().cloned().collect();

    // The reference for the text the bodies carry: the same history as a plain
    // Automerge chat, the text inside its changes.
    let plain = plain_chat(&genesis_doc, &ChatDoc::new(doc_id), &all_changes, &texts)?;
    let plain_changes = plain.get_changes(&genesis_doc.get_heads());
    ensure!(
        plain_changes.len() == changes,
        "the plain chat has another number of changes"
    );
    let plain_bytes: usize = plain_changes.iter().map(|c| c.raw_bytes().len()).sum();
    let mut plain_partial = genesis_doc.clone();
    plain_partial.apply_changes(plain_changes[..held].to_vec())?;
    let plain_inc_bytes: usize = plain_changes[held..].iter().map(|c| c.raw_bytes().len()).sum();

    // Live receive: the doc holds all but the last few changes, which then arrive
    // one per frame with their bodies (as the push carrying each change), each
    // its own ingest call and durable commit.
    let live = LIVE_CHANGES.min(changes / 5).max(1);
    let live_held = changes - live;
    let live_before = sync::into_frames(h.sealed[..at[live_held]].to_vec());
    let live_frames: Vec<Vec<Vec<u8>>> = (live_held..changes)
        .map(|i| h.sealed[at[i]..at[i + 1]].to_vec())
        .collect();
    let mut live_doc = genesis_doc.clone();
    live_doc.apply_changes(all_changes[..live_held].to_vec())?;
    let live_msgs = {
        let mut chat = ChatDoc::new(doc_id);
        let before = chat.apply(all_changes[..live_held].to_vec(), &bench_author())?.len();
        h.messages - before
    };
    let cpu = CpuMeter::start(vec!["self".into()], clock_ticks());

    let mut t = Timings::default();
    let mut sync_full = RawSync::default();
    let mut sync_inc = RawSync::default();
    let mut plain_full = RawSync::default();
    let mut plain_inc = RawSync::default();
    let mut snap = None;
    for rep in 0..reps {
        eprintln!("[bench]   rep {}/{reps}", rep + 1);
        let run = snapshot_sync(h, author_cert, &full_vv).await?;
        t.snap_first.push(run.serve_first);
        t.snap_held.push(run.serve_held);
        t.snap_client.push(run.ingest);
        t.snap_bodies_server.push(run.bodies_server);
        t.snap_bodies_client.push(run.bodies_client);
        snap = Some(run);
        t.sealed.push(sealed_ingest(h, &[], &frames).await?);
        t.inc_sealed.push(sealed_ingest(h, &inc_before, &inc_frames).await?);

        // As the node does: each frame decoded and batch-verified at once.
        let copies = frames.clone();
        let start = Instant::now();
        let envs: Vec<Envelope> = copies
            .into_iter()
            .flat_map(Envelope::decode_all)
            .collect::<Result<_, _>>()?;
        t.verify.push(start.elapsed());
        black_box(envs);

        let start = Instant::now();
        for e in &decoded[1..] {
            if e.header().kind == Kind::Body {
                // Ingest opens a body twice: when it stores it (`record_file`:
                // does it name a file?) and when it announces its message.
                for _ in 0..2 {
                    black_box(read_body(e, &key).context("a body that does not open")?);
                }
            } else {
                let plain = e.open_content(&key).map_err(|e| anyhow!("decrypt: {e}"))?;
                black_box(Change::from_bytes(plain)?);
            }
        }
        t.decrypt.push(start.elapsed());

        // The rules check also reads the messages each change creates.
        let rules = ChatDoc::new(doc_id);
        let owned = change_frames.clone();
        let start = Instant::now();
        let mut checked_frames = Vec::with_capacity(owned.len());
        for frame in owned {
            let checked = frame
                .into_iter()
                .map(|c| {
                    rules
                        .validate(c, &bench_author())
                        .map_err(|v| anyhow!("chat rules: {v}"))
                })
                .collect::<Result<Vec<_>>>()?;
            checked_frames.push(checked);
        }
        t.validate.push(start.elapsed());

        let dir = disk_dir()?;
        let store = Store::open(dir.path())?;
        let start = Instant::now();
        let mut order = 0;
        for frame in &env_frames {
            // As the node does: one transaction per frame; bodies beside the log
            // (`sides-1`), the log's envelopes together, each table opened once.
            let mut tx = store.begin()?;
            for e in frame.iter().filter(|e| e.header().kind == Kind::Body) {
                store_body(&mut tx, &h.space, e.id(), e.header().seq, e)?;
            }
            let rows: Vec<(NewEnvelope<'_>, u64)> = frame
                .iter()
                .filter(|e| e.header().kind != Kind::Body)
                .map(|e| {
                    let hd = e.header();
                    order += 1;
                    let new = NewEnvelope {
                        id: e.id(),
                        space: hd.space,
                        actor: hd.actor(),
                        seq: hd.seq,
                        doc: Some(hd.doc),
                        bytes: e.as_bytes(),
                    };
                    (new, order - 1)
                })
                .collect();
            tx.put_envelopes(rows.iter().map(|(e, o)| (e, *o)))?;
            tx.commit()?;
        }
        t.store.push(start.elapsed());
        // One more change per durable commit (its envelope and its bodies), into
        // the now full store: what a live receive pays for storage.
        let last = &decoded[at[changes - 1]];
        let last_bodies = &decoded[at[changes - 1] + 1..];
        let start = Instant::now();
        for i in 0..POSTS {
            let fresh = |mut id: EnvelopeId| {
                id.0[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
                id
            };
            let id = fresh(last.id());
            let seq = last.header().seq + 1 + i as u64;
            let mut tx = store.begin()?;
            for b in last_bodies {
                store_body(&mut tx, &h.space, fresh(b.id()), seq, b)?;
            }
            tx.put_envelope(
                &NewEnvelope {
                    id,
                    space: h.space,
                    actor: last.header().actor(),
                    seq,
                    doc: Some(last.header().doc),
                    bytes: last.as_bytes(),
                },
                order,
            )?;
            order += 1;
            tx.commit()?;
        }
        t.store_one.push(start.elapsed());
        drop(store);

        let start = Instant::now();
        let mut chat = ChatDoc::new(doc_id);
        let mut shown = 0;
        for f in checked_frames {
            shown += chat.apply_checked(f)?.len();
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
        raw_apply(&mut doc, input)?;
        t.raw_frames.push(start.elapsed());
        ensure!(doc.get_heads() == full.get_heads());

        let input = vec![raw.clone()];
        let start = Instant::now();
        let mut doc = genesis_doc.clone();
        raw_apply(&mut doc, input)?;
        t.raw_one.push(start.elapsed());

        // What a plain Automerge app does to learn what to display: apply with an
        // active patch log, then turn it into patches.
        let input = raw_frames.clone();
        let start = Instant::now();
        let mut doc = genesis_doc.clone();
        let mut patches = 0;
        for f in input {
            let batch = f.into_iter().map(Change::from_bytes).collect::<Result<Vec<_>, _>>()?;
            let mut log = automerge::PatchLog::active();
            doc.apply_changes_log_patches(batch, &mut log)?;
            patches += doc.make_patches(&mut log).len();
        }
        t.raw_patches.push(start.elapsed());
        black_box(patches);

        let s = raw_sync(&full, &genesis_doc)?;
        t.raw_sync.push(s.time);
        sync_full = s;
        let s = raw_sync(&plain, &genesis_doc)?;
        t.plain_sync.push(s.time);
        plain_full = s;

        let start = Instant::now();
        black_box(automerge::Automerge::load(&saved)?);
        t.load.push(start.elapsed());

        let input = inc_raw_frames.clone();
        let mut doc = partial.clone();
        let start = Instant::now();
        raw_apply(&mut doc, input)?;
        t.inc_raw.push(start.elapsed());

        let s = raw_sync(&full, &partial)?;
        t.inc_sync.push(s.time);
        sync_inc = s;
        plain_inc = raw_sync(&plain, &plain_partial)?;

        t.live_sealed.push(sealed_ingest(h, &live_before, &live_frames).await?);

        let mut chat = ChatDoc::new(doc_id);
        chat.apply(all_changes[..live_held].to_vec(), &bench_author())?;
        let input = all_changes[live_held..].to_vec();
        let start = Instant::now();
        for c in input {
            black_box(chat.apply(vec![c], &bench_author())?);
        }
        t.live_chat.push(start.elapsed());

        let mut doc = live_doc.clone();
        let input = raw[live_held..].to_vec();
        let start = Instant::now();
        for b in input {
            doc.apply_changes(vec![Change::from_bytes(b)?])?;
        }
        t.live_raw.push(start.elapsed());

        let mut doc = live_doc.clone();
        let input = raw[live_held..].to_vec();
        let start = Instant::now();
        for b in input {
            let mut log = automerge::PatchLog::active();
            doc.apply_changes_log_patches(vec![Change::from_bytes(b)?], &mut log)?;
            black_box(doc.make_patches(&mut log));
        }
        t.live_patches.push(start.elapsed());

        // The sender's side at the same size: one post = one transaction, commit,
        // and the change's bytes (to seal), against a bare transaction + commit.
        let actor = outpost_crdt::writer::actor_id(&[9; 32], &doc_id, rep as u64 + 1);
        let start = Instant::now();
        for i in 0..POSTS {
            let msg = NewMessage {
                id: format!("post{rep}x{i}"),
                body: outpost_node::ids::EnvelopeId::of(chat_text(&format!("post-{i}")).as_bytes()).to_string(),
                reply_to: None,
                mentions: Vec::new(),
                all: false,
            };
            black_box(chat.post(actor.clone(), &bench_author(), &[msg], 0)?);
        }
        t.post.push(start.elapsed());
        let mut doc = live_doc.clone().with_actor(actor);
        let messages = match doc.get(automerge::ROOT, "messages")? {
            Some((_, id)) => id,
            None => bail!("the chat doc has no messages map"),
        };
        let start = Instant::now();
        for i in 0..POSTS {
            let mut tx = doc.transaction();
            let entry = tx.put_object(&messages, format!("raw-{i}").as_str(), automerge::ObjType::Map)?;
            tx.put(&entry, "text", chat_text(&format!("raw-{i}")).as_str())?;
            tx.put(&entry, "sent_at", automerge::ScalarValue::Timestamp(0))?;
            black_box(tx.commit());
        }
        t.raw_commit.push(start.elapsed());
    }
    let noise = cpu.stop().others_pct;

    let m = h.messages as f64;
    let snap = snap.context("no rep ran")?;
    let k = if h.per_change == 1 { "single" } else { "batched" };
    let key = |name: &str| format!("{k}_{name}");
    let sealed = median(t.sealed);
    let verify = median(t.verify);
    let decrypt = median(t.decrypt);
    let validate = median(t.validate);
    let store = median(t.store);
    let chat_apply = median(t.chat_apply);
    let raw_frames_t = median(t.raw_frames);
    let raw_patches = median(t.raw_patches);
    let raw_sync_t = median(t.raw_sync);
    let snap_first = median(t.snap_first);
    let snap_held = median(t.snap_held);
    let snap_client = median(t.snap_client);
    let snap_bodies_server = median(t.snap_bodies_server);
    let snap_bodies_client = median(t.snap_bodies_client);
    let plain_sync_t = median(t.plain_sync);
    // Both sides of the fresh-peer sync, bodies included.
    let snap_total = snap_first + snap_bodies_server + snap_client + snap_bodies_client;
    let snap_total_held = snap_held + snap_bodies_server + snap_client + snap_bodies_client;
    let no_store = sealed.saturating_sub(store);
    let rest = sealed.saturating_sub(verify + decrypt + validate + store + chat_apply);
    let x = |a: Duration, b: Duration| ms(a) / ms(b);

    // A fresh peer lacks everything: the node serves it the genesis and one
    // snapshot (plus any envelopes after the snapshot), then the bodies its
    // messages name when it asks for them, which is what the targets are about.
    let sec = format!(
        "sync, fresh peer, {} messages in {changes} changes ({:.1} per change): snapshot path, {} envelopes \
         (genesis, snapshot, {} after it) in {} frames, then {} bodies in {} requests",
        h.messages,
        m / changes as f64,
        snap.envelopes,
        snap.envelopes.saturating_sub(2),
        snap.frames,
        snap.bodies,
        snap.body_requests
    );
    let s = sec.as_str();
    let text_per_msg = text_bytes as f64 / m;
    let rows: Vec<(&str, String, f64, &'static str, Option<Target>)> = vec![
        (
            "snap_server_first",
            "server: make, seal and store the snapshot, then serve (first fresh peer)".into(),
            ms(snap_first),
            "ms",
            None,
        ),
        (
            "snap_server_held",
            "server: serve the held snapshot (later fresh peers)".into(),
            ms(snap_held),
            "ms",
            None,
        ),
        (
            "snap_server_bodies",
            "server: answer the client's requests for the bodies (sides_for)".into(),
            ms(snap_bodies_server),
            "ms",
            None,
        ),
        (
            "snap_client",
            "client: fresh core ingests the push (verify, check the signed lasts, decrypt, load, store durably)".into(),
            ms(snap_client),
            "ms",
            None,
        ),
        (
            "snap_client_bodies",
            "client: lists the bodies it lacks (wanted_for), ingests the answers (verify, check, store durably)".into(),
            ms(snap_bodies_client),
            "ms",
            None,
        ),
        (
            "raw_sync",
            "raw: Automerge sync protocol of the same changes, full doc → genesis-only doc".into(),
            ms(raw_sync_t),
            "ms",
            None,
        ),
        (
            "plain_sync",
            "reference: … of a plain Automerge chat (the text inside its changes, no bodies)".into(),
            ms(plain_sync_t),
            "ms",
            None,
        ),
        (
            "snap_ratio_time_sync",
            "time sealed (snapshot: server first serve + client ingest, bodies included) / raw sync protocol".into(),
            x(snap_total, raw_sync_t),
            "×",
            Some(Target::AtMost(1.5)),
        ),
        (
            "snap_ratio_time_sync_held",
            "time sealed (snapshot: held snapshot + client ingest, bodies included) / raw sync protocol".into(),
            x(snap_total_held, raw_sync_t),
            "×",
            None,
        ),
        (
            "snap_ratio_time_plain",
            "time sealed (snapshot: server first serve + client ingest, bodies included) / plain chat sync".into(),
            x(snap_total, plain_sync_t),
            "×",
            None,
        ),
        (
            "load",
            "reference: Automerge::load of the saved doc (the client's load alone)".into(),
            ms(median(t.load)),
            "ms",
            None,
        ),
        (
            "snap_client_per_msg",
            "client ingest per message (push and bodies)".into(),
            (snap_client + snap_bodies_client).as_secs_f64() * 1e6 / m,
            "µs",
            None,
        ),
        (
            "bytes_snapshot",
            "snapshot envelope bytes per message".into(),
            snap.snapshot_bytes as f64 / m,
            "B",
            None,
        ),
        (
            "bytes_bodies",
            format!("body envelope bytes per message (each holds {text_per_msg:.0} B of text)"),
            body_bytes as f64 / m,
            "B",
            None,
        ),
        (
            "bytes_saved",
            "reference: Automerge save() (compressed snapshot) per message".into(),
            saved.len() as f64 / m,
            "B",
            None,
        ),
        (
            "bytes_saved_plain",
            "reference: … of the plain chat (the text inside) per message".into(),
            plain.save().len() as f64 / m,
            "B",
            None,
        ),
        (
            "snap_bytes_wire",
            "sealed sync with the snapshot on the wire (offers, frames, acks, bodies asked for and answered)".into(),
            snap.wire as f64,
            "B",
            None,
        ),
        (
            "snap_bytes_wire_bodies",
            "… of which the bodies' requests and answers".into(),
            snap.bodies_wire as f64,
            "B",
            None,
        ),
        (
            "bytes_raw_sync",
            format!(
                "raw sync of the same changes on the wire, both ways ({} messages)",
                sync_full.messages
            ),
            sync_full.bytes as f64,
            "B",
            None,
        ),
        (
            "bytes_plain_sync",
            format!(
                "reference: plain chat sync on the wire, both ways ({} messages)",
                plain_full.messages
            ),
            plain_full.bytes as f64,
            "B",
            None,
        ),
        (
            "snap_ratio_bytes_sync",
            "bytes sealed (snapshot, bodies included) / raw sync protocol".into(),
            snap.wire as f64 / sync_full.bytes as f64,
            "×",
            Some(Target::AtMost(1.5)),
        ),
        (
            "snap_ratio_bytes_plain",
            "bytes sealed (snapshot, bodies included) / plain chat sync".into(),
            snap.wire as f64 / plain_full.bytes as f64,
            "×",
            None,
        ),
    ];
    for (name, label, value, unit, target) in rows {
        let row = report.add(s, &key(name), &label, value, unit);
        if let Some(t) = target {
            row.target(t);
        }
    }
    report.add(
        s,
        &key("noise"),
        "CPU used by other processes meanwhile (noise)",
        noise,
        "%",
    );

    // The same fresh peer served envelope by envelope: no targets, as sync does
    // this now only for peers lacking less than half of a space.
    let sec = format!(
        "sync, fresh peer, envelope by envelope (what sync did before snapshots; now only for peers lacking < 50%): \
         {changes} changes and {} bodies in {} frames",
        bodies.len(),
        frames.len()
    );
    let s = sec.as_str();
    let rows: Vec<(&str, String, f64, &'static str)> = vec![
        (
            "sealed_ingest",
            "sealed: fresh core ingests all frames, changes and bodies (verify, decrypt, check, store durably, apply)"
                .into(),
            ms(sealed),
            "ms",
        ),
        (
            "raw_apply",
            "raw: Automerge parses + applies the same changes, same batches".into(),
            ms(raw_frames_t),
            "ms",
        ),
        (
            "raw_apply_one",
            "raw: … in one apply_changes call".into(),
            ms(median(t.raw_one)),
            "ms",
        ),
        (
            "raw_apply_patches",
            "raw: … with a patch log, then make_patches (to display)".into(),
            ms(raw_patches),
            "ms",
        ),
        (
            "ratio_time_apply",
            "time sealed / raw apply".into(),
            x(sealed, raw_frames_t),
            "×",
        ),
        (
            "ratio_time_patches",
            "time sealed / raw apply with patches".into(),
            x(sealed, raw_patches),
            "×",
        ),
        (
            "ratio_time_sync",
            "time sealed / raw sync protocol (above)".into(),
            x(sealed, raw_sync_t),
            "×",
        ),
        (
            "sealed_minus_store",
            "sealed minus durable storage (storage measured apart)".into(),
            ms(no_store),
            "ms",
        ),
        (
            "ratio_time_no_store",
            "time (sealed − storage) / raw apply".into(),
            x(no_store, raw_frames_t),
            "×",
        ),
        (
            "part_verify",
            "part: decode + batch-verify signatures, per frame (all envelopes, bodies included)".into(),
            ms(verify),
            "ms",
        ),
        (
            "part_decrypt",
            "part: decrypt + parse the changes, and the bodies twice as ingest does (stored; announced)".into(),
            ms(decrypt),
            "ms",
        ),
        (
            "part_validate",
            "part: chat-rules check + reading the new messages (ChatDoc::validate; changes only)".into(),
            ms(validate),
            "ms",
        ),
        (
            "part_store",
            "part: durable redb writes, one commit per frame (2PC; bodies with ingest's reads)".into(),
            ms(store),
            "ms",
        ),
        (
            "part_chat_apply",
            "part: ChatDoc::apply_checked per frame (one apply_changes call; bodies are not applied)".into(),
            ms(chat_apply),
            "ms",
        ),
        (
            "part_rest",
            "part: rest of the core (classify, bodies' header checks, indexes, events; by difference)".into(),
            ms(rest),
            "ms",
        ),
        (
            "sealed_per_msg",
            "sealed ingest per message".into(),
            sealed.as_secs_f64() * 1e6 / m,
            "µs",
        ),
        (
            "raw_per_msg",
            "raw apply per message".into(),
            raw_frames_t.as_secs_f64() * 1e6 / m,
            "µs",
        ),
        (
            "bytes_raw_changes",
            "raw change bytes per message (skeletons: a body id where the text would be)".into(),
            raw_bytes as f64 / m,
            "B",
        ),
        (
            "bytes_plain_changes",
            "reference: a plain Automerge chat's change bytes per message (the text inside)".into(),
            plain_bytes as f64 / m,
            "B",
        ),
        (
            "bytes_text",
            "message text per message (sealed in the bodies)".into(),
            text_per_msg,
            "B",
        ),
        (
            "bytes_sealed",
            "sealed envelope bytes per message (changes and bodies)".into(),
            sealed_bytes as f64 / m,
            "B",
        ),
        (
            "bytes_sealed_bodies",
            "… of which body envelopes".into(),
            body_bytes as f64 / m,
            "B",
        ),
        (
            "bytes_sealed_wire",
            "sealed sync on the wire (offers, frames, acks)".into(),
            wire as f64,
            "B",
        ),
        (
            "ratio_bytes_sync",
            "bytes sealed / raw sync protocol (above)".into(),
            wire as f64 / sync_full.bytes as f64,
            "×",
        ),
        (
            "ratio_bytes_plain_sync",
            "bytes sealed / plain chat sync (above)".into(),
            wire as f64 / plain_full.bytes as f64,
            "×",
        ),
        (
            "ratio_bytes_changes",
            "bytes sealed / raw change bytes".into(),
            wire as f64 / raw_bytes as f64,
            "×",
        ),
        (
            "ratio_bytes_plain_changes",
            "bytes sealed / plain chat change bytes".into(),
            wire as f64 / plain_bytes as f64,
            "×",
        ),
    ];
    for (name, label, value, unit) in rows {
        report.add(s, &key(name), &label, value, unit);
    }

    let inc_changes = changes - held;
    let sec = format!(
        "sync, incremental: receiver holds {held} changes (and their bodies), gets the last {inc_changes} \
         with their bodies, {} frames",
        inc_frames.len()
    );
    let s = sec.as_str();
    let inc_sealed = median(t.inc_sealed);
    let inc_raw = median(t.inc_raw);
    let inc_sync = median(t.inc_sync);
    let rows: Vec<(&str, String, f64, &'static str, Option<Target>)> = vec![
        (
            "inc_sealed",
            "sealed: core ingests the missing frames (changes and bodies)".into(),
            ms(inc_sealed),
            "ms",
            None,
        ),
        (
            "inc_raw_apply",
            "raw: Automerge applies the same changes, same batches".into(),
            ms(inc_raw),
            "ms",
            None,
        ),
        (
            "inc_raw_sync",
            "raw: Automerge sync protocol of the same changes".into(),
            ms(inc_sync),
            "ms",
            None,
        ),
        (
            "inc_ratio_time_apply",
            "time sealed / raw apply".into(),
            x(inc_sealed, inc_raw),
            "×",
            Some(Target::AtMost(1.5)),
        ),
        (
            "inc_ratio_time_sync",
            "time sealed / raw sync protocol".into(),
            x(inc_sealed, inc_sync),
            "×",
            Some(Target::AtMost(1.5)),
        ),
        (
            "inc_bytes_sealed_wire",
            "sealed sync on the wire (changes and bodies)".into(),
            inc_wire as f64,
            "B",
            None,
        ),
        (
            "inc_bytes_bodies",
            "… of which body envelopes".into(),
            inc_body_bytes as f64,
            "B",
            None,
        ),
        (
            "inc_bytes_raw_sync",
            format!("raw sync on the wire, both ways ({} messages)", sync_inc.messages),
            sync_inc.bytes as f64,
            "B",
            None,
        ),
        (
            "inc_bytes_raw_changes",
            "raw change bytes of the missing changes".into(),
            inc_raw_bytes as f64,
            "B",
            None,
        ),
        (
            "inc_bytes_plain",
            format!(
                "reference: plain chat (the text inside its changes): change bytes {plain_inc_bytes}, sync on \
                 the wire ({} messages)",
                plain_inc.messages
            ),
            plain_inc.bytes as f64,
            "B",
            None,
        ),
        (
            "inc_ratio_bytes_sync",
            "bytes sealed / raw sync protocol".into(),
            inc_wire as f64 / sync_inc.bytes as f64,
            "×",
            Some(Target::AtMost(1.5)),
        ),
        (
            "inc_ratio_bytes_plain",
            "bytes sealed / plain chat sync".into(),
            inc_wire as f64 / plain_inc.bytes as f64,
            "×",
            None,
        ),
    ];
    for (name, label, value, unit, target) in rows {
        let row = report.add(s, &key(name), &label, value, unit);
        if let Some(t) = target {
            row.target(t);
        }
    }

    let sec = format!(
        "live receive: {live} changes ({live_msgs} messages) arrive one per frame with their bodies at a doc of {} \
         messages",
        h.messages - live_msgs
    );
    let s = sec.as_str();
    let per = |d: Duration| d.as_secs_f64() * 1e6 / live as f64;
    let live_sealed = median(t.live_sealed);
    let live_raw = median(t.live_raw);
    let live_patches = median(t.live_patches);
    report.add(
        s,
        &key("live_sealed"),
        "sealed: core ingest + durable commit, per change (its envelope and bodies)",
        per(live_sealed),
        "µs",
    );
    report.add(
        s,
        &key("live_chat"),
        "part: ChatDoc::apply, per change",
        per(median(t.live_chat)),
        "µs",
    );
    report.add(
        s,
        &key("live_raw"),
        "raw: Automerge apply_changes, per change",
        per(live_raw),
        "µs",
    );
    report.add(
        s,
        &key("live_patches"),
        "raw: … with a patch log + make_patches, per change",
        per(live_patches),
        "µs",
    );
    report
        .add(
            s,
            &key("live_ratio"),
            "time sealed / raw apply",
            x(live_sealed, live_raw),
            "×",
        )
        .target(Target::AtMost(1.5));
    report.add(
        s,
        &key("live_ratio_patches"),
        "time sealed / raw apply with patches",
        x(live_sealed, live_patches),
        "×",
    );
    let per_post = |d: Duration| d.as_secs_f64() * 1e6 / POSTS as f64;
    report.add(
        s,
        &key("store_one"),
        &format!(
            "part: durable commit of one change's envelope and {} into a store of {} envelopes (Store, 2PC)",
            match decoded.len() - 1 - at[changes - 1] {
                1 => "its body".to_string(),
                n => format!("its {n} bodies"),
            },
            h.sealed.len()
        ),
        per_post(median(t.store_one)),
        "µs",
    );
    report.add(
        s,
        &key("post"),
        "sender: ChatDoc::post of one message (commit + get_change_by_hash)",
        per_post(median(t.post)),
        "µs",
    );
    report.add(
        s,
        &key("raw_commit"),
        "sender, raw: transaction + commit of one message",
        per_post(median(t.raw_commit)),
        "µs",
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
    if let Some(busy) = busy_note() {
        report.note(busy);
    }
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
    warn_if_debug("bench");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut report = Report::default();
    let started = Instant::now();
    let outcome = until_interrupted(&runtime, run(&opts, &mut report));
    let date = today();
    let machine = machine();
    if opts.json {
        println!("{:#}", report.to_json(&machine, &opts, &date));
    } else {
        report.print_tables(&format!(
            "Outpost benchmark, {date}, {}, {:.0} s",
            revision_and_cpus(&machine),
            started.elapsed().as_secs_f64()
        ));
    }
    outcome
}

/// The author the chat rules judge a benchmark's changes by (any writer).
fn bench_author() -> outpost_crdt::Author {
    outpost_crdt::Author {
        user: "ab".repeat(32),
        editor: true,
        admin: false,
    }
}
