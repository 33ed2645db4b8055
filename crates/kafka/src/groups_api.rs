//! Consumer groups for the admin API: listing, describing, lag, deletion and offset resets.
//! Membership and lag come from the group coordinator (`groups`); nothing here coordinates.

use serde::Serialize;
use streamhouse_metadata::{now_ms, CommittedOffset};

use crate::admin_api::Admin;
use crate::api_error::ApiError;
use crate::groups::{GroupError, GroupState, PartitionLag};

/// A group in a listing.
#[derive(Debug, Clone, Serialize)]
pub struct GroupSummary {
    /// Group id.
    pub group_id: String,
    /// Kafka group state (`Empty`, `Stable`, ...).
    pub state: String,
    /// Protocol type of its members (`consumer`), empty without members.
    pub protocol_type: String,
    /// Sum of the lag over every partition the group committed an offset for.
    pub total_lag: i64,
}

/// A group with its members and per-partition lag.
#[derive(Debug, Clone, Serialize)]
pub struct GroupDetails {
    /// Group id.
    pub group_id: String,
    /// Kafka group state.
    pub state: String,
    /// Protocol type of its members.
    pub protocol_type: String,
    /// Assignment protocol chosen (while Stable).
    pub protocol: String,
    /// Current members.
    pub members: Vec<GroupMember>,
    /// Committed offsets and lag, by topic and partition.
    pub offsets: Vec<GroupOffset>,
}

/// A member of a group.
#[derive(Debug, Clone, Serialize)]
pub struct GroupMember {
    /// Member id given by the coordinator.
    pub member_id: String,
    /// Static membership id, if any.
    pub group_instance_id: Option<String>,
    /// Client id the member connected with.
    pub client_id: String,
    /// Client address.
    pub client_host: String,
}

/// A group's committed offset in one partition and how far it trails the high watermark.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupOffset {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// Committed offset (next offset to consume).
    pub committed: i64,
    /// The partition's high watermark.
    pub high_watermark: i64,
    /// `high_watermark - committed`, never negative.
    pub lag: i64,
}

impl From<PartitionLag> for GroupOffset {
    fn from(l: PartitionLag) -> Self {
        Self {
            topic: l.topic,
            partition: l.partition,
            committed: l.committed,
            high_watermark: l.high_watermark,
            lag: l.lag,
        }
    }
}

/// An offset to set for a group.
#[derive(Debug, Clone)]
pub struct OffsetReset {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// New committed offset.
    pub offset: i64,
}

impl From<GroupError> for ApiError {
    fn from(e: GroupError) -> Self {
        match e {
            GroupError::GroupNotFound(g) => Self::UnknownGroup(g),
            GroupError::NotCoordinator(g) => Self::NotCoordinator {
                message: format!("this agent does not coordinate group '{g}' (any more); retry"),
                coordinator_http: None,
            },
            GroupError::Metadata(m) => m.into(),
            e @ GroupError::InvalidGroupId => Self::Invalid(e.to_string()),
            e => Self::GroupConflict(e.to_string()),
        }
    }
}

