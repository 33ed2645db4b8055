//! Metadata and DescribeTopicPartitions (KIP-966): brokers (the live agents), topics and
//! partition leaders (the agent holding each partition's lease, else the agent that should own
//! it).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, MetadataRequest,
    MetadataResponse,
};
use kafka_protocol::protocol::StrBytes;
use streamhouse_metadata::Topic;
use tracing::warn;
use uuid::Uuid;

use super::{str_bytes, topic_name};
use crate::broker::Broker;
use crate::errors::metadata_error_code;
use crate::membership::{ClusterView, Leader};
use crate::security::{Access, Op, Resource};

pub(crate) async fn handle(
    b: &Broker,
    access: &Access,
    req: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let config = b.config();
    let node = BrokerId(config.node_id);
    let view = b.metadata_view().await;
    let brokers = brokers(&view)
        .map(|(id, host, port)| {
            MetadataResponseBroker::default()
                .with_node_id(id)
                .with_host(host)
                .with_port(port)
        })
        .collect();
    // Before v4 the request had no flag and auto-creation followed the broker setting alone.
    let auto_create = config.auto_create_topics && (version < 4 || req.allow_auto_topic_creation);
    let topics = match req.topics {
        Some(requested) if !(requested.is_empty() && version == 0) => {
            let mut out = Vec::with_capacity(requested.len());
            for t in requested {
                out.push(match t.name {
                    Some(name) => {
                        describe_named(b, access, &view, name.0.as_str(), auto_create).await
                    }
                    None => describe_by_id(b, access, &view, t.topic_id).await,
                });
            }
            out
        }
        // Listing every topic shows only those the requester may describe, as in Kafka.
        _ => match b.catalog().list_topics().await {
            Ok(all) => all
                .iter()
                .filter(|t| access.shows(Op::Describe, Resource::Topic, &t.name))
                .map(|t| describe_topic(&view, t))
                .collect(),
            Err(e) => {
                tracing::warn!("metadata: listing topics failed: {e}");
                Vec::new()
            }
        },
    };
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(str_bytes(&config.cluster_id)))
        .with_controller_id(node)
        .with_topics(topics)
}

async fn describe_named(
    b: &Broker,
    access: &Access,
    view: &ClusterView,
    name: &str,
    auto_create: bool,
) -> MetadataResponseTopic {
    if !access.allows(Op::Describe, Resource::Topic, name) {
        return topic_error(name, ResponseError::TopicAuthorizationFailed);
    }
    let found = match b.catalog().get_topic(name).await {
        // Auto-creation needs CREATE, as an explicit CreateTopics does.
        Ok(None) if auto_create => {
            if !access.creates_topic(name) {
                return topic_error(name, ResponseError::TopicAuthorizationFailed);
            }
            // Auto-created topics count against the partition caps like created ones, or a
            // client asking for many names would get around them.
            let partitions = u64::from(b.config().default_partitions);
            if let Err(reason) = b.check_partition_cap(partitions).await {
                warn!(topic = name, "not auto-creating: {reason}");
                return topic_error(name, ResponseError::PolicyViolation);
            }
            b.topic_or_auto_create(name, true).await
        }
        other => other,
    };
    match found {
        Ok(Some(topic)) => describe_topic(view, &topic),
        Ok(None) => topic_error(name, ResponseError::UnknownTopicOrPartition),
        Err(e) => topic_error(name, metadata_error_code(&e)),
    }
}

async fn describe_by_id(
    b: &Broker,
    access: &Access,
    view: &ClusterView,
    id: Uuid,
) -> MetadataResponseTopic {
    let found = b
        .catalog()
        .list_topics()
        .await
        .ok()
        .and_then(|all| all.into_iter().find(|t| t.id == id));
    let error = match found {
        Some(topic) if access.allows(Op::Describe, Resource::Topic, &topic.name) => {
            return describe_topic(view, &topic)
        }
        Some(_) => ResponseError::TopicAuthorizationFailed,
        None => ResponseError::UnknownTopicId,
    };
    MetadataResponseTopic::default()
        .with_topic_id(id)
        .with_error_code(error.code())
}

/// The agents as Kafka brokers: `(node id, host, port)`, for Metadata and DescribeCluster.
pub(crate) fn brokers(view: &ClusterView) -> impl Iterator<Item = (BrokerId, StrBytes, i32)> + '_ {
    view.brokers.iter().map(|a| {
        (
            BrokerId(a.node_id),
            str_bytes(&a.kafka_host),
            i32::from(a.kafka_port),
        )
    })
}

/// Each partition's index and leader. Without agents there is no leader: -1, which makes
/// clients retry.
fn leaders(view: &ClusterView, topic: &Topic) -> impl Iterator<Item = (i32, Leader)> {
    (0_i32..).zip(view.leaders(topic))
}

