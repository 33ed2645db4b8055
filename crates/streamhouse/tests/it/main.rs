//! Integration tests: the real `streamhouse` binary, `serve` on free ports with a temporary
//! data directory, driven by its own operator commands.

mod acl;
mod architecture;
mod bench;
mod errors;
mod groups;
mod records;
mod secure;
mod segment;
mod server;
mod topics;
mod users;
