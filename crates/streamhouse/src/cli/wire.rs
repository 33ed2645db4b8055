//! A small Kafka client for the admin APIs rskafka does not speak (the ACL APIs): one connection
//! to the first bootstrap server, over TLS when a CA is given, authenticated with SASL when a
//! user name is given, sending typed `kafka-protocol` requests one at a time.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::{BufMut, Bytes, BytesMut};
use clap::Args;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, RequestHeader, ResponseHeader, SaslAuthenticateRequest, SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use streamhouse_kafka::security::{Mechanism, ScramClient};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use super::Endpoints;

/// Largest response accepted; admin answers are small.
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// How to reach a secured Kafka listener (the client side of `serve --tls-cert/--sasl`).
#[derive(Clone, Args)]
pub struct KafkaAuth {
    /// Authenticate with SASL as this user.
    #[arg(long, global = true, env = "STREAMHOUSE_SASL_USERNAME")]
    pub sasl_username: Option<String>,
    /// The SASL password (prefer the environment variable: flags show in the process list).
    #[arg(
        long,
        global = true,
        env = "STREAMHOUSE_SASL_PASSWORD",
        hide_env_values = true
    )]
    pub sasl_password: Option<String>,
    /// SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    #[arg(
        long,
        global = true,
        env = "STREAMHOUSE_SASL_MECHANISM",
        default_value = "SCRAM-SHA-256"
    )]
    pub sasl_mechanism: Mechanism,
    /// Connect with TLS, trusting the server certificate's issuer in this PEM file.
    #[arg(long, global = true, env = "STREAMHOUSE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
}

impl std::fmt::Debug for KafkaAuth {
    // The password stays out of any debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaAuth")
            .field("sasl_username", &self.sasl_username)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("tls_ca", &self.tls_ca)
            .finish_non_exhaustive()
    }
}

/// A stream the connection can run over (TCP or TLS).
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

/// One admin connection.
pub struct Connection {
    stream: Box<dyn Stream>,
    correlation_id: i32,
    timeout: Duration,
    server: String,
}

