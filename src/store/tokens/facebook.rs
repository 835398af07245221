//! Facebook users (who connected a merchant's pages) and their pages.

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};

use super::{
    big, merchant_uuid, parsed, Aad, AccountStatus, FacebookUserRecord, PageRecord, TokenStore,
};
use crate::ids::MerchantId;
use crate::ids::PageId;
use crate::store::{now_secs, StoreError};

/// What storing a page token did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SavedPage {
    /// Stored, for this merchant (new, or already this merchant's).
    Saved(MerchantId),
    /// Moved here from merchant `from` by the Facebook user who had connected it there; the
    /// move's record is `move_id` (its clean-up job reports to it).
    Moved { from: MerchantId, move_id: i64 },
    /// Refused: the page is connected to another merchant by another Facebook user.
    OwnedElsewhere,
    /// Not moved yet: the page is connected to another merchant by this same Facebook user,
    /// and moves only when they confirm it (`TokenStore::move_page_here`).
    MoveNeedsConfirmation,
    /// Refused: the page's data is being deleted.
    BeingDeleted,
}

/// A page that left a merchant for another one, as the old merchant's status reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PageMove {
    pub page_id: String,
    pub from_merchant: MerchantId,
    pub moved_at: i64,
    /// When the old merchant's copy was deleted (`None` while the job has not run).
    pub cleaned_at: Option<i64>,
    pub objects_deleted: Option<i64>,
}

/// A page token to store, encrypted, with who it is for and who granted it.
pub(super) struct NewPage {
    pub(super) page: String,
    pub(super) merchant: MerchantId,
    pub(super) fb_user_id: Option<String>,
    pub(super) name: Option<String>,
    pub(super) access_token: Vec<u8>,
    pub(super) now: i64,
    /// The person confirmed, on a page of the service, that this page moves here.
    pub(super) move_confirmed: bool,
}

/// Whose a stored page is, as `save_page` reads it before deciding.
pub(super) struct PageOwner {
    pub(super) merchant: String,
    pub(super) status: String,
    pub(super) grantor: Option<String>,
}

/// What saving a page does, decided by `connect_page`.
pub(super) enum PageConnect {
    /// Nothing is written; this is the outcome.
    Refused(SavedPage),
    /// Stored for the merchant (new, or already theirs).
    Save,
    /// Stored for the merchant after recording its move from `from` (by `grantor`, who had
    /// connected it there) and forgetting its watermarks.
    Move { from: MerchantId, grantor: String },
}

/// A page's row as stored, its token still encrypted (see `StoredShop`).
pub(super) struct StoredPage {
    pub(super) merchant: String,
    pub(super) name: Option<String>,
    pub(super) access_token: Vec<u8>,
    pub(super) status: String,
    pub(super) status_reason: Option<String>,
}

/// A page move as stored.
pub(super) struct PageMoveRow {
    pub(super) page_id: String,
    pub(super) from_merchant: String,
    pub(super) moved_at: i64,
    pub(super) cleaned_at: Option<i64>,
    pub(super) objects_deleted: Option<i64>,
}

