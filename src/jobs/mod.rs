//! Background processing of the event queue.
//!
//! Integrations register a `Handler` per event kind; workers claim one group of ready events at
//! a time (see `EventStore::claim_group`), run the handler for their kind and record the
//! result. The queue knows nothing about Shopify or Facebook.

pub mod scheduler;
#[cfg(feature = "testkit")]
pub mod testkit;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::store::events::{Event, EventStore, NewEvent};
use crate::store::now_millis;

/// What went wrong in a handler, and whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Temporary (platform 429/5xx, store unreachable): retried with backoff.
    #[error("{0}")]
    Retry(String),
    /// Can never succeed (unknown shop or page, malformed payload): failed with the reason.
    #[error("{0}")]
    Permanent(String),
}

#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Processes a batch of events of one kind and one group, oldest first. Returns events to
    /// enqueue in the same transaction that marks the batch done (fan-out).
    async fn handle(&self, events: Vec<Event>) -> Result<Vec<NewEvent>, JobError>;
}

#[derive(Default, Clone)]
pub struct Registry {
    handlers: HashMap<String, Arc<dyn Handler>>,
}

impl Registry {
    pub fn register(&mut self, kind: &str, handler: Arc<dyn Handler>) {
        self.handlers.insert(kind.to_string(), handler);
    }

    pub fn kinds(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.handlers.keys().map(String::as_str).collect();
        v.sort();
        v
    }
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Attempts before an event is marked failed.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    /// 2 s doubling to 1 h, 15 attempts: about five hours of trying, after which the daily
    /// poll is the safety net and the failed row keeps its reason.
    fn default() -> Self {
        RetryPolicy {
            min_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(3600),
            max_attempts: 15,
        }
    }
}

impl RetryPolicy {
    /// Delay before attempt `attempts + 1`, with jitter; `None` when attempts are used up.
    pub fn delay_after(&self, attempts: u32) -> Option<Duration> {
        if attempts >= self.max_attempts {
            return None;
        }
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
            .nth(attempts.saturating_sub(1) as usize)
    }
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub workers: usize,
    pub lease: Duration,
    pub max_batch: usize,
    pub retry: RetryPolicy,
    /// How often to look for events whose backoff ran out when nothing wakes the worker.
    pub idle_poll: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            workers: 4,
            lease: Duration::from_secs(300),
            max_batch: 500,
            retry: RetryPolicy::default(),
            idle_poll: Duration::from_secs(1),
        }
    }
}

/// Starts the workers; they stop after finishing their current batch once `shutdown` fires.
pub fn spawn_workers(
    events: EventStore,
    registry: Arc<Registry>,
    config: WorkerConfig,
    shutdown: CancellationToken,
) -> JoinSet<()> {
    let mut set = JoinSet::new();
    let instance = crate::config::random_token(6);
    for n in 0..config.workers {
        let worker = Worker {
            id: format!("{instance}-{n}"),
            events: events.clone(),
            registry: registry.clone(),
            config: config.clone(),
        };
        let shutdown = shutdown.clone();
        set.spawn(async move { worker.run(shutdown).await });
    }
    set
}

struct Worker {
    id: String,
    events: EventStore,
    registry: Arc<Registry>,
    config: WorkerConfig,
}

