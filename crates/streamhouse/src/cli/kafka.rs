//! The Kafka side of the operator commands, on the binary's one client (`crate::client`): a
//! bootstrap connection, one pipelined connection per partition leader, a deadline on every
//! call and errors rewritten into one readable line. Calls that a leader change can fail
//! (NOT_LEADER_OR_FOLLOWER and the like) look the leader up again and retry until the
//! deadline, as Kafka clients do.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};
use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, DeleteTopicsRequest, FetchRequest, ListOffsetsRequest,
    MetadataRequest, MetadataResponse, ProduceRequest,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
};
use tokio::sync::Mutex;

use super::kafka_security::KafkaSecurity;
use super::Endpoints;
use crate::client::{self, topic_name, Connection};

/// Partitions per ListOffsets request when listing a whole topic's watermarks.
const WATERMARKS_PER_REQUEST: usize = 500;

/// Names the operator commands' connections in the server's logs.
const CLIENT_ID: &str = "streamhouse-cli";

/// A connected Kafka client plus the deadline its calls run under.
pub struct Kafka {
    inner: Arc<Inner>,
}

/// What the client and its partition clients share.
struct Inner {
    bootstrap: Connection,
    bootstrap_addrs: String,
    security: KafkaSecurity,
    timeout: Duration,
    /// One connection per leader address, opened on first use.
    leaders: Mutex<HashMap<String, Arc<Connection>>>,
    /// Each topic's partition leaders as last looked up (one Metadata request serves every
    /// partition of a topic; looked up again after a failure at a leader).
    layouts: std::sync::Mutex<HashMap<String, HashMap<i32, String>>>,
}

impl Kafka {
    /// Connects to the bootstrap servers, with TLS and SASL as the flags say; a refused
    /// handshake or login fails at once, with its reason.
    pub async fn connect(endpoints: &Endpoints) -> anyhow::Result<Self> {
        let security = endpoints.security.resolve()?;
        let bootstrap = client::connect_any(
            &endpoints.bootstrap,
            &security,
            endpoints.timeout,
            CLIENT_ID,
        )
        .await?;
        Ok(Self {
            inner: Arc::new(Inner {
                bootstrap,
                bootstrap_addrs: endpoints.bootstrap.clone(),
                security,
                timeout: endpoints.timeout,
                leaders: Mutex::default(),
                layouts: Default::default(),
            }),
        })
    }

    /// Runs a client call under the deadline, with its error rewritten to one line.
    pub async fn call<T>(
        &self,
        what: &str,
        fut: impl Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        self.inner.call(what, fut).await
    }

    /// Topic names with their partition counts, sorted by name.
    pub async fn topics(&self) -> anyhow::Result<Vec<(String, usize)>> {
        let metadata = self
            .call("listing topics", self.inner.metadata(None))
            .await?;
        let mut topics: Vec<_> = metadata
            .topics
            .iter()
            .filter_map(|t| Some((t.name.as_ref()?.to_string(), t.partitions.len())))
            .collect();
        topics.sort();
        Ok(topics)
    }

    /// Partition ids of `topic`; an error naming the topic when it does not exist.
    pub async fn partitions(&self, topic: &str) -> anyhow::Result<Vec<i32>> {
        match self.find_partitions(topic).await? {
            Some(ids) => Ok(ids),
            None => bail!("unknown topic '{topic}'"),
        }
    }

    /// Partition ids of `topic` (ascending), or `None` when it does not exist.
    pub async fn find_partitions(&self, topic: &str) -> anyhow::Result<Option<Vec<i32>>> {
        let what = format!("describing topic '{topic}'");
        let metadata = self.call(&what, self.inner.metadata(Some(topic))).await?;
        let Some(t) = metadata.topics.first() else {
            return Ok(None);
        };
        match ResponseError::try_from_code(t.error_code) {
            None => {}
            Some(ResponseError::UnknownTopicOrPartition) => return Ok(None),
            Some(e) => bail!("{what}: server error {e:?}"),
        }
        let mut ids: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
        ids.sort_unstable();
        Ok(Some(ids))
    }

    /// A client for one partition (its leader is looked up on each call that needs it).
    pub async fn partition(&self, topic: &str, partition: i32) -> anyhow::Result<PartitionClient> {
        let client = PartitionClient {
            inner: self.inner.clone(),
            topic: topic.to_string(),
            partition,
        };
        let what = format!("opening partition {topic}/{partition}");
        self.call(&what, client.leader(false)).await?;
        Ok(client)
    }

