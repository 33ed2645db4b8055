//! Many agents, one metadata store: who should own which partition and coordinate which group,
//! without a consensus protocol of our own. The metadata store is the source of truth.
//!
//! - Every agent registers itself and heartbeats ([`run_heartbeat`]); an agent is *live* while
//!   its last heartbeat is within the lease TTL.
//! - Every agent computes the same [`Assignment`] from the same live-agent list: no messages,
//!   no election. Agents sharing a node id count once.
//! - A per-agent controller ([`run_controller`]) reconciles what it holds with what it should
//!   hold: it leases its desired partitions (which succeeds only once the previous owner's lease
//!   was released or expired) and hands off held partitions that are no longer its own (flush,
//!   then release). Partition leases with fenced commits make any disagreement during a change
//!   safe: at most one writer can commit at a time.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use futures::StreamExt;
use streamhouse_metadata::{now_ms, AgentInfo, MetadataError, PartitionLease, Topic};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::broker::{Broker, PartitionLog};

/// Longest pause between two reconciliations of held and desired partitions.
const CONTROLLER_INTERVAL: Duration = Duration::from_secs(1);

/// Partitions a controller opens at once.
const CONCURRENT_OPENS: usize = 16;

/// Most leases a controller takes in one metadata transaction before opening their partitions:
/// small enough that they are all open well before they are due for renewal.
const ACQUIRE_BATCH: usize = 256;

/// Where partitions and group coordinators should live, given the live agents.
///
/// Rendezvous hashing with capacities: each partition ranks the agents by a hash of (topic,
/// partition, node id), and partitions, in order, go to their best-ranked agent that still has
/// room for its even share of the topic (`floor` or `floor + 1` of `partitions / agents`). So
/// every topic spreads evenly, and a membership change moves few partitions besides those of
/// the agent that left or the share the new agent takes (`partition mod agents` would move most
/// of them). A group's coordinator is its best-ranked agent. The hashes are fixed (FNV-1a, then
/// a 64-bit finalizer), so every agent, whatever its build, computes the same assignment.
#[derive(Debug, Clone)]
pub struct Assignment {
    agents: Vec<AgentInfo>,
}

impl Assignment {
    /// The assignment over `agents` (in any order). Several agents with one node id (a restarted
    /// agent whose previous incarnation has not timed out yet) count once, as the most recently
    /// started of them.
    pub fn new(agents: impl IntoIterator<Item = AgentInfo>) -> Self {
        let mut agents: Vec<AgentInfo> = agents.into_iter().collect();
        agents.sort_by(|a, b| {
            (a.node_id, b.started_at_ms, &a.agent_id).cmp(&(
                b.node_id,
                a.started_at_ms,
                &b.agent_id,
            ))
        });
        agents.dedup_by_key(|a| a.node_id);
        Self { agents }
    }

    /// The agents partitions are spread over, sorted by node id.
    pub fn agents(&self) -> &[AgentInfo] {
        &self.agents
    }

    /// The agent that should own each partition of `topic` (which has `partitions`), by
    /// partition index; empty without agents. Each agent gets `floor` or `floor + 1` of
    /// `partitions / agents`.
    pub fn topic_owners(&self, topic: &str, partitions: u32) -> Vec<&AgentInfo> {
        if self.agents.is_empty() {
            return Vec::new();
        }
        let n = self.agents.len();
        let (floor, extra) = (partitions as usize / n, partitions as usize % n);
        let mut load = vec![0; n];
        // How many agents already hold `floor + 1`; only `extra` of them may.
        let mut full = 0;
        let topic_hash = stable_hash(topic);
        (0..partitions)
            .map(|p| {
                let key = mix(topic_hash ^ mix(u64::from(p)));
                let chosen = self
                    .ranked(key)
                    .find(|&i| load[i] < floor || (load[i] == floor && full < extra))
                    .expect("the capacities add up to the partition count");
                load[chosen] += 1;
                if load[chosen] == floor + 1 {
                    full += 1;
                }
                &self.agents[chosen]
            })
            .collect()
    }

    /// The agent that should coordinate consumer group `group`; `None` without agents.
    pub fn coordinator(&self, group: &str) -> Option<&AgentInfo> {
        self.ranked(stable_hash(group))
            .next()
            .map(|i| &self.agents[i])
    }

