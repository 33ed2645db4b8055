//! The orphan janitor: schedules for deletion the objects no committed segment references.
//!
//! Orphans come from uploads whose commit never happened (a crash, a fenced writer, a flush
//! abandoned at its deadline), and from older versions that deleted objects without scheduling
//! them. An object is scheduled only when it is
//! - under one of the prefixes objects are written to and absent from
//!   `MetadataStore::all_segment_keys`,
//! - older than [`JanitorConfig::min_age`], so an upload whose commit is still in flight is
//!   never touched;
//!
//! and it is deleted [`JanitorConfig::confirm_delay`] later by the [`ObjectDeleter`], and only
//! if still unreferenced then. The schedule lives in the metadata store, so an agent restarted
//! more often than it sweeps still cleans up.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use object_store::{ObjectMeta, ObjectStore};
use streamhouse_metadata::{now_ms, MetadataStore};

use crate::deleter::{list_objects, ObjectDeleter};
use crate::error::Result;
use crate::retention::DEFAULT_DELETE_GRACE;

/// Prefixes objects are written under: per-partition segments, flush cycles' shared objects,
/// consolidated objects.
pub const OBJECT_PREFIXES: [&str; 3] = ["topics", crate::SHARED_PREFIX, crate::CONSOLIDATED_PREFIX];

/// Settings of an [`OrphanJanitor`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JanitorConfig {
    /// Objects younger than this are never deleted (in-flight uploads).
    pub min_age: Duration,
    /// How long an object must have been seen as an orphan before it is deleted.
    pub confirm_delay: Duration,
}

impl Default for JanitorConfig {
    fn default() -> Self {
        Self {
            min_age: Duration::from_secs(10 * 60),
            confirm_delay: DEFAULT_DELETE_GRACE,
        }
    }
}

/// What one sweep found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Objects listed.
    pub scanned: usize,
    /// Of those, unreferenced and older than the minimum age (scheduled for deletion).
    pub orphans: usize,
    /// Scheduled objects deleted in this sweep (orphans confirmed, and anything else due).
    pub deleted: usize,
}

/// Finds orphaned objects and schedules their deletion.
pub struct OrphanJanitor {
    store: Arc<dyn ObjectStore>,
    metadata: Arc<dyn MetadataStore>,
    config: JanitorConfig,
    deleter: ObjectDeleter,
}

impl std::fmt::Debug for OrphanJanitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrphanJanitor")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OrphanJanitor {
    /// A janitor over `store`, trusting `metadata` for what is committed.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        metadata: Arc<dyn MetadataStore>,
        config: JanitorConfig,
    ) -> Self {
        Self {
            deleter: ObjectDeleter::new(store.clone(), metadata.clone()),
            store,
            metadata,
            config,
        }
    }

    /// One pass: lists objects, then the committed keys (in this order, so an object committed
    /// during the sweep is seen as referenced), schedules the old orphans, and deletes every
    /// scheduled object that is due and still unreferenced.
    pub async fn sweep(&self) -> Result<SweepReport> {
        let mut objects = Vec::new();
        for prefix in OBJECT_PREFIXES {
            objects.extend(list_objects(self.store.as_ref(), prefix).await?);
        }
        let referenced: HashSet<String> = self
            .metadata
            .all_segment_keys()
            .await?
            .into_iter()
            .collect();
        let orphans = self.old_orphans(&objects, &referenced);
        let now = now_ms();
        let confirm = i64::try_from(self.config.confirm_delay.as_millis()).unwrap_or(i64::MAX);
        self.metadata
            .schedule_object_deletions(&orphans, now.saturating_add(confirm))
            .await?;
        let deleted = self.deleter.delete_due(now).await?;
        if deleted > 0 {
            tracing::info!(deleted, "deleted unreferenced objects");
        }
        Ok(SweepReport {
            scanned: objects.len(),
            orphans: orphans.len(),
            deleted,
        })
    }

    fn old_orphans(&self, objects: &[ObjectMeta], referenced: &HashSet<String>) -> Vec<String> {
        let now = SystemTime::now();
        objects
            .iter()
            .filter(|o| !referenced.contains(o.location.as_ref()))
            .filter(|o| {
                let modified = SystemTime::from(o.last_modified);
                now.duration_since(modified).unwrap_or_default() >= self.config.min_age
            })
            .map(|o| o.location.to_string())
            .collect()
    }
}
