//! Meta's data deletion callback (`POST /facebook/data-deletion` with a `signed_request`, and
//! the status URL it answers with; the routes are `routes::facebook`) and the job that does the
//! deletion.
//!
//! Meta gets its confirmation code at once; the work is a queued job that never dead-letters
//! and resumes after a restart. It first marks the user's pages `deleting` (merges and polls
//! that start from then on refuse to write), waits for jobs already running on those pages,
//! then deletes their objects (batched), the queued events that hold their messages, the
//! records and who the user was, ends the sessions of merchants left with nothing connected,
//! and ends `done` with counts.
//!
//! A `signed_request` is refused (400) when its `issued_at` is more than an hour old or in the
//! future beyond a small clock skew; the same request again (same user and `issued_at`) is
//! answered with the original confirmation code and queues nothing.

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use crate::config::FacebookSettings;
use crate::crypto::secret_bytes;
use crate::ids::MerchantId;
use crate::ids::{FacebookUserId, PageId};
use crate::jobs::{DedupeKey, GroupKey, Job, JobError, JobOutput};
use crate::objects::keys;
use crate::platforms::facebook::signature::parse_signed_request;
use crate::state::AppState;
use crate::store::events::{EnqueueError, Pool};
use crate::store::ledger::Deleted as Ledgered;
use crate::store::tokens::DeletionRecorded;
use crate::store::{now_secs, StoreError};

/// How often the job looks again while jobs of the pages are still running.
const WAIT_FOR_RUNNING: Duration = Duration::from_millis(250);

/// What stops a data deletion request.
#[derive(Debug, thiserror::Error)]
pub enum DeletionError {
    /// Not signed with the app secret.
    #[error("invalid signed_request")]
    Unsigned,
    /// Signed, but not a request that is acted on (no user, no or a stale `issued_at`).
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Enqueue(#[from] EnqueueError),
}

/// Meta's answer: where the deletion's status can be read, and its confirmation code.
pub struct DeletionRequested {
    pub url: Url,
    pub confirmation_code: String,
}

/// Accepts a `signed_request`: the deletion is queued (once per request, see below).
pub async fn request(
    state: &AppState,
    settings: &FacebookSettings,
    signed: &str,
) -> Result<DeletionRequested, DeletionError> {
    let payload = parse_signed_request(secret_bytes(&settings.app_secret), signed)
        .ok_or(DeletionError::Unsigned)?;
    let user = payload
        .get("user_id")
        .and_then(|v| {
            v.as_str()
                .map(str::to_string)
                .or_else(|| v.as_i64().map(|n| n.to_string()))
        })
        .and_then(|u| FacebookUserId::parse(&u).ok())
        .ok_or_else(|| DeletionError::Refused("signed_request has no valid user_id".into()))?;

    let issued_at = payload
        .get("issued_at")
        .and_then(Value::as_i64)
        .ok_or_else(|| DeletionError::Refused("signed_request has no valid issued_at".into()))?;
    check_fresh(issued_at, now_secs())?;
    let code = record(state, user, issued_at).await?;
    let mut url = state.config.public_base_url.clone();
    url.set_path("/facebook/data-deletion/status");
    url.query_pairs_mut().append_pair("code", &code);
    Ok(DeletionRequested {
        url,
        confirmation_code: code,
    })
}

/// Records the request and queues its job; returns its confirmation code (the original's,
/// for the same request again).
async fn record(
    state: &AppState,
    user: FacebookUserId,
    issued_at: i64,
) -> Result<String, DeletionError> {
    let fresh_code = crate::crypto::random_token(12);
    let code = match state
        .tokens
        .record_deletion_request(&fresh_code, user.as_str(), issued_at)
        .await?
    {
        // The unique index on (user, issued_at) decides, so two concurrent copies — even on
        // two instances — record one.
        DeletionRecorded::New => {
            let job = DataDeletion {
                code: fresh_code.clone(),
                user,
            };
            state.events.enqueue(job.to_event()).await?;
            tracing::info!("Facebook data deletion request accepted");
            fresh_code
        }
        // The same signed request again (Meta retrying, or someone replaying a captured one):
        // the answer is the original's, whose status URL keeps reporting the one deletion.
        DeletionRecorded::Replay(original) => {
            metrics::counter!("facebook_data_deletion_replays_total").increment(1);
            tracing::info!(
                "Facebook data deletion request seen before: answered with the original"
            );
            requeue_unfinished(state, &original, user).await?;
            original
        }
    };
    Ok(code)
}

/// Queues the job of a replayed request's deletion again while it is not done: the first
/// request may have been recorded while the queue refused its job (full, or its database
/// failing), and Meta retries a request it got an error for. A job already queued (or
/// running, or done) has the same dedupe key, so this adds nothing then; a done deletion is
/// not even tried.
async fn requeue_unfinished(
    state: &AppState,
    code: &str,
    user: FacebookUserId,
) -> Result<(), DeletionError> {
    let done = state
        .tokens
        .deletion_status(code)
        .await?
        .is_some_and(|d| d.status == "done");
    if !done {
        let job = DataDeletion {
            code: code.to_string(),
            user,
        };
        state.events.enqueue(job.to_event()).await?;
    }
    Ok(())
}

/// How old a `signed_request` may be: Meta calls at once, so an older one is a replay of a
/// captured request (SPEC §8).
pub const MAX_REQUEST_AGE_SECS: i64 = 3600;
/// How far in the future `issued_at` may be, for clocks that disagree a little.
pub const CLOCK_SKEW_SECS: i64 = 300;

/// Refuses an `issued_at` outside `[now - MAX_REQUEST_AGE_SECS, now + CLOCK_SKEW_SECS]`.
fn check_fresh(issued_at: i64, now: i64) -> Result<(), DeletionError> {
    if issued_at > now.saturating_add(CLOCK_SKEW_SECS) {
        tracing::warn!(
            issued_at,
            now,
            "Facebook data deletion request issued in the future: refused"
        );
        return Err(DeletionError::Refused(
            "signed_request is issued in the future".into(),
        ));
    }
    if issued_at < now.saturating_sub(MAX_REQUEST_AGE_SECS) {
        tracing::warn!(
            issued_at,
            now,
            "stale Facebook data deletion request refused"
        );
        return Err(DeletionError::Refused(
            "signed_request is too old (issued more than an hour ago)".into(),
        ));
    }
    Ok(())
}

/// Queues the job of every deletion that is not done (its job may never have been queued, or
/// an earlier version recorded it failed), and the clean-ups of moved pages' old copies (the
/// same kind of work: data that must go). Called at start-up and by every poll run of
/// everything (so a job the queue refused does not wait for a restart); a queued job is a
/// no-op.
pub async fn resume_pending(state: &AppState) -> Result<usize, StoreError> {
    super::moves::resume_pending(state).await?;
    let rows = state.tokens.unfinished_deletions().await?;
    let jobs: Vec<_> = rows
        .into_iter()
        .filter_map(|(code, user)| {
            let user = FacebookUserId::parse(&user).ok()?;
            Some(DataDeletion { code, user }.to_event())
        })
        .collect();
    let n = jobs.len();
    if n > 0 {
        state.events.enqueue_all(jobs).await?;
    }
    Ok(n)
}

/// What a finished deletion removed.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Deleted {
    pub pages: usize,
    pub objects: usize,
    pub events: usize,
}

