//! `GET /shopify/{shop}/login` and `GET /shopify/callback` (SPEC §4).
//!
//! The callback verifies (hmac, state, shop, timestamp), acts (code exchange, grant, session,
//! webhooks, self-tests, initial sync queued) and answers (waiting a bounded time for the
//! initial sync, `pending` after it). Every step is its own function.

use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use axum_extra::extract::cookie::CookieJar;
use secrecy::SecretString;
use serde_json::{json, Value};
use uuid::Uuid;

use super::catalog::gid_number;
use super::jobs::{ShopifySync, SyncReason, SELF_TEST_EVENT_PREFIX};
use super::subscriptions::ensure_subscriptions;
use crate::config::ShopifySettings;
use crate::crypto::secret_bytes;
use crate::error::{incident, AppError};
use crate::jobs::Job;
use crate::oauth_state::Provider;
use crate::oauth_state::StateError;
use crate::objects::keys::ShopDomain;
use crate::platforms::shopify::signature::{sign_webhook, verify_oauth_query};
use crate::routes::session::{binding_cookie, session_cookie, session_merchant, take_binding};
use crate::state::AppState;
use crate::store::events::{EventId, EventStatus};
use crate::store::now_secs;
use crate::store::tokens::ShopGrant;
use crate::web::Wants;

/// Clock skew tolerated between Shopify's `timestamp` and ours.
const CLOCK_SKEW_SECS: i64 = 300;

fn api(state: &AppState) -> Result<&crate::platforms::shopify::api::ShopifyApi, AppError> {
    super::api(state).map_err(|e| AppError::NotConfigured(e.to_string()))
}

pub async fn login(
    State(state): State<AppState>,
    Path(shop): Path<String>,
    jar: CookieJar,
) -> Result<(CookieJar, Redirect), AppError> {
    super::settings(&state)?;
    let shop = ShopDomain::normalize(&shop).map_err(|e| AppError::BadRequest(e.to_string()))?;
    // A merchant who is already signed in adds this shop to their account.
    let merchant = session_merchant(&state, &jar).await?;
    let (token, browser) = state
        .states
        .issue(Provider::Shopify, merchant, Some(shop.to_string()))
        .await
        .map_err(state_error)?;
    let url = api(&state)?
        .client()
        .authorize_url(&shop, &token)
        .map_err(|e| AppError::internal(anyhow::anyhow!(e)))?;
    let jar = jar.add(binding_cookie(
        Provider::Shopify,
        browser,
        state.config.secure_cookies(),
    ));
    Ok((jar, Redirect::temporary(url.as_str())))
}

pub fn state_error(e: StateError) -> AppError {
    match e {
        StateError::Store => AppError::Unavailable(e.to_string()),
        _ => AppError::BadRequest(e.to_string()),
    }
}

fn status_ok() -> Value {
    json!({"status": "success"})
}

fn status_err(kind: &str, message: impl std::fmt::Display) -> Value {
    json!({"status": kind, "message": message.to_string()})
}

pub async fn callback(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    wants: Wants,
    jar: CookieJar,
) -> Result<Response, AppError> {
    let settings = super::settings(&state)?;
    let (redirect, jar) = verify(&state, settings, query, jar).await?;
    let connected = connect(&state, settings, redirect).await?;
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
    let body = answer(&state, connected, wait).await;
    if wants.html() {
        return Ok((jar, crate::web::callbacks::shopify(&state, &body).await?).into_response());
    }
    Ok((jar, Json(body)).into_response())
}

/// A callback that came from Shopify, for a flow this browser started, for that shop.
struct VerifiedRedirect {
    shop: ShopDomain,
    code: String,
    merchant: Option<Uuid>,
}

