//! The durable queue: webhook deliveries and every background job, as rows of `events.db`
//! (SQLite) or of the shared PostgreSQL database's `events` table.
//!
//! On SQLite one writer thread owns the only connection that writes (see `writer`); reads
//! (stats, outcomes, listings) use a second connection, which WAL lets run alongside. On
//! PostgreSQL (see `postgres`) several instances share the table: claims lock rows with
//! `FOR UPDATE SKIP LOCKED` and serialise per group with an advisory lock, and wake-ups cross
//! instances by `LISTEN/NOTIFY`.
//!
//! Semantics the workers rely on:
//! - a claim takes the oldest *ready* event of a pool whose group has nothing running, and
//!   with it other events of the same group and kind that are ready or have never been tried
//!   (a debounced burst for one object is one run); events waiting out a backoff stay put;
//! - every event keeps its own attempt count; a failed batch is rescheduled event by event;
//! - an outcome is recorded only by the worker holding the lease;
//! - follow-up events commit in the same transaction that marks their parent done.

mod groups;
mod postgres;
mod progress;
mod runs;
mod types;
mod writer;

use std::path::Path;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
use tokio::sync::{oneshot, Notify};

pub use progress::Tracked;
use types::parse_result;
pub use types::{
    Claim, ClaimSpec, Enqueued, Event, EventId, EventRow, EventStatus, NewEvent, Outcome, Pool,
    QueueStats, Record, RunId, RunKind, RunRecord, RunTrigger,
};
use writer::{insert_event, writer_loop, Cmd, Durability, InsertReq, WriteFn};

use super::postgres::PgDb;
use super::{now_millis, open_connection, sqlite_or, Backend, Db, DbKind, StoreError};

/// Inserts waiting for the writer before new ones are turned away (503, the sender retries).
const WRITER_QUEUE_CAP: usize = 50_000;
/// How often a waiter re-reads an outcome when no in-process completion wakes it (the job may
/// run in another process).
const WAIT_RECHECK: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("the event queue is full; retry later")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Wake-ups: one per pool (new work for its workers), one for anyone waiting on an outcome.
pub struct Wakers {
    pools: [Notify; 3],
    finished: Notify,
    /// PostgreSQL: announces this instance's new and finished work to the other instances.
    remote: std::sync::OnceLock<postgres::Notifier>,
}

impl Wakers {
    pub(super) fn new() -> Wakers {
        Wakers {
            pools: [Notify::new(), Notify::new(), Notify::new()],
            finished: Notify::new(),
            remote: std::sync::OnceLock::new(),
        }
    }

    pub fn pool(&self, pool: Pool) -> &Notify {
        &self.pools[match pool {
            Pool::Messages => 0,
            Pool::Sync => 1,
            Pool::Poll => 2,
        }]
    }

    fn wake(&self, pool: Pool) {
        self.pool(pool).notify_one();
    }
}

#[derive(Clone)]
pub struct EventStore {
    backend: Backend,
    /// The SQLite writer thread (`None` on PostgreSQL, where the server serialises writes).
    writer: Option<std_mpsc::SyncSender<Cmd>>,
    wakers: Arc<Wakers>,
    /// PostgreSQL: the `LISTEN` task relaying other instances' wake-ups, stopped with the
    /// last clone of the store.
    _listener: Option<Arc<postgres::Listener>>,
}

pub(super) fn outcome_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Outcome> {
    Ok(Outcome {
        id: r.get(0)?,
        kind: r.get(1)?,
        group_key: r.get(2)?,
        status: r.get(3)?,
        attempts: r.get(4)?,
        last_error: r.get(5)?,
        result: parse_result(r.get(6)?),
    })
}

pub(super) const OUTCOME_COLUMNS: &str =
    "id, kind, group_key, status, attempts, last_error, result";