impl Connection {
    /// Connects to the first bootstrap server, with TLS and SASL as `auth` says.
    pub async fn open(endpoints: &Endpoints, auth: &KafkaAuth) -> anyhow::Result<Self> {
        let server = endpoints
            .bootstrap
            .split(',')
            .map(str::trim)
            .find(|s| !s.is_empty())
            .ok_or_else(|| anyhow!("no bootstrap server given"))?
            .to_string();
        let timeout = endpoints.timeout;
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(&server))
            .await
            .map_err(|_| {
                anyhow!("cannot reach the Kafka listener at {server}: no answer within {timeout:?}")
            })?
            .with_context(|| format!("cannot reach the Kafka listener at {server}"))?;
        let stream: Box<dyn Stream> = match &auth.tls_ca {
            Some(ca) => Box::new(tls(tcp, &server, ca, timeout).await?),
            None => Box::new(tcp),
        };
        let mut connection = Self {
            stream,
            correlation_id: 0,
            timeout,
            server,
        };
        if let Some(user) = &auth.sasl_username {
            let Some(password) = &auth.sasl_password else {
                bail!("--sasl-username needs a password (STREAMHOUSE_SASL_PASSWORD)");
            };
            connection
                .login(auth.sasl_mechanism, user, password)
                .await
                .with_context(|| format!("SASL {} login as {user}", auth.sasl_mechanism.name()))?;
        }
        Ok(connection)
    }

    /// Sends `request` at `version` and returns the response.
    pub async fn send<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> anyhow::Result<R::Response> {
        let api = ApiKey::try_from(R::KEY).map_err(|_| anyhow!("unknown API key {}", R::KEY))?;
        tokio::time::timeout(self.timeout, self.round_trip(request, version))
            .await
            .map_err(|_| {
                anyhow!(
                    "{api:?} (via {}): no answer within {:?}",
                    self.server,
                    self.timeout
                )
            })?
            .with_context(|| format!("{api:?} (via {})", self.server))
    }

    async fn round_trip<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> anyhow::Result<R::Response> {
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("streamhouse-cli")));
        let mut frame = BytesMut::new();
        frame.put_i32(0);
        header.encode(&mut frame, R::header_version(version))?;
        request.encode(&mut frame, version)?;
        let size = i32::try_from(frame.len() - 4)?;
        frame[..4].copy_from_slice(&size.to_be_bytes());
        self.stream.write_all(&frame).await?;
        self.stream.flush().await?;
        let mut body = self.read_frame().await?;
        let header = ResponseHeader::decode(&mut body, R::Response::header_version(version))?;
        if header.correlation_id != self.correlation_id {
            bail!(
                "response to request {} arrived for {}",
                header.correlation_id,
                self.correlation_id
            );
        }
        R::Response::decode(&mut body, version)
    }

    async fn read_frame(&mut self) -> anyhow::Result<Bytes> {
        let len = match self.stream.read_i32().await {
            Ok(len) => usize::try_from(len).context("negative frame length")?,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                bail!("the server closed the connection (does it require SASL or TLS?)")
            }
            Err(e) => return Err(e.into()),
        };
        if len > MAX_RESPONSE_BYTES {
            bail!("response of {len} bytes is too large");
        }
        let mut buf = vec![0; len];
        self.stream.read_exact(&mut buf).await?;
        Ok(Bytes::from(buf))
    }

    /// SaslHandshake v1 and SaslAuthenticate v2 rounds (PLAIN: one; SCRAM: two, and the server's
    /// signature is checked so a server without the credential is not trusted).
    async fn login(
        &mut self,
        mechanism: Mechanism,
        user: &str,
        password: &str,
    ) -> anyhow::Result<()> {
        let handshake = SaslHandshakeRequest::default()
            .with_mechanism(StrBytes::from_static_str(mechanism.name()));
        let response = self.send(&handshake, 1).await?;
        check(response.error_code, None)?;
        let Some(alg) = mechanism.scram() else {
            self.authenticate(format!("\0{user}\0{password}").into_bytes())
                .await?;
            return Ok(());
        };
        let (mut scram, first) = ScramClient::start(alg, user, password);
        let server_first = self.authenticate(first).await?;
        let last = scram.respond(&server_first)?;
        let server_final = self.authenticate(last).await?;
        Ok(scram.verify(&server_final)?)
    }

    async fn authenticate(&mut self, token: Vec<u8>) -> anyhow::Result<Bytes> {
        let request = SaslAuthenticateRequest::default().with_auth_bytes(token.into());
        let response = self.send(&request, 2).await?;
        check(response.error_code, response.error_message.as_ref())?;
        Ok(response.auth_bytes)
    }
}

/// `Ok` for error code 0, else the error's name and the server's message.
pub fn check(code: i16, message: Option<&StrBytes>) -> anyhow::Result<()> {
    if code == 0 {
        return Ok(());
    }
    let name = ResponseError::try_from_code(code)
        .map_or_else(|| format!("error code {code}"), |e| format!("{e:?}"));
    match message.filter(|m| !m.is_empty()) {
        Some(m) => bail!("server error {name}: {m}"),
        None => bail!("server error {name}"),
    }
}

/// A TLS session to `server` trusting only the certificates in `ca`.
async fn tls(
    tcp: TcpStream,
    server: &str,
    ca: &std::path::Path,
    timeout: Duration,
) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("reading CA certificates from {}", ca.display()))?
    {
        roots.add(cert.with_context(|| format!("parsing {}", ca.display()))?)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let host = server
        .rsplit_once(':')
        .map_or(server, |(host, _)| host)
        .trim_matches(['[', ']']);
    let name = ServerName::try_from(host.to_string())
        .with_context(|| format!("'{host}' is not a valid TLS server name"))?;
    tokio::time::timeout(
        timeout,
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .map_err(|_| anyhow!("TLS handshake with {server}: no answer within {timeout:?}"))?
    .with_context(|| format!("TLS handshake with {server}"))
}
