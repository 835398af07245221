//! `GET /facebook/login`, `GET /facebook/callback`, `GET|POST /facebook/webhook` and Meta's
//! data deletion callback with its status URL (SPEC §4): cookies, signatures and answers (JSON,
//! or a page for a browser) around `facebook::oauth`, `facebook::webhook` and
//! `facebook::deletion`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Form, FromRequest, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use axum_extra::extract::cookie::CookieJar;
use serde::Deserialize;
use serde_json::{json, Value};

use super::limits::{self, LoginLimiter};
use super::sorted_json;
use crate::crypto::{constant_time_eq, secret_bytes};
use crate::error::AppError;
use crate::facebook::deletion;
use crate::facebook::oauth::{self, CallbackQuery};
use crate::facebook::webhook::{self, reject};
use crate::facebook::{self};
use crate::oauth_state::Provider;
use crate::platforms::facebook::signature::{parse_signed_request, verify_webhook, SignatureCheck};
use crate::session::{binding_cookie, require_session, take_binding};
use crate::state::AppState;
use crate::web::{self, Wants};

pub async fn login(
    State(state): State<AppState>,
    jar: CookieJar,
) -> Result<(CookieJar, Redirect), AppError> {
    facebook::settings(&state)?;
    let merchant = require_session(&state, &jar).await?;
    let (url, browser) = oauth::authorize(&state, merchant).await?;
    let jar = jar.add(binding_cookie(
        Provider::Facebook,
        browser,
        state.config.secure_cookies(),
    ));
    Ok((jar, Redirect::temporary(url.as_str())))
}

pub async fn callback(
    State(state): State<AppState>,
    Query(q): Query<CallbackQuery>,
    wants: Wants,
    jar: CookieJar,
) -> Result<Response, AppError> {
    let settings = facebook::settings(&state)?;
    let (browser, jar) = take_binding(Provider::Facebook, jar);
    let authorized = oauth::verify(&state, q, browser.as_deref()).await?;
    let answer = oauth::connect(&state, settings, authorized).await?;
    if wants.html() {
        let page = web::callbacks::facebook(&state, &answer).await?;
        return Ok((jar, page).into_response());
    }
    Ok((jar, sorted_json(&answer)?).into_response())
}

/// Meta's subscription handshake: echo `hub.challenge` as plain text when the mode is
/// `subscribe` and the verify token matches; 403 otherwise.
pub async fn verify(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, AppError> {
    let settings = facebook::settings(&state)?;
    let mode_ok = q.get("hub.mode").map(String::as_str) == Some("subscribe");
    let token_ok = q
        .get("hub.verify_token")
        .is_some_and(|t| constant_time_eq(t.as_bytes(), secret_bytes(&settings.verify_token)));
    match (mode_ok && token_ok, q.get("hub.challenge")) {
        (true, Some(challenge)) => Ok((
            StatusCode::OK,
            [("content-type", "text/plain; charset=utf-8")],
            challenge.clone(),
        )
            .into_response()),
        _ => Ok((StatusCode::FORBIDDEN, "Verification failed").into_response()),
    }
}

/// A delivery: its signature over the raw bytes exactly as received, then only page events,
/// recorded durably before the 200.
pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, AppError> {
    let settings = facebook::settings(&state)?;
    match verify_webhook(secret_bytes(&settings.app_secret), &headers, &body) {
        SignatureCheck::Valid => {}
        SignatureCheck::Missing => {
            reject("missing_signature");
            return Err(AppError::Unauthorized(
                "missing X-Hub-Signature-256 header".into(),
            ));
        }
        SignatureCheck::Invalid => {
            reject("bad_signature");
            return Err(AppError::Unauthorized("invalid webhook signature".into()));
        }
    }
    let parsed: Value = serde_json::from_slice(&body).map_err(|_| {
        reject("malformed");
        AppError::BadRequest("body is not JSON".into())
    })?;
    if parsed.get("object").and_then(Value::as_str) != Some("page") {
        reject("not_page");
        return Err(AppError::BadRequest(
            "Invalid webhook object: expected \"page\"".into(),
        ));
    }
    webhook::accept(&state, &body).await?;
    Ok(Json(json!({"status": "success"})))
}

#[derive(Deserialize)]
pub struct DeletionForm {
    signed_request: Option<String>,
}

/// `POST /facebook/data-deletion`: Meta gets its confirmation code and status URL at once.
pub async fn deletion_request(
    State(state): State<AppState>,
    Form(form): Form<DeletionForm>,
) -> Result<Json<Value>, AppError> {
    let settings = facebook::settings(&state)?;
    let signed = form
        .signed_request
        .ok_or_else(|| AppError::BadRequest("missing signed_request".into()))?;
    let requested = deletion::request(&state, settings, &signed).await?;
    Ok(Json(json!({
        "url": requested.url.as_str(),
        "confirmation_code": requested.confirmation_code,
    })))
}

/// Route layer of `POST /facebook/data-deletion`: a request whose `signed_request` verifies
/// with the app secret is Meta's and is never rate-limited (Meta calls from a few addresses
/// that every app shares, and a deletion must not be turned away); anything else counts
/// against the client's allowance as the logins do. The body is read here to verify it, then
/// handed on unchanged.
pub async fn limit_unsigned_deletions(
    State((limiter, state)): State<(Arc<LoginLimiter>, AppState)>,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    // The extractor honours the router's body limit (413) as the handler's form would.
    let bytes = match Bytes::from_request(Request::from_parts(parts.clone(), body), &()).await {
        Ok(b) => b,
        Err(rejection) => {
            let message = rejection.body_text();
            return match rejection.status() {
                StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge(message),
                _ => AppError::BadRequest(message),
            }
            .into_response();
        }
    };
    let signed = signed_by_meta(&state, &bytes);
    let req = Request::from_parts(parts, Body::from(bytes));
    if signed {
        return next.run(req).await;
    }
    limits::limit(&limiter, req, next).await
}

/// Whether a data-deletion form carries a `signed_request` that verifies with the app secret.
fn signed_by_meta(state: &AppState, body: &[u8]) -> bool {
    let Some(settings) = &state.config.facebook else {
        return false;
    };
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == "signed_request")
        .is_some_and(|(_, signed)| {
            parse_signed_request(secret_bytes(&settings.app_secret), &signed).is_some()
        })
}

#[derive(Deserialize)]
pub struct StatusQuery {
    code: Option<String>,
}

/// `GET /facebook/data-deletion/status?code=…`: where a deletion stands.
pub async fn deletion_status(
    State(state): State<AppState>,
    Query(q): Query<StatusQuery>,
) -> Result<Json<Value>, AppError> {
    let code = q
        .code
        .filter(|c| !c.is_empty() && c.len() <= 64)
        .ok_or_else(|| AppError::BadRequest("missing code".into()))?;
    let row = state
        .tokens
        .deletion_status(&code)
        .await?
        .ok_or_else(|| AppError::NotFound("unknown confirmation code".into()))?;
    Ok(Json(json!({
        "confirmation_code": code,
        "status": row.status,
        "requested_at": row.requested_at,
        "completed_at": row.completed_at,
        "pages_deleted": row.pages_deleted,
        "objects_deleted": row.objects_deleted,
    })))
}
