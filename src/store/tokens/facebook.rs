//! Facebook users (one long-lived user token per merchant) and their pages.

use rusqlite::{params, OptionalExtension};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::{
    page_aad, parse_uuid, user_aad, AccountStatus, FacebookUserRecord, PageRecord, TokenStore,
};

/// What storing a page token did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SavedPage {
    /// Stored, for this merchant.
    Saved(Uuid),
    /// Refused: the page's data is being deleted.
    BeingDeleted,
}
use crate::objects::keys::PageId;
use crate::store::{now_secs, StoreError};

impl TokenStore {
    /// Stores the merchant's long-lived Facebook user token (one per merchant).
    pub async fn save_facebook_user(
        &self,
        merchant: Uuid,
        fb_user_id: Option<String>,
        token: &SecretString,
        expires_at: Option<i64>,
    ) -> Result<(), StoreError> {
        let enc = self
            .cipher
            .encrypt(token.expose_secret(), &user_aad(&merchant));
        self.db
            .call(move |c| {
                let now = now_secs();
                c.execute(
                    "INSERT OR IGNORE INTO merchants (uuid, created_at) VALUES (?1, ?2)",
                    params![merchant.to_string(), now],
                )?;
                c.execute(
                    "INSERT INTO facebook_users (merchant_uuid, fb_user_id, access_token, expires_at, status, status_reason, updated_at)
                     VALUES (?1, ?2, ?3, ?4, 'active', NULL, ?5)
                     ON CONFLICT(merchant_uuid) DO UPDATE SET fb_user_id = excluded.fb_user_id,
                        access_token = excluded.access_token, expires_at = excluded.expires_at,
                        status = 'active', status_reason = NULL, updated_at = excluded.updated_at",
                    params![merchant.to_string(), fb_user_id, enc, expires_at, now],
                )?;
                Ok(())
            })
            .await
    }

    pub async fn facebook_user(
        &self,
        merchant: Uuid,
    ) -> Result<Option<FacebookUserRecord>, StoreError> {
        let row = self
            .db
            .call(move |c| {
                Ok(c.query_row(
                    "SELECT fb_user_id, access_token, expires_at, status FROM facebook_users WHERE merchant_uuid = ?1",
                    [merchant.to_string()],
                    |r| {
                        Ok((
                            r.get::<_, Option<String>>(0)?,
                            r.get::<_, Vec<u8>>(1)?,
                            r.get::<_, Option<i64>>(2)?,
                            r.get::<_, AccountStatus>(3)?,
                        ))
                    },
                )
                .optional()?)
            })
            .await?;
        let Some((uid, tok, exp, status)) = row else {
            return Ok(None);
        };
        Ok(Some(FacebookUserRecord {
            merchant,
            fb_user_id: uid,
            access_token: self.cipher.decrypt(&tok, &user_aad(&merchant))?,
            expires_at: exp,
            status,
        }))
    }

    pub async fn set_facebook_user_status(
        &self,
        merchant: Uuid,
        status: AccountStatus,
        reason: Option<String>,
    ) -> Result<(), StoreError> {
        self.db
            .call(move |c| {
                c.execute(
                    "UPDATE facebook_users SET status = ?2, status_reason = ?3, updated_at = ?4 WHERE merchant_uuid = ?1",
                    params![merchant.to_string(), status, reason, now_secs()],
                )?;
                Ok(())
            })
            .await
    }

