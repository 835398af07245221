//! Lease fencing: a queued job writes only while it still holds its lease.
//!
//! A job runs under a lease its worker renews (`jobs::runner`). When the renewal fails for
//! longer than the lease (a database failover, a process paused by `SIGSTOP` or a frozen VM),
//! another instance takes the events over and runs them too: two runs of one shop, page or
//! conversation at once, where the older one may write last (a lost merge, an older snapshot
//! over a newer one, a write after a deletion). So every object write and catalogue commit
//! first asks `check()`: the running job's fence says whether its lease still holds, by its
//! worker's last successful renewal and by whether a renewal found the lease gone. A job whose
//! lease is lost fails its next write with `LeaseLost`, and its worker records nothing.
//!
//! The fence lives here, below the stores, so they can check it without knowing the queue;
//! the jobs runtime sets it (a task-local, like the progress reporter).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

/// One running batch's lease, as its worker last knew it.
#[derive(Clone, Debug)]
pub struct Fence(Arc<State>);

#[derive(Debug)]
struct State {
    /// Unix ms the lease runs to (as last written to the queue).
    until_ms: AtomicI64,
    /// A renewal found the lease taken (or the events gone).
    lost: AtomicBool,
    /// Writes stop this long before `until_ms`: instances' clocks differ a little, and a
    /// write that starts just before the end still takes time.
    margin_ms: i64,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Fence {
    pub fn new(until_ms: i64, margin_ms: i64) -> Fence {
        Fence(Arc::new(State {
            until_ms: AtomicI64::new(until_ms),
            lost: AtomicBool::new(false),
            margin_ms,
        }))
    }

    /// The lease was renewed to `until_ms`.
    pub fn renewed(&self, until_ms: i64) {
        self.0.until_ms.fetch_max(until_ms, Ordering::SeqCst);
    }

    /// A renewal found the lease no longer this worker's.
    pub fn lose(&self) {
        self.0.lost.store(true, Ordering::SeqCst);
    }

    pub fn is_lost(&self) -> bool {
        self.0.lost.load(Ordering::SeqCst)
    }

    /// Whether a write may start at `now_ms`.
    pub fn holds_at(&self, now_ms: i64) -> bool {
        !self.is_lost() && now_ms < self.0.until_ms.load(Ordering::SeqCst) - self.0.margin_ms
    }
}

tokio::task_local! {
    static CURRENT: Fence;
}

/// Runs `work` under `fence`: its writes are checked against it.
pub fn scope<F: Future>(fence: Fence, work: F) -> impl Future<Output = F::Output> {
    CURRENT.scope(fence, work)
}

/// A write refused because the job no longer holds its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this job's queue lease was lost (its process was paused or cut off from the database for longer than the lease, and another worker may have taken its work over); its work was abandoned before this write")]
pub struct LeaseLost;

/// Whether the running job may write now (always, outside a job).
pub fn check() -> Result<(), LeaseLost> {
    match CURRENT.try_with(|f| f.holds_at(now_ms())) {
        Ok(false) => Err(LeaseLost),
        Ok(true) | Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_stop_when_the_lease_ends_or_is_found_taken() {
        assert_eq!(check(), Ok(()), "no job: no fence");
        let now = now_ms();
        let fence = Fence::new(now + 10_000, 1_000);
        assert!(fence.holds_at(now));
        assert!(!fence.holds_at(now + 9_000), "inside the margin");
        fence.renewed(now + 20_000);
        fence.renewed(now + 15_000); // an older renewal answering late changes nothing
        assert!(fence.holds_at(now + 18_000));
        let f = fence.clone();
        assert_eq!(scope(f, async { check() }).await, Ok(()));
        fence.lose();
        assert!(!fence.holds_at(now));
        assert_eq!(scope(fence, async { check() }).await, Err(LeaseLost));
        let expired = Fence::new(now - 1, 0);
        assert_eq!(scope(expired, async { check() }).await, Err(LeaseLost));
    }
}
