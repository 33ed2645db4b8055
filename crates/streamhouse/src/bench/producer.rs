//! The producing side of the benchmarks: `concurrency` tasks, each keeping up to `in_flight`
//! records outstanding on per-partition batching producers (linger + max batch bytes, like
//! librdkafka's `linger.ms` / `batch.size`), paced to `rate` when it is set.
//!
//! Every record's value starts with a 16-byte stamp (sequence number, send time in ns since
//! the epoch), so a consumer can measure end-to-end latency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::stream::FuturesUnordered;
use futures::{Future, StreamExt};
use hdrhistogram::Histogram;
use rskafka::chrono::Utc;
use rskafka::client::partition::{Compression, PartitionClient};
use rskafka::client::producer::aggregator::RecordAggregator;
use rskafka::client::producer::{BatchProducer, BatchProducerBuilder};
use rskafka::record::Record;

use super::report::{new_histogram, record, Errors};

/// Bytes of the stamp at the start of every value.
pub const STAMP_LEN: usize = 16;

/// How much to produce, how fast, how batched.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// Stop after this many records (claimed, whether or not they succeed).
    pub records: Option<u64>,
    /// Stop claiming new records after this long.
    pub duration: Option<Duration>,
    /// Records per second across all tasks; 0 = as fast as acknowledgements allow.
    pub rate: u64,
    /// Producer tasks.
    pub concurrency: usize,
    /// Unacknowledged records allowed per task.
    pub in_flight: usize,
    /// Bytes per record value.
    pub record_size: usize,
    /// Most bytes one batch aggregates.
    pub batch_bytes: usize,
    /// Longest a record waits for its batch to fill.
    pub linger: Duration,
    /// Batch compression.
    pub compression: Compression,
}

/// What the producers achieved.
pub struct ProduceOutcome {
    /// Send → acknowledgement latency (µs) of acknowledged records.
    pub latency: Histogram<u64>,
    /// Acknowledged records.
    pub acked: u64,
    /// Failed records.
    pub errors: Errors,
    /// From the first send to the last acknowledgement.
    pub elapsed: Duration,
}

type Producer = BatchProducer<RecordAggregator>;

/// State shared by the producer tasks.
struct Shared {
    plan: LoadPlan,
    producers: Vec<Producer>,
    /// The random part of every value.
    filler: Vec<u8>,
    next_seq: AtomicU64,
    start: Instant,
    acked: Arc<AtomicU64>,
}

/// Produces per `plan` round-robin over `clients`, counting acknowledgements into `acked`
/// as they arrive (for the progress bar).
pub async fn run(
    plan: LoadPlan,
    clients: &[Arc<PartitionClient>],
    acked: Arc<AtomicU64>,
) -> ProduceOutcome {
    let producers = clients
        .iter()
        .map(|c| {
            BatchProducerBuilder::new(Arc::clone(c))
                .with_linger(plan.linger)
                .with_compression(plan.compression)
                .build(RecordAggregator::new(plan.batch_bytes))
        })
        .collect();
    let shared = Arc::new(Shared {
        filler: random_bytes(plan.record_size.saturating_sub(STAMP_LEN)),
        producers,
        next_seq: AtomicU64::new(0),
        start: Instant::now(),
        acked,
        plan,
    });
    let tasks: Vec<_> = (0..shared.plan.concurrency)
        .map(|_| tokio::spawn(producer_task(Arc::clone(&shared))))
        .collect();
    let mut outcome = ProduceOutcome {
        latency: new_histogram(),
        acked: 0,
        errors: Errors::default(),
        elapsed: Duration::ZERO,
    };
    for task in tasks {
        let t = task.await.expect("producer task panicked");
        outcome
            .latency
            .add(&t.latency)
            .expect("same histogram bounds");
        outcome.acked += t.acked;
        outcome.errors.merge(t.errors);
    }
    outcome.elapsed = shared.start.elapsed();
    outcome
}

/// One task's share of the outcome.
struct TaskOutcome {
    latency: Histogram<u64>,
    acked: u64,
    errors: Errors,
}

