//! The agent's services, composed: [`Broker`] owns each service (partitions, membership and
//! controller, group coordination, security) and the operations that span several of them
//! (topic creation and deletion, shutdown). The services below it never import it; what
//! serves clients (the typed APIs, the Kafka handlers, the connection) sits above it, and
//! `agent.rs` starts the background loops (the codemap in ARCHITECTURE.md draws the arrows).

use parking_lot::RwLock;
use std::sync::Arc;

use streamhouse_metadata::{
    now_ms, Catalog, MetadataError, MetadataStore, NewTopic, SegmentLog, Topic, TxnStore,
};
use streamhouse_storage::SegmentCache;
use tracing::{info, warn};
use uuid::Uuid;

use crate::cluster::Controller;
use crate::config::BrokerConfig;
use crate::groups::{GroupCoordinator, GroupError, PartitionLag};
use crate::maintenance::Maintenance;
use crate::membership::{ClusterView, Membership};
use crate::partitions::Partitions;
use crate::security::{Authorizer, SaslAuthenticator};
use crate::supervisor::{Supervisor, TaskFailure};
use crate::txn::Transactions;

/// How old the cluster view a Metadata answer is built from may be (see
/// [`Broker::metadata_view`]): an agent that just joined is named within this long by every
/// other, while the controller's own reads are up to a round apart.
const METADATA_VIEW_MAX_AGE: std::time::Duration = std::time::Duration::from_millis(250);

/// How long a Metadata answer waits for that view to be read before it is built from the one
/// at hand (a metadata store that does not answer must not hold every client's metadata up).
const METADATA_VIEW_MAX_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// A Kafka-speaking agent: its services and its background loops.
pub struct Broker {
    pub(crate) config: BrokerConfig,
    pub(crate) agent_id: String,
    pub(crate) metadata: Arc<dyn MetadataStore>,
    pub(crate) cache: Arc<SegmentCache>,
    /// The write path: open partitions, their leases, the buffer budget, the flusher.
    pub(crate) partitions: Arc<Partitions>,
    /// Who is in the cluster and who should own what.
    pub(crate) membership: Arc<Membership>,
    /// Reconciles held with desired partitions and groups (the loops run it, `agent.rs`).
    pub(crate) controller: Arc<Controller>,
    groups: Arc<GroupCoordinator>,
    /// The credential caches of the SASL listeners serving this broker, updated at once when
    /// users change through [`Broker::users`].
    pub(crate) authenticators: RwLock<Vec<Arc<SaslAuthenticator>>>,
    /// Decides requests by ACLs (allows everything unless `config.acl.enabled`).
    pub(crate) authorizer: Arc<Authorizer>,
    /// The transaction coordinator and marker writer.
    pub(crate) txn: Arc<Transactions>,
    /// Retention, consolidation, compaction, deletions, the janitor.
    pub(crate) maintenance: Arc<Maintenance>,
    /// The background loops (flusher, heartbeat, controller, renewal, maintenance).
    pub(crate) tasks: Supervisor,
}

/// The services a [`Broker`] is composed of, built by `agent.rs`.
pub(crate) struct Services {
    pub(crate) partitions: Arc<Partitions>,
    pub(crate) membership: Arc<Membership>,
    pub(crate) controller: Arc<Controller>,
    pub(crate) groups: Arc<GroupCoordinator>,
    pub(crate) authorizer: Arc<Authorizer>,
    pub(crate) txn: Arc<Transactions>,
    pub(crate) maintenance: Arc<Maintenance>,
}

impl Broker {
    /// Composes the services; starts nothing (`Broker::start` in `agent.rs` does).
    pub(crate) fn compose(
        config: BrokerConfig,
        agent_id: String,
        metadata: Arc<dyn MetadataStore>,
        cache: Arc<SegmentCache>,
        services: Services,
    ) -> Self {
        Self {
            config,
            agent_id,
            metadata,
            cache,
            partitions: services.partitions,
            membership: services.membership,
            controller: services.controller,
            groups: services.groups,
            authenticators: RwLock::default(),
            authorizer: services.authorizer,
            txn: services.txn,
            maintenance: services.maintenance,
            tasks: Supervisor::default(),
        }
    }

    /// The agent's maintenance (retention, consolidation, compaction, deletions), whose rounds
    /// can also be run on demand.
    pub fn maintenance(&self) -> &Maintenance {
        &self.maintenance
    }

    /// Flushes every partition with buffered records in one cycle and waits for it.
    pub async fn flush_all(&self) {
        self.partitions.flush_all().await
    }

