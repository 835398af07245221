//! `POST /_testkit/webhook` (feature `testkit`): a test delivery, checked like a platform's
//! webhook (base64 HMAC-SHA256 of the raw body keyed with `STATE_TOKEN_SECRET`), then queued
//! by `testkit::accept`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};

use crate::crypto::{secret_bytes, verify_hmac_sha256_base64};
use crate::error::AppError;
use crate::state::AppState;

pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, AppError> {
    let sig = headers
        .get("x-testkit-hmac-sha256")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| AppError::Unauthorized("missing signature".into()))?;
    if !verify_hmac_sha256_base64(secret_bytes(&state.config.state_token_secret), &body, sig) {
        return Err(AppError::Unauthorized("invalid signature".into()));
    }
    crate::testkit::accept(&state, &body).await?;
    Ok(Json(json!({"status": "success"})))
}
