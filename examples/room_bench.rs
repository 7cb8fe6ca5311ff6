//! Large rooms (issue 7, point 6): opening a room's latest 50 messages, and
//! the memory a node holds, for rooms of 10k, 100k (and, when asked, 1M)
//! messages, on the real core (redb store on disk, sealing, group commit).
//!
//! For each size a fresh core makes a room and posts the messages through
//! `CoreHandle::send`, many at once (so group commit packs them into changes
//! of `--per-change` messages, as a busy room's would be). Then it measures:
//!
//! - **latest 50**: `CoreHandle::messages(space, 50)`, what `outpost chat log`
//!   asks, repeated (p50, p99) — served from the room's last shards;
//! - **whole log** as the baseline in the same run: the same call for every
//!   message (what every read cost before rooms were sharded);
//! - **RSS** of this process after building; and of a fresh process that
//!   opens the same store (this bench run again with `--reopen`), after its
//!   first latest-50: the memory a node holds for the room at rest, which is
//!   what must not grow with the room's history (the building process keeps
//!   its allocator's high-water mark);
//! - **start-up**: that process's core start (loading the room from the
//!   store), the first latest-50 after it, and the closed shards it set aside.
//!
//! With `--history from-join --joins J` the room's history starts at each
//! join, and J new users join it at even intervals while it fills: each join
//! starts an epoch, whose messages roll over into a run of shards of its own.
//!
//! With `--newcomer` one more user joins the built room and receives every
//! stored envelope through the sync path (offer, push, ingest frame by frame),
//! as a peer's node would; a fresh process then opens the newcomer's store and
//! measures the same (in a from-join room, all of it is history from before
//! its join, which it stores and forwards but cannot read).
//!
//! ```text
//! cargo run --release --example room_bench                      # 10k and 100k messages
//! cargo run --release --example room_bench -- --sizes 1000000   # one size (long)
//! cargo run --release --example room_bench -- --sizes 100000 --history from-join --joins 10
//! cargo run --release --example room_bench -- --sizes 100000 --per-change 1 --history from-join --newcomer
//! ```
//!
//! A measurement tool: it checks that the latest 50 equal the whole log's tail,
//! and asserts nothing about time. BENCHMARKS.md ("Large rooms") holds results.

#[path = "support/harness.rs"]
mod harness;
#[path = "support/measure.rs"]
mod measure;

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Result, ensure};
use measure::{dir_size, ms, quantile, rss_mib};
use outpost_node::{
    control::{History, Role},
    core::{self, CoreHandle, Grant, Options},
    identity::DeviceKeys,
    ids::{DeviceId, SpaceId},
    sync,
};

const HELP: &str = "\
room_bench [--sizes 10000,100000] [--per-change 16] [--reps 200]
           [--history shared|from-join] [--joins 0] [--newcomer] [--json]
Builds a room of each size on a fresh core (temp dir on disk) and times
opening its latest 50 messages against reading the whole log. With
`--history from-join`, `--joins J` new users join while the room fills
(each join starts an epoch). `--newcomer`: one more user joins the built
room, syncs all of it, and a fresh process opens its store.
";

struct Args {
    sizes: Vec<usize>,
    per_change: usize,
    reps: usize,
    history: History,
    /// New users joining while the room fills, at even intervals.
    joins: usize,
    /// One more user joins the built room and syncs it whole.
    newcomer: bool,
    json: bool,
    /// Internal: open the store in this home and measure a start (the child).
    reopen: Option<(std::path::PathBuf, SpaceId)>,
}

/// The options, or `None` after `--help`.
fn args() -> Result<Option<Args>> {
    let defaults = Args {
        sizes: vec![10_000, 100_000],
        per_change: 16,
        reps: 200,
        history: History::Shared,
        joins: 0,
        newcomer: false,
        json: false,
        reopen: None,
    };
    harness::parse(HELP, defaults, |out, arg, args| {
        match arg {
            "--sizes" => {
                out.sizes = args
                    .value::<String>(arg)?
                    .split(',')
                    .map(|s| s.trim().replace('_', "").parse())
                    .collect::<Result<_, _>>()?
            }
            "--per-change" => out.per_change = args.value(arg)?,
            "--reps" => out.reps = args.value(arg)?,
            "--history" => {
                out.history = match args.value::<String>(arg)?.as_str() {
                    "shared" => History::Shared,
                    "from-join" => History::FromJoin,
                    other => anyhow::bail!("--history is `shared` or `from-join`, not {other:?}"),
                }
            }
            "--joins" => out.joins = args.value(arg)?,
            "--newcomer" => out.newcomer = true,
            "--json" => out.json = true,
            "--reopen" => {
                let home = args.value(arg)?;
                let space = args.value("--reopen HOME SPACE")?;
                out.reopen = Some((home, space));
            }
            _ => return Ok(false),
        }
        Ok(true)
    })
}

