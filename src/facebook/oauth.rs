//! `GET /facebook/login` and `GET /facebook/callback` (SPEC §4).
//!
//! The callback verifies (state, browser binding), connects the user (code → long-lived
//! token, every page stored), sets each page up (app subscription, metadata, webhook
//! self-tests; the initial conversation poll and the self-test verification are queued) and
//! answers within seconds whatever the number of conversations: work still running reports
//! `{"status": "pending"}`.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::response::Redirect;
use axum::Json;
use axum_extra::extract::cookie::CookieJar;
use futures::StreamExt;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::jobs::{PagePoll, PageRefresh, PollReason};
use super::moves::{self, MovedPageCleanup};
use super::pages;
use super::selftest::{post_test_deliveries, SelfTestCleanup};
use crate::config::FacebookSettings;
use crate::error::{incident, AppError};
use crate::jobs::GroupKey;
use crate::jobs::Job;
use crate::oauth_state::Provider;
use crate::objects::keys::{self, GraphId, PageId};
use crate::platforms::facebook::client::{GraphClient, GraphError};
use crate::routes::session::{binding_cookie, require_session, take_binding};
use crate::shopify::oauth::state_error;
use crate::state::AppState;
use crate::store::events::{EventId, EventStatus, Outcome, RunId, RunKind, RunTrigger};
use crate::store::now_millis;
use crate::store::tokens::SavedPage;

/// Pages set up at once (each is a handful of Graph calls).
const PAGES_AT_ONCE: usize = 8;
/// How long the answer waits, in all, for the self-test verifications before reporting them
/// pending (they normally take milliseconds: one queued merge).
const ANSWER_WAIT: Duration = Duration::from_secs(3);
/// How long a page's set-up waits for its metadata refresh job (one Graph call).
const METADATA_WAIT: Duration = Duration::from_secs(4);

fn graph(state: &AppState) -> Result<&GraphClient, AppError> {
    state
        .graph
        .as_ref()
        .ok_or_else(|| AppError::NotConfigured("Facebook is not configured".into()))
}

