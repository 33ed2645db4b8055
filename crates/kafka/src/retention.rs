//! Background maintenance of an agent: retention and compaction of the partitions it has open,
//! and the orphan janitor. Also the truncation behind DeleteRecords.
//!
//! Retention runs where the partition's writer is (the lease holder), so the writer's log start
//! and the segment index follow each truncation at once. The janitor may run on every agent:
//! deleting an orphan twice is harmless.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use streamhouse_metadata::now_ms;
use streamhouse_storage::{
    CompactionConfig, ConsolidationConfig, JanitorConfig, LogTruncator, OrphanJanitor,
    RetentionPolicy, StorageError, Truncated, TruncationTarget, DEFAULT_DELETE_GRACE,
};
use tracing::{info, warn};

use crate::broker::{Broker, PartitionLog};

/// Settings of an agent's retention and janitor tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceConfig {
    /// How often retention is checked (Kafka's `log.retention.check.interval.ms`).
    pub retention_interval: Duration,
    /// How long truncated segment objects stay readable before they are deleted.
    pub delete_grace: Duration,
    /// How often the orphan janitor sweeps.
    pub janitor_interval: Duration,
    /// Orphan janitor safety settings.
    pub janitor: JanitorConfig,
    /// How often the consolidation backlog is checked (see `consolidation.rs`).
    pub consolidation_interval: Duration,
    /// When and how much to consolidate.
    pub consolidation: ConsolidationConfig,
    /// How often objects scheduled for deletion are deleted when due.
    pub deletion_interval: Duration,
    /// How often compacted topics are checked for compaction (see `consolidation.rs`).
    pub compaction_interval: Duration,
    /// Memory and output sizes of compaction.
    pub compaction: CompactionConfig,
    /// Idempotent-producer state of a producer that has not written for this long is dropped
    /// (Kafka's `producer.id.expiration.ms`); checked with retention.
    pub producer_id_expiration: Duration,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        Self {
            retention_interval: Duration::from_secs(5 * 60),
            delete_grace: DEFAULT_DELETE_GRACE,
            janitor_interval: Duration::from_secs(10 * 60),
            janitor: JanitorConfig::default(),
            consolidation_interval: Duration::from_secs(5),
            consolidation: ConsolidationConfig::default(),
            deletion_interval: Duration::from_secs(10),
            compaction_interval: Duration::from_secs(15),
            compaction: CompactionConfig::default(),
            producer_id_expiration: Duration::from_secs(24 * 60 * 60),
        }
    }
}

impl Broker {
    fn truncator(&self) -> LogTruncator {
        LogTruncator::new(
            self.store.clone(),
            self.metadata.clone(),
            self.config.maintenance.delete_grace,
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
        let log = self.partition(topic, partition).await?;
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
        for log in self.open_partitions() {
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
    /// [`MaintenanceConfig::producer_id_expiration`]. Writers already open keep their in-memory
    /// state; the snapshots only matter when a partition is opened.
    async fn expire_producer_state(&self) {
        let expiration = self.config.maintenance.producer_id_expiration;
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

/// Starts the maintenance loops under the broker's supervisor; each ends when the broker is
/// dropped.
pub(crate) fn spawn_maintenance(broker: &Arc<Broker>) {
    let config = broker.config.maintenance.clone();
    let janitor = OrphanJanitor::new(
        broker.store.clone(),
        broker.metadata.clone(),
        config.janitor.clone(),
    );
    broker.tasks.spawn(
        "retention",
        every(
            Arc::downgrade(broker),
            config.retention_interval,
            |b| async move {
                b.enforce_retention().await;
                b.expire_producer_state().await;
            },
        ),
    );
    broker.tasks.spawn(
        "consolidation",
        every(
            Arc::downgrade(broker),
            config.consolidation_interval,
            |b| async move {
                b.consolidate(false).await;
            },
        ),
    );
    broker.tasks.spawn(
        "compaction",
        every(
            Arc::downgrade(broker),
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
    broker.tasks.spawn(
        "deletions",
        every(
            Arc::downgrade(broker),
            config.deletion_interval,
            |b| async move {
                b.delete_due_objects().await;
            },
        ),
    );
    let janitor = Arc::new(janitor);
    broker.tasks.spawn(
        "janitor",
        every(Arc::downgrade(broker), config.janitor_interval, move |_| {
            let janitor = janitor.clone();
            async move {
                if let Err(e) = janitor.sweep().await {
                    warn!("orphan sweep failed: {e}");
                }
            }
        }),
    );
}

/// Runs `work` every `period` while the broker lives.
async fn every<F, Fut>(broker: Weak<Broker>, period: Duration, work: F)
where
    F: Fn(Arc<Broker>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        tokio::time::sleep(period).await;
        let Some(b) = broker.upgrade() else { return };
        work(b).await;
    }
}
