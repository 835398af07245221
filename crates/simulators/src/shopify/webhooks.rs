//! Shopify webhooks: the subscriptions `webhookSubscriptionCreate` stores, the REST-shaped
//! bodies Shopify posts after a change, and the signed deliveries.

use std::time::Duration;

use serde_json::{json, Value};

use super::args::gql_error;
use super::generate::{gid, LOCATION_BASE};
use super::graphql::{Outcome, Reply};
use super::{now_rfc3339, FakeShopify, FakeSubscription, State, TOPIC_ENUM};
use crate::http::{self, Delivery};
use crate::signing;

impl FakeShopify {
    /// Delivers `topic` with `body` to every subscription of it the shop has, as Shopify
    /// does after a change; returns how many deliveries were answered 2xx.
    pub async fn emit_webhook(&self, shop: &str, topic: &str, body: &Value) -> usize {
        let posts = self.st().webhook_posts(shop, topic, body.to_string());
        let client = http::client(Duration::from_secs(10));
        let mut ok = 0;
        for post in posts {
            let status = http::deliver(&client, post).await;
            ok += usize::from(status.is_ok_and(|s| (200..300).contains(&s)));
        }
        ok
    }

    // --- Webhook bodies (REST shapes, as Shopify posts them) --------------------------------

    /// `products/create` / `products/update` body of a product: `id` (numeric),
    /// `admin_graphql_api_id`, `title`, `handle`, `updated_at` and `variants` (`id`,
    /// `inventory_item_id`, `price`), from the current data.
    pub fn product_webhook_body(&self, shop: &str, product: usize) -> Value {
        let mut st = self.st();
        let p = &st.shop_mut(shop).products[product];
        let variants: Vec<Value> = p
            .variants
            .iter()
            .map(|v| {
                json!({
                    "id": v.id,
                    "inventory_item_id": v.inventory_item_id,
                    "price": v.price,
                })
            })
            .collect();
        json!({
            "id": p.id,
            "admin_graphql_api_id": gid("Product", p.id),
            "title": p.title,
            "handle": p.handle,
            "updated_at": p.updated_at,
            "variants": variants,
        })
    }

    /// `inventory_levels/update` body of a variant's `level`-th inventory level:
    /// `inventory_item_id` and `location_id` (numeric), `available`, `updated_at` (the
    /// product's) and `admin_graphql_api_id` (`gid://shopify/InventoryLevel/…`).
    pub fn inventory_level_webhook_body(
        &self,
        shop: &str,
        product: usize,
        variant: usize,
        level: usize,
    ) -> Value {
        let mut st = self.st();
        let p = &st.shop_mut(shop).products[product];
        let v = &p.variants[variant];
        let l = &v.levels[level];
        let location = LOCATION_BASE + l.location as u64;
        json!({
            "inventory_item_id": v.inventory_item_id,
            "location_id": location,
            "available": l.available,
            "updated_at": p.updated_at,
            "admin_graphql_api_id": format!(
                "gid://shopify/InventoryLevel/{location}?inventory_item_id={}",
                v.inventory_item_id
            ),
        })
    }

    /// `collections/create` / `collections/update` body of the `k`-th collection: `id`
    /// (numeric), `admin_graphql_api_id`, `title`, `handle`, `updated_at`.
    pub fn collection_webhook_body(&self, shop: &str, k: usize) -> Value {
        let mut st = self.st();
        let c = &st.shop_mut(shop).collections[k];
        json!({
            "id": c.id,
            "admin_graphql_api_id": gid("Collection", c.id),
            "title": c.title,
            "handle": c.handle,
            "updated_at": c.updated_at,
        })
    }

    /// `discounts/create` / `discounts/update` body of the `k`-th code discount:
    /// `admin_graphql_api_id` (`gid://shopify/DiscountCodeNode/N`), `title`, `status`
    /// (`ACTIVE`, `EXPIRED`, `SCHEDULED`), `created_at`, `updated_at`.
    pub fn discount_webhook_body(&self, shop: &str, k: usize) -> Value {
        let mut st = self.st();
        let d = &st.shop_mut(shop).discounts[k];
        json!({
            "admin_graphql_api_id": gid("DiscountCodeNode", d.id),
            "title": d.title,
            "status": d.status,
            "created_at": d.created_at,
            "updated_at": d.updated_at,
        })
    }

    // --- Webhook subscriptions -------------------------------------------------------------

    /// Stores a subscription as if created earlier; returns its GID.
    pub fn preload_subscription(&self, shop: &str, topic: &str, uri: &str) -> String {
        let mut st = self.st();
        let id = st.next_subscription_id();
        st.shop_mut(shop).subscriptions.push(FakeSubscription {
            id: id.clone(),
            topic: topic.to_string(),
            uri: uri.to_string(),
            format: "JSON".into(),
        });
        id
    }

