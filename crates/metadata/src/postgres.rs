//! PostgreSQL backend: one database shared by many agents.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use crate::Result;

/// Connections per store; each agent runs one store.
const POOL_SIZE: u32 = 16;

/// Limits the database enforces on every session of a store, so that no agent waits on it
/// without bound and no stalled agent holds row locks without bound: a statement or lock wait
/// that runs too long fails (and its caller retries or reports), and the server ends a session
/// left idle inside a transaction (a paused or half-open agent), releasing its locks. All are
/// below the lease TTL, so a blocked call fails before the leases it should renew lapse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimeouts {
    /// `statement_timeout`: longest any one statement may run.
    pub statement: Duration,
    /// `lock_timeout`: longest a statement may wait for a lock (a row another session holds).
    pub lock: Duration,
    /// `idle_in_transaction_session_timeout`: a session idle this long inside a transaction is
    /// terminated by the server and its locks released.
    pub idle_in_transaction: Duration,
    /// Longest a call waits for a free connection of the pool.
    pub acquire: Duration,
}

impl SessionTimeouts {
    /// Defaults for agents whose leases last `lease_ttl`: statements 40 % of it, lock waits
    /// 20 %, idle transactions 50 %, waiting for a connection 40 %. A lease renewal that hits a
    /// limit thus fails with time left to retry before the lease expires.
    pub fn for_lease_ttl(lease_ttl: Duration) -> Self {
        Self {
            statement: lease_ttl * 2 / 5,
            lock: lease_ttl / 5,
            idle_in_transaction: lease_ttl / 2,
            acquire: lease_ttl * 2 / 5,
        }
    }

    /// `options` with the session limits set as startup parameters, so the server applies them
    /// to the session from its first statement (no extra round trip per connection).
    pub fn connect_options(&self, options: PgConnectOptions) -> PgConnectOptions {
        let ms = |d: Duration| format!("{}ms", d.as_millis().max(1));
        options.options([
            ("statement_timeout", ms(self.statement)),
            ("lock_timeout", ms(self.lock)),
            (
                "idle_in_transaction_session_timeout",
                ms(self.idle_in_transaction),
            ),
        ])
    }
}

impl Default for SessionTimeouts {
    /// For the default lease TTL of 10 s.
    fn default() -> Self {
        Self::for_lease_ttl(Duration::from_secs(10))
    }
}

/// Row locks serialize writers of the same topic or partition across agents.
macro_rules! for_update {
    () => {
        " FOR UPDATE"
    };
}

/// Locks the selected rows, leaving out those another transaction holds instead of waiting
/// for them: one locked row must not stall a whole batch.
macro_rules! skip_locked {
    () => {
        " FOR UPDATE SKIP LOCKED"
    };
}

/// The database's clock, in ms since the Unix epoch: the time of the statement itself, not of
/// its transaction's start, so a check late in a transaction sees the time it runs at.
macro_rules! db_now_ms {
    () => {
        "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
    };
}

/// The bytes whose hex text is the SQL expression `$text`.
macro_rules! bytes_from_hex {
    ($text:literal) => {
        concat!("decode(", $text, ", 'hex')")
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

/// Transactions lock only the rows they change: another agent can take a lapsed lease while a
/// group commit runs, so fences are checked again right before it commits.
const WRITERS_EXCLUDE_EACH_OTHER: bool = false;

/// One statement doing `$first`, `$second` and `$last` (each binding its own parameters):
/// PostgreSQL runs data-modifying `WITH` queries with the statement, on the same snapshot.
/// None of the three reads what another writes.
macro_rules! all_of {
    ($first:expr, $second:expr, $last:expr) => {
        concat!(
            "WITH first_done AS (",
            $first,
            "), second_done AS (",
            $second,
            ") ",
            $last
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

/// The transaction SQL, instantiated like [`common`].
#[allow(
    clippy::duplicate_mod,
    reason = "deliberately compiled once per backend, like a template instantiation"
)]
#[path = "sql_txn.rs"]
mod txn_sql;

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
    /// Connects to `url` (`postgres://user:pass@host:port/db`) with every session limited by
    /// `timeouts`, and applies pending migrations.
    pub async fn connect(url: &str, timeouts: &SessionTimeouts) -> Result<Self> {
        let options: PgConnectOptions = url.parse()?;
        Self::connect_with(options, timeouts).await
    }

    /// Connects with explicit options, every session limited by `timeouts`, and applies
    /// pending migrations.
    pub async fn connect_with(
        options: PgConnectOptions,
        timeouts: &SessionTimeouts,
    ) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(timeouts.acquire)
            .connect_with(timeouts.connect_options(options))
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
