//! Local-folder backend: the embedded default. Each object is a file under the root; writes go
//! to a temp file in the same folder and are renamed into place, so a reader never sees half
//! an object. The SHA-256 is computed from the file (a local read, not a download).

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{ObjectError, ObjectKey};

pub struct LocalStore {
    root: PathBuf,
}

fn io_err(key: &str, e: impl std::fmt::Display) -> ObjectError {
    ObjectError::Io {
        key: key.to_string(),
        reason: e.to_string(),
    }
}

impl LocalStore {
    pub fn new(root: &Path) -> Result<LocalStore, ObjectError> {
        std::fs::create_dir_all(root).map_err(|e| io_err(&root.display().to_string(), e))?;
        Ok(LocalStore {
            root: root.to_path_buf(),
        })
    }

    fn path(&self, key: &str) -> PathBuf {
        // Keys come from `keys`, which never yields `..` or empty segments.
        key.split('/').fold(self.root.clone(), |p, seg| p.join(seg))
    }

    /// Hashed from the file in chunks on the blocking pool: a catalogue object can be
    /// hundreds of megabytes, and memory must not grow with it.
    pub async fn head_sha256(&self, key: &ObjectKey) -> Result<Option<String>, ObjectError> {
        let path = self.path(key.as_str());
        let k = key.as_str().to_string();
        tokio::task::spawn_blocking(move || -> Result<Option<String>, ObjectError> {
            let file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io_err(&k, e)),
            };
            let (_, sha) = crate::crypto::sha256_reader(file).map_err(|e| io_err(&k, e))?;
            Ok(Some(sha))
        })
        .await
        .map_err(|e| io_err(key.as_str(), e))?
    }

    pub async fn get(&self, key: &ObjectKey) -> Result<Option<Vec<u8>>, ObjectError> {
        match tokio::fs::read(self.path(key.as_str())).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(key.as_str(), e)),
        }
    }

    pub async fn put(&self, key: &ObjectKey, bytes: Vec<u8>) -> Result<(), ObjectError> {
        let path = self.path(key.as_str());
        let k = key.as_str().to_string();
        tokio::task::spawn_blocking(move || -> Result<(), ObjectError> {
            let dir = path.parent().expect("object paths have a parent");
            std::fs::create_dir_all(dir).map_err(|e| io_err(&k, e))?;
            let mut tmp = tempfile::Builder::new()
                .prefix(".tmp-")
                .tempfile_in(dir)
                .map_err(|e| io_err(&k, e))?;
            tmp.write_all(&bytes).map_err(|e| io_err(&k, e))?;
            tmp.as_file().sync_all().map_err(|e| io_err(&k, e))?;
            tmp.persist(&path).map_err(|e| io_err(&k, e.error))?;
            Ok(())
        })
        .await
        .map_err(|e| io_err(key.as_str(), e))?
    }

    /// Starts a streamed write of `key`: a temporary file next to it, renamed into place by
    /// `StreamingFile::finish`.
    pub async fn begin(&self, key: &ObjectKey) -> Result<StreamingFile, ObjectError> {
        let path = self.path(key.as_str());
        let k = key.as_str().to_string();
        tokio::task::spawn_blocking(move || {
            let dir = path.parent().expect("object paths have a parent");
            std::fs::create_dir_all(dir).map_err(|e| io_err(&k, e))?;
            let tmp = tempfile::Builder::new()
                .prefix(".tmp-")
                .tempfile_in(dir)
                .map_err(|e| io_err(&k, e))?;
            Ok(StreamingFile {
                tmp: Some(tmp),
                dest: path,
                key: k,
            })
        })
        .await
        .map_err(|e| io_err(key.as_str(), e))?
    }

    pub async fn delete(&self, key: &ObjectKey) -> Result<(), ObjectError> {
        match tokio::fs::remove_file(self.path(key.as_str())).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(key.as_str(), e)),
        }
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, ObjectError> {
        let root = self.root.clone();
        let start = self.path(prefix.trim_end_matches('/'));
        let p = prefix.to_string();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let mut stack = vec![start];
            while let Some(dir) = stack.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err(&p, e)),
                };
                for entry in entries {
                    let entry = entry.map_err(|e| io_err(&p, e))?;
                    let path = entry.path();
                    let ft = entry.file_type().map_err(|e| io_err(&p, e))?;
                    if ft.is_dir() {
                        stack.push(path);
                    } else if ft.is_file()
                        && !entry.file_name().to_string_lossy().starts_with(".tmp-")
                    {
                        if let Ok(rel) = path.strip_prefix(&root) {
                            let key: Vec<String> = rel
                                .components()
                                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                                .collect();
                            out.push(key.join("/"));
                        }
                    }
                }
            }
            out.sort();
            Ok(out)
        })
        .await
        .map_err(|e| io_err(prefix, e))?
    }

    /// The "folders" directly under `prefix` (`<prefix><name>/`), as an S3 listing with
    /// the delimiter `/` gives them.
    pub async fn list_folders(&self, prefix: &str) -> Result<Vec<String>, ObjectError> {
        let dir = self.path(prefix.trim_end_matches('/'));
        let p = prefix.to_string();
        tokio::task::spawn_blocking(move || {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(io_err(&p, e)),
            };
            let mut out = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|e| io_err(&p, e))?;
                if entry.file_type().map_err(|e| io_err(&p, e))?.is_dir() {
                    out.push(format!("{p}{}/", entry.file_name().to_string_lossy()));
                }
            }
            out.sort();
            Ok(out)
        })
        .await
        .map_err(|e| io_err(prefix, e))?
    }

    pub async fn check_ready(&self) -> Result<(), ObjectError> {
        let meta = tokio::fs::metadata(&self.root)
            .await
            .map_err(|e| ObjectError::Unreachable(format!("{}: {e}", self.root.display())))?;
        if meta.is_dir() && !meta.permissions().readonly() {
            Ok(())
        } else {
            Err(ObjectError::Unreachable(format!(
                "{} is not a writable folder",
                self.root.display()
            )))
        }
    }
}

/// A local object being written piece by piece (dropped unfinished: the temporary file goes).
pub struct StreamingFile {
    tmp: Option<tempfile::NamedTempFile>,
    dest: PathBuf,
    key: String,
}

impl StreamingFile {
    pub async fn write(&mut self, data: &[u8]) -> Result<(), ObjectError> {
        let mut tmp = self.tmp.take().expect("a file being written");
        let data = data.to_vec();
        let k = self.key.clone();
        let tmp = tokio::task::spawn_blocking(move || -> Result<_, ObjectError> {
            tmp.write_all(&data).map_err(|e| io_err(&k, e))?;
            Ok(tmp)
        })
        .await
        .map_err(|e| io_err(&self.key, e))??;
        self.tmp = Some(tmp);
        Ok(())
    }

    pub async fn finish(mut self) -> Result<(), ObjectError> {
        let tmp = self.tmp.take().expect("a file being written");
        let (dest, k) = (self.dest.clone(), self.key.clone());
        tokio::task::spawn_blocking(move || -> Result<(), ObjectError> {
            tmp.as_file().sync_all().map_err(|e| io_err(&k, e))?;
            tmp.persist(&dest).map_err(|e| io_err(&k, e.error))?;
            Ok(())
        })
        .await
        .map_err(|e| io_err(&self.key, e))?
    }
}
