//! Group membership and group admin: FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, ListGroups, DescribeGroups and DeleteGroups. Each turns the request into a call on
//! the group coordinator and its outcome (or error code) into the response, leaving fields a
//! version does not have at their defaults.

use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, RequestHeader, SyncGroupRequest,
    SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use streamhouse_metadata::{AgentInfo, CLUSTER_NAME};

use super::str_bytes;
use crate::broker::Broker;
use crate::groups::{
    GroupDescription, GroupError, JoinRequest, JoinResponse, MemberInfo, Protocol, SyncRequest,
};
use crate::handlers::ConnectionState;
use crate::security::{Access, Op, Resource};

/// The requesting client, as DescribeGroups reports members.
pub(crate) struct Client {
    pub(crate) id: String,
    pub(crate) host: String,
}

impl Client {
    pub(crate) fn new(header: &RequestHeader, conn: &ConnectionState) -> Self {
        Self {
            id: header
                .client_id
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default(),
            // Kafka's format: "/" and the client's IP address.
            host: conn
                .peer
                .map(|p| format!("/{}", p.ip()))
                .unwrap_or_default(),
        }
    }
}

/// FindCoordinator's key type for consumer groups (1 is transactions).
const GROUP_KEY: i8 = 0;

fn opt_string(s: &Option<StrBytes>) -> Option<String> {
    s.as_ref().map(|s| s.to_string())
}

fn opt_str_bytes(s: Option<String>) -> Option<StrBytes> {
    s.as_deref().map(str_bytes)
}

/// Group requests are served only to requesters whose ACLs allow `op` on the group (checked
/// first, as in Kafka) and only by the holder of the group's coordinator lease (taken here on
/// demand by the agent the assignment names); elsewhere they fail with NOT_COORDINATOR, which
/// sends the client back to FindCoordinator.
pub(crate) async fn coordinating(
    b: &Broker,
    access: &Access,
    op: Op,
    group: &str,
) -> Result<(), GroupError> {
    if !access.allows(op, Resource::Group, group) {
        return Err(GroupError::AuthorizationFailed(group.to_string()));
    }
    b.claim_group(group).await
}

/// The coordinator of each key: the live holder of the group's coordinator lease, else the live
/// agent the shared assignment names for it (as of the last view; no I/O).
pub(crate) fn find_coordinator(
    b: &Broker,
    access: &Access,
    req: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    // Finding a coordinator needs DESCRIBE on the group or transactional id.
    let kind = if req.key_type == GROUP_KEY {
        Resource::Group
    } else {
        Resource::TransactionalId
    };
    let refused = |key: &str| !access.allows(Op::Describe, kind, key);
    let denied = if req.key_type == GROUP_KEY {
        ResponseError::GroupAuthorizationFailed
    } else {
        ResponseError::TransactionalIdAuthorizationFailed
    };
    let no_node = (BrokerId(-1), StrBytes::default(), -1);
    let group_denied = denied.code();
    let view = b.membership.view();
    let coordinator_of = |key: &str| -> (BrokerId, StrBytes, i32) {
        // A transactional id's coordinator is where the assignment places it (its lease lives
        // in its own row, and a group of the same name must not steer it).
        let agent: Option<&AgentInfo> = if req.key_type == GROUP_KEY {
            view.coordinator(key)
        } else {
            view.assignment.coordinator(key)
        };
        match agent {
            Some(a) => (
                BrokerId(a.node_id),
                str_bytes(&a.kafka_host),
                i32::from(a.kafka_port),
            ),
            // Unreachable in practice: an agent always counts itself live.
            None => {
                let config = b.config();
                (
                    BrokerId(config.node_id),
                    str_bytes(&config.advertised_host),
                    i32::from(config.advertised_port),
                )
            }
        }
    };
    let response = FindCoordinatorResponse::default().with_error_message(None);
    let answer = |key: &str| {
        if refused(key) {
            (group_denied, no_node.clone())
        } else {
            (0, coordinator_of(key))
        }
    };
    if version < 4 {
        let (code, (node, host, port)) = answer(req.key.as_str());
        return response
            .with_error_code(code)
            .with_node_id(node)
            .with_host(host)
            .with_port(port);
    }
    let coordinators = req
        .coordinator_keys
        .iter()
        .map(|key| {
            let (code, (node, host, port)) = answer(key.as_str());
            Coordinator::default()
                .with_key(key.clone())
                .with_error_code(code)
                .with_node_id(node)
                .with_host(host)
                .with_port(port)
        })
        .collect();
    response.with_coordinators(coordinators)
}

pub(crate) async fn join_group(
    b: &Broker,
    access: &Access,
    client: Client,
    req: JoinGroupRequest,
    version: i16,
) -> JoinGroupResponse {
    let group_id = req.group_id.0.to_string();
    let member_id = req.member_id.to_string();
    let result = match coordinating(b, access, Op::Read, &group_id)
        .await
        .and_then(|()| join_request(client, req, version))
    {
        Ok(join) => b.groups().join(&group_id, join).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(joined) => join_response(joined, version),
        Err(e) => join_error(e, member_id, version),
    }
}

