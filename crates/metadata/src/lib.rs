//! Metadata for StreamHouse: which topics exist, where each partition's segments live in object
//! storage, how far each partition is durable (its high watermark), consumer-group offsets, and
//! the agents and partition leases that coordinate many agents, SASL credentials and ACLs.
//!
//! The [`MetadataStore`] trait is the boundary: the narrow traits [`Catalog`], [`SegmentLog`],
//! [`Leases`], [`GroupStore`], [`Credentials`], [`AclStore`] and [`TxnStore`] together. Their
//! methods are callable on an `Arc<dyn MetadataStore>` as they are; to call them on a concrete
//! store, bring them into scope with `use streamhouse_metadata::prelude::*`. Backends:
//! - [`SqliteMetadataStore`]: embedded default, one file, WAL journal.
//! - [`PostgresMetadataStore`]: shared by many agents.
//!
//! Wrappers, each a [`Layer`] that forwards whatever it does not change:
//! - [`CachedMetadataStore`]: a bounded write-through cache in front of any backend.
//! - [`HookedMetadataStore`]: a [`CallHook`] around every call (deadlines, counting, faults).
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
pub use store::{
    AclStore, AclStoreLayer, Catalog, CatalogLayer, Credentials, CredentialsLayer, GroupStore,
    GroupStoreLayer, Layer, Leases, LeasesLayer, MetadataStore, SegmentLog, SegmentLogLayer,
    TopicConfigChange, TxnStore, TxnStoreLayer,
};
pub use txn::*;
pub use types::*;

/// The store traits, in scope (unnamed) for calling their methods on a concrete store (an
/// `Arc<dyn MetadataStore>` needs no import): `use streamhouse_metadata::prelude::*;`.
pub mod prelude {
    pub use crate::store::{
        AclStore as _, Catalog as _, Credentials as _, GroupStore as _, Leases as _,
        SegmentLog as _, TxnStore as _,
    };
}
