//! A [`MetadataStore`] wrapper that calls a [`CallHook`] around every call of the store it
//! wraps: the one forwarding of the whole trait, shared by every wrapper that only needs to
//! observe or disturb calls (counting them in benchmarks, injecting faults in tests) rather
//! than change what they do.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::{
    AbortedTxn, AclBinding, AclBindingFilter, AgentInfo, CommitOutcome, CommittedOffset,
    GroupLease, HeldLease, LeaseFence, MetadataError, MetadataStore, NewTopic, PartitionLease,
    PartitionState, ProducerSnapshot, Result, SegmentCommit, SegmentInfo, Topic, TopicConfig,
    Transaction, TxnMarker, TxnUpdate, UserCredential,
};

/// Called around each call a [`HookedMetadataStore`] forwards; `method` is the trait method's
/// name.
#[async_trait]
pub trait CallHook: Send + Sync + 'static {
    /// Before the call. An error is returned instead, without making the call (a request
    /// that never reached the store).
    async fn before(&self, method: &'static str) -> Result<()> {
        let _ = method;
        Ok(())
    }

    /// After the call, whatever its result. An error replaces the result (a request the store
    /// carried out whose answer was lost).
    async fn after(&self, method: &'static str) -> Result<()> {
        let _ = method;
        Ok(())
    }

    /// Whether a [`MetadataStore::commit_segments`] call finds `commit`'s partition row held by
    /// another transaction: such commits are not forwarded and are answered
    /// [`CommitOutcome::RowLocked`], as a database answers them (tests). Asked before `before`.
    fn row_held(&self, commit: &SegmentCommit) -> bool {
        let _ = commit;
        false
    }

    /// How long the call may take; past it, it is abandoned with [`MetadataError::Timeout`]
    /// (its outcome unknown, like any error of a write). `None`: unbounded.
    fn deadline(&self, method: &'static str) -> Option<Duration> {
        let _ = method;
        None
    }
}

/// A [`CallHook`] that bounds every call by one deadline, so a stalled database (a held row
/// lock, a paused server, a half-open connection) cannot keep a caller waiting without bound,
/// whatever limits the database itself enforces.
#[derive(Debug, Clone, Copy)]
pub struct CallDeadline(pub Duration);

impl CallHook for CallDeadline {
    fn deadline(&self, _method: &'static str) -> Option<Duration> {
        Some(self.0)
    }
}

/// Forwards every call to `inner`, running `hook` around it.
pub struct HookedMetadataStore<H> {
    inner: Arc<dyn MetadataStore>,
    hook: H,
}

impl<H> HookedMetadataStore<H> {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn MetadataStore>, hook: H) -> Self {
        Self { inner, hook }
    }

    /// The hook.
    pub fn hook(&self) -> &H {
        &self.hook
    }
}

/// Runs one forwarded call between the hook's `before` and `after`.
macro_rules! hooked {
    ($self:ident, $name:ident ( $($arg:ident),* )) => {{
        let method = stringify!($name);
        $self.hook.before(method).await?;
        let call = $self.inner.$name($($arg),*);
        let result = match $self.hook.deadline(method) {
            Some(after) => tokio::time::timeout(after, call)
                .await
                .unwrap_or(Err(MetadataError::Timeout { method, after })),
            None => call.await,
        };
        $self.hook.after(stringify!($name)).await?;
        result
    }};
}

#[async_trait]
impl<H: CallHook> MetadataStore for HookedMetadataStore<H> {
    async fn create_topic(&self, topic: NewTopic) -> Result<Topic> {
        hooked!(self, create_topic(topic))
    }

    async fn get_topic(&self, name: &str) -> Result<Option<Topic>> {
        hooked!(self, get_topic(name))
    }

    async fn list_topics(&self) -> Result<Vec<Topic>> {
        hooked!(self, list_topics())
    }

    async fn delete_topic(&self, name: &str, delete_after_ms: i64) -> Result<Vec<SegmentInfo>> {
        hooked!(self, delete_topic(name, delete_after_ms))
    }

    async fn add_partitions(&self, name: &str, new_count: u32) -> Result<Topic> {
        hooked!(self, add_partitions(name, new_count))
    }

    async fn update_topic_config(&self, name: &str, config: TopicConfig) -> Result<Topic> {
        hooked!(self, update_topic_config(name, config))
    }

    async fn get_partition(&self, topic: &str, partition: u32) -> Result<PartitionState> {
        hooked!(self, get_partition(topic, partition))
    }

    async fn get_partition_uncached(&self, topic: &str, partition: u32) -> Result<PartitionState> {
        hooked!(self, get_partition_uncached(topic, partition))
    }

    async fn list_partitions(&self, topic: &str) -> Result<Vec<PartitionState>> {
        hooked!(self, list_partitions(topic))
    }

