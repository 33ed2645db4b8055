//! What group commit guarantees when the metadata store fails: calls refused, calls carried out
//! whose answer is lost, outages. Acknowledged records are present exactly once, offsets stay
//! dense, a record answered with an error never shows up, and no object key is written twice.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use streamhouse_metadata::{
    CallHook, HookedMetadataStore, MetadataError, MetadataStore, SegmentCommit, SqlxError,
};
use streamhouse_storage::testing::{FaultyMetadata, FaultyStore, MetadataFaultPlan};
use streamhouse_storage::{
    FlushContext, FlushCycle, PartitionReader, PartitionStorage, PartitionWriter,
};

use crate::support::{batch, open_partitions};

const PARTITIONS: u32 = 4;
const TOPIC: &str = "faults";

struct Cluster {
    metadata: Arc<dyn MetadataStore>,
    faults: Arc<HookedMetadataStore<FaultyMetadata>>,
    store: Arc<FaultyStore>,
    writers: Vec<PartitionWriter>,
    storages: Vec<PartitionStorage>,
    context: FlushContext,
}

async fn cluster(seed: u64) -> Cluster {
    let sqlite = Arc::new(
        streamhouse_metadata::SqliteMetadataStore::in_memory()
            .await
            .unwrap(),
    );
    let faults = Arc::new(HookedMetadataStore::new(
        sqlite,
        FaultyMetadata::new("commit_segments", seed),
    ));
    let metadata: Arc<dyn MetadataStore> = faults.clone();
    let store = FaultyStore::new(seed);
    let p = open_partitions(metadata.clone(), store.clone(), TOPIC, PARTITIONS).await;
    Cluster {
        metadata,
        faults,
        store,
        writers: p.writers,
        storages: p.storages,
        context: p.context,
    }
}

/// Rounds of one batch per partition and one flush cycle each; returns per partition the base
/// offsets acknowledged (each batch carries `round` as its timestamp, to find it again).
async fn produce(cluster: &Cluster, rounds: usize) -> Vec<Vec<i64>> {
    let mut acked = vec![Vec::new(); PARTITIONS as usize];
    for round in 0..rounds {
        let appended: Vec<_> = cluster
            .writers
            .iter()
            .map(|w| w.append(vec![batch(3, 16, round as i64, None)]).unwrap())
            .collect();
        let cycle = FlushCycle::seal(&cluster.context, &cluster.writers);
        let report = tokio::time::timeout(Duration::from_secs(30), cycle.run())
            .await
            .expect("a cycle ends once the store answers");
        assert_eq!(report.results.len(), PARTITIONS as usize);
        for (p, a) in appended.into_iter().enumerate() {
            if a.durable.wait().await.is_ok() {
                acked[p].push(round as i64);
            }
        }
    }
    acked
}

/// The log of every partition holds exactly the acknowledged batches, densely, once each.
async fn assert_logs(cluster: &Cluster, acked: &[Vec<i64>]) {
    assert_stored(&cluster.metadata, &cluster.storages, &cluster.store, acked).await;
}

/// [`assert_logs`] over the given parts.
async fn assert_stored(
    metadata: &Arc<dyn MetadataStore>,
    storages: &[PartitionStorage],
    store: &FaultyStore,
    acked: &[Vec<i64>],
) {
    for (p, storage) in storages.iter().enumerate() {
        let hw = metadata
            .get_partition(TOPIC, p as u32)
            .await
            .unwrap()
            .high_watermark;
        assert_eq!(hw, acked[p].len() as i64 * 3, "partition {p}");
        let reader = PartitionReader::new(storage.clone());
        let mut rounds = Vec::new();
        let mut offset = 0;
        while offset < hw {
            let read = reader.read(offset, 1 << 20).await.unwrap();
            for b in &read.batches {
                assert_eq!(b.base_offset(), rounds.len() as i64 * 3, "dense offsets");
                rounds.push(b.header().base_timestamp);
            }
            offset = read.next_offset;
        }
        assert_eq!(
            rounds, acked[p],
            "partition {p}: stored batches are the acked ones"
        );
    }
    assert_eq!(store.second_writes(), 0, "an object key was written twice");
}

