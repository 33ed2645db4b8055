-- Shared objects (docs/format.md): a segment is a byte range of an object that may hold the
-- segments of many partitions, written by one flush of one agent. Existing segments are whole
-- objects: offset 0, object size = segment size.
ALTER TABLE segments ADD COLUMN object_offset BIGINT NOT NULL DEFAULT 0;
ALTER TABLE segments ADD COLUMN object_size BIGINT NOT NULL DEFAULT 0;
UPDATE segments SET object_size = size_bytes;

-- Which segments still reference an object: deletion checks it, so an object shared by several
-- partitions outlives its last reference only.
CREATE INDEX segments_by_object ON segments (object_key);

-- Objects to delete once due and no longer referenced by any segment. Written in the same
-- transaction that drops the references (retention, consolidation, topic deletion) or by the
-- orphan janitor, so a crash forgets no pending deletion.
CREATE TABLE object_deletions (
    object_key    TEXT    NOT NULL PRIMARY KEY,
    delete_after  BIGINT NOT NULL
);

CREATE INDEX object_deletions_by_due ON object_deletions (delete_after);
