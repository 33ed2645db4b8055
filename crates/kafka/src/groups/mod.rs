//! The group coordinator: classic-protocol consumer groups (JoinGroup/SyncGroup/Heartbeat/
//! LeaveGroup), consumer-protocol groups (KIP-848's ConsumerGroupHeartbeat, with server-side
//! assignors) and their committed offsets. A group id is served by one protocol at a time:
//! while members of one protocol are in it, members of the other are refused.
//!
//! An agent coordinates a group only while it holds the group's coordinator lease in the
//! metadata store (`lease.rs`), taken on demand by the agent the shared assignment names and
//! fenced like a partition's: offset commits and new generations are written only under the
//! lease's epoch, so a former coordinator can neither commit nor hand out a generation a later
//! one also hands out. Membership lives in memory with the lease; a stable classic group's is
//! also stored under it (`snapshot.rs`), so the next coordinator serves the group as it stood.
//! Otherwise members rejoin at the new coordinator, whose generations continue after the
//! recorded one. Offsets live in the metadata store. The per-group state machine is in
//! `group.rs` and knows nothing of the wire format; `handlers/groups.rs` and
//! `handlers/offsets.rs` translate requests into calls on the coordinator. A background
//! sweeper applies session and rebalance timeouts and drops groups whose lease may have lapsed.

mod admin;
mod assignor;
mod consumer;
mod consumer_api;
mod error;
mod group;
mod lease;
mod member;
mod offsets;
mod snapshot;
mod types;

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use streamhouse_metadata::{LeaseFence, MetadataStore};

pub use admin::PartitionLag;
use consumer::ConsumerGroup;
pub(crate) use consumer::{ConsumerHeartbeat, ConsumerTimeouts, TopicImage};
pub(crate) use consumer_api::ConsumerGroupDescription;
pub(crate) use error::GroupError;
use group::Group;
pub(crate) use member::{MemberInfo, Protocol};
pub(crate) use offsets::{Committer, OffsetCommit, PartitionOffset, TopicPartitions};
use snapshot::MembershipStore;
pub(crate) use types::{
    GroupDescription, GroupState, JoinRequest, JoinResponse, Pending, SyncRequest, SyncResponse,
};

/// The outcome of a JoinGroup.
pub(crate) type JoinResult = Result<JoinResponse, GroupError>;
/// The outcome of a SyncGroup.
pub(crate) type SyncResult = Result<SyncResponse, GroupError>;

/// How often timeouts are checked; bounds how late a session expiry or phase end is noticed.
const SWEEP_INTERVAL: Duration = Duration::from_millis(50);

/// A group this agent coordinates: its lease and its membership.
struct Coordinated {
    /// The lease this agent holds the group under.
    fence: LeaseFence,
    /// Until when the lease is surely held: its TTL from the moment the request that took or
    /// last renewed it was sent (the database counts from a later moment).
    valid_until: tokio::time::Instant,
    /// The highest generation recorded in the metadata store under this lease.
    recorded_generation: i32,
    /// The classic-protocol membership.
    group: Group,
    /// The consumer-protocol (KIP-848) membership.
    consumer: ConsumerGroup,
    /// Where storing the classic membership stands (`snapshot.rs`).
    membership: MembershipStore,
}

impl Coordinated {
    /// No members of either protocol, nobody joining: the lease may be let go.
    fn is_idle(&self) -> bool {
        self.group.is_idle() && self.consumer.is_empty()
    }

    /// Applies both protocols' timeouts.
    fn tick(&mut self, now: Instant) {
        self.group.tick(now);
        self.consumer.tick(now);
    }
}

/// Coordinates the groups whose leases this agent holds.
pub(crate) struct GroupCoordinator {
    /// This coordinator, for the background writes it starts.
    me: Weak<GroupCoordinator>,
    groups: Mutex<HashMap<String, Coordinated>>,
    metadata: Arc<dyn MetadataStore>,
    /// The holder named in this agent's group leases.
    agent_id: String,
    lease_ttl: Duration,
    initial_rebalance_delay: Duration,
    consumer_timeouts: ConsumerTimeouts,
}

