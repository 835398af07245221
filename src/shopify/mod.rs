//! Shopify: OAuth connect, signed webhooks, catalogue sync and polling.

pub mod catalog;
pub mod client;
pub mod oauth;
pub mod poll;
pub mod queries;
pub mod signature;
pub mod subscriptions;
pub mod sync;
pub mod webhook;

use crate::config::ShopifySettings;
use crate::error::AppError;
use crate::state::AppState;

/// Event kind of Shopify webhook deliveries in the queue.
pub const EVENT_KIND: &str = "shopify";

/// Content deliveries wait this long before processing, so a burst of them (a bulk edit in
/// the admin) is picked up by one catalogue refresh.
pub const REFRESH_DEBOUNCE: std::time::Duration = std::time::Duration::from_secs(2);

pub fn settings(state: &AppState) -> Result<&ShopifySettings, AppError> {
    state.config.shopify.as_ref().ok_or_else(|| {
        AppError::NotConfigured(
            "Shopify is not configured: set SHOPIFY_API_KEY and SHOPIFY_API_SECRET".into(),
        )
    })
}
