//! The token store on PostgreSQL: the same queries as the SQLite code beside it, on the shared
//! database. Tokens arrive here already encrypted (and leave still encrypted) by the same
//! `TokenCipher` code as on SQLite, so both backends hold the same ciphertext format.
//!
//! Two differences from SQLite are handled here rather than left to chance: text sorts
//! `COLLATE "C"` (SQLite compares bytes; PostgreSQL would use the database's locale) and NULLs
//! sort first where SQLite puts them first; and where SQLite's single writer made a
//! read-then-write safe, a transaction-scoped advisory lock does it across instances.

mod facebook;
mod shops;

pub(super) use facebook::*;
pub(super) use shops::*;

use std::collections::HashMap;
use std::future::Future;

use secrecy::ExposeSecret;
use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, Postgres};
use uuid::Uuid;

use super::TOKEN_COLUMNS;
use super::{AccountStatus, AccountSummary, DeletionRecorded, DeletionStatus, Watermark};
use crate::crypto::TokenCipher;
use crate::objects::keys::{PageId, ShopDomain};
use crate::store::postgres::{pg, PgDb};
use crate::store::{now_secs, StoreError};

/// conversation_id, updated_time, newest_ts, newest_mid, object_sha256
type WatermarkRow = (String, i64, Option<i64>, Option<String>, Option<String>);
/// status, requested_at, completed_at, pages_deleted, objects_deleted
type DeletionRow = (String, i64, Option<i64>, Option<i64>, Option<i64>);
/// page_id, merchant_uuid, status, status_reason, name
type PageSummaryRow = (String, String, String, Option<String>, Option<String>);

/// A stored status, strictly: an unknown value is an error (as `FromSql` makes it on SQLite).
/// A transaction holding the advisory lock of `scope:key` (`shop:<domain>`, `page:<id>`)
/// until it commits or rolls back: a read-then-write of that account runs one instance at a
/// time, as under SQLite's single writer.
async fn locked_tx(
    db: &PgDb,
    scope: &str,
    key: &str,
) -> Result<sqlx::Transaction<'static, Postgres>, StoreError> {
    let mut tx = db.pool().begin().await.map_err(pg)?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1 || ':' || $2, 0))")
        .bind(scope)
        .bind(key)
        .execute(&mut *tx)
        .await
        .map_err(pg)?;
    Ok(tx)
}

fn status(s: &str) -> Result<AccountStatus, StoreError> {
    s.parse().map_err(StoreError::from)
}

/// A stored merchant UUID; one that does not parse is an error (as on SQLite).
fn merchant_uuid(s: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(s)
        .map_err(|e| StoreError::Corrupt(format!("stored merchant UUID is invalid: {e}")))
}

/// A count or limit as BIGINT (saturating: a `usize` beyond `i64` means "no limit" here).
fn big(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The first column of `sql` (one optional text parameter), parsed with `parse`; rows that no
/// longer parse are skipped, as on SQLite.
async fn ids<T>(
    db: &PgDb,
    sql: &'static str,
    param: Option<&str>,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Vec<T>, StoreError> {
    let mut q = sqlx::query_scalar::<_, String>(sql);
    if let Some(p) = param {
        q = q.bind(p.to_string());
    }
    let rows = q.fetch_all(db.pool()).await.map_err(pg)?;
    Ok(rows.iter().filter_map(|r| parse(r)).collect())
}

async fn summaries(
    db: &PgDb,
    sql: &'static str,
    merchant: Option<Uuid>,
) -> Result<Vec<AccountSummary>, StoreError> {
    let mut q = sqlx::query_as::<_, (String, String, String, Option<String>)>(sql);
    if let Some(m) = merchant {
        q = q.bind(m.to_string());
    }
    q.fetch_all(db.pool())
        .await
        .map_err(pg)?
        .into_iter()
        .map(|(id, m, s, reason)| {
            Ok(AccountSummary {
                id,
                merchant: merchant_uuid(&m)?,
                status: status(&s)?,
                reason,
            })
        })
        .collect()
}

pub(super) async fn shop_summaries(db: &PgDb) -> Result<Vec<AccountSummary>, StoreError> {
    summaries(
        db,
        r#"SELECT domain, merchant_uuid, status, status_reason FROM shops
           ORDER BY domain COLLATE "C""#,
        None,
    )
    .await
}

pub(super) async fn page_summaries(db: &PgDb) -> Result<Vec<AccountSummary>, StoreError> {
    summaries(
        db,
        r#"SELECT page_id, merchant_uuid, status, status_reason FROM pages
           ORDER BY page_id COLLATE "C""#,
        None,
    )
    .await
}

pub(super) async fn merchant_shops(
    db: &PgDb,
    merchant: Uuid,
) -> Result<Vec<AccountSummary>, StoreError> {
    summaries(
        db,
        r#"SELECT domain, merchant_uuid, status, status_reason FROM shops
           WHERE merchant_uuid = $1 ORDER BY domain COLLATE "C""#,
        Some(merchant),
    )
    .await
}

pub(super) async fn merchant_pages(
    db: &PgDb,
    merchant: Uuid,
) -> Result<Vec<(AccountSummary, Option<String>)>, StoreError> {
    let rows: Vec<PageSummaryRow> = sqlx::query_as(
        r#"SELECT page_id, merchant_uuid, status, status_reason, name FROM pages
           WHERE merchant_uuid = $1
           ORDER BY name COLLATE "C" NULLS FIRST, page_id COLLATE "C""#,
    )
    .bind(merchant.to_string())
    .fetch_all(db.pool())
    .await
    .map_err(pg)?;
    rows.into_iter()
        .map(|(id, m, s, reason, name)| {
            Ok((
                AccountSummary {
                    id,
                    merchant: merchant_uuid(&m)?,
                    status: status(&s)?,
                    reason,
                },
                name,
            ))
        })
        .collect()
}

pub(super) async fn page_last_polled(db: &PgDb, page: &PageId) -> Result<Option<i64>, StoreError> {
    sqlx::query_scalar(
        "SELECT MAX(polled_at) * 1000 FROM conversation_watermarks WHERE page_id = $1",
    )
    .bind(page.as_str())
    .fetch_one(db.pool())
    .await
    .map_err(pg)
}

pub(super) async fn merchant_exists(db: &PgDb, merchant: Uuid) -> Result<bool, StoreError> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM merchants WHERE uuid = $1)")
        .bind(merchant.to_string())
        .fetch_one(db.pool())
        .await
        .map_err(pg)
}

