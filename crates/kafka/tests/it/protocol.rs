//! Wire-level behaviour of the agent: versions, produce/fetch semantics, bad input.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
use streamhouse_metadata::{NewTopic, TopicConfig};

use crate::harness::{record_batch, TestServer};

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

pub(crate) async fn create_topic(server: &TestServer, topic: &str, partitions: u32) {
    server
        .metadata
        .create_topic(NewTopic {
            name: topic.into(),
            partitions,
            config: TopicConfig::default(),
        })
        .await
        .unwrap();
}

pub(crate) fn produce(topic: &str, partition: i32, records: Bytes, acks: i16) -> RequestKind {
    RequestKind::Produce(
        ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(records))])]),
    )
}

pub(crate) fn fetch(topic: &str, partition: i32, offset: i64, max_wait_ms: i32) -> RequestKind {
    RequestKind::Fetch(
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(1 << 20)])]),
    )
}

pub(crate) fn list_offsets(topic: &str, timestamp: i64) -> RequestKind {
    RequestKind::ListOffsets(
        ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(name(topic))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(timestamp)])]),
    )
}

pub(crate) fn produce_result(r: ResponseKind) -> (i16, i64) {
    let ResponseKind::Produce(r) = r else {
        panic!("not a produce response")
    };
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

pub(crate) fn fetch_result(r: ResponseKind) -> (i16, i64, Bytes) {
    let ResponseKind::Fetch(r) = r else {
        panic!("not a fetch response")
    };
    let p = &r.responses[0].partitions[0];
    (
        p.error_code,
        p.high_watermark,
        p.records.clone().unwrap_or_default(),
    )
}

fn list_offsets_result(r: ResponseKind) -> (i16, i64) {
    let ResponseKind::ListOffsets(r) = r else {
        panic!("not a list offsets response")
    };
    let p = &r.topics[0].partitions[0];
    (p.error_code, p.offset)
}

/// A representative request of each API this suite knows, for `version`.
fn sample_request(api: ApiKey, version: i16) -> Option<RequestKind> {
    let topic = "versions";
    Some(match api {
        ApiKey::Produce => produce(topic, 0, record_batch(&[("k", "v")], 1_000, None), -1),
        ApiKey::Fetch => fetch(topic, 0, 0, 0),
        ApiKey::ListOffsets => list_offsets(topic, -1),
        ApiKey::Metadata => RequestKind::Metadata(
            MetadataRequest::default()
                .with_allow_auto_topic_creation(version < 4)
                .with_topics(Some(vec![
                    MetadataRequestTopic::default().with_name(Some(name(topic)))
                ])),
        ),
        ApiKey::ApiVersions => RequestKind::ApiVersions(ApiVersionsRequest::default()),
        ApiKey::CreateTopics => RequestKind::CreateTopics(
            CreateTopicsRequest::default()
                .with_timeout_ms(5_000)
                .with_topics(vec![CreatableTopic::default()
                    .with_name(name(&format!("created-v{version}")))
                    .with_num_partitions(2)
                    .with_replication_factor(1)]),
        ),
        ApiKey::DeleteTopics => RequestKind::DeleteTopics(
            DeleteTopicsRequest::default()
                .with_timeout_ms(5_000)
                .with_topic_names(vec![name(&format!("created-v{}", version + 2))]),
        ),
        ApiKey::CreatePartitions => RequestKind::CreatePartitions(
            CreatePartitionsRequest::default()
                .with_timeout_ms(5_000)
                .with_topics(vec![CreatePartitionsTopic::default()
                    .with_name(name("growing"))
                    .with_count(i32::from(version) + 2)]),
        ),
        ApiKey::DescribeConfigs => {
            RequestKind::DescribeConfigs(DescribeConfigsRequest::default().with_resources(
                vec![DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("versions"))],
            ))
        }
        // Filters with every field ANY (code 1); the creation is a valid binding.
        ApiKey::DescribeAcls => RequestKind::DescribeAcls(
            DescribeAclsRequest::default()
                .with_resource_type_filter(1)
                .with_pattern_type_filter(1)
                .with_operation(1)
                .with_permission_type(1),
        ),
        ApiKey::CreateAcls => RequestKind::CreateAcls(CreateAclsRequest::default().with_creations(
            vec![create_acls_request::AclCreation::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str(topic))
                .with_principal(StrBytes::from_static_str("User:reader"))
                .with_host(StrBytes::from_static_str("*"))
                .with_operation(3)
                .with_permission_type(3)],
        )),
        ApiKey::DeleteAcls => RequestKind::DeleteAcls(DeleteAclsRequest::default().with_filters(
            vec![delete_acls_request::DeleteAclsFilter::default()
                .with_resource_type_filter(1)
                .with_pattern_type_filter(1)
                .with_operation(1)
                .with_permission_type(1)],
        )),
        ApiKey::InitProducerId => RequestKind::InitProducerId(
            InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        ),
        ApiKey::AlterConfigs => {
            RequestKind::AlterConfigs(AlterConfigsRequest::default().with_resources(vec![
                alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str(topic))
                    .with_configs(vec![alter_configs_request::AlterableConfig::default()
                        .with_name(StrBytes::from_static_str("retention.ms"))
                        .with_value(Some(StrBytes::from_static_str("86400000")))]),
            ]))
        }
        ApiKey::IncrementalAlterConfigs => RequestKind::IncrementalAlterConfigs(
            IncrementalAlterConfigsRequest::default().with_resources(vec![
                incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str(topic))
                    .with_configs(vec![
                        incremental_alter_configs_request::AlterableConfig::default()
                            .with_name(StrBytes::from_static_str("segment.ms"))
                            .with_config_operation(0)
                            .with_value(Some(StrBytes::from_static_str("60000"))),
                    ]),
            ]),
        ),
        ApiKey::DescribeCluster => {
            RequestKind::DescribeCluster(DescribeClusterRequest::default().with_endpoint_type(1))
        }
        ApiKey::DescribeLogDirs => {
            RequestKind::DescribeLogDirs(DescribeLogDirsRequest::default().with_topics(None))
        }
        ApiKey::DescribeProducers => {
            RequestKind::DescribeProducers(DescribeProducersRequest::default().with_topics(vec![
                describe_producers_request::TopicRequest::default()
                    .with_name(name(topic))
                    .with_partition_indexes(vec![0]),
            ]))
        }
        ApiKey::ListTransactions => {
            RequestKind::ListTransactions(ListTransactionsRequest::default())
        }
        ApiKey::DescribeTransactions => {
            RequestKind::DescribeTransactions(DescribeTransactionsRequest::default())
        }
        ApiKey::DescribeTopicPartitions => RequestKind::DescribeTopicPartitions(
            DescribeTopicPartitionsRequest::default().with_response_partition_limit(10),
        ),
        _ => return None,
    })
}

