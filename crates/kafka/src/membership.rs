//! Who is in the cluster and who should own what: the [`Assignment`] every agent computes the
//! same way from the live agents, and this agent's [`Membership`] (its registration, the view
//! the controller last read, the stopping flag). Below every service that asks "is this mine?".

use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use streamhouse_metadata::{
    now_ms, AgentInfo, MetadataError, MetadataStore, PartitionLease, Topic,
};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::warn;

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
    /// The agents Metadata names as brokers, one per node id: those of the assignment and
    /// those whose heartbeat is late by less than [`BROKER_LISTING_TTLS`] lease TTLs. Clients
    /// drop their connections to a broker an answer leaves out (failing what they had in
    /// flight there as not stored), so an agent stays listed through a slow heartbeat.
    pub(crate) brokers: Arc<Vec<AgentInfo>>,
    leases: Arc<HashMap<(String, u32), PartitionLease>>,
    /// Group id -> agent id of its coordinator lease's holder.
    group_holders: Arc<HashMap<String, String>>,
    /// When the refresh that built it started reading (`None`: not read yet, this agent alone).
    read_at: Option<Instant>,
}

/// How many lease TTLs an agent's heartbeat may be late before Metadata stops naming it as a
/// broker (it stops owning partitions after one).
const BROKER_LISTING_TTLS: i64 = 3;

/// A partition's leader as Metadata reports it: node id and leader epoch (KIP-320).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Leader {
    /// The node clients send the partition's requests to; -1 without agents.
    pub(crate) node: i32,
    /// The epoch of the lease that node holds (-1 when none is held). Lease epochs only grow,
    /// so a client that meets an answer with a lower epoch than it knows (from an agent whose
    /// view lags) keeps what it knows instead of following a leader that moved on: without
    /// epochs, answers from agents whose views differ by a refresh sent clients back and forth,
    /// and librdkafka can then stay on the wrong agent for good.
    pub(crate) epoch: i32,
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

    /// Per partition of `topic`, where clients should send it: the agent its lease names, at
    /// that lease's epoch, while that agent is listed as a broker, whether the lease is live or
    /// lapsed (released in a hand-off, or expired while the metadata store was away); else,
    /// for a partition never leased or whose holder is gone, the desired owner (-1 without
    /// agents) at no epoch.
    ///
    /// A lapsed lease still names its last holder rather than the next owner because only
    /// then do the epochs clients see never go down: a lease row keeps its holder and epoch
    /// until a new holder takes it at the next epoch. Naming the owner at epoch -1 instead
    /// reset what clients knew (librdkafka takes -1 whatever it knew), so an answer from an
    /// agent whose view lagged could send them back to the former holder; and a leader that
    /// goes A, B, A within a few milliseconds can leave librdkafka sending to B for good
    /// ("not migrating away from preferred replica").
    pub(crate) fn leaders(&self, topic: &Topic) -> Vec<Leader> {
        let owners = self.assignment.topic_owners(&topic.name, topic.partitions);
        (0..topic.partitions)
            .map(|p| {
                let holder = self
                    .leases
                    .get(&(topic.name.clone(), p))
                    .and_then(|l| Some((self.broker_node(&l.agent_id)?, l.epoch)));
                match holder {
                    Some((node, epoch)) => Leader {
                        node,
                        epoch: i32::try_from(epoch).unwrap_or(i32::MAX),
                    },
                    None => Leader {
                        node: owners.get(p as usize).map_or(-1, |a| a.node_id),
                        epoch: -1,
                    },
                }
            })
            .collect()
    }

    /// The node id of `agent_id` if Metadata lists it as a broker.
    fn broker_node(&self, agent_id: &str) -> Option<i32> {
        let agent = self.brokers.iter().find(|a| a.agent_id == agent_id)?;
        Some(agent.node_id)
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
    /// Held by a [`Membership::fresh_view`] refresh, so a burst of requests reads the store
    /// once: when the last one started.
    refreshing: tokio::sync::Mutex<Option<Instant>>,
    /// When this agent's reads of the store last failed and came back (see [`StoreReach`]).
    reach: parking_lot::Mutex<StoreReach>,
}

