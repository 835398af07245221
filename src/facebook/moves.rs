//! A page moved from one merchant to another (SPEC §8).
//!
//! A connect never moves a page that is connected to another merchant: the person who manages
//! two businesses' pages must not carry one client's conversations into the other's account
//! by connecting it. The Facebook user who connected the page there sees it on the new
//! merchant's account page and moves it with one form per page (`confirm`); anyone else is
//! refused. After a move the old merchant must not keep a copy of the page's conversations:
//! `MovedPageCleanup` deletes it, and the move stays listed in the status (`GET /`) and on the
//! old merchant's account page, with when it happened.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::jobs::{PagePoll, PageRefresh, PollReason};
use crate::ids::MerchantId;
use crate::ids::{FacebookUserId, PageId};
use crate::jobs::{DedupeKey, GroupKey, Job, JobError, JobOutput};
use crate::objects::keys;
use crate::state::AppState;
use crate::store::events::{EnqueueError, Pool};
use crate::store::now_millis;
use crate::store::tokens::SavedPage;
use crate::store::StoreError;

/// How often the job looks again while jobs of the page are still running.
const WAIT_FOR_RUNNING: Duration = Duration::from_millis(250);

/// What a confirmed move did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmed {
    /// Moved from `from`; its first poll for the new merchant is queued.
    Moved { from: MerchantId },
    /// The page was already the merchant's.
    AlreadyHere,
}

/// Why a move was refused.
#[derive(Debug, thiserror::Error)]
pub enum MoveRefused {
    #[error("only the person who connected this page to the other account can move it here")]
    NotTheirs,
    #[error("this page's data is being deleted; connect it again in a minute")]
    BeingDeleted,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Enqueue(#[from] EnqueueError),
}

/// Pages connected to another merchant by the Facebook user who connected `merchant`'s
/// pages: those they may move here (`confirm`), by id.
pub async fn movable_here(
    state: &AppState,
    merchant: MerchantId,
) -> Result<Vec<PageId>, StoreError> {
    let Some(user) = state
        .tokens
        .facebook_user(merchant)
        .await?
        .and_then(|u| u.fb_user_id)
    else {
        return Ok(Vec::new());
    };
    let granted = state.tokens.pages_granted_by(&user).await?;
    Ok(granted
        .into_iter()
        .filter(|(owner, _)| *owner != merchant)
        .map(|(_, page)| page)
        .collect())
}

/// Moves `page` to `merchant`, as confirmed on the merchant's account page (a POST with the
/// session's form token). Only the Facebook user who connected the page to its current
/// merchant, and who connected this merchant's pages, can move it.
pub async fn confirm(
    state: &AppState,
    merchant: MerchantId,
    page: &PageId,
) -> Result<Confirmed, MoveRefused> {
    let user = state
        .tokens
        .facebook_user(merchant)
        .await?
        .and_then(|u| u.fb_user_id)
        .ok_or(MoveRefused::NotTheirs)?;
    let user_id = FacebookUserId::parse(&user).map_err(|_| MoveRefused::NotTheirs)?;
    match state.tokens.move_page_here(page, merchant, user).await? {
        SavedPage::Saved(_) => Ok(Confirmed::AlreadyHere),
        SavedPage::Moved { from, move_id } => {
            moved(state, page, from, merchant, user_id, move_id).await?;
            queue_first_poll(state, page).await?;
            Ok(Confirmed::Moved { from })
        }
        SavedPage::BeingDeleted => Err(MoveRefused::BeingDeleted),
        SavedPage::OwnedElsewhere | SavedPage::MoveNeedsConfirmation => Err(MoveRefused::NotTheirs),
    }
}

/// After the store moved a page: counted, logged, and the old copy's clean-up queued (if
/// queueing fails, `resume_pending` queues it at the next start or poll).
pub async fn moved(
    state: &AppState,
    page: &PageId,
    from: MerchantId,
    to: MerchantId,
    user: FacebookUserId,
    move_id: i64,
) -> Result<(), EnqueueError> {
    record(page, from, to);
    let cleanup = MovedPageCleanup {
        page: page.clone(),
        from,
        user,
        move_id,
    };
    state.events.enqueue(cleanup.to_event()).await?;
    Ok(())
}

/// The moved page's details and conversations read again for its new merchant (its
/// watermarks were forgotten with the move, so the poll reads everything).
async fn queue_first_poll(state: &AppState, page: &PageId) -> Result<(), EnqueueError> {
    let poll = PagePoll {
        page: page.clone(),
        reason: PollReason::Initial { at: now_millis() },
    };
    let ids = state
        .events
        .enqueue_all(vec![
            PageRefresh::connect(page.clone()).to_event(),
            poll.to_event(),
        ])
        .await?;
    if let Some(poll) = ids.get(1) {
        // The account page follows the poll's progress.
        let target = GroupKey::page(page).into_string();
        state.events.track(target, poll.id(), None).await?;
    }
    Ok(())
}

/// Counts and logs a move; called once per move the store recorded.
pub fn record(page: &PageId, from: MerchantId, to: MerchantId) {
    metrics::counter!("facebook_page_moves_total").increment(1);
    // Merchant ids are not secrets, and an operator needs both to answer "where did it go".
    tracing::warn!(%page, %from, %to, "page moved to another merchant, confirmed by the user who connected it");
}

/// Queues the clean-up of every move whose old copy is not deleted yet (its job may never have
/// been queued if the queue failed right after the move). A queued job is a no-op.
pub async fn resume_pending(state: &AppState) -> Result<usize, StoreError> {
    let jobs: Vec<_> = state
        .tokens
        .uncleaned_page_moves()
        .await?
        .into_iter()
        .filter_map(|(move_id, page, from, user)| {
            Some(
                MovedPageCleanup {
                    page: PageId::parse(&page).ok()?,
                    from: MerchantId::parse(&from).ok()?,
                    user: FacebookUserId::parse(&user).ok()?,
                    move_id,
                }
                .to_event(),
            )
        })
        .collect();
    let n = jobs.len();
    if n > 0 {
        state.events.enqueue_all(jobs).await?;
        tracing::info!(moves = n, "clean-ups of moved pages' old copies queued");
    }
    Ok(n)
}

/// Deletes the old merchant's copy of a moved page.
#[derive(Debug, Serialize, Deserialize)]
pub struct MovedPageCleanup {
    pub page: PageId,
    /// The merchant the page left.
    pub from: MerchantId,
    /// The Facebook user who moved it (the job runs in their group, so it never runs beside a
    /// data deletion of the same user's pages).
    pub user: FacebookUserId,
    /// The move's row in `page_moves`.
    pub move_id: i64,
}

impl Job for MovedPageCleanup {
    const KIND: &'static str = "facebook_page_moved";
    const POOL: Pool = Pool::Sync;
    /// The old merchant must not keep someone else's conversations: never given up for a
    /// reason that can pass.
    const RETRY_FOREVER: bool = true;
    type Context = AppState;

