//! One member of a classic consumer group and the protocols it supports.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::ConsumerProtocolSubscription;
use kafka_protocol::protocol::Decodable;
use tokio::sync::oneshot;

use super::{JoinResult, SyncResult};

/// An assignor (protocol) a member supports, with its opaque metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Protocol {
    pub(crate) name: String,
    pub(crate) metadata: Bytes,
}

/// Who a member is and how it joined, as given in its JoinGroup.
#[derive(Debug, Clone)]
pub(crate) struct MemberInfo {
    pub(crate) group_instance_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    pub(crate) session_timeout: Duration,
    pub(crate) rebalance_timeout: Duration,
    /// In the member's order of preference.
    pub(crate) protocols: Vec<Protocol>,
}

/// A member's live state in the coordinator.
pub(super) struct Member {
    pub(super) id: String,
    pub(super) info: MemberInfo,
    /// Join order; the earliest surviving member leads.
    pub(super) seq: u64,
    pub(super) assignment: Bytes,
    pub(super) last_seen: Instant,
    /// Set while the member waits for the current rebalance's join phase to finish.
    pub(super) join_waiter: Option<oneshot::Sender<JoinResult>>,
    /// Set while the member waits for the leader's assignment.
    pub(super) sync_waiter: Option<oneshot::Sender<SyncResult>>,
}

impl Member {
    pub(super) fn new(id: String, info: MemberInfo, seq: u64, now: Instant) -> Self {
        Self {
            id,
            info,
            seq,
            assignment: Bytes::new(),
            last_seen: now,
            join_waiter: None,
            sync_waiter: None,
        }
    }

    pub(super) fn supports(&self, protocol: &str) -> bool {
        self.info.protocols.iter().any(|p| p.name == protocol)
    }

    pub(super) fn metadata_for(&self, protocol: &str) -> Bytes {
        self.info
            .protocols
            .iter()
            .find(|p| p.name == protocol)
            .map(|p| p.metadata.clone())
            .unwrap_or_default()
    }

    /// Members waiting in a join or sync are alive even without heartbeats.
    pub(super) fn session_expired(&self, now: Instant) -> bool {
        self.join_waiter.is_none()
            && self.sync_waiter.is_none()
            && now.duration_since(self.last_seen) > self.info.session_timeout
    }
}

/// The protocol every member supports that most members prefer (each votes for its own most
/// preferred candidate), ties going to the earliest member's preference, as Kafka does.
pub(super) fn select_protocol<'a>(members: &[&'a Member]) -> Option<&'a str> {
    let first = members.first()?;
    let candidates: Vec<&str> = first
        .info
        .protocols
        .iter()
        .map(|p| p.name.as_str())
        .filter(|name| members.iter().all(|m| m.supports(name)))
        .collect();
    let votes: Vec<&str> = members
        .iter()
        .filter_map(|m: &&'a Member| {
            m.info
                .protocols
                .iter()
                .map(|p| p.name.as_str())
                .find(|name| candidates.contains(name))
        })
        .collect();
    let count = |name: &&&str| votes.iter().filter(|v| **v == **name).count();
    // max_by_key keeps the last maximum; iterate in reverse so the earliest candidate wins ties.
    candidates.iter().rev().max_by_key(count).copied()
}

/// Topics named in a consumer-protocol subscription, or `None` when the metadata is not one.
pub(super) fn subscribed_topics(metadata: &Bytes) -> Option<HashSet<String>> {
    let mut buf = metadata.clone();
    if buf.len() < 2 {
        return None;
    }
    let version = i16::from_be_bytes([buf[0], buf[1]]);
    let _ = bytes::Buf::get_i16(&mut buf);
    // Newer versions only append fields, so decoding as the newest known version reads the topics.
    let known = version.clamp(0, 3);
    let subscription = ConsumerProtocolSubscription::decode(&mut buf, known).ok()?;
    Some(
        subscription
            .topics
            .into_iter()
            .map(|t| t.to_string())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(seq: u64, protocols: &[&str]) -> Member {
        let info = MemberInfo {
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "h".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(10),
            protocols: protocols
                .iter()
                .map(|n| Protocol {
                    name: n.to_string(),
                    metadata: Bytes::new(),
                })
                .collect(),
        };
        Member::new(format!("m{seq}"), info, seq, Instant::now())
    }

    #[test]
    fn protocol_is_the_most_voted_common_one() {
        let a = member(0, &["range", "roundrobin"]);
        let b = member(1, &["roundrobin", "range"]);
        let c = member(2, &["roundrobin", "sticky", "range"]);
        assert_eq!(select_protocol(&[&a, &b, &c]), Some("roundrobin"));
        assert_eq!(select_protocol(&[&a, &b]), Some("range"));
        let d = member(3, &["sticky"]);
        assert_eq!(select_protocol(&[&a, &d]), None);
    }

    #[test]
    fn subscription_topics_are_decoded() {
        use kafka_protocol::protocol::{Encodable, StrBytes};
        let sub = ConsumerProtocolSubscription::default().with_topics(vec![
            StrBytes::from_static_str("a"),
            StrBytes::from_static_str("b"),
        ]);
        let mut buf = bytes::BytesMut::new();
        buf.extend_from_slice(&1i16.to_be_bytes());
        sub.encode(&mut buf, 1).unwrap();
        let topics = subscribed_topics(&buf.freeze()).unwrap();
        assert_eq!(topics, HashSet::from(["a".to_string(), "b".to_string()]));
        assert_eq!(subscribed_topics(&Bytes::from_static(b"x")), None);
    }
}
