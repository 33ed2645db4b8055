//! Compaction of the partitions this agent owns: merges the small segments group commit leaves
//! behind into segments near the topic's `segment.bytes` (see `streamhouse_storage::Compactor`).

use streamhouse_storage::{CompactionConfig, Compactor};
use tracing::warn;

use crate::broker::Broker;

/// Merges per partition per pass at most; the next pass continues.
const MAX_MERGES_PER_PARTITION: usize = 8;

impl Broker {
    /// One compaction pass over every partition this agent has open, under its lease. Returns
    /// the number of merges; a failing partition is logged and skipped.
    pub async fn compact_partitions(&self) -> usize {
        let mut merges = 0;
        for log in self.open_partitions() {
            let config = CompactionConfig {
                target_bytes: log.topic.config.segment_bytes,
                min_age: self.config.maintenance.compaction_min_age,
                delete_grace: self.config.maintenance.delete_grace,
            };
            let compactor = Compactor::new(
                self.partition_storage(&log.topic, log.partition, &log.index),
                Some(log.fence().clone()),
            );
            match compactor.compact(&config, MAX_MERGES_PER_PARTITION).await {
                Ok(n) => merges += n,
                Err(e) => {
                    warn!(topic = %log.topic.name, partition = log.partition, "compaction failed: {e}")
                }
            }
        }
        metrics::counter!("streamhouse_compactions_total").increment(merges as u64);
        merges
    }
}
