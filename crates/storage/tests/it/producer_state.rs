//! Idempotent producers through the PartitionWriter: dedupe, fencing, rollback, restart.

use streamhouse_storage::StorageError;

use streamhouse_storage::testing::FaultPlan;

use crate::support::{batch, flaky_store, test_config, Env, Producer};

const PID: i64 = 42;

fn idempotent(epoch: i16, seq: i32, records: usize) -> streamhouse_segment::RecordBatch {
    let producer: Producer = (PID, epoch, seq);
    batch(records, 8, 1_000, Some(producer))
}

#[tokio::test]
async fn a_retried_batch_gets_its_original_offsets_and_is_not_appended_again() {
    let env = Env::in_memory().await;
    let writer = env.writer(test_config(), None).await.unwrap();
    let first = writer.append(vec![idempotent(0, 0, 3)]).unwrap();
    let second = writer.append(vec![idempotent(0, 3, 2)]).unwrap();
    let retry = writer.append(vec![idempotent(0, 0, 3)]).unwrap();
    assert!(retry.duplicate);
    assert_eq!(
        (retry.base_offset, retry.last_offset),
        (first.base_offset, first.last_offset)
    );
    assert_eq!(writer.next_offset(), 5);

    writer.flush().await.unwrap();
    for ticket in [first.durable, second.durable, retry.durable] {
        ticket.wait().await.unwrap();
    }
    // A retry of a durable batch is acknowledged at once.
    let late_retry = writer.append(vec![idempotent(0, 3, 2)]).unwrap();
    assert_eq!((late_retry.base_offset, late_retry.last_offset), (3, 4));
    assert!(late_retry.durable.is_ready());
}

#[tokio::test]
async fn sequence_and_epoch_violations_are_refused_without_appending() {
    let env = Env::in_memory().await;
    let writer = env.writer(test_config(), None).await.unwrap();
    let _ok = writer.append(vec![idempotent(1, 0, 2)]).unwrap();
    assert!(matches!(
        writer.append(vec![idempotent(1, 5, 1)]),
        Err(StorageError::OutOfOrderSequence {
            expected: 2,
            found: 5,
            ..
        })
    ));
    assert!(matches!(
        writer.append(vec![idempotent(0, 2, 1)]),
        Err(StorageError::InvalidProducerEpoch {
            epoch: 0,
            current_epoch: 1,
            ..
        })
    ));
    assert!(matches!(
        writer.append(vec![idempotent(2, 7, 1)]),
        Err(StorageError::OutOfOrderSequence { expected: 0, .. })
    ));
    // A request is all or nothing: a bad second batch refuses the first too.
    assert!(writer
        .append(vec![idempotent(1, 2, 1), idempotent(1, 9, 1)])
        .is_err());
    assert_eq!(writer.next_offset(), 2);
    let next = writer
        .append(vec![idempotent(1, 2, 1), idempotent(1, 3, 1)])
        .unwrap();
    assert_eq!((next.base_offset, next.last_offset), (2, 3));
}

#[tokio::test]
async fn a_failed_flush_rolls_producer_state_back() {
    let flaky = flaky_store(u32::MAX);
    let env = Env::new(flaky.clone()).await;
    let writer = env.writer(test_config(), None).await.unwrap();
    let lost = writer.append(vec![idempotent(0, 0, 2)]).unwrap();
    assert!(writer.flush().await.is_err());
    assert!(lost.durable.wait().await.is_err());

    // The client retries the same batch: it was never stored, so it is appended, not deduped.
    flaky.set_puts(FaultPlan::default());
    let retry = writer.append(vec![idempotent(0, 0, 2)]).unwrap();
    assert!(!retry.duplicate);
    assert_eq!(retry.base_offset, 0);
    writer.flush().await.unwrap();
    retry.durable.wait().await.unwrap();
}

