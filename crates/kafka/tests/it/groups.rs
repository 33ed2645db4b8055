//! Consumer groups at the wire level: membership (join/sync/heartbeat/leave), rebalances and
//! timeouts, static membership, committed offsets and group admin.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use streamhouse_kafka::{BrokerConfig, PartitionLag};
use streamhouse_metadata::{NewTopic, TopicConfig};

use crate::harness::{record_batch, Client, TestServer};

const SESSION_MS: i32 = 10_000;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn gid(v: &str) -> GroupId {
    GroupId(s(v))
}

fn code(e: ResponseError) -> i16 {
    e.code()
}

/// An agent whose new groups wait briefly for concurrent first joins, so members started
/// together land in one generation.
async fn server() -> TestServer {
    server_with_delay(Duration::from_millis(200)).await
}

async fn server_with_delay(delay: Duration) -> TestServer {
    let config = BrokerConfig {
        group_initial_rebalance_delay: delay,
        ..BrokerConfig::default()
    };
    let server = TestServer::start_with(config).await;
    for (topic, partitions) in [("t", 6), ("other", 2)] {
        server
            .metadata
            .create_topic(NewTopic {
                name: topic.into(),
                partitions,
                config: TopicConfig::default(),
            })
            .await
            .unwrap();
    }
    server
}

/// Consumer-protocol subscription metadata, as Java clients and librdkafka send it.
fn subscription(topics: &[&str]) -> Bytes {
    let sub =
        ConsumerProtocolSubscription::default().with_topics(topics.iter().map(|t| s(t)).collect());
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&1i16.to_be_bytes());
    sub.encode(&mut buf, 1).unwrap();
    buf.freeze()
}

/// A group member driving its own connection.
struct Member {
    client: Client,
    group: String,
    id: String,
    instance: Option<String>,
    generation: i32,
    session_ms: i32,
    protocols: Vec<(&'static str, Bytes)>,
}

impl Member {
    async fn new(server: &TestServer, group: &str) -> Self {
        Self {
            client: server.client().await,
            group: group.into(),
            id: String::new(),
            instance: None,
            generation: -1,
            session_ms: SESSION_MS,
            protocols: vec![("range", subscription(&["t"]))],
        }
    }

    fn join_request(&self) -> RequestKind {
        let protocols = self
            .protocols
            .iter()
            .map(|(name, meta)| {
                JoinGroupRequestProtocol::default()
                    .with_name(s(name))
                    .with_metadata(meta.clone())
            })
            .collect();
        RequestKind::JoinGroup(
            JoinGroupRequest::default()
                .with_group_id(gid(&self.group))
                .with_session_timeout_ms(self.session_ms)
                .with_rebalance_timeout_ms(5_000)
                .with_member_id(s(&self.id))
                .with_group_instance_id(self.instance.as_deref().map(s))
                .with_protocol_type(s("consumer"))
                .with_protocols(protocols),
        )
    }

    /// One JoinGroup round trip (v5), remembering the member id and generation it got.
    async fn join_once(&mut self) -> JoinGroupResponse {
        let ResponseKind::JoinGroup(r) = self.client.send(self.join_request(), 5).await else {
            panic!("not a JoinGroup response")
        };
        if !r.member_id.is_empty() {
            self.id = r.member_id.to_string();
        }
        if r.error_code == 0 {
            self.generation = r.generation_id;
        }
        r
    }

    /// Joins, taking the MEMBER_ID_REQUIRED detour a first join takes.
    async fn join(&mut self) -> JoinGroupResponse {
        let r = self.join_once().await;
        if r.error_code == code(ResponseError::MemberIdRequired) {
            return self.join_once().await;
        }
        r
    }

    async fn sync(&mut self, assignments: &[(&str, &[u8])]) -> SyncGroupResponse {
        let assignments = assignments
            .iter()
            .map(|(m, a)| {
                SyncGroupRequestAssignment::default()
                    .with_member_id(s(m))
                    .with_assignment(Bytes::copy_from_slice(a))
            })
            .collect();
        let request = SyncGroupRequest::default()
            .with_group_id(gid(&self.group))
            .with_generation_id(self.generation)
            .with_member_id(s(&self.id))
            .with_group_instance_id(self.instance.as_deref().map(s))
            .with_assignments(assignments);
        match self.client.send(RequestKind::SyncGroup(request), 3).await {
            ResponseKind::SyncGroup(r) => r,
            _ => panic!("not a SyncGroup response"),
        }
    }

