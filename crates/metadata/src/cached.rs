//! A bounded write-through cache in front of any [`MetadataStore`].
//!
//! Caches topics (by name), the topic list and partition states, the lookups every produce and
//! fetch makes. Writes go to the inner store first and then update or invalidate exactly the
//! entries they affect, so a single agent always reads its own writes.
//!
//! With several agents sharing one database (PostgreSQL), another agent's writes are not seen
//! here until the entry's time-to-live lapses: [`CacheConfig::ttl`] bounds that staleness. Only
//! data that the partition's lease holder changes (high watermark, log start) or that changes
//! rarely (topics) is cached; offsets, agents, leases, credentials and ACLs always go to the
//! database (the agent keeps its own copy of credentials and ACLs, refreshed on an interval).
//!
//! The cache is a [`Layer`]: it overrides only the methods it caches or whose writes it must
//! apply to the cache; every other call is forwarded to the inner store by generated code.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use moka::sync::Cache;

use crate::{
    AclStoreLayer, CatalogLayer, CommitOutcome, CredentialsLayer, GroupStoreLayer, Layer,
    LeasesLayer, MetadataStore, NewTopic, PartitionState, Result, SegmentCommit, SegmentInfo,
    SegmentLogLayer, Topic, TopicConfigChange, TxnStoreLayer,
};

/// Sizes and lifetime of a [`CachedMetadataStore`]'s caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Most topics kept.
    pub max_topics: u64,
    /// Most partition states kept.
    pub max_partitions: u64,
    /// How long an entry may be served before it is re-read; bounds staleness when other agents
    /// write the same database.
    pub ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_topics: 10_000,
            max_partitions: 100_000,
            ttl: Duration::from_secs(10),
        }
    }
}

/// Cache effectiveness counters, cumulative since creation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that went to the inner store.
    pub misses: u64,
}

type PartitionKey = (String, u32);

