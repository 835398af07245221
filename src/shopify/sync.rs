//! Keeping one shop's objects up to date from its catalogue store: full syncs, the
//! reconciliation poll and per-entity changes from webhooks (deleting a shop's data is in
//! `lifecycle`). All of them run only as jobs in the shop's queue group, so no two of them
//! overlap for one shop.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;
use serde_json::{json, Value};

use super::build::{self, Object};
use super::catalog::{row, Fetcher};
use super::entities;
use super::full_sync::{self, FullSync};
use super::SyncError;
use crate::ids::MerchantId;
use crate::ids::ShopDomain;
use crate::objects::PutOutcome;
use crate::state::AppState;
use crate::store::catalog::{CatalogStore, EntityKind, EntityRow};
use crate::store::now_secs;
use crate::store::tokens::AccountStatus;

/// More changed products than this in one batch (a bulk edit in the admin) are read with one
/// `updated_at` search instead of one query each.
const WINDOW_AT: usize = 25;
/// Reconciliation reads products changed since the watermark minus this (clock skew, and
/// changes committed out of order).
const OVERLAP_SECS: i64 = 3600;

#[derive(Debug, Clone, Serialize)]
pub struct SyncOutcome {
    pub shop_metadata: PutOutcome,
    pub shop_products: PutOutcome,
    /// The callback's `shopify_data`: the shop object and counts.
    pub summary: Value,
    /// What was read: `full` (with its report), `reconcile`, `changes`.
    pub detail: Value,
}

impl SyncOutcome {
    pub fn written(&self) -> usize {
        [self.shop_metadata, self.shop_products]
            .iter()
            .filter(|o| **o == PutOutcome::Written)
            .count()
    }
}

/// Entities named by a batch of webhook deliveries.
#[derive(Debug, Default, Clone)]
pub struct Changes {
    /// Changed or deleted entities, each with the time its newest delivery was received (unix
    /// ms; `None`: unknown, so it is read whatever the store holds). Each is read, and removed
    /// when Shopify no longer has it: a deletion is confirmed, never taken from a delivery.
    pub products: BTreeMap<i64, Option<i64>>,
    pub inventory_items: BTreeMap<i64, Option<i64>>,
    pub collections: BTreeMap<i64, Option<i64>>,
    pub discounts: BTreeMap<i64, Option<i64>>,
    /// The earliest time a changed product may have changed (from `X-Shopify-Triggered-At`).
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// A delivery that named no entity: read everything that changed since the watermark.
    pub unknown: bool,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        !self.unknown
            && self.products.is_empty()
            && self.inventory_items.is_empty()
            && self.collections.is_empty()
            && self.discounts.is_empty()
    }
}

/// Notes that a delivery about entity `id` was received at `at` (unix ms, if known).
pub fn noted(map: &mut BTreeMap<i64, Option<i64>>, id: i64, at: Option<i64>) {
    map.entry(id)
        .and_modify(|t| *t = t.zip(at).map(|(a, b)| a.max(b)))
        .or_insert(at);
}

/// The entities of `changed` not read on their own since their newest delivery arrived (a
/// read that started after a delivery holds its change): a burst of deliveries about one
/// product is one query, whatever batches they arrive in.
fn still_unread(
    changed: &BTreeMap<i64, Option<i64>>,
    read_at: &HashMap<i64, i64>,
) -> BTreeSet<i64> {
    changed
        .iter()
        .filter(|(id, at)| match (at, read_at.get(id)) {
            (Some(at), Some(read)) => read < at,
            _ => true,
        })
        .map(|(id, _)| *id)
        .collect()
}

/// The shop's merchant, if it is still connected to them (checked again before objects are
/// written: a redacted shop's objects must never come back).
async fn still_connected(
    state: &AppState,
    shop: &ShopDomain,
    merchant: &MerchantId,
) -> Result<(), SyncError> {
    let current = state.tokens.shop(shop).await?;
    if current
        .as_ref()
        .is_some_and(|r| r.status == AccountStatus::Active && r.merchant == *merchant)
    {
        Ok(())
    } else {
        Err(SyncError::NotConnected(shop.to_string()))
    }
}

