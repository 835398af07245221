//! Facebook users (who connected a merchant's pages) and their pages.

use rusqlite::{params, OptionalExtension};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::{
    ids, page_aad, parse_uuid, postgres, AccountStatus, FacebookUserRecord, PageRecord, StoredPage,
    TokenStore,
};
use crate::objects::keys::PageId;
use crate::store::{now_secs, sqlite_or, StoreError};

/// What storing a page token did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SavedPage {
    /// Stored, for this merchant (new, or already this merchant's).
    Saved(Uuid),
    /// Moved here from merchant `from` by the Facebook user who had connected it there; the
    /// move's record is `move_id` (its clean-up job reports to it).
    Moved { from: Uuid, move_id: i64 },
    /// Refused: the page is connected to another merchant by another Facebook user.
    OwnedElsewhere,
    /// Refused: the page's data is being deleted.
    BeingDeleted,
}

/// A page that left a merchant for another one, as the old merchant's status reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PageMove {
    pub page_id: String,
    pub from_merchant: Uuid,
    pub moved_at: i64,
    /// When the old merchant's copy was deleted (`None` while the job has not run).
    pub cleaned_at: Option<i64>,
    pub objects_deleted: Option<i64>,
}

impl TokenStore {
    /// Records which Facebook user connected the merchant's pages (one per merchant). Their
    /// user token is used during the connect only and never stored.
    pub async fn save_facebook_user(
        &self,
        merchant: Uuid,
        fb_user_id: Option<String>,
    ) -> Result<(), StoreError> {
        let db =
            sqlite_or!(&self.backend, pg => postgres::save_facebook_user(pg, merchant, fb_user_id));
        db.call(move |c| {
                let now = now_secs();
                c.execute(
                    "INSERT OR IGNORE INTO merchants (uuid, created_at) VALUES (?1, ?2)",
                    params![merchant.to_string(), now],
                )?;
                c.execute(
                    "INSERT INTO facebook_users (merchant_uuid, fb_user_id, status, status_reason, updated_at)
                     VALUES (?1, ?2, 'active', NULL, ?3)
                     ON CONFLICT(merchant_uuid) DO UPDATE SET fb_user_id = excluded.fb_user_id,
                        status = 'active', status_reason = NULL, updated_at = excluded.updated_at",
                    params![merchant.to_string(), fb_user_id, now],
                )?;
                Ok(())
            })
            .await
    }

