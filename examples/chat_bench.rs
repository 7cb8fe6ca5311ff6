//! Chat as an organisation uses it, measured next to plain baselines in the
//! same run:
//!
//! 1. **Rooms**: three real daemons (separate `outpost` processes from the release
//!    build) on loopback, each dialling the other two, one chat room created on A
//!    with B and C as members. Many concurrent clients post to A: acknowledged
//!    msgs/s on A, and end to end until B and C both show every message (their
//!    `/v1/events` streams). Then the same with the clients spread over A, B and C,
//!    end to end on all three.
//! 2. **Attachments**: a file of random bytes sent as `outpost chat send --file`
//!    sends it (`POST /v1/chats/{space}/files`, a streamed body), fetched on B as
//!    `outpost file get` fetches it (`POST /v1/files/{id}/get`, polled until
//!    complete, then `GET /v1/files/{id}/content` into a file). MB/s of each step
//!    against a plain copy of the same file over a loopback TCP socket; the
//!    received file must hash (BLAKE3) to the original.
//! 3. **Search**: an in-process `SearchIndex` on disk (sealed, as the daemon keeps
//!    it) over 1M generated chat messages of mixed English and Chinese: indexing
//!    rate, size on disk, and query latency per kind of query, against a linear
//!    scan (`str::contains`) over the same texts in memory.
//!
//! ```text
//! cargo build --release -p outpost-cli           # the daemons of parts 1 and 2
//! cargo run --release --example chat_bench       # all three parts
//! cargo run --release --example chat_bench -- --help
//! ```
//!
//! A measurement tool: it checks that every message arrives and that the file
//! arrives intact, and asserts nothing about time. BENCHMARKS.md ("Chat at
//! organisation scale") says what each number means and holds the results.

use std::{
    collections::HashSet,
    io::{Read, Write},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Result, anyhow, bail, ensure};
use futures::StreamExt;
use outpost_node::{
    client::Client,
    core::{FileStatus, Sent},
    ids::{DeviceId, SpaceId, UserId},
    search::{Entry, HitKind, SearchIndex, SearchQuery, sealed::IndexKey},
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
use daemon::{Daemon, connect, locate_outpost, start_mesh, wait_for, warnings_note};
use harness::{Table, print_notes, results_json, revision_and_cpus, until_interrupted, warn_if_debug};
use measure::{
    CpuMeter, CpuUse, available_cpus, busy_note, clock_ticks, dir_size, grouped, load_average, machine, ms, quantile,
    rss_mib, today,
};

const HELP: &str = "\
Outpost chat benchmark: rooms, attachments, search (see BENCHMARKS.md)

USAGE: cargo run --release --example chat_bench -- [OPTIONS]

Needs target/release/outpost: cargo build --release -p outpost-cli

Rooms (three daemons):
  --clients N            concurrent clients                         [16]
  --per-client M         messages each client posts                 [5000]
Attachments (the same three daemons):
  --file-mb S            size of the file sent A → B, in MB (10^6 B)  [200]
Search (in-process, on disk):
  --search-messages N    messages indexed                           [1000000]
  --commit-every K       entries per index commit                   [10000]
  --queries Q            queries of each kind (8 kinds)             [50]
  --no-ram-index         skip the diagnostic: the same corpus and queries
                         in an unsealed index in RAM
General:
  --only rooms|files|search   run one part only
  --outpost PATH         the outpost binary        [next to this example's exe]
  --json                 print the results as JSON instead of tables
  --keep                 keep the daemons' homes, logs and files (path printed)
";

// ---------------------------------------------------------------------------
// Options

#[derive(Debug, Clone)]
struct Opts {
    clients: usize,
    per_client: usize,
    file_mb: u64,
    search_messages: usize,
    commit_every: usize,
    queries: usize,
    ram_index: bool,
    rooms: bool,
    files: bool,
    search: bool,
    outpost: Option<PathBuf>,
    json: bool,
    keep: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            clients: 16,
            per_client: 5000,
            file_mb: 200,
            search_messages: 1_000_000,
            commit_every: 10_000,
            queries: 50,
            ram_index: true,
            rooms: true,
            files: true,
            search: true,
            outpost: None,
            json: false,
            keep: false,
        }
    }
}

fn parse_opts() -> Result<Option<Opts>> {
    harness::parse(HELP, Opts::default(), |o, arg, args| {
        match arg {
            "--clients" => o.clients = args.value::<usize>(arg)?.max(1),
            "--per-client" => o.per_client = args.value::<usize>(arg)?.max(1),
            "--file-mb" => o.file_mb = args.value::<u64>(arg)?.max(1),
            "--search-messages" => o.search_messages = args.value::<usize>(arg)?.max(100),
            "--commit-every" => o.commit_every = args.value::<usize>(arg)?.max(1),
            "--queries" => o.queries = args.value::<usize>(arg)?.max(1),
            "--no-ram-index" => o.ram_index = false,
            "--only" => {
                let part = args.value::<String>(arg)?;
                ensure!(
                    ["rooms", "files", "search"].contains(&part.as_str()),
                    "--only takes rooms, files or search, not {part:?}"
                );
                o.rooms = part == "rooms";
                o.files = part == "files";
                o.search = part == "search";
            }
            "--outpost" => o.outpost = Some(args.value(arg)?),
            "--json" => o.json = true,
            "--keep" => o.keep = true,
            _ => return Ok(false),
        }
        Ok(true)
    })
}

// ---------------------------------------------------------------------------
// Results: Markdown tables (or JSON), one per section

#[derive(Default)]
struct Report {
    tables: Vec<Table>,
    values: Vec<serde_json::Value>,
    notes: Vec<String>,
}

impl Report {
    /// Starts a two-column table of metrics.
    fn section(&mut self, title: impl Into<String>) {
        self.table(title, &["metric", "value"]);
    }

    fn table(&mut self, title: impl Into<String>, columns: &[&str]) {
        self.tables.push(Table::new(title, columns));
    }

    fn current(&self) -> String {
        self.tables.last().map(|t| t.title.clone()).unwrap_or_default()
    }

    /// One metric row of the current table.
    fn metric(&mut self, key: &str, label: &str, value: f64, unit: &'static str) {
        let section = self.current();
        self.values.push(serde_json::json!({
            "section": section, "key": key, "label": label, "value": value, "unit": unit,
        }));
        let shown = match unit {
            "×" => format!("{}×", fmt_value(value, unit)),
            _ => format!("{} {unit}", fmt_value(value, unit)).trim().to_string(),
        };
        self.row(vec![label.to_string(), shown]);
    }

    /// A row of the current table (its JSON is added by the caller).
    fn row(&mut self, cells: Vec<String>) {
        if let Some(t) = self.tables.last_mut() {
            t.row(cells);
        }
    }

    fn note(&mut self, text: impl Into<String>) {
        let text = text.into();
        eprintln!("[chat_bench] note: {text}");
        self.notes.push(text);
    }

    fn print_tables(&self, header: &str) {
        println!("{header}");
        for t in &self.tables {
            t.print();
        }
        print_notes(&self.notes);
    }

    fn to_json(&self, machine: &serde_json::Value, opts: &Opts, date: &str) -> serde_json::Value {
        results_json(date, machine, opts, self.values.clone().into(), &self.notes)
    }
}

fn fmt_value(v: f64, unit: &str) -> String {
    match unit {
        "ms" if v < 10.0 => format!("{v:.2}"),
        "ms" | "MB/s" | "MB" | "MiB" | "µs/msg" | "%" | "µs/query" => format!("{v:.1}"),
        "×" | "s" => format!("{v:.2}"),
        _ => grouped(v),
    }
}

fn ratio(r: f64) -> String {
    if r >= 10.0 {
        format!("{r:.0}×")
    } else {
        format!("{r:.2}×")
    }
}