/// The Facebook part of `TokenDb`.
#[async_trait]
pub(super) trait FacebookDb: Send + Sync {
    /// Records the merchant, then upserts its Facebook user as active.
    async fn save_facebook_user(
        &self,
        merchant: String,
        fb_user_id: Option<String>,
        now: i64,
    ) -> Result<(), StoreError>;
    /// The user's id and status, as stored.
    async fn facebook_user(
        &self,
        merchant: String,
    ) -> Result<Option<(Option<String>, String)>, StoreError>;
    async fn set_facebook_user_status(
        &self,
        merchant: String,
        status: AccountStatus,
        reason: Option<String>,
        now: i64,
    ) -> Result<(), StoreError>;
    /// In one transaction (on PostgreSQL one page at a time across instances): reads the
    /// page's owner, decides with `connect_page`, and writes what it decided.
    async fn save_page(&self, page: NewPage) -> Result<SavedPage, StoreError>;
    async fn page_move_cleaned(
        &self,
        move_id: i64,
        objects: i64,
        now: i64,
    ) -> Result<(), StoreError>;
    async fn uncleaned_page_moves(&self) -> Result<Vec<(i64, String, String, String)>, StoreError>;
    /// Newest first; only those away from `from` when given.
    async fn page_moves(
        &self,
        from: Option<String>,
        limit: i64,
    ) -> Result<Vec<PageMoveRow>, StoreError>;
    async fn merchant_has_connections(&self, merchant: String) -> Result<bool, StoreError>;
    async fn stored_page(&self, page: String) -> Result<Option<StoredPage>, StoreError>;
    /// Ids of the active pages, in byte order.
    async fn active_pages(&self) -> Result<Vec<String>, StoreError>;
    /// Sets the status unless the page is being deleted.
    async fn set_page_status(
        &self,
        page: String,
        status: AccountStatus,
        reason: Option<String>,
        now: i64,
    ) -> Result<(), StoreError>;
    /// The page's token, unless the page is gone or being deleted.
    async fn writable_page_token(&self, page: String) -> Result<Option<Vec<u8>>, StoreError>;
    /// Marks the page `needs_reauth` if it still holds `token` and is not being deleted.
    async fn mark_page_reauth(
        &self,
        page: String,
        token: Vec<u8>,
        reason: String,
        now: i64,
    ) -> Result<bool, StoreError>;
    async fn delete_page(&self, page: String) -> Result<bool, StoreError>;
    /// In byte order.
    async fn merchants_of_facebook_user(
        &self,
        fb_user_id: String,
    ) -> Result<Vec<String>, StoreError>;
    /// (merchant, page) of each page the user granted, by page id in byte order.
    async fn pages_granted_by(
        &self,
        fb_user_id: String,
    ) -> Result<Vec<(String, String)>, StoreError>;
    async fn delete_facebook_user(&self, merchant: String) -> Result<(), StoreError>;
    async fn mark_pages_deleting(
        &self,
        fb_user_id: String,
        reason: String,
        now: i64,
    ) -> Result<(), StoreError>;
}

/// What saving a page for `merchant`, granted by `fb_user_id`, does to the page's stored row
/// `previous`. Each backend runs it inside the transaction that read `previous` and writes the
/// outcome, so the decision still holds when it is written.
///
/// A page connected to another merchant is never taken as a side effect of a connect: a
/// person who manages two businesses' pages must not move one client's conversations into the
/// other's account by connecting it. It moves only when the same Facebook user who connected
/// it there confirms that page (`move_confirmed`); the move is recorded for the old merchant.
/// Until then that user gets `MoveNeedsConfirmation`, anyone else `OwnedElsewhere`, and the
/// page stays where it is.
pub(super) fn connect_page(
    previous: Option<PageOwner>,
    merchant: MerchantId,
    fb_user_id: Option<&str>,
    move_confirmed: bool,
) -> Result<PageConnect, StoreError> {
    let Some(owner) = previous else {
        return Ok(PageConnect::Save);
    };
    if owner.status.parse::<AccountStatus>()? == AccountStatus::Deleting {
        // A data deletion of this page is under way: it must not come back half deleted. It
        // can be connected again once the deletion is done.
        return Ok(PageConnect::Refused(SavedPage::BeingDeleted));
    }
    if owner.merchant == merchant.to_string() {
        return Ok(PageConnect::Save);
    }
    match owner.grantor {
        Some(grantor) if fb_user_id == Some(grantor.as_str()) => Ok(if move_confirmed {
            PageConnect::Move {
                from: merchant_uuid(&owner.merchant)?,
                grantor,
            }
        } else {
            PageConnect::Refused(SavedPage::MoveNeedsConfirmation)
        }),
        _ => Ok(PageConnect::Refused(SavedPage::OwnedElsewhere)),
    }
}

impl TokenStore {
    /// Records which Facebook user connected the merchant's pages (one per merchant). Their
    /// user token is used during the connect only and never stored.
    pub async fn save_facebook_user(
        &self,
        merchant: MerchantId,
        fb_user_id: Option<String>,
    ) -> Result<(), StoreError> {
        self.db
            .save_facebook_user(merchant.to_string(), fb_user_id, now_secs())
            .await
    }

    pub async fn facebook_user(
        &self,
        merchant: MerchantId,
    ) -> Result<Option<FacebookUserRecord>, StoreError> {
        let Some((fb_user_id, status)) = self.db.facebook_user(merchant.to_string()).await? else {
            return Ok(None);
        };
        Ok(Some(FacebookUserRecord {
            merchant,
            fb_user_id,
            status: status.parse()?,
        }))
    }

