//! A subscriber's WebRTC leg in virtual time: the gateway's bridge sending RTP with
//! transport-wide sequence numbers over a simulated [`Link`], and a browser answering with
//! transport-wide congestion control feedback (TWCC) over a reverse one, which feeds the
//! gateway's [`WebRtcEstimator`].
//!
//! ```text
//!  bridge: send_rtp, send_padding ──▶ forward link (narrow) ──▶ browser: records arrivals
//!  bridge: WebRtcEstimator::on_feedback ◀── reverse link ◀── TransportLayerCc every 50 ms
//! ```
//!
//! # Sender (the gateway's bridge)
//!
//! [`WebRtcLeg::send_rtp`] takes an RTP packet as the SFU core forwarded it to this subscriber
//! (its SSRC, sequence number and timestamp already the subscriber's) and does what the bridge
//! does with it: it writes the transport-wide sequence number into the packet as a header
//! extension (draft-holmer-rmcat-transport-wide-cc-extensions-01: one 16-bit counter per
//! transport, across every SSRC, wrapping; id [`TWCC_EXTENSION_ID`], one-byte form; payload
//! and RTP padding kept byte for byte), records the departure with
//! [`WebRtcEstimator::on_sent`], and offers the packet to the forward link. The estimator is
//! given the SRTP packet's length (RTP + [`SRTP_TAG_BYTES`]), as the bridge gives it the
//! protected length; the link carries the RTP length plus
//! [`WebRtcLegConfig::overhead_bytes`] (38 by default: IPv4, UDP and the SRTP tag). Nothing is
//! encrypted: only the sizes are SRTP's.
//!
//! [`WebRtcLeg::send_padding`] is a probe's padding: packets on the leg's RTX stream
//! ([`PADDING_SSRC`], payload type [`RTX_PAYLOAD_TYPE`]) of at most [`MAX_PADDING_PACKET`] bytes,
//! each with its own transport-wide sequence number and fed to the estimator as padding
//! (`WebRtcEstimator::on_padding_sent`). They stand for the bridge's padding-only RTX packets
//! (at most 255 bytes of padding after a 20-byte header and extension, RFC 3550's padding
//! length being one octet): the browser reports them in its feedback and drops them, so they
//! are never returned by [`WebRtcLeg::take_received`].
//!
//! # Receiver (the browser)
//!
//! Every arrival goes through `rtc`'s own TWCC receive side, [`TwccReceiverInterceptor`], a
//! sans-IO interceptor driven directly (no chain): it reads the transport-wide sequence number
//! from the header extension, keeps the arrival times, and every
//! [`WebRtcLegConfig::feedback_interval`] (from the first arrival on) builds a
//! [`TransportLayerCc`] covering the packets since its last one — received and not received, a
//! reference time in 64 ms units and receive deltas in 250 µs units. Each SSRC is bound to the
//! interceptor with the transport-cc extension when its first packet arrives, as the negotiated
//! SDP would have it. The feedback is marshalled, crosses the reverse link (its RTCP length plus
//! the overhead and SRTCP's 4-byte index), is parsed again on arrival and given to
//! [`WebRtcEstimator::on_feedback`]: the estimator reads exactly the bytes a browser would send.
//!
//! # What it is not
//!
//! No ICE, DTLS or SRTP handshake (the leg is connected from its epoch), no encryption, no
//! sender or receiver reports, no REMB. The browser's NACKs and the bridge's RTX answers are not
//! modelled: a lost packet stays lost (and is reported as such in the feedback). Keyframe
//! requests stay with the caller (the room watches the sequence numbers it is given). There is
//! no pacer: packets leave when the caller sends them, as the bridge sends them today.
//!
//! # Drive contract
//!
//! Nothing happens between calls. [`WebRtcLeg::run_until`] processes, in time order, every
//! arrival at the browser, every feedback timer and every arrival of feedback at the bridge up
//! to `t`, then leaves the clock at `t`. [`WebRtcLeg::send_rtp`] and [`WebRtcLeg::send_padding`]
//! take their `now`, run the leg up to it first, and send at it (a `now` in the past is taken as
//! the leg's clock). [`WebRtcLeg::poll_timeout`] says when the next thing is due. What arrived is
//! taken with the `take_*` methods, which hand out everything since their last call.
//!
//! ```
//! use std::time::Duration;
//! use strait_tests::sim::{WebRtcLeg, WebRtcLegConfig};
//!
//! let mut leg = WebRtcLeg::new(7, WebRtcLegConfig::new(2_000_000, Duration::from_millis(40)))?;
//! let start = leg.now();
//! for n in 0..100u16 {
//!     // A 1000-byte RTP packet every 8 ms: 1 Mbit/s.
//!     let mut rtp = vec![0x80, 96];
//!     rtp.extend_from_slice(&n.to_be_bytes());
//!     rtp.extend_from_slice(&(u32::from(n) * 720).to_be_bytes());
//!     rtp.extend_from_slice(&0x1234_5678u32.to_be_bytes());
//!     rtp.resize(1000, 0);
//!     leg.send_rtp(start + Duration::from_millis(8 * u64::from(n)), &rtp)?;
//! }
//! leg.run_for(Duration::from_millis(500));
//! assert_eq!(leg.take_received().len(), 100);
//! let estimate = leg.estimate().expect("feedback came");
//! println!("{estimate:?}");
//! # Ok::<(), strait_tests::sim::WebRtcLegError>(())
//! ```
//!
//! # Determinism
//!
//! The links' random loss is seeded from the leg's seed and nothing reads the wall clock after
//! the epoch. The interceptor picks a random SSRC for the feedback's sender from the thread's
//! RNG; the leg overwrites it with [`FEEDBACK_SSRC`] before marshalling, so the same seed gives
//! the same feedback, byte for byte, and the same estimates.

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rtc::interceptor::{
    AttributedPacket, Interceptor, Packet as InterceptorPacket, RTPHeaderExtension, StreamInfo,
    TaggedPacket, TwccReceiverBuilder, TwccReceiverInterceptor,
};
use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
    PacketStatusChunk, SymbolTypeTcc, TransportLayerCc,
};
use rtc::rtp::extension::transport_cc_extension::TransportCcExtension;
use rtc::sansio::Protocol;
use rtc::shared::TransportContext;
use rtc::shared::marshal::{Marshal, Unmarshal};
use strait_media::bwe::Estimate;
use strait_media::webrtc::WebRtcEstimator;

