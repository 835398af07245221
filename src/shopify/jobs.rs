//! Shopify's queued jobs. All of them run in the shop's group, so deliveries, syncs, polls and
//! redaction of one shop never overlap, whichever process or pool runs them.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::lifecycle;
use super::subscriptions::ensure_subscriptions;
use super::sync::{self, noted, Applied, Changes, SyncOutcome};
use super::topics::{EntityTopic, Topic};
use super::{SyncError, REFRESH_DEBOUNCE};
use crate::ids::ShopDomain;
use crate::jobs::{DedupeKey, GroupKey, Job, JobError, JobOutput};
use crate::state::AppState;
use crate::store::events::{Pool, RunId};

/// Event ids of the callback's own signed test delivery start with this; the callback queues
/// the initial sync itself, so the delivery does not fetch again.
pub const SELF_TEST_EVENT_PREFIX: &str = "salesbot-self-test-";

/// A verified webhook delivery. The body is not kept: every topic is answered by re-fetching
/// from the Admin API, and compliance bodies carry customer data we do not store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShopifyWebhook {
    pub topic: Topic,
    pub shop: ShopDomain,
    pub event_id: Option<String>,
    pub webhook_id: Option<String>,
    pub triggered_at: Option<String>,
    /// SHA-256 of topic, shop and body: the dedupe key when Shopify sent no ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The id of the entity the body names (a product, inventory item, collection or code
    /// discount): all that is kept of the body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<i64>,
    /// When the delivery was received (unix ms, our clock). Shopify sends a webhook after the
    /// change is committed, so a read of the entity that started later already holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_ms: Option<i64>,
    /// How long a content delivery waits before it is processed (`SHOPIFY_WEBHOOK_DEBOUNCE_MS`
    /// at intake), so a burst is read once; `REFRESH_DEBOUNCE` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debounce_ms: Option<u64>,
}

impl ShopifyWebhook {
    fn is_self_test(&self) -> bool {
        self.event_id
            .as_deref()
            .is_some_and(|id| id.starts_with(SELF_TEST_EVENT_PREFIX))
    }

    fn triggered_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.triggered_at
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
    }

    /// Adds what this content delivery names to `changes`.
    fn note(&self, changes: &mut Changes) {
        let (Some((kind, _deleted)), Some(id)) = (self.topic.entity(), self.entity) else {
            changes.unknown = true;
            return;
        };
        let at = self.received_ms;
        // A delete is noted like an update: the entity is read, and removed only if Shopify
        // no longer has it. The topic header is not signed, so a captured `products/update`
        // body re-sent as `products/delete` must not be able to remove a product.
        let named = match kind {
            EntityTopic::Product => &mut changes.products,
            EntityTopic::InventoryItem => &mut changes.inventory_items,
            EntityTopic::Collection => &mut changes.collections,
            EntityTopic::Discount => &mut changes.discounts,
        };
        noted(named, id, at);
        // When the change happened (the delivery's receipt if Shopify did not say): where a
        // window search starts. A product it misses is read on its own, so late is safe.
        let happened = self.triggered_at().or_else(|| {
            self.received_ms
                .and_then(chrono::DateTime::from_timestamp_millis)
        });
        if let Some(t) = happened {
            changes.since = Some(changes.since.map_or(t, |s| s.min(t)));
        }
    }
}

fn outcome_json(out: &SyncOutcome) -> serde_json::Value {
    json!({
        "written": out.written(),
        "unchanged": 2 - out.written(),
        "shop_metadata": out.shop_metadata,
        "shop_products": out.shop_products,
        "summary": out.summary,
        "detail": out.detail,
    })
}

impl Job for ShopifyWebhook {
    const KIND: &'static str = "shopify";
    const POOL: Pool = Pool::Sync;
    /// A burst for one shop is one run.
    const MAX_BATCH: usize = 500;
    type Context = AppState;

    /// A content delivery by its content (topic, shop and body): Shopify's redeliveries of
    /// one event carry the same body, and the event id header is not signed, so a captured
    /// body re-sent under fresh ids is still one job. Otherwise Shopify's event id (one per
    /// event, the same across retries), else the webhook id, else the content. (Lifecycle
    /// bodies are not keyed by content: an uninstall after a reinstall may repeat the body of
    /// the one before, and what they do is confirmed with Shopify anyway.)
    fn dedupe_key(&self) -> DedupeKey {
        if let (true, Some(d)) = (self.topic.is_content(), &self.digest) {
            return DedupeKey::new(Self::KIND, &[&"sha256", d]);
        }
        match (&self.event_id, &self.webhook_id, &self.digest) {
            (Some(e), _, _) => DedupeKey::new(Self::KIND, &[&"event", e]),
            (None, Some(w), _) => DedupeKey::new(Self::KIND, &[&"webhook", w]),
            (None, None, d) => {
                DedupeKey::new(Self::KIND, &[&"sha256", &d.as_deref().unwrap_or("")])
            }
        }
    }

    fn group(&self) -> GroupKey {
        GroupKey::shop(&self.shop)
    }

    /// Content deliveries wait so a burst becomes one refresh; lifecycle ones do not.
    fn delay(&self) -> std::time::Duration {
        if self.topic.is_content() {
            self.debounce_ms
                .map(std::time::Duration::from_millis)
                .unwrap_or(REFRESH_DEBOUNCE)
        } else {
            std::time::Duration::ZERO
        }
    }

    /// Redaction is compliance work.
    fn retry_forever(&self) -> bool {
        self.topic == Topic::ShopRedact
    }

