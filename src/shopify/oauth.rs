//! Connecting a shop (SPEC §4; the routes are `routes::shopify`): the authorize URL with a
//! signed state, then the callback's steps — verify (hmac, state, shop, timestamp), connect
//! (code exchange, grant, session, webhooks, self-tests, initial sync queued) and answer
//! (waiting a bounded time for the initial sync, `pending` after it). Every step is its own
//! function.

use std::time::Duration;

use secrecy::SecretString;
use serde::Serialize;
use serde_json::{json, Value};
use url::Url;

use super::catalog::gid_number;
use super::jobs::{ShopifySync, SyncReason, SELF_TEST_EVENT_PREFIX};
use super::subscriptions::{ensure_subscriptions, WebhookStatus};
use crate::config::{NotConfigured, ShopifySettings};
use crate::connect::{ConnectError, Step};
use crate::crypto::secret_bytes;
use crate::ids::MerchantId;
use crate::ids::ShopDomain;
use crate::jobs::{GroupKey, Job};
use crate::oauth_state::Provider;
use crate::platforms::shopify::api::ShopifyApi;
use crate::platforms::shopify::signature::{sign_webhook, verify_oauth_query};
use crate::state::AppState;
use crate::store::events::{EventId, EventStatus};
use crate::store::now_secs;
use crate::store::tokens::ShopGrant;

/// Clock skew tolerated between Shopify's `timestamp` and ours.
const CLOCK_SKEW_SECS: i64 = 300;

fn api(state: &AppState) -> Result<&ShopifyApi, ConnectError> {
    super::api(state).map_err(|_| NotConfigured("Shopify is not configured").into())
}

/// Where the merchant's browser goes to grant the app `shop`, and the browser binding its
/// cookie must carry back (see `oauth_state`). A `merchant` who is already signed in adds the
/// shop to their account.
pub async fn authorize(
    state: &AppState,
    shop: &ShopDomain,
    merchant: Option<MerchantId>,
) -> Result<(Url, String), ConnectError> {
    let (token, browser) = state
        .states
        .issue(Provider::Shopify, merchant, Some(shop.to_string()))
        .await?;
    let url = api(state)?
        .client()
        .authorize_url(shop, &token)
        .map_err(|e| ConnectError::Internal(anyhow::anyhow!(e)))?;
    Ok((url, browser))
}

/// A callback that came from Shopify, for a flow this browser started, for that shop.
pub struct VerifiedRedirect {
    shop: ShopDomain,
    code: String,
    merchant: Option<MerchantId>,
}

/// Checks the callback's `query` (signed by Shopify, with a state this `browser` was given,
/// for the shop the state names, recently).
pub async fn verify(
    state: &AppState,
    settings: &ShopifySettings,
    query: Option<String>,
    browser: Option<&str>,
) -> Result<VerifiedRedirect, ConnectError> {
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
        return Err(ConnectError::Refused(
            "missing code, shop, state, hmac or timestamp parameter".into(),
        ));
    };
    // 1. The redirect really comes from Shopify.
    if !verify_oauth_query(secret_bytes(&settings.api_secret), &params) {
        return Err(ConnectError::Unsigned("invalid hmac signature".into()));
    }
    // 2. For a shop we accept, and a flow we started, for that shop, recently.
    let shop = ShopDomain::parse(shop_raw).map_err(|e| ConnectError::Refused(e.to_string()))?;
    let claims = state
        .states
        .consume(state_token, Provider::Shopify, browser)
        .await?;
    if claims.shop.as_deref() != Some(shop.as_str()) {
        return Err(ConnectError::Refused(
            "OAuth state was issued for another shop".into(),
        ));
    }
    let ts: i64 = timestamp
        .parse()
        .map_err(|_| ConnectError::Refused("invalid timestamp".into()))?;
    if ts + CLOCK_SKEW_SECS < claims.issued_at || ts > now_secs() + CLOCK_SKEW_SECS {
        return Err(ConnectError::Refused("stale OAuth redirect".into()));
    }
    Ok(VerifiedRedirect {
        shop,
        code: code.to_string(),
        merchant: claims.merchant,
    })
}

