//! TLS and SASL on the Kafka listener: handshakes, PLAIN and SCRAM, and refusals.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::{digest, hmac, pbkdf2};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, MetadataRequest, RequestHeader, RequestKind, ResponseHeader,
    ResponseKind, SaslAuthenticateRequest, SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use object_store::memory::InMemory;
use streamhouse_kafka::security::{ListenerSecurity, Mechanism, SaslAuthenticator};
use streamhouse_kafka::{Broker, BrokerConfig};
use streamhouse_metadata::{MetadataStore, SqliteMetadataStore};
use streamhouse_storage::{SegmentCache, SegmentCacheConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// A self-signed certificate for "localhost", written as PEM files.
struct TestCert {
    dir: tempfile::TempDir,
    der: CertificateDer<'static>,
}

impl TestCert {
    fn generate() -> Self {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert.cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
        Self {
            der: cert.cert.der().clone(),
            dir,
        }
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let p = self.dir.path();
        streamhouse_kafka::security::tls_acceptor(&p.join("cert.pem"), &p.join("key.pem")).unwrap()
    }

    fn connector(&self) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }
}

/// Starts an agent with in-memory stores behind `security`.
async fn start(security: ListenerSecurity) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = BrokerConfig {
        advertised_port: addr.port(),
        ..BrokerConfig::default()
    };
    let metadata = Arc::new(SqliteMetadataStore::in_memory().await.unwrap());
    let cache = Arc::new(SegmentCache::new(SegmentCacheConfig::default()));
    let broker = Broker::start(
        config,
        "secure-agent".into(),
        metadata,
        Arc::new(InMemory::new()),
        cache,
    );
    tokio::spawn(streamhouse_kafka::serve_secured(listener, broker, security));
    addr
}

/// An authenticator that loaded user alice from a metadata store, where another authenticator
/// (as on another agent) created her.
async fn sasl(mechanisms: Vec<Mechanism>) -> Arc<SaslAuthenticator> {
    let store = SqliteMetadataStore::in_memory().await.unwrap();
    SaslAuthenticator::new(vec![])
        .create_user(&store, "alice", "alice-secret")
        .await
        .unwrap();
    let stored = store.list_credentials().await.unwrap();
    assert_eq!(stored.len(), 2, "one credential per SCRAM mechanism");
    assert!(stored
        .iter()
        .all(|c| c.salt.len() == 32 && c.iterations == 4096));
    let auth = SaslAuthenticator::new(mechanisms);
    auth.load(&store).await.unwrap();
    Arc::new(auth)
}

/// A raw Kafka client over any stream; `send` returns `None` when the server closed.
struct Client<S> {
    stream: S,
    correlation_id: i32,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    fn new(stream: S) -> Self {
        Self {
            stream,
            correlation_id: 0,
        }
    }

    async fn send(
        &mut self,
        api: ApiKey,
        version: i16,
        request: RequestKind,
    ) -> Option<ResponseKind> {
        let correlation_id = self.write_request(api, version, request).await;
        self.read_response(api, version, correlation_id).await
    }

