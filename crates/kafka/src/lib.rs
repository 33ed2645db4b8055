//! The Kafka wire protocol for StreamHouse agents.
//!
//! [`serve`] accepts Kafka client connections and answers them from a [`Broker`], which holds
//! the partitions this agent has open. Frames are decoded by `streamhouse-protocol`, which
//! refuses any version outside its one served-versions table (the one ApiVersions advertises). A
//! malformed frame closes that connection with a log line; it never affects other connections or
//! the process.

#![warn(missing_docs)]

mod acl_api;
mod admin_api;
mod agent;
mod api_error;
mod broker;
mod client_api;
mod cluster;
mod config;
mod connection;
mod errors;
mod fetch_frame;
mod frame;
mod groups;
mod groups_api;
mod handlers;
mod limits;
mod maintenance;
mod membership;
mod partitions;
pub mod security;
mod supervisor;
mod topic_config;
mod topics;
mod txn;

pub use acl_api::Acls;
pub use admin_api::{
    Admin, AgentStatus, PartitionDescription, SegmentIndexStats, TopicDescription, TopicSummary,
};
pub use api_error::ApiError;
pub use broker::Broker;
pub use client_api::{Consumed, ConsumedRecord, ProduceRecord, ProducedRecord};
pub use config::{BrokerConfig, MaintenanceConfig};
pub use connection::{serve, serve_secured};
pub use groups::PartitionLag;
pub use groups_api::{GroupDetails, GroupMember, GroupOffset, GroupSummary, OffsetReset};
pub use limits::{default_max_connections, ConnectionCounter, ConnectionSlot, Limits};
pub use maintenance::Maintenance;
pub use membership::Assignment;
pub use supervisor::TaskFailure;
pub use topic_config::ConfigChange;
pub use topics::MAX_PARTITIONS;
