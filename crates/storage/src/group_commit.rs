//! Group commit: one flush cycle makes the buffered records of many partitions durable with ONE
//! object PUT and ONE metadata transaction.
//!
//! A cycle
//! 1. seals the open segment of every writer it flushes ([`FlushCycle::seal`], synchronous, so
//!    the cycles of one flusher seal in a fixed order and no two cycles can wait on each other);
//! 2. lays the segments out as one shared object (docs/format.md) under a fresh key and uploads
//!    it create-only, with retries, bounded by the earliest deadline of the records it carries;
//! 3. waits, per partition, until the chunks sealed before its own are resolved (cycles overlap:
//!    one uploads while the previous commits);
//! 4. abandons the chunks whose deadline has passed (their producers were answered with an
//!    error, so they must never become visible), then commits the others in one transaction,
//!    each fenced by its own lease; a commit whose outcome is unknown is retried as is until the
//!    store answers (commits are idempotent), never rewound and written again under another key;
//! 5. caches the object (the tail is read from memory) and publishes or discards each chunk.
//!
//! An object whose chunks were all refused or abandoned is referenced by nothing; the orphan
//! janitor removes it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::{ObjectStore, PutPayload};
use streamhouse_metadata::{
    now_ms, CommitOutcome, MetadataError, MetadataStore, SegmentCommit, SegmentInfo,
};
use streamhouse_segment::SharedObjectBuilder;
use tokio::time::Instant;

use crate::cache::SegmentCache;
use crate::error::{Result, StorageError};
use crate::layout::SHARED_PREFIX;
use crate::partition::PartitionStorage;
use crate::writer::{upload_with_retries, PartitionWriter, SealedChunk, WriterConfig};

/// Longest pause between attempts to learn the outcome of an ambiguous commit.
const COMMIT_RETRY_MAX: Duration = Duration::from_secs(1);

/// What a flush cycle needs besides the writers: where objects and metadata go.
#[derive(Clone)]
pub struct FlushContext {
    /// Where shared objects are uploaded.
    pub store: Arc<dyn ObjectStore>,
    /// Where the segments are committed.
    pub metadata: Arc<dyn MetadataStore>,
    /// Filled with every uploaded object (write-through), so tailing readers never GET.
    pub cache: Arc<SegmentCache>,
    /// Upload retries and backoff.
    pub upload: WriterConfig,
}

impl std::fmt::Debug for FlushContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlushContext").finish_non_exhaustive()
    }
}

impl FlushContext {
    /// The context of one partition's own flushes.
    pub(crate) fn for_partition(storage: &PartitionStorage, upload: &WriterConfig) -> Self {
        Self {
            store: storage.store.clone(),
            metadata: storage.metadata.clone(),
            cache: storage.cache.clone(),
            upload: upload.clone(),
        }
    }
}

/// One flush cycle in progress (see the module docs).
#[derive(Debug)]
#[must_use = "a sealed cycle holds records until it runs"]
pub struct FlushCycle {
    context: FlushContext,
    chunks: Vec<SealedChunk>,
    /// Writers that could not be sealed (fenced), with why.
    refused: Vec<(PartitionWriter, StorageError)>,
}

/// What a flush cycle did.
#[derive(Debug, Default)]
pub struct FlushReport {
    /// Per partition flushed: the committed segment, or why its records were discarded.
    pub results: Vec<(PartitionWriter, Result<SegmentInfo>)>,
    /// Key of the uploaded object, if one was uploaded.
    pub object_key: Option<String>,
    /// Size of the uploaded object.
    pub object_bytes: u64,
}

impl FlushCycle {
    /// Seals the open segment of each of `writers` that has records (step 1).
    pub fn seal(context: &FlushContext, writers: &[PartitionWriter]) -> Self {
        let mut chunks = Vec::new();
        let mut refused = Vec::new();
        for writer in writers {
            match writer.seal() {
                Ok(Some(chunk)) => chunks.push(chunk),
                Ok(None) => {}
                Err(error) => refused.push((writer.clone(), error)),
            }
        }
        Self {
            context: context.clone(),
            chunks,
            refused,
        }
    }

