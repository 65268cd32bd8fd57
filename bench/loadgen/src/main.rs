//! berth's benchmark: runs the workloads W1–W9 of the performance issue against berth and registry:2 (and
//! the ceilings against nginx) in one run, and prints one table. `bench/run.sh` starts the servers;
//! `bench/s3.sh` runs a subset against berth on the filesystem, berth on S3 and registry:2 on S3 (with
//! `--target` and `--table s3`). See bench/README.md. Every loop here is bounded in count and in time.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::Method;

mod client;
mod ops;
mod soak;
mod table;

use client::{Conn, Fetcher};
use ops::{data, digest, Lat, MIB};

/// A server under test.
#[derive(Clone)]
pub struct Target {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub pid: Option<u32>,
    /// A process the server's work is partly done by (the S3 server behind it): its CPU is charged to
    /// this target while the target's workloads run, under the metric's key with `.backend` appended.
    pub backend: Option<u32>,
}

/// Results by target name (`berth`, `registry`, `ceiling`, or a `--target`'s name), then by metric key.
pub type Results = HashMap<&'static str, HashMap<String, f64>>;

/// W9's VmRSS samples by target name: (seconds since the soak started, MiB).
pub type Samples = HashMap<&'static str, Vec<(f64, f64)>>;

struct Args {
    targets: Vec<Target>,
    /// Servers that answer blob GETs with a redirect, on the storage of a target: used in W3 only,
    /// downloading the blob that target uploaded, following the redirect.
    redirects: Vec<Target>,
    nginx: Option<SocketAddr>,
    nginx_root: Option<PathBuf>,
    work: PathBuf,
    /// Blob sizes are divided by this (1 for the real run; larger for a quick smoke test).
    scale: u64,
    /// Seconds per W4 measurement.
    w4_secs: f64,
    /// Workloads to run (all when empty); for profiling one at a time.
    only: Vec<String>,
    /// Connection counts of W4.
    w4_conns: Vec<usize>,
    /// W5's runs: into one repository (`one`), into 500 (`many`).
    w5_runs: Vec<String>,
    /// Which table to print: `main` (berth against registry:2 and the ceilings) or `s3`.
    table: String,
    /// W9's soak: duration per target, clients, mix.
    soak: soak::Config,
}

impl Args {
    fn wants(&self, w: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == w)
    }
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        targets: Vec::new(),
        nginx: None,
        nginx_root: None,
        work: PathBuf::from("/tmp/berth-bench"),
        scale: 1,
        w4_secs: 3.0,
        only: Vec::new(),
        w4_conns: vec![1, 16, 64],
        w5_runs: vec!["one".to_owned(), "many".to_owned()],
        table: "main".to_owned(),
        redirects: Vec::new(),
        soak: soak::Config::new(180.0),
    };
    let mut it = std::env::args().skip(1);
    let mut pending: HashMap<&'static str, (Option<SocketAddr>, Option<u32>)> = HashMap::new();
    while let Some(flag) = it.next() {
        let mut val = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--berth" => pending.entry("berth").or_default().0 = Some(val()?.parse()?),
            "--berth-pid" => pending.entry("berth").or_default().1 = Some(val()?.parse()?),
            "--registry" => pending.entry("registry").or_default().0 = Some(val()?.parse()?),
            "--registry-pid" => pending.entry("registry").or_default().1 = Some(val()?.parse()?),
            "--nginx" => a.nginx = Some(val()?.parse()?),
            "--nginx-root" => a.nginx_root = Some(PathBuf::from(val()?)),
            "--work" => a.work = PathBuf::from(val()?),
            "--scale" => a.scale = val()?.parse()?,
            "--w4-secs" => a.w4_secs = val()?.parse()?,
            "--only" => a.only = val()?.split(',').map(str::to_owned).collect(),
            "--w4-conns" => {
                a.w4_conns = val()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            "--w5" => a.w5_runs = val()?.split(',').map(str::to_owned).collect(),
            "--table" => a.table = val()?,
            "--soak-secs" => a.soak.secs = val()?.parse()?,
            "--soak-clients" => a.soak.clients = val()?.parse()?,
            "--soak-sample-secs" => a.soak.sample_secs = val()?.parse()?,
            "--soak-mix" => a.soak.set_mix(&val()?)?,
            "--backend-log" => {
                let path = PathBuf::from(val()?);
                if let Ok(mut log) = BACKEND_LOG.lock() {
                    *log = Some((path, 0, 0));
                }
            }
            "--target" => {
                let (t, redirect) = parse_target(&val()?)?;
                if redirect {
                    a.redirects.push(t);
                } else {
                    a.targets.push(t);
                }
            }
            other => bail!("unknown argument {other} (see bench/README.md)"),
        }
    }
    for name in ["berth", "registry"] {
        if let Some((Some(addr), pid)) = pending.get(name).copied() {
            a.targets.push(Target {
                name,
                addr,
                pid,
                backend: None,
            });
        }
    }
    if a.targets.is_empty() {
        bail!("usage: loadgen --berth ADDR [--berth-pid PID] [--registry ADDR --registry-pid PID] [--target NAME=ADDR[,pid=PID][,backend=PID][,redirect]]... [--backend-log FILE] [--nginx ADDR --nginx-root DIR] [--work DIR] [--scale N] [--w4-secs S] [--w4-conns 1,16,64] [--w5 one,many] [--soak-secs S] [--soak-clients N] [--soak-sample-secs S] [--soak-mix kind=weight,..] [--only w1,..] [--table main|s3]");
    }
    Ok(a)
}