async fn summary(state: &AppState, shop: &ShopDomain) -> Result<Value, SyncError> {
    let c = &state.catalog;
    let shop_obj = c
        .shop_body(shop)
        .await?
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    Ok(super::catalog::summary(
        shop_obj,
        c.count(shop, EntityKind::Product).await?,
        c.count(shop, EntityKind::Collection).await?,
        c.count(shop, EntityKind::Discount).await?,
    ))
}

/// Writes the objects that may have changed (unchanged bytes are not written).
async fn write_objects(
    state: &AppState,
    shop: &ShopDomain,
    merchant: &MerchantId,
    which: &[Object],
    detail: Value,
) -> Result<SyncOutcome, SyncError> {
    still_connected(state, shop, merchant).await?;
    let mut out = SyncOutcome {
        shop_metadata: PutOutcome::Unchanged,
        shop_products: PutOutcome::Unchanged,
        summary: summary(state, shop).await?,
        detail,
    };
    for (object, outcome) in build::write_all(state, shop, merchant, which).await? {
        match object {
            Object::Products => out.shop_products = outcome,
            Object::Metadata => out.shop_metadata = outcome,
        }
    }
    Ok(out)
}

/// A full sync: every entity read again, then both objects.
pub async fn full(state: &AppState, shop: &ShopDomain) -> Result<SyncOutcome, SyncError> {
    let merchant = super::api(state)?.merchant(shop).await?;
    let started = std::time::Instant::now();
    let report: FullSync = full_sync::run(state, shop).await?;
    tracing::info!(
        %shop,
        path = report.path,
        products = report.products,
        collections = report.collections,
        discounts = report.discounts,
        removed = report.removed,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "shop catalogue read in full"
    );
    let detail = json!({"read": "full", "full": report});
    write_objects(
        state,
        shop,
        &merchant,
        &[Object::Metadata, Object::Products],
        detail,
    )
    .await
}

/// The reconciliation poll: products changed since the watermark (with an overlap), an
/// ids-only listing to find deletions, collections and discounts; a full sync instead when
/// the catalogue was never complete or its weekly full check is due.
pub async fn reconcile(state: &AppState, shop: &ShopDomain) -> Result<SyncOutcome, SyncError> {
    let api = super::api(state)?;
    let settings = super::settings(state).map_err(|_| SyncError::NotConfigured)?;
    let merchant = api.merchant(shop).await?;
    let catalog = &state.catalog;
    let st = catalog.state(shop).await?;
    let due = st
        .full_synced_at
        .is_none_or(|t| now_secs() - t >= settings.full_sync_every.as_secs() as i64);
    let since = st
        .watermark
        .as_deref()
        .and_then(|w| chrono::DateTime::parse_from_rfc3339(w).ok())
        .map(|w| w.with_timezone(&chrono::Utc) - chrono::Duration::seconds(OVERLAP_SECS));
    let (Some(since), false, true) = (since, due, st.generation > 0) else {
        return full(state, shop).await;
    };
    let f = Fetcher { api, shop };
    // Before anything is read: the stamp of the inventory items the search reads.
    let read_at = crate::store::now_millis();
    full_sync::refresh_shop(&f, catalog).await?;
    let mut changed = 0;
    let mut search = entities::ProductSearch::new(&f, updated_since(since));
    while let Some(batch) = search.next_page().await? {
        changed += store_products(state, shop, st.generation, batch, read_at).await?;
    }
    let newest = search.newest;
    let listed: HashSet<i64> = entities::all_product_ids(&f).await?.into_iter().collect();
    let removed = catalog.retain(shop, EntityKind::Product, listed).await?;
    let (collections, discounts) =
        full_sync::read_collections_and_discounts(&f, catalog, st.generation).await?;
    if let Some(n) = newest {
        catalog.set_watermark(shop, &n).await?;
    }
    let detail = json!({
        "read": "reconcile",
        "products_changed": changed,
        "products_removed": removed,
        "collections": collections,
        "discounts": discounts,
    });
    write_objects(
        state,
        shop,
        &merchant,
        &[Object::Metadata, Object::Products],
        detail,
    )
    .await
}

