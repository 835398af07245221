//! Where each of a merchant's shops and pages stands, in plain words, from the jobs: the first
//! sync's job (tracked at connect) and its reported progress, the page's conversation polls of
//! the connect's run, the catalogue's last build and the last poll.

use serde::Serialize;

use crate::error::AppError;
use crate::ids::{PageId, ShopDomain};
use crate::jobs::GroupKey;
use crate::state::AppState;
use crate::store::events::{EventStatus, Outcome, Tracked};
use crate::store::tokens::{AccountStatus, AccountSummary};

/// The state a shop or page is shown in (also the CSS class `state-…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ViewState {
    /// Connected, first sync queued.
    Waiting,
    Syncing,
    Synced,
    /// The first sync gave up (the daily sync tries again).
    Failed,
    NeedsReconnect,
    Uninstalled,
    /// Being disconnected (a deletion is running).
    Deleting,
}

/// One shop or page as the pages and `/account/progress` show it.
#[derive(Debug, Clone, Serialize)]
pub struct SyncView {
    /// `shop:<domain>` or `page:<id>`: the element the live script updates.
    pub target: String,
    pub state: ViewState,
    pub headline: String,
    pub detail: String,
    pub done: i64,
    pub total: Option<i64>,
    pub percent: Option<u8>,
    /// Nothing more will change without a new event (the script stops asking).
    pub finished: bool,
}

impl SyncView {
    fn new(target: String, state: ViewState, headline: &str, detail: String) -> SyncView {
        SyncView {
            target,
            state,
            headline: headline.to_string(),
            detail,
            done: 0,
            total: None,
            percent: None,
            finished: !matches!(state, ViewState::Waiting | ViewState::Syncing),
        }
    }

    fn counted(mut self, done: i64, total: Option<i64>) -> SyncView {
        self.done = done;
        self.total = total;
        self.percent = match (self.state, total) {
            (ViewState::Synced, _) => Some(100),
            (_, Some(t)) if t > 0 => Some(((done.min(t) * 100) / t) as u8),
            _ => None,
        };
        self
    }

    pub fn percent_text(&self) -> String {
        self.percent.map(|p| format!("{p} %")).unwrap_or_default()
    }

    pub fn percent_value(&self) -> u8 {
        self.percent.unwrap_or(0)
    }

    pub fn css(&self) -> &'static str {
        match self.state {
            ViewState::Waiting => "state-waiting",
            ViewState::Syncing => "state-syncing",
            ViewState::Synced => "state-synced",
            ViewState::Failed => "state-failed",
            ViewState::NeedsReconnect => "state-needs_reconnect",
            ViewState::Uninstalled => "state-uninstalled",
            ViewState::Deleting => "state-deleting",
        }
    }

    pub fn shows_bar(&self) -> bool {
        matches!(
            self.state,
            ViewState::Waiting | ViewState::Syncing | ViewState::Synced
        )
    }
}

pub fn shop_target(shop: &ShopDomain) -> String {
    format!("shop:{shop}")
}

pub fn page_target(page: &PageId) -> String {
    format!("page:{page}")
}

/// "3 minutes ago" style, for times in unix ms.
pub fn ago(ms: i64) -> String {
    let secs = ((crate::store::now_millis() - ms) / 1000).max(0);
    match secs {
        0..=59 => "just now".into(),
        60..=3599 => plural(secs / 60, "minute"),
        3600..=86_399 => plural(secs / 3600, "hour"),
        _ => plural(secs / 86_400, "day"),
    }
}

fn plural(n: i64, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit} ago")
    } else {
        format!("{n} {unit}s ago")
    }
}

/// Why a shop or page needs reconnecting, in the merchant's words. The stored reason is an
/// operator's diagnosis; the merchant is told what it means for them.
pub fn reconnect_reason(platform: &str, reason: Option<&str>) -> String {
    let why = match reason {
        Some(r) if r.contains("refresh") => "its access expired and could not be renewed",
        Some(r) if r.contains("revoked") || r.contains("refused") || r.contains("401") => {
            "it no longer accepts our access (the app's permission was removed or changed)"
        }
        Some(r) if r.contains("190") || r.contains("token") => {
            "its access was ended (a password change or removed permission ends it)"
        }
        _ => "it no longer accepts our access",
    };
    format!("{platform} stopped syncing because {why}. Reconnect to resume.")
}

fn first_sync(outcome: Option<&Outcome>) -> Option<EventStatus> {
    outcome.map(|o| o.status)
}