fn join_request(
    client: Client,
    req: JoinGroupRequest,
    version: i16,
) -> Result<JoinRequest, GroupError> {
    if req.session_timeout_ms <= 0 {
        return Err(GroupError::InvalidSessionTimeout(req.session_timeout_ms));
    }
    let session_timeout = millis(req.session_timeout_ms);
    // v0 has no rebalance timeout; Kafka then uses the session timeout.
    let rebalance_timeout = if req.rebalance_timeout_ms > 0 {
        millis(req.rebalance_timeout_ms)
    } else {
        session_timeout
    };
    let protocols = req
        .protocols
        .into_iter()
        .map(|p| Protocol {
            name: p.name.to_string(),
            metadata: p.metadata,
        })
        .collect();
    Ok(JoinRequest {
        member_id: req.member_id.to_string(),
        protocol_type: req.protocol_type.to_string(),
        info: MemberInfo {
            group_instance_id: opt_string(&req.group_instance_id),
            client_id: client.id,
            client_host: client.host,
            session_timeout,
            rebalance_timeout,
            protocols,
        },
        require_known_member_id: version >= 4,
    })
}

fn millis(ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or_default())
}

fn join_response(joined: JoinResponse, version: i16) -> JoinGroupResponse {
    let members = joined
        .members
        .into_iter()
        .map(|m| {
            JoinGroupResponseMember::default()
                .with_member_id(str_bytes(&m.member_id))
                .with_group_instance_id(opt_str_bytes(m.group_instance_id))
                .with_metadata(m.metadata)
        })
        .collect();
    JoinGroupResponse::default()
        .with_generation_id(joined.generation_id)
        .with_protocol_type(if version >= 7 {
            opt_str_bytes(joined.protocol_type)
        } else {
            None
        })
        .with_protocol_name(protocol_name(joined.protocol_name, version))
        .with_leader(str_bytes(&joined.leader))
        .with_skip_assignment(version >= 9 && joined.skip_assignment)
        .with_member_id(str_bytes(&joined.member_id))
        .with_members(members)
}

/// Nullable only from v7; older versions get an empty string instead of null.
fn protocol_name(name: Option<String>, version: i16) -> Option<StrBytes> {
    match name {
        None if version < 7 => Some(StrBytes::default()),
        name => opt_str_bytes(name),
    }
}

fn join_error(e: GroupError, member_id: String, version: i16) -> JoinGroupResponse {
    let member_id = match &e {
        GroupError::MemberIdRequired { member, .. } => member.clone(),
        _ => member_id,
    };
    JoinGroupResponse::default()
        .with_error_code(e.code().code())
        .with_generation_id(-1)
        .with_protocol_name(protocol_name(None, version))
        .with_member_id(str_bytes(&member_id))
}

