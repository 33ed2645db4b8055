//! Mapping StreamHouse errors to the Kafka error codes clients act on.

use kafka_protocol::error::ResponseError;
use streamhouse_metadata::MetadataError;
use streamhouse_storage::StorageError;

/// The Kafka error code for a metadata failure.
pub(crate) fn metadata_error_code(e: &MetadataError) -> ResponseError {
    match e {
        MetadataError::TopicExists(_) => ResponseError::TopicAlreadyExists,
        MetadataError::UnknownTopic(_) | MetadataError::UnknownPartition { .. } => {
            ResponseError::UnknownTopicOrPartition
        }
        MetadataError::Invalid(_) => ResponseError::InvalidRequest,
        MetadataError::OffsetConflict { .. } | MetadataError::Fenced { .. } => {
            ResponseError::NotLeaderOrFollower
        }
        // Another agent coordinates the group now: the client finds it again.
        MetadataError::GroupFenced { .. } => ResponseError::NotCoordinator,
        MetadataError::TxnConflict { .. } => ResponseError::ConcurrentTransactions,
        MetadataError::Database(_)
        | MetadataError::RowLocked { .. }
        | MetadataError::Timeout { .. }
        | MetadataError::Migration(_)
        | MetadataError::Corrupt(_) => ResponseError::KafkaStorageError,
    }
}

/// The Kafka error code for a storage failure.
pub(crate) fn storage_error_code(e: &StorageError) -> ResponseError {
    if e.is_fenced() {
        // Another agent owns the partition now: the client refreshes metadata and follows it.
        return ResponseError::NotLeaderOrFollower;
    }
    match e {
        StorageError::Metadata(m) => metadata_error_code(m),
        StorageError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        StorageError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
        StorageError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        // Retriable and "not stored": the client resends the missing batches first, where an
        // out-of-order answer makes librdkafka bump its epoch (see SEQUENCE_GAP_GRACE).
        StorageError::EarlierBatchesInFlight { .. } => ResponseError::NotLeaderOrFollower,
        StorageError::TxnNotVerified { .. } => ResponseError::InvalidTxnState,
        StorageError::InvalidBatch { .. } => ResponseError::CorruptMessage,
        StorageError::Corrupt { .. } => ResponseError::CorruptMessage,
        // A committed segment's object is gone: data loss the client must report, where
        // KAFKA_STORAGE_ERROR would have it retry silently forever.
        StorageError::ObjectStore {
            source: object_store::Error::NotFound { .. },
            ..
        } => ResponseError::UnknownServerError,
        // Not stored; the client may retry once the store keeps up again.
        StorageError::BufferFull | StorageError::DeadlineExceeded { .. } => {
            ResponseError::RequestTimedOut
        }
        // Retriable: the records were not stored and a retry may succeed.
        _ => ResponseError::KafkaStorageError,
    }
}
