//! Admin APIs at the wire level: topic configs (CreateTopics, AlterConfigs,
//! IncrementalAlterConfigs, DescribeConfigs), ListOffsets specs, DescribeCluster,
//! DescribeLogDirs, DescribeTopicPartitions, and the Produce / InitProducerId rules clients
//! depend on.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResourceResult;
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::harness::{record_batch, Client, TestServer};
use crate::protocol::{create_topic, list_offsets, produce, produce_result};

const TOPIC: i8 = 2;
const BROKER: i8 = 4;
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;
const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn name(v: &str) -> TopicName {
    TopicName(s(v))
}

fn code(e: ResponseError) -> i16 {
    e.code()
}

/// IncrementalAlterConfigs of one resource; the error code and message.
async fn incremental(
    c: &mut Client,
    resource_type: i8,
    topic: &str,
    ops: &[(&str, i8, Option<&str>)],
    validate_only: bool,
) -> (i16, Option<String>) {
    use incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
    let configs = ops
        .iter()
        .map(|(n, op, v)| {
            AlterableConfig::default()
                .with_name(s(n))
                .with_config_operation(*op)
                .with_value(v.map(s))
        })
        .collect();
    let req = IncrementalAlterConfigsRequest::default()
        .with_validate_only(validate_only)
        .with_resources(vec![AlterConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(s(topic))
            .with_configs(configs)]);
    let ResponseKind::IncrementalAlterConfigs(r) =
        c.send(RequestKind::IncrementalAlterConfigs(req), 1).await
    else {
        panic!("not an IncrementalAlterConfigs response")
    };
    let r = &r.responses[0];
    assert_eq!(r.resource_name.as_str(), topic);
    (
        r.error_code,
        r.error_message.as_ref().map(|m| m.to_string()),
    )
}

/// Legacy AlterConfigs of one topic at `version`; the error code.
async fn alter(c: &mut Client, topic: &str, settings: &[(&str, &str)], version: i16) -> i16 {
    use alter_configs_request::{AlterConfigsResource, AlterableConfig};
    let configs = settings
        .iter()
        .map(|(n, v)| {
            AlterableConfig::default()
                .with_name(s(n))
                .with_value(Some(s(v)))
        })
        .collect();
    let req = AlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
        .with_resource_type(TOPIC)
        .with_resource_name(s(topic))
        .with_configs(configs)]);
    let ResponseKind::AlterConfigs(r) = c.send(RequestKind::AlterConfigs(req), version).await
    else {
        panic!("not an AlterConfigs response")
    };
    r.responses[0].error_code
}

/// Every config DescribeConfigs reports for a topic.
async fn describe(c: &mut Client, topic: &str) -> Vec<DescribeConfigsResourceResult> {
    let req = DescribeConfigsRequest::default()
        .with_include_synonyms(true)
        .with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(TOPIC)
            .with_resource_name(s(topic))
            .with_configuration_keys(None)]);
    let ResponseKind::DescribeConfigs(r) = c.send(RequestKind::DescribeConfigs(req), 4).await
    else {
        panic!("not a DescribeConfigs response")
    };
    assert_eq!(r.results[0].error_code, 0);
    r.results[0].configs.clone()
}

/// `(value, source)` of one config, if reported.
async fn config(c: &mut Client, topic: &str, key: &str) -> Option<(String, i8)> {
    describe(c, topic)
        .await
        .into_iter()
        .find(|e| e.name.as_str() == key)
        .map(|e| (e.value.unwrap().to_string(), e.config_source))
}

async fn create(
    c: &mut Client,
    topic: &str,
    replication_factor: i16,
    configs: &[(&str, &str)],
) -> i16 {
    let configs = configs
        .iter()
        .map(|(n, v)| {
            CreatableTopicConfig::default()
                .with_name(s(n))
                .with_value(Some(s(v)))
        })
        .collect();
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(5_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(1)
            .with_replication_factor(replication_factor)
            .with_configs(configs)]);
    let ResponseKind::CreateTopics(r) = c.send(RequestKind::CreateTopics(req), 7).await else {
        panic!("not a CreateTopics response")
    };
    r.topics[0].error_code
}

