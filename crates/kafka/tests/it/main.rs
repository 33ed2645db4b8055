//! Integration tests of the Kafka agent at the wire level: a real listener over in-memory
//! metadata and object stores, driven by raw `kafka-protocol` requests.

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
