//! The one Kafka client connection of the binary (CLI and bench): TCP or TLS, logged in with
//! SASL as `cli/kafka_security.rs` decides, then pipelined: requests are sent as soon as they
//! are built, many may await answers, and responses are matched to requests by order and
//! correlation id (Kafka answers a connection's requests in the order they were sent).
//!
//! Written on `kafka-protocol` rather than taken from a client library: the bench must batch
//! and pipeline the way librdkafka does for its figures to measure the server, and the operator
//! commands need admin APIs (SCRAM users, ACLs) that Rust Kafka clients do not speak. One
//! connection type serves both.

use std::future::Future;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, RequestHeader, ResponseHeader, SaslAuthenticateRequest,
    SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use streamhouse_kafka::security::ScramClient;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use super::security::{KafkaSecurity, Login};

/// Largest response frame accepted (a fetch answer is bounded by its request's max bytes).
const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// A response frame (without its length prefix) and when it was read off the socket.
type Reply = (Bytes, Instant);

/// A request on its way to the writer task.
struct Outgoing {
    frame: Bytes,
    correlation_id: i32,
    reply: oneshot::Sender<Reply>,
}

/// Why a connection could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// No TCP connection (refused, say): the server may be starting.
    Unreachable(std::io::Error),
    /// Anything after that (TLS handshake, login, deadline).
    Failed(anyhow::Error),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(e) => write!(f, "{e}"),
            Self::Failed(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for OpenError {}

/// A pipelined connection to one agent. Dropping it closes the connection once the requests
/// already sent are answered.
pub struct Connection {
    addr: String,
    client_id: &'static str,
    /// How long [`Connection::call`] waits for an answer.
    timeout: Duration,
    next_id: AtomicI32,
    outgoing: mpsc::UnboundedSender<Outgoing>,
    /// `(api key, min, max)` the server serves, from ApiVersions.
    versions: Vec<(i16, i16, i16)>,
}

impl Connection {
    /// Connects to `addr` (`host:port`) with `security`'s TLS and login, by `timeout`; its
    /// calls then give up after `timeout` each. `client_id` names it in the server's logs.
    pub async fn open(
        addr: &str,
        security: &KafkaSecurity,
        timeout: Duration,
        client_id: &'static str,
    ) -> Result<Self, OpenError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let late = || OpenError::Failed(anyhow!("no answer within {timeout:?}"));
        let tcp = tokio::time::timeout_at(deadline, TcpStream::connect(addr))
            .await
            .map_err(|_| late())?
            .map_err(OpenError::Unreachable)?;
        // Small requests (rate mode, one record each) must not wait for Nagle's timer.
        let _ = tcp.set_nodelay(true);
        let mut handshake = Handshake {
            addr,
            client_id,
            correlation_id: 0,
        };
        let opened = match &security.tls {
            None => {
                let mut tcp = tcp;
                let versions = handshake.run(&mut tcp, security.login.as_ref());
                let versions = tokio::time::timeout_at(deadline, versions).await;
                let versions = versions.map_err(|_| late())?.map_err(OpenError::Failed)?;
                let (read, write) = tcp.into_split();
                (spawn_io(read, write), versions)
            }
            Some(config) => {
                let tls = TlsConnector::from(config.clone());
                let tls = tokio::time::timeout_at(deadline, tls.connect(server_name(addr)?, tcp))
                    .await
                    .map_err(|_| late())?
                    .context("TLS handshake")
                    .map_err(OpenError::Failed)?;
                let mut tls = tls;
                let versions = handshake.run(&mut tls, security.login.as_ref());
                let versions = tokio::time::timeout_at(deadline, versions).await;
                let versions = versions.map_err(|_| late())?.map_err(OpenError::Failed)?;
                let (read, write) = tokio::io::split(tls);
                (spawn_io(read, write), versions)
            }
        };
        let (outgoing, versions) = opened;
        Ok(Self {
            addr: addr.to_string(),
            client_id,
            timeout,
            next_id: AtomicI32::new(handshake.correlation_id + 1),
            outgoing,
            versions,
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
        let frame = encode(request, version, correlation_id, self.client_id)?;
        let (reply, answer) = oneshot::channel();
        let out = Outgoing {
            frame,
            correlation_id,
            reply,
        };
        if self.outgoing.send(out).is_err() {
            bail!("connection to {} is closed", self.addr);
        }
        let addr = self.addr.clone();
        Ok(async move {
            let (mut body, at) = answer.await.map_err(|_| closed::<R>(&addr))?;
            ResponseHeader::decode(&mut body, R::Response::header_version(version))?;
            Ok((R::Response::decode(&mut body, version)?, at))
        })
    }

    /// Sends `request` at `version` and waits for its response, at most the timeout.
    pub async fn call<R: Request>(&self, request: &R, version: i16) -> anyhow::Result<R::Response> {
        let answer = self.send(request, version)?;
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(answer) => Ok(answer?.0),
            Err(_) => bail!("{} gave no answer within {:?}", self.addr, self.timeout),
        }
    }

    /// Sends `request` at the newest version of its API both sides serve within `ours`.
    pub async fn call_newest<R: Request>(
        &self,
        ours: (i16, i16),
        request: &R,
    ) -> anyhow::Result<R::Response> {
        let version = self.version(api_of::<R>()?, ours)?;
        self.call(request, version).await
    }

    /// The newest version of `api` this client and the server share, within `ours`.
    pub fn version(&self, api: ApiKey, ours: (i16, i16)) -> anyhow::Result<i16> {
        let theirs = self.versions.iter().find(|(k, _, _)| *k == api as i16);
        match theirs {
            Some(&(_, min, max)) if min.max(ours.0) <= max.min(ours.1) => Ok(max.min(ours.1)),
            _ => bail!("the server at {} does not support {api:?}", self.addr),
        }
    }
}

/// A request frame: length prefix, header, body.
fn encode<R: Request>(
    request: &R,
    version: i16,
    correlation_id: i32,
    client_id: &'static str,
) -> anyhow::Result<Bytes> {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(client_id)));
    let header_version = R::header_version(version);
    let size = header.compute_size(header_version)? + request.compute_size(version)?;
    let mut frame = BytesMut::with_capacity(4 + size);
    frame.put_u32(u32::try_from(size)?);
    header.encode(&mut frame, header_version)?;
    request.encode(&mut frame, version)?;
    Ok(frame.freeze())
}

