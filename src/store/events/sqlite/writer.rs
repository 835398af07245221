//! The one thread that writes `events.db`.
//!
//! Inserts that queue up while it is busy are committed together in one transaction (group
//! commit), so thousands of deliveries per second each get a committed row before their 200
//! without one fsync apiece. Claims, completions and retries run on the same thread, so
//! writers never wait on SQLite's busy handler.

use std::path::Path;
use std::sync::mpsc as std_mpsc;

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use super::super::{EnqueueError, Enqueued, EventId, NewEvent};
use crate::store::{open_connection, DbKind, StoreError};

/// Most requests one commit carries.
const MAX_GROUP_COMMIT: usize = 2048;
/// Inserts waiting for the writer before new ones are turned away (503, the sender retries).
const WRITER_QUEUE_CAP: usize = 50_000;

/// Events that must be recorded together (one delivery fanned out), and who waits for them.
struct InsertReq {
    events: Vec<NewEvent>,
    /// When they were received (unix ms).
    now: i64,
    reply: oneshot::Sender<Result<Vec<Enqueued>, StoreError>>,
}

/// Bookkeeping work for the writer thread.
type WriteFn = Box<dyn FnOnce(&mut Connection) + Send>;

/// How a write must survive a power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// Acknowledged work (webhook deliveries, queued jobs): the commit is fsynced
    /// (`synchronous=FULL`) before anyone is told it is recorded.
    Durable,
    /// Bookkeeping (claims, outcomes, leases): a power loss may roll the last of these back,
    /// which only makes idempotent work run again, so they skip the fsync
    /// (`synchronous=NORMAL`; WAL keeps them atomic and safe against a killed process).
    Relaxed,
}

enum Cmd {
    Insert(InsertReq),
    Write(WriteFn, Durability),
}

/// The way to the writer thread; the thread ends when the last handle is dropped.
#[derive(Clone)]
pub(super) struct Writer(std_mpsc::SyncSender<Cmd>);

impl Writer {
    /// Opens the writer's own connection to `path` and starts its thread.
    pub fn start(path: &Path) -> Result<Writer, StoreError> {
        let conn = open_connection(path, DbKind::Events)?;
        let (tx, rx) = std_mpsc::sync_channel(WRITER_QUEUE_CAP);
        std::thread::Builder::new()
            .name("events-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(|e| StoreError::Open {
                path: path.to_path_buf(),
                reason: format!("could not start writer thread: {e}"),
            })?;
        Ok(Writer(tx))
    }

    /// Inserts `events` together, in the next group commit; `Busy` when the writer's queue
    /// is full.
    pub async fn insert(
        &self,
        events: Vec<NewEvent>,
        now: i64,
    ) -> Result<Vec<Enqueued>, EnqueueError> {
        let (reply, rx) = oneshot::channel();
        self.0
            .try_send(Cmd::Insert(InsertReq { events, now, reply }))
            .map_err(|e| match e {
                std_mpsc::TrySendError::Full(_) => EnqueueError::Busy,
                std_mpsc::TrySendError::Disconnected(_) => EnqueueError::Store(StoreError::Closed),
            })?;
        Ok(rx.await.map_err(|_| StoreError::Closed)??)
    }

    /// Runs bookkeeping `f` (claims, outcomes, leases) on the writer thread and returns its
    /// result; see `Durability::Relaxed`.
    pub async fn write<F, R>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        self.write_with(Durability::Relaxed, f).await
    }

    /// Runs `f` on the writer thread with its commit fsynced (new work being recorded).
    pub async fn write_durable<F, R>(&self, f: F) -> Result<R, StoreError>
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
        let tx = self.0.clone();
        let sent =
            tokio::task::spawn_blocking(move || tx.send(Cmd::Write(job, durability)).is_ok())
                .await
                .map_err(|_| StoreError::Closed)?;
        if !sent {
            return Err(StoreError::Closed);
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

/// The writer connection's current `synchronous` mode, switched only when a write needs
/// another.
struct Mode(Option<Durability>);

impl Mode {
    fn set(&mut self, conn: &Connection, want: Durability) {
        if self.0 == Some(want) {
            return;
        }
        let value = match want {
            Durability::Durable => "FULL",
            Durability::Relaxed => "NORMAL",
        };
        match conn.pragma_update(None, "synchronous", value) {
            Ok(()) => self.0 = Some(want),
            // Stay on the safe side: FULL is the connection's default.
            Err(e) => {
                tracing::warn!(error = %e, "could not switch the queue's synchronous mode");
                self.0 = None;
            }
        }
    }
}

/// Inserts one event unless its dedupe key exists; returns the row's id either way. An
/// existing event that failed or was dead-lettered is queued again instead (asked for anew,
/// e.g. by the next poll, the same work deserves another try).
pub(super) fn insert_event(
    conn: &Connection,
    ev: &NewEvent,
    now: i64,
) -> Result<Enqueued, rusqlite::Error> {
    let inserted: Option<EventId> = conn
        .prepare_cached(
            "INSERT INTO events (kind, pool, dedupe_key, group_key, payload, status, attempts,
                                 run_at, received_at, run_id)
             VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?7, ?8)
             ON CONFLICT(dedupe_key) DO UPDATE SET status = 'pending', attempts = 0,
                payload = excluded.payload, run_at = excluded.run_at,
                received_at = excluded.received_at, run_id = excluded.run_id,
                finished_at = NULL, last_error = NULL, locked_by = NULL, locked_until = NULL,
                result = NULL
             WHERE events.status IN ('failed', 'dead')
             RETURNING id",
        )?
        .query_row(
            params![
                ev.kind,
                ev.pool,
                ev.dedupe_key,
                ev.group_key,
                ev.payload,
                ev.run_at.unwrap_or(now),
                now,
                ev.run_id,
            ],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(id) = inserted {
        return Ok(Enqueued::Inserted(id));
    }
    let id: Option<EventId> = conn
        .prepare_cached("SELECT id FROM events WHERE dedupe_key = ?1")?
        .query_row([&ev.dedupe_key], |r| r.get(0))
        .optional()?;
    // The conflicting row exists: it was there when the insert ran, in this transaction.
    Ok(Enqueued::Duplicate(id.unwrap_or(EventId(0))))
}

fn writer_loop(mut conn: Connection, rx: std_mpsc::Receiver<Cmd>) {
    let mut pending: Option<Cmd> = None;
    let mut mode = Mode(None);
    loop {
        let first = match pending.take() {
            Some(c) => c,
            None => match rx.recv() {
                Ok(c) => c,
                Err(_) => return,
            },
        };
        let first = match first {
            Cmd::Write(f, durability) => {
                mode.set(&conn, durability);
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
        mode.set(&conn, Durability::Durable);
        commit_inserts(&mut conn, batch);
    }
}

/// Commits a batch of inserts in one transaction and answers each request (the store wakes
/// the workers once its answer arrives).
fn commit_inserts(conn: &mut Connection, batch: Vec<InsertReq>) {
    let result = (|| -> Result<Vec<Vec<Enqueued>>, rusqlite::Error> {
        let tx = conn.transaction()?;
        let out = batch
            .iter()
            .map(|r| {
                r.events
                    .iter()
                    .map(|e| insert_event(&tx, e, r.now))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit()?;
        Ok(out)
    })();
    match result {
        Ok(outcomes) => {
            for (req, outcome) in batch.into_iter().zip(outcomes) {
                let _ = req.reply.send(Ok(outcome));
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