    /// Lifecycle topics first, then every entity the content topics name, each read once.
    async fn run(state: &AppState, batch: Vec<Self>) -> Result<JobOutput, JobError> {
        let shop = batch[0].shop.clone();
        let mut changes = Changes::default();
        let mut redact = false;
        let mut uninstalled = false;
        for d in &batch {
            match d.topic {
                Topic::AppUninstalled => uninstalled |= lifecycle::uninstall(state, d).await?,
                Topic::ShopRedact => redact = true,
                Topic::CustomersRedact | Topic::CustomersDataRequest => {
                    // We keep no customer data: nothing to delete or report.
                    tracing::info!(%shop, topic = %d.topic, "compliance request acknowledged (no customer data is stored)");
                }
                // Handled at intake (it only wakes a waiting sync).
                Topic::BulkOperationsFinish => {}
                _ if d.is_self_test() => {}
                _ => d.note(&mut changes),
            }
        }
        if redact {
            return Ok(JobOutput::done().with_result(
                match lifecycle::redact(state, &shop).await? {
                    Some(deleted) => json!({"redacted_objects": deleted}),
                    None => json!({"ignored": "Shopify still accepts the shop's token"}),
                },
            ));
        }
        if changes.is_empty() || uninstalled {
            // Content deliveries that trailed the uninstall in this batch: nothing to read.
            return Ok(JobOutput::done());
        }
        match sync::apply(state, &shop, changes).await {
            Ok(Applied::Done(out)) => Ok(JobOutput::done().with_result(outcome_json(&out))),
            Ok(Applied::NeedsFullSync) => {
                // The catalogue was never complete: its initial sync (queued at connect, the
                // same job) reads everything, these changes included.
                let Some(rec) = state.tokens.shop(&shop).await.map_err(SyncError::from)? else {
                    return Err(JobError::Permanent(format!("shop {shop} is not connected")));
                };
                let full = ShopifySync {
                    shop: shop.clone(),
                    reason: SyncReason::Initial {
                        installed_at: rec.installed_at,
                    },
                };
                Ok(JobOutput::done()
                    .with_result(json!({"read": "queued the initial sync"}))
                    .then(&full))
            }
            // Deliveries can trail an uninstall: nothing to do, and nothing to retry.
            Err(SyncError::NotConnected(s)) => {
                tracing::info!(shop = %s, "delivery for a shop that is not connected; ignored");
                Err(JobError::Permanent(format!("shop {s} is not connected")))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Why a shop's catalogue is synced in full.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum SyncReason {
    /// After a (re)install; unix seconds of that install.
    Initial { installed_at: i64 },
    /// Part of a poll run (scheduled or from the CLI).
    Poll { run: RunId },
}

/// A full catalogue sync of one shop.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShopifySync {
    pub shop: ShopDomain,
    #[serde(flatten)]
    pub reason: SyncReason,
}

impl Job for ShopifySync {
    const KIND: &'static str = "shopify_sync";
    const POOL: Pool = Pool::Sync;
    type Context = AppState;

    fn dedupe_key(&self) -> DedupeKey {
        match self.reason {
            SyncReason::Initial { installed_at } => {
                DedupeKey::new(Self::KIND, &[&self.shop, &"initial", &installed_at])
            }
            SyncReason::Poll { run } => DedupeKey::new(Self::KIND, &[&self.shop, &"run", &run]),
        }
    }

    fn group(&self) -> GroupKey {
        GroupKey::shop(&self.shop)
    }

    async fn run(state: &AppState, batch: Vec<Self>) -> Result<JobOutput, JobError> {
        let job = &batch[0];
        let started = std::time::Instant::now();
        let r = match job.reason {
            SyncReason::Initial { .. } => sync::full(state, &job.shop).await,
            SyncReason::Poll { .. } => sync::reconcile(state, &job.shop).await,
        };
        if matches!(job.reason, SyncReason::Poll { .. }) {
            metrics::counter!("poll_runs_total", "source" => "shopify").increment(1);
            metrics::histogram!("poll_duration_seconds", "source" => "shopify")
                .record(started.elapsed().as_secs_f64());
            if r.is_err() {
                metrics::counter!("poll_failures_total", "source" => "shopify").increment(1);
            }
        }
        let out = r.map_err(|e| {
            tracing::warn!(shop = %job.shop, error = %e, "shop sync failed");
            JobError::from(e)
        })?;
        tracing::info!(
            shop = %job.shop,
            read = %out.detail["read"],
            written = out.written(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "shop synced"
        );
        Ok(JobOutput::done().with_result(outcome_json(&out)))
    }
}

/// The daily check that every webhook topic is still subscribed (Shopify deletes a
/// subscription after 48 hours of failed deliveries); missing ones are re-created.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShopifySubscriptionCheck {
    pub shop: ShopDomain,
    pub run: RunId,
}

impl Job for ShopifySubscriptionCheck {
    const KIND: &'static str = "shopify_subscriptions";
    const POOL: Pool = Pool::Poll;
    type Context = AppState;

    fn dedupe_key(&self) -> DedupeKey {
        DedupeKey::new(Self::KIND, &[&self.shop, &self.run])
    }

    fn group(&self) -> GroupKey {
        GroupKey::shop(&self.shop)
    }

    async fn run(state: &AppState, batch: Vec<Self>) -> Result<JobOutput, JobError> {
        let shop = &batch[0].shop;
        let address = &super::settings(state)
            .map_err(|e| JobError::Permanent(e.to_string()))?
            .webhook_address;
        let api = super::api(state)?;
        let report = ensure_subscriptions(api, shop, address).await?;
        if !report.created.is_empty() {
            metrics::counter!("subscriptions_repaired_total", "platform" => "shopify")
                .increment(report.created.len() as u64);
            tracing::warn!(%shop, missing = ?report.created, "webhook subscriptions were missing and have been re-created");
        }
        Ok(JobOutput::done().with_result(json!({
            "missing": report.created,
            "failures": report.failures.len(),
        })))
    }
}
