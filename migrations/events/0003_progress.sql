-- The first sync of each shop and page a merchant connects, for the merchant's pages: which
-- job it is (its status, result and errors are the job's own) and how far it got. Written at
-- connect and by the running job; nothing else reads or writes it.
CREATE TABLE tracked_syncs (
    target      TEXT PRIMARY KEY,             -- the job's group key (shop:…, page:…)
    event_id    INTEGER NOT NULL,             -- the initial sync / initial poll job
    run_id      INTEGER,                      -- the connect's poll run (pages: their conversations)
    done        INTEGER NOT NULL DEFAULT 0,   -- products (shops) read so far
    total       INTEGER,                      -- how many there are, once known
    started_at  INTEGER NOT NULL,             -- unix ms
    updated_at  INTEGER NOT NULL
);
CREATE INDEX tracked_syncs_by_event ON tracked_syncs(event_id);
