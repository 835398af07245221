//! Connecting a merchant's Facebook Pages (SPEC §4; the routes are `routes::facebook`).
//!
//! The callback verifies (state, browser binding), connects the user (code → long-lived
//! token, every page stored), sets each page up (app subscription, metadata, webhook
//! self-tests; the initial conversation poll and the self-test verification are queued) and
//! answers within seconds whatever the number of conversations: work still running reports
//! `{"status": "pending"}`.

use std::time::Duration;

use futures::StreamExt;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use super::answer::{FacebookConnected, GrantedPage, PageChecks, PageOutcome};
use super::jobs::{PagePoll, PageRefresh, PollReason};
use super::moves;
use super::pages;
use super::selftest::{post_test_deliveries, SelfTestCleanup};
use crate::config::{FacebookSettings, NotConfigured};
use crate::connect::{ConnectError, Step};
use crate::ids::MerchantId;
use crate::ids::{FacebookUserId, PageId};
use crate::jobs::{GroupKey, Job};
use crate::oauth_state::Provider;
use crate::objects::keys;
use crate::platforms::facebook::client::{GraphClient, GraphError};
use crate::state::AppState;
use crate::store::events::{EventId, EventStatus, Outcome, RunId, RunKind, RunTrigger};
use crate::store::now_millis;
use crate::store::tokens::SavedPage;

/// Why a page the user connected to another account was not moved by this connect.
pub const MOVE_NEEDS_CONFIRMATION: &str = "this page is connected to another account; you connected it there, so you can move it here from your account page";

/// Pages set up at once (each is a handful of Graph calls).
const PAGES_AT_ONCE: usize = 8;
/// How long the answer waits, in all, for the self-test verifications before reporting them
/// pending (they normally take milliseconds: one queued merge).
const ANSWER_WAIT: Duration = Duration::from_secs(3);
/// How long a page's set-up waits for its metadata refresh job (one Graph call).
const METADATA_WAIT: Duration = Duration::from_secs(4);

fn graph(state: &AppState) -> Result<&GraphClient, ConnectError> {
    state
        .graph
        .as_ref()
        .ok_or_else(|| NotConfigured("Facebook is not configured").into())
}

/// The Meta dialog for a signed-in `merchant`, and the browser binding its cookie must carry
/// back (see `oauth_state`).
pub async fn authorize(
    state: &AppState,
    merchant: MerchantId,
) -> Result<(Url, String), ConnectError> {
    let (token, browser) = state
        .states
        .issue(Provider::Facebook, Some(merchant), None)
        .await?;
    Ok((graph(state)?.dialog_url(&token), browser))
}

/// The dialog's answer, as the callback's query.
#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

fn upstream(e: GraphError) -> ConnectError {
    tracing::warn!(error = %e, "Facebook OAuth step failed");
    ConnectError::Upstream(format!(
        "Facebook login failed ({e}); start the connection again"
    ))
}

/// A dialog answer for a flow this browser started.
pub struct Authorized {
    merchant: MerchantId,
    code: String,
}

/// Checks the dialog's answer: granted, with a state this `browser` was given.
pub async fn verify(
    state: &AppState,
    q: CallbackQuery,
    browser: Option<&str>,
) -> Result<Authorized, ConnectError> {
    if let Some(e) = q.error {
        // The merchant declined or Meta refused; say so plainly.
        return Err(ConnectError::Refused(format!(
            "Facebook authorization was not granted: {}",
            q.error_description.unwrap_or(e)
        )));
    }
    let code = q
        .code
        .ok_or_else(|| ConnectError::Refused("Missing code parameter".into()))?;
    let state_token = q
        .state
        .ok_or_else(|| ConnectError::Refused("Missing state parameter".into()))?;
    let claims = state
        .states
        .consume(&state_token, Provider::Facebook, browser)
        .await?;
    let merchant = claims
        .merchant
        .ok_or_else(|| ConnectError::Refused("Invalid UUID in state token".into()))?;
    Ok(Authorized { merchant, code })
}