/// Re-encrypts every token in one transaction, as on SQLite. The token tables are locked
/// against writes (reads go on) for its duration, so a token another instance writes meanwhile
/// cannot slip in under the old key after the rows were read.
pub(super) async fn rotate_key(
    db: &PgDb,
    old: &TokenCipher,
    new: &TokenCipher,
) -> Result<usize, StoreError> {
    let mut tx = db.pool().begin().await.map_err(pg)?;
    sqlx::query("LOCK TABLE shops, pages IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .map_err(pg)?;
    let mut n = 0;
    for (table, key, col, prefix) in TOKEN_COLUMNS {
        // Table and column names come from `TOKEN_COLUMNS`, constants of this module.
        let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {key}, {col} FROM {table} WHERE {col} IS NOT NULL"
        )))
        .fetch_all(&mut *tx)
        .await
        .map_err(pg)?;
        let update = format!("UPDATE {table} SET {col} = $1 WHERE {key} = $2");
        for (id, blob) in rows {
            let aad = format!("{prefix}:{id}").into_bytes();
            // An error here drops `tx`, which rolls everything back.
            let plain = old.decrypt(&blob, &aad)?;
            let fresh = new.encrypt(plain.expose_secret(), &aad);
            sqlx::query(AssertSqlSafe(update.clone()))
                .bind(fresh)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(pg)?;
            n += 1;
        }
    }
    tx.commit().await.map_err(pg)?;
    Ok(n)
}

/// A connection holding a shop's refresh lock. Dropped before `released` is set (the caller's
/// future was cancelled, or unlocking failed), the connection is closed rather than returned to
/// the pool: ending the session is what frees a session advisory lock, and a pooled connection
/// still holding it would block that shop's refreshes on every instance.
struct RefreshLock {
    conn: PoolConnection<Postgres>,
    released: bool,
}

impl Drop for RefreshLock {
    fn drop(&mut self) {
        if !self.released {
            self.conn.close_on_drop();
        }
    }
}

