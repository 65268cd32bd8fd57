//! Prometheus metrics: the recorder, the names (distribution's `registry_*` where distribution has one,
//! `berth_*` for berth's own) and the recording helpers the rest of the code calls (the storage driver
//! wrapper that times every storage action is `storage::TimedDriver`).
//!
//! The `metrics` facade is a no-op until [`install`] sets the process-wide recorder (the binary does,
//! when `http.debug.prometheus.enabled`), so the helpers cost next to nothing otherwise.

use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

pub const HTTP_REQUESTS: &str = "registry_http_requests_total";
pub const HTTP_DURATION: &str = "registry_http_request_duration_seconds";
pub const HTTP_REQUEST_SIZE: &str = "registry_http_request_size_bytes";
pub const HTTP_RESPONSE_SIZE: &str = "registry_http_response_size_bytes";
pub const HTTP_IN_FLIGHT: &str = "registry_http_in_flight_requests";
pub use crate::storage::STORAGE_ACTION;
pub const NOTIFY_EVENTS: &str = "registry_notifications_events_total";
pub const NOTIFY_PENDING: &str = "registry_notifications_pending_total";
pub const NOTIFY_STATUS: &str = "registry_notifications_status_total";
pub const BYTES_RECEIVED: &str = "berth_http_received_bytes_total";
pub const BYTES_SENT: &str = "berth_http_sent_bytes_total";
pub const UPLOADS_IN_FLIGHT: &str = "berth_uploads_in_flight";
pub const GC_RUNS: &str = "berth_gc_runs_total";
pub const GC_RECLAIMED: &str = "berth_gc_reclaimed_bytes_total";
pub const GC_BLOBS_DELETED: &str = "berth_gc_deleted_blobs_total";
pub const GC_DURATION: &str = "berth_gc_duration_seconds";
pub const HEALTHY: &str = "berth_health_check_healthy";
pub const PROXY_HITS: &str = "registry_proxy_hits_total";
pub const PROXY_MISSES: &str = "registry_proxy_misses_total";
pub const PROXY_UPSTREAM_BYTES: &str = "registry_proxy_upstream_bytes_total";
pub const PROXY_SERVED_BYTES: &str = "registry_proxy_served_bytes_total";
pub const PROXY_EVICTIONS: &str = "registry_proxy_evictions_total";
pub const PROXY_EVICTED_BYTES: &str = "registry_proxy_evicted_bytes_total";
pub const PROXY_UPSTREAM_ERRORS: &str = "registry_proxy_upstream_errors_total";
pub const PROXY_CACHED_BYTES: &str = "registry_proxy_cached_bytes";

/// docker/go-metrics' buckets for durations (seconds) and for sizes (bytes).
const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0,
];
const SIZE_BUCKETS: &[f64] = &[
    1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
];

/// Sets the process-wide recorder and returns the handle that renders the text exposition format.
/// Fails if a recorder is already set.
pub fn install() -> std::result::Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), DURATION_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_bytes".to_owned()), SIZE_BUCKETS)?
        .install_recorder()?;
    describe();
    Ok(handle)
}

fn describe() {
    describe_counter!(
        PROXY_HITS,
        "Pull-through cache pulls answered from the cache, by kind (blob, manifest)."
    );
    describe_counter!(
        PROXY_MISSES,
        "Pull-through cache pulls fetched from an upstream, by kind (blob, manifest)."
    );
    describe_counter!(PROXY_UPSTREAM_BYTES, "Blob bytes fetched from upstreams.");
    describe_counter!(
        PROXY_SERVED_BYTES,
        "Cached blob bytes served from the cache."
    );
    describe_counter!(
        PROXY_EVICTIONS,
        "Cached blobs evicted (size budget or TTL)."
    );
    describe_counter!(PROXY_EVICTED_BYTES, "Bytes of cached blobs evicted.");
    describe_counter!(
        PROXY_UPSTREAM_ERRORS,
        "Upstream failures, by upstream and status (or unreachable, token)."
    );
    describe_gauge!(
        PROXY_CACHED_BYTES,
        "Bytes of cached blobs the cache accounts for."
    );
    describe_counter!(
        HTTP_REQUESTS,
        "Total number of HTTP requests made, by handler, status code and method."
    );
    describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "The HTTP request latencies in seconds."
    );
    describe_histogram!(
        HTTP_REQUEST_SIZE,
        metrics::Unit::Bytes,
        "The HTTP request sizes in bytes."
    );
    describe_histogram!(
        HTTP_RESPONSE_SIZE,
        metrics::Unit::Bytes,
        "The HTTP response sizes in bytes."
    );
    describe_gauge!(HTTP_IN_FLIGHT, "The in-flight HTTP requests, by handler.");
    describe_histogram!(
        STORAGE_ACTION,
        metrics::Unit::Seconds,
        "The number of seconds that the storage action takes."
    );
    describe_counter!(NOTIFY_EVENTS, "The number of total events.");
    describe_gauge!(NOTIFY_PENDING, "The gauge of pending events in queue.");
    describe_counter!(NOTIFY_STATUS, "The number of status code.");
    describe_counter!(
        BYTES_RECEIVED,
        metrics::Unit::Bytes,
        "Request body bytes received."
    );
    describe_counter!(
        BYTES_SENT,
        metrics::Unit::Bytes,
        "Response body bytes sent."
    );
    describe_gauge!(
        UPLOADS_IN_FLIGHT,
        "Blob upload requests whose body is being received."
    );
    describe_counter!(GC_RUNS, "Garbage collection runs.");
    describe_counter!(
        GC_RECLAIMED,
        metrics::Unit::Bytes,
        "Bytes of blobs deleted by garbage collection."
    );
    describe_counter!(GC_BLOBS_DELETED, "Blobs deleted by garbage collection.");
    describe_histogram!(
        GC_DURATION,
        metrics::Unit::Seconds,
        "How long garbage collection runs take."
    );
    describe_gauge!(HEALTHY, "1 while a health check passes, 0 while it fails.");
}

