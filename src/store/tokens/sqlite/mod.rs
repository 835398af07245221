//! The token store in `tokens.db`. One connection serves the process (`Db`), so a transaction
//! that reads then writes runs alone: the single writer is what PostgreSQL's advisory locks
//! stand in for.

mod facebook;
mod shops;

use async_trait::async_trait;
use rusqlite::types::ToSql;
use rusqlite::{OptionalExtension, Row};

use super::deletions::{DeletionDb, DeletionDone};
use super::watermarks::{Watermark, WatermarkDb};
use super::{
    sql, DeletionStatus, EncryptedToken, HeldLock, SummaryRow, TokenColumn, TokenDb, TokenSwap,
};
use crate::store::sqlite::{numbered, Db};
use crate::store::StoreError;

pub(super) struct SqliteTokens(pub(super) Db);

/// The values of a statement's `$1, $2, …`, owned: `Db::call` runs off the async runtime, so
/// what it runs must be `'static`.
type Args = Vec<Box<dyn ToSql + Send>>;

/// `args![a, b, …]`: the values of `$1, $2, …` in that order.
macro_rules! args {
    ($($v:expr),* $(,)?) => {
        vec![$(Box::new($v) as Box<dyn rusqlite::types::ToSql + Send>),*]
    };
}
use args;

/// `args` bound each to its own name (see `store::sqlite::numbered`).
fn bound(args: &Args) -> Vec<(&'static str, &dyn ToSql)> {
    let values: Vec<&dyn ToSql> = args.iter().map(|v| v.as_ref() as &dyn ToSql).collect();
    numbered(&values)
}

impl SqliteTokens {
    /// Runs one statement; returns how many rows it changed.
    async fn execute(&self, sql: &'static str, args: Args) -> Result<usize, StoreError> {
        self.0
            .call(move |c| Ok(c.prepare_cached(sql)?.execute(bound(&args).as_slice())?))
            .await
    }

    /// Every row of a query, each read with `read`.
    async fn rows<T: Send + 'static>(
        &self,
        sql: &'static str,
        args: Args,
        read: fn(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        self.0
            .call(move |c| {
                let mut st = c.prepare_cached(sql)?;
                let v = st
                    .query_map(bound(&args).as_slice(), read)?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(v)
            })
            .await
    }

    /// The first row of a query, if any, read with `read`.
    async fn row<T: Send + 'static>(
        &self,
        sql: &'static str,
        args: Args,
        read: fn(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Option<T>, StoreError> {
        self.0
            .call(move |c| {
                Ok(c.prepare_cached(sql)?
                    .query_row(bound(&args).as_slice(), read)
                    .optional()?)
            })
            .await
    }

    /// The one value of a query that always returns one row (`EXISTS`, `MAX`).
    async fn value<T: rusqlite::types::FromSql + Send + 'static>(
        &self,
        sql: &'static str,
        args: Args,
    ) -> Result<T, StoreError> {
        self.0
            .call(move |c| {
                Ok(c.prepare_cached(sql)?
                    .query_row(bound(&args).as_slice(), |r| r.get(0))?)
            })
            .await
    }
}

fn summary_row(r: &Row<'_>) -> rusqlite::Result<SummaryRow> {
    Ok(SummaryRow {
        id: r.get(0)?,
        merchant: r.get(1)?,
        status: r.get(2)?,
        reason: r.get(3)?,
    })
}

/// On SQLite only one process runs: the caller's in-process single-flight is the lock.
struct NoLock;

#[async_trait]
impl HeldLock for NoLock {
    async fn release(self: Box<Self>) {}
}

#[async_trait]
impl TokenDb for SqliteTokens {
    async fn ping(&self) -> Result<(), StoreError> {
        self.0.ping().await
    }

    async fn shop_summaries(&self) -> Result<Vec<SummaryRow>, StoreError> {
        self.rows(sql::SHOP_SUMMARIES, args![], summary_row).await
    }

    async fn page_summaries(&self) -> Result<Vec<SummaryRow>, StoreError> {
        self.rows(sql::PAGE_SUMMARIES, args![], summary_row).await
    }

    async fn merchant_shops(&self, merchant: String) -> Result<Vec<SummaryRow>, StoreError> {
        self.rows(sql::MERCHANT_SHOPS, args![merchant], summary_row)
            .await
    }

    async fn merchant_pages(
        &self,
        merchant: String,
    ) -> Result<Vec<(SummaryRow, Option<String>)>, StoreError> {
        self.rows(sql::MERCHANT_PAGES, args![merchant], |r| {
            Ok((summary_row(r)?, r.get(4)?))
        })
        .await
    }