/// Error codes carried by a response, wherever the API puts them.
fn error_codes(r: &ResponseKind) -> Vec<i16> {
    match r {
        ResponseKind::Produce(r) => r
            .responses
            .iter()
            .flat_map(|t| t.partition_responses.iter().map(|p| p.error_code))
            .collect(),
        ResponseKind::Fetch(r) => r
            .responses
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect(),
        ResponseKind::ListOffsets(r) => r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect(),
        ResponseKind::Metadata(r) => r.topics.iter().map(|t| t.error_code).collect(),
        ResponseKind::ApiVersions(r) => vec![r.error_code],
        ResponseKind::CreateTopics(r) => r.topics.iter().map(|t| t.error_code).collect(),
        ResponseKind::DeleteTopics(r) => r.responses.iter().map(|t| t.error_code).collect(),
        ResponseKind::CreatePartitions(r) => r.results.iter().map(|t| t.error_code).collect(),
        ResponseKind::DescribeConfigs(r) => r.results.iter().map(|t| t.error_code).collect(),
        ResponseKind::InitProducerId(r) => vec![r.error_code],
        ResponseKind::DescribeAcls(r) => vec![r.error_code],
        ResponseKind::CreateAcls(r) => r.results.iter().map(|r| r.error_code).collect(),
        ResponseKind::DeleteAcls(r) => r.filter_results.iter().map(|r| r.error_code).collect(),
        ResponseKind::AlterConfigs(r) => r.responses.iter().map(|r| r.error_code).collect(),
        ResponseKind::IncrementalAlterConfigs(r) => {
            r.responses.iter().map(|r| r.error_code).collect()
        }
        ResponseKind::DescribeCluster(r) => vec![r.error_code],
        ResponseKind::ListTransactions(r) => vec![r.error_code],
        ResponseKind::DescribeProducers(r) => r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect(),
        ResponseKind::DescribeLogDirs(r) => vec![r.error_code],
        ResponseKind::DescribeTopicPartitions(r) => r.topics.iter().map(|t| t.error_code).collect(),
        _ => vec![],
    }
}

