//! The HTTP surface (SPEC §4). Each integration owns its routes; this module puts them together
//! with the operational ones and the shared layers.

mod health;
pub mod limits;
pub mod metrics;
pub mod session;

use axum::extract::DefaultBodyLimit;
use axum::http::Request;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use axum::Router;
use tower_http::trace::TraceLayer;

use crate::state::AppState;
use crate::web;

pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes;
    let timeouts = limits::RequestTimeouts::new(&state.config.edge);
    // Only the anonymous routes that write (an OAuth state row, a deletion job) are rate
    // limited; the webhook intake is signed, must stay fast and is never behind the limiter.
    let logins = limits::LoginLimiter::new(&state.config.edge);
    let limited = || from_fn_with_state(logins.clone(), limits::limit_logins);
    // `/`, `/metrics` and the operator page need `OPERATOR_TOKEN` (when it is set).
    let operator = || from_fn_with_state(state.clone(), web::operator::require_operator);
    let router = Router::new()
        .route("/", get(health::index).route_layer(operator()))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::render).route_layer(operator()))
        .route(
            "/operator/login",
            get(web::operator::login_form).merge(post(web::operator::login).route_layer(limited())),
        )
        .route("/operator/logout", post(web::operator::logout))
        .route("/assets/style.css", get(web::style))
        .route("/assets/live.js", get(web::live_js))
        .route("/connect", get(web::account::connect))
        .route("/connect/shopify", get(web::account::connect_shopify))
        .route("/account", get(web::account::account))
        .route("/account/progress", get(web::account::progress))
        .route(
            "/account/shops/{shop}/disconnect",
            post(web::account::disconnect_shop),
        )
        .route(
            "/account/pages/{page}/disconnect",
            post(web::account::disconnect_page),
        )
        .route(
            "/shopify/{shop}/login",
            get(crate::shopify::oauth::login).route_layer(limited()),
        )
        .route("/shopify/callback", get(crate::shopify::oauth::callback))
        .route("/shopify/webhook", post(crate::shopify::webhook::receive))
        .route(
            "/facebook/login",
            get(crate::facebook::oauth::login).route_layer(limited()),
        )
        .route("/facebook/callback", get(crate::facebook::oauth::callback))
        .route(
            "/facebook/webhook",
            get(crate::facebook::webhook::verify).post(crate::facebook::webhook::receive),
        )
        .route(
            "/facebook/data-deletion",
            post(crate::facebook::deletion::request).route_layer(limited()),
        )
        .route(
            "/facebook/data-deletion/status",
            get(crate::facebook::deletion::status),
        );
    #[cfg(feature = "testkit")]
    let router = router.route("/_testkit/webhook", post(crate::jobs::testkit::receive));
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
