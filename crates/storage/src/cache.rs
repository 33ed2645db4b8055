//! Bounded in-memory cache of segment bytes, in fixed-size aligned blocks.
//!
//! Segment objects are immutable, so a block `(object key, index)` never changes once cached.
//! Reads fetch only the blocks they lack, adjacent missing blocks in one ranged GET; concurrent
//! readers of a block share one fetch. The writer fills the cache with what it just uploaded
//! (write-through), so tailing consumers on the same agent never GET at all.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::{try_join_all, FutureExt, Shared};
use moka::future::Cache;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use streamhouse_segment::SegmentFooter;

use crate::error::{Result, StorageError};
use crate::layout::is_shared_object;

/// GET attempts for one run of blocks before a transient error is returned.
const GET_ATTEMPTS: u32 = 4;
/// Backoff before the second attempt; doubled for each further one, plus up to 50 % jitter.
const GET_BACKOFF: Duration = Duration::from_millis(25);
/// Bytes charged per cached block beyond its data (key, entry and moka bookkeeping).
const BLOCK_OVERHEAD: u32 = 128;
/// Slices of a block shorter than a block / `PIN_RATIO` are handed out as copies
/// ([`SegmentCache::read_range_parts`]).
const PIN_RATIO: u64 = 16;

/// Settings of a [`SegmentCache`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentCacheConfig {
    /// Upper bound on cached bytes (block data plus per-block overhead).
    pub max_bytes: u64,
    /// Size of the aligned blocks objects are cached in.
    pub block_size: u64,
    /// Upper bound on the memory of verified segment footers, shared by every partition of the
    /// agent (a per-partition bound would let memory grow with the partition count).
    pub footer_max_bytes: u64,
    /// A read of a shared flush object (`wal/`) that misses a block reads exactly the range
    /// asked for, caches nothing and starts no read-ahead. For a store whose reads are cheap
    /// and cached by the OS (the local filesystem): a flush object holds batches of a few
    /// partitions each (producers fill one partition's batch at a time), consumers catching
    /// up read those partitions far apart in time, and whole blocks were evicted before the
    /// neighbouring batches in them were read, so each block was read about three times
    /// (BENCHMARKS.md). On S3 each read is a billed GET, so whole blocks stay the rule there.
    pub exact_shared_reads: bool,
}

impl Default for SegmentCacheConfig {
    fn default() -> Self {
        Self {
            max_bytes: 256 * 1024 * 1024,
            block_size: 1024 * 1024,
            footer_max_bytes: 32 * 1024 * 1024,
            exact_shared_reads: false,
        }
    }
}

/// Counters of a [`SegmentCache`], cumulative since it was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SegmentCacheStats {
    /// Blocks found in the cache.
    pub hits: u64,
    /// Blocks not found in the cache (fetched, or awaited from another reader's fetch).
    pub misses: u64,
    /// Ranged GET requests issued.
    pub get_requests: u64,
    /// Bytes received from the object store.
    pub bytes_fetched: u64,
    /// Bytes currently charged against `max_bytes`.
    pub cached_bytes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    get_requests: AtomicU64,
    bytes_fetched: AtomicU64,
}

type BlockKey = (Arc<str>, u64);

/// A cached block and where it came from.
#[derive(Clone)]
struct Block {
    bytes: Bytes,
    /// Written through by this agent's writer: bytes it validated when producers sent them
    /// (see [`CachedRange::written`]), not read back from the store.
    written: bool,
}

/// Bytes of an object read through the cache.
#[derive(Debug, Clone)]
pub struct CachedRange {
    /// The bytes asked for.
    pub bytes: Bytes,
    /// Whether every block they came from was written through by this agent rather than read
    /// from the object store: produced batches were validated (CRCs included) before they were
    /// appended, so a reader need not recompute their CRCs; bytes from the store are checked.
    pub written: bool,
}

/// Bytes of an object read through the cache, as the slices of the blocks holding them.
#[derive(Debug, Clone)]
pub struct CachedParts {
    /// Consecutive slices that together are the bytes asked for (none for an empty range).
    pub parts: Vec<Bytes>,
    /// As [`CachedRange::written`].
    pub written: bool,
}

