//! The catalogue on PostgreSQL: the same rows as `catalog.db` (its `shops` table is
//! `catalog_shops` here). Batches stay batches: a batch of rows is one statement over arrays
//! (`UNNEST`) in one transaction, never a round trip per row, and whole scans read pages by id
//! so memory stays bounded as on SQLite.
//!
//! SQLite's batch loops handle rows one after the other, so a batch may name one key twice
//! (the later row wins). One `INSERT … ON CONFLICT DO UPDATE` cannot touch a row twice, so a
//! batch is cut into runs without a repeated key, run one after the other in the transaction:
//! the same result, and almost always a single run.
//!
//! Text is compared and ordered `COLLATE "C"` (bytes, as SQLite's BINARY collation), whatever
//! the database's default collation.

mod staging;

pub use staging::*;

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use sqlx::{PgConnection, Postgres, Transaction};

use super::{BulkStage, EntityKind, EntityRow, ShopState};
use crate::ids::ShopDomain;
use crate::store::postgres::{pg as pg_err, PgDb};
use crate::store::StoreError;

/// Rows per page of a whole scan (~1 KiB each).
const SCAN_PAGE: i64 = 512;

/// Cuts `rows` into consecutive runs in which no key repeats.
pub(super) fn unique_runs<T, K: Hash + Eq>(rows: Vec<T>, key: impl Fn(&T) -> K) -> Vec<Vec<T>> {
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

pub(super) async fn begin(pg: &PgDb) -> Result<Transaction<'static, Postgres>, StoreError> {
    pg.pool().begin().await.map_err(pg_err)
}

// --- the shop's row -------------------------------------------------------------------------

pub async fn state(pg: &PgDb, shop: &ShopDomain) -> Result<ShopState, StoreError> {
    type Row = (
        i64,
        Option<i64>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<i64>,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT generation, full_synced_at, watermark, bulk_operation, bulk_stage, built_at
         FROM catalog_shops WHERE shop = $1",
    )
    .bind(shop.as_str())
    .fetch_optional(pg.pool())
    .await
    .map_err(pg_err)?;
    let Some((generation, full_synced_at, watermark, op, stage, built_at)) = row else {
        return Ok(ShopState::default());
    };
    let stage = stage.map(|s| s.parse::<BulkStage>()).transpose()?;
    Ok(ShopState {
        generation,
        full_synced_at,
        watermark,
        bulk: op.zip(stage),
        built_at,
    })
}

pub async fn set_shop_body(pg: &PgDb, shop: &ShopDomain, body: Vec<u8>) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO catalog_shops (shop, body) VALUES ($1, $2)
         ON CONFLICT (shop) DO UPDATE SET body = excluded.body",
    )
    .bind(shop.as_str())
    .bind(body)
    .execute(pg.pool())
    .await
    .map_err(pg_err)?;
    Ok(())
}

pub async fn shop_body(pg: &PgDb, shop: &ShopDomain) -> Result<Option<Vec<u8>>, StoreError> {
    let body: Option<Option<Vec<u8>>> =
        sqlx::query_scalar("SELECT body FROM catalog_shops WHERE shop = $1")
            .bind(shop.as_str())
            .fetch_optional(pg.pool())
            .await
            .map_err(pg_err)?;
    Ok(body.flatten())
}

/// Only ever moves forward (RFC 3339 texts of one format compare as their times).
pub async fn set_watermark(
    pg: &PgDb,
    shop: &ShopDomain,
    watermark: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        r#"INSERT INTO catalog_shops (shop, watermark) VALUES ($1, $2)
           ON CONFLICT (shop) DO UPDATE SET watermark = excluded.watermark
           WHERE catalog_shops.watermark IS NULL
              OR catalog_shops.watermark < excluded.watermark COLLATE "C""#,
    )
    .bind(shop.as_str())
    .bind(watermark)
    .execute(pg.pool())
    .await
    .map_err(pg_err)?;
    Ok(())
}

pub async fn set_bulk(
    pg: &PgDb,
    shop: &ShopDomain,
    bulk: Option<(&str, BulkStage)>,
) -> Result<(), StoreError> {
    let (op, stage) = bulk.map(|(op, stage)| (op, stage.as_str())).unzip();
    sqlx::query(
        "INSERT INTO catalog_shops (shop, bulk_operation, bulk_stage) VALUES ($1, $2, $3)
         ON CONFLICT (shop) DO UPDATE SET bulk_operation = excluded.bulk_operation,
            bulk_stage = excluded.bulk_stage",
    )
    .bind(shop.as_str())
    .bind(op)
    .bind(stage)
    .execute(pg.pool())
    .await
    .map_err(pg_err)?;
    Ok(())
}

pub async fn set_built_at(pg: &PgDb, shop: &ShopDomain, at_ms: i64) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO catalog_shops (shop, built_at) VALUES ($1, $2)
         ON CONFLICT (shop) DO UPDATE SET built_at = excluded.built_at",
    )
    .bind(shop.as_str())
    .bind(at_ms)
    .execute(pg.pool())
    .await
    .map_err(pg_err)?;
    Ok(())
}

