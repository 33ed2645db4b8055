//! A test agent on an ephemeral port and a minimal raw Kafka client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind, SaslAuthenticateRequest,
    SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use object_store::memory::InMemory;
use object_store::ObjectStore;
use streamhouse_kafka::security::{ListenerSecurity, Mechanism, SaslAuthenticator};
use streamhouse_kafka::{Broker, BrokerConfig};
use streamhouse_metadata::{MetadataStore, SqliteMetadataStore};
use streamhouse_storage::{SegmentCache, SegmentCacheConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An agent serving on 127.0.0.1 with in-memory stores.
pub struct TestServer {
    pub addr: SocketAddr,
    pub broker: Arc<Broker>,
    pub store: Arc<dyn ObjectStore>,
    pub metadata: Arc<dyn MetadataStore>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(BrokerConfig::default()).await
    }

    pub async fn start_with(config: BrokerConfig) -> Self {
        Self::start_with_store(config, Arc::new(InMemory::new())).await
    }

    /// An agent over `store` (e.g. a fault-injecting one).
    pub async fn start_with_store(config: BrokerConfig, store: Arc<dyn ObjectStore>) -> Self {
        let metadata: Arc<dyn MetadataStore> =
            Arc::new(SqliteMetadataStore::in_memory().await.unwrap());
        Self::launch(config, store, metadata, None).await
    }

    /// An agent over `store` and `metadata`, which other agents (earlier or at once) may share.
    pub async fn start_on(store: Arc<dyn ObjectStore>, metadata: Arc<dyn MetadataStore>) -> Self {
        Self::launch(BrokerConfig::default(), store, metadata, None).await
    }

    /// An agent over an in-memory object store and an in-memory SQLite store whose calls of
    /// `method` are delayed by `delay(n)` for the `n`th call (from 0), to make concurrent calls
    /// finish in an order a test chooses; with that store, for the test's own calls.
    pub async fn start_delaying(
        method: &'static str,
        delay: fn(u64) -> Duration,
    ) -> (Self, Arc<dyn MetadataStore>) {
        Self::start_delaying_with(BrokerConfig::default(), method, delay).await
    }

    /// [`Self::start_delaying`] with `config`.
    pub async fn start_delaying_with(
        config: BrokerConfig,
        method: &'static str,
        delay: fn(u64) -> Duration,
    ) -> (Self, Arc<dyn MetadataStore>) {
        let hook = DelayCalls {
            method,
            delay,
            calls: Default::default(),
        };
        let sqlite: Arc<dyn MetadataStore> =
            Arc::new(SqliteMetadataStore::in_memory().await.unwrap());
        let hooked: Arc<dyn MetadataStore> =
            Arc::new(streamhouse_metadata::HookedMetadataStore::new(sqlite, hook));
        let server = Self::launch(config, Arc::new(InMemory::new()), hooked.clone(), None).await;
        (server, hooked)
    }

    /// An agent whose listener requires SASL PLAIN, with `users` created (password
    /// `<name>-secret`), over `metadata` (which other agents may share).
    pub async fn start_with_sasl(
        config: BrokerConfig,
        metadata: Arc<dyn MetadataStore>,
        users: &[&str],
    ) -> Self {
        let auth = SaslAuthenticator::new(vec![Mechanism::Plain]);
        for user in users {
            let password = format!("{user}-secret");
            auth.create_user(metadata.as_ref(), user, &password)
                .await
                .unwrap();
        }
        let security = ListenerSecurity {
            tls: None,
            sasl: Some(Arc::new(auth)),
        };
        Self::launch(config, Arc::new(InMemory::new()), metadata, Some(security)).await
    }

    async fn launch(
        mut config: BrokerConfig,
        store: Arc<dyn ObjectStore>,
        metadata: Arc<dyn MetadataStore>,
        security: Option<ListenerSecurity>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        config.advertised_port = addr.port();
        config.max_request_bytes = config.max_request_bytes.min(8 * 1024 * 1024);
        let cache = Arc::new(SegmentCache::new(SegmentCacheConfig::default()));
        let broker = Broker::start(
            config,
            "test-agent".into(),
            metadata.clone(),
            store.clone(),
            cache,
        );
        // As `streamhouse serve` does: no request is decided before the ACLs are loaded.
        broker.acls().reload().await.unwrap();
        let security = security.unwrap_or_default();
        tokio::spawn(streamhouse_kafka::serve_secured(
            listener,
            broker.clone(),
            security,
        ));
        Self {
            addr,
            broker,
            store,
            metadata,
        }
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.addr).await
    }
}

