//! ACL enforcement at the wire level: every enforced API with Kafka's exact error codes, the
//! ACL admin APIs, and ACL changes reaching other agents.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use streamhouse_kafka::security::AclConfig;
use streamhouse_kafka::BrokerConfig;
use streamhouse_metadata::{
    AclBinding, AclOperation, AclPatternType, AclPermission, AclResourceType, MetadataStore,
    SqliteMetadataStore, CLUSTER_NAME,
};

use crate::cluster::join_error;
use crate::harness::{record_batch, Client, TestServer};
use crate::protocol::{create_topic, fetch, fetch_result, list_offsets, produce, produce_result};

use AclOperation::*;
use AclPatternType::{Literal, Prefixed};
use AclResourceType::{Cluster, Group, Topic};

const TOPIC_DENIED: i16 = 29;
const GROUP_DENIED: i16 = 30;
const CLUSTER_DENIED: i16 = 31;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn config() -> BrokerConfig {
    BrokerConfig {
        auto_create_topics: true,
        group_initial_rebalance_delay: Duration::from_millis(10),
        acl: AclConfig {
            enabled: true,
            super_users: vec!["User:admin".into()],
            refresh: Duration::from_millis(50),
        },
        ..BrokerConfig::default()
    }
}

/// An agent enforcing ACLs, with SASL users admin (super user), alice and bob, and topic `t`.
async fn server() -> TestServer {
    let metadata: Arc<dyn MetadataStore> =
        Arc::new(SqliteMetadataStore::in_memory().await.unwrap());
    let server = TestServer::start_with_sasl(config(), metadata, &["admin", "alice", "bob"]).await;
    create_topic(&server, "t", 1).await;
    server
}

async fn login(server: &TestServer, user: &str) -> Client {
    let mut client = server.client().await;
    client.login(user).await;
    client
}

fn allow(kind: AclResourceType, name: &str, user: &str, op: AclOperation) -> AclBinding {
    binding(kind, name, Literal, user, op, AclPermission::Allow)
}

fn binding(
    kind: AclResourceType,
    name: &str,
    pattern: AclPatternType,
    user: &str,
    op: AclOperation,
    permission: AclPermission,
) -> AclBinding {
    AclBinding {
        resource_type: kind,
        resource_name: name.into(),
        pattern_type: pattern,
        principal: format!("User:{user}"),
        host: "*".into(),
        operation: op,
        permission,
    }
}

fn creation(acl: &AclBinding) -> AclCreation {
    AclCreation::default()
        .with_resource_type(acl.resource_type.code())
        .with_resource_name(s(&acl.resource_name))
        .with_resource_pattern_type(acl.pattern_type.code())
        .with_principal(s(&acl.principal))
        .with_host(s(&acl.host))
        .with_operation(acl.operation.code())
        .with_permission_type(acl.permission.code())
}

/// CreateAcls as `client`; the error code of each creation.
async fn create_acls(client: &mut Client, acls: &[AclCreation]) -> Vec<i16> {
    let request = CreateAclsRequest::default().with_creations(acls.to_vec());
    let ResponseKind::CreateAcls(r) = client.send(RequestKind::CreateAcls(request), 3).await else {
        panic!("not a CreateAcls response")
    };
    r.results.iter().map(|r| r.error_code).collect()
}

/// Grants `acls` through the Kafka API as the super user.
async fn grant(server: &TestServer, acls: &[AclBinding]) {
    let mut admin = login(server, "admin").await;
    let creations: Vec<AclCreation> = acls.iter().map(creation).collect();
    let codes = create_acls(&mut admin, &creations).await;
    assert!(codes.iter().all(|&c| c == 0), "{codes:?}");
}

async fn metadata(client: &mut Client, topics: Option<&[&str]>) -> Vec<(String, i16)> {
    let topics = topics.map(|ts| {
        ts.iter()
            .map(|t| MetadataRequestTopic::default().with_name(Some(TopicName(s(t)))))
            .collect()
    });
    let request = MetadataRequest::default()
        .with_topics(topics)
        .with_allow_auto_topic_creation(true);
    let ResponseKind::Metadata(r) = client.send(RequestKind::Metadata(request), 12).await else {
        panic!("not a Metadata response")
    };
    r.topics
        .iter()
        .map(|t| (t.name.as_ref().unwrap().to_string(), t.error_code))
        .collect()
}