/// [`MetadataStore`] that caches topic and partition lookups of an inner store.
pub struct CachedMetadataStore {
    inner: Arc<dyn MetadataStore>,
    topics: Cache<String, Topic>,
    topic_list: Cache<(), Arc<Vec<Topic>>>,
    partitions: Cache<PartitionKey, PartitionState>,
    /// Bumped by every cache update after a write. A read only fills the cache if no write
    /// happened while it was loading, so a slow read can never overwrite a newer value.
    generation: Mutex<u64>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for CachedMetadataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedMetadataStore")
            .field("topics", &self.topics.entry_count())
            .field("partitions", &self.partitions.entry_count())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl CachedMetadataStore {
    /// Wraps `inner` with caches sized by `config`.
    pub fn new(inner: Arc<dyn MetadataStore>, config: CacheConfig) -> Self {
        Self {
            inner,
            topics: Cache::builder()
                .max_capacity(config.max_topics)
                .time_to_live(config.ttl)
                .build(),
            topic_list: Cache::builder()
                .max_capacity(1)
                .time_to_live(config.ttl)
                .build(),
            partitions: Cache::builder()
                .max_capacity(config.max_partitions)
                .time_to_live(config.ttl)
                .build(),
            generation: Mutex::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Hit and miss counts so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// Looks `key` up, counting the outcome.
    fn lookup<K, V, Q>(&self, cache: &Cache<K, V>, key: &Q) -> Option<V>
    where
        K: std::hash::Hash + Eq + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
        Q: std::hash::Hash + moka::Equivalent<K> + ?Sized,
    {
        let found = cache.get(key);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    fn lock_generation(&self) -> std::sync::MutexGuard<'_, u64> {
        // The guarded value is a plain counter, valid even if a holder panicked.
        self.generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The generation to hand to [`Self::fill`] once a load finishes.
    fn generation(&self) -> u64 {
        *self.lock_generation()
    }

    /// Stores a loaded value unless a write happened since `loaded_at`.
    fn fill(&self, loaded_at: u64, store: impl FnOnce()) {
        let generation = self.lock_generation();
        if *generation == loaded_at {
            store();
        }
    }

    /// Applies the cache side of a write that already succeeded in the inner store.
    fn after_write(&self, update: impl FnOnce()) {
        let mut generation = self.lock_generation();
        *generation += 1;
        update();
    }

    fn partition_key(topic: &str, partition: u32) -> PartitionKey {
        (topic.to_owned(), partition)
    }

    /// Records a topic's new state; the topic list is re-read on its next use.
    fn topic_changed(&self, topic: &Topic) {
        self.after_write(|| {
            self.topics.insert(topic.name.clone(), topic.clone());
            self.topic_list.invalidate_all();
        });
    }

    /// Changes a cached partition state in place; absent entries stay absent.
    fn update_partition(
        &self,
        topic: &str,
        partition: u32,
        change: impl FnOnce(&mut PartitionState),
    ) {
        self.after_write(|| {
            let key = Self::partition_key(topic, partition);
            if let Some(mut state) = self.partitions.get(&key) {
                change(&mut state);
                self.partitions.insert(key, state);
            }
        });
    }
}

impl Layer for CachedMetadataStore {
    fn inner(&self) -> &dyn MetadataStore {
        &*self.inner
    }
}

/// Topics and partition states are cached; `get_partition_uncached` and `list_partitions` are
/// forwarded (never from the cache).
#[async_trait]
impl CatalogLayer for CachedMetadataStore {
    async fn create_topic(&self, topic: NewTopic) -> Result<Topic> {
        let created = self.inner.create_topic(topic).await?;
        self.topic_changed(&created);
        Ok(created)
    }

    async fn get_topic(&self, name: &str) -> Result<Option<Topic>> {
        if let Some(topic) = self.lookup(&self.topics, name) {
            return Ok(Some(topic));
        }
        let loaded_at = self.generation();
        // Absent topics are not cached: another agent may create them any moment.
        let topic = self.inner.get_topic(name).await?;
        if let Some(topic) = &topic {
            self.fill(loaded_at, || {
                self.topics.insert(name.to_owned(), topic.clone())
            });
        }
        Ok(topic)
    }

    async fn list_topics(&self) -> Result<Vec<Topic>> {
        if let Some(topics) = self.lookup(&self.topic_list, &()) {
            return Ok(topics.as_ref().clone());
        }
        let loaded_at = self.generation();
        let topics = self.inner.list_topics().await?;
        self.fill(loaded_at, || {
            self.topic_list.insert((), Arc::new(topics.clone()))
        });
        Ok(topics)
    }

    async fn delete_topic(&self, name: &str, delete_after_ms: i64) -> Result<Vec<SegmentInfo>> {
        let deleted = self.inner.delete_topic(name, delete_after_ms).await?;
        self.after_write(|| {
            self.topics.invalidate(name);
            self.topic_list.invalidate_all();
            // Rare enough that a scan beats tracking partitions per topic.
            for (key, _) in self.partitions.iter() {
                if key.0 == name {
                    self.partitions.invalidate(key.as_ref());
                }
            }
        });
        Ok(deleted)
    }

    async fn add_partitions(&self, name: &str, new_count: u32) -> Result<Topic> {
        let topic = self.inner.add_partitions(name, new_count).await?;
        self.topic_changed(&topic);
        Ok(topic)
    }

    async fn alter_topic_config(
        &self,
        name: &str,
        change: &TopicConfigChange<'_>,
    ) -> Result<Topic> {
        let topic = self.inner.alter_topic_config(name, change).await?;
        self.topic_changed(&topic);
        Ok(topic)
    }

    async fn get_partition(&self, topic: &str, partition: u32) -> Result<PartitionState> {
        let key = Self::partition_key(topic, partition);
        if let Some(state) = self.lookup(&self.partitions, &key) {
            return Ok(state);
        }
        let loaded_at = self.generation();
        let state = self.inner.get_partition(topic, partition).await?;
        self.fill(loaded_at, || self.partitions.insert(key, state));
        Ok(state)
    }
}

/// The writes that move a partition's high watermark or log start update its cached state;
/// the rest is forwarded: `replace_segments` and `compact_segments` change neither, segments
/// and producer snapshots are read too rarely to be worth caching.
#[async_trait]
impl SegmentLogLayer for CachedMetadataStore {
    async fn commit_segments(&self, commits: &[SegmentCommit]) -> Result<Vec<CommitOutcome>> {
        let outcomes = self.inner.commit_segments(commits).await?;
        for (commit, outcome) in commits.iter().zip(&outcomes) {
            let segment = &commit.segment;
            let high_watermark = match *outcome {
                CommitOutcome::Committed => segment.last_offset + 1,
                // Another writer got there first: whatever we cached is behind.
                CommitOutcome::OffsetConflict { high_watermark } => high_watermark,
                CommitOutcome::Fenced
                | CommitOutcome::UnknownPartition { .. }
                | CommitOutcome::RowLocked => continue,
            };
            self.update_partition(&segment.topic, segment.partition, |state| {
                state.high_watermark = state.high_watermark.max(high_watermark);
            });
        }
        Ok(outcomes)
    }

    async fn truncate_before(
        &self,
        topic: &str,
        partition: u32,
        new_log_start: i64,
        delete_after_ms: i64,
    ) -> Result<Vec<SegmentInfo>> {
        let deleted = self
            .inner
            .truncate_before(topic, partition, new_log_start, delete_after_ms)
            .await?;
        self.update_partition(topic, partition, |state| {
            state.log_start_offset = state.truncated_log_start(new_log_start);
        });
        Ok(deleted)
    }
}

// Nothing else is cached (see the module docs): all forwarded.
impl LeasesLayer for CachedMetadataStore {}
impl GroupStoreLayer for CachedMetadataStore {}
impl CredentialsLayer for CachedMetadataStore {}
impl AclStoreLayer for CachedMetadataStore {}
impl TxnStoreLayer for CachedMetadataStore {}
