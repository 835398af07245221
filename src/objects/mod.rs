//! The object store: one interface over an S3-compatible bucket or a local folder, plus change
//! detection (`put_json_if_changed`) and serialised read-modify-write (`update_json`).

pub mod keys;
mod local;
mod s3;
mod spool;
mod upload;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use crate::config::StorageSettings;
use crate::crypto::sha256_hex;
use crate::ids::MerchantId;
pub use keys::ObjectKey;
pub use local::LocalStore;
pub use s3::S3Store;
pub use upload::{Upload, MULTIPART_THRESHOLD};

/// Bodies above this are serialised and hashed on the blocking pool, not the async runtime
/// (whose few threads also answer webhooks).
pub const LARGE_BODY: usize = 256 * 1024;

/// User-metadata name holding the SHA-256 (hex) of the object's canonical bytes.
pub const SHA256_META: &str = "sha256";

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("object store I/O failed for {key}: {reason}")]
    Io { key: String, reason: String },
    #[error("object {key} holds invalid JSON: {reason}")]
    BadJson { key: String, reason: String },
    #[error("object store is not reachable: {0}")]
    Unreachable(String),
    /// The running job no longer holds its queue lease: it must not write (see `fence`).
    #[error(transparent)]
    LeaseLost(#[from] crate::fence::LeaseLost),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PutOutcome {
    Written,
    Unchanged,
}

/// Serialises `value` with object keys sorted at every level, so equal data always gives
/// equal bytes (and equal SHA-256) whatever order a platform returned fields in.
pub fn canonical_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    fn sort(v: Value) -> Value {
        match v {
            Value::Object(map) => {
                let mut entries: Vec<(String, Value)> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                Value::Object(entries.into_iter().map(|(k, v)| (k, sort(v))).collect())
            }
            Value::Array(items) => Value::Array(items.into_iter().map(sort).collect()),
            other => other,
        }
    }
    serde_json::to_vec(&sort(serde_json::to_value(value)?))
}

enum Backend {
    S3(S3Store),
    Local(LocalStore),
}

#[derive(Clone)]
pub struct ObjectStore {
    backend: Arc<Backend>,
    /// Per-key locks for read-modify-write in this process (see `update_json`).
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl ObjectStore {
    pub fn from_settings(storage: &StorageSettings) -> Result<ObjectStore, ObjectError> {
        let backend = match storage {
            StorageSettings::Spaces(s) => Backend::S3(S3Store::new(s)),
            StorageSettings::Local { dir } => Backend::Local(LocalStore::new(dir)?),
        };
        Ok(ObjectStore {
            backend: Arc::new(backend),
            locks: Default::default(),
        })
    }

    pub fn backend_name(&self) -> &'static str {
        match &*self.backend {
            Backend::S3(_) => "s3",
            Backend::Local(_) => "local",
        }
    }

    /// The stored SHA-256 of an object, from its metadata only (never the body), or `None`
    /// when the object does not exist.
    pub async fn head_sha256(&self, key: &ObjectKey) -> Result<Option<String>, ObjectError> {
        match &*self.backend {
            Backend::S3(s) => s.head_sha256(key).await,
            Backend::Local(l) => l.head_sha256(key).await,
        }
    }

    pub async fn put(
        &self,
        key: &ObjectKey,
        bytes: Vec<u8>,
        sha256: &str,
        content_type: &str,
    ) -> Result<(), ObjectError> {
        crate::fence::check()?;
        let started = Instant::now();
        let r = match &*self.backend {
            Backend::S3(s) => s.put(key, bytes, sha256, content_type).await,
            Backend::Local(l) => l.put(key, bytes).await,
        };
        metrics::histogram!("upload_duration_seconds").record(started.elapsed().as_secs_f64());
        r
    }

    pub async fn get(&self, key: &ObjectKey) -> Result<Option<Vec<u8>>, ObjectError> {
        Ok(self.get_with_sha256(key).await?.map(|(b, _)| b))
    }

    /// The body and the SHA-256 the store holds for it (S3: the `sha256` metadata returned
    /// with the body; local: computed), so a read-modify-write needs no extra HEAD.
    pub async fn get_with_sha256(
        &self,
        key: &ObjectKey,
    ) -> Result<Option<(Vec<u8>, Option<String>)>, ObjectError> {
        match &*self.backend {
            Backend::S3(s) => s.get(key).await,
            Backend::Local(l) => Ok(l.get(key).await?.map(|b| {
                let sha = sha256_hex(&b);
                (b, Some(sha))
            })),
        }
    }

    pub async fn delete(&self, key: &ObjectKey) -> Result<(), ObjectError> {
        crate::fence::check()?;
        match &*self.backend {
            Backend::S3(s) => s.delete(key).await,
            Backend::Local(l) => l.delete(key).await,
        }
    }

    /// Every key under `prefix` (a key ending in `/`).
    pub async fn list(&self, prefix: &ObjectKey) -> Result<Vec<ObjectKey>, ObjectError> {
        let raw = match &*self.backend {
            Backend::S3(s) => s.list(prefix.as_str()).await?,
            Backend::Local(l) => l.list(prefix.as_str()).await?,
        };
        Ok(raw
            .iter()
            .filter_map(|k| ObjectKey::from_listing(prefix, k))
            .collect())
    }

