//! The durable event queue: webhook deliveries and background jobs as rows.
//!
//! One writer thread owns the only connection that writes. Inserts that queue up while it is
//! busy are committed together in one transaction (group commit), so thousands of deliveries
//! per second each get a committed row before their 200 without one fsync apiece, and claims,
//! completions and retries run on the same thread, so writers never wait on SQLite's busy
//! handler. Reads (stats, listings) use a second connection; WAL lets them run alongside.

use std::path::Path;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{oneshot, Notify};

use super::{now_millis, open_connection, Db, DbKind, StoreError};

/// Most requests one commit carries.
const MAX_GROUP_COMMIT: usize = 2048;
/// Inserts waiting for the writer before new ones are turned away (503, the sender retries).
const WRITER_QUEUE_CAP: usize = 50_000;

#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: String,
    pub dedupe_key: String,
    pub group_key: String,
    pub payload: Vec<u8>,
    /// Not claimed before this (unix ms); `None` = now.
    pub run_at: Option<i64>,
}

impl NewEvent {
    pub fn new(
        kind: impl Into<String>,
        dedupe_key: impl Into<String>,
        group_key: impl Into<String>,
        payload: Vec<u8>,
    ) -> Self {
        NewEvent {
            kind: kind.into(),
            dedupe_key: dedupe_key.into(),
            group_key: group_key.into(),
            payload,
            run_at: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    Inserted(i64),
    Duplicate,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub id: i64,
    pub kind: String,
    pub dedupe_key: String,
    pub group_key: String,
    pub payload: Vec<u8>,
    pub attempts: u32,
    pub received_at: i64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct QueueStats {
    pub pending: i64,
    pub running: i64,
    pub done: i64,
    pub failed: i64,
    /// Age in ms of the oldest event not yet processed (pending or running).
    pub oldest_pending_age_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub id: i64,
    pub kind: String,
    pub dedupe_key: String,
    pub status: String,
    pub attempts: u32,
    pub last_error: Option<String>,
}

struct InsertReq {
    event: NewEvent,
    reply: oneshot::Sender<Result<Enqueued, StoreError>>,
}

type WriteFn = Box<dyn FnOnce(&mut Connection) + Send>;

enum Cmd {
    Insert(InsertReq),
    Write(WriteFn),
}

#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("the event queue is full; retry later")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Clone)]
pub struct EventStore {
    db: Db,
    writer: std_mpsc::SyncSender<Cmd>,
    notify: Arc<Notify>,
}

impl EventStore {
    pub fn open(path: &Path) -> Result<EventStore, StoreError> {
        let db = Db::open(path, DbKind::Events)?;
        let writer_conn = open_connection(path, DbKind::Events)?;
        let (tx, rx) = std_mpsc::sync_channel(WRITER_QUEUE_CAP);
        let notify = Arc::new(Notify::new());
        let n = notify.clone();
        std::thread::Builder::new()
            .name("events-writer".into())
            .spawn(move || writer_loop(writer_conn, rx, n))
            .map_err(|e| StoreError::Open {
                path: path.to_path_buf(),
                reason: format!("could not start writer thread: {e}"),
            })?;
        Ok(EventStore {
            db,
            writer: tx,
            notify,
        })
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Woken after every commit that inserted events.
    pub fn notifier(&self) -> Arc<Notify> {
        self.notify.clone()
    }

    /// Durably records an event; returns once the row is committed (or known as a duplicate).
    pub async fn enqueue(&self, event: NewEvent) -> Result<Enqueued, EnqueueError> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .try_send(Cmd::Insert(InsertReq { event, reply }))
            .map_err(|e| match e {
                std_mpsc::TrySendError::Full(_) => EnqueueError::Busy,
                std_mpsc::TrySendError::Disconnected(_) => EnqueueError::Store(StoreError::Closed),
            })?;
        Ok(rx.await.map_err(|_| StoreError::Closed)??)
    }

    /// Runs `f` on the writer thread and returns its result.
    async fn write<F, R>(&self, f: F) -> Result<R, StoreError>
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
        let tx = self.writer.clone();
        tokio::task::spawn_blocking(move || tx.send(Cmd::Write(job)))
            .await
            .map_err(|_| StoreError::Closed)?
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Puts events left `running` by a process that died back to `pending`. Called once at
    /// start-up, before any worker runs: one server owns a queue file.
    pub async fn recover_orphans(&self) -> Result<usize, StoreError> {
        self
            .write(|c| {
                Ok(c.execute(
                    "UPDATE events SET status = 'pending', locked_by = NULL, locked_until = NULL WHERE status = 'running'",
                    [],
                )?)
            })
            .await
    }

    /// Claims events of one group whose other events are not running: the oldest ready event
    /// picks the group, and up to `max` pending events of that group and kind come along,
    /// ready or not yet (a debounced burst, or an event waiting out a backoff, is handled by
    /// the same run, since it concerns the same object). That is how a burst of deliveries
    /// for one shop becomes one refresh.
    pub async fn claim_group(
        &self,
        worker: &str,
        lease: Duration,
        max: usize,
    ) -> Result<Option<Vec<Event>>, StoreError> {
        let worker = worker.to_string();
        let lease_ms = lease.as_millis() as i64;
        self.write(move |c| {
            // Deferred: a look that finds nothing commits without writing (no fsync).
            let tx = c.transaction()?;
            let now = now_millis();
            let head: Option<(String, String)> = tx
                .prepare_cached(
                    "SELECT e.group_key, e.kind FROM events e
                     WHERE e.status = 'pending' AND e.run_at <= ?1
                       AND NOT EXISTS (SELECT 1 FROM events r
                                       WHERE r.status = 'running' AND r.group_key = e.group_key)
                     ORDER BY e.run_at, e.id LIMIT 1",
                )?
                .query_row([now], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let Some((group, kind)) = head else {
                return Ok(None);
            };
            let events = tx
                .prepare_cached(
                    "UPDATE events SET status = 'running', attempts = attempts + 1,
                            locked_by = ?4, locked_until = ?5
                     WHERE id IN (SELECT id FROM events
                                  WHERE status = 'pending' AND group_key = ?1 AND kind = ?2
                                  ORDER BY id LIMIT ?6)
                     RETURNING id, kind, dedupe_key, group_key, payload, attempts, received_at",
                )?
                .query_map(
                    params![group, kind, now, worker, now + lease_ms, max as i64],
                    |r| {
                        Ok(Event {
                            id: r.get(0)?,
                            kind: r.get(1)?,
                            dedupe_key: r.get(2)?,
                            group_key: r.get(3)?,
                            payload: r.get(4)?,
                            attempts: r.get(5)?,
                            received_at: r.get(6)?,
                        })
                    },
                )?
                .collect::<Result<Vec<_>, _>>()?;
            tx.commit()?;
            let mut events = events;
            events.sort_by_key(|e| e.id);
            Ok(Some(events))
        })
        .await
    }

    /// Gives every failed event a fresh set of attempts (after an outage is over).
    pub async fn requeue_failed(&self) -> Result<usize, StoreError> {
        self.write(|c| {
            Ok(c.execute(
                "UPDATE events SET status = 'pending', attempts = 0, run_at = ?1, finished_at = NULL,
                        locked_by = NULL, locked_until = NULL
                 WHERE status = 'failed'",
                [now_millis()],
            )?)
        })
        .await
    }

    /// Returns events whose lease ran out (a handler stuck past its heartbeat) to `pending`.
    pub async fn reclaim_expired(&self) -> Result<usize, StoreError> {
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
        ids: Vec<i64>,
        worker: &str,
        lease: Duration,
    ) -> Result<(), StoreError> {
        let worker = worker.to_string();
        self
            .write(move |c| {
                let until = now_millis() + lease.as_millis() as i64;
                let tx = c.transaction()?;
                for id in ids {
                    tx.execute(
                        "UPDATE events SET locked_until = ?1 WHERE id = ?2 AND locked_by = ?3 AND status = 'running'",
                        params![until, id, worker],
                    )?;
                }
                tx.commit()?;
                Ok(())
            })
            .await
    }

    /// Marks the events done and records follow-up events in the same transaction, so a crash
    /// never loses the follow-ups of finished work.
    pub async fn complete(
        &self,
        ids: Vec<i64>,
        worker: &str,
        follow_ups: Vec<NewEvent>,
    ) -> Result<(), StoreError> {
        let worker = worker.to_string();
        let inserted = !follow_ups.is_empty();
        self.write(move |c| {
            let tx = c.transaction()?;
            let now = now_millis();
            // Only the worker holding the lease records an outcome: after a lease was
            // reclaimed, a late worker must not overwrite the new holder's result.
            for id in ids {
                tx.execute(
                    "UPDATE events SET status = 'done', finished_at = ?1, locked_by = NULL,
                            locked_until = NULL, last_error = NULL
                     WHERE id = ?2 AND status = 'running' AND locked_by = ?3",
                    params![now, id, worker],
                )?;
            }
            for ev in &follow_ups {
                insert_event(&tx, ev, now)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await?;
        if inserted {
            self.notify.notify_one();
        }
        Ok(())
    }

    /// Schedules another attempt at `run_at`, or marks the events failed for good when
    /// `run_at` is `None`.
    pub async fn fail(
        &self,
        ids: Vec<i64>,
        worker: &str,
        reason: String,
        run_at: Option<i64>,
    ) -> Result<(), StoreError> {
        let worker = worker.to_string();
        self.write(move |c| {
            let tx = c.transaction()?;
            let now = now_millis();
            for id in ids {
                match run_at {
                    Some(at) => tx.execute(
                        "UPDATE events SET status = 'pending', run_at = ?1, last_error = ?2,
                                locked_by = NULL, locked_until = NULL
                         WHERE id = ?3 AND status = 'running' AND locked_by = ?4",
                        params![at, reason, id, worker],
                    )?,
                    None => tx.execute(
                        "UPDATE events SET status = 'failed', finished_at = ?1, last_error = ?2,
                                locked_by = NULL, locked_until = NULL
                         WHERE id = ?3 AND status = 'running' AND locked_by = ?4",
                        params![now, reason, id, worker],
                    )?,
                };
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn stats(&self) -> Result<QueueStats, StoreError> {
        self.db
            .call(|c| {
                let mut s = QueueStats::default();
                let mut st = c.prepare("SELECT status, COUNT(*) FROM events GROUP BY status")?;
                let rows =
                    st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
                for row in rows {
                    let (status, n) = row?;
                    match status.as_str() {
                        "pending" => s.pending = n,
                        "running" => s.running = n,
                        "done" => s.done = n,
                        "failed" => s.failed = n,
                        _ => {}
                    }
                }
                let oldest: Option<i64> = c.query_row(
                    "SELECT MIN(received_at) FROM events WHERE status IN ('pending', 'running')",
                    [],
                    |r| r.get(0),
                )?;
                s.oldest_pending_age_ms = oldest.map(|o| (now_millis() - o).max(0)).unwrap_or(0);
                Ok(s)
            })
            .await
    }

    /// Deletes finished events older than `age`. Their dedupe keys go with them, so `age` must
    /// exceed the platforms' redelivery window (Shopify retries for 48 hours).
    pub async fn prune_finished(&self, age: Duration) -> Result<usize, StoreError> {
        let cutoff = now_millis() - age.as_millis() as i64;
        self.write(move |c| {
            Ok(c.execute(
                "DELETE FROM events WHERE status = 'done' AND finished_at < ?1",
                [cutoff],
            )?)
        })
        .await
    }

    /// Every event row, for tests and diagnostics.
    pub async fn rows(&self) -> Result<Vec<EventRow>, StoreError> {
        self.db
            .call(|c| {
                let mut st = c.prepare(
                    "SELECT id, kind, dedupe_key, status, attempts, last_error FROM events ORDER BY id",
                )?;
                let v = st
                    .query_map([], |r| {
                        Ok(EventRow {
                            id: r.get(0)?,
                            kind: r.get(1)?,
                            dedupe_key: r.get(2)?,
                            status: r.get(3)?,
                            attempts: r.get(4)?,
                            last_error: r.get(5)?,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(v)
            })
            .await
    }
}

fn insert_event(conn: &Connection, ev: &NewEvent, now: i64) -> Result<Enqueued, rusqlite::Error> {
    let n = conn
        .prepare_cached(
            "INSERT INTO events (kind, dedupe_key, group_key, payload, status, attempts, run_at, received_at)
             VALUES (?1, ?2, ?3, ?4, 'pending', 0, ?5, ?6)
             ON CONFLICT(dedupe_key) DO NOTHING",
        )?
        .execute(params![
            ev.kind,
            ev.dedupe_key,
            ev.group_key,
            ev.payload,
            ev.run_at.unwrap_or(now),
            now
        ])?;
    Ok(if n == 1 {
        Enqueued::Inserted(conn.last_insert_rowid())
    } else {
        Enqueued::Duplicate
    })
}

fn writer_loop(mut conn: Connection, rx: std_mpsc::Receiver<Cmd>, notify: Arc<Notify>) {
    let mut pending: Option<Cmd> = None;
    loop {
        let first = match pending.take() {
            Some(c) => c,
            None => match rx.recv() {
                Ok(c) => c,
                Err(_) => return,
            },
        };
        let first = match first {
            Cmd::Write(f) => {
                f(&mut conn);
                continue;
            }
            Cmd::Insert(r) => r,
        };
        // Gather every insert already waiting; stop at the first other command, which runs
        // after this batch commits.
        let mut batch = vec![first];
        while batch.len() < MAX_GROUP_COMMIT {
            match rx.try_recv() {
                Ok(Cmd::Insert(r)) => batch.push(r),
                Ok(other) => {
                    pending = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        commit_inserts(&mut conn, batch, &notify);
    }
}

fn commit_inserts(conn: &mut Connection, batch: Vec<InsertReq>, notify: &Notify) {
    let result = (|| -> Result<Vec<Enqueued>, rusqlite::Error> {
        let tx = conn.transaction()?;
        let now = now_millis();
        let out = batch
            .iter()
            .map(|r| insert_event(&tx, &r.event, now))
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit()?;
        Ok(out)
    })();
    match result {
        Ok(outcomes) => {
            let any_new = outcomes.iter().any(|o| matches!(o, Enqueued::Inserted(_)));
            for (req, outcome) in batch.into_iter().zip(outcomes) {
                let _ = req.reply.send(Ok(outcome));
            }
            if any_new {
                // One worker wakes; a worker that claims work wakes the next (see jobs).
                notify.notify_one();
            }
        }
        Err(e) => {
            tracing::error!(error = %e, size = batch.len(), "event insert batch failed");
            let msg = e.to_string();
            for req in batch {
                let _ = req
                    .reply
                    .send(Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
                        Some(msg.clone()),
                    ))));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(key: &str, group: &str) -> NewEvent {
        NewEvent::new("test", key, group, b"{}".to_vec())
    }

    #[tokio::test]
    async fn duplicate_insert_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let q = EventStore::open(&dir.path().join("e.db")).unwrap();
        assert!(matches!(
            q.enqueue(ev("a", "g")).await.unwrap(),
            Enqueued::Inserted(_)
        ));
        assert_eq!(q.enqueue(ev("a", "g")).await.unwrap(), Enqueued::Duplicate);
        assert_eq!(q.rows().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_group_is_never_claimed_twice_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let q = EventStore::open(&dir.path().join("e.db")).unwrap();
        for i in 0..3 {
            q.enqueue(ev(&format!("a{i}"), "g1")).await.unwrap();
        }
        q.enqueue(ev("b", "g2")).await.unwrap();
        let lease = Duration::from_secs(60);
        let first = q.claim_group("w1", lease, 10).await.unwrap().unwrap();
        assert_eq!(
            first.len(),
            3,
            "all ready events of the group come together"
        );
        q.enqueue(ev("a3", "g1")).await.unwrap();
        let second = q.claim_group("w2", lease, 10).await.unwrap().unwrap();
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].group_key, "g2");
        // g1 still running: its new event waits.
        assert!(q.claim_group("w3", lease, 10).await.unwrap().is_none());
        q.complete(first.iter().map(|e| e.id).collect(), "w1", vec![])
            .await
            .unwrap();
        let third = q.claim_group("w3", lease, 10).await.unwrap().unwrap();
        assert_eq!(third[0].dedupe_key, "a3");
    }

    #[tokio::test]
    async fn retry_then_fail_and_orphan_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let q = EventStore::open(&dir.path().join("e.db")).unwrap();
        q.enqueue(ev("a", "g")).await.unwrap();
        let lease = Duration::from_secs(60);
        let c = q.claim_group("w", lease, 1).await.unwrap().unwrap();
        q.fail(
            vec![c[0].id],
            "w",
            "boom".into(),
            Some(now_millis() + 60_000),
        )
        .await
        .unwrap();
        assert!(
            q.claim_group("w", lease, 1).await.unwrap().is_none(),
            "backoff respected"
        );
        // Once the backoff is over the retry is claimed again, then fails for good; a worker
        // that does not hold the lease cannot record an outcome.
        q.db()
            .call(|c| {
                c.execute("UPDATE events SET run_at = 0", [])?;
                Ok(())
            })
            .await
            .unwrap();
        let c = q.claim_group("w", lease, 1).await.unwrap().unwrap();
        q.fail(vec![c[0].id], "intruder", "nope".into(), None)
            .await
            .unwrap();
        assert_eq!(q.rows().await.unwrap()[0].status, "running");
        q.fail(vec![c[0].id], "w", "boom again".into(), None)
            .await
            .unwrap();
        let rows = q.rows().await.unwrap();
        assert_eq!(rows[0].status, "failed");
        assert_eq!(rows[0].last_error.as_deref(), Some("boom again"));
        assert_eq!(q.requeue_failed().await.unwrap(), 1);
        let again = q.claim_group("w", lease, 1).await.unwrap().unwrap();
        assert_eq!((again[0].id, again[0].attempts), (c[0].id, 1));
        q.fail(vec![c[0].id], "w", "still down".into(), None)
            .await
            .unwrap();

        q.enqueue(ev("b", "g2")).await.unwrap();
        let c = q.claim_group("w", lease, 1).await.unwrap().unwrap();
        assert_eq!(c[0].dedupe_key, "b");
        assert_eq!(q.recover_orphans().await.unwrap(), 1);
        let again = q.claim_group("w", lease, 1).await.unwrap().unwrap();
        assert_eq!(again[0].attempts, 2);
    }

    #[tokio::test]
    async fn a_ready_head_brings_its_debounced_group_along() {
        let dir = tempfile::tempdir().unwrap();
        let q = EventStore::open(&dir.path().join("e.db")).unwrap();
        let mut later = ev("later", "g");
        later.run_at = Some(now_millis() + 60_000);
        q.enqueue(later.clone()).await.unwrap();
        let lease = Duration::from_secs(60);
        assert!(
            q.claim_group("w", lease, 10).await.unwrap().is_none(),
            "nothing ready yet"
        );
        q.enqueue(ev("now", "g")).await.unwrap();
        let mut other = ev("other-group", "h");
        other.run_at = Some(now_millis() + 60_000);
        q.enqueue(other).await.unwrap();
        let batch = q.claim_group("w", lease, 10).await.unwrap().unwrap();
        let keys: Vec<&str> = batch.iter().map(|e| e.dedupe_key.as_str()).collect();
        assert_eq!(
            keys,
            ["later", "now"],
            "the whole group, nothing of another group"
        );
    }

    #[tokio::test]
    async fn expired_leases_are_reclaimed() {
        let dir = tempfile::tempdir().unwrap();
        let q = EventStore::open(&dir.path().join("e.db")).unwrap();
        q.enqueue(ev("a", "g")).await.unwrap();
        let c = q
            .claim_group("w", Duration::ZERO, 1)
            .await
            .unwrap()
            .unwrap();
        assert!(q
            .claim_group("w2", Duration::ZERO, 1)
            .await
            .unwrap()
            .is_none());
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(q.reclaim_expired().await.unwrap(), 1);
        let again = q
            .claim_group("w2", Duration::from_secs(60), 1)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again[0].id, c[0].id);
        assert_eq!(
            q.reclaim_expired().await.unwrap(),
            0,
            "a live lease is kept"
        );
    }

    #[tokio::test]
    async fn follow_ups_commit_with_completion() {
        let dir = tempfile::tempdir().unwrap();
        let q = EventStore::open(&dir.path().join("e.db")).unwrap();
        q.enqueue(ev("a", "g")).await.unwrap();
        let c = q
            .claim_group("w", Duration::from_secs(60), 1)
            .await
            .unwrap()
            .unwrap();
        q.complete(vec![c[0].id], "w", vec![ev("child", "h"), ev("a", "g")])
            .await
            .unwrap();
        let rows = q.rows().await.unwrap();
        assert_eq!(rows.len(), 2, "the duplicate follow-up is ignored");
        assert_eq!(rows[1].dedupe_key, "child");
        let s = q.stats().await.unwrap();
        assert_eq!((s.pending, s.done), (1, 1));
    }

    #[tokio::test]
    async fn concurrent_enqueues_all_commit() {
        let dir = tempfile::tempdir().unwrap();
        let q = EventStore::open(&dir.path().join("e.db")).unwrap();
        let mut set = tokio::task::JoinSet::new();
        for i in 0..500 {
            let q = q.clone();
            set.spawn(async move { q.enqueue(ev(&format!("k{}", i % 250), "g")).await });
        }
        let mut inserted = 0;
        while let Some(r) = set.join_next().await {
            if matches!(r.unwrap().unwrap(), Enqueued::Inserted(_)) {
                inserted += 1;
            }
        }
        assert_eq!(inserted, 250);
        assert_eq!(q.rows().await.unwrap().len(), 250);
    }
}
