//! Shared documents under real editing traces (issue 5), side by side with raw
//! Automerge in the same run:
//!
//! 1. **Sequential traces** (`automerge-paper`, `seph-blog1`): every keystroke is
//!    replayed through Outpost's document layer (`TextDoc::splice`, one change per
//!    group of edits, the change handed back for sealing) and through raw Automerge
//!    with the same grouping (one transaction of `splice_text` on `ROOT.text` per
//!    group, committed), once without and once with reading the change back by its
//!    hash, which is what `TextDoc::splice` does. Time, peak heap, saved size, load.
//! 2. **Concurrent traces** (`friendsforever`, `clownschool`): one replica per
//!    author. Before each of an author's edits, its replica merges exactly the
//!    causal past the trace names (the txn's parents), through `TextDoc::apply`
//!    (the validated path the node uses). Every replica must end at `endContent`.
//! 3. **Sync to a fresh peer** between two real daemons on loopback: the paper trace
//!    is written into a document on daemon A through the local API, then a fresh
//!    daemon B is invited. Time until B shows the whole text, and the bytes between
//!    the daemons, counted by a TCP relay the bench puts between them.
//!
//! ```text
//! cargo build --release -p outpost-cli        # the daemon of part 3
//! cargo run --release --example doc_bench     # about 3 minutes on 2 cores
//! cargo run --release --example doc_bench -- --help
//! ```
//!
//! The traces are Joseph Gentle's `editing-traces` collection (CC BY 4.0;
//! automerge-paper by Martin Kleppmann), read from `../shared/data/editing-traces`
//! next to the repository unless `--traces DIR` says otherwise.
//!
//! A measurement tool: it checks that every replay ends at the trace's final text,
//! and asserts nothing about time. BENCHMARKS.md ("Shared documents") holds the
//! results and says what each number means.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    collections::BTreeMap,
    hint::black_box,
    io::Read,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use automerge::{
    ActorId, Automerge, Change, ChangeHash, ObjId, ObjType, ROOT, ReadDoc,
    transaction::{CommitOptions, Transactable},
};
use outpost_crdt::{
    DocId,
    doc::{Doc, Model},
    genesis, snapshot,
    text::TextDoc,
    writer,
};
use outpost_node::{
    api::{CreateDoc, Created, Invite},
    control::Role,
    core::{DocAnswer, DocEdit, DocFormat, DocQuery, Splice, Written},
    ids::SpaceId,
};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/harness.rs"]
mod harness;
#[path = "support/measure.rs"]
mod measure;
use daemon::{Daemon, locate_outpost, wait_for};
use harness::Table;
use measure::{CpuMeter, clock_ticks, load_average, median, ms, revision, thousands};

const HELP: &str = "\
Shared documents under editing traces (see BENCHMARKS.md, \"Shared documents\")

USAGE: cargo run --release --example doc_bench -- [OPTIONS]

Part 3 needs target/release/outpost: cargo build --release -p outpost-cli

  --traces DIR        the editing traces     [../shared/data/editing-traces from the repo]
  --group N           edits per change in the sequential replays          [10]
  --no-keystrokes     skip the automerge-paper replay at one edit per change
  --reps N            repetitions of each sequential replay and load; medians [3]
  --concurrent-reps N repetitions of each concurrent replay (~10 s each)   [1]
  --daemon-group N    edits per write when filling daemon A               [100]
  --outpost PATH      the outpost binary      [next to this example's exe]
  --only sequential|concurrent|daemons   run one part only
  --keep              keep the daemons' homes and logs (path printed)
";

/// Claimed time of the first change; change `i` claims `i` × 100 ms later (one
/// change per ~100 ms of typing, as performance.md suggests coalescing).
const T0_MS: i64 = 1_700_000_000_000;

fn time_of(change: usize) -> i64 {
    T0_MS + 100 * change as i64
}

/// The document every in-process replay writes.
const DOC: DocId = DocId([7; 16]);

// ---------------------------------------------------------------------------
// Heap accounting

/// The system allocator, counting the live heap bytes and their high-water mark.
struct CountingAlloc;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

#[global_allocator]
static HEAP: CountingAlloc = CountingAlloc;

fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

fn shrank(bytes: usize) {
    LIVE.fetch_sub(bytes, Ordering::Relaxed);
}

// SAFETY: every call goes unchanged to `System`; the counters only look at sizes.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract, which we pass on.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator, with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`; the caller upholds `realloc`'s contract.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                shrank(layout.size() - new_size);
            }
        }
        new
    }
}

/// Heap use of one measured phase, relative to what was live when it started.
struct HeapProbe {
    base: usize,
}

impl HeapProbe {
    /// Starts a phase: the high-water mark is reset to what is live now.
    fn start() -> Self {
        let base = LIVE.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        Self { base }
    }

    /// The most the phase had allocated at once.
    fn peak(&self) -> usize {
        PEAK.load(Ordering::Relaxed).saturating_sub(self.base)
    }

    /// What the phase still holds.
    fn held(&self) -> usize {
        LIVE.load(Ordering::Relaxed).saturating_sub(self.base)
    }
}

// ---------------------------------------------------------------------------
// CPU noise: what other processes used while a part ran

/// On-CPU time of the calling thread so far (`/proc/thread-self/schedstat`).
/// Unlike wall time, it leaves out the time other processes held the CPU, which
/// on a shared 2-CPU machine is most of the noise.
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns = stat.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0);
    Duration::from_nanos(ns)
}

/// Starts measuring how much of the machine's CPUs other processes use: this
/// process and the daemons of `pids` count as ours.
fn noise_meter(pids: &[u32]) -> CpuMeter {
    let ours = std::iter::once("self".to_string()).chain(pids.iter().map(u32::to_string));
    CpuMeter::start(ours.collect(), clock_ticks())
}

// ---------------------------------------------------------------------------
// Options

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Sequential,
    Concurrent,
    Daemons,
}

#[derive(Debug)]
struct Opts {
    traces: PathBuf,
    group: usize,
    keystrokes: bool,
    reps: usize,
    concurrent_reps: usize,
    daemon_group: usize,
    outpost: Option<PathBuf>,
    only: Option<Part>,
    keep: bool,
}

