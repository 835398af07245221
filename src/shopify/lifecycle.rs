//! A shop's lifecycle: `app/uninstalled`, `shop/redact` and the merchant's own disconnect.
//!
//! Shopify signs a delivery's body, not its headers, and a body says nothing of which install
//! it belongs to: a body captured once (from a log, a proxy, an earlier install) verifies for
//! ever. So a lifecycle delivery is only a hint; what decides is Shopify itself. The stored
//! token is tried with the cheapest query there is (`shop { id }`): Shopify revokes it when the
//! app is uninstalled, so a token that still works means the shop is installed and the
//! delivery is stale or replayed; it changes nothing. `shop/redact` comes 48 hours after an
//! uninstall, so it too is acted on only for a shop that is not installed.
//!
//! The merchant's own disconnect (from their account page) is a job of its own kind: it needs
//! no confirmation, and no delivery can be relabelled as one.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::jobs::ShopifyWebhook;
use super::SyncError;
use crate::ids::{MerchantId, ShopDomain};
use crate::jobs::{DedupeKey, GroupKey, Job, JobError, JobOutput};
use crate::objects::{keys, ObjectKey};
use crate::platforms::shopify::api::ApiError;
use crate::platforms::shopify::client::ShopifyError;
use crate::state::AppState;
use crate::store::events::Pool;
use crate::store::ledger::Deleted;
use crate::store::tokens::AccountStatus;

/// Counts a lifecycle delivery that changed nothing because Shopify says the shop is installed.
fn ignored(topic: &'static str) {
    metrics::counter!("webhooks_ignored_total", "source" => "shopify", "topic" => topic, "reason" => "still_installed")
        .increment(1);
}

