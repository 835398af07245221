//! Poll runs (SPEC §5): the scheduler's daily safety net and `salesbot-sync poll`.
//!
//! A run is a row in `runs` and one queued job per shop and per page (plus, when scheduled,
//! one subscription check each), spread over the poll window so a tick does not start every
//! account at once. The jobs run in their accounts' queue groups like every other write, so a
//! poll can never overwrite what a webhook wrote meanwhile. A run's summary is computed from
//! its jobs (and their follow-ups) once all of them have finished. A run of everything also
//! queues again the data deletions that are not done (`facebook::deletion::resume_pending`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::facebook::jobs::{ConversationPoll, PagePoll, PageSubscriptionCheck, PollReason};
use crate::ids::{PageId, ShopDomain};
use crate::jobs::Job;
use crate::shopify::jobs::{ShopifySubscriptionCheck, ShopifySync, SyncReason};
use crate::state::AppState;
use crate::store::events::{EventStatus, NewEvent, Outcome, RunId, RunKind, RunTrigger};
use crate::store::{now_millis, StoreError};

/// What a run polls.
#[derive(Debug, Clone)]
pub enum Target {
    /// Every connected shop and page of the configured integrations.
    Everything,
    Shop(ShopDomain),
    Page(PageId),
}

/// Where in `window` an account's job starts: the same place every run (a stable hash of its
/// id), so accounts are spread evenly and each is polled about every 24 hours.
fn offset(id: &str, window: Duration) -> i64 {
    let w = window.as_millis() as u64;
    if w == 0 {
        return 0;
    }
    let h = crate::crypto::sha256_hex(id.as_bytes());
    let n = u64::from_str_radix(&h[..12], 16).unwrap_or(0);
    (n % w) as i64
}

/// Queues a run and returns its id.
pub async fn start(
    state: &AppState,
    target: Target,
    trigger: RunTrigger,
    window: Duration,
) -> Result<(RunId, usize), StoreError> {
    if matches!(target, Target::Everything) {
        // The safety net for data that must go: a deletion recorded while the queue refused
        // its job is queued again here rather than only at the next start.
        let resumed = crate::facebook::deletion::resume_pending(state).await?;
        if resumed > 0 {
            tracing::info!(
                deletions = resumed,
                "data deletion requests not done yet are queued"
            );
        }
    }
    let run = state.events.create_run(RunKind::Poll, trigger).await?;
    let (shops, pages) = targets(state, target).await?;
    let (shops, pages) = if trigger == RunTrigger::Schedule {
        not_busy(state, shops, pages).await?
    } else {
        (shops, pages)
    };
    let now = now_millis();
    // Shopify's webhook subscriptions are checked daily; a page's Messenger fields on every
    // poll but the one a connect starts (which has just subscribed it), so that
    // `salesbot-sync poll` repairs a page at once (SPEC §3.1).
    let checks = trigger == RunTrigger::Schedule;
    let page_checks = trigger != RunTrigger::Connect;
    let mut events: Vec<NewEvent> = Vec::new();
    for shop in shops {
        let at = now + offset(shop.as_str(), window);
        if checks {
            let check = ShopifySubscriptionCheck {
                shop: shop.clone(),
                run,
            };
            events.push(check.to_event().in_run(Some(run)).at(at));
        }
        let sync = ShopifySync {
            shop,
            reason: SyncReason::Poll { run },
        };
        events.push(sync.to_event().in_run(Some(run)).at(at));
    }
    for page in pages {
        let at = now + offset(page.as_str(), window);
        if page_checks {
            let check = PageSubscriptionCheck {
                page: page.clone(),
                run,
            };
            events.push(check.to_event().in_run(Some(run)).at(at));
        }
        let poll = PagePoll {
            page,
            reason: PollReason::Poll { run },
        };
        events.push(poll.to_event().in_run(Some(run)).at(at));
    }
    let jobs = events.len();
    state.events.enqueue_all(events).await?;
    Ok((run, jobs))
}

/// The shops and pages a run polls.
async fn targets(
    state: &AppState,
    target: Target,
) -> Result<(Vec<ShopDomain>, Vec<PageId>), StoreError> {
    Ok(match target {
        Target::Everything => (
            if state.config.shopify.is_some() {
                state.tokens.active_shops().await?
            } else {
                Vec::new()
            },
            if state.config.facebook.is_some() {
                state.tokens.active_pages().await?
            } else {
                Vec::new()
            },
        ),
        Target::Shop(s) => (vec![s], Vec::new()),
        Target::Page(p) => (Vec::new(), vec![p]),
    })
}

