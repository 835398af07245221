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
//! API into a connection on the live path (safe while the server has the file open in WAL
//! mode: the change lands as one transaction) and re-runs the migrations.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Settings;
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

const ALL_KINDS: [DbKind; 3] = [DbKind::Tokens, DbKind::Sessions, DbKind::Events];

fn expected_tables(kind: DbKind) -> &'static [&'static str] {
    match kind {
        DbKind::Tokens => &["merchants", "shops", "pages", "facebook_users"],
        DbKind::Sessions => &["sessions", "oauth_states"],
        DbKind::Events => &["events"],
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
    }
}

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

// ---------------------------------------------------------------------------------------------
// Time and set names

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) → days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

struct UtcTime {
    y: i64,
    mo: u32,
    d: u32,
    h: u32,
    mi: u32,
    s: u32,
}

fn utc(secs: i64) -> UtcTime {
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    UtcTime {
        y,
        mo,
        d,
        h: (rem / 3600) as u32,
        mi: (rem % 3600 / 60) as u32,
        s: (rem % 60) as u32,
    }
}

/// `20261122T031500Z`
fn set_timestamp(secs: i64) -> String {
    let t = utc(secs);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.y, t.mo, t.d, t.h, t.mi, t.s
    )
}

/// `2026-11-22T03:15:00Z`
fn rfc3339(secs: i64) -> String {
    let t = utc(secs);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.y, t.mo, t.d, t.h, t.mi, t.s
    )
}

/// A set folder name: `YYYYMMDDTHHMMSSZ` with an optional `-N` suffix. Returns the sort key
/// (unix seconds, suffix) or `None` for anything else (such folders are never touched).
pub fn parse_set_name(name: &str) -> Option<(i64, u32)> {
    let (stamp, suffix) = match name.split_once('-') {
        Some((s, n)) => {
            if n.is_empty() || n.len() > 6 || !n.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (s, n.parse::<u32>().ok()?)
        }
        None => (name, 0),
    };
    let b = stamp.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = &stamp[r];
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())
            .flatten()
    };
    let (y, mo, d) = (digits(0..4)?, digits(4..6)?, digits(6..8)?);
    let (h, mi, s) = (digits(9..11)?, digits(11..13)?, digits(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let secs = days_from_civil(y, mo as u32, d as u32) * 86_400 + h * 3600 + mi * 60 + s;
    Some((secs, suffix))
}

/// Which sets to delete: all but the newest `keep` complete ones, plus incomplete ones that are
/// older than an hour. Names that are not set names are never returned.
fn plan_prune(sets: &[(String, bool)], keep: usize, now: i64) -> Vec<String> {
    let mut parsed: Vec<((i64, u32), &str, bool)> = sets
        .iter()
        .filter_map(|(n, complete)| parse_set_name(n).map(|k| (k, n.as_str(), *complete)))
        .collect();
    // Newest first.
    parsed.sort_by_key(|p| std::cmp::Reverse(p.0));
    let mut kept = 0;
    let mut out = Vec::new();
    for ((secs, _), name, complete) in parsed {
        if complete {
            if kept < keep {
                kept += 1;
            } else {
                out.push(name.to_string());
            }
        } else if now - secs > STALE_INCOMPLETE_SECS {
            out.push(name.to_string());
        }
    }
    out
}

/// Creates `parent/<prefix><timestamp>[-N]` atomically (never reusing an existing folder).
fn create_set_dir(parent: &Path, prefix: &str, now: i64) -> anyhow::Result<(String, PathBuf)> {
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create backup folder {}", parent.display()))?;
    let stamp = format!("{prefix}{}", set_timestamp(now));
    // Start above every existing suffix of this second, so names keep sorting in creation
    // order even after retention removed the unsuffixed one.
    let first = std::fs::read_dir(parent)
        .with_context(|| format!("cannot list {}", parent.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let rest = name.strip_prefix(stamp.as_str())?;
            match rest {
                "" => Some(1),
                _ => rest.strip_prefix('-')?.parse::<u32>().ok().map(|n| n + 1),
            }
        })
        .max()
        .unwrap_or(0);
    for n in first..first + 10_000 {
        let name = if n == 0 {
            stamp.clone()
        } else {
            format!("{stamp}-{n}")
        };
        let path = parent.join(&name);
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            // The token database holds (encrypted) credentials: owner only.
            builder.mode(0o700);
        }
        match builder.create(&path) {
            Ok(()) => return Ok((name, path)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("cannot create {}", path.display()));
            }
        }
    }
    bail!(
        "cannot create a backup set in {}: too many sets named {stamp}",
        parent.display()
    )
}

// ---------------------------------------------------------------------------------------------
// SQLite helpers

