//! The HTTP surface (SPEC §4): each integration's routes (their HTTP side: cookies,
//! signatures, headers, JSON or pages, over the domain's flows), the operational ones, and the
//! shared layers.

mod facebook;
mod health;
pub mod limits;
pub mod metrics;
mod shopify;
#[cfg(feature = "testkit")]
mod testkit;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, Request};
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::Value;
use tower_http::trace::TraceLayer;

use crate::error::AppError;
use crate::state::AppState;
use crate::web;

pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes;
    let timeouts = limits::RequestTimeouts::new(&state.config.edge);
    // Only the anonymous routes that write (an OAuth state row, a deletion job) are rate
    // limited; the webhook intake is signed, must stay fast and is never behind the limiter,
    // and so is a data-deletion request that Meta signed.
    let logins = limits::LoginLimiter::new(&state.config.edge);
    let limited = || from_fn_with_state(logins.clone(), limits::limit_logins);
    // `/`, `/metrics` and the operator page need `OPERATOR_TOKEN` (when it is set).
    let operator = || from_fn_with_state(state.clone(), web::operator::require_operator);
    let router = Router::new()
        .route("/", get(health::index).route_layer(operator()))
        .route("/healthz", get(health::healthz))
        .route(
            "/readyz",
            get(health::readyz).with_state(health::ReadyState::new(state.clone())),
        )
        .route("/metrics", get(metrics::render).route_layer(operator()))
        .route(
            "/operator/login",
            get(web::operator::login_form).merge(post(web::operator::login).route_layer(limited())),
        )
        .route("/operator/logout", post(web::operator::logout))
        .route("/assets/style.css", get(web::style))
        .route("/assets/live.js", get(web::live_js))
        .merge(merchant_pages())
        .route(
            "/shopify/{shop}/login",
            get(shopify::login).route_layer(limited()),
        )
        .route("/shopify/callback", get(shopify::callback))
        .route("/shopify/webhook", post(shopify::receive))
        .route(
            "/facebook/login",
            get(facebook::login).route_layer(limited()),
        )
        .route("/facebook/callback", get(facebook::callback))
        .route(
            "/facebook/webhook",
            get(facebook::verify).post(facebook::receive),
        )
        .route(
            "/facebook/data-deletion",
            post(facebook::deletion_request).route_layer(from_fn_with_state(
                (logins.clone(), state.clone()),
                facebook::limit_unsigned_deletions,
            )),
        )
        .route(
            "/facebook/data-deletion/status",
            get(facebook::deletion_status),
        );
    #[cfg(feature = "testkit")]
    let router = router.route("/_testkit/webhook", post(testkit::receive));
    router
        // Browsers get error pages instead of the JSON errors (inside the timeout layer, so a
        // timed-out request's answer becomes a page too).
        .layer(axum::middleware::from_fn(web::errors::html_errors))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(from_fn_with_state(timeouts, limits::request_timeout))
        .layer(
            // Log the path only: OAuth callbacks carry codes and signatures in the query.
            TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path())
            }),
        )
        .with_state(state)
}

/// The merchant's own pages: where they start, their account, and its forms (each form
/// checks the session's form token).
fn merchant_pages() -> Router<AppState> {
    Router::new()
        .route("/connect", get(web::account::connect))
        .route("/connect/shopify", get(web::account::connect_shopify))
        .route("/account", get(web::account::account))
        .route("/account/progress", get(web::account::progress))
        .route("/account/sign-out", post(web::account::sign_out))
        .route(
            "/account/shops/{shop}/disconnect",
            post(web::account::disconnect_shop),
        )
        .route(
            "/account/pages/{page}/disconnect",
            post(web::account::disconnect_page),
        )
        .route("/account/pages/{page}/move", post(web::moves::move_page))
}

/// A typed answer as JSON with its keys sorted at every level, as the answers have always
/// been written (through a `Value`, whose maps are sorted): serialised directly, a struct
/// would write its fields in declaration order and an enum its tag first.
pub(crate) fn sorted_json(answer: &impl Serialize) -> Result<Json<Value>, AppError> {
    serde_json::to_value(answer)
        .map(Json)
        .map_err(AppError::internal)
}

/// A header's value, trimmed; absent when missing, empty or not text.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}
