//! Per-conversation poll watermarks: how far a poll has read each conversation, so the next
//! poll skips conversations Graph reports unchanged and reads changed ones only back to where
//! the stored copy is complete.
//!
//! Only polls move a watermark: a webhook merge may follow a gap (a delivery that never came),
//! so "complete up to here" is only ever claimed by a read of the conversation itself.

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension};

use super::{postgres, TokenStore};
use crate::objects::keys::{PageId, Psid};
use crate::store::{now_secs, sqlite_or, StoreError};

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

impl TokenStore {
    /// `psid → updated_time` of every watermark of the page.
    pub async fn watermark_times(&self, page: &PageId) -> Result<HashMap<String, i64>, StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::watermark_times(pg, page.as_str()));
        let p = page.as_str().to_string();
        db.call(move |c| {
            let mut st = c.prepare_cached(
                "SELECT psid, updated_time FROM conversation_watermarks WHERE page_id = ?1",
            )?;
            let v = st
                .query_map([p], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<HashMap<_, _>, _>>()?;
            Ok(v)
        })
        .await
    }

    pub async fn watermark(
        &self,
        page: &PageId,
        psid: &Psid,
    ) -> Result<Option<Watermark>, StoreError> {
        let db = sqlite_or!(&self.backend, pg =>
            postgres::watermark(pg, page.as_str(), psid.as_str()));
        let (p, s) = (page.as_str().to_string(), psid.as_str().to_string());
        db.call(move |c| {
            Ok(c.prepare_cached(
                "SELECT conversation_id, updated_time, newest_ts, newest_mid, object_sha256
                     FROM conversation_watermarks WHERE page_id = ?1 AND psid = ?2",
            )?
            .query_row([p, s], |r| {
                Ok(Watermark {
                    conversation_id: r.get(0)?,
                    updated_time: r.get(1)?,
                    newest_ts: r.get(2)?,
                    newest_mid: r.get(3)?,
                    object_sha256: r.get(4)?,
                })
            })
            .optional()?)
        })
        .await
    }

    /// Records a poll's watermark; false when the page is gone or being deleted (nothing is
    /// recorded for it then).
    pub async fn save_watermark(
        &self,
        page: &PageId,
        psid: &Psid,
        w: Watermark,
    ) -> Result<bool, StoreError> {
        let db = sqlite_or!(&self.backend, pg =>
            postgres::save_watermark(pg, page.as_str(), psid.as_str(), w));
        let (p, s) = (page.as_str().to_string(), psid.as_str().to_string());
        db.call(move |c| {
            let n = c.execute(
                "INSERT INTO conversation_watermarks
                        (page_id, psid, conversation_id, updated_time, newest_ts, newest_mid,
                         object_sha256, polled_at)
                     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8
                     WHERE EXISTS (SELECT 1 FROM pages WHERE page_id = ?1 AND status != 'deleting')
                     ON CONFLICT(page_id, psid) DO UPDATE SET
                        conversation_id = excluded.conversation_id,
                        updated_time = excluded.updated_time, newest_ts = excluded.newest_ts,
                        newest_mid = excluded.newest_mid, object_sha256 = excluded.object_sha256,
                        polled_at = excluded.polled_at",
                params![
                    p,
                    s,
                    w.conversation_id,
                    w.updated_time,
                    w.newest_ts,
                    w.newest_mid,
                    w.object_sha256,
                    now_secs()
                ],
            )?;
            Ok(n == 1)
        })
        .await
    }
}
