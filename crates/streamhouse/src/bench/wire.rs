//! The benchmarks' own Kafka client: one TCP connection per broker link, requests encoded with
//! `kafka-protocol` and pipelined (sent as soon as they are built, many awaiting answers), and
//! responses matched to requests by order and correlation id — Kafka answers a connection's
//! requests in the order they were sent.
//!
//! The operator CLI's rskafka client caps what a load generator can show: it takes one
//! future, lock and broadcast channel per record. Driving the wire directly lets the bench
//! batch and pipeline the way librdkafka does, so its figures measure the server.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    BrokerId, ListOffsetsRequest, MetadataRequest, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::ResponseError;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// A response frame (without its length prefix) and when it was read off the socket.
type Reply = (Bytes, Instant);

/// A request on its way to the writer task.
struct Outgoing {
    frame: Bytes,
    correlation_id: i32,
    reply: oneshot::Sender<Reply>,
}

/// A pipelined connection to one broker. Dropping it closes the connection once the requests
/// already sent are answered.
pub struct Connection {
    addr: String,
    /// How long [`Connection::call`] waits for an answer.
    timeout: Duration,
    next_id: AtomicI32,
    outgoing: mpsc::UnboundedSender<Outgoing>,
}

/// Identifies the benchmark's connections in the server's logs.
const CLIENT_ID: &str = "streamhouse-bench";

impl Connection {
    /// Connects to `addr` (`host:port`); `call`s on it give up after `timeout`.
    pub async fn open(addr: &str, timeout: Duration) -> anyhow::Result<Self> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| anyhow!("cannot connect to {addr}: no answer within {timeout:?}"))?
            .with_context(|| format!("cannot connect to {addr}"))?;
        // Small requests (rate mode, one record each) must not wait for Nagle's timer.
        stream.set_nodelay(true)?;
        let (read, mut write) = stream.into_split();
        let (outgoing, mut requests) = mpsc::unbounded_channel::<Outgoing>();
        let (sent, awaiting) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(out) = requests.recv().await {
                // Registered before the write, so the reader always knows whom an answer is for.
                if sent.send((out.correlation_id, out.reply)).is_err()
                    || write.write_all(&out.frame).await.is_err()
                {
                    break;
                }
            }
        });
        tokio::spawn(read_replies(BufReader::new(read), awaiting));
        Ok(Self {
            addr: addr.to_string(),
            timeout,
            next_id: AtomicI32::new(0),
            outgoing,
        })
    }

    /// The address this connection went to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `request` at `version` now; the returned future resolves to its response and
    /// the instant the response arrived. Requests go out in the order `send` is called.
    pub fn send<R: Request>(
        &self,
        request: &R,
        version: i16,
    ) -> anyhow::Result<impl Future<Output = anyhow::Result<(R::Response, Instant)>> + use<R>> {
        let correlation_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let header_version = R::header_version(version);
        let size = header.compute_size(header_version)? + request.compute_size(version)?;
        let mut frame = BytesMut::with_capacity(4 + size);
        frame.put_u32(u32::try_from(size)?);
        header.encode(&mut frame, header_version)?;
        request.encode(&mut frame, version)?;
        let (reply, answer) = oneshot::channel();
        let out = Outgoing {
            frame: frame.freeze(),
            correlation_id,
            reply,
        };
        if self.outgoing.send(out).is_err() {
            bail!("connection to {} is closed", self.addr);
        }
        let addr = self.addr.clone();
        Ok(async move {
            let (mut body, at) = answer
                .await
                .map_err(|_| anyhow!("connection to {addr} closed before answering"))?;
            ResponseHeader::decode(&mut body, R::Response::header_version(version))?;
            Ok((R::Response::decode(&mut body, version)?, at))
        })
    }

    /// Sends `request` and waits for its response.
    pub async fn call<R: Request>(&self, request: &R, version: i16) -> anyhow::Result<R::Response> {
        let answer = self.send(request, version)?;
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(answer) => Ok(answer?.0),
            Err(_) => bail!("{} gave no answer within {:?}", self.addr, self.timeout),
        }
    }
}

