//! Facebook users and pages on PostgreSQL (see `../facebook.rs` for what each method means).

use async_trait::async_trait;

use super::{locked_tx, PgTokens};
use crate::store::tokens::facebook::{
    connect_page, FacebookDb, NewPage, PageConnect, PageMoveRow, PageOwner, SavedPage, StoredPage,
};
use crate::store::tokens::{sql, AccountStatus};
use crate::store::StoreError;

/// page_id, from_merchant, moved_at, cleaned_at, objects_deleted
type MoveTuple = (String, String, i64, Option<i64>, Option<i64>);
/// merchant_uuid, name, access_token, status, status_reason
type PageTuple = (String, Option<String>, Vec<u8>, String, Option<String>);

#[async_trait]
impl FacebookDb for PgTokens {
    async fn save_facebook_user(
        &self,
        merchant: String,
        fb_user_id: Option<String>,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.0.pool().begin().await?;
        sqlx::query(sql::INSERT_MERCHANT)
            .bind(&merchant)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(sql::UPSERT_FACEBOOK_USER)
            .bind(merchant)
            .bind(fb_user_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        Ok(tx.commit().await?)
    }

    async fn facebook_user(
        &self,
        merchant: String,
    ) -> Result<Option<(Option<String>, String)>, StoreError> {
        Ok(sqlx::query_as(sql::FACEBOOK_USER)
            .bind(merchant)
            .fetch_optional(self.0.pool())
            .await?)
    }

    async fn set_facebook_user_status(
        &self,
        merchant: String,
        status: AccountStatus,
        reason: Option<String>,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(sql::SET_FACEBOOK_USER_STATUS)
            .bind(merchant)
            .bind(status)
            .bind(reason)
            .bind(now)
            .execute(self.0.pool())
            .await?;
        Ok(())
    }

    async fn save_page(&self, p: NewPage) -> Result<SavedPage, StoreError> {
        // Who owns the page is decided on the row read below: two instances saving the same
        // page at once (even one not stored yet) take turns.
        let mut tx = locked_tx(&self.0, "page", &p.page).await?;
        let previous: Option<(String, String, Option<String>)> = sqlx::query_as(sql::PAGE_OWNER)
            .bind(&p.page)
            .fetch_optional(&mut *tx)
            .await?;
        let previous = previous.map(|(merchant, status, grantor)| PageOwner {
            merchant,
            status,
            grantor,
        });
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
                let move_id: i64 = sqlx::query_scalar(sql::INSERT_PAGE_MOVE)
                    .bind(&p.page)
                    .bind(from.to_string())
                    .bind(&merchant)
                    .bind(grantor)
                    .bind(p.now)
                    .fetch_one(&mut *tx)
                    .await?;
                sqlx::query(sql::DELETE_PAGE_WATERMARKS)
                    .bind(&p.page)
                    .execute(&mut *tx)
                    .await?;
                SavedPage::Moved { from, move_id }
            }
        };
        sqlx::query(sql::INSERT_MERCHANT)
            .bind(&merchant)
            .bind(p.now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(sql::UPSERT_PAGE)
            .bind(p.page)
            .bind(merchant)
            .bind(p.fb_user_id)
            .bind(p.name)
            .bind(p.access_token)
            .bind(p.now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(saved)
    }

    async fn page_move_cleaned(
        &self,
        move_id: i64,
        objects: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(sql::PAGE_MOVE_CLEANED)
            .bind(move_id)
            .bind(now)
            .bind(objects)
            .execute(self.0.pool())
            .await?;
        Ok(())
    }

    async fn uncleaned_page_moves(&self) -> Result<Vec<(i64, String, String, String)>, StoreError> {
        Ok(sqlx::query_as(sql::UNCLEANED_PAGE_MOVES)
            .fetch_all(self.0.pool())
            .await?)
    }

    async fn page_moves(
        &self,
        from: Option<String>,
        limit: i64,
    ) -> Result<Vec<PageMoveRow>, StoreError> {
        let query = match &from {
            Some(m) => sqlx::query_as(sql::PAGE_MOVES_FROM).bind(m.clone()),
            None => sqlx::query_as(sql::PAGE_MOVES),
        };
        let rows: Vec<MoveTuple> = query.bind(limit).fetch_all(self.0.pool()).await?;
        Ok(rows
            .into_iter()
            .map(
                |(page_id, from_merchant, moved_at, cleaned_at, objects_deleted)| PageMoveRow {
                    page_id,
                    from_merchant,
                    moved_at,
                    cleaned_at,
                    objects_deleted,
                },
            )
            .collect())
    }

    async fn merchant_has_connections(&self, merchant: String) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar(sql::MERCHANT_HAS_CONNECTIONS)
            .bind(merchant)
            .fetch_one(self.0.pool())
            .await?)
    }

    async fn stored_page(&self, page: String) -> Result<Option<StoredPage>, StoreError> {
        let row: Option<PageTuple> = sqlx::query_as(sql::PAGE)
            .bind(page)
            .fetch_optional(self.0.pool())
            .await?;
        Ok(row.map(
            |(merchant, name, access_token, status, status_reason)| StoredPage {
                merchant,
                name,
                access_token,
                status,
                status_reason,
            },
        ))
    }

    async fn active_pages(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(sql::ACTIVE_PAGES)
            .fetch_all(self.0.pool())
            .await?)
    }

    async fn set_page_status(
        &self,
        page: String,
        status: AccountStatus,
        reason: Option<String>,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(sql::SET_PAGE_STATUS)
            .bind(page)
            .bind(status)
            .bind(reason)
            .bind(now)
            .execute(self.0.pool())
            .await?;
        Ok(())
    }

    async fn writable_page_token(&self, page: String) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar(sql::WRITABLE_PAGE_TOKEN)
            .bind(page)
            .fetch_optional(self.0.pool())
            .await?)
    }

    async fn mark_page_reauth(
        &self,
        page: String,
        token: Vec<u8>,
        reason: String,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(sql::MARK_PAGE_REAUTH)
            .bind(page)
            .bind(reason)
            .bind(now)
            .bind(token)
            .execute(self.0.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_page(&self, page: String) -> Result<bool, StoreError> {
        let done = sqlx::query(sql::DELETE_PAGE)
            .bind(page)
            .execute(self.0.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn merchants_of_facebook_user(
        &self,
        fb_user_id: String,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(sql::MERCHANTS_OF_FACEBOOK_USER)
            .bind(fb_user_id)
            .fetch_all(self.0.pool())
            .await?)
    }

    async fn pages_granted_by(
        &self,
        fb_user_id: String,
    ) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query_as(sql::PAGES_GRANTED_BY)
            .bind(fb_user_id)
            .fetch_all(self.0.pool())
            .await?)
    }

    async fn delete_facebook_user(&self, merchant: String) -> Result<(), StoreError> {
        sqlx::query(sql::DELETE_FACEBOOK_USER)
            .bind(merchant)
            .execute(self.0.pool())
            .await?;
        Ok(())
    }

    async fn mark_pages_deleting(
        &self,
        fb_user_id: String,
        reason: String,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(sql::MARK_PAGES_DELETING)
            .bind(fb_user_id)
            .bind(reason)
            .bind(now)
            .execute(self.0.pool())
            .await?;
        Ok(())
    }
}