impl From<CachedParts> for CachedRange {
    /// The parts in one buffer (copied when there are several).
    fn from(parts: CachedParts) -> Self {
        CachedRange {
            bytes: concat(&parts.parts),
            written: parts.written,
        }
    }
}

/// A segment: its object key and its position in the object.
pub(crate) type SegmentKey = (Arc<str>, u64);

/// Bytes of a run of adjacent blocks, fetched once and shared by every block's loader.
type RunFetch<'a> = Shared<futures::future::BoxFuture<'a, Result<Bytes, Arc<object_store::Error>>>>;

/// Bounded cache of segment object bytes. Cloning is cheap and shares the cache.
#[derive(Clone)]
pub struct SegmentCache {
    blocks: Cache<BlockKey, Block>,
    /// Verified footers by segment, for every partition's reader: created once per agent, as
    /// a cache costs tens of kilobytes before it holds anything.
    footers: moka::sync::Cache<SegmentKey, Arc<SegmentFooter>>,
    block_size: u64,
    /// [`SegmentCacheConfig::exact_shared_reads`].
    exact_shared_reads: bool,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for SegmentCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentCache")
            .field("block_size", &self.block_size)
            .field("blocks", &self.blocks.entry_count())
            .field("weighted_size", &self.blocks.weighted_size())
            .finish()
    }
}

impl SegmentCache {
    /// An empty cache.
    pub fn new(config: SegmentCacheConfig) -> Self {
        let blocks = Cache::builder()
            // LRU, not moka's default TinyLFU: its admission turns away a new block whose
            // access count is below its victims', so once full the cache refused the freshly
            // written tail (the blocks tailing readers ask for next) in favour of blocks
            // already read, and tailing reads became GETs.
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .max_capacity(config.max_bytes)
            .weigher(|_key: &BlockKey, block: &Block| {
                u32::try_from(block.bytes.len())
                    .unwrap_or(u32::MAX)
                    .saturating_add(BLOCK_OVERHEAD)
            })
            .build();
        Self {
            blocks,
            footers: footer_cache(config.footer_max_bytes),
            block_size: config.block_size.max(1),
            exact_shared_reads: config.exact_shared_reads,
            counters: Arc::default(),
        }
    }

    /// Exactly the bytes `range` of object `key` (whose total length is `object_len`; the range
    /// is clipped to it), fetching only the blocks not cached.
    pub async fn read_range(
        &self,
        store: &dyn ObjectStore,
        key: &str,
        object_len: u64,
        range: Range<u64>,
    ) -> Result<Bytes> {
        Ok(self
            .read_range_tagged(store, key, object_len, range)
            .await?
            .bytes)
    }

    /// [`Self::read_range`], telling whether the bytes were all written through by this agent.
    pub async fn read_range_tagged(
        &self,
        store: &dyn ObjectStore,
        key: &str,
        object_len: u64,
        range: Range<u64>,
    ) -> Result<CachedRange> {
        Ok(self
            .read_range_parts(store, key, object_len, range)
            .await?
            .into())
    }

    /// [`Self::read_range_tagged`] as the consecutive slices of the cached blocks holding the
    /// range, uncopied: for readers that can take bytes in pieces.
    pub async fn read_range_parts(
        &self,
        store: &dyn ObjectStore,
        key: &str,
        object_len: u64,
        range: Range<u64>,
    ) -> Result<CachedParts> {
        let range = clip(range, object_len);
        if range.is_empty() {
            return Ok(CachedParts {
                parts: Vec::new(),
                written: true,
            });
        }
        if self.reads_exactly(key) {
            if let Some(bytes) = self.exact_if_missing(store, key, &range).await? {
                return Ok(CachedParts {
                    parts: vec![bytes],
                    written: false,
                });
            }
        }
        let (first, blocks) = self.blocks_of(store, key, object_len, &range).await?;
        let parts = self.slices(&blocks, first, range);
        Ok(CachedParts {
            written: blocks.iter().all(|b| b.written),
            parts: parts.into_iter().map(|part| self.unpinned(part)).collect(),
        })
    }

