//! `streamhouse acl add|list|remove`: ACLs through the Kafka ACL APIs (CreateAcls, DescribeAcls,
//! DeleteAcls), as `kafka-acls` manages them. Changing ACLs needs ALTER on the cluster and
//! listing them DESCRIBE on the cluster, which super users have.

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::{CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest};
use kafka_protocol::protocol::StrBytes;
use streamhouse_metadata::{
    AclBinding, AclBindingFilter, AclOperation, AclPatternFilter, AclPatternType, AclPermission,
    AclResourceType, CLUSTER_NAME,
};

use super::output::print_table;
use super::{Endpoints, Format};
use crate::client::{check, Connection};

/// Version of the ACL APIs sent: the first with pattern types, served by every Kafka since 2.0
/// and by StreamHouse.
const VERSION: i16 = 1;

/// Flags of `streamhouse acl`.
#[derive(Debug, Args)]
pub struct AclArgs {
    #[command(subcommand)]
    command: AclCommand,
}

/// ACL administration.
#[derive(Debug, Subcommand)]
enum AclCommand {
    /// Allow (or with --deny, refuse) operations on a resource to principals.
    Add(AddArgs),
    /// List ACLs, all or those the filter flags select.
    List(ListArgs),
    /// Remove the ACLs the filter flags select.
    Remove(FilterArgs),
}

/// The resource an ACL protects: one of --topic, --group, --cluster.
#[derive(Debug, Args)]
#[group(multiple = false)]
struct ResourceArgs {
    /// A topic (`*` for every topic; with --pattern prefixed, every topic starting with it).
    #[arg(long)]
    topic: Option<String>,
    /// A consumer group (`*` for every group).
    #[arg(long)]
    group: Option<String>,
    /// The cluster (CREATE any topic, ALTER/DESCRIBE for ACL administration,
    /// IDEMPOTENT_WRITE, DESCRIBE_CONFIGS of the broker).
    #[arg(long)]
    cluster: bool,
}

impl ResourceArgs {
    fn resource(&self) -> Option<(AclResourceType, String)> {
        match (&self.topic, &self.group, self.cluster) {
            (Some(t), _, _) => Some((AclResourceType::Topic, t.clone())),
            (_, Some(g), _) => Some((AclResourceType::Group, g.clone())),
            (_, _, true) => Some((AclResourceType::Cluster, CLUSTER_NAME.to_string())),
            _ => None,
        }
    }
}

/// Flags of `acl add`.
#[derive(Debug, Args)]
struct AddArgs {
    #[command(flatten)]
    resource: ResourceArgs,
    /// How the resource name matches: literal or prefixed.
    #[arg(long, default_value = "literal")]
    pattern: AclPatternType,
    /// Principal the ACL applies to, e.g. User:alice, or User:* for everyone (repeatable).
    #[arg(long, required = true)]
    principal: Vec<String>,
    /// Operation: READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS,
    /// ALTER_CONFIGS, IDEMPOTENT_WRITE, CLUSTER_ACTION or ALL (repeatable).
    #[arg(long, required = true)]
    operation: Vec<AclOperation>,
    /// Client address the ACL applies to.
    #[arg(long, default_value = "*")]
    host: String,
    /// Refuse rather than allow (a DENY wins over any ALLOW).
    #[arg(long)]
    deny: bool,
}

/// Filter flags of `acl list` and `acl remove`; each left out matches anything.
#[derive(Debug, Args)]
struct FilterArgs {
    #[command(flatten)]
    resource: ResourceArgs,
    /// Which patterns: any, match (the ACLs that apply to the named resource), literal or
    /// prefixed.
    #[arg(long, default_value = "any")]
    pattern: AclPatternFilter,
    /// Only ACLs of this principal.
    #[arg(long)]
    principal: Option<String>,
    /// Only ACLs for this host.
    #[arg(long)]
    host: Option<String>,
    /// Only ACLs for this operation.
    #[arg(long)]
    operation: Option<AclOperation>,
    /// Only ALLOW or only DENY ACLs.
    #[arg(long)]
    permission: Option<AclPermission>,
}