#[tokio::test]
async fn incremental_alter_configs_sets_deletes_appends_and_subtracts() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    assert_eq!(create(&mut c, "t", 1, &[]).await, 0);
    let throttled = "leader.replication.throttled.replicas";

    // validate_only checks and stores nothing.
    let ok = incremental(
        &mut c,
        TOPIC,
        "t",
        &[("retention.ms", SET, Some("1000"))],
        true,
    )
    .await;
    assert_eq!(ok, (0, None));
    assert_eq!(
        config(&mut c, "t", "retention.ms").await,
        Some(("604800000".into(), SOURCE_DEFAULT))
    );

    let ops = [
        ("retention.ms", SET, Some("1000")),
        (throttled, APPEND, Some("0:1,1:1")),
    ];
    assert_eq!(incremental(&mut c, TOPIC, "t", &ops, false).await.0, 0);
    assert_eq!(
        config(&mut c, "t", "retention.ms").await,
        Some(("1000".into(), SOURCE_TOPIC))
    );
    assert_eq!(
        config(&mut c, "t", "segment.ms").await,
        Some(("600000".into(), SOURCE_DEFAULT))
    );
    // One operation per config and request, as Kafka requires.
    for op in [
        (throttled, SUBTRACT, Some("0:1")),
        (throttled, APPEND, Some("2:1")),
    ] {
        assert_eq!(incremental(&mut c, TOPIC, "t", &[op], false).await.0, 0);
    }
    assert_eq!(
        config(&mut c, "t", throttled).await,
        Some(("1:1,2:1".into(), SOURCE_TOPIC))
    );
    // The stored config is what the agent acts on.
    let topic = server.metadata.get_topic("t").await.unwrap().unwrap();
    assert_eq!(topic.config.retention_ms, Some(1000));

    let ops = [("retention.ms", DELETE, None)];
    assert_eq!(incremental(&mut c, TOPIC, "t", &ops, false).await.0, 0);
    assert_eq!(
        config(&mut c, "t", "retention.ms").await,
        Some(("604800000".into(), SOURCE_DEFAULT))
    );

    // Refusals, each leaving the config as it was.
    let invalid = code(ResponseError::InvalidConfig);
    for ops in [
        [("retention.ms", APPEND, Some("5"))],
        [("no.such.config", SET, Some("1"))],
        [("retention.ms", SET, Some("-2"))],
        [("cleanup.policy", SET, Some("compact,forever"))],
        [("cleanup.policy", APPEND, Some("forever"))],
        [("cleanup.policy", SET, Some("forever"))],
        [("min.cleanable.dirty.ratio", SET, Some("2"))],
    ] {
        let (err, message) = incremental(&mut c, TOPIC, "t", &ops, false).await;
        assert_eq!(err, invalid, "{ops:?}");
        assert!(message.is_some());
    }
    let huge = "9".repeat(5000);
    let (err, _) = incremental(&mut c, TOPIC, "t", &[(throttled, SET, Some(&huge))], false).await;
    assert_eq!(err, invalid);
    let twice = [
        ("retention.ms", SET, Some("1")),
        ("retention.ms", DELETE, None),
    ];
    assert_eq!(
        incremental(&mut c, TOPIC, "t", &twice, false).await.0,
        code(ResponseError::InvalidRequest)
    );
    let null = [("retention.ms", SET, None)];
    assert_eq!(
        incremental(&mut c, TOPIC, "t", &null, false).await.0,
        code(ResponseError::InvalidRequest)
    );
    let (err, _) = incremental(&mut c, BROKER, "1", &[("x", SET, Some("1"))], false).await;
    assert_eq!(err, code(ResponseError::InvalidRequest));
    let (err, _) = incremental(
        &mut c,
        TOPIC,
        "missing",
        &[("retention.ms", DELETE, None)],
        false,
    )
    .await;
    assert_eq!(err, code(ResponseError::UnknownTopicOrPartition));
    assert_eq!(
        config(&mut c, "t", throttled).await,
        Some(("1:1,2:1".into(), SOURCE_TOPIC))
    );
    assert_eq!(
        config(&mut c, "t", "cleanup.policy").await,
        Some(("delete".into(), SOURCE_DEFAULT))
    );
}

