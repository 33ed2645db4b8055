//! ACLs: list, create and delete the bindings every agent authorizes Kafka and HTTP requests
//! with. Listing needs DESCRIBE on the cluster, changing ALTER (DescribeAcls, CreateAcls,
//! DeleteAcls).

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use streamhouse_metadata::{
    AclBinding, AclBindingFilter, AclOperation, AclPatternFilter, AclPatternType, AclPermission,
    AclResourceType,
};

use crate::error::{HttpError, HttpResult};
use crate::extract::{Json, Query};
use crate::security::Caller;
use crate::AppState;

/// Body of `POST /api/v1/acls`: one binding, with Kafka's defaults for pattern and host.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AclIn {
    resource_type: AclResourceType,
    resource_name: String,
    #[serde(default = "literal")]
    pattern_type: AclPatternType,
    principal: String,
    #[serde(default = "any_host")]
    host: String,
    operation: AclOperation,
    permission: AclPermission,
}

fn literal() -> AclPatternType {
    AclPatternType::Literal
}

fn any_host() -> String {
    "*".into()
}

/// Query of `GET` and `DELETE /api/v1/acls`: each parameter left out matches anything.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AclQuery {
    resource_type: Option<AclResourceType>,
    resource_name: Option<String>,
    pattern_type: Option<AclPatternFilter>,
    principal: Option<String>,
    host: Option<String>,
    operation: Option<AclOperation>,
    permission: Option<AclPermission>,
}

impl From<AclQuery> for AclBindingFilter {
    fn from(q: AclQuery) -> Self {
        Self {
            resource_type: q.resource_type,
            resource_name: q.resource_name,
            pattern: q.pattern_type.unwrap_or(AclPatternFilter::Any),
            principal: q.principal,
            host: q.host,
            operation: q.operation,
            permission: q.permission,
        }
    }
}

/// DescribeAcls: DESCRIBE on the cluster.
pub(crate) async fn list(
    State(s): State<AppState>,
    caller: Caller,
    Query(q): Query<AclQuery>,
) -> HttpResult<axum::Json<Vec<AclBinding>>> {
    caller.require_cluster(AclOperation::Describe)?;
    Ok(axum::Json(s.broker.acls().list(&q.into()).await?))
}

/// CreateAcls: ALTER on the cluster.
pub(crate) async fn create(
    State(s): State<AppState>,
    caller: Caller,
    Json(acl): Json<AclIn>,
) -> HttpResult<(StatusCode, axum::Json<AclBinding>)> {
    caller.require_cluster(AclOperation::Alter)?;
    let acl = AclBinding {
        resource_type: acl.resource_type,
        resource_name: acl.resource_name,
        pattern_type: acl.pattern_type,
        principal: acl.principal,
        host: acl.host,
        operation: acl.operation,
        permission: acl.permission,
    };
    s.broker.acls().create(std::slice::from_ref(&acl)).await?;
    Ok((StatusCode::CREATED, axum::Json(acl)))
}

/// DeleteAcls: ALTER on the cluster. Deleting needs a resource or a principal, so a bare
/// `DELETE` cannot wipe every ACL.
pub(crate) async fn delete(
    State(s): State<AppState>,
    caller: Caller,
    Query(q): Query<AclQuery>,
) -> HttpResult<axum::Json<Vec<AclBinding>>> {
    caller.require_cluster(AclOperation::Alter)?;
    if q.resource_type.is_none() && q.resource_name.is_none() && q.principal.is_none() {
        return Err(HttpError::BadRequest(
            "name resource_type, resource_name or principal: refusing to delete every ACL".into(),
        ));
    }
    Ok(axum::Json(s.broker.acls().delete(&q.into()).await?))
}
