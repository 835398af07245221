//! Typed configuration read from the environment (SPEC §2).
//!
//! `Settings::from_env` loads `.env` (dotenvy) and then reads the process environment;
//! `Settings::from_vars` does the same from any map so tests can build settings without
//! touching the global environment.
//!
//! Production (`APP_ENV=production`) is strict: every problem is collected and reported in one
//! message. Development starts with nothing set and generates throw-away secrets.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use base64::Engine;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use url::Url;

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

pub struct ShopifySettings {
    pub api_key: String,
    pub api_secret: SecretString,
    pub redirect_uri: Url,
    pub webhook_address: Url,
    pub scopes: String,
    pub api_version: String,
    /// Base URL of a shop with a `{shop}` placeholder, e.g. `https://{shop}`.
    pub shop_url_template: String,
    /// How long the OAuth callback waits for the initial sync before answering `pending`.
    pub initial_sync_wait: std::time::Duration,
}

pub struct FacebookSettings {
    pub app_id: String,
    pub app_secret: SecretString,
    pub redirect_uri: Url,
    pub webhook_address: Url,
    pub verify_token: SecretString,
    pub graph_version: String,
    pub graph_base_url: Url,
    pub dialog_base_url: Url,
}

pub struct SpacesSettings {
    pub key: String,
    pub secret: SecretString,
    pub region: String,
    pub bucket: String,
    pub endpoint: Url,
}

pub enum StorageSettings {
    Spaces(SpacesSettings),
    Local { dir: PathBuf },
}

impl StorageSettings {
    pub fn backend_name(&self) -> &'static str {
        match self {
            StorageSettings::Spaces(_) => "s3",
            StorageSettings::Local { .. } => "local",
        }
    }
}

pub struct Settings {
    pub app_env: AppEnv,
    pub bind_addr: SocketAddr,
    pub public_base_url: Url,
    pub shopify: Option<ShopifySettings>,
    pub facebook: Option<FacebookSettings>,
    pub state_token_secret: SecretString,
    pub token_encryption_key: SecretBox<[u8; 32]>,
    pub token_db_path: PathBuf,
    pub session_db_path: PathBuf,
    pub events_db_path: PathBuf,
    pub storage: StorageSettings,
    pub poll_schedule: String,
    pub backup_dir: PathBuf,
    pub backup_schedule: String,
    pub backup_keep: usize,
    pub log_format: LogFormat,
    /// Largest request body accepted, in bytes (SPEC §8: 1 MiB default).
    pub max_body_bytes: usize,
    /// Names of secrets generated for this run only (development).
    pub generated_secrets: Vec<&'static str>,
    /// Non-fatal findings to log at start-up.
    pub warnings: Vec<String>,
}

impl Settings {
    /// Whether the `session_id` cookie gets the `Secure` attribute.
    pub fn secure_cookies(&self) -> bool {
        self.public_base_url.scheme() == "https"
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

/// Reads values and records problems as it goes, so all of them are reported at once.
struct Reader<'a> {
    vars: &'a HashMap<String, String>,
    env: AppEnv,
    problems: Vec<String>,
    warnings: Vec<String>,
    generated: Vec<&'static str>,
}

impl<'a> Reader<'a> {
    fn get(&self, name: &str) -> Option<&'a str> {
        self.vars
            .get(name)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    }

