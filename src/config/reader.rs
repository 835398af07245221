//! Reads variables and records problems as it goes, so all of them are reported at once.

use std::collections::HashMap;

use base64::Engine;
use secrecy::{SecretBox, SecretString};
use url::Url;

use super::AppEnv;

pub(super) struct Reader<'a> {
    pub(super) vars: &'a HashMap<String, String>,
    pub(super) env: AppEnv,
    pub(super) problems: Vec<String>,
    pub(super) warnings: Vec<String>,
    pub(super) generated: Vec<&'static str>,
}

impl<'a> Reader<'a> {
    pub(super) fn new(
        vars: &'a HashMap<String, String>,
        env: AppEnv,
        problems: Vec<String>,
    ) -> Reader<'a> {
        Reader {
            vars,
            env,
            problems,
            warnings: Vec::new(),
            generated: Vec::new(),
        }
    }

    pub(super) fn get(&self, name: &str) -> Option<&'a str> {
        self.vars
            .get(name)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    }

    /// First set variable among `names` (the SPEC name first, then the seeds' aliases).
    pub(super) fn get_any(&self, names: &[&str]) -> Option<&'a str> {
        names.iter().find_map(|n| self.get(n))
    }

    pub(super) fn string_or(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or(default).to_string()
    }

    pub(super) fn parse<T: std::str::FromStr>(
        &mut self,
        name: &str,
        default: &str,
        what: &str,
    ) -> Option<T> {
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

    /// A worker count: at least 1.
    pub(super) fn count(&mut self, name: &str, default: usize) -> usize {
        match self.parse::<usize>(name, &default.to_string(), "a number of workers") {
            Some(0) => {
                self.problems
                    .push(format!("{name} is malformed (must be at least 1)"));
                default
            }
            Some(n) => n,
            None => default,
        }
    }

    /// A positive number of hours (fractions allowed, e.g. 0.5).
    pub(super) fn hours(&mut self, name: &str, default: f64) -> Option<std::time::Duration> {
        let raw = self.get(name).map(str::to_string);
        let value = match &raw {
            None => default,
            Some(v) => match v.parse::<f64>() {
                Ok(h) if h.is_finite() && h > 0.0 && h <= 24.0 * 365.0 => h,
                _ => {
                    self.problems.push(format!(
                        "{name} is malformed (expected a positive number of hours, got {v:?})"
                    ));
                    return None;
                }
            },
        };
        Some(std::time::Duration::from_secs_f64(value * 3600.0))
    }

    pub(super) fn url(&mut self, name: &str, default: &str) -> Option<Url> {
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
    pub(super) fn secret(&mut self, name: &'static str, min_len: usize) -> SecretString {
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
                SecretString::from(crate::crypto::random_token(32))
            }
        }
    }

    /// `OPERATOR_TOKEN`: at least 32 characters; required in production. Not generated in
    /// development: a token nobody knows would only lock the operator out.
    pub(super) fn operator_token(&mut self) -> Option<SecretString> {
        const NAME: &str = "OPERATOR_TOKEN";
        if self.get(NAME).is_none() && self.env == AppEnv::Development {
            self.warnings.push(format!(
                "{NAME} is not set: `/`, `/metrics` and the operator page are open to anyone who can reach the service (development only)"
            ));
            return None;
        }
        Some(self.secret(NAME, 32))
    }

    pub(super) fn encryption_key(&mut self) -> SecretBox<[u8; 32]> {
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
                SecretBox::new(Box::new(crate::crypto::random_key()))
            }
        }
    }

    pub(super) fn cron(&mut self, name: &str, default: &str) -> String {
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

pub(super) fn decode_key(v: &str) -> Option<[u8; 32]> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(v))
        .ok()?;
    bytes.try_into().ok()
}

pub(super) fn join_url(base: &Url, path: &str) -> Url {
    let mut s = base.as_str().trim_end_matches('/').to_string();
    s.push_str(path);
    Url::parse(&s).expect("base URL joined with a fixed path is a URL")
}
