//! One task per client connection: frames in, requests dispatched, responses out in request order.
//!
//! Requests on a connection are started in arrival order (so a producer's pipelined batches are
//! appended in order) but may complete concurrently; a writer task sends their responses strictly
//! in request order, as Kafka clients require.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::Encodable;
use streamhouse_protocol::{decode_request, DecodeError, DecodedRequest};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::broker::Broker;
use crate::fetch_frame::{fetch_frame, Chunks, FetchReply};
use crate::frame::{first_byte, read_body, read_length, FrameError};
use crate::handlers::{self, ConnectionState, Reply};
use crate::limits::{is_connection_error, AcceptBackoff, ConnectionCounter};
use crate::security::{Gate, ListenerSecurity, SaslSession};

/// Why a connection was closed by the server.
#[derive(Debug, Error)]
enum ConnectionError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("{api:?} refused: {reason}")]
    Unauthenticated { api: ApiKey, reason: &'static str },
    #[error("idle for {0:?} (connections.max.idle.ms)")]
    Idle(std::time::Duration),
}

/// How long a client may take to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What the writer task does for one request.
enum Outcome {
    Send(Bytes),
    /// A frame in several buffers, sent with vectored writes.
    SendChunks(Chunks),
    /// The request gets no response (acks=0 produce).
    Nothing,
    /// The response could not be built; close rather than leave the client waiting.
    Close,
    /// Send, then close the connection.
    Last(Bytes),
}

/// Accepts Kafka connections until the task is dropped; see [`serve_secured`].
pub async fn serve(listener: TcpListener, broker: Arc<Broker>) -> std::io::Result<()> {
    serve_secured(listener, broker, ListenerSecurity::default()).await
}

