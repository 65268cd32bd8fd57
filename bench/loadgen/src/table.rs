//! The one table: every metric for berth and registry:2, berth's advantage, the machine's ceiling where
//! there is one, and the target.

use std::fmt::Write;

use crate::Results;

/// What a target asks of a metric.
#[derive(Clone, Copy)]
enum Goal {
    None,
    /// berth's advantage over registry:2 at least this.
    Times(f64),
    /// berth at least this fraction of the ceiling.
    OfCeiling(f64),
    /// berth's value at most this.
    AtMost(f64),
}

struct Row {
    key: &'static str,
    label: &'static str,
    unit: &'static str,
    /// Higher is better (throughput) rather than lower (latency, memory, CPU).
    higher: bool,
    goal: Goal,
}

const fn row(
    key: &'static str,
    label: &'static str,
    unit: &'static str,
    higher: bool,
    goal: Goal,
) -> Row {
    Row {
        key,
        label,
        unit,
        higher,
        goal,
    }
}

const ROWS: &[Row] = &[
    row(
        "w1.mono",
        "W1 monolithic 256 MiB",
        "MiB/s",
        true,
        Goal::Times(2.5),
    ),
    row(
        "w1.four",
        "W1 4 x 64 MiB concurrent",
        "MiB/s",
        true,
        Goal::None,
    ),
    row(
        "w2.chunked",
        "W2 chunked 256 MiB / 8 MiB",
        "MiB/s",
        true,
        Goal::Times(3.0),
    ),
    row(
        "w3.one",
        "W3 download, 1 stream",
        "MiB/s",
        true,
        Goal::OfCeiling(0.95),
    ),
    row(
        "w3.eight",
        "W3 download, 8 streams",
        "MiB/s",
        true,
        Goal::OfCeiling(0.95),
    ),
    row(
        "w3.range.p50",
        "W3 1 MiB Range p50",
        "ms",
        false,
        Goal::None,
    ),
    row(
        "w3.range.p99",
        "W3 1 MiB Range p99",
        "ms",
        false,
        Goal::None,
    ),
    row("w4.head1.rps", "W4 HEAD tag c=1", "req/s", true, Goal::None),
    row(
        "w4.head1.p99",
        "W4 HEAD tag c=1 p99",
        "ms",
        false,
        Goal::None,
    ),
    row(
        "w4.head16.rps",
        "W4 HEAD tag c=16",
        "req/s",
        true,
        Goal::Times(30.0),
    ),
    row(
        "w4.head16.p99",
        "W4 HEAD tag c=16 p99",
        "ms",
        false,
        Goal::None,
    ),
    row(
        "w4.head64.rps",
        "W4 HEAD tag c=64",
        "req/s",
        true,
        Goal::None,
    ),
    row(
        "w4.head64.p50",
        "W4 HEAD tag c=64 p50",
        "ms",
        false,
        Goal::None,
    ),
    row(
        "w4.head64.p99",
        "W4 HEAD tag c=64 p99",
        "ms",
        false,
        Goal::AtMost(5.0),
    ),
    row("w4.get1.rps", "W4 GET tag c=1", "req/s", true, Goal::None),
    row("w4.get1.p99", "W4 GET tag c=1 p99", "ms", false, Goal::None),
    row(
        "w4.get16.rps",
        "W4 GET tag c=16",
        "req/s",
        true,
        Goal::Times(30.0),
    ),
    row(
        "w4.get16.p99",
        "W4 GET tag c=16 p99",
        "ms",
        false,
        Goal::None,
    ),
    row("w4.get64.rps", "W4 GET tag c=64", "req/s", true, Goal::None),
    row(
        "w4.get64.p50",
        "W4 GET tag c=64 p50",
        "ms",
        false,
        Goal::None,
    ),
    row(
        "w4.get64.p99",
        "W4 GET tag c=64 p99",
        "ms",
        false,
        Goal::AtMost(5.0),
    ),
    row(
        "w5.one.mps",
        "W5 2,000 PUTs, 1 repo",
        "manifests/s",
        true,
        Goal::Times(2.0),
    ),
    row("w5.one.p50", "W5 1 repo p50", "ms", false, Goal::None),
    row("w5.one.p99", "W5 1 repo p99", "ms", false, Goal::None),
    row(
        "w5.many.mps",
        "W5 2,000 PUTs, 500 repos",
        "manifests/s",
        true,
        Goal::Times(2.0),
    ),
    row("w5.many.p50", "W5 500 repos p50", "ms", false, Goal::None),
    row("w5.many.p99", "W5 500 repos p99", "ms", false, Goal::None),
    row(
        "w6.catalog",
        "W6 catalog walk, n=100",
        "ms",
        false,
        Goal::Times(5.0),
    ),
    row(
        "w6.tags",
        "W6 tags list, 2,000 tags",
        "ms",
        false,
        Goal::Times(5.0),
    ),
    row(
        "w7.push",
        "W7 skopeo copy in, 300 MiB",
        "s",
        false,
        Goal::None,
    ),
    row("w7.pull", "W7 skopeo copy out", "s", false, Goal::None),
    row(
        "w8.idle_rss",
        "W8 RSS idle",
        "MiB",
        false,
        Goal::AtMost(10.0),
    ),
    row("w8.peak_rss", "W8 RSS peak", "MiB", false, Goal::Times(2.0)),
    row(
        "w8.cpu_up",
        "W8 CPU per GiB uploaded",
        "s",
        false,
        Goal::Times(3.0),
    ),
    row(
        "w8.cpu_down",
        "W8 CPU per GiB downloaded",
        "s",
        false,
        Goal::None,
    ),
    row(
        "w8.cpu_small",
        "W8 CPU per 10k small requests",
        "s",
        false,
        Goal::None,
    ),
    row(
        "w9.rps",
        "W9 soak, mixed requests",
        "req/s",
        true,
        Goal::None,
    ),
    row(
        "w9.rss_quarter",
        "W9 soak RSS at 1/4",
        "MiB",
        false,
        Goal::None,
    ),
    row("w9.rss_end", "W9 soak RSS at end", "MiB", false, Goal::None),
    row(
        "w9.rss_growth",
        "W9 soak RSS growth 1/4 to end",
        "MiB",
        false,
        Goal::None,
    ),
    row("w9.rss_peak", "W9 soak RSS peak", "MiB", false, Goal::None),
];