// --- entities -------------------------------------------------------------------------------

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

pub async fn put(
    pg: &PgDb,
    shop: &ShopDomain,
    kind: EntityKind,
    rows: Vec<EntityRow>,
    generation: i64,
) -> Result<usize, StoreError> {
    let mut tx = begin(pg).await?;
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
            .bind(shop.as_str())
            .bind(kind.as_str())
            .bind(ids)
            .bind(bodies)
            .bind(handles)
            .bind(updated)
            .bind(generation)
            .fetch_one(&mut *tx)
            .await
            .map_err(pg_err)?;
        changed += n as usize;
    }
    tx.commit().await.map_err(pg_err)?;
    Ok(changed)
}

pub async fn delete(
    pg: &PgDb,
    shop: &ShopDomain,
    kind: EntityKind,
    ids: Vec<i64>,
) -> Result<usize, StoreError> {
    let mut tx = begin(pg).await?;
    let n = sqlx::query("DELETE FROM entities WHERE shop = $1 AND kind = $2 AND id = ANY($3)")
        .bind(shop.as_str())
        .bind(kind.as_str())
        .bind(&ids)
        .execute(&mut *tx)
        .await
        .map_err(pg_err)?
        .rows_affected();
    if kind == EntityKind::Product {
        delete_items_of(&mut tx, shop, &ids).await?;
    }
    tx.commit().await.map_err(pg_err)?;
    Ok(n as usize)
}

/// Removes the inventory items of these products (index `inventory_items_by_product`).
async fn delete_items_of(
    conn: &mut PgConnection,
    shop: &ShopDomain,
    products: &[i64],
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM inventory_items WHERE shop = $1 AND product_id = ANY($2)")
        .bind(shop.as_str())
        .bind(products)
        .execute(conn)
        .await
        .map_err(pg_err)?;
    Ok(())
}

pub async fn ids(pg: &PgDb, shop: &ShopDomain, kind: EntityKind) -> Result<Vec<i64>, StoreError> {
    sqlx::query_scalar("SELECT id FROM entities WHERE shop = $1 AND kind = $2 ORDER BY id")
        .bind(shop.as_str())
        .bind(kind.as_str())
        .fetch_all(pg.pool())
        .await
        .map_err(pg_err)
}

pub async fn get(
    pg: &PgDb,
    shop: &ShopDomain,
    kind: EntityKind,
    id: i64,
) -> Result<Option<Vec<u8>>, StoreError> {
    sqlx::query_scalar("SELECT body FROM entities WHERE shop = $1 AND kind = $2 AND id = $3")
        .bind(shop.as_str())
        .bind(kind.as_str())
        .bind(id)
        .fetch_optional(pg.pool())
        .await
        .map_err(pg_err)
}

/// The byte search SQLite's version does in Rust, done by the server (`position` on BYTEA),
/// so the collections' bodies are not sent over to be searched.
pub async fn collections_listing(
    pg: &PgDb,
    shop: &ShopDomain,
    handles: Vec<String>,
) -> Result<Vec<i64>, StoreError> {
    if handles.is_empty() {
        return Ok(Vec::new());
    }
    // The handles as they appear in the bodies: JSON strings, quotes included.
    let needles: Vec<Vec<u8>> = handles
        .iter()
        .map(|h| serde_json::to_vec(h).unwrap_or_default())
        .collect();
    sqlx::query_scalar(
        "SELECT id FROM entities
         WHERE shop = $1 AND kind = 'collection'
           AND EXISTS (SELECT 1 FROM UNNEST($2::bytea[]) AS n(needle)
                       WHERE position(n.needle IN body) > 0)
         ORDER BY id",
    )
    .bind(shop.as_str())
    .bind(needles)
    .fetch_all(pg.pool())
    .await
    .map_err(pg_err)
}

pub async fn count(pg: &PgDb, shop: &ShopDomain, kind: EntityKind) -> Result<i64, StoreError> {
    sqlx::query_scalar("SELECT COUNT(*) FROM entities WHERE shop = $1 AND kind = $2")
        .bind(shop.as_str())
        .bind(kind.as_str())
        .fetch_one(pg.pool())
        .await
        .map_err(pg_err)
}

pub async fn handle_of(
    pg: &PgDb,
    shop: &ShopDomain,
    product: i64,
) -> Result<Option<String>, StoreError> {
    let h: Option<Option<String>> = sqlx::query_scalar(
        "SELECT handle FROM entities WHERE shop = $1 AND kind = 'product' AND id = $2",
    )
    .bind(shop.as_str())
    .bind(product)
    .fetch_optional(pg.pool())
    .await
    .map_err(pg_err)?;
    Ok(h.flatten())
}

// --- the inventory item index ---------------------------------------------------------------

