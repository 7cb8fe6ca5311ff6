//! Importing, signing and verifying an org chart of 50,000 members (issue 4's
//! target: under 10 s), each step next to its raw floor measured in the same run.
//!
//! ```sh
//! cargo run --release --example org_bench                     # about 20 s on 2 cores
//! cargo run --release --example org_bench -- --out /tmp/chart  # also writes chart.csv and chart.xlsx
//! ```
//!
//! The chart: 50,000 members with Chinese names in about 24,500 departments up
//! to 10 levels deep (总部/单位1-N/…), as a UTF-8 CSV, a GBK CSV and an .xlsx.
//!
//! - **read + check**: `org::import::read_rows` and `parse` (every row checked).
//!   Floor: the `csv` crate reading the same file into strings; calamine
//!   reading the .xlsx.
//! - **build**: the chart applied to the policy and encoded (postcard).
//! - **sign**: the header over the body hash, signed by 3 of 5 admins. Floor:
//!   BLAKE3 of the body plus 3 raw ed25519 signatures.
//! - **verify**: what every node does on receipt: the header, the body hash,
//!   3 signatures, then the body decoded and checked. Floor: BLAKE3 and 3
//!   signature checks.
//!
//! The daemon path end to end (the CLI reads and checks with a progress bar, the
//! daemon builds, signs, verifies and stores) is timed with the files `--out`
//! writes: `time outpost org import /tmp/chart/chart.csv` on a node that made
//! an org with `--threshold 1`.

