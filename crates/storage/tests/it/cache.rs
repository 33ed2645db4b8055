//! SegmentCache over an in-memory object store that counts (and can fail or delay) its GETs.
//! Tests waiting on the store's latency or the cache's retry backoff run on paused tokio time
//! (both are tokio sleeps; nothing here runs on another thread), so they take no real time.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use proptest::prelude::*;
use streamhouse_storage::testing::{FaultPlan, FaultyStore};
use streamhouse_storage::{SegmentCache, SegmentCacheConfig};

const KEY: &str = "topics/t/0/00000000000000000000-0.seg";
const BLOCK: u64 = 64;

fn object(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i * 31 % 251) as u8)
        .collect::<Vec<_>>()
        .into()
}

/// A store holding `data` at [`KEY`], counting GETs and failing them as planned.
async fn store_with(data: &Bytes) -> Arc<FaultyStore> {
    let store = FaultyStore::new(7);
    store
        .put(&Path::from(KEY), data.clone().into())
        .await
        .unwrap();
    store
}

fn cache(max_bytes: u64) -> SegmentCache {
    SegmentCache::new(SegmentCacheConfig {
        max_bytes,
        block_size: BLOCK,
        ..SegmentCacheConfig::default()
    })
}

async fn read(cache: &SegmentCache, store: &FaultyStore, len: usize, range: Range<u64>) -> Bytes {
    cache
        .read_range(store, KEY, len as u64, range)
        .await
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn reads_return_exactly_the_requested_bytes(
        len in 1usize..2000,
        ranges in prop::collection::vec((0u64..2100, 0u64..700), 1..12),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let data = object(len);
            let store = store_with(&data).await;
            let cache = cache(1 << 20);
            for (start, width) in ranges {
                let end = (start + width).min(len as u64);
                let start = start.min(end);
                let got = read(&cache, &store, len, start..end).await;
                prop_assert_eq!(got, data.slice(start as usize..end as usize));
            }
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn only_missing_blocks_are_fetched_with_adjacent_ones_coalesced() {
    let data = object(1000);
    let store = store_with(&data).await;
    let cache = cache(1 << 20);

    read(&cache, &store, 1000, 0..100).await; // blocks 0-1
    assert_eq!(store.gets().requests(), 1);
    read(&cache, &store, 1000, 130..140).await; // block 2
    read(&cache, &store, 1000, 260..270).await; // block 4
    assert_eq!(store.gets().requests(), 3);

    // Blocks 0-6: 3 and 5-6 are missing, two runs.
    assert_eq!(
        read(&cache, &store, 1000, 10..440).await,
        data.slice(10..440)
    );
    assert_eq!(store.gets().requests(), 5);
    let stats = cache.stats().await;
    assert_eq!(stats.get_requests, 5);
    assert_eq!(stats.bytes_fetched, 7 * BLOCK);
    assert_eq!(stats.misses, 7);
    assert_eq!(stats.hits, 4);

    read(&cache, &store, 1000, 0..448).await;
    assert_eq!(store.gets().requests(), 5, "everything cached");
}

#[tokio::test(start_paused = true)]
async fn concurrent_readers_of_a_block_share_one_get() {
    let data = object(1000);
    let store = store_with(&data).await;
    store.set_gets(FaultPlan {
        latency: Duration::from_millis(20),
        ..FaultPlan::default()
    });
    let cache = cache(1 << 20);

    let reads = join_all((0..10).map(|i| read(&cache, &store, 1000, i..i + 50))).await;
    for (i, got) in (0..).zip(reads) {
        assert_eq!(got, data.slice(i as usize..i as usize + 50));
    }
    assert_eq!(store.gets().requests(), 1);
}

#[tokio::test]
async fn reads_tell_written_through_bytes_from_bytes_read_from_the_store() {
    let data = object(1000);
    let store = store_with(&data).await;
    let cache = cache(1 << 20);
    cache.insert_object(KEY, data.clone()).await;
    let tagged = |range: Range<u64>| cache.read_range_tagged(&*store, KEY, 1000, range);
    assert!(tagged(0..1000).await.unwrap().written);
    // A block fetched from the store makes the range untrusted, even next to written ones.
    cache.invalidate_object(KEY, 1000).await;
    cache.insert_object(KEY, data.slice(..BLOCK as usize)).await;
    let read = tagged(0..2 * BLOCK).await.unwrap();
    assert_eq!(read.bytes, data.slice(..2 * BLOCK as usize));
    assert!(!read.written);
    assert!(tagged(0..BLOCK).await.unwrap().written);
}

#[tokio::test]
async fn written_objects_are_served_without_a_get() {
    let data = object(1000);
    let store = store_with(&data).await;
    let cache = cache(1 << 20);
    cache.insert_object(KEY, data.clone()).await;

    assert_eq!(read(&cache, &store, 1000, 0..1000).await, data);
    assert_eq!(
        read(&cache, &store, 1000, 999..1000).await,
        data.slice(999..)
    );
    assert_eq!(store.gets().requests(), 0);
    assert_eq!(cache.stats().await.misses, 0);
}

#[tokio::test]
async fn the_byte_bound_is_respected() {
    let max_bytes = 4096;
    let cache = cache(max_bytes);
    for n in 0..100 {
        cache
            .insert_object(&format!("objects/{n}"), object(1000))
            .await;
    }
    let stats = cache.stats().await;
    assert!(stats.cached_bytes <= max_bytes, "{stats:?}");
    assert!(stats.cached_bytes > 0);
}

#[tokio::test(start_paused = true)]
async fn transient_get_errors_are_retried() {
    let data = object(1000);
    let store = store_with(&data).await;
    store.set_gets(FaultPlan {
        fail_next: 2,
        ..FaultPlan::default()
    });
    let cache = cache(1 << 20);

    assert_eq!(read(&cache, &store, 1000, 0..10).await, data.slice(0..10));
    assert_eq!(store.gets().requests(), 3);
}

#[tokio::test(start_paused = true)]
async fn persistent_and_permanent_errors_fail_the_read() {
    let data = object(1000);
    let store = store_with(&data).await;
    let cache = cache(1 << 20);

    store.set_gets(FaultPlan {
        fail_next: 100,
        ..FaultPlan::default()
    });
    assert!(cache.read_range(&*store, KEY, 1000, 0..10).await.is_err());
    let after_transient = store.gets().requests();
    assert!(
        after_transient > 1 && after_transient < 10,
        "{after_transient} GETs"
    );

    store.set_gets(FaultPlan::default());
    let missing = cache
        .read_range(&*store, "no/such/object", 1000, 0..10)
        .await;
    assert!(missing.is_err());
    assert_eq!(
        store.gets().requests(),
        after_transient + 1,
        "not-found is not retried"
    );
}

#[tokio::test(start_paused = true)]
async fn prefetch_fills_the_cache_in_the_background() {
    let data = object(1000);
    let store = store_with(&data).await;
    let cache = cache(1 << 20);

    cache.prefetch(store.clone(), KEY, 1000, 0..1000);
    for _ in 0..200 {
        if cache.stats().await.bytes_fetched == 1000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(read(&cache, &store, 1000, 0..1000).await, data);
    assert_eq!(store.gets().requests(), 1);
}

#[tokio::test]
async fn invalidated_objects_are_fetched_again() {
    let data = object(1000);
    let store = store_with(&data).await;
    let cache = cache(1 << 20);
    cache.insert_object(KEY, data.clone()).await;

    cache.invalidate_object(KEY, 1000).await;
    assert_eq!(
        read(&cache, &store, 1000, 500..600).await,
        data.slice(500..600)
    );
    assert_eq!(store.gets().requests(), 1);
}

/// A full cache whose blocks were each read (as a tailing consumer reads every block once)
/// still admits freshly written objects: the tail is what readers ask for next, so it must
/// displace the older blocks, never be turned away by their read counts.
#[tokio::test]
async fn fresh_writes_displace_blocks_already_read() {
    let cache = cache(16 * (BLOCK + 128));
    let store = FaultyStore::new(7);
    for i in 0..64 {
        let key = format!("wal/{i:04}.obj");
        cache.insert_object(&key, object(BLOCK as usize)).await;
        // Read twice: a consumer, then another.
        for _ in 0..2 {
            let got = cache
                .read_range(store.as_ref(), &key, BLOCK, 0..BLOCK)
                .await;
            assert!(got.is_ok(), "object {i} was not cached when just written");
        }
    }
    assert_eq!(
        store.gets().requests(),
        0,
        "every fresh object was served from the cache"
    );
}

/// The parts read for `range` of `data`, checked against it.
async fn parts(
    cache: &SegmentCache,
    store: &FaultyStore,
    data: &Bytes,
    range: Range<u64>,
) -> Vec<Bytes> {
    let read = cache
        .read_range_parts(store, KEY, data.len() as u64, range.clone())
        .await
        .unwrap();
    assert_eq!(
        read.parts.concat(),
        data[range.start as usize..range.end as usize]
    );
    read.parts
}

/// Parts of a block much smaller than it are copies (a queued response keeps only its own
/// bytes alive, not the evicted block around them); larger parts share the block.
#[tokio::test]
async fn small_slices_do_not_pin_their_block() {
    let data = object(4 * BLOCK as usize);
    let store = store_with(&data).await;
    let cache = cache(1 << 20);
    // Two reads held at once: equal pointers mean both are views of the cached block.
    let shared = |range: Range<u64>| {
        let (cache, store, data) = (&cache, &store, &data);
        async move {
            let a = parts(cache, store, data, range.clone()).await;
            let b = parts(cache, store, data, range).await;
            a[0].as_ptr() == b[0].as_ptr()
        }
    };
    // 3 bytes of a 64-byte block (under 64 / 16): a copy on every read.
    assert!(!shared(BLOCK + 10..BLOCK + 13).await);
    // Half a block: the block's own bytes.
    assert!(shared(BLOCK..BLOCK + BLOCK / 2).await);
}

/// With `exact_shared_reads`, a read of a shared flush object that misses a block GETs exactly
/// the range asked for and caches nothing (not even by read-ahead), while a segment object and
/// a shared object's written-through blocks are served as before.
#[tokio::test]
async fn exact_shared_reads_get_only_the_range_of_a_shared_object() {
    const SHARED: &str = "wal/1-abc.obj";
    let data = object(1000);
    let store = store_with(&data).await;
    store
        .put(&Path::from(SHARED), data.clone().into())
        .await
        .unwrap();
    let cache = SegmentCache::new(SegmentCacheConfig {
        max_bytes: 1 << 20,
        block_size: BLOCK,
        exact_shared_reads: true,
        ..SegmentCacheConfig::default()
    });

    let got = cache.read_range(&*store, SHARED, 1000, 10..150).await;
    assert_eq!(got.unwrap(), data.slice(10..150));
    cache.prefetch(store.clone(), SHARED, 1000, 0..1000);
    assert_eq!(
        cache
            .read_range(&*store, SHARED, 1000, 10..150)
            .await
            .unwrap(),
        data.slice(10..150)
    );
    let stats = cache.stats().await;
    assert_eq!((stats.get_requests, stats.bytes_fetched), (2, 280));
    assert_eq!((stats.misses, stats.cached_bytes), (6, 0));

    // A segment object is still read in whole blocks and cached.
    read(&cache, &store, 1000, 10..150).await;
    read(&cache, &store, 1000, 10..150).await;
    assert_eq!(cache.stats().await.get_requests, 3);

    // A shared object written through is read from memory.
    cache.insert_object("wal/2-def.obj", data.clone()).await;
    let got = cache
        .read_range(&*store, "wal/2-def.obj", 1000, 0..1000)
        .await;
    assert_eq!(got.unwrap(), data);
    assert_eq!(cache.stats().await.get_requests, 3);
}