#[tokio::test]
async fn refused_and_lost_commit_answers_neither_lose_nor_duplicate_records() {
    let cluster = cluster(11).await;
    cluster.faults.hook().set(MetadataFaultPlan {
        error_rate: 0.25,
        lost_answer_rate: 0.25,
        outage: false,
    });
    let acked = produce(&cluster, 40).await;
    let (failed, lost) = cluster.faults.hook().injected();
    assert!(
        failed >= 5 && lost >= 5,
        "only {failed} refused, {lost} lost"
    );
    // Unknown outcomes are retried until the store answers, so every round is acknowledged.
    assert!(acked.iter().all(|a| a.len() == 40), "{acked:?}");
    assert_logs(&cluster, &acked).await;
}

#[tokio::test]
async fn an_outage_blocks_the_commit_until_the_store_is_back() {
    let cluster = cluster(12).await;
    cluster.faults.hook().set(MetadataFaultPlan {
        outage: true,
        ..Default::default()
    });
    let appended = cluster.writers[0]
        .append(vec![batch(3, 16, 0, None)])
        .unwrap();
    // The commit retries on tokio's clock, paused here: ten minutes of outage pass instantly
    // (nothing reaches SQLite while the store is out), past any deadline of the records.
    tokio::time::pause();
    let cycle = FlushCycle::seal(&cluster.context, &cluster.writers[..1]);
    let running = tokio::spawn(cycle.run());
    // Once the first commit is refused (the upload done, well within the records' deadline)...
    while cluster.faults.hook().injected().0 == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for _ in 0..60 {
        tokio::time::advance(Duration::from_secs(10)).await;
    }
    assert!(
        !running.is_finished(),
        "an unanswered commit must block, not guess"
    );
    let (refused, _) = cluster.faults.hook().injected();
    assert!(refused >= 10, "retried only {refused} times in ten minutes");
    assert_eq!(cluster.writers[0].high_watermark(), 0);
    // The store comes back; the retry pending (at most a second away) is woken, and its commit
    // runs on the real clock: SQLite answers on its own thread, which a paused clock would race
    // (sqlx's pool timeout would fire at once).
    cluster.faults.hook().set(MetadataFaultPlan::default());
    tokio::time::advance(Duration::from_secs(1)).await;
    tokio::time::resume();
    running.await.unwrap();
    appended.durable.wait().await.unwrap();
    assert_logs(&cluster, &[vec![0], vec![], vec![], vec![]]).await;
}

#[tokio::test]
async fn a_flush_past_its_deadline_is_abandoned_and_never_committed() {
    let cluster = cluster(13).await;
    cluster
        .store
        .set_puts(streamhouse_storage::testing::FaultPlan {
            latency: Duration::from_millis(400),
            ..Default::default()
        });
    let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
    let options = streamhouse_storage::AppendOptions {
        deadline: Some(deadline),
        reservation: None,
        txn_verified: None,
    };
    let late = cluster.writers[1]
        .append_with(vec![batch(3, 16, 0, None)], options)
        .unwrap();
    let report = FlushCycle::seal(&cluster.context, &cluster.writers)
        .run()
        .await;
    assert!(report.results.iter().all(|(_, r)| r.is_err()));
    assert!(late.durable.wait().await.is_err());
    // The uploaded object stays unreferenced; the partition continues at offset 0.
    cluster.store.set_puts(Default::default());
    let next = cluster.writers[1]
        .append(vec![batch(3, 16, 1, None)])
        .unwrap();
    assert_eq!(next.base_offset, 0);
    cluster.writers[1].flush().await.unwrap();
    assert_logs(&cluster, &[vec![], vec![1], vec![], vec![]]).await;
}

/// Holds partition 0's row on the commit calls `held_on` selects (by how many calls came
/// before), and loses the answer to the first call (carried out, then a connection error).
struct HeldRow {
    calls: AtomicUsize,
    lose_first_answer: bool,
    held_on: fn(usize) -> bool,
}