    /// Whether the cycle has nothing to upload.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Uploads, commits and resolves the sealed chunks (steps 2-5).
    pub async fn run(self) -> FlushReport {
        let Self {
            context,
            chunks,
            refused,
        } = self;
        let mut report = FlushReport {
            results: refused.into_iter().map(|(w, e)| (w, Err(e))).collect(),
            ..Default::default()
        };
        if chunks.is_empty() {
            return report;
        }
        let started = std::time::Instant::now();
        let (key, parts, object_len, infos) = layout(&chunks);
        report.object_key = Some(key.clone());
        report.object_bytes = object_len;
        let deadline = chunks.iter().map(|c| c.deadline).min().expect("chunks");
        let mut phases = Phases::new(started);
        let upload = upload_before(&context, &key, &parts, deadline).await;
        phases.end("upload");
        for chunk in &chunks {
            chunk.writer.turn(chunk).await;
        }
        phases.end("turn");
        let outcomes = match upload {
            Ok(()) => commit(&context, &chunks, &infos).await,
            Err(error) => {
                let error = Arc::new(error);
                let shared = || Err(StorageError::Shared(error.clone()));
                chunks.iter().map(|_| shared()).collect()
            }
        };
        phases.end("commit");
        if outcomes.iter().any(Result::is_ok) {
            context.cache.insert_parts(&key, &parts).await;
        }
        phases.end("cache");
        for ((chunk, info), outcome) in chunks.into_iter().zip(infos).zip(outcomes) {
            let writer = chunk.writer.clone();
            let result = match outcome {
                Ok(()) => {
                    writer.publish(chunk, &info);
                    Ok(info)
                }
                Err(error) => Err(writer.discard(&chunk, error)),
            };
            report.results.push((writer, result));
        }
        record_metrics(&report, started);
        report
    }
}

/// Lays the chunks out as one shared object under a fresh key: the object's parts, its length,
/// and each chunk's segment as it will be committed.
fn layout(chunks: &[SealedChunk]) -> (String, Vec<Bytes>, u64, Vec<SegmentInfo>) {
    let key = shared_key();
    let mut builder = SharedObjectBuilder::new();
    let entries: Vec<_> = chunks
        .iter()
        .map(|chunk| {
            let storage = chunk.writer.storage();
            let topic_id = *storage.topic.id.as_bytes();
            builder.push(topic_id, storage.partition, &chunk.encoded.parts)
        })
        .collect();
    let (parts, object_len) = builder.finish();
    let created_at_ms = now_ms();
    let infos = chunks
        .iter()
        .zip(entries)
        .map(|(chunk, entry)| {
            let footer = &chunk.encoded.footer;
            SegmentInfo {
                topic: chunk.writer.topic().to_owned(),
                partition: chunk.writer.storage().partition,
                base_offset: footer.base_offset,
                last_offset: footer.last_offset,
                record_count: footer.record_count,
                size_bytes: entry.len,
                object_key: key.clone(),
                object_offset: entry.offset,
                object_size: object_len,
                min_timestamp_ms: footer.min_timestamp,
                max_timestamp_ms: footer.max_timestamp,
                created_at_ms,
            }
        })
        .collect();
    (key, parts, object_len, infos)
}

/// A fresh shared-object key: time-ordered for people listing the bucket, random so that no two
/// uploads ever share one.
fn shared_key() -> String {
    let unique = uuid::Uuid::new_v4().simple();
    format!("{SHARED_PREFIX}/{:013}-{unique}.obj", now_ms())
}

/// Uploads the object, giving up at `deadline`: the records' producers stop waiting then.
async fn upload_before(
    context: &FlushContext,
    key: &str,
    parts: &[Bytes],
    deadline: Instant,
) -> Result<()> {
    let payload = PutPayload::from_iter(parts.iter().cloned());
    let upload = upload_with_retries(context.store.as_ref(), key, payload, &context.upload);
    match tokio::time::timeout_at(deadline, upload).await {
        Ok(result) => result,
        Err(_) => Err(StorageError::DeadlineExceeded {
            stage: "upload",
            key: key.to_owned(),
        }),
    }
}

/// Commits the current, timely chunks in one transaction. Per chunk: `Ok` when committed, else
/// why not. Chunks that are void (an earlier chunk of their partition failed) or past their
/// deadline are not sent.
async fn commit(
    context: &FlushContext,
    chunks: &[SealedChunk],
    infos: &[SegmentInfo],
) -> Vec<Result<()>> {
    let now = Instant::now();
    let mut results: Vec<Result<()>> = Vec::with_capacity(chunks.len());
    let mut commits = Vec::new();
    let mut sent = Vec::new();
    for (i, (chunk, info)) in chunks.iter().zip(infos).enumerate() {
        if !chunk.writer.is_current(chunk) {
            results.push(Err(StorageError::Superseded));
        } else if chunk.deadline <= now {
            results.push(Err(StorageError::DeadlineExceeded {
                stage: "commit",
                key: info.object_key.clone(),
            }));
        } else {
            results.push(Ok(()));
            sent.push(i);
            commits.push(SegmentCommit {
                segment: info.clone(),
                producers: chunk.producer_snapshots.clone(),
                fence: chunk.writer.fence().cloned(),
                markers: chunk.markers.clone(),
            });
        }
    }
    if commits.is_empty() {
        return results;
    }
    let outcomes = commit_resolved(context.metadata.as_ref(), &commits).await;
    for (i, outcome) in sent.into_iter().zip(outcomes) {
        results[i] = match outcome {
            Ok(outcome) => outcome_result(&chunks[i], outcome),
            Err(error) => Err(StorageError::Shared(error)),
        };
    }
    results
}