#[tokio::test]
async fn alter_configs_replaces_the_topic_settings() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    assert_eq!(
        create(
            &mut c,
            "t",
            -1,
            &[("retention.ms", "1000"), ("segment.ms", "5000")]
        )
        .await,
        0
    );
    for version in 0..=2 {
        let retention = format!("{}", 2000 + i64::from(version));
        assert_eq!(
            alter(&mut c, "t", &[("retention.ms", &retention)], version).await,
            0
        );
        assert_eq!(
            config(&mut c, "t", "retention.ms").await,
            Some((retention, SOURCE_TOPIC))
        );
        // A setting left out returns to its default.
        assert_eq!(
            config(&mut c, "t", "segment.ms").await,
            Some(("600000".into(), SOURCE_DEFAULT))
        );
    }
    assert_eq!(
        alter(&mut c, "t", &[("retention.bytes", "-7")], 2).await,
        code(ResponseError::InvalidConfig)
    );
    assert_eq!(
        config(&mut c, "t", "retention.ms").await,
        Some(("2002".into(), SOURCE_TOPIC))
    );
}

#[tokio::test]
async fn create_topics_validates_configs_and_replication_factor() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let invalid_rf = code(ResponseError::InvalidReplicationFactor);
    assert_eq!(create(&mut c, "rf0", 0, &[]).await, invalid_rf);
    assert_eq!(create(&mut c, "rf-2", -2, &[]).await, invalid_rf);
    let invalid = code(ResponseError::InvalidConfig);
    assert_eq!(
        create(&mut c, "a", 1, &[("retention.ms", "-2")]).await,
        invalid
    );
    assert_eq!(create(&mut c, "a", 1, &[("no.such", "1")]).await, invalid);
    assert_eq!(
        create(&mut c, "a", 1, &[("cleanup.policy", "compact,forever")]).await,
        invalid
    );
    assert!(server.metadata.list_topics().await.unwrap().is_empty());
    assert_eq!(create(&mut c, "default-rf", -1, &[]).await, 0);
    assert_eq!(
        create(
            &mut c,
            "b",
            3,
            &[("cleanup.policy", "delete"), ("retention.ms", "-1")]
        )
        .await,
        0
    );
    // A value given on the topic is the topic's even where it equals the default.
    assert_eq!(
        create(&mut c, "c", 1, &[("retention.ms", "604800000")]).await,
        0
    );
    assert_eq!(
        config(&mut c, "c", "retention.ms").await,
        Some(("604800000".into(), SOURCE_TOPIC))
    );
    // Synonyms in order of precedence: the topic's value, then the default it overrides.
    let synonyms = |entries: Vec<DescribeConfigsResourceResult>, key: &str| {
        let e = entries
            .into_iter()
            .find(|e| e.name.as_str() == key)
            .unwrap();
        e.synonyms
            .iter()
            .map(|s| (s.value.as_ref().unwrap().to_string(), s.source))
            .collect::<Vec<_>>()
    };
    let entries = describe(&mut c, "b").await;
    assert_eq!(
        synonyms(entries.clone(), "retention.ms"),
        [
            ("-1".into(), SOURCE_TOPIC),
            ("604800000".into(), SOURCE_DEFAULT)
        ]
    );
    assert_eq!(
        synonyms(entries, "segment.ms"),
        [("600000".to_string(), SOURCE_DEFAULT)]
    );
    assert_eq!(
        config(&mut c, "b", "cleanup.policy").await,
        Some(("delete".into(), SOURCE_TOPIC))
    );
}

async fn offset_for(c: &mut Client, topic: &str, timestamp: i64, version: i16) -> (i64, i64) {
    let ResponseKind::ListOffsets(r) = c.send(list_offsets(topic, timestamp), version).await else {
        panic!("not a ListOffsets response")
    };
    let p = &r.topics[0].partitions[0];
    assert_eq!(p.error_code, 0, "timestamp {timestamp} v{version}");
    (p.offset, p.timestamp)
}

