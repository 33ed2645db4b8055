//! Storage for StreamHouse: where segment objects live and how partitions are written and read.
//!
//! - [`object_store`](crate::objects): building the object store (local, memory, S3) from config.
//! - [`SegmentIndex`]: per-partition in-memory map from base offset to segment; no metadata query
//!   on the read hot path.
//! - [`SegmentCache`]: bounded in-memory cache of segment bytes, filled by range reads and by the
//!   writer (write-through), with read-ahead.
//! - [`PartitionWriter`]: assigns offsets, builds segments, uploads them and commits them to the
//!   metadata store; the high watermark advances only after both.
//! - [`PartitionReader`]: reads batches from any offset through the index and cache.
//! - [`LogTruncator`] / [`RetentionPolicy`]: retention and DeleteRecords (drop the oldest
//!   segments, delete their objects after a grace delay).
//! - [`OrphanJanitor`]: deletes segment objects no committed segment references.

// ---- object stores, segment index, segment cache (engineer A) ----
mod cache;
mod compactor;
mod metered;
mod objects;
mod segment_index;

// ---- writer, reader, producer state (engineer B) ----
mod error;
mod producer_state;
mod reader;
mod writer;

// ---- retention, orphan janitor, fault injection (issue 7) ----
mod janitor;
mod retention;
#[cfg(feature = "testing")]
pub mod testing;

// ---- re-exports (engineer A) ----
pub use cache::{SegmentCache, SegmentCacheConfig, SegmentCacheStats};
pub use metered::MeteredObjectStore;
pub use objects::{build_object_store, ObjectStoreBuildError, ObjectStoreConfig};
pub use segment_index::{IndexedSegment, SegmentIndex, SegmentIndexConfig};

// ---- re-exports (engineer B) ----
pub use error::{Corruption, Result, StorageError};
pub use reader::{PartitionReader, ReadResult, ReaderConfig};
pub use writer::{Appended, DurableTicket, PartitionWriter, WriterConfig};

// ---- re-exports (issue 7) ----
pub use janitor::{JanitorConfig, OrphanJanitor, SweepReport};
pub use retention::{
    LogTruncator, RetentionPolicy, Truncated, TruncationTarget, DEFAULT_DELETE_GRACE,
};

// ---- compaction ----
pub use compactor::{Compacted, CompactionConfig, Compactor};
