//! `POST /shopify/webhook`: verify, record durably, acknowledge. Processing happens in the
//! queue (see `shopify::sync`), never before the 200.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};

use super::bodies;
use super::catalog::gid_number;
use super::jobs::ShopifyWebhook;
use super::topics::{entity_id, Topic};
use crate::crypto::secret_bytes;
use crate::crypto::sha256_hex;
use crate::error::AppError;
use crate::jobs::Job;
use crate::objects::keys::ShopDomain;
use crate::platforms::shopify::signature::verify_webhook;
use crate::state::AppState;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn reject(reason: &'static str) {
    metrics::counter!("webhooks_rejected_total", "source" => "shopify", "reason" => reason)
        .increment(1);
}

pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, AppError> {
    let settings = super::settings(&state)?;

    // 1. Signature over the raw bytes, before anything else is believed.
    let Some(sig) = header(&headers, "x-shopify-hmac-sha256") else {
        reject("missing_signature");
        return Err(AppError::Unauthorized(
            "missing X-Shopify-Hmac-Sha256 header".into(),
        ));
    };
    if !verify_webhook(secret_bytes(&settings.api_secret), &body, sig) {
        reject("bad_signature");
        return Err(AppError::Unauthorized("invalid webhook signature".into()));
    }

    // 2. Required headers.
    let Some(topic) = header(&headers, "x-shopify-topic") else {
        reject("missing_topic");
        return Err(AppError::BadRequest(
            "missing X-Shopify-Topic header".into(),
        ));
    };
    let Some(shop_raw) = header(&headers, "x-shopify-shop-domain") else {
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

    let Some(topic) = Topic::parse(topic) else {
        // Not a topic we subscribe to (the app's configuration may list more): acknowledged,
        // so Shopify does not retry it, and otherwise ignored.
        tracing::info!(%shop, topic, "ignoring a webhook topic this service does not handle");
        return Ok(Json(json!({"status": "success"})));
    };

    // The topic and shop headers are not covered by the signature: a replayed signed body
    // must not be able to uninstall or redact anything. Those topics are acted on only when
    // their body has that topic's shape, names the header's shop and carries its id.
    if bodies::is_checked(topic) {
        check_lifecycle_body(&state, topic, &shop, &body).await?;
    }

    if topic == Topic::BulkOperationsFinish {
        // Only wakes a sync of this shop waiting for its bulk operation (it also polls the
        // operation's status, so nothing is lost without this delivery).
        if let Some(api) = state.shopify.as_deref() {
            api.notify_bulk_finished(&shop);
        }
        metrics::counter!("webhooks_received_total", "source" => "shopify").increment(1);
        return Ok(Json(json!({"status": "success"})));
    }
    // Only the id of the entity a content topic names is kept of the body.
    let entity = topic.entity().and_then(|(kind, _)| {
        serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| entity_id(kind, &v))
    });

    // 3. Durable insert, deduplicated by the job's key (event id, webhook id, or content).
    let delivery = ShopifyWebhook {
        entity,
        received_ms: Some(crate::store::now_millis()),
        debounce_ms: Some(settings.webhook_debounce.as_millis() as u64),
        topic,
        event_id: header(&headers, "x-shopify-event-id").map(str::to_string),
        webhook_id: header(&headers, "x-shopify-webhook-id").map(str::to_string),
        triggered_at: header(&headers, "x-shopify-triggered-at").map(str::to_string),
        digest: Some(sha256_hex(
            &[
                topic.as_str().as_bytes(),
                b"\n",
                shop.as_str().as_bytes(),
                b"\n",
                &body,
            ]
            .concat(),
        )),
        shop,
    };
    let outcome = state.events.enqueue(delivery.to_event()).await?;
    metrics::counter!("webhooks_received_total", "source" => "shopify").increment(1);
    tracing::debug!(shop = %delivery.shop, %topic, ?outcome, "shopify webhook recorded");
    Ok(Json(json!({"status": "success"})))
}

/// Refuses (400, nothing changed) a lifecycle or compliance body that does not have its
/// topic's shape, names another shop, or carries another shop id than the one recorded.
async fn check_lifecycle_body(
    state: &AppState,
    topic: Topic,
    shop: &ShopDomain,
    body: &[u8],
) -> Result<(), AppError> {
    let claimed = bodies::check(topic, body).map_err(|r| {
        reject(r.reason);
        tracing::warn!(%shop, %topic, reason = r.reason, "refused a signed webhook body");
        AppError::BadRequest(r.message)
    })?;
    if claimed.domain != shop.as_str() {
        reject("shop_mismatch");
        tracing::warn!(%shop, %topic, "refused a signed webhook body naming another shop");
        return Err(AppError::BadRequest(format!(
            "{topic} body does not name the shop in X-Shopify-Shop-Domain"
        )));
    }
    match known_shop_id(state, shop).await? {
        Some(id) if id != claimed.shop_id => {
            reject("shop_id_mismatch");
            tracing::warn!(%shop, %topic, "refused a signed webhook body with another shop id");
            Err(AppError::BadRequest(format!(
                "{topic} body does not carry this shop's id"
            )))
        }
        Some(_) => Ok(()),
        None => {
            // Never connected here, or connected before ids were recorded and no longer
            // readable (an uninstalled shop's token is revoked): shape and domain must do.
            metrics::counter!("webhook_shop_id_unverified_total").increment(1);
            tracing::info!(%shop, %topic, "shop id unknown; body checked by shape and domain only");
            Ok(())
        }
    }
}

/// Shopify's id of the shop: as recorded at connect; else (shops connected before ids were
/// recorded) from the catalogue's copy of the shop object, else asked of Shopify once; then
/// recorded.
async fn known_shop_id(state: &AppState, shop: &ShopDomain) -> Result<Option<i64>, AppError> {
    if let Some(id) = state.tokens.shop_id(shop).await? {
        return Ok(Some(id));
    }
    let Some(record) = state.tokens.shop(shop).await? else {
        return Ok(None);
    };
    let from_catalogue = state
        .catalog
        .shop_body(shop)
        .await?
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v.get("id").and_then(Value::as_str).and_then(gid_number));
    let id = match from_catalogue {
        Some(id) => Some(id),
        None if record.access_token.is_some() => fetch_shop_id(state, shop).await,
        None => None,
    };
    if let Some(id) = id {
        state.tokens.set_shop_id(shop, id).await?;
    }
    Ok(id)
}

/// Asks Shopify for the shop's id (bounded: this runs inside Shopify's delivery).
async fn fetch_shop_id(state: &AppState, shop: &ShopDomain) -> Option<i64> {
    let api = state.shopify.as_deref()?;
    let asked = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        api.query(shop, "ShopId", super::queries::SHOP_ID, json!({})),
    )
    .await;
    match asked {
        Ok(Ok(v)) => v
            .pointer("/shop/id")
            .and_then(Value::as_str)
            .and_then(gid_number),
        Ok(Err(e)) => {
            tracing::info!(%shop, error = %e, "could not read the shop's id");
            None
        }
        Err(_) => {
            tracing::info!(%shop, "reading the shop's id timed out");
            None
        }
    }
}
