//! The Shopify catalogue store (`catalog.db`, see `migrations/catalog/`, or the shared
//! PostgreSQL database, where its `shops` table is `catalog_shops`): one row per product,
//! collection and discount with its canonical JSON, the inventory item index, per-shop state
//! (full sync generation, reconciliation watermark, a bulk operation to resume), and staging
//! tables for full syncs (`staging.rs`).
//!
//! `CatalogStore` holds what is the same on both backends (validating stored values, the
//! clock, building search needles, whole scans as streams: `scan`); `CatalogDb` (with
//! `StagingDb`) is the seam, implemented once per backend (`sqlite`, `postgres`) over the
//! shared SQL (`sql`).
//!
//! Every writer of a shop's rows runs in the shop's queue group, so a shop's rows never change
//! under a job that reads them.

mod corrupt;
mod postgres;
mod scan;
mod sql;
mod sqlite;
mod staging;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use super::postgres::PgDb;
use super::{text_enum, Backend, Db, DbKind, StoreError};
use crate::ids::ShopDomain;
use scan::ScanOut;
use staging::StagingDb;

text_enum!(
    /// What a catalogue row is.
    EntityKind, "catalogue entity kind" {
        Product => "product",
        Collection => "collection",
        Discount => "discount",
    }
);

text_enum!(
    /// Which of a full sync's two bulk operations is running.
    BulkStage, "bulk stage" {
        Products => "products",
        Variants => "variants",
    }
);

/// A shop's catalogue state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShopState {
    /// Number of the last complete full sync; 0: the catalogue was never complete.
    pub generation: i64,
    pub full_synced_at: Option<i64>,
    pub watermark: Option<String>,
    pub bulk: Option<(String, BulkStage)>,
    pub built_at: Option<i64>,
}

/// A row to store.
#[derive(Debug, Clone)]
pub struct EntityRow {
    pub id: i64,
    pub body: Vec<u8>,
    pub handle: Option<String>,
    pub updated_at: Option<String>,
}

/// A shop's row as stored; `CatalogStore::state` validates it.
struct StoredShop {
    generation: i64,
    full_synced_at: Option<i64>,
    watermark: Option<String>,
    bulk_operation: Option<String>,
    bulk_stage: Option<String>,
    built_at: Option<i64>,
}

/// A product and its inventory items' `(item, variant)` pairs.
type ProductItems = (i64, Vec<(i64, i64)>);

