//! Ticks in the shared PostgreSQL database (`scheduler_ticks`).

use async_trait::async_trait;

use super::TickDb;
use crate::store::postgres::PgDb;
use crate::store::StoreError;

pub(super) struct PgTicks(pub(super) PgDb);

#[async_trait]
impl TickDb for PgTicks {
    /// The insert that lands first wins: the others find the key taken and insert nothing.
    async fn claim(
        &self,
        job: &str,
        tick_at: i64,
        instance: &str,
        now: i64,
        forget_before: i64,
    ) -> Result<bool, StoreError> {
        let claimed = sqlx::query(
            "INSERT INTO scheduler_ticks (job, tick_at, fired_by, fired_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (job, tick_at) DO NOTHING",
        )
        .bind(job)
        .bind(tick_at)
        .bind(instance)
        .bind(now)
        .execute(self.0.pool())
        .await?
        .rows_affected()
            == 1;
        if claimed {
            sqlx::query("DELETE FROM scheduler_ticks WHERE fired_at < $1")
                .bind(forget_before)
                .execute(self.0.pool())
                .await?;
        }
        Ok(claimed)
    }

    async fn fired(&self, job: &str) -> Result<Vec<(i64, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT tick_at, fired_by FROM scheduler_ticks WHERE job = $1 ORDER BY tick_at DESC",
        )
        .bind(job)
        .fetch_all(self.0.pool())
        .await?)
    }
}
