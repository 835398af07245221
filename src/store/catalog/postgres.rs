//! The catalogue on PostgreSQL: the same rows as `catalog.db` (its `shops` table is
//! `catalog_shops` here). Batches stay batches: a batch of rows is one statement over arrays
//! (`UNNEST`, `ANY`) in one transaction, never a round trip per row.
//!
//! SQLite's batch loops handle rows one after the other, so a batch may name one key twice
//! (the later row wins). One `INSERT … ON CONFLICT DO UPDATE` cannot touch a row twice, so a
//! batch is cut into runs without a repeated key, run one after the other in the transaction:
//! the same result, and almost always a single run.
//!
//! Text is compared and ordered `COLLATE "C"` (bytes, as SQLite's BINARY collation), whatever
//! the database's default collation.

mod staging;

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use async_trait::async_trait;
use futures::TryStreamExt;
use sqlx::{PgConnection, Row};

use super::scan::ScanOut;
use super::sql::{self, PG_SHOPS as SHOPS};
use super::{BulkStage, CatalogDb, EntityKind, EntityRow, ProductItems, StoredShop};
use crate::store::postgres::PgDb;
use crate::store::StoreError;

pub(super) struct PgCatalog(pub(super) PgDb);

/// Cuts `rows` into consecutive runs in which no key repeats.
fn unique_runs<T, K: Hash + Eq>(rows: Vec<T>, key: impl Fn(&T) -> K) -> Vec<Vec<T>> {
    let mut runs = Vec::new();
    let mut run = Vec::new();
    let mut seen = HashSet::new();
    for row in rows {
        if !seen.insert(key(&row)) {
            runs.push(std::mem::take(&mut run));
            seen.clear();
            seen.insert(key(&row));
        }
        run.push(row);
    }
    if !run.is_empty() {
        runs.push(run);
    }
    runs
}

/// One run of a `put`: counts the rows whose body differs from the stored one (or that are
/// new) and writes them. Every part of a statement sees the rows as they were before it, so
/// `changed` compares with the old bodies although `written` replaces them.
const PUT_RUN: &str = "
    WITH input AS (
        SELECT * FROM UNNEST($3::int8[], $4::bytea[], $5::text[], $6::text[])
            AS t(id, body, handle, updated_at)
    ), changed AS (
        SELECT COUNT(*) AS n FROM input i
        LEFT JOIN entities e ON e.shop = $1 AND e.kind = $2 AND e.id = i.id
        WHERE e.body IS DISTINCT FROM i.body
    ), written AS (
        INSERT INTO entities (shop, kind, id, body, handle, updated_at, generation)
        SELECT $1, $2, id, body, handle, updated_at, $7 FROM input
        ON CONFLICT (shop, kind, id) DO UPDATE SET body = excluded.body,
            handle = excluded.handle, updated_at = excluded.updated_at,
            generation = excluded.generation
    )
    SELECT n FROM changed";

#[async_trait]
impl CatalogDb for PgCatalog {
    async fn ping(&self) -> Result<(), StoreError> {
        self.0.ping().await
    }

    async fn shop(&self, shop: String) -> Result<Option<StoredShop>, StoreError> {
        type Row = (
            i64,
            Option<i64>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<i64>,
        );
        let row: Option<Row> = sqlx::query_as(SHOPS.state)
            .bind(shop)
            .fetch_optional(self.0.pool())
            .await?;
        Ok(row.map(
            |(generation, full_synced_at, watermark, bulk_operation, bulk_stage, built_at)| {
                StoredShop {
                    generation,
                    full_synced_at,
                    watermark,
                    bulk_operation,
                    bulk_stage,
                    built_at,
                }
            },
        ))
    }

    async fn shop_body(&self, shop: String) -> Result<Option<Vec<u8>>, StoreError> {
        let body: Option<Option<Vec<u8>>> = sqlx::query_scalar(SHOPS.body)
            .bind(shop)
            .fetch_optional(self.0.pool())
            .await?;
        Ok(body.flatten())
    }

