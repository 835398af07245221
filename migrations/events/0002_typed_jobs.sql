-- Typed jobs: every unit of work is a row here (webhook deliveries, syncs, polls, clean-ups,
-- deletions). SQLite cannot change a CHECK constraint in place, so the table is rebuilt.
--
-- New: the `dead` status (retryable work that ran out of its retry horizon, kept apart from
-- permanent failures), the worker `pool` each row is claimed by, the `run_id` of the poll run a
-- job belongs to, and the JSON `result` of finished work (read by the CLI and the callbacks).

CREATE TABLE events_v2 (
    id           INTEGER PRIMARY KEY,
    kind         TEXT NOT NULL,               -- selects the job type (see src/jobs/kind.rs)
    pool         TEXT NOT NULL CHECK (pool IN ('messages', 'sync', 'poll')),
    dedupe_key   TEXT NOT NULL UNIQUE,        -- a second insert with the same key is a no-op
    group_key    TEXT NOT NULL,               -- events of one group never run concurrently
    payload      BLOB NOT NULL,               -- emptied once the event is done
    status       TEXT NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'running', 'done', 'failed', 'dead')),
    attempts     INTEGER NOT NULL DEFAULT 0,  -- this event's own attempts
    run_at       INTEGER NOT NULL,            -- not claimed before this time (debounce, backoff)
    received_at  INTEGER NOT NULL,            -- start of the retry horizon
    locked_by    TEXT,                        -- worker holding the lease
    locked_until INTEGER,
    finished_at  INTEGER,
    last_error   TEXT,
    run_id       INTEGER,                     -- the run (poll, check) that queued this job
    result       TEXT                         -- JSON outcome of a finished job
);

INSERT INTO events_v2 (id, kind, pool, dedupe_key, group_key, payload, status, attempts, run_at,
                       received_at, locked_by, locked_until, finished_at, last_error)
SELECT id, kind,
       CASE WHEN kind = 'shopify' THEN 'sync'
            WHEN kind = 'facebook_page' THEN 'poll'
            ELSE 'messages' END,
       dedupe_key, group_key, CASE WHEN status = 'done' THEN x'' ELSE payload END, status,
       attempts, run_at, received_at, locked_by, locked_until, finished_at, last_error
FROM events;

DROP TABLE events;
ALTER TABLE events_v2 RENAME TO events;

-- Partial indexes keep the hot queries off the (much larger) set of finished rows.
CREATE INDEX events_pending ON events(pool, run_at, id) WHERE status = 'pending';
CREATE INDEX events_pending_by_group ON events(group_key, kind, id) WHERE status = 'pending';
CREATE INDEX events_running ON events(group_key, locked_until) WHERE status = 'running';
CREATE INDEX events_finished ON events(finished_at) WHERE status = 'done';
CREATE INDEX events_by_run ON events(run_id) WHERE run_id IS NOT NULL;
CREATE INDEX events_given_up ON events(finished_at) WHERE status IN ('failed', 'dead');

-- A poll run (scheduled, from the CLI, or the initial polls of a connect): the jobs it queued
-- carry its id, and its summary is written once every one of them has finished.
CREATE TABLE runs (
    id           INTEGER PRIMARY KEY,
    kind         TEXT NOT NULL CHECK (kind IN ('poll')),
    trigger      TEXT NOT NULL CHECK (trigger IN ('schedule', 'cli', 'connect')),
    started_at   INTEGER NOT NULL,            -- unix ms
    finished_at  INTEGER,
    summary      TEXT                         -- JSON, see src/poll.rs
);
