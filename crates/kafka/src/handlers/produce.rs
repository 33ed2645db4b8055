//! Produce: validate batches, append them in request order, answer once they are durable.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind};
use streamhouse_metadata::TxnState;
use streamhouse_segment::{RecordBatch, SegmentError};
use streamhouse_storage::{Appended, CompactionPolicy, StorageError, TxnVerification};

use super::{in_order, str_bytes, Reply};
use crate::broker::Broker;
use crate::errors::{metadata_error_code, storage_error_code};
use crate::handlers::ConnectionState;
use crate::partitions::PartitionLog;
use crate::security::{Access, Op, Resource};

/// Starts a Produce. Appends of one connection happen strictly in request order, even when a
/// partition has to be opened first, because an idempotent producer pipelines batches with
/// consecutive sequence numbers and reordering them would be an out-of-order error.
pub(crate) fn start(
    broker: &Arc<Broker>,
    conn: &mut ConnectionState,
    access: Access,
    req: ProduceRequest,
) -> Reply {
    let b = broker.clone();
    let acks = req.acks;
    // acks=0 is answered by nothing, so never resent on a missing answer: such records are
    // appended whatever becomes of the connection (Kafka appends the requests it has read).
    let gone = (acks != 0).then(|| conn.gone.clone());
    // Only the appends are chained: the next Produce may append while this one waits to be
    // durable.
    let work = in_order(&mut conn.produce_order, async move {
        append_all(&b, &access, req, gone.as_deref()).await
    });
    if acks == 0 {
        return Reply::Silent(work.map(|_| ()).boxed());
    }
    Reply::Respond(
        async move {
            let (timeout, topics) = work.await;
            ResponseKind::Produce(await_durable(timeout, topics).await)
        }
        .boxed(),
    )
}

/// Per partition: the append outcome, before durability.
struct PartitionOutcome {
    index: i32,
    log_start_offset: i64,
    result: Result<Appended, (ResponseError, String)>,
}

type TopicOutcomes = Vec<(kafka_protocol::messages::TopicName, Vec<PartitionOutcome>)>;

async fn append_all(
    b: &Broker,
    access: &Access,
    req: ProduceRequest,
    gone: Option<&AtomicBool>,
) -> (Duration, TopicOutcomes) {
    let timeout = Duration::from_millis(req.timeout_ms.max(0) as u64);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut topics = Vec::with_capacity(req.topic_data.len());
    // As Kafka: a transactional produce needs WRITE on its transactional id too.
    let txn_permitted = req
        .transactional_id
        .as_ref()
        .is_none_or(|id| access.allows(Op::Write, Resource::TransactionalId, id.as_str()));
    for t in req.topic_data {
        let topic = t.name.0.as_str();
        let permitted = access.allows(Op::Write, Resource::Topic, topic);
        let mut partitions = Vec::with_capacity(t.partition_data.len());
        for p in t.partition_data {
            partitions.push(if !txn_permitted {
                PartitionOutcome::failed(p.index, ResponseError::TransactionalIdAuthorizationFailed)
            } else if permitted {
                append_partition(b, topic, p.index, p.records, deadline, gone).await
            } else {
                PartitionOutcome::failed(p.index, ResponseError::TopicAuthorizationFailed)
            });
        }
        // The name is decoded as a slice of the request frame; kept as is until the answer, it
        // would pin the whole frame (records included) long after they were appended, holding
        // twice what the memory budget counts.
        topics.push((super::topic_name(topic), partitions));
    }
    metrics::counter!("streamhouse_produce_requests_total").increment(1);
    (timeout, topics)
}

impl PartitionOutcome {
    /// Refused with `code` before anything was appended.
    fn failed(index: i32, code: ResponseError) -> Self {
        Self {
            index,
            log_start_offset: -1,
            result: Err((code, String::new())),
        }
    }
}

