//! The agent's settings: [`BrokerConfig`] and its parts. The lowest layer of the crate: every
//! service reads its settings from here, and nothing here depends on a service.

use std::time::Duration;

use streamhouse_storage::{
    CompactionConfig, ConsolidationConfig, JanitorConfig, SegmentIndexConfig, DEFAULT_DELETE_GRACE,
};

use crate::limits::Limits;
use crate::security::AclConfig;

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
    /// Retention and orphan-janitor settings (see `maintenance/`).
    pub maintenance: MaintenanceConfig,
    /// ACL enforcement and super users.
    pub acl: AclConfig,
    /// Connection, memory and partition limits (see `limits.rs`).
    pub limits: Limits,
}

impl BrokerConfig {
    /// The lease TTL in milliseconds, as the metadata store takes it.
    pub(crate) fn lease_ttl_ms(&self) -> i64 {
        self.lease_ttl.as_millis() as i64
    }
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

/// Settings of an agent's retention and janitor tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceConfig {
    /// How often retention is checked (Kafka's `log.retention.check.interval.ms`).
    pub retention_interval: Duration,
    /// How long truncated segment objects stay readable before they are deleted.
    pub delete_grace: Duration,
    /// How often the orphan janitor sweeps.
    pub janitor_interval: Duration,
    /// Orphan janitor safety settings.
    pub janitor: JanitorConfig,
    /// How often the consolidation backlog is checked; a backlog over one round is then
    /// consolidated at once (see `maintenance/consolidation.rs`).
    pub consolidation_interval: Duration,
    /// When and how much to consolidate.
    pub consolidation: ConsolidationConfig,
    /// How often objects scheduled for deletion are deleted when due.
    pub deletion_interval: Duration,
    /// How often compacted topics are checked for compaction (see `maintenance/consolidation.rs`).
    pub compaction_interval: Duration,
    /// Memory and output sizes of compaction.
    pub compaction: CompactionConfig,
    /// Idempotent-producer state of a producer that has not written for this long is dropped
    /// (Kafka's `producer.id.expiration.ms`); checked with retention.
    pub producer_id_expiration: Duration,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        Self {
            retention_interval: Duration::from_secs(5 * 60),
            delete_grace: DEFAULT_DELETE_GRACE,
            janitor_interval: Duration::from_secs(10 * 60),
            janitor: JanitorConfig::default(),
            consolidation_interval: Duration::from_secs(5),
            consolidation: ConsolidationConfig::default(),
            deletion_interval: Duration::from_secs(10),
            compaction_interval: Duration::from_secs(15),
            compaction: CompactionConfig::default(),
            producer_id_expiration: Duration::from_secs(24 * 60 * 60),
        }
    }
}
