//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
};
use streamhouse_metadata::{NewTopic, Topic, TopicConfig};

use super::{str_bytes, topic_name};
use crate::admin_api::check_replication_factor;
use crate::broker::Broker;
use crate::errors::metadata_error_code;
use crate::security::{Access, Op, Resource};
use crate::topic_config;
use crate::topics::{validate_topic_name, MAX_PARTITIONS};

/// DescribeConfigs resource types (Kafka's `ConfigResource.Type`).
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// DescribeConfigs config sources.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;

pub(crate) async fn create_topics(
    b: &Broker,
    access: &Access,
    req: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let outcome = if access.creates_topic(&name) {
            create_one(b, t, req.validate_only).await
        } else {
            Err(not_authorized(&name))
        };
        let result = match outcome {
            Ok(topic) => CreatableTopicResult::default()
                .with_topic_id(topic.id)
                .with_num_partitions(topic.partitions as i32)
                .with_replication_factor(1)
                .with_configs(Some(describe_configs_for_create(&topic))),
            Err((code, msg)) => CreatableTopicResult::default()
                .with_error_code(code.code())
                .with_error_message(Some(str_bytes(&msg))),
        };
        results.push(result.with_name(topic_name(&name)));
    }
    CreateTopicsResponse::default().with_topics(results)
}

async fn create_one(
    b: &Broker,
    t: CreatableTopic,
    validate_only: bool,
) -> Result<Topic, (ResponseError, String)> {
    let name = t.name.0.as_str();
    validate_topic_name(name).map_err(|m| (ResponseError::InvalidTopicException, m))?;
    if !t.assignments.is_empty() {
        return Err((
            ResponseError::InvalidReplicaAssignment,
            "manual replica assignment is not supported: storage is shared".into(),
        ));
    }
    check_replication_factor(t.replication_factor)
        .map_err(|m| (ResponseError::InvalidReplicationFactor, m))?;
    let partitions = match t.num_partitions {
        -1 => b.config().default_partitions,
        n if n >= 1 && n as u32 <= MAX_PARTITIONS => n as u32,
        n => {
            return Err((
                ResponseError::InvalidPartitions,
                format!("number of partitions must be between 1 and {MAX_PARTITIONS}, got {n}"),
            ))
        }
    };
    let config = topic_config::parse(
        t.configs
            .iter()
            .map(|c| (c.name.as_str(), c.value.as_ref().map(|v| v.as_str()))),
    )
    .map_err(|e| (ResponseError::InvalidConfig, e.to_string()))?;
    b.check_partition_cap(u64::from(partitions))
        .await
        .map_err(|m| (ResponseError::PolicyViolation, m))?;
    let new = NewTopic {
        name: name.to_string(),
        partitions,
        config,
    };
    if validate_only {
        return match b.catalog().get_topic(name).await {
            Ok(Some(_)) => Err((
                ResponseError::TopicAlreadyExists,
                format!("topic '{name}' already exists"),
            )),
            Ok(None) => Ok(Topic {
                id: uuid::Uuid::nil(),
                name: new.name,
                partitions: new.partitions,
                config: new.config,
                created_at_ms: 0,
            }),
            Err(e) => Err((metadata_error_code(&e), e.to_string())),
        };
    }
    b.create_topic(new)
        .await
        .map_err(|e| (metadata_error_code(&e), e.to_string()))
}

/// The refusal of an operation on topic `name` the requester's ACLs do not allow.
fn not_authorized(name: &str) -> (ResponseError, String) {
    (
        ResponseError::TopicAuthorizationFailed,
        format!("not authorized to access topic '{name}'"),
    )
}

fn describe_configs_for_create(topic: &Topic) -> Vec<CreatableTopicConfigs> {
    topic_config::describe(&topic.config)
        .into_iter()
        .map(|(name, value, is_default)| {
            CreatableTopicConfigs::default()
                .with_name(str_bytes(&name))
                .with_value(Some(str_bytes(&value)))
                .with_config_source(if is_default {
                    SOURCE_DEFAULT
                } else {
                    SOURCE_TOPIC
                })
        })
        .collect()
}

