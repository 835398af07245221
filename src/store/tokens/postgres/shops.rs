//! Shopify shops on PostgreSQL (see `../shops.rs` for what each method means).

use async_trait::async_trait;

use super::{locked_tx, PgTokens};
use crate::ids::MerchantId;
use crate::store::tokens::shops::{grant_merchant, ShopDb, ShopTokens, StoredShop};
use crate::store::tokens::{sql, AccountStatus};
use crate::store::StoreError;

/// merchant_uuid, access_token, scopes, token_expires_at, refresh_token,
/// refresh_token_expires_at, status, status_reason, installed_at
type ShopTuple = (
    String,
    Option<Vec<u8>>,
    String,
    Option<i64>,
    Option<Vec<u8>>,
    Option<i64>,
    String,
    Option<String>,
    i64,
);

#[async_trait]
impl ShopDb for PgTokens {
    async fn save_shop_grant(
        &self,
        t: ShopTokens,
        candidate: MerchantId,
    ) -> Result<MerchantId, StoreError> {
        // Two instances completing the first install of one shop at once must agree on its
        // merchant: the read below and the upsert run one install at a time per domain.
        let mut tx = locked_tx(&self.0, "shop", &t.domain).await?;
        let existing: Option<String> = sqlx::query_scalar(sql::SHOP_MERCHANT)
            .bind(&t.domain)
            .fetch_optional(&mut *tx)
            .await?;
        let merchant = grant_merchant(existing, candidate)?;
        sqlx::query(sql::INSERT_MERCHANT)
            .bind(merchant.to_string())
            .bind(t.now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(sql::UPSERT_SHOP)
            .bind(t.domain)
            .bind(merchant.to_string())
            .bind(t.access_token)
            .bind(t.scopes)
            .bind(t.expires_at)
            .bind(t.refresh_token)
            .bind(t.refresh_token_expires_at)
            .bind(t.now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(merchant)
    }

    async fn update_shop_tokens(
        &self,
        t: ShopTokens,
        installed_at: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(sql::UPDATE_SHOP_TOKENS)
            .bind(t.domain)
            .bind(t.access_token)
            .bind(t.scopes)
            .bind(t.expires_at)
            .bind(t.refresh_token)
            .bind(t.refresh_token_expires_at)
            .bind(t.now)
            .bind(installed_at)
            .execute(self.0.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn stored_shop(&self, domain: String) -> Result<Option<StoredShop>, StoreError> {
        let row: Option<ShopTuple> = sqlx::query_as(sql::SHOP)
            .bind(domain)
            .fetch_optional(self.0.pool())
            .await?;
        Ok(row.map(
            |(merchant, tok, scopes, exp, refresh, rexp, status, reason, installed_at)| {
                StoredShop {
                    merchant,
                    access_token: tok,
                    scopes,
                    expires_at: exp,
                    refresh_token: refresh,
                    refresh_token_expires_at: rexp,
                    status,
                    status_reason: reason,
                    installed_at,
                }
            },
        ))
    }

    async fn merchant_has_installed_shop(&self, merchant: String) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar(sql::MERCHANT_HAS_INSTALLED_SHOP)
            .bind(merchant)
            .fetch_one(self.0.pool())
            .await?)
    }

    async fn shop_id(&self, domain: String) -> Result<Option<i64>, StoreError> {
        let id: Option<Option<i64>> = sqlx::query_scalar(sql::SHOP_ID)
            .bind(domain)
            .fetch_optional(self.0.pool())
            .await?;
        Ok(id.flatten())
    }

    async fn set_shop_id(&self, domain: String, id: i64) -> Result<(), StoreError> {
        sqlx::query(sql::SET_SHOP_ID)
            .bind(domain)
            .bind(id)
            .execute(self.0.pool())
            .await?;
        Ok(())
    }

    async fn shop_installed_at(&self, domain: String) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(sql::SHOP_INSTALLED_AT)
            .bind(domain)
            .fetch_optional(self.0.pool())
            .await?)
    }

    async fn active_shops(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(sql::ACTIVE_SHOPS)
            .fetch_all(self.0.pool())
            .await?)
    }

    async fn set_shop_status(
        &self,
        domain: String,
        status: AccountStatus,
        reason: Option<String>,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(sql::SET_SHOP_STATUS)
            .bind(domain)
            .bind(status)
            .bind(reason)
            .bind(now)
            .execute(self.0.pool())
            .await?;
        Ok(())
    }

    async fn revoke_shop(
        &self,
        domain: String,
        reason: Option<String>,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(sql::REVOKE_SHOP)
            .bind(domain)
            .bind(reason)
            .bind(now)
            .execute(self.0.pool())
            .await?;
        Ok(())
    }

    async fn mark_shop_reauth(
        &self,
        domain: String,
        installed_at: i64,
        reason: String,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(sql::MARK_SHOP_REAUTH)
            .bind(domain)
            .bind(reason)
            .bind(now)
            .bind(installed_at)
            .execute(self.0.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_shop(&self, domain: String) -> Result<bool, StoreError> {
        let done = sqlx::query(sql::DELETE_SHOP)
            .bind(domain)
            .execute(self.0.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
