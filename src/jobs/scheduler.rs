//! The in-process cron (tokio-cron-scheduler). It knows no job kind: the composition
//! (`startup`) hands it what to run on which schedule — a poll run at `POLL_SCHEDULE`, a
//! backup at `BACKUP_SCHEDULE` — and whether one instance of several runs each tick (claimed in
//! `store::ticks`) or every instance does. A run still going when its next tick fires makes
//! that tick a no-op, so runs never pile up.

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::Mutex;
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::store::ticks::TickStore;

type Run = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// What runs at each tick of a cron schedule.
pub struct CronJob {
    name: &'static str,
    schedule: String,
    /// Whether the instances sharing a database claim each tick, so one of them runs it.
    claimed: bool,
    run: Run,
}

impl CronJob {
    /// Work that one instance of several does per tick (a poll run queues jobs for everyone).
    pub fn on_one_instance<F, Fut>(name: &'static str, schedule: &str, run: F) -> CronJob
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        CronJob {
            name,
            schedule: schedule.to_string(),
            claimed: true,
            run: Arc::new(move || Box::pin(run())),
        }
    }

    /// Work every instance does per tick (of its own files).
    pub fn on_every_instance<F, Fut>(name: &'static str, schedule: &str, run: F) -> CronJob
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        CronJob {
            claimed: false,
            ..CronJob::on_one_instance(name, schedule, run)
        }
    }
}

/// Registers the jobs and starts the cron; `ticks` and `instance` claim the ticks of claimed
/// jobs. Keep the returned scheduler alive; `shutdown` it on exit.
pub async fn start(
    ticks: TickStore,
    instance: Arc<str>,
    jobs: Vec<CronJob>,
) -> anyhow::Result<JobScheduler> {
    let sched = JobScheduler::new().await?;
    for job in jobs {
        let CronJob {
            name,
            schedule,
            claimed,
            run,
        } = job;
        let job = if claimed {
            let cron = parse(&schedule)?;
            let (ticks, instance) = (ticks.clone(), instance.clone());
            guarded_job(&schedule, name, move || {
                let (ticks, instance, cron, run) =
                    (ticks.clone(), instance.clone(), cron.clone(), run.clone());
                async move {
                    if claim_tick(&ticks, &instance, name, &cron).await {
                        run().await
                    }
                }
            })?
        } else {
            guarded_job(&schedule, name, move || run())?
        };
        sched.add(job).await?;
    }
    sched.start().await?;
    Ok(sched)
}

fn parse(schedule: &str) -> anyhow::Result<croner::Cron> {
    Ok(croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .build()
        .parse(schedule)?)
}

/// Whether this instance runs the tick that is firing now (see `store::ticks`). The tick is
/// named by its scheduled time, the latest occurrence of the cron at most half a second from
/// now, which every instance computes the same whatever its timer's jitter.
async fn claim_tick(
    ticks: &TickStore,
    instance: &str,
    job: &'static str,
    cron: &croner::Cron,
) -> bool {
    let soon = chrono::Utc::now() + chrono::Duration::milliseconds(500);
    let Ok(tick) = cron.find_previous_occurrence(&soon, true) else {
        return false;
    };
    match ticks.claim(job, tick.timestamp(), instance).await {
        Ok(true) => true,
        Ok(false) => {
            tracing::debug!(job, tick = %tick, "tick taken by another instance");
            false
        }
        Err(e) => {
            // Running it anyway could run it twice; the next tick comes.
            tracing::error!(job, error = %e, "tick could not be claimed; skipped");
            false
        }
    }
}

/// A cron job whose runs never overlap: a tick that finds the previous run going is skipped.
fn guarded_job<F, Fut>(schedule: &str, name: &'static str, run: F) -> anyhow::Result<Job>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let running = Arc::new(Mutex::new(()));
    let run = Arc::new(run);
    Ok(Job::new_async(schedule, move |_id, _sched| {
        let running = running.clone();
        let run = run.clone();
        Box::pin(async move {
            let Ok(_guard) = running.try_lock() else {
                tracing::warn!(job = name, "previous run still going; this tick is skipped");
                return;
            };
            run().await;
        })
    })?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_never_overlap() {
        let active = Arc::new(AtomicUsize::new(0));
        let max_active = Arc::new(AtomicUsize::new(0));
        let runs = Arc::new(AtomicUsize::new(0));
        let (a, m, r) = (active.clone(), max_active.clone(), runs.clone());
        let job = guarded_job("* * * * * *", "test", move || {
            let (a, m, r) = (a.clone(), m.clone(), r.clone());
            async move {
                let now = a.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                r.fetch_add(1, Ordering::SeqCst);
                // Longer than the one-second schedule.
                tokio::time::sleep(Duration::from_millis(2500)).await;
                a.fetch_sub(1, Ordering::SeqCst);
            }
        })
        .unwrap();
        let mut sched = JobScheduler::new().await.unwrap();
        sched.add(job).await.unwrap();
        sched.start().await.unwrap();
        tokio::time::sleep(Duration::from_millis(5500)).await;
        sched.shutdown().await.unwrap();
        assert_eq!(max_active.load(Ordering::SeqCst), 1, "two runs overlapped");
        let n = runs.load(Ordering::SeqCst);
        assert!(
            (1..=3).contains(&n),
            "{n} runs in 5.5 s of a 2.5 s job ticking every second"
        );
    }

    /// What the composition hands over runs at its ticks, claimed or not (a single instance on
    /// SQLite claims every tick).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn handed_over_jobs_run_at_their_ticks() {
        let ticks = TickStore::sqlite();
        let claimed = Arc::new(AtomicUsize::new(0));
        let everywhere = Arc::new(AtomicUsize::new(0));
        let (c, e) = (claimed.clone(), everywhere.clone());
        let jobs = vec![
            CronJob::on_one_instance("claimed", "* * * * * *", move || {
                let c = c.clone();
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                }
            }),
            CronJob::on_every_instance("everywhere", "* * * * * *", move || {
                let e = e.clone();
                async move {
                    e.fetch_add(1, Ordering::SeqCst);
                }
            }),
        ];
        let mut sched = start(ticks, Arc::from("test"), jobs).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        sched.shutdown().await.unwrap();
        assert!(claimed.load(Ordering::SeqCst) >= 1, "the claimed job ran");
        assert!(everywhere.load(Ordering::SeqCst) >= 1, "the other job ran");
    }

    #[tokio::test]
    async fn a_bad_schedule_is_refused() {
        let ticks = TickStore::sqlite();
        let job = CronJob::on_one_instance("bad", "not a schedule", || async {});
        assert!(start(ticks, Arc::from("test"), vec![job]).await.is_err());
    }
}
