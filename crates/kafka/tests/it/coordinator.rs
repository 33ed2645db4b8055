//! A consumer group whose coordinator moves between agents mid-rebalance while its members
//! commit: group coordinator leases keep one coordinator at a time, generations continue
//! across the move, and offset commits of a former coordinator are fenced at the store.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    DeleteGroupsRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest,
    OffsetCommitRequest, OffsetDeleteRequest, OffsetFetchRequest, RequestKind, ResponseKind,
    SyncGroupRequest, TopicName,
};
use streamhouse_kafka::{ApiError, Assignment, Broker};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cluster::{agent_info, s, Cluster};
use crate::harness::Client;

const TOPIC: &str = "moving";
const PARTITIONS: u32 = 6;
const LEASE_TTL: Duration = Duration::from_millis(1_500);
/// How long members commit between the steps of the test.
const STEP: Duration = Duration::from_secs(3);

/// One agent with its Kafka listener.
struct Agent {
    broker: Arc<Broker>,
    addr: SocketAddr,
}

async fn start_agent(cluster: &Cluster, node_id: i32) -> Agent {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let broker = cluster.agent_on_port(node_id, addr.port());
    tokio::spawn(streamhouse_kafka::serve(listener, broker.clone()));
    Agent { broker, addr }
}

/// Agents 0..`N` with [`TOPIC`] created.
async fn agents_with_topic<const N: usize>(cluster: &Cluster) -> [Agent; N] {
    let mut agents = Vec::with_capacity(N);
    for node_id in 0..N {
        agents.push(start_agent(cluster, node_id as i32).await);
    }
    agents[0]
        .broker
        .admin()
        .create_topic(TOPIC, Some(PARTITIONS), &BTreeMap::new())
        .await
        .unwrap();
    agents.try_into().ok().expect("N agents")
}

/// What the members saw, for the checks at the end.
#[derive(Default)]
struct Log {
    /// (generation, member id, partitions) of every assignment a SyncGroup delivered.
    assignments: Vec<(i32, String, Vec<u32>)>,
    /// (coordinator node, generation, member id) of every successful JoinGroup, in order.
    generations: Vec<(i32, i32, String)>,
    /// Commits acknowledged, per partition.
    commits: u64,
}

/// A consumer as Kafka's clients behave: find the coordinator, join, sync (the leader assigns
/// partitions round-robin), then heartbeat and commit increasing offsets from the committed
/// one, starting over on whatever error tells it to.
struct Member {
    group: String,
    bootstrap: Vec<SocketAddr>,
    clients: HashMap<SocketAddr, Client>,
    coordinator: Option<(i32, SocketAddr)>,
    id: String,
    generation: i32,
    log: Arc<Mutex<Log>>,
}

/// Where a member goes next after an error.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    Rediscover,
    Rejoin,
}

fn next_after(code: i16) -> Next {
    let is = |e: ResponseError| code == e.code();
    if is(ResponseError::NotCoordinator) || is(ResponseError::CoordinatorNotAvailable) {
        Next::Rediscover
    } else {
        Next::Rejoin
    }
}

impl Member {
    /// A member of `group` not joined yet, finding its coordinator through `bootstrap`.
    fn new(group: &str, bootstrap: Vec<SocketAddr>, log: Arc<Mutex<Log>>) -> Self {
        Self {
            group: group.to_owned(),
            bootstrap,
            clients: HashMap::new(),
            coordinator: None,
            id: String::new(),
            generation: -1,
            log,
        }
    }

    /// Finds the coordinator and joins until assigned (a fresh group: alone, so everything).
    async fn join_until_assigned(&mut self) -> Vec<u32> {
        for turn in 0..50 {
            if self.coordinator.is_none() {
                self.discover(turn).await;
            }
            if let Some(partitions) = self.join_and_sync().await {
                return partitions;
            }
        }
        panic!("{} not assigned after 50 tries", self.group)
    }

    async fn client(&mut self, addr: SocketAddr) -> &mut Client {
        if let std::collections::hash_map::Entry::Vacant(e) = self.clients.entry(addr) {
            e.insert(Client::connect(addr).await);
        }
        self.clients.get_mut(&addr).unwrap()
    }

    async fn send(&mut self, request: RequestKind, version: i16) -> Option<ResponseKind> {
        let (_, addr) = self.coordinator?;
        Some(self.client(addr).await.send(request, version).await)
    }

