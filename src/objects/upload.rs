//! Streaming uploads: an object written piece by piece, with bounded memory whatever its size.
//!
//! On S3 the bytes are buffered up to `MULTIPART_THRESHOLD`; a smaller object becomes one
//! PUT, a larger one a multipart upload of `PART_SIZE` parts (every part but the last at least
//! 5 MiB, as S3 requires). The SHA-256 of the whole object must be known when the upload
//! starts (it is the object's `sha256` metadata), so callers hash their stream first. On the
//! local backend the bytes go to a temporary file that is renamed into place at the end.

use aws_sdk_s3::types::CompletedPart;

use super::{local, s3, Backend, ObjectError, ObjectKey, ObjectStore};

/// Objects above this are uploaded in parts.
pub const MULTIPART_THRESHOLD: usize = 8 * 1024 * 1024;
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts sent at once: the next part is signed and sent while the store takes the previous
/// one (memory: this many parts, plus the one being filled).
const PARTS_IN_FLIGHT: usize = 2;

type PartResult = Result<CompletedPart, ObjectError>;

enum State {
    /// Not yet known to be large.
    Buffer(Vec<u8>),
    Multipart {
        upload_id: String,
        /// Parts the store has confirmed.
        parts: Vec<CompletedPart>,
        /// Parts being sent (dropping the set cancels them).
        sending: tokio::task::JoinSet<PartResult>,
        /// Parts numbered so far.
        numbered: i32,
        buf: Vec<u8>,
    },
    Local(local::StreamingFile),
}

pub struct Upload {
    key: ObjectKey,
    sha256: String,
    size: usize,
    state: Option<State>,
}

impl ObjectStore {
    /// Starts writing `key`, whose bytes will hash to `sha256`.
    pub async fn begin_upload(&self, key: &ObjectKey, sha256: &str) -> Result<Upload, ObjectError> {
        let state = match &*self.backend {
            Backend::S3(_) => State::Buffer(Vec::new()),
            Backend::Local(l) => State::Local(l.begin(key).await?),
        };
        Ok(Upload {
            key: key.clone(),
            sha256: sha256.to_string(),
            size: 0,
            state: Some(state),
        })
    }
}

fn s3_of(store: &ObjectStore) -> Option<&s3::S3Store> {
    match &*store.backend {
        Backend::S3(s) => Some(s),
        Backend::Local(_) => None,
    }
}

impl Upload {
    pub async fn write(&mut self, store: &ObjectStore, data: &[u8]) -> Result<(), ObjectError> {
        self.size += data.len();
        let state = self.state.take().expect("an upload in progress");
        let next = match state {
            State::Buffer(mut buf) => {
                buf.extend_from_slice(data);
                if buf.len() < MULTIPART_THRESHOLD {
                    State::Buffer(buf)
                } else {
                    let s3 = s3_of(store).expect("buffering happens on S3 only");
                    let upload_id = s3.create_multipart(&self.key, &self.sha256).await?;
                    let mut st = State::Multipart {
                        upload_id,
                        parts: Vec::new(),
                        sending: tokio::task::JoinSet::new(),
                        numbered: 0,
                        buf,
                    };
                    if let Err(e) = flush_parts(s3, &self.key, &mut st, false).await {
                        abort(s3, &self.key, st).await;
                        return Err(e);
                    }
                    st
                }
            }
            State::Multipart {
                upload_id,
                parts,
                sending,
                numbered,
                mut buf,
            } => {
                buf.extend_from_slice(data);
                let s3 = s3_of(store).expect("multipart happens on S3 only");
                let mut st = State::Multipart {
                    upload_id,
                    parts,
                    sending,
                    numbered,
                    buf,
                };
                if let Err(e) = flush_parts(s3, &self.key, &mut st, false).await {
                    abort(s3, &self.key, st).await;
                    return Err(e);
                }
                st
            }
            State::Local(mut f) => {
                f.write(data).await?;
                State::Local(f)
            }
        };
        self.state = Some(next);
        Ok(())
    }

    /// Completes the upload; the object appears (or is replaced) only now.
    pub async fn finish(mut self, store: &ObjectStore) -> Result<usize, ObjectError> {
        let started = std::time::Instant::now();
        match self.state.take().expect("an upload in progress") {
            State::Buffer(buf) => {
                store
                    .put(&self.key, buf, &self.sha256, "application/json")
                    .await?
            }
            mut st @ State::Multipart { .. } => {
                let s3 = s3_of(store).expect("multipart happens on S3 only");
                if let Err(e) = flush_parts(s3, &self.key, &mut st, true).await {
                    abort(s3, &self.key, st).await;
                    return Err(e);
                }
                let State::Multipart {
                    upload_id,
                    mut parts,
                    ..
                } = st
                else {
                    unreachable!("still multipart");
                };
                // Parts finish in any order; the store wants them by number.
                parts.sort_by_key(|p| p.part_number());
                if let Err(e) = s3.complete_multipart(&self.key, &upload_id, parts).await {
                    let _ = s3.abort_multipart(&self.key, &upload_id).await;
                    return Err(e);
                }
            }
            State::Local(f) => f.finish().await?,
        }
        metrics::histogram!("upload_duration_seconds").record(started.elapsed().as_secs_f64());
        Ok(self.size)
    }
}

/// Sends every full part in the buffer (and, at the end, what is left), up to
/// `PARTS_IN_FLIGHT` at once; at the end it waits for all of them.
async fn flush_parts(
    s3: &s3::S3Store,
    key: &ObjectKey,
    st: &mut State,
    last: bool,
) -> Result<(), ObjectError> {
    let State::Multipart {
        upload_id,
        parts,
        sending,
        numbered,
        buf,
    } = st
    else {
        return Ok(());
    };
    let joined = |r: Result<PartResult, tokio::task::JoinError>| {
        r.map_err(|e| ObjectError::Io {
            key: key.to_string(),
            reason: format!("sending a part: {e}"),
        })?
    };
    while buf.len() >= PART_SIZE || (last && !buf.is_empty()) {
        if sending.len() >= PARTS_IN_FLIGHT {
            if let Some(r) = sending.join_next().await {
                parts.push(joined(r)?);
            }
        }
        let take = buf.len().min(PART_SIZE);
        let rest = buf.split_off(take);
        let part = std::mem::replace(buf, rest);
        *numbered += 1;
        let (s3, key, upload_id, number) = (s3.clone(), key.clone(), upload_id.clone(), *numbered);
        sending.spawn(async move {
            let etag = s3.upload_part(&key, &upload_id, number, part).await?;
            Ok(CompletedPart::builder()
                .part_number(number)
                .e_tag(etag)
                .build())
        });
    }
    if last {
        while let Some(r) = sending.join_next().await {
            parts.push(joined(r)?);
        }
    }
    Ok(())
}

async fn abort(s3: &s3::S3Store, key: &ObjectKey, st: State) {
    if let State::Multipart { upload_id, .. } = st {
        if let Err(e) = s3.abort_multipart(key, &upload_id).await {
            tracing::warn!(%key, error = %e, "aborting a multipart upload failed (the bucket's lifecycle rules clean it up)");
        }
    }
}
