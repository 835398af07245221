//! Meta's data deletion requests: what was asked (one row per signed request), how far the
//! deletion got, and what it removed — the record the status URL reports.

use rusqlite::{params, OptionalExtension};

use super::{postgres, TokenStore};
use crate::store::{now_secs, sqlite_or, StoreError};

/// What recording a deletion request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeletionRecorded {
    /// A request not seen before: its job is to be queued.
    New,
    /// The same user's request with the same `issued_at` was recorded before: the original's
    /// confirmation code.
    Replay(String),
}

/// A deletion request as its status URL reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletionStatus {
    /// `pending`, `done` or `failed`.
    pub status: String,
    pub requested_at: i64,
    pub completed_at: Option<i64>,
    pub pages_deleted: Option<i64>,
    pub objects_deleted: Option<i64>,
}

/// The `detail` line of a finished deletion (the same text on both backends).
fn done_detail(pages: usize, objects: usize) -> String {
    format!("deleted {pages} page(s) and {objects} object(s)")
}

impl TokenStore {
    /// Records a deletion request under `code` unless one of the same user with the same
    /// `issued_at` was recorded before (the unique index decides, so two concurrent copies —
    /// even on two instances — record one, and both answer with its code).
    pub async fn record_deletion_request(
        &self,
        code: &str,
        fb_user_id: &str,
        issued_at: i64,
    ) -> Result<DeletionRecorded, StoreError> {
        let db = sqlite_or!(&self.backend, pg =>
            postgres::record_deletion_request(pg, code, fb_user_id, issued_at));
        let (code, user) = (code.to_string(), fb_user_id.to_string());
        db.call(move |c| {
            let inserted = c.execute(
                "INSERT INTO data_deletions (confirmation_code, fb_user_id, status, requested_at, issued_at)
                 VALUES (?1, ?2, 'pending', ?3, ?4)
                 ON CONFLICT (fb_user_id, issued_at) DO NOTHING",
                params![code, user, now_secs(), issued_at],
            )?;
            if inserted == 1 {
                return Ok(DeletionRecorded::New);
            }
            let original: String = c.query_row(
                "SELECT confirmation_code FROM data_deletions WHERE fb_user_id = ?1 AND issued_at = ?2",
                params![user, issued_at],
                |r| r.get(0),
            )?;
            Ok(DeletionRecorded::Replay(original))
        })
        .await
    }

    /// Marks the deletion `code` done with what it removed (once: a resumed job that finishes
    /// again leaves the first record alone).
    pub async fn deletion_done(
        &self,
        code: &str,
        pages: usize,
        objects: usize,
        events: usize,
    ) -> Result<(), StoreError> {
        let detail = done_detail(pages, objects);
        let db = sqlite_or!(&self.backend, pg =>
            postgres::deletion_done(pg, code, &detail, pages, objects, events));
        let code = code.to_string();
        db.call(move |c| {
            c.execute(
                "UPDATE data_deletions SET status = 'done', completed_at = ?2,
                        detail = ?3, pages_deleted = ?4, objects_deleted = ?5, events_deleted = ?6
                 WHERE confirmation_code = ?1 AND status != 'done'",
                params![
                    code,
                    now_secs(),
                    detail,
                    pages as i64,
                    objects as i64,
                    events as i64
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// The deletion recorded under `code`, if any.
    pub async fn deletion_status(&self, code: &str) -> Result<Option<DeletionStatus>, StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::deletion_status(pg, code));
        let code = code.to_string();
        db.call(move |c| {
            Ok(c.query_row(
                "SELECT status, requested_at, completed_at, pages_deleted, objects_deleted
                 FROM data_deletions WHERE confirmation_code = ?1",
                [code],
                |r| {
                    Ok(DeletionStatus {
                        status: r.get(0)?,
                        requested_at: r.get(1)?,
                        completed_at: r.get(2)?,
                        pages_deleted: r.get(3)?,
                        objects_deleted: r.get(4)?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    /// (confirmation code, Facebook user) of every deletion that is not done, oldest first.
    pub async fn unfinished_deletions(&self) -> Result<Vec<(String, String)>, StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::unfinished_deletions(pg));
        db.call(|c| {
            let mut st = c.prepare(
                "SELECT confirmation_code, fb_user_id FROM data_deletions
                 WHERE status IN ('pending', 'failed') ORDER BY requested_at, confirmation_code",
            )?;
            let v = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(v)
        })
        .await
    }
}