    /// Runs until `stop` turns true, leaving the group then.
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut turn = 0;
        while !*stop.borrow() {
            turn += 1;
            if self.coordinator.is_none() {
                self.discover(turn).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            let Some(partitions) = self.join_and_sync().await else {
                continue;
            };
            self.consume(&partitions, &mut stop).await;
        }
    }

    async fn discover(&mut self, turn: usize) {
        let addr = self.bootstrap[turn % self.bootstrap.len()];
        let request = FindCoordinatorRequest::default().with_coordinator_keys(vec![s(&self.group)]);
        let client = self.client(addr).await;
        let ResponseKind::FindCoordinator(r) =
            client.send(RequestKind::FindCoordinator(request), 4).await
        else {
            panic!("not a FindCoordinator response")
        };
        let c = &r.coordinators[0];
        if c.error_code == 0 && c.node_id.0 >= 0 {
            let port = u16::try_from(c.port).unwrap();
            self.coordinator = Some((c.node_id.0, SocketAddr::from(([127, 0, 0, 1], port))));
        }
    }

    fn on_error(&mut self, code: i16) {
        if code == ResponseError::UnknownMemberId.code() {
            self.id.clear();
        }
        if let Next::Rediscover = next_after(code) {
            self.coordinator = None;
        }
    }

    /// Joins and syncs; the partitions assigned, or `None` after an error (already handled).
    async fn join_and_sync(&mut self) -> Option<Vec<u32>> {
        let protocol = JoinGroupRequestProtocol::default()
            .with_name(s("round-robin"))
            .with_metadata(Bytes::from_static(b"moving"));
        let join = JoinGroupRequest::default()
            .with_group_id(GroupId(s(&self.group)))
            .with_session_timeout_ms(6_000)
            .with_rebalance_timeout_ms(4_000)
            .with_member_id(s(&self.id))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![protocol]);
        let Some(ResponseKind::JoinGroup(r)) = self.send(RequestKind::JoinGroup(join), 5).await
        else {
            return None;
        };
        if !r.member_id.is_empty() {
            self.id = r.member_id.to_string();
        }
        if r.error_code != 0 {
            self.on_error(r.error_code);
            return None;
        }
        self.generation = r.generation_id;
        let node = self.coordinator.map(|(node, _)| node).unwrap_or(-1);
        self.log
            .lock()
            .unwrap()
            .generations
            .push((node, r.generation_id, self.id.clone()));
        let members: Vec<String> = r.members.iter().map(|m| m.member_id.to_string()).collect();
        let assignments = round_robin(&members);
        let sync = SyncGroupRequest::default()
            .with_group_id(GroupId(s(&self.group)))
            .with_generation_id(self.generation)
            .with_member_id(s(&self.id))
            .with_assignments(assignments);
        let Some(ResponseKind::SyncGroup(r)) = self.send(RequestKind::SyncGroup(sync), 3).await
        else {
            return None;
        };
        if r.error_code != 0 {
            self.on_error(r.error_code);
            return None;
        }
        let partitions = decode(&r.assignment);
        let entry = (self.generation, self.id.clone(), partitions.clone());
        self.log.lock().unwrap().assignments.push(entry);
        Some(partitions)
    }

    /// Heartbeats and commits from the committed offsets on, until an error or `stop`.
    async fn consume(&mut self, partitions: &[u32], stop: &mut watch::Receiver<bool>) {
        let Some(mut next) = self.committed(partitions).await else {
            return;
        };
        while !*stop.borrow() {
            let heartbeat = HeartbeatRequest::default()
                .with_group_id(GroupId(s(&self.group)))
                .with_generation_id(self.generation)
                .with_member_id(s(&self.id));
            let Some(ResponseKind::Heartbeat(r)) =
                self.send(RequestKind::Heartbeat(heartbeat), 3).await
            else {
                return;
            };
            if r.error_code != 0 {
                return self.on_error(r.error_code);
            }
            for offset in next.values_mut() {
                *offset += 1;
            }
            if let Err(code) = self.commit(&next).await {
                return self.on_error(code);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The committed offset of each partition (0 where none), or `None` after an error.
    async fn committed(&mut self, partitions: &[u32]) -> Option<BTreeMap<u32, i64>> {
        let topic = OffsetFetchRequestTopic::default()
            .with_name(TopicName(s(TOPIC)))
            .with_partition_indexes(partitions.iter().map(|&p| p as i32).collect());
        let fetch = OffsetFetchRequest::default()
            .with_group_id(GroupId(s(&self.group)))
            .with_topics(Some(vec![topic]));
        let Some(ResponseKind::OffsetFetch(r)) =
            self.send(RequestKind::OffsetFetch(fetch), 5).await
        else {
            return None;
        };
        if r.error_code != 0 {
            self.on_error(r.error_code);
            return None;
        }
        let fetched = r.topics.iter().flat_map(|t| &t.partitions);
        Some(
            fetched
                .map(|p| (p.partition_index as u32, p.committed_offset.max(0)))
                .collect(),
        )
    }

    async fn commit(&mut self, offsets: &BTreeMap<u32, i64>) -> Result<(), i16> {
        let partitions = offsets
            .iter()
            .map(|(&p, &offset)| {
                OffsetCommitRequestPartition::default()
                    .with_partition_index(p as i32)
                    .with_committed_offset(offset)
            })
            .collect();
        let commit = OffsetCommitRequest::default()
            .with_group_id(GroupId(s(&self.group)))
            .with_generation_id_or_member_epoch(self.generation)
            .with_member_id(s(&self.id))
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(s(TOPIC)))
                .with_partitions(partitions)]);
        let Some(ResponseKind::OffsetCommit(r)) =
            self.send(RequestKind::OffsetCommit(commit), 5).await
        else {
            return Err(ResponseError::NotCoordinator.code());
        };
        let codes = r.topics.iter().flat_map(|t| &t.partitions);
        match codes.map(|p| p.error_code).find(|&code| code != 0) {
            Some(code) => Err(code),
            None => {
                self.log.lock().unwrap().commits += offsets.len() as u64;
                Ok(())
            }
        }
    }
}

