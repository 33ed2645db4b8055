//! The group coordinator: classic-protocol consumer groups (JoinGroup/SyncGroup/Heartbeat/
//! LeaveGroup) and their committed offsets.
//!
//! Membership lives in memory in this agent ([`GroupCoordinator`]); offsets live in the metadata
//! store, so they survive restarts while members simply rejoin. The per-group state machine is
//! in `group.rs` and knows nothing of the wire format; `handlers/groups.rs` and
//! `handlers/offsets.rs` translate requests into calls on the coordinator. A background sweeper
//! applies session and rebalance timeouts.

mod admin;
mod error;
mod group;
mod member;
mod offsets;
mod types;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use streamhouse_metadata::MetadataStore;

pub use admin::PartitionLag;
pub(crate) use error::GroupError;
use group::Group;
pub(crate) use member::{MemberInfo, Protocol};
pub(crate) use offsets::{Committer, OffsetCommit, PartitionOffset, TopicPartitions};
pub(crate) use types::{
    GroupDescription, GroupState, JoinRequest, JoinResponse, Pending, SyncRequest, SyncResponse,
};

/// The outcome of a JoinGroup.
pub(crate) type JoinResult = Result<JoinResponse, GroupError>;
/// The outcome of a SyncGroup.
pub(crate) type SyncResult = Result<SyncResponse, GroupError>;

/// How often timeouts are checked; bounds how late a session expiry or phase end is noticed.
const SWEEP_INTERVAL: Duration = Duration::from_millis(50);

/// Coordinates every group this agent serves. One agent coordinates all groups for now; the
/// state sits behind this struct so groups can later move between agents.
pub(crate) struct GroupCoordinator {
    groups: Mutex<HashMap<String, Group>>,
    metadata: Arc<dyn MetadataStore>,
    initial_rebalance_delay: Duration,
}

impl GroupCoordinator {
    /// Creates the coordinator and starts its timeout sweeper (which stops when it is dropped).
    pub(crate) fn start(
        metadata: Arc<dyn MetadataStore>,
        initial_rebalance_delay: Duration,
    ) -> Arc<Self> {
        let coordinator = Arc::new(Self {
            groups: Mutex::new(HashMap::new()),
            metadata,
            initial_rebalance_delay,
        });
        tokio::spawn(run_sweeper(Arc::downgrade(&coordinator)));
        coordinator
    }

    /// Joins (or rejoins) a member; completes when the group's join phase does.
    pub(crate) async fn join(&self, group_id: &str, req: JoinRequest) -> JoinResult {
        validate_group_id(group_id)?;
        let delay = self.initial_rebalance_delay;
        let pending = self.with_groups(|groups| {
            groups
                .entry(group_id.to_string())
                .or_insert_with(|| Group::new(group_id, delay))
                .join(req, Instant::now())
        });
        resolve(group_id, pending).await
    }

    /// Syncs a member; the leader's sync delivers everyone's assignment.
    pub(crate) async fn sync(&self, group_id: &str, req: SyncRequest) -> SyncResult {
        validate_group_id(group_id)?;
        let member = req.member_id.clone();
        let pending = self
            .with_group(group_id, |g| g.sync(req, Instant::now()))
            .unwrap_or_else(|| Pending::Ready(Err(unknown_member(group_id, &member))));
        resolve(group_id, pending).await
    }

    /// Keeps a member's session alive; tells it when it must rejoin.
    pub(crate) fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupError> {
        validate_group_id(group_id)?;
        self.with_group(group_id, |g| {
            g.heartbeat(member_id, instance, generation, Instant::now())
        })
        .unwrap_or_else(|| Err(unknown_member(group_id, member_id)))
    }

    /// Removes members `(member id, group instance id)`, with one result per member.
    pub(crate) fn leave(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        validate_group_id(group_id)?;
        let now = Instant::now();
        let results = self.with_group(group_id, |g| {
            members
                .iter()
                .map(|(id, instance)| g.leave(id, instance.as_deref(), now))
                .collect()
        });
        Ok(results.unwrap_or_else(|| {
            members
                .iter()
                .map(|(id, _)| Err(unknown_member(group_id, id)))
                .collect()
        }))
    }

    fn with_groups<T>(&self, f: impl FnOnce(&mut HashMap<String, Group>) -> T) -> T {
        f(&mut self.groups.lock().expect("group map poisoned"))
    }

    fn with_group<T>(&self, group_id: &str, f: impl FnOnce(&mut Group) -> T) -> Option<T> {
        self.with_groups(|groups| groups.get_mut(group_id).map(f))
    }

    /// Applies timeouts, then forgets groups left without members: their offsets (if any)
    /// keep them listed as Empty, and nothing else about them is worth keeping.
    fn sweep(&self) {
        let now = Instant::now();
        self.with_groups(|groups| {
            groups.values_mut().for_each(|g| g.tick(now));
            groups.retain(|_, g| !g.is_idle());
        });
    }
}

fn validate_group_id(group_id: &str) -> Result<(), GroupError> {
    if group_id.is_empty() {
        Err(GroupError::InvalidGroupId)
    } else {
        Ok(())
    }
}

fn unknown_member(group: &str, member: &str) -> GroupError {
    GroupError::UnknownMember {
        group: group.to_string(),
        member: member.to_string(),
    }
}

/// Waits for a parked request; a waiter dropped unanswered means the group went away.
async fn resolve<T>(group_id: &str, pending: Pending<T>) -> Result<T, GroupError> {
    match pending {
        Pending::Ready(result) => result,
        Pending::Waiting(rx) => rx.await.unwrap_or_else(|_| {
            Err(GroupError::CoordinatorNotAvailable {
                group: group_id.to_string(),
            })
        }),
    }
}

async fn run_sweeper(coordinator: Weak<GroupCoordinator>) {
    let mut interval = tokio::time::interval(SWEEP_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(c) = coordinator.upgrade() else {
            return;
        };
        c.sweep();
    }
}
