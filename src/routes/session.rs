//! The `session_id` cookie: set after a Shopify connect, required by the Facebook login.

use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use uuid::Uuid;

use crate::error::AppError;
use crate::state::AppState;
use crate::store::sessions::SESSION_TTL_SECS;

pub const SESSION_COOKIE: &str = "session_id";

pub fn session_cookie(id: String, secure: bool) -> Cookie<'static> {
    Cookie::build((SESSION_COOKIE, id))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure)
        .path("/")
        .max_age(time::Duration::seconds(SESSION_TTL_SECS))
        .build()
}

/// The merchant of the request's session, if it has a live one.
pub async fn session_merchant(state: &AppState, jar: &CookieJar) -> Result<Option<Uuid>, AppError> {
    match jar.get(SESSION_COOKIE) {
        Some(c) => Ok(state.sessions.merchant(c.value()).await?),
        None => Ok(None),
    }
}

/// The merchant of the session; 400 with the SPEC's messages otherwise.
pub async fn require_session(state: &AppState, jar: &CookieJar) -> Result<Uuid, AppError> {
    let Some(c) = jar.get(SESSION_COOKIE) else {
        return Err(AppError::BadRequest("Missing session_id cookie".into()));
    };
    state
        .sessions
        .merchant(c.value())
        .await?
        .ok_or_else(|| AppError::BadRequest("Invalid or expired session".into()))
}
