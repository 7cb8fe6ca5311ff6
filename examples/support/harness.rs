//! What every bench does around its measurements: reading its options, running
//! until done or interrupted, and printing Markdown tables, notes and the JSON
//! of a run. Included with `#[path]`: not an example of its own.

// Each bench uses part of it.
#![allow(dead_code)]

use std::{fmt::Debug, str::FromStr};

use anyhow::{Context, Result, anyhow, bail};

use crate::measure::revision;

// ---------------------------------------------------------------------------
// Options

/// The command line after the flag being read.
pub struct Args(std::iter::Skip<std::env::Args>);

impl Args {
    /// The next argument as `flag`'s value.
    pub fn value<T: FromStr>(&mut self, flag: &str) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        let raw = self.0.next().with_context(|| format!("{flag} needs a value"))?;
        raw.parse().map_err(|e| anyhow!("{flag} {raw:?}: {e}"))
    }
}

/// Reads the command line into `opts`: `flag` takes each argument (reading its
/// values from the [`Args`] it is given) and answers whether it knows it.
/// `-h`/`--help` prints `help` and gives `None`; `cargo bench`'s `--bench` is
/// ignored; any other argument is an error.
pub fn parse<O>(
    help: &str,
    mut opts: O,
    mut flag: impl FnMut(&mut O, &str, &mut Args) -> Result<bool>,
) -> Result<Option<O>> {
    let mut args = Args(std::env::args().skip(1));
    while let Some(arg) = args.0.next() {
        match arg.as_str() {
            "-h" | "--help" => {
                print!("{help}");
                return Ok(None);
            }
            // `cargo bench`-style harness flags are ignored.
            "--bench" => {}
            other => {
                if !flag(&mut opts, other, &mut args)? {
                    bail!("unknown option {other:?}; see --help");
                }
            }
        }
    }
    Ok(Some(opts))
}

// ---------------------------------------------------------------------------
// Running

/// Says so on stderr when `example` was not built with optimisations.
pub fn warn_if_debug(example: &str) {
    if cfg!(debug_assertions) {
        eprintln!("[{example}] warning: not a release build; run with `cargo run --release --example {example}`");
    }
}

/// Runs `work` on `runtime` until it ends, or until Ctrl-C ends it as interrupted
/// (what it measured so far can still be printed).
pub fn until_interrupted(
    runtime: &tokio::runtime::Runtime,
    work: impl std::future::Future<Output = Result<()>>,
) -> Result<()> {
    runtime.block_on(async {
        tokio::select! {
            r = work => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        }
    })
}

// ---------------------------------------------------------------------------
// Reporting

/// One Markdown table: a title, a header, rows, and notes printed below it.
pub struct Table {
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub notes: Vec<String>,
}

impl Table {
    pub fn new(title: impl Into<String>, columns: &[&str]) -> Self {
        Self {
            title: title.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn note(&mut self, text: String) {
        self.notes.push(text);
    }

    /// The table under a `###` heading; the first column left-aligned, the
    /// others right-aligned.
    pub fn print(&self) {
        println!("\n### {}\n", self.title);
        println!("| {} |", self.columns.join(" | "));
        let align: Vec<&str> = (0..self.columns.len())
            .map(|i| if i == 0 { "---" } else { "---:" })
            .collect();
        println!("|{}|", align.join("|"));
        for r in &self.rows {
            println!("| {} |", r.join(" | "));
        }
        for n in &self.notes {
            println!("\n{n}");
        }
    }
}

/// The notes of a run, as a list after its tables.
pub fn print_notes(notes: &[String]) {
    if !notes.is_empty() {
        println!("\nNotes:");
        for n in notes {
            println!("- {n}");
        }
    }
}

/// A run as JSON: when, at which revision, on what machine, with which
/// options, its results and notes.
pub fn results_json(
    date: &str,
    machine: &serde_json::Value,
    options: &impl Debug,
    results: serde_json::Value,
    notes: &[String],
) -> serde_json::Value {
    serde_json::json!({
        "date": date,
        "revision": revision(),
        "machine": machine,
        "options": format!("{options:?}"),
        "results": results,
        "notes": notes,
    })
}

/// `revision R, N CPUs (model)`, for the heading of a run's tables.
pub fn revision_and_cpus(machine: &serde_json::Value) -> String {
    format!(
        "revision {}, {} CPUs ({})",
        revision(),
        machine["cpus"],
        machine["cpu_model"].as_str().unwrap_or("")
    )
}
