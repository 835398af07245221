//! Meta's data deletion requests: what was asked (one row per signed request), how far the
//! deletion got, and what it removed — the record the status URL reports.

use async_trait::async_trait;

use super::{big, TokenStore};
use crate::store::{now_secs, StoreError};

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

/// A finished deletion, as recorded.
pub(super) struct DeletionDone {
    pub(super) code: String,
    pub(super) now: i64,
    pub(super) detail: String,
    pub(super) pages: i64,
    pub(super) objects: i64,
    pub(super) events: i64,
}

/// The deletions part of `TokenDb`.
#[async_trait]
pub(super) trait DeletionDb: Send + Sync {
    /// Inserts a pending request: false, and nothing written, when one of the same user with
    /// the same `issued_at` exists.
    async fn insert_deletion(
        &self,
        code: String,
        fb_user_id: String,
        now: i64,
        issued_at: i64,
    ) -> Result<bool, StoreError>;
    /// The code of the request of the user with that `issued_at`.
    async fn deletion_code(&self, fb_user_id: String, issued_at: i64)
        -> Result<String, StoreError>;
    /// Marks the deletion done unless it already is.
    async fn deletion_done(&self, done: DeletionDone) -> Result<(), StoreError>;
    async fn deletion_status(&self, code: String) -> Result<Option<DeletionStatus>, StoreError>;
    /// (code, user) of each pending or failed deletion, oldest first.
    async fn unfinished_deletions(&self) -> Result<Vec<(String, String)>, StoreError>;
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
        let user = fb_user_id.to_string();
        let inserted = self
            .db
            .insert_deletion(code.to_string(), user.clone(), now_secs(), issued_at)
            .await?;
        if inserted {
            return Ok(DeletionRecorded::New);
        }
        // Read after the insert gave way: the winner's row is committed by then.
        let original = self.db.deletion_code(user, issued_at).await?;
        Ok(DeletionRecorded::Replay(original))
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
        self.db
            .deletion_done(DeletionDone {
                code: code.to_string(),
                now: now_secs(),
                detail: format!("deleted {pages} page(s) and {objects} object(s)"),
                pages: big(pages),
                objects: big(objects),
                events: big(events),
            })
            .await
    }

    /// The deletion recorded under `code`, if any.
    pub async fn deletion_status(&self, code: &str) -> Result<Option<DeletionStatus>, StoreError> {
        self.db.deletion_status(code.to_string()).await
    }

    /// (confirmation code, Facebook user) of every deletion that is not done, oldest first.
    pub async fn unfinished_deletions(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.db.unfinished_deletions().await
    }
}