/// What this agent saw of the metadata store's availability, so that an outage does not count
/// against other agents' heartbeats: while the store is away nobody can heartbeat, and once
/// it is back an agent whose heartbeat predates the outage is judged on the time the store
/// was up since, not on the outage. Otherwise, after an outage of over three lease TTLs, the
/// first Metadata answers would leave every other agent out, and clients would drop their
/// connections to them, failing what they had in flight there as not stored although it was
/// (an idempotent producer then sends it again under a new epoch: stored twice).
#[derive(Debug, Default, Clone, Copy)]
struct StoreReach {
    /// Wall-clock ms of the last successful read.
    last_ok_ms: Option<i64>,
    /// A read failed since `last_ok_ms`.
    failing: bool,
    /// The latest outage as (last read before it, first read after it), in wall-clock ms.
    outage: Option<(i64, i64)>,
}

impl StoreReach {
    /// Records a read that succeeded at `now_ms`.
    fn ok(&mut self, now_ms: i64) {
        if let (true, Some(before)) = (self.failing, self.last_ok_ms) {
            self.outage = Some((before, now_ms));
        }
        self.failing = false;
        self.last_ok_ms = Some(now_ms);
    }

    /// How long before `now_ms` a heartbeat may be and still count as within `window` of
    /// store time: `window`, plus the latest outage while the store has been back for less
    /// than `window`.
    fn lateness_allowed(&self, now_ms: i64, window: i64) -> i64 {
        match self.outage {
            Some((down, back)) if now_ms - back < window => window + (back - down),
            _ => window,
        }
    }
}

impl Membership {
    /// Membership of agent `me`, which until the first refresh sees itself alone (so a single
    /// agent serves at once).
    pub(crate) fn new(me: AgentInfo) -> Self {
        let view = ClusterView {
            assignment: Arc::new(Assignment::new([me.clone()])),
            brokers: Arc::new(vec![me.clone()]),
            leases: Arc::default(),
            group_holders: Arc::default(),
            read_at: None,
        };
        Self {
            me,
            view: RwLock::new(view),
            wake: Arc::default(),
            stopping: Default::default(),
            refreshing: tokio::sync::Mutex::new(None),
            reach: Default::default(),
        }
    }

    pub(crate) fn agent_id(&self) -> &str {
        &self.me.agent_id
    }

    /// The latest view (no I/O).
    pub(crate) fn view(&self) -> ClusterView {
        self.view.read().clone()
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
    pub(crate) async fn refresh(
        &self,
        metadata: &dyn MetadataStore,
        lease_ttl: Duration,
    ) -> Result<ClusterView, MetadataError> {
        let view = self.read_view(metadata, lease_ttl).await;
        match &view {
            Ok(_) => self.reach.lock().ok(now_ms()),
            Err(_) => self.reach.lock().failing = true,
        }
        view
    }

    async fn read_view(
        &self,
        metadata: &dyn MetadataStore,
        lease_ttl: Duration,
    ) -> Result<ClusterView, MetadataError> {
        let read_at = Instant::now();
        let ttl_ms = lease_ttl.as_millis() as i64;
        let now = now_ms();
        let alive_since = now - ttl_ms;
        let listing_window = ttl_ms * BROKER_LISTING_TTLS;
        let listed_since = now - self.reach.lock().lateness_allowed(now, listing_window);
        let mut listed = metadata.list_agents(listed_since).await?;
        if !listed.iter().any(|a| a.agent_id == self.me.agent_id) {
            listed.push(self.me.clone());
        }
        let agents: Vec<AgentInfo> = listed
            .iter()
            .filter(|a| a.last_heartbeat_ms >= alive_since || a.agent_id == self.me.agent_id)
            .cloned()
            .collect();
        let leases = metadata.list_leases().await?;
        let group_leases = metadata.list_group_leases().await?;
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
            brokers: Arc::new(Assignment::new(listed).agents),
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
            read_at: Some(read_at),
        };
        let mut current = self.view.write();
        // Refreshes run concurrently (the controller's, a Metadata request's): one that began
        // reading earlier never replaces what a later one read.
        if current.read_at.is_none_or(|at| at <= read_at) {
            *current = view.clone();
        }
        Ok(view)
    }

