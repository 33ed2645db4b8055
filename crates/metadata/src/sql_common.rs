//! The SQL every backend shares, written once and compiled once per backend.
//!
//! Backend modules (`sqlite`, `postgres`) include this file as a child module with
//! `#[path = "sql_common.rs"]` after defining, in themselves:
//! - `type Store`: the backend struct, with a `pool` field and an async `write_tx()` that opens
//!   a transaction under which read-check-write sequences are atomic;
//! - `type Db`: the sqlx database;
//! - the `for_update!()` macro: the suffix that row-locks a `SELECT` inside such a transaction
//!   (empty where the transaction already excludes other writers);
//! - the `skip_locked!()` macro: the suffix that row-locks a `SELECT` but leaves out rows
//!   another transaction holds (empty where no other writer can hold any);
//! - the `db_now_ms!()` macro: the database's clock in ms since the Unix epoch, by which lease
//!   expiry is judged where agents' clocks must not matter;
//! - the `json_elements!("$N")` macro: a `FROM` item with one row per element of the JSON array
//!   bound as `$N`, in a column `value`.
//! - the `bytes_from_hex!("expr")` macro: the bytes whose hex text the SQL expression `expr`
//!   gives (set-based statements carry bytes inside their one JSON bind as hex).
//!
//! Statements use `$N` placeholders, which both SQLite and PostgreSQL accept, and only integer
//! (`i64`) and text binds, so one statement text serves both. A statement over many partitions
//! takes them as one JSON text bind (see [`lease_keys!`]), so its size does not depend on their
//! number and no backend limit on bind parameters applies.
//!
//! Why `#[path]` inclusion rather than code generic over a backend (`sqlx::Database` plus a
//! small dialect trait) or one `macro_rules!` holding the whole file:
//! - every statement is a `&'static str` built at compile time with `concat!` from the
//!   backend's dialect macros; a generic backend could only supply the dialect as associated
//!   consts, which stable Rust cannot concatenate at compile time, so each statement would be
//!   formatted at run time (or cached per backend) instead of being a constant;
//! - generic sqlx code needs its bounds spelled out on every helper (`Executor` for the
//!   connection, `Encode` + `Type` per bound type, `Decode` per column type, `ColumnIndex`,
//!   `IntoArguments`), which would outweigh the SQL itself;
//! - a `macro_rules!` around ~1,900 lines is neither formatted by rustfmt nor well reported by
//!   the compiler (every error points into the macro).
//!
//! Included as a module, the file is one source, formatted and linted as usual, and each
//! instance is ordinary code type-checked against its own backend; the cost is the
//! `clippy::duplicate_mod` allowance at the two `#[path]` sites.

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use sqlx::{Database, Executor};
use uuid::Uuid;

use super::txn_sql;
use super::{Db, Store};
use crate::rows::{
    self, acl_columns, agent_columns, credential_columns, group_lease_columns, lease_columns,
    offset_columns, partition_columns, producer_columns, segment_columns, topic_columns,
};
use crate::{
    now_ms, AclBinding, AclBindingFilter, AclStore, AgentInfo, Catalog, CommitOutcome,
    CommittedOffset, Credentials, GroupLease, GroupStore, HeldLease, LeaseFence, Leases,
    MetadataError, NewTopic, PartitionLease, PartitionState, ProducerSnapshot, ProducerSnapshots,
    Result, SegmentCommit, SegmentInfo, SegmentLog, SegmentTotals, Topic, TopicConfigChange,
    UserCredential,
};

type Conn = <Db as Database>::Connection;

macro_rules! select_topic {
    () => {
        concat!("SELECT ", topic_columns!(), " FROM topics WHERE name = $1")
    };
}

macro_rules! select_partition {
    () => {
        concat!(
            "SELECT ",
            partition_columns!(),
            " FROM partitions WHERE topic = $1 AND partition_id = $2"
        )
    };
}

/// A derived table `k (topic, partition_id, epoch)` of the JSON array bound as `$param`, whose
/// elements are `[topic, partition]` (`epoch` then NULL) or `[topic, partition, epoch]`.
macro_rules! lease_keys {
    ($param:literal) => {
        concat!(
            "(SELECT value ->> 0 AS topic, CAST(value ->> 1 AS BIGINT) AS partition_id, \
             CAST(value ->> 2 AS BIGINT) AS epoch FROM ",
            json_elements!($param),
            ") AS k"
        )
    };
}

const SELECT_TOPIC: &str = select_topic!();
const LOCK_TOPIC: &str = concat!(select_topic!(), for_update!());
const SELECT_PARTITION: &str = select_partition!();
const LOCK_PARTITION: &str = concat!(select_partition!(), for_update!());

/// Pauses, within one group commit, before trying again the partition rows another
/// transaction held: a brief lock (a consolidation swap, a truncation) is waited out, a long
/// one (a stalled session) is answered [`CommitOutcome::RowLocked`] after about 150 ms, so it
/// stalls only its own partition.
const ROW_LOCK_PAUSES_MS: [u64; 3] = [10, 40, 100];
const INSERT_PARTITION: &str =
    "INSERT INTO partitions (topic, partition_id, high_watermark, log_start_offset) \
     VALUES ($1, $2, 0, 0)";

/// Reads a topic with `sql`: [`SELECT_TOPIC`], or [`LOCK_TOPIC`] inside a write transaction.
async fn fetch_topic<'e>(
    executor: impl Executor<'e, Database = Db>,
    sql: &'static str,
    name: &str,
) -> Result<Option<Topic>> {
    sqlx::query(sql)
        .bind(name)
        .fetch_optional(executor)
        .await?
        .map(|row| rows::topic(&row))
        .transpose()
}

async fn topic_exists(conn: &mut Conn, name: &str) -> Result<bool> {
    let found = sqlx::query("SELECT name FROM topics WHERE name = $1")
        .bind(name)
        .fetch_optional(conn)
        .await?;
    Ok(found.is_some())
}

/// The error for a partition that is not there: distinguishes a missing topic.
async fn missing_partition(conn: &mut Conn, topic: &str, partition: u32) -> Result<MetadataError> {
    Ok(if topic_exists(conn, topic).await? {
        MetadataError::UnknownPartition {
            topic: topic.to_owned(),
            partition,
        }
    } else {
        MetadataError::UnknownTopic(topic.to_owned())
    })
}

/// Reads a partition with `sql`: [`SELECT_PARTITION`], or [`LOCK_PARTITION`] inside a write
/// transaction, which serializes every writer of the partition.
async fn partition_state(
    conn: &mut Conn,
    sql: &'static str,
    topic: &str,
    partition: u32,
) -> Result<PartitionState> {
    let row = sqlx::query(sql)
        .bind(topic)
        .bind(i64::from(partition))
        .fetch_optional(&mut *conn)
        .await?;
    match row {
        Some(row) => rows::partition(&row),
        None => Err(missing_partition(conn, topic, partition).await?),
    }
}

async fn insert_partitions(
    conn: &mut Conn,
    topic: &str,
    partitions: std::ops::Range<u32>,
) -> Result<()> {
    for partition in partitions {
        sqlx::query(INSERT_PARTITION)
            .bind(topic)
            .bind(i64::from(partition))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Binds the fields of `offset` after the binds `query` has, in [`offset_columns!`] order.
pub(super) fn bind_offset<'q>(
    query: sqlx::query::Query<'q, Db, <Db as Database>::Arguments>,
    offset: &'q CommittedOffset,
) -> sqlx::query::Query<'q, Db, <Db as Database>::Arguments> {
    query
        .bind(&offset.topic)
        .bind(i64::from(offset.partition))
        .bind(offset.offset)
        .bind(i64::from(offset.leader_epoch))
        .bind(offset.metadata.as_deref())
        .bind(offset.committed_at_ms)
}

/// Binds the fields of `acl` as `$1..$7`, in [`acl_columns!`] order.
fn bind_acl<'q>(
    query: sqlx::query::Query<'q, Db, <Db as Database>::Arguments>,
    acl: &'q AclBinding,
) -> sqlx::query::Query<'q, Db, <Db as Database>::Arguments> {
    query
        .bind(acl.resource_type.name())
        .bind(&acl.resource_name)
        .bind(acl.pattern_type.name())
        .bind(&acl.principal)
        .bind(&acl.host)
        .bind(acl.operation.name())
        .bind(acl.permission.name())
}

