//! Operator access: `OPERATOR_TOKEN` protects `/`, `/metrics` and the operator page, either as
//! `Authorization: Bearer …` (scripts, Prometheus) or, for browsers, a small sign-in form that
//! sets an HttpOnly cookie. The cookie never holds the token: it is an expiry signed with it,
//! so changing the token signs every browser out. Health routes stay open.

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use secrecy::SecretString;
use serde::Deserialize;

use super::views::{AccountCounts, FailureRow, OperatorLogin, OperatorPage};
use super::{negotiate, page, Format};
use crate::config::AppEnv;
use crate::crypto::{constant_time_eq, hmac_sha256_hex, secret_bytes};
use crate::error::AppError;
use crate::state::AppState;
use crate::store::now_secs;
use crate::store::tokens::{AccountStatus, AccountSummary};

pub const OPERATOR_COOKIE: &str = "operator_session";
/// How long a browser stays signed in.
const SESSION_SECS: i64 = 12 * 3600;

fn mac(token: &SecretString, expires: i64) -> String {
    hmac_sha256_hex(
        secret_bytes(token),
        format!("operator-session:{expires}").as_bytes(),
    )
}

fn cookie_value(token: &SecretString, expires: i64) -> String {
    format!("{expires}.{}", mac(token, expires))
}

fn cookie_valid(token: &SecretString, value: &str) -> bool {
    let Some((exp, sig)) = value.split_once('.') else {
        return false;
    };
    let Ok(expires) = exp.parse::<i64>() else {
        return false;
    };
    expires > now_secs() && constant_time_eq(sig.as_bytes(), mac(token, expires).as_bytes())
}

fn token_matches(token: &SecretString, sent: &str) -> bool {
    constant_time_eq(sent.as_bytes(), secret_bytes(token))
}

/// Whether the request is the operator's (always, when no token is configured).
pub fn is_operator(state: &AppState, headers: &axum::http::HeaderMap) -> bool {
    let Some(token) = &state.config.operator_token else {
        return true;
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer.is_some_and(|b| token_matches(token, b.trim())) {
        return true;
    }
    CookieJar::from_headers(headers)
        .get(OPERATOR_COOKIE)
        .is_some_and(|c| cookie_valid(token, c.value()))
}

/// Layer of the operator routes: 401 for scripts, the sign-in form for browsers.
pub async fn require_operator(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if is_operator(&state, req.headers()) {
        return next.run(req).await;
    }
    if negotiate(req.headers()) == Format::Html {
        let next_path = req.uri().path();
        let target = format!("/operator/login?next={}", urlencode(next_path));
        return Redirect::to(&target).into_response();
    }
    let mut r = AppError::Unauthorized(
        "operator token required (Authorization: Bearer <OPERATOR_TOKEN>)".into(),
    )
    .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"salesbot-sync\""),
    );
    r
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The pages a sign-in may return to: the operator routes, and nothing else. A list rather
/// than a check of the text: browsers drop tabs and newlines and read `\\` as `/`, so
/// `/%09/evil.example` passes any "starts with one slash" test and leaves the site.
const SIGN_IN_RETURNS: &[&str] = &["/", "/metrics"];