fn describe_topic(view: &ClusterView, topic: &Topic) -> MetadataResponseTopic {
    let partitions: Vec<_> = leaders(view, topic)
        .map(|(p, leader)| partition_metadata(p, leader))
        .collect();
    tracing::debug!(topic = %topic.name, leaders = ?partitions.iter().map(|p| (p.leader_id.0, p.leader_epoch)).collect::<Vec<_>>(), "metadata: partition leaders and epochs");
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(&topic.name)))
        .with_topic_id(topic.id)
        .with_partitions(partitions)
}

/// One partition's answer: every replica list is the leader alone (the data's redundancy is
/// the object store's).
fn partition_metadata(index: i32, leader: Leader) -> MetadataResponsePartition {
    let node = BrokerId(leader.node);
    MetadataResponsePartition::default()
        .with_partition_index(index)
        .with_leader_id(node)
        .with_leader_epoch(leader.epoch)
        .with_replica_nodes(vec![node])
        .with_isr_nodes(vec![node])
}

fn topic_error(name: &str, error: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(name)))
        .with_error_code(error.code())
}

/// Most partitions one DescribeTopicPartitions response carries, whatever the client asks
/// (Kafka's `max.request.partition.size.limit` default); the cursor pages through the rest.
const MAX_RESPONSE_PARTITIONS: usize = 2000;

pub(crate) async fn describe_topic_partitions(
    b: &Broker,
    access: &Access,
    req: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let view = b.metadata_view().await;
    let all = match b.catalog().list_topics().await {
        Ok(all) => all,
        Err(e) => {
            tracing::warn!("describe topic partitions: listing topics failed: {e}");
            Vec::new()
        }
    };
    // Topics in name order, as Kafka pages through them: the requested ones (unknown ones
    // answered with an error), or every topic the requester may describe.
    let mut names: Vec<String> = if req.topics.is_empty() {
        all.iter()
            .filter(|t| access.shows(Op::Describe, Resource::Topic, &t.name))
            .map(|t| t.name.clone())
            .collect()
    } else {
        req.topics.iter().map(|t| t.name.to_string()).collect()
    };
    names.sort();
    names.dedup();
    let (start_topic, start_partition) = match &req.cursor {
        Some(c) => (Some(c.topic_name.to_string()), c.partition_index.max(0)),
        None => (None, 0),
    };
    let mut budget = usize::try_from(req.response_partition_limit)
        .unwrap_or(0)
        .clamp(1, MAX_RESPONSE_PARTITIONS);
    let mut topics = Vec::new();
    let mut next_cursor = None;
    for name in names {
        if start_topic.as_ref().is_some_and(|s| name < *s) {
            continue;
        }
        let first = match &start_topic {
            Some(s) if *s == name => start_partition,
            _ => 0,
        };
        if budget == 0 {
            next_cursor = Some(Cursor::default().with_topic_name(topic_name(&name)));
            break;
        }
        let topic = all.iter().find(|t| t.name == name);
        let error = match topic {
            _ if !access.allows(Op::Describe, Resource::Topic, &name) => {
                Some(ResponseError::TopicAuthorizationFailed)
            }
            None => Some(ResponseError::UnknownTopicOrPartition),
            Some(_) => None,
        };
        let response = DescribeTopicPartitionsResponseTopic::default()
            .with_name(Some(topic_name(&name)))
            .with_topic_authorized_operations(i32::MIN);
        let (Some(topic), None) = (topic, error) else {
            let code = error.unwrap_or(ResponseError::UnknownTopicOrPartition);
            topics.push(response.with_error_code(code.code()));
            continue;
        };
        let mut partitions = Vec::new();
        for (p, leader) in leaders(&view, topic).skip(first as usize) {
            if budget == 0 {
                next_cursor = Some(
                    Cursor::default()
                        .with_topic_name(topic_name(&name))
                        .with_partition_index(p),
                );
                break;
            }
            budget -= 1;
            let node = BrokerId(leader.node);
            partitions.push(
                DescribeTopicPartitionsResponsePartition::default()
                    .with_partition_index(p)
                    .with_leader_id(node)
                    .with_leader_epoch(leader.epoch)
                    .with_replica_nodes(vec![node])
                    .with_isr_nodes(vec![node])
                    // Empty, not null: Kafka's brokers send lists (KIP-966 ELR), and the Java
                    // client reads them without a null check.
                    .with_eligible_leader_replicas(Some(Vec::new()))
                    .with_last_known_elr(Some(Vec::new())),
            );
        }
        topics.push(response.with_topic_id(topic.id).with_partitions(partitions));
        if next_cursor.is_some() {
            break;
        }
    }
    DescribeTopicPartitionsResponse::default()
        .with_topics(topics)
        .with_next_cursor(next_cursor)
}
