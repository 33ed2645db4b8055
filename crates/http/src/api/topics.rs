//! Topics and partitions.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use streamhouse_kafka::{ConfigChange, PartitionDescription, TopicDescription, TopicSummary};

use crate::error::HttpResult;
use crate::extract::{Json, Path};
use crate::AppState;

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

pub(crate) async fn list(State(s): State<AppState>) -> HttpResult<axum::Json<Vec<TopicSummary>>> {
    Ok(axum::Json(s.broker.admin().topics().await?))
}

pub(crate) async fn create(
    State(s): State<AppState>,
    Json(req): Json<CreateTopic>,
) -> HttpResult<(StatusCode, axum::Json<TopicDescription>)> {
    let topic = s
        .broker
        .admin()
        .create_topic(&req.name, req.partitions, &req.config)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(topic)))
}

pub(crate) async fn describe(
    State(s): State<AppState>,
    Path(topic): Path<String>,
) -> HttpResult<axum::Json<TopicDescription>> {
    Ok(axum::Json(s.broker.admin().describe_topic(&topic).await?))
}

pub(crate) async fn delete(
    State(s): State<AppState>,
    Path(topic): Path<String>,
) -> HttpResult<StatusCode> {
    s.broker.admin().delete_topic(&topic).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `null` returns a setting to its default.
pub(crate) async fn alter_config(
    State(s): State<AppState>,
    Path(topic): Path<String>,
    Json(changes): Json<BTreeMap<String, Option<String>>>,
) -> HttpResult<axum::Json<TopicDescription>> {
    let changes: Vec<_> = changes
        .into_iter()
        .map(|(name, value)| (name, value.map_or(ConfigChange::Delete, ConfigChange::Set)))
        .collect();
    let admin = s.broker.admin();
    Ok(axum::Json(
        admin.alter_topic_config(&topic, &changes, false).await?,
    ))
}

pub(crate) async fn add_partitions(
    State(s): State<AppState>,
    Path(topic): Path<String>,
    Json(req): Json<AddPartitions>,
) -> HttpResult<axum::Json<TopicDescription>> {
    let admin = s.broker.admin();
    Ok(axum::Json(admin.add_partitions(&topic, req.count).await?))
}

pub(crate) async fn describe_partition(
    State(s): State<AppState>,
    Path((topic, partition)): Path<(String, u32)>,
) -> HttpResult<axum::Json<PartitionDescription>> {
    let admin = s.broker.admin();
    Ok(axum::Json(
        admin.describe_partition(&topic, partition).await?,
    ))
}