use super::link::{Fate, Link, LinkConfig, LinkStats, RateTrace};

/// The one-byte header extension id of the transport-wide sequence number: the id Chrome
/// offers for `transport-wide-cc-extensions-01`.
pub const TWCC_EXTENSION_ID: u8 = 3;

/// The URI the extension is negotiated with (what the interceptor looks for in a stream's
/// extensions).
const TWCC_URI: &str = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// SRTP's authentication tag on every protected RTP packet: 10 bytes with
/// `AES_CM_128_HMAC_SHA1_80` (AES-GCM's would be 16).
pub const SRTP_TAG_BYTES: usize = 10;

/// SRTCP adds its 4-byte index (E flag included) to the tag on every RTCP packet.
const SRTCP_INDEX_BYTES: usize = 4;

/// The SSRC of the leg's RTX stream, which carries the probes' padding.
pub const PADDING_SSRC: u32 = 0x5254_5850;

/// The payload type of the RTX stream.
pub const RTX_PAYLOAD_TYPE: u8 = 97;

/// The browser's own SSRC, the sender of its feedback.
pub const FEEDBACK_SSRC: u32 = 0x4252_5753;

/// The largest padding packet, RTP bytes (header included): the bridge's padding-only packets,
/// a 12-byte header, the 8-byte extension block and at most 255 bytes of padding.
pub const MAX_PADDING_PACKET: usize = 275;

/// The smallest padding packet: the RTP header (12), the transport-wide sequence number's
/// extension block (8) and RTX's original sequence number (2).
const MIN_PADDING_PACKET: usize = 22;

/// A [`WebRtcLeg`]'s configuration. Defaults: a 1 Mbit/s forward link and a 100 Mbit/s reverse
/// link, 20 ms each way (40 ms RTT), 100 ms of drop-tail queue, feedback every 50 ms and 38
/// bytes of IP and UDP headers and SRTP tag per packet.
#[derive(Debug, Clone, PartialEq)]
pub struct WebRtcLegConfig {
    /// Bridge → browser: the subscriber's narrow downlink.
    pub forward: LinkConfig,
    /// Browser → bridge: the feedback.
    pub reverse: LinkConfig,
    /// How often the browser sends feedback. Chromium spends about 5 % of the received rate on
    /// it, every 50 to 250 ms, which is its 50 ms floor at video rates: 50 ms by default. At
    /// least 1 ms (a zero interval would never let the clock move).
    pub feedback_interval: Duration,
    /// Bytes each packet takes on the wire beyond its RTP (or RTCP) length: IPv4 (20) + UDP (8)
    /// + the SRTP tag ([`SRTP_TAG_BYTES`], 10) = 38 by default. An IPv6 path would add 20.
    pub overhead_bytes: usize,
}

impl Default for WebRtcLegConfig {
    fn default() -> Self {
        Self::new(1_000_000, Duration::from_millis(40))
    }
}

impl WebRtcLegConfig {
    /// A constant `rate_bps` downlink with its default 100 ms queue, a 100 Mbit/s uplink, `rtt`
    /// split evenly between the two directions, and the other defaults (as
    /// [`QuicPairConfig::new`](super::QuicPairConfig::new), so that both legs can be compared on
    /// the same path).
    pub fn new(rate_bps: u64, rtt: Duration) -> Self {
        Self {
            forward: LinkConfig::constant(rate_bps).delay(rtt / 2),
            reverse: LinkConfig::constant(100_000_000).delay(rtt / 2),
            feedback_interval: Duration::from_millis(50),
            overhead_bytes: IPV4_UDP_BYTES + SRTP_TAG_BYTES,
        }
    }
}

/// IPv4 and UDP headers.
const IPV4_UDP_BYTES: usize = 28;

/// Why a [`WebRtcLeg`] could not be built or could not send a packet.
#[derive(Debug)]
#[non_exhaustive]
pub enum WebRtcLegError {
    /// The configuration is unusable (says why).
    Config(String),
    /// What [`WebRtcLeg::send_rtp`] was given is not an RTP packet `rtc` can read, or its
    /// header could not take the transport-wide sequence number (a one-byte extension block
    /// already holding ids up to 14, say).
    Rtp(rtc::shared::error::Error),
}