fn list_offsets_code(r: ResponseKind) -> i16 {
    let ResponseKind::ListOffsets(r) = r else {
        panic!("not a ListOffsets response")
    };
    r.topics[0].partitions[0].error_code
}

#[tokio::test]
async fn produce_needs_write_and_fetch_needs_read() {
    let server = server().await;
    grant(&server, &[allow(Topic, "t", "alice", Write)]).await;
    let batch = || record_batch(&[("k", "v")], 1_000, None);
    let mut alice = login(&server, "alice").await;
    let mut bob = login(&server, "bob").await;

    assert_eq!(
        produce_result(alice.send(produce("t", 0, batch(), -1), 9).await),
        (0, 0)
    );
    let (code, _) = produce_result(bob.send(produce("t", 0, batch(), -1), 9).await);
    assert_eq!(code, TOPIC_DENIED);
    // Unknown topics too: refusing before looking keeps their existence secret.
    let (code, _) = produce_result(bob.send(produce("nope", 0, batch(), -1), 9).await);
    assert_eq!(code, TOPIC_DENIED);

    let (code, _, _) = fetch_result(alice.send(fetch("t", 0, 0, 0), 12).await);
    assert_eq!(code, TOPIC_DENIED, "WRITE does not imply READ");
    assert_eq!(
        list_offsets_code(alice.send(list_offsets("t", -1), 6).await),
        0,
        "WRITE implies DESCRIBE"
    );
    assert_eq!(
        list_offsets_code(bob.send(list_offsets("t", -1), 6).await),
        TOPIC_DENIED
    );

    grant(&server, &[allow(Topic, "t", "alice", Read)]).await;
    let (code, hw, records) = fetch_result(alice.send(fetch("t", 0, 0, 0), 12).await);
    assert_eq!((code, hw), (0, 1));
    assert!(!records.is_empty());

    // A DENY wins over the ALLOW.
    let deny = binding(Topic, "t", Literal, "alice", Write, AclPermission::Deny);
    grant(&server, &[deny]).await;
    let (code, _) = produce_result(alice.send(produce("t", 0, batch(), -1), 9).await);
    assert_eq!(code, TOPIC_DENIED);
}

#[tokio::test]
async fn idempotent_producers_need_write_somewhere() {
    let server = server().await;
    grant(&server, &[allow(Topic, "t", "alice", Write)]).await;
    let init = || {
        RequestKind::InitProducerId(
            InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        )
    };
    let code = |r: ResponseKind| match r {
        ResponseKind::InitProducerId(r) => r.error_code,
        other => panic!("not an InitProducerId response: {other:?}"),
    };
    let mut alice = login(&server, "alice").await;
    assert_eq!(code(alice.send(init(), 4).await), 0);
    let mut bob = login(&server, "bob").await;
    assert_eq!(code(bob.send(init(), 4).await), CLUSTER_DENIED);
}

#[tokio::test]
async fn metadata_shows_only_describable_topics() {
    let server = server().await;
    create_topic(&server, "hidden", 1).await;
    let auto = binding(
        Topic,
        "auto-",
        Prefixed,
        "alice",
        Describe,
        AclPermission::Allow,
    );
    grant(&server, &[allow(Topic, "t", "alice", Describe), auto]).await;
    let mut alice = login(&server, "alice").await;
    assert_eq!(metadata(&mut alice, None).await, [("t".to_string(), 0)]);
    let explicit = metadata(&mut alice, Some(&["t", "hidden"])).await;
    assert_eq!(
        explicit,
        [("t".to_string(), 0), ("hidden".to_string(), TOPIC_DENIED)]
    );
    // Auto-creation needs CREATE as well as DESCRIBE.
    assert_eq!(
        metadata(&mut alice, Some(&["auto-1"])).await,
        [("auto-1".to_string(), TOPIC_DENIED)]
    );
    assert!(server.metadata.get_topic("auto-1").await.unwrap().is_none());
    grant(&server, &[allow(Cluster, CLUSTER_NAME, "alice", Create)]).await;
    assert_eq!(
        metadata(&mut alice, Some(&["auto-1"])).await,
        [("auto-1".to_string(), 0)]
    );
    assert!(server.metadata.get_topic("auto-1").await.unwrap().is_some());
    let mut admin = login(&server, "admin").await;
    assert_eq!(
        metadata(&mut admin, None).await.len(),
        3,
        "super user sees all"
    );
}

