//! The metadata store's interface: narrow traits by responsibility, each declared once by
//! [`store_trait!`] together with its forwarding, and [`MetadataStore`], every one of them.
//!
//! | trait           | holds                                                              |
//! |-----------------|--------------------------------------------------------------------|
//! | [`Catalog`]     | topics, their settings and partitions                              |
//! | [`SegmentLog`]  | segments, high watermarks, producer state, scheduled deletions     |
//! | [`Leases`]      | agents and partition leases                                        |
//! | [`GroupStore`]  | consumer groups: committed offsets and coordinator leases          |
//! | [`Credentials`] | SASL/SCRAM credentials                                             |
//! | [`AclStore`]    | ACL bindings                                                       |
//! | [`TxnStore`]    | transactions, their pending markers and aborted ranges             |
//!
//! A wrapper of another store (a cache, a hook around every call) is a [`Layer`]: it implements
//! each trait's layer (`CatalogLayer`, ...) and overrides only the methods it changes; every
//! other method is forwarded to [`Layer::inner`] through [`Layer::around`] by code generated
//! from the one method list. A blanket impl makes every layer a store.

use async_trait::async_trait;
use futures::future::BoxFuture;

use crate::{
    AbortedTxn, AclBinding, AclBindingFilter, AgentInfo, CommitOutcome, CommittedOffset,
    GroupLease, HeldLease, LeaseFence, MetadataError, NewTopic, PartitionLease, PartitionState,
    ProducerSnapshot, ProducerSnapshots, Result, SegmentCommit, SegmentInfo, SegmentTotals, Topic,
    TopicConfig, Transaction, TxnMarker, TxnUpdate, UserCredential,
};

/// A change of a topic's settings, as [`Catalog::alter_topic_config`] applies it: the new
/// settings from the current ones, or why the change is refused.
pub type TopicConfigChange<'a> =
    dyn Fn(&TopicConfig) -> std::result::Result<TopicConfig, String> + Send + Sync + 'a;

/// Everything StreamHouse keeps outside object storage: every narrow store trait.
///
/// Implementations must be safe to share between tasks and, for the PostgreSQL backend, between
/// agents: every method that could race with another writer is atomic. Implement the narrow
/// traits (or, for a wrapper, their layers); this trait comes with them. Callers bring the
/// traits whose methods they call into scope with `use streamhouse_metadata::prelude::*`.
pub trait MetadataStore:
    Catalog + SegmentLog + Leases + GroupStore + Credentials + AclStore + TxnStore
{
}

impl<T> MetadataStore for T where
    T: Catalog + SegmentLog + Leases + GroupStore + Credentials + AclStore + TxnStore
{
}

/// A store in front of another one that forwards every call it does not change.
///
/// A wrapper implements this and the layer of every narrow trait (`CatalogLayer` for
/// [`Catalog`], ...), overriding only the methods whose behaviour it changes (an empty
/// `impl LeasesLayer for Wrapper {}` forwards all of [`Leases`]). Forwarding is generated from
/// the one method list of each trait, so a new method reaches every wrapper without anyone
/// writing it out again, and a wrapper cannot forget one.
pub trait Layer: Send + Sync + 'static {
    /// The store calls are forwarded to.
    fn inner(&self) -> &dyn MetadataStore;

    /// Runs `call`, the forwarded call of `method` (the trait method's name); by default, just
    /// that. A wrapper that observes or bounds every call (`HookedMetadataStore`) wraps it here
    /// once for all methods.
    fn around<'a, T: Send + 'a>(
        &'a self,
        method: &'static str,
        call: BoxFuture<'a, Result<T>>,
    ) -> BoxFuture<'a, Result<T>> {
        let _ = method;
        call
    }
}