impl Opts {
    fn runs(&self, part: Part) -> bool {
        self.only.is_none_or(|p| p == part)
    }
}

fn parse_opts() -> Result<Option<Opts>> {
    let defaults = Opts {
        traces: Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/editing-traces"),
        group: 10,
        keystrokes: true,
        reps: 3,
        concurrent_reps: 1,
        daemon_group: 100,
        outpost: None,
        only: None,
        keep: false,
    };
    harness::parse(HELP, defaults, |o, arg, args| {
        match arg {
            "--traces" => o.traces = args.value(arg)?,
            "--group" => o.group = args.value::<usize>(arg)?.max(1),
            "--no-keystrokes" => o.keystrokes = false,
            "--reps" => o.reps = args.value::<usize>(arg)?.max(1),
            "--concurrent-reps" => o.concurrent_reps = args.value::<usize>(arg)?.max(1),
            "--daemon-group" => o.daemon_group = args.value::<usize>(arg)?.max(1),
            "--outpost" => o.outpost = Some(args.value(arg)?),
            "--only" => {
                o.only = Some(match args.value::<String>(arg)?.as_str() {
                    "sequential" => Part::Sequential,
                    "concurrent" => Part::Concurrent,
                    "daemons" => Part::Daemons,
                    other => bail!("--only takes sequential, concurrent or daemons, not {other:?}"),
                })
            }
            "--keep" => o.keep = true,
            _ => return Ok(false),
        }
        Ok(true)
    })
}

// ---------------------------------------------------------------------------
// Traces

/// One editing trace, in the `editing-traces` JSON format.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Trace {
    end_content: String,
    txns: Vec<Txn>,
}

#[derive(Deserialize)]
struct Txn {
    patches: Vec<Patch>,
    /// Concurrent traces: the earlier txns whose merged state this txn edits.
    #[serde(default)]
    parents: Vec<usize>,
    /// Concurrent traces: who typed it.
    #[serde(default)]
    agent: usize,
}

/// `[pos, numDeleted, inserted]`, positions in Unicode code points.
#[derive(Deserialize)]
struct Patch(usize, usize, String);

/// An edit as `TextDoc::splice` takes it: (position, characters deleted, text inserted).
type Edit<'a> = (usize, usize, &'a str);

impl Trace {
    fn load(dir: &Path, name: &str) -> Result<Trace> {
        let path = dir.join(format!("{name}.json.gz"));
        let file = std::fs::File::open(&path)
            .with_context(|| format!("opening {} (point --traces at the editing traces)", path.display()))?;
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(file).read_to_end(&mut json)?;
        let trace: Trace = serde_json::from_slice(&json).with_context(|| format!("parsing {}", path.display()))?;
        for (i, txn) in trace.txns.iter().enumerate() {
            ensure!(
                txn.parents.iter().all(|&p| p < i),
                "{name}: txn {i} names a parent that does not come before it"
            );
        }
        Ok(trace)
    }

    /// Every patch, in order.
    fn edits(&self) -> Vec<Edit<'_>> {
        self.txns.iter().flat_map(|t| &t.patches).map(edit).collect()
    }

    fn authors(&self) -> usize {
        self.txns.iter().map(|t| t.agent + 1).max().unwrap_or(1)
    }
}

fn edit(p: &Patch) -> Edit<'_> {
    (p.0, p.1, p.2.as_str())
}

// ---------------------------------------------------------------------------
// Replicas: Outpost's document layer and raw Automerge behind one interface