    /// First set variable among `names` (the SPEC name first, then the seeds' aliases).
    fn get_any(&self, names: &[&str]) -> Option<&'a str> {
        names.iter().find_map(|n| self.get(n))
    }

    fn string_or(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or(default).to_string()
    }

    fn parse<T: std::str::FromStr>(&mut self, name: &str, default: &str, what: &str) -> Option<T> {
        let raw = self.get(name).unwrap_or(default);
        match raw.parse::<T>() {
            Ok(v) => Some(v),
            Err(_) => {
                self.problems.push(format!(
                    "{name} is malformed (expected {what}, got {raw:?})"
                ));
                None
            }
        }
    }

    fn url(&mut self, name: &str, default: &str) -> Option<Url> {
        let raw = self
            .get(name)
            .map(str::to_string)
            .unwrap_or(default.to_string());
        match Url::parse(&raw) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            _ => {
                self.problems.push(format!(
                    "{name} is malformed (expected an http(s) URL, got {raw:?})"
                ));
                None
            }
        }
    }

    /// A secret that must be present in production; in development a random one is generated.
    fn secret(&mut self, name: &'static str, min_len: usize) -> SecretString {
        match self.get(name) {
            Some(v) if v.len() >= min_len => SecretString::from(v.to_string()),
            // The seeds' placeholder values are short; fine to try things out, not to run on.
            Some(v) if self.env == AppEnv::Development => {
                self.warnings.push(format!(
                    "{name} is shorter than {min_len} characters: acceptable in development only"
                ));
                SecretString::from(v.to_string())
            }
            Some(_) => {
                self.problems.push(format!(
                    "{name} is malformed (must be at least {min_len} characters)"
                ));
                SecretString::from(String::new())
            }
            None if self.env == AppEnv::Production => {
                self.problems.push(format!("{name} is missing"));
                SecretString::from(String::new())
            }
            None => {
                self.generated.push(name);
                SecretString::from(random_token(32))
            }
        }
    }

    fn encryption_key(&mut self) -> SecretBox<[u8; 32]> {
        const NAME: &str = "TOKEN_ENCRYPTION_KEY";
        match self.get(NAME) {
            Some(v) => match decode_key(v) {
                Some(k) => SecretBox::new(Box::new(k)),
                None => {
                    self.problems.push(format!(
                        "{NAME} is malformed (expected base64 of exactly 32 bytes; generate one with `openssl rand -base64 32`)"
                    ));
                    SecretBox::new(Box::new([0u8; 32]))
                }
            },
            None if self.env == AppEnv::Production => {
                self.problems.push(format!("{NAME} is missing"));
                SecretBox::new(Box::new([0u8; 32]))
            }
            None => {
                self.generated.push(NAME);
                let mut k = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut k);
                SecretBox::new(Box::new(k))
            }
        }
    }

    fn cron(&mut self, name: &str, default: &str) -> String {
        let raw = self.string_or(name, default);
        if let Err(e) = validate_cron(&raw) {
            self.problems.push(format!(
                "{name} is malformed (expected a cron expression with a seconds field, e.g. \"0 0 0 * * *\"): {e}"
            ));
        }
        raw
    }
}

pub fn validate_cron(expr: &str) -> Result<(), String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .build()
        .parse(expr)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn decode_key(v: &str) -> Option<[u8; 32]> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(v))
        .ok()?;
    bytes.try_into().ok()
}

/// A random URL-safe token of `bytes` random bytes.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

fn join_url(base: &Url, path: &str) -> Url {
    let mut s = base.as_str().trim_end_matches('/').to_string();
    s.push_str(path);
    Url::parse(&s).expect("base URL joined with a fixed path is a URL")
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
        let app_env = match vars.get("APP_ENV").map(|s| s.trim().to_ascii_lowercase()) {
            None => AppEnv::Development,
            Some(s) if s.is_empty() || s == "development" || s == "dev" => AppEnv::Development,
            Some(s) if s == "production" || s == "prod" => AppEnv::Production,
            Some(s) => {
                problems.push(format!(
                    "APP_ENV is malformed (expected development or production, got {s:?})"
                ));
                AppEnv::Production
            }
        };
        let mut r = Reader {
            vars,
            env: app_env,
            problems,
            warnings: Vec::new(),
            generated: Vec::new(),
        };

        let bind_addr = r
            .parse::<SocketAddr>("BIND_ADDR", "127.0.0.1:5000", "host:port")
            .unwrap_or_else(|| ([127, 0, 0, 1], 5000).into());
        let public_base_url = r
            .url("PUBLIC_BASE_URL", "http://localhost:5000")
            .unwrap_or_else(|| Url::parse("http://localhost:5000").unwrap());
        if app_env == AppEnv::Production && public_base_url.scheme() == "http" {
            r.warnings.push(
                "PUBLIC_BASE_URL uses plain http in production: cookies are not marked Secure (fine only if TLS ends at a proxy in front)".into(),
            );
        }

        let shopify = read_shopify(&mut r, &public_base_url);
        let facebook = read_facebook(&mut r, &public_base_url);

        let state_token_secret = r.secret("STATE_TOKEN_SECRET", 32);
        let token_encryption_key = r.encryption_key();

        let token_db_path = PathBuf::from(r.string_or("TOKEN_DB_PATH", "./data/tokens.db"));
        let session_db_path = PathBuf::from(r.string_or("SESSION_DB_PATH", "./data/sessions.db"));
        let events_db_path = PathBuf::from(r.string_or("EVENTS_DB_PATH", "./data/events.db"));

        let storage = read_storage(&mut r);

        let poll_schedule = r.cron("POLL_SCHEDULE", "0 0 0 * * *");
        let backup_schedule = r.cron("BACKUP_SCHEDULE", "0 30 3 * * *");
        let backup_dir = PathBuf::from(r.string_or("BACKUP_DIR", "./backups"));
        let backup_keep = match r.parse::<usize>("BACKUP_KEEP", "7", "a positive integer") {
            Some(0) => {
                r.problems
                    .push("BACKUP_KEEP is malformed (must be at least 1)".into());
                1
            }
            Some(n) => n,
            None => 7,
        };
        let log_format = match r
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
        };
        let max_body_bytes = r
            .parse::<usize>(
                "MAX_BODY_BYTES",
                &DEFAULT_MAX_BODY_BYTES.to_string(),
                "a byte count",
            )
            .unwrap_or(DEFAULT_MAX_BODY_BYTES);

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
            token_encryption_key,
            token_db_path,
            session_db_path,
            events_db_path,
            storage,
            poll_schedule,
            backup_dir,
            backup_schedule,
            backup_keep,
            log_format,
            max_body_bytes,
            generated_secrets: r.generated,
            warnings: r.warnings,
        })
    }
}

