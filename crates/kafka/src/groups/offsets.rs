//! Committed offsets: checked against group membership, kept in the metadata store.

use std::collections::HashMap;
use std::time::Instant;

use kafka_protocol::error::ResponseError;
use streamhouse_metadata::{now_ms, CommittedOffset, LeaseFence};

use uuid::Uuid;

use super::consumer::CommitCheck;
use super::{not_coordinator, validate_group_id, GroupCoordinator, GroupError, GroupState};

/// Kafka's default `offset.metadata.max.bytes`.
const MAX_METADATA_BYTES: usize = 4096;

/// Topics with partition indexes, as requests name them.
pub(crate) type TopicPartitions = Vec<(String, Vec<i32>)>;

/// One partition's offset in an OffsetCommit.
#[derive(Debug, Clone)]
pub(crate) struct OffsetCommit {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) leader_epoch: i32,
    pub(crate) metadata: Option<String>,
}

/// Who commits: a member of a generation, or (generation -1, no member) a standalone consumer.
#[derive(Debug, Clone)]
pub(crate) struct Committer {
    pub(crate) generation: i32,
    pub(crate) member_id: String,
    pub(crate) group_instance_id: Option<String>,
}

/// A committed offset as OffsetFetch returns it; offset -1 when nothing was committed.
#[derive(Debug, Clone)]
pub(crate) struct PartitionOffset {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) leader_epoch: i32,
    pub(crate) metadata: Option<String>,
}

impl PartitionOffset {
    /// No committed offset.
    pub(crate) fn none(partition: i32) -> Self {
        Self {
            partition,
            offset: -1,
            leader_epoch: -1,
            metadata: Some(String::new()),
        }
    }

    fn stored(o: &CommittedOffset) -> Self {
        Self {
            partition: o.partition as i32,
            offset: o.offset,
            leader_epoch: o.leader_epoch,
            metadata: o.metadata.clone(),
        }
    }
}

/// Per-partition outcome of an offset write.
pub(crate) type PartitionResult = Result<(), ResponseError>;

impl GroupCoordinator {
    /// Stores offsets after checking the committer, fenced by this agent's lease of the group;
    /// returns one result per commit, in order.
    pub(crate) async fn commit_offsets(
        &self,
        group_id: &str,
        committer: &Committer,
        commits: &[OffsetCommit],
    ) -> Result<Vec<PartitionResult>, GroupError> {
        validate_group_id(group_id)?;
        let (fence, check) = self.validate_committer(group_id, committer)?;
        let mut partition_counts = HashMap::new();
        let committed_at_ms = now_ms();
        let mut results = Vec::with_capacity(commits.len());
        let mut valid = Vec::new();
        for c in commits {
            let topic = self.check_commit(c, &mut partition_counts).await;
            let check = topic.and_then(|id| match check {
                CommitCheck::Any => Ok(()),
                CommitCheck::Partitions => self.may_commit(group_id, committer, (id, c.partition)),
            });
            if check.is_ok() {
                valid.push(CommittedOffset {
                    topic: c.topic.clone(),
                    partition: c.partition as u32,
                    offset: c.offset,
                    leader_epoch: c.leader_epoch,
                    metadata: c.metadata.clone(),
                    committed_at_ms,
                });
            }
            results.push(check.map_err(|e| e.code()));
        }
        if !valid.is_empty() {
            let stored = self.metadata.commit_offsets(group_id, Some(&fence), &valid);
            if let Err(e) = stored.await {
                let code = self.lease_failure(group_id, &fence, e).code();
                for r in results.iter_mut().filter(|r| r.is_ok()) {
                    *r = Err(code);
                }
            }
        }
        Ok(results)
    }

    /// Stores offsets an operator sets (the admin API's reset) while the group has no members,
    /// fenced by this agent's lease of the group (claimed by the caller).
    pub(crate) async fn reset_offsets(
        &self,
        group_id: &str,
        offsets: &[CommittedOffset],
    ) -> Result<(), GroupError> {
        let fence = self.with_coordinated(group_id, |c| {
            let empty = matches!(c.group.state(), GroupState::Empty | GroupState::Dead);
            if empty && c.consumer.is_empty() {
                Ok(c.fence.clone())
            } else {
                Err(GroupError::NonEmptyGroup(group_id.to_string()))
            }
        });
        let fence = fence.unwrap_or_else(|| Err(not_coordinator(group_id)))?;
        let stored = self
            .metadata
            .commit_offsets(group_id, Some(&fence), offsets);
        stored
            .await
            .map_err(|e| self.lease_failure(group_id, &fence, e))
    }

