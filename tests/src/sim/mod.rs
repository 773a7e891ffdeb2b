//! A deterministic network simulation in virtual time, for tests of the bandwidth allocator: a
//! subscriber's QUIC leg behind a narrow link.
//!
//! # What it is
//!
//! - [`link`]: one direction of a path — a bottleneck whose rate follows a [`RateTrace`], a
//!   drop-tail queue limited in time, a propagation delay and seeded random loss — with the
//!   counters and per-packet records a test asserts on (p95 queueing delay, offered rate against
//!   capacity per bin).
//! - [`quic`]: a quinn-proto server (the gateway side) and client (the subscriber) connected over
//!   two links; datagrams from the server, what reached the client, and the server's transport
//!   counters as a [`strait_media::bwe::QuicSample`].
//! - [`webrtc`]: a subscriber's WebRTC leg — the bridge stamping RTP with transport-wide
//!   sequence numbers over a link, a browser's TWCC feedback (`rtc`'s receive interceptor) back
//!   over another — feeding the gateway's [`strait_media::webrtc::WebRtcEstimator`].
//! - [`video`]: a simulcast publisher (three VP8-like layers, Opus-like audio) producing RTP on a
//!   virtual clock.
//! - [`freeze`]: the subscriber's side of the media — which frames it could render, W3C-style
//!   freezes, delivered audio.
//!
//! # What it is not
//!
//! No sockets, no threads, no sleeping, no reading of the wall clock after the pair's epoch:
//! every part takes `now: Instant` (a fixed base plus a virtual offset) and draws randomness from
//! seeded RNGs, so the same seed gives the same run (see [`quic`] for the one exception, BBR).
//! It does not model reordering, jitter or ECN, and it does not run the SFU: the test in between
//! decides what the publisher's packets become before [`QuicPair::send_datagram`].
//!
//! # How to drive it
//!
//! Advance everything to the next instant something is due, feed what arrived, produce what is
//! due, repeat until a virtual deadline:
//!
//! ```
//! use std::time::Duration;
//! use strait_tests::sim::{
//!     MediaKind, MediaReceiver, PublisherConfig, QuicPair, QuicPairConfig, SimulcastPublisher,
//! };
//!
//! let mut pair = QuicPair::new(7, QuicPairConfig::new(1_000_000, Duration::from_millis(40)))?;
//! let mut publisher = SimulcastPublisher::new(PublisherConfig::default(), pair.now(), 7);
//! let mut receiver = MediaReceiver::default();
//! let end = pair.now() + Duration::from_secs(2);
//! while publisher.poll_timeout() < end {
//!     let t = publisher.poll_timeout();
//!     pair.run_until(t);
//!     for (at, datagram) in pair.take_received() {
//!         receiver.on_rtp(at, &datagram);
//!     }
//!     for packet in publisher.poll_packets(t) {
//!         // The middle layer and the audio: what fits a 1 Mbit/s downlink.
//!         if matches!(packet.kind, MediaKind::Video { layer: 1, .. } | MediaKind::Audio) {
//!             let _ = pair.send_datagram(packet.rtp); // a refusal is counted
//!         }
//!     }
//! }
//! let report = receiver.video(publisher.ssrc(1)).expect("video arrived").report();
//! assert_eq!(report.freeze_count, 0);
//! println!("{:?}", pair.server_sample());
//! # Ok::<(), strait_tests::sim::quic::SimError>(())
//! ```

pub mod freeze;
pub mod link;
pub mod quic;
pub mod room;
pub mod scenarios;
pub mod video;
pub mod webrtc;

