//! The queue on PostgreSQL, shared by every instance: the same semantics as on SQLite (see the
//! parent module's docs), made safe for several processes on one table.
//!
//! - A claim (one call of the `salesbot_claim` function, so its statements cost no round
//!   trips; `queue`) locks rows with `FOR UPDATE SKIP LOCKED` and, before choosing a group's
//!   batch, takes `pg_try_advisory_xact_lock(hashtextextended(group_key, 0))`: checking that
//!   the group has nothing running and marking its batch running happen under that lock, so
//!   two instances never run two batches of one group at once. A group whose lock is taken
//!   is skipped, never waited for; a claim therefore never blocks.
//! - Inserts of one transaction go in dedupe-key order (`insert`), so two transactions
//!   inserting overlapping keys wait on each other in the same order and cannot deadlock.
//! - Leases are the workers' heartbeats; an instance that dies stops renewing them and
//!   `reclaim_expired` (any instance) returns its events to the queue.
//! - Times are the instances' clocks, as on SQLite (run_at, leases): instances must keep their
//!   clocks in sync (NTP), which any host does.
//! - Wake-ups cross instances by `LISTEN/NOTIFY` (`listen`).

mod insert;
mod listen;
mod queue;

use std::sync::Arc;

use async_trait::async_trait;

use super::rows::{ClaimReq, Found, Outcomes, Recorded, StatusCounts, StoredOutcome, StoredRun};
use super::{
    sql, EnqueueError, Enqueued, EventDb, EventId, EventRow, EventStatus, NewEvent, Pool, RunId,
    RunKind, RunTrigger, Tracked, Wakers,
};
use crate::store::postgres::PgDb;
use crate::store::StoreError;
use listen::{Listener, Notifier};
use queue::attempts;

pub(super) struct PgEvents {
    db: PgDb,
    /// Announces this instance's new and finished work to the other instances.
    notifier: Notifier,
    /// Relays the other instances' announcements to this one's wake-ups; stopped with the
    /// store's last clone.
    _listener: Listener,
}

impl PgEvents {
    /// Starts announcing and listening (an error if listening fails).
    pub async fn start(db: PgDb, wakers: Arc<Wakers>) -> Result<PgEvents, StoreError> {
        // Names this store's announcements, so its own listener skips them (its workers were
        // woken in-process already).
        let origin = crate::crypto::random_token(6);
        let notifier = Notifier::start(&db, origin.clone());
        let listener = Listener::start(&db, wakers, origin).await?;
        Ok(PgEvents {
            db,
            notifier,
            _listener: listener,
        })
    }
}

/// `sql::ROWS` and `sql::RECENT_FAILURES`.
type EventRowColumns = (
    EventId,
    String,
    String,
    String,
    EventStatus,
    i32,
    Option<String>,
    Option<RunId>,
);

fn event_row(c: EventRowColumns) -> Result<EventRow, StoreError> {
    let (id, kind, dedupe_key, group_key, status, n, last_error, run_id) = c;
    Ok(EventRow {
        id,
        kind,
        dedupe_key,
        group_key,
        status,
        attempts: attempts(n)?,
        last_error,
        run_id,
    })
}

/// `sql::OUTCOME`, `sql::OUTCOME_OF_KEY` and `sql::RUN_JOBS`.
type OutcomeColumns = (
    EventId,
    String,
    String,
    EventStatus,
    i32,
    Option<String>,
    Option<String>,
);

fn outcome(c: OutcomeColumns) -> Result<StoredOutcome, StoreError> {
    let (id, kind, group_key, status, n, last_error, result) = c;
    Ok(StoredOutcome {
        id,
        kind,
        group_key,
        status,
        attempts: attempts(n)?,
        last_error,
        result,
    })
}

impl PgEvents {
    /// The outcomes a shared query returns (`sql::OUTCOME*`, `sql::RUN_JOBS`).
    async fn outcomes<T>(&self, sql: &'static str, key: T) -> Result<Vec<StoredOutcome>, StoreError>
    where
        T: for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send,
    {
        let rows: Vec<OutcomeColumns> = sqlx::query_as(sql)
            .bind(key)
            .fetch_all(self.db.pool())
            .await?;
        rows.into_iter().map(outcome).collect()
    }
}

#[async_trait]
impl EventDb for PgEvents {
    async fn ping(&self) -> Result<(), StoreError> {
        self.db.ping().await
    }