impl EventStore {
    pub fn open(path: &Path) -> Result<EventStore, StoreError> {
        let db = Db::open(path, DbKind::Events)?;
        let writer_conn = open_connection(path, DbKind::Events)?;
        let (tx, rx) = std_mpsc::sync_channel(WRITER_QUEUE_CAP);
        let wakers = Arc::new(Wakers::new());
        let w = wakers.clone();
        std::thread::Builder::new()
            .name("events-writer".into())
            .spawn(move || writer_loop(writer_conn, rx, w))
            .map_err(|e| StoreError::Open {
                path: path.to_path_buf(),
                reason: format!("could not start writer thread: {e}"),
            })?;
        Ok(EventStore {
            backend: Backend::Sqlite(db),
            writer: Some(tx),
            wakers,
            _listener: None,
        })
    }

    /// The queue in the shared PostgreSQL database. Starts listening for other instances'
    /// wake-ups first (an error if that fails), so work queued elsewhere wakes this instance's
    /// idle workers and `wait_for` callers from the start.
    pub async fn on_postgres(pg: PgDb) -> Result<EventStore, StoreError> {
        let wakers = Arc::new(Wakers::new());
        // Names this store's announcements, so its own listener skips them (its workers were
        // woken in-process already).
        let origin = crate::crypto::random_token(6);
        let _ = wakers
            .remote
            .set(postgres::Notifier::start(&pg, origin.clone()));
        let listener = postgres::Listener::start(&pg, wakers.clone(), origin).await?;
        Ok(EventStore {
            backend: Backend::Postgres(pg),
            writer: None,
            wakers,
            _listener: Some(Arc::new(listener)),
        })
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Cheap liveness probe for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.backend.ping().await
    }

    /// The SQLite database; only reached after `sqlite_or!` returned it, so the PostgreSQL
    /// arm is unreachable in practice and reported as a closed store rather than a panic.
    fn sqlite(&self) -> Result<&Db, StoreError> {
        self.backend.sqlite().ok_or(StoreError::Closed)
    }

    pub fn wakers(&self) -> Arc<Wakers> {
        self.wakers.clone()
    }

    /// Durably records an event; returns once the row is committed (or known as a duplicate).
    pub async fn enqueue(&self, event: NewEvent) -> Result<Enqueued, EnqueueError> {
        let out = self.enqueue_together(vec![event]).await?;
        out.into_iter()
            .next()
            .ok_or(EnqueueError::Store(StoreError::Closed))
    }

