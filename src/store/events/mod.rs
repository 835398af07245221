//! The durable queue: webhook deliveries and every background job, as rows of `events.db`
//! (SQLite) or of the shared PostgreSQL database's `events` table.
//!
//! `EventStore` holds what is the same on both backends (times, batch sizes, outcome
//! decisions, parsing, wake-ups, `wait_for`); `EventDb` is the seam, implemented once per
//! backend over the shared SQL (`sql`). On SQLite (`sqlite`) one writer thread owns the only
//! connection that writes; reads (stats, outcomes, listings) use a second connection, which
//! WAL lets run alongside. On PostgreSQL (`postgres`) several instances share the table:
//! claims lock rows with `FOR UPDATE SKIP LOCKED` and serialise per group with an advisory
//! lock, and wake-ups cross instances by `LISTEN/NOTIFY`.
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
mod rows;
mod runs;
mod sql;
mod sqlite;
mod types;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

pub use progress::Tracked;
use rows::{ClaimReq, Found, GivenUp, Outcomes, Recorded, StatusCounts, StoredOutcome, StoredRun};
pub use types::{
    Claim, ClaimSpec, Enqueued, Event, EventId, EventRow, EventStatus, NewEvent, Outcome, Pool,
    QueueActivity, QueueStats, Record, RunId, RunKind, RunRecord, RunTrigger,
};

use super::postgres::PgDb;
use super::{now_millis, Backend, StoreError};

/// How often a waiter re-reads an outcome when no in-process completion wakes it (the job may
/// run in another process).
const WAIT_RECHECK: Duration = Duration::from_millis(200);
/// After a claim lost a group to a concurrent claim (PostgreSQL), look again this soon: that
/// claim may end up not taking the group (its head was taken meanwhile), and no wake-up
/// would say so.
const CONTENDED_RETRY_MS: i64 = 50;

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
}