    /// No transaction around it, because the insert is one statement, atomic on its own (a
    /// second one only runs in the prune race `insert_all` describes, for events whose keys
    /// the first found taken; if it fails, the caller's retry finds the first ones as
    /// duplicates). Saves the BEGIN and COMMIT round trips on every webhook. The pool timing
    /// out (every connection busy for its acquire timeout) is `Busy`, so the intake answers
    /// 503 and the sender retries, as when the SQLite writer's queue is full.
    async fn enqueue_together(
        &self,
        events: Vec<NewEvent>,
        now: i64,
    ) -> Result<Vec<Enqueued>, EnqueueError> {
        let mut conn = self.db.pool().acquire().await.map_err(|e| match e {
            sqlx::Error::PoolTimedOut => EnqueueError::Busy,
            e => EnqueueError::Store(e.into()),
        })?;
        Ok(insert::insert_all(&mut conn, &events, now).await?)
    }

    async fn enqueue_all(
        &self,
        events: Vec<NewEvent>,
        now: i64,
    ) -> Result<Vec<Enqueued>, StoreError> {
        let mut conn = self.db.pool().acquire().await?;
        insert::insert_all(&mut conn, &events, now).await
    }

    fn announce(&self, pools: &[Pool], finished: bool) {
        self.notifier.pools(pools.iter().copied());
        if finished {
            self.notifier.finished();
        }
    }

    async fn claim(&self, req: ClaimReq) -> Result<Found, StoreError> {
        queue::claim(&self.db, &req).await
    }

    async fn record(&self, out: Outcomes) -> Result<Recorded, StoreError> {
        queue::record(&self.db, &out).await
    }

    async fn extend_lease(
        &self,
        ids: Vec<EventId>,
        worker: String,
        until: i64,
    ) -> Result<usize, StoreError> {
        queue::extend_lease(&self.db, &ids, &worker, until).await
    }

    async fn reclaim_expired(&self, now: i64) -> Result<usize, StoreError> {
        queue::reclaim_expired(&self.db, now).await
    }

    /// Other instances may be running their jobs right now: only expired leases come back.
    async fn recover_orphans(&self, now: i64) -> Result<usize, StoreError> {
        queue::reclaim_expired(&self.db, now).await
    }

    async fn requeue_failed(&self, now: i64) -> Result<usize, StoreError> {
        let done = sqlx::query(sql::REQUEUE_FAILED)
            .bind(now)
            .execute(self.db.pool())
            .await?;
        Ok(done.rows_affected() as usize)
    }

    async fn prune_finished(
        &self,
        done_before: i64,
        given_up_before: i64,
    ) -> Result<usize, StoreError> {
        let mut tx = self.db.pool().begin().await?;
        let mut n = 0;
        for (sql, cutoff) in [
            (sql::PRUNE_DONE, done_before),
            (sql::PRUNE_GIVEN_UP, given_up_before),
            (sql::PRUNE_RUNS, given_up_before),
        ] {
            n += sqlx::query(sql)
                .bind(cutoff)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(n as usize)
    }

    async fn status_counts(&self, now: i64) -> Result<StatusCounts, StoreError> {
        let by_status = sqlx::query_as(sql::STATUS_COUNTS)
            .fetch_all(self.db.pool())
            .await?;
        let oldest_due = sqlx::query_scalar(sql::OLDEST_DUE)
            .bind(now)
            .fetch_one(self.db.pool())
            .await?;
        Ok(StatusCounts {
            by_status,
            oldest_due,
        })
    }

    async fn activity(&self, now: i64) -> Result<(i64, Option<i64>), StoreError> {
        Ok(sqlx::query_as(sql::ACTIVITY)
            .bind(now)
            .fetch_one(self.db.pool())
            .await?)
    }

    async fn recent_failures(&self, limit: i64) -> Result<Vec<EventRow>, StoreError> {
        let rows: Vec<EventRowColumns> = sqlx::query_as(sql::RECENT_FAILURES)
            .bind(limit)
            .fetch_all(self.db.pool())
            .await?;
        rows.into_iter().map(event_row).collect()
    }

    async fn rows(&self) -> Result<Vec<EventRow>, StoreError> {
        let rows: Vec<EventRowColumns> =
            sqlx::query_as(sql::ROWS).fetch_all(self.db.pool()).await?;
        rows.into_iter().map(event_row).collect()
    }

    // Ids and dedupe keys are unique: one row at most.
    async fn outcome(&self, id: EventId) -> Result<Option<StoredOutcome>, StoreError> {
        Ok(self.outcomes(sql::OUTCOME, id).await?.pop())
    }

    async fn outcome_of_key(&self, key: String) -> Result<Option<StoredOutcome>, StoreError> {
        Ok(self.outcomes(sql::OUTCOME_OF_KEY, key).await?.pop())
    }

    async fn open_groups(&self, kinds: Vec<&'static str>) -> Result<Vec<String>, StoreError> {
        let text = sql::open_groups(kinds.len());
        let mut q = sqlx::query_scalar(sqlx::AssertSqlSafe(text));
        for k in kinds {
            q = q.bind(k);
        }
        Ok(q.fetch_all(self.db.pool()).await?)
    }

    async fn running_of_kind(&self, kind: &'static str) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(sql::RUNNING_OF_KIND)
            .bind(kind)
            .fetch_one(self.db.pool())
            .await?)
    }

