//! When each packet of a QUIC connection was acknowledged: the per-packet feedback of the
//! connection's bandwidth estimate ([`QuicEstimator`](strait_media::bwe::QuicEstimator)).
//!
//! quinn tells its congestion controller of every acknowledged packet (when it was sent, when
//! the acknowledgement came, its size). [`AckTapFactory`] wraps the configured controller's
//! factory: each connection's controller is the configured one, unchanged in what it decides,
//! with a tap that keeps those acknowledgements in an [`AckFeed`] the session drains at each look
//! at its connection. An acknowledgement's arrival stands for the packet's: the way back and the
//! receiver's acknowledgement delay add a constant, or noise, not a trend.
//!
//! The tap also keeps random loss from shrinking the window (`quic.loss_tolerance`): a
//! congestion event is passed on to the controller only when the path shows a queue (its
//! smoothed RTT more than [`QUEUE_GATE`] above its minimum), when the share of bytes lost
//! lately is above the tolerance, or when the congestion is persistent. A lossy last hop (Wi-Fi,
//! a mobile link) drops a few per cent of packets without any queue; Cubic shrinks its window
//! at each of those losses and holds a subscriber's datagrams back far below what the link
//! carries (docs/BENCHMARKS.md §13). An overflowing queue still shows in the RTT first, and a
//! policer that drops without a queue drops far more than a few per cent once it is exceeded.
//! The media's own rate is the bandwidth estimate's job: it treats loss above 2 % as a reason
//! to hold and above 10 % as congestion, whatever the window does.

use std::any::Any;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use quinn_proto::RttEstimator;
use quinn_proto::congestion::{Controller, ControllerFactory, ControllerMetrics};
use strait_media::bwe::PacketFate;

#[cfg(test)]
use crate::config::DEFAULT_LOSS_TOLERANCE;

/// Acknowledgements kept between two drains at most (about 4 s of a 1 000-packet/s leg, at
/// 24 bytes each); when full the oldest go (a session that does not look loses history, not
/// the connection's memory).
pub(crate) const MAX_KEPT: usize = 4096;

/// A path whose smoothed RTT is within this of its minimum shows no queue: a loss there is not
/// the sign of one overflowing.
pub(crate) const QUEUE_GATE: Duration = Duration::from_millis(20);

/// The loss ratio is judged once this many bytes were acknowledged or lost (a few losses
/// among the first packets of a connection are no ratio yet)…
const GATE_MIN_BYTES: u64 = 64 * 1024;

/// …and over about the last this many (the counts are halved past it).
const GATE_SPAN_BYTES: u64 = 256 * 1024;

/// Which congestion events reach the controller (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LossGate {
    tolerance: f64,
    /// The path's smoothed RTT over its minimum at the last acknowledgement.
    queue: Duration,
    acked: u64,
    lost: u64,
}

impl LossGate {
    pub(crate) fn new(tolerance: f64) -> Self {
        Self {
            tolerance,
            queue: Duration::ZERO,
            acked: 0,
            lost: 0,
        }
    }

    /// `bytes` were acknowledged; the path's smoothed and minimum RTT are now these.
    pub(crate) fn on_ack(&mut self, bytes: u64, smoothed: Duration, min: Duration) {
        self.queue = smoothed.saturating_sub(min);
        self.acked += bytes;
        self.decay();
    }

    /// A congestion event with `lost` bytes: whether the controller hears of it.
    pub(crate) fn admits(&mut self, persistent: bool, lost: u64) -> bool {
        self.lost += lost;
        self.decay();
        if self.tolerance <= 0.0 || persistent || self.queue > QUEUE_GATE {
            return true;
        }
        let total = self.acked + self.lost;
        total >= GATE_MIN_BYTES && self.lost as f64 > self.tolerance * total as f64
    }

    fn decay(&mut self) {
        if self.acked + self.lost > GATE_SPAN_BYTES {
            self.acked /= 2;
            self.lost /= 2;
        }
    }
}

/// One acknowledged packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Acked {
    sent: Instant,
    acked: Instant,
    bytes: u32,
}

#[derive(Debug, Default)]
struct Kept {
    acked: VecDeque<Acked>,
    /// Acknowledgements dropped because the feed was full.
    dropped: u64,
    /// Arrivals are measured from here: the first acknowledgement.
    epoch: Option<Instant>,
}

