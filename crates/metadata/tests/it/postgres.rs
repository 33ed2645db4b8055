//! PostgreSQL backend against a throwaway server started from the local PostgreSQL binaries.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use sqlx::postgres::PgConnectOptions;
use streamhouse_metadata::prelude::*;
use streamhouse_metadata::{
    conformance, now_ms, CacheConfig, CachedMetadataStore, CommitOutcome, LeaseFence,
    MetadataError, MetadataStore, NewTopic, PostgresMetadataStore, SegmentCommit, SegmentInfo,
    SessionTimeouts, TopicConfig,
};
use tempfile::TempDir;

/// A PostgreSQL server in a temporary directory, stopped on drop.
struct TempPostgres {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
    /// initdb refuses to run as root, so the server then runs as this user.
    run_as: Option<&'static str>,
}

/// Directory holding `initdb`, `pg_ctl` and `postgres`, newest version first.
fn server_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .collect();
    versions.sort_by_key(|path| {
        let version = path.parent().and_then(Path::file_name);
        version.and_then(|v| v.to_str()?.parse::<u32>().ok())
    });
    let path_dirs = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    versions.into_iter().rev().chain(path_dirs).find(|dir| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| dir.join(b).is_file())
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

impl TempPostgres {
    fn start(bin: PathBuf) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let run_as = is_root().then_some("postgres");
        if let Some(user) = run_as {
            let owner = format!("{user}:{user}");
            let status = Command::new("chown")
                .arg(&owner)
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown {owner} {}", dir.path().display());
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = Self {
            dir,
            bin,
            port,
            run_as,
        };
        let data = server.data_dir();
        server.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let settings = format!(
            "-p {} -k {} -c listen_addresses='' -c fsync=off",
            server.port,
            server.dir.path().display()
        );
        let log = server.dir.path().join("server.log");
        server.run(
            "pg_ctl",
            &[
                "-D",
                &data,
                "-o",
                &settings,
                "-l",
                &log.to_string_lossy(),
                "-w",
                "start",
            ],
        );
        server
    }

    fn data_dir(&self) -> String {
        self.dir.path().join("data").to_string_lossy().into_owned()
    }

    fn run(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let mut command = match self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(&program);
                command
            }
            None => Command::new(&program),
        };
        let output = command.args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{} {args:?} failed: {}{}",
            program.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn options(&self) -> PgConnectOptions {
        PgConnectOptions::new()
            .host(&self.dir.path().to_string_lossy())
            .port(self.port)
            .username("postgres")
            .database("postgres")
    }

    async fn store(&self) -> PostgresMetadataStore {
        self.store_with(&SessionTimeouts::default()).await
    }

    async fn store_with(&self, timeouts: &SessionTimeouts) -> PostgresMetadataStore {
        PostgresMetadataStore::connect_with(self.options(), timeouts)
            .await
            .unwrap()
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let data = self.data_dir();
        self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }
}

