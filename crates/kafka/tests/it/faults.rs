//! Produce through the agent while the object store misbehaves: acknowledgements only for
//! stored records, errors (and nothing visible) during an outage, recovery afterwards.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use streamhouse_kafka::BrokerConfig;
use streamhouse_metadata::{NewTopic, TopicConfig};
use streamhouse_storage::testing::{FaultPlan, FaultyStore};

use crate::harness::{record_batch, Client, TestServer};

const TOPIC: &str = "faulty";

async fn server(store: std::sync::Arc<FaultyStore>) -> TestServer {
    let server = TestServer::start_with_store(BrokerConfig::default(), store).await;
    server
        .metadata
        .create_topic(NewTopic {
            name: TOPIC.into(),
            partitions: 1,
            config: TopicConfig::default(),
        })
        .await
        .unwrap();
    server
}

/// Produces one batch of `values` with acks=all: `(error code, base offset)`.
async fn produce(client: &mut Client, values: &[String]) -> (i16, i64) {
    let records: Vec<(&str, &str)> = values.iter().map(|v| ("k", v.as_str())).collect();
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(record_batch(&records, 1_000, None)))])]);
    let ResponseKind::Produce(r) = client.send(RequestKind::Produce(request), 9).await else {
        panic!("not a produce response")
    };
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

fn values(round: usize, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("round{round}-{i}")).collect()
}

/// Every value stored in the partition, in offset order.
async fn stored_values(server: &TestServer) -> Vec<Bytes> {
    let consumed = server
        .broker
        .consume_records(TOPIC, 0, 0, 100_000, 1 << 24)
        .await
        .unwrap();
    assert_eq!(consumed.next_offset, consumed.high_watermark);
    consumed
        .records
        .into_iter()
        .map(|r| r.value.unwrap_or_default())
        .collect()
}

fn expected(rounds: &[usize], n: usize) -> Vec<Bytes> {
    rounds
        .iter()
        .flat_map(|&round| values(round, n).into_iter().map(Bytes::from))
        .collect()
}

#[tokio::test]
async fn produce_is_acknowledged_only_once_stored_despite_put_errors() {
    let store = FaultyStore::new(11);
    store.set_puts(FaultPlan {
        latency: Duration::from_millis(1),
        error_rate: 0.25,
        timeout_rate: 0.1,
        ..FaultPlan::default()
    });
    let server = server(store.clone()).await;
    let mut client = server.client().await;
    let mut acked = Vec::new();
    for round in 0..20 {
        match produce(&mut client, &values(round, 3)).await {
            (0, base) => {
                assert_eq!(base, 3 * acked.len() as i64);
                acked.push(round);
            }
            (code, _) => assert_eq!(code, ResponseError::KafkaStorageError.code()),
        }
    }
    assert!(store.puts().failed() + store.puts().timed_out() > 0);
    assert!(
        acked.len() >= 19,
        "only {} of 20 produces acknowledged",
        acked.len()
    );
    assert_eq!(stored_values(&server).await, expected(&acked, 3));
}

#[tokio::test]
async fn an_outage_fails_produces_and_later_produces_succeed() {
    let store = FaultyStore::new(5);
    let server = server(store.clone()).await;
    let mut client = server.client().await;
    assert_eq!(produce(&mut client, &values(0, 4)).await, (0, 0));

    store.set_puts(FaultPlan {
        outage: true,
        ..FaultPlan::default()
    });
    let (code, _) = produce(&mut client, &values(1, 4)).await;
    assert_eq!(code, ResponseError::KafkaStorageError.code());
    assert_eq!(stored_values(&server).await, expected(&[0], 4));

    store.set_puts(FaultPlan::default());
    assert_eq!(produce(&mut client, &values(2, 4)).await, (0, 4));
    assert_eq!(stored_values(&server).await, expected(&[0, 2], 4));
}
