//! W9: a bounded mixed soak. A few clients push and pull small blobs and manifests (OCI referrers with a
//! `subject` and up to 64 KiB of annotations among them), list tags, page the catalog, query referrers,
//! upload a few MiB in chunks, delete now and then and ask for names, uploads and digests that do not
//! exist, into repositories and tags that keep appearing, while the server's VmRSS is sampled.
//!
//! Every loop stops at the deadline or at its count bound, whichever comes first, and every request has a
//! timeout.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::Method;

use crate::client::{Conn, Resp};
use crate::ops::{self, data, digest, MIB};
use crate::{Target, ACCEPT};

/// The request kinds of the mix, with their default weights (out of 100).
pub const KINDS: &[(&str, u32)] = &[
    ("pull_tag", 14),      // GET manifest by a recent tag
    ("pull_digest", 10),   // GET manifest by a recent digest
    ("blob_get", 10),      // GET a recent blob
    ("blob_head", 10),     // HEAD a recent blob
    ("tags", 6),           // tags list of a recent repository
    ("catalog", 3),        // one catalog page (n=100) after a recent repository
    ("referrers", 6),      // referrers of a recent image manifest
    ("blob_push", 10),     // monolithic push of a 1-16 KiB blob
    ("manifest_push", 12), // a 1-8 KiB layer, then an image manifest under a new tag
    ("referrer_push", 5), // an artifact manifest with a subject and 0-64 KiB of annotations, by digest
    ("chunked", 2),       // 2-4 MiB in 1 MiB PATCHes (at most one per client every `chunked_every`)
    ("delete", 4),        // a recent manifest by digest, or a recent pushed blob
    ("unknown", 8),       // a name, an upload or a digest that does not exist
];

/// How the soak runs (from `--soak-*`).
#[derive(Clone)]
pub struct Config {
    pub secs: f64,
    pub clients: usize,
    /// Seconds between VmRSS samples.
    pub sample_secs: f64,
    /// Weights by kind, in the order of [`KINDS`].
    pub weights: Vec<u32>,
    /// Shortest time between two chunked uploads of one client.
    pub chunked_every: Duration,
    /// Manifest pushes into one repository before the client moves to a new one.
    pub pushes_per_repo: u64,
}

impl Config {
    pub fn new(secs: f64) -> Config {
        Config {
            secs,
            clients: 4,
            sample_secs: 2.0,
            weights: KINDS.iter().map(|k| k.1).collect(),
            chunked_every: Duration::from_secs(2),
            pushes_per_repo: 50,
        }
    }

    /// `kind=weight,...`: overrides the weights of the kinds named (`all=0,pull_tag=1` is allowed: `all`
    /// sets every kind, left to right).
    pub fn set_mix(&mut self, spec: &str) -> Result<()> {
        for item in spec.split(',').filter(|s| !s.is_empty()) {
            let (k, w) = item
                .split_once('=')
                .with_context(|| format!("soak mix {item}: expected kind=weight"))?;
            let w: u32 = w.parse()?;
            if k == "all" {
                self.weights.iter_mut().for_each(|x| *x = w);
                continue;
            }
            let i = KINDS
                .iter()
                .position(|(n, _)| *n == k)
                .with_context(|| format!("soak mix: unknown kind {k} (kinds: {})", kind_names()))?;
            self.weights[i] = w;
        }
        if self.weights.iter().all(|&w| w == 0) {
            bail!("soak mix: every weight is 0");
        }
        Ok(())
    }

