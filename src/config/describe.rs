//! `check-config`: the effective configuration as `NAME = value` lines, secrets masked.

use super::{Settings, StorageSettings};

fn mask(present: bool, generated: bool) -> &'static str {
    match (present, generated) {
        (_, true) => "******** (generated for this run only)",
        (true, false) => "******** (set)",
        (false, false) => "(not set)",
    }
}

/// `NAME = value` pairs in the order they are printed.
#[derive(Default)]
struct Lines(Vec<(String, String)>);

impl Lines {
    fn add(&mut self, name: &str, value: impl ToString) {
        self.0.push((name.to_string(), value.to_string()));
    }

    fn render(self) -> String {
        let width = self.0.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        self.0
            .into_iter()
            .map(|(k, v)| format!("{k:<width$} = {v}\n"))
            .collect()
    }
}

impl Settings {
    /// The effective configuration as `NAME = value` lines with every secret masked.
    pub fn describe(&self) -> String {
        let mut lines = Lines::default();
        lines.add("APP_ENV", format!("{:?}", self.app_env).to_lowercase());
        lines.add("BIND_ADDR", self.bind_addr);
        lines.add("PUBLIC_BASE_URL", &self.public_base_url);
        self.describe_shopify(&mut lines);
        self.describe_facebook(&mut lines);
        self.describe_secrets_and_files(&mut lines);
        self.describe_storage(&mut lines);
        self.describe_work(&mut lines);
        self.describe_database(&mut lines);
        self.describe_edge(&mut lines);
        lines.render()
    }

    fn describe_shopify(&self, lines: &mut Lines) {
        let Some(s) = &self.shopify else {
            let off = "(integration off: set SHOPIFY_API_KEY and SHOPIFY_API_SECRET)";
            return lines.add("SHOPIFY_*", off);
        };
        lines.add("SHOPIFY_API_KEY", &s.api_key);
        lines.add("SHOPIFY_API_SECRET", mask(true, false));
        lines.add("SHOPIFY_REDIRECT_URI", &s.redirect_uri);
        lines.add("SHOPIFY_WEBHOOK_ADDRESS", &s.webhook_address);
        lines.add("SHOPIFY_SCOPES", &s.scopes);
        lines.add("SHOPIFY_API_VERSION", &s.api_version);
        lines.add("SHOPIFY_SHOP_URL_TEMPLATE", &s.shop_url_template);
        lines.add("SHOPIFY_BULK_THRESHOLD", s.bulk_threshold);
        lines.add(
            "SHOPIFY_WEBHOOK_DEBOUNCE_MS",
            s.webhook_debounce.as_millis(),
        );
        lines.add(
            "SHOPIFY_FULL_SYNC_DAYS",
            s.full_sync_every.as_secs() / 86_400,
        );
    }

    fn describe_facebook(&self, lines: &mut Lines) {
        let Some(f) = &self.facebook else {
            let off = "(integration off: set FACEBOOK_APP_ID, FACEBOOK_APP_SECRET and \
                       FACEBOOK_VERIFY_TOKEN)";
            return lines.add("FACEBOOK_*", off);
        };
        lines.add("FACEBOOK_APP_ID", &f.app_id);
        lines.add("FACEBOOK_APP_SECRET", mask(true, false));
        lines.add("FACEBOOK_VERIFY_TOKEN", mask(true, false));
        lines.add("FACEBOOK_REDIRECT_URI", &f.redirect_uri);
        lines.add("FACEBOOK_WEBHOOK_ADDRESS", &f.webhook_address);
        lines.add("FACEBOOK_GRAPH_VERSION", &f.graph_version);
        lines.add("FACEBOOK_GRAPH_BASE_URL", &f.graph_base_url);
        lines.add("FACEBOOK_DIALOG_BASE_URL", &f.dialog_base_url);
    }