/// A connection's acknowledgements, kept by its controller's tap until drained (see the module
/// docs). Cloning gives another handle to the same feed.
#[derive(Debug, Clone, Default)]
pub struct AckFeed(Arc<Mutex<Kept>>);

impl AckFeed {
    /// Moves every acknowledgement kept so far into `out` as packet fates (in the order the
    /// packets were sent; arrivals counted from the first acknowledgement ever kept). Returns
    /// how many were dropped, so far, because the feed was full.
    pub fn drain(&self, out: &mut Vec<PacketFate>) -> u64 {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(epoch) = kept.epoch else {
            return kept.dropped;
        };
        let start = out.len();
        out.extend(kept.acked.drain(..).map(|a| PacketFate {
            departure: a.sent,
            arrival: Some(a.acked.saturating_duration_since(epoch)),
            size: a.bytes,
        }));
        out[start..].sort_by_key(|f| f.departure);
        kept.dropped
    }

    fn append(&self, batch: &mut Vec<Acked>) {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(first) = batch.first() {
            kept.epoch.get_or_insert(first.acked);
        }
        for a in batch.drain(..) {
            if kept.acked.len() >= MAX_KEPT {
                kept.acked.pop_front();
                kept.dropped += 1;
            }
            kept.acked.push_back(a);
        }
    }

    /// Whether `other` is a handle to this same feed (a path whose controller quinn carried
    /// over keeps its feed; a new path's controller has a new one).
    #[must_use]
    pub fn same(&self, other: &AckFeed) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The feed of the controller `controller` (a connection's, as quinn hands out a copy of
    /// it), if it is tapped and keeps acknowledgements (a tap there only for
    /// `quic.loss_tolerance` has none to give: the estimate reads the counters alone then).
    #[must_use]
    pub fn of(controller: Box<dyn Controller>) -> Option<AckFeed> {
        controller
            .into_any()
            .downcast::<AckTap>()
            .ok()
            .filter(|tap| tap.keep_acks)
            .map(|tap| tap.feed.clone())
    }
}

/// Builds the configured congestion controller with a tap (see the module docs).
pub struct AckTapFactory {
    inner: Arc<dyn ControllerFactory + Send + Sync>,
    keep_acks: bool,
    loss_tolerance: f64,
}

impl std::fmt::Debug for AckTapFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckTapFactory").finish_non_exhaustive()
    }
}

impl AckTapFactory {
    /// Taps the controllers `inner` builds: each keeps its acknowledgements (`keep_acks`,
    /// `quic.ack_feedback`) and hears of congestion events as `loss_tolerance`
    /// (`quic.loss_tolerance`, 0: all of them) lets through.
    #[must_use]
    pub fn new(
        inner: Arc<dyn ControllerFactory + Send + Sync>,
        keep_acks: bool,
        loss_tolerance: f64,
    ) -> Self {
        Self {
            inner,
            keep_acks,
            loss_tolerance,
        }
    }
}

impl ControllerFactory for AckTapFactory {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(AckTap {
            inner: self.inner.clone().build(now, current_mtu),
            batch: Vec::new(),
            feed: AckFeed::default(),
            keep_acks: self.keep_acks,
            gate: LossGate::new(self.loss_tolerance),
        })
    }
}

/// A congestion controller that decides as its inner one, hears of congestion events as its
/// gate lets through, and keeps the acknowledgements.
struct AckTap {
    inner: Box<dyn Controller>,
    /// The acknowledgements of the batch being processed (one lock of the feed per batch).
    batch: Vec<Acked>,
    feed: AckFeed,
    keep_acks: bool,
    gate: LossGate,
}

impl Controller for AckTap {
    fn on_sent(&mut self, now: Instant, bytes: u64, last_packet_number: u64) {
        self.inner.on_sent(now, bytes, last_packet_number);
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &RttEstimator,
    ) {
        self.inner.on_ack(now, sent, bytes, app_limited, rtt);
        self.gate.on_ack(bytes, rtt.get(), rtt.min());
        if self.keep_acks {
            self.batch.push(Acked {
                sent,
                acked: now,
                bytes: u32::try_from(bytes).unwrap_or(u32::MAX),
            });
        }
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        in_flight: u64,
        app_limited: bool,
        largest_packet_num_acked: Option<u64>,
    ) {
        self.inner
            .on_end_acks(now, in_flight, app_limited, largest_packet_num_acked);
        if !self.batch.is_empty() {
            self.feed.append(&mut self.batch);
        }
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        if self.gate.admits(is_persistent_congestion, lost_bytes) {
            self.inner
                .on_congestion_event(now, sent, is_persistent_congestion, lost_bytes);
        }
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.inner.on_mtu_update(new_mtu);
    }