/// A product and its `(item, variant)` pairs.
type ProductItems = (i64, Vec<(i64, i64)>);

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
pub async fn set_inventory_items_of(
    pg: &PgDb,
    shop: &ShopDomain,
    products: Vec<ProductItems>,
) -> Result<(), StoreError> {
    let now = crate::store::now_millis();
    let runs = inventory_runs(products);
    let mut tx = begin(pg).await?;
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
        .bind(shop.as_str())
        .bind(items)
        .bind(owners)
        .bind(variants)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(pg_err)?;
    }
    tx.commit().await.map_err(pg_err)?;
    Ok(())
}

pub async fn mark_fetched(
    pg: &PgDb,
    shop: &ShopDomain,
    kind: EntityKind,
    ids: Vec<i64>,
    at: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE entities SET fetched_at = $4 WHERE shop = $1 AND kind = $2 AND id = ANY($3)",
    )
    .bind(shop.as_str())
    .bind(kind.as_str())
    .bind(ids)
    .bind(at)
    .execute(pg.pool())
    .await
    .map_err(pg_err)?;
    Ok(())
}

pub async fn fetched_at(
    pg: &PgDb,
    shop: &ShopDomain,
    kind: EntityKind,
    ids: Vec<i64>,
) -> Result<HashMap<i64, i64>, StoreError> {
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT id, fetched_at FROM entities
         WHERE shop = $1 AND kind = $2 AND id = ANY($3) AND fetched_at IS NOT NULL",
    )
    .bind(shop.as_str())
    .bind(kind.as_str())
    .bind(ids)
    .fetch_all(pg.pool())
    .await
    .map_err(pg_err)?;
    Ok(rows.into_iter().collect())
}

pub async fn mark_items_fetched(
    pg: &PgDb,
    shop: &ShopDomain,
    items: Vec<i64>,
    at: i64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE inventory_items SET fetched_at = $3 WHERE shop = $1 AND item_id = ANY($2)")
        .bind(shop.as_str())
        .bind(items)
        .bind(at)
        .execute(pg.pool())
        .await
        .map_err(pg_err)?;
    Ok(())
}

pub async fn items_fetched_at(
    pg: &PgDb,
    shop: &ShopDomain,
    items: Vec<i64>,
) -> Result<HashMap<i64, i64>, StoreError> {
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT item_id, fetched_at FROM inventory_items
         WHERE shop = $1 AND item_id = ANY($2) AND fetched_at IS NOT NULL",
    )
    .bind(shop.as_str())
    .bind(items)
    .fetch_all(pg.pool())
    .await
    .map_err(pg_err)?;
    Ok(rows.into_iter().collect())
}

pub async fn product_of_item(
    pg: &PgDb,
    shop: &ShopDomain,
    item: i64,
) -> Result<Option<i64>, StoreError> {
    sqlx::query_scalar("SELECT product_id FROM inventory_items WHERE shop = $1 AND item_id = $2")
        .bind(shop.as_str())
        .bind(item)
        .fetch_optional(pg.pool())
        .await
        .map_err(pg_err)
}

// --- whole scans ----------------------------------------------------------------------------

/// Blocking, like SQLite's version (callers run it on the blocking pool): pages of
/// `SCAN_PAGE` rows after the last id seen, all in one read-only REPEATABLE READ transaction,
/// so the scan sees one snapshot as SQLite's WAL reader does and holds one page in memory.
pub fn for_each_body(
    pg: &PgDb,
    shop: &ShopDomain,
    kind: EntityKind,
    mut f: impl FnMut(&[u8]) -> bool,
) -> Result<(), StoreError> {
    let rt = tokio::runtime::Handle::try_current().map_err(|_| {
        StoreError::Corrupt("a catalogue scan needs to run inside the tokio runtime".into())
    })?;
    let mut tx = rt
        .block_on(
            pg.pool()
                .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"),
        )
        .map_err(pg_err)?;
    let mut after: Option<i64> = None;
    'pages: loop {
        // The first page has no lower bound (any id, however small), the others start after
        // the last id seen: both are range scans of the primary key.
        let query = match after {
            None => sqlx::query_as(
                "SELECT id, body FROM entities WHERE shop = $1 AND kind = $2
                 ORDER BY id LIMIT $3",
            ),
            Some(_) => sqlx::query_as(
                "SELECT id, body FROM entities WHERE shop = $1 AND kind = $2 AND id > $4
                 ORDER BY id LIMIT $3",
            ),
        };
        let mut query = query
            .bind(shop.as_str())
            .bind(kind.as_str())
            .bind(SCAN_PAGE);
        if let Some(after) = after {
            query = query.bind(after);
        }
        let page: Vec<(i64, Vec<u8>)> = rt.block_on(query.fetch_all(&mut *tx)).map_err(pg_err)?;
        let full = page.len() as i64 == SCAN_PAGE;
        for (id, body) in page {
            after = Some(id);
            if !f(&body) {
                break 'pages;
            }
        }
        if !full {
            break;
        }
    }
    rt.block_on(tx.commit()).map_err(pg_err)
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