/// `NAME=ADDR[,pid=PID][,backend=PID][,redirect]`; whether it is a redirecting server for W3.
fn parse_target(spec: &str) -> Result<(Target, bool)> {
    let (name, rest) = spec
        .split_once('=')
        .with_context(|| format!("--target {spec}: expected NAME=ADDR,..."))?;
    let mut fields = rest.split(',');
    let addr = fields.next().unwrap_or_default().parse()?;
    // Results are keyed by static names; a handful of targets live as long as the program.
    let name: &'static str = Box::leak(name.to_owned().into_boxed_str());
    let mut t = Target {
        name,
        addr,
        pid: None,
        backend: None,
    };
    let mut redirect = false;
    for f in fields {
        match f.split_once('=') {
            Some(("pid", v)) => t.pid = Some(v.parse()?),
            Some(("backend", v)) => t.backend = Some(v.parse()?),
            None if f == "redirect" => redirect = true,
            _ => bail!("--target {spec}: unknown field {f}"),
        }
    }
    Ok((t, redirect))
}

fn main() -> Result<()> {
    let args = parse_args()?;
    // One client thread: the client never takes more than one of the machine's cores from the server.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut samples = Samples::new();
    let results = rt.block_on(run(&args, &mut samples))?;
    std::fs::create_dir_all(&args.work)?;
    let mut json = serde_json::Map::new();
    for (k, v) in &results {
        json.insert((*k).to_owned(), serde_json::to_value(v)?);
    }
    if !samples.is_empty() {
        json.insert("w9.rss_samples".to_owned(), serde_json::to_value(&samples)?);
    }
    std::fs::write(
        args.work.join("results.json"),
        serde_json::to_vec_pretty(&json)?,
    )?;
    match args.table.as_str() {
        "s3" => print!("{}", table::render_s3(&results)),
        _ => print!("{}", table::render(&results)),
    }
    Ok(())
}

fn put(r: &mut Results, who: &'static str, key: &str, v: f64) {
    r.entry(who).or_default().insert(key.to_owned(), v);
}

fn log(msg: &str) {
    eprintln!("[loadgen] {msg}");
}

