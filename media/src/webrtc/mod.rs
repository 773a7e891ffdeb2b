//! The WebRTC bridge's endpoint: many legacy WebRTC peers on one UDP socket, sans-IO.
//!
//! Each peer is an ICE-lite `rtc` peer connection (webrtc-rs's sans-IO stack, DESIGN §5 and §11)
//! created from its offer by [`Endpoint::accept_offer`] or [`Endpoint::accept_offer_with_tracks`].
//! All of them share the one socket the gateway gives the endpoint: a datagram from an address
//! that has not done ICE yet is routed by the server half of its STUN USERNAME
//! (`"<server ufrag>:<client ufrag>"`, RFC 8445 §7.2.2), and later datagrams by their source
//! address. An address is routed to a peer only once a check from it passed the peer's
//! integrity check (its ICE agent answered it with success), a check replayed from another
//! address is refused before the agent sees it, and a peer keeps at most
//! [`MAX_PEER_ADDRESSES`], the least recently verified going first: a spoofed source neither
//! grows the table nor moves a peer's media (which goes where `rtc`'s selected pair says, moved
//! only by a fresh, verified, nominating check). The endpoint itself never touches the socket or the clock. `rtc` is not
//! deterministic underneath: it draws ICE credentials, DTLS, SRTP and certificate randomness from
//! its own RNG and generates a self-signed DTLS certificate per peer, dated by the wall clock.
//!
//! ICE restart (RFC 8445 §9): a new offer with new ICE credentials ([`Endpoint::renegotiate`],
//! or [`Endpoint::restart_ice`] with only the credentials, as a WHIP `PATCH` carries them) gives
//! the peer new local credentials too; the peer is then routed by its new ufrag, and by any new
//! address its checks come from, while the old addresses keep routing to it.
//!
//! ## What `rtc` does and what the endpoint does
//!
//! `rtc` runs ICE, DTLS, SCTP and SDP for every peer, receives publishers' SRTP (with its NACK
//! generator, receiver reports and TWCC receiver) and parses the RTCP peers send. Forwarded RTP
//! does not go through it: [`Endpoint::send_forwarded`] writes the packet for the leg into the
//! endpoint's buffer (SSRC, sequence number, timestamp, payload type, header extensions, the
//! leg's transport-wide sequence number), protects it with the peer's SRTP send keys in a context
//! of the endpoint's (module `srtp`) and queues it; all the legs of one fan-out leave together from
//! [`poll_transmit`](Endpoint::poll_transmit). The endpoint keeps what `rtc`'s interceptors kept
//! per leg: a packet cache per publisher stream ([`WebRtcConfig::nack_cache_packets`] packets,
//! each held once for all its legs) from which a NACK is answered in the leg's numbering, once
//! per request and within the leg's budget (the NACK guard: [`NackStats`]); sender reports per
//! leg; and the subscribers' feedback — PLI and FIR as [`WebRtcEvent::KeyframeRequest`],
//! transport-wide feedback and REMB as events, all counted in [`FeedbackStats`].
//!
//! What it is not: it does not forward anything between peers — it hands received RTP out as
//! [`WebRtcEvent::Rtp`] and takes RTP to send through [`Endpoint::send_rtp`]; the gateway puts the
//! SFU core ([`crate::sfu`]) in between. Renegotiation is answerer-only: a peer may send a new
//! offer on the same connection ([`Endpoint::renegotiate`]), which can bind new send tracks to
//! its new receiving sections; the endpoint never offers.
//!
//! ## How to drive it
//!
//! Its methods fall into four classes:
//!
//! - **getters**: [`stats`](Endpoint::stats), [`config`](Endpoint::config),
//!   [`peer_count`](Endpoint::peer_count), [`is_connected`](Endpoint::is_connected);
//! - **mutators**: [`accept_offer`](Endpoint::accept_offer),
//!   [`accept_offer_with_tracks`](Endpoint::accept_offer_with_tracks),
//!   [`renegotiate`](Endpoint::renegotiate), [`restart_ice`](Endpoint::restart_ice),
//!   [`remove_send_track`](Endpoint::remove_send_track),
//!   [`send_rtp`](Endpoint::send_rtp), [`request_keyframe`](Endpoint::request_keyframe),
//!   [`close`](Endpoint::close);
//! - **handlers**: [`handle_datagram`](Endpoint::handle_datagram) for every datagram read from
//!   the socket and [`handle_timeout`](Endpoint::handle_timeout);
//! - **pollers**: [`poll_transmit`](Endpoint::poll_transmit) (send each from the socket),
//!   [`poll_event`](Endpoint::poll_event) and [`poll_timeout`](Endpoint::poll_timeout).
//!
//! After every mutator or handler call, drain `poll_transmit` and `poll_event` until they return
//! `None`, then sleep until `poll_timeout` and call `handle_timeout`.

mod error;
mod estimate;
mod feedback;
mod ice;
mod nack;
mod offer;
mod send;
pub mod simulcast;
mod srtp;

/// The classifier a datagram from an unknown address goes through before any peer sees it, and
/// the codec list of the offer check: public for the fuzz targets of `media/fuzz` and their plain
/// tests in `media/tests`, not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    pub use super::offer::{Datagram, SUPPORTED_CODECS, classify};
}

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::interceptor::{Registry, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent, RTCTrackEventInit};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};
use rtc::sansio::Protocol;
use rtc::shared::marshal::Marshal;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rustc_hash::FxHashMap;
use tracing::{debug, trace};

pub use self::error::{RtcError, WebRtcError};
pub use self::estimate::{PADDING_JUDGED, WebRtcEstimator};
pub use self::feedback::DeliverKeyframeRequests;
use self::feedback::{is_feedback, register_interceptors};
pub use self::ice::{IceCredentials, IceFragment, ice_fragment_of_answer};
pub use self::nack::{BURST as NACK_BURST, DUPLICATE_WINDOW as NACK_DUPLICATE_WINDOW};
pub use self::nack::{NackCounters, NackStats};
use self::offer::{Datagram, classify, validate_offer};
use self::send::{LegFormat, LegStream, TrackCache, write_leg};
pub use self::simulcast::{RidLayer, SimulcastSection, simulcast_sections};
use self::srtp::KeyTap;
use crate::sfu::{CodecSpec, TrackKind};

/// A WebRTC peer of an [`Endpoint`], numbered from 1 in creation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "webrtc-peer-{}", self.0)
    }
}

/// Configuration of an [`Endpoint`]. `Default` gives the documented defaults and no address.
#[derive(Debug, Clone)]
pub struct WebRtcConfig {
    /// The shared UDP socket's address(es) as peers should reach them, each advertised as one
    /// host candidate. Pass the same address as `local` to
    /// [`handle_datagram`](Endpoint::handle_datagram): `rtc` pairs candidates by it. Behind
    /// 1:1 NAT put the public address here. Required (no default).
    pub local_addrs: Vec<SocketAddr>,
    /// Longest offer accepted, in bytes (default 64 KiB). Bounds the parse and what one
    /// signaling request can make the endpoint hold.
    pub max_sdp_len: usize,
    /// Most peers at once (default 1024). Each costs a peer connection (DTLS and SRTP state,
    /// interceptor buffers: tens of KiB) until it closes or times out.
    pub max_peers: usize,
    /// ICE goes `disconnected` after this long without a consent check (default 5 s).
    pub ice_disconnected_timeout: Duration,
    /// ICE fails after this long without one; the peer is then removed and
    /// [`WebRtcEvent::Disconnected`] reported (default 25 s).
    pub ice_failed_timeout: Duration,
    /// Most datagrams queued for [`poll_transmit`](Endpoint::poll_transmit) (default 4096);
    /// when full the oldest is dropped and counted, as a UDP socket would.
    pub max_queued_transmits: usize,
    /// Packets kept per publisher stream to answer NACKs with (default 512; a power of two
    /// from 1 to 32 768). A NACK for an older packet goes unanswered. The cache holds each
    /// packet once for all the legs that forward it (about 1.2 KiB of video: 512 cost ~600 KiB
    /// per forwarded video stream), and each leg remembers its numbering of as many packets
    /// (12 bytes each).
    pub nack_cache_packets: u16,
    /// How often each send stream that sent something reports it (RFC 3550 §6.4.1 sender
    /// report; default 1 s).
    pub sender_report_interval: Duration,
    /// An instant and the wall-clock time at it, for the NTP time of sender reports (receivers
    /// relate the streams of a peer by it). Default none: NTP time then counts from the first
    /// instant the endpoint saw, which keeps a peer's streams related but not to the wall clock.
    pub wall_clock: Option<(Instant, std::time::SystemTime)>,
}

