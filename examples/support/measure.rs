//! Measuring helpers shared by the benches: quantiles, number formats, sizes
//! on disk, the machine and revision a run is on, and process accounting from
//! Linux `/proc` (our CPU, and everybody else's, as a noise indicator).
//! Included with `#[path]`: not an example of its own.

// Each bench uses part of it.
#![allow(dead_code)]

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The `q` quantile of sorted samples (nearest rank).
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// The median of some samples.
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    quantile(&v, 0.5)
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1234567.8` → `1,234,568`.
pub fn grouped(v: f64) -> String {
    let n = v.round() as i64;
    let digits = thousands(n.unsigned_abs());
    if n < 0 { format!("-{digits}") } else { digits }
}

/// Bytes and files under `dir`, recursively.
pub fn dir_size(dir: &Path) -> (u64, usize) {
    let mut bytes = 0;
    let mut files = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if let Ok(m) = e.metadata() {
                if m.is_dir() {
                    let (b, f) = dir_size(&e.path());
                    bytes += b;
                    files += f;
                } else {
                    bytes += m.len();
                    files += 1;
                }
            }
        }
    }
    (bytes, files)
}

pub fn today() -> String {
    outpost_node::clock::utc(outpost_node::clock::now_ms() as i64)[..10].to_string()
}

/// The commit the sources are at, `+dirty` with uncommitted changes.
pub fn revision() -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown".into();
    };
    match git(&["status", "--porcelain", "--untracked-files=no"]) {
        Some(s) if !s.is_empty() => format!("{head}+dirty"),
        _ => head,
    }
}

pub fn machine() -> serde_json::Value {
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
        "load_average": load_average(),
    })
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A note for the results when the machine was busy as the run started.
pub fn busy_note() -> Option<String> {
    let load = load_average();
    let one_minute: f64 = load.split(' ').next().and_then(|l| l.parse().ok()).unwrap_or(0.0);
    (one_minute > 0.5).then(|| {
        format!("the machine was not idle at the start (load average {load}): other processes skew these numbers")
    })
}

pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// User + system CPU seconds of a process (`self` for this one).
pub fn cpu_seconds(pid: &str, ticks: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks)
}

pub fn rss_mib(pid: &str) -> Option<f64> {
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

/// Busy CPU seconds of the whole machine since boot (all CPUs, from /proc/stat).
pub fn machine_busy_seconds(ticks: f64) -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...
    let busy = v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)? + v.get(7).unwrap_or(&0.0);
    Some(busy / ticks)
}

pub fn available_cpus() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

/// CPU seconds of some processes since `start`, and of the machine.
pub struct CpuMeter {
    pids: Vec<String>,
    start: Vec<f64>,
    machine: f64,
    at: Instant,
    ticks: f64,
}

pub struct CpuUse {
    /// CPU seconds per watched process.
    pub ours: Vec<f64>,
    /// Share of the machine's CPU capacity that other processes used meanwhile.
    pub others_pct: f64,
}

impl CpuMeter {
    pub fn start(pids: Vec<String>, ticks: f64) -> Self {
        let start = pids.iter().map(|p| cpu_seconds(p, ticks).unwrap_or(0.0)).collect();
        Self {
            pids,
            start,
            machine: machine_busy_seconds(ticks).unwrap_or(0.0),
            at: Instant::now(),
            ticks,
        }
    }

    pub fn stop(&self) -> CpuUse {
        let ours: Vec<f64> = self
            .pids
            .iter()
            .zip(&self.start)
            .map(|(pid, start)| cpu_seconds(pid, self.ticks).unwrap_or(0.0) - start)
            .collect();
        let machine = machine_busy_seconds(self.ticks).unwrap_or(0.0) - self.machine;
        let capacity = self.at.elapsed().as_secs_f64() * available_cpus();
        let others = (machine - ours.iter().sum::<f64>()).max(0.0);
        CpuUse {
            ours,
            others_pct: others / capacity.max(1e-9) * 100.0,
        }
    }
}