impl Worker {
    async fn run(self, shutdown: CancellationToken) {
        let notify = self.events.notifier();
        while !shutdown.is_cancelled() {
            // Register interest before looking, so an insert between the claim and the wait
            // still wakes us.
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self
                .events
                .claim_group(&self.id, self.config.lease, self.config.max_batch)
                .await
            {
                Ok(Some(batch)) if !batch.is_empty() => {
                    // There may be more ready groups: pass the wake-up on to another worker.
                    notify.notify_one();
                    self.run_batch(batch).await
                }
                Ok(_) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep(self.config.idle_poll) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "claiming events failed");
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
        let group = batch[0].group_key.clone();
        let ids: Vec<i64> = batch.iter().map(|e| e.id).collect();
        let attempts = batch.iter().map(|e| e.attempts).max().unwrap_or(1);
        let oldest = batch.iter().map(|e| e.received_at).min().unwrap_or(0);
        let span = tracing::info_span!("job", %kind, %group, events = ids.len(), attempts);
        let _enter = span.enter();
        drop(_enter);

        let result = match self.registry.handlers.get(&kind) {
            None => Err(JobError::Permanent(format!(
                "no handler for event kind {kind:?}"
            ))),
            Some(h) => {
                let heartbeat = AbortOnDrop(self.heartbeat(ids.clone()));
                // In a task of its own, so a panicking handler fails this batch (retried
                // later) instead of killing the worker and leaving its lease renewed forever.
                let h = h.clone();
                let r = match tokio::spawn(async move { h.handle(batch).await }).await {
                    Ok(r) => r,
                    Err(e) => Err(JobError::Retry(format!("handler panicked: {e}"))),
                };
                drop(heartbeat);
                r
            }
        };

        let store_result = match result {
            Ok(follow_ups) => {
                metrics::counter!("events_processed_total", "kind" => kind.clone(), "result" => "done")
                    .increment(ids.len() as u64);
                metrics::histogram!("event_processing_lag_seconds", "kind" => kind.clone())
                    .record((now_millis() - oldest).max(0) as f64 / 1000.0);
                tracing::debug!(parent: &span, "events processed");
                self.events.complete(ids, &self.id, follow_ups).await
            }
            Err(e) => {
                let (delay, permanent) = match &e {
                    JobError::Retry(_) => (self.config.retry.delay_after(attempts), false),
                    JobError::Permanent(_) => (None, true),
                };
                let result = if delay.is_some() { "retry" } else { "failed" };
                metrics::counter!("events_processed_total", "kind" => kind.clone(), "result" => result)
                    .increment(ids.len() as u64);
                match delay {
                    Some(d) => {
                        tracing::warn!(parent: &span, error = %e, retry_in_ms = d.as_millis() as u64, "event processing failed; will retry")
                    }
                    None => {
                        tracing::error!(parent: &span, error = %e, permanent, "event processing failed for good")
                    }
                }
                let run_at = delay.map(|d| now_millis() + d.as_millis() as i64);
                self.events.fail(ids, &self.id, e.to_string(), run_at).await
            }
        };
        if let Err(e) = store_result {
            // The lease runs out and another worker (or the next start) picks the events up.
            tracing::error!(parent: &span, error = %e, "recording the job result failed");
        }
    }

    fn heartbeat(&self, ids: Vec<i64>) -> tokio::task::JoinHandle<()> {
        let events = self.events.clone();
        let worker = self.id.clone();
        let lease = self.config.lease;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(lease / 3);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = events.extend_lease(ids.clone(), &worker, lease).await {
                    tracing::warn!(error = %e, "extending the event lease failed");
                }
            }
        })
    }
}

