//! The coordinator's consumer-protocol (KIP-848) calls: heartbeats, whose group epoch is
//! recorded under the coordinator lease before any member learns it, and descriptions.

use std::time::{Duration, Instant};

use super::assignor::Assignment;
use super::consumer::{ConsumerHeartbeat, ConsumerHeartbeatResponse, ConsumerMember, TopicImage};
use super::{
    inconsistent_protocol, not_coordinator, validate_group_id, GroupCoordinator, GroupError,
    GroupState,
};

/// A consumer-protocol group as ConsumerGroupDescribe shows it.
pub(crate) struct ConsumerGroupDescription {
    pub(crate) state: GroupState,
    pub(crate) epoch: i32,
    pub(crate) assignment_epoch: i32,
    pub(crate) assignor: String,
    /// Each member with its target assignment.
    pub(crate) members: Vec<(ConsumerMember, Assignment)>,
}

impl GroupCoordinator {
    /// Handles a ConsumerGroupHeartbeat; `topics` holds every topic the group may subscribe
    /// to. Refused while the group has classic-protocol members.
    pub(crate) async fn consumer_heartbeat(
        &self,
        group_id: &str,
        req: ConsumerHeartbeat,
        topics: &TopicImage,
    ) -> Result<ConsumerHeartbeatResponse, GroupError> {
        validate_group_id(group_id)?;
        let now = Instant::now();
        let beat = self.with_coordinated(group_id, |c| {
            if !c.group.is_deletable() {
                return Err(inconsistent_protocol(group_id));
            }
            c.consumer
                .advance_epoch(c.recorded_generation.max(c.group.generation()));
            let response = c.consumer.heartbeat(req, topics, now)?;
            Ok((c.fence.clone(), c.consumer.epoch(), response))
        });
        let (fence, epoch, response) = beat.unwrap_or_else(|| Err(not_coordinator(group_id)))?;
        self.record_generation(group_id, &fence, epoch).await?;
        Ok(response)
    }

    /// How often consumer-protocol members are told to heartbeat.
    pub(crate) fn consumer_heartbeat_interval(&self) -> Duration {
        self.consumer_timeouts.heartbeat_interval
    }

    /// A consumer-protocol group with members; GROUP_ID_NOT_FOUND for any other (a classic
    /// group, or one known only by its offsets), which sends admin clients to DescribeGroups.
    pub(crate) fn describe_consumer_group(
        &self,
        group_id: &str,
    ) -> Result<ConsumerGroupDescription, GroupError> {
        validate_group_id(group_id)?;
        let described = self.with_coordinated(group_id, |c| {
            let g = &c.consumer;
            (!g.is_empty()).then(|| ConsumerGroupDescription {
                state: g.state(),
                epoch: g.epoch(),
                assignment_epoch: g.assignment_epoch(),
                assignor: g.assignor().to_string(),
                members: g
                    .members()
                    .map(|m| (m.clone(), g.target_of(&m.id)))
                    .collect(),
            })
        });
        described
            .flatten()
            .ok_or_else(|| GroupError::GroupNotFound(group_id.to_string()))
    }
}
