//! Fetch: stored batches returned as stored, with long polling on `max_wait_ms` / `min_bytes`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::FetchPartition;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ProducerId, TopicName};
use streamhouse_segment::RecordBatch;
use tokio::sync::watch;
use tokio::time::Instant;

use super::CONCURRENT_PARTITIONS;
use crate::broker::Broker;
use crate::errors::storage_error_code;
use crate::fetch_frame::FetchReply;
use crate::partitions::PartitionLog;
use crate::security::{Access, Op, Resource};

/// Fetch's isolation level of consumers that read committed transactions only.
const READ_COMMITTED: i8 = 1;

/// Most record bytes one Fetch response carries, whatever the client asks (Kafka's broker
/// setting `fetch.max.bytes`, 55 MiB by default): the client's own limit is a 32-bit field, so
/// without this a request could make the agent gather gigabytes for one response.
const FETCH_MAX_BYTES: usize = 55 << 20;

/// One requested partition, resolved once per request.
struct Target {
    index: i32,
    fetch_offset: i64,
    max_bytes: usize,
    log: Result<Arc<PartitionLog>, ResponseError>,
}

pub(crate) async fn handle(b: &Broker, access: &Access, req: FetchRequest) -> FetchReply {
    let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let min_bytes = req.min_bytes.max(0) as usize;
    let max_bytes = if req.max_bytes > 0 {
        (req.max_bytes as usize).min(FETCH_MAX_BYTES)
    } else {
        FETCH_MAX_BYTES
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
        let name = t.topic.0.as_str();
        let permitted = access.allows(Op::Read, Resource::Topic, name);
        // Concurrently, in request order: a partition's log may have to be built first.
        let targets = futures::stream::iter(t.partitions)
            .map(|p| target(b, name, permitted, p))
            .buffered(CONCURRENT_PARTITIONS)
            .collect()
            .await;
        out.push((t.topic, targets));
    }
    out
}

async fn target(b: &Broker, topic: &str, permitted: bool, p: FetchPartition) -> Target {
    let log = match u32::try_from(p.partition) {
        _ if !permitted => Err(ResponseError::TopicAuthorizationFailed),
        Ok(partition) => b.partitions.partition(topic, partition).await.map_err(|e| {
            tracing::debug!(topic, partition, "fetch: partition not served here: {e}");
            storage_error_code(&e)
        }),
        Err(_) => Err(ResponseError::UnknownTopicOrPartition),
    };
    Target {
        index: p.partition,
        fetch_offset: p.fetch_offset,
        max_bytes: p.partition_max_bytes.max(0) as usize,
        log,
    }
}

/// Reads every target once. Returns the response (its records kept apart as the stored
/// batches' buffers), the record bytes in it, and whether any partition carries an error (which
/// ends long polling at once, as in Kafka).
///
/// Partitions are read concurrently (a read may wait on the object store) in waves: the next
/// partitions whose limits together fit in what the request has left, so the bytes read for one
/// response stay within its limit (plus, per KIP-74, the first batch of the first partition
/// with data). Each wave is answered in request order, every partition cut to the whole
/// batches that still fit.
async fn read_once(
    topics: &[(TopicName, Vec<Target>)],
    max_bytes: usize,
    committed: bool,
) -> (FetchReply, usize, bool) {
    let mut remaining = max_bytes;
    let mut total = 0;
    let mut errors = false;
    let mut responses = Vec::with_capacity(topics.len());
    let mut records = Vec::with_capacity(topics.len());
    for (name, targets) in topics {
        let mut partitions = Vec::with_capacity(targets.len());
        let mut chunks = Vec::with_capacity(targets.len());
        let mut at = 0;
        while at < targets.len() {
            let wave = wave_len(&targets[at..], remaining);
            // Built before awaiting, each owning what it reads: a closure borrowing the targets
            // held across the await would keep the handler's future from being `Send`.
            let pending: Vec<_> = targets[at..at + wave]
                .iter()
                .map(|t| read_partition(t, t.max_bytes.min(remaining), total == 0, committed))
                .collect();
            let reads: Vec<Read> = futures::stream::iter(pending)
                .buffered(CONCURRENT_PARTITIONS)
                .collect()
                .await;
            for read in reads {
                let (data, batches) = read.respond(remaining, total == 0, committed);
                let n: usize = batches.iter().map(Bytes::len).sum();
                total += n;
                remaining = remaining.saturating_sub(n);
                errors |= data.error_code != 0;
                partitions.push(data);
                chunks.push(batches);
            }
            at += wave;
        }
        responses.push(
            FetchableTopicResponse::default()
                .with_topic(name.clone())
                .with_partitions(partitions),
        );
        records.push(chunks);
    }
    let reply = FetchReply {
        response: FetchResponse::default().with_responses(responses),
        records,
    };
    (reply, total, errors)
}