#[derive(serde::Serialize)]
struct Row {
    messages: usize,
    changes_about: usize,
    build_s: f64,
    build_msgs_per_s: f64,
    latest50_p50_ms: f64,
    latest50_p99_ms: f64,
    whole_log_ms: f64,
    rss_after_build_mib: f64,
    restart_s: f64,
    first_latest50_after_restart_ms: f64,
    rss_after_restart_mib: f64,
    shards_set_aside: usize,
    store_mib: f64,
    /// With `--newcomer`: what it measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    newcomer: Option<Newcomer>,
}

#[derive(serde::Serialize)]
struct Newcomer {
    sync_s: f64,
    envelopes: usize,
    restart_s: f64,
    rss_after_restart_mib: f64,
    before_join: usize,
    store_mib: f64,
}

/// What the fresh process that reopens the store measures.
#[derive(serde::Serialize, serde::Deserialize)]
struct Reopened {
    start_s: f64,
    first_latest50_ms: f64,
    rss_mib: f64,
    shards_set_aside: usize,
    /// Stored content it cannot read, written before it joined.
    #[serde(default)]
    before_join: usize,
    /// The ids of the latest 50, to check against the builder's.
    latest_ids: Vec<String>,
}

/// The child: starts a core on `home`, reads the latest 50 once, and prints
/// what it measured as JSON.
async fn reopen(home: &Path, space: SpaceId) -> Result<()> {
    let keys = Arc::new(DeviceKeys::load(home)?);
    let t = Instant::now();
    let (core, thread) = core::spawn_with(home.to_path_buf(), keys, Options::default())?;
    // The start is done when the core answers.
    core.status().await?;
    let start = t.elapsed();
    let t = Instant::now();
    let latest = core.messages(space, 50).await?;
    let first = t.elapsed();
    let status = core.status().await?;
    let room = status.iter().find(|s| s.space == space);
    let set_aside = room.map_or(0, |s| s.shards_set_aside);
    let before_join = room.map_or(0, |s| s.before_join);
    let out = Reopened {
        start_s: start.as_secs_f64(),
        first_latest50_ms: ms(first),
        rss_mib: rss_mib("self").unwrap_or(f64::NAN),
        shards_set_aside: set_aside,
        before_join,
        latest_ids: latest.into_iter().map(|m| m.id).collect(),
    };
    drop(core);
    thread.join().expect("core thread");
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

/// Posts `n` messages, `per_change` sends in flight at once (one group commit each).
async fn fill(core: &CoreHandle, space: SpaceId, n: usize, per_change: usize) -> Result<()> {
    let mut sent = 0;
    while sent < n {
        let wave = per_change.min(n - sent);
        let sends = (0..wave).map(|i| {
            let core = core.clone();
            let text = format!(
                "message {} — the deploy window moves to Thursday, 部署窗口改到周四",
                sent + i
            );
            tokio::spawn(async move { core.send(space, text, None).await })
        });
        for r in futures::future::join_all(sends).await {
            r??;
        }
        sent += wave;
    }
    Ok(())
}

/// The child process measuring a start on `home`.
fn reopened(home: &Path, space: SpaceId) -> Result<Reopened> {
    let child = std::process::Command::new(std::env::current_exe()?)
        .arg("--reopen")
        .arg(home)
        .arg(space.to_string())
        .stderr(std::process::Stdio::inherit())
        .output()?;
    ensure!(child.status.success(), "the reopening process failed");
    Ok(serde_json::from_slice(&child.stdout)?)
}

/// A new user joins the room `core` holds and syncs all of it from `core`
/// (device `from`); then a fresh process opens its store.
async fn newcomer(core: &CoreHandle, from: DeviceId, space: SpaceId, home: &Path) -> Result<Newcomer> {
    let keys = Arc::new(DeviceKeys::create(home)?);
    let me = keys.device_id();
    core.invite(space, keys.cert().to_card(), Grant::Member(Role::Writer))
        .await?;
    let (joined, thread) = core::spawn_with(home.to_path_buf(), keys.clone(), Options::default())?;
    let t = Instant::now();
    let mut envelopes = 0;
    loop {
        let mut offer = joined.make_offer(from).await?;
        if offer.iter().all(|s| s.space != space) {
            offer.push(sync::SpaceVv {
                space,
                vv: Default::default(),
            });
        }
        let push = core.take_offer(me, offer).await?.push;
        if push.is_empty() {
            break;
        }
        envelopes += push.len();
        for frame in sync::into_frames(push) {
            joined.ingest(from, frame).await?;
        }
    }
    let sync_s = t.elapsed().as_secs_f64();
    drop(joined);
    thread.join().expect("newcomer core thread");
    drop(keys);
    let reopened = reopened(home, space)?;
    Ok(Newcomer {
        sync_s,
        envelopes,
        restart_s: reopened.start_s,
        rss_after_restart_mib: reopened.rss_mib,
        before_join: reopened.before_join,
        store_mib: dir_size(home).0 as f64 / (1 << 20) as f64,
    })
}

async fn latest(core: &CoreHandle, space: SpaceId, reps: usize) -> Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        let got = core.messages(space, 50).await?;
        times.push(t.elapsed());
        ensure!(got.len() == 50, "latest 50 gave {}", got.len());
    }
    times.sort();
    Ok(times)
}