#[async_trait::async_trait]
impl CallHook for HeldRow {
    async fn before(&self, method: &'static str) -> streamhouse_metadata::Result<()> {
        if method == "commit_segments" {
            self.calls.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }

    async fn after(&self, method: &'static str) -> streamhouse_metadata::Result<()> {
        let first = self.calls.load(Ordering::SeqCst) == 1;
        if method == "commit_segments" && first && self.lose_first_answer {
            let lost = std::io::Error::other("connection reset after the commit");
            return Err(MetadataError::Database(SqlxError::Io(lost)));
        }
        Ok(())
    }

    fn row_held(&self, commit: &SegmentCommit) -> bool {
        commit.segment.partition == 0 && (self.held_on)(self.calls.load(Ordering::SeqCst))
    }
}

/// One flush cycle of a batch on each of two partitions over `hook`; whether each was
/// acknowledged, the commit calls made, and the partitions.
async fn flush_two_under(hook: HeldRow) -> (Vec<bool>, usize, Two) {
    let sqlite = Arc::new(
        streamhouse_metadata::SqliteMetadataStore::in_memory()
            .await
            .unwrap(),
    );
    let hooked = Arc::new(HookedMetadataStore::new(sqlite, hook));
    let metadata: Arc<dyn MetadataStore> = hooked.clone();
    let store = FaultyStore::new(14);
    let p = open_partitions(metadata.clone(), store.clone(), TOPIC, 2).await;
    let appended: Vec<_> = p
        .writers
        .iter()
        .map(|w| w.append(vec![batch(3, 16, 0, None)]).unwrap())
        .collect();
    let cycle = FlushCycle::seal(&p.context, &p.writers);
    tokio::time::timeout(Duration::from_secs(30), cycle.run())
        .await
        .expect("the cycle ends");
    let mut acked = Vec::new();
    for a in appended {
        acked.push(a.durable.wait().await.is_ok());
    }
    let calls = hooked.hook().calls.load(Ordering::SeqCst);
    let two = Two {
        metadata,
        store,
        writers: p.writers,
        storages: p.storages,
    };
    (acked, calls, two)
}

/// Two partitions over a [`HeldRow`] hook.
struct Two {
    metadata: Arc<dyn MetadataStore>,
    store: Arc<FaultyStore>,
    writers: Vec<PartitionWriter>,
    storages: Vec<PartitionStorage>,
}

#[tokio::test]
async fn a_held_partition_row_fails_only_its_partition_and_it_continues_after() {
    let hook = HeldRow {
        calls: AtomicUsize::new(0),
        lose_first_answer: false,
        held_on: |previous_calls| previous_calls == 0,
    };
    let (acked, calls, two) = flush_two_under(hook).await;
    assert_eq!(acked, [false, true], "only the held partition fails");
    assert_eq!(calls, 1, "answered at once, not retried");
    // Nothing of partition 0 was recorded: its next batch starts at offset 0 again.
    let next = two.writers[0].append(vec![batch(3, 16, 1, None)]).unwrap();
    assert_eq!(next.base_offset, 0);
    two.writers[0].flush().await.unwrap();
    assert_stored(
        &two.metadata,
        &two.storages,
        &two.store,
        &[vec![1], vec![0]],
    )
    .await;
}

#[tokio::test]
async fn a_held_row_after_a_lost_answer_is_retried_not_discarded() {
    // The first call goes through but its answer is lost; on the retry partition 0's row is
    // held (it could be the first attempt's own transaction), so it must be retried until the
    // row answers, which finds it recorded.
    let hook = HeldRow {
        calls: AtomicUsize::new(0),
        lose_first_answer: true,
        held_on: |previous_calls| previous_calls == 1,
    };
    let (acked, calls, two) = flush_two_under(hook).await;
    assert_eq!(acked, [true, true], "both were recorded by the first call");
    assert_eq!(calls, 3, "lost answer, held row, then the answer");
    assert_stored(
        &two.metadata,
        &two.storages,
        &two.store,
        &[vec![0], vec![0]],
    )
    .await;
}