    /// Durably records events all together (in the same commit), with group commit: the
    /// intake path of a delivery that fans out into several jobs. `Busy` (the intake answers
    /// 503) when the SQLite writer's queue is full, or on PostgreSQL when no connection frees
    /// up within the pool's acquire timeout; there each call is one transaction of its own.
    pub async fn enqueue_together(
        &self,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Enqueued>, EnqueueError> {
        sqlite_or!(&self.backend, pg => postgres::enqueue_together(pg, &self.wakers, events));
        let (reply, rx) = oneshot::channel();
        self.writer
            .as_ref()
            .ok_or(StoreError::Closed)?
            .try_send(Cmd::Insert(InsertReq { events, reply }))
            .map_err(|e| match e {
                std_mpsc::TrySendError::Full(_) => EnqueueError::Busy,
                std_mpsc::TrySendError::Disconnected(_) => EnqueueError::Store(StoreError::Closed),
            })?;
        Ok(rx.await.map_err(|_| StoreError::Closed)??)
    }

    /// Records many events in one transaction (a poll run's fan-out).
    pub async fn enqueue_all(&self, events: Vec<NewEvent>) -> Result<Vec<Enqueued>, StoreError> {
        sqlite_or!(&self.backend, pg => postgres::enqueue_all(pg, &self.wakers, events));
        let wakers = self.wakers.clone();
        self.write_durable(move |c| {
            let tx = c.transaction()?;
            let now = now_millis();
            let out = events
                .iter()
                .map(|e| insert_event(&tx, e, now))
                .collect::<Result<Vec<_>, _>>()?;
            tx.commit()?;
            for (e, o) in events.iter().zip(&out) {
                if matches!(o, Enqueued::Inserted(_)) {
                    wakers.wake(e.pool);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Runs bookkeeping `f` (claims, outcomes, leases) on the writer thread and returns its
    /// result; see `Durability::Relaxed`.
    pub(super) async fn write<F, R>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        self.write_with(Durability::Relaxed, f).await
    }

    /// Runs `f` on the writer thread with its commit fsynced (new work being recorded).
    pub(super) async fn write_durable<F, R>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        self.write_with(Durability::Durable, f).await
    }

    async fn write_with<F, R>(&self, durability: Durability, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job: WriteFn = Box::new(move |c| {
            let _ = reply.send(f(c));
        });
        // A full channel means thousands of inserts are waiting; block briefly rather than
        // fail a completion (the inserts drain fast).
        let tx = self.writer.clone().ok_or(StoreError::Closed)?;
        let sent =
            tokio::task::spawn_blocking(move || tx.send(Cmd::Write(job, durability)).is_ok())
                .await
                .map_err(|_| StoreError::Closed)?;
        if !sent {
            return Err(StoreError::Closed);
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// At start, before the workers: on SQLite, puts every event left `running` by a process
    /// that died back to `pending` (only the process holding the queue lock calls this, so
    /// no one else can be running them).
    ///
    /// On PostgreSQL other instances may be running their jobs right now, so this only
    /// returns events whose lease has EXPIRED (the same as `reclaim_expired`): a dead
    /// instance's work comes back once its heartbeat has stopped for a lease period.
    pub async fn recover_orphans(&self) -> Result<usize, StoreError> {
        sqlite_or!(&self.backend, pg => postgres::reclaim_expired(pg));
        self.write(|c| {
            Ok(c.execute(
                "UPDATE events SET status = 'pending', locked_by = NULL, locked_until = NULL
                 WHERE status = 'running'",
                [],
            )?)
        })
        .await
    }

    /// Claims a batch for a worker of `spec.pool` (see the module docs), or `None`.
    pub async fn claim(
        &self,
        worker: &str,
        spec: &ClaimSpec,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        sqlite_or!(&self.backend, pg => postgres::claim(pg, worker, spec, lease));
        let worker = worker.to_string();
        let lease_ms = lease.as_millis() as i64;
        let spec = spec.clone();
        self.write(move |c| {
            // Deferred: a look that finds nothing commits without writing (no fsync).
            let tx = c.transaction()?;
            let now = now_millis();
            let head: Option<(EventId, String, String)> = tx
                .prepare_cached(
                    "SELECT e.id, e.group_key, e.kind FROM events e
                     WHERE e.status = 'pending' AND e.pool = ?1 AND e.run_at <= ?2
                       AND NOT EXISTS (SELECT 1 FROM events r
                                       WHERE r.status = 'running' AND r.group_key = e.group_key)
                     ORDER BY e.run_at, e.id LIMIT 1",
                )?
                .query_row(params![spec.pool, now], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()?;
            let Some((head, group, kind)) = head else {
                // When the pool's next event becomes ready (a debounce or backoff running
                // out), so an idle worker can sleep exactly until then.
                let next: Option<i64> = tx
                    .prepare_cached(
                        "SELECT MIN(run_at) FROM events
                         WHERE status = 'pending' AND pool = ?1 AND run_at > ?2",
                    )?
                    .query_row(params![spec.pool, now], |r| r.get(0))?;
                return Ok(Claim::Idle {
                    next_run_at: next.filter(|t| *t > now),
                });
            };
            let max = spec
                .max_batch
                .get(kind.as_str())
                .copied()
                .unwrap_or(1)
                .max(1);
            let mut events = tx
                .prepare_cached(
                    "UPDATE events SET status = 'running', attempts = attempts + 1,
                            locked_by = ?1, locked_until = ?2
                     WHERE id = ?3
                        OR id IN (SELECT id FROM events
                                  WHERE status = 'pending' AND group_key = ?4 AND kind = ?5
                                    AND id != ?3 AND (run_at <= ?6 OR attempts = 0)
                                  ORDER BY id LIMIT ?7)
                     RETURNING id, kind, dedupe_key, group_key, payload, attempts, received_at,
                               run_id",
                )?
                .query_map(
                    params![
                        worker,
                        now + lease_ms,
                        head,
                        group,
                        kind,
                        now,
                        (max - 1) as i64
                    ],
                    |r| {
                        Ok(Event {
                            id: r.get(0)?,
                            kind: r.get(1)?,
                            dedupe_key: r.get(2)?,
                            group_key: r.get(3)?,
                            payload: r.get(4)?,
                            attempts: r.get(5)?,
                            received_at: r.get(6)?,
                            run_id: r.get(7)?,
                        })
                    },
                )?
                .collect::<Result<Vec<_>, _>>()?;
            tx.commit()?;
            events.sort_by_key(|e| e.id);
            Ok(Claim::Batch(events))
        })
        .await
    }

    /// Records how a batch ended, in one transaction: done events (with their follow-ups and
    /// result), retries, and events given up. Only rows this worker still holds are touched.
    pub async fn record(&self, worker: &str, rec: Record) -> Result<(), StoreError> {
        sqlite_or!(&self.backend, pg => postgres::record(pg, &self.wakers, worker, rec));
        let worker = worker.to_string();
        let wakers = self.wakers.clone();
        self.write(move |c| {
            let tx = c.transaction()?;
            let now = now_millis();
            let mut touched: Vec<EventId> = Vec::new();
            for id in &rec.done {
                let n = tx
                    .prepare_cached(
                        "UPDATE events SET status = 'done', finished_at = ?1, locked_by = NULL,
                                locked_until = NULL, last_error = NULL, payload = x'', result = ?2
                         WHERE id = ?3 AND status = 'running' AND locked_by = ?4",
                    )?
                    .execute(params![now, rec.result, id, worker])?;
                if n == 1 {
                    touched.push(*id);
                }
            }
            // Follow-ups only when the parent really completed under this lease: after a lease
            // was taken over, the new holder produces them.
            let mut follow_pools = Vec::new();
            if !touched.is_empty() {
                for ev in &rec.follow_ups {
                    if matches!(insert_event(&tx, ev, now)?, Enqueued::Inserted(_)) {
                        follow_pools.push(ev.pool);
                    }
                }
            }
            for (id, at, reason) in &rec.retry {
                let n = tx
                    .prepare_cached(
                        "UPDATE events SET status = 'pending', run_at = ?1, last_error = ?2,
                                locked_by = NULL, locked_until = NULL
                         WHERE id = ?3 AND status = 'running' AND locked_by = ?4",
                    )?
                    .execute(params![at, reason, id, worker])?;
                if n == 1 {
                    touched.push(*id);
                }
            }
            for (id, status, reason) in &rec.given_up {
                let forget = rec.forget_failed_payloads && *status == EventStatus::Failed;
                let n = tx
                    .prepare_cached(
                        "UPDATE events SET status = ?1, finished_at = ?2, last_error = ?3,
                                locked_by = NULL, locked_until = NULL,
                                payload = CASE WHEN ?6 THEN x'' ELSE payload END
                         WHERE id = ?4 AND status = 'running' AND locked_by = ?5",
                    )?
                    .execute(params![status, now, reason, id, worker, forget])?;
                if n == 1 {
                    touched.push(*id);
                }
            }
            // The group is free again: wake the pools that have work waiting in it (another
            // pool's worker would otherwise only notice on its idle poll).
            let mut pools: Vec<Pool> = Vec::new();
            if let Some(first) = touched.first() {
                let mut st = tx.prepare_cached(
                    "SELECT DISTINCT p.pool FROM events p
                     WHERE p.status = 'pending'
                       AND p.group_key = (SELECT group_key FROM events WHERE id = ?1)",
                )?;
                let rows = st.query_map([first], |r| r.get::<_, Pool>(0))?;
                for p in rows {
                    pools.push(p?);
                }
            }
            tx.commit()?;
            for p in follow_pools.into_iter().chain(pools) {
                wakers.wake(p);
            }
            wakers.finished.notify_waiters();
            Ok(())
        })
        .await
    }

    /// Gives every failed and dead-lettered event fresh attempts and a fresh retry horizon
    /// (after an outage is over).
    pub async fn requeue_failed(&self) -> Result<usize, StoreError> {
        sqlite_or!(&self.backend, pg => postgres::requeue_failed(pg, &self.wakers));
        let wakers = self.wakers.clone();
        self.write_durable(move |c| {
            let now = now_millis();
            let n = c.execute(
                "UPDATE events SET status = 'pending', attempts = 0, run_at = ?1, received_at = ?1,
                        finished_at = NULL, locked_by = NULL, locked_until = NULL
                 WHERE status IN ('failed', 'dead')",
                [now],
            )?;
            for p in Pool::ALL {
                wakers.wake(*p);
            }
            Ok(n)
        })
        .await
    }

    /// Returns events whose lease ran out (a handler stuck past its heartbeat, or on
    /// PostgreSQL an instance that died) to `pending`.
    pub async fn reclaim_expired(&self) -> Result<usize, StoreError> {
        sqlite_or!(&self.backend, pg => postgres::reclaim_expired(pg));
        self.write(|c| {
            Ok(c.execute(
                "UPDATE events SET status = 'pending', locked_by = NULL, locked_until = NULL
                 WHERE status = 'running' AND locked_until < ?1",
                [now_millis()],
            )?)
        })
        .await
    }

    /// Keeps a long-running claim alive.
    pub async fn extend_lease(
        &self,
        ids: Vec<EventId>,
        worker: &str,
        lease: Duration,
    ) -> Result<(), StoreError> {
        sqlite_or!(&self.backend, pg => postgres::extend_lease(pg, ids, worker, lease));
        let worker = worker.to_string();
        self.write(move |c| {
            let until = now_millis() + lease.as_millis() as i64;
            let tx = c.transaction()?;
            for id in ids {
                tx.prepare_cached(
                    "UPDATE events SET locked_until = ?1
                     WHERE id = ?2 AND locked_by = ?3 AND status = 'running'",
                )?
                .execute(params![until, id, worker])?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn stats(&self) -> Result<QueueStats, StoreError> {
        sqlite_or!(&self.backend, pg => postgres::stats(pg))
            .call(|c| {
                let mut s = QueueStats::default();
                let mut st =
                    c.prepare_cached("SELECT status, COUNT(*) FROM events GROUP BY status")?;
                let rows = st.query_map([], |r| {
                    Ok((r.get::<_, EventStatus>(0)?, r.get::<_, i64>(1)?))
                })?;
                for row in rows {
                    let (status, n) = row?;
                    match status {
                        EventStatus::Pending => s.pending = n,
                        EventStatus::Running => s.running = n,
                        EventStatus::Done => s.done = n,
                        EventStatus::Failed => s.failed = n,
                        EventStatus::Dead => s.dead_lettered = n,
                    }
                }
                // Work that is due: jobs scheduled later in a poll window, or waiting out a
                // backoff, are not late.
                let oldest: Option<i64> = c.query_row(
                    "SELECT MIN(received_at) FROM events
                     WHERE status = 'running' OR (status = 'pending' AND run_at <= ?1)",
                    [now_millis()],
                    |r| r.get(0),
                )?;
                s.oldest_pending_age_ms = oldest.map(|o| (now_millis() - o).max(0)).unwrap_or(0);
                Ok(s)
            })
            .await
    }

    /// The newest dead-lettered and failed events with their reasons (for operators).
    pub async fn recent_failures(&self, limit: usize) -> Result<Vec<EventRow>, StoreError> {
        sqlite_or!(&self.backend, pg => postgres::recent_failures(pg, limit));
        self.rows_where(
            "status IN ('failed', 'dead') ORDER BY finished_at DESC, id DESC LIMIT ?1",
            vec![limit as i64],
        )
        .await
    }

    /// Deletes finished events: done ones older than `done_age` (their dedupe keys go with
    /// them, so it must exceed the platforms' redelivery window: Shopify retries for 48 hours),
    /// failed and dead ones older than `given_up_age`.
    pub async fn prune_finished(
        &self,
        done_age: Duration,
        given_up_age: Duration,
    ) -> Result<usize, StoreError> {
        let now = now_millis();
        let done_cutoff = now - done_age.as_millis() as i64;
        let given_up_cutoff = now - given_up_age.as_millis() as i64;
        sqlite_or!(&self.backend, pg => postgres::prune_finished(pg, done_cutoff, given_up_cutoff));
        self.write(move |c| {
            let a = c.execute(
                "DELETE FROM events WHERE status = 'done' AND finished_at < ?1",
                [done_cutoff],
            )?;
            let b = c.execute(
                "DELETE FROM events WHERE status IN ('failed', 'dead') AND finished_at < ?1",
                [given_up_cutoff],
            )?;
            let runs = c.execute(
                "DELETE FROM runs WHERE finished_at IS NOT NULL AND finished_at < ?1",
                [given_up_cutoff],
            )?;
            Ok(a + b + runs)
        })
        .await
    }

    /// How the event stands now (`None`: no such event, e.g. pruned).
    pub async fn outcome(&self, id: EventId) -> Result<Option<Outcome>, StoreError> {
        sqlite_or!(&self.backend, pg => postgres::outcome(pg, id))
            .call(move |c| {
                Ok(c.prepare_cached(&format!(
                    "SELECT {OUTCOME_COLUMNS} FROM events WHERE id = ?1"
                ))?
                .query_row([id], outcome_from_row)
                .optional()?)
            })
            .await
    }

    /// How the event with this dedupe key stands (`None`: not queued, or pruned).
    pub async fn outcome_of_key(&self, dedupe_key: &str) -> Result<Option<Outcome>, StoreError> {
        sqlite_or!(&self.backend, pg => postgres::outcome_of_key(pg, dedupe_key));
        let key = dedupe_key.to_string();
        self.sqlite()?
            .call(move |c| {
                Ok(c.prepare_cached(&format!(
                    "SELECT {OUTCOME_COLUMNS} FROM events WHERE dedupe_key = ?1"
                ))?
                .query_row([key], outcome_from_row)
                .optional()?)
            })
            .await
    }

    /// Waits until the event is finished or `timeout` passes; returns how it stands then.
    pub async fn wait_for(
        &self,
        id: EventId,
        timeout: Duration,
    ) -> Result<Option<Outcome>, StoreError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let finished = self.wakers.finished.notified();
            tokio::pin!(finished);
            finished.as_mut().enable();
            let now = self.outcome(id).await?;
            let done = now.as_ref().is_none_or(|o| o.status.is_finished());
            if done || tokio::time::Instant::now() >= deadline {
                return Ok(now);
            }
            let step = (deadline - tokio::time::Instant::now()).min(WAIT_RECHECK);
            tokio::select! {
                _ = &mut finished => {}
                _ = tokio::time::sleep(step) => {}
            }
        }
    }

    // --- diagnostics ----------------------------------------------------------------------

    /// Every event row, for tests and diagnostics.
    pub async fn rows(&self) -> Result<Vec<EventRow>, StoreError> {
        sqlite_or!(&self.backend, pg => postgres::rows(pg));
        self.rows_where("1 ORDER BY id", Vec::new()).await
    }

    async fn rows_where(
        &self,
        filter: &'static str,
        params: Vec<i64>,
    ) -> Result<Vec<EventRow>, StoreError> {
        self.sqlite()?
            .call(move |c| {
                let mut st = c.prepare_cached(&format!(
                    "SELECT id, kind, dedupe_key, group_key, status, attempts, last_error, run_id
                     FROM events WHERE {filter}"
                ))?;
                let v = st
                    .query_map(params_from_iter(params), |r| {
                        Ok(EventRow {
                            id: r.get(0)?,
                            kind: r.get(1)?,
                            dedupe_key: r.get(2)?,
                            group_key: r.get(3)?,
                            status: r.get(4)?,
                            attempts: r.get(5)?,
                            last_error: r.get(6)?,
                            run_id: r.get(7)?,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(v)
            })
            .await
    }
}

#[cfg(test)]
mod tests;
