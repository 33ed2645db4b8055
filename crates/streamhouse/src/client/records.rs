//! Records for the batches this client produces (not idempotent, not transactional).

use bytes::Bytes;
use kafka_protocol::records::{Record, TimestampType};

/// Record number `index` of a new batch, at `timestamp` (ms since the Unix epoch), without
/// headers.
pub fn record(index: usize, timestamp: i64, key: Option<Bytes>, value: Option<Bytes>) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        // Its position in the batch, which the encoder turns into an offset delta.
        offset: index as i64,
        // The encoder starts a new batch whenever `offset - sequence` changes; this keeps it
        // constant with the base sequence at -1 (none).
        sequence: (index as i32).wrapping_sub(1),
        timestamp,
        key,
        value,
        headers: Default::default(),
    }
}