/// What the connect did, for the answer.
pub struct Connected {
    shop: ShopDomain,
    merchant: MerchantId,
    scope: String,
    /// The merchant's new session (the route sets its cookie).
    pub session_id: String,
    webhook_status: WebhookStatus,
    webhook_test: Step,
    polling_test: Step,
    initial_sync: EventId,
}

/// Stores the grant and sets the shop up: a session for the merchant, webhooks, then the
/// self-tests, then the initial sync (queued: it runs in the shop's group, after anything
/// already queued for the shop, and survives a restart).
pub async fn connect(
    state: &AppState,
    settings: &ShopifySettings,
    redirect: VerifiedRedirect,
) -> Result<Connected, ConnectError> {
    let api = api(state)?;
    let shop = redirect.shop;
    let now = now_secs();
    let (merchant, scope) =
        store_grant(state, api, &shop, &redirect.code, redirect.merchant, now).await?;
    let session_id = state.sessions.create(merchant).await?;
    tracing::info!(%shop, %merchant, "shop connected");

    let webhook_status = match ensure_subscriptions(api, &shop, &settings.webhook_address).await {
        Ok(r) => r.status(),
        Err(e) => WebhookStatus::failed(Step::failed_incident(
            "webhook subscriptions could not be set up",
            &e,
        )),
    };
    let webhook_test = self_test_webhook(state, settings, &shop).await;
    let polling_test = read_shop(state, api, &shop).await?;
    let initial_sync = queue_initial_sync(state, &shop, now).await?;
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

/// Exchanges the code (at a host built from our template and the validated shop) and stores
/// the grant; returns the shop's merchant (new, or the one it had) and the granted scope.
async fn store_grant(
    state: &AppState,
    api: &ShopifyApi,
    shop: &ShopDomain,
    code: &str,
    merchant: Option<MerchantId>,
    now: i64,
) -> Result<(MerchantId, String), ConnectError> {
    let grant = api.client().exchange_code(shop, code).await.map_err(|e| {
        tracing::warn!(%shop, error = %e, "Shopify code exchange failed");
        ConnectError::Upstream("Shopify token exchange failed; start the connection again".into())
    })?;
    let scope = grant.scope.clone();
    let merchant = state
        .tokens
        .save_shop_grant(
            shop,
            ShopGrant {
                access_token: SecretString::from(grant.access_token),
                scopes: scope.clone(),
                expires_at: grant.expires_in.map(|s| now + s),
                refresh_token: grant.refresh_token.map(SecretString::from),
                refresh_token_expires_at: grant.refresh_token_expires_in.map(|s| now + s),
            },
            merchant,
        )
        .await?;
    Ok((merchant, scope))
}

/// The polling self-test: the shop read through the Admin API. Its id is recorded, as
/// lifecycle and compliance webhooks must carry it (see `bodies`).
async fn read_shop(
    state: &AppState,
    api: &ShopifyApi,
    shop: &ShopDomain,
) -> Result<Step, ConnectError> {
    match api
        .query(shop, "Shop", super::queries::SHOP, json!({}))
        .await
    {
        Ok(v) => {
            let id = v
                .pointer("/shop/id")
                .and_then(Value::as_str)
                .and_then(gid_number);
            if let Some(id) = id {
                state.tokens.set_shop_id(shop, id).await?;
            }
            Ok(Step::Success)
        }
        Err(e) => Ok(Step::error_incident(
            "the shop could not be read from Shopify",
            &e,
        )),
    }
}

/// Queues the shop's initial sync, whose progress the merchant's pages follow.
async fn queue_initial_sync(
    state: &AppState,
    shop: &ShopDomain,
    now: i64,
) -> Result<EventId, ConnectError> {
    let installed_at = state
        .tokens
        .shop(shop)
        .await?
        .map(|r| r.installed_at)
        .unwrap_or(now);
    let sync = ShopifySync {
        shop: shop.clone(),
        reason: SyncReason::Initial { installed_at },
    };
    let initial_sync = state.events.enqueue(sync.to_event()).await?.id();
    state
        .events
        .track(GroupKey::shop(shop).into_string(), initial_sync, None)
        .await?;
    Ok(initial_sync)
}

/// The callback's answer (SPEC §4 "Shopify callback JSON"). The JSON has its keys sorted (see
/// `routes::sorted_json`).
#[derive(Debug, Clone, Serialize)]
pub struct ShopifyConnected {
    pub user_uuid: MerchantId,
    pub shop: ShopDomain,
    pub scope: String,
    /// The shop object and the catalogue's counts once the initial sync finished, else null.
    pub shopify_data: Value,
    pub webhook_status: WebhookStatus,
    pub webhook_test: Step,
    pub polling_test: Step,
    pub upload_status: Upload,
}

/// The initial sync's upload: its step and, once it wrote them, what became of each object.
#[derive(Debug, Clone, Serialize)]
pub struct Upload {
    #[serde(flatten)]
    pub step: Step,
    #[serde(flatten)]
    pub objects: Option<UploadedObjects>,
}

/// `written` or `unchanged`, per object (null when the sync did not say).
#[derive(Debug, Clone, Serialize)]
pub struct UploadedObjects {
    pub shop_metadata: Option<Value>,
    pub shop_products: Option<Value>,
}

impl Upload {
    fn step(step: Step) -> Upload {
        Upload {
            step,
            objects: None,
        }
    }
}

/// The SPEC §4 answer, once the initial sync finished or `wait` passed.
pub async fn answer(state: &AppState, c: Connected, wait: Duration) -> ShopifyConnected {
    let (shopify_data, upload_status) = match state.events.wait_for(c.initial_sync, wait).await {
        Ok(Some(o)) if o.status == EventStatus::Done => {
            let mut r = o.result.unwrap_or(Value::Null);
            let mut take = |k: &str| r.get_mut(k).map(Value::take);
            let objects = UploadedObjects {
                shop_metadata: take("shop_metadata"),
                shop_products: take("shop_products"),
            };
            (
                take("summary").unwrap_or(Value::Null),
                Upload {
                    step: Step::Success,
                    objects: Some(objects),
                },
            )
        }
        Ok(Some(o)) if o.status.is_finished() => (
            Value::Null,
            Upload::step(Step::failed_incident(
                "the initial sync failed; it is retried by the daily poll",
                &o.last_error.unwrap_or_default(),
            )),
        ),
        Ok(_) => {
            tracing::info!(shop = %c.shop, "initial sync still running; answering pending");
            (Value::Null, Upload::step(Step::Pending))
        }
        Err(e) => (
            Value::Null,
            Upload::step(Step::error_incident(
                "the initial sync's progress could not be read",
                &e,
            )),
        ),
    };
    ShopifyConnected {
        user_uuid: c.merchant,
        shop: c.shop,
        scope: c.scope,
        shopify_data,
        webhook_status: c.webhook_status,
        webhook_test: c.webhook_test,
        polling_test: c.polling_test,
        upload_status,
    }
}

/// Posts a correctly signed synthetic `products/update` delivery to our own webhook address
/// and expects 200, proving address, signature check and durable intake work end to end.
async fn self_test_webhook(
    state: &AppState,
    settings: &ShopifySettings,
    shop: &ShopDomain,
) -> Step {
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
        Ok(resp) if resp.status().is_success() => Step::Success,
        Ok(resp) => Step::failed(format!("webhook address answered {}", resp.status())),
        Err(e) => Step::failed(format!("webhook address unreachable: {}", e.without_url())),
    }
}