/// One API request, recorded when its response body has been sent (or dropped).
pub struct RequestRecord<'a> {
    /// distribution's route name: `base`, `catalog`, `tags`, `manifest`, `blob`, `blob-upload`,
    /// `blob-upload-chunk` (plus berth's `referrers`, and `unknown` for paths that are no route).
    pub handler: &'static str,
    pub method: &'a str,
    pub status: u16,
    pub duration: Duration,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

pub fn record_request(r: &RequestRecord<'_>) {
    // promhttp reports methods in lower case.
    let method = r.method.to_ascii_lowercase();
    counter!(HTTP_REQUESTS, "handler" => r.handler, "code" => r.status.to_string(), "method" => method.clone())
        .increment(1);
    histogram!(HTTP_DURATION, "handler" => r.handler, "method" => method).record(r.duration);
    histogram!(HTTP_REQUEST_SIZE, "handler" => r.handler).record(r.bytes_in as f64);
    histogram!(HTTP_RESPONSE_SIZE, "handler" => r.handler).record(r.bytes_out as f64);
    counter!(BYTES_RECEIVED).increment(r.bytes_in);
    counter!(BYTES_SENT).increment(r.bytes_out);
}

/// Counts a request as in flight until dropped.
pub struct InFlight {
    handler: &'static str,
    upload: bool,
}

impl InFlight {
    pub fn start(handler: &'static str, upload: bool) -> InFlight {
        gauge!(HTTP_IN_FLIGHT, "handler" => handler).increment(1.0);
        if upload {
            gauge!(UPLOADS_IN_FLIGHT).increment(1.0);
        }
        InFlight { handler, upload }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        gauge!(HTTP_IN_FLIGHT, "handler" => self.handler).decrement(1.0);
        if self.upload {
            gauge!(UPLOADS_IN_FLIGHT).decrement(1.0);
        }
    }
}

/// What one garbage collection run did; for the garbage collector to report.
#[derive(Debug, Clone, Copy, Default)]
pub struct GcRun {
    pub blobs_deleted: u64,
    pub bytes_reclaimed: u64,
    pub duration: Duration,
}

/// Records a finished garbage collection run.
pub fn record_gc_run(run: &GcRun) {
    counter!(GC_RUNS).increment(1);
    counter!(GC_BLOBS_DELETED).increment(run.blobs_deleted);
    counter!(GC_RECLAIMED).increment(run.bytes_reclaimed);
    histogram!(GC_DURATION).record(run.duration);
}

/// Sets the health gauge of one check.
pub fn record_health(check: &str, healthy: bool) {
    gauge!(HEALTHY, "check" => check.to_owned()).set(if healthy { 1.0 } else { 0.0 });
}

/// Notification metrics of one endpoint, with distribution's label values.
pub fn notify_event(endpoint: &str, kind: &'static str, n: u64) {
    counter!(NOTIFY_EVENTS, "type" => kind, "endpoint" => endpoint.to_owned()).increment(n);
}

pub fn notify_pending(endpoint: &str, pending: u64) {
    gauge!(NOTIFY_PENDING, "endpoint" => endpoint.to_owned()).set(pending as f64);
}

/// `status` as Go prints it: "202 Accepted".
pub fn notify_status(endpoint: &str, status: &str) {
    counter!(NOTIFY_STATUS, "code" => status.to_owned(), "endpoint" => endpoint.to_owned())
        .increment(1);
}

/// A pull answered by the pull-through cache: from the cache (`hit`) or from an upstream.
pub fn proxy_pull(kind: &'static str, hit: bool) {
    if hit {
        counter!(PROXY_HITS, "kind" => kind).increment(1);
    } else {
        counter!(PROXY_MISSES, "kind" => kind).increment(1);
    }
}

pub fn proxy_upstream_bytes(n: u64) {
    counter!(PROXY_UPSTREAM_BYTES).increment(n);
}

pub fn proxy_served_bytes(n: u64) {
    counter!(PROXY_SERVED_BYTES).increment(n);
}

pub fn proxy_evicted(bytes: u64) {
    counter!(PROXY_EVICTIONS).increment(1);
    counter!(PROXY_EVICTED_BYTES).increment(bytes);
}

pub fn proxy_cached_bytes(bytes: u64) {
    gauge!(PROXY_CACHED_BYTES).set(bytes as f64);
}

/// An upstream's failure: its status code, or `unreachable` / `token`.
pub fn proxy_upstream_error(upstream: &str, status: &str) {
    counter!(PROXY_UPSTREAM_ERRORS, "upstream" => upstream.to_owned(), "status" => status.to_owned())
        .increment(1);
}
