//! Shopify shops: grants, token rotation, install state.

use async_trait::async_trait;

use super::{merchant_uuid, parsed, Aad, AccountStatus, ShopGrant, ShopRecord, TokenStore};
use crate::ids::MerchantId;
use crate::ids::ShopDomain;
use crate::store::{now_secs, StoreError};

/// A shop's tokens as written (encrypted) by a grant or a refresh.
pub(super) struct ShopTokens {
    pub(super) domain: String,
    pub(super) access_token: Vec<u8>,
    pub(super) scopes: String,
    pub(super) expires_at: Option<i64>,
    pub(super) refresh_token: Option<Vec<u8>>,
    pub(super) refresh_token_expires_at: Option<i64>,
    pub(super) now: i64,
}

/// A shop's row as stored, its tokens still encrypted: each backend reads it, and one piece of
/// code decodes it, so both backends give the same record (and the same errors).
pub(super) struct StoredShop {
    pub(super) merchant: String,
    pub(super) access_token: Option<Vec<u8>>,
    pub(super) scopes: String,
    pub(super) expires_at: Option<i64>,
    pub(super) refresh_token: Option<Vec<u8>>,
    pub(super) refresh_token_expires_at: Option<i64>,
    pub(super) status: String,
    pub(super) status_reason: Option<String>,
    pub(super) installed_at: i64,
}

/// The shops part of `TokenDb`.
#[async_trait]
pub(super) trait ShopDb: Send + Sync {
    /// In one transaction: reads the shop's merchant, picks the grant's with `grant_merchant`
    /// (offering `candidate` for a new shop), records that merchant and upserts the shop as
    /// active. Returns the merchant.
    async fn save_shop_grant(
        &self,
        row: ShopTokens,
        candidate: MerchantId,
    ) -> Result<MerchantId, StoreError>;
    /// Replaces the tokens if the shop is active and still the install made at `installed_at`.
    async fn update_shop_tokens(
        &self,
        row: ShopTokens,
        installed_at: i64,
    ) -> Result<bool, StoreError>;
    async fn stored_shop(&self, domain: String) -> Result<Option<StoredShop>, StoreError>;
    async fn merchant_has_installed_shop(&self, merchant: String) -> Result<bool, StoreError>;
    async fn shop_id(&self, domain: String) -> Result<Option<i64>, StoreError>;
    async fn set_shop_id(&self, domain: String, id: i64) -> Result<(), StoreError>;
    async fn shop_installed_at(&self, domain: String) -> Result<Option<i64>, StoreError>;
    /// Domains of the active shops that have a token, in byte order.
    async fn active_shops(&self) -> Result<Vec<String>, StoreError>;
    async fn set_shop_status(
        &self,
        domain: String,
        status: AccountStatus,
        reason: Option<String>,
        now: i64,
    ) -> Result<(), StoreError>;
    /// Marks the shop uninstalled and deletes its tokens.
    async fn revoke_shop(
        &self,
        domain: String,
        reason: Option<String>,
        now: i64,
    ) -> Result<(), StoreError>;
    async fn mark_shop_reauth(
        &self,
        domain: String,
        installed_at: i64,
        reason: String,
        now: i64,
    ) -> Result<bool, StoreError>;
    async fn delete_shop(&self, domain: String) -> Result<bool, StoreError>;
}

/// The merchant a grant joins: a stored shop keeps its merchant across reinstalls; a new one
/// takes `candidate`. Run by each backend inside its transaction, on the row it read there.
pub(super) fn grant_merchant(
    existing: Option<String>,
    candidate: MerchantId,
) -> Result<MerchantId, StoreError> {
    match existing {
        Some(m) => merchant_uuid(&m),
        None => Ok(candidate),
    }
}

impl TokenStore {
    /// The grant's tokens, encrypted for the shop's row.
    fn shop_tokens(&self, domain: &str, grant: ShopGrant) -> ShopTokens {
        ShopTokens {
            domain: domain.to_string(),
            access_token: self.seal(&grant.access_token, Aad::Shop(domain)),
            scopes: grant.scopes,
            expires_at: grant.expires_at,
            refresh_token: grant
                .refresh_token
                .map(|r| self.seal(&r, Aad::ShopRefresh(domain))),
            refresh_token_expires_at: grant.refresh_token_expires_at,
            now: now_secs(),
        }
    }

