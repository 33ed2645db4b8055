//! Health, readiness, agents, leases and the throughput counters the console charts.

use std::future::Future;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use streamhouse_kafka::AgentStatus;
use streamhouse_metadata::{now_ms, PartitionLease};

use crate::error::HttpResult;
use crate::security::Caller;
use crate::AppState;

use streamhouse_metadata::AclOperation as Op;
use streamhouse_metadata::AclResourceType::Topic;

/// Liveness: the process serves HTTP.
pub(crate) async fn health() -> &'static str {
    "ok"
}

/// Longest the readiness probe waits for the metadata store: probes time out after a second
/// by default (Kubernetes), and a probe that times out says less than a 503.
const READY_TIMEOUT: Duration = Duration::from_millis(800);

/// Readiness: the metadata store answers a query (one round trip that returns no rows; never
/// answered from the metadata cache), within [`READY_TIMEOUT`].
pub(crate) async fn ready(State(s): State<AppState>) -> (StatusCode, &'static str) {
    let metadata = s.broker.metadata();
    readiness(metadata.list_agents(i64::MAX), READY_TIMEOUT).await
}

/// 200 when `probe` succeeds within `limit`, else 503.
async fn readiness<T>(
    probe: impl Future<Output = Result<T, streamhouse_metadata::MetadataError>>,
    limit: Duration,
) -> (StatusCode, &'static str) {
    match tokio::time::timeout(limit, probe).await {
        Ok(Ok(_)) => (StatusCode::OK, "ready"),
        Ok(Err(e)) => {
            tracing::warn!("not ready: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "metadata store unavailable",
            )
        }
        Err(_) => {
            tracing::warn!("not ready: the metadata store did not answer within {limit:?}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "metadata store unavailable",
            )
        }
    }
}

/// Metadata's broker list: every authenticated caller (Kafka answers it to every client).
pub(crate) async fn agents(
    State(s): State<AppState>,
    _caller: Caller,
) -> HttpResult<axum::Json<Vec<AgentStatus>>> {
    Ok(axum::Json(s.broker.admin().agents().await?))
}

/// Metadata's partition leaders: the leases of the topics the caller may DESCRIBE.
pub(crate) async fn leases(
    State(s): State<AppState>,
    caller: Caller,
) -> HttpResult<axum::Json<Vec<PartitionLease>>> {
    let mut leases = s.broker.admin().leases().await?;
    leases.retain(|l| caller.sees(Op::Describe, Topic, &l.topic));
    Ok(axum::Json(leases))
}

/// Cumulative counters; a client derives rates from two samples.
#[derive(Debug, Serialize)]
pub(crate) struct Stats {
    timestamp_ms: i64,
    /// Durable records in every partition ever written (sum of high watermarks).
    records_in_total: i64,
    /// Record-batch bytes appended by this agent (Kafka and HTTP produce).
    bytes_in_total: u64,
    /// Record-batch bytes read by this agent (Kafka fetch and HTTP consume).
    bytes_out_total: u64,
}

/// Records are counted over the topics the caller may DESCRIBE; the byte counters are the
/// agent's, as `/metrics` shows them.
pub(crate) async fn stats(
    State(s): State<AppState>,
    caller: Caller,
) -> HttpResult<axum::Json<Stats>> {
    let metadata = s.broker.metadata();
    let mut records_in_total = 0;
    let topics = metadata.list_topics().await.map_err(api)?;
    for topic in topics
        .iter()
        .filter(|t| caller.sees(Op::Describe, Topic, &t.name))
    {
        // A topic deleted since the listing simply no longer counts.
        let Ok(partitions) = metadata.list_partitions(&topic.name).await else {
            continue;
        };
        records_in_total += partitions.iter().map(|p| p.high_watermark).sum::<i64>();
    }
    Ok(axum::Json(Stats {
        timestamp_ms: now_ms(),
        records_in_total,
        bytes_in_total: s.metrics.counter_total("streamhouse_bytes_in_total"),
        bytes_out_total: s.metrics.counter_total("streamhouse_bytes_out_total"),
    }))
}

fn api(e: streamhouse_metadata::MetadataError) -> crate::error::HttpError {
    streamhouse_kafka::ApiError::from(e).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readiness_is_bounded() {
        let started = std::time::Instant::now();
        let hung = std::future::pending::<Result<(), streamhouse_metadata::MetadataError>>();
        let (status, _) = readiness(hung, Duration::from_millis(100)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(started.elapsed() < Duration::from_secs(1));
        let failed =
            async { Err::<(), _>(streamhouse_metadata::MetadataError::Invalid("x".into())) };
        let (status, _) = readiness(failed, Duration::from_millis(100)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let answered = async { Ok::<_, streamhouse_metadata::MetadataError>(()) };
        assert_eq!(readiness(answered, READY_TIMEOUT).await.0, StatusCode::OK);
    }
}
