//! Command line (SPEC §6). Exit codes: 0 ok; 1 the command failed; 2 bad configuration or usage
//! (including `rotate-key` or `restore` while a server holds the queue, and `rotate-key` while
//! the queue shows recent work).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Settings;
use crate::startup::Application;

#[derive(Parser, Debug)]
#[command(
    name = "salesbot-sync",
    version,
    about = "Keeps Shopify store data and Facebook Page / Messenger conversations fresh in S3-compatible storage",
    long_about = "Keeps Shopify store data and Facebook Page / Messenger conversations fresh in \
                  S3-compatible storage (DigitalOcean Spaces), per merchant.\n\n\
                  Configuration comes from the environment and an optional .env file; \
                  see `salesbot-sync check-config`."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP service, the event workers and the scheduler (the default).
    Serve,
    /// Print the effective configuration with secrets masked, and check it.
    CheckConfig,
    /// Back up every database (SQLite online backup) into BACKUP_DIR, verify, prune to
    /// BACKUP_KEEP, and upload to the object store's backups/ when Spaces is configured.
    Backup,
    /// Verify a backup set and swap it in (the current databases are saved first). Refuses
    /// while a server runs on the same databases: stop it first.
    Restore {
        /// A backup set folder, e.g. ./backups/20261122T033000Z
        #[arg(long = "from", value_name = "DIR")]
        from: std::path::PathBuf,
    },
    /// Copy every SQLite store (tokens stay encrypted, pending events kept) into the empty
    /// PostgreSQL database DATABASE_URL names, and verify the counts: the upgrade path to
    /// several instances. Stop the SQLite server first.
    CopyToPostgres,
    /// Put every failed and dead-lettered event back in the queue with fresh attempts and a
    /// fresh retry horizon (e.g. after a long outage).
    RequeueFailed,
    /// Re-encrypt every stored token with NEW_TOKEN_ENCRYPTION_KEY (refuses while the service
    /// runs: stop it first, then set TOKEN_ENCRYPTION_KEY to the new key and start it again).
    RotateKey,
    /// See it work with no accounts: the real service against simulated Shopify and Facebook
    /// on this machine, data under --dir, and a link to open in a browser.
    #[cfg(feature = "demo")]
    Demo {
        /// Port to serve on (0: any free port).
        #[arg(long, default_value_t = 5000)]
        port: u16,
        /// Where the demo keeps its databases and objects.
        #[arg(long, default_value = "./demo-data")]
        dir: std::path::PathBuf,
        /// Seconds between the simulated product changes and messages.
        #[arg(long, default_value_t = 3.0)]
        every: f64,
    },
    /// Poll connected shops and pages now (all by default): the jobs go into the server's
    /// queue (so they never race its webhook work), and the command waits for them and prints
    /// a summary. With no server running it works the queue itself.
    Poll {
        /// Poll only this shop (`name` or `name.myshopify.com`).
        #[arg(long)]
        shop: Option<String>,
        /// Poll only this Facebook page (its numeric id).
        #[arg(long)]
        page: Option<String>,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo builds its own configuration: the environment's is neither needed nor read.
    let command = match cli.command.unwrap_or(Command::Serve) {
        #[cfg(feature = "demo")]
        Command::Demo { port, dir, every } => return demo(port, dir, every),
        other => other,
    };
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("salesbot-sync: {e}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::CheckConfig => check_config(&settings),
        // Handled before the configuration is read.
        #[cfg(feature = "demo")]
        Command::Demo { .. } => unreachable!("the demo returned above"),
        Command::Poll { shop, page } => {
            crate::telemetry::init(settings.log_format);
            run_async(poll(settings, shop, page))
        }
        Command::Backup | Command::Restore { .. } if settings.shared_database() => {
            eprintln!(
                "salesbot-sync: the stores are in PostgreSQL (DATABASE_URL): back them up and restore them with the database's own tools (pg_dump / pg_restore, or your provider's snapshots); `backup` and `restore` are for the SQLite files"
            );
            ExitCode::from(2)
        }
        Command::CopyToPostgres => copy_to_postgres(settings),
        Command::Backup => run_async(backup(settings)),
        Command::Restore { from } => offline(async move {
            let report =
                tokio::task::spawn_blocking(move || crate::backup::restore(&settings, &from))
                    .await??;
            println!("{}", report.summary());
            Ok(())
        }),
        Command::RotateKey => offline(rotate_key(settings)),
        Command::RequeueFailed => run_async(async move {
            let events = crate::state::Stores::open(&settings).await?.events;
            let n = events.requeue_failed().await?;
            println!(
                "re-queued {n} failed or dead-lettered event(s); a running server processes them now"
            );
            Ok(())
        }),
        Command::Serve => {
            crate::telemetry::init(settings.log_format);
            run_async(async move {
                let app = Application::build(settings).await?;
                app.run_until_stopped().await
            })
        }
    }
}

