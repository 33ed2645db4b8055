//! DeleteRecords and retention through the agent: low watermarks, OFFSET_OUT_OF_RANGE below
//! them, ListOffsets earliest, and the background retention pass.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use streamhouse_kafka::ProduceRecord;
use streamhouse_metadata::{NewTopic, TopicConfig};

use crate::harness::{Client, TestServer};

const TOPIC: &str = "trimmed";

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

async fn server_with_topic(config: TopicConfig) -> TestServer {
    let server = TestServer::start().await;
    server
        .metadata
        .create_topic(NewTopic {
            name: TOPIC.into(),
            partitions: 1,
            config,
        })
        .await
        .unwrap();
    server
}

/// Produces `batches` batches of 5 records, each made durable (one segment) before the next,
/// with record timestamps `timestamp_ms`.
async fn produce(server: &TestServer, batches: usize, timestamp_ms: i64) {
    for b in 0..batches {
        let records = (0..5)
            .map(|i| ProduceRecord {
                value: Some(Bytes::from(format!("v{b}-{i}"))),
                partition: Some(0),
                timestamp_ms: Some(timestamp_ms),
                ..Default::default()
            })
            .collect();
        server
            .broker
            .produce_records(TOPIC, records, Duration::from_secs(10))
            .await
            .unwrap();
    }
}

/// DeleteRecords for partition 0: `(error code, low watermark)`.
async fn delete_records(client: &mut Client, offset: i64, version: i16) -> (i16, i64) {
    let request = DeleteRecordsRequest::default()
        .with_timeout_ms(5_000)
        .with_topics(vec![DeleteRecordsTopic::default()
            .with_name(name(TOPIC))
            .with_partitions(vec![DeleteRecordsPartition::default()
                .with_partition_index(0)
                .with_offset(offset)])]);
    let ResponseKind::DeleteRecords(r) = client
        .send(RequestKind::DeleteRecords(request), version)
        .await
    else {
        panic!("not a DeleteRecords response")
    };
    let p = &r.topics[0].partitions[0];
    (p.error_code, p.low_watermark)
}

/// Fetch at `offset`: `(error code, log start offset, first batch offset or -1)`.
async fn fetch(client: &mut Client, offset: i64) -> (i16, i64, i64) {
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(TOPIC))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])]);
    let ResponseKind::Fetch(r) = client.send(RequestKind::Fetch(request), 11).await else {
        panic!("not a fetch response")
    };
    let p = &r.responses[0].partitions[0];
    let records = p.records.clone().unwrap_or_default();
    let first = if records.len() >= 8 {
        i64::from_be_bytes(records[..8].try_into().unwrap())
    } else {
        -1
    };
    (p.error_code, p.log_start_offset, first)
}

async fn earliest(client: &mut Client) -> i64 {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(TOPIC))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-2)])]);
    let ResponseKind::ListOffsets(r) = client.send(RequestKind::ListOffsets(request), 5).await
    else {
        panic!("not a list offsets response")
    };
    r.topics[0].partitions[0].offset
}

#[tokio::test]
async fn delete_records_moves_the_low_watermark() {
    let server = server_with_topic(TopicConfig::default()).await;
    produce(&server, 4, streamhouse_metadata::now_ms()).await;
    let mut client = server.client().await;

    // Mid-segment: the segment holding offset 7 stays, but offsets below 7 are gone.
    assert_eq!(delete_records(&mut client, 7, 0).await, (0, 7));
    assert_eq!(earliest(&mut client).await, 7);
    let out_of_range = ResponseError::OffsetOutOfRange.code();
    assert_eq!(fetch(&mut client, 3).await.0, out_of_range);
    let (error, log_start, first) = fetch(&mut client, 7).await;
    assert_eq!((error, log_start), (0, 7));
    assert_eq!(
        first, 5,
        "the whole batch holding 7 is returned, as Kafka does"
    );

    // Past the high watermark is refused and changes nothing; -1 means the high watermark.
    assert_eq!(delete_records(&mut client, 21, 1).await, (out_of_range, -1));
    assert_eq!(delete_records(&mut client, -1, 2).await, (0, 20));
    assert_eq!(fetch(&mut client, 19).await.0, out_of_range);
    assert_eq!(fetch(&mut client, 20).await.0, 0);
    assert!(server
        .metadata
        .list_segments(TOPIC, 0, 0)
        .await
        .unwrap()
        .is_empty());

    // New records continue at the high watermark.
    produce(&server, 1, streamhouse_metadata::now_ms()).await;
    assert_eq!(fetch(&mut client, 20).await, (0, 20, 20));
}

