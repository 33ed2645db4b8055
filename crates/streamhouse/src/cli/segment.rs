//! `streamhouse segment inspect`: decodes one object (a file, or a key in the configured object
//! store) — a segment object, or a shared object holding the segments of many partitions —
//! verifies every checksum and prints each segment's summary and batches. Read-only; the only
//! command that does not go through a running server.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use bytes::Bytes;
use clap::{Args, Subcommand};
use object_store::ObjectStoreExt;
use serde::Serialize;
use streamhouse_segment::{
    decode_segment, read_shared_index, RecordBatch, SegmentFooter, FORMAT_VERSION, SHARED_MAGIC,
};

use super::Format;
use crate::config::ServeArgs;

/// Segment tools.
#[derive(Debug, Subcommand)]
pub enum SegmentCommand {
    /// Decode a segment object, verify all checksums, print its summary and batches.
    Inspect(InspectArgs),
}

/// Flags of `segment inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A segment file, or an object key (`topics/...`) in the configured object store.
    pub segment: String,
    /// Print only the summary, not one line per batch.
    #[arg(long)]
    pub summary: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Where object keys are looked up: the same settings `serve` uses.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// TOML config file of the server.
    #[arg(long, env = "STREAMHOUSE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory of the server (its local object store is `<data-dir>/objects`).
    #[arg(long, env = "STREAMHOUSE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// S3 bucket holding the segments.
    #[arg(long, env = "STREAMHOUSE_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// S3-compatible endpoint URL.
    #[arg(long, env = "STREAMHOUSE_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 region.
    #[arg(long, env = "STREAMHOUSE_S3_REGION")]
    pub s3_region: Option<String>,
}

/// Runs a segment command.
pub async fn run(cmd: SegmentCommand) -> anyhow::Result<()> {
    let SegmentCommand::Inspect(args) = cmd;
    let object = load(&args).await?;
    if !object.ends_with(&SHARED_MAGIC) {
        let report = inspect(&args, object, None)?;
        match args.format {
            Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
            Format::Text => report.print(),
        }
        return Ok(());
    }
    let entries = read_shared_index(&object, object.len() as u64)
        .map_err(|e| anyhow!("shared object {} is corrupt: {e}", args.segment))?;
    let mut reports = Vec::with_capacity(entries.len());
    for entry in entries {
        let (start, end) = (entry.offset as usize, (entry.offset + entry.len) as usize);
        let part = Part {
            topic_id: uuid::Uuid::from_bytes(entry.topic_id).to_string(),
            partition: entry.partition,
            object_offset: entry.offset,
        };
        reports.push(inspect(&args, object.slice(start..end), Some(part))?);
    }
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&reports)?),
        Format::Text => reports.iter().for_each(Report::print),
    }
    Ok(())
}

/// Decodes one segment (a whole object, or `part` of a shared one; positions are relative to
/// the segment).
fn inspect(args: &InspectArgs, segment: Bytes, part: Option<Part>) -> anyhow::Result<Report> {
    let size = segment.len();
    let at = part.as_ref().map_or(String::new(), |p| {
        format!(
            " (partition {} at object offset {})",
            p.partition, p.object_offset
        )
    });
    let (footer, batches) = decode_segment(segment)
        .map_err(|e| anyhow!("segment {}{at} is corrupt: {e}", args.segment))?;
    let mut report = Report::new(&args.segment, size, &footer, &batches, !args.summary);
    report.part = part;
    Ok(report)
}

/// Where a segment lies in a shared object.
#[derive(Debug, Serialize)]
struct Part {
    topic_id: String,
    partition: u32,
    object_offset: u64,
}

/// The object's bytes: from the file when the argument names one, else from the object store.
async fn load(args: &InspectArgs) -> anyhow::Result<Bytes> {
    let path = Path::new(&args.segment);
    if path.is_file() {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        return Ok(Bytes::from(data));
    }
    let s = &args.store;
    let settings = ServeArgs {
        config: s.config.clone(),
        data_dir: s.data_dir.clone(),
        s3_bucket: s.s3_bucket.clone(),
        s3_endpoint: s.s3_endpoint.clone(),
        s3_region: s.s3_region.clone(),
        ..ServeArgs::default()
    }
    .resolve()?;
    let store = streamhouse_storage::build_object_store(&settings.object_store)?;
    let key = object_store::path::Path::from(args.segment.as_str());
    let object = store
        .get(&key)
        .await
        .with_context(|| format!("'{}' is neither a file nor a stored object", args.segment))?;
    Ok(object.bytes().await?)
}