    /// Clients for the given partitions, in order: one Metadata lookup for all of them.
    pub async fn partition_clients(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> anyhow::Result<Vec<Arc<PartitionClient>>> {
        let Some(&first) = partitions.first() else {
            return Ok(Vec::new());
        };
        // The first lookup fills the topic's layout; the others are answered from it.
        let mut clients = vec![Arc::new(self.partition(topic, first).await?)];
        for &p in &partitions[1..] {
            clients.push(Arc::new(self.partition(topic, p).await?));
        }
        Ok(clients)
    }

    /// Log start offset and high watermark of a partition.
    pub async fn watermarks(&self, client: &PartitionClient) -> anyhow::Result<(i64, i64)> {
        let what = format!(
            "listing offsets of {}/{}",
            client.topic(),
            client.partition()
        );
        let low = client.get_offset(client::EARLIEST);
        let high = client.get_offset(client::LATEST);
        self.call(&what, futures::future::try_join(low, high)).await
    }

    /// `(partition, log start offset, high watermark)` of `partitions` (ascending), asked of
    /// each leader in one ListOffsets pair for all of its partitions.
    pub async fn watermarks_of(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> anyhow::Result<Vec<(i32, i64, i64)>> {
        let clients = self.partition_clients(topic, partitions).await?;
        let mut by_leader: HashMap<String, Vec<i32>> = HashMap::new();
        for c in &clients {
            let addr = c.leader(false).await?;
            by_leader.entry(addr).or_default().push(c.partition());
        }
        let what = format!("listing offsets of {topic}");
        let mut marks = Vec::with_capacity(partitions.len());
        for (addr, ids) in by_leader {
            let conn = self.inner.connection(&addr).await?;
            // Bounded requests, each under the deadline: an agent answers a request for
            // thousands of partitions it has not opened yet slowly.
            for chunk in ids.chunks(WATERMARKS_PER_REQUEST) {
                let found = self.call(&what, client::watermarks(&conn, topic, chunk));
                marks.extend(found.await?);
            }
        }
        marks.sort_unstable();
        Ok(marks)
    }

    /// Creates a topic with `partitions` partitions.
    pub async fn create_topic(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(millis(self.inner.timeout))
            .with_topics(vec![CreatableTopic::default()
                .with_name(topic_name(topic))
                .with_num_partitions(partitions)
                .with_replication_factor(-1)]);
        let what = format!("creating topic '{topic}'");
        let conn = &self.inner.bootstrap;
        let response = self.call(&what, conn.call_newest((2, 7), &request)).await?;
        let result = response.topics.first();
        server_error(&what, result.map_or(0, |r| r.error_code), None)
    }

    /// Deletes a topic.
    pub async fn delete_topic(&self, topic: &str) -> anyhow::Result<()> {
        let request = DeleteTopicsRequest::default()
            .with_timeout_ms(millis(self.inner.timeout))
            .with_topic_names(vec![topic_name(topic)]);
        let what = format!("deleting topic '{topic}'");
        let conn = &self.inner.bootstrap;
        // v6 names topics in `topics` instead; 1-5 is what every agent serves.
        let response = self.call(&what, conn.call_newest((1, 5), &request)).await?;
        let result = response.responses.first();
        server_error(&what, result.map_or(0, |r| r.error_code), None)
    }
}

impl Inner {
    async fn call<T>(
        &self,
        what: &str,
        fut: impl Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(anyhow!("{what} (via {}): {e:#}", self.bootstrap_addrs)),
            Err(_) => Err(anyhow!(
                "{what} (via {}): no answer within {:?}",
                self.bootstrap_addrs,
                self.timeout
            )),
        }
    }

    /// Metadata of one topic, or of every topic.
    async fn metadata(&self, topic: Option<&str>) -> anyhow::Result<MetadataResponse> {
        let topics =
            topic.map(|t| vec![MetadataRequestTopic::default().with_name(Some(topic_name(t)))]);
        let request = MetadataRequest::default().with_topics(topics);
        self.bootstrap.call_newest((1, 12), &request).await
    }

    /// A connection to the agent at `addr`, opened once.
    async fn connection(&self, addr: &str) -> anyhow::Result<Arc<Connection>> {
        let mut leaders = self.leaders.lock().await;
        if let Some(conn) = leaders.get(addr) {
            return Ok(conn.clone());
        }
        let conn = Connection::open(addr, &self.security, self.timeout, CLIENT_ID).await?;
        let conn = Arc::new(conn);
        leaders.insert(addr.to_string(), conn.clone());
        Ok(conn)
    }

    /// Forgets the connection to `addr` (it failed, or the agent lost leadership).
    async fn forget(&self, addr: &str) {
        self.leaders.lock().await.remove(addr);
    }
}

/// One partition of a topic: produce, fetch and offset lookups at its leader.
pub struct PartitionClient {
    inner: Arc<Inner>,
    topic: String,
    partition: i32,
}

/// A record as fetched.
pub struct FetchedRecord {
    /// Its offset.
    pub offset: i64,
    /// Its timestamp, ms since the Unix epoch.
    pub timestamp: i64,
    /// Key.
    pub key: Option<Bytes>,
    /// Value.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// How an attempt at the leader failed.
enum Failure {
    /// Worth another try after a new leader lookup (the leader moved, its connection broke).
    Retry(anyhow::Error),
    /// Final.
    Fail(anyhow::Error),
}

impl PartitionClient {
    /// Topic name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Partition id.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The address of the partition's leader: as last looked up, or `fresh` from Metadata.
    async fn leader(&self, fresh: bool) -> anyhow::Result<String> {
        if !fresh {
            let layouts = self.inner.layouts.lock().expect("layout cache poisoned");
            let known = layouts
                .get(&self.topic)
                .and_then(|l| l.get(&self.partition));
            if let Some(addr) = known {
                return Ok(addr.clone());
            }
        }
        let metadata = self.inner.metadata(Some(&self.topic)).await?;
        let brokers: HashMap<BrokerId, String> = metadata
            .brokers
            .iter()
            .map(|b| (b.node_id, format!("{}:{}", b.host, b.port)))
            .collect();
        let topic = metadata.topics.first().filter(|t| t.error_code == 0);
        let layout: HashMap<i32, String> = topic
            .iter()
            .flat_map(|t| &t.partitions)
            .filter_map(|p| Some((p.partition_index, brokers.get(&p.leader_id)?.clone())))
            .collect();
        let addr = layout.get(&self.partition).cloned();
        let mut layouts = self.inner.layouts.lock().expect("layout cache poisoned");
        layouts.insert(self.topic.clone(), layout);
        addr.ok_or_else(|| {
            anyhow!(
                "partition {}/{} is unknown or has no leader",
                self.topic,
                self.partition
            )
        })
    }

