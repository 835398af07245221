//! Shopify shops in `tokens.db` (see `../shops.rs` for what each method means).

use async_trait::async_trait;
use rusqlite::OptionalExtension;

use super::{args, SqliteTokens};
use crate::ids::MerchantId;
use crate::store::sqlite::numbered;
use crate::store::tokens::shops::{grant_merchant, ShopDb, ShopTokens, StoredShop};
use crate::store::tokens::{sql, AccountStatus};
use crate::store::StoreError;

#[async_trait]
impl ShopDb for SqliteTokens {
    async fn save_shop_grant(
        &self,
        t: ShopTokens,
        candidate: MerchantId,
    ) -> Result<MerchantId, StoreError> {
        self.0
            .call(move |c| {
                let tx = c.transaction()?;
                let existing: Option<String> = tx
                    .prepare_cached(sql::SHOP_MERCHANT)?
                    .query_row(numbered(&[&t.domain]).as_slice(), |r| r.get(0))
                    .optional()?;
                let merchant = grant_merchant(existing, candidate)?;
                let m = merchant.to_string();
                tx.prepare_cached(sql::INSERT_MERCHANT)?
                    .execute(numbered(&[&m, &t.now]).as_slice())?;
                tx.prepare_cached(sql::UPSERT_SHOP)?.execute(
                    numbered(&[
                        &t.domain,
                        &m,
                        &t.access_token,
                        &t.scopes,
                        &t.expires_at,
                        &t.refresh_token,
                        &t.refresh_token_expires_at,
                        &t.now,
                    ])
                    .as_slice(),
                )?;
                tx.commit()?;
                Ok(merchant)
            })
            .await
    }

    async fn update_shop_tokens(
        &self,
        t: ShopTokens,
        installed_at: i64,
    ) -> Result<bool, StoreError> {
        let args = args![
            t.domain,
            t.access_token,
            t.scopes,
            t.expires_at,
            t.refresh_token,
            t.refresh_token_expires_at,
            t.now,
            installed_at
        ];
        Ok(self.execute(sql::UPDATE_SHOP_TOKENS, args).await? == 1)
    }

    async fn stored_shop(&self, domain: String) -> Result<Option<StoredShop>, StoreError> {
        self.row(sql::SHOP, args![domain], |r| {
            Ok(StoredShop {
                merchant: r.get(0)?,
                access_token: r.get(1)?,
                scopes: r.get(2)?,
                expires_at: r.get(3)?,
                refresh_token: r.get(4)?,
                refresh_token_expires_at: r.get(5)?,
                status: r.get(6)?,
                status_reason: r.get(7)?,
                installed_at: r.get(8)?,
            })
        })
        .await
    }

    async fn merchant_has_installed_shop(&self, merchant: String) -> Result<bool, StoreError> {
        self.value(sql::MERCHANT_HAS_INSTALLED_SHOP, args![merchant])
            .await
    }

    async fn shop_id(&self, domain: String) -> Result<Option<i64>, StoreError> {
        let id = self.row(sql::SHOP_ID, args![domain], |r| r.get(0)).await?;
        Ok(id.flatten())
    }

    async fn set_shop_id(&self, domain: String, id: i64) -> Result<(), StoreError> {
        self.execute(sql::SET_SHOP_ID, args![domain, id]).await?;
        Ok(())
    }

    async fn shop_installed_at(&self, domain: String) -> Result<Option<i64>, StoreError> {
        self.row(sql::SHOP_INSTALLED_AT, args![domain], |r| r.get(0))
            .await
    }

    async fn active_shops(&self) -> Result<Vec<String>, StoreError> {
        self.rows(sql::ACTIVE_SHOPS, args![], |r| r.get(0)).await
    }

    async fn set_shop_status(
        &self,
        domain: String,
        status: AccountStatus,
        reason: Option<String>,
        now: i64,
    ) -> Result<(), StoreError> {
        let args = args![domain, status, reason, now];
        self.execute(sql::SET_SHOP_STATUS, args).await?;
        Ok(())
    }

    async fn revoke_shop(
        &self,
        domain: String,
        reason: Option<String>,
        now: i64,
    ) -> Result<(), StoreError> {
        self.execute(sql::REVOKE_SHOP, args![domain, reason, now])
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
        let args = args![domain, reason, now, installed_at];
        Ok(self.execute(sql::MARK_SHOP_REAUTH, args).await? == 1)
    }

    async fn delete_shop(&self, domain: String) -> Result<bool, StoreError> {
        Ok(self.execute(sql::DELETE_SHOP, args![domain]).await? > 0)
    }
}