    async fn heartbeat(&mut self) -> i16 {
        self.heartbeat_as(self.generation, &self.id.clone()).await
    }

    async fn heartbeat_as(&mut self, generation: i32, member_id: &str) -> i16 {
        let request = HeartbeatRequest::default()
            .with_group_id(gid(&self.group))
            .with_generation_id(generation)
            .with_member_id(s(member_id))
            .with_group_instance_id(self.instance.as_deref().map(s));
        match self.client.send(RequestKind::Heartbeat(request), 3).await {
            ResponseKind::Heartbeat(r) => r.error_code,
            _ => panic!("not a Heartbeat response"),
        }
    }

    async fn leave(&mut self) -> LeaveGroupResponse {
        let request = LeaveGroupRequest::default()
            .with_group_id(gid(&self.group))
            .with_members(vec![MemberIdentity::default()
                .with_member_id(s(&self.id))
                .with_group_instance_id(self.instance.as_deref().map(s))]);
        match self.client.send(RequestKind::LeaveGroup(request), 3).await {
            ResponseKind::LeaveGroup(r) => r,
            _ => panic!("not a LeaveGroup response"),
        }
    }

    async fn commit(&mut self, topic: &str, partition: i32, offset: i64) -> i16 {
        let (generation, member) = (self.generation, self.id.clone());
        commit(
            &mut self.client,
            &self.group,
            generation,
            &member,
            topic,
            partition,
            offset,
        )
        .await
    }
}

async fn commit(
    client: &mut Client,
    group: &str,
    generation: i32,
    member: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) -> i16 {
    let request = OffsetCommitRequest::default()
        .with_group_id(gid(group))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(partition)
                .with_committed_offset(offset)
                .with_committed_leader_epoch(7)
                .with_committed_metadata(Some(s("meta")))])]);
    let ResponseKind::OffsetCommit(r) = client.send(RequestKind::OffsetCommit(request), 8).await
    else {
        panic!("not an OffsetCommit response")
    };
    r.topics[0].partitions[0].error_code
}

/// `(offset, leader epoch, metadata)` per requested partition of `topic`, via OffsetFetch v8.
async fn fetch_offsets(
    client: &mut Client,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> Vec<(i64, i32, String)> {
    let request =
        OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
            .with_group_id(gid(group))
            .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                .with_name(TopicName(s(topic)))
                .with_partition_indexes(partitions.to_vec())]))]);
    let ResponseKind::OffsetFetch(r) = client.send(RequestKind::OffsetFetch(request), 8).await
    else {
        panic!("not an OffsetFetch response")
    };
    assert_eq!(r.groups[0].error_code, 0);
    r.groups[0].topics[0]
        .partitions
        .iter()
        .map(|p| {
            let meta = p
                .metadata
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default();
            (p.committed_offset, p.committed_leader_epoch, meta)
        })
        .collect()
}

async fn describe(client: &mut Client, group: &str) -> describe_groups_response::DescribedGroup {
    let request = DescribeGroupsRequest::default().with_groups(vec![gid(group)]);
    let ResponseKind::DescribeGroups(mut r) =
        client.send(RequestKind::DescribeGroups(request), 5).await
    else {
        panic!("not a DescribeGroups response")
    };
    r.groups.remove(0)
}

async fn list_groups(client: &mut Client, states: &[&str]) -> Vec<(String, String)> {
    let request =
        ListGroupsRequest::default().with_states_filter(states.iter().map(|v| s(v)).collect());
    let ResponseKind::ListGroups(r) = client.send(RequestKind::ListGroups(request), 4).await else {
        panic!("not a ListGroups response")
    };
    assert_eq!(r.error_code, 0);
    let mut groups: Vec<_> = r
        .groups
        .iter()
        .map(|g| (g.group_id.0.to_string(), g.group_state.to_string()))
        .collect();
    groups.sort();
    groups
}

