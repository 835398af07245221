//! `GET /facebook/webhook` (verify handshake) and `POST /facebook/webhook` (deliveries).

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::jobs::FacebookDelivery;
use crate::crypto::{constant_time_eq, secret_bytes};
use crate::error::AppError;
use crate::jobs::Job;
use crate::platforms::facebook::signature::{verify_webhook, SignatureCheck};
use crate::state::AppState;

fn reject(reason: &'static str) {
    metrics::counter!("webhooks_rejected_total", "source" => "facebook", "reason" => reason)
        .increment(1);
}

/// Meta's subscription handshake: echo `hub.challenge` as plain text when the mode is
/// `subscribe` and the verify token matches; 403 otherwise.
pub async fn verify(
    State(state): State<AppState>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Result<Response, AppError> {
    let settings = super::settings(&state)?;
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

/// The delivery itself as a job, exactly as received.
fn raw_delivery(body: &[u8]) -> Result<crate::store::events::NewEvent, AppError> {
    let raw = String::from_utf8(body.to_vec())
        .ok()
        .and_then(|s| serde_json::value::RawValue::from_string(s).ok())
        .ok_or_else(|| AppError::BadRequest("body is not JSON".into()))?;
    Ok(FacebookDelivery(raw).to_event())
}

pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, AppError> {
    let settings = super::settings(&state)?;
    // 1. Signature over the raw bytes exactly as received.
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
    // 2. Only page events.
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
    // 3. Fanned out here into one job per conversation and page, all recorded durably in one
    // commit before the 200 (a redelivery's jobs have the same dedupe keys: no-ops). A
    // delivery with parts that cannot become jobs is also kept raw: its job records the
    // reasons (failing when nothing in it was usable), so operators see them.
    let jobs = match super::process::fan_out(&body) {
        Ok(f) if f.rejected.is_empty() => f.events,
        Ok(f) => {
            reject("invalid_items");
            let mut jobs = f.events;
            jobs.push(raw_delivery(&body)?);
            jobs
        }
        Err(_) => vec![raw_delivery(&body)?],
    };
    if jobs.is_empty() {
        // Only receipts and the like, which are not conversation entries: nothing to do and
        // nothing worth a row (a busy page sends more receipts than messages).
        metrics::counter!("webhooks_received_total", "source" => "facebook").increment(1);
        return Ok(Json(json!({"status": "success"})));
    }
    state.events.enqueue_together(jobs).await?;
    metrics::counter!("webhooks_received_total", "source" => "facebook").increment(1);
    Ok(Json(json!({"status": "success"})))
}