fn server_name(addr: &str) -> Result<ServerName<'static>, OpenError> {
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(host, _)| host)
        .trim_matches(['[', ']']);
    ServerName::try_from(host.to_string())
        .map_err(|_| OpenError::Failed(anyhow!("'{host}' is not a TLS server name")))
}

/// Starts the writer and reader tasks of a connection; returns where requests go.
fn spawn_io<R, W>(read: R, mut write: W) -> mpsc::UnboundedSender<Outgoing>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
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
    outgoing
}

/// Reads response frames and hands each to the request it answers, until the connection ends
/// or answers out of order (then every waiting request fails: its sender is dropped).
async fn read_replies<R: AsyncRead + Unpin>(
    mut read: BufReader<R>,
    mut awaiting: mpsc::UnboundedReceiver<(i32, oneshot::Sender<Reply>)>,
) {
    loop {
        let Ok(frame) = read_frame(&mut read).await else {
            return;
        };
        let at = Instant::now();
        let Some((expected, reply)) = awaiting.recv().await else {
            return;
        };
        if frame.len() < 4 || (&frame[..4]).get_i32() != expected {
            return;
        }
        // The requester may have given up; nothing to do then.
        let _ = reply.send((frame, at));
    }
}

/// One length-prefixed frame, read into a buffer of exactly its size (no zero-filling).
async fn read_frame<R: AsyncRead + Unpin>(read: &mut R) -> std::io::Result<Bytes> {
    let len = read.read_u32().await? as usize;
    if len > MAX_RESPONSE_BYTES {
        return Err(std::io::Error::other(format!("response of {len} bytes")));
    }
    let mut frame = BytesMut::with_capacity(len);
    while frame.len() < len {
        let rest = (len - frame.len()) as u64;
        if (&mut *read).take(rest).read_buf(&mut frame).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(frame.freeze())
}

/// The exchanges before pipelining starts: ApiVersions, then the SASL login, one at a time.
struct Handshake<'a> {
    addr: &'a str,
    client_id: &'static str,
    correlation_id: i32,
}