#[tokio::test]
async fn every_advertised_version_is_served() {
    let server = TestServer::start().await;
    create_topic(&server, "versions", 1).await;
    create_topic(&server, "growing", 1).await;
    let mut client = server.client().await;
    let ResponseKind::ApiVersions(versions) = client
        .send(RequestKind::ApiVersions(ApiVersionsRequest::default()), 3)
        .await
    else {
        panic!()
    };
    assert_eq!(versions.error_code, 0);
    let mut exercised = 0;
    for v in &versions.api_keys {
        let api = ApiKey::try_from(v.api_key).unwrap();
        for version in v.min_version..=v.max_version {
            let Some(request) = sample_request(api, version) else {
                continue;
            };
            let response = client.send(request, version).await;
            assert!(
                error_codes(&response).iter().all(|&c| c == 0),
                "{api:?} v{version} answered with errors {:?}",
                error_codes(&response)
            );
            exercised += 1;
        }
    }
    assert!(
        exercised >= 60,
        "only {exercised} api/version pairs exercised"
    );
}

#[tokio::test]
async fn produced_batches_are_fetched_back_as_stored() {
    let server = TestServer::start().await;
    create_topic(&server, "t", 1).await;
    let mut client = server.client().await;
    let first = record_batch(&[("a", "1"), ("b", "2")], 1_000, None);
    let second = record_batch(&[("c", "3")], 5_000, None);
    assert_eq!(
        produce_result(client.send(produce("t", 0, first.clone(), -1), 9).await),
        (0, 0)
    );
    assert_eq!(
        produce_result(client.send(produce("t", 0, second.clone(), 1), 9).await),
        (0, 2)
    );

    let (err, hw, records) = fetch_result(client.send(fetch("t", 0, 0, 0), 12).await);
    assert_eq!((err, hw), (0, 3));
    // Stored bytes are the producer's bytes with only the base offset (first 8 bytes) rewritten.
    assert_eq!(records.len(), first.len() + second.len());
    assert_eq!(&records[8..first.len()], &first[8..]);
    assert_eq!(&records[first.len() + 8..], &second[8..]);
    let mut buf = records.clone();
    let decoded = RecordBatchDecoder::decode_all(&mut buf).unwrap();
    let offsets: Vec<i64> = decoded
        .iter()
        .flat_map(|s| s.records.iter().map(|r| r.offset))
        .collect();
    assert_eq!(offsets, vec![0, 1, 2]);

    assert_eq!(
        list_offsets_result(client.send(list_offsets("t", -2), 5).await),
        (0, 0)
    );
    assert_eq!(
        list_offsets_result(client.send(list_offsets("t", -1), 5).await),
        (0, 3)
    );
    // Timestamps: 1000, 1001 (first batch), 5000 (second batch).
    assert_eq!(
        list_offsets_result(client.send(list_offsets("t", 1_001), 5).await),
        (0, 1)
    );
    assert_eq!(
        list_offsets_result(client.send(list_offsets("t", 1_002), 5).await),
        (0, 2)
    );
    assert_eq!(
        list_offsets_result(client.send(list_offsets("t", 9_999), 5).await),
        (0, -1)
    );

    let (err, _, _) = fetch_result(client.send(fetch("t", 0, 4, 0), 12).await);
    assert_eq!(err, ResponseError::OffsetOutOfRange.code());
    let (err, _) = produce_result(client.send(produce("nope", 0, first, -1), 9).await);
    assert_eq!(err, ResponseError::UnknownTopicOrPartition.code());
}

#[tokio::test]
async fn acknowledged_records_are_in_object_storage_and_metadata() {
    let server = TestServer::start().await;
    create_topic(&server, "durable", 1).await;
    let mut client = server.client().await;
    let batch = record_batch(&[("k", "v"); 10], 1, None);
    assert_eq!(
        produce_result(client.send(produce("durable", 0, batch, -1), 9).await).0,
        0
    );
    let state = server.metadata.get_partition("durable", 0).await.unwrap();
    assert_eq!(state.high_watermark, 10);
    let segments = server
        .metadata
        .list_segments("durable", 0, 0)
        .await
        .unwrap();
    assert_eq!(segments.len(), 1);
    let path = object_store::path::Path::from(segments[0].object_key.as_str());
    let object = object_store::ObjectStoreExt::get(&*server.store, &path)
        .await
        .unwrap();
    assert_eq!(object.meta.size, segments[0].object_size);
}

