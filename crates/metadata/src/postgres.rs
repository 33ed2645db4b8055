//! PostgreSQL backend: one database shared by many agents.

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use crate::Result;

/// Connections per store; each agent runs one store.
const POOL_SIZE: u32 = 16;

/// Row locks serialize writers of the same topic or partition across agents.
macro_rules! for_update {
    () => {
        " FOR UPDATE"
    };
}

/// The rows of a JSON array bound (as text) as `$param`, one per element, in a column named
/// `value`.
macro_rules! json_elements {
    ($param:literal) => {
        concat!(
            "json_array_elements(CAST(",
            $param,
            " AS json)) AS elements (value)"
        )
    };
}

type Db = Postgres;
type Store = PostgresMetadataStore;

/// The shared SQL implementation of [`crate::MetadataStore`], instantiated for PostgreSQL.
#[allow(
    clippy::duplicate_mod,
    reason = "deliberately compiled once per backend, like a template instantiation"
)]
#[path = "sql_common.rs"]
mod common;

/// [`crate::MetadataStore`] on PostgreSQL, for several agents sharing metadata.
///
/// Read-check-write sequences run in `READ COMMITTED` transactions that first lock the topic or
/// partition row they check (`SELECT ... FOR UPDATE`), so concurrent commits and lease changes
/// of one partition are serialized, also across agents.
#[derive(Debug, Clone)]
pub struct PostgresMetadataStore {
    pool: PgPool,
}

impl PostgresMetadataStore {
    /// Connects to `url` (`postgres://user:pass@host:port/db`) and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .connect(url)
            .await?;
        Self::migrated(pool).await
    }

    /// Connects with explicit options and applies pending migrations.
    pub async fn connect_with(options: PgConnectOptions) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .connect_with(options)
            .await?;
        Self::migrated(pool).await
    }

    async fn migrated(pool: PgPool) -> Result<Self> {
        // The migrator takes an advisory lock, so agents starting together migrate once.
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }

    /// A transaction in which `for_update!()` selects lock the rows they check.
    async fn write_tx(&self) -> Result<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }
}