#[tokio::test]
async fn list_offsets_max_timestamp_earliest_local_and_latest_tiered() {
    let server = TestServer::start().await;
    create_topic(&server, "ts", 1).await;
    let mut c = server.client().await;
    for v in 7..=10 {
        assert_eq!(offset_for(&mut c, "ts", -3, v).await, (-1, -1));
    }
    assert_eq!(offset_for(&mut c, "ts", -5, 9).await.0, -1);
    // Offsets 0-1 at 1000-1001, 2-4 at 9000-9002, 5 at 2000: the largest timestamp is in the
    // middle of the second batch and is neither its first nor the partition's last offset.
    let batches = [
        record_batch(&[("a", "1"), ("b", "2")], 1_000, None),
        record_batch(&[("c", "3"), ("d", "4"), ("e", "5")], 9_000, None),
        record_batch(&[("f", "6")], 2_000, None),
    ];
    for batch in batches {
        let (err, _) = produce_result(c.send(produce("ts", 0, batch, -1), 9).await);
        assert_eq!(err, 0);
    }
    for v in 7..=10 {
        assert_eq!(offset_for(&mut c, "ts", -3, v).await, (4, 9_002), "v{v}");
    }
    assert_eq!(offset_for(&mut c, "ts", -4, 8).await.0, 0);
    assert_eq!(offset_for(&mut c, "ts", -5, 9).await.0, 5);
    assert_eq!(offset_for(&mut c, "ts", -2, 10).await.0, 0);
    assert_eq!(offset_for(&mut c, "ts", -1, 10).await.0, 6);
    assert_eq!(offset_for(&mut c, "ts", 1_500, 10).await, (2, 9_000));
}

#[tokio::test]
async fn produce_with_two_batches_for_one_partition_is_refused() {
    let server = TestServer::start().await;
    create_topic(&server, "two", 1).await;
    let mut c = server.client().await;
    let mut both = BytesMut::new();
    both.extend_from_slice(&record_batch(&[("a", "1")], 1_000, None));
    both.extend_from_slice(&record_batch(&[("b", "2")], 1_000, None));
    for version in [3, 9, 11] {
        let (err, _) = produce_result(
            c.send(produce("two", 0, both.clone().freeze(), -1), version)
                .await,
        );
        assert_eq!(err, code(ResponseError::InvalidRecord), "v{version}");
    }
    // Nothing was appended; one batch is accepted.
    let one: Bytes = record_batch(&[("c", "3")], 1_000, None);
    assert_eq!(
        produce_result(c.send(produce("two", 0, one, -1), 9).await),
        (0, 0)
    );
}

/// A fresh idempotent producer id.
async fn new_producer_id(c: &mut Client) -> i64 {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    match c.send(RequestKind::InitProducerId(request), 4).await {
        ResponseKind::InitProducerId(r) if r.error_code == 0 => r.producer_id.0,
        other => panic!("InitProducerId: {other:?}"),
    }
}

#[tokio::test]
async fn init_producer_id_without_transactional_id_allocates_a_fresh_id() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    // Non-transactional InitProducerId carrying a producer id and epoch (-1: none).
    let init = |id: i64, epoch: i16| {
        RequestKind::InitProducerId(
            InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(epoch),
        )
    };
    let ResponseKind::InitProducerId(first) = c.send(init(-1, -1), 4).await else {
        panic!()
    };
    assert_eq!(first.error_code, 0);
    assert_eq!(first.producer_epoch, 0);
    // A client that sends its id and epoch back (KIP-360 re-initialisation) gets a new id, not
    // the next epoch of the one it sent, nor of anyone else's id it names.
    for (id, epoch) in [(first.producer_id.0, 0), (first.producer_id.0 + 1000, 5)] {
        let ResponseKind::InitProducerId(again) = c.send(init(id, epoch), 4).await else {
            panic!()
        };
        assert_eq!(again.error_code, 0);
        assert_ne!(again.producer_id, ProducerId(id));
        assert!(again.producer_id.0 > first.producer_id.0);
        assert_eq!(again.producer_epoch, 0);
    }
}

