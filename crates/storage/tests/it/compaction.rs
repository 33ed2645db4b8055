//! Log compaction (issue 15): the compacted log holds each key's newest record at its original
//! offset, readers from any offset cross the gaps, tombstones go after `delete.retention.ms`,
//! the active part is left alone, and failed swaps (a crash between transactions) never lose a
//! record compaction should keep. The property test checks all of it against a model.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::records::{Record as KafkaRecord, TimestampType};
use object_store::memory::InMemory;
use object_store::ObjectStore;
use proptest::prelude::*;
use streamhouse_metadata::{
    now_ms, HookedMetadataStore, MetadataStore, SqliteMetadataStore, TxnMarker,
};
use streamhouse_segment::RecordBatch;
use streamhouse_storage::testing::{FaultyMetadata, MetadataFaultPlan};
use streamhouse_storage::{
    AppendOptions, Budget, CompactionConfig, CompactionPolicy, CompactionReport, CompactionTarget,
    Compactor, ConsolidationConfig, ConsolidationTarget, Consolidator, FlushContext, FlushCycle,
    PartitionReader, PartitionStorage, PartitionWriter, SegmentCache, SegmentCacheConfig,
    SegmentIndex, COMPACTED_SUFFIX,
};

use crate::support::{encode, open_partitions};

const TOPIC: &str = "compacted";
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// One record as produced and as the model keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    offset: i64,
    key: u8,
    value: Option<u32>,
    timestamp: i64,
}

struct Log {
    metadata: Arc<dyn MetadataStore>,
    faults: Arc<HookedMetadataStore<FaultyMetadata>>,
    store: Arc<dyn ObjectStore>,
    storage: PartitionStorage,
    writer: PartitionWriter,
    context: FlushContext,
    /// Every record produced, uncompacted.
    produced: Vec<Rec>,
}

async fn log(seed: u64) -> Log {
    let sqlite = Arc::new(SqliteMetadataStore::in_memory().await.unwrap());
    let faults = Arc::new(HookedMetadataStore::new(
        sqlite,
        FaultyMetadata::new("compact_segments", seed),
    ));
    let metadata: Arc<dyn MetadataStore> = faults.clone();
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let mut p = open_partitions(metadata.clone(), store.clone(), TOPIC, 1).await;
    Log {
        metadata,
        faults,
        store,
        storage: p.storages.remove(0),
        writer: p.writers.remove(0),
        context: p.context,
        produced: Vec::new(),
    }
}

