//! Authenticated calls to a shop's Admin API, with the shop's token managed here.
//!
//! Shopify's expiring offline tokens last an hour, so a sync can outlive the token it started
//! with. The token is checked before every call (refreshed when it has less than
//! `REFRESH_MARGIN_SECS` left); a 401 refreshes once and retries the call. Refreshes are
//! single-flight per shop (a rotated refresh token may be spent only once), and the rotated
//! pair is stored in one statement. Only a refresh that Shopify refuses, or a 401 on a token
//! that cannot be refreshed, marks the shop `needs_reauth`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::client::{ShopifyClient, ShopifyError};
use crate::ids::MerchantId;
use crate::ids::ShopDomain;
use crate::store::tokens::{AccountStatus, ShopGrant, ShopRecord, TokenStore};
use crate::store::{now_secs, StoreError};

/// Refresh an expiring token this long before it runs out.
pub const REFRESH_MARGIN_SECS: i64 = 300;

/// What stops a call on a shop (the domain's `shopify::SyncError` has each of these, with the
/// same text).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("shop {0} is not connected")]
    NotConnected(String),
    /// The merchant must reconnect: (shop, reason).
    #[error("shop {0} needs to be reconnected: {1}")]
    NeedsReauth(String, String),
    #[error(transparent)]
    Shopify(#[from] ShopifyError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct ShopifyApi {
    client: ShopifyClient,
    tokens: TokenStore,
    /// One refresh at a time per shop.
    refreshing: Mutex<HashMap<ShopDomain, Arc<tokio::sync::Mutex<()>>>>,
    /// Woken by `bulk_operations/finish` deliveries, so a sync waiting for its bulk operation
    /// does not wait for its next status poll.
    bulk_finished: Mutex<HashMap<ShopDomain, Arc<tokio::sync::Notify>>>,
}

fn due(rec: &ShopRecord) -> bool {
    rec.expires_at
        .is_some_and(|exp| exp - REFRESH_MARGIN_SECS <= now_secs())
}

impl ShopifyApi {
    pub fn new(client: ShopifyClient, tokens: TokenStore) -> ShopifyApi {
        ShopifyApi {
            client,
            tokens,
            refreshing: Mutex::new(HashMap::new()),
            bulk_finished: Mutex::new(HashMap::new()),
        }
    }

    /// What a sync waiting for a bulk operation of `shop` waits on.
    pub fn bulk_finished(&self, shop: &ShopDomain) -> Arc<tokio::sync::Notify> {
        let mut map = self.bulk_finished.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(shop.clone()).or_default().clone()
    }

    /// A `bulk_operations/finish` delivery for `shop` arrived.
    pub fn notify_bulk_finished(&self, shop: &ShopDomain) {
        self.bulk_finished(shop).notify_one();
    }

    pub fn client(&self) -> &ShopifyClient {
        &self.client
    }

    /// The shop's merchant, if it is connected and usable.
    pub async fn merchant(&self, shop: &ShopDomain) -> Result<MerchantId, ApiError> {
        Ok(self.usable(shop).await?.merchant)
    }

    async fn usable(&self, shop: &ShopDomain) -> Result<ShopRecord, ApiError> {
        let rec = self
            .tokens
            .shop(shop)
            .await?
            .ok_or_else(|| ApiError::NotConnected(shop.to_string()))?;
        match rec.status {
            AccountStatus::Active if rec.access_token.is_some() => Ok(rec),
            AccountStatus::NeedsReauth => Err(ApiError::NeedsReauth(
                shop.to_string(),
                rec.status_reason.clone().unwrap_or_default(),
            )),
            _ => Err(ApiError::NotConnected(shop.to_string())),
        }
    }

    /// A token good for at least `REFRESH_MARGIN_SECS`, refreshed first when it is not.
    pub async fn token(&self, shop: &ShopDomain) -> Result<SecretString, ApiError> {
        let rec = self.usable(shop).await?;
        if !due(&rec) {
            return Ok(rec.access_token.expect("usable shops have a token"));
        }
        self.refresh(shop, None).await
    }