/// The ACL bindings `filter` selects, in [`AclBinding`] order. Filtering happens here rather
/// than in SQL: ACL tables are small, and Kafka's MATCH semantics (wildcards, every prefix of a
/// name) do not map to one portable statement.
async fn selected_acls(conn: &mut Conn, filter: &AclBindingFilter) -> Result<Vec<AclBinding>> {
    let mut acls = Vec::new();
    for row in sqlx::query(concat!("SELECT ", acl_columns!(), " FROM acls"))
        .fetch_all(conn)
        .await?
    {
        let acl = rows::acl(&row)?;
        if filter.matches(&acl) {
            acls.push(acl);
        }
    }
    acls.sort();
    Ok(acls)
}

/// Whether `fence` names the live holder of the lease of `topic`/`partition` at its epoch,
/// unexpired by the database's clock.
async fn fence_holds(
    conn: &mut Conn,
    topic: &str,
    partition: u32,
    fence: &LeaseFence,
) -> Result<bool> {
    let held = sqlx::query(concat!(
        "SELECT 1 FROM partition_leases WHERE topic = $1 AND partition_id = $2 \
         AND agent_id = $3 AND epoch = $4 AND expires_at >= ",
        db_now_ms!()
    ))
    .bind(topic)
    .bind(i64::from(partition))
    .bind(&fence.agent_id)
    .bind(fence.epoch)
    .fetch_optional(conn)
    .await?;
    Ok(held.is_some())
}

/// Indexes of the `commits` marked committed in `outcomes`, and not known `lapsed` already,
/// whose fence no longer holds by the database's clock: the lease lapsed while the transaction
/// ran. One statement.
async fn lapsed_fences(
    conn: &mut Conn,
    commits: &[SegmentCommit],
    outcomes: &[CommitOutcome],
    lapsed: &[bool],
) -> Result<Vec<usize>> {
    // Found lapsed before: what those still commit is an earlier attempt's record.
    let fenced: Vec<usize> = (0..commits.len())
        .filter(|&i| !lapsed[i] && outcomes[i] == CommitOutcome::Committed)
        .filter(|&i| commits[i].fence.is_some())
        .collect();
    let (_, held) = recorded_and_held(conn, commits, &fenced).await?;
    Ok(fenced.into_iter().filter(|i| !held.contains(i)).collect())
}

/// Refuses a change unless `fence` names the live holder of the partition lease at its epoch.
async fn check_fence(conn: &mut Conn, segment: &SegmentInfo, fence: &LeaseFence) -> Result<()> {
    if fence_holds(conn, &segment.topic, segment.partition, fence).await? {
        Ok(())
    } else {
        Err(MetadataError::Fenced {
            topic: segment.topic.clone(),
            partition: segment.partition,
            agent_id: fence.agent_id.clone(),
            epoch: fence.epoch,
        })
    }
}

/// A partition as the set-based statements of a group commit key it (as stored: topic and
/// `BIGINT` partition id).
type PartitionKey = (String, i64);

/// A segment's identity for recognising an earlier attempt of the same commit: topic,
/// partition, offsets, object key and byte range.
type RecordedKey = (String, i64, i64, i64, String, i64, i64);

fn recorded_key(segment: &SegmentInfo) -> Result<RecordedKey> {
    Ok((
        segment.topic.clone(),
        i64::from(segment.partition),
        segment.base_offset,
        segment.last_offset,
        segment.object_key.clone(),
        rows::to_sql_int(segment.object_offset, "object offset")?,
        rows::to_sql_int(segment.size_bytes, "segment size")?,
    ))
}

/// Decides and applies the `commits` at `indexes` (in the global lock order) inside one group
/// commit's transaction, in a number of statements that does not grow with the partitions they
/// span: the row locks, then the already-recorded checks and the fences, then the accepted
/// commits' segments, high watermarks and producer snapshots, one statement each. Only
/// transaction markers and rows found missing take statements of their own.
///
/// Each commit is decided as if alone, in order: recorded already (an earlier attempt whose
/// answer was lost) -> committed; fence not held (or found `lapsed`) -> fenced; base offset
/// not the high watermark -> conflict; else recorded (a later commit of the same partition in
/// this group then follows it).
async fn commit_set(
    conn: &mut Conn,
    commits: &[SegmentCommit],
    indexes: &[usize],
    lapsed: &[bool],
    outcomes: &mut [CommitOutcome],
) -> Result<()> {
    let mut high_watermarks = lock_partitions(conn, commits, indexes).await?;
    let (recorded, held) = recorded_and_held(conn, commits, indexes).await?;
    let mut accepted = Vec::new();
    for &i in indexes {
        let (commit, segment) = (&commits[i], &commits[i].segment);
        let key = (segment.topic.clone(), i64::from(segment.partition));
        outcomes[i] = match high_watermarks.get_mut(&key) {
            None => missing_row(conn, segment).await?,
            Some(_) if recorded.contains(&i) => CommitOutcome::Committed,
            Some(_) if commit.fence.is_some() && (lapsed[i] || !held.contains(&i)) => {
                CommitOutcome::Fenced
            }
            Some(hw) if segment.base_offset != *hw => CommitOutcome::OffsetConflict {
                high_watermark: *hw,
            },
            Some(hw) => {
                *hw = segment.last_offset + 1;
                accepted.push(i);
                CommitOutcome::Committed
            }
        };
    }
    if accepted.is_empty() {
        return Ok(());
    }
    record_accepted(conn, commits, &accepted, &high_watermarks).await?;
    for &i in &accepted {
        let segment = &commits[i].segment;
        txn_sql::apply_markers(conn, &segment.topic, segment.partition, &commits[i].markers)
            .await?;
    }
    Ok(())
}

/// Locks the partition rows of the `commits` at `indexes`, leaving out those another
/// transaction holds (never waiting, so no two group commits can deadlock): their high
/// watermarks by partition.
async fn lock_partitions(
    conn: &mut Conn,
    commits: &[SegmentCommit],
    indexes: &[usize],
) -> Result<std::collections::HashMap<PartitionKey, i64>> {
    let keys: Vec<(&str, u32)> = indexes
        .iter()
        .map(|&i| {
            let segment = &commits[i].segment;
            (segment.topic.as_str(), segment.partition)
        })
        .collect();
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(concat!(
        "SELECT topic, partition_id, high_watermark FROM partitions \
         WHERE (topic, partition_id) IN (SELECT topic, partition_id FROM ",
        lease_keys!("$1"),
        ") ORDER BY topic, partition_id",
        skip_locked!()
    ))
    .bind(json_rows(&keys)?)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(topic, partition, hw)| ((topic, partition), hw))
        .collect())
}

/// One commit as [`recorded_and_held`] looks it up: its index, its exact segment and its
/// fence's agent and epoch, if it has one.
type LookupKey<'a> = (usize, RecordedKey, Option<&'a str>, Option<i64>);