impl Default for WebRtcConfig {
    fn default() -> Self {
        Self {
            local_addrs: Vec::new(),
            max_sdp_len: 64 * 1024,
            max_peers: 1024,
            ice_disconnected_timeout: Duration::from_secs(5),
            ice_failed_timeout: Duration::from_secs(25),
            max_queued_transmits: 4096,
            nack_cache_packets: 512,
            sender_report_interval: Duration::from_secs(1),
            wall_clock: None,
        }
    }
}

/// A track the bridge will send to a subscriber peer, declared before its offer is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendTrack {
    /// Audio or video; it must match a section of the offer that can receive.
    pub kind: TrackKind,
    /// The codec (the payload type is ignored: the one negotiated on the leg is used).
    pub codec: CodecSpec,
    /// The SSRC the peer will see; [`send_rtp`](Endpoint::send_rtp) names the track by it.
    pub ssrc: u32,
}

/// A datagram to send from the shared socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The local address it must leave from (one of [`WebRtcConfig::local_addrs`]).
    pub from: SocketAddr,
    /// The peer's address.
    pub to: SocketAddr,
    /// The datagram.
    pub bytes: Bytes,
}

/// What the endpoint reports, from [`Endpoint::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WebRtcEvent {
    /// ICE and DTLS completed: media can flow.
    Connected(PeerId),
    /// A publisher's stream started (reported with its first RTP packet, which follows as
    /// [`WebRtcEvent::Rtp`]).
    Track {
        /// The publisher.
        peer: PeerId,
        /// The SDP media section it arrived on, if known.
        mid: Option<String>,
        /// The simulcast layer's RID, if the peer sends simulcast.
        rid: Option<String>,
        /// The stream's SSRC.
        ssrc: u32,
        /// Audio or video.
        kind: TrackKind,
        /// The codec negotiated for it (`name` is the `a=rtpmap` encoding name).
        codec: Option<CodecSpec>,
    },
    /// An RTP packet from a publisher, decrypted; sequence number, timestamp, payload type and
    /// header extension ids are the publisher's own.
    Rtp {
        /// The publisher.
        peer: PeerId,
        /// Its SSRC.
        ssrc: u32,
        /// The whole packet (header and payload).
        packet: Bytes,
    },
    /// A subscriber's estimate changed, from its transport-wide congestion control feedback
    /// about what was forwarded to it (or its REMB when it sends no TWCC); see
    /// [`WebRtcEstimator`]. For the allocation of its layers.
    Estimate {
        /// The subscriber.
        peer: PeerId,
        /// The estimate.
        estimate: crate::bwe::Estimate,
    },
    /// A subscriber asked (PLI or FIR) for a keyframe on one of its send tracks.
    KeyframeRequest {
        /// The subscriber.
        peer: PeerId,
        /// The [`SendTrack::ssrc`] it names.
        ssrc: u32,
    },
    /// The peer is gone (ICE failed, DTLS closed, or [`Endpoint::close`]); it was removed.
    Disconnected(PeerId),
}

/// A local ICE ufrag an endpoint took or released ([`Endpoint::poll_ufrag_change`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UfragChange {
    /// Checks naming this ufrag are the endpoint's now.
    Taken(String),
    /// No longer.
    Released(String),
}

/// The server ufrag a STUN Binding request names (the first half of its USERNAME, RFC 8445
/// §7.2.2), without checking its integrity: for routing a datagram to the endpoint that holds
/// the ufrag. `None` for anything else (DTLS, SRTP, other STUN).
pub fn binding_request_ufrag(bytes: &[u8]) -> Option<&str> {
    match classify(bytes) {
        Datagram::BindingRequest { server_ufrag } => Some(server_ufrag),
        _ => None,
    }
}

/// Datagrams dropped before reaching a peer, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DroppedDatagrams {
    /// A STUN Binding request whose server ufrag belongs to no peer.
    pub unknown_ufrag: u64,
    /// A non-STUN datagram (or STUN other than a Binding request) from an address that never
    /// completed a STUN check with a peer.
    pub unknown_source: u64,
    /// A STUN check from an address new to its peer that the peer's stack did not answer with
    /// success (it failed MESSAGE-INTEGRITY), or that repeated the transaction of a check
    /// already verified from another address (a replay): the address is not routed.
    pub unverified_check: u64,
    /// A peer's stack refused the datagram with an error, or — for an RTP datagram of a
    /// connected peer — delivered no RTP packet from it (SRTP authentication or replay check
    /// failed, unknown payload type or stream). Failed SRTCP is dropped inside `rtc` unseen.
    pub rejected_by_peer: u64,
}

/// RTCP feedback from subscribers, by kind (packets, not compounds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedbackStats {
    /// Generic NACKs (RFC 4585 §6.2.1).
    pub nack: u64,
    /// Picture loss indications.
    pub pli: u64,
    /// Full intra requests.
    pub fir: u64,
    /// Transport-wide congestion control feedback.
    pub twcc: u64,
    /// Receiver-estimated maximum bitrate.
    pub remb: u64,
}

/// Counters of an [`Endpoint`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebRtcStats {
    /// Peers now.
    pub peers: usize,
    /// Datagrams handed to [`Endpoint::handle_datagram`].
    pub datagrams_in: u64,
    /// Datagrams handed out by [`Endpoint::poll_transmit`].
    pub datagrams_out: u64,
    /// Datagrams dropped on the way in, by reason.
    pub dropped: DroppedDatagrams,
    /// Datagrams dropped from a full transmit queue.
    pub transmits_dropped: u64,
    /// Offers refused by an error.
    pub offers_refused: u64,
    /// Packets subscribers asked for again, by what became of them.
    pub nacks: NackStats,
    /// Feedback from subscribers, by kind.
    pub feedback: FeedbackStats,
    /// Forwarded packets sent (originals).
    pub forwarded: u64,
    /// Forwarded packets sent again for a NACK.
    pub retransmitted: u64,
    /// Sender reports sent.
    pub sender_reports: u64,
    /// Padding-only packets sent to probe subscribers' links ([`Endpoint::send_padding`]).
    pub padding_packets: u64,
    /// Their bytes, as sent (SRTP included).
    pub padding_bytes: u64,
    /// Legs found to leave padding out of their feedback
    /// ([`WebRtcEstimator::padding_unreported`]).
    pub padding_unreported: u64,
    /// Peer source addresses routed now.
    pub addresses: usize,
}

/// What the send path of an [`Endpoint`] holds ([`Endpoint::send_memory`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendMemory {
    /// Publisher streams with a packet cache.
    pub caches: usize,
    /// Bytes of those caches: their slots and the packets they hold (a packet shared with
    /// other holders counts in full).
    pub cache_bytes: usize,
    /// Bytes of the legs' send streams: their numbering of the packets they sent and their
    /// NACK budgets.
    pub leg_bytes: usize,
}

/// A received stream of a publisher peer.
#[derive(Debug)]
struct Inbound {
    receiver: RTCRtpReceiverId,
}

/// A send track of a subscriber peer.
#[derive(Debug)]
struct Outbound {
    sender: RTCRtpSenderId,
    mime_type: String,
    clock_rate: u32,
    /// What the leg negotiated for it, found at the first send after each negotiation.
    negotiated: Option<LegFormat>,
    /// The publisher stream whose packets it forwards now (it changes at a simulcast switch).
    cache: Option<CacheKey>,
    /// What it sent.
    stream: LegStream,
}

/// A publisher stream's packet cache, as named by the caller of
/// [`Endpoint::send_forwarded`], or a leg's own for packets sent with [`Endpoint::send_rtp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum CacheKey {
    Stream(u64, u8),
    Leg(PeerId, u32),
}

/// A forwarded packet for one leg ([`Endpoint::send_forwarded`]).
#[derive(Debug, Clone, Copy)]
pub struct ForwardedRtp<'a> {
    /// The published track it belongs to, as the caller numbers them.
    pub track: u64,
    /// Its simulcast layer (0 without simulcast): each layer is a stream of its own, with its
    /// own packet cache.
    pub layer: u8,
    /// The publisher's packet as it arrived (header and payload); copied into the stream's
    /// cache the first time a leg sends it.
    pub original: &'a [u8],
    /// The leg's send track ([`SendTrack::ssrc`]), which the packet carries.
    pub ssrc: u32,
    /// The sequence number on the leg.
    pub sequence_number: u16,
    /// The timestamp on the leg.
    pub timestamp: u32,
}

