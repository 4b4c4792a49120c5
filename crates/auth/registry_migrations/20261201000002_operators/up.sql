-- The operator registry (business layer only): names, roles and argon2id password hashes.
CREATE TABLE operators (
    name TEXT PRIMARY KEY,
    -- ops,finance,risk,admin (comma-separated, sorted)
    roles TEXT NOT NULL,
    -- argon2id PHC string; never the password.
    password_hash TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    failed_logins INTEGER NOT NULL,
    locked_until_ms BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    password_changed_at_ms BIGINT NOT NULL
);
