//! The full sync's staging tables and its end, in `catalog.db`.

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection};

use super::super::sql::{self, SQLITE_SHOPS as SHOPS};
use super::super::staging::StagingDb;
use super::{bind, SqliteCatalog};
use crate::store::sqlite::numbered;
use crate::store::StoreError;

/// `?, ?, ?` for `n` parameters.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

fn clear_staging_in(c: &Connection, shop: &str) -> Result<(), StoreError> {
    for statement in sql::CLEAR_STAGING {
        c.prepare_cached(statement)?
            .execute(numbered(&[&shop]).as_slice())?;
    }
    Ok(())
}

impl SqliteCatalog {
    /// Inserts staged rows in one transaction: `sql`'s first parameter is the shop, the others
    /// each row's values.
    async fn stage(
        &self,
        shop: String,
        sql: &'static str,
        rows: Vec<Vec<Value>>,
    ) -> Result<(), StoreError> {
        let s = Value::Text(shop);
        self.0
            .call(move |c| {
                let tx = c.transaction()?;
                for row in rows {
                    tx.prepare_cached(sql)?
                        .execute(params_from_iter(std::iter::once(&s).chain(&row)))?;
                }
                tx.commit()?;
                Ok(())
            })
            .await
    }

    /// The rows of `sql`, whose parameters are the shop and then one per key (`keys`
    /// placeholders, at `{}`), each row read with `row`.
    async fn rows_of_keys<K, T>(
        &self,
        shop: String,
        sql: &'static str,
        keys: Vec<K>,
        row: fn(&rusqlite::Row) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError>
    where
        K: Into<Value> + Send + 'static,
        T: Send + 'static,
    {
        self.0
            .call(move |c| {
                let text = sql.replace("{}", &placeholders(keys.len()));
                let mut values: Vec<Value> = vec![shop.into()];
                values.extend(keys.into_iter().map(Into::into));
                let mut st = c.prepare(&text)?;
                let v = st
                    .query_map(params_from_iter(values), row)?
                    .collect::<Result<Vec<T>, _>>()?;
                Ok(v)
            })
            .await
    }
}

#[async_trait]
impl StagingDb for SqliteCatalog {
    async fn clear_staging(&self, shop: String) -> Result<(), StoreError> {
        self.0
            .call(move |c| {
                let tx = c.transaction()?;
                clear_staging_in(&tx, &shop)?;
                tx.commit()?;
                Ok(())
            })
            .await
    }

    async fn stage_products(
        &self,
        shop: String,
        rows: Vec<(i64, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        let rows = rows
            .into_iter()
            .map(|(id, body)| vec![id.into(), body.into()])
            .collect();
        self.stage(
            shop,
            "INSERT INTO staged_products (shop, id, body) VALUES (?1, ?2, ?3)
             ON CONFLICT (shop, id) DO UPDATE SET body = excluded.body",
            rows,
        )
        .await
    }

    async fn stage_variants(
        &self,
        shop: String,
        rows: Vec<(i64, i64, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        let rows = rows
            .into_iter()
            .map(|(product, id, body)| vec![product.into(), id.into(), body.into()])
            .collect();
        self.stage(
            shop,
            "INSERT INTO staged_variants (shop, product_id, id, body) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (shop, product_id, id) DO UPDATE SET body = excluded.body",
            rows,
        )
        .await
    }

    async fn stage_children(
        &self,
        shop: String,
        rows: Vec<(String, i64, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        let rows = rows
            .into_iter()
            .map(|(parent, seq, body)| vec![parent.into(), seq.into(), body.into()])
            .collect();
        self.stage(
            shop,
            "INSERT INTO staged_children (shop, parent, seq, body) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (shop, parent, seq) DO UPDATE SET body = excluded.body",
            rows,
        )
        .await
    }

    async fn staged_products(
        &self,
        shop: String,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        let values = vec![shop.into(), after.into(), limit.into()];
        self.0
            .call(move |c| {
                let mut st = c.prepare_cached(sql::STAGED_PRODUCTS)?;
                let v = st
                    .query_map(bind(&values).as_slice(), |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(v)
            })
            .await
    }

    async fn staged_variants_of(
        &self,
        shop: String,
        products: Vec<i64>,
    ) -> Result<Vec<(i64, i64, Vec<u8>)>, StoreError> {
        self.rows_of_keys(
            shop,
            "SELECT product_id, id, body FROM staged_variants
             WHERE shop = ? AND product_id IN ({}) ORDER BY product_id, id",
            products,
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .await
    }

    async fn staged_children_of(
        &self,
        shop: String,
        parents: Vec<String>,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        // SQLite's default collation (BINARY) is byte order.
        self.rows_of_keys(
            shop,
            "SELECT parent, body FROM staged_children
             WHERE shop = ? AND parent IN ({}) ORDER BY parent, seq",
            parents,
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .await
    }

    async fn finish_full_sync(
        &self,
        shop: String,
        generation: i64,
        now_secs: i64,
    ) -> Result<usize, StoreError> {
        self.0
            .call(move |c| {
                let tx = c.transaction()?;
                let gone = tx
                    .prepare_cached(sql::DELETE_UNSEEN)?
                    .execute(numbered(&[&shop, &generation]).as_slice())?;
                tx.prepare_cached(sql::DELETE_ORPHAN_ITEMS)?
                    .execute(numbered(&[&shop]).as_slice())?;
                tx.prepare_cached(SHOPS.finish_full_sync)?
                    .execute(numbered(&[&shop, &generation, &now_secs]).as_slice())?;
                clear_staging_in(&tx, &shop)?;
                tx.commit()?;
                Ok(gone)
            })
            .await
    }
}