    /// Whether misses in object `key` are read exactly ([`SegmentCacheConfig::exact_shared_reads`]).
    fn reads_exactly(&self, key: &str) -> bool {
        self.exact_shared_reads && is_shared_object(key)
    }

    /// `range` (not empty, within the object) read from the store as asked, if any block of it
    /// is not cached; `None` when every block is (the tail written through: read from memory).
    async fn exact_if_missing(
        &self,
        store: &dyn ObjectStore,
        key: &str,
        range: &Range<u64>,
    ) -> Result<Option<Bytes>> {
        let object: Arc<str> = Arc::from(key);
        let indexes = self.block_indexes(range);
        let blocks = indexes.end - indexes.start;
        let missing = indexes
            .filter(|&index| !self.blocks.contains_key(&(object.clone(), index)))
            .count() as u64;
        if missing == 0 {
            return Ok(None);
        }
        self.counters
            .hits
            .fetch_add(blocks - missing, Ordering::Relaxed);
        self.counters.misses.fetch_add(missing, Ordering::Relaxed);
        let bytes = self.fetch_with_retry(store, key, range.clone()).await;
        bytes.map(Some).map_err(|error| shared_error(key, error))
    }

    /// A slice much smaller than a block, copied out of it: whoever keeps the slice (a Fetch
    /// response queued for a client that reads slowly) then keeps the few bytes it asked for,
    /// not the whole block after the cache has evicted it. So a reader holds at most
    /// [`PIN_RATIO`] times what it read; a copy costs at most a block / [`PIN_RATIO`].
    fn unpinned(&self, part: Bytes) -> Bytes {
        match (part.len() as u64) < self.block_size / PIN_RATIO {
            true => Bytes::copy_from_slice(&part),
            false => part,
        }
    }

    /// The blocks holding `range` (not empty, within the object), fetching those not cached;
    /// with the index of the first.
    async fn blocks_of(
        &self,
        store: &dyn ObjectStore,
        key: &str,
        object_len: u64,
        range: &Range<u64>,
    ) -> Result<(u64, Vec<Block>)> {
        let object: Arc<str> = Arc::from(key);
        let indexes = self.block_indexes(range);
        let mut blocks = self.cached_blocks(&object, indexes.clone()).await;
        let missing = blocks.iter().filter(|b| b.is_none()).count() as u64;
        self.counters
            .hits
            .fetch_add(blocks.len() as u64 - missing, Ordering::Relaxed);
        self.counters.misses.fetch_add(missing, Ordering::Relaxed);
        if missing > 0 {
            self.load_missing(store, &object, object_len, indexes.start, &mut blocks)
                .await?;
        }
        Ok((indexes.start, blocks.into_iter().flatten().collect()))
    }

    /// `range` of object `key` (of `object_len` bytes) if every block of it is cached, as the
    /// consecutive slices of those blocks (uncopied: a caller that needs a piece contiguous
    /// copies only that piece); never fetches, and counts neither hits nor misses (for
    /// background work that would otherwise GET it, not for readers).
    pub async fn cached_parts(
        &self,
        key: &str,
        object_len: u64,
        range: Range<u64>,
    ) -> Option<Vec<Bytes>> {
        let range = clip(range, object_len);
        if range.is_empty() {
            return Some(Vec::new());
        }
        let indexes = self.block_indexes(&range);
        let blocks = self.cached_blocks(&Arc::from(key), indexes.clone()).await;
        let blocks: Vec<Block> = blocks.into_iter().collect::<Option<_>>()?;
        Some(self.slices(&blocks, indexes.start, range))
    }

    /// Indexes of the blocks holding `range`.
    fn block_indexes(&self, range: &Range<u64>) -> Range<u64> {
        range.start / self.block_size..range.end.div_ceil(self.block_size)
    }