pub async fn login(
    State(state): State<AppState>,
    jar: CookieJar,
) -> Result<(CookieJar, Redirect), AppError> {
    super::settings(&state)?;
    let merchant = require_session(&state, &jar).await?;
    let (token, browser) = state
        .states
        .issue(Provider::Facebook, Some(merchant), None)
        .await
        .map_err(state_error)?;
    let url = graph(&state)?.dialog_url(&token);
    let jar = jar.add(binding_cookie(
        Provider::Facebook,
        browser,
        state.config.secure_cookies(),
    ));
    Ok((jar, Redirect::temporary(url.as_str())))
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

fn ok() -> Value {
    json!({"status": "success"})
}

fn err(kind: &str, m: impl std::fmt::Display) -> Value {
    json!({"status": kind, "message": m.to_string()})
}

fn pending() -> Value {
    json!({"status": "pending"})
}

fn upstream(e: GraphError) -> AppError {
    tracing::warn!(error = %e, "Facebook OAuth step failed");
    AppError::Upstream(format!(
        "Facebook login failed ({e}); start the connection again"
    ))
}

pub async fn callback(
    State(state): State<AppState>,
    Query(q): Query<CallbackQuery>,
    wants: crate::web::Wants,
    jar: CookieJar,
) -> Result<axum::response::Response, AppError> {
    let settings = super::settings(&state)?;
    let (authorized, jar) = verify(&state, q, jar).await?;
    let connected = connect_user(&state, authorized).await?;
    let merchant = connected.merchant;
    let state_ref = &state;
    // The initial polls of every page are one run: the answer reports it done or pending.
    let run = state
        .events
        .create_run(RunKind::Poll, RunTrigger::Connect)
        .await?;
    let reports: Vec<PageSetup> = futures::stream::iter(connected.pages.clone())
        .map(|(page, token)| async move {
            set_up_page(state_ref, settings, merchant, &page, &token, run).await
        })
        .buffered(PAGES_AT_ONCE)
        .collect()
        .await;
    tracing::info!(merchant = %connected.merchant, pages = connected.public_pages.len(), "Facebook connected");
    let body = answer(&state, connected, reports, run).await;
    if wants.html() {
        let page = crate::web::callbacks::facebook(&state, &body).await?;
        return Ok((jar, page).into_response());
    }
    Ok((jar, Json(body)).into_response())
}

/// A dialog answer for a flow this browser started.
struct Authorized {
    merchant: Uuid,
    code: String,
}

async fn verify(
    state: &AppState,
    q: CallbackQuery,
    jar: CookieJar,
) -> Result<(Authorized, CookieJar), AppError> {
    if let Some(e) = q.error {
        // The merchant declined or Meta refused; say so plainly.
        return Err(AppError::BadRequest(format!(
            "Facebook authorization was not granted: {}",
            q.error_description.unwrap_or(e)
        )));
    }
    let code = q
        .code
        .ok_or_else(|| AppError::BadRequest("Missing code parameter".into()))?;
    let state_token = q
        .state
        .ok_or_else(|| AppError::BadRequest("Missing state parameter".into()))?;
    let (browser, jar) = take_binding(Provider::Facebook, jar);
    let claims = state
        .states
        .consume(&state_token, Provider::Facebook, browser.as_deref())
        .await
        .map_err(state_error)?;
    let merchant = claims
        .merchant
        .ok_or_else(|| AppError::BadRequest("Invalid UUID in state token".into()))?;
    Ok((Authorized { merchant, code }, jar))
}

/// The user's token stored and every page they granted stored with its token.
struct ConnectedUser {
    merchant: Uuid,
    /// The pages as Graph listed them, without tokens (the answer's `pages.data`).
    public_pages: Vec<Value>,
    /// Pages that could not be stored (no valid id or token), with their upload status.
    rejected: Vec<Value>,
    pages: Vec<(PageId, SecretString)>,
}

async fn connect_user(state: &AppState, a: Authorized) -> Result<ConnectedUser, AppError> {
    let graph = graph(state)?;
    let short = graph.exchange_code(&a.code).await.map_err(upstream)?;
    let long = graph
        .long_lived(&SecretString::from(short.access_token))
        .await
        .map_err(upstream)?;
    let user_token = SecretString::from(long.access_token);
    let me = graph
        .get(graph.url("me", &[("fields", "id,name")]), &user_token)
        .await
        .map_err(upstream)?;
    // Only a valid Graph id is kept: it decides data deletion and page moves.
    let fb_user = me
        .get("id")
        .and_then(Value::as_str)
        .and_then(|id| GraphId::parse(id).ok());
    let fb_user_id = fb_user.as_ref().map(|u| u.to_string());
    // The user token itself is not stored: it lists the pages below and is then dropped (the
    // page tokens do all later work). It is still exchanged for a long-lived one because page
    // tokens listed with a long-lived user token do not expire.
    state
        .tokens
        .save_facebook_user(a.merchant, fb_user_id.clone())
        .await?;

    // Every page the merchant granted, following paging to the end.
    let accounts = graph
        .get_page_fields("me/accounts", "access_token", &user_token, true)
        .await
        .map_err(upstream)?;
    let mut out = ConnectedUser {
        merchant: a.merchant,
        public_pages: Vec::new(),
        rejected: Vec::new(),
        pages: Vec::new(),
    };
    for mut page_obj in accounts {
        let token = page_obj
            .as_object_mut()
            .and_then(|o| o.remove("access_token"))
            .and_then(|t| t.as_str().map(str::to_string));
        let raw_id = page_obj
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        out.public_pages.push(page_obj.clone());
        let (Ok(page), Some(token)) = (PageId::parse(&raw_id), token) else {
            tracing::warn!(page = %raw_id, "page without a valid id or token skipped");
            out.rejected.push(json!({"page_id": raw_id, "result": err("failed", "invalid page id or missing page token")}));
            continue;
        };
        let token = SecretString::from(token);
        let name = page_obj
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_string);
        // Every page is stored before the per-page work, so a client that gives up waiting
        // still leaves every page connected (webhooks and polls pick them up).
        match state
            .tokens
            .save_page(&page, a.merchant, fb_user_id.clone(), name, &token)
            .await?
        {
            SavedPage::Saved(_) => out.pages.push((page, token)),
            SavedPage::Moved { from, move_id } => {
                moves::record(&page, from, a.merchant);
                // `Moved` needs the same user on both sides, so there is one.
                if let Some(user) = fb_user.clone() {
                    let cleanup = MovedPageCleanup {
                        page: page.clone(),
                        from,
                        user,
                        move_id,
                    };
                    state.events.enqueue(cleanup.to_event()).await?;
                }
                out.pages.push((page, token))
            }
            SavedPage::OwnedElsewhere => {
                tracing::warn!(%page, merchant = %a.merchant, "page connected to another merchant by another user: not moved");
                metrics::counter!("facebook_page_takeovers_refused_total").increment(1);
                out.rejected.push(json!({
                    "page_id": page.as_str(),
                    "result": err("failed", "this page is connected to another account; only the person who connected it there can move it here"),
                }))
            }
            SavedPage::BeingDeleted => out.rejected.push(json!({
                "page_id": page.as_str(),
                "result": err("failed", "this page's data is being deleted; connect it again in a minute"),
            })),
        }
    }
    Ok(out)
}

/// What setting up one page did; the queued parts are reported by their job ids.
struct PageSetup {
    page: PageId,
    webhook_test: [Value; 2],
    metadata_poll: Value,
    /// Whether the initial poll was queued.
    polling: bool,
    cleanup: Option<EventId>,
    /// A failure that already decides the page's upload status.
    failed: Option<Value>,
}

