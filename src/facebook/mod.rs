//! Facebook: Page OAuth connect, signed webhooks, Messenger conversations, polling, and Meta's
//! data deletion callback.

pub mod client;
pub mod deletion;
pub mod messages;
pub mod oauth;
pub mod pages;
pub mod process;
pub mod signature;
pub mod webhook;

use crate::config::FacebookSettings;
use crate::error::AppError;
use crate::state::AppState;

/// A raw webhook delivery as received (fanned out by `process::DeliveryHandler`).
pub const DELIVERY_KIND: &str = "facebook";
/// One messaging item, grouped by conversation so merges never run concurrently.
pub const MESSAGE_KIND: &str = "facebook_message";
/// A page metadata refresh (from `changes`), grouped by page and debounced.
pub const PAGE_KIND: &str = "facebook_page";

pub fn settings(state: &AppState) -> Result<&FacebookSettings, AppError> {
    state.config.facebook.as_ref().ok_or_else(|| {
        AppError::NotConfigured(
            "Facebook is not configured: set FACEBOOK_APP_ID, FACEBOOK_APP_SECRET and FACEBOOK_VERIFY_TOKEN".into(),
        )
    })
}