fn run_backup(b: &Backup<'_, '_>, pages_per_step: i32) -> rusqlite::Result<()> {
    let mut busy_since: Option<Instant> = None;
    loop {
        match b.step(pages_per_step)? {
            StepResult::Done => return Ok(()),
            StepResult::More => busy_since = None,
            _ => {
                // Busy or Locked: another connection holds a lock we need; wait and retry.
                let since = *busy_since.get_or_insert_with(Instant::now);
                if since.elapsed() > LOCK_WAIT {
                    return Err(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                        Some(format!(
                            "database stayed locked for {} s",
                            LOCK_WAIT.as_secs()
                        )),
                    ));
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        }
    }
}

/// `PRAGMA integrity_check` rows; `Ok(())` only for exactly one row `ok`.
fn integrity_check(conn: &Connection) -> Result<(), String> {
    let rows: Vec<String> = (|| {
        let mut st = conn.prepare("PRAGMA integrity_check")?;
        let rows = st
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok::<_, rusqlite::Error>(rows)
    })()
    .map_err(|e| format!("integrity check could not run: {e}"))?;
    if rows.len() == 1 && rows[0] == "ok" {
        Ok(())
    } else {
        let mut detail = rows.into_iter().take(3).collect::<Vec<_>>().join(" | ");
        if detail.is_empty() {
            detail = "no result".into();
        }
        Err(format!("integrity check failed: {detail}"))
    }
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

fn table_names(conn: &Connection) -> rusqlite::Result<HashSet<String>> {
    let mut st = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table'")?;
    let names = st
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<HashSet<_>>>()?;
    Ok(names)
}

/// The schema version this build's migrations bring a database to.
fn latest_schema_version(kind: DbKind) -> anyhow::Result<i64> {
    let mut mem = Connection::open_in_memory()?;
    kind.migrations().to_latest(&mut mem)?;
    Ok(user_version(&mem)?)
}

fn sha256_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let n = std::io::copy(&mut f, &mut h)?;
    Ok((n, hex::encode(h.finalize())))
}

fn fsync_dir(dir: &Path) {
    // Best effort: makes the rename of the manifest durable on Unix file systems.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Copies the live database at `src_path` into the new file `dest` with the online backup API
/// and checks the copy. Returns the copy's schema version, size and SHA-256.
///
/// The source connection pins one read snapshot for the whole copy, so the copy holds exactly
/// the transactions committed before it started, however many arrive meanwhile (a WAL reader
/// never blocks the writer, and a pinned snapshot never makes the backup restart).
fn copy_database(src_path: &Path, kind: DbKind, dest: &Path) -> anyhow::Result<CopiedDb> {
    if !src_path.exists() {
        // Not created yet: create it (empty, migrated) so every set has all databases.
        drop(crate::store::open_connection(src_path, kind)?);
    }
    let src = Connection::open_with_flags(
        src_path,
        OpenFlags::default() & !OpenFlags::SQLITE_OPEN_CREATE,
    )
    .with_context(|| format!("cannot open {}", src_path.display()))?;
    src.busy_timeout(Duration::from_secs(10))?;
    src.execute_batch("BEGIN DEFERRED")?;
    // The first read starts the snapshot; it lasts until COMMIT below.
    src.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })?;
    let mut dst =
        Connection::open(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    {
        let backup = Backup::new(&src, &mut dst)?;
        run_backup(&backup, PAGES_PER_STEP)
            .with_context(|| format!("online backup of {} failed", src_path.display()))?;
    }
    src.execute_batch("COMMIT")?;
    drop(src);

    // A self-contained file: no -wal/-shm beside it, readable with a read-only connection.
    let mode: String = dst.pragma_update_and_check(None, "journal_mode", "DELETE", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("delete") {
        bail!(
            "{}: could not switch the copy to rollback journal mode (got {mode})",
            dest.display()
        );
    }
    integrity_check(&dst).map_err(|e| anyhow!("{}: {e}", dest.display()))?;
    let schema_version = user_version(&dst)?;
    dst.close()
        .map_err(|(_, e)| anyhow!("{}: close failed: {e}", dest.display()))?;
    let (bytes, sha256) = sha256_file(dest)?;
    Ok(CopiedDb {
        schema_version,
        bytes,
        sha256,
    })
}

struct CopiedDb {
    schema_version: i64,
    bytes: u64,
    sha256: String,
}

fn write_manifest(dir: &Path, manifest: &Manifest) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec_pretty(manifest)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".manifest-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write the manifest in {}", dir.display()))?;
    tmp.write_all(&bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(dir.join(MANIFEST)).map_err(|e| {
        anyhow!(
            "cannot write the manifest in {}: {}",
            dir.display(),
            e.error
        )
    })?;
    fsync_dir(dir);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Backup

struct LocalSet {
    name: String,
    dir: PathBuf,
    files: Vec<BackedUpFile>,
    manifest_bytes: Vec<u8>,
    pruned: Vec<PathBuf>,
}

fn backup_local(
    dbs: Vec<(DbKind, PathBuf)>,
    backup_dir: PathBuf,
    keep: usize,
) -> anyhow::Result<LocalSet> {
    let now = crate::store::now_secs();
    let (name, dir) = create_set_dir(&backup_dir, "", now)?;
    let written = (|| -> anyhow::Result<(Vec<BackedUpFile>, Vec<u8>)> {
        let mut files = Vec::new();
        let mut entries = Vec::new();
        for (kind, src) in &dbs {
            let file = file_name_of(*kind);
            let dest = dir.join(&file);
            let c = copy_database(src, *kind, &dest)
                .with_context(|| format!("backup of the {} database failed", kind.name()))?;
            entries.push(ManifestFile {
                db: kind.name().to_string(),
                file,
                bytes: c.bytes,
                sha256: c.sha256.clone(),
                schema_version: c.schema_version,
            });
            files.push(BackedUpFile {
                db: kind.name(),
                path: dest,
                bytes: c.bytes,
                sha256: c.sha256,
                schema_version: c.schema_version,
                uploaded_key: None,
            });
        }
        let manifest = Manifest {
            created_at: rfc3339(now),
            files: entries,
        };
        write_manifest(&dir, &manifest)?;
        Ok((files, serde_json::to_vec_pretty(&manifest)?))
    })();
    let (files, manifest_bytes) = match written {
        Ok(v) => v,
        Err(e) => {
            // Never leave a half-written or unverified set behind.
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    let pruned = prune_local(&backup_dir, keep, now)?;
    Ok(LocalSet {
        name,
        dir,
        files,
        manifest_bytes,
        pruned,
    })
}

fn prune_local(backup_dir: &Path, keep: usize, now: i64) -> anyhow::Result<Vec<PathBuf>> {
    let mut sets = Vec::new();
    let rd = std::fs::read_dir(backup_dir)
        .with_context(|| format!("cannot list {}", backup_dir.display()))?;
    for entry in rd {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if parse_set_name(&name).is_none() {
            continue;
        }
        let complete = entry.path().join(MANIFEST).is_file();
        sets.push((name, complete));
    }
    let mut pruned = Vec::new();
    for name in plan_prune(&sets, keep, now) {
        let path = backup_dir.join(&name);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => pruned.push(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not prune an old backup set");
            }
        }
    }
    Ok(pruned)
}

/// Backs up every database into a new set in `BACKUP_DIR`, verifies it, applies retention and,
/// when `objects` is given (Spaces/S3 configured), uploads the set under `backups/<set>/` and
/// applies retention there too.
pub async fn backup_all(
    settings: &Settings,
    objects: Option<&ObjectStore>,
) -> anyhow::Result<BackupReport> {
    let dbs: Vec<(DbKind, PathBuf)> = ALL_KINDS
        .into_iter()
        .map(|k| (k, live_path(settings, k)))
        .collect();
    // No database at all means the paths point somewhere else (a CLI run from the wrong
    // folder): refuse rather than write an empty set that retention would then keep in place
    // of real ones.
    if dbs.iter().all(|(_, p)| !p.exists()) {
        return Err(anyhow!(
            "no database found at {} (check TOKEN_DB_PATH, SESSION_DB_PATH and EVENTS_DB_PATH, and the working folder)",
            dbs.iter().map(|(_, p)| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ));
    }
    let backup_dir = settings.backup_dir.clone();
    let keep = settings.backup_keep.max(1);
    let started = Instant::now();
    let local = tokio::task::spawn_blocking(move || backup_local(dbs, backup_dir, keep))
        .await
        .map_err(|e| anyhow!("backup task failed: {e}"))??;
    let mut report = BackupReport {
        set_dir: local.dir,
        files: local.files,
        pruned: local.pruned,
        pruned_remote: Vec::new(),
    };
    if let Some(store) = objects {
        upload_set(store, &local.name, &mut report, local.manifest_bytes).await?;
        report.pruned_remote = prune_remote(store, keep).await?;
    }
    tracing::info!(
        set = %report.set_dir.display(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "{}",
        report.summary()
    );
    Ok(report)
}

async fn upload_set(
    store: &ObjectStore,
    set: &str,
    report: &mut BackupReport,
    manifest_bytes: Vec<u8>,
) -> anyhow::Result<()> {
    let key_for = |file: &str| {
        keys::backup(set, file)
            .ok_or_else(|| anyhow!("bug: {set}/{file} is not a valid backup object key"))
    };
    for f in &mut report.files {
        let file = f
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow!("bug: backup file {} has no name", f.path.display()))?
            .to_string();
        let key = key_for(&file)?;
        let bytes = tokio::fs::read(&f.path)
            .await
            .with_context(|| format!("cannot read {}", f.path.display()))?;
        let sha = crate::objects::sha256_hex(&bytes);
        if sha != f.sha256 {
            bail!(
                "{} changed after it was verified (sha256 {} instead of {}); not uploading",
                f.path.display(),
                sha,
                f.sha256
            );
        }
        store
            .put(&key, bytes, &sha, "application/octet-stream")
            .await
            .with_context(|| format!("upload of {key} failed"))?;
        f.uploaded_key = Some(key.to_string());
    }
    // The manifest goes last: remotely too, its presence marks a complete set.
    let key = key_for(MANIFEST)?;
    let sha = crate::objects::sha256_hex(&manifest_bytes);
    store
        .put(&key, manifest_bytes, &sha, "application/json")
        .await
        .with_context(|| format!("upload of {key} failed"))?;
    Ok(())
}

async fn prune_remote(store: &ObjectStore, keep: usize) -> anyhow::Result<Vec<String>> {
    let prefix = keys::backups_prefix();
    let listed = store
        .list(&prefix)
        .await
        .context("cannot list remote backups")?;
    let mut by_set: BTreeMap<String, (bool, Vec<keys::ObjectKey>)> = BTreeMap::new();
    for key in listed {
        let Some(rest) = key.as_str().strip_prefix(prefix.as_str()) else {
            continue;
        };
        let Some((set, file)) = rest.split_once('/') else {
            continue;
        };
        let entry = by_set.entry(set.to_string()).or_default();
        if file == MANIFEST {
            entry.0 = true;
        }
        entry.1.push(key);
    }
    let sets: Vec<(String, bool)> = by_set.iter().map(|(n, (c, _))| (n.clone(), *c)).collect();
    let doomed = plan_prune(&sets, keep, crate::store::now_secs());
    for name in &doomed {
        if let Some((_, keys)) = by_set.get_mut(name) {
            // Manifest first, so a half-deleted set is never mistaken for a complete one.
            keys.sort_by_key(|k| !k.as_str().ends_with(MANIFEST));
            for k in keys.iter() {
                store
                    .delete(k)
                    .await
                    .with_context(|| format!("cannot delete {k}"))?;
            }
        }
    }
    Ok(doomed)
}

// ---------------------------------------------------------------------------------------------
// Restore

/// A set that passed every check, with the schema version of each copy.
struct VerifiedSet {
    files: Vec<(DbKind, PathBuf, i64)>,
}

fn open_read_only(path: &Path) -> rusqlite::Result<Connection> {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
}

/// Checks a backup set without changing anything: manifest present and parseable, every
/// database listed once, every file present with the listed size and SHA-256, integrity check
/// `ok`, expected tables present, schema not newer than this build knows.
pub fn verify_set(from: &Path) -> anyhow::Result<Manifest> {
    verify(from).map(|(m, _)| m)
}

fn verify(from: &Path) -> anyhow::Result<(Manifest, VerifiedSet)> {
    let set = from.display();
    if !from.is_dir() {
        bail!("backup set {set} is not a folder");
    }
    let manifest_path = from.join(MANIFEST);
    let text = match std::fs::read(&manifest_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("backup set {set} is incomplete: {MANIFEST} is missing")
        }
        Err(e) => bail!("backup set {set}: {MANIFEST} cannot be read: {e}"),
    };
    let manifest: Manifest = serde_json::from_slice(&text)
        .map_err(|e| anyhow!("backup set {set}: {MANIFEST} is not a valid manifest: {e}"))?;

    let mut seen: HashSet<&str> = HashSet::new();
    let mut files = Vec::new();
    for f in &manifest.files {
        let Some(kind) = kind_from_name(&f.db) else {
            bail!(
                "backup set {set}: {MANIFEST} lists an unknown database {:?}",
                f.db
            );
        };
        if !seen.insert(kind.name()) {
            bail!(
                "backup set {set}: {MANIFEST} lists the {} database twice",
                f.db
            );
        }
        let plain = Path::new(&f.file).file_name().and_then(|n| n.to_str())
            == Some(f.file.as_str())
            && !f.file.starts_with('.');
        if !plain {
            bail!(
                "backup set {set}: {MANIFEST} names an invalid file {:?}",
                f.file
            );
        }
        let path = from.join(&f.file);
        let name = &f.file;
        let meta = match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => m,
            Ok(_) => bail!("backup set {set}: {name} is not a file"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("backup set {set}: {name} is missing")
            }
            Err(e) => bail!("backup set {set}: {name} cannot be read: {e}"),
        };
        if meta.len() != f.bytes {
            bail!(
                "backup set {set}: {name} has {} bytes, the manifest says {}",
                meta.len(),
                f.bytes
            );
        }
        let (_, sha) = sha256_file(&path)
            .map_err(|e| anyhow!("backup set {set}: {name} cannot be read: {e}"))?;
        if !sha.eq_ignore_ascii_case(&f.sha256) {
            bail!(
                "backup set {set}: {name} is damaged (sha256 {sha}, the manifest says {})",
                f.sha256
            );
        }
        let conn = open_read_only(&path)
            .map_err(|e| anyhow!("backup set {set}: {name} cannot be opened: {e}"))?;
        integrity_check(&conn).map_err(|e| anyhow!("backup set {set}: {name}: {e}"))?;
        let tables = table_names(&conn)
            .map_err(|e| anyhow!("backup set {set}: {name} cannot be read: {e}"))?;
        let missing: Vec<&str> = expected_tables(kind)
            .iter()
            .copied()
            .filter(|t| !tables.contains(*t))
            .collect();
        if !missing.is_empty() {
            bail!(
                "backup set {set}: {name} is not a {} database (missing tables: {})",
                kind.name(),
                missing.join(", ")
            );
        }
        let version = user_version(&conn)
            .map_err(|e| anyhow!("backup set {set}: {name} cannot be read: {e}"))?;
        if version != f.schema_version {
            bail!(
                "backup set {set}: {name} has schema version {version}, the manifest says {}",
                f.schema_version
            );
        }
        let latest = latest_schema_version(kind)?;
        if version > latest {
            bail!(
                "backup set {set}: {name} was made by a newer salesbot-sync (schema version {version}, this build knows up to {latest})"
            );
        }
        drop(conn);
        files.push((kind, path, version));
    }
    for kind in ALL_KINDS {
        if !seen.contains(kind.name()) {
            bail!(
                "backup set {set} is incomplete: the {} database ({}) is not in the manifest",
                kind.name(),
                file_name_of(kind)
            );
        }
    }
    // Restore in a fixed order.
    files.sort_by_key(|(k, _, _)| ALL_KINDS.iter().position(|x| x == k));
    Ok((manifest, VerifiedSet { files }))
}

/// Restores the set in `from` over the configured databases. Synchronous (callers use
/// `spawn_blocking`). Nothing is changed unless the whole set verifies; the databases being
/// replaced are first copied to `BACKUP_DIR/pre-restore-<timestamp>/`. Stopping the server
/// first is recommended but not required: each database is replaced in one transaction.
pub fn restore(settings: &Settings, from: &Path) -> anyhow::Result<RestoreReport> {
    let (_, verified) = verify(from)?;
    let mut warnings = Vec::new();

    // Safety copy of what is there now.
    let present: Vec<(DbKind, PathBuf)> = ALL_KINDS
        .into_iter()
        .map(|k| (k, live_path(settings, k)))
        .filter(|(_, p)| p.exists())
        .collect();
    let safety_copy = if present.is_empty() {
        None
    } else {
        let now = crate::store::now_secs();
        let (_, dir) = create_set_dir(&settings.backup_dir, PRE_RESTORE_PREFIX, now)?;
        let mut entries = Vec::new();
        for (kind, path) in &present {
            let file = file_name_of(*kind);
            let dest = dir.join(&file);
            match safety_copy_one(path, &dest) {
                Ok((c, warning)) => {
                    if let Some(w) = warning {
                        warnings.push(format!("current {} database: {w}", kind.name()));
                    }
                    entries.push(ManifestFile {
                        db: kind.name().to_string(),
                        file,
                        bytes: c.bytes,
                        sha256: c.sha256,
                        schema_version: c.schema_version,
                    });
                }
                Err(e) => bail!(
                    "nothing was restored: could not save the current {} database {} to {} ({e:#}); if the file is damaged beyond opening, move it aside and run restore again",
                    kind.name(),
                    path.display(),
                    dir.display()
                ),
            }
        }
        write_manifest(
            &dir,
            &Manifest {
                created_at: rfc3339(now),
                files: entries,
            },
        )?;
        Some(dir)
    };

    let mut restored = Vec::new();
    for (kind, src, version) in &verified.files {
        let live = live_path(settings, *kind);
        let after = restore_one(src, &live, *kind).map_err(|e| {
            let done: Vec<&str> = restored.iter().map(|r: &RestoredDb| r.db).collect();
            let saved = safety_copy
                .as_ref()
                .map(|p| format!("; the previous databases are in {}", p.display()))
                .unwrap_or_default();
            anyhow!(
                "restore of the {} database into {} failed after restoring [{}]: {e:#}{saved}",
                kind.name(),
                live.display(),
                done.join(", ")
            )
        })?;
        restored.push(RestoredDb {
            db: kind.name(),
            path: live,
            schema_version_backup: *version,
            schema_version_now: after,
        });
    }
    let report = RestoreReport {
        from: from.to_path_buf(),
        safety_copy,
        restored,
        warnings,
    };
    tracing::info!("{}", report.summary());
    Ok(report)
}

/// Online copy of a live database for the pre-restore safety folder. A failed integrity check
/// is a warning here (a damaged database is a common reason to restore).
fn safety_copy_one(src_path: &Path, dest: &Path) -> anyhow::Result<(CopiedDb, Option<String>)> {
    let src = Connection::open_with_flags(
        src_path,
        OpenFlags::default() & !OpenFlags::SQLITE_OPEN_CREATE,
    )?;
    src.busy_timeout(Duration::from_secs(10))?;
    src.execute_batch("BEGIN DEFERRED")?;
    src.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })?;
    let mut dst = Connection::open(dest)?;
    {
        let backup = Backup::new(&src, &mut dst)?;
        run_backup(&backup, PAGES_PER_STEP)?;
    }
    src.execute_batch("COMMIT")?;
    drop(src);
    dst.pragma_update_and_check(None, "journal_mode", "DELETE", |r| r.get::<_, String>(0))?;
    let warning = integrity_check(&dst).err();
    let schema_version = user_version(&dst).unwrap_or(0);
    dst.close().map_err(|(_, e)| anyhow!("close failed: {e}"))?;
    let (bytes, sha256) = sha256_file(dest)?;
    Ok((
        CopiedDb {
            schema_version,
            bytes,
            sha256,
        },
        warning,
    ))
}