#[tokio::test]
async fn delete_records_for_an_unknown_partition_is_an_error() {
    let server = server_with_topic(TopicConfig::default()).await;
    let mut client = server.client().await;
    let request = DeleteRecordsRequest::default().with_topics(vec![DeleteRecordsTopic::default()
        .with_name(name("nope"))
        .with_partitions(vec![DeleteRecordsPartition::default()
            .with_partition_index(0)
            .with_offset(0)])]);
    let ResponseKind::DeleteRecords(r) = client.send(RequestKind::DeleteRecords(request), 2).await
    else {
        panic!()
    };
    assert_eq!(
        r.topics[0].partitions[0].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );
}

#[tokio::test]
async fn retention_pass_applies_the_topic_settings() {
    let config = TopicConfig {
        retention_ms: Some(60_000),
        ..TopicConfig::default()
    };
    let server = server_with_topic(config).await;
    let old = streamhouse_metadata::now_ms() - 3_600_000;
    produce(&server, 2, old).await;
    produce(&server, 1, streamhouse_metadata::now_ms()).await;

    let truncated = server.broker.maintenance().enforce_retention().await;
    assert_eq!(truncated.len(), 1);
    assert_eq!(truncated[0].log_start, 10);
    assert_eq!(truncated[0].deleted.len(), 2);
    let mut client = server.client().await;
    assert_eq!(earliest(&mut client).await, 10);
    assert_eq!(
        fetch(&mut client, 0).await.0,
        ResponseError::OffsetOutOfRange.code()
    );
    assert!(server
        .broker
        .maintenance()
        .enforce_retention()
        .await
        .is_empty());
}

/// Held and loaded partition counts of `server`'s agent.
fn held_and_loaded(server: &TestServer) -> (u64, u64) {
    let stats = server.broker.admin().segment_index_stats();
    (stats.open_partitions, stats.loaded_partitions)
}

async fn wait_held(server: &TestServer, partitions: u64) {
    for _ in 0..200 {
        if held_and_loaded(server).0 == partitions {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "agent holds {:?}, not {partitions}",
        held_and_loaded(server)
    );
}

#[tokio::test]
async fn idle_partitions_are_held_without_being_loaded() {
    let server = TestServer::start().await;
    let topic = NewTopic {
        name: TOPIC.into(),
        partitions: 8,
        config: TopicConfig::default(),
    };
    server.metadata.create_topic(topic).await.unwrap();
    wait_held(&server, 8).await;
    assert_eq!(
        held_and_loaded(&server),
        (8, 0),
        "the controller loads nothing"
    );

    produce(&server, 1, streamhouse_metadata::now_ms()).await;
    assert_eq!(
        held_and_loaded(&server),
        (8, 1),
        "a produce loads its partition"
    );
    // Maintenance looks at the held partitions too, and finds the others empty.
    server.broker.maintenance().consolidate(true).await;
    server.broker.maintenance().enforce_retention().await;
    assert_eq!(held_and_loaded(&server), (8, 1));
}

#[tokio::test]
async fn maintenance_loads_a_held_partition_that_has_records() {
    let config = TopicConfig {
        retention_ms: Some(60_000),
        ..TopicConfig::default()
    };
    let first = server_with_topic(config).await;
    produce(&first, 2, streamhouse_metadata::now_ms() - 3_600_000).await;
    first.broker.shutdown().await;

    // The next agent takes the partition over: held, not loaded, until retention needs it.
    let next = TestServer::start_on(first.store.clone(), first.metadata.clone()).await;
    wait_held(&next, 1).await;
    assert_eq!(held_and_loaded(&next), (1, 0));
    let truncated = next.broker.maintenance().enforce_retention().await;
    assert_eq!(held_and_loaded(&next), (1, 1));
    assert_eq!(truncated.len(), 1, "the old records are past retention");
    assert_eq!(truncated[0].log_start, 10);
}
