//! Verifying a set and swapping it in.

use super::*;

/// A set that passed every check, with the schema version of each copy.
pub(super) struct VerifiedSet {
    pub(super) files: Vec<(DbKind, PathBuf, i64)>,
}

pub(super) fn open_read_only(path: &Path) -> rusqlite::Result<Connection> {
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

pub(super) fn verify(from: &Path) -> anyhow::Result<(Manifest, VerifiedSet)> {
    let set = from.display();
    if !from.is_dir() {
        bail!("backup set {set} is not a folder");
    }
    let manifest = read_manifest(from)?;
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
        let version = verify_file(from, kind, f)?;
        files.push((kind, from.join(&f.file), version));
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

fn read_manifest(from: &Path) -> anyhow::Result<Manifest> {
    let set = from.display();
    let text = match std::fs::read(from.join(MANIFEST)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("backup set {set} is incomplete: {MANIFEST} is missing")
        }
        Err(e) => bail!("backup set {set}: {MANIFEST} cannot be read: {e}"),
    };
    serde_json::from_slice(&text)
        .map_err(|e| anyhow!("backup set {set}: {MANIFEST} is not a valid manifest: {e}"))
}

/// One listed file: a plain name in the set, the listed size and SHA-256; then the database
/// itself. Its schema version.
fn verify_file(from: &Path, kind: DbKind, f: &ManifestFile) -> anyhow::Result<i64> {
    let set = from.display();
    let plain = Path::new(&f.file).file_name().and_then(|n| n.to_str()) == Some(f.file.as_str())
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
    let (_, sha) =
        sha256_file(&path).map_err(|e| anyhow!("backup set {set}: {name} cannot be read: {e}"))?;
    if !sha.eq_ignore_ascii_case(&f.sha256) {
        bail!(
            "backup set {set}: {name} is damaged (sha256 {sha}, the manifest says {})",
            f.sha256
        );
    }
    verify_database(from, kind, f)
}

/// The database of a listed file: integrity, its kind's tables, the listed schema version and
/// one this build knows.
fn verify_database(from: &Path, kind: DbKind, f: &ManifestFile) -> anyhow::Result<i64> {
    let set = from.display();
    let name = &f.file;
    let unreadable = |e: rusqlite::Error| anyhow!("backup set {set}: {name} cannot be read: {e}");
    let conn = open_read_only(&from.join(name))
        .map_err(|e| anyhow!("backup set {set}: {name} cannot be opened: {e}"))?;
    integrity_check(&conn).map_err(|e| anyhow!("backup set {set}: {name}: {e}"))?;
    let tables = table_names(&conn).map_err(unreadable)?;
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
    let version = user_version(&conn).map_err(unreadable)?;
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
    Ok(version)
}

/// Restores the set in `from` over the configured databases. Synchronous (callers use
/// `spawn_blocking`). Nothing is changed unless the whole set verifies; the databases being
/// replaced are first copied to `BACKUP_DIR/pre-restore-<timestamp>/`. Refuses (error
/// [`crate::jobs::QueueHeld`]) while a server or a queue-working `poll` runs: each database
/// is replaced in one transaction, but a live server would go on from state the restore
/// replaced under it.
pub fn restore(settings: &Settings, from: &Path) -> anyhow::Result<RestoreReport> {
    // A running server would keep serving (and writing) from the databases being replaced,
    // and its workers would hold leases the restored queue knows nothing of. Holding the
    // queue lock for the whole restore also keeps a server from starting half-way through.
    let _queue = crate::jobs::lock_queue(&settings.events_db_path).context(
        "restore refused: stop the server first (e.g. `systemctl stop salesbot-sync`), then run restore again",
    )?;
    let (_, verified) = verify(from)?;
    let mut warnings = Vec::new();
    let safety_copy = save_current(settings, &mut warnings)?;

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
    let deletions_reapplied = if restored.iter().any(|r| r.db == DbKind::Tokens.name()) {
        reapply_deletions(&settings.token_db_path)?
    } else {
        0
    };
    let report = RestoreReport {
        from: from.to_path_buf(),
        safety_copy,
        restored,
        warnings,
        deletions_reapplied,
    };
    tracing::info!("{}", report.summary());
    Ok(report)
}

/// Safety copy of the databases there are now, in a `pre-restore-…` set of `BACKUP_DIR`
/// (`None`: there are none). A database that cannot be copied stops the restore before it
/// changes anything.
fn save_current(
    settings: &Settings,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Option<PathBuf>> {
    let present: Vec<(DbKind, PathBuf)> = ALL_KINDS
        .into_iter()
        .map(|k| (k, live_path(settings, k)))
        .filter(|(_, p)| p.exists())
        .collect();
    if present.is_empty() {
        return Ok(None);
    }
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
    Ok(Some(dir))
}

/// Online copy of a live database for the pre-restore safety folder. A failed integrity check
/// is a warning here (a damaged database is a common reason to restore).
pub(super) fn safety_copy_one(
    src_path: &Path,
    dest: &Path,
) -> anyhow::Result<(CopiedDb, Option<String>)> {
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
pub(super) fn restore_one(src: &Path, live: &Path, kind: DbKind) -> anyhow::Result<i64> {
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

/// Applies the deletion ledger again to a restored tokens database: a shop, page or Facebook
/// user deleted after the backup was taken is deleted from it again (its objects were deleted
/// then; without its record nothing syncs it back). A record written after the deletion (a
/// reinstall, a reconnect) is not that deletion's and stays. Returns the rows removed.
fn reapply_deletions(tokens_db: &Path) -> anyhow::Result<usize> {
    use crate::store::ledger::{Deleted, DeletionLedger};
    let entries = DeletionLedger::beside(tokens_db).read()?;
    if entries.is_empty() {
        return Ok(0);
    }
    let mut conn = crate::store::open_connection(tokens_db, DbKind::Tokens)?;
    let tx = conn.transaction()?;
    let mut removed = 0;
    for e in &entries {
        removed += match &e.what {
            Deleted::Shop { shop, .. } => tx.execute(
                "DELETE FROM shops WHERE domain = ?1 AND installed_at <= ?2",
                rusqlite::params![shop.as_str(), e.at],
            )?,
            Deleted::Page { page, .. } => {
                let pages = "SELECT page_id FROM pages WHERE page_id = ?1 AND created_at <= ?2";
                delete_pages(&tx, pages, page.as_str(), e.at)?
            }
            Deleted::FacebookUser { user } => {
                let pages = "SELECT page_id FROM pages WHERE fb_user_id = ?1 AND created_at <= ?2";
                delete_pages(&tx, pages, user.as_str(), e.at)?
                    + tx.execute(
                        "DELETE FROM facebook_users WHERE fb_user_id = ?1 AND updated_at <= ?2",
                        rusqlite::params![user.as_str(), e.at],
                    )?
            }
        };
    }
    tx.commit()?;
    if removed > 0 {
        tracing::warn!(
            removed,
            "restore: records of data deleted since the backup were removed again"
        );
    }
    Ok(removed)
}

/// Deletes the pages `select` names (with `id` and `at` bound) and their watermarks.
fn delete_pages(
    tx: &rusqlite::Transaction<'_>,
    select: &str,
    id: &str,
    at: i64,
) -> rusqlite::Result<usize> {
    let params = rusqlite::params![id, at];
    tx.execute(
        &format!("DELETE FROM conversation_watermarks WHERE page_id IN ({select})"),
        params,
    )?;
    tx.execute(
        &format!("DELETE FROM pages WHERE page_id IN ({select})"),
        params,
    )
}
