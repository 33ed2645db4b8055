//! The transaction coordinator (KIP-98), one per `transactional.id`, and the agent's share of
//! finishing transactions.
//!
//! A transactional id is coordinated by the agent the shared assignment names for it (the same
//! placement as consumer groups), under a lease kept in its `transactions` row: every change is
//! a compare-and-set on the row's version under an unexpired lease (`update_transaction`), so
//! one agent at a time changes it and a new owner continues from the row.
//!
//! A decision (EndTxn, a fenced producer, a timeout) is durable in one metadata transaction
//! with one pending marker per partition. Markers are written by each partition's leader: every
//! agent polls the pending markers (and is woken at once when it decided one itself), appends
//! the control batch to the partitions it leads, and the segment commit that stores it deletes
//! the pending row and, with the last one, completes the transaction. So a transaction over
//! partitions led by several agents commits or aborts on every one of them, whichever agent
//! fails, without agents ever calling each other.

use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use streamhouse_metadata::{now_ms, MetadataError, Transaction, TxnMarker, TxnState, TxnUpdate};
use tracing::{debug, info, warn};

use streamhouse_metadata::MetadataStore;
use tokio::sync::Notify;

use crate::config::BrokerConfig;
use crate::errors::metadata_error_code;
use crate::membership::Membership;
use crate::partitions::Partitions;

/// How often every agent looks for markers to write on partitions it leads (it is woken at
/// once for the decisions it takes itself).
const MARKER_POLL: Duration = Duration::from_millis(200);
/// How often open transactions are checked against their timeout.
const TIMEOUT_SWEEP: Duration = Duration::from_secs(1);
/// Compare-and-set attempts of one request before it answers CONCURRENT_TRANSACTIONS.
const CAS_ATTEMPTS: usize = 3;
/// Kafka's default `transaction.max.timeout.ms`: a longer `transaction.timeout.ms` is refused.
const MAX_TIMEOUT_MS: i32 = 900_000;

/// A refused transaction request: its Kafka error and why.
#[derive(Debug)]
pub(crate) struct TxnError {
    pub(crate) code: ResponseError,
    pub(crate) message: String,
}

impl TxnError {
    fn new(code: ResponseError, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<MetadataError> for TxnError {
    fn from(e: MetadataError) -> Self {
        let code = match &e {
            MetadataError::TxnConflict { .. } => ResponseError::ConcurrentTransactions,
            e => metadata_error_code(e),
        };
        Self::new(code, e.to_string())
    }
}

/// The producer id and epoch a request says it is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TxnProducer {
    pub(crate) id: i64,
    pub(crate) epoch: i16,
}

/// What a request does to its transaction's row.
type Change<'a, T> =
    &'a (dyn Fn(&Transaction) -> Result<(Option<TxnUpdate>, T), TxnError> + Send + Sync);

/// The transaction coordinator of this agent and its share of writing markers.
pub(crate) struct Transactions {
    config: BrokerConfig,
    agent_id: String,
    metadata: Arc<dyn MetadataStore>,
    membership: Arc<Membership>,
    partitions: Arc<Partitions>,
    /// Wakes the marker writer: this agent decided a transaction.
    markers_due: Arc<Notify>,
}

impl Transactions {
    /// The coordinator of the agent whose services these are.
    pub(crate) fn new(
        config: BrokerConfig,
        agent_id: String,
        metadata: Arc<dyn MetadataStore>,
        membership: Arc<Membership>,
        partitions: Arc<Partitions>,
    ) -> Self {
        Self {
            config,
            agent_id,
            metadata,
            membership,
            partitions,
            markers_due: Arc::default(),
        }
    }