async fn delete_group(client: &mut Client, group: &str) -> i16 {
    let request = DeleteGroupsRequest::default().with_groups_names(vec![gid(group)]);
    let ResponseKind::DeleteGroups(r) = client.send(RequestKind::DeleteGroups(request), 2).await
    else {
        panic!("not a DeleteGroups response")
    };
    r.results[0].error_code
}

/// Brings `members` (all new) into one generation: everyone joins concurrently, the leader
/// assigns `member id -> "a:<member id>"`, everyone syncs. Returns the leader's index.
async fn form_group(members: &mut [Member]) -> usize {
    let joins = futures::future::join_all(members.iter_mut().map(|m| m.join())).await;
    let generation = joins[0].generation_id;
    for r in &joins {
        assert_eq!(r.error_code, 0, "join failed");
        assert_eq!(
            r.generation_id, generation,
            "members ended in different generations"
        );
        assert_eq!(r.protocol_name.as_deref(), Some("range"));
    }
    let leader = joins
        .iter()
        .position(|r| r.leader == r.member_id)
        .expect("one member leads");
    assert_eq!(joins[leader].members.len(), members.len());
    for (i, r) in joins.iter().enumerate().filter(|(i, _)| *i != leader) {
        assert!(r.members.is_empty(), "follower {i} got the member list");
    }
    let assignments: Vec<(String, Vec<u8>)> = members
        .iter()
        .map(|m| (m.id.clone(), format!("a:{}", m.id).into_bytes()))
        .collect();
    let syncs = futures::future::join_all(members.iter_mut().enumerate().map(|(i, m)| {
        let assignments = &assignments;
        async move {
            let owned: Vec<(&str, &[u8])> = if i == leader {
                assignments
                    .iter()
                    .map(|(m, a)| (m.as_str(), a.as_slice()))
                    .collect()
            } else {
                Vec::new()
            };
            m.sync(&owned).await
        }
    }))
    .await;
    for (m, r) in members.iter().zip(&syncs) {
        assert_eq!(r.error_code, 0, "sync failed");
        assert_eq!(r.assignment.as_ref(), format!("a:{}", m.id).as_bytes());
    }
    leader
}

#[tokio::test]
async fn three_members_join_sync_and_heartbeat() {
    let server = server().await;
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(Member::new(&server, "g").await);
    }
    form_group(&mut members).await;
    for m in &mut members {
        assert_eq!(m.heartbeat().await, 0);
    }
    let mut admin = server.client().await;
    let described = describe(&mut admin, "g").await;
    assert_eq!(described.group_state.as_str(), "Stable");
    assert_eq!(described.protocol_type.as_str(), "consumer");
    assert_eq!(described.protocol_data.as_str(), "range");
    assert_eq!(described.members.len(), 3);
    for d in &described.members {
        assert_eq!(d.client_id.as_str(), "it");
        assert_eq!(d.client_host.as_str(), "/127.0.0.1");
        assert_eq!(d.member_metadata, subscription(&["t"]));
        assert_eq!(
            d.member_assignment.as_ref(),
            format!("a:{}", d.member_id).as_bytes()
        );
    }
}

#[tokio::test]
async fn first_join_needs_a_member_id_from_v4() {
    let server = server().await;
    let mut m = Member::new(&server, "g").await;
    let first = m.join_once().await;
    assert_eq!(first.error_code, code(ResponseError::MemberIdRequired));
    assert!(
        first.member_id.starts_with("it-"),
        "member id {:?}",
        first.member_id
    );
    let second = m.join_once().await;
    assert_eq!(second.error_code, 0);
    assert_eq!(second.member_id, first.member_id);
    assert_eq!(second.leader, first.member_id);
    assert_eq!(second.generation_id, 1);

    // Before v4 the first join is admitted at once.
    let mut old = Member::new(&server, "g-old").await;
    let ResponseKind::JoinGroup(r) = old.client.send(old.join_request(), 3).await else {
        panic!()
    };
    assert_eq!(r.error_code, 0);
    assert!(!r.member_id.is_empty());
}

