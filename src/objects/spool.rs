//! Writing an object produced as a stream of byte pieces, whatever its size, with bounded
//! memory: one pass hashes the bytes while spooling them (in memory up to `SPOOL_IN_MEMORY`,
//! then to a temporary file) on the blocking pool; a HEAD decides whether the stored object
//! already has them; only then is the spool read back into an upload (multipart above
//! `MULTIPART_THRESHOLD`). The stream is read once, and hashing stays off the async runtime.

use std::io::{Read, Seek, SeekFrom, Write};

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use tokio::sync::mpsc;

use super::{ObjectError, ObjectKey, ObjectStore, PutOutcome};
use crate::crypto::Sha256Stream;

/// Objects up to this size are spooled in memory, larger ones in a temporary file.
const SPOOL_IN_MEMORY: usize = 8 * 1024 * 1024;
/// Pieces handed to the spooling thread: small pieces (a catalogue row is ~1 KiB) are gathered
/// so the hash and the spool see a few large writes, and few of them are in memory at once.
const PIECE: usize = 256 * 1024;
/// Chunks read back from the spool into the upload.
const CHUNK: usize = 1024 * 1024;

/// A spooled object: its SHA-256, its size and its bytes, rewound.
struct Spooled {
    sha256: String,
    size: usize,
    file: tempfile::SpooledTempFile,
}

fn io_error(key: &ObjectKey, what: &str, e: impl std::fmt::Display) -> ObjectError {
    ObjectError::Io {
        key: key.to_string(),
        reason: format!("{what}: {e}"),
    }
}

impl ObjectStore {
    /// Writes the bytes `pieces` yields (in order, as one object) unless the stored object
    /// already has them, decided by its `sha256` metadata (a HEAD). Returns what happened and
    /// the size. The first error of the stream stops the write and is returned; nothing is
    /// written then.
    pub async fn put_stream_if_changed<E, S>(
        &self,
        key: &ObjectKey,
        pieces: S,
    ) -> Result<(PutOutcome, usize), E>
    where
        E: From<ObjectError>,
        S: Stream<Item = Result<Bytes, E>>,
    {
        let spooled = spool(key, pieces).await?;
        if self.head_sha256(key).await?.as_deref() == Some(spooled.sha256.as_str()) {
            metrics::counter!("uploads_total", "result" => "unchanged").increment(1);
            return Ok((PutOutcome::Unchanged, spooled.size));
        }
        let size = self.upload_spooled(key, spooled).await?;
        metrics::counter!("uploads_total", "result" => "written").increment(1);
        Ok((PutOutcome::Written, size))
    }