/// Accepts Kafka connections with TLS and/or SASL as `security` says. User changes through the
/// broker ([`Broker::users`]) apply to this listener's logins at once.
///
/// Never ends on its own: a failed `accept` (e.g. out of file descriptors) is logged and retried
/// with backoff, and connections beyond the configured limits (`BrokerConfig::limits`) are
/// closed at once with a log line, so no client can take the listener down.
pub async fn serve_secured(
    listener: TcpListener,
    broker: Arc<Broker>,
    security: ListenerSecurity,
) -> std::io::Result<()> {
    if let Some(auth) = &security.sasl {
        broker.register_authenticator(auth);
    }
    let limits = broker.config().limits.clone();
    let counter = ConnectionCounter::new(&limits, "Kafka");
    let memory = AgentMemory::new(limits.queued_max_request_bytes);
    let mut backoff = AcceptBackoff::new();
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => {
                backoff.succeeded();
                accepted
            }
            // The peer gave up before we accepted it: nothing is exhausted.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // EMFILE/ENFILE/ENOMEM: the pending connection stays in the backlog, so waiting
                // and retrying serves it once resources are back; returning would end the agent.
                let wait = backoff.failed();
                metrics::counter!("streamhouse_kafka_accept_errors_total").increment(1);
                warn!("accepting a Kafka connection failed: {e}; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        let Some(slot) = counter.admit(peer.ip()) else {
            drop(socket); // refused (and logged) by the counter
            continue;
        };
        let _ = socket.set_nodelay(true);
        let broker = broker.clone();
        let security = security.clone();
        let memory = memory.clone();
        tokio::spawn(async move {
            let _slot = slot; // released however the connection ends
            let sasl = security.sasl.map(SaslSession::new);
            let Some(acceptor) = security.tls else {
                return handle_connection(socket, peer, broker, sasl, memory).await;
            };
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
                Ok(Ok(stream)) => handle_connection(stream, peer, broker, sasl, memory).await,
                Ok(Err(e)) => debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// The agent-wide budget of request bytes in progress (`queued.max.request.bytes`), shared by
/// every connection of a listener.
///
/// Small frames (metadata, heartbeats, fetches, offset commits: a few hundred bytes) may also
/// draw on a reserve of a sixteenth of the budget, so a flood of large produce requests that
/// spends the main budget queues them behind each other, not in front of every consumer's
/// heartbeat. The reserve is part of the bound: memory stays within `size` + `reserve`.
#[derive(Clone)]
struct AgentMemory {
    permits: Arc<Semaphore>,
    size: usize,
    reserve: Arc<Semaphore>,
    reserve_size: usize,
}

/// Frames up to this size may use the reserve.
const SMALL_FRAME: usize = 4 * 1024;

impl AgentMemory {
    fn new(bytes: usize) -> Self {
        let size = bytes.clamp(1, Semaphore::MAX_PERMITS);
        let reserve_size = (size / 16).max(SMALL_FRAME);
        Self {
            permits: Arc::new(Semaphore::new(size)),
            size,
            reserve: Arc::new(Semaphore::new(reserve_size)),
            reserve_size,
        }
    }

    /// Memory for a `len`-byte frame: from the main budget, or for a small frame from whichever
    /// of the budget and the reserve has room first.
    async fn acquire(&self, len: usize) -> OwnedSemaphorePermit {
        if len > SMALL_FRAME {
            return acquire(&self.permits, self.size, len).await;
        }
        // Both acquisitions are cancel-safe: the one that loses the race takes nothing.
        tokio::select! {
            permit = acquire(&self.permits, self.size, len) => permit,
            permit = acquire(&self.reserve, self.reserve_size, len) => permit,
        }
    }
}

/// Permits for `len` bytes out of a budget of `size`. A frame larger than the whole budget
/// takes all of it, so it waits for the others but can never wait forever.
async fn acquire(permits: &Arc<Semaphore>, size: usize, len: usize) -> OwnedSemaphorePermit {
    let n = len.clamp(1, size);
    permits
        .clone()
        .acquire_many_owned(u32::try_from(n).unwrap_or(u32::MAX))
        .await
        .expect("the semaphore is never closed")
}

/// The memory a request holds from its length prefix until its handler finishes.
struct RequestPermits {
    _connection: OwnedSemaphorePermit,
    _agent: OwnedSemaphorePermit,
}

async fn handle_connection<S>(
    socket: S,
    peer: SocketAddr,
    broker: Arc<Broker>,
    sasl: Option<SaslSession>,
    memory: AgentMemory,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    metrics::gauge!("streamhouse_kafka_connections").increment(1.0);
    let (mut reader, writer) = tokio::io::split(socket);
    let config = broker.config();
    let limits = &config.limits;
    let (tx, rx) = mpsc::channel(config.max_in_flight_per_connection.max(1));
    let writer_task = tokio::spawn(write_responses(writer, rx));
    let max_len = config.max_request_bytes;
    // Bytes of requests not yet answered; reading pauses while the budget is spent, so a client
    // that floods the agent is slowed to the pace of its responses.
    let budget = config
        .max_in_flight_bytes_per_connection
        .max(max_len)
        .min(Semaphore::MAX_PERMITS);
    let in_flight = Arc::new(Semaphore::new(budget));
    let mut state = ConnectionState {
        peer: Some(peer),
        sasl,
        ..ConnectionState::default()
    };
    let outcome: Result<(), ConnectionError> = async {
        loop {
            let first =
                match tokio::time::timeout(limits.connections_max_idle, first_byte(&mut reader))
                    .await
                {
                    Ok(first) => first?,
                    // A client waiting for its answers (a long poll) is not idle.
                    Err(_) if in_flight.available_permits() < budget => continue,
                    Err(_) => return Err(ConnectionError::Idle(limits.connections_max_idle)),
                };
            let Some(first) = first else { break };
            // Before login a client may only authenticate, which takes small frames; checking
            // the prefix means an unauthenticated client cannot make the agent buffer more.
            let authenticated = state.sasl.as_ref().is_none_or(|s| s.user().is_some());
            let frame_max = match authenticated {
                true => max_len,
                false => max_len.min(limits.sasl_max_receive_size),
            };
            let slow = FrameError::Slow(limits.frame_read_timeout);
            let len = tokio::time::timeout(
                limits.frame_read_timeout,
                read_length(&mut reader, first, frame_max),
            )
            .await
            .map_err(|_| FrameError::Slow(limits.frame_read_timeout))??;
            // Memory first, then the body: when the agent's budget is spent this connection
            // stops reading (TCP pushes back on the client) instead of buffering the frame.
            let permits = RequestPermits {
                _connection: acquire(&in_flight, budget, len).await,
                _agent: memory.acquire(len).await,
            };
            let frame =
                tokio::time::timeout(limits.frame_read_timeout, read_body(&mut reader, len))
                    .await
                    .map_err(|_| slow)??;
            let pending = start_request(&broker, &mut state, frame, permits)?;
            if tx.send(pending).await.is_err() || state.closing {
                break; // the writer stopped (the peer went away) or this was the last response
            }
        }
        Ok(())
    }
    .await;
    state.gone.store(true, std::sync::atomic::Ordering::Release);
    drop(tx);
    match outcome {
        Ok(()) => debug!(%peer, "connection closed by client"),
        Err(ConnectionError::Frame(FrameError::Io(e))) => debug!(%peer, "connection error: {e}"),
        Err(e @ ConnectionError::Idle(_)) => debug!(%peer, "closing connection: {e}"),
        Err(e) => warn!(%peer, "closing connection: {e}"),
    }
    let _ = writer_task.await;
    metrics::gauge!("streamhouse_kafka_connections").decrement(1.0);
}

/// A response being produced.
type Pending = JoinHandle<Outcome>;

async fn write_responses<S: AsyncWrite>(mut writer: WriteHalf<S>, rx: mpsc::Receiver<Pending>) {
    send_responses(&mut writer, rx).await;
    // A split half does not close the stream when dropped; shut down explicitly so the client
    // sees the close (and a TLS client gets close_notify).
    let _ = writer.shutdown().await;
}

async fn send_responses<S: AsyncWrite>(writer: &mut WriteHalf<S>, mut rx: mpsc::Receiver<Pending>) {
    while let Some(pending) = rx.recv().await {
        match pending.await {
            Ok(Outcome::Send(bytes)) => {
                if writer.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Ok(Outcome::SendChunks(mut chunks)) => {
                if writer.write_all_buf(&mut chunks).await.is_err() {
                    return;
                }
            }
            Ok(Outcome::Last(bytes)) => {
                let _ = writer.write_all(&bytes).await;
                return;
            }
            Ok(Outcome::Nothing) => {}
            Ok(Outcome::Close) => return,
            Err(e) => {
                // A panicking handler must not leave the client waiting for a response that
                // will never come; closing makes it retry elsewhere.
                warn!("request handler failed: {e}; closing connection");
                return;
            }
        }
    }
}

/// Decodes one request and starts handling it. Errors close the connection.
fn start_request(
    broker: &Arc<Broker>,
    state: &mut ConnectionState,
    frame: Bytes,
    permit: RequestPermits,
) -> Result<Pending, ConnectionError> {
    if let Some(session) = state.sasl.as_mut().filter(|s| s.expects_raw_token()) {
        return Ok(raw_sasl_token(session, &frame, &mut state.closing));
    }
    let DecodedRequest { api, header, body } = match decode_request(frame) {
        Ok(decoded) => decoded,
        Err(DecodeError::UnsupportedVersion {
            api: ApiKey::ApiVersions,
            correlation_id,
            ..
        }) => {
            // KIP-511: answer an unknown ApiVersions version with a v0 error response listing
            // what we support, so the client can downgrade instead of disconnecting.
            let body = handlers::api_versions::unsupported_version_response();
            let outcome = encode_response(ApiKey::ApiVersions, 0, correlation_id, body);
            return Ok(tokio::spawn(async move { outcome }));
        }
        Err(e) => return Err(e.into()),
    };
    let version = header.request_api_version;
    let correlation_id = header.correlation_id;
    let gate = match state.sasl.as_mut() {
        None => Gate::Pass(body),
        Some(session) => session.gate(version, body),
    };
    let body = match gate {
        Gate::Pass(body) => body,
        Gate::Refuse(reason) => return Err(ConnectionError::Unauthenticated { api, reason }),
        Gate::Respond { body, close } => {
            let mut outcome = encode_response(api, version, correlation_id, body);
            if let (true, Outcome::Send(bytes)) = (close, &outcome) {
                outcome = Outcome::Last(bytes.clone());
                state.closing = true;
            }
            return Ok(tokio::spawn(async move { outcome }));
        }
    };
    let started = std::time::Instant::now();
    let reply = handlers::dispatch(broker, state, &header, body);
    Ok(match reply {
        Reply::Silent(fut) => tokio::spawn(async move {
            fut.await;
            record_latency(api, started);
            drop(permit);
            Outcome::Nothing
        }),
        Reply::Respond(fut) => tokio::spawn(async move {
            let response = fut.await;
            record_latency(api, started);
            drop(permit);
            encode_response(api, version, correlation_id, response)
        }),
        Reply::Fetch(fut) => tokio::spawn(async move {
            let reply = fut.await;
            record_latency(api, started);
            drop(permit);
            encode_fetch(api, version, correlation_id, reply)
        }),
    })
}

/// Answers a bare SASL token (after SaslHandshake v0) with a bare length-prefixed token; a
/// failure closes the connection without a reply, as Kafka does in that mode.
fn raw_sasl_token(session: &mut SaslSession, token: &[u8], closing: &mut bool) -> Pending {
    let outcome = match session.raw_token(token) {
        Some(reply) => {
            let mut buf = BytesMut::with_capacity(4 + reply.len());
            buf.extend_from_slice(&(reply.len() as i32).to_be_bytes());
            buf.extend_from_slice(&reply);
            Outcome::Send(buf.freeze())
        }
        None => {
            *closing = true;
            Outcome::Close
        }
    };
    tokio::spawn(async move { outcome })
}

/// Counts a finished request and its latency, on handles registered on the API's first request
/// (after `serve` installed the recorder) rather than looked up, with a freshly formatted label,
/// on every request.
fn record_latency(api: ApiKey, started: std::time::Instant) {
    static ALL: [OnceLock<ApiMetrics>; API_KEYS] = [const { OnceLock::new() }; API_KEYS];
    let elapsed = started.elapsed().as_secs_f64();
    match usize::try_from(api as i16)
        .ok()
        .and_then(|key| ALL.get(key))
    {
        Some(slot) => slot
            .get_or_init(|| ApiMetrics::register(api))
            .record(elapsed),
        None => ApiMetrics::register(api).record(elapsed),
    }
}

/// More than Kafka's highest API key (92 in Kafka 4).
const API_KEYS: usize = 128;

/// The request metrics of one API.
struct ApiMetrics {
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

impl ApiMetrics {
    fn register(api: ApiKey) -> Self {
        let name = format!("{api:?}");
        Self {
            requests: metrics::counter!("streamhouse_kafka_requests_total", "api" => name.clone()),
            duration: metrics::histogram!("streamhouse_kafka_request_duration_seconds", "api" => name),
        }
    }

    fn record(&self, seconds: f64) {
        self.requests.increment(1);
        self.duration.record(seconds);
    }
}

/// Room for `[size][response header]` and the body: a Fetch response (megabytes of records) is
/// measured first so it is encoded without the buffer being regrown and copied along the way.
fn size_hint(body: &ResponseKind, version: i16) -> usize {
    let body = match body {
        ResponseKind::Fetch(fetch) => fetch.compute_size(version).unwrap_or(0),
        _ => 0,
    };
    body.max(256) + 64
}

/// Encodes a Fetch response, the bulk of what an agent sends: its records go out uncopied,
/// as chunks of one vectored write, unless its layout needs the contiguous encoder.
fn encode_fetch(api: ApiKey, version: i16, correlation_id: i32, reply: FetchReply) -> Outcome {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = api.response_header_version(version);
    match fetch_frame(&header, header_version, reply, version) {
        Ok(chunks) => Outcome::SendChunks(chunks),
        Err(reply) => encode_response(
            api,
            version,
            correlation_id,
            ResponseKind::Fetch(reply.joined()),
        ),
    }
}

/// Encodes `[size][response header][body]`. An encoding failure would be a bug in a handler: it is
/// logged and the connection closed rather than sent garbage.
fn encode_response(api: ApiKey, version: i16, correlation_id: i32, body: ResponseKind) -> Outcome {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = api.response_header_version(version);
    let mut buf = BytesMut::with_capacity(size_hint(&body, version));
    buf.extend_from_slice(&[0; 4]);
    let result = header
        .encode(&mut buf, header_version)
        .and_then(|_| body.encode(&mut buf, version));
    if let Err(e) = result {
        warn!("failed to encode {api:?} v{version} response: {e}");
        return Outcome::Close;
    }
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Outcome::Send(buf.freeze())
}
