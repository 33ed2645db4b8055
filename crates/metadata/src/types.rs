//! Plain data types stored by a [`crate::MetadataStore`].

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

/// Per-topic settings, with Kafka's names where Kafka has one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    /// `retention.ms`: segments whose newest record is older than this are deleted. `None` keeps
    /// data forever.
    pub retention_ms: Option<i64>,
    /// `retention.bytes`: per partition; the oldest segments are deleted past this size. `None`
    /// means no size limit.
    pub retention_bytes: Option<i64>,
    /// `segment.bytes`: a partition writer rolls its open segment at this size.
    pub segment_bytes: u64,
    /// `segment.ms`: the longest span of append time one segment covers. The open segment is
    /// sealed at every flush, far sooner; consolidation never merges slices appended more
    /// than this apart into one segment, so time-based retention can drop segments on time.
    pub segment_ms: u64,
    /// Any other `key=value` settings given at creation, kept and reported verbatim.
    pub extra: BTreeMap<String, String>,
    /// Names of the settings above that were given on the topic (Kafka's topic overrides,
    /// reported as `DYNAMIC_TOPIC_CONFIG`), even where the value equals the default; names in
    /// `extra` always were. `None` for topics stored before this was recorded: for those a value
    /// counts as given when it differs from the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explicit: Option<BTreeSet<String>>,
}

impl Default for TopicConfig {
    fn default() -> Self {
        Self {
            retention_ms: Some(7 * 24 * 60 * 60 * 1000),
            retention_bytes: None,
            segment_bytes: 64 * 1024 * 1024,
            segment_ms: 10 * 60 * 1000,
            extra: BTreeMap::new(),
            explicit: None,
        }
    }
}

/// What a caller supplies to create a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    /// Topic name (Kafka rules: 1..=249 chars of `[a-zA-Z0-9._-]`; checked by the caller).
    pub name: String,
    /// Number of partitions, at least 1.
    pub partitions: u32,
    /// Settings.
    pub config: TopicConfig,
}

/// A topic as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    /// Stable identity; object keys use it so a re-created topic never sees old objects.
    pub id: Uuid,
    /// Topic name.
    pub name: String,
    /// Number of partitions.
    pub partitions: u32,
    /// Settings.
    pub config: TopicConfig,
    /// Creation time, ms since the Unix epoch.
    pub created_at_ms: i64,
}

/// Durable progress of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Partition index.
    pub partition: u32,
    /// Next offset to be written; every offset below it is durable and readable (unless below
    /// `log_start_offset`).
    pub high_watermark: i64,
    /// Lowest offset still retained.
    pub log_start_offset: i64,
}

impl PartitionState {
    /// The log start offset after a request to truncate before `requested`: never lowered,
    /// never past the high watermark.
    pub(crate) fn truncated_log_start(&self, requested: i64) -> i64 {
        requested
            .min(self.high_watermark)
            .max(self.log_start_offset)
    }
}

/// One immutable segment holding offsets `base_offset..=last_offset` of one partition: the byte
/// range `object_offset..object_offset + size_bytes` of an object, which may hold the segments
/// of other partitions too (a shared object, docs/format.md) or only this one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentInfo {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// First offset in the segment.
    pub base_offset: i64,
    /// Last offset in the segment (inclusive).
    pub last_offset: i64,
    /// Number of records.
    pub record_count: i64,
    /// Size of the segment (its byte range in the object).
    pub size_bytes: u64,
    /// Key of the object in the object store.
    pub object_key: String,
    /// Where the segment starts in the object.
    pub object_offset: u64,
    /// Size of the whole object (`size_bytes` when the segment is the whole object).
    pub object_size: u64,
    /// Smallest record timestamp (ms).
    pub min_timestamp_ms: i64,
    /// Largest record timestamp (ms).
    pub max_timestamp_ms: i64,
    /// When the segment was committed (ms since the Unix epoch).
    pub created_at_ms: i64,
}

/// What a partition's segments add up to ([`crate::SegmentLog::segment_totals`]), computed by
/// the store without listing them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SegmentTotals {
    /// How many segments the partition holds.
    pub segments: u64,
    /// Their bytes in all.
    pub bytes: u64,
    /// The largest record timestamp among them (ms); `None` without segments.
    pub max_timestamp_ms: Option<i64>,
}

/// One partition's part of a group commit ([`crate::SegmentLog::commit_segments`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentCommit {
    /// The segment to record; its base offset must equal the partition's high watermark.
    pub segment: SegmentInfo,
    /// Snapshots of the producers that wrote it, stored in the same transaction.
    pub producers: Vec<ProducerSnapshot>,
    /// The lease the writer holds, checked at commit time.
    pub fence: Option<LeaseFence>,
    /// Transaction markers the segment holds: each discharges its pending row and, for an
    /// abort, records the aborted range, in the same transaction.
    pub markers: Vec<crate::WrittenMarker>,
}

