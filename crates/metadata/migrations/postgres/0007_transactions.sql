-- Transactions (KIP-98). One row per transactional id: its coordinator's state (producer id and
-- epoch, Kafka's state name, the partitions and consumer groups of the open transaction, its
-- timeout) and the coordinator's lease on it (holder, epoch, expiry by the database's clock).
-- Every change is a compare-and-set on `version` under an unexpired lease, so one agent at a
-- time coordinates a transactional id and a new one resumes where the last stopped.
CREATE TABLE transactions (
    transactional_id  TEXT    NOT NULL PRIMARY KEY,
    producer_id       BIGINT  NOT NULL,
    producer_epoch    BIGINT  NOT NULL,
    state             TEXT    NOT NULL,
    timeout_ms        BIGINT  NOT NULL,
    txn_partitions    TEXT    NOT NULL,
    offset_groups     TEXT    NOT NULL,
    started_at        BIGINT  NOT NULL,
    updated_at        BIGINT  NOT NULL,
    coordinator       TEXT    NOT NULL,
    coordinator_epoch BIGINT  NOT NULL,
    lease_expires_at  BIGINT  NOT NULL,
    version           BIGINT  NOT NULL
);
CREATE INDEX transactions_by_producer ON transactions (producer_id);

-- A decided transaction's commit or abort marker still to be written to one partition. Inserted
-- with the decision (same transaction); deleted by the segment commit that stores the marker
-- (same transaction), so each marker is written exactly once, by whichever agent leads the
-- partition.
CREATE TABLE txn_markers (
    topic             TEXT    NOT NULL,
    partition_id      BIGINT  NOT NULL,
    producer_id       BIGINT  NOT NULL,
    producer_epoch    BIGINT  NOT NULL,
    is_commit         BIGINT  NOT NULL,
    coordinator_epoch BIGINT  NOT NULL,
    transactional_id  TEXT    NOT NULL,
    PRIMARY KEY (topic, partition_id, producer_id)
);
CREATE INDEX txn_markers_by_producer ON txn_markers (producer_id);

-- Aborted transactions per partition: the producer's first offset in the transaction and the
-- offset of its abort marker, for the aborted-transactions list of read_committed fetches.
-- Inserted by the segment commit that stores the abort marker.
CREATE TABLE aborted_txns (
    topic         TEXT    NOT NULL,
    partition_id  BIGINT  NOT NULL,
    producer_id   BIGINT  NOT NULL,
    first_offset  BIGINT  NOT NULL,
    last_offset   BIGINT  NOT NULL,
    PRIMARY KEY (topic, partition_id, last_offset)
);

-- Offsets committed inside a transaction (TxnOffsetCommit): moved into consumer_offsets when it
-- commits, dropped when it aborts, in the decision's transaction.
CREATE TABLE txn_offsets (
    producer_id       BIGINT  NOT NULL,
    group_id          TEXT    NOT NULL,
    topic             TEXT    NOT NULL,
    partition_id      BIGINT  NOT NULL,
    committed_offset  BIGINT  NOT NULL,
    leader_epoch      BIGINT  NOT NULL,
    metadata          TEXT,
    committed_at      BIGINT  NOT NULL,
    PRIMARY KEY (producer_id, group_id, topic, partition_id)
);