    /// Sends a request without waiting for its response; returns its correlation id.
    async fn write_request(&mut self, api: ApiKey, version: i16, request: RequestKind) -> i32 {
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("security-it")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, api.request_header_version(version))
            .unwrap();
        request.encode(&mut body, version).unwrap();
        self.write_frame(&body).await;
        self.correlation_id
    }

    /// The next response, or `None` when the server closed the connection.
    async fn read_response(
        &mut self,
        api: ApiKey,
        version: i16,
        correlation_id: i32,
    ) -> Option<ResponseKind> {
        let mut frame = self.read_frame().await?;
        let response_header =
            ResponseHeader::decode(&mut frame, api.response_header_version(version)).unwrap();
        assert_eq!(response_header.correlation_id, correlation_id);
        let response = ResponseKind::decode(api, &mut frame, version).unwrap();
        assert!(!frame.has_remaining());
        Some(response)
    }

    async fn write_frame(&mut self, body: &[u8]) {
        let mut out = BytesMut::with_capacity(body.len() + 4);
        out.put_i32(body.len() as i32);
        out.extend_from_slice(body);
        let _ = self.stream.write_all(&out).await;
        let _ = self.stream.flush().await;
    }

    async fn read_frame(&mut self) -> Option<Bytes> {
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

    async fn metadata(&mut self) -> Option<ResponseKind> {
        let request = MetadataRequest::default().with_topics(Some(vec![]));
        self.send(ApiKey::Metadata, 9, RequestKind::Metadata(request))
            .await
    }

    async fn handshake(&mut self, mechanism: &'static str) -> i16 {
        let request =
            SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism));
        match self
            .send(
                ApiKey::SaslHandshake,
                1,
                RequestKind::SaslHandshake(request),
            )
            .await
        {
            Some(ResponseKind::SaslHandshake(r)) => r.error_code,
            other => panic!("unexpected handshake response {other:?}"),
        }
    }

    /// One SaslAuthenticate round: `(error_code, server token)`.
    async fn authenticate(&mut self, token: Vec<u8>) -> (i16, Bytes) {
        let request = SaslAuthenticateRequest::default().with_auth_bytes(token.into());
        match self
            .send(
                ApiKey::SaslAuthenticate,
                2,
                RequestKind::SaslAuthenticate(request),
            )
            .await
        {
            Some(ResponseKind::SaslAuthenticate(r)) => (r.error_code, r.auth_bytes),
            other => panic!("unexpected authenticate response {other:?}"),
        }
    }

    /// A full SCRAM-SHA-256 exchange; `Ok` carries the server signature check result.
    async fn scram_sha256(&mut self, user: &str, password: &str) -> Result<(), i16> {
        assert_eq!(self.handshake("SCRAM-SHA-256").await, 0);
        let client_nonce = "fyko+d2lbbFgONRv9qkxdawL";
        let bare = format!("n={user},r={client_nonce}");
        let (code, server_first) = self.authenticate(format!("n,,{bare}").into_bytes()).await;
        if code != 0 {
            return Err(code);
        }
        let server_first = String::from_utf8(server_first.to_vec()).unwrap();
        let (final_message, expected_server_final) =
            scram_client_final(&bare, &server_first, password);
        let (code, server_final) = self.authenticate(final_message.into_bytes()).await;
        if code != 0 {
            return Err(code);
        }
        assert_eq!(server_final, expected_server_final.as_bytes());
        Ok(())
    }
}

/// The client side of SCRAM-SHA-256: `(client-final-message, expected server-final-message)`.
fn scram_client_final(bare: &str, server_first: &str, password: &str) -> (String, String) {
    let field = |name: &str| {
        server_first
            .split(',')
            .find_map(|p| p.strip_prefix(name))
            .unwrap()
            .to_string()
    };
    let (nonce, salt, iterations) = (field("r="), field("s="), field("i="));
    let mut salted = [0u8; 32];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        NonZeroU32::new(iterations.parse().unwrap()).unwrap(),
        &B64.decode(salt).unwrap(),
        password.as_bytes(),
        &mut salted,
    );
    let mac = |key: &[u8], data: &[u8]| {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
            .as_ref()
            .to_vec()
    };
    let client_key = mac(&salted, b"Client Key");
    let stored_key = digest::digest(&digest::SHA256, &client_key);
    let without_proof = format!("c=biws,r={nonce}");
    let auth_message = format!("{bare},{server_first},{without_proof}");
    let signature = mac(stored_key.as_ref(), auth_message.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(&signature)
        .map(|(a, b)| a ^ b)
        .collect();
    let server_signature = mac(&mac(&salted, b"Server Key"), auth_message.as_bytes());
    (
        format!("{without_proof},p={}", B64.encode(proof)),
        format!("v={}", B64.encode(server_signature)),
    )
}

