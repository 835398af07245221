//! The token store on PostgreSQL, on the database every instance shares. Where SQLite's single
//! writer made a read-then-write safe, a transaction-scoped advisory lock does it across
//! instances (`locked_tx`); the shop refresh lock is a session advisory lock.

mod facebook;
mod shops;

use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::Postgres;

use super::deletions::{DeletionDb, DeletionDone};
use super::watermarks::{Watermark, WatermarkDb};
use super::{
    sql, DeletionStatus, EncryptedToken, HeldLock, SummaryRow, TokenColumn, TokenDb, TokenSwap,
};
use crate::store::postgres::PgDb;
use crate::store::StoreError;

pub(super) struct PgTokens(pub(super) PgDb);

/// id, merchant_uuid, status, status_reason
type SummaryTuple = (String, String, String, Option<String>);
/// status, requested_at, completed_at, pages_deleted, objects_deleted
type DeletionTuple = (String, i64, Option<i64>, Option<i64>, Option<i64>);
/// conversation_id, updated_time, newest_ts, newest_mid, object_sha256
type WatermarkTuple = (String, i64, Option<i64>, Option<String>, Option<String>);

fn summary_row((id, merchant, status, reason): SummaryTuple) -> SummaryRow {
    SummaryRow {
        id,
        merchant,
        status,
        reason,
    }
}

/// A transaction holding the advisory lock of `scope:key` (`shop:<domain>`, `page:<id>`)
/// until it commits or rolls back: a read-then-write of that account runs one instance at a
/// time, as under SQLite's single writer.
async fn locked_tx(
    db: &PgDb,
    scope: &str,
    key: &str,
) -> Result<sqlx::Transaction<'static, Postgres>, StoreError> {
    let mut tx = db.pool().begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1 || ':' || $2, 0))")
        .bind(scope)
        .bind(key)
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

impl PgTokens {
    async fn summaries(
        &self,
        sql: &'static str,
        merchant: Option<String>,
    ) -> Result<Vec<SummaryRow>, StoreError> {
        let mut q = sqlx::query_as::<_, SummaryTuple>(sql);
        if let Some(m) = merchant {
            q = q.bind(m);
        }
        let rows = q.fetch_all(self.0.pool()).await?;
        Ok(rows.into_iter().map(summary_row).collect())
    }
}

/// A connection holding a shop's refresh lock. Dropped before `released` is set (the caller's
/// future was cancelled, or unlocking failed), the connection is closed rather than returned to
/// the pool: ending the session is what frees a session advisory lock, and a pooled connection
/// still holding it would block that shop's refreshes on every instance.
struct RefreshLock {
    conn: PoolConnection<Postgres>,
    domain: String,
    released: bool,
}

impl Drop for RefreshLock {
    fn drop(&mut self) {
        if !self.released {
            self.conn.close_on_drop();
        }
    }
}

#[async_trait]
impl HeldLock for RefreshLock {
    async fn release(mut self: Box<Self>) {
        let unlocked: Result<bool, sqlx::Error> =
            sqlx::query_scalar("SELECT pg_advisory_unlock(hashtextextended('refresh:' || $1, 0))")
                .bind(&self.domain)
                .fetch_one(&mut *self.conn)
                .await;
        match unlocked {
            // Back to the pool, lock-free.
            Ok(true) => self.released = true,
            // The work under the lock has run (a refresh may have been spent and stored): its
            // outcome is what the caller needs. Dropping `self` closes the session, which
            // frees the lock anyway.
            Ok(false) => tracing::warn!("shop refresh lock was not held at release"),
            Err(e) => tracing::warn!(error = %e, "releasing a shop refresh lock failed"),
        }
    }
}

#[async_trait]
impl TokenDb for PgTokens {
    async fn ping(&self) -> Result<(), StoreError> {
        self.0.ping().await
    }

    async fn shop_summaries(&self) -> Result<Vec<SummaryRow>, StoreError> {
        self.summaries(sql::SHOP_SUMMARIES, None).await
    }

    async fn page_summaries(&self) -> Result<Vec<SummaryRow>, StoreError> {
        self.summaries(sql::PAGE_SUMMARIES, None).await
    }

    async fn merchant_shops(&self, merchant: String) -> Result<Vec<SummaryRow>, StoreError> {
        self.summaries(sql::MERCHANT_SHOPS, Some(merchant)).await
    }

    async fn merchant_pages(
        &self,
        merchant: String,
    ) -> Result<Vec<(SummaryRow, Option<String>)>, StoreError> {
        let rows: Vec<(String, String, String, Option<String>, Option<String>)> =
            sqlx::query_as(sql::MERCHANT_PAGES)
                .bind(merchant)
                .fetch_all(self.0.pool())
                .await?;
        Ok(rows
            .into_iter()
            .map(|(id, m, s, reason, name)| (summary_row((id, m, s, reason)), name))
            .collect())
    }