/// Replaces the database at `live` with the verified copy `src` through the backup API (one
/// write transaction on the live file, so connections that have it open see either the old or
/// the new database), then applies any newer migrations. Returns the schema version after.
fn restore_one(src: &Path, live: &Path, kind: DbKind) -> anyhow::Result<i64> {
    if let Some(dir) = live.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let source = open_read_only(src)?;
    let mut dst = Connection::open(live)?;
    crate::store::configure(&dst)?;
    {
        let backup = Backup::new(&source, &mut dst)?;
        // All pages in one step: the source is a quiet file, and the live file changes in one
        // transaction.
        run_backup(&backup, -1)?;
    }
    drop(source);
    integrity_check(&dst).map_err(|e| anyhow!("restored file {}: {e}", live.display()))?;
    dst.close().map_err(|(_, e)| anyhow!("close failed: {e}"))?;
    // Bring an older backup up to this build's schema (and back to WAL mode).
    let conn = crate::store::open_connection(live, kind)?;
    Ok(user_version(&conn)?)
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use secrecy::{ExposeSecret, SecretString};

    use super::*;
    use crate::config::StorageSettings;
    use crate::crypto::TokenCipher;
    use crate::objects::keys::{GraphId, ShopDomain};
    use crate::store::tokens::ShopGrant;
    use crate::store::{Db, SessionStore, TokenStore};

    const KEY_B64: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

    fn settings(dir: &Path, keep: usize) -> Settings {
        let p = |n: &str| dir.join(n).display().to_string();
        let vars: HashMap<String, String> = [
            ("TOKEN_DB_PATH", p("live/tokens.db")),
            ("SESSION_DB_PATH", p("live/sessions.db")),
            ("EVENTS_DB_PATH", p("live/events.db")),
            ("BACKUP_DIR", p("backups")),
            ("STORAGE_DIR", p("objects")),
            ("BACKUP_KEEP", keep.to_string()),
            ("TOKEN_ENCRYPTION_KEY", KEY_B64.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let s = Settings::from_vars(&vars).unwrap();
        // A service that has run once has its token database.
        drop(crate::store::open_connection(&s.token_db_path, DbKind::Tokens).unwrap());
        s
    }

    fn tokens(s: &Settings) -> TokenStore {
        TokenStore::new(
            Db::open(&s.token_db_path, DbKind::Tokens).unwrap(),
            TokenCipher::new(s.token_key_bytes()),
        )
    }

    fn sessions(s: &Settings) -> SessionStore {
        SessionStore::new(Db::open(&s.session_db_path, DbKind::Sessions).unwrap())
    }

    fn grant(token: &str) -> ShopGrant {
        ShopGrant {
            access_token: SecretString::from(token.to_string()),
            scopes: "read_products".into(),
            expires_at: None,
            refresh_token: None,
            refresh_token_expires_at: None,
        }
    }

    fn remove_db_files(path: &Path) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(p));
        }
    }

    fn file_bytes(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    fn set_dirs(backup_dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(backup_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| parse_set_name(n).is_some())
            .collect();
        v.sort_by_key(|n| parse_set_name(n).unwrap());
        v
    }

    #[test]
    fn timestamps_and_set_names() {
        assert_eq!(set_timestamp(0), "19700101T000000Z");
        assert_eq!(rfc3339(1_795_317_300), "2026-11-22T03:15:00Z");
        assert_eq!(set_timestamp(1_795_317_300), "20261122T031500Z");
        assert_eq!(parse_set_name("20261122T031500Z"), Some((1_795_317_300, 0)));
        assert_eq!(
            parse_set_name("20261122T031500Z-12"),
            Some((1_795_317_300, 12))
        );
        for t in [0, 951_782_400, 1_709_164_800, 4_102_444_799] {
            assert_eq!(parse_set_name(&set_timestamp(t)), Some((t, 0)));
        }
        for bad in [
            "",
            "latest",
            "pre-restore-20261122T031500Z",
            "20261122T031500",
            "20261122T031500Z-",
            "20261122T031500Z-x",
            "20261322T031500Z",
            "2026112xT031500Z",
            "20261122T031500Z/..",
        ] {
            assert!(parse_set_name(bad).is_none(), "{bad:?} accepted");
        }
    }

    #[test]
    fn prune_plan_keeps_newest_complete_sets_and_ignores_other_names() {
        let now = 1_795_317_300;
        let sets: Vec<(String, bool)> = vec![
            ("20261120T031500Z".into(), true),
            ("20261121T031500Z".into(), true),
            ("20261122T031500Z".into(), true),
            ("20261122T031500Z-1".into(), true),
            ("20261119T000000Z".into(), false), // stale incomplete
            ("20261122T031400Z".into(), false), // a minute old: maybe running elsewhere
            ("notes".into(), true),
        ];
        let mut doomed = plan_prune(&sets, 2, now);
        doomed.sort();
        assert_eq!(
            doomed,
            vec![
                "20261119T000000Z".to_string(),
                "20261120T031500Z".to_string(),
                "20261121T031500Z".to_string()
            ]
        );
    }

    #[tokio::test]
    async fn round_trip_restores_rows_and_merchant_uuids() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 3);
        let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
        let page = GraphId::parse("1234567").unwrap();
        let (merchant, session_id) = {
            let t = tokens(&s);
            let m = t
                .save_shop_grant(&shop, grant("shpat_secret"), None)
                .await
                .unwrap();
            t.save_page(
                &page,
                m,
                None,
                Some("Acme".into()),
                &SecretString::from("EAAB"),
            )
            .await
            .unwrap();
            let sid = sessions(&s).create(m).await.unwrap();
            (m, sid)
        };

        let report = backup_all(&s, None).await.unwrap();
        assert_eq!(report.files.len(), 3);
        assert!(report.set_dir.join(MANIFEST).is_file());
        for f in &report.files {
            assert!(f.path.is_file());
            assert_eq!(f.sha256.len(), 64);
            assert!(f.uploaded_key.is_none());
        }
        // Self-contained copies: no WAL files beside them.
        assert!(!report.set_dir.join("tokens.db-wal").exists());
        let summary = report.summary();
        assert!(
            summary.contains("tokens") && !summary.contains('\n'),
            "{summary}"
        );

        for p in [&s.token_db_path, &s.session_db_path, &s.events_db_path] {
            remove_db_files(p);
        }
        assert!(!s.token_db_path.exists());

        let r = restore(&s, &report.set_dir).unwrap();
        assert_eq!(r.restored.len(), 3);
        assert!(r.safety_copy.is_none(), "nothing was there to save");
        assert!(!r.summary().contains('\n'));

        let t = tokens(&s);
        let rec = t.shop(&shop).await.unwrap().expect("shop is back");
        assert_eq!(rec.merchant, merchant);
        assert_eq!(
            rec.access_token.unwrap().expose_secret(),
            "shpat_secret",
            "tokens still decrypt with the same key"
        );
        let p = t.page(&page).await.unwrap().expect("page is back");
        assert_eq!(p.merchant, merchant);
        assert_eq!(
            sessions(&s).merchant(&session_id).await.unwrap(),
            Some(merchant)
        );
        // Restored files are live databases again (WAL, migrated).
        let c = crate::store::open_connection(&s.token_db_path, DbKind::Tokens).unwrap();
        let mode: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[tokio::test]
    async fn restore_replaces_a_database_that_is_open_and_keeps_a_safety_copy() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 3);
        let t = tokens(&s);
        let a = ShopDomain::parse("a.myshopify.com").unwrap();
        let b = ShopDomain::parse("b.myshopify.com").unwrap();
        let ma = t.save_shop_grant(&a, grant("ta"), None).await.unwrap();
        let report = backup_all(&s, None).await.unwrap();
        // Written after the backup, through a connection that stays open across the restore.
        t.save_shop_grant(&b, grant("tb"), None).await.unwrap();

        let set = report.set_dir.clone();
        let s2 = settings(dir.path(), 3);
        let r = tokio::task::spawn_blocking(move || restore(&s2, &set))
            .await
            .unwrap()
            .unwrap();

        // The open connection sees the restored database.
        assert!(t.shop(&b).await.unwrap().is_none());
        assert_eq!(t.shop(&a).await.unwrap().unwrap().merchant, ma);

        // The pre-restore copy holds what was replaced, and is itself a restorable set.
        let safety = r.safety_copy.expect("a safety copy");
        assert!(safety
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(PRE_RESTORE_PREFIX));
        verify_set(&safety).unwrap();
        let c = open_read_only(&safety.join("tokens.db")).unwrap();
        let n: i64 = c
            .query_row("SELECT count(*) FROM shops", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
    }

    #[tokio::test]
    async fn retention_keeps_backup_keep_sets_and_nothing_else_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 2);
        std::fs::create_dir_all(s.backup_dir.join("keep-me")).unwrap();
        std::fs::create_dir_all(s.backup_dir.join("pre-restore-20200101T000000Z")).unwrap();
        std::fs::write(s.backup_dir.join("notes.txt"), "hi").unwrap();
        let mut made = Vec::new();
        for _ in 0..4 {
            let r = backup_all(&s, None).await.unwrap();
            made.push(r.set_name());
        }
        let left = set_dirs(&s.backup_dir);
        assert_eq!(left, made[2..].to_vec(), "the two newest sets remain");
        assert!(s.backup_dir.join("keep-me").is_dir());
        assert!(s.backup_dir.join("pre-restore-20200101T000000Z").is_dir());
        assert!(s.backup_dir.join("notes.txt").is_file());
    }

    #[tokio::test]
    async fn a_corrupted_backup_is_refused_and_live_databases_are_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 3);
        let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
        {
            let t = tokens(&s);
            t.save_shop_grant(&shop, grant("x"), None).await.unwrap();
        }
        let report = backup_all(&s, None).await.unwrap();
        {
            // Live data moves on after the backup.
            let t = tokens(&s);
            let other = ShopDomain::parse("other.myshopify.com").unwrap();
            t.save_shop_grant(&other, grant("y"), None).await.unwrap();
        }
        let before: Vec<Vec<u8>> = [&s.token_db_path, &s.session_db_path, &s.events_db_path]
            .iter()
            .map(|p| file_bytes(p))
            .collect();

        let victim = report.set_dir.join("tokens.db");
        let mut bytes = file_bytes(&victim);
        let mid = bytes.len() / 2;
        for b in &mut bytes[mid..mid + 16] {
            *b ^= 0xff;
        }
        std::fs::write(&victim, &bytes).unwrap();

        let err = restore(&s, &report.set_dir).unwrap_err().to_string();
        assert!(err.contains("tokens.db"), "{err}");
        assert!(err.contains("damaged"), "{err}");
        assert!(!err.contains('\n'), "{err}");

        let after: Vec<Vec<u8>> = [&s.token_db_path, &s.session_db_path, &s.events_db_path]
            .iter()
            .map(|p| file_bytes(p))
            .collect();
        assert!(before == after, "live databases were modified");
        let names: Vec<String> = std::fs::read_dir(&s.backup_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names.iter().any(|n| n.starts_with(PRE_RESTORE_PREFIX)),
            "nothing is done before verification passes: {names:?}"
        );
    }

    #[tokio::test]
    async fn a_corruption_that_keeps_the_hash_is_caught_by_the_integrity_check() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 3);
        {
            let t = tokens(&s);
            for i in 0..200 {
                let d = ShopDomain::parse(&format!("s{i}.myshopify.com")).unwrap();
                t.save_shop_grant(&d, grant("x"), None).await.unwrap();
            }
        }
        let report = backup_all(&s, None).await.unwrap();
        let victim = report.set_dir.join("tokens.db");
        let mut bytes = file_bytes(&victim);
        // Wreck the b-tree page headers of every page but the first.
        let page = 4096;
        for p in (page..bytes.len()).step_by(page) {
            bytes[p] = 0x42;
            bytes[p + 1..p + 8].fill(0xff);
        }
        std::fs::write(&victim, &bytes).unwrap();
        // Someone "fixes" the manifest to match: the integrity check must still refuse it.
        let mpath = report.set_dir.join(MANIFEST);
        let mut m: Manifest = serde_json::from_slice(&file_bytes(&mpath)).unwrap();
        for f in &mut m.files {
            if f.db == "tokens" {
                f.sha256 = sha256_file(&victim).unwrap().1;
            }
        }
        std::fs::write(&mpath, serde_json::to_vec(&m).unwrap()).unwrap();
        let err = restore(&s, &report.set_dir).unwrap_err().to_string();
        assert!(err.contains("tokens.db"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[tokio::test]
    async fn a_set_missing_a_database_or_its_manifest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 5);
        let a = backup_all(&s, None).await.unwrap();
        let b = backup_all(&s, None).await.unwrap();
        let tokens_before = file_bytes(&s.token_db_path);

        std::fs::remove_file(a.set_dir.join("events.db")).unwrap();
        let err = restore(&s, &a.set_dir).unwrap_err().to_string();
        assert!(
            err.contains("events.db") && err.contains("missing"),
            "{err}"
        );

        std::fs::remove_file(b.set_dir.join(MANIFEST)).unwrap();
        let err = restore(&s, &b.set_dir).unwrap_err().to_string();
        assert!(err.contains(MANIFEST) && err.contains("missing"), "{err}");

        // A manifest that leaves a database out is refused too.
        let c = backup_all(&s, None).await.unwrap();
        let mpath = c.set_dir.join(MANIFEST);
        let mut m: Manifest = serde_json::from_slice(&file_bytes(&mpath)).unwrap();
        m.files.retain(|f| f.db != "sessions");
        std::fs::write(&mpath, serde_json::to_vec(&m).unwrap()).unwrap();
        let err = restore(&s, &c.set_dir).unwrap_err().to_string();
        assert!(err.contains("sessions"), "{err}");

        let err = restore(&s, &dir.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a folder"), "{err}");

        assert_eq!(file_bytes(&s.token_db_path), tokens_before);
    }

    #[tokio::test]
    async fn a_backup_with_no_database_at_all_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 3);
        std::fs::remove_dir_all(s.token_db_path.parent().unwrap()).unwrap();
        let err = backup_all(&s, None).await.unwrap_err().to_string();
        assert!(err.contains("no database found"), "{err}");
        assert!(
            !s.backup_dir.exists() || std::fs::read_dir(&s.backup_dir).unwrap().next().is_none()
        );
    }

    #[tokio::test]
    async fn a_backup_creates_a_database_that_is_missing_so_every_set_is_complete() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 3);
        let r = backup_all(&s, None).await.unwrap();
        let dbs: Vec<&str> = r.files.iter().map(|f| f.db).collect();
        assert_eq!(dbs, vec!["tokens", "sessions", "events"]);
        assert!(s.events_db_path.is_file());
        let m = verify_set(&r.set_dir).unwrap();
        assert_eq!(m.files.len(), 3);
        assert!(m.files.iter().all(|f| f.schema_version >= 1));
    }

    #[tokio::test]
    async fn backup_uploads_the_set_under_backups_and_prunes_remote_sets() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 2);
        let objects_dir = dir.path().join("objects");
        let store = ObjectStore::from_settings(&StorageSettings::Local {
            dir: objects_dir.clone(),
        })
        .unwrap();
        let mut names = Vec::new();
        for _ in 0..3 {
            let r = backup_all(&s, Some(&store)).await.unwrap();
            let set = r.set_name();
            for f in &r.files {
                let key = f.uploaded_key.as_deref().expect("uploaded");
                assert_eq!(key, format!("backups/{set}/{}.db", f.db));
                let stored = std::fs::read(objects_dir.join(key)).unwrap();
                assert_eq!(crate::objects::sha256_hex(&stored), f.sha256);
            }
            let manifest = std::fs::read(objects_dir.join(format!("backups/{set}/{MANIFEST}")));
            assert!(manifest.is_ok(), "manifest uploaded");
            assert!(r.summary().contains("uploaded"), "{}", r.summary());
            names.push(set);
        }
        let keys = store.list(&keys::backups_prefix()).await.unwrap();
        let mut remote_sets: Vec<String> = keys
            .iter()
            .map(|k| k.as_str().split('/').nth(1).unwrap().to_string())
            .collect();
        remote_sets.sort_by_key(|n| parse_set_name(n).unwrap());
        remote_sets.dedup();
        assert_eq!(remote_sets, names[1..].to_vec());
        assert_eq!(keys.len(), 2 * 4);
    }

    #[test]
    fn a_backup_taken_during_writes_holds_a_consistent_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("events.db");
        drop(crate::store::open_connection(&db, DbKind::Events).unwrap());
        // Enough rows for many backup steps.
        let w = crate::store::open_connection(&db, DbKind::Events).unwrap();
        let insert = |c: &Connection, i: i64| {
            c.execute(
                "INSERT INTO events (kind, pool, dedupe_key, group_key, payload, run_at, received_at)
                 VALUES ('k', 'messages', ?1, 'g', zeroblob(2000), 0, 0)",
                [format!("d{i}")],
            )
            .unwrap();
        };
        w.execute_batch("BEGIN").unwrap();
        for i in 0..8000 {
            insert(&w, i);
        }
        w.execute_batch("COMMIT").unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let stop = stop.clone();
            let db = db.clone();
            std::thread::spawn(move || {
                let c = crate::store::open_connection(&db, DbKind::Events).unwrap();
                let mut i = 1_000_000;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    insert(&c, i);
                    i += 1;
                }
                i - 1_000_000
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        let dest = dir.path().join("copy.db");
        let c = copy_database(&db, DbKind::Events, &dest).unwrap();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let written = writer.join().unwrap();
        assert!(written > 0, "the writer kept writing");
        let copy = open_read_only(&dest).unwrap();
        integrity_check(&copy).unwrap();
        let n: i64 = copy
            .query_row(
                "SELECT count(*) FROM events WHERE dedupe_key LIKE 'd%' AND length(dedupe_key) < 6",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 8000);
        assert_eq!(
            c.schema_version,
            latest_schema_version(DbKind::Events).unwrap()
        );
    }
}