#[tokio::test]
async fn dedupe_survives_a_restart() {
    let env = Env::in_memory().await;
    let writer = env.writer(test_config(), None).await.unwrap();
    let _filler = writer.append(vec![batch(4, 8, 1_000, None)]).unwrap();
    writer.flush().await.unwrap();
    let mut seq = 0;
    let mut last = None;
    for _ in 0..3 {
        let appended = writer.append(vec![idempotent(0, seq, 2)]).unwrap();
        seq += 2;
        writer.flush().await.unwrap();
        last = Some(appended);
    }
    let last = last.unwrap();
    drop(writer);

    // The acknowledgement of the last batch was lost; after the restart the client retries.
    let reopened = env.reopened_writer(test_config()).await;
    assert_eq!(reopened.high_watermark(), 10);
    let retry = reopened.append(vec![idempotent(0, 4, 2)]).unwrap();
    assert!(retry.duplicate);
    assert_eq!(
        (retry.base_offset, retry.last_offset),
        (last.base_offset, last.last_offset)
    );
    assert!(retry.durable.is_ready());
    // And the sequence continues where it was (a gap right after the reopening is answered
    // "retry": see `a_gap_right_after_a_takeover_is_retriable_until_the_grace_ends`).
    assert!(matches!(
        reopened.append(vec![idempotent(0, 7, 1)]),
        Err(StorageError::EarlierBatchesInFlight { expected: 6, .. })
    ));
    let next = reopened.append(vec![idempotent(0, 6, 1)]).unwrap();
    assert_eq!(next.base_offset, 10);
}

#[tokio::test]
async fn dedupe_survives_a_restart_however_many_segments_other_writes_made_since() {
    let env = Env::in_memory().await;
    let writer = env.writer(test_config(), None).await.unwrap();
    let quiet = writer.append(vec![idempotent(0, 0, 2)]).unwrap();
    writer.flush().await.unwrap();
    // Group commit makes a segment per flush: the quiet producer's batch ends up far behind.
    for _ in 0..20 {
        let _ = writer.append(vec![batch(1, 8, 1_000, None)]).unwrap();
        writer.flush().await.unwrap();
    }
    drop(writer);

    let reopened = env.reopened_writer(test_config()).await;
    let retry = reopened.append(vec![idempotent(0, 0, 2)]).unwrap();
    assert!(
        retry.duplicate,
        "a retry of a durable batch is not stored twice"
    );
    assert_eq!(
        (retry.base_offset, retry.last_offset),
        (quiet.base_offset, quiet.last_offset)
    );
    assert!(matches!(
        reopened.append(vec![idempotent(0, 5, 1)]),
        Err(StorageError::EarlierBatchesInFlight { expected: 2, .. })
    ));
}

/// After a takeover, a producer's batch refused by the previous owner is resent while its next
/// one may arrive first: within the grace that gap is "retry" (librdkafka would bump its epoch
/// on an out-of-order answer and store records twice), never appended, and the batch is taken
/// once the missing one arrived. A producer that already appended through the new writer, an
/// old batch, and any gap once the grace is over are out of order, as in Kafka.
#[tokio::test]
async fn a_gap_right_after_a_takeover_is_retriable_until_the_grace_ends() {
    let env = Env::in_memory().await;
    let writer = env.writer(test_config(), None).await.unwrap();
    for seq in [0, 2, 4] {
        let _ = writer.append(vec![idempotent(0, seq, 2)]).unwrap();
        writer.flush().await.unwrap();
    }
    drop(writer);

    let taken_over = env.reopened_writer(test_config()).await;
    tokio::time::pause();
    let gap = |w: &streamhouse_storage::PartitionWriter, epoch, seq| {
        w.append(vec![idempotent(epoch, seq, 2)])
            .map(|a| a.base_offset)
    };
    assert!(matches!(
        gap(&taken_over, 0, 8),
        Err(StorageError::EarlierBatchesInFlight {
            expected: 6,
            found: 8,
            ..
        })
    ));
    // A bumped epoch must start at 0: the same answer.
    assert!(matches!(
        gap(&taken_over, 1, 3),
        Err(StorageError::EarlierBatchesInFlight { expected: 0, .. })
    ));
    // A producer the partition never saw, starting past 0.
    let stranger = || batch(1, 8, 1_000, Some((PID + 1, 0, 4)));
    assert!(matches!(
        taken_over.append(vec![stranger()]),
        Err(StorageError::EarlierBatchesInFlight { expected: 0, .. })
    ));
    assert_eq!(taken_over.next_offset(), 6, "nothing of the gaps appended");

    // The missing batch arrives, then the one that came early.
    assert_eq!(gap(&taken_over, 0, 6).unwrap(), 6);
    assert_eq!(gap(&taken_over, 0, 8).unwrap(), 8);
    // Having appended through this writer, the producer's next gap is out of order at once.
    assert!(matches!(
        gap(&taken_over, 0, 13),
        Err(StorageError::OutOfOrderSequence { expected: 10, .. })
    ));
    // Once the grace is over, any gap is.
    tokio::time::advance(streamhouse_storage::SEQUENCE_GAP_GRACE).await;
    assert!(matches!(
        taken_over.append(vec![stranger()]),
        Err(StorageError::OutOfOrderSequence { expected: 0, .. })
    ));
}