    async fn merchant_exists(&self, merchant: String) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar(sql::MERCHANT_EXISTS)
            .bind(merchant)
            .fetch_one(self.0.pool())
            .await?)
    }

    async fn encrypted_tokens(&self) -> Result<Vec<EncryptedToken>, StoreError> {
        let mut out = Vec::new();
        for column in TokenColumn::ALL {
            let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(column.select_sql())
                .fetch_all(self.0.pool())
                .await?;
            out.extend(rows.into_iter().map(|(id, ciphertext)| EncryptedToken {
                column,
                id,
                ciphertext,
            }));
        }
        Ok(out)
    }

    async fn replace_tokens(&self, swaps: Vec<TokenSwap>) -> Result<bool, StoreError> {
        // Returning before `commit` drops `tx`, which rolls every swap back.
        let mut tx = self.0.pool().begin().await?;
        // The token tables are locked against writes (reads go on) until the commit, so a
        // token another instance writes cannot slip in under the old key after the count.
        sqlx::query("LOCK TABLE shops, pages IN EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        for s in &swaps {
            let done = sqlx::query(s.column.replace_sql())
                .bind(&s.id)
                .bind(&s.new)
                .bind(&s.old)
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() != 1 {
                return Ok(false);
            }
        }
        let stored: i64 = sqlx::query_scalar(sql::COUNT_TOKENS)
            .fetch_one(&mut *tx)
            .await?;
        if stored != swaps.len() as i64 {
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn lock_shop_refresh(&self, domain: String) -> Result<Box<dyn HeldLock>, StoreError> {
        // The guard exists before the lock is asked for: cancelled while waiting, the lock may
        // still be granted on the server, and closing the connection undoes that too.
        let mut lock = RefreshLock {
            conn: self.0.pool().acquire().await?,
            domain,
            released: false,
        };
        sqlx::query("SELECT pg_advisory_lock(hashtextextended('refresh:' || $1, 0))")
            .bind(&lock.domain)
            .execute(&mut *lock.conn)
            .await?;
        Ok(Box::new(lock))
    }
}

#[async_trait]
impl DeletionDb for PgTokens {
    async fn insert_deletion(
        &self,
        code: String,
        fb_user_id: String,
        now: i64,
        issued_at: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(sql::INSERT_DELETION)
            .bind(code)
            .bind(fb_user_id)
            .bind(now)
            .bind(issued_at)
            .execute(self.0.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn deletion_code(
        &self,
        fb_user_id: String,
        issued_at: i64,
    ) -> Result<String, StoreError> {
        // A new snapshot under READ COMMITTED: it sees the row the insert gave way to.
        Ok(sqlx::query_scalar(sql::DELETION_CODE)
            .bind(fb_user_id)
            .bind(issued_at)
            .fetch_one(self.0.pool())
            .await?)
    }

    async fn deletion_done(&self, d: DeletionDone) -> Result<(), StoreError> {
        sqlx::query(sql::DELETION_DONE)
            .bind(d.code)
            .bind(d.now)
            .bind(d.detail)
            .bind(d.pages)
            .bind(d.objects)
            .bind(d.events)
            .execute(self.0.pool())
            .await?;
        Ok(())
    }

    async fn deletion_status(&self, code: String) -> Result<Option<DeletionStatus>, StoreError> {
        let row: Option<DeletionTuple> = sqlx::query_as(sql::DELETION_STATUS)
            .bind(code)
            .fetch_optional(self.0.pool())
            .await?;
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

    async fn unfinished_deletions(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query_as(sql::UNFINISHED_DELETIONS)
            .fetch_all(self.0.pool())
            .await?)
    }
}

#[async_trait]
impl WatermarkDb for PgTokens {
    async fn watermark_times(&self, page: String) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query_as(sql::WATERMARK_TIMES)
            .bind(page)
            .fetch_all(self.0.pool())
            .await?)
    }

    async fn watermark(&self, page: String, psid: String) -> Result<Option<Watermark>, StoreError> {
        let row: Option<WatermarkTuple> = sqlx::query_as(sql::WATERMARK)
            .bind(page)
            .bind(psid)
            .fetch_optional(self.0.pool())
            .await?;
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

    async fn save_watermark(
        &self,
        page: String,
        psid: String,
        w: Watermark,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(sql::SAVE_WATERMARK)
            .bind(page)
            .bind(psid)
            .bind(w.conversation_id)
            .bind(w.updated_time)
            .bind(w.newest_ts)
            .bind(w.newest_mid)
            .bind(w.object_sha256)
            .bind(now)
            .execute(self.0.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn page_last_polled(&self, page: String) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(sql::PAGE_LAST_POLLED)
            .bind(page)
            .fetch_one(self.0.pool())
            .await?)
    }
}
