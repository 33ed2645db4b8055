-- Access control lists (Kafka's ACL bindings); enum columns hold Kafka's names (TOPIC, READ, ...).
-- Every column is part of the key: a binding either exists or not, and adding it twice is a no-op.
CREATE TABLE acls (
    resource_type  TEXT NOT NULL,
    resource_name  TEXT NOT NULL,
    pattern_type   TEXT NOT NULL,
    principal      TEXT NOT NULL,
    host           TEXT NOT NULL,
    operation      TEXT NOT NULL,
    permission     TEXT NOT NULL,
    PRIMARY KEY (resource_type, resource_name, pattern_type, principal, host, operation, permission)
);
