//! Hostile and overloaded clients from raw sockets (issue 12): connection limits, idle and
//! slow-frame timeouts, the pre-login frame size, the agent-wide request memory budget, and
//! record validation. Each test also checks that a normal client is still served.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiVersionsRequest, RequestKind, ResponseKind};
use streamhouse_kafka::{BrokerConfig, Limits};
use streamhouse_metadata::SqliteMetadataStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::harness::{encode_batch, record_batch, TestServer};
use crate::protocol::{create_topic, list_offsets, produce, produce_result};

fn config(limits: Limits) -> BrokerConfig {
    BrokerConfig {
        limits,
        ..BrokerConfig::default()
    }
}

/// A normal client: ApiVersions answered on a fresh connection within `within`.
async fn served(server: &TestServer, within: Duration) {
    let started = Instant::now();
    let mut client = server.client().await;
    let response = client
        .send(RequestKind::ApiVersions(ApiVersionsRequest::default()), 3)
        .await;
    assert!(matches!(response, ResponseKind::ApiVersions(r) if r.error_code == 0));
    assert!(started.elapsed() < within, "took {:?}", started.elapsed());
}

/// Whether the server closed `stream` within `within` (EOF or reset), without us sending more.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(within, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(n)) => panic!("unexpected {n} bytes from the server"),
        Err(_) => false,
    }
}

async fn connect_from(local: &str, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    socket.connect(server).await.unwrap()
}

#[tokio::test]
async fn connections_beyond_the_limits_are_refused_and_slots_come_back() {
    let server = TestServer::start_with(config(Limits {
        max_connections: 4,
        max_connections_per_ip: 3,
        ..Limits::default()
    }))
    .await;
    let mut from_one = Vec::new();
    for _ in 0..3 {
        from_one.push(connect_from("127.0.0.1", server.addr).await);
    }
    // A fourth from the same address exceeds max.connections.per.ip...
    let mut refused = connect_from("127.0.0.1", server.addr).await;
    assert!(closed_within(&mut refused, Duration::from_secs(5)).await);
    // ...another address may still connect, up to max.connections in total.
    let other = connect_from("127.0.0.2", server.addr).await;
    let mut over_total = connect_from("127.0.0.3", server.addr).await;
    assert!(closed_within(&mut over_total, Duration::from_secs(5)).await);
    for stream in &mut from_one {
        assert!(!closed_within(stream, Duration::from_millis(50)).await);
    }
    // Closing connections gives their slots back; the listener is still up.
    drop(from_one);
    drop(other);
    tokio::time::sleep(Duration::from_millis(200)).await;
    served(&server, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn idle_connections_are_closed_but_busy_ones_are_not() {
    let server = TestServer::start_with(config(Limits {
        connections_max_idle: Duration::from_millis(300),
        ..Limits::default()
    }))
    .await;
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut idle, Duration::from_secs(5)).await);
    assert!(started.elapsed() >= Duration::from_millis(250));
    // A client that keeps sending requests is not idle, however long it stays.
    let mut client = server.client().await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        client
            .send(RequestKind::ApiVersions(ApiVersionsRequest::default()), 3)
            .await;
    }
}