async fn run(a: &Args, samples: &mut Samples) -> Result<Results> {
    let mut r = Results::new();
    let mib = |n: u64| (n * MIB / a.scale) as usize;

    for t in &a.targets {
        let p = ops::proc_sample(t.pid);
        put(&mut r, t.name, "w8.idle_rss", p.rss_mib);
    }

    // Ceiling: single-core SHA-256.
    {
        let buf = data(mib(256), 1);
        let t0 = Instant::now();
        let _ = digest(&buf);
        let s = t0.elapsed().as_secs_f64();
        put(
            &mut r,
            "ceiling",
            "w1.mono",
            buf.len() as f64 / MIB as f64 / s,
        );
        log(&format!(
            "sha256 one core: {:.0} MiB/s",
            buf.len() as f64 / MIB as f64 / s
        ));
    }

    if a.wants("w1") || a.wants("w2") || a.wants("w3") {
        // ---- W1, W2: uploads. CPU over each target's own uploads, per GiB uploaded.
        let mut up_cpu = CpuTally::default();
        let mut uploaded = 0u64;
        let mut w3_blob: Option<(Bytes, String)> = None;
        {
            const REPS: u64 = 3;
            let mut best: HashMap<&str, Vec<f64>> = HashMap::new();
            for rep in 0..if a.wants("w1") { REPS } else { 1 } {
                let blob = data(mib(256), 100 + rep);
                let d = digest(&blob);
                for t in &a.targets {
                    let mut c = Conn::open(t.addr).await?;
                    let c0 = Cpu::sample(t);
                    let t0 = Instant::now();
                    ops::upload_monolithic(&mut c, "bench/w1", &blob, &d).await?;
                    best.entry(t.name).or_default().push(mib_s(blob.len(), t0));
                    up_cpu.add(t, c0);
                }
                uploaded += blob.len() as u64;
                if rep == 0 {
                    w3_blob = Some((blob, d));
                }
            }
            for (name, v) in best {
                log(&format!("W1 {name}: {v:.0?} MiB/s"));
                put(&mut r, name_of(a, name), "w1.mono", median(v));
            }
            // 4 concurrent 64 MiB uploads, twice.
            let mut agg: HashMap<&str, Vec<f64>> = HashMap::new();
            for rep in 0..if a.wants("w1") { 2 } else { 0 } {
                let blobs: Vec<(Bytes, String)> = (0..4)
                    .map(|i| {
                        let b = data(mib(64), 200 + rep * 10 + i);
                        let d = digest(&b);
                        (b, d)
                    })
                    .collect();
                let total: usize = blobs.iter().map(|b| b.0.len()).sum();
                for t in &a.targets {
                    let c0 = Cpu::sample(t);
                    let t0 = Instant::now();
                    let mut tasks = Vec::new();
                    for (b, d) in blobs.clone() {
                        let addr = t.addr;
                        tasks.push(tokio::spawn(async move {
                            let mut c = Conn::open(addr).await?;
                            ops::upload_monolithic(&mut c, "bench/w1", &b, &d).await
                        }));
                    }
                    for task in tasks {
                        task.await??;
                    }
                    agg.entry(t.name).or_default().push(mib_s(total, t0));
                    up_cpu.add(t, c0);
                }
                uploaded += total as u64;
            }
            for (name, v) in agg {
                log(&format!("W1x4 {name}: {v:.0?} MiB/s"));
                put(&mut r, name_of(a, name), "w1.four", median(v));
            }
        }
        {
            let mut res: HashMap<&str, Vec<f64>> = HashMap::new();
            for rep in 0..if a.wants("w2") { 2 } else { 0 } {
                let blob = data(mib(256), 300 + rep);
                let d = digest(&blob);
                for t in &a.targets {
                    let mut c = Conn::open(t.addr).await?;
                    let c0 = Cpu::sample(t);
                    let t0 = Instant::now();
                    ops::upload_chunked(&mut c, "bench/w2", &blob, &d, mib(8)).await?;
                    res.entry(t.name).or_default().push(mib_s(blob.len(), t0));
                    up_cpu.add(t, c0);
                }
                uploaded += blob.len() as u64;
            }
            for (name, v) in res {
                log(&format!("W2 {name}: {v:.0?} MiB/s"));
                put(&mut r, name_of(a, name), "w2.chunked", median(v));
            }
        }
        let gib = uploaded as f64 / (1024.0 * MIB as f64);
        up_cpu.put(&mut r, &a.targets, "w8.cpu_up", gib, gib);

        if a.wants("w3") {
            log_peaks(&a.targets, "after W1/W2");
            // ---- W3: downloads of the first W1 blob, and 1 MiB ranges.
            let (blob, blob_d) = w3_blob.context("no W1 blob")?;
            let blob_path = format!("/v2/bench/w1/blobs/{blob_d}");
            // (target, path, whether it must redirect)
            let mut dl: Vec<(Target, String, bool)> = a
                .targets
                .iter()
                .map(|t| (t.clone(), blob_path.clone(), false))
                .chain(
                    a.redirects
                        .iter()
                        .map(|t| (t.clone(), blob_path.clone(), true)),
                )
                .collect();
            if let (Some(addr), Some(root)) = (a.nginx, &a.nginx_root) {
                std::fs::write(root.join("blob"), &blob)?;
                let nginx = Target {
                    name: "ceiling",
                    addr,
                    pid: None,
                    backend: None,
                };
                dl.push((nginx, "/blob".to_owned(), false));
            }
            for (t, path, redirect) in &dl {
                let (name, addr) = (t.name, t.addr);
                let c0 = Cpu::sample(t);
                let mut downloaded = 0u64;
                let mut redirected = 0u64;
                let mut c = Fetcher::open(addr).await?;
                // Warm the page cache and the connection.
                downloaded += c.get(path, &[]).await?.len;
                let mut one = Vec::new();
                for _ in 0..3 {
                    let t0 = Instant::now();
                    let resp = c.get(path, &[]).await?;
                    if resp.len != blob.len() as u64 {
                        bail!(
                            "{name}: downloaded {} of {} bytes (status {})",
                            resp.len,
                            blob.len(),
                            resp.status
                        );
                    }
                    downloaded += resp.len;
                    one.push(mib_s(blob.len(), t0));
                }
                put(&mut r, name, "w3.one", median(one));
                let mut eight = Vec::new();
                for _ in 0..2 {
                    let t0 = Instant::now();
                    let mut tasks = Vec::new();
                    for _ in 0..8 {
                        let path = path.clone();
                        tasks.push(tokio::spawn(async move {
                            let mut c = Fetcher::open(addr).await?;
                            let resp = c.get(&path, &[]).await?;
                            anyhow::Ok((resp.len, c.redirected))
                        }));
                    }
                    let mut bytes = 0u64;
                    for task in tasks {
                        let (len, r) = task.await??;
                        if len != blob.len() as u64 {
                            bail!("{name}: downloaded {len} of {} bytes", blob.len());
                        }
                        bytes += len;
                        redirected += r;
                    }
                    downloaded += bytes;
                    eight.push(mib_s(bytes as usize, t0));
                }
                put(&mut r, name, "w3.eight", median(eight));
                let mut lat = Vec::new();
                for i in 0..200u64 {
                    let start = (i * 7919 * MIB / 16) % (blob.len() as u64 - MIB);
                    let range = format!("bytes={start}-{}", start + MIB - 1);
                    let t0 = Instant::now();
                    let resp = c.get(path, &[("range", &range)]).await?;
                    if resp.status.as_u16() != 206 || resp.len != MIB {
                        bail!(
                            "{name}: range answered {} with {} bytes",
                            resp.status,
                            resp.len
                        );
                    }
                    lat.push(t0.elapsed());
                    downloaded += resp.len;
                }
                let lat = Lat::new(lat);
                put(&mut r, name, "w3.range.p50", lat.ms(50.0));
                put(&mut r, name, "w3.range.p99", lat.ms(99.0));
                let mut tally = CpuTally::default();
                tally.add(t, c0);
                let gib = downloaded as f64 / (1024.0 * MIB as f64);
                tally.put(&mut r, std::slice::from_ref(t), "w8.cpu_down", gib, gib);
                // 1 warm-up, 3 single streams, 16 in the 8-stream rounds, 200 ranges.
                redirected += c.redirected;
                if *redirect && redirected != 220 {
                    bail!("{name}: {redirected} of 220 downloads were redirected, expected all");
                }
                if !*redirect && redirected != 0 {
                    bail!("{name}: {redirected} downloads were redirected (expected none: set storage.redirect.disable)");
                }
                log(&format!(
                    "W3 {name} done{}",
                    if *redirect {
                        " (every GET redirected)"
                    } else {
                        ""
                    }
                ));
            }
            drop(blob);
        }
    }

    log_peaks(&a.targets, "after W3");
    // ---- Small objects for W4/W5: a config and two layers in bench/app, one manifest tagged `latest`.
    let small: Vec<(Bytes, String)> = (0..3)
        .map(|i| {
            let b = data(1024 + i * 512, 400 + i as u64);
            let d = digest(&b);
            (b, d)
        })
        .collect();
    let layers: Vec<(String, usize)> = small[1..]
        .iter()
        .map(|(b, d)| (d.clone(), b.len()))
        .collect();
    let cfg = (small[0].1.as_str(), small[0].0.len());
    let m = ops::manifest(cfg, &layers, "w4");
    for t in &a.targets {
        let mut c = Conn::open(t.addr).await?;
        for (b, d) in &small {
            ops::upload_monolithic(&mut c, "bench/app", b, d).await?;
        }
        ops::put_manifest(&mut c, "bench/app", "latest", m.clone()).await?;
    }
    let mut small_targets: Vec<(Target, String)> = a
        .targets
        .iter()
        .map(|t| (t.clone(), "/v2/bench/app/manifests/latest".to_owned()))
        .collect();
    if let (Some(addr), Some(root)) = (a.nginx, &a.nginx_root) {
        std::fs::write(root.join("manifest"), &m)?;
        let nginx = Target {
            name: "ceiling",
            addr,
            pid: None,
            backend: None,
        };
        small_targets.push((nginx, "/manifest".to_owned()));
    }

    // ---- W4: manifest HEAD and GET by tag.
    for (t, path) in small_targets.iter().filter(|_| a.wants("w4")) {
        let name = t.name;
        let c0 = Cpu::sample(t);
        let mut requests = 0u64;
        for method in [Method::HEAD, Method::GET] {
            for &conns in &a.w4_conns {
                let (n, secs, lat) =
                    closed_loop(t.addr, conns, a.w4_secs, method.clone(), path.clone()).await?;
                // The server's CPU is measured over the warm-up requests too.
                requests += n + (conns * WARM_UP) as u64;
                let key = format!("w4.{}{conns}", method.as_str().to_lowercase());
                put(&mut r, name, &format!("{key}.rps"), n as f64 / secs);
                put(&mut r, name, &format!("{key}.p50"), lat.ms(50.0));
                put(&mut r, name, &format!("{key}.p99"), lat.ms(99.0));
                log(&format!(
                    "W4 {name} {method} c={conns}: {:.0} req/s p50 {:.2} ms p99 {:.2} ms",
                    n as f64 / secs,
                    lat.ms(50.0),
                    lat.ms(99.0)
                ));
            }
        }
        let mut tally = CpuTally::default();
        tally.add(t, c0);
        tally.put(
            &mut r,
            std::slice::from_ref(t),
            "w8.cpu_small",
            requests as f64 / 10_000.0,
            requests as f64,
        );
    }

    log_peaks(&a.targets, "after W4");
    // ---- W5: 2,000 manifest PUTs from 8 clients, into one repository and into 500.
    const W5_N: u64 = 2000;
    const W5_REPOS: u64 = 500;
    let w5_layers: Vec<(String, usize)> = layers.clone();
    let w5 = a.wants("w5") || a.wants("w6");
    // W6 walks the repositories of `many` and lists the tags of `one`.
    let w5_run = |label: &str| w5 && (a.wants("w6") || a.w5_runs.iter().any(|r| r == label));
    for t in a.targets.iter().filter(|_| w5) {
        // Make the config and layers available in every repository (cross-repository mounts).
        let many = if w5_run("many") { W5_REPOS } else { 0 };
        let repos: Vec<String> = std::iter::once("bench/w5/one".to_owned())
            .chain((0..many).map(|i| format!("bench/w5/r{i:03}")))
            .collect();
        let repos = Arc::new(repos);
        let next = Arc::new(AtomicU64::new(0));
        let small = Arc::new(small.clone());
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (repos, next, small, addr) = (repos.clone(), next.clone(), small.clone(), t.addr);
            tasks.push(tokio::spawn(async move {
                let mut c = Conn::open(addr).await?;
                for _ in 0..repos.len() {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(repo) = repos.get(i) else { break };
                    for (b, d) in small.iter() {
                        ops::mount(&mut c, repo, "bench/app", b, d).await?;
                    }
                }
                anyhow::Ok(())
            }));
        }
        for task in tasks {
            task.await??;
        }
    }
    let mut put_cpu = CpuTally::default();
    let mut manifests_put = 0u64;
    for (label, spread) in [("one", false), ("many", true)]
        .into_iter()
        .filter(|(label, _)| w5_run(label))
    {
        for t in &a.targets {
            let c0 = Cpu::sample(t);
            let next = Arc::new(AtomicU64::new(0));
            let t0 = Instant::now();
            let deadline = t0 + Duration::from_secs(300);
            let mut tasks = Vec::new();
            for _ in 0..8 {
                let (next, addr) = (next.clone(), t.addr);
                let cfg = (small[0].1.clone(), small[0].0.len());
                let layers = w5_layers.clone();
                tasks.push(tokio::spawn(async move {
                    let mut c = Conn::open(addr).await?;
                    let mut lat = Vec::new();
                    while Instant::now() < deadline {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= W5_N {
                            break;
                        }
                        let (repo, tag) = if spread {
                            (format!("bench/w5/r{:03}", i % W5_REPOS), format!("m{i}"))
                        } else {
                            ("bench/w5/one".to_owned(), format!("t{i:04}"))
                        };
                        let body = ops::manifest((&cfg.0, cfg.1), &layers, &format!("{label} {i}"));
                        let t1 = Instant::now();
                        ops::put_manifest(&mut c, &repo, &tag, body).await?;
                        lat.push(t1.elapsed());
                    }
                    anyhow::Ok(lat)
                }));
            }
            let mut lat = Vec::new();
            for task in tasks {
                lat.extend(task.await??);
            }
            let secs = t0.elapsed().as_secs_f64();
            put_cpu.add(t, c0);
            let n = lat.len() as f64;
            let lat = Lat::new(lat);
            put(&mut r, t.name, &format!("w5.{label}.mps"), n / secs);
            put(&mut r, t.name, &format!("w5.{label}.p50"), lat.ms(50.0));
            put(&mut r, t.name, &format!("w5.{label}.p99"), lat.ms(99.0));
            log(&format!(
                "W5 {label} {}: {:.0} manifests/s",
                t.name,
                n / secs
            ));
        }
        manifests_put += W5_N;
    }
    let puts = manifests_put as f64;
    put_cpu.put(&mut r, &a.targets, "w8.cpu_put", puts / 1000.0, puts);

    log_peaks(&a.targets, "after W5");
    // ---- W6: catalog walked with n=100; the 2,000 tags of bench/w5/one.
    for t in a.targets.iter().filter(|_| a.wants("w6")) {
        let mut c = Conn::open(t.addr).await?;
        let mut walks = Vec::new();
        let mut repos_seen = 0usize;
        for _ in 0..10 {
            let t0 = Instant::now();
            let mut path = "/v2/_catalog?n=100".to_owned();
            repos_seen = 0;
            for _ in 0..1000 {
                let resp = c.get(&path, &[]).await?.expect(&[200], "catalog")?;
                let v: serde_json::Value = serde_json::from_slice(&resp.body)?;
                repos_seen += v["repositories"].as_array().map_or(0, |a| a.len());
                match resp.header("link") {
                    Some(link) => {
                        path = link
                            .split(['<', '>'])
                            .nth(1)
                            .context("bad Link header")?
                            .to_owned();
                    }
                    None => break,
                }
            }
            walks.push(t0.elapsed());
        }
        let walks = Lat::new(walks);
        put(&mut r, t.name, "w6.catalog", walks.ms(50.0));
        put(&mut r, t.name, "w6.catalog.repos", repos_seen as f64);
        let mut tags = Vec::new();
        for _ in 0..20 {
            let t0 = Instant::now();
            let resp = c
                .get("/v2/bench/w5/one/tags/list", &[])
                .await?
                .expect(&[200], "tags list")?;
            tags.push(t0.elapsed());
            let v: serde_json::Value = serde_json::from_slice(&resp.body)?;
            let n = v["tags"].as_array().map_or(0, |a| a.len());
            if n != W5_N as usize {
                bail!("{}: tags list has {n} tags", t.name);
            }
        }
        put(&mut r, t.name, "w6.tags", Lat::new(tags).ms(50.0));
        log(&format!("W6 {} done ({repos_seen} repositories)", t.name));
    }

    log_peaks(&a.targets, "after W6");
    // ---- W7: skopeo copy of a 300 MiB, 5-layer image in and out.
    let src = a.work.join("w7-image");
    if a.wants("w7") {
        make_oci_image(&src, mib(60))?;
    }
    for t in a.targets.iter().filter(|_| a.wants("w7")) {
        let dest = format!("docker://{}/bench/w7/image:latest", t.addr);
        let t0 = Instant::now();
        skopeo(&[
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            &format!("oci:{}:latest", src.display()),
            &dest,
        ])
        .await?;
        put(&mut r, t.name, "w7.push", t0.elapsed().as_secs_f64());
        let out = a.work.join(format!("w7-pulled-{}", t.name));
        let _ = std::fs::remove_dir_all(&out);
        let t0 = Instant::now();
        skopeo(&[
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            &dest,
            &format!("oci:{}:latest", out.display()),
        ])
        .await?;
        put(&mut r, t.name, "w7.pull", t0.elapsed().as_secs_f64());
        let _ = std::fs::remove_dir_all(&out);
        log(&format!("W7 {} done", t.name));
    }

    log_peaks(&a.targets, "after W7");
    for t in &a.targets {
        let p = ops::proc_sample(t.pid);
        put(&mut r, t.name, "w8.peak_rss", p.hwm_mib);
    }

    // ---- W9: a mixed soak, VmRSS sampled (after W8's peak, which it would otherwise set).
    for t in a.targets.iter().filter(|_| a.wants("w9")) {
        log(&format!(
            "W9 {}: soak of {:.0} s, {} clients, mix {}",
            t.name,
            a.soak.secs,
            a.soak.clients,
            a.soak.describe()
        ));
        let o = soak::run(t, &a.soak).await?;
        let (quarter, end) = (o.rss_at(0.25), o.rss_end());
        put(&mut r, t.name, "w9.rps", o.total() as f64 / o.secs);
        put(&mut r, t.name, "w9.rss_quarter", quarter);
        put(&mut r, t.name, "w9.rss_end", end);
        put(&mut r, t.name, "w9.rss_growth", end - quarter);
        put(&mut r, t.name, "w9.rss_peak", o.rss_peak());
        for ((kind, _), n) in soak::KINDS.iter().zip(&o.requests) {
            put(&mut r, t.name, &format!("w9.requests.{kind}"), *n as f64);
        }
        log(&format!(
            "W9 {}: {} requests in {:.0} s; RSS MiB at 0, 1/4, 1/2, 3/4, end: {:.1} {:.1} {:.1} {:.1} {:.1}, peak {:.1}",
            t.name,
            o.total(),
            o.secs,
            o.rss_at(0.0),
            quarter,
            o.rss_at(0.5),
            o.rss_at(0.75),
            end,
            o.rss_peak()
        ));
        samples.insert(t.name, o.samples);
    }
    Ok(r)
}