#[tokio::test]
async fn topic_admin_apis_need_their_operations() {
    let server = server().await;
    let mut alice = login(&server, "alice").await;
    let create = |name: &str| {
        RequestKind::CreateTopics(
            CreateTopicsRequest::default()
                .with_timeout_ms(5_000)
                .with_topics(vec![CreatableTopic::default()
                    .with_name(TopicName(s(name)))
                    .with_num_partitions(1)
                    .with_replication_factor(1)]),
        )
    };
    let created = |r: ResponseKind| match r {
        ResponseKind::CreateTopics(r) => r.topics[0].error_code,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        created(alice.send(create("alice-1"), 7).await),
        TOPIC_DENIED
    );
    let mine = |op| binding(Topic, "alice-", Prefixed, "alice", op, AclPermission::Allow);
    grant(&server, &[mine(Create)]).await;
    assert_eq!(created(alice.send(create("alice-1"), 7).await), 0);
    assert_eq!(
        created(alice.send(create("other-1"), 7).await),
        TOPIC_DENIED
    );

    let partitions = RequestKind::CreatePartitions(
        CreatePartitionsRequest::default()
            .with_timeout_ms(5_000)
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(TopicName(s("alice-1")))
                .with_count(2)]),
    );
    let ResponseKind::CreatePartitions(r) = alice.send(partitions, 3).await else {
        panic!()
    };
    assert_eq!(r.results[0].error_code, TOPIC_DENIED);

    let configs = |kind: i8, name: &str| {
        RequestKind::DescribeConfigs(DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(kind)
                .with_resource_name(s(name))
                .with_configuration_keys(None),
        ]))
    };
    let config_code = |r: ResponseKind| match r {
        ResponseKind::DescribeConfigs(r) => r.results[0].error_code,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        config_code(alice.send(configs(2, "alice-1"), 4).await),
        TOPIC_DENIED
    );
    assert_eq!(
        config_code(alice.send(configs(4, "0"), 4).await),
        CLUSTER_DENIED
    );

    let delete_records = RequestKind::DeleteRecords(
        DeleteRecordsRequest::default()
            .with_timeout_ms(5_000)
            .with_topics(vec![DeleteRecordsTopic::default()
                .with_name(TopicName(s("alice-1")))
                .with_partitions(vec![DeleteRecordsPartition::default()
                    .with_partition_index(0)
                    .with_offset(0)])]),
    );
    let ResponseKind::DeleteRecords(r) = alice.send(delete_records, 2).await else {
        panic!()
    };
    assert_eq!(r.topics[0].partitions[0].error_code, TOPIC_DENIED);

    let delete = || {
        RequestKind::DeleteTopics(
            DeleteTopicsRequest::default()
                .with_timeout_ms(5_000)
                .with_topic_names(vec![TopicName(s("alice-1"))]),
        )
    };
    let deleted = |r: ResponseKind| match r {
        ResponseKind::DeleteTopics(r) => r.responses[0].error_code,
        other => panic!("{other:?}"),
    };
    assert_eq!(deleted(alice.send(delete(), 5).await), TOPIC_DENIED);
    grant(&server, &[mine(Delete), mine(Alter), mine(DescribeConfigs)]).await;
    let ResponseKind::DescribeConfigs(r) = alice.send(configs(2, "alice-1"), 4).await else {
        panic!()
    };
    assert_eq!(r.results[0].error_code, 0);
    assert!(!r.results[0].configs.is_empty());
    assert_eq!(deleted(alice.send(delete(), 5).await), 0);
}