pub async fn shop_view(state: &AppState, s: &AccountSummary) -> Result<SyncView, AppError> {
    let shop = ShopDomain::parse(&s.id).map_err(|e| AppError::internal(anyhow::anyhow!(e)))?;
    let target = shop_target(&shop);
    match s.status {
        AccountStatus::Uninstalled => {
            return Ok(SyncView::new(
                target,
                ViewState::Uninstalled,
                "Uninstalled",
                "The app was uninstalled from this shop. Install it again to resume syncing."
                    .into(),
            ))
        }
        AccountStatus::NeedsReauth => {
            return Ok(SyncView::new(
                target,
                ViewState::NeedsReconnect,
                "Needs reconnect",
                reconnect_reason("Shopify", s.reason.as_deref()),
            ))
        }
        AccountStatus::Deleting => {
            return Ok(SyncView::new(
                target,
                ViewState::Deleting,
                "Disconnecting",
                "Its data is being deleted.".into(),
            ))
        }
        AccountStatus::Active => {}
    }
    let tracked = state.events.tracked(GroupKey::shop(&shop).as_str()).await?;
    let built_at = state.catalog.state(&shop).await?.built_at;
    let synced =
        |detail: String| SyncView::new(target.clone(), ViewState::Synced, "Synced", detail);
    let Some(t) = tracked else {
        return Ok(match built_at {
            Some(at) => synced(format!("Last updated {}.", ago(at))).counted(0, None),
            None => SyncView::new(
                target.clone(),
                ViewState::Waiting,
                "Waiting",
                "The first sync starts shortly.".into(),
            ),
        });
    };
    let outcome = state.events.outcome(t.event_id).await?;
    Ok(match first_sync(outcome.as_ref()) {
        Some(EventStatus::Pending) => SyncView::new(
            target,
            ViewState::Waiting,
            "Waiting",
            "The first sync starts shortly.".into(),
        )
        .counted(t.done, t.total),
        Some(EventStatus::Running) => product_progress(target, &t),
        Some(EventStatus::Failed | EventStatus::Dead) => SyncView::new(
            target,
            ViewState::Failed,
            "Sync failed",
            "The first sync could not finish; the daily sync tries again, and updates keep arriving."
                .into(),
        ),
        // Done, or finished long ago (its job was pruned).
        Some(EventStatus::Done) | None => {
            let n = t.total.unwrap_or(t.done);
            let when = built_at.map(|at| format!(", last updated {}", ago(at))).unwrap_or_default();
            synced(format!("{n} products synced{when}.")).counted(n, Some(n))
        }
    })
}

fn product_progress(target: String, t: &Tracked) -> SyncView {
    let detail = match t.total {
        Some(total) => format!("{} of {} products read", t.done, total),
        None => "Counting products…".into(),
    };
    SyncView::new(target, ViewState::Syncing, "Syncing", detail).counted(t.done, t.total)
}

pub async fn page_view(state: &AppState, s: &AccountSummary) -> Result<SyncView, AppError> {
    let page = PageId::parse(&s.id).map_err(|e| AppError::internal(anyhow::anyhow!(e)))?;
    let target = page_target(&page);
    if let Some(view) = page_status_view(&target, s) {
        return Ok(view);
    }
    let last = state.tokens.page_last_polled(&page).await?;
    let tracked = state.events.tracked(GroupKey::page(&page).as_str()).await?;
    let synced_detail = |n: Option<i64>| {
        let count = n
            .map(|n| format!("{n} conversations synced"))
            .unwrap_or_else(|| "Synced".into());
        match last {
            Some(at) => format!("{count}, last polled {}.", ago(at)),
            None => format!("{count}."),
        }
    };
    let Some(t) = tracked else {
        return Ok(
            SyncView::new(target, ViewState::Synced, "Synced", synced_detail(None))
                .counted(0, None),
        );
    };
    let poll = state.events.outcome(t.event_id).await?;
    let view = match first_sync(poll.as_ref()) {
        Some(EventStatus::Pending | EventStatus::Running) => SyncView::new(
            target,
            ViewState::Syncing,
            "Syncing",
            "Reading the list of conversations…".into(),
        ),
        Some(EventStatus::Failed | EventStatus::Dead) => SyncView::new(
            target,
            ViewState::Failed,
            "Sync failed",
            "The first poll could not finish; the daily poll tries again, and new messages keep arriving."
                .into(),
        ),
        Some(EventStatus::Done) | None => {
            let (finished, all) = match t.run_id {
                Some(run) if poll.is_some() => {
                    state
                        .events
                        .run_group_progress(run, &GroupKey::conversations_of(&page))
                        .await?
                }
                _ => (0, 0),
            };
            if finished < all {
                SyncView::new(
                    target,
                    ViewState::Syncing,
                    "Syncing",
                    format!("{finished} of {all} conversations read"),
                )
                .counted(finished, Some(all))
            } else {
                let n = (poll.is_some()).then_some(all);
                SyncView::new(target, ViewState::Synced, "Synced", synced_detail(n))
                    .counted(all, Some(all))
            }
        }
    };
    Ok(view)
}

/// The view of a page that is not active (being deleted, needing a reconnect, gone).
fn page_status_view(target: &str, s: &AccountSummary) -> Option<SyncView> {
    let target = target.to_string();
    Some(match s.status {
        AccountStatus::Deleting => SyncView::new(
            target,
            ViewState::Deleting,
            "Disconnecting",
            "Its conversations are being deleted.".into(),
        ),
        AccountStatus::NeedsReauth => SyncView::new(
            target,
            ViewState::NeedsReconnect,
            "Needs reconnect",
            reconnect_reason("Facebook", s.reason.as_deref()),
        ),
        AccountStatus::Uninstalled => SyncView::new(
            target,
            ViewState::Uninstalled,
            "Disconnected",
            "This page is no longer connected.".into(),
        ),
        AccountStatus::Active => return None,
    })
}