// ---------------------------------------------------------------------------
// A small seeded generator (the corpus and the query mix must be the same in
// every run, whatever the `rand` crate's version)

struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        // SplitMix64.
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for b in &mut out {
            *b = self.next_u64() as u8;
        }
        out
    }
}

/// Draws ranks 0..n with probability ∝ 1 / (rank + 1)^s (Zipf).
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut total = 0.0;
        let cumulative = (0..n)
            .map(|r| {
                total += 1.0 / ((r + 1) as f64).powf(s);
                total
            })
            .collect();
        Self { cumulative }
    }

    fn sample(&self, rng: &mut Rng) -> usize {
        let total = *self.cumulative.last().expect("not empty");
        let x = rng.unit() * total;
        self.cumulative
            .partition_point(|&c| c < x)
            .min(self.cumulative.len() - 1)
    }
}

// ---------------------------------------------------------------------------
// Part 1: rooms

const NODES: [&str; 3] = ["a", "b", "c"];

/// `r<run><origin>-<index>`: which run, which node it was posted to, which message.
fn tag(run: u8, origin: usize, index: usize) -> String {
    format!("r{run}{}-{index:07}", NODES[origin])
}

/// What a node's event stream showed: (node, run, origin, index, when).
struct Arrival {
    node: usize,
    run: u8,
    origin: usize,
    index: usize,
    at: Instant,
}

fn parse_tag(text: &str) -> Option<(u8, usize, usize)> {
    let b = text.as_bytes();
    if b.len() < 11 || b[0] != b'r' || b[3] != b'-' {
        return None;
    }
    let run = (b[1] as char).to_digit(10)? as u8;
    let origin = NODES.iter().position(|n| n.as_bytes()[0] == b[2])?;
    let index = text.get(4..11)?.parse().ok()?;
    Some((run, origin, index))
}

async fn daemons(opts: &Opts, report: &mut Report) -> Result<()> {
    let (bin, stale) = locate_outpost(opts.outpost.as_deref())?;
    if let Some(stale) = stale {
        report.note(stale);
    }
    // On the real disk (/tmp is ext4 here): fsync costs what it costs.
    let root = tempfile::Builder::new().prefix("outpost-chat-bench-").tempdir()?;
    eprintln!("[chat_bench] daemons: homes in {}", root.path().display());
    let mut nodes = start_mesh(&bin, root.path(), NODES)?;
    let result = run_daemons(opts, report, &bin, &mut nodes, root.path()).await;
    report.section("daemons: resources at the end");
    for d in &nodes {
        if let Some(rss) = rss_mib(&d.pid().to_string()) {
            report.metric(
                &format!("rss_{}", d.name),
                &format!("RSS of daemon {}", d.name),
                rss,
                "MiB",
            );
        }
        if let Some(note) = warnings_note(d) {
            report.note(note);
        }
    }
    drop(nodes);
    if opts.keep {
        let path = root.keep();
        report.note(format!("daemon homes, logs and files kept in {}", path.display()));
    }
    result
}

async fn run_daemons(opts: &Opts, report: &mut Report, bin: &Path, nodes: &mut [Daemon; 3], root: &Path) -> Result<()> {
    let setup = connect(nodes, Duration::from_secs(30)).await?;
    eprintln!("[chat_bench] three daemons connected after {:.0} ms", ms(setup));
    let [a, b, c] = &*nodes;
    if opts.rooms {
        rooms(opts, report, bin, [a, b, c]).await?;
    }
    if opts.files {
        files(opts, report, bin, [a, b, c], root).await?;
    }
    for d in nodes.iter_mut() {
        d.check_alive()?;
    }
    Ok(())
}