/// Reads response frames and hands each to the request it answers, until the connection ends
/// or answers out of order (then every waiting request fails: its sender is dropped).
async fn read_replies(
    mut read: BufReader<tokio::net::tcp::OwnedReadHalf>,
    mut awaiting: mpsc::UnboundedReceiver<(i32, oneshot::Sender<Reply>)>,
) {
    loop {
        let Ok(len) = read.read_u32().await else {
            return;
        };
        let mut frame = BytesMut::with_capacity(len as usize);
        while frame.len() < len as usize {
            let rest = len as u64 - frame.len() as u64;
            match (&mut read).take(rest).read_buf(&mut frame).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        let at = Instant::now();
        let Some((expected, reply)) = awaiting.recv().await else {
            return;
        };
        if frame.len() < 4 || (&frame[..4]).get_i32() != expected {
            return;
        }
        // The requester may have given up; nothing to do then.
        let _ = reply.send((frame.freeze(), at));
    }
}

/// Metadata version used (flexible, with the fields the bench reads).
const METADATA_VERSION: i16 = 9;
/// ListOffsets version used.
const LIST_OFFSETS_VERSION: i16 = 5;

/// Where a topic's partitions live.
pub struct Layout {
    /// Partition ids by the address of their leader, partitions in ascending order.
    pub by_leader: Vec<(String, Vec<i32>)>,
}

impl Layout {
    /// Every partition id, ascending.
    pub fn partitions(&self) -> Vec<i32> {
        let mut all: Vec<i32> = self
            .by_leader
            .iter()
            .flat_map(|(_, ps)| ps.iter().copied())
            .collect();
        all.sort_unstable();
        all
    }
}

/// The leaders of `topic`'s partitions, asked of `bootstrap`; `None` when the topic does not
/// exist.
pub async fn layout(bootstrap: &Connection, topic: &str) -> anyhow::Result<Option<Layout>> {
    let request = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(topic_name(topic))),
    ]));
    let response = bootstrap.call(&request, METADATA_VERSION).await?;
    let brokers: HashMap<BrokerId, String> = response
        .brokers
        .iter()
        .map(|b| (b.node_id, format!("{}:{}", b.host, b.port)))
        .collect();
    let Some(t) = response.topics.first() else {
        bail!("metadata for '{topic}' came back without the topic");
    };
    match ResponseError::try_from_code(t.error_code) {
        None => {}
        Some(ResponseError::UnknownTopicOrPartition) => return Ok(None),
        Some(e) => bail!("metadata for '{topic}': {e}"),
    }
    let mut by_leader: Vec<(String, Vec<i32>)> = Vec::new();
    for p in &t.partitions {
        let addr = brokers.get(&p.leader_id).ok_or_else(|| {
            anyhow!(
                "partition {topic}/{} has no known leader (node {})",
                p.partition_index,
                p.leader_id.0
            )
        })?;
        match by_leader.iter_mut().find(|(a, _)| a == addr) {
            Some((_, ids)) => ids.push(p.partition_index),
            None => by_leader.push((addr.clone(), vec![p.partition_index])),
        }
    }
    for (_, ids) in &mut by_leader {
        ids.sort_unstable();
    }
    Ok(Some(Layout { by_leader }))
}

/// Kafka's ListOffsets timestamp asking for the log start offset.
const EARLIEST: i64 = -2;
/// Kafka's ListOffsets timestamp asking for the high watermark.
const LATEST: i64 = -1;

/// `(partition, log start offset, high watermark)` of `partitions`, asked of their leader.
pub async fn watermarks(
    leader: &Connection,
    topic: &str,
    partitions: &[i32],
) -> anyhow::Result<Vec<(i32, i64, i64)>> {
    let low = list_offsets(leader, topic, partitions, EARLIEST).await?;
    let high = list_offsets(leader, topic, partitions, LATEST).await?;
    Ok(partitions.iter().map(|p| (*p, low[p], high[p])).collect())
}

async fn list_offsets(
    leader: &Connection,
    topic: &str,
    partitions: &[i32],
    at: i64,
) -> anyhow::Result<HashMap<i32, i64>> {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(
                partitions
                    .iter()
                    .map(|&p| {
                        ListOffsetsPartition::default()
                            .with_partition_index(p)
                            .with_timestamp(at)
                    })
                    .collect(),
            )]);
    let response = leader.call(&request, LIST_OFFSETS_VERSION).await?;
    let mut offsets = HashMap::new();
    for p in response.topics.iter().flat_map(|t| &t.partitions) {
        if let Some(e) = ResponseError::try_from_code(p.error_code) {
            bail!(
                "listing offsets of {topic}/{} at {}: {e}",
                p.partition_index,
                leader.addr()
            );
        }
        offsets.insert(p.partition_index, p.offset);
    }
    for p in partitions {
        if !offsets.contains_key(p) {
            bail!("listing offsets of {topic}/{p}: partition missing from the answer");
        }
    }
    Ok(offsets)
}

/// A topic name for a request.
pub fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}
