//! Consumer groups: listing, details with lag, deletion, offset resets.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use streamhouse_kafka::{GroupDetails, GroupOffset, GroupSummary, OffsetReset};

use crate::error::HttpResult;
use crate::extract::{Json, Path};
use crate::security::Caller;
use crate::AppState;

use streamhouse_metadata::AclOperation as Op;
use streamhouse_metadata::AclResourceType::{Cluster, Group, Topic};

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

/// ListGroups: every group with DESCRIBE on the cluster, else the groups the caller may
/// DESCRIBE.
pub(crate) async fn list(
    State(s): State<AppState>,
    caller: Caller,
) -> HttpResult<axum::Json<Vec<GroupSummary>>> {
    let mut groups = s.broker.admin().groups().await?;
    let cluster = streamhouse_metadata::CLUSTER_NAME;
    if !caller.sees(Op::Describe, Cluster, cluster) {
        groups.retain(|g| caller.sees(Op::Describe, Group, &g.group_id));
    }
    Ok(axum::Json(groups))
}

/// DescribeGroups and OffsetFetch: DESCRIBE on the group; offsets only of the topics the caller
/// may DESCRIBE.
pub(crate) async fn describe(
    State(s): State<AppState>,
    caller: Caller,
    Path(group): Path<String>,
) -> HttpResult<axum::Json<GroupDetails>> {
    caller.require(Op::Describe, Group, &group)?;
    let mut details = s.broker.admin().describe_group(&group).await?;
    visible_offsets(&caller, &mut details.offsets);
    Ok(axum::Json(details))
}

/// OffsetFetch: DESCRIBE on the group; offsets only of the topics the caller may DESCRIBE.
pub(crate) async fn lag(
    State(s): State<AppState>,
    caller: Caller,
    Path(group): Path<String>,
) -> HttpResult<axum::Json<Vec<GroupOffset>>> {
    caller.require(Op::Describe, Group, &group)?;
    let mut offsets = s.broker.admin().group_lag(&group).await?;
    visible_offsets(&caller, &mut offsets);
    Ok(axum::Json(offsets))
}

/// Leaves out the offsets of topics the caller may not DESCRIBE, as OffsetFetch does.
fn visible_offsets(caller: &Caller, offsets: &mut Vec<GroupOffset>) {
    offsets.retain(|o| caller.sees(Op::Describe, Topic, &o.topic));
}

/// DeleteGroups: DELETE on the group.
pub(crate) async fn delete(
    State(s): State<AppState>,
    caller: Caller,
    Path(group): Path<String>,
) -> HttpResult<StatusCode> {
    caller.require(Op::Delete, Group, &group)?;
    s.broker.admin().delete_group(&group).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// OffsetCommit: READ on the group and on every topic named.
pub(crate) async fn reset_offsets(
    State(s): State<AppState>,
    caller: Caller,
    Path(group): Path<String>,
    Json(req): Json<ResetOffsets>,
) -> HttpResult<axum::Json<Vec<GroupOffset>>> {
    caller.require(Op::Read, Group, &group)?;
    for o in &req.offsets {
        caller.require(Op::Read, Topic, &o.topic)?;
    }
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
