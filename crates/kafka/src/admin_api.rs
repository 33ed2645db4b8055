//! The Broker's administrative API: topics with their partitions (watermarks, segments, leases),
//! agents, leases and cache counters. The HTTP admin API and the console are built on it; the
//! Kafka admin handlers share the same validation (`handlers::admin`, `topic_config`).

use std::collections::BTreeMap;

use serde::Serialize;
use streamhouse_metadata::{now_ms, NewTopic, PartitionLease, PartitionState, Topic, TopicConfig};
use streamhouse_storage::SegmentCacheStats;
use uuid::Uuid;

use crate::api_error::ApiError;
use crate::broker::Broker;
use crate::topic_config::{self, ConfigChange};
use crate::topics::{validate_topic_name, MAX_PARTITIONS};

/// A topic in a listing.
#[derive(Debug, Clone, Serialize)]
pub struct TopicSummary {
    /// Topic name.
    pub name: String,
    /// Stable topic id.
    pub id: Uuid,
    /// Number of partitions.
    pub partitions: u32,
    /// Creation time, ms since the Unix epoch.
    pub created_at_ms: i64,
}

/// A topic with its settings and every partition.
#[derive(Debug, Clone, Serialize)]
pub struct TopicDescription {
    /// Topic name.
    pub name: String,
    /// Stable topic id.
    pub id: Uuid,
    /// Creation time, ms since the Unix epoch.
    pub created_at_ms: i64,
    /// Every setting under its Kafka name (`retention.ms`, ...), defaults included.
    pub config: BTreeMap<String, String>,
    /// Partitions, ordered by index.
    pub partitions: Vec<PartitionDescription>,
}

/// One partition's durable progress, storage footprint and owner.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionDescription {
    /// Partition index.
    pub partition: u32,
    /// Next offset to be written; every offset below it is durable.
    pub high_watermark: i64,
    /// Lowest retained offset.
    pub log_start_offset: i64,
    /// Committed segments still retained.
    pub segment_count: u64,
    /// Total size of those segments' objects.
    pub size_bytes: u64,
    /// The partition lease, if any agent ever held it (it may have expired).
    pub lease: Option<PartitionLease>,
}

/// An agent as the admin API reports it.
#[derive(Debug, Clone, Serialize)]
pub struct AgentStatus {
    /// Unique agent id.
    pub agent_id: String,
    /// Kafka node id.
    pub node_id: i32,
    /// Host Kafka clients connect to.
    pub kafka_host: String,
    /// Kafka port.
    pub kafka_port: u16,
    /// Whether this is the agent answering the request.
    pub local: bool,
    /// Partitions the agent holds an unexpired lease on.
    pub leases_held: u32,
    /// Last heartbeat recorded in the metadata store (ms since the Unix epoch), if registered.
    pub last_heartbeat_ms: Option<i64>,
}

/// Segment-index counters summed over the partitions this agent has open.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SegmentIndexStats {
    /// Partitions this agent holds the lease of (and serves).
    pub open_partitions: u64,
    /// Of those, the partitions a request has used since: with a writer, reader and index.
    pub loaded_partitions: u64,
    /// Segments held in their indexes.
    pub indexed_segments: u64,
    /// Metadata queries the indexes issued (misses and refreshes).
    pub metadata_queries: u64,
}

/// Topic administration on a [`Broker`]; obtained with [`Broker::admin`].
pub struct Admin<'a> {
    broker: &'a Broker,
}

impl Broker {
    /// The administrative API of this agent.
    pub fn admin(&self) -> Admin<'_> {
        Admin { broker: self }
    }
}

