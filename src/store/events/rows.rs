//! What crosses the `EventDb` seam: plain rows, with the decisions already taken above it
//! (times, batch sizes, which payloads to forget) and the stored text left unparsed (JSON
//! results and summaries are parsed once, in the store).

use std::collections::HashMap;
use std::sync::Arc;

use super::types::parse_result;
use super::{
    Enqueued, Event, EventId, EventStatus, NewEvent, Outcome, Pool, RunId, RunKind, RunRecord,
    RunTrigger,
};

/// A claim for a worker of `pool`: its lease runs until `locked_until` (unix ms).
pub(super) struct ClaimReq {
    pub pool: Pool,
    pub worker: String,
    pub now: i64,
    pub locked_until: i64,
    /// Kind → most events per batch; kinds not listed take one (see `max_batch`).
    pub max_batch: Arc<HashMap<&'static str, usize>>,
}

impl ClaimReq {
    /// Most events of `kind` one batch takes: one for kinds not listed, never zero.
    pub fn max_batch(&self, kind: &str) -> usize {
        self.max_batch.get(kind).copied().unwrap_or(1).max(1)
    }
}

/// What a claim found, as the database said it.
pub(super) enum Found {
    /// The claimed events, in any order.
    Batch(Vec<Event>),
    /// Nothing claimable: the earliest `run_at` of the pool's events waiting for their time
    /// (as stored, possibly not in the future), and whether a ready group was passed over
    /// because a concurrent claim was choosing its batch (PostgreSQL only).
    Idle {
        next_run_at: Option<i64>,
        contended: bool,
    },
}

/// How a batch ended, ready to write: only rows still running under `worker`'s lease change.
pub(super) struct Outcomes {
    pub worker: String,
    pub now: i64,
    pub done: Vec<EventId>,
    pub result: Option<String>,
    /// Queued only if one of `done` was still held (after a lease was taken over, the new
    /// holder produces them).
    pub follow_ups: Vec<NewEvent>,
    /// Pending again from the given time (unix ms), with the reason.
    pub retry: Vec<(EventId, i64, String)>,
    pub given_up: Vec<GivenUp>,
}

/// An event given up, as `Failed` or `Dead`.
pub(super) struct GivenUp {
    pub id: EventId,
    pub status: EventStatus,
    pub reason: String,
    /// Its payload is dropped (it can never be used).
    pub forget_payload: bool,
}

/// What recording a batch's outcome changed, for the wake-ups.
pub(super) struct Recorded {
    /// How each follow-up was queued, in order; empty when none was.
    pub follow_ups: Vec<Enqueued>,
    /// Pools with events waiting in a group the batch freed.
    pub waiting: Vec<Pool>,
}

/// `sql::OUTCOME*` and `sql::RUN_JOBS`: an outcome with its result as stored.
pub(super) struct StoredOutcome {
    pub id: EventId,
    pub kind: String,
    pub group_key: String,
    pub status: EventStatus,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub result: Option<String>,
}

impl From<StoredOutcome> for Outcome {
    fn from(o: StoredOutcome) -> Outcome {
        Outcome {
            id: o.id,
            kind: o.kind,
            group_key: o.group_key,
            status: o.status,
            attempts: o.attempts,
            last_error: o.last_error,
            result: parse_result(o.result),
        }
    }
}

/// `sql::RUNS`: a run with its summary as stored.
pub(super) struct StoredRun {
    pub id: RunId,
    pub kind: RunKind,
    pub trigger: RunTrigger,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub summary: Option<String>,
}

impl From<StoredRun> for RunRecord {
    fn from(r: StoredRun) -> RunRecord {
        RunRecord {
            id: r.id,
            kind: r.kind,
            trigger: r.trigger,
            started_at: r.started_at,
            finished_at: r.finished_at,
            summary: parse_result(r.summary),
        }
    }
}

/// `sql::STATUS_COUNTS` and `sql::OLDEST_DUE`.
pub(super) struct StatusCounts {
    pub by_status: Vec<(EventStatus, i64)>,
    /// `received_at` of the oldest event running or due.
    pub oldest_due: Option<i64>,
}