struct Peer {
    pc: RTCPeerConnection,
    ufrag: String,
    /// Source addresses routed to this peer, least recently verified first (at most
    /// [`MAX_PEER_ADDRESSES`]), to unroute them when it goes.
    addrs: VecDeque<(SocketAddr, SocketAddr)>,
    /// Transactions of the last checks verified, and where they came from.
    checks: VecDeque<([u8; 12], SocketAddr)>,
    connected: bool,
    inbound: FxHashMap<u32, Inbound>,
    outbound: FxHashMap<u32, Outbound>,
    /// The peer connection's crypto provider, which saw its SRTP keys.
    tap: Arc<KeyTap>,
    /// The SRTP context of forwarded RTP, made at the first send after DTLS completed.
    srtp: Option<srtp::SendProtection>,
    /// Whether making it failed (not tried again).
    srtp_failed: bool,
    /// Where its media goes: `rtc`'s selected candidate pair (local, remote).
    path: Option<(SocketAddr, SocketAddr)>,
    /// The next transport-wide sequence number (one counter for all its send streams).
    twcc_seq: u16,
    /// Its estimate, from the TWCC feedback about what was forwarded to it (or its REMB).
    estimator: WebRtcEstimator,
    /// Its transport feedback, copied by its interceptor before `rtc` routes RTCP.
    feedback: feedback::TransportFeedbackSink,
    /// When its peer connection next needs `handle_timeout`, as it said after the last input
    /// (asking every peer at every wake-up was a tenth of the worker's time at 50 peers).
    deadline: Option<Instant>,
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peer")
            .field("connected", &self.connected)
            .field("addrs", &self.addrs.len())
            .field("inbound", &self.inbound.len())
            .field("outbound", &self.outbound.len())
            .finish_non_exhaustive()
    }
}

/// Many WebRTC peers behind one UDP socket; see the [module docs](self) for how to drive it.
#[derive(Debug)]
pub struct Endpoint {
    config: WebRtcConfig,
    next_peer: u64,
    peers: FxHashMap<PeerId, Peer>,
    by_ufrag: FxHashMap<String, PeerId>,
    /// Local ufrags taken and released since the last [`poll_ufrag_change`](Self::poll_ufrag_change).
    ufrag_changes: VecDeque<UfragChange>,
    /// `(local, remote)` → peer, learned from STUN Binding requests.
    by_addr: FxHashMap<(SocketAddr, SocketAddr), PeerId>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<WebRtcEvent>,
    stats: WebRtcStats,
    /// What every peer's NACK guard did.
    nacks: std::sync::Arc<NackCounters>,
    /// While a STUN check is handed to a peer: where it came from, and whether the peer
    /// answered it with success.
    check: Option<((SocketAddr, SocketAddr), bool)>,
    /// The packet caches of the publisher streams forwarded to some leg.
    caches: FxHashMap<CacheKey, TrackCache>,
    /// Where each packet is written for its leg before it is protected.
    scratch: Vec<u8>,
    /// When the sender reports are next due.
    next_report: Option<Instant>,
    /// The first instant seen: NTP time's origin without a wall clock.
    origin: Option<Instant>,
    /// The latest instant a call gave (for what a peer's output makes the endpoint do).
    now: Option<Instant>,
}

/// Most source addresses routed to one peer. A peer uses one or two at a time (a path and the
/// one it moves to); the least recently verified goes when another is verified.
pub const MAX_PEER_ADDRESSES: usize = 8;

/// Transactions of verified checks a peer remembers, to refuse the same check from elsewhere.
const REMEMBERED_CHECKS: usize = 32;

/// The transaction id of a STUN Binding request (`None` for anything else).
fn binding_transaction(bytes: &[u8]) -> Option<[u8; 12]> {
    if bytes.len() < 20 || bytes[..2] != [0x00, 0x01] || bytes[4..8] != [0x21, 0x12, 0xa4, 0x42] {
        return None;
    }
    bytes[8..20].try_into().ok()
}

/// Checks an offer the way [`Endpoint::accept_offer`] does before it spends a peer connection
/// on it: at most `max_len` bytes (checked before parsing), valid SDP, at least one live audio or
/// video section, a codec the bridge forwards, and well-formed simulcast ([`simulcast`]). Callers
/// use it to refuse a bad offer before any other work (a signaling server before it queues the
/// offer).
pub fn check_offer(sdp: &str, max_len: usize) -> Result<(), WebRtcError> {
    validate_offer(sdp, max_len)
}

