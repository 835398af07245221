//! The Shopify catalogue store (`catalog.db`, see `migrations/catalog/`, or the shared
//! PostgreSQL database, where its `shops` table is `catalog_shops`): one row per product,
//! collection and discount with its canonical JSON, the inventory item index, per-shop state
//! (full sync generation, reconciliation watermark, a bulk operation to resume), and staging
//! tables for full syncs (`staging.rs`). The PostgreSQL versions of the methods are in
//! `postgres/`.
//!
//! Every writer of a shop's rows runs in the shop's queue group, so a shop's rows never change
//! under a job that reads them.

mod postgres;
mod staging;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::path::Path;

use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

use super::postgres::PgDb;
use super::{sqlite_or, text_enum, Backend, Db, DbKind, StoreError};
use crate::ids::ShopDomain;

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

#[derive(Clone)]
pub struct CatalogStore {
    backend: Backend,
}

impl CatalogStore {
    /// The catalogue in its SQLite file (whole scans open readers of their own on it).
    pub fn open(path: &Path) -> Result<CatalogStore, StoreError> {
        Ok(CatalogStore::new(Db::open(path, DbKind::Catalog)?))
    }

    pub fn new(db: Db) -> CatalogStore {
        CatalogStore {
            backend: Backend::Sqlite(db),
        }
    }

    /// The catalogue in the shared PostgreSQL database (its shop table is `catalog_shops`).
    pub fn on_postgres(pg: PgDb) -> CatalogStore {
        CatalogStore {
            backend: Backend::Postgres(pg),
        }
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Cheap liveness probe for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.backend.ping().await
    }