/// Logs each server's peak RSS so far, to tell which workload set it.
fn log_peaks(targets: &[Target], when: &str) {
    let peaks: Vec<String> = targets
        .iter()
        .map(|t| format!("{} {:.1} MiB", t.name, ops::proc_sample(t.pid).hwm_mib))
        .collect();
    log(&format!("peak RSS {when}: {}", peaks.join(", ")));
}

/// The static name of a target (results are keyed by `&'static str`).
fn name_of(a: &Args, name: &str) -> &'static str {
    a.targets
        .iter()
        .find(|t| t.name == name)
        .map_or("ceiling", |t| t.name)
}

fn mib_s(bytes: usize, t0: Instant) -> f64 {
    bytes as f64 / MIB as f64 / t0.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// What docker sends when it fetches a manifest.
const ACCEPT: &[(&str, &str)] = &[(
    "accept",
    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json",
)];

/// Requests each connection of a closed loop sends before the measurement.
const WARM_UP: usize = 20;

/// `conns` connections each sending `method path` back to back for `secs` seconds (after a short warm-up);
/// returns the requests completed, the seconds measured and the latencies.
async fn closed_loop(
    addr: SocketAddr,
    conns: usize,
    secs: f64,
    method: Method,
    path: String,
) -> Result<(u64, f64, Lat)> {
    const MAX_PER_CONN: usize = 2_000_000;
    let barrier = Arc::new(tokio::sync::Barrier::new(conns + 1));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (barrier, stop, method, path) =
            (barrier.clone(), stop.clone(), method.clone(), path.clone());
        tasks.push(tokio::spawn(async move {
            // Every task reaches the barrier, even one whose warm-up failed, so that none waits forever.
            let warm = async {
                let mut c = Conn::open(addr).await?;
                for _ in 0..WARM_UP {
                    c.send(method.clone(), &path, ACCEPT, Bytes::new(), false)
                        .await?
                        .expect(&[200], "warm-up")?;
                }
                anyhow::Ok(c)
            }
            .await;
            barrier.wait().await;
            let mut c = warm?;
            let mut lat = Vec::with_capacity(1 << 16);
            while !stop.load(Ordering::Relaxed) && lat.len() < MAX_PER_CONN {
                let t0 = Instant::now();
                let resp = c
                    .send(method.clone(), &path, ACCEPT, Bytes::new(), false)
                    .await?;
                if resp.status.as_u16() != 200 {
                    bail!("{method} {path}: {}", resp.status);
                }
                lat.push(t0.elapsed());
            }
            anyhow::Ok(lat)
        }));
    }
    barrier.wait().await;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    Ok((all.len() as u64, elapsed, Lat::new(all)))
}