    /// Runs `attempt` at the leader, looking it up again after a retriable failure, until
    /// the caller's deadline stops it.
    async fn at_leader<T, F, Fut>(&self, attempt: F) -> anyhow::Result<T>
    where
        F: Fn(Arc<Connection>) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut pause = Duration::from_millis(50);
        let mut fresh = false;
        loop {
            let addr = self.leader(fresh).await?;
            fresh = true;
            let failure = match self.inner.connection(&addr).await {
                Ok(conn) => match attempt(conn).await {
                    Ok(v) => return Ok(v),
                    Err(Failure::Fail(e)) => return Err(e),
                    Err(Failure::Retry(e)) => e,
                },
                Err(e) => e,
            };
            tracing::debug!(
                "{}/{} at {addr}: {failure:#}; retrying",
                self.topic,
                self.partition
            );
            self.inner.forget(&addr).await;
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// Appends `records` as one batch (acks=all); returns the offset of the first.
    pub async fn produce(
        &self,
        records: Vec<Record>,
        compression: Compression,
    ) -> anyhow::Result<i64> {
        let mut batch = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression,
        };
        RecordBatchEncoder::encode(&mut batch, &records, &options)?;
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(millis(self.inner.timeout))
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic_name(&self.topic))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(self.partition)
                    .with_records(Some(batch.freeze()))])]);
        self.at_leader(|conn| {
            let request = request.clone();
            async move {
                let r = call(&conn, (3, 9), &request).await?;
                let p = r
                    .responses
                    .first()
                    .and_then(|t| t.partition_responses.first());
                let p = p.ok_or_else(|| Failure::Fail(anyhow!("answer without the partition")))?;
                answer(p.error_code, p.error_message.as_ref())?;
                Ok(p.base_offset)
            }
        })
        .await
    }

    /// Records from `offset` on (at most about `max_bytes`), waiting up to `max_wait_ms` for
    /// some to arrive; with the partition's high watermark.
    pub async fn fetch_records(
        &self,
        offset: i64,
        max_bytes: i32,
        max_wait_ms: i32,
    ) -> anyhow::Result<(Vec<FetchedRecord>, i64)> {
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(max_bytes)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic_name(&self.topic))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(self.partition)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(max_bytes)])]);
        let (records, high_watermark) = self
            .at_leader(|conn| {
                let request = request.clone();
                async move {
                    let r = call(&conn, (4, 12), &request).await?;
                    let p = r.responses.first().and_then(|t| t.partitions.first());
                    let p =
                        p.ok_or_else(|| Failure::Fail(anyhow!("answer without the partition")))?;
                    answer(p.error_code, None)?;
                    Ok((p.records.clone().unwrap_or_default(), p.high_watermark))
                }
            })
            .await?;
        Ok((decode(records, offset)?, high_watermark))
    }

    /// The offset at `at`: a timestamp in ms (the first record at or after it, -1 when none),
    /// or [`client::EARLIEST`] / [`client::LATEST`].
    pub async fn get_offset(&self, at: i64) -> anyhow::Result<i64> {
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic_name(&self.topic))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(self.partition)
                    .with_timestamp(at)])]);
        self.at_leader(|conn| {
            let request = request.clone();
            async move {
                let r = call(&conn, (1, 7), &request).await?;
                let p = r.topics.first().and_then(|t| t.partitions.first());
                let p = p.ok_or_else(|| Failure::Fail(anyhow!("answer without the partition")))?;
                answer(p.error_code, None)?;
                Ok(p.offset)
            }
        })
        .await
    }
}

