//! The debug listener (`http.debug.addr`): `/debug/health` and, with `http.debug.prometheus.enabled`,
//! the Prometheus metrics at `http.debug.prometheus.path`. It is separate from the API listener, as in
//! distribution, so that it can stay on an internal address.

use std::io;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::health::Health;

/// What the debug listener serves.
#[derive(Clone)]
pub struct DebugState {
    pub health: Arc<Health>,
    /// The metrics path and the recorder's handle, when Prometheus is enabled.
    pub prometheus: Option<(String, PrometheusHandle)>,
}

pub fn app(state: DebugState) -> Router {
    let mut router = Router::new().route("/debug/health", get(health));
    if let Some((path, _)) = &state.prometheus {
        router = router.route(path, get(prometheus));
    }
    router.with_state(state)
}

/// Serves the debug endpoints on `listener` until `shutdown` is cancelled.
pub async fn run(
    listener: TcpListener,
    state: DebugState,
    shutdown: CancellationToken,
) -> io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// distribution's status handler: 200 `{}` when every check passes, otherwise 503 with the failing
/// checks and their errors.
async fn health(State(state): State<DebugState>) -> Response {
    let failing = state.health.failing();
    let status = if failing.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::to_string(&failing).unwrap_or_else(|_| "{}".to_owned());
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn prometheus(State(state): State<DebugState>) -> Response {
    let text = state
        .prometheus
        .as_ref()
        .map(|(_, h)| h.render())
        .unwrap_or_default();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
        .into_response()
}
