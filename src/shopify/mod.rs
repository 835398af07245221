//! Shopify: OAuth connect, signed webhooks, catalogue sync and polling, as queued jobs.

pub mod bodies;
pub mod build;
pub mod bulk;
pub mod catalog;
pub mod entities;
pub mod full_sync;
pub mod jobs;
pub mod lifecycle;
pub mod oauth;
pub mod queries;
pub mod subscriptions;
pub mod sync;
pub mod topics;
pub mod webhook;

use crate::config::{NotConfigured, ShopifySettings};
use crate::jobs::JobError;
use crate::objects::ObjectError;
use crate::platforms::shopify::api::{ApiError, ShopifyApi};
use crate::platforms::shopify::client::ShopifyError;
use crate::state::AppState;
use crate::store::StoreError;

/// By default (`SHOPIFY_WEBHOOK_DEBOUNCE_MS`), content deliveries wait this long before processing, so a burst of them (a bulk edit in
/// the admin) is read in one run, each entity once (later deliveries about an entity read
/// since are skipped anyway).
pub const REFRESH_DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(250);

pub fn settings(state: &AppState) -> Result<&ShopifySettings, NotConfigured> {
    state.config.shopify.as_ref().ok_or(NotConfigured(
        "Shopify is not configured: set SHOPIFY_API_KEY and SHOPIFY_API_SECRET",
    ))
}

/// The Admin API client of the configured app, for work on shops.
pub fn api(state: &AppState) -> Result<&ShopifyApi, SyncError> {
    state.shopify.as_deref().ok_or(SyncError::NotConfigured)
}

/// What stops work on a shop, and whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("shop {0} is not connected")]
    NotConnected(String),
    #[error("shop {0} needs to be reconnected: {1}")]
    NeedsReauth(String, String),
    #[error("Shopify is not configured")]
    NotConfigured,
    /// A bug or a crashed task: retried, as the next run may not hit it.
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Shopify(#[from] ShopifyError),
    #[error(transparent)]
    Objects(#[from] ObjectError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ApiError> for SyncError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::NotConnected(shop) => SyncError::NotConnected(shop),
            ApiError::NeedsReauth(shop, reason) => SyncError::NeedsReauth(shop, reason),
            ApiError::Shopify(e) => SyncError::Shopify(e),
            ApiError::Store(e) => SyncError::Store(e),
        }
    }
}

impl From<SyncError> for JobError {
    fn from(e: SyncError) -> Self {
        match &e {
            SyncError::Shopify(ShopifyError::Transient(_))
            | SyncError::Objects(_)
            | SyncError::Store(_)
            | SyncError::Internal(_) => JobError::Retry(e.to_string()),
            _ => JobError::Permanent(e.to_string()),
        }
    }
}
