-- Durable inbox of webhook deliveries and background jobs. Times are unix milliseconds.

CREATE TABLE events (
    id           INTEGER PRIMARY KEY,
    kind         TEXT NOT NULL,               -- selects the handler
    dedupe_key   TEXT NOT NULL UNIQUE,        -- a second insert with the same key is a no-op
    group_key    TEXT NOT NULL,               -- events of one group never run concurrently
    payload      BLOB NOT NULL,
    status       TEXT NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'running', 'done', 'failed')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    run_at       INTEGER NOT NULL,            -- not claimed before this time (backoff)
    received_at  INTEGER NOT NULL,
    locked_by    TEXT,                        -- worker instance holding the lease
    locked_until INTEGER,
    finished_at  INTEGER,
    last_error   TEXT
);
-- Partial indexes keep the hot queries off the (much larger) set of finished rows.
CREATE INDEX events_pending ON events(run_at, id) WHERE status = 'pending';
CREATE INDEX events_pending_by_group ON events(group_key, kind, id) WHERE status = 'pending';
CREATE INDEX events_running ON events(group_key, locked_until) WHERE status = 'running';
CREATE INDEX events_finished ON events(finished_at) WHERE status = 'done';
