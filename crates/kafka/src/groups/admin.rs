//! Listing, describing and deleting groups, and consumer lag.

use std::collections::BTreeMap;

use bytes::Bytes;
use streamhouse_metadata::MetadataError;
use tracing::info;

use super::types::MemberDescription;
use super::{
    not_coordinator, validate_group_id, Coordinated, Group, GroupCoordinator, GroupDescription,
    GroupError, GroupState,
};

/// A group as ListGroups shows it.
#[derive(Debug, Clone)]
pub(crate) struct GroupListing {
    pub(crate) group_id: String,
    pub(crate) protocol_type: String,
    pub(crate) state: GroupState,
    /// `classic` or `consumer` (KIP-848), as ListGroups v5 reports it.
    pub(crate) group_type: &'static str,
}

/// How far a group's committed offset trails one partition's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// The group's committed offset (the next offset it will consume).
    pub committed: i64,
    /// The partition's high watermark.
    pub high_watermark: i64,
    /// Records not yet consumed: `high_watermark - committed`, never negative.
    pub lag: i64,
}

impl GroupCoordinator {
    /// Every group: live ones with their state, and groups known only by committed offsets as
    /// Empty. Ordered by group id.
    pub(crate) async fn list_groups(&self) -> Result<Vec<GroupListing>, GroupError> {
        let stored = self.metadata.list_groups().await?;
        let mut listings: BTreeMap<String, GroupListing> = stored
            .into_iter()
            .map(|id| (id.clone(), offsets_only(id)))
            .collect();
        self.with_groups(|groups| {
            // Empty groups are listed by their offsets: one without is not a group to Kafka.
            let live = groups.iter().map(|(id, c)| (id, c.listing(id)));
            for (id, listing) in live.filter(|(_, l)| is_live(l.state)) {
                listings.insert(id.clone(), listing);
            }
        });
        Ok(listings.into_values().collect())
    }

    /// A group's state and members. Groups without members or offsets are reported Dead, as
    /// Kafka does.
    pub(crate) async fn describe_group(
        &self,
        group_id: &str,
    ) -> Result<GroupDescription, GroupError> {
        validate_group_id(group_id)?;
        let live = self.with_coordinated(group_id, |c| c.describe());
        if let Some(description) = live.filter(|d| is_live(d.state)) {
            return Ok(description);
        }
        let has_offsets = !self
            .metadata
            .fetch_offsets(group_id, None)
            .await?
            .is_empty();
        Ok(GroupDescription {
            state: if has_offsets {
                GroupState::Empty
            } else {
                GroupState::Dead
            },
            protocol_type: String::new(),
            protocol: String::new(),
            members: Vec::new(),
            consumer_protocol: false,
        })
    }

    /// Deletes a group without members, with its committed offsets, under this agent's lease
    /// of the group (claimed by the caller; NOT_COORDINATOR without it).
    pub(crate) async fn delete_group(&self, group_id: &str) -> Result<(), GroupError> {
        validate_group_id(group_id)?;
        // Dead while the offsets go, so no member can join halfway through.
        let fence = self.with_coordinated(group_id, |c| {
            if !c.group.is_deletable() || !c.consumer.is_empty() {
                return Err(GroupError::NonEmptyGroup(group_id.to_string()));
            }
            c.group.mark_dead();
            Ok(c.fence.clone())
        });
        let fence = fence.unwrap_or_else(|| Err(not_coordinator(group_id)))?;
        let deleted = self.metadata.delete_group(group_id, Some(&fence)).await;
        // The lease stays: the group lives on, empty, at its generation.
        let delay = self.initial_rebalance_delay;
        self.with_group(group_id, |g| {
            *g = Group::new(group_id, delay, g.generation())
        });
        // A group without offsets is not a group to Kafka, whatever this agent holds.
        if !deleted.map_err(|e| self.lease_failure(group_id, &fence, e))? {
            return Err(GroupError::GroupNotFound(group_id.to_string()));
        }
        info!(group = %group_id, "deleted group");
        Ok(())
    }

    /// Lag of every partition the group has committed offsets for.
    pub(crate) async fn lag(&self, group_id: &str) -> Result<Vec<PartitionLag>, MetadataError> {
        let committed = self.metadata.fetch_offsets(group_id, None).await?;
        let mut lags = Vec::with_capacity(committed.len());
        for c in committed {
            let state = self.metadata.get_partition(&c.topic, c.partition).await?;
            lags.push(PartitionLag {
                lag: (state.high_watermark - c.offset).max(0),
                topic: c.topic,
                partition: c.partition,
                committed: c.offset,
                high_watermark: state.high_watermark,
            });
        }
        Ok(lags)
    }
}

/// Whether a group in memory in `state` has members (or is getting them): an Empty one exists
/// only by its committed offsets, a Dead one not at all.
fn is_live(state: GroupState) -> bool {
    !matches!(state, GroupState::Empty | GroupState::Dead)
}

fn offsets_only(group_id: String) -> GroupListing {
    GroupListing {
        group_id,
        protocol_type: String::new(),
        state: GroupState::Empty,
        group_type: "classic",
    }
}

impl Coordinated {
    /// The group as listed: by its consumer-protocol members if it has any, else classic.
    fn listing(&self, id: &str) -> GroupListing {
        let consumer = !self.consumer.is_empty();
        GroupListing {
            group_id: id.to_string(),
            protocol_type: if consumer {
                "consumer".to_string()
            } else {
                self.group.protocol_type().to_string()
            },
            state: if consumer {
                self.consumer.state()
            } else {
                self.group.state()
            },
            group_type: if consumer { "consumer" } else { "classic" },
        }
    }

    /// The group as DescribeGroups and the admin API show it.
    fn describe(&self) -> GroupDescription {
        if self.consumer.is_empty() {
            return self.group.describe();
        }
        let members = self.consumer.members().map(|m| MemberDescription {
            member_id: m.id.clone(),
            group_instance_id: m.instance_id.clone(),
            client_id: m.client_id.clone(),
            client_host: m.client_host.clone(),
            metadata: Bytes::new(),
            assignment: Bytes::new(),
        });
        GroupDescription {
            state: self.consumer.state(),
            protocol_type: "consumer".to_string(),
            protocol: self.consumer.assignor().to_string(),
            members: members.collect(),
            consumer_protocol: true,
        }
    }
}
