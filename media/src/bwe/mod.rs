//! Bandwidth estimation, sans-IO: what a subscriber's link can carry, from the transport's own
//! counters, and what each published layer really costs.
//!
//! Nothing here knows quinn, and no `rtc` type crosses its interface: the gateway reads its
//! transport's counters (a QUIC connection's statistics, say) and per-packet feedback into plain
//! samples and feeds them in, with the time. What comes out is an [`Estimate`] per leg, for the
//! layer allocator:
//!
//! - [`DelayEstimator`]: a leg's estimate from per-packet feedback (when each packet left, when
//!   it arrived): the trend of the delay across packet groups (GCC's, `rtc`'s implementation used
//!   as a library), the queueing delay, the acknowledged rate and losses. A WebRTC leg's TWCC
//!   feeds it, and so do a QUIC leg's acknowledgements.
//! - [`QuicEstimator`]: a QUIC leg's estimate. With each packet's acknowledgement
//!   ([`QuicEstimator::update_with_acks`], what the gateway does) it is [`DelayEstimator`]'s,
//!   with what only the sender sees added: the datagram-buffer delay, and the congestion window
//!   over the RTT as a ceiling while datagrams wait for it. From the counters alone
//!   ([`QuicEstimator::update`]) it reads the acknowledged rate, the queueing delay (smoothed RTT
//!   − minimum RTT), the buffer delay, loss and congestion events. Either way the window is only
//!   a ceiling: quinn's Cubic does not grow its window while the sender is app-limited, so that
//!   quotient follows the RTT and bursts, not capacity. An app-limited leg is held at 1.5 × what
//!   it actually delivered + 10 kbit/s, so that it climbs step by step as it proves it can carry
//!   more, rather than drifting upward on no evidence.
//! - [`LayerRates`]: the measured rate of each simulcast layer of a published track (a moving
//!   average over about 2 s of the publisher's real bytes) and whether the layer is alive (a layer
//!   silent for a second is not). A layer's cost is its measured rate, its declared one until it
//!   is measured, and defaults when neither is known, so that a layer declared at 0 is never
//!   free.
//! - [`allocate`]: one subscriber's choice of layer (or pause) per video subscription within its
//!   estimate, by priority.

mod allocate;
mod delay;
mod layer_rate;
mod padding;
mod policy;
mod quic;

pub use self::allocate::{AllocatorConfig, Choice, Outcome, VideoWant, allocate};
#[cfg(test)]
pub(crate) use self::delay::CONGESTED_LOSS;
pub use self::delay::{DelayEstimator, PacketFate};
pub use self::layer_rate::{DEFAULT_LAYER_COSTS, LayerRates, SILENT_AFTER};
pub use self::padding::{PADDING_INTERVAL, Padding};
pub use self::policy::BudgetPolicy;
pub use self::quic::{
    IDLE_BPS, QuicEstimator, QuicEstimatorConfig, QuicSample, RefreshPace, START_BPS,
};

use std::time::Duration;

/// What a leg's congestion signals say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// No sign of a queue: the estimate may grow.
    Clear,
    /// A queue is building: hold, do not climb.
    Warning,
    /// Overuse: the estimate falls below what the leg delivered.
    Congested,
}

/// A leg's estimate, in bits per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    /// What the leg may be given now.
    pub available_bps: u64,
    /// What it delivered lately (acknowledged), smoothed.
    pub acked_bps: u64,
    /// What it has shown it carries: the highest rate it delivered over half a second while
    /// clear, lately (media and a probe's padding alike), and at least `acked_bps`. A climb to
    /// a higher layer must fit in it: what a leg may be given to hold (`available_bps`) is
    /// more than what it may climb to on no evidence.
    pub proven_bps: u64,
    /// What the congestion signals say.
    pub state: LinkState,
    /// The queueing delay the transport sees (smoothed RTT − minimum RTT).
    pub queue_delay: Duration,
}

/// An estimate is a real change from the last when its state changed, or its available or
/// proven rate moved by this share…
pub const ESTIMATE_STEP_PERCENT: u64 = 10;

/// …or its queueing delay moved by this much (a probe watches the queue it may be building).
pub const QUEUE_STEP: Duration = Duration::from_millis(5);

impl Estimate {
    /// A bare bandwidth figure as an estimate: a clear link that may carry `bps` and has shown
    /// it does (for a leg with no congestion signals of its own).
    #[must_use]
    pub fn clear(bps: u64) -> Self {
        Self {
            available_bps: bps,
            acked_bps: bps,
            proven_bps: bps,
            state: LinkState::Clear,
            queue_delay: Duration::ZERO,
        }
    }

    /// Whether this estimate is a real change from `last` (see [`ESTIMATE_STEP_PERCENT`] and
    /// [`QUEUE_STEP`]): what
    /// the gateway passes on to its media worker, and what makes the allocation run again.
    #[must_use]
    pub fn moved_from(&self, last: &Estimate) -> bool {
        let moved = |a: u64, b: u64| {
            let d = a.abs_diff(b);
            d > 0 && d.saturating_mul(100) >= b.saturating_mul(ESTIMATE_STEP_PERCENT)
        };
        self.state != last.state
            || moved(self.available_bps, last.available_bps)
            || moved(self.proven_bps, last.proven_bps)
            || self.queue_delay.abs_diff(last.queue_delay) >= QUEUE_STEP
    }
}