impl Admin<'_> {
    /// Every group (live or known by committed offsets), ordered by id.
    pub async fn groups(&self) -> Result<Vec<GroupSummary>, ApiError> {
        let listings = self.broker().groups().list_groups().await?;
        let mut out = Vec::with_capacity(listings.len());
        for g in listings {
            let lag = self.broker().groups().lag(&g.group_id).await?;
            out.push(GroupSummary {
                total_lag: lag.iter().map(|l| l.lag).sum(),
                group_id: g.group_id,
                state: g.state.name().to_string(),
                protocol_type: g.protocol_type,
            });
        }
        Ok(out)
    }

    /// A group's members and lag. Fails with [`ApiError::UnknownGroup`] for a group with
    /// neither members nor offsets.
    pub async fn describe_group(&self, group_id: &str) -> Result<GroupDetails, ApiError> {
        let d = self.broker().groups().describe_group(group_id).await?;
        if d.state == GroupState::Dead {
            return Err(ApiError::UnknownGroup(group_id.to_string()));
        }
        Ok(GroupDetails {
            group_id: group_id.to_string(),
            state: d.state.name().to_string(),
            protocol_type: d.protocol_type,
            protocol: d.protocol,
            members: d
                .members
                .into_iter()
                .map(|m| GroupMember {
                    member_id: m.member_id,
                    group_instance_id: m.group_instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                })
                .collect(),
            offsets: self.group_lag(group_id).await?,
        })
    }

    /// Lag of every partition the group committed an offset for; unknown groups fail with
    /// [`ApiError::UnknownGroup`].
    pub async fn group_lag(&self, group_id: &str) -> Result<Vec<GroupOffset>, ApiError> {
        let lag = self.broker().groups().lag(group_id).await?;
        if lag.is_empty() && self.is_unknown(group_id).await? {
            return Err(ApiError::UnknownGroup(group_id.to_string()));
        }
        Ok(lag.into_iter().map(GroupOffset::from).collect())
    }

    /// Deletes a group without members, with its committed offsets, as its coordinator (under
    /// its lease); [`ApiError::NotCoordinator`] on any other agent.
    pub async fn delete_group(&self, group_id: &str) -> Result<(), ApiError> {
        self.coordinate(group_id).await?;
        Ok(self.broker().groups().delete_group(group_id).await?)
    }

    /// Takes or keeps the group's coordinator lease for a change made here; where another
    /// agent coordinates the group, [`ApiError::NotCoordinator`] names it.
    async fn coordinate(&self, group_id: &str) -> Result<(), ApiError> {
        match self.broker().claim_group(group_id).await {
            Err(GroupError::NotCoordinator(_)) => {
                let view = self.broker().membership.view();
                let coordinator = view.coordinator(group_id);
                let at = coordinator.map_or_else(
                    || "no live agent".to_owned(),
                    |a| format!("agent {} (HTTP {})", a.node_id, a.http_addr),
                );
                Err(ApiError::NotCoordinator {
                    message: format!(
                        "group '{group_id}' is coordinated by {at}; send the request there"
                    ),
                    coordinator_http: coordinator
                        .map(|a| a.http_addr.clone())
                        .filter(|at| !at.is_empty()),
                })
            }
            claimed => Ok(claimed?),
        }
    }

    /// Sets committed offsets of a group that has no members (as Kafka's
    /// `kafka-consumer-groups --reset-offsets` requires), creating the group if needed, as its
    /// coordinator (under its lease); [`ApiError::NotCoordinator`] on any other agent.
    pub async fn reset_offsets(
        &self,
        group_id: &str,
        offsets: &[OffsetReset],
    ) -> Result<Vec<GroupOffset>, ApiError> {
        if group_id.is_empty() || offsets.is_empty() {
            return Err(ApiError::Invalid(
                "a group id and offsets are required".into(),
            ));
        }
        self.coordinate(group_id).await?;
        let state = self.broker().groups().describe_group(group_id).await?.state;
        if !matches!(state, GroupState::Empty | GroupState::Dead) {
            return Err(ApiError::GroupConflict(format!(
                "group {group_id} is {}; stop its consumers before resetting offsets",
                state.name()
            )));
        }
        let committed_at_ms = now_ms();
        let mut commits = Vec::with_capacity(offsets.len());
        for o in offsets {
            self.check_offset(o).await?;
            commits.push(CommittedOffset {
                topic: o.topic.clone(),
                partition: o.partition,
                offset: o.offset,
                leader_epoch: -1,
                metadata: None,
                committed_at_ms,
            });
        }
        self.broker()
            .groups()
            .reset_offsets(group_id, &commits)
            .await?;
        self.group_lag(group_id).await
    }

    async fn check_offset(&self, o: &OffsetReset) -> Result<(), ApiError> {
        // Uncached: the partition's leader may be another agent, whose commits this agent's
        // cache does not see (a reset to the latest offset was refused against a cached high
        // watermark of 0 while the leader had 15).
        let state = self
            .broker()
            .metadata
            .get_partition_uncached(&o.topic, o.partition)
            .await?;
        if o.offset < 0 || o.offset > state.high_watermark {
            return Err(ApiError::Invalid(format!(
                "offset {} of {}/{} is outside 0..={}",
                o.offset, o.topic, o.partition, state.high_watermark
            )));
        }
        Ok(())
    }

    async fn is_unknown(&self, group_id: &str) -> Result<bool, ApiError> {
        let d = self.broker().groups().describe_group(group_id).await?;
        Ok(d.state == GroupState::Dead)
    }
}
