use thiserror::Error;

/// Result alias for metadata operations.
pub type Result<T, E = MetadataError> = std::result::Result<T, E>;

/// Errors from a [`crate::MetadataStore`].
#[derive(Debug, Error)]
pub enum MetadataError {
    /// A topic with this name already exists.
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    /// No topic with this name.
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
    /// The partition does not exist in the topic.
    #[error("partition {partition} of topic '{topic}' does not exist")]
    UnknownPartition {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: u32,
    },
    /// A request that is invalid on its face (e.g. shrinking partitions, zero partitions).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A segment commit whose base offset is not the partition's current high watermark: another
    /// writer committed first, or the caller's view is stale.
    #[error(
        "segment for '{topic}'/{partition} starts at {base_offset} but the high watermark is {high_watermark}"
    )]
    OffsetConflict {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: u32,
        /// Base offset of the rejected segment.
        base_offset: i64,
        /// The partition's high watermark at the time of the commit.
        high_watermark: i64,
    },
    /// The caller does not hold the partition lease with the epoch it claimed (fencing).
    #[error("lease on '{topic}'/{partition} is not held by '{agent_id}' at epoch {epoch}")]
    Fenced {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: u32,
        /// Agent that attempted the write.
        agent_id: String,
        /// Epoch the agent claimed.
        epoch: i64,
    },
    /// The caller does not hold the group's coordinator lease at the epoch it claimed, or the
    /// lease has expired (by the database's clock).
    #[error("coordinator lease of group '{group}' is not held by '{agent_id}' at epoch {epoch}")]
    GroupFenced {
        /// Group id.
        group: String,
        /// Agent that attempted the write.
        agent_id: String,
        /// Epoch the agent claimed.
        epoch: i64,
    },
    /// A partition row stayed locked by another transaction past the short wait a segment
    /// commit allows: nothing was recorded; a retry may succeed.
    #[error("partition '{topic}'/{partition} is locked by another transaction; nothing recorded")]
    RowLocked {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: u32,
    },
    /// A transaction change was refused: the transactional id's row changed since it was read,
    /// or its coordinator lease is not held (any more), or the transaction is not open.
    #[error("transaction '{transactional_id}' changed under the caller: {reason}")]
    TxnConflict {
        /// The transactional id.
        transactional_id: String,
        /// What did not match.
        reason: String,
    },
    /// The call did not complete within its deadline (see [`crate::CallDeadline`]); a write's
    /// outcome is unknown.
    #[error("metadata call {method} did not complete within {after:?}")]
    Timeout {
        /// The store method.
        method: &'static str,
        /// The deadline.
        after: std::time::Duration,
    },
    /// The backing database failed.
    #[error("metadata database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A schema migration failed.
    #[error("metadata migration error: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A stored value could not be decoded.
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
}