/// Two stores on one database stand in for two agents racing for the same offsets.
async fn agents_race_for_one_offset(first: Arc<dyn MetadataStore>, second: Arc<dyn MetadataStore>) {
    let topic = format!("race-{}", now_ms());
    first
        .create_topic(NewTopic {
            name: topic.clone(),
            partitions: 1,
            config: TopicConfig::default(),
        })
        .await
        .unwrap();
    let (a, b) = (segment(&topic, 0, "from-a"), segment(&topic, 0, "from-b"));
    let (ra, rb) = tokio::join!(
        first.commit_segment(&a, None),
        second.commit_segment(&b, None)
    );
    let conflicts = [&ra, &rb]
        .iter()
        .filter(|r| {
            matches!(
                r,
                Err(MetadataError::OffsetConflict {
                    high_watermark: 100,
                    ..
                })
            )
        })
        .count();
    assert_eq!(
        (ra.is_ok() as u8 + rb.is_ok() as u8, conflicts),
        (1, 1),
        "{ra:?} {rb:?}"
    );
    assert_eq!(
        second
            .get_partition(&topic, 0)
            .await
            .unwrap()
            .high_watermark,
        100
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement (BENCHMARKS.md): run with --ignored --nocapture"]
async fn lease_round_on_postgres() {
    let bin = server_bin_dir().expect("PostgreSQL server binaries");
    let server = TempPostgres::start(bin);
    let store = server.store().await;
    crate::lease_scale::lease_round(&store, "PostgreSQL (local socket, fsync=off)").await;
}

/// The server binaries, or `None` (with a note) when they are missing and not required.
fn server_bin_dir_or_skip(test: &str) -> Option<PathBuf> {
    let bin = server_bin_dir();
    if bin.is_none() {
        // scripts/test.sh installs the server and sets this, so CI can never skip silently.
        assert!(
            std::env::var_os("STREAMHOUSE_REQUIRE_POSTGRES").is_none(),
            "PostgreSQL server binaries are required (run scripts/setup-test-deps.sh)"
        );
        println!("SKIPPED {test}: no initdb/pg_ctl/postgres under /usr/lib/postgresql or PATH");
    }
    bin
}

/// A session holding a partition's row lock (a stalled agent) makes a store call on that row
/// fail after `lock_timeout` instead of waiting for it, and a session left idle inside a
/// transaction is ended by the server, which releases its locks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_row_locks_and_idle_transactions_are_bounded() {
    use sqlx::{Connection, PgConnection};
    use std::time::{Duration, Instant};

    let Some(bin) = server_bin_dir_or_skip("held_row_locks_and_idle_transactions_are_bounded")
    else {
        return;
    };
    let server = TempPostgres::start(bin);
    let timeouts = SessionTimeouts {
        statement: Duration::from_secs(2),
        lock: Duration::from_millis(300),
        idle_in_transaction: Duration::from_millis(700),
        acquire: Duration::from_secs(2),
    };
    let store = server.store_with(&timeouts).await;
    let topic = NewTopic {
        name: "locked".into(),
        partitions: 1,
        config: TopicConfig::default(),
    };
    store.create_topic(topic).await.unwrap();

    // The stalled agent: a session without limits, holding the partition row.
    let mut stalled = PgConnection::connect_with(&server.options()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut stalled).await.unwrap();
    let lock = "SELECT 1 FROM partitions WHERE topic = 'locked' AND partition_id = 0 FOR UPDATE";
    sqlx::query(lock).execute(&mut stalled).await.unwrap();
    let started = Instant::now();
    let call = store.acquire_lease("locked", 0, "agent-b", 10_000);
    let outcome = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("a held row lock must not hang the call");
    let waited = started.elapsed();
    assert!(outcome.is_err(), "the lock was held: {outcome:?}");
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(2),
        "failed after {waited:?}, lock_timeout is 300 ms"
    );
    sqlx::query("ROLLBACK").execute(&mut stalled).await.unwrap();
    let lease = store.acquire_lease("locked", 0, "agent-b", 10_000);
    assert!(lease.await.unwrap().is_some(), "free once the lock is gone");

    // A session of the store's own settings idle in a transaction is terminated, locks and all.
    let limited = timeouts.connect_options(server.options());
    let mut idle = PgConnection::connect_with(&limited).await.unwrap();
    let shown: (String,) = sqlx::query_as("SHOW lock_timeout")
        .fetch_one(&mut idle)
        .await
        .unwrap();
    assert_eq!(shown.0, "300ms");
    sqlx::query("BEGIN").execute(&mut idle).await.unwrap();
    sqlx::query(lock).execute(&mut idle).await.unwrap();
    // Real time, not paused: the server's idle-in-transaction timeout ends the session.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        sqlx::query("SELECT 1").execute(&mut idle).await.is_err(),
        "the idle transaction's session was ended"
    );
    let call = store.acquire_lease("locked", 0, "agent-b", 10_000);
    assert!(call.await.unwrap().is_some(), "its row lock was released");
    // A statement running past statement_timeout is cancelled.
    let started = Instant::now();
    let mut limited_conn = PgConnection::connect_with(&limited).await.unwrap();
    let slow = sqlx::query("SELECT pg_sleep(5)")
        .execute(&mut limited_conn)
        .await;
    assert!(slow.is_err() && started.elapsed() < Duration::from_secs(4));
}