fn updated_since(t: chrono::DateTime<chrono::Utc>) -> String {
    format!("updated_at:>='{}'", t.format("%Y-%m-%dT%H:%M:%SZ"))
}

/// Stores fetched products (rows and inventory index, its items as read at `read_at`, a time
/// no later than the products' read); returns how many changed.
async fn store_products(
    state: &AppState,
    shop: &ShopDomain,
    generation: i64,
    batch: Vec<entities::FetchedProduct>,
    read_at: i64,
) -> Result<usize, SyncError> {
    let catalog = &state.catalog;
    let mut rows = Vec::with_capacity(batch.len());
    let mut index = Vec::with_capacity(batch.len());
    for p in batch {
        index.push((p.row.id, p.items));
        rows.push(p.row);
    }
    catalog.set_inventory_items_of(shop, index, read_at).await?;
    Ok(catalog
        .put(shop, EntityKind::Product, rows, generation)
        .await?)
}

/// What applying webhook changes did.
pub enum Applied {
    Done(SyncOutcome),
    /// The catalogue was never complete: a full sync must come first.
    NeedsFullSync,
}

/// Applies the entities a batch of deliveries named: each re-fetched (one query per product,
/// one per inventory item, …) or removed, then the objects they are part of rebuilt.
pub async fn apply(
    state: &AppState,
    shop: &ShopDomain,
    changes: Changes,
) -> Result<Applied, SyncError> {
    let api = super::api(state)?;
    let merchant = api.merchant(shop).await?;
    let st = state.catalog.state(shop).await?;
    if st.generation == 0 {
        return Ok(Applied::NeedsFullSync);
    }
    if changes.unknown {
        return Ok(Applied::Done(reconcile(state, shop).await?));
    }
    let mut run = ApplyRun {
        state,
        catalog: &state.catalog,
        shop,
        f: Fetcher { api, shop },
        gen: st.generation,
        started: 0,
        fresh: HashSet::new(),
        stale_handles: Vec::new(),
        products_dirty: false,
        metadata_dirty: false,
        items_read: Vec::new(),
        entities_read: Vec::new(),
    };
    // What still needs reading is decided before anything is read.
    let unread = run.unread(&changes).await?;
    run.products(&changes, &unread.products).await?;
    for item in unread.items {
        run.inventory_item(item).await?;
    }
    run.collections_and_discounts(unread.collections, &unread.discounts)
        .await?;
    // A retry may follow a run that changed the catalogue and then failed to write: the
    // catalogue already holds its changes (nothing looks dirty now), so both objects are
    // rebuilt (written only if their bytes differ).
    let retry = crate::jobs::progress::is_retry();
    let mut which = Vec::new();
    if run.metadata_dirty || retry {
        which.push(Object::Metadata);
    }
    if run.products_dirty || retry {
        which.push(Object::Products);
    }
    let detail = json!({"read": "changes", "products": run.fresh.len()});
    let written = write_objects(state, shop, &merchant, &which, detail).await?;
    // Marked read only now: a run that fails before its objects are written reads its
    // entities again on the retry.
    run.mark_read().await?;
    Ok(Applied::Done(written))
}

/// The entities a batch named that were not read since their delivery arrived.
struct Unread {
    products: BTreeSet<i64>,
    collections: BTreeSet<i64>,
    discounts: BTreeSet<i64>,
    items: BTreeSet<i64>,
}