/// How long a delivered rate stays proven.
const PROVEN_FOR: Duration = Duration::from_secs(10);

/// Delivered bytes are summed over windows of this length for [`Proven`].
const PROVEN_WINDOW: Duration = Duration::from_millis(500);

/// The highest rate a leg delivered over a window of [`PROVEN_WINDOW`] while its link was
/// clear, in the last [`PROVEN_FOR`]: what the leg has shown it can carry. A probe's padding
/// lifts it, so that successive probes build on each other instead of each starting again from
/// the (smoothed) acknowledged rate. Congestion resets it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Proven {
    /// Closed windows: when each ended and its rate.
    windows: std::collections::VecDeque<(std::time::Instant, f64)>,
    /// The open window: when it started, and its bytes.
    open: Option<(std::time::Instant, u64)>,
}

impl Proven {
    /// `bytes` were delivered between `since` and `now`; `clear` says whether the link was clear
    /// meanwhile (a window with any unclear part is not counted).
    pub(crate) fn record(
        &mut self,
        bytes: u64,
        since: std::time::Instant,
        now: std::time::Instant,
        clear: bool,
    ) {
        if !clear {
            self.open = None;
            return;
        }
        let (start, sum) = self.open.get_or_insert((since, 0));
        *sum += bytes;
        let elapsed = now.saturating_duration_since(*start);
        if elapsed >= PROVEN_WINDOW {
            let rate = *sum as f64 * 8.0 / elapsed.as_secs_f64();
            self.windows.push_back((now, rate));
            self.open = Some((now, 0));
        }
        while self
            .windows
            .front()
            .is_some_and(|&(at, _)| now.saturating_duration_since(at) > PROVEN_FOR)
        {
            self.windows.pop_front();
        }
    }

    /// The highest proven rate, bits per second (0 when none).
    pub(crate) fn rate(&self) -> f64 {
        self.windows.iter().map(|&(_, r)| r).fold(0.0, f64::max)
    }

    /// Forgets everything (the link is congested: what it carried before no longer holds).
    pub(crate) fn reset(&mut self) {
        self.windows.clear();
        self.open = None;
    }
}

/// The growth rule of a clear leg shared by both estimators: at most `growth` × what the leg
/// has shown it carries + `bonus_bps`, so that an app-limited leg climbs as it proves more (by
/// its media, or by a probe's padding) rather than drifting upward on no evidence.
pub(crate) fn clear_limit(acked_bps: f64, proven_bps: f64, growth: f64, bonus_bps: f64) -> f64 {
    growth * acked_bps.max(proven_bps) + bonus_bps
}

/// The rate a probe aims the leg at: what it must show it carries (its proven rate, or what
/// it sends if more) for `shortfall_bps` more, a tenth more.
#[must_use]
pub fn probe_goal(estimate: &Estimate, sending_bps: u64, shortfall_bps: u64) -> u64 {
    let shown = estimate.proven_bps.max(sending_bps);
    shown.saturating_add(shortfall_bps).saturating_mul(11) / 10
}

/// A probe ramps: it asks the leg for [`PROBE_STEP`] × what it sends at first, then
/// [`PROBE_STEP`] × its last level at each step while the link stays clear, up to its goal. A
/// step overshoots a link by at most a fifth of a level the link carried, so the queue it builds
/// before the estimator sees it stays well inside a 100 ms queue: a failing probe stops before it
/// costs media a packet. (What the leg has shown it carries is not where a ramp starts: it may
/// be a probe's level that the link only just carried.)
#[must_use]
pub fn probe_level(sending_bps: u64, last_level: Option<u64>, goal: u64) -> u64 {
    let from = last_level.unwrap_or(sending_bps);
    ((from as f64 * PROBE_STEP) as u64).min(goal)
}

/// See [`probe_level`].
pub const PROBE_STEP: f64 = 1.2;

/// The clear legs' growth: at most this multiple of what a leg has shown it carries…
pub(crate) const ACK_GROWTH: f64 = 1.5;
/// …plus this, bits per second.
pub(crate) const ACK_BONUS_BPS: f64 = 10_000.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_aims_a_tenth_above_the_missing_step_and_ramps_to_it_by_a_fifth() {
        let estimate = Estimate::clear(600_000);
        // Shown 600 k (more than the 500 k sent), 1 M missing: 1.76 M.
        assert_eq!(probe_goal(&estimate, 500_000, 1_000_000), 1_760_000);
        assert_eq!(probe_level(500_000, None, 1_760_000), 600_000);
        assert_eq!(probe_level(500_000, Some(600_000), 1_760_000), 720_000);
        assert_eq!(probe_level(500_000, Some(1_600_000), 1_760_000), 1_760_000);
    }

    #[test]
    fn a_queue_that_moved_is_a_real_change() {
        let last = Estimate::clear(1_000_000);
        let mut next = last;
        next.queue_delay = QUEUE_STEP - Duration::from_millis(1);
        assert!(!next.moved_from(&last));
        next.queue_delay = QUEUE_STEP;
        assert!(next.moved_from(&last));
    }
}
