//! PartitionReader: bounds, sizes, timestamps, corruption.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use streamhouse_metadata::prelude::*;
use streamhouse_segment::{RecordBatch, HEADER_LEN};
use streamhouse_storage::{
    Corruption, PartitionReader, PartitionWriter, ReaderConfig, SegmentCache, SegmentCacheConfig,
    SegmentIndex, SegmentIndexConfig, StorageError,
};

use crate::support::{batch, object, overwrite, plain, test_config, Env};

/// Writes `segments` segments of `batches` batches of 5 records each; batch `i` (overall) has
/// timestamps from `1000 * (i + 1)`.
async fn populated(env: &Env, segments: usize, batches: usize) -> PartitionWriter {
    let writer = env.writer(test_config(), None).await.unwrap();
    let mut n = 0;
    for _ in 0..segments {
        for _ in 0..batches {
            n += 1;
            let _ = writer.append(vec![batch(5, 32, 1000 * n, None)]).unwrap();
        }
        writer.flush().await.unwrap();
    }
    writer
}

#[tokio::test]
async fn offsets_outside_the_log_are_out_of_range_and_the_high_watermark_reads_empty() {
    let env = Env::in_memory().await;
    let writer = populated(&env, 1, 2).await;
    for reader in [env.cold_reader(), env.local_reader(&writer)] {
        assert!(matches!(
            reader.read(11, 1024).await,
            Err(StorageError::OffsetOutOfRange {
                offset: 11,
                log_start: 0,
                high_watermark: 10
            })
        ));
        assert!(matches!(
            reader.read(-1, 1024).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        let at_end = reader.read(10, 1024).await.unwrap();
        assert!(at_end.batches.is_empty());
        assert_eq!((at_end.next_offset, at_end.high_watermark), (10, 10));
    }
}

#[tokio::test]
async fn a_batch_larger_than_max_bytes_is_still_returned_whole() {
    let env = Env::in_memory().await;
    let writer = env.writer(test_config(), None).await.unwrap();
    let big = batch(20, 500, 1_000, None);
    let _ = writer.append(vec![big.clone(), plain(1)]).unwrap();
    writer.flush().await.unwrap();
    let read = env.cold_reader().read(0, 1).await.unwrap();
    assert_eq!(read.batches.len(), 1);
    assert_eq!(read.batches[0].bytes()[8..], big.bytes()[8..]);
    assert_eq!(read.next_offset, 20);
}

#[tokio::test]
async fn a_read_from_inside_a_batch_returns_that_batch_whole_and_respects_max_bytes() {
    let env = Env::in_memory().await;
    let _writer = populated(&env, 2, 4).await;
    let reader = env.cold_reader();
    let read = reader.read(7, 1).await.unwrap();
    assert_eq!(read.batches.len(), 1);
    assert_eq!((read.batches[0].base_offset(), read.next_offset), (5, 10));

    let one_batch = read.batches[0].len();
    let read = reader.read(7, 3 * one_batch).await.unwrap();
    assert_eq!(read.batches.len(), 3);
    assert!(read.size_bytes() <= 3 * one_batch);
    // Across the segment boundary at offset 20.
    let read = reader.read(15, 1 << 20).await.unwrap();
    let bases: Vec<i64> = read.batches.iter().map(RecordBatch::base_offset).collect();
    assert_eq!(bases, vec![15, 20, 25, 30, 35]);
    assert_eq!(read.next_offset, 40);
}

#[tokio::test]
async fn a_caller_supplied_high_watermark_bounds_the_read() {
    let env = Env::in_memory().await;
    let _writer = populated(&env, 1, 4).await;
    let read = env
        .cold_reader()
        .read_with_high_watermark(0, 1 << 20, 10)
        .await
        .unwrap();
    assert_eq!(read.batches.len(), 2);
    assert_eq!((read.next_offset, read.high_watermark), (10, 10));
}

#[tokio::test]
async fn a_reader_without_the_writer_sees_new_commits_within_the_refresh_interval() {
    let env = Env::in_memory().await;
    let writer = populated(&env, 1, 1).await;
    let reader = env.cold_reader().with_config(config_with_refresh(50));
    assert_eq!(reader.read(0, 1024).await.unwrap().high_watermark, 5);
    let _ = writer.append(vec![plain(2)]).unwrap();
    writer.flush().await.unwrap();
    // Reading past the cached high watermark re-checks the metadata store at once.
    let read = reader.read(6, 1024).await.unwrap();
    assert_eq!((read.batches[0].base_offset(), read.next_offset), (5, 7));

    let reader = env.cold_reader().with_config(config_with_refresh(10_000));
    assert_eq!(reader.read(0, 1024).await.unwrap().high_watermark, 7);
    let _ = writer.append(vec![plain(1)]).unwrap();
    writer.flush().await.unwrap();
    // At the cached high watermark the reader answers from memory until the value expires. The
    // bounds age on tokio's clock, paused here so that they age as advanced (the few ms of real
    // time since they were read stay far inside the second of margin).
    tokio::time::pause();
    assert!(reader.read(7, 1024).await.unwrap().batches.is_empty());
    tokio::time::advance(Duration::from_secs(9)).await;
    assert!(reader.read(7, 1024).await.unwrap().batches.is_empty());
    tokio::time::advance(Duration::from_secs(1)).await;
    // SQLite answers on its own thread, which a paused clock would race (sqlx's pool timeout
    // fires at once): the re-read runs on the real clock again.
    tokio::time::resume();
    let read = reader.read(7, 1024).await.unwrap();
    assert_eq!((read.batches.len(), read.high_watermark), (1, 8));
}

fn config_with_refresh(ms: u64) -> ReaderConfig {
    ReaderConfig {
        bounds_refresh_interval: Duration::from_millis(ms),
        ..ReaderConfig::default()
    }
}

#[tokio::test]
async fn offset_for_timestamp_finds_the_first_batch_at_or_after_it() {
    let env = Env::in_memory().await;
    let _writer = populated(&env, 3, 3).await;
    let reader = env.cold_reader();
    // Batch i (1-based) has timestamps 1000*i ..= 1000*i + 4.
    assert_eq!(
        reader.offset_for_timestamp(0).await.unwrap(),
        Some((0, 1004))
    );
    assert_eq!(
        reader.offset_for_timestamp(1004).await.unwrap(),
        Some((0, 1004))
    );
    assert_eq!(
        reader.offset_for_timestamp(1005).await.unwrap(),
        Some((5, 2004))
    );
    assert_eq!(
        reader.offset_for_timestamp(4000).await.unwrap(),
        Some((15, 4004))
    );
    assert_eq!(
        reader.offset_for_timestamp(9004).await.unwrap(),
        Some((40, 9004))
    );
    assert_eq!(reader.offset_for_timestamp(9005).await.unwrap(), None);
}

/// Every record of the partition read from offset 0 by a fresh reader.
async fn read_all(env: &Env) -> Result<Vec<Bytes>, StorageError> {
    let reader = env.cold_reader();
    let mut out = Vec::new();
    let mut next = 0;
    loop {
        let read = reader.read(next, 1 << 20).await?;
        if read.batches.is_empty() {
            return Ok(out);
        }
        out.extend(read.batches.iter().map(|b| b.bytes().clone()));
        next = read.next_offset;
    }
}

#[tokio::test]
async fn every_flipped_byte_is_reported_as_corruption_never_returned_as_data() {
    let env = Env::in_memory().await;
    let writer = env.writer(test_config(), None).await.unwrap();
    let _ = writer
        .append(vec![
            batch(2, 4, 1_000, None),
            batch(1, 4, 2_000, None),
            plain(2),
        ])
        .unwrap();
    let info = writer.flush().await.unwrap().unwrap();
    let good = object(&*env.store, &info.object_key).await;
    let expected = read_all(&env).await.unwrap();

    for pos in 0..good.len() {
        let mut bad = BytesMut::from(&good[..]);
        bad[pos] ^= 0x20;
        overwrite(&*env.store, &info.object_key, bad.freeze()).await;
        match read_all(&env).await {
            Err(StorageError::Corrupt { key, range, source }) => {
                assert_eq!(key, info.object_key);
                assert!(
                    range.start <= range.end && range.end <= good.len() as u64,
                    "byte {pos}: range {range:?} of {}: {source}",
                    good.len()
                );
            }
            Err(other) => panic!("byte {pos}: unexpected error {other}"),
            // The segment header is not read on the fetch path (the footer repeats what it
            // holds), nor is the shared object's index after the segment (the metadata holds
            // the segment's range), so a flip there may go unnoticed but must not change the
            // data.
            Ok(data) => {
                let start = info.object_offset as usize;
                let end = start + info.size_bytes as usize;
                let unread = pos < start + HEADER_LEN || pos >= end;
                assert!(unread, "flip at byte {pos} was not detected");
                assert_eq!(data, expected);
            }
        }
    }
}

#[tokio::test]
async fn a_truncated_object_is_reported_as_corruption() {
    let env = Env::in_memory().await;
    let writer = populated(&env, 1, 3).await;
    let info = &env.metadata.list_segments("orders", 0, 0).await.unwrap()[0];
    let good = object(&*env.store, &info.object_key).await;
    for len in [0, 10, good.len() / 2, good.len() - 1] {
        overwrite(&*env.store, &info.object_key, good.slice(..len)).await;
        match read_all(&env).await {
            Err(StorageError::Corrupt { key, source, .. }) => {
                assert_eq!(key, info.object_key);
                assert!(matches!(source, Corruption::Size { actual, .. } if actual == len as u64));
            }
            other => panic!("truncated to {len}: {other:?}"),
        }
    }
    drop(writer);
}

#[tokio::test]
async fn a_sequential_reader_prefetches_the_next_segment() {
    let env = Env::in_memory().await;
    let _writer = populated(&env, 2, 4).await;
    let cache = Arc::new(SegmentCache::new(SegmentCacheConfig {
        max_bytes: 1 << 20,
        block_size: 256,
        ..SegmentCacheConfig::default()
    }));
    let index = SegmentIndex::new("orders", 0, env.metadata(), SegmentIndexConfig::default());
    let reader = PartitionReader::new(env.storage_with(Arc::new(index), cache.clone()));
    // The last batch of the first segment (offsets 0..20) is in its last quarter.
    let last_of_first = reader.read(15, 1).await.unwrap();
    assert_eq!(last_of_first.next_offset, 20);
    // Give the background prefetch a moment; then the next segment needs no GET.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = cache.stats().await.get_requests;
    let next = reader.read(20, 1 << 20).await.unwrap();
    assert_eq!(next.next_offset, 40);
    assert_eq!(cache.stats().await.get_requests, before);
}