impl fmt::Display for WebRtcLegError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(why) => write!(f, "unusable configuration: {why}"),
            Self::Rtp(e) => write!(f, "unusable rtp packet: {e}"),
        }
    }
}

impl std::error::Error for WebRtcLegError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Config(_) => None,
            Self::Rtp(e) => Some(e),
        }
    }
}

/// A leg's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebRtcLegStats {
    /// Media packets sent (each with a transport-wide sequence number).
    pub media_sent: u64,
    /// Their RTP bytes, the extension included.
    pub media_bytes: u64,
    /// Padding packets sent.
    pub padding_sent: u64,
    /// Their RTP bytes.
    pub padding_bytes: u64,
    /// Media packets that reached the browser.
    pub media_received: u64,
    /// Padding packets that reached the browser (reported, then dropped).
    pub padding_received: u64,
    /// Packets that reached the browser and were not RTP or that the interceptor refused, and
    /// feedback the browser could not marshal (none is expected: a count for a test to check).
    pub unreadable: u64,
    /// Feedback packets the browser sent.
    pub feedback_sent: u64,
    /// Their RTCP bytes.
    pub feedback_bytes: u64,
    /// Feedback packets that reached the bridge.
    pub feedback_received: u64,
    /// Feedback that reached the bridge and could not be parsed as TWCC.
    pub feedback_unreadable: u64,
    /// Packet statuses "received" in the feedback that reached the bridge.
    pub reported_received: u64,
    /// Packet statuses "not received" in the feedback that reached the bridge.
    pub reported_lost: u64,
}

/// The browser's side: `rtc`'s TWCC receive interceptor and the SSRCs bound to it.
struct Browser {
    twcc: TwccReceiverInterceptor,
    /// SSRCs already bound with the transport-cc extension.
    bound: BTreeSet<u32>,
    /// When the interceptor wants its next feedback timer.
    feedback_due: Option<Instant>,
}

impl fmt::Debug for Browser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Browser")
            .field("bound", &self.bound)
            .field("feedback_due", &self.feedback_due)
            .finish_non_exhaustive()
    }
}

/// A subscriber's WebRTC leg: the bridge's sender, two [`Link`]s and a browser's TWCC
/// feedback, in virtual time (see the module docs).
///
/// Method classes: getters (`now`, `epoch`, `elapsed`, `config`, `estimate`, `estimator`,
/// `stats`, `forward`, `reverse`, `forward_stats`, `reverse_stats`, `poll_timeout`), mutators
/// of the path (`set_forward_rate`, `set_forward_loss`), senders that run the leg up to their
/// `now` first (`send_rtp`, `send_padding`), the driver (`run_until`, `run_for`) and takers of
/// what arrived since their last call (`take_received`, `take_estimates`, `take_feedback`).
#[derive(Debug)]
pub struct WebRtcLeg {
    config: WebRtcLegConfig,
    epoch: Instant,
    now: Instant,
    forward: Link<Vec<u8>>,
    reverse: Link<Vec<u8>>,
    estimator: WebRtcEstimator,
    /// The next transport-wide sequence number.
    twcc_seq: u16,
    /// The RTX stream's next sequence number.
    rtx_seq: u16,
    browser: Browser,
    received: Vec<(Instant, Vec<u8>)>,
    estimates: Vec<(Instant, Estimate)>,
    feedback: Vec<(Instant, TransportLayerCc)>,
    stats: WebRtcLegStats,
}

impl WebRtcLeg {
    /// A leg whose virtual clock starts at the current instant: the only reading of the wall
    /// clock, and nothing depends on its value.
    pub fn new(seed: u64, config: WebRtcLegConfig) -> Result<Self, WebRtcLegError> {
        Self::with_epoch(Instant::now(), seed, config)
    }