/// Sends `request` on `conn`; a connection failure is worth a retry (at a new leader).
async fn call<R: kafka_protocol::protocol::Request>(
    conn: &Connection,
    ours: (i16, i16),
    request: &R,
) -> Result<R::Response, Failure> {
    conn.call_newest(ours, request)
        .await
        .map_err(Failure::Retry)
}

/// A partition's error code: retriable ones (the leader moved) are worth another try, others
/// fail the call.
fn answer(code: i16, message: Option<&StrBytes>) -> Result<(), Failure> {
    match ResponseError::try_from_code(code) {
        None => Ok(()),
        Some(e) if e.is_retriable() => Err(Failure::Retry(anyhow!("server error {e:?}"))),
        Some(_) => server_error("", code, message).map_err(Failure::Fail),
    }
}

/// `Ok` for code 0, else the error as `server error <Name>: message`.
fn server_error(what: &str, code: i16, message: Option<&StrBytes>) -> anyhow::Result<()> {
    let Some(e) = ResponseError::try_from_code(code) else {
        return Ok(());
    };
    let detail = message.map(|m| format!(": {m}")).unwrap_or_default();
    let what = if what.is_empty() {
        String::new()
    } else {
        format!("{what}: ")
    };
    bail!("{what}server error {e:?}{detail}")
}

/// The records of `records` at or after `from` (a batch may start before it; control
/// batches carry no records for the user).
fn decode(mut records: Bytes, from: i64) -> anyhow::Result<Vec<FetchedRecord>> {
    /// Base offset (8) and batch length (4).
    const PREFIX: usize = 12;
    let mut out = Vec::new();
    while records.len() >= PREFIX {
        let len = usize::try_from((&records[8..PREFIX]).get_i32())?;
        if records.len() < PREFIX + len {
            break; // cut off at the end of the answer; the next fetch reads it whole
        }
        let mut batch = records.split_to(PREFIX + len);
        let set = RecordBatchDecoder::decode(&mut batch)?;
        out.extend(
            set.records
                .into_iter()
                .filter(|r| r.offset >= from && !r.control)
                .map(|r| FetchedRecord {
                    offset: r.offset,
                    timestamp: r.timestamp,
                    key: r.key,
                    value: r.value,
                    headers: r
                        .headers
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                }),
        );
    }
    Ok(out)
}

/// True when `err` is the broker saying a topic already exists.
pub fn is_topic_exists(err: &anyhow::Error) -> bool {
    format!("{err:#}").contains("TopicAlreadyExists")
}

fn millis(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

/// Producer compression codecs (`--compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CompressionArg {
    /// Uncompressed batches.
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl From<CompressionArg> for Compression {
    fn from(c: CompressionArg) -> Self {
        match c {
            CompressionArg::None => Compression::None,
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Snappy => Compression::Snappy,
            CompressionArg::Lz4 => Compression::Lz4,
            CompressionArg::Zstd => Compression::Zstd,
        }
    }
}
