//! The catalogue in `catalog.db`. A batch is a loop of one-row statements in one transaction
//! (SQLite has no arrays, and a cached statement costs microseconds in-process); whole scans
//! read on connections of their own.

mod staging;

use std::collections::HashMap;
use std::path::Path;

use async_trait::async_trait;
use rusqlite::types::{FromSql, ToSql, Value};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::scan::ScanOut;
use super::sql::{self, SQLITE_SHOPS as SHOPS};
use super::{BulkStage, CatalogDb, EntityKind, EntityRow, ProductItems, StoredShop};
use crate::store::sqlite::{numbered, Db};
use crate::store::StoreError;

pub(super) struct SqliteCatalog(pub(super) Db);

/// `values` bound to `$1, $2, …`.
fn bind(values: &[Value]) -> Vec<(&'static str, &dyn ToSql)> {
    let refs: Vec<&dyn ToSql> = values.iter().map(|v| v as &dyn ToSql).collect();
    numbered(&refs)
}

impl SqliteCatalog {
    /// Runs one statement written with `$n` placeholders; returns the rows it changed.
    async fn execute(&self, sql: &'static str, values: Vec<Value>) -> Result<usize, StoreError> {
        self.0
            .call(move |c| Ok(c.prepare_cached(sql)?.execute(bind(&values).as_slice())?))
            .await
    }

    /// The first column of the row `sql` finds, if it finds one.
    async fn optional<T: FromSql + Send + 'static>(
        &self,
        sql: &'static str,
        values: Vec<Value>,
    ) -> Result<Option<T>, StoreError> {
        self.0
            .call(move |c| {
                Ok(c.prepare_cached(sql)?
                    .query_row(bind(&values).as_slice(), |r| r.get(0))
                    .optional()?)
            })
            .await
    }

    /// The first column of every row `sql` finds.
    async fn column<T: FromSql + Send + 'static>(
        &self,
        sql: &'static str,
        values: Vec<Value>,
    ) -> Result<Vec<T>, StoreError> {
        self.0
            .call(move |c| {
                let mut st = c.prepare_cached(sql)?;
                let v = st
                    .query_map(bind(&values).as_slice(), |r| r.get(0))?
                    .collect::<Result<Vec<T>, _>>()?;
                Ok(v)
            })
            .await
    }
}

fn text(kind: EntityKind) -> Value {
    Value::Text(kind.as_str().to_string())
}

#[async_trait]
impl CatalogDb for SqliteCatalog {
    async fn ping(&self) -> Result<(), StoreError> {
        self.0.ping().await
    }

    async fn shop(&self, shop: String) -> Result<Option<StoredShop>, StoreError> {
        self.0
            .call(move |c| {
                let row = c
                    .prepare_cached(SHOPS.state)?
                    .query_row(numbered(&[&shop]).as_slice(), |r| {
                        Ok(StoredShop {
                            generation: r.get(0)?,
                            full_synced_at: r.get(1)?,
                            watermark: r.get(2)?,
                            bulk_operation: r.get(3)?,
                            bulk_stage: r.get(4)?,
                            built_at: r.get(5)?,
                        })
                    })
                    .optional()?;
                Ok(row)
            })
            .await
    }

    async fn shop_body(&self, shop: String) -> Result<Option<Vec<u8>>, StoreError> {
        let body: Option<Option<Vec<u8>>> = self.optional(SHOPS.body, vec![shop.into()]).await?;
        Ok(body.flatten())
    }

    async fn set_shop_body(&self, shop: String, body: Vec<u8>) -> Result<(), StoreError> {
        self.execute(SHOPS.set_body, vec![shop.into(), body.into()])
            .await
            .map(drop)
    }

    async fn set_watermark(&self, shop: String, watermark: String) -> Result<(), StoreError> {
        self.execute(SHOPS.set_watermark, vec![shop.into(), watermark.into()])
            .await
            .map(drop)
    }

    async fn set_bulk(
        &self,
        shop: String,
        bulk: Option<(String, BulkStage)>,
    ) -> Result<(), StoreError> {
        let (op, stage) = bulk.map(|(op, s)| (op, s.as_str().to_string())).unzip();
        self.execute(SHOPS.set_bulk, vec![shop.into(), op.into(), stage.into()])
            .await
            .map(drop)
    }