    /// A leg whose virtual clock starts at `epoch` (for a room that shares one base between
    /// several simulated parts, a QUIC leg's epoch say).
    pub fn with_epoch(
        epoch: Instant,
        seed: u64,
        config: WebRtcLegConfig,
    ) -> Result<Self, WebRtcLegError> {
        if config.feedback_interval < Duration::from_millis(1) {
            return Err(WebRtcLegError::Config(format!(
                "feedback interval {:?} is below 1 ms",
                config.feedback_interval
            )));
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let forward_seed: u64 = rng.random();
        let reverse_seed: u64 = rng.random();
        let twcc = TwccReceiverBuilder::new()
            .with_interval(config.feedback_interval)
            .build();
        Ok(Self {
            forward: Link::new(config.forward.clone(), epoch, forward_seed),
            reverse: Link::new(config.reverse.clone(), epoch, reverse_seed),
            config,
            epoch,
            now: epoch,
            estimator: WebRtcEstimator::new(),
            twcc_seq: 0,
            rtx_seq: 0,
            browser: Browser {
                twcc,
                bound: BTreeSet::new(),
                feedback_due: None,
            },
            received: Vec::new(),
            estimates: Vec::new(),
            feedback: Vec::new(),
            stats: WebRtcLegStats::default(),
        })
    }

    /// The virtual clock.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The instant the virtual clock started from (the links' traces count from it).
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Virtual time since the epoch.
    pub fn elapsed(&self) -> Duration {
        self.now - self.epoch
    }

    /// The configuration.
    pub fn config(&self) -> &WebRtcLegConfig {
        &self.config
    }

    /// The bridge's latest estimate of the leg (`None` until feedback has come).
    pub fn estimate(&self) -> Option<Estimate> {
        self.estimator.estimate()
    }

    /// The bridge's estimator.
    pub fn estimator(&self) -> &WebRtcEstimator {
        &self.estimator
    }

    /// The leg's counters.
    pub fn stats(&self) -> WebRtcLegStats {
        self.stats
    }

    /// The bridge → browser link.
    pub fn forward(&self) -> &Link<Vec<u8>> {
        &self.forward
    }

    /// The browser → bridge link.
    pub fn reverse(&self) -> &Link<Vec<u8>> {
        &self.reverse
    }

    /// The forward link's counters.
    pub fn forward_stats(&self) -> LinkStats {
        self.forward.stats()
    }

    /// The reverse link's counters.
    pub fn reverse_stats(&self) -> LinkStats {
        self.reverse.stats()
    }

    /// Replaces the forward link's rate trace (still counted from the epoch).
    pub fn set_forward_rate(&mut self, rate: RateTrace) {
        self.forward.set_rate(rate);
    }

    /// Replaces the forward link's random loss probability, from now on.
    pub fn set_forward_loss(&mut self, loss: f64) {
        self.forward.set_loss(loss);
    }

    /// When the next thing is due: an arrival on either link or the browser's feedback timer
    /// (which runs from the first arrival on).
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.forward.poll_timeout(),
            self.reverse.poll_timeout(),
            self.browser.feedback_due,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Sends an RTP packet to the browser at `now` (after running the leg up to it), stamped
    /// with the next transport-wide sequence number; returns what the forward link did with it.
    /// A packet `rtc` cannot read is refused before it takes a sequence number.
    pub fn send_rtp(&mut self, now: Instant, rtp: &[u8]) -> Result<Fate, WebRtcLegError> {
        self.run_until(now);
        let now = self.now;
        let mut rest = rtp;
        let mut header = rtc::rtp::Header::unmarshal(&mut rest).map_err(WebRtcLegError::Rtp)?;
        let seq = self.twcc_seq;
        write_twcc(&mut header, seq).map_err(WebRtcLegError::Rtp)?;
        let mut packet = header.marshal().map_err(WebRtcLegError::Rtp)?.to_vec();
        // The payload and any RTP padding as the core forwarded them.
        packet.extend_from_slice(rest);
        self.twcc_seq = seq.wrapping_add(1);
        self.estimator.on_sent(
            seq,
            header.ssrc,
            header.sequence_number,
            packet.len() + SRTP_TAG_BYTES,
            now,
        );
        self.stats.media_sent += 1;
        self.stats.media_bytes += packet.len() as u64;
        let wire = packet.len() + self.config.overhead_bytes;
        Ok(self.forward.send(now, wire, packet))
    }

    /// Sends `bytes` of a probe's padding at `now` (after running the leg up to it): RTX
    /// packets of at most [`MAX_PADDING_PACKET`] RTP bytes (a last one too small for the
    /// headers is made 22 bytes), each with its own transport-wide sequence number. Returns
    /// the RTP bytes sent (0 for 0).
    pub fn send_padding(&mut self, now: Instant, bytes: usize) -> usize {
        self.run_until(now);
        let now = self.now;
        let mut left = bytes;
        let mut sent = 0;
        while left > 0 {
            let len = left.clamp(MIN_PADDING_PACKET, MAX_PADDING_PACKET);
            left = left.saturating_sub(len);
            let seq = self.twcc_seq;
            self.twcc_seq = seq.wrapping_add(1);
            let rtx_seq = self.rtx_seq;
            self.rtx_seq = rtx_seq.wrapping_add(1);
            let packet = padding_packet(len, rtx_seq, seq);
            self.estimator
                .on_padding_sent(seq, PADDING_SSRC, rtx_seq, len + SRTP_TAG_BYTES, now);
            self.stats.padding_sent += 1;
            self.stats.padding_bytes += len as u64;
            sent += len;
            self.forward
                .send(now, len + self.config.overhead_bytes, packet);
        }
        sent
    }

    /// Runs the leg up to `until`: arrivals at the browser, its feedback timer and arrivals of
    /// feedback at the bridge, in time order; the clock is then `until` (or stays where it is
    /// if `until` is earlier).
    pub fn run_until(&mut self, until: Instant) {
        while let Some(next) = self.poll_timeout().filter(|&t| t <= until) {
            self.now = self.now.max(next);
            self.drive_now();
        }
        self.now = self.now.max(until);
    }

    /// `run_until(now + duration)`.
    pub fn run_for(&mut self, duration: Duration) {
        self.run_until(self.now + duration);
    }

    /// Media RTP packets that reached the browser since the last call, with their arrival
    /// times, in order, as they arrived (the transport-wide extension included; padding
    /// excluded). They grow until taken.
    pub fn take_received(&mut self) -> Vec<(Instant, Vec<u8>)> {
        std::mem::take(&mut self.received)
    }

    /// What [`WebRtcEstimator::on_feedback`] returned for each feedback that reached the bridge
    /// since the last call (one per feedback once there is an estimate; an unchanged one is
    /// repeated), with the feedback's arrival time. They grow until taken.
    pub fn take_estimates(&mut self) -> Vec<(Instant, Estimate)> {
        std::mem::take(&mut self.estimates)
    }

    /// The feedback that reached the bridge since the last call, as parsed there, with its
    /// arrival time. It grows until taken.
    pub fn take_feedback(&mut self) -> Vec<(Instant, TransportLayerCc)> {
        std::mem::take(&mut self.feedback)
    }

    /// Everything due at the current instant: arrivals at the browser first (a packet arriving
    /// with the timer is in its feedback), then the timer, then feedback reaching the bridge.
    fn drive_now(&mut self) {
        let now = self.now;
        while let Some((at, packet)) = self.forward.poll_delivery(now) {
            self.on_arrival(at, packet);
        }
        if self.browser.feedback_due.is_some_and(|due| due <= now) {
            self.send_feedback(now);
        }
        while let Some((at, packet)) = self.reverse.poll_delivery(now) {
            self.on_feedback(at, &packet);
        }
    }

    /// An RTP packet reached the browser at `at`.
    fn on_arrival(&mut self, at: Instant, packet: Vec<u8>) {
        let mut rest = packet.as_slice();
        let Ok(header) = rtc::rtp::Header::unmarshal(&mut rest) else {
            self.stats.unreadable += 1;
            return;
        };
        let ssrc = header.ssrc;
        if self.browser.bound.insert(ssrc) {
            self.browser.twcc.bind_remote_stream(&StreamInfo {
                ssrc,
                rtp_header_extensions: vec![RTPHeaderExtension {
                    uri: TWCC_URI.to_owned(),
                    id: u16::from(TWCC_EXTENSION_ID),
                }],
                ..Default::default()
            });
        }
        let rtp = rtc::rtp::Packet {
            header,
            payload: Bytes::copy_from_slice(rest),
        };
        let read = self.browser.twcc.handle_read(TaggedPacket {
            now: at,
            transport: TransportContext::default(),
            message: AttributedPacket::new(InterceptorPacket::Rtp(rtp)),
        });
        // The interceptor hands every packet back for the next one in a chain: there is none.
        while self.browser.twcc.poll_read().is_some() {}
        self.browser.feedback_due = self.browser.twcc.poll_timeout();
        if read.is_err() {
            self.stats.unreadable += 1;
            return;
        }
        if ssrc == PADDING_SSRC {
            self.stats.padding_received += 1;
        } else {
            self.stats.media_received += 1;
            self.received.push((at, packet));
        }
    }

    /// The browser's feedback timer fired at `now`: whatever feedback the interceptor built
    /// goes on the reverse link.
    fn send_feedback(&mut self, now: Instant) {
        // The TWCC interceptor's timeout never fails; its feedback is what matters.
        let _ = self.browser.twcc.handle_timeout(now);
        while let Some(out) = self.browser.twcc.poll_write() {
            let InterceptorPacket::Rtcp(packets) = out.message.packet else {
                continue;
            };
            for packet in packets {
                let Some(feedback) = packet.as_any().downcast_ref::<TransportLayerCc>() else {
                    continue;
                };
                let mut feedback = feedback.clone();
                feedback.sender_ssrc = FEEDBACK_SSRC;
                let Ok(bytes) = feedback.marshal() else {
                    self.stats.unreadable += 1;
                    continue;
                };
                self.stats.feedback_sent += 1;
                self.stats.feedback_bytes += bytes.len() as u64;
                let wire = bytes.len() + self.config.overhead_bytes + SRTCP_INDEX_BYTES;
                self.reverse.send(now, wire, bytes.to_vec());
            }
        }
        self.browser.feedback_due = self.browser.twcc.poll_timeout();
    }

    /// Feedback reached the bridge at `at`.
    fn on_feedback(&mut self, at: Instant, bytes: &[u8]) {
        let Ok(packets) = rtc::rtcp::packet::unmarshal(&mut &bytes[..]) else {
            self.stats.feedback_unreadable += 1;
            return;
        };
        for packet in packets {
            let Some(feedback) = packet.as_any().downcast_ref::<TransportLayerCc>() else {
                self.stats.feedback_unreadable += 1;
                continue;
            };
            self.stats.feedback_received += 1;
            let (received, lost) = statuses(feedback);
            self.stats.reported_received += received;
            self.stats.reported_lost += lost;
            if let Some(estimate) = self.estimator.on_feedback(feedback, at) {
                self.estimates.push((at, estimate));
            }
            self.feedback.push((at, feedback.clone()));
        }
    }
}

/// Writes the transport-wide sequence number `seq` into `header`'s extension block.
fn write_twcc(header: &mut rtc::rtp::Header, seq: u16) -> Result<(), rtc::shared::error::Error> {
    let value = TransportCcExtension {
        transport_sequence: seq,
    }
    .marshal()?;
    header.set_extension(TWCC_EXTENSION_ID, value.freeze())
}

/// A padding packet of `len` RTP bytes (at least [`MIN_PADDING_PACKET`]) on the RTX stream:
/// the header, the transport-wide sequence number, then a filler standing for the resent
/// packet (its original sequence number first, as RTX has it).
fn padding_packet(len: usize, rtx_seq: u16, twcc_seq: u16) -> Vec<u8> {
    let mut packet = Vec::with_capacity(len.max(MIN_PADDING_PACKET));
    // V=2, X=1, no CSRC; no marker.
    packet.push(0x90);
    packet.push(RTX_PAYLOAD_TYPE);
    packet.extend_from_slice(&rtx_seq.to_be_bytes());
    packet.extend_from_slice(&0u32.to_be_bytes());
    packet.extend_from_slice(&PADDING_SSRC.to_be_bytes());
    // RFC 8285's one-byte form: 0xBEDE, one 32-bit word: the element (id, length − 1 = 1, two
    // bytes) and one byte of padding.
    packet.extend_from_slice(&[0xbe, 0xde, 0x00, 0x01]);
    packet.push(TWCC_EXTENSION_ID << 4 | 1);
    packet.extend_from_slice(&twcc_seq.to_be_bytes());
    packet.push(0);
    packet.resize(len.max(MIN_PADDING_PACKET), 0);
    packet
}

/// The statuses of a feedback's packets: (received, not received), counted from its chunks
/// up to its packet status count.
fn statuses(feedback: &TransportLayerCc) -> (u64, u64) {
    let mut left = usize::from(feedback.packet_status_count);
    let (mut received, mut lost) = (0u64, 0u64);
    let mut count = |symbol: SymbolTypeTcc, n: usize| match symbol {
        SymbolTypeTcc::PacketNotReceived => lost += n as u64,
        SymbolTypeTcc::PacketReceivedSmallDelta
        | SymbolTypeTcc::PacketReceivedLargeDelta
        | SymbolTypeTcc::PacketReceivedWithoutDelta => received += n as u64,
    };
    for chunk in &feedback.packet_chunks {
        match chunk {
            PacketStatusChunk::RunLengthChunk(run) => {
                let n = usize::from(run.run_length).min(left);
                count(run.packet_status_symbol, n);
                left -= n;
            }
            PacketStatusChunk::StatusVectorChunk(vector) => {
                for &symbol in vector.symbol_list.iter().take(left) {
                    count(symbol, 1);
                    left -= 1;
                }
            }
        }
    }
    (received, lost)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rtc::interceptor::convert_twcc;
    use strait_media::bwe::LinkState;

    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const SSRC: u32 = 0x1111_2222;

    /// A bare RTP packet of `len` bytes (VP8's payload type, no extension).
    fn rtp(seq: u16, len: usize) -> Vec<u8> {
        let mut packet = vec![0x80, 96];
        packet.extend_from_slice(&seq.to_be_bytes());
        packet.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
        packet.extend_from_slice(&SSRC.to_be_bytes());
        packet.resize(len, 0x5a);
        packet
    }

    /// Sends `bps` of `size`-byte RTP packets, evenly spaced, for `seconds` from the leg's
    /// clock; returns how many.
    fn offer(leg: &mut WebRtcLeg, bps: u64, size: usize, seconds: u64) -> u64 {
        let start = leg.now();
        let count = bps * seconds / 8 / size as u64;
        for n in 0..count {
            let at = start + Duration::from_nanos(n * seconds * 1_000_000_000 / count);
            leg.send_rtp(at, &rtp(n as u16, size)).expect("rtp");
        }
        leg.run_until(start + Duration::from_secs(seconds));
        count
    }

    #[test]
    fn a_rate_under_the_link_arrives_whole_and_is_estimated_clear() {
        let mut leg = WebRtcLeg::new(1, WebRtcLegConfig::new(4_000_000, 40 * MS)).expect("leg");
        let count = offer(&mut leg, 1_000_000, 1000, 5);
        let estimate = leg.estimate().expect("an estimate");
        let estimates = leg.take_estimates();
        let stats = leg.stats();
        println!(
            "{estimate:?} after {} estimates; {stats:?}; {:?}",
            estimates.len(),
            leg.forward_stats()
        );
        assert_eq!(estimate.state, LinkState::Clear, "{estimate:?}");
        // 1000 bytes of RTP, 8 of extension and 10 of SRTP tag per packet: 1.018 Mbit/s.
        let acked = estimate.acked_bps as f64;
        assert!((acked / 1_000_000.0 - 1.0).abs() <= 0.15, "{estimate:?}");
        assert!(
            estimates.iter().all(|(_, e)| e.state == LinkState::Clear),
            "never anything but clear on an idle link: {estimates:?}"
        );
        // Feedback every 50 ms for 5 s.
        assert!((95..=101).contains(&stats.feedback_received), "{stats:?}");

        leg.run_for(Duration::from_secs(1));
        let received = leg.take_received();
        assert_eq!(count, 625);
        assert_eq!(received.len() as u64, count, "every packet arrives");
        let seqs: Vec<u16> = received
            .iter()
            .map(|(_, p)| u16::from_be_bytes([p[2], p[3]]))
            .collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "in order");
        assert_eq!(stats.reported_lost, 0);
        assert_eq!(leg.stats().reported_received, count);
        assert_eq!(leg.forward_stats().dropped_packets, 0);
        // What arrived is what was sent, with the transport-wide sequence number in its header.
        let (_, first) = &received[0];
        let mut rest = first.as_slice();
        let header = rtc::rtp::Header::unmarshal(&mut rest).expect("rtp");
        assert_eq!(header.ssrc, SSRC);
        assert_eq!(
            header.get_extension(TWCC_EXTENSION_ID).map(|b| b.to_vec()),
            Some(vec![0, 0])
        );
        assert_eq!(rest, &rtp(0, 1000)[12..]);
    }

