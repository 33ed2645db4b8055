//! `/metrics`: the main series are present and move with produce and consume.

use axum::http::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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
    // Scraped before the topic exists: the agent takes its partition leases when it is created.
    let before = scrape(&app).await;
    app.create_topic("m", 1).await;
    app.produce("m", json!([{"value": "a"}, {"value": "b"}]))
        .await;
    app.get("/api/v1/topics/m/partitions/0/records")
        .await
        .expect(StatusCode::OK);
    app.post(
        "/api/v1/groups/gm/offsets",
        json!({"offsets": [{"topic": "m", "partition": 0, "offset": 1}]}),
    )
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
        "streamhouse_producer_states",
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

/// One ApiVersions v0 request over a real Kafka connection, answered by the same broker.
async fn kafka_api_versions(app: &App) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(streamhouse_kafka::serve(listener, app.broker.clone()));
    let mut conn = TcpStream::connect(addr).await.unwrap();
    // size, api key 18 (ApiVersions), version 0, correlation id 7, null client id.
    let mut frame = 10i32.to_be_bytes().to_vec();
    frame.extend_from_slice(&[0, 18, 0, 0, 0, 0, 0, 7, 0xff, 0xff]);
    conn.write_all(&frame).await.unwrap();
    let len = conn.read_i32().await.unwrap();
    let mut body = vec![0; len as usize];
    conn.read_exact(&mut body).await.unwrap();
    assert_eq!(&body[..4], &7i32.to_be_bytes(), "correlation id");
}

#[tokio::test]
async fn kafka_request_series() {
    let app = App::start().await;
    kafka_api_versions(&app).await;
    let text = scrape(&app).await;
    for present in [
        "streamhouse_kafka_requests_total{",
        "streamhouse_kafka_request_duration_seconds_bucket{",
        "streamhouse_kafka_connections",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(present)),
            "{present} missing:\n{text}"
        );
    }
    assert!(text.contains("# TYPE streamhouse_kafka_request_duration_seconds histogram"));
}