#[tokio::test]
async fn idempotent_retries_are_not_duplicated() {
    let server = TestServer::start().await;
    create_topic(&server, "idem", 1).await;
    let mut client = server.client().await;
    let ResponseKind::InitProducerId(init) = client
        .send(
            RequestKind::InitProducerId(
                InitProducerIdRequest::default()
                    .with_transactional_id(None)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1),
            ),
            4,
        )
        .await
    else {
        panic!()
    };
    assert_eq!(init.error_code, 0);
    let pid = init.producer_id.0;
    assert!(pid >= 0);
    let batch = |seq| record_batch(&[("k", "v"), ("k", "w")], 1, Some((pid, 0, seq)));
    // A later batch arriving before the producer's first (refused by an agent that lost the
    // partition meanwhile) is refused: clients take its success as proof the first was stored.
    // The partition was opened moments ago, so the answer is "retry" (SEQUENCE_GAP_GRACE).
    let (err, _) = produce_result(client.send(produce("idem", 0, batch(2), -1), 9).await);
    assert_eq!(err, ResponseError::NotLeaderOrFollower.code());
    assert_eq!(
        produce_result(client.send(produce("idem", 0, batch(0), -1), 9).await),
        (0, 0)
    );
    // The same batch again (a retry after a lost response) gets its original offset.
    assert_eq!(
        produce_result(client.send(produce("idem", 0, batch(0), -1), 9).await),
        (0, 0)
    );
    assert_eq!(
        produce_result(client.send(produce("idem", 0, batch(2), -1), 9).await),
        (0, 2)
    );
    // A gap in sequence numbers is refused.
    let (err, _) = produce_result(client.send(produce("idem", 0, batch(7), -1), 9).await);
    assert_eq!(err, ResponseError::OutOfOrderSequenceNumber.code());
    assert_eq!(
        list_offsets_result(client.send(list_offsets("idem", -1), 5).await),
        (0, 4)
    );
}

#[tokio::test]
async fn long_poll_fetch_wakes_on_new_data() {
    let server = TestServer::start().await;
    create_topic(&server, "tail", 1).await;
    let mut consumer = server.client().await;
    let mut producer = server.client().await;
    let poll =
        tokio::spawn(
            async move { fetch_result(consumer.send(fetch("tail", 0, 0, 20_000), 12).await) },
        );
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(
        !poll.is_finished(),
        "fetch at the high watermark must wait for data"
    );
    let batch = record_batch(&[("k", "v")], 1, None);
    assert_eq!(
        produce_result(producer.send(produce("tail", 0, batch, -1), 9).await).0,
        0
    );
    // The poll waits up to 20 s; it returning with the record proves it was woken by the commit.
    let (err, hw, records) = poll.await.unwrap();
    assert_eq!((err, hw), (0, 1));
    assert!(!records.is_empty());
}

/// Every commit wakes the parked fetch with the new record, not only the first one (a reader
/// bounded by a stale high watermark would answer empty until its cache refreshed).
#[tokio::test]
async fn each_commit_wakes_a_tailing_fetch() {
    let server = TestServer::start().await;
    create_topic(&server, "tail", 1).await;
    let mut producer = server.client().await;
    let mut consumer = server.client().await;
    for offset in 0..5 {
        let poll =
            async { fetch_result(consumer.send(fetch("tail", 0, offset, 20_000), 12).await) };
        let produce = async {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let batch = record_batch(&[("k", "v")], 1, None);
            produce_result(producer.send(produce("tail", 0, batch, -1), 9).await)
        };
        let ((err, hw, records), (produce_err, base)) = tokio::join!(poll, produce);
        assert_eq!((produce_err, base), (0, offset));
        assert_eq!((err, hw), (0, offset + 1), "fetch at {offset}");
        assert!(
            !records.is_empty(),
            "fetch at {offset} woke without the record"
        );
    }
}