pub use self::freeze::{FreezeConfig, MediaReceiver, VideoReport, VideoStream};
pub use self::link::{
    Fate, Link, LinkConfig, LinkStats, PacketRecord, QueueLimit, RateBin, RateTrace,
};
pub use self::quic::{CongestionControl, DatagramStats, QuicPair, QuicPairConfig, SimError};
pub use self::room::{LegKind, PublisherSpec, RoomConfig, SimRoom, Slot};
pub use self::video::{
    AudioConfig, LayerConfig, LayerStats, MediaKind, MediaPacket, PublisherConfig,
    SimulcastPublisher,
};
pub use self::webrtc::{WebRtcLeg, WebRtcLegConfig, WebRtcLegError, WebRtcLegStats};

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Publishes for `seconds`, forwarding `layer` and the audio over a pair whose downlink is
    /// `link_bps`.
    fn play(
        seed: u64,
        link_bps: u64,
        layer: usize,
        seconds: u64,
    ) -> (QuicPair, SimulcastPublisher, MediaReceiver) {
        let mut pair =
            QuicPair::new(seed, QuicPairConfig::new(link_bps, 40 * MS)).expect("handshake");
        let mut publisher = SimulcastPublisher::new(PublisherConfig::default(), pair.now(), seed);
        let mut receiver = MediaReceiver::default();
        let end = pair.now() + Duration::from_secs(seconds);
        while publisher.poll_timeout() < end {
            let t = publisher.poll_timeout();
            pair.run_until(t);
            for (at, datagram) in pair.take_received() {
                receiver.on_rtp(at, &datagram);
            }
            for packet in publisher.poll_packets(t) {
                let wanted = match packet.kind {
                    MediaKind::Video { layer: l, .. } => l == layer,
                    MediaKind::Audio => true,
                };
                if wanted {
                    let _ = pair.send_datagram(packet.rtp);
                }
            }
        }
        pair.run_until(end + Duration::from_secs(1));
        for (at, datagram) in pair.take_received() {
            receiver.on_rtp(at, &datagram);
        }
        (pair, publisher, receiver)
    }

    #[test]
    fn a_layer_that_fits_the_link_plays_without_freezes() {
        let (pair, publisher, receiver) = play(11, 1_000_000, 1, 10);
        let report = receiver.video(publisher.ssrc(1)).unwrap().report();
        let audio = receiver.audio_delivered_ratio(publisher.audio_ssrc(), publisher.audio_sent());
        let link = pair.forward();
        let epoch = pair.epoch();
        let span = pair.now() - epoch;
        let p95 = link.queue_delay_percentile(0.95, Duration::ZERO, span);
        let above = link.share_above_capacity(Duration::ZERO, span, 100 * MS);
        println!(
            "{report:?}; audio {audio}; p95 queue {p95:?}; above capacity {above}; {:?}; {:?}",
            pair.datagram_stats(),
            pair.server_sample()
        );
        assert_eq!(report.frames_rendered, 300);
        assert_eq!(report.freeze_count, 0);
        assert_eq!(audio, 1.0);
        assert!(p95.is_some_and(|d| d < 20 * MS), "{p95:?}");
        assert!(above <= 0.05, "{above}");
    }

    #[test]
    fn the_same_seed_plays_the_same_story() {
        let story = |seed| {
            let (pair, publisher, receiver) = play(seed, 1_000_000, 2, 3);
            let report = receiver.video(publisher.ssrc(2)).unwrap().report();
            (
                (
                    report.packets,
                    report.frames_rendered,
                    report.frames_dropped,
                ),
                pair.datagram_stats(),
                pair.forward_stats(),
                pair.forward().records().to_vec(),
            )
        };
        assert_eq!(story(13), story(13));
    }

    #[test]
    fn a_layer_above_the_link_freezes_and_the_sender_sees_it() {
        let (pair, publisher, receiver) = play(12, 1_000_000, 2, 10);
        let report = receiver.video(publisher.ssrc(2)).unwrap().report();
        let sample = pair.server_sample();
        let stats = pair.datagram_stats();
        println!(
            "{report:?}; {stats:?}; {sample:?}; {:?}",
            pair.forward_stats()
        );
        // Nothing asks for a keyframe here: after the first loss the picture stays frozen (too
        // early for the freeze rule, which needs five intervals, to call it one).
        assert!(report.frames_rendered < 30, "{report:?}");
        assert!(report.frames_dropped > 100, "{report:?}");
        assert!(
            stats.dropped_oldest > 0 || sample.lost_packets > 0,
            "{stats:?} {sample:?}"
        );
    }
}