async fn one_size(n: usize, args: &Args) -> Result<Row> {
    let dir = tempfile::tempdir_in(std::env::temp_dir())?;
    let keys = Arc::new(DeviceKeys::create(dir.path())?);
    let (core, thread) = core::spawn_with(dir.path().to_path_buf(), keys.clone(), Options::default())?;
    let space = core
        .create_chat("big room".into(), args.history, vec![], vec![])
        .await?;
    // Homes of the users who join, kept until the room is measured.
    let joiners = tempfile::tempdir_in(std::env::temp_dir())?;
    let t = Instant::now();
    let waves = args.joins + 1;
    for wave in 0..waves {
        if wave > 0 {
            let home = joiners.path().join(wave.to_string());
            std::fs::create_dir_all(&home)?;
            let card = DeviceKeys::create(&home)?.cert().to_card();
            core.invite(space, card, Grant::Member(Role::Writer)).await?;
        }
        let part = n * (wave + 1) / waves - n * wave / waves;
        fill(&core, space, part, args.per_change).await?;
    }
    let build = t.elapsed();
    let rss_after_build = rss_mib("self").unwrap_or(f64::NAN);

    let times = latest(&core, space, args.reps).await?;
    let t = Instant::now();
    let whole = core.messages(space, usize::MAX).await?;
    let whole_log = t.elapsed();
    let tail = core.messages(space, 50).await?;
    ensure!(
        whole[whole.len() - 50..] == tail[..],
        "the latest 50 are the log's tail"
    );

    let newcomer = match args.newcomer {
        true => {
            let home = joiners.path().join("newcomer");
            std::fs::create_dir_all(&home)?;
            Some(newcomer(&core, keys.device_id(), space, &home).await?)
        }
        false => None,
    };
    drop(core);
    thread.join().expect("core thread");
    drop(keys);
    let reopened = reopened(dir.path(), space)?;
    let tail_ids: Vec<String> = tail.into_iter().map(|m| m.id).collect();
    ensure!(reopened.latest_ids == tail_ids, "the same latest 50 after a restart");
    Ok(Row {
        messages: n,
        changes_about: n.div_ceil(args.per_change),
        build_s: build.as_secs_f64(),
        build_msgs_per_s: n as f64 / build.as_secs_f64(),
        latest50_p50_ms: ms(quantile(&times, 0.5)),
        latest50_p99_ms: ms(quantile(&times, 0.99)),
        whole_log_ms: ms(whole_log),
        rss_after_build_mib: rss_after_build,
        restart_s: reopened.start_s,
        first_latest50_after_restart_ms: reopened.first_latest50_ms,
        rss_after_restart_mib: reopened.rss_mib,
        shards_set_aside: reopened.shards_set_aside,
        store_mib: dir_size(dir.path()).0 as f64 / (1 << 20) as f64,
        newcomer,
    })
}

fn main() -> Result<()> {
    let Some(args) = args()? else {
        return Ok(());
    };
    let rt = tokio::runtime::Runtime::new()?;
    if let Some((home, space)) = &args.reopen {
        return rt.block_on(reopen(home, *space));
    }
    let mut rows = Vec::new();
    for &n in &args.sizes {
        eprintln!("room of {n} messages…");
        rows.push(rt.block_on(one_size(n, &args))?);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let history = match args.history {
        History::Shared => "shared".to_string(),
        History::FromJoin => format!("from-join, {} joins", args.joins),
    };
    println!("history: {history}");
    println!(
        "| messages | changes | build (msgs/s) | latest 50 p50 / p99 | whole log (≤ 100k) | RSS built | restart | first latest 50 after restart | RSS restarted | shards set aside | store |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | ≈{} | {:.1} s ({:.0}) | {:.2} / {:.2} ms | {:.0} ms | {:.0} MiB | {:.1} s | {:.2} ms | {:.0} MiB | {} | {:.0} MiB |",
            r.messages,
            r.changes_about,
            r.build_s,
            r.build_msgs_per_s,
            r.latest50_p50_ms,
            r.latest50_p99_ms,
            r.whole_log_ms,
            r.rss_after_build_mib,
            r.restart_s,
            r.first_latest50_after_restart_ms,
            r.rss_after_restart_mib,
            r.shards_set_aside,
            r.store_mib
        );
    }
    for (r, n) in rows.iter().filter_map(|r| Some((r, r.newcomer.as_ref()?))) {
        println!(
            "newcomer to {} messages: synced {} envelopes in {:.1} s; restart {:.1} s, RSS restarted {:.0} MiB, {} from before its join, store {:.0} MiB",
            r.messages, n.envelopes, n.sync_s, n.restart_s, n.rss_after_restart_mib, n.before_join, n.store_mib
        );
    }
    Ok(())
}