    async fn commit_segments(&self, commits: &[SegmentCommit]) -> Result<Vec<CommitOutcome>> {
        let held: Vec<bool> = commits.iter().map(|c| self.hook.row_held(c)).collect();
        if !held.contains(&true) {
            return hooked!(self, commit_segments(commits));
        }
        let free: Vec<SegmentCommit> = commits
            .iter()
            .zip(&held)
            .filter(|(_, held)| !**held)
            .map(|(c, _)| c.clone())
            .collect();
        let commits = &free[..];
        let mut answered = hooked!(self, commit_segments(commits))?.into_iter();
        held.into_iter()
            .map(|held| match held {
                true => Ok(CommitOutcome::RowLocked),
                false => answered.next().ok_or_else(|| {
                    MetadataError::Corrupt("fewer commit outcomes than commits".into())
                }),
            })
            .collect()
    }

    async fn list_producer_snapshots(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Vec<ProducerSnapshot>> {
        hooked!(self, list_producer_snapshots(topic, partition))
    }

    async fn expire_producer_snapshots(&self, updated_before_ms: i64) -> Result<u64> {
        hooked!(self, expire_producer_snapshots(updated_before_ms))
    }

    async fn list_segments(
        &self,
        topic: &str,
        partition: u32,
        from_offset: i64,
    ) -> Result<Vec<SegmentInfo>> {
        hooked!(self, list_segments(topic, partition, from_offset))
    }

    async fn truncate_before(
        &self,
        topic: &str,
        partition: u32,
        new_log_start: i64,
        delete_after_ms: i64,
    ) -> Result<Vec<SegmentInfo>> {
        hooked!(
            self,
            truncate_before(topic, partition, new_log_start, delete_after_ms)
        )
    }

    async fn replace_segments(
        &self,
        merged: &SegmentInfo,
        fence: Option<&LeaseFence>,
        delete_after_ms: i64,
    ) -> Result<Vec<SegmentInfo>> {
        hooked!(self, replace_segments(merged, fence, delete_after_ms))
    }

    async fn compact_segments(
        &self,
        compacted: &SegmentInfo,
        replaced_records: i64,
        fence: Option<&LeaseFence>,
        delete_after_ms: i64,
    ) -> Result<Vec<SegmentInfo>> {
        hooked!(
            self,
            compact_segments(compacted, replaced_records, fence, delete_after_ms)
        )
    }

    async fn all_segment_keys(&self) -> Result<Vec<String>> {
        hooked!(self, all_segment_keys())
    }

    async fn schedule_object_deletions(&self, keys: &[String], delete_after_ms: i64) -> Result<()> {
        hooked!(self, schedule_object_deletions(keys, delete_after_ms))
    }

    async fn due_object_deletions(&self, now_ms: i64, limit: u32) -> Result<Vec<String>> {
        hooked!(self, due_object_deletions(now_ms, limit))
    }

    async fn forget_object_deletions(&self, keys: &[String]) -> Result<()> {
        hooked!(self, forget_object_deletions(keys))
    }

    async fn allocate_producer_id(&self) -> Result<i64> {
        hooked!(self, allocate_producer_id())
    }

    async fn claim_transaction(
        &self,
        transactional_id: &str,
        agent_id: &str,
        ttl_ms: i64,
    ) -> Result<Option<Transaction>> {
        hooked!(self, claim_transaction(transactional_id, agent_id, ttl_ms))
    }

    async fn get_transaction(&self, transactional_id: &str) -> Result<Option<Transaction>> {
        hooked!(self, get_transaction(transactional_id))
    }

    async fn transaction_of_producer(&self, producer_id: i64) -> Result<Option<Transaction>> {
        hooked!(self, transaction_of_producer(producer_id))
    }

    async fn list_transactions(&self) -> Result<Vec<Transaction>> {
        hooked!(self, list_transactions())
    }

    async fn update_transaction(&self, update: &TxnUpdate) -> Result<()> {
        hooked!(self, update_transaction(update))
    }

    async fn commit_txn_offsets(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        group: &str,
        offsets: &[CommittedOffset],
    ) -> Result<()> {
        hooked!(
            self,
            commit_txn_offsets(producer_id, producer_epoch, group, offsets)
        )
    }

    async fn pending_txn_offsets(&self, group: &str) -> Result<Vec<(String, u32)>> {
        hooked!(self, pending_txn_offsets(group))
    }

    async fn list_txn_markers(&self) -> Result<Vec<TxnMarker>> {
        hooked!(self, list_txn_markers())
    }

    async fn list_aborted_txns(
        &self,
        topic: &str,
        partition: u32,
        from_offset: i64,
    ) -> Result<Vec<AbortedTxn>> {
        hooked!(self, list_aborted_txns(topic, partition, from_offset))
    }

    async fn commit_offsets(
        &self,
        group: &str,
        fence: Option<&LeaseFence>,
        offsets: &[CommittedOffset],
    ) -> Result<()> {
        hooked!(self, commit_offsets(group, fence, offsets))
    }

    async fn fetch_offsets(
        &self,
        group: &str,
        topic: Option<&str>,
    ) -> Result<Vec<CommittedOffset>> {
        hooked!(self, fetch_offsets(group, topic))
    }

    async fn delete_offsets(
        &self,
        group: &str,
        fence: Option<&LeaseFence>,
        partitions: &[(String, u32)],
    ) -> Result<()> {
        hooked!(self, delete_offsets(group, fence, partitions))
    }

    async fn list_groups(&self) -> Result<Vec<String>> {
        hooked!(self, list_groups())
    }

    async fn delete_group(&self, group: &str, fence: Option<&LeaseFence>) -> Result<bool> {
        hooked!(self, delete_group(group, fence))
    }

    async fn register_agent(&self, agent: &AgentInfo) -> Result<()> {
        hooked!(self, register_agent(agent))
    }

    async fn heartbeat(&self, agent_id: &str, now_ms: i64) -> Result<bool> {
        hooked!(self, heartbeat(agent_id, now_ms))
    }

    async fn list_agents(&self, alive_since_ms: i64) -> Result<Vec<AgentInfo>> {
        hooked!(self, list_agents(alive_since_ms))
    }

    async fn deregister_agent(&self, agent_id: &str) -> Result<()> {
        hooked!(self, deregister_agent(agent_id))
    }

    async fn acquire_lease(
        &self,
        topic: &str,
        partition: u32,
        agent_id: &str,
        ttl_ms: i64,
    ) -> Result<Option<PartitionLease>> {
        hooked!(self, acquire_lease(topic, partition, agent_id, ttl_ms))
    }

    async fn acquire_leases(
        &self,
        agent_id: &str,
        partitions: &[(String, u32)],
        ttl_ms: i64,
    ) -> Result<Vec<PartitionLease>> {
        hooked!(self, acquire_leases(agent_id, partitions, ttl_ms))
    }

    async fn renew_leases(
        &self,
        agent_id: &str,
        held: &[HeldLease],
        ttl_ms: i64,
    ) -> Result<Vec<PartitionLease>> {
        hooked!(self, renew_leases(agent_id, held, ttl_ms))
    }

    async fn release_lease(
        &self,
        topic: &str,
        partition: u32,
        agent_id: &str,
        epoch: i64,
    ) -> Result<()> {
        hooked!(self, release_lease(topic, partition, agent_id, epoch))
    }

    async fn list_leases(&self) -> Result<Vec<PartitionLease>> {
        hooked!(self, list_leases())
    }

    async fn acquire_group_lease(
        &self,
        group: &str,
        agent_id: &str,
        ttl_ms: i64,
    ) -> Result<Option<GroupLease>> {
        hooked!(self, acquire_group_lease(group, agent_id, ttl_ms))
    }

    async fn renew_group_leases(
        &self,
        agent_id: &str,
        held: &[(String, i64)],
        ttl_ms: i64,
    ) -> Result<Vec<GroupLease>> {
        hooked!(self, renew_group_leases(agent_id, held, ttl_ms))
    }

    async fn release_group_lease(&self, group: &str, fence: &LeaseFence) -> Result<()> {
        hooked!(self, release_group_lease(group, fence))
    }

    async fn record_group_generation(
        &self,
        group: &str,
        fence: &LeaseFence,
        generation: i32,
    ) -> Result<()> {
        hooked!(self, record_group_generation(group, fence, generation))
    }

    async fn list_group_leases(&self) -> Result<Vec<GroupLease>> {
        hooked!(self, list_group_leases())
    }

    async fn upsert_credential(&self, credential: &UserCredential) -> Result<()> {
        hooked!(self, upsert_credential(credential))
    }

    async fn get_credential(&self, user: &str, mechanism: &str) -> Result<Option<UserCredential>> {
        hooked!(self, get_credential(user, mechanism))
    }

    async fn list_credentials(&self) -> Result<Vec<UserCredential>> {
        hooked!(self, list_credentials())
    }

    async fn delete_credential(&self, user: &str, mechanism: &str) -> Result<bool> {
        hooked!(self, delete_credential(user, mechanism))
    }

    async fn create_acls(&self, acls: &[AclBinding]) -> Result<()> {
        hooked!(self, create_acls(acls))
    }

    async fn list_acls(&self, filter: &AclBindingFilter) -> Result<Vec<AclBinding>> {
        hooked!(self, list_acls(filter))
    }

    async fn delete_acls(&self, filter: &AclBindingFilter) -> Result<Vec<AclBinding>> {
        hooked!(self, delete_acls(filter))
    }
}