/// Connects the user and every page they granted, and answers.
pub async fn connect(
    state: &AppState,
    settings: &FacebookSettings,
    authorized: Authorized,
) -> Result<FacebookConnected, ConnectError> {
    let user = connect_user(state, authorized).await?;
    let merchant = user.merchant;
    // The initial polls of every page are one run: the answer reports it done or pending.
    let run = state
        .events
        .create_run(RunKind::Poll, RunTrigger::Connect)
        .await?;
    let stored: Vec<(PageId, SecretString)> = user
        .pages
        .iter()
        .filter_map(|p| match &p.grant {
            Grant::Stored(page, token) => Some((page.clone(), token.clone())),
            Grant::Refused(_) => None,
        })
        .collect();
    let reports: Vec<PageSetup> = futures::stream::iter(stored)
        .map(|(page, token)| async move {
            set_up_page(state, settings, merchant, &page, &token, run).await
        })
        .buffered(PAGES_AT_ONCE)
        .collect()
        .await;
    tracing::info!(%merchant, pages = user.pages.len(), "Facebook connected");
    Ok(answer(state, user, reports, run).await)
}

/// The user's token stored and every page they granted stored with its token.
struct ConnectedUser {
    merchant: MerchantId,
    /// In Graph's order.
    pages: Vec<Listed>,
}

/// A page as Graph listed it (without its token), and whether it was stored.
struct Listed {
    public: Value,
    id: String,
    name: Option<String>,
    grant: Grant,
}

enum Grant {
    Stored(PageId, SecretString),
    Refused(Step),
}

async fn connect_user(state: &AppState, a: Authorized) -> Result<ConnectedUser, ConnectError> {
    let graph = graph(state)?;
    let (user_token, fb_user) = user_token(graph, &a.code).await?;
    let fb_user_id = fb_user.as_ref().map(|u| u.to_string());
    // The user token itself is not stored: it lists the pages below and is then dropped (the
    // page tokens do all later work). It is still exchanged for a long-lived one because page
    // tokens listed with a long-lived user token do not expire.
    state
        .tokens
        .save_facebook_user(a.merchant, fb_user_id)
        .await?;

    // Every page the merchant granted, following paging to the end.
    let accounts = graph
        .get_page_fields("me/accounts", "access_token", &user_token, true)
        .await
        .map_err(upstream)?;
    let mut pages = Vec::with_capacity(accounts.len());
    for page_obj in accounts {
        // Every page is stored before the per-page work, so a client that gives up waiting
        // still leaves every page connected (webhooks and polls pick them up).
        pages.push(store_page(state, a.merchant, fb_user.as_ref(), page_obj).await?);
    }
    Ok(ConnectedUser {
        merchant: a.merchant,
        pages,
    })
}

/// Code → short-lived → long-lived user token, and who the user is. Only a valid Graph id is
/// kept: it decides data deletion and page moves.
async fn user_token(
    graph: &GraphClient,
    code: &str,
) -> Result<(SecretString, Option<FacebookUserId>), ConnectError> {
    let short = graph.exchange_code(code).await.map_err(upstream)?;
    let long = graph
        .long_lived(&SecretString::from(short.access_token))
        .await
        .map_err(upstream)?;
    let user_token = SecretString::from(long.access_token);
    let me = graph
        .get(graph.url("me", &[("fields", "id,name")]), &user_token)
        .await
        .map_err(upstream)?;
    let fb_user = me
        .get("id")
        .and_then(Value::as_str)
        .and_then(|id| FacebookUserId::parse(id).ok());
    Ok((user_token, fb_user))
}

/// Stores one listed page with its token for `merchant`, unless it cannot or may not be.
async fn store_page(
    state: &AppState,
    merchant: MerchantId,
    fb_user: Option<&FacebookUserId>,
    mut page_obj: Value,
) -> Result<Listed, ConnectError> {
    let token = page_obj
        .as_object_mut()
        .and_then(|o| o.remove("access_token"))
        .and_then(|t| t.as_str().map(str::to_string));
    let raw_id = page_obj
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let name = page_obj
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_string);
    let listed = |grant| Listed {
        public: page_obj.clone(),
        id: raw_id.clone(),
        name: name.clone(),
        grant,
    };
    let (Ok(page), Some(token)) = (PageId::parse(&raw_id), token) else {
        tracing::warn!(page = %raw_id, "page without a valid id or token skipped");
        let why = Step::failed("invalid page id or missing page token");
        return Ok(listed(Grant::Refused(why)));
    };
    let token = SecretString::from(token);
    let fb_user_id = fb_user.map(|u| u.to_string());
    let saved = state
        .tokens
        .save_page(&page, merchant, fb_user_id, name.clone(), &token)
        .await?;
    let refused = match saved {
        SavedPage::Saved(_) => None,
        SavedPage::Moved { from, move_id } => {
            // (A connect does not move pages; kept so a store that did is still cleaned up.)
            // `Moved` needs the same user on both sides, so there is one.
            if let Some(user) = fb_user.cloned() {
                moves::moved(state, &page, from, merchant, user, move_id).await?;
            }
            None
        }
        SavedPage::MoveNeedsConfirmation => {
            tracing::info!(%page, %merchant, "page connected to another merchant by this same user: it moves only when they confirm it");
            Some(Step::failed(MOVE_NEEDS_CONFIRMATION))
        }
        SavedPage::OwnedElsewhere => {
            tracing::warn!(%page, %merchant, "page connected to another merchant by another user: not moved");
            metrics::counter!("facebook_page_takeovers_refused_total").increment(1);
            Some(Step::failed("this page is connected to another account; only the person who connected it there can move it here"))
        }
        SavedPage::BeingDeleted => Some(Step::failed(
            "this page's data is being deleted; connect it again in a minute",
        )),
    };
    Ok(listed(match refused {
        Some(why) => Grant::Refused(why),
        None => Grant::Stored(page, token),
    }))
}

