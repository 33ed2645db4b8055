//! The producing side of the benchmarks, batched and pipelined the way librdkafka is.
//!
//! One generator task makes the records: as fast as it may (`rate` 0), or open-loop at `rate`
//! records/s, each record *due* at `start + seq / rate` however the server keeps up. Records
//! queue per partition in batches that are sent when full (`batch_bytes`, librdkafka's
//! `batch.size`) or when their first record has waited `linger` (`linger.ms`); a batch still
//! takes records while it waits for a slot in its connection's window of `in_flight` unanswered
//! Produce requests (`max.in.flight`), and the generator pauses while the unsent backlog is
//! over its bound (librdkafka's `queue.buffering.max.kbytes`, smaller). A record's latency runs from its due time (rate mode) or
//! its creation to its acknowledgement, so a stalled server shows up in the percentiles
//! instead of slowing the schedule down (no coordinated omission).
//!
//! Every record's value starts with a 16-byte stamp (sequence number, due time in ns since
//! the epoch), so a consumer can measure end-to-end latency.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions};
use kafka_protocol::ResponseError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinError, JoinSet};

use super::report::{new_histogram, record, Errors};
use super::CLIENT_ID;
use crate::client::KafkaSecurity;
use crate::client::{self, topic_name, Connection, Layout};

/// Bytes of the stamp at the start of every value.
pub const STAMP_LEN: usize = 16;

/// Produce version used: the newest that still names topics (v13 switches to topic ids).
const PRODUCE_VERSION: i16 = 9;

/// Unsent bytes the generator may queue: enough that a partition's batches are full when its
/// turn comes at full speed, as in librdkafka, whose producers queue far ahead of the wire.
const BACKLOG_BYTES: usize = 64 << 20;

/// Most unsent bytes the generator queues, whatever the other bounds say (librdkafka's
/// `queue.buffering.max.kbytes` default).
const MAX_BACKLOG_BYTES: usize = 1 << 30;

/// RecordBatch v2 header bytes.
const BATCH_HEADER_LEN: usize = 61;

/// Estimated framing of one record without key or headers: length, attributes, timestamp
/// and offset deltas, key and value lengths, header count (varints). Counted towards
/// `batch_bytes`, which like librdkafka's `batch.size` bounds the encoded batch.
const RECORD_FRAMING_LEN: usize = 12;

/// How much to produce, how fast, how batched.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// TLS and SASL of the connections.
    pub security: Arc<KafkaSecurity>,
    /// Stop after this many records.
    pub records: Option<u64>,
    /// Stop making records after this long.
    pub duration: Option<Duration>,
    /// Records per second, scheduled by time; 0 = as fast as the window allows.
    pub rate: u64,
    /// Connections to each partition leader (partitions are spread over them).
    pub connections: usize,
    /// Unanswered Produce requests allowed per connection.
    pub in_flight: usize,
    /// Bytes per record value.
    pub record_size: usize,
    /// Most bytes per encoded batch (estimated while filling it).
    pub batch_bytes: usize,
    /// Longest a batch waits for more records once it has one.
    pub linger: Duration,
    /// Batch compression.
    pub compression: Compression,
    /// How long the server may take to make a batch durable (the request's `timeout_ms`).
    pub timeout: Duration,
}

/// What the producer achieved.
pub struct ProduceOutcome {
    /// Due → acknowledgement latency (µs) of acknowledged records.
    pub latency: Histogram<u64>,
    /// Acknowledged records.
    pub acked: u64,
    /// Failed records.
    pub errors: Errors,
    /// From the start of the schedule to the last acknowledgement.
    pub elapsed: Duration,
    /// Produce requests sent (one batch each).
    pub requests: u64,
}

/// Connects a producer for `plan` to `topic`, whose partitions live as `layout` says, and
/// sends one unmeasured record per partition, so connecting and opening partitions happen
/// before the clock starts. It counts acknowledged records into `acked` as they arrive (for
/// the progress bar).
pub async fn start(
    plan: LoadPlan,
    topic: &str,
    layout: &Layout,
    acked: Arc<AtomicU64>,
) -> anyhow::Result<Producer> {
    let mut producer = Producer::connect(plan, topic, layout, acked).await?;
    producer.warm_up().await?;
    Ok(producer)
}

