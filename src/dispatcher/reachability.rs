//! Whether an endpoint answers at all, as its worker has seen it.
//!
//! While an endpoint refuses connections or lets every attempt time out, attempting
//! each of its due deliveries only records failed attempts: with a million deliveries
//! queued for endpoints that were down, the gateway spent 1.5 cores doing that and wrote
//! 2.8 KB of store per queued delivery (docs/benchmarks.md). So after
//! [`UNREACHABLE_AFTER`] attempts in a row that got no HTTP answer, the worker probes the
//! endpoint instead: one delivery in flight, the next no sooner than a probe gap (the
//! first retry delay) after the last one failed. The deliveries not probed stay due,
//! their attempt counts unchanged, and go out as soon as any attempt gets an answer,
//! whatever its status: an endpoint that answers 500 is reachable, and its deliveries
//! follow their own retry schedules.

use std::time::{Duration, Instant};

use crate::domain::AttemptOutcome;

/// Attempts in a row without an HTTP answer (connection error or timeout) after which
/// an endpoint counts as unreachable.
pub const UNREACHABLE_AFTER: u32 = 5;

/// One endpoint's recent attempts, as far as reachability goes.
#[derive(Debug)]
pub struct Reachability {
    /// Attempts in a row that got no answer.
    misses: u32,
    /// Least time from a failed probe to the next.
    probe_gap: Duration,
    /// When the last attempt without an answer ended.
    last_miss: Option<Instant>,
}

/// A change of state, for the worker to report.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// The endpoint just became unreachable: probing starts.
    Unreachable,
    /// An attempt got an answer, or the URL changed: every due delivery may go again.
    Reachable,
}

impl Reachability {
    pub fn new(probe_gap: Duration) -> Self {
        Self {
            misses: 0,
            probe_gap,
            last_miss: None,
        }
    }

    /// Whether the endpoint is being probed rather than sent everything due.
    pub fn unreachable(&self) -> bool {
        self.misses >= UNREACHABLE_AFTER
    }

    /// Takes in how an attempt ended at `now`.
    pub fn record(&mut self, outcome: AttemptOutcome, now: Instant) -> Option<Change> {
        let was_unreachable = self.unreachable();
        match outcome {
            AttemptOutcome::ConnectError | AttemptOutcome::Timeout => {
                self.misses = self.misses.saturating_add(1);
                self.last_miss = Some(now);
                (!was_unreachable && self.unreachable()).then_some(Change::Unreachable)
            }
            AttemptOutcome::Success | AttemptOutcome::HttpError => self.reset().then_some(Change::Reachable),
        }
    }

    /// Forgets what was seen (the endpoint's URL changed). Returns whether the
    /// endpoint had been unreachable.
    pub fn reset(&mut self) -> bool {
        let was_unreachable = self.unreachable();
        self.misses = 0;
        self.last_miss = None;
        was_unreachable
    }

    /// How many attempts may be in flight, `limit` being the endpoint's concurrency.
    pub fn concurrency(&self, limit: usize) -> usize {
        if self.unreachable() {
            1
        } else {
            limit
        }
    }

    /// Until when no attempt may start: the next probe's time, while it is ahead of
    /// `now`; `None` when attempts may start now.
    pub fn hold_until(&self, now: Instant) -> Option<Instant> {
        if !self.unreachable() {
            return None;
        }
        let next = self.last_miss? + self.probe_gap;
        (next > now).then_some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GAP: Duration = Duration::from_secs(5);

    fn misses(reach: &mut Reachability, n: u32, at: Instant) -> Vec<Change> {
        (0..n)
            .filter_map(|_| reach.record(AttemptOutcome::ConnectError, at))
            .collect()
    }

    #[test]
    fn an_endpoint_turns_unreachable_after_that_many_misses_in_a_row_only() {
        let t = Instant::now();
        let mut reach = Reachability::new(GAP);
        assert!(misses(&mut reach, UNREACHABLE_AFTER - 1, t).is_empty());
        assert_eq!(
            reach.record(AttemptOutcome::HttpError, t),
            None,
            "an answer breaks the run"
        );
        assert!(misses(&mut reach, UNREACHABLE_AFTER - 1, t).is_empty());
        assert!(!reach.unreachable());
        assert_eq!((reach.concurrency(16), reach.hold_until(t)), (16, None));

        assert_eq!(
            reach.record(AttemptOutcome::Timeout, t),
            Some(Change::Unreachable),
            "timeouts count like refused connections"
        );
        assert!(misses(&mut reach, 3, t).is_empty(), "reported once");
        assert_eq!(reach.concurrency(16), 1);
    }

    #[test]
    fn an_unreachable_endpoint_is_probed_a_gap_after_its_last_miss() {
        let t = Instant::now();
        let mut reach = Reachability::new(GAP);
        misses(&mut reach, UNREACHABLE_AFTER, t);
        assert_eq!(reach.hold_until(t), Some(t + GAP));
        assert_eq!(reach.hold_until(t + GAP - Duration::from_millis(1)), Some(t + GAP));
        assert_eq!(reach.hold_until(t + GAP), None, "the probe may go");

        let later = t + GAP + Duration::from_millis(30);
        assert!(misses(&mut reach, 1, later).is_empty());
        assert_eq!(
            reach.hold_until(later),
            Some(later + GAP),
            "counted from the failed probe"
        );
    }

    #[test]
    fn any_answer_or_a_reset_makes_it_reachable_again() {
        let t = Instant::now();
        for answer in [AttemptOutcome::Success, AttemptOutcome::HttpError] {
            let mut reach = Reachability::new(GAP);
            misses(&mut reach, UNREACHABLE_AFTER, t);
            assert_eq!(reach.record(answer, t), Some(Change::Reachable));
            assert_eq!((reach.concurrency(16), reach.hold_until(t)), (16, None));
            assert_eq!(reach.record(answer, t), None, "reported once");
        }
        let mut reach = Reachability::new(GAP);
        assert!(!reach.reset());
        misses(&mut reach, UNREACHABLE_AFTER, t);
        assert!(reach.reset());
        assert_eq!((reach.unreachable(), reach.hold_until(t)), (false, None));
    }
}
