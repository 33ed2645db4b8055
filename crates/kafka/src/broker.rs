//! The agent's state behind the Kafka handlers: the partitions it has open for writing and
//! reading, the group-commit flusher, and partition leases.
//!
//! Write path: a Produce appends to the partition's [`PartitionWriter`] (in memory, offsets
//! assigned) and waits for durability. The flusher wakes every `flush_interval` (or sooner when a
//! partition has `flush_max_bytes` buffered) and flushes every partition with buffered data
//! concurrently: each flush uploads one segment object and commits it in the metadata store; only
//! then are the waiting produces acknowledged. Many producers and partitions thus share one
//! flush cycle (group commit).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use object_store::{ObjectStore, ObjectStoreExt};
use streamhouse_metadata::{now_ms, LeaseFence, MetadataError, MetadataStore, NewTopic, Topic};
use streamhouse_storage::{
    PartitionReader, PartitionWriter, SegmentCache, SegmentIndex, SegmentIndexConfig, StorageError,
    WriterConfig,
};
use tokio::sync::{Notify, OnceCell};
use tracing::{info, warn};
use uuid::Uuid;

use crate::groups::{GroupCoordinator, PartitionLag};

/// Settings of a Kafka-speaking agent.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Kafka node id this agent answers as.
    pub node_id: i32,
    /// Host clients are told to connect to.
    pub advertised_host: String,
    /// Port clients are told to connect to.
    pub advertised_port: u16,
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
    /// Largest request frame accepted; larger ones close the connection.
    pub max_request_bytes: usize,
    /// Requests a connection may have in progress at once.
    pub max_in_flight_per_connection: usize,
    /// Request bytes a connection may have in progress at once; with `max_request_bytes` this
    /// bounds what one client can make the agent hold.
    pub max_in_flight_bytes_per_connection: usize,
    /// Partition lease duration; renewed at a third of it.
    pub lease_ttl: Duration,
    /// Segment index settings for every partition.
    pub segment_index: SegmentIndexConfig,
    /// How long a new (empty) group's first rebalance waits for more members before completing,
    /// extended per joining member up to the rebalance timeout (Kafka's
    /// `group.initial.rebalance.delay.ms`, 3 s there; shorter here so single consumers start fast).
    pub group_initial_rebalance_delay: Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            node_id: 0,
            advertised_host: "127.0.0.1".into(),
            advertised_port: 9092,
            cluster_id: "streamhouse".into(),
            auto_create_topics: false,
            default_partitions: 1,
            flush_interval: Duration::from_millis(5),
            flush_max_bytes: 4 * 1024 * 1024,
            max_request_bytes: 100 * 1024 * 1024,
            max_in_flight_per_connection: 128,
            max_in_flight_bytes_per_connection: 64 * 1024 * 1024,
            lease_ttl: Duration::from_secs(30),
            segment_index: SegmentIndexConfig::default(),
            group_initial_rebalance_delay: Duration::from_millis(500),
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
    data_ready: Notify,
    /// Signalled when a partition crossed `flush_max_bytes`.
    flush_now: Notify,
    groups: Arc<GroupCoordinator>,
}

impl Broker {
    /// Creates the broker state and starts its background tasks (flusher, lease renewal).
    pub fn start(
        config: BrokerConfig,
        agent_id: String,
        metadata: Arc<dyn MetadataStore>,
        store: Arc<dyn ObjectStore>,
        cache: Arc<SegmentCache>,
    ) -> Arc<Self> {
        let groups =
            GroupCoordinator::start(metadata.clone(), config.group_initial_rebalance_delay);
        let broker = Arc::new(Self {
            config,
            agent_id,
            metadata,
            store,
            cache,
            partitions: RwLock::new(HashMap::new()),
            data_ready: Notify::new(),
            flush_now: Notify::new(),
            groups,
        });
        tokio::spawn(run_flusher(Arc::downgrade(&broker)));
        tokio::spawn(run_lease_renewal(Arc::downgrade(&broker)));
        broker
    }

    /// This agent's settings.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
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

    /// Node id of the agent leading `topic`/`partition`.
    pub(crate) fn leader_for(&self, _topic: &str, _partition: u32) -> i32 {
        self.config.node_id
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
        Ok(topic)
    }

    /// Deletes a topic: metadata first (so it vanishes at once), then its objects in the
    /// background. Returns the deleted topic's id.
    pub(crate) async fn delete_topic(&self, name: &str) -> Result<Uuid, MetadataError> {
        let id = self
            .metadata
            .get_topic(name)
            .await?
            .ok_or_else(|| MetadataError::UnknownTopic(name.to_string()))?
            .id;
        let segments = self.metadata.delete_topic(name).await?;
        self.partitions
            .write()
            .expect("partition map poisoned")
            .retain(|(t, _), _| t != name);
        info!(topic = %name, segments = segments.len(), "deleted topic");
        let store = self.store.clone();
        tokio::spawn(async move {
            for s in segments {
                let path = object_store::path::Path::from(s.object_key.as_str());
                if let Err(e) = store.delete(&path).await {
                    // Left for the orphan janitor; the metadata no longer references it.
                    warn!(key = %s.object_key, "deleting segment of deleted topic failed: {e}");
                }
            }
        });
        Ok(id)
    }

