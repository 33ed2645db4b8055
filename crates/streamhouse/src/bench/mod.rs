//! `streamhouse bench produce|consume|e2e`: a load generator over the Kafka protocol.
//!
//! Honest by construction: throughput counts acknowledged (produce) or received (consume)
//! records only, every failure is counted and reported, and a run with failures exits
//! non-zero after printing its report.

mod consumer;
mod producer;
mod progress;
mod report;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use rskafka::chrono::Utc;
use rskafka::client::partition::PartitionClient;
use rskafka::record::Record;
use serde_json::json;

use crate::cli::kafka::{is_topic_exists, CompressionArg, Kafka};
use crate::cli::{parse_duration, Endpoints};
use consumer::{FetchPlan, Span};
use producer::LoadPlan;
use progress::Progress;
use report::{Errors, Percentiles, Report, Throughput};

/// Load generators.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Produce as fast as acknowledgements allow (or at `--rate`); report throughput and
    /// produce-acknowledgement latency.
    Produce(ProduceBench),
    /// Read a topic from its start to its current end; report throughput.
    Consume(ConsumeBench),
    /// Produce at `--rate` while tailing consumers read; report end-to-end latency.
    E2e(ProduceBench),
}

/// Flags naming the topic and the output.
#[derive(Debug, Args)]
pub struct TopicArgs {
    /// Topic to use.
    #[arg(
        long,
        default_value = "streamhouse-bench",
        env = "STREAMHOUSE_BENCH_TOPIC"
    )]
    pub topic: String,
    /// Partitions of the topic when it has to be created.
    #[arg(long, default_value_t = 6)]
    pub partitions: u32,
    /// No progress bar (it is also hidden when stdout is not a terminal).
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Flags of `bench produce` and `bench e2e`.
#[derive(Debug, Args)]
pub struct ProduceBench {
    #[command(flatten)]
    pub topic: TopicArgs,
    /// Bytes per record value.
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Records to send [default: 200000 for produce; e2e runs for --duration].
    #[arg(long, conflicts_with = "duration")]
    pub records: Option<u64>,
    /// Send for this long (e.g. `30s`) [e2e default: 10s].
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Producer tasks.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Unacknowledged records allowed per producer task.
    #[arg(long, default_value_t = 10_000)]
    pub in_flight: usize,
    /// Records per second across all tasks, 0 = unlimited [default: 0 for produce, 1000 for e2e].
    #[arg(long)]
    pub rate: Option<u64>,
    /// Most bytes per batch (librdkafka's batch.size).
    #[arg(long, default_value_t = 1_000_000)]
    pub batch_size: usize,
    /// Longest a record waits for its batch to fill [default: 5ms for produce, 0 for e2e].
    #[arg(long, value_parser = parse_duration)]
    pub linger: Option<Duration>,
    /// Batch compression.
    #[arg(long, value_enum, default_value = "none")]
    pub compression: CompressionArg,
}

/// Flags of `bench consume`.
#[derive(Debug, Args)]
pub struct ConsumeBench {
    #[command(flatten)]
    pub topic: TopicArgs,
    /// Most bytes one fetch may return per partition (librdkafka's max.partition.fetch.bytes).
    #[arg(long, default_value_t = 1 << 20)]
    pub fetch_max_bytes: i32,
}

/// Runs a benchmark.
pub async fn run(cmd: BenchCommand, endpoints: &Endpoints) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Produce(args) => finish(produce(&args, endpoints).await?, &args.topic),
        BenchCommand::Consume(args) => finish(consume(&args, endpoints).await?, &args.topic),
        BenchCommand::E2e(args) => finish(e2e(&args, endpoints).await?, &args.topic),
    }
}

/// Prints the report, writes the JSON file, and fails the command when anything failed.
fn finish(report: Report, topic: &TopicArgs) -> anyhow::Result<()> {
    report.print();
    if let Some(path) = &topic.json {
        report.write_json(path)?;
    }
    match &report.errors {
        Errors { count: 0, .. } => Ok(()),
        Errors { count, first } => bail!(
            "{count} failures during the run; first: {}",
            first.as_deref().unwrap_or("?")
        ),
    }
}

