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
    /// This agent's object-store requests and what they cost.
    object_store: ObjectStoreStats,
}

/// Object-store requests of this agent (cumulative) and the consolidation backlog (current).
#[derive(Debug, Serialize)]
pub(crate) struct ObjectStoreStats {
    /// Object writes.
    puts_total: u64,
    /// Object reads (whole or ranged).
    gets_total: u64,
    /// Objects listed and deleted (listings count per object).
    lists_total: u64,
    /// Deletions (per object; batched on the wire).
    deletes_total: u64,
    /// The requests' cost at S3 Standard list prices, in US dollars.
    cost_usd_total: f64,
    /// Objects written by flush cycles.
    flush_objects_total: u64,
    /// Partition segments those objects carried.
    flush_segments_total: u64,
    /// Slices still waiting for consolidation, their bytes, and the oldest one's age.
    consolidation_backlog_slices: u64,
    /// Bytes of those slices.
    consolidation_backlog_bytes: u64,
    /// Age of the oldest of them, in seconds.
    consolidation_backlog_age_seconds: f64,
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
    let m = s.metrics.snapshot();
    let op = |op: &str| m.labelled("streamhouse_object_store_requests_total", "op", op) as u64;
    let object_store = ObjectStoreStats {
        puts_total: op("put") + op("put_multipart"),
        gets_total: op("get") + op("get_ranges"),
        lists_total: op("list") + op("list_with_delimiter"),
        deletes_total: op("delete"),
        cost_usd_total: m.total("streamhouse_object_store_cost_nano_usd_total") / 1e9,
        flush_objects_total: m.total("streamhouse_flush_objects_total") as u64,
        flush_segments_total: m.total("streamhouse_flush_segments_committed_total") as u64,
        consolidation_backlog_slices: m.total("streamhouse_consolidation_backlog_slices") as u64,
        consolidation_backlog_bytes: m.total("streamhouse_consolidation_backlog_bytes") as u64,
        consolidation_backlog_age_seconds: m.total("streamhouse_consolidation_backlog_age_seconds"),
    };
    Ok(axum::Json(Stats {
        timestamp_ms: now_ms(),
        records_in_total,
        bytes_in_total: m.total("streamhouse_bytes_in_total") as u64,
        bytes_out_total: m.total("streamhouse_bytes_out_total") as u64,
        object_store,
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
