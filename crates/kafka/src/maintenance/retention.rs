//! Retention of the partitions this agent has open, the truncation behind DeleteRecords, and
//! the expiry of idle producers' state.
//!
//! Retention runs where the partition's writer is (the lease holder), so the writer's log start
//! and the segment index follow each truncation at once. The janitor may run on every agent:
//! deleting an orphan twice is harmless.

use std::collections::HashMap;

use streamhouse_metadata::now_ms;
use streamhouse_storage::{
    LogTruncator, RetentionPolicy, StorageError, Truncated, TruncationTarget,
};
use tracing::{info, warn};

use super::Maintenance;
use crate::partitions::PartitionLog;

impl Maintenance {
    fn truncator(&self) -> LogTruncator {
        LogTruncator::new(
            self.store.clone(),
            self.metadata.clone(),
            self.config.delete_grace,
        )
    }

    /// DeleteRecords: truncates `topic`/`partition` before `offset` (`-1`: the high watermark)
    /// and returns the new low watermark. Offsets past the high watermark are out of range.
    pub(crate) async fn delete_records(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
    ) -> Result<i64, StorageError> {
        let log = self.partitions.partition(topic, partition).await?;
        let high_watermark = log.writer.high_watermark();
        let target = if offset == -1 { high_watermark } else { offset };
        if !(0..=high_watermark).contains(&target) {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start: log.writer.log_start_offset(),
                high_watermark,
            });
        }
        let truncated = self.truncator().truncate(target_of(&log), target).await?;
        Ok(truncated.log_start)
    }

    /// Applies each topic's `retention.ms` / `retention.bytes` to every partition this agent
    /// has open. Returns the truncations made; a failing partition is logged and skipped.
    pub async fn enforce_retention(&self) -> Vec<Truncated> {
        let truncator = self.truncator();
        let mut policies: HashMap<String, Option<RetentionPolicy>> = HashMap::new();
        let mut done = Vec::new();
        for log in self.partitions.with_records().await {
            let name = &log.topic.name;
            if !policies.contains_key(name) {
                let policy = self.current_policy(name).await;
                policies.insert(name.clone(), policy);
            }
            let Some(policy) = policies[name] else {
                continue;
            };
            match truncator.enforce(target_of(&log), policy, now_ms()).await {
                Ok(Some(truncated)) => done.push(truncated),
                Ok(None) => {}
                Err(e) => warn!(topic = %name, partition = log.partition, "retention failed: {e}"),
            }
        }
        done
    }

    /// Drops the producer snapshots of producers idle for longer than
    /// [`crate::MaintenanceConfig::producer_id_expiration`]. Writers already open keep their in-memory
    /// state; the snapshots only matter when a partition is opened.
    pub(crate) async fn expire_producer_state(&self) {
        let expiration = self.config.producer_id_expiration;
        let before = now_ms().saturating_sub(expiration.as_millis() as i64);
        match self.metadata.expire_producer_snapshots(before).await {
            Ok(0) => {}
            Ok(n) => info!(producers = n, "expired idle producer state"),
            Err(e) => warn!("expiring producer state failed: {e}"),
        }
    }

    /// The topic's retention as stored now (settings may have changed since the partition was
    /// opened); `None` when the topic is gone or unreadable.
    async fn current_policy(&self, name: &str) -> Option<RetentionPolicy> {
        match self.metadata.get_topic(name).await {
            Ok(Some(topic)) => Some(RetentionPolicy::from(&topic.config)),
            Ok(None) => None,
            Err(e) => {
                warn!(topic = %name, "reading retention settings failed: {e}");
                None
            }
        }
    }
}

fn target_of(log: &PartitionLog) -> TruncationTarget<'_> {
    TruncationTarget {
        topic: &log.topic.name,
        partition: log.partition,
        index: &log.index,
        writer: Some(&log.writer),
    }
}
