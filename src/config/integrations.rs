//! The Shopify, Meta and object-storage settings: each integration is on when its credentials
//! are set (all required in production), off otherwise.

use std::path::PathBuf;

use secrecy::SecretString;
use url::Url;

use super::reader::{join_url, Reader};
use super::{AppEnv, DEFAULT_SHOPIFY_SCOPES};

#[derive(Clone)]
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
    /// Full syncs of shops with more products than this use a bulk operation.
    pub bulk_threshold: u64,
    /// How long content deliveries wait so a burst is read once (`SHOPIFY_WEBHOOK_DEBOUNCE_MS`).
    pub webhook_debounce: std::time::Duration,
    /// How often a shop's catalogue is checked in full (otherwise polls read what changed).
    pub full_sync_every: std::time::Duration,
}

#[derive(Clone)]
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

pub(super) fn read_shopify(r: &mut Reader<'_>, base: &Url) -> Option<ShopifySettings> {
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
    let bulk_threshold =
        r.parse::<u64>("SHOPIFY_BULK_THRESHOLD", "2000", "a number of products")?;
    let full_days = r.parse::<u64>("SHOPIFY_FULL_SYNC_DAYS", "7", "a number of days")?;
    let debounce = r.parse::<u64>(
        "SHOPIFY_WEBHOOK_DEBOUNCE_MS",
        "250",
        "a number of milliseconds",
    )?;
    if debounce > 60_000 {
        r.problems.push(format!(
            "SHOPIFY_WEBHOOK_DEBOUNCE_MS is too large (at most 60000 ms, got {debounce}): changes would wait that long to reach the objects"
        ));
        return None;
    }
    Some(ShopifySettings {
        initial_sync_wait: std::time::Duration::from_secs(wait),
        bulk_threshold,
        webhook_debounce: std::time::Duration::from_millis(debounce),
        full_sync_every: std::time::Duration::from_secs(full_days.max(1) * 86_400),
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

pub(super) fn read_facebook(r: &mut Reader<'_>, base: &Url) -> Option<FacebookSettings> {
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

pub(super) fn read_storage(r: &mut Reader<'_>) -> StorageSettings {
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