pub(crate) async fn sync_group(
    b: &Broker,
    access: &Access,
    req: SyncGroupRequest,
    version: i16,
) -> SyncGroupResponse {
    let group_id = req.group_id.0.to_string();
    let sync = SyncRequest {
        member_id: req.member_id.to_string(),
        group_instance_id: opt_string(&req.group_instance_id),
        generation_id: req.generation_id,
        protocol_type: opt_string(&req.protocol_type),
        protocol_name: opt_string(&req.protocol_name),
        assignments: req
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    let synced = match coordinating(b, access, Op::Read, &group_id).await {
        Ok(()) => b.groups().sync(&group_id, sync).await,
        Err(e) => Err(e),
    };
    match synced {
        Ok(synced) if version >= 5 => SyncGroupResponse::default()
            .with_protocol_type(opt_str_bytes(synced.protocol_type))
            .with_protocol_name(opt_str_bytes(synced.protocol_name))
            .with_assignment(synced.assignment),
        Ok(synced) => SyncGroupResponse::default().with_assignment(synced.assignment),
        Err(e) => SyncGroupResponse::default().with_error_code(e.code().code()),
    }
}

pub(crate) async fn heartbeat(
    b: &Broker,
    access: &Access,
    req: HeartbeatRequest,
) -> HeartbeatResponse {
    let group_id = req.group_id.0.as_str();
    let allowed = coordinating(b, access, Op::Read, group_id).await;
    let result = allowed.and_then(|()| {
        b.groups().heartbeat(
            group_id,
            req.member_id.as_str(),
            req.group_instance_id.as_deref(),
            req.generation_id,
        )
    });
    HeartbeatResponse::default().with_error_code(error_code(&result))
}

fn error_code(result: &Result<(), GroupError>) -> i16 {
    match result {
        Ok(()) => 0,
        Err(e) => e.code().code(),
    }
}

pub(crate) async fn leave_group(
    b: &Broker,
    access: &Access,
    req: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    // v3+ batches members (and may name static members by instance id only).
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        req.members
            .iter()
            .map(|m| (m.member_id.to_string(), opt_string(&m.group_instance_id)))
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let group_id = req.group_id.0.as_str();
    let allowed = coordinating(b, access, Op::Read, group_id).await;
    let left = allowed.and_then(|()| b.groups().leave(group_id, &members));
    let results = match left {
        Ok(results) => results,
        Err(e) => return LeaveGroupResponse::default().with_error_code(e.code().code()),
    };
    if version < 3 {
        let code = results.first().map(error_code).unwrap_or_default();
        return LeaveGroupResponse::default().with_error_code(code);
    }
    let responses = members
        .into_iter()
        .zip(&results)
        .map(|((member_id, instance), result)| {
            MemberResponse::default()
                .with_member_id(str_bytes(&member_id))
                .with_group_instance_id(opt_str_bytes(instance))
                .with_error_code(error_code(result))
        })
        .collect();
    LeaveGroupResponse::default().with_members(responses)
}

pub(crate) async fn list_groups(
    b: &Broker,
    access: &Access,
    req: ListGroupsRequest,
    version: i16,
) -> ListGroupsResponse {
    let wanted: Vec<String> = req
        .states_filter
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    // v5 (KIP-848): `classic` and `consumer`; this coordinator has no other group types.
    let types: Vec<String> = req
        .types_filter
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let groups = match b.groups().list_groups().await {
        Ok(groups) => groups,
        Err(e) => return ListGroupsResponse::default().with_error_code(e.code().code()),
    };
    // DESCRIBE on the cluster shows every group; otherwise only those the requester may
    // describe are listed (as in Kafka).
    let shows_all = access.shows(Op::Describe, Resource::Cluster, CLUSTER_NAME);
    let listed = groups
        .into_iter()
        // Each agent lists the groups it coordinates; admin clients ask every agent.
        .filter(|g| b.is_coordinator(&g.group_id))
        .filter(|g| shows_all || access.shows(Op::Describe, Resource::Group, &g.group_id))
        .filter(|g| wanted.is_empty() || wanted.contains(&g.state.name().to_ascii_lowercase()))
        .filter(|g| types.is_empty() || types.contains(&g.group_type.to_string()))
        .map(|g| {
            let listed = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(&g.group_id)))
                .with_protocol_type(str_bytes(&g.protocol_type));
            match version {
                0..=3 => listed,
                4 => listed.with_group_state(str_bytes(g.state.name())),
                _ => listed
                    .with_group_state(str_bytes(g.state.name()))
                    .with_group_type(str_bytes(g.group_type)),
            }
        })
        .collect();
    ListGroupsResponse::default().with_groups(listed)
}

pub(crate) async fn describe_groups(
    b: &Broker,
    access: &Access,
    req: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let mut groups = Vec::with_capacity(req.groups.len());
    for group_id in req.groups {
        let described = DescribedGroup::default().with_group_id(group_id.clone());
        let found = match coordinating(b, access, Op::Describe, group_id.0.as_str()).await {
            Ok(()) => b.groups().describe_group(group_id.0.as_str()).await,
            Err(e) => Err(e),
        };
        groups.push(match found {
            // As Kafka: a consumer-protocol group is described by ConsumerGroupDescribe.
            Ok(description) if description.consumer_protocol => described
                .with_error_code(ResponseError::GroupIdNotFound.code())
                .with_error_message(Some(str_bytes(&format!(
                    "group {} is not a classic group",
                    group_id.0.as_str()
                )))),
            Ok(description) => describe(described, description, version),
            Err(e) => described.with_error_code(e.code().code()),
        });
    }
    DescribeGroupsResponse::default().with_groups(groups)
}

fn describe(out: DescribedGroup, d: GroupDescription, version: i16) -> DescribedGroup {
    let members = d
        .members
        .into_iter()
        .map(|m| {
            DescribedGroupMember::default()
                .with_member_id(str_bytes(&m.member_id))
                .with_group_instance_id(if version >= 4 {
                    opt_str_bytes(m.group_instance_id)
                } else {
                    None
                })
                .with_client_id(str_bytes(&m.client_id))
                .with_client_host(str_bytes(&m.client_host))
                .with_member_metadata(m.metadata)
                .with_member_assignment(m.assignment)
        })
        .collect();
    out.with_group_state(str_bytes(d.state.name()))
        .with_protocol_type(str_bytes(&d.protocol_type))
        .with_protocol_data(str_bytes(&d.protocol))
        .with_members(members)
}

pub(crate) async fn delete_groups(
    b: &Broker,
    access: &Access,
    req: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for group_id in req.groups_names {
        let result = match coordinating(b, access, Op::Delete, group_id.0.as_str()).await {
            Ok(()) => b.groups().delete_group(group_id.0.as_str()).await,
            Err(e) => Err(e),
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(group_id)
                .with_error_code(error_code(&result)),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