    pub async fn set_facebook_user_status(
        &self,
        merchant: MerchantId,
        status: AccountStatus,
        reason: Option<String>,
    ) -> Result<(), StoreError> {
        self.db
            .set_facebook_user_status(merchant.to_string(), status, reason, now_secs())
            .await
    }

    /// Stores a page token for `merchant`, granted by the Facebook user `fb_user_id`; a page
    /// connected to another merchant is left there (see `connect_page`).
    pub async fn save_page(
        &self,
        page: &PageId,
        merchant: MerchantId,
        fb_user_id: Option<String>,
        name: Option<String>,
        token: &SecretString,
    ) -> Result<SavedPage, StoreError> {
        let p = page.as_str();
        self.db
            .save_page(NewPage {
                page: p.to_string(),
                merchant,
                fb_user_id,
                name,
                access_token: self.seal(token, Aad::Page(p)),
                now: now_secs(),
                move_confirmed: false,
            })
            .await
    }

    /// Moves a page connected to another merchant to `merchant`, as `fb_user_id` confirmed:
    /// only if that user is the one who connected it there (else `OwnedElsewhere`). The page
    /// keeps its stored token (that same user granted it) and name.
    pub async fn move_page_here(
        &self,
        page: &PageId,
        merchant: MerchantId,
        fb_user_id: String,
    ) -> Result<SavedPage, StoreError> {
        let Some(rec) = self.page(page).await? else {
            return Ok(SavedPage::OwnedElsewhere);
        };
        if rec.merchant == merchant {
            // Already here (a second click): nothing to write.
            return Ok(SavedPage::Saved(merchant));
        }
        let p = page.as_str();
        self.db
            .save_page(NewPage {
                page: p.to_string(),
                merchant,
                fb_user_id: Some(fb_user_id),
                name: rec.name,
                access_token: self.seal(&rec.access_token, Aad::Page(p)),
                now: now_secs(),
                move_confirmed: true,
            })
            .await
    }

    /// Records that the old merchant's copy of a moved page was deleted.
    pub async fn page_move_cleaned(&self, move_id: i64, objects: usize) -> Result<(), StoreError> {
        self.db
            .page_move_cleaned(move_id, big(objects), now_secs())
            .await
    }

    /// Moves whose old copy has not been deleted yet: (move id, page, old merchant, user).
    pub async fn uncleaned_page_moves(
        &self,
    ) -> Result<Vec<(i64, String, String, String)>, StoreError> {
        self.db.uncleaned_page_moves().await
    }

    /// Pages that moved away from their merchant, newest first (at most `limit`).
    pub async fn page_moves(&self, limit: usize) -> Result<Vec<PageMove>, StoreError> {
        self.moves(None, limit).await
    }

    /// Pages that moved away from `merchant`, newest first (at most `limit`).
    pub async fn page_moves_from(
        &self,
        merchant: MerchantId,
        limit: usize,
    ) -> Result<Vec<PageMove>, StoreError> {
        self.moves(Some(merchant.to_string()), limit).await
    }

    async fn moves(&self, from: Option<String>, limit: usize) -> Result<Vec<PageMove>, StoreError> {
        self.db
            .page_moves(from, big(limit))
            .await?
            .into_iter()
            .map(|row| {
                Ok(PageMove {
                    page_id: row.page_id,
                    from_merchant: merchant_uuid(&row.from_merchant)?,
                    moved_at: row.moved_at,
                    cleaned_at: row.cleaned_at,
                    objects_deleted: row.objects_deleted,
                })
            })
            .collect()
    }

    /// Whether the merchant still has anything connected: a shop that is not uninstalled, or
    /// a page (in any state but being deleted).
    pub async fn merchant_has_connections(&self, merchant: MerchantId) -> Result<bool, StoreError> {
        self.db.merchant_has_connections(merchant.to_string()).await
    }

    pub async fn page(&self, page: &PageId) -> Result<Option<PageRecord>, StoreError> {
        let Some(row) = self.db.stored_page(page.as_str().to_string()).await? else {
            return Ok(None);
        };
        Ok(Some(PageRecord {
            page_id: page.clone(),
            merchant: merchant_uuid(&row.merchant)?,
            name: row.name,
            access_token: self.open(&row.access_token, Aad::Page(page.as_str()))?,
            status: row.status.parse()?,
            status_reason: row.status_reason,
        }))
    }

    pub async fn active_pages(&self) -> Result<Vec<PageId>, StoreError> {
        let rows = self.db.active_pages().await?;
        Ok(parsed(rows, |p| PageId::parse(p).ok()))
    }

