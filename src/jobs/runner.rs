//! Worker pools: each pool's workers claim batches of their pool's kinds, run them in an
//! instrumented span and record the outcome event by event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::registry::{BatchRun, Registry, Runnable};
use super::retry::{Next, RetryPolicy};
use super::JobError;
use crate::fence::Fence;
use crate::store::events::{
    Claim, ClaimSpec, Event, EventId, EventStatus, EventStore, Pool, Record, RunId,
};
use crate::store::now_millis;

pub use crate::config::WorkerPools as PoolSizes;

fn pool_size(p: &PoolSizes, pool: Pool) -> usize {
    match pool {
        Pool::Messages => p.messages,
        Pool::Sync => p.sync,
        Pool::Poll => p.poll,
    }
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub pools: PoolSizes,
    pub lease: Duration,
    pub retry: RetryPolicy,
    /// How often an idle worker looks for events whose backoff ran out.
    pub idle_poll: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            pools: PoolSizes::default(),
            lease: Duration::from_secs(60),
            retry: RetryPolicy::default(),
            idle_poll: Duration::from_secs(1),
        }
    }
}

impl WorkerConfig {
    /// Pool sizes and retry horizon as configured; the other values as in production.
    pub fn from_settings(settings: &crate::config::Settings) -> WorkerConfig {
        WorkerConfig {
            pools: settings.workers,
            lease: settings.job_lease,
            retry: RetryPolicy {
                horizon: settings.retry_horizon,
                ..RetryPolicy::default()
            },
            ..WorkerConfig::default()
        }
    }
}

/// Starts every pool's workers; they stop after finishing their current batch once
/// `shutdown` fires. Their ids (what a claimed event's `locked_by` holds) start with
/// `instance` and a colon: on PostgreSQL, the instance's advisory lock tells the other
/// instances whether the process that holds a lease is still alive.
pub fn spawn_workers<C: Clone + Send + Sync + 'static>(
    events: EventStore,
    registry: Arc<Registry<C>>,
    ctx: C,
    (instance, config): (&str, WorkerConfig),
    shutdown: CancellationToken,
) -> JoinSet<()> {
    let mut set = JoinSet::new();
    for pool in Pool::ALL {
        let spec = registry.claim_spec(*pool);
        for n in 0..pool_size(&config.pools, *pool) {
            let worker = Worker {
                id: format!("{instance}:{pool}:{n}"),
                pool: *pool,
                spec: spec.clone(),
                events: events.clone(),
                registry: registry.clone(),
                ctx: ctx.clone(),
                config: config.clone(),
            };
            let shutdown = shutdown.clone();
            set.spawn(async move { worker.run(shutdown).await });
        }
    }
    set
}

struct Worker<C> {
    id: String,
    pool: Pool,
    spec: ClaimSpec,
    events: EventStore,
    registry: Arc<Registry<C>>,
    ctx: C,
    config: WorkerConfig,
}