/// A raw Kafka client: one request at a time.
pub struct Client {
    stream: TcpStream,
    correlation_id: i32,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        Self {
            stream,
            correlation_id: 0,
        }
    }

    /// Sends `request` at `version` and decodes the response.
    pub async fn send(&mut self, request: RequestKind, version: i16) -> ResponseKind {
        self.send_pipelined(vec![(request, version)])
            .await
            .pop()
            .unwrap()
    }

    /// Writes `request` and closes the connection without waiting for its response, as a
    /// client that gives up on a broker does.
    pub async fn send_and_hang_up(self, request: RequestKind, version: i16) {
        self.send_then_hang_up(request, version, Duration::ZERO)
            .await;
    }

    /// Writes `request` and closes the connection `after` that long without reading its
    /// response: a client that gives up on a request the agent is still working on.
    pub async fn send_then_hang_up(mut self, request: RequestKind, version: i16, after: Duration) {
        let (frames, _) = self.encode_requests(vec![(request, version)]);
        self.write_raw(&frames).await;
        tokio::time::sleep(after).await;
        self.stream.shutdown().await.unwrap();
    }

    /// Writes every request before reading any response (as clients with several requests in
    /// flight do), then decodes the responses, which must come in the same order.
    pub async fn send_pipelined(&mut self, requests: Vec<(RequestKind, i16)>) -> Vec<ResponseKind> {
        let (frames, sent) = self.encode_requests(requests);
        self.write_raw(&frames).await;
        let mut responses = Vec::with_capacity(sent.len());
        for (api, version, correlation_id) in sent {
            let mut frame = self.read_frame().await.unwrap_or_else(|| {
                panic!("{api:?} v{version}: connection closed instead of a response")
            });
            let response_header =
                ResponseHeader::decode(&mut frame, api.response_header_version(version)).unwrap();
            assert_eq!(response_header.correlation_id, correlation_id);
            let response = ResponseKind::decode(api, &mut frame, version)
                .unwrap_or_else(|e| panic!("{api:?} v{version}: undecodable response: {e}"));
            assert!(!frame.has_remaining(), "{api:?} v{version}: trailing bytes");
            responses.push(response);
        }
        responses
    }

    /// The frames of `requests` and, per request, what its response is decoded by.
    fn encode_requests(
        &mut self,
        requests: Vec<(RequestKind, i16)>,
    ) -> (BytesMut, Vec<(ApiKey, i16, i32)>) {
        let mut sent = Vec::with_capacity(requests.len());
        let mut frames = BytesMut::new();
        for (request, version) in requests {
            let api = api_key_of(&request);
            self.correlation_id += 1;
            let header = RequestHeader::default()
                .with_request_api_key(api as i16)
                .with_request_api_version(version)
                .with_correlation_id(self.correlation_id)
                .with_client_id(Some(StrBytes::from_static_str("it")));
            let mut body = BytesMut::new();
            header
                .encode(&mut body, api.request_header_version(version))
                .unwrap();
            request.encode(&mut body, version).unwrap();
            frames.put_i32(body.len() as i32);
            frames.extend_from_slice(&body);
            sent.push((api, version, self.correlation_id));
        }
        (frames, sent)
    }

    /// Authenticates with SASL PLAIN as `user` (password `<user>-secret`).
    pub async fn login(&mut self, user: &str) {
        let handshake =
            SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN"));
        let ResponseKind::SaslHandshake(r) =
            self.send(RequestKind::SaslHandshake(handshake), 1).await
        else {
            panic!("not a SaslHandshake response");
        };
        assert_eq!(r.error_code, 0);
        let token = format!("\0{user}\0{user}-secret").into_bytes();
        let request = SaslAuthenticateRequest::default().with_auth_bytes(token.into());
        let ResponseKind::SaslAuthenticate(r) =
            self.send(RequestKind::SaslAuthenticate(request), 2).await
        else {
            panic!("not a SaslAuthenticate response");
        };
        assert_eq!(r.error_code, 0, "login as {user} failed");
    }

    pub async fn write_frame(&mut self, body: &[u8]) {
        let mut out = BytesMut::with_capacity(body.len() + 4);
        out.put_i32(body.len() as i32);
        out.extend_from_slice(body);
        self.write_raw(&out).await;
    }

    pub async fn write_raw(&mut self, bytes: &[u8]) {
        // The server may already have closed the connection; that is what some tests expect.
        let _ = self.stream.write_all(bytes).await;
    }

    /// The next response frame, or `None` when the server closed the connection.
    pub async fn read_frame(&mut self) -> Option<Bytes> {
        let read = async {
            let len = self.stream.read_i32().await.ok()?;
            let mut buf = vec![0; len as usize];
            self.stream.read_exact(&mut buf).await.ok()?;
            Some(Bytes::from(buf))
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("no response and no close within 10 s")
    }
}

