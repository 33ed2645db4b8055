//! One task per client connection: frames in, requests dispatched, responses out in request order.
//!
//! Requests on a connection are started in arrival order (so a producer's pipelined batches are
//! appended in order) but may complete concurrently; a writer task sends their responses strictly
//! in request order, as Kafka clients require.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::broker::Broker;
use crate::frame::{read_frame, FrameError};
use crate::handlers::{self, Reply};
use crate::versions;

/// Why a connection was closed by the server.
#[derive(Debug, Error)]
enum ConnectionError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("request of {0} bytes is too short for a request header")]
    ShortHeader(usize),
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    #[error("{api:?} v{version} is not supported (supported: {supported})")]
    UnsupportedVersion {
        api: ApiKey,
        version: i16,
        supported: String,
    },
    #[error("malformed {api:?} v{version} request: {source}")]
    Malformed {
        api: ApiKey,
        version: i16,
        source: anyhow::Error,
    },
}

/// What a connection remembers between requests.
#[derive(Default)]
pub(crate) struct ConnectionState {
    /// Completes when the previous Produce on this connection has appended its batches.
    pub(crate) produce_order: Option<tokio::sync::oneshot::Receiver<()>>,
    /// The client's address (DescribeGroups reports each member's host).
    pub(crate) peer: Option<SocketAddr>,
}

/// What the writer task does for one request.
enum Outcome {
    Send(Bytes),
    /// The request gets no response (acks=0 produce).
    Nothing,
    /// The response could not be built; close rather than leave the client waiting.
    Close,
}

/// Accepts Kafka connections until the listener fails.
pub async fn serve(listener: TcpListener, broker: Arc<Broker>) -> std::io::Result<()> {
    loop {
        let (socket, peer) = listener.accept().await?;
        let broker = broker.clone();
        tokio::spawn(async move { handle_connection(socket, peer, broker).await });
    }
}

async fn handle_connection(socket: TcpStream, peer: SocketAddr, broker: Arc<Broker>) {
    let _ = socket.set_nodelay(true);
    metrics::gauge!("streamhouse_kafka_connections").increment(1.0);
    let (mut reader, writer) = socket.into_split();
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
            if tx.send(pending).await.is_err() {
                break; // the writer stopped: the peer went away
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

async fn write_responses(mut writer: OwnedWriteHalf, mut rx: mpsc::Receiver<Pending>) {
    while let Some(pending) = rx.recv().await {
        match pending.await {
            Ok(Outcome::Send(bytes)) => {
                if writer.write_all(&bytes).await.is_err() {
                    return;
                }
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
    mut frame: Bytes,
    permit: OwnedSemaphorePermit,
) -> Result<Pending, ConnectionError> {
    if frame.len() < 8 {
        return Err(ConnectionError::ShortHeader(frame.len()));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api = ApiKey::try_from(raw_key).map_err(|_| ConnectionError::UnknownApi(raw_key))?;
    let Some(range) = versions::supported(api) else {
        return Err(ConnectionError::UnknownApi(raw_key));
    };
    if version < range.min || version > range.max {
        if api == ApiKey::ApiVersions {
            // KIP-511: answer an unknown ApiVersions version with a v0 error response listing
            // what we support, so the client can downgrade instead of disconnecting.
            let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            let body = handlers::api_versions::unsupported_version_response();
            let outcome = encode_response(api, 0, correlation_id, &body);
            return Ok(tokio::spawn(async move { outcome }));
        }
        return Err(ConnectionError::UnsupportedVersion {
            api,
            version,
            supported: format!("{}..={}", range.min, range.max),
        });
    }
    let malformed = |source| ConnectionError::Malformed {
        api,
        version,
        source,
    };
    let header = RequestHeader::decode(&mut frame, api.request_header_version(version))
        .map_err(malformed)?;
    let request = RequestKind::decode(api, &mut frame, version).map_err(malformed)?;
    if frame.has_remaining() {
        // Kafka ignores bytes after the request body, and librdkafka sends some (e.g. Metadata
        // v12 from its admin client), so this is not an error.
        debug!(
            ?api,
            version,
            extra = frame.remaining(),
            "ignoring bytes after the request body"
        );
    }
    let started = std::time::Instant::now();
    let reply = handlers::dispatch(broker, state, &header, request);
    let correlation_id = header.correlation_id;
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