/// A partition row held by another session (a stalled agent's commit) is skipped by batched
/// lease acquisition: the other partitions of the batch are leased at once, not after the
/// lock wait, and the skipped one is leased once the lock is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_locked_row_does_not_stall_a_lease_batch() {
    use sqlx::{Connection, PgConnection};
    use std::time::{Duration, Instant};

    let Some(bin) = server_bin_dir_or_skip("one_locked_row_does_not_stall_a_lease_batch") else {
        return;
    };
    let server = TempPostgres::start(bin);
    let store = server.store().await;
    let topic = NewTopic {
        name: "batch".into(),
        partitions: 3,
        config: TopicConfig::default(),
    };
    store.create_topic(topic).await.unwrap();
    let mut stalled = PgConnection::connect_with(&server.options()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut stalled).await.unwrap();
    sqlx::query("SELECT 1 FROM partitions WHERE topic = 'batch' AND partition_id = 1 FOR UPDATE")
        .execute(&mut stalled)
        .await
        .unwrap();
    let keys: Vec<(String, u32)> = (0..3).map(|p| ("batch".to_string(), p)).collect();
    let started = Instant::now();
    let leased = store.acquire_leases("agent-a", &keys, 10_000);
    let leased = leased.await.unwrap();
    let partitions: Vec<u32> = leased.iter().map(|l| l.partition).collect();
    assert_eq!(partitions, [0, 2], "the locked partition is left out");
    // The default lock_timeout is 2 s: well under it means nothing waited for the lock.
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    sqlx::query("ROLLBACK").execute(&mut stalled).await.unwrap();
    let leased = store.acquire_leases("agent-a", &keys, 10_000);
    assert_eq!(leased.await.unwrap().len(), 3);
}

/// Offsets 0..=99 of `topic`/`partition`, in object `key`.
fn segment(topic: &str, partition: u32, key: &str) -> SegmentInfo {
    SegmentInfo {
        topic: topic.to_string(),
        partition,
        base_offset: 0,
        last_offset: 99,
        record_count: 100,
        size_bytes: 1_000,
        object_offset: 0,
        object_size: 1_000,
        object_key: key.into(),
        min_timestamp_ms: 0,
        max_timestamp_ms: 0,
        created_at_ms: now_ms(),
    }
}

/// A group commit re-checks its fences when it commits: a lease that lapses while the
/// transaction waits (here, pausing before it tries another partition's held row again) fails
/// its commit, even though it was live when that commit was applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_lapsing_mid_transaction_fails_its_commit() {
    let Some(bin) = server_bin_dir_or_skip("a_lease_lapsing_mid_transaction_fails_its_commit")
    else {
        return;
    };
    let server = TempPostgres::start(bin);
    let store = server.store().await;
    create_partitions(&store, "recheck", 2).await;
    // 100 ms: live when partition 0 is applied, lapsed after the ~150 ms the transaction
    // spends pausing on partition 1's held row.
    let short = lease(&store, "recheck", 0, 100).await;
    let long = lease(&store, "recheck", 1, 60_000).await;
    let commits = [
        fenced_commit("recheck", 0, short),
        fenced_commit("recheck", 1, long),
    ];
    let other = hold_partition_row(&server, "recheck", 1).await;
    let outcomes = store.commit_segments(&commits).await.unwrap();
    assert_eq!(outcomes, [CommitOutcome::Fenced, CommitOutcome::RowLocked]);
    release_row(other).await;
    let outcomes = store.commit_segments(&commits[1..]).await.unwrap();
    assert_eq!(outcomes, [CommitOutcome::Committed]);
    assert_eq!(high_watermarks(&store, "recheck", 2).await, [0, 100]);
}

