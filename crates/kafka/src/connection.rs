//! One task per client connection: frames in, requests dispatched, responses out in request order.
//!
//! Requests on a connection are started in arrival order (so a producer's pipelined batches are
//! appended in order) but may complete concurrently; a writer task sends their responses strictly
//! in request order, as Kafka clients require.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::Encodable;
use streamhouse_protocol::{decode_request, DecodeError, DecodedRequest};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::broker::Broker;
use crate::frame::{read_frame, FrameError};
use crate::handlers::{self, Reply};
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
}

/// How long a client may take to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What a connection remembers between requests.
#[derive(Default)]
pub(crate) struct ConnectionState {
    /// Completes when the previous Produce on this connection has appended its batches.
    pub(crate) produce_order: Option<tokio::sync::oneshot::Receiver<()>>,
    /// The client's address (DescribeGroups reports each member's host).
    pub(crate) peer: Option<SocketAddr>,
    /// SASL progress; `None` when the listener does not require authentication.
    pub(crate) sasl: Option<SaslSession>,
    /// Set when the response being sent is the last one (e.g. a failed authentication).
    closing: bool,
}

/// What the writer task does for one request.
enum Outcome {
    Send(Bytes),
    /// The request gets no response (acks=0 produce).
    Nothing,
    /// The response could not be built; close rather than leave the client waiting.
    Close,
    /// Send, then close the connection.
    Last(Bytes),
}

/// Accepts Kafka connections until the listener fails.
pub async fn serve(listener: TcpListener, broker: Arc<Broker>) -> std::io::Result<()> {
    serve_secured(listener, broker, ListenerSecurity::default()).await
}

/// Accepts Kafka connections with TLS and/or SASL as `security` says, until the listener fails.
/// User changes through the broker ([`Broker::users`]) apply to this listener's logins at once.
pub async fn serve_secured(
    listener: TcpListener,
    broker: Arc<Broker>,
    security: ListenerSecurity,
) -> std::io::Result<()> {
    if let Some(auth) = &security.sasl {
        broker.register_authenticator(auth);
    }
    loop {
        let (socket, peer) = listener.accept().await?;
        let _ = socket.set_nodelay(true);
        let broker = broker.clone();
        let security = security.clone();
        tokio::spawn(async move {
            let sasl = security.sasl.map(SaslSession::new);
            let Some(acceptor) = security.tls else {
                return handle_connection(socket, peer, broker, sasl).await;
            };
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
                Ok(Ok(stream)) => handle_connection(stream, peer, broker, sasl).await,
                Ok(Err(e)) => debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

async fn handle_connection<S>(
    socket: S,
    peer: SocketAddr,
    broker: Arc<Broker>,
    sasl: Option<SaslSession>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    metrics::gauge!("streamhouse_kafka_connections").increment(1.0);
    let (mut reader, writer) = tokio::io::split(socket);
    let config = broker.config();
    let (tx, rx) = mpsc::channel(config.max_in_flight_per_connection.max(1));
    let writer_task = tokio::spawn(write_responses(writer, rx));
    let max_len = config.max_request_bytes;
    // Bytes of requests not yet answered; reading pauses while the budget is spent, so a client
    // that floods the agent is slowed to the pace of its responses.
    let budget = config.max_in_flight_bytes_per_connection.max(max_len);
    let in_flight = Arc::new(Semaphore::new(budget));
    let mut state = ConnectionState {
        peer: Some(peer),
        sasl,
        ..ConnectionState::default()
    };
    let outcome: Result<(), ConnectionError> = async {
        while let Some(frame) = read_frame(&mut reader, max_len).await? {
            let permit = in_flight
                .clone()
                .acquire_many_owned(u32::try_from(frame.len().max(1)).unwrap_or(u32::MAX))
                .await
                .expect("the semaphore is never closed");
            let pending = start_request(&broker, &mut state, frame, permit)?;
            if tx.send(pending).await.is_err() || state.closing {
                break; // the writer stopped (the peer went away) or this was the last response
            }
        }
        Ok(())
    }
    .await;
    drop(tx);
    match outcome {
        Ok(()) => debug!(%peer, "connection closed by client"),
        Err(ConnectionError::Frame(FrameError::Io(e))) => debug!(%peer, "connection error: {e}"),
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
    permit: OwnedSemaphorePermit,
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
            let outcome = encode_response(ApiKey::ApiVersions, 0, correlation_id, &body);
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
            let mut outcome = encode_response(api, version, correlation_id, &body);
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
            encode_response(api, version, correlation_id, &response)
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

fn record_latency(api: ApiKey, started: std::time::Instant) {
    let name = format!("{api:?}");
    metrics::counter!("streamhouse_kafka_requests_total", "api" => name.clone()).increment(1);
    metrics::histogram!("streamhouse_kafka_request_duration_seconds", "api" => name)
        .record(started.elapsed().as_secs_f64());
}

/// Encodes `[size][response header][body]`. An encoding failure would be a bug in a handler: it is
/// logged and the connection closed rather than sent garbage.
fn encode_response(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &kafka_protocol::messages::ResponseKind,
) -> Outcome {
    let mut buf = BytesMut::with_capacity(256);
    buf.extend_from_slice(&[0; 4]);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let result = header
        .encode(&mut buf, api.response_header_version(version))
        .and_then(|_| body.encode(&mut buf, version));
    if let Err(e) = result {
        warn!("failed to encode {api:?} v{version} response: {e}");
        return Outcome::Close;
    }
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Outcome::Send(buf.freeze())
}
