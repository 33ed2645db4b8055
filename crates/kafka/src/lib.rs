//! The Kafka wire protocol for StreamHouse agents.
//!
//! [`serve`] accepts Kafka client connections and answers them from a [`Broker`], which holds
//! the partitions this agent has open. Frames are decoded with the `kafka-protocol` crate; the
//! versions served are listed in one table (`versions.rs`) that ApiVersions advertises and the
//! dispatcher enforces. A malformed frame closes that connection with a log line; it never
//! affects other connections or the process.

mod broker;
mod connection;
mod errors;
mod frame;
mod handlers;
mod topic_config;
mod versions;

pub use broker::{Broker, BrokerConfig};
pub use connection::serve;