/// Whether Shopify still accepts the shop's stored token. `false` when it refuses it (the
/// app was uninstalled), when no usable token is stored, or when the shop is unknown.
/// A failure that says nothing either way (network, 5xx, 403) is an error: the job retries.
pub async fn still_installed(state: &AppState, shop: &ShopDomain) -> Result<bool, SyncError> {
    let api = super::api(state)?;
    match api
        .query(shop, "ShopId", super::queries::SHOP_ID, json!({}))
        .await
    {
        Ok(_) => Ok(true),
        // Refused, and a refresh (if the grant has one) refused too; or nothing to try.
        Err(ApiError::NeedsReauth(..)) | Err(ApiError::NotConnected(_)) => Ok(false),
        Err(ApiError::Shopify(ShopifyError::Unauthorized(_))) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// `app/uninstalled`: the token deleted, polling stopped, the catalogue cache dropped, once
/// Shopify confirms (the token is refused). Returns whether the shop was uninstalled.
pub async fn uninstall(state: &AppState, d: &ShopifyWebhook) -> Result<bool, SyncError> {
    let Some(rec) = state.tokens.shop(&d.shop).await? else {
        return Ok(false);
    };
    if rec.status == AccountStatus::Uninstalled {
        return Ok(false);
    }
    if still_installed(state, &d.shop).await? {
        ignored("app/uninstalled");
        tracing::warn!(shop = %d.shop, "app/uninstalled ignored: Shopify still accepts the shop's token (a stale or replayed delivery)");
        return Ok(false);
    }
    state
        .tokens
        .set_shop_status(
            &d.shop,
            AccountStatus::Uninstalled,
            Some("app/uninstalled".into()),
        )
        .await?;
    state.catalog.remove_shop(&d.shop).await?;
    tracing::info!(shop = %d.shop, "app uninstalled: token deleted, polling stopped");
    end_sessions_without_shops(state, rec.merchant).await?;
    Ok(true)
}

/// `shop/redact`: everything of the shop deleted, unless Shopify says it is installed (a
/// redaction request from before a reinstall, or a replayed one). `None` when ignored.
pub async fn redact(state: &AppState, shop: &ShopDomain) -> Result<Option<usize>, SyncError> {
    let installed = match state.tokens.shop(shop).await? {
        Some(rec) if rec.status != AccountStatus::Uninstalled => {
            still_installed(state, shop).await?
        }
        _ => false,
    };
    if installed {
        ignored("shop/redact");
        tracing::warn!(%shop, "shop/redact ignored: Shopify still accepts the shop's token (a stale or replayed delivery)");
        return Ok(None);
    }
    Ok(Some(redact_shop(state, shop, "shop/redact").await?))
}

/// Deletes everything we hold of a shop: its objects, its catalogue and its records. Each
/// step can be repeated, and the record that names the merchant (and so the objects' prefix)
/// goes last, so a run killed half-way is finished by its retry.
pub async fn redact_shop(
    state: &AppState,
    shop: &ShopDomain,
    why: &str,
) -> Result<usize, SyncError> {
    let deleted;
    if let Some(rec) = state.tokens.shop(shop).await? {
        // Recorded first, where a restore of an older `tokens.db` cannot undo it.
        let what = Deleted::Shop {
            shop: shop.clone(),
            merchant: rec.merchant,
        };
        state.ledger.record(what).await?;
        // No poll or delivery uses the shop while its data goes.
        if rec.status != AccountStatus::Uninstalled {
            state
                .tokens
                .set_shop_status(shop, AccountStatus::Uninstalled, Some(why.to_string()))
                .await?;
        }
        deleted = state
            .objects
            .delete_prefix(&keys::shop_prefix(&rec.merchant, shop))
            .await?;
        end_sessions_without_shops(state, rec.merchant).await?;
        state.catalog.remove_shop(shop).await?;
        state.tokens.delete_shop(shop).await?;
    } else {
        deleted = redact_unknown_shop(state, shop).await?;
        state.catalog.remove_shop(shop).await?;
    }
    state.events.untrack(GroupKey::shop(shop).as_str()).await?;
    tracing::info!(%shop, objects_deleted = deleted, why, "shop data deleted");
    Ok(deleted)
}

/// A shop the database does not know (e.g. after a restore of a backup older than its
/// install) may still have objects: they are found by looking under every merchant's prefix
/// for the shop's folder. Rare and idempotent, so one listing per merchant (16 at a time) is
/// an acceptable cost; each merchant found is recorded in the ledger before its objects go.
async fn redact_unknown_shop(state: &AppState, shop: &ShopDomain) -> Result<usize, SyncError> {
    use futures::{StreamExt, TryStreamExt};
    let merchants = state.objects.merchants().await?;
    let found: Vec<(MerchantId, Vec<ObjectKey>)> = futures::stream::iter(merchants)
        .map(|m| async move {
            let keys = state.objects.list(&keys::shop_prefix(&m, shop)).await?;
            Ok::<_, SyncError>((m, keys))
        })
        .buffer_unordered(16)
        .try_filter(|(_, keys)| futures::future::ready(!keys.is_empty()))
        .try_collect()
        .await?;
    let mut deleted = 0;
    for (merchant, keys) in found {
        let what = Deleted::Shop {
            shop: shop.clone(),
            merchant,
        };
        state.ledger.record(what).await?;
        state.objects.delete_many(&keys).await?;
        tracing::info!(%shop, %merchant, objects = keys.len(), "objects of a shop the database did not know deleted");
        deleted += keys.len();
    }
    Ok(deleted)
}

/// A merchant signs in by connecting a shop; when its last shop is uninstalled or redacted,
/// its sessions end (a browser left signed in could otherwise still connect pages to an
/// account whose owner removed the app). Connecting a shop again signs it in again.
pub(crate) async fn end_sessions_without_shops(
    state: &AppState,
    merchant: MerchantId,
) -> Result<(), SyncError> {
    if !state.tokens.merchant_has_installed_shop(merchant).await? {
        let ended = state.sessions.revoke_merchant(&merchant).await?;
        if ended > 0 {
            tracing::info!(%merchant, sessions = ended, "last shop removed: sessions ended");
        }
    }
    Ok(())
}

/// A merchant disconnecting a shop from their account page: the shop's objects, catalogue
/// and records deleted, in the shop's group (so no sync of it runs meanwhile).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShopDisconnect {
    pub shop: ShopDomain,
    /// Who asked (checked at the form), for the log.
    pub merchant: MerchantId,
    /// One request, one job (a second click while the first runs is its own no-op).
    pub request: uuid::Uuid,
}

impl ShopDisconnect {
    pub fn new(shop: ShopDomain, merchant: MerchantId) -> ShopDisconnect {
        ShopDisconnect {
            shop,
            merchant,
            request: uuid::Uuid::new_v4(),
        }
    }
}

impl Job for ShopDisconnect {
    const KIND: &'static str = "shopify_disconnect";
    const POOL: Pool = Pool::Sync;
    /// Deleting a person's data is compliance work.
    const RETRY_FOREVER: bool = true;
    type Context = AppState;

    fn dedupe_key(&self) -> DedupeKey {
        DedupeKey::new(Self::KIND, &[&self.shop, &self.request])
    }

    fn group(&self) -> GroupKey {
        GroupKey::shop(&self.shop)
    }

    async fn run(state: &AppState, batch: Vec<Self>) -> Result<JobOutput, JobError> {
        let job = &batch[0];
        let owner = state
            .tokens
            .shop(&job.shop)
            .await
            .map_err(SyncError::from)?;
        if owner.is_some_and(|r| r.merchant != job.merchant) {
            // Connected to another account since the request: not this merchant's to delete.
            return Ok(JobOutput::done()
                .with_result(json!({"skipped": "the shop is connected to another account"})));
        }
        tracing::info!(shop = %job.shop, merchant = %job.merchant, "disconnecting a shop at its merchant's request");
        let deleted = redact_shop(state, &job.shop, "disconnected by the merchant").await?;
        Ok(JobOutput::done().with_result(json!({"redacted_objects": deleted})))
    }
}