impl Endpoint {
    /// An endpoint with no peers.
    ///
    /// # Panics
    ///
    /// If `config.nack_cache_packets` is not a power of two (`rtc` requires one).
    pub fn new(config: WebRtcConfig) -> Self {
        assert!(
            config.nack_cache_packets.is_power_of_two(),
            "nack_cache_packets must be a power of two"
        );
        Self {
            config,
            next_peer: 1,
            peers: FxHashMap::default(),
            by_ufrag: FxHashMap::default(),
            ufrag_changes: VecDeque::new(),
            by_addr: FxHashMap::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: WebRtcStats::default(),
            nacks: std::sync::Arc::default(),
            check: None,
            caches: FxHashMap::default(),
            scratch: Vec::with_capacity(2048),
            next_report: None,
            origin: None,
            now: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &WebRtcConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> WebRtcStats {
        WebRtcStats {
            peers: self.peers.len(),
            nacks: self.nacks.read(),
            addresses: self.by_addr.len(),
            ..self.stats
        }
    }

    /// What the send path holds: walks every cache, for figures and tests, not for every turn.
    pub fn send_memory(&self) -> SendMemory {
        SendMemory {
            caches: self.caches.len(),
            cache_bytes: self.caches.values().map(TrackCache::held_bytes).sum(),
            leg_bytes: self
                .peers
                .values()
                .flat_map(|p| p.outbound.values())
                .map(|o| o.stream.held_bytes())
                .sum(),
        }
    }

    /// Number of peers.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Whether the peer exists and has completed ICE and DTLS.
    pub fn is_connected(&self, peer: PeerId) -> bool {
        self.peers.get(&peer).is_some_and(|p| p.connected)
    }

    /// Answers a publisher's (or any) offer: creates an ICE-lite peer that accepts the tracks
    /// the offer sends. Returns the peer and the answer SDP (with the host candidates in it).
    pub fn accept_offer(
        &mut self,
        offer_sdp: &str,
        now: Instant,
    ) -> Result<(PeerId, String), WebRtcError> {
        self.accept_offer_with_tracks(offer_sdp, &[], now)
    }

    /// Answers an offer, adding `tracks` to send first (a subscriber's recvonly offer, WHEP
    /// style). Each track binds to a section of the offer of its kind that can receive.
    pub fn accept_offer_with_tracks(
        &mut self,
        offer_sdp: &str,
        tracks: &[SendTrack],
        now: Instant,
    ) -> Result<(PeerId, String), WebRtcError> {
        let result = self.try_accept(offer_sdp, tracks, now);
        if let Err(err) = &result {
            self.stats.offers_refused += 1;
            debug!(error = %err, "webrtc offer refused");
        }
        result
    }

    fn try_accept(
        &mut self,
        offer_sdp: &str,
        tracks: &[SendTrack],
        now: Instant,
    ) -> Result<(PeerId, String), WebRtcError> {
        validate_offer(offer_sdp, self.config.max_sdp_len)?;
        if self.peers.len() >= self.config.max_peers {
            return Err(WebRtcError::TooManyPeers(self.config.max_peers));
        }
        if self.config.local_addrs.is_empty() {
            return Err(WebRtcError::NoLocalAddress);
        }
        // The provider sees the SRTP keys of the peer, for the forwarded RTP.
        let tap = KeyTap::new().map_err(|e| WebRtcError::Rtc(RtcError::Other(e.to_string())))?;
        // Empty credentials: `rtc` draws them, and new ones at every ICE restart.
        let setting_engine = SettingEngineBuilder::new()
            .with_crypto_provider(tap.clone())
            .with_lite(true)
            .with_ice_timeouts(
                Some(self.config.ice_disconnected_timeout),
                Some(self.config.ice_failed_timeout),
                None,
            )
            .build();
        let mut media_engine = MediaEngine::default();
        media_engine.register_default_codecs()?;
        // The slot number only orders interceptors; any custom slot works for a marker.
        let sink = feedback::TransportFeedbackSink::default();
        let registry = Registry::new().with(
            Slot::from(14_000),
            DeliverKeyframeRequests::feedback(Arc::clone(&sink)),
        );
        let registry = register_interceptors(registry, &mut media_engine)?;
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_setting_engine(setting_engine)
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .build(now)?;

        let id = PeerId(self.next_peer);
        let mut outbound = FxHashMap::default();
        add_send_tracks(
            &mut pc,
            id,
            tracks,
            &mut outbound,
            usize::from(self.config.nack_cache_packets),
        )?;

        pc.set_remote_description(now, RTCSessionDescription::offer(offer_sdp.to_owned())?)?;
        for (foundation, addr) in self.config.local_addrs.iter().enumerate() {
            // RFC 8445 §5.1.2.1: host candidates get type preference 126.
            let priority = (126u32 << 24) | (65_535u32 << 8) | 255;
            pc.add_local_candidate(RTCIceCandidateInit {
                candidate: format!(
                    "candidate:{} 1 udp {priority} {} {} typ host",
                    foundation + 1,
                    addr.ip(),
                    addr.port()
                ),
                ..Default::default()
            })?;
        }
        // An empty candidate ends gathering.
        pc.add_local_candidate(RTCIceCandidateInit::default())?;
        let answer = pc.create_answer(None)?;
        pc.set_local_description(now, answer)?;
        let answer_sdp = pc
            .local_description()
            .map(|d| d.sdp)
            .ok_or(WebRtcError::Rtc(RtcError::ErrPeerConnLocalDescriptionNil))?;
        let ufrag = ice::sdp_ufrag(&answer_sdp)
            .ok_or(WebRtcError::Rtc(RtcError::ErrLocalUfragInsufficientBits))?
            .to_owned();
        if self.by_ufrag.contains_key(&ufrag) {
            // 16 random letters from `rtc`: a clash means a broken RNG, not bad luck.
            return Err(WebRtcError::Rtc(RtcError::ErrLocalUfragInsufficientBits));
        }

        self.next_peer += 1;
        self.by_ufrag.insert(ufrag.clone(), id);
        self.ufrag_changes
            .push_back(UfragChange::Taken(ufrag.clone()));
        self.peers.insert(
            id,
            Peer {
                pc,
                ufrag,
                addrs: VecDeque::new(),
                checks: VecDeque::new(),
                connected: false,
                inbound: FxHashMap::default(),
                outbound,
                tap,
                srtp: None,
                srtp_failed: false,
                path: None,
                twcc_seq: 0,
                estimator: WebRtcEstimator::new(),
                feedback: sink,
                deadline: None,
            },
        );
        debug!(peer = %id, tracks = tracks.len(), "webrtc peer created");
        self.drive(id);
        Ok((id, answer_sdp))
    }

    /// Answers a new offer of an existing peer (renegotiation on the same ICE and DTLS
    /// transports), adding `tracks` to send first: each binds to a new section of the offer of
    /// its kind that can receive. Sections already answered keep their tracks. The caller must
    /// not send `rtp` on the new tracks before this returns.
    ///
    /// On error the peer may be unusable; close it.
    pub fn renegotiate(
        &mut self,
        peer: PeerId,
        offer_sdp: &str,
        tracks: &[SendTrack],
        now: Instant,
    ) -> Result<String, WebRtcError> {
        validate_offer(offer_sdp, self.config.max_sdp_len)?;
        let state = self
            .peers
            .get_mut(&peer)
            .ok_or(WebRtcError::UnknownPeer(peer))?;
        let ring = usize::from(self.config.nack_cache_packets);
        add_send_tracks(&mut state.pc, peer, tracks, &mut state.outbound, ring)?;
        // A new negotiation may map payload types and extensions anew.
        for out in state.outbound.values_mut() {
            out.negotiated = None;
        }
        state
            .pc
            .set_remote_description(now, RTCSessionDescription::offer(offer_sdp.to_owned())?)?;
        let answer = state.pc.create_answer(None)?;
        state.pc.set_local_description(now, answer)?;
        let answer_sdp = state
            .pc
            .local_description()
            .map(|d| d.sdp)
            .ok_or(WebRtcError::Rtc(RtcError::ErrPeerConnLocalDescriptionNil))?;
        // An offer with new ICE credentials restarted ICE, and the answer has new ones too.
        if let Some(ufrag) = ice::sdp_ufrag(&answer_sdp)
            && *ufrag != state.ufrag
        {
            let old = std::mem::replace(&mut state.ufrag, ufrag.to_owned());
            self.by_ufrag.remove(&old);
            self.by_ufrag.insert(ufrag.to_owned(), peer);
            self.ufrag_changes.push_back(UfragChange::Released(old));
            self.ufrag_changes
                .push_back(UfragChange::Taken(ufrag.to_owned()));
            debug!(peer = %peer, "webrtc peer restarted ice");
        }
        debug!(peer = %peer, tracks = tracks.len(), "webrtc peer renegotiated");
        self.drive(peer);
        Ok(answer_sdp)
    }

    /// Restarts ICE with the peer's new `credentials` (a WHIP `PATCH`): its last offer is applied
    /// again with them, and the answer — with the endpoint's new credentials — is returned.
    /// Tracks and DTLS stay as they are. Credentials equal to the current ones restart nothing
    /// and return the current answer.
    ///
    /// On error the peer may be unusable; close it.
    pub fn restart_ice(
        &mut self,
        peer: PeerId,
        credentials: &IceCredentials,
        now: Instant,
    ) -> Result<String, WebRtcError> {
        let state = self
            .peers
            .get_mut(&peer)
            .ok_or(WebRtcError::UnknownPeer(peer))?;
        let offer = state
            .pc
            .current_remote_description()
            .ok_or(WebRtcError::NotNegotiated(peer))?
            .sdp
            .clone();
        if ice::has_credentials(&offer, credentials) {
            return state
                .pc
                .local_description()
                .map(|d| d.sdp)
                .ok_or(WebRtcError::NotNegotiated(peer));
        }
        self.renegotiate(peer, &ice::with_credentials(&offer, credentials), &[], now)
    }

    /// The next local ICE ufrag taken by a new peer or an ICE restart, or released by a
    /// restart or a peer's end, in order: for a caller that routes datagrams to endpoints by
    /// ufrag (several endpoints behind one port). Unread changes accumulate, one per peer
    /// created, restarted or removed.
    pub fn poll_ufrag_change(&mut self) -> Option<UfragChange> {
        self.ufrag_changes.pop_front()
    }

    /// The ICE ufrag the peer's checks must name now (it changes at an ICE restart).
    pub fn local_ufrag(&self, peer: PeerId) -> Option<&str> {
        self.peers.get(&peer).map(|p| p.ufrag.as_str())
    }

    /// Stops sending the track named by `ssrc` (its section goes inactive at the next
    /// negotiation).
    pub fn remove_send_track(&mut self, peer: PeerId, ssrc: u32) -> Result<(), WebRtcError> {
        let state = self
            .peers
            .get_mut(&peer)
            .ok_or(WebRtcError::UnknownPeer(peer))?;
        let out = state
            .outbound
            .remove(&ssrc)
            .ok_or(WebRtcError::UnknownSsrc { peer, ssrc })?;
        release_cache(&mut self.caches, out.cache);
        state.pc.remove_track(out.sender)?;
        self.drive(peer);
        Ok(())
    }

    /// Feeds a datagram read from the shared socket at `local` from `from`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        bytes: &[u8],
    ) {
        self.stats.datagrams_in += 1;
        self.now = Some(now);
        let (id, new_address) = match self.by_addr.get(&(local, from)) {
            Some(&id) => (id, false),
            None => match classify(bytes) {
                Datagram::BindingRequest { server_ufrag } => {
                    match self.by_ufrag.get(server_ufrag) {
                        // Routed for this check only: the address is added once the peer's ICE
                        // agent answered it with success, i.e. it passed MESSAGE-INTEGRITY.
                        Some(&id) => (id, true),
                        None => {
                            self.stats.dropped.unknown_ufrag += 1;
                            trace!("stun with unknown ufrag dropped");
                            return;
                        }
                    }
                }
                Datagram::NotStun | Datagram::OtherStun => {
                    self.stats.dropped.unknown_source += 1;
                    trace!("datagram from unknown source dropped");
                    return;
                }
            },
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            self.by_addr.remove(&(local, from));
            self.stats.dropped.unknown_source += 1;
            return;
        };
        let transaction = binding_transaction(bytes);
        if new_address
            && let Some(tid) = transaction
            && peer
                .checks
                .iter()
                .any(|(t, addr)| *t == tid && *addr != from)
        {
            // A check verified from one address, sent again from another: a replay by someone
            // who saw it, not the peer (its agent draws a new transaction for every check).
            self.stats.dropped.unverified_check += 1;
            trace!(peer = %id, "replayed stun check dropped");
            return;
        }
        if transaction.is_some() {
            self.check = Some(((local, from), false));
        }
        // SRTP (RFC 7983: first byte 128..=191; RFC 5761: payload types 192..=223 are RTCP).
        let srtp = peer.connected
            && bytes.first().is_some_and(|b| (128..=191).contains(b))
            && bytes.get(1).is_some_and(|pt| !(192..=223).contains(pt));
        let events_before = self.events.len();
        let read = peer.pc.handle_read(TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: local,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(bytes),
        });
        if let Err(err) = &read {
            self.stats.dropped.rejected_by_peer += 1;
            trace!(peer = %id, error = %err, "datagram rejected by peer");
        }
        self.drive(id);
        if let Some((_, answered)) = self.check.take() {
            if answered {
                self.verified(id, local, from, transaction, new_address);
                // A nominating check may have moved the selected pair: look again.
                if let Some(peer) = self.peers.get_mut(&id)
                    && peer.connected
                {
                    peer.path = selected_path(&mut peer.pc);
                }
            } else if new_address {
                self.stats.dropped.unverified_check += 1;
                trace!(peer = %id, "stun check from a new address not verified");
            }
        }
        if read.is_err() {
            return;
        }
        // `rtc` drops SRTP that fails authentication with only a log line: a connected peer's
        // RTP datagram that yielded no packet was refused.
        if srtp
            && !self
                .events
                .iter()
                .skip(events_before)
                .any(|e| matches!(e, WebRtcEvent::Rtp { peer, .. } if *peer == id))
        {
            self.stats.dropped.rejected_by_peer += 1;
            trace!(peer = %id, "rtp datagram yielded no packet");
        }
    }