    /// Checks a TxnOffsetCommit's committer like an OffsetCommit's (KIP-447): a member of an
    /// older generation (a zombie after a rebalance) is refused, so its transaction cannot
    /// commit offsets its successor already reads from.
    pub(crate) fn validate_txn_committer(
        &self,
        group_id: &str,
        committer: &Committer,
    ) -> Result<(), GroupError> {
        let (member, instance) = (&committer.member_id, committer.group_instance_id.as_deref());
        self.with_coordinated(group_id, |coordinated| {
            let consumer = &coordinated.consumer;
            if consumer.is_empty() {
                let group = &coordinated.group;
                return group.validate_txn_commit(member, instance, committer.generation);
            }
            // A consumer-protocol member commits at its current member epoch.
            match consumer.validate_commit(member, committer.generation)? {
                CommitCheck::Any => Ok(()),
                CommitCheck::Partitions => Err(GroupError::StaleMemberEpoch {
                    group: group_id.to_string(),
                    got: committer.generation,
                    current: -1,
                }),
            }
        })
        .unwrap_or_else(|| Err(not_coordinator(group_id)))
    }

    /// Checks the committer against the group's membership; returns the lease to commit under
    /// and how its partitions are to be checked.
    fn validate_committer(
        &self,
        group_id: &str,
        c: &Committer,
    ) -> Result<(LeaseFence, CommitCheck), GroupError> {
        let now = Instant::now();
        let instance = c.group_instance_id.as_deref();
        self.with_coordinated(group_id, |coordinated| {
            // A consumer-protocol member commits at its member epoch (OffsetCommit v9+).
            let consumer = &coordinated.consumer;
            let check = if consumer.is_empty() {
                let group = &mut coordinated.group;
                group.validate_commit(&c.member_id, instance, c.generation, now)?;
                CommitCheck::Any
            } else {
                consumer.validate_commit(&c.member_id, c.generation)?
            };
            Ok((coordinated.fence.clone(), check))
        })
        .unwrap_or_else(|| Err(not_coordinator(group_id)))
    }

    /// A consumer-protocol commit at an earlier member epoch, for one partition.
    fn may_commit(
        &self,
        group_id: &str,
        c: &Committer,
        partition: (Uuid, i32),
    ) -> Result<(), GroupError> {
        self.with_coordinated(group_id, |coordinated| {
            let consumer = &coordinated.consumer;
            consumer.may_commit(&c.member_id, c.generation, partition)
        })
        .unwrap_or_else(|| Err(not_coordinator(group_id)))
    }

    async fn check_commit(
        &self,
        c: &OffsetCommit,
        partition_counts: &mut HashMap<String, Option<(Uuid, u32)>>,
    ) -> Result<Uuid, GroupError> {
        let len = c.metadata.as_ref().map_or(0, String::len);
        if len > MAX_METADATA_BYTES {
            return Err(GroupError::MetadataTooLarge {
                len,
                max: MAX_METADATA_BYTES,
            });
        }
        let count = match partition_counts.get(&c.topic) {
            Some(count) => *count,
            None => {
                let topic = self.metadata.get_topic(&c.topic).await?;
                let count = topic.map(|t| (t.id, t.partitions));
                partition_counts.insert(c.topic.clone(), count);
                count
            }
        };
        match (count, u32::try_from(c.partition)) {
            (Some((id, count)), Ok(p)) if p < count => Ok(id),
            _ => Err(GroupError::UnknownPartition {
                topic: c.topic.clone(),
                partition: c.partition,
            }),
        }
    }