/// Reports the pair of required variables of an integration; in production both are required.
fn integration_pair<'a>(
    r: &mut Reader<'a>,
    id_name: &str,
    secret_name: &str,
) -> Option<(&'a str, &'a str)> {
    match (r.get(id_name), r.get(secret_name)) {
        (Some(id), Some(secret)) => Some((id, secret)),
        (None, None) if r.env == AppEnv::Development => None,
        (id, secret) => {
            let missing: Vec<&str> = [(id_name, id), (secret_name, secret)]
                .iter()
                .filter(|(_, v)| v.is_none())
                .map(|(n, _)| *n)
                .collect();
            let msg = format!("{} is missing", missing.join(" and "));
            if r.env == AppEnv::Production {
                r.problems.push(msg);
            } else {
                r.warnings.push(format!("{msg}; the integration stays off"));
            }
            None
        }
    }
}

fn read_shopify(r: &mut Reader<'_>, base: &Url) -> Option<ShopifySettings> {
    let (key, secret) = integration_pair(r, "SHOPIFY_API_KEY", "SHOPIFY_API_SECRET")?;
    let redirect_uri = r.url(
        "SHOPIFY_REDIRECT_URI",
        join_url(base, "/shopify/callback").as_str(),
    )?;
    let webhook_address = r.url(
        "SHOPIFY_WEBHOOK_ADDRESS",
        join_url(base, "/shopify/webhook").as_str(),
    )?;
    let template = r.string_or("SHOPIFY_SHOP_URL_TEMPLATE", "https://{shop}");
    let probe = template.replace("{shop}", "example.myshopify.com");
    if !template.contains("{shop}") || Url::parse(&probe).is_err() {
        r.problems.push(format!(
            "SHOPIFY_SHOP_URL_TEMPLATE is malformed (expected a URL containing {{shop}}, got {template:?})"
        ));
        return None;
    }
    let api_version = r.string_or("SHOPIFY_API_VERSION", "2026-10");
    if !is_shopify_api_version(&api_version) {
        r.problems.push(format!(
            "SHOPIFY_API_VERSION is malformed (expected YYYY-MM or unstable, got {api_version:?})"
        ));
        return None;
    }
    let wait = r.parse::<u64>(
        "SHOPIFY_INITIAL_SYNC_WAIT_SECS",
        "20",
        "a number of seconds",
    )?;
    Some(ShopifySettings {
        initial_sync_wait: std::time::Duration::from_secs(wait),
        api_key: key.to_string(),
        api_secret: SecretString::from(secret.to_string()),
        redirect_uri,
        webhook_address,
        scopes: r.string_or("SHOPIFY_SCOPES", DEFAULT_SHOPIFY_SCOPES),
        api_version,
        shop_url_template: template,
    })
}

fn is_shopify_api_version(v: &str) -> bool {
    v == "unstable"
        || (v.len() == 7
            && v.as_bytes()[4] == b'-'
            && v[..4].bytes().all(|b| b.is_ascii_digit())
            && v[5..].bytes().all(|b| b.is_ascii_digit()))
}

