//! Writes the seed corpora under `fuzz/corpus/<target>/`: real request frames encoded with
//! `kafka-protocol`, real produce payloads and real segment objects from `SegmentBuilder`.
//! Run from the repository root (a small debug build of its own):
//! `cargo run --manifest-path fuzz/seeds/Cargo.toml --target-dir fuzz/target`.

use std::path::Path;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, FetchRequest, FindCoordinatorRequest, MetadataRequest,
    ProduceRequest, RequestHeader, RequestKind, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use streamhouse_segment::{RecordBatch, SegmentBuilder};

fn main() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus");
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir).expect("create corpus dir");
        std::fs::write(dir.join(name), bytes).expect("write seed");
    };
    for (name, frame) in request_frames() {
        write("kafka_request", &name, &frame);
    }
    for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let name = format!("{compression:?}").to_lowercase();
        write("record_batches", &name, &payload(3, compression, 0));
    }
    write(
        "record_batches",
        "two_batches",
        &[
            payload(2, Compression::None, 0),
            payload(1, Compression::Snappy, 5),
        ]
        .concat(),
    );
    for (name, object) in segments() {
        write("segment_reader", &name, &object);
    }
}

/// One produce payload: a single batch of `records` records.
fn payload(records: usize, compression: Compression, timestamp: i64) -> Bytes {
    let records: Vec<Record> = (0..records)
        .map(|i| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp: timestamp + i as i64,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(format!("value {i}"))),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).expect("encode batch");
    buf.freeze()
}

fn frame(request: RequestKind, api: ApiKey, version: i16) -> (String, Vec<u8>) {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("seed")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, api.request_header_version(version))
        .expect("encode header");
    request.encode(&mut buf, version).expect("encode body");
    (format!("{api:?}_v{version}").to_lowercase(), buf.to_vec())
}

fn request_frames() -> Vec<(String, Vec<u8>)> {
    let topic = || TopicName(StrBytes::from_static_str("events"));
    let produce = || {
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic())
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(payload(2, Compression::None, 1_000)))])])
    };
    let metadata = || {
        MetadataRequest::default().with_topics(Some(vec![
            kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                .with_name(Some(topic())),
        ]))
    };
    let fetch = FetchRequest::default()
        .with_max_wait_ms(500)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic())
            .with_partitions(vec![
                FetchPartition::default().with_fetch_offset(3)
            ])]);
    let api_versions = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("seed"))
        .with_client_software_version(StrBytes::from_static_str("1"));
    vec![
        frame(
            RequestKind::ApiVersions(ApiVersionsRequest::default()),
            ApiKey::ApiVersions,
            0,
        ),
        frame(
            RequestKind::ApiVersions(api_versions),
            ApiKey::ApiVersions,
            3,
        ),
        frame(RequestKind::Metadata(metadata()), ApiKey::Metadata, 1),
        frame(RequestKind::Metadata(metadata()), ApiKey::Metadata, 12),
        frame(RequestKind::Produce(produce()), ApiKey::Produce, 3),
        frame(RequestKind::Produce(produce()), ApiKey::Produce, 9),
        frame(RequestKind::Fetch(fetch), ApiKey::Fetch, 12),
        frame(
            RequestKind::FindCoordinator(
                FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("group")),
            ),
            ApiKey::FindCoordinator,
            3,
        ),
    ]
}

/// Real segment objects: empty, one batch, and several index blocks with mixed codecs.
fn segments() -> Vec<(String, Bytes)> {
    let build = |base: i64, interval: usize, payloads: &[Bytes]| {
        let mut builder = SegmentBuilder::with_index_interval(base, interval);
        for p in payloads {
            for batch in RecordBatch::parse_all(p.clone()).expect("valid payload") {
                let batch = batch.with_base_offset(builder.next_offset());
                builder.push(&batch).expect("push batch");
            }
        }
        builder.finish().bytes
    };
    let mixed = [
        payload(3, Compression::None, 100),
        payload(1, Compression::Gzip, 200),
        payload(4, Compression::Lz4, 300),
        payload(2, Compression::None, 400),
    ];
    vec![
        ("empty".to_string(), build(0, 4096, &[])),
        ("one_batch".to_string(), build(42, 4096, &mixed[..1])),
        ("blocks".to_string(), build(1_000, 1, &mixed)),
        ("two_blocks".to_string(), build(0, 150, &mixed)),
    ]
}