    /// Writes an RTP packet to a subscriber peer on the send track named by `ssrc`: as
    /// [`send_forwarded`](Self::send_forwarded) with the packet's own sequence number and
    /// timestamp, the packet kept in a cache of the leg's own.
    pub fn send_rtp(
        &mut self,
        peer: PeerId,
        ssrc: u32,
        packet: &[u8],
        now: Instant,
    ) -> Result<(), WebRtcError> {
        if packet.len() < 12 {
            return Err(WebRtcError::MalformedRtp);
        }
        let sequence_number = u16::from_be_bytes([packet[2], packet[3]]);
        let timestamp = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        self.send(
            peer,
            CacheKey::Leg(peer, ssrc),
            packet,
            (ssrc, sequence_number, timestamp),
            now,
        )
    }

    /// Sends a forwarded packet to a subscriber peer on its send track [`ForwardedRtp::ssrc`].
    /// The packet carries the track's SSRC, the given sequence number and timestamp, the payload
    /// type the leg negotiated for the track's codec, and the header extensions whose id the leg
    /// negotiated (map ids per leg before calling to keep them) except `sdes:mid` and the rid
    /// extensions (their values are another leg's) and transport-cc (the leg's own sequence is
    /// written instead, when it negotiated it). The original is kept in the stream's packet
    /// cache to answer NACKs. The packet is queued for [`poll_transmit`](Self::poll_transmit).
    pub fn send_forwarded(
        &mut self,
        peer: PeerId,
        forwarded: &ForwardedRtp<'_>,
        now: Instant,
    ) -> Result<(), WebRtcError> {
        self.send(
            peer,
            CacheKey::Stream(forwarded.track, forwarded.layer),
            forwarded.original,
            (
                forwarded.ssrc,
                forwarded.sequence_number,
                forwarded.timestamp,
            ),
            now,
        )
    }

    fn send(
        &mut self,
        peer: PeerId,
        key: CacheKey,
        original: &[u8],
        (ssrc, sequence_number, timestamp): (u32, u16, u32),
        now: Instant,
    ) -> Result<(), WebRtcError> {
        if original.len() < 12 {
            return Err(WebRtcError::MalformedRtp);
        }
        self.origin.get_or_insert(now);
        let ring = usize::from(self.config.nack_cache_packets);
        let Endpoint {
            peers,
            caches,
            scratch,
            transmits,
            stats,
            config,
            next_report,
            ..
        } = self;
        let state = peers.get_mut(&peer).ok_or(WebRtcError::UnknownPeer(peer))?;
        if !state.outbound.contains_key(&ssrc) {
            return Err(WebRtcError::UnknownSsrc { peer, ssrc });
        }
        ready_to_send(state, peer, now)?;
        let Peer {
            pc,
            outbound,
            srtp,
            path,
            twcc_seq,
            estimator,
            ..
        } = state;
        let (Some(srtp), Some((from, to))) = (srtp.as_mut(), *path) else {
            return Err(WebRtcError::NotConnected(peer));
        };
        let out = outbound
            .get_mut(&ssrc)
            .ok_or(WebRtcError::UnknownSsrc { peer, ssrc })?;
        ensure_format(pc, out)?;
        let Some(format) = out.negotiated.as_ref() else {
            return Err(WebRtcError::NotNegotiated(peer));
        };
        let original_seq = u16::from_be_bytes([original[2], original[3]]);
        if out.cache != Some(key) {
            // A new publisher stream (a simulcast switch): what the leg sent before is in
            // another stream's cache.
            release_cache(caches, out.cache.take());
            out.stream.forget();
            caches
                .entry(key)
                .or_insert_with(|| TrackCache::new(ring))
                .legs += 1;
            out.cache = Some(key);
        }
        if let Some(cache) = caches.get_mut(&key) {
            cache.insert(original_seq, original);
        }
        let header_len = write_leg(
            original,
            (ssrc, sequence_number, timestamp),
            format,
            *twcc_seq,
            None,
            scratch,
        )
        .map_err(|_| WebRtcError::MalformedRtp)?;
        // Protected in place in the leg's write buffer, then copied once into the datagram.
        scratch.reserve(srtp.overhead());
        srtp.protect(
            scratch,
            header_len,
            out.stream.rollover.next(sequence_number),
        )?;
        let protected = Bytes::copy_from_slice(scratch);
        if format.transport_cc.is_some() {
            estimator.on_sent(*twcc_seq, ssrc, sequence_number, protected.len(), now);
            *twcc_seq = twcc_seq.wrapping_add(1);
        }
        out.stream.sent(
            (sequence_number, timestamp),
            original_seq,
            send::payload_len(scratch, header_len),
            now,
        );
        stats.forwarded += 1;
        next_report.get_or_insert(now + config.sender_report_interval);
        queue_transmit(
            transmits,
            config.max_queued_transmits,
            stats,
            Transmit {
                from,
                to,
                bytes: protected,
            },
        );
        Ok(())
    }

    /// Whether `peer`'s link can be probed with [`send_padding`](Self::send_padding): it is
    /// connected, one of its video send streams negotiated RTX and transport-cc, and its
    /// feedback does not leave padding out ([`WebRtcEstimator::padding_unreported`]).
    pub fn can_pad(&mut self, peer: PeerId) -> bool {
        let Some(state) = self.peers.get_mut(&peer) else {
            return false;
        };
        if !state.connected || state.estimator.padding_unreported() {
            return false;
        }
        padding_stream(state).is_some()
    }

    /// Whether `peer`'s estimate may be given to the allocation: a REMB-based one rises on its
    /// own (the receiver estimates), a TWCC-based one only as the leg proves more, which a
    /// paused or low layer can only do with a probe's padding ([`can_pad`](Self::can_pad)).
    pub fn estimate_can_climb(&mut self, peer: PeerId) -> bool {
        let Some(state) = self.peers.get(&peer) else {
            return false;
        };
        if !state.estimator.uses_twcc() {
            return true;
        }
        self.can_pad(peer)
    }