    fn describe_secrets_and_files(&self, lines: &mut Lines) {
        let gen = |n: &str| self.generated_secrets.contains(&n);
        lines.add("STATE_TOKEN_SECRET", mask(true, gen("STATE_TOKEN_SECRET")));
        lines.add(
            "OPERATOR_TOKEN",
            match self.operator_token {
                Some(_) => mask(true, false),
                None => "(not set: operator routes open, development only)",
            },
        );
        lines.add(
            "TOKEN_ENCRYPTION_KEY",
            mask(true, gen("TOKEN_ENCRYPTION_KEY")),
        );
        lines.add("TOKEN_DB_PATH", self.token_db_path.display());
        lines.add("SESSION_DB_PATH", self.session_db_path.display());
        lines.add("EVENTS_DB_PATH", self.events_db_path.display());
        lines.add("CATALOG_DB_PATH", self.catalog_db_path.display());
    }

    fn describe_storage(&self, lines: &mut Lines) {
        match &self.storage {
            StorageSettings::Spaces(s) => {
                lines.add("storage backend", "s3 (Spaces)");
                lines.add("SPACES_KEY", mask(true, false));
                lines.add("SPACES_SECRET", mask(true, false));
                lines.add("SPACES_REGION", &s.region);
                lines.add("SPACES_BUCKET", &s.bucket);
                lines.add("SPACES_ENDPOINT", &s.endpoint);
            }
            StorageSettings::Local { dir } => {
                lines.add("storage backend", "local folder");
                lines.add("STORAGE_DIR", dir.display());
            }
        }
    }

    fn describe_work(&self, lines: &mut Lines) {
        lines.add("POLL_SCHEDULE", &self.poll_schedule);
        lines.add("BACKUP_DIR", self.backup_dir.display());
        lines.add("BACKUP_SCHEDULE", &self.backup_schedule);
        lines.add("BACKUP_KEEP", self.backup_keep);
        lines.add(
            "LOG_FORMAT",
            format!("{:?}", self.log_format).to_lowercase(),
        );
        lines.add("MAX_BODY_BYTES", self.max_body_bytes);
        lines.add("WORKERS_MESSAGES", self.workers.messages);
        lines.add("WORKERS_SYNC", self.workers.sync);
        lines.add("WORKERS_POLL", self.workers.poll);
        lines.add(
            "RETRY_HORIZON_HOURS",
            self.retry_horizon.as_secs_f64() / 3600.0,
        );
        lines.add("JOB_LEASE_SECS", self.job_lease.as_secs());
        lines.add("CONVERSATION_WINDOW", self.conversation_window);
    }

    fn describe_database(&self, lines: &mut Lines) {
        lines.add(
            "DATABASE_URL",
            match &self.database {
                Some(_) => "******** (set: every store in PostgreSQL)",
                None => "(not set: SQLite files)",
            },
        );
        if let Some(d) = &self.database {
            lines.add("DATABASE_MAX_CONNECTIONS", d.max_connections);
        }
        lines.add("POLL_WINDOW_MINUTES", self.poll_window.as_secs() / 60);
    }

    fn describe_edge(&self, lines: &mut Lines) {
        let e = &self.edge;
        lines.add("HTTP_HEADER_TIMEOUT_SECS", e.header_timeout.as_secs_f64());
        lines.add("HTTP_REQUEST_TIMEOUT_SECS", e.request_timeout.as_secs_f64());
        lines.add(
            "HTTP_CALLBACK_TIMEOUT_SECS",
            e.callback_timeout.as_secs_f64(),
        );
        lines.add("HTTP_MAX_CONNECTIONS", e.max_connections);
        lines.add("LOGIN_RATE_PER_SECOND", e.login_rate_per_second);
        lines.add("LOGIN_BURST", e.login_burst);
        let proxies: Vec<String> = e.trusted_proxies.iter().map(|n| n.to_string()).collect();
        lines.add("TRUSTED_PROXIES", proxies.join(","));
    }
}