/// A connection and its window of unanswered requests.
struct Link {
    conn: Connection,
    window: Arc<Semaphore>,
}

/// One partition's queue of batches; only the last one takes new records.
struct Queue {
    partition: i32,
    link: usize,
    batches: VecDeque<Batch>,
    /// Value bytes of the last batch sent, to size the next one's buffer.
    last_len: usize,
}

/// Records waiting to be sent together.
struct Batch {
    /// The values back to back (all `record_size` long).
    values: BytesMut,
    /// Each record's due time.
    due: Vec<Instant>,
    /// When the first record went in: the linger counts from here.
    opened: Instant,
}

/// A request's fate, reported by the task that waited for it.
struct Settled {
    due: Vec<Instant>,
    /// When the acknowledgement arrived, or why there was none.
    result: Result<Instant, String>,
}

/// A connected, warmed-up producer; [`Producer::run`] makes the measured load.
pub struct Producer {
    plan: LoadPlan,
    topic: String,
    links: Vec<Link>,
    queues: Vec<Queue>,
    /// The part of every value after the stamp.
    filler: Vec<u8>,
    /// The schedule's origin.
    clock: Clock,
    /// Where `send_ready` starts looking, so partitions take turns at free window slots.
    cursor: usize,
    /// Value bytes made but not yet sent.
    backlog: usize,
    backlog_limit: usize,
    /// Earliest instant some partially filled batch is due to go out.
    next_linger: Option<Instant>,
    /// Requests awaiting their answers.
    in_flight: JoinSet<Settled>,
    acked_progress: Arc<AtomicU64>,
    out: ProduceOutcome,
}

impl Producer {
    async fn connect(
        plan: LoadPlan,
        topic: &str,
        layout: &Layout,
        acked_progress: Arc<AtomicU64>,
    ) -> anyhow::Result<Self> {
        let connections = plan.connections.max(1);
        let mut links = Vec::new();
        let mut queues = Vec::new();
        for (addr, partitions) in &layout.by_leader {
            let first = links.len();
            for _ in 0..connections {
                links.push(Link {
                    conn: Connection::open(addr, &plan.security, plan.timeout, CLIENT_ID).await?,
                    window: Arc::new(Semaphore::new(plan.in_flight.max(1))),
                });
            }
            queues.extend(partitions.iter().enumerate().map(|(i, &partition)| Queue {
                partition,
                link: first + i % connections,
                batches: VecDeque::new(),
                last_len: 0,
            }));
        }
        // At least a full batch waiting and one filling in every partition.
        let backlog_limit =
            (2 * queues.len() * plan.batch_bytes).clamp(BACKLOG_BYTES, MAX_BACKLOG_BYTES);
        Ok(Self {
            filler: random_bytes(plan.record_size.saturating_sub(STAMP_LEN)),
            plan,
            topic: topic.to_string(),
            links,
            queues,
            clock: Clock::now(),
            cursor: 0,
            backlog: 0,
            backlog_limit,
            next_linger: None,
            in_flight: JoinSet::new(),
            acked_progress,
            out: ProduceOutcome {
                latency: new_histogram(),
                acked: 0,
                errors: Errors::default(),
                elapsed: Duration::ZERO,
                requests: 0,
            },
        })
    }

    /// One record per partition, sent and acknowledged before anything is measured.
    async fn warm_up(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        for q in 0..self.queues.len() {
            self.add(q, u64::MAX, now);
        }
        // More partitions than window slots take several rounds.
        while self.queues.iter().any(|q| !q.batches.is_empty()) || !self.in_flight.is_empty() {
            self.send_ready(now, true);
            if let Some(settled) = self.in_flight.join_next().await {
                if let Err(e) = settled?.result {
                    anyhow::bail!("warming up: {e}");
                }
            }
        }
        if let Some(e) = &self.out.errors.first {
            anyhow::bail!("warming up: {e}");
        }
        self.acked_progress.store(0, Ordering::Relaxed);
        self.out.requests = 0;
        Ok(())
    }

