//! A minimal Kafka-protocol connection for the admin APIs rskafka does not speak (SCRAM user
//! credentials, ACLs): one request at a time to the first reachable bootstrap server, over TCP or
//! TLS, logged in with SASL as `kafka_security.rs` decides. Any agent answers these APIs, since
//! they act on the shared metadata store. `kafka.rs` also opens one before its rskafka client, as
//! it reports a refused handshake or login at once and with its reason.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, RequestHeader, ResponseHeader, SaslAuthenticateRequest,
    SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use streamhouse_kafka::security::ScramClient;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

pub use super::kafka_security::KafkaSecurityArgs;
use super::kafka_security::{KafkaSecurity, Login};
use super::Endpoints;

/// Largest response accepted; user listings are small.
const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// Byte streams the connection runs over (TCP or TLS).
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Why [`AdminConnection::open`] failed.
enum OpenError {
    /// No TCP connection (refused, say): the server may be starting.
    Unreachable(std::io::Error),
    /// Anything after that (TLS handshake, deadline).
    Failed(anyhow::Error),
}

/// One connection to one agent.
pub struct AdminConnection {
    stream: Box<dyn Stream>,
    server: String,
    timeout: Duration,
    correlation_id: i32,
    /// Versions the server serves, from ApiVersions.
    versions: Vec<(i16, i16, i16)>,
}

impl AdminConnection {
    /// Connects to the first reachable bootstrap server, with TLS and SASL as `security` says.
    pub async fn connect(
        endpoints: &Endpoints,
        security: &KafkaSecurityArgs,
    ) -> anyhow::Result<Self> {
        Self::connect_with(endpoints, &security.resolve()?).await
    }