/// What each backend does for the catalogue store (and, through `StagingDb`, for full syncs).
/// Each write of a shop's row creates the row when it is missing.
#[async_trait]
trait CatalogDb: StagingDb {
    async fn ping(&self) -> Result<(), StoreError>;
    async fn shop(&self, shop: String) -> Result<Option<StoredShop>, StoreError>;
    async fn shop_body(&self, shop: String) -> Result<Option<Vec<u8>>, StoreError>;
    async fn set_shop_body(&self, shop: String, body: Vec<u8>) -> Result<(), StoreError>;
    /// Only ever moves the watermark forward.
    async fn set_watermark(&self, shop: String, watermark: String) -> Result<(), StoreError>;
    async fn set_bulk(
        &self,
        shop: String,
        bulk: Option<(String, BulkStage)>,
    ) -> Result<(), StoreError>;
    async fn set_built_at(&self, shop: String, at_ms: i64) -> Result<(), StoreError>;
    /// Writes rows (a later row replaces an earlier one of the same id) in one transaction;
    /// returns how many are new or have a different body.
    async fn put(
        &self,
        shop: String,
        kind: EntityKind,
        rows: Vec<EntityRow>,
        generation: i64,
    ) -> Result<usize, StoreError>;
    /// Removes rows (and, for products, their inventory items); returns how many rows.
    async fn delete(
        &self,
        shop: String,
        kind: EntityKind,
        ids: Vec<i64>,
    ) -> Result<usize, StoreError>;
    async fn ids(&self, shop: String, kind: EntityKind) -> Result<Vec<i64>, StoreError>;
    async fn get(
        &self,
        shop: String,
        kind: EntityKind,
        id: i64,
    ) -> Result<Option<Vec<u8>>, StoreError>;
    /// Ids of the shop's collections whose body contains any of `needles`, in id order.
    async fn collections_containing(
        &self,
        shop: String,
        needles: Vec<Vec<u8>>,
    ) -> Result<Vec<i64>, StoreError>;
    async fn count(&self, shop: String, kind: EntityKind) -> Result<i64, StoreError>;
    async fn handle_of(&self, shop: String, product: i64) -> Result<Option<String>, StoreError>;
    /// Replaces the items of each product in turn (an item listed by another product moves;
    /// a product listed twice keeps its later list), read at `read_at`; one transaction.
    async fn set_inventory_items(
        &self,
        shop: String,
        products: Vec<ProductItems>,
        read_at: i64,
    ) -> Result<(), StoreError>;
    async fn mark_fetched(
        &self,
        shop: String,
        kind: EntityKind,
        ids: Vec<i64>,
        at: i64,
    ) -> Result<(), StoreError>;
    async fn fetched_at(
        &self,
        shop: String,
        kind: EntityKind,
        ids: Vec<i64>,
    ) -> Result<HashMap<i64, i64>, StoreError>;
    async fn mark_items_fetched(
        &self,
        shop: String,
        items: Vec<i64>,
        at: i64,
    ) -> Result<(), StoreError>;
    async fn items_fetched_at(
        &self,
        shop: String,
        items: Vec<i64>,
    ) -> Result<HashMap<i64, i64>, StoreError>;
    async fn product_of_item(&self, shop: String, item: i64) -> Result<Option<i64>, StoreError>;
    async fn remove_shop(&self, shop: String) -> Result<(), StoreError>;
    /// Puts the body of every row of `kind` into `out` in id order, all read in one snapshot,
    /// until the end (then `out.finish`) or until `out` says the consumer is gone.
    async fn scan_bodies(
        &self,
        shop: String,
        kind: EntityKind,
        out: ScanOut,
    ) -> Result<(), StoreError>;
}

#[derive(Clone)]
pub struct CatalogStore {
    db: Arc<dyn CatalogDb>,
    backend: Backend,
}

impl CatalogStore {
    /// The catalogue in its SQLite file (whole scans open readers of their own on it).
    pub fn open(path: &Path) -> Result<CatalogStore, StoreError> {
        Ok(CatalogStore::new(Db::open(path, DbKind::Catalog)?))
    }

    /// As `open`, except that a file that is not a database or is corrupt is moved aside
    /// (`<path>.corrupt-<time>`, see `corrupt`) and a fresh, empty catalogue made in its place:
    /// the store and where the old file went. Every shop then has generation 0, which the sync
    /// code reads as "never complete" (the next poll or change reads the shop in full).
    pub fn open_or_replace(path: &Path) -> Result<(CatalogStore, Option<PathBuf>), StoreError> {
        match Db::open(path, DbKind::Catalog) {
            Ok(db) => Ok((CatalogStore::new(db), None)),
            Err(e) if corrupt::is_corrupt(&e) => {
                let aside = corrupt::move_aside(path)?;
                tracing::warn!(
                    path = %path.display(),
                    moved_to = %aside.display(),
                    error = %e,
                    "the catalogue is not a readable database: moved aside, starting with an \
                     empty one (every shop is read again in full from Shopify)"
                );
                let db = Db::open(path, DbKind::Catalog)?;
                Ok((CatalogStore::new(db), Some(aside)))
            }
            Err(e) => Err(e),
        }
    }

    pub fn new(db: Db) -> CatalogStore {
        CatalogStore {
            db: Arc::new(sqlite::SqliteCatalog(db.clone())),
            backend: Backend::Sqlite(db),
        }
    }

    /// The catalogue in the shared PostgreSQL database (its shop table is `catalog_shops`).
    pub fn on_postgres(pg: PgDb) -> CatalogStore {
        CatalogStore {
            db: Arc::new(postgres::PgCatalog(pg.clone())),
            backend: Backend::Postgres(pg),
        }
    }

