//! The transaction SQL (`transactions`, `txn_markers`, `aborted_txns`, `txn_offsets`), compiled
//! once per backend like `sql_common.rs` (same macros, same `Store` and `Db`).

use async_trait::async_trait;
use sqlx::Database;

use super::{Db, Store};
use crate::rows::{self, marker_columns, offset_columns, txn_columns};
use crate::{
    txn_conflict, AbortedTxn, CommittedOffset, MetadataError, Result, Transaction, TxnMarker,
    TxnStore, TxnUpdate, WrittenMarker,
};

type Conn = <Db as Database>::Connection;

/// `SELECT` of whole `transactions` rows, followed by `$rest`.
macro_rules! select_txn {
    ($($rest:expr),*) => {
        concat!("SELECT ", txn_columns!(), " FROM transactions" $(, $rest)*)
    };
}

fn json_text<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| MetadataError::Invalid(format!("json: {e}")))
}

#[async_trait]
impl TxnStore for Store {
    async fn claim_transaction(
        &self,
        transactional_id: &str,
        agent_id: &str,
        ttl_ms: i64,
    ) -> Result<Option<Transaction>> {
        // As `acquire_group_lease`: free -> a new Empty row at epoch 1; live and ours -> same
        // epoch; expired (anyone's) -> epoch + 1; live and someone else's -> no row.
        let row = sqlx::query(concat!(
            "INSERT INTO transactions (",
            txn_columns!(),
            ", lease_expires_at) VALUES ($1, -1, -1, 'Empty', 60000, '[]', '[]', -1, ",
            db_now_ms!(),
            ", $2, 1, 0, ",
            db_now_ms!(),
            " + $3) ON CONFLICT (transactional_id) DO UPDATE SET \
             coordinator_epoch = CASE WHEN transactions.coordinator = excluded.coordinator \
                 AND transactions.lease_expires_at >= ",
            db_now_ms!(),
            " THEN transactions.coordinator_epoch ELSE transactions.coordinator_epoch + 1 END, \
             coordinator = excluded.coordinator, lease_expires_at = excluded.lease_expires_at \
             WHERE transactions.coordinator = excluded.coordinator \
                OR transactions.lease_expires_at < ",
            db_now_ms!(),
            " RETURNING ",
            txn_columns!()
        ))
        .bind(transactional_id)
        .bind(agent_id)
        .bind(ttl_ms)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| rows::transaction(&r)).transpose()
    }

    async fn get_transaction(&self, transactional_id: &str) -> Result<Option<Transaction>> {
        let row = sqlx::query(select_txn!(" WHERE transactional_id = $1"))
            .bind(transactional_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| rows::transaction(&r)).transpose()
    }

    async fn transaction_of_producer(&self, producer_id: i64) -> Result<Option<Transaction>> {
        let row = sqlx::query(select_txn!(
            " WHERE producer_id = $1 ORDER BY transactional_id"
        ))
        .bind(producer_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| rows::transaction(&r)).transpose()
    }

    async fn list_transactions(&self) -> Result<Vec<Transaction>> {
        sqlx::query(select_txn!(" ORDER BY transactional_id"))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(rows::transaction)
            .collect()
    }

    async fn update_transaction(&self, update: &TxnUpdate) -> Result<()> {
        let next = &update.next;
        let mut tx = self.write_tx().await?;
        check_txn_lease(&mut tx, update).await?;
        sqlx::query(concat!(
            "UPDATE transactions SET producer_id = $2, producer_epoch = $3, state = $4, \
             timeout_ms = $5, txn_partitions = $6, offset_groups = $7, started_at = $8, \
             updated_at = $9, version = version + 1, lease_expires_at = ",
            db_now_ms!(),
            " + $10 WHERE transactional_id = $1"
        ))
        .bind(&next.transactional_id)
        .bind(next.producer_id)
        .bind(i64::from(next.producer_epoch))
        .bind(next.state.name())
        .bind(i64::from(next.timeout_ms))
        .bind(json_text(&next.partitions)?)
        .bind(json_text(&next.groups)?)
        .bind(next.started_at_ms)
        .bind(next.updated_at_ms)
        .bind(update.lease_ttl_ms)
        .execute(&mut *tx)
        .await?;
        if let Some(commit) = update.decision {
            record_decision(&mut tx, next, commit).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn commit_txn_offsets(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        group: &str,
        offsets: &[CommittedOffset],
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(select_txn!(" WHERE producer_id = $1", for_update!()))
            .bind(producer_id)
            .fetch_optional(&mut *tx)
            .await?;
        let txn = row.map(|r| rows::transaction(&r)).transpose()?;
        let open = txn.as_ref().is_some_and(|t| {
            t.producer_epoch == producer_epoch
                && t.state == crate::TxnState::Ongoing
                && t.groups.iter().any(|g| g == group)
        });
        if !open {
            let id = txn.map(|t| t.transactional_id).unwrap_or_default();
            return Err(txn_conflict(
                &id,
                format!(
                    "producer {producer_id} epoch {producer_epoch} has no open transaction \
                     with group '{group}'"
                ),
            ));
        }
        for offset in offsets {
            let query = sqlx::query(concat!(
                "INSERT INTO txn_offsets (producer_id, group_id, ",
                offset_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (producer_id, group_id, topic, partition_id) DO UPDATE SET \
                 committed_offset = excluded.committed_offset, \
                 leader_epoch = excluded.leader_epoch, metadata = excluded.metadata, \
                 committed_at = excluded.committed_at"
            ))
            .bind(producer_id)
            .bind(group);
            super::common::bind_offset(query, offset)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn pending_txn_offsets(&self, group: &str) -> Result<Vec<(String, u32)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT DISTINCT topic, partition_id FROM txn_offsets WHERE group_id = $1 \
             ORDER BY topic, partition_id",
        )
        .bind(group)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(topic, partition)| {
                let partition = u32::try_from(partition).map_err(|_| {
                    MetadataError::Corrupt(format!("txn_offsets partition {partition}"))
                })?;
                Ok((topic, partition))
            })
            .collect()
    }

    async fn list_txn_markers(&self) -> Result<Vec<TxnMarker>> {
        sqlx::query(concat!(
            "SELECT ",
            marker_columns!(),
            " FROM txn_markers ORDER BY topic, partition_id, producer_id"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(rows::txn_marker)
        .collect()
    }

    async fn list_aborted_txns(
        &self,
        topic: &str,
        partition: u32,
        from_offset: i64,
    ) -> Result<Vec<AbortedTxn>> {
        sqlx::query(
            "SELECT producer_id, first_offset, last_offset FROM aborted_txns \
             WHERE topic = $1 AND partition_id = $2 AND last_offset >= $3 ORDER BY last_offset",
        )
        .bind(topic)
        .bind(i64::from(partition))
        .bind(from_offset)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(rows::aborted_txn)
        .collect()
    }
}

/// Locks the transaction's row and checks that `update` was computed from its current version
/// under a lease still held, unexpired.
async fn check_txn_lease(conn: &mut Conn, update: &TxnUpdate) -> Result<()> {
    let next = &update.next;
    let row = sqlx::query(concat!(
        "SELECT version, coordinator, coordinator_epoch, CASE WHEN lease_expires_at >= ",
        db_now_ms!(),
        " THEN CAST(1 AS BIGINT) ELSE CAST(0 AS BIGINT) END AS live FROM transactions WHERE transactional_id = $1",
        for_update!()
    ))
    .bind(&next.transactional_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Err(txn_conflict(
            &next.transactional_id,
            "no such transactional id",
        ));
    };
    let version: i64 = sqlx::Row::try_get(&row, "version")?;
    let holder: String = sqlx::Row::try_get(&row, "coordinator")?;
    let epoch: i64 = sqlx::Row::try_get(&row, "coordinator_epoch")?;
    let live: i64 = sqlx::Row::try_get(&row, "live")?;
    if version != update.expected_version {
        return Err(txn_conflict(
            &next.transactional_id,
            format!("version {version}, expected {}", update.expected_version),
        ));
    }
    if holder != next.coordinator || epoch != next.coordinator_epoch || live == 0 {
        return Err(txn_conflict(
            &next.transactional_id,
            format!(
                "coordinator lease not held by '{}' at epoch {}",
                next.coordinator, next.coordinator_epoch
            ),
        ));
    }
    Ok(())
}

/// A decision's effects: one pending marker per partition, and the transaction's offsets
/// applied (commit) or dropped.
async fn record_decision(conn: &mut Conn, txn: &Transaction, commit: bool) -> Result<()> {
    for (topic, partition) in &txn.partitions {
        sqlx::query(concat!(
            "INSERT INTO txn_markers (",
            marker_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (topic, partition_id, producer_id) DO UPDATE SET \
             producer_epoch = excluded.producer_epoch, is_commit = excluded.is_commit, \
             coordinator_epoch = excluded.coordinator_epoch, \
             transactional_id = excluded.transactional_id"
        ))
        .bind(topic)
        .bind(i64::from(*partition))
        .bind(txn.producer_id)
        .bind(i64::from(txn.producer_epoch))
        .bind(i64::from(commit))
        .bind(txn.coordinator_epoch)
        .bind(&txn.transactional_id)
        .execute(&mut *conn)
        .await?;
    }
    if commit {
        sqlx::query(concat!(
            "INSERT INTO consumer_offsets (group_id, ",
            offset_columns!(),
            ") SELECT group_id, ",
            offset_columns!(),
            " FROM txn_offsets WHERE producer_id = $1 \
             ON CONFLICT (group_id, topic, partition_id) DO UPDATE SET \
             committed_offset = excluded.committed_offset, \
             leader_epoch = excluded.leader_epoch, metadata = excluded.metadata, \
             committed_at = excluded.committed_at"
        ))
        .bind(txn.producer_id)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query("DELETE FROM txn_offsets WHERE producer_id = $1")
        .bind(txn.producer_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Inside a segment commit: each marker the segment holds discharges its pending row and, for
/// an abort of a transaction that wrote here, records the aborted range; a transaction whose
/// last marker this was is complete.
pub(super) async fn apply_markers(
    conn: &mut Conn,
    topic: &str,
    partition: u32,
    markers: &[WrittenMarker],
) -> Result<()> {
    for written in markers {
        let m = &written.marker;
        // The transaction row first, so agents writing the last markers of one transaction at
        // once serialize here and the last of them sees every other marker gone.
        sqlx::query(concat!(
            "SELECT version FROM transactions WHERE producer_id = $1",
            for_update!()
        ))
        .bind(m.producer_id)
        .fetch_all(&mut *conn)
        .await?;
        sqlx::query(
            "DELETE FROM txn_markers WHERE topic = $1 AND partition_id = $2 \
             AND producer_id = $3 AND producer_epoch = $4 AND is_commit = $5",
        )
        .bind(topic)
        .bind(i64::from(partition))
        .bind(m.producer_id)
        .bind(i64::from(m.producer_epoch))
        .bind(i64::from(m.commit))
        .execute(&mut *conn)
        .await?;
        if let (false, Some(first)) = (m.commit, written.first_offset) {
            sqlx::query(
                "INSERT INTO aborted_txns (topic, partition_id, producer_id, first_offset, \
                 last_offset) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (topic, partition_id, last_offset) DO NOTHING",
            )
            .bind(topic)
            .bind(i64::from(partition))
            .bind(m.producer_id)
            .bind(first)
            .bind(written.offset)
            .execute(&mut *conn)
            .await?;
        }
        complete_decided(conn, Some(m.producer_id)).await?;
    }
    Ok(())
}

/// Moves decided transactions (of `producer_id`, or all) without pending markers to their
/// Complete state.
pub(super) async fn complete_decided(conn: &mut Conn, producer_id: Option<i64>) -> Result<()> {
    sqlx::query(concat!(
        "UPDATE transactions SET state = CASE WHEN state = 'PrepareCommit' \
         THEN 'CompleteCommit' ELSE 'CompleteAbort' END, version = version + 1, \
         txn_partitions = '[]', offset_groups = '[]', started_at = -1, updated_at = ",
        db_now_ms!(),
        " WHERE state IN ('PrepareCommit', 'PrepareAbort') \
         AND ($1 IS NULL OR producer_id = $1) \
         AND NOT EXISTS (SELECT 1 FROM txn_markers m \
                         WHERE m.producer_id = transactions.producer_id)"
    ))
    .bind(producer_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// A deleted topic's markers will never be written: forgotten, with its aborted ranges, and
/// the transactions they held back completed.
pub(super) async fn forget_topic(conn: &mut Conn, topic: &str) -> Result<()> {
    for sql in [
        "DELETE FROM txn_markers WHERE topic = $1",
        "DELETE FROM aborted_txns WHERE topic = $1",
    ] {
        sqlx::query(sql).bind(topic).execute(&mut *conn).await?;
    }
    complete_decided(conn, None).await
}
