//! Typed configuration read from the environment (SPEC §2).
//!
//! `Settings::from_env` loads `.env` (dotenvy) and then reads the process environment;
//! `Settings::from_vars` does the same from any map so tests can build settings without
//! touching the global environment.
//!
//! Production (`APP_ENV=production`) is strict: every problem is collected and reported in one
//! message. Development starts with nothing set and generates throw-away secrets.
//!
//! `reader` collects values and problems, `integrations` reads the Shopify, Meta and storage
//! settings, `describe` prints the effective configuration with secrets masked.

mod describe;
mod edge;
mod integrations;
mod reader;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretBox, SecretString};
use url::Url;

/// Moved to `crypto`; still reachable here for `demo`, which leaves this crate with the
/// simulators.
pub use edge::{canonical_ip, EdgeSettings, DEFAULT_TRUSTED_PROXIES};
use integrations::{read_facebook, read_shopify, read_storage};
pub use integrations::{FacebookSettings, ShopifySettings, SpacesSettings, StorageSettings};
pub use reader::validate_cron;
use reader::Reader;

/// An integration that is not configured (its routes answer 503); the message names the
/// variables to set.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("{0}")]
pub struct NotConfigured(pub &'static str);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

pub struct Settings {
    pub app_env: AppEnv,
    pub bind_addr: SocketAddr,
    pub public_base_url: Url,
    pub shopify: Option<ShopifySettings>,
    pub facebook: Option<FacebookSettings>,
    pub state_token_secret: SecretString,
    /// Protects `/`, `/metrics` and the operator pages (`OPERATOR_TOKEN`). Required in
    /// production; `None` in development leaves them open (with a warning).
    pub operator_token: Option<SecretString>,
    pub token_encryption_key: SecretBox<[u8; 32]>,
    pub token_db_path: PathBuf,
    pub session_db_path: PathBuf,
    pub events_db_path: PathBuf,
    /// The Shopify catalogue store (a cache rebuilt by a full sync; not backed up).
    pub catalog_db_path: PathBuf,
    /// PostgreSQL for every store (`DATABASE_URL`); `None`: the SQLite files above.
    pub database: Option<DatabaseSettings>,
    pub storage: StorageSettings,
    pub poll_schedule: String,
    pub backup_dir: PathBuf,
    pub backup_schedule: String,
    pub backup_keep: usize,
    pub log_format: LogFormat,
    /// Largest request body accepted, in bytes (SPEC §8: 1 MiB default).
    pub max_body_bytes: usize,
    /// Workers per pool (`WORKERS_MESSAGES`, `WORKERS_SYNC`, `WORKERS_POLL`).
    pub workers: WorkerPools,
    /// How long retryable work is retried before it is dead-lettered (`RETRY_HORIZON_HOURS`).
    pub retry_horizon: Duration,
    /// A running job's lease (`JOB_LEASE_SECS`), renewed every third of it while the job runs:
    /// when an instance dies, another takes its jobs over once their leases run out.
    pub job_lease: Duration,
    /// How many of a conversation's newest entries its `<psid>.json` holds
    /// (`CONVERSATION_WINDOW`); older ones are in month objects (SPEC §3.1).
    pub conversation_window: usize,
    /// A scheduled poll's jobs are spread over this long (`POLL_WINDOW_MINUTES`), so a tick
    /// does not start every shop and page at once.
    pub poll_window: Duration,
    /// Timeouts, connection cap, login rate limit and trusted proxies (`HTTP_*`, `LOGIN_*`,
    /// `TRUSTED_PROXIES`).
    pub edge: EdgeSettings,
    /// Names of secrets generated for this run only (development).
    pub generated_secrets: Vec<&'static str>,
    /// Non-fatal findings to log at start-up.
    pub warnings: Vec<String>,
}

/// `DATABASE_URL` and its pool size.
#[derive(Clone)]
pub struct DatabaseSettings {
    /// `postgres://user:password@host:port/db?sslmode=…` (holds a password: never logged).
    pub url: SecretString,
    pub max_connections: u32,
}

fn read_database(r: &mut Reader<'_>) -> Option<DatabaseSettings> {
    let url = r.get("DATABASE_URL")?.trim().to_string();
    let max_connections = r.count("DATABASE_MAX_CONNECTIONS", 16) as u32;
    match Url::parse(&url) {
        Ok(u) if matches!(u.scheme(), "postgres" | "postgresql") && u.host_str().is_some() => {
            Some(DatabaseSettings {
                url: SecretString::from(url),
                max_connections,
            })
        }
        // The value may hold a password: it is not repeated in the message.
        _ => {
            r.problems.push(
                "DATABASE_URL is malformed (expected postgres://user:password@host:port/database)"
                    .into(),
            );
            None
        }
    }
}

impl Settings {
    /// Whether several instances may share the stores (PostgreSQL).
    pub fn shared_database(&self) -> bool {
        self.database.is_some()
    }

    /// Whether the `session_id` cookie gets the `Secure` attribute.
    pub fn secure_cookies(&self) -> bool {
        self.public_base_url.scheme() == "https"
    }

    pub fn token_key_bytes(&self) -> &[u8; 32] {
        self.token_encryption_key.expose_secret()
    }
}

/// Every problem found while reading the configuration, reported together.
#[derive(Debug)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}", self.problems.join("; "))
    }
}