    /// Records a (re)install. The shop keeps its merchant UUID across reinstalls; a new shop
    /// joins `merchant` when given (a logged-in merchant adding a shop), else gets a new UUID.
    pub async fn save_shop_grant(
        &self,
        domain: &ShopDomain,
        grant: ShopGrant,
        merchant: Option<MerchantId>,
    ) -> Result<MerchantId, StoreError> {
        let row = self.shop_tokens(domain.as_str(), grant);
        let candidate = merchant.unwrap_or_else(MerchantId::random);
        self.db.save_shop_grant(row, candidate).await
    }

    /// Replaces the tokens of the install made at `installed_at` (compare and swap: a
    /// refresh that raced a reinstall must not overwrite the new grant); false when the shop
    /// is no longer active or was reinstalled meanwhile.
    pub async fn update_shop_tokens(
        &self,
        domain: &ShopDomain,
        grant: ShopGrant,
        installed_at: i64,
    ) -> Result<bool, StoreError> {
        let row = self.shop_tokens(domain.as_str(), grant);
        self.db.update_shop_tokens(row, installed_at).await
    }

    pub async fn shop(&self, domain: &ShopDomain) -> Result<Option<ShopRecord>, StoreError> {
        let Some(row) = self.db.stored_shop(domain.as_str().to_string()).await? else {
            return Ok(None);
        };
        let d = domain.as_str();
        Ok(Some(ShopRecord {
            domain: domain.clone(),
            merchant: merchant_uuid(&row.merchant)?,
            access_token: row
                .access_token
                .map(|t| self.open(&t, Aad::Shop(d)))
                .transpose()?,
            scopes: row.scopes,
            expires_at: row.expires_at,
            refresh_token: row
                .refresh_token
                .map(|t| self.open(&t, Aad::ShopRefresh(d)))
                .transpose()?,
            refresh_token_expires_at: row.refresh_token_expires_at,
            status: row.status.parse()?,
            status_reason: row.status_reason,
            installed_at: row.installed_at,
        }))
    }

    /// Whether the merchant still has a shop installed (active or waiting for re-authorisation).
    pub async fn merchant_has_installed_shop(
        &self,
        merchant: MerchantId,
    ) -> Result<bool, StoreError> {
        self.db
            .merchant_has_installed_shop(merchant.to_string())
            .await
    }

    /// Shopify's numeric id of the shop, when known.
    pub async fn shop_id(&self, domain: &ShopDomain) -> Result<Option<i64>, StoreError> {
        self.db.shop_id(domain.as_str().to_string()).await
    }

    /// Records Shopify's id of the shop (a no-op for a shop that is not stored).
    pub async fn set_shop_id(&self, domain: &ShopDomain, id: i64) -> Result<(), StoreError> {
        self.db.set_shop_id(domain.as_str().to_string(), id).await
    }

    /// When the shop was last (re)installed, unix seconds.
    pub async fn shop_installed_at(&self, domain: &ShopDomain) -> Result<Option<i64>, StoreError> {
        self.db.shop_installed_at(domain.as_str().to_string()).await
    }

    /// Domains of every shop that should be polled.
    pub async fn active_shops(&self) -> Result<Vec<ShopDomain>, StoreError> {
        let rows = self.db.active_shops().await?;
        Ok(parsed(rows, |d| ShopDomain::parse(d).ok()))
    }

    pub async fn set_shop_status(
        &self,
        domain: &ShopDomain,
        status: AccountStatus,
        reason: Option<String>,
    ) -> Result<(), StoreError> {
        let d = domain.as_str().to_string();
        if status == AccountStatus::Uninstalled {
            // Revoke: the token is useless after uninstall and must not linger.
            self.db.revoke_shop(d, reason, now_secs()).await
        } else {
            self.db.set_shop_status(d, status, reason, now_secs()).await
        }
    }

    /// Marks the install made at `installed_at` as needing re-authorisation (not a newer one).
    pub async fn mark_shop_reauth(
        &self,
        domain: &ShopDomain,
        installed_at: i64,
        reason: String,
    ) -> Result<bool, StoreError> {
        let d = domain.as_str().to_string();
        self.db
            .mark_shop_reauth(d, installed_at, reason, now_secs())
            .await
    }

    /// Removes every record of the shop (Shopify's `shop/redact`).
    pub async fn delete_shop(&self, domain: &ShopDomain) -> Result<bool, StoreError> {
        self.db.delete_shop(domain.as_str().to_string()).await
    }
}