    #[test]
    fn twice_the_link_is_congestion_within_a_second() {
        let mut leg = WebRtcLeg::new(2, WebRtcLegConfig::new(1_000_000, 40 * MS)).expect("leg");
        let start = leg.now();
        offer(&mut leg, 2_000_000, 1000, 3);
        let estimates = leg.take_estimates();
        for (at, e) in estimates.iter().step_by(5) {
            println!(
                "{:>5} ms {:?} available {} acked {} proven {} queue {:?}",
                (*at - start).as_millis(),
                e.state,
                e.available_bps,
                e.acked_bps,
                e.proven_bps,
                e.queue_delay
            );
        }
        let first_alarm = estimates
            .iter()
            .find(|(_, e)| e.state != LinkState::Clear)
            .map(|(at, e)| (*at - start, *e));
        let first_congested = estimates
            .iter()
            .find(|(_, e)| e.state == LinkState::Congested)
            .map(|(at, _)| *at - start);
        let last = leg.estimate().expect("an estimate");
        let link = leg.forward_stats();
        println!(
            "first alarm {first_alarm:?}; first congested {first_congested:?}; last {last:?}; \
             {link:?}; {:?}",
            leg.stats()
        );
        assert!(link.dropped_packets > 0, "the queue overflowed: {link:?}");
        let (at, _) = first_alarm.expect("the estimate left clear");
        assert!(at <= Duration::from_secs(1), "{at:?}");
        assert!(
            first_congested.is_some_and(|at| at <= Duration::from_secs(1)),
            "{first_congested:?}"
        );
        assert_ne!(last.state, LinkState::Clear, "{last:?}");
        assert!(last.available_bps < 1_200_000, "{last:?}");
        // Once congestion is seen, the estimate stays below the link: no climb while the queue
        // is full.
        let after = first_congested.unwrap_or_default();
        let above = estimates
            .iter()
            .filter(|(t, e)| *t - start > after && e.available_bps >= 1_200_000)
            .count();
        assert_eq!(above, 0, "estimates above 1.2 Mbit/s after congestion");
    }

