//! Metadata for StreamHouse: which topics exist, where each partition's segments live in object
//! storage, how far each partition is durable (its high watermark), consumer-group offsets, and
//! the agents and partition leases that coordinate many agents, SASL credentials and ACLs.
//!
//! The [`MetadataStore`] trait is the boundary. Backends:
//! - [`SqliteMetadataStore`]: embedded default, one file, WAL journal.
//! - [`PostgresMetadataStore`]: shared by many agents.
//! - [`CachedMetadataStore`]: a bounded write-through cache in front of any backend.
//!
//! Every backend must pass the shared conformance suite in [`conformance`].

#![warn(missing_docs)]

mod acl;
mod cached;
pub mod conformance;
mod error;
mod hooked;
mod postgres;
mod rows;
mod sqlite;
mod store;
mod txn;
mod types;

pub use acl::*;
pub use cached::{CacheConfig, CacheStats, CachedMetadataStore};
pub use error::{MetadataError, Result};
pub use hooked::{CallDeadline, CallHook, HookedMetadataStore};
pub use postgres::{PostgresMetadataStore, SessionTimeouts};
pub use sqlite::SqliteMetadataStore;
/// The database driver's error, which [`MetadataError::Database`] wraps.
pub use sqlx::Error as SqlxError;
pub use store::MetadataStore;
pub use txn::*;
pub use types::*;
