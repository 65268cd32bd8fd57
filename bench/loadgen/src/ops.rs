//! Registry operations the workloads are made of, in the Docker Registry HTTP API V2 that both servers speak,
//! plus test data, latency statistics and the server's counters from /proc.

use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::Method;
use sha2::{Digest as _, Sha256};

use crate::client::{location_path, with_query, Conn};

pub const MIB: u64 = 1024 * 1024;

/// `len` bytes of incompressible pseudo-random data (xorshift), different for every `seed`.
pub fn data(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

pub fn digest(b: &[u8]) -> String {
    let h = Sha256::digest(b);
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for byte in h.iter() {
        s.push_str(&format!("{byte:02x}"));
    }
    s
}

/// POST: starts an upload and returns its path.
async fn start_upload(c: &mut Conn, repo: &str) -> Result<String> {
    let r = c
        .send(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            Bytes::new(),
            true,
        )
        .await?
        .expect(&[202], "start upload")?;
    Ok(location_path(r.header("location").context("no Location")?))
}

/// POST then PUT with the whole blob (what docker and skopeo do for a monolithic upload).
pub async fn upload_monolithic(c: &mut Conn, repo: &str, blob: &Bytes, d: &str) -> Result<()> {
    let loc = start_upload(c, repo).await?;
    let put = with_query(&loc, &format!("digest={d}"));
    c.send(
        Method::PUT,
        &put,
        &[("content-type", "application/octet-stream")],
        blob.clone(),
        true,
    )
    .await?
    .expect(&[201], "finish upload")?;
    Ok(())
}

/// POST, PATCH in `chunk`-byte pieces with Content-Range, then PUT with the digest.
pub async fn upload_chunked(
    c: &mut Conn,
    repo: &str,
    blob: &Bytes,
    d: &str,
    chunk: usize,
) -> Result<()> {
    let mut loc = start_upload(c, repo).await?;
    let mut off = 0usize;
    while off < blob.len() {
        let end = (off + chunk).min(blob.len());
        let range = format!("{off}-{}", end - 1);
        let r = c
            .send(
                Method::PATCH,
                &loc,
                &[
                    ("content-type", "application/octet-stream"),
                    ("content-range", &range),
                ],
                blob.slice(off..end),
                true,
            )
            .await?
            .expect(&[202], "patch")?;
        loc = location_path(r.header("location").context("no Location")?);
        off = end;
    }
    c.send(
        Method::PUT,
        &with_query(&loc, &format!("digest={d}")),
        &[],
        Bytes::new(),
        true,
    )
    .await?
    .expect(&[201], "finish chunked upload")?;
    Ok(())
}

/// Cross-repository mount of a blob (201), falling back to a monolithic upload.
pub async fn mount(c: &mut Conn, repo: &str, from: &str, blob: &Bytes, d: &str) -> Result<()> {
    let r = c
        .send(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/?mount={d}&from={from}"),
            &[],
            Bytes::new(),
            true,
        )
        .await?
        .expect(&[201, 202], "mount")?;
    if r.status.as_u16() == 202 {
        upload_monolithic(c, repo, blob, d).await?;
    }
    Ok(())
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// An OCI image manifest over a config and layers (digest, size), made unique by `note`.
pub fn manifest(config: (&str, usize), layers: &[(String, usize)], note: &str) -> Bytes {
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|(d, s)| {
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": s})
        })
        .collect();
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0, "size": config.1},
        "layers": layers,
        "annotations": {"org.opencontainers.image.description": note},
    });
    Bytes::from(serde_json::to_vec(&m).unwrap_or_default())
}

pub async fn put_manifest(c: &mut Conn, repo: &str, reference: &str, body: Bytes) -> Result<()> {
    c.send(
        Method::PUT,
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("content-type", OCI_MANIFEST)],
        body,
        true,
    )
    .await?
    .expect(&[201], "put manifest")?;
    Ok(())
}

/// Latency percentiles over a sample.
pub struct Lat(Vec<Duration>);

impl Lat {
    pub fn new(mut v: Vec<Duration>) -> Lat {
        v.sort();
        Lat(v)
    }

    /// The `p`-th percentile in milliseconds (0 for an empty sample).
    pub fn ms(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let i = ((self.0.len() as f64 - 1.0) * p / 100.0).round() as usize;
        self.0[i.min(self.0.len() - 1)].as_secs_f64() * 1000.0
    }
}

/// A server's CPU seconds (user + system) and memory from /proc.
#[derive(Clone, Copy, Default)]
pub struct Proc {
    pub cpu: f64,
    pub rss_mib: f64,
    pub hwm_mib: f64,
}

/// Reads /proc/PID/stat and /proc/PID/status; zeros when there is no such process.
pub fn proc_sample(pid: Option<u32>) -> Proc {
    let Some(pid) = pid else {
        return Proc::default();
    };
    let mut p = Proc::default();
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Fields after the command name (which may contain spaces): state is field 3, utime 14, stime 15.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let tick = 100.0; // USER_HZ: 100 on every Linux architecture in use
            let ut: f64 = f.get(11).and_then(|s| s.parse().ok()).unwrap_or(0.0);
            let st: f64 = f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
            p.cpu = (ut + st) / tick;
        }
    }
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
        for line in status.lines() {
            let kib = |l: &str| -> f64 {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0.0)
            };
            if line.starts_with("VmRSS:") {
                p.rss_mib = kib(line) / 1024.0;
            } else if line.starts_with("VmHWM:") {
                p.hwm_mib = kib(line) / 1024.0;
            }
        }
    }
    p
}