/// What became of one [`SegmentCommit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Recorded: by this call, or by an earlier attempt of the very same commit (same object,
    /// byte range and offsets), whose answer was lost.
    Committed,
    /// The fence's lease is not held (any more): nothing recorded.
    Fenced,
    /// The partition's high watermark is not the segment's base offset: another writer got there
    /// first. Nothing recorded.
    OffsetConflict {
        /// The partition's high watermark.
        high_watermark: i64,
    },
    /// The partition does not exist (any more): nothing recorded.
    UnknownPartition {
        /// Whether its topic exists (the partition index is out of range) or not (deleted).
        topic_exists: bool,
    },
    /// The partition's row stayed locked by another transaction (a stalled session, another
    /// agent's long transaction) for the short wait a group commit allows: nothing recorded by
    /// this call. Unlike the others this is not final: the same commit may be retried, and if
    /// an earlier attempt of it had an unknown outcome, the lock may be that attempt's own.
    RowLocked,
}

/// Proof a writer claims to hold a partition's lease; commits check it (fencing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseFence {
    /// Agent holding the lease.
    pub agent_id: String,
    /// Lease epoch the agent obtained.
    pub epoch: i64,
}

/// A consumer group's committed position in one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// Next offset the group will consume.
    pub offset: i64,
    /// Leader epoch the client sent, or -1.
    pub leader_epoch: i32,
    /// Opaque client metadata string.
    pub metadata: Option<String>,
    /// Commit time (ms since the Unix epoch).
    pub committed_at_ms: i64,
}

/// A registered agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// Unique agent id.
    pub agent_id: String,
    /// Host Kafka clients should connect to.
    pub kafka_host: String,
    /// Kafka listener port.
    pub kafka_port: u16,
    /// HTTP admin address (`host:port`).
    pub http_addr: String,
    /// Kafka broker (node) id this agent answers as.
    pub node_id: i32,
    /// Last heartbeat (ms since the Unix epoch).
    pub last_heartbeat_ms: i64,
    /// Registration time (ms since the Unix epoch).
    pub started_at_ms: i64,
}

/// Ownership of one partition by one agent until `expires_at_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionLease {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// Owning agent.
    pub agent_id: String,
    /// Increases every time ownership changes hands; never decreases.
    pub epoch: i64,
    /// Expiry (ms since the Unix epoch).
    pub expires_at_ms: i64,
}

/// A lease an agent believes it holds, as it asks [`crate::Leases::renew_leases`] to
/// extend it: renewed only if still that agent's, at this epoch, and unexpired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldLease {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// The epoch the agent holds the lease at.
    pub epoch: i64,
}

/// The lease of a consumer group's coordinator: the agent that serves the group's membership
/// and offset commits while it holds it. Expiry is judged by the database's clock, so it is not
/// reported; a holder counts its lease valid for the TTL from the moment it sent the request
/// that took or renewed it, which can only be earlier than the database's moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupLease {
    /// Group id.
    pub group_id: String,
    /// Coordinating agent.
    pub agent_id: String,
    /// Increases every time the coordinator changes (or the lease had expired); never decreases.
    pub epoch: i64,
    /// The last generation a coordinator of the group handed out (0 before any): the next
    /// coordinator continues after it.
    pub generation: i32,
}

impl GroupLease {
    /// The fence offset commits and generations of this lease's holder carry.
    pub fn fence(&self) -> LeaseFence {
        LeaseFence {
            agent_id: self.agent_id.clone(),
            epoch: self.epoch,
        }
    }
}

/// Current wall-clock time in ms since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The idempotence state of one producer on one partition, as the partition's writer last
/// committed it. The metadata store keeps `state` opaque: it is the storage layer's encoding
/// (docs/format.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerSnapshot {
    /// The producer id.
    pub producer_id: i64,
    /// Offset of the producer's newest batch; a snapshot below the log start is stale.
    pub last_offset: i64,
    /// When the producer last wrote (ms since the Unix epoch), for expiry.
    pub updated_at_ms: i64,
    /// The encoded state.
    pub state: Vec<u8>,
}

/// The idempotent-producer state a partition committed: one snapshot per producer, and which
/// producers it may have forgotten.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerSnapshots {
    /// Every snapshot, ordered by producer id.
    pub snapshots: Vec<ProducerSnapshot>,
    /// Producers with a lower id may have had state here that expired; a producer at or above
    /// it without a snapshot never had any state committed here (producer ids are allocated in
    /// increasing order).
    pub forgotten_below: i64,
}

/// A user's SASL/SCRAM credential for one mechanism: the salted-password derivatives of RFC 5802,
/// from which the password cannot be recovered.
#[derive(Clone, PartialEq, Eq)]
pub struct UserCredential {
    /// The user name (the principal is `User:<name>`).
    pub user: String,
    /// `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: String,
    /// Salt of the salted password.
    pub salt: Vec<u8>,
    /// PBKDF2 iteration count.
    pub iterations: u32,
    /// `H(ClientKey)`: verifies client proofs.
    pub stored_key: Vec<u8>,
    /// Signs the server's final message.
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for UserCredential {
    // Keys stay out of logs: with them a server could be impersonated.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserCredential")
            .field("user", &self.user)
            .field("mechanism", &self.mechanism)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}