    /// Indexes of the agents, best rendezvous score for `key` first.
    fn ranked(&self, key: u64) -> impl Iterator<Item = usize> {
        let mut scored: Vec<(u64, usize)> = self
            .agents
            .iter()
            .enumerate()
            .map(|(i, a)| (mix(key ^ mix(u64::from(a.node_id as u32) ^ NODE_SEED)), i))
            .collect();
        scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        scored.into_iter().map(|(_, i)| i)
    }

    fn node_of(&self, agent_id: &str) -> Option<i32> {
        self.agents
            .iter()
            .find(|a| a.agent_id == agent_id)
            .map(|a| a.node_id)
    }
}

/// Keeps node 0's score from being a plain function of the key.
const NODE_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// FNV-1a: a fixed hash, so every agent places things identically.
fn stable_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The 64-bit finalizer of MurmurHash3: spreads every input bit over the output, which
/// rendezvous scores need (FNV alone barely changes the high bits for similar inputs).
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// What an agent knows of the cluster: the current assignment, the partition leases and the
/// holders of live group coordinator leases, as of the last refresh.
#[derive(Debug, Clone)]
pub(crate) struct ClusterView {
    pub(crate) assignment: Arc<Assignment>,
    leases: Arc<HashMap<(String, u32), PartitionLease>>,
    /// Group id -> agent id of its coordinator lease's holder.
    group_holders: Arc<HashMap<String, String>>,
}

impl ClusterView {
    /// The agent clients should send `group`'s requests to: the live holder of its coordinator
    /// lease, else the agent the assignment names (which takes the lease on the first request).
    pub(crate) fn coordinator(&self, group: &str) -> Option<&AgentInfo> {
        let holder = self.group_holders.get(group).and_then(|holder| {
            let agents = self.assignment.agents();
            agents.iter().find(|a| &a.agent_id == holder)
        });
        holder.or_else(|| self.assignment.coordinator(group))
    }

    /// Per partition of `topic`, the node id of the agent clients should send it to: the live
    /// holder of an unexpired lease, else the desired owner (-1 without agents).
    pub(crate) fn leaders(&self, topic: &Topic, now_ms: i64) -> Vec<i32> {
        let owners = self.assignment.topic_owners(&topic.name, topic.partitions);
        (0..topic.partitions)
            .map(|p| {
                let holder = self
                    .leases
                    .get(&(topic.name.clone(), p))
                    .filter(|l| l.expires_at_ms >= now_ms)
                    .and_then(|l| self.assignment.node_of(&l.agent_id));
                let owner = owners.get(p as usize).map(|a| a.node_id);
                holder.or(owner).unwrap_or(-1)
            })
            .collect()
    }
}

/// This agent's membership: its registration, the latest view, and the controller's wake-up.
pub(crate) struct Membership {
    me: AgentInfo,
    view: RwLock<ClusterView>,
    /// Wakes the controller early (a topic was created or grown).
    wake: Arc<Notify>,
    /// Set by shutdown: the controller stops and nothing new is leased.
    stopping: std::sync::atomic::AtomicBool,
}

impl Membership {
    /// Membership of agent `me`, which until the first refresh sees itself alone (so a single
    /// agent serves at once).
    pub(crate) fn new(me: AgentInfo) -> Self {
        let view = ClusterView {
            assignment: Arc::new(Assignment::new([me.clone()])),
            leases: Arc::default(),
            group_holders: Arc::default(),
        };
        Self {
            me,
            view: RwLock::new(view),
            wake: Arc::default(),
            stopping: Default::default(),
        }
    }

    pub(crate) fn agent_id(&self) -> &str {
        &self.me.agent_id
    }

    /// The latest view (no I/O).
    pub(crate) fn view(&self) -> ClusterView {
        self.view.read().expect("cluster view poisoned").clone()
    }

    /// Whether this agent should own `partition` of `topic` now.
    pub(crate) fn should_own(&self, topic: &Topic, partition: u32) -> bool {
        let view = self.view();
        let owners = view.assignment.topic_owners(&topic.name, topic.partitions);
        owners
            .get(partition as usize)
            .is_some_and(|a| a.agent_id == self.me.agent_id)
    }

