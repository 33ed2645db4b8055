//! `streamhouse produce`: one record per input line, over the Kafka protocol.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Record;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};

use super::kafka::{CompressionArg, Kafka, PartitionClient};
use super::{parse_key_value, Endpoints};
use crate::client;

/// Records buffered per partition before a produce request goes out.
const CHUNK_RECORDS: usize = 1000;
const CHUNK_BYTES: usize = 1 << 20;

/// Flags of `produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Topic to write to.
    pub topic: String,
    /// Read records from this file instead of stdin.
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
    /// Split each line at the first occurrence of this string into key and value.
    #[arg(long, short = 'K')]
    pub key_separator: Option<String>,
    /// Header `key=value` added to every record (repeatable).
    #[arg(long = "header", short = 'H', value_parser = parse_key_value)]
    pub headers: Vec<(String, String)>,
    /// Write every record to this partition (default: by key hash, like Kafka's default
    /// partitioner; records without key round-robin).
    #[arg(long, short = 'p')]
    pub partition: Option<i32>,
    /// Batch compression.
    #[arg(
        long,
        value_enum,
        default_value = "none",
        env = "STREAMHOUSE_COMPRESSION"
    )]
    pub compression: CompressionArg,
}

/// Runs `produce`.
pub async fn run(args: ProduceArgs, endpoints: &Endpoints) -> anyhow::Result<()> {
    if args.file.is_none() {
        endpoints
            .security
            .leave_stdin_to("records without --file")?;
    }
    let kafka = Kafka::connect(endpoints).await?;
    let ids = kafka.partitions(&args.topic).await?;
    if let Some(p) = args.partition {
        if !ids.contains(&p) {
            bail!("topic '{}' has no partition {p}", args.topic);
        }
    }
    let clients = kafka.partition_clients(&args.topic, &ids).await?;
    let input: Box<dyn AsyncBufRead + Unpin> = match &args.file {
        Some(path) => Box::new(BufReader::new(
            tokio::fs::File::open(path)
                .await
                .with_context(|| format!("opening {}", path.display()))?,
        )),
        None => Box::new(BufReader::new(tokio::io::stdin())),
    };
    let mut sink = Sink::new(&kafka, clients, &args);
    let mut lines = input.lines();
    while let Some(line) = lines.next_line().await.context("reading input")? {
        let line = line.trim_end_matches('\r');
        if !line.is_empty() {
            sink.push(line).await?;
        }
    }
    let produced = sink.finish().await?;
    println!("produced {produced} records to {}", args.topic);
    Ok(())
}

/// Buffers records per partition and sends them in chunks.
struct Sink<'a> {
    kafka: &'a Kafka,
    args: &'a ProduceArgs,
    clients: Vec<Arc<PartitionClient>>,
    buffers: Vec<Vec<Record>>,
    buffered_bytes: Vec<usize>,
    next_round_robin: usize,
    produced: u64,
}

impl<'a> Sink<'a> {
    fn new(kafka: &'a Kafka, clients: Vec<Arc<PartitionClient>>, args: &'a ProduceArgs) -> Self {
        let n = clients.len();
        Self {
            kafka,
            args,
            clients,
            buffers: vec![Vec::new(); n],
            buffered_bytes: vec![0; n],
            next_round_robin: 0,
            produced: 0,
        }
    }

    async fn push(&mut self, line: &str) -> anyhow::Result<()> {
        let record = self.record(line);
        let index = self.choose(record.key.as_deref());
        self.buffered_bytes[index] += approximate_size(&record);
        self.buffers[index].push(record);
        if self.buffers[index].len() >= CHUNK_RECORDS || self.buffered_bytes[index] >= CHUNK_BYTES {
            self.send(index).await?;
        }
        Ok(())
    }

