//! Scheduled ticks across instances. Every instance runs the cron; on PostgreSQL a tick runs
//! on the instance whose row for it lands first (`scheduler_ticks`, keyed by the tick's
//! scheduled time, which every instance computes the same from the cron expression). No
//! leader is elected, so none has to be taken over: when an instance dies, the next tick is
//! simply claimed by another. On SQLite one process owns the databases (the queue lock), so
//! every tick is its own.
//!
//! `TickStore` holds what is the same on both (the clock, how long claims are kept);
//! `TickDb` is the seam, implemented once per backend (`sqlite`, `postgres`).

mod postgres;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

use super::postgres::PgDb;
use super::{now_secs, StoreError};

/// Claimed ticks are kept this long (operators can see which instance ran what).
const KEEP_SECS: i64 = 30 * 24 * 3600;

/// What each backend does for the tick store.
#[async_trait]
trait TickDb: Send + Sync {
    /// Records that `instance` fires `job`'s tick of `tick_at` (unix seconds) at `now`,
    /// unless an instance did already: whether this one does. Claims fired before
    /// `forget_before` are deleted after a successful one.
    async fn claim(
        &self,
        job: &str,
        tick_at: i64,
        instance: &str,
        now: i64,
        forget_before: i64,
    ) -> Result<bool, StoreError>;
    /// Who fired `job`'s ticks, newest first.
    async fn fired(&self, job: &str) -> Result<Vec<(i64, String)>, StoreError>;
}

#[derive(Clone)]
pub struct TickStore {
    db: Arc<dyn TickDb>,
}

impl TickStore {
    /// One process on SQLite files: it owns every tick, and records none (no table holds
    /// them).
    pub fn sqlite() -> TickStore {
        TickStore {
            db: Arc::new(sqlite::SqliteTicks),
        }
    }

    /// The instances sharing the PostgreSQL database: a tick is claimed by one of them.
    pub fn on_postgres(pg: PgDb) -> TickStore {
        TickStore {
            db: Arc::new(postgres::PgTicks(pg)),
        }
    }

    /// Whether this instance runs `job`'s tick scheduled at `tick_at` (unix seconds).
    pub async fn claim(&self, job: &str, tick_at: i64, instance: &str) -> Result<bool, StoreError> {
        let now = now_secs();
        self.db
            .claim(job, tick_at, instance, now, now - KEEP_SECS)
            .await
    }

    /// Who ran `job`'s ticks, newest first (PostgreSQL only; empty on SQLite).
    pub async fn fired(&self, job: &str) -> Result<Vec<(i64, String)>, StoreError> {
        self.db.fired(job).await
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
            TickStore::on_postgres(db.clone()),
            TickStore::on_postgres(db),
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

    #[tokio::test]
    async fn on_sqlite_every_tick_is_this_instances_and_none_is_recorded() {
        let s = TickStore::sqlite();
        assert!(s.claim("poll", 1_000, "a").await.unwrap());
        assert!(s.claim("poll", 1_000, "b").await.unwrap());
        assert!(s.fired("poll").await.unwrap().is_empty());
    }
}