    /// [`Self::connect`] with the flags already resolved.
    pub async fn connect_with(
        endpoints: &Endpoints,
        security: &KafkaSecurity,
    ) -> anyhow::Result<Self> {
        let tls = security.tls.clone().map(TlsConnector::from);
        let timeout = endpoints.timeout;
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(50);
        loop {
            let mut failures = Vec::new();
            let mut only_unreachable = true;
            for server in endpoints.bootstrap.split(',').map(str::trim) {
                let error = match Self::open(server, tls.as_ref(), deadline, timeout).await {
                    Ok(stream) => {
                        let mut conn = Self {
                            stream,
                            server: server.to_string(),
                            timeout,
                            correlation_id: 0,
                            versions: Vec::new(),
                        };
                        conn.load_versions().await?;
                        if let Some(login) = &security.login {
                            conn.login(login).await?;
                        }
                        return Ok(conn);
                    }
                    Err(OpenError::Unreachable(e)) => anyhow::Error::from(e),
                    Err(OpenError::Failed(e)) => {
                        only_unreachable = false;
                        e
                    }
                };
                failures.push(format!("{server}: {error:#}"));
            }
            // A server that is starting refuses connections for a moment: wait for it until
            // the deadline, as Kafka clients do. A failed handshake would only fail again.
            if !only_unreachable || Instant::now() + pause >= deadline {
                bail!(
                    "cannot reach the Kafka listener at {}: {}",
                    endpoints.bootstrap,
                    failures.join("; ")
                )
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// A TCP connection to `server`, with TLS when `tls` is given, by `deadline`.
    async fn open(
        server: &str,
        tls: Option<&TlsConnector>,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Box<dyn Stream>, OpenError> {
        let late = || OpenError::Failed(anyhow!("no answer within {timeout:?}"));
        let tcp = tokio::time::timeout_at(deadline, TcpStream::connect(server))
            .await
            .map_err(|_| late())?
            .map_err(OpenError::Unreachable)?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = tls else {
            return Ok(Box::new(tcp));
        };
        let host = server
            .rsplit_once(':')
            .map_or(server, |(host, _)| host)
            .trim_matches(['[', ']']);
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| OpenError::Failed(anyhow!("'{host}' is not a TLS server name")))?;
        let stream = tokio::time::timeout_at(deadline, tls.connect(name, tcp))
            .await
            .map_err(|_| late())?
            .context("TLS handshake")
            .map_err(OpenError::Failed)?;
        Ok(Box::new(stream))
    }

    /// Sends `request` at `version` and returns the response.
    pub async fn send<R: Request>(
        &mut self,
        version: i16,
        request: &R,
    ) -> anyhow::Result<R::Response> {
        let api = api_of::<R>()?;
        let timeout = self.timeout;
        let exchange = self.exchange(api, version, request);
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| anyhow!("{api:?} via {}: no answer within {timeout:?}", self.server))?
    }

    /// Sends `request` at the newest version of its API both sides serve within `ours`.
    pub async fn call<R: Request>(
        &mut self,
        ours: (i16, i16),
        request: &R,
    ) -> anyhow::Result<R::Response> {
        let version = self.version(api_of::<R>()?, ours)?;
        self.send(version, request).await
    }

    /// The newest version of `api` this client and the server share, within `ours`.
    pub fn version(&self, api: ApiKey, ours: (i16, i16)) -> anyhow::Result<i16> {
        let theirs = self.versions.iter().find(|(k, _, _)| *k == api as i16);
        match theirs {
            Some(&(_, min, max)) if min.max(ours.0) <= max.min(ours.1) => Ok(max.min(ours.1)),
            _ => bail!("the server at {} does not support {api:?}", self.server),
        }
    }

    async fn exchange<R: Request>(
        &mut self,
        api: ApiKey,
        version: i16,
        request: &R,
    ) -> anyhow::Result<R::Response> {
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("streamhouse-cli")));
        let mut frame = BytesMut::new();
        frame.put_i32(0);
        header.encode(&mut frame, api.request_header_version(version))?;
        request.encode(&mut frame, version)?;
        let size = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&size.to_be_bytes());
        let server = self.server.clone();
        let closed = || {
            anyhow!(
                "{api:?} via {server}: the server closed the connection (does it require TLS \
                 (--tls-ca) or SASL (--sasl-mechanism)?)"
            )
        };
        self.stream.write_all(&frame).await.map_err(|_| closed())?;
        let mut response = self.read_frame().await.map_err(|_| closed())?;
        let header = ResponseHeader::decode(&mut response, api.response_header_version(version))?;
        if header.correlation_id != self.correlation_id {
            bail!("{api:?} via {}: response out of order", self.server);
        }
        R::Response::decode(&mut response, version)
    }

    async fn read_frame(&mut self) -> std::io::Result<Bytes> {
        let len = self.stream.read_i32().await?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= MAX_RESPONSE_BYTES)
            .ok_or_else(|| std::io::Error::other("bad response size"))?;
        let mut buf = vec![0; len];
        self.stream.read_exact(&mut buf).await?;
        Ok(Bytes::from(buf))
    }

    /// ApiVersions v0, which every server answers, even before SASL.
    async fn load_versions(&mut self) -> anyhow::Result<()> {
        let r = self.send(0, &ApiVersionsRequest::default()).await?;
        if r.error_code != 0 {
            bail!(
                "ApiVersions via {}: {}",
                self.server,
                error_name(r.error_code)
            );
        }
        self.versions = r
            .api_keys
            .iter()
            .map(|k| (k.api_key, k.min_version, k.max_version))
            .collect();
        Ok(())
    }

    /// Logs in with SASL: SaslHandshake v1, then SaslAuthenticate.
    async fn login(&mut self, login: &Login) -> anyhow::Result<()> {
        let Login {
            mechanism,
            username: user,
            password,
        } = login;
        let handshake = SaslHandshakeRequest::default()
            .with_mechanism(StrBytes::from_static_str(mechanism.name()));
        let r = self.call((1, 1), &handshake).await?;
        if r.error_code != 0 {
            let offered: Vec<&str> = r.mechanisms.iter().map(|m| m.as_str()).collect();
            bail!(
                "the server does not offer SASL {} ({}; it offers: {})",
                mechanism.name(),
                error_name(r.error_code),
                offered.join(", ")
            );
        }
        let failed = |e: &dyn std::fmt::Display| anyhow!("SASL login as '{user}' failed: {e}");
        let Some(alg) = mechanism.scram() else {
            self.authenticate(format!("\0{user}\0{password}").into_bytes())
                .await
                .map_err(|e| failed(&e))?;
            return Ok(());
        };
        let scram = ScramClient::new(alg, user, password);
        let server_first = self
            .authenticate(scram.client_first())
            .await
            .map_err(|e| failed(&e))?;
        let (client_final, check) = scram.client_final(&server_first).map_err(|e| failed(&e))?;
        let server_final = self
            .authenticate(client_final)
            .await
            .map_err(|e| failed(&e))?;
        check.verify(&server_final).map_err(|e| failed(&e))
    }

    /// One SaslAuthenticate round: the server's token, or its error message.
    async fn authenticate(&mut self, token: Vec<u8>) -> anyhow::Result<Bytes> {
        let request = SaslAuthenticateRequest::default().with_auth_bytes(token.into());
        let r = self.call((0, 2), &request).await?;
        check(r.error_code, r.error_message.as_ref())?;
        Ok(r.auth_bytes)
    }
}

/// The API key of request type `R`.
fn api_of<R: Request>() -> anyhow::Result<ApiKey> {
    ApiKey::try_from(R::KEY).map_err(|_| anyhow!("unknown API key {}", R::KEY))
}

/// An error `CODE_NAME: message` unless `code` is 0 (success).
pub fn check(code: i16, message: Option<&StrBytes>) -> anyhow::Result<()> {
    if code == 0 {
        return Ok(());
    }
    let message = message.map_or("no message", |m| m.as_str());
    bail!("{}: {message}", error_name(code))
}

/// A Kafka error code as its name (`RESOURCE_NOT_FOUND` style, as Kafka's tools print it).
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        Some(e) => {
            let camel = format!("{e:?}");
            let mut name = String::with_capacity(camel.len() + 4);
            for (i, c) in camel.char_indices() {
                if c.is_ascii_uppercase() && i > 0 {
                    name.push('_');
                }
                name.push(c.to_ascii_uppercase());
            }
            name
        }
        None => format!("error code {code}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_read_like_kafka_tools() {
        assert_eq!(
            error_name(ResponseError::UnacceptableCredential.code()),
            "UNACCEPTABLE_CREDENTIAL"
        );
        assert_eq!(error_name(91), "RESOURCE_NOT_FOUND");
        assert_eq!(error_name(-12345), "UNKNOWN(-12345)");
    }
}