    async fn merchant_exists(&self, merchant: String) -> Result<bool, StoreError> {
        self.value(sql::MERCHANT_EXISTS, args![merchant]).await
    }

    async fn encrypted_tokens(&self) -> Result<Vec<EncryptedToken>, StoreError> {
        self.0
            .call(|c| {
                let mut out = Vec::new();
                for column in TokenColumn::ALL {
                    let mut st = c.prepare_cached(column.select_sql())?;
                    let rows = st.query_map([], |r| {
                        Ok(EncryptedToken {
                            column,
                            id: r.get(0)?,
                            ciphertext: r.get(1)?,
                        })
                    })?;
                    for row in rows {
                        out.push(row?);
                    }
                }
                Ok(out)
            })
            .await
    }

    async fn replace_tokens(&self, swaps: Vec<TokenSwap>) -> Result<bool, StoreError> {
        self.0
            .call(move |c| {
                // Returning before `commit` drops `tx`, which rolls every swap back.
                let tx = c.transaction()?;
                for s in &swaps {
                    let changed = tx
                        .prepare_cached(s.column.replace_sql())?
                        .execute(numbered(&[&s.id, &s.new, &s.old]).as_slice())?;
                    if changed != 1 {
                        return Ok(false);
                    }
                }
                let stored: i64 = tx.query_row(sql::COUNT_TOKENS, [], |r| r.get(0))?;
                if stored != swaps.len() as i64 {
                    return Ok(false);
                }
                tx.commit()?;
                Ok(true)
            })
            .await
    }

    async fn lock_shop_refresh(&self, _domain: String) -> Result<Box<dyn HeldLock>, StoreError> {
        Ok(Box::new(NoLock))
    }
}

#[async_trait]
impl DeletionDb for SqliteTokens {
    async fn insert_deletion(
        &self,
        code: String,
        fb_user_id: String,
        now: i64,
        issued_at: i64,
    ) -> Result<bool, StoreError> {
        let args = args![code, fb_user_id, now, issued_at];
        Ok(self.execute(sql::INSERT_DELETION, args).await? == 1)
    }

    async fn deletion_code(
        &self,
        fb_user_id: String,
        issued_at: i64,
    ) -> Result<String, StoreError> {
        self.value(sql::DELETION_CODE, args![fb_user_id, issued_at])
            .await
    }

    async fn deletion_done(&self, d: DeletionDone) -> Result<(), StoreError> {
        let args = args![d.code, d.now, d.detail, d.pages, d.objects, d.events];
        self.execute(sql::DELETION_DONE, args).await?;
        Ok(())
    }

    async fn deletion_status(&self, code: String) -> Result<Option<DeletionStatus>, StoreError> {
        self.row(sql::DELETION_STATUS, args![code], |r| {
            Ok(DeletionStatus {
                status: r.get(0)?,
                requested_at: r.get(1)?,
                completed_at: r.get(2)?,
                pages_deleted: r.get(3)?,
                objects_deleted: r.get(4)?,
            })
        })
        .await
    }

    async fn unfinished_deletions(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.rows(sql::UNFINISHED_DELETIONS, args![], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .await
    }
}

#[async_trait]
impl WatermarkDb for SqliteTokens {
    async fn watermark_times(&self, page: String) -> Result<Vec<(String, i64)>, StoreError> {
        self.rows(sql::WATERMARK_TIMES, args![page], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .await
    }

    async fn watermark(&self, page: String, psid: String) -> Result<Option<Watermark>, StoreError> {
        self.row(sql::WATERMARK, args![page, psid], |r| {
            Ok(Watermark {
                conversation_id: r.get(0)?,
                updated_time: r.get(1)?,
                newest_ts: r.get(2)?,
                newest_mid: r.get(3)?,
                object_sha256: r.get(4)?,
            })
        })
        .await
    }

    async fn save_watermark(
        &self,
        page: String,
        psid: String,
        w: Watermark,
        now: i64,
    ) -> Result<bool, StoreError> {
        let args = args![
            page,
            psid,
            w.conversation_id,
            w.updated_time,
            w.newest_ts,
            w.newest_mid,
            w.object_sha256,
            now
        ];
        Ok(self.execute(sql::SAVE_WATERMARK, args).await? == 1)
    }

    async fn page_last_polled(&self, page: String) -> Result<Option<i64>, StoreError> {
        self.value(sql::PAGE_LAST_POLLED, args![page]).await
    }
}
