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
use kafka_protocol::records::Compression;
use serde_json::json;

use crate::cli::kafka::{is_topic_exists, CompressionArg, Kafka};
use crate::cli::{parse_duration, Endpoints};
use crate::client::{self, Connection, Layout};
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
    /// Connections to each partition leader; its partitions are spread over them.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Unanswered Produce requests allowed per connection (librdkafka's max.in.flight).
    #[arg(long, default_value_t = DEFAULT_IN_FLIGHT)]
    pub in_flight: usize,
    /// Records per second, scheduled by time whatever the server does; 0 = as fast as the
    /// windows allow [default: 0 for produce, 1000 for e2e].
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

/// Default of `--in-flight`: as many requests as the agent serves at once per connection
/// (`max_in_flight_per_connection`), so the window does not hide the agent's own limit. A
/// small window caps throughput at `in_flight × batch size / ack latency` (5 × 1 MB per 25 ms
/// is 200 MB/s) and makes partitions queue behind each other (one partition per request).
const DEFAULT_IN_FLIGHT: usize = 128;

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
    let layout = open_topic(endpoints, &args.topic, true).await?;
    let plan = args.plan(
        endpoints,
        Defaults {
            records: Some(200_000),
            duration: None,
            rate: 0,
            linger: Duration::from_millis(5),
        },
    )?;
    let acked = Arc::new(AtomicU64::new(0));
    let producer = producer::start(plan.clone(), &args.topic.topic, &layout, acked.clone()).await?;
    let outcome = {
        let _bar = Progress::start("produce", plan.records, acked, args.topic.quiet);
        producer.run().await
    };
    let bytes = outcome.acked * plan.record_size as u64;
    Ok(Report {
        mode: "produce",
        params: args.params(&plan, &layout),
        produce: Some(Throughput::new(outcome.acked, bytes, outcome.elapsed)),
        consume: None,
        received: None,
        requests: Some(outcome.requests),
        produce_ack_ms: Percentiles::of(&outcome.latency),
        end_to_end_ms: None,
        errors: outcome.errors,
    })
}

/// `bench consume`.
async fn consume(args: &ConsumeBench, endpoints: &Endpoints) -> anyhow::Result<Report> {
    let layout = open_topic(endpoints, &args.topic, false).await?;
    let leaders = spans(endpoints, &args.topic.topic, &layout, false).await?;
    let total: i64 = leaders
        .iter()
        .flat_map(|(_, spans)| spans)
        .map(|s| s.until.unwrap_or(s.from) - s.from)
        .sum();
    if total == 0 {
        bail!(
            "topic '{}' is empty: run `streamhouse bench produce --topic {}` first",
            args.topic.topic,
            args.topic.topic
        );
    }
    let plan = FetchPlan {
        max_partition_bytes: args.fetch_max_bytes,
        max_wait_ms: 100,
        stop: Arc::new(AtomicBool::new(false)),
        received: Arc::new(AtomicU64::new(0)),
    };
    let outcome = {
        let _bar = Progress::start(
            "consume",
            Some(total as u64),
            plan.received.clone(),
            args.topic.quiet,
        );
        consumer::run(&args.topic.topic, leaders, plan).await
    };
    Ok(Report {
        mode: "consume",
        params: json!({
            "topic": args.topic.topic,
            "partitions": layout.partitions().len(),
            "fetch_max_bytes": args.fetch_max_bytes,
        }),
        produce: None,
        consume: Some(Throughput::new(
            outcome.records,
            outcome.bytes,
            outcome.elapsed,
        )),
        received: None,
        requests: Some(outcome.fetches),
        produce_ack_ms: None,
        end_to_end_ms: None,
        errors: outcome.errors,
    })
}

/// How long tailing consumers may lag behind the last acknowledgement before the run ends.
const E2E_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// `bench e2e`.
async fn e2e(args: &ProduceBench, endpoints: &Endpoints) -> anyhow::Result<Report> {
    let layout = open_topic(endpoints, &args.topic, true).await?;
    let plan = args.plan(
        endpoints,
        Defaults {
            records: None,
            duration: Some(Duration::from_secs(10)),
            rate: 1000,
            linger: Duration::ZERO,
        },
    )?;
    let acked = Arc::new(AtomicU64::new(0));
    let topic = &args.topic.topic;
    let producer = producer::start(plan.clone(), topic, &layout, acked.clone()).await?;
    // The tail starts after the warm-up records, on connections of its own: the server answers
    // a connection's requests in order, so parked fetches would hold acknowledgements back.
    let tail = spans(endpoints, topic, &layout, true).await?;
    let fetch = FetchPlan {
        max_partition_bytes: 1 << 20,
        max_wait_ms: 500,
        stop: Arc::new(AtomicBool::new(false)),
        received: Arc::new(AtomicU64::new(0)),
    };
    let tail = tokio::spawn({
        let (topic, fetch) = (topic.clone(), fetch.clone());
        async move { consumer::run(&topic, tail, fetch).await }
    });
    // Let the first fetches park on the server before the clock starts.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let produced = {
        let _bar = Progress::start("e2e", plan.records, acked, args.topic.quiet);
        producer.run().await
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
        params: args.params(&plan, &layout),
        produce: Some(Throughput::new(produced.acked, bytes, produced.elapsed)),
        // The tail's wall time includes parking before and draining after the producers, so
        // a consume rate would be meaningless here: report the count.
        consume: None,
        received: Some(consumed.records),
        requests: Some(produced.requests),
        produce_ack_ms: Percentiles::of(&produced.latency),
        end_to_end_ms: Percentiles::of(&consumed.latency),
        errors,
    })
}

