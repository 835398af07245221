//! Meta's data deletion callback: `POST /facebook/data-deletion` with a `signed_request`, and
//! the status URL it answers with.

use axum::extract::{Form, Query, State};
use axum::Json;
use rusqlite::{params, OptionalExtension};
use serde::Deserialize;
use serde_json::{json, Value};

use super::signature::parse_signed_request;
use crate::crypto::secret_bytes;
use crate::error::AppError;
use crate::objects::keys;
use crate::state::AppState;
use crate::store::now_secs;

#[derive(Deserialize)]
pub struct DeletionForm {
    signed_request: Option<String>,
}

#[derive(Deserialize)]
pub struct StatusQuery {
    code: Option<String>,
}

pub async fn request(
    State(state): State<AppState>,
    Form(form): Form<DeletionForm>,
) -> Result<Json<Value>, AppError> {
    let settings = super::settings(&state)?;
    let signed = form
        .signed_request
        .ok_or_else(|| AppError::BadRequest("missing signed_request".into()))?;
    let payload = parse_signed_request(secret_bytes(&settings.app_secret), &signed)
        .ok_or_else(|| AppError::Unauthorized("invalid signed_request".into()))?;
    let user_id = payload
        .get("user_id")
        .and_then(|v| {
            v.as_str()
                .map(str::to_string)
                .or_else(|| v.as_i64().map(|n| n.to_string()))
        })
        .filter(|u| !u.is_empty() && u.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| AppError::BadRequest("signed_request has no valid user_id".into()))?;

    let code = crate::config::random_token(12);
    record(&state, &code, &user_id, "pending", None).await?;
    let result = delete_user_data(&state, &user_id).await;
    let (status, detail) = match &result {
        Ok(n) => (
            "completed",
            format!("deleted {n} page(s) and their objects"),
        ),
        Err(e) => ("failed", e.to_string()),
    };
    record(&state, &code, &user_id, status, Some(detail)).await?;
    tracing::info!(status, "Facebook data deletion request handled");
    let mut url = state.config.public_base_url.clone();
    url.set_path("/facebook/data-deletion/status");
    url.query_pairs_mut().append_pair("code", &code);
    Ok(Json(
        json!({"url": url.as_str(), "confirmation_code": code}),
    ))
}

/// Deletes what the Facebook user gave us: every page they granted (records and objects) and
/// their user token.
async fn delete_user_data(state: &AppState, fb_user_id: &str) -> anyhow::Result<usize> {
    let pages = state.tokens.pages_granted_by(fb_user_id).await?;
    for (merchant, page) in &pages {
        state
            .objects
            .delete_prefix(&keys::page_prefix(merchant, page))
            .await?;
        state.tokens.delete_page(page).await?;
    }
    for merchant in state.tokens.merchants_of_facebook_user(fb_user_id).await? {
        state.tokens.delete_facebook_user(merchant).await?;
    }
    Ok(pages.len())
}

async fn record(
    state: &AppState,
    code: &str,
    user: &str,
    status: &'static str,
    detail: Option<String>,
) -> Result<(), AppError> {
    let (code, user) = (code.to_string(), user.to_string());
    state
        .tokens
        .db()
        .call(move |c| {
            let now = now_secs();
            c.execute(
                "INSERT INTO data_deletions (confirmation_code, fb_user_id, status, detail, requested_at, completed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, CASE WHEN ?3 = 'pending' THEN NULL ELSE ?5 END)
                 ON CONFLICT(confirmation_code) DO UPDATE SET status = excluded.status,
                    detail = excluded.detail, completed_at = excluded.completed_at",
                params![code, user, status, detail, now],
            )?;
            Ok(())
        })
        .await?;
    Ok(())
}

pub async fn status(
    State(state): State<AppState>,
    Query(q): Query<StatusQuery>,
) -> Result<Json<Value>, AppError> {
    let code = q
        .code
        .filter(|c| !c.is_empty() && c.len() <= 64)
        .ok_or_else(|| AppError::BadRequest("missing code".into()))?;
    let c2 = code.clone();
    let row = state
        .tokens
        .db()
        .call(move |c| {
            Ok(c.query_row(
                "SELECT status, requested_at, completed_at FROM data_deletions WHERE confirmation_code = ?1",
                [c2],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, Option<i64>>(2)?)),
            )
            .optional()?)
        })
        .await?;
    let (status, requested_at, completed_at) =
        row.ok_or_else(|| AppError::NotFound("unknown confirmation code".into()))?;
    Ok(Json(json!({
        "confirmation_code": code,
        "status": status,
        "requested_at": requested_at,
        "completed_at": completed_at,
    })))
}
