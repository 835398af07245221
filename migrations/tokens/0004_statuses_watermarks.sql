-- Pages gain the `deleting` state (a data deletion in progress: nothing may write to the page),
-- data deletions report `done` with counts, and polls keep a watermark per conversation.
-- SQLite cannot change a CHECK constraint in place, so both tables are rebuilt.

CREATE TABLE pages_v2 (
    page_id        TEXT PRIMARY KEY,
    merchant_uuid  TEXT NOT NULL REFERENCES merchants(uuid),
    name           TEXT,
    access_token   BLOB NOT NULL,
    status         TEXT NOT NULL DEFAULT 'active'
                   CHECK (status IN ('active', 'needs_reauth', 'deleting')),
    status_reason  TEXT,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    fb_user_id     TEXT
);
INSERT INTO pages_v2 (page_id, merchant_uuid, name, access_token, status, status_reason,
                      created_at, updated_at, fb_user_id)
SELECT page_id, merchant_uuid, name, access_token, status, status_reason, created_at,
       updated_at, fb_user_id
FROM pages;
DROP TABLE pages;
ALTER TABLE pages_v2 RENAME TO pages;
CREATE INDEX pages_by_merchant ON pages(merchant_uuid);
CREATE INDEX pages_by_fb_user ON pages(fb_user_id);

CREATE TABLE data_deletions_v2 (
    confirmation_code  TEXT PRIMARY KEY,
    fb_user_id         TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('pending', 'done', 'failed')),
    detail             TEXT,
    requested_at       INTEGER NOT NULL,
    completed_at       INTEGER,
    pages_deleted      INTEGER,
    objects_deleted    INTEGER,
    events_deleted     INTEGER
);
INSERT INTO data_deletions_v2 (confirmation_code, fb_user_id, status, detail, requested_at,
                               completed_at)
SELECT confirmation_code, fb_user_id,
       CASE status WHEN 'completed' THEN 'done' ELSE status END,
       detail, requested_at, completed_at
FROM data_deletions;
DROP TABLE data_deletions;
ALTER TABLE data_deletions_v2 RENAME TO data_deletions;

-- How far polls have read each conversation (see src/store/tokens/watermarks.rs). Times are
-- unix milliseconds here, as Graph's message times are.
CREATE TABLE conversation_watermarks (
    page_id          TEXT NOT NULL REFERENCES pages(page_id) ON DELETE CASCADE,
    psid             TEXT NOT NULL,
    conversation_id  TEXT NOT NULL,
    updated_time     INTEGER NOT NULL,
    newest_ts        INTEGER,
    newest_mid       TEXT,
    object_sha256    TEXT,
    polled_at        INTEGER NOT NULL,
    PRIMARY KEY (page_id, psid)
);
