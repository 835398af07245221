//! `GET /shopify/{shop}/login`, `GET /shopify/callback` and `POST /shopify/webhook` (SPEC §4):
//! cookies, signatures, headers and answers (JSON, or a page for a browser) around the connect
//! of `shopify::oauth` and the intake of `shopify::webhook`.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use axum_extra::extract::cookie::CookieJar;
use serde_json::{json, Value};

use super::{header, sorted_json};
use crate::config::ShopifySettings;
use crate::crypto::secret_bytes;
use crate::error::AppError;
use crate::ids::ShopDomain;
use crate::oauth_state::Provider;
use crate::platforms::shopify::signature::verify_webhook;
use crate::session::{binding_cookie, session_cookie, session_merchant, take_binding};
use crate::shopify::webhook::{reject, Delivery};
use crate::shopify::{self, oauth, webhook};
use crate::state::AppState;
use crate::web::{self, Wants};

pub async fn login(
    State(state): State<AppState>,
    Path(shop): Path<String>,
    jar: CookieJar,
) -> Result<(CookieJar, Redirect), AppError> {
    shopify::settings(&state)?;
    let shop = ShopDomain::normalize(&shop).map_err(|e| AppError::BadRequest(e.to_string()))?;
    // A merchant who is already signed in adds this shop to their account.
    let merchant = session_merchant(&state, &jar).await?;
    let (url, browser) = oauth::authorize(&state, &shop, merchant).await?;
    let jar = jar.add(binding_cookie(
        Provider::Shopify,
        browser,
        state.config.secure_cookies(),
    ));
    Ok((jar, Redirect::temporary(url.as_str())))
}

pub async fn callback(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    wants: Wants,
    jar: CookieJar,
) -> Result<Response, AppError> {
    let settings = shopify::settings(&state)?;
    let (browser, jar) = take_binding(Provider::Shopify, jar);
    let redirect = oauth::verify(&state, settings, query, browser.as_deref()).await?;
    let connected = oauth::connect(&state, settings, redirect).await?;
    let jar = jar.add(session_cookie(
        connected.session_id.clone(),
        state.config.secure_cookies(),
    ));
    // A browser is shown the sync's live progress instead of waiting for it.
    let wait = if wants.html() {
        Duration::ZERO
    } else {
        settings.initial_sync_wait
    };
    let answer = oauth::answer(&state, connected, wait).await;
    if wants.html() {
        return Ok((jar, web::callbacks::shopify(&state, &answer).await?).into_response());
    }
    Ok((jar, sorted_json(&answer)?).into_response())
}

/// Verifies, records durably, acknowledges.
pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, AppError> {
    let settings = shopify::settings(&state)?;
    let delivery = delivery(settings, &headers, &body)?;
    webhook::accept(&state, settings, delivery).await?;
    Ok(Json(json!({"status": "success"})))
}

/// The delivery, once its signature over the raw bytes verifies (before anything else is
/// believed) and the headers it needs are there and well-formed.
fn delivery<'a>(
    settings: &ShopifySettings,
    headers: &'a HeaderMap,
    body: &'a [u8],
) -> Result<Delivery<'a>, AppError> {
    let Some(sig) = header(headers, "x-shopify-hmac-sha256") else {
        reject("missing_signature");
        return Err(AppError::Unauthorized(
            "missing X-Shopify-Hmac-Sha256 header".into(),
        ));
    };
    if !verify_webhook(secret_bytes(&settings.api_secret), body, sig) {
        reject("bad_signature");
        return Err(AppError::Unauthorized("invalid webhook signature".into()));
    }
    let Some(topic) = header(headers, "x-shopify-topic") else {
        reject("missing_topic");
        return Err(AppError::BadRequest(
            "missing X-Shopify-Topic header".into(),
        ));
    };
    let Some(shop_raw) = header(headers, "x-shopify-shop-domain") else {
        reject("missing_shop");
        return Err(AppError::BadRequest(
            "missing X-Shopify-Shop-Domain header".into(),
        ));
    };
    let shop = ShopDomain::parse(shop_raw).map_err(|e| {
        reject("invalid_shop");
        AppError::BadRequest(e.to_string())
    })?;
    if topic.len() > 100 || !topic.bytes().all(|b| b.is_ascii_graphic()) {
        reject("invalid_topic");
        return Err(AppError::BadRequest(
            "invalid X-Shopify-Topic header".into(),
        ));
    }
    Ok(Delivery {
        topic,
        shop,
        body,
        event_id: header(headers, "x-shopify-event-id"),
        webhook_id: header(headers, "x-shopify-webhook-id"),
        triggered_at: header(headers, "x-shopify-triggered-at"),
    })
}
