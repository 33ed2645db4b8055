//! Why a group request failed, and the one mapping from those reasons to Kafka error codes.

use kafka_protocol::error::ResponseError;
use streamhouse_metadata::MetadataError;
use thiserror::Error;

use crate::errors::metadata_error_code;

/// A group coordination or offset request the coordinator refused.
#[derive(Debug, Error)]
pub(crate) enum GroupError {
    #[error("group id must not be empty")]
    InvalidGroupId,
    /// The requester's ACLs do not allow the operation on the group.
    #[error("not authorized to access group {0}")]
    AuthorizationFailed(String),
    /// Another agent coordinates the group; the client asks FindCoordinator again.
    #[error("this agent does not coordinate group {0}")]
    NotCoordinator(String),
    #[error("group {group} is being deleted or unloaded")]
    CoordinatorNotAvailable { group: String },
    #[error("member {member} is not part of group {group}")]
    UnknownMember { group: String, member: String },
    #[error("generation {got} of group {group} is stale (current {current})")]
    IllegalGeneration {
        group: String,
        got: i32,
        current: i32,
    },
    #[error("group {group} is rebalancing")]
    RebalanceInProgress { group: String },
    #[error("protocols of the joining member are incompatible with group {group}")]
    InconsistentProtocol { group: String },
    #[error("session timeout {0} ms is not positive")]
    InvalidSessionTimeout(i32),
    /// The client must rejoin with the member id it is given (JoinGroup v4+).
    #[error("group {group} requires a member id; rejoin as {member}")]
    MemberIdRequired { group: String, member: String },
    #[error("instance {instance} of group {group} is now member {current}, not {member}")]
    FencedInstance {
        group: String,
        instance: String,
        member: String,
        current: String,
    },
    #[error("group {0} does not exist")]
    GroupNotFound(String),
    #[error("group {0} still has members")]
    NonEmptyGroup(String),
    #[error("group {group} is subscribed to topic {topic}")]
    SubscribedToTopic { group: String, topic: String },
    #[error("topic {topic} has no partition {partition}")]
    UnknownPartition { topic: String, partition: i32 },
    #[error("offset metadata of {len} bytes exceeds {max} bytes")]
    MetadataTooLarge { len: usize, max: usize },
    /// A consumer-protocol heartbeat at an epoch the member is not at (KIP-848): it must drop
    /// its partitions and rejoin.
    #[error("member {member} of group {group} is at epoch {current}, not {got}")]
    FencedMemberEpoch {
        group: String,
        member: String,
        got: i32,
        current: i32,
    },
    /// An offset commit at a member epoch that moved on (KIP-848): retry with the new one.
    #[error("member epoch {got} of group {group} is stale (current {current})")]
    StaleMemberEpoch {
        group: String,
        got: i32,
        current: i32,
    },
    #[error("instance {instance} of group {group} is still member {member}")]
    UnreleasedInstance {
        group: String,
        instance: String,
        member: String,
    },
    #[error("assignor {0} is not served (uniform, range)")]
    UnsupportedAssignor(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("metadata store: {0}")]
    Metadata(#[from] MetadataError),
}

impl GroupError {
    /// The Kafka error code a client acts on for this failure.
    pub(crate) fn code(&self) -> ResponseError {
        match self {
            Self::InvalidGroupId => ResponseError::InvalidGroupId,
            Self::AuthorizationFailed(_) => ResponseError::GroupAuthorizationFailed,
            Self::NotCoordinator(_) => ResponseError::NotCoordinator,
            Self::CoordinatorNotAvailable { .. } => ResponseError::CoordinatorNotAvailable,
            Self::UnknownMember { .. } => ResponseError::UnknownMemberId,
            Self::IllegalGeneration { .. } => ResponseError::IllegalGeneration,
            Self::RebalanceInProgress { .. } => ResponseError::RebalanceInProgress,
            Self::InconsistentProtocol { .. } => ResponseError::InconsistentGroupProtocol,
            Self::InvalidSessionTimeout(_) => ResponseError::InvalidSessionTimeout,
            Self::MemberIdRequired { .. } => ResponseError::MemberIdRequired,
            Self::FencedInstance { .. } => ResponseError::FencedInstanceId,
            Self::GroupNotFound(_) => ResponseError::GroupIdNotFound,
            Self::NonEmptyGroup(_) => ResponseError::NonEmptyGroup,
            Self::SubscribedToTopic { .. } => ResponseError::GroupSubscribedToTopic,
            Self::UnknownPartition { .. } => ResponseError::UnknownTopicOrPartition,
            Self::MetadataTooLarge { .. } => ResponseError::OffsetMetadataTooLarge,
            Self::FencedMemberEpoch { .. } => ResponseError::FencedMemberEpoch,
            Self::StaleMemberEpoch { .. } => ResponseError::StaleMemberEpoch,
            Self::UnreleasedInstance { .. } => ResponseError::UnreleasedInstanceId,
            Self::UnsupportedAssignor(_) => ResponseError::UnsupportedAssignor,
            Self::InvalidRequest(_) => ResponseError::InvalidRequest,
            Self::Metadata(e) => metadata_error_code(e),
        }
    }
}
