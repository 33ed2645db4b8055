//! Many agents, one metadata store: the controller that keeps this agent's share of the
//! cluster, without a consensus protocol of our own. The metadata store is the source of truth.
//!
//! - Every agent registers itself and heartbeats ([`run_heartbeat`]); an agent is *live* while
//!   its last heartbeat is within the lease TTL.
//! - Every agent computes the same [`crate::membership::Assignment`] from the same live-agent
//!   list: no messages, no election. Agents sharing a node id count once.
//! - A per-agent controller ([`run_controller`]) reconciles what it holds with what it should
//!   hold: it leases its desired partitions (which succeeds only once the previous owner's lease
//!   was released or expired) and hands off held partitions that are no longer its own (flush,
//!   then release). Partition leases with fenced commits make any disagreement during a change
//!   safe: at most one writer can commit at a time.
//!
//! The [`Controller`] works through the services' APIs (partitions, groups, membership); the
//! loops hold it weakly, so they end when the agent is dropped.

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use streamhouse_metadata::{now_ms, MetadataError, MetadataStore};
use tracing::{debug, info, warn};

use crate::config::BrokerConfig;
use crate::groups::GroupCoordinator;
use crate::membership::{ClusterView, Membership};
use crate::partitions::{HeldPartition, Partitions};

/// Longest pause between two reconciliations of held and desired partitions.
const CONTROLLER_INTERVAL: Duration = Duration::from_secs(1);

/// Most leases a controller takes in one metadata transaction: small enough that one statement
/// stays short whatever the partition count.
const ACQUIRE_BATCH: usize = 256;

/// What the heartbeat, the controller and lease renewal work on: the services whose state
/// they reconcile with the metadata store.
pub(crate) struct Controller {
    config: BrokerConfig,
    metadata: Arc<dyn MetadataStore>,
    membership: Arc<Membership>,
    partitions: Arc<Partitions>,
    groups: Arc<GroupCoordinator>,
}

impl Controller {
    /// The controller of the agent whose services these are.
    pub(crate) fn new(
        config: BrokerConfig,
        metadata: Arc<dyn MetadataStore>,
        membership: Arc<Membership>,
        partitions: Arc<Partitions>,
        groups: Arc<GroupCoordinator>,
    ) -> Self {
        Self {
            config,
            metadata,
            membership,
            partitions,
            groups,
        }
    }
}

/// Registers the agent, then heartbeats every `heartbeat_interval`, re-registering when its row
/// vanished (deleted by an operator, or the database was restored).
pub(crate) async fn run_heartbeat(controller: Weak<Controller>) {
    let mut registered = false;
    loop {
        let Some(b) = controller.upgrade() else {
            return;
        };
        if b.membership.is_stopping() {
            return;
        }
        let now = now_ms();
        let result = if registered {
            b.metadata.heartbeat(b.membership.agent_id(), now).await
        } else {
            let row = b.membership.registration(now);
            b.metadata.register_agent(&row).await.map(|()| true)
        };
        match result {
            Ok(ok) => registered = ok,
            Err(e) => warn!("agent heartbeat failed: {e}"),
        }
        let period = b.config.heartbeat_interval;
        drop(b);
        tokio::time::sleep(period).await;
    }
}

/// Renews this agent's partition and group leases as they come due, on a schedule of its own:
/// no reconcile round, however long its store calls or hand-offs take, delays a renewal.
pub(crate) async fn run_lease_renewal(controller: Weak<Controller>) {
    let Some(period) = controller
        .upgrade()
        .map(|b| (b.config.lease_ttl / 6).min(CONTROLLER_INTERVAL))
    else {
        return;
    };
    loop {
        {
            let Some(b) = controller.upgrade() else {
                return;
            };
            if b.membership.is_stopping() {
                return;
            }
            let held = b.partitions.held_partitions();
            futures::future::join(
                b.partitions.renew_due_leases(&held),
                b.groups.renew_due_leases(),
            )
            .await;
        }
        // Without a reference to the controller, as in `run_controller`.
        tokio::time::sleep(period).await;
    }
}