/// Which of the `commits` at `indexes` are recorded exactly already (traces of an earlier
/// attempt whose answer was lost), and which fenced ones name the live holder of their
/// partition's lease, unexpired by the database's clock, in one statement.
///
/// Run after [`lock_partitions`], never merged into it: under PostgreSQL's READ COMMITTED a
/// statement reads from a snapshot taken when it starts, while a row lock it takes skips (or
/// waits for) the transaction holding it and then locks the row's newest version. A lookup in
/// the locking statement could miss what that transaction did just before committing (an
/// earlier attempt of this very commit), and the commit would be refused though recorded. In a
/// statement of its own, after the locks are held, it sees everything committed before them.
async fn recorded_and_held(
    conn: &mut Conn,
    commits: &[SegmentCommit],
    indexes: &[usize],
) -> Result<(HashSet<usize>, HashSet<usize>)> {
    if indexes.is_empty() {
        return Ok(Default::default());
    }
    let keys = indexes
        .iter()
        .map(|&i| {
            let fence = commits[i].fence.as_ref();
            let (agent, epoch) = (fence.map(|f| f.agent_id.as_str()), fence.map(|f| f.epoch));
            Ok((i, recorded_key(&commits[i].segment)?, agent, epoch))
        })
        .collect::<Result<Vec<LookupKey>>>()?;
    let rows: Vec<(i64, bool, bool)> = sqlx::query_as(concat!(
        "SELECT k.idx, EXISTS (SELECT 1 FROM segments AS s WHERE s.topic = k.topic \
         AND s.partition_id = k.partition_id AND s.base_offset = k.base_offset \
         AND s.last_offset = k.last_offset AND s.object_key = k.object_key \
         AND s.object_offset = k.object_offset AND s.size_bytes = k.size_bytes), \
         EXISTS (SELECT 1 FROM partition_leases AS l WHERE l.topic = k.topic \
         AND l.partition_id = k.partition_id AND l.agent_id = k.agent_id \
         AND l.epoch = k.epoch AND l.expires_at >= ",
        db_now_ms!(),
        ") FROM (SELECT CAST(value ->> 0 AS BIGINT) AS idx, value -> 1 ->> 0 AS topic, \
         CAST(value -> 1 ->> 1 AS BIGINT) AS partition_id, \
         CAST(value -> 1 ->> 2 AS BIGINT) AS base_offset, \
         CAST(value -> 1 ->> 3 AS BIGINT) AS last_offset, value -> 1 ->> 4 AS object_key, \
         CAST(value -> 1 ->> 5 AS BIGINT) AS object_offset, \
         CAST(value -> 1 ->> 6 AS BIGINT) AS size_bytes, value ->> 2 AS agent_id, \
         CAST(value ->> 3 AS BIGINT) AS epoch FROM ",
        json_elements!("$1"),
        ") AS k"
    ))
    .bind(json_rows(&keys)?)
    .fetch_all(&mut *conn)
    .await?;
    let (mut recorded, mut held) = (HashSet::new(), HashSet::new());
    for (idx, is_recorded, is_held) in rows {
        let idx = usize::try_from(idx)
            .map_err(|_| MetadataError::Corrupt(format!("commit index {idx}")))?;
        if is_recorded {
            recorded.insert(idx);
        }
        if is_held {
            held.insert(idx);
        }
    }
    Ok((recorded, held))
}

/// The outcome for a commit whose partition row [`lock_partitions`] did not lock: held by
/// another transaction, or not there (deleted meanwhile; refused without failing the others).
async fn missing_row(conn: &mut Conn, segment: &SegmentInfo) -> Result<CommitOutcome> {
    match partition_state(conn, SELECT_PARTITION, &segment.topic, segment.partition).await {
        Ok(_) => Ok(CommitOutcome::RowLocked),
        Err(MetadataError::UnknownTopic(_)) => Ok(CommitOutcome::UnknownPartition {
            topic_exists: false,
        }),
        Err(MetadataError::UnknownPartition { .. }) => {
            Ok(CommitOutcome::UnknownPartition { topic_exists: true })
        }
        Err(e) => Err(e),
    }
}

/// Runs `sql`, a statement over the JSON rows it binds as `$1`, with `rows`.
async fn execute_over<K: serde::Serialize>(
    conn: &mut Conn,
    sql: &'static str,
    rows: &[K],
) -> Result<()> {
    sqlx::query(sql)
        .bind(json_rows(rows)?)
        .execute(conn)
        .await?;
    Ok(())
}

/// The statement recording the segments bound as JSON rows ([`segment_rows`]) at `$param`.
macro_rules! insert_segments_sql {
    ($param:literal) => {
        concat!(
            "INSERT INTO segments (",
            segment_columns!(),
            ") SELECT value ->> 0, CAST(value ->> 1 AS BIGINT), CAST(value ->> 2 AS BIGINT), \
             CAST(value ->> 3 AS BIGINT), CAST(value ->> 4 AS BIGINT), CAST(value ->> 5 AS BIGINT), \
             value ->> 6, CAST(value ->> 7 AS BIGINT), CAST(value ->> 8 AS BIGINT), \
             CAST(value ->> 9 AS BIGINT), CAST(value ->> 10 AS BIGINT), CAST(value ->> 11 AS BIGINT) \
             FROM ",
            json_elements!($param)
        )
    };
}

/// The statement setting the high watermarks bound as JSON rows (topic, partition, high
/// watermark) at `$param`.
macro_rules! set_high_watermarks_sql {
    ($param:literal) => {
        concat!(
            "UPDATE partitions SET high_watermark = k.high_watermark FROM (SELECT value ->> 0 AS topic, \
             CAST(value ->> 1 AS BIGINT) AS partition_id, CAST(value ->> 2 AS BIGINT) AS high_watermark \
             FROM ",
            json_elements!($param),
            ") AS k WHERE partitions.topic = k.topic AND partitions.partition_id = k.partition_id"
        )
    };
}

/// The statement storing the producer snapshots bound as JSON rows ([`producer_rows`]) at
/// `$param`. `WHERE true` keeps SQLite from reading `ON CONFLICT` as a join constraint.
macro_rules! upsert_producers_sql {
    ($param:literal) => {
        concat!(
            "INSERT INTO producer_states (topic, partition_id, ",
            producer_columns!(),
            ") SELECT value ->> 0, CAST(value ->> 1 AS BIGINT), CAST(value ->> 2 AS BIGINT), \
             CAST(value ->> 3 AS BIGINT), CAST(value ->> 4 AS BIGINT), ",
            bytes_from_hex!("value ->> 5"),
            " FROM ",
            json_elements!($param),
            " WHERE true ON CONFLICT (topic, partition_id, producer_id) DO UPDATE SET \
             last_offset = excluded.last_offset, updated_at = excluded.updated_at, \
             state = excluded.state"
        )
    };
}

/// Records the accepted `commits` at `indexes`: their segments, their partitions' new high
/// watermarks (from `high_watermarks`) and their producer snapshots (a later commit's
/// snapshot of a producer replacing an earlier one's), in ONE statement: a round trip less
/// per flush for each of them.
async fn record_accepted(
    conn: &mut Conn,
    commits: &[SegmentCommit],
    indexes: &[usize],
    high_watermarks: &std::collections::HashMap<PartitionKey, i64>,
) -> Result<()> {
    let segments: Vec<&SegmentInfo> = indexes.iter().map(|&i| &commits[i].segment).collect();
    sqlx::query(all_of!(
        insert_segments_sql!("$1"),
        set_high_watermarks_sql!("$2"),
        upsert_producers_sql!("$3")
    ))
    .bind(json_rows(&segment_rows(&segments)?)?)
    .bind(json_rows(&high_watermark_rows(
        commits,
        indexes,
        high_watermarks,
    ))?)
    .bind(json_rows(&producer_rows(commits, indexes))?)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records `segments`, in one statement.
async fn insert_segments(conn: &mut Conn, segments: &[&SegmentInfo]) -> Result<()> {
    execute_over(conn, insert_segments_sql!("$1"), &segment_rows(segments)?).await
}

/// A segment as [`insert_segments_sql`] reads it.
type SegmentRow<'a> = (
    &'a str,
    u32,
    i64,
    i64,
    i64,
    i64,
    &'a str,
    i64,
    i64,
    i64,
    i64,
    i64,
);

fn segment_rows<'a>(segments: &[&'a SegmentInfo]) -> Result<Vec<SegmentRow<'a>>> {
    segments
        .iter()
        .map(|s| {
            Ok((
                s.topic.as_str(),
                s.partition,
                s.base_offset,
                s.last_offset,
                s.record_count,
                rows::to_sql_int(s.size_bytes, "segment size")?,
                s.object_key.as_str(),
                s.min_timestamp_ms,
                s.max_timestamp_ms,
                s.created_at_ms,
                rows::to_sql_int(s.object_offset, "object offset")?,
                rows::to_sql_int(s.object_size, "object size")?,
            ))
        })
        .collect()
}

/// The new high watermarks of the partitions the `commits` at `indexes` advanced, from
/// `high_watermarks`, one row per partition.
fn high_watermark_rows<'a>(
    commits: &'a [SegmentCommit],
    indexes: &[usize],
    high_watermarks: &std::collections::HashMap<PartitionKey, i64>,
) -> Vec<(&'a str, u32, i64)> {
    let advanced: BTreeMap<(&str, u32), i64> = indexes
        .iter()
        .map(|&i| {
            let s = &commits[i].segment;
            let hw = high_watermarks[&(s.topic.clone(), i64::from(s.partition))];
            ((s.topic.as_str(), s.partition), hw)
        })
        .collect();
    advanced
        .into_iter()
        .map(|((t, p), hw)| (t, p, hw))
        .collect()
}