/// `bench produce`.
async fn produce(args: &ProduceBench, endpoints: &Endpoints) -> anyhow::Result<Report> {
    let kafka = Kafka::connect(endpoints).await?;
    let clients = open_topic(&kafka, &args.topic, true).await?;
    let plan = args.plan(Defaults {
        records: Some(200_000),
        duration: None,
        rate: 0,
        linger: Duration::from_millis(5),
    });
    let acked = Arc::new(AtomicU64::new(0));
    let outcome = {
        let _bar = Progress::start("produce", plan.records, acked.clone(), args.topic.quiet);
        producer::run(plan.clone(), &clients, acked).await
    };
    let bytes = outcome.acked * plan.record_size as u64;
    Ok(Report {
        mode: "produce",
        params: args.params(&plan, clients.len()),
        produce: Some(Throughput::new(outcome.acked, bytes, outcome.elapsed)),
        consume: None,
        received: None,
        produce_ack_ms: Percentiles::of(&outcome.latency),
        end_to_end_ms: None,
        errors: outcome.errors,
    })
}

/// `bench consume`.
async fn consume(args: &ConsumeBench, endpoints: &Endpoints) -> anyhow::Result<Report> {
    let kafka = Kafka::connect(endpoints).await?;
    let clients = open_topic(&kafka, &args.topic, false).await?;
    let mut parts = Vec::with_capacity(clients.len());
    for client in clients {
        let (low, high) = kafka.watermarks(&client).await?;
        parts.push((
            client,
            Span {
                from: low,
                until: Some(high),
            },
        ));
    }
    let total: i64 = parts
        .iter()
        .map(|(_, s)| s.until.unwrap_or(0) - s.from)
        .sum();
    if total == 0 {
        bail!(
            "topic '{}' is empty: run `streamhouse bench produce --topic {}` first",
            args.topic.topic,
            args.topic.topic
        );
    }
    let plan = FetchPlan {
        max_bytes: args.fetch_max_bytes,
        max_wait_ms: 100,
        stop: Arc::new(AtomicBool::new(false)),
        received: Arc::new(AtomicU64::new(0)),
    };
    let partitions = parts.len();
    let outcome = {
        let _bar = Progress::start(
            "consume",
            Some(total as u64),
            plan.received.clone(),
            args.topic.quiet,
        );
        consumer::run(parts, plan).await
    };
    Ok(Report {
        mode: "consume",
        params: json!({"topic": args.topic.topic, "partitions": partitions}),
        produce: None,
        consume: Some(Throughput::new(
            outcome.records,
            outcome.bytes,
            outcome.elapsed,
        )),
        received: None,
        produce_ack_ms: None,
        end_to_end_ms: None,
        errors: outcome.errors,
    })
}

/// How long tailing consumers may lag behind the last acknowledgement before the run ends.
const E2E_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// `bench e2e`.
async fn e2e(args: &ProduceBench, endpoints: &Endpoints) -> anyhow::Result<Report> {
    let kafka = Kafka::connect(endpoints).await?;
    let clients = open_topic(&kafka, &args.topic, true).await?;
    warm_up(&kafka, &clients).await?;
    let parts = tail_spans(&kafka, &clients).await?;
    let fetch = FetchPlan {
        max_bytes: 1 << 20,
        max_wait_ms: 500,
        stop: Arc::new(AtomicBool::new(false)),
        received: Arc::new(AtomicU64::new(0)),
    };
    let tail = tokio::spawn(consumer::run(parts, fetch.clone()));
    // Let the first fetches park on the server before the clock starts.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let plan = args.plan(Defaults {
        records: None,
        duration: Some(Duration::from_secs(10)),
        rate: 1000,
        linger: Duration::ZERO,
    });
    let acked = Arc::new(AtomicU64::new(0));
    let produced = {
        let _bar = Progress::start("e2e", plan.records, acked.clone(), args.topic.quiet);
        producer::run(plan.clone(), &clients, acked).await
    };
    wait_for(&fetch.received, produced.acked, E2E_DRAIN_TIMEOUT).await;
    fetch.stop.store(true, Ordering::Relaxed);
    let consumed = tail.await.context("tail consumers")?;
    let mut errors = produced.errors;
    errors.merge(consumed.errors);
    if consumed.records < produced.acked {
        let missing = produced.acked - consumed.records;
        errors.add(missing, || {
            format!("{missing} acknowledged records not received within {E2E_DRAIN_TIMEOUT:?}")
        });
    }
    let bytes = produced.acked * plan.record_size as u64;
    Ok(Report {
        mode: "e2e",
        params: args.params(&plan, clients.len()),
        produce: Some(Throughput::new(produced.acked, bytes, produced.elapsed)),
        // The tail's wall time includes parking before and draining after the producers, so
        // a consume rate would be meaningless here: report the count.
        consume: None,
        received: Some(consumed.records),
        produce_ack_ms: Percentiles::of(&produced.latency),
        end_to_end_ms: Percentiles::of(&consumed.latency),
        errors,
    })
}