    fn dedupe_key(&self) -> DedupeKey {
        DedupeKey::new(Self::KIND, &[&self.move_id])
    }

    fn group(&self) -> GroupKey {
        GroupKey::facebook_user(&self.user)
    }

    async fn run(state: &AppState, batch: Vec<Self>) -> Result<JobOutput, JobError> {
        let job = &batch[0];
        let retry = |e: &dyn std::fmt::Display| JobError::Retry(e.to_string());
        // Moved back before this ran: the old merchant's copy is the live one again.
        let owner = state
            .tokens
            .page(&job.page)
            .await
            .map_err(|e| retry(&e))?
            .map(|p| p.merchant);
        if owner == Some(job.from) {
            state
                .tokens
                .page_move_cleaned(job.move_id, 0)
                .await
                .map_err(|e| retry(&e))?;
            return Ok(JobOutput::done().with_result(json!({"objects": 0, "moved_back": true})));
        }
        // A job that read the page's owner before the move may still write to the old copy:
        // let the page's jobs that are running now finish first.
        let running = state
            .events
            .running_in_groups(
                vec![GroupKey::page(&job.page).into_string()],
                vec![GroupKey::conversations_of(&job.page)],
            )
            .await
            .map_err(|e| retry(&e))?;
        if running > 0 {
            return Err(JobError::Later {
                after: WAIT_FOR_RUNNING,
                reason: format!("{running} job(s) of the page are still running"),
            });
        }
        let objects = state
            .objects
            .delete_prefix(&keys::page_prefix(&job.from, &job.page))
            .await
            .map_err(|e| retry(&e))?;
        state
            .tokens
            .page_move_cleaned(job.move_id, objects)
            .await
            .map_err(|e| retry(&e))?;
        tracing::info!(page = %job.page, from = %job.from, objects, "moved page's old copy deleted");
        Ok(JobOutput::done().with_result(json!({"objects": objects})))
    }
}