fn read_facebook(r: &mut Reader<'_>, base: &Url) -> Option<FacebookSettings> {
    let (id, secret) = integration_pair(r, "FACEBOOK_APP_ID", "FACEBOOK_APP_SECRET")?;
    let redirect_uri = r.url(
        "FACEBOOK_REDIRECT_URI",
        join_url(base, "/facebook/callback").as_str(),
    )?;
    let webhook_address = r.url(
        "FACEBOOK_WEBHOOK_ADDRESS",
        join_url(base, "/facebook/webhook").as_str(),
    )?;
    // Required whenever Facebook is on: a guessable default would let anyone complete the
    // webhook handshake for our endpoint.
    let verify_token = match r.get("FACEBOOK_VERIFY_TOKEN") {
        Some(v) => SecretString::from(v.to_string()),
        None => {
            r.problems.push(
                "FACEBOOK_VERIFY_TOKEN is missing (required when Facebook is configured)".into(),
            );
            return None;
        }
    };
    let graph_version = r.string_or("FACEBOOK_GRAPH_VERSION", "v25.0");
    if !graph_version.starts_with('v') || graph_version[1..].parse::<f32>().is_err() {
        r.problems.push(format!(
            "FACEBOOK_GRAPH_VERSION is malformed (expected e.g. v25.0, got {graph_version:?})"
        ));
        return None;
    }
    let graph_base_url = r.url("FACEBOOK_GRAPH_BASE_URL", "https://graph.facebook.com")?;
    let dialog_base_url = r.url("FACEBOOK_DIALOG_BASE_URL", "https://www.facebook.com")?;
    Some(FacebookSettings {
        app_id: id.to_string(),
        app_secret: SecretString::from(secret.to_string()),
        redirect_uri,
        webhook_address,
        verify_token,
        graph_version,
        graph_base_url,
        dialog_base_url,
    })
}

fn read_storage(r: &mut Reader<'_>) -> StorageSettings {
    let key = r.get_any(&["SPACES_KEY", "SPACES_API_KEY", "SPACES_ACCESS_KEY"]);
    let secret = r.get_any(&["SPACES_SECRET", "SPACES_API_SECRET", "SPACES_SECRET_KEY"]);
    let bucket = r.get("SPACES_BUCKET");
    let region = r.string_or("SPACES_REGION", "nyc3");
    let dir = PathBuf::from(r.string_or("STORAGE_DIR", "./data/objects"));
    let local = move || StorageSettings::Local { dir };
    match (bucket, key, secret) {
        (Some(bucket), Some(key), Some(secret)) => {
            let default_endpoint = format!("https://{region}.digitaloceanspaces.com");
            let Some(endpoint) = r.url("SPACES_ENDPOINT", &default_endpoint) else {
                return local();
            };
            if !valid_bucket_name(bucket) {
                r.problems.push(format!(
                    "SPACES_BUCKET is malformed (3-63 lowercase letters, digits, dots or hyphens; got {bucket:?})"
                ));
            }
            StorageSettings::Spaces(SpacesSettings {
                key: key.to_string(),
                secret: SecretString::from(secret.to_string()),
                region,
                bucket: bucket.to_string(),
                endpoint,
            })
        }
        (None, None, None) if r.env == AppEnv::Development => local(),
        (bucket, key, secret) => {
            let mut missing = Vec::new();
            if bucket.is_none() {
                missing.push("SPACES_BUCKET");
            }
            if key.is_none() {
                missing.push("SPACES_KEY");
            }
            if secret.is_none() {
                missing.push("SPACES_SECRET");
            }
            let msg = format!("{} is missing", missing.join(" and "));
            if r.env == AppEnv::Production {
                r.problems.push(msg);
            } else {
                r.warnings
                    .push(format!("{msg}; using the local object store instead"));
            }
            local()
        }
    }
}

fn valid_bucket_name(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
}

fn mask(present: bool, generated: bool) -> &'static str {
    match (present, generated) {
        (_, true) => "******** (generated for this run only)",
        (true, false) => "******** (set)",
        (false, false) => "(not set)",
    }
}

