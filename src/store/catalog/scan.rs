//! Whole scans as async streams. A backend reads the rows in one snapshot and hands them to
//! `ScanOut`, which sends them in chunks through a bounded channel: the reader stays at most a
//! few chunks ahead of the consumer (memory is bounded whatever the catalogue's size), and it
//! stops at its next row once the consumer drops the stream.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use tokio::sync::mpsc;

use super::{CatalogDb, EntityKind};
use crate::store::StoreError;

/// Bytes of rows per chunk (~1 KiB a row): one buffer, far below the allocator's mmap
/// threshold (main.rs), so chunk after chunk reuses the same memory.
const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks sent and not yet taken by the consumer.
const CHUNKS_AHEAD: usize = 2;
/// How far a reader gets ahead of a consumer that stopped taking rows: the chunks sent, the
/// one it fills, the one the consumer holds, and a row.
#[cfg(test)]
pub(super) const READ_AHEAD_BYTES: usize = (CHUNKS_AHEAD + 3) * CHUNK_BYTES;

/// Consecutive rows in one buffer: row `i` ends at `ends[i]`.
struct Chunk {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Chunk {
    fn new() -> Chunk {
        Chunk {
            bytes: Vec::with_capacity(CHUNK_BYTES),
            ends: Vec::new(),
        }
    }
}

enum Message {
    Rows(Chunk),
    /// Every row was sent.
    End,
    Failed(StoreError),
}

/// Where a backend's scan puts its rows, in order.
pub(super) struct ScanOut {
    tx: mpsc::Sender<Message>,
    chunk: Chunk,
}

impl ScanOut {
    /// Adds a row; false when the consumer is gone (the scan should stop).
    pub(super) async fn push(&mut self, body: &[u8]) -> bool {
        match self.add(body) {
            Some(full) => self.tx.send(Message::Rows(full)).await.is_ok(),
            None => !self.tx.is_closed(),
        }
    }

    /// `push` for a scan on a blocking thread.
    pub(super) fn push_blocking(&mut self, body: &[u8]) -> bool {
        match self.add(body) {
            Some(full) => self.tx.blocking_send(Message::Rows(full)).is_ok(),
            None => !self.tx.is_closed(),
        }
    }

    /// Sends the last rows and the end: without it the consumer gets an error, never a short
    /// result.
    pub(super) async fn finish(mut self) {
        let last = std::mem::replace(&mut self.chunk, Chunk::new());
        if !last.ends.is_empty() && self.tx.send(Message::Rows(last)).await.is_err() {
            return;
        }
        let _ = self.tx.send(Message::End).await;
    }

    /// `finish` for a scan on a blocking thread.
    pub(super) fn finish_blocking(mut self) {
        let last = std::mem::replace(&mut self.chunk, Chunk::new());
        if !last.ends.is_empty() && self.tx.blocking_send(Message::Rows(last)).is_err() {
            return;
        }
        let _ = self.tx.blocking_send(Message::End);
    }

    /// Adds a row: the previous rows when it does not fit in their chunk (a row larger than a
    /// chunk gets one of its own).
    fn add(&mut self, body: &[u8]) -> Option<Chunk> {
        let chunk = &mut self.chunk;
        let full = (!chunk.ends.is_empty() && chunk.bytes.len() + body.len() > CHUNK_BYTES)
            .then(|| std::mem::replace(chunk, Chunk::new()));
        chunk.bytes.extend_from_slice(body);
        chunk.ends.push(chunk.bytes.len());
        full
    }
}

/// The bodies `db` scans, one by one (each a slice of its chunk's buffer). The scan starts
/// when the stream is first polled, in a task of its own; an error ends the stream after it.
pub(super) fn bodies(
    db: Arc<dyn CatalogDb>,
    shop: String,
    kind: EntityKind,
) -> BoxStream<'static, Result<Bytes, StoreError>> {
    let start = async move {
        let (tx, rx) = mpsc::channel(CHUNKS_AHEAD);
        let out = ScanOut {
            tx: tx.clone(),
            chunk: Chunk::new(),
        };
        tokio::spawn(async move {
            if let Err(e) = db.scan_bodies(shop, kind, out).await {
                let _ = tx.send(Message::Failed(e)).await;
            }
        });
        rows_of(rx)
    };
    futures::stream::once(start).flatten().boxed()
}

/// The rows of a chunk: its buffer and where each row starts.
type Rows = (Bytes, std::vec::IntoIter<usize>, usize);

/// The rows of the chunks `rx` receives.
fn rows_of(rx: mpsc::Receiver<Message>) -> impl futures::Stream<Item = Result<Bytes, StoreError>> {
    let state = Some((rx, (Bytes::new(), Vec::new().into_iter(), 0)));
    futures::stream::unfold(state, |state| async move {
        let (mut rx, mut rows): (_, Rows) = state?;
        loop {
            if let Some(end) = rows.1.next() {
                let body = rows.0.slice(rows.2..end);
                rows.2 = end;
                return Some((Ok(body), Some((rx, rows))));
            }
            match rx.recv().await {
                Some(Message::Rows(chunk)) => {
                    rows = (Bytes::from(chunk.bytes), chunk.ends.into_iter(), 0);
                }
                Some(Message::End) => return None,
                Some(Message::Failed(e)) => return Some((Err(e), None)),
                // The scan went away without finishing (it panicked): an error, so a consumer
                // never takes what it got for the whole catalogue.
                None => return Some((Err(StoreError::Closed), None)),
            }
        }
    })
}