    fn window(&self) -> u64 {
        self.inner.window()
    }

    fn metrics(&self) -> ControllerMetrics {
        self.inner.metrics()
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        // The same feed: a copy is how quinn hands the controller out (and how a path that
        // changed keeps its controller's state).
        Box::new(AckTap {
            inner: self.inner.clone_box(),
            batch: Vec::new(),
            feed: self.feed.clone(),
            keep_acks: self.keep_acks,
            gate: self.gate,
        })
    }

    fn initial_window(&self) -> u64 {
        self.inner.initial_window()
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_of_a_tapped_controller_shares_its_feed_and_a_new_one_does_not() {
        let factory = Arc::new(AckTapFactory::new(
            Arc::new(quinn_proto::congestion::CubicConfig::default()),
            true,
            DEFAULT_LOSS_TOLERANCE,
        ));
        let now = Instant::now();
        let first = factory.clone().build(now, 1200);
        let feed = AckFeed::of(first.clone_box()).expect("tapped");
        let again = AckFeed::of(first.clone_box()).expect("tapped");
        assert!(
            feed.same(&again),
            "a copy (quinn's congestion_state) shares the feed"
        );
        let other = AckFeed::of(factory.build(now, 1200)).expect("tapped");
        assert!(!feed.same(&other), "a new path's controller has its own");
        let untapped = Arc::new(quinn_proto::congestion::CubicConfig::default()).build(now, 1200);
        assert!(AckFeed::of(untapped).is_none());
        // A tap for the loss gate alone (`quic.ack_feedback = false`) keeps nothing: no feed, so
        // that the session reads its counters instead of waiting for acknowledgements.
        let gate_only = Arc::new(AckTapFactory::new(
            Arc::new(quinn_proto::congestion::CubicConfig::default()),
            false,
            DEFAULT_LOSS_TOLERANCE,
        ));
        assert!(AckFeed::of(gate_only.build(now, 1200)).is_none());
        let mut out = Vec::new();
        assert_eq!(feed.drain(&mut out), 0);
        assert!(out.is_empty());
    }

    const MS: Duration = Duration::from_millis(1);

    /// A gate that has seen `acked` bytes acknowledged on a path with `queue` of queueing delay.
    fn gate(tolerance: f64, acked: u64, queue: Duration) -> LossGate {
        let mut gate = LossGate::new(tolerance);
        for _ in 0..acked / 1200 {
            gate.on_ack(1200, 40 * MS + queue, 40 * MS);
        }
        gate
    }

    #[test]
    fn random_loss_without_a_queue_does_not_reach_the_controller() {
        // 3 % of the bytes lost, one packet at a time, on a path with no queue.
        let mut g = gate(DEFAULT_LOSS_TOLERANCE, 200_000, 2 * MS);
        assert!((0..6).all(|_| !g.admits(false, 1200)), "{g:?}");
        // Persistent congestion always does.
        assert!(g.admits(true, 1200));
    }

    #[test]
    fn loss_with_a_queue_or_above_the_tolerance_or_with_no_tolerance_does() {
        // The queue overflowing: the RTT shows it.
        assert!(gate(DEFAULT_LOSS_TOLERANCE, 200_000, 60 * MS).admits(false, 1200));
        // A policer: no queue, but a fifth of the bytes lost.
        let mut g = gate(DEFAULT_LOSS_TOLERANCE, 100_000, MS);
        assert!(g.admits(false, 25_000), "{g:?}");
        // Tolerance 0: every event, as the controller alone.
        assert!(gate(0.0, 200_000, MS).admits(false, 1200));
    }

    #[test]
    fn a_few_losses_among_the_first_packets_are_no_ratio_yet() {
        let mut g = gate(DEFAULT_LOSS_TOLERANCE, 12_000, MS);
        assert!(!g.admits(false, 2400), "{g:?}");
    }
}