pub(super) async fn with_shop_refresh_lock<F, Fut, T>(
    db: &PgDb,
    shop: &ShopDomain,
    f: F,
) -> Result<T, StoreError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = T>,
{
    // The guard exists before the lock is asked for: cancelled while waiting, the lock may
    // still be granted on the server, and closing the connection undoes that too.
    let mut lock = RefreshLock {
        conn: db.pool().acquire().await.map_err(pg)?,
        released: false,
    };
    sqlx::query("SELECT pg_advisory_lock(hashtextextended('refresh:' || $1, 0))")
        .bind(shop.as_str())
        .execute(&mut *lock.conn)
        .await
        .map_err(pg)?;
    let out = f().await;
    let unlocked: Result<bool, sqlx::Error> =
        sqlx::query_scalar("SELECT pg_advisory_unlock(hashtextextended('refresh:' || $1, 0))")
            .bind(shop.as_str())
            .fetch_one(&mut *lock.conn)
            .await;
    match unlocked {
        // Back to the pool, lock-free.
        Ok(true) => lock.released = true,
        // `f` has run (a refresh may have been spent and stored): its outcome is what the
        // caller needs. Dropping `lock` closes the session, which frees the lock anyway.
        Ok(false) => tracing::warn!("shop refresh lock was not held at release"),
        Err(e) => tracing::warn!(error = %e, "releasing a shop refresh lock failed"),
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Watermarks

pub(super) async fn watermark_times(
    db: &PgDb,
    page: &str,
) -> Result<HashMap<String, i64>, StoreError> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT psid, updated_time FROM conversation_watermarks WHERE page_id = $1")
            .bind(page)
            .fetch_all(db.pool())
            .await
            .map_err(pg)?;
    Ok(rows.into_iter().collect())
}

pub(super) async fn watermark(
    db: &PgDb,
    page: &str,
    psid: &str,
) -> Result<Option<Watermark>, StoreError> {
    let row: Option<WatermarkRow> = sqlx::query_as(
        "SELECT conversation_id, updated_time, newest_ts, newest_mid, object_sha256
         FROM conversation_watermarks WHERE page_id = $1 AND psid = $2",
    )
    .bind(page)
    .bind(psid)
    .fetch_optional(db.pool())
    .await
    .map_err(pg)?;
    Ok(row.map(
        |(conversation_id, updated_time, newest_ts, newest_mid, object_sha256)| Watermark {
            conversation_id,
            updated_time,
            newest_ts,
            newest_mid,
            object_sha256,
        },
    ))
}

pub(super) async fn save_watermark(
    db: &PgDb,
    page: &str,
    psid: &str,
    w: Watermark,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO conversation_watermarks
            (page_id, psid, conversation_id, updated_time, newest_ts, newest_mid,
             object_sha256, polled_at)
         SELECT $1, $2, $3, $4, $5, $6, $7, $8
         WHERE EXISTS (SELECT 1 FROM pages WHERE page_id = $1 AND status != 'deleting')
         ON CONFLICT (page_id, psid) DO UPDATE SET
            conversation_id = excluded.conversation_id,
            updated_time = excluded.updated_time, newest_ts = excluded.newest_ts,
            newest_mid = excluded.newest_mid, object_sha256 = excluded.object_sha256,
            polled_at = excluded.polled_at",
    )
    .bind(page)
    .bind(psid)
    .bind(w.conversation_id)
    .bind(w.updated_time)
    .bind(w.newest_ts)
    .bind(w.newest_mid)
    .bind(w.object_sha256)
    .bind(now_secs())
    .execute(db.pool())
    .await
    .map_err(pg)?;
    Ok(done.rows_affected() == 1)
}

// ---------------------------------------------------------------------------------------------
// Data deletion requests

pub(super) async fn record_deletion_request(
    db: &PgDb,
    code: &str,
    fb_user_id: &str,
    issued_at: i64,
) -> Result<DeletionRecorded, StoreError> {
    // A concurrent insert of the same request makes this one wait for it, then do nothing;
    // the SELECT (a new snapshot under READ COMMITTED) then sees the winner's row.
    let inserted = sqlx::query(
        "INSERT INTO data_deletions (confirmation_code, fb_user_id, status, requested_at, issued_at)
         VALUES ($1, $2, 'pending', $3, $4)
         ON CONFLICT (fb_user_id, issued_at) DO NOTHING",
    )
    .bind(code)
    .bind(fb_user_id)
    .bind(now_secs())
    .bind(issued_at)
    .execute(db.pool())
    .await
    .map_err(pg)?;
    if inserted.rows_affected() == 1 {
        return Ok(DeletionRecorded::New);
    }
    let original: String = sqlx::query_scalar(
        "SELECT confirmation_code FROM data_deletions WHERE fb_user_id = $1 AND issued_at = $2",
    )
    .bind(fb_user_id)
    .bind(issued_at)
    .fetch_one(db.pool())
    .await
    .map_err(pg)?;
    Ok(DeletionRecorded::Replay(original))
}

pub(super) async fn deletion_done(
    db: &PgDb,
    code: &str,
    detail: &str,
    pages: usize,
    objects: usize,
    events: usize,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE data_deletions SET status = 'done', completed_at = $2,
                detail = $3, pages_deleted = $4, objects_deleted = $5, events_deleted = $6
         WHERE confirmation_code = $1 AND status != 'done'",
    )
    .bind(code)
    .bind(now_secs())
    .bind(detail)
    .bind(big(pages))
    .bind(big(objects))
    .bind(big(events))
    .execute(db.pool())
    .await
    .map_err(pg)?;
    Ok(())
}

pub(super) async fn deletion_status(
    db: &PgDb,
    code: &str,
) -> Result<Option<DeletionStatus>, StoreError> {
    let row: Option<DeletionRow> = sqlx::query_as(
        "SELECT status, requested_at, completed_at, pages_deleted, objects_deleted
         FROM data_deletions WHERE confirmation_code = $1",
    )
    .bind(code)
    .fetch_optional(db.pool())
    .await
    .map_err(pg)?;
    Ok(row.map(
        |(status, requested_at, completed_at, pages_deleted, objects_deleted)| DeletionStatus {
            status,
            requested_at,
            completed_at,
            pages_deleted,
            objects_deleted,
        },
    ))
}

pub(super) async fn unfinished_deletions(db: &PgDb) -> Result<Vec<(String, String)>, StoreError> {
    sqlx::query_as(
        r#"SELECT confirmation_code, fb_user_id FROM data_deletions
           WHERE status IN ('pending', 'failed')
           ORDER BY requested_at, confirmation_code COLLATE "C""#,
    )
    .fetch_all(db.pool())
    .await
    .map_err(pg)
}