/// One `apply`: what it read and what it changed so far.
struct ApplyRun<'a> {
    state: &'a AppState,
    catalog: &'a CatalogStore,
    shop: &'a ShopDomain,
    f: Fetcher<'a>,
    gen: i64,
    /// When reading began: entities are marked read as of then.
    started: i64,
    /// Products read in full in this run.
    fresh: HashSet<i64>,
    /// Handles of products that went or changed handle: collections listing them change.
    stale_handles: Vec<String>,
    products_dirty: bool,
    metadata_dirty: bool,
    /// Inventory items and collections/discounts read, marked once the objects are written.
    items_read: Vec<i64>,
    entities_read: Vec<(EntityKind, Vec<i64>)>,
}

impl ApplyRun<'_> {
    /// Of the changes named, those not read since their delivery arrived; reading starts.
    async fn unread(&mut self, changes: &Changes) -> Result<Unread, SyncError> {
        let (catalog, shop) = (self.catalog, self.shop);
        let items = &changes.inventory_items;
        let items_read_at = catalog
            .items_fetched_at(shop, items.keys().copied().collect())
            .await?;
        let unread = Unread {
            products: self.of(EntityKind::Product, &changes.products).await?,
            collections: self
                .of(EntityKind::Collection, &changes.collections)
                .await?,
            discounts: self.of(EntityKind::Discount, &changes.discounts).await?,
            items: still_unread(items, &items_read_at),
        };
        self.started = crate::store::now_millis();
        Ok(unread)
    }

    /// Of `changed` entities of one kind, those not read since their delivery arrived.
    async fn of(
        &self,
        kind: EntityKind,
        changed: &BTreeMap<i64, Option<i64>>,
    ) -> Result<BTreeSet<i64>, SyncError> {
        let ids = changed.keys().copied().collect();
        let read_at = self.catalog.fetched_at(self.shop, kind, ids).await?;
        Ok(still_unread(changed, &read_at))
    }

    /// Named products re-read (with one search for a bulk edit); those Shopify no longer has
    /// removed.
    async fn products(
        &mut self,
        changes: &Changes,
        wanted: &BTreeSet<i64>,
    ) -> Result<(), SyncError> {
        if let (true, Some(since)) = (wanted.len() > WINDOW_AT, changes.since) {
            self.bulk_search(since).await?;
        }
        let per_product: Vec<i64> = wanted
            .iter()
            .filter(|id| !self.fresh.contains(id))
            .copied()
            .collect();
        for id in per_product {
            self.read_product(id).await?;
        }
        Ok(())
    }

    /// Records what this run read, as of its start (after its objects were written).
    async fn mark_read(&mut self) -> Result<(), SyncError> {
        let (catalog, shop, at) = (self.catalog, self.shop, self.started);
        let fresh = self.fresh.iter().copied().collect();
        catalog
            .mark_fetched(shop, EntityKind::Product, fresh, at)
            .await?;
        let items = std::mem::take(&mut self.items_read);
        catalog.mark_items_fetched(shop, items, at).await?;
        for (kind, ids) in std::mem::take(&mut self.entities_read) {
            catalog.mark_fetched(shop, kind, ids, at).await?;
        }
        Ok(())
    }

    async fn remove_product(&mut self, id: i64) -> Result<(), SyncError> {
        let (catalog, shop) = (self.catalog, self.shop);
        self.stale_handles
            .extend(catalog.handle_of(shop, id).await?);
        self.products_dirty |= catalog.delete(shop, EntityKind::Product, vec![id]).await? > 0;
        Ok(())
    }

    /// A bulk edit: one search for everything changed since the first delivery.
    async fn bulk_search(&mut self, since: chrono::DateTime<chrono::Utc>) -> Result<(), SyncError> {
        let since = since - chrono::Duration::seconds(60);
        let mut search = entities::ProductSearch::new(&self.f, updated_since(since));
        while let Some(batch) = search.next_page().await? {
            self.fresh.extend(batch.iter().map(|p| p.row.id));
            self.products_dirty |=
                store_products(self.state, self.shop, self.gen, batch, self.started).await? > 0;
        }
        Ok(())
    }

    /// One product re-read: stored, or removed when Shopify no longer has it.
    async fn read_product(&mut self, id: i64) -> Result<(), SyncError> {
        let old_handle = self.catalog.handle_of(self.shop, id).await?;
        match entities::product(&self.f, id).await? {
            Some(p) => {
                if old_handle.is_some() && old_handle != p.row.handle {
                    self.stale_handles.extend(old_handle);
                }
                self.products_dirty |=
                    store_products(self.state, self.shop, self.gen, vec![p], self.started).await?
                        > 0;
            }
            None => self.remove_product(id).await?,
        }
        self.fresh.insert(id);
        Ok(())
    }

    /// A changed inventory item: patched into its product (or the product read whole).
    async fn inventory_item(&mut self, item: i64) -> Result<(), SyncError> {
        let (catalog, shop) = (self.catalog, self.shop);
        if let Some(p) = catalog.product_of_item(shop, item).await? {
            if self.fresh.contains(&p) {
                return Ok(()); // just read in full
            }
        }
        let Some(change) = entities::inventory_item(&self.f, item).await? else {
            return Ok(()); // the item is gone (its variant's deletion comes as a product update)
        };
        if self.fresh.contains(&change.product) {
            return Ok(());
        }
        let patched = catalog
            .get(shop, EntityKind::Product, change.product)
            .await?
            .and_then(|body| entities::apply_inventory(&body, &change));
        let product = match patched {
            Some(entry) => Some(entities::FetchedProduct {
                row: row(&entry)?,
                items: Vec::new(),
            }),
            // Not in the store, or a variant it does not know: read the whole product.
            None => entities::product(&self.f, change.product).await?,
        };
        if let Some(p) = product {
            let id = p.row.id;
            let changed = if p.items.is_empty() {
                catalog
                    .put(shop, EntityKind::Product, vec![p.row], self.gen)
                    .await?
            } else {
                store_products(self.state, shop, self.gen, vec![p], self.started).await?
            };
            self.products_dirty |= changed > 0;
            self.fresh.insert(id);
        }
        self.items_read.push(item);
        Ok(())
    }

    /// Collections (those named, and those listing a product that went or changed handle) and
    /// discounts re-read or removed.
    async fn collections_and_discounts(
        &mut self,
        mut collections: BTreeSet<i64>,
        discounts: &BTreeSet<i64>,
    ) -> Result<(), SyncError> {
        let (catalog, shop) = (self.catalog, self.shop);
        let stale = std::mem::take(&mut self.stale_handles);
        collections.extend(catalog.collections_listing(shop, stale).await?);
        let f = &self.f;
        self.metadata_dirty |= refresh_entities(
            catalog,
            shop,
            EntityKind::Collection,
            self.gen,
            &collections,
            |id| entities::collection(f, id),
        )
        .await?;
        self.metadata_dirty |= refresh_entities(
            catalog,
            shop,
            EntityKind::Discount,
            self.gen,
            discounts,
            |id| entities::discount(f, id),
        )
        .await?;
        for (kind, read) in [
            (EntityKind::Collection, &collections),
            (EntityKind::Discount, discounts),
        ] {
            self.entities_read
                .push((kind, read.iter().copied().collect()));
        }
        Ok(())
    }
}

/// Reads each wanted row of `kind` once: stored, or deleted when Shopify no longer has it;
/// whether any row changed.
async fn refresh_entities<Fut>(
    catalog: &CatalogStore,
    shop: &ShopDomain,
    kind: EntityKind,
    generation: i64,
    wanted: &BTreeSet<i64>,
    fetch: impl Fn(i64) -> Fut,
) -> Result<bool, SyncError>
where
    Fut: std::future::Future<Output = Result<Option<EntityRow>, SyncError>>,
{
    let mut dirty = false;
    for id in wanted {
        dirty |= match fetch(*id).await? {
            Some(r) => catalog.put(shop, kind, vec![r], generation).await? > 0,
            None => catalog.delete(shop, kind, vec![*id]).await? > 0,
        };
    }
    Ok(dirty)
}