/// What setting up one page did; the queued parts are reported by their job ids.
struct PageSetup {
    webhook_test: [Step; 2],
    metadata_poll: Step,
    /// Whether the initial poll was queued.
    polling: bool,
    cleanup: Option<EventId>,
    /// A failure that already decides the page's upload status.
    failed: Option<Step>,
}

async fn set_up_page(
    state: &AppState,
    settings: &FacebookSettings,
    merchant: MerchantId,
    page: &PageId,
    token: &SecretString,
    run: RunId,
) -> PageSetup {
    let mut failed = None;
    if let Ok(graph) = graph(state) {
        if let Err(e) = pages::ensure_subscribed(graph, page, token).await {
            failed = Some(Step::failed_incident(
                "could not subscribe the app to the page",
                &e,
            ));
        }
    }
    let posted = post_test_deliveries(state, settings, page).await;
    let message_ok = posted.message.is_success();
    let hooks_ok = posted.metadata.is_success() && message_ok;
    // Nothing to verify or remove when the test message was not accepted.
    let cleanup = message_ok.then(|| SelfTestCleanup::new(page.clone(), posted.mid.clone()));
    let queued = queue_page_jobs(state, page, run, cleanup).await;
    let mut setup = PageSetup {
        webhook_test: [posted.metadata, posted.message],
        metadata_poll: Step::Pending,
        polling: queued.is_some(),
        cleanup: queued.as_ref().and_then(|q| q.cleanup),
        failed,
    };
    if queued.is_none() {
        setup
            .failed
            .get_or_insert_with(|| Step::failed("the initial poll could not be queued"));
    }
    setup.metadata_poll = match queued.and_then(|q| q.refresh) {
        Some(job) => job_status(
            state
                .events
                .wait_for(job, METADATA_WAIT)
                .await
                .ok()
                .flatten(),
        ),
        None => Step::error("the metadata refresh could not be queued"),
    };
    if setup.failed.is_none() && (!setup.metadata_poll.is_success() || !hooks_ok) {
        setup.failed = Some(Step::failed("Tests failed"));
    }
    if setup.failed.is_none() {
        setup.failed = verify_upload(state, merchant, page).await;
    }
    setup
}

/// The jobs a page's set-up queued.
struct Queued {
    refresh: Option<EventId>,
    cleanup: Option<EventId>,
}

/// Queues the page's metadata refresh, its initial poll (part of `run`) and the self-test's
/// clean-up; `None` when they could not be queued.
async fn queue_page_jobs(
    state: &AppState,
    page: &PageId,
    run: RunId,
    cleanup: Option<SelfTestCleanup>,
) -> Option<Queued> {
    let poll = PagePoll {
        page: page.clone(),
        reason: PollReason::Initial { at: now_millis() },
    };
    // The metadata is read by a job in the page's group too (never beside a poll or a
    // deletion of the page), queued first so it runs first.
    let mut jobs = vec![
        PageRefresh::connect(page.clone()).to_event(),
        poll.to_event().in_run(Some(run)),
    ];
    jobs.extend(cleanup.map(|c| c.to_event()));
    let ids = match state.events.enqueue_all(jobs).await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::error!(%page, error = %e, "could not queue the page's initial poll");
            return None;
        }
    };
    // The merchant's pages follow the initial poll and its conversations.
    if let Some(poll) = ids.get(1) {
        if let Err(e) = state
            .events
            .track(GroupKey::page(page).into_string(), poll.id(), Some(run))
            .await
        {
            tracing::warn!(%page, error = %e, "the initial poll's progress will not be shown");
        }
    }
    Some(Queued {
        refresh: ids.first().map(|e| e.id()),
        cleanup: ids.get(2).map(|e| e.id()),
    })
}