    async fn set_shop_body(&self, shop: String, body: Vec<u8>) -> Result<(), StoreError> {
        sqlx::query(SHOPS.set_body)
            .bind(shop)
            .bind(body)
            .execute(self.0.pool())
            .await?;
        Ok(())
    }

    async fn set_watermark(&self, shop: String, watermark: String) -> Result<(), StoreError> {
        sqlx::query(SHOPS.set_watermark)
            .bind(shop)
            .bind(watermark)
            .execute(self.0.pool())
            .await?;
        Ok(())
    }

    async fn set_bulk(
        &self,
        shop: String,
        bulk: Option<(String, BulkStage)>,
    ) -> Result<(), StoreError> {
        let (op, stage) = bulk.unzip();
        sqlx::query(SHOPS.set_bulk)
            .bind(shop)
            .bind(op)
            .bind(stage)
            .execute(self.0.pool())
            .await?;
        Ok(())
    }

    async fn set_built_at(&self, shop: String, at_ms: i64) -> Result<(), StoreError> {
        sqlx::query(SHOPS.set_built_at)
            .bind(shop)
            .bind(at_ms)
            .execute(self.0.pool())
            .await?;
        Ok(())
    }

    async fn put(
        &self,
        shop: String,
        kind: EntityKind,
        rows: Vec<EntityRow>,
        generation: i64,
    ) -> Result<usize, StoreError> {
        let mut tx = self.0.pool().begin().await?;
        let mut changed = 0;
        for run in unique_runs(rows, |r| r.id) {
            let mut ids = Vec::with_capacity(run.len());
            let mut bodies = Vec::with_capacity(run.len());
            let mut handles = Vec::with_capacity(run.len());
            let mut updated = Vec::with_capacity(run.len());
            for r in run {
                ids.push(r.id);
                bodies.push(r.body);
                handles.push(r.handle);
                updated.push(r.updated_at);
            }
            let n: i64 = sqlx::query_scalar(PUT_RUN)
                .bind(&shop)
                .bind(kind)
                .bind(ids)
                .bind(bodies)
                .bind(handles)
                .bind(updated)
                .bind(generation)
                .fetch_one(&mut *tx)
                .await?;
            changed += n as usize;
        }
        tx.commit().await?;
        Ok(changed)
    }

    async fn delete(
        &self,
        shop: String,
        kind: EntityKind,
        ids: Vec<i64>,
    ) -> Result<usize, StoreError> {
        let mut tx = self.0.pool().begin().await?;
        let n = sqlx::query("DELETE FROM entities WHERE shop = $1 AND kind = $2 AND id = ANY($3)")
            .bind(&shop)
            .bind(kind)
            .bind(&ids)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if kind == EntityKind::Product {
            delete_items_of(&mut tx, &shop, &ids).await?;
        }
        tx.commit().await?;
        Ok(n as usize)
    }

    async fn ids(&self, shop: String, kind: EntityKind) -> Result<Vec<i64>, StoreError> {
        Ok(sqlx::query_scalar(sql::IDS)
            .bind(shop)
            .bind(kind)
            .fetch_all(self.0.pool())
            .await?)
    }