async fn set_up_page(
    state: &AppState,
    settings: &FacebookSettings,
    merchant: Uuid,
    page: &PageId,
    token: &SecretString,
    run: RunId,
) -> PageSetup {
    let mut setup = PageSetup {
        page: page.clone(),
        webhook_test: [Value::Null, Value::Null],
        metadata_poll: Value::Null,
        polling: false,
        cleanup: None,
        failed: None,
    };
    if let Ok(graph) = graph(state) {
        if let Err(e) = pages::ensure_subscribed(graph, page, token).await {
            setup.failed = Some(incident(
                "failed",
                "could not subscribe the app to the page",
                &e,
            ));
        }
    }
    let posted = post_test_deliveries(state, settings, page).await;
    let message_ok = posted.message["status"] == "success";
    let hooks_ok = posted.metadata["status"] == "success" && message_ok;
    setup.webhook_test = [posted.metadata, posted.message];

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
    // Nothing to verify or remove when the test message was not accepted.
    if message_ok {
        jobs.push(SelfTestCleanup::new(page.clone(), posted.mid).to_event());
    }
    let mut refresh = None;
    match state.events.enqueue_all(jobs).await {
        Ok(ids) => {
            setup.polling = true;
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
            refresh = ids.first().map(|e| e.id());
            setup.cleanup = ids.get(2).map(|e| e.id());
        }
        Err(e) => {
            tracing::error!(%page, error = %e, "could not queue the page's initial poll");
            setup
                .failed
                .get_or_insert_with(|| err("failed", "the initial poll could not be queued"));
        }
    }
    let meta = match refresh {
        Some(job) => job_status(
            state
                .events
                .wait_for(job, METADATA_WAIT)
                .await
                .ok()
                .flatten(),
        ),
        None => err("error", "the metadata refresh could not be queued"),
    };
    let meta_ok = meta["status"] == "success";
    setup.metadata_poll = meta;
    if setup.failed.is_none() && (!meta_ok || !hooks_ok) {
        setup.failed = Some(err("failed", "Tests failed"));
    }
    if setup.failed.is_none() {
        let meta_key = keys::page_metadata(&merchant, page);
        match state.objects.head_sha256(&meta_key).await {
            Ok(Some(_)) => {}
            Ok(None) => setup.failed = Some(err("failed", "Metadata upload not found")),
            Err(e) => {
                setup.failed = Some(incident("failed", "the upload could not be verified", &e))
            }
        }
    }
    setup
}

/// A queued job's verdict (its result) when done, `pending` while it runs.
fn job_status(outcome: Option<Outcome>) -> Value {
    match outcome {
        Some(o) if o.status == EventStatus::Done => match o.result {
            Some(r) if r.get("status").is_some() => r,
            _ => ok(),
        },
        Some(o) if o.status.is_finished() => {
            incident("error", "the job failed", &o.last_error.unwrap_or_default())
        }
        Some(_) => pending(),
        None => err("error", "the job is not queued"),
    }
}

/// The page's part of the connect's poll run: `success` once its poll and every conversation
/// it queued are done, `pending` while any runs.
fn page_poll_status(jobs: &[Outcome], page: &PageId) -> Value {
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
        return incident(
            "error",
            "the poll failed; the daily poll will try again",
            &failed.last_error.clone().unwrap_or_default(),
        );
    }
    if mine.is_empty() || mine.iter().any(|j| !j.status.is_finished()) {
        pending()
    } else {
        ok()
    }
}

async fn answer(
    state: &AppState,
    user: ConnectedUser,
    reports: Vec<PageSetup>,
    run: RunId,
) -> Value {
    let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
    let mut webhook_test = Vec::new();
    let mut polling_test = Vec::new();
    let mut upload_status = user.rejected;
    for r in reports {
        let id = r.page.as_str();
        let [meta_hook, msg_hook] = r.webhook_test;
        webhook_test.push(json!({"page_id": id, "type": "metadata", "result": meta_hook}));
        webhook_test.push(json!({"page_id": id, "type": "messages", "result": msg_hook}));
        polling_test.push(json!({"page_id": id, "type": "metadata", "result": r.metadata_poll}));
        let upload = match (r.failed, r.cleanup) {
            (Some(failed), _) => failed,
            (None, Some(job)) => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                job_status(state.events.wait_for(job, left).await.ok().flatten())
            }
            (None, None) => err("failed", "the self-test could not be queued"),
        };
        let poll = if r.polling {
            match state.events.run_jobs(run).await {
                Ok(jobs) => page_poll_status(&jobs, &r.page),
                Err(e) => incident("error", "the poll's progress could not be read", &e),
            }
        } else {
            err("error", "the initial poll could not be queued")
        };
        polling_test.push(json!({"page_id": id, "type": "conversations", "result": poll}));
        upload_status.push(json!({"page_id": id, "result": upload}));
    }
    json!({
        "user_uuid": user.merchant,
        "pages": {"data": user.public_pages, "paging": {}},
        "webhook_test": webhook_test,
        "polling_test": polling_test,
        "upload_status": upload_status,
    })
}
