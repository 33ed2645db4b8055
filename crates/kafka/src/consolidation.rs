//! Consolidation of the partitions this agent leads: rewrites the per-flush slices of shared
//! objects into large contiguous segments (see `streamhouse_storage::Consolidator`), and the
//! deletion of objects nothing references any more.

use streamhouse_metadata::now_ms;
use streamhouse_storage::{ConsolidationReport, ConsolidationTarget, Consolidator, ObjectDeleter};
use tracing::warn;

use crate::broker::Broker;

impl Broker {
    /// One consolidation round over every partition this agent has open, under their leases,
    /// if the backlog calls for it (`force`: whatever the backlog).
    pub async fn consolidate(&self, force: bool) -> ConsolidationReport {
        let targets: Vec<ConsolidationTarget> = self
            .open_partitions()
            .into_iter()
            .map(|log| ConsolidationTarget {
                storage: self.partition_storage(&log.topic, log.partition, &log.index),
                fence: Some(log.fence().clone()),
            })
            .collect();
        let consolidator = Consolidator::new(
            self.store.clone(),
            self.metadata.clone(),
            self.config.maintenance.consolidation.clone(),
            self.config.maintenance.delete_grace,
        );
        match consolidator.run_once(&targets, force).await {
            Ok(report) => report,
            Err(e) => {
                warn!("consolidation failed: {e}");
                ConsolidationReport::default()
            }
        }
    }

    /// Deletes the objects whose scheduled deletion is due and that nothing references.
    pub async fn delete_due_objects(&self) -> usize {
        let deleter = ObjectDeleter::new(self.store.clone(), self.metadata.clone());
        match deleter.delete_due(now_ms()).await {
            Ok(n) => n,
            Err(e) => {
                warn!("deleting scheduled objects failed: {e}");
                0
            }
        }
    }
}
