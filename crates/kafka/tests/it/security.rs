//! TLS and SASL on the Kafka listener: handshakes, PLAIN and SCRAM, and refusals; SCRAM user
//! administration (KIP-554) and its effect on logins.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::{digest, hmac, pbkdf2};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, ApiKey, ApiVersionsRequest,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse, MetadataRequest,
    RequestHeader, RequestKind, ResponseHeader, ResponseKind, SaslAuthenticateRequest,
    SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use object_store::memory::InMemory;
use streamhouse_kafka::security::{
    ListenerSecurity, Mechanism, SaslAuthenticator, ScramAlgorithm, ScramClient,
};
use streamhouse_kafka::{Broker, BrokerConfig};
use streamhouse_metadata::prelude::*;
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
    let metadata = Arc::new(SqliteMetadataStore::in_memory().await.unwrap());
    start_on(security, metadata, 0).await
}

/// Starts agent `node_id` over `metadata` (agents sharing it form a cluster) behind `security`.
async fn start_on(
    security: ListenerSecurity,
    metadata: Arc<dyn MetadataStore>,
    node_id: i32,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = BrokerConfig {
        node_id,
        advertised_port: addr.port(),
        ..BrokerConfig::default()
    };
    let cache = Arc::new(SegmentCache::new(SegmentCacheConfig::default()));
    let broker = Broker::start(
        config,
        format!("secure-agent-{node_id}"),
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

// ---- SCRAM user administration (DescribeUserScramCredentials, AlterUserScramCredentials) ----

/// Kafka's `ScramMechanism` type codes.
const SHA256: i8 = 1;
const SHA512: i8 = 2;

/// `Hi(password, salt, iterations)`, computed here as a client does (not with the server's code).
fn salted_password(mechanism: i8, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
    let (alg, len) = match mechanism {
        SHA256 => (pbkdf2::PBKDF2_HMAC_SHA256, 32),
        _ => (pbkdf2::PBKDF2_HMAC_SHA512, 64),
    };
    let mut out = vec![0; len];
    let n = NonZeroU32::new(iterations).unwrap();
    pbkdf2::derive(alg, n, salt, password.as_bytes(), &mut out);
    out
}

fn upsertion(
    user: &str,
    mechanism: i8,
    password: &str,
    iterations: i32,
) -> ScramCredentialUpsertion {
    let salt = b"0123456789abcdef".to_vec();
    let salted = salted_password(mechanism, password, &salt, iterations.max(1) as u32);
    ScramCredentialUpsertion::default()
        .with_name(StrBytes::from_string(user.into()))
        .with_mechanism(mechanism)
        .with_iterations(iterations)
        .with_salt(salt.into())
        .with_salted_password(salted.into())
}

fn deletion(user: &str, mechanism: i8) -> ScramCredentialDeletion {
    ScramCredentialDeletion::default()
        .with_name(StrBytes::from_string(user.into()))
        .with_mechanism(mechanism)
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// AlterUserScramCredentials v0: each user's `(error code, message)`, in response order.
    async fn alter_users(
        &mut self,
        deletions: Vec<ScramCredentialDeletion>,
        upsertions: Vec<ScramCredentialUpsertion>,
    ) -> Vec<(String, i16, Option<String>)> {
        let request = AlterUserScramCredentialsRequest::default()
            .with_deletions(deletions)
            .with_upsertions(upsertions);
        let response = self
            .send(
                ApiKey::AlterUserScramCredentials,
                0,
                RequestKind::AlterUserScramCredentials(request),
            )
            .await;
        let Some(ResponseKind::AlterUserScramCredentials(r)) = response else {
            panic!("unexpected AlterUserScramCredentials response {response:?}");
        };
        r.results
            .into_iter()
            .map(|u| {
                let message = u.error_message.map(|m| m.to_string());
                (u.user.to_string(), u.error_code, message)
            })
            .collect()
    }

    /// DescribeUserScramCredentials v0 of `users` (`None`: all).
    async fn describe_users(
        &mut self,
        users: Option<&[&str]>,
    ) -> DescribeUserScramCredentialsResponse {
        let names = users.map(|u| {
            u.iter()
                .map(|n| UserName::default().with_name(StrBytes::from_string(n.to_string())))
                .collect()
        });
        let request = DescribeUserScramCredentialsRequest::default().with_users(names);
        let response = self
            .send(
                ApiKey::DescribeUserScramCredentials,
                0,
                RequestKind::DescribeUserScramCredentials(request),
            )
            .await;
        match response {
            Some(ResponseKind::DescribeUserScramCredentials(r)) => r,
            other => panic!("unexpected DescribeUserScramCredentials response {other:?}"),
        }
    }
}

/// A described user: name and `(mechanism, iterations)` of each credential.
type Described = (String, Vec<(i8, i32)>);

/// The users of a successful describe, and the failed ones as `(user, code)`.
fn described(r: &DescribeUserScramCredentialsResponse) -> (Vec<Described>, Vec<(String, i16)>) {
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    let (ok, failed): (Vec<_>, Vec<_>) = r.results.iter().partition(|u| u.error_code == 0);
    let ok = ok
        .into_iter()
        .map(|u| {
            let infos = u
                .credential_infos
                .iter()
                .map(|c| (c.mechanism, c.iterations));
            (u.user.to_string(), infos.collect())
        })
        .collect();
    let failed = failed
        .into_iter()
        .map(|u| (u.user.to_string(), u.error_code))
        .collect();
    (ok, failed)
}

#[tokio::test]
async fn scram_user_administration_answers_kafka_error_codes() {
    let metadata: Arc<dyn MetadataStore> =
        Arc::new(SqliteMetadataStore::in_memory().await.unwrap());
    // No SASL on this listener: clients are ANONYMOUS and, as in Kafka without an authorizer,
    // may manage users (whose credentials serve SASL listeners elsewhere).
    let addr = start_on(ListenerSecurity::default(), metadata.clone(), 0).await;
    let mut client = tcp(addr).await;
    let empty = client.describe_users(None).await;
    assert_eq!(described(&empty), (vec![], vec![]));

    let mut wrong_length = upsertion("gina", SHA256, "pw", 4096);
    wrong_length.salted_password = Bytes::from_static(b"short");
    let results = client
        .alter_users(
            vec![deletion("frank", SHA256), deletion("eve", SHA256)],
            vec![
                upsertion("alice", SHA256, "alice-pw", 4096),
                upsertion("alice2", SHA512, "alice-pw", 16384),
                upsertion("bob", 0, "pw", 4096),
                upsertion("carol", SHA256, "pw", 4095),
                upsertion("dave", SHA512, "pw", 16385),
                upsertion("eve", SHA256, "pw", 4096),
                upsertion("", SHA256, "pw", 4096),
                wrong_length,
                upsertion("henry", SHA256, "pw", 4096),
                upsertion("henry", SHA512, "pw", 4096),
            ],
        )
        .await;
    let codes: Vec<(&str, i16)> = results.iter().map(|(u, c, _)| (u.as_str(), *c)).collect();
    assert_eq!(
        codes,
        [
            ("frank", ResponseError::ResourceNotFound.code()),
            // Named twice (a deletion, then an upsertion): the first error stays.
            ("eve", ResponseError::ResourceNotFound.code()),
            ("alice", 0),
            ("alice2", 0),
            ("bob", ResponseError::UnsupportedSaslMechanism.code()),
            ("carol", ResponseError::UnacceptableCredential.code()),
            ("dave", ResponseError::UnacceptableCredential.code()),
            ("", ResponseError::UnacceptableCredential.code()),
            ("gina", ResponseError::UnacceptableCredential.code()),
            // Two changes of one user, whatever the mechanisms: Kafka (KRaft) refuses both.
            ("henry", ResponseError::DuplicateResource.code()),
        ]
    );
    let message = |user: &str| {
        let found = results.iter().find(|(u, _, _)| u == user).unwrap();
        found.2.clone().unwrap_or_default()
    };
    assert!(
        message("carol").contains("Too few iterations"),
        "{}",
        message("carol")
    );
    assert!(
        message("dave").contains("Too many iterations"),
        "{}",
        message("dave")
    );

    // Only the valid changes were applied; the store holds derivatives, never the salted
    // password the client sent.
    let all = client.describe_users(Some(&[])).await;
    assert_eq!(
        described(&all).0,
        [
            ("alice".to_string(), vec![(SHA256, 4096)]),
            ("alice2".to_string(), vec![(SHA512, 16384)]),
        ]
    );
    let stored = metadata
        .get_credential("alice", "SCRAM-SHA-256")
        .await
        .unwrap()
        .unwrap();
    let salted = salted_password(SHA256, "alice-pw", b"0123456789abcdef", 4096);
    let client_key = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &salted), b"Client Key");
    assert_eq!(
        stored.stored_key,
        digest::digest(&digest::SHA256, client_key.as_ref()).as_ref()
    );
    assert!(stored.stored_key != salted && stored.server_key != salted);

    let some = client
        .describe_users(Some(&["alice", "nobody", "alice2", "alice2"]))
        .await;
    let (ok, failed) = described(&some);
    assert_eq!(ok, [("alice".to_string(), vec![(SHA256, 4096)])]);
    assert_eq!(
        failed,
        [
            ("nobody".to_string(), ResponseError::ResourceNotFound.code()),
            (
                "alice2".to_string(),
                ResponseError::DuplicateResource.code()
            ),
        ]
    );

    // Deleting a mechanism the user has removes the user once it has none left.
    let results = client
        .alter_users(
            vec![deletion("alice2", SHA512), deletion("alice", SHA512)],
            vec![],
        )
        .await;
    let codes: Vec<i16> = results.iter().map(|r| r.1).collect();
    assert_eq!(codes, [0, ResponseError::ResourceNotFound.code()]);
    let all = client.describe_users(None).await;
    assert_eq!(
        described(&all).0,
        [("alice".to_string(), vec![(SHA256, 4096)])]
    );
}

