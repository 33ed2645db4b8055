//! Group coordinator leases: taken on demand, renewed on the agent's lease schedule, handed
//! off when the group belongs elsewhere, and the generations handed out under them.

use std::collections::HashMap;

use futures::future::join_all;
use streamhouse_metadata::{GroupLease, LeaseFence, MetadataError};
use tokio::time::Instant;
use tracing::{info, warn};

use super::{
    not_coordinator, validate_group_id, ConsumerGroup, Coordinated, Group, GroupCoordinator,
    GroupError, MembershipStore,
};

impl GroupCoordinator {
    /// Makes sure this agent holds `group_id`'s coordinator lease, taking it when it is free
    /// or expired and `may_take` (the shared assignment names this agent); fails with
    /// NOT_COORDINATOR otherwise. A lease already held is kept however the assignment
    /// changed, until the controller hands the group off.
    pub(crate) async fn claim(&self, group_id: &str, may_take: bool) -> Result<(), GroupError> {
        validate_group_id(group_id)?;
        let sent = Instant::now();
        let held = self.with_coordinated(group_id, |c| c.valid_until > sent);
        if held == Some(true) {
            return Ok(());
        }
        if !may_take {
            return Err(not_coordinator(group_id));
        }
        let ttl_ms = self.lease_ttl.as_millis() as i64;
        let lease = self
            .metadata
            .acquire_group_lease(group_id, &self.agent_id, ttl_ms)
            .await?
            .ok_or_else(|| not_coordinator(group_id))?;
        let serving = self.with_coordinated(group_id, |c| c.fence == lease.fence());
        let restored = match serving {
            Some(true) => None,
            _ => self.restore_membership(&lease).await,
        };
        self.install(lease, sent + self.lease_ttl, restored);
        Ok(())
    }

    /// Whether this agent holds `group_id`'s lease (as far as it knows, no I/O).
    pub(crate) fn holds(&self, group_id: &str) -> bool {
        let now = Instant::now();
        self.with_coordinated(group_id, |c| c.valid_until > now) == Some(true)
    }

    /// Serves `lease`, valid until `valid_until`: the group's state under an earlier epoch (a
    /// lease lost and taken again) is stale and replaced by the `restored` stable group (the
    /// membership stored at the recorded generation) or else by an empty group that continues
    /// after the recorded generation.
    fn install(&self, lease: GroupLease, valid_until: Instant, restored: Option<Group>) {
        let delay = self.initial_rebalance_delay;
        self.with_groups(|groups| match groups.get_mut(&lease.group_id) {
            Some(c) if c.fence == lease.fence() => c.valid_until = c.valid_until.max(valid_until),
            _ => {
                let (id, epoch, generation) = (&lease.group_id, lease.epoch, lease.generation);
                let group = match restored {
                    Some(group) => {
                        let members = group.member_count();
                        info!(group = %id, epoch, generation, members, "stable group restored");
                        group
                    }
                    None => {
                        info!(group = %id, epoch, generation, "coordinating group");
                        Group::new(id, delay, generation)
                    }
                };
                let coordinated = Coordinated {
                    fence: lease.fence(),
                    valid_until,
                    recorded_generation: lease.generation,
                    membership: MembershipStore::stored(&group),
                    group,
                    consumer: ConsumerGroup::new(
                        &lease.group_id,
                        lease.generation,
                        self.consumer_timeouts.session_timeout,
                    ),
                };
                if let Some(mut stale) = groups.insert(lease.group_id.clone(), coordinated) {
                    stale.group.unload();
                }
            }
        });
    }

    /// Records `generation` of `group_id` under `fence` (the lease it was made under) before
    /// any member learns it, so a later coordinator starts after it. A lease lost meanwhile
    /// unloads the group: the member goes to the new coordinator.
    pub(super) async fn record_generation(
        &self,
        group_id: &str,
        fence: &LeaseFence,
        generation: i32,
    ) -> Result<(), GroupError> {
        let needed = self.with_coordinated(group_id, |c| {
            (c.fence == *fence).then_some(c.recorded_generation < generation)
        });
        match needed.flatten() {
            None => return Err(not_coordinator(group_id)),
            Some(false) => return Ok(()),
            Some(true) => {}
        }
        match self
            .metadata
            .record_group_generation(group_id, fence, generation)
            .await
        {
            Ok(()) => {
                self.with_coordinated(group_id, |c| {
                    if c.fence == *fence {
                        c.recorded_generation = c.recorded_generation.max(generation);
                    }
                });
                Ok(())
            }
            Err(e) => Err(self.lease_failure(group_id, fence, e)),
        }
    }

