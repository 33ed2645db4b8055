-- SASL/SCRAM credentials: salted-password derivatives only (RFC 5802), never passwords.
CREATE TABLE credentials (
    user_name   TEXT    NOT NULL,
    mechanism   TEXT    NOT NULL,
    salt        BLOB    NOT NULL,
    iterations  INTEGER NOT NULL CHECK (iterations > 0),
    stored_key  BLOB    NOT NULL,
    server_key  BLOB    NOT NULL,
    PRIMARY KEY (user_name, mechanism)
);