    async fn set_built_at(&self, shop: String, at_ms: i64) -> Result<(), StoreError> {
        self.execute(SHOPS.set_built_at, vec![shop.into(), at_ms.into()])
            .await
            .map(drop)
    }

    async fn put(
        &self,
        shop: String,
        kind: EntityKind,
        rows: Vec<EntityRow>,
        generation: i64,
    ) -> Result<usize, StoreError> {
        self.0
            .call(move |c| {
                let tx = c.transaction()?;
                let mut changed = 0;
                for row in rows {
                    let same: bool = tx
                        .prepare_cached(
                            "SELECT body = ?4 FROM entities
                             WHERE shop = ?1 AND kind = ?2 AND id = ?3",
                        )?
                        .query_row(params![shop, kind, row.id, row.body], |r| r.get(0))
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
                        shop,
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

    async fn delete(
        &self,
        shop: String,
        kind: EntityKind,
        ids: Vec<i64>,
    ) -> Result<usize, StoreError> {
        self.0
            .call(move |c| {
                let tx = c.transaction()?;
                let mut n = 0;
                for id in ids {
                    n += tx
                        .prepare_cached(
                            "DELETE FROM entities WHERE shop = ?1 AND kind = ?2 AND id = ?3",
                        )?
                        .execute(params![shop, kind, id])?;
                    if kind == EntityKind::Product {
                        delete_items_of(&tx, &shop, id)?;
                    }
                }
                tx.commit()?;
                Ok(n)
            })
            .await
    }

    async fn ids(&self, shop: String, kind: EntityKind) -> Result<Vec<i64>, StoreError> {
        self.column(sql::IDS, vec![shop.into(), text(kind)]).await
    }

    async fn get(
        &self,
        shop: String,
        kind: EntityKind,
        id: i64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.optional(sql::GET, vec![shop.into(), text(kind), id.into()])
            .await
    }

    /// The byte search PostgreSQL does in SQL, done here on each collection's body.
    async fn collections_containing(
        &self,
        shop: String,
        needles: Vec<Vec<u8>>,
    ) -> Result<Vec<i64>, StoreError> {
        self.0
            .call(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT id, body FROM entities WHERE shop = ?1 AND kind = 'collection'",
                )?;
                let mut out = Vec::new();
                let rows = st.query_map([shop], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
                })?;
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

    async fn count(&self, shop: String, kind: EntityKind) -> Result<i64, StoreError> {
        let n = self
            .optional(sql::COUNT, vec![shop.into(), text(kind)])
            .await?;
        Ok(n.unwrap_or(0))
    }

    async fn handle_of(&self, shop: String, product: i64) -> Result<Option<String>, StoreError> {
        let handle: Option<Option<String>> = self
            .optional(sql::HANDLE_OF, vec![shop.into(), product.into()])
            .await?;
        Ok(handle.flatten())
    }

    async fn set_inventory_items(
        &self,
        shop: String,
        products: Vec<ProductItems>,
        read_at: i64,
    ) -> Result<(), StoreError> {
        self.0
            .call(move |c| {
                let tx = c.transaction()?;
                for (product, items) in products {
                    delete_items_of(&tx, &shop, product)?;
                    for (item, variant) in items {
                        tx.prepare_cached(
                            "INSERT INTO inventory_items
                                    (shop, item_id, product_id, variant_id, fetched_at)
                             VALUES (?1, ?2, ?3, ?4, ?5)
                             ON CONFLICT (shop, item_id) DO UPDATE SET
                                product_id = excluded.product_id,
                                variant_id = excluded.variant_id,
                                fetched_at = excluded.fetched_at",
                        )?
                        .execute(params![shop, item, product, variant, read_at])?;
                    }
                }
                tx.commit()?;
                Ok(())
            })
            .await
    }

    async fn mark_fetched(
        &self,
        shop: String,
        kind: EntityKind,
        ids: Vec<i64>,
        at: i64,
    ) -> Result<(), StoreError> {
        self.0
            .call(move |c| {
                let tx = c.transaction()?;
                for id in ids {
                    tx.prepare_cached(
                        "UPDATE entities SET fetched_at = ?4
                         WHERE shop = ?1 AND kind = ?2 AND id = ?3",
                    )?
                    .execute(params![shop, kind, id, at])?;
                }
                tx.commit()?;
                Ok(())
            })
            .await
    }

    async fn fetched_at(
        &self,
        shop: String,
        kind: EntityKind,
        ids: Vec<i64>,
    ) -> Result<HashMap<i64, i64>, StoreError> {
        self.0
            .call(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT fetched_at FROM entities WHERE shop = ?1 AND kind = ?2 AND id = ?3",
                )?;
                fetch_times(ids, |id| {
                    st.query_row(params![shop, kind, id], |r| r.get(0))
                        .optional()
                })
            })
            .await
    }

    async fn mark_items_fetched(
        &self,
        shop: String,
        items: Vec<i64>,
        at: i64,
    ) -> Result<(), StoreError> {
        self.0
            .call(move |c| {
                let tx = c.transaction()?;
                for item in items {
                    tx.prepare_cached(
                        "UPDATE inventory_items SET fetched_at = ?3
                         WHERE shop = ?1 AND item_id = ?2",
                    )?
                    .execute(params![shop, item, at])?;
                }
                tx.commit()?;
                Ok(())
            })
            .await
    }

    async fn items_fetched_at(
        &self,
        shop: String,
        items: Vec<i64>,
    ) -> Result<HashMap<i64, i64>, StoreError> {
        self.0
            .call(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT fetched_at FROM inventory_items WHERE shop = ?1 AND item_id = ?2",
                )?;
                fetch_times(items, |item| {
                    st.query_row(params![shop, item], |r| r.get(0)).optional()
                })
            })
            .await
    }