#[tokio::test]
async fn acks_zero_gets_no_response_and_keeps_order() {
    let server = TestServer::start().await;
    create_topic(&server, "fire", 1).await;
    let mut client = server.client().await;
    let batch = record_batch(&[("k", "v")], 1, None);
    // Encoded by hand: `send` would wait for a response that acks=0 never gets.
    let mut body = bytes::BytesMut::new();
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(9)
        .with_correlation_id(1000);
    kafka_protocol::protocol::Encodable::encode(&header, &mut body, 2).unwrap();
    produce("fire", 0, batch, 0).encode(&mut body, 9).unwrap();
    client.write_frame(&body).await;
    // The next request's response is the next frame on the wire.
    let hw = loop {
        let (err, hw) = list_offsets_result(client.send(list_offsets("fire", -1), 5).await);
        assert_eq!(err, 0);
        if hw == 1 {
            break hw;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(hw, 1);
}

/// Each malformed input closes that connection; the server keeps serving others.
#[tokio::test]
async fn malformed_input_closes_only_that_connection() {
    let server = TestServer::start().await;
    let header = |api: i16, version: i16| -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&api.to_be_bytes());
        h.extend_from_slice(&version.to_be_bytes());
        h.extend_from_slice(&7i32.to_be_bytes());
        h.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
        h
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"\x00\x00\x00\x10this is not kafka".to_vec()),
        ("negative length", (-5i32).to_be_bytes().to_vec()),
        ("absurd length", i32::MAX.to_be_bytes().to_vec()),
        (
            "truncated frame",
            [&100i32.to_be_bytes()[..], &header(18, 0)].concat(),
        ),
        ("unknown api key", framed(&header(9999, 0))),
        ("unsupported produce version", framed(&header(0, 99))),
        ("short header", framed(&[0, 18])),
        (
            "truncated body",
            framed(&[&header(0, 9)[..], &[1, 2, 3]].concat()),
        ),
    ];
    for (what, bytes) in cases {
        let mut bad = server.client().await;
        bad.write_raw(&bytes).await;
        if what == "truncated frame" {
            // The peer goes away mid-frame.
            drop(bad);
        } else {
            assert!(
                bad.read_frame().await.is_none(),
                "{what}: connection should be closed"
            );
        }
        let mut good = server.client().await;
        let ResponseKind::ApiVersions(r) = good
            .send(RequestKind::ApiVersions(ApiVersionsRequest::default()), 3)
            .await
        else {
            panic!()
        };
        assert_eq!(r.error_code, 0, "{what}: server stopped serving");
    }
}

#[tokio::test]
async fn unsupported_api_versions_version_gets_a_v0_error() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let mut body = Vec::new();
    body.extend_from_slice(&18i16.to_be_bytes());
    body.extend_from_slice(&99i16.to_be_bytes());
    body.extend_from_slice(&5i32.to_be_bytes());
    client.write_frame(&body).await;
    let mut frame = client.read_frame().await.expect("a response");
    let header =
        <ResponseHeader as kafka_protocol::protocol::Decodable>::decode(&mut frame, 0).unwrap();
    assert_eq!(header.correlation_id, 5);
    let r = <ApiVersionsResponse as kafka_protocol::protocol::Decodable>::decode(&mut frame, 0)
        .unwrap();
    assert_eq!(r.error_code, ResponseError::UnsupportedVersion.code());
    assert!(r
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::Produce as i16));
}

fn framed(body: &[u8]) -> Vec<u8> {
    [&(body.len() as i32).to_be_bytes()[..], body].concat()
}

/// Consolidation merges the small slices of each flush; consumers read the same bytes after, and
/// the flushes' shared objects are deleted once nothing references them.
#[tokio::test]
async fn consolidation_keeps_every_offset_readable() {
    let mut config = streamhouse_kafka::BrokerConfig::default();
    config.maintenance.consolidation.min_age = std::time::Duration::ZERO;
    config.maintenance.delete_grace = std::time::Duration::ZERO;
    let server = TestServer::start_with(config).await;
    create_topic(&server, "merge", 1).await;
    let mut client = server.client().await;
    for i in 0..6 {
        let batch = record_batch(&[("k", "v"), ("k2", "v2")], 1_000 * i, None);
        // acks=-1: each produce waits for its own flush, so each makes its own segment.
        assert_eq!(
            produce_result(client.send(produce("merge", 0, batch, -1), 9).await).0,
            0
        );
    }
    let before = fetch_result(client.send(fetch("merge", 0, 0, 0), 12).await).2;
    assert_eq!(
        server
            .metadata
            .list_segments("merge", 0, 0)
            .await
            .unwrap()
            .len(),
        6
    );

    let report = server.broker.maintenance().consolidate(true).await;
    assert_eq!((report.partitions, report.slices_replaced), (1, 6));
    assert_eq!(report.objects_read, 6, "each shared object read once");
    assert_eq!(server.broker.maintenance().delete_due_objects().await, 6);

    assert_eq!(
        server
            .metadata
            .list_segments("merge", 0, 0)
            .await
            .unwrap()
            .len(),
        1
    );
    let batches = streamhouse_segment::RecordBatch::parse_all(before.clone()).unwrap();
    for offset in 0..12 {
        let (err, hw, records) = fetch_result(client.send(fetch("merge", 0, offset, 0), 12).await);
        assert_eq!((err, hw), (0, 12));
        // Whole batches are returned: the one holding `offset` and every later one.
        let first = batches
            .iter()
            .position(|b| b.last_offset() >= offset)
            .unwrap();
        let start: usize = batches[..first].iter().map(|b| b.len()).sum();
        assert_eq!(records, before.slice(start..), "fetch at {offset}");
    }
}

