//! Wake-ups across instances: work queued or finished on one instance is announced with
//! `NOTIFY salesbot_jobs, '<pool>@<origin>'` or `'finished@<origin>'`, and each instance's
//! listener task relays the other instances' ones to its `Wakers` (its own were handled
//! in-process: relaying them too made a useless claim for every announcement). Workers still poll on `idle_poll`, so a notification lost while the
//! listener reconnects (or an instance that died between a commit and its announcement) only
//! delays work, and every reconnect wakes everyone once to cover the gap.
//!
//! Announcements are sent by a notifier task, after the commit and outside any transaction,
//! at most one per pool every `COALESCE`: PostgreSQL serialises the commits of every
//! transaction that sends `NOTIFY` (a database-wide lock held through the commit's flush), so
//! a `NOTIFY` in each intake transaction capped the intake at one commit flush at a time
//! (measured: 1,400 deliveries/s instead of thousands).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPoolOptions};

use super::super::{Pool, Wakers};
use crate::store::postgres::PgDb;
use crate::store::StoreError;

/// The one channel; the payload says which pool has new work, or `finished`.
const CHANNEL: &str = "salesbot_jobs";
const FINISHED: &str = "finished";

const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long announcements gather before they are sent (the cross-instance wake-up delay).
const COALESCE: Duration = Duration::from_millis(5);

const FINISHED_BIT: u8 = 1 << 3;

fn pool_bit(p: Pool) -> u8 {
    match p {
        Pool::Messages => 1,
        Pool::Sync => 1 << 1,
        Pool::Poll => 1 << 2,
    }
}

/// Announces this instance's new and finished work to the others (see the module docs).
pub(super) struct Notifier {
    pending: Arc<AtomicU8>,
    kick: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Notifier {
    pub fn start(db: &PgDb, origin: String) -> Notifier {
        let pending = Arc::new(AtomicU8::new(0));
        let kick = Arc::new(tokio::sync::Notify::new());
        let (p, k, pool) = (pending.clone(), kick.clone(), db.pool().clone());
        let task = tokio::spawn(async move {
            loop {
                k.notified().await;
                tokio::time::sleep(COALESCE).await;
                let bits = p.swap(0, Ordering::AcqRel);
                let payloads = Pool::ALL
                    .iter()
                    .filter(|pool| bits & pool_bit(**pool) != 0)
                    .map(|pool| pool.as_str())
                    .chain((bits & FINISHED_BIT != 0).then_some(FINISHED));
                for payload in payloads {
                    let sent = sqlx::query("SELECT pg_notify($1, $2)")
                        .bind(CHANNEL)
                        .bind(format!("{payload}@{origin}"))
                        .execute(&pool)
                        .await;
                    if let Err(e) = sent {
                        // The others' idle polls pick the work up anyway.
                        tracing::debug!(error = %e, "a wake-up was not announced to other instances");
                    }
                }
            }
        });
        Notifier {
            pending,
            kick,
            task,
        }
    }

    fn announce(&self, bits: u8) {
        if bits != 0 {
            self.pending.fetch_or(bits, Ordering::AcqRel);
            self.kick.notify_one();
        }
    }

    pub fn pools(&self, pools: impl IntoIterator<Item = Pool>) {
        self.announce(pools.into_iter().fold(0, |b, p| b | pool_bit(p)));
    }

    pub fn finished(&self) {
        self.announce(FINISHED_BIT);
    }
}

/// The background `LISTEN` task of one store; aborted when the store's last clone drops.
pub(super) struct Listener(tokio::task::JoinHandle<()>);

impl Drop for Listener {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Listener {
    /// Listens on a connection of its own (outside the shared pool, so a burst of queries
    /// never starves it and it never holds a pool slot), then relays in the background.
    pub async fn start(
        db: &PgDb,
        wakers: Arc<Wakers>,
        origin: String,
    ) -> Result<Listener, StoreError> {
        let options = (*db.pool().connect_options()).clone();
        // A pool of one, only so PgListener can reconnect by itself; no lifetime or idle
        // limit, which would drop the LISTEN for nothing.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(options);
        let listener = subscribe(&pool).await?;
        Ok(Listener(tokio::spawn(relay(
            pool, listener, wakers, origin,
        ))))
    }
}

async fn subscribe(pool: &sqlx::PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.ignore_pool_close_event(true);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

async fn relay(pool: sqlx::PgPool, listener: PgListener, wakers: Arc<Wakers>, origin: String) {
    let mut current = Some(listener);
    let mut backoff = BACKOFF_FIRST;
    loop {
        let mut listener = match current.take() {
            Some(l) => l,
            None => match subscribe(&pool).await {
                Ok(l) => {
                    tracing::info!("listening for queue wake-ups again");
                    backoff = BACKOFF_FIRST;
                    wake_everyone(&wakers);
                    l
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "cannot listen for queue wake-ups");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            },
        };
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => dispatch(&wakers, n.payload(), &origin),
                // The connection dropped and PgListener re-established it: whatever was sent
                // in between is gone.
                Ok(None) => wake_everyone(&wakers),
                Err(e) => {
                    tracing::warn!(error = %e, "queue wake-up listener lost its connection");
                    break;
                }
            }
        }
        drop(listener);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One notification: a pool wakes one idle worker, which passes the wake-up on when it finds
/// work (as with a local insert; waking every idle worker for each insert would only make
/// them race for one row); `finished` wakes every `wait_for`. This store's own are skipped;
/// one without an origin (an instance of the previous version) is relayed.
fn dispatch(wakers: &Wakers, payload: &str, origin: &str) {
    let payload = match payload.split_once('@') {
        Some((_, from)) if from == origin => return,
        Some((what, _)) => what,
        None => payload,
    };
    if payload == FINISHED {
        wakers.finished.notify_waiters();
    } else if let Ok(pool) = payload.parse::<Pool>() {
        wakers.wake(pool);
    } else {
        tracing::debug!(payload, "ignoring an unknown queue notification");
    }
}

fn wake_everyone(wakers: &Wakers) {
    for p in Pool::ALL {
        wakers.wake(*p);
    }
    wakers.finished.notify_waiters();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `pool` has a wake-up stored (a `notify_one` with nobody waiting keeps one).
    async fn woken(wakers: &Wakers, pool: Pool) -> bool {
        tokio::time::timeout(Duration::from_millis(20), wakers.pool(pool).notified())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn own_announcements_are_skipped_others_and_old_ones_relayed() {
        let wakers = Wakers::new();
        dispatch(&wakers, "messages@me", "me");
        assert!(!woken(&wakers, Pool::Messages).await, "our own: skipped");
        dispatch(&wakers, "messages@other", "me");
        assert!(woken(&wakers, Pool::Messages).await, "another instance's");
        dispatch(&wakers, "sync", "me");
        assert!(woken(&wakers, Pool::Sync).await, "a previous version's");
        dispatch(&wakers, "nonsense@other", "me");
        for p in Pool::ALL {
            assert!(!woken(&wakers, *p).await, "unknown payloads wake nothing");
        }
    }
}