/// A SASL listener over `metadata` whose authenticator knows `admin` (password `admin-pw`);
/// `refresh` starts its periodic reload, as `streamhouse serve` does.
async fn sasl_agent(
    metadata: &Arc<dyn MetadataStore>,
    node_id: i32,
    refresh: Option<Duration>,
) -> SocketAddr {
    let mechanisms = vec![Mechanism::ScramSha256, Mechanism::ScramSha512];
    let auth = Arc::new(SaslAuthenticator::new(mechanisms));
    auth.create_user(metadata.as_ref(), "admin", "admin-pw")
        .await
        .unwrap();
    auth.load(metadata.as_ref()).await.unwrap();
    if let Some(every) = refresh {
        auth.clone().spawn_refresh(metadata.clone(), every);
    }
    let security = ListenerSecurity {
        tls: None,
        sasl: Some(auth),
    };
    start_on(security, metadata.clone(), node_id).await
}

/// A SCRAM-SHA-512 login with the server's own client ([`ScramClient`], which the CLI uses).
async fn scram_sha512<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Client<S>,
    user: &str,
    password: &str,
) -> Result<(), i16> {
    assert_eq!(client.handshake("SCRAM-SHA-512").await, 0);
    let scram = ScramClient::new(ScramAlgorithm::Sha512, user, password);
    let (code, server_first) = client.authenticate(scram.client_first()).await;
    if code != 0 {
        return Err(code);
    }
    let (client_final, check) = scram.client_final(&server_first).unwrap();
    let (code, server_final) = client.authenticate(client_final).await;
    if code != 0 {
        return Err(code);
    }
    check.verify(&server_final).unwrap();
    Ok(())
}