    /// Whether the shared assignment names this agent the coordinator of consumer group
    /// `group` now (whether it holds the group's lease is the coordinator's business).
    pub(crate) fn coordinates(&self, group: &str) -> bool {
        let view = self.view();
        view.assignment
            .coordinator(group)
            .is_some_and(|a| a.agent_id == self.me.agent_id)
    }

    /// Re-reads live agents and leases from the metadata store. This agent always counts as live
    /// (it is running), whatever its last recorded heartbeat.
    pub(crate) async fn refresh(&self, b: &Broker) -> Result<ClusterView, MetadataError> {
        let alive_since = now_ms() - b.lease_ttl_ms();
        let mut agents = b.metadata.list_agents(alive_since).await?;
        if !agents.iter().any(|a| a.agent_id == self.me.agent_id) {
            agents.push(self.me.clone());
        }
        let leases = b.metadata.list_leases().await?;
        let group_leases = b.metadata.list_group_leases().await?;
        let assignment = Assignment::new(agents);
        if !assignment
            .agents()
            .iter()
            .any(|a| a.agent_id == self.me.agent_id)
        {
            warn!(
                node_id = self.me.node_id,
                "a later-started agent has this node id; this agent will own no partitions"
            );
        }
        let view = ClusterView {
            assignment: Arc::new(assignment),
            leases: Arc::new(
                leases
                    .into_iter()
                    .map(|l| ((l.topic.clone(), l.partition), l))
                    .collect(),
            ),
            group_holders: Arc::new(
                group_leases
                    .into_iter()
                    .map(|l| (l.group_id, l.agent_id))
                    .collect(),
            ),
        };
        *self.view.write().expect("cluster view poisoned") = view.clone();
        Ok(view)
    }

    /// Asks the controller to reconcile now rather than at its next tick.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Stops leasing; returns whether this call stopped it (false when already stopping).
    pub(crate) fn stop(&self) -> bool {
        !self
            .stopping
            .swap(true, std::sync::atomic::Ordering::AcqRel)
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Acquire)
    }

    /// This agent's registration row, heartbeat set to `now_ms`.
    fn registration(&self, now_ms: i64) -> AgentInfo {
        AgentInfo {
            last_heartbeat_ms: now_ms,
            ..self.me.clone()
        }
    }
}