fn api_key_of(request: &RequestKind) -> ApiKey {
    match request {
        RequestKind::Produce(_) => ApiKey::Produce,
        RequestKind::Fetch(_) => ApiKey::Fetch,
        RequestKind::ListOffsets(_) => ApiKey::ListOffsets,
        RequestKind::Metadata(_) => ApiKey::Metadata,
        RequestKind::ApiVersions(_) => ApiKey::ApiVersions,
        RequestKind::CreateTopics(_) => ApiKey::CreateTopics,
        RequestKind::DeleteTopics(_) => ApiKey::DeleteTopics,
        RequestKind::CreatePartitions(_) => ApiKey::CreatePartitions,
        RequestKind::DescribeConfigs(_) => ApiKey::DescribeConfigs,
        RequestKind::InitProducerId(_) => ApiKey::InitProducerId,
        RequestKind::OffsetCommit(_) => ApiKey::OffsetCommit,
        RequestKind::OffsetFetch(_) => ApiKey::OffsetFetch,
        RequestKind::OffsetDelete(_) => ApiKey::OffsetDelete,
        RequestKind::FindCoordinator(_) => ApiKey::FindCoordinator,
        RequestKind::JoinGroup(_) => ApiKey::JoinGroup,
        RequestKind::SyncGroup(_) => ApiKey::SyncGroup,
        RequestKind::Heartbeat(_) => ApiKey::Heartbeat,
        RequestKind::LeaveGroup(_) => ApiKey::LeaveGroup,
        RequestKind::ListGroups(_) => ApiKey::ListGroups,
        RequestKind::DescribeGroups(_) => ApiKey::DescribeGroups,
        RequestKind::DeleteGroups(_) => ApiKey::DeleteGroups,
        RequestKind::DeleteRecords(_) => ApiKey::DeleteRecords,
        RequestKind::SaslHandshake(_) => ApiKey::SaslHandshake,
        RequestKind::SaslAuthenticate(_) => ApiKey::SaslAuthenticate,
        RequestKind::CreateAcls(_) => ApiKey::CreateAcls,
        RequestKind::DescribeAcls(_) => ApiKey::DescribeAcls,
        RequestKind::DeleteAcls(_) => ApiKey::DeleteAcls,
        RequestKind::AlterConfigs(_) => ApiKey::AlterConfigs,
        RequestKind::IncrementalAlterConfigs(_) => ApiKey::IncrementalAlterConfigs,
        RequestKind::DescribeCluster(_) => ApiKey::DescribeCluster,
        RequestKind::DescribeLogDirs(_) => ApiKey::DescribeLogDirs,
        RequestKind::DescribeTopicPartitions(_) => ApiKey::DescribeTopicPartitions,
        RequestKind::ListTransactions(_) => ApiKey::ListTransactions,
        RequestKind::DescribeProducers(_) => ApiKey::DescribeProducers,
        RequestKind::DescribeTransactions(_) => ApiKey::DescribeTransactions,
        RequestKind::AddPartitionsToTxn(_) => ApiKey::AddPartitionsToTxn,
        RequestKind::EndTxn(_) => ApiKey::EndTxn,
        RequestKind::AddOffsetsToTxn(_) => ApiKey::AddOffsetsToTxn,
        RequestKind::TxnOffsetCommit(_) => ApiKey::TxnOffsetCommit,
        other => panic!("harness does not know the API of {other:?}"),
    }
}

/// Encodes records as one RecordBatch v2 (what a producer sends).
pub fn record_batch(
    records: &[(&str, &str)],
    timestamp: i64,
    producer: Option<(i64, i16, i32)>,
) -> Bytes {
    let records: Vec<(&str, &[u8])> = records.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
    encode_batch(
        &records,
        timestamp,
        producer,
        kafka_protocol::records::Compression::None,
    )
}

/// Like [`record_batch`], with binary values and `compression`.
pub fn encode_batch(
    records: &[(&str, &[u8])],
    timestamp: i64,
    producer: Option<(i64, i16, i32)>,
    compression: kafka_protocol::records::Compression,
) -> Bytes {
    encode_records(records, timestamp, producer, compression, false)
}

/// [`record_batch`] of a transactional producer `(id, epoch, base sequence)`.
pub fn transactional_batch(records: &[(&str, &str)], producer: (i64, i16, i32)) -> Bytes {
    let records: Vec<(&str, &[u8])> = records.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
    let none = kafka_protocol::records::Compression::None;
    encode_records(&records, 1_000, Some(producer), none, true)
}

fn encode_records(
    records: &[(&str, &[u8])],
    timestamp: i64,
    producer: Option<(i64, i16, i32)>,
    compression: kafka_protocol::records::Compression,
    transactional: bool,
) -> Bytes {
    use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
    let (producer_id, producer_epoch, base_sequence) = producer.unwrap_or((-1, -1, -1));
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            transactional,
            control: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch wherever `offset - sequence` changes; without a
            // producer the base sequence is -1, and counting on from it keeps one batch (a
            // Produce carries one batch per partition).
            sequence: base_sequence + i as i32,
            timestamp: timestamp + i as i64,
            key: Some(Bytes::copy_from_slice(k.as_bytes())),
            value: Some(Bytes::copy_from_slice(v)),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
    buf.freeze()
}

/// Delays each call of `method` by `delay(n)` for the `n`th call (see
/// [`TestServer::start_delaying`]).
struct DelayCalls {
    method: &'static str,
    delay: fn(u64) -> Duration,
    calls: std::sync::atomic::AtomicU64,
}

#[async_trait::async_trait]
impl streamhouse_metadata::CallHook for DelayCalls {
    async fn before(&self, method: &'static str) -> streamhouse_metadata::Result<()> {
        if method == self.method {
            let n = self
                .calls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep((self.delay)(n)).await;
        }
        Ok(())
    }
}
