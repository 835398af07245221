//! Polling every connected shop (the scheduler's safety net) or one on demand.

use std::time::Instant;

use super::sync::{sync_shop, SyncError};
use crate::objects::keys::ShopDomain;
use crate::poll::poll_each;
pub use crate::poll::{PollReport, Written};
use crate::state::AppState;

/// Shops polled at once; each shop has its own API budget, so they do not slow each other.
const CONCURRENCY: usize = 4;

/// Polls one shop; the error is already logged and classified.
pub async fn poll_shop(state: &AppState, shop: &ShopDomain) -> Result<Written, SyncError> {
    let started = Instant::now();
    let r = sync_shop(state, shop).await;
    metrics::counter!("poll_runs_total", "source" => "shopify").increment(1);
    metrics::histogram!("poll_duration_seconds", "source" => "shopify")
        .record(started.elapsed().as_secs_f64());
    match r {
        Ok(o) => Ok((o.written(), 2 - o.written())),
        Err(e) => {
            metrics::counter!("poll_failures_total", "source" => "shopify").increment(1);
            tracing::warn!(%shop, error = %e, "shop poll failed");
            Err(e)
        }
    }
}

/// Polls every active shop; one failing shop never stops the others.
pub async fn poll_all_shops(state: &AppState) -> Result<PollReport, SyncError> {
    let shops = state.tokens.active_shops().await?;
    Ok(poll_each(shops, CONCURRENCY, |shop| async move {
        let r = poll_shop(state, &shop).await;
        (shop, r)
    })
    .await)
}
