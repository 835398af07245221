//! Polling runs over every integration (the scheduler's safety net and `salesbot-sync poll`).

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

use futures::StreamExt;
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

/// Objects (written, unchanged) by one poll of a shop or page.
pub type Written = (usize, usize);

/// Polls every item with at most `concurrency` at once and adds up the results; one failing
/// item never stops the others.
pub async fn poll_each<T, E, F, Fut>(items: Vec<T>, concurrency: usize, poll: F) -> PollReport
where
    T: Display,
    E: Display,
    F: Fn(T) -> Fut,
    Fut: Future<Output = (T, Result<Written, E>)>,
{
    let started = Instant::now();
    let results: Vec<_> = futures::stream::iter(items)
        .map(poll)
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut report = PollReport::default();
    for (item, r) in results {
        match r {
            Ok((w, u)) => {
                report.ok += 1;
                report.written += w;
                report.unchanged += u;
            }
            Err(e) => {
                report.failed += 1;
                report.failures.push((item.to_string(), e.to_string()));
            }
        }
    }
    report.duration = started.elapsed();
    report
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
