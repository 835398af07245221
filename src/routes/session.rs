//! The `session_id` cookie: set after a Shopify connect, required by the Facebook login.

use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use uuid::Uuid;

use crate::error::AppError;
use crate::state::AppState;
use crate::store::sessions::SESSION_TTL_SECS;

pub const SESSION_COOKIE: &str = "session_id";
/// Binds an OAuth flow to the browser that started it (see `oauth_state`).
pub const BINDING_COOKIE: &str = "oauth_binding";

/// The binding cookie set at login; it lives as long as the state.
pub fn binding_cookie(value: String, secure: bool) -> Cookie<'static> {
    Cookie::build((BINDING_COOKIE, value))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure)
        .path("/")
        .max_age(time::Duration::seconds(crate::oauth_state::STATE_TTL_SECS))
        .build()
}

/// The binding cookie's value, and the jar with it removed (it is single use).
pub fn take_binding(jar: CookieJar) -> (Option<String>, CookieJar) {
    let value = jar.get(BINDING_COOKIE).map(|c| c.value().to_string());
    let jar = jar.remove(Cookie::build(BINDING_COOKIE).path("/").build());
    (value, jar)
}

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