/// Registers the agent, then heartbeats every `heartbeat_interval`, re-registering when its row
/// vanished (deleted by an operator, or the database was restored).
pub(crate) async fn run_heartbeat(broker: Weak<Broker>) {
    let mut registered = false;
    loop {
        let Some(b) = broker.upgrade() else { return };
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
pub(crate) async fn run_lease_renewal(broker: Weak<Broker>) {
    let Some(period) = broker
        .upgrade()
        .map(|b| (b.config.lease_ttl / 6).min(CONTROLLER_INTERVAL))
    else {
        return;
    };
    loop {
        {
            let Some(b) = broker.upgrade() else { return };
            if b.membership.is_stopping() {
                return;
            }
            let partitions = b.open_partitions();
            futures::future::join(
                b.renew_due_leases(&partitions),
                b.groups().renew_due_leases(),
            )
            .await;
        }
        // Without a reference to the broker, as in `run_controller`.
        tokio::time::sleep(period).await;
    }
}

/// Reconciles held with desired partitions and groups every [`CONTROLLER_INTERVAL`] (sooner
/// when woken, and at least every quarter of the lease TTL).
pub(crate) async fn run_controller(broker: Weak<Broker>) {
    let Some((wake, period)) = broker.upgrade().map(|b| {
        let period = CONTROLLER_INTERVAL.min(b.config.lease_ttl / 4);
        (b.membership.wake.clone(), period)
    }) else {
        return;
    };
    loop {
        {
            let Some(b) = broker.upgrade() else { return };
            if b.membership.is_stopping() {
                return;
            }
            if let Err(e) = reconcile(&b).await {
                warn!("partition controller: {e}");
            }
        }
        // Waiting without a reference to the broker lets a dropped broker end this task (and
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
async fn reconcile(b: &Arc<Broker>) -> Result<(), MetadataError> {
    let started = tokio::time::Instant::now();
    let budget = b.config.lease_ttl / 3;
    let view = b.membership.refresh(b).await?;
    let me = b.membership.agent_id();
    let groups = b.groups().hand_off(|g| {
        view.assignment
            .coordinator(g)
            .is_some_and(|a| a.agent_id == me)
    });
    let mine = own_partitions(b, &view).await?;
    let is_mine = |log: &Arc<PartitionLog>| mine.contains(&(log.topic.name.clone(), log.partition));
    let hand_off = b.open_partitions().into_iter().filter(|log| !is_mine(log));
    let closes: Vec<_> = hand_off
        .map(|log| {
            let b = b.clone();
            let (topic, partition) = (log.topic.name.clone(), log.partition);
            info!(%topic, partition, "partition moves to another agent; handing off");
            tokio::spawn(async move { b.close_partition(&log, true).await })
        })
        .collect();
    let hand_offs = futures::future::join(groups, futures::future::join_all(closes));
    if tokio::time::timeout(budget, hand_offs).await.is_err() {
        warn!("hand-offs take longer than {budget:?}; they go on in the background");
    }
    let wanted: Vec<(String, u32)> = mine
        .iter()
        .filter(|(topic, partition)| {
            !b.is_open(topic, *partition) && b.may_lease(topic, *partition)
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
        let ttl = b.lease_ttl_ms();
        let sent = tokio::time::Instant::now();
        let leases = b
            .metadata
            .acquire_leases(b.membership.agent_id(), batch, ttl)
            .await?;
        // Partitions left out are usually still held by their previous owner, which has not
        // released them yet; retried next round.
        futures::stream::iter(leases)
            .for_each_concurrent(CONCURRENT_OPENS, |lease| async move {
                let (topic, partition) = (lease.topic.clone(), lease.partition);
                match b.open_leased((lease, sent)).await {
                    Ok(_) => debug!(%topic, partition, "took over partition"),
                    Err(e) => debug!(%topic, partition, "cannot open partition yet: {e}"),
                }
            })
            .await;
    }
    Ok(())
}

/// Every partition this agent should own, per the view.
async fn own_partitions(
    b: &Broker,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(node_id: i32, started: i64) -> AgentInfo {
        AgentInfo {
            agent_id: format!("agent-{node_id}-{started}"),
            kafka_host: "127.0.0.1".into(),
            kafka_port: 9092,
            http_addr: String::new(),
            node_id,
            last_heartbeat_ms: started,
            started_at_ms: started,
        }
    }

    #[test]
    fn restarted_node_counts_once_as_its_newest_incarnation() {
        let a = Assignment::new([agent(2, 5), agent(1, 1), agent(2, 9)]);
        let ids: Vec<_> = a.agents().iter().map(|a| a.agent_id.as_str()).collect();
        assert_eq!(ids, ["agent-1-1", "agent-2-9"]);
    }

    fn owner_nodes(a: &Assignment, topic: &str, partitions: u32) -> Vec<i32> {
        let owners = a.topic_owners(topic, partitions);
        owners.iter().map(|a| a.node_id).collect()
    }

    #[test]
    fn every_topic_spreads_evenly() {
        let a = Assignment::new((0..3).map(|n| agent(n, 0)));
        for topic in ["a", "orders", "x-very-long-topic-name"] {
            let mut counts = [0; 3];
            for node in owner_nodes(&a, topic, 10) {
                counts[node as usize] += 1;
            }
            assert_eq!(counts.iter().max(), Some(&4), "{topic}: {counts:?}");
            assert_eq!(counts.iter().min(), Some(&3), "{topic}: {counts:?}");
        }
    }

    #[test]
    fn losing_an_agent_moves_little_else() {
        let four = Assignment::new((0..4).map(|n| agent(n, 0)));
        let three = Assignment::new((0..3).map(|n| agent(n, 0)));
        let (before, after) = (owner_nodes(&four, "t", 60), owner_nodes(&three, "t", 60));
        let moved_needlessly = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| **b != 3 && b != a)
            .count();
        // Node 3's 15 partitions must move; `p mod n` would also move about 30 others.
        assert!(
            moved_needlessly <= 8,
            "{moved_needlessly}: {before:?} -> {after:?}"
        );
    }

    #[test]
    fn no_agents_no_owner() {
        let a = Assignment::new([]);
        assert!(a.topic_owners("t", 3).is_empty());
        assert!(a.coordinator("g").is_none());
    }
}
