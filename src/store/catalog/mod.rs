//! The Shopify catalogue store (`catalog.db`, see `migrations/catalog/`): one row per product,
//! collection and discount with its canonical JSON, the inventory item index, per-shop state
//! (full sync generation, reconciliation watermark, a bulk operation to resume), and staging
//! tables for full syncs.
//!
//! Every writer of a shop's rows runs in the shop's queue group, so a shop's rows never change
//! under a job that reads them.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

use super::{text_enum, Db, DbKind, StoreError};
use crate::objects::keys::ShopDomain;

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
    db: Db,
    path: PathBuf,
}

/// `?, ?, ?` for `n` parameters.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

impl CatalogStore {
    pub fn open(path: &Path) -> Result<CatalogStore, StoreError> {
        Ok(CatalogStore {
            db: Db::open(path, DbKind::Catalog)?,
            path: path.to_path_buf(),
        })
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub async fn state(&self, shop: &ShopDomain) -> Result<ShopState, StoreError> {
        let s = shop.to_string();
        self.db
            .call(move |c| {
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
        &self,
        shop: &ShopDomain,
        sql: &'static str,
        values: Vec<rusqlite::types::Value>,
    ) -> Result<(), StoreError> {
        let s = shop.to_string();
        self.db
            .call(move |c| {
                c.execute("INSERT OR IGNORE INTO shops (shop) VALUES (?1)", [&s])?;
                let mut all = vec![rusqlite::types::Value::Text(s)];
                all.extend(values);
                c.execute(sql, params_from_iter(all))?;
                Ok(())
            })
            .await
    }

    pub async fn set_shop_body(&self, shop: &ShopDomain, body: Vec<u8>) -> Result<(), StoreError> {
        self.update_shop(
            shop,
            "UPDATE shops SET body = ?2 WHERE shop = ?1",
            vec![body.into()],
        )
        .await
    }

    pub async fn shop_body(&self, shop: &ShopDomain) -> Result<Option<Vec<u8>>, StoreError> {
        let s = shop.to_string();
        self.db
            .call(move |c| {
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
        self.update_shop(
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
        let (op, stage) = match bulk {
            Some((op, stage)) => (
                rusqlite::types::Value::Text(op.to_string()),
                rusqlite::types::Value::Text(stage.as_str().to_string()),
            ),
            None => (rusqlite::types::Value::Null, rusqlite::types::Value::Null),
        };
        self.update_shop(
            shop,
            "UPDATE shops SET bulk_operation = ?2, bulk_stage = ?3 WHERE shop = ?1",
            vec![op, stage],
        )
        .await
    }

    pub async fn set_built_at(&self, shop: &ShopDomain, at_ms: i64) -> Result<(), StoreError> {
        self.update_shop(
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
        let s = shop.to_string();
        self.db
            .call(move |c| {
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
        let s = shop.to_string();
        self.db
            .call(move |c| {
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
    /// deleted); returns how many.
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
        let s = shop.to_string();
        self.db
            .call(move |c| {
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
        let s = shop.to_string();
        self.db
            .call(move |c| {
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
        if handles.is_empty() {
            return Ok(Vec::new());
        }
        let s = shop.to_string();
        self.db
            .call(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT id, body FROM entities WHERE shop = ?1 AND kind = 'collection'",
                )?;
                let mut out = Vec::new();
                let needles: Vec<Vec<u8>> = handles
                    .iter()
                    .map(|h| serde_json::to_vec(h).unwrap_or_default())
                    .collect();
                let rows =
                    st.query_map([s], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
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
        let s = shop.to_string();
        self.db
            .call(move |c| {
                Ok(
                    c.prepare_cached(
                        "SELECT COUNT(*) FROM entities WHERE shop = ?1 AND kind = ?2",
                    )?
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
        let s = shop.to_string();
        self.db
            .call(move |c| {
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
        let s = shop.to_string();
        self.db
            .call(move |c| {
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
        let s = shop.to_string();
        self.db
            .call(move |c| {
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
        let s = shop.to_string();
        self.db
            .call(move |c| {
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
        let s = shop.to_string();
        self.db
            .call(move |c| {
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
        let s = shop.to_string();
        self.db
            .call(move |c| {
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
        let s = shop.to_string();
        self.db
            .call(move |c| {
                Ok(c.prepare_cached(
                    "SELECT product_id FROM inventory_items WHERE shop = ?1 AND item_id = ?2",
                )?
                .query_row(params![s, item], |r| r.get(0))
                .optional()?)
            })
            .await
    }

    // --- full syncs -----------------------------------------------------------------------

    pub async fn clear_staging(&self, shop: &ShopDomain) -> Result<(), StoreError> {
        let s = shop.to_string();
        self.db
            .call(move |c| {
                let tx = c.transaction()?;
                for t in ["staged_products", "staged_variants", "staged_children"] {
                    tx.execute(&format!("DELETE FROM {t} WHERE shop = ?1"), [&s])?;
                }
                tx.commit()?;
                Ok(())
            })
            .await
    }

    /// Inserts staged rows in one transaction: `sql`'s first parameter is the shop, the others
    /// each row's values.
    async fn stage(
        &self,
        shop: &ShopDomain,
        sql: &'static str,
        rows: Vec<Vec<rusqlite::types::Value>>,
    ) -> Result<(), StoreError> {
        let s = rusqlite::types::Value::Text(shop.to_string());
        self.db
            .call(move |c| {
                let tx = c.transaction()?;
                for row in rows {
                    tx.prepare_cached(sql)?
                        .execute(rusqlite::params_from_iter(std::iter::once(&s).chain(&row)))?;
                }
                tx.commit()?;
                Ok(())
            })
            .await
    }

    pub async fn stage_products(
        &self,
        shop: &ShopDomain,
        rows: Vec<(i64, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        let rows = rows
            .into_iter()
            .map(|(id, body)| vec![id.into(), body.into()])
            .collect();
        self.stage(
            shop,
            "INSERT OR REPLACE INTO staged_products (shop, id, body) VALUES (?1, ?2, ?3)",
            rows,
        )
        .await
    }

    /// `(product, variant, body)` rows.
    pub async fn stage_variants(
        &self,
        shop: &ShopDomain,
        rows: Vec<(i64, i64, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        let rows = rows
            .into_iter()
            .map(|(product, id, body)| vec![product.into(), id.into(), body.into()])
            .collect();
        self.stage(
            shop,
            "INSERT OR REPLACE INTO staged_variants (shop, product_id, id, body)
             VALUES (?1, ?2, ?3, ?4)",
            rows,
        )
        .await
    }

    /// `(parent GID, position in the file, body)` rows of a bulk file's child lines.
    pub async fn stage_children(
        &self,
        shop: &ShopDomain,
        rows: Vec<(String, i64, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        let rows = rows
            .into_iter()
            .map(|(parent, seq, body)| vec![parent.into(), seq.into(), body.into()])
            .collect();
        self.stage(
            shop,
            "INSERT OR REPLACE INTO staged_children (shop, parent, seq, body)
             VALUES (?1, ?2, ?3, ?4)",
            rows,
        )
        .await
    }

    /// Staged products after `after` in id order, at most `limit`.
    pub async fn staged_products(
        &self,
        shop: &ShopDomain,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        let s = shop.to_string();
        self.db
            .call(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT id, body FROM staged_products WHERE shop = ?1 AND id > ?2
                     ORDER BY id LIMIT ?3",
                )?;
                let v = st
                    .query_map(params![s, after, limit as i64], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(v)
            })
            .await
    }

    /// Staged variants of these products: `(product, variant, body)` in (product, variant)
    /// order.
    pub async fn staged_variants_of(
        &self,
        shop: &ShopDomain,
        products: Vec<i64>,
    ) -> Result<Vec<(i64, i64, Vec<u8>)>, StoreError> {
        if products.is_empty() {
            return Ok(Vec::new());
        }
        let s = shop.to_string();
        self.db
            .call(move |c| {
                let sql = format!(
                    "SELECT product_id, id, body FROM staged_variants
                     WHERE shop = ? AND product_id IN ({}) ORDER BY product_id, id",
                    placeholders(products.len())
                );
                let mut values: Vec<rusqlite::types::Value> = vec![s.into()];
                values.extend(products.into_iter().map(rusqlite::types::Value::from));
                let mut st = c.prepare(&sql)?;
                let v = st
                    .query_map(params_from_iter(values), |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(v)
            })
            .await
    }

    /// Staged child lines of these parents: `(parent, body)` in file order per parent.
    pub async fn staged_children_of(
        &self,
        shop: &ShopDomain,
        parents: Vec<String>,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        if parents.is_empty() {
            return Ok(Vec::new());
        }
        let s = shop.to_string();
        self.db
            .call(move |c| {
                let sql = format!(
                    "SELECT parent, body FROM staged_children
                     WHERE shop = ? AND parent IN ({}) ORDER BY parent, seq",
                    placeholders(parents.len())
                );
                let mut values: Vec<rusqlite::types::Value> = vec![s.into()];
                values.extend(parents.into_iter().map(rusqlite::types::Value::from));
                let mut st = c.prepare(&sql)?;
                let v = st
                    .query_map(params_from_iter(values), |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(v)
            })
            .await
    }

    /// Ends a full sync: rows it did not see are deleted, the shop's generation and sync
    /// time are recorded, staging is emptied.
    pub async fn finish_full_sync(
        &self,
        shop: &ShopDomain,
        generation: i64,
        now_secs: i64,
    ) -> Result<usize, StoreError> {
        let s = shop.to_string();
        self.db
            .call(move |c| {
                let tx = c.transaction()?;
                let gone = tx.execute(
                    "DELETE FROM entities WHERE shop = ?1 AND generation < ?2",
                    params![s, generation],
                )?;
                tx.execute(
                    "DELETE FROM inventory_items WHERE shop = ?1 AND product_id NOT IN
                        (SELECT id FROM entities WHERE shop = ?1 AND kind = 'product')",
                    [&s],
                )?;
                tx.execute("INSERT OR IGNORE INTO shops (shop) VALUES (?1)", [&s])?;
                tx.execute(
                    "UPDATE shops SET generation = ?2, full_synced_at = ?3, bulk_operation = NULL,
                            bulk_stage = NULL WHERE shop = ?1",
                    params![s, generation, now_secs],
                )?;
                for t in ["staged_products", "staged_variants", "staged_children"] {
                    tx.execute(&format!("DELETE FROM {t} WHERE shop = ?1"), [&s])?;
                }
                tx.commit()?;
                Ok(gone)
            })
            .await
    }

    /// Removes everything the store holds of a shop (`shop/redact`, uninstall clean-up).
    pub async fn remove_shop(&self, shop: &ShopDomain) -> Result<(), StoreError> {
        let s = shop.to_string();
        self.db
            .call(move |c| {
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
    /// (blocking: run it on the blocking pool). Memory stays at one row whatever the size.
    pub fn for_each_body(
        &self,
        shop: &ShopDomain,
        kind: EntityKind,
        mut f: impl FnMut(&[u8]) -> bool,
    ) -> Result<(), StoreError> {
        // A reader of its own (WAL: a snapshot, never blocking the writer), opened read-only
        // and without the writer's pragmas and migrations, which would take locks.
        let conn = Connection::open_with_flags(
            &self.path,
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
