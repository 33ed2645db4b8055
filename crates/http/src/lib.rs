//! StreamHouse's HTTP side, served on one listener:
//!
//! - `/api/v1/...`: the admin and client API (topics, partitions, records, agents, leases,
//!   consumer groups), JSON in and out, documented in `docs/openapi.yaml`. Errors are
//!   `{"error": "...", "code": "..."}` with a matching status code (see [`HttpError`]).
//! - `/health`, `/ready`: liveness and readiness probes.
//! - `/metrics`: Prometheus text format (see [`install_recorder`] and [`Metrics`]).
//! - `/api/v1/users`: SASL/SCRAM users.
//! - `/` and `/ui/...`: a small web console (static page, no external assets), unless turned
//!   off.
//!
//! Served over plain HTTP ([`serve`]) or HTTPS ([`serve_tls`]), secured as [`HttpOptions`] say
//! (`security.rs`): HTTP Basic against the agent's SCRAM credentials, every API call authorized
//! by the ACLs of its Kafka equivalent, a Host allow-list, security headers, an audit log of
//! changes. Everything is answered from a [`Broker`]; this crate holds no state of its own
//! beyond the metrics snapshot.

#![warn(missing_docs)]

mod api;
mod console;
mod error;
mod extract;
mod guard;
mod metrics;
mod security;
mod tls;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{from_fn, from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use streamhouse_kafka::Broker;
use tokio::net::TcpListener;

pub use error::HttpError;
pub use metrics::{install_recorder, Metrics};
pub use security::{AllowedHosts, HttpOptions};

/// Shared by every handler.
#[derive(Clone)]
struct AppState {
    broker: Arc<Broker>,
    metrics: Arc<Metrics>,
    options: Arc<HttpOptions>,
}

/// The complete HTTP application: API, console, metrics, probes, secured as `options` say.
pub fn router(broker: Arc<Broker>, metrics: Arc<Metrics>, options: HttpOptions) -> Router {
    let state = AppState {
        broker,
        metrics,
        options: Arc::new(options),
    };
    let options = state.options.clone();
    let authenticated = |routes: Router<AppState>| {
        // Authentication runs first, so the audit log sees the caller.
        routes
            .route_layer(from_fn(security::audit))
            .route_layer(from_fn_with_state(state.clone(), security::authenticate))
    };
    let probes = api::probes().route("/metrics", get(render_metrics));
    let probes = if options.protect_probes {
        authenticated(probes)
    } else {
        probes
    };
    let mut app = authenticated(api::routes()).merge(probes);
    if options.console {
        app = app.merge(console::routes());
    }
    app.fallback(not_found)
        .layer(from_fn(record_request))
        .layer(from_fn_with_state(state.clone(), security::check_host))
        .layer(from_fn(security::security_headers))
        .with_state(state)
}

/// Serves [`router`] on `listener`. Connections count against the broker's `max_connections`
/// limits (separately from Kafka's) and close when idle for `connections_max_idle`; failed
/// accepts are retried, so this does not return while the process runs.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    metrics: Arc<Metrics>,
    options: HttpOptions,
) -> std::io::Result<()> {
    serve_guarded(listener, broker, metrics, options).await
}

/// Serves [`router`] over HTTPS on `listener`; `tls` is the server's rustls configuration (from
/// `streamhouse_kafka::security::server_config`). Plain HTTP requests fail the handshake.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
    broker: Arc<Broker>,
    metrics: Arc<Metrics>,
    options: HttpOptions,
) -> std::io::Result<()> {
    let listener = tls::TlsListener::new(listener, tls)?;
    serve_guarded(listener, broker, metrics, options).await
}

/// The one way either listener is served: behind the connection guard, with the client's address
/// reaching the handlers (ACL host matching, the audit log).
async fn serve_guarded<L>(
    listener: L,
    broker: Arc<Broker>,
    metrics: Arc<Metrics>,
    options: HttpOptions,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
    L::Io: Unpin,
{
    let listener = guard::Guarded::new(listener, &broker.config().limits);
    let app = router(broker, metrics, options);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<security::ClientAddr>(),
    )
    .await
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