#[tokio::test]
async fn user_changes_apply_to_logins_at_once() {
    let metadata: Arc<dyn MetadataStore> =
        Arc::new(SqliteMetadataStore::in_memory().await.unwrap());
    // No periodic reload: a login that works right after the change proves it applied at once.
    let addr = sasl_agent(&metadata, 0, None).await;

    // Before authentication the APIs are not served at all.
    let mut anonymous = tcp(addr).await;
    let request = AlterUserScramCredentialsRequest::default();
    let refused = anonymous
        .send(
            ApiKey::AlterUserScramCredentials,
            0,
            RequestKind::AlterUserScramCredentials(request),
        )
        .await;
    assert!(refused.is_none(), "answered before authentication");

    let mut admin = tcp(addr).await;
    admin.scram_sha256("admin", "admin-pw").await.unwrap();
    let results = admin
        .alter_users(vec![], vec![upsertion("bob", SHA256, "bob-pw", 8192)])
        .await;
    assert_eq!(results[0].1, 0, "{results:?}");
    let results = admin
        .alter_users(vec![], vec![upsertion("bob", SHA512, "bob-pw", 4096)])
        .await;
    assert_eq!(results[0].1, 0, "{results:?}");

    let mut bob = tcp(addr).await;
    bob.scram_sha256("bob", "bob-pw").await.unwrap();
    assert!(matches!(
        bob.metadata().await,
        Some(ResponseKind::Metadata(_))
    ));
    scram_sha512(&mut tcp(addr).await, "bob", "bob-pw")
        .await
        .unwrap();
    let wrong = tcp(addr).await.scram_sha256("bob", "other").await;
    assert_eq!(wrong, Err(ResponseError::SaslAuthenticationFailed.code()));

    // A new password replaces the old one at once.
    let results = admin
        .alter_users(vec![], vec![upsertion("bob", SHA256, "bob-pw-2", 4096)])
        .await;
    assert_eq!(results[0].1, 0);
    let old = tcp(addr).await.scram_sha256("bob", "bob-pw").await;
    assert_eq!(old, Err(ResponseError::SaslAuthenticationFailed.code()));
    tcp(addr)
        .await
        .scram_sha256("bob", "bob-pw-2")
        .await
        .unwrap();

    // Deleted: refused at once, per mechanism.
    let results = admin
        .alter_users(vec![deletion("bob", SHA256)], vec![])
        .await;
    assert_eq!(results[0].1, 0);
    let deleted = tcp(addr).await.scram_sha256("bob", "bob-pw-2").await;
    assert_eq!(deleted, Err(ResponseError::SaslAuthenticationFailed.code()));
    scram_sha512(&mut tcp(addr).await, "bob", "bob-pw")
        .await
        .unwrap();
    let results = admin
        .alter_users(vec![deletion("bob", SHA512)], vec![])
        .await;
    assert_eq!(results[0].1, 0);
    let deleted = scram_sha512(&mut tcp(addr).await, "bob", "bob-pw").await;
    assert_eq!(deleted, Err(ResponseError::SaslAuthenticationFailed.code()));
}