    /// Produces the plan's records; returns what happened to them.
    pub async fn run(mut self) -> ProduceOutcome {
        self.clock = Clock::now();
        let mut seq = 0u64;
        let mut making = true;
        loop {
            let now = Instant::now();
            making = making && !self.finished(seq, now);
            if !making || self.next_linger.is_some_and(|t| t <= now) {
                self.send_ready(now, !making);
            }
            if !making && self.queues.iter().all(|q| q.batches.is_empty()) {
                break;
            }
            let mut wake = self.next_linger;
            if making && self.backlog < self.backlog_limit {
                let due = self.due(seq).unwrap_or(now);
                if due <= now {
                    let queue = (seq % self.queues.len() as u64) as usize;
                    if self.add(queue, seq, due) {
                        self.send_ready(now, false);
                    }
                    seq += 1;
                    // Let the connection tasks run on this worker too, now and then.
                    if seq.is_multiple_of(1024) {
                        tokio::task::yield_now().await;
                    }
                    continue;
                }
                wake = Some(wake.map_or(due, |w| w.min(due)));
            }
            // Nothing to make or send now: wait for a due time, a linger deadline, or an
            // answer (which frees a window slot).
            let sleep = async {
                match wake {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => {}
                Some(settled) = self.in_flight.join_next() => {
                    self.settle(settled);
                    self.send_ready(Instant::now(), !making);
                }
            }
        }
        while let Some(settled) = self.in_flight.join_next().await {
            self.settle(settled);
        }
        self.out.elapsed = self.clock.start.elapsed();
        self.out
    }

    /// When record `seq` is due under the rate; `None` when unthrottled.
    fn due(&self, seq: u64) -> Option<Instant> {
        (self.plan.rate > 0).then(|| {
            let nanos = u128::from(seq) * 1_000_000_000 / u128::from(self.plan.rate);
            self.clock.start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
        })
    }

    /// True once the plan's count or time is used up.
    fn finished(&self, seq: u64, now: Instant) -> bool {
        let by_count = self.plan.records.is_some_and(|n| seq >= n);
        let by_time = self.plan.duration.is_some_and(|d| {
            let at = self.due(seq).unwrap_or(now);
            at >= self.clock.start + d
        });
        by_count || by_time
    }

    /// Appends record `seq` (due at `due`) to a queue; true when that filled a batch.
    fn add(&mut self, queue: usize, seq: u64, due: Instant) -> bool {
        let size = self.plan.record_size;
        let stamp = self.clock.wall_nanos(due);
        let q = &mut self.queues[queue];
        let room = q.batches.back().is_some_and(|b| {
            let encoded = BATCH_HEADER_LEN + (b.due.len() + 1) * (size + RECORD_FRAMING_LEN);
            b.due.is_empty() || encoded <= self.plan.batch_bytes
        });
        let filled = !room && !q.batches.is_empty();
        if !room {
            // As big as the partition's previous batch: a full one at full speed, one record
            // at a low rate with no linger (rather than a batch-size buffer per record).
            let capacity = q.last_len.clamp(size, self.plan.batch_bytes.max(size));
            q.batches.push_back(Batch {
                values: BytesMut::with_capacity(capacity),
                due: Vec::new(),
                opened: due,
            });
            let deadline = due + self.plan.linger;
            self.next_linger = Some(self.next_linger.map_or(deadline, |t| t.min(deadline)));
        }
        let batch = q.batches.back_mut().expect("a batch was just ensured");
        batch.values.put_u64(seq);
        batch.values.put_i64(stamp);
        batch.values.put_slice(&self.filler);
        batch.due.push(due);
        self.backlog += size;
        filled
    }

    /// Sends every batch that is full, has lingered long enough, or (with `flush`) has
    /// anything, as far as the windows allow; recomputes the next linger deadline.
    fn send_ready(&mut self, now: Instant, flush: bool) {
        let mut next_linger: Option<Instant> = None;
        let n = self.queues.len();
        let first = self.cursor;
        for q in (0..n).map(|i| (first + i) % n) {
            loop {
                let queue = &self.queues[q];
                let Some(front) = queue.batches.front() else {
                    break;
                };
                let deadline = front.opened + self.plan.linger;
                if queue.batches.len() == 1 && !flush && deadline > now {
                    next_linger = Some(next_linger.map_or(deadline, |t| t.min(deadline)));
                    break;
                }
                // A full window: the answer that frees a slot triggers the next attempt.
                let Ok(permit) = Arc::clone(&self.links[queue.link].window).try_acquire_owned()
                else {
                    break;
                };
                let batch = self.queues[q].batches.pop_front().expect("front exists");
                self.send(q, batch, permit);
                self.cursor = (q + 1) % n;
            }
        }
        self.next_linger = next_linger;
    }

    /// Encodes `batch` into a Produce request for queue `q` and sends it; a task waits for
    /// the answer and gives the window slot back.
    fn send(&mut self, q: usize, batch: Batch, permit: OwnedSemaphorePermit) {
        let Batch { values, due, .. } = batch;
        self.backlog -= values.len();
        self.queues[q].last_len = values.len();
        self.out.requests += 1;
        let Queue {
            partition, link, ..
        } = self.queues[q];
        let what = format!("produce to {}/{partition}", self.topic);
        let (size, compression) = (self.plan.record_size, self.plan.compression);
        let sent =
            encode(values.freeze(), &due, size, compression, &self.clock).and_then(|records| {
                let request = produce_request(&self.topic, partition, records, self.plan.timeout);
                self.links[link].conn.send(&request, PRODUCE_VERSION)
            });
        let response = match sent {
            Ok(response) => response,
            Err(e) => {
                self.out
                    .errors
                    .add(due.len() as u64, || format!("{what}: {e:#}"));
                return;
            }
        };
        // The server answers within the request's timeout; give it a margin before giving up.
        let limit = self.plan.timeout + Duration::from_secs(5);
        let progress = Arc::clone(&self.acked_progress);
        self.in_flight.spawn(async move {
            let answer = tokio::time::timeout(limit, response).await;
            drop(permit);
            let result = match answer {
                Err(_) => Err(format!("no answer within {limit:?}")),
                Ok(Err(e)) => Err(format!("{e:#}")),
                Ok(Ok((response, at))) => check(&response, partition).map(|()| at),
            };
            if result.is_ok() {
                progress.fetch_add(due.len() as u64, Ordering::Relaxed);
            }
            Settled {
                due,
                result: result.map_err(|e| format!("{what}: {e}")),
            }
        });
    }

    /// Accounts for an answered (or failed) request.
    fn settle(&mut self, settled: Result<Settled, JoinError>) {
        let Settled { due, result } = settled.expect("request task panicked");
        match result {
            Ok(at) => {
                for d in &due {
                    record(&mut self.out.latency, at.saturating_duration_since(*d));
                }
                self.out.acked += due.len() as u64;
            }
            Err(e) => self.out.errors.add(due.len() as u64, || e),
        }
    }
}

/// One RecordBatch v2 of `values` (cut into `size`-byte records, created at `due`),
/// without a producer id: not idempotent.
fn encode(
    values: Bytes,
    due: &[Instant],
    size: usize,
    compression: Compression,
    clock: &Clock,
) -> anyhow::Result<Bytes> {
    let records: Vec<Record> = due
        .iter()
        .enumerate()
        .map(|(i, due)| {
            let value = values.slice(i * size..(i + 1) * size);
            client::record(i, clock.wall_nanos(*due) / 1_000_000, None, Some(value))
        })
        .collect();
    // Per record: a length, attributes, deltas, key and header counts: 16 bytes at most
    // for these sizes; 61 for the batch header.
    let mut buf = BytesMut::with_capacity(values.len() + 61 + records.len() * 16);
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options)?;
    Ok(buf.freeze())
}