/// A connection to each partition leader with the spans to read there: from the log start to
/// the current end (drain), or from the current end on (`tail`).
async fn spans(
    endpoints: &Endpoints,
    topic: &str,
    layout: &Layout,
    tail: bool,
) -> anyhow::Result<Vec<(Connection, Vec<Span>)>> {
    let mut leaders = Vec::with_capacity(layout.by_leader.len());
    for (addr, partitions) in &layout.by_leader {
        let security = endpoints.security.resolve()?;
        let conn = Connection::open(addr, &security, endpoints.timeout, CLIENT_ID).await?;
        let spans = client::watermarks(&conn, topic, partitions)
            .await?
            .into_iter()
            .map(|(partition, low, high)| match tail {
                true => Span {
                    partition,
                    from: high,
                    until: None,
                },
                false => Span {
                    partition,
                    from: low,
                    until: Some(high),
                },
            })
            .collect();
        leaders.push((conn, spans));
    }
    Ok(leaders)
}

/// Waits until `counter` reaches `target` or `limit` passes.
async fn wait_for(counter: &AtomicU64, target: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    while counter.load(Ordering::Relaxed) < target && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Where the benchmark topic's partitions live, creating the topic first when allowed and
/// missing.
async fn open_topic(
    endpoints: &Endpoints,
    args: &TopicArgs,
    create: bool,
) -> anyhow::Result<Layout> {
    let topic = &args.topic;
    let bootstrap = connect_bootstrap(endpoints).await?;
    let layout = match client::layout(&bootstrap, topic).await? {
        Some(layout) => layout,
        None if create => {
            let kafka = Kafka::connect(endpoints).await?;
            let partitions = i32::try_from(args.partitions)?;
            if let Err(e) = kafka.create_topic(topic, partitions).await {
                if !is_topic_exists(&e) {
                    return Err(e);
                }
            }
            created_layout(&bootstrap, topic, endpoints.timeout).await?
        }
        None => {
            bail!("unknown topic '{topic}': run `streamhouse bench produce --topic {topic}` first")
        }
    };
    let found = layout.partitions().len();
    if found != args.partitions as usize && create {
        eprintln!("note: topic '{topic}' exists with {found} partitions; using those");
    }
    Ok(layout)
}

/// The layout of a topic just created, once every partition has a leader.
async fn created_layout(
    bootstrap: &Connection,
    topic: &str,
    limit: Duration,
) -> anyhow::Result<Layout> {
    let deadline = Instant::now() + limit;
    loop {
        let last = match client::layout(bootstrap, topic).await {
            Ok(Some(layout)) => return Ok(layout),
            Ok(None) => anyhow::anyhow!("topic '{topic}' was created but is not listed"),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A connection to the first bootstrap server that answers.
async fn connect_bootstrap(endpoints: &Endpoints) -> anyhow::Result<Connection> {
    let security = endpoints.security.resolve()?;
    client::connect_any(
        &endpoints.bootstrap,
        &security,
        endpoints.timeout,
        CLIENT_ID,
    )
    .await
}

/// Identifies the benchmark's connections in the server's logs.
pub(crate) const CLIENT_ID: &str = "streamhouse-bench";

/// Mode-specific defaults for flags left unset.
struct Defaults {
    records: Option<u64>,
    duration: Option<Duration>,
    rate: u64,
    linger: Duration,
}

impl ProduceBench {
    fn plan(&self, endpoints: &Endpoints, d: Defaults) -> anyhow::Result<LoadPlan> {
        let (records, duration) = match (self.records, self.duration) {
            (None, None) => (d.records, d.duration),
            given => given,
        };
        Ok(LoadPlan {
            records,
            duration,
            rate: self.rate.unwrap_or(d.rate),
            connections: self.concurrency.max(1),
            in_flight: self.in_flight.max(1),
            record_size: self.record_size.max(producer::STAMP_LEN),
            batch_bytes: self.batch_size,
            linger: self.linger.unwrap_or(d.linger),
            compression: codec(self.compression),
            timeout: endpoints.timeout,
            security: Arc::new(endpoints.security.resolve()?),
        })
    }

    fn params(&self, plan: &LoadPlan, layout: &Layout) -> serde_json::Value {
        let partitions = layout.partitions().len();
        json!({
            "topic": self.topic.topic,
            "partitions": partitions,
            "record_size": plan.record_size,
            "records": plan.records,
            "duration_s": plan.duration.map(|d| d.as_secs_f64()),
            "rate": plan.rate,
            "concurrency": plan.connections,
            "in_flight": plan.in_flight,
            "batch_size": plan.batch_bytes,
            "linger_ms": plan.linger.as_secs_f64() * 1000.0,
            "compression": self.compression,
            "acks": "all",
            "warm_up_records": partitions,
        })
    }
}

/// The wire codec of `--compression`.
fn codec(c: CompressionArg) -> Compression {
    match c {
        CompressionArg::None => Compression::None,
        CompressionArg::Gzip => Compression::Gzip,
        CompressionArg::Snappy => Compression::Snappy,
        CompressionArg::Lz4 => Compression::Lz4,
        CompressionArg::Zstd => Compression::Zstd,
    }
}