/// What `segment inspect` prints.
#[derive(Debug, Serialize)]
struct Report {
    segment: String,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    part: Option<Part>,
    size_bytes: usize,
    format_version: u16,
    base_offset: i64,
    last_offset: i64,
    record_count: i64,
    batch_count: u32,
    min_timestamp: i64,
    max_timestamp: i64,
    data_start: u64,
    data_end: u64,
    index_entries: usize,
    index_interval_bytes: u32,
    checksums: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    batches: Vec<BatchInfo>,
}

#[derive(Debug, Serialize)]
struct BatchInfo {
    position: u64,
    bytes: usize,
    base_offset: i64,
    last_offset: i64,
    records: i32,
    compression: String,
    base_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    base_sequence: i32,
}

impl Report {
    fn new(
        segment: &str,
        size: usize,
        footer: &SegmentFooter,
        batches: &[RecordBatch],
        per_batch: bool,
    ) -> Self {
        Self {
            segment: segment.to_string(),
            part: None,
            size_bytes: size,
            format_version: FORMAT_VERSION,
            base_offset: footer.base_offset,
            last_offset: footer.last_offset,
            record_count: footer.record_count,
            batch_count: footer.batch_count,
            min_timestamp: footer.min_timestamp,
            max_timestamp: footer.max_timestamp,
            data_start: footer.data_start,
            data_end: footer.data_end,
            index_entries: footer.index_len(),
            index_interval_bytes: footer.index_interval(),
            checksums: "ok",
            batches: if per_batch {
                batch_infos(footer.data_start, batches)
            } else {
                Vec::new()
            },
        }
    }

    fn print(&self) {
        println!("segment:     {}", self.segment);
        if let Some(p) = &self.part {
            println!(
                "part:        topic {} partition {} at object offset {}",
                p.topic_id, p.partition, p.object_offset
            );
        }
        println!(
            "size:        {} bytes (format v{})",
            self.size_bytes, self.format_version
        );
        println!(
            "offsets:     {}..={} ({} records in {} batches)",
            self.base_offset, self.last_offset, self.record_count, self.batch_count
        );
        println!(
            "timestamps:  {}..={}",
            self.min_timestamp, self.max_timestamp
        );
        println!("data:        bytes {}..{}", self.data_start, self.data_end);
        println!(
            "index:       {} entries, every {} bytes",
            self.index_entries, self.index_interval_bytes
        );
        println!("checksums:   ok (header, footer, index, every batch)");
        if self.batches.is_empty() {
            return;
        }
        println!(
            "{:>10} {:>8} {:>12} {:>12} {:>8} {:>6} {:>14} {:>10}",
            "POSITION", "BYTES", "BASE", "LAST", "RECORDS", "CODEC", "MAX-TIMESTAMP", "PRODUCER"
        );
        for b in &self.batches {
            println!(
                "{:>10} {:>8} {:>12} {:>12} {:>8} {:>6} {:>14} {:>10}",
                b.position,
                b.bytes,
                b.base_offset,
                b.last_offset,
                b.records,
                b.compression,
                b.max_timestamp,
                b.producer_id
            );
        }
    }
}

fn batch_infos(data_start: u64, batches: &[RecordBatch]) -> Vec<BatchInfo> {
    let mut position = data_start;
    batches
        .iter()
        .map(|b| {
            let h = b.header();
            let info = BatchInfo {
                position,
                bytes: b.len(),
                base_offset: b.base_offset(),
                last_offset: b.last_offset(),
                records: b.record_count(),
                compression: format!("{:?}", h.compression()).to_lowercase(),
                base_timestamp: h.base_timestamp,
                max_timestamp: h.max_timestamp,
                producer_id: h.producer_id,
                base_sequence: h.base_sequence,
            };
            position += b.len() as u64;
            info
        })
        .collect()
}
