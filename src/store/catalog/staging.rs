//! The full sync's side of the catalogue: staging tables filled while a sync reads Shopify,
//! read back in id order to assemble `entities`, and the sync's end.

use rusqlite::{params, params_from_iter};

use super::{postgres, CatalogStore};
use crate::ids::ShopDomain;
use crate::store::{sqlite_or, Db, StoreError};

/// `?, ?, ?` for `n` parameters.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

impl CatalogStore {
    pub async fn clear_staging(&self, shop: &ShopDomain) -> Result<(), StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::clear_staging(pg, shop));
        let s = shop.to_string();
        db.call(move |c| {
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
        db: &Db,
        shop: &ShopDomain,
        sql: &'static str,
        rows: Vec<Vec<rusqlite::types::Value>>,
    ) -> Result<(), StoreError> {
        let s = rusqlite::types::Value::Text(shop.to_string());
        db.call(move |c| {
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
        let db = sqlite_or!(&self.backend, pg => postgres::stage_products(pg, shop, rows));
        let rows = rows
            .into_iter()
            .map(|(id, body)| vec![id.into(), body.into()])
            .collect();
        Self::stage(
            db,
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
        let db = sqlite_or!(&self.backend, pg => postgres::stage_variants(pg, shop, rows));
        let rows = rows
            .into_iter()
            .map(|(product, id, body)| vec![product.into(), id.into(), body.into()])
            .collect();
        Self::stage(
            db,
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
        let db = sqlite_or!(&self.backend, pg => postgres::stage_children(pg, shop, rows));
        let rows = rows
            .into_iter()
            .map(|(parent, seq, body)| vec![parent.into(), seq.into(), body.into()])
            .collect();
        Self::stage(
            db,
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
        let db = sqlite_or!(&self.backend, pg => postgres::staged_products(pg, shop, after, limit));
        let s = shop.to_string();
        db.call(move |c| {
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
        let db = sqlite_or!(&self.backend, pg => postgres::staged_variants_of(pg, shop, products));
        if products.is_empty() {
            return Ok(Vec::new());
        }
        let s = shop.to_string();
        db.call(move |c| {
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
        let db = sqlite_or!(&self.backend, pg => postgres::staged_children_of(pg, shop, parents));
        if parents.is_empty() {
            return Ok(Vec::new());
        }
        let s = shop.to_string();
        db.call(move |c| {
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
        let db = sqlite_or!(&self.backend, pg => postgres::finish_full_sync(pg, shop, generation, now_secs));
        let s = shop.to_string();
        db.call(move |c| {
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
}
