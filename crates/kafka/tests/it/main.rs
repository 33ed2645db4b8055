//! Integration tests of the Kafka agent at the wire level: a real listener over in-memory
//! metadata and object stores, driven by raw `kafka-protocol` requests.
//!
//! These tests wait in real time, not on tokio's paused clock: they talk over real TCP to an
//! agent whose SQLite store answers from its own thread (a paused clock would jump past those
//! waits to the next timer), and leases and group generations are judged by the database's clock.

mod acl;
mod admin;
mod cluster;
mod coordinator;
mod faults;
mod groups;
mod harness;
mod hostile;
mod protocol;
mod retention;
mod security;
mod transactions;
mod wide;