    fn lock_of(&self, shop: &ShopDomain) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.refreshing.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, l| Arc::strong_count(l) > 1);
        map.entry(shop.clone()).or_default().clone()
    }

    /// Refreshes the shop's token unless someone else already did: when the token is no
    /// longer due (or, after a 401, no longer the `rejected` one) the stored one is returned.
    async fn refresh(
        &self,
        shop: &ShopDomain,
        rejected: Option<&SecretString>,
    ) -> Result<SecretString, ApiError> {
        let lock = self.lock_of(shop);
        let _one_at_a_time = lock.lock().await;
        // Across instances too (PostgreSQL: a per-shop advisory lock): a refresh token is
        // single use, so two instances must never spend it. The record is read again inside
        // the lock, so whoever comes second sees the first one's refreshed token.
        self.tokens
            .with_shop_refresh_lock(shop, || self.refresh_locked(shop, rejected))
            .await?
    }

    async fn refresh_locked(
        &self,
        shop: &ShopDomain,
        rejected: Option<&SecretString>,
    ) -> Result<SecretString, ApiError> {
        let rec = self.usable(shop).await?;
        let current = rec.access_token.clone().expect("usable shops have a token");
        let stale = match rejected {
            Some(r) => r.expose_secret() == current.expose_secret(),
            None => due(&rec),
        };
        if !stale {
            return Ok(current);
        }
        let Some(refresh) = rec.refresh_token.clone() else {
            let reason = if rejected.is_some() {
                "Shopify rejected the access token and it cannot be refreshed"
            } else {
                "the access token expired and there is no refresh token"
            };
            return Err(self.mark_reauth(shop, rec.installed_at, reason).await);
        };
        match self.client.refresh_token(shop, &refresh).await {
            Ok(t) => {
                let now = now_secs();
                let access = SecretString::from(t.access_token);
                let grant = ShopGrant {
                    access_token: access.clone(),
                    scopes: if t.scope.is_empty() {
                        rec.scopes
                    } else {
                        t.scope
                    },
                    expires_at: t.expires_in.map(|s| now + s),
                    refresh_token: t.refresh_token.map(SecretString::from).or(Some(refresh)),
                    refresh_token_expires_at: t
                        .refresh_token_expires_in
                        .map(|s| now + s)
                        .or(rec.refresh_token_expires_at),
                };
                if !self
                    .tokens
                    .update_shop_tokens(shop, grant, rec.installed_at)
                    .await?
                {
                    // Uninstalled or reinstalled while we refreshed: the stored grant wins.
                    return Err(ApiError::Shopify(ShopifyError::Transient(
                        "the shop's grant changed during a token refresh".into(),
                    )));
                }
                metrics::counter!("shopify_token_refreshes_total").increment(1);
                tracing::info!(%shop, "refreshed the Shopify access token");
                Ok(access)
            }
            Err(ShopifyError::Unauthorized(m)) | Err(ShopifyError::Permanent(m)) => Err(self
                .mark_reauth(
                    shop,
                    rec.installed_at,
                    &format!("Shopify refused the token refresh: {m}"),
                )
                .await),
            Err(e) => Err(e.into()),
        }
    }

    /// Marks the install the token belonged to (a reinstall since is left alone).
    async fn mark_reauth(&self, shop: &ShopDomain, installed_at: i64, reason: &str) -> ApiError {
        match self
            .tokens
            .mark_shop_reauth(shop, installed_at, reason.to_string())
            .await
        {
            Ok(true) => {
                tracing::warn!(%shop, reason, "shop needs re-authorisation: the merchant must reconnect")
            }
            Ok(false) => {}
            Err(e) => return e.into(),
        }
        ApiError::NeedsReauth(shop.to_string(), reason.to_string())
    }

    /// One GraphQL operation with a current token; a 401 refreshes the token once and retries.
    pub async fn query(
        &self,
        shop: &ShopDomain,
        operation: &str,
        query: &str,
        variables: Value,
    ) -> Result<Value, ApiError> {
        let token = self.token(shop).await?;
        match self
            .client
            .graphql(shop, &token, operation, query, variables.clone())
            .await
        {
            Err(ShopifyError::Unauthorized(first)) => {
                tracing::info!(%shop, operation, reason = %first, "token rejected; refreshing once");
                let fresh = self.refresh(shop, Some(&token)).await?;
                match self
                    .client
                    .graphql(shop, &fresh, operation, query, variables)
                    .await
                {
                    // Only a refused refresh means the merchant must reconnect: try again
                    // later, when the next attempt's refresh decides.
                    Err(ShopifyError::Unauthorized(m)) => Err(ApiError::Shopify(
                        ShopifyError::Transient(format!("a fresh token was rejected too ({m})")),
                    )),
                    other => Ok(other?),
                }
            }
            other => Ok(other?),
        }
    }
}
