-- Facebook security hardening (issue 12).
--
-- 1. The long-lived Facebook user token was stored at connect but never read afterwards: the
--    page tokens do all later work and data deletion needs only the user id. Stored ones are
--    erased (secure_delete zeroes the freed pages of the old rows) and the columns dropped.
PRAGMA secure_delete = ON;
UPDATE facebook_users SET access_token = zeroblob(length(access_token));
ALTER TABLE facebook_users DROP COLUMN access_token;
ALTER TABLE facebook_users DROP COLUMN expires_at;
-- Back to SQLite's default for the rest of this connection.
PRAGMA secure_delete = OFF;

-- 2. Meta data-deletion requests remember the signed_request's issued_at, so a replay of the
--    same request (same user, same issued_at) finds the original instead of queueing again.
--    Rows from before have NULL, which a unique index treats as distinct.
ALTER TABLE data_deletions ADD COLUMN issued_at INTEGER;
CREATE UNIQUE INDEX data_deletions_by_request ON data_deletions(fb_user_id, issued_at);

-- 3. Pages moved from one merchant to another by the Facebook user who connected them: the old
--    merchant's status shows the move, and the clean-up job of its copy records when it ran.
CREATE TABLE page_moves (
    id               INTEGER PRIMARY KEY,
    page_id          TEXT NOT NULL,
    from_merchant    TEXT NOT NULL,
    to_merchant      TEXT NOT NULL,
    fb_user_id       TEXT NOT NULL,
    moved_at         INTEGER NOT NULL,
    cleaned_at       INTEGER,
    objects_deleted  INTEGER
);
CREATE INDEX page_moves_by_from ON page_moves(from_merchant);