fn commit(group: &str, topics: &[&str]) -> RequestKind {
    RequestKind::OffsetCommit(
        OffsetCommitRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(
                topics
                    .iter()
                    .map(|t| {
                        OffsetCommitRequestTopic::default()
                            .with_name(TopicName(s(t)))
                            .with_partitions(vec![OffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(0)])
                    })
                    .collect(),
            ),
    )
}

fn commit_codes(r: ResponseKind) -> Vec<i16> {
    let ResponseKind::OffsetCommit(r) = r else {
        panic!("not an OffsetCommit response")
    };
    r.topics
        .iter()
        .map(|t| t.partitions[0].error_code)
        .collect()
}

#[tokio::test]
async fn group_apis_need_group_permissions() {
    let server = server().await;
    create_topic(&server, "other", 1).await;
    grant(
        &server,
        &[
            allow(Group, "g", "alice", Read),
            allow(Topic, "t", "alice", Read),
        ],
    )
    .await;
    let mut alice = login(&server, "alice").await;
    let mut bob = login(&server, "bob").await;

    let find = |group: &str| {
        RequestKind::FindCoordinator(FindCoordinatorRequest::default().with_key(s(group)))
    };
    let ResponseKind::FindCoordinator(r) = bob.send(find("g"), 3).await else {
        panic!()
    };
    assert_eq!(r.error_code, GROUP_DENIED);
    let ResponseKind::FindCoordinator(r) = alice.send(find("g"), 3).await else {
        panic!()
    };
    assert_eq!(r.error_code, 0, "READ implies DESCRIBE");
    let batch = RequestKind::FindCoordinator(
        FindCoordinatorRequest::default().with_coordinator_keys(vec![s("g"), s("h")]),
    );
    let ResponseKind::FindCoordinator(r) = alice.send(batch, 4).await else {
        panic!()
    };
    let codes: Vec<i16> = r.coordinators.iter().map(|c| c.error_code).collect();
    assert_eq!(codes, [0, GROUP_DENIED]);

    assert_eq!(join_error(&mut bob, "g").await, GROUP_DENIED);
    assert_eq!(
        join_error(&mut alice, "g").await,
        ResponseError::MemberIdRequired.code(),
        "allowed, on to the join protocol"
    );
    let (g, m) = (GroupId(s("g")), s("m"));
    let members = [
        (
            RequestKind::Heartbeat(HeartbeatRequest::default().with_group_id(g.clone())),
            4,
        ),
        (
            RequestKind::SyncGroup(SyncGroupRequest::default().with_group_id(g.clone())),
            5,
        ),
        (
            RequestKind::LeaveGroup(
                LeaveGroupRequest::default()
                    .with_group_id(g)
                    .with_member_id(m),
            ),
            2,
        ),
    ];
    for (request, version) in members {
        let code = match bob.send(request, version).await {
            ResponseKind::Heartbeat(r) => r.error_code,
            ResponseKind::SyncGroup(r) => r.error_code,
            ResponseKind::LeaveGroup(r) => r.error_code,
            other => panic!("{other:?}"),
        };
        assert_eq!(code, GROUP_DENIED);
    }

    // Committing needs READ on the group, then READ on each topic.
    assert_eq!(
        commit_codes(alice.send(commit("g", &["t", "other"]), 8).await),
        [0, TOPIC_DENIED]
    );
    assert_eq!(
        commit_codes(bob.send(commit("g", &["t", "other"]), 8).await),
        [GROUP_DENIED, GROUP_DENIED]
    );

    let offset_fetch = |topics: Option<Vec<&str>>| {
        let topics = topics.map(|ts| {
            ts.iter()
                .map(|t| {
                    OffsetFetchRequestTopic::default()
                        .with_name(TopicName(s(t)))
                        .with_partition_indexes(vec![0])
                })
                .collect()
        });
        RequestKind::OffsetFetch(
            OffsetFetchRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_topics(topics),
        )
    };
    let ResponseKind::OffsetFetch(r) = bob.send(offset_fetch(None), 7).await else {
        panic!()
    };
    assert_eq!(r.error_code, GROUP_DENIED);
    let ResponseKind::OffsetFetch(r) = alice.send(offset_fetch(Some(vec!["t", "other"])), 7).await
    else {
        panic!()
    };
    let codes: Vec<(String, i16, i64)> = r
        .topics
        .iter()
        .map(|t| {
            let p = &t.partitions[0];
            (t.name.to_string(), p.error_code, p.committed_offset)
        })
        .collect();
    assert_eq!(
        codes,
        [
            ("t".to_string(), 0, 0),
            ("other".to_string(), TOPIC_DENIED, -1)
        ]
    );

    // The group has offsets of a topic alice may not see; listing every topic leaves it out.
    let mut admin = login(&server, "admin").await;
    assert_eq!(
        commit_codes(admin.send(commit("g", &["other"]), 8).await),
        [0]
    );
    let batched = RequestKind::OffsetFetch(OffsetFetchRequest::default().with_groups(
        vec![OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(s("g")))
            .with_topics(None)],
    ));
    let ResponseKind::OffsetFetch(r) = bob.send(batched.clone(), 8).await else {
        panic!()
    };
    assert_eq!(r.groups[0].error_code, GROUP_DENIED);
    let ResponseKind::OffsetFetch(r) = alice.send(batched, 8).await else {
        panic!()
    };
    let topics: Vec<String> = r.groups[0]
        .topics
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    assert_eq!(topics, ["t"], "all topics: only those alice may describe");
    let offset_delete =
        RequestKind::OffsetDelete(OffsetDeleteRequest::default().with_group_id(GroupId(s("g"))));
    let ResponseKind::OffsetDelete(r) = alice.send(offset_delete, 0).await else {
        panic!()
    };
    assert_eq!(r.error_code, GROUP_DENIED, "READ does not imply DELETE");

    let list = RequestKind::ListGroups(ListGroupsRequest::default());
    let listed = |r: ResponseKind| match r {
        ResponseKind::ListGroups(r) => r
            .groups
            .iter()
            .map(|g| g.group_id.to_string())
            .collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(listed(alice.send(list.clone(), 4).await), ["g"]);
    assert!(listed(bob.send(list.clone(), 4).await).is_empty());

    let describe = RequestKind::DescribeGroups(
        DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g"))]),
    );
    let ResponseKind::DescribeGroups(r) = bob.send(describe, 5).await else {
        panic!()
    };
    assert_eq!(r.groups[0].error_code, GROUP_DENIED);
    let delete = RequestKind::DeleteGroups(
        DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("g"))]),
    );
    let ResponseKind::DeleteGroups(r) = alice.send(delete.clone(), 2).await else {
        panic!()
    };
    assert_eq!(
        r.results[0].error_code, GROUP_DENIED,
        "READ does not imply DELETE"
    );
    let ResponseKind::DeleteGroups(r) = admin.send(delete, 2).await else {
        panic!()
    };
    assert_eq!(r.results[0].error_code, 0);
}

