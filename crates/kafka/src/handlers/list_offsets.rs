//! ListOffsets: earliest, latest, the record with the largest timestamp (KIP-734), or the first
//! offset at or after a timestamp.

use futures::StreamExt;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_request::ListOffsetsPartition;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use streamhouse_segment::{RecordBatch, SegmentError};
use streamhouse_storage::StorageError;
use tracing::warn;

use std::collections::HashMap;

use streamhouse_metadata::PartitionState;

use super::CONCURRENT_PARTITIONS;
use crate::broker::Broker;
use crate::errors::storage_error_code;
use crate::partitions::PartitionLog;
use crate::security::{Access, Op, Resource};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
/// KIP-734 (v7+): the record with the largest timestamp.
const MAX_TIMESTAMP: i64 = -3;
/// KIP-1005 (v8+): the earliest offset on the broker's local disk. Every retained record is in
/// the object store, which is this agent's log, so it is the log start.
const EARLIEST_LOCAL: i64 = -4;
/// KIP-1005 (v9+): the highest offset uploaded to tiered storage. A record is acknowledged only
/// once its segment is in the object store, so that is the last acknowledged offset (-1 when
/// none is).
const LATEST_TIERED: i64 = -5;

pub(crate) async fn handle(
    b: &Broker,
    access: &Access,
    req: ListOffsetsRequest,
) -> ListOffsetsResponse {
    // As Kafka: read_committed consumers' "latest" is the last stable offset.
    let committed = req.isolation_level == 1;
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.as_str();
        let permitted = access.allows(Op::Describe, Resource::Topic, name);
        let unloaded = if permitted && !committed {
            unloaded_watermarks(b, name, &t.partitions).await
        } else {
            HashMap::new()
        };
        // Concurrently, in request order: a partition's log may have to be built first.
        let partitions = futures::stream::iter(t.partitions)
            .map(|p| {
                let watermarks = u32::try_from(p.partition_index)
                    .ok()
                    .and_then(|i| unloaded.get(&i).copied());
                partition_offsets(b, name, permitted, p, committed, watermarks)
            })
            .buffered(CONCURRENT_PARTITIONS)
            .collect()
            .await;
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// The watermarks of the requested partitions this agent holds without their logs built, for
/// the queries they answer (see [`crate::partitions::Partitions::unloaded_watermarks`]); none when the lookup
/// fails, so the usual path answers (and reports the error).
async fn unloaded_watermarks(
    b: &Broker,
    topic: &str,
    partitions: &[ListOffsetsPartition],
) -> HashMap<u32, PartitionState> {
    let wanted: Vec<u32> = partitions
        .iter()
        // The queries the watermarks answer, whatever they are.
        .filter(|p| watermark_offset(p.timestamp, 0, 0).is_some())
        .filter_map(|p| u32::try_from(p.partition_index).ok())
        .collect();
    if wanted.is_empty() {
        return HashMap::new();
    }
    b.partitions
        .unloaded_watermarks(topic, &wanted)
        .await
        .unwrap_or_default()
}

/// One partition's answer; `unloaded`: its watermarks, when held without its log built.
async fn partition_offsets(
    b: &Broker,
    topic: &str,
    permitted: bool,
    p: ListOffsetsPartition,
    committed: bool,
    unloaded: Option<PartitionState>,
) -> ListOffsetsPartitionResponse {
    let response = ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
    let quick =
        unloaded.and_then(|s| watermark_offset(p.timestamp, s.log_start_offset, s.high_watermark));
    let result = match u32::try_from(p.partition_index) {
        _ if !permitted => Err(ResponseError::TopicAuthorizationFailed),
        Ok(_) if let Some(offset) = quick => Ok((offset, -1)),
        Ok(partition) => match b.partitions.partition(topic, partition).await {
            Ok(log) => lookup(b, &log, p.timestamp, committed)
                .await
                .map_err(|e| storage_error_code(&e)),
            Err(e) => Err(storage_error_code(&e)),
        },
        Err(_) => Err(ResponseError::UnknownTopicOrPartition),
    };
    match result {
        Ok((offset, timestamp)) => response.with_offset(offset).with_timestamp(timestamp),
        Err(code) => response
            .with_error_code(code.code())
            .with_offset(-1)
            .with_timestamp(-1),
    }
}

/// `(offset, timestamp)` for a ListOffsets query; `(-1, -1)` when no record is that recent.
async fn lookup(
    b: &Broker,
    log: &PartitionLog,
    timestamp: i64,
    committed: bool,
) -> Result<(i64, i64), StorageError> {
    let (start, end) = (log.writer.log_start_offset(), log.writer.high_watermark());
    match timestamp {
        LATEST if committed => Ok((log.writer.last_stable_offset(), -1)),
        MAX_TIMESTAMP => max_timestamp_record(b, log).await,
        ts => match watermark_offset(ts, start, end) {
            Some(offset) => Ok((offset, -1)),
            None => first_record_at_or_after(b, log, ts).await,
        },
    }
}

/// The answer to a query the watermarks alone answer (read_uncommitted); `None` for a
/// timestamp search.
fn watermark_offset(timestamp: i64, start: i64, end: i64) -> Option<i64> {
    match timestamp {
        LATEST => Some(end),
        EARLIEST | EARLIEST_LOCAL => Some(start),
        LATEST_TIERED => Some(if end > start { end - 1 } else { -1 }),
        _ => None,
    }
}

/// The first record carrying the largest timestamp of the partition (Kafka answers with that
/// record, not its batch). The segments' timestamp ranges in the metadata store give the
/// largest timestamp; the timestamp search then finds its record.
async fn max_timestamp_record(b: &Broker, log: &PartitionLog) -> Result<(i64, i64), StorageError> {
    let totals = b
        .segment_log()
        .segment_totals(&log.topic.name, log.partition)
        .await?;
    match totals.max_timestamp_ms {
        Some(max) => first_record_at_or_after(b, log, max).await,
        None => Ok((-1, -1)),
    }
}

/// The index narrows the search to one batch (the first whose max timestamp reaches `ts`); the
/// batch's records are then streamed, because Kafka answers with the exact record, not the batch
/// start. Decoding is bounded by the request limit and holds one record at a time; a stored
/// batch that does not decode within it is answered at batch granularity (its base offset and
/// max timestamp), which the index alone can give, rather than with an error.
async fn first_record_at_or_after(
    b: &Broker,
    log: &PartitionLog,
    ts: i64,
) -> Result<(i64, i64), StorageError> {
    let Some((mut offset, _)) = log.reader.offset_for_timestamp(ts).await? else {
        return Ok((-1, -1));
    };
    let high_watermark = log.writer.high_watermark();
    let limit = b.config().max_request_bytes;
    while offset < high_watermark {
        let read = log.reader.read(offset, 1).await?;
        let Some(batch) = read.batches.first() else {
            break;
        };
        if batch.max_timestamp() >= ts {
            return Ok(match find_in_batch(batch, offset, ts, limit) {
                Ok(Some(found)) => found,
                Ok(None) => (batch.base_offset().max(offset), batch.max_timestamp()),
                Err(e) => {
                    warn!(topic = %log.topic.name, partition = log.partition,
                          "ListOffsets answered at batch granularity: {e}");
                    (batch.base_offset().max(offset), batch.max_timestamp())
                }
            });
        }
        offset = batch.last_offset() + 1;
    }
    Ok((-1, -1))
}

/// The first record of `batch` at or after `offset` with a timestamp `>= ts`.
fn find_in_batch(
    batch: &RecordBatch,
    offset: i64,
    ts: i64,
    limit: usize,
) -> Result<Option<(i64, i64)>, SegmentError> {
    for record in batch.records(limit)? {
        let record = record?;
        if record.offset >= offset && record.timestamp >= ts {
            return Ok(Some((record.offset, record.timestamp)));
        }
    }
    Ok(None)
}
