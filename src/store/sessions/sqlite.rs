//! The session store in `sessions.db`.

use async_trait::async_trait;
use rusqlite::OptionalExtension;

use super::{sql, NewRow, SessionDb};
use crate::store::sqlite::{numbered, Db};
use crate::store::StoreError;

pub(super) struct SqliteSessions(pub(super) Db);

#[async_trait]
impl SessionDb for SqliteSessions {
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
        self.0
            .call(move |c| {
                Ok(c.prepare_cached(sql::SESSION_MERCHANT)?
                    .query_row(numbered(&[&id_hash, &now]).as_slice(), |r| r.get(0))
                    .optional()?)
            })
            .await
    }

    async fn delete_session(&self, id_hash: String) -> Result<bool, StoreError> {
        self.0
            .call(move |c| {
                let n = c
                    .prepare_cached(sql::DELETE_SESSION)?
                    .execute(numbered(&[&id_hash]).as_slice())?;
                Ok(n > 0)
            })
            .await
    }

    async fn delete_merchant_sessions(&self, merchant: String) -> Result<usize, StoreError> {
        self.0
            .call(move |c| {
                Ok(c.prepare_cached(sql::DELETE_MERCHANT_SESSIONS)?
                    .execute(numbered(&[&merchant]).as_slice())?)
            })
            .await
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
        self.0
            .call(move |c| {
                Ok(c.prepare_cached(sql::CONSUME_STATE)?
                    .execute(numbered(&[&nonce_hash, &provider, &now]).as_slice())?
                    == 1)
            })
            .await
    }
}

/// Inserts `row` with `insert`, then deletes what expired with `sweep`.
async fn insert_and_sweep(
    db: &Db,
    insert: &'static str,
    sweep: &'static str,
    row: NewRow,
) -> Result<(), StoreError> {
    db.call(move |c| {
        c.prepare_cached(insert)?.execute(
            numbered(&[&row.key, &row.owner, &row.created_at, &row.expires_at]).as_slice(),
        )?;
        c.prepare_cached(sweep)?
            .execute(numbered(&[&row.created_at]).as_slice())?;
        Ok(())
    })
    .await
}
