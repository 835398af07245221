//! `GET /shopify/{shop}/login` and `GET /shopify/callback` (SPEC §4).

use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::response::Redirect;
use axum::Json;
use axum_extra::extract::cookie::CookieJar;
use secrecy::SecretString;
use serde_json::{json, Value};

use super::client::{ShopifyClient, ShopifyError};
use super::signature::{sign_webhook, verify_oauth_query};
use super::subscriptions::ensure_subscriptions;
use super::sync::{sync_shop, SELF_TEST_EVENT_PREFIX};
use crate::crypto::secret_bytes;
use crate::error::AppError;
use crate::oauth_state::StateError;
use crate::objects::keys::ShopDomain;
use crate::routes::session::{binding_cookie, session_cookie, session_merchant, take_binding};
use crate::state::AppState;
use crate::store::now_secs;
use crate::store::tokens::ShopGrant;

/// Clock skew tolerated between Shopify's `timestamp` and ours.
const CLOCK_SKEW_SECS: i64 = 300;

pub async fn login(
    State(state): State<AppState>,
    Path(shop): Path<String>,
    jar: CookieJar,
) -> Result<(CookieJar, Redirect), AppError> {
    let settings = super::settings(&state)?;
    let shop = ShopDomain::normalize(&shop).map_err(|e| AppError::BadRequest(e.to_string()))?;
    // A merchant who is already signed in adds this shop to their account.
    let merchant = session_merchant(&state, &jar).await?;
    let (token, browser) = state
        .states
        .issue("shopify", merchant, Some(shop.to_string()))
        .await
        .map_err(state_error)?;
    let url = ShopifyClient::new(&state.http, settings, &state.upstream_retry)
        .authorize_url(&shop, &token)
        .map_err(|e| AppError::internal(anyhow::anyhow!(e)))?;
    let jar = jar.add(binding_cookie(browser, state.config.secure_cookies()));
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
    jar: CookieJar,
) -> Result<(CookieJar, Json<Value>), AppError> {
    let settings = super::settings(&state)?;
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
    let (browser, jar) = take_binding(jar);
    let claims = state
        .states
        .consume(state_token, "shopify", browser.as_deref())
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

    // 3. Exchange the code; the host is built from our template and the validated shop.
    let client = ShopifyClient::new(&state.http, settings, &state.upstream_retry);
    let grant = client.exchange_code(&shop, code).await.map_err(|e| {
        tracing::warn!(%shop, error = %e, "Shopify code exchange failed");
        AppError::Upstream("Shopify token exchange failed; start the connection again".into())
    })?;
    let now = now_secs();
    let scope = grant.scope.clone();
    let access = SecretString::from(grant.access_token);
    let merchant = state
        .tokens
        .save_shop_grant(
            &shop,
            ShopGrant {
                access_token: access.clone(),
                scopes: scope.clone(),
                expires_at: grant.expires_in.map(|s| now + s),
                refresh_token: grant.refresh_token.map(SecretString::from),
                refresh_token_expires_at: grant.refresh_token_expires_in.map(|s| now + s),
            },
            claims.merchant,
        )
        .await?;
    let session_id = state.sessions.create(merchant).await?;
    let jar = jar.add(session_cookie(session_id, state.config.secure_cookies()));
    tracing::info!(%shop, %merchant, "shop connected");

    // 4. Webhooks, then the self-tests, then the initial data.
    let webhook_status =
        match ensure_subscriptions(&client, &shop, &access, &settings.webhook_address).await {
            Ok(r) => r.status(),
            Err(e) => status_err("failed", e),
        };
    let webhook_test = self_test_webhook(&state, &shop).await;
    let polling_test = match fetch_shop_probe(&client, &shop, &access).await {
        Ok(()) => status_ok(),
        Err(e) => status_err("error", e),
    };

    let task_state = state.clone();
    let task_shop = shop.clone();
    let mut sync = tokio::spawn(async move { sync_shop(&task_state, &task_shop).await });
    let (shopify_data, upload_status) = match tokio::time::timeout(
        settings.initial_sync_wait,
        &mut sync,
    )
    .await
    {
        Ok(Ok(Ok(outcome))) => (
            outcome.summary.clone(),
            json!({"status": "success", "shop_metadata": outcome.shop_metadata, "shop_products": outcome.shop_products}),
        ),
        Ok(Ok(Err(e))) => (Value::Null, status_err("failed", e)),
        Ok(Err(join)) => (Value::Null, status_err("error", join)),
        Err(_) => {
            // The task keeps running; its result is logged by sync_shop.
            tracing::info!(%shop, "initial sync still running; answering pending");
            (Value::Null, json!({"status": "pending"}))
        }
    };

    Ok((
        jar,
        Json(json!({
            "user_uuid": merchant,
            "shop": shop.as_str(),
            "scope": scope,
            "shopify_data": shopify_data,
            "webhook_status": webhook_status,
            "webhook_test": webhook_test,
            "polling_test": polling_test,
            "upload_status": upload_status,
        })),
    ))
}

/// The polling self-test: one small authenticated query.
async fn fetch_shop_probe(
    client: &ShopifyClient<'_>,
    shop: &ShopDomain,
    token: &SecretString,
) -> Result<(), ShopifyError> {
    client
        .graphql(shop, token, "Shop", super::queries::SHOP, json!({}))
        .await
        .map(|_| ())
}

/// Posts a correctly signed synthetic `products/update` delivery to our own webhook address
/// and expects 200, proving address, signature check and durable intake work end to end.
async fn self_test_webhook(state: &AppState, shop: &ShopDomain) -> Value {
    let Some(settings) = state.config.shopify.as_ref() else {
        return status_err("failed", "Shopify is not configured");
    };
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
