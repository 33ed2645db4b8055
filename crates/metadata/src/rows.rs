//! The single place where table rows map to the public types: column lists (as macros, so
//! statements stay `&'static str` via `concat!`) and the decoders that read them back.
//!
//! Decoders go through [`RowExt`] so every SQL backend shares them.

use crate::{
    AbortedTxn, AclBinding, AgentInfo, CommittedOffset, GroupLease, MetadataError, PartitionLease,
    PartitionState, ProducerSnapshot, Result, SegmentInfo, Topic, TopicConfig, Transaction,
    TxnMarker, TxnState, UserCredential,
};
use uuid::Uuid;

/// Columns of `topics`, in the order [`topic`] reads them.
macro_rules! topic_columns {
    () => {
        "id, name, partitions, config, created_at"
    };
}

/// Columns of `partitions` as read by [`partition`].
macro_rules! partition_columns {
    () => {
        "partition_id, high_watermark, log_start_offset"
    };
}

/// Columns of `segments`, as read by [`segment`].
macro_rules! segment_columns {
    () => {
        "topic, partition_id, base_offset, last_offset, record_count, size_bytes, object_key, \
         min_timestamp, max_timestamp, created_at, object_offset, object_size"
    };
}

/// Columns of `consumer_offsets` as read by [`committed_offset`].
macro_rules! offset_columns {
    () => {
        "topic, partition_id, committed_offset, leader_epoch, metadata, committed_at"
    };
}

/// Columns of `agents`, as read by [`agent`].
macro_rules! agent_columns {
    () => {
        "agent_id, kafka_host, kafka_port, http_addr, node_id, last_heartbeat, started_at"
    };
}

/// Columns of `partition_leases`, as read by [`lease`].
macro_rules! lease_columns {
    () => {
        "topic, partition_id, agent_id, epoch, expires_at"
    };
}

/// Columns of `group_leases`, as read by [`group_lease`].
macro_rules! group_lease_columns {
    () => {
        "group_id, agent_id, epoch, generation"
    };
}

/// Columns of `credentials`, as read by [`credential`].
macro_rules! credential_columns {
    () => {
        "user_name, mechanism, salt, iterations, stored_key, server_key"
    };
}

/// Columns of `producer_states`, as read by [`producer_snapshot`] (after topic and partition).
macro_rules! producer_columns {
    () => {
        "producer_id, last_offset, updated_at, state"
    };
}

/// Columns of `acls`, as read by [`acl`] (also its primary key).
macro_rules! acl_columns {
    () => {
        "resource_type, resource_name, pattern_type, principal, host, operation, permission"
    };
}

/// Columns of `transactions`, as read by [`transaction`].
macro_rules! txn_columns {
    () => {
        "transactional_id, producer_id, producer_epoch, state, timeout_ms, txn_partitions, \
         offset_groups, started_at, updated_at, coordinator, coordinator_epoch, version"
    };
}

/// Columns of `txn_markers`, as read by [`txn_marker`].
macro_rules! marker_columns {
    () => {
        "topic, partition_id, producer_id, producer_epoch, is_commit, coordinator_epoch, \
         transactional_id"
    };
}

pub(crate) use {
    acl_columns, agent_columns, credential_columns, group_lease_columns, lease_columns,
    offset_columns, partition_columns, producer_columns, segment_columns, topic_columns,
};
pub(crate) use {marker_columns, txn_columns};

/// Typed column access shared by the SQL backends' row types.
pub(crate) trait RowExt {
    /// An integer column.
    fn int(&self, column: &str) -> Result<i64>;
    /// A non-null text column.
    fn text(&self, column: &str) -> Result<String>;
    /// A nullable text column.
    fn opt_text(&self, column: &str) -> Result<Option<String>>;
    /// A non-null binary column.
    fn bytes(&self, column: &str) -> Result<Vec<u8>>;
}

/// Implements [`RowExt`] for a sqlx row type.
macro_rules! impl_row_ext {
    ($row:ty) => {
        impl RowExt for $row {
            fn int(&self, column: &str) -> Result<i64> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn text(&self, column: &str) -> Result<String> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn opt_text(&self, column: &str) -> Result<Option<String>> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn bytes(&self, column: &str) -> Result<Vec<u8>> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
        }
    };
}