/// A scheduled run leaves out accounts whose previous poll is still queued or running (a
/// shop that keeps failing retries on its own; the others are polled as usual).
async fn not_busy(
    state: &AppState,
    shops: Vec<ShopDomain>,
    pages: Vec<PageId>,
) -> Result<(Vec<ShopDomain>, Vec<PageId>), StoreError> {
    let busy = state
        .events
        .open_groups(vec![ShopifySync::KIND, PagePoll::KIND])
        .await?;
    Ok((
        shops
            .into_iter()
            .filter(|s| !busy.contains(crate::jobs::GroupKey::shop(s).as_str()))
            .collect(),
        pages
            .into_iter()
            .filter(|p| !busy.contains(crate::jobs::GroupKey::page(p).as_str()))
            .collect(),
    ))
}

/// Per kind of work in a run.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Tally {
    pub ok: usize,
    pub failed: usize,
    pub pending: usize,
}

/// What a run did (so far).
#[derive(Debug, Default, Clone, Serialize)]
pub struct RunSummary {
    pub run: Option<RunId>,
    pub shops: Tally,
    pub pages: Tally,
    pub conversations: Tally,
    pub subscription_checks: Tally,
    /// Objects written and found unchanged.
    pub written: usize,
    pub unchanged: usize,
    /// Subscriptions that were missing and re-created.
    pub subscriptions_repaired: usize,
    /// (what, reason) of every failed job.
    pub failures: Vec<(String, String)>,
    #[serde(skip)]
    pub duration: Duration,
}

impl RunSummary {
    pub fn finished(&self) -> bool {
        [
            &self.shops,
            &self.pages,
            &self.conversations,
            &self.subscription_checks,
        ]
        .iter()
        .all(|t| t.pending == 0)
    }

    pub fn failed(&self) -> usize {
        self.failures.len()
    }

    /// The one-line summary every run ends with.
    pub fn line(&self) -> String {
        format!(
            "poll finished in {:.1} s: shops ok {} failed {}, pages ok {} failed {}, conversations read {} failed {}; objects written {} unchanged {}; subscriptions re-created {}",
            self.duration.as_secs_f64(),
            self.shops.ok,
            self.shops.failed,
            self.pages.ok,
            self.pages.failed,
            self.conversations.ok,
            self.conversations.failed,
            self.written,
            self.unchanged,
            self.subscriptions_repaired,
        )
    }
}

fn count(result: &Option<Value>, field: &str) -> usize {
    result
        .as_ref()
        .and_then(|r| r.get(field))
        .and_then(|v| v.as_u64().or_else(|| v.as_bool().map(u64::from)))
        .unwrap_or(0) as usize
}

/// "shop acme.myshopify.com", "page 123", "conversation 123/456" from a job's group.
fn describe_group(group: &str) -> String {
    if let Some(s) = group.strip_prefix("shopify:") {
        format!("shop {s}")
    } else if let Some(p) = group.strip_prefix("fbpage:") {
        format!("page {p}")
    } else if let Some(c) = group.strip_prefix("fbconv:") {
        format!("conversation {}", c.replacen(':', "/", 1))
    } else {
        group.to_string()
    }
}

pub fn summarize(run: RunId, jobs: &[Outcome]) -> RunSummary {
    let mut s = RunSummary {
        run: Some(run),
        ..RunSummary::default()
    };
    for j in jobs {
        let tally = match j.kind.as_str() {
            ShopifySync::KIND => &mut s.shops,
            PagePoll::KIND => &mut s.pages,
            ConversationPoll::KIND => &mut s.conversations,
            ShopifySubscriptionCheck::KIND | PageSubscriptionCheck::KIND => {
                &mut s.subscription_checks
            }
            _ => continue,
        };
        match j.status {
            EventStatus::Done => {
                tally.ok += 1;
                s.written += count(&j.result, "written");
                s.unchanged += count(&j.result, "unchanged");
                s.subscriptions_repaired += match &j.result {
                    Some(r) => r
                        .get("missing")
                        .and_then(|m| m.as_array().map(Vec::len).or(m.as_bool().map(usize::from)))
                        .unwrap_or(0),
                    None => 0,
                };
            }
            EventStatus::Failed | EventStatus::Dead => {
                tally.failed += 1;
                s.failures.push((
                    describe_group(&j.group_key),
                    j.last_error.clone().unwrap_or_default(),
                ));
            }
            EventStatus::Pending | EventStatus::Running => tally.pending += 1,
        }
    }
    s
}

