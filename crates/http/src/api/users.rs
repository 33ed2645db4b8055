//! SASL/SCRAM users: list, create or change a password, delete. The agent stores only salted
//! derivatives of the password; its SASL listeners use a change at once.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use streamhouse_kafka::security::{Mechanism, ScramAlgorithm, UserDescription, DEFAULT_ITERATIONS};
use streamhouse_kafka::ApiError;

use crate::error::HttpResult;
use crate::extract::{Json, Path, Query};
use crate::security::Caller;
use crate::AppState;

use streamhouse_metadata::AclOperation as Op;

/// Body of `PUT /api/v1/users/{name}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetPassword {
    password: String,
    /// SCRAM mechanisms to create; both when absent.
    mechanisms: Option<Vec<String>>,
    iterations: Option<i64>,
}

/// Query of `DELETE /api/v1/users/{name}`.
#[derive(Deserialize)]
pub(crate) struct DeleteQuery {
    /// Delete only this mechanism's credential; all when absent.
    mechanism: Option<String>,
}

/// SCRAM algorithms named by mechanism names, without repeats.
fn algorithms(names: &[String]) -> Result<Vec<ScramAlgorithm>, ApiError> {
    let mut algorithms = Vec::new();
    for name in names {
        let mechanism: Mechanism =
            name.parse()
                .map_err(|e: streamhouse_kafka::security::UnknownMechanism| {
                    ApiError::Invalid(e.to_string())
                })?;
        let Some(alg) = mechanism.scram() else {
            return Err(ApiError::Invalid(format!(
                "{} logins are checked against the SCRAM credentials: choose SCRAM-SHA-256 \
                 and/or SCRAM-SHA-512",
                mechanism.name()
            )));
        };
        if !algorithms.contains(&alg) {
            algorithms.push(alg);
        }
    }
    Ok(algorithms)
}

/// DescribeUserScramCredentials: DESCRIBE on the cluster.
pub(crate) async fn list(
    State(s): State<AppState>,
    caller: Caller,
) -> HttpResult<axum::Json<Vec<UserDescription>>> {
    caller.require_cluster(Op::Describe)?;
    Ok(axum::Json(s.broker.users().list().await?))
}

/// AlterUserScramCredentials: ALTER on the cluster.
pub(crate) async fn set_password(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(req): Json<SetPassword>,
) -> HttpResult<axum::Json<UserDescription>> {
    caller.require_cluster(Op::Alter)?;
    let algorithms = match &req.mechanisms {
        Some(names) => algorithms(names)?,
        None => ScramAlgorithm::ALL.to_vec(),
    };
    let iterations = req.iterations.unwrap_or(i64::from(DEFAULT_ITERATIONS));
    let users = s.broker.users();
    let user = users
        .set_password(&name, &req.password, &algorithms, iterations)
        .await?;
    Ok(axum::Json(user))
}

/// AlterUserScramCredentials (deletions): ALTER on the cluster.
pub(crate) async fn delete(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(query): Query<DeleteQuery>,
) -> HttpResult<StatusCode> {
    caller.require_cluster(Op::Alter)?;
    let algorithms = match query.mechanism {
        Some(m) => algorithms(&[m])?,
        None => ScramAlgorithm::ALL.to_vec(),
    };
    s.broker.users().delete(&name, &algorithms).await?;
    Ok(StatusCode::NO_CONTENT)
}