fn num(v: Option<f64>) -> String {
    match v {
        None => "-".to_owned(),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

pub fn render(r: &Results) -> String {
    let get = |who: &str, key: &str| r.get(who).and_then(|m| m.get(key)).copied();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<32} {:>11} {:>9} {:>9} {:>8} {:>9} {:>10}  met",
        "workload", "unit", "berth", "registry", "berth x", "ceiling", "target"
    );
    for row in ROWS {
        let b = get("berth", row.key);
        let g = get("registry", row.key);
        let c = get("ceiling", row.key);
        let adv = match (b, g) {
            (Some(b), Some(g)) if b > 0.0 && g > 0.0 => {
                Some(if row.higher { b / g } else { g / b })
            }
            _ => None,
        };
        let (target, met) = match row.goal {
            Goal::None => (String::new(), ""),
            Goal::Times(x) => (format!(">= {x}x"), yes(adv.map(|a| a >= x))),
            Goal::OfCeiling(f) => (
                format!(">= {:.0}% ceil", f * 100.0),
                yes(b.zip(c).map(|(b, c)| b >= f * c)),
            ),
            Goal::AtMost(m) => (format!("<= {m} {}", row.unit), yes(b.map(|b| b <= m))),
        };
        let _ = writeln!(
            out,
            "{:<32} {:>11} {:>9} {:>9} {:>8} {:>9} {:>10}  {}",
            row.label,
            row.unit,
            num(b),
            num(g),
            adv.map_or("-".to_owned(), |a| format!("{a:.2}")),
            num(c),
            target,
            met
        );
    }
    let _ = writeln!(
        out,
        "(berth x: berth's advantage, higher is better: berth/registry for rates, registry/berth for times, memory and CPU.\n ceiling: sha256 on one core for W1, nginx with sendfile for W3/W4. catalog repositories seen: berth {}, registry {})",
        num(get("berth", "w6.catalog.repos")),
        num(get("registry", "w6.catalog.repos")),
    );
    out
}

fn yes(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "?",
    }
}

/// A row of the S3 table: a metric of the targets `berth-fs`, `berth-s3` and `registry-s3`, or with
/// `suffix` (`.redirect`) of the redirecting servers on the same storage.
struct S3Row {
    key: &'static str,
    suffix: &'static str,
    label: &'static str,
    unit: &'static str,
}

const fn s3_row(key: &'static str, label: &'static str, unit: &'static str) -> S3Row {
    S3Row {
        key,
        suffix: "",
        label,
        unit,
    }
}

const fn s3_redirect_row(key: &'static str, label: &'static str, unit: &'static str) -> S3Row {
    S3Row {
        key,
        suffix: ".redirect",
        label,
        unit,
    }
}