use std::{
    fmt::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use outpost_node::org::{AdminKeys, Header, Policy, Signed, import};

const MEMBERS: usize = 50_000;

fn main() {
    let out = std::env::args()
        .skip_while(|a| a != "--out")
        .nth(1)
        .map(std::path::PathBuf::from);
    let dir = tempfile::tempdir().unwrap();
    let dir = out.unwrap_or_else(|| dir.path().to_path_buf());
    std::fs::create_dir_all(&dir).unwrap();
    let csv_text = chart_csv(MEMBERS);
    let csv_path = dir.join("chart.csv");
    std::fs::write(&csv_path, &csv_text).unwrap();
    let gbk_path = dir.join("chart-gbk.csv");
    std::fs::write(&gbk_path, encoding_rs::GBK.encode(&csv_text).0).unwrap();
    let xlsx_path = dir.join("chart.xlsx");
    write_xlsx(&csv_text, &xlsx_path);
    println!(
        "chart: {MEMBERS} members, {} bytes of CSV, {} bytes of xlsx (in {})",
        csv_text.len(),
        std::fs::metadata(&xlsx_path).unwrap().len(),
        dir.display()
    );
    println!();
    println!("| step | time | raw floor | ratio |");
    println!("|---|---|---|---|");

    // Read and check, three formats.
    let mut chart = None;
    for (what, path) in [
        ("csv (UTF-8)", &csv_path),
        ("csv (GBK)", &gbk_path),
        ("xlsx", &xlsx_path),
    ] {
        let start = Instant::now();
        let rows = import::read_rows(path).unwrap();
        let parsed = import::parse(&rows, |_| {}).unwrap();
        let took = start.elapsed();
        let floor = if what == "xlsx" { raw_xlsx(path) } else { raw_csv(path) };
        row(&format!("read + check {what}"), took, floor);
        if chart.is_none() {
            println!("|   ({} departments) | | | |", parsed.departments.len());
        }
        chart.get_or_insert(parsed);
    }
    let chart = chart.unwrap();

    let start = Instant::now();
    let policy = chart.apply(&Policy::default());
    let body = policy.encode();
    let build = start.elapsed();
    row("build the policy (apply + encode)", build, Duration::ZERO);

    let admins: Vec<AdminKeys> = (0..5).map(|_| AdminKeys::generate()).collect();
    let now = 1_000;
    let start = Instant::now();
    let header = Header::first(
        admins.iter().map(AdminKeys::public).collect(),
        3,
        now,
        now + 86_400_000,
        &body,
    );
    let mut signed = Signed::new(&header, body.clone());
    for a in &admins[..3] {
        signed.sign(a);
    }
    let sign = start.elapsed();
    let floor_start = Instant::now();
    let hash = blake3::hash(&body);
    for a in &admins[..3] {
        std::hint::black_box(a.sign(hash.as_bytes()));
    }
    row("sign (3 of 5 admins)", sign, floor_start.elapsed());

    let start = Instant::now();
    let verified = signed.clone().verify_first(&header.org).unwrap();
    let decoded = verified.policy();
    let verify = start.elapsed();
    assert_eq!(decoded.members.len(), MEMBERS);
    let floor_start = Instant::now();
    let hash = blake3::hash(&body);
    for s in &signed.signatures {
        std::hint::black_box(s.key.verify(hash.as_bytes(), &s.sig));
    }
    row(
        "verify (signatures, body hash, decode + check)",
        verify,
        floor_start.elapsed(),
    );

    let total = build + sign + verify;
    println!();
    println!(
        "body {} bytes; build + sign + verify {:.0} ms (plus reading the file, above)",
        body.len(),
        ms(total)
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn row(step: &str, took: Duration, floor: Duration) {
    if floor.is_zero() {
        println!("| {step} | {:.0} ms | | |", ms(took));
    } else {
        println!(
            "| {step} | {:.0} ms | {:.0} ms | {:.2}× |",
            ms(took),
            ms(floor),
            took.as_secs_f64() / floor.as_secs_f64()
        );
    }
}

/// The raw floor for a CSV: the csv crate reading every record into strings.
fn raw_csv(path: &Path) -> Duration {
    let start = Instant::now();
    let bytes = std::fs::read(path).unwrap();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(bytes.as_slice());
    let mut cells = 0;
    for record in reader.byte_records() {
        cells += record.unwrap().len();
    }
    std::hint::black_box(cells);
    start.elapsed()
}

/// The raw floor for an xlsx: calamine reading the first sheet.
fn raw_xlsx(path: &Path) -> Duration {
    use calamine::{Reader, open_workbook_auto};
    let start = Instant::now();
    let mut book = open_workbook_auto(path).unwrap();
    let range = book.worksheet_range_at(0).unwrap().unwrap();
    std::hint::black_box(range.get_size());
    start.elapsed()
}

/// A chart of `n` members: departments 总部/事业部a/中心b/部c/组d…, up to 10
/// levels, Chinese names, phones, emails, heads.
fn chart_csv(n: usize) -> String {
    const SURNAMES: [&str; 8] = ["张", "王", "李", "赵", "刘", "陈", "杨", "黄"];
    const GIVEN: [&str; 8] = ["伟", "芳", "娜", "敏", "静", "磊", "洋", "勇"];
    let mut out = String::from("工号,姓名,部门,职位,邮箱,手机,负责人\n");
    for i in 0..n {
        let mut path = String::from("总部");
        let depth = 2 + i % 9;
        let mut x = i / 7;
        for level in 1..depth {
            let _ = write!(path, "/单位{level}-{}", x % 4);
            x /= 4;
        }
        let name = format!("{}{}{}", SURNAMES[i % 8], GIVEN[(i / 8) % 8], GIVEN[(i / 64) % 8]);
        let _ = writeln!(
            out,
            "E{i:06},{name},{path},工程师,e{i}@example.cn,138{:08},{}",
            i % 100_000_000,
            if i % 50 == 0 { "是" } else { "否" }
        );
    }
    out
}

fn write_xlsx(csv_text: &str, path: &Path) {
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    for (r, line) in csv_text.lines().enumerate() {
        for (c, cell) in line.split(',').enumerate() {
            sheet.write_string(r as u32, c as u16, cell).unwrap();
        }
    }
    book.save(path).unwrap();
}