/// A tailing consumer per partition, starting at its current end. Each gets a partition client
/// (hence a connection) of its own: the server answers a connection's requests in order, so
/// sharing the producer's would hold acknowledgements behind parked fetches and vice versa.
async fn tail_spans(
    kafka: &Kafka,
    clients: &[Arc<PartitionClient>],
) -> anyhow::Result<Vec<(Arc<PartitionClient>, Span)>> {
    let mut parts = Vec::with_capacity(clients.len());
    for client in clients {
        let tail = kafka.partition(client.topic(), client.partition()).await?;
        let (_, high) = kafka.watermarks(&tail).await?;
        let span = Span {
            from: high,
            until: None,
        };
        parts.push((tail, span));
    }
    Ok(parts)
}

/// One unstamped record per partition, so connection set-up and partition opening on the
/// server happen before the clock starts.
async fn warm_up(kafka: &Kafka, clients: &[Arc<PartitionClient>]) -> anyhow::Result<()> {
    for client in clients {
        let record = Record {
            key: Some(b"warm-up".to_vec()),
            value: Some(b"warm-up".to_vec()),
            headers: Default::default(),
            timestamp: Utc::now(),
        };
        let what = format!("warming up {}/{}", client.topic(), client.partition());
        kafka
            .call(&what, client.produce(vec![record], Default::default()))
            .await?;
    }
    Ok(())
}

/// Waits until `counter` reaches `target` or `limit` passes.
async fn wait_for(counter: &AtomicU64, target: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    while counter.load(Ordering::Relaxed) < target && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Partition clients of the benchmark topic, creating it first when allowed and missing.
async fn open_topic(
    kafka: &Kafka,
    args: &TopicArgs,
    create: bool,
) -> anyhow::Result<Vec<Arc<PartitionClient>>> {
    let topic = &args.topic;
    let ids = match kafka.find_partitions(topic).await? {
        Some(ids) => ids,
        None if create => {
            let partitions = i32::try_from(args.partitions)?;
            if let Err(e) = kafka.create_topic(topic, partitions).await {
                if !is_topic_exists(&e) {
                    return Err(e);
                }
            }
            kafka.partitions(topic).await?
        }
        None => {
            bail!("unknown topic '{topic}': run `streamhouse bench produce --topic {topic}` first")
        }
    };
    if ids.len() != args.partitions as usize && create {
        eprintln!(
            "note: topic '{topic}' exists with {} partitions; using those",
            ids.len()
        );
    }
    kafka.partition_clients(topic, &ids).await
}

/// Mode-specific defaults for flags left unset.
struct Defaults {
    records: Option<u64>,
    duration: Option<Duration>,
    rate: u64,
    linger: Duration,
}

impl ProduceBench {
    fn plan(&self, d: Defaults) -> LoadPlan {
        let (records, duration) = match (self.records, self.duration) {
            (None, None) => (d.records, d.duration),
            given => given,
        };
        LoadPlan {
            records,
            duration,
            rate: self.rate.unwrap_or(d.rate),
            concurrency: self.concurrency.max(1),
            in_flight: self.in_flight.max(1),
            record_size: self.record_size.max(producer::STAMP_LEN),
            batch_bytes: self.batch_size,
            linger: self.linger.unwrap_or(d.linger),
            compression: self.compression.into(),
        }
    }

    fn params(&self, plan: &LoadPlan, partitions: usize) -> serde_json::Value {
        json!({
            "topic": self.topic.topic,
            "partitions": partitions,
            "record_size": plan.record_size,
            "records": plan.records,
            "duration_s": plan.duration.map(|d| d.as_secs_f64()),
            "rate": plan.rate,
            "concurrency": plan.concurrency,
            "in_flight": plan.in_flight,
            "batch_size": plan.batch_bytes,
            "linger_ms": plan.linger.as_secs_f64() * 1000.0,
            "compression": self.compression,
        })
    }
}