    /// The database the store was opened on (for tools and tests that read it directly).
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Cheap liveness probe for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.ping().await
    }

    pub async fn state(&self, shop: &ShopDomain) -> Result<ShopState, StoreError> {
        let Some(row) = self.db.shop(shop.to_string()).await? else {
            return Ok(ShopState::default());
        };
        let stage = row.bulk_stage.map(|s| s.parse::<BulkStage>()).transpose()?;
        Ok(ShopState {
            generation: row.generation,
            full_synced_at: row.full_synced_at,
            watermark: row.watermark,
            bulk: row.bulk_operation.zip(stage),
            built_at: row.built_at,
        })
    }

    pub async fn set_shop_body(&self, shop: &ShopDomain, body: Vec<u8>) -> Result<(), StoreError> {
        crate::fence::check()?;
        self.db.set_shop_body(shop.to_string(), body).await
    }

    pub async fn shop_body(&self, shop: &ShopDomain) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.shop_body(shop.to_string()).await
    }

    pub async fn set_watermark(
        &self,
        shop: &ShopDomain,
        watermark: &str,
    ) -> Result<(), StoreError> {
        crate::fence::check()?;
        self.db
            .set_watermark(shop.to_string(), watermark.to_string())
            .await
    }

    pub async fn set_bulk(
        &self,
        shop: &ShopDomain,
        bulk: Option<(&str, BulkStage)>,
    ) -> Result<(), StoreError> {
        crate::fence::check()?;
        let bulk = bulk.map(|(op, stage)| (op.to_string(), stage));
        self.db.set_bulk(shop.to_string(), bulk).await
    }

    pub async fn set_built_at(&self, shop: &ShopDomain, at_ms: i64) -> Result<(), StoreError> {
        crate::fence::check()?;
        self.db.set_built_at(shop.to_string(), at_ms).await
    }

    /// Writes rows (replacing same-id rows) with `generation`; returns how many changed.
    pub async fn put(
        &self,
        shop: &ShopDomain,
        kind: EntityKind,
        rows: Vec<EntityRow>,
        generation: i64,
    ) -> Result<usize, StoreError> {
        crate::fence::check()?;
        self.db.put(shop.to_string(), kind, rows, generation).await
    }

    /// Removes rows by id (and, for products, their inventory items); returns how many.
    pub async fn delete(
        &self,
        shop: &ShopDomain,
        kind: EntityKind,
        ids: Vec<i64>,
    ) -> Result<usize, StoreError> {
        crate::fence::check()?;
        self.db.delete(shop.to_string(), kind, ids).await
    }

    /// Removes every row of `kind` whose id is not in `keep` (the ids-only listing found them
    /// deleted); returns how many.
    pub async fn retain(
        &self,
        shop: &ShopDomain,
        kind: EntityKind,
        keep: HashSet<i64>,
    ) -> Result<usize, StoreError> {
        crate::fence::check()?;
        let gone: Vec<i64> = self
            .ids(shop, kind)
            .await?
            .into_iter()
            .filter(|id| !keep.contains(id))
            .collect();
        self.delete(shop, kind, gone).await
    }

    pub async fn ids(&self, shop: &ShopDomain, kind: EntityKind) -> Result<Vec<i64>, StoreError> {
        self.db.ids(shop.to_string(), kind).await
    }

    pub async fn get(
        &self,
        shop: &ShopDomain,
        kind: EntityKind,
        id: i64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get(shop.to_string(), kind, id).await
    }

    /// Collections whose body lists any of `handles` (a product's handle changed or it went).
    pub async fn collections_listing(
        &self,
        shop: &ShopDomain,
        handles: Vec<String>,
    ) -> Result<Vec<i64>, StoreError> {
        if handles.is_empty() {
            return Ok(Vec::new());
        }
        // The handles as they appear in the bodies: JSON strings, quotes included.
        let needles = handles
            .iter()
            .map(|h| serde_json::to_vec(h).unwrap_or_default())
            .collect();
        self.db
            .collections_containing(shop.to_string(), needles)
            .await
    }

    pub async fn count(&self, shop: &ShopDomain, kind: EntityKind) -> Result<i64, StoreError> {
        self.db.count(shop.to_string(), kind).await
    }

    /// Handles of products, for the collections of a bulk edit.
    pub async fn handle_of(
        &self,
        shop: &ShopDomain,
        product: i64,
    ) -> Result<Option<String>, StoreError> {
        self.db.handle_of(shop.to_string(), product).await
    }

    /// Replaces the inventory items of a product: `(item, variant)` pairs, their levels read
    /// from Shopify at `read_at` (unix ms).
    pub async fn set_inventory_items(
        &self,
        shop: &ShopDomain,
        product: i64,
        items: Vec<(i64, i64)>,
        read_at: i64,
    ) -> Result<(), StoreError> {
        crate::fence::check()?;
        self.set_inventory_items_of(shop, vec![(product, items)], read_at)
            .await
    }

    /// Replaces the index entries of each product, all in one transaction (a full sync's
    /// batch: one commit, not one per product). The products were read with every variant,
    /// so their items' levels count as read at `read_at`: when the reading began, not now.
    /// A delivery that arrived between the read and this write is newer than the stamp and
    /// is applied after it; stamped with the write's time, it would be skipped as read.
    pub async fn set_inventory_items_of(
        &self,
        shop: &ShopDomain,
        products: Vec<(i64, Vec<(i64, i64)>)>,
        read_at: i64,
    ) -> Result<(), StoreError> {
        crate::fence::check()?;
        self.db
            .set_inventory_items(shop.to_string(), products, read_at)
            .await
    }

    /// Records that these entities were just read from Shopify on their own (webhook work):
    /// a delivery about a change older than that read needs no other.
    pub async fn mark_fetched(
        &self,
        shop: &ShopDomain,
        kind: EntityKind,
        ids: Vec<i64>,
        at: i64,
    ) -> Result<(), StoreError> {
        crate::fence::check()?;
        self.db.mark_fetched(shop.to_string(), kind, ids, at).await
    }

    /// When each of these entities was last read on its own (those never read are absent).
    pub async fn fetched_at(
        &self,
        shop: &ShopDomain,
        kind: EntityKind,
        ids: Vec<i64>,
    ) -> Result<HashMap<i64, i64>, StoreError> {
        self.db.fetched_at(shop.to_string(), kind, ids).await
    }

    /// Records that these inventory items' levels were just read.
    pub async fn mark_items_fetched(
        &self,
        shop: &ShopDomain,
        items: Vec<i64>,
        at: i64,
    ) -> Result<(), StoreError> {
        crate::fence::check()?;
        self.db
            .mark_items_fetched(shop.to_string(), items, at)
            .await
    }

    /// When each of these inventory items' levels were last read.
    pub async fn items_fetched_at(
        &self,
        shop: &ShopDomain,
        items: Vec<i64>,
    ) -> Result<HashMap<i64, i64>, StoreError> {
        self.db.items_fetched_at(shop.to_string(), items).await
    }

    /// The product an inventory item belongs to, if the index knows it.
    pub async fn product_of_item(
        &self,
        shop: &ShopDomain,
        item: i64,
    ) -> Result<Option<i64>, StoreError> {
        self.db.product_of_item(shop.to_string(), item).await
    }

    /// Removes everything the store holds of a shop (`shop/redact`, uninstall clean-up).
    pub async fn remove_shop(&self, shop: &ShopDomain) -> Result<(), StoreError> {
        crate::fence::check()?;
        self.db.remove_shop(shop.to_string()).await
    }

    /// The body of every row of `kind`, in id order, all from one snapshot of the catalogue
    /// (on a connection of its own), whatever is written meanwhile. Memory stays at a few
    /// chunks of rows whatever the size: the reading waits for the consumer, who stops it
    /// early by dropping the stream. Nothing is read before the stream is first polled.
    pub fn bodies(
        &self,
        shop: &ShopDomain,
        kind: EntityKind,
    ) -> BoxStream<'static, Result<Bytes, StoreError>> {
        scan::bodies(self.db.clone(), shop.to_string(), kind)
    }
}
