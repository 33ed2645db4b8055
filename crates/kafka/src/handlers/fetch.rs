//! Fetch: stored batches returned as stored, with long polling on `max_wait_ms` / `min_bytes`.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ProducerId, TopicName};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::broker::{Broker, PartitionLog};
use crate::errors::storage_error_code;
use crate::security::{Access, Op, Resource};

/// Fetch's isolation level of consumers that read committed transactions only.
const READ_COMMITTED: i8 = 1;

/// One requested partition, resolved once per request.
struct Target {
    index: i32,
    fetch_offset: i64,
    max_bytes: usize,
    log: Result<Arc<PartitionLog>, ResponseError>,
}

pub(crate) async fn handle(b: &Broker, access: &Access, req: FetchRequest) -> FetchResponse {
    let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let min_bytes = req.min_bytes.max(0) as usize;
    let max_bytes = if req.max_bytes > 0 {
        req.max_bytes as usize
    } else {
        usize::MAX
    };
    let committed = req.isolation_level == READ_COMMITTED;
    let topics = resolve(b, access, req).await;
    loop {
        // Subscribe before reading so a commit between the read and the wait is not missed.
        let mut watchers: Vec<watch::Receiver<i64>> = topics
            .iter()
            .flat_map(|(_, ts)| ts.iter())
            .filter_map(|t| t.log.as_ref().ok().map(|l| l.writer.subscribe()))
            .collect();
        let (response, bytes, errors) = read_once(&topics, max_bytes, committed).await;
        if bytes >= min_bytes.max(1) || errors || watchers.is_empty() || Instant::now() >= deadline
        {
            metrics::counter!("streamhouse_bytes_out_total").increment(bytes as u64);
            return response;
        }
        let any_change =
            futures::future::select_all(watchers.iter_mut().map(|w| Box::pin(w.changed())));
        if tokio::time::timeout_at(deadline, any_change).await.is_err() {
            return response;
        }
    }
}

async fn resolve(b: &Broker, access: &Access, req: FetchRequest) -> Vec<(TopicName, Vec<Target>)> {
    let mut out = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let permitted = access.allows(Op::Read, Resource::Topic, t.topic.0.as_str());
        let mut targets = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let log = match u32::try_from(p.partition) {
                _ if !permitted => Err(ResponseError::TopicAuthorizationFailed),
                Ok(partition) => b
                    .partition(t.topic.0.as_str(), partition)
                    .await
                    .map_err(|e| storage_error_code(&e)),
                Err(_) => Err(ResponseError::UnknownTopicOrPartition),
            };
            targets.push(Target {
                index: p.partition,
                fetch_offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes.max(0) as usize,
                log,
            });
        }
        out.push((t.topic, targets));
    }
    out
}

/// Reads every target once. Returns the response, the record bytes in it, and whether any
/// partition carries an error (which ends long polling at once, as in Kafka).
async fn read_once(
    topics: &[(TopicName, Vec<Target>)],
    max_bytes: usize,
    committed: bool,
) -> (FetchResponse, usize, bool) {
    let mut remaining = max_bytes;
    let mut total = 0;
    let mut errors = false;
    let mut responses = Vec::with_capacity(topics.len());
    for (name, targets) in topics {
        let mut partitions = Vec::with_capacity(targets.len());
        for t in targets {
            let data = read_partition(t, remaining, total == 0, committed).await;
            let n = data.records.as_ref().map_or(0, |r| r.len());
            total += n;
            remaining = remaining.saturating_sub(n);
            errors |= data.error_code != 0;
            partitions.push(data);
        }
        responses.push(
            FetchableTopicResponse::default()
                .with_topic(name.clone())
                .with_partitions(partitions),
        );
    }
    (
        FetchResponse::default().with_responses(responses),
        total,
        errors,
    )
}

/// One partition's data. read_committed (`committed`) stops at the last stable offset and
/// lists the aborted transactions among the batches returned, which the client drops (as in
/// Kafka); read_uncommitted reads up to the high watermark.
async fn read_partition(
    t: &Target,
    remaining: usize,
    first: bool,
    committed: bool,
) -> PartitionData {
    let data = PartitionData::default()
        .with_partition_index(t.index)
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1);
    let log = match &t.log {
        Ok(log) => log,
        Err(code) => return data.with_error_code(code.code()),
    };
    let high_watermark = log.writer.high_watermark();
    let stable = log.writer.last_stable_offset();
    let data = data
        .with_high_watermark(high_watermark)
        .with_last_stable_offset(stable)
        .with_log_start_offset(log.writer.log_start_offset());
    let end = if committed { stable } else { high_watermark };
    // Kafka (KIP-74): the first partition with data may exceed the byte limits by one batch so
    // that a consumer can always make progress.
    let budget = t.max_bytes.min(remaining);
    let waiting = (end..=high_watermark).contains(&t.fetch_offset);
    if waiting || (budget == 0 && !first) {
        let aborted = committed.then(Vec::new);
        return data
            .with_records(Some(Bytes::new()))
            .with_aborted_transactions(aborted);
    }
    match log.reader.read(t.fetch_offset, budget.max(1)).await {
        Ok(read) => {
            // The last stable offset is a batch boundary (a transaction's first batch, or the
            // high watermark): whole batches below it.
            let batches: Vec<&Bytes> = read
                .batches
                .iter()
                .take_while(|b| b.base_offset() < end)
                .map(|b| b.bytes())
                .collect();
            let last = read
                .batches
                .iter()
                .take_while(|b| b.base_offset() < end)
                .last()
                .map_or(t.fetch_offset, |b| b.last_offset());
            let aborted = committed.then(|| aborted_between(log, t.fetch_offset, last));
            data.with_records(Some(concat(batches.into_iter())))
                .with_aborted_transactions(aborted)
        }
        Err(e) => {
            tracing::debug!(offset = t.fetch_offset, "fetch failed: {e}");
            data.with_error_code(storage_error_code(&e).code())
        }
    }
}

/// The aborted transactions overlapping `from..=to`, as Fetch lists them.
fn aborted_between(log: &PartitionLog, from: i64, to: i64) -> Vec<AbortedTransaction> {
    log.writer
        .aborted_txns(from, to)
        .into_iter()
        .map(|a| {
            AbortedTransaction::default()
                .with_producer_id(ProducerId(a.producer_id))
                .with_first_offset(a.first_offset)
        })
        .collect()
}

fn concat<'a>(parts: impl Iterator<Item = &'a Bytes>) -> Bytes {
    let parts: Vec<&Bytes> = parts.collect();
    match parts.as_slice() {
        [] => Bytes::new(),
        [one] => (*one).clone(),
        many => {
            let mut buf = BytesMut::with_capacity(many.iter().map(|p| p.len()).sum());
            for p in many {
                buf.extend_from_slice(p);
            }
            buf.freeze()
        }
    }
}