/// The producer snapshots of the `commits` at `indexes`, the last of each producer per
/// partition.
fn producer_rows<'a>(
    commits: &'a [SegmentCommit],
    indexes: &[usize],
) -> Vec<(&'a str, u32, i64, i64, i64, String)> {
    let mut latest: BTreeMap<(&str, u32, i64), &ProducerSnapshot> = BTreeMap::new();
    for &i in indexes {
        let s = &commits[i].segment;
        for p in &commits[i].producers {
            latest.insert((s.topic.as_str(), s.partition, p.producer_id), p);
        }
    }
    latest
        .into_iter()
        .map(|((t, partition, id), p)| {
            (
                t,
                partition,
                id,
                p.last_offset,
                p.updated_at_ms,
                hex::encode(&p.state),
            )
        })
        .collect()
}

/// The statement scheduling the deletion of the `(object key, time)` rows `$select` yields,
/// keeping an earlier schedule of a key: the one rule every scheduler follows. `$select` must
/// end in a `WHERE` clause (SQLite would otherwise read the upsert's `ON` as a join's).
macro_rules! schedule_deletions_sql {
    ($select:expr) => {
        concat!(
            "INSERT INTO object_deletions (object_key, delete_after) ",
            $select,
            " ON CONFLICT (object_key) DO NOTHING"
        )
    };
}

/// Schedules the deletion of `keys` at `delete_after_ms`, keeping an earlier schedule.
async fn schedule_deletions(conn: &mut Conn, keys: &[&str], delete_after_ms: i64) -> Result<()> {
    let mut keys = keys.to_vec();
    keys.sort_unstable();
    keys.dedup();
    if keys.is_empty() {
        return Ok(());
    }
    // One statement for every key: a consolidation swap unreferences one object per slice it
    // replaces (thousands), and a statement each held the writers' queue, and the produce
    // acks waiting on it, for tens of milliseconds.
    let rows: Vec<(&str, i64)> = keys.iter().map(|k| (*k, delete_after_ms)).collect();
    let sql = schedule_deletions_sql!(concat!(
        "SELECT value ->> 0, CAST(value ->> 1 AS BIGINT) FROM ",
        json_elements!("$1"),
        " WHERE true"
    ));
    execute_over(conn, sql, &rows).await
}

/// Object keys of `segments`.
fn keys_of(segments: &[SegmentInfo]) -> Vec<&str> {
    segments.iter().map(|s| s.object_key.as_str()).collect()
}

/// Refuses a group write unless `fence` names the holder of the group's coordinator lease at
/// its epoch, unexpired by the database's clock. Run first in a write transaction: the lease row
/// stays locked until it ends, so a takeover (which updates that row) waits for the write and
/// the check holds at commit time.
async fn check_group_fence(conn: &mut Conn, group: &str, fence: &LeaseFence) -> Result<()> {
    let held = sqlx::query(concat!(
        "SELECT 1 FROM group_leases WHERE group_id = $1 AND agent_id = $2 AND epoch = $3 \
         AND expires_at >= ",
        db_now_ms!(),
        for_update!()
    ))
    .bind(group)
    .bind(&fence.agent_id)
    .bind(fence.epoch)
    .fetch_optional(conn)
    .await?;
    match held {
        Some(_) => Ok(()),
        None => Err(group_fenced(group, fence)),
    }
}

fn group_fenced(group: &str, fence: &LeaseFence) -> MetadataError {
    MetadataError::GroupFenced {
        group: group.to_owned(),
        agent_id: fence.agent_id.clone(),
        epoch: fence.epoch,
    }
}

/// Takes or renews, for `agent_id`, the leases of the existing partitions among `keys` (the
/// JSON bound as `$3` by [`lease_keys!`]) that are free, expired, or already its own, as
/// [`Leases::acquire_lease`] describes. Run inside a write transaction that has locked
/// those partition rows, so the takeover serializes with commits checking the old fence.
async fn upsert_leases(
    conn: &mut Conn,
    agent_id: &str,
    keys: &str,
    ttl_ms: i64,
) -> Result<Vec<PartitionLease>> {
    // One upsert decides per partition: free -> epoch 1; live and ours -> renew at the same
    // epoch; expired (anyone's) -> take over at epoch + 1; live and someone else's -> no row.
    // Live leases of others are filtered out before the upsert too, so it does not even lock
    // their rows (in sorted order, as every multi-row lease statement does), which keeps it
    // from waiting on, or deadlocking with, their holder's renewal.
    sqlx::query(concat!(
        "INSERT INTO partition_leases (",
        lease_columns!(),
        ") SELECT topic, partition_id, $1, 1, ",
        db_now_ms!(),
        " + $2 FROM partitions \
         WHERE (topic, partition_id) IN (SELECT topic, partition_id FROM ",
        lease_keys!("$3"),
        ") AND NOT EXISTS (SELECT 1 FROM partition_leases AS l \
             WHERE l.topic = partitions.topic AND l.partition_id = partitions.partition_id \
             AND l.agent_id <> $1 AND l.expires_at >= ",
        db_now_ms!(),
        ") ORDER BY topic, partition_id \
         ON CONFLICT (topic, partition_id) DO UPDATE SET \
         epoch = CASE WHEN partition_leases.agent_id = excluded.agent_id \
                      AND partition_leases.expires_at >= ",
        db_now_ms!(),
        " THEN partition_leases.epoch ELSE partition_leases.epoch + 1 END, \
         agent_id = excluded.agent_id, \
         expires_at = excluded.expires_at \
         WHERE partition_leases.agent_id = excluded.agent_id \
            OR partition_leases.expires_at < ",
        db_now_ms!(),
        " RETURNING ",
        lease_columns!()
    ))
    .bind(agent_id)
    .bind(ttl_ms)
    .bind(keys)
    .fetch_all(conn)
    .await?
    .iter()
    .map(rows::lease)
    .collect()
}

/// Rows (tuples of strings and integers) as one JSON array of arrays, the text a set-based
/// statement binds once and reads with `json_elements!` (partition keys: [`lease_keys!`]).
fn json_rows<K: serde::Serialize>(keys: &[K]) -> Result<String> {
    // Tuples of strings and integers always serialize; this is only for the type.
    serde_json::to_string(keys).map_err(|e| MetadataError::Invalid(format!("JSON rows: {e}")))
}

/// Leases in a defined order: `RETURNING` rows come in none.
fn sorted(mut leases: Vec<PartitionLease>) -> Vec<PartitionLease> {
    leases.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    leases
}

/// Segments overlapping a range, totalled: count, records, first base offset, last offset,
/// and the offsets they span.
type SpanTotals = (i64, i64, Option<i64>, Option<i64>, i64);

/// Refuses a swap unless the segments `found` overlapping `merged`'s range tile it exactly and
/// hold `records` records. Segments of a partition never overlap (commits append at the high
/// watermark, swaps replace exact tilings), so segments that start and end where `merged` does
/// and span as many offsets as it tile it without a gap.
fn check_tiling(merged: &SegmentInfo, records: i64, found: SpanTotals) -> Result<()> {
    let (count, found_records, first, last, spanned) = found;
    let tiles = count > 0
        && first == Some(merged.base_offset)
        && last == Some(merged.last_offset)
        && spanned == merged.last_offset - merged.base_offset + 1
        && found_records == records;
    if tiles {
        Ok(())
    } else {
        Err(MetadataError::Invalid(format!(
            "segments of '{}'/{} no longer tile offsets {}..={} with {records} records",
            merged.topic, merged.partition, merged.base_offset, merged.last_offset
        )))
    }
}

/// The segments `sql` selects with `(topic, partition, value)` bound as `$1..$3`.
async fn segments_where<'e>(
    executor: impl Executor<'e, Database = Db>,
    sql: &'static str,
    (topic, partition, value): (&str, u32, i64),
) -> Result<Vec<SegmentInfo>> {
    sqlx::query(sql)
        .bind(topic)
        .bind(i64::from(partition))
        .bind(value)
        .fetch_all(executor)
        .await?
        .iter()
        .map(rows::segment)
        .collect()
}