async fn tcp(addr: SocketAddr) -> Client<TcpStream> {
    Client::new(TcpStream::connect(addr).await.unwrap())
}

#[tokio::test]
async fn tls_handshake_then_requests() {
    let cert = TestCert::generate();
    let addr = start(ListenerSecurity {
        tls: Some(cert.acceptor()),
        sasl: None,
    })
    .await;
    let tcp_stream = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = cert.connector().connect(name, tcp_stream).await.unwrap();
    let mut client = Client::new(tls);
    assert!(matches!(
        client.metadata().await,
        Some(ResponseKind::Metadata(_))
    ));
    // A plaintext Kafka request on the TLS port is not a TLS handshake: the server hangs up.
    assert!(tcp(addr).await.metadata().await.is_none());
}

#[tokio::test]
async fn tls_acceptor_reports_bad_files() {
    let cert = TestCert::generate();
    let p = cert.dir.path();
    let missing =
        streamhouse_kafka::security::tls_acceptor(&p.join("nope.pem"), &p.join("key.pem"));
    assert!(missing.err().unwrap().to_string().contains("nope.pem"));
    // A certificate file as key: no private key inside.
    let no_key =
        streamhouse_kafka::security::tls_acceptor(&p.join("cert.pem"), &p.join("cert.pem"));
    assert!(no_key.is_err());
}

#[tokio::test]
async fn unauthenticated_requests_close_the_connection() {
    let addr = start(ListenerSecurity {
        tls: None,
        sasl: Some(sasl(vec![Mechanism::ScramSha256]).await),
    })
    .await;
    let mut client = tcp(addr).await;
    // ApiVersions is allowed before authentication, and advertises the SASL APIs.
    let versions = client
        .send(
            ApiKey::ApiVersions,
            3,
            RequestKind::ApiVersions(ApiVersionsRequest::default()),
        )
        .await;
    let Some(ResponseKind::ApiVersions(v)) = versions else {
        panic!("no ApiVersions response");
    };
    assert!(v
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::SaslAuthenticate as i16 && k.max_version == 2));
    assert!(client.metadata().await.is_none(), "Metadata was answered");

    // SaslAuthenticate before SaslHandshake is out of order.
    let mut client = tcp(addr).await;
    let (code, _) = client.authenticate(b"n,,n=alice,r=abc".to_vec()).await;
    assert_eq!(code, ResponseError::IllegalSaslState.code());
    assert!(client.metadata().await.is_none());

    // A mechanism that is not enabled.
    let mut client = tcp(addr).await;
    assert_eq!(
        client.handshake("PLAIN").await,
        ResponseError::UnsupportedSaslMechanism.code()
    );
    assert!(client.metadata().await.is_none());
}

#[tokio::test]
async fn sasl_plain_success_and_failure() {
    let addr = start(ListenerSecurity {
        tls: None,
        sasl: Some(sasl(vec![Mechanism::Plain, Mechanism::ScramSha256]).await),
    })
    .await;
    let mut client = tcp(addr).await;
    assert_eq!(client.handshake("PLAIN").await, 0);
    let (code, _) = client.authenticate(b"\0alice\0alice-secret".to_vec()).await;
    assert_eq!(code, 0);
    assert!(matches!(
        client.metadata().await,
        Some(ResponseKind::Metadata(_))
    ));

    for token in [&b"\0alice\0wrong"[..], b"\0bob\0alice-secret", b"garbage"] {
        let mut client = tcp(addr).await;
        assert_eq!(client.handshake("PLAIN").await, 0);
        let (code, _) = client.authenticate(token.to_vec()).await;
        assert_eq!(code, ResponseError::SaslAuthenticationFailed.code());
        assert!(
            client.metadata().await.is_none(),
            "served after a failed login"
        );
    }
}

