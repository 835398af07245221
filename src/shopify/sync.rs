//! Bringing one shop's objects up to date, and the queue handler for Shopify deliveries.

use std::time::Instant;

use secrecy::SecretString;
use serde::Serialize;
use serde_json::Value;

use super::catalog::{fetch_catalog, Catalog};
use super::client::{ShopifyClient, ShopifyError};
use super::webhook::ShopifyDelivery;
use crate::jobs::{Handler, JobError};
use crate::objects::keys::{self, ShopDomain};
use crate::objects::{ObjectError, PutOutcome};
use crate::state::AppState;
use crate::store::events::{Event, NewEvent};
use crate::store::tokens::{AccountStatus, ShopGrant};
use crate::store::{now_secs, StoreError};

/// Refresh an expiring token this long before it runs out.
const REFRESH_MARGIN_SECS: i64 = 300;
/// Event ids of the callback's own signed test delivery start with this; the callback syncs
/// the shop itself, so the handler does not fetch again for it.
pub const SELF_TEST_EVENT_PREFIX: &str = "salesbot-self-test-";

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("shop {0} is not connected")]
    NotConnected(String),
    #[error("shop {0} needs to be reconnected: {1}")]
    NeedsReauth(String, String),
    #[error(transparent)]
    Shopify(#[from] ShopifyError),
    #[error(transparent)]
    Objects(#[from] ObjectError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<SyncError> for JobError {
    fn from(e: SyncError) -> Self {
        match &e {
            SyncError::Shopify(ShopifyError::Transient(_))
            | SyncError::Objects(_)
            | SyncError::Store(_) => JobError::Retry(e.to_string()),
            _ => JobError::Permanent(e.to_string()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SyncOutcome {
    pub shop_metadata: PutOutcome,
    pub shop_products: PutOutcome,
    #[serde(skip)]
    pub summary: Value,
}

impl SyncOutcome {
    pub fn written(&self) -> usize {
        [self.shop_metadata, self.shop_products]
            .iter()
            .filter(|o| **o == PutOutcome::Written)
            .count()
    }
}

/// A usable access token for the shop, refreshed first when it is about to expire.
async fn access_token(
    state: &AppState,
    client: &ShopifyClient<'_>,
    shop: &ShopDomain,
) -> Result<(uuid::Uuid, SecretString), SyncError> {
    let rec = state
        .tokens
        .shop(shop)
        .await?
        .ok_or_else(|| SyncError::NotConnected(shop.to_string()))?;
    match rec.status {
        AccountStatus::Active => {}
        AccountStatus::Uninstalled => return Err(SyncError::NotConnected(shop.to_string())),
        AccountStatus::NeedsReauth => {
            return Err(SyncError::NeedsReauth(
                shop.to_string(),
                rec.status_reason.unwrap_or_default(),
            ))
        }
    }
    let token = rec
        .access_token
        .ok_or_else(|| SyncError::NotConnected(shop.to_string()))?;
    let expiring_soon = rec
        .expires_at
        .is_some_and(|exp| exp - REFRESH_MARGIN_SECS <= now_secs());
    if !expiring_soon {
        return Ok((rec.merchant, token));
    }
    let Some(refresh) = rec.refresh_token else {
        return Err(mark_reauth(state, shop, "access token expired and no refresh token").await);
    };
    match client.refresh_token(shop, &refresh).await {
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
            if !state.tokens.update_shop_tokens(shop, grant).await? {
                // Uninstalled (or marked) while we refreshed: do not bring it back.
                return Err(SyncError::NotConnected(shop.to_string()));
            }
            tracing::info!(%shop, "refreshed the Shopify access token");
            Ok((rec.merchant, access))
        }
        Err(ShopifyError::Unauthorized(m)) | Err(ShopifyError::Permanent(m)) => {
            Err(mark_reauth(state, shop, &format!("token refresh failed: {m}")).await)
        }
        Err(e) => Err(e.into()),
    }
}

async fn mark_reauth(state: &AppState, shop: &ShopDomain, reason: &str) -> SyncError {
    tracing::warn!(%shop, reason, "shop needs re-authorisation: the merchant must reconnect");
    if let Err(e) = state
        .tokens
        .set_shop_status(shop, AccountStatus::NeedsReauth, Some(reason.to_string()))
        .await
    {
        return e.into();
    }
    SyncError::NeedsReauth(shop.to_string(), reason.to_string())
}

/// Fetches the shop's catalogue and writes both objects where they changed.
pub async fn sync_shop(state: &AppState, shop: &ShopDomain) -> Result<SyncOutcome, SyncError> {
    let settings = state
        .config
        .shopify
        .as_ref()
        .ok_or_else(|| SyncError::NotConnected(shop.to_string()))?;
    let client = ShopifyClient::new(&state.http, settings, &state.upstream_retry);
    let (merchant, token) = access_token(state, &client, shop).await?;
    let started = Instant::now();
    let catalog: Catalog = match fetch_catalog(&client, shop, &token).await {
        Ok(c) => c,
        Err(ShopifyError::Unauthorized(m)) => return Err(mark_reauth(state, shop, &m).await),
        Err(e) => return Err(e.into()),
    };
    // The fetch takes a while: if the shop was uninstalled or redacted meanwhile, write
    // nothing (a redacted shop's objects must not come back).
    if !state
        .tokens
        .shop(shop)
        .await?
        .is_some_and(|r| r.status == AccountStatus::Active)
    {
        return Err(SyncError::NotConnected(shop.to_string()));
    }
    let shop_metadata = state
        .objects
        .put_json_if_changed(
            &keys::shop_metadata(&merchant, shop),
            &catalog.metadata_json(),
        )
        .await?;
    let shop_products = state
        .objects
        .put_json_if_changed(
            &keys::shop_products(&merchant, shop),
            &catalog.products_json(),
        )
        .await?;
    tracing::info!(
        %shop,
        products = catalog.products.len(),
        collections = catalog.collections.len(),
        discounts = catalog.discounts.len(),
        ?shop_metadata,
        ?shop_products,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "shop synced"
    );
    Ok(SyncOutcome {
        shop_metadata,
        shop_products,
        summary: catalog.summary(),
    })
}

/// Deletes everything we hold of a shop: its objects and its records (`shop/redact`).
pub async fn redact_shop(state: &AppState, shop: &ShopDomain) -> Result<usize, SyncError> {
    let mut deleted = 0;
    if let Some(rec) = state.tokens.shop(shop).await? {
        deleted = state
            .objects
            .delete_prefix(&keys::shop_prefix(&rec.merchant, shop))
            .await?;
        state.tokens.delete_shop(shop).await?;
    }
    tracing::info!(%shop, objects_deleted = deleted, "shop redacted");
    Ok(deleted)
}

/// Processes a batch of deliveries for one shop: lifecycle topics first, then at most one
/// catalogue refresh for all content topics together.
pub struct ShopifyHandler {
    pub state: AppState,
}

fn triggered_at_secs(d: &ShopifyDelivery) -> Option<i64> {
    d.triggered_at
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp())
}

#[async_trait::async_trait]
impl Handler for ShopifyHandler {
    async fn handle(&self, events: Vec<Event>) -> Result<Vec<NewEvent>, JobError> {
        let mut deliveries = Vec::with_capacity(events.len());
        for e in &events {
            match serde_json::from_slice::<ShopifyDelivery>(&e.payload) {
                Ok(d) => deliveries.push(d),
                Err(err) => {
                    tracing::error!(event = e.id, error = %err, "unreadable Shopify delivery; skipped")
                }
            }
        }
        let Some(first) = deliveries.first() else {
            return Ok(vec![]);
        };
        let shop =
            ShopDomain::parse(&first.shop).map_err(|e| JobError::Permanent(e.to_string()))?;
        let state = &self.state;

        let mut refresh = false;
        let mut redact = false;
        for d in &deliveries {
            match d.topic.as_str() {
                "app/uninstalled" => {
                    let Some(installed_at) = state
                        .tokens
                        .shop_installed_at(&shop)
                        .await
                        .map_err(SyncError::from)?
                    else {
                        continue;
                    };
                    // An uninstall that happened before the latest install is stale.
                    if triggered_at_secs(d).is_some_and(|t| t < installed_at) {
                        tracing::info!(%shop, "ignoring app/uninstalled older than the latest install");
                        continue;
                    }
                    state
                        .tokens
                        .set_shop_status(
                            &shop,
                            AccountStatus::Uninstalled,
                            Some("app/uninstalled".into()),
                        )
                        .await
                        .map_err(SyncError::from)?;
                    refresh = false;
                    tracing::info!(%shop, "app uninstalled: token deleted, polling stopped");
                }
                "shop/redact" => redact = true,
                "customers/redact" | "customers/data_request" => {
                    // We keep no customer data: nothing to delete or report.
                    tracing::info!(%shop, topic = %d.topic, "compliance request acknowledged (no customer data is stored)");
                }
                _ if d
                    .event_id
                    .as_deref()
                    .is_some_and(|id| id.starts_with(SELF_TEST_EVENT_PREFIX)) => {}
                _ => refresh = true,
            }
        }
        if redact {
            redact_shop(state, &shop).await?;
            return Ok(vec![]);
        }
        if !refresh {
            return Ok(vec![]);
        }
        match sync_shop(state, &shop).await {
            Ok(_) => Ok(vec![]),
            // Deliveries can trail an uninstall: nothing to do, and nothing to retry.
            Err(SyncError::NotConnected(s)) => {
                tracing::info!(shop = %s, "delivery for a shop that is not connected; ignored");
                Err(JobError::Permanent(format!("shop {s} is not connected")))
            }
            Err(e) => Err(e.into()),
        }
    }
}
