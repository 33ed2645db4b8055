//! Where a topic's partitions live and how far their logs reach: Metadata and ListOffsets
//! over a [`Connection`], shared by the bench and the operator commands.

use std::collections::HashMap;

use anyhow::{anyhow, bail};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{BrokerId, ListOffsetsRequest, MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::Connection;

/// Metadata version used (flexible, with the fields the bench reads).
const METADATA_VERSION: i16 = 9;
/// ListOffsets version used.
const LIST_OFFSETS_VERSION: i16 = 5;

/// Where a topic's partitions live.
pub struct Layout {
    /// Partition ids by the address of their leader, partitions in ascending order.
    pub by_leader: Vec<(String, Vec<i32>)>,
}

impl Layout {
    /// Every partition id, ascending.
    pub fn partitions(&self) -> Vec<i32> {
        let mut all: Vec<i32> = self
            .by_leader
            .iter()
            .flat_map(|(_, ps)| ps.iter().copied())
            .collect();
        all.sort_unstable();
        all
    }
}

/// The leaders of `topic`'s partitions, asked of `bootstrap`; `None` when the topic does not
/// exist.
pub async fn layout(bootstrap: &Connection, topic: &str) -> anyhow::Result<Option<Layout>> {
    let request = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(topic_name(topic))),
    ]));
    let response = bootstrap.call(&request, METADATA_VERSION).await?;
    let brokers: HashMap<BrokerId, String> = response
        .brokers
        .iter()
        .map(|b| (b.node_id, format!("{}:{}", b.host, b.port)))
        .collect();
    let Some(t) = response.topics.first() else {
        bail!("metadata for '{topic}' came back without the topic");
    };
    match ResponseError::try_from_code(t.error_code) {
        None => {}
        Some(ResponseError::UnknownTopicOrPartition) => return Ok(None),
        Some(e) => bail!("metadata for '{topic}': {e}"),
    }
    let mut by_leader: Vec<(String, Vec<i32>)> = Vec::new();
    for p in &t.partitions {
        let addr = brokers.get(&p.leader_id).ok_or_else(|| {
            anyhow!(
                "partition {topic}/{} has no known leader (node {})",
                p.partition_index,
                p.leader_id.0
            )
        })?;
        match by_leader.iter_mut().find(|(a, _)| a == addr) {
            Some((_, ids)) => ids.push(p.partition_index),
            None => by_leader.push((addr.clone(), vec![p.partition_index])),
        }
    }
    for (_, ids) in &mut by_leader {
        ids.sort_unstable();
    }
    Ok(Some(Layout { by_leader }))
}

/// Kafka's ListOffsets timestamp asking for the log start offset.
pub const EARLIEST: i64 = -2;
/// Kafka's ListOffsets timestamp asking for the high watermark.
pub const LATEST: i64 = -1;

/// `(partition, log start offset, high watermark)` of `partitions`, asked of their leader.
pub async fn watermarks(
    leader: &Connection,
    topic: &str,
    partitions: &[i32],
) -> anyhow::Result<Vec<(i32, i64, i64)>> {
    let low = list_offsets(leader, topic, partitions, EARLIEST).await?;
    let high = list_offsets(leader, topic, partitions, LATEST).await?;
    Ok(partitions.iter().map(|p| (*p, low[p], high[p])).collect())
}

/// The offset of each of `partitions` at `at` ([`EARLIEST`] or [`LATEST`]), asked of their
/// leader.
async fn list_offsets(
    leader: &Connection,
    topic: &str,
    partitions: &[i32],
    at: i64,
) -> anyhow::Result<HashMap<i32, i64>> {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(
                partitions
                    .iter()
                    .map(|&p| {
                        ListOffsetsPartition::default()
                            .with_partition_index(p)
                            .with_timestamp(at)
                    })
                    .collect(),
            )]);
    let response = leader.call(&request, LIST_OFFSETS_VERSION).await?;
    let mut offsets = HashMap::new();
    for p in response.topics.iter().flat_map(|t| &t.partitions) {
        if let Some(e) = ResponseError::try_from_code(p.error_code) {
            bail!(
                "listing offsets of {topic}/{} at {}: {e}",
                p.partition_index,
                leader.addr()
            );
        }
        offsets.insert(p.partition_index, p.offset);
    }
    for p in partitions {
        if !offsets.contains_key(p) {
            bail!("listing offsets of {topic}/{p}: partition missing from the answer");
        }
    }
    Ok(offsets)
}

/// A topic name for a request.
pub fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}
