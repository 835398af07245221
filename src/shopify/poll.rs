//! Polling every connected shop (the scheduler's safety net) or one on demand.

use std::time::Instant;

use futures::StreamExt;

use super::sync::{sync_shop, SyncError};
use crate::objects::keys::ShopDomain;
pub use crate::poll::PollReport;
use crate::state::AppState;

/// Shops polled at once; each shop has its own API budget, so they do not slow each other.
const CONCURRENCY: usize = 4;

/// Objects (written, unchanged) by one poll.
pub type Written = (usize, usize);

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
    let started = Instant::now();
    let shops = state.tokens.active_shops().await?;
    let results: Vec<(ShopDomain, Result<Written, SyncError>)> = futures::stream::iter(shops)
        .map(|shop| async move {
            let r = poll_shop(state, &shop).await;
            (shop, r)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut report = PollReport::default();
    for (shop, r) in results {
        match r {
            Ok((w, u)) => {
                report.ok += 1;
                report.written += w;
                report.unchanged += u;
            }
            Err(e) => {
                report.failed += 1;
                report.failures.push((shop.to_string(), e.to_string()));
            }
        }
    }
    report.duration = started.elapsed();
    Ok(report)
}
