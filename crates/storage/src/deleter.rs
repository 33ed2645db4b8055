//! Deletes the objects scheduled for deletion in the metadata store once they are due and no
//! segment references them any more.
//!
//! Whatever unreferences objects (retention, DeleteRecords, consolidation, topic deletion)
//! schedules them in the same metadata transaction (`object_deletions`), and the orphan janitor
//! schedules what it finds, so a crash forgets no deletion. The schedule's grace delay lets a
//! reader that found a segment just before it was dropped finish reading it. A shared object
//! holding the segments of many partitions is deleted only after its last reference is gone.
//! Deletions are batched: S3 deletes up to 1,000 keys per request.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use streamhouse_metadata::MetadataStore;

use crate::error::{Result, StorageError};

/// Keys asked for per round, and so at most per delete request.
const BATCH: u32 = 1_000;

/// Deletes due, unreferenced objects (see the module docs). Safe to run on every agent at once.
#[derive(Clone)]
pub struct ObjectDeleter {
    store: Arc<dyn ObjectStore>,
    metadata: Arc<dyn MetadataStore>,
}

impl std::fmt::Debug for ObjectDeleter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectDeleter").finish_non_exhaustive()
    }
}

impl ObjectDeleter {
    /// A deleter of `store`'s objects as scheduled in `metadata`.
    pub fn new(store: Arc<dyn ObjectStore>, metadata: Arc<dyn MetadataStore>) -> Self {
        Self { store, metadata }
    }

    /// Deletes every object due at `now_ms`; returns how many are gone. An object whose
    /// deletion failed stays scheduled for the next run.
    pub async fn delete_due(&self, now_ms: i64) -> Result<usize> {
        let mut total = 0;
        loop {
            let due = self.metadata.due_object_deletions(now_ms, BATCH).await?;
            if due.is_empty() {
                return Ok(total);
            }
            let gone = self.delete(&due).await;
            self.metadata.forget_object_deletions(&gone).await?;
            total += gone.len();
            if gone.len() < due.len() {
                // Failures are retried next run, not spun on now.
                return Ok(total);
            }
        }
    }

    /// Deletes `keys` in batched requests; returns those now gone (deleted or already absent).
    async fn delete(&self, keys: &[String]) -> Vec<String> {
        let paths: Vec<object_store::Result<ObjectPath>> = keys
            .iter()
            .map(|k| Ok(ObjectPath::from(k.as_str())))
            .collect();
        let paths = futures::stream::iter(paths);
        let results: Vec<_> = self.store.delete_stream(paths.boxed()).collect().await;
        let mut failed = 0;
        for result in &results {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => {
                    failed += 1;
                    tracing::warn!(%error, "deleting an object failed; retried later");
                }
            }
        }
        if failed == 0 {
            return keys.to_vec();
        }
        // Which keys failed is not always reported per key: confirm with a listing-free check.
        let mut gone = Vec::with_capacity(keys.len());
        for key in keys {
            let path = ObjectPath::from(key.as_str());
            if matches!(
                self.store.head(&path).await,
                Err(object_store::Error::NotFound { .. })
            ) {
                gone.push(key.clone());
            }
        }
        gone
    }
}

/// Lists the objects under `prefix`.
pub(crate) async fn list_objects(
    store: &dyn ObjectStore,
    prefix: &str,
) -> Result<Vec<object_store::ObjectMeta>> {
    let path = ObjectPath::from(prefix);
    store
        .list(Some(&path))
        .try_collect()
        .await
        .map_err(|e| StorageError::object_store(prefix, e))
}
