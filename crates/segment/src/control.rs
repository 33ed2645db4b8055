//! Transaction control batches (KIP-98): the commit and abort markers a transaction
//! coordinator's decision writes to every partition of the transaction. Kafka's format: a
//! RecordBatch v2 with the transactional and control attribute bits, the transaction's producer
//! id and epoch, base sequence -1, and one record whose key is `(version: i16 = 0, type: i16)`
//! (0 abort, 1 commit) and whose value is `(version: i16 = 0, coordinator_epoch: i32)`.

use bytes::Bytes;

use crate::RecordBatch;

/// Attribute bits of a control batch: transactional (bit 4) and control (bit 5), no codec.
const CONTROL_ATTRIBUTES: i16 = 0x30;
/// The one record: length 16 (zigzag 0x20), attributes, timestamp and offset deltas 0, a
/// 4-byte key (zigzag 0x08), a 6-byte value (zigzag 0x0c), no headers.
const RECORD_LEN: usize = 17;

/// What a control batch says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlMarker {
    /// Commit (true) or abort (false).
    pub commit: bool,
    /// The epoch of the coordinator that decided.
    pub coordinator_epoch: i32,
}

impl RecordBatch {
    /// A commit or abort marker of `producer_id` at `producer_epoch`, at offset 0 (the writer
    /// places it), stamped `timestamp_ms`.
    pub fn control(
        producer_id: i64,
        producer_epoch: i16,
        marker: ControlMarker,
        timestamp_ms: i64,
    ) -> RecordBatch {
        let mut buf = Vec::with_capacity(61 + RECORD_LEN);
        buf.extend_from_slice(&0i64.to_be_bytes());
        buf.extend_from_slice(&((49 + RECORD_LEN) as i32).to_be_bytes());
        buf.extend_from_slice(&(-1i32).to_be_bytes());
        buf.push(2);
        buf.extend_from_slice(&[0; 4]);
        buf.extend_from_slice(&CONTROL_ATTRIBUTES.to_be_bytes());
        buf.extend_from_slice(&0i32.to_be_bytes());
        buf.extend_from_slice(&timestamp_ms.to_be_bytes());
        buf.extend_from_slice(&timestamp_ms.to_be_bytes());
        buf.extend_from_slice(&producer_id.to_be_bytes());
        buf.extend_from_slice(&producer_epoch.to_be_bytes());
        buf.extend_from_slice(&(-1i32).to_be_bytes());
        buf.extend_from_slice(&1i32.to_be_bytes());
        buf.extend_from_slice(&[0x20, 0, 0, 0, 0x08, 0, 0, 0, u8::from(marker.commit), 0x0c]);
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&marker.coordinator_epoch.to_be_bytes());
        buf.push(0);
        let crc = crate::crc32c(&buf[21..]);
        buf[17..21].copy_from_slice(&crc.to_be_bytes());
        RecordBatch::parse_all(Bytes::from(buf))
            .expect("a control batch is a valid batch")
            .remove(0)
    }

    /// The marker a control batch carries; `None` for a data batch or a control record of
    /// another type or version (Kafka ignores those too).
    pub fn control_marker(&self) -> Option<ControlMarker> {
        if !self.header().is_control() {
            return None;
        }
        let record = self.records(self.len()).ok()?.next()?.ok()?;
        let key = record.key?;
        let value = record.value.unwrap_or_default();
        let (version, kind) = (key.get(..2)?, key.get(2..4)?);
        let commit = match (version, kind) {
            ([0, 0], [0, 0]) => false,
            ([0, 0], [0, 1]) => true,
            _ => return None,
        };
        let epoch = value
            .get(2..6)
            .map_or(-1, |e| i32::from_be_bytes([e[0], e[1], e[2], e[3]]));
        Some(ControlMarker {
            commit,
            coordinator_epoch: epoch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_batches_round_trip_and_validate() {
        for commit in [false, true] {
            let marker = ControlMarker {
                commit,
                coordinator_epoch: 7,
            };
            let batch = RecordBatch::control(42, 3, marker, 1_000);
            let h = batch.header();
            assert!(h.is_control() && h.is_transactional());
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (42, 3, -1)
            );
            assert_eq!(batch.record_count(), 1);
            batch.validate_records(1 << 20).unwrap();
            assert_eq!(batch.control_marker(), Some(marker));
            assert_eq!(batch.with_base_offset(9).control_marker(), Some(marker));
        }
        assert_eq!(
            crate::test_support::batch(0, 1, 10, 5).control_marker(),
            None
        );
    }
}
