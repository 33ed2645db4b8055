//! StreamHouse's HTTP side, served on one listener:
//!
//! - `/api/v1/...`: the admin and client API (topics, partitions, records, agents, leases,
//!   consumer groups), JSON in and out, documented in `docs/openapi.yaml`. Errors are
//!   `{"error": "...", "code": "..."}` with a matching status code (see [`HttpError`]).
//! - `/health`, `/ready`: liveness and readiness probes.
//! - `/metrics`: Prometheus text format (see [`install_recorder`] and [`Metrics`]).
//! - `/api/v1/users`: SASL/SCRAM users (the API itself is not authenticated; see the README).
//! - `/` and `/ui/...`: a small web console (static page, no external assets).
//!
//! Served over plain HTTP ([`serve`]) or HTTPS ([`serve_tls`]). Everything is answered from a
//! [`Broker`]; this crate holds no state of its own beyond the metrics snapshot.

mod api;
mod console;
mod error;
mod extract;
mod guard;
mod metrics;
mod tls;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use streamhouse_kafka::Broker;
use tokio::net::TcpListener;

pub use error::HttpError;
pub use metrics::{install_recorder, Metrics};

/// Shared by every handler.
#[derive(Clone)]
struct AppState {
    broker: Arc<Broker>,
    metrics: Arc<Metrics>,
}

/// The complete HTTP application: API, console, metrics, probes.
pub fn router(broker: Arc<Broker>, metrics: Arc<Metrics>) -> Router {
    let state = AppState { broker, metrics };
    api::routes()
        .merge(console::routes())
        .route("/metrics", get(render_metrics))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(record_request))
        .with_state(state)
}

/// Serves [`router`] on `listener`. Connections count against the broker's `max_connections`
/// limits (separately from Kafka's) and close when idle for `connections_max_idle`; failed
/// accepts are retried, so this does not return while the process runs.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    metrics: Arc<Metrics>,
) -> std::io::Result<()> {
    let listener = guard::Guarded::new(listener, &broker.config().limits);
    axum::serve(listener, router(broker, metrics)).await
}

/// Serves [`router`] over HTTPS on `listener`; `tls` is the server's rustls configuration (from
/// `streamhouse_kafka::security::server_config`). Plain HTTP requests fail the handshake.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
    broker: Arc<Broker>,
    metrics: Arc<Metrics>,
) -> std::io::Result<()> {
    let listener = tls::TlsListener::new(listener, tls)?;
    let listener = guard::Guarded::new(listener, &broker.config().limits);
    axum::serve(listener, router(broker, metrics)).await
}

async fn render_metrics(State(s): State<AppState>) -> impl IntoResponse {
    let body = s.metrics.render(&s.broker).await;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

async fn not_found() -> HttpError {
    HttpError::NotFound {
        code: "not_found",
        message: "no such endpoint".into(),
    }
}

/// Counts and times every request by route template (not raw path, to bound cardinality).
async fn record_request(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    ::metrics::counter!(
        "streamhouse_http_requests_total",
        "route" => route.clone(),
        "method" => method,
        "status" => status
    )
    .increment(1);
    ::metrics::histogram!("streamhouse_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
