-- Idempotent-producer state of each partition, one row per producer. Written in the same
-- transaction as the segment commit that changed it, so it always matches the high watermark.
-- `state` is the storage layer's encoding (docs/format.md), opaque here.
CREATE TABLE producer_states (
    topic         TEXT    NOT NULL,
    partition_id  BIGINT  NOT NULL,
    producer_id   BIGINT  NOT NULL,
    last_offset   BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL,
    state         BLOB   NOT NULL,
    PRIMARY KEY (topic, partition_id, producer_id),
    FOREIGN KEY (topic, partition_id) REFERENCES partitions (topic, partition_id) ON DELETE CASCADE
);

-- Expiry scans by age.
CREATE INDEX producer_states_by_age ON producer_states (updated_at);