    /// Sends about `bytes` of padding to `peer`, to probe its link: padding-only packets (at
    /// most 255 bytes of padding each, RFC 3550 §5.1) on the RTX stream (RFC 4588) of one of
    /// its video send streams that negotiated RTX and transport-cc, each numbered in the leg's
    /// transport-wide sequence, so that its feedback reports what the link carried; a receiver
    /// drops them (an RTX packet without the original's sequence number has nothing to
    /// recover). Returns the bytes queued (SRTP included); 0 when the leg cannot be padded
    /// ([`can_pad`](Self::can_pad)) or has sent no media on that stream yet.
    pub fn send_padding(&mut self, peer: PeerId, bytes: usize, now: Instant) -> usize {
        let Endpoint {
            peers,
            scratch,
            transmits,
            stats,
            config,
            ..
        } = self;
        let Some(state) = peers.get_mut(&peer) else {
            return 0;
        };
        if ready_to_send(state, peer, now).is_err() {
            return 0;
        }
        let Some(ssrc) = padding_stream(state) else {
            return 0;
        };
        let Peer {
            outbound,
            srtp: Some(srtp),
            path: Some((from, to)),
            twcc_seq,
            estimator,
            ..
        } = state
        else {
            return 0;
        };
        let Some(out) = outbound.get_mut(&ssrc) else {
            return 0;
        };
        let (Some(format), Some((last_timestamp, _))) = (out.negotiated.as_ref(), out.stream.last)
        else {
            return 0;
        };
        let Some((rtx_ssrc, payload_type)) = format.rtx else {
            return 0;
        };
        let mut sent = 0;
        let mut left = bytes;
        while left > 0 {
            let padding = left.min(send::MAX_PADDING);
            left -= padding;
            let seq = out.stream.rtx_seq;
            out.stream.rtx_seq = seq.wrapping_add(1);
            let header_len = send::write_padding(
                (rtx_ssrc, seq, last_timestamp),
                payload_type,
                format.transport_cc,
                *twcc_seq,
                padding,
                scratch,
            );
            scratch.reserve(srtp.overhead());
            if srtp
                .protect(scratch, header_len, out.stream.rtx_rollover.next(seq))
                .is_err()
            {
                break;
            }
            let protected = Bytes::copy_from_slice(scratch);
            estimator.on_padding_sent(*twcc_seq, rtx_ssrc, seq, protected.len(), now);
            *twcc_seq = twcc_seq.wrapping_add(1);
            sent += protected.len();
            stats.padding_packets += 1;
            stats.padding_bytes += protected.len() as u64;
            queue_transmit(
                transmits,
                config.max_queued_transmits,
                stats,
                Transmit {
                    from: *from,
                    to: *to,
                    bytes: protected,
                },
            );
        }
        sent
    }

    /// Answers a NACK of `peer` from the packet cache of the stream its send track forwards,
    /// within the leg's NACK budget.
    fn answer_nack(&mut self, peer: PeerId, nack: &TransportLayerNack, now: Instant) {
        let Endpoint {
            peers,
            caches,
            scratch,
            transmits,
            stats,
            config,
            nacks,
            ..
        } = self;
        let Some(Peer {
            pc,
            outbound,
            srtp: Some(srtp),
            path: Some((from, to)),
            twcc_seq,
            estimator,
            ..
        }) = peers.get_mut(&peer)
        else {
            return;
        };
        let ssrc = nack.media_ssrc;
        let Some(out) = outbound.get_mut(&ssrc) else {
            return;
        };
        if ensure_format(pc, out).is_err() {
            return;
        }
        let Some(format) = out.negotiated.as_ref() else {
            return;
        };
        let cache = out.cache.and_then(|key| caches.get(&key));
        // Each sequence number once per request, however often the request names it.
        let mut asked: Vec<u16> = nack
            .nacks
            .iter()
            .flat_map(|pair| pair.packet_list())
            .collect();
        asked.sort_unstable();
        asked.dedup();
        for leg_seq in asked {
            let found = out.stream.lookup(leg_seq).and_then(|(original_seq, ts)| {
                cache
                    .and_then(|c| c.get(original_seq))
                    .map(|packet| (packet, ts))
            });
            let Some((original, timestamp)) = found else {
                nacks.not_cached();
                continue;
            };
            if !out.stream.budget.ask(leg_seq, now, nacks) {
                continue;
            }
            // On the RTX stream when the leg has one (a receiver's SRTP replay check drops a
            // second packet of the same number), else as the original again.
            let (wire_ssrc, wire_seq, wrap) = match format.rtx {
                Some((rtx_ssrc, payload_type)) => {
                    let seq = out.stream.rtx_seq;
                    out.stream.rtx_seq = seq.wrapping_add(1);
                    let wrap = send::RtxWrap {
                        payload_type,
                        original_seq: leg_seq,
                    };
                    (rtx_ssrc, seq, Some(wrap))
                }
                None => (ssrc, leg_seq, None),
            };
            let on_rtx = wrap.is_some();
            let written = write_leg(
                original,
                (wire_ssrc, wire_seq, timestamp),
                format,
                *twcc_seq,
                wrap,
                scratch,
            );
            let Ok(header_len) = written else {
                continue;
            };
            let rollover = if on_rtx {
                &mut out.stream.rtx_rollover
            } else {
                &mut out.stream.rollover
            };
            scratch.reserve(srtp.overhead());
            if srtp
                .protect(scratch, header_len, rollover.next(wire_seq))
                .is_err()
            {
                continue;
            }
            let protected = Bytes::copy_from_slice(scratch);
            if format.transport_cc.is_some() {
                estimator.on_sent(*twcc_seq, wire_ssrc, wire_seq, protected.len(), now);
                *twcc_seq = twcc_seq.wrapping_add(1);
            }
            stats.retransmitted += 1;
            queue_transmit(
                transmits,
                config.max_queued_transmits,
                stats,
                Transmit {
                    from: *from,
                    to: *to,
                    bytes: protected,
                },
            );
        }
    }

