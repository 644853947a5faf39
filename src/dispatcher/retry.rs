//! The retry policy: a pure value that turns (attempt number, outcome) into what
//! happens next. The schedule it produces is stored, so it survives restarts.

use std::time::Duration;

use crate::domain::{AttemptOutcome, UnixMillis};
use crate::store::Disposition;

/// Share of a delay taken off at random, so that deliveries that failed together
/// (a receiver outage) do not all come back in the same instant.
const JITTER: f64 = 0.2;

#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Delay before the first retry; each later one doubles.
    initial: Duration,
    /// Cap on one delay.
    max: Duration,
    /// Attempts in all, the first included.
    max_attempts: u32,
}

impl RetryPolicy {
    pub fn new(initial: Duration, max: Duration, max_attempts: u32) -> Self {
        Self {
            initial,
            max: max.max(initial),
            max_attempts: max_attempts.max(1),
        }
    }

    /// The delay before the first retry.
    pub fn initial_delay(&self) -> Duration {
        self.initial
    }

    /// The longest delay the policy ever schedules.
    pub fn max_delay(&self) -> Duration {
        self.max
    }

    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The delay after failed attempt number `attempt` (1-based). `unit` is a random
    /// number in [0, 1); 0 gives the nominal delay, values above shorten it by up to 20%.
    pub fn delay_after(&self, attempt: u32, unit: f64) -> Duration {
        let doublings = attempt.saturating_sub(1).min(63);
        let nominal = self
            .initial
            .saturating_mul(1u32.checked_shl(doublings.min(31)).unwrap_or(u32::MAX))
            .min(self.max);
        nominal.mul_f64(1.0 - JITTER * unit.clamp(0.0, 1.0))
    }

    /// What to do after attempt `attempt` ended with `outcome` at `now`.
    /// A `Retry-After` from the receiver lengthens the delay, never beyond the cap.
    pub fn decide(
        &self,
        attempt: u32,
        outcome: AttemptOutcome,
        retry_after: Option<Duration>,
        now: UnixMillis,
        unit: f64,
    ) -> Disposition {
        if outcome == AttemptOutcome::Success {
            return Disposition::Succeeded;
        }
        if attempt >= self.max_attempts {
            return Disposition::Failed;
        }
        let mut delay = self.delay_after(attempt, unit);
        if let Some(asked) = retry_after {
            delay = delay.max(asked.min(self.max));
        }
        Disposition::RetryAt(now.saturating_add(delay.as_millis() as i64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_defaults() -> RetryPolicy {
        RetryPolicy::new(Duration::from_secs(5), Duration::from_secs(6 * 3600), 25)
    }

    #[test]
    fn delays_double_from_the_initial_delay_up_to_the_cap() {
        let p = spec_defaults();
        let nominal: Vec<u64> = (1..=16).map(|a| p.delay_after(a, 0.0).as_secs()).collect();
        assert_eq!(&nominal[..5], &[5, 10, 20, 40, 80]);
        assert_eq!(nominal[12], 20_480);
        assert_eq!(nominal[13], 21_600);
        assert_eq!(p.delay_after(1_000, 0.0), Duration::from_secs(21_600));
    }

    #[test]
    fn jitter_only_shortens_and_by_at_most_a_fifth() {
        let p = spec_defaults();
        for attempt in 1..30 {
            let nominal = p.delay_after(attempt, 0.0);
            let shortest = p.delay_after(attempt, 0.999_999);
            assert!(shortest <= nominal && shortest >= nominal.mul_f64(0.8 - 1e-9));
        }
    }

    #[test]
    fn the_default_attempts_span_about_three_days() {
        let p = spec_defaults();
        let span: Duration = (1..p.max_attempts()).map(|a| p.delay_after(a, 0.0)).sum();
        let hours = span.as_secs_f64() / 3600.0;
        assert!((70.0..80.0).contains(&hours), "{hours} h");
    }

    #[test]
    fn the_last_attempt_fails_the_delivery_and_success_ends_it() {
        let p = RetryPolicy::new(Duration::from_millis(100), Duration::from_secs(1), 3);
        assert_eq!(
            p.decide(1, AttemptOutcome::Timeout, None, 0, 0.0),
            Disposition::RetryAt(100)
        );
        assert_eq!(
            p.decide(2, AttemptOutcome::HttpError, None, 0, 0.0),
            Disposition::RetryAt(200)
        );
        assert_eq!(
            p.decide(3, AttemptOutcome::ConnectError, None, 0, 0.0),
            Disposition::Failed
        );
        assert_eq!(
            p.decide(3, AttemptOutcome::Success, None, 0, 0.0),
            Disposition::Succeeded
        );
    }

    #[test]
    fn retry_after_lengthens_the_delay_up_to_the_cap() {
        let p = RetryPolicy::new(Duration::from_millis(100), Duration::from_secs(10), 5);
        let asked = Some(Duration::from_secs(3));
        assert_eq!(
            p.decide(1, AttemptOutcome::HttpError, asked, 0, 0.0),
            Disposition::RetryAt(3_000)
        );
        let too_long = Some(Duration::from_secs(3_600));
        assert_eq!(
            p.decide(1, AttemptOutcome::HttpError, too_long, 0, 0.0),
            Disposition::RetryAt(10_000)
        );
    }
}
