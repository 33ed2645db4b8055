//! The error type of the storage crate.

use std::ops::Range;
use std::sync::Arc;

use streamhouse_metadata::MetadataError;
use streamhouse_segment::SegmentError;
use thiserror::Error;

/// Result alias for storage operations.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Everything that can go wrong while writing or reading a partition.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The metadata store failed or refused the request.
    #[error("metadata: {0}")]
    Metadata(#[from] MetadataError),

    /// An object store request failed.
    #[error("object store request for '{key}' failed: {source}")]
    ObjectStore {
        /// Object key the request was about.
        key: String,
        /// Underlying error.
        #[source]
        source: object_store::Error,
    },

    /// A segment object does not hold what the metadata says it holds. Never returned as data.
    #[error("corrupt segment {key} bytes {}..{}: {source}", .range.start, .range.end)]
    Corrupt {
        /// Object key of the segment.
        key: String,
        /// Absolute byte range within the object that is bad.
        range: Range<u64>,
        /// What is wrong.
        #[source]
        source: Corruption,
    },

    /// A read asked for an offset the partition does not have.
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

    /// A segment that must exist for a readable offset is missing from the segment index.
    #[error("no segment for offset {offset} of '{topic}'/{partition}")]
    MissingSegment {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: u32,
        /// Offset that should be covered.
        offset: i64,
    },

    /// A producer snapshot in the metadata store does not decode.
    #[error(
        "producer state of producer {producer_id} on '{topic}'/{partition} is corrupt: {reason}"
    )]
    CorruptProducerState {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// The producer whose snapshot is corrupt.
        producer_id: i64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The writer lost ownership of the partition (its lease epoch is stale or another writer
    /// committed first). It refuses all further work; the partition must be reopened.
    #[error("writer for '{topic}'/{partition} is fenced: {reason}")]
    Fenced {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: u32,
        /// Why.
        reason: String,
    },

    /// The flush carrying these records failed, so they were discarded (never acknowledged).
    #[error("flush of '{topic}'/{partition} failed; records from offset {from_offset} were discarded: {source}")]
    FlushFailed {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: u32,
        /// First discarded offset (the high watermark at the failure).
        from_offset: i64,
        /// The failure, shared by every waiter on the discarded records.
        #[source]
        source: Arc<StorageError>,
    },

    /// The writer was dropped before the records became durable.
    #[error("writer for '{topic}'/{partition} shut down before the records became durable")]
    WriterClosed {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: u32,
    },

    /// An idempotent producer used an epoch older than the partition has seen (Kafka
    /// `INVALID_PRODUCER_EPOCH`; the producer was fenced by a newer instance).
    #[error(
        "producer {producer_id} epoch {epoch} is older than the current epoch {current_epoch}"
    )]
    InvalidProducerEpoch {
        /// Producer id.
        producer_id: i64,
        /// Epoch in the batch.
        epoch: i16,
        /// Newest epoch seen for the producer.
        current_epoch: i16,
    },

    /// A transactional batch of a producer with no transaction open on the partition, which
    /// the coordinator did not confirm includes it (KIP-890): a late write of a finished
    /// transaction, or a partition never added to it.
    #[error("producer {producer_id} (epoch {epoch}) has no ongoing transaction including {topic}/{partition}")]
    TxnNotVerified {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: u32,
        /// Producer id.
        producer_id: i64,
        /// Epoch in the batch.
        epoch: i16,
    },

    /// An idempotent producer skipped or reordered sequence numbers (Kafka
    /// `OUT_OF_ORDER_SEQUENCE_NUMBER`).
    #[error(
        "producer {producer_id} epoch {epoch}: sequence {found} out of order, expected {expected}"
    )]
    OutOfOrderSequence {
        /// Producer id.
        producer_id: i64,
        /// Epoch in the batch.
        epoch: i16,
        /// First sequence the partition would accept.
        expected: i32,
        /// First sequence of the batch.
        found: i32,
    },

    /// A sequence gap at a writer opened moments ago, from a producer that has appended
    /// nothing through it yet: the batches in the gap were most likely refused by the
    /// partition's previous owner and are being resent, so the client is told to retry (as
    /// `NOT_LEADER_OR_FOLLOWER`) rather than that its sequence is broken. Past
    /// [`crate::SEQUENCE_GAP_GRACE`] the same gap is [`Self::OutOfOrderSequence`].
    #[error(
        "producer {producer_id} epoch {epoch}: sequence {found} is ahead of {expected} at a \
         partition that changed hands moments ago; its earlier batches may still be on their \
         way, retry"
    )]
    EarlierBatchesInFlight {
        /// Producer id.
        producer_id: i64,
        /// Epoch in the batch.
        epoch: i16,
        /// First sequence the partition would accept.
        expected: i32,
        /// First sequence of the batch.
        found: i32,
    },

    /// A flush did not get its records committed before the earliest deadline among them (the
    /// producers' request timeout), so it was abandoned: nothing of it will ever be visible.
    #[error("flush abandoned at its deadline during {stage} of object {key}")]
    DeadlineExceeded {
        /// `upload` or `commit`.
        stage: &'static str,
        /// The shared object the records were in.
        key: String,
    },

    /// The records were sealed after records of the same partition whose flush failed; they
    /// were discarded with them.
    #[error("an earlier flush of the partition failed")]
    Superseded,

    /// One failure shared by every partition of a flush cycle.
    #[error("{0}")]
    Shared(Arc<StorageError>),

    /// The agent's buffer budget stayed full until the request's deadline: the store is slower
    /// than the producers, so the records were refused rather than buffered without bound.
    #[error("the agent's produce buffer is full")]
    BufferFull,

    /// A batch handed to the writer cannot be appended.
    #[error("invalid batch for '{topic}'/{partition}: {reason}")]
    InvalidBatch {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: u32,
        /// What is wrong.
        reason: String,
    },
}

/// Why a segment object was judged corrupt.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Corruption {
    /// The segment codec rejected the bytes (checksum, magic, structure).
    #[error(transparent)]
    Format(#[from] SegmentError),
    /// The object is not the size the metadata recorded.
    #[error("object is {actual} bytes, metadata says {expected}")]
    Size {
        /// Size recorded at commit.
        expected: u64,
        /// Size found in the store.
        actual: u64,
    },
    /// The object decodes but disagrees with the metadata (wrong offsets).
    #[error("{0}")]
    Mismatch(String),
}

impl StorageError {
    /// Wraps an object store error with the key it concerned.
    pub(crate) fn object_store(key: &str, source: object_store::Error) -> Self {
        Self::ObjectStore {
            key: key.to_owned(),
            source,
        }
    }

    /// A codec error about the object `key` of `object_len` bytes; the error's own range is
    /// used when it has one (clipped to the object: a corrupted length field can point anywhere).
    pub(crate) fn corrupt(
        key: &str,
        object_len: u64,
        fallback: Range<u64>,
        source: SegmentError,
    ) -> Self {
        let range = source.byte_range().unwrap_or(fallback);
        let end = range.end.min(object_len);
        Self::Corrupt {
            key: key.to_owned(),
            range: range.start.min(end)..end,
            source: Corruption::Format(source),
        }
    }

    /// Whether this error (or the flush failure it wraps) means the writer was fenced.
    pub fn is_fenced(&self) -> bool {
        match self {
            Self::Fenced { .. } => true,
            Self::FlushFailed { source, .. } | Self::Shared(source) => source.is_fenced(),
            _ => false,
        }
    }
}
