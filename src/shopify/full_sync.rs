//! Full syncs (after connect, and weekly): every product, collection and discount read again,
//! written to the store as a new generation, and rows the sync did not see deleted.
//!
//! Products come from two bulk operations (`SHOPIFY_BULK_THRESHOLD`: shops with more products)
//! or from paged queries. Either way they are staged first (products, variants, and a bulk
//! file's child lines in file order) and assembled per product at the end, so memory stays at
//! a page whatever the catalogue's size and whatever order a bulk file's lines come in. Both
//! paths store the same bytes for the same data.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};

use super::bulk::{self, Finished, Unusable};
use super::catalog::{
    at, gid_number, inventory_pairs, page, row, shape_product, shape_variant, with_variants,
    Fetcher,
};
use super::queries as q;
use super::SyncError;
use crate::ids::ShopDomain;
use crate::objects::canonical_json;
use crate::platforms::shopify::client::ShopifyError;
use crate::state::AppState;
use crate::store::catalog::{BulkStage, CatalogStore, EntityKind, EntityRow};
use crate::store::now_secs;

/// Staged rows written per transaction.
const STAGE_BATCH: usize = 500;
/// Products assembled per round.
const ASSEMBLE_BATCH: usize = 200;
/// Where a paged variant carries its complete levels until assembly.
const LEVELS: &str = "__levels";

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FullSync {
    /// `bulk` or `paged`.
    pub path: &'static str,
    pub products: usize,
    pub collections: usize,
    pub discounts: usize,
    /// Rows the sync did not see (deleted at Shopify).
    pub removed: usize,
    /// Why the bulk path was left for the paged one, if it was.
    pub bulk_fallback: Option<String>,
}

fn internal(e: serde_json::Error) -> SyncError {
    SyncError::Internal(format!("serialising a staged row: {e}"))
}

fn newer(newest: &mut Option<String>, node: &Value) {
    if let Some(u) = node.get("updatedAt").and_then(Value::as_str) {
        if newest.as_deref().is_none_or(|n| u > n) {
            *newest = Some(u.to_string());
        }
    }
}

/// A full sync of one shop into the catalogue store (objects are written by the caller).
pub async fn run(state: &AppState, shop: &ShopDomain) -> Result<FullSync, SyncError> {
    let api = super::api(state)?;
    let settings = super::settings(state).map_err(|_| SyncError::NotConfigured)?;
    let f = Fetcher { api, shop };
    let catalog = &state.catalog;
    let st = catalog.state(shop).await?;
    let generation = st.generation + 1;
    let read_at = snapshot_from(&st);
    let count = products_count(&f).await?;
    // Progress is products read (paged) or assembled from the bulk files (bulk).
    crate::jobs::progress::report(0, Some(count)).await;

    let mut report = FullSync::default();
    let mut newest = None;
    let use_bulk = count > settings.bulk_threshold || st.bulk.is_some();
    let mut staged = false;
    if use_bulk {
        match stage_bulk(state, shop, st.bulk.clone()).await? {
            Ok(n) => {
                report.path = "bulk";
                newest = n;
                staged = true;
            }
            Err(Unusable::Busy(why)) => {
                return Err(
                    ShopifyError::Transient(format!("bulk operation refused: {why}")).into(),
                )
            }
            Err(Unusable::Failed(why)) => {
                tracing::warn!(%shop, reason = %why, "bulk operation unusable; reading the catalogue page by page");
                report.bulk_fallback = Some(why);
                catalog.set_bulk(shop, None).await?;
            }
        }
    }
    if !staged {
        report.path = "paged";
        newest = stage_paged(&f, catalog, count).await?;
    }
    let phase = std::time::Instant::now();
    tracing::debug!(%shop, path = report.path, "products and variants staged");
    let progress = staged.then_some(count);
    report.products = assemble(catalog, shop, generation, read_at, progress).await?;
    tracing::debug!(%shop, products = report.products, elapsed_ms = phase.elapsed().as_millis() as u64, "products assembled");
    let phase = std::time::Instant::now();

    // Collections and discounts are few: read page by page.
    (report.collections, report.discounts) =
        read_collections_and_discounts(&f, catalog, generation).await?;
    refresh_shop(&f, catalog).await?;
    tracing::debug!(%shop, elapsed_ms = phase.elapsed().as_millis() as u64, "collections, discounts and shop read");
    let phase = std::time::Instant::now();
    report.removed = catalog
        .finish_full_sync(shop, generation, now_secs())
        .await?;
    tracing::debug!(%shop, elapsed_ms = phase.elapsed().as_millis() as u64, "full sync recorded");
    if let Some(n) = newest {
        catalog.set_watermark(shop, &n).await?;
    }
    Ok(report)
}

