//! The error type of the Broker's programmatic API (used by the HTTP admin and client API).
//!
//! Metadata and storage failures are classified once here, so every caller maps the same
//! condition (unknown topic, topic exists, bad input, ...) to the same answer.

use streamhouse_metadata::MetadataError;
use streamhouse_storage::StorageError;

/// Why a [`crate::Broker`] API call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The request is invalid on its face (bad name, bad config value, bad count).
    #[error("{0}")]
    Invalid(String),
    /// No topic with this name.
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
    /// The topic has no such partition.
    #[error("partition {partition} of topic '{topic}' does not exist")]
    UnknownPartition {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: u32,
    },
    /// A topic with this name already exists.
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    /// A read asked for an offset outside `log_start..=high_watermark`.
    #[error(
        "offset {offset} is out of range: log start {log_start}, high watermark {high_watermark}"
    )]
    OffsetOutOfRange {
        /// Requested offset.
        offset: i64,
        /// Lowest retained offset.
        log_start: i64,
        /// Next offset to be written.
        high_watermark: i64,
    },
    /// The user has no SCRAM credential (for `mechanism`, when one was named).
    #[error("user '{user}' has no {} credential", mechanism.unwrap_or("SCRAM"))]
    UnknownUser {
        /// User name.
        user: String,
        /// The mechanism asked for, if one was.
        mechanism: Option<&'static str>,
    },
    /// No consumer group with this id (no members, no committed offsets).
    #[error("group '{0}' does not exist")]
    UnknownGroup(String),
    /// The group's state forbids the operation (it has members, or is rebalancing).
    #[error("{0}")]
    GroupConflict(String),
    /// Another agent coordinates the consumer group (holds its coordinator lease, or is the
    /// one the assignment names): group changes go there.
    #[error("not the group's coordinator: {message}")]
    NotCoordinator {
        /// What happened, naming the coordinator if known.
        message: String,
        /// The coordinator's HTTP address (`host:port`), if known: where to send the request.
        coordinator_http: Option<String>,
    },
    /// Another agent owns the partition (lease held elsewhere, or this writer was fenced).
    #[error("not the owner of the partition: {0}")]
    NotOwner(String),
    /// Records were appended but not durable within the allowed time; they may still become
    /// durable later.
    #[error("records were not durable within {0:?}")]
    Timeout(std::time::Duration),
    /// The metadata store failed.
    #[error("metadata store: {0}")]
    Metadata(#[source] MetadataError),
    /// The object store or a partition writer/reader failed.
    #[error("storage: {0}")]
    Storage(#[source] StorageError),
}

impl From<MetadataError> for ApiError {
    fn from(e: MetadataError) -> Self {
        match e {
            MetadataError::TopicExists(t) => Self::TopicExists(t),
            MetadataError::UnknownTopic(t) => Self::UnknownTopic(t),
            MetadataError::UnknownPartition { topic, partition } => {
                Self::UnknownPartition { topic, partition }
            }
            MetadataError::Invalid(m) => Self::Invalid(m),
            e @ (MetadataError::Fenced { .. } | MetadataError::OffsetConflict { .. }) => {
                Self::NotOwner(e.to_string())
            }
            e => Self::Metadata(e),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        if e.is_fenced() {
            return Self::NotOwner(e.to_string());
        }
        match e {
            StorageError::Metadata(m) => m.into(),
            StorageError::OffsetOutOfRange {
                offset,
                log_start,
                high_watermark,
            } => Self::OffsetOutOfRange {
                offset,
                log_start,
                high_watermark,
            },
            StorageError::InvalidBatch { reason, .. } => Self::Invalid(reason),
            e => Self::Storage(e),
        }
    }
}
