//! The catalogue's SQL that is the same text on both backends (`$n` placeholders; see
//! `store::sqlite` for how SQLite binds them). Batches are not here: PostgreSQL writes a batch
//! as one statement over arrays, SQLite as a loop of one-row statements (`sqlite.rs`,
//! `postgres.rs`).

/// The statements on a shop's own row. Its table is `shops` in `catalog.db` and
/// `catalog_shops` in the shared PostgreSQL database (where the token store's `shops` already
/// is), so each backend gets these texts from one template with its table's name. Every
/// write is an upsert: the shop's row is created by whichever write comes first.
pub(super) struct ShopSql {
    pub state: &'static str,
    pub body: &'static str,
    pub set_body: &'static str,
    /// Only ever moves forward (RFC 3339 texts of one format compare as their times).
    pub set_watermark: &'static str,
    pub set_bulk: &'static str,
    pub set_built_at: &'static str,
    /// A full sync's end: its generation and time; no bulk operation left to resume.
    pub finish_full_sync: &'static str,
    pub delete: &'static str,
}

macro_rules! shop_sql {
    ($t:literal) => {
        ShopSql {
            state: concat!(
                "SELECT generation, full_synced_at, watermark, bulk_operation, bulk_stage, \
                 built_at FROM ",
                $t,
                " WHERE shop = $1"
            ),
            body: concat!("SELECT body FROM ", $t, " WHERE shop = $1"),
            set_body: concat!(
                "INSERT INTO ",
                $t,
                " (shop, body) VALUES ($1, $2) \
                 ON CONFLICT (shop) DO UPDATE SET body = excluded.body"
            ),
            set_watermark: concat!(
                "INSERT INTO ",
                $t,
                " (shop, watermark) VALUES ($1, $2) \
                 ON CONFLICT (shop) DO UPDATE SET watermark = excluded.watermark WHERE ",
                $t,
                ".watermark IS NULL OR ",
                $t,
                r#".watermark < excluded.watermark COLLATE "C""#
            ),
            set_bulk: concat!(
                "INSERT INTO ",
                $t,
                " (shop, bulk_operation, bulk_stage) VALUES ($1, $2, $3) \
                 ON CONFLICT (shop) DO UPDATE SET bulk_operation = excluded.bulk_operation, \
                 bulk_stage = excluded.bulk_stage"
            ),
            set_built_at: concat!(
                "INSERT INTO ",
                $t,
                " (shop, built_at) VALUES ($1, $2) \
                 ON CONFLICT (shop) DO UPDATE SET built_at = excluded.built_at"
            ),
            finish_full_sync: concat!(
                "INSERT INTO ",
                $t,
                " (shop, generation, full_synced_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (shop) DO UPDATE SET generation = excluded.generation, \
                 full_synced_at = excluded.full_synced_at, bulk_operation = NULL, \
                 bulk_stage = NULL"
            ),
            delete: concat!("DELETE FROM ", $t, " WHERE shop = $1"),
        }
    };
}

/// In `catalog.db`.
pub(super) const SQLITE_SHOPS: ShopSql = shop_sql!("shops");
/// In the shared PostgreSQL database.
pub(super) const PG_SHOPS: ShopSql = shop_sql!("catalog_shops");

pub(super) const GET: &str = "SELECT body FROM entities WHERE shop = $1 AND kind = $2 AND id = $3";
pub(super) const IDS: &str = "SELECT id FROM entities WHERE shop = $1 AND kind = $2 ORDER BY id";
pub(super) const COUNT: &str = "SELECT COUNT(*) FROM entities WHERE shop = $1 AND kind = $2";
pub(super) const HANDLE_OF: &str =
    "SELECT handle FROM entities WHERE shop = $1 AND kind = 'product' AND id = $2";
/// A whole scan (`CatalogStore::bodies`): a range of the primary key, in its order.
pub(super) const BODIES: &str =
    "SELECT body FROM entities WHERE shop = $1 AND kind = $2 ORDER BY id";
pub(super) const PRODUCT_OF_ITEM: &str =
    "SELECT product_id FROM inventory_items WHERE shop = $1 AND item_id = $2";

/// A full sync's end: the rows it did not see (an older generation) go, and so do the
/// inventory items of products that are gone. NOT EXISTS rather than NOT IN: the same rows
/// (ids are never NULL), a primary-key lookup per item on both (PostgreSQL plans it as an
/// anti-join).
pub(super) const DELETE_UNSEEN: &str = "DELETE FROM entities WHERE shop = $1 AND generation < $2";
pub(super) const DELETE_ORPHAN_ITEMS: &str = "DELETE FROM inventory_items WHERE shop = $1
    AND NOT EXISTS (SELECT 1 FROM entities e WHERE e.shop = $1 AND e.kind = 'product'
                    AND e.id = inventory_items.product_id)";

/// Empties a shop's staging tables.
pub(super) const CLEAR_STAGING: [&str; 3] = [
    "DELETE FROM staged_products WHERE shop = $1",
    "DELETE FROM staged_variants WHERE shop = $1",
    "DELETE FROM staged_children WHERE shop = $1",
];
/// With `CLEAR_STAGING` and the shop row's `delete`: everything the store holds of a shop.
pub(super) const DELETE_SHOP_ROWS: [&str; 2] = [
    "DELETE FROM entities WHERE shop = $1",
    "DELETE FROM inventory_items WHERE shop = $1",
];
/// `$3` is an `i64`: the caller's `usize::MAX` ("all of them") becomes `i64::MAX`, which both
/// read as no limit (PostgreSQL refuses SQLite's -1).
pub(super) const STAGED_PRODUCTS: &str =
    "SELECT id, body FROM staged_products WHERE shop = $1 AND id > $2 ORDER BY id LIMIT $3";
