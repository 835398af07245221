//! Building and running the service: `Application::build` → `port()` → `run_until_stopped()`.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::jobs::scheduler::CronJob;
use crate::jobs::{self, Registry, WorkerConfig};
use crate::state::AppState;

/// How long shutdown waits for running jobs before leaving them to the next start.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

pub struct Application {
    /// SQLite: the lock that makes this the one server of the queue file (PostgreSQL: none,
    /// every instance works the shared queue).
    _queue_lock: Option<std::fs::File>,
    /// PostgreSQL: the shared lock that tells offline commands an instance is running.
    _instance: Option<crate::store::postgres::InstanceGuard>,
    listener: TcpListener,
    port: u16,
    state: AppState,
    shutdown: CancellationToken,
    worker_config: WorkerConfig,
}

/// Every job type the service runs. Integrations add their types here; the queue itself
/// stays unaware of them.
pub fn registry() -> Registry<AppState> {
    use crate::facebook::{deletion, jobs as fb, moves, selftest};
    use crate::shopify::jobs as shop;
    let mut reg = Registry::default();
    reg.register::<shop::ShopifyWebhook>()
        .register::<shop::ShopifySync>()
        .register::<shop::ShopifySubscriptionCheck>()
        .register::<crate::shopify::lifecycle::ShopDisconnect>()
        .register::<fb::FacebookDelivery>()
        .register::<fb::FacebookMessage>()
        .register::<fb::PageRefresh>()
        .register::<fb::PagePoll>()
        .register::<fb::ConversationPoll>()
        .register::<fb::PageSubscriptionCheck>()
        .register::<selftest::SelfTestCleanup>()
        .register::<deletion::DataDeletion>()
        .register::<moves::MovedPageCleanup>()
        .register::<crate::facebook::disconnect::PageDisconnect>();
    #[cfg(feature = "testkit")]
    reg.register::<crate::testkit::TestkitDelivery>()
        .register::<crate::testkit::TestkitEffect>();
    reg
}

/// The cron's work: a poll run per `POLL_SCHEDULE` tick (on one instance of several), and a
/// backup per `BACKUP_SCHEDULE` tick of this instance's SQLite files.
fn cron(state: &AppState) -> Vec<CronJob> {
    let poll = state.clone();
    let mut jobs = vec![CronJob::on_one_instance(
        "poll",
        &state.config.poll_schedule,
        move || {
            let state = poll.clone();
            async move { crate::poll::run_scheduled(&state).await }
        },
    )];
    // On PostgreSQL the database's own backups apply (see `salesbot-sync backup`), so no
    // backup job is scheduled.
    if !state.config.shared_database() {
        let backup = state.clone();
        jobs.push(CronJob::on_every_instance(
            "backup",
            &state.config.backup_schedule,
            move || {
                let state = backup.clone();
                async move { crate::backup::run_scheduled(&state.config, &state.objects).await }
            },
        ));
    }
    jobs
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        Self::build_with(settings, |_| {}).await
    }

    /// As `build`, with the worker configuration (pool sizes and retry horizon from the
    /// settings) adjusted by `tune` (tests shorten delays).
    pub async fn build_with(
        settings: Settings,
        tune: impl FnOnce(&mut WorkerConfig),
    ) -> anyhow::Result<Application> {
        let mut worker_config = WorkerConfig::from_settings(&settings);
        tune(&mut worker_config);
        log_startup_warnings(&settings);
        crate::routes::metrics::install();
        let addr = settings.bind_addr;
        // One server per queue file: re-queuing "running" events is only safe when no other
        // server is working on them. The lock is released when the process ends. On
        // PostgreSQL several instances share the queue (claims lock rows, leases expire).
        let queue_lock = if settings.shared_database() {
            None
        } else {
            Some(jobs::lock_queue(&settings.events_db_path)?)
        };
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        let port = listener.local_addr()?.port();
        let stores = crate::state::Stores::open(&settings).await?;
        let catalog_replaced = stores.catalog_replaced.is_some();
        let state = AppState::with_stores(settings, stores)?;
        let instance = match &state.postgres {
            Some(pg) => Some(pg.running_instance(&state.instance).await?),
            None => None,
        };
        check_token_key(&state).await?;
        let recovered = state.events.recover_orphans().await?;
        if recovered > 0 {
            tracing::warn!(
                events = recovered,
                "re-queued events left running by a previous process"
            );
        }
        let deletions = crate::facebook::deletion::resume_pending(&state).await?;
        if deletions > 0 {
            tracing::info!(deletions, "data deletion requests not done yet are queued");
        }
        if catalog_replaced {
            refill_catalog(&state).await?;
        }
        Ok(Application {
            _queue_lock: queue_lock,
            _instance: instance,
            listener,
            port,
            state,
            shutdown: CancellationToken::new(),
            worker_config,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Cancelling this token stops the service as SIGTERM would.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until SIGINT/SIGTERM (or the shutdown token): stops accepting, lets in-flight
    /// requests finish, then lets workers finish their current batch.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Application {
            _queue_lock,
            _instance,
            listener,
            port,
            state,
            shutdown,
            worker_config,
        } = self;
        let registry = Arc::new(registry());
        let signalled = shutdown_signal();
        tracing::info!(
            port,
            storage = state.objects.backend_name(),
            kinds = ?registry.kinds(),
            "salesbot-sync listening"
        );
        let worker_stop = CancellationToken::new();
        let mut workers: JoinSet<()> = jobs::spawn_workers(
            state.events.clone(),
            registry,
            state.clone(),
            (&state.instance, worker_config),
            worker_stop.clone(),
        );
        let pruner = jobs::spawn_housekeeping(state.events.clone(), worker_stop.clone());
        let mut scheduler =
            jobs::scheduler::start(state.ticks.clone(), state.instance.clone(), cron(&state))
                .await?;
        crate::poll::spawn_run_watcher(state.clone(), worker_stop.clone());
        tracing::info!(
            poll = %state.config.poll_schedule,
            backup = %state.config.backup_schedule,
            "scheduler started (UTC)"
        );

        let limits = state.config.edge.clone();
        let router = crate::routes::router(state);
        let stop = shutdown.clone();
        let served = serve(listener, router, &limits, async move {
            tokio::select! {
                _ = signalled => {}
                _ = stop.cancelled() => {}
            }
            tracing::info!("shutting down: finishing in-flight requests");
        })
        .await;

        worker_stop.cancel();
        if let Err(e) = scheduler.shutdown().await {
            tracing::warn!(error = %e, "stopping the scheduler failed");
        }
        let _ = pruner.await;
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while workers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("jobs still running after the grace period; they resume at next start");
            workers.abort_all();
        }
        tracing::info!("stopped");
        served.map_err(Into::into)
    }
}