/// Appends one partition's batches, unless the client's connection is `gone` (watched for
/// acknowledged produces only) by the time the partition is ready to take them: a client that
/// gave up on a request may have judged its records not persisted (librdkafka does when it
/// drops a broker from its metadata, and then resends them under a bumped producer epoch, which
/// no sequence check can tell from new records), so a request still waiting (for a partition
/// being opened or taken over, or for room in the agent's buffer) when its connection closed
/// must not append them afterwards. Kafka likewise drops the requests of a closed connection it
/// has not processed yet.
async fn append_partition(
    b: &Broker,
    topic: &str,
    index: i32,
    records: Option<Bytes>,
    deadline: tokio::time::Instant,
    gone: Option<&AtomicBool>,
) -> PartitionOutcome {
    let mut outcome = PartitionOutcome::failed(index, ResponseError::UnknownTopicOrPartition);
    let Ok(partition) = u32::try_from(index) else {
        return outcome;
    };
    let log = match b.partitions.partition(topic, partition).await {
        Ok(log) => log,
        Err(e) => {
            outcome.result = Err((storage_error_code(&e), e.to_string()));
            return outcome;
        }
    };
    outcome.log_start_offset = log.writer.log_start_offset();
    let limit = record_limit(b, &log);
    let compacted = CompactionPolicy::of(&log.topic.config).is_some();
    outcome.result = match parse_batches(records, limit, compacted) {
        Ok(batches) => match verify_txn(b, &log, &batches).await {
            Ok(verified) => append_unless_gone(b, &log, batches, deadline, verified, gone).await,
            Err(refused) => Err(refused),
        },
        Err(refused) => Err(refused),
    };
    outcome
}

/// The last wait (room in the buffer), then the `gone` check, then the append, which does not
/// wait: nothing is appended for a client that left while its request waited.
async fn append_unless_gone(
    b: &Broker,
    log: &PartitionLog,
    batches: Vec<RecordBatch>,
    deadline: tokio::time::Instant,
    verified: Option<TxnVerification>,
    gone: Option<&AtomicBool>,
) -> Result<Appended, (ResponseError, String)> {
    let reservation = b
        .partitions
        .reserve_for(&batches, deadline)
        .await
        .map_err(storage_failure)?;
    if gone.is_some_and(|gone| gone.load(Ordering::Acquire)) {
        return Err((ResponseError::NetworkException, "connection closed".into()));
    }
    b.partitions
        .append_reserved(log, batches, deadline, verified, reservation)
        .map_err(storage_failure)
}

/// KIP-890: a transactional write that would open its producer's transaction on this
/// partition is accepted only if the coordinator's record says that transaction is ongoing, at
/// this epoch, with this partition added. So a late write of a finished transaction, or one to
/// a partition never added, is refused instead of joining (or starting) a transaction that no
/// marker will ever end.
async fn verify_txn(
    b: &Broker,
    log: &PartitionLog,
    batches: &[RecordBatch],
) -> Result<Option<TxnVerification>, (ResponseError, String)> {
    let Some(token) = log.writer.txn_verification(batches) else {
        return Ok(None);
    };
    let txn = b
        .txn_store()
        .transaction_of_producer(token.producer_id)
        .await
        .map_err(|e| (metadata_error_code(&e), e.to_string()))?;
    let key = (log.topic.name.clone(), log.partition);
    let ongoing = txn.as_ref().is_some_and(|t| {
        t.state == TxnState::Ongoing
            && t.producer_epoch == token.epoch
            && t.partitions.binary_search(&key).is_ok()
    });
    if !ongoing {
        return Err((
            ResponseError::InvalidTxnState,
            format!(
                "producer {} epoch {} has no ongoing transaction including {}/{}",
                token.producer_id, token.epoch, key.0, key.1
            ),
        ));
    }
    Ok(Some(token))
}

/// The most one batch may hold, compressed and decompressed: the topic's `max.message.bytes`
/// when set, else the request size limit (a batch cannot be larger than its request, and its
/// records are bounded by the same figure so a decompression bomb costs at most that much work).
fn record_limit(b: &Broker, log: &PartitionLog) -> usize {
    log.topic
        .config
        .extra
        .get("max.message.bytes")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&v| v > 0)
        .unwrap_or(b.config().max_request_bytes)
}

