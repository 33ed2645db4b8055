//! ACL administration: CreateAcls, DescribeAcls and DeleteAcls (KIP-140), so `kafka-acls`,
//! `AdminClient.createAcls` and friends work. Changing ACLs needs ALTER on the cluster, listing
//! them DESCRIBE on the cluster (super users have both).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;
use streamhouse_metadata::{
    AclBinding, AclBindingFilter, AclOperation, AclPatternFilter, AclPatternType, AclPermission,
    AclResourceType,
};

use super::str_bytes;
use crate::api_error::ApiError;
use crate::broker::Broker;
use crate::errors::metadata_error_code;
use crate::security::{Access, Op};

/// Kafka's wire code for "any value" in ACL filters.
const ANY: i8 = 1;

/// A refusal: the error code and its message.
type Refusal = (ResponseError, String);

/// The filter of a DescribeAcls request or of a DeleteAcls entry: different types with the same
/// seven fields.
macro_rules! wire_filter {
    ($f:expr) => {
        filter(
            $f.resource_type_filter,
            $f.resource_name_filter.as_ref(),
            $f.pattern_type_filter,
            $f.principal_filter.as_ref(),
            $f.host_filter.as_ref(),
            $f.operation,
            $f.permission_type,
        )
    };
}

pub(crate) async fn create_acls(
    b: &Broker,
    access: &Access,
    req: CreateAclsRequest,
) -> CreateAclsResponse {
    if !access.on_cluster(Op::Alter) {
        let results = req.creations.iter().map(|_| refused(cluster_denied()));
        return CreateAclsResponse::default().with_results(results.collect());
    }
    let parsed: Vec<Result<AclBinding, Refusal>> = req.creations.iter().map(binding).collect();
    let valid: Vec<AclBinding> = parsed.iter().filter_map(|p| p.clone().ok()).collect();
    let stored = if valid.is_empty() {
        Ok(())
    } else {
        b.acls().create(&valid).await.map_err(api_refusal)
    };
    let results = parsed.into_iter().map(|p| match (p, &stored) {
        (Err(refusal), _) => refused(refusal),
        (Ok(_), Err(refusal)) => refused(refusal.clone()),
        (Ok(_), Ok(())) => AclCreationResult::default(),
    });
    CreateAclsResponse::default().with_results(results.collect())
}

pub(crate) async fn describe_acls(
    b: &Broker,
    access: &Access,
    req: DescribeAclsRequest,
) -> DescribeAclsResponse {
    let found = match wire_filter!(req) {
        _ if !access.on_cluster(Op::Describe) => Err(cluster_denied()),
        Ok(filter) => b.acls().list(&filter).await.map_err(api_refusal),
        Err(refusal) => Err(refusal),
    };
    match found {
        Ok(acls) => DescribeAclsResponse::default().with_resources(by_resource(acls)),
        Err((code, message)) => DescribeAclsResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(str_bytes(&message))),
    }
}

pub(crate) async fn delete_acls(
    b: &Broker,
    access: &Access,
    req: DeleteAclsRequest,
) -> DeleteAclsResponse {
    let permitted = access.on_cluster(Op::Alter);
    let mut results = Vec::with_capacity(req.filters.len());
    for f in &req.filters {
        let deleted = match wire_filter!(f) {
            _ if !permitted => Err(cluster_denied()),
            Ok(filter) => b.acls().delete(&filter).await.map_err(api_refusal),
            Err(refusal) => Err(refusal),
        };
        results.push(match deleted {
            Ok(acls) => DeleteAclsFilterResult::default()
                .with_matching_acls(acls.iter().map(matching_acl).collect()),
            Err((code, message)) => DeleteAclsFilterResult::default()
                .with_error_code(code.code())
                .with_error_message(Some(str_bytes(&message))),
        });
    }
    DeleteAclsResponse::default().with_filter_results(results)
}

fn cluster_denied() -> Refusal {
    (
        ResponseError::ClusterAuthorizationFailed,
        "not authorized to manage ACLs on the cluster".into(),
    )
}

fn refused((code, message): Refusal) -> AclCreationResult {
    AclCreationResult::default()
        .with_error_code(code.code())
        .with_error_message(Some(str_bytes(&message)))
}

