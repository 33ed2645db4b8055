//! The partitions this agent has open, and the group-commit flusher that makes them durable:
//! the write path's service.
//!
//! A Produce reserves its bytes from the agent's buffer budget
//! ([`Partitions::reserve_for`]), appends to the partition's [`PartitionWriter`] (in
//! memory, offsets assigned) and waits for durability. The flusher wakes every
//! `flush_interval` (or sooner when a partition has `flush_max_bytes` buffered), seals every
//! partition with buffered data into one [`FlushCycle`] and starts it: the cycle uploads ONE
//! shared object for all those partitions and commits all of them in ONE metadata transaction;
//! only then are the waiting produces acknowledged. Up to `max_flushes_in_flight` cycles
//! overlap (the next uploads while the previous commits), each partition's chunks still
//! resolved in order.
//!
//! A partition is opened only under its lease, and only when the [`Membership`] says this
//! agent should own it; others fail as fenced (NOT_LEADER_OR_FOLLOWER). Which partitions to
//! take and hand off is the controller's decision (`cluster.rs`), made through this API.

use parking_lot::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use object_store::ObjectStore;
use streamhouse_metadata::{
    HeldLease, LeaseFence, MetadataError, MetadataStore, PartitionLease, PartitionState, Topic,
};
use streamhouse_segment::RecordBatch;
use streamhouse_storage::{
    AppendOptions, Appended, Budget, FlushContext, FlushCycle, FlushReport, PartitionReader,
    PartitionStorage, PartitionWriter, SegmentCache, SegmentIndex, StorageError, TxnVerification,
    WriterConfig,
};
use tokio::sync::{Notify, OnceCell, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::warn;

use crate::config::BrokerConfig;
use crate::membership::Membership;

/// A partition in use on this agent: its writer, reader and segment index, built from its
/// [`HeldPartition`] the first time a request needs them.
pub(crate) struct PartitionLog {
    pub(crate) topic: Topic,
    pub(crate) partition: u32,
    pub(crate) writer: PartitionWriter,
    pub(crate) reader: PartitionReader,
    /// The partition's segment index (shared by writer and reader), for its counters.
    pub(crate) index: Arc<SegmentIndex>,
    fence: LeaseFence,
}

impl PartitionLog {
    /// The lease this agent writes the partition under.
    pub(crate) fn fence(&self) -> &LeaseFence {
        &self.fence
    }
}

/// A partition whose lease this agent holds. The controller takes leases by the thousand; a
/// partition's writer, reader and index (its [`PartitionLog`]) are built only when a request
/// first needs them, so an idle partition costs its lease and little more.
pub(crate) struct HeldPartition {
    pub(crate) topic: String,
    pub(crate) partition: u32,
    fence: LeaseFence,
    /// Until when the lease is surely held unless renewed: the TTL from the moment the request
    /// that took or last renewed it was sent (the database, whose clock judges expiry, counts
    /// from a later moment), so agents' clocks never matter.
    lease_valid_until: Mutex<Instant>,
    log: OnceCell<Arc<PartitionLog>>,
    /// Found without records while its log was not built: it stays so until the log is built
    /// (appends need the writer, and no other agent writes a partition this one holds).
    known_empty: AtomicBool,
}

impl HeldPartition {
    fn lease_valid_until(&self) -> Instant {
        *self.lease_valid_until.lock()
    }

    fn lease_renewed(&self, valid_until: Instant) {
        let mut current = self.lease_valid_until.lock();
        *current = (*current).max(valid_until);
    }

    /// The partition's log, if a request has needed it since the lease was taken.
    pub(crate) fn log(&self) -> Option<&Arc<PartitionLog>> {
        self.log.get()
    }
}

/// A lease just taken, with the moment the request that took it was sent.
pub(crate) type TakenLease = (PartitionLease, Instant);

type PartitionKey = (String, u32);

/// Held partitions by topic and index; a cell is filled once the lease is taken.
type HeldMap = HashMap<PartitionKey, Arc<OnceCell<Arc<HeldPartition>>>>;

/// The partitions this agent has open, their leases, the buffer budget and the flusher.
pub(crate) struct Partitions {
    config: BrokerConfig,
    agent_id: String,
    metadata: Arc<dyn MetadataStore>,
    store: Arc<dyn ObjectStore>,
    cache: Arc<SegmentCache>,
    membership: Arc<Membership>,
    held: RwLock<HeldMap>,
    /// Signalled on every append, so the flusher sleeps while nothing is buffered.
    data_ready: Arc<Notify>,
    /// Signalled when a partition crossed `flush_max_bytes`.
    flush_now: Notify,
    /// Partitions being flushed and released; not reopened until their lease is given up, so
    /// two writers of this agent never share a lease epoch (and thus object keys).
    handing_off: Mutex<HashSet<PartitionKey>>,
    /// Bytes of produced records not yet durable may hold (see `max_buffered_bytes`).
    buffer_budget: Arc<Semaphore>,
    /// Flush cycles in flight (see `max_flushes_in_flight`).
    flushes_in_flight: Arc<Semaphore>,
    /// Segments all the partitions' indexes keep together (`max_segments_per_agent`).
    segment_budget: Arc<Budget>,
    /// Idempotent-producer states all the partitions' writers keep together
    /// (`max_producers_per_agent`).
    producer_budget: Arc<Budget>,
}

impl Partitions {
    /// No partition open yet; `metadata` and `store` are the agent's (calls already bounded).
    pub(crate) fn new(
        config: BrokerConfig,
        agent_id: String,
        metadata: Arc<dyn MetadataStore>,
        store: Arc<dyn ObjectStore>,
        cache: Arc<SegmentCache>,
        membership: Arc<Membership>,
    ) -> Self {
        let budget = Arc::new(Semaphore::new(config_budget(&config)));
        let segments = Budget::new(config.segment_index.max_segments_per_agent);
        let producers = Budget::new(config.limits.max_producers_per_agent);
        let flushes = Arc::new(Semaphore::new(config.max_flushes_in_flight.max(1)));
        Self {
            config,
            agent_id,
            metadata,
            store,
            cache,
            membership,
            held: RwLock::default(),
            data_ready: Arc::default(),
            flush_now: Notify::new(),
            handing_off: Mutex::default(),
            buffer_budget: budget,
            flushes_in_flight: flushes,
            segment_budget: segments,
            producer_budget: producers,
        }
    }

    /// Idempotent-producer states the writers of this agent hold together.
    pub(crate) fn producer_states(&self) -> usize {
        self.producer_budget.used()
    }

    /// Appends batches to an open partition, counts the bytes in, and asks for an early flush once
    /// the partition has `flush_max_bytes` buffered: [`Self::reserve_for`], then
    /// [`Self::append_reserved`]. Shared by Produce (which checks its client is still there
    /// between the two) and the HTTP produce API.
    pub(crate) async fn append(
        &self,
        log: &PartitionLog,
        batches: Vec<RecordBatch>,
        deadline: tokio::time::Instant,
        txn_verified: Option<TxnVerification>,
    ) -> Result<Appended, StorageError> {
        let reservation = self.reserve_for(&batches, deadline).await?;
        self.append_reserved(log, batches, deadline, txn_verified, reservation)
    }

    /// Reserves the bytes of `batches` from the agent's buffer budget, waiting until `deadline`
    /// (the request's timeout) when it is full: a slow object store throttles producers instead
    /// of growing memory. A request larger than the whole budget reserves all of it.
    pub(crate) async fn reserve_for(
        &self,
        batches: &[RecordBatch],
        deadline: tokio::time::Instant,
    ) -> Result<OwnedSemaphorePermit, StorageError> {
        let bytes: usize = batches.iter().map(RecordBatch::len).sum();
        let budget = u32::try_from(config_budget(&self.config)).unwrap_or(u32::MAX);
        let permits = u32::try_from(bytes).unwrap_or(u32::MAX).clamp(1, budget);
        let acquire = self.buffer_budget.clone().acquire_many_owned(permits);
        match tokio::time::timeout_at(deadline, acquire).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => {
                metrics::counter!("streamhouse_produce_buffer_full_total").increment(1);
                Err(StorageError::BufferFull)
            }
        }
    }

    /// Appends `batches` with their `reservation` (from [`Self::reserve_for`]). A flush still
    /// pending at `deadline` is abandoned, so records answered with an error are never stored
    /// later.
    pub(crate) fn append_reserved(
        &self,
        log: &PartitionLog,
        batches: Vec<RecordBatch>,
        deadline: tokio::time::Instant,
        txn_verified: Option<TxnVerification>,
        reservation: OwnedSemaphorePermit,
    ) -> Result<Appended, StorageError> {
        let bytes: u64 = batches.iter().map(|b| b.len() as u64).sum();
        let options = AppendOptions {
            deadline: Some(deadline),
            reservation: Some(reservation),
            txn_verified,
        };
        let appended = log.writer.append_with(batches, options);
        self.appended(appended.as_ref().map_or(0, |a| a.buffered_bytes));
        let appended = appended?;
        metrics::counter!("streamhouse_bytes_in_total").increment(bytes);
        Ok(appended)
    }

    /// Forgets every open partition of a deleted topic (their writers can no longer commit).
    pub(crate) fn forget_topic(&self, name: &str) {
        self.lock_held_mut().retain(|(t, _), _| t != name);
    }

    /// Closes every held partition, flushing it and releasing its lease (agent shutdown).
    pub(crate) async fn close_all(&self) {
        let held = self.held_partitions();
        futures::future::join_all(held.iter().map(|p| self.close_partition(p, true))).await;
    }

    /// The partition's log, taking its lease first unless held, and building its writer,
    /// reader and index on first use. Only partitions this agent should own are taken; others
    /// fail as fenced (NOT_LEADER_OR_FOLLOWER).
    pub(crate) async fn partition(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Arc<PartitionLog>, StorageError> {
        let held = self.hold(topic, partition, None).await?;
        held.log
            .get_or_try_init(|| self.open_log(&held))
            .await
            .cloned()
    }

    /// Holds the partition of `lease`, just taken by this agent (the controller takes many in
    /// one transaction), unless it is held already. Builds nothing else: see [`HeldPartition`].
    pub(crate) async fn hold_leased(&self, lease: TakenLease) -> Result<(), StorageError> {
        let topic = lease.0.topic.clone();
        self.hold(&topic, lease.0.partition, Some(lease)).await?;
        Ok(())
    }

    /// The held partition, taking its lease (or recording `lease`, just taken) if not held.
    async fn hold(
        &self,
        topic: &str,
        partition: u32,
        lease: Option<TakenLease>,
    ) -> Result<Arc<HeldPartition>, StorageError> {
        let key = (topic.to_string(), partition);
        let existing = self.lock_held().get(&key).cloned();
        let cell = match existing {
            Some(cell) => cell,
            None => self.lock_held_mut().entry(key).or_default().clone(),
        };
        cell.get_or_try_init(|| self.take(topic, partition, lease))
            .await
            .cloned()
    }

    /// Takes the lease of a partition this agent should own, unless `lease` (taken by the
    /// controller, which checked ownership) is given and not yet due for renewal.
    async fn take(
        &self,
        name: &str,
        partition: u32,
        lease: Option<TakenLease>,
    ) -> Result<Arc<HeldPartition>, StorageError> {
        let fresh = lease.filter(|(_, sent)| !self.renewal_due(*sent + self.config.lease_ttl));
        let (lease, sent) = match fresh {
            Some(lease) => {
                self.check_may_take(name, partition)?;
                lease
            }
            None => {
                let topic = self.topic(name, partition).await?;
                self.check_may_own(&topic, partition)?;
                self.check_may_take(name, partition)?;
                let sent = Instant::now();
                let ttl = self.config.lease_ttl_ms();
                let acquired = self
                    .metadata
                    .acquire_lease(name, partition, &self.agent_id, ttl);
                let lease = acquired.await?.ok_or_else(|| StorageError::Fenced {
                    topic: name.to_string(),
                    partition,
                    reason: "another agent holds the partition lease".into(),
                })?;
                (lease, sent)
            }
        };
        Ok(Arc::new(HeldPartition {
            topic: name.to_string(),
            partition,
            fence: LeaseFence {
                agent_id: self.agent_id.clone(),
                epoch: lease.epoch,
            },
            lease_valid_until: Mutex::new(sent + self.config.lease_ttl),
            log: OnceCell::new(),
            known_empty: AtomicBool::new(false),
        }))
    }

    /// The topic of an existing partition.
    async fn topic(&self, name: &str, partition: u32) -> Result<Topic, StorageError> {
        let topic = self
            .metadata
            .get_topic(name)
            .await?
            .ok_or_else(|| MetadataError::UnknownTopic(name.to_string()))?;
        if partition >= topic.partitions {
            return Err(MetadataError::UnknownPartition {
                topic: name.to_string(),
                partition,
            }
            .into());
        }
        Ok(topic)
    }

    /// Builds the writer, reader and index of a held partition.
    async fn open_log(&self, held: &HeldPartition) -> Result<Arc<PartitionLog>, StorageError> {
        let (name, partition) = (held.topic.as_str(), held.partition);
        let topic = self.topic(name, partition).await?;
        // A partition being handed off (or an agent stopping) builds nothing new.
        self.check_may_take(name, partition)?;
        let fence = held.fence.clone();
        let index = SegmentIndex::new(
            name,
            partition,
            self.metadata.clone(),
            self.config.segment_index.clone(),
        );
        let index = Arc::new(index.with_budget(self.segment_budget.clone()));
        let storage = self.partition_storage(&topic, partition, &index);
        let writer_config = WriterConfig::for_topic(&topic.config);
        let writer =
            PartitionWriter::open(storage.clone(), writer_config, Some(fence.clone())).await?;
        self.check_writer_is_current(&writer, name, partition)
            .await?;
        let reader = PartitionReader::new(storage).with_writer(&writer);
        Ok(Arc::new(PartitionLog {
            topic,
            partition,
            writer,
            reader,
            index,
            fence,
        }))
    }

    /// What a partition's writer, reader and consolidator on this agent are built from.
    pub(crate) fn partition_storage(
        &self,
        topic: &Topic,
        partition: u32,
        index: &Arc<SegmentIndex>,
    ) -> PartitionStorage {
        PartitionStorage {
            topic: topic.clone(),
            partition,
            store: self.store.clone(),
            metadata: self.metadata.clone(),
            index: index.clone(),
            cache: self.cache.clone(),
            producer_budget: self.producer_budget.clone(),
        }
    }

    /// Refuses a writer opened on outdated partition state. The metadata cache may still hold
    /// the state this agent last wrote before another agent took the partition over; a writer
    /// starting there would reuse offsets the other agent acknowledged (its commits would be
    /// refused, but reads would end at the old high watermark). The partition is opened again
    /// once the cache entry has lapsed; meanwhile clients are told to retry.
    async fn check_writer_is_current(
        &self,
        writer: &PartitionWriter,
        topic: &str,
        partition: u32,
    ) -> Result<(), StorageError> {
        // One row, not the whole topic: opening every partition of a topic would otherwise
        // read the topic's partitions once per partition (minutes at 10,000 partitions).
        let stored = self
            .metadata
            .get_partition_uncached(topic, partition)
            .await?;
        if (stored.high_watermark, stored.log_start_offset)
            == (writer.high_watermark(), writer.log_start_offset())
        {
            return Ok(());
        }
        Err(StorageError::Fenced {
            topic: topic.to_string(),
            partition,
            reason: format!(
                "cached partition state (high watermark {}) is behind the store ({}); \
                 the partition opens once the cache catches up",
                writer.high_watermark(),
                stored.high_watermark
            ),
        })
    }

    /// Refuses a partition another agent should own.
    fn check_may_own(&self, topic: &Topic, partition: u32) -> Result<(), StorageError> {
        if self.membership.should_own(topic, partition) {
            return Ok(());
        }
        Err(StorageError::Fenced {
            topic: topic.name.clone(),
            partition,
            reason: "another agent owns the partition".into(),
        })
    }

    /// Refuses a partition being handed off, and any while shutting down.
    fn check_may_take(&self, name: &str, partition: u32) -> Result<(), StorageError> {
        let reason = if self.membership.is_stopping() {
            "this agent is shutting down"
        } else if self
            .lock_handing_off()
            .contains(&(name.to_string(), partition))
        {
            "the partition is being handed off"
        } else {
            return Ok(());
        };
        Err(StorageError::Fenced {
            topic: name.to_string(),
            partition,
            reason: reason.into(),
        })
    }

    fn lock_held(&self) -> RwLockReadGuard<'_, HeldMap> {
        self.held.read()
    }

    fn lock_held_mut(&self) -> RwLockWriteGuard<'_, HeldMap> {
        self.held.write()
    }

    fn lock_handing_off(&self) -> parking_lot::MutexGuard<'_, HashSet<PartitionKey>> {
        self.handing_off.lock()
    }

    /// Whether a lease surely held until `valid_until` is due for renewal: a third of the TTL
    /// has passed since it was taken or last renewed.
    fn renewal_due(&self, valid_until: Instant) -> bool {
        valid_until.saturating_duration_since(Instant::now()) <= self.config.lease_ttl * 2 / 3
    }

    /// Whether the controller may take the lease of a partition it should own: not while
    /// shutting down, nor while the partition is being handed off.
    pub(crate) fn may_lease(&self, topic: &str, partition: u32) -> bool {
        !self.membership.is_stopping()
            && !self
                .lock_handing_off()
                .contains(&(topic.to_string(), partition))
    }

    /// Whether this agent holds the lease of `topic`/`partition`.
    pub(crate) fn is_held(&self, topic: &str, partition: u32) -> bool {
        self.lock_held()
            .get(&(topic.to_string(), partition))
            .is_some_and(|cell| cell.initialized())
    }

    /// Renews, in one metadata statement, the leases of those of `held` that are due (a third of the TTL has passed); closes each partition whose lease was lost
    /// (taken over, released, or expired: renewal never revives a lease, so the partition is
    /// opened again at a new epoch). On a metadata error nothing changes and the next round
    /// retries, well before the leases expire.
    pub(crate) async fn renew_due_leases(&self, held: &[Arc<HeldPartition>]) {
        let due: Vec<&Arc<HeldPartition>> = held
            .iter()
            .filter(|p| self.renewal_due(p.lease_valid_until()))
            .collect();
        if due.is_empty() {
            return;
        }
        let held: Vec<HeldLease> = due
            .iter()
            .map(|p| HeldLease {
                topic: p.topic.clone(),
                partition: p.partition,
                epoch: p.fence.epoch,
            })
            .collect();
        let sent = Instant::now();
        let renewed = match self
            .metadata
            .renew_leases(&self.agent_id, &held, self.config.lease_ttl_ms())
            .await
        {
            Ok(renewed) => renewed,
            Err(e) => {
                warn!(leases = held.len(), "lease renewal failed: {e}");
                return;
            }
        };
        let renewed: HashSet<(&str, u32)> = renewed
            .iter()
            .map(|l| (l.topic.as_str(), l.partition))
            .collect();
        for held in due {
            let (name, partition) = (held.topic.as_str(), held.partition);
            if renewed.contains(&(name, partition)) {
                held.lease_renewed(sent + self.config.lease_ttl);
            } else {
                warn!(topic = %name, partition, "lost partition lease; closing partition");
                self.close_partition(held, false).await;
            }
        }
    }

    /// Stops serving a held partition: takes it out of the held set, flushes what it has
    /// buffered and, with `release`, gives its lease up so the next owner can take over at once.
    ///
    /// No acknowledged record is lost and none is left hanging: records appended before the
    /// lease is released are flushed and acknowledged; a flush after the release is refused as
    /// fenced, so anything appended later fails with a retriable NOT_LEADER_OR_FOLLOWER.
    pub(crate) async fn close_partition(&self, held: &HeldPartition, release: bool) {
        let (name, partition) = (held.topic.as_str(), held.partition);
        let key = (name.to_string(), partition);
        self.lock_handing_off().insert(key.clone());
        self.forget_partition(name, partition);
        if let Some(log) = held.log() {
            flush_out(log).await;
        }
        if release {
            let fence = &held.fence;
            if let Err(e) = self
                .metadata
                .release_lease(name, partition, &fence.agent_id, fence.epoch)
                .await
            {
                // The lease then simply expires.
                warn!(topic = %name, partition, "releasing partition lease failed: {e}");
            }
        }
        // A log built while the partition was closing: whatever reached it is refused as
        // fenced now that the lease is released, so its producers retry elsewhere.
        if let Some(log) = held.log() {
            if log.writer.buffered_bytes() > 0 {
                let _ = log.writer.flush().await;
            }
        }
        self.lock_handing_off().remove(&key);
    }

    /// Tells the flusher that a partition has buffered records (`buffered_bytes` in its open
    /// segment after the append); flushes at once past the size limit.
    pub(crate) fn appended(&self, buffered_bytes: usize) {
        self.data_ready.notify_one();
        if buffered_bytes >= self.config.flush_max_bytes {
            self.flush_now.notify_one();
        }
    }

    /// Every partition whose lease this agent holds.
    pub(crate) fn held_partitions(&self) -> Vec<Arc<HeldPartition>> {
        self.lock_held()
            .values()
            .filter_map(|cell| cell.get().cloned())
            .collect()
    }

    /// The partitions maintenance (retention, consolidation, compaction) looks at: every one
    /// whose log is built, and every other held one that has records, whose log is built now.
    /// Held partitions without records stay as they are: there is nothing to maintain.
    pub(crate) async fn with_records(&self) -> Vec<Arc<PartitionLog>> {
        let mut unchecked: HashMap<String, Vec<Arc<HeldPartition>>> = HashMap::new();
        for held in self.held_partitions() {
            if held.log().is_none() && !held.known_empty.load(Ordering::Relaxed) {
                unchecked.entry(held.topic.clone()).or_default().push(held);
            }
        }
        for (topic, held) in unchecked {
            // One query per topic with unchecked partitions, typically once after a takeover.
            let states = match self.metadata.list_partitions(&topic).await {
                Ok(states) => states,
                Err(e) => {
                    warn!(%topic, "listing partitions for maintenance failed: {e}");
                    continue;
                }
            };
            for h in held {
                let Some(state) = states.get(h.partition as usize) else {
                    continue;
                };
                if state.high_watermark == state.log_start_offset {
                    h.known_empty.store(true, Ordering::Relaxed);
                } else if let Err(e) = self.partition(&topic, h.partition).await {
                    warn!(%topic, partition = h.partition, "loading for maintenance failed: {e}");
                }
            }
        }
        self.open_partitions()
    }

    /// The log start and high watermark of those of `partitions` of `topic` this agent holds
    /// without having built their logs, from one metadata query. Exact while they stay so: only
    /// this agent appends to a partition it holds, through the log not built. ListOffsets
    /// answers from it rather than building a writer, reader and index per partition (a
    /// consumer starting on a 10,000-partition topic asks for every one). Partitions not held
    /// or being handed off are left out, for the usual path to answer.
    pub(crate) async fn unloaded_watermarks(
        &self,
        topic: &str,
        partitions: &[u32],
    ) -> Result<HashMap<u32, PartitionState>, StorageError> {
        let unloaded: Vec<u32> = {
            let held = self.lock_held();
            partitions
                .iter()
                .copied()
                .filter(|&p| {
                    held.get(&(topic.to_string(), p))
                        .and_then(|cell| cell.get())
                        .is_some_and(|h| h.log().is_none())
                        && self.check_may_take(topic, p).is_ok()
                })
                .collect()
        };
        if unloaded.is_empty() {
            return Ok(HashMap::new());
        }
        let states = self.metadata.list_partitions(topic).await?;
        Ok(unloaded
            .into_iter()
            .filter_map(|p| Some((p, *states.get(p as usize)?)))
            .collect())
    }

    /// Every held partition whose log has been built (the ones that can have data to flush,
    /// consolidate or retain).
    pub(crate) fn open_partitions(&self) -> Vec<Arc<PartitionLog>> {
        self.lock_held()
            .values()
            .filter_map(|cell| cell.get().and_then(|held| held.log().cloned()))
            .collect()
    }

    /// What a flush cycle of this agent needs.
    fn flush_context(&self) -> FlushContext {
        FlushContext {
            store: self.store.clone(),
            metadata: self.metadata.clone(),
            cache: self.cache.clone(),
            upload: WriterConfig::default(),
        }
    }

    /// Seals every partition with buffered records into one flush cycle (empty when none has).
    fn seal_dirty(&self) -> FlushCycle {
        let dirty: Vec<PartitionWriter> = self
            .open_partitions()
            .into_iter()
            .filter(|p| p.writer.buffered_bytes() > 0)
            .map(|p| p.writer.clone())
            .collect();
        FlushCycle::seal(&self.flush_context(), &dirty)
    }

    /// Flushes every partition with buffered records in one cycle and waits for it.
    pub(crate) async fn flush_all(&self) {
        let cycle = self.seal_dirty();
        if !cycle.is_empty() {
            let report = cycle.run().await;
            self.after_flush(&report);
        }
    }

    /// Drops partitions whose writer was fenced; their producers already got the error.
    fn after_flush(&self, report: &FlushReport) {
        for (writer, result) in &report.results {
            if let Err(e) = result {
                warn!(writer = ?writer, "flush failed: {e}");
                if e.is_fenced() {
                    if let Some(log) = self
                        .open_partitions()
                        .into_iter()
                        .find(|log| log.writer.same_as(writer))
                    {
                        self.forget_partition(&log.topic.name, log.partition);
                    }
                }
            }
        }
    }

    fn forget_partition(&self, topic: &str, partition: u32) {
        self.lock_held_mut().remove(&(topic.to_string(), partition));
    }
}