    async fn running_in_groups(
        &self,
        exact: Vec<String>,
        prefixes: Vec<String>,
    ) -> Result<i64, StoreError> {
        let (text, values) = sql::running_in_groups(&exact, &prefixes);
        let mut q = sqlx::query_scalar(sqlx::AssertSqlSafe(text));
        for v in values {
            q = q.bind(v);
        }
        Ok(q.fetch_one(self.db.pool()).await?)
    }

    async fn purge_groups(
        &self,
        exact: Vec<String>,
        prefixes: Vec<String>,
    ) -> Result<usize, StoreError> {
        let (text, values) = sql::purge_groups(&exact, &prefixes);
        let mut q = sqlx::query(sqlx::AssertSqlSafe(text));
        for v in values {
            q = q.bind(v);
        }
        Ok(q.execute(self.db.pool()).await?.rows_affected() as usize)
    }

    async fn unfinished_payloads(
        &self,
        kind: &'static str,
    ) -> Result<Vec<(EventId, Vec<u8>)>, StoreError> {
        Ok(sqlx::query_as(sql::UNFINISHED_PAYLOADS)
            .bind(kind)
            .fetch_all(self.db.pool())
            .await?)
    }

    async fn set_payload(&self, id: EventId, payload: Vec<u8>) -> Result<bool, StoreError> {
        let done = sqlx::query(sql::SET_PAYLOAD)
            .bind(payload)
            .bind(id)
            .execute(self.db.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_event(&self, id: EventId) -> Result<bool, StoreError> {
        let done = sqlx::query(sql::DELETE_EVENT)
            .bind(id)
            .execute(self.db.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn create_run(
        &self,
        kind: RunKind,
        trigger: RunTrigger,
        now: i64,
    ) -> Result<RunId, StoreError> {
        Ok(sqlx::query_scalar(sql::CREATE_RUN)
            .bind(kind)
            .bind(trigger)
            .bind(now)
            .fetch_one(self.db.pool())
            .await?)
    }

    async fn run_jobs(&self, run: RunId) -> Result<Vec<StoredOutcome>, StoreError> {
        self.outcomes(sql::RUN_JOBS, run).await
    }

    async fn run_open_jobs(&self, run: RunId) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(sql::RUN_OPEN_JOBS)
            .bind(run)
            .fetch_one(self.db.pool())
            .await?)
    }

    async fn finish_run(&self, run: RunId, summary: String, now: i64) -> Result<(), StoreError> {
        sqlx::query(sql::FINISH_RUN)
            .bind(now)
            .bind(summary)
            .bind(run)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    async fn runs(&self, unfinished_only: bool, limit: i64) -> Result<Vec<StoredRun>, StoreError> {
        let rows: Vec<(RunId, RunKind, RunTrigger, i64, Option<i64>, Option<String>)> =
            sqlx::query_as(sql::RUNS)
                .bind(unfinished_only)
                .bind(limit)
                .fetch_all(self.db.pool())
                .await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, kind, trigger, started_at, finished_at, summary)| StoredRun {
                    id,
                    kind,
                    trigger,
                    started_at,
                    finished_at,
                    summary,
                },
            )
            .collect())
    }

    async fn run_group_progress(
        &self,
        run: RunId,
        lo: String,
        hi: String,
    ) -> Result<(i64, i64), StoreError> {
        Ok(sqlx::query_as(sql::RUN_GROUP_PROGRESS)
            .bind(run)
            .bind(lo)
            .bind(hi)
            .fetch_one(self.db.pool())
            .await?)
    }

    async fn track(
        &self,
        target: String,
        event: EventId,
        run: Option<RunId>,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(sql::TRACK)
            .bind(target)
            .bind(event)
            .bind(run)
            .bind(now)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    async fn report_progress(
        &self,
        event: EventId,
        done: i64,
        total: Option<i64>,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(sql::REPORT_PROGRESS)
            .bind(event)
            .bind(done)
            .bind(total)
            .bind(now)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    async fn tracked(&self, target: String) -> Result<Option<Tracked>, StoreError> {
        let row: Option<(String, EventId, Option<RunId>, i64, Option<i64>, i64, i64)> =
            sqlx::query_as(sql::TRACKED)
                .bind(target)
                .fetch_optional(self.db.pool())
                .await?;
        Ok(row.map(
            |(target, event_id, run_id, done, total, started_at, updated_at)| Tracked {
                target,
                event_id,
                run_id,
                done,
                total,
                started_at,
                updated_at,
            },
        ))
    }

    async fn untrack(&self, target: String) -> Result<(), StoreError> {
        sqlx::query(sql::UNTRACK)
            .bind(target)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