fn check_config(settings: &Settings) -> ExitCode {
    print!("{}", settings.describe());
    for name in &settings.generated_secrets {
        println!("warning: {name} is not set; a throw-away value is used (development only)");
    }
    for w in &settings.warnings {
        println!("warning: {w}");
    }
    ExitCode::SUCCESS
}

fn copy_to_postgres(settings: Settings) -> ExitCode {
    let Some(db) = settings.database.clone() else {
        eprintln!("salesbot-sync: copy-to-postgres needs DATABASE_URL (the empty PostgreSQL database to copy into)");
        return ExitCode::from(2);
    };
    offline(async move {
        // A SQLite server still running would keep writing rows the copy misses.
        let _lock = crate::jobs::lock_queue(&settings.events_db_path)?;
        let pg = crate::store::postgres::PgDb::connect(&db).await?;
        let report = crate::store::copy::copy_to_postgres(&settings, &pg).await?;
        println!("{}", report.summary());
        Ok(())
    })
}

async fn backup(settings: Settings) -> anyhow::Result<()> {
    let objects = match &settings.storage {
        crate::config::StorageSettings::Spaces(_) => Some(
            crate::objects::ObjectStore::from_settings(&settings.storage)?,
        ),
        crate::config::StorageSettings::Local { .. } => None,
    };
    let outcome = crate::backup::backup_all(&settings, objects.as_ref()).await;
    crate::backup::record_outcome(&settings.backup_dir, outcome.as_ref());
    let report = outcome?;
    println!("{}", report.summary());
    Ok(())
}