/// Aborts the task when dropped (also on unwinding).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Housekeeping: returns events with expired leases to the queue every 30 s and deletes
/// finished events after a week, so the inbox does not grow without bound.
pub fn spawn_pruner(
    events: EventStore,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut reap = tokio::time::interval(Duration::from_secs(30));
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = reap.tick() => {
                    match events.reclaim_expired().await {
                        Ok(n) if n > 0 => tracing::warn!(events = n, "re-queued events whose lease expired"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "re-queuing expired events failed"),
                    }
                }
                _ = tick.tick() => {
                    match events.prune_finished(Duration::from_secs(7 * 24 * 3600)).await {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    #[test]
    fn retry_delays_grow_and_stop() {
        let p = RetryPolicy {
            min_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(60),
            max_attempts: 5,
        };
        let d1 = p.delay_after(1).unwrap();
        let d4 = p.delay_after(4).unwrap();
        assert!(d1 >= Duration::from_secs(2) && d1 < Duration::from_secs(5));
        assert!(d4 >= Duration::from_secs(16), "{d4:?}");
        assert!(p.delay_after(5).is_none());
    }

    struct Flaky {
        calls: AtomicUsize,
        fail_times: usize,
        seen: Mutex<Vec<usize>>,
    }

    #[async_trait::async_trait]
    impl Handler for Flaky {
        async fn handle(&self, events: Vec<Event>) -> Result<Vec<NewEvent>, JobError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            self.seen.lock().unwrap().push(events.len());
            if n < self.fail_times {
                Err(JobError::Retry(format!("try {n}")))
            } else {
                Ok(vec![])
            }
        }
    }

    struct Broken;
    #[async_trait::async_trait]
    impl Handler for Broken {
        async fn handle(&self, _: Vec<Event>) -> Result<Vec<NewEvent>, JobError> {
            Err(JobError::Permanent("unknown page 42".into()))
        }
    }

    fn fast() -> WorkerConfig {
        WorkerConfig {
            workers: 2,
            lease: Duration::from_secs(30),
            max_batch: 100,
            retry: RetryPolicy {
                min_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(50),
                max_attempts: 4,
            },
            idle_poll: Duration::from_millis(20),
        }
    }

    async fn wait_until(q: &EventStore, f: impl Fn(&[crate::store::events::EventRow]) -> bool) {
        for _ in 0..500 {
            if f(&q.rows().await.unwrap()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition not reached: {:?}", q.rows().await.unwrap());
    }

    #[tokio::test]
    async fn retries_then_succeeds_or_fails_with_reason() {
        let dir = tempfile::tempdir().unwrap();
        let q = EventStore::open(&dir.path().join("e.db")).unwrap();
        let flaky = Arc::new(Flaky {
            calls: AtomicUsize::new(0),
            fail_times: 2,
            seen: Mutex::new(vec![]),
        });
        let mut reg = Registry::default();
        reg.register("flaky", flaky.clone());
        reg.register("broken", Arc::new(Broken));
        let stop = CancellationToken::new();
        let mut set = spawn_workers(q.clone(), Arc::new(reg), fast(), stop.clone());
        q.enqueue(NewEvent::new("flaky", "f1", "g1", vec![]))
            .await
            .unwrap();
        q.enqueue(NewEvent::new("broken", "b1", "g2", vec![]))
            .await
            .unwrap();
        q.enqueue(NewEvent::new("nobody", "n1", "g3", vec![]))
            .await
            .unwrap();
        wait_until(&q, |rows| {
            rows.iter()
                .all(|r| r.status == "done" || r.status == "failed")
        })
        .await;
        stop.cancel();
        while set.join_next().await.is_some() {}
        let rows = q.rows().await.unwrap();
        assert_eq!(rows[0].status, "done");
        assert_eq!(rows[0].attempts, 3);
        assert_eq!(rows[1].status, "failed");
        assert_eq!(rows[1].last_error.as_deref(), Some("unknown page 42"));
        assert_eq!(rows[1].attempts, 1, "permanent failures are not retried");
        assert!(rows[2]
            .last_error
            .as_deref()
            .unwrap()
            .contains("no handler"));
    }

    #[tokio::test]
    async fn exhausted_retries_mark_failed() {
        let dir = tempfile::tempdir().unwrap();
        let q = EventStore::open(&dir.path().join("e.db")).unwrap();
        let flaky = Arc::new(Flaky {
            calls: AtomicUsize::new(0),
            fail_times: 100,
            seen: Mutex::new(vec![]),
        });
        let mut reg = Registry::default();
        reg.register("flaky", flaky.clone());
        let stop = CancellationToken::new();
        let mut set = spawn_workers(q.clone(), Arc::new(reg), fast(), stop.clone());
        q.enqueue(NewEvent::new("flaky", "f1", "g1", vec![]))
            .await
            .unwrap();
        wait_until(&q, |rows| rows[0].status == "failed").await;
        stop.cancel();
        while set.join_next().await.is_some() {}
        let rows = q.rows().await.unwrap();
        assert_eq!(rows[0].attempts, 4);
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 4);
    }
}
