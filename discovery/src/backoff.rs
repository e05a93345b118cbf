//! Exponential backoff with full jitter, from a seeded generator (so a test
//! with a fixed seed replays exactly).

use std::time::Duration;

/// Delays between retries: each a random share of an exponentially growing
/// cap, so many instances recovering at once spread out.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
    state: u64,
}

impl Backoff {
    pub(crate) fn new(base: Duration, max: Duration, seed: u64) -> Self {
        Self {
            base,
            max,
            attempt: 0,
            state: seed,
        }
    }

    /// The next delay.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let cap = self
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        cap.mul_f64(self.next_unit())
    }

    /// Starts over after a success.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }

    /// A uniform number in `[0, 1)` (splitmix64).
    fn next_unit(&mut self) -> f64 {
        self.state = self.state.wrapping_add(SPLITMIX_STEP);
        (splitmix64(self.state) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// splitmix64's increment: its state moves by this each draw.
pub(crate) const SPLITMIX_STEP: u64 = 0x9E37_79B9_7F4A_7C15;

/// splitmix64's output for a state: a small, well-mixed generator whose
/// whole state is a seed, so draws replay.
pub(crate) fn splitmix64(state: u64) -> u64 {
    let mut z = state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed for a component that was given none: different per process and
/// per call.
pub(crate) fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_with_jitter_and_replay_from_the_seed() {
        let delays = |seed| {
            let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2), seed);
            (0..10).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        let run = delays(9);
        assert_eq!(run, delays(9));
        assert!(run.iter().all(|d| *d <= Duration::from_secs(2)));
        assert!(run[0] <= Duration::from_millis(100));
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2), 1);
        for _ in 0..5 {
            b.next_delay();
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
