//! The coordinator's vocabulary: group states and the decoded requests and answers that pass
//! between the wire handlers and the group state machine.

use bytes::Bytes;
use tokio::sync::oneshot;

use super::member::MemberInfo;
use super::GroupError;

/// Kafka's group states: the classic protocol's, and the consumer protocol's (KIP-848) two
/// more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupState {
    /// No members; the group may still have committed offsets.
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Joined; waiting for the leader's assignment.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
    /// Being deleted.
    Dead,
    /// Consumer protocol: the target assignment is behind the group epoch.
    Assigning,
    /// Consumer protocol: members are on their way to their target assignment.
    Reconciling,
}

impl GroupState {
    /// The name Kafka uses in ListGroups and DescribeGroups.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::PreparingRebalance => "PreparingRebalance",
            Self::CompletingRebalance => "CompletingRebalance",
            Self::Stable => "Stable",
            Self::Dead => "Dead",
            Self::Assigning => "Assigning",
            Self::Reconciling => "Reconciling",
        }
    }
}

/// A JoinGroup, decoded.
pub(crate) struct JoinRequest {
    /// Empty on a member's first join.
    pub(crate) member_id: String,
    pub(crate) protocol_type: String,
    pub(crate) info: MemberInfo,
    /// JoinGroup v4+: a first join is answered MEMBER_ID_REQUIRED with an id to rejoin with.
    pub(crate) require_known_member_id: bool,
}

/// What a member learns when the join phase completes.
#[derive(Debug, Clone)]
pub(crate) struct JoinResponse {
    pub(crate) generation_id: i32,
    pub(crate) protocol_type: Option<String>,
    pub(crate) protocol_name: Option<String>,
    pub(crate) leader: String,
    pub(crate) member_id: String,
    /// Every member's metadata for the chosen protocol; for the leader only.
    pub(crate) members: Vec<JoinedMember>,
    /// A static leader rejoined without a rebalance: it must not compute a new assignment.
    pub(crate) skip_assignment: bool,
}

/// A member as the leader sees it in its JoinGroup response.
#[derive(Debug, Clone)]
pub(crate) struct JoinedMember {
    pub(crate) member_id: String,
    pub(crate) group_instance_id: Option<String>,
    pub(crate) metadata: Bytes,
}

/// A SyncGroup, decoded.
pub(crate) struct SyncRequest {
    pub(crate) member_id: String,
    pub(crate) group_instance_id: Option<String>,
    pub(crate) generation_id: i32,
    /// SyncGroup v5+: checked against the group's when given.
    pub(crate) protocol_type: Option<String>,
    pub(crate) protocol_name: Option<String>,
    /// From the leader: each member's assignment.
    pub(crate) assignments: Vec<(String, Bytes)>,
}

/// A member's assignment for the current generation.
#[derive(Debug, Clone)]
pub(crate) struct SyncResponse {
    pub(crate) protocol_type: Option<String>,
    pub(crate) protocol_name: Option<String>,
    pub(crate) assignment: Bytes,
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub(crate) struct GroupDescription {
    pub(crate) state: GroupState,
    pub(crate) protocol_type: String,
    /// The chosen protocol while Stable, else empty (as Kafka); the server-side assignor of a
    /// consumer-protocol group.
    pub(crate) protocol: String,
    pub(crate) members: Vec<MemberDescription>,
    /// A consumer-protocol (KIP-848) group: no member metadata or assignment bytes, and
    /// DescribeGroups answers GROUP_ID_NOT_FOUND for it (ConsumerGroupDescribe describes it).
    pub(crate) consumer_protocol: bool,
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub(crate) struct MemberDescription {
    pub(crate) member_id: String,
    pub(crate) group_instance_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    pub(crate) metadata: Bytes,
    pub(crate) assignment: Bytes,
}

/// An answer now, or one that arrives when a rebalance phase completes.
pub(crate) enum Pending<T> {
    Ready(Result<T, GroupError>),
    Waiting(oneshot::Receiver<Result<T, GroupError>>),
}
