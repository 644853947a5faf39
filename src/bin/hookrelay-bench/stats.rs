//! The bench's clock and exact percentiles over recorded latencies.

use std::hash::Hasher as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// A monotonic clock read as Unix nanoseconds: the wall time at start-up plus the
/// monotonic time since. Senders, the sink and the sampler all read this one clock,
/// so differences between their readings are true durations.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: Instant,
    origin_unix_ns: u64,
}

impl Clock {
    pub fn start() -> Self {
        let origin_unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        Self {
            origin: Instant::now(),
            origin_unix_ns,
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.origin_unix_ns + self.origin.elapsed().as_nanos() as u64
    }

    /// The monotonic instant of a reading of this clock.
    pub fn instant_at(&self, ns: u64) -> Instant {
        self.origin + Duration::from_nanos(ns.saturating_sub(self.origin_unix_ns))
    }
}

/// Nanoseconds as seconds.
pub fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// A 64-bit digest of an event id, so that a million recorded deliveries stay small.
/// Collisions among a million ids have a chance of about 3e-8.
pub fn id_digest(id: &[u8]) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    hasher.write(id);
    hasher.finish()
}

/// Percentiles of a latency sample, in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// `[percentile, ms]` pairs from 0 to 100, for plotting the whole distribution.
    pub curve: Vec<[f64; 2]>,
}

/// Percentile points of the plotted curve: dense in the tail, as HdrHistogram plots are.
const CURVE_POINTS: &[f64] = &[
    0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 75.0, 80.0, 85.0, 90.0, 92.5, 95.0, 96.0, 97.0, 98.0, 99.0, 99.5,
    99.75, 99.9, 99.95, 99.99, 100.0,
];

impl Percentiles {
    /// Exact (nearest-rank) percentiles of nanosecond samples; sorts them in place.
    pub fn of(samples_ns: &mut [u64]) -> Self {
        if samples_ns.is_empty() {
            return Self::default();
        }
        samples_ns.sort_unstable();
        let ms = |ns: u64| ns as f64 / 1e6;
        let at = |p: f64| {
            // The epsilon keeps 99.9% of 1000 at rank 999 despite floating-point error.
            let rank = ((p / 100.0) * samples_ns.len() as f64 - 1e-9).ceil() as usize;
            ms(samples_ns[rank.clamp(1, samples_ns.len()) - 1])
        };
        let sum: u128 = samples_ns.iter().map(|&v| v as u128).sum();
        Self {
            count: samples_ns.len(),
            min_ms: ms(samples_ns[0]),
            mean_ms: sum as f64 / samples_ns.len() as f64 / 1e6,
            p50_ms: at(50.0),
            p90_ms: at(90.0),
            p99_ms: at(99.0),
            p999_ms: at(99.9),
            max_ms: ms(samples_ns[samples_ns.len() - 1]),
            curve: CURVE_POINTS.iter().map(|&p| [p, at(p)]).collect(),
        }
    }
}

/// The least-squares line through `points`: `(intercept, slope)`. `None` for fewer than
/// three points or when every x is the same.
pub fn line_fit(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let spread: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    if spread == 0.0 {
        return None;
    }
    let slope = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum::<f64>() / spread;
    Some((mean_y - slope * mean_x, slope))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_fits_points_on_it_exactly_and_noise_around_it_closely() {
        let on: Vec<(f64, f64)> = (0..10).map(|x| (x as f64, 3.0 + 2.0 * x as f64)).collect();
        assert_eq!(line_fit(&on), Some((3.0, 2.0)));
        let around: Vec<(f64, f64)> = (0..100)
            .map(|x| (x as f64, 10.0 + 0.5 * x as f64 + if x % 2 == 0 { 1.0 } else { -1.0 }))
            .collect();
        let (intercept, slope) = line_fit(&around).unwrap();
        assert!(
            (slope - 0.5).abs() < 0.01 && (intercept - 10.0).abs() < 0.5,
            "{intercept} {slope}"
        );
    }

    #[test]
    fn no_line_through_too_few_or_stacked_points() {
        assert_eq!(line_fit(&[(1.0, 1.0), (2.0, 2.0)]), None);
        assert_eq!(line_fit(&[(1.0, 1.0), (1.0, 2.0), (1.0, 3.0)]), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut samples: Vec<u64> = (1..=1000).map(|v| v * 1_000_000).collect();
        let p = Percentiles::of(&mut samples);
        assert_eq!(p.count, 1000);
        assert_eq!(p.p50_ms, 500.0);
        assert_eq!(p.p99_ms, 990.0);
        assert_eq!(p.p999_ms, 999.0);
        assert_eq!(p.max_ms, 1000.0);
        assert_eq!(p.min_ms, 1.0);
    }

    #[test]
    fn no_samples_give_zeros() {
        assert_eq!(Percentiles::of(&mut []).count, 0);
    }
}