async fn verify(
    state: &AppState,
    settings: &ShopifySettings,
    query: Option<String>,
    jar: CookieJar,
) -> Result<(VerifiedRedirect, CookieJar), AppError> {
    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let (Some(code), Some(shop_raw), Some(state_token), Some(_), Some(timestamp)) = (
        param("code"),
        param("shop"),
        param("state"),
        param("hmac"),
        param("timestamp"),
    ) else {
        return Err(AppError::BadRequest(
            "missing code, shop, state, hmac or timestamp parameter".into(),
        ));
    };
    // 1. The redirect really comes from Shopify.
    if !verify_oauth_query(secret_bytes(&settings.api_secret), &params) {
        return Err(AppError::Unauthorized("invalid hmac signature".into()));
    }
    // 2. For a shop we accept, and a flow we started, for that shop, recently.
    let shop = ShopDomain::parse(shop_raw).map_err(|e| AppError::BadRequest(e.to_string()))?;
    let (browser, jar) = take_binding(Provider::Shopify, jar);
    let claims = state
        .states
        .consume(state_token, Provider::Shopify, browser.as_deref())
        .await
        .map_err(state_error)?;
    if claims.shop.as_deref() != Some(shop.as_str()) {
        return Err(AppError::BadRequest(
            "OAuth state was issued for another shop".into(),
        ));
    }
    let ts: i64 = timestamp
        .parse()
        .map_err(|_| AppError::BadRequest("invalid timestamp".into()))?;
    if ts + CLOCK_SKEW_SECS < claims.issued_at || ts > now_secs() + CLOCK_SKEW_SECS {
        return Err(AppError::BadRequest("stale OAuth redirect".into()));
    }
    Ok((
        VerifiedRedirect {
            shop,
            code: code.to_string(),
            merchant: claims.merchant,
        },
        jar,
    ))
}

/// What the connect did, for the answer.
struct Connected {
    shop: ShopDomain,
    merchant: Uuid,
    scope: String,
    session_id: String,
    webhook_status: Value,
    webhook_test: Value,
    polling_test: Value,
    initial_sync: EventId,
}

async fn connect(
    state: &AppState,
    settings: &ShopifySettings,
    redirect: VerifiedRedirect,
) -> Result<Connected, AppError> {
    let api = api(state)?;
    let shop = redirect.shop;
    // The host is built from our template and the validated shop.
    let grant = api
        .client()
        .exchange_code(&shop, &redirect.code)
        .await
        .map_err(|e| {
            tracing::warn!(%shop, error = %e, "Shopify code exchange failed");
            AppError::Upstream("Shopify token exchange failed; start the connection again".into())
        })?;
    let now = now_secs();
    let scope = grant.scope.clone();
    let merchant = state
        .tokens
        .save_shop_grant(
            &shop,
            ShopGrant {
                access_token: SecretString::from(grant.access_token),
                scopes: scope.clone(),
                expires_at: grant.expires_in.map(|s| now + s),
                refresh_token: grant.refresh_token.map(SecretString::from),
                refresh_token_expires_at: grant.refresh_token_expires_in.map(|s| now + s),
            },
            redirect.merchant,
        )
        .await?;
    let session_id = state.sessions.create(merchant).await?;
    tracing::info!(%shop, %merchant, "shop connected");

    // Webhooks, then the self-tests, then the initial sync (queued: it runs in the shop's
    // group, after anything already queued for the shop, and survives a restart).
    let webhook_status = match ensure_subscriptions(api, &shop, &settings.webhook_address).await {
        Ok(r) => r.status(),
        Err(e) => incident("failed", "webhook subscriptions could not be set up", &e),
    };
    let webhook_test = self_test_webhook(state, settings, &shop).await;
    let polling_test = match api
        .query(&shop, "Shop", super::queries::SHOP, json!({}))
        .await
    {
        Ok(v) => {
            // Lifecycle and compliance webhooks must carry this id (see `bodies`).
            let id = v
                .pointer("/shop/id")
                .and_then(Value::as_str)
                .and_then(gid_number);
            if let Some(id) = id {
                state.tokens.set_shop_id(&shop, id).await?;
            }
            status_ok()
        }
        Err(e) => incident("error", "the shop could not be read from Shopify", &e),
    };
    let installed_at = state
        .tokens
        .shop(&shop)
        .await?
        .map(|r| r.installed_at)
        .unwrap_or(now);
    let sync = ShopifySync {
        shop: shop.clone(),
        reason: SyncReason::Initial { installed_at },
    };
    let initial_sync = state.events.enqueue(sync.to_event()).await?.id();
    // The merchant's pages follow this job's progress.
    state
        .events
        .track(
            crate::jobs::GroupKey::shop(&shop).into_string(),
            initial_sync,
            None,
        )
        .await?;
    Ok(Connected {
        shop,
        merchant,
        scope,
        session_id,
        webhook_status,
        webhook_test,
        polling_test,
        initial_sync,
    })
}