/// A replica of one text, which the traces are replayed into.
trait Replica {
    /// Applies `edits` in order as one change claimed at `time_ms`. Returns the
    /// change when this replica hands its changes out (to seal or send them).
    fn splice(&mut self, edits: &[Edit<'_>], time_ms: i64) -> Result<Option<Change>>;

    /// Merges changes made elsewhere, in one call.
    fn apply(&mut self, changes: Vec<Change>) -> Result<()>;

    fn automerge(&self) -> &Automerge;

    /// The text, as the replay built it.
    fn text(&self) -> String;
}

/// Outpost's document layer: `TextDoc::splice`, which commits and reads the
/// change back for sealing, and `TextDoc::apply`, which checks the text rules first.
struct Outpost {
    doc: TextDoc,
    actor: ActorId,
}

impl Outpost {
    fn new(actor: ActorId) -> Self {
        Self {
            doc: TextDoc::new(DOC),
            actor,
        }
    }
}

impl Replica for Outpost {
    fn splice(&mut self, edits: &[Edit<'_>], time_ms: i64) -> Result<Option<Change>> {
        Ok(Some(self.doc.splice(self.actor.clone(), edits, time_ms)?))
    }

    fn apply(&mut self, changes: Vec<Change>) -> Result<()> {
        self.doc.apply(changes)?;
        Ok(())
    }

    fn automerge(&self) -> &Automerge {
        self.doc.automerge()
    }

    fn text(&self) -> String {
        // TextDoc's text starts empty, without block markers: trace positions map directly.
        self.doc.raw_text()
    }
}

/// Raw Automerge: a text at `ROOT.text`, one transaction of `splice_text` per group.
struct Raw {
    doc: Automerge,
    text: ObjId,
    /// Read each change back by its hash after the commit, as `TextDoc::splice`
    /// does (an application must, to send the change anywhere).
    fetch: bool,
}

impl Raw {
    /// A document whose one change creates an empty `ROOT.text` (fixed actor and
    /// time, so replicas made apart share it, like Outpost's genesis), writing as `actor`.
    fn new(actor: ActorId, fetch: bool) -> Result<Self> {
        let mut doc = Automerge::new().with_actor(ActorId::from([0u8; 16]));
        let mut tx = doc.transaction();
        let text = tx.put_object(ROOT, "text", ObjType::Text)?;
        tx.commit_with(CommitOptions::default().with_time(0));
        doc.set_actor(actor);
        Ok(Self { doc, text, fetch })
    }
}

impl Replica for Raw {
    fn splice(&mut self, edits: &[Edit<'_>], time_ms: i64) -> Result<Option<Change>> {
        let mut tx = self.doc.transaction();
        for &(pos, del, ins) in edits {
            tx.splice_text(&self.text, pos, del as isize, ins)?;
        }
        let (hash, _) = tx.commit_with(CommitOptions::default().with_time(time_ms));
        let hash = hash.context("a group of edits changed nothing")?;
        if !self.fetch {
            return Ok(None);
        }
        Ok(Some(
            self.doc.get_change_by_hash(&hash).context("the change just made")?,
        ))
    }

    fn apply(&mut self, changes: Vec<Change>) -> Result<()> {
        self.doc.apply_changes(changes)?;
        Ok(())
    }

    fn automerge(&self) -> &Automerge {
        &self.doc
    }

    fn text(&self) -> String {
        self.doc.text(&self.text).unwrap_or_default()
    }
}

/// What is replayed, and how: the rows' column heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavour {
    /// Raw Automerge, commit only.
    RawCommit,
    /// Raw Automerge, commit + `get_change_by_hash`.
    RawFetch,
    /// `TextDoc::splice` / `TextDoc::apply`.
    Outpost,
}

impl Flavour {
    fn label(self) -> &'static str {
        match self {
            Flavour::RawCommit => "raw Automerge: commit",
            Flavour::RawFetch => "raw: commit + get_change_by_hash",
            Flavour::Outpost => "Outpost: TextDoc::splice",
        }
    }

    /// A replica at the start of the text, writing as `actor`.
    fn replica(self, actor: ActorId) -> Result<Box<dyn Replica>> {
        Ok(match self {
            Flavour::RawCommit => Box::new(Raw::new(actor, false)?),
            Flavour::RawFetch => Box::new(Raw::new(actor, true)?),
            Flavour::Outpost => Box::new(Outpost::new(actor)),
        })
    }
}

/// The actor of device `device` (its key filled with that byte) writing the
/// bench's document in its `incarnation`.
fn actor(device: u8, incarnation: u64) -> ActorId {
    writer::actor_id(&[device; 32], &DOC, incarnation)
}

// ---------------------------------------------------------------------------
// Part 1: sequential traces

/// One sequential replay.
struct SeqRun {
    time: Duration,
    /// On-CPU time of the replay (see [`thread_cpu`]).
    cpu: Duration,
    /// Most heap the replay had allocated at once (the replica included).
    peak_heap: usize,
    /// Heap the replica holds afterwards.
    held_heap: usize,
    saved: Vec<u8>,
}

/// Replays `groups` into a fresh replica of `flavour`, one change per group:
/// times the replay and probes its heap, then checks the final text and saves.
fn replay_sequential(flavour: Flavour, groups: &[&[Edit<'_>]], end: &str) -> Result<SeqRun> {
    let heap = HeapProbe::start();
    let mut replica = flavour.replica(actor(1, 1))?;
    let (started, cpu) = (Instant::now(), thread_cpu());
    for (i, group) in groups.iter().enumerate() {
        black_box(replica.splice(group, time_of(i))?);
    }
    let (time, cpu) = (started.elapsed(), thread_cpu() - cpu);
    let (peak_heap, held_heap) = (heap.peak(), heap.held());
    ensure!(
        replica.text() == end,
        "{}: the replayed text differs from endContent",
        flavour.label()
    );
    Ok(SeqRun {
        time,
        cpu,
        peak_heap,
        held_heap,
        saved: replica.automerge().save(),
    })
}

/// Median of `reps` timings of `f`.
fn median_time(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<Duration> {
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let started = Instant::now();
        f()?;
        times.push(started.elapsed());
    }
    Ok(median(times))
}

/// The indexes `0..n`, starting at `rep % n`: each repetition runs the flavours
/// in another order, so whatever the previous run left behind (a grown heap, a
/// warm cache) favours none of them.
fn rotated(n: usize, rep: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |k| (k + rep) % n)
}

/// Each writer's last change in a document, (seq, hash, author): what those
/// writers' signed envelopes declare to whoever receives a snapshot of it.
fn last_changes(doc: &Automerge, doc_id: &DocId) -> BTreeMap<ActorId, Declared> {
    let genesis = genesis::genesis_actor(doc_id);
    let writer = || outpost_crdt::Author {
        user: String::new(),
        editor: true,
        admin: false,
    };
    let mut last: BTreeMap<ActorId, Declared> = BTreeMap::new();
    for meta in doc.get_changes_meta(&[]) {
        if *meta.actor == genesis {
            continue;
        }
        let entry = last.entry(meta.actor.into_owned()).or_insert((0, meta.hash, writer()));
        if meta.seq >= entry.0 {
            *entry = (meta.seq, meta.hash, writer());
        }
    }
    last
}

/// The node's way of taking a whole document from a peer (the snapshot path, less
/// the envelope's signature, decryption and storage): `snapshot::open` loads the
/// bytes and proves every change lies on its writer's signed chain and passes the
/// text rules, then `Doc::absorb` merges it into a fresh document. Returns the text.
/// A writer's last change as a snapshot's receiver knows it.
type Declared = (u64, ChangeHash, outpost_crdt::Author);

fn open_snapshot(doc_id: &DocId, bytes: &[u8], last: &BTreeMap<ActorId, Declared>) -> Result<String> {
    let opened = snapshot::open(Model::Text, doc_id, bytes, last)?;
    let mut doc = Doc::new(Model::Text, *doc_id);
    doc.absorb(opened)?;
    Ok(doc.text().map(TextDoc::raw_text).unwrap_or_default())
}

/// The flavours of a sequential replay, in table order.
const SEQUENTIAL: [Flavour; 3] = [Flavour::RawCommit, Flavour::RawFetch, Flavour::Outpost];

/// What one sequential trace measured; per-flavour vectors follow [`SEQUENTIAL`].
struct SeqResults {
    edits: usize,
    changes: usize,
    /// Medians of the replays' wall and on-CPU times.
    time: Vec<Duration>,
    cpu: Vec<Duration>,
    /// The first replay of each flavour (heap, saved bytes).
    first: Vec<SeqRun>,
    /// Median `Automerge::load` of each flavour's saved bytes.
    load: Vec<Duration>,
    /// Outpost's saved bytes through `snapshot::open` + `Doc::absorb`, and the
    /// reference `Automerge::load` + `get_changes(&[])`.
    opened: Duration,
    rebuilt: Duration,
    noise: f64,
}

/// Replays one sequential trace at `group` edits per change in every flavour,
/// `reps` times (interleaved and rotated, so drift hits all alike), then loads
/// each saved document `reps` times.
fn measure_sequential(name: &str, trace: &Trace, group: usize, reps: usize) -> Result<SeqResults> {
    let edits = trace.edits();
    let groups: Vec<&[Edit<'_>]> = edits.chunks(group).collect();
    let cpu = noise_meter(&[]);
    let mut runs: Vec<Vec<SeqRun>> = SEQUENTIAL.iter().map(|_| Vec::new()).collect();
    for rep in 0..reps {
        for f in rotated(SEQUENTIAL.len(), rep) {
            let label = SEQUENTIAL[f].label();
            eprintln!(
                "[doc_bench] {name}, {group} per change: {label} (run {}/{reps})",
                rep + 1
            );
            runs[f].push(replay_sequential(SEQUENTIAL[f], &groups, &trace.end_content)?);
        }
    }
    let medians = |f: fn(&SeqRun) -> Duration| -> Vec<Duration> {
        runs.iter().map(|r| median(r.iter().map(f).collect())).collect()
    };
    let (time, cpu_time) = (medians(|r| r.time), medians(|r| r.cpu));
    let first: Vec<SeqRun> = runs
        .into_iter()
        .map(|r| r.into_iter().next().expect("reps ≥ 1"))
        .collect();
    let load = first
        .iter()
        .map(|run| median_time(reps, || Automerge::load(&run.saved).map(drop).map_err(Into::into)))
        .collect::<Result<Vec<_>>>()?;
    let saved = &first[2].saved;
    let last = last_changes(&Automerge::load(saved)?, &DOC);
    ensure!(
        open_snapshot(&DOC, saved, &last)? == trace.end_content,
        "the opened snapshot's text differs from endContent"
    );
    let opened = median_time(reps, || open_snapshot(&DOC, saved, &last).map(drop))?;
    let rebuilt = median_time(reps, || {
        black_box(Automerge::load(saved)?.get_changes(&[]));
        Ok(())
    })?;
    Ok(SeqResults {
        edits: edits.len(),
        changes: groups.len(),
        time,
        cpu: cpu_time,
        first,
        load,
        opened,
        rebuilt,
        noise: cpu.stop().others_pct,
    })
}

/// Part 1 for one trace and group size: measures, then tabulates.
fn sequential(name: &str, trace: &Trace, group: usize, reps: usize) -> Result<Table> {
    let r = measure_sequential(name, trace, group, reps)?;
    let mut t = Table::new(
        format!(
            "{name}: {} edits in {} changes ({group} per change)",
            thousands(r.edits as u64),
            thousands(r.changes as u64)
        ),
        &[
            "",
            SEQUENTIAL[0].label(),
            SEQUENTIAL[1].label(),
            SEQUENTIAL[2].label(),
            "TextDoc / raw + fetch",
            "TextDoc / raw commit",
        ],
    );
    const TARGET: f64 = 1.2;
    let ms3 = |d: &[Duration]| [0, 1, 2].map(|i| ms(d[i]));
    let bytes3 = |f: fn(&SeqRun) -> usize| [0, 1, 2].map(|i| f(&r.first[i]) as f64);
    let per_change: Vec<Duration> = r.cpu.iter().map(|d| *d / r.changes as u32).collect();
    // The two times carry the target.
    let rows: [Row<3>; 8] = [
        (format!("replay time (median of {reps})"), ms3(&r.time), fmt_ms),
        (
            "… on-CPU time (leaves out waiting for the CPU)".into(),
            ms3(&r.cpu),
            fmt_ms,
        ),
        ("… on-CPU per change".into(), ms3(&per_change).map(|v| v * 1e3), fmt_us),
        ("peak heap during the replay".into(), bytes3(|r| r.peak_heap), fmt_bytes),
        (
            "heap held by the document after it".into(),
            bytes3(|r| r.held_heap),
            fmt_bytes,
        ),
        ("saved size (`save()`)".into(), bytes3(|r| r.saved.len()), fmt_bytes),
        (
            format!("load: `Automerge::load` of the saved bytes (median of {reps})"),
            ms3(&r.load),
            fmt_ms,
        ),
        (
            "final text = endContent (checked, else the bench fails)".into(),
            [1.0; 3],
            |_| "yes".into(),
        ),
    ];
    for (i, (label, v, fmt)) in rows.into_iter().enumerate() {
        let mut vs_fetch = ratio(v[2], v[1]);
        if i < 2 {
            let verdict = if v[2] / v[1] <= TARGET { "met" } else { "**missed**" };
            vs_fetch = format!("{vs_fetch} (target ≤ {TARGET:.2}×: {verdict})");
        }
        t.row(vec![
            label,
            fmt(v[0]),
            fmt(v[1]),
            fmt(v[2]),
            vs_fetch,
            ratio(v[2], v[0]),
        ]);
    }
    let of_load = |d: Duration| {
        vec![
            "—".into(),
            "—".into(),
            fmt_ms(ms(d)),
            format!("{} of raw's load", ratio(ms(d), ms(r.load[1]))),
            String::new(),
        ]
    };
    let mut opened = vec![format!(
        "load as a fresh peer does: `snapshot::open` + `Doc::absorb` (median of {reps})"
    )];
    opened.extend(of_load(r.opened));
    t.row(opened);
    let mut rebuilt =
        vec!["… reference: `Automerge::load` + `get_changes(&[])` (every change rebuilt, as `open` does)".into()];
    rebuilt.extend(of_load(r.rebuilt));
    t.row(rebuilt);
    t.note(format!(
        "CPU used by other processes meanwhile: {:.0} % of the machine.",
        r.noise
    ));
    Ok(t)
}

// ---------------------------------------------------------------------------
// Part 2: concurrent traces

/// One concurrent replay.
#[derive(Default)]
struct ConcurrentRun {
    /// The whole replay, the final merge included.
    time: Duration,
    /// Its on-CPU time (see [`thread_cpu`]).
    cpu: Duration,
    final_merge: Duration,
    /// Time in the `apply` calls before edits.
    merging: Duration,
    /// `apply` calls before an edit (each merges what the author lacked of its parents' past).
    merges: usize,
    /// Changes (and their bytes) handed from one replica to another, final merge included.
    exchanged: usize,
    exchanged_bytes: usize,
    /// Edits made on a fork because the replica held more than the edit's causal past.
    forks: usize,
    peak_heap: usize,
    saved: usize,
}

/// Marks and returns, in trace order, the txns of the causal past of `parents`
/// that a replica does not hold yet. What a replica holds is causally closed, so
/// the walk stops at anything held.
fn missing_past(txns: &[Txn], parents: &[usize], held: &mut [bool]) -> Vec<usize> {
    let mut missing = Vec::new();
    let mut stack: Vec<usize> = parents.to_vec();
    while let Some(j) = stack.pop() {
        if held[j] {
            continue;
        }
        held[j] = true;
        missing.push(j);
        stack.extend(txns[j].parents.iter().copied().filter(|&p| !held[p]));
    }
    // Parents come before their children in a trace: trace order is causal order.
    missing.sort_unstable();
    missing
}

fn same_heads(mut a: Vec<ChangeHash>, mut b: Vec<ChangeHash>) -> bool {
    a.sort();
    b.sort();
    a == b
}

/// Makes an edit on the document as it was at `heads` (the replica holds more
/// than the edit's causal past), as a fresh writer (the replica's actor may have
/// written past `heads`, and Automerge refuses a reused seq: the node's
/// `StaleWriter` case), then merges it into the replica.
fn splice_on_fork(
    replica: &mut dyn Replica,
    heads: &[ChangeHash],
    actor: ActorId,
    edits: &[Edit<'_>],
    time_ms: i64,
) -> Result<Change> {
    let mut fork = replica.automerge().fork_at(heads)?.with_actor(actor);
    let text = match fork.get(ROOT, "text")? {
        Some((_, id)) => id,
        None => bail!("the fork has no text"),
    };
    let mut tx = fork.transaction();
    for &(pos, del, ins) in edits {
        tx.splice_text(&text, pos, del as isize, ins)?;
    }
    let (hash, _) = tx.commit_with(CommitOptions::default().with_time(time_ms));
    let hash = hash.context("an edit changed nothing")?;
    let change = fork.get_change_by_hash(&hash).context("the change just made")?;
    replica.apply(vec![change.clone()])?;
    Ok(change)
}

/// Replays a concurrent trace, one replica per author (device `author + 1`),
/// one change per txn. Before each txn its author's replica merges the part of
/// the txn's causal past it lacks, from the changes the other replicas made; if
/// it then holds more than that past, the edit is made on a fork. At the end
/// every replica merges everything and must read `endContent`.
fn replay_concurrent(flavour: Flavour, name: &str, trace: &Trace) -> Result<ConcurrentRun> {
    let n = trace.txns.len();
    let heap = HeapProbe::start();
    let mut replicas = (0..trace.authors())
        .map(|a| flavour.replica(actor(a as u8 + 1, 1)))
        .collect::<Result<Vec<_>>>()?;
    let start_heads = replicas[0].automerge().get_heads();
    let mut made: Vec<Option<Change>> = vec![None; n];
    let mut held = vec![vec![false; n]; replicas.len()];
    let mut run = ConcurrentRun::default();
    let mut incarnations = 1;
    let made_by = |made: &[Option<Change>], j: usize| made[j].clone().expect("txns are replayed in trace order");
    let (started, cpu) = (Instant::now(), thread_cpu());
    for (i, txn) in trace.txns.iter().enumerate() {
        let (replica, held) = (&mut replicas[txn.agent], &mut held[txn.agent]);
        let missing = missing_past(&trace.txns, &txn.parents, held);
        if !missing.is_empty() {
            let batch: Vec<Change> = missing.iter().map(|&j| made_by(&made, j)).collect();
            run.merges += 1;
            run.exchanged += batch.len();
            run.exchanged_bytes += batch.iter().map(|c| c.raw_bytes().len()).sum::<usize>();
            let merging = Instant::now();
            replica.apply(batch)?;
            run.merging += merging.elapsed();
        }
        let want: Vec<ChangeHash> = if txn.parents.is_empty() {
            start_heads.clone()
        } else {
            txn.parents.iter().map(|&p| made_by(&made, p).hash()).collect()
        };
        let edits: Vec<Edit<'_>> = txn.patches.iter().map(edit).collect();
        let change = if same_heads(replica.automerge().get_heads(), want.clone()) {
            replica
                .splice(&edits, time_of(i))?
                .context("this replica hands its changes out")?
        } else {
            run.forks += 1;
            incarnations += 1;
            let fresh = actor(txn.agent as u8 + 1, incarnations);
            splice_on_fork(replica.as_mut(), &want, fresh, &edits, time_of(i))?
        };
        held[i] = true;
        made[i] = Some(change);
    }
    let merge_started = Instant::now();
    for (replica, held) in replicas.iter_mut().zip(&held) {
        let batch: Vec<Change> = (0..n).filter(|&j| !held[j]).map(|j| made_by(&made, j)).collect();
        if !batch.is_empty() {
            run.exchanged += batch.len();
            run.exchanged_bytes += batch.iter().map(|c| c.raw_bytes().len()).sum::<usize>();
            replica.apply(batch)?;
        }
    }
    run.final_merge = merge_started.elapsed();
    run.time = started.elapsed();
    run.cpu = thread_cpu() - cpu;
    run.peak_heap = heap.peak();
    let heads = replicas[0].automerge().get_heads();
    for (a, replica) in replicas.iter().enumerate() {
        ensure!(
            replica.text() == trace.end_content,
            "{name}, {}: replica of author {a} does not end at endContent",
            flavour.label()
        );
        ensure!(
            same_heads(replica.automerge().get_heads(), heads.clone()),
            "{name}: replicas end at different heads"
        );
    }
    run.saved = replicas[0].automerge().save().len();
    Ok(run)
}

/// Replays one concurrent trace on raw Automerge (commit + `get_change_by_hash`,
/// `apply_changes`) and on `TextDoc`, `reps` times each, interleaved. One table.
fn concurrent(name: &str, trace: &Trace, reps: usize) -> Result<Table> {
    let flavours = [Flavour::RawFetch, Flavour::Outpost];
    let cpu = noise_meter(&[]);
    let mut runs: [Vec<ConcurrentRun>; 2] = [Vec::new(), Vec::new()];
    for rep in 0..reps {
        for f in rotated(flavours.len(), rep) {
            eprintln!("[doc_bench] {name}: {} (run {}/{reps})", flavours[f].label(), rep + 1);
            runs[f].push(replay_concurrent(flavours[f], name, trace)?);
        }
    }
    let noise = cpu.stop().others_pct;
    let patches: usize = trace.txns.iter().map(|t| t.patches.len()).sum();
    let mut t = Table::new(
        format!(
            "{name}: {} txns ({} edits) by {} authors, one replica each, one change per txn",
            thousands(trace.txns.len() as u64),
            thousands(patches as u64),
            trace.authors()
        ),
        &[
            "",
            "raw Automerge (apply_changes)",
            "Outpost (TextDoc::apply)",
            "TextDoc / raw",
        ],
    );
    // A timing: its median over the runs; anything else: the first run's value.
    let timed = |f: fn(&ConcurrentRun) -> Duration| runs.each_ref().map(|r| ms(median(r.iter().map(f).collect())));
    let first = |f: fn(&ConcurrentRun) -> usize| runs.each_ref().map(|r| f(&r[0]) as f64);
    let count = |v: f64| thousands(v as u64);
    let rows: [Row<2>; 11] = [
        (format!("replay time (median of {reps})"), timed(|r| r.time), fmt_ms),
        (
            "… on-CPU time (leaves out waiting for the CPU)".into(),
            timed(|r| r.cpu),
            fmt_ms,
        ),
        (
            "… of which merging before edits (the `apply` calls below)".into(),
            timed(|r| r.merging),
            fmt_ms,
        ),
        (
            "… of which the final merge of everything".into(),
            timed(|r| r.final_merge),
            fmt_ms,
        ),
        (
            "merges before an edit (`apply` calls)".into(),
            first(|r| r.merges),
            count,
        ),
        (
            "changes exchanged between replicas".into(),
            first(|r| r.exchanged),
            count,
        ),
        (
            "… their bytes (raw change bytes)".into(),
            first(|r| r.exchanged_bytes),
            fmt_bytes,
        ),
        (
            "edits made on a fork (replica held more than the parents' past)".into(),
            first(|r| r.forks),
            count,
        ),
        (
            "peak heap during the replay (all replicas, and the changes handed around)".into(),
            first(|r| r.peak_heap),
            fmt_bytes,
        ),
        (
            "saved size of the merged document".into(),
            first(|r| r.saved),
            fmt_bytes,
        ),
        (
            "every replica = endContent, same heads (checked, else the bench fails)".into(),
            [1.0; 2],
            |_| "yes".into(),
        ),
    ];
    for (label, [raw, ours], fmt) in rows {
        t.row(vec![label, fmt(raw), fmt(ours), ratio(ours, raw)]);
    }
    t.note(format!(
        "CPU used by other processes meanwhile: {noise:.0} % of the machine."
    ));
    Ok(t)
}

// ---------------------------------------------------------------------------
// Part 3: two real daemons

/// The document's current text (`doc show --format text`), if readable on `d`.
async fn text(d: &Daemon, space: SpaceId) -> Option<String> {
    let query = DocQuery::Show {
        at: None,
        format: DocFormat::Text,
    };
    match d.client.post(&format!("/v1/docs/{space}/read"), &query).await {
        Ok(DocAnswer::Show(view)) => Some(view.content),
        _ => None,
    }
}

/// The saved document on `d` (`doc export --format automerge`: base64 of `save()`).
async fn saved(d: &Daemon, space: SpaceId) -> Result<Vec<u8>> {
    let query = DocQuery::Show {
        at: None,
        format: DocFormat::Automerge,
    };
    match d.client.post(&format!("/v1/docs/{space}/read"), &query).await? {
        DocAnswer::Show(view) => Ok(data_encoding::BASE64.decode(view.content.as_bytes())?),
        _ => bail!("daemon {} answered a show with something else", d.name),
    }
}

/// `doc show --format text` renders the text as one paragraph plus a newline.
fn shows(content: &str, end: &str) -> bool {
    content.strip_suffix('\n') == Some(end)
}

/// A loopback TCP relay from B to A that counts the bytes each way: the bytes on
/// the wire between the daemons (TCP payload, i.e. Noise-encrypted Yamux frames
/// with libp2p's own traffic; no IP or TCP headers).
struct Relay {
    port: u16,
    to_a: Arc<AtomicU64>,
    to_b: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(target_port: u16) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (to_a, to_b, connections) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let (a, b, c) = (Arc::clone(&to_a), Arc::clone(&to_b), Arc::clone(&connections));
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::Relaxed);
                let Ok(outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await else {
                    continue;
                };
                let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
                let (from_b, into_b) = inbound.into_split();
                let (from_a, into_a) = outbound.into_split();
                tokio::spawn(pump(from_b, into_a, Arc::clone(&a)));
                tokio::spawn(pump(from_a, into_b, Arc::clone(&b)));
            }
        });
        Ok(Self {
            port,
            to_a,
            to_b,
            connections,
            task,
        })
    }

    fn addr(&self) -> String {
        format!("/ip4/127.0.0.1/tcp/{}", self.port)
    }

    /// Bytes relayed so far: (B → A, A → B).
    fn bytes(&self) -> (u64, u64) {
        (self.to_a.load(Ordering::Relaxed), self.to_b.load(Ordering::Relaxed))
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies one direction of a relayed connection, counting the bytes.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    count: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                count.fetch_add(n as u64, Ordering::Relaxed);
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

/// What filling daemon A measured.
struct Filled {
    space: SpaceId,
    /// Each write's round trip, in order.
    writes: Vec<Duration>,
    time: Duration,
    saved: Vec<u8>,
}

/// Creates a document on A and writes the whole trace into it through the local
/// API, `per_write` edits per `DocEdit::Splices` write (each one change, sealed
/// and committed durably before the answer); checks A's text.
async fn fill(a: &Daemon, trace: &Trace, per_write: usize) -> Result<Filled> {
    let doc = CreateDoc {
        name: "automerge-paper".into(),
        members: vec![],
        replicators: vec![],
    };
    let Created { space } = a.client.post("/v1/docs", &doc).await?;
    let path = format!("/v1/docs/{space}");
    let edits = trace.edits();
    let mut writes = Vec::with_capacity(edits.len().div_ceil(per_write));
    let started = Instant::now();
    for group in edits.chunks(per_write) {
        let edits = group
            .iter()
            .map(|&(pos, delete, insert)| Splice {
                pos,
                delete,
                insert: insert.to_string(),
            })
            .collect();
        let write = Instant::now();
        let written: Written = a.client.post(&path, &DocEdit::Splices { edits }).await?;
        writes.push(write.elapsed());
        ensure!(
            written.version.is_some(),
            "a write of {} edits changed nothing",
            group.len()
        );
    }
    let time = started.elapsed();
    let text = text(a, space).await.context("A does not show its own document")?;
    ensure!(shows(&text, &trace.end_content), "A's text differs from endContent");
    Ok(Filled {
        space,
        writes,
        time,
        saved: saved(a, space).await?,
    })
}

/// What B's catch-up measured.
struct CaughtUp {
    invite_acked: Duration,
    /// B answers reads of the document (it holds the genesis and its invite).
    known: Duration,
    shown: Duration,
    /// Bytes (B → A, A → B) from the invite until B showed the text, and 2 s later.
    at_shown: (u64, u64),
    settled: (u64, u64),
    relayed_connections: u64,
    b_space: serde_json::Value,
    noise: f64,
}

/// With A filled and B running, connected through the relay and idle: A invites
/// B; times the invite's acknowledgement and B showing the whole text, and
/// counts the bytes between them.
async fn catch_up(bin: &Path, a: &Daemon, b: &Daemon, relay: &Relay, space: SpaceId, end: &str) -> Result<CaughtUp> {
    let invite = Invite {
        member: b.card(bin)?,
        role: Role::Writer,
        replicator: false,
    };
    let pids = [a.pid(), b.pid()];
    let cpu = noise_meter(&pids);
    let before = relay.bytes();
    let started = Instant::now();
    let _: serde_json::Value = a.client.post(&format!("/v1/spaces/{space}/members"), &invite).await?;
    let invite_acked = started.elapsed();
    let mut known = None;
    loop {
        if let Some(text) = text(b, space).await {
            known.get_or_insert(started.elapsed());
            if shows(&text, end) {
                break;
            }
        }
        ensure!(
            started.elapsed() < Duration::from_secs(120),
            "B did not show the whole text within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let shown = started.elapsed();
    let at_shown = relay.bytes();
    let noise = cpu.stop().others_pct;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let settled = relay.bytes();
    let since = |(x, y): (u64, u64)| (x - before.0, y - before.1);
    Ok(CaughtUp {
        invite_acked,
        known: known.unwrap_or_default(),
        shown,
        at_shown: since(at_shown),
        settled: since(settled),
        relayed_connections: relay.connections.load(Ordering::Relaxed),
        b_space: b.space_status(space).await.unwrap_or_default(),
        noise,
    })
}

/// In-process references for B's catch-up, on A's saved bytes (medians of
/// `reps`): `Automerge::load`, and `snapshot::open` + `Doc::absorb`, B's core's
/// work on a snapshot less the envelope's signature, decryption and storage.
fn reference_loads(space: SpaceId, saved: &[u8], end: &str, reps: usize) -> Result<(Duration, Duration)> {
    let doc_id = space.chat_shard(0);
    let last = last_changes(&Automerge::load(saved)?, &doc_id);
    ensure!(
        open_snapshot(&doc_id, saved, &last)? == end,
        "A's saved document, opened here, differs from endContent"
    );
    let load = median_time(reps, || Automerge::load(saved).map(drop).map_err(Into::into))?;
    let open = median_time(reps, || open_snapshot(&doc_id, saved, &last).map(drop))?;
    Ok((load, open))
}

/// Part 3: fills a document on daemon A with the paper trace, then starts a fresh
/// daemon B that reaches A only through the counting relay, and measures B's
/// catch-up after A invites it.
async fn daemons(opts: &Opts, trace: &Trace) -> Result<Table> {
    let (bin, stale) = locate_outpost(opts.outpost.as_deref())?;
    let root = tempfile::Builder::new().prefix("outpost-doc-bench-").tempdir()?;
    eprintln!("[doc_bench] daemons: homes in {}", root.path().display());
    let mut a = Daemon::init(&bin, root.path(), "a")?;
    let mut b = Daemon::init(&bin, root.path(), "b")?;
    a.spawn(&bin, None)?;
    a.wait_api().await?;
    let relay = Relay::start(a.port).await?;
    eprintln!(
        "[doc_bench] daemons: writing the paper trace into A, {} edits per write",
        opts.daemon_group
    );
    let filled = fill(&a, trace, opts.daemon_group).await?;
    b.spawn(&bin, Some(&relay.addr()))?;
    b.wait_api().await?;
    let (ar, br) = (&a, &b);
    wait_for(Duration::from_secs(20), "the daemons to connect", || async move {
        (ar.peers().await > 0 && br.peers().await > 0).then_some(())
    })
    .await?;
    // Let identify and the first offers pass: the bytes counted are the sync's.
    tokio::time::sleep(Duration::from_millis(500)).await;
    eprintln!("[doc_bench] daemons: A invites B");
    let caught = catch_up(&bin, &a, &b, &relay, filled.space, &trace.end_content).await?;
    a.check_alive()?;
    b.check_alive()?;
    let reference = reference_loads(filled.space, &filled.saved, &trace.end_content, opts.reps)?;

    let mut t = sync_table(opts, &filled, &caught, reference);
    if let Some(stale) = stale {
        t.note(stale);
    }
    for d in [&a, &b] {
        if let Some(first) = d.warning_lines().first() {
            t.note(format!(
                "daemon {} logged warnings or errors; the first: {first}",
                d.name
            ));
        }
    }
    drop((a, b));
    if opts.keep {
        t.note(format!("daemon homes and logs kept in {}", root.keep().display()));
    }
    Ok(t)
}

/// The table of part 3.
fn sync_table(opts: &Opts, filled: &Filled, caught: &CaughtUp, (load, open): (Duration, Duration)) -> Table {
    let saved = filled.saved.len() as f64;
    let mut t = Table::new(
        "automerge-paper synced to a fresh daemon over loopback (two `outpost` processes)",
        &["metric", "value"],
    );
    let writes = filled.writes.len();
    let tenth = (writes / 10).max(1);
    let p50 = |w: &[Duration]| fmt_ms(ms(median(w.to_vec())));
    let (up, down) = caught.at_shown;
    let both = |(up, down): (u64, u64)| (up + down) as f64;
    let field = |k: &str| caught.b_space[k].as_u64().map_or("?".into(), thousands);
    let rows = [
        (
            format!(
                "fill A: {} writes of {} edits (`DocEdit::Splices`, one change each, durable)",
                thousands(writes as u64),
                opts.daemon_group
            ),
            fmt_ms(ms(filled.time)),
        ),
        (
            "… one write (HTTP + splice + seal + durable commit), p50 of the first / last tenth".into(),
            format!(
                "{} / {}",
                p50(&filled.writes[..tenth]),
                p50(&filled.writes[writes - tenth..])
            ),
        ),
        (
            "A's saved document (`doc export --format automerge`)".into(),
            fmt_bytes(saved),
        ),
        (
            "invite → acknowledged by A (durable)".into(),
            fmt_ms(ms(caught.invite_acked)),
        ),
        (
            "invite → B knows the document (answers reads)".into(),
            fmt_ms(ms(caught.known)),
        ),
        ("invite → B shows the whole text".into(), fmt_ms(ms(caught.shown))),
        ("bytes A → B until then".into(), fmt_bytes(down as f64)),
        ("bytes B → A until then".into(), fmt_bytes(up as f64)),
        (
            "… both ways / saved document".into(),
            ratio(both(caught.at_shown), saved),
        ),
        (
            "both ways until 2 s later (acks, next offers)".into(),
            format!(
                "{} ({})",
                fmt_bytes(both(caught.settled)),
                ratio(both(caught.settled), saved)
            ),
        ),
        (
            "B holds: envelopes stored, snapshots held".into(),
            format!("{}, {}", field("envelopes"), field("snapshots")),
        ),
        (
            format!(
                "reference, in-process: `Automerge::load` of A's saved document (median of {})",
                opts.reps
            ),
            fmt_ms(ms(load)),
        ),
        (
            format!(
                "reference, in-process: `snapshot::open` + `Doc::absorb` of it (B's core, less crypto and storage; median of {})",
                opts.reps
            ),
            fmt_ms(ms(open)),
        ),
    ];
    for (label, value) in rows {
        t.row(vec![label, value]);
    }
    t.note(format!(
        "The relay saw {} TCP connection(s) from B to A; B reaches A only through it, and A was given no address of B.",
        caught.relayed_connections
    ));
    t.note(format!(
        "CPU used by other processes during the catch-up: {:.0} % of the machine.",
        caught.noise
    ));
    t
}

// ---------------------------------------------------------------------------
// Output

/// A row of values before formatting: label, one value per column, how to show them.
type Row<const N: usize> = (String, [f64; N], fn(f64) -> String);

fn fmt_ms(v: f64) -> String {
    match v {
        v if v < 10.0 => format!("{v:.2} ms"),
        v if v < 100.0 => format!("{v:.1} ms"),
        v => format!("{} ms", thousands(v.round() as u64)),
    }
}

fn fmt_us(v: f64) -> String {
    format!("{v:.1} µs")
}

fn fmt_bytes(v: f64) -> String {
    match v {
        v if v >= 10.0 * 1024.0 * 1024.0 => format!("{:.1} MiB", v / (1024.0 * 1024.0)),
        v if v >= 10.0 * 1024.0 => format!("{:.1} KiB", v / 1024.0),
        v => format!("{} B", thousands(v.round() as u64)),
    }
}

fn ratio(num: f64, den: f64) -> String {
    match den {
        d if d > 0.0 => format!("{:.2}×", num / d),
        _ => "—".into(),
    }
}

// ---------------------------------------------------------------------------

/// Runs the parts asked for, in order, and returns their tables. The paper trace
/// (read once) serves parts 1 and 3.
fn run(opts: &Opts) -> Result<Vec<Table>> {
    let mut tables = Vec::new();
    let paper = Trace::load(&opts.traces, "automerge-paper")?;
    if opts.runs(Part::Sequential) {
        tables.push(sequential("automerge-paper", &paper, opts.group, opts.reps)?);
        let seph = Trace::load(&opts.traces, "seph-blog1")?;
        tables.push(sequential("seph-blog1", &seph, opts.group, opts.reps)?);
        drop(seph);
        if opts.keystrokes && opts.group != 1 {
            tables.push(sequential("automerge-paper", &paper, 1, 1)?);
        }
    }
    if opts.runs(Part::Concurrent) {
        for name in ["friendsforever", "clownschool"] {
            tables.push(concurrent(
                name,
                &Trace::load(&opts.traces, name)?,
                opts.concurrent_reps,
            )?);
        }
    }
    if opts.runs(Part::Daemons) {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        tables.push(runtime.block_on(daemons(opts, &paper))?);
    }
    Ok(tables)
}

fn main() -> Result<()> {
    let Some(opts) = parse_opts()? else {
        return Ok(());
    };
    let started = Instant::now();
    let load_before = load_average();
    let tables = run(&opts)?;
    println!(
        "## doc_bench — revision {}, {} CPUs, release build: {}",
        revision(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        !cfg!(debug_assertions)
    );
    println!(
        "\nOptions: {} edits per change, {} reps (medians) of the sequential replays, {} of the concurrent ones, \
         {} edits per daemon write. Load average at the start {load_before}, at the end {}. Took {:.0} s.",
        opts.group,
        opts.reps,
        opts.concurrent_reps,
        opts.daemon_group,
        load_average(),
        started.elapsed().as_secs_f64()
    );
    for t in &tables {
        t.print();
    }
    Ok(())
}