fn safe_next(next: Option<&str>) -> String {
    let known = next.and_then(|n| SIGN_IN_RETURNS.iter().find(|p| **p == n));
    known.copied().unwrap_or("/").to_string()
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

pub async fn login_form(Query(q): Query<LoginQuery>) -> Response {
    page(
        StatusCode::OK,
        &OperatorLogin {
            failed: false,
            next: safe_next(q.next.as_deref()),
        },
    )
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: Option<String>,
    next: Option<String>,
}

pub async fn login(
    State(state): State<AppState>,
    jar: CookieJar,
    Form(form): Form<LoginForm>,
) -> Result<Response, AppError> {
    let next = safe_next(form.next.as_deref());
    let Some(token) = &state.config.operator_token else {
        return Ok(Redirect::to(&next).into_response());
    };
    if !form
        .token
        .as_deref()
        .is_some_and(|t| token_matches(token, t.trim()))
    {
        tracing::warn!("operator sign-in with a wrong token");
        return Ok(page(
            StatusCode::UNAUTHORIZED,
            &OperatorLogin { failed: true, next },
        ));
    }
    let expires = now_secs() + SESSION_SECS;
    let cookie = Cookie::build((OPERATOR_COOKIE, cookie_value(token, expires)))
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(state.config.secure_cookies())
        .path("/")
        .max_age(time::Duration::seconds(SESSION_SECS))
        .build();
    Ok((jar.add(cookie), Redirect::to(&next)).into_response())
}

pub async fn logout(jar: CookieJar) -> (CookieJar, Redirect) {
    (
        jar.remove(Cookie::build(OPERATOR_COOKIE).path("/").build()),
        Redirect::to("/operator/login"),
    )
}

fn counts(label: &'static str, list: &[AccountSummary]) -> AccountCounts {
    let n = |s: AccountStatus| list.iter().filter(|a| a.status == s).count();
    AccountCounts {
        label,
        active: n(AccountStatus::Active),
        needs: n(AccountStatus::NeedsReauth),
        uninstalled: n(AccountStatus::Uninstalled),
        deleting: n(AccountStatus::Deleting),
    }
}

fn duration_text(ms: i64) -> String {
    match ms / 1000 {
        0 => "none waiting".into(),
        s @ 1..=119 => format!("{s} s"),
        s @ 120..=7199 => format!("{} min", s / 60),
        s => format!("{} h", s / 3600),
    }
}

/// The operator page: shops and pages by state, who needs reconnecting and why, the queue, the
/// newest failures with their reasons, the last poll and the last backup.
pub async fn dashboard(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> Result<Response, AppError> {
    let cfg = &state.config;
    let shops = state.tokens.shop_summaries().await?;
    let pages = state.tokens.page_summaries().await?;
    let needs = shops
        .iter()
        .chain(pages.iter())
        .filter(|a| a.status == AccountStatus::NeedsReauth)
        .map(|a| (a.id.clone(), a.reason.clone().unwrap_or_default()))
        .collect();
    let queue = state.events.stats().await?;
    let failures = state
        .events
        .recent_failures(10)
        .await?
        .into_iter()
        .map(|e| FailureRow {
            kind: e.kind,
            status: e.status.to_string(),
            attempts: e.attempts,
            reason: e.last_error.unwrap_or_default(),
        })
        .collect();
    let last_poll = match state
        .events
        .runs(false, 20)
        .await?
        .into_iter()
        .find(|r| r.trigger != crate::store::events::RunTrigger::Connect)
    {
        Some(r) => {
            let when = super::progress::ago(r.started_at);
            match (r.finished_at, r.summary) {
                (Some(_), Some(s)) => format!("{} ({} run), {}", when, r.trigger, summary_text(&s)),
                (Some(_), None) => format!("{when} ({} run), finished", r.trigger),
                (None, _) => format!("{when} ({} run), still running", r.trigger),
            }
        }
        None => "no poll has run yet".into(),
    };
    let last_backup = match crate::backup::last_outcome(&cfg.backup_dir) {
        Some(b) if b.ok => format!("{}: {}", super::progress::ago(b.at), b.detail),
        Some(b) => format!("{}: FAILED: {}", super::progress::ago(b.at), b.detail),
        None => "no backup recorded yet".into(),
    };
    let signed_in = cfg.operator_token.is_some()
        && CookieJar::from_headers(headers)
            .get(OPERATOR_COOKIE)
            .is_some();
    Ok(page(
        StatusCode::OK,
        &OperatorPage {
            version: env!("CARGO_PKG_VERSION"),
            environment: if cfg.app_env == AppEnv::Production {
                "production"
            } else {
                "development"
            },
            storage: cfg.storage.backend_name(),
            signed_in,
            oldest: duration_text(queue.oldest_pending_age_ms),
            queue,
            failures,
            accounts: vec![counts("shops", &shops), counts("pages", &pages)],
            needs,
            last_poll,
            last_backup,
            shopify_on: cfg.shopify.is_some(),
            facebook_on: cfg.facebook.is_some(),
        },
    ))
}

/// A poll run's summary in one line (its counters, as the CLI prints them).
fn summary_text(s: &serde_json::Value) -> String {
    let Some(o) = s.as_object() else {
        return s.to_string();
    };
    o.iter()
        .filter(|(_, v)| v.is_number() || v.is_string())
        .map(|(k, v)| {
            format!(
                "{k} {}",
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn session_cookies_are_signed_expiring_and_never_the_token() {
        let token = SecretString::from("t".repeat(40));
        let v = cookie_value(&token, now_secs() + 60);
        assert!(!v.contains(token.expose_secret()));
        assert!(cookie_valid(&token, &v));
        assert!(!cookie_valid(&SecretString::from("u".repeat(40)), &v));
        assert!(!cookie_valid(&token, &cookie_value(&token, now_secs() - 1)));
        let (exp, sig) = v.split_once('.').unwrap();
        let later: i64 = exp.parse::<i64>().unwrap() + 3600;
        assert!(!cookie_valid(&token, &format!("{later}.{sig}")));
        assert!(!cookie_valid(&token, "garbage"));
    }

    #[test]
    fn sign_in_only_returns_to_our_own_paths() {
        assert_eq!(safe_next(Some("/metrics")), "/metrics");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }
}
