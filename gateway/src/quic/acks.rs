//! When each packet of a QUIC connection was acknowledged: the per-packet feedback of the
//! connection's bandwidth estimate ([`QuicEstimator`](strait_media::bwe::QuicEstimator)).
//!
//! quinn tells its congestion controller of every acknowledged packet (when it was sent, when
//! the acknowledgement came, its size). [`AckTapFactory`] wraps the configured controller's
//! factory: each connection's controller is the configured one, unchanged in what it decides,
//! with a tap that keeps those acknowledgements in an [`AckFeed`] the session drains at each look
//! at its connection. An acknowledgement's arrival stands for the packet's: the way back and the
//! receiver's acknowledgement delay add a constant, or noise, not a trend.

use std::any::Any;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use quinn_proto::RttEstimator;
use quinn_proto::congestion::{Controller, ControllerFactory, ControllerMetrics};
use strait_media::bwe::PacketFate;

/// Acknowledgements kept between two drains at most (about 4 s of a 1 000-packet/s leg, at
/// 24 bytes each); when full the oldest go (a session that does not look loses history, not
/// the connection's memory).
pub(crate) const MAX_KEPT: usize = 4096;

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
    /// it), if it is tapped.
    #[must_use]
    pub fn of(controller: Box<dyn Controller>) -> Option<AckFeed> {
        controller
            .into_any()
            .downcast::<AckTap>()
            .ok()
            .map(|tap| tap.feed.clone())
    }
}

/// Builds the configured congestion controller with a tap (see the module docs).
pub struct AckTapFactory {
    inner: Arc<dyn ControllerFactory + Send + Sync>,
}

impl std::fmt::Debug for AckTapFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckTapFactory").finish_non_exhaustive()
    }
}

impl AckTapFactory {
    /// Taps the controllers `inner` builds.
    #[must_use]
    pub fn new(inner: Arc<dyn ControllerFactory + Send + Sync>) -> Self {
        Self { inner }
    }
}

impl ControllerFactory for AckTapFactory {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(AckTap {
            inner: self.inner.clone().build(now, current_mtu),
            batch: Vec::new(),
            feed: AckFeed::default(),
        })
    }
}

/// A congestion controller that decides as its inner one and keeps the acknowledgements.
struct AckTap {
    inner: Box<dyn Controller>,
    /// The acknowledgements of the batch being processed (one lock of the feed per batch).
    batch: Vec<Acked>,
    feed: AckFeed,
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
        self.batch.push(Acked {
            sent,
            acked: now,
            bytes: u32::try_from(bytes).unwrap_or(u32::MAX),
        });
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
        self.inner
            .on_congestion_event(now, sent, is_persistent_congestion, lost_bytes);
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
        let factory = Arc::new(AckTapFactory::new(Arc::new(
            quinn_proto::congestion::CubicConfig::default(),
        )));
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
        let mut out = Vec::new();
        assert_eq!(feed.drain(&mut out), 0);
        assert!(out.is_empty());
    }
}