/// Runs the group commit until the store gives an answer for every commit. An error that
/// leaves the outcome unknown (connection lost, timeout) is retried with the same commits,
/// which the store recognises if the first attempt went through; only a definite refusal is
/// returned as an error.
///
/// A commit answered [`CommitOutcome::RowLocked`] is returned as such (its records are
/// discarded and the producers retry), so one locked partition row stalls only its partition,
/// unless an earlier attempt's outcome was lost: the lock may then be that attempt's own
/// transaction, still open, so the commit is retried until the row answers.
async fn commit_resolved(
    metadata: &dyn MetadataStore,
    commits: &[SegmentCommit],
) -> Vec<std::result::Result<CommitOutcome, Arc<StorageError>>> {
    let mut answers: Vec<Option<std::result::Result<CommitOutcome, Arc<StorageError>>>> =
        vec![None; commits.len()];
    let mut uncertain = false;
    let mut pause = Duration::from_millis(20);
    loop {
        let pending: Vec<usize> = (0..commits.len())
            .filter(|&i| answers[i].is_none())
            .collect();
        if pending.is_empty() {
            return answers.into_iter().flatten().collect();
        }
        let batch: Vec<SegmentCommit> = pending.iter().map(|&i| commits[i].clone()).collect();
        match metadata.commit_segments(&batch).await {
            Ok(outcomes) => {
                for (i, outcome) in pending.into_iter().zip(outcomes) {
                    if !(uncertain && outcome == CommitOutcome::RowLocked) {
                        answers[i] = Some(Ok(outcome));
                    }
                }
                if answers.iter().all(Option::is_some) {
                    continue;
                }
                tracing::warn!("partition row locked after a commit of unknown outcome; retrying");
            }
            Err(error) if is_definite(&error) => {
                let error = Arc::new(StorageError::Metadata(error));
                for i in pending {
                    answers[i] = Some(Err(error.clone()));
                }
                continue;
            }
            Err(error) => {
                uncertain = true;
                metrics::counter!("streamhouse_flush_commit_retries_total").increment(1);
                tracing::warn!(%error, partitions = batch.len(), "group commit outcome unknown; retrying the same commit");
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(COMMIT_RETRY_MAX);
    }
}

/// Whether a metadata error means the commit certainly did not happen.
fn is_definite(error: &MetadataError) -> bool {
    matches!(
        error,
        MetadataError::Invalid(_) | MetadataError::Corrupt(_) | MetadataError::Migration(_)
    )
}

fn outcome_result(chunk: &SealedChunk, outcome: CommitOutcome) -> Result<()> {
    let storage = chunk.writer.storage();
    let (topic, partition) = (storage.topic.name.clone(), storage.partition);
    let reason = match outcome {
        CommitOutcome::Committed => return Ok(()),
        CommitOutcome::Fenced => "the partition lease is held by another writer".to_owned(),
        CommitOutcome::OffsetConflict { high_watermark } => format!(
            "another writer committed up to offset {high_watermark} (segment starts at {})",
            chunk.encoded.footer.base_offset
        ),
        CommitOutcome::UnknownPartition { .. } => "the partition no longer exists".to_owned(),
        // Not fenced: another transaction holds the partition's row; the producers retry.
        CommitOutcome::RowLocked => {
            return Err(StorageError::Metadata(MetadataError::RowLocked {
                topic,
                partition,
            }))
        }
    };
    Err(StorageError::Fenced {
        topic,
        partition,
        reason,
    })
}

/// Times the phases of one flush cycle into `streamhouse_flush_phase_duration_seconds`: the
/// object's upload, the wait for the partitions' earlier cycles to finish (`turn`), the
/// metadata commit, and the write-through into the block cache. A slow cycle whose PUT was
/// fast shows here which step it waited in.
struct Phases {
    last: std::time::Instant,
}

impl Phases {
    fn new(started: std::time::Instant) -> Self {
        Self { last: started }
    }

    /// Records the phase that ends now.
    fn end(&mut self, phase: &'static str) {
        let now = std::time::Instant::now();
        metrics::histogram!("streamhouse_flush_phase_duration_seconds", "phase" => phase)
            .record((now - self.last).as_secs_f64());
        self.last = now;
    }
}

fn record_metrics(report: &FlushReport, started: std::time::Instant) {
    let committed = report.results.iter().filter(|(_, r)| r.is_ok()).count();
    metrics::histogram!("streamhouse_flush_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    metrics::histogram!("streamhouse_flush_partitions").record(report.results.len() as f64);
    metrics::histogram!("streamhouse_flush_object_bytes").record(report.object_bytes as f64);
    metrics::counter!("streamhouse_flush_objects_total").increment(1);
    metrics::counter!("streamhouse_flush_segments_committed_total").increment(committed as u64);
    metrics::counter!("streamhouse_flush_bytes_total").increment(report.object_bytes);
}