    /// The open partition, opening it (taking its lease) on first use.
    pub(crate) async fn partition(
        &self,
        topic: &str,
        partition: u32,
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
        cell.get_or_try_init(|| self.open_partition(topic, partition))
            .await
            .cloned()
    }

    async fn open_partition(
        &self,
        name: &str,
        partition: u32,
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
        let lease = self
            .metadata
            .acquire_lease(
                name,
                partition,
                &self.agent_id,
                now_ms(),
                self.lease_ttl_ms(),
            )
            .await?
            .ok_or_else(|| StorageError::Fenced {
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
        let writer_config = WriterConfig::for_topic(&topic.config);
        let writer = PartitionWriter::open(
            &topic,
            partition,
            self.store.clone(),
            self.metadata.clone(),
            index.clone(),
            self.cache.clone(),
            writer_config,
            Some(fence.clone()),
        )
        .await?;
        let reader = PartitionReader::new(
            &topic,
            partition,
            self.store.clone(),
            self.metadata.clone(),
            index.clone(),
            self.cache.clone(),
        )
        .with_writer(&writer);
        Ok(Arc::new(PartitionLog {
            topic,
            partition,
            writer,
            reader,
            index,
            fence,
        }))
    }

    fn lease_ttl_ms(&self) -> i64 {
        self.config.lease_ttl.as_millis() as i64
    }

    /// Tells the flusher that `log` has buffered records; flushes at once past the size limit.
    pub(crate) fn appended(&self, log: &PartitionLog) {
        self.data_ready.notify_one();
        if log.writer.buffered_bytes() >= self.config.flush_max_bytes {
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

    /// Flushes every partition with buffered records, concurrently.
    pub async fn flush_all(&self) {
        let dirty: Vec<_> = self
            .open_partitions()
            .into_iter()
            .filter(|p| p.writer.buffered_bytes() > 0)
            .collect();
        if dirty.is_empty() {
            return;
        }
        let started = std::time::Instant::now();
        let results = futures::future::join_all(dirty.iter().map(|p| p.writer.flush())).await;
        for (p, result) in dirty.iter().zip(results) {
            if let Err(e) = result {
                // The waiting produces get the error through their durability tickets.
                warn!(topic = %p.topic.name, "flush failed: {e}");
                if e.is_fenced() {
                    self.forget_partition(&p.topic.name, p.partition);
                }
            }
        }
        metrics::histogram!("streamhouse_flush_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!("streamhouse_flush_partitions").record(dirty.len() as f64);
    }

    fn forget_partition(&self, topic: &str, partition: u32) {
        self.partitions
            .write()
            .expect("partition map poisoned")
            .remove(&(topic.to_string(), partition));
    }

    /// Flushes everything and releases leases; call before exiting.
    pub async fn shutdown(&self) {
        self.flush_all().await;
        for p in self.open_partitions() {
            let _ = self
                .metadata
                .release_lease(&p.topic.name, p.partition, &p.fence.agent_id, p.fence.epoch)
                .await;
        }
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
/// less, when a partition fills up), then flushes every partition with buffered records.
async fn run_flusher(broker: std::sync::Weak<Broker>) {
    loop {
        let Some(b) = broker.upgrade() else { return };
        // Waiting in slices lets the flusher of a dropped broker end within a second.
        let idle = tokio::time::timeout(Duration::from_secs(1), b.data_ready.notified()).await;
        if idle.is_err() {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(b.config.flush_interval) => {}
            _ = b.flush_now.notified() => {}
        }
        b.flush_all().await;
    }
}

/// Keeps this agent's partition leases alive; a partition whose lease is lost is closed.
async fn run_lease_renewal(broker: std::sync::Weak<Broker>) {
    loop {
        let Some(period) = broker.upgrade().map(|b| b.config.lease_ttl / 3) else {
            return;
        };
        tokio::time::sleep(period).await;
        let Some(b) = broker.upgrade() else { return };
        for p in b.open_partitions() {
            let name = &p.topic.name;
            let partition = p.partition;
            match b
                .metadata
                .acquire_lease(name, partition, &b.agent_id, now_ms(), b.lease_ttl_ms())
                .await
            {
                Ok(Some(lease)) if lease.epoch == p.fence.epoch => {}
                Ok(_) => {
                    warn!(topic = %name, partition, "lost partition lease; closing partition");
                    b.forget_partition(name, partition);
                }
                Err(e) => warn!(topic = %name, partition, "lease renewal failed: {e}"),
            }
        }
    }
}
