-- StreamHouse metadata schema (PostgreSQL). Timestamps are ms since the Unix epoch.

CREATE TABLE topics (
    id          TEXT    NOT NULL PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    partitions  BIGINT NOT NULL CHECK (partitions > 0),
    config      TEXT    NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE partitions (
    topic             TEXT    NOT NULL REFERENCES topics (name) ON DELETE CASCADE,
    partition_id      BIGINT NOT NULL,
    high_watermark    BIGINT NOT NULL DEFAULT 0,
    log_start_offset  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (topic, partition_id)
);

CREATE TABLE segments (
    topic             TEXT    NOT NULL,
    partition_id      BIGINT NOT NULL,
    base_offset       BIGINT NOT NULL,
    last_offset       BIGINT NOT NULL,
    record_count      BIGINT NOT NULL,
    size_bytes        BIGINT NOT NULL,
    object_key        TEXT    NOT NULL,
    min_timestamp     BIGINT NOT NULL,
    max_timestamp     BIGINT NOT NULL,
    created_at        BIGINT NOT NULL,
    PRIMARY KEY (topic, partition_id, base_offset),
    FOREIGN KEY (topic, partition_id) REFERENCES partitions (topic, partition_id) ON DELETE CASCADE
);

-- Readers look segments up by the last offset they cover.
CREATE INDEX segments_by_last_offset ON segments (topic, partition_id, last_offset);

CREATE TABLE consumer_offsets (
    group_id          TEXT    NOT NULL,
    topic             TEXT    NOT NULL,
    partition_id      BIGINT NOT NULL,
    committed_offset  BIGINT NOT NULL,
    leader_epoch      BIGINT NOT NULL,
    metadata          TEXT,
    committed_at      BIGINT NOT NULL,
    PRIMARY KEY (group_id, topic, partition_id)
);

CREATE INDEX consumer_offsets_by_topic ON consumer_offsets (topic);

CREATE TABLE agents (
    agent_id        TEXT    NOT NULL PRIMARY KEY,
    kafka_host      TEXT    NOT NULL,
    kafka_port      BIGINT NOT NULL,
    http_addr       TEXT    NOT NULL,
    node_id         BIGINT NOT NULL,
    last_heartbeat  BIGINT NOT NULL,
    started_at      BIGINT NOT NULL
);

CREATE TABLE partition_leases (
    topic         TEXT    NOT NULL,
    partition_id  BIGINT NOT NULL,
    agent_id      TEXT    NOT NULL,
    epoch         BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    PRIMARY KEY (topic, partition_id),
    FOREIGN KEY (topic, partition_id) REFERENCES partitions (topic, partition_id) ON DELETE CASCADE
);

-- Single-row counter: producer ids are never reused, even across topic deletions.
CREATE TABLE producer_id_sequence (
    singleton  BIGINT NOT NULL PRIMARY KEY CHECK (singleton = 0),
    next_id    BIGINT NOT NULL
);

INSERT INTO producer_id_sequence (singleton, next_id) VALUES (0, 1);