fn produce_request(
    topic: &str,
    partition: i32,
    records: Bytes,
    timeout: Duration,
) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX))
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])])
}

/// The error the server reported for `partition`, if any.
fn check(response: &ProduceResponse, partition: i32) -> Result<(), String> {
    let answer = response
        .responses
        .iter()
        .flat_map(|t| &t.partition_responses)
        .find(|p| p.index == partition)
        .ok_or_else(|| "answer without the partition".to_string())?;
    match ResponseError::try_from_code(answer.error_code) {
        None => Ok(()),
        Some(e) => {
            let detail = answer.error_message.as_deref().unwrap_or_default();
            Err(format!("{e} {detail}").trim_end().to_string())
        }
    }
}

/// The schedule's origin on both clocks: `Instant` to measure, wall time to stamp values.
struct Clock {
    start: Instant,
    start_wall_ns: i64,
}

impl Clock {
    fn now() -> Self {
        Self {
            start: Instant::now(),
            start_wall_ns: now_nanos(),
        }
    }

    /// `t` in wall-clock nanoseconds since the epoch.
    fn wall_nanos(&self, t: Instant) -> i64 {
        let since = t.saturating_duration_since(self.start).as_nanos();
        self.start_wall_ns + i64::try_from(since).unwrap_or(i64::MAX)
    }
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
    use rand::Rng;
    let mut v = vec![0; n];
    rand::rng().fill_bytes(&mut v);
    v
}

