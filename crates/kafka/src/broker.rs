//! The agent's state behind the Kafka handlers: the partitions it has open for writing and
//! reading, the group-commit flusher, and partition leases.
//!
//! Write path: a Produce reserves its bytes from the agent's buffer budget, appends to the
//! partition's [`PartitionWriter`] (in memory, offsets assigned) and waits for durability. The
//! flusher wakes every `flush_interval` (or sooner when a partition has `flush_max_bytes`
//! buffered), seals every partition with buffered data into one [`FlushCycle`] and starts it:
//! the cycle uploads ONE shared object for all those partitions and commits all of them in ONE
//! metadata transaction; only then are the waiting produces acknowledged. Up to
//! `max_flushes_in_flight` cycles overlap (the next uploads while the previous commits), each
//! partition's chunks still resolved in order.
//!
//! Ownership: with several agents on one metadata store, each partition has one desired owner
//! (see [`crate::cluster`]); an agent opens only partitions it should own and can lease, and its
//! controller hands off the others. Requests for other partitions get NOT_LEADER_OR_FOLLOWER.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use object_store::ObjectStore;
use streamhouse_metadata::{
    now_ms, AgentInfo, CallDeadline, HeldLease, HookedMetadataStore, LeaseFence, MetadataError,
    MetadataStore, NewTopic, PartitionLease, Topic,
};
use streamhouse_storage::{
    FlushContext, FlushCycle, FlushReport, PartitionReader, PartitionStorage, PartitionWriter,
    SegmentCache, SegmentIndex, SegmentIndexConfig, StorageError, WriterConfig,
};
use tokio::sync::{Notify, OnceCell, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::{info, warn};
use uuid::Uuid;

use crate::cluster::{run_controller, run_heartbeat, run_lease_renewal, ClusterView, Membership};
use crate::groups::{GroupCoordinator, GroupError, PartitionLag};
use crate::security::Authorizer;
use crate::supervisor::{Supervisor, TaskFailure};

/// Settings of a Kafka-speaking agent.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Kafka node id this agent answers as.
    pub node_id: i32,
    /// Host clients are told to connect to.
    pub advertised_host: String,
    /// Port clients are told to connect to.
    pub advertised_port: u16,
    /// HTTP address (`host:port`) recorded in this agent's registration.
    pub http_addr: String,
    /// Cluster id reported in Metadata.
    pub cluster_id: String,
    /// Create unknown topics on first Metadata/Produce (Kafka's `auto.create.topics.enable`).
    pub auto_create_topics: bool,
    /// Partitions of auto-created topics and of CreateTopics with `num_partitions = -1`.
    pub default_partitions: u32,
    /// Longest a produced batch waits before its group commit starts.
    pub flush_interval: Duration,
    /// A partition with this many buffered bytes is flushed without waiting for the interval.
    pub flush_max_bytes: usize,
    /// Flush cycles uploading or committing at once; one more waits before sealing.
    pub max_flushes_in_flight: usize,
    /// Produced bytes the agent holds until they are durable, across all partitions; a produce
    /// finding it full waits (up to its timeout) instead of growing memory.
    pub max_buffered_bytes: usize,
    /// Largest request frame accepted; larger ones close the connection.
    pub max_request_bytes: usize,
    /// Requests a connection may have in progress at once.
    pub max_in_flight_per_connection: usize,
    /// Request bytes a connection may have in progress at once; with `max_request_bytes` this
    /// bounds what one client can make the agent hold.
    pub max_in_flight_bytes_per_connection: usize,
    /// Partition lease duration, renewed once a third of it has passed. Also how long an agent
    /// counts as live after its last heartbeat, so it bounds failover time.
    pub lease_ttl: Duration,
    /// How often the agent records a heartbeat; well below `lease_ttl`.
    pub heartbeat_interval: Duration,
    /// Segment index settings for every partition.
    pub segment_index: SegmentIndexConfig,
    /// How long a new (empty) group's first rebalance waits for more members before completing,
    /// extended per joining member up to the rebalance timeout (Kafka's
    /// `group.initial.rebalance.delay.ms`, 3 s there; shorter here so single consumers start fast).
    pub group_initial_rebalance_delay: Duration,
    /// How often consumer-protocol (KIP-848) members heartbeat (Kafka's
    /// `group.consumer.heartbeat.interval.ms`, 5 s).
    pub group_consumer_heartbeat_interval: Duration,
    /// How long a consumer-protocol member stays without a heartbeat (Kafka's
    /// `group.consumer.session.timeout.ms`, 45 s).
    pub group_consumer_session_timeout: Duration,
    /// Retention and orphan-janitor settings (see `retention.rs`).
    pub maintenance: crate::retention::MaintenanceConfig,
    /// ACL enforcement and super users.
    pub acl: crate::security::AclConfig,
    /// Connection, memory and partition limits (see `limits.rs`).
    pub limits: crate::limits::Limits,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            node_id: 0,
            advertised_host: "127.0.0.1".into(),
            advertised_port: 9092,
            http_addr: String::new(),
            cluster_id: "streamhouse".into(),
            auto_create_topics: false,
            default_partitions: 1,
            flush_interval: Duration::from_millis(5),
            flush_max_bytes: 4 * 1024 * 1024,
            max_flushes_in_flight: 4,
            max_buffered_bytes: 256 * 1024 * 1024,
            max_request_bytes: 100 * 1024 * 1024,
            max_in_flight_per_connection: 128,
            max_in_flight_bytes_per_connection: 64 * 1024 * 1024,
            lease_ttl: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(2),
            segment_index: SegmentIndexConfig::default(),
            group_initial_rebalance_delay: Duration::from_millis(500),
            group_consumer_heartbeat_interval: Duration::from_secs(5),
            group_consumer_session_timeout: Duration::from_secs(45),
            maintenance: Default::default(),
            acl: Default::default(),
            limits: Default::default(),
        }
    }
}

