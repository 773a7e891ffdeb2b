//! Medians and percentiles for the reports.

/// The median of `values` (0 when empty).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.is_empty() {
        0.0
    } else if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// `part` as a percentage of `whole` (0 when `whole` is 0).
pub fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// A latency histogram with fixed buckets: 1 µs resolution below 1 ms, then about 1 % relative
/// error up to 60 s. Memory is bounded (a few thousand counters) whatever the number of samples.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max_us: u64,
}

const LINEAR_US: u64 = 1000;
const STEPS_PER_DOUBLING: u64 = 64;
const DOUBLINGS: u64 = 16; // 1 ms · 2^16 ≈ 65 s

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; (LINEAR_US + STEPS_PER_DOUBLING * DOUBLINGS + 1) as usize],
            total: 0,
            max_us: 0,
        }
    }
}

impl Histogram {
    fn bucket(us: u64) -> usize {
        if us < LINEAR_US {
            return us as usize;
        }
        let ratio = us as f64 / LINEAR_US as f64;
        let step = (ratio.log2() * STEPS_PER_DOUBLING as f64) as u64;
        (LINEAR_US + step.min(STEPS_PER_DOUBLING * DOUBLINGS)) as usize
    }

    fn value(bucket: usize) -> u64 {
        let b = bucket as u64;
        if b < LINEAR_US {
            return b;
        }
        let step = (b - LINEAR_US) as f64 / STEPS_PER_DOUBLING as f64;
        (LINEAR_US as f64 * step.exp2()) as u64
    }

    /// Records one sample, in microseconds.
    pub fn record_us(&mut self, us: u64) {
        self.counts[Self::bucket(us)] += 1;
        self.total += 1;
        self.max_us = self.max_us.max(us);
    }

    /// Adds `other`'s samples to this one.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// How many samples.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The `q` quantile (0..=1) in microseconds, as the lower bound of its bucket (at most about
    /// 1 % under the true value above 1 ms); the maximum is exact. `None` without samples.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        if rank == self.total {
            // The largest sample is kept exactly.
            return Some(self.max_us);
        }
        let mut seen = 0;
        for (bucket, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(Self::value(bucket).min(self.max_us));
            }
        }
        Some(self.max_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_a_uniform_range_are_close() {
        let mut h = Histogram::default();
        for us in 1..=100_000 {
            h.record_us(us);
        }
        let p50 = h.quantile_us(0.5).unwrap() as f64;
        let p99 = h.quantile_us(0.99).unwrap() as f64;
        assert!((p50 / 50_000.0 - 1.0).abs() < 0.02, "{p50}");
        assert!((p99 / 99_000.0 - 1.0).abs() < 0.02, "{p99}");
        assert_eq!(h.quantile_us(1.0), Some(100_000));
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }
}