/// An OCI image layout with a config and five uncompressed layers of `layer` random bytes each.
fn make_oci_image(dir: &std::path::Path, layer: usize) -> Result<()> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let write = |b: &[u8]| -> Result<(String, usize)> {
        let d = digest(b);
        std::fs::write(blobs.join(&d[7..]), b)?;
        Ok((d, b.len()))
    };
    let mut layers = Vec::new();
    for i in 0..5u64 {
        let (d, n) = write(&data(layer, 700 + i))?;
        layers.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n}));
    }
    let diff_ids: Vec<&serde_json::Value> = layers.iter().map(|l| &l["digest"]).collect();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {}
    });
    let (cd, cn) = write(&serde_json::to_vec(&config)?)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": ops::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
        "layers": layers,
    });
    let (md, mn) = write(&serde_json::to_vec(&manifest)?)?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": ops::OCI_MANIFEST, "digest": md, "size": mn,
                       "annotations": {"org.opencontainers.image.ref.name": "latest"}}]
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(())
}

async fn skopeo(args: &[&str]) -> Result<()> {
    let mut child = tokio::process::Command::new("skopeo")
        .args(args)
        .kill_on_drop(true)
        .spawn()
        .context("skopeo")?;
    let status = tokio::time::timeout(Duration::from_secs(600), child.wait())
        .await
        .context("skopeo timed out")??;
    if !status.success() {
        bail!("skopeo {args:?}: {status}");
    }
    Ok(())
}

