//! A topic of [`MAX_PARTITIONS`] partitions over the wire, in the normal test run (about 5 s in
//! a debug build): created, every partition described with its leader, produced to across its
//! range, listed and read back, deleted. Correctness only; the measurement is the ignored
//! `cluster::one_agent_keeps_max_partitions_leased`.
//!
//! ListOffsets asks for all 10,000 latest offsets, as a consumer starting on the topic does:
//! the agent holds every partition's lease but builds a partition's writer and index only when
//! a request needs its records, so the watermarks come from one metadata query and only the
//! produced partitions are built (building 10,000 in one request took over the raw client's
//! 10 s in a debug build).

use std::collections::BTreeMap;

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
use streamhouse_kafka::MAX_PARTITIONS;

use crate::harness::{record_batch, Client, TestServer};

const TOPIC: &str = "wide";
/// Every 97th partition (prime, so the spread is not aligned with any batching), and the last.
const STRIDE: usize = 97;

fn name() -> TopicName {
    TopicName(StrBytes::from_static_str(TOPIC))
}

fn produced_partitions() -> Vec<i32> {
    let last = MAX_PARTITIONS as i32 - 1;
    let mut partitions: Vec<i32> = (0..=last).step_by(STRIDE).collect();
    if partitions.last() != Some(&last) {
        partitions.push(last);
    }
    partitions
}

/// The value written to `partition`: each partition's record is its own.
fn value(partition: i32) -> String {
    format!("value-of-{partition}")
}

// Two workers: the controller taking leases in the background does not hold up requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_of_max_partitions_is_created_produced_listed_read_and_deleted() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client).await;
    assert_eq!(described(&mut client).await, MAX_PARTITIONS as usize);

    let produced = produced_partitions();
    produce(&mut client, &produced).await;

    // Every partition, once the controller holds them all (the ones not held yet would be
    // taken, and built, by the request itself).
    let admin = server.broker.admin();
    let all_held = async {
        while admin.segment_index_stats().open_partitions < u64::from(MAX_PARTITIONS) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), all_held)
        .await
        .expect("every partition held");
    let listed: Vec<i32> = (0..MAX_PARTITIONS as i32).collect();
    let latest = list_latest(&mut client, &listed).await;
    assert_eq!(
        latest.len(),
        listed.len(),
        "every partition asked for listed"
    );
    for (partition, offset) in &latest {
        let want = i64::from(produced.binary_search(partition).is_ok());
        assert_eq!(*offset, want, "latest offset of partition {partition}");
    }
    assert_eq!(
        admin.segment_index_stats().loaded_partitions,
        produced.len() as u64,
        "ListOffsets built no partition's log"
    );

    let read = fetch(&mut client, &produced).await;
    for partition in &produced {
        assert_eq!(
            read.get(partition),
            Some(&value(*partition)),
            "partition {partition}"
        );
    }

    delete(&mut client).await;
    assert_eq!(described(&mut client).await, 0, "deleted");
}

async fn create(client: &mut Client) {
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(name())
            .with_num_partitions(MAX_PARTITIONS as i32)
            .with_replication_factor(1)]);
    let ResponseKind::CreateTopics(r) = client.send(RequestKind::CreateTopics(request), 7).await
    else {
        panic!("not a CreateTopics response")
    };
    assert_eq!(r.topics[0].error_code, 0, "{:?}", r.topics[0].error_message);
}

/// The partitions Metadata reports for the topic (0 once it is gone), each checked to be led
/// by this agent and numbered densely from 0.
async fn described(client: &mut Client) -> usize {
    let request = MetadataRequest::default()
        .with_allow_auto_topic_creation(false)
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name()))
        ]));
    let ResponseKind::Metadata(r) = client.send(RequestKind::Metadata(request), 12).await else {
        panic!("not a Metadata response")
    };
    let topic = &r.topics[0];
    if topic.error_code != 0 {
        return 0;
    }
    let mut indexes: Vec<i32> = topic.partitions.iter().map(|p| p.partition_index).collect();
    indexes.sort_unstable();
    assert!(
        indexes.iter().copied().eq(0..indexes.len() as i32),
        "dense partition numbers"
    );
    let brokers: Vec<BrokerId> = r.brokers.iter().map(|b| b.node_id).collect();
    for p in &topic.partitions {
        assert_eq!(p.error_code, 0, "partition {}", p.partition_index);
        assert!(
            brokers.contains(&p.leader_id),
            "partition {}: {:?}",
            p.partition_index,
            p.leader_id
        );
    }
    indexes.len()
}

/// One Produce request carrying a one-record batch for each of `partitions`.
async fn produce(client: &mut Client, partitions: &[i32]) {
    let data = partitions
        .iter()
        .map(|&p| {
            PartitionProduceData::default()
                .with_index(p)
                .with_records(Some(record_batch(&[("k", &value(p))], 1_000, None)))
        })
        .collect();
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name())
            .with_partition_data(data)]);
    let ResponseKind::Produce(r) = client.send(RequestKind::Produce(request), 9).await else {
        panic!("not a Produce response")
    };
    let answers = &r.responses[0].partition_responses;
    assert_eq!(answers.len(), partitions.len());
    for a in answers {
        assert_eq!(
            (a.error_code, a.base_offset),
            (0, 0),
            "partition {}",
            a.index
        );
    }
}

/// The latest offset of each of `partitions`, from one ListOffsets request.
async fn list_latest(client: &mut Client, partitions: &[i32]) -> BTreeMap<i32, i64> {
    let partitions = partitions
        .iter()
        .map(|&p| {
            ListOffsetsPartition::default()
                .with_partition_index(p)
                .with_timestamp(-1)
        })
        .collect();
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name())
            .with_partitions(partitions)]);
    let ResponseKind::ListOffsets(r) = client.send(RequestKind::ListOffsets(request), 5).await
    else {
        panic!("not a ListOffsets response")
    };
    r.topics[0]
        .partitions
        .iter()
        .map(|p| {
            assert_eq!(p.error_code, 0, "partition {}", p.partition_index);
            (p.partition_index, p.offset)
        })
        .collect()
}

/// The one record's value of each of `partitions`, from one Fetch request.
async fn fetch(client: &mut Client, partitions: &[i32]) -> BTreeMap<i32, String> {
    let wanted = partitions
        .iter()
        .map(|&p| {
            FetchPartition::default()
                .with_partition(p)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 16)
        })
        .collect();
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(8 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name())
            .with_partitions(wanted)]);
    let ResponseKind::Fetch(r) = client.send(RequestKind::Fetch(request), 12).await else {
        panic!("not a Fetch response")
    };
    let mut values = BTreeMap::new();
    for p in &r.responses[0].partitions {
        assert_eq!(
            (p.error_code, p.high_watermark),
            (0, 1),
            "partition {}",
            p.partition_index
        );
        let mut records = p.records.clone().unwrap_or_default();
        let batches = RecordBatchDecoder::decode_all(&mut records).unwrap();
        let records: Vec<_> = batches.iter().flat_map(|b| &b.records).collect();
        assert_eq!(records.len(), 1, "partition {}", p.partition_index);
        let value = records[0].value.clone().unwrap();
        values.insert(
            p.partition_index,
            String::from_utf8(value.to_vec()).unwrap(),
        );
    }
    values
}

async fn delete(client: &mut Client) {
    let request = DeleteTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topic_names(vec![name()]);
    let ResponseKind::DeleteTopics(r) = client.send(RequestKind::DeleteTopics(request), 5).await
    else {
        panic!("not a DeleteTopics response")
    };
    assert_eq!(r.responses[0].error_code, 0);
}
