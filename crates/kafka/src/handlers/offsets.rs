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

use kafka_protocol::error::ResponseError;

use super::groups::coordinating;
use super::str_bytes;
use crate::broker::Broker;
use crate::groups::{Committer, GroupError, OffsetCommit, PartitionOffset, TopicPartitions};
use crate::security::{Access, Op, Resource};

pub(crate) async fn offset_commit(
    b: &Broker,
    access: &Access,
    req: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let committer = Committer {
        generation: req.generation_id_or_member_epoch,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
    };
    let group_id = req.group_id.0.as_str();
    let group = coordinating(b, access, Op::Read, group_id).await;
    let group_code = group.as_ref().err().map(|e| e.code().code());
    // Only topics the requester may read are committed (checked once the group is allowed).
    let readable: Vec<bool> = req
        .topics
        .iter()
        .map(|t| group.is_ok() && access.allows(Op::Read, Resource::Topic, t.name.0.as_str()))
        .collect();
    let commits: Vec<OffsetCommit> = req
        .topics
        .iter()
        .zip(&readable)
        .filter(|(_, readable)| **readable)
        .flat_map(|(t, _)| {
            t.partitions.iter().map(|p| OffsetCommit {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: p.committed_leader_epoch,
                metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
            })
        })
        .collect();
    let results = match group {
        Ok(()) => {
            b.groups()
                .commit_offsets(group_id, &committer, &commits)
                .await
        }
        Err(e) => Err(e),
    };
    // One code per partition of a readable topic, in request order.
    let mut committed = commits.iter().enumerate().map(|(i, _)| match &results {
        Ok(per_partition) => per_partition[i].err().map_or(0, |e| e.code()),
        Err(e) => e.code().code(),
    });
    let topics = req
        .topics
        .into_iter()
        .zip(readable)
        .map(|(t, readable)| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let code = match (group_code, readable) {
                        (Some(code), _) => code,
                        (None, false) => ResponseError::TopicAuthorizationFailed.code(),
                        (None, true) => committed.next().unwrap_or_default(),
                    };
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// A topic's offsets in an OffsetFetch answer, with the error code of each of its partitions.
type TopicOffsets = (String, Vec<PartitionOffset>, i16);

/// The committed offsets of `group_id` the requester may see (DESCRIBE on the group, then on
/// each topic): named topics it may not describe are answered with TOPIC_AUTHORIZATION_FAILED,
/// and when every topic is asked for, those are left out (as in Kafka).
async fn visible_offsets(
    b: &Broker,
    access: &Access,
    group_id: &str,
    topics: Option<TopicPartitions>,
    require_stable: bool,
) -> Result<Vec<TopicOffsets>, GroupError> {
    coordinating(b, access, Op::Describe, group_id).await?;
    let describable = |topic: &str| access.allows(Op::Describe, Resource::Topic, topic);
    let (wanted, refused): (Option<TopicPartitions>, TopicPartitions) = match topics {
        Some(topics) => {
            let (wanted, refused) = topics.into_iter().partition(|(t, _)| describable(t));
            (Some(wanted), refused)
        }
        None => (None, Vec::new()),
    };
    let every_topic = wanted.is_none();
    let found = b.groups().fetch_offsets(group_id, wanted).await?;
    let found = found
        .into_iter()
        .filter(|(t, _)| !every_topic || access.shows(Op::Describe, Resource::Topic, t))
        .map(|(topic, offsets)| (topic, offsets, 0));
    let refused = refused.into_iter().map(|(topic, partitions)| {
        let offsets = partitions.into_iter().map(PartitionOffset::none).collect();
        (
            topic,
            offsets,
            ResponseError::TopicAuthorizationFailed.code(),
        )
    });
    let found: Vec<TopicOffsets> = found.chain(refused).collect();
    if !require_stable {
        return Ok(found);
    }
    let pending = b.txn_store().pending_txn_offsets(group_id).await?;
    Ok(split_unstable(found, &pending))
}

/// KIP-447: with `require_stable`, a partition whose offset a still-open transaction commits
/// is answered UNSTABLE_OFFSET_COMMIT (the consumer retries) rather than with the offset that
/// transaction is about to replace.
fn split_unstable(found: Vec<TopicOffsets>, pending: &[(String, u32)]) -> Vec<TopicOffsets> {
    let unstable_code = ResponseError::UnstableOffsetCommit.code();
    let mut out = Vec::with_capacity(found.len());
    for (topic, offsets, code) in found {
        let is_pending = |o: &PartitionOffset| {
            pending
                .iter()
                .any(|(t, p)| *t == topic && *p as i32 == o.partition)
        };
        let (unstable, stable): (Vec<_>, Vec<_>) = offsets.into_iter().partition(is_pending);
        if !unstable.is_empty() && code == 0 {
            let none = unstable
                .iter()
                .map(|o| PartitionOffset::none(o.partition))
                .collect();
            out.push((topic.clone(), none, unstable_code));
        }
        out.push((topic, stable, code));
    }
    out
}

pub(crate) async fn offset_fetch(
    b: &Broker,
    access: &Access,
    req: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    if version >= 8 {
        return fetch_groups(b, access, req).await;
    }
    let topics = req.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let stable = req.require_stable;
    match visible_offsets(b, access, req.group_id.0.as_str(), topics, stable).await {
        Ok(found) => {
            let topics = found
                .into_iter()
                .map(|(topic, offsets, code)| {
                    let partitions = offsets
                        .into_iter()
                        .map(|o| legacy_partition(o, version).with_error_code(code))
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

async fn fetch_groups(b: &Broker, access: &Access, req: OffsetFetchRequest) -> OffsetFetchResponse {
    let mut groups = Vec::with_capacity(req.groups.len());
    for g in req.groups {
        let topics: Option<TopicPartitions> = g.topics.map(|topics| {
            topics
                .into_iter()
                .map(|t| (t.name.0.to_string(), t.partition_indexes))
                .collect()
        });
        let out = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
        groups.push(
            match visible_offsets(b, access, g.group_id.0.as_str(), topics, req.require_stable)
                .await
            {
                Ok(found) => out.with_topics(found.into_iter().map(group_topic).collect()),
                Err(e) => out.with_error_code(e.code().code()),
            },
        );
    }
    OffsetFetchResponse::default().with_groups(groups)
}

fn group_topic((topic, offsets, code): TopicOffsets) -> OffsetFetchResponseTopics {
    let partitions = offsets
        .into_iter()
        .map(|o| {
            OffsetFetchResponsePartitions::default()
                .with_partition_index(o.partition)
                .with_committed_offset(o.offset)
                .with_committed_leader_epoch(o.leader_epoch)
                .with_metadata(o.metadata.as_deref().map(str_bytes))
                .with_error_code(code)
        })
        .collect();
    OffsetFetchResponseTopics::default()
        .with_name(TopicName(str_bytes(&topic)))
        .with_partitions(partitions)
}

pub(crate) async fn offset_delete(
    b: &Broker,
    access: &Access,
    req: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let group_id = req.group_id.0.as_str();
    let topics: TopicPartitions = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t.partitions.iter().map(|p| p.partition_index).collect();
            (t.name.0.to_string(), partitions)
        })
        .collect();
    let deleted = match coordinating(b, access, Op::Delete, group_id).await {
        Ok(()) => {
            // Offsets of a topic are deleted only with READ on it.
            let (readable, refused): (TopicPartitions, TopicPartitions) = topics
                .into_iter()
                .partition(|(t, _)| access.allows(Op::Read, Resource::Topic, t));
            b.groups()
                .delete_offsets(group_id, readable)
                .await
                .map(|mut results| {
                    results.extend(refused.into_iter().map(|(topic, partitions)| {
                        let denied = Err(ResponseError::TopicAuthorizationFailed);
                        (topic, partitions.into_iter().map(|p| (p, denied)).collect())
                    }));
                    results
                })
        }
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