/// Flags of `acl list`.
#[derive(Debug, Args)]
struct ListArgs {
    #[command(flatten)]
    filter: FilterArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

impl FilterArgs {
    fn filter(&self) -> AclBindingFilter {
        let resource = self.resource.resource();
        AclBindingFilter {
            resource_type: resource.as_ref().map(|(kind, _)| *kind),
            resource_name: resource.map(|(_, name)| name),
            pattern: self.pattern,
            principal: self.principal.clone(),
            host: self.host.clone(),
            operation: self.operation,
            permission: self.permission,
        }
    }
}

/// Runs an ACL command.
pub async fn run(args: AclArgs, endpoints: &Endpoints) -> anyhow::Result<()> {
    let kafka = endpoints.admin_connection().await?;
    match args.command {
        AclCommand::Add(add) => {
            let acls = bindings(&add)?;
            create(&kafka, &acls).await?;
            for acl in &acls {
                println!("added {}", describe(acl));
            }
        }
        AclCommand::List(list) => {
            let acls = list_acls(&kafka, &list.filter.filter()).await?;
            print_acls(&acls, list.format)?;
        }
        AclCommand::Remove(filter) => {
            if filter.resource.resource().is_none() && filter.principal.is_none() {
                bail!("name a resource (--topic, --group, --cluster) or a --principal: refusing to remove every ACL");
            }
            let removed = remove(&kafka, &filter.filter()).await?;
            for acl in &removed {
                println!("removed {}", describe(acl));
            }
            if removed.is_empty() {
                println!("no ACL matched");
            }
        }
    }
    Ok(())
}

/// The bindings `acl add` creates: every principal with every operation.
fn bindings(add: &AddArgs) -> anyhow::Result<Vec<AclBinding>> {
    let Some((resource_type, resource_name)) = add.resource.resource() else {
        bail!("name the resource: --topic NAME, --group NAME or --cluster");
    };
    let permission = if add.deny {
        AclPermission::Deny
    } else {
        AclPermission::Allow
    };
    Ok(add
        .principal
        .iter()
        .flat_map(|principal| {
            add.operation.iter().map(|&operation| AclBinding {
                resource_type,
                resource_name: resource_name.clone(),
                pattern_type: add.pattern,
                principal: principal.clone(),
                host: add.host.clone(),
                operation,
                permission,
            })
        })
        .collect())
}

/// `PERMISSION OPERATION on TYPE NAME (PATTERN) for PRINCIPAL from HOST`.
fn describe(acl: &AclBinding) -> String {
    format!(
        "{} {} on {} {} ({}) for {} from {}",
        acl.permission,
        acl.operation,
        acl.resource_type,
        acl.resource_name,
        acl.pattern_type,
        acl.principal,
        acl.host
    )
}

/// Prints ACLs as JSON, or as a table with the resource first (JSON objects would put the
/// columns in alphabetical order).
fn print_acls(acls: &[AclBinding], format: Format) -> anyhow::Result<()> {
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(acls)?);
        return Ok(());
    }
    let columns = [
        "resource_type",
        "resource_name",
        "pattern_type",
        "principal",
        "host",
        "operation",
        "permission",
    ];
    let rows = acls.iter().map(|a| {
        vec![
            a.resource_type.to_string(),
            a.resource_name.clone(),
            a.pattern_type.to_string(),
            a.principal.clone(),
            a.host.clone(),
            a.operation.to_string(),
            a.permission.to_string(),
        ]
    });
    print_table(&columns, rows.collect());
    Ok(())
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

