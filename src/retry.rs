//! Trying again after a failure that can pass: how the platform clients retry (`UpstreamRetry`)
//! and the one exponential backoff every retry in the service waits by (Shopify and Graph
//! calls, queued jobs).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// How calls to Shopify and Meta retry transient failures (network, 5xx). Fixed in
/// production; tests shorten the delays on a clone of the state.
#[derive(Debug, Clone)]
pub struct UpstreamRetry {
    pub attempts: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Default for UpstreamRetry {
    fn default() -> Self {
        UpstreamRetry {
            attempts: 8,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(20),
        }
    }
}

impl UpstreamRetry {
    /// The waits between one call's attempts.
    pub fn backoff(&self) -> ExponentialBackoff {
        backoff(self.min_delay, self.max_delay)
    }
}

/// Delays from `min` doubling up to `max`, each with random jitter (up to one more delay), so
/// many callers that failed together do not retry together. Endless: callers bound the
/// attempts (or the time).
pub fn backoff(min: Duration, max: Duration) -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_with_jitter_up_to_the_cap_without_end() {
        let min = Duration::from_millis(100);
        let max = Duration::from_millis(1000);
        let delays: Vec<Duration> = backoff(min, max).take(50).collect();
        assert_eq!(delays.len(), 50, "never runs out");
        for (i, d) in delays.iter().enumerate() {
            // Without jitter the i-th delay is min·2^i, capped; jitter adds at most as much.
            let base = (min * 2u32.pow(i.min(10) as u32)).min(max);
            assert!(
                *d >= base && *d <= base * 2,
                "delay {i}: {d:?} (base {base:?})"
            );
        }
    }
}
