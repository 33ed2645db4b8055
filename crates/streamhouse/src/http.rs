//! HTTP listener: health and readiness for now.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use streamhouse_kafka::Broker;
use tokio::net::TcpListener;

pub async fn serve(listener: TcpListener, broker: Arc<Broker>) -> std::io::Result<()> {
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .with_state(broker);
    axum::serve(listener, app).await
}

/// Ready when the metadata store answers.
async fn ready(State(broker): State<Arc<Broker>>) -> (StatusCode, &'static str) {
    match broker.metadata().list_topics().await {
        Ok(_) => (StatusCode::OK, "ready"),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metadata store unavailable",
        ),
    }
}