    /// The view, re-read first when older than `max_age` (or never read), one refresh at a time
    /// and for at most `max_wait`; when the store does not answer in time, the view as it is
    /// (and no new attempt for `max_age`, so a metadata-store outage slows Metadata answers by
    /// at most `max_wait` per `max_age`). For Metadata answers: every live agent must be in
    /// them, since clients drop the connections to brokers an answer leaves out (failing what
    /// they had in flight there as not stored, which an idempotent producer may then send
    /// again under a new epoch), and an agent that joined since the controller's last read
    /// would be left out. The store is read at most once per `max_age` however many requests
    /// come.
    pub(crate) async fn fresh_view(
        &self,
        metadata: &dyn MetadataStore,
        lease_ttl: Duration,
        max_age: Duration,
        max_wait: Duration,
    ) -> ClusterView {
        let stale = |tried: &Option<Instant>| {
            let newest = self.view.read().read_at.max(*tried);
            newest.is_none_or(|at| at.elapsed() > max_age)
        };
        if !stale(&None) {
            return self.view();
        }
        let mut tried = self.refreshing.lock().await;
        if stale(&tried) {
            *tried = Some(Instant::now());
            match tokio::time::timeout(max_wait, self.refresh(metadata, lease_ttl)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::debug!("membership refresh for a metadata answer: {e}"),
                Err(_) => {
                    self.reach.lock().failing = true;
                    tracing::debug!("membership refresh for a metadata answer timed out");
                }
            }
        }
        self.view()
    }