#[tokio::test]
async fn describe_cluster_lists_this_agent() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    for version in 0..=2 {
        let req = DescribeClusterRequest::default()
            .with_endpoint_type(1)
            .with_include_cluster_authorized_operations(true);
        let ResponseKind::DescribeCluster(r) =
            c.send(RequestKind::DescribeCluster(req), version).await
        else {
            panic!()
        };
        assert_eq!(r.error_code, 0);
        assert_eq!(r.cluster_id.as_str(), server.broker.config().cluster_id);
        assert_eq!(r.brokers.len(), 1);
        assert_eq!(r.brokers[0].port, i32::from(server.addr.port()));
        assert_eq!(r.controller_id, r.brokers[0].broker_id);
        // Without ACLs every operation is allowed: DESCRIBE (8) and ALTER (7) among them.
        assert_ne!(r.cluster_authorized_operations & (1 << 8), 0);
        assert_ne!(r.cluster_authorized_operations & (1 << 7), 0);
    }
    let req = DescribeClusterRequest::default().with_endpoint_type(2);
    let ResponseKind::DescribeCluster(r) = c.send(RequestKind::DescribeCluster(req), 1).await
    else {
        panic!()
    };
    assert_eq!(r.error_code, code(ResponseError::UnsupportedEndpointType));
}

#[tokio::test]
async fn describe_log_dirs_reports_sizes_from_the_metadata_store() {
    let server = TestServer::start().await;
    create_topic(&server, "sized", 2).await;
    create_topic(&server, "other", 1).await;
    let mut c = server.client().await;
    for (i, p) in [0, 0, 1].into_iter().enumerate() {
        let batch = record_batch(&[("k", &"v".repeat(100 * (i + 1)))], 1_000, None);
        assert_eq!(
            produce_result(c.send(produce("sized", p, batch, -1), 9).await).0,
            0
        );
    }
    let mut expected = Vec::new();
    for p in 0..2 {
        let segments = server.metadata.list_segments("sized", p, 0).await.unwrap();
        expected.push(segments.iter().map(|s| s.size_bytes as i64).sum::<i64>());
    }
    assert!(expected[0] > expected[1] && expected[1] > 0);
    for version in 1..=4 {
        let req = DescribeLogDirsRequest::default().with_topics(Some(vec![
            DescribableLogDirTopic::default()
                .with_topic(name("sized"))
                .with_partitions(vec![0, 1]),
        ]));
        let ResponseKind::DescribeLogDirs(r) =
            c.send(RequestKind::DescribeLogDirs(req), version).await
        else {
            panic!()
        };
        assert_eq!(r.error_code, 0);
        assert_eq!(r.results.len(), 1);
        let topics = &r.results[0].topics;
        assert_eq!(topics.len(), 1, "only the topic asked for");
        let sizes: Vec<_> = topics[0]
            .partitions
            .iter()
            .map(|p| (p.partition_index, p.partition_size))
            .collect();
        assert_eq!(sizes, vec![(0, expected[0]), (1, expected[1])]);
    }
    let ResponseKind::DescribeLogDirs(all) = c
        .send(
            RequestKind::DescribeLogDirs(DescribeLogDirsRequest::default().with_topics(None)),
            4,
        )
        .await
    else {
        panic!()
    };
    let mut names: Vec<_> = all.results[0]
        .topics
        .iter()
        .map(|t| t.name.0.to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["other", "sized"]);
}