    pub async fn state(&self, shop: &ShopDomain) -> Result<ShopState, StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::state(pg, shop));
        let s = shop.to_string();
        db.call(move |c| {
            Ok(c.query_row(
                "SELECT generation, full_synced_at, watermark, bulk_operation, bulk_stage,
                            built_at FROM shops WHERE shop = ?1",
                [s],
                |r| {
                    let op: Option<String> = r.get(3)?;
                    let stage: Option<BulkStage> = r.get(4)?;
                    Ok(ShopState {
                        generation: r.get(0)?,
                        full_synced_at: r.get(1)?,
                        watermark: r.get(2)?,
                        bulk: op.zip(stage),
                        built_at: r.get(5)?,
                    })
                },
            )
            .optional()?
            .unwrap_or_default())
        })
        .await
    }

    /// Runs `sql` (whose first parameter is the shop) after making sure the shop's row exists.
    async fn update_shop(
        db: &Db,
        shop: &ShopDomain,
        sql: &'static str,
        values: Vec<rusqlite::types::Value>,
    ) -> Result<(), StoreError> {
        let s = shop.to_string();
        db.call(move |c| {
            c.execute("INSERT OR IGNORE INTO shops (shop) VALUES (?1)", [&s])?;
            let mut all = vec![rusqlite::types::Value::Text(s)];
            all.extend(values);
            c.execute(sql, params_from_iter(all))?;
            Ok(())
        })
        .await
    }

    pub async fn set_shop_body(&self, shop: &ShopDomain, body: Vec<u8>) -> Result<(), StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::set_shop_body(pg, shop, body));
        Self::update_shop(
            db,
            shop,
            "UPDATE shops SET body = ?2 WHERE shop = ?1",
            vec![body.into()],
        )
        .await
    }

    pub async fn shop_body(&self, shop: &ShopDomain) -> Result<Option<Vec<u8>>, StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::shop_body(pg, shop));
        let s = shop.to_string();
        db.call(move |c| {
            Ok(
                c.query_row("SELECT body FROM shops WHERE shop = ?1", [s], |r| r.get(0))
                    .optional()?
                    .flatten(),
            )
        })
        .await
    }

    pub async fn set_watermark(
        &self,
        shop: &ShopDomain,
        watermark: &str,
    ) -> Result<(), StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::set_watermark(pg, shop, watermark));
        Self::update_shop(
            db,
            shop,
            "UPDATE shops SET watermark = ?2 WHERE shop = ?1 AND (watermark IS NULL OR watermark < ?2)",
            vec![watermark.to_string().into()],
        )
        .await
    }

    pub async fn set_bulk(
        &self,
        shop: &ShopDomain,
        bulk: Option<(&str, BulkStage)>,
    ) -> Result<(), StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::set_bulk(pg, shop, bulk));
        let (op, stage) = match bulk {
            Some((op, stage)) => (
                rusqlite::types::Value::Text(op.to_string()),
                rusqlite::types::Value::Text(stage.as_str().to_string()),
            ),
            None => (rusqlite::types::Value::Null, rusqlite::types::Value::Null),
        };
        Self::update_shop(
            db,
            shop,
            "UPDATE shops SET bulk_operation = ?2, bulk_stage = ?3 WHERE shop = ?1",
            vec![op, stage],
        )
        .await
    }

    pub async fn set_built_at(&self, shop: &ShopDomain, at_ms: i64) -> Result<(), StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::set_built_at(pg, shop, at_ms));
        Self::update_shop(
            db,
            shop,
            "UPDATE shops SET built_at = ?2 WHERE shop = ?1",
            vec![at_ms.into()],
        )
        .await
    }

    /// Writes rows (replacing same-id rows) with `generation`; returns how many changed.
    pub async fn put(
        &self,
        shop: &ShopDomain,
        kind: EntityKind,
        rows: Vec<EntityRow>,
        generation: i64,
    ) -> Result<usize, StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::put(pg, shop, kind, rows, generation));
        let s = shop.to_string();
        db.call(move |c| {
            let tx = c.transaction()?;
            let mut changed = 0;
            for row in rows {
                let same: bool = tx
                    .prepare_cached(
                        "SELECT body = ?4 FROM entities WHERE shop = ?1 AND kind = ?2 AND id = ?3",
                    )?
                    .query_row(params![s, kind, row.id, row.body], |r| r.get(0))
                    .optional()?
                    .unwrap_or(false);
                if !same {
                    changed += 1;
                }
                tx.prepare_cached(
                    "INSERT INTO entities (shop, kind, id, body, handle, updated_at, generation)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                         ON CONFLICT(shop, kind, id) DO UPDATE SET body = excluded.body,
                            handle = excluded.handle, updated_at = excluded.updated_at,
                            generation = excluded.generation",
                )?
                .execute(params![
                    s,
                    kind,
                    row.id,
                    row.body,
                    row.handle,
                    row.updated_at,
                    generation
                ])?;
            }
            tx.commit()?;
            Ok(changed)
        })
        .await
    }

    /// Removes rows by id (and, for products, their inventory items); returns how many.
    pub async fn delete(
        &self,
        shop: &ShopDomain,
        kind: EntityKind,
        ids: Vec<i64>,
    ) -> Result<usize, StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::delete(pg, shop, kind, ids));
        let s = shop.to_string();
        db.call(move |c| {
            let tx = c.transaction()?;
            let mut n = 0;
            for id in ids {
                n += tx
                    .prepare_cached(
                        "DELETE FROM entities WHERE shop = ?1 AND kind = ?2 AND id = ?3",
                    )?
                    .execute(params![s, kind, id])?;
                if kind == EntityKind::Product {
                    tx.prepare_cached(
                        "DELETE FROM inventory_items INDEXED BY inventory_items_by_product
                             WHERE shop = ?1 AND product_id = ?2",
                    )?
                    .execute(params![s, id])?;
                }
            }
            tx.commit()?;
            Ok(n)
        })
        .await
    }

    /// Removes every row of `kind` whose id is not in `keep` (the ids-only listing found them
    /// deleted); returns how many. Built on `ids` and `delete`, so it runs on either backend.
    pub async fn retain(
        &self,
        shop: &ShopDomain,
        kind: EntityKind,
        keep: HashSet<i64>,
    ) -> Result<usize, StoreError> {
        let gone: Vec<i64> = self
            .ids(shop, kind)
            .await?
            .into_iter()
            .filter(|id| !keep.contains(id))
            .collect();
        self.delete(shop, kind, gone).await
    }

    pub async fn ids(&self, shop: &ShopDomain, kind: EntityKind) -> Result<Vec<i64>, StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::ids(pg, shop, kind));
        let s = shop.to_string();
        db.call(move |c| {
            let mut st = c.prepare_cached(
                "SELECT id FROM entities WHERE shop = ?1 AND kind = ?2 ORDER BY id",
            )?;
            let v = st
                .query_map(params![s, kind], |r| r.get(0))?
                .collect::<Result<Vec<i64>, _>>()?;
            Ok(v)
        })
        .await
    }

    pub async fn get(
        &self,
        shop: &ShopDomain,
        kind: EntityKind,
        id: i64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::get(pg, shop, kind, id));
        let s = shop.to_string();
        db.call(move |c| {
            Ok(c.prepare_cached(
                "SELECT body FROM entities WHERE shop = ?1 AND kind = ?2 AND id = ?3",
            )?
            .query_row(params![s, kind, id], |r| r.get(0))
            .optional()?)
        })
        .await
    }

    /// Collections whose body lists any of `handles` (a product's handle changed or it went).
    pub async fn collections_listing(
        &self,
        shop: &ShopDomain,
        handles: Vec<String>,
    ) -> Result<Vec<i64>, StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::collections_listing(pg, shop, handles));
        if handles.is_empty() {
            return Ok(Vec::new());
        }
        let s = shop.to_string();
        db.call(move |c| {
            let mut st = c.prepare_cached(
                "SELECT id, body FROM entities WHERE shop = ?1 AND kind = 'collection'",
            )?;
            let mut out = Vec::new();
            let needles: Vec<Vec<u8>> = handles
                .iter()
                .map(|h| serde_json::to_vec(h).unwrap_or_default())
                .collect();
            let rows = st.query_map([s], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
            for row in rows {
                let (id, body) = row?;
                if needles
                    .iter()
                    .any(|n| body.windows(n.len()).any(|w| w == n.as_slice()))
                {
                    out.push(id);
                }
            }
            Ok(out)
        })
        .await
    }

    pub async fn count(&self, shop: &ShopDomain, kind: EntityKind) -> Result<i64, StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::count(pg, shop, kind));
        let s = shop.to_string();
        db.call(move |c| {
            Ok(
                c.prepare_cached("SELECT COUNT(*) FROM entities WHERE shop = ?1 AND kind = ?2")?
                    .query_row(params![s, kind], |r| r.get(0))?,
            )
        })
        .await
    }

    /// Handles of products, for the collections of a bulk edit.
    pub async fn handle_of(
        &self,
        shop: &ShopDomain,
        product: i64,
    ) -> Result<Option<String>, StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::handle_of(pg, shop, product));
        let s = shop.to_string();
        db.call(move |c| {
            Ok(c.prepare_cached(
                "SELECT handle FROM entities WHERE shop = ?1 AND kind = 'product' AND id = ?2",
            )?
            .query_row(params![s, product], |r| r.get(0))
            .optional()?
            .flatten())
        })
        .await
    }

    /// Replaces the inventory items of a product: `(item, variant)` pairs.
    pub async fn set_inventory_items(
        &self,
        shop: &ShopDomain,
        product: i64,
        items: Vec<(i64, i64)>,
    ) -> Result<(), StoreError> {
        self.set_inventory_items_of(shop, vec![(product, items)])
            .await
    }

    /// Replaces the index entries of each product, all in one transaction (a full sync's
    /// batch: one commit, not one per product).
    pub async fn set_inventory_items_of(
        &self,
        shop: &ShopDomain,
        products: Vec<(i64, Vec<(i64, i64)>)>,
    ) -> Result<(), StoreError> {
        let db =
            sqlite_or!(&self.backend, pg => postgres::set_inventory_items_of(pg, shop, products));
        let s = shop.to_string();
        db.call(move |c| {
            let tx = c.transaction()?;
            // The products were just read with every variant: their items' levels too.
            let now = super::now_millis();
            for (product, items) in products {
                // INDEXED BY: without statistics SQLite 3.50 picks the primary key's
                // `shop` prefix instead, a scan of every item of the shop per product
                // (quadratic in a full sync).
                tx.prepare_cached(
                    "DELETE FROM inventory_items INDEXED BY inventory_items_by_product
                         WHERE shop = ?1 AND product_id = ?2",
                )?
                .execute(params![s, product])?;
                for (item, variant) in items {
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO inventory_items
                                (shop, item_id, product_id, variant_id, fetched_at)
                             VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![s, item, product, variant, now])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
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
        let db = sqlite_or!(&self.backend, pg => postgres::mark_fetched(pg, shop, kind, ids, at));
        let s = shop.to_string();
        db.call(move |c| {
            let tx = c.transaction()?;
            for id in ids {
                tx.prepare_cached(
                    "UPDATE entities SET fetched_at = ?4 WHERE shop = ?1 AND kind = ?2 AND id = ?3",
                )?
                .execute(params![s, kind, id, at])?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// When each of these entities was last read on its own (those never read are absent).
    pub async fn fetched_at(
        &self,
        shop: &ShopDomain,
        kind: EntityKind,
        ids: Vec<i64>,
    ) -> Result<std::collections::HashMap<i64, i64>, StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::fetched_at(pg, shop, kind, ids));
        let s = shop.to_string();
        db.call(move |c| {
            let mut out = std::collections::HashMap::new();
            let mut st = c.prepare_cached(
                "SELECT fetched_at FROM entities WHERE shop = ?1 AND kind = ?2 AND id = ?3",
            )?;
            for id in ids {
                let at: Option<Option<i64>> = st
                    .query_row(params![s, kind, id], |r| r.get(0))
                    .optional()?;
                if let Some(Some(at)) = at {
                    out.insert(id, at);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Records that these inventory items' levels were just read.
    pub async fn mark_items_fetched(
        &self,
        shop: &ShopDomain,
        items: Vec<i64>,
        at: i64,
    ) -> Result<(), StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::mark_items_fetched(pg, shop, items, at));
        let s = shop.to_string();
        db.call(move |c| {
            let tx = c.transaction()?;
            for item in items {
                tx.prepare_cached(
                    "UPDATE inventory_items SET fetched_at = ?3 WHERE shop = ?1 AND item_id = ?2",
                )?
                .execute(params![s, item, at])?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// When each of these inventory items' levels were last read.
    pub async fn items_fetched_at(
        &self,
        shop: &ShopDomain,
        items: Vec<i64>,
    ) -> Result<std::collections::HashMap<i64, i64>, StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::items_fetched_at(pg, shop, items));
        let s = shop.to_string();
        db.call(move |c| {
            let mut out = std::collections::HashMap::new();
            let mut st = c.prepare_cached(
                "SELECT fetched_at FROM inventory_items WHERE shop = ?1 AND item_id = ?2",
            )?;
            for item in items {
                let at: Option<Option<i64>> =
                    st.query_row(params![s, item], |r| r.get(0)).optional()?;
                if let Some(Some(at)) = at {
                    out.insert(item, at);
                }
            }
            Ok(out)
        })
        .await
    }

    /// The product an inventory item belongs to, if the index knows it.
    pub async fn product_of_item(
        &self,
        shop: &ShopDomain,
        item: i64,
    ) -> Result<Option<i64>, StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::product_of_item(pg, shop, item));
        let s = shop.to_string();
        db.call(move |c| {
            Ok(c.prepare_cached(
                "SELECT product_id FROM inventory_items WHERE shop = ?1 AND item_id = ?2",
            )?
            .query_row(params![s, item], |r| r.get(0))
            .optional()?)
        })
        .await
    }

    /// Removes everything the store holds of a shop (`shop/redact`, uninstall clean-up).
    pub async fn remove_shop(&self, shop: &ShopDomain) -> Result<(), StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::remove_shop(pg, shop));
        let s = shop.to_string();
        db.call(move |c| {
            let tx = c.transaction()?;
            for t in [
                "entities",
                "inventory_items",
                "staged_products",
                "staged_variants",
                "staged_children",
                "shops",
            ] {
                tx.execute(&format!("DELETE FROM {t} WHERE shop = ?1"), [&s])?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Calls `f` with the body of every row of `kind`, in id order, on a connection of its own
    /// (blocking: run it on the blocking pool). Memory stays at one row whatever the size
    /// (on PostgreSQL: one page of rows, read in a snapshot of its own).
    pub fn for_each_body(
        &self,
        shop: &ShopDomain,
        kind: EntityKind,
        mut f: impl FnMut(&[u8]) -> bool,
    ) -> Result<(), StoreError> {
        // Not `sqlite_or!`: this method is blocking, its PostgreSQL version too.
        let db = match &self.backend {
            Backend::Sqlite(db) => db,
            Backend::Postgres(pg) => return postgres::for_each_body(pg, shop, kind, f),
        };
        // A reader of its own (WAL: a snapshot, never blocking the writer), opened read-only
        // and without the writer's pragmas and migrations, which would take locks.
        let conn = Connection::open_with_flags(
            db.path(),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let mut st =
            conn.prepare("SELECT body FROM entities WHERE shop = ?1 AND kind = ?2 ORDER BY id")?;
        let mut rows = st.query(params![shop.as_str(), kind])?;
        while let Some(r) = rows.next()? {
            let body = r.get_ref(0)?.as_blob().map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    0,
                    rusqlite::types::Type::Blob,
                    Box::new(e),
                )
            })?;
            if !f(body) {
                break;
            }
        }
        Ok(())
    }
}