/// One partition this agent has open: its writer (while it holds the lease) and reader.
pub(crate) struct PartitionLog {
    pub(crate) topic: Topic,
    pub(crate) partition: u32,
    pub(crate) writer: PartitionWriter,
    pub(crate) reader: PartitionReader,
    /// The partition's segment index (shared by writer and reader), for its counters.
    pub(crate) index: Arc<SegmentIndex>,
    fence: LeaseFence,
    /// Until when the lease is surely held unless renewed: the TTL from the moment the request
    /// that took or last renewed it was sent (the database, whose clock judges expiry, counts
    /// from a later moment), so agents' clocks never matter.
    lease_valid_until: Mutex<Instant>,
}

impl PartitionLog {
    fn lease_valid_until(&self) -> Instant {
        *self
            .lease_valid_until
            .lock()
            .expect("lease expiry poisoned")
    }

    fn lease_renewed(&self, valid_until: Instant) {
        let mut current = self
            .lease_valid_until
            .lock()
            .expect("lease expiry poisoned");
        *current = (*current).max(valid_until);
    }
}

/// A lease just taken, with the moment the request that took it was sent.
pub(crate) type TakenLease = (PartitionLease, Instant);

impl PartitionLog {
    /// The lease this agent writes the partition under.
    pub(crate) fn fence(&self) -> &LeaseFence {
        &self.fence
    }
}

type PartitionKey = (String, u32);

/// A Kafka-speaking agent's shared state.
pub struct Broker {
    pub(crate) config: BrokerConfig,
    pub(crate) agent_id: String,
    pub(crate) metadata: Arc<dyn MetadataStore>,
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) cache: Arc<SegmentCache>,
    partitions: RwLock<HashMap<PartitionKey, Arc<OnceCell<Arc<PartitionLog>>>>>,
    /// Signalled on every append, so the flusher sleeps while nothing is buffered.
    data_ready: Arc<Notify>,
    /// Signalled when a partition crossed `flush_max_bytes`.
    flush_now: Notify,
    groups: Arc<GroupCoordinator>,
    pub(crate) membership: Membership,
    /// Partitions being flushed and released; not reopened until their lease is given up, so
    /// two writers of this agent never share a lease epoch (and thus object keys).
    handing_off: Mutex<HashSet<PartitionKey>>,
    /// The credential caches of the SASL listeners serving this broker, updated at once when
    /// users change through [`Broker::users`].
    pub(crate) authenticators: RwLock<Vec<Arc<crate::security::SaslAuthenticator>>>,
    /// Decides requests by ACLs (allows everything unless `config.acl.enabled`).
    pub(crate) authorizer: Arc<Authorizer>,
    /// Bytes of produced records not yet durable may hold (see `max_buffered_bytes`).
    buffer_budget: Arc<Semaphore>,
    /// Flush cycles in flight (see `max_flushes_in_flight`).
    flushes_in_flight: Arc<Semaphore>,
    /// The background loops (flusher, heartbeat, controller, renewal, maintenance).
    pub(crate) tasks: Supervisor,
    /// Wakes the transaction marker writer: this agent decided a transaction.
    pub(crate) txn_markers_due: Arc<Notify>,
}