    pub async fn facebook_user(
        &self,
        merchant: Uuid,
    ) -> Result<Option<FacebookUserRecord>, StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::facebook_user(pg, merchant));
        let row = db
            .call(move |c| {
                Ok(c.query_row(
                    "SELECT fb_user_id, status FROM facebook_users WHERE merchant_uuid = ?1",
                    [merchant.to_string()],
                    |r| {
                        Ok((
                            r.get::<_, Option<String>>(0)?,
                            r.get::<_, AccountStatus>(1)?,
                        ))
                    },
                )
                .optional()?)
            })
            .await?;
        Ok(row.map(|(fb_user_id, status)| FacebookUserRecord {
            merchant,
            fb_user_id,
            status,
        }))
    }

    pub async fn set_facebook_user_status(
        &self,
        merchant: Uuid,
        status: AccountStatus,
        reason: Option<String>,
    ) -> Result<(), StoreError> {
        let db = sqlite_or!(&self.backend, pg =>
            postgres::set_facebook_user_status(pg, merchant, status, reason));
        db.call(move |c| {
                c.execute(
                    "UPDATE facebook_users SET status = ?2, status_reason = ?3, updated_at = ?4 WHERE merchant_uuid = ?1",
                    params![merchant.to_string(), status, reason, now_secs()],
                )?;
                Ok(())
            })
            .await
    }

    /// Stores a page token for `merchant`, granted by the Facebook user `fb_user_id`.
    ///
    /// A page connected to another merchant is never taken silently: it moves only when the
    /// same Facebook user who connected it there grants it again (they administer the page and
    /// chose where it goes), and the move is recorded for the old merchant. Anyone else gets
    /// `OwnedElsewhere` and the page stays where it is.
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
        let db = sqlite_or!(&self.backend, pg =>
            postgres::save_page(pg, &p, merchant, fb_user_id, name, enc));
        db.call(move |c| {
                let tx = c.transaction()?;
                let now = now_secs();
                let previous: Option<(String, AccountStatus, Option<String>)> = tx
                    .query_row(
                        "SELECT merchant_uuid, status, fb_user_id FROM pages WHERE page_id = ?1",
                        [&p],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .optional()?;
                let mut saved = SavedPage::Saved(merchant);
                if let Some((owner, status, grantor)) = previous {
                    if status == AccountStatus::Deleting {
                        // A data deletion of this page is under way: it must not come back
                        // half deleted. It can be connected again once the deletion is done.
                        return Ok(SavedPage::BeingDeleted);
                    }
                    if owner != merchant.to_string() {
                        let same_user = grantor.is_some() && grantor == fb_user_id;
                        if !same_user {
                            return Ok(SavedPage::OwnedElsewhere);
                        }
                        let from = parse_uuid(owner)?;
                        tx.execute(
                            "INSERT INTO page_moves (page_id, from_merchant, to_merchant, fb_user_id, moved_at)
                             VALUES (?1, ?2, ?3, ?4, ?5)",
                            params![p, from.to_string(), merchant.to_string(), grantor, now],
                        )?;
                        let move_id = tx.last_insert_rowid();
                        // The watermarks say what the old merchant's copy holds; the new
                        // merchant's copy is empty, so its first poll must read everything.
                        tx.execute(
                            "DELETE FROM conversation_watermarks WHERE page_id = ?1",
                            [&p],
                        )?;
                        saved = SavedPage::Moved { from, move_id };
                    }
                }
                tx.execute(
                    "INSERT OR IGNORE INTO merchants (uuid, created_at) VALUES (?1, ?2)",
                    params![merchant.to_string(), now],
                )?;
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
                Ok(saved)
            })
            .await
    }

    /// Records that the old merchant's copy of a moved page was deleted.
    pub async fn page_move_cleaned(&self, move_id: i64, objects: usize) -> Result<(), StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::page_move_cleaned(pg, move_id, objects));
        db.call(move |c| {
            c.execute(
                "UPDATE page_moves SET cleaned_at = ?2, objects_deleted = ?3 WHERE id = ?1",
                params![move_id, now_secs(), objects as i64],
            )?;
            Ok(())
        })
        .await
    }

    /// Moves whose old copy has not been deleted yet: (move id, page, old merchant, user).
    pub async fn uncleaned_page_moves(
        &self,
    ) -> Result<Vec<(i64, String, String, String)>, StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::uncleaned_page_moves(pg));
        db.call(|c| {
            let mut st = c.prepare(
                "SELECT id, page_id, from_merchant, fb_user_id FROM page_moves
                     WHERE cleaned_at IS NULL ORDER BY id",
            )?;
            let v = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(v)
        })
        .await
    }

    /// Pages that moved away from their merchant, newest first (at most `limit`).
    pub async fn page_moves(&self, limit: usize) -> Result<Vec<PageMove>, StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::page_moves(pg, limit));
        db.call(move |c| {
            let mut st = c.prepare(
                "SELECT page_id, from_merchant, moved_at, cleaned_at, objects_deleted
                     FROM page_moves ORDER BY moved_at DESC, id DESC LIMIT ?1",
            )?;
            let v = st
                .query_map([limit as i64], |r| {
                    Ok(PageMove {
                        page_id: r.get(0)?,
                        from_merchant: parse_uuid(r.get(1)?)?,
                        moved_at: r.get(2)?,
                        cleaned_at: r.get(3)?,
                        objects_deleted: r.get(4)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(v)
        })
        .await
    }

    /// Whether the merchant still has anything connected: a shop that is not uninstalled, or
    /// a page (in any state but being deleted).
    pub async fn merchant_has_connections(&self, merchant: Uuid) -> Result<bool, StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::merchant_has_connections(pg, merchant));
        db.call(move |c| {
                let m = merchant.to_string();
                Ok(c.query_row(
                    "SELECT EXISTS (SELECT 1 FROM shops WHERE merchant_uuid = ?1 AND status != 'uninstalled')
                         OR EXISTS (SELECT 1 FROM pages WHERE merchant_uuid = ?1 AND status != 'deleting')",
                    [m],
                    |r| r.get(0),
                )?)
            })
            .await
    }

    pub async fn page(&self, page: &PageId) -> Result<Option<PageRecord>, StoreError> {
        let Some(row) = self.stored_page(page).await? else {
            return Ok(None);
        };
        Ok(Some(PageRecord {
            page_id: page.clone(),
            merchant: row.merchant,
            name: row.name,
            access_token: self
                .cipher
                .decrypt(&row.access_token, &page_aad(page.as_str()))?,
            status: row.status,
            status_reason: row.status_reason,
        }))
    }

    async fn stored_page(&self, page: &PageId) -> Result<Option<StoredPage>, StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::stored_page(pg, page.as_str()));
        let p = page.as_str().to_string();
        db.call(move |c| {
            Ok(c.query_row(
                "SELECT merchant_uuid, name, access_token, status, status_reason FROM pages WHERE page_id = ?1",
                [&p],
                |r| {
                    Ok(StoredPage {
                        merchant: parse_uuid(r.get(0)?)?,
                        name: r.get(1)?,
                        access_token: r.get(2)?,
                        status: r.get(3)?,
                        status_reason: r.get(4)?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    pub async fn active_pages(&self) -> Result<Vec<PageId>, StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::active_pages(pg));
        ids(
            db,
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
        let db = sqlite_or!(&self.backend, pg =>
            postgres::set_page_status(pg, page.as_str(), status, reason));
        let p = page.as_str().to_string();
        db.call(move |c| {
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
        let db = sqlite_or!(&self.backend, pg =>
            postgres::mark_page_reauth(pg, &cipher, &p, rejected, reason));
        let rejected = SecretString::from(rejected.expose_secret().to_string());
        db.call(move |c| {
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
        let db = sqlite_or!(&self.backend, pg => postgres::delete_page(pg, page.as_str()));
        let p = page.as_str().to_string();
        db.call(move |c| Ok(c.execute("DELETE FROM pages WHERE page_id = ?1", [p])? > 0))
            .await
    }

    /// Merchants whose Facebook login was made by `fb_user_id` (Meta's data-deletion callback
    /// names the app-scoped user id).
    pub async fn merchants_of_facebook_user(
        &self,
        fb_user_id: &str,
    ) -> Result<Vec<Uuid>, StoreError> {
        let db =
            sqlite_or!(&self.backend, pg => postgres::merchants_of_facebook_user(pg, fb_user_id));
        ids(
            db,
            "SELECT merchant_uuid FROM facebook_users WHERE fb_user_id = ?1 ORDER BY merchant_uuid",
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
        let db = sqlite_or!(&self.backend, pg => postgres::pages_granted_by(pg, fb_user_id));
        let id = fb_user_id.to_string();
        let rows: Vec<(String, String)> = db
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
        let db = sqlite_or!(&self.backend, pg => postgres::delete_facebook_user(pg, merchant));
        db.call(move |c| {
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
        let db =
            sqlite_or!(&self.backend, pg => postgres::mark_pages_deleting(pg, fb_user_id, reason));
        let (id, reason) = (fb_user_id.to_string(), reason.to_string());
        db.call(move |c| {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{configure, DbKind};

    fn tok(t: &str) -> SecretString {
        SecretString::from(t.to_string())
    }

    #[test]
    fn the_migration_erases_stored_user_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.db");
        let mut c = rusqlite::Connection::open(&path).unwrap();
        configure(&c).unwrap();
        // The schema before this change, with a user token as earlier versions stored it.
        DbKind::Tokens.migrations().to_version(&mut c, 4).unwrap();
        // Longer than a database page, so it lives in overflow pages that a rewrite frees.
        let marker: &[u8] = b"USER_TOKEN_CIPHERTEXT_STAND_IN";
        let secret = marker.repeat(400);
        let file_holds_marker = || {
            let mut raw = std::fs::read(&path).unwrap();
            raw.extend(std::fs::read(dir.path().join("tokens.db-wal")).unwrap_or_default());
            raw.windows(marker.len()).any(|w| w == marker)
        };
        c.execute(
            "INSERT INTO merchants (uuid, created_at) VALUES ('m', 1)",
            [],
        )
        .unwrap();
        c.execute(
            "INSERT INTO facebook_users (merchant_uuid, fb_user_id, access_token, expires_at, updated_at)
             VALUES ('m', '55', ?1, 9, 1)",
            [&secret],
        )
        .unwrap();
        c.pragma_update(None, "wal_checkpoint", "TRUNCATE").unwrap();
        assert!(file_holds_marker(), "the check can see a stored token");
        DbKind::Tokens.migrations().to_latest(&mut c).unwrap();
        let cols: Vec<String> = c
            .prepare("SELECT name FROM pragma_table_info('facebook_users')")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(!cols
            .iter()
            .any(|c| c == "access_token" || c == "expires_at"));
        let user: String = c
            .query_row("SELECT fb_user_id FROM facebook_users", [], |r| r.get(0))
            .unwrap();
        assert_eq!(user, "55", "who connected is kept");
        c.pragma_update(None, "wal_checkpoint", "TRUNCATE").unwrap();
        drop(c);
        assert!(
            !file_holds_marker(),
            "the old token's bytes are gone from the file"
        );
    }

    #[tokio::test]
    async fn a_page_moves_only_when_its_grantor_grants_it_again() {
        for on in crate::store::tokens::tests::stores().await {
            a_page_moves_only_when_its_grantor_grants_it_again_on(&on.store).await;
        }
    }

    async fn a_page_moves_only_when_its_grantor_grants_it_again_on(s: &TokenStore) {
        let page = PageId::parse("77").unwrap();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let u1 = Some("1001".to_string());
        assert_eq!(
            s.save_page(&page, a, u1.clone(), None, &tok("t1"))
                .await
                .unwrap(),
            SavedPage::Saved(a)
        );
        // Another user, or no known user, cannot take it.
        for other in [Some("2002".to_string()), None] {
            assert_eq!(
                s.save_page(&page, b, other, None, &tok("t2"))
                    .await
                    .unwrap(),
                SavedPage::OwnedElsewhere
            );
        }
        let kept = s.page(&page).await.unwrap().unwrap();
        assert_eq!(kept.merchant, a);
        assert_eq!(kept.access_token.expose_secret(), "t1");
        assert!(s.page_moves(10).await.unwrap().is_empty());
        // The same merchant reconnecting is no move.
        assert_eq!(
            s.save_page(&page, a, u1.clone(), None, &tok("t3"))
                .await
                .unwrap(),
            SavedPage::Saved(a)
        );
        let w = crate::store::tokens::Watermark {
            conversation_id: "t_1".into(),
            updated_time: 1,
            newest_ts: None,
            newest_mid: None,
            object_sha256: None,
        };
        let psid = crate::objects::keys::GraphId::parse("900").unwrap();
        assert!(s.save_watermark(&page, &psid, w).await.unwrap());
        let SavedPage::Moved { from, move_id } = s
            .save_page(&page, b, u1.clone(), None, &tok("t4"))
            .await
            .unwrap()
        else {
            panic!("the grantor moves it");
        };
        assert_eq!(from, a);
        assert_eq!(s.page(&page).await.unwrap().unwrap().merchant, b);
        let moves = s.page_moves(10).await.unwrap();
        assert_eq!(moves.len(), 1);
        assert_eq!((moves[0].from_merchant, moves[0].cleaned_at), (a, None));
        assert!(
            s.watermark_times(&page).await.unwrap().is_empty(),
            "the new merchant's first poll reads everything"
        );
        assert_eq!(
            s.uncleaned_page_moves().await.unwrap(),
            vec![(move_id, "77".to_string(), a.to_string(), "1001".to_string())]
        );
        s.page_move_cleaned(move_id, 4).await.unwrap();
        assert_eq!(s.page_moves(10).await.unwrap()[0].objects_deleted, Some(4));
        assert!(s.page_moves(10).await.unwrap()[0].cleaned_at.is_some());
        assert!(s.uncleaned_page_moves().await.unwrap().is_empty());
    }
}