    /// The spooled bytes, read in chunks on the blocking pool into a streaming upload.
    async fn upload_spooled(
        &self,
        key: &ObjectKey,
        spooled: Spooled,
    ) -> Result<usize, ObjectError> {
        crate::fence::check()?;
        let Spooled {
            sha256,
            size,
            mut file,
        } = spooled;
        let (tx, mut rx) = mpsc::channel::<std::io::Result<Vec<u8>>>(2);
        let reader = tokio::task::spawn_blocking(move || loop {
            match read_chunk(&mut file) {
                Ok(chunk) if chunk.is_empty() => return,
                Ok(chunk) => {
                    if tx.blocking_send(Ok(chunk)).is_err() {
                        return; // the upload stopped
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        });
        let mut upload = self.begin_upload(key, &sha256).await?;
        let mut written = 0;
        while let Some(chunk) = rx.recv().await {
            let chunk = chunk.map_err(|e| io_error(key, "reading a spooled object", e))?;
            written += chunk.len();
            upload.write(self, &chunk).await?;
        }
        reader
            .await
            .map_err(|e| io_error(key, "reading a spooled object", e))?;
        if written != size {
            let e = format!("{written} bytes read back, {size} spooled");
            return Err(io_error(key, "reading a spooled object", e));
        }
        upload.finish(self).await?;
        Ok(size)
    }
}

/// Up to `CHUNK` bytes of the spool (empty at its end).
fn read_chunk(file: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; CHUNK];
    let mut filled = 0;
    while filled < CHUNK {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// One pass over the stream: pieces gathered to `PIECE` bytes, hashed and spooled on the
/// blocking pool while the next ones are produced.
async fn spool<E, S>(key: &ObjectKey, pieces: S) -> Result<Spooled, E>
where
    E: From<ObjectError>,
    S: Stream<Item = Result<Bytes, E>>,
{
    let (to_spool, mut gathered) = mpsc::channel::<Vec<u8>>(1);
    let spool_key = key.clone();
    let spooler = tokio::task::spawn_blocking(move || -> Result<Spooled, ObjectError> {
        let failed = |e: std::io::Error| io_error(&spool_key, "spooling an object", e);
        let mut hash = Sha256Stream::new();
        let mut file = tempfile::SpooledTempFile::new(SPOOL_IN_MEMORY);
        let mut size = 0;
        while let Some(piece) = gathered.blocking_recv() {
            hash.update(&piece);
            file.write_all(&piece).map_err(failed)?;
            size += piece.len();
        }
        file.seek(SeekFrom::Start(0)).map_err(failed)?;
        Ok(Spooled {
            sha256: hash.hex(),
            size,
            file,
        })
    });
    let produced = gather(key, pieces, to_spool).await;
    // The spooler ends when its channel closes (`gather` dropped the sender). A spooling
    // error is why producing stopped; otherwise the stream's error, if any.
    let spooled = spooler
        .await
        .map_err(|e| io_error(key, "spooling an object", e))??;
    produced.map(|()| spooled)
}

/// Feeds the stream's bytes to the spooler in `PIECE`-sized pieces.
async fn gather<E, S>(key: &ObjectKey, pieces: S, to_spool: mpsc::Sender<Vec<u8>>) -> Result<(), E>
where
    E: From<ObjectError>,
    S: Stream<Item = Result<Bytes, E>>,
{
    // The spooler stops taking pieces only when it failed (and says why).
    let stopped = || io_error(key, "spooling an object", "the spooler stopped");
    let mut pending = Vec::with_capacity(PIECE);
    futures::pin_mut!(pieces);
    while let Some(bytes) = pieces.try_next().await? {
        pending.extend_from_slice(&bytes);
        if pending.len() >= PIECE {
            let piece = std::mem::replace(&mut pending, Vec::with_capacity(PIECE));
            to_spool.send(piece).await.map_err(|_| stopped())?;
        }
    }
    if !pending.is_empty() {
        to_spool.send(pending).await.map_err(|_| stopped())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use futures::stream;

    use super::*;

    fn store(dir: &std::path::Path) -> ObjectStore {
        let settings = crate::config::StorageSettings::Local {
            dir: dir.to_path_buf(),
        };
        ObjectStore::from_settings(&settings).unwrap()
    }

    fn key() -> ObjectKey {
        let shop = crate::ids::ShopDomain::parse("acme.myshopify.com").unwrap();
        super::super::keys::shop_products(&crate::ids::MerchantId::random(), &shop)
    }

    fn pieces(n: usize, size: usize) -> Vec<Result<Bytes, ObjectError>> {
        (0..n)
            .map(|i| Ok(Bytes::from(vec![b'a' + (i % 26) as u8; size])))
            .collect()
    }

    #[tokio::test]
    async fn a_stream_is_written_once_and_then_found_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let key = key();
        // 12 MiB in 3 KiB pieces: past the in-memory spool and the multipart threshold.
        let (n, size) = (4096, 3 * 1024);
        let expected: Vec<u8> = pieces(n, size)
            .into_iter()
            .flat_map(|p| p.unwrap().to_vec())
            .collect();
        let put = store
            .put_stream_if_changed(&key, stream::iter(pieces(n, size)))
            .await
            .unwrap();
        assert_eq!(put, (PutOutcome::Written, n * size));
        assert_eq!(store.get(&key).await.unwrap().unwrap(), expected);
        assert_eq!(
            store.head_sha256(&key).await.unwrap().unwrap(),
            crate::crypto::sha256_hex(&expected)
        );
        let again = store
            .put_stream_if_changed(&key, stream::iter(pieces(n, size)))
            .await
            .unwrap();
        assert_eq!(again, (PutOutcome::Unchanged, n * size));
    }

    #[tokio::test]
    async fn an_error_in_the_stream_writes_nothing_and_is_returned() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let key = key();
        let mut items = pieces(1000, 1024);
        items.push(Err(ObjectError::Unreachable("the source failed".into())));
        items.extend(pieces(10, 1024));
        let err = store
            .put_stream_if_changed(&key, stream::iter(items))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("the source failed"), "{err}");
        assert!(store.get(&key).await.unwrap().is_none());
    }
}
