//! `check-config`: the effective configuration as `NAME = value` lines, secrets masked.

use super::{Settings, StorageSettings};

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
                lines.push((
                    "SHOPIFY_BULK_THRESHOLD".into(),
                    s.bulk_threshold.to_string(),
                ));
                lines.push((
                    "SHOPIFY_WEBHOOK_DEBOUNCE_MS".into(),
                    s.webhook_debounce.as_millis().to_string(),
                ));
                lines.push((
                    "SHOPIFY_FULL_SYNC_DAYS".into(),
                    (s.full_sync_every.as_secs() / 86_400).to_string(),
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
            "OPERATOR_TOKEN".into(),
            if self.operator_token.is_some() {
                mask(true, false).into()
            } else {
                "(not set: operator routes open, development only)".into()
            },
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
        lines.push((
            "CATALOG_DB_PATH".into(),
            self.catalog_db_path.display().to_string(),
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
        lines.push(("WORKERS_MESSAGES".into(), self.workers.messages.to_string()));
        lines.push(("WORKERS_SYNC".into(), self.workers.sync.to_string()));
        lines.push(("WORKERS_POLL".into(), self.workers.poll.to_string()));
        lines.push((
            "RETRY_HORIZON_HOURS".into(),
            format!("{}", self.retry_horizon.as_secs_f64() / 3600.0),
        ));
        lines.push((
            "JOB_LEASE_SECS".into(),
            self.job_lease.as_secs().to_string(),
        ));
        lines.push((
            "DATABASE_URL".into(),
            match &self.database {
                Some(_) => "******** (set: every store in PostgreSQL)".into(),
                None => "(not set: SQLite files)".into(),
            },
        ));
        if let Some(d) = &self.database {
            lines.push((
                "DATABASE_MAX_CONNECTIONS".into(),
                d.max_connections.to_string(),
            ));
        }
        lines.push((
            "POLL_WINDOW_MINUTES".into(),
            (self.poll_window.as_secs() / 60).to_string(),
        ));
        let e = &self.edge;
        lines.push((
            "HTTP_HEADER_TIMEOUT_SECS".into(),
            e.header_timeout.as_secs_f64().to_string(),
        ));
        lines.push((
            "HTTP_REQUEST_TIMEOUT_SECS".into(),
            e.request_timeout.as_secs_f64().to_string(),
        ));
        lines.push((
            "HTTP_CALLBACK_TIMEOUT_SECS".into(),
            e.callback_timeout.as_secs_f64().to_string(),
        ));
        lines.push(("HTTP_MAX_CONNECTIONS".into(), e.max_connections.to_string()));
        lines.push((
            "LOGIN_RATE_PER_SECOND".into(),
            e.login_rate_per_second.to_string(),
        ));
        lines.push(("LOGIN_BURST".into(), e.login_burst.to_string()));
        lines.push((
            "TRUSTED_PROXIES".into(),
            e.trusted_proxies
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(","),
        ));
        let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        lines
            .into_iter()
            .map(|(k, v)| format!("{k:<width$} = {v}\n"))
            .collect()
    }
}
