//! Transactions (KIP-98) as the metadata store keeps them: each transactional id's coordinator
//! state, the commit/abort markers a decision still has to write, aborted transactions per
//! partition and offsets committed inside a transaction.

use serde::{Deserialize, Serialize};

use crate::MetadataError;

/// Kafka's transaction states, by the names DescribeTransactions and ListTransactions use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TxnState {
    /// No transaction open (a producer id was handed out, or none yet).
    Empty,
    /// Partitions or offsets were added; the transaction is open.
    Ongoing,
    /// Commit decided; markers are being written.
    PrepareCommit,
    /// Abort decided; markers are being written.
    PrepareAbort,
    /// Every commit marker is written.
    CompleteCommit,
    /// Every abort marker is written.
    CompleteAbort,
}

impl TxnState {
    /// Every state, in Kafka's order.
    pub const ALL: [TxnState; 6] = [
        TxnState::Empty,
        TxnState::Ongoing,
        TxnState::PrepareCommit,
        TxnState::PrepareAbort,
        TxnState::CompleteCommit,
        TxnState::CompleteAbort,
    ];

    /// Kafka's name of the state.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }

    /// The state named `name` (Kafka's spelling).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether a decision was taken and its markers may still be pending.
    pub fn is_prepared(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }

    /// Whether no transaction is open or being finished: a new one may begin.
    pub fn is_idle(self) -> bool {
        matches!(
            self,
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
        )
    }
}

/// One transactional id's coordinator state, with the coordinator lease it is kept under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The producer's `transactional.id`.
    pub transactional_id: String,
    /// Producer id handed out for it; -1 before the first InitProducerId.
    pub producer_id: i64,
    /// Current producer epoch; -1 before the first InitProducerId.
    pub producer_epoch: i16,
    /// Where the transaction stands.
    pub state: TxnState,
    /// `transaction.timeout.ms`: an open transaction older than this is aborted.
    pub timeout_ms: i32,
    /// Partitions of the open (or deciding) transaction, sorted, each once.
    pub partitions: Vec<(String, u32)>,
    /// Consumer groups whose offsets the transaction commits (AddOffsetsToTxn).
    pub groups: Vec<String>,
    /// When the open transaction began (ms since the Unix epoch); -1 when none is open.
    pub started_at_ms: i64,
    /// When the state last changed (ms since the Unix epoch).
    pub updated_at_ms: i64,
    /// Agent holding the coordinator lease.
    pub coordinator: String,
    /// Epoch of that lease: increases whenever the holder changes or the lease had expired;
    /// written into every marker (the control record's coordinator epoch).
    pub coordinator_epoch: i64,
    /// Bumped by every change: updates are compare-and-set on it.
    pub version: i64,
}

/// A state change of a [`Transaction`], applied only if nothing changed since it was read and
/// the lease is still held (see [`crate::TxnStore::update_transaction`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnUpdate {
    /// The new state; `coordinator` and `coordinator_epoch` name the lease it is written under.
    pub next: Transaction,
    /// The `version` the change was computed from.
    pub expected_version: i64,
    /// The lease is extended to this many ms past the database's clock.
    pub lease_ttl_ms: i64,
    /// `Some(commit)`: the transaction is decided: a marker per partition is recorded, and the
    /// offsets committed in it are applied (commit) or dropped (abort), in the same transaction.
    pub decision: Option<bool>,
}

/// A commit or abort marker still to be written to one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnMarker {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// The transaction's producer id.
    pub producer_id: i64,
    /// The producer epoch the marker carries (fences older epochs on the partition).
    pub producer_epoch: i16,
    /// Commit (true) or abort (false).
    pub commit: bool,
    /// The deciding coordinator's lease epoch.
    pub coordinator_epoch: i64,
    /// The transactional id, for logs.
    pub transactional_id: String,
}

/// A marker as a segment commit stores it: the pending row it discharges and, for an abort,
/// the aborted range it records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenMarker {
    /// The marker written.
    pub marker: TxnMarker,
    /// Offset of the control batch in the partition.
    pub offset: i64,
    /// First offset of the producer's transaction in this partition, when it wrote any.
    pub first_offset: Option<i64>,
}

/// An aborted transaction of one partition: what Fetch reports to read_committed consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortedTxn {
    /// The producer id.
    pub producer_id: i64,
    /// First offset the transaction wrote to the partition.
    pub first_offset: i64,
    /// Offset of its abort marker.
    pub last_offset: i64,
}

/// The error of a transaction change refused because the row moved on (another change, or the
/// lease was lost): the caller re-reads and decides again.
pub fn txn_conflict(transactional_id: &str, reason: impl Into<String>) -> MetadataError {
    MetadataError::TxnConflict {
        transactional_id: transactional_id.to_owned(),
        reason: reason.into(),
    }
}
