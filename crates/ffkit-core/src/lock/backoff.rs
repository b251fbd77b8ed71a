//! The `LOCK_BACKOFF_STRATEGY` schedule for locks that must poll
//! (dot-locks): `exponential` sleeps `LOCK_BACKOFF_INITIAL` (0.1 s) and
//! doubles up to `LOCK_BACKOFF_MAX` (2.0 s) — 0.1, 0.2, 0.4, 0.8, 1.6, 2.0,
//! 2.0 … — and `linear` sleeps a fixed 0.5 s. A plain iterator of
//! durations, doubled in integer nanoseconds (exact, no rounding), no
//! jitter. The last sleep before a deadline is shortened to land on it
//! ([`Sleeps`]).

use std::time::{Duration, Instant};

use crate::config::BackoffStrategy;

/// The linear strategy's fixed sleep.
pub const LINEAR_STEP: Duration = Duration::from_millis(500);

/// An endless schedule of sleeps: the next one, and the cap it doubles
/// up to (equal to it for a constant schedule).
pub struct Schedule {
    next: Duration,
    max: Duration,
}

impl Schedule {
    pub fn new(strategy: BackoffStrategy, initial: Duration, max: Duration) -> Schedule {
        match strategy {
            BackoffStrategy::Exponential => Schedule {
                next: initial.min(max),
                max,
            },
            BackoffStrategy::Linear => Schedule {
                next: LINEAR_STEP,
                max: LINEAR_STEP,
            },
        }
    }
}

impl Iterator for Schedule {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let d = self.next;
        self.next = d.saturating_mul(2).min(self.max);
        Some(d)
    }
}

/// The sleeps before a deadline: the schedule, with the last one shortened
/// to end at the deadline, then nothing.
pub struct Sleeps {
    schedule: Schedule,
    deadline: Option<Instant>,
}

impl Sleeps {
    pub fn new(schedule: Schedule, deadline: Option<Instant>) -> Sleeps {
        Sleeps { schedule, deadline }
    }

    /// The next sleep from `now`, or `None` when the deadline has passed.
    pub fn next_at(&mut self, now: Instant) -> Option<Duration> {
        let step = self.schedule.next()?;
        match self.deadline {
            None => Some(step),
            Some(d) if now >= d => None,
            Some(d) => Some(step.min(d - now)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn exponential_matches_the_contract() {
        let s = Schedule::new(
            BackoffStrategy::Exponential,
            Duration::from_millis(100),
            Duration::from_secs(2),
        );
        let got: Vec<Duration> = s.take(8).collect();
        assert_eq!(got, ms(&[100, 200, 400, 800, 1600, 2000, 2000, 2000]));
    }

    #[test]
    fn linear_is_half_a_second() {
        let s = Schedule::new(
            BackoffStrategy::Linear,
            Duration::from_millis(100),
            Duration::from_secs(2),
        );
        assert_eq!(s.take(3).collect::<Vec<_>>(), ms(&[500, 500, 500]));
    }

    #[test]
    fn last_sleep_lands_on_the_deadline() {
        let now = Instant::now();
        let s = Schedule::new(
            BackoffStrategy::Exponential,
            Duration::from_millis(100),
            Duration::from_secs(2),
        );
        let mut sl = Sleeps::new(s, Some(now + Duration::from_millis(1000)));
        let mut t = now;
        let mut got = Vec::new();
        while let Some(d) = sl.next_at(t) {
            if d.is_zero() {
                break;
            }
            got.push(d);
            t += d;
        }
        assert_eq!(got, ms(&[100, 200, 400, 300]));
    }
}
