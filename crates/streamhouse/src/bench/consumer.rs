//! The consuming side of the benchmarks, fetching the way librdkafka does: one Fetch request
//! at a time per partition leader, covering all of its partitions (up to `max_partition_bytes`
//! each), either draining up to fixed end offsets (`bench consume`) or tailing until told to
//! stop (`bench e2e`), where each record's payload stamp gives its end-to-end latency.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use hdrhistogram::Histogram;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest};
use kafka_protocol::records::RecordBatchDecoder;
use kafka_protocol::ResponseError;

use super::producer::{now_nanos, stamp_nanos};
use super::report::{new_histogram, record, Errors};
use crate::client::{topic_name, Connection};

/// Fetch version used: sessionless fetches by topic name (v13 switches to topic ids).
const FETCH_VERSION: i16 = 11;

/// Most bytes one Fetch answer may carry in all (librdkafka's `fetch.max.bytes` default).
const FETCH_MAX_BYTES: i32 = 50 << 20;

/// Where one partition's reading starts and stops.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    /// The partition.
    pub partition: i32,
    /// First offset to read.
    pub from: i64,
    /// Stop once this offset is reached; `None` to tail until stopped.
    pub until: Option<i64>,
}

/// Knobs shared by the loops.
#[derive(Debug, Clone)]
pub struct FetchPlan {
    /// Most bytes one fetch returns for a partition (librdkafka's `max.partition.fetch.bytes`).
    pub max_partition_bytes: i32,
    /// How long a fetch may park on the server waiting for records (`fetch.wait.max.ms`).
    pub max_wait_ms: i32,
    /// Set to end tailing loops (after their current fetch).
    pub stop: Arc<AtomicBool>,
    /// Records received so far, across loops.
    pub received: Arc<AtomicU64>,
}

/// What the consumers read.
pub struct ConsumeOutcome {
    /// Records received.
    pub records: u64,
    /// Value bytes received.
    pub bytes: u64,
    /// Fetch requests made.
    pub fetches: u64,
    /// End-to-end latency (µs) of stamped records (tailing only).
    pub latency: Histogram<u64>,
    /// Failures (a failed fetch ends its leader's loop, a partition error its partition).
    pub errors: Errors,
    /// From the start to the last loop's end.
    pub elapsed: Duration,
}

impl ConsumeOutcome {
    fn new() -> Self {
        Self {
            records: 0,
            bytes: 0,
            fetches: 0,
            latency: new_histogram(),
            errors: Errors::default(),
            elapsed: Duration::ZERO,
        }
    }

    fn merge(&mut self, other: ConsumeOutcome) {
        self.records += other.records;
        self.bytes += other.bytes;
        self.fetches += other.fetches;
        self.latency
            .add(&other.latency)
            .expect("same histogram bounds");
        self.errors.merge(other.errors);
    }
}

/// Runs one fetch loop per `(leader connection, spans)` and merges their results.
pub async fn run(
    topic: &str,
    leaders: Vec<(Connection, Vec<Span>)>,
    plan: FetchPlan,
) -> ConsumeOutcome {
    let start = Instant::now();
    let tasks: Vec<_> = leaders
        .into_iter()
        .map(|(conn, spans)| {
            tokio::spawn(leader_loop(topic.to_string(), conn, spans, plan.clone()))
        })
        .collect();
    let mut out = ConsumeOutcome::new();
    for task in tasks {
        out.merge(task.await.expect("consumer task panicked"));
    }
    out.elapsed = start.elapsed();
    out
}