pub(crate) async fn delete_topics(
    b: &Broker,
    access: &Access,
    req: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    // v0-5 name topics in `topic_names`; v6+ in `topics` (by name or id).
    let mut names: Vec<String> = req.topic_names.iter().map(|n| n.0.to_string()).collect();
    names.extend(
        req.topics
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string())),
    );
    let mut responses = Vec::with_capacity(names.len());
    for name in names {
        let result = DeletableTopicResult::default().with_name(Some(topic_name(&name)));
        let outcome = if access.allows(Op::Delete, Resource::Topic, &name) {
            b.delete_topic(&name)
                .await
                .map_err(|e| (metadata_error_code(&e), e.to_string()))
        } else {
            Err(not_authorized(&name))
        };
        responses.push(match outcome {
            Ok(id) => result.with_topic_id(id),
            Err((code, message)) => result
                .with_error_code(code.code())
                .with_error_message(Some(str_bytes(&message))),
        });
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

pub(crate) async fn create_partitions(
    b: &Broker,
    access: &Access,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let outcome = if !access.allows(Op::Alter, Resource::Topic, &name) {
            Err(not_authorized(&name))
        } else if t.count < 1 || t.count as u32 > MAX_PARTITIONS {
            Err((
                ResponseError::InvalidPartitions,
                format!("partition count must be between 1 and {MAX_PARTITIONS}"),
            ))
        } else if let Err(e) = validate_partition_growth(b, &name, t.count as u32).await {
            Err(e)
        } else if req.validate_only {
            Ok(())
        } else {
            b.add_partitions(&name, t.count as u32)
                .await
                .map(|_| ())
                .map_err(|e| (partition_growth_code(&e), e.to_string()))
        };
        let result = CreatePartitionsTopicResult::default().with_name(topic_name(&name));
        results.push(match outcome {
            Ok(()) => result,
            Err((code, msg)) => result
                .with_error_code(code.code())
                .with_error_message(Some(str_bytes(&msg))),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}

async fn validate_partition_growth(
    b: &Broker,
    name: &str,
    count: u32,
) -> Result<(), (ResponseError, String)> {
    match b.catalog().get_topic(name).await {
        Ok(Some(t)) if count > t.partitions => b
            .check_partition_cap(u64::from(count - t.partitions))
            .await
            .map_err(|m| (ResponseError::PolicyViolation, m)),
        Ok(Some(t)) => Err((
            ResponseError::InvalidPartitions,
            format!(
                "topic has {} partitions; the count can only grow",
                t.partitions
            ),
        )),
        Ok(None) => Err((
            ResponseError::UnknownTopicOrPartition,
            format!("topic '{name}' does not exist"),
        )),
        Err(e) => Err((metadata_error_code(&e), e.to_string())),
    }
}

fn partition_growth_code(e: &streamhouse_metadata::MetadataError) -> ResponseError {
    match e {
        streamhouse_metadata::MetadataError::Invalid(_) => ResponseError::InvalidPartitions,
        other => metadata_error_code(other),
    }
}

pub(crate) async fn describe_configs(
    b: &Broker,
    access: &Access,
    req: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let topic_defaults = topic_config::describe(&TopicConfig::default());
    let mut results = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let wanted = |name: &str| {
            r.configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
        };
        let result = DescribeConfigsResult::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone());
        let name = r.resource_name.as_str();
        let entries = match r.resource_type {
            RESOURCE_TOPIC if !access.allows(Op::DescribeConfigs, Resource::Topic, name) => {
                Err(ResponseError::TopicAuthorizationFailed)
            }
            RESOURCE_TOPIC => match b.catalog().get_topic(name).await {
                Ok(Some(topic)) => Ok(topic_config::describe(&topic.config)),
                Ok(None) => Err(ResponseError::UnknownTopicOrPartition),
                Err(e) => Err(metadata_error_code(&e)),
            },
            RESOURCE_BROKER if !access.on_cluster(Op::DescribeConfigs) => {
                Err(ResponseError::ClusterAuthorizationFailed)
            }
            RESOURCE_BROKER => Ok(b.describe_broker_config()),
            _ => Err(ResponseError::InvalidRequest),
        };
        results.push(match entries {
            Ok(entries) => result.with_configs(
                entries
                    .into_iter()
                    .filter(|(name, _, _)| wanted(name))
                    .map(|(name, value, is_default)| {
                        let source = if is_default {
                            SOURCE_DEFAULT
                        } else {
                            SOURCE_TOPIC
                        };
                        let synonyms = if req.include_synonyms && r.resource_type == RESOURCE_TOPIC
                        {
                            topic_synonyms(&name, &value, source, &topic_defaults)
                        } else {
                            Vec::new()
                        };
                        DescribeConfigsResourceResult::default()
                            .with_name(str_bytes(&name))
                            .with_value(Some(str_bytes(&value)))
                            .with_read_only(r.resource_type == RESOURCE_BROKER)
                            .with_config_source(source)
                            .with_synonyms(synonyms)
                    })
                    .collect(),
            ),
            Err(code) => result.with_error_code(code.code()),
        });
    }
    DescribeConfigsResponse::default().with_results(results)
}

/// A topic setting's synonyms, in Kafka's order of precedence (KIP-226): the value set on the
/// topic, if any, then the default it overrides. (Kafka names the default after its broker
/// setting, `log.retention.ms`; StreamHouse has no broker-wide topic settings, so the default
/// keeps the topic setting's name.)
fn topic_synonyms(
    name: &str,
    value: &str,
    source: i8,
    defaults: &[(String, String, bool)],
) -> Vec<DescribeConfigsSynonym> {
    let synonym = |value: &str, source| {
        DescribeConfigsSynonym::default()
            .with_name(str_bytes(name))
            .with_value(Some(str_bytes(value)))
            .with_source(source)
    };
    let default = defaults.iter().find(|(n, _, _)| n == name);
    let mut out = Vec::new();
    if source == SOURCE_TOPIC {
        out.push(synonym(value, SOURCE_TOPIC));
    }
    if let Some((_, default, _)) = default {
        out.push(synonym(default, SOURCE_DEFAULT));
    }
    out
}
