-- Consumer-group coordinator leases: one agent coordinates a group while it holds the group's
-- lease; the epoch goes up whenever the holder changes (or the lease had expired), and offset
-- commits and generations are fenced by it. The generation is the last one the coordinator
-- handed out, so a new coordinator continues after it. Expiry is judged by the database's clock
-- (ms since the Unix epoch), so agents' clock skew cannot cut a lease short.
CREATE TABLE group_leases (
    group_id    TEXT    NOT NULL PRIMARY KEY,
    agent_id    TEXT    NOT NULL,
    epoch       INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    generation  INTEGER NOT NULL DEFAULT 0
);
