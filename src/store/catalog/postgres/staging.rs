//! The full sync's staging tables and its end, on PostgreSQL.

use sqlx::PgConnection;

use super::{begin, unique_runs};
use crate::ids::ShopDomain;
use crate::store::postgres::{pg as pg_err, PgDb};
use crate::store::StoreError;

async fn clear_staging_in(conn: &mut PgConnection, shop: &ShopDomain) -> Result<(), StoreError> {
    for sql in [
        "DELETE FROM staged_products WHERE shop = $1",
        "DELETE FROM staged_variants WHERE shop = $1",
        "DELETE FROM staged_children WHERE shop = $1",
    ] {
        sqlx::query(sql)
            .bind(shop.as_str())
            .execute(&mut *conn)
            .await
            .map_err(pg_err)?;
    }
    Ok(())
}

pub async fn clear_staging(pg: &PgDb, shop: &ShopDomain) -> Result<(), StoreError> {
    let mut tx = begin(pg).await?;
    clear_staging_in(&mut tx, shop).await?;
    tx.commit().await.map_err(pg_err)
}

pub async fn stage_products(
    pg: &PgDb,
    shop: &ShopDomain,
    rows: Vec<(i64, Vec<u8>)>,
) -> Result<(), StoreError> {
    let mut tx = begin(pg).await?;
    for run in unique_runs(rows, |r| r.0) {
        let (ids, bodies): (Vec<i64>, Vec<Vec<u8>>) = run.into_iter().unzip();
        sqlx::query(
            "INSERT INTO staged_products (shop, id, body)
             SELECT $1, id, body FROM UNNEST($2::int8[], $3::bytea[]) AS t(id, body)
             ON CONFLICT (shop, id) DO UPDATE SET body = excluded.body",
        )
        .bind(shop.as_str())
        .bind(ids)
        .bind(bodies)
        .execute(&mut *tx)
        .await
        .map_err(pg_err)?;
    }
    tx.commit().await.map_err(pg_err)
}

pub async fn stage_variants(
    pg: &PgDb,
    shop: &ShopDomain,
    rows: Vec<(i64, i64, Vec<u8>)>,
) -> Result<(), StoreError> {
    let mut tx = begin(pg).await?;
    for run in unique_runs(rows, |r| (r.0, r.1)) {
        let (mut products, mut ids, mut bodies) = (Vec::new(), Vec::new(), Vec::new());
        for (product, id, body) in run {
            products.push(product);
            ids.push(id);
            bodies.push(body);
        }
        sqlx::query(
            "INSERT INTO staged_variants (shop, product_id, id, body)
             SELECT $1, product_id, id, body
             FROM UNNEST($2::int8[], $3::int8[], $4::bytea[]) AS t(product_id, id, body)
             ON CONFLICT (shop, product_id, id) DO UPDATE SET body = excluded.body",
        )
        .bind(shop.as_str())
        .bind(products)
        .bind(ids)
        .bind(bodies)
        .execute(&mut *tx)
        .await
        .map_err(pg_err)?;
    }
    tx.commit().await.map_err(pg_err)
}

pub async fn stage_children(
    pg: &PgDb,
    shop: &ShopDomain,
    rows: Vec<(String, i64, Vec<u8>)>,
) -> Result<(), StoreError> {
    let mut tx = begin(pg).await?;
    for run in unique_runs(rows, |r| (r.0.clone(), r.1)) {
        let (mut parents, mut seqs, mut bodies) = (Vec::new(), Vec::new(), Vec::new());
        for (parent, seq, body) in run {
            parents.push(parent);
            seqs.push(seq);
            bodies.push(body);
        }
        sqlx::query(
            "INSERT INTO staged_children (shop, parent, seq, body)
             SELECT $1, parent, seq, body
             FROM UNNEST($2::text[], $3::int8[], $4::bytea[]) AS t(parent, seq, body)
             ON CONFLICT (shop, parent, seq) DO UPDATE SET body = excluded.body",
        )
        .bind(shop.as_str())
        .bind(parents)
        .bind(seqs)
        .bind(bodies)
        .execute(&mut *tx)
        .await
        .map_err(pg_err)?;
    }
    tx.commit().await.map_err(pg_err)
}

