//! Committed offsets: OffsetCommit, OffsetFetch (one group before v8, several from v8) and
//! OffsetDelete, translated to and from the group coordinator.

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse, TopicName,
};

use super::groups::coordinating;
use super::str_bytes;
use crate::broker::Broker;
use crate::groups::{Committer, OffsetCommit, PartitionOffset, TopicPartitions};

pub(crate) async fn offset_commit(b: &Broker, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let committer = Committer {
        generation: req.generation_id_or_member_epoch,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
    };
    let commits: Vec<OffsetCommit> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| OffsetCommit {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: p.committed_leader_epoch,
                metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
            })
        })
        .collect();
    let group_id = req.group_id.0.as_str();
    let results = match coordinating(b, group_id) {
        Ok(()) => {
            b.groups()
                .commit_offsets(group_id, &committer, &commits)
                .await
        }
        Err(e) => Err(e),
    };
    let mut codes = commits.iter().enumerate().map(|(i, _)| match &results {
        Ok(per_partition) => per_partition[i].err().map_or(0, |e| e.code()),
        Err(e) => e.code().code(),
    });
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(codes.next().unwrap_or_default())
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

pub(crate) async fn offset_fetch(
    b: &Broker,
    req: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    if version >= 8 {
        return fetch_groups(b, req).await;
    }
    let topics = req.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let group_id = req.group_id.0.as_str();
    let fetched = match coordinating(b, group_id) {
        Ok(()) => b.groups().fetch_offsets(group_id, topics).await,
        Err(e) => Err(e),
    };
    match fetched {
        Ok(found) => {
            let topics = found
                .into_iter()
                .map(|(topic, offsets)| {
                    let partitions = offsets
                        .into_iter()
                        .map(|o| legacy_partition(o, version))
                        .collect();
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(str_bytes(&topic)))
                        .with_partitions(partitions)
                })
                .collect();
            OffsetFetchResponse::default().with_topics(topics)
        }
        // v1 has no group-level error code; such a client just sees no offsets.
        Err(_) if version < 2 => OffsetFetchResponse::default(),
        Err(e) => OffsetFetchResponse::default().with_error_code(e.code().code()),
    }
}

fn legacy_partition(o: PartitionOffset, version: i16) -> OffsetFetchResponsePartition {
    OffsetFetchResponsePartition::default()
        .with_partition_index(o.partition)
        .with_committed_offset(o.offset)
        .with_committed_leader_epoch(if version >= 5 { o.leader_epoch } else { -1 })
        .with_metadata(o.metadata.as_deref().map(str_bytes))
}

async fn fetch_groups(b: &Broker, req: OffsetFetchRequest) -> OffsetFetchResponse {
    let mut groups = Vec::with_capacity(req.groups.len());
    for g in req.groups {
        let topics: Option<TopicPartitions> = g.topics.map(|topics| {
            topics
                .into_iter()
                .map(|t| (t.name.0.to_string(), t.partition_indexes))
                .collect()
        });
        let out = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
        let group_id = g.group_id.0.as_str();
        let fetched = match coordinating(b, group_id) {
            Ok(()) => b.groups().fetch_offsets(group_id, topics).await,
            Err(e) => Err(e),
        };
        groups.push(match fetched {
            Ok(found) => out.with_topics(found.into_iter().map(group_topic).collect()),
            Err(e) => out.with_error_code(e.code().code()),
        });
    }
    OffsetFetchResponse::default().with_groups(groups)
}

fn group_topic((topic, offsets): (String, Vec<PartitionOffset>)) -> OffsetFetchResponseTopics {
    let partitions = offsets
        .into_iter()
        .map(|o| {
            OffsetFetchResponsePartitions::default()
                .with_partition_index(o.partition)
                .with_committed_offset(o.offset)
                .with_committed_leader_epoch(o.leader_epoch)
                .with_metadata(o.metadata.as_deref().map(str_bytes))
        })
        .collect();
    OffsetFetchResponseTopics::default()
        .with_name(TopicName(str_bytes(&topic)))
        .with_partitions(partitions)
}

pub(crate) async fn offset_delete(b: &Broker, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let topics: TopicPartitions = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t.partitions.iter().map(|p| p.partition_index).collect();
            (t.name.0.to_string(), partitions)
        })
        .collect();
    let group_id = req.group_id.0.as_str();
    let deleted = match coordinating(b, group_id) {
        Ok(()) => b.groups().delete_offsets(group_id, topics).await,
        Err(e) => Err(e),
    };
    match deleted {
        Ok(results) => {
            let topics = results
                .into_iter()
                .map(|(topic, partitions)| {
                    let partitions = partitions
                        .into_iter()
                        .map(|(p, result)| {
                            OffsetDeleteResponsePartition::default()
                                .with_partition_index(p)
                                .with_error_code(result.err().map_or(0, |e| e.code()))
                        })
                        .collect();
                    OffsetDeleteResponseTopic::default()
                        .with_name(TopicName(str_bytes(&topic)))
                        .with_partitions(partitions)
                })
                .collect();
            OffsetDeleteResponse::default().with_topics(topics)
        }
        Err(e) => OffsetDeleteResponse::default().with_error_code(e.code().code()),
    }
}
