//! SQLite helpers: online backup in steps, integrity and schema checks, copies.

use super::*;

pub(super) fn run_backup(b: &Backup<'_, '_>, pages_per_step: i32) -> rusqlite::Result<()> {
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
pub(super) fn integrity_check(conn: &Connection) -> Result<(), String> {
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

pub(super) fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

pub(super) fn table_names(conn: &Connection) -> rusqlite::Result<HashSet<String>> {
    let mut st = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table'")?;
    let names = st
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<HashSet<_>>>()?;
    Ok(names)
}

/// The schema version this build's migrations bring a database to.
pub(super) fn latest_schema_version(kind: DbKind) -> anyhow::Result<i64> {
    let mut mem = Connection::open_in_memory()?;
    kind.migrations().to_latest(&mut mem)?;
    Ok(user_version(&mem)?)
}

pub(super) fn sha256_file(path: &Path) -> std::io::Result<(u64, String)> {
    crate::crypto::sha256_reader(std::fs::File::open(path)?)
}

pub(super) fn fsync_dir(dir: &Path) {
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
pub(super) fn copy_database(
    src_path: &Path,
    kind: DbKind,
    dest: &Path,
) -> anyhow::Result<CopiedDb> {
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

pub(super) struct CopiedDb {
    pub(super) schema_version: i64,
    pub(super) bytes: u64,
    pub(super) sha256: String,
}

pub(super) fn write_manifest(dir: &Path, manifest: &Manifest) -> anyhow::Result<()> {
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