/// The leader's assignment: partition p to the (p mod n)-th member, as text.
fn round_robin(members: &[String]) -> Vec<SyncGroupRequestAssignment> {
    members
        .iter()
        .enumerate()
        .map(|(i, member)| {
            let mine: Vec<String> = (0..PARTITIONS)
                .filter(|p| *p as usize % members.len() == i)
                .map(|p| p.to_string())
                .collect();
            SyncGroupRequestAssignment::default()
                .with_member_id(s(member))
                .with_assignment(Bytes::from(mine.join(",")))
        })
        .collect()
}

fn decode(assignment: &Bytes) -> Vec<u32> {
    let text = std::str::from_utf8(assignment).unwrap();
    text.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().unwrap())
        .collect()
}

/// A group name the assignment over nodes 0..=2 gives to node 2, and over 0..=1 to another.
fn group_coordinated_by_node_2() -> String {
    let three = Assignment::new((0..3).map(agent_info));
    (0..)
        .map(|i| format!("movers-{i}"))
        .find(|g| three.coordinator(g).is_some_and(|a| a.node_id == 2))
        .unwrap()
}

/// Polls the stored offsets until `stop`; fails on any partition's offset going down.
async fn watch_offsets(
    cluster: Arc<Cluster>,
    group: String,
    mut stop: watch::Receiver<bool>,
) -> usize {
    let mut highest: BTreeMap<u32, i64> = BTreeMap::new();
    let mut reads = 0;
    while !*stop.borrow_and_update() {
        for o in cluster.metadata.fetch_offsets(&group, None).await.unwrap() {
            let before = highest.insert(o.partition, o.offset).unwrap_or(-1);
            assert!(
                o.offset >= before,
                "partition {}'s committed offset went back from {before} to {}",
                o.partition,
                o.offset
            );
        }
        reads += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    reads
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_coordinator_moves_mid_rebalance_while_members_commit() {
    let cluster = Arc::new(Cluster::new(LEASE_TTL).await);
    let first: [Agent; 2] = agents_with_topic(&cluster).await;
    let group = group_coordinated_by_node_2();
    let log = Arc::new(Mutex::new(Log::default()));
    let (stop_tx, stop) = watch::channel(false);
    let watcher = tokio::spawn(watch_offsets(cluster.clone(), group.clone(), stop.clone()));
    let bootstrap: Vec<SocketAddr> = first.iter().map(|a| a.addr).collect();
    let member = |bootstrap: Vec<SocketAddr>| Member::new(&group, bootstrap, log.clone());
    let mut members: Vec<_> = (0..3)
        .map(|_| tokio::spawn(member(bootstrap.clone()).run(stop.clone())))
        .collect();
    tokio::time::sleep(STEP).await;

    // A fourth member starts a rebalance as node 2, the group's rendezvous coordinator among
    // three agents, joins: the group moves to it in the middle of the rebalance.
    members.push(tokio::spawn(member(bootstrap.clone()).run(stop.clone())));
    let third = start_agent(&cluster, 2).await;
    tokio::time::sleep(STEP).await;
    // And back, while everyone commits: node 2 leaves.
    third.broker.shutdown().await;
    tokio::time::sleep(STEP).await;

    stop_tx.send(true).unwrap();
    for m in members {
        m.await.unwrap();
    }
    let reads = watcher.await.unwrap();
    let log = log.lock().unwrap();
    println!(
        "{} assignments, {} commits, {reads} offset reads; (coordinator, generation) of joins: {:?}",
        log.assignments.len(),
        log.commits,
        log.generations
    );
    check_assignments(&log.assignments);
    let coordinators = check_generations(&log.generations);
    assert!(
        coordinators.contains(&2) && coordinators.len() >= 2,
        "the group moved to node 2 and away again: {:?}",
        log.generations
    );
    assert!(
        log.commits > 100 && reads > 100,
        "{} commits, {reads} reads",
        log.commits
    );
}

/// No partition is assigned twice within a generation.
fn check_assignments(assignments: &[(i32, String, Vec<u32>)]) {
    let mut owners: BTreeMap<(i32, u32), &str> = BTreeMap::new();
    for (generation, member, partitions) in assignments {
        for &p in partitions {
            if let Some(other) = owners.insert((*generation, p), member) {
                assert_eq!(
                    other, member,
                    "partition {p} assigned to two members in generation {generation}"
                );
            }
        }
    }
}

/// A coordinator whose lease was taken behind its back commits nothing more: the store refuses
/// the commit (its epoch is stale), the coordinator drops the group and answers
/// NOT_COORDINATOR; once it holds the lease again, the group continues at a later generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_whose_lease_was_taken_drops_the_group() {
    let cluster = Arc::new(Cluster::new(LEASE_TTL).await);
    let [agent]: [Agent; 1] = agents_with_topic(&cluster).await;
    let log = Arc::new(Mutex::new(Log::default()));
    let mut member = Member::new("taken", vec![agent.addr], log.clone());
    let partitions = member.join_until_assigned().await;
    assert_eq!(partitions.len(), PARTITIONS as usize);
    let first_generation = member.generation;
    member.commit(&BTreeMap::from([(0, 5)])).await.unwrap();

    // Taken: released behind the agent's back and leased by another holder.
    let metadata = &cluster.metadata;
    let lease = metadata.list_group_leases().await.unwrap().remove(0);
    metadata
        .release_group_lease("taken", &lease.fence())
        .await
        .unwrap();
    let thief = metadata.acquire_group_lease("taken", "thief", 60_000).await;
    let thief = thief.unwrap().expect("a released lease is free");
    let refused = member.commit(&BTreeMap::from([(0, 9)])).await;
    assert_eq!(refused, Err(ResponseError::NotCoordinator.code()));
    let stored = metadata.fetch_offsets("taken", None).await.unwrap();
    assert_eq!(stored[0].offset, 5, "the fenced commit stored nothing");
    member.coordinator = Some((0, agent.addr));
    let rejoin = member.join_and_sync().await;
    assert!(
        rejoin.is_none(),
        "the agent answers NOT_COORDINATOR while another holds it"
    );

    // Given back: the agent takes the lease again and the member rejoins as a new member of a
    // later generation (the old membership was dropped with the lease).
    metadata
        .release_group_lease("taken", &thief.fence())
        .await
        .unwrap();
    member.coordinator = Some((0, agent.addr));
    let mut again = None;
    for _ in 0..50 {
        again = member.join_and_sync().await;
        if again.is_some() {
            break;
        }
        member.coordinator = Some((0, agent.addr));
    }
    assert!(again.is_some(), "the member rejoined");
    assert!(
        member.generation > first_generation,
        "{} after {first_generation}",
        member.generation
    );
    member.commit(&BTreeMap::from([(0, 9)])).await.unwrap();
}

/// A stable group outlives its coordinator: the next one restores the membership stored
/// under the lease, so the member's heartbeats and commits of its generation go on at the new
/// coordinator without a rejoin (as Kafka's coordinator loads a group from __consumer_offsets).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stable_group_keeps_its_members_when_its_coordinator_moves() {
    let cluster = Arc::new(Cluster::new(LEASE_TTL).await);
    let [first, second]: [Agent; 2] = agents_with_topic(&cluster).await;
    let two = Assignment::new((0..2).map(agent_info));
    let group = (0..)
        .map(|i| format!("stays-{i}"))
        .find(|g| two.coordinator(g).is_some_and(|a| a.node_id == 1))
        .unwrap();
    let log = Arc::new(Mutex::new(Log::default()));
    let mut member = Member::new(&group, vec![first.addr], log);
    let partitions = member.join_until_assigned().await;
    assert_eq!(partitions.len(), PARTITIONS as usize);
    assert_eq!(member.coordinator.map(|(node, _)| node), Some(1));
    let (id, generation) = (member.id.clone(), member.generation);
    member.commit(&BTreeMap::from([(0, 5)])).await.unwrap();

    second.broker.shutdown().await;
    let mut beat = None;
    for turn in 0..100 {
        member.coordinator = None;
        member.discover(turn).await;
        if member.coordinator.map(|(node, _)| node) != Some(0) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let heartbeat = HeartbeatRequest::default()
            .with_group_id(GroupId(s(&group)))
            .with_generation_id(generation)
            .with_member_id(s(&id));
        let Some(ResponseKind::Heartbeat(r)) =
            member.send(RequestKind::Heartbeat(heartbeat), 3).await
        else {
            panic!("not a Heartbeat response")
        };
        beat = Some(r.error_code);
        if next_after(r.error_code) == Next::Rejoin {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(beat, Some(0), "the member's session goes on at node 0");
    assert_eq!(
        (member.id.as_str(), member.generation),
        (id.as_str(), generation)
    );
    member.commit(&BTreeMap::from([(0, 9)])).await.unwrap();
    let stored = cluster.metadata.fetch_offsets(&group, None).await.unwrap();
    assert_eq!(stored[0].offset, 9, "committed under the same generation");
}

/// Every generation is handed out by one coordinator, and a coordinator taking over continues
/// after the generations before it: either the stable group it restored (the same generation,
/// answered only to members that generation's first coordinator had) or a later generation
/// (none starts again at 1 with new members). Returns the coordinators that answered joins.
fn check_generations(generations: &[(i32, i32, String)]) -> BTreeSet<i32> {
    let mut first_node: BTreeMap<i32, i32> = BTreeMap::new();
    let mut members: BTreeMap<i32, BTreeSet<&str>> = BTreeMap::new();
    for (node, generation, member) in generations {
        let first = *first_node.entry(*generation).or_insert(*node);
        let known = members.entry(*generation).or_default();
        if first == *node {
            known.insert(member);
        } else {
            assert!(
                known.contains(member.as_str()),
                "generation {generation} started by node {first} was answered by node {node} \
                 to {member}, not a member of it: {generations:?}"
            );
        }
    }
    let mut seen_max = 0;
    for (node, generation, _) in generations {
        if first_node[generation] == *node && *generation < seen_max {
            panic!("node {node} started generation {generation} after {seen_max}: {generations:?}");
        }
        seen_max = seen_max.max(*generation);
    }
    generations.iter().map(|(node, _, _)| *node).collect()
}

/// Operator changes to a group (the admin API's offset reset and deletion; Kafka's DeleteGroups,
/// OffsetDelete and a standalone OffsetCommit, as `kafka-consumer-groups --reset-offsets`
/// sends) are made only by the group's coordinator, under its lease: another agent answers
/// NOT_COORDINATOR and names the coordinator, and a coordinator whose lease was taken behind
/// its back stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_to_a_group_are_made_only_under_its_lease() {
    let cluster = Arc::new(Cluster::new(LEASE_TTL).await);
    let agents = [
        start_agent(&cluster, 0).await,
        start_agent(&cluster, 1).await,
    ];
    let no_configs = BTreeMap::new();
    let admin = |i: usize| agents[i].broker.admin();
    admin(0)
        .create_topic(TOPIC, Some(PARTITIONS), &no_configs)
        .await
        .unwrap();
    let two = Assignment::new((0..2).map(agent_info));
    let group = (0..)
        .map(|i| format!("operated-{i}"))
        .find(|g| two.coordinator(g).is_some_and(|a| a.node_id == 0))
        .unwrap();
    let mut other = Client::connect(agents[1].addr).await;
    crate::cluster::wait_for_brokers(&mut other, 2).await;
    crate::cluster::wait_for_brokers(&mut Client::connect(agents[0].addr).await, 2).await;
    let reset = [streamhouse_kafka::OffsetReset {
        topic: TOPIC.into(),
        partition: 0,
        offset: 0,
    }];

    // Agent 1 does not coordinate the group: every change is refused there.
    let refused = admin(1).reset_offsets(&group, &reset).await;
    assert!(
        matches!(&refused, Err(ApiError::NotCoordinator { message, .. }) if message.contains("agent 0")),
        "{refused:?}"
    );
    let refused = admin(1).delete_group(&group).await;
    assert!(
        matches!(refused, Err(ApiError::NotCoordinator { .. })),
        "{refused:?}"
    );
    let not_coordinator = ResponseError::NotCoordinator.code();
    assert_eq!(
        delete_groups_error(&mut other, &group).await,
        not_coordinator
    );
    assert_eq!(
        offset_delete_error(&mut other, &group).await,
        not_coordinator
    );
    assert_eq!(
        standalone_commit_error(&mut other, &group).await,
        not_coordinator
    );
    let stored = cluster.metadata.fetch_offsets(&group, None).await.unwrap();
    assert!(stored.is_empty(), "nothing stored: {stored:?}");

    // Agent 0 does, under its lease.
    admin(0).reset_offsets(&group, &reset).await.unwrap();
    let stored = cluster.metadata.fetch_offsets(&group, None).await.unwrap();
    assert_eq!(stored.len(), 1);

    // Its lease taken behind its back: the store refuses its writes.
    let metadata = &cluster.metadata;
    let lease = metadata.list_group_leases().await.unwrap().remove(0);
    assert_eq!(lease.group_id, group);
    metadata
        .release_group_lease(&group, &lease.fence())
        .await
        .unwrap();
    let thief = metadata.acquire_group_lease(&group, "thief", 60_000).await;
    thief.unwrap().expect("a released lease is free");
    let moved = [streamhouse_kafka::OffsetReset {
        offset: 0,
        partition: 1,
        ..reset[0].clone()
    }];
    let refused = admin(0).reset_offsets(&group, &moved).await;
    assert!(
        matches!(refused, Err(ApiError::NotCoordinator { .. })),
        "{refused:?}"
    );
    let refused = admin(0).delete_group(&group).await;
    assert!(
        matches!(refused, Err(ApiError::NotCoordinator { .. })),
        "{refused:?}"
    );
    let stored = cluster.metadata.fetch_offsets(&group, None).await.unwrap();
    assert_eq!(
        stored.len(),
        1,
        "the fenced reset and deletion changed nothing"
    );
}

async fn delete_groups_error(client: &mut Client, group: &str) -> i16 {
    let request = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(group))]);
    let ResponseKind::DeleteGroups(r) = client.send(RequestKind::DeleteGroups(request), 2).await
    else {
        panic!("not a DeleteGroups response")
    };
    r.results[0].error_code
}

async fn offset_delete_error(client: &mut Client, group: &str) -> i16 {
    let topic = OffsetDeleteRequestTopic::default()
        .with_name(TopicName(s(TOPIC)))
        .with_partitions(vec![
            OffsetDeleteRequestPartition::default().with_partition_index(0)
        ]);
    let request = OffsetDeleteRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_topics(vec![topic]);
    let ResponseKind::OffsetDelete(r) = client.send(RequestKind::OffsetDelete(request), 0).await
    else {
        panic!("not an OffsetDelete response")
    };
    r.error_code
}

/// The error of an OffsetCommit outside any generation (generation -1, no member).
async fn standalone_commit_error(client: &mut Client, group: &str) -> i16 {
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s(TOPIC)))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(0)])]);
    let ResponseKind::OffsetCommit(r) = client.send(RequestKind::OffsetCommit(commit), 8).await
    else {
        panic!("not an OffsetCommit response")
    };
    r.topics[0].partitions[0].error_code
}