impl<C: Clone + Send + Sync + 'static> Worker<C> {
    async fn run(self, shutdown: CancellationToken) {
        let wakers = self.events.wakers();
        let notify = wakers.pool(self.pool);
        while !shutdown.is_cancelled() {
            // Register interest before looking, so an insert between the claim and the wait
            // still wakes us.
            let mut notified = Box::pin(notify.notified());
            notified.as_mut().enable();
            match self
                .events
                .claim(&self.id, &self.spec, self.config.lease)
                .await
            {
                Ok(Claim::Batch(batch)) if !batch.is_empty() => {
                    // Not waiting while busy: a wake-up meant for an idle worker must not land
                    // here (a dropped, notified `Notified` passes it on).
                    drop(notified);
                    // There may be more ready groups: pass the wake-up on to another worker.
                    notify.notify_one();
                    self.run_batch(batch).await
                }
                Ok(idle) => {
                    // Sleep until new work, the next debounce or backoff running out, or the
                    // idle poll (a group finishing wakes us too, see `EventStore::record`).
                    let mut nap = self.config.idle_poll;
                    if let Claim::Idle {
                        next_run_at: Some(at),
                    } = idle
                    {
                        let until = Duration::from_millis((at - now_millis()).max(1) as u64);
                        nap = nap.min(until);
                    }
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep(nap) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
                Err(e) => {
                    tracing::error!(pool = %self.pool, error = %e, "claiming events failed");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
            }
        }
    }

    async fn run_batch(&self, batch: Vec<Event>) {
        let kind = batch[0].kind.clone();
        let span = tracing::info_span!(
            "job",
            %kind,
            group = %batch[0].group_key,
            events = batch.len(),
            attempts = batch.iter().map(|e| e.attempts).max().unwrap_or(1),
        );
        self.execute(kind, batch).instrument(span).await
    }

    async fn execute(&self, kind: String, batch: Vec<Event>) {
        let started = Instant::now();
        let Some(runner) = self.registry.get(&kind) else {
            let reason = format!("no job type for kind {kind:?} in this build");
            tracing::error!(%reason, "event failed for good");
            let rec = Record {
                given_up: batch
                    .iter()
                    .map(|e| (e.id, EventStatus::Failed, reason.clone()))
                    .collect(),
                ..Record::default()
            };
            self.store(rec).await;
            return;
        };
        let claimed = Claimed {
            run_id: batch[0].run_id,
            oldest: batch.iter().map(|e| e.received_at).min().unwrap_or(0),
            events: batch
                .iter()
                .map(|e| (e.id, e.attempts, e.received_at))
                .collect(),
        };
        let Some(run) = self.run_isolated(runner.as_ref(), batch).await else {
            // Its events are another worker's now (or will be, when the lease runs out):
            // recording an outcome here could undo that worker's.
            return;
        };
        metrics::histogram!("job_duration_seconds", "kind" => kind.clone())
            .record(started.elapsed().as_secs_f64());

        let mut rec = Record {
            forget_failed_payloads: !runner.keep_failed_payload(),
            ..Record::default()
        };
        for (id, reason) in &run.undecodable {
            tracing::error!(event = %id, %reason, "event failed for good");
            rec.given_up
                .push((*id, EventStatus::Failed, reason.clone()));
        }
        let ran = run.ran.len() as u64;
        let result = self.outcome(&kind, &claimed, run, &mut rec);
        metrics::counter!("events_processed_total", "kind" => kind, "result" => result)
            .increment(ran);
        self.store(rec).await;
    }

    /// Runs the batch in a task of its own with its lease renewed, so a panicking job fails
    /// this batch (retried later) instead of killing the worker and leaving its lease renewed
    /// forever. The job runs behind its lease's fence (see `crate::fence`): `None` when the
    /// lease was lost on the way, and the job was stopped or failed its next write.
    async fn run_isolated(&self, runner: &dyn Runnable<C>, batch: Vec<Event>) -> Option<BatchRun> {
        let ids: Vec<EventId> = batch.iter().map(|e| e.id).collect();
        // Attempts count claims: a second claim is a retry.
        let retried = batch.iter().any(|e| e.attempts > 1);
        let lease_ms = self.config.lease.as_millis() as i64;
        // The claim wrote a lease of this length a moment ago; writes stop a sixth of it
        // before its end.
        let fence = Fence::new(now_millis() + lease_ms, lease_ms / 6);
        let task = crate::fence::scope(
            fence.clone(),
            super::progress::scope(
                self.events.clone(),
                ids[0],
                retried,
                runner.run(self.ctx.clone(), batch),
            ),
        );
        let job = tokio::spawn(task.in_current_span());
        let heartbeat = AbortOnDrop(self.heartbeat(ids.clone(), fence.clone(), job.abort_handle()));
        let joined = job.await;
        drop(heartbeat);
        if !fence.holds_at(now_millis()) {
            metrics::counter!("jobs_abandoned_total").increment(1);
            tracing::warn!(
                events = ids.len(),
                "job abandoned: its lease was lost (another worker may be running its events); nothing recorded"
            );
            return None;
        }
        Some(match joined {
            Ok(r) => r,
            Err(e) => BatchRun {
                // The payloads were never decoded here: the type's default decides.
                forever: if runner.retry_forever_by_default() {
                    ids.clone()
                } else {
                    Vec::new()
                },
                ran: ids,
                undecodable: Vec::new(),
                outcome: Err(JobError::Retry(format!("job panicked: {e}"))),
            },
        })
    }

    /// Fills `rec` from the job's outcome; the result label for the metrics.
    fn outcome(
        &self,
        kind: &str,
        claimed: &Claimed,
        run: BatchRun,
        rec: &mut Record,
    ) -> &'static str {
        let ran = claimed
            .events
            .iter()
            .filter(|(id, ..)| run.ran.contains(id));
        match run.outcome {
            Ok(out) => {
                metrics::histogram!("event_processing_lag_seconds", "kind" => kind.to_string())
                    .record((now_millis() - claimed.oldest).max(0) as f64 / 1000.0);
                tracing::debug!("job done");
                rec.done = run.ran;
                rec.result = out.result.map(|v| v.to_string());
                rec.follow_ups = out
                    .follow_ups
                    .into_iter()
                    .map(|f| f.in_run(claimed.run_id))
                    .collect();
                "done"
            }
            Err(JobError::Permanent(reason)) => {
                tracing::error!(%reason, "job failed for good");
                for id in run.ran {
                    rec.given_up.push((id, EventStatus::Failed, reason.clone()));
                }
                "failed"
            }
            Err(JobError::Later { after, reason }) => {
                tracing::debug!(%reason, after_ms = after.as_millis() as u64, "job runs again later");
                let now = now_millis();
                for (id, _, received_at) in ran {
                    let forever = run.forever.contains(id);
                    if !forever && now - received_at >= self.config.retry.horizon.as_millis() as i64
                    {
                        rec.given_up.push((*id, EventStatus::Dead, reason.clone()));
                    } else {
                        rec.retry
                            .push((*id, now + after.as_millis() as i64, reason.clone()));
                    }
                }
                "later"
            }
            Err(JobError::Retry(reason)) => {
                self.back_off(kind, ran, &run.forever, &reason, rec);
                "retry"
            }
        }
    }

    /// A failed run: each event retried after its backoff, or dead-lettered once its retry
    /// horizon has passed.
    fn back_off<'e>(
        &self,
        kind: &str,
        ran: impl Iterator<Item = &'e (EventId, u32, i64)>,
        forever: &[EventId],
        reason: &str,
        rec: &mut Record,
    ) {
        let now = now_millis();
        let mut retried = 0;
        for (id, attempts, received_at) in ran {
            let forever = forever.contains(id);
            match self
                .config
                .retry
                .next(*attempts, *received_at, now, forever)
            {
                Next::RetryAt(at) => {
                    retried += 1;
                    rec.retry.push((*id, at, reason.to_string()));
                }
                Next::DeadLetter => {
                    metrics::counter!("events_dead_lettered_total", "kind" => kind.to_string())
                        .increment(1);
                    tracing::error!(
                        event = %id,
                        attempts,
                        %reason,
                        "event dead-lettered: its retry horizon has passed (salesbot-sync requeue-failed brings it back)"
                    );
                    rec.given_up
                        .push((*id, EventStatus::Dead, reason.to_string()));
                }
            }
        }
        if retried > 0 {
            let first = rec.retry.iter().map(|r| r.1).min().unwrap_or(now);
            tracing::warn!(%reason, events = retried, retry_in_ms = (first - now).max(0), "job failed; will retry");
        }
    }

    async fn store(&self, rec: Record) {
        if let Err(e) = self.events.record(&self.id, rec).await {
            // The lease runs out and another worker (or the next start) picks the events up.
            tracing::error!(error = %e, "recording the job result failed");
        }
    }

    /// Renews the batch's lease every third of it. A renewal that finds the lease taken, or
    /// no renewal before the fence closes (the database unreachable, or this process paused
    /// past its lease), stops the job: another worker may be running its events.
    fn heartbeat(
        &self,
        ids: Vec<EventId>,
        fence: Fence,
        job: tokio::task::AbortHandle,
    ) -> tokio::task::JoinHandle<()> {
        let events = self.events.clone();
        let worker = self.id.clone();
        let lease = self.config.lease;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(lease / 3);
            tick.tick().await;
            loop {
                tick.tick().await;
                match events.extend_lease(ids.clone(), &worker, lease).await {
                    Ok((renewed, until)) if renewed == ids.len() => fence.renewed(until),
                    Ok((renewed, _)) => {
                        tracing::warn!(
                            renewed,
                            events = ids.len(),
                            "the job's lease was taken over; stopping it"
                        );
                        fence.lose();
                    }
                    Err(e) => tracing::warn!(error = %e, "extending the event lease failed"),
                }
                if !fence.holds_at(now_millis()) {
                    fence.lose();
                    job.abort();
                    return;
                }
            }
        })
    }
}

