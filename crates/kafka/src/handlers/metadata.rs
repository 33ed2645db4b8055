//! Metadata: brokers (the live agents), topics and partition leaders (the agent holding each
//! partition's lease, else the agent that should own it).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};
use streamhouse_metadata::{now_ms, Topic};
use tracing::warn;
use uuid::Uuid;

use super::{str_bytes, topic_name};
use crate::broker::Broker;
use crate::cluster::ClusterView;
use crate::errors::metadata_error_code;
use crate::limits::check_partition_cap;
use crate::security::{Access, Op, Resource};

pub(crate) async fn handle(
    b: &Broker,
    access: &Access,
    req: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let config = b.config();
    let node = BrokerId(config.node_id);
    let view = b.cluster_view().await;
    let brokers = view
        .assignment
        .agents()
        .iter()
        .map(|a| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(a.node_id))
                .with_host(str_bytes(&a.kafka_host))
                .with_port(i32::from(a.kafka_port))
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
        _ => match b.metadata().list_topics().await {
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
    let found = match b.metadata().get_topic(name).await {
        // Auto-creation needs CREATE, as an explicit CreateTopics does.
        Ok(None) if auto_create => {
            if !access.creates_topic(name) {
                return topic_error(name, ResponseError::TopicAuthorizationFailed);
            }
            // Auto-created topics count against the partition caps like created ones, or a
            // client asking for many names would get around them.
            let partitions = u64::from(b.config().default_partitions);
            if let Err(reason) = check_partition_cap(b, partitions).await {
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
        .metadata()
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

fn describe_topic(view: &ClusterView, topic: &Topic) -> MetadataResponseTopic {
    // Without agents there is no leader: -1, which makes clients retry Metadata.
    let partitions = (0_i32..)
        .zip(view.leaders(topic, now_ms()))
        .map(|(p, leader)| {
            let leader = BrokerId(leader);
            MetadataResponsePartition::default()
                .with_partition_index(p)
                .with_leader_id(leader)
                .with_leader_epoch(-1)
                .with_replica_nodes(vec![leader])
                .with_isr_nodes(vec![leader])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(&topic.name)))
        .with_topic_id(topic.id)
        .with_partitions(partitions)
}

fn topic_error(name: &str, error: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(name)))
        .with_error_code(error.code())
}