    pub fn describe(&self) -> String {
        KINDS
            .iter()
            .zip(&self.weights)
            .filter(|(_, &w)| w > 0)
            .map(|((k, _), w)| format!("{k}={w}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn kind_names() -> String {
    KINDS.iter().map(|k| k.0).collect::<Vec<_>>().join(", ")
}

/// What a soak of one server gave.
pub struct Outcome {
    /// (seconds since the start, VmRSS MiB).
    pub samples: Vec<(f64, f64)>,
    /// Requests by kind (a kind's requests, not its operations: a push is several).
    pub requests: Vec<u64>,
    pub secs: f64,
}

impl Outcome {
    /// The sample nearest to `frac` of the run.
    pub fn rss_at(&self, frac: f64) -> f64 {
        let t = self.secs * frac;
        self.samples
            .iter()
            .min_by(|a, b| (a.0 - t).abs().total_cmp(&(b.0 - t).abs()))
            .map_or(0.0, |s| s.1)
    }

    pub fn rss_end(&self) -> f64 {
        self.samples.last().map_or(0.0, |s| s.1)
    }

    pub fn rss_peak(&self) -> f64 {
        self.samples.iter().map(|s| s.1).fold(0.0, f64::max)
    }

    pub fn total(&self) -> u64 {
        self.requests.iter().sum()
    }
}

/// Requests per client at most (the time bound comes first at any plausible rate).
const MAX_REQUESTS: u64 = 10_000_000;
/// Recent blobs and manifests a client remembers, to pull and delete.
const RECENT: usize = 256;
/// No request waits longer than this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The empty JSON object, the config of artifact manifests.
const EMPTY: &[u8] = b"{}";
const EMPTY_TYPE: &str = "application/vnd.oci.empty.v1+json";

/// Soaks `t` for `cfg.secs` seconds.
pub async fn run(t: &Target, cfg: &Config) -> Result<Outcome> {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(cfg.secs);
    let mut tasks = Vec::new();
    for id in 0..cfg.clients {
        let (addr, cfg) = (t.addr, cfg.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Client::new(id as u64, Conn::open(addr).await?, cfg);
            c.run(deadline).await?;
            anyhow::Ok(c.requests)
        }));
    }
    let pid = t.pid;
    let every = Duration::from_secs_f64(cfg.sample_secs);
    let sampler = tokio::spawn(async move {
        let mut samples = Vec::new();
        let max = (samples_bound(deadline, t0, every) + 2) as usize;
        while samples.len() < max {
            samples.push((t0.elapsed().as_secs_f64(), ops::proc_sample(pid).rss_mib));
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep_until((Instant::now() + every).min(deadline).into()).await;
        }
        samples
    });
    let mut requests = vec![0u64; KINDS.len()];
    for task in tasks {
        for (sum, n) in requests.iter_mut().zip(task.await??) {
            *sum += n;
        }
    }
    let mut samples = sampler.await?;
    // The end: after the last client has finished.
    samples.push((t0.elapsed().as_secs_f64(), ops::proc_sample(t.pid).rss_mib));
    Ok(Outcome {
        samples,
        requests,
        secs: t0.elapsed().as_secs_f64(),
    })
}

fn samples_bound(deadline: Instant, t0: Instant, every: Duration) -> u64 {
    (deadline.duration_since(t0).as_secs_f64() / every.as_secs_f64().max(0.01)).ceil() as u64
}

struct Blob {
    repo: String,
    digest: String,
    /// Pushed on its own (not a layer of a manifest), so it may be deleted.
    loose: bool,
}

struct Image {
    repo: String,
    tag: String,
    digest: String,
    size: usize,
}

struct Client {
    id: u64,
    c: Conn,
    cfg: Config,
    rng: u64,
    seq: u64,
    repo_no: u64,
    pushes_in_repo: u64,
    repo: String,
    /// The repository's config blob (digest, size); None until pushed.
    config: Option<(String, usize)>,
    blobs: VecDeque<Blob>,
    images: VecDeque<Image>,
    /// Repositories this client has pushed to (recent ones).
    repos: VecDeque<String>,
    last_chunked: Option<Instant>,
    requests: Vec<u64>,
}

impl Client {
    fn new(id: u64, c: Conn, cfg: Config) -> Client {
        Client {
            id,
            c,
            cfg,
            rng: 0x2545_F491_4F6C_DD1D ^ (id + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            seq: 0,
            repo_no: 0,
            pushes_in_repo: 0,
            repo: String::new(),
            config: None,
            blobs: VecDeque::new(),
            images: VecDeque::new(),
            repos: VecDeque::new(),
            last_chunked: None,
            requests: vec![0; KINDS.len()],
        }
    }

    fn next(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn seed(&mut self) -> u64 {
        self.seq += 1;
        (self.id << 40) | self.seq
    }

    async fn run(&mut self, deadline: Instant) -> Result<()> {
        let total: u32 = self.cfg.weights.iter().sum();
        self.new_repo().await?;
        while Instant::now() < deadline && self.requests.iter().sum::<u64>() < MAX_REQUESTS {
            let mut pick = self.below(total as u64) as u32;
            let mut kind = 0;
            for (i, &w) in self.cfg.weights.iter().enumerate() {
                if pick < w {
                    kind = i;
                    break;
                }
                pick -= w;
            }
            let kind = self.resolve(KINDS[kind].0);
            let n = self.op(kind).await?;
            let i = KINDS.iter().position(|k| k.0 == kind).unwrap_or(0);
            self.requests[i] += n;
        }
        Ok(())
    }

    /// One request with a timeout, failing unless its status is one of `ok`.
    async fn req(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        ok: &[u16],
    ) -> Result<Resp> {
        let what = format!("soak {method} {path}");
        tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.c.send(method, path, headers, body, true),
        )
        .await
        .with_context(|| format!("{what}: timed out"))??
        .expect(ok, &what)
    }

    /// A new repository with its config blob and the empty blob of artifact manifests; 4 requests.
    async fn new_repo(&mut self) -> Result<u64> {
        self.repo_no += 1;
        self.pushes_in_repo = 0;
        self.repo = format!("soak/c{}/r{:05}", self.id, self.repo_no);
        let config = Bytes::from(format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"config":{{"Labels":{{"repo":"{}"}}}}}}"#,
            self.repo
        ));
        let d = digest(&config);
        let repo = self.repo.clone();
        ops::upload_monolithic(&mut self.c, &repo, &config, &d).await?;
        ops::upload_monolithic(
            &mut self.c,
            &repo,
            &Bytes::from_static(EMPTY),
            &digest(EMPTY),
        )
        .await?;
        self.config = Some((d, config.len()));
        self.repos.push_back(repo);
        if self.repos.len() > RECENT {
            self.repos.pop_front();
        }
        Ok(4)
    }

    /// What runs instead of `kind` when there is nothing for it yet (nothing pushed to pull, no subject
    /// in the current repository), or when a chunked upload is not due.
    fn resolve(&self, kind: &'static str) -> &'static str {
        let has_image = !self.images.is_empty();
        match kind {
            "pull_tag" | "pull_digest" | "referrers" if !has_image => "manifest_push",
            "referrer_push" if !self.images.iter().any(|im| im.repo == self.repo) => {
                "manifest_push"
            }
            "chunked"
                if self
                    .last_chunked
                    .is_some_and(|t| t.elapsed() < self.cfg.chunked_every) =>
            {
                self.resolve("blob_get")
            }
            "blob_get" | "blob_head" if self.blobs.is_empty() => "blob_push",
            _ => kind,
        }
    }

    /// Runs one operation of `kind` (resolved); returns the requests it made.
    async fn op(&mut self, kind: &str) -> Result<u64> {
        match kind {
            "pull_tag" | "pull_digest" => {
                let i = self.pick(self.images.len()).context("no image")?;
                let im = &self.images[i];
                let path = if kind == "pull_tag" {
                    format!("/v2/{}/manifests/{}", im.repo, im.tag)
                } else {
                    format!("/v2/{}/manifests/{}", im.repo, im.digest)
                };
                self.req(Method::GET, &path, ACCEPT, Bytes::new(), &[200])
                    .await?;
                Ok(1)
            }
            "blob_get" | "blob_head" => {
                let i = self.pick(self.blobs.len()).context("no blob")?;
                let path = format!("/v2/{}/blobs/{}", self.blobs[i].repo, self.blobs[i].digest);
                let m = if kind == "blob_get" {
                    Method::GET
                } else {
                    Method::HEAD
                };
                self.req(m, &path, &[], Bytes::new(), &[200]).await?;
                Ok(1)
            }
            "tags" => {
                let Some(i) = self.pick(self.repos.len()) else {
                    return Ok(0);
                };
                let path = format!("/v2/{}/tags/list", self.repos[i]);
                // registry:2 answers 404 once every manifest of a repository is deleted.
                self.req(Method::GET, &path, &[], Bytes::new(), &[200, 404])
                    .await?;
                Ok(1)
            }
            "catalog" => {
                let Some(i) = self.pick(self.repos.len()) else {
                    return Ok(0);
                };
                let path = format!("/v2/_catalog?n=100&last={}", self.repos[i]);
                self.req(Method::GET, &path, &[], Bytes::new(), &[200])
                    .await?;
                Ok(1)
            }
            "referrers" => {
                let i = self.pick(self.images.len()).context("no image")?;
                let path = format!(
                    "/v2/{}/referrers/{}",
                    self.images[i].repo, self.images[i].digest
                );
                // registry:2 (distribution 2.8) has no referrers API: 404.
                self.req(Method::GET, &path, &[], Bytes::new(), &[200, 404])
                    .await?;
                Ok(1)
            }
            "blob_push" => {
                let len = 1024 + self.below(15 * 1024) as usize;
                let seed = self.seed();
                let b = data(len, seed);
                let d = digest(&b);
                let repo = self.repo.clone();
                ops::upload_monolithic(&mut self.c, &repo, &b, &d).await?;
                self.remember_blob(Blob {
                    repo,
                    digest: d,
                    loose: true,
                });
                Ok(2)
            }
            "manifest_push" => {
                let mut n = 0;
                if self.pushes_in_repo >= self.cfg.pushes_per_repo {
                    n += self.new_repo().await?;
                }
                self.pushes_in_repo += 1;
                let len = 1024 + self.below(7 * 1024) as usize;
                let seed = self.seed();
                let layer = data(len, seed);
                let ld = digest(&layer);
                let repo = self.repo.clone();
                ops::upload_monolithic(&mut self.c, &repo, &layer, &ld).await?;
                let (cd, cn) = self.config.clone().context("no config blob")?;
                let tag = format!("t{seed:x}");
                let body = ops::manifest((&cd, cn), &[(ld.clone(), len)], &tag);
                let (d, size) = (digest(&body), body.len());
                ops::put_manifest(&mut self.c, &repo, &tag, body).await?;
                self.remember_blob(Blob {
                    repo: repo.clone(),
                    digest: ld,
                    loose: false,
                });
                self.images.push_back(Image {
                    repo,
                    tag,
                    digest: d,
                    size,
                });
                if self.images.len() > RECENT {
                    self.images.pop_front();
                }
                Ok(n + 3)
            }
            "referrer_push" => {
                // A subject in the current repository (referrers are listed per repository).
                let Some(subject) = self
                    .images
                    .iter()
                    .rev()
                    .find(|im| im.repo == self.repo)
                    .map(|im| (im.digest.clone(), im.size))
                else {
                    bail!("no subject");
                };
                let annotation = self.below(64 * 1024) as usize;
                let seed = self.seed();
                let body = referrer(subject, seed, annotation);
                let d = digest(&body);
                let repo = self.repo.clone();
                ops::put_manifest(&mut self.c, &repo, &d, body).await?;
                Ok(1)
            }
            "chunked" => {
                self.last_chunked = Some(Instant::now());
                let len = (2 * MIB + self.below(2 * MIB)) as usize;
                let seed = self.seed();
                let b = data(len, seed);
                let d = digest(&b);
                let repo = self.repo.clone();
                let patches = len.div_ceil(MIB as usize) as u64;
                tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    ops::upload_chunked(&mut self.c, &repo, &b, &d, MIB as usize),
                )
                .await
                .context("soak chunked upload timed out")??;
                self.remember_blob(Blob {
                    repo,
                    digest: d,
                    loose: true,
                });
                Ok(patches + 2)
            }
            "delete" => {
                if self.below(2) == 0 {
                    if let Some(i) = self.pick(self.images.len()) {
                        let im = self.images.remove(i).context("no image")?;
                        let path = format!("/v2/{}/manifests/{}", im.repo, im.digest);
                        self.req(Method::DELETE, &path, &[], Bytes::new(), &[202])
                            .await?;
                        return Ok(1);
                    }
                }
                let Some(i) = self.blobs.iter().rposition(|b| b.loose) else {
                    return Ok(0);
                };
                let b = self.blobs.remove(i).context("no blob")?;
                let path = format!("/v2/{}/blobs/{}", b.repo, b.digest);
                self.req(Method::DELETE, &path, &[], Bytes::new(), &[202])
                    .await?;
                Ok(1)
            }
            "unknown" => {
                let x = self.next();
                let fake = digest(&x.to_le_bytes());
                let path = match x % 4 {
                    // A name never pushed to, new every time.
                    0 => format!("/v2/soak/none/c{}/n{x:x}/manifests/latest", self.id),
                    1 => format!("/v2/soak/none/c{}/n{x:x}/tags/list", self.id),
                    2 => format!("/v2/{}/blobs/{fake}", self.repo),
                    // An upload that was never started (a well-formed UUID).
                    _ => format!(
                        "/v2/{}/blobs/uploads/{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
                        self.repo,
                        x >> 32,
                        (x >> 16) & 0xffff,
                        x & 0xfff,
                        (x >> 20) & 0xfff,
                        x & 0xffff_ffff_ffff
                    ),
                };
                let method = if x % 8 == 2 {
                    Method::HEAD
                } else {
                    Method::GET
                };
                self.req(method, &path, ACCEPT, Bytes::new(), &[404])
                    .await?;
                Ok(1)
            }
            other => bail!("soak: unknown kind {other}"),
        }
    }

    /// A recent index among `len`, biased to the newest half.
    fn pick(&mut self, len: usize) -> Option<usize> {
        if len == 0 {
            return None;
        }
        let half = len.div_ceil(2) as u64;
        let i = if self.below(4) == 0 {
            self.below(len as u64)
        } else {
            len as u64 - 1 - self.below(half)
        };
        Some(i as usize)
    }

    fn remember_blob(&mut self, b: Blob) {
        self.blobs.push_back(b);
        if self.blobs.len() > RECENT {
            self.blobs.pop_front();
        }
    }
}

/// An OCI artifact manifest (empty config, one empty layer) whose subject is `subject`, with
/// `annotation` bytes of annotation text.
fn referrer(subject: (String, usize), seed: u64, annotation: usize) -> Bytes {
    let empty = digest(EMPTY);
    let text: String = data(annotation.div_ceil(2), seed)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": ops::OCI_MANIFEST,
        "artifactType": "application/vnd.example.soak.v1",
        "config": {"mediaType": EMPTY_TYPE, "digest": empty, "size": EMPTY.len()},
        "layers": [{"mediaType": EMPTY_TYPE, "digest": empty, "size": EMPTY.len()}],
        "subject": {"mediaType": ops::OCI_MANIFEST, "digest": subject.0, "size": subject.1},
        "annotations": {
            "org.opencontainers.image.created": "2024-01-01T00:00:00Z",
            "org.example.soak.seed": format!("{seed}"),
            "org.example.soak.text": &text[..annotation.min(text.len())],
        },
    });
    Bytes::from(serde_json::to_vec(&m).unwrap_or_default())
}