    /// Sends a sender report for every send stream that sent something since its last one.
    fn send_reports(&mut self, now: Instant) {
        let ntp_time = self.ntp_time(now);
        let mut sent = 0;
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            if peer.srtp.is_none() {
                continue;
            }
            let mut any = false;
            for (&ssrc, out) in &mut peer.outbound {
                let Some((last_ts, last_at)) = out.stream.last else {
                    continue;
                };
                if out.stream.packets == out.stream.reported {
                    continue;
                }
                let elapsed = now.saturating_duration_since(last_at);
                let ticks = elapsed.as_nanos() * u128::from(out.clock_rate) / 1_000_000_000;
                let report = SenderReport {
                    ssrc,
                    ntp_time,
                    rtp_time: last_ts.wrapping_add(ticks as u32),
                    packet_count: out.stream.packets,
                    octet_count: out.stream.octets,
                    ..Default::default()
                };
                let Some(mut sender) = peer.pc.rtp_sender(out.sender) else {
                    continue;
                };
                match sender.write_rtcp(now, vec![Box::new(report)]) {
                    Ok(()) => {
                        out.stream.reported = out.stream.packets;
                        sent += 1;
                        any = true;
                    }
                    Err(err) => trace!(peer = %id, error = %err, "sender report refused"),
                }
            }
            if any {
                self.drive(id);
            }
        }
        self.stats.sender_reports += sent;
    }

    /// The NTP time (RFC 3550 §4: seconds since 1900 in the high 32 bits) at `now`.
    fn ntp_time(&self, now: Instant) -> u64 {
        const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
        let since = match self.config.wall_clock {
            Some((at, wall)) => {
                let base = wall
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    + Duration::from_secs(NTP_UNIX_OFFSET);
                if now >= at {
                    base + (now - at)
                } else {
                    base.saturating_sub(at - now)
                }
            }
            None => now.saturating_duration_since(self.origin.unwrap_or(now)),
        };
        let fraction = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
        (since.as_secs() << 32) | fraction
    }

    /// Sends a PLI for the publisher stream `ssrc` of `peer`.
    pub fn request_keyframe(
        &mut self,
        peer: PeerId,
        ssrc: u32,
        now: Instant,
    ) -> Result<(), WebRtcError> {
        let state = self
            .peers
            .get_mut(&peer)
            .ok_or(WebRtcError::UnknownPeer(peer))?;
        let inbound = state
            .inbound
            .get(&ssrc)
            .ok_or(WebRtcError::UnknownSsrc { peer, ssrc })?;
        let mut receiver = state
            .pc
            .rtp_receiver(inbound.receiver)
            .ok_or(WebRtcError::UnknownSsrc { peer, ssrc })?;
        receiver.write_rtcp(
            now,
            vec![Box::new(PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc: ssrc,
            })],
        )?;
        self.drive(peer);
        Ok(())
    }

    /// Closes a peer (DTLS close_notify is queued for it) and removes it; reports
    /// [`WebRtcEvent::Disconnected`].
    pub fn close(&mut self, peer: PeerId) -> Result<(), WebRtcError> {
        let state = self
            .peers
            .get_mut(&peer)
            .ok_or(WebRtcError::UnknownPeer(peer))?;
        let closed = state.pc.close();
        self.drive(peer);
        self.remove(peer);
        closed.map_err(WebRtcError::from)
    }

    /// The earliest instant some peer needs [`handle_timeout`](Self::handle_timeout).
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        // O(peers) per call; a timer wheel is the fix if this shows in profiles.
        let peers = self.peers.values().filter_map(|p| p.deadline).min();
        match (peers, self.next_report) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs every peer's timers that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = Some(now);
        if self.next_report.is_some_and(|at| at <= now) {
            self.next_report = None;
            self.send_reports(now);
            if self.peers.values().any(|p| !p.outbound.is_empty()) {
                self.next_report = Some(now + self.config.sender_report_interval);
            }
        }
        let due: Vec<PeerId> = self
            .peers
            .iter()
            .filter_map(|(&id, p)| p.deadline.is_some_and(|t| t <= now).then_some(id))
            .collect();
        for id in due {
            if let Some(peer) = self.peers.get_mut(&id)
                && let Err(err) = peer.pc.handle_timeout(now)
            {
                trace!(peer = %id, error = %err, "peer timeout error");
            }
            self.drive(id);
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.transmits.pop_front()?;
        self.stats.datagrams_out += 1;
        Some(t)
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<WebRtcEvent> {
        self.events.pop_front()
    }

    /// Drains one peer's outputs into the endpoint's queues; removes it if it failed.
    fn drive(&mut self, id: PeerId) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let mut gone = false;
        // NACKs read, answered once the peer's outputs are drained.
        let mut nacks: Vec<TransportLayerNack> = Vec::new();
        loop {
            let mut progressed = false;
            while let Some(event) = peer.pc.poll_event() {
                progressed = true;
                match event {
                    RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => match state {
                        RTCPeerConnectionState::Connected if !peer.connected => {
                            peer.connected = true;
                            debug!(peer = %id, "webrtc peer connected");
                            self.events.push_back(WebRtcEvent::Connected(id));
                        }
                        RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                            gone = true;
                        }
                        _ => {}
                    },
                    RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                        let event = track_event(id, peer, &init);
                        peer.inbound.insert(
                            init.ssrc,
                            Inbound {
                                receiver: init.receiver_id,
                            },
                        );
                        self.events.push_back(event);
                    }
                    _ => {}
                }
            }
            while let Some(msg) = peer.pc.poll_read() {
                progressed = true;
                match msg.message {
                    RTCMessage::RtpPacket(_, packet) => {
                        let ssrc = packet.header.ssrc;
                        match packet.marshal() {
                            Ok(bytes) => self.events.push_back(WebRtcEvent::Rtp {
                                peer: id,
                                ssrc,
                                packet: bytes.freeze(),
                            }),
                            Err(err) => trace!(peer = %id, error = %err, "rtp re-marshal failed"),
                        }
                    }
                    RTCMessage::RtcpPacket(_, packets) => {
                        let feedback = &mut self.stats.feedback;
                        for packet in packets.iter().filter(|p| is_feedback(p.as_ref())) {
                            let any = packet.as_any();
                            if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                                feedback.pli += 1;
                                self.events.push_back(WebRtcEvent::KeyframeRequest {
                                    peer: id,
                                    ssrc: pli.media_ssrc,
                                });
                            } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                                feedback.fir += 1;
                                for entry in &fir.fir {
                                    self.events.push_back(WebRtcEvent::KeyframeRequest {
                                        peer: id,
                                        ssrc: entry.ssrc,
                                    });
                                }
                            } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                                feedback.nack += 1;
                                nacks.push(nack.clone());
                            }
                            // Transport-wide feedback and REMB come through the peer's
                            // feedback sink, whatever SSRC they name (`feedback` module docs).
                        }
                    }
                    _ => {}
                }
            }
            while let Some(out) = peer.pc.poll_write() {
                progressed = true;
                if self.transmits.len() >= self.config.max_queued_transmits {
                    self.transmits.pop_front();
                    self.stats.transmits_dropped += 1;
                }
                let transmit = Transmit {
                    from: out.transport.local_addr,
                    to: out.transport.peer_addr,
                    bytes: out.message.freeze(),
                };
                // A Binding success response to the check being handled: it passed integrity.
                if let Some((addr, answered)) = &mut self.check
                    && *addr == (transmit.from, transmit.to)
                    && transmit.bytes.starts_with(&[0x01, 0x01])
                {
                    *answered = true;
                }
                self.transmits.push_back(transmit);
            }
            if !progressed {
                break;
            }
        }
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.deadline = peer.pc.poll_timeout();
            self.transport_feedback(id);
        }
        if let Some(now) = self.now {
            for nack in &nacks {
                self.answer_nack(id, nack, now);
            }
        }
        if gone {
            self.remove(id);
        }
    }

    /// A check from `(local, from)` passed the peer's integrity check: the address is routed to
    /// it (the most recently verified), within [`MAX_PEER_ADDRESSES`].
    /// Takes the transport feedback `id`'s receiver sent (its feedback sink) into its estimate.
    fn transport_feedback(&mut self, id: PeerId) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        // Feedback only comes with a datagram, which set the time.
        let Some(now) = self.now else {
            return;
        };
        loop {
            let next = peer
                .feedback
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .pop_front();
            let Some(next) = next else {
                break;
            };
            let estimate = match next {
                feedback::TransportFeedback::Twcc(cc) => {
                    self.stats.feedback.twcc += 1;
                    let unreported = peer.estimator.padding_unreported();
                    let estimate = peer.estimator.on_feedback(&cc, now);
                    if !unreported && peer.estimator.padding_unreported() {
                        self.stats.padding_unreported += 1;
                    }
                    estimate
                }
                feedback::TransportFeedback::Remb(bps) => {
                    self.stats.feedback.remb += 1;
                    peer.estimator.on_remb(bps)
                }
            };
            if let Some(estimate) = estimate {
                self.events
                    .push_back(WebRtcEvent::Estimate { peer: id, estimate });
            }
        }
    }

    fn verified(
        &mut self,
        id: PeerId,
        local: SocketAddr,
        from: SocketAddr,
        transaction: Option<[u8; 12]>,
        new_address: bool,
    ) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let addr = (local, from);
        if let Some(at) = peer.addrs.iter().position(|a| *a == addr) {
            peer.addrs.remove(at);
        }
        peer.addrs.push_back(addr);
        if new_address {
            self.by_addr.insert(addr, id);
        }
        if let Some(tid) = transaction {
            if peer.checks.len() >= REMEMBERED_CHECKS {
                peer.checks.pop_front();
            }
            peer.checks.push_back((tid, from));
        }
        while peer.addrs.len() > MAX_PEER_ADDRESSES {
            if let Some(old) = peer.addrs.pop_front()
                && self.by_addr.get(&old) == Some(&id)
            {
                self.by_addr.remove(&old);
            }
        }
    }

    fn remove(&mut self, id: PeerId) {
        if let Some(peer) = self.peers.remove(&id) {
            for out in peer.outbound.values() {
                release_cache(&mut self.caches, out.cache);
            }
            self.by_ufrag.remove(&peer.ufrag);
            self.ufrag_changes
                .push_back(UfragChange::Released(peer.ufrag.clone()));
            for addr in &peer.addrs {
                if self.by_addr.get(addr) == Some(&id) {
                    self.by_addr.remove(addr);
                }
            }
            debug!(peer = %id, "webrtc peer removed");
            self.events.push_back(WebRtcEvent::Disconnected(id));
        }
    }
}

fn track_event(id: PeerId, peer: &mut Peer, init: &RTCTrackEventInit) -> WebRtcEvent {
    let mid = peer
        .pc
        .get_transceivers()
        .collect::<Vec<_>>()
        .into_iter()
        .find_map(|t| {
            let transceiver = peer.pc.rtp_transceiver(t)?;
            (transceiver.receiver() == Some(init.receiver_id))
                .then(|| transceiver.mid().clone())
                .flatten()
        });
    let (kind, codec) = match peer.pc.rtp_receiver(init.receiver_id) {
        Some(receiver) => {
            let track = receiver.track();
            let kind = match track.kind() {
                RtpCodecKind::Audio => TrackKind::Audio,
                _ => TrackKind::Video,
            };
            let codec = track.codec(init.ssrc).map(|c| codec_spec(c, 0));
            (kind, codec)
        }
        None => (TrackKind::Video, None),
    };
    // The payload type: the receiver's negotiated parameters know it.
    let codec = codec.map(|mut spec| {
        if let Some(mut receiver) = peer.pc.rtp_receiver(init.receiver_id)
            && let Some(params) = receiver
                .get_parameters()
                .rtp_parameters
                .codecs
                .iter()
                .find(|c| {
                    mime_subtype(&c.rtp_codec.mime_type).eq_ignore_ascii_case(&spec.name)
                        && c.rtp_codec.sdp_fmtp_line == spec.fmtp
                })
        {
            spec.payload_type = params.payload_type;
        }
        spec
    });
    WebRtcEvent::Track {
        peer: id,
        mid,
        rid: init.rid.clone(),
        ssrc: init.ssrc,
        kind,
        codec,
    }
}