/// What a worker claimed, as the outcome is recorded against it.
struct Claimed {
    run_id: Option<RunId>,
    /// When the oldest event of the batch was received (unix ms).
    oldest: i64,
    /// Each event: id, attempts so far, received at.
    events: Vec<(EventId, u32, i64)>,
}

/// Aborts the task when dropped (also on unwinding).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long finished rows are kept: done ones a week (their dedupe keys must outlive the
/// platforms' redelivery windows), failed and dead-lettered ones a month (operators look at
/// them; `requeue-failed` can still bring them back).
const KEEP_DONE: Duration = Duration::from_secs(7 * 24 * 3600);
const KEEP_GIVEN_UP: Duration = Duration::from_secs(30 * 24 * 3600);

/// Housekeeping: returns events with expired leases to the queue every 5 s (on PostgreSQL,
/// the jobs of an instance that died; the query is one index probe) and prunes
/// finished rows hourly, so the queue does not grow without bound.
pub fn spawn_housekeeping(
    events: EventStore,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut reap = tokio::time::interval(Duration::from_secs(5));
        let mut prune = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = reap.tick() => {
                    match events.reclaim_expired().await {
                        Ok(n) if n > 0 => tracing::warn!(events = n, "re-queued events whose lease expired"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "re-queuing expired events failed"),
                    }
                }
                _ = prune.tick() => {
                    match events.prune_finished(KEEP_DONE, KEEP_GIVEN_UP).await {
                        Ok(n) if n > 0 => tracing::info!(deleted = n, "pruned finished events"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "pruning events failed"),
                    }
                }
                _ = shutdown.cancelled() => break,
            }
        }
    })
}