/// When the data this sync stores was read from Shopify, for the inventory items' stamps: a
/// delivery that arrived after it is applied after the sync, one that arrived before it is
/// already in the data. Paged reads happen after this run began, and a bulk operation started
/// by this run snapshots the shop after its creation, which is after this run began too: the
/// run's start is early enough for both, so no delivery of the sync's duration is skipped
/// (one that came in the instants before its first read is read once more, harmlessly). A
/// bulk operation resumed from an earlier run was created at a time not recorded, before
/// this run: 0, so every later delivery of its items is applied after the sync.
fn snapshot_from(st: &crate::store::catalog::ShopState) -> i64 {
    if st.bulk.is_some() {
        0
    } else {
        crate::store::now_millis()
    }
}

/// Every collection and code discount, page by page, into the store at `generation`; rows
/// of either kind not seen are deleted. Returns how many of each were read.
pub async fn read_collections_and_discounts(
    f: &Fetcher<'_>,
    catalog: &CatalogStore,
    generation: i64,
) -> Result<(usize, usize), SyncError> {
    let shop = f.shop;
    let mut seen = HashSet::new();
    for node in f
        .all(
            "Collections",
            q::COLLECTIONS,
            "collections",
            json!({"first": q::COLLECTIONS_PAGE}),
        )
        .await?
    {
        let r = row(&f.collection(node).await?)?;
        seen.insert(r.id);
        catalog
            .put(shop, EntityKind::Collection, vec![r], generation)
            .await?;
    }
    catalog
        .retain(shop, EntityKind::Collection, seen.clone())
        .await?;
    let collections = seen.len();
    seen.clear();
    for node in f
        .all(
            "CodeDiscounts",
            q::CODE_DISCOUNTS,
            "codeDiscountNodes",
            json!({"first": q::DISCOUNTS_PAGE}),
        )
        .await?
    {
        let r = row(&f.discount(node).await?)?;
        seen.insert(r.id);
        catalog
            .put(shop, EntityKind::Discount, vec![r], generation)
            .await?;
    }
    catalog
        .retain(shop, EntityKind::Discount, seen.clone())
        .await?;
    Ok((collections, seen.len()))
}

/// The shop object, into the store.
pub async fn refresh_shop(f: &Fetcher<'_>, catalog: &CatalogStore) -> Result<(), SyncError> {
    let data = f.run("Shop", q::SHOP, json!({})).await?;
    let shop_obj = at(&data, "/shop", "Shop")?;
    let body = canonical_json(shop_obj).map_err(internal)?;
    catalog.set_shop_body(f.shop, body).await?;
    Ok(())
}

async fn products_count(f: &Fetcher<'_>) -> Result<u64, SyncError> {
    let data = f.run("ProductsCount", q::PRODUCTS_COUNT, json!({})).await?;
    Ok(data
        .pointer("/productsCount/count")
        .and_then(Value::as_u64)
        .unwrap_or(0))
}

