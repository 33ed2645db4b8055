//! The orphan janitor: deletes segment objects no committed segment references.
//!
//! Orphans come from uploads whose commit never happened (a crash or a fenced writer between
//! the two), from deletions that failed, and from a crash during a truncation's grace delay.
//! An object is deleted only when it is
//! - under `topics/` and absent from `MetadataStore::all_segment_keys`,
//! - older than [`JanitorConfig::min_age`], so an upload whose commit is still in flight is
//!   never touched, and
//! - was already an orphan in a sweep at least [`JanitorConfig::confirm_delay`] earlier, so a
//!   reader that found a segment just before it was truncated can finish reading it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore};
use parking_lot::Mutex;
use streamhouse_metadata::MetadataStore;

use crate::error::{Result, StorageError};
use crate::retention::{delete_objects, DEFAULT_DELETE_GRACE};

/// Prefix of every segment object key.
const SEGMENT_PREFIX: &str = "topics";

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
    /// Segment objects listed.
    pub scanned: usize,
    /// Of those, unreferenced and older than the minimum age.
    pub orphans: usize,
    /// Orphans deleted in this sweep.
    pub deleted: usize,
}

/// Finds and deletes orphaned segment objects; remembers candidates between sweeps.
pub struct OrphanJanitor {
    store: Arc<dyn ObjectStore>,
    metadata: Arc<dyn MetadataStore>,
    config: JanitorConfig,
    /// Orphans seen so far, with when they were first seen.
    candidates: Mutex<HashMap<ObjectPath, Instant>>,
}

impl std::fmt::Debug for OrphanJanitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrphanJanitor")
            .field("config", &self.config)
            .field("candidates", &self.candidates.lock().len())
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
            store,
            metadata,
            config,
            candidates: Mutex::new(HashMap::new()),
        }
    }

    /// One pass: lists segment objects, then the committed keys (in this order, so an object
    /// committed during the sweep is seen as referenced), and deletes confirmed orphans.
    pub async fn sweep(&self) -> Result<SweepReport> {
        let objects = self.list_objects().await?;
        let referenced: HashSet<String> = self
            .metadata
            .all_segment_keys()
            .await?
            .into_iter()
            .collect();
        let orphans = self.old_orphans(&objects, &referenced);
        let due = self.confirmed(&orphans);
        let deleted = delete_objects(self.store.as_ref(), &due).await;
        self.candidates.lock().retain(|key, _| !due.contains(key));
        if deleted > 0 {
            tracing::info!(deleted, "deleted orphaned segment objects");
        }
        Ok(SweepReport {
            scanned: objects.len(),
            orphans: orphans.len(),
            deleted,
        })
    }

    async fn list_objects(&self) -> Result<Vec<ObjectMeta>> {
        let prefix = ObjectPath::from(SEGMENT_PREFIX);
        self.store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| StorageError::object_store(SEGMENT_PREFIX, e))
    }

    fn old_orphans(&self, objects: &[ObjectMeta], referenced: &HashSet<String>) -> Vec<ObjectPath> {
        let now = SystemTime::now();
        objects
            .iter()
            .filter(|o| !referenced.contains(o.location.as_ref()))
            .filter(|o| {
                let modified = SystemTime::from(o.last_modified);
                now.duration_since(modified).unwrap_or_default() >= self.config.min_age
            })
            .map(|o| o.location.clone())
            .collect()
    }

    /// Records new candidates, forgets ones that are no longer orphans (e.g. a listing raced
    /// a commit), and returns those that have been orphans for the confirmation delay.
    fn confirmed(&self, orphans: &[ObjectPath]) -> Vec<ObjectPath> {
        let now = Instant::now();
        let mut candidates = self.candidates.lock();
        let current: HashSet<&ObjectPath> = orphans.iter().collect();
        candidates.retain(|key, _| current.contains(key));
        orphans
            .iter()
            .filter(|key| {
                let first_seen = *candidates.entry((*key).clone()).or_insert(now);
                now.duration_since(first_seen) >= self.config.confirm_delay
            })
            .cloned()
            .collect()
    }
}