/// Reconciles held with desired partitions and groups every [`CONTROLLER_INTERVAL`] (sooner
/// when woken, and at least every quarter of the lease TTL).
pub(crate) async fn run_controller(controller: Weak<Controller>) {
    let Some((wake, period)) = controller.upgrade().map(|b| {
        let period = CONTROLLER_INTERVAL.min(b.config.lease_ttl / 4);
        (b.membership.wake_signal(), period)
    }) else {
        return;
    };
    loop {
        {
            let Some(b) = controller.upgrade() else {
                return;
            };
            if b.membership.is_stopping() {
                return;
            }
            if let Err(e) = reconcile(&b).await {
                warn!("partition controller: {e}");
            }
        }
        // Waiting without a reference to the controller lets a dropped agent end this task (and
        // stop renewing its leases, like a crashed agent).
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = wake.notified() => {}
        }
    }
}

/// One reconciliation: hand off the groups and partitions held that belong elsewhere now (in
/// parallel, waiting for them at most a third of the lease TTL; the rest finish in the
/// background), then lease what should be held, [`ACQUIRE_BATCH`] partitions per transaction.
/// Taking over stops once a third of the lease TTL has passed (the next round goes on).
/// Renewal runs on its own schedule ([`run_lease_renewal`]).
async fn reconcile(b: &Controller) -> Result<(), MetadataError> {
    let started = tokio::time::Instant::now();
    let budget = b.config.lease_ttl / 3;
    let view = b
        .membership
        .refresh(b.metadata.as_ref(), b.config.lease_ttl)
        .await?;
    let me = b.membership.agent_id();
    let groups = b.groups.hand_off(|g| {
        view.assignment
            .coordinator(g)
            .is_some_and(|a| a.agent_id == me)
    });
    let mine = own_partitions(b, &view).await?;
    let is_mine = |held: &Arc<HeldPartition>| mine.contains(&(held.topic.clone(), held.partition));
    let hand_off = b
        .partitions
        .held_partitions()
        .into_iter()
        .filter(|h| !is_mine(h));
    let closes: Vec<_> = hand_off
        .map(|held| {
            let partitions = b.partitions.clone();
            let (topic, partition) = (held.topic.clone(), held.partition);
            info!(%topic, partition, "partition moves to another agent; handing off");
            tokio::spawn(async move { partitions.close_partition(&held, true).await })
        })
        .collect();
    let hand_offs = futures::future::join(groups, futures::future::join_all(closes));
    if tokio::time::timeout(budget, hand_offs).await.is_err() {
        warn!("hand-offs take longer than {budget:?}; they go on in the background");
    }
    let wanted: Vec<(String, u32)> = mine
        .iter()
        .filter(|(topic, partition)| {
            !b.partitions.is_held(topic, *partition) && b.partitions.may_lease(topic, *partition)
        })
        .cloned()
        .collect();
    for (done, batch) in (0..)
        .step_by(ACQUIRE_BATCH)
        .zip(wanted.chunks(ACQUIRE_BATCH))
    {
        if started.elapsed() >= budget || b.membership.is_stopping() {
            debug!(
                left = wanted.len() - done,
                "partition controller: taking over the rest next round"
            );
            break;
        }
        let ttl = b.config.lease_ttl_ms();
        let sent = tokio::time::Instant::now();
        let leases = b
            .metadata
            .acquire_leases(b.membership.agent_id(), batch, ttl)
            .await?;
        // Partitions left out are usually still held by their previous owner, which has not
        // released them yet; retried next round.
        // Recording a lease just taken builds nothing (see `HeldPartition`): no I/O.
        for lease in leases {
            let (topic, partition) = (lease.topic.clone(), lease.partition);
            match b.partitions.hold_leased((lease, sent)).await {
                Ok(()) => debug!(%topic, partition, "took over partition"),
                Err(e) => debug!(%topic, partition, "cannot hold partition yet: {e}"),
            }
        }
    }
    debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        agents = view.assignment.agents().len(),
        "partition controller round done"
    );
    Ok(())
}

/// Every partition this agent should own, per the view.
async fn own_partitions(
    b: &Controller,
    view: &ClusterView,
) -> Result<HashSet<(String, u32)>, MetadataError> {
    let me = b.membership.agent_id();
    let mut mine = HashSet::new();
    for topic in b.metadata.list_topics().await? {
        let owners = view.assignment.topic_owners(&topic.name, topic.partitions);
        for (p, owner) in (0..).zip(owners) {
            if owner.agent_id == me {
                mine.insert((topic.name.clone(), p));
            }
        }
    }
    Ok(mine)
}
