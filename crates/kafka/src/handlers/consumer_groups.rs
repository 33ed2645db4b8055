//! KIP-848's consumer group protocol: ConsumerGroupHeartbeat and ConsumerGroupDescribe,
//! translated to and from the group coordinator (`groups::consumer`). Assignments travel by
//! topic id; the topics a group may be assigned are those the requester may describe.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::consumer_group_describe_response::{
    self as describe, DescribedGroup, Member,
};
use kafka_protocol::messages::consumer_group_heartbeat_response::{self as heartbeat, Assignment};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::groups::{coordinating, Client};
use super::{str_bytes, topic_name};
use crate::broker::Broker;
use crate::groups::{ConsumerGroupDescription, ConsumerHeartbeat, GroupError, TopicImage};
use crate::security::{Access, Op, Resource};

/// Partitions by topic id, as assignments are exchanged.
type Partitions = BTreeMap<Uuid, BTreeSet<i32>>;

pub(crate) async fn heartbeat(
    b: &Broker,
    access: &Access,
    client: Client,
    req: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    let group_id = req.group_id.0.to_string();
    let interval = b.groups().consumer_heartbeat_interval();
    let beat = decode_heartbeat(req, client);
    let result = async {
        coordinating(b, access, Op::Read, &group_id).await?;
        let topics = topic_image(b, access).await?;
        b.groups()
            .consumer_heartbeat(&group_id, beat, &topics)
            .await
    }
    .await;
    match result {
        Ok(r) => ConsumerGroupHeartbeatResponse::default()
            .with_member_id(Some(str_bytes(&r.member_id)))
            .with_member_epoch(r.member_epoch)
            .with_heartbeat_interval_ms(interval.as_millis() as i32)
            .with_assignment(r.assignment.map(|a| {
                Assignment::default().with_topic_partitions(
                    a.into_iter()
                        .map(|(id, ps)| {
                            heartbeat::TopicPartitions::default()
                                .with_topic_id(id)
                                .with_partitions(ps.into_iter().collect())
                        })
                        .collect(),
                )
            })),
        Err(e) => ConsumerGroupHeartbeatResponse::default()
            .with_error_code(e.code().code())
            .with_error_message(Some(str_bytes(&e.to_string())))
            .with_member_epoch(-1),
    }
}

fn decode_heartbeat(req: ConsumerGroupHeartbeatRequest, client: Client) -> ConsumerHeartbeat {
    let text = |s: Option<StrBytes>| s.map(|s| s.to_string());
    ConsumerHeartbeat {
        member_id: req.member_id.to_string(),
        member_epoch: req.member_epoch,
        instance_id: text(req.instance_id),
        rack_id: text(req.rack_id),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        subscribed_topic_names: req
            .subscribed_topic_names
            .map(|names| names.into_iter().map(|n| n.0.to_string()).collect()),
        subscribed_topic_regex: text(req.subscribed_topic_regex),
        server_assignor: text(req.server_assignor),
        owned: req.topic_partitions.map(|tps| {
            let mut owned = Partitions::new();
            for tp in tps {
                owned.entry(tp.topic_id).or_default().extend(tp.partitions);
            }
            owned
        }),
        client_id: client.id,
        client_host: client.host,
    }
}

/// Every topic the requester may describe, by name, with its id and partition count.
async fn topic_image(b: &Broker, access: &Access) -> Result<TopicImage, GroupError> {
    let topics = b.catalog().list_topics().await?;
    Ok(topics
        .into_iter()
        .filter(|t| access.allows(Op::Describe, Resource::Topic, &t.name))
        .map(|t| (t.name, (t.id, t.partitions as i32)))
        .collect())
}

pub(crate) async fn describe(
    b: &Broker,
    access: &Access,
    req: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let names: BTreeMap<Uuid, String> = match b.catalog().list_topics().await {
        Ok(topics) => topics.into_iter().map(|t| (t.id, t.name)).collect(),
        Err(e) => {
            let code = GroupError::from(e).code().code();
            let groups = req.group_ids.into_iter().map(|id| {
                DescribedGroup::default()
                    .with_group_id(id)
                    .with_error_code(code)
            });
            return ConsumerGroupDescribeResponse::default().with_groups(groups.collect());
        }
    };
    let mut groups = Vec::with_capacity(req.group_ids.len());
    for group_id in req.group_ids {
        let id = group_id.0.to_string();
        let found = match coordinating(b, access, Op::Describe, &id).await {
            Ok(()) => b.groups().describe_consumer_group(&id),
            Err(e) => Err(e),
        };
        let out = DescribedGroup::default().with_group_id(group_id);
        groups.push(match found {
            Ok(d) => described(out, d, &names),
            Err(e) => out
                .with_error_code(e.code().code())
                .with_error_message(Some(str_bytes(&e.to_string()))),
        });
    }
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}

fn described(
    out: DescribedGroup,
    d: ConsumerGroupDescription,
    names: &BTreeMap<Uuid, String>,
) -> DescribedGroup {
    let assignment = |a: &Partitions| {
        describe::Assignment::default().with_topic_partitions(
            a.iter()
                .map(|(id, ps)| {
                    describe::TopicPartitions::default()
                        .with_topic_id(*id)
                        .with_topic_name(topic_name(names.get(id).map_or("", String::as_str)))
                        .with_partitions(ps.iter().copied().collect())
                })
                .collect(),
        )
    };
    let members = d.members.iter().map(|(m, target)| {
        Member::default()
            .with_member_id(str_bytes(&m.id))
            .with_instance_id(m.instance_id.as_deref().map(str_bytes))
            .with_rack_id(m.rack_id.as_deref().map(str_bytes))
            .with_member_epoch(m.epoch)
            .with_client_id(str_bytes(&m.client_id))
            .with_client_host(str_bytes(&m.client_host))
            .with_subscribed_topic_names(m.subscribed_names.iter().map(|n| topic_name(n)).collect())
            .with_subscribed_topic_regex(m.subscribed_regex.as_deref().map(str_bytes))
            .with_assignment(assignment(&m.assigned))
            .with_target_assignment(assignment(target))
            // 1: a member of the consumer protocol (0 would be a classic member).
            .with_member_type(1)
    });
    out.with_group_state(str_bytes(d.state.name()))
        .with_group_epoch(d.epoch)
        .with_assignment_epoch(d.assignment_epoch)
        .with_assignor_name(str_bytes(&d.assignor))
        .with_members(members.collect())
        // Kafka's "not requested" value for authorized operations.
        .with_authorized_operations(i32::MIN)
}
