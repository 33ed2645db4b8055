//! The Kafka side of the operator commands: an `rskafka` client, with TLS and SASL as
//! `kafka_security.rs` decides, a deadline on every call and errors rewritten into one
//! readable line.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};
use kafka_protocol::messages::MetadataRequest;
use rskafka::client::error::Error as KafkaError;
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::BackoffConfig;

use super::kafka_admin::AdminConnection;
use super::Endpoints;

/// A connected Kafka client plus the deadline its calls run under.
pub struct Kafka {
    client: Client,
    bootstrap: String,
    timeout: Duration,
}

impl Kafka {
    /// Connects to the bootstrap servers, with TLS and SASL as the flags say, and loads the
    /// cluster metadata.
    pub async fn connect(endpoints: &Endpoints) -> anyhow::Result<Self> {
        let security = endpoints.security.resolve()?;
        // rskafka retries a refused TLS handshake or login, or a connection the server closes
        // for want of one, until the deadline, and then reports only that. The admin connection
        // fails at once with the reason, so it goes first: TLS, login, then one request that
        // needs both (Metadata without topics).
        let mut check = AdminConnection::connect_with(endpoints, &security).await?;
        let request = MetadataRequest::default().with_topics(Some(Vec::new()));
        check.call((1, 12), &request).await?;
        drop(check);
        let brokers = endpoints
            .bootstrap
            .split(',')
            .map(|b| b.trim().to_string())
            .collect();
        // Retries stop at the deadline, so an unreachable server fails instead of hanging.
        let backoff = BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            base: 2.0,
            deadline: Some(endpoints.timeout),
        };
        let builder = ClientBuilder::new(brokers)
            .client_id("streamhouse-cli")
            .backoff_config(backoff);
        let builder = security.configure(builder);
        let bootstrap = endpoints.bootstrap.clone();
        let client = deadline(endpoints.timeout, builder.build())
            .await
            .map_err(|e| anyhow!("cannot reach the Kafka listener at {bootstrap}: {e}"))?;
        Ok(Self {
            client,
            bootstrap,
            timeout: endpoints.timeout,
        })
    }

    /// Runs a client call under the deadline, with its error rewritten to one line.
    pub async fn call<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<T, KafkaError>>,
    ) -> anyhow::Result<T> {
        deadline(self.timeout, fut)
            .await
            .map_err(|e| anyhow!("{what} (via {}): {e}", self.bootstrap))
    }

    /// Topic names with their partition counts, sorted by name.
    pub async fn topics(&self) -> anyhow::Result<Vec<(String, usize)>> {
        let mut topics: Vec<_> = self
            .call("listing topics", self.client.list_topics())
            .await?
            .into_iter()
            .map(|t| (t.name, t.partitions.len()))
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

    /// Partition ids of `topic`, or `None` when it does not exist.
    pub async fn find_partitions(&self, topic: &str) -> anyhow::Result<Option<Vec<i32>>> {
        let topics = self
            .call("listing topics", self.client.list_topics())
            .await?;
        Ok(topics
            .into_iter()
            .find(|t| t.name == topic)
            .map(|t| t.partitions.into_iter().collect()))
    }

    /// A client for one partition's leader.
    pub async fn partition(
        &self,
        topic: &str,
        partition: i32,
    ) -> anyhow::Result<Arc<PartitionClient>> {
        let what = format!("opening partition {topic}/{partition}");
        let fut = self
            .client
            .partition_client(topic, partition, UnknownTopicHandling::Error);
        Ok(Arc::new(self.call(&what, fut).await?))
    }

    /// Clients for the given partitions, in order.
    pub async fn partition_clients(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> anyhow::Result<Vec<Arc<PartitionClient>>> {
        let opens = partitions.iter().map(|&p| self.partition(topic, p));
        futures::future::try_join_all(opens).await
    }

    /// Log start offset and high watermark of a partition.
    pub async fn watermarks(&self, client: &PartitionClient) -> anyhow::Result<(i64, i64)> {
        let what = format!(
            "listing offsets of {}/{}",
            client.topic(),
            client.partition()
        );
        let low = self.call(&what, client.get_offset(OffsetAt::Earliest));
        let high = self.call(&what, client.get_offset(OffsetAt::Latest));
        futures::future::try_join(low, high).await
    }

    /// Creates a topic with `partitions` partitions.
    pub async fn create_topic(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        let controller = self.client.controller_client()?;
        let timeout_ms = millis(self.timeout);
        let what = format!("creating topic '{topic}'");
        self.call(
            &what,
            controller.create_topic(topic, partitions, 1, timeout_ms),
        )
        .await
    }

    /// Deletes a topic.
    pub async fn delete_topic(&self, topic: &str) -> anyhow::Result<()> {
        let controller = self.client.controller_client()?;
        let what = format!("deleting topic '{topic}'");
        self.call(&what, controller.delete_topic(topic, millis(self.timeout)))
            .await
    }
}

/// True when `err` is the broker saying a topic already exists.
pub fn is_topic_exists(err: &anyhow::Error) -> bool {
    format!("{err:#}").contains("TopicAlreadyExists")
}

/// Awaits `fut`, turning an elapsed deadline into a client error and server errors into
/// something shorter than rskafka's debug rendering.
async fn deadline<T>(
    limit: Duration,
    fut: impl Future<Output = Result<T, KafkaError>>,
) -> Result<T, ShortError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ShortError::from(e)),
        Err(_) => Err(ShortError(format!("no answer within {limit:?}"))),
    }
}

/// An rskafka error rendered as one short line.
#[derive(Debug)]
pub struct ShortError(String);

impl From<KafkaError> for ShortError {
    fn from(e: KafkaError) -> Self {
        match e {
            KafkaError::ServerError {
                protocol_error,
                error_message,
                ..
            } => {
                let detail = error_message.map(|m| format!(": {m}")).unwrap_or_default();
                Self(format!("server error {protocol_error:?}{detail}"))
            }
            other => Self(other.to_string()),
        }
    }
}

impl std::fmt::Display for ShortError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ShortError {}

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

impl From<CompressionArg> for rskafka::client::partition::Compression {
    fn from(c: CompressionArg) -> Self {
        use rskafka::client::partition::Compression as C;
        match c {
            CompressionArg::None => C::NoCompression,
            CompressionArg::Gzip => C::Gzip,
            CompressionArg::Snappy => C::Snappy,
            CompressionArg::Lz4 => C::Lz4,
            CompressionArg::Zstd => C::Zstd,
        }
    }
}
