//! Per-conversation poll watermarks: how far a poll has read each conversation, so the next
//! poll skips conversations Graph reports unchanged and reads changed ones only back to where
//! the stored copy is complete.
//!
//! Only polls move a watermark: a webhook merge may follow a gap (a delivery that never came),
//! so "complete up to here" is only ever claimed by a read of the conversation itself.

use std::collections::HashMap;

use async_trait::async_trait;

use super::TokenStore;
use crate::ids::{PageId, Psid};
use crate::store::{now_secs, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    /// Graph's conversation id (`t_…`).
    pub conversation_id: String,
    /// The conversation's `updated_time` when it was last read (unix ms).
    pub updated_time: i64,
    /// The newest message that read saw (unix ms and `mid`): everything up to it is stored.
    pub newest_ts: Option<i64>,
    pub newest_mid: Option<String>,
    /// SHA-256 of the conversation object that read wrote (or found unchanged).
    pub object_sha256: Option<String>,
}

/// The watermarks part of `TokenDb`.
#[async_trait]
pub(super) trait WatermarkDb: Send + Sync {
    /// (psid, updated_time) of each watermark of the page.
    async fn watermark_times(&self, page: String) -> Result<Vec<(String, i64)>, StoreError>;
    async fn watermark(&self, page: String, psid: String) -> Result<Option<Watermark>, StoreError>;
    /// Upserts the watermark if the page exists and is not being deleted: whether it did.
    async fn save_watermark(
        &self,
        page: String,
        psid: String,
        w: Watermark,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// The latest `polled_at` of the page's watermarks, in milliseconds.
    async fn page_last_polled(&self, page: String) -> Result<Option<i64>, StoreError>;
}

impl TokenStore {
    /// `psid → updated_time` of every watermark of the page.
    pub async fn watermark_times(&self, page: &PageId) -> Result<HashMap<String, i64>, StoreError> {
        let rows = self.db.watermark_times(page.as_str().to_string()).await?;
        Ok(rows.into_iter().collect())
    }

    pub async fn watermark(
        &self,
        page: &PageId,
        psid: &Psid,
    ) -> Result<Option<Watermark>, StoreError> {
        let (p, s) = (page.as_str().to_string(), psid.as_str().to_string());
        self.db.watermark(p, s).await
    }

    /// Records a poll's watermark; false when the page is gone or being deleted (nothing is
    /// recorded for it then).
    pub async fn save_watermark(
        &self,
        page: &PageId,
        psid: &Psid,
        w: Watermark,
    ) -> Result<bool, StoreError> {
        let (p, s) = (page.as_str().to_string(), psid.as_str().to_string());
        self.db.save_watermark(p, s, w, now_secs()).await
    }

    /// When a poll last read one of the page's conversations (unix ms; stored in seconds).
    pub async fn page_last_polled(&self, page: &PageId) -> Result<Option<i64>, StoreError> {
        self.db.page_last_polled(page.as_str().to_string()).await
    }
}