#[tokio::test]
async fn producer_state_below_the_log_start_is_dropped_on_open() {
    let env = Env::in_memory().await;
    let writer = env.writer(test_config(), None).await.unwrap();
    let _old = writer.append(vec![idempotent(0, 0, 2)]).unwrap();
    writer.flush().await.unwrap();
    let _ = writer.append(vec![batch(2, 8, 1_000, None)]).unwrap();
    writer.flush().await.unwrap();
    drop(writer);
    env.metadata()
        .truncate_before(crate::support::TOPIC, 0, 2, 0)
        .await
        .unwrap();

    // As in Kafka: a producer whose data is gone is unknown, so any sequence is accepted.
    let reopened = env.reopened_writer(test_config()).await;
    let after = reopened.append(vec![idempotent(0, 9, 1)]).unwrap();
    assert!(!after.duplicate);
    assert_eq!(after.base_offset, 4);
}

#[tokio::test]
async fn partitions_keep_producer_states_within_the_agents_budget() {
    use std::sync::Arc;

    use streamhouse_metadata::SqliteMetadataStore;
    use streamhouse_storage::{Budget, PartitionStorage, PartitionWriter, MIN_PRODUCERS_RETAINED};

    use crate::support::open_partitions_with_budget;

    let budget = Budget::new(40);
    let metadata = Arc::new(SqliteMetadataStore::in_memory().await.unwrap());
    let store = Arc::new(object_store::memory::InMemory::new());
    let parts = open_partitions_with_budget(metadata, store, "budgeted", 4, budget.clone()).await;
    let write = |w: &PartitionWriter, pid: i64, seq: i32| {
        w.append(vec![batch(1, 8, 1_000, Some((pid, 0, seq)))])
            .unwrap()
    };
    for pid in 0..100 {
        for w in &parts.writers {
            write(w, pid, 0);
            assert!(budget.used() <= 40, "{} at producer {pid}", budget.used());
        }
        if pid % 10 == 9 {
            for w in &parts.writers {
                w.flush().await.unwrap();
            }
        }
    }
    assert_eq!(budget.used(), 40);
    for w in &parts.writers {
        assert!(
            write(w, 99, 0).duplicate,
            "the newest producer is remembered"
        );
        // The oldest was forgotten: its next sequence is accepted without its history.
        assert!(!write(w, 0, 1).duplicate);
    }

    // Reopened under a smaller budget, the partitions load their newest producers only, never
    // fewer than the floor.
    let small = Budget::new(12);
    let reopen = |storage: &PartitionStorage| {
        let storage = PartitionStorage {
            producer_budget: small.clone(),
            ..storage.clone()
        };
        PartitionWriter::open(storage, test_config(), None)
    };
    let first = reopen(&parts.storages[0]).await.unwrap();
    assert_eq!(small.used(), 12);
    let second = reopen(&parts.storages[1]).await.unwrap();
    assert_eq!(small.used(), 12 + MIN_PRODUCERS_RETAINED);
    assert!(write(&second, 99, 0).duplicate);
    drop((first, second));
    assert_eq!(small.used(), 0);
    drop(parts);
    assert_eq!(budget.used(), 0, "closed writers give their share back");
}
