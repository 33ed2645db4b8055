//! Producing and consuming without a Kafka client (the HTTP API's records endpoints).
//!
//! Produce encodes the records as one Kafka RecordBatch v2 per partition and appends it through
//! the same path as a Kafka Produce (`Partitions::append`), so validation,
//! durability and metrics are shared. Consume reads stored batches like Fetch and decodes them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE,
};
use serde::Serialize;
use streamhouse_metadata::now_ms;
use streamhouse_segment::RecordBatch;
use streamhouse_storage::{Appended, StorageError};

use crate::api_error::ApiError;
use crate::broker::Broker;

/// A record to produce.
#[derive(Debug, Clone, Default)]
pub struct ProduceRecord {
    /// Record key; also chooses the partition when `partition` is `None`.
    pub key: Option<Bytes>,
    /// Record value (`None` is a tombstone).
    pub value: Option<Bytes>,
    /// Headers in order. Kafka keys headers by name, so a repeated name keeps the last value.
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Target partition; `None` hashes the key like Kafka's default partitioner, or rotates
    /// over the partitions for records without a key.
    pub partition: Option<u32>,
    /// Create time (ms since the Unix epoch); now when `None`.
    pub timestamp_ms: Option<i64>,
}

/// Where a produced record was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProducedRecord {
    /// Partition index.
    pub partition: u32,
    /// Offset assigned to the record.
    pub offset: i64,
}

/// A record read back from a partition.
#[derive(Debug, Clone)]
pub struct ConsumedRecord {
    /// The record's offset.
    pub offset: i64,
    /// Its timestamp (ms since the Unix epoch).
    pub timestamp_ms: i64,
    /// Key, if any.
    pub key: Option<Bytes>,
    /// Value, if any.
    pub value: Option<Bytes>,
    /// Headers.
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Records read from one partition.
#[derive(Debug, Clone)]
pub struct Consumed {
    /// Records at or after the requested offset, in offset order.
    pub records: Vec<ConsumedRecord>,
    /// Offset to read from next.
    pub next_offset: i64,
    /// The partition's high watermark at the read.
    pub high_watermark: i64,
    /// The partition's log start offset at the read.
    pub log_start_offset: i64,
}

/// Rotates keyless records over partitions (Kafka's pre-2.4 default for null keys).
static ROUND_ROBIN: AtomicU32 = AtomicU32::new(0);

impl Broker {
    /// Appends `records` to `topic` and returns, in input order, where each was stored once
    /// all are durable. Records for one partition go into one batch, so they get consecutive
    /// offsets. Fails with [`ApiError::Timeout`] when not durable within `timeout`.
    pub async fn produce_records(
        &self,
        topic: &str,
        records: Vec<ProduceRecord>,
        timeout: Duration,
    ) -> Result<Vec<ProducedRecord>, ApiError> {
        if records.is_empty() {
            return Err(ApiError::Invalid("no records to produce".into()));
        }
        let auto_create = self.config.auto_create_topics;
        if auto_create && self.metadata.get_topic(topic).await?.is_none() {
            // Auto-created topics count against the partition caps like created ones.
            let partitions = u64::from(self.config.default_partitions);
            self.check_partition_cap(partitions)
                .await
                .map_err(ApiError::Invalid)?;
        }
        let partitions = self
            .topic_or_auto_create(topic, auto_create)
            .await?
            .ok_or_else(|| ApiError::UnknownTopic(topic.to_string()))?
            .partitions;
        let mut by_partition: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, r) in records.iter().enumerate() {
            let p = choose_partition(r, partitions);
            if p >= partitions {
                return Err(ApiError::UnknownPartition {
                    topic: topic.to_string(),
                    partition: p,
                });
            }
            by_partition.entry(p).or_default().push(i);
        }
        let mut appended = Vec::with_capacity(by_partition.len());
        for (p, indices) in by_partition {
            let batch = encode_batch(indices.iter().map(|&i| &records[i]))?;
            let log = self.partitions.partition(topic, p).await?;
            let deadline = tokio::time::Instant::now() + timeout;
            appended.push((
                p,
                indices,
                self.partitions.append(&log, batch, deadline, None).await?,
            ));
        }
        let mut out = vec![
            ProducedRecord {
                partition: 0,
                offset: 0
            };
            records.len()
        ];
        for (p, indices, a) in wait_durable(appended, timeout).await? {
            for (k, i) in indices.into_iter().enumerate() {
                out[i] = ProducedRecord {
                    partition: p,
                    offset: a + k as i64,
                };
            }
        }
        Ok(out)
    }

    /// Reads up to `max_records` records (and about `max_bytes`, at least one batch) of
    /// `topic`/`partition` from `offset`. Reading at the high watermark returns no records.
    pub async fn consume_records(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Consumed, ApiError> {
        let log = self.partitions.partition(topic, partition).await?;
        let read = log.reader.read(offset, max_bytes.max(1)).await?;
        metrics::counter!("streamhouse_bytes_out_total").increment(read.size_bytes() as u64);
        // Records are decoded as they stream out of each batch, never a whole batch at once:
        // the answer stops at `max_bytes` of keys, values and headers (at least one record),
        // and a batch that expands past the request limit is an error, not an allocation.
        let limit = self.config.max_request_bytes;
        let mut records = Vec::new();
        let mut size = 0usize;
        let mut full = false;
        // Transaction markers are no records to a consumer (Kafka's consumers skip them too).
        'batches: for batch in read.batches.iter().filter(|b| !b.header().is_control()) {
            let decoded = batch
                .records(limit)
                .map_err(|e| stored_batch_error(topic, partition, batch, e))?;
            for record in decoded {
                let record = match record {
                    Ok(record) => record,
                    // What was decoded before is valid; the next read reports the error.
                    Err(_) if !records.is_empty() => {
                        full = true;
                        break 'batches;
                    }
                    Err(e) => return Err(stored_batch_error(topic, partition, batch, e)),
                };
                if record.offset < offset {
                    continue;
                }
                let record_size = record_size(&record);
                if records.len() >= max_records
                    || (!records.is_empty() && size + record_size > max_bytes)
                {
                    full = true;
                    break 'batches;
                }
                size += record_size;
                records.push(consumed(record));
            }
        }
        let next_offset = match full {
            true => records.last().map_or(offset, |r| r.offset + 1),
            false => read.next_offset.max(offset),
        };
        Ok(Consumed {
            records,
            next_offset,
            high_watermark: read.high_watermark,
            log_start_offset: read.log_start_offset,
        })
    }
}

