//! Retry policy for failed message runs (contract §5.10), with jitter added.
//!
//! The original waits exactly `5 s × 2^(n−1)` before retry `n` (5, 10, 20, 40, 80 s) and gives up after
//! 5 retries (6 attempts). We keep the count and the nominal delays, and add up to one nominal delay of
//! random jitter so that groups that failed together (a model outage) do not retry in lockstep:
//! retry `n` waits a uniformly drawn time in `[base·2^(n−1), 2·base·2^(n−1))`. With the defaults that is
//! 5–10 s, 10–20 s, 20–40 s, 40–80 s, 80–160 s: at least 155 s and less than 310 s in total before the
//! queue gives up. The delays come from `backon`'s exponential backoff; this type fixes its parameters.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// Maximum retries after the first attempt (contract §1.6).
pub const DEFAULT_MAX_RETRIES: usize = 5;
/// Delay before the first retry (contract §1.6).
pub const DEFAULT_BASE_RETRY: Duration = Duration::from_secs(5);
/// No single delay grows beyond this, however many retries are configured.
pub const RETRY_DELAY_CAP: Duration = Duration::from_secs(15 * 60);

/// Parameters of the retry backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first failed attempt; the next failure gives up.
    pub max_retries: usize,
    /// Nominal delay before the first retry; doubles for each further retry.
    pub base: Duration,
    /// Add up to one nominal delay of random jitter.
    pub jitter: bool,
    /// Seed for the jitter, for reproducible tests; `None` draws a random seed.
    pub seed: Option<u64>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: DEFAULT_MAX_RETRIES,
            base: DEFAULT_BASE_RETRY,
            jitter: true,
            seed: None,
        }
    }
}

impl RetryPolicy {
    /// A fresh sequence of delays: one per retry, then `None` (give up).
    pub fn backoff(&self) -> Backoff {
        let mut builder = ExponentialBuilder::new()
            .with_min_delay(self.base)
            .with_factor(2.0)
            .with_max_delay(RETRY_DELAY_CAP)
            .with_max_times(self.max_retries);
        if self.jitter {
            builder = builder.with_jitter();
            if let Some(seed) = self.seed {
                builder = builder.with_jitter_seed(seed);
            }
        }
        Backoff(builder.build())
    }

    /// The nominal (jitter-free) delay before retry `n` (1-based).
    pub fn nominal_delay(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        self.base.saturating_mul(factor).min(RETRY_DELAY_CAP)
    }

    /// The half-open range `[low, high)` that the delay before retry `n` falls in.
    pub fn delay_bounds(&self, retry: u32) -> (Duration, Duration) {
        let low = self.nominal_delay(retry);
        if self.jitter {
            (low, low.saturating_mul(2))
        } else {
            (low, low + Duration::from_nanos(1))
        }
    }
}

/// The retry delays of one failure streak. Start a new one after a success or after giving up.
#[derive(Debug)]
pub struct Backoff(ExponentialBackoff);

impl Backoff {
    /// The delay before the next retry, or `None` when the retries are used up.
    pub fn next_delay(&mut self) -> Option<Duration> {
        self.0.next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_5_10_retry_backoff_nominal_sequence_without_jitter() {
        let policy = RetryPolicy {
            jitter: false,
            ..RetryPolicy::default()
        };
        let mut b = policy.backoff();
        let delays: Vec<u64> = std::iter::from_fn(|| b.next_delay())
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(delays, vec![5_000, 10_000, 20_000, 40_000, 80_000]);
    }

    #[test]
    fn contract_5_10_retry_backoff_jitter_stays_in_bounds() {
        for seed in 0..200u64 {
            let policy = RetryPolicy {
                seed: Some(seed),
                ..RetryPolicy::default()
            };
            let mut b = policy.backoff();
            let mut n = 0u32;
            while let Some(d) = b.next_delay() {
                n += 1;
                let (low, high) = policy.delay_bounds(n);
                assert!(
                    d >= low && d < high,
                    "seed {seed} retry {n}: {d:?} not in [{low:?}, {high:?})"
                );
            }
            assert_eq!(n, 5, "exactly max_retries delays");
        }
    }

    #[test]
    fn jitter_actually_varies() {
        let draws: std::collections::BTreeSet<u128> = (0..20u64)
            .map(|seed| {
                RetryPolicy {
                    seed: Some(seed),
                    ..RetryPolicy::default()
                }
                .backoff()
                .next_delay()
                .unwrap()
                .as_millis()
            })
            .collect();
        assert!(draws.len() > 10, "{draws:?}");
    }

    #[test]
    fn delays_are_capped() {
        let policy = RetryPolicy {
            max_retries: 20,
            jitter: false,
            ..RetryPolicy::default()
        };
        let mut b = policy.backoff();
        let last = std::iter::from_fn(|| b.next_delay()).last().unwrap();
        assert_eq!(last, RETRY_DELAY_CAP);
        assert_eq!(policy.nominal_delay(20), RETRY_DELAY_CAP);
    }
}
