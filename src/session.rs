//! The merchant's cookies, for the routes and the pages: `session_id` (set after a Shopify
//! connect, required by the Facebook login and `/account`) and the OAuth flows' browser
//! bindings.

use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};

use crate::error::AppError;
use crate::ids::MerchantId;
use crate::oauth_state::Provider;
use crate::state::AppState;
use crate::store::sessions::SESSION_TTL_SECS;

pub const SESSION_COOKIE: &str = "session_id";

/// The cookie that binds a provider's OAuth flow to the browser that started it (see
/// `oauth_state`). One per provider, so a Shopify and a Facebook connection started in two
/// tabs do not overwrite each other's binding.
pub fn binding_cookie_name(provider: Provider) -> &'static str {
    match provider {
        Provider::Shopify => "oauth_binding_shopify",
        Provider::Facebook => "oauth_binding_facebook",
    }
}

/// The binding cookie set at login; it lives as long as the state.
pub fn binding_cookie(provider: Provider, value: String, secure: bool) -> Cookie<'static> {
    Cookie::build((binding_cookie_name(provider), value))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure)
        .path("/")
        .max_age(time::Duration::seconds(crate::oauth_state::STATE_TTL_SECS))
        .build()
}

/// The binding cookie's value, and the jar with it removed (it is single use).
pub fn take_binding(provider: Provider, jar: CookieJar) -> (Option<String>, CookieJar) {
    let name = binding_cookie_name(provider);
    let value = jar.get(name).map(|c| c.value().to_string());
    let jar = jar.remove(Cookie::build(name).path("/").build());
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

/// The jar without the session cookie (signing out).
pub fn remove_session_cookie(jar: CookieJar) -> CookieJar {
    jar.remove(Cookie::build(SESSION_COOKIE).path("/").build())
}

/// The merchant of the request's session, if it has a live one.
pub async fn session_merchant(
    state: &AppState,
    jar: &CookieJar,
) -> Result<Option<MerchantId>, AppError> {
    match jar.get(SESSION_COOKIE) {
        Some(c) => Ok(state.sessions.merchant(c.value()).await?),
        None => Ok(None),
    }
}

/// The merchant of the session; 400 with the SPEC's messages otherwise.
pub async fn require_session(state: &AppState, jar: &CookieJar) -> Result<MerchantId, AppError> {
    let Some(c) = jar.get(SESSION_COOKIE) else {
        return Err(AppError::BadRequest("Missing session_id cookie".into()));
    };
    state
        .sessions
        .merchant(c.value())
        .await?
        .ok_or_else(|| AppError::BadRequest("Invalid or expired session".into()))
}
