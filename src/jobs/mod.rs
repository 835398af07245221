//! Every unit of work is a typed job on the durable queue (SPEC §9).
//!
//! A job is a Rust type (`Job`): its kind, worker pool, dedupe key and group key come from
//! the type, its payload is the type itself (serde), and its `run` receives the decoded batch.
//! Types are registered by type (`Registry::register::<J>()`); workers of each pool claim one
//! group at a time (jobs of one shop, page or conversation never run concurrently, in any
//! process) and record the outcome with per-event retry semantics (`retry`).
//!
//! The runtime knows no kind of job: each type declares its `KIND` (the text stored in the
//! queue's `kind` column) and the application registers its types (`startup::registry`).
//!
//! The model follows crates.io's `crates_io_worker` (`BackgroundJob`: name, typed payload,
//! dedupe declared on the type, registration by type, an instrumented span per run) and svix's
//! typed queue tasks.

mod keys;
mod lock;
pub mod progress;
mod registry;
pub mod retry;
mod runner;
pub mod scheduler;

use std::future::Future;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

pub use keys::{DedupeKey, GroupKey};
pub use lock::{lock_queue, QueueHeld};
pub use registry::Registry;
pub use retry::RetryPolicy;
pub use runner::{spawn_housekeeping, spawn_workers, PoolSizes, WorkerConfig};

use crate::store::events::{EnqueueError, NewEvent, Pool};
use crate::store::{now_millis, StoreError};

/// What went wrong in a job, and whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Temporary (platform 429/5xx, store unreachable, network): retried with backoff until
    /// the retry horizon, then dead-lettered (never for `RETRY_FOREVER` jobs).
    #[error("{0}")]
    Retry(String),
    /// Can never succeed (unknown shop or page, invalid id): failed at once with the reason.
    #[error("{0}")]
    Permanent(String),
    /// Nothing is wrong, the job is just early (e.g. waiting for another job's result): run
    /// again after `after`. Not counted as a failure.
    #[error("{reason}")]
    Later { after: Duration, reason: String },
}

/// Why a delivery (a platform's webhook, a test delivery) was not taken into the queue.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// Not a delivery that is taken (malformed, or failing a check of its content).
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Enqueue(#[from] EnqueueError),
}

/// A finished run's follow-up jobs (committed with its completion) and result (stored with
/// the event, read by whoever waits for it: the callbacks, `salesbot-sync poll`).
#[derive(Debug, Default)]
pub struct JobOutput {
    pub(crate) follow_ups: Vec<NewEvent>,
    pub(crate) result: Option<Value>,
}

impl JobOutput {
    pub fn done() -> JobOutput {
        JobOutput::default()
    }

    pub fn with_result(mut self, result: impl Serialize) -> JobOutput {
        self.result = serde_json::to_value(result).ok();
        self
    }

    /// Queues `job` when this run completes (in the same transaction).
    pub fn then<J: Job>(mut self, job: &J) -> JobOutput {
        self.follow_ups.push(job.to_event());
        self
    }

    pub fn then_events(mut self, events: impl IntoIterator<Item = NewEvent>) -> JobOutput {
        self.follow_ups.extend(events);
        self
    }
}

/// One kind of work. Implementors are plain serde types; everything the queue needs to know
/// about them is declared here.
pub trait Job: Serialize + DeserializeOwned + Send + Sync + Sized + 'static {
    /// The text stored in the queue's `kind` column: never renamed (queued rows would find
    /// no type), unique among registered types (`Registry::register` checks).
    const KIND: &'static str;
    /// The worker pool that runs it.
    const POOL: Pool;
    /// Most jobs of one group handed to one run (1: no coalescing).
    const MAX_BATCH: usize = 1;
    /// Wait before the first run, so a burst for one object becomes one run (debounce).
    const DELAY: Duration = Duration::ZERO;
    /// Compliance work (data deletion, redaction): retryable failures never dead-letter.
    const RETRY_FOREVER: bool = false;
    /// Whether a job that failed for good keeps its payload (for `requeue-failed` and for
    /// operators). Jobs whose payload is a person's message that can never be stored drop it.
    const KEEP_FAILED_PAYLOAD: bool = true;

    /// What the job runs with (the application state).
    type Context: Clone + Send + Sync + 'static;

    /// A second job with the same key is a no-op while the first is known (7 days).
    fn dedupe_key(&self) -> DedupeKey;

    /// Jobs of one group never run concurrently.
    fn group(&self) -> GroupKey;

    /// This job's wait before its first run (by default `DELAY`).
    fn delay(&self) -> Duration {
        Self::DELAY
    }

    /// Whether this job is compliance work that never dead-letters (by default
    /// `RETRY_FOREVER`).
    fn retry_forever(&self) -> bool {
        Self::RETRY_FOREVER
    }

    /// Runs a batch of jobs of one group, oldest first (one job unless `MAX_BATCH` > 1).
    fn run(
        ctx: &Self::Context,
        batch: Vec<Self>,
    ) -> impl Future<Output = Result<JobOutput, JobError>> + Send;

    /// The queue row for this job.
    fn to_event(&self) -> NewEvent {
        NewEvent {
            kind: Self::KIND,
            pool: Self::POOL,
            dedupe_key: self.dedupe_key().into_string(),
            group_key: self.group().into_string(),
            // A derived `Serialize` of plain data cannot fail.
            payload: serde_json::to_vec(self).unwrap_or_default(),
            run_at: Some(self.delay())
                .filter(|d| !d.is_zero())
                .map(|d| now_millis() + d.as_millis() as i64),
            run_id: None,
        }
    }
}

#[cfg(test)]
mod tests;
