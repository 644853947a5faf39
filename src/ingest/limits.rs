//! Abuse limits on ingest: a token bucket per merchant, checked after the ingest
//! token is verified and before anything is read or written, so a refused request
//! costs one map lookup and an event that was acknowledged is never dropped.
//!
//! The other limits live where they act: the body size and read timeout in
//! `ingest::request` / `startup` (`HOOKRELAY_MAX_PAYLOAD_BYTES`,
//! `HOOKRELAY_INGEST_READ_TIMEOUT_MS`), the request head in actix-http (128 KiB and
//! 96 headers, answered 431), connections per worker in `startup`
//! (`HOOKRELAY_MAX_CONNECTIONS`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::IntCounter;

use crate::domain::MerchantId;

/// Buckets kept before idle, full ones are dropped (they hold nothing a new bucket
/// would not). Bounded anyway by the number of merchants, since only authenticated
/// requests reach the limiter.
const PRUNE_ABOVE: usize = 4096;

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn full(burst: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(burst),
            updated: now,
        }
    }

    /// Takes one token, or says how long until one is there.
    pub fn try_take(&mut self, rate: u32, burst: u32, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(f64::from(burst));
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / f64::from(rate)))
        }
    }

    fn is_full(&self, rate: u32, burst: u32, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens + elapsed * f64::from(rate) >= f64::from(burst)
    }
}

/// The per-merchant ingest rate limit (`HOOKRELAY_INGEST_RATE_PER_SECOND`,
/// `HOOKRELAY_INGEST_BURST`).
pub struct IngestLimiter {
    /// Events per second per merchant, sustained; 0: no limit.
    rate: u32,
    /// Events a merchant may send at once after being idle.
    burst: u32,
    buckets: Mutex<HashMap<MerchantId, TokenBucket>>,
    /// `hookrelay_ingest_rate_limited_total`.
    refused: Option<IntCounter>,
}

impl IngestLimiter {
    pub fn new(rate: u32, burst: u32, refused: Option<IntCounter>) -> Self {
        Self {
            rate,
            burst: burst.max(1),
            buckets: Mutex::default(),
            refused,
        }
    }

    /// Counts one request of `merchant`; `Err` holds the `Retry-After` in whole
    /// seconds (at least 1) when the merchant is over its limit.
    pub fn check(&self, merchant: &MerchantId) -> Result<(), u64> {
        self.check_at(merchant, Instant::now())
    }

    pub fn check_at(&self, merchant: &MerchantId, now: Instant) -> Result<(), u64> {
        if self.rate == 0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            buckets.retain(|_, bucket| !bucket.is_full(self.rate, self.burst, now));
        }
        let result = buckets
            .entry(merchant.clone())
            .or_insert_with(|| TokenBucket::full(self.burst, now))
            .try_take(self.rate, self.burst, now);
        drop(buckets);
        result.map_err(|wait| {
            if let Some(counter) = &self.refused {
                counter.inc();
            }
            wait.as_secs_f64().ceil().max(1.0) as u64
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merchant(id: &str) -> MerchantId {
        MerchantId::parse(id).unwrap()
    }

    #[test]
    fn a_bucket_allows_the_burst_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::full(3, t0);
        for _ in 0..3 {
            assert_eq!(bucket.try_take(2, 3, t0), Ok(()));
        }
        let wait = bucket.try_take(2, 3, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(bucket.try_take(2, 3, t0 + Duration::from_millis(499)).is_err());
        assert_eq!(bucket.try_take(2, 3, t0 + Duration::from_millis(1000)), Ok(()));
        // Never more than the burst, however long it was idle.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(bucket.try_take(2, 3, later), Ok(()));
        }
        assert!(bucket.try_take(2, 3, later).is_err());
    }

    #[test]
    fn merchants_have_separate_limits_and_retry_after_is_whole_seconds_of_at_least_one() {
        let limiter = IngestLimiter::new(10, 2, None);
        let t0 = Instant::now();
        let (a, b) = (merchant("a"), merchant("b"));
        assert_eq!(limiter.check_at(&a, t0), Ok(()));
        assert_eq!(limiter.check_at(&a, t0), Ok(()));
        assert_eq!(limiter.check_at(&a, t0), Err(1));
        assert_eq!(limiter.check_at(&b, t0), Ok(()));
        assert_eq!(limiter.check_at(&a, t0 + Duration::from_millis(100)), Ok(()));
        let slow = IngestLimiter::new(1, 1, None);
        assert_eq!(slow.check_at(&a, t0), Ok(()));
        assert_eq!(slow.check_at(&a, t0 + Duration::from_millis(1)), Err(1));
        let very_slow = IngestLimiter::new(1, 1, None);
        assert_eq!(very_slow.check_at(&a, t0), Ok(()));
        assert_eq!(very_slow.check_at(&a, t0), Err(1));
    }

    #[test]
    fn a_rate_of_zero_turns_the_limit_off() {
        let limiter = IngestLimiter::new(0, 1, None);
        let t0 = Instant::now();
        for _ in 0..100 {
            assert_eq!(limiter.check_at(&merchant("a"), t0), Ok(()));
        }
    }

    #[test]
    fn refusals_are_counted() {
        let counter = IntCounter::new("c", "c").unwrap();
        let limiter = IngestLimiter::new(1, 1, Some(counter.clone()));
        let t0 = Instant::now();
        let _ = limiter.check_at(&merchant("a"), t0);
        let _ = limiter.check_at(&merchant("a"), t0);
        let _ = limiter.check_at(&merchant("a"), t0);
        assert_eq!(counter.get(), 2);
    }

    #[test]
    fn idle_full_buckets_are_pruned_when_many_merchants_were_seen() {
        let limiter = IngestLimiter::new(1000, 1, None);
        let t0 = Instant::now();
        for n in 0..=PRUNE_ABOVE {
            limiter.check_at(&merchant(&format!("m{n}")), t0).unwrap();
        }
        limiter
            .check_at(&merchant("late"), t0 + Duration::from_secs(1))
            .unwrap();
        assert_eq!(limiter.buckets.lock().unwrap().len(), 1);
    }
}