impl_row_ext!(sqlx::sqlite::SqliteRow);
impl_row_ext!(sqlx::postgres::PgRow);

/// Converts a stored integer into a narrower unsigned field, reporting corruption otherwise.
fn narrow<T: TryFrom<i64>>(row: &impl RowExt, column: &str) -> Result<T> {
    let value = row.int(column)?;
    T::try_from(value)
        .map_err(|_| MetadataError::Corrupt(format!("{column} = {value} is out of range")))
}

/// Converts a stored integer into an `i32` field.
fn int32(row: &impl RowExt, column: &str) -> Result<i32> {
    narrow(row, column)
}

pub(crate) fn topic(row: &impl RowExt) -> Result<Topic> {
    let id = row.text("id")?;
    let config = row.text("config")?;
    Ok(Topic {
        id: Uuid::parse_str(&id)
            .map_err(|e| MetadataError::Corrupt(format!("topic id '{id}': {e}")))?,
        name: row.text("name")?,
        partitions: narrow(row, "partitions")?,
        config: decode_config(&config)?,
        created_at_ms: row.int("created_at")?,
    })
}

pub(crate) fn partition(row: &impl RowExt) -> Result<PartitionState> {
    Ok(PartitionState {
        partition: narrow(row, "partition_id")?,
        high_watermark: row.int("high_watermark")?,
        log_start_offset: row.int("log_start_offset")?,
    })
}

pub(crate) fn segment(row: &impl RowExt) -> Result<SegmentInfo> {
    Ok(SegmentInfo {
        topic: row.text("topic")?,
        partition: narrow(row, "partition_id")?,
        base_offset: row.int("base_offset")?,
        last_offset: row.int("last_offset")?,
        record_count: row.int("record_count")?,
        size_bytes: narrow(row, "size_bytes")?,
        object_key: row.text("object_key")?,
        object_offset: narrow(row, "object_offset")?,
        object_size: narrow(row, "object_size")?,
        min_timestamp_ms: row.int("min_timestamp")?,
        max_timestamp_ms: row.int("max_timestamp")?,
        created_at_ms: row.int("created_at")?,
    })
}

pub(crate) fn committed_offset(row: &impl RowExt) -> Result<CommittedOffset> {
    Ok(CommittedOffset {
        topic: row.text("topic")?,
        partition: narrow(row, "partition_id")?,
        offset: row.int("committed_offset")?,
        leader_epoch: int32(row, "leader_epoch")?,
        metadata: row.opt_text("metadata")?,
        committed_at_ms: row.int("committed_at")?,
    })
}

pub(crate) fn agent(row: &impl RowExt) -> Result<AgentInfo> {
    Ok(AgentInfo {
        agent_id: row.text("agent_id")?,
        kafka_host: row.text("kafka_host")?,
        kafka_port: narrow(row, "kafka_port")?,
        http_addr: row.text("http_addr")?,
        node_id: int32(row, "node_id")?,
        last_heartbeat_ms: row.int("last_heartbeat")?,
        started_at_ms: row.int("started_at")?,
    })
}

pub(crate) fn producer_snapshot(row: &impl RowExt) -> Result<ProducerSnapshot> {
    Ok(ProducerSnapshot {
        producer_id: row.int("producer_id")?,
        last_offset: row.int("last_offset")?,
        updated_at_ms: row.int("updated_at")?,
        state: row.bytes("state")?,
    })
}

pub(crate) fn credential(row: &impl RowExt) -> Result<UserCredential> {
    Ok(UserCredential {
        user: row.text("user_name")?,
        mechanism: row.text("mechanism")?,
        salt: row.bytes("salt")?,
        iterations: narrow(row, "iterations")?,
        stored_key: row.bytes("stored_key")?,
        server_key: row.bytes("server_key")?,
    })
}

/// Parses an enum column stored by its Kafka name.
fn named<T: std::str::FromStr<Err = crate::AclParseError>>(
    row: &impl RowExt,
    column: &str,
) -> Result<T> {
    row.text(column)?
        .parse()
        .map_err(|e: crate::AclParseError| MetadataError::Corrupt(format!("{column}: {e}")))
}

