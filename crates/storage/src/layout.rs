//! Where each kind of object lives in the store: one key prefix per kind (`docs/format.md`).
//!
//! A leaf module: the writers that name objects and the readers and cleaners that tell them
//! apart by key all take the prefixes from here, so none of them imports another for a string.

/// Prefix of per-partition segment objects (`topics/<topic id>/<partition>/...`).
pub const SEGMENT_PREFIX: &str = "topics";

/// Prefix of the shared objects flush cycles write, holding many partitions' batches.
pub const SHARED_PREFIX: &str = "wal";

/// Prefix of the objects consolidation writes holding several partitions' segments.
pub const CONSOLIDATED_PREFIX: &str = "data";

/// Prefixes objects are written under: per-partition segments, flush cycles' shared objects,
/// consolidated objects.
pub const OBJECT_PREFIXES: [&str; 3] = [SEGMENT_PREFIX, SHARED_PREFIX, CONSOLIDATED_PREFIX];

/// Whether `key` names a flush cycle's shared object.
pub(crate) fn is_shared_object(key: &str) -> bool {
    key.strip_prefix(SHARED_PREFIX)
        .is_some_and(|rest| rest.starts_with('/'))
}
