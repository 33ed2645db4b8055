//! `/metrics`: the main series are present and move with produce and consume.

use axum::http::StatusCode;
use serde_json::json;

use crate::harness::App;

/// Sum of every sample of `name` (any labels).
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn scrape(app: &App) -> String {
    let reply = app.get("/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.content_type.starts_with("text/plain"));
    reply.text()
}

#[tokio::test]
async fn series_present_and_moving() {
    let app = App::start().await;
    app.create_topic("m", 1).await;
    let before = scrape(&app).await;
    app.produce("m", json!([{"value": "a"}, {"value": "b"}])).await;
    app.get("/api/v1/topics/m/partitions/0/records")
        .await
        .expect(StatusCode::OK);
    app.post("/api/v1/groups/gm/offsets", json!({"offsets": [{"topic": "m", "partition": 0, "offset": 1}]}))
        .await
        .expect(StatusCode::OK);
    app.broker.flush_all().await;
    let after = scrape(&app).await;

    for moving in [
        "streamhouse_bytes_in_total",
        "streamhouse_bytes_out_total",
        "streamhouse_object_store_requests_total",
        "streamhouse_object_store_bytes_total",
        "streamhouse_http_requests_total",
        "streamhouse_flush_duration_seconds_count",
        "streamhouse_metadata_cache_hits_total",
        "streamhouse_lease_changes_total",
    ] {
        assert!(
            sample(&after, moving) > sample(&before, moving),
            "{moving} did not grow:\n{after}"
        );
    }
    for present in [
        "streamhouse_segment_cache_hit_ratio",
        "streamhouse_segment_cache_bytes",
        "streamhouse_segment_index_segments",
        "streamhouse_open_partitions",
        "streamhouse_partition_leases",
        "streamhouse_consumer_lag",
        "streamhouse_http_request_duration_seconds_bucket",
        "streamhouse_object_store_request_duration_seconds_bucket",
    ] {
        assert!(
            after.lines().any(|l| l.starts_with(present)),
            "{present} missing:\n{after}"
        );
    }
    // Histograms are real Prometheus histograms (buckets), not summaries.
    assert!(after.contains("# TYPE streamhouse_flush_duration_seconds histogram"));
    assert!(after.contains("streamhouse_consumer_lag{group=\"gm\",topic=\"m\",partition=\"0\"} 1"));
}