    pub async fn set_page_status(
        &self,
        page: &PageId,
        status: AccountStatus,
        reason: Option<String>,
    ) -> Result<(), StoreError> {
        let p = page.as_str().to_string();
        self.db.set_page_status(p, status, reason, now_secs()).await
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
        let Some(stored) = self.db.writable_page_token(p.clone()).await? else {
            return Ok(false);
        };
        let current = self.open(&stored, Aad::Page(&p))?;
        if current.expose_secret() != rejected.expose_secret() {
            return Ok(false);
        }
        // Written only if `stored` is still the page's token: a reconnect that replaced it
        // since it was read is not marked.
        self.db
            .mark_page_reauth(p, stored, reason, now_secs())
            .await
    }

    pub async fn delete_page(&self, page: &PageId) -> Result<bool, StoreError> {
        self.db.delete_page(page.as_str().to_string()).await
    }

    /// Merchants whose Facebook login was made by `fb_user_id` (Meta's data-deletion callback
    /// names the app-scoped user id).
    pub async fn merchants_of_facebook_user(
        &self,
        fb_user_id: &str,
    ) -> Result<Vec<MerchantId>, StoreError> {
        let rows = self
            .db
            .merchants_of_facebook_user(fb_user_id.to_string())
            .await?;
        Ok(parsed(rows, |m| MerchantId::parse(m).ok()))
    }

    /// (merchant, page) of every page granted by the Facebook user `fb_user_id`.
    pub async fn pages_granted_by(
        &self,
        fb_user_id: &str,
    ) -> Result<Vec<(MerchantId, PageId)>, StoreError> {
        let rows = self.db.pages_granted_by(fb_user_id.to_string()).await?;
        Ok(rows
            .iter()
            .filter_map(|(m, p)| Some((MerchantId::parse(m).ok()?, PageId::parse(p).ok()?)))
            .collect())
    }

    pub async fn delete_facebook_user(&self, merchant: MerchantId) -> Result<(), StoreError> {
        self.db.delete_facebook_user(merchant.to_string()).await
    }

    /// Marks every page granted by `fb_user_id` as being deleted, so merges and polls that
    /// start from now on refuse to write to it; returns (merchant, page) of each.
    pub async fn mark_pages_deleting(
        &self,
        fb_user_id: &str,
        reason: &str,
    ) -> Result<Vec<(MerchantId, PageId)>, StoreError> {
        self.db
            .mark_pages_deleting(fb_user_id.to_string(), reason.to_string(), now_secs())
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
    async fn a_page_moves_only_when_its_grantor_confirms_it() {
        for on in crate::store::tokens::tests::stores().await {
            a_page_moves_only_when_its_grantor_confirms_it_on(&on.store).await;
        }
    }

    async fn a_page_moves_only_when_its_grantor_confirms_it_on(s: &TokenStore) {
        let page = PageId::parse("77").unwrap();
        let (a, b) = (MerchantId::random(), MerchantId::random());
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
        let psid = crate::ids::Psid::parse("900").unwrap();
        assert!(s.save_watermark(&page, &psid, w).await.unwrap());
        // The grantor connecting it from another merchant moves nothing by itself.
        assert_eq!(
            s.save_page(&page, b, u1.clone(), None, &tok("t4"))
                .await
                .unwrap(),
            SavedPage::MoveNeedsConfirmation
        );
        assert_eq!(s.page(&page).await.unwrap().unwrap().merchant, a);
        assert!(s.page_moves(10).await.unwrap().is_empty());
        // Nor can another user's confirmation move it.
        let refused = s.move_page_here(&page, b, "2002".into()).await.unwrap();
        assert_eq!(refused, SavedPage::OwnedElsewhere);
        // The grantor's confirmation does (the page keeps its stored token).
        let SavedPage::Moved { from, move_id } =
            s.move_page_here(&page, b, "1001".into()).await.unwrap()
        else {
            panic!("the grantor moves it");
        };
        assert_eq!(from, a);
        let moved = s.page(&page).await.unwrap().unwrap();
        assert_eq!(moved.merchant, b);
        assert_eq!(moved.access_token.expose_secret(), "t3");
        assert_eq!(s.page_moves_from(a, 10).await.unwrap().len(), 1);
        assert!(s.page_moves_from(b, 10).await.unwrap().is_empty());
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
