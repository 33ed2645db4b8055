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
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use object_store::{ObjectMeta, ObjectStore};
use streamhouse_metadata::{now_ms, MetadataStore};

use crate::deleter::{list_objects, ObjectDeleter};
use crate::error::Result;
use crate::layout::OBJECT_PREFIXES;
use crate::retention::DEFAULT_DELETE_GRACE;

/// Settings of an [`OrphanJanitor`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JanitorConfig {
    /// Objects younger than this are never deleted (in-flight uploads).
    pub min_age: Duration,
    /// How long an object must have been seen as an orphan before it is deleted.
    pub confirm_delay: Duration,
    /// The local store's root directory, if the store is local: a process killed while
    /// writing an object leaves the file it was staging (`<key>#<n>`, renamed into place only
    /// when complete), which the store's listing never shows. Those older than `min_age` are
    /// removed from here.
    pub local_root: Option<PathBuf>,
}

impl Default for JanitorConfig {
    fn default() -> Self {
        Self {
            min_age: Duration::from_secs(10 * 60),
            confirm_delay: DEFAULT_DELETE_GRACE,
            local_root: None,
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
    /// Abandoned staging files of the local store removed.
    pub staging_removed: usize,
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
        let staging_removed = self.remove_abandoned_staging().await;
        Ok(SweepReport {
            scanned: objects.len(),
            orphans: orphans.len(),
            deleted,
            staging_removed,
        })
    }

    /// Removes the local store's staging files older than `min_age` (see
    /// [`JanitorConfig::local_root`]); failures are logged, the next sweep tries again.
    async fn remove_abandoned_staging(&self) -> usize {
        let Some(root) = self.config.local_root.clone() else {
            return 0;
        };
        let min_age = self.config.min_age;
        let walk = tokio::task::spawn_blocking(move || remove_staging_under(&root, min_age));
        let removed = walk.await.unwrap_or_else(|e| {
            tracing::warn!("staging-file sweep panicked: {e}");
            0
        });
        if removed > 0 {
            tracing::info!(removed, "removed abandoned upload staging files");
        }
        removed
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

/// Whether `name` is a staging file of object_store's local store: `<name>#<digits>`. Object
/// keys never contain `#`.
fn is_staging_file(name: &str) -> bool {
    name.rsplit_once('#')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes the staging files under `dir` (recursively) last modified at least `min_age` ago.
fn remove_staging_under(dir: &Path, min_age: Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            removed += remove_staging_under(&path, min_age);
            continue;
        }
        let old = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age >= min_age);
        let staging = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(is_staging_file);
        if staging && old {
            match std::fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) => {
                    tracing::warn!(path = %path.display(), "removing a staging file failed: {e}")
                }
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_old_staging_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("wal");
        std::fs::create_dir(&wal).unwrap();
        for name in ["a.obj#3", "b.obj", "c.obj#x", "d.obj#"] {
            std::fs::write(wal.join(name), b"bytes").unwrap();
        }
        assert_eq!(
            remove_staging_under(dir.path(), Duration::from_secs(3600)),
            0
        );
        assert_eq!(remove_staging_under(dir.path(), Duration::ZERO), 1);
        let mut left: Vec<_> = std::fs::read_dir(&wal)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["b.obj", "c.obj#x", "d.obj#"]);
    }
}