/// The answer to a connection over `HTTP_MAX_CONNECTIONS`, written without waiting (the socket
/// is new, so its send buffer is empty) and followed by a close.
const AT_CAPACITY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
retry-after: 1\r\nconnection: close\r\ncontent-length: 58\r\n\r\n\
{\"status\":\"error\",\"message\":\"too many connections; retry\"}";

/// How often refusals at the connection cap are logged (each one is counted).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Accepts and serves connections until `stop` resolves, then stops accepting and waits for
/// the connections to finish their in-flight requests.
///
/// Our own loop rather than `axum::serve`, which exposes neither hyper's header-read timeout
/// nor a connection cap: a client that dribbles its request head is closed after
/// `HTTP_HEADER_TIMEOUT_SECS`, and past `HTTP_MAX_CONNECTIONS` new connections are refused.
async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: &crate::config::EdgeSettings,
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt as _;

    // HTTP/1 only, as axum::serve was with axum's default features: nginx speaks HTTP/1.1 to
    // us, and HTTP/2 would need timeouts of its own.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut last_refusal_log = None;
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning, as
                    // axum::serve does.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics::counter!("http_connections_refused_total").increment(1);
            // Once per interval, not per connection: a flood must not become a log flood.
            if last_refusal_log.is_none_or(|t: std::time::Instant| t.elapsed() >= REFUSAL_LOG_EVERY)
            {
                last_refusal_log = Some(std::time::Instant::now());
                tracing::warn!(
                    limit = limits.max_connections,
                    "refusing connections: HTTP_MAX_CONNECTIONS reached (count in http_connections_refused_total)"
                );
            }
            let _ = stream.try_write(AT_CAPACITY);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
            // Handlers and the rate limiter read the peer the usual axum way.
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            router.clone().oneshot(req)
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// After a corrupt catalogue was replaced by an empty one: the scheduled poll's run now rather
/// than at its next tick, which reads every shop in full (their generation is 0). Waiting for
/// webhooks would not do: the full sync a change asks for is the shop's initial sync, which the
/// queue still remembers as done for a week and so does not run again.
async fn refill_catalog(state: &AppState) -> anyhow::Result<()> {
    use crate::store::events::RunTrigger;
    let (run, jobs) = crate::poll::start(
        state,
        crate::poll::Target::Everything,
        RunTrigger::Schedule,
        Duration::ZERO,
    )
    .await?;
    tracing::info!(%run, jobs, "poll run queued to rebuild the catalogue");
    Ok(())
}

/// Refuses to start on a `TOKEN_ENCRYPTION_KEY` that decrypts none of the stored tokens it
/// tries (a few shops and pages): typically `rotate-key` ran and the key in the environment is
/// still the old one, or the key was changed without `rotate-key`. Serving on it would store
/// every new connection's tokens under a second key beside the existing ones. A generated
/// development key is not checked (its tokens are known to be lost at each restart).
async fn check_token_key(state: &AppState) -> anyhow::Result<()> {
    use crate::store::StoreError;
    const SAMPLE: usize = 3;
    if state
        .config
        .generated_secrets
        .contains(&"TOKEN_ENCRYPTION_KEY")
    {
        return Ok(());
    }
    let tokens = &state.tokens;
    let mut unreadable = 0;
    for shop in tokens.active_shops().await?.into_iter().take(SAMPLE) {
        match tokens.shop(&shop).await {
            Ok(_) => return Ok(()),
            Err(StoreError::Cipher(_)) => unreadable += 1,
            Err(e) => return Err(e.into()),
        }
    }
    for page in tokens.active_pages().await?.into_iter().take(SAMPLE) {
        match tokens.page(&page).await {
            Ok(_) => return Ok(()),
            Err(StoreError::Cipher(_)) => unreadable += 1,
            Err(e) => return Err(e.into()),
        }
    }
    if unreadable > 0 {
        anyhow::bail!(
            "TOKEN_ENCRYPTION_KEY does not decrypt the stored tokens ({unreadable} tried): if \
             rotate-key ran, set TOKEN_ENCRYPTION_KEY to the key it rotated to; not starting, \
             so that no new token is stored under a second key"
        );
    }
    Ok(())
}

fn log_startup_warnings(settings: &Settings) {
    for name in &settings.generated_secrets {
        tracing::warn!(
            variable = name,
            "{name} is not set: using a throw-away value for this run only (development). \
             Tokens stored now cannot be decrypted after a restart; set it in .env"
        );
    }
    for w in &settings.warnings {
        tracing::warn!("{w}");
    }
    if let Some(shopify) = &settings.shopify {
        if settings.edge.callback_timeout <= shopify.initial_sync_wait {
            tracing::warn!(
                "HTTP_CALLBACK_TIMEOUT_SECS is not longer than SHOPIFY_INITIAL_SYNC_WAIT_SECS: \
                 Shopify callbacks that wait for the initial sync are cut off with 503"
            );
        }
    }
    if settings.shopify.is_none() {
        tracing::info!("Shopify is off: set SHOPIFY_API_KEY and SHOPIFY_API_SECRET to enable it");
    }
    if settings.facebook.is_none() {
        tracing::info!(
            "Facebook is off: set FACEBOOK_APP_ID, FACEBOOK_APP_SECRET and FACEBOOK_VERIFY_TOKEN to enable it"
        );
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled: a SIGTERM that arrives just after "listening" is logged (before the
/// accept loop polls this) must still mean a graceful stop, not the default kill.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let handlers = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let (mut int, mut term) = handlers;
            let int = async move {
                match int.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let term = async move {
                match term.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = int => {}
                _ = term => {}
            }
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// The kinds are the text stored in the queue's `kind` column: renaming one would leave
    /// rows queued before an upgrade with no job type to run them.
    #[test]
    fn job_kinds_keep_the_text_stored_in_queued_rows() {
        let mut kinds = super::registry().kinds();
        kinds.retain(|k| !k.starts_with("testkit"));
        assert_eq!(
            kinds,
            [
                "facebook",
                "facebook_conversation_poll",
                "facebook_data_deletion",
                "facebook_message",
                "facebook_page",
                "facebook_page_disconnect",
                "facebook_page_moved",
                "facebook_page_poll",
                "facebook_self_test",
                "facebook_subscriptions",
                "shopify",
                "shopify_disconnect",
                "shopify_subscriptions",
                "shopify_sync",
            ]
        );
    }
}
