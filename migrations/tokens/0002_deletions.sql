-- Meta data-deletion requests, so the status URL answered to Meta can report progress.
CREATE TABLE data_deletions (
    confirmation_code  TEXT PRIMARY KEY,
    fb_user_id         TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('pending', 'completed', 'failed')),
    detail             TEXT,
    requested_at       INTEGER NOT NULL,
    completed_at       INTEGER
);