#[tokio::test]
async fn describe_topic_partitions_pages_with_a_cursor() {
    let server = TestServer::start().await;
    create_topic(&server, "a", 3).await;
    create_topic(&server, "b", 2).await;
    let mut c = server.client().await;
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let req = DescribeTopicPartitionsRequest::default()
            .with_response_partition_limit(2)
            .with_cursor(cursor.take());
        let ResponseKind::DescribeTopicPartitions(r) =
            c.send(RequestKind::DescribeTopicPartitions(req), 0).await
        else {
            panic!()
        };
        pages += 1;
        for t in &r.topics {
            assert_eq!(t.error_code, 0);
            for p in &t.partitions {
                assert_eq!(p.leader_id, BrokerId(server.broker.config().node_id));
                assert_eq!(p.eligible_leader_replicas, Some(vec![]));
                assert_eq!(p.last_known_elr, Some(vec![]));
                seen.push((t.name.as_ref().unwrap().0.to_string(), p.partition_index));
            }
        }
        match r.next_cursor {
            Some(next) => {
                cursor = Some(
                    Cursor::default()
                        .with_topic_name(next.topic_name)
                        .with_partition_index(next.partition_index),
                )
            }
            None => break,
        }
    }
    let expected: Vec<_> = [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1)]
        .iter()
        .map(|(t, p)| (t.to_string(), *p))
        .collect();
    assert_eq!(seen, expected);
    assert_eq!(pages, 3);
    let req = DescribeTopicPartitionsRequest::default()
        .with_response_partition_limit(100)
        .with_topics(vec![
            TopicRequest::default().with_name(name("b")),
            TopicRequest::default().with_name(name("missing")),
        ]);
    let ResponseKind::DescribeTopicPartitions(r) =
        c.send(RequestKind::DescribeTopicPartitions(req), 0).await
    else {
        panic!()
    };
    let codes: Vec<_> = r.topics.iter().map(|t| t.error_code).collect();
    assert_eq!(codes, [0, code(ResponseError::UnknownTopicOrPartition)]);
    assert_eq!(r.topics[0].partitions.len(), 2);
}

#[tokio::test]
async fn transactions_are_listed_as_none() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    for version in 0..=1 {
        let req = ListTransactionsRequest::default()
            .with_state_filters(vec![s("Ongoing"), s("Sleeping")]);
        let ResponseKind::ListTransactions(r) =
            c.send(RequestKind::ListTransactions(req), version).await
        else {
            panic!()
        };
        assert_eq!(r.error_code, 0);
        assert!(r.transaction_states.is_empty());
        assert_eq!(r.unknown_state_filters, vec![s("Sleeping")]);
    }
    let req = DescribeTransactionsRequest::default()
        .with_transactional_ids(vec![TransactionalId(s("tx-1"))]);
    let ResponseKind::DescribeTransactions(r) =
        c.send(RequestKind::DescribeTransactions(req), 0).await
    else {
        panic!()
    };
    assert_eq!(r.transaction_states.len(), 1);
    assert_eq!(
        r.transaction_states[0].error_code,
        code(ResponseError::TransactionalIdNotFound)
    );
}

#[tokio::test]
async fn describe_producers_reports_committed_producer_state() {
    let server = TestServer::start().await;
    create_topic(&server, "idem", 1).await;
    let mut c = server.client().await;
    let pid = new_producer_id(&mut c).await;
    let batches = [
        record_batch(
            &[("a", "1"), ("b", "2"), ("c", "3")],
            1_000,
            Some((pid, 0, 0)),
        ),
        record_batch(&[("d", "4"), ("e", "5")], 1_000, Some((pid, 0, 3))),
    ];
    for batch in batches {
        assert_eq!(
            produce_result(c.send(produce("idem", 0, batch, -1), 9).await).0,
            0
        );
    }
    let req = DescribeProducersRequest::default().with_topics(vec![
        describe_producers_request::TopicRequest::default()
            .with_name(name("idem"))
            .with_partition_indexes(vec![0, 7]),
    ]);
    let ResponseKind::DescribeProducers(r) = c.send(RequestKind::DescribeProducers(req), 0).await
    else {
        panic!()
    };
    let partitions = &r.topics[0].partitions;
    assert_eq!(partitions[0].error_code, 0);
    let producers: Vec<_> = partitions[0]
        .active_producers
        .iter()
        .map(|p| (p.producer_id.0, p.producer_epoch, p.last_sequence))
        .collect();
    assert_eq!(producers, [(pid, 0, 4)]);
    assert!(partitions[0].active_producers[0].last_timestamp > 0);
    assert_eq!(
        partitions[1].error_code,
        code(ResponseError::UnknownTopicOrPartition)
    );
}