const S3_ROWS: &[S3Row] = &[
    s3_row("w1.mono", "push 256 MiB monolithic", "MiB/s"),
    s3_row("w1.four", "push 4 x 64 MiB concurrent", "MiB/s"),
    s3_row("w2.chunked", "push 256 MiB, 8 MiB chunks", "MiB/s"),
    s3_row("w3.one", "pull 256 MiB, 1 stream", "MiB/s"),
    s3_row("w3.eight", "pull 256 MiB, 8 streams", "MiB/s"),
    s3_row("w3.range.p50", "pull 1 MiB Range p50", "ms"),
    s3_redirect_row("w3.one", "pull, 1 stream, via 307", "MiB/s"),
    s3_redirect_row("w3.eight", "pull, 8 streams, via 307", "MiB/s"),
    s3_redirect_row("w3.range.p50", "pull 1 MiB Range p50, via 307", "ms"),
    s3_row("w4.head16.rps", "manifest HEAD by tag, c=16", "req/s"),
    s3_row("w4.head16.p99", "manifest HEAD c=16 p99", "ms"),
    s3_row("w4.get16.rps", "manifest GET by tag, c=16", "req/s"),
    s3_row("w4.get16.p99", "manifest GET c=16 p99", "ms"),
    s3_row(
        "w5.one.mps",
        "2,000 manifest PUTs, 8 clients",
        "manifests/s",
    ),
    s3_row("w5.one.p50", "manifest PUT p50", "ms"),
    s3_row("w5.one.p99", "manifest PUT p99", "ms"),
    s3_row("w8.cpu_up", "CPU per GiB pushed: registry", "s"),
    s3_row("w8.cpu_up.backend", "CPU per GiB pushed: Garage", "s"),
    s3_row(
        "w8.cpu_up.requests",
        "S3 requests per GiB pushed",
        "requests",
    ),
    s3_row("w8.cpu_down", "CPU per GiB pulled: registry", "s"),
    s3_row("w8.cpu_down.backend", "CPU per GiB pulled: Garage", "s"),
    s3_row(
        "w8.cpu_down.requests",
        "S3 requests per GiB pulled",
        "requests",
    ),
    s3_redirect_row("w8.cpu_down", "... via 307: registry", "s"),
    s3_redirect_row("w8.cpu_down.backend", "... via 307: Garage", "s"),
    s3_row("w8.cpu_small", "CPU per 10k HEAD/GET: registry", "s"),
    s3_row("w8.cpu_small.backend", "CPU per 10k HEAD/GET: Garage", "s"),
    s3_row(
        "w8.cpu_small.requests",
        "S3 requests per HEAD/GET",
        "requests",
    ),
    s3_row("w8.cpu_put", "CPU per 1k manifest PUTs: registry", "s"),
    s3_row(
        "w8.cpu_put.backend",
        "CPU per 1k manifest PUTs: Garage",
        "s",
    ),
    s3_row(
        "w8.cpu_put.requests",
        "S3 requests per manifest PUT",
        "requests",
    ),
    s3_row("w8.idle_rss", "RSS idle", "MiB"),
    s3_row("w8.peak_rss", "RSS peak", "MiB"),
];

/// berth on the filesystem, berth on S3 and registry:2 on S3, with two plain ratios of values.
pub fn render_s3(r: &Results) -> String {
    let get = |who: &str, key: &str| r.get(who).and_then(|m| m.get(key)).copied();
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".to_owned(),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<36} {:>11} {:>9} {:>9} {:>13} {:>8} {:>8}",
        "workload", "unit", "berth fs", "berth S3", "registry:2 S3", "S3/fs", "S3/r2"
    );
    for row in S3_ROWS {
        let fs = get("berth-fs", row.key);
        let s3 = get(&format!("berth-s3{}", row.suffix), row.key);
        let r2 = get(&format!("registry-s3{}", row.suffix), row.key);
        if fs.is_none() && s3.is_none() && r2.is_none() {
            continue;
        }
        // Via a redirect, berth S3 is compared with what berth on the filesystem serves itself.
        let _ = writeln!(
            out,
            "{:<36} {:>11} {:>9} {:>9} {:>13} {:>8} {:>8}",
            row.label,
            row.unit,
            num(if row.suffix.is_empty() { fs } else { None }),
            num(s3),
            num(r2),
            ratio(s3, fs),
            ratio(s3, r2),
        );
    }
    let _ = writeln!(
        out,
        "(S3/fs: berth S3 / berth fs; S3/r2: berth S3 / registry:2 S3; plain ratios of the values, so above 1 is\n better for rates and worse for times, CPU and memory. \"via 307\" rows: servers on the same storage with\n redirects on, the client following each 307 to Garage; S3/fs there compares with berth fs serving the blob\n itself. Garage rows: Garage's CPU while that column's server ran the workload.)"
    );
    out
}