impl Settings {
    /// The effective configuration as `NAME = value` lines with every secret masked.
    pub fn describe(&self) -> String {
        let gen = |n: &str| self.generated_secrets.contains(&n);
        let mut lines: Vec<(String, String)> = vec![
            (
                "APP_ENV".into(),
                format!("{:?}", self.app_env).to_lowercase(),
            ),
            ("BIND_ADDR".into(), self.bind_addr.to_string()),
            ("PUBLIC_BASE_URL".into(), self.public_base_url.to_string()),
        ];
        match &self.shopify {
            Some(s) => {
                lines.push(("SHOPIFY_API_KEY".into(), s.api_key.clone()));
                lines.push(("SHOPIFY_API_SECRET".into(), mask(true, false).into()));
                lines.push(("SHOPIFY_REDIRECT_URI".into(), s.redirect_uri.to_string()));
                lines.push((
                    "SHOPIFY_WEBHOOK_ADDRESS".into(),
                    s.webhook_address.to_string(),
                ));
                lines.push(("SHOPIFY_SCOPES".into(), s.scopes.clone()));
                lines.push(("SHOPIFY_API_VERSION".into(), s.api_version.clone()));
                lines.push((
                    "SHOPIFY_SHOP_URL_TEMPLATE".into(),
                    s.shop_url_template.clone(),
                ));
            }
            None => lines.push((
                "SHOPIFY_*".into(),
                "(integration off: set SHOPIFY_API_KEY and SHOPIFY_API_SECRET)".into(),
            )),
        }
        match &self.facebook {
            Some(f) => {
                lines.push(("FACEBOOK_APP_ID".into(), f.app_id.clone()));
                lines.push(("FACEBOOK_APP_SECRET".into(), mask(true, false).into()));
                lines.push(("FACEBOOK_VERIFY_TOKEN".into(), mask(true, false).into()));
                lines.push(("FACEBOOK_REDIRECT_URI".into(), f.redirect_uri.to_string()));
                lines.push(("FACEBOOK_WEBHOOK_ADDRESS".into(), f.webhook_address.to_string()));
                lines.push(("FACEBOOK_GRAPH_VERSION".into(), f.graph_version.clone()));
                lines.push(("FACEBOOK_GRAPH_BASE_URL".into(), f.graph_base_url.to_string()));
                lines.push(("FACEBOOK_DIALOG_BASE_URL".into(), f.dialog_base_url.to_string()));
            }
            None => lines.push((
                "FACEBOOK_*".into(),
                "(integration off: set FACEBOOK_APP_ID, FACEBOOK_APP_SECRET and FACEBOOK_VERIFY_TOKEN)"
                    .into(),
            )),
        }
        lines.push((
            "STATE_TOKEN_SECRET".into(),
            mask(true, gen("STATE_TOKEN_SECRET")).into(),
        ));
        lines.push((
            "TOKEN_ENCRYPTION_KEY".into(),
            mask(true, gen("TOKEN_ENCRYPTION_KEY")).into(),
        ));
        lines.push((
            "TOKEN_DB_PATH".into(),
            self.token_db_path.display().to_string(),
        ));
        lines.push((
            "SESSION_DB_PATH".into(),
            self.session_db_path.display().to_string(),
        ));
        lines.push((
            "EVENTS_DB_PATH".into(),
            self.events_db_path.display().to_string(),
        ));
        match &self.storage {
            StorageSettings::Spaces(s) => {
                lines.push(("storage backend".into(), "s3 (Spaces)".into()));
                lines.push(("SPACES_KEY".into(), mask(true, false).into()));
                lines.push(("SPACES_SECRET".into(), mask(true, false).into()));
                lines.push(("SPACES_REGION".into(), s.region.clone()));
                lines.push(("SPACES_BUCKET".into(), s.bucket.clone()));
                lines.push(("SPACES_ENDPOINT".into(), s.endpoint.to_string()));
            }
            StorageSettings::Local { dir } => {
                lines.push(("storage backend".into(), "local folder".into()));
                lines.push(("STORAGE_DIR".into(), dir.display().to_string()));
            }
        }
        lines.push(("POLL_SCHEDULE".into(), self.poll_schedule.clone()));
        lines.push(("BACKUP_DIR".into(), self.backup_dir.display().to_string()));
        lines.push(("BACKUP_SCHEDULE".into(), self.backup_schedule.clone()));
        lines.push(("BACKUP_KEEP".into(), self.backup_keep.to_string()));
        lines.push((
            "LOG_FORMAT".into(),
            format!("{:?}", self.log_format).to_lowercase(),
        ));
        lines.push(("MAX_BODY_BYTES".into(), self.max_body_bytes.to_string()));
        let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        lines
            .into_iter()
            .map(|(k, v)| format!("{k:<width$} = {v}\n"))
            .collect()
    }