impl Wakers {
    fn new() -> Wakers {
        Wakers {
            pools: [Notify::new(), Notify::new(), Notify::new()],
            finished: Notify::new(),
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

/// What each backend does for the queue. Times arrive from the store (`now`, lease ends);
/// JSON arrives and leaves as stored text.
#[async_trait]
trait EventDb: Send + Sync {
    async fn ping(&self) -> Result<(), StoreError>;

    // --- intake: the answers are in the events' order -------------------------------------

    /// Inserts events together (one delivery fanned out), unless their dedupe keys exist;
    /// an existing failed or dead event is queued again instead. `Busy` when the backend
    /// cannot take more right now (the intake answers 503 and the sender retries).
    async fn enqueue_together(
        &self,
        events: Vec<NewEvent>,
        now: i64,
    ) -> Result<Vec<Enqueued>, EnqueueError>;
    /// The same for many events in one transaction (a poll run's fan-out).
    async fn enqueue_all(
        &self,
        events: Vec<NewEvent>,
        now: i64,
    ) -> Result<Vec<Enqueued>, StoreError>;
    /// Tells the other instances sharing the database about new work in `pools` and, with
    /// `finished`, finished work (this instance's were woken already). Never fails: their
    /// idle polls find the work anyway.
    fn announce(&self, pools: &[Pool], finished: bool);

    // --- the queue ------------------------------------------------------------------------

    async fn claim(&self, req: ClaimReq) -> Result<Found, StoreError>;
    /// Records how a batch ended, in one transaction: done events (with their follow-ups and
    /// result), retries, and events given up.
    async fn record(&self, out: Outcomes) -> Result<Recorded, StoreError>;
    /// Renews the lease of those of `ids` still running under `worker`'s.
    async fn extend_lease(
        &self,
        ids: Vec<EventId>,
        worker: String,
        until: i64,
    ) -> Result<usize, StoreError>;
    /// Running events whose lease ended before `now` back to `pending`.
    async fn reclaim_expired(&self, now: i64) -> Result<usize, StoreError>;
    /// At start, before the workers: the running events no live process can be running.
    async fn recover_orphans(&self, now: i64) -> Result<usize, StoreError>;
    async fn requeue_failed(&self, now: i64) -> Result<usize, StoreError>;
    async fn prune_finished(
        &self,
        done_before: i64,
        given_up_before: i64,
    ) -> Result<usize, StoreError>;

    // --- reads ----------------------------------------------------------------------------

    async fn status_counts(&self, now: i64) -> Result<StatusCounts, StoreError>;
    /// `sql::ACTIVITY`: (leases live at `now`, the newest `received_at`).
    async fn activity(&self, now: i64) -> Result<(i64, Option<i64>), StoreError>;
    async fn recent_failures(&self, limit: i64) -> Result<Vec<EventRow>, StoreError>;
    async fn rows(&self) -> Result<Vec<EventRow>, StoreError>;
    async fn outcome(&self, id: EventId) -> Result<Option<StoredOutcome>, StoreError>;
    async fn outcome_of_key(&self, key: String) -> Result<Option<StoredOutcome>, StoreError>;

    // --- groups and payloads --------------------------------------------------------------

    /// Groups with a pending or running event of one of `kinds` (at least one).
    async fn open_groups(&self, kinds: Vec<&'static str>) -> Result<Vec<String>, StoreError>;
    async fn running_of_kind(&self, kind: &'static str) -> Result<i64, StoreError>;
    /// Running events whose group is one of `exact` or starts with one of `prefixes` (only
    /// prefixes `groups::usable_prefix` accepts).
    async fn running_in_groups(
        &self,
        exact: Vec<String>,
        prefixes: Vec<String>,
    ) -> Result<i64, StoreError>;
    /// Deletes the events of those groups that are not running; how many.
    async fn purge_groups(
        &self,
        exact: Vec<String>,
        prefixes: Vec<String>,
    ) -> Result<usize, StoreError>;
    async fn unfinished_payloads(
        &self,
        kind: &'static str,
    ) -> Result<Vec<(EventId, Vec<u8>)>, StoreError>;
    /// Replaces the payload of an event that is not running: whether it did.
    async fn set_payload(&self, id: EventId, payload: Vec<u8>) -> Result<bool, StoreError>;
    /// Deletes an event that is not running: whether it did.
    async fn delete_event(&self, id: EventId) -> Result<bool, StoreError>;

    // --- runs and first-sync progress -----------------------------------------------------

    async fn create_run(
        &self,
        kind: RunKind,
        trigger: RunTrigger,
        now: i64,
    ) -> Result<RunId, StoreError>;
    async fn run_jobs(&self, run: RunId) -> Result<Vec<StoredOutcome>, StoreError>;
    async fn run_open_jobs(&self, run: RunId) -> Result<i64, StoreError>;
    async fn finish_run(&self, run: RunId, summary: String, now: i64) -> Result<(), StoreError>;
    async fn runs(&self, unfinished_only: bool, limit: i64) -> Result<Vec<StoredRun>, StoreError>;
    /// Of the run's jobs whose group is in [`lo`, `hi`) as bytes: (finished, all).
    async fn run_group_progress(
        &self,
        run: RunId,
        lo: String,
        hi: String,
    ) -> Result<(i64, i64), StoreError>;
    async fn track(
        &self,
        target: String,
        event: EventId,
        run: Option<RunId>,
        now: i64,
    ) -> Result<(), StoreError>;
    async fn report_progress(
        &self,
        event: EventId,
        done: i64,
        total: Option<i64>,
        now: i64,
    ) -> Result<(), StoreError>;
    async fn tracked(&self, target: String) -> Result<Option<Tracked>, StoreError>;
    async fn untrack(&self, target: String) -> Result<(), StoreError>;
}

#[derive(Clone)]
pub struct EventStore {
    db: Arc<dyn EventDb>,
    backend: Backend,
    wakers: Arc<Wakers>,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The pools of the events that were inserted (not duplicates), once per event: one idle
/// worker of the pool wakes for each, and a worker that claims work wakes the next (see
/// jobs).
fn new_work(pools: &[Pool], out: &[Enqueued]) -> Vec<Pool> {
    pools
        .iter()
        .zip(out)
        .filter(|(_, o)| matches!(o, Enqueued::Inserted(_)))
        .map(|(p, _)| *p)
        .collect()
}

impl EventStore {
    /// The queue in `events.db` (created and migrated if needed), with its writer thread.
    pub fn open(path: &Path) -> Result<EventStore, StoreError> {
        let (db, read) = sqlite::SqliteEvents::open(path)?;
        Ok(EventStore {
            db: Arc::new(db),
            backend: Backend::Sqlite(read),
            wakers: Arc::new(Wakers::new()),
        })
    }

    /// The queue in the shared PostgreSQL database. Starts listening for other instances'
    /// wake-ups first (an error if that fails), so work queued elsewhere wakes this instance's
    /// idle workers and `wait_for` callers from the start.
    pub async fn on_postgres(pg: PgDb) -> Result<EventStore, StoreError> {
        let wakers = Arc::new(Wakers::new());
        let db = postgres::PgEvents::start(pg.clone(), wakers.clone()).await?;
        Ok(EventStore {
            db: Arc::new(db),
            backend: Backend::Postgres(pg),
            wakers,
        })
    }

    /// The database the store was opened on (for tools and tests that read it directly).
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Cheap liveness probe for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.ping().await
    }

    pub fn wakers(&self) -> Arc<Wakers> {
        self.wakers.clone()
    }

    /// After a commit: `pools` here at once (one idle worker per entry), `finished` for every
    /// `wait_for`, and the same on the other instances (PostgreSQL).
    fn wake(&self, pools: &[Pool], finished: bool) {
        for p in pools {
            self.wakers.wake(*p);
        }
        if finished {
            self.wakers.finished.notify_waiters();
        }
        self.db.announce(pools, finished);
    }

    /// Durably records an event; returns once the row is committed (or known as a duplicate).
    pub async fn enqueue(&self, event: NewEvent) -> Result<Enqueued, EnqueueError> {
        let out = self.enqueue_together(vec![event]).await?;
        out.into_iter()
            .next()
            .ok_or(EnqueueError::Store(StoreError::Closed))
    }

    /// Durably records events all together (in the same commit): the intake path of a
    /// delivery that fans out into several jobs. On SQLite with group commit, `Busy` when the
    /// writer's queue is full; on PostgreSQL each call is one statement of its own, `Busy`
    /// when no connection frees up within the pool's acquire timeout.
    pub async fn enqueue_together(
        &self,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Enqueued>, EnqueueError> {
        let pools: Vec<Pool> = events.iter().map(|e| e.pool).collect();
        let out = self.db.enqueue_together(events, now_millis()).await?;
        self.wake(&new_work(&pools, &out), false);
        Ok(out)
    }

    /// Records many events in one transaction (a poll run's fan-out).
    pub async fn enqueue_all(&self, events: Vec<NewEvent>) -> Result<Vec<Enqueued>, StoreError> {
        let pools: Vec<Pool> = events.iter().map(|e| e.pool).collect();
        let out = self.db.enqueue_all(events, now_millis()).await?;
        self.wake(&new_work(&pools, &out), false);
        Ok(out)
    }

    /// At start, before the workers: on SQLite, puts every event left `running` by a process
    /// that died back to `pending` (only the process holding the queue lock calls this, so
    /// no one else can be running them).
    ///
    /// On PostgreSQL other instances may be running their jobs right now, so this only
    /// returns events whose lease has EXPIRED (the same as `reclaim_expired`): a dead
    /// instance's work comes back once its heartbeat has stopped for a lease period.
    pub async fn recover_orphans(&self) -> Result<usize, StoreError> {
        self.db.recover_orphans(now_millis()).await
    }

    /// Claims a batch for a worker of `spec.pool` (see the module docs), or `None`.
    pub async fn claim(
        &self,
        worker: &str,
        spec: &ClaimSpec,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let now = now_millis();
        let req = ClaimReq {
            pool: spec.pool,
            worker: worker.to_string(),
            now,
            locked_until: now.saturating_add(ms(lease)),
            max_batch: spec.max_batch.clone(),
        };
        match self.db.claim(req).await? {
            Found::Batch(mut events) => {
                events.sort_by_key(|e| e.id);
                Ok(Claim::Batch(events))
            }
            Found::Idle {
                next_run_at,
                contended,
            } => {
                let mut next_run_at = next_run_at.filter(|t| *t > now);
                if contended {
                    let soon = now + CONTENDED_RETRY_MS;
                    next_run_at = Some(next_run_at.map_or(soon, |t| t.min(soon)));
                }
                Ok(Claim::Idle { next_run_at })
            }
        }
    }

    /// Records how a batch ended, in one transaction: done events (with their follow-ups and
    /// result), retries, and events given up. Only rows this worker still holds are touched.
    pub async fn record(&self, worker: &str, rec: Record) -> Result<(), StoreError> {
        let follow_pools: Vec<Pool> = rec.follow_ups.iter().map(|e| e.pool).collect();
        let forget = rec.forget_failed_payloads;
        let out = Outcomes {
            worker: worker.to_string(),
            now: now_millis(),
            done: rec.done,
            result: rec.result,
            follow_ups: rec.follow_ups,
            retry: rec.retry,
            given_up: rec
                .given_up
                .into_iter()
                .map(|(id, status, reason)| GivenUp {
                    id,
                    status,
                    reason,
                    forget_payload: forget && status == EventStatus::Failed,
                })
                .collect(),
        };
        let Recorded {
            follow_ups,
            waiting,
        } = self.db.record(out).await?;
        // The group is free again: wake the pools that have work waiting in it, on every
        // instance (another pool's worker would otherwise only notice on its idle poll).
        let mut pools = new_work(&follow_pools, &follow_ups);
        pools.extend(waiting);
        self.wake(&pools, true);
        Ok(())
    }

    /// Gives every failed and dead-lettered event fresh attempts and a fresh retry horizon
    /// (after an outage is over).
    pub async fn requeue_failed(&self) -> Result<usize, StoreError> {
        let n = self.db.requeue_failed(now_millis()).await?;
        self.wake(Pool::ALL, false);
        Ok(n)
    }

    /// Returns events whose lease ran out (a handler stuck past its heartbeat, or on
    /// PostgreSQL an instance that died) to `pending`.
    pub async fn reclaim_expired(&self) -> Result<usize, StoreError> {
        self.db.reclaim_expired(now_millis()).await
    }

    /// Keeps a long-running claim alive.
    /// Renews the lease of the events still running under `worker`: how many were renewed,
    /// and until when (unix ms).
    pub async fn extend_lease(
        &self,
        ids: Vec<EventId>,
        worker: &str,
        lease: Duration,
    ) -> Result<(usize, i64), StoreError> {
        let until = now_millis().saturating_add(ms(lease));
        let renewed = self.db.extend_lease(ids, worker.to_string(), until).await?;
        Ok((renewed, until))
    }

    pub async fn stats(&self) -> Result<QueueStats, StoreError> {
        let now = now_millis();
        let counts = self.db.status_counts(now).await?;
        let mut s = QueueStats::default();
        for (status, n) in counts.by_status {
            match status {
                EventStatus::Pending => s.pending = n,
                EventStatus::Running => s.running = n,
                EventStatus::Done => s.done = n,
                EventStatus::Failed => s.failed = n,
                EventStatus::Dead => s.dead_lettered = n,
            }
        }
        s.oldest_pending_age_ms = counts
            .oldest_due
            .map(|o| (now_millis() - o).max(0))
            .unwrap_or(0);
        Ok(s)
    }

    /// Signs that a process works this queue now, for the offline commands: leases live
    /// now, and how long ago the newest event arrived.
    pub async fn activity(&self) -> Result<QueueActivity, StoreError> {
        let now = now_millis();
        let (live_leases, newest) = self.db.activity(now).await?;
        Ok(QueueActivity {
            live_leases,
            newest_event_age: newest.map(|t| Duration::from_millis((now - t).max(0) as u64)),
        })
    }

    /// The newest dead-lettered and failed events with their reasons (for operators).
    pub async fn recent_failures(&self, limit: usize) -> Result<Vec<EventRow>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db.recent_failures(limit).await
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
        self.db
            .prune_finished(now - ms(done_age), now - ms(given_up_age))
            .await
    }

    /// How the event stands now (`None`: no such event, e.g. pruned).
    pub async fn outcome(&self, id: EventId) -> Result<Option<Outcome>, StoreError> {
        Ok(self.db.outcome(id).await?.map(Outcome::from))
    }

    /// How the event with this dedupe key stands (`None`: not queued, or pruned).
    pub async fn outcome_of_key(&self, dedupe_key: &str) -> Result<Option<Outcome>, StoreError> {
        let o = self.db.outcome_of_key(dedupe_key.to_string()).await?;
        Ok(o.map(Outcome::from))
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

    /// Every event row, for tests and diagnostics.
    pub async fn rows(&self) -> Result<Vec<EventRow>, StoreError> {
        self.db.rows().await
    }
}

#[cfg(test)]
mod tests;
