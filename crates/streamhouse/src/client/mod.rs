//! The binary's one Kafka client, built on `kafka-protocol`: a pipelined connection with TLS
//! and SASL (`connection.rs`) and the cluster lookups the bench and the operator commands share
//! (`cluster.rs`). The operator commands' partition-level calls are in `cli/kafka.rs`.

mod cluster;
mod connection;
mod records;
mod security;

pub use cluster::{layout, topic_name, watermarks, Layout, EARLIEST, LATEST};
pub use connection::{check, connect_any, Connection};
pub use records::record;
pub use security::{KafkaSecurity, Login};