async fn record_done(state: &AppState, code: &str, d: Deleted) -> Result<(), StoreError> {
    state
        .tokens
        .deletion_done(code, d.pages, d.objects, d.events)
        .await
}

/// Deletes what one Facebook user gave us (their pages' objects and records, the queued
/// events holding those pages' messages, the record of who they are).
#[derive(Debug, Serialize, Deserialize)]
pub struct DataDeletion {
    pub code: String,
    pub user: FacebookUserId,
}

impl Job for DataDeletion {
    const KIND: &'static str = "facebook_data_deletion";
    const POOL: Pool = Pool::Sync;
    /// Compliance work: never given up for a reason that can pass.
    const RETRY_FOREVER: bool = true;
    type Context = AppState;

    fn dedupe_key(&self) -> DedupeKey {
        DedupeKey::new(Self::KIND, &[&self.code])
    }

    fn group(&self) -> GroupKey {
        GroupKey::facebook_user(&self.user)
    }

    async fn run(state: &AppState, batch: Vec<Self>) -> Result<JobOutput, JobError> {
        let job = &batch[0];
        let retry = |e: &dyn std::fmt::Display| JobError::Retry(e.to_string());
        // 1. Nothing new may write to the pages (idempotent: a resumed job marks again).
        let pages = state
            .tokens
            .mark_pages_deleting(job.user.as_str(), "Facebook data deletion request")
            .await
            .map_err(|e| retry(&e))?;
        // Recorded where a restore of an older `tokens.db` cannot undo it.
        let what = Ledgered::FacebookUser {
            user: job.user.clone(),
        };
        state.ledger.record(what).await.map_err(|e| retry(&e))?;
        // 2–3. Wait for the pages' running jobs, then delete what they hold.
        let deleted = delete_marked_pages(state, &pages).await?;
        let mut merchants: Vec<MerchantId> = state
            .tokens
            .merchants_of_facebook_user(job.user.as_str())
            .await
            .map_err(|e| retry(&e))?;
        for &merchant in &merchants {
            state
                .tokens
                .delete_facebook_user(merchant)
                .await
                .map_err(|e| retry(&e))?;
        }
        merchants.extend(pages.iter().map(|(m, _)| *m));
        merchants.sort_unstable();
        merchants.dedup();
        let sessions = end_sessions(state, &merchants)
            .await
            .map_err(|e| retry(&e))?;
        record_done(state, &job.code, deleted)
            .await
            .map_err(|e| retry(&e))?;
        tracing::info!(
            pages = deleted.pages,
            objects = deleted.objects,
            events = deleted.events,
            sessions,
            "Facebook data deletion done"
        );
        Ok(JobOutput::done().with_result(deleted))
    }
}

