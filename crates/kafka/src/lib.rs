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
mod api_error;
mod broker;
mod client_api;
mod cluster;
mod connection;
mod consolidation;
mod errors;
mod frame;
mod groups;
mod groups_api;
mod handlers;
mod limits;
mod retention;
pub mod security;
mod supervisor;
mod topic_config;
mod txn;

pub use acl_api::Acls;
pub use admin_api::{
    Admin, AgentStatus, PartitionDescription, SegmentIndexStats, TopicDescription, TopicSummary,
    MAX_PARTITIONS,
};
pub use api_error::ApiError;
pub use broker::{Broker, BrokerConfig};
pub use client_api::{Consumed, ConsumedRecord, ProduceRecord, ProducedRecord};
pub use cluster::Assignment;
pub use connection::{serve, serve_secured};
pub use groups::PartitionLag;
pub use groups_api::{GroupDetails, GroupMember, GroupOffset, GroupSummary, OffsetReset};
pub use limits::{default_max_connections, ConnectionCounter, ConnectionSlot, Limits};
pub use retention::MaintenanceConfig;
pub use supervisor::TaskFailure;
pub use topic_config::ConfigChange;