pub(crate) fn acl(row: &impl RowExt) -> Result<AclBinding> {
    Ok(AclBinding {
        resource_type: named(row, "resource_type")?,
        resource_name: row.text("resource_name")?,
        pattern_type: named(row, "pattern_type")?,
        principal: row.text("principal")?,
        host: row.text("host")?,
        operation: named(row, "operation")?,
        permission: named(row, "permission")?,
    })
}

pub(crate) fn group_lease(row: &impl RowExt) -> Result<GroupLease> {
    Ok(GroupLease {
        group_id: row.text("group_id")?,
        agent_id: row.text("agent_id")?,
        epoch: row.int("epoch")?,
        generation: int32(row, "generation")?,
    })
}

/// A group's stored membership snapshot and its generation (`group_members`).
pub(crate) fn group_members(row: &impl RowExt) -> Result<(i32, String)> {
    Ok((int32(row, "members_generation")?, row.text("members")?))
}

pub(crate) fn lease(row: &impl RowExt) -> Result<PartitionLease> {
    Ok(PartitionLease {
        topic: row.text("topic")?,
        partition: narrow(row, "partition_id")?,
        agent_id: row.text("agent_id")?,
        epoch: row.int("epoch")?,
        expires_at_ms: row.int("expires_at")?,
    })
}

/// Serializes a topic config for its JSON column.
pub(crate) fn encode_config(config: &TopicConfig) -> Result<String> {
    serde_json::to_string(config).map_err(|e| MetadataError::Corrupt(format!("topic config: {e}")))
}

fn decode_config(json: &str) -> Result<TopicConfig> {
    serde_json::from_str(json)
        .map_err(|e| MetadataError::Corrupt(format!("topic config '{json}': {e}")))
}

/// A stored count or size as the `u64` it stands for, reporting a negative one as corruption.
pub(crate) fn from_sql_int(value: i64, what: &str) -> Result<u64> {
    u64::try_from(value)
        .map_err(|_| MetadataError::Corrupt(format!("{what} = {value} is negative")))
}

/// A `u64` field as the signed integer SQL stores.
pub(crate) fn to_sql_int(value: u64, what: &str) -> Result<i64> {
    i64::try_from(value).map_err(|_| MetadataError::Invalid(format!("{what} {value} exceeds i64")))
}

/// A JSON column's value.
fn json<T: serde::de::DeserializeOwned>(row: &impl RowExt, column: &str) -> Result<T> {
    let text = row.text(column)?;
    serde_json::from_str(&text)
        .map_err(|e| MetadataError::Corrupt(format!("{column} '{text}': {e}")))
}

pub(crate) fn transaction(row: &impl RowExt) -> Result<Transaction> {
    let state = row.text("state")?;
    Ok(Transaction {
        transactional_id: row.text("transactional_id")?,
        producer_id: row.int("producer_id")?,
        producer_epoch: narrow(row, "producer_epoch")?,
        state: TxnState::from_name(&state)
            .ok_or_else(|| MetadataError::Corrupt(format!("transaction state '{state}'")))?,
        timeout_ms: int32(row, "timeout_ms")?,
        partitions: json(row, "txn_partitions")?,
        groups: json(row, "offset_groups")?,
        started_at_ms: row.int("started_at")?,
        updated_at_ms: row.int("updated_at")?,
        coordinator: row.text("coordinator")?,
        coordinator_epoch: row.int("coordinator_epoch")?,
        version: row.int("version")?,
    })
}

pub(crate) fn txn_marker(row: &impl RowExt) -> Result<TxnMarker> {
    Ok(TxnMarker {
        topic: row.text("topic")?,
        partition: narrow(row, "partition_id")?,
        producer_id: row.int("producer_id")?,
        producer_epoch: narrow(row, "producer_epoch")?,
        commit: row.int("is_commit")? != 0,
        coordinator_epoch: row.int("coordinator_epoch")?,
        transactional_id: row.text("transactional_id")?,
    })
}

pub(crate) fn aborted_txn(row: &impl RowExt) -> Result<AbortedTxn> {
    Ok(AbortedTxn {
        producer_id: row.int("producer_id")?,
        first_offset: row.int("first_offset")?,
        last_offset: row.int("last_offset")?,
    })
}
