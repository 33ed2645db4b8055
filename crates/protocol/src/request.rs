//! Decoding one request frame: API key and version checked against the served versions table,
//! then header and body decoded with `kafka-protocol`. Pure (no broker, no IO) so the same
//! function the connection uses can be fuzzed on arbitrary bytes.

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::Decodable;
use thiserror::Error;
use tracing::debug;

use crate::versions;

/// Bytes every request starts with: API key (2), API version (2), correlation id (4).
const FIXED_HEADER_LEN: usize = 8;

/// A decoded request frame.
#[derive(Debug)]
pub struct DecodedRequest {
    /// The API, already checked to be one this agent serves.
    pub api: ApiKey,
    /// The request header (version, correlation id, client id).
    pub header: RequestHeader,
    /// The request body.
    pub body: RequestKind,
}

/// Why a request frame was refused.
#[derive(Debug, Error)]
pub enum DecodeError {
    /// The frame cannot even hold the fixed part of a request header.
    #[error("request of {0} bytes is too short for a request header")]
    ShortHeader(usize),
    /// The API key is unknown or not served by this agent.
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    /// The API is served, but not at this version.
    #[error("{api:?} v{version} is not supported (supported: {supported})")]
    UnsupportedVersion {
        /// The requested API.
        api: ApiKey,
        /// The requested version.
        version: i16,
        /// The served range, `min..=max`.
        supported: String,
        /// The request's correlation id, so ApiVersions can still be answered (KIP-511).
        correlation_id: i32,
    },
    /// The header or body does not decode at the requested version.
    #[error("malformed {api:?} v{version} request: {source}")]
    Malformed {
        /// The requested API.
        api: ApiKey,
        /// The requested version.
        version: i16,
        /// The codec's error.
        source: anyhow::Error,
    },
}

/// Decodes one request frame (the bytes after the 4-byte size prefix).
///
/// Only APIs and versions listed in the served versions table are decoded; anything else is an
/// error before the codec sees the body. Never panics, whatever the bytes.
pub fn decode_request(mut frame: Bytes) -> Result<DecodedRequest, DecodeError> {
    if frame.len() < FIXED_HEADER_LEN {
        return Err(DecodeError::ShortHeader(frame.len()));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api = ApiKey::try_from(raw_key).map_err(|_| DecodeError::UnknownApi(raw_key))?;
    let range = versions::supported(api).ok_or(DecodeError::UnknownApi(raw_key))?;
    if version < range.min || version > range.max {
        return Err(DecodeError::UnsupportedVersion {
            api,
            version,
            supported: format!("{}..={}", range.min, range.max),
            correlation_id: i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
        });
    }
    let malformed = |source| DecodeError::Malformed {
        api,
        version,
        source,
    };
    let header = RequestHeader::decode(&mut frame, api.request_header_version(version))
        .map_err(malformed)?;
    let body = RequestKind::decode(api, &mut frame, version).map_err(malformed)?;
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
    Ok(DecodedRequest { api, header, body })
}