    fn record(&self, line: &str) -> Record {
        let (key, value) = match &self.args.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(Bytes::copy_from_slice(k.as_bytes())), v),
                None => (None, line),
            },
            None => (None, line),
        };
        // One value per header name, the last given winning.
        let headers: BTreeMap<&String, &String> =
            self.args.headers.iter().map(|(k, v)| (k, v)).collect();
        let mut record = client::record(
            0,
            now_ms(),
            key,
            Some(Bytes::copy_from_slice(value.as_bytes())),
        );
        record.headers = headers
            .into_iter()
            .map(|(k, v)| {
                let value = Bytes::copy_from_slice(v.as_bytes());
                (StrBytes::from_string(k.clone()), Some(value))
            })
            .collect();
        record
    }

    /// Index into `clients` for a record.
    fn choose(&mut self, key: Option<&[u8]>) -> usize {
        if let Some(p) = self.args.partition {
            return self
                .clients
                .iter()
                .position(|c| c.partition() == p)
                .expect("partition checked at start");
        }
        let n = self.clients.len();
        match key {
            Some(key) => (murmur2(key) & 0x7fff_ffff) as usize % n,
            None => {
                self.next_round_robin = (self.next_round_robin + 1) % n;
                self.next_round_robin
            }
        }
    }

    async fn send(&mut self, index: usize) -> anyhow::Result<()> {
        let records = self.take(index);
        let count = records.len() as u64;
        Self::send_batch(self.kafka, &self.clients[index], records, self.args).await?;
        self.produced += count;
        Ok(())
    }

    /// Partition `index`'s buffered records, numbered within their batch as `client::record`
    /// numbers them.
    fn take(&mut self, index: usize) -> Vec<Record> {
        let mut records = std::mem::take(&mut self.buffers[index]);
        self.buffered_bytes[index] = 0;
        for (i, r) in records.iter_mut().enumerate() {
            r.offset = i as i64;
            r.sequence = (i as i32).wrapping_sub(1);
        }
        records
    }

    async fn send_batch(
        kafka: &Kafka,
        client: &PartitionClient,
        records: Vec<Record>,
        args: &ProduceArgs,
    ) -> anyhow::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let what = format!("producing to {}/{}", client.topic(), client.partition());
        let produce = client.produce(records, args.compression.into());
        kafka.call(&what, produce).await.map(|_| ())
    }

    /// Sends what is left in every partition, all partitions at once (each waits for its
    /// flush; one after another, a topic with many partitions would take that many flushes).
    async fn finish(mut self) -> anyhow::Result<u64> {
        let batches: Vec<(usize, Vec<Record>)> = (0..self.clients.len())
            .map(|i| (i, self.take(i)))
            .filter(|(_, records)| !records.is_empty())
            .collect();
        let count: usize = batches.iter().map(|(_, r)| r.len()).sum();
        let sends = batches
            .into_iter()
            .map(|(i, records)| Self::send_batch(self.kafka, &self.clients[i], records, self.args));
        futures::future::try_join_all(sends).await?;
        Ok(self.produced + count as u64)
    }
}

/// The bytes a record adds to a batch, roughly (for chunking).
fn approximate_size(r: &Record) -> usize {
    let len = |b: &Option<Bytes>| b.as_ref().map_or(0, Bytes::len);
    let headers: usize = r.headers.iter().map(|(k, v)| k.len() + len(v)).sum();
    len(&r.key) + len(&r.value) + headers + 16
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| d.as_millis() as i64)
}

/// Kafka's default partitioner hash (murmur2 as in `org.apache.kafka.common.utils.Utils`),
/// so a key lands on the same partition as with the Java and librdkafka clients.
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    const SEED: u32 = 0x9747_b28c;
    let mut h = SEED ^ data.len() as u32;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for chunk in chunks {
        let mut k = u32::from_le_bytes(chunk.try_into().expect("4-byte chunk"));
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    if !tail.is_empty() {
        for (i, &b) in tail.iter().enumerate().rev() {
            h ^= u32::from(b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

#[cfg(test)]
mod tests {
    use super::murmur2;

    #[test]
    fn murmur2_matches_kafka() {
        // Vectors from Kafka's UtilsTest.
        assert_eq!(murmur2(b"21"), -973_932_308);
        assert_eq!(murmur2(b"foobar"), -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985_981_536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1_486_304_829);
        assert_eq!(murmur2(b"abc"), 479_470_107);
    }
}