#[tokio::test]
async fn user_changes_reach_other_agents_on_their_refresh() {
    let metadata: Arc<dyn MetadataStore> =
        Arc::new(SqliteMetadataStore::in_memory().await.unwrap());
    let first = sasl_agent(&metadata, 0, None).await;
    let second = sasl_agent(&metadata, 1, Some(Duration::from_millis(50))).await;
    let mut admin = tcp(first).await;
    admin.scram_sha256("admin", "admin-pw").await.unwrap();
    let results = admin
        .alter_users(vec![], vec![upsertion("carol", SHA256, "carol-pw", 4096)])
        .await;
    assert_eq!(results[0].1, 0);
    // The other agent learns of carol on a later reload.
    until_login(second, "carol", "carol-pw", true).await;
    let results = admin
        .alter_users(vec![deletion("carol", SHA256)], vec![])
        .await;
    assert_eq!(results[0].1, 0);
    until_login(second, "carol", "carol-pw", false).await;
}

/// Tries SCRAM-SHA-256 logins at `addr` until one succeeds (`works`) or fails, within 10 s;
/// each attempt is a fresh connection, since a failed login closes it.
async fn until_login(addr: SocketAddr, user: &str, password: &str, works: bool) {
    for _ in 0..400 {
        if tcp(addr).await.scram_sha256(user, password).await.is_ok() == works {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "the login of {user} never became {}",
        if works { "valid" } else { "invalid" }
    );
}
