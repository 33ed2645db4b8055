//! Consolidation of the partitions this agent leads: rewrites the per-flush slices of shared
//! objects into large contiguous segments (see `streamhouse_storage::Consolidator`), log
//! compaction of those whose topic says `cleanup.policy=compact` (`Compactor`), and the deletion
//! of objects nothing references any more.

use std::collections::HashMap;

use streamhouse_metadata::now_ms;
use streamhouse_storage::{
    CompactionPolicy, CompactionReport, CompactionTarget, Compactor, ConsolidationReport,
    ConsolidationTarget, Consolidator, ObjectDeleter,
};
use tracing::warn;

use super::Maintenance;

impl Maintenance {
    /// One consolidation round over every partition this agent has open, under their leases,
    /// if the backlog calls for it (`force`: whatever the backlog).
    pub async fn consolidate(&self, force: bool) -> ConsolidationReport {
        let targets: Vec<ConsolidationTarget> = self
            .partitions
            .with_records()
            .await
            .into_iter()
            .map(|log| ConsolidationTarget {
                storage: self
                    .partitions
                    .partition_storage(&log.topic, log.partition, &log.index),
                fence: Some(log.fence().clone()),
            })
            .collect();
        let consolidator = Consolidator::new(
            self.store.clone(),
            self.metadata.clone(),
            self.config.consolidation.clone(),
            self.config.delete_grace,
        );
        match consolidator.run_once(&targets, force).await {
            Ok(report) => report,
            Err(e) => {
                warn!("consolidation failed: {e}");
                ConsolidationReport::default()
            }
        }
    }

    /// Consolidation rounds until what is left fits one round: returns how many ran.
    ///
    /// A round reads at most `max_round_bytes`, a bound on its memory, not a pace: one round per
    /// interval consolidates at most ~25 MiB/s by default, so an agent ingesting faster would
    /// never catch up, and would rewrite its backlog later on top of whatever it does then.
    /// The rounds are bounded by the backlog the first one found, so slices arriving meanwhile
    /// wait for the next interval.
    pub async fn consolidate_backlog(&self) -> u64 {
        let round = self.config.consolidation.max_round_bytes.max(1);
        let cut = |r: &ConsolidationReport| r.partitions > 0 && r.backlog_bytes > round;
        let mut last = self.consolidate(false).await;
        let most = 1 + last.backlog_bytes / round;
        let mut rounds = 1;
        while cut(&last) && rounds < most {
            last = self.consolidate(false).await;
            rounds += 1;
        }
        rounds
    }

    /// One compaction round over the partitions this agent has open whose topic is compacted
    /// (`force`: whatever the dirty ratio). Each topic's settings are read from the store every
    /// round, so a change between `delete` and `compact` takes effect without a restart.
    pub async fn compact(&self, force: bool) -> CompactionReport {
        let mut policies: HashMap<String, Option<CompactionPolicy>> = HashMap::new();
        let mut targets = Vec::new();
        for log in self.partitions.with_records().await {
            let name = log.topic.name.clone();
            if !policies.contains_key(&name) {
                let policy = self.compaction_policy(&name).await;
                policies.insert(name.clone(), policy);
            }
            let Some(policy) = policies[&name] else {
                continue;
            };
            targets.push(CompactionTarget {
                storage: self
                    .partitions
                    .partition_storage(&log.topic, log.partition, &log.index),
                fence: Some(log.fence().clone()),
                policy,
            });
        }
        let compactor = Compactor::new(
            self.store.clone(),
            self.metadata.clone(),
            self.config.compaction.clone(),
            self.config.delete_grace,
        );
        compactor.run_once(&targets, force).await
    }

    /// The topic's compaction policy as stored now; `None` when it is not compacted, gone or
    /// unreadable.
    async fn compaction_policy(&self, name: &str) -> Option<CompactionPolicy> {
        match self.metadata.get_topic(name).await {
            Ok(topic) => CompactionPolicy::of(&topic?.config),
            Err(e) => {
                warn!(topic = %name, "reading compaction settings failed: {e}");
                None
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