    pub fn subscriptions(&self, shop: &str) -> Vec<FakeSubscription> {
        self.st()
            .shops
            .get(shop)
            .map(|s| s.subscriptions.clone())
            .unwrap_or_default()
    }

    /// Subscriptions stored by `WebhookSubscriptionCreate` (duplicates refused are not counted).
    pub fn subscription_creates(&self) -> usize {
        self.st().subscription_creates
    }
}

impl State {
    /// The deliveries Shopify makes of `topic` (`products/update`) for `shop`: one per HTTP
    /// subscription of that topic (`PRODUCTS_UPDATE`), signed with the app secret.
    pub(super) fn webhook_posts(&self, shop: &str, topic: &str, body: String) -> Vec<Delivery> {
        let shop = shop.to_string();
        let enum_name = topic.replace('/', "_").to_ascii_uppercase();
        let secret = self.config.api_secret.clone();
        let version = self.config.api_version.clone();
        let hmac = signing::shopify_webhook_hmac(&secret, body.as_bytes());
        self.shops
            .get(&shop)
            .map(|s| s.subscriptions.as_slice())
            .unwrap_or_default()
            .iter()
            .filter(|w| w.topic == enum_name)
            .filter(|w| w.uri.starts_with("http://") || w.uri.starts_with("https://"))
            .map(|w| Delivery {
                uri: w.uri.clone(),
                headers: vec![
                    ("Content-Type", "application/json".to_string()),
                    ("X-Shopify-Topic", topic.to_string()),
                    ("X-Shopify-Shop-Domain", shop.clone()),
                    ("X-Shopify-Hmac-Sha256", hmac.clone()),
                    ("X-Shopify-Event-Id", uuid::Uuid::new_v4().to_string()),
                    ("X-Shopify-Webhook-Id", uuid::Uuid::new_v4().to_string()),
                    ("X-Shopify-Triggered-At", now_rfc3339()),
                    ("X-Shopify-API-Version", version.clone()),
                ],
                body: body.clone().into_bytes(),
            })
            .collect()
    }

    /// `webhookSubscriptionCreate`: one subscription per (topic, address), as on Shopify.
    pub(super) fn create_subscription(&mut self, shop: &str, vars: &Value) -> Reply {
        let topic = vars["topic"].as_str().unwrap_or_default().to_string();
        if !TOPIC_ENUM.contains(&topic.as_str()) {
            return Ok(Outcome::Errors(vec![json!({
                "message": format!(
                    "Variable $topic of type WebhookSubscriptionTopic! was provided invalid value"
                ),
                "locations": [{"line": 1, "column": 35}],
                "extensions": {
                    "code": "INVALID_VARIABLE",
                    "value": vars["topic"],
                    "problems": [{
                        "path": [],
                        "explanation": format!(
                            "Expected \"{topic}\" to be one of: {}",
                            TOPIC_ENUM.join(", ")
                        ),
                    }],
                },
            })]));
        }
        let input = &vars["webhookSubscription"];
        if !input.is_object() {
            return Ok(Outcome::Errors(vec![gql_error(
                "Variable $webhookSubscription of type WebhookSubscriptionInput! was provided invalid value",
                "INVALID_VARIABLE",
            )]));
        }
        let uri = input["uri"]
            .as_str()
            .or_else(|| input["callbackUrl"].as_str())
            .unwrap_or_default()
            .to_string();
        let format = input["format"].as_str().unwrap_or("JSON").to_string();
        let user_error = |message: &str| {
            Outcome::Data(
                json!({"webhookSubscriptionCreate": {
                    "webhookSubscription": null,
                    "userErrors": [{"field": ["webhookSubscription", "callbackUrl"], "message": message}],
                }}),
                10,
            )
        };
        if uri.is_empty() {
            return Ok(user_error("Address can't be blank"));
        }
        if self
            .shop_mut(shop)
            .subscriptions
            .iter()
            .any(|w| w.topic == topic && w.uri == uri)
        {
            return Ok(user_error("Address for this topic has already been taken"));
        }
        let id = self.next_subscription_id();
        let sub = FakeSubscription {
            id: id.clone(),
            topic: topic.clone(),
            uri: uri.clone(),
            format,
        };
        self.shop_mut(shop).subscriptions.push(sub);
        self.subscription_creates += 1;
        Ok(Outcome::Data(
            json!({"webhookSubscriptionCreate": {
                "webhookSubscription": {"id": id, "topic": topic, "uri": uri},
                "userErrors": [],
            }}),
            10,
        ))
    }
}