fn parse_batches(
    records: Option<Bytes>,
    limit: usize,
    compacted: bool,
) -> Result<Vec<RecordBatch>, (ResponseError, String)> {
    let records = records.filter(|r| !r.is_empty()).ok_or_else(|| {
        (
            ResponseError::CorruptMessage,
            "produce request without records".to_string(),
        )
    })?;
    let batches = RecordBatch::parse_all(records)
        .map_err(|e| (ResponseError::CorruptMessage, e.to_string()))?;
    // As Kafka from Produce v3 on (the lowest served): with several batches, one duplicate among
    // them would decide for all of them, so an idempotent retry could drop new batches.
    if batches.len() > 1 {
        return Err((
            ResponseError::InvalidRecord,
            format!(
                "{} record batches for one partition; Produce v3+ carries exactly one",
                batches.len()
            ),
        ));
    }
    // As Kafka: control batches (transaction markers) come from coordinators, never clients.
    if let Some(b) = batches.iter().find(|b| b.header().is_control()) {
        return Err((
            ResponseError::InvalidRecord,
            format!(
                "a client may not produce control batches (producer id {})",
                b.header().producer_id
            ),
        ));
    }
    for batch in &batches {
        if batch.len() > limit {
            return Err((
                ResponseError::MessageTooLarge,
                format!(
                    "a {}-byte batch exceeds max.message.bytes {limit}",
                    batch.len()
                ),
            ));
        }
        // Like Kafka's LogValidator: every record is checked before anything is appended, so a
        // batch that lies about its records is refused whole and never reaches a segment.
        // Inline on this task: the work is bounded by `limit` and streams, and running it on
        // the runtime's few workers bounds how many decompressions run at once.
        let null_keys = batch
            .validate_counting_null_keys(limit)
            .map_err(|e| match e {
                SegmentError::TooLarge { .. } => (ResponseError::MessageTooLarge, e.to_string()),
                _ => (ResponseError::CorruptMessage, e.to_string()),
            })?;
        // As Kafka: a compacted topic refuses records without a key (compaction keeps one
        // record per key, so a keyless record could never be superseded nor removed).
        if compacted && null_keys > 0 {
            return Err((
                ResponseError::InvalidRecord,
                format!("compacted topic cannot accept a record without a key ({null_keys} in the batch)"),
            ));
        }
    }
    Ok(batches)
}

fn storage_failure(e: StorageError) -> (ResponseError, String) {
    (storage_error_code(&e), e.to_string())
}

async fn await_durable(timeout: Duration, topics: TopicOutcomes) -> ProduceResponse {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut responses = Vec::with_capacity(topics.len());
    for (name, partitions) in topics {
        let mut out = Vec::with_capacity(partitions.len());
        for p in partitions {
            out.push(partition_response(p, deadline).await);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(name)
                .with_partition_responses(out),
        );
    }
    ProduceResponse::default().with_responses(responses)
}

async fn partition_response(
    p: PartitionOutcome,
    deadline: tokio::time::Instant,
) -> PartitionProduceResponse {
    let response = PartitionProduceResponse::default()
        .with_index(p.index)
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(p.log_start_offset);
    let durable = match p.result {
        Ok(appended) => {
            let base = appended.base_offset;
            if appended.duplicate {
                // What a client's retry met: the trail of an idempotence question.
                tracing::debug!(
                    partition = p.index,
                    base,
                    "retried batch answered with its original offsets"
                );
            }
            match tokio::time::timeout_at(deadline, appended.durable.wait()).await {
                Ok(Ok(())) => Ok(base),
                Ok(Err(e)) => Err(storage_failure(e)),
                Err(_) => Err((
                    ResponseError::RequestTimedOut,
                    "records were not durable within the request timeout".into(),
                )),
            }
        }
        Err(e) => Err(e),
    };
    if let Err((code, message)) = &durable {
        tracing::debug!(
            partition = p.index,
            ?code,
            message,
            "produce not acknowledged"
        );
    }
    match durable {
        Ok(base) => response.with_base_offset(base),
        Err((code, message)) => response
            .with_error_code(code.code())
            .with_error_message((!message.is_empty()).then(|| str_bytes(&message))),
    }
}
