//! `streamhouse group ...`: consumer groups through the HTTP admin API (which also reports lag
//! and members). Target offsets for `reset-offsets` are looked up over Kafka (ListOffsets).

use std::collections::BTreeMap;

use anyhow::bail;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use super::http::{segment, Http};
use super::kafka::Kafka;
use super::output::{print_object, print_rows};
use super::{Endpoints, Format};

/// Consumer group administration.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List consumer groups.
    List(ListArgs),
    /// Show a group's state, members and committed offsets.
    Describe(GroupArgs),
    /// Show a group's committed offsets, high watermarks and lag per partition.
    Lag(GroupArgs),
    /// Move a group's committed offsets for a topic (the group should have no active members).
    ResetOffsets(ResetArgs),
}

/// Flags of `group list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// A group name and the output format.
#[derive(Debug, Args)]
pub struct GroupArgs {
    /// Group id.
    pub group: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// Flags of `group reset-offsets`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["to_earliest", "to_latest", "to_offset", "to_timestamp"])))]
pub struct ResetArgs {
    /// Group id.
    pub group: String,
    /// Topic whose offsets move.
    #[arg(long, short = 't')]
    pub topic: String,
    /// Only this partition (default: all).
    #[arg(long, short = 'p')]
    pub partition: Option<i32>,
    /// To each partition's log start.
    #[arg(long)]
    pub to_earliest: bool,
    /// To each partition's high watermark (skip everything).
    #[arg(long)]
    pub to_latest: bool,
    /// To this offset.
    #[arg(long)]
    pub to_offset: Option<i64>,
    /// To the first record at or after this time (ms since the epoch).
    #[arg(long)]
    pub to_timestamp: Option<i64>,
    /// Show the new offsets without committing them.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs a group command.
pub async fn run(cmd: GroupCommand, endpoints: &Endpoints) -> anyhow::Result<()> {
    let http = Http::new(endpoints)?;
    match cmd {
        GroupCommand::List(args) => {
            let rows: Vec<Value> = http.get(GROUPS_PATH).await?;
            print_rows(&rows, args.format)
        }
        GroupCommand::Describe(args) => {
            let doc: Value = http.get(&group_path(&args.group)).await?;
            print_object(&doc, args.format)
        }
        GroupCommand::Lag(args) => {
            let rows = lag(&http, &args.group).await?;
            let rows: Vec<Value> = rows.iter().map(|r| json!(r)).collect();
            print_rows(&rows, args.format)
        }
        GroupCommand::ResetOffsets(args) => reset(args, endpoints).await,
    }
}

/// One partition's committed offset and lag, as the HTTP API reports it.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct PartitionLag {
    /// Topic.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// Committed offset (-1 when none).
    pub committed: i64,
    /// High watermark.
    pub high_watermark: i64,
    /// `high_watermark - committed`.
    pub lag: i64,
}

async fn lag(http: &Http, group: &str) -> anyhow::Result<Vec<PartitionLag>> {
    http.get(&format!("{}/lag", group_path(group))).await
}

/// The group's committed offsets in `topic`, by partition (partitions without one are absent).
pub async fn committed_offsets(
    endpoints: &Endpoints,
    group: &str,
    topic: &str,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let http = Http::new(endpoints)?;
    let rows = match lag(&http, group).await {
        Ok(rows) => rows,
        // A group that never committed does not exist yet: start from the beginning.
        Err(e) if format!("{e:#}").contains("404") => Vec::new(),
        Err(e) => return Err(e),
    };
    Ok(rows
        .into_iter()
        .filter(|r| r.topic == topic && r.committed >= 0)
        .map(|r| (r.partition, r.committed))
        .collect())
}

/// Commits `(partition, offset)` positions of `topic` for `group`.
pub async fn commit_offsets(
    endpoints: &Endpoints,
    group: &str,
    topic: &str,
    positions: &[(i32, i64)],
) -> anyhow::Result<()> {
    let offsets: Vec<Value> = positions
        .iter()
        .map(|&(partition, offset)| json!({"topic": topic, "partition": partition, "offset": offset}))
        .collect();
    let path = format!("{}/offsets", group_path(group));
    Http::new(endpoints)?
        .send_json::<Value>(Method::POST, &path, &json!({ "offsets": offsets }))
        .await?;
    Ok(())
}

async fn reset(args: ResetArgs, endpoints: &Endpoints) -> anyhow::Result<()> {
    let kafka = Kafka::connect(endpoints).await?;
    let mut ids = kafka.partitions(&args.topic).await?;
    if let Some(p) = args.partition {
        if !ids.contains(&p) {
            bail!("topic '{}' has no partition {p}", args.topic);
        }
        ids = vec![p];
    }
    let mut positions = Vec::with_capacity(ids.len());
    for client in kafka.partition_clients(&args.topic, &ids).await? {
        let offset = target_offset(&kafka, &client, &args).await?;
        positions.push((client.partition(), offset));
    }
    for (partition, offset) in &positions {
        println!("{}/{partition} -> {offset}", args.topic);
    }
    if args.dry_run {
        println!("dry run: nothing committed");
        return Ok(());
    }
    commit_offsets(endpoints, &args.group, &args.topic, &positions).await?;
    println!(
        "committed {} offsets for group {}",
        positions.len(),
        args.group
    );
    Ok(())
}

async fn target_offset(
    kafka: &Kafka,
    client: &super::kafka::PartitionClient,
    args: &ResetArgs,
) -> anyhow::Result<i64> {
    let (low, high) = kafka.watermarks(client).await?;
    if let Some(offset) = args.to_offset {
        return Ok(offset.clamp(low, high));
    }
    if args.to_earliest {
        return Ok(low);
    }
    let Some(ms) = args.to_timestamp else {
        return Ok(high); // --to-latest
    };
    if ms < 0 {
        bail!("--to-timestamp {ms} is out of range");
    }
    let what = format!(
        "looking up timestamp {ms} in partition {}",
        client.partition()
    );
    let offset = kafka.call(&what, client.get_offset(ms)).await?;
    Ok(if offset < 0 { high } else { offset })
}

const GROUPS_PATH: &str = "/api/v1/groups";

fn group_path(group: &str) -> String {
    format!("{GROUPS_PATH}/{}", segment(group))
}