#[tokio::test]
async fn a_frame_that_does_not_finish_in_time_closes_its_connection() {
    let server = TestServer::start_with(config(Limits {
        frame_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    }))
    .await;
    // Half a length prefix, then nothing (slowloris).
    let mut half_prefix = TcpStream::connect(server.addr).await.unwrap();
    half_prefix.write_all(&[0, 0]).await.unwrap();
    // A whole prefix and part of the body, then a byte now and then, never finishing.
    let mut dribble = TcpStream::connect(server.addr).await.unwrap();
    dribble.write_all(&1000i32.to_be_bytes()).await.unwrap();
    let started = Instant::now();
    let dribbling = async {
        for _ in 0..40 {
            if dribble.write_all(&[0]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    dribbling.await;
    assert!(closed_within(&mut half_prefix, Duration::from_secs(5)).await);
    assert!(closed_within(&mut dribble, Duration::from_secs(5)).await);
    assert!(started.elapsed() < Duration::from_secs(5));
    served(&server, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_large_frame_before_login_is_refused_from_its_length_prefix() {
    let metadata = std::sync::Arc::new(SqliteMetadataStore::in_memory().await.unwrap());
    let server = TestServer::start_with_sasl(BrokerConfig::default(), metadata, &["alice"]).await;
    // 100 MiB announced, nothing of it sent: the prefix alone closes the connection.
    let mut attacker = TcpStream::connect(server.addr).await.unwrap();
    attacker
        .write_all(&(100i32 << 20).to_be_bytes())
        .await
        .unwrap();
    assert!(closed_within(&mut attacker, Duration::from_secs(5)).await);
    // Just over 512 KiB is refused too; a logged-in client may send large frames.
    let mut over = TcpStream::connect(server.addr).await.unwrap();
    over.write_all(&(512i32 * 1024 + 1).to_be_bytes())
        .await
        .unwrap();
    assert!(closed_within(&mut over, Duration::from_secs(5)).await);
    let mut client = server.client().await;
    client.login("alice").await;
    create_topic(&server, "big", 1).await;
    let value = "x".repeat(600 * 1024);
    let batch = record_batch(&[("k", value.as_str())], 1_000, None);
    let (code, _) = produce_result(client.send(produce("big", 0, batch, -1), 9).await);
    assert_eq!(code, 0, "a 600 KiB produce after login");
}

/// A frame whose prefix announces `len` bytes and whose body is `sent` bytes of zeros.
async fn partial_frame(addr: SocketAddr, len: usize, sent: usize) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut out = BytesMut::new();
    out.put_i32(len as i32);
    out.put_bytes(0, sent);
    stream.write_all(&out).await.unwrap();
    stream
}

#[tokio::test]
async fn the_agent_wide_budget_stops_reading_until_memory_is_released() {
    let server = TestServer::start_with(config(Limits {
        queued_max_request_bytes: 1 << 20,
        ..Limits::default()
    }))
    .await;
    create_topic(&server, "budget", 1).await;
    // Two connections announce 512 KiB frames and send half: together they hold the whole
    // 1 MiB budget while their bodies are read.
    let holders = [
        partial_frame(server.addr, 512 * 1024, 256 * 1024).await,
        partial_frame(server.addr, 512 * 1024, 256 * 1024).await,
    ];
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Small frames (heartbeats, metadata) still pass, through the budget's reserve...
    served(&server, Duration::from_secs(2)).await;
    // ...but a larger produce waits: the agent reads no more of its bytes.
    let mut client = server.client().await;
    let value = "v".repeat(8 * 1024);
    let batch = record_batch(&[("k", value.as_str())], 1_000, None);
    let request = produce("budget", 0, batch, -1);
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        let result = produce_result(client.send(request, 9).await);
        (result, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "served despite a spent budget");
    // The holders go away; their memory comes back and the produce is served.
    let released = Instant::now();
    drop(holders);
    let ((code, _), waited) = waiting.await.unwrap();
    assert_eq!(code, 0);
    assert!(waited >= Duration::from_millis(500));
    assert!(released.elapsed() < Duration::from_secs(5));
}

/// Sends `frames` pipelined on one connection and never reads the responses.
async fn flood(addr: SocketAddr, frame: Bytes, frames: usize) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let writing = async {
        for _ in 0..frames {
            if stream.write_all(&frame).await.is_err() {
                break;
            }
        }
    };
    // The agent stops reading once the budget is spent; do not wait for it forever.
    let _ = tokio::time::timeout(Duration::from_secs(2), writing).await;
    stream
}

#[tokio::test]
async fn pipelined_produce_floods_with_unread_responses_leave_others_served() {
    let server = TestServer::start_with(config(Limits {
        queued_max_request_bytes: 8 << 20,
        ..Limits::default()
    }))
    .await;
    create_topic(&server, "flood", 1).await;
    let value = "f".repeat(64 * 1024);
    let batch = record_batch(&[("k", value.as_str())], 1_000, None);
    let frame = encode_frame(produce("flood", 0, batch, 1), 9);
    let floods =
        futures::future::join_all((0..20).map(|_| flood(server.addr, frame.clone(), 64))).await;
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let started = Instant::now();
        served(&server, Duration::from_secs(5)).await;
        worst = worst.max(started.elapsed());
    }
    drop(floods);
    assert!(
        worst < Duration::from_secs(2),
        "normal client waited {worst:?}"
    );
}

/// A request as a length-prefixed frame, for raw pipelining.
pub(crate) fn encode_frame(request: RequestKind, version: i16) -> Bytes {
    use kafka_protocol::messages::{ApiKey, RequestHeader};
    use kafka_protocol::protocol::{Encodable, StrBytes};
    let api = match &request {
        RequestKind::Produce(_) => ApiKey::Produce,
        RequestKind::ListOffsets(_) => ApiKey::ListOffsets,
        other => panic!("encode_frame does not know {other:?}"),
    };
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("flood")));
    let mut body = BytesMut::new();
    body.put_i32(0);
    header
        .encode(&mut body, api.request_header_version(version))
        .unwrap();
    request.encode(&mut body, version).unwrap();
    let len = (body.len() - 4) as i32;
    body[..4].copy_from_slice(&len.to_be_bytes());
    body.freeze()
}

