//! A page moved from one merchant to another (SPEC §8, issue 12 item 3).
//!
//! The store moves a page only when the Facebook user who connected it to the old merchant
//! grants it again from another merchant's session (`TokenStore::save_page`); anyone else is
//! refused. After a move the old merchant must not keep a copy of the page's conversations:
//! this job deletes it, and the move stays listed in the status (`GET /`) with when its copy
//! was removed.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::ids::MerchantId;
use crate::ids::{FacebookUserId, PageId};
use crate::jobs::{DedupeKey, GroupKey, Job, JobError, JobOutput};
use crate::objects::keys;
use crate::state::AppState;
use crate::store::events::Pool;
use crate::store::StoreError;

/// How often the job looks again while jobs of the page are still running.
const WAIT_FOR_RUNNING: Duration = Duration::from_millis(250);

/// Counts and logs a move; called once per move the store recorded.
pub fn record(page: &PageId, from: MerchantId, to: MerchantId) {
    metrics::counter!("facebook_page_moves_total").increment(1);
    // Merchant ids are not secrets, and an operator needs both to answer "where did it go".
    tracing::warn!(%page, %from, %to, "page moved to another merchant by the user who connected it");
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