/// A partition row another session holds (a stalled agent, a foreign transaction) costs a
/// group commit a short wait, not the session's lock timeout: that partition is answered
/// `RowLocked` and the others commit. Retrying the same commits once the row is free commits
/// it and recognises the ones already recorded; a lock released within the wait is waited out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_row_lock_stalls_only_its_partition() {
    use std::time::{Duration, Instant};

    let Some(bin) = server_bin_dir_or_skip("a_held_row_lock_stalls_only_its_partition") else {
        return;
    };
    let server = TempPostgres::start(bin);
    let timeouts = SessionTimeouts {
        lock: Duration::from_secs(5),
        ..SessionTimeouts::default()
    };
    let store = server.store_with(&timeouts).await;
    create_partitions(&store, "held", 3).await;
    let mut commits = Vec::new();
    for p in 0..3 {
        commits.push(fenced_commit(
            "held",
            p,
            lease(&store, "held", p, 60_000).await,
        ));
    }
    let other = hold_partition_row(&server, "held", 1).await;
    let started = Instant::now();
    let outcomes = store.commit_segments(&commits).await.unwrap();
    let waited = started.elapsed();
    use CommitOutcome::{Committed, RowLocked};
    assert_eq!(outcomes, [Committed, RowLocked, Committed]);
    assert!(
        waited < Duration::from_secs(2),
        "waited {waited:?} (lock timeout 5 s)"
    );
    assert_eq!(high_watermarks(&store, "held", 3).await, [100, 0, 100]);
    release_row(other).await;
    let outcomes = store.commit_segments(&commits).await.unwrap();
    assert_eq!(outcomes, [Committed, Committed, Committed]);
    assert_eq!(high_watermarks(&store, "held", 3).await, [100, 100, 100]);

    // Held for 30 ms: within the commit's short wait, so no RowLocked.
    let next = SegmentCommit {
        segment: SegmentInfo {
            base_offset: 100,
            last_offset: 199,
            ..segment("held", 1, "object-1b")
        },
        ..commits[1].clone()
    };
    let other = hold_partition_row(&server, "held", 1).await;
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        release_row(other).await;
    });
    let outcomes = store.commit_segments(&[next]).await.unwrap();
    release.await.unwrap();
    assert_eq!(outcomes, [Committed]);
}

async fn create_partitions(store: &PostgresMetadataStore, name: &str, partitions: u32) {
    let topic = NewTopic {
        name: name.into(),
        partitions,
        config: TopicConfig::default(),
    };
    store.create_topic(topic).await.unwrap();
}

async fn lease(store: &PostgresMetadataStore, topic: &str, partition: u32, ttl_ms: i64) -> i64 {
    let lease = store.acquire_lease(topic, partition, "a", ttl_ms).await;
    lease.unwrap().expect("the lease is free").epoch
}

fn fenced_commit(topic: &str, partition: u32, epoch: i64) -> SegmentCommit {
    SegmentCommit {
        segment: segment(topic, partition, &format!("object-{partition}")),
        producers: Vec::new(),
        fence: Some(LeaseFence {
            agent_id: "a".into(),
            epoch,
        }),
        markers: Vec::new(),
    }
}

/// A raw session (no limits) holding one partition's row in an open transaction.
async fn hold_partition_row(
    server: &TempPostgres,
    topic: &str,
    partition: u32,
) -> sqlx::PgConnection {
    use sqlx::Connection;
    let mut session = sqlx::PgConnection::connect_with(&server.options())
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut session).await.unwrap();
    sqlx::query("SELECT 1 FROM partitions WHERE topic = $1 AND partition_id = $2 FOR UPDATE")
        .bind(topic)
        .bind(i64::from(partition))
        .execute(&mut session)
        .await
        .unwrap();
    session
}

async fn release_row(mut session: sqlx::PgConnection) {
    sqlx::query("ROLLBACK").execute(&mut session).await.unwrap();
}

async fn high_watermarks(store: &PostgresMetadataStore, topic: &str, partitions: u32) -> Vec<i64> {
    let mut found = Vec::new();
    for p in 0..partitions {
        found.push(store.get_partition(topic, p).await.unwrap().high_watermark);
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backend() {
    let Some(bin) = server_bin_dir_or_skip("postgres_backend") else {
        return;
    };
    let server = TempPostgres::start(bin);
    let first: Arc<dyn MetadataStore> = Arc::new(server.store().await);
    // A second store re-runs the (already applied) migrations like a second agent would.
    let second: Arc<dyn MetadataStore> = Arc::new(server.store().await);

    conformance::run_all(first.clone()).await;
    conformance::run_all(Arc::new(CachedMetadataStore::new(
        second.clone(),
        CacheConfig::default(),
    )))
    .await;
    agents_race_for_one_offset(first, second).await;
}