/// Products (with complete metafields) and variants (with complete levels), page by page.
async fn stage_paged(
    f: &Fetcher<'_>,
    catalog: &CatalogStore,
    total: u64,
) -> Result<Option<String>, SyncError> {
    let shop = f.shop;
    catalog.clear_staging(shop).await?;
    let mut newest = None;
    let mut read = 0u64;
    let mut after: Option<String> = None;
    loop {
        let data = f
            .run(
                "Products",
                q::PRODUCTS,
                json!({"first": q::PRODUCTS_PAGE, "after": after, "query": null}),
            )
            .await?;
        let (nodes, next) = page(at(&data, "/products", "Products")?);
        let mut rows = Vec::with_capacity(nodes.len());
        for mut node in nodes {
            let Some(id) = node.get("id").and_then(Value::as_str).and_then(gid_number) else {
                continue;
            };
            newer(&mut newest, &node);
            let metafields = f.metafields_of(&node).await?;
            node["metafields"] = Value::Array(metafields);
            rows.push((id, serde_json::to_vec(&node).map_err(internal)?));
        }
        read += rows.len() as u64;
        catalog.stage_products(shop, rows).await?;
        crate::jobs::progress::report(read, Some(total.max(read))).await;
        match next {
            Some(c) if Some(&c) != after.as_ref() => after = Some(c),
            _ => break,
        }
    }
    let mut after: Option<String> = None;
    loop {
        let data = f
            .run(
                "ProductVariants",
                q::PRODUCT_VARIANTS,
                json!({"first": q::VARIANTS_PAGE, "after": after, "query": null}),
            )
            .await?;
        let (nodes, next) = page(at(&data, "/productVariants", "ProductVariants")?);
        let mut rows = Vec::with_capacity(nodes.len());
        for mut v in nodes {
            let ids = (
                v.pointer("/product/id")
                    .and_then(Value::as_str)
                    .and_then(gid_number),
                v.get("id").and_then(Value::as_str).and_then(gid_number),
            );
            let (Some(product), Some(id)) = ids else {
                continue;
            };
            let levels = f.levels_of(&v).await?;
            v[LEVELS] = Value::Array(levels);
            rows.push((product, id, serde_json::to_vec(&v).map_err(internal)?));
        }
        catalog.stage_variants(shop, rows).await?;
        match next {
            Some(c) if Some(&c) != after.as_ref() => after = Some(c),
            _ => break,
        }
    }
    Ok(newest)
}

/// The two bulk operations (products with metafields, then variants with levels), resumed
/// where a previous run stopped. `Err(Unusable)`: use the paged path (or try later).
async fn stage_bulk(
    state: &AppState,
    shop: &ShopDomain,
    resume: Option<(String, BulkStage)>,
) -> Result<Result<Option<String>, Unusable>, SyncError> {
    let api = super::api(state)?;
    let catalog = &state.catalog;
    let mut newest = None;
    let stages = [BulkStage::Products, BulkStage::Variants];
    let first = match &resume {
        Some((_, BulkStage::Variants)) => 1,
        _ => {
            if resume.is_none() {
                catalog.clear_staging(shop).await?;
            }
            0
        }
    };
    if first == 1 {
        // The products file was read by the run that was cut off; its newest time is in the
        // staged rows.
        newest = staged_newest(catalog, shop).await?;
    }
    for stage in &stages[first..] {
        let document = match stage {
            BulkStage::Products => q::BULK_PRODUCTS,
            BulkStage::Variants => q::BULK_VARIANTS,
        };
        let mut resumed = resume
            .as_ref()
            .filter(|(_, s)| s == stage)
            .map(|(op, _)| op.clone());
        // A result link can expire before it is read: the operation then runs once more.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let op = match resumed.take() {
                Some(op) => op,
                None => match bulk::start(api, shop, document).await? {
                    Ok(op) => op,
                    Err(u) => return Ok(Err(u)),
                },
            };
            catalog.set_bulk(shop, Some((&op, *stage))).await?;
            let phase = std::time::Instant::now();
            let url = match bulk::wait(api, shop, &op).await? {
                Finished::Completed(url) => url,
                Finished::Unusable(u) => return Ok(Err(u)),
            };
            let Some(url) = url else {
                break; // nothing matched: an empty catalogue
            };
            if let Some(mut file) = bulk::ResultFile::open(api, &url).await? {
                let mut sink = Stager::new(catalog, shop, *stage);
                while let Some(line) = file.next().await? {
                    sink.push(line);
                    if sink.full() {
                        sink.flush().await?;
                    }
                }
                sink.flush().await?;
                tracing::debug!(%shop, ?stage, lines = sink.seq, elapsed_ms = phase.elapsed().as_millis() as u64, "bulk operation read");
                if let Some(n) = sink.newest {
                    newest = Some(n);
                }
                break;
            }
            if attempts >= 2 {
                return Ok(Err(Unusable::Failed(
                    "the bulk result link expired twice".into(),
                )));
            }
            tracing::info!(%shop, "the bulk result link expired; running the operation again");
        }
    }
    catalog.set_bulk(shop, None).await?;
    Ok(Ok(newest))
}