    /// Committed offsets of the requested partitions (-1 where none), or of every partition
    /// with a commit when `topics` is `None`.
    pub(crate) async fn fetch_offsets(
        &self,
        group_id: &str,
        topics: Option<TopicPartitions>,
    ) -> Result<Vec<(String, Vec<PartitionOffset>)>, GroupError> {
        validate_group_id(group_id)?;
        let stored = self.metadata.fetch_offsets(group_id, None).await?;
        let Some(topics) = topics else {
            return Ok(group_by_topic(&stored));
        };
        let by_partition: HashMap<(&str, i32), &CommittedOffset> = stored
            .iter()
            .map(|o| ((o.topic.as_str(), o.partition as i32), o))
            .collect();
        Ok(topics
            .into_iter()
            .map(|(topic, partitions)| {
                let offsets = partitions
                    .into_iter()
                    .map(|p| match by_partition.get(&(topic.as_str(), p)) {
                        Some(o) => PartitionOffset::stored(o),
                        None => PartitionOffset::none(p),
                    })
                    .collect();
                (topic, offsets)
            })
            .collect())
    }

    /// Deletes offsets of partitions the group does not consume, under this agent's lease of
    /// the group (claimed by the caller; NOT_COORDINATOR without it); partitions of subscribed
    /// topics get GROUP_SUBSCRIBED_TO_TOPIC.
    pub(crate) async fn delete_offsets(
        &self,
        group_id: &str,
        topics: TopicPartitions,
    ) -> Result<Vec<(String, Vec<(i32, PartitionResult)>)>, GroupError> {
        validate_group_id(group_id)?;
        let fence = self
            .with_coordinated(group_id, |c| c.fence.clone())
            .ok_or_else(|| not_coordinator(group_id))?;
        let subscribed = self.subscribed_topics_of(group_id, &topics).await?;
        let mut deletions = Vec::new();
        let mut results = Vec::with_capacity(topics.len());
        for ((topic, partitions), subscribed) in topics.into_iter().zip(subscribed) {
            let outcome = if subscribed {
                let e = GroupError::SubscribedToTopic {
                    group: group_id.to_string(),
                    topic: topic.clone(),
                };
                Err(e.code())
            } else {
                Ok(())
            };
            if outcome.is_ok() {
                deletions.extend(partitions.iter().map(|&p| (topic.clone(), p as u32)));
            }
            results.push((topic, partitions.iter().map(|&p| (p, outcome)).collect()));
        }
        if !deletions.is_empty() {
            let deleted = self
                .metadata
                .delete_offsets(group_id, Some(&fence), &deletions);
            deleted
                .await
                .map_err(|e| self.lease_failure(group_id, &fence, e))?;
        }
        Ok(results)
    }

    /// For each topic, whether the group's live members subscribe to it.
    async fn subscribed_topics_of(
        &self,
        group_id: &str,
        topics: &TopicPartitions,
    ) -> Result<Vec<bool>, GroupError> {
        let live = self.with_coordinated(group_id, |c| {
            let consumer = &c.consumer;
            if consumer.is_empty() {
                return classic_subscriptions(group_id, &c.group, topics);
            }
            let subscribed = topics.iter().map(|(t, _)| consumer.is_subscribed_to(t));
            Some(Ok(subscribed.collect()))
        });
        match live.flatten() {
            Some(result) => result,
            None if self
                .metadata
                .fetch_offsets(group_id, None)
                .await?
                .is_empty() =>
            {
                Err(GroupError::GroupNotFound(group_id.to_string()))
            }
            None => Ok(vec![false; topics.len()]),
        }
    }
}

/// For each topic, whether the classic group's live members subscribe to it; `None` for an
/// Empty group, which exists only by its offsets.
fn classic_subscriptions(
    group_id: &str,
    g: &super::Group,
    topics: &TopicPartitions,
) -> Option<Result<Vec<bool>, GroupError>> {
    match g.state() {
        GroupState::Dead => Some(Err(GroupError::GroupNotFound(group_id.to_string()))),
        // Exists only by its offsets, if it has any.
        GroupState::Empty => None,
        _ if g.protocol_type() == "consumer" => Some(Ok(topics
            .iter()
            .map(|(t, _)| g.is_subscribed_to(t))
            .collect())),
        _ => Some(Err(GroupError::NonEmptyGroup(group_id.to_string()))),
    }
}

fn group_by_topic(stored: &[CommittedOffset]) -> Vec<(String, Vec<PartitionOffset>)> {
    let mut out: Vec<(String, Vec<PartitionOffset>)> = Vec::new();
    for o in stored {
        match out.last_mut() {
            Some((topic, offsets)) if *topic == o.topic => offsets.push(PartitionOffset::stored(o)),
            _ => out.push((o.topic.clone(), vec![PartitionOffset::stored(o)])),
        }
    }
    out
}
