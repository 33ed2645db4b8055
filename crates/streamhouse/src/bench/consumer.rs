//! The consuming side of the benchmarks: one fetch loop per partition, either draining up to
//! fixed end offsets (`bench consume`) or tailing until told to stop (`bench e2e`), where each
//! record's payload stamp gives its end-to-end latency.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rskafka::client::partition::PartitionClient;

use super::producer::{now_nanos, stamp_nanos};
use super::report::{new_histogram, record, Errors};

/// Where one partition's loop starts and stops.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    /// First offset to read.
    pub from: i64,
    /// Stop once this offset is reached; `None` to tail until stopped.
    pub until: Option<i64>,
}

/// Knobs shared by the loops.
#[derive(Debug, Clone)]
pub struct FetchPlan {
    /// Most bytes one fetch returns for a partition.
    pub max_bytes: i32,
    /// How long a fetch may park on the server waiting for records.
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
    /// End-to-end latency (µs) of stamped records.
    pub latency: Histogram<u64>,
    /// Failed fetches (each ends its partition's loop).
    pub errors: Errors,
    /// From the start to the last loop's end.
    pub elapsed: Duration,
}

/// Runs one loop per `(client, span)` and merges their results.
pub async fn run(parts: Vec<(Arc<PartitionClient>, Span)>, plan: FetchPlan) -> ConsumeOutcome {
    let start = Instant::now();
    let tasks: Vec<_> = parts
        .into_iter()
        .map(|(client, span)| tokio::spawn(partition_loop(client, span, plan.clone())))
        .collect();
    let mut out = ConsumeOutcome {
        records: 0,
        bytes: 0,
        latency: new_histogram(),
        errors: Errors::default(),
        elapsed: Duration::ZERO,
    };
    for task in tasks {
        let part = task.await.expect("consumer task panicked");
        out.records += part.records;
        out.bytes += part.bytes;
        out.latency
            .add(&part.latency)
            .expect("same histogram bounds");
        out.errors.merge(part.errors);
    }
    out.elapsed = start.elapsed();
    out
}

async fn partition_loop(
    client: Arc<PartitionClient>,
    span: Span,
    plan: FetchPlan,
) -> ConsumeOutcome {
    let mut out = ConsumeOutcome {
        records: 0,
        bytes: 0,
        latency: new_histogram(),
        errors: Errors::default(),
        elapsed: Duration::ZERO,
    };
    let mut next = span.from;
    while !done(next, span, &plan) {
        let fetched = client
            .fetch_records(next, 1..plan.max_bytes, plan.max_wait_ms)
            .await;
        let received_at = now_nanos();
        let records = match fetched {
            Ok((records, _high_watermark)) => records,
            Err(e) => {
                let what = format!(
                    "fetch {}/{} at {next}: {e}",
                    client.topic(),
                    client.partition()
                );
                out.errors.add(1, || what);
                break;
            }
        };
        let wanted = records
            .iter()
            .filter(|r| span.until.is_none_or(|u| r.offset < u));
        for r in wanted {
            let value = r.record.value.as_deref().unwrap_or_default();
            // Only a tail sees records as they arrive; a drain reads old ones.
            if let (None, Some(sent)) = (span.until, stamp_nanos(value)) {
                let nanos = u64::try_from(received_at - sent).unwrap_or(0);
                record(&mut out.latency, Duration::from_nanos(nanos));
            }
            out.records += 1;
            out.bytes += value.len() as u64;
            next = r.offset + 1;
            plan.received.fetch_add(1, Ordering::Relaxed);
        }
    }
    out
}

fn done(next: i64, span: Span, plan: &FetchPlan) -> bool {
    match span.until {
        Some(until) => next >= until,
        None => plan.stop.load(Ordering::Relaxed),
    }
}
