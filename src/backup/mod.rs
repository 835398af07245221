//! Database backups and restore (SPEC §7).
//!
//! A backup *set* is one folder `BACKUP_DIR/<UTC timestamp>/` (e.g. `20261122T031500Z`, with a
//! `-N` suffix if that name is taken) holding `tokens.db`, `sessions.db`, `events.db` and
//! `manifest.json`. The manifest is written last, through a temp file and a rename, so its
//! presence marks a complete set.
//!
//! Copies are taken with SQLite's online backup API, never by copying files: the source
//! connection pins one read snapshot (a WAL reader never blocks the server's writer) and the
//! pages of that snapshot are copied in steps. Each copy is switched to a self-contained
//! rollback-journal file, checked with `PRAGMA integrity_check` and hashed (SHA-256).
//!
//! `restore` verifies a whole set (manifest, sizes, hashes, integrity, expected tables,
//! schema versions) before touching anything, takes a safety copy of the current databases
//! into `BACKUP_DIR/pre-restore-<timestamp>/`, then copies each database back with the backup
//! API into a connection on the live path (the change lands as one transaction, so other
//! open connections see the old or the new file) and re-runs the migrations. It holds the
//! queue lock throughout, so it refuses to run beside a server and no server starts meanwhile.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

use crate::config::{Settings, StorageSettings};
use crate::objects::{keys, ObjectStore};
use crate::store::DbKind;

/// Name of the file that marks a complete set.
pub const MANIFEST: &str = "manifest.json";
/// Prefix of the safety-copy folders `restore` writes (never pruned).
pub const PRE_RESTORE_PREFIX: &str = "pre-restore-";

/// Pages copied per backup step (4 MiB with the default 4 KiB page size).
const PAGES_PER_STEP: i32 = 1024;
/// How long a step may keep answering "busy" before the copy gives up.
const LOCK_WAIT: Duration = Duration::from_secs(120);
/// An incomplete set (no manifest) older than this is a leftover of a crashed run and pruned;
/// younger ones may belong to a backup running in another process right now.
const STALE_INCOMPLETE_SECS: i64 = 3600;

/// The databases a backup holds. The catalogue is not one of them: it is a cache of Shopify's
/// data that a full sync rebuilds, and it can be far larger than the rest.
const ALL_KINDS: [DbKind; 3] = [DbKind::Tokens, DbKind::Sessions, DbKind::Events];

fn expected_tables(kind: DbKind) -> &'static [&'static str] {
    match kind {
        DbKind::Tokens => &["merchants", "shops", "pages", "facebook_users"],
        DbKind::Sessions => &["sessions", "oauth_states"],
        DbKind::Events => &["events"],
        DbKind::Catalog => &["entities"],
    }
}

fn kind_from_name(name: &str) -> Option<DbKind> {
    ALL_KINDS.into_iter().find(|k| k.name() == name)
}

fn file_name_of(kind: DbKind) -> String {
    format!("{}.db", kind.name())
}

fn live_path(settings: &Settings, kind: DbKind) -> PathBuf {
    match kind {
        DbKind::Tokens => settings.token_db_path.clone(),
        DbKind::Sessions => settings.session_db_path.clone(),
        DbKind::Events => settings.events_db_path.clone(),
        DbKind::Catalog => settings.catalog_db_path.clone(),
    }
}

mod names;
mod restore;
mod sqlite;
mod take;

pub use names::parse_set_name;
use names::*;
pub use restore::{restore, verify_set};
use sqlite::*;
pub use take::backup_all;

// ---------------------------------------------------------------------------------------------
// Manifest

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub created_at: String,
    pub files: Vec<ManifestFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestFile {
    pub db: String,
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
    pub schema_version: i64,
}

// ---------------------------------------------------------------------------------------------
// Reports

#[derive(Debug, Clone)]
pub struct BackedUpFile {
    pub db: &'static str,
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
    pub schema_version: i64,
    /// Object key of the uploaded copy, when an object store was given.
    pub uploaded_key: Option<String>,
}

#[derive(Debug, Clone)]
pub struct BackupReport {
    pub set_dir: PathBuf,
    pub files: Vec<BackedUpFile>,
    /// Local sets removed by retention.
    pub pruned: Vec<PathBuf>,
    /// Remote sets (names under `backups/`) removed by retention.
    pub pruned_remote: Vec<String>,
}