async fn rooms(opts: &Opts, report: &mut Report, bin: &Path, nodes: [&Daemon; 3]) -> Result<()> {
    let [a, b, c] = nodes;
    let space = create_room(bin, a, &[b, c], "all-hands", Duration::from_secs(30)).await?;
    let path = format!("/v1/chats/{space}/messages");

    // Every node's live event stream, time-stamped as it arrives.
    let (tx, mut arrivals) = mpsc::unbounded_channel::<Arrival>();
    let lagged: [Arc<AtomicU64>; 3] = Default::default();
    let mut readers = Vec::new();
    for (node, d) in nodes.iter().enumerate() {
        let tx = tx.clone();
        let reader = watch_messages(d, space, lagged[node].clone(), move |text, at| {
            let Some((run, origin, index)) = parse_tag(text) else {
                return true;
            };
            let arrival = Arrival {
                node,
                run,
                origin,
                index,
                at,
            };
            tx.send(arrival).is_ok()
        });
        readers.push(reader.await?);
    }
    drop(tx);

    // Warm-up: 10 messages from each node, seen by the two others.
    for (origin, d) in nodes.iter().enumerate() {
        for i in 0..10 {
            send(&d.client, &path, chat_text(&tag(0, origin, i))).await?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut warm = [0usize; 3];
    while warm.iter().any(|&n| n < 20) {
        match tokio::time::timeout_at(deadline.into(), arrivals.recv()).await {
            Ok(Some(x)) if x.run == 0 && x.origin != x.node => warm[x.node] += 1,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => bail!("warm-up: the nodes showed {warm:?} of 20 messages from the others"),
        }
    }

    let ticks = clock_ticks();
    let runs = [
        (
            1u8,
            false,
            format!("rooms: {} clients post to A; B and C show every message", opts.clients),
        ),
        (
            2u8,
            true,
            format!(
                "rooms: {} clients spread over A, B and C; all three show every message",
                opts.clients
            ),
        ),
    ];
    for (run, spread, title) in runs {
        let ctx = RoomRun {
            nodes,
            space,
            path: &path,
            run,
            spread,
            ticks,
            lagged: &lagged,
        };
        room_run(opts, report, &ctx, &mut arrivals, title).await?;
    }
    for r in readers {
        r.abort();
    }
    Ok(())
}

struct RoomRun<'a> {
    nodes: [&'a Daemon; 3],
    space: SpaceId,
    path: &'a str,
    run: u8,
    spread: bool,
    ticks: f64,
    lagged: &'a [Arc<AtomicU64>; 3],
}

async fn room_run(
    opts: &Opts,
    report: &mut Report,
    ctx: &RoomRun<'_>,
    arrivals: &mut mpsc::UnboundedReceiver<Arrival>,
    title: String,
) -> Result<()> {
    let (nodes, space, run) = (ctx.nodes, ctx.space, ctx.run);
    let per_client = opts.per_client;
    let n = opts.clients * per_client;
    let origin_of = |client: usize| if ctx.spread { client % 3 } else { 0 };
    eprintln!("[chat_bench] {title}: {n} messages");
    let lagged_before: Vec<u64> = ctx.lagged.iter().map(|l| l.load(Ordering::Relaxed)).collect();
    let env_before = nodes[0].envelopes(space).await;
    let pids: Vec<String> = nodes
        .iter()
        .map(|d| d.pid().to_string())
        .chain(["self".to_string()])
        .collect();
    let cpu = CpuMeter::start(pids, ctx.ticks);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..opts.clients {
        let origin = origin_of(client);
        let http = nodes[origin].client.clone();
        let path = ctx.path.to_string();
        tasks.spawn(async move {
            let mut acks = Vec::with_capacity(per_client);
            let mut failed = Vec::new();
            for j in 0..per_client {
                let index = client * per_client + j;
                let t0 = Instant::now();
                match send(&http, &path, chat_text(&tag(run, origin, index))).await {
                    Ok(_) => acks.push(t0.elapsed()),
                    Err(_) => failed.push(index),
                }
            }
            (origin, acks, failed)
        });
    }
    let mut acks = Vec::with_capacity(n);
    let mut posted = [0usize; 3];
    let mut failed: HashSet<usize> = HashSet::new();
    while let Some(r) = tasks.join_next().await {
        let (origin, acked, f) = r?;
        posted[origin] += acked.len();
        acks.extend(acked);
        failed.extend(f);
    }
    let acked_at = start.elapsed();
    let cpu_acked = cpu.stop();
    let acked = acks.len();
    // What each node must show: every acknowledged message posted elsewhere.
    let want: Vec<usize> = (0..3).map(|x| acked - posted[x]).collect();
    let mut seen: Vec<Vec<bool>> = (0..3).map(|_| vec![false; n]).collect();
    let mut count = [0usize; 3];
    let mut last = [None::<Instant>; 3];
    let mut done: [Option<Duration>; 3] = std::array::from_fn(|x| (want[x] == 0).then_some(Duration::ZERO));
    let mut by_envelopes = [false; 3];
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut next_poll = Instant::now();
    while done.iter().any(Option::is_none) && Instant::now() < deadline {
        // Take what the streams showed (arrival times were taken by the readers).
        match tokio::time::timeout(Duration::from_millis(20), arrivals.recv()).await {
            Ok(Some(x)) => {
                if x.run == run && x.origin != x.node && x.index < n && !seen[x.node][x.index] {
                    seen[x.node][x.index] = true;
                    count[x.node] += 1;
                    last[x.node] = Some(last[x.node].map_or(x.at, |l| l.max(x.at)));
                }
            }
            Ok(None) => bail!("the event streams ended"),
            Err(_) => {}
        }
        for x in 0..3 {
            if done[x].is_none() && count[x] >= want[x] {
                done[x] = last[x].map(|t| t.saturating_duration_since(start));
            }
        }
        // A stream that lagged (the daemon dropped events for it) never shows
        // everything: that node is done once it stores as many envelopes as
        // the others and the count stops moving.
        if Instant::now() >= next_poll {
            next_poll = Instant::now() + Duration::from_millis(50);
            let lagging: Vec<usize> = (0..3)
                .filter(|&x| done[x].is_none() && ctx.lagged[x].load(Ordering::Relaxed) > lagged_before[x])
                .collect();
            if !lagging.is_empty() {
                let env: Vec<u64> = futures::future::join_all(nodes.iter().map(|d| d.envelopes(space))).await;
                let at = start.elapsed();
                if env.iter().all(|&e| e == env[0]) {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let again: Vec<u64> = futures::future::join_all(nodes.iter().map(|d| d.envelopes(space))).await;
                    if again == env {
                        for x in lagging {
                            done[x] = Some(at);
                            by_envelopes[x] = true;
                        }
                    }
                }
            }
        }
    }
    let cpu_all = cpu.stop();
    let env_after = nodes[0].envelopes(space).await;
    acks.sort();

    report.section(title);
    report.metric("messages", "messages acknowledged", acked as f64, "");
    if ctx.spread {
        report.values.push(serde_json::json!({
            "section": report.current(), "key": "run2_posted", "label": "posted to A / B / C",
            "value": posted,
        }));
        report.row(vec![
            "… posted to A / B / C".into(),
            format!(
                "{} / {} / {}",
                grouped(posted[0] as f64),
                grouped(posted[1] as f64),
                grouped(posted[2] as f64)
            ),
        ]);
    }
    let key = |k: &str| format!("run{run}_{k}");
    let where_acked = if ctx.spread {
        "acknowledged (A, B and C together)"
    } else {
        "acknowledged on A"
    };
    report.metric(
        &key("acked_rate"),
        where_acked,
        acked as f64 / acked_at.as_secs_f64(),
        "msgs/s",
    );
    report.metric(
        &key("ack_p50"),
        "send → acknowledged, p50",
        ms(quantile(&acks, 0.5)),
        "ms",
    );
    report.metric(
        &key("ack_p99"),
        "send → acknowledged, p99",
        ms(quantile(&acks, 0.99)),
        "ms",
    );
    let shown_on: Vec<usize> = (0..3).filter(|&x| want[x] > 0).collect();
    let names: Vec<&str> = shown_on.iter().map(|&x| NODES[x]).collect();
    let names = names.join(", ").to_uppercase();
    if shown_on.iter().all(|&x| done[x].is_some()) {
        let e2e = shown_on.iter().filter_map(|&x| done[x]).max().unwrap_or_default();
        report.metric(
            &key("e2e_rate"),
            &format!("end to end: every message shown on {names}"),
            acked as f64 / e2e.as_secs_f64(),
            "msgs/s",
        );
        for &x in &shown_on {
            let t = done[x].unwrap_or_default();
            report.metric(
                &key(&format!("complete_{}", NODES[x])),
                &format!(
                    "{} shows all {} … after the last acknowledgement (0: before it){}",
                    NODES[x].to_uppercase(),
                    grouped(want[x] as f64),
                    if by_envelopes[x] { " (by envelope count)" } else { "" }
                ),
                ms(t.saturating_sub(acked_at)),
                "ms",
            );
        }
    } else {
        report.metric(
            &key("e2e_rate"),
            &format!("end to end: incomplete after 300 s (shown {count:?} of {want:?})"),
            0.0,
            "msgs/s",
        );
    }
    report.metric(
        &key("group"),
        "messages per change (all nodes' envelopes, as A stores them)",
        acked as f64 / env_after.saturating_sub(env_before).max(1) as f64,
        "",
    );
    let per_msg = |cpu: f64| cpu / acked.max(1) as f64 * 1e6;
    for (x, name) in NODES.iter().enumerate() {
        report.metric(
            &key(&format!("cpu_{name}")),
            &format!("CPU of daemon {}", name.to_uppercase()),
            per_msg(cpu_all.ours[x]),
            "µs/msg",
        );
    }
    report.metric(
        &key("cpu_bench"),
        "CPU of the bench (clients, event streams)",
        per_msg(cpu_all.ours[3]),
        "µs/msg",
    );
    report.metric(
        &key("busy"),
        "CPU busy while sending (daemons + bench, of all cores)",
        cpu_acked.ours.iter().sum::<f64>() / acked_at.as_secs_f64() * 100.0 / available_cpus(),
        "%",
    );
    report.metric(
        &key("noise"),
        "CPU used by other processes meanwhile (noise)",
        cpu_all.others_pct,
        "%",
    );
    if !failed.is_empty() {
        report.note(format!("rooms run {run}: {} sends failed", failed.len()));
    }
    for x in 0..3 {
        let missed = ctx.lagged[x].load(Ordering::Relaxed) - lagged_before[x];
        if missed > 0 {
            report.note(format!(
                "rooms run {run}: {}'s /v1/events stream lagged ({missed} events dropped by the daemon); \
                 its completion is taken from envelope counts",
                NODES[x].to_uppercase()
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Part 2: attachments

const MB: f64 = 1e6;

/// Writes `len` bytes no compressor or dedup could shortcut; their BLAKE3.
fn write_random(path: &Path, len: u64) -> Result<blake3::Hash> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut hasher = blake3::Hasher::new();
    let mut rng = Rng(0x0ff1_ce00_beef);
    let mut block = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        for word in block[..n].chunks_mut(8) {
            let v = rng.next_u64().to_le_bytes();
            word.copy_from_slice(&v[..word.len()]);
        }
        hasher.update(&block[..n]);
        file.write_all(&block[..n])?;
        left -= n as u64;
    }
    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(hasher.finalize())
}

fn hash_file(path: &Path) -> Result<blake3::Hash> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(std::fs::File::open(path)?)?;
    Ok(hasher.finalize())
}

/// Bytes read from disk per upload piece (as `outpost chat send --file`).
const PIECE: usize = 256 << 10;

/// Uploads `path` as `chat send --file` does: the file streamed in pieces.
async fn upload(client: &Client, space: SpaceId, path: &Path, name: &str) -> Result<Sent> {
    use tokio::io::AsyncReadExt;
    let file = tokio::fs::File::open(path).await?;
    let pieces = futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; PIECE];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    Ok(client
        .post_stream(&format!("/v1/chats/{space}/files?name={name}&text=plans"), pieces)
        .await?)
}

/// Saves a file's plaintext as `file get -o` does: streamed into a file, synced.
async fn save(client: &Client, id: &str, path: &Path) -> Result<u64> {
    use tokio::io::AsyncWriteExt;
    let mut out = tokio::fs::File::create(path).await?;
    let stream = client.get_stream(&format!("/v1/files/{id}/content")).await?;
    let mut stream = std::pin::pin!(stream);
    let mut written = 0u64;
    while let Some(piece) = stream.next().await {
        let piece = piece?;
        written += piece.len() as u64;
        out.write_all(&piece).await?;
    }
    out.sync_all().await?;
    Ok(written)
}

/// Copies `from` into `to` through a 128 KiB buffer, in user space (as `cat`
/// and `nc` do): the bytes copied.
fn copy_through(from: &mut impl Read, to: &mut impl Write) -> Result<u64> {
    let mut buf = vec![0u8; 128 << 10];
    let mut total = 0u64;
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// The baseline: the file copied over a loopback TCP socket, as
/// `cat file | nc` → `nc -l > copy` would (user-space reads and writes, the
/// copy synced at the end as the node's is).
fn tcp_copy(src: &Path, dst: &Path) -> Result<Duration> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let dst = dst.to_path_buf();
    let start = Instant::now();
    let receiver = std::thread::spawn(move || -> Result<u64> {
        let (mut socket, _) = listener.accept()?;
        let mut out = std::fs::File::create(dst)?;
        let total = copy_through(&mut socket, &mut out)?;
        out.sync_all()?;
        Ok(total)
    });
    let mut socket = std::net::TcpStream::connect(addr)?;
    copy_through(&mut std::fs::File::open(src)?, &mut socket)?;
    socket.shutdown(std::net::Shutdown::Write)?;
    let received = receiver
        .join()
        .map_err(|_| anyhow!("the receiving thread panicked"))??;
    let took = start.elapsed();
    ensure!(
        received == std::fs::metadata(src)?.len(),
        "the TCP copy arrived short ({received} bytes)"
    );
    Ok(took)
}

/// A plain local copy (read + write + fsync): what storing the file costs at the least.
fn local_copy(src: &Path, dst: &Path) -> Result<Duration> {
    let start = Instant::now();
    let mut from = std::fs::File::open(src)?;
    let mut to = std::fs::File::create(dst)?;
    copy_through(&mut from, &mut to)?;
    to.sync_all()?;
    Ok(start.elapsed())
}

async fn files(opts: &Opts, report: &mut Report, bin: &Path, nodes: [&Daemon; 3], root: &Path) -> Result<()> {
    let [a, b, c] = nodes;
    let size = opts.file_mb * 1_000_000;
    let ticks = clock_ticks();
    let source = root.join("plans.bin");
    eprintln!("[chat_bench] files: writing {} MB of random bytes", opts.file_mb);
    let original = {
        let source = source.clone();
        tokio::task::spawn_blocking(move || write_random(&source, size)).await??
    };
    let space = create_room(bin, a, &[b, c], "files", Duration::from_secs(30)).await?;
    let mbps = |d: Duration| size as f64 / MB / d.as_secs_f64();

    // Import on A: streamed in, encrypted, hashed, stored; then the message posted.
    let pids = vec![a.pid().to_string(), b.pid().to_string()];
    let cpu = CpuMeter::start(pids.clone(), ticks);
    let start = Instant::now();
    let sent = upload(&a.client, space, &source, "plans.bin").await?;
    let import = start.elapsed();
    let cpu_import = cpu.stop();

    // The message reaches B, with the file's id.
    let file_id = wait_for(Duration::from_secs(60), "the file's message on B", || {
        let client = b.client.clone();
        let message = sent.id.clone();
        async move {
            let log: serde_json::Value = client.get(&format!("/v1/chats/{space}/messages?limit=20")).await.ok()?;
            let m = log.as_array()?.iter().find(|m| m["id"] == message.as_str())?.clone();
            m["file"]["id"].as_str().map(str::to_string)
        }
    })
    .await?;
    let announced = start.elapsed() - import;

    // The transfer: from B's get request until B holds the whole file.
    let cpu = CpuMeter::start(pids.clone(), ticks);
    let t1 = Instant::now();
    let mut status: FileStatus = b.client.post(&format!("/v1/files/{file_id}/get"), &()).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut fetched = 0;
    while !status.complete {
        ensure!(Instant::now() < deadline, "B did not complete the file within 600 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
        status = b.client.get(&format!("/v1/files/{file_id}")).await?;
        if let Some(p) = &status.progress {
            fetched = p.fetched.max(fetched);
        }
    }
    let transfer = t1.elapsed();
    let cpu_transfer = cpu.stop();

    // B decrypts it into a file.
    let received = root.join("received.bin");
    let cpu = CpuMeter::start(pids, ticks);
    let t2 = Instant::now();
    let written = save(&b.client, &file_id, &received).await?;
    let decrypt = t2.elapsed();
    let cpu_decrypt = cpu.stop();
    let total = start.elapsed();
    ensure!(written == size, "B's copy has {written} bytes, not {size}");
    let got = {
        let received = received.clone();
        tokio::task::spawn_blocking(move || hash_file(&received)).await??
    };
    ensure!(
        got == original,
        "B's copy of the file differs from the original (BLAKE3)"
    );

    // Baselines, same file, same disk.
    let (tcp, tcp_hash, copy) = {
        let (source, root) = (source.clone(), root.to_path_buf());
        tokio::task::spawn_blocking(move || -> Result<_> {
            let dst = root.join("tcp-copy.bin");
            let tcp = tcp_copy(&source, &dst)?;
            let hash = hash_file(&dst)?;
            std::fs::remove_file(&dst)?;
            let dst = root.join("local-copy.bin");
            let copy = local_copy(&source, &dst)?;
            std::fs::remove_file(&dst)?;
            Ok((tcp, hash, copy))
        })
        .await??
    };
    ensure!(
        tcp_hash == original,
        "the TCP baseline's copy differs from the original"
    );

    report.section(format!(
        "attachments: {} MB file, A → B over loopback (BLAKE3 of B's copy checked)",
        opts.file_mb
    ));
    report.metric("file_bytes", "file size", size as f64, "B");
    report.metric(
        "import",
        "import on A: upload → acknowledged (encrypt + hash + store + post)",
        mbps(import),
        "MB/s",
    );
    report.metric(
        "announce",
        "… then the message shows on B (with the file's id)",
        ms(announced),
        "ms",
    );
    report.metric(
        "transfer",
        "transfer A → B: `file get` request → complete on B",
        mbps(transfer),
        "MB/s",
    );
    if fetched > 0 {
        report.metric(
            "fetched",
            "… ciphertext bytes B fetched from peers",
            fetched as f64,
            "B",
        );
    }
    report.metric(
        "decrypt",
        "B decrypts to a file (`GET /v1/files/{id}/content` → file, fsync)",
        mbps(decrypt),
        "MB/s",
    );
    report.metric(
        "total",
        "total: send on A → B's decrypted copy on disk",
        mbps(total),
        "MB/s",
    );
    report.metric("total_s", "… in seconds", total.as_secs_f64(), "s");
    report.metric(
        "baseline_tcp",
        "baseline: plain copy over loopback TCP (read → socket → file, fsync)",
        mbps(tcp),
        "MB/s",
    );
    report.metric(
        "ratio_transfer",
        "transfer rate / baseline rate",
        tcp.as_secs_f64() / transfer.as_secs_f64(),
        "×",
    );
    report.metric(
        "ratio_total",
        "total rate / baseline rate",
        tcp.as_secs_f64() / total.as_secs_f64(),
        "×",
    );
    report.metric(
        "baseline_copy",
        "reference: plain local copy (read → file, fsync)",
        mbps(copy),
        "MB/s",
    );
    let cpu_row = |report: &mut Report, key: &str, label: &str, used: &CpuUse, took: Duration| {
        report.metric(
            key,
            &format!(
                "{label}: CPU of A / B {:.2} s / {:.2} s (other processes {:.0} %)",
                used.ours[0], used.ours[1], used.others_pct
            ),
            took.as_secs_f64(),
            "s",
        );
    };
    cpu_row(report, "import_s", "import", &cpu_import, import);
    cpu_row(report, "transfer_s", "transfer", &cpu_transfer, transfer);
    cpu_row(report, "decrypt_s", "decrypt", &cpu_decrypt, decrypt);
    let _ = std::fs::remove_file(&received);
    let _ = std::fs::remove_file(&source);
    Ok(())
}

// ---------------------------------------------------------------------------
// Part 3: search

/// Real English words, roughly most frequent first (function words, then chat
/// and work words). Generated words follow them in the vocabulary.
const ENGLISH: &str = "the to i you a and is it of for in that we on this be have are can with \
not do will just so but at it's if me what my get be know think go all about was out up \
one there can't would like time now today tomorrow meeting team please thanks yes no ok okay \
sure good great need work call check let's see send file update review release deploy build \
test fix bug issue ticket branch merge change plan doc draft report customer client project \
budget sales data server database api login error problem question answer help later soon \
morning afternoon week month quarter year monday tuesday wednesday thursday friday office \
remote lunch coffee train late early done ready open close new old next last first final \
version feature design product market price cost invoice contract legal finance hiring \
interview onboarding training holiday vacation leave travel flight hotel agenda notes slides \
demo launch roadmap milestone deadline priority urgent blocker risk support incident outage \
alert monitor metrics dashboard logs backup restore security password access account email \
phone chat message thread channel group policy approval request order shipment delivery \
warehouse supplier vendor partner board investor revenue growth target forecast analysis \
summary feedback survey users mobile android iphone web browser laptop printer network wifi \
vpn cloud storage migration upgrade install config setting permission role admin manager \
director engineer designer intern colleague everyone someone anyone sorry thank welcome \
congrats happy birthday weekend friday evening night tonight yesterday asap fyi btw \
schedule reschedule cancel confirm agree discuss decide share upload download attach \
print sign scan forward reply remind follow prepare finish start stop continue wait \
move keep make take give find look ask tell show try use want really also still already \
again maybe probably actually quickly exactly almost enough more less much many some \
every each other another same different important simple clear wrong right correct \
problem solution reason result option example detail part point number list table \
sheet chart figure page section item task goal scope status progress estimate";

/// Common Chinese words of office chat.
const CHINESE: &str = "我们 你们 他们 今天 明天 昨天 会议 项目 报告 客户 问题 需要 已经 可以 没有 \
什么 时候 因为 所以 但是 如果 还是 这个 那个 一下 一起 现在 之前 之后 下午 上午 晚上 周末 \
部门 经理 同事 老板 工作 任务 进度 计划 方案 设计 测试 上线 发布 版本 代码 服务器 数据库 \
接口 文档 邮件 电话 微信 讨论 确认 安排 处理 解决 修复 更新 检查 提交 审核 批准 预算 合同 \
财务 报销 发票 采购 销售 市场 产品 运营 用户 反馈 需求 功能 性能 安全 风险 质量 培训 招聘 \
面试 入职 离职 请假 出差 加班 休息 午饭 咖啡 开会 通知 提醒 麻烦 谢谢 好的 收到 没问题 \
辛苦 抱歉 稍等 马上 尽快 重要 紧急 季度 年度 目标 结果 数据 分析 统计 增长 下降 成本 利润 \
收入 支出 价格 订单 发货 仓库 供应商 合作 伙伴 董事会 投资 战略 团队 成员 负责 协调 沟通 \
配合 支持 帮助 建议 意见 想法 决定 同意 拒绝 取消 推迟 提前 延期 完成 开始 结束 继续 \
等待 准备 整理 汇总 记录 备份 恢复 登录 密码 账号 权限 系统 网络 电脑 手机 打印机 会议室 \
办公室 公司 总部 分公司 北京 上海 深圳 广州 杭州 成都 客服 售后 服务 体验 界面 页面 按钮 \
链接 附件 图片 视频 表格 幻灯片 演示 总结 复盘 周报 月报 日报 年终 奖金 工资 福利 假期 \
节日 春节 中秋 国庆 放假 调休 值班 排班 考勤 打卡 迟到 早退 出勤 绩效 考核 晋升 评审 \
流程 规范 标准 制度 政策 规定 要求 目前 最近 下周 上周 本周 下个月 上个月 明年 去年 \
大家 各位 领导 同学 朋友 老师 专家 顾问 律师 会计 工程师 设计师 产品经理 项目经理 \
非常 特别 比较 一定 可能 应该 必须 不用 不要 已经 马上 刚才 一直 还有 另外 而且 然后 \
其实 终于 突然 经常 有时 总是 只是 就是 不是 也是 都是 还要 先 再 又 才";

/// English words Chinese speakers drop into their sentences.
const MIXED_IN: [&str; 12] = [
    "PR", "bug", "deploy", "release", "API", "OK", "review", "demo", "Q3", "KPI", "deadline", "meeting",
];

/// The generated corpus: what is indexed, and what the scan baseline reads.
struct Corpus {
    english: Vec<String>,
    chinese: Vec<&'static str>,
    spaces: Vec<SpaceId>,
    users: Vec<UserId>,
    devices: Vec<DeviceId>,
    start_ms: i64,
    span_ms: i64,
    /// Per message: space, author (index), time, text.
    space_of: Vec<u8>,
    author_of: Vec<u8>,
    at: Vec<i64>,
    texts: Vec<String>,
    /// The texts lower-cased once, for the scan (the index lower-cases too).
    lower: Vec<String>,
    english_zipf: Zipf,
}

const ENGLISH_VOCABULARY: usize = 4000;
const SPACES: usize = 50;
const AUTHORS: usize = 200;

/// A pronounceable made-up word (names, jargon, typos: the long tail).
fn made_up(rng: &mut Rng) -> String {
    const ONSETS: [&str; 20] = [
        "b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "st", "tr", "pl",
    ];
    const VOWELS: [&str; 8] = ["a", "e", "i", "o", "u", "ai", "ou", "ea"];
    const CODAS: [&str; 6] = ["", "n", "r", "s", "x", "nd"];
    let syllables = rng.range(2, 4);
    let mut w = String::new();
    for _ in 0..syllables {
        w.push_str(ONSETS[rng.below(ONSETS.len())]);
        w.push_str(VOWELS[rng.below(VOWELS.len())]);
    }
    w.push_str(CODAS[rng.below(CODAS.len())]);
    w
}

impl Corpus {
    fn generate(n: usize) -> Self {
        let mut rng = Rng(20_261_203);
        let mut english: Vec<String> = Vec::new();
        let mut known = HashSet::new();
        for w in ENGLISH.split_whitespace() {
            if known.insert(w.to_string()) {
                english.push(w.to_string());
            }
        }
        while english.len() < ENGLISH_VOCABULARY {
            let w = made_up(&mut rng);
            if known.insert(w.clone()) {
                english.push(w);
            }
        }
        let mut chinese: Vec<&'static str> = Vec::new();
        for w in CHINESE.split_whitespace() {
            if !chinese.contains(&w) {
                chinese.push(w);
            }
        }
        let spaces: Vec<SpaceId> = (0..SPACES).map(|_| SpaceId(rng.bytes())).collect();
        let users: Vec<UserId> = (0..AUTHORS).map(|_| UserId(rng.bytes())).collect();
        let devices: Vec<DeviceId> = (0..AUTHORS).map(|_| DeviceId(rng.bytes())).collect();
        let english_zipf = Zipf::new(english.len(), 1.0);
        let chinese_zipf = Zipf::new(chinese.len(), 1.0);
        let space_zipf = Zipf::new(SPACES, 0.8);
        let author_zipf = Zipf::new(AUTHORS, 0.8);
        let start_ms = 1_767_225_600_000; // 2026-01-01
        let span_ms = 365 * 86_400_000;
        let mut c = Corpus {
            english,
            chinese,
            spaces,
            users,
            devices,
            start_ms,
            span_ms,
            space_of: Vec::with_capacity(n),
            author_of: Vec::with_capacity(n),
            at: Vec::with_capacity(n),
            texts: Vec::with_capacity(n),
            lower: Vec::with_capacity(n),
            english_zipf,
        };
        for i in 0..n {
            let text = if rng.unit() < 0.6 {
                let words = rng.range(5, 20);
                let mut s = String::new();
                for k in 0..words {
                    if k > 0 {
                        s.push(' ');
                    }
                    let w = &c.english[c.english_zipf.sample(&mut rng)];
                    if k == 0 && rng.unit() < 0.5 {
                        let mut chars = w.chars();
                        if let Some(first) = chars.next() {
                            s.extend(first.to_uppercase());
                            s.push_str(chars.as_str());
                        }
                    } else {
                        s.push_str(w);
                    }
                }
                s.push(['.', '?', '!', ' '][rng.below(4)]);
                s.trim_end().to_string()
            } else {
                let words = rng.range(4, 14);
                let mut s = String::new();
                for k in 0..words {
                    if k > 0 && rng.unit() < 0.12 {
                        s.push('，');
                    }
                    if rng.unit() < 0.04 {
                        s.push(' ');
                        s.push_str(MIXED_IN[rng.below(MIXED_IN.len())]);
                        s.push(' ');
                    } else {
                        s.push_str(c.chinese[chinese_zipf.sample(&mut rng)]);
                    }
                }
                s.push(['。', '？', '！', '。'][rng.below(4)]);
                s
            };
            c.space_of.push(space_zipf.sample(&mut rng) as u8);
            c.author_of.push(author_zipf.sample(&mut rng) as u8);
            // Spread over the year in order, a few minutes of jitter.
            let at = start_ms + (i as i64 * span_ms) / n as i64 + rng.below(300_000) as i64;
            c.at.push(at);
            c.lower.push(text.to_lowercase());
            c.texts.push(text);
        }
        c
    }

    fn entry(&self, i: usize) -> Entry {
        let author = self.author_of[i] as usize;
        Entry {
            space: self.spaces[self.space_of[i] as usize],
            kind: HitKind::Message,
            id: Some(format!(
                "{i:08x}{:024x}",
                (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            )),
            author: Some(self.devices[author]),
            user: Some(self.users[author]),
            at_ms: self.at[i],
            text: self.texts[i].clone(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum QueryKind {
    Common,
    Rare,
    Prefix,
    Chinese,
    TwoWords,
    InSpace,
    From,
    DateRange,
}

impl QueryKind {
    const ALL: [QueryKind; 8] = [
        QueryKind::Common,
        QueryKind::Rare,
        QueryKind::Prefix,
        QueryKind::Chinese,
        QueryKind::TwoWords,
        QueryKind::InSpace,
        QueryKind::From,
        QueryKind::DateRange,
    ];

    fn label(self) -> &'static str {
        match self {
            QueryKind::Common => "one common English word",
            QueryKind::Rare => "one rare word",
            QueryKind::Prefix => "a prefix (3 letters)",
            QueryKind::Chinese => "a Chinese word",
            QueryKind::TwoWords => "two English words",
            QueryKind::InSpace => "a word + --space",
            QueryKind::From => "a word + --from",
            QueryKind::DateRange => "a word + a 30-day range",
        }
    }

    fn key(self) -> &'static str {
        match self {
            QueryKind::Common => "common",
            QueryKind::Rare => "rare",
            QueryKind::Prefix => "prefix",
            QueryKind::Chinese => "chinese",
            QueryKind::TwoWords => "two_words",
            QueryKind::InSpace => "space",
            QueryKind::From => "from",
            QueryKind::DateRange => "date_range",
        }
    }
}

#[derive(Clone)]
struct Probe {
    kind: QueryKind,
    query: SearchQuery,
    /// For the scan: lower-cased words that must all occur, and the filters.
    words: Vec<String>,
    space: Option<u8>,
    author: Option<u8>,
}

/// The query mix: `per_kind` of each kind, drawn from the corpus' vocabularies.
fn probes(c: &Corpus, per_kind: usize) -> Vec<Probe> {
    let mut rng = Rng(7_777);
    let mut out = Vec::new();
    // Content words: skip the first ~40 ranks (function words such as "the").
    let word = |rng: &mut Rng, lo: usize, hi: usize| c.english[rng.range(lo, hi)].clone();
    for kind in QueryKind::ALL {
        for _ in 0..per_kind {
            let mut space = None;
            let mut author = None;
            let mut q = SearchQuery::default();
            let words: Vec<String> = match kind {
                QueryKind::Common => vec![word(&mut rng, 20, 60)],
                QueryKind::Rare => vec![word(&mut rng, ENGLISH_VOCABULARY - 1000, ENGLISH_VOCABULARY - 1)],
                QueryKind::Prefix => {
                    let w = loop {
                        let w = word(&mut rng, 40, 600);
                        if w.len() >= 5 && w.chars().all(|ch| ch.is_ascii_alphabetic()) {
                            break w;
                        }
                    };
                    vec![w[..3].to_string()]
                }
                QueryKind::Chinese => vec![c.chinese[rng.range(0, 120)].to_string()],
                QueryKind::TwoWords => vec![word(&mut rng, 40, 400), word(&mut rng, 40, 400)],
                QueryKind::InSpace => {
                    let s = rng.below(SPACES) as u8;
                    q.space = Some(c.spaces[s as usize]);
                    space = Some(s);
                    vec![word(&mut rng, 40, 400)]
                }
                QueryKind::From => {
                    let a = rng.below(AUTHORS) as u8;
                    q.from = Some(c.users[a as usize].to_string());
                    author = Some(a);
                    vec![word(&mut rng, 40, 400)]
                }
                QueryKind::DateRange => {
                    let month = 30 * 86_400_000;
                    let from = c.start_ms + (rng.unit() * (c.span_ms - month) as f64) as i64;
                    q.after_ms = Some(from);
                    q.before_ms = Some(from + month);
                    vec![word(&mut rng, 40, 400)]
                }
            };
            q.text = words.join(" ");
            out.push(Probe {
                kind,
                query: q,
                words: words.iter().map(|w| w.to_lowercase()).collect(),
                space,
                author,
            });
        }
    }
    // Interleave the kinds, so no kind runs on a cache the previous one warmed.
    for i in (1..out.len()).rev() {
        let j = rng.below(i + 1);
        out.swap(i, j);
    }
    out
}

/// The baseline: every message examined, in memory, with `str::contains`
/// (a substring anywhere, so it matches at least what the index does).
fn scan(c: &Corpus, p: &Probe) -> usize {
    let (after, before) = (p.query.after_ms, p.query.before_ms);
    let mut hits = 0;
    for i in 0..c.lower.len() {
        if p.space.is_some_and(|s| c.space_of[i] != s)
            || p.author.is_some_and(|a| c.author_of[i] != a)
            || after.is_some_and(|t| c.at[i] < t)
            || before.is_some_and(|t| c.at[i] >= t)
        {
            continue;
        }
        let text = &c.lower[i];
        if p.words.iter().all(|w| text.contains(w.as_str())) {
            hits += 1;
        }
    }
    std::hint::black_box(hits)
}

/// Segments in an index directory (tantivy names a segment's files `<uuid>.<ext>`).
fn segments(dir: &Path) -> usize {
    let mut ids = HashSet::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some((stem, _)) = name.split_once('.')
                && stem.len() == 32
                && stem.bytes().all(|b| b.is_ascii_hexdigit())
            {
                ids.insert(stem.to_string());
            }
        }
    }
    ids.len()
}

/// Puts every message of `corpus` into `index`, committing every `commit_every`:
/// the time, each commit's time, and the CPU used meanwhile.
fn index_all(
    index: &SearchIndex,
    corpus: &Corpus,
    commit_every: usize,
    ticks: f64,
) -> Result<(Duration, Vec<Duration>, CpuUse)> {
    let n = corpus.texts.len();
    let cpu = CpuMeter::start(vec!["self".into()], ticks);
    let start = Instant::now();
    let mut commits = Vec::new();
    let mut last_report = Instant::now();
    for i in 0..n {
        index.put(&corpus.entry(i))?;
        if (i + 1) % commit_every == 0 || i + 1 == n {
            let t = Instant::now();
            index.commit(false)?;
            commits.push(t.elapsed());
            if last_report.elapsed() > Duration::from_secs(15) {
                last_report = Instant::now();
                eprintln!(
                    "[chat_bench]   {} indexed, {:.0} msgs/s so far",
                    i + 1,
                    (i + 1) as f64 / start.elapsed().as_secs_f64()
                );
            }
        }
    }
    Ok((start.elapsed(), commits, cpu.stop()))
}

/// Runs every probe once against `index`: the times and hit counts per kind.
fn query_all(index: &SearchIndex, probes: &[Probe], readable: &HashSet<SpaceId>) -> Result<Vec<KindStats>> {
    let mut stats: Vec<KindStats> = QueryKind::ALL.iter().map(|_| KindStats::default()).collect();
    for p in probes {
        let k = QueryKind::ALL.iter().position(|&k| k == p.kind).expect("a kind");
        let t = Instant::now();
        let hits = index.search(&p.query, readable)?;
        stats[k].index.push(t.elapsed());
        stats[k].hits += hits.len();
    }
    for s in &mut stats {
        s.index.sort();
    }
    Ok(stats)
}

#[derive(Default)]
struct KindStats {
    index: Vec<Duration>,
    scan: Vec<Duration>,
    hits: usize,
    matches: usize,
}

fn search_part(opts: &Opts, report: &mut Report) -> Result<()> {
    let n = opts.search_messages;
    let ticks = clock_ticks();
    eprintln!("[chat_bench] search: generating {n} messages");
    let t = Instant::now();
    let corpus = Corpus::generate(n);
    let generated = t.elapsed();
    let text_bytes: usize = corpus.texts.iter().map(String::len).sum();
    let chinese_share = corpus.texts.iter().filter(|t| !t.is_ascii()).count() as f64 / n as f64;

    // On the real disk (/tmp), sealed as the daemon keeps it.
    let root = tempfile::Builder::new()
        .prefix("outpost-chat-bench-search-")
        .tempdir()?;
    let dir = root.path().join("search");
    let key = IndexKey::new([7; 32]);
    let (index, fresh) = SearchIndex::open(&dir, key.clone())?;
    ensure!(fresh, "a new index directory should give a new index");
    eprintln!(
        "[chat_bench] search: indexing {n} messages ({:.0} MB of text), commit every {}",
        text_bytes as f64 / MB,
        opts.commit_every
    );
    let (indexing, mut commits, cpu_indexing) = index_all(&index, &corpus, opts.commit_every, ticks)?;
    ensure!(
        index.len() == n as u64,
        "the index holds {} entries, not {n}",
        index.len()
    );
    let (bytes_after, _) = dir_size(&dir);
    let segments_after = segments(&dir);
    // Reopen, as a restarted daemon does; background merges end with the writer.
    let t = Instant::now();
    drop(index);
    let closed = t.elapsed();
    let t = Instant::now();
    let (index, fresh) = SearchIndex::open(&dir, key)?;
    let reopen = t.elapsed();
    ensure!(!fresh && index.len() == n as u64, "the reopened index lost entries");
    let (bytes, files) = dir_size(&dir);

    let readable: HashSet<SpaceId> = corpus.spaces.iter().copied().collect();
    let probes = probes(&corpus, opts.queries);
    eprintln!(
        "[chat_bench] search: {} queries, then the same as linear scans",
        probes.len()
    );
    // Warm-up: the first queries fault the index files in.
    for p in probes.iter().take(20) {
        index.search(&p.query, &readable)?;
    }
    let cpu = CpuMeter::start(vec!["self".into()], ticks);
    let mut stats = query_all(&index, &probes, &readable)?;
    let cpu_queries = cpu.stop();
    // Diagnostic: the rare-word queries again with one readable space (the
    // least used) instead of 50: what the readable-spaces filter costs.
    let quiet = HashSet::from([corpus.spaces[SPACES - 1]]);
    let rare: Vec<Probe> = probes.iter().filter(|p| p.kind == QueryKind::Rare).cloned().collect();
    let one_space = query_all(&index, &rare, &quiet)?;
    let one_space = &one_space[QueryKind::ALL
        .iter()
        .position(|&k| k == QueryKind::Rare)
        .expect("a kind")];
    drop(index);
    for p in &probes {
        let k = QueryKind::ALL.iter().position(|&k| k == p.kind).expect("a kind");
        let t = Instant::now();
        let matches = scan(&corpus, p);
        stats[k].scan.push(t.elapsed());
        stats[k].matches += matches;
    }

    report.section(format!(
        "search: indexing {} messages on disk (sealed index)",
        grouped(n as f64)
    ));
    report.metric("messages", "messages indexed", n as f64, "");
    report.metric("text_mb", "their text (UTF-8)", text_bytes as f64 / MB, "MB");
    report.metric("chinese_pct", "… of which Chinese messages", chinese_share * 100.0, "%");
    report.metric(
        "generate",
        "generating the corpus (not part of indexing)",
        generated.as_secs_f64(),
        "s",
    );
    report.metric(
        "index_rate",
        &format!("indexing: put + commit every {}", grouped(opts.commit_every as f64)),
        n as f64 / indexing.as_secs_f64(),
        "msgs/s",
    );
    report.metric("index_s", "… total time", indexing.as_secs_f64(), "s");
    report.metric(
        "index_cpu",
        "… CPU of the process (all threads) per wall second",
        cpu_indexing.ours[0] / indexing.as_secs_f64(),
        "×",
    );
    commits.sort();
    report.metric(
        "commit_p50",
        "one commit (10,000 new entries), p50",
        ms(quantile(&commits, 0.5)),
        "ms",
    );
    report.metric("commit_max", "one commit, max", ms(quantile(&commits, 1.0)), "ms");
    report.metric(
        "size_after",
        &format!("index on disk after the last commit ({segments_after} segments)"),
        bytes_after as f64 / 1_048_576.0,
        "MiB",
    );
    report.metric("close", "closing the index", ms(closed), "ms");
    report.metric("reopen", "reopening it (as a restarted daemon)", ms(reopen), "ms");
    report.metric(
        "size",
        &format!("index on disk, reopened ({} files, {} segments)", files, segments(&dir)),
        bytes as f64 / 1_048_576.0,
        "MiB",
    );
    report.metric("bytes_per_msg", "… per message", bytes as f64 / n as f64, "B");
    report.metric(
        "noise",
        "CPU used by other processes while indexing",
        cpu_indexing.others_pct,
        "%",
    );

    let title = format!(
        "search: query latency over {} messages, {} queries per kind (top 50 by score, 50 readable spaces)",
        grouped(n as f64),
        opts.queries
    );
    report.table(
        title.clone(),
        &[
            "query",
            "index p50",
            "index p99",
            "index max",
            "scan p50",
            "scan p99",
            "scan p50 / index p50",
            "hits returned (mean)",
            "scan matches (mean)",
        ],
    );
    let mut all_index = Vec::new();
    let mut all_scan = Vec::new();
    let per_kind = opts.queries as f64;
    for (k, s) in QueryKind::ALL.iter().zip(stats.iter_mut()) {
        s.index.sort();
        s.scan.sort();
        all_index.extend(s.index.iter().copied());
        all_scan.extend(s.scan.iter().copied());
        let (p50, p99, max) = (
            quantile(&s.index, 0.5),
            quantile(&s.index, 0.99),
            quantile(&s.index, 1.0),
        );
        let (s50, s99) = (quantile(&s.scan, 0.5), quantile(&s.scan, 0.99));
        report.row(vec![
            k.label().into(),
            format!("{:.2} ms", ms(p50)),
            format!("{:.2} ms", ms(p99)),
            format!("{:.2} ms", ms(max)),
            format!("{:.1} ms", ms(s50)),
            format!("{:.1} ms", ms(s99)),
            ratio(ms(s50) / ms(p50).max(1e-6)),
            format!("{:.1}", s.hits as f64 / per_kind),
            grouped(s.matches as f64 / per_kind),
        ]);
        report.values.push(serde_json::json!({
            "section": title, "key": format!("query_{}", k.key()), "label": k.label(),
            "index_p50_ms": ms(p50), "index_p99_ms": ms(p99), "index_max_ms": ms(max),
            "scan_p50_ms": ms(s50), "scan_p99_ms": ms(s99),
            "hits_mean": s.hits as f64 / per_kind, "scan_matches_mean": s.matches as f64 / per_kind,
        }));
    }
    all_index.sort();
    all_scan.sort();
    let (p50, p99, max) = (
        quantile(&all_index, 0.5),
        quantile(&all_index, 0.99),
        quantile(&all_index, 1.0),
    );
    let (s50, s99) = (quantile(&all_scan, 0.5), quantile(&all_scan, 0.99));
    report.row(vec![
        format!("**all {} queries**", all_index.len()),
        format!("{:.2} ms", ms(p50)),
        format!("{:.2} ms", ms(p99)),
        format!("{:.2} ms", ms(max)),
        format!("{:.1} ms", ms(s50)),
        format!("{:.1} ms", ms(s99)),
        ratio(ms(s50) / ms(p50).max(1e-6)),
        String::new(),
        String::new(),
    ]);
    report.values.push(serde_json::json!({
        "section": title, "key": "query_all", "label": "all queries",
        "index_p50_ms": ms(p50), "index_p99_ms": ms(p99), "index_max_ms": ms(max),
        "scan_p50_ms": ms(s50), "scan_p99_ms": ms(s99),
        "noise_pct": cpu_queries.others_pct,
    }));
    let (o50, o99) = (quantile(&one_space.index, 0.5), quantile(&one_space.index, 0.99));
    report.row(vec![
        "diagnostic: one rare word, 1 readable space instead of 50".into(),
        format!("{:.2} ms", ms(o50)),
        format!("{:.2} ms", ms(o99)),
        format!("{:.2} ms", ms(quantile(&one_space.index, 1.0))),
        String::new(),
        String::new(),
        String::new(),
        format!("{:.1}", one_space.hits as f64 / per_kind),
        String::new(),
    ]);
    report.values.push(serde_json::json!({
        "section": title, "key": "query_rare_one_space", "label": "one rare word, 1 readable space",
        "index_p50_ms": ms(o50), "index_p99_ms": ms(o99),
    }));
    report.note(format!(
        "search: other processes used {:.0} % of the CPUs while the index answered its queries",
        cpu_queries.others_pct,
    ));

    // Diagnostic: the same corpus in an unsealed index in RAM (`in_memory`),
    // the same queries: what sealing and the disk cost, apart from tantivy's work.
    if opts.ram_index {
        eprintln!("[chat_bench] search: the same {n} messages into an unsealed index in RAM");
        let ram = SearchIndex::in_memory()?;
        let (ram_indexing, _, ram_cpu) = index_all(&ram, &corpus, opts.commit_every, ticks)?;
        for p in probes.iter().take(20) {
            ram.search(&p.query, &readable)?;
        }
        let ram_stats = query_all(&ram, &probes, &readable)?;
        let title = "search, diagnostic: sealed index on disk vs unsealed index in RAM (same corpus, same queries)";
        report.table(
            title,
            &["", "sealed, on disk (above)", "unsealed, in RAM", "sealed / unsealed"],
        );
        let rate = |d: Duration| n as f64 / d.as_secs_f64();
        report.row(vec![
            "indexing rate".into(),
            format!("{} msgs/s", grouped(rate(indexing))),
            format!("{} msgs/s", grouped(rate(ram_indexing))),
            ratio(ram_indexing.as_secs_f64().max(1e-9).recip() * indexing.as_secs_f64()),
        ]);
        report.values.push(serde_json::json!({
            "section": title, "key": "ram_index_rate", "label": "indexing rate, unsealed in RAM",
            "value": rate(ram_indexing), "unit": "msgs/s", "noise_pct": ram_cpu.others_pct,
        }));
        let mut all_ram = Vec::new();
        for ((k, disk), ram) in QueryKind::ALL.iter().zip(&stats).zip(&ram_stats) {
            all_ram.extend(ram.index.iter().copied());
            let (d50, r50) = (quantile(&disk.index, 0.5), quantile(&ram.index, 0.5));
            report.row(vec![
                format!("{}, p50", k.label()),
                format!("{:.2} ms", ms(d50)),
                format!("{:.2} ms", ms(r50)),
                ratio(ms(d50) / ms(r50).max(1e-6)),
            ]);
            report.values.push(serde_json::json!({
                "section": title, "key": format!("ram_query_{}", k.key()), "label": k.label(),
                "ram_p50_ms": ms(r50), "ram_p99_ms": ms(quantile(&ram.index, 0.99)),
            }));
        }
        all_ram.sort();
        for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
            let (d, r) = (quantile(&all_index, q), quantile(&all_ram, q));
            report.row(vec![
                format!("**all queries, {name}**"),
                format!("{:.2} ms", ms(d)),
                format!("{:.2} ms", ms(r)),
                ratio(ms(d) / ms(r).max(1e-6)),
            ]);
        }
        report.values.push(serde_json::json!({
            "section": title, "key": "ram_query_all", "label": "all queries, unsealed in RAM",
            "ram_p50_ms": ms(quantile(&all_ram, 0.5)), "ram_p99_ms": ms(quantile(&all_ram, 0.99)),
        }));
    }
    Ok(())
}

// ---------------------------------------------------------------------------

async fn run(opts: &Opts, report: &mut Report) -> Result<()> {
    if let Some(busy) = busy_note() {
        report.note(busy);
    }
    if opts.rooms || opts.files {
        daemons(opts, report).await?;
    }
    if opts.search {
        let o = opts.clone();
        let mut part = Report::default();
        let (result, part) = tokio::task::spawn_blocking(move || {
            let r = search_part(&o, &mut part);
            (r, part)
        })
        .await?;
        report.tables.extend(part.tables);
        report.values.extend(part.values);
        for n in part.notes {
            report.notes.push(n);
        }
        result?;
    }
    Ok(())
}

fn main() -> Result<()> {
    let Some(opts) = parse_opts()? else {
        return Ok(());
    };
    warn_if_debug("chat_bench");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut report = Report::default();
    let started = Instant::now();
    let load_at_start = load_average();
    let outcome = until_interrupted(&runtime, run(&opts, &mut report));
    let date = today();
    let machine = machine();
    if opts.json {
        println!("{:#}", report.to_json(&machine, &opts, &date));
    } else {
        report.print_tables(&format!(
            "Outpost chat benchmark, {date}, {}, load average {load_at_start} at the start, {} at the end, {:.0} s",
            revision_and_cpus(&machine),
            load_average(),
            started.elapsed().as_secs_f64()
        ));
    }
    outcome
}
