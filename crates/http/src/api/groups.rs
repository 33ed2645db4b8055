//! Consumer groups: listing, details with lag, deletion, offset resets.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use streamhouse_kafka::{GroupDetails, GroupOffset, GroupSummary, OffsetReset};

use crate::error::HttpResult;
use crate::extract::{Json, Path};
use crate::AppState;

/// One offset in `POST /api/v1/groups/{group}/offsets`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OffsetIn {
    topic: String,
    partition: u32,
    offset: i64,
}

/// Body of `POST /api/v1/groups/{group}/offsets`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResetOffsets {
    offsets: Vec<OffsetIn>,
}

pub(crate) async fn list(State(s): State<AppState>) -> HttpResult<axum::Json<Vec<GroupSummary>>> {
    Ok(axum::Json(s.broker.admin().groups().await?))
}

pub(crate) async fn describe(
    State(s): State<AppState>,
    Path(group): Path<String>,
) -> HttpResult<axum::Json<GroupDetails>> {
    Ok(axum::Json(s.broker.admin().describe_group(&group).await?))
}

pub(crate) async fn lag(
    State(s): State<AppState>,
    Path(group): Path<String>,
) -> HttpResult<axum::Json<Vec<GroupOffset>>> {
    Ok(axum::Json(s.broker.admin().group_lag(&group).await?))
}

pub(crate) async fn delete(
    State(s): State<AppState>,
    Path(group): Path<String>,
) -> HttpResult<StatusCode> {
    s.broker.admin().delete_group(&group).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn reset_offsets(
    State(s): State<AppState>,
    Path(group): Path<String>,
    Json(req): Json<ResetOffsets>,
) -> HttpResult<axum::Json<Vec<GroupOffset>>> {
    let offsets: Vec<OffsetReset> = req
        .offsets
        .into_iter()
        .map(|o| OffsetReset {
            topic: o.topic,
            partition: o.partition,
            offset: o.offset,
        })
        .collect();
    let admin = s.broker.admin();
    Ok(axum::Json(admin.reset_offsets(&group, &offsets).await?))
}