async fn staged_newest(
    catalog: &CatalogStore,
    shop: &ShopDomain,
) -> Result<Option<String>, SyncError> {
    let mut newest = None;
    let mut after = 0;
    loop {
        let chunk = catalog.staged_products(shop, after, ASSEMBLE_BATCH).await?;
        let Some(last) = chunk.last().map(|(id, _)| *id) else {
            return Ok(newest);
        };
        for (_, body) in chunk {
            if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                newer(&mut newest, &v);
            }
        }
        after = last;
    }
}

/// Buffers a bulk file's lines by kind and writes them to staging in batches.
struct Stager<'a> {
    catalog: &'a CatalogStore,
    shop: &'a ShopDomain,
    stage: BulkStage,
    seq: i64,
    products: Vec<(i64, Vec<u8>)>,
    variants: Vec<(i64, i64, Vec<u8>)>,
    children: Vec<(String, i64, Vec<u8>)>,
    newest: Option<String>,
    error: Option<SyncError>,
}

impl<'a> Stager<'a> {
    fn new(catalog: &'a CatalogStore, shop: &'a ShopDomain, stage: BulkStage) -> Self {
        Stager {
            catalog,
            shop,
            stage,
            seq: 0,
            products: Vec::new(),
            variants: Vec::new(),
            children: Vec::new(),
            newest: None,
            error: None,
        }
    }

    fn push(&mut self, mut line: Value) {
        self.seq += 1;
        if let Some(parent) = line
            .as_object_mut()
            .and_then(|o| o.remove("__parentId"))
            .and_then(|p| p.as_str().map(str::to_string))
        {
            match serde_json::to_vec(&line) {
                Ok(b) => self.children.push((parent, self.seq, b)),
                Err(e) => self.error = Some(internal(e)),
            }
            return;
        }
        let id = line.get("id").and_then(Value::as_str).and_then(gid_number);
        let bytes = match serde_json::to_vec(&line) {
            Ok(b) => b,
            Err(e) => {
                self.error = Some(internal(e));
                return;
            }
        };
        match (self.stage, id) {
            (BulkStage::Products, Some(id)) => {
                newer(&mut self.newest, &line);
                self.products.push((id, bytes));
            }
            (BulkStage::Variants, Some(id)) => {
                let product = line
                    .pointer("/product/id")
                    .and_then(Value::as_str)
                    .and_then(gid_number);
                if let Some(product) = product {
                    self.variants.push((product, id, bytes));
                }
            }
            _ => {}
        }
    }

    fn full(&self) -> bool {
        self.products.len() + self.variants.len() + self.children.len() >= STAGE_BATCH
    }

    async fn flush(&mut self) -> Result<(), SyncError> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let (shop, catalog) = (self.shop, self.catalog);
        if !self.products.is_empty() {
            catalog
                .stage_products(shop, std::mem::take(&mut self.products))
                .await?;
        }
        if !self.variants.is_empty() {
            catalog
                .stage_variants(shop, std::mem::take(&mut self.variants))
                .await?;
        }
        if !self.children.is_empty() {
            catalog
                .stage_children(shop, std::mem::take(&mut self.children))
                .await?;
        }
        Ok(())
    }
}

/// Builds every staged product's entry and stores it as `generation` (its inventory items
/// as read at `read_at`); returns how many.
/// `progress`: the product total to report progress against (bulk syncs, whose reading is
/// one operation at Shopify).
async fn assemble(
    catalog: &CatalogStore,
    shop: &ShopDomain,
    generation: i64,
    read_at: i64,
    progress: Option<u64>,
) -> Result<usize, SyncError> {
    let mut count = 0;
    let mut after = 0;
    loop {
        let chunk = catalog.staged_products(shop, after, ASSEMBLE_BATCH).await?;
        let Some(last) = chunk.last().map(|(id, _)| *id) else {
            return Ok(count);
        };
        after = last;
        let mut staged = Staged::read(catalog, shop, chunk).await?;
        let mut rows: Vec<EntityRow> = Vec::with_capacity(staged.products.len());
        let mut index: Vec<(i64, Vec<(i64, i64)>)> = Vec::with_capacity(rows.capacity());
        for (id, node) in std::mem::take(&mut staged.products) {
            let raw = staged.variants.remove(&id).unwrap_or_default();
            index.push((id, inventory_pairs(&raw)));
            rows.push(row(&staged.entry(node, raw))?);
        }
        count += rows.len();
        catalog
            .put(shop, EntityKind::Product, rows, generation)
            .await?;
        catalog.set_inventory_items_of(shop, index, read_at).await?;
        if let Some(total) = progress {
            let done = count as u64;
            crate::jobs::progress::report(done, Some(total.max(done))).await;
        }
    }
}

