//! Facebook users and pages in `tokens.db` (see `../facebook.rs` for what each method means).

use async_trait::async_trait;
use rusqlite::OptionalExtension;

use super::{args, SqliteTokens};
use crate::store::sqlite::numbered;
use crate::store::tokens::facebook::{
    connect_page, FacebookDb, NewPage, PageConnect, PageMoveRow, PageOwner, SavedPage, StoredPage,
};
use crate::store::tokens::{sql, AccountStatus};
use crate::store::StoreError;

#[async_trait]
impl FacebookDb for SqliteTokens {
    async fn save_facebook_user(
        &self,
        merchant: String,
        fb_user_id: Option<String>,
        now: i64,
    ) -> Result<(), StoreError> {
        self.0
            .call(move |c| {
                c.prepare_cached(sql::INSERT_MERCHANT)?
                    .execute(numbered(&[&merchant, &now]).as_slice())?;
                c.prepare_cached(sql::UPSERT_FACEBOOK_USER)?
                    .execute(numbered(&[&merchant, &fb_user_id, &now]).as_slice())?;
                Ok(())
            })
            .await
    }

    async fn facebook_user(
        &self,
        merchant: String,
    ) -> Result<Option<(Option<String>, String)>, StoreError> {
        self.row(sql::FACEBOOK_USER, args![merchant], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .await
    }

    async fn set_facebook_user_status(
        &self,
        merchant: String,
        status: AccountStatus,
        reason: Option<String>,
        now: i64,
    ) -> Result<(), StoreError> {
        let args = args![merchant, status, reason, now];
        self.execute(sql::SET_FACEBOOK_USER_STATUS, args).await?;
        Ok(())
    }

    async fn save_page(&self, p: NewPage) -> Result<SavedPage, StoreError> {
        self.0
            .call(move |c| {
                let tx = c.transaction()?;
                let previous = tx
                    .prepare_cached(sql::PAGE_OWNER)?
                    .query_row(numbered(&[&p.page]).as_slice(), |r| {
                        Ok(PageOwner {
                            merchant: r.get(0)?,
                            status: r.get(1)?,
                            grantor: r.get(2)?,
                        })
                    })
                    .optional()?;
                let merchant = p.merchant.to_string();
                let saved = match connect_page(
                    previous,
                    p.merchant,
                    p.fb_user_id.as_deref(),
                    p.move_confirmed,
                )? {
                    // Returning drops `tx`: nothing is written.
                    PageConnect::Refused(outcome) => return Ok(outcome),
                    PageConnect::Save => SavedPage::Saved(p.merchant),
                    PageConnect::Move { from, grantor } => {
                        let from_m = from.to_string();
                        let move_id: i64 = tx.prepare_cached(sql::INSERT_PAGE_MOVE)?.query_row(
                            numbered(&[&p.page, &from_m, &merchant, &grantor, &p.now]).as_slice(),
                            |r| r.get(0),
                        )?;
                        tx.prepare_cached(sql::DELETE_PAGE_WATERMARKS)?
                            .execute(numbered(&[&p.page]).as_slice())?;
                        SavedPage::Moved { from, move_id }
                    }
                };
                tx.prepare_cached(sql::INSERT_MERCHANT)?
                    .execute(numbered(&[&merchant, &p.now]).as_slice())?;
                tx.prepare_cached(sql::UPSERT_PAGE)?.execute(
                    numbered(&[
                        &p.page,
                        &merchant,
                        &p.fb_user_id,
                        &p.name,
                        &p.access_token,
                        &p.now,
                    ])
                    .as_slice(),
                )?;
                tx.commit()?;
                Ok(saved)
            })
            .await
    }

    async fn page_move_cleaned(
        &self,
        move_id: i64,
        objects: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        let args = args![move_id, now, objects];
        self.execute(sql::PAGE_MOVE_CLEANED, args).await?;
        Ok(())
    }

    async fn uncleaned_page_moves(&self) -> Result<Vec<(i64, String, String, String)>, StoreError> {
        self.rows(sql::UNCLEANED_PAGE_MOVES, args![], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .await
    }

    async fn page_moves(
        &self,
        from: Option<String>,
        limit: i64,
    ) -> Result<Vec<PageMoveRow>, StoreError> {
        let (query, args) = match from {
            Some(m) => (sql::PAGE_MOVES_FROM, args![m, limit]),
            None => (sql::PAGE_MOVES, args![limit]),
        };
        self.rows(query, args, |r| {
            Ok(PageMoveRow {
                page_id: r.get(0)?,
                from_merchant: r.get(1)?,
                moved_at: r.get(2)?,
                cleaned_at: r.get(3)?,
                objects_deleted: r.get(4)?,
            })
        })
        .await
    }

    async fn merchant_has_connections(&self, merchant: String) -> Result<bool, StoreError> {
        self.value(sql::MERCHANT_HAS_CONNECTIONS, args![merchant])
            .await
    }

    async fn stored_page(&self, page: String) -> Result<Option<StoredPage>, StoreError> {
        self.row(sql::PAGE, args![page], |r| {
            Ok(StoredPage {
                merchant: r.get(0)?,
                name: r.get(1)?,
                access_token: r.get(2)?,
                status: r.get(3)?,
                status_reason: r.get(4)?,
            })
        })
        .await
    }

    async fn active_pages(&self) -> Result<Vec<String>, StoreError> {
        self.rows(sql::ACTIVE_PAGES, args![], |r| r.get(0)).await
    }

    async fn set_page_status(
        &self,
        page: String,
        status: AccountStatus,
        reason: Option<String>,
        now: i64,
    ) -> Result<(), StoreError> {
        let args = args![page, status, reason, now];
        self.execute(sql::SET_PAGE_STATUS, args).await?;
        Ok(())
    }

    async fn writable_page_token(&self, page: String) -> Result<Option<Vec<u8>>, StoreError> {
        self.row(sql::WRITABLE_PAGE_TOKEN, args![page], |r| r.get(0))
            .await
    }

    async fn mark_page_reauth(
        &self,
        page: String,
        token: Vec<u8>,
        reason: String,
        now: i64,
    ) -> Result<bool, StoreError> {
        let args = args![page, reason, now, token];
        Ok(self.execute(sql::MARK_PAGE_REAUTH, args).await? == 1)
    }

    async fn delete_page(&self, page: String) -> Result<bool, StoreError> {
        Ok(self.execute(sql::DELETE_PAGE, args![page]).await? > 0)
    }

    async fn merchants_of_facebook_user(
        &self,
        fb_user_id: String,
    ) -> Result<Vec<String>, StoreError> {
        self.rows(sql::MERCHANTS_OF_FACEBOOK_USER, args![fb_user_id], |r| {
            r.get(0)
        })
        .await
    }

    async fn pages_granted_by(
        &self,
        fb_user_id: String,
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.rows(sql::PAGES_GRANTED_BY, args![fb_user_id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .await
    }

    async fn delete_facebook_user(&self, merchant: String) -> Result<(), StoreError> {
        self.execute(sql::DELETE_FACEBOOK_USER, args![merchant])
            .await?;
        Ok(())
    }

    async fn mark_pages_deleting(
        &self,
        fb_user_id: String,
        reason: String,
        now: i64,
    ) -> Result<(), StoreError> {
        let args = args![fb_user_id, reason, now];
        self.execute(sql::MARK_PAGES_DELETING, args).await?;
        Ok(())
    }
}
