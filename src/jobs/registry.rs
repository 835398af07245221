//! Job types registered by type; the runner looks a claimed row's kind up here and gets back a
//! typed runner that decodes each payload and calls the type's `run`.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use futures::future::BoxFuture;

use super::{Job, JobError, JobOutput};
use crate::store::events::{ClaimSpec, Event, EventId, Pool};

/// What became of a claimed batch.
pub(super) struct BatchRun {
    /// Events whose payload decoded and that were handed to the job.
    pub ran: Vec<EventId>,
    /// Those of `ran` that never dead-letter (compliance work).
    pub forever: Vec<EventId>,
    /// Events whose payload did not decode, with the reason. They fail on their own: their
    /// batch-mates still run.
    pub undecodable: Vec<(EventId, String)>,
    pub outcome: Result<JobOutput, JobError>,
}

pub(super) trait Runnable<C>: Send + Sync {
    fn pool(&self) -> Pool;
    fn max_batch(&self) -> usize;
    fn keep_failed_payload(&self) -> bool;
    fn retry_forever_by_default(&self) -> bool;
    fn run(&self, ctx: C, events: Vec<Event>) -> BoxFuture<'static, BatchRun>;
}

struct Typed<J>(PhantomData<fn() -> J>);

impl<J: Job> Runnable<J::Context> for Typed<J> {
    fn pool(&self) -> Pool {
        J::POOL
    }

    fn max_batch(&self) -> usize {
        J::MAX_BATCH
    }

    fn keep_failed_payload(&self) -> bool {
        J::KEEP_FAILED_PAYLOAD
    }

    fn retry_forever_by_default(&self) -> bool {
        J::RETRY_FOREVER
    }

    fn run(&self, ctx: J::Context, events: Vec<Event>) -> BoxFuture<'static, BatchRun> {
        Box::pin(async move {
            let mut ran = Vec::with_capacity(events.len());
            let mut forever = Vec::new();
            let mut jobs = Vec::with_capacity(events.len());
            let mut undecodable = Vec::new();
            for e in events {
                match serde_json::from_slice::<J>(&e.payload) {
                    Ok(job) => {
                        if job.retry_forever() {
                            forever.push(e.id);
                        }
                        ran.push(e.id);
                        jobs.push(job);
                    }
                    Err(err) => undecodable.push((
                        e.id,
                        format!("{} payload could not be decoded: {err}", J::KIND),
                    )),
                }
            }
            let outcome = if jobs.is_empty() {
                Ok(JobOutput::done())
            } else {
                J::run(&ctx, jobs).await
            };
            BatchRun {
                ran,
                forever,
                undecodable,
                outcome,
            }
        })
    }
}

/// The job types a process runs, by kind.
pub struct Registry<C> {
    runners: HashMap<&'static str, Arc<dyn Runnable<C>>>,
}

impl<C> Default for Registry<C> {
    fn default() -> Self {
        Registry {
            runners: HashMap::new(),
        }
    }
}

impl<C: Clone + Send + Sync + 'static> Registry<C> {
    /// Registers a job type. Two types claiming one kind is a programming error.
    pub fn register<J: Job<Context = C>>(&mut self) -> &mut Self {
        let previous = self
            .runners
            .insert(J::KIND, Arc::new(Typed::<J>(PhantomData)));
        assert!(previous.is_none(), "job kind {} registered twice", J::KIND);
        self
    }

    pub fn kinds(&self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = self.runners.keys().copied().collect();
        v.sort();
        v
    }

    pub(super) fn get(&self, kind: &str) -> Option<Arc<dyn Runnable<C>>> {
        self.runners.get(kind).cloned()
    }

    /// What a worker of `pool` claims.
    pub(super) fn claim_spec(&self, pool: Pool) -> ClaimSpec {
        ClaimSpec {
            pool,
            max_batch: Arc::new(
                self.runners
                    .iter()
                    .filter(|(_, r)| r.pool() == pool)
                    .map(|(k, r)| (*k, r.max_batch()))
                    .collect(),
            ),
        }
    }
}