/// One chunk of staged products with their variants and their bulk file's children.
struct Staged {
    products: Vec<(i64, Value)>,
    /// Variants by product id.
    variants: HashMap<i64, Vec<Value>>,
    /// A bulk file's children by parent gid: metafields under their product, levels under
    /// their variant (or its inventory item: either may be named as the parent).
    children: HashMap<String, Vec<Value>>,
}

impl Staged {
    async fn read(
        catalog: &CatalogStore,
        shop: &ShopDomain,
        chunk: Vec<(i64, Vec<u8>)>,
    ) -> Result<Staged, SyncError> {
        let ids: Vec<i64> = chunk.iter().map(|(id, _)| *id).collect();
        let mut variants: HashMap<i64, Vec<Value>> = HashMap::new();
        for (product, _, body) in catalog.staged_variants_of(shop, ids).await? {
            variants
                .entry(product)
                .or_default()
                .push(serde_json::from_slice(&body).map_err(internal)?);
        }
        let products: Vec<(i64, Value)> = chunk
            .into_iter()
            .map(|(id, body)| Ok((id, serde_json::from_slice(&body).map_err(internal)?)))
            .collect::<Result<_, SyncError>>()?;
        let parents = Staged::parents_without_children(&products, &variants);
        let mut children: HashMap<String, Vec<Value>> = HashMap::new();
        for (parent, body) in catalog.staged_children_of(shop, parents).await? {
            children
                .entry(parent)
                .or_default()
                .push(serde_json::from_slice(&body).map_err(internal)?);
        }
        Ok(Staged {
            products,
            variants,
            children,
        })
    }

    /// Products without inline metafields and variants without inline levels: theirs came
    /// as separate lines of a bulk file.
    fn parents_without_children(
        products: &[(i64, Value)],
        variants: &HashMap<i64, Vec<Value>>,
    ) -> Vec<String> {
        let gid = |v: &Value, at: &str| v.pointer(at).and_then(Value::as_str).map(str::to_string);
        let mut parents: Vec<String> = Vec::new();
        for (_, p) in products {
            if !p.get("metafields").is_some_and(Value::is_array) {
                parents.extend(gid(p, "/id"));
            }
        }
        for v in variants.values().flatten() {
            if v.get(LEVELS).is_none() {
                parents.extend(gid(v, "/id"));
                parents.extend(gid(v, "/inventoryItem/id"));
            }
        }
        parents
    }

    /// A product's entry: its node with its metafields and shaped variants.
    fn entry(&mut self, mut node: Value, raw: Vec<Value>) -> Value {
        let gid = node
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let metafields = match node.get_mut("metafields").map(Value::take) {
            Some(Value::Array(m)) => m,
            _ => self.children.remove(&gid).unwrap_or_default(),
        };
        let shaped = raw
            .into_iter()
            .map(|mut v| {
                let levels = match v.as_object_mut().and_then(|o| o.remove(LEVELS)) {
                    Some(Value::Array(l)) => l,
                    _ => self.levels_of(&v),
                };
                shape_variant(v, levels)
            })
            .collect();
        with_variants(shape_product(node, metafields), shaped)
    }

    /// A variant's levels from the bulk file's children, under the variant or its item.
    fn levels_of(&mut self, v: &Value) -> Vec<Value> {
        let vid = v.get("id").and_then(Value::as_str).unwrap_or_default();
        let item = v
            .pointer("/inventoryItem/id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut l = self.children.remove(vid).unwrap_or_default();
        l.extend(self.children.remove(item).unwrap_or_default());
        l
    }
}
