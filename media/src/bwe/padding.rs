//! The pacing of a probe's padding: how many bytes are due when, for a rate and an end.

use std::time::{Duration, Instant};

/// Padding is sent in slices this far apart.
pub const PADDING_INTERVAL: Duration = Duration::from_millis(10);

/// A probe's padding for one subscriber: `bps` until `until`, in slices every
/// [`PADDING_INTERVAL`]. Sans-IO: the caller asks when the next slice is due and takes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Padding {
    bps: u64,
    until: Instant,
    next: Instant,
    /// Bytes owed but not yet whole.
    owed: f64,
}

impl Padding {
    /// Padding at `bps` from `now` until `until` (nothing when `bps` is 0).
    #[must_use]
    pub fn new(bps: u64, until: Instant, now: Instant) -> Self {
        Self {
            bps,
            until,
            next: now,
            owed: 0.0,
        }
    }

    /// When the next slice is due; `None` once the padding is over.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.bps > 0 && self.next < self.until).then_some(self.next)
    }

    /// The bytes due at `now` (0 before the next slice or after the end). A late call gets what
    /// the missed slices owed, up to one interval's worth more (no burst after a stall).
    pub fn take(&mut self, now: Instant) -> usize {
        if self.bps == 0 || now < self.next || self.next >= self.until {
            return 0;
        }
        let end = now.min(self.until);
        let elapsed =
            (end.saturating_duration_since(self.next) + PADDING_INTERVAL).min(PADDING_INTERVAL * 2);
        self.owed += self.bps as f64 / 8.0 * elapsed.as_secs_f64();
        self.next = now + PADDING_INTERVAL;
        let whole = self.owed.floor();
        self.owed -= whole;
        whole as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_comes_at_its_rate_until_its_end() {
        let t0 = Instant::now();
        let mut padding = Padding::new(400_000, t0 + Duration::from_secs(1), t0);
        let mut bytes = 0;
        let mut slices = 0;
        while let Some(at) = padding.poll_timeout() {
            bytes += padding.take(at);
            slices += 1;
            assert!(slices <= 200, "runs past its end");
        }
        // 400 kbit/s for 1 s: 50 000 bytes.
        assert!((49_000..=51_000).contains(&bytes), "{bytes}");
        assert_eq!(padding.take(t0 + Duration::from_secs(2)), 0);
        assert_eq!(
            Padding::new(0, t0 + Duration::from_secs(1), t0).poll_timeout(),
            None
        );
    }

    #[test]
    fn a_late_call_does_not_burst() {
        let t0 = Instant::now();
        let mut padding = Padding::new(800_000, t0 + Duration::from_secs(5), t0);
        // Half a second late: two intervals' worth at most (2 000 bytes), not 50 000.
        let bytes = padding.take(t0 + Duration::from_millis(500));
        assert!(bytes <= 2_000, "{bytes}");
    }
}