    /// The merchants that have objects: the `users/<uuid>/` folders, listed with a delimiter
    /// (one request per 1,000 merchants on S3), whatever the database remembers.
    pub async fn merchants(&self) -> Result<Vec<MerchantId>, ObjectError> {
        let users = keys::users_prefix();
        let folders = match &*self.backend {
            Backend::S3(s) => s.list_folders(users.as_str()).await?,
            Backend::Local(l) => l.list_folders(users.as_str()).await?,
        };
        Ok(folders
            .iter()
            .filter_map(|f| keys::merchant_of_listing(f))
            .collect())
    }

    /// Deletes the objects (in batches of up to 1,000 per request on S3).
    pub async fn delete_many(&self, keys: &[ObjectKey]) -> Result<(), ObjectError> {
        crate::fence::check()?;
        match &*self.backend {
            Backend::S3(s) => {
                for chunk in keys.chunks(s3::DELETE_BATCH) {
                    s.delete_many(chunk).await?;
                }
                Ok(())
            }
            Backend::Local(l) => {
                for k in keys {
                    l.delete(k).await?;
                }
                Ok(())
            }
        }
    }

    /// Deletes every object under `prefix`; returns how many were deleted.
    pub async fn delete_prefix(&self, prefix: &ObjectKey) -> Result<usize, ObjectError> {
        let keys = self.list(prefix).await?;
        self.delete_many(&keys).await?;
        Ok(keys.len())
    }

    /// Readiness: the bucket (or folder) answers.
    pub async fn check_ready(&self) -> Result<(), ObjectError> {
        match &*self.backend {
            Backend::S3(s) => s.check_ready().await,
            Backend::Local(l) => l.check_ready().await,
        }
    }

    /// Writes `value` as canonical JSON unless the stored object already has the same bytes,
    /// which is decided from the `sha256` metadata by a HEAD; the body is never downloaded.
    pub async fn put_json_if_changed<T: Serialize + ?Sized>(
        &self,
        key: &ObjectKey,
        value: &T,
    ) -> Result<PutOutcome, ObjectError> {
        let bytes = canonical_json(value).map_err(|e| ObjectError::BadJson {
            key: key.to_string(),
            reason: e.to_string(),
        })?;
        Ok(self.put_bytes_if_changed(key, bytes).await?.0)
    }

    /// Writes canonical JSON bytes unless the stored object already has them (by HEAD).
    /// Large bodies are hashed off the async runtime.
    pub async fn put_bytes_if_changed(
        &self,
        key: &ObjectKey,
        bytes: Vec<u8>,
    ) -> Result<(PutOutcome, String), ObjectError> {
        let (bytes, sha) = if bytes.len() > LARGE_BODY {
            tokio::task::spawn_blocking(move || {
                let sha = sha256_hex(&bytes);
                (bytes, sha)
            })
            .await
            .map_err(|e| ObjectError::Io {
                key: key.to_string(),
                reason: e.to_string(),
            })?
        } else {
            let sha = sha256_hex(&bytes);
            (bytes, sha)
        };
        if self.head_sha256(key).await?.as_deref() == Some(sha.as_str()) {
            metrics::counter!("uploads_total", "result" => "unchanged").increment(1);
            return Ok((PutOutcome::Unchanged, sha));
        }
        self.put(key, bytes, &sha, "application/json").await?;
        metrics::counter!("uploads_total", "result" => "written").increment(1);
        Ok((PutOutcome::Written, sha))
    }

    /// Read-modify-write of one JSON object, serialised per key within this process, and
    /// written only if the result changed. `f` gets the current value (`None` if absent).
    /// Returns the outcome and the SHA-256 of what the store now holds. Callers that can race
    /// across processes must also be serialised by the event queue (jobs of one object share
    /// a group).
    pub async fn update_json<F>(
        &self,
        key: &ObjectKey,
        f: F,
    ) -> Result<(PutOutcome, String), ObjectError>
    where
        F: FnOnce(Option<Value>) -> Value,
    {
        let lock = {
            let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            // Drop locks nobody holds so the map does not grow with every key ever touched.
            map.retain(|_, l| Arc::strong_count(l) > 1);
            map.entry(key.as_str().to_string()).or_default().clone()
        };
        let _guard = lock.lock().await;
        let (current, stored_sha) = match self.get_with_sha256(key).await? {
            Some((b, sha)) => (
                Some(
                    serde_json::from_slice::<Value>(&b).map_err(|e| ObjectError::BadJson {
                        key: key.to_string(),
                        reason: e.to_string(),
                    })?,
                ),
                sha,
            ),
            None => (None, None),
        };
        let next = f(current);
        let bytes = canonical_json(&next).map_err(|e| ObjectError::BadJson {
            key: key.to_string(),
            reason: e.to_string(),
        })?;
        let sha = sha256_hex(&bytes);
        if stored_sha.as_deref() == Some(sha.as_str()) {
            metrics::counter!("uploads_total", "result" => "unchanged").increment(1);
            return Ok((PutOutcome::Unchanged, sha));
        }
        self.put(key, bytes, &sha, "application/json").await?;
        metrics::counter!("uploads_total", "result" => "written").increment(1);
        Ok((PutOutcome::Written, sha))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let a: Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":[{"d":1,"c":2}],"x":null}}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{"a":{"x":null,"y":[{"c":2,"d":1}]},"b":1}"#).unwrap();
        assert_eq!(canonical_json(&a).unwrap(), canonical_json(&b).unwrap());
        assert_eq!(
            String::from_utf8(canonical_json(&a).unwrap()).unwrap(),
            r#"{"a":{"x":null,"y":[{"c":2,"d":1}]},"b":1}"#
        );
    }
}
