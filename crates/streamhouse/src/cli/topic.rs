//! `streamhouse topic ...`: create, list, describe, delete (Kafka protocol) and alter
//! (HTTP admin API, which carries topic configs and partition counts in one call).

use std::collections::BTreeMap;

use anyhow::bail;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde::Serialize;
use serde_json::{json, Value};

use super::http::{segment, Http};
use super::kafka::{is_topic_exists, Kafka};
use super::{parse_key_value, Endpoints, Format};

/// Topic administration.
#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create(CreateArgs),
    /// List topics with their partition counts.
    List(FormatArg),
    /// Show a topic's partitions, offsets and configs.
    Describe(DescribeArgs),
    /// Delete a topic and its data.
    Delete(NameArg),
    /// Add partitions or change configs.
    Alter(AlterArgs),
}

/// Flags of `topic create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Topic name.
    pub name: String,
    /// Number of partitions.
    #[arg(long, short = 'p', default_value_t = 1)]
    pub partitions: u32,
    /// Topic config `key=value` (repeatable); sent through the HTTP API.
    #[arg(long = "config", short = 'c', value_parser = parse_key_value)]
    pub configs: Vec<(String, String)>,
    /// Succeed when the topic already exists.
    #[arg(long)]
    pub if_not_exists: bool,
}

/// Output format flag.
#[derive(Debug, Args)]
pub struct FormatArg {
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// Flags of `topic describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// Topic name.
    pub name: String,
    #[command(flatten)]
    format: FormatArg,
}

/// A topic name.
#[derive(Debug, Args)]
pub struct NameArg {
    /// Topic name.
    pub name: String,
}

/// Flags of `topic alter`.
#[derive(Debug, Args)]
pub struct AlterArgs {
    /// Topic name.
    pub name: String,
    /// New (larger) partition count.
    #[arg(long, short = 'p')]
    pub partitions: Option<u32>,
    /// Config `key=value` to set (repeatable).
    #[arg(long = "config", short = 'c', value_parser = parse_key_value)]
    pub configs: Vec<(String, String)>,
}

/// Runs a topic command.
pub async fn run(cmd: TopicCommand, endpoints: &Endpoints) -> anyhow::Result<()> {
    match cmd {
        TopicCommand::Create(args) => create(args, endpoints).await,
        TopicCommand::List(args) => list(args.format, endpoints).await,
        TopicCommand::Describe(args) => describe(&args.name, args.format.format, endpoints).await,
        TopicCommand::Delete(args) => {
            Kafka::connect(endpoints)
                .await?
                .delete_topic(&args.name)
                .await?;
            println!("deleted topic {}", args.name);
            Ok(())
        }
        TopicCommand::Alter(args) => alter(args, endpoints).await,
    }
}

async fn create(args: CreateArgs, endpoints: &Endpoints) -> anyhow::Result<()> {
    let partitions = i32::try_from(args.partitions)?;
    let result = if args.configs.is_empty() {
        let kafka = Kafka::connect(endpoints).await?;
        kafka.create_topic(&args.name, partitions).await
    } else {
        let body = json!({"name": args.name, "partitions": partitions, "config": config_map(&args.configs)});
        let http = Http::new(endpoints)?;
        http.send_json::<Value>(Method::POST, TOPICS_PATH, &body)
            .await
            .map(drop)
    };
    match result {
        Ok(()) => println!("created topic {} with {partitions} partitions", args.name),
        Err(e) if args.if_not_exists && is_exists(&e) => {
            println!("topic {} already exists", args.name)
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

fn is_exists(e: &anyhow::Error) -> bool {
    is_topic_exists(e) || format!("{e:#}").contains("already exists")
}

async fn list(format: Format, endpoints: &Endpoints) -> anyhow::Result<()> {
    let topics = Kafka::connect(endpoints).await?.topics().await?;
    match format {
        Format::Json => {
            let doc: Vec<_> = topics
                .iter()
                .map(|(name, partitions)| json!({"name": name, "partitions": partitions}))
                .collect();
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        Format::Text => {
            println!("{:<40} PARTITIONS", "TOPIC");
            for (name, partitions) in topics {
                println!("{name:<40} {partitions}");
            }
        }
    }
    Ok(())
}

/// What `topic describe` shows.
#[derive(Debug, Serialize)]
struct TopicDescription {
    name: String,
    partitions: Vec<PartitionOffsets>,
    /// `None` when the HTTP API could not be asked; the reason goes to stderr.
    configs: Option<BTreeMap<String, Value>>,
}

#[derive(Debug, Serialize)]
struct PartitionOffsets {
    partition: i32,
    start_offset: i64,
    end_offset: i64,
}

async fn describe(name: &str, format: Format, endpoints: &Endpoints) -> anyhow::Result<()> {
    let kafka = Kafka::connect(endpoints).await?;
    let ids = kafka.partitions(name).await?;
    let partitions = kafka
        .watermarks_of(name, &ids)
        .await?
        .into_iter()
        .map(|(partition, start_offset, end_offset)| PartitionOffsets {
            partition,
            start_offset,
            end_offset,
        })
        .collect();
    let configs = match topic_configs(name, endpoints).await {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("note: configs not shown: {e:#}");
            None
        }
    };
    let description = TopicDescription {
        name: name.to_string(),
        partitions,
        configs,
    };
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&description)?),
        Format::Text => print_description(&description),
    }
    Ok(())
}

fn print_description(d: &TopicDescription) {
    println!("topic: {}", d.name);
    println!("partitions: {}", d.partitions.len());
    println!(
        "{:<10} {:>14} {:>14}",
        "PARTITION", "START-OFFSET", "END-OFFSET"
    );
    for p in &d.partitions {
        println!(
            "{:<10} {:>14} {:>14}",
            p.partition, p.start_offset, p.end_offset
        );
    }
    if let Some(configs) = &d.configs {
        println!("configs:");
        for (k, v) in configs {
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            println!("  {k}={v}");
        }
    }
}

/// The topic's configs as the HTTP API reports them.
async fn topic_configs(
    name: &str,
    endpoints: &Endpoints,
) -> anyhow::Result<BTreeMap<String, Value>> {
    let topic: Value = Http::new(endpoints)?.get(&topic_path(name)).await?;
    let configs = topic.get("config").cloned().unwrap_or(Value::Null);
    Ok(serde_json::from_value(configs).unwrap_or_default())
}

async fn alter(args: AlterArgs, endpoints: &Endpoints) -> anyhow::Result<()> {
    if args.partitions.is_none() && args.configs.is_empty() {
        bail!("topic alter needs --partitions and/or --config key=value");
    }
    let http = Http::new(endpoints)?;
    if let Some(count) = args.partitions {
        let path = format!("{}/partitions", topic_path(&args.name));
        http.send_json::<Value>(Method::POST, &path, &json!({"count": count}))
            .await?;
        println!("topic {} now has {count} partitions", args.name);
    }
    if !args.configs.is_empty() {
        let path = format!("{}/config", topic_path(&args.name));
        http.send_json::<Value>(Method::PATCH, &path, &config_map(&args.configs))
            .await?;
        println!(
            "updated {} config(s) of topic {}",
            args.configs.len(),
            args.name
        );
    }
    Ok(())
}

fn config_map(configs: &[(String, String)]) -> BTreeMap<&str, &str> {
    configs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

const TOPICS_PATH: &str = "/api/v1/topics";

fn topic_path(name: &str) -> String {
    format!("{TOPICS_PATH}/{}", segment(name))
}
