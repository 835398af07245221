//! Whole scans as async streams. A backend reads the rows in one snapshot and hands them to
//! `ScanOut`, which sends them in chunks through a bounded channel: the reader stays at most a
//! few chunks ahead of the consumer (memory is bounded whatever the catalogue's size), and it
//! stops at its next row once the consumer drops the stream.

use std::sync::Arc;

use futures::stream::{BoxStream, StreamExt};
use tokio::sync::mpsc;

use super::{CatalogDb, EntityKind};
use crate::store::StoreError;

/// Rows per chunk (~1 KiB each)…
const CHUNK_ROWS: usize = 256;
/// …or fewer when they are large (products with many variants).
const CHUNK_BYTES: usize = 256 * 1024;
/// Chunks sent and not yet taken by the consumer.
const CHUNKS_AHEAD: usize = 2;

enum Message {
    Rows(Vec<Vec<u8>>),
    /// Every row was sent.
    End,
    Failed(StoreError),
}

/// Where a backend's scan puts its rows, in order.
pub(super) struct ScanOut {
    tx: mpsc::Sender<Message>,
    rows: Vec<Vec<u8>>,
    bytes: usize,
}

impl ScanOut {
    /// Adds a row; false when the consumer is gone (the scan should stop).
    pub(super) async fn push(&mut self, body: Vec<u8>) -> bool {
        match self.add(body) {
            Some(chunk) => self.tx.send(Message::Rows(chunk)).await.is_ok(),
            None => !self.tx.is_closed(),
        }
    }

    /// `push` for a scan on a blocking thread.
    pub(super) fn push_blocking(&mut self, body: Vec<u8>) -> bool {
        match self.add(body) {
            Some(chunk) => self.tx.blocking_send(Message::Rows(chunk)).is_ok(),
            None => !self.tx.is_closed(),
        }
    }

    /// Sends the last rows and the end: without it the consumer gets an error, never a short
    /// result.
    pub(super) async fn finish(mut self) {
        let rows = std::mem::take(&mut self.rows);
        if !rows.is_empty() && self.tx.send(Message::Rows(rows)).await.is_err() {
            return;
        }
        let _ = self.tx.send(Message::End).await;
    }

    /// `finish` for a scan on a blocking thread.
    pub(super) fn finish_blocking(mut self) {
        let rows = std::mem::take(&mut self.rows);
        if !rows.is_empty() && self.tx.blocking_send(Message::Rows(rows)).is_err() {
            return;
        }
        let _ = self.tx.blocking_send(Message::End);
    }

    /// Adds a row: the chunk to send when it is full.
    fn add(&mut self, body: Vec<u8>) -> Option<Vec<Vec<u8>>> {
        self.bytes += body.len();
        self.rows.push(body);
        if self.rows.len() < CHUNK_ROWS && self.bytes < CHUNK_BYTES {
            return None;
        }
        self.bytes = 0;
        Some(std::mem::take(&mut self.rows))
    }
}

/// The bodies `db` scans, one by one. The scan starts when the stream is first polled, in a
/// task of its own; an error ends the stream after it.
pub(super) fn bodies(
    db: Arc<dyn CatalogDb>,
    shop: String,
    kind: EntityKind,
) -> BoxStream<'static, Result<Vec<u8>, StoreError>> {
    let start = async move {
        let (tx, rx) = mpsc::channel(CHUNKS_AHEAD);
        let out = ScanOut {
            tx: tx.clone(),
            rows: Vec::new(),
            bytes: 0,
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

/// The rows of the chunks `rx` receives.
fn rows_of(
    rx: mpsc::Receiver<Message>,
) -> impl futures::Stream<Item = Result<Vec<u8>, StoreError>> {
    let state = Some((rx, Vec::new().into_iter()));
    futures::stream::unfold(state, |state| async move {
        let (mut rx, mut rows) = state?;
        loop {
            if let Some(body) = rows.next() {
                return Some((Ok(body), Some((rx, rows))));
            }
            match rx.recv().await {
                Some(Message::Rows(chunk)) => rows = chunk.into_iter(),
                Some(Message::End) => return None,
                Some(Message::Failed(e)) => return Some((Err(e), None)),
                // The scan went away without finishing (it panicked): an error, so a consumer
                // never takes what it got for the whole catalogue.
                None => return Some((Err(StoreError::Closed), None)),
            }
        }
    })
}
