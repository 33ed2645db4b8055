//! Embedded SQLite backend: one database file in WAL mode.

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use crate::Result;

/// How long a statement waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections of a file-backed store; WAL lets them read concurrently with one writer.
const FILE_POOL_SIZE: u32 = 8;

/// `BEGIN IMMEDIATE` already excludes every other writer, so selects need no row locks.
macro_rules! for_update {
    () => {
        ""
    };
}

/// One writer at a time: no row is ever locked by another transaction a statement could skip.
macro_rules! skip_locked {
    () => {
        ""
    };
}

/// The database's clock, in ms since the Unix epoch (`'now'` has millisecond precision;
/// rounded, as the Julian day's floating point is not exact).
macro_rules! db_now_ms {
    () => {
        "CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)"
    };
}

/// The bytes whose hex text is the SQL expression `$text`.
macro_rules! bytes_from_hex {
    ($text:literal) => {
        concat!("unhex(", $text, ")")
    };
}

/// The rows of a JSON array bound as `$param`, one per element, in a column named `value`.
macro_rules! json_elements {
    ($param:literal) => {
        concat!("json_each(", $param, ")")
    };
}

/// Every write transaction holds SQLite's one write lock from its first statement (`BEGIN
/// IMMEDIATE`, across processes too), so nothing another writer does (taking a lapsed lease)
/// can happen between a transaction's checks and its commit.
const WRITERS_EXCLUDE_EACH_OTHER: bool = true;

/// One statement doing `$first`, then `$second`, then `$last` (each binding its own
/// parameters): SQLite runs a text of several statements as one call, one round trip to the
/// connection's worker thread.
macro_rules! all_of {
    ($first:expr, $second:expr, $last:expr) => {
        concat!($first, "; ", $second, "; ", $last)
    };
}

type Db = Sqlite;
type Store = SqliteMetadataStore;

/// The shared SQL implementation of [`crate::MetadataStore`], instantiated for SQLite.
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

/// [`crate::MetadataStore`] on an embedded SQLite database.
///
/// Every read-check-write runs in a `BEGIN IMMEDIATE` transaction, which takes SQLite's write
/// lock up front, so two concurrent commits can never both pass their checks.
#[derive(Debug, Clone)]
pub struct SqliteMetadataStore {
    pool: SqlitePool,
    /// Writers of this process queue here rather than on SQLite's lock: a writer that finds the
    /// database locked sleeps in SQLite's busy handler (1 ms growing to 100 ms steps), which
    /// under concurrent segment commits cost tens of milliseconds of produce latency.
    writer: Arc<tokio::sync::Mutex<()>>,
}

impl SqliteMetadataStore {
    /// Opens (creating if needed) the database file at `path` and applies pending migrations.
    /// The parent directory must exist.
    ///
    /// `synchronous=FULL` so an acknowledged commit survives power loss, not just a crash.
    pub async fn open(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(FILE_POOL_SIZE)
            .connect_with(options)
            .await?;
        Self::migrated(pool).await
    }

    /// A private in-memory database, for tests.
    ///
    /// Each SQLite in-memory connection is its own database, so the pool holds exactly one
    /// connection and never retires it.
    pub async fn in_memory() -> Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        Self::migrated(pool).await
    }

    async fn migrated(pool: SqlitePool) -> Result<Self> {
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self {
            pool,
            writer: Arc::default(),
        })
    }

    /// A transaction holding the database write lock from its first statement.
    async fn write_tx(&self) -> Result<WriteTx> {
        let writer = self.writer.clone().lock_owned().await;
        Ok(WriteTx {
            tx: self.pool.begin_with("BEGIN IMMEDIATE").await?,
            _writer: writer,
        })
    }
}

/// A write transaction that also holds the store's in-process writer lock until it ends.
struct WriteTx {
    tx: Transaction<'static, Sqlite>,
    _writer: tokio::sync::OwnedMutexGuard<()>,
}

impl WriteTx {
    async fn commit(self) -> std::result::Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl Deref for WriteTx {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        &self.tx
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }
}