/// CPU seconds of a target's server and of its backend at one moment, and the requests the backend had
/// logged (when there is a backend log).
#[derive(Clone, Copy)]
struct Cpu {
    server: f64,
    backend: f64,
    requests: f64,
}

impl Cpu {
    fn sample(t: &Target) -> Cpu {
        Cpu {
            server: ops::proc_sample(t.pid).cpu,
            backend: ops::proc_sample(t.backend).cpu,
            requests: if t.backend.is_some() {
                backend_requests().unwrap_or(f64::NAN)
            } else {
                f64::NAN
            },
        }
    }
}

/// The backend's request log (`--backend-log`) and how far it has been read: (path, bytes read, requests).
static BACKEND_LOG: std::sync::Mutex<Option<(PathBuf, u64, u64)>> = std::sync::Mutex::new(None);

/// Requests the backend has logged so far: lines of Garage's log that name a request (`127.0.0.1:PORT
/// [(key GK...)] GET /bucket/...`; presigned ones have no key), not the second line it writes for an
/// error response (`error 404 Not Found, ... in response to ...`). `None` without a log.
fn backend_requests() -> Option<f64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut guard = BACKEND_LOG.lock().ok()?;
    let (path, read, count) = guard.as_mut()?;
    let mut f = std::fs::File::open(&*path).ok()?;
    f.seek(SeekFrom::Start(*read)).ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    // Only whole lines; the rest is read next time.
    let end = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    for line in buf[..end].split(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(line);
        // The level and the target may be wrapped in colour codes.
        let Some((_, rest)) = line.split_once("generic_server") else {
            continue;
        };
        let request = [" GET /", " HEAD /", " PUT /", " POST /", " DELETE /"]
            .iter()
            .any(|m| rest.contains(m));
        if request && !rest.contains(" in response to ") {
            *count += 1;
        }
    }
    *read += end as u64;
    Some(*count as f64)
}

