//! The in-process cron (tokio-cron-scheduler): `POLL_SCHEDULE` queues a poll run (one job per
//! shop and page, spread over `POLL_WINDOW_MINUTES`, plus the daily subscription checks),
//! `BACKUP_SCHEDULE` backs up the databases. An account whose previous poll is still queued
//! or running is left out of the next tick's run, so polls never pile up behind a failing
//! account. Finished poll runs get their summary line from a watcher every few seconds.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::Mutex;
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::config::StorageSettings;
use crate::state::AppState;

/// Registers and starts both jobs. Keep the returned scheduler alive; `shutdown` it on exit.
pub async fn start(
    state: AppState,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<JobScheduler> {
    let sched = JobScheduler::new().await?;
    let poll_state = state.clone();
    let poll_cron = parse(&state.config.poll_schedule)?;
    sched
        .add(guarded_job(
            &state.config.poll_schedule,
            "poll",
            move || {
                let (state, cron) = (poll_state.clone(), poll_cron.clone());
                async move {
                    if claim_tick(&state, "poll", &cron).await {
                        run_poll(&state).await
                    }
                }
            },
        )?)
        .await?;
    // Backups are of this instance's SQLite files; on PostgreSQL the database's own backups
    // apply (see `salesbot-sync backup`), so no backup job is scheduled.
    if !state.config.shared_database() {
        let backup_state = state.clone();
        sched
            .add(guarded_job(
                &state.config.backup_schedule,
                "backup",
                move || {
                    let state = backup_state.clone();
                    async move { run_backup(&state).await }
                },
            )?)
            .await?;
    }
    sched.start().await?;
    spawn_run_watcher(state.clone(), stop);
    tracing::info!(
        poll = %state.config.poll_schedule,
        backup = %state.config.backup_schedule,
        "scheduler started (UTC)"
    );
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
async fn claim_tick(state: &AppState, job: &'static str, cron: &croner::Cron) -> bool {
    let soon = chrono::Utc::now() + chrono::Duration::milliseconds(500);
    let Ok(tick) = cron.find_previous_occurrence(&soon, true) else {
        return false;
    };
    match state
        .ticks
        .claim(job, tick.timestamp(), &state.instance)
        .await
    {
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

/// One scheduled poll tick: queues the run (accounts whose previous poll is still going are
/// left out of it, see `poll::start`).
pub async fn run_poll(state: &AppState) {
    use crate::store::events::RunTrigger;
    match crate::poll::start(
        state,
        crate::poll::Target::Everything,
        RunTrigger::Schedule,
        state.config.poll_window,
    )
    .await
    {
        Ok((run, jobs)) => tracing::info!(
            %run,
            jobs,
            window_minutes = state.config.poll_window.as_secs() / 60,
            "poll run queued"
        ),
        Err(e) => tracing::error!(error = %e, "poll run could not start"),
    }
}

/// Logs each poll run's summary once its last job has finished (see `poll::finish_runs`).
fn spawn_run_watcher(state: AppState, stop: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            if let Err(e) = crate::poll::finish_runs(&state).await {
                tracing::warn!(error = %e, "summarising poll runs failed");
            }
        }
    });
}

/// One scheduled backup; the copies go to the object store too when Spaces is configured.
pub async fn run_backup(state: &AppState) {
    let remote =
        matches!(state.config.storage, StorageSettings::Spaces(_)).then_some(&state.objects);
    let outcome = crate::backup::backup_all(&state.config, remote).await;
    crate::backup::record_outcome(&state.config.backup_dir, outcome.as_ref());
    match outcome {
        Ok(report) => tracing::info!("{}", report.summary()),
        Err(e) => {
            metrics::counter!("backup_failures_total").increment(1);
            tracing::error!(error = format!("{e:#}"), "backup failed")
        }
    }
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
}