/// Administrative requests pipelined on one connection take effect in the order they were
/// sent, as on Kafka (one request at a time per connection; Java's admin client keeps many in
/// flight): ten alterations of one setting leave the last value, and a describe sent after
/// them sees it.
#[tokio::test]
async fn pipelined_admin_requests_take_effect_in_the_order_sent() {
    use incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};

    // Each alteration is delayed less than the one before, so alterations that ran at once
    // would finish in the reverse of the order they were sent.
    let slower_first = |n: u64| Duration::from_millis(40u64.saturating_sub(4 * n));
    let (server, _) = TestServer::start_delaying("alter_topic_config", slower_first).await;
    let mut c = server.client().await;
    assert_eq!(create(&mut c, "ordered", 1, &[]).await, 0);
    let set = |ms: u32| {
        let config = AlterableConfig::default()
            .with_name(s("retention.ms"))
            .with_config_operation(SET)
            .with_value(Some(s(&ms.to_string())));
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(TOPIC)
                .with_resource_name(s("ordered"))
                .with_configs(vec![config]),
        ]);
        (RequestKind::IncrementalAlterConfigs(request), 1)
    };
    let mut requests: Vec<_> = (1..=10).map(|i| set(60_000 * i)).collect();
    let describe =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(TOPIC)
            .with_resource_name(s("ordered"))
            .with_configuration_keys(Some(vec![s("retention.ms")]))]);
    requests.push((RequestKind::DescribeConfigs(describe), 4));
    let mut responses = c.send_pipelined(requests).await;
    let Some(ResponseKind::DescribeConfigs(described)) = responses.pop() else {
        panic!("not a DescribeConfigs response")
    };
    for response in responses {
        let ResponseKind::IncrementalAlterConfigs(r) = response else {
            panic!("not an IncrementalAlterConfigs response")
        };
        assert_eq!(r.responses[0].error_code, 0);
    }
    let value = described.results[0].configs[0].value.as_ref().unwrap();
    assert_eq!(
        value.as_str(),
        "600000",
        "the describe sent last sees the last alteration"
    );
    let stored = config(&mut c, "ordered", "retention.ms").await;
    assert_eq!(stored.map(|(v, _)| v).as_deref(), Some("600000"));
}

/// Two connections altering different settings of one topic at once both take effect: the
/// later-finishing alteration applies its change to the settings the other one stored, not
/// to the settings it saw when it began (which would undo the other).
#[tokio::test]
async fn concurrent_alterations_from_two_connections_both_take_effect() {
    // The first alteration is held back 150 ms before its store call, so the second one,
    // sent 30 ms later from another connection, overtakes it.
    let first_held = |n: u64| Duration::from_millis(if n == 0 { 150 } else { 0 });
    let (server, _) = TestServer::start_delaying("alter_topic_config", first_held).await;
    let (mut a, mut b) = (server.client().await, server.client().await);
    assert_eq!(create(&mut a, "shared", 1, &[]).await, 0);
    let first = incremental(
        &mut a,
        TOPIC,
        "shared",
        &[("retention.ms", SET, Some("120000"))],
        false,
    );
    let second = async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        incremental(
            &mut b,
            TOPIC,
            "shared",
            &[("segment.ms", SET, Some("90000"))],
            false,
        )
        .await
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!((first.0, second.0), (0, 0));
    let mut c = server.client().await;
    let retention = config(&mut c, "shared", "retention.ms").await;
    let segment = config(&mut c, "shared", "segment.ms").await;
    assert_eq!(retention.map(|(v, _)| v).as_deref(), Some("120000"));
    assert_eq!(
        segment.map(|(v, _)| v).as_deref(),
        Some("90000"),
        "the earlier-sent alteration overwrote the later one"
    );
}