impl Broker {
    /// Creates the broker state and starts its background tasks: the flusher, the heartbeat
    /// (which registers the agent), the controller (which hands off and leases) and lease
    /// renewal. Every call on `metadata` is bounded: half the lease TTL, at least a second.
    pub fn start(
        config: BrokerConfig,
        agent_id: String,
        metadata: Arc<dyn MetadataStore>,
        store: Arc<dyn ObjectStore>,
        cache: Arc<SegmentCache>,
    ) -> Arc<Self> {
        let deadline = CallDeadline(metadata_call_deadline(config.lease_ttl));
        let metadata: Arc<dyn MetadataStore> =
            Arc::new(HookedMetadataStore::new(metadata, deadline));
        let groups = GroupCoordinator::new(
            metadata.clone(),
            &agent_id,
            config.lease_ttl,
            config.group_initial_rebalance_delay,
            crate::groups::ConsumerTimeouts {
                heartbeat_interval: config.group_consumer_heartbeat_interval,
                session_timeout: config.group_consumer_session_timeout,
            },
        );
        let me = registration(&config, &agent_id);
        let config_copy = config.clone();
        let authorizer = Arc::new(Authorizer::new(&config.acl));
        if config.acl.enabled {
            // The first reload runs at once; `Acls::reload` awaits one before serving.
            authorizer.spawn_refresh(metadata.clone(), config.acl.refresh);
        }
        let broker = Arc::new(Self {
            config,
            agent_id,
            metadata,
            store,
            cache,
            partitions: RwLock::new(HashMap::new()),
            data_ready: Arc::default(),
            flush_now: Notify::new(),
            groups,
            membership: Membership::new(me),
            handing_off: Mutex::default(),
            authenticators: RwLock::default(),
            authorizer,
            buffer_budget: Arc::new(Semaphore::new(config_budget(&config_copy))),
            flushes_in_flight: Arc::new(Semaphore::new(config_copy.max_flushes_in_flight.max(1))),
            tasks: Supervisor::default(),
            txn_markers_due: Arc::default(),
        });
        let weak = || Arc::downgrade(&broker);
        broker.tasks.spawn("flusher", run_flusher(weak()));
        broker.tasks.spawn("heartbeat", run_heartbeat(weak()));
        broker.tasks.spawn("controller", run_controller(weak()));
        broker
            .tasks
            .spawn("lease renewal", run_lease_renewal(weak()));
        let sweeper = crate::groups::run_sweeper(Arc::downgrade(&broker.groups));
        broker.tasks.spawn("group sweeper", sweeper);
        crate::retention::spawn_maintenance(&broker);
        crate::txn::spawn_tasks(&broker);
        broker
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

    /// The consumer-group coordinator.
    pub(crate) fn groups(&self) -> &GroupCoordinator {
        &self.groups
    }

    /// Consumer lag of `group` for every partition it has committed an offset for.
    pub async fn group_lag(&self, group: &str) -> Result<Vec<PartitionLag>, MetadataError> {
        self.groups.lag(group).await
    }

    /// The cluster (live agents, leases) as the controller last read it, at most a round
    /// ago: Metadata requests are answered from it without touching the metadata store, so a
    /// failover storm of them adds no load to it.
    pub(crate) fn cluster_view(&self) -> ClusterView {
        self.membership.view()
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
        if !may_create || crate::handlers::admin::validate_topic_name(name).is_err() {
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
        self.partitions
            .write()
            .expect("partition map poisoned")
            .retain(|(t, _), _| t != name);
        info!(topic = %name, segments = segments.len(), "deleted topic");
        Ok(id)
    }

    /// The open partition, opening it (taking its lease) on first use. Only partitions this
    /// agent should own are opened; others fail as fenced (NOT_LEADER_OR_FOLLOWER).
    pub(crate) async fn partition(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Arc<PartitionLog>, StorageError> {
        self.partition_leased(topic, partition, None).await
    }

    /// Opens the partition of `lease`, just taken by this agent (the controller takes many in
    /// one transaction), unless it is open already.
    pub(crate) async fn open_leased(
        &self,
        lease: TakenLease,
    ) -> Result<Arc<PartitionLog>, StorageError> {
        let topic = lease.0.topic.clone();
        self.partition_leased(&topic, lease.0.partition, Some(lease))
            .await
    }

    /// [`Broker::partition`], opening with `lease` when given (else taking the lease itself).
    async fn partition_leased(
        &self,
        topic: &str,
        partition: u32,
        lease: Option<TakenLease>,
    ) -> Result<Arc<PartitionLog>, StorageError> {
        let cell = {
            let key = (topic.to_string(), partition);
            let existing = self
                .partitions
                .read()
                .expect("partition map poisoned")
                .get(&key)
                .cloned();
            match existing {
                Some(cell) => cell,
                None => self
                    .partitions
                    .write()
                    .expect("partition map poisoned")
                    .entry(key)
                    .or_default()
                    .clone(),
            }
        };
        cell.get_or_try_init(|| self.open_partition(topic, partition, lease))
            .await
            .cloned()
    }

    async fn open_partition(
        &self,
        name: &str,
        partition: u32,
        lease: Option<TakenLease>,
    ) -> Result<Arc<PartitionLog>, StorageError> {
        let topic = self
            .metadata
            .get_topic(name)
            .await?
            .ok_or_else(|| MetadataError::UnknownTopic(name.to_string()))?;
        if partition >= topic.partitions {
            return Err(MetadataError::UnknownPartition {
                topic: name.to_string(),
                partition,
            }
            .into());
        }
        self.check_may_open(&topic, partition)?;
        // A lease taken earlier is used while it is not yet due for renewal; an older one is
        // taken (renewed) again, so a partition never opens on a lease about to lapse.
        let fresh = lease.filter(|(_, sent)| !self.renewal_due(*sent + self.config.lease_ttl));
        let lease = match fresh {
            Some(lease) => Some(lease),
            None => {
                let sent = Instant::now();
                let ttl = self.lease_ttl_ms();
                let acquired = self
                    .metadata
                    .acquire_lease(name, partition, &self.agent_id, ttl);
                acquired.await?.map(|lease| (lease, sent))
            }
        };
        let (lease, sent) = lease.ok_or_else(|| StorageError::Fenced {
            topic: name.to_string(),
            partition,
            reason: "another agent holds the partition lease".into(),
        })?;
        let fence = LeaseFence {
            agent_id: self.agent_id.clone(),
            epoch: lease.epoch,
        };
        let index = Arc::new(SegmentIndex::new(
            name,
            partition,
            self.metadata.clone(),
            self.config.segment_index.clone(),
        ));
        let storage = self.partition_storage(&topic, partition, &index);
        let writer_config = WriterConfig::for_topic(&topic.config);
        let writer =
            PartitionWriter::open(storage.clone(), writer_config, Some(fence.clone())).await?;
        self.check_writer_is_current(&writer, name, partition)
            .await?;
        let reader = PartitionReader::new(storage).with_writer(&writer);
        Ok(Arc::new(PartitionLog {
            topic,
            partition,
            writer,
            reader,
            index,
            fence,
            lease_valid_until: Mutex::new(sent + self.config.lease_ttl),
        }))
    }

    /// What a partition's writer, reader and consolidator on this agent are built from.
    pub(crate) fn partition_storage(
        &self,
        topic: &Topic,
        partition: u32,
        index: &Arc<SegmentIndex>,
    ) -> PartitionStorage {
        PartitionStorage {
            topic: topic.clone(),
            partition,
            store: self.store.clone(),
            metadata: self.metadata.clone(),
            index: index.clone(),
            cache: self.cache.clone(),
        }
    }

    /// Refuses a writer opened on outdated partition state. The metadata cache may still hold
    /// the state this agent last wrote before another agent took the partition over; a writer
    /// starting there would reuse offsets the other agent acknowledged (its commits would be
    /// refused, but reads would end at the old high watermark). The partition is opened again
    /// once the cache entry has lapsed; meanwhile clients are told to retry.
    async fn check_writer_is_current(
        &self,
        writer: &PartitionWriter,
        topic: &str,
        partition: u32,
    ) -> Result<(), StorageError> {
        // One row, not the whole topic: opening every partition of a topic would otherwise
        // read the topic's partitions once per partition (minutes at 10,000 partitions).
        let stored = self
            .metadata
            .get_partition_uncached(topic, partition)
            .await?;
        if (stored.high_watermark, stored.log_start_offset)
            == (writer.high_watermark(), writer.log_start_offset())
        {
            return Ok(());
        }
        Err(StorageError::Fenced {
            topic: topic.to_string(),
            partition,
            reason: format!(
                "cached partition state (high watermark {}) is behind the store ({}); \
                 the partition opens once the cache catches up",
                writer.high_watermark(),
                stored.high_watermark
            ),
        })
    }

    /// Refuses to open a partition another agent should own, one being handed off, or any
    /// while shutting down.
    fn check_may_open(&self, topic: &Topic, partition: u32) -> Result<(), StorageError> {
        let refuse = |reason: &str| {
            Err(StorageError::Fenced {
                topic: topic.name.clone(),
                partition,
                reason: reason.into(),
            })
        };
        if self.membership.is_stopping() {
            return refuse("this agent is shutting down");
        }
        if !self.membership.should_own(topic, partition) {
            return refuse("another agent owns the partition");
        }
        let key = (topic.name.clone(), partition);
        if self.lock_handing_off().contains(&key) {
            return refuse("the partition is being handed off");
        }
        Ok(())
    }

    fn lock_handing_off(&self) -> std::sync::MutexGuard<'_, HashSet<PartitionKey>> {
        self.handing_off.lock().expect("hand-off set poisoned")
    }

    pub(crate) fn lease_ttl_ms(&self) -> i64 {
        self.config.lease_ttl.as_millis() as i64
    }

    /// Whether a lease surely held until `valid_until` is due for renewal: a third of the TTL
    /// has passed since it was taken or last renewed.
    fn renewal_due(&self, valid_until: Instant) -> bool {
        valid_until.saturating_duration_since(Instant::now()) <= self.config.lease_ttl * 2 / 3
    }

    /// Whether the controller may take the lease of a partition it should own: not while
    /// shutting down, nor while the partition is being handed off.
    pub(crate) fn may_lease(&self, topic: &str, partition: u32) -> bool {
        !self.membership.is_stopping()
            && !self
                .lock_handing_off()
                .contains(&(topic.to_string(), partition))
    }

    /// Whether `topic`/`partition` is open here.
    pub(crate) fn is_open(&self, topic: &str, partition: u32) -> bool {
        self.partitions
            .read()
            .expect("partition map poisoned")
            .get(&(topic.to_string(), partition))
            .is_some_and(|cell| cell.initialized())
    }

    /// Renews, in one metadata statement, the leases of those of `logs` (open partitions) that
    /// are due (a third of the TTL has passed); closes each partition whose lease was lost
    /// (taken over, released, or expired: renewal never revives a lease, so the partition is
    /// opened again at a new epoch). On a metadata error nothing changes and the next round
    /// retries, well before the leases expire.
    pub(crate) async fn renew_due_leases(&self, logs: &[Arc<PartitionLog>]) {
        let due: Vec<&Arc<PartitionLog>> = logs
            .iter()
            .filter(|log| self.renewal_due(log.lease_valid_until()))
            .collect();
        if due.is_empty() {
            return;
        }
        let held: Vec<HeldLease> = due
            .iter()
            .map(|log| HeldLease {
                topic: log.topic.name.clone(),
                partition: log.partition,
                epoch: log.fence.epoch,
            })
            .collect();
        let sent = Instant::now();
        let renewed = match self
            .metadata
            .renew_leases(&self.agent_id, &held, self.lease_ttl_ms())
            .await
        {
            Ok(renewed) => renewed,
            Err(e) => {
                warn!(leases = held.len(), "lease renewal failed: {e}");
                return;
            }
        };
        let renewed: HashSet<(&str, u32)> = renewed
            .iter()
            .map(|l| (l.topic.as_str(), l.partition))
            .collect();
        for log in due {
            let (name, partition) = (log.topic.name.as_str(), log.partition);
            if renewed.contains(&(name, partition)) {
                log.lease_renewed(sent + self.config.lease_ttl);
            } else {
                warn!(topic = %name, partition, "lost partition lease; closing partition");
                self.close_partition(log, false).await;
            }
        }
    }

    /// Stops serving an open partition: takes it out of the open set, flushes what it has
    /// buffered and, with `release`, gives its lease up so the next owner can take over at once.
    ///
    /// No acknowledged record is lost and none is left hanging: records appended before the
    /// lease is released are flushed and acknowledged; a flush after the release is refused as
    /// fenced, so anything appended later fails with a retriable NOT_LEADER_OR_FOLLOWER.
    pub(crate) async fn close_partition(&self, log: &PartitionLog, release: bool) {
        let (name, partition) = (log.topic.name.as_str(), log.partition);
        let key = (name.to_string(), partition);
        self.lock_handing_off().insert(key.clone());
        self.forget_partition(name, partition);
        // Flushing until there is nothing left also waits out a flush the flusher has in
        // progress (flushes take turns), and picks up appends that raced the removal.
        loop {
            match log.writer.flush().await {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(e) => {
                    warn!(topic = %name, partition, "flush while closing partition failed: {e}");
                    break;
                }
            }
        }
        if release {
            if let Err(e) = self
                .metadata
                .release_lease(name, partition, &log.fence.agent_id, log.fence.epoch)
                .await
            {
                // The lease then simply expires.
                warn!(topic = %name, partition, "releasing partition lease failed: {e}");
            }
        }
        if log.writer.buffered_bytes() > 0 {
            let _ = log.writer.flush().await;
        }
        self.lock_handing_off().remove(&key);
    }

    /// Tells the flusher that a partition has buffered records (`buffered_bytes` in its open
    /// segment after the append); flushes at once past the size limit.
    pub(crate) fn appended(&self, buffered_bytes: usize) {
        self.data_ready.notify_one();
        if buffered_bytes >= self.config.flush_max_bytes {
            self.flush_now.notify_one();
        }
    }

    /// Every partition currently open.
    pub(crate) fn open_partitions(&self) -> Vec<Arc<PartitionLog>> {
        self.partitions
            .read()
            .expect("partition map poisoned")
            .values()
            .filter_map(|cell| cell.get().cloned())
            .collect()
    }

    /// Reserves `bytes` of the buffer budget for records about to be appended, waiting until
    /// `deadline` while it is full. A request larger than the whole budget reserves all of it.
    pub(crate) async fn reserve_buffer(
        &self,
        bytes: u64,
        deadline: tokio::time::Instant,
    ) -> Result<OwnedSemaphorePermit, StorageError> {
        let budget = u32::try_from(config_budget(&self.config)).unwrap_or(u32::MAX);
        let permits = u32::try_from(bytes).unwrap_or(u32::MAX).clamp(1, budget);
        let acquire = self.buffer_budget.clone().acquire_many_owned(permits);
        match tokio::time::timeout_at(deadline, acquire).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => {
                metrics::counter!("streamhouse_produce_buffer_full_total").increment(1);
                Err(StorageError::BufferFull)
            }
        }
    }

    /// What a flush cycle of this agent needs.
    fn flush_context(&self) -> FlushContext {
        FlushContext {
            store: self.store.clone(),
            metadata: self.metadata.clone(),
            cache: self.cache.clone(),
            upload: WriterConfig::default(),
        }
    }

    /// Seals every partition with buffered records into one flush cycle (empty when none has).
    fn seal_dirty(&self) -> FlushCycle {
        let dirty: Vec<PartitionWriter> = self
            .open_partitions()
            .into_iter()
            .filter(|p| p.writer.buffered_bytes() > 0)
            .map(|p| p.writer.clone())
            .collect();
        FlushCycle::seal(&self.flush_context(), &dirty)
    }

    /// Flushes every partition with buffered records in one cycle and waits for it.
    pub async fn flush_all(&self) {
        let cycle = self.seal_dirty();
        if !cycle.is_empty() {
            let report = cycle.run().await;
            self.after_flush(&report);
        }
    }

    /// Drops partitions whose writer was fenced; their producers already got the error.
    fn after_flush(&self, report: &FlushReport) {
        for (writer, result) in &report.results {
            if let Err(e) = result {
                warn!(writer = ?writer, "flush failed: {e}");
                if e.is_fenced() {
                    if let Some(log) = self
                        .open_partitions()
                        .into_iter()
                        .find(|log| log.writer.same_as(writer))
                    {
                        self.forget_partition(&log.topic.name, log.partition);
                    }
                }
            }
        }
    }

    fn forget_partition(&self, topic: &str, partition: u32) {
        self.partitions
            .write()
            .expect("partition map poisoned")
            .remove(&(topic.to_string(), partition));
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
        let open = self.open_partitions();
        let closing = futures::future::join_all(open.iter().map(|p| self.close_partition(p, true)));
        futures::future::join(closing, self.groups.hand_off(|_| false)).await;
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

/// Group commit: once records are buffered, waits `flush_interval` for more to join them (or
/// less, when a partition fills up), seals every partition with buffered records into one cycle
/// and starts it without waiting for it to finish, so cycles overlap (at most
/// `max_flushes_in_flight`; the flusher waits for a slot before sealing the next).
async fn run_flusher(broker: std::sync::Weak<Broker>) {
    let Some(data_ready) = broker.upgrade().map(|b| b.data_ready.clone()) else {
        return;
    };
    let mut cycles = tokio::task::JoinSet::new();
    loop {
        // Idle waits hold no reference to the broker, and come in slices, so the flusher of a
        // dropped broker ends within a second.
        let idle = tokio::time::timeout(Duration::from_secs(1), data_ready.notified()).await;
        while cycles.try_join_next().is_some() {}
        let Some(b) = broker.upgrade() else { break };
        if idle.is_err() {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(b.config.flush_interval) => {}
            _ = b.flush_now.notified() => {}
        }
        let Ok(slot) = b.flushes_in_flight.clone().acquire_owned().await else {
            break;
        };
        let cycle = b.seal_dirty();
        if cycle.is_empty() {
            continue;
        }
        let weak = Arc::downgrade(&b);
        drop(b);
        cycles.spawn(async move {
            let report = cycle.run().await;
            if let Some(b) = weak.upgrade() {
                b.after_flush(&report);
            }
            drop(slot);
        });
    }
    // A dropped broker's cycles still finish: their producers are waiting.
    while cycles.join_next().await.is_some() {}
}

/// The buffer budget in permits (bytes), within what a semaphore can count.
/// How long any one metadata call of the agent may take: half the lease TTL, so a call stuck
/// on a stalled database fails (and is retried) while the leases it would renew are still
/// valid; never below a second, so a slow but working store is not cut short.
fn metadata_call_deadline(lease_ttl: Duration) -> Duration {
    (lease_ttl / 2).max(Duration::from_secs(1))
}

fn config_budget(config: &BrokerConfig) -> usize {
    config.max_buffered_bytes.clamp(1, Semaphore::MAX_PERMITS)
}

/// This agent's row in the agents table.
fn registration(config: &BrokerConfig, agent_id: &str) -> AgentInfo {
    let now = now_ms();
    AgentInfo {
        agent_id: agent_id.to_string(),
        kafka_host: config.advertised_host.clone(),
        kafka_port: config.advertised_port,
        http_addr: config.http_addr.clone(),
        node_id: config.node_id,
        last_heartbeat_ms: now,
        started_at_ms: now,
    }
}
