//! The queue's vocabulary: ids, statuses and pools as types, constrained the same way in SQL.

use std::fmt;
use std::sync::Arc;

use rusqlite::types::{FromSql, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::Serialize;

/// Row id of an event (a webhook delivery or a job). Stored as an integer on both backends
/// (`BIGINT` on PostgreSQL), bound and read as one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct EventId(pub i64);

/// Id of a run (a poll of everything, or of one shop or page from the CLI).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    serde::Deserialize,
    sqlx::Type,
)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct RunId(pub i64);

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

use crate::store::text_enum;

text_enum!(
    /// Where an event stands. `Failed` is a permanent failure (it can never succeed);
    /// `Dead` is retryable work that ran out of its retry horizon (dead-lettered).
    EventStatus, "event status" {
        Pending => "pending",
        Running => "running",
        Done => "done",
        Failed => "failed",
        Dead => "dead",
    }
);

impl EventStatus {
    /// Done, failed or dead: nothing will run it again (short of `requeue-failed`).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            EventStatus::Done | EventStatus::Failed | EventStatus::Dead
        )
    }
}

text_enum!(
    /// The worker pool that claims an event, so long work never delays short work: Messenger
    /// merges never wait behind a Shopify sync.
    Pool, "worker pool" {
        /// Webhook fan-out and conversation merges: short, latency-sensitive.
        Messages => "messages",
        /// Shopify deliveries and catalogue syncs, data deletions: long, API-bound.
        Sync => "sync",
        /// Polls, metadata refreshes, self-test clean-ups, subscription checks.
        Poll => "poll",
    }
);

text_enum!(
    /// What a run is. One kind for now; the column is constrained so new kinds are explicit.
    RunKind, "run kind" {
        Poll => "poll",
    }
);

text_enum!(
    /// Who started a run.
    RunTrigger, "run trigger" {
        Schedule => "schedule",
        Cli => "cli",
        /// The initial polls of a Facebook connect.
        Connect => "connect",
    }
);

/// An event to insert. Built by `jobs::Job::to_event` from a typed job (kind, pool, dedupe and
/// group keys all come from the job's type); the fields stay crate-private so no call site
/// makes up keys of its own.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub(crate) kind: &'static str,
    pub(crate) pool: Pool,
    pub(crate) dedupe_key: String,
    pub(crate) group_key: String,
    pub(crate) payload: Vec<u8>,
    /// Not claimed before this (unix ms); `None` = now.
    pub(crate) run_at: Option<i64>,
    pub(crate) run_id: Option<RunId>,
}

impl NewEvent {
    pub fn dedupe_key(&self) -> &str {
        &self.dedupe_key
    }

    pub fn group_key(&self) -> &str {
        &self.group_key
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }

    pub fn run_at(&self) -> Option<i64> {
        self.run_at
    }

    /// The run this job is part of (its outcome counts in that run's summary).
    pub fn in_run(mut self, run: Option<RunId>) -> Self {
        if self.run_id.is_none() {
            self.run_id = run;
        }
        self
    }

    /// Not before `at` (unix ms).
    pub fn at(mut self, at: i64) -> Self {
        self.run_at = Some(at);
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    Inserted(EventId),
    /// An event with the same dedupe key exists (finished or not); its id.
    Duplicate(EventId),
}

impl Enqueued {
    pub fn id(self) -> EventId {
        match self {
            Enqueued::Inserted(id) | Enqueued::Duplicate(id) => id,
        }
    }
}

/// A claimed event, handed to its job type's runner.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: EventId,
    pub kind: String,
    pub dedupe_key: String,
    pub group_key: String,
    pub payload: Vec<u8>,
    /// Attempts including the current one.
    pub attempts: u32,
    pub received_at: i64,
    pub run_id: Option<RunId>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct QueueStats {
    pub pending: i64,
    pub running: i64,
    pub done: i64,
    /// Permanent failures.
    pub failed: i64,
    /// Retryable work that ran out of its retry horizon.
    pub dead_lettered: i64,
    /// Age in ms of the oldest event not yet processed (pending or running).
    pub oldest_pending_age_ms: i64,
}

/// What [`super::EventStore::activity`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueActivity {
    /// Running events whose lease has not run out: a process claimed or heartbeated them
    /// within their lease.
    pub live_leases: i64,
    /// How long ago the newest event arrived (`None`: the queue is empty).
    pub newest_event_age: Option<std::time::Duration>,
}

/// An event row as tests and diagnostics see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub id: EventId,
    pub kind: String,
    pub dedupe_key: String,
    pub group_key: String,
    pub status: EventStatus,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub run_id: Option<RunId>,
}

/// How a job ended (or that it has not yet).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub id: EventId,
    pub kind: String,
    pub group_key: String,
    pub status: EventStatus,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub result: Option<serde_json::Value>,
}

/// What to claim: a pool, and how many events of one group each kind takes per run.
#[derive(Clone)]
pub struct ClaimSpec {
    pub pool: Pool,
    /// Kind → most events per batch; kinds not listed take one.
    pub max_batch: Arc<std::collections::HashMap<&'static str, usize>>,
}

/// What a claim found.
#[derive(Debug)]
pub enum Claim {
    /// Events of one group and kind, oldest first.
    Batch(Vec<Event>),
    /// Nothing ready; the pool's next event becomes ready at this time (unix ms), if any is
    /// waiting for its time (others may wait for their group to finish).
    Idle { next_run_at: Option<i64> },
}

impl Claim {
    /// The batch, if any (tests and tools).
    pub fn batch(self) -> Option<Vec<Event>> {
        match self {
            Claim::Batch(b) => Some(b),
            Claim::Idle { .. } => None,
        }
    }
}

/// The outcome of one batch, recorded in one transaction.
#[derive(Debug, Default)]
pub struct Record {
    /// Finished; follow-ups and the result are recorded with them.
    pub done: Vec<EventId>,
    pub follow_ups: Vec<NewEvent>,
    pub result: Option<String>,
    /// Tried again at the given time (unix ms), with the reason.
    pub retry: Vec<(EventId, i64, String)>,
    /// Given up, as `Failed` (permanent) or `Dead` (retry horizon passed), with the reason.
    pub given_up: Vec<(EventId, EventStatus, String)>,
    /// Drop the payloads of events that failed for good (they can never be used).
    pub forget_failed_payloads: bool,
}

/// A poll run and how far its jobs got.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRecord {
    pub id: RunId,
    pub kind: RunKind,
    pub trigger: RunTrigger,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub summary: Option<serde_json::Value>,
}

impl ToSql for EventId {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.0))
    }
}

impl FromSql for EventId {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        v.as_i64().map(EventId)
    }
}

impl ToSql for RunId {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.0))
    }
}

impl FromSql for RunId {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        v.as_i64().map(RunId)
    }
}

/// Parses a stored JSON `result`; a result that no longer parses is reported as absent.
pub(crate) fn parse_result(raw: Option<String>) -> Option<serde_json::Value> {
    raw.and_then(|s| serde_json::from_str(&s).ok())
}
