//! The session store in the shared PostgreSQL database.

use async_trait::async_trait;

use super::{sql, NewRow, SessionDb};
use crate::store::postgres::PgDb;
use crate::store::StoreError;

pub(super) struct PgSessions(pub(super) PgDb);

#[async_trait]
impl SessionDb for PgSessions {
    async fn ping(&self) -> Result<(), StoreError> {
        self.0.ping().await
    }

    async fn insert_session(&self, row: NewRow) -> Result<(), StoreError> {
        insert_and_sweep(
            &self.0,
            sql::INSERT_SESSION,
            sql::DELETE_EXPIRED_SESSIONS,
            row,
        )
        .await
    }

    async fn session_merchant(
        &self,
        id_hash: String,
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(sql::SESSION_MERCHANT)
            .bind(id_hash)
            .bind(now)
            .fetch_optional(self.0.pool())
            .await?)
    }

    async fn delete_session(&self, id_hash: String) -> Result<bool, StoreError> {
        let done = sqlx::query(sql::DELETE_SESSION)
            .bind(id_hash)
            .execute(self.0.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_merchant_sessions(&self, merchant: String) -> Result<usize, StoreError> {
        let done = sqlx::query(sql::DELETE_MERCHANT_SESSIONS)
            .bind(merchant)
            .execute(self.0.pool())
            .await?;
        Ok(done.rows_affected() as usize)
    }

    async fn insert_state(&self, row: NewRow) -> Result<(), StoreError> {
        insert_and_sweep(&self.0, sql::INSERT_STATE, sql::DELETE_EXPIRED_STATES, row).await
    }

    async fn consume_state(
        &self,
        nonce_hash: String,
        provider: String,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(sql::CONSUME_STATE)
            .bind(nonce_hash)
            .bind(provider)
            .bind(now)
            .execute(self.0.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// Inserts `row` with `insert`, then deletes what expired with `sweep`.
async fn insert_and_sweep(
    db: &PgDb,
    insert: &'static str,
    sweep: &'static str,
    row: NewRow,
) -> Result<(), StoreError> {
    sqlx::query(insert)
        .bind(row.key)
        .bind(row.owner)
        .bind(row.created_at)
        .bind(row.expires_at)
        .execute(db.pool())
        .await?;
    sqlx::query(sweep)
        .bind(row.created_at)
        .execute(db.pool())
        .await?;
    Ok(())
}