/// An idempotent producer's batch of `(key, value, timestamp)` records from `sequence` on, keys
/// `k{key}`, values `v{value}`; with `transactional`, producer 8's transactional batch.
fn keyed_batch(
    records: &[(u8, Option<u32>, i64)],
    sequence: i32,
    transactional: bool,
) -> RecordBatch {
    let records: Vec<KafkaRecord> = records
        .iter()
        .enumerate()
        .map(|(i, &(key, value, timestamp))| KafkaRecord {
            transactional,
            control: false,
            partition_leader_epoch: 0,
            producer_id: if transactional { 8 } else { 7 },
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: sequence + i as i32,
            timestamp,
            key: Some(Bytes::from(format!("k{key}"))),
            value: value.map(|v| Bytes::from(format!("v{v}"))),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    encode(&records)
}

impl Log {
    /// Produces one batch and flushes it; the records join `produced` at their offsets.
    async fn produce(&mut self, records: &[(u8, Option<u32>, i64)]) {
        let base = self.writer.high_watermark();
        let sequence = self.produced.len() as i32;
        let _ = self
            .writer
            .append(vec![keyed_batch(records, sequence, false)])
            .unwrap();
        let report = FlushCycle::seal(&self.context, std::slice::from_ref(&self.writer))
            .run()
            .await;
        assert!(report.results.iter().all(|(_, r)| r.is_ok()));
        for (i, &(key, value, timestamp)) in records.iter().enumerate() {
            self.produced.push(Rec {
                offset: base + i as i64,
                key,
                value,
                timestamp,
            });
        }
    }

    /// Consolidates every flushed slice, making the whole log compactable.
    async fn consolidate(&self) {
        let config = ConsolidationConfig {
            min_age: Duration::ZERO,
            ..Default::default()
        };
        let consolidator = Consolidator::new(
            self.store.clone(),
            self.metadata.clone(),
            config,
            Duration::ZERO,
        );
        let target = ConsolidationTarget {
            storage: self.storage.clone(),
            fence: None,
        };
        consolidator.run_once(&[target], true).await.unwrap();
    }

    /// A compactor whose key map has `slots` slots (it holds 7/8 of them, at least 7 keys).
    fn compactor(&self, slots: usize) -> Compactor {
        let config = CompactionConfig {
            key_map_bytes: slots * streamhouse_storage::KEY_MAP_SLOT_BYTES,
            output_segment_bytes: 600,
        };
        Compactor::new(
            self.store.clone(),
            self.metadata.clone(),
            config,
            Duration::ZERO,
        )
    }

    /// Compacts (forced) round after round until nothing is left to do; returns the rounds'
    /// reports.
    async fn compact_fully(&self, compactor: &Compactor) -> Vec<CompactionReport> {
        let mut reports = Vec::new();
        loop {
            let report = compactor.run_once(&[self.target()], true).await;
            if report.partitions == 0 {
                return reports;
            }
            reports.push(report);
            assert!(
                reports.len() < 100,
                "compaction does not converge: {reports:?}"
            );
        }
    }

    fn target(&self) -> CompactionTarget {
        CompactionTarget {
            storage: self.storage.clone(),
            fence: None,
            policy: CompactionPolicy::default(),
        }
    }

    /// Every record from `from` on, read cold (another agent's index and cache).
    async fn read_from(&self, from: i64) -> Vec<Rec> {
        let cold = PartitionStorage {
            index: Arc::new(SegmentIndex::new(
                TOPIC,
                0,
                self.metadata.clone(),
                Default::default(),
            )),
            cache: Arc::new(SegmentCache::new(SegmentCacheConfig::default())),
            producer_budget: Budget::new(usize::MAX),
            ..self.storage.clone()
        };
        let reader = PartitionReader::new(cold);
        let (mut offset, mut out) = (from, Vec::new());
        let high_watermark = self.writer.high_watermark();
        while offset < high_watermark {
            let read = reader.read(offset, 1 << 16).await.unwrap();
            assert!(read.next_offset > offset, "a read from {offset} moves on");
            for batch in read.batches.iter().filter(|b| !b.header().is_control()) {
                for record in batch.records(1 << 20).unwrap() {
                    let record = record.unwrap();
                    if record.offset >= offset {
                        out.push(decoded(&record));
                    }
                }
            }
            offset = read.next_offset;
        }
        out
    }
}

fn decoded(record: &streamhouse_segment::Record) -> Rec {
    let text = |b: &Bytes| String::from_utf8(b.to_vec()).unwrap();
    Rec {
        offset: record.offset,
        key: text(record.key.as_ref().unwrap())[1..].parse().unwrap(),
        value: record.value.as_ref().map(|v| text(v)[1..].parse().unwrap()),
        timestamp: record.timestamp,
    }
}

/// The model: `log` with every record superseded by a newer one of its key removed, and
/// tombstones older than `horizon` removed, except the log's last record (offset `end`).
fn compacted(log: &[Rec], horizon: i64, end: i64) -> Vec<Rec> {
    let newest: HashMap<u8, i64> = log.iter().map(|r| (r.key, r.offset)).collect();
    let live = |r: &Rec| r.value.is_some() || r.timestamp >= horizon || r.offset == end;
    log.iter()
        .filter(|r| newest[&r.key] == r.offset && live(r))
        .cloned()
        .collect()
}

#[tokio::test]
async fn newest_value_per_key_survives_at_its_offset_and_readers_cross_gaps() {
    let mut log = log(1).await;
    let now = now_ms();
    let old = now - 2 * DAY_MS;
    for round in 0..10u32 {
        let batch: Vec<_> = (0..20u8)
            .map(|k| (k, Some(round * 100 + u32::from(k)), now - 10_000))
            .collect();
        log.produce(&batch).await;
    }
    // Key 1: deleted long ago (tombstone past delete.retention.ms); key 2: deleted just now.
    log.produce(&[(1, None, old), (2, None, now - 5_000)]).await;
    log.consolidate().await;
    let report = log.compactor(1_000).run_once(&[log.target()], false).await;
    assert_eq!(report.partitions, 1, "{report:?}");
    assert_eq!(report.passes, 1);
    assert_eq!(report.records_read, 202);
    let expected = compacted(&log.produced, now - DAY_MS, 201);
    assert_eq!(expected.len(), 19);
    assert_eq!(log.read_from(0).await, expected);
    // A consumer that was in the middle of the log keeps going from its offset.
    for from in [0, 17, 150, 181, 199, 200, 201] {
        let tail: Vec<_> = expected
            .iter()
            .filter(|r| r.offset >= from)
            .cloned()
            .collect();
        assert_eq!(log.read_from(from).await, tail, "from {from}");
    }
    let segments = log.metadata.list_segments(TOPIC, 0, 0).await.unwrap();
    assert!(segments
        .iter()
        .all(|s| s.object_key.ends_with(COMPACTED_SUFFIX)));
    assert_eq!(
        segments.last().unwrap().last_offset,
        201,
        "offsets never change"
    );

    // Clean now: with nothing dirty no round runs.
    let again = log.compactor(1_000).run_once(&[log.target()], true).await;
    assert_eq!((again.partitions, again.dirty_bytes), (0, 0));
}

/// An aborted transaction rewrote key 1: its record must neither remove the committed one
/// (read_committed readers skip it) nor be removed itself; plain records compact as usual.
#[tokio::test]
async fn transactional_records_neither_supersede_nor_are_removed() {
    let mut log = log(6).await;
    let at = now_ms() - 10_000;
    log.produce(&[(1, Some(1), at), (2, Some(2), at)]).await;
    let batches = vec![keyed_batch(&[(1, Some(3), at), (1, Some(4), at)], 0, true)];
    let options = AppendOptions {
        txn_verified: log.writer.txn_verification(&batches),
        ..Default::default()
    };
    log.writer.append_with(batches, options).unwrap();
    let abort = TxnMarker {
        topic: TOPIC.into(),
        partition: 0,
        producer_id: 8,
        producer_epoch: 0,
        commit: false,
        coordinator_epoch: 1,
        transactional_id: "t".into(),
    };
    log.writer.append_marker(&abort).unwrap();
    log.writer.flush().await.unwrap();
    log.produce(&[(2, Some(5), at)]).await;
    log.consolidate().await;
    let report = log.compactor(1_000).run_once(&[log.target()], false).await;
    assert_eq!(report.partitions, 1, "{report:?}");
    let values: Vec<(u8, Option<u32>)> = log
        .read_from(0)
        .await
        .iter()
        .map(|r| (r.key, r.value))
        .collect();
    assert_eq!(
        values,
        [(1, Some(1)), (1, Some(3)), (1, Some(4)), (2, Some(5))]
    );
}

#[tokio::test]
async fn the_active_part_and_young_records_are_not_compacted() {
    let mut log = log(2).await;
    let now = now_ms();
    log.produce(&[(1, Some(1), now - 60_000), (1, Some(2), now - 60_000)])
        .await;
    log.consolidate().await;
    // Not consolidated yet: still in a flush's shared object (the active part).
    log.produce(&[(1, Some(3), now - 60_000)]).await;
    let mut target = log.target();
    target.policy.min_lag_ms = 10 * 60_000;
    let young = log.compactor(100).run_once(&[target.clone()], true).await;
    assert_eq!(young.partitions, 0, "younger than min.compaction.lag.ms");
    target.policy.min_lag_ms = 0;
    log.compactor(100).run_once(&[target], true).await;
    let offsets: Vec<i64> = log.read_from(0).await.iter().map(|r| r.offset).collect();
    // Offset 0 goes (superseded by 1); 1 stays (its successor 2 is in the active part).
    assert_eq!(offsets, [1, 2]);
}

#[tokio::test]
async fn the_dirty_ratio_decides_when_a_round_is_due() {
    let mut log = log(3).await;
    let now = now_ms() - 1_000;
    for v in 0..4 {
        log.produce(&[(1, Some(v), now), (2, Some(v), now)]).await;
    }
    log.consolidate().await;
    let compactor = log.compactor(100);
    let mut target = log.target();
    target.policy.min_dirty_ratio = 0.5;
    assert_eq!(
        compactor
            .run_once(&[target.clone()], false)
            .await
            .partitions,
        1
    );
    // A little new dirty data after a big clean part: below the ratio, not due.
    log.produce(&[(3, Some(0), now)]).await;
    log.consolidate().await;
    target.policy.min_dirty_ratio = 0.99;
    let report = compactor.run_once(&[target.clone()], false).await;
    assert_eq!(report.partitions, 0);
    assert!(report.dirty_bytes > 0);
    // ... unless it is older than max.compaction.lag.ms.
    target.policy.max_lag_ms = 1;
    assert_eq!(compactor.run_once(&[target], false).await.partitions, 1);
}

#[tokio::test]
async fn more_keys_than_the_map_holds_take_several_passes() {
    let mut log = log(4).await;
    let now = now_ms() - 1_000;
    for round in 0..3 {
        let batch: Vec<_> = (0..40u8).map(|k| (k, Some(round), now)).collect();
        log.produce(&batch).await;
    }
    log.consolidate().await;
    let report = log.compactor(8).run_once(&[log.target()], true).await;
    assert!(report.passes >= 8, "40 keys in maps of 7: {report:?}");
    assert_eq!(
        log.read_from(0).await,
        compacted(&log.produced, now - DAY_MS, 119)
    );
}

#[tokio::test]
async fn a_kept_tombstone_brings_a_round_once_it_expires() {
    let mut log = log(5).await;
    let now = now_ms();
    log.produce(&[(1, Some(1), now - 1_000), (1, None, now), (2, Some(2), now)])
        .await;
    log.consolidate().await;
    let compactor = log.compactor(100);
    let mut target = log.target();
    target.policy.delete_retention_ms = 1_500;
    assert_eq!(
        compactor
            .run_once(&[target.clone()], false)
            .await
            .partitions,
        1
    );
    let values = |log: Vec<Rec>| log.iter().map(|r| (r.key, r.value)).collect::<Vec<_>>();
    assert_eq!(values(log.read_from(0).await), [(1, None), (2, Some(2))]);
    // Nothing dirty and the tombstone not yet expired: no round.
    assert_eq!(
        compactor
            .run_once(&[target.clone()], false)
            .await
            .partitions,
        0
    );
    // Real time, not paused: tombstone expiry is judged by the wall clock (`now_ms`) against
    // times stored in the metadata store.
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    assert_eq!(
        compactor
            .run_once(&[target.clone()], false)
            .await
            .partitions,
        1
    );
    assert_eq!(values(log.read_from(0).await), [(2, Some(2))]);
    assert_eq!(compactor.run_once(&[target], false).await.partitions, 0);
}

#[tokio::test]
async fn when_the_map_fills_a_round_stops_before_that_segment_and_the_next_goes_on() {
    let mut log = log(6).await;
    let now = now_ms() - 1_000;
    for s in 0..4u8 {
        // A segment of its own: 5 keys, each written twice.
        let records: Vec<_> = (0..10u8)
            .map(|i| (10 * s + i % 5, Some(u32::from(i)), now))
            .collect();
        log.produce(&records).await;
        log.consolidate().await;
    }
    let reports = log.compact_fully(&log.compactor(8)).await;
    // 7 keys fit: each round maps one segment (5 keys) and stops at the next.
    assert_eq!(reports.len(), 4, "{reports:?}");
    assert!(reports.iter().all(|r| r.passes == 1), "{reports:?}");
    assert_eq!(
        log.read_from(0).await,
        compacted(&log.produced, now - DAY_MS, log.writer.high_watermark() - 1)
    );
}

#[derive(Debug, Clone)]
enum Op {
    /// Records `(key, value or tombstone, old timestamp)`.
    Produce(Vec<(u8, Option<u32>, bool)>),
    /// Consolidate only: the next compaction finds several dirty segments.
    Consolidate,
    /// Consolidate, then compact with a key map of this many slots.
    Compact(usize),
    /// Consolidate, then compact while swaps fail (a crash or a lost lease between swaps),
    /// some after being carried out.
    CrashedCompaction(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let record = (
        0u8..12,
        proptest::option::weighted(0.8, 0u32..1000),
        any::<bool>(),
    );
    prop_oneof![
        4 => proptest::collection::vec(record, 1..12).prop_map(Op::Produce),
        1 => Just(Op::Consolidate),
        1 => (1usize..16).prop_map(Op::Compact),
        1 => (1usize..16).prop_map(Op::CrashedCompaction),
    ]
}

/// Runs `ops`, checking after each compaction that the log read from any offset is the model,
/// and after each failed one that nothing compaction must keep was lost.
async fn check(ops: Vec<Op>, seed: u64) {
    let mut log = log(seed).await;
    let now = now_ms();
    let horizon = now - DAY_MS;
    let mut model: Vec<Rec> = Vec::new();
    for op in ops {
        match op {
            Op::Produce(records) => {
                let records: Vec<_> = records
                    .into_iter()
                    .map(|(k, v, old)| (k, v, if old { now - 2 * DAY_MS } else { now - 1_000 }))
                    .collect();
                let before = log.produced.len();
                log.produce(&records).await;
                model.extend_from_slice(&log.produced[before..]);
            }
            Op::Consolidate => log.consolidate().await,
            Op::Compact(entries) => {
                log.consolidate().await;
                log.compact_fully(&log.compactor(entries)).await;
                model = compacted(&model, horizon, log.writer.high_watermark() - 1);
                let hw = log.writer.high_watermark();
                for from in [0, hw / 3, hw / 2, (hw - 1).max(0)] {
                    let tail: Vec<_> = model.iter().filter(|r| r.offset >= from).cloned().collect();
                    assert_eq!(log.read_from(from).await, tail, "from {from}");
                }
            }
            Op::CrashedCompaction(entries) => {
                log.consolidate().await;
                log.faults.hook().set(MetadataFaultPlan {
                    error_rate: 0.4,
                    lost_answer_rate: 0.2,
                    outage: false,
                });
                log.compactor(entries).run_once(&[log.target()], true).await;
                log.faults.hook().set(MetadataFaultPlan::default());
                // Some swaps happened: the log lies between the model and its compaction.
                let read = log.read_from(0).await;
                let end = log.writer.high_watermark() - 1;
                let must_keep = compacted(&model, horizon, end);
                assert!(
                    must_keep.iter().all(|r| read.contains(r)),
                    "a kept record was lost"
                );
                assert!(read.iter().all(|r| model.contains(r)), "a record appeared");
                // No deleted key came back: finishing the job gives the model's compaction.
                assert_eq!(compacted(&read, horizon, end), must_keep);
                model = read;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn compacted_log_read_from_any_offset_equals_the_model(
        ops in proptest::collection::vec(op(), 1..14),
        seed in any::<u64>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(check(ops, seed));
    }
}

/// Figures for BENCHMARKS.md: compaction throughput (input MB/s), object-store requests per MB
/// compacted, and key-map memory, for 1,000,000 records (100-byte values, 5 % tombstones) over
/// 10,000 keys in a local-filesystem store:
/// `cargo test -p streamhouse-storage --release --test it compaction_figures -- --ignored --nocapture`
/// (`STREAMHOUSE_FIGURES_SEGMENT_MB=8`: consolidated into segments of about 8 MB instead of one;
/// `STREAMHOUSE_FIGURES_KEY_MAP_BYTES=100000`: a key map too small for the keys, several passes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand"]
async fn compaction_figures() {
    const RECORDS: usize = 1_000_000;
    const KEYS: u64 = 10_000;
    const PER_BATCH: usize = 1_000;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let metadata: Arc<dyn MetadataStore> =
        Arc::new(SqliteMetadataStore::in_memory().await.unwrap());
    let p = open_partitions(metadata.clone(), store.clone(), TOPIC, 1).await;
    let now = now_ms() - 60_000;
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for chunk in 0..RECORDS / PER_BATCH {
        let records: Vec<KafkaRecord> = (0..PER_BATCH)
            .map(|i| {
                // xorshift: keys and tombstones spread evenly, reproducibly.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let value = (!state.is_multiple_of(20)).then(|| Bytes::from(vec![b'v'; 100]));
                figure_record(i, format!("key-{:05}", state % KEYS), value, now)
            })
            .collect();
        let _ = p.writers[0].append(vec![encode(&records)]).unwrap();
        if chunk % 10 == 9 {
            FlushCycle::seal(&p.context, &p.writers).run().await;
        }
    }
    FlushCycle::seal(&p.context, &p.writers).run().await;
    let segment_mb: u64 = std::env::var("STREAMHOUSE_FIGURES_SEGMENT_MB")
        .map_or(u64::MAX >> 20, |v| v.parse().unwrap());
    let config = ConsolidationConfig {
        min_age: Duration::ZERO,
        max_round_bytes: segment_mb << 20,
        ..Default::default()
    };
    let consolidator = Consolidator::new(store.clone(), metadata.clone(), config, Duration::ZERO);
    let storage = p.storages[0].clone();
    let fence = None;
    let target = ConsolidationTarget {
        storage: storage.clone(),
        fence: fence.clone(),
    };
    // Each round merges at most `max_round_bytes` of slices into one segment.
    let consolidate = || consolidator.run_once(std::slice::from_ref(&target), true);
    while consolidate().await.unwrap().partitions > 0 {}
    let segments = metadata.list_segments(TOPIC, 0, 0).await.unwrap();
    let input_mb = segments.iter().map(|s| s.size_bytes).sum::<u64>() as f64 / 1e6;
    let mut config = CompactionConfig::default();
    if let Ok(bytes) = std::env::var("STREAMHOUSE_FIGURES_KEY_MAP_BYTES") {
        config.key_map_bytes = bytes.parse().unwrap();
    }
    let compactor = Compactor::new(store, metadata.clone(), config, Duration::ZERO);
    let target = CompactionTarget {
        storage,
        fence,
        policy: CompactionPolicy::default(),
    };
    let started = std::time::Instant::now();
    // Rounds until the log is clean (more than one when the keys do not fit the map).
    let mut rounds = Vec::new();
    loop {
        let round = compactor
            .run_once(std::slice::from_ref(&target), true)
            .await;
        if round.partitions == 0 {
            break;
        }
        rounds.push(round);
    }
    let seconds = started.elapsed().as_secs_f64();
    let left: i64 = (metadata.list_segments(TOPIC, 0, 0).await.unwrap())
        .iter()
        .map(|s| s.record_count)
        .sum();
    let report = rounds
        .iter()
        .fold(CompactionReport::default(), |sum, r| CompactionReport {
            passes: sum.passes + r.passes,
            bytes_read: sum.bytes_read + r.bytes_read,
            bytes_written: sum.bytes_written + r.bytes_written,
            records_read: sum.records_read + r.records_read,
            records_kept: sum.records_kept + r.records_kept,
            segments_replaced: sum.segments_replaced + r.segments_replaced,
            requests: sum.requests + r.requests,
            ..sum
        });
    println!(
        "input {input_mb:.1} MB in {} segments, compacted in {} rounds, {seconds:.2} s: \
         {:.1} MB/s; {} requests ({:.2} per MB); {} records left, {:.2} MB written; {report:?}",
        segments.len(),
        rounds.len(),
        input_mb / seconds,
        report.requests,
        report.requests as f64 / input_mb,
        left,
        report.bytes_written as f64 / 1e6,
    );
}

/// One record of [`compaction_figures`], non-idempotent.
fn figure_record(i: usize, key: String, value: Option<Bytes>, timestamp: i64) -> KafkaRecord {
    KafkaRecord {
        transactional: false,
        control: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: i as i64,
        // The encoder starts a new batch where offset - sequence changes.
        sequence: i as i32,
        timestamp,
        key: Some(Bytes::from(key)),
        value,
        headers: Default::default(),
        delete_horizon: false,
    }
}
