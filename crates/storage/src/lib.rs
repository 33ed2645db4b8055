//! Storage for StreamHouse: where segment objects live and how partitions are written and read.
//!
//! - `objects`: building the object store (local, memory, S3) from config.
//! - [`SegmentIndex`]: per-partition in-memory map from base offset to segment; no metadata query
//!   on the read hot path.
//! - [`SegmentCache`]: bounded in-memory cache of segment bytes, filled by range reads and by the
//!   writer (write-through), with read-ahead.
//! - [`PartitionStorage`]: what a partition's writer, reader and consolidator are built from.
//! - [`PartitionWriter`]: assigns offsets and buffers a partition's batches until a
//!   [`FlushCycle`] makes them durable: one shared object for many partitions, one metadata
//!   transaction; the high watermark advances only after both.
//! - [`Consolidator`]: rewrites shared-object slices into large contiguous segments.
//! - [`Compactor`]: log compaction (`cleanup.policy=compact`): keeps each key's newest record.
//! - [`ObjectDeleter`]: deletes objects scheduled for deletion once due and unreferenced.
//! - [`PartitionReader`]: reads batches from any offset through the index and cache.
//! - [`LogTruncator`] / [`RetentionPolicy`]: retention and DeleteRecords (drop the oldest
//!   segments, delete their objects after a grace delay).
//! - [`OrphanJanitor`]: deletes segment objects no committed segment references.

#![warn(missing_docs)]

mod budget;
mod cache;
mod compactor;
mod consolidator;
mod deleter;
mod error;
mod group_commit;
mod janitor;
mod layout;
mod local;
mod metered;
mod objects;
mod partition;
mod producer_state;
mod reader;
mod retention;
mod segment_index;
mod writer;

#[cfg(feature = "testing")]
pub mod testing;

pub use budget::Budget;
pub use cache::{CachedParts, CachedRange, SegmentCache, SegmentCacheConfig, SegmentCacheStats};
pub use compactor::{
    CompactionConfig, CompactionPolicy, CompactionReport, CompactionTarget, Compactor,
    COMPACTED_SUFFIX, KEY_MAP_SLOT_BYTES,
};
pub use consolidator::{
    ConsolidationConfig, ConsolidationReport, ConsolidationTarget, Consolidator,
};
pub use deleter::ObjectDeleter;
pub use error::{Corruption, Result, StorageError};
pub use group_commit::{FlushContext, FlushCycle, FlushReport};
pub use janitor::{JanitorConfig, OrphanJanitor, SweepReport};
pub use layout::{CONSOLIDATED_PREFIX, OBJECT_PREFIXES, SEGMENT_PREFIX, SHARED_PREFIX};
pub use metered::MeteredObjectStore;
pub use objects::{build_object_store, ObjectStoreBuildError, ObjectStoreConfig};
pub use partition::PartitionStorage;
pub use producer_state::{
    summarize_snapshot, ProducerSummary, MAX_PRODUCERS_PER_PARTITION, MIN_PRODUCERS_RETAINED,
};
pub use reader::{PartitionReader, ReadResult, ReaderConfig};
pub use retention::{
    LogTruncator, RetentionPolicy, Truncated, TruncationTarget, DEFAULT_DELETE_GRACE,
};
pub use segment_index::{IndexedSegment, SegmentIndex, SegmentIndexConfig, MIN_RETAINED};
pub use writer::{
    AppendOptions, Appended, DurableTicket, PartitionWriter, SealedChunk, TxnVerification,
    WriterConfig, SEQUENCE_GAP_GRACE,
};