impl Store {
    /// At most `limit` segments of a partition whose `last_offset >= from_offset`, in offset
    /// order; an unknown partition is an error, not an empty list.
    async fn segments_from(
        &self,
        topic: &str,
        partition: u32,
        from_offset: i64,
        limit: i64,
    ) -> Result<Vec<SegmentInfo>> {
        let mut conn = self.pool.acquire().await?;
        let segments: Vec<SegmentInfo> = sqlx::query(concat!(
            "SELECT ",
            segment_columns!(),
            " FROM segments WHERE topic = $1 AND partition_id = $2 AND last_offset >= $3 \
             ORDER BY base_offset LIMIT $4"
        ))
        .bind(topic)
        .bind(i64::from(partition))
        .bind(from_offset)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(rows::segment)
        .collect::<Result<_>>()?;
        if segments.is_empty() {
            // Distinguish "nothing there yet" from "no such partition".
            partition_state(&mut conn, SELECT_PARTITION, topic, partition).await?;
        }
        Ok(segments)
    }

    /// Replaces the segments tiling `merged`'s offsets (holding `replaced_records` records)
    /// by `merged`, fenced, scheduling their objects' deletion; returns how many it replaced:
    /// consolidation and compaction.
    ///
    /// The replaced rows never leave the database: a consolidation swap replaces thousands of
    /// slices, and reading them out (one row at a time through SQLite's connection thread) was
    /// most of a swap, which holds the writers' queue that flush commits wait on.
    async fn swap_segments(
        &self,
        merged: &SegmentInfo,
        replaced_records: i64,
        fence: Option<&LeaseFence>,
        delete_after_ms: i64,
    ) -> Result<usize> {
        let (topic, partition) = (merged.topic.as_str(), i64::from(merged.partition));
        let range = (merged.base_offset, merged.last_offset);
        let mut tx = self.write_tx().await?;
        partition_state(&mut tx, LOCK_PARTITION, topic, merged.partition).await?;
        if let Some(fence) = fence {
            check_fence(&mut tx, merged, fence).await?;
        }
        let found: SpanTotals = sqlx::query_as(
            "SELECT count(*), CAST(COALESCE(sum(record_count), 0) AS BIGINT), min(base_offset), \
             max(last_offset), CAST(COALESCE(sum(last_offset - base_offset + 1), 0) AS BIGINT) \
             FROM segments WHERE topic = $1 AND partition_id = $2 \
             AND last_offset >= $3 AND base_offset <= $4",
        )
        .bind(topic)
        .bind(partition)
        .bind(range.0)
        .bind(range.1)
        .fetch_one(&mut *tx)
        .await?;
        check_tiling(merged, replaced_records, found)?;
        // The replaced objects' deletion, from the rows themselves, before they go.
        sqlx::query(schedule_deletions_sql!(
            "SELECT DISTINCT object_key, CAST($5 AS BIGINT) FROM segments \
             WHERE topic = $1 AND partition_id = $2 AND base_offset >= $3 AND last_offset <= $4"
        ))
        .bind(topic)
        .bind(partition)
        .bind(range.0)
        .bind(range.1)
        .bind(delete_after_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM segments WHERE topic = $1 AND partition_id = $2 \
             AND base_offset >= $3 AND last_offset <= $4",
        )
        .bind(topic)
        .bind(partition)
        .bind(range.0)
        .bind(range.1)
        .execute(&mut *tx)
        .await?;
        insert_segments(&mut tx, &[merged]).await?;
        tx.commit().await?;
        Ok(found.0 as usize)
    }
}

