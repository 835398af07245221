-- Browser sessions and OAuth states. Both store only a SHA-256 of the secret value, so a copy of
-- this file does not hand out live sessions. Times are unix seconds.

CREATE TABLE sessions (
    id_hash        TEXT PRIMARY KEY,
    merchant_uuid  TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL
);
CREATE INDEX sessions_by_expiry ON sessions(expires_at);

-- Issued OAuth states; consuming one deletes it (single use).
CREATE TABLE oauth_states (
    nonce       TEXT PRIMARY KEY,
    provider    TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX oauth_states_by_expiry ON oauth_states(expires_at);
