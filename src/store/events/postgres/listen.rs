//! Wake-ups across instances: every commit that queues work or finishes a job sends
//! `NOTIFY salesbot_jobs, '<pool>'` or `'finished'` (inside its transaction, so it is delivered
//! only if the commit happens), and each instance's listener task relays them to its `Wakers`.
//! Workers still poll on `idle_poll`, so a notification lost while the listener reconnects
//! only delays work, and every reconnect wakes everyone once to cover the gap.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::PgConnection;

use super::super::{Pool, Wakers};
use crate::store::pg::{pg, PgDb};
use crate::store::StoreError;

/// The one channel; the payload says which pool has new work, or `finished`.
pub(super) const CHANNEL: &str = "salesbot_jobs";
pub(super) const FINISHED: &str = "finished";

const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Queues a notification on `conn`'s transaction (sent at its commit).
pub(super) async fn notify(conn: &mut PgConnection, payload: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(payload)
        .execute(&mut *conn)
        .await
        .map_err(pg)?;
    Ok(())
}

/// The background `LISTEN` task of one store; aborted when the store's last clone drops.
pub struct Listener(tokio::task::JoinHandle<()>);

impl Drop for Listener {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Listener {
    /// Listens on a connection of its own (outside the shared pool, so a burst of queries
    /// never starves it and it never holds a pool slot), then relays in the background.
    pub async fn start(db: &PgDb, wakers: Arc<Wakers>) -> Result<Listener, StoreError> {
        let options = (*db.pool().connect_options()).clone();
        // A pool of one, only so PgListener can reconnect by itself; no lifetime or idle
        // limit, which would drop the LISTEN for nothing.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(options);
        let listener = subscribe(&pool).await.map_err(pg)?;
        Ok(Listener(tokio::spawn(relay(pool, listener, wakers))))
    }
}

async fn subscribe(pool: &sqlx::PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.ignore_pool_close_event(true);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

async fn relay(pool: sqlx::PgPool, listener: PgListener, wakers: Arc<Wakers>) {
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
                Ok(Some(n)) => dispatch(&wakers, n.payload()),
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
/// them race for one row); `finished` wakes every `wait_for`.
fn dispatch(wakers: &Wakers, payload: &str) {
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