    /// The user administration of this agent.
    pub fn users(&self) -> crate::security::Users<'_> {
        crate::security::Users::new(self.metadata.as_ref(), &self.authenticators)
    }

    /// Makes user changes through [`Broker::users`] apply to `auth` at once (called by each
    /// listener that authenticates with it: the Kafka listener and the HTTP API).
    pub fn register_authenticator(&self, auth: &Arc<SaslAuthenticator>) {
        let mut registered = self.authenticators.write();
        if !registered.iter().any(|a| Arc::ptr_eq(a, auth)) {
            registered.push(auth.clone());
        }
    }

    /// Waits until one of the agent's background loops ends while the agent runs (a panic or
    /// an abort), which leaves it unable to flush, renew or reconcile: whoever runs the agent
    /// then shuts it down, so its partitions move to live agents. Never returns otherwise.
    /// One caller at a time.
    pub async fn task_failure(&self) -> TaskFailure {
        loop {
            let failure = self.tasks.failure().await;
            // Loops end on their own once the agent is stopping: that is not a failure.
            if !self.membership.is_stopping() {
                return failure;
            }
        }
    }

    /// Aborts the background loop named `task` (`controller`, `flusher`, `heartbeat`, `lease
    /// renewal`, `group sweeper`, `retention`, ...), as a crash of that loop would end it;
    /// returns whether it was running. For fault-injection tests of supervision.
    pub fn abort_task(&self, task: &str) -> bool {
        self.tasks.abort(task)
    }

    /// This agent's settings.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// This agent's id (its row in the agents table, the holder named in its leases).
    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    /// The metadata store.
    pub fn metadata(&self) -> &Arc<dyn MetadataStore> {
        &self.metadata
    }

    /// The topic catalog: what the Kafka handlers read topics and partitions from (they never
    /// hold the whole metadata store; see the architecture test).
    pub(crate) fn catalog(&self) -> &dyn Catalog {
        self.metadata.as_ref()
    }

    /// The segment log, for the handlers that describe what is stored (DescribeProducers,
    /// ListOffsets by timestamp) and allocate producer ids.
    pub(crate) fn segment_log(&self) -> &dyn SegmentLog {
        self.metadata.as_ref()
    }

    /// The transactions as stored, for the handlers that describe them or commit their offsets.
    pub(crate) fn txn_store(&self) -> &dyn TxnStore {
        self.metadata.as_ref()
    }

    /// The consumer-group coordinator.
    pub(crate) fn groups(&self) -> &GroupCoordinator {
        &self.groups
    }

    /// The consumer-group coordinator, shared (for the loops that hold it weakly).
    pub(crate) fn groups_arc(&self) -> &Arc<GroupCoordinator> {
        &self.groups
    }

    /// Consumer lag of `group` for every partition it has committed an offset for.
    pub async fn group_lag(&self, group: &str) -> Result<Vec<PartitionLag>, MetadataError> {
        self.groups.lag(group).await
    }

    /// The cluster (live agents, leases) as the controller last read it, at most a round ago
    /// (no I/O).
    pub(crate) fn cluster_view(&self) -> ClusterView {
        self.membership.view()
    }

    /// The cluster as read at most [`METADATA_VIEW_MAX_AGE`] ago, for Metadata answers: they
    /// must name every live agent (see [`Membership::fresh_view`]). A failover storm of
    /// requests reads the store at most once per that interval.
    pub(crate) async fn metadata_view(&self) -> ClusterView {
        self.membership
            .fresh_view(
                self.metadata.as_ref(),
                self.config.lease_ttl,
                METADATA_VIEW_MAX_AGE,
                METADATA_VIEW_MAX_WAIT,
            )
            .await
    }

    /// Whether this agent coordinates consumer group `group`: it holds the group's lease, or
    /// nobody does and the shared assignment names this agent (no I/O).
    pub(crate) fn is_coordinator(&self, group: &str) -> bool {
        self.groups.holds(group)
            || self
                .membership
                .view()
                .coordinator(group)
                .is_some_and(|a| a.agent_id == self.agent_id)
    }

    /// Makes sure this agent holds `group`'s coordinator lease, taking it if the shared
    /// assignment names this agent and the lease is free; else NOT_COORDINATOR.
    pub(crate) async fn claim_group(&self, group: &str) -> Result<(), GroupError> {
        let may_take = !self.membership.is_stopping() && self.membership.coordinates(group);
        self.groups.claim(group, may_take).await
    }

    /// Looks a topic up, creating it when allowed and missing.
    pub(crate) async fn topic_or_auto_create(
        &self,
        name: &str,
        may_create: bool,
    ) -> Result<Option<Topic>, MetadataError> {
        if let Some(topic) = self.metadata.get_topic(name).await? {
            return Ok(Some(topic));
        }
        if !may_create || crate::topics::validate_topic_name(name).is_err() {
            return Ok(None);
        }
        let new = NewTopic {
            name: name.to_string(),
            partitions: self.config.default_partitions,
            config: Default::default(),
        };
        match self.create_topic(new).await {
            Ok(t) => Ok(Some(t)),
            // Another request created it first.
            Err(MetadataError::TopicExists(_)) => self.metadata.get_topic(name).await,
            Err(e) => Err(e),
        }
    }

    /// Creates a topic.
    pub(crate) async fn create_topic(&self, new: NewTopic) -> Result<Topic, MetadataError> {
        let topic = self.metadata.create_topic(new).await?;
        info!(topic = %topic.name, partitions = topic.partitions, "created topic");
        self.membership.wake();
        Ok(topic)
    }

    /// Grows a topic's partition count.
    pub(crate) async fn add_partitions(
        &self,
        name: &str,
        count: u32,
    ) -> Result<Topic, MetadataError> {
        let topic = self.metadata.add_partitions(name, count).await?;
        info!(topic = %name, partitions = count, "added partitions");
        self.membership.wake();
        Ok(topic)
    }

    /// Deletes a topic: its metadata at once, and its objects once the grace delay has passed
    /// (scheduled in the same metadata transaction, so a reader that already found a segment
    /// can finish, and a crash forgets nothing). Returns the deleted topic's id.
    pub(crate) async fn delete_topic(&self, name: &str) -> Result<Uuid, MetadataError> {
        let id = self
            .metadata
            .get_topic(name)
            .await?
            .ok_or_else(|| MetadataError::UnknownTopic(name.to_string()))?
            .id;
        let grace = self.config.maintenance.delete_grace.as_millis() as i64;
        let segments = self.metadata.delete_topic(name, now_ms() + grace).await?;
        self.partitions.forget_topic(name);
        info!(topic = %name, segments = segments.len(), "deleted topic");
        Ok(id)
    }

    /// Leaves the cluster: deregisters the agent (so the others take its partitions over),
    /// flushes every open partition and releases its lease. Call before exiting; afterwards the
    /// agent serves no partition.
    pub async fn shutdown(&self) {
        if !self.membership.stop() {
            return;
        }
        // Bounded: with the database unreachable, the heartbeat simply expires instead.
        let deregister = self.metadata.deregister_agent(&self.agent_id);
        match tokio::time::timeout(self.config.lease_ttl, deregister).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!("deregistering the agent failed: {e}"),
            Err(_) => warn!("deregistering the agent timed out"),
        }
        let closing = self.partitions.close_all();
        futures::future::join(closing, self.groups.hand_off(|_| false)).await;
    }

    /// Refuses `added` more partitions when the cluster would then hold more than
    /// `max_partitions_per_cluster`, or more than `max_partitions_per_agent` times its live agents
    /// (this one included). The message says which cap and how to raise it.
    ///
    /// A soft cap: two agents creating topics at the same instant may both pass it, by at most one
    /// request's partitions each, which the headroom of the defaults absorbs.
    pub(crate) async fn check_partition_cap(&self, added: u64) -> Result<(), String> {
        let limits = &self.config.limits;
        let existing: u64 = self
            .metadata
            .list_topics()
            .await
            .map_err(|e| format!("counting partitions: {e}"))?
            .iter()
            .map(|t| u64::from(t.partitions))
            .sum();
        let alive_since = streamhouse_metadata::now_ms() - self.config.lease_ttl.as_millis() as i64;
        let agents = self
            .metadata
            .list_agents(alive_since)
            .await
            .map_err(|e| format!("counting live agents: {e}"))?;
        let live = agents
            .iter()
            .filter(|a| a.agent_id != self.agent_id)
            .count() as u64
            + 1;
        let per_agents = limits.max_partitions_per_agent.saturating_mul(live);
        let (cap, setting) = if per_agents < limits.max_partitions_per_cluster {
            (per_agents, "max_partitions_per_agent × live agents")
        } else {
            (
                limits.max_partitions_per_cluster,
                "max_partitions_per_cluster",
            )
        };
        if existing.saturating_add(added) > cap {
            return Err(format!(
                "{added} more partitions would make {} in the cluster, over its cap of {cap} \
                 ({setting}; raise it with --max-partitions-per-agent / --max-partitions-per-cluster \
                 or add agents)",
                existing + added
            ));
        }
        Ok(())
    }

    /// Broker-level settings for DescribeConfigs, as `(name, value, is_default)`.
    pub(crate) fn describe_broker_config(&self) -> Vec<(String, String, bool)> {
        let c = &self.config;
        vec![
            (
                "auto.create.topics.enable".into(),
                c.auto_create_topics.to_string(),
                !c.auto_create_topics,
            ),
            (
                "num.partitions".into(),
                c.default_partitions.to_string(),
                c.default_partitions == 1,
            ),
            (
                "socket.request.max.bytes".into(),
                c.max_request_bytes.to_string(),
                true,
            ),
            ("broker.id".into(), c.node_id.to_string(), true),
        ]
    }
}