/// Deletes the objects, queued work and records of `pages`, already marked `deleting` (so
/// nothing new writes to them): first waits for jobs of the pages that are running now
/// (`JobError::Later`), then objects (batched), the queued events that hold their messages and
/// the page rows. Shared by Meta's data deletion and a merchant's disconnect.
pub(super) async fn delete_marked_pages(
    state: &AppState,
    pages: &[(MerchantId, PageId)],
) -> Result<Deleted, JobError> {
    let retry = |e: &dyn std::fmt::Display| JobError::Retry(e.to_string());
    // 2. Jobs that started before the mark may still write: let them finish first.
    let (exact, prefixes) = groups_of(pages);
    let running = state
        .events
        .running_in_groups(exact.clone(), prefixes.clone())
        .await
        .map_err(|e| retry(&e))?
        // A raw delivery being fanned out may be about to queue messages of the pages.
        + state
            .events
            .running_of_kind(super::jobs::FacebookDelivery::KIND)
            .await
            .map_err(|e| retry(&e))?;
    if running > 0 {
        return Err(JobError::Later {
            after: WAIT_FOR_RUNNING,
            reason: format!("{running} job(s) of the pages are still running"),
        });
    }
    // 3. Objects, then queued events holding the pages' messages, then records.
    let mut deleted = Deleted {
        pages: pages.len(),
        ..Deleted::default()
    };
    for (merchant, page) in pages {
        let what = Ledgered::Page {
            page: page.clone(),
            merchant: *merchant,
        };
        state.ledger.record(what).await.map_err(|e| retry(&e))?;
        deleted.objects += state
            .objects
            .delete_prefix(&keys::page_prefix(merchant, page))
            .await
            .map_err(|e| retry(&e))?;
    }
    deleted.events += state
        .events
        .purge_groups(exact.clone(), prefixes.clone())
        .await
        .map_err(|e| retry(&e))?;
    deleted.events += purge_raw_deliveries(state, pages)
        .await
        .map_err(|e| retry(&e))?;
    for (_, page) in pages {
        state
            .tokens
            .delete_page(page)
            .await
            .map_err(|e| retry(&e))?;
    }
    // Anything queued for the pages while the above ran (they were marked, so it could
    // not write) goes too.
    deleted.events += state
        .events
        .purge_groups(exact, prefixes)
        .await
        .map_err(|e| retry(&e))?;
    for (_, page) in pages {
        let _ = state.events.untrack(GroupKey::page(page).as_str()).await;
    }
    Ok(deleted)
}

/// Ends the sessions of every merchant left with nothing connected; returns how many.
///
/// A merchant's session is its sign-in from the Shopify connect, and it is what lets a browser
/// connect pages to that merchant. When the Facebook user's data is deleted and the merchant has
/// no shop and no page left, nothing the session could show or act on remains: it ends, and
/// the merchant signs in again by connecting a shop. A merchant that still has a shop (or pages
/// granted by another Facebook user) keeps its session: the deletion was about one Facebook
/// user's data, and signing the shop owner out of a shop that still syncs would only confuse.
pub(super) async fn end_sessions(
    state: &AppState,
    merchants: &[MerchantId],
) -> Result<usize, StoreError> {
    let mut ended = 0;
    for merchant in merchants {
        if !state.tokens.merchant_has_connections(*merchant).await? {
            ended += state.sessions.revoke_merchant(merchant).await?;
        }
    }
    Ok(ended)
}

/// Queue groups that write to the pages: their metadata and every conversation.
fn groups_of(pages: &[(MerchantId, PageId)]) -> (Vec<String>, Vec<String>) {
    let exact = pages
        .iter()
        .map(|(_, p)| GroupKey::page(p).into_string())
        .collect();
    let prefixes = pages
        .iter()
        .map(|(_, p)| GroupKey::conversations_of(p))
        .collect();
    (exact, prefixes)
}

/// Raw deliveries not yet fanned out (or given up) may hold the pages' messages: their
/// entries for those pages are removed (the whole event when nothing else is left).
async fn purge_raw_deliveries(
    state: &AppState,
    pages: &[(MerchantId, PageId)],
) -> Result<usize, StoreError> {
    let ids: HashSet<&str> = pages.iter().map(|(_, p)| p.as_str()).collect();
    let mut purged = 0;
    for (event, payload) in state
        .events
        .unfinished_payloads(super::jobs::FacebookDelivery::KIND)
        .await?
    {
        let Ok(mut body) = serde_json::from_slice::<Value>(&payload) else {
            continue;
        };
        let Some(entries) = body.get_mut("entry").and_then(Value::as_array_mut) else {
            continue;
        };
        let before = entries.len();
        entries.retain(|e| {
            !e.get("id")
                .and_then(Value::as_str)
                .is_some_and(|id| ids.contains(id))
        });
        if entries.len() == before {
            continue;
        }
        let rewritten = (!entries.is_empty()).then(|| body.to_string().into_bytes());
        if state.events.rewrite_payload(event, rewritten).await? {
            purged += 1;
        }
    }
    Ok(purged)
}