/// Fetches `spans` from one leader until each is done (or the loop is stopped).
async fn leader_loop(
    topic: String,
    conn: Connection,
    mut spans: Vec<Span>,
    plan: FetchPlan,
) -> ConsumeOutcome {
    let mut out = ConsumeOutcome::new();
    let tailing = spans.iter().any(|s| s.until.is_none());
    spans.retain(|s| s.until.is_none_or(|u| s.from < u));
    let stopped = || tailing && plan.stop.load(Ordering::Relaxed);
    while !spans.is_empty() && !stopped() {
        let request = fetch_request(&topic, &spans, &plan);
        out.fetches += 1;
        let before = out.records;
        let answer = match conn.send(&request, FETCH_VERSION) {
            Ok(answer) => answer.await,
            Err(e) => Err(e),
        };
        let response = match answer {
            Ok((response, _at)) => response,
            Err(e) => {
                out.errors
                    .add(1, || format!("fetch from {}: {e:#}", conn.addr()));
                break;
            }
        };
        let received_at = now_nanos();
        if let Some(e) = ResponseError::try_from_code(response.error_code) {
            out.errors
                .add(1, || format!("fetch from {}: {e}", conn.addr()));
            break;
        }
        for p in response.responses.into_iter().flat_map(|t| t.partitions) {
            let Some(span) = spans.iter_mut().find(|s| s.partition == p.partition_index) else {
                continue;
            };
            if let Some(e) = ResponseError::try_from_code(p.error_code) {
                let what = format!("fetch {topic}/{} at {}: {e}", span.partition, span.from);
                out.errors.add(1, || what);
                span.until = Some(span.from); // give this partition up
                continue;
            }
            let read = read_records(p.records.unwrap_or_default(), span, received_at, &mut out);
            if let Err(e) = read {
                let what = format!("fetch {topic}/{}: {e:#}", span.partition);
                out.errors.add(1, || what);
                span.until = Some(span.from);
            }
        }
        spans.retain(|s| s.until.is_none_or(|u| s.from < u));
        plan.received
            .fetch_add(out.records - before, Ordering::Relaxed);
    }
    out
}

fn fetch_request(topic: &str, spans: &[Span], plan: &FetchPlan) -> FetchRequest {
    let partitions = spans
        .iter()
        .map(|s| {
            FetchPartition::default()
                .with_partition(s.partition)
                .with_fetch_offset(s.from)
                .with_partition_max_bytes(plan.max_partition_bytes)
        })
        .collect();
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(plan.max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_MAX_BYTES)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name(topic))
            .with_partitions(partitions)])
}

/// Bytes before a batch's length field ends: base offset (8) and length (4).
const BATCH_PREFIX: usize = 12;

/// Counts the records of `records` in `span`'s range and advances it past them. A batch cut
/// off at the end of the answer (a fetch may end mid-batch) is left for the next fetch.
fn read_records(
    mut records: Bytes,
    span: &mut Span,
    received_at: i64,
    out: &mut ConsumeOutcome,
) -> anyhow::Result<()> {
    while records.len() >= BATCH_PREFIX {
        let len = (&records[8..BATCH_PREFIX]).get_i32();
        let whole = BATCH_PREFIX + usize::try_from(len)?;
        if records.len() < whole {
            break;
        }
        let mut batch = records.split_to(whole);
        let set = RecordBatchDecoder::decode(&mut batch)?;
        for r in set.records {
            // A batch may start before the offset asked for.
            if r.offset < span.from || span.until.is_some_and(|u| r.offset >= u) {
                continue;
            }
            let value = r.value.as_deref().unwrap_or_default();
            // Only a tail sees records as they arrive; a drain reads old ones.
            if let (None, Some(sent)) = (span.until, stamp_nanos(value)) {
                let nanos = u64::try_from(received_at - sent).unwrap_or(0);
                record(&mut out.latency, Duration::from_nanos(nanos));
            }
            out.records += 1;
            out.bytes += value.len() as u64;
            span.from = r.offset + 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    use crate::bench::producer::test_batch;

    /// A batch of `count` 20-byte records at offsets `base..`.
    fn batch(base: i64, count: usize) -> Bytes {
        test_batch(base, count, 20)
    }

    #[test]
    fn reads_only_the_span_and_leaves_a_cut_batch_for_later() {
        let mut answer = BytesMut::new();
        answer.extend_from_slice(&batch(0, 5));
        answer.extend_from_slice(&batch(5, 5));
        answer.extend_from_slice(&batch(10, 5)[..30]);
        let mut span = Span {
            partition: 0,
            from: 3,
            until: Some(8),
        };
        let mut out = ConsumeOutcome::new();
        read_records(answer.freeze(), &mut span, 0, &mut out).unwrap();
        assert_eq!((out.records, out.bytes), (5, 100));
        assert_eq!(span.from, 8);
        assert!(out.latency.is_empty(), "a drain takes no latency");

        let mut tail = Span {
            partition: 0,
            from: 10,
            until: None,
        };
        let mut out = ConsumeOutcome::new();
        read_records(batch(10, 5).slice(..40), &mut tail, 0, &mut out).unwrap();
        assert_eq!(
            (out.records, tail.from),
            (0, 10),
            "nothing whole to read yet"
        );
    }
}