/// A failure when the page's metadata object is not in the object store.
async fn verify_upload(state: &AppState, merchant: MerchantId, page: &PageId) -> Option<Step> {
    let meta_key = keys::page_metadata(&merchant, page);
    match state.objects.head_sha256(&meta_key).await {
        Ok(Some(_)) => None,
        Ok(None) => Some(Step::failed("Metadata upload not found")),
        Err(e) => Some(Step::failed_incident(
            "the upload could not be verified",
            &e,
        )),
    }
}

/// A queued job's verdict (its result) when done, `pending` while it runs.
fn job_status(outcome: Option<Outcome>) -> Step {
    match outcome {
        Some(o) if o.status == EventStatus::Done => match o.result {
            Some(r) if r.get("status").is_some() => serde_json::from_value(r)
                .unwrap_or_else(|e| Step::error_incident("the job's result could not be read", &e)),
            _ => Step::Success,
        },
        Some(o) if o.status.is_finished() => {
            Step::error_incident("the job failed", &o.last_error.unwrap_or_default())
        }
        Some(_) => Step::Pending,
        None => Step::error("the job is not queued"),
    }
}

/// The page's part of the connect's poll run: `success` once its poll and every conversation
/// it queued are done, `pending` while any runs.
fn page_poll_status(jobs: &[Outcome], page: &PageId) -> Step {
    let meta = GroupKey::page(page).into_string();
    let convs = GroupKey::conversations_of(page);
    let mine: Vec<&Outcome> = jobs
        .iter()
        .filter(|j| j.group_key == meta || j.group_key.starts_with(&convs))
        .collect();
    if let Some(failed) = mine
        .iter()
        .find(|j| matches!(j.status, EventStatus::Failed | EventStatus::Dead))
    {
        return Step::error_incident(
            "the poll failed; the daily poll will try again",
            &failed.last_error.clone().unwrap_or_default(),
        );
    }
    if mine.is_empty() || mine.iter().any(|j| !j.status.is_finished()) {
        Step::Pending
    } else {
        Step::Success
    }
}

/// Each page's checks, waiting (within `ANSWER_WAIT` in all) for the self-test verifications.
async fn answer(
    state: &AppState,
    user: ConnectedUser,
    reports: Vec<PageSetup>,
    run: RunId,
) -> FacebookConnected {
    let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
    let mut reports = reports.into_iter();
    let mut pages = Vec::with_capacity(user.pages.len());
    for listed in user.pages {
        let outcome = match listed.grant {
            Grant::Refused(why) => PageOutcome::Refused(why),
            Grant::Stored(page, _) => {
                let Some(r) = reports.next() else {
                    continue;
                };
                PageOutcome::SetUp(Box::new(checks(state, &page, r, run, deadline).await))
            }
        };
        pages.push(GrantedPage {
            listed: listed.public,
            id: listed.id,
            name: listed.name,
            outcome,
        });
    }
    FacebookConnected {
        user_uuid: user.merchant,
        pages,
    }
}

async fn checks(
    state: &AppState,
    page: &PageId,
    r: PageSetup,
    run: RunId,
    deadline: tokio::time::Instant,
) -> PageChecks {
    let upload = match (r.failed, r.cleanup) {
        (Some(failed), _) => failed,
        (None, Some(job)) => {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            job_status(state.events.wait_for(job, left).await.ok().flatten())
        }
        (None, None) => Step::failed("the self-test could not be queued"),
    };
    let conversations_poll = if r.polling {
        match state.events.run_jobs(run).await {
            Ok(jobs) => page_poll_status(&jobs, page),
            Err(e) => Step::error_incident("the poll's progress could not be read", &e),
        }
    } else {
        Step::error("the initial poll could not be queued")
    };
    let [metadata_webhook, message_webhook] = r.webhook_test;
    PageChecks {
        metadata_webhook,
        message_webhook,
        metadata_poll: r.metadata_poll,
        conversations_poll,
        upload,
    }
}
