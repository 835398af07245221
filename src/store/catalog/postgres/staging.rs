//! The full sync's staging tables and its end, on PostgreSQL.

use async_trait::async_trait;
use sqlx::PgConnection;

use super::super::sql::{self, PG_SHOPS as SHOPS};
use super::super::staging::StagingDb;
use super::{unique_runs, PgCatalog};
use crate::store::StoreError;

async fn clear_staging_in(conn: &mut PgConnection, shop: &str) -> Result<(), StoreError> {
    for statement in sql::CLEAR_STAGING {
        sqlx::query(statement)
            .bind(shop)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

#[async_trait]
impl StagingDb for PgCatalog {
    async fn clear_staging(&self, shop: String) -> Result<(), StoreError> {
        let mut tx = self.0.pool().begin().await?;
        clear_staging_in(&mut tx, &shop).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn stage_products(
        &self,
        shop: String,
        rows: Vec<(i64, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        let mut tx = self.0.pool().begin().await?;
        for run in unique_runs(rows, |r| r.0) {
            let (ids, bodies): (Vec<i64>, Vec<Vec<u8>>) = run.into_iter().unzip();
            sqlx::query(
                "INSERT INTO staged_products (shop, id, body)
                 SELECT $1, id, body FROM UNNEST($2::int8[], $3::bytea[]) AS t(id, body)
                 ON CONFLICT (shop, id) DO UPDATE SET body = excluded.body",
            )
            .bind(&shop)
            .bind(ids)
            .bind(bodies)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn stage_variants(
        &self,
        shop: String,
        rows: Vec<(i64, i64, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        let mut tx = self.0.pool().begin().await?;
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
            .bind(&shop)
            .bind(products)
            .bind(ids)
            .bind(bodies)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn stage_children(
        &self,
        shop: String,
        rows: Vec<(String, i64, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        let mut tx = self.0.pool().begin().await?;
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
            .bind(&shop)
            .bind(parents)
            .bind(seqs)
            .bind(bodies)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn staged_products(
        &self,
        shop: String,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        Ok(sqlx::query_as(sql::STAGED_PRODUCTS)
            .bind(shop)
            .bind(after)
            .bind(limit)
            .fetch_all(self.0.pool())
            .await?)
    }

    async fn staged_variants_of(
        &self,
        shop: String,
        products: Vec<i64>,
    ) -> Result<Vec<(i64, i64, Vec<u8>)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT product_id, id, body FROM staged_variants
             WHERE shop = $1 AND product_id = ANY($2) ORDER BY product_id, id",
        )
        .bind(shop)
        .bind(products)
        .fetch_all(self.0.pool())
        .await?)
    }

    async fn staged_children_of(
        &self,
        shop: String,
        parents: Vec<String>,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(sqlx::query_as(
            r#"SELECT parent, body FROM staged_children
               WHERE shop = $1 AND parent = ANY($2) ORDER BY parent COLLATE "C", seq"#,
        )
        .bind(shop)
        .bind(parents)
        .fetch_all(self.0.pool())
        .await?)
    }

    async fn finish_full_sync(
        &self,
        shop: String,
        generation: i64,
        now_secs: i64,
    ) -> Result<usize, StoreError> {
        let mut tx = self.0.pool().begin().await?;
        let gone = sqlx::query(sql::DELETE_UNSEEN)
            .bind(&shop)
            .bind(generation)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(sql::DELETE_ORPHAN_ITEMS)
            .bind(&shop)
            .execute(&mut *tx)
            .await?;
        sqlx::query(SHOPS.finish_full_sync)
            .bind(&shop)
            .bind(generation)
            .bind(now_secs)
            .execute(&mut *tx)
            .await?;
        clear_staging_in(&mut tx, &shop).await?;
        tx.commit().await?;
        Ok(gone as usize)
    }
}