    /// The cached blocks `indexes` of `object`, `None` where not cached.
    async fn cached_blocks(&self, object: &Arc<str>, indexes: Range<u64>) -> Vec<Option<Block>> {
        let mut blocks = Vec::with_capacity((indexes.end - indexes.start) as usize);
        for index in indexes {
            blocks.push(self.blocks.get(&(object.clone(), index)).await);
        }
        blocks
    }

    /// The verified footer of segment `key`, if cached.
    pub(crate) fn footer(&self, key: &SegmentKey) -> Option<Arc<SegmentFooter>> {
        self.footers.get(key)
    }

    /// Caches the verified footer of segment `key`.
    pub(crate) fn insert_footer(&self, key: SegmentKey, footer: Arc<SegmentFooter>) {
        self.footers.insert(key, footer);
    }

    /// Caches a freshly written object (write-through), so reads of it need no GET.
    pub async fn insert_object(&self, key: &str, bytes: Bytes) {
        let object: Arc<str> = Arc::from(key);
        let block_size = self.block_size as usize;
        for (index, start) in (0..).zip((0..bytes.len()).step_by(block_size)) {
            let block = cut_block(&bytes, start, block_size);
            self.insert_block((object.clone(), index), block).await;
        }
    }

    /// Caches a freshly written object given as its consecutive parts (write-through), copying
    /// each block out once.
    pub async fn insert_parts(&self, key: &str, parts: &[Bytes]) {
        if let [whole] = parts {
            return self.insert_object(key, whole.clone()).await;
        }
        let object: Arc<str> = Arc::from(key);
        let block_size = self.block_size as usize;
        // Each block is allocated at its exact length (the last one is usually short): the
        // weigher counts lengths, so spare capacity would be memory the bound does not see.
        let mut left: usize = parts.iter().map(Bytes::len).sum();
        let mut next_block = || {
            let len = left.min(block_size);
            left -= len;
            BytesMut::with_capacity(len)
        };
        let mut block = next_block();
        let mut index = 0;
        for part in parts {
            let mut rest = &part[..];
            while !rest.is_empty() {
                let take = rest.len().min(block_size - block.len());
                block.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if block.len() == block_size {
                    let full = std::mem::replace(&mut block, next_block());
                    self.insert_block((object.clone(), index), full.freeze())
                        .await;
                    index += 1;
                }
            }
        }
        if !block.is_empty() {
            self.insert_block((object, index), block.freeze()).await;
        }
    }

    /// Inserts a written-through block and applies the evictions it calls for at once. The
    /// cache otherwise evicts lazily, many writes later: while a flood writes objects larger
    /// than the cache, it would hold several times its capacity.
    async fn insert_block(&self, key: BlockKey, bytes: Bytes) {
        let block = Block {
            bytes,
            written: true,
        };
        self.blocks.insert(key, block).await;
        self.blocks.run_pending_tasks().await;
    }

    /// Starts filling `range` of `key` in the background (read-ahead). Must be called within a
    /// Tokio runtime. Failures are only logged: a later read retries them.
    pub fn prefetch(
        &self,
        store: Arc<dyn ObjectStore>,
        key: &str,
        object_len: u64,
        range: Range<u64>,
    ) {
        let cache = self.clone();
        let key = key.to_owned();
        let range = clip(range, object_len);
        if range.is_empty() {
            return;
        }
        if self.reads_exactly(&key) {
            return; // nothing read ahead would be kept
        }
        // Only the blocks: assembling the range would copy bytes nobody reads now.
        tokio::spawn(async move {
            if let Err(error) = cache.blocks_of(&*store, &key, object_len, &range).await {
                tracing::debug!(%key, %error, "segment cache read-ahead failed");
            }
        });
    }

    /// Drops every cached block of `key` (an object of `object_len` bytes), e.g. once retention
    /// deleted it.
    pub async fn invalidate_object(&self, key: &str, object_len: u64) {
        let object: Arc<str> = Arc::from(key);
        for index in 0..object_len.div_ceil(self.block_size) {
            self.blocks.invalidate(&(object.clone(), index)).await;
        }
    }