impl TaskOutcome {
    fn complete(&mut self, result: Result<Duration, String>, acked: &AtomicU64) {
        match result {
            Ok(latency) => {
                record(&mut self.latency, latency);
                self.acked += 1;
                acked.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => self.errors.add(1, || e),
        }
    }
}

async fn producer_task(shared: Arc<Shared>) -> TaskOutcome {
    let mut out = TaskOutcome {
        latency: new_histogram(),
        acked: 0,
        errors: Errors::default(),
    };
    let mut pending = FuturesUnordered::new();
    while let Some(seq) = shared.claim() {
        // Keep polling outstanding sends while waiting, so their latency is taken when they
        // complete rather than when this task next looks.
        let wait = shared.pace(seq);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait, if pending.len() < shared.plan.in_flight => break,
                Some(r) = pending.next(), if !pending.is_empty() => out.complete(r, &shared.acked),
            }
        }
        pending.push(shared.send(seq));
    }
    while let Some(r) = pending.next().await {
        out.complete(r, &shared.acked);
    }
    out
}

impl Shared {
    /// The next sequence number to send, or `None` when the plan is done.
    fn claim(&self) -> Option<u64> {
        if let Some(d) = self.plan.duration {
            if self.start.elapsed() >= d {
                return None;
            }
        }
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        match self.plan.records {
            Some(n) if seq >= n => None,
            _ => Some(seq),
        }
    }

    /// Sleeps until `seq` is due under the rate cap.
    fn pace(&self, seq: u64) -> impl Future<Output = ()> {
        let due = (self.plan.rate > 0)
            .then(|| self.start + Duration::from_secs_f64(seq as f64 / self.plan.rate as f64));
        async move {
            if let Some(due) = due {
                tokio::time::sleep_until(due.into()).await;
            }
        }
    }

    /// Sends record `seq`; resolves to its acknowledgement latency.
    fn send(self: &Arc<Self>, seq: u64) -> impl Future<Output = Result<Duration, String>> {
        let shared = Arc::clone(self);
        async move {
            let producer = &shared.producers[(seq % shared.producers.len() as u64) as usize];
            let sent = Instant::now();
            let record = Record {
                key: None,
                value: Some(stamped_value(seq, &shared.filler)),
                headers: Default::default(),
                timestamp: Utc::now(),
            };
            match producer.produce(record).await {
                Ok(_offset) => Ok(sent.elapsed()),
                Err(e) => Err(e.to_string()),
            }
        }
    }
}

/// Stamp (sequence number, send time) followed by the filler.
fn stamped_value(seq: u64, filler: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(STAMP_LEN + filler.len());
    value.extend_from_slice(&seq.to_be_bytes());
    value.extend_from_slice(&now_nanos().to_be_bytes());
    value.extend_from_slice(filler);
    value
}

/// Send time carried in a stamped value, or `None` for a value too short to hold one.
pub fn stamp_nanos(value: &[u8]) -> Option<i64> {
    let bytes = value.get(8..STAMP_LEN)?;
    Some(i64::from_be_bytes(bytes.try_into().ok()?))
}

/// Wall-clock nanoseconds since the epoch (what the stamps hold; producer and consumer
/// compare them on the same machine).
pub fn now_nanos() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
}

/// Random rather than constant bytes, so compression cannot make the figures meaningless.
fn random_bytes(n: usize) -> Vec<u8> {
    use rand::RngCore;
    let mut v = vec![0; n];
    rand::rng().fill_bytes(&mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        let before = now_nanos();
        let v = stamped_value(7, &[1, 2, 3]);
        assert_eq!(v.len(), STAMP_LEN + 3);
        assert_eq!(u64::from_be_bytes(v[..8].try_into().unwrap()), 7);
        let t = stamp_nanos(&v).unwrap();
        assert!(t >= before && t <= now_nanos());
        assert_eq!(stamp_nanos(&[0; 10]), None);
    }
}