    async fn get(
        &self,
        shop: String,
        kind: EntityKind,
        id: i64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar(sql::GET)
            .bind(shop)
            .bind(kind)
            .bind(id)
            .fetch_optional(self.0.pool())
            .await?)
    }

    /// The byte search SQLite's version does in Rust, done by the server (`position` on
    /// BYTEA), so the collections' bodies are not sent over to be searched.
    async fn collections_containing(
        &self,
        shop: String,
        needles: Vec<Vec<u8>>,
    ) -> Result<Vec<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM entities
             WHERE shop = $1 AND kind = 'collection'
               AND EXISTS (SELECT 1 FROM UNNEST($2::bytea[]) AS n(needle)
                           WHERE position(n.needle IN body) > 0)
             ORDER BY id",
        )
        .bind(shop)
        .bind(needles)
        .fetch_all(self.0.pool())
        .await?)
    }

    async fn count(&self, shop: String, kind: EntityKind) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(sql::COUNT)
            .bind(shop)
            .bind(kind)
            .fetch_one(self.0.pool())
            .await?)
    }

    async fn handle_of(&self, shop: String, product: i64) -> Result<Option<String>, StoreError> {
        let h: Option<Option<String>> = sqlx::query_scalar(sql::HANDLE_OF)
            .bind(shop)
            .bind(product)
            .fetch_optional(self.0.pool())
            .await?;
        Ok(h.flatten())
    }

    async fn set_inventory_items(
        &self,
        shop: String,
        products: Vec<ProductItems>,
        read_at: i64,
    ) -> Result<(), StoreError> {
        set_inventory_items(&self.0, &shop, products, read_at).await
    }

    async fn mark_fetched(
        &self,
        shop: String,
        kind: EntityKind,
        ids: Vec<i64>,
        at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE entities SET fetched_at = $4 WHERE shop = $1 AND kind = $2 AND id = ANY($3)",
        )
        .bind(shop)
        .bind(kind)
        .bind(ids)
        .bind(at)
        .execute(self.0.pool())
        .await?;
        Ok(())
    }

    async fn fetched_at(
        &self,
        shop: String,
        kind: EntityKind,
        ids: Vec<i64>,
    ) -> Result<HashMap<i64, i64>, StoreError> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT id, fetched_at FROM entities
             WHERE shop = $1 AND kind = $2 AND id = ANY($3) AND fetched_at IS NOT NULL",
        )
        .bind(shop)
        .bind(kind)
        .bind(ids)
        .fetch_all(self.0.pool())
        .await?;
        Ok(rows.into_iter().collect())
    }

    async fn mark_items_fetched(
        &self,
        shop: String,
        items: Vec<i64>,
        at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE inventory_items SET fetched_at = $3 WHERE shop = $1 AND item_id = ANY($2)",
        )
        .bind(shop)
        .bind(items)
        .bind(at)
        .execute(self.0.pool())
        .await?;
        Ok(())
    }

    async fn items_fetched_at(
        &self,
        shop: String,
        items: Vec<i64>,
    ) -> Result<HashMap<i64, i64>, StoreError> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT item_id, fetched_at FROM inventory_items
             WHERE shop = $1 AND item_id = ANY($2) AND fetched_at IS NOT NULL",
        )
        .bind(shop)
        .bind(items)
        .fetch_all(self.0.pool())
        .await?;
        Ok(rows.into_iter().collect())
    }

    async fn product_of_item(&self, shop: String, item: i64) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(sql::PRODUCT_OF_ITEM)
            .bind(shop)
            .bind(item)
            .fetch_optional(self.0.pool())
            .await?)
    }

    async fn remove_shop(&self, shop: String) -> Result<(), StoreError> {
        let mut tx = self.0.pool().begin().await?;
        let all = sql::DELETE_SHOP_ROWS
            .into_iter()
            .chain(sql::CLEAR_STAGING)
            .chain([SHOPS.delete]);
        for statement in all {
            sqlx::query(statement).bind(&shop).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// One query whose rows sqlx reads off the connection as they are taken (the server
    /// waits while the socket is full), in a read-only REPEATABLE READ transaction: one
    /// snapshot, as SQLite's reader has.
    async fn scan_bodies(
        &self,
        shop: String,
        kind: EntityKind,
        mut out: ScanOut,
    ) -> Result<(), StoreError> {
        let mut tx = self
            .0
            .pool()
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let mut rows = sqlx::query(sql::BODIES)
            .bind(shop)
            .bind(kind)
            .fetch(&mut *tx);
        while let Some(row) = rows.try_next().await? {
            if !out.push(row.try_get::<&[u8], _>(0)?).await {
                // The consumer dropped the stream. Dropping the transaction rolls it back;
                // sqlx reads off the rows still coming before the connection is reused.
                return Ok(());
            }
        }
        drop(rows);
        tx.commit().await?;
        out.finish().await;
        Ok(())
    }
}

/// Removes the inventory items of these products (index `inventory_items_by_product`).
async fn delete_items_of(
    conn: &mut PgConnection,
    shop: &str,
    products: &[i64],
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM inventory_items WHERE shop = $1 AND product_id = ANY($2)")
        .bind(shop)
        .bind(products)
        .execute(conn)
        .await?;
    Ok(())
}

/// Cuts a batch of products into runs in which no product and no item repeats (one product's
/// list naming an item twice keeps the later pair, as SQLite's replacing inserts do).
fn inventory_runs(products: Vec<ProductItems>) -> Vec<Vec<ProductItems>> {
    let mut runs = Vec::new();
    let (mut run, mut seen_products, mut seen_items) = (Vec::new(), HashSet::new(), HashSet::new());
    for (product, items) in products {
        let mut last: HashMap<i64, usize> = HashMap::new();
        for (i, (item, _)) in items.iter().enumerate() {
            last.insert(*item, i);
        }
        let items: Vec<(i64, i64)> = items
            .into_iter()
            .enumerate()
            .filter(|(i, (item, _))| last[item] == *i)
            .map(|(_, pair)| pair)
            .collect();
        if seen_products.contains(&product) || items.iter().any(|(i, _)| seen_items.contains(i)) {
            runs.push(std::mem::take(&mut run));
            seen_products.clear();
            seen_items.clear();
        }
        seen_products.insert(product);
        seen_items.extend(items.iter().map(|(i, _)| *i));
        run.push((product, items));
    }
    if !run.is_empty() {
        runs.push(run);
    }
    runs
}

/// SQLite replaces product after product: delete the product's items, insert its items (an
/// item already indexed under another product moves). Within a run where no product and no
/// item repeats, deleting every product's items first and then inserting every item gives the
/// same rows, so a run is two statements.
async fn set_inventory_items(
    pg: &PgDb,
    shop: &str,
    products: Vec<ProductItems>,
    read_at: i64,
) -> Result<(), StoreError> {
    let runs = inventory_runs(products);
    let mut tx = pg.pool().begin().await?;
    for run in runs {
        let ids: Vec<i64> = run.iter().map(|(p, _)| *p).collect();
        delete_items_of(&mut tx, shop, &ids).await?;
        let (mut items, mut owners, mut variants) = (Vec::new(), Vec::new(), Vec::new());
        for (product, pairs) in run {
            for (item, variant) in pairs {
                items.push(item);
                owners.push(product);
                variants.push(variant);
            }
        }
        if items.is_empty() {
            continue;
        }
        sqlx::query(
            "INSERT INTO inventory_items (shop, item_id, product_id, variant_id, fetched_at)
             SELECT $1, item, product, variant, $5
             FROM UNNEST($2::int8[], $3::int8[], $4::int8[]) AS t(item, product, variant)
             ON CONFLICT (shop, item_id) DO UPDATE SET product_id = excluded.product_id,
                variant_id = excluded.variant_id, fetched_at = excluded.fetched_at",
        )
        .bind(shop)
        .bind(items)
        .bind(owners)
        .bind(variants)
        .bind(read_at)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_break_where_a_key_repeats() {
        assert_eq!(
            unique_runs(vec![1, 2, 1, 3, 2, 2], |x| *x),
            vec![vec![1, 2], vec![1, 3, 2], vec![2]]
        );
        assert!(unique_runs(Vec::<i64>::new(), |x| *x).is_empty());
        let runs = inventory_runs(vec![
            (1, vec![(10, 1), (11, 1), (10, 2)]),
            (2, vec![(12, 1)]),
            (3, vec![(11, 3)]),
            (2, vec![]),
        ]);
        assert_eq!(
            runs,
            vec![
                vec![(1, vec![(11, 1), (10, 2)]), (2, vec![(12, 1)])],
                vec![(3, vec![(11, 3)]), (2, vec![])],
            ]
        );
    }
}
