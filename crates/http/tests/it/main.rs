//! Integration tests of the HTTP API, console and metrics against a real broker over
//! in-memory metadata and object storage.

mod api;
mod auth;
mod console;
mod harness;
mod limits;
mod metrics;
mod tls;
mod users;