impl Admin<'_> {
    /// The broker this API acts on (for the other admin modules).
    pub(crate) fn broker(&self) -> &Broker {
        self.broker
    }

    /// Every topic, ordered by name.
    pub async fn topics(&self) -> Result<Vec<TopicSummary>, ApiError> {
        let topics = self.broker.metadata.list_topics().await?;
        Ok(topics
            .into_iter()
            .map(|t| TopicSummary {
                name: t.name,
                id: t.id,
                partitions: t.partitions,
                created_at_ms: t.created_at_ms,
            })
            .collect())
    }

    /// A topic with its settings and partitions.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription, ApiError> {
        let topic = self.topic(name).await?;
        self.describe(topic).await
    }

    /// Creates a topic. `partitions` defaults to the agent's `default_partitions`; `config`
    /// takes Kafka setting names.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: Option<u32>,
        config: &BTreeMap<String, String>,
    ) -> Result<TopicDescription, ApiError> {
        validate_topic_name(name).map_err(ApiError::Invalid)?;
        let partitions = partitions.unwrap_or(self.broker.config.default_partitions);
        check_partition_count(partitions)?;
        let config = parse_config(config.iter().map(|(k, v)| (k.as_str(), Some(v.as_str()))))?;
        self.broker
            .check_partition_cap(u64::from(partitions))
            .await
            .map_err(ApiError::Invalid)?;
        let new = NewTopic {
            name: name.to_string(),
            partitions,
            config,
        };
        let topic = self.broker.create_topic(new).await?;
        self.describe(topic).await
    }

    /// Deletes a topic and (in the background) its segment objects.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ApiError> {
        self.broker.delete_topic(name).await?;
        Ok(())
    }

    /// Changes settings in order, as Kafka's IncrementalAlterConfigs does; settings not named
    /// keep their values. With `validate_only` the changes are checked and nothing is stored.
    pub async fn alter_topic_config(
        &self,
        name: &str,
        changes: &[(String, ConfigChange)],
        validate_only: bool,
    ) -> Result<TopicDescription, ApiError> {
        let topic = self
            .change_config(name, |c| topic_config::apply(c, changes), validate_only)
            .await?;
        self.describe(topic).await
    }

    /// Stores `change(current settings)` as the topic's settings, unless `validate_only`;
    /// the one way every API (HTTP, AlterConfigs, IncrementalAlterConfigs) changes them. The
    /// store applies `change` to the settings it holds, in one transaction, so alterations from
    /// other connections or agents are never overwritten by one that read the settings before
    /// them (Kafka serialises them on its controller).
    pub(crate) async fn change_config(
        &self,
        name: &str,
        change: impl Fn(&TopicConfig) -> Result<TopicConfig, topic_config::ConfigError> + Send + Sync,
        validate_only: bool,
    ) -> Result<Topic, ApiError> {
        let change = move |c: &TopicConfig| change(c).map_err(|e| e.to_string());
        if validate_only {
            let topic = self.topic(name).await?;
            let config = change(&topic.config).map_err(ApiError::Invalid)?;
            return Ok(Topic { config, ..topic });
        }
        Ok(self
            .broker
            .metadata
            .alter_topic_config(name, &change)
            .await?)
    }

    /// Grows a topic to `count` partitions.
    pub async fn add_partitions(
        &self,
        name: &str,
        count: u32,
    ) -> Result<TopicDescription, ApiError> {
        check_partition_count(count)?;
        let current = self.topic(name).await?.partitions;
        self.broker
            .check_partition_cap(u64::from(count.saturating_sub(current)))
            .await
            .map_err(ApiError::Invalid)?;
        let topic = self.broker.add_partitions(name, count).await?;
        self.describe(topic).await
    }

    /// One partition of a topic.
    pub async fn describe_partition(
        &self,
        name: &str,
        partition: u32,
    ) -> Result<PartitionDescription, ApiError> {
        let topic = self.topic(name).await?;
        if partition >= topic.partitions {
            return Err(ApiError::UnknownPartition {
                topic: name.to_string(),
                partition,
            });
        }
        let state = self.broker.metadata.get_partition(name, partition).await?;
        let leases = self.broker.metadata.list_leases().await?;
        self.partition(name, state, &leases).await
    }

    /// Every partition lease (expired ones included), ordered by topic and partition.
    pub async fn leases(&self) -> Result<Vec<PartitionLease>, ApiError> {
        Ok(self.broker.metadata.list_leases().await?)
    }

    /// This agent and every agent registered in the metadata store with a heartbeat within the
    /// lease TTL, each with the number of unexpired leases it holds.
    pub async fn agents(&self) -> Result<Vec<AgentStatus>, ApiError> {
        let b = self.broker;
        let now = now_ms();
        let alive_since = now - b.config.lease_ttl.as_millis() as i64;
        let leases = b.metadata.list_leases().await?;
        let held = |agent: &str| {
            leases
                .iter()
                .filter(|l| l.agent_id == agent && l.expires_at_ms > now)
                .count() as u32
        };
        let mut agents = vec![AgentStatus {
            agent_id: b.agent_id.clone(),
            node_id: b.config.node_id,
            kafka_host: b.config.advertised_host.clone(),
            kafka_port: b.config.advertised_port,
            local: true,
            leases_held: held(&b.agent_id),
            last_heartbeat_ms: None,
        }];
        for a in b.metadata.list_agents(alive_since).await? {
            if a.agent_id == b.agent_id {
                agents[0].last_heartbeat_ms = Some(a.last_heartbeat_ms);
                continue;
            }
            agents.push(AgentStatus {
                leases_held: held(&a.agent_id),
                agent_id: a.agent_id,
                node_id: a.node_id,
                kafka_host: a.kafka_host,
                kafka_port: a.kafka_port,
                local: false,
                last_heartbeat_ms: Some(a.last_heartbeat_ms),
            });
        }
        Ok(agents)
    }

    /// Counters of the segment cache shared by every partition of this agent.
    pub async fn segment_cache_stats(&self) -> SegmentCacheStats {
        self.broker.cache.stats().await
    }

    /// Segment-index counters of the partitions this agent holds.
    pub fn segment_index_stats(&self) -> SegmentIndexStats {
        let held = self.broker.partitions.held_partitions();
        let mut stats = SegmentIndexStats {
            open_partitions: held.len() as u64,
            ..SegmentIndexStats::default()
        };
        for log in held.iter().filter_map(|h| h.log()) {
            stats.loaded_partitions += 1;
            stats.indexed_segments += log.index.len() as u64;
            stats.metadata_queries += log.index.metadata_queries();
        }
        stats
    }

    /// Idempotent-producer states the partitions of this agent hold together (bounded by
    /// `max_producers_per_agent`).
    pub fn producer_states(&self) -> usize {
        self.broker.partitions.producer_states()
    }

    async fn topic(&self, name: &str) -> Result<Topic, ApiError> {
        self.broker
            .metadata
            .get_topic(name)
            .await?
            .ok_or_else(|| ApiError::UnknownTopic(name.to_string()))
    }

    async fn describe(&self, topic: Topic) -> Result<TopicDescription, ApiError> {
        let states = self.broker.metadata.list_partitions(&topic.name).await?;
        let leases = self.broker.metadata.list_leases().await?;
        let mut partitions = Vec::with_capacity(states.len());
        for state in states {
            partitions.push(self.partition(&topic.name, state, &leases).await?);
        }
        Ok(TopicDescription {
            config: topic_config::describe(&topic.config)
                .into_iter()
                .map(|(k, v, _)| (k, v))
                .collect(),
            name: topic.name,
            id: topic.id,
            created_at_ms: topic.created_at_ms,
            partitions,
        })
    }

    /// `(segments, bytes)` a partition retains, from the metadata store.
    pub(crate) async fn retained(
        &self,
        topic: &str,
        state: &PartitionState,
    ) -> Result<(u64, u64), ApiError> {
        let totals = self
            .broker
            .metadata
            .segment_totals(topic, state.partition)
            .await?;
        Ok((totals.segments, totals.bytes))
    }

    async fn partition(
        &self,
        topic: &str,
        state: PartitionState,
        leases: &[PartitionLease],
    ) -> Result<PartitionDescription, ApiError> {
        let (segment_count, size_bytes) = self.retained(topic, &state).await?;
        Ok(PartitionDescription {
            partition: state.partition,
            high_watermark: state.high_watermark,
            log_start_offset: state.log_start_offset,
            segment_count,
            size_bytes,
            lease: leases
                .iter()
                .find(|l| l.topic == topic && l.partition == state.partition)
                .cloned(),
        })
    }
}

fn parse_config<'a>(
    entries: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> Result<streamhouse_metadata::TopicConfig, ApiError> {
    topic_config::parse(entries).map_err(|e| ApiError::Invalid(e.to_string()))
}

/// Kafka's rule for a new topic's replication factor: -1 asks for the default, and a factor
/// must be positive. Any positive factor is met: every partition's data is in the object store,
/// whose own redundancy replaces Kafka's replicas.
pub(crate) fn check_replication_factor(factor: i16) -> Result<(), String> {
    if factor == -1 || factor >= 1 {
        Ok(())
    } else {
        Err(format!(
            "replication factor must be -1 (the default) or at least 1, got {factor}"
        ))
    }
}

fn check_partition_count(count: u32) -> Result<(), ApiError> {
    if (1..=MAX_PARTITIONS).contains(&count) {
        Ok(())
    } else {
        Err(ApiError::Invalid(format!(
            "partition count must be between 1 and {MAX_PARTITIONS}, got {count}"
        )))
    }
}