    pub fn token_key_bytes(&self) -> &[u8; 32] {
        self.token_encryption_key.expose_secret()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn development_starts_with_nothing_and_generates_secrets() {
        let s = Settings::from_vars(&HashMap::new()).unwrap();
        assert_eq!(s.app_env, AppEnv::Development);
        assert_eq!(s.bind_addr.to_string(), "127.0.0.1:5000");
        assert!(s.shopify.is_none() && s.facebook.is_none());
        assert!(matches!(s.storage, StorageSettings::Local { .. }));
        assert!(s.generated_secrets.contains(&"STATE_TOKEN_SECRET"));
        assert!(s.generated_secrets.contains(&"TOKEN_ENCRYPTION_KEY"));
        assert_eq!(s.poll_schedule, "0 0 0 * * *");
        assert_eq!(s.backup_keep, 7);
    }

    #[test]
    fn production_names_every_missing_secret_in_one_error() {
        let err = Settings::from_vars(&vars(&[("APP_ENV", "production")]))
            .err()
            .unwrap();
        let msg = err.to_string();
        for name in [
            "SHOPIFY_API_KEY",
            "SHOPIFY_API_SECRET",
            "FACEBOOK_APP_ID",
            "FACEBOOK_APP_SECRET",
            "STATE_TOKEN_SECRET",
            "TOKEN_ENCRYPTION_KEY",
            "SPACES_BUCKET",
            "SPACES_KEY",
            "SPACES_SECRET",
        ] {
            assert!(msg.contains(name), "{name} not named in {msg}");
        }
    }

    #[test]
    fn malformed_values_are_named() {
        let err = Settings::from_vars(&vars(&[
            ("TOKEN_ENCRYPTION_KEY", "dG9vIHNob3J0"),
            ("BIND_ADDR", "nope"),
            ("POLL_SCHEDULE", "every day"),
            ("BACKUP_KEEP", "0"),
            ("LOG_FORMAT", "xml"),
        ]))
        .err()
        .unwrap();
        let msg = err.to_string();
        for name in [
            "TOKEN_ENCRYPTION_KEY",
            "BIND_ADDR",
            "POLL_SCHEDULE",
            "BACKUP_KEEP",
            "LOG_FORMAT",
        ] {
            assert!(msg.contains(name), "{name} not named in {msg}");
        }
    }

    #[test]
    fn seed_aliases_for_spaces_credentials_work() {
        for (k, s) in [
            ("SPACES_API_KEY", "SPACES_API_SECRET"),
            ("SPACES_ACCESS_KEY", "SPACES_SECRET_KEY"),
            ("SPACES_KEY", "SPACES_SECRET"),
        ] {
            let st = Settings::from_vars(&vars(&[
                (k, "AKID"),
                (s, "shh-secret"),
                ("SPACES_BUCKET", "my-bucket"),
                ("SPACES_REGION", "ams3"),
            ]))
            .unwrap();
            match st.storage {
                StorageSettings::Spaces(sp) => {
                    assert_eq!(sp.key, "AKID");
                    assert_eq!(sp.secret.expose_secret(), "shh-secret");
                    assert_eq!(sp.endpoint.as_str(), "https://ams3.digitaloceanspaces.com/");
                }
                _ => panic!("{k}: expected Spaces"),
            }
        }
    }

    #[test]
    fn derived_addresses_follow_public_base_url() {
        let s = Settings::from_vars(&vars(&[
            ("PUBLIC_BASE_URL", "https://sync.example.com"),
            ("SHOPIFY_API_KEY", "k"),
            ("SHOPIFY_API_SECRET", "s"),
        ]))
        .unwrap();
        let sh = s.shopify.as_ref().unwrap();
        assert_eq!(
            sh.redirect_uri.as_str(),
            "https://sync.example.com/shopify/callback"
        );
        assert_eq!(
            sh.webhook_address.as_str(),
            "https://sync.example.com/shopify/webhook"
        );
        assert!(s.secure_cookies());
    }

    #[test]
    fn describe_masks_secrets() {
        let s = Settings::from_vars(&vars(&[
            ("SHOPIFY_API_KEY", "key123"),
            ("SHOPIFY_API_SECRET", "very-secret-shopify"),
            (
                "STATE_TOKEN_SECRET",
                "state-secret-state-secret-state-secret",
            ),
        ]))
        .unwrap();
        let d = s.describe();
        assert!(d.contains("key123"));
        assert!(!d.contains("very-secret-shopify"));
        assert!(!d.contains("state-secret-state-secret"));
        assert!(d.contains("********"));
    }

    #[test]
    fn facebook_requires_verify_token() {
        let err = Settings::from_vars(&vars(&[
            ("FACEBOOK_APP_ID", "1"),
            ("FACEBOOK_APP_SECRET", "s"),
        ]))
        .err()
        .unwrap();
        assert!(err.to_string().contains("FACEBOOK_VERIFY_TOKEN"));
    }
}