impl std::error::Error for ConfigError {}

pub const DEFAULT_SHOPIFY_SCOPES: &str =
    "read_product_listings,read_inventory,read_discounts,read_locations,read_products";
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// Workers per pool: Messenger merges (`messages`), Shopify syncs and deletions (`sync`),
/// polls, refreshes and checks (`poll`). Pools never wait for each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerPools {
    pub messages: usize,
    pub sync: usize,
    pub poll: usize,
}

impl Default for WorkerPools {
    fn default() -> Self {
        // Merges wait on the object store (a GET and a PUT, tens of milliseconds on Spaces),
        // so the Messenger pool is wide; syncs are few and long, polls are background work.
        WorkerPools {
            messages: 16,
            sync: 2,
            poll: 2,
        }
    }
}

impl Settings {
    /// Loads `.env` if present, then reads the process environment.
    pub fn from_env() -> Result<Settings, ConfigError> {
        // A missing .env is normal; a malformed one is reported by dotenvy on stderr via the error.
        if let Err(e) = dotenvy::dotenv() {
            if !e.not_found() {
                return Err(ConfigError {
                    problems: vec![format!(".env could not be read: {e}")],
                });
            }
        }
        let vars: HashMap<String, String> = std::env::vars().collect();
        Settings::from_vars(&vars)
    }

    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Settings, ConfigError> {
        let mut problems = Vec::new();
        let app_env = read_app_env(vars, &mut problems);
        let mut r = Reader::new(vars, app_env, problems);
        let bind_addr = r
            .parse::<SocketAddr>("BIND_ADDR", "127.0.0.1:5000", "host:port")
            .unwrap_or_else(|| ([127, 0, 0, 1], 5000).into());
        let public_base_url = read_public_base_url(&mut r);
        let shopify = read_shopify(&mut r, &public_base_url);
        let facebook = read_facebook(&mut r, &public_base_url);
        let state_token_secret = r.secret("STATE_TOKEN_SECRET", 32);
        let operator_token = r.operator_token();
        let token_encryption_key = r.encryption_key();
        let path = |r: &mut Reader, name, default| PathBuf::from(r.string_or(name, default));
        let token_db_path = path(&mut r, "TOKEN_DB_PATH", "./data/tokens.db");
        let session_db_path = path(&mut r, "SESSION_DB_PATH", "./data/sessions.db");
        let events_db_path = path(&mut r, "EVENTS_DB_PATH", "./data/events.db");
        let catalog_db_path = path(&mut r, "CATALOG_DB_PATH", "./data/catalog.db");
        let storage = read_storage(&mut r);
        let database = read_database(&mut r);
        let poll_schedule = r.cron("POLL_SCHEDULE", "0 0 0 * * *");
        let backup_schedule = r.cron("BACKUP_SCHEDULE", "0 30 3 * * *");
        let backup_dir = PathBuf::from(r.string_or("BACKUP_DIR", "./backups"));
        let backup_keep = read_backup_keep(&mut r);
        let log_format = read_log_format(&mut r);
        let max_body = DEFAULT_MAX_BODY_BYTES;
        let max_body_bytes = r
            .parse::<usize>("MAX_BODY_BYTES", &max_body.to_string(), "a byte count")
            .unwrap_or(max_body);
        let workers = read_workers(&mut r);
        let retry_horizon = r
            .hours("RETRY_HORIZON_HOURS", 72.0)
            .unwrap_or(Duration::from_secs(72 * 3600));
        let job_lease = read_job_lease(&mut r);
        let conversation_window = read_conversation_window(&mut r);
        let poll_window = r
            .parse::<u64>("POLL_WINDOW_MINUTES", "60", "a number of minutes")
            .map(|m| Duration::from_secs(m * 60))
            .unwrap_or(Duration::from_secs(3600));
        let edge = edge::read_edge(&mut r);

        if !r.problems.is_empty() {
            return Err(ConfigError {
                problems: r.problems,
            });
        }
        Ok(Settings {
            app_env,
            bind_addr,
            public_base_url,
            shopify,
            facebook,
            state_token_secret,
            operator_token,
            token_encryption_key,
            token_db_path,
            session_db_path,
            events_db_path,
            catalog_db_path,
            database,
            storage,
            poll_schedule,
            backup_dir,
            backup_schedule,
            backup_keep,
            log_format,
            max_body_bytes,
            workers,
            retry_horizon,
            job_lease,
            conversation_window,
            poll_window,
            edge,
            generated_secrets: r.generated,
            warnings: r.warnings,
        })
    }
}