/// Every field ANY (the codec's defaults are empty strings, which match nothing).
fn describe_all() -> RequestKind {
    RequestKind::DescribeAcls(
        DescribeAclsRequest::default()
            .with_resource_name_filter(None)
            .with_principal_filter(None)
            .with_host_filter(None)
            .with_resource_type_filter(1)
            .with_pattern_type_filter(1)
            .with_operation(1)
            .with_permission_type(1),
    )
}

fn any_filter() -> DeleteAclsFilter {
    DeleteAclsFilter::default()
        .with_resource_name_filter(None)
        .with_principal_filter(None)
        .with_host_filter(None)
        .with_resource_type_filter(1)
        .with_pattern_type_filter(1)
        .with_operation(1)
        .with_permission_type(1)
}

#[tokio::test]
async fn acl_apis_round_trip_and_need_cluster_permissions() {
    let server = server().await;
    let mut alice = login(&server, "alice").await;
    let read_t = allow(Topic, "t", "alice", Read);
    assert_eq!(
        create_acls(&mut alice, &[creation(&read_t)]).await,
        [CLUSTER_DENIED]
    );
    let ResponseKind::DescribeAcls(r) = alice.send(describe_all(), 3).await else {
        panic!()
    };
    assert_eq!(r.error_code, CLUSTER_DENIED);

    let mut admin = login(&server, "admin").await;
    let write_group = creation(&allow(Group, "g", "alice", Write));
    // DELEGATION_TOKEN: a resource type this agent does not know.
    let delegation_token = creation(&read_t).with_resource_type(6);
    let prefixed = binding(Topic, "logs-", Prefixed, "*", Write, AclPermission::Deny);
    let codes = create_acls(
        &mut admin,
        &[
            creation(&read_t),
            write_group,
            delegation_token,
            creation(&prefixed),
        ],
    )
    .await;
    let invalid = ResponseError::InvalidRequest.code();
    assert_eq!(codes, [0, invalid, invalid, 0]);

    // Both versions' encodings (v1 non-flexible, v3 flexible) describe the same bindings.
    for version in [1, 3] {
        let ResponseKind::DescribeAcls(r) = admin.send(describe_all(), version).await else {
            panic!()
        };
        assert_eq!(r.error_code, 0);
        let described: Vec<(i8, String, i8, String, i8, i8)> = r
            .resources
            .iter()
            .flat_map(|res| {
                res.acls.iter().map(|a| {
                    (
                        res.resource_type,
                        res.resource_name.to_string(),
                        res.pattern_type,
                        a.principal.to_string(),
                        a.operation,
                        a.permission_type,
                    )
                })
            })
            .collect();
        assert_eq!(
            described,
            [
                (2, "logs-".into(), 4, "User:*".into(), 4, 2),
                (2, "t".into(), 3, "User:alice".into(), 3, 3),
            ]
        );
    }

    // MATCH finds the bindings that apply to a topic name.
    let matching = RequestKind::DescribeAcls(
        DescribeAclsRequest::default()
            .with_resource_type_filter(2)
            .with_resource_name_filter(Some(s("logs-app")))
            .with_principal_filter(None)
            .with_host_filter(None)
            .with_pattern_type_filter(2)
            .with_operation(1)
            .with_permission_type(1),
    );
    let ResponseKind::DescribeAcls(r) = admin.send(matching, 2).await else {
        panic!()
    };
    assert_eq!(r.resources.len(), 1);
    assert_eq!(r.resources[0].resource_name.as_str(), "logs-");

    let delete = |filters: Vec<DeleteAclsFilter>| {
        RequestKind::DeleteAcls(DeleteAclsRequest::default().with_filters(filters))
    };
    let by_alice = any_filter().with_principal_filter(Some(s("User:alice")));
    let ResponseKind::DeleteAcls(r) = alice.send(delete(vec![by_alice.clone()]), 3).await else {
        panic!()
    };
    assert_eq!(r.filter_results[0].error_code, CLUSTER_DENIED);
    let ResponseKind::DeleteAcls(r) = admin
        .send(delete(vec![by_alice, any_filter().with_operation(0)]), 3)
        .await
    else {
        panic!()
    };
    let matched: Vec<String> = r.filter_results[0]
        .matching_acls
        .iter()
        .map(|a| a.resource_name.to_string())
        .collect();
    assert_eq!(
        (r.filter_results[0].error_code, matched),
        (0, vec!["t".to_string()])
    );
    assert_eq!(r.filter_results[1].error_code, invalid, "UNKNOWN operation");
    let stored = server
        .broker
        .acls()
        .list(&Default::default())
        .await
        .unwrap();
    assert_eq!(stored, [prefixed]);
}