#[tokio::test]
async fn stale_generation_and_unknown_member_are_refused() {
    let server = server().await;
    let mut m = Member::new(&server, "g").await;
    form_group(std::slice::from_mut(&mut m)).await;
    let id = m.id.clone();
    assert_eq!(
        m.heartbeat_as(m.generation + 1, &id).await,
        code(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        m.heartbeat_as(m.generation, "nobody").await,
        code(ResponseError::UnknownMemberId)
    );
    let mut other = Member::new(&server, "no-such-group").await;
    other.id = "x".into();
    assert_eq!(
        other.heartbeat().await,
        code(ResponseError::UnknownMemberId)
    );
    m.generation -= 1;
    assert_eq!(
        m.sync(&[]).await.error_code,
        code(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        m.commit("t", 0, 5).await,
        code(ResponseError::IllegalGeneration)
    );
}

#[tokio::test]
async fn invalid_group_id_and_inconsistent_protocols() {
    let server = server().await;
    let mut empty = Member::new(&server, "").await;
    assert_eq!(
        empty.join().await.error_code,
        code(ResponseError::InvalidGroupId)
    );

    let mut a = Member::new(&server, "g").await;
    form_group(std::slice::from_mut(&mut a)).await;
    let mut b = Member::new(&server, "g").await;
    b.protocols = vec![("roundrobin", subscription(&["t"]))];
    assert_eq!(
        b.join().await.error_code,
        code(ResponseError::InconsistentGroupProtocol)
    );
}

#[tokio::test]
async fn a_new_member_makes_stable_members_rejoin() {
    let server = server().await;
    let mut a = Member::new(&server, "g").await;
    form_group(std::slice::from_mut(&mut a)).await;
    let first_generation = a.generation;

    let mut b = Member::new(&server, "g").await;
    let b_join = tokio::spawn(async move {
        let r = b.join().await;
        (b, r)
    });
    // The rebalance starts once b has joined; a learns it from its heartbeat.
    let mut heartbeat = a.heartbeat().await;
    for _ in 0..100 {
        if heartbeat != 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        heartbeat = a.heartbeat().await;
    }
    assert_eq!(heartbeat, code(ResponseError::RebalanceInProgress));
    let mut admin = server.client().await;
    assert_eq!(
        describe(&mut admin, "g").await.group_state.as_str(),
        "PreparingRebalance"
    );
    let a_join = a.join().await;
    let (mut b, b_join) = b_join.await.unwrap();
    assert_eq!(a_join.error_code, 0);
    assert_eq!(b_join.error_code, 0);
    assert_eq!(a_join.generation_id, first_generation + 1);
    assert_eq!(b_join.generation_id, first_generation + 1);
    // The first member keeps leading.
    assert_eq!(a_join.leader, a_join.member_id);
    assert_eq!(a_join.members.len(), 2);
    let ids = [a.id.clone(), b.id.clone()];
    let leader_assignments: [(&str, &[u8]); 2] = [(&ids[0], b"x"), (&ids[1], b"y")];
    let (ra, rb) = tokio::join!(a.sync(&leader_assignments), b.sync(&[]));
    assert_eq!(
        (ra.assignment.as_ref(), rb.assignment.as_ref()),
        (&b"x"[..], &b"y"[..])
    );
}

#[tokio::test]
async fn a_silent_member_is_removed_after_its_session_timeout() {
    let server = server().await;
    let a = Member::new(&server, "g").await;
    let mut b = Member::new(&server, "g").await;
    b.session_ms = 300;
    let mut pair = [a, b];
    form_group(&mut pair).await;
    let [mut a, b] = pair;
    let silent = b.id.clone();
    drop(b);

    let mut heartbeat = 0;
    for _ in 0..200 {
        heartbeat = a.heartbeat().await;
        if heartbeat != 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(heartbeat, code(ResponseError::RebalanceInProgress));
    let rejoined = a.join().await;
    assert_eq!(rejoined.error_code, 0);
    let ids: Vec<_> = rejoined
        .members
        .iter()
        .map(|m| m.member_id.to_string())
        .collect();
    assert_eq!(ids, vec![a.id.clone()]);
    assert!(!ids.contains(&silent));
}

#[tokio::test]
async fn a_member_that_does_not_rejoin_is_dropped_at_the_rebalance_timeout() {
    let server = server().await;
    let mut pair = [
        Member::new(&server, "g").await,
        Member::new(&server, "g").await,
    ];
    form_group(&mut pair).await;
    let [mut a, mut b] = pair;
    // b keeps heartbeating (so its session lives) but never rejoins; the rebalance timeout
    // (5 s in join_request) ends the join phase without it.
    let c = Member::new(&server, "g").await;
    let c_join = tokio::spawn(async move {
        let mut c = c;
        c.join().await
    });
    let started = std::time::Instant::now();
    let rejoin = tokio::spawn(async move {
        loop {
            if a.heartbeat().await == code(ResponseError::RebalanceInProgress) {
                return a.join().await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let stop = std::time::Instant::now() + Duration::from_secs(20);
    while !rejoin.is_finished() && std::time::Instant::now() < stop {
        b.heartbeat().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let a_join = rejoin.await.unwrap();
    let c_join = c_join.await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(4));
    assert_eq!(a_join.error_code, 0);
    assert_eq!(c_join.generation_id, a_join.generation_id);
    assert_eq!(a_join.members.len(), 2, "b should have been dropped");
    assert_eq!(b.heartbeat().await, code(ResponseError::UnknownMemberId));
}

#[tokio::test]
async fn a_static_member_rejoins_without_a_rebalance() {
    let server = server().await;
    let mut a = Member::new(&server, "g").await;
    a.instance = Some("instance-a".into());
    let b = Member::new(&server, "g").await;
    let mut pair = [a, b];
    form_group(&mut pair).await;
    let [mut a, mut b] = pair;
    let generation = a.generation;
    let old_id = a.id.clone();
    let assignment = format!("a:{old_id}");

    // A restarted static member comes back with no member id and the same instance id.
    let mut restarted = Member::new(&server, "g").await;
    restarted.instance = a.instance.clone();
    let r = restarted.join().await;
    assert_eq!(r.error_code, 0);
    assert_ne!(restarted.id, old_id);
    assert_eq!(r.generation_id, generation, "no new generation");
    assert_eq!(
        restarted.sync(&[]).await.assignment.as_ref(),
        assignment.as_bytes()
    );
    assert_eq!(b.heartbeat().await, 0, "other members are not disturbed");
    assert_eq!(restarted.heartbeat().await, 0);
    // The old incarnation is fenced.
    assert_eq!(
        a.heartbeat_as(generation, &old_id).await,
        code(ResponseError::FencedInstanceId)
    );
    let mut admin = server.client().await;
    let described = describe(&mut admin, "g").await;
    assert_eq!(described.group_state.as_str(), "Stable");
    let instances: Vec<_> = described
        .members
        .iter()
        .filter_map(|m| m.group_instance_id.as_ref().map(|i| i.to_string()))
        .collect();
    assert_eq!(instances, vec!["instance-a".to_string()]);
}

#[tokio::test]
async fn offsets_are_committed_fetched_and_deleted() {
    let server = server().await;
    let mut client = server.client().await;
    // A standalone consumer (no membership) commits with generation -1.
    assert_eq!(commit(&mut client, "solo", -1, "", "t", 2, 42).await, 0);
    assert_eq!(
        commit(&mut client, "solo", -1, "", "t", 99, 1).await,
        code(ResponseError::UnknownTopicOrPartition)
    );
    assert_eq!(
        commit(&mut client, "solo", -1, "", "missing", 0, 1).await,
        code(ResponseError::UnknownTopicOrPartition)
    );
    assert_eq!(
        fetch_offsets(&mut client, "solo", "t", &[1, 2]).await,
        vec![(-1, -1, String::new()), (42, 7, "meta".to_string())]
    );

    // OffsetFetch v5 (one group per request) and "all topics" (null topic list).
    let request = OffsetFetchRequest::default()
        .with_group_id(gid("solo"))
        .with_topics(None);
    let ResponseKind::OffsetFetch(r) = client.send(RequestKind::OffsetFetch(request), 5).await
    else {
        panic!()
    };
    assert_eq!(r.error_code, 0);
    assert_eq!(r.topics.len(), 1);
    assert_eq!(r.topics[0].partitions[0].partition_index, 2);
    assert_eq!(r.topics[0].partitions[0].committed_offset, 42);

    let delete = OffsetDeleteRequest::default()
        .with_group_id(gid("solo"))
        .with_topics(vec![OffsetDeleteRequestTopic::default()
            .with_name(TopicName(s("t")))
            .with_partitions(vec![
                OffsetDeleteRequestPartition::default().with_partition_index(2)
            ])]);
    let ResponseKind::OffsetDelete(r) = client
        .send(RequestKind::OffsetDelete(delete.clone()), 0)
        .await
    else {
        panic!()
    };
    assert_eq!(r.error_code, 0);
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    assert_eq!(fetch_offsets(&mut client, "solo", "t", &[2]).await[0].0, -1);

    let ResponseKind::OffsetDelete(r) = client
        .send(
            RequestKind::OffsetDelete(delete.with_group_id(gid("never"))),
            0,
        )
        .await
    else {
        panic!()
    };
    assert_eq!(r.error_code, code(ResponseError::GroupIdNotFound));
}

#[tokio::test]
async fn members_commit_within_their_generation() {
    let server = server().await;
    let mut m = Member::new(&server, "g").await;
    form_group(std::slice::from_mut(&mut m)).await;
    assert_eq!(m.commit("t", 0, 10).await, 0);
    let mut client = server.client().await;
    // Only non-members of an empty group may commit with generation -1.
    assert_eq!(
        commit(&mut client, "g", -1, "", "t", 0, 11).await,
        code(ResponseError::UnknownMemberId)
    );
    assert_eq!(fetch_offsets(&mut client, "g", "t", &[0]).await[0].0, 10);

    // Offsets of a subscribed topic stay while the group consumes it; others may go.
    assert_eq!(m.commit("other", 1, 3).await, 0);
    let delete = |topic: &str| {
        RequestKind::OffsetDelete(
            OffsetDeleteRequest::default()
                .with_group_id(gid("g"))
                .with_topics(vec![OffsetDeleteRequestTopic::default()
                    .with_name(TopicName(s(topic)))
                    .with_partitions(vec![
                        OffsetDeleteRequestPartition::default().with_partition_index(0),
                        OffsetDeleteRequestPartition::default().with_partition_index(1),
                    ])]),
        )
    };
    let ResponseKind::OffsetDelete(r) = client.send(delete("t"), 0).await else {
        panic!()
    };
    assert_eq!(
        r.topics[0].partitions[0].error_code,
        code(ResponseError::GroupSubscribedToTopic)
    );
    let ResponseKind::OffsetDelete(r) = client.send(delete("other"), 0).await else {
        panic!()
    };
    assert_eq!(r.topics[0].partitions[1].error_code, 0);
    assert_eq!(
        fetch_offsets(&mut client, "g", "other", &[1]).await[0].0,
        -1
    );
    assert_eq!(fetch_offsets(&mut client, "g", "t", &[0]).await[0].0, 10);
}

#[tokio::test]
async fn groups_are_listed_described_and_deleted() {
    let server = server().await;
    let mut m = Member::new(&server, "live").await;
    form_group(std::slice::from_mut(&mut m)).await;
    assert_eq!(m.commit("t", 0, 1).await, 0);
    let mut client = server.client().await;
    assert_eq!(
        commit(&mut client, "offsets-only", -1, "", "t", 0, 5).await,
        0
    );

    assert_eq!(
        list_groups(&mut client, &[]).await,
        vec![
            ("live".to_string(), "Stable".to_string()),
            ("offsets-only".to_string(), "Empty".to_string())
        ]
    );
    assert_eq!(list_groups(&mut client, &["empty"]).await.len(), 1);
    let described = describe(&mut client, "offsets-only").await;
    assert_eq!(
        (described.error_code, described.group_state.as_str()),
        (0, "Empty")
    );
    assert_eq!(
        describe(&mut client, "unknown").await.group_state.as_str(),
        "Dead"
    );

    assert_eq!(
        delete_group(&mut client, "live").await,
        code(ResponseError::NonEmptyGroup)
    );
    assert_eq!(m.leave().await.members[0].error_code, 0);
    assert_eq!(
        describe(&mut client, "live").await.group_state.as_str(),
        "Empty"
    );
    assert_eq!(delete_group(&mut client, "live").await, 0);
    assert_eq!(delete_group(&mut client, "offsets-only").await, 0);
    assert_eq!(
        delete_group(&mut client, "offsets-only").await,
        code(ResponseError::GroupIdNotFound)
    );
    assert!(list_groups(&mut client, &[]).await.is_empty());
    assert_eq!(fetch_offsets(&mut client, "live", "t", &[0]).await[0].0, -1);
}

#[tokio::test]
async fn lag_is_high_watermark_minus_committed() {
    let server = server().await;
    let mut client = server.client().await;
    let produce = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(s("t")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(3)
                .with_records(Some(record_batch(&[("k", "v"); 5], 1_000, None)))])]);
    client.send(RequestKind::Produce(produce), 9).await;
    assert_eq!(commit(&mut client, "lagging", -1, "", "t", 3, 2).await, 0);
    let lag = server.broker.group_lag("lagging").await.unwrap();
    assert_eq!(
        lag,
        vec![PartitionLag {
            topic: "t".into(),
            partition: 3,
            committed: 2,
            high_watermark: 5,
            lag: 3
        }]
    );
}

#[tokio::test]
async fn find_coordinator_names_this_agent_in_every_version() {
    let server = server().await;
    let mut client = server.client().await;
    for version in 0..=3 {
        let request = FindCoordinatorRequest::default().with_key(s("g"));
        let ResponseKind::FindCoordinator(r) = client
            .send(RequestKind::FindCoordinator(request), version)
            .await
        else {
            panic!()
        };
        assert_eq!((r.error_code, r.port), (0, i32::from(server.addr.port())));
    }
    let request = FindCoordinatorRequest::default().with_coordinator_keys(vec![s("a"), s("b")]);
    let ResponseKind::FindCoordinator(r) =
        client.send(RequestKind::FindCoordinator(request), 4).await
    else {
        panic!()
    };
    let keys: Vec<_> = r.coordinators.iter().map(|c| c.key.to_string()).collect();
    assert_eq!(keys, ["a", "b"]);
    assert!(r
        .coordinators
        .iter()
        .all(|c| c.port == i32::from(server.addr.port())));
}

/// Every advertised version of every group API encodes its answers, including the leader's
/// member list, errors, and fields that only some versions have.
#[tokio::test]
async fn every_group_api_version_answers() {
    let server = server().await;
    let mut client = server.client().await;
    for version in 0..=9 {
        let group = format!("v{version}");
        let mut m = Member::new(&server, &group).await;
        let request = m.join_request();
        let ResponseKind::JoinGroup(mut r) = m.client.send(request.clone(), version).await else {
            panic!()
        };
        if r.error_code == code(ResponseError::MemberIdRequired) {
            m.id = r.member_id.to_string();
            let ResponseKind::JoinGroup(again) = m.client.send(m.join_request(), version).await
            else {
                panic!()
            };
            r = again;
        }
        assert_eq!(r.error_code, 0, "JoinGroup v{version}");
        m.id = r.member_id.to_string();
        m.generation = r.generation_id;
        {
            let sync = SyncGroupRequest::default()
                .with_group_id(gid(&group))
                .with_generation_id(m.generation)
                .with_member_id(s(&m.id));
            let ResponseKind::SyncGroup(r) = client
                .send(RequestKind::SyncGroup(sync), version.min(5))
                .await
            else {
                panic!()
            };
            assert_eq!(r.error_code, 0, "SyncGroup v{version}");
        }
        if version <= 4 {
            let hb = HeartbeatRequest::default()
                .with_group_id(gid(&group))
                .with_generation_id(m.generation)
                .with_member_id(s(&m.id));
            let ResponseKind::Heartbeat(r) = client.send(RequestKind::Heartbeat(hb), version).await
            else {
                panic!()
            };
            assert_eq!(r.error_code, 0, "Heartbeat v{version}");
        }
        if version <= 5 {
            let describe = DescribeGroupsRequest::default().with_groups(vec![gid(&group)]);
            let response = client
                .send(RequestKind::DescribeGroups(describe), version)
                .await;
            assert!(matches!(response, ResponseKind::DescribeGroups(_)));
        }
        if version <= 4 {
            let list = ListGroupsRequest::default();
            let response = client.send(RequestKind::ListGroups(list), version).await;
            assert!(matches!(response, ResponseKind::ListGroups(_)));
        }
        if (2..=8).contains(&version) {
            let code = commit_version(&mut client, &group, &m, version).await;
            assert_eq!(code, 0, "OffsetCommit v{version}");
        }
        if (1..=7).contains(&version) {
            let fetch = OffsetFetchRequest::default()
                .with_group_id(gid(&group))
                .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_partition_indexes(vec![0, 1])]));
            let ResponseKind::OffsetFetch(r) =
                client.send(RequestKind::OffsetFetch(fetch), version).await
            else {
                panic!()
            };
            assert_eq!(r.topics[0].partitions.len(), 2, "OffsetFetch v{version}");
        }
        if version <= 5 {
            let leave = if version >= 3 {
                LeaveGroupRequest::default()
                    .with_members(vec![MemberIdentity::default().with_member_id(s(&m.id))])
            } else {
                LeaveGroupRequest::default().with_member_id(s(&m.id))
            };
            let ResponseKind::LeaveGroup(r) = client
                .send(
                    RequestKind::LeaveGroup(leave.with_group_id(gid(&group))),
                    version,
                )
                .await
            else {
                panic!()
            };
            assert_eq!(r.error_code, 0, "LeaveGroup v{version}");
        }
        if version <= 2 {
            let delete = DeleteGroupsRequest::default().with_groups_names(vec![gid("nope")]);
            let response = client
                .send(RequestKind::DeleteGroups(delete), version)
                .await;
            assert!(matches!(response, ResponseKind::DeleteGroups(_)));
        }
    }
}

async fn commit_version(client: &mut Client, group: &str, m: &Member, version: i16) -> i16 {
    let request = OffsetCommitRequest::default()
        .with_group_id(gid(group))
        .with_generation_id_or_member_epoch(m.generation)
        .with_member_id(s(&m.id))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s("t")))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(1)])]);
    let ResponseKind::OffsetCommit(r) = client
        .send(RequestKind::OffsetCommit(request), version)
        .await
    else {
        panic!()
    };
    r.topics[0].partitions[0].error_code
}

