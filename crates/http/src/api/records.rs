//! Producing and consuming records as JSON.

use std::time::Duration;

use axum::extract::State;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use streamhouse_kafka::{Consumed, ConsumedRecord, ProduceRecord, ProducedRecord};

use crate::error::{HttpError, HttpResult};
use crate::extract::{Json, Path, Query};
use crate::security::Caller;
use crate::AppState;

use streamhouse_metadata::AclOperation as Op;
use streamhouse_metadata::AclResourceType::Topic;

/// Longest a produce waits for its records to become durable.
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bounds of a consume request, so one request cannot pin unbounded memory.
const MAX_RECORDS: usize = 10_000;
const MAX_BYTES: usize = 16 * 1024 * 1024;

/// How keys, values and header values are written in JSON.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Encoding {
    /// UTF-8 text; on output, invalid sequences are replaced with U+FFFD.
    #[default]
    Utf8,
    /// Standard base64 (exact bytes).
    Base64,
}

impl Encoding {
    fn decode(self, field: &str, text: Option<String>) -> HttpResult<Option<Bytes>> {
        let Some(text) = text else { return Ok(None) };
        match self {
            Self::Utf8 => Ok(Some(Bytes::from(text))),
            Self::Base64 => BASE64
                .decode(text.as_bytes())
                .map(|b| Some(Bytes::from(b)))
                .map_err(|e| HttpError::BadRequest(format!("{field} is not valid base64: {e}"))),
        }
    }

    fn encode(self, bytes: Option<Bytes>) -> Option<String> {
        let bytes = bytes?;
        Some(match self {
            Self::Utf8 => String::from_utf8_lossy(&bytes).into_owned(),
            Self::Base64 => BASE64.encode(&bytes),
        })
    }
}

/// A record header in JSON.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Header {
    key: String,
    value: Option<String>,
}

/// A record to produce, in JSON.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecordIn {
    key: Option<String>,
    value: Option<String>,
    #[serde(default)]
    headers: Vec<Header>,
    partition: Option<u32>,
    timestamp_ms: Option<i64>,
}

/// Body of `POST /api/v1/topics/{topic}/records`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProduceRequest {
    records: Vec<RecordIn>,
    #[serde(default)]
    encoding: Encoding,
}

/// Answer to a produce: where each record went, in request order.
#[derive(Debug, Serialize)]
pub(crate) struct ProduceResponse {
    offsets: Vec<ProducedRecord>,
}

/// Produce: WRITE on the topic.
pub(crate) async fn produce(
    State(s): State<AppState>,
    caller: Caller,
    Path(topic): Path<String>,
    Json(req): Json<ProduceRequest>,
) -> HttpResult<axum::Json<ProduceResponse>> {
    caller.require(Op::Write, Topic, &topic)?;
    let records = req
        .records
        .into_iter()
        .map(|r| record_in(r, req.encoding))
        .collect::<HttpResult<Vec<_>>>()?;
    let offsets = s
        .broker
        .produce_records(&topic, records, PRODUCE_TIMEOUT)
        .await?;
    Ok(axum::Json(ProduceResponse { offsets }))
}

fn record_in(r: RecordIn, encoding: Encoding) -> HttpResult<ProduceRecord> {
    let headers = r
        .headers
        .into_iter()
        .map(|h| Ok((h.key, encoding.decode("header value", h.value)?)))
        .collect::<HttpResult<_>>()?;
    Ok(ProduceRecord {
        key: encoding.decode("key", r.key)?,
        value: encoding.decode("value", r.value)?,
        headers,
        partition: r.partition,
        timestamp_ms: r.timestamp_ms,
    })
}

/// Query of `GET .../records`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConsumeQuery {
    #[serde(default)]
    offset: i64,
    max_records: Option<usize>,
    max_bytes: Option<usize>,
    #[serde(default)]
    encoding: Encoding,
}

/// A consumed record in JSON.
#[derive(Debug, Serialize)]
pub(crate) struct RecordOut {
    offset: i64,
    timestamp_ms: i64,
    key: Option<String>,
    value: Option<String>,
    headers: Vec<Header>,
}

/// Answer to a consume.
#[derive(Debug, Serialize)]
pub(crate) struct ConsumeResponse {
    records: Vec<RecordOut>,
    next_offset: i64,
    high_watermark: i64,
    log_start_offset: i64,
}

/// Fetch: READ on the topic.
pub(crate) async fn consume(
    State(s): State<AppState>,
    caller: Caller,
    Path((topic, partition)): Path<(String, u32)>,
    Query(q): Query<ConsumeQuery>,
) -> HttpResult<axum::Json<ConsumeResponse>> {
    caller.require(Op::Read, Topic, &topic)?;
    let max_records = bounded("max_records", q.max_records.unwrap_or(100), MAX_RECORDS)?;
    let max_bytes = bounded("max_bytes", q.max_bytes.unwrap_or(1 << 20), MAX_BYTES)?;
    let Consumed {
        records,
        next_offset,
        high_watermark,
        log_start_offset,
    } = s
        .broker
        .consume_records(&topic, partition, q.offset, max_records, max_bytes)
        .await?;
    Ok(axum::Json(ConsumeResponse {
        records: records
            .into_iter()
            .map(|r| record_out(r, q.encoding))
            .collect(),
        next_offset,
        high_watermark,
        log_start_offset,
    }))
}

fn bounded(name: &str, value: usize, max: usize) -> HttpResult<usize> {
    if (1..=max).contains(&value) {
        Ok(value)
    } else {
        Err(HttpError::BadRequest(format!(
            "{name} must be between 1 and {max}, got {value}"
        )))
    }
}

fn record_out(r: ConsumedRecord, encoding: Encoding) -> RecordOut {
    RecordOut {
        offset: r.offset,
        timestamp_ms: r.timestamp_ms,
        key: encoding.encode(r.key),
        value: encoding.encode(r.value),
        headers: r
            .headers
            .into_iter()
            .map(|(key, v)| Header {
                key,
                value: encoding.encode(v),
            })
            .collect(),
    }
}
