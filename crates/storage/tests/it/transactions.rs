//! Transactions through the PartitionWriter: KIP-890 verification, markers, the last stable
//! offset and aborted ranges, across a restart.

use bytes::Bytes;
use kafka_protocol::records::{Record, TimestampType};
use streamhouse_metadata::TxnMarker;
use streamhouse_segment::RecordBatch;
use streamhouse_storage::{AppendOptions, PartitionWriter, StorageError};

use crate::support::{encode, test_config, Env, TOPIC};

fn txn_batch(pid: i64, epoch: i16, seq: i32, records: usize) -> RecordBatch {
    let records: Vec<Record> = (0..records)
        .map(|i| Record {
            transactional: true,
            control: false,
            partition_leader_epoch: 0,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: seq + i as i32,
            timestamp: 1_000,
            key: None,
            value: Some(Bytes::from_static(b"v")),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    encode(&records)
}

fn marker(pid: i64, epoch: i16, commit: bool) -> TxnMarker {
    TxnMarker {
        topic: TOPIC.into(),
        partition: 0,
        producer_id: pid,
        producer_epoch: epoch,
        commit,
        coordinator_epoch: 1,
        transactional_id: "t".into(),
    }
}

/// Appends a transactional batch the way Produce does: verified first when it opens the
/// producer's transaction here.
fn append_verified(writer: &PartitionWriter, batch: RecordBatch) -> i64 {
    let batches = vec![batch];
    let options = AppendOptions {
        txn_verified: writer.txn_verification(&batches),
        ..Default::default()
    };
    writer.append_with(batches, options).unwrap().base_offset
}

#[tokio::test]
async fn an_unverified_transactional_write_is_refused() {
    let env = Env::in_memory().await;
    let writer = env.writer(test_config(), None).await.unwrap();
    assert!(matches!(
        writer.append(vec![txn_batch(7, 0, 0, 1)]),
        Err(StorageError::TxnNotVerified { producer_id: 7, .. })
    ));
    // Verified before the producer's marker, appended after it: a late write of the finished
    // transaction, refused.
    let stale = writer.txn_verification(&[txn_batch(7, 0, 0, 1)]);
    append_verified(&writer, txn_batch(7, 0, 0, 1));
    writer.append_marker(&marker(7, 0, true)).unwrap();
    let late = AppendOptions {
        txn_verified: stale,
        ..Default::default()
    };
    assert!(writer
        .append_with(vec![txn_batch(7, 0, 1, 1)], late)
        .is_err());
    assert_eq!(writer.next_offset(), 2);
}

#[tokio::test]
async fn the_last_stable_offset_and_aborted_ranges_follow_markers_and_survive_a_restart() {
    let env = Env::in_memory().await;
    let writer = env.writer(test_config(), None).await.unwrap();
    append_verified(&writer, txn_batch(1, 0, 0, 2)); // 0..=1, aborted below
    append_verified(&writer, txn_batch(2, 0, 0, 2)); // 2..=3, committed below
    let open = append_verified(&writer, txn_batch(3, 0, 0, 1)); // 4, left open
    writer.append_marker(&marker(1, 0, false)).unwrap(); // 5
    writer.append_marker(&marker(2, 0, true)).unwrap(); // 6
    writer.flush().await.unwrap();
    assert_eq!(writer.high_watermark(), 7);
    assert_eq!(writer.last_stable_offset(), open);
    let aborted = writer.aborted_txns(0, 10);
    assert_eq!(aborted.len(), 1);
    assert_eq!(
        (
            aborted[0].producer_id,
            aborted[0].first_offset,
            aborted[0].last_offset
        ),
        (1, 0, 5)
    );
    assert!(
        writer.aborted_txns(6, 10).is_empty(),
        "ended before the range"
    );

    // A new owner rebuilds both from the metadata store.
    drop(writer);
    let reopened = env.reopened_writer(test_config()).await;
    assert_eq!(reopened.last_stable_offset(), open);
    assert_eq!(reopened.aborted_txns(0, 10), aborted);
    // The open transaction continues without another verification, and its abort moves the
    // last stable offset to the high watermark.
    reopened.append(vec![txn_batch(3, 0, 1, 1)]).unwrap();
    reopened.append_marker(&marker(3, 1, false)).unwrap();
    reopened.flush().await.unwrap();
    assert_eq!(reopened.last_stable_offset(), reopened.high_watermark());
    assert_eq!(reopened.aborted_txns(6, 10)[0].first_offset, open);
    // The fencing marker bumped the epoch: the old epoch is refused.
    assert!(matches!(
        reopened.append(vec![txn_batch(3, 0, 2, 1)]),
        Err(StorageError::InvalidProducerEpoch { .. })
    ));
}