/// Declares one narrow store trait from its method list, written only here, and with it:
/// - `$layer`: the same methods for a [`Layer`], each by default forwarded to the inner store
///   through [`Layer::around`], so a wrapper overrides only what it changes;
/// - the blanket impl of the trait for every `$layer`.
///
/// Methods in the `provided { ... }` block have default bodies built on the listed ones: they
/// are never forwarded (a wrapper's overrides then apply to them too).
macro_rules! store_trait {
    (
        $(#[$doc:meta])*
        pub trait $trait:ident, layer $layer:ident {
            $(
                $(#[$method_doc:meta])*
                async fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty;
            )*
        }
        $(provided { $($provided:tt)* })?
    ) => {
        $(#[$doc])*
        #[async_trait]
        pub trait $trait: Send + Sync + 'static {
            $(
                $(#[$method_doc])*
                async fn $name(&self $(, $arg: $ty)*) -> $ret;
            )*
            $($($provided)*)?
        }

        #[doc = concat!("[`", stringify!($trait), "`] of a [`Layer`]: every method is forwarded ")]
        #[doc = "to [`Layer::inner`] through [`Layer::around`] unless the layer overrides it."]
        #[async_trait]
        pub trait $layer: Layer {
            $(
                #[doc = concat!("[`", stringify!($trait), "::", stringify!($name), "`].")]
                async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    self.around(stringify!($name), self.inner().$name($($arg),*)).await
                }
            )*
        }

        #[async_trait]
        impl<L: $layer> $trait for L {
            $(
                async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    <L as $layer>::$name(self $(, $arg)*).await
                }
            )*
        }
    };
}

store_trait! {
    /// Topics: their names, settings and partitions, and each partition's durable progress.
    pub trait Catalog, layer CatalogLayer {
        /// Creates a topic and its partitions (high watermark 0). Fails with `TopicExists`.
        async fn create_topic(&self, topic: NewTopic) -> Result<Topic>;

        /// Looks a topic up by name.
        async fn get_topic(&self, name: &str) -> Result<Option<Topic>>;

        /// All topics, ordered by name.
        async fn list_topics(&self) -> Result<Vec<Topic>>;

        /// Deletes a topic with its partitions, segments, leases and committed offsets, schedules
        /// the deletion of its objects at `delete_after_ms` (see
        /// [`SegmentLog::schedule_object_deletions`]) in the same transaction, and returns the
        /// segments it had. Fails with `UnknownTopic`.
        async fn delete_topic(&self, name: &str, delete_after_ms: i64) -> Result<Vec<SegmentInfo>>;

        /// Grows a topic to `new_count` partitions. Shrinking or keeping the count is `Invalid`.
        async fn add_partitions(&self, name: &str, new_count: u32) -> Result<Topic>;

        /// Changes a topic's settings to `change(current settings)`, reading and writing them in
        /// one transaction with the topic's row locked, so alterations running at once (two
        /// connections, two agents) each see the other's result instead of overwriting it. An
        /// error of `change` is returned as `Invalid`, with nothing stored.
        async fn alter_topic_config(&self, name: &str, change: &TopicConfigChange<'_>) -> Result<Topic>;

        /// One partition's durable progress.
        async fn get_partition(&self, topic: &str, partition: u32) -> Result<PartitionState>;

        /// [`Catalog::get_partition`] from the database itself, never from a cache in front of
        /// it: for checks that must see what other agents wrote. (A backend answers it as
        /// `get_partition`.)
        async fn get_partition_uncached(
            &self,
            topic: &str,
            partition: u32,
        ) -> Result<PartitionState>;

        /// Every partition of a topic, ordered by index (never from a cache).
        async fn list_partitions(&self, topic: &str) -> Result<Vec<PartitionState>>;
    }
}

store_trait! {
    /// The log of every partition: its segments and high watermark (the group commit and the
    /// fenced swaps of consolidation, compaction and retention), the idempotent producers
    /// writing it, and the object deletions its changes schedule.
    pub trait SegmentLog, layer SegmentLogLayer {
        /// Group commit: records each segment and advances its partition's high watermark to
        /// `last_offset + 1`, with its producer snapshots, all in ONE transaction, and returns one
        /// outcome per commit (in order). Each commit is decided on its own: one whose lease is not
        /// held ([`CommitOutcome::Fenced`]) or whose base offset is not the high watermark
        /// ([`CommitOutcome::OffsetConflict`]) records nothing and does not stop the others; nor
        /// does one whose partition row another transaction holds past a short wait
        /// ([`CommitOutcome::RowLocked`]), so one locked row never stalls a whole group commit.
        ///
        /// Idempotent: a commit whose exact segment (object key, byte range, offsets) is already
        /// recorded is [`CommitOutcome::Committed`] again, so a caller that lost the answer to an
        /// earlier attempt resolves it by retrying the same commits. An `Err` means the outcome is
        /// unknown (nothing or everything was recorded).
        async fn commit_segments(&self, commits: &[SegmentCommit]) -> Result<Vec<CommitOutcome>>;

        /// Every producer snapshot of a partition, ordered by producer id, with the partition's
        /// bound on forgotten producers (0 for an unknown partition).
        async fn list_producer_snapshots(
            &self,
            topic: &str,
            partition: u32,
        ) -> Result<ProducerSnapshots>;

        /// Deletes the producer snapshots last updated before `updated_before_ms` (Kafka's
        /// `producer.id.expiration.ms`) and, in the same transaction, raises each affected
        /// partition's [`ProducerSnapshots::forgotten_below`] past the ids deleted; returns how
        /// many were deleted.
        async fn expire_producer_snapshots(&self, updated_before_ms: i64) -> Result<u64>;

        /// Allocates a fresh, never-reused idempotent producer id.
        async fn allocate_producer_id(&self) -> Result<i64>;

        /// Segments of a partition whose `last_offset >= from_offset`, ordered by base offset.
        async fn list_segments(
            &self,
            topic: &str,
            partition: u32,
            from_offset: i64,
        ) -> Result<Vec<SegmentInfo>>;

        /// The first `limit` of [`SegmentLog::list_segments`]: a page of a partition's segments,
        /// for callers that need only the start of a log whose rows grow with its retention.
        async fn list_segments_page(
            &self,
            topic: &str,
            partition: u32,
            from_offset: i64,
            limit: u32,
        ) -> Result<Vec<SegmentInfo>>;

        /// Count, bytes and newest timestamp of a partition's segments, added up by the store
        /// rather than listed.
        async fn segment_totals(&self, topic: &str, partition: u32) -> Result<SegmentTotals>;

        /// The first segment of a partition, in offset order, holding a record timestamped
        /// `timestamp_ms` or later (Kafka ListOffsets by time); `None` when none does.
        async fn first_segment_reaching(
            &self,
            topic: &str,
            partition: u32,
            timestamp_ms: i64,
        ) -> Result<Option<SegmentInfo>>;

        /// Deletes segments lying wholly below `new_log_start`, raises the log start offset to
        /// `new_log_start` (never lowers it, never past the high watermark), schedules their
        /// objects for deletion at `delete_after_ms` in the same transaction, and returns the
        /// deleted segments.
        async fn truncate_before(
            &self,
            topic: &str,
            partition: u32,
            new_log_start: i64,
            delete_after_ms: i64,
        ) -> Result<Vec<SegmentInfo>>;

        /// Consolidation: replaces the adjacent segments that exactly tile
        /// `merged.base_offset..=merged.last_offset` by `merged`, in one transaction, and returns
        /// how many it replaced, scheduling their objects for deletion at `delete_after_ms` (once
        /// no reader can still be using them) in the same transaction. The high watermark and log
        /// start do not change. Refused with `Invalid` when the segments there no longer tile that
        /// range (retention or another consolidation got there first) or the record counts
        /// disagree, and with `Fenced` as [`SegmentLog::commit_segment`] is.
        async fn replace_segments(
            &self,
            merged: &SegmentInfo,
            fence: Option<&LeaseFence>,
            delete_after_ms: i64,
        ) -> Result<usize>;

        /// Log compaction: like [`SegmentLog::replace_segments`], but `compacted` holds fewer
        /// records than the segments it replaces (its offsets have gaps): the replaced segments
        /// must exactly tile `compacted.base_offset..=compacted.last_offset` and hold
        /// `replaced_records` records in all (what the compactor read, so a segment swapped in the
        /// meantime refuses the swap with `Invalid`). Fenced like `replace_segments`; the high
        /// watermark and log start do not change.
        async fn compact_segments(
            &self,
            compacted: &SegmentInfo,
            replaced_records: i64,
            fence: Option<&LeaseFence>,
            delete_after_ms: i64,
        ) -> Result<usize>;

        /// Object keys referenced by committed segments, each once, for the orphan janitor.
        async fn all_segment_keys(&self) -> Result<Vec<String>>;

        /// Records that the objects `keys` are to be deleted once `delete_after_ms` has passed and
        /// no segment references them (a key already scheduled keeps its time). Kept in the store,
        /// so a crash forgets no pending deletion.
        async fn schedule_object_deletions(
            &self,
            keys: &[String],
            delete_after_ms: i64,
        ) -> Result<()>;

        /// Up to `limit` scheduled objects that are due at `now_ms` and referenced by no segment,
        /// oldest first. A shared object still referenced by another partition's segment is not
        /// returned (it stays scheduled).
        async fn due_object_deletions(&self, now_ms: i64, limit: u32) -> Result<Vec<String>>;

        /// Forgets scheduled deletions once their objects are gone.
        async fn forget_object_deletions(&self, keys: &[String]) -> Result<()>;
    }
    provided {
        /// One segment's [`SegmentLog::commit_segments`], with its outcome as an error: refused
        /// with `OffsetConflict` unless `base_offset` equals the current high watermark, and with
        /// `Fenced` when `fence` is given and the lease is not held by that agent at that epoch (or
        /// has expired, by the database's clock, before the transaction commits).
        async fn commit_segment(
            &self,
            segment: &SegmentInfo,
            fence: Option<&LeaseFence>,
        ) -> Result<()> {
            self.commit_segment_with_producers(segment, &[], fence)
                .await
        }

        /// [`SegmentLog::commit_segment`], also replacing the snapshots of the producers that
        /// wrote the segment, in the same transaction.
        async fn commit_segment_with_producers(
            &self,
            segment: &SegmentInfo,
            producers: &[ProducerSnapshot],
            fence: Option<&LeaseFence>,
        ) -> Result<()> {
            let commit = SegmentCommit {
                segment: segment.clone(),
                producers: producers.to_vec(),
                fence: fence.cloned(),
                markers: Vec::new(),
            };
            let outcome = self.commit_segments(std::slice::from_ref(&commit)).await?;
            outcome_as_result(segment, fence, outcome.first())
        }
    }
}

/// A single commit's outcome as [`SegmentLog::commit_segment`] answers it.
fn outcome_as_result(
    segment: &SegmentInfo,
    fence: Option<&LeaseFence>,
    outcome: Option<&CommitOutcome>,
) -> Result<()> {
    match outcome {
        Some(CommitOutcome::Committed) => Ok(()),
        Some(CommitOutcome::OffsetConflict { high_watermark }) => {
            Err(MetadataError::OffsetConflict {
                topic: segment.topic.clone(),
                partition: segment.partition,
                base_offset: segment.base_offset,
                high_watermark: *high_watermark,
            })
        }
        Some(CommitOutcome::UnknownPartition { topic_exists: true }) => {
            Err(MetadataError::UnknownPartition {
                topic: segment.topic.clone(),
                partition: segment.partition,
            })
        }
        Some(CommitOutcome::UnknownPartition {
            topic_exists: false,
        }) => Err(MetadataError::UnknownTopic(segment.topic.clone())),
        Some(CommitOutcome::RowLocked) => Err(MetadataError::RowLocked {
            topic: segment.topic.clone(),
            partition: segment.partition,
        }),
        Some(CommitOutcome::Fenced) | None => Err(MetadataError::Fenced {
            topic: segment.topic.clone(),
            partition: segment.partition,
            agent_id: fence.map(|f| f.agent_id.clone()).unwrap_or_default(),
            epoch: fence.map_or(0, |f| f.epoch),
        }),
    }
}

store_trait! {
    /// The agents of a cluster and which of them leads each partition (partition leases).
    pub trait Leases, layer LeasesLayer {
        /// Registers an agent or refreshes its row and heartbeat.
        async fn register_agent(&self, agent: &AgentInfo) -> Result<()>;

        /// Records a heartbeat. Returns false when the agent is not registered.
        async fn heartbeat(&self, agent_id: &str, now_ms: i64) -> Result<bool>;

        /// Agents whose last heartbeat is at or after `alive_since_ms`.
        async fn list_agents(&self, alive_since_ms: i64) -> Result<Vec<AgentInfo>>;

        /// Removes an agent's registration.
        async fn deregister_agent(&self, agent_id: &str) -> Result<()>;

        /// Takes or renews a partition lease for `agent_id` until `ttl_ms` past the database's
        /// clock (every lease expiry is judged by it, so agents' clock skew cannot cut a lease
        /// short). Succeeds when the lease is free, expired, or already held by `agent_id`; the
        /// epoch increases whenever the holder changes (or the lease had expired). Returns `None`
        /// when another agent holds an unexpired lease.
        async fn acquire_lease(
            &self,
            topic: &str,
            partition: u32,
            agent_id: &str,
            ttl_ms: i64,
        ) -> Result<Option<PartitionLease>>;

        /// [`Leases::acquire_lease`] for many partitions in one transaction (one statement
        /// besides the row locks): each lease is taken or renewed exactly as `acquire_lease` would.
        /// Returns the leases now held by `agent_id`, ordered by topic, partition; a partition
        /// another agent holds unexpired is left out, and so is one that does not exist (its topic
        /// was deleted meanwhile) and (PostgreSQL) one whose row another transaction holds: it is
        /// skipped rather than waited for.
        async fn acquire_leases(
            &self,
            agent_id: &str,
            partitions: &[(String, u32)],
            ttl_ms: i64,
        ) -> Result<Vec<PartitionLease>>;

        /// Extends to `ttl_ms` past the database's clock, in one statement, every lease of `held`
        /// that `agent_id` still holds at that epoch, unexpired. Returns the renewed leases,
        /// ordered by topic, partition; one left out was lost (taken over, released, or expired)
        /// and is never revived here: its epoch, holder and expiry are untouched.
        async fn renew_leases(
            &self,
            agent_id: &str,
            held: &[HeldLease],
            ttl_ms: i64,
        ) -> Result<Vec<PartitionLease>>;

        /// Gives a lease up early (only if held by `agent_id` at `epoch`).
        async fn release_lease(
            &self,
            topic: &str,
            partition: u32,
            agent_id: &str,
            epoch: i64,
        ) -> Result<()>;

        /// All leases (expired ones included), ordered by topic, partition.
        async fn list_leases(&self) -> Result<Vec<PartitionLease>>;
    }
}

store_trait! {
    /// Consumer groups: their committed offsets and their coordinators' leases.
    pub trait GroupStore, layer GroupStoreLayer {
        /// Stores (upserts) offsets for a group atomically. With `fence`, only while that agent
        /// holds the group's coordinator lease at that epoch, unexpired by the database's clock
        /// (checked in the same transaction, which a takeover waits for); otherwise nothing is
        /// stored and the call fails with `GroupFenced`. Without, unconditionally (operator
        /// resets).
        async fn commit_offsets(
            &self,
            group: &str,
            fence: Option<&LeaseFence>,
            offsets: &[CommittedOffset],
        ) -> Result<()>;

        /// A group's committed offsets, optionally only for one topic, ordered by topic, partition.
        async fn fetch_offsets(
            &self,
            group: &str,
            topic: Option<&str>,
        ) -> Result<Vec<CommittedOffset>>;

        /// Removes a group's offsets for the given partitions. With `fence`, only under the
        /// group's coordinator lease, as [`GroupStore::commit_offsets`] (else `GroupFenced`,
        /// nothing removed).
        async fn delete_offsets(
            &self,
            group: &str,
            fence: Option<&LeaseFence>,
            partitions: &[(String, u32)],
        ) -> Result<()>;

        /// Names of groups that have committed offsets.
        async fn list_groups(&self) -> Result<Vec<String>>;

        /// Removes every offset of a group. Returns whether the group had any. With `fence`, only
        /// under the group's coordinator lease, as [`GroupStore::commit_offsets`] (else
        /// `GroupFenced`, nothing removed).
        async fn delete_group(&self, group: &str, fence: Option<&LeaseFence>) -> Result<bool>;

        /// Takes or renews the coordinator lease of `group` for `agent_id`, until `ttl_ms` past the
        /// database's clock. Succeeds when the lease is free, expired, or already held by
        /// `agent_id`; the epoch increases whenever the holder changes (or the lease had expired),
        /// and the recorded generation is kept. Returns `None` when another agent holds it
        /// unexpired.
        async fn acquire_group_lease(
            &self,
            group: &str,
            agent_id: &str,
            ttl_ms: i64,
        ) -> Result<Option<GroupLease>>;

        /// Extends by `ttl_ms` (from the database's clock), in one statement, every lease among
        /// `held` (group id, epoch) that `agent_id` still holds at that epoch, unexpired. Returns
        /// the renewed leases, ordered by group id. One left out was lost, or (PostgreSQL) its row
        /// was locked by a transaction in progress and skipped rather than waited for: its holder
        /// keeps it while it is valid and tries again. A lost lease is never revived here.
        async fn renew_group_leases(
            &self,
            agent_id: &str,
            held: &[(String, i64)],
            ttl_ms: i64,
        ) -> Result<Vec<GroupLease>>;

        /// Gives a group's lease up early (only if held at `fence`), so the next coordinator can
        /// take it at once; the generation stays.
        async fn release_group_lease(&self, group: &str, fence: &LeaseFence) -> Result<()>;

        /// Records that the holder of `fence` hands out `generation` of `group` (never lowering the
        /// recorded one), so later coordinators continue after it. Fails with `GroupFenced` unless
        /// the lease is held at `fence`, unexpired by the database's clock.
        async fn record_group_generation(
            &self,
            group: &str,
            fence: &LeaseFence,
            generation: i32,
        ) -> Result<()>;

        /// The unexpired coordinator leases (by the database's clock), ordered by group id.
        async fn list_group_leases(&self) -> Result<Vec<GroupLease>>;

        /// Stores the holder of `fence`'s snapshot of `group`'s membership at `generation`
        /// (opaque to the store; `None` clears it), so a later coordinator can serve the group
        /// as it stood. A stored snapshot of a later generation is kept (the call succeeds
        /// without effect). Fails with `GroupFenced` unless the lease is held at `fence`,
        /// unexpired by the database's clock.
        async fn record_group_members(
            &self,
            group: &str,
            fence: &LeaseFence,
            generation: i32,
            members: Option<&str>,
        ) -> Result<()>;

        /// The membership snapshot stored for `group` and the generation it is of; `None` when
        /// there is none (never stored, or cleared).
        async fn group_members(&self, group: &str) -> Result<Option<(i32, String)>>;
    }
}

store_trait! {
    /// Transactions (KIP-98): each transactional id's state under its coordinator's lease, the
    /// markers a decision still has to write, aborted ranges and transactional offsets.
    pub trait TxnStore, layer TxnStoreLayer {
        /// Takes or renews the coordinator lease of `transactional_id` for `agent_id`, until
        /// `ttl_ms` past the database's clock, creating its row (state Empty, no producer id) on
        /// first use. As [`GroupStore::acquire_group_lease`]: the epoch increases whenever the
        /// holder changes or the lease had expired; `None` when another agent holds it unexpired.
        async fn claim_transaction(
            &self,
            transactional_id: &str,
            agent_id: &str,
            ttl_ms: i64,
        ) -> Result<Option<Transaction>>;

        /// A transactional id's state, if it was ever claimed.
        async fn get_transaction(&self, transactional_id: &str) -> Result<Option<Transaction>>;

        /// The transaction that holds `producer_id`, if any (KIP-890 verification of a
        /// transactional write).
        async fn transaction_of_producer(&self, producer_id: i64) -> Result<Option<Transaction>>;

        /// Every transactional id's state, ordered by id.
        async fn list_transactions(&self) -> Result<Vec<Transaction>>;

        /// Applies `update` if the row is still at `expected_version` and its lease is held by
        /// `update.next.coordinator` at `update.next.coordinator_epoch`, unexpired by the
        /// database's clock; extends the lease and bumps the version. With a decision, in the same
        /// transaction: one pending [`TxnMarker`] per partition of `update.next`, and the offsets
        /// committed in the transaction moved to the groups' committed offsets (commit) or dropped
        /// (abort). Refused with `TxnConflict`, changing nothing.
        async fn update_transaction(&self, update: &TxnUpdate) -> Result<()>;

        /// Stores offsets committed inside the open transaction of `producer_id` (TxnOffsetCommit),
        /// visible in `group` only once it commits. Refused with `TxnConflict` unless that
        /// producer's transaction is Ongoing at `producer_epoch` with `group` added.
        async fn commit_txn_offsets(
            &self,
            producer_id: i64,
            producer_epoch: i16,
            group: &str,
            offsets: &[CommittedOffset],
        ) -> Result<()>;

        /// The partitions of `group` with offsets committed in a transaction still open (KIP-447:
        /// OffsetFetch with `require_stable` answers UNSTABLE_OFFSET_COMMIT for them), ordered.
        async fn pending_txn_offsets(&self, group: &str) -> Result<Vec<(String, u32)>>;

        /// Every marker still to be written, ordered by topic, partition, producer id.
        async fn list_txn_markers(&self) -> Result<Vec<TxnMarker>>;

        /// A partition's aborted transactions whose marker is at or after `from_offset`, ordered
        /// by marker offset.
        async fn list_aborted_txns(
            &self,
            topic: &str,
            partition: u32,
            from_offset: i64,
        ) -> Result<Vec<AbortedTxn>>;
    }
}

store_trait! {
    /// SASL/SCRAM credentials, one per user and mechanism.
    pub trait Credentials, layer CredentialsLayer {
        /// Creates or replaces the credential of `(user, mechanism)`.
        async fn upsert_credential(&self, credential: &UserCredential) -> Result<()>;

        /// The credential of `user` for `mechanism`, if any.
        async fn get_credential(
            &self,
            user: &str,
            mechanism: &str,
        ) -> Result<Option<UserCredential>>;

        /// Every credential, ordered by user and mechanism (agents load them to authenticate).
        async fn list_credentials(&self) -> Result<Vec<UserCredential>>;

        /// Deletes the credential of `(user, mechanism)`; `false` when there was none.
        async fn delete_credential(&self, user: &str, mechanism: &str) -> Result<bool>;
    }
}

store_trait! {
    /// ACL bindings (Kafka's authorization model, see [`AclBinding`]).
    pub trait AclStore, layer AclStoreLayer {
        /// Stores `acls` in one transaction; bindings that already exist are left as they are.
        async fn create_acls(&self, acls: &[AclBinding]) -> Result<()>;

        /// The bindings `filter` selects, ordered (agents load them all to authorize).
        async fn list_acls(&self, filter: &AclBindingFilter) -> Result<Vec<AclBinding>>;

        /// Deletes the bindings `filter` selects and returns them, ordered.
        async fn delete_acls(&self, filter: &AclBindingFilter) -> Result<Vec<AclBinding>>;
    }
}