async fn poll(
    settings: Settings,
    shop: Option<String>,
    page: Option<String>,
) -> anyhow::Result<()> {
    use crate::ids::{PageId, ShopDomain};
    use crate::poll::Target;
    if shop.is_some() && settings.shopify.is_none() {
        anyhow::bail!("Shopify is not configured: set SHOPIFY_API_KEY and SHOPIFY_API_SECRET");
    }
    if page.is_some() && settings.facebook.is_none() {
        anyhow::bail!("Facebook is not configured: set FACEBOOK_APP_ID, FACEBOOK_APP_SECRET and FACEBOOK_VERIFY_TOKEN");
    }
    // Validate before opening anything.
    let shop = shop.map(|s| ShopDomain::normalize(&s)).transpose()?;
    let page = page.map(|p| PageId::parse(&p)).transpose()?;
    let targets: Vec<Target> = match (shop, page) {
        (None, None) => vec![Target::Everything],
        (s, p) => s
            .map(Target::Shop)
            .into_iter()
            .chain(p.map(Target::Page))
            .collect(),
    };
    // The jobs go into the server's queue, so they are serialised with its webhook work. When
    // no server holds the queue, this process works it until the run is done.
    let queue = settings.events_db_path.clone();
    let worker_config = crate::jobs::WorkerConfig::from_settings(&settings);
    let state = crate::state::AppState::build(settings).await?;
    let mut local: Option<LocalWorkers> = None;
    let _progress = Progress::start("polling");
    let mut failures = Vec::new();
    for target in targets {
        let started = std::time::Instant::now();
        let (run, _) = crate::poll::start(
            &state,
            target,
            crate::store::events::RunTrigger::Cli,
            std::time::Duration::ZERO,
        )
        .await?;
        while state.events.run_open_jobs(run).await? > 0 {
            // No server (or the one there was stopped): work the queue here.
            if local.is_none() {
                if let Some(owner) = nobody_serves(&state, &queue).await? {
                    local = Some(LocalWorkers::start(&state, worker_config.clone(), owner).await?);
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let mut summary = crate::poll::progress(&state, run).await?;
        summary.duration = started.elapsed();
        println!("{}", summary.line());
        failures.extend(summary.failures);
    }
    if let Some(w) = local {
        w.stop().await;
    }
    for (id, reason) in &failures {
        eprintln!("  failed {id}: {reason}");
    }
    if !failures.is_empty() {
        anyhow::bail!("{} poll job(s) failed", failures.len());
    }
    Ok(())
}

/// Queue workers in this process, for a command that runs while no server does.
/// What makes this process the one working the queue while no server does.
#[allow(dead_code)] // never read: held until dropped, which releases the lock
enum QueueOwner {
    /// SQLite: the queue file's lock.
    File(std::fs::File),
    /// PostgreSQL: this process counts as an instance (other instances may start beside it:
    /// claims are safe across processes).
    Instance(crate::store::postgres::InstanceGuard),
}

/// `Some` when no server works the queue (the CLI then works it itself).
async fn nobody_serves(
    state: &crate::state::AppState,
    queue: &std::path::Path,
) -> anyhow::Result<Option<QueueOwner>> {
    match &state.postgres {
        None => Ok(crate::jobs::lock_queue(queue).ok().map(QueueOwner::File)),
        Some(pg) => {
            if pg.no_instance_running().await?.is_none() {
                return Ok(None);
            }
            Ok(Some(QueueOwner::Instance(
                pg.running_instance(&state.instance).await?,
            )))
        }
    }
}

struct LocalWorkers {
    stop: tokio_util::sync::CancellationToken,
    workers: tokio::task::JoinSet<()>,
    _owner: QueueOwner,
}

impl LocalWorkers {
    async fn start(
        state: &crate::state::AppState,
        config: crate::jobs::WorkerConfig,
        owner: QueueOwner,
    ) -> anyhow::Result<LocalWorkers> {
        // SQLite: holding the lock, this process owns the queue, so a dead server's leases
        // are free (on PostgreSQL `recover_orphans` only takes expired leases).
        state.events.recover_orphans().await?;
        let stop = tokio_util::sync::CancellationToken::new();
        let workers = crate::jobs::spawn_workers(
            state.events.clone(),
            std::sync::Arc::new(crate::startup::registry()),
            state.clone(),
            (&state.instance, config),
            stop.clone(),
        );
        Ok(LocalWorkers {
            stop,
            workers,
            _owner: owner,
        })
    }

    async fn stop(mut self) {
        self.stop.cancel();
        while self.workers.join_next().await.is_some() {}
    }
}

async fn rotate_key(settings: Settings) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use base64::Engine;
    if settings.generated_secrets.contains(&"TOKEN_ENCRYPTION_KEY") {
        anyhow::bail!("TOKEN_ENCRYPTION_KEY (the current key) must be set to rotate it");
    }
    let raw = std::env::var("NEW_TOKEN_ENCRYPTION_KEY")
        .map_err(|_| anyhow::anyhow!("NEW_TOKEN_ENCRYPTION_KEY is not set"))?;
    let key: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(raw.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            anyhow::anyhow!("NEW_TOKEN_ENCRYPTION_KEY is malformed (expected base64 of 32 bytes)")
        })?;
    // A server running beside the rotation would keep the old key in memory and write tokens
    // under it after the rotation commits (refreshed Shopify tokens, new pages): tokens under
    // two keys. Holding the queue lock (SQLite) or the instances lock (PostgreSQL, every
    // machine) until the end also keeps a server from starting.
    let refused = "rotate-key refused: stop the server first (e.g. `systemctl stop salesbot-sync`, every instance); nothing was changed";
    let stores = crate::state::Stores::open(&settings).await?;
    let _owner = match &stores.postgres {
        None => {
            QueueOwner::File(crate::jobs::lock_queue(&settings.events_db_path).context(refused)?)
        }
        Some(pg) => QueueOwner::Instance(pg.no_instance_running().await?.ok_or_else(|| {
            anyhow::Error::new(crate::jobs::QueueHeld {
                events_db: "the PostgreSQL database".into(),
                lock: "its instances lock".into(),
            })
            .context(refused)
        })?),
    };
    refuse_if_queue_active(&stores.events, settings.job_lease, "rotate-key").await?;
    let store = stores.tokens;
    let n = store
        .rotate_key(crate::crypto::TokenCipher::new(&key))
        .await?;
    println!("re-encrypted {n} token(s); now set TOKEN_ENCRYPTION_KEY to the new key and restart");
    Ok(())
}

/// The queue shows a process at work although the lock check passed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct QueueActive(String);

/// Work in the queue within the last lease (a job claimed or heartbeated, an event received)
/// means a server is likely running even though the lock check passed (a lock can be lost
/// with its database connection): an offline command refuses rather than run beside it.
async fn refuse_if_queue_active(
    events: &crate::store::events::EventStore,
    lease: std::time::Duration,
    command: &str,
) -> anyhow::Result<()> {
    let activity = events.activity().await?;
    let recent = activity.newest_event_age.filter(|age| *age < lease);
    let mut signs = Vec::new();
    if activity.live_leases > 0 {
        signs.push(format!(
            "{} job(s) under a live lease",
            activity.live_leases
        ));
    }
    if let Some(age) = recent {
        signs.push(format!("an event received {} s ago", age.as_secs()));
    }
    if signs.is_empty() {
        return Ok(());
    }
    let secs = lease.as_secs();
    Err(QueueActive(format!(
        "{command} refused: the queue shows work within the last {secs} s ({}), so a server is likely running: stop every instance, wait {secs} s (JOB_LEASE_SECS) and try again; nothing was changed",
        signs.join(", ")
    ))
    .into())
}

/// A one-line elapsed-time indicator on stderr while a long command runs, only when stderr is
/// a terminal (cron jobs and pipes stay quiet). Cleared when dropped.
struct Progress(Option<tokio::task::JoinHandle<()>>);

impl Progress {
    fn start(what: &'static str) -> Progress {
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        Progress(Some(tokio::spawn(async move {
            let started = std::time::Instant::now();
            let spinner = ['|', '/', '-', '\\'];
            let mut i = 0;
            loop {
                eprint!(
                    "\r{} {what}… {:.0} s ",
                    spinner[i % 4],
                    started.elapsed().as_secs_f64()
                );
                i += 1;
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        })))
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
            eprint!("\r\x1b[2K");
        }
    }
}

/// The outcome of an offline command: a refusal because another process holds the queue is a
/// usage error (2), so scripts can tell "stop the server first" from a failed run.
fn offline(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    match block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("salesbot-sync: {}", format!("{e:#}").replace('\n', " "));
            if e.downcast_ref::<crate::jobs::QueueHeld>().is_some()
                || e.downcast_ref::<QueueActive>().is_some()
            {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn run_async(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    match block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the chain of causes, no backtrace.
            eprintln!("salesbot-sync: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

fn block_on(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    rt.block_on(fut)
}

#[cfg(feature = "demo")]
fn demo(port: u16, dir: std::path::PathBuf, every: f64) -> ExitCode {
    // `.env` may set APP_ENV too: read it the way `serve` would, only to refuse.
    let _ = dotenvy::dotenv();
    let env: std::collections::HashMap<String, String> = std::env::vars().collect();
    if let Some(why) = crate::demo::refuse(&env) {
        eprintln!("salesbot-sync: {why}");
        return ExitCode::from(2);
    }
    if !(every.is_finite() && every >= 0.1) {
        eprintln!("salesbot-sync: --every must be at least 0.1 seconds");
        return ExitCode::from(2);
    }
    crate::telemetry::init(crate::config::LogFormat::Text);
    run_async(crate::demo::run(crate::demo::DemoOptions {
        port,
        dir,
        every: std::time::Duration::from_secs_f64(every),
    }))
}