/// How many of `targets` to read at once: those whose limits together fit in `remaining`, at
/// least one; all of them once nothing is left (they are answered without being read).
fn wave_len(targets: &[Target], remaining: usize) -> usize {
    if remaining == 0 {
        return targets.len();
    }
    let mut planned = 0usize;
    let fitting = targets
        .iter()
        .take_while(|t| {
            planned = planned.saturating_add(t.max_bytes.min(remaining).max(1));
            planned <= remaining
        })
        .count();
    fitting.max(1)
}

/// One partition as read, before the response takes what fits.
struct Read {
    fetch_offset: i64,
    max_bytes: usize,
    log: Result<Arc<PartitionLog>, ResponseError>,
    /// The answer without records (or with the error).
    data: PartitionData,
    /// Whole batches below the end the isolation level allows.
    batches: Vec<RecordBatch>,
}

/// Reads one partition, up to `limit` bytes (at least one batch when `first`: no partition
/// before it returned data). read_committed (`committed`) stops at the last stable offset;
/// read_uncommitted reads up to the high watermark. Owns what it needs, so the reads of a
/// request can run concurrently.
fn read_partition(
    t: &Target,
    limit: usize,
    first: bool,
    committed: bool,
) -> impl std::future::Future<Output = Read> + Send + 'static {
    let data = PartitionData::default()
        .with_partition_index(t.index)
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1);
    let mut read = Read {
        fetch_offset: t.fetch_offset,
        max_bytes: t.max_bytes,
        log: t.log.clone(),
        data,
        batches: Vec::new(),
    };
    async move {
        let log = match read.log.clone() {
            Ok(log) => log,
            Err(code) => {
                read.data = std::mem::take(&mut read.data).with_error_code(code.code());
                return read;
            }
        };
        let high_watermark = log.writer.high_watermark();
        let stable = log.writer.last_stable_offset();
        read.data = std::mem::take(&mut read.data)
            .with_high_watermark(high_watermark)
            .with_last_stable_offset(stable)
            .with_log_start_offset(log.writer.log_start_offset());
        let end = if committed { stable } else { high_watermark };
        // Nothing past the fetch offset, or no room left (the first partition with data gets
        // one batch regardless).
        if (end..=high_watermark).contains(&read.fetch_offset) || (limit == 0 && !first) {
            return read;
        }
        match log.reader.read(read.fetch_offset, limit.max(1)).await {
            // The last stable offset is a batch boundary (a transaction's first batch, or the
            // high watermark): whole batches below it.
            Ok(found) => {
                let below = found
                    .batches
                    .into_iter()
                    .take_while(|b| b.base_offset() < end);
                read.batches = below.collect();
            }
            Err(e) => {
                tracing::debug!(offset = read.fetch_offset, "fetch failed: {e}");
                read.data =
                    std::mem::take(&mut read.data).with_error_code(storage_error_code(&e).code());
            }
        }
        read
    }
}

impl Read {
    /// The partition's answer, and the buffers of the whole batches that fit in `remaining` and
    /// its own limit (its records, kept apart), its first batch whole while any room is left;
    /// the `first` partition with data gets one batch regardless (KIP-74), so a consumer can
    /// always make progress.
    fn respond(
        self,
        remaining: usize,
        first: bool,
        committed: bool,
    ) -> (PartitionData, Vec<Bytes>) {
        let Read {
            fetch_offset,
            max_bytes,
            log,
            data,
            batches,
        } = self;
        if data.error_code != 0 {
            return (data, Vec::new());
        }
        let budget = max_bytes.min(remaining);
        let mut taken = 0usize;
        let kept: Vec<&RecordBatch> = batches
            .iter()
            .enumerate()
            .take_while(|(i, b)| {
                taken = taken.saturating_add(b.len());
                // As a read with this budget returns: its first batch whole.
                (*i == 0 && (first || budget > 0)) || taken <= budget
            })
            .map(|(_, b)| b)
            .collect();
        let aborted = match (committed, &log, kept.last()) {
            (false, ..) => None,
            (true, Ok(log), Some(last)) => {
                Some(aborted_between(log, fetch_offset, last.last_offset()))
            }
            (true, ..) => Some(Vec::new()),
        };
        let data = data
            .with_records(Some(Bytes::new()))
            .with_aborted_transactions(aborted);
        (data, kept.iter().map(|b| b.bytes().clone()).collect())
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
