//! Taking backups: a local set, retention, and the copy in the object store.

use super::*;

pub(super) struct LocalSet {
    pub(super) name: String,
    pub(super) dir: PathBuf,
    pub(super) files: Vec<BackedUpFile>,
    pub(super) manifest_bytes: Vec<u8>,
    pub(super) pruned: Vec<PathBuf>,
}

pub(super) fn backup_local(
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

pub(super) fn prune_local(
    backup_dir: &Path,
    keep: usize,
    now: i64,
) -> anyhow::Result<Vec<PathBuf>> {
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
        let sha = crate::crypto::sha256_hex(&bytes);
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
    let sha = crate::crypto::sha256_hex(&manifest_bytes);
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
