//! Scheduled ticks across instances. Every instance runs the cron; on PostgreSQL a tick runs
//! on the instance whose row for it lands first (`scheduler_ticks`, keyed by the tick's
//! scheduled time, which every instance computes the same from the cron expression). No
//! leader is elected, so none has to be taken over: when an instance dies, the next tick is
//! simply claimed by another. On SQLite one process owns the databases (the queue lock), so
//! every tick is its own.

use sqlx::Executor;

use super::postgres::pg;
use super::{now_secs, Backend, StoreError};

/// Claimed ticks are kept this long (operators can see which instance ran what).
const KEEP_SECS: i64 = 30 * 24 * 3600;

#[derive(Clone)]
pub struct TickStore {
    backend: Backend,
}

impl TickStore {
    pub fn new(backend: Backend) -> TickStore {
        TickStore { backend }
    }

    /// Whether this instance runs `job`'s tick scheduled at `tick_at` (unix seconds).
    pub async fn claim(&self, job: &str, tick_at: i64, instance: &str) -> Result<bool, StoreError> {
        let pgdb = match &self.backend {
            Backend::Sqlite(_) => return Ok(true),
            Backend::Postgres(p) => p,
        };
        let now = now_secs();
        let claimed = sqlx::query(
            "INSERT INTO scheduler_ticks (job, tick_at, fired_by, fired_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (job, tick_at) DO NOTHING",
        )
        .bind(job)
        .bind(tick_at)
        .bind(instance)
        .bind(now)
        .execute(pgdb.pool())
        .await
        .map_err(pg)?
        .rows_affected()
            == 1;
        if claimed {
            pgdb.pool()
                .execute(
                    sqlx::query("DELETE FROM scheduler_ticks WHERE fired_at < $1")
                        .bind(now - KEEP_SECS),
                )
                .await
                .map_err(pg)?;
        }
        Ok(claimed)
    }

    /// Who ran `job`'s ticks, newest first (PostgreSQL only; empty on SQLite).
    pub async fn fired(&self, job: &str) -> Result<Vec<(i64, String)>, StoreError> {
        let Backend::Postgres(p) = &self.backend else {
            return Ok(Vec::new());
        };
        sqlx::query_as(
            "SELECT tick_at, fired_by FROM scheduler_ticks WHERE job = $1 ORDER BY tick_at DESC",
        )
        .bind(job)
        .fetch_all(p.pool())
        .await
        .map_err(pg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tick_is_claimed_by_one_instance_only() {
        let Some(db) = crate::store::postgres::test_db().await else {
            return;
        };
        let (a, b) = (
            TickStore::new(Backend::Postgres(db.clone())),
            TickStore::new(Backend::Postgres(db)),
        );
        let (x, y) = tokio::join!(a.claim("poll", 1_000, "a"), b.claim("poll", 1_000, "b"));
        assert!(
            x.unwrap() ^ y.unwrap(),
            "exactly one instance runs the tick"
        );
        // The next tick is claimed afresh, another job's tick is its own.
        assert!(b.claim("poll", 1_060, "b").await.unwrap());
        assert!(a.claim("backup", 1_000, "a").await.unwrap());
        assert_eq!(a.fired("poll").await.unwrap().len(), 2);
    }
}