impl Handshake<'_> {
    /// Returns the server's API versions, after logging in when `login` is given.
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        login: Option<&Login>,
    ) -> anyhow::Result<Vec<(i16, i16, i16)>> {
        // v0, which every server answers, even before SASL.
        let r = self
            .exchange(stream, &ApiVersionsRequest::default(), 0)
            .await?;
        if r.error_code != 0 {
            bail!(
                "ApiVersions via {}: {}",
                self.addr,
                error_name(r.error_code)
            );
        }
        if let Some(login) = login {
            self.login(stream, login).await?;
        }
        Ok(r.api_keys
            .iter()
            .map(|k| (k.api_key, k.min_version, k.max_version))
            .collect())
    }

    async fn exchange<S: AsyncRead + AsyncWrite + Unpin, R: Request>(
        &mut self,
        stream: &mut S,
        request: &R,
        version: i16,
    ) -> anyhow::Result<R::Response> {
        self.correlation_id += 1;
        let frame = encode(request, version, self.correlation_id, self.client_id)?;
        let (addr, closed) = (self.addr, || closed::<R>(self.addr));
        stream.write_all(&frame).await.map_err(|_| closed())?;
        let mut response = read_frame(stream).await.map_err(|_| closed())?;
        let header = ResponseHeader::decode(&mut response, R::Response::header_version(version))?;
        if header.correlation_id != self.correlation_id {
            bail!("{:?} via {addr}: response out of order", api_of::<R>()?);
        }
        R::Response::decode(&mut response, version)
    }

    /// SASL: SaslHandshake v1, then SaslAuthenticate rounds (PLAIN: one; SCRAM: two).
    async fn login<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        login: &Login,
    ) -> anyhow::Result<()> {
        let Login {
            mechanism,
            username: user,
            password,
        } = login;
        let handshake = SaslHandshakeRequest::default()
            .with_mechanism(StrBytes::from_static_str(mechanism.name()));
        let r = self.exchange(stream, &handshake, 1).await?;
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
            let token = format!("\0{user}\0{password}").into_bytes();
            self.authenticate(stream, token)
                .await
                .map_err(|e| failed(&e))?;
            return Ok(());
        };
        let scram = ScramClient::new(alg, user, password);
        let server_first = self.authenticate(stream, scram.client_first()).await;
        let server_first = server_first.map_err(|e| failed(&e))?;
        let (client_final, check) = scram.client_final(&server_first).map_err(|e| failed(&e))?;
        let server_final = self.authenticate(stream, client_final).await;
        check
            .verify(&server_final.map_err(|e| failed(&e))?)
            .map_err(|e| failed(&e))
    }

    /// One SaslAuthenticate round (v1): the server's token, or its error message.
    async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        token: Vec<u8>,
    ) -> anyhow::Result<Bytes> {
        let request = SaslAuthenticateRequest::default().with_auth_bytes(token.into());
        let r = self.exchange(stream, &request, 1).await?;
        check(r.error_code, r.error_message.as_ref())?;
        Ok(r.auth_bytes)
    }
}

/// Connects to the first reachable of the comma-separated `bootstrap` servers. A server that
/// is starting refuses connections for a moment: refused ones are tried again until `timeout`,
/// as Kafka clients do; a failed handshake or login fails at once, with its reason.
pub async fn connect_any(
    bootstrap: &str,
    security: &KafkaSecurity,
    timeout: Duration,
    client_id: &'static str,
) -> anyhow::Result<Connection> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(50);
    loop {
        let mut failures = Vec::new();
        let mut only_unreachable = true;
        for server in bootstrap.split(',').map(str::trim) {
            let error = match Connection::open(server, security, timeout, client_id).await {
                Ok(conn) => return Ok(conn),
                Err(OpenError::Unreachable(e)) => anyhow::Error::from(e),
                Err(OpenError::Failed(e)) => {
                    only_unreachable = false;
                    e
                }
            };
            failures.push(format!("{server}: {error:#}"));
        }
        if !only_unreachable || tokio::time::Instant::now() + pause >= deadline {
            bail!(
                "cannot reach the Kafka listener at {bootstrap}: {}",
                failures.join("; ")
            )
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// A request of type `R` to `addr` found its connection closed. A listener that needs TLS or a
/// login hangs up on a client without them, so that is the likely cause to name.
fn closed<R: Request>(addr: &str) -> anyhow::Error {
    let api = api_of::<R>().map_or_else(|e| e.to_string(), |a| format!("{a:?}"));
    anyhow!(
        "{api} via {addr}: the server closed the connection (does it require TLS (--tls-ca) \
         or SASL (--sasl-mechanism)?)"
    )
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