/// Adds one send track per `tracks` entry to `pc`, recording each in `outbound` by SSRC.
fn add_send_tracks(
    pc: &mut RTCPeerConnection,
    id: PeerId,
    tracks: &[SendTrack],
    outbound: &mut FxHashMap<u32, Outbound>,
    ring: usize,
) -> Result<(), WebRtcError> {
    for track in tracks {
        let kind = rtc_kind(track.kind);
        let codec = rtc_codec(track.kind, &track.codec);
        let mime_type = codec.mime_type.clone();
        let media_track = MediaStreamTrack::new(
            format!("strait-{}", id.0),
            format!("strait-{}-{}", id.0, track.ssrc),
            format!("strait-{}", track.ssrc),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(track.ssrc),
                    ..Default::default()
                },
                codec,
                ..Default::default()
            }],
        );
        // A transceiver of its own, never `add_track`: that reuses any transceiver of the kind
        // that has no sender yet — in a renegotiation, the one receiving the peer's own
        // published track — and the answer then gives that sendonly section a sending
        // direction too, which the peer refuses ("incompatible receive direction"). A new
        // sendrecv transceiver binds to a new section of the offer that can receive.
        let sender = RTCRtpSenderId::from(pc.add_transceiver_from_track(media_track, None)?);
        outbound.insert(
            track.ssrc,
            Outbound {
                sender,
                mime_type,
                clock_rate: track.codec.clock_rate,
                negotiated: None,
                cache: None,
                stream: LegStream::new(ring),
            },
        );
    }
    Ok(())
}

/// Finds what the leg negotiated for `out`, once per negotiation (`get_parameters` clones the
/// codec and extension lists: too dear for every packet).
fn ensure_format(pc: &mut RTCPeerConnection, out: &mut Outbound) -> Result<(), WebRtcError> {
    if out.negotiated.is_some() {
        return Ok(());
    }
    let mut sender = pc
        .rtp_sender(out.sender)
        .ok_or_else(|| WebRtcError::CodecNotNegotiated(out.mime_type.clone()))?;
    let params = sender.get_parameters();
    let payload_type = params
        .rtp_parameters
        .codecs
        .iter()
        .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(&out.mime_type))
        .map(|c| c.payload_type)
        .ok_or_else(|| WebRtcError::CodecNotNegotiated(out.mime_type.clone()))?;
    let extensions = &params.rtp_parameters.header_extensions;
    let transport_cc = extensions
        .iter()
        .find(|n| n.uri == rtc::sdp::extmap::TRANSPORT_CC_URI)
        .and_then(|n| u8::try_from(n.id).ok());
    // The publisher's mid and rid values name its own leg's streams, not this one's; the
    // transport-wide sequence is the leg's own.
    let extension_ids = extensions
        .iter()
        .filter(|n| !simulcast::is_stream_identity(&n.uri))
        .filter(|n| n.uri != rtc::sdp::extmap::TRANSPORT_CC_URI)
        .filter_map(|n| u8::try_from(n.id).ok())
        .collect();
    // RFC 4588 §8.6: the RTX payload type names the original's in its `apt` parameter.
    let rtx_payload_type = params
        .rtp_parameters
        .codecs
        .iter()
        .find(|c| {
            mime_subtype(&c.rtp_codec.mime_type).eq_ignore_ascii_case("rtx")
                && c.rtp_codec
                    .sdp_fmtp_line
                    .split(';')
                    .any(|p| p.trim() == format!("apt={payload_type}"))
        })
        .map(|c| c.payload_type);
    let rtx_ssrc = params
        .encodings
        .first()
        .and_then(|e| e.rtp_coding_parameters.rtx.as_ref())
        .map(|r| r.ssrc);
    out.negotiated = Some(LegFormat {
        payload_type,
        extension_ids,
        transport_cc,
        rtx: rtx_ssrc.zip(rtx_payload_type),
    });
    Ok(())
}

/// The send stream whose RTX stream carries `peer`'s padding: the video stream of the lowest
/// SSRC that negotiated RTX and transport-cc and has sent media (the receiver knows its RTX
/// stream by then).
fn padding_stream(peer: &mut Peer) -> Option<u32> {
    let Peer { pc, outbound, .. } = peer;
    let mut best = None;
    for (&ssrc, out) in outbound.iter_mut() {
        if out.clock_rate != 90_000 || out.stream.last.is_none() || ensure_format(pc, out).is_err()
        {
            continue;
        }
        let padded = out
            .negotiated
            .as_ref()
            .is_some_and(|f| f.rtx.is_some() && f.transport_cc.is_some());
        if padded && best.is_none_or(|b| ssrc < b) {
            best = Some(ssrc);
        }
    }
    best
}

/// Makes the peer's SRTP context of forwarded RTP once its DTLS completed, and finds where its
/// media goes.
fn ready_to_send(peer: &mut Peer, id: PeerId, now: Instant) -> Result<(), WebRtcError> {
    if peer.srtp.is_some() && peer.path.is_some() {
        return Ok(());
    }
    if !peer.connected {
        return Err(WebRtcError::NotConnected(id));
    }
    if peer.path.is_none() {
        peer.path = selected_path(&mut peer.pc);
    }
    if peer.srtp.is_none() {
        if peer.srtp_failed {
            return Err(WebRtcError::NoSrtpKeys(id));
        }
        let report = peer.pc.get_stats(now, rtc::statistics::StatsSelector::None);
        let profile = report
            .transport()
            .and_then(|t| srtp::profile_named(&t.srtp_cipher));
        peer.srtp = profile.and_then(|p| peer.tap.send_protection(p));
        if peer.srtp.is_none() {
            peer.srtp_failed = true;
            tracing::warn!(peer = %id, "no srtp send keys for the peer: it gets no media");
            return Err(WebRtcError::NoSrtpKeys(id));
        }
    }
    Ok(())
}

/// `rtc`'s selected candidate pair of the peer, as (local, remote) addresses.
fn selected_path(pc: &mut RTCPeerConnection) -> Option<(SocketAddr, SocketAddr)> {
    let sender = pc.get_senders().next();
    let receiver = pc.get_receivers().next();
    let pair = match (sender, receiver) {
        (Some(id), _) => pc
            .rtp_sender(id)?
            .transport()?
            .ice_transport()
            .get_selected_candidate_pair()?,
        (None, Some(id)) => pc
            .rtp_receiver(id)?
            .transport()?
            .ice_transport()
            .get_selected_candidate_pair()?,
        (None, None) => return None,
    };
    let addr = |c: &rtc::peer_connection::transport::RTCIceCandidate| {
        c.address
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, c.port))
    };
    Some((addr(pair.local())?, addr(pair.remote())?))
}

/// One leg fewer forwards the stream of `key`; its cache goes with the last.
fn release_cache(caches: &mut FxHashMap<CacheKey, TrackCache>, key: Option<CacheKey>) {
    if let Some(key) = key
        && let Some(cache) = caches.get_mut(&key)
    {
        cache.legs = cache.legs.saturating_sub(1);
        if cache.legs == 0 {
            caches.remove(&key);
        }
    }
}

/// Queues a datagram; when the queue is full the oldest goes, counted.
fn queue_transmit(
    transmits: &mut VecDeque<Transmit>,
    max: usize,
    stats: &mut WebRtcStats,
    transmit: Transmit,
) {
    if transmits.len() >= max {
        transmits.pop_front();
        stats.transmits_dropped += 1;
    }
    transmits.push_back(transmit);
}

fn mime_subtype(mime: &str) -> &str {
    mime.split_once('/').map_or(mime, |(_, sub)| sub)
}

fn codec_spec(codec: &RTCRtpCodec, payload_type: u8) -> CodecSpec {
    CodecSpec {
        name: mime_subtype(&codec.mime_type).to_owned(),
        payload_type,
        clock_rate: codec.clock_rate,
        channels: u8::try_from(codec.channels).unwrap_or(u8::MAX),
        fmtp: codec.sdp_fmtp_line.clone(),
    }
}

fn rtc_kind(kind: TrackKind) -> RtpCodecKind {
    match kind {
        TrackKind::Audio => RtpCodecKind::Audio,
        TrackKind::Video => RtpCodecKind::Video,
    }
}

fn rtc_codec(kind: TrackKind, spec: &CodecSpec) -> RTCRtpCodec {
    let prefix = match kind {
        TrackKind::Audio => "audio",
        TrackKind::Video => "video",
    };
    RTCRtpCodec {
        mime_type: format!("{prefix}/{}", spec.name),
        clock_rate: spec.clock_rate,
        channels: u16::from(spec.channels),
        sdp_fmtp_line: spec.fmtp.clone(),
        rtcp_feedback: Vec::new(),
    }
}
