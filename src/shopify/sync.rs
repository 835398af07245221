//! Bringing one shop's objects up to date, and deleting them (`shop/redact`). Both run only
//! as jobs in the shop's queue group, so no two of them overlap for one shop.

use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use super::catalog::{fetch_catalog, Catalog};
use super::SyncError;
use crate::objects::keys::{self, ShopDomain};
use crate::objects::{canonical_json, PutOutcome};
use crate::state::AppState;
use crate::store::tokens::AccountStatus;

#[derive(Debug, Clone, Serialize)]
pub struct SyncOutcome {
    pub shop_metadata: PutOutcome,
    pub shop_products: PutOutcome,
    /// The callback's `shopify_data`: the shop object and counts.
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

/// Fetches the shop's catalogue and writes both objects where they changed.
pub async fn sync_shop(state: &AppState, shop: &ShopDomain) -> Result<SyncOutcome, SyncError> {
    let api = super::api(state)?;
    let merchant = api.merchant(shop).await?;
    let started = Instant::now();
    let catalog: Catalog = fetch_catalog(api, shop).await?;
    // Uninstalled or redacted jobs run in this shop's group too, so they cannot have happened
    // meanwhile; a reconnect to another merchant could have. Check before writing anyway: a
    // redacted shop's objects must never come back.
    let current = state.tokens.shop(shop).await?;
    if !current
        .as_ref()
        .is_some_and(|r| r.status == AccountStatus::Active && r.merchant == merchant)
    {
        return Err(SyncError::NotConnected(shop.to_string()));
    }
    let summary = catalog.summary();
    let counts = (
        catalog.products.len(),
        catalog.collections.len(),
        catalog.discounts.len(),
    );
    // Serialising a large catalogue takes a while: off the async runtime, which also answers
    // webhooks.
    let (meta_bytes, product_bytes) = tokio::task::spawn_blocking(move || {
        (
            canonical_json(&catalog.metadata_json()),
            canonical_json(&catalog.products_json()),
        )
    })
    .await
    .map_err(|e| SyncError::Internal(format!("serialising the catalogue: {e}")))?;
    let bad = |e: serde_json::Error| SyncError::Internal(format!("serialising the catalogue: {e}"));
    let (shop_metadata, _) = state
        .objects
        .put_bytes_if_changed(
            &keys::shop_metadata(&merchant, shop),
            meta_bytes.map_err(bad)?,
        )
        .await?;
    let (shop_products, _) = state
        .objects
        .put_bytes_if_changed(
            &keys::shop_products(&merchant, shop),
            product_bytes.map_err(bad)?,
        )
        .await?;
    tracing::info!(
        %shop,
        products = counts.0,
        collections = counts.1,
        discounts = counts.2,
        ?shop_metadata,
        ?shop_products,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "shop synced"
    );
    Ok(SyncOutcome {
        shop_metadata,
        shop_products,
        summary,
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