/// Values of `size` bytes due at `due`, laid out as `Producer::add` does.
#[cfg(test)]
fn stamped_values(clock: &Clock, due: &[Instant], size: usize) -> Bytes {
    let mut values = BytesMut::new();
    for (seq, d) in due.iter().enumerate() {
        values.put_u64(seq as u64);
        values.put_i64(clock.wall_nanos(*d));
        values.put_bytes(0xab, size - STAMP_LEN);
    }
    values.freeze()
}

/// `count` stamped records of `size` bytes encoded as one batch at offsets `base..`, as a
/// fetch returns it.
#[cfg(test)]
pub(super) fn test_batch(base: i64, count: usize, size: usize) -> Bytes {
    let clock = Clock::now();
    let due: Vec<Instant> = (0..count)
        .map(|i| clock.start + Duration::from_millis(7 * i as u64))
        .collect();
    let values = stamped_values(&clock, &due, size);
    let wire = encode(values, &due, size, Compression::None, &clock).unwrap();
    // The base offset lies outside the batch CRC: the server sets it the same way.
    let mut batch = BytesMut::from(&wire[..]);
    batch[..8].copy_from_slice(&base.to_be_bytes());
    batch.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;
    use streamhouse_segment::RecordBatch;

    #[test]
    fn batches_decode_with_their_stamps_and_pass_the_server_parser() {
        let clock = Clock::now();
        let due: Vec<Instant> = (0..3)
            .map(|i| clock.start + Duration::from_millis(i * 7))
            .collect();
        let size = 40;
        for compression in [Compression::None, Compression::Lz4] {
            let values = stamped_values(&clock, &due, size);
            let wire = encode(values, &due, size, compression, &clock).unwrap();
            let parsed = RecordBatch::parse_all(wire.clone()).unwrap();
            assert_eq!(parsed.len(), 1, "one batch");
            assert_eq!(parsed[0].header().producer_id, -1);
            let set = RecordBatchDecoder::decode(&mut wire.clone()).unwrap();
            assert_eq!(set.records.len(), 3);
            for (i, r) in set.records.iter().enumerate() {
                let value = r.value.as_deref().unwrap();
                assert_eq!(value.len(), size);
                assert_eq!(u64::from_be_bytes(value[..8].try_into().unwrap()), i as u64);
                assert_eq!(stamp_nanos(value), Some(clock.wall_nanos(due[i])));
                assert_eq!(r.timestamp, clock.wall_nanos(due[i]) / 1_000_000);
                assert_eq!(r.offset, i as i64);
            }
        }
    }

    #[test]
    fn the_clock_maps_instants_to_wall_time() {
        let clock = Clock::now();
        let later = clock.start + Duration::from_millis(1500);
        assert_eq!(
            clock.wall_nanos(later) - clock.wall_nanos(clock.start),
            1_500_000_000
        );
        let wall = clock.wall_nanos(Instant::now());
        assert!((wall - now_nanos()).abs() < 1_000_000_000, "{wall}");
        assert_eq!(stamp_nanos(&[0; 10]), None);
    }
}
