//! A Shopify webhook delivery taken into the queue (`POST /shopify/webhook`; its signature and
//! headers are checked in `routes::shopify`): recorded durably, acknowledged. Processing
//! happens in the queue (see `shopify::sync`), never before the 200.

use serde_json::{json, Value};

use super::bodies;
use super::catalog::gid_number;
use super::jobs::ShopifyWebhook;
use super::topics::{entity_id, Topic};
use crate::config::ShopifySettings;
use crate::crypto::sha256_hex;
use crate::ids::ShopDomain;
use crate::jobs::{IntakeError, Job};
use crate::state::AppState;

/// Counts a delivery refused, by reason.
pub fn reject(reason: &'static str) {
    metrics::counter!("webhooks_rejected_total", "source" => "shopify", "reason" => reason)
        .increment(1);
}

/// A delivery whose signature verified, with its headers.
pub struct Delivery<'a> {
    /// `X-Shopify-Topic`, as sent.
    pub topic: &'a str,
    pub shop: ShopDomain,
    pub body: &'a [u8],
    pub event_id: Option<&'a str>,
    pub webhook_id: Option<&'a str>,
    pub triggered_at: Option<&'a str>,
}

/// Records the delivery as a job, deduplicated by its key (event id, webhook id, or content).
pub async fn accept(
    state: &AppState,
    settings: &ShopifySettings,
    d: Delivery<'_>,
) -> Result<(), IntakeError> {
    let shop = d.shop;
    let Some(topic) = Topic::parse(d.topic) else {
        // Not a topic we subscribe to (the app's configuration may list more): acknowledged,
        // so Shopify does not retry it, and otherwise ignored.
        tracing::info!(%shop, topic = d.topic, "ignoring a webhook topic this service does not handle");
        return Ok(());
    };

    // The topic and shop headers are not covered by the signature: a replayed signed body
    // must not be able to uninstall or redact anything. Those topics are acted on only when
    // their body has that topic's shape, names the header's shop and carries its id.
    if bodies::is_checked(topic) {
        check_lifecycle_body(state, topic, &shop, d.body).await?;
    }

    if topic == Topic::BulkOperationsFinish {
        // Only wakes a sync of this shop waiting for its bulk operation (it also polls the
        // operation's status, so nothing is lost without this delivery).
        if let Some(api) = state.shopify.as_deref() {
            api.notify_bulk_finished(&shop);
        }
        metrics::counter!("webhooks_received_total", "source" => "shopify").increment(1);
        return Ok(());
    }
    // Only the id of the entity a content topic names is kept of the body.
    let entity = topic.entity().and_then(|(kind, _)| {
        serde_json::from_slice::<Value>(d.body)
            .ok()
            .and_then(|v| entity_id(kind, &v))
    });
    let delivery = ShopifyWebhook {
        entity,
        received_ms: Some(crate::store::now_millis()),
        debounce_ms: Some(settings.webhook_debounce.as_millis() as u64),
        topic,
        event_id: d.event_id.map(str::to_string),
        webhook_id: d.webhook_id.map(str::to_string),
        triggered_at: plausible_triggered_at(d.triggered_at, chrono::Utc::now()),
        digest: Some(sha256_hex(
            &[
                topic.as_str().as_bytes(),
                b"\n",
                shop.as_str().as_bytes(),
                b"\n",
                d.body,
            ]
            .concat(),
        )),
        shop,
    };
    let outcome = state.events.enqueue(delivery.to_event()).await?;
    metrics::counter!("webhooks_received_total", "source" => "shopify").increment(1);
    tracing::debug!(shop = %delivery.shop, %topic, ?outcome, "shopify webhook recorded");
    Ok(())
}

/// `X-Shopify-Triggered-At` further than this from our clock at receipt is not believed.
const TRIGGERED_AT_WINDOW: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// The delivery's `X-Shopify-Triggered-At`, if it is within `TRIGGERED_AT_WINDOW` of `now`.
/// The header is not signed, so a replayed body can come with any time; outside the window
/// the receipt time stands in (a retry of a genuine delivery hours later loses nothing by
/// it: the time only says where a search for changes may start, and a product that search
/// misses is read on its own).
fn plausible_triggered_at(raw: Option<&str>, now: chrono::DateTime<chrono::Utc>) -> Option<String> {
    let raw = raw?;
    let at = chrono::DateTime::parse_from_rfc3339(raw).ok()?;
    if (at.with_timezone(&chrono::Utc) - now).abs() <= TRIGGERED_AT_WINDOW {
        return Some(raw.to_string());
    }
    metrics::counter!("webhook_triggered_at_ignored_total", "source" => "shopify").increment(1);
    tracing::debug!("X-Shopify-Triggered-At outside the window around receipt; receipt time used");
    None
}

/// Refuses (400, nothing changed) a lifecycle or compliance body that does not have its
/// topic's shape, names another shop, or carries another shop id than the one recorded.
async fn check_lifecycle_body(
    state: &AppState,
    topic: Topic,
    shop: &ShopDomain,
    body: &[u8],
) -> Result<(), IntakeError> {
    let claimed = bodies::check(topic, body).map_err(|r| {
        reject(r.reason);
        tracing::warn!(%shop, %topic, reason = r.reason, "refused a signed webhook body");
        IntakeError::Refused(r.message)
    })?;
    if claimed.domain != shop.as_str() {
        reject("shop_mismatch");
        tracing::warn!(%shop, %topic, "refused a signed webhook body naming another shop");
        return Err(IntakeError::Refused(format!(
            "{topic} body does not name the shop in X-Shopify-Shop-Domain"
        )));
    }
    match known_shop_id(state, shop).await? {
        Some(id) if id != claimed.shop_id => {
            reject("shop_id_mismatch");
            tracing::warn!(%shop, %topic, "refused a signed webhook body with another shop id");
            Err(IntakeError::Refused(format!(
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
async fn known_shop_id(state: &AppState, shop: &ShopDomain) -> Result<Option<i64>, IntakeError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_triggered_at_far_from_receipt_is_not_believed() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-07T12:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        for near in [
            "2026-12-07T11:56:00Z",
            "2026-12-07T12:04:59+00:00",
            "2026-12-07T12:00:00Z",
        ] {
            assert_eq!(
                plausible_triggered_at(Some(near), now).as_deref(),
                Some(near)
            );
        }
        for far in [
            "2026-12-07T11:54:59Z",
            "2026-12-07T12:05:01Z",
            "2020-01-01T00:00:00Z",
            "2099-01-01T00:00:00Z",
            "not a time",
        ] {
            assert_eq!(plausible_triggered_at(Some(far), now), None, "{far}");
        }
        assert_eq!(plausible_triggered_at(None, now), None);
    }
}