    /// Stores a page token. A page already owned by another merchant is moved only when
    /// `allow_move` is set; otherwise the existing owner is kept and returned.
    pub async fn save_page(
        &self,
        page: &PageId,
        merchant: Uuid,
        fb_user_id: Option<String>,
        name: Option<String>,
        token: &SecretString,
    ) -> Result<SavedPage, StoreError> {
        let p = page.as_str().to_string();
        let enc = self.cipher.encrypt(token.expose_secret(), &page_aad(&p));
        self.db
            .call(move |c| {
                let tx = c.transaction()?;
                let now = now_secs();
                tx.execute(
                    "INSERT OR IGNORE INTO merchants (uuid, created_at) VALUES (?1, ?2)",
                    params![merchant.to_string(), now],
                )?;
                let previous: Option<(String, AccountStatus)> = tx
                    .query_row(
                        "SELECT merchant_uuid, status FROM pages WHERE page_id = ?1",
                        [&p],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                if matches!(previous, Some((_, AccountStatus::Deleting))) {
                    // A data deletion of this page is under way: it must not come back half
                    // deleted. The merchant can connect it again once the deletion is done.
                    return Ok(SavedPage::BeingDeleted);
                }
                if let Some(prev) = previous.map(|p| p.0).filter(|m| *m != merchant.to_string()) {
                    // The page's admin connected it to another merchant: its objects follow
                    // the new owner from now on. Logged, as it moves data between accounts.
                    tracing::warn!(page = %p, from = %prev, to = %merchant, "page moved to another merchant");
                }
                tx.execute(
                    "INSERT INTO pages (page_id, merchant_uuid, fb_user_id, name, access_token, status, status_reason, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'active', NULL, ?6, ?6)
                     ON CONFLICT(page_id) DO UPDATE SET merchant_uuid = excluded.merchant_uuid,
                        fb_user_id = excluded.fb_user_id, name = excluded.name,
                        access_token = excluded.access_token,
                        status = 'active', status_reason = NULL, updated_at = excluded.updated_at",
                    params![p, merchant.to_string(), fb_user_id, name, enc, now],
                )?;
                tx.commit()?;
                Ok(SavedPage::Saved(merchant))
            })
            .await
    }

    pub async fn page(&self, page: &PageId) -> Result<Option<PageRecord>, StoreError> {
        let p = page.as_str().to_string();
        let row = self
            .db
            .call(move |c| {
                Ok(c.query_row(
                    "SELECT merchant_uuid, name, access_token, status, status_reason FROM pages WHERE page_id = ?1",
                    [&p],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, Option<String>>(1)?,
                            r.get::<_, Vec<u8>>(2)?,
                            r.get::<_, AccountStatus>(3)?,
                            r.get::<_, Option<String>>(4)?,
                        ))
                    },
                )
                .optional()?)
            })
            .await?;
        let Some((m, name, tok, status, reason)) = row else {
            return Ok(None);
        };
        Ok(Some(PageRecord {
            page_id: page.clone(),
            merchant: parse_uuid(m)?,
            name,
            access_token: self.cipher.decrypt(&tok, &page_aad(page.as_str()))?,
            status,
            status_reason: reason,
        }))
    }

    pub async fn active_pages(&self) -> Result<Vec<PageId>, StoreError> {
        self.ids(
            "SELECT page_id FROM pages WHERE status = 'active' ORDER BY page_id",
            None,
            |p| PageId::parse(p).ok(),
        )
        .await
    }

    pub async fn set_page_status(
        &self,
        page: &PageId,
        status: AccountStatus,
        reason: Option<String>,
    ) -> Result<(), StoreError> {
        let p = page.as_str().to_string();
        self.db
            .call(move |c| {
                // A deletion in progress is never undone by another status.
                c.execute(
                    "UPDATE pages SET status = ?2, status_reason = ?3, updated_at = ?4
                     WHERE page_id = ?1 AND status != 'deleting'",
                    params![p, status, reason, now_secs()],
                )?;
                Ok(())
            })
            .await
    }

    /// Marks the page `needs_reauth` because Graph refused `rejected` — only while that is
    /// still the stored token (a reconnect may have replaced it meanwhile) and the page is not
    /// being deleted. Returns whether it was marked.
    pub async fn mark_page_reauth(
        &self,
        page: &PageId,
        rejected: &SecretString,
        reason: String,
    ) -> Result<bool, StoreError> {
        let p = page.as_str().to_string();
        let cipher = self.cipher.clone();
        let rejected = SecretString::from(rejected.expose_secret().to_string());
        self.db
            .call(move |c| {
                let tx = c.transaction()?;
                let stored: Option<Vec<u8>> = tx
                    .query_row(
                        "SELECT access_token FROM pages WHERE page_id = ?1 AND status != 'deleting'",
                        [&p],
                        |r| r.get(0),
                    )
                    .optional()?;
                let Some(stored) = stored else {
                    return Ok(false);
                };
                let current = cipher.decrypt(&stored, &page_aad(&p))?;
                if current.expose_secret() != rejected.expose_secret() {
                    return Ok(false);
                }
                tx.execute(
                    "UPDATE pages SET status = 'needs_reauth', status_reason = ?2, updated_at = ?3
                     WHERE page_id = ?1",
                    params![p, reason, now_secs()],
                )?;
                tx.commit()?;
                Ok(true)
            })
            .await
    }

    pub async fn delete_page(&self, page: &PageId) -> Result<bool, StoreError> {
        let p = page.as_str().to_string();
        self.db
            .call(move |c| Ok(c.execute("DELETE FROM pages WHERE page_id = ?1", [p])? > 0))
            .await
    }

    /// Merchants whose Facebook login was made by `fb_user_id` (Meta's data-deletion callback
    /// names the app-scoped user id).
    pub async fn merchants_of_facebook_user(
        &self,
        fb_user_id: &str,
    ) -> Result<Vec<Uuid>, StoreError> {
        self.ids(
            "SELECT merchant_uuid FROM facebook_users WHERE fb_user_id = ?1",
            Some(fb_user_id.to_string()),
            |m| Uuid::parse_str(m).ok(),
        )
        .await
    }

    /// (merchant, page) of every page granted by the Facebook user `fb_user_id`.
    pub async fn pages_granted_by(
        &self,
        fb_user_id: &str,
    ) -> Result<Vec<(Uuid, PageId)>, StoreError> {
        let id = fb_user_id.to_string();
        let rows: Vec<(String, String)> = self
            .db
            .call(move |c| {
                let mut st = c.prepare(
                    "SELECT merchant_uuid, page_id FROM pages WHERE fb_user_id = ?1 ORDER BY page_id",
                )?;
                let v = st
                    .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(v)
            })
            .await?;
        Ok(rows
            .iter()
            .filter_map(|(m, p)| Some((Uuid::parse_str(m).ok()?, PageId::parse(p).ok()?)))
            .collect())
    }

    pub async fn delete_facebook_user(&self, merchant: Uuid) -> Result<(), StoreError> {
        self.db
            .call(move |c| {
                c.execute(
                    "DELETE FROM facebook_users WHERE merchant_uuid = ?1",
                    [merchant.to_string()],
                )?;
                Ok(())
            })
            .await
    }

    /// Marks every page granted by `fb_user_id` as being deleted, so merges and polls that
    /// start from now on refuse to write to it; returns (merchant, page) of each.
    pub async fn mark_pages_deleting(
        &self,
        fb_user_id: &str,
        reason: &str,
    ) -> Result<Vec<(Uuid, PageId)>, StoreError> {
        let (id, reason) = (fb_user_id.to_string(), reason.to_string());
        self.db
            .call(move |c| {
                c.execute(
                    "UPDATE pages SET status = 'deleting', status_reason = ?2, updated_at = ?3
                     WHERE fb_user_id = ?1",
                    params![id, reason, now_secs()],
                )?;
                Ok(())
            })
            .await?;
        self.pages_granted_by(fb_user_id).await
    }
}
