//! A `catalog.db` that is not a database any more (a disk or copy gone wrong) is moved aside and
//! started afresh: the catalogue is a cache rebuilt from Shopify, so losing it costs full syncs,
//! while refusing to start would stop every shop's and page's sync until someone intervenes.

use std::path::{Path, PathBuf};

use rusqlite::ErrorCode;

use crate::store::StoreError;

/// Whether opening a database failed because the file is not a database or is corrupt. Only
/// those: a permission denied, a full disk or a locked file are not the file's fault, and
/// moving it aside would throw away a good cache (and fail again on the fresh one anyway).
pub(super) fn is_corrupt(e: &StoreError) -> bool {
    let sqlite = match e {
        StoreError::Sqlite(e) => e,
        StoreError::Migration(rusqlite_migration::Error::RusqliteError { err, .. }) => err,
        _ => return false,
    };
    matches!(
        sqlite.sqlite_error_code(),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
    )
}

/// Moves `path` to `<path>.corrupt-<UTC time>`, with its `-wal` and `-shm` files when there are
/// any (kept beside it, named after it, so the three can still be opened together to look at).
/// Returns where the database went.
pub(super) fn move_aside(path: &Path) -> Result<PathBuf, StoreError> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let aside = PathBuf::from(format!("{}.corrupt-{stamp}", path.display()));
    let failed = |e: std::io::Error| StoreError::Open {
        path: path.to_path_buf(),
        reason: format!("corrupt, and moving it to {} failed: {e}", aside.display()),
    };
    std::fs::rename(path, &aside).map_err(failed)?;
    for suffix in ["-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", path.display()));
        if from.exists() {
            let to = PathBuf::from(format!("{}{suffix}", aside.display()));
            std::fs::rename(&from, &to).map_err(failed)?;
        }
    }
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Db, DbKind};

    #[test]
    fn garbage_is_corrupt_and_a_missing_folder_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let e = Db::open(&path, DbKind::Catalog)
            .err()
            .expect("garbage fails");
        assert!(is_corrupt(&e), "{e}");
        // A folder where the file should be: an error, but not the file's content.
        let folder = dir.path().join("folder.db");
        std::fs::create_dir(&folder).unwrap();
        let e = Db::open(&folder, DbKind::Catalog)
            .err()
            .expect("a folder fails");
        assert!(!is_corrupt(&e), "{e}");
    }

    #[test]
    fn the_database_moves_aside_with_its_wal_and_shm() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        for (suffix, bytes) in [("", "db"), ("-wal", "wal"), ("-shm", "shm")] {
            std::fs::write(format!("{}{suffix}", path.display()), bytes).unwrap();
        }
        let aside = move_aside(&path).unwrap();
        assert!(!path.exists());
        assert!(aside
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("catalog.db.corrupt-"));
        for (suffix, bytes) in [("", "db"), ("-wal", "wal"), ("-shm", "shm")] {
            let moved = format!("{}{suffix}", aside.display());
            assert_eq!(std::fs::read_to_string(moved).unwrap(), bytes);
        }
    }
}
