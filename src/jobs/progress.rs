//! Progress of the running job, for the merchant's pages (`store::events::progress`).
//!
//! The runner puts the claimed event in a task-local before the job runs, so deep inside a
//! sync `progress::report(done, total)` needs no handle passed down. Reports are throttled
//! (a 100,000-product sync reads thousands of pages) and never fail the job: progress is for
//! display only.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::events::{EventId, EventStore};

/// At most one progress write per job this often.
const EVERY: Duration = Duration::from_millis(250);

#[derive(Clone)]
struct Reporter {
    events: EventStore,
    event: EventId,
    last: Arc<Mutex<Option<Instant>>>,
    /// Whether an event of the batch ran before without finishing (a failure, or a process
    /// that died holding it).
    retried: bool,
}

tokio::task_local! {
    static CURRENT: Reporter;
}

/// Runs `job` with `event` as the job whose progress `report` records.
pub(super) fn scope<F: Future>(
    events: EventStore,
    event: EventId,
    retried: bool,
    job: F,
) -> impl Future<Output = F::Output> {
    CURRENT.scope(
        Reporter {
            events,
            event,
            last: Arc::new(Mutex::new(None)),
            retried,
        },
        job,
    )
}

/// Whether the running job's batch holds an event that ran before without finishing: work it
/// did then (and recorded) may not have reached its end, so the job redoes what depends on it.
pub fn is_retry() -> bool {
    CURRENT.try_with(|r| r.retried).unwrap_or(false)
}

/// Records that the running job has read `done` of `total` items (throttled).
pub async fn report(done: u64, total: Option<u64>) {
    let Ok(r) = CURRENT.try_with(Reporter::clone) else {
        return; // not inside a job (e.g. a direct call in a test)
    };
    {
        let mut last = r.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < EVERY) {
            return;
        }
        *last = Some(Instant::now());
    }
    let total = total.map(|t| t as i64);
    if let Err(e) = r.events.report_progress(r.event, done as i64, total).await {
        tracing::debug!(error = %e, "progress not recorded");
    }
}
