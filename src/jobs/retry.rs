//! When a failed job runs again, and when it is given up (SPEC §9).
//!
//! Retryable failures back off exponentially (with jitter) from `min_delay` to `max_delay`
//! (15 minutes) and keep trying until `horizon` (`RETRY_HORIZON_HOURS`, 72 h) after the event
//! was received: longer than Meta's 36 hours of redelivery, and longer than a store outage
//! is likely to last. After it they are dead-lettered with the reason. Each event is judged by
//! its own attempts and age, never by its batch-mates'.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub min_delay: Duration,
    pub max_delay: Duration,
    pub horizon: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            min_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(15 * 60),
            horizon: Duration::from_secs(72 * 3600),
        }
    }
}

/// What happens to an event after a retryable failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Run again at this time (unix ms).
    RetryAt(i64),
    /// The retry horizon has passed.
    DeadLetter,
}

impl RetryPolicy {
    /// Delay after the `attempts`-th failed attempt (1-based), with jitter, capped.
    pub fn delay(&self, attempts: u32) -> Duration {
        crate::retry::backoff(self.min_delay, self.max_delay)
            .nth(attempts.saturating_sub(1).min(64) as usize)
            .unwrap_or(self.max_delay)
            // Jitter may add up to one more delay; never beyond the cap.
            .min(self.max_delay)
    }

    /// After a retryable failure of an event received at `received_at` (unix ms) on its
    /// `attempts`-th attempt.
    pub fn next(&self, attempts: u32, received_at: i64, now: i64, forever: bool) -> Next {
        let age = Duration::from_millis((now - received_at).max(0) as u64);
        if !forever && age >= self.horizon {
            return Next::DeadLetter;
        }
        Next::RetryAt(now + self.delay(attempts).as_millis() as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap() {
        let p = RetryPolicy::default();
        let d1 = p.delay(1);
        assert!(
            d1 >= Duration::from_secs(2) && d1 <= Duration::from_secs(4),
            "{d1:?}"
        );
        assert!(p.delay(5) >= Duration::from_secs(32));
        for n in [12, 20, 1000, u32::MAX] {
            assert!(p.delay(n) <= Duration::from_secs(900), "{n}");
            assert!(p.delay(n) >= Duration::from_secs(450), "{n}");
        }
    }

    #[test]
    fn the_horizon_decides_not_the_attempt_count() {
        let p = RetryPolicy::default();
        let now = 1_000_000_000_000;
        // Many attempts, young event: still retried.
        assert!(matches!(
            p.next(500, now - 3_600_000, now, false),
            Next::RetryAt(_)
        ));
        // Past the horizon: dead-lettered, unless it is compliance work.
        let old = now - 73 * 3_600_000;
        assert_eq!(p.next(2, old, now, false), Next::DeadLetter);
        assert!(matches!(p.next(2, old, now, true), Next::RetryAt(_)));
    }
}