    /// What wakes the controller early (see [`Membership::wake`]).
    pub(crate) fn wake_signal(&self) -> Arc<Notify> {
        self.wake.clone()
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
    pub(crate) fn registration(&self, now_ms: i64) -> AgentInfo {
        AgentInfo {
            last_heartbeat_ms: now_ms,
            ..self.me.clone()
        }
    }
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
    fn a_store_outage_does_not_count_against_heartbeats() {
        let window = 9_000;
        let mut reach = StoreReach::default();
        reach.ok(1_000);
        reach.ok(1_250);
        assert_eq!(reach.lateness_allowed(1_500, window), window, "no outage");
        // The store stops answering after 1_250 and answers again at 21_250.
        reach.failing = true;
        reach.ok(21_250);
        // A heartbeat from just before the outage is late by no store time: still listed.
        assert!(21_250 - reach.lateness_allowed(21_250, window) <= 1_000);
        assert_eq!(reach.lateness_allowed(30_249, window), window + 20_000);
        // Once the store has been back for a window, the outage no longer counts: an agent
        // that did not heartbeat since is gone.
        assert_eq!(reach.lateness_allowed(30_250, window), window);
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

    fn lease(partition: u32, agent: &AgentInfo, epoch: i64, expires_at_ms: i64) -> PartitionLease {
        PartitionLease {
            topic: "t".into(),
            partition,
            agent_id: agent.agent_id.clone(),
            epoch,
            expires_at_ms,
        }
    }

    #[test]
    fn a_leader_is_its_leases_listed_holder_at_its_epoch_else_an_owner_at_none() {
        let (a, b) = (agent(0, 0), agent(1, 0));
        let gone = agent(7, 0);
        let leases = [
            lease(0, &b, 7, 2_000),
            lease(1, &b, 3, 999),
            lease(2, &gone, 5, 2_000),
        ];
        let view = ClusterView {
            assignment: Arc::new(Assignment::new([a.clone(), b.clone()])),
            brokers: Arc::new(vec![a, b]),
            leases: Arc::new(
                leases
                    .into_iter()
                    .map(|l| ((l.topic.clone(), l.partition), l))
                    .collect(),
            ),
            group_holders: Arc::default(),
            read_at: None,
        };
        let topic = Topic {
            id: uuid::Uuid::nil(),
            name: "t".into(),
            partitions: 4,
            config: Default::default(),
            created_at_ms: 0,
        };
        let owners = owner_nodes(&view.assignment, "t", 4);
        let leaders = view.leaders(&topic);
        // Held, live or lapsed, by a listed agent: its holder at its epoch (epochs clients
        // see never go down).
        assert_eq!(leaders[0], Leader { node: 1, epoch: 7 });
        assert_eq!(leaders[1], Leader { node: 1, epoch: 3 });
        // Held by an agent no longer listed, or never leased: the owner, and no epoch, so no
        // client waits for an epoch no lease has yet.
        for p in 2..4 {
            assert_eq!(
                leaders[p],
                Leader {
                    node: owners[p],
                    epoch: -1
                },
                "partition {p}"
            );
        }
    }

    #[tokio::test]
    async fn metadata_views_name_every_agent_and_never_go_back() {
        use streamhouse_metadata::prelude::*;
        use streamhouse_metadata::SqliteMetadataStore;
        let store = SqliteMetadataStore::in_memory().await.unwrap();
        let ttl = Duration::from_secs(3);
        const WAIT: Duration = Duration::from_secs(5);
        let now = now_ms();
        let heartbeat_at = |node: i32, at: i64| AgentInfo {
            last_heartbeat_ms: at,
            started_at_ms: at,
            ..agent(node, 0)
        };
        let me = heartbeat_at(0, now);
        for agent in [
            me.clone(),
            heartbeat_at(1, now),
            heartbeat_at(2, now - 5_000),
        ] {
            store.register_agent(&agent).await.unwrap();
        }
        let membership = Membership::new(me);
        let nodes = |agents: &[AgentInfo]| agents.iter().map(|a| a.node_id).collect::<Vec<_>>();
        // Never read: read now. Node 2's heartbeat is late (by more than a TTL, less than the
        // listing's three): named as a broker, owning nothing.
        let view = membership
            .fresh_view(&store, ttl, Duration::from_secs(60), WAIT)
            .await;
        assert_eq!(nodes(&view.brokers), [0, 1, 2]);
        assert_eq!(nodes(view.assignment.agents()), [0, 1]);
        // A joiner shows up once the view is older than asked for, not before.
        store.register_agent(&heartbeat_at(3, now)).await.unwrap();
        let cached = membership
            .fresh_view(&store, ttl, Duration::from_secs(60), WAIT)
            .await;
        assert_eq!(nodes(&cached.brokers), [0, 1, 2]);
        let fresh = membership
            .fresh_view(&store, ttl, Duration::ZERO, WAIT)
            .await;
        assert_eq!(nodes(&fresh.brokers), [0, 1, 2, 3]);
        // A read that began before the installed one never replaces it.
        let later = membership
            .view()
            .read_at
            .map(|at| at + Duration::from_secs(3600));
        *membership.view.write() = ClusterView {
            read_at: later,
            ..membership.view()
        };
        membership.refresh(&store, ttl).await.unwrap();
        assert_eq!(membership.view().read_at, later);
    }

    /// A store that stops answering once `hung` is set (a metadata-store outage); counts the
    /// calls made of it.
    #[derive(Default)]
    struct OutageState {
        hung: std::sync::atomic::AtomicBool,
        calls: std::sync::atomic::AtomicUsize,
    }

    #[derive(Clone, Default)]
    struct Outage(Arc<OutageState>);

    impl std::ops::Deref for Outage {
        type Target = OutageState;
        fn deref(&self) -> &OutageState {
            &self.0
        }
    }

    #[async_trait::async_trait]
    impl streamhouse_metadata::CallHook for Outage {
        async fn before(&self, _method: &'static str) -> streamhouse_metadata::Result<()> {
            use std::sync::atomic::Ordering::Relaxed;
            self.calls.fetch_add(1, Relaxed);
            if self.hung.load(Relaxed) {
                std::future::pending::<()>().await;
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_store_that_does_not_answer_holds_metadata_views_up_once_per_interval() {
        use std::sync::atomic::Ordering::Relaxed;
        use streamhouse_metadata::prelude::*;
        use streamhouse_metadata::{HookedMetadataStore, SqliteMetadataStore};
        let outage = Outage::default();
        let inner = Arc::new(SqliteMetadataStore::in_memory().await.unwrap());
        let store = HookedMetadataStore::new(inner, outage.clone());
        let me = AgentInfo {
            last_heartbeat_ms: now_ms(),
            ..agent(0, 0)
        };
        store.register_agent(&me).await.unwrap();
        let membership = Membership::new(me);
        let (ttl, age, wait) = (
            Duration::from_secs(3),
            Duration::from_millis(100),
            Duration::from_millis(50),
        );
        let read = membership.fresh_view(&store, ttl, age, wait).await.read_at;
        assert!(read.is_some());
        outage.hung.store(true, Relaxed);
        tokio::time::sleep(age * 2).await;
        // The refresh hangs: given up after `wait`, the view at hand answers.
        let view = membership.fresh_view(&store, ttl, age, wait).await;
        assert_eq!(view.read_at, read);
        // Right after a failed attempt the view at hand answers without asking the store again.
        let calls = outage.calls.load(Relaxed);
        membership.fresh_view(&store, ttl, age, wait).await;
        assert_eq!(outage.calls.load(Relaxed), calls);
    }

    #[test]
    fn no_agents_no_owner() {
        let a = Assignment::new([]);
        assert!(a.topic_owners("t", 3).is_empty());
        assert!(a.coordinator("g").is_none());
    }
}