    async fn product_of_item(&self, shop: String, item: i64) -> Result<Option<i64>, StoreError> {
        self.optional(sql::PRODUCT_OF_ITEM, vec![shop.into(), item.into()])
            .await
    }

    async fn remove_shop(&self, shop: String) -> Result<(), StoreError> {
        self.0
            .call(move |c| {
                let tx = c.transaction()?;
                let all = sql::DELETE_SHOP_ROWS
                    .into_iter()
                    .chain(sql::CLEAR_STAGING)
                    .chain([SHOPS.delete]);
                for statement in all {
                    tx.prepare_cached(statement)?
                        .execute(numbered(&[&shop]).as_slice())?;
                }
                tx.commit()?;
                Ok(())
            })
            .await
    }

    async fn scan_bodies(
        &self,
        shop: String,
        kind: EntityKind,
        out: ScanOut,
    ) -> Result<(), StoreError> {
        let path = self.0.path().to_path_buf();
        tokio::task::spawn_blocking(move || scan(&path, &shop, kind, out))
            .await
            .map_err(|_| StoreError::Closed)?
    }
}

/// Removes a product's inventory items.
fn delete_items_of(c: &Connection, shop: &str, product: i64) -> rusqlite::Result<()> {
    // INDEXED BY: without statistics SQLite 3.50 picks the primary key's `shop` prefix
    // instead, a scan of every item of the shop per product (quadratic in a full sync).
    c.prepare_cached(
        "DELETE FROM inventory_items INDEXED BY inventory_items_by_product
         WHERE shop = ?1 AND product_id = ?2",
    )?
    .execute(params![shop, product])?;
    Ok(())
}

/// The fetch time `read` finds for each key, leaving out keys without a row or a time.
fn fetch_times(
    keys: Vec<i64>,
    mut read: impl FnMut(i64) -> rusqlite::Result<Option<Option<i64>>>,
) -> Result<HashMap<i64, i64>, StoreError> {
    let mut out = HashMap::new();
    for key in keys {
        if let Some(Some(at)) = read(key)? {
            out.insert(key, at);
        }
    }
    Ok(out)
}

/// A whole scan, on the blocking thread it runs on.
fn scan(path: &Path, shop: &str, kind: EntityKind, mut out: ScanOut) -> Result<(), StoreError> {
    // A reader of its own (WAL: a snapshot, never blocking the writer), opened read-only and
    // without the writer's pragmas and migrations, which would take locks.
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // One statement is one read transaction: every row comes from the snapshot its first
    // step saw, however long the consumer takes and whatever is committed meanwhile.
    let mut st = conn.prepare(sql::BODIES)?;
    let mut rows = st.query(numbered(&[&shop, &kind]).as_slice())?;
    while let Some(r) = rows.next()? {
        let body = r.get_ref(0)?.as_blob().map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e))
        })?;
        if !out.push_blocking(body) {
            // The consumer dropped the stream.
            return Ok(());
        }
    }
    out.finish_blocking();
    Ok(())
}