    /// Coordinates `id`: takes or renews its lease when the assignment names this agent, and
    /// runs `change` on the row until its compare-and-set goes through.
    async fn with_txn<T>(&self, id: &str, change: Change<'_, T>) -> Result<T, TxnError> {
        for _ in 0..CAS_ATTEMPTS {
            let txn = self.claim_txn(id).await?;
            let (update, answer) = change(&txn)?;
            let Some(update) = update else {
                return Ok(answer);
            };
            match self.metadata.update_transaction(&update).await {
                Ok(()) => {
                    if update.decision.is_some() {
                        info!(
                            transactional_id = id,
                            state = update.next.state.name(),
                            producer_id = update.next.producer_id,
                            "transaction decided"
                        );
                        self.markers_due.notify_one();
                    }
                    return Ok(answer);
                }
                Err(MetadataError::TxnConflict { reason, .. }) => {
                    debug!(transactional_id = id, %reason, "transaction changed meanwhile; again")
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(TxnError::new(
            ResponseError::ConcurrentTransactions,
            format!("transaction '{id}' kept changing"),
        ))
    }

    async fn claim_txn(&self, id: &str) -> Result<Transaction, TxnError> {
        let not_here = || {
            TxnError::new(
                ResponseError::NotCoordinator,
                format!("this agent does not coordinate transactional id '{id}'"),
            )
        };
        if id.is_empty() {
            return Err(TxnError::new(
                ResponseError::InvalidRequest,
                "empty transactional id",
            ));
        }
        if self.membership.is_stopping() || !self.membership.coordinates(id) {
            return Err(not_here());
        }
        let claimed = self
            .metadata
            .claim_transaction(id, &self.agent_id, self.config.lease_ttl_ms())
            .await?;
        claimed.ok_or_else(not_here)
    }

    /// InitProducerId with a transactional id: the same producer id at the next epoch, which
    /// fences older instances. An open transaction is aborted first (at a bumped epoch, so its
    /// markers fence the old instance on every partition); the client retries meanwhile.
    pub(crate) async fn init_txn_producer(
        &self,
        id: &str,
        timeout_ms: i32,
        claimed: Option<TxnProducer>,
    ) -> Result<TxnProducer, TxnError> {
        if timeout_ms <= 0 || timeout_ms > MAX_TIMEOUT_MS {
            return Err(TxnError::new(
                ResponseError::InvalidTransactionTimeout,
                format!("transaction timeout {timeout_ms} ms outside 1..={MAX_TIMEOUT_MS}"),
            ));
        }
        // A new producer id for a new transactional id or an exhausted epoch, taken before
        // the compare-and-set (which may run several times).
        let needs_id = self
            .metadata
            .get_transaction(id)
            .await?
            .is_none_or(|t| t.producer_id < 0 || t.producer_epoch >= i16::MAX - 2);
        let new_id = match needs_id {
            true => Some(self.metadata.allocate_producer_id().await?),
            false => None,
        };
        let ttl = self.config.lease_ttl_ms();
        self.with_txn(id, &|txn| {
            init_change(txn, timeout_ms, claimed, new_id, ttl)
        })
        .await?
    }

    /// AddPartitionsToTxn: the partitions join the producer's transaction (opening it).
    pub(crate) async fn add_txn_partitions(
        &self,
        id: &str,
        producer: TxnProducer,
        partitions: &[(String, u32)],
    ) -> Result<(), TxnError> {
        let ttl = self.config.lease_ttl_ms();
        self.with_txn(id, &|txn| {
            let mut next = begin(txn, producer)?;
            next.partitions.extend(partitions.iter().cloned());
            next.partitions.sort();
            next.partitions.dedup();
            Ok((changed(txn, next, ttl, None), ()))
        })
        .await
    }

    /// AddOffsetsToTxn: the group's offsets will be committed with the transaction.
    pub(crate) async fn add_txn_group(
        &self,
        id: &str,
        producer: TxnProducer,
        group: &str,
    ) -> Result<(), TxnError> {
        let ttl = self.config.lease_ttl_ms();
        self.with_txn(id, &|txn| {
            let mut next = begin(txn, producer)?;
            if !next.groups.iter().any(|g| g == group) {
                next.groups.push(group.to_owned());
            }
            Ok((changed(txn, next, ttl, None), ()))
        })
        .await
    }

    /// EndTxn: decides the open transaction; a retry of the same decision succeeds again.
    pub(crate) async fn end_txn(
        &self,
        id: &str,
        producer: TxnProducer,
        commit: bool,
    ) -> Result<(), TxnError> {
        let ttl = self.config.lease_ttl_ms();
        self.with_txn(id, &|txn| {
            check_producer(txn, producer)?;
            let retried = if commit {
                [TxnState::PrepareCommit, TxnState::CompleteCommit]
            } else {
                [TxnState::PrepareAbort, TxnState::CompleteAbort]
            };
            if retried.contains(&txn.state) {
                return Ok((None, ()));
            }
            if txn.state != TxnState::Ongoing {
                return Err(TxnError::new(
                    ResponseError::InvalidTxnState,
                    format!("transaction '{id}' is {}, not Ongoing", txn.state.name()),
                ));
            }
            Ok((Some(decide(txn.clone(), commit, ttl)), ()))
        })
        .await
    }

    /// Aborts the open transactions this agent coordinates that outlived their timeout, at a
    /// bumped epoch (as Kafka: the timed-out producer is fenced).
    async fn abort_expired(&self) -> Result<(), MetadataError> {
        let now = now_ms();
        let expired = self
            .metadata
            .list_transactions()
            .await?
            .into_iter()
            .filter(|t| {
                t.state == TxnState::Ongoing
                    && now > t.started_at_ms + i64::from(t.timeout_ms)
                    && self.membership.coordinates(&t.transactional_id)
            });
        let ttl = self.config.lease_ttl_ms();
        for txn in expired {
            let id = txn.transactional_id.clone();
            let aborted = self
                .with_txn(&id, &|t| {
                    let due = t.state == TxnState::Ongoing
                        && now_ms() > t.started_at_ms + i64::from(t.timeout_ms);
                    Ok((due.then(|| decide(bumped(t), false, ttl)), due))
                })
                .await;
            match aborted {
                Ok(true) => info!(transactional_id = %id, "transaction timed out; aborted"),
                Ok(false) => {}
                Err(e) => debug!(transactional_id = %id, "timeout abort deferred: {}", e.message),
            }
        }
        Ok(())
    }

    /// Appends the pending markers of the partitions this agent leads, once each (see
    /// [`MarkersInFlight`]).
    async fn write_due_markers(&self, in_flight: &MarkersInFlight) -> Result<(), MetadataError> {
        let listed_at = Instant::now();
        let markers = self.metadata.list_txn_markers().await?;
        let pending: HashSet<MarkerKey> = markers.iter().map(marker_key).collect();
        in_flight.lock().retain(|k, _| pending.contains(k));
        for marker in markers {
            let key = marker_key(&marker);
            {
                let mut written = in_flight.lock();
                // Appended and not yet durable, or durable after this listing was taken (the
                // row listed is the one its commit deleted): not again.
                match written.get(&key) {
                    Some(None) => continue,
                    Some(Some(done)) if *done >= listed_at => continue,
                    _ => {}
                }
                written.insert(key.clone(), None);
            }
            if let Err(e) = self.write_marker(&marker, key.clone(), in_flight).await {
                debug!(topic = %marker.topic, partition = marker.partition, "marker not written here: {e}");
                in_flight.lock().remove(&key);
            }
        }
        Ok(())
    }

    async fn write_marker(
        &self,
        marker: &TxnMarker,
        key: MarkerKey,
        in_flight: &MarkersInFlight,
    ) -> Result<(), streamhouse_storage::StorageError> {
        let log = self
            .partitions
            .partition(&marker.topic, marker.partition)
            .await?;
        let appended = log.writer.append_marker(marker)?;
        self.partitions.appended(appended.buffered_bytes);
        let in_flight = in_flight.clone();
        let what = format!(
            "{}/{} producer {}",
            marker.topic, marker.partition, marker.producer_id
        );
        tokio::spawn(async move {
            match appended.durable.wait().await {
                Ok(()) => {
                    in_flight.lock().insert(key, Some(Instant::now()));
                }
                // A failed flush leaves the pending row: the marker is written again.
                Err(e) => {
                    warn!("transaction marker on {what} not stored, retrying: {e}");
                    in_flight.lock().remove(&key);
                }
            }
        });
        Ok(())
    }
}

/// The markers this agent appended: `None` while not yet durable, else when they became
/// durable (their pending rows were deleted in that commit).
#[derive(Clone, Default)]
struct MarkersInFlight(Arc<Mutex<HashMap<MarkerKey, Option<Instant>>>>);

impl MarkersInFlight {
    fn lock(&self) -> parking_lot::MutexGuard<'_, HashMap<MarkerKey, Option<Instant>>> {
        self.0.lock()
    }
}

/// A pending marker's identity: (topic, partition, producer id).
type MarkerKey = (String, u32, i64);

fn marker_key(m: &TxnMarker) -> MarkerKey {
    (m.topic.clone(), m.partition, m.producer_id)
}

/// The change InitProducerId makes to `txn`, and its answer: an open transaction is aborted
/// (recorded) and the client told to retry.
fn init_change(
    txn: &Transaction,
    timeout_ms: i32,
    claimed: Option<TxnProducer>,
    new_id: Option<i64>,
    ttl: i64,
) -> Result<(Option<TxnUpdate>, Result<TxnProducer, TxnError>), TxnError> {
    if let Some(claimed) = claimed.filter(|c| c.id >= 0) {
        // KIP-360: a producer re-initializing names itself; only the current id, at the
        // current epoch or the one a timeout abort bumped past it, may continue.
        let current = claimed.id == txn.producer_id
            && (claimed.epoch == txn.producer_epoch || claimed.epoch + 1 == txn.producer_epoch);
        if !current {
            return Err(TxnError::new(
                ResponseError::ProducerFenced,
                format!(
                    "producer {} epoch {} is not the current producer of '{}'",
                    claimed.id, claimed.epoch, txn.transactional_id
                ),
            ));
        }
    }
    let busy = |what: &str| {
        TxnError::new(
            ResponseError::ConcurrentTransactions,
            format!("{what} of '{}'", txn.transactional_id),
        )
    };
    match txn.state {
        TxnState::Ongoing => Ok((
            Some(decide(bumped(txn), false, ttl)),
            Err(busy("aborting the open transaction")),
        )),
        s if s.is_prepared() => Err(busy("still writing the markers of the last transaction")),
        _ => {
            let mut next = match new_id {
                Some(id) => Transaction {
                    producer_id: id,
                    producer_epoch: 0,
                    ..txn.clone()
                },
                None => bumped(txn),
            };
            next.state = TxnState::Empty;
            next.timeout_ms = timeout_ms;
            next.partitions.clear();
            next.groups.clear();
            next.started_at_ms = -1;
            let producer = TxnProducer {
                id: next.producer_id,
                epoch: next.producer_epoch,
            };
            Ok((changed(txn, next, ttl, None), Ok(producer)))
        }
    }
}

/// `txn` at the next producer epoch.
fn bumped(txn: &Transaction) -> Transaction {
    Transaction {
        producer_epoch: txn.producer_epoch.saturating_add(1),
        ..txn.clone()
    }
}

/// The decision of `next`'s transaction: Prepare (Complete at once when it has no partition:
/// no marker to wait for), the offsets applied or dropped in the same metadata transaction.
fn decide(mut next: Transaction, commit: bool, ttl: i64) -> TxnUpdate {
    let version = next.version;
    next.state = match (commit, next.partitions.is_empty()) {
        (true, false) => TxnState::PrepareCommit,
        (false, false) => TxnState::PrepareAbort,
        (true, true) => TxnState::CompleteCommit,
        (false, true) => TxnState::CompleteAbort,
    };
    if !next.state.is_prepared() {
        next.groups.clear();
        next.started_at_ms = -1;
    }
    next.updated_at_ms = now_ms();
    TxnUpdate {
        next,
        expected_version: version,
        lease_ttl_ms: ttl,
        decision: Some(commit),
    }
}

/// The update from `txn` to `next`, `None` when nothing changes.
fn changed(
    txn: &Transaction,
    mut next: Transaction,
    ttl: i64,
    decision: Option<bool>,
) -> Option<TxnUpdate> {
    if next == *txn {
        return None;
    }
    next.updated_at_ms = now_ms();
    Some(TxnUpdate {
        next,
        expected_version: txn.version,
        lease_ttl_ms: ttl,
        decision,
    })
}

/// Refuses a request of another producer or epoch than the transactional id's current one.
fn check_producer(txn: &Transaction, producer: TxnProducer) -> Result<(), TxnError> {
    if producer.id != txn.producer_id {
        return Err(TxnError::new(
            ResponseError::InvalidProducerIdMapping,
            format!(
                "producer {} is not transactional id '{}''s ({})",
                producer.id, txn.transactional_id, txn.producer_id
            ),
        ));
    }
    if producer.epoch != txn.producer_epoch {
        return Err(TxnError::new(
            ResponseError::ProducerFenced,
            format!(
                "producer {} epoch {} was fenced by epoch {}",
                producer.id, producer.epoch, txn.producer_epoch
            ),
        ));
    }
    Ok(())
}

/// `txn` with its transaction open (opened now when none was), for adding to it.
fn begin(txn: &Transaction, producer: TxnProducer) -> Result<Transaction, TxnError> {
    check_producer(txn, producer)?;
    let mut next = txn.clone();
    match txn.state {
        TxnState::Ongoing => {}
        s if s.is_prepared() => {
            return Err(TxnError::new(
                ResponseError::ConcurrentTransactions,
                format!(
                    "the last transaction of '{}' is still being written",
                    txn.transactional_id
                ),
            ))
        }
        _ => {
            next.state = TxnState::Ongoing;
            next.started_at_ms = now_ms();
            next.partitions.clear();
            next.groups.clear();
        }
    }
    Ok(next)
}

/// Appends due markers to the partitions this agent leads, at every decision it takes and
/// every [`MARKER_POLL`] otherwise; ends when the agent is dropped.
pub(crate) async fn run_marker_writer(txns: Weak<Transactions>) {
    let in_flight = MarkersInFlight::default();
    loop {
        let Some(t) = txns.upgrade() else { return };
        if let Err(e) = t.write_due_markers(&in_flight).await {
            warn!("listing pending transaction markers failed: {e}");
        }
        let due = t.markers_due.clone();
        drop(t);
        let _ = tokio::time::timeout(MARKER_POLL, due.notified()).await;
    }
}

/// Aborts timed-out transactions every [`TIMEOUT_SWEEP`]; ends when the agent is dropped.
pub(crate) async fn run_timeouts(txns: Weak<Transactions>) {
    loop {
        tokio::time::sleep(TIMEOUT_SWEEP).await;
        let Some(t) = txns.upgrade() else { return };
        if let Err(e) = t.abort_expired().await {
            warn!("transaction timeout sweep failed: {e}");
        }
    }
}
