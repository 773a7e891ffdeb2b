//! Bandwidth estimation, sans-IO: what a subscriber's link can carry, from the transport's own
//! counters, and what each published layer really costs.
//!
//! Nothing here knows quinn or `rtc`: the gateway reads its transport's counters (a QUIC
//! connection's statistics, say) into plain samples at a steady tick and feeds them in, with the
//! time. What comes out is an [`Estimate`] per leg, for the layer allocator:
//!
//! - [`QuicEstimator`]: a QUIC leg's estimate from the acknowledged rate, the queueing delay
//!   (smoothed RTT − minimum RTT), the datagram-buffer delay, loss and congestion events. The
//!   congestion window over the RTT is only a ceiling: quinn's Cubic does not grow its window while
//!   the sender is app-limited, so that quotient follows the RTT and bursts, not capacity. An
//!   app-limited leg is held at 1.5 × what it actually delivered + 10 kbit/s, so that it climbs
//!   step by step as it proves it can carry more, rather than drifting upward on no evidence.
//! - [`LayerRates`]: the measured rate of each simulcast layer of a published track (a moving
//!   average over about 2 s of the publisher's real bytes) and whether the layer is alive (a layer
//!   silent for a second is not). A layer's cost is the larger of its declared and measured rates,
//!   with defaults when neither is known, so that a layer declared at 0 is never free.
//! - [`allocate`]: one subscriber's choice of layer (or pause) per video subscription within its
//!   estimate, by priority.

mod allocate;
mod layer_rate;
mod padding;
mod quic;

pub use self::allocate::{AllocatorConfig, Choice, Outcome, VideoWant, allocate};
pub use self::layer_rate::{DEFAULT_LAYER_COSTS, LayerRates, SILENT_AFTER};
pub use self::padding::{PADDING_INTERVAL, Padding};
pub use self::quic::{QuicEstimator, QuicEstimatorConfig, QuicSample};

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
    /// What the congestion signals say.
    pub state: LinkState,
    /// The queueing delay the transport sees (smoothed RTT − minimum RTT).
    pub queue_delay: Duration,
}