fn api_refusal(e: ApiError) -> Refusal {
    let code = match &e {
        ApiError::Metadata(m) => metadata_error_code(m),
        ApiError::Invalid(_) => ResponseError::InvalidRequest,
        _ => ResponseError::UnknownServerError,
    };
    (code, e.to_string())
}

/// The value of a wire code, or INVALID_REQUEST naming what was not understood.
fn known<T>(code: i8, from_code: fn(i8) -> Option<T>, what: &str) -> Result<T, Refusal> {
    from_code(code).ok_or_else(|| {
        (
            ResponseError::InvalidRequest,
            format!("unsupported ACL {what} code {code}"),
        )
    })
}

/// A filter field's value: `None` for ANY.
fn any_or<T>(code: i8, from_code: fn(i8) -> Option<T>, what: &str) -> Result<Option<T>, Refusal> {
    if code == ANY {
        return Ok(None);
    }
    known(code, from_code, what).map(Some)
}

fn binding(c: &AclCreation) -> Result<AclBinding, Refusal> {
    let acl = AclBinding {
        resource_type: known(c.resource_type, AclResourceType::from_code, "resource type")?,
        resource_name: c.resource_name.to_string(),
        pattern_type: known(
            c.resource_pattern_type,
            AclPatternType::from_code,
            "pattern type",
        )?,
        principal: c.principal.to_string(),
        host: c.host.to_string(),
        operation: known(c.operation, AclOperation::from_code, "operation")?,
        permission: known(c.permission_type, AclPermission::from_code, "permission")?,
    };
    acl.validate()
        .map_err(|m| (ResponseError::InvalidRequest, m))?;
    Ok(acl)
}

fn filter(
    resource_type: i8,
    resource_name: Option<&StrBytes>,
    pattern: i8,
    principal: Option<&StrBytes>,
    host: Option<&StrBytes>,
    operation: i8,
    permission: i8,
) -> Result<AclBindingFilter, Refusal> {
    let text = |s: Option<&StrBytes>| s.map(|s| s.to_string());
    Ok(AclBindingFilter {
        resource_type: any_or(resource_type, AclResourceType::from_code, "resource type")?,
        resource_name: text(resource_name),
        pattern: known(pattern, AclPatternFilter::from_code, "pattern type")?,
        principal: text(principal),
        host: text(host),
        operation: any_or(operation, AclOperation::from_code, "operation")?,
        permission: any_or(permission, AclPermission::from_code, "permission")?,
    })
}

/// Bindings grouped by resource pattern, as DescribeAcls answers. `acls` is ordered, so each
/// pattern's bindings are adjacent.
fn by_resource(acls: Vec<AclBinding>) -> Vec<DescribeAclsResource> {
    let mut resources: Vec<DescribeAclsResource> = Vec::new();
    for acl in acls {
        let description = AclDescription::default()
            .with_principal(str_bytes(&acl.principal))
            .with_host(str_bytes(&acl.host))
            .with_operation(acl.operation.code())
            .with_permission_type(acl.permission.code());
        let same = resources.last_mut().filter(|r| {
            r.resource_type == acl.resource_type.code()
                && r.resource_name.as_str() == acl.resource_name
                && r.pattern_type == acl.pattern_type.code()
        });
        match same {
            Some(resource) => resource.acls.push(description),
            None => resources.push(
                DescribeAclsResource::default()
                    .with_resource_type(acl.resource_type.code())
                    .with_resource_name(str_bytes(&acl.resource_name))
                    .with_pattern_type(acl.pattern_type.code())
                    .with_acls(vec![description]),
            ),
        }
    }
    resources
}

fn matching_acl(acl: &AclBinding) -> DeleteAclsMatchingAcl {
    DeleteAclsMatchingAcl::default()
        .with_resource_type(acl.resource_type.code())
        .with_resource_name(str_bytes(&acl.resource_name))
        .with_pattern_type(acl.pattern_type.code())
        .with_principal(str_bytes(&acl.principal))
        .with_host(str_bytes(&acl.host))
        .with_operation(acl.operation.code())
        .with_permission_type(acl.permission.code())
}