#[tokio::test]
async fn sasl_scram_over_tls() {
    let cert = TestCert::generate();
    let addr = start(ListenerSecurity {
        tls: Some(cert.acceptor()),
        sasl: Some(sasl(vec![Mechanism::ScramSha256, Mechanism::ScramSha512]).await),
    })
    .await;
    let connect = || async {
        let stream = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        Client::new(cert.connector().connect(name, stream).await.unwrap())
    };
    let mut client = connect().await;
    client.scram_sha256("alice", "alice-secret").await.unwrap();
    assert!(matches!(
        client.metadata().await,
        Some(ResponseKind::Metadata(_))
    ));

    let mut client = connect().await;
    let failed = client.scram_sha256("alice", "wrong").await;
    assert_eq!(failed, Err(ResponseError::SaslAuthenticationFailed.code()));
    assert!(client.metadata().await.is_none());

    let mut client = connect().await;
    let unknown = client.scram_sha256("mallory", "alice-secret").await;
    assert_eq!(unknown, Err(ResponseError::SaslAuthenticationFailed.code()));
}

#[tokio::test]
async fn sasl_handshake_v0_uses_raw_tokens() {
    let addr = start(ListenerSecurity {
        tls: None,
        sasl: Some(sasl(vec![Mechanism::Plain]).await),
    })
    .await;
    let mut client = tcp(addr).await;
    let request =
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN"));
    let response = client
        .send(
            ApiKey::SaslHandshake,
            0,
            RequestKind::SaslHandshake(request),
        )
        .await;
    assert!(matches!(response, Some(ResponseKind::SaslHandshake(r)) if r.error_code == 0));
    client.write_frame(b"\0alice\0alice-secret").await;
    assert_eq!(client.read_frame().await.unwrap().len(), 0);
    assert!(matches!(
        client.metadata().await,
        Some(ResponseKind::Metadata(_))
    ));
}

#[tokio::test]
async fn sasl_apis_on_a_plain_listener_are_refused_politely() {
    let addr = start(ListenerSecurity::default()).await;
    let mut client = tcp(addr).await;
    assert_eq!(
        client.handshake("PLAIN").await,
        ResponseError::UnsupportedSaslMechanism.code()
    );
    assert!(matches!(
        client.metadata().await,
        Some(ResponseKind::Metadata(_))
    ));
}

/// A connection's in-flight byte budget holds back the next request until earlier ones are
/// answered: a Produce pipelined behind a long-polling Fetch is not even started, so the Fetch
/// (waiting for data at offset 0) times out empty instead of waking on the produced records.
#[tokio::test]
async fn in_flight_byte_budget_holds_back_pipelined_requests() {
    use crate::harness::{record_batch, TestServer};
    use crate::protocol::{create_topic, fetch, fetch_result, produce, produce_result};

    let batch = record_batch(&[("k", &"v".repeat(3000))], 1_000, None);
    let mut produce_body = BytesMut::new();
    produce("bounded", 0, batch.clone(), -1)
        .encode(&mut produce_body, 9)
        .unwrap();
    let config = BrokerConfig {
        // The budget is then one maximal request: room for the Produce (with its ~22-byte
        // header) but not for the ~90-byte Fetch besides.
        max_request_bytes: produce_body.len() + 50,
        max_in_flight_bytes_per_connection: 0,
        ..BrokerConfig::default()
    };
    let server = TestServer::start_with(config).await;
    create_topic(&server, "bounded", 1).await;
    let mut client = tcp(server.addr).await;
    let fetching = client
        .write_request(ApiKey::Fetch, 12, fetch("bounded", 0, 0, 1_000))
        .await;
    let producing = client
        .write_request(ApiKey::Produce, 9, produce("bounded", 0, batch, -1))
        .await;
    let fetched = client.read_response(ApiKey::Fetch, 12, fetching).await;
    let (err, hw, records) = fetch_result(fetched.unwrap());
    assert_eq!(
        (err, hw, records.len()),
        (0, 0, 0),
        "the Produce overtook the budget"
    );
    let produced = client.read_response(ApiKey::Produce, 9, producing).await;
    assert_eq!(produce_result(produced.unwrap()), (0, 0));
}