fn choose_partition(r: &ProduceRecord, partitions: u32) -> u32 {
    match (r.partition, &r.key) {
        (Some(p), _) => p,
        (None, Some(key)) => kafka_partition_for_key(key, partitions),
        (None, None) => ROUND_ROBIN.fetch_add(1, Ordering::Relaxed) % partitions,
    }
}

/// Kafka's default partitioner for keyed records: `toPositive(murmur2(key)) % partitions`, so
/// HTTP and Kafka producers put the same key in the same partition.
pub(crate) fn kafka_partition_for_key(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) as u32 % partitions
}

/// MurmurHash2 (32-bit) with Kafka's seed, as `org.apache.kafka.common.utils.Utils.murmur2`.
fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes(chunk.try_into().expect("chunk of 4"));
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, &b) in tail.iter().enumerate() {
            h ^= (b as u32) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// One uncompressed, non-idempotent RecordBatch v2 holding `records` (offsets from 0; the
/// writer assigns the real ones).
fn encode_batch<'a>(
    records: impl Iterator<Item = &'a ProduceRecord>,
) -> Result<Vec<RecordBatch>, ApiError> {
    let now = now_ms();
    let records: Vec<Record> = records
        .enumerate()
        .map(|(i, r)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch whenever `offset - sequence` changes; this keeps
            // it constant while the batch's base sequence stays NO_SEQUENCE (not idempotent).
            sequence: NO_SEQUENCE.wrapping_add(i as i32),
            timestamp: r.timestamp_ms.unwrap_or(now),
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (StrBytes::from_string(k.clone()), v.clone()))
                .collect::<IndexMap<_, _>>(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options)
        .map_err(|e| ApiError::Invalid(format!("records cannot be encoded: {e}")))?;
    RecordBatch::parse_all(buf.freeze())
        .map_err(|e| ApiError::Invalid(format!("encoded batch is invalid: {e}")))
}

/// Waits for every partition's append to be durable; returns `(partition, record indices,
/// base offset)` for each.
async fn wait_durable(
    appended: Vec<(u32, Vec<usize>, Appended)>,
    timeout: Duration,
) -> Result<Vec<(u32, Vec<usize>, i64)>, ApiError> {
    let waits = appended.into_iter().map(|(p, indices, a)| async move {
        a.durable.wait().await?;
        Ok::<_, StorageError>((p, indices, a.base_offset))
    });
    let all = futures::future::try_join_all(waits);
    match tokio::time::timeout(timeout, all).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(ApiError::Timeout(timeout)),
    }
}

fn consumed(r: streamhouse_segment::Record) -> ConsumedRecord {
    ConsumedRecord {
        offset: r.offset,
        timestamp_ms: r.timestamp,
        key: r.key,
        value: r.value,
        headers: r
            .headers
            .into_iter()
            .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
            .collect(),
    }
}

/// Bytes of a record's key, value and headers: what an HTTP consume's `max_bytes` counts.
fn record_size(r: &streamhouse_segment::Record) -> usize {
    let len = |b: &Option<Bytes>| b.as_ref().map_or(0, Bytes::len);
    len(&r.key)
        + len(&r.value)
        + r.headers
            .iter()
            .map(|(k, v)| k.len() + len(v))
            .sum::<usize>()
}

fn stored_batch_error(
    topic: &str,
    partition: u32,
    batch: &RecordBatch,
    e: streamhouse_segment::SegmentError,
) -> ApiError {
    ApiError::Storage(StorageError::InvalidBatch {
        topic: topic.to_string(),
        partition,
        reason: format!(
            "stored batch at {} does not decode: {e}",
            batch.base_offset()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from Kafka's `UtilsTest.testMurmur2`, and values of Kafka's `Utils.murmur2`
    /// quoted by Akka's Kafka-compatible sharding allocator tests.
    #[test]
    fn murmur2_matches_kafka() {
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            (b"abc", 479470107),
            (b"1", -1993445489),
            (b"12", 126087238),
            (b"123", -267702483),
            (b"1234", -1614185708),
            (b"12345", -1188365604),
        ];
        for (key, expected) in cases {
            assert_eq!(murmur2(key), *expected, "{:?}", std::str::from_utf8(key));
        }
    }

    #[test]
    fn keyed_records_use_the_kafka_partition() {
        // toPositive(-973932308) % 7
        let expected = ((-973932308i32 & 0x7fff_ffff) as u32) % 7;
        assert_eq!(kafka_partition_for_key(b"21", 7), expected);
        let r = ProduceRecord {
            key: Some(Bytes::from_static(b"21")),
            ..Default::default()
        };
        assert_eq!(choose_partition(&r, 7), expected);
    }

    #[test]
    fn encoded_batches_parse() {
        let r = ProduceRecord {
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"v")),
            headers: vec![("h".into(), None)],
            timestamp_ms: Some(5),
            ..Default::default()
        };
        let batches = encode_batch([&r, &r].into_iter()).unwrap();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].last_offset() - batches[0].base_offset(), 1);
    }
}