/// A change made through one agent applies there at once and on another agent sharing the
/// metadata store within its refresh interval.
#[tokio::test]
async fn acl_changes_reach_every_agent() {
    let metadata: Arc<dyn MetadataStore> =
        Arc::new(SqliteMetadataStore::in_memory().await.unwrap());
    let users = ["admin", "alice"];
    let first = TestServer::start_with_sasl(config(), metadata.clone(), &users).await;
    let second = TestServer::start_with_sasl(config(), metadata.clone(), &users).await;
    create_topic(&first, "t", 1).await;
    let mut on_first = login(&first, "alice").await;
    let mut on_second = login(&second, "alice").await;
    let visible = [("t".to_string(), 0)];
    let hidden = [("t".to_string(), TOPIC_DENIED)];
    assert_eq!(metadata_of(&mut on_second, "t").await, hidden);

    grant(&first, &[allow(Topic, "t", "alice", Describe)]).await;
    assert_eq!(metadata_of(&mut on_first, "t").await, visible);
    eventually(&mut on_second, &visible).await;

    let mut admin = login(&second, "admin").await;
    let revoke =
        RequestKind::DeleteAcls(DeleteAclsRequest::default().with_filters(vec![any_filter()]));
    admin.send(revoke, 3).await;
    assert_eq!(metadata_of(&mut on_second, "t").await, hidden);
    eventually(&mut on_first, &hidden).await;
}

