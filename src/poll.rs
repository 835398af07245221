//! Polling runs over every integration (the scheduler's safety net and `salesbot-sync poll`).

use std::time::Duration;

use serde::Serialize;

use crate::state::AppState;

#[derive(Debug, Default, Clone, Serialize)]
pub struct PollReport {
    pub ok: usize,
    pub failed: usize,
    pub written: usize,
    pub unchanged: usize,
    pub failures: Vec<(String, String)>,
    #[serde(skip)]
    pub duration: Duration,
}

impl PollReport {
    pub fn merge(&mut self, other: PollReport) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.written += other.written;
        self.unchanged += other.unchanged;
        self.failures.extend(other.failures);
    }
}

impl PollReport {
    /// The one-line summary every run ends with.
    pub fn summary(&self, what: &str) -> String {
        format!(
            "{what}: ok {} failed {}; objects written {} unchanged {}; {:.1} s",
            self.ok,
            self.failed,
            self.written,
            self.unchanged,
            self.duration.as_secs_f64()
        )
    }
}

/// Both integrations' results of one run.
#[derive(Debug, Default, Clone)]
pub struct PollRun {
    pub shops: PollReport,
    pub pages: PollReport,
    pub duration: Duration,
}

impl PollRun {
    pub fn failed(&self) -> usize {
        self.shops.failed + self.pages.failed
    }

    pub fn summary(&self) -> String {
        format!(
            "poll finished in {:.1} s: shops ok {} failed {}, pages ok {} failed {}; objects written {} unchanged {}",
            self.duration.as_secs_f64(),
            self.shops.ok,
            self.shops.failed,
            self.pages.ok,
            self.pages.failed,
            self.shops.written + self.pages.written,
            self.shops.unchanged + self.pages.unchanged,
        )
    }
}

/// Polls every connected shop and page of the configured integrations.
pub async fn poll_everything(state: &AppState) -> anyhow::Result<PollRun> {
    let started = std::time::Instant::now();
    let mut run = PollRun::default();
    if state.config.shopify.is_some() {
        run.shops = crate::shopify::poll::poll_all_shops(state).await?;
    }
    if state.config.facebook.is_some() {
        run.pages = crate::facebook::pages::poll_all_pages(state).await?;
    }
    run.duration = started.elapsed();
    Ok(run)
}
