-- SASL/SCRAM credentials: salted-password derivatives only (RFC 5802), never passwords.
CREATE TABLE credentials (
    user_name   TEXT    NOT NULL,
    mechanism   TEXT    NOT NULL,
    salt        BYTEA   NOT NULL,
    iterations  BIGINT  NOT NULL CHECK (iterations > 0),
    stored_key  BYTEA   NOT NULL,
    server_key  BYTEA   NOT NULL,
    PRIMARY KEY (user_name, mechanism)
);