    #[test]
    fn feedback_reports_losses_and_padding_but_padding_is_not_received() {
        let mut leg = WebRtcLeg::new(3, WebRtcLegConfig::new(4_000_000, 40 * MS)).expect("leg");
        let start = leg.now();
        for n in 0..20u16 {
            let at = start + 10 * MS * u32::from(n);
            // The sixth packet (transport-wide 5) is lost after the queue.
            leg.run_until(at);
            leg.set_forward_loss(if n == 5 { 1.0 } else { 0.0 });
            assert_eq!(
                leg.send_rtp(at, &rtp(n, 600)).expect("rtp"),
                if n == 5 { Fate::Lost } else { Fate::Forwarded }
            );
        }
        leg.set_forward_loss(0.0);
        // Then 700 bytes of padding: 275 + 275 + 150 (transport-wide 20, 21, 22).
        assert_eq!(leg.send_padding(start + 200 * MS, 700), 700);
        leg.run_for(Duration::from_secs(1));

        let stats = leg.stats();
        println!("{stats:?}");
        let received = leg.take_received();
        assert_eq!(received.len(), 19);
        assert!(
            received
                .iter()
                .all(|(_, p)| u32::from_be_bytes([p[8], p[9], p[10], p[11]]) == SSRC),
            "no padding among the media"
        );
        assert_eq!((stats.padding_sent, stats.padding_bytes), (3, 700));
        assert_eq!(stats.padding_received, 3);
        assert_eq!((stats.reported_received, stats.reported_lost), (22, 1));

        // Every transport-wide number reported exactly once, the lost one as not received, the
        // arrival times those of the link to within the 250 µs of the receive deltas.
        let feedback = leg.take_feedback();
        assert_eq!(feedback.len() as u64, stats.feedback_received);
        assert!(feedback.len() >= 4, "{}", feedback.len());
        let mut reported: BTreeMap<u16, Option<Duration>> = BTreeMap::new();
        for (_, fb) in &feedback {
            assert_eq!(fb.sender_ssrc, FEEDBACK_SSRC);
            // A status vector chunk always holds 7 (or 14) symbols; past the packet status
            // count they are filler, which `convert_twcc` reads as more packets not received.
            for ack in convert_twcc(fb)
                .into_iter()
                .take(usize::from(fb.packet_status_count))
            {
                let arrival = if ack.arrived {
                    Some(ack.arrival.expect("a received packet has its time"))
                } else {
                    None
                };
                assert!(
                    reported.insert(ack.sequence_number, arrival).is_none(),
                    "{} reported twice",
                    ack.sequence_number
                );
            }
        }
        assert_eq!(
            reported.keys().copied().collect::<Vec<_>>(),
            (0..23).collect::<Vec<u16>>()
        );
        assert_eq!(
            reported[&5], None,
            "the lost packet is reported as not received"
        );
        let records = leg.forward().records();
        let origin = (
            reported[&0].expect("arrived"),
            records[0].arrival.expect("arrived"),
        );
        for (seq, arrival) in &reported {
            let record = records[usize::from(*seq)];
            match (arrival, record.arrival) {
                (Some(reported), Some(actual)) => {
                    let reported = reported.as_secs_f64() - origin.0.as_secs_f64();
                    let actual = actual.as_secs_f64() - origin.1.as_secs_f64();
                    assert!(
                        (reported - actual).abs() <= 250e-6,
                        "{seq}: reported {reported} s, arrived {actual} s"
                    );
                }
                (None, None) => assert_eq!(record.fate, Fate::Lost),
                other => panic!("{seq}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_transport_wide_number_wraps() {
        let mut leg = WebRtcLeg::new(4, WebRtcLegConfig::new(4_000_000, 40 * MS)).expect("leg");
        leg.twcc_seq = 65_530;
        let start = leg.now();
        for n in 0..20u16 {
            leg.send_rtp(start + 10 * MS * u32::from(n), &rtp(n, 500))
                .expect("rtp");
        }
        leg.run_for(Duration::from_secs(1));
        let stats = leg.stats();
        assert_eq!((stats.reported_received, stats.reported_lost), (20, 0));
        let seqs: Vec<u16> = leg
            .take_feedback()
            .iter()
            .flat_map(|(_, fb)| convert_twcc(fb))
            .map(|ack| ack.sequence_number)
            .collect();
        let expected: Vec<u16> = (0..20u16).map(|n| 65_530u16.wrapping_add(n)).collect();
        assert_eq!(seqs, expected);
        assert!(
            leg.estimate().is_some(),
            "the estimator matched the wrapped numbers"
        );
        assert_eq!(leg.twcc_seq, 14);
    }

    #[test]
    fn the_same_seed_gives_the_same_estimates() {
        let run = |seed| {
            let mut config = WebRtcLegConfig::new(1_000_000, 40 * MS);
            config.forward = config.forward.loss(0.02);
            let mut leg = WebRtcLeg::new(seed, config).expect("leg");
            let start = leg.now();
            offer(&mut leg, 800_000, 1000, 2);
            leg.send_padding(leg.now(), 20_000);
            offer(&mut leg, 1_500_000, 1000, 1);
            leg.run_for(Duration::from_millis(500));
            let estimates: Vec<(Duration, Estimate)> = leg
                .take_estimates()
                .into_iter()
                .map(|(at, e)| (at - start, e))
                .collect();
            let feedback: Vec<(Duration, TransportLayerCc)> = leg
                .take_feedback()
                .into_iter()
                .map(|(at, fb)| (at - start, fb))
                .collect();
            let arrivals: Vec<(Duration, Vec<u8>)> = leg
                .take_received()
                .into_iter()
                .map(|(at, p)| (at - start, p))
                .collect();
            (
                estimates,
                feedback,
                arrivals,
                leg.stats(),
                leg.forward().records().to_vec(),
                leg.reverse().records().to_vec(),
            )
        };
        let a = run(21);
        let b = run(21);
        assert!(!a.0.is_empty());
        assert_eq!(a.0, b.0, "the same estimates at the same times");
        assert_eq!(a.1, b.1, "the same feedback");
        assert_eq!(a.2, b.2);
        assert_eq!(a.3, b.3);
        assert_eq!(a.4, b.4);
        assert_eq!(a.5, b.5);
        assert!(a.3.reported_lost > 0, "{:?}", a.3);
        let c = run(22);
        assert_ne!(a.4, c.4, "another seed loses other packets");
    }

    /// A probe's padding reaches the browser and is reported, so what the leg has shown it
    /// carries must count it: otherwise a probe cannot lift a clear leg's estimate beyond
    /// 1.5 × the media's smoothed rate, which is all the padding is for.
    #[test]
    fn a_probes_padding_is_proven() {
        let mut leg = WebRtcLeg::new(6, WebRtcLegConfig::new(4_000_000, 40 * MS)).expect("leg");
        let start = leg.now();
        // 500 kbit/s of media throughout, 600 kbit/s of padding from 1 s to 2.5 s, in 10 ms
        // slices as the room's probes send it.
        let mut media = 0u16;
        for ms in 0..2500u32 {
            let at = start + MS * ms;
            if ms % 16 == 0 {
                // 1000 bytes every 16 ms: 500 kbit/s.
                leg.send_rtp(at, &rtp(media, 1000)).expect("rtp");
                media += 1;
            }
            if ms >= 1000 && ms % 10 == 0 {
                // 750 bytes every 10 ms: 600 kbit/s.
                leg.send_padding(at, 750);
            }
        }
        leg.run_until(start + 2500 * MS);
        let estimate = leg.estimate().expect("an estimate");
        println!("{estimate:?}; {:?}", leg.stats());
        assert_eq!(estimate.state, LinkState::Clear, "{estimate:?}");
        // The last 1.5 s delivered 1.1 Mbit/s of RTP and more with the SRTP tags.
        assert!(estimate.proven_bps >= 1_000_000, "{estimate:?}");
    }

    #[test]
    fn a_zero_feedback_interval_is_refused() {
        let config = WebRtcLegConfig {
            feedback_interval: Duration::ZERO,
            ..WebRtcLegConfig::default()
        };
        assert!(matches!(
            WebRtcLeg::new(0, config),
            Err(WebRtcLegError::Config(_))
        ));
    }
}