fn read_app_env(vars: &HashMap<String, String>, problems: &mut Vec<String>) -> AppEnv {
    match vars.get("APP_ENV").map(|s| s.trim().to_ascii_lowercase()) {
        None => AppEnv::Development,
        Some(s) if s.is_empty() || s == "development" || s == "dev" => AppEnv::Development,
        Some(s) if s == "production" || s == "prod" => AppEnv::Production,
        Some(s) => {
            problems.push(format!(
                "APP_ENV is malformed (expected development or production, got {s:?})"
            ));
            AppEnv::Production
        }
    }
}

fn read_public_base_url(r: &mut Reader) -> Url {
    let url = r
        .url("PUBLIC_BASE_URL", "http://localhost:5000")
        .unwrap_or_else(|| Url::parse("http://localhost:5000").unwrap());
    if r.env == AppEnv::Production && url.scheme() == "http" {
        r.warnings.push(
            "PUBLIC_BASE_URL uses plain http in production: cookies are not marked Secure (fine only if TLS ends at a proxy in front)".into(),
        );
    }
    url
}

fn read_workers(r: &mut Reader) -> WorkerPools {
    let defaults = WorkerPools::default();
    WorkerPools {
        messages: r.count("WORKERS_MESSAGES", defaults.messages),
        sync: r.count("WORKERS_SYNC", defaults.sync),
        poll: r.count("WORKERS_POLL", defaults.poll),
    }
}

fn read_backup_keep(r: &mut Reader) -> usize {
    match r.parse::<usize>("BACKUP_KEEP", "7", "a positive integer") {
        Some(0) => {
            r.problems
                .push("BACKUP_KEEP is malformed (must be at least 1)".into());
            1
        }
        Some(n) => n,
        None => 7,
    }
}

fn read_log_format(r: &mut Reader) -> LogFormat {
    match r
        .string_or("LOG_FORMAT", "text")
        .to_ascii_lowercase()
        .as_str()
    {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            r.problems.push(format!(
                "LOG_FORMAT is malformed (expected text or json, got {other:?})"
            ));
            LogFormat::Text
        }
    }
}

fn read_conversation_window(r: &mut Reader) -> usize {
    match r.parse::<usize>("CONVERSATION_WINDOW", "1000", "a number of entries") {
        Some(0) => {
            r.problems
                .push("CONVERSATION_WINDOW is malformed (must be at least 1)".into());
            1000
        }
        Some(n) => n,
        None => 1000,
    }
}

fn read_job_lease(r: &mut Reader) -> Duration {
    match r.parse::<u64>("JOB_LEASE_SECS", "60", "a number of seconds") {
        Some(n) if n < 3 => {
            r.problems
                .push("JOB_LEASE_SECS is malformed (must be at least 3)".into());
            Duration::from_secs(60)
        }
        Some(n) => Duration::from_secs(n),
        None => Duration::from_secs(60),
    }
}

#[cfg(test)]
mod tests;