/// `batch` with `edit` applied and Kafka's CRC recomputed, so only the edit is wrong.
fn rewritten(batch: &Bytes, edit: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let mut bytes = batch.to_vec();
    edit(&mut bytes);
    let crc = streamhouse_segment::crc32c(&bytes[21..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    bytes.into()
}

/// One batch of `records` (timestamps from 1000) compressed with `compression`.
fn compressed(
    records: &[(&str, &[u8])],
    compression: kafka_protocol::records::Compression,
) -> Bytes {
    encode_batch(records, 1_000, None, compression)
}

#[tokio::test]
async fn batches_that_lie_or_explode_are_refused_and_nothing_is_stored() {
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::records::Compression;
    let server = TestServer::start().await;
    create_topic(&server, "bad", 1).await;
    let good = record_batch(&[("k", "v")], 1_000, None);
    let count_lies = rewritten(&good, |b| {
        b[23..27].copy_from_slice(&999i32.to_be_bytes()); // last offset delta
        b[57..61].copy_from_slice(&1000i32.to_be_bytes()); // record count
    });
    let length_lies = rewritten(&good, |b| b[61] += 4); // record length + 2
    let garbage_zstd = rewritten(&good, |b| b[22] |= 4); // says zstd, is not
                                                         // 64 MiB of zeros in one record: ~2 KB of zstd, past the 8 MiB request limit once expanded.
    let bomb = compressed(&[("k", &vec![0u8; 64 << 20])], Compression::Zstd);
    assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
    let cases = [
        ("count", count_lies, ResponseError::CorruptMessage),
        ("length", length_lies, ResponseError::CorruptMessage),
        ("garbage zstd", garbage_zstd, ResponseError::CorruptMessage),
        ("bomb", bomb, ResponseError::MessageTooLarge),
    ];
    let mut client = server.client().await;
    for (what, batch, expected) in cases {
        let (code, _) = produce_result(client.send(produce("bad", 0, batch, -1), 9).await);
        assert_eq!(code, expected.code(), "{what}");
    }
    // Nothing of them was stored: the next good batch is offset 0, and consumers see only it.
    let (code, offset) = produce_result(client.send(produce("bad", 0, good, -1), 9).await);
    assert_eq!((code, offset), (0, 0));
    let consumed = server
        .broker
        .consume_records("bad", 0, 0, 100, 1 << 20)
        .await
        .unwrap();
    assert_eq!(consumed.high_watermark, 1);
    assert_eq!(consumed.records.len(), 1);
}

#[tokio::test]
async fn compressed_batches_are_served_by_list_offsets_and_bounded_http_consume() {
    use kafka_protocol::records::Compression;
    let server = TestServer::start().await;
    create_topic(&server, "zipped", 1).await;
    let value = vec![b'z'; 4096];
    let records: Vec<(&str, &[u8])> = (0..100).map(|_| ("k", value.as_slice())).collect();
    let mut client = server.client().await;
    for compression in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let batch = compressed(&records, compression);
        let (code, _) = produce_result(client.send(produce("zipped", 0, batch, -1), 9).await);
        assert_eq!(code, 0, "{compression:?}");
    }
    // The exact record, from inside the first compressed batch (timestamps 1000..1099).
    let ResponseKind::ListOffsets(r) = client.send(list_offsets("zipped", 1_050), 6).await else {
        panic!("not a ListOffsets response")
    };
    let p = &r.topics[0].partitions[0];
    assert_eq!((p.error_code, p.offset, p.timestamp), (0, 50, 1_050));
    // max_bytes bounds the decoded bytes returned (keys and values), at least one record.
    let consumed = server
        .broker
        .consume_records("zipped", 0, 0, 10_000, 10 * 4097)
        .await
        .unwrap();
    assert_eq!(consumed.records.len(), 10);
    assert_eq!(consumed.next_offset, 10);
    let one = server
        .broker
        .consume_records("zipped", 0, 10, 10_000, 1)
        .await
        .unwrap();
    assert_eq!((one.records.len(), one.next_offset), (1, 11));
    let all = server
        .broker
        .consume_records("zipped", 0, 0, 10_000, 64 << 20)
        .await
        .unwrap();
    assert_eq!(all.records.len(), 400);
}

async fn create_topics(client: &mut crate::harness::Client, topic: &str, partitions: i32) -> i16 {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::{CreateTopicsRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(5_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_num_partitions(partitions)
            .with_replication_factor(1)]);
    let ResponseKind::CreateTopics(r) = client.send(RequestKind::CreateTopics(request), 5).await
    else {
        panic!("not a CreateTopics response")
    };
    r.topics[0].error_code
}

async fn grow(client: &mut crate::harness::Client, topic: &str, count: i32, validate: bool) -> i16 {
    use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
    use kafka_protocol::messages::{CreatePartitionsRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let request = CreatePartitionsRequest::default()
        .with_timeout_ms(5_000)
        .with_validate_only(validate)
        .with_topics(vec![CreatePartitionsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_count(count)]);
    let ResponseKind::CreatePartitions(r) =
        client.send(RequestKind::CreatePartitions(request), 2).await
    else {
        panic!("not a CreatePartitions response")
    };
    r.results[0].error_code
}

#[tokio::test]
async fn partition_caps_refuse_topics_and_growth_with_policy_violation() {
    use kafka_protocol::error::ResponseError;
    let server = TestServer::start_with(config(Limits {
        max_partitions_per_cluster: 10,
        max_partitions_per_agent: 8,
        ..Limits::default()
    }))
    .await;
    let refused = ResponseError::PolicyViolation.code();
    let mut client = server.client().await;
    assert_eq!(create_topics(&mut client, "a", 6).await, 0);
    // One live agent: 8 partitions at most (the per-agent cap is below the cluster's 10).
    assert_eq!(create_topics(&mut client, "b", 3).await, refused);
    assert_eq!(create_topics(&mut client, "b", 2).await, 0);
    assert_eq!(grow(&mut client, "b", 3, true).await, refused);
    assert_eq!(grow(&mut client, "b", 3, false).await, refused);
    // The HTTP API's path says the same.
    let err = server
        .broker
        .admin()
        .create_topic("c", Some(1), &Default::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cap of 8"), "{err}");
    // Deleting a topic frees its share.
    server.broker.admin().delete_topic("a").await.unwrap();
    assert_eq!(grow(&mut client, "b", 5, false).await, 0);
}

#[tokio::test]
async fn a_topic_max_message_bytes_bounds_batches_and_their_expansion() {
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::records::Compression;
    use streamhouse_metadata::{NewTopic, TopicConfig};
    let server = TestServer::start().await;
    let mut config = TopicConfig::default();
    config
        .extra
        .insert("max.message.bytes".into(), "10000".into());
    server
        .metadata
        .create_topic(NewTopic {
            name: "small".into(),
            partitions: 1,
            config,
        })
        .await
        .unwrap();
    let mut client = server.client().await;
    let too_large = ResponseError::MessageTooLarge.code();
    // 20 KB as sent: refused on its size.
    let big = "b".repeat(20_000);
    let batch = record_batch(&[("k", big.as_str())], 1_000, None);
    let (code, _) = produce_result(client.send(produce("small", 0, batch, -1), 9).await);
    assert_eq!(code, too_large);
    // ~100 bytes as sent, 20 KB once decompressed: refused on its expansion.
    let zipped = encode_batch(&[("k", big.as_bytes())], 1_000, None, Compression::Gzip);
    assert!(zipped.len() < 1_000);
    let (code, _) = produce_result(client.send(produce("small", 0, zipped, -1), 9).await);
    assert_eq!(code, too_large);
    let fits = encode_batch(&[("k", &[b'f'; 5_000])], 1_000, None, Compression::Gzip);
    let (code, offset) = produce_result(client.send(produce("small", 0, fits, -1), 9).await);
    assert_eq!((code, offset), (0, 0));
}

#[tokio::test]
async fn auto_created_topics_count_against_the_partition_cap() {
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{MetadataRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let server = TestServer::start_with(BrokerConfig {
        auto_create_topics: true,
        default_partitions: 2,
        limits: Limits {
            max_partitions_per_cluster: 4,
            ..Limits::default()
        },
        ..BrokerConfig::default()
    })
    .await;
    let mut client = server.client().await;
    let mut codes = Vec::new();
    for name in ["auto-1", "auto-2", "auto-3"] {
        let request = MetadataRequest::default()
            .with_allow_auto_topic_creation(true)
            .with_topics(Some(vec![MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_static_str(name))))]));
        let ResponseKind::Metadata(r) = client.send(RequestKind::Metadata(request), 9).await else {
            panic!("not a Metadata response")
        };
        codes.push(r.topics[0].error_code);
    }
    assert_eq!(codes, [0, 0, ResponseError::PolicyViolation.code()]);
    assert!(server.metadata.get_topic("auto-3").await.unwrap().is_none());
    // The HTTP produce path auto-creates through the same check.
    let record = streamhouse_kafka::ProduceRecord {
        value: Some(Bytes::from_static(b"v")),
        ..Default::default()
    };
    let err = server
        .broker
        .produce_records("auto-4", vec![record], Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cap of 4"), "{err}");
}

/// A Produce whose client hung up while it waited for its partition (being opened, or taken
/// over after a failover) appends nothing: the client may have judged those records not
/// persisted and will send them again, possibly under a new producer epoch that no sequence
/// check can tell from new records (librdkafka does, when it drops a broker it no longer sees
/// in the metadata). A Produce whose client stays is appended as usual, and so is one with
/// acks=0, which no client resends for want of an answer.
#[tokio::test]
async fn a_produce_whose_client_hung_up_before_its_append_appends_nothing() {
    // Holds up the opening of a partition's log (its producer snapshots are read then).
    let slow_open = |_| Duration::from_millis(500);
    let (server, metadata) = TestServer::start_delaying("list_producer_snapshots", slow_open).await;
    create_topic(&server, "t", 2).await;
    let batch = record_batch(&[("k", "v")], 1_000, None);
    for (partition, acks) in [(0, -1), (1, 0)] {
        let gone = server.client().await;
        gone.send_and_hang_up(produce("t", partition, batch.clone(), acks), 9)
            .await;
    }
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let end = |partition| {
        let metadata = metadata.clone();
        async move {
            let state = metadata.get_partition("t", partition).await.unwrap();
            state.high_watermark
        }
    };
    assert_eq!(end(0).await, 0, "acks=-1, hung up: nothing appended");
    assert_eq!(end(1).await, 1, "acks=0, hung up: appended");
    let mut client = server.client().await;
    let (code, _) = produce_result(client.send(produce("t", 0, batch, -1), 9).await);
    assert_eq!(code, 0);
    assert_eq!(end(0).await, 1);
}

/// The same for a Produce whose client hung up while it waited for room in the agent's buffer
/// (full because a flush's commit is held up): once room is made, it appends nothing.
#[tokio::test]
async fn a_produce_whose_client_hung_up_while_waiting_for_buffer_room_appends_nothing() {
    let held_first = |n| Duration::from_millis(if n == 0 { 1_500 } else { 0 });
    let config = BrokerConfig {
        max_buffered_bytes: 4 * 1024,
        ..BrokerConfig::default()
    };
    let (server, metadata) =
        TestServer::start_delaying_with(config, "commit_segments", held_first).await;
    create_topic(&server, "t", 2).await;
    let value = "v".repeat(3_000);
    let big = record_batch(&[("k", value.as_str())], 1_000, None);
    // Fills the buffer until its flush is committed, 1.5 s on.
    let mut filler = server.client().await;
    let first = big.clone();
    let filling =
        tokio::spawn(
            async move { produce_result(filler.send(produce("t", 0, first, -1), 9).await) },
        );
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Waits for room, and its client leaves meanwhile.
    let leaving = server.client().await;
    leaving
        .send_then_hang_up(
            produce("t", 1, big.clone(), -1),
            9,
            Duration::from_millis(300),
        )
        .await;
    assert_eq!(filling.await.unwrap().0, 0, "the filler is acknowledged");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let end = |partition| {
        let metadata = metadata.clone();
        async move {
            metadata
                .get_partition("t", partition)
                .await
                .unwrap()
                .high_watermark
        }
    };
    assert_eq!(
        end(1).await,
        0,
        "hung up while waiting for room: nothing appended"
    );
    let mut client = server.client().await;
    let (code, _) = produce_result(client.send(produce("t", 1, big, -1), 9).await);
    assert_eq!(code, 0);
    assert_eq!(end(1).await, 1);
}