async fn create(kafka: &Connection, acls: &[AclBinding]) -> anyhow::Result<()> {
    let creations = acls
        .iter()
        .map(|acl| {
            AclCreation::default()
                .with_resource_type(acl.resource_type.code())
                .with_resource_name(text(&acl.resource_name))
                .with_resource_pattern_type(acl.pattern_type.code())
                .with_principal(text(&acl.principal))
                .with_host(text(&acl.host))
                .with_operation(acl.operation.code())
                .with_permission_type(acl.permission.code())
        })
        .collect();
    let request = CreateAclsRequest::default().with_creations(creations);
    let response = kafka.call(&request, VERSION).await?;
    for (acl, result) in acls.iter().zip(&response.results) {
        check(result.error_code, result.error_message.as_ref())
            .map_err(|e| anyhow!("adding {}: {e}", describe(acl)))?;
    }
    Ok(())
}

/// Sets the seven filter fields DescribeAcls and DeleteAcls share (`None` is sent as null, an
/// unset enum as ANY).
macro_rules! with_filter {
    ($request:expr, $filter:expr) => {{
        let f: &AclBindingFilter = $filter;
        const ANY: i8 = 1;
        $request
            .with_resource_type_filter(f.resource_type.map_or(ANY, |t| t.code()))
            .with_resource_name_filter(f.resource_name.as_deref().map(text))
            .with_pattern_type_filter(f.pattern.code())
            .with_principal_filter(f.principal.as_deref().map(text))
            .with_host_filter(f.host.as_deref().map(text))
            .with_operation(f.operation.map_or(ANY, |o| o.code()))
            .with_permission_type(f.permission.map_or(ANY, |p| p.code()))
    }};
}

async fn list_acls(
    kafka: &Connection,
    filter: &AclBindingFilter,
) -> anyhow::Result<Vec<AclBinding>> {
    let request = with_filter!(DescribeAclsRequest::default(), filter);
    let response = kafka.call(&request, VERSION).await?;
    check(response.error_code, response.error_message.as_ref())?;
    let mut acls = Vec::new();
    for r in &response.resources {
        for a in &r.acls {
            acls.push(decode(
                (r.resource_type, &r.resource_name, r.pattern_type),
                (&a.principal, &a.host, a.operation, a.permission_type),
            )?);
        }
    }
    Ok(acls)
}

async fn remove(kafka: &Connection, filter: &AclBindingFilter) -> anyhow::Result<Vec<AclBinding>> {
    let request = DeleteAclsRequest::default()
        .with_filters(vec![with_filter!(DeleteAclsFilter::default(), filter)]);
    let response = kafka.call(&request, VERSION).await?;
    let Some(result) = response.filter_results.first() else {
        bail!("DeleteAcls answered without a result");
    };
    check(result.error_code, result.error_message.as_ref())?;
    result
        .matching_acls
        .iter()
        .map(|a| {
            decode(
                (a.resource_type, &a.resource_name, a.pattern_type),
                (&a.principal, &a.host, a.operation, a.permission_type),
            )
        })
        .collect()
}

/// A binding from its wire fields: `(type, name, pattern)` and `(principal, host, operation,
/// permission)`.
fn decode(
    (kind, name, pattern): (i8, &StrBytes, i8),
    (principal, host, operation, permission): (&StrBytes, &StrBytes, i8, i8),
) -> anyhow::Result<AclBinding> {
    fn value<T>(code: i8, from_code: fn(i8) -> Option<T>, what: &str) -> anyhow::Result<T> {
        from_code(code).ok_or_else(|| anyhow!("the server sent unknown ACL {what} code {code}"))
    }
    Ok(AclBinding {
        resource_type: value(kind, AclResourceType::from_code, "resource type")?,
        resource_name: name.to_string(),
        pattern_type: value(pattern, AclPatternType::from_code, "pattern type")?,
        principal: principal.to_string(),
        host: host.to_string(),
        operation: value(operation, AclOperation::from_code, "operation")?,
        permission: value(permission, AclPermission::from_code, "permission")?,
    })
}