/// The SPEC §4 answer, once the initial sync finished or `wait` passed.
async fn answer(state: &AppState, c: Connected, wait: Duration) -> Value {
    let outcome = state.events.wait_for(c.initial_sync, wait).await;
    let (shopify_data, upload_status) = match outcome {
        Ok(Some(o)) if o.status == EventStatus::Done => {
            let r = o.result.unwrap_or(Value::Null);
            (
                r.get("summary").cloned().unwrap_or(Value::Null),
                json!({
                    "status": "success",
                    "shop_metadata": r.get("shop_metadata"),
                    "shop_products": r.get("shop_products"),
                }),
            )
        }
        Ok(Some(o)) if o.status.is_finished() => (
            Value::Null,
            incident(
                "failed",
                "the initial sync failed; it is retried by the daily poll",
                &o.last_error.unwrap_or_default(),
            ),
        ),
        Ok(_) => {
            tracing::info!(shop = %c.shop, "initial sync still running; answering pending");
            (Value::Null, json!({"status": "pending"}))
        }
        Err(e) => (
            Value::Null,
            incident("error", "the initial sync's progress could not be read", &e),
        ),
    };
    json!({
        "user_uuid": c.merchant,
        "shop": c.shop.as_str(),
        "scope": c.scope,
        "shopify_data": shopify_data,
        "webhook_status": c.webhook_status,
        "webhook_test": c.webhook_test,
        "polling_test": c.polling_test,
        "upload_status": upload_status,
    })
}

/// Posts a correctly signed synthetic `products/update` delivery to our own webhook address
/// and expects 200, proving address, signature check and durable intake work end to end.
async fn self_test_webhook(
    state: &AppState,
    settings: &ShopifySettings,
    shop: &ShopDomain,
) -> Value {
    let body = json!({
        "id": 0,
        "title": "salesbot-sync webhook self-test",
        "handle": "salesbot-sync-self-test",
        "status": "draft",
        "variants": [],
        // A fresh body each time, so no signed self-test body is ever worth replaying.
        "salesbot_self_test_nonce": uuid::Uuid::new_v4(),
    })
    .to_string();
    let sig = sign_webhook(secret_bytes(&settings.api_secret), body.as_bytes());
    let event_id = format!("{SELF_TEST_EVENT_PREFIX}{}", uuid::Uuid::new_v4());
    let r = state
        .http
        .post(settings.webhook_address.clone())
        .header("Content-Type", "application/json")
        .header("X-Shopify-Topic", "products/update")
        .header("X-Shopify-Shop-Domain", shop.as_str())
        .header("X-Shopify-Hmac-Sha256", sig)
        .header("X-Shopify-Event-Id", &event_id)
        .header("X-Shopify-Webhook-Id", &event_id)
        .header("X-Shopify-API-Version", &settings.api_version)
        .body(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    match r {
        Ok(resp) if resp.status().is_success() => status_ok(),
        Ok(resp) => status_err(
            "failed",
            format!("webhook address answered {}", resp.status()),
        ),
        Err(e) => status_err(
            "failed",
            format!("webhook address unreachable: {}", e.without_url()),
        ),
    }
}