    /// The error for a write under `fence` the store refused: a fenced one means another agent
    /// coordinates the group now, so it is unloaded here; any other failure leaves the lease
    /// as it is and the client retries.
    pub(super) fn lease_failure(
        &self,
        group_id: &str,
        fence: &LeaseFence,
        e: MetadataError,
    ) -> GroupError {
        match e {
            MetadataError::GroupFenced { .. } => {
                warn!(group = %group_id, epoch = fence.epoch, "group lease lost; unloading");
                self.unload_if(group_id, |c| c.fence == *fence);
                not_coordinator(group_id)
            }
            e => GroupError::CoordinatorNotAvailable {
                group: format!("{group_id} ({e})"),
            },
        }
    }

    /// Takes the groups `pred` selects out of this coordinator, failing their waiting members
    /// with NOT_COORDINATOR; returns their fences.
    fn unload_if(&self, group_id: &str, pred: impl Fn(&Coordinated) -> bool) -> Option<LeaseFence> {
        self.with_groups(|groups| {
            let selected = groups.get(group_id).is_some_and(pred);
            let mut c = selected.then(|| groups.remove(group_id)).flatten()?;
            c.group.unload();
            Some(c.fence)
        })
    }

    /// Renews, in one metadata statement, the leases that are due (a third of the TTL has
    /// passed); idle groups (no members, nobody joining) are let go instead. A lease the
    /// renewal leaves out stays served while it is valid and is retried next time (its row
    /// may just have been locked); once it may have lapsed, the sweeper unloads it.
    pub(crate) async fn renew_due_leases(&self) {
        let due_by = Instant::now() + self.lease_ttl * 2 / 3;
        let mut idle = Vec::new();
        let due: Vec<(String, i64)> = self.with_groups(|groups| {
            groups.retain(|id, c| {
                let keep = c.valid_until > due_by || !c.is_idle();
                if !keep {
                    idle.push((id.clone(), c.fence.clone()));
                }
                keep
            });
            groups
                .iter()
                .filter(|(_, c)| c.valid_until <= due_by)
                .map(|(id, c)| (id.clone(), c.fence.epoch))
                .collect()
        });
        self.release(idle).await;
        if due.is_empty() {
            return;
        }
        let sent = Instant::now();
        let ttl_ms = self.lease_ttl.as_millis() as i64;
        let renewed = match self
            .metadata
            .renew_group_leases(&self.agent_id, &due, ttl_ms)
            .await
        {
            Ok(renewed) => renewed,
            Err(e) => {
                warn!(leases = due.len(), "group lease renewal failed: {e}");
                return;
            }
        };
        let epochs: HashMap<String, i64> =
            renewed.into_iter().map(|l| (l.group_id, l.epoch)).collect();
        self.with_groups(|groups| {
            for (id, c) in groups.iter_mut() {
                if epochs.get(id) == Some(&c.fence.epoch) {
                    c.valid_until = c.valid_until.max(sent + self.lease_ttl);
                }
            }
        });
    }

    /// Hands off every group `keep` rejects (the assignment names another agent): unloads it
    /// and releases its lease, so the new coordinator can take it at once.
    pub(crate) async fn hand_off(&self, keep: impl Fn(&str) -> bool) {
        let leaving: Vec<String> =
            self.with_groups(|groups| groups.keys().filter(|id| !keep(id)).cloned().collect());
        let fences = leaving.into_iter().filter_map(|id| {
            info!(group = %id, "group moves to another agent; handing off");
            self.unload_if(&id, |_| true).map(|fence| (id, fence))
        });
        let fences: Vec<_> = fences.collect();
        self.release(fences).await;
    }

    /// Releases the leases of groups no longer served here (all at once); a failure only
    /// means the lease expires instead.
    async fn release(&self, leases: Vec<(String, LeaseFence)>) {
        let releases = leases.iter().map(|(id, fence)| async move {
            if let Err(e) = self.metadata.release_group_lease(id, fence).await {
                warn!(group = %id, "releasing the group lease failed: {e}");
            }
        });
        join_all(releases).await;
    }
}