/// Flushes `log` until nothing is left, which also waits out a flush the flusher has in
/// progress (flushes take turns) and picks up appends that raced the partition's removal.
async fn flush_out(log: &PartitionLog) {
    loop {
        match log.writer.flush().await {
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(e) => {
                let (topic, partition) = (&log.topic.name, log.partition);
                warn!(%topic, partition, "flush while closing partition failed: {e}");
                break;
            }
        }
    }
}

/// Group commit: once records are buffered, waits `flush_interval` for more to join them (or
/// less, when a partition fills up), seals every partition with buffered records into one cycle
/// and starts it without waiting for it to finish, so cycles overlap (at most
/// `max_flushes_in_flight`; the flusher waits for a slot before sealing the next).
pub(crate) async fn run_flusher(partitions: Weak<Partitions>) {
    let Some(data_ready) = partitions.upgrade().map(|b| b.data_ready.clone()) else {
        return;
    };
    let mut cycles = tokio::task::JoinSet::new();
    loop {
        // Idle waits hold no reference to the partitions, and come in slices, so the flusher of a
        // dropped agent ends within a second.
        let idle = tokio::time::timeout(Duration::from_secs(1), data_ready.notified()).await;
        while cycles.try_join_next().is_some() {}
        let Some(b) = partitions.upgrade() else { break };
        if idle.is_err() {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(b.config.flush_interval) => {}
            _ = b.flush_now.notified() => {}
        }
        let Ok(slot) = b.flushes_in_flight.clone().acquire_owned().await else {
            break;
        };
        let cycle = b.seal_dirty();
        if cycle.is_empty() {
            continue;
        }
        let weak = Arc::downgrade(&b);
        drop(b);
        cycles.spawn(async move {
            let report = cycle.run().await;
            if let Some(b) = weak.upgrade() {
                b.after_flush(&report);
            }
            drop(slot);
        });
    }
    // A dropped agent's cycles still finish: their producers are waiting.
    while cycles.join_next().await.is_some() {}
}

fn config_budget(config: &BrokerConfig) -> usize {
    config.max_buffered_bytes.clamp(1, Semaphore::MAX_PERMITS)
}
