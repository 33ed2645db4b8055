-- Which producers a partition may have forgotten. An idempotent producer this partition has no
-- state for may only start at sequence 0, unless its id is below `producers_forgotten_below`:
-- then its state may have expired (or been dropped with the log's start) and, as in Kafka, any
-- sequence is accepted. Raised by the expiry that deletes producer snapshots, in the same
-- transaction; producer ids are allocated in increasing order, so one bound per partition does.
ALTER TABLE partitions ADD COLUMN producers_forgotten_below BIGINT NOT NULL DEFAULT 0;

-- Snapshots expired before this column existed are unknown: every producer allocated so far
-- may have been forgotten anywhere.
UPDATE partitions SET producers_forgotten_below = (SELECT next_id FROM producer_id_sequence);
