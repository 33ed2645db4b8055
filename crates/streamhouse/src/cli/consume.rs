//! `streamhouse consume`: prints records from a topic, over the Kafka protocol. With `--group`
//! the start positions are the group's committed offsets and the new positions are committed
//! back, both through the HTTP admin API.

use std::io::Write;
use std::sync::Arc;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde_json::json;

use super::group::{commit_offsets, committed_offsets};
use super::kafka::{FetchedRecord, Kafka, PartitionClient};
use super::{Endpoints, Format};

/// Longest a fetch waits on the server for new records.
const FETCH_WAIT_MS: i32 = 500;
const FETCH_MAX_BYTES: i32 = 4 << 20;

/// Flags of `consume`.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    pub topic: String,
    /// Read only this partition (default: all).
    #[arg(long, short = 'p')]
    pub partition: Option<i32>,
    /// Where to start: `earliest`, `latest` or an offset (used in every partition read).
    #[arg(long, short = 'o', default_value = "earliest", conflicts_with_all = ["from_timestamp", "group"])]
    pub offset: StartAt,
    /// Start at the first record with a timestamp >= this (milliseconds since the epoch).
    #[arg(long, conflicts_with = "group")]
    pub from_timestamp: Option<i64>,
    /// Start at this consumer group's committed offsets (earliest where none) and commit the
    /// positions reached when done (via the HTTP API).
    #[arg(long, short = 'g')]
    pub group: Option<String>,
    /// Stop after this many records.
    #[arg(long, short = 'n')]
    pub max_messages: Option<u64>,
    /// `text` prints values, one per line; `json` prints one object per record.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Exit once every partition read is at its end instead of waiting for new records.
    #[arg(long, short = 'e')]
    pub exit_at_end: bool,
}

/// A start position given by `--offset`.
#[derive(Debug, Clone, Copy)]
pub enum StartAt {
    /// The log start.
    Earliest,
    /// The high watermark: only new records.
    Latest,
    /// A fixed offset.
    Offset(i64),
}

impl std::str::FromStr for StartAt {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "earliest" | "beginning" => Ok(Self::Earliest),
            "latest" | "end" => Ok(Self::Latest),
            n => n
                .parse()
                .map(Self::Offset)
                .map_err(|_| format!("'{n}' is not earliest, latest or an offset")),
        }
    }
}

/// One partition being read.
struct Cursor {
    client: Arc<PartitionClient>,
    next_offset: i64,
    at_end: bool,
}

/// Runs `consume`.
pub async fn run(args: ConsumeArgs, endpoints: &Endpoints) -> anyhow::Result<()> {
    let kafka = Kafka::connect(endpoints).await?;
    let ids = selected_partitions(&kafka, &args).await?;
    let clients = kafka.partition_clients(&args.topic, &ids).await?;
    let mut cursors = Vec::with_capacity(clients.len());
    for client in clients {
        cursors.push(open_cursor(&kafka, client, &args, endpoints).await?);
    }
    let printed = read_loop(&kafka, &mut cursors, &args).await?;
    if let Some(group) = &args.group {
        let positions: Vec<_> = cursors
            .iter()
            .map(|c| (c.client.partition(), c.next_offset))
            .collect();
        commit_offsets(endpoints, group, &args.topic, &positions).await?;
    }
    eprintln!("consumed {printed} records");
    Ok(())
}

async fn selected_partitions(kafka: &Kafka, args: &ConsumeArgs) -> anyhow::Result<Vec<i32>> {
    let ids = kafka.partitions(&args.topic).await?;
    match args.partition {
        Some(p) if ids.contains(&p) => Ok(vec![p]),
        Some(p) => bail!("topic '{}' has no partition {p}", args.topic),
        None => Ok(ids),
    }
}

async fn open_cursor(
    kafka: &Kafka,
    client: Arc<PartitionClient>,
    args: &ConsumeArgs,
    endpoints: &Endpoints,
) -> anyhow::Result<Cursor> {
    let (low, high) = kafka.watermarks(&client).await?;
    let next_offset = match (&args.group, args.from_timestamp, args.offset) {
        (Some(group), _, _) => committed_offsets(endpoints, group, &args.topic)
            .await?
            .get(&client.partition())
            .copied()
            .unwrap_or(low),
        (None, Some(ms), _) => offset_for_timestamp(kafka, &client, ms, high).await?,
        (None, None, StartAt::Earliest) => low,
        (None, None, StartAt::Latest) => high,
        (None, None, StartAt::Offset(n)) => n,
    };
    Ok(Cursor {
        client,
        next_offset,
        at_end: next_offset >= high,
    })
}

async fn offset_for_timestamp(
    kafka: &Kafka,
    client: &PartitionClient,
    ms: i64,
    high: i64,
) -> anyhow::Result<i64> {
    if ms < 0 {
        bail!("--from-timestamp {ms} is out of range");
    }
    let what = format!(
        "looking up timestamp {ms} in partition {}",
        client.partition()
    );
    let offset = kafka.call(&what, client.get_offset(ms)).await?;
    // Kafka answers -1 when every record is older: start at the end.
    Ok(if offset < 0 { high } else { offset })
}

/// Fetches from every cursor concurrently and prints records until done; returns the count.
async fn read_loop(
    kafka: &Kafka,
    cursors: &mut [Cursor],
    args: &ConsumeArgs,
) -> anyhow::Result<u64> {
    let limit = args.max_messages.unwrap_or(u64::MAX);
    let mut printed = 0u64;
    let mut fetches = FuturesUnordered::new();
    let fetch = |i: usize, cursor: &Cursor| {
        let client = Arc::clone(&cursor.client);
        let offset = cursor.next_offset;
        async move {
            let what = format!("fetching {}/{}", client.topic(), client.partition());
            let result = kafka
                .call(
                    &what,
                    client.fetch_records(offset, FETCH_MAX_BYTES, FETCH_WAIT_MS),
                )
                .await;
            (i, result)
        }
    };
    for (i, cursor) in cursors.iter().enumerate() {
        if !(args.exit_at_end && cursor.at_end) {
            fetches.push(fetch(i, cursor));
        }
    }
    while printed < limit {
        let Some((i, result)) = fetches.next().await else {
            break; // every partition is at its end
        };
        let (records, high_watermark) = result?;
        let cursor = &mut cursors[i];
        for record in records {
            if printed == limit {
                break;
            }
            print_record(cursor.client.partition(), &record, args.format)?;
            cursor.next_offset = record.offset + 1;
            printed += 1;
        }
        cursor.at_end = cursor.next_offset >= high_watermark;
        if !(args.exit_at_end && cursor.at_end) {
            fetches.push(fetch(i, cursor));
        }
    }
    Ok(printed)
}

fn print_record(partition: i32, r: &FetchedRecord, format: Format) -> anyhow::Result<()> {
    let value = text(&r.value);
    let mut out = std::io::stdout().lock();
    match format {
        Format::Text => writeln!(out, "{}", value.unwrap_or_default()),
        Format::Json => {
            let headers: serde_json::Map<_, _> = r
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), text(v).unwrap_or_default().into()))
                .collect();
            let doc = json!({
                "partition": partition,
                "offset": r.offset,
                "timestamp": r.timestamp,
                "key": text(&r.key),
                "value": value,
                "headers": headers,
            });
            writeln!(out, "{doc}")
        }
    }
    .context("writing to stdout")
}

fn text(bytes: &Option<Bytes>) -> Option<std::borrow::Cow<'_, str>> {
    bytes.as_deref().map(String::from_utf8_lossy)
}