#[async_trait]
impl Catalog for Store {
    async fn create_topic(&self, topic: NewTopic) -> Result<Topic> {
        if topic.partitions == 0 {
            return Err(MetadataError::Invalid(format!(
                "topic '{}' needs at least one partition",
                topic.name
            )));
        }
        let created = Topic {
            id: Uuid::new_v4(),
            name: topic.name,
            partitions: topic.partitions,
            config: topic.config,
            created_at_ms: now_ms(),
        };
        let mut tx = self.write_tx().await?;
        let inserted = sqlx::query(concat!(
            "INSERT INTO topics (",
            topic_columns!(),
            ") VALUES ($1, $2, $3, $4, $5)"
        ))
        .bind(created.id.to_string())
        .bind(&created.name)
        .bind(i64::from(created.partitions))
        .bind(rows::encode_config(&created.config)?)
        .bind(created.created_at_ms)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(MetadataError::TopicExists(created.name));
            }
            other => other?,
        };
        insert_partitions(&mut tx, &created.name, 0..created.partitions).await?;
        tx.commit().await?;
        Ok(created)
    }

    async fn get_topic(&self, name: &str) -> Result<Option<Topic>> {
        fetch_topic(&self.pool, SELECT_TOPIC, name).await
    }

    async fn list_topics(&self) -> Result<Vec<Topic>> {
        sqlx::query(concat!(
            "SELECT ",
            topic_columns!(),
            " FROM topics ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(rows::topic)
        .collect()
    }

    async fn delete_topic(&self, name: &str, delete_after_ms: i64) -> Result<Vec<SegmentInfo>> {
        let mut tx = self.write_tx().await?;
        if fetch_topic(&mut *tx, LOCK_TOPIC, name).await?.is_none() {
            return Err(MetadataError::UnknownTopic(name.to_owned()));
        }
        // Wait out in-flight commits so the returned list includes their segments.
        sqlx::query(concat!(
            "SELECT partition_id FROM partitions WHERE topic = $1 ORDER BY partition_id",
            for_update!()
        ))
        .bind(name)
        .fetch_all(&mut *tx)
        .await?;
        let segments = sqlx::query(concat!(
            "SELECT ",
            segment_columns!(),
            " FROM segments WHERE topic = $1 ORDER BY partition_id, base_offset"
        ))
        .bind(name)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(rows::segment)
        .collect::<Result<Vec<_>>>()?;
        // Children first, so this does not depend on foreign-key cascades being enabled.
        for sql in [
            "DELETE FROM consumer_offsets WHERE topic = $1",
            "DELETE FROM partition_leases WHERE topic = $1",
            "DELETE FROM producer_states WHERE topic = $1",
            "DELETE FROM segments WHERE topic = $1",
            "DELETE FROM partitions WHERE topic = $1",
            "DELETE FROM topics WHERE name = $1",
        ] {
            sqlx::query(sql).bind(name).execute(&mut *tx).await?;
        }
        txn_sql::forget_topic(&mut tx, name).await?;
        schedule_deletions(&mut tx, &keys_of(&segments), delete_after_ms).await?;
        tx.commit().await?;
        Ok(segments)
    }

    async fn add_partitions(&self, name: &str, new_count: u32) -> Result<Topic> {
        let mut tx = self.write_tx().await?;
        let mut topic = fetch_topic(&mut *tx, LOCK_TOPIC, name)
            .await?
            .ok_or_else(|| MetadataError::UnknownTopic(name.to_owned()))?;
        if new_count <= topic.partitions {
            return Err(MetadataError::Invalid(format!(
                "topic '{name}' has {} partitions; cannot change to {new_count}",
                topic.partitions
            )));
        }
        insert_partitions(&mut tx, name, topic.partitions..new_count).await?;
        sqlx::query("UPDATE topics SET partitions = $2 WHERE name = $1")
            .bind(name)
            .bind(i64::from(new_count))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        topic.partitions = new_count;
        Ok(topic)
    }

    async fn alter_topic_config(
        &self,
        name: &str,
        change: &TopicConfigChange<'_>,
    ) -> Result<Topic> {
        let mut tx = self.write_tx().await?;
        let mut topic = fetch_topic(&mut *tx, LOCK_TOPIC, name)
            .await?
            .ok_or_else(|| MetadataError::UnknownTopic(name.to_owned()))?;
        topic.config = change(&topic.config).map_err(MetadataError::Invalid)?;
        sqlx::query("UPDATE topics SET config = $2 WHERE name = $1")
            .bind(name)
            .bind(rows::encode_config(&topic.config)?)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(topic)
    }

    async fn get_partition(&self, topic: &str, partition: u32) -> Result<PartitionState> {
        let mut conn = self.pool.acquire().await?;
        partition_state(&mut conn, SELECT_PARTITION, topic, partition).await
    }

    async fn get_partition_uncached(&self, topic: &str, partition: u32) -> Result<PartitionState> {
        // No cache here: the database itself answers.
        self.get_partition(topic, partition).await
    }

    async fn list_partitions(&self, topic: &str) -> Result<Vec<PartitionState>> {
        let mut conn = self.pool.acquire().await?;
        let partitions = sqlx::query(concat!(
            "SELECT ",
            partition_columns!(),
            " FROM partitions WHERE topic = $1 ORDER BY partition_id"
        ))
        .bind(topic)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(rows::partition)
        .collect::<Result<Vec<_>>>()?;
        // Every topic has at least one partition, so none means no topic.
        if partitions.is_empty() {
            return Err(MetadataError::UnknownTopic(topic.to_owned()));
        }
        Ok(partitions)
    }
}

#[async_trait]
impl SegmentLog for Store {
    async fn commit_segments(&self, commits: &[SegmentCommit]) -> Result<Vec<CommitOutcome>> {
        if let Some(bad) = commits
            .iter()
            .find(|c| c.segment.last_offset < c.segment.base_offset)
        {
            return Err(MetadataError::Invalid(format!(
                "segment '{}' ends at {} before its base offset {}",
                bad.segment.object_key, bad.segment.last_offset, bad.segment.base_offset
            )));
        }
        // Partition rows are locked in one global order (and never waited for: a held one is
        // skipped and tried again after a pause), so no two group commits can deadlock.
        let mut order: Vec<usize> = (0..commits.len()).collect();
        order.sort_by(|&a, &b| {
            let (a, b) = (&commits[a].segment, &commits[b].segment);
            (&a.topic, a.partition, a.base_offset).cmp(&(&b.topic, b.partition, b.base_offset))
        });
        let mut lapsed = vec![false; commits.len()];
        loop {
            let mut outcomes = vec![CommitOutcome::Fenced; commits.len()];
            let mut tx = self.write_tx().await?;
            commit_set(&mut tx, commits, &order, &lapsed, &mut outcomes).await?;
            for pause in ROW_LOCK_PAUSES_MS {
                let locked: Vec<usize> = order
                    .iter()
                    .copied()
                    .filter(|&i| outcomes[i] == CommitOutcome::RowLocked)
                    .collect();
                if locked.is_empty() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                commit_set(&mut tx, commits, &locked, &lapsed, &mut outcomes).await?;
            }
            // Each fence was checked when its commit was applied; a lease may have lapsed
            // since (a stalled agent, a slow transaction) and been taken by another agent.
            // Checked again, by the database's clock, right before the commit; if any lapsed,
            // the transaction is rolled back and redone without them (a lease never comes
            // back, so this ends). Where writers exclude each other, no one can take a lease
            // while this transaction runs, so the check made when applying stands.
            let newly = if super::WRITERS_EXCLUDE_EACH_OTHER {
                Vec::new()
            } else {
                lapsed_fences(&mut tx, commits, &outcomes, &lapsed).await?
            };
            if newly.is_empty() {
                tx.commit().await?;
                return Ok(outcomes);
            }
            drop(tx);
            newly.into_iter().for_each(|i| lapsed[i] = true);
        }
    }

    async fn list_producer_snapshots(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<ProducerSnapshots> {
        let snapshots = sqlx::query(concat!(
            "SELECT ",
            producer_columns!(),
            " FROM producer_states WHERE topic = $1 AND partition_id = $2 ORDER BY producer_id"
        ))
        .bind(topic)
        .bind(i64::from(partition))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(rows::producer_snapshot)
        .collect::<Result<Vec<_>>>()?;
        // Read after the snapshots: an expiry committing in between deleted snapshots this
        // read may miss, and raised the bound in the same transaction, so the bound read here
        // covers every snapshot missing above.
        let forgotten_below: Option<i64> = sqlx::query_scalar(
            "SELECT producers_forgotten_below FROM partitions \
             WHERE topic = $1 AND partition_id = $2",
        )
        .bind(topic)
        .bind(i64::from(partition))
        .fetch_optional(&self.pool)
        .await?;
        Ok(ProducerSnapshots {
            snapshots,
            forgotten_below: forgotten_below.unwrap_or(0),
        })
    }

    async fn expire_producer_snapshots(&self, updated_before_ms: i64) -> Result<u64> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "UPDATE partitions SET producers_forgotten_below = expired.below \
             FROM (SELECT topic, partition_id, MAX(producer_id) + 1 AS below \
                   FROM producer_states WHERE updated_at < $1 \
                   GROUP BY topic, partition_id) AS expired \
             WHERE partitions.topic = expired.topic \
               AND partitions.partition_id = expired.partition_id \
               AND partitions.producers_forgotten_below < expired.below",
        )
        .bind(updated_before_ms)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query("DELETE FROM producer_states WHERE updated_at < $1")
            .bind(updated_before_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    async fn allocate_producer_id(&self) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "UPDATE producer_id_sequence SET next_id = next_id + 1 RETURNING next_id - 1",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    async fn list_segments(
        &self,
        topic: &str,
        partition: u32,
        from_offset: i64,
    ) -> Result<Vec<SegmentInfo>> {
        self.segments_from(topic, partition, from_offset, i64::MAX)
            .await
    }

    async fn list_segments_page(
        &self,
        topic: &str,
        partition: u32,
        from_offset: i64,
        limit: u32,
    ) -> Result<Vec<SegmentInfo>> {
        self.segments_from(topic, partition, from_offset, i64::from(limit))
            .await
    }

    async fn segment_totals(&self, topic: &str, partition: u32) -> Result<SegmentTotals> {
        let mut conn = self.pool.acquire().await?;
        // PostgreSQL sums BIGINTs as NUMERIC; the cast brings it back.
        let (segments, bytes, max_timestamp_ms): (i64, i64, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*), CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT), MAX(max_timestamp) \
             FROM segments WHERE topic = $1 AND partition_id = $2",
        )
        .bind(topic)
        .bind(i64::from(partition))
        .fetch_one(&mut *conn)
        .await?;
        if segments == 0 {
            // Distinguish "nothing there yet" from "no such partition".
            partition_state(&mut conn, SELECT_PARTITION, topic, partition).await?;
        }
        Ok(SegmentTotals {
            segments: rows::from_sql_int(segments, "segment count")?,
            bytes: rows::from_sql_int(bytes, "segment bytes")?,
            max_timestamp_ms,
        })
    }

    async fn first_segment_reaching(
        &self,
        topic: &str,
        partition: u32,
        timestamp_ms: i64,
    ) -> Result<Option<SegmentInfo>> {
        let mut conn = self.pool.acquire().await?;
        // Walks the partition in offset order (its primary key) and stops at the first match:
        // timestamps are not monotonic across segments, so no index on them could answer this.
        let mut found = segments_where(
            &mut *conn,
            concat!(
                "SELECT ",
                segment_columns!(),
                " FROM segments WHERE topic = $1 AND partition_id = $2 AND max_timestamp >= $3 \
                 ORDER BY base_offset LIMIT 1"
            ),
            (topic, partition, timestamp_ms),
        )
        .await?;
        if found.is_empty() {
            partition_state(&mut conn, SELECT_PARTITION, topic, partition).await?;
        }
        Ok(found.pop())
    }

    async fn truncate_before(
        &self,
        topic: &str,
        partition: u32,
        new_log_start: i64,
        delete_after_ms: i64,
    ) -> Result<Vec<SegmentInfo>> {
        let mut tx = self.write_tx().await?;
        let state = partition_state(&mut tx, LOCK_PARTITION, topic, partition).await?;
        let log_start = state.truncated_log_start(new_log_start);
        let mut deleted = segments_where(
            &mut *tx,
            concat!(
                "DELETE FROM segments WHERE topic = $1 AND partition_id = $2 AND last_offset < $3 \
                 RETURNING ",
                segment_columns!()
            ),
            (topic, partition, log_start),
        )
        .await?;
        sqlx::query(
            "UPDATE partitions SET log_start_offset = $3 WHERE topic = $1 AND partition_id = $2",
        )
        .bind(topic)
        .bind(i64::from(partition))
        .bind(log_start)
        .execute(&mut *tx)
        .await?;
        schedule_deletions(&mut tx, &keys_of(&deleted), delete_after_ms).await?;
        tx.commit().await?;
        // RETURNING rows come in no defined order.
        deleted.sort_by_key(|segment| segment.base_offset);
        Ok(deleted)
    }

    async fn replace_segments(
        &self,
        merged: &SegmentInfo,
        fence: Option<&LeaseFence>,
        delete_after_ms: i64,
    ) -> Result<usize> {
        self.swap_segments(merged, merged.record_count, fence, delete_after_ms)
            .await
    }

    async fn compact_segments(
        &self,
        compacted: &SegmentInfo,
        replaced_records: i64,
        fence: Option<&LeaseFence>,
        delete_after_ms: i64,
    ) -> Result<usize> {
        self.swap_segments(compacted, replaced_records, fence, delete_after_ms)
            .await
    }

    async fn all_segment_keys(&self) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT DISTINCT object_key FROM segments ORDER BY object_key")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn schedule_object_deletions(&self, keys: &[String], delete_after_ms: i64) -> Result<()> {
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut tx = self.write_tx().await?;
        schedule_deletions(&mut tx, &keys, delete_after_ms).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn due_object_deletions(&self, now_ms: i64, limit: u32) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT object_key FROM object_deletions AS d WHERE delete_after <= $1 \
             AND NOT EXISTS (SELECT 1 FROM segments AS s WHERE s.object_key = d.object_key) \
             ORDER BY delete_after, object_key LIMIT $2",
        )
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn forget_object_deletions(&self, keys: &[String]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        // One statement for the whole batch, as in `schedule_deletions`.
        let rows: Vec<(&str,)> = keys.iter().map(|k| (k.as_str(),)).collect();
        let sql = concat!(
            "DELETE FROM object_deletions WHERE object_key IN (SELECT value ->> 0 FROM ",
            json_elements!("$1"),
            ")"
        );
        let mut tx = self.write_tx().await?;
        execute_over(&mut tx, sql, &rows).await?;
        tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl Leases for Store {
    async fn register_agent(&self, agent: &AgentInfo) -> Result<()> {
        sqlx::query(concat!(
            "INSERT INTO agents (",
            agent_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (agent_id) DO UPDATE SET \
             kafka_host = excluded.kafka_host, \
             kafka_port = excluded.kafka_port, \
             http_addr = excluded.http_addr, \
             node_id = excluded.node_id, \
             last_heartbeat = excluded.last_heartbeat, \
             started_at = excluded.started_at"
        ))
        .bind(&agent.agent_id)
        .bind(&agent.kafka_host)
        .bind(i64::from(agent.kafka_port))
        .bind(&agent.http_addr)
        .bind(i64::from(agent.node_id))
        .bind(agent.last_heartbeat_ms)
        .bind(agent.started_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn heartbeat(&self, agent_id: &str, now_ms: i64) -> Result<bool> {
        let result = sqlx::query("UPDATE agents SET last_heartbeat = $2 WHERE agent_id = $1")
            .bind(agent_id)
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn list_agents(&self, alive_since_ms: i64) -> Result<Vec<AgentInfo>> {
        sqlx::query(concat!(
            "SELECT ",
            agent_columns!(),
            " FROM agents WHERE last_heartbeat >= $1 ORDER BY agent_id"
        ))
        .bind(alive_since_ms)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(rows::agent)
        .collect()
    }

    async fn deregister_agent(&self, agent_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM agents WHERE agent_id = $1")
            .bind(agent_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn acquire_lease(
        &self,
        topic: &str,
        partition: u32,
        agent_id: &str,
        ttl_ms: i64,
    ) -> Result<Option<PartitionLease>> {
        let keys = json_rows(&[(topic, partition)])?;
        let mut tx = self.write_tx().await?;
        // Also tells a missing partition from a missing topic.
        partition_state(&mut tx, LOCK_PARTITION, topic, partition).await?;
        let lease = upsert_leases(&mut tx, agent_id, &keys, ttl_ms).await?;
        tx.commit().await?;
        Ok(lease.into_iter().next())
    }

    async fn acquire_leases(
        &self,
        agent_id: &str,
        partitions: &[(String, u32)],
        ttl_ms: i64,
    ) -> Result<Vec<PartitionLease>> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let keys = json_rows(partitions)?;
        let mut tx = self.write_tx().await?;
        // Lock the partition rows as `acquire_lease` does, in sorted order, so two agents'
        // batches (and `delete_topic`) cannot deadlock on them. A row another transaction
        // holds (a commit in progress, or a stalled agent's) is skipped rather than waited
        // for: that partition is left out and retried next round, and the rest of the batch
        // does not wait behind it.
        let locked: Vec<(String, i64)> = sqlx::query_as(concat!(
            "SELECT topic, partition_id FROM partitions \
             WHERE (topic, partition_id) IN (SELECT topic, partition_id FROM ",
            lease_keys!("$1"),
            ") ORDER BY topic, partition_id",
            skip_locked!()
        ))
        .bind(keys.as_str())
        .fetch_all(&mut *tx)
        .await?;
        let keys = json_rows(&locked)?;
        let leases = upsert_leases(&mut tx, agent_id, &keys, ttl_ms).await?;
        tx.commit().await?;
        Ok(sorted(leases))
    }

    async fn renew_leases(
        &self,
        agent_id: &str,
        held: &[HeldLease],
        ttl_ms: i64,
    ) -> Result<Vec<PartitionLease>> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<(&str, u32, i64)> = held
            .iter()
            .map(|h| (h.topic.as_str(), h.partition, h.epoch))
            .collect();
        let keys = json_rows(&keys)?;
        let mut tx = self.write_tx().await?;
        // Only the holder's unexpired lease at the same epoch is extended: the epoch and holder
        // never change here, so a lease taken over, released or expired stays lost. The inner
        // select locks the rows in sorted order (PostgreSQL rechecks its conditions on rows
        // changed meanwhile), so concurrent multi-row lease statements cannot deadlock.
        let renewed = sqlx::query(concat!(
            "UPDATE partition_leases SET expires_at = ",
            db_now_ms!(),
            " + $2 WHERE agent_id = $1 AND expires_at >= ",
            db_now_ms!(),
            " AND (topic, partition_id) IN ( \
                 SELECT topic, partition_id FROM partition_leases \
                 WHERE agent_id = $1 AND expires_at >= ",
            db_now_ms!(),
            " AND (topic, partition_id, epoch) IN (SELECT topic, partition_id, epoch FROM ",
            lease_keys!("$3"),
            ") ORDER BY topic, partition_id",
            for_update!(),
            ") RETURNING ",
            lease_columns!()
        ))
        .bind(agent_id)
        .bind(ttl_ms)
        .bind(keys.as_str())
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(rows::lease)
        .collect::<Result<Vec<_>>>()?;
        tx.commit().await?;
        Ok(sorted(renewed))
    }

    async fn release_lease(
        &self,
        topic: &str,
        partition: u32,
        agent_id: &str,
        epoch: i64,
    ) -> Result<()> {
        // Expire rather than delete, so the next holder's epoch still goes up.
        sqlx::query(
            "UPDATE partition_leases SET expires_at = 0 \
             WHERE topic = $1 AND partition_id = $2 AND agent_id = $3 AND epoch = $4",
        )
        .bind(topic)
        .bind(i64::from(partition))
        .bind(agent_id)
        .bind(epoch)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_leases(&self) -> Result<Vec<PartitionLease>> {
        sqlx::query(concat!(
            "SELECT ",
            lease_columns!(),
            " FROM partition_leases ORDER BY topic, partition_id"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(rows::lease)
        .collect()
    }
}

#[async_trait]
impl GroupStore for Store {
    async fn commit_offsets(
        &self,
        group: &str,
        fence: Option<&LeaseFence>,
        offsets: &[CommittedOffset],
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        if let Some(fence) = fence {
            check_group_fence(&mut tx, group, fence).await?;
        }
        for offset in offsets {
            let query = sqlx::query(concat!(
                "INSERT INTO consumer_offsets (group_id, ",
                offset_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (group_id, topic, partition_id) DO UPDATE SET \
                 committed_offset = excluded.committed_offset, \
                 leader_epoch = excluded.leader_epoch, \
                 metadata = excluded.metadata, \
                 committed_at = excluded.committed_at"
            ))
            .bind(group);
            bind_offset(query, offset).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn fetch_offsets(
        &self,
        group: &str,
        topic: Option<&str>,
    ) -> Result<Vec<CommittedOffset>> {
        sqlx::query(concat!(
            "SELECT ",
            offset_columns!(),
            " FROM consumer_offsets WHERE group_id = $1 AND ($2 IS NULL OR topic = $2) \
             ORDER BY topic, partition_id"
        ))
        .bind(group)
        .bind(topic)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(rows::committed_offset)
        .collect()
    }

    async fn delete_offsets(
        &self,
        group: &str,
        fence: Option<&LeaseFence>,
        partitions: &[(String, u32)],
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        if let Some(fence) = fence {
            check_group_fence(&mut tx, group, fence).await?;
        }
        for (topic, partition) in partitions {
            sqlx::query(
                "DELETE FROM consumer_offsets \
                 WHERE group_id = $1 AND topic = $2 AND partition_id = $3",
            )
            .bind(group)
            .bind(topic)
            .bind(i64::from(*partition))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_groups(&self) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT DISTINCT group_id FROM consumer_offsets ORDER BY group_id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn delete_group(&self, group: &str, fence: Option<&LeaseFence>) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        if let Some(fence) = fence {
            check_group_fence(&mut tx, group, fence).await?;
        }
        let result = sqlx::query("DELETE FROM consumer_offsets WHERE group_id = $1")
            .bind(group)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(result.rows_affected() > 0)
    }

    async fn acquire_group_lease(
        &self,
        group: &str,
        agent_id: &str,
        ttl_ms: i64,
    ) -> Result<Option<GroupLease>> {
        // As `upsert_leases`: free -> epoch 1; live and ours -> same epoch; expired (anyone's)
        // -> epoch + 1; live and someone else's -> no row. The generation is never touched.
        let lease = sqlx::query(concat!(
            "INSERT INTO group_leases (group_id, agent_id, epoch, expires_at, generation) \
             VALUES ($1, $2, 1, ",
            db_now_ms!(),
            " + $3, 0) ON CONFLICT (group_id) DO UPDATE SET \
             epoch = CASE WHEN group_leases.agent_id = excluded.agent_id \
                          AND group_leases.expires_at >= ",
            db_now_ms!(),
            " THEN group_leases.epoch ELSE group_leases.epoch + 1 END, \
             agent_id = excluded.agent_id, \
             expires_at = excluded.expires_at \
             WHERE group_leases.agent_id = excluded.agent_id OR group_leases.expires_at < ",
            db_now_ms!(),
            " RETURNING ",
            group_lease_columns!()
        ))
        .bind(group)
        .bind(agent_id)
        .bind(ttl_ms)
        .fetch_optional(&self.pool)
        .await?;
        lease.map(|row| rows::group_lease(&row)).transpose()
    }

    async fn renew_group_leases(
        &self,
        agent_id: &str,
        held: &[(String, i64)],
        ttl_ms: i64,
    ) -> Result<Vec<GroupLease>> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let keys = json_rows(held)?;
        // The inner select locks the rows in sorted order and skips those locked by a
        // transaction in progress (an offset commit of the group), so no row stalls the batch.
        let mut renewed = sqlx::query(concat!(
            "UPDATE group_leases SET expires_at = ",
            db_now_ms!(),
            " + $2 WHERE group_id IN ( \
                 SELECT group_id FROM group_leases WHERE agent_id = $1 AND expires_at >= ",
            db_now_ms!(),
            " AND (group_id, epoch) IN (SELECT value ->> 0, CAST(value ->> 1 AS BIGINT) FROM ",
            json_elements!("$3"),
            ") ORDER BY group_id",
            skip_locked!(),
            ") RETURNING ",
            group_lease_columns!()
        ))
        .bind(agent_id)
        .bind(ttl_ms)
        .bind(keys.as_str())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(rows::group_lease)
        .collect::<Result<Vec<_>>>()?;
        renewed.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(renewed)
    }

    async fn release_group_lease(&self, group: &str, fence: &LeaseFence) -> Result<()> {
        // Expire rather than delete, so the next holder's epoch still goes up.
        sqlx::query(
            "UPDATE group_leases SET expires_at = 0 \
             WHERE group_id = $1 AND agent_id = $2 AND epoch = $3",
        )
        .bind(group)
        .bind(&fence.agent_id)
        .bind(fence.epoch)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn record_group_generation(
        &self,
        group: &str,
        fence: &LeaseFence,
        generation: i32,
    ) -> Result<()> {
        let updated = sqlx::query(concat!(
            "UPDATE group_leases SET generation = \
             CASE WHEN generation < $4 THEN $4 ELSE generation END \
             WHERE group_id = $1 AND agent_id = $2 AND epoch = $3 AND expires_at >= ",
            db_now_ms!()
        ))
        .bind(group)
        .bind(&fence.agent_id)
        .bind(fence.epoch)
        .bind(i64::from(generation))
        .execute(&self.pool)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(group_fenced(group, fence));
        }
        Ok(())
    }

    async fn record_group_members(
        &self,
        group: &str,
        fence: &LeaseFence,
        generation: i32,
        members: Option<&str>,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        check_group_fence(&mut tx, group, fence).await?;
        sqlx::query(
            "UPDATE group_leases SET members = $2, members_generation = $3 \
             WHERE group_id = $1 AND members_generation <= $3",
        )
        .bind(group)
        .bind(members)
        .bind(i64::from(generation))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn group_members(&self, group: &str) -> Result<Option<(i32, String)>> {
        let row = sqlx::query(
            "SELECT members_generation, members FROM group_leases \
             WHERE group_id = $1 AND members IS NOT NULL",
        )
        .bind(group)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| rows::group_members(&row)).transpose()
    }

    async fn list_group_leases(&self) -> Result<Vec<GroupLease>> {
        sqlx::query(concat!(
            "SELECT ",
            group_lease_columns!(),
            " FROM group_leases WHERE expires_at >= ",
            db_now_ms!(),
            " ORDER BY group_id"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(rows::group_lease)
        .collect()
    }
}

#[async_trait]
impl Credentials for Store {
    async fn upsert_credential(&self, c: &UserCredential) -> Result<()> {
        sqlx::query(concat!(
            "INSERT INTO credentials (",
            credential_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (user_name, mechanism) DO UPDATE SET \
             salt = excluded.salt, iterations = excluded.iterations, \
             stored_key = excluded.stored_key, server_key = excluded.server_key"
        ))
        .bind(&c.user)
        .bind(&c.mechanism)
        .bind(&c.salt)
        .bind(i64::from(c.iterations))
        .bind(&c.stored_key)
        .bind(&c.server_key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_credential(&self, user: &str, mechanism: &str) -> Result<Option<UserCredential>> {
        sqlx::query(concat!(
            "SELECT ",
            credential_columns!(),
            " FROM credentials WHERE user_name = $1 AND mechanism = $2"
        ))
        .bind(user)
        .bind(mechanism)
        .fetch_optional(&self.pool)
        .await?
        .map(|row| rows::credential(&row))
        .transpose()
    }

    async fn list_credentials(&self) -> Result<Vec<UserCredential>> {
        sqlx::query(concat!(
            "SELECT ",
            credential_columns!(),
            " FROM credentials ORDER BY user_name, mechanism"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(rows::credential)
        .collect()
    }

    async fn delete_credential(&self, user: &str, mechanism: &str) -> Result<bool> {
        let result = sqlx::query("DELETE FROM credentials WHERE user_name = $1 AND mechanism = $2")
            .bind(user)
            .bind(mechanism)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() > 0)
    }
}

#[async_trait]
impl AclStore for Store {
    async fn create_acls(&self, acls: &[AclBinding]) -> Result<()> {
        let mut tx = self.write_tx().await?;
        for acl in acls {
            let insert = sqlx::query(concat!(
                "INSERT INTO acls (",
                acl_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING"
            ));
            bind_acl(insert, acl).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_acls(&self, filter: &AclBindingFilter) -> Result<Vec<AclBinding>> {
        selected_acls(&mut *self.pool.acquire().await?, filter).await
    }

    async fn delete_acls(&self, filter: &AclBindingFilter) -> Result<Vec<AclBinding>> {
        let mut tx = self.write_tx().await?;
        let mut deleted = Vec::new();
        for acl in selected_acls(&mut tx, filter).await? {
            let delete = sqlx::query(
                "DELETE FROM acls WHERE resource_type = $1 AND resource_name = $2 \
                 AND pattern_type = $3 AND principal = $4 AND host = $5 \
                 AND operation = $6 AND permission = $7",
            );
            let result = bind_acl(delete, &acl).execute(&mut *tx).await?;
            // A concurrent deletion (another agent) may have removed it first: report only
            // what this call removed.
            if result.rows_affected() > 0 {
                deleted.push(acl);
            }
        }
        tx.commit().await?;
        Ok(deleted)
    }
}