    /// Current counters. Runs the cache's pending maintenance first so `cached_bytes` is exact.
    pub async fn stats(&self) -> SegmentCacheStats {
        self.blocks.run_pending_tasks().await;
        SegmentCacheStats {
            hits: self.counters.hits.load(Ordering::Relaxed),
            misses: self.counters.misses.load(Ordering::Relaxed),
            get_requests: self.counters.get_requests.load(Ordering::Relaxed),
            bytes_fetched: self.counters.bytes_fetched.load(Ordering::Relaxed),
            cached_bytes: self.blocks.weighted_size(),
        }
    }

    /// Fills the `None` slots of `blocks` (block indexes `first..`), one GET per run of adjacent
    /// missing blocks. Each block goes through the cache's own loader, so a block another reader
    /// is already fetching is awaited rather than fetched again; a run's GET is issued only if
    /// at least one of its blocks is not in flight elsewhere.
    async fn load_missing(
        &self,
        store: &dyn ObjectStore,
        object: &Arc<str>,
        object_len: u64,
        first: u64,
        blocks: &mut [Option<Block>],
    ) -> Result<()> {
        let mut loads = Vec::new();
        for run in missing_runs(blocks, first) {
            let bytes = run.start * self.block_size..(run.end * self.block_size).min(object_len);
            let fetch: RunFetch<'_> = self.fetch_with_retry(store, object, bytes).boxed().shared();
            for index in run.clone() {
                let start = ((index - run.start) * self.block_size) as usize;
                let fetch = fetch.clone();
                let load = async move {
                    let run_bytes = fetch.await?;
                    Ok(Block {
                        bytes: cut_block(&run_bytes, start, self.block_size as usize),
                        written: false,
                    })
                };
                loads.push(async move {
                    let key = (object.clone(), index);
                    match self.blocks.try_get_with(key, load).await {
                        Ok(block) => Ok((index, block)),
                        Err(error) => Err(shared_error(object, Arc::unwrap_or_clone(error))),
                    }
                });
            }
        }
        for (index, block) in try_join_all(loads).await? {
            blocks[(index - first) as usize] = Some(block);
        }
        Ok(())
    }

    /// One ranged GET, retried with exponential backoff and jitter while the error looks
    /// transient. A short response is an error: the caller's `object_len` came from metadata.
    async fn fetch_with_retry(
        &self,
        store: &dyn ObjectStore,
        object: &str,
        range: Range<u64>,
    ) -> Result<Bytes, Arc<object_store::Error>> {
        let path = Path::from(object);
        let mut attempt = 1;
        loop {
            self.counters.get_requests.fetch_add(1, Ordering::Relaxed);
            match store.get_range(&path, range.clone()).await {
                Ok(bytes) => {
                    self.counters
                        .bytes_fetched
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    return check_length(object, &range, bytes).map_err(Arc::new);
                }
                Err(error) if attempt < GET_ATTEMPTS && is_transient(&error) => {
                    tracing::debug!(key = object, %error, attempt, "retrying segment GET");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(error) => return Err(Arc::new(error)),
            }
        }
    }

    /// The slices of consecutive `blocks` (the first is block `first`) that make up `range`.
    fn slices(&self, blocks: &[Block], first: u64, range: Range<u64>) -> Vec<Bytes> {
        let pieces = blocks.iter().map(|block| &block.bytes);
        slices_of(pieces, first * self.block_size, range)
    }
}

/// The slices of consecutive `pieces` (the first starting at offset `start`) that make up
/// `range`, uncopied.
pub(crate) fn slices_of<'a>(
    pieces: impl IntoIterator<Item = &'a Bytes>,
    start: u64,
    range: Range<u64>,
) -> Vec<Bytes> {
    let mut at = start;
    pieces
        .into_iter()
        .filter_map(|bytes| {
            let (start, end) = (at, at + bytes.len() as u64);
            at = end;
            let (from, to) = (range.start.max(start), range.end.min(end));
            (from < to).then(|| bytes.slice((from - start) as usize..(to - start) as usize))
        })
        .collect()
}