impl GroupCoordinator {
    /// Creates the coordinator of agent `agent_id`, whose group leases last `lease_ttl`; its
    /// timeout sweeper ([`run_sweeper`]) is the caller's to run.
    pub(crate) fn new(
        metadata: Arc<dyn MetadataStore>,
        agent_id: &str,
        lease_ttl: Duration,
        initial_rebalance_delay: Duration,
        consumer_timeouts: ConsumerTimeouts,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            groups: Mutex::new(HashMap::new()),
            metadata,
            agent_id: agent_id.to_string(),
            lease_ttl,
            initial_rebalance_delay,
            consumer_timeouts,
        })
    }

    /// Joins (or rejoins) a member; completes when the group's join phase does, once the
    /// generation it starts is recorded under this agent's lease.
    pub(crate) async fn join(&self, group_id: &str, req: JoinRequest) -> JoinResult {
        validate_group_id(group_id)?;
        let joining = self.with_coordinated(group_id, |c| {
            if !c.consumer.is_empty() {
                return Err(inconsistent_protocol(group_id));
            }
            Ok((c.fence.clone(), c.group.join(req, Instant::now())))
        });
        let Some(joining) = joining else {
            return Err(GroupError::NotCoordinator(group_id.to_string()));
        };
        let (fence, pending) = joining?;
        self.store_memberships([group_id]);
        let joined = resolve(group_id, pending).await?;
        self.record_generation(group_id, &fence, joined.generation_id)
            .await?;
        Ok(joined)
    }

    /// Syncs a member; the leader's sync delivers everyone's assignment.
    pub(crate) async fn sync(&self, group_id: &str, req: SyncRequest) -> SyncResult {
        validate_group_id(group_id)?;
        let pending = self
            .with_group(group_id, |g| g.sync(req, Instant::now()))
            .unwrap_or_else(|| Pending::Ready(Err(not_coordinator(group_id))));
        self.store_memberships([group_id]);
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
        .unwrap_or_else(|| Err(not_coordinator(group_id)))
    }

    /// Removes members `(member id, group instance id)`, with one result per member.
    pub(crate) fn leave(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        validate_group_id(group_id)?;
        let now = Instant::now();
        let left = self
            .with_group(group_id, |g| {
                members
                    .iter()
                    .map(|(id, instance)| g.leave(id, instance.as_deref(), now))
                    .collect()
            })
            .ok_or_else(|| not_coordinator(group_id));
        self.store_memberships([group_id]);
        left
    }

    fn with_groups<T>(&self, f: impl FnOnce(&mut HashMap<String, Coordinated>) -> T) -> T {
        f(&mut self.groups.lock())
    }

    fn with_coordinated<T>(
        &self,
        group_id: &str,
        f: impl FnOnce(&mut Coordinated) -> T,
    ) -> Option<T> {
        self.with_groups(|groups| groups.get_mut(group_id).map(f))
    }

    fn with_group<T>(&self, group_id: &str, f: impl FnOnce(&mut Group) -> T) -> Option<T> {
        self.with_coordinated(group_id, |c| f(&mut c.group))
    }

    /// Applies timeouts, and drops the groups whose lease may have lapsed (it could not be
    /// renewed in time): another agent may coordinate them by now.
    fn sweep(&self) {
        let now = Instant::now();
        let lease_now = tokio::time::Instant::now();
        self.with_groups(|groups| {
            groups.values_mut().for_each(|c| c.tick(now));
            groups.retain(|id, c| {
                let valid = c.valid_until > lease_now;
                if !valid {
                    tracing::warn!(group = %id, "group lease not renewed in time; unloading");
                    c.group.unload();
                }
                valid
            });
        });
        self.store_all_memberships();
    }
}

fn validate_group_id(group_id: &str) -> Result<(), GroupError> {
    if group_id.is_empty() {
        Err(GroupError::InvalidGroupId)
    } else {
        Ok(())
    }
}

fn inconsistent_protocol(group: &str) -> GroupError {
    GroupError::InconsistentProtocol {
        group: group.to_string(),
    }
}

fn not_coordinator(group: &str) -> GroupError {
    GroupError::NotCoordinator(group.to_string())
}

/// Waits for a parked request; a waiter dropped unanswered means the group was unloaded.
async fn resolve<T>(group_id: &str, pending: Pending<T>) -> Result<T, GroupError> {
    match pending {
        Pending::Ready(result) => result,
        Pending::Waiting(rx) => rx.await.unwrap_or_else(|_| Err(not_coordinator(group_id))),
    }
}

/// Applies the coordinator's timeouts every [`SWEEP_INTERVAL`] until it is dropped.
pub(crate) async fn run_sweeper(coordinator: Weak<GroupCoordinator>) {
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
