//! DescribeProducers (KIP-664): the idempotent and transactional producers each partition
//! remembers (with the first offset of an open transaction), from the
//! snapshots committed with its segments (what a new owner of the partition would know), so any
//! agent answers the same.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};
use streamhouse_storage::summarize_snapshot;

use super::str_bytes;
use crate::broker::Broker;
use crate::errors::metadata_error_code;
use crate::security::{Access, Op, Resource};

pub(crate) async fn describe_producers(
    b: &Broker,
    access: &Access,
    req: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        // As Kafka: describing a partition's producers needs READ on the topic.
        let permitted = access.allows(Op::Read, Resource::Topic, &name);
        let mut partitions = Vec::with_capacity(t.partition_indexes.len());
        for index in t.partition_indexes {
            let response = PartitionResponse::default().with_partition_index(index);
            let result = match u32::try_from(index) {
                _ if !permitted => Err((ResponseError::TopicAuthorizationFailed, String::new())),
                Ok(partition) => producers(b, &name, partition).await,
                Err(_) => Err((ResponseError::UnknownTopicOrPartition, String::new())),
            };
            partitions.push(match result {
                Ok(active) => response.with_active_producers(active),
                Err((code, message)) => response
                    .with_error_code(code.code())
                    .with_error_message((!message.is_empty()).then(|| str_bytes(&message))),
            });
        }
        topics.push(
            TopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    DescribeProducersResponse::default().with_topics(topics)
}

async fn producers(
    b: &Broker,
    topic: &str,
    partition: u32,
) -> Result<Vec<ProducerState>, (ResponseError, String)> {
    let failed = |e: streamhouse_metadata::MetadataError| (metadata_error_code(&e), e.to_string());
    let state = b
        .catalog()
        .get_partition(topic, partition)
        .await
        .map_err(failed)?;
    let snapshots = b
        .segment_log()
        .list_producer_snapshots(topic, partition)
        .await
        .map_err(failed)?;
    let mut out = Vec::new();
    // A producer whose newest batch lies below the log start is forgotten, as in Kafka.
    for snapshot in snapshots
        .snapshots
        .iter()
        .filter(|s| s.last_offset >= state.log_start_offset)
    {
        let summary = summarize_snapshot(snapshot).map_err(|reason| {
            (
                ResponseError::CorruptMessage,
                format!("producer {} snapshot: {reason}", snapshot.producer_id),
            )
        })?;
        out.push(
            ProducerState::default()
                .with_producer_id(ProducerId(summary.producer_id))
                .with_producer_epoch(i32::from(summary.epoch))
                .with_last_sequence(summary.last_sequence)
                // The commit time of its newest batch: the time it was appended, as Kafka's
                // LogAppendTime would be (the records' own timestamps are not kept here).
                .with_last_timestamp(summary.committed_at_ms)
                .with_coordinator_epoch(-1)
                .with_current_txn_start_offset(summary.txn_first_offset.unwrap_or(-1)),
        );
    }
    Ok(out)
}
