//! Topics and partitions.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use streamhouse_kafka::{ConfigChange, PartitionDescription, TopicDescription, TopicSummary};

use crate::error::HttpResult;
use crate::extract::{Json, Path};
use crate::security::Caller;
use crate::AppState;

use streamhouse_metadata::AclOperation as Op;
use streamhouse_metadata::AclResourceType::Topic;

/// Body of `POST /api/v1/topics`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateTopic {
    name: String,
    partitions: Option<u32>,
    #[serde(default)]
    config: BTreeMap<String, String>,
}

/// Body of `POST /api/v1/topics/{topic}/partitions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddPartitions {
    count: u32,
}

/// Metadata: the topics the caller may DESCRIBE.
pub(crate) async fn list(
    State(s): State<AppState>,
    caller: Caller,
) -> HttpResult<axum::Json<Vec<TopicSummary>>> {
    let mut topics = s.broker.admin().topics().await?;
    topics.retain(|t| caller.sees(Op::Describe, Topic, &t.name));
    Ok(axum::Json(topics))
}

/// CreateTopics: CREATE on the cluster or the topic.
pub(crate) async fn create(
    State(s): State<AppState>,
    caller: Caller,
    Json(req): Json<CreateTopic>,
) -> HttpResult<(StatusCode, axum::Json<TopicDescription>)> {
    caller.require_create_topic(&req.name)?;
    let topic = s
        .broker
        .admin()
        .create_topic(&req.name, req.partitions, &req.config)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(topic)))
}

/// Metadata (DESCRIBE on the topic) and DescribeConfigs: the configuration is left out unless
/// the caller may DESCRIBE_CONFIGS the topic.
pub(crate) async fn describe(
    State(s): State<AppState>,
    caller: Caller,
    Path(topic): Path<String>,
) -> HttpResult<axum::Json<TopicDescription>> {
    caller.require(Op::Describe, Topic, &topic)?;
    let mut description = s.broker.admin().describe_topic(&topic).await?;
    if !caller.sees(Op::DescribeConfigs, Topic, &topic) {
        description.config.clear();
    }
    Ok(axum::Json(description))
}

/// DeleteTopics: DELETE on the topic.
pub(crate) async fn delete(
    State(s): State<AppState>,
    caller: Caller,
    Path(topic): Path<String>,
) -> HttpResult<StatusCode> {
    caller.require(Op::Delete, Topic, &topic)?;
    s.broker.admin().delete_topic(&topic).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// IncrementalAlterConfigs: ALTER_CONFIGS on the topic. `null` returns a setting to its
/// default.
pub(crate) async fn alter_config(
    State(s): State<AppState>,
    caller: Caller,
    Path(topic): Path<String>,
    Json(changes): Json<BTreeMap<String, Option<String>>>,
) -> HttpResult<axum::Json<TopicDescription>> {
    caller.require(Op::AlterConfigs, Topic, &topic)?;
    let changes: Vec<_> = changes
        .into_iter()
        .map(|(name, value)| (name, value.map_or(ConfigChange::Delete, ConfigChange::Set)))
        .collect();
    let admin = s.broker.admin();
    Ok(axum::Json(
        admin.alter_topic_config(&topic, &changes, false).await?,
    ))
}

/// CreatePartitions: ALTER on the topic.
pub(crate) async fn add_partitions(
    State(s): State<AppState>,
    caller: Caller,
    Path(topic): Path<String>,
    Json(req): Json<AddPartitions>,
) -> HttpResult<axum::Json<TopicDescription>> {
    caller.require(Op::Alter, Topic, &topic)?;
    let admin = s.broker.admin();
    Ok(axum::Json(admin.add_partitions(&topic, req.count).await?))
}

/// Metadata: DESCRIBE on the topic.
pub(crate) async fn describe_partition(
    State(s): State<AppState>,
    caller: Caller,
    Path((topic, partition)): Path<(String, u32)>,
) -> HttpResult<axum::Json<PartitionDescription>> {
    caller.require(Op::Describe, Topic, &topic)?;
    let admin = s.broker.admin();
    Ok(axum::Json(
        admin.describe_partition(&topic, partition).await?,
    ))
}
