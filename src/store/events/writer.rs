//! The one thread that writes `events.db`.
//!
//! Inserts that queue up while it is busy are committed together in one transaction (group
//! commit), so thousands of deliveries per second each get a committed row before their 200
//! without one fsync apiece. Claims, completions and retries run on the same thread, so
//! writers never wait on SQLite's busy handler.

use std::sync::mpsc as std_mpsc;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use super::types::{Enqueued, EventId, NewEvent};
use super::Wakers;
use crate::store::StoreError;

/// Most requests one commit carries.
const MAX_GROUP_COMMIT: usize = 2048;

/// Events that must be recorded together (one delivery fanned out), and who waits for them.
pub(super) struct InsertReq {
    pub events: Vec<NewEvent>,
    pub reply: oneshot::Sender<Result<Vec<Enqueued>, StoreError>>,
}

/// Bookkeeping work for the writer thread.
pub(super) type WriteFn = Box<dyn FnOnce(&mut Connection) + Send>;

/// How a write must survive a power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Durability {
    /// Acknowledged work (webhook deliveries, queued jobs): the commit is fsynced
    /// (`synchronous=FULL`) before anyone is told it is recorded.
    Durable,
    /// Bookkeeping (claims, outcomes, leases): a power loss may roll the last of these back,
    /// which only makes idempotent work run again, so they skip the fsync
    /// (`synchronous=NORMAL`; WAL keeps them atomic and safe against a killed process).
    Relaxed,
}

pub(super) enum Cmd {
    Insert(InsertReq),
    Write(WriteFn, Durability),
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

pub(super) fn writer_loop(mut conn: Connection, rx: std_mpsc::Receiver<Cmd>, wakers: Arc<Wakers>) {
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
        commit_inserts(&mut conn, batch, &wakers);
    }
}

fn commit_inserts(conn: &mut Connection, batch: Vec<InsertReq>, wakers: &Wakers) {
    let result = (|| -> Result<Vec<Vec<Enqueued>>, rusqlite::Error> {
        let tx = conn.transaction()?;
        let now = crate::store::now_millis();
        let out = batch
            .iter()
            .map(|r| {
                r.events
                    .iter()
                    .map(|e| insert_event(&tx, e, now))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit()?;
        Ok(out)
    })();
    match result {
        Ok(outcomes) => {
            for (req, outcome) in batch.into_iter().zip(outcomes) {
                for (e, o) in req.events.iter().zip(&outcome) {
                    if matches!(o, Enqueued::Inserted(_)) {
                        // One worker of the event's pool wakes; a worker that claims work
                        // wakes the next (see jobs).
                        wakers.wake(e.pool);
                    }
                }
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
