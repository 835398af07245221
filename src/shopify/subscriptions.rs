//! Idempotent webhook registration through GraphQL: list what exists (all pages), create only
//! the topics that have no subscription for our address.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;
use serde_json::{json, Value};
use url::Url;

use super::queries as q;
use super::SyncError;
use crate::connect::Step;
use crate::ids::ShopDomain;
use crate::platforms::shopify::api::ShopifyApi;

#[derive(Debug, Default)]
pub struct SubscriptionReport {
    pub created: Vec<&'static str>,
    pub existing: Vec<&'static str>,
    /// (REST topic name, reason)
    pub failures: Vec<(&'static str, String)>,
}

/// The callback's `webhook_status`: its step, and the topics it is about.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookStatus {
    #[serde(flatten)]
    pub step: Step,
    #[serde(flatten)]
    pub topics: Option<Topics>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Topics {
    /// Every topic is registered: those created now and those that were there.
    Registered {
        created: Vec<&'static str>,
        existing: Vec<&'static str>,
    },
    /// The topics that could not be registered, with why.
    Refused {
        topics: BTreeMap<&'static str, String>,
    },
}

impl WebhookStatus {
    /// Nothing could be set up (the shop could not be read or reached).
    pub fn failed(step: Step) -> WebhookStatus {
        WebhookStatus { step, topics: None }
    }
}

impl SubscriptionReport {
    /// The callback's `webhook_status`.
    pub fn status(&self) -> WebhookStatus {
        if self.failures.is_empty() {
            return WebhookStatus {
                step: Step::Success,
                topics: Some(Topics::Registered {
                    created: self.created.clone(),
                    existing: self.existing.clone(),
                }),
            };
        }
        WebhookStatus {
            step: Step::failed(format!(
                "{} of {} topics could not be registered",
                self.failures.len(),
                q::TOPICS.len()
            )),
            topics: Some(Topics::Refused {
                topics: self.failures.iter().cloned().collect(),
            }),
        }
    }
}

fn same_address(a: &str, b: &Url) -> bool {
    a.trim_end_matches('/') == b.as_str().trim_end_matches('/')
}

pub async fn ensure_subscriptions(
    api: &ShopifyApi,
    shop: &ShopDomain,
    address: &Url,
) -> Result<SubscriptionReport, SyncError> {
    let have = registered_topics(api, shop, address).await?;
    let mut report = SubscriptionReport::default();
    for (topic, rest) in q::TOPICS {
        if have.contains(*topic) {
            report.existing.push(rest);
            continue;
        }
        let r = api
            .query(
                shop,
                "WebhookSubscriptionCreate",
                q::WEBHOOK_SUBSCRIPTION_CREATE,
                json!({"topic": topic, "webhookSubscription": {"uri": address.as_str(), "format": "JSON"}}),
            )
            .await
            .map_err(SyncError::from);
        match r {
            Ok(data) => {
                let errors: Vec<String> = data
                    .pointer("/webhookSubscriptionCreate/userErrors")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e.get("message").and_then(Value::as_str).map(str::to_string))
                    .collect();
                if errors.is_empty() {
                    report.created.push(rest);
                } else {
                    report.failures.push((rest, errors.join("; ")));
                }
            }
            // The shop cannot be reached at all: no point trying the other topics.
            Err(e @ (SyncError::NeedsReauth(..) | SyncError::NotConnected(_))) => return Err(e),
            Err(e) => report.failures.push((rest, e.to_string())),
        }
    }
    if !report.failures.is_empty() {
        tracing::warn!(%shop, failures = ?report.failures, "some webhook topics could not be registered");
    }
    Ok(report)
}

/// Every topic subscribed for our address, across all pages of the listing.
async fn registered_topics(
    api: &ShopifyApi,
    shop: &ShopDomain,
    address: &Url,
) -> Result<HashSet<String>, SyncError> {
    let mut have: HashSet<String> = HashSet::new();
    let mut after: Option<String> = None;
    loop {
        let data = api
            .query(
                shop,
                "WebhookSubscriptions",
                q::WEBHOOK_SUBSCRIPTIONS,
                json!({"first": q::WEBHOOKS_PAGE, "after": after}),
            )
            .await?;
        let conn = data
            .get("webhookSubscriptions")
            .cloned()
            .unwrap_or(Value::Null);
        for edge in conn
            .get("edges")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let node = &edge["node"];
            let uri = node.get("uri").and_then(Value::as_str).unwrap_or_default();
            if same_address(uri, address) {
                if let Some(t) = node.get("topic").and_then(Value::as_str) {
                    have.insert(t.to_string());
                }
            }
        }
        let next = conn
            .pointer("/pageInfo/hasNextPage")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let cursor = conn
            .pointer("/pageInfo/endCursor")
            .and_then(Value::as_str)
            .map(str::to_string);
        match (next, cursor) {
            (true, Some(c)) if Some(&c) != after.as_ref() => after = Some(c),
            _ => break,
        }
    }
    Ok(have)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The callback's `webhook_status` in both shapes, byte for byte as the route writes it
    /// (through a `Value`, see `routes::sorted_json`), recorded before the answers were typed
    /// (the connect flows only reach the success shape).
    #[test]
    fn webhook_status_keeps_its_bytes() {
        let json = |s: WebhookStatus| serde_json::to_value(s).unwrap().to_string();
        let registered = SubscriptionReport {
            created: vec!["products/create"],
            existing: vec!["app/uninstalled", "products/update"],
            failures: Vec::new(),
        };
        assert_eq!(
            json(registered.status()),
            r#"{"created":["products/create"],"existing":["app/uninstalled","products/update"],"status":"success"}"#
        );
        let incomplete = SubscriptionReport {
            created: vec!["products/create"],
            existing: Vec::new(),
            failures: vec![
                ("products/update", "Address is invalid".into()),
                (
                    "app/uninstalled",
                    "Shopify is temporarily unavailable".into(),
                ),
            ],
        };
        assert_eq!(
            json(incomplete.status()),
            r#"{"message":"2 of 12 topics could not be registered","status":"failed","topics":{"app/uninstalled":"Shopify is temporarily unavailable","products/update":"Address is invalid"}}"#
        );
    }
}
