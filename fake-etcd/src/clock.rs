//! The member's clock: what "now" means for lease deadlines.
//!
//! Time is a [`Duration`] since the member started, so deadlines are plain
//! numbers and the three sources below are interchangeable:
//!
//! - [`TimeSource::Virtual`] (the default when embedded): time stands still
//!   until the test calls [`FakeEtcd::advance`](crate::FakeEtcd::advance),
//!   which runs every expiry that falls due before it returns. Nothing else
//!   moves it, so a test is deterministic whatever the machine's load.
//! - [`TimeSource::Real`] (the binary's default): the machine's monotonic
//!   clock; a background task expires leases on time, as etcd does.
//! - [`TimeSource::Tokio`]: tokio's clock, so under
//!   `#[tokio::test(start_paused = true)]` the fake's leases and the client's
//!   own timers (keepalive intervals, backoff) share one virtual timeline,
//!   moved by `tokio::time::advance` or by tokio's auto-advance when idle.
//!
//! This module is the only place that reads a system clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Where a member's time comes from. See the module docs of `clock` for when to
/// use which.
///
/// # Example
///
/// ```
/// use fake_etcd::{FakeEtcd, TimeSource};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let etcd = FakeEtcd::builder().time(TimeSource::Virtual).start().await?;
/// etcd.advance(std::time::Duration::from_secs(30)).await;
/// assert_eq!(etcd.elapsed(), std::time::Duration::from_secs(30));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TimeSource {
    /// Time moves only when the test advances it.
    #[default]
    Virtual,
    /// The machine's monotonic clock.
    Real,
    /// tokio's clock (pausable in tests).
    Tokio,
}

/// A running clock of one of the [`TimeSource`]s.
#[derive(Debug)]
pub(crate) enum Clock {
    Virtual {
        elapsed_micros: AtomicU64,
        /// Told each time the test advances the clock, so that a wait on
        /// virtual time (a request timeout) ends when it should.
        advanced: tokio::sync::watch::Sender<()>,
    },
    Real {
        start: std::time::Instant,
    },
    Tokio {
        start: tokio::time::Instant,
    },
}

impl Clock {
    pub(crate) fn new(source: TimeSource) -> Self {
        match source {
            TimeSource::Virtual => Clock::Virtual {
                elapsed_micros: AtomicU64::new(0),
                advanced: tokio::sync::watch::Sender::new(()),
            },
            TimeSource::Real => Clock::Real {
                start: std::time::Instant::now(),
            },
            TimeSource::Tokio => Clock::Tokio {
                start: tokio::time::Instant::now(),
            },
        }
    }

    /// Time since the member started.
    pub(crate) fn now(&self) -> Duration {
        match self {
            Clock::Virtual { elapsed_micros, .. } => {
                Duration::from_micros(elapsed_micros.load(Ordering::Acquire))
            }
            Clock::Real { start } => start.elapsed(),
            Clock::Tokio { start } => start.elapsed(),
        }
    }

    /// The Unix time at which this clock read zero: a JWT's expiry is a
    /// Unix time, which the member's clock moves towards as it moves.
    pub(crate) fn unix_time_at_zero(&self) -> Duration {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        wall.saturating_sub(self.now())
    }

    /// Whether a background task must expire leases (time moves by itself).
    pub(crate) fn moves_by_itself(&self) -> bool {
        !matches!(self, Clock::Virtual { .. })
    }

    /// Moves virtual time forward; returns the new time. Other clocks are not
    /// moved by this (see [`FakeEtcd::advance`](crate::FakeEtcd::advance)).
    pub(crate) fn advance_virtual(&self, by: Duration) -> Option<Duration> {
        match self {
            Clock::Virtual {
                elapsed_micros,
                advanced,
            } => {
                let by = u64::try_from(by.as_micros()).unwrap_or(u64::MAX);
                // Saturating: time never wraps around to move backwards.
                let before = elapsed_micros
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                        Some(t.saturating_add(by))
                    })
                    .unwrap_or_else(|t| t);
                advanced.send_replace(());
                Some(Duration::from_micros(before.saturating_add(by)))
            }
            _ => None,
        }
    }

    /// Sleeps until the clock reads `deadline`; on virtual time, until the
    /// test advances it that far.
    pub(crate) async fn sleep_until(&self, deadline: Duration) {
        match self {
            Clock::Virtual { advanced, .. } => {
                let mut advances = advanced.subscribe();
                // Subscribed before looking, so no advance goes unseen.
                while self.now() < deadline {
                    if advances.changed().await.is_err() {
                        return;
                    }
                }
            }
            Clock::Real { start } => {
                // A tokio timer for the wait: use the real source on a
                // runtime whose clock is not paused.
                let wait = deadline.saturating_sub(start.elapsed());
                tokio::time::sleep(wait).await;
            }
            Clock::Tokio { start } => tokio::time::sleep_until(*start + deadline).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_time_moves_only_when_advanced() {
        let clock = Clock::new(TimeSource::Virtual);
        assert_eq!(clock.now(), Duration::ZERO);
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(clock.now(), Duration::ZERO);
        assert_eq!(
            clock.advance_virtual(Duration::from_micros(1500)),
            Some(Duration::from_micros(1500))
        );
        assert_eq!(clock.now(), Duration::from_micros(1500));
    }

    #[tokio::test]
    async fn a_sleep_on_virtual_time_ends_when_the_test_gets_there() {
        let clock = std::sync::Arc::new(Clock::new(TimeSource::Virtual));
        let sleeper = std::sync::Arc::clone(&clock);
        let sleep = tokio::spawn(async move { sleeper.sleep_until(Duration::from_secs(7)).await });
        clock.advance_virtual(Duration::from_secs(6));
        tokio::task::yield_now().await;
        assert!(!sleep.is_finished());
        clock.advance_virtual(Duration::from_secs(1));
        tokio::time::timeout(Duration::from_secs(5), sleep)
            .await
            .expect("woken at 7 s")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_time_follows_the_paused_clock() {
        let clock = Clock::new(TimeSource::Tokio);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(clock.now(), Duration::from_secs(30));
    }
}
