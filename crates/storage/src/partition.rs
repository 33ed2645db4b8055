//! The context every per-partition component is built from.

use std::sync::Arc;

use object_store::ObjectStore;
use streamhouse_metadata::{MetadataStore, Topic};

use crate::budget::Budget;
use crate::cache::SegmentCache;
use crate::segment_index::SegmentIndex;

/// One partition's place in storage: its topic, where its objects and metadata live, and the
/// caches serving it. The writer, reader and consolidator of a partition are built from clones of
/// one value, so they share one segment index and one block cache.
#[derive(Clone)]
pub struct PartitionStorage {
    /// The partition's topic (name, id and config).
    pub topic: Topic,
    /// The partition number.
    pub partition: u32,
    /// Where segment objects live.
    pub store: Arc<dyn ObjectStore>,
    /// Where segments are committed and watermarks kept.
    pub metadata: Arc<dyn MetadataStore>,
    /// The partition's in-memory segment index.
    pub index: Arc<SegmentIndex>,
    /// The agent's segment block cache.
    pub cache: Arc<SegmentCache>,
    /// The agent's bound on idempotent-producer states, shared by its partitions' writers
    /// (see [`crate::MIN_PRODUCERS_RETAINED`]).
    pub producer_budget: Arc<Budget>,
}

impl std::fmt::Debug for PartitionStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionStorage")
            .field("topic", &self.topic.name)
            .field("partition", &self.partition)
            .finish_non_exhaustive()
    }
}
