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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use moka::sync::Cache;

use crate::{
    AbortedTxn, AclBinding, AclBindingFilter, AgentInfo, CommitOutcome, CommittedOffset,
    GroupLease, HeldLease, LeaseFence, MetadataStore, NewTopic, PartitionLease, PartitionState,
    ProducerSnapshot, Result, SegmentCommit, SegmentInfo, Topic, TopicConfig, Transaction,
    TxnMarker, TxnUpdate, UserCredential,
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

#[async_trait]
impl MetadataStore for CachedMetadataStore {
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

    async fn update_topic_config(&self, name: &str, config: TopicConfig) -> Result<Topic> {
        let topic = self.inner.update_topic_config(name, config).await?;
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

    async fn get_partition_uncached(&self, topic: &str, partition: u32) -> Result<PartitionState> {
        self.inner.get_partition(topic, partition).await
    }

    async fn list_partitions(&self, topic: &str) -> Result<Vec<PartitionState>> {
        self.inner.list_partitions(topic).await
    }

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

    async fn list_producer_snapshots(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Vec<ProducerSnapshot>> {
        // Read once per writer open; not worth caching.
        self.inner.list_producer_snapshots(topic, partition).await
    }

    async fn expire_producer_snapshots(&self, updated_before_ms: i64) -> Result<u64> {
        self.inner
            .expire_producer_snapshots(updated_before_ms)
            .await
    }

    async fn list_segments(
        &self,
        topic: &str,
        partition: u32,
        from_offset: i64,
    ) -> Result<Vec<SegmentInfo>> {
        self.inner
            .list_segments(topic, partition, from_offset)
            .await
    }

    async fn replace_segments(
        &self,
        merged: &SegmentInfo,
        fence: Option<&LeaseFence>,
        delete_after_ms: i64,
    ) -> Result<Vec<SegmentInfo>> {
        // Neither the high watermark nor the log start changes: nothing cached is affected.
        self.inner
            .replace_segments(merged, fence, delete_after_ms)
            .await
    }

    async fn compact_segments(
        &self,
        compacted: &SegmentInfo,
        replaced_records: i64,
        fence: Option<&LeaseFence>,
        delete_after_ms: i64,
    ) -> Result<Vec<SegmentInfo>> {
        // Like `replace_segments`: no cached partition state changes.
        self.inner
            .compact_segments(compacted, replaced_records, fence, delete_after_ms)
            .await
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

    async fn all_segment_keys(&self) -> Result<Vec<String>> {
        self.inner.all_segment_keys().await
    }

    async fn schedule_object_deletions(&self, keys: &[String], delete_after_ms: i64) -> Result<()> {
        self.inner
            .schedule_object_deletions(keys, delete_after_ms)
            .await
    }

    async fn due_object_deletions(&self, now_ms: i64, limit: u32) -> Result<Vec<String>> {
        self.inner.due_object_deletions(now_ms, limit).await
    }

    async fn forget_object_deletions(&self, keys: &[String]) -> Result<()> {
        self.inner.forget_object_deletions(keys).await
    }

    async fn allocate_producer_id(&self) -> Result<i64> {
        self.inner.allocate_producer_id().await
    }

    async fn claim_transaction(
        &self,
        transactional_id: &str,
        agent_id: &str,
        ttl_ms: i64,
    ) -> Result<Option<Transaction>> {
        self.inner
            .claim_transaction(transactional_id, agent_id, ttl_ms)
            .await
    }

    async fn get_transaction(&self, transactional_id: &str) -> Result<Option<Transaction>> {
        self.inner.get_transaction(transactional_id).await
    }

    async fn transaction_of_producer(&self, producer_id: i64) -> Result<Option<Transaction>> {
        self.inner.transaction_of_producer(producer_id).await
    }

    async fn list_transactions(&self) -> Result<Vec<Transaction>> {
        self.inner.list_transactions().await
    }

    async fn update_transaction(&self, update: &TxnUpdate) -> Result<()> {
        self.inner.update_transaction(update).await
    }

    async fn commit_txn_offsets(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        group: &str,
        offsets: &[CommittedOffset],
    ) -> Result<()> {
        self.inner
            .commit_txn_offsets(producer_id, producer_epoch, group, offsets)
            .await
    }

    async fn pending_txn_offsets(&self, group: &str) -> Result<Vec<(String, u32)>> {
        self.inner.pending_txn_offsets(group).await
    }

    async fn list_txn_markers(&self) -> Result<Vec<TxnMarker>> {
        self.inner.list_txn_markers().await
    }

    async fn list_aborted_txns(
        &self,
        topic: &str,
        partition: u32,
        from_offset: i64,
    ) -> Result<Vec<AbortedTxn>> {
        self.inner
            .list_aborted_txns(topic, partition, from_offset)
            .await
    }

    async fn commit_offsets(
        &self,
        group: &str,
        fence: Option<&LeaseFence>,
        offsets: &[CommittedOffset],
    ) -> Result<()> {
        self.inner.commit_offsets(group, fence, offsets).await
    }

    async fn fetch_offsets(
        &self,
        group: &str,
        topic: Option<&str>,
    ) -> Result<Vec<CommittedOffset>> {
        self.inner.fetch_offsets(group, topic).await
    }

    async fn delete_offsets(
        &self,
        group: &str,
        fence: Option<&LeaseFence>,
        partitions: &[(String, u32)],
    ) -> Result<()> {
        self.inner.delete_offsets(group, fence, partitions).await
    }

    async fn list_groups(&self) -> Result<Vec<String>> {
        self.inner.list_groups().await
    }

    async fn delete_group(&self, group: &str, fence: Option<&LeaseFence>) -> Result<bool> {
        self.inner.delete_group(group, fence).await
    }

    async fn acquire_group_lease(
        &self,
        group: &str,
        agent_id: &str,
        ttl_ms: i64,
    ) -> Result<Option<GroupLease>> {
        self.inner
            .acquire_group_lease(group, agent_id, ttl_ms)
            .await
    }

    async fn renew_group_leases(
        &self,
        agent_id: &str,
        held: &[(String, i64)],
        ttl_ms: i64,
    ) -> Result<Vec<GroupLease>> {
        self.inner.renew_group_leases(agent_id, held, ttl_ms).await
    }

    async fn release_group_lease(&self, group: &str, fence: &LeaseFence) -> Result<()> {
        self.inner.release_group_lease(group, fence).await
    }

    async fn record_group_generation(
        &self,
        group: &str,
        fence: &LeaseFence,
        generation: i32,
    ) -> Result<()> {
        self.inner
            .record_group_generation(group, fence, generation)
            .await
    }

    async fn list_group_leases(&self) -> Result<Vec<GroupLease>> {
        self.inner.list_group_leases().await
    }

    async fn upsert_credential(&self, credential: &UserCredential) -> Result<()> {
        self.inner.upsert_credential(credential).await
    }

    async fn get_credential(&self, user: &str, mechanism: &str) -> Result<Option<UserCredential>> {
        self.inner.get_credential(user, mechanism).await
    }

    async fn list_credentials(&self) -> Result<Vec<UserCredential>> {
        self.inner.list_credentials().await
    }

    async fn delete_credential(&self, user: &str, mechanism: &str) -> Result<bool> {
        self.inner.delete_credential(user, mechanism).await
    }

    async fn register_agent(&self, agent: &AgentInfo) -> Result<()> {
        self.inner.register_agent(agent).await
    }

    async fn heartbeat(&self, agent_id: &str, now_ms: i64) -> Result<bool> {
        self.inner.heartbeat(agent_id, now_ms).await
    }

    async fn list_agents(&self, alive_since_ms: i64) -> Result<Vec<AgentInfo>> {
        self.inner.list_agents(alive_since_ms).await
    }

    async fn deregister_agent(&self, agent_id: &str) -> Result<()> {
        self.inner.deregister_agent(agent_id).await
    }

    async fn acquire_lease(
        &self,
        topic: &str,
        partition: u32,
        agent_id: &str,
        ttl_ms: i64,
    ) -> Result<Option<PartitionLease>> {
        self.inner
            .acquire_lease(topic, partition, agent_id, ttl_ms)
            .await
    }

    async fn acquire_leases(
        &self,
        agent_id: &str,
        partitions: &[(String, u32)],
        ttl_ms: i64,
    ) -> Result<Vec<PartitionLease>> {
        self.inner
            .acquire_leases(agent_id, partitions, ttl_ms)
            .await
    }

    async fn renew_leases(
        &self,
        agent_id: &str,
        held: &[HeldLease],
        ttl_ms: i64,
    ) -> Result<Vec<PartitionLease>> {
        self.inner.renew_leases(agent_id, held, ttl_ms).await
    }

    async fn release_lease(
        &self,
        topic: &str,
        partition: u32,
        agent_id: &str,
        epoch: i64,
    ) -> Result<()> {
        self.inner
            .release_lease(topic, partition, agent_id, epoch)
            .await
    }

    async fn list_leases(&self) -> Result<Vec<PartitionLease>> {
        self.inner.list_leases().await
    }

    async fn create_acls(&self, acls: &[AclBinding]) -> Result<()> {
        self.inner.create_acls(acls).await
    }

    async fn list_acls(&self, filter: &AclBindingFilter) -> Result<Vec<AclBinding>> {
        self.inner.list_acls(filter).await
    }

    async fn delete_acls(&self, filter: &AclBindingFilter) -> Result<Vec<AclBinding>> {
        self.inner.delete_acls(filter).await
    }
}
