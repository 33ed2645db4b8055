//! Background maintenance of the partitions this agent has open: retention (and the
//! truncation behind DeleteRecords), consolidation, log compaction, the deletion of scheduled
//! objects and the orphan janitor.
//!
//! Retention runs where the partition's writer is (the lease holder), so the writer's log start
//! and the segment index follow each truncation at once. The janitor may run on every agent:
//! deleting an orphan twice is harmless.

mod consolidation;
mod retention;

use std::sync::{Arc, Weak};
use std::time::Duration;

use object_store::ObjectStore;
use streamhouse_metadata::MetadataStore;
use streamhouse_storage::OrphanJanitor;
use tracing::warn;

use crate::config::MaintenanceConfig;
use crate::partitions::Partitions;
use crate::supervisor::Supervisor;

/// Maintenance of an agent's open partitions; its rounds run on their own schedules
/// (started with the agent) and on demand (tests, DeleteRecords).
pub struct Maintenance {
    config: MaintenanceConfig,
    metadata: Arc<dyn MetadataStore>,
    store: Arc<dyn ObjectStore>,
    partitions: Arc<Partitions>,
}

impl Maintenance {
    /// Maintenance of `partitions`, with `config`'s schedules and limits.
    pub(crate) fn new(
        config: MaintenanceConfig,
        metadata: Arc<dyn MetadataStore>,
        store: Arc<dyn ObjectStore>,
        partitions: Arc<Partitions>,
    ) -> Self {
        Self {
            config,
            metadata,
            store,
            partitions,
        }
    }
}

/// Starts the maintenance loops under the agent's supervisor; each ends when the agent is
/// dropped.
pub(crate) fn spawn_loops(maintenance: &Arc<Maintenance>, tasks: &Supervisor) {
    let config = maintenance.config.clone();
    let janitor = OrphanJanitor::new(
        maintenance.store.clone(),
        maintenance.metadata.clone(),
        config.janitor.clone(),
    );
    tasks.spawn(
        "retention",
        every(
            Arc::downgrade(maintenance),
            config.retention_interval,
            |b| async move {
                b.enforce_retention().await;
                b.expire_producer_state().await;
            },
        ),
    );
    tasks.spawn(
        "consolidation",
        every(
            Arc::downgrade(maintenance),
            config.consolidation_interval,
            |b| async move {
                b.consolidate_backlog().await;
            },
        ),
    );
    tasks.spawn(
        "compaction",
        every(
            Arc::downgrade(maintenance),
            config.compaction_interval,
            |b| async move {
                // Supervised: a panic in one round is logged and the next round runs.
                let round = tokio::spawn(async move { b.compact(false).await });
                if let Err(e) = round.await {
                    warn!("compaction round aborted: {e}");
                }
            },
        ),
    );
    tasks.spawn(
        "deletions",
        every(
            Arc::downgrade(maintenance),
            config.deletion_interval,
            |b| async move {
                b.delete_due_objects().await;
            },
        ),
    );
    let janitor = Arc::new(janitor);
    tasks.spawn(
        "janitor",
        every(
            Arc::downgrade(maintenance),
            config.janitor_interval,
            move |_| {
                let janitor = janitor.clone();
                async move {
                    if let Err(e) = janitor.sweep().await {
                        warn!("orphan sweep failed: {e}");
                    }
                }
            },
        ),
    );
}

/// Runs `work` every `period` while the agent lives.
async fn every<F, Fut>(maintenance: Weak<Maintenance>, period: Duration, work: F)
where
    F: Fn(Arc<Maintenance>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        tokio::time::sleep(period).await;
        let Some(m) = maintenance.upgrade() else {
            return;
        };
        work(m).await;
    }
}