async fn metadata_of(client: &mut Client, topic: &str) -> Vec<(String, i16)> {
    metadata(client, Some(&[topic])).await
}

/// Polls Metadata until it answers `expected` (the other agent's refresh runs every 50 ms).
async fn eventually(client: &mut Client, expected: &[(String, i16)]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = metadata(client, Some(&["t"])).await;
        if got == expected {
            return;
        }
        assert!(Instant::now() < deadline, "still {got:?}, not {expected:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Without SASL, every request comes from `User:ANONYMOUS`.
#[tokio::test]
async fn unauthenticated_requests_are_anonymous() {
    let server = TestServer::start_with(config()).await;
    create_topic(&server, "t", 1).await;
    let mut client = server.client().await;
    assert_eq!(
        metadata_of(&mut client, "t").await,
        [("t".to_string(), TOPIC_DENIED)]
    );
    let anonymous = allow(Topic, "t", "ANONYMOUS", Describe);
    server.broker.acls().create(&[anonymous]).await.unwrap();
    assert_eq!(metadata_of(&mut client, "t").await, [("t".to_string(), 0)]);
}

#[tokio::test]
async fn config_changes_and_log_dirs_need_their_operations() {
    use incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
    let server = server().await;
    let mut alice = login(&server, "alice").await;
    let alter = || {
        RequestKind::IncrementalAlterConfigs(
            IncrementalAlterConfigsRequest::default().with_resources(vec![
                AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("t"))
                    .with_configs(vec![AlterableConfig::default()
                        .with_name(s("retention.ms"))
                        .with_config_operation(0)
                        .with_value(Some(s("1000")))]),
            ]),
        )
    };
    let altered = |r: ResponseKind| match r {
        ResponseKind::IncrementalAlterConfigs(r) => r.responses[0].error_code,
        other => panic!("{other:?}"),
    };
    assert_eq!(altered(alice.send(alter(), 1).await), TOPIC_DENIED);
    // DESCRIBE_CONFIGS is not ALTER_CONFIGS.
    grant(&server, &[allow(Topic, "t", "alice", DescribeConfigs)]).await;
    assert_eq!(altered(alice.send(alter(), 1).await), TOPIC_DENIED);
    grant(&server, &[allow(Topic, "t", "alice", AlterConfigs)]).await;
    assert_eq!(altered(alice.send(alter(), 1).await), 0);

    let log_dirs =
        || RequestKind::DescribeLogDirs(DescribeLogDirsRequest::default().with_topics(None));
    let ResponseKind::DescribeLogDirs(r) = alice.send(log_dirs(), 4).await else {
        panic!()
    };
    assert_eq!(r.error_code, CLUSTER_DENIED);
    grant(
        &server,
        &[allow(Cluster, "kafka-cluster", "alice", Describe)],
    )
    .await;
    let ResponseKind::DescribeLogDirs(r) = alice.send(log_dirs(), 4).await else {
        panic!()
    };
    assert_eq!(r.error_code, 0);
}