impl BackupReport {
    /// Name of the set folder (its timestamp).
    pub fn set_name(&self) -> String {
        self.set_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// One line for the CLI and the logs.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "backup {} written to {}:",
            self.set_name(),
            self.set_dir.display()
        );
        for (i, f) in self.files.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            let _ = write!(s, "{sep}{} {}", f.db, human_bytes(f.bytes));
        }
        let uploaded = self
            .files
            .iter()
            .filter(|f| f.uploaded_key.is_some())
            .count();
        if uploaded > 0 {
            let _ = write!(
                s,
                "; uploaded {uploaded} files and the manifest under backups/{}/",
                self.set_name()
            );
        }
        let _ = write!(s, "; pruned {} old set(s)", self.pruned.len());
        if uploaded > 0 {
            let _ = write!(s, " locally and {} remotely", self.pruned_remote.len());
        }
        s
    }
}

#[derive(Debug, Clone)]
pub struct RestoredDb {
    pub db: &'static str,
    pub path: PathBuf,
    /// Schema version of the backup copy.
    pub schema_version_backup: i64,
    /// Schema version after the migrations ran on the restored file.
    pub schema_version_now: i64,
}

#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub from: PathBuf,
    /// Where the databases that were replaced were copied first (`None` when there were none).
    pub safety_copy: Option<PathBuf>,
    pub restored: Vec<RestoredDb>,
    /// Non-fatal findings (e.g. a live database that failed its integrity check before it was
    /// replaced).
    pub warnings: Vec<String>,
    /// Records of deleted shops, pages and Facebook users that the backup still held, removed
    /// again from what was restored (the deletion ledger).
    pub deletions_reapplied: usize,
}

impl RestoreReport {
    /// One line for the CLI and the logs.
    pub fn summary(&self) -> String {
        let dbs: Vec<String> = self
            .restored
            .iter()
            .map(|r| {
                if r.schema_version_backup == r.schema_version_now {
                    r.db.to_string()
                } else {
                    format!(
                        "{} (migrated {}→{})",
                        r.db, r.schema_version_backup, r.schema_version_now
                    )
                }
            })
            .collect();
        let mut s = format!("restored {} from {}", dbs.join(", "), self.from.display());
        match &self.safety_copy {
            Some(p) => {
                let _ = write!(s, "; previous databases saved in {}", p.display());
            }
            None => s.push_str("; there were no previous databases to save"),
        }
        if self.deletions_reapplied > 0 {
            let _ = write!(
                s,
                "; {} record(s) of data deleted since the backup removed again",
                self.deletions_reapplied
            );
        }
        if !self.warnings.is_empty() {
            let _ = write!(s, "; warnings: {}", self.warnings.join("; "));
        }
        s
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests;

// ---------------------------------------------------------------------------------------------
// The last backup's outcome, for the operator page

/// File in `BACKUP_DIR` holding the last backup's outcome.
const LAST_OUTCOME_FILE: &str = "last-backup.json";

/// How the last backup (scheduled or from the CLI) ended.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LastBackup {
    /// Unix ms.
    pub at: i64,
    pub ok: bool,
    /// The report's summary, or why it failed.
    pub detail: String,
}

/// One scheduled backup (`BACKUP_SCHEDULE`); the copies go to the object store too when
/// Spaces is configured.
pub async fn run_scheduled(config: &Settings, objects: &ObjectStore) {
    let remote = matches!(config.storage, StorageSettings::Spaces(_)).then_some(objects);
    let outcome = backup_all(config, remote).await;
    record_outcome(&config.backup_dir, outcome.as_ref());
    match outcome {
        Ok(report) => tracing::info!("{}", report.summary()),
        Err(e) => {
            metrics::counter!("backup_failures_total").increment(1);
            tracing::error!(error = format!("{e:#}"), "backup failed")
        }
    }
}

/// Records how a backup ended (best effort: a failure to record is logged, not raised).
pub fn record_outcome(dir: &std::path::Path, outcome: Result<&BackupReport, &anyhow::Error>) {
    let last = LastBackup {
        at: crate::store::now_millis(),
        ok: outcome.is_ok(),
        detail: match outcome {
            Ok(r) => r.summary(),
            Err(e) => format!("{e:#}"),
        },
    };
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!("{LAST_OUTCOME_FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec(&last).unwrap_or_default())?;
        std::fs::rename(tmp, dir.join(LAST_OUTCOME_FILE))
    };
    if let Err(e) = write() {
        tracing::warn!(error = %e, "the backup's outcome could not be recorded");
    }
}

/// The last recorded backup outcome, if any.
pub fn last_outcome(dir: &std::path::Path) -> Option<LastBackup> {
    let bytes = std::fs::read(dir.join(LAST_OUTCOME_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}