/// How the run stands now.
pub async fn progress(state: &AppState, run: RunId) -> Result<RunSummary, StoreError> {
    let jobs = state.events.run_jobs(run).await?;
    Ok(summarize(run, &jobs))
}

/// Waits until every job of the run (follow-ups included) has finished.
pub async fn wait(state: &AppState, run: RunId) -> Result<RunSummary, StoreError> {
    let started = std::time::Instant::now();
    // A page's follow-ups are queued in the transaction that finishes the page's poll, so a
    // count of zero open jobs means the whole run is done.
    while state.events.run_open_jobs(run).await? > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut s = progress(state, run).await?;
    s.duration = started.elapsed();
    Ok(s)
}

/// One scheduled poll tick: queues the run (accounts whose previous poll is still going are
/// left out of it, see `start`).
pub async fn run_scheduled(state: &AppState) {
    match start(
        state,
        Target::Everything,
        RunTrigger::Schedule,
        state.config.poll_window,
    )
    .await
    {
        Ok((run, jobs)) => tracing::info!(
            %run,
            jobs,
            window_minutes = state.config.poll_window.as_secs() / 60,
            "poll run queued"
        ),
        Err(e) => tracing::error!(error = %e, "poll run could not start"),
    }
}

/// Logs each poll run's summary once its last job has finished (see `finish_runs`), every
/// few seconds until `stop`.
pub fn spawn_run_watcher(state: AppState, stop: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            if let Err(e) = finish_runs(&state).await {
                tracing::warn!(error = %e, "summarising poll runs failed");
            }
        }
    });
}

/// Writes the summary of every run whose jobs have all finished, and logs its line.
pub async fn finish_runs(state: &AppState) -> Result<usize, StoreError> {
    let mut finished = 0;
    for r in state.events.runs(true, 100).await? {
        if state.events.run_open_jobs(r.id).await? > 0 {
            continue;
        }
        // A run's jobs are queued after its row is made (a connect's polls, seconds later):
        // a young run without any is not finished, it has not started.
        let young = now_millis() - r.started_at < 60_000;
        if young && state.events.run_jobs(r.id).await?.is_empty() {
            continue;
        }
        let mut s = progress(state, r.id).await?;
        s.duration = Duration::from_millis((now_millis() - r.started_at).max(0) as u64);
        let mut json = serde_json::to_value(&s).unwrap_or(Value::Null);
        if let Some(o) = json.as_object_mut() {
            o.insert("duration_ms".into(), (s.duration.as_millis() as u64).into());
        }
        state.events.finish_run(r.id, json).await?;
        if s.failed() > 0 {
            let by_reason: BTreeMap<&str, usize> =
                s.failures.iter().fold(BTreeMap::new(), |mut m, (_, why)| {
                    *m.entry(why.as_str()).or_default() += 1;
                    m
                });
            tracing::warn!(run = %r.id, trigger = %r.trigger, failures = ?s.failures, reasons = ?by_reason, "{}", s.line());
        } else {
            tracing::info!(run = %r.id, trigger = %r.trigger, "{}", s.line());
        }
        finished += 1;
    }
    Ok(finished)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_stable_and_inside_the_window() {
        let w = Duration::from_secs(3600);
        let a = offset("acme.myshopify.com", w);
        assert_eq!(a, offset("acme.myshopify.com", w));
        assert!((0..3_600_000).contains(&a));
        assert_eq!(offset("x", Duration::ZERO), 0);
        // Spread: 200 ids do not bunch up in one part of the window.
        let mut buckets = [0; 4];
        for i in 0..200 {
            buckets[(offset(&format!("{i}"), w) / 900_000) as usize] += 1;
        }
        assert!(buckets.iter().all(|b| *b > 20), "{buckets:?}");
    }
}