/// CPU seconds spent by each target (and its backend) over the intervals it was measured in.
#[derive(Default)]
struct CpuTally(HashMap<&'static str, Cpu>);

impl CpuTally {
    /// Adds what `t` spent since `since`.
    fn add(&mut self, t: &Target, since: Cpu) {
        let now = Cpu::sample(t);
        let e = self.0.entry(t.name).or_insert(Cpu {
            server: 0.0,
            backend: 0.0,
            requests: 0.0,
        });
        e.server += now.server - since.server;
        e.backend += now.backend - since.backend;
        e.requests += now.requests - since.requests;
    }

    /// Records the CPU seconds per `units` (GiB, 10,000 requests) under `key`, the backend's under
    /// `key.backend`, and the backend's requests per `ops` (GiB, request) under `key.requests`; nothing
    /// for a target without a process to sample or with no units.
    fn put(&self, r: &mut Results, targets: &[Target], key: &str, units: f64, ops: f64) {
        for t in targets {
            let Some(c) = self.0.get(t.name) else {
                continue;
            };
            if units <= 0.0 {
                continue;
            }
            if t.pid.is_some() {
                put(r, t.name, key, c.server / units);
            }
            if t.backend.is_some() {
                put(r, t.name, &format!("{key}.backend"), c.backend / units);
                if c.requests.is_finite() && ops > 0.0 {
                    put(r, t.name, &format!("{key}.requests"), c.requests / ops);
                }
            }
        }
    }
}