/// A backlog larger than a round is consolidated in one go (a round per `max_round_bytes`), not
/// one round per interval: an agent ingesting faster than a round per interval catches up.
#[tokio::test]
async fn a_backlog_over_one_round_is_consolidated_at_once() {
    let value = "v".repeat(1_000);
    let batch = |i: i64| record_batch(&[("k", value.as_str())], 1_000 * i, None);
    let mut config = streamhouse_kafka::BrokerConfig::default();
    let consolidation = &mut config.maintenance.consolidation;
    consolidation.min_age = std::time::Duration::ZERO;
    consolidation.max_age = std::time::Duration::ZERO;
    // Rounds of two slices each (a slice is a batch and a little framing).
    let size = batch(0).len() as u64;
    consolidation.max_round_bytes = 2 * size + size / 2;
    let server = TestServer::start_with(config).await;
    create_topic(&server, "behind", 1).await;
    let mut client = server.client().await;
    for i in 0..6 {
        // acks=-1: each produce waits for its own flush, so each makes its own slice.
        let response = client.send(produce("behind", 0, batch(i), -1), 9).await;
        assert_eq!(produce_result(response).0, 0);
    }
    let in_shared = |segments: &[streamhouse_metadata::SegmentInfo]| {
        let shared = segments.iter().filter(|s| s.object_key.starts_with("wal/"));
        shared.count()
    };
    let slices = server.metadata.list_segments("behind", 0, 0).await.unwrap();
    assert_eq!(in_shared(&slices), 6, "{slices:?}");

    assert_eq!(server.broker.maintenance().consolidate_backlog().await, 3);
    let segments = server.metadata.list_segments("behind", 0, 0).await.unwrap();
    assert_eq!(in_shared(&segments), 0, "{segments:?}");
}

/// A Fetch over several partitions stays within the request's limit: partitions are read
/// concurrently, then taken in request order, each cut to the whole batches that still fit
/// (its first batch whole while any room is left), and those after the limit come back empty.
#[tokio::test]
async fn a_fetch_over_partitions_stays_within_the_request_limit_in_request_order() {
    let server = TestServer::start().await;
    create_topic(&server, "limit", 4).await;
    let mut client = server.client().await;
    let value = "v".repeat(1_000);
    let batch = record_batch(&[("k", value.as_str())], 1, None);
    let one = batch.len();
    for partition in 0..4 {
        for _ in 0..3 {
            let sent = client
                .send(produce("limit", partition, batch.clone(), -1), 9)
                .await;
            assert_eq!(produce_result(sent).0, 0);
        }
    }
    let partitions = (0..4)
        .map(|p| {
            FetchPartition::default()
                .with_partition(p)
                .with_fetch_offset(0)
                .with_partition_max_bytes(2 * one as i32)
        })
        .collect();
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_bytes((5 * one / 2) as i32)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name("limit"))
            .with_partitions(partitions)]);
    let ResponseKind::Fetch(response) = client.send(RequestKind::Fetch(request), 12).await else {
        panic!("not a fetch response")
    };
    let sizes: Vec<(i32, usize)> = response.responses[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.records.as_ref().map_or(0, |r| r.len())))
        .collect();
    // Partition 0: two batches (its own limit); partition 1: half a batch left, so its first
    // batch whole; partitions 2 and 3: nothing left.
    assert_eq!(sizes, vec![(0, 2 * one), (1, one), (2, 0), (3, 0)]);
}
