//! A merchant disconnecting one page from their account page: the same deletion as Meta's data
//! deletion request (`deletion::delete_marked_pages`), for that page only. The app is also
//! unsubscribed from the page so Meta stops sending its messages.

use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::deletion::{delete_marked_pages, end_sessions};
use crate::ids::MerchantId;
use crate::ids::PageId;
use crate::jobs::{DedupeKey, GroupKey, Job, JobError, JobOutput};
use crate::state::AppState;
use crate::store::events::Pool;
use crate::store::tokens::AccountStatus;

/// Why a page disconnected by its merchant is `deleting`.
pub const DISCONNECT_REASON: &str = "disconnected by the merchant";

#[derive(Debug, Serialize, Deserialize)]
pub struct PageDisconnect {
    pub page: PageId,
    /// The merchant who asked: only their page is deleted (a page moved to another merchant
    /// meanwhile is left alone).
    pub merchant: MerchantId,
    /// A fresh id per request, for the dedupe key.
    pub request: Uuid,
}

impl PageDisconnect {
    pub fn new(page: PageId, merchant: MerchantId) -> PageDisconnect {
        PageDisconnect {
            page,
            merchant,
            request: Uuid::new_v4(),
        }
    }
}

impl Job for PageDisconnect {
    const KIND: &'static str = "facebook_page_disconnect";
    const POOL: Pool = Pool::Sync;
    /// The merchant asked for the data to go: never given up for a reason that can pass.
    const RETRY_FOREVER: bool = true;
    type Context = AppState;

    fn dedupe_key(&self) -> DedupeKey {
        DedupeKey::new(Self::KIND, &[&self.page, &self.request])
    }

    /// Not the page's own group: the deletion waits for the jobs running there.
    fn group(&self) -> GroupKey {
        GroupKey::page_disconnect(&self.page)
    }

    async fn run(state: &AppState, batch: Vec<Self>) -> Result<JobOutput, JobError> {
        let job = &batch[0];
        let retry = |e: &dyn std::fmt::Display| JobError::Retry(e.to_string());
        let Some(rec) = state.tokens.page(&job.page).await.map_err(|e| retry(&e))? else {
            return Ok(JobOutput::done().with_result(json!({"pages": 0, "objects": 0})));
        };
        if rec.merchant != job.merchant {
            tracing::info!(page = %job.page, "disconnect of a page that moved to another merchant: nothing deleted");
            return Ok(JobOutput::done().with_result(json!({"pages": 0, "objects": 0})));
        }
        // Marked first (idempotent), so merges and polls that start from now on refuse to write.
        state
            .tokens
            .set_page_status(
                &job.page,
                AccountStatus::Deleting,
                Some(DISCONNECT_REASON.into()),
            )
            .await
            .map_err(|e| retry(&e))?;
        // Best effort: a page whose token no longer works cannot be unsubscribed, and its
        // webhooks are refused once the page is gone anyway.
        if let Some(graph) = &state.graph {
            if let Err(e) = super::pages::unsubscribe(graph, &job.page, &rec.access_token).await {
                tracing::info!(page = %job.page, error = %e, "could not unsubscribe the app from a disconnected page");
            }
        }
        let pages = vec![(job.merchant, job.page.clone())];
        let deleted = delete_marked_pages(state, &pages).await?;
        let sessions = end_sessions(state, &[job.merchant])
            .await
            .map_err(|e| retry(&e))?;
        tracing::info!(page = %job.page, objects = deleted.objects, events = deleted.events, sessions, "page disconnected by its merchant");
        Ok(JobOutput::done().with_result(deleted))
    }
}