pub async fn staged_products(
    pg: &PgDb,
    shop: &ShopDomain,
    after: i64,
    limit: usize,
) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
    sqlx::query_as(
        "SELECT id, body FROM staged_products WHERE shop = $1 AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(shop.as_str())
    .bind(after)
    // SQLite reads an over-large limit as "no limit"; PostgreSQL refuses a negative one.
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(pg.pool())
    .await
    .map_err(pg_err)
}

pub async fn staged_variants_of(
    pg: &PgDb,
    shop: &ShopDomain,
    products: Vec<i64>,
) -> Result<Vec<(i64, i64, Vec<u8>)>, StoreError> {
    if products.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as(
        "SELECT product_id, id, body FROM staged_variants
         WHERE shop = $1 AND product_id = ANY($2) ORDER BY product_id, id",
    )
    .bind(shop.as_str())
    .bind(products)
    .fetch_all(pg.pool())
    .await
    .map_err(pg_err)
}

pub async fn staged_children_of(
    pg: &PgDb,
    shop: &ShopDomain,
    parents: Vec<String>,
) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    if parents.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as(
        r#"SELECT parent, body FROM staged_children
           WHERE shop = $1 AND parent = ANY($2) ORDER BY parent COLLATE "C", seq"#,
    )
    .bind(shop.as_str())
    .bind(parents)
    .fetch_all(pg.pool())
    .await
    .map_err(pg_err)
}

pub async fn finish_full_sync(
    pg: &PgDb,
    shop: &ShopDomain,
    generation: i64,
    now_secs: i64,
) -> Result<usize, StoreError> {
    let mut tx = begin(pg).await?;
    let gone = sqlx::query("DELETE FROM entities WHERE shop = $1 AND generation < $2")
        .bind(shop.as_str())
        .bind(generation)
        .execute(&mut *tx)
        .await
        .map_err(pg_err)?
        .rows_affected();
    // NOT EXISTS rather than SQLite's NOT IN: the same rows (ids are never NULL), planned as
    // an anti-join on the primary key.
    sqlx::query(
        "DELETE FROM inventory_items i WHERE i.shop = $1 AND NOT EXISTS
            (SELECT 1 FROM entities e
             WHERE e.shop = $1 AND e.kind = 'product' AND e.id = i.product_id)",
    )
    .bind(shop.as_str())
    .execute(&mut *tx)
    .await
    .map_err(pg_err)?;
    sqlx::query(
        "INSERT INTO catalog_shops (shop, generation, full_synced_at) VALUES ($1, $2, $3)
         ON CONFLICT (shop) DO UPDATE SET generation = excluded.generation,
            full_synced_at = excluded.full_synced_at, bulk_operation = NULL, bulk_stage = NULL",
    )
    .bind(shop.as_str())
    .bind(generation)
    .bind(now_secs)
    .execute(&mut *tx)
    .await
    .map_err(pg_err)?;
    clear_staging_in(&mut tx, shop).await?;
    tx.commit().await.map_err(pg_err)?;
    Ok(gone as usize)
}

pub async fn remove_shop(pg: &PgDb, shop: &ShopDomain) -> Result<(), StoreError> {
    let mut tx = begin(pg).await?;
    for sql in [
        "DELETE FROM entities WHERE shop = $1",
        "DELETE FROM inventory_items WHERE shop = $1",
        "DELETE FROM catalog_shops WHERE shop = $1",
    ] {
        sqlx::query(sql)
            .bind(shop.as_str())
            .execute(&mut *tx)
            .await
            .map_err(pg_err)?;
    }
    clear_staging_in(&mut tx, shop).await?;
    tx.commit().await.map_err(pg_err)
}
