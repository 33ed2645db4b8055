//! Prometheus metrics: the recorder (installed once per process), and gauges refreshed at each
//! scrape from counters that live elsewhere (caches, segment indexes, leases, consumer lag).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use streamhouse_kafka::Broker;
use streamhouse_metadata::{now_ms, CachedMetadataStore};

/// Latency buckets (seconds) for every `*_seconds` histogram: 100 µs to 30 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];
/// Buckets for counts such as partitions per flush.
const COUNT_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];

/// Installs the process-wide Prometheus recorder with real histogram buckets. Call once, before
/// anything records a metric; fails when a recorder is already installed.
pub fn install_recorder() -> Result<PrometheusHandle, BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full("streamhouse_flush_partitions".into()),
            COUNT_BUCKETS,
        )?
        .install_recorder()
}

/// What `/metrics` renders: the recorder's handle plus sources of scrape-time gauges.
pub struct Metrics {
    handle: PrometheusHandle,
    metadata_cache: Option<Arc<CachedMetadataStore>>,
    /// Lease holder and epoch per partition at the previous scrape, to count changes.
    leases_seen: Mutex<HashMap<(String, u32), (String, i64)>>,
}

impl Metrics {
    /// Renders from `handle` (see [`install_recorder`]).
    pub fn new(handle: PrometheusHandle) -> Self {
        Self {
            handle,
            metadata_cache: None,
            leases_seen: Mutex::new(HashMap::new()),
        }
    }

    /// Also exports the hit counters of the metadata cache in front of the broker's store.
    pub fn with_metadata_cache(mut self, cache: Arc<CachedMetadataStore>) -> Self {
        self.metadata_cache = Some(cache);
        self
    }

    /// Refreshes the scrape-time gauges and renders every series in the Prometheus text format.
    pub(crate) async fn render(&self, broker: &Broker) -> String {
        self.refresh_caches(broker).await;
        if let Err(e) = self.refresh_leases(broker).await {
            tracing::warn!("lease metrics not refreshed: {e}");
        }
        if let Err(e) = refresh_lag(broker).await {
            tracing::warn!("consumer lag metrics not refreshed: {e}");
        }
        self.handle.run_upkeep();
        self.handle.render()
    }

    /// Every series as of now, rendered once for several lookups.
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot(self.handle.render())
    }

    async fn refresh_caches(&self, broker: &Broker) {
        let admin = broker.admin();
        let seg = admin.segment_cache_stats().await;
        metrics::counter!("streamhouse_segment_cache_hits_total").absolute(seg.hits);
        metrics::counter!("streamhouse_segment_cache_misses_total").absolute(seg.misses);
        metrics::counter!("streamhouse_segment_cache_get_requests_total")
            .absolute(seg.get_requests);
        metrics::counter!("streamhouse_segment_cache_fetched_bytes_total")
            .absolute(seg.bytes_fetched);
        metrics::gauge!("streamhouse_segment_cache_bytes").set(seg.cached_bytes as f64);
        metrics::gauge!("streamhouse_segment_cache_hit_ratio").set(ratio(seg.hits, seg.misses));

        let index = admin.segment_index_stats();
        metrics::gauge!("streamhouse_open_partitions").set(index.open_partitions as f64);
        metrics::gauge!("streamhouse_loaded_partitions").set(index.loaded_partitions as f64);
        metrics::gauge!("streamhouse_segment_index_segments").set(index.indexed_segments as f64);
        // A gauge: the sum covers the partitions open now, so it drops when one closes.
        metrics::gauge!("streamhouse_segment_index_metadata_queries")
            .set(index.metadata_queries as f64);
        metrics::gauge!("streamhouse_producer_states").set(admin.producer_states() as f64);

        if let Some(cache) = &self.metadata_cache {
            let s = cache.stats();
            metrics::counter!("streamhouse_metadata_cache_hits_total").absolute(s.hits);
            metrics::counter!("streamhouse_metadata_cache_misses_total").absolute(s.misses);
            metrics::gauge!("streamhouse_metadata_cache_hit_ratio").set(ratio(s.hits, s.misses));
        }
    }

    /// Leases held per agent, and lease changes (new holder or epoch) observed between scrapes.
    async fn refresh_leases(&self, broker: &Broker) -> Result<(), streamhouse_kafka::ApiError> {
        let leases = broker.admin().leases().await?;
        let now = now_ms();
        let mut held: HashMap<&str, u64> = HashMap::new();
        for l in leases.iter().filter(|l| l.expires_at_ms > now) {
            *held.entry(l.agent_id.as_str()).or_default() += 1;
        }
        let mut seen = self.leases_seen.lock().expect("lease snapshot poisoned");
        // Agents that held leases before and hold none now go to 0 rather than keep a stale value.
        for (agent, _) in seen.values() {
            held.entry(agent.as_str()).or_default();
        }
        for (agent, n) in held {
            metrics::gauge!("streamhouse_partition_leases", "agent" => agent.to_string())
                .set(n as f64);
        }
        let mut changes = 0;
        for l in &leases {
            let current = (l.agent_id.clone(), l.epoch);
            if seen.insert((l.topic.clone(), l.partition), current.clone()) != Some(current) {
                changes += 1;
            }
        }
        metrics::counter!("streamhouse_lease_changes_total").increment(changes);
        Ok(())
    }
}

/// `streamhouse_consumer_lag{group,topic,partition}` for every group with committed offsets.
async fn refresh_lag(broker: &Broker) -> Result<(), streamhouse_metadata::MetadataError> {
    for group in broker.metadata().list_groups().await? {
        for p in broker.group_lag(&group).await? {
            metrics::gauge!(
                "streamhouse_consumer_lag",
                "group" => group.clone(),
                "topic" => p.topic,
                "partition" => p.partition.to_string()
            )
            .set(p.lag as f64);
        }
    }
    Ok(())
}

fn ratio(hits: u64, misses: u64) -> f64 {
    let total = hits + misses;
    if total == 0 {
        0.0
    } else {
        hits as f64 / total as f64
    }
}

/// Sums the samples of `name` in Prometheus text output.
/// The rendered series at one moment (see [`Metrics::snapshot`]).
pub(crate) struct Snapshot(String);

impl Snapshot {
    /// Sum of every series of `name`, whatever its labels.
    pub(crate) fn total(&self, name: &str) -> f64 {
        sum_series(&self.0, name)
    }

    /// The value of `name` whose only label is `label="value"` (0 when absent).
    pub(crate) fn labelled(&self, name: &str, label: &str, value: &str) -> f64 {
        let series = format!("{name}{{{label}=\"{value}\"}} ");
        self.0
            .lines()
            .filter_map(|line| line.strip_prefix(series.as_str())?.parse::<f64>().ok())
            .sum()
    }
}

fn sum_series(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_only_the_named_series() {
        let text = "# TYPE a_total counter\na_total 3\na_total_x 100\na_total{k=\"v\"} 4\nb 1\n";
        assert_eq!(sum_series(text, "a_total"), 7.0);
        assert_eq!(sum_series(text, "missing"), 0.0);
        assert_eq!(ratio(3, 1), 0.75);
        let snapshot = Snapshot(text.to_owned());
        assert_eq!(snapshot.labelled("a_total", "k", "v"), 4.0);
        assert_eq!(snapshot.labelled("a_total", "k", "w"), 0.0);
        assert_eq!(ratio(0, 0), 0.0);
    }
}