/// Offset commits pipelined on one connection take effect in the order they were sent, as on
/// Kafka (which serves a connection's requests one at a time): the last one is what stays
/// committed, whatever the store's latency for each. librdkafka sends the commits it deferred
/// while its coordinator was away this way, and takes the last as committed.
#[tokio::test]
async fn pipelined_offset_commits_take_effect_in_the_order_sent() {
    // Each commit is delayed less than the one before, so commits that ran at once would
    // finish in the reverse of the order they were sent.
    let slower_first = |n: u64| Duration::from_millis(40u64.saturating_sub(2 * n));
    let (server, metadata) = TestServer::start_delaying("commit_offsets", slower_first).await;
    metadata
        .create_topic(NewTopic {
            name: "t".into(),
            partitions: 1,
            config: TopicConfig::default(),
        })
        .await
        .unwrap();
    let mut client = server.client().await;
    let commit = |offset: i64| {
        let request = OffsetCommitRequest::default()
            .with_group_id(gid("ordered"))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(s("t")))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(offset)])]);
        (RequestKind::OffsetCommit(request), 8)
    };
    // The first commit takes the coordinator lease; then twenty at once.
    assert_eq!(client.send(commit(0).0, 8).await.into_ok_commit(), 0);
    let responses = client.send_pipelined((1..=20).map(commit).collect()).await;
    assert!(responses.into_iter().all(|r| r.into_ok_commit() == 0));
    assert_eq!(
        fetch_offsets(&mut client, "ordered", "t", &[0]).await[0].0,
        20,
        "the last commit sent is the one that stays"
    );
}

trait CommitResponse {
    /// The first partition's error code of an OffsetCommit response.
    fn into_ok_commit(self) -> i16;
}

impl CommitResponse for ResponseKind {
    fn into_ok_commit(self) -> i16 {
        let ResponseKind::OffsetCommit(r) = self else {
            panic!("not an OffsetCommit response")
        };
        r.topics[0].partitions[0].error_code
    }
}