/// `parts` as one buffer: the part itself when there is one, else a copy.
pub(crate) fn concat(parts: &[Bytes]) -> Bytes {
    match parts {
        [] => Bytes::new(),
        [one] => one.clone(),
        many => {
            let mut out = BytesMut::with_capacity(many.iter().map(Bytes::len).sum());
            many.iter().for_each(|p| out.extend_from_slice(p));
            out.freeze()
        }
    }
}

fn footer_cache(max_bytes: u64) -> moka::sync::Cache<SegmentKey, Arc<SegmentFooter>> {
    moka::sync::Cache::builder()
        // LRU for the reason the block cache is: new segments' footers are the ones read next.
        .eviction_policy(moka::policy::EvictionPolicy::lru())
        .max_capacity(max_bytes)
        .weigher(|key: &SegmentKey, footer: &Arc<SegmentFooter>| {
            u32::try_from(key.0.len() + 8 + footer.memory_size()).unwrap_or(u32::MAX)
        })
        .build()
}

/// `range` cut to an object of `len` bytes.
fn clip(range: Range<u64>, len: u64) -> Range<u64> {
    range.start.min(len)..range.end.min(len)
}

/// The block of `bytes` starting at `start`. A block is copied out unless it is the whole buffer,
/// so evicting it frees its memory instead of pinning a larger buffer (which would also make the
/// weigher under-count).
fn cut_block(bytes: &Bytes, start: usize, block_size: usize) -> Bytes {
    let end = (start + block_size).min(bytes.len());
    if start == 0 && end == bytes.len() {
        bytes.clone()
    } else {
        Bytes::copy_from_slice(&bytes[start..end])
    }
}

/// Runs of consecutive `None` slots of `blocks`, as block index ranges (slot 0 is block `first`).
fn missing_runs<T>(blocks: &[Option<T>], first: u64) -> Vec<Range<u64>> {
    let mut runs: Vec<Range<u64>> = Vec::new();
    for (index, _) in (first..).zip(blocks).filter(|(_, block)| block.is_none()) {
        match runs.last_mut() {
            Some(run) if run.end == index => run.end += 1,
            _ => runs.push(index..index + 1),
        }
    }
    runs
}

fn check_length(object: &str, range: &Range<u64>, bytes: Bytes) -> object_store::Result<Bytes> {
    let expected = range.end - range.start;
    if bytes.len() as u64 == expected {
        return Ok(bytes);
    }
    Err(object_store::Error::Generic {
        store: "SegmentCache",
        source: format!(
            "GET {object} bytes {}..{} returned {} bytes, expected {expected}",
            range.start,
            range.end,
            bytes.len()
        )
        .into(),
    })
}

/// Whether a GET failure may succeed when retried. Only `Generic` (network, server and IO
/// errors) and task join errors qualify; not-found, permission and precondition failures never
/// change on retry.
fn is_transient(error: &object_store::Error) -> bool {
    matches!(
        error,
        object_store::Error::Generic { .. } | object_store::Error::JoinError { .. }
    )
}

fn backoff(attempt: u32) -> Duration {
    let base = GET_BACKOFF * 2u32.pow(attempt - 1);
    let jitter_ms = rand::random_range(0..=base.as_millis() as u64 / 2);
    base + Duration::from_millis(jitter_ms)
}

/// Turns a fetch error shared between readers back into an owned [`StorageError`], keeping the
/// original error when this reader is its last holder.
fn shared_error(object: &str, error: Arc<object_store::Error>) -> StorageError {
    let source = Arc::try_unwrap(error).unwrap_or_else(|shared| match &*shared {
        // Kept as such: a missing object is data loss the reader reports, not a retriable error.
        object_store::Error::NotFound { path, .. } => object_store::Error::NotFound {
            path: path.clone(),
            source: Box::new(shared.clone()),
        },
        _ => object_store::Error::Generic {
            store: "SegmentCache",
            source: Box::new(shared),
        },
    });
    StorageError::object_store(object, source)
}
