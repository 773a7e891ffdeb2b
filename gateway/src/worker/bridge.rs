//! The WebRTC bridge, a part of the media [hub](super::hub): WHIP publishers and WHEP
//! subscribers are participants of the SFU core like any QUIC or WebTransport session, and all
//! of them share one UDP socket.
//!
//! ## Why it lives in the hub
//!
//! The bridge's [`Endpoint`] (ICE-lite, DTLS, SRTP for every WebRTC peer) and the SFU core are
//! both sans-IO state machines, and a packet crosses between them on every hop: a WebRTC
//! publisher's RTP comes out of the endpoint and goes straight into
//! [`Sfu::handle_rtp`](strait_media::sfu::Sfu::handle_rtp); each forwarded copy for a WebRTC
//! subscriber goes straight back into the endpoint to be encrypted. Owning both in the one hub
//! makes each crossing a function call — no queue, no lock, no second copy — and keeps room
//! state (who is a member, which SSRC is which track) in one place. The bridge owns no socket:
//! the hub's driver reads the UDP socket in its loop (after commands, which stay first), hands
//! every datagram already waiting to [`Hub::handle_udp`](super::hub::Hub::handle_udp), and sends
//! what [`Hub::poll_transmit`](super::hub::Hub::poll_transmit) gives with `try_send_to`, which
//! never waits: a full socket buffer drops the datagram and counts `udp_send_failed`. The price
//! is that SRTP and DTLS run on the hub's thread, next to QUIC forwarding.
//!
//! The bridge's methods act on the hub's room state through [`Core`]: the SFU core, the
//! members, and the messages for their sessions.
//!
//! ## How a peer maps to the core
//!
//! - A WHIP offer creates a peer and joins the room as a new participant (identity and name from
//!   the token). Each stream it sends is published as a one-layer track when its first RTP packet
//!   arrives (that is when `rtc` reports it, with its SSRC and codec); later packets of that SSRC
//!   are forwarded on the track's media id. A second stream on the same media section is not
//!   forwarded (`webrtc_unsupported_stream`) — unless the offer declared the section simulcast
//!   (`a=simulcast:send` with `a=rid` lines, read by
//!   [`simulcast_sections`](strait_media::webrtc::simulcast_sections)): then the section is one
//!   track with one layer per rid (lowest first, at most three), published with all of them
//!   when the first layer's stream arrives; each layer's SSRC, as it arrives, is forwarded on
//!   that layer's media id. Streams of rids beyond the third are not forwarded
//!   (`webrtc_unsupported_stream`). Leaving the room unpublishes the track with all its layers.
//! - A WHEP offer joins the room, subscribes to the named track (or to every track of the named
//!   participant, as many of each kind as the offer has sections for), and answers with one send
//!   track per subscription whose SSRC is the subscription's, so the core's rewritten packets go
//!   out as they are (payload type and header extensions mapped to the leg by the endpoint).
//! - Keyframe requests: the core's request for a WebRTC publisher's track (for one of its
//!   layers) becomes a PLI on that stream (that layer's SSRC); a WebRTC subscriber's PLI or FIR
//!   becomes the core's `request_keyframe` for the subscribed track, which reaches a QUIC
//!   publisher as `KeyframeRequest`. When a subscriber's DTLS completes, keyframes are requested
//!   for its tracks (anything sent before was lost).
//! - Bandwidth: a subscriber leg's estimate, from its TWCC feedback or REMB
//!   ([`WebRtcEvent::Estimate`]), is the core's estimate of that participant, so a WHEP or
//!   `/ws/rtc` subscriber's layers (and pauses) follow its link like a QUIC subscriber's. The core's
//!   probes get no padding on this path yet (see the hub).
//! - A peer leaves its room when its resource is deleted (`LeaveReason::Left`) or when its ICE
//!   fails (`LeaveReason::Timeout`). There is no grace period: a WebRTC peer cannot resume.
//!
//! ## Containment
//!
//! Offers, datagrams and publishers' RTP from the network reach `rtc`, a young stack. Each call
//! that feeds it network input runs under `contained`: a panic inside costs that offer
//! (refused), that datagram (dropped, counted `webrtc_rejected`) or that packet (dropped, counted
//! `webrtc_send_failed`) and a `warn` line — not the hub, which carries every room's media.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use strait_media::bwe::Estimate;
use strait_media::sfu::{self, LayerSpec, LeaveReason, ParticipantMeta, SfuError, TrackSpec};
use strait_media::webrtc::{
    Endpoint, ForwardedRtp, IceFragment, PeerId, RidLayer, SendTrack, SimulcastSection, Transmit,
    UfragChange, WebRtcConfig as EndpointConfig, WebRtcError, WebRtcEvent, WebRtcStats,
    ice_fragment_of_answer,
};
use strait_protocol::{ParticipantId, RoomId};
use tracing::{debug, warn};

use super::estimate_moved;
use super::hub::{BridgedRtp, Core};
use super::translate::{self, Principal};
use crate::auth::VerifiedToken;
use crate::config::WebRtcConfig;
use crate::metrics::{
    DropReason, FeedbackKind, FeedbackLabel, Metrics, NackLabel, NackResult, Transport,
    TransportLabel,
};

/// What a WHIP or WHEP offer asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OfferRole {
    /// WHIP: publish what the offer sends.
    Publish,
    /// WHEP: receive a track, or every track of a participant, named by its id.
    Subscribe(u64),
}

/// A WHIP or WHEP offer, checked by the HTTP surface (token, room, grants, size, SDP).
#[derive(Debug)]
pub(crate) struct WebRtcOffer {
    /// The new participant's id.
    pub participant: ParticipantId,
    /// The resource id its URL carries (unguessable).
    pub resource: String,
    /// The verified access token.
    pub token: VerifiedToken,
    /// The room to join.
    pub room: RoomId,
    /// Publish or subscribe.
    pub role: OfferRole,
    /// The offer.
    pub sdp: String,
}

/// A request (DELETE or PATCH) on an existing WHIP or WHEP resource, and who makes it.
#[derive(Debug)]
pub(crate) struct WebRtcResource {
    /// The room in the URL.
    pub room: RoomId,
    /// The resource id in the URL.
    pub resource: String,
    /// Whether the URL is a WHIP resource (else WHEP).
    pub publisher: bool,
    /// The identity of the token that asks.
    pub identity: String,
    /// Whether that token has the admin grant (it may delete anyone's resource).
    pub admin: bool,
}

/// What a WHIP or WHEP `PATCH` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IcePatched {
    /// Candidates only: nothing to do (answer `204 No Content`).
    Trickled {
        /// The session's entity tag (`ETag`).
        entity_tag: String,
    },
    /// ICE restarted (answer `200 OK` with the fragment).
    Restarted {
        /// The session's new entity tag.
        entity_tag: String,
        /// The bridge's new credentials and candidates, as `application/trickle-ice-sdpfrag`.
        fragment: String,
    },
}

/// Why the bridge refused an offer, a delete or a patch.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum BridgeError {
    /// The endpoint refused the offer (bad SDP, no usable media, peer limit…).
    #[error(transparent)]
    Offer(#[from] WebRtcError),
    /// The core refused the join or a subscription (room full, too many rooms…).
    #[error(transparent)]
    Room(#[from] SfuError),
    /// No track and no participant with this id in the room.
    #[error("no track or participant {0} in the room")]
    NoSuchTarget(u64),
    /// The WHEP offer has no section that can receive the target's tracks (of their kind, with
    /// their codec).
    #[error("the offer has no receiving section with the codec of the requested tracks")]
    NoMatchingSection,
    /// No WHIP/WHEP session at this URL (never was, or it has ended).
    #[error("no such session")]
    UnknownResource,
    /// The session belongs to another identity.
    #[error("the session belongs to another identity")]
    NotOwner,
    /// The bridge is not running.
    #[error("the webrtc bridge is disabled")]
    Disabled,
    /// A WebSocket participant sent an offer before joining a room.
    #[error("join a room before sending an offer")]
    NotJoined,
    /// The node could not place the room.
    #[error(transparent)]
    Placement(#[from] super::placement::PlacementError),
    /// The gateway is stopping.
    #[error("the gateway is shutting down")]
    ShuttingDown,
    /// A PATCH's `If-Match` names another entity tag than the session's.
    #[error("If-Match does not match the session's entity tag {0}")]
    EntityTagMismatch(String),
    /// The WebRTC stack failed on the offer (a panic, contained).
    #[error("the webrtc stack could not handle the offer")]
    StackFailed,
    /// The room's media worker is overloaded and sheds new peers.
    #[error("the gateway is overloaded: try again later")]
    Overloaded,
}

/// Runs `f`, which feeds network input to the WebRTC stack, and turns a panic inside it into
/// `None` (see the module docs).
fn contained<T>(what: &'static str, f: impl FnOnce() -> T) -> Option<T> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(value) => Some(value),
        Err(_) => {
            warn!(what, "the webrtc stack panicked; its input was dropped");
            None
        }
    }
}

/// The bridge's state in the hub: the WebRTC endpoint and what each peer is in the room.
pub(crate) struct Bridge {
    endpoint: Endpoint,
    /// The address every datagram is handed to the endpoint with: its first advertised address
    /// (`rtc` pairs candidates by it).
    local: SocketAddr,
    legs: HashMap<sfu::ParticipantId, Leg>,
    by_peer: HashMap<PeerId, sfu::ParticipantId>,
    by_resource: HashMap<String, sfu::ParticipantId>,
    /// Endpoint counters already added to the metrics.
    seen: WebRtcStats,
    /// The legs last added to the sessions gauge.
    legs_reported: i64,
    packets_in: Counter,
    bytes_in: Counter,
    packets_out: Counter,
    bytes_out: Counter,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("local", &self.local)
            .field("legs", &self.legs.len())
            .finish_non_exhaustive()
    }
}

struct Leg {
    peer: PeerId,
    /// The WHIP/WHEP resource id; `None` for a peer signaled over a WebSocket (its session
    /// ends it, not a DELETE).
    resource: Option<String>,
    room: RoomId,
    identity: String,
    /// What the peer sends, when it may publish.
    publisher: Option<Publisher>,
    /// What the peer receives, when it subscribes.
    subscriber: Option<Subscriber>,
    /// The peer's estimate last seen (see [`WebRtcEvent::Estimate`]).
    estimate: Option<Estimate>,
    /// Whether the core has the peer's estimate (it is withdrawn when the leg can no longer
    /// climb with it).
    estimate_given: bool,
}

#[derive(Default)]
struct Publisher {
    /// The peer's SSRC → the media id it is published on (`None`: not forwarded).
    streams: HashMap<u32, Option<sfu::MediaId>>,
    /// Media id → the peer's SSRC, for keyframe requests.
    ssrcs: HashMap<sfu::MediaId, u32>,
    /// Media sections that already carry a published stream.
    mids: HashSet<String>,
    next_media: u32,
    /// Simulcast sections of the peer's offers: mid → layers, lowest first.
    simulcast: HashMap<String, Vec<RidLayer>>,
    /// A simulcast section's published track: mid → its layers' media ids (`None`: the core
    /// refused it).
    layered: HashMap<String, Option<Vec<sfu::MediaId>>>,
}

struct Subscriber {
    /// Send track SSRC (the subscription's) → the track it carries.
    tracks: HashMap<u32, sfu::TrackId>,
    /// Receiving sections (audio, video) of the last offer answered, so that a new offer's
    /// extra sections are known (sections are never removed from an offer, only stopped).
    sections: (usize, usize),
}

/// The answer to a WebSocket participant's offer: the SDP, and the subscriptions made for it
/// (one per new track it receives, in section order of each kind).
#[derive(Debug)]
pub(crate) struct SignalingAnswer {
    pub(crate) sdp: String,
    pub(crate) subscriptions: Vec<sfu::SubscriptionInfo>,
}

impl Bridge {
    /// A bridge for the socket bound at `bound`, advertising `config.public_ips` (or the bound
    /// address) with the bound port. `wall_clock` is an instant and the wall-clock time at it,
    /// for the NTP time of sender reports.
    pub(crate) fn new(
        config: &WebRtcConfig,
        bound: SocketAddr,
        metrics: &Metrics,
        wall_clock: (Instant, std::time::SystemTime),
    ) -> Bridge {
        let local_addrs: Vec<SocketAddr> = if config.public_ips.is_empty() {
            vec![bound]
        } else {
            config
                .public_ips
                .iter()
                .map(|ip| SocketAddr::new(*ip, bound.port()))
                .collect()
        };
        let endpoint = Endpoint::new(EndpointConfig {
            local_addrs: local_addrs.clone(),
            max_sdp_len: config.max_sdp_bytes,
            max_peers: config.max_peers,
            ice_disconnected_timeout: (config.ice_timeout / 5).max(Duration::from_millis(200)),
            ice_failed_timeout: config.ice_timeout,
            nack_cache_packets: config.nack_cache_packets,
            wall_clock: Some(wall_clock),
            ..EndpointConfig::default()
        });
        let label = TransportLabel {
            transport: Transport::Webrtc,
        };
        Bridge {
            endpoint,
            local: local_addrs[0],
            legs: HashMap::new(),
            by_peer: HashMap::new(),
            by_resource: HashMap::new(),
            seen: WebRtcStats::default(),
            legs_reported: 0,
            packets_in: metrics.packets_in.get_or_create(&label).clone(),
            bytes_in: metrics.bytes_in.get_or_create(&label).clone(),
            packets_out: metrics.packets_out.get_or_create(&label).clone(),
            bytes_out: metrics.bytes_out.get_or_create(&label).clone(),
        }
    }

    /// Writes a forwarded packet to a WebRTC subscriber's leg (the endpoint keeps the
    /// publisher's packet in the stream's NACK cache).
    pub(crate) fn send(
        &mut self,
        metrics: &Metrics,
        peer: PeerId,
        fwd: &sfu::Forward<'_>,
        now: Instant,
    ) {
        let forwarded = ForwardedRtp {
            track: fwd.track.0,
            layer: fwd.layer,
            original: fwd.original(),
            ssrc: fwd.ssrc(),
            sequence_number: fwd.sequence_number(),
            timestamp: fwd.timestamp(),
        };
        // The packet is a publisher's, from the network: the endpoint parses its header.
        let endpoint = &mut self.endpoint;
        let sent = contained("rtp", || endpoint.send_forwarded(peer, &forwarded, now))
            .unwrap_or(Err(WebRtcError::MalformedRtp));
        match sent {
            Ok(()) => {
                self.packets_out.inc();
                self.bytes_out.inc_by(fwd.len() as u64);
            }
            // ICE and DTLS not done yet: nothing can reach the subscriber.
            Err(WebRtcError::NotConnected(_)) => metrics.count_drop(DropReason::SubscriberAway),
            Err(_) => metrics.count_drop(DropReason::WebrtcSendFailed),
        }
    }
}

fn offers_codec(sdp: &str, kind: sfu::TrackKind, name: &str) -> bool {
    let wanted = match kind {
        sfu::TrackKind::Audio => "audio",
        sfu::TrackKind::Video => "video",
    };
    // (of the wanted kind and live, can receive, lists the codec)
    let mut current: Option<(bool, bool)> = None;
    let mut found = false;
    let mut finish = |section: Option<(bool, bool)>| {
        found |= section == Some((true, true));
    };
    for line in sdp.lines().map(str::trim_end) {
        if let Some(rest) = line.strip_prefix("m=") {
            finish(current.take());
            let mut fields = rest.split_whitespace();
            let (kind, port) = (fields.next(), fields.next());
            if kind == Some(wanted) && port != Some("0") {
                current = Some((true, false));
            }
        } else if let Some((receives, lists)) = current.as_mut() {
            if line == "a=sendonly" || line == "a=inactive" {
                *receives = false;
            } else if let Some((_, codec)) = line
                .strip_prefix("a=rtpmap:")
                .and_then(|map| map.split_once(' '))
                && codec
                    .split('/')
                    .next()
                    .is_some_and(|c| c.eq_ignore_ascii_case(name))
            {
                *lists = true;
            }
        }
    }
    finish(current);
    found
}

/// How many sections of each kind (audio, video) of an offer can receive media: a WHEP offer
/// gets at most that many send tracks of each kind. Only counts; the endpoint parses the offer.
fn receiving_sections(sdp: &str) -> (usize, usize) {
    let (mut audio, mut video) = (0, 0);
    let mut current: Option<(bool, bool)> = None; // (is audio, can receive)
    let mut finish = |section: Option<(bool, bool)>| {
        if let Some((is_audio, receives)) = section
            && receives
        {
            if is_audio {
                audio += 1;
            } else {
                video += 1;
            }
        }
    };
    for line in sdp.lines() {
        if let Some(rest) = line.strip_prefix("m=") {
            finish(current.take());
            let mut fields = rest.split_whitespace();
            let kind = fields.next().unwrap_or("");
            let port = fields.next().unwrap_or("0");
            if (kind == "audio" || kind == "video") && port != "0" {
                current = Some((kind == "audio", true));
            }
        } else if let Some((_, receives)) = current.as_mut()
            && (line == "a=sendonly" || line == "a=inactive")
        {
            *receives = false;
        }
    }
    finish(current);
    (audio, video)
}

fn gauge(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Bridge {
    /// The next local ICE ufrag the endpoint took or released.
    pub(crate) fn poll_ufrag_change(&mut self) -> Option<UfragChange> {
        self.endpoint.poll_ufrag_change()
    }

    /// Refuses a new peer when the node has `webrtc.max_peers` (every worker's bridge counts:
    /// the gauge is their sum, brought up to date after each turn of every worker's loop, so
    /// offers arriving at once on several workers may pass it by a few; each worker's endpoint
    /// holds at most `max_peers` whatever happens).
    fn check_node_peers(&self, metrics: &Metrics) -> Result<(), BridgeError> {
        let max = self.endpoint.config().max_peers;
        if usize::try_from(metrics.webrtc_peers.get()).unwrap_or(0) >= max {
            return Err(WebRtcError::TooManyPeers(max).into());
        }
        Ok(())
    }

    /// Answers a WHIP or WHEP offer: a new peer and a new participant of the room.
    pub(crate) fn offer(
        &mut self,
        core: &mut Core,
        offer: WebRtcOffer,
        now: Instant,
    ) -> Result<String, BridgeError> {
        let WebRtcOffer {
            participant,
            resource,
            token,
            room,
            role,
            sdp,
        } = offer;
        self.check_node_peers(&core.metrics)?;
        let me = translate::participant_in(participant);
        let meta = ParticipantMeta {
            identity: token.identity.clone(),
            name: token.name.clone().unwrap_or_default(),
        };
        let (peer, answer, publisher, subscriber) = match role {
            OfferRole::Publish => {
                let max_sdp = self.endpoint.config().max_sdp_len;
                let sections = strait_media::webrtc::simulcast_sections(&sdp, max_sdp)?;
                let endpoint = &mut self.endpoint;
                let (peer, answer) = contained("offer", || endpoint.accept_offer(&sdp, now))
                    .ok_or(BridgeError::StackFailed)??;
                if let Err(e) = core.sfu.join(me, room.as_str(), meta, now) {
                    let _ = self.endpoint.close(peer);
                    return Err(e.into());
                }
                let mut publisher = Publisher::default();
                note_simulcast(&mut publisher, sections);
                (peer, answer, Some(publisher), None)
            }
            OfferRole::Subscribe(target) => {
                let snapshot = core.sfu.join(me, room.as_str(), meta, now)?;
                let result = subscribe_target(
                    &mut core.sfu,
                    &mut self.endpoint,
                    me,
                    &snapshot,
                    target,
                    &sdp,
                    now,
                );
                match result {
                    Ok((peer, answer, tracks)) => {
                        let subscriber = Subscriber {
                            tracks,
                            sections: receiving_sections(&sdp),
                        };
                        (peer, answer, None, Some(subscriber))
                    }
                    Err(e) => {
                        let _ = core.sfu.leave(me, LeaveReason::Left, now);
                        return Err(e);
                    }
                }
            }
        };
        let identity = token.identity.clone();
        core.add_webrtc_member(
            me,
            Principal {
                token,
                room: Some(room.clone()),
            },
            peer,
        );
        self.by_peer.insert(peer, me);
        self.by_resource.insert(resource.clone(), me);
        self.legs.insert(
            me,
            Leg {
                peer,
                resource: Some(resource),
                room,
                identity,
                publisher,
                subscriber,
                estimate: None,
                estimate_given: false,
            },
        );
        debug!(participant = me.0, peer = %peer, "webrtc participant joined");
        Ok(answer)
    }

    /// Answers the offer of a participant signaled over a WebSocket (already joined): its peer
    /// publishes what the offer sends (with the publish grant) and receives tracks of the room
    /// present now, one per receiving section of their kind (with the subscribe grant). A later
    /// offer of the same peer renegotiates: tracks unpublished since are no longer sent, and the
    /// new receiving sections get tracks not yet received.
    pub(crate) fn signaling_offer(
        &mut self,
        core: &mut Core,
        me: sfu::ParticipantId,
        sdp: &str,
        now: Instant,
    ) -> Result<SignalingAnswer, BridgeError> {
        let principal = core.principal(me).ok_or(BridgeError::NotJoined)?;
        let room = principal.room.clone().ok_or(BridgeError::NotJoined)?;
        let grants = principal.token.grants;
        let identity = principal.token.identity.clone();
        // Refuse a bad offer before subscribing to anything for it.
        let max_sdp = self.endpoint.config().max_sdp_len;
        strait_media::webrtc::check_offer(sdp, max_sdp)?;
        let simulcast = strait_media::webrtc::simulcast_sections(sdp, max_sdp)?;
        let snapshot = core.sfu.room_snapshot(me).ok_or(BridgeError::NotJoined)?;

        if !self.legs.contains_key(&me) {
            self.check_node_peers(&core.metrics)?;
        }
        // What the peer already has (a renegotiation), less what went away.
        let endpoint = &mut self.endpoint;
        let existing = self.legs.get_mut(&me).map(|leg| {
            let peer = leg.peer;
            let sub = leg.subscriber.get_or_insert_with(|| Subscriber {
                tracks: HashMap::new(),
                sections: (0, 0),
            });
            let gone: Vec<u32> = sub
                .tracks
                .iter()
                .filter(|(_, t)| !snapshot.tracks.iter().any(|info| info.track == **t))
                .map(|(&ssrc, _)| ssrc)
                .collect();
            for ssrc in gone {
                sub.tracks.remove(&ssrc);
                let _ = endpoint.remove_send_track(peer, ssrc);
            }
            (
                peer,
                sub.sections,
                sub.tracks.values().copied().collect::<HashSet<_>>(),
            )
        });
        let (before, have) = match &existing {
            Some((_, sections, have)) => (*sections, have.clone()),
            None => ((0, 0), HashSet::new()),
        };
        let sections = receiving_sections(sdp);
        let mut sends = Vec::new();
        let mut tracks = HashMap::new();
        let mut subscriptions = Vec::new();
        if grants.subscribe {
            let mut audio_left = sections.0.saturating_sub(before.0);
            let mut video_left = sections.1.saturating_sub(before.1);
            for track in snapshot.tracks.iter().filter(|t| !have.contains(&t.track)) {
                if !offers_codec(sdp, track.kind, &track.codec.name) {
                    continue;
                }
                let left = match track.kind {
                    sfu::TrackKind::Audio => &mut audio_left,
                    sfu::TrackKind::Video => &mut video_left,
                };
                if *left == 0 {
                    continue;
                }
                let info = match core.sfu.subscribe(me, track.track, None, now) {
                    Ok(info) => info,
                    Err(e) => {
                        debug!(participant = me.0, error = %e, "webrtc subscription refused");
                        continue;
                    }
                };
                *left -= 1;
                sends.push(SendTrack {
                    kind: track.kind,
                    codec: track.codec.clone(),
                    ssrc: info.ssrc,
                });
                tracks.insert(info.ssrc, track.track);
                subscriptions.push(info);
            }
        }
        let endpoint = &mut self.endpoint;
        let accepted = contained("offer", || match existing {
            Some((peer, ..)) => endpoint
                .renegotiate(peer, sdp, &sends, now)
                .map(|answer| (peer, answer)),
            None => endpoint.accept_offer_with_tracks(sdp, &sends, now),
        })
        .ok_or(BridgeError::StackFailed)
        .and_then(|r| r.map_err(BridgeError::from));
        let (peer, answer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                for track in tracks.values() {
                    let _ = core.sfu.unsubscribe(me, *track, now);
                }
                return Err(e);
            }
        };
        match self.legs.get_mut(&me) {
            Some(leg) => {
                if let Some(publisher) = leg.publisher.as_mut() {
                    note_simulcast(publisher, simulcast);
                }
                if let Some(sub) = leg.subscriber.as_mut() {
                    sub.tracks
                        .extend(tracks.iter().map(|(&ssrc, &t)| (ssrc, t)));
                    sub.sections = sections;
                }
                // The peer is connected already: the new tracks start at a keyframe.
                for track in tracks.values() {
                    let _ = core.sfu.request_keyframe(me, *track, now);
                }
            }
            None => {
                self.by_peer.insert(peer, me);
                self.legs.insert(
                    me,
                    Leg {
                        peer,
                        resource: None,
                        room,
                        identity,
                        publisher: grants.publish.then(|| {
                            let mut publisher = Publisher::default();
                            note_simulcast(&mut publisher, simulcast);
                            publisher
                        }),
                        subscriber: Some(Subscriber { tracks, sections }),
                        estimate: None,
                        estimate_given: false,
                    },
                );
                core.set_webrtc_peer(me, peer);
            }
        }
        debug!(participant = me.0, peer = %peer, "websocket participant negotiated");
        Ok(SignalingAnswer {
            sdp: answer,
            subscriptions,
        })
    }

    /// Whether the participant has a WebRTC peer.
    pub(crate) fn has_leg(&self, participant: sfu::ParticipantId) -> bool {
        self.legs.contains_key(&participant)
    }

    /// The participant of a WHIP or WHEP resource, if the request may act on it.
    pub(crate) fn owned_leg(
        &self,
        target: &WebRtcResource,
    ) -> Result<sfu::ParticipantId, BridgeError> {
        let participant = *self
            .by_resource
            .get(&target.resource)
            .ok_or(BridgeError::UnknownResource)?;
        let leg = self
            .legs
            .get(&participant)
            .ok_or(BridgeError::UnknownResource)?;
        let is_publisher = leg.publisher.is_some();
        if leg.room != target.room || is_publisher != target.publisher {
            return Err(BridgeError::UnknownResource);
        }
        if leg.identity != target.identity && !target.admin {
            return Err(BridgeError::NotOwner);
        }
        Ok(participant)
    }

    /// A WHIP or WHEP `PATCH` (RFC 9725 §4.3): trickled candidates are acknowledged (an ICE-lite
    /// bridge learns the peer's addresses from its checks), new credentials restart ICE. The
    /// entity tag is the bridge's current ICE ufrag, so it changes at each restart.
    pub(crate) fn patch(
        &mut self,
        core: &mut Core,
        target: &WebRtcResource,
        fragment: &IceFragment,
        if_match: Option<&str>,
        now: Instant,
    ) -> Result<IcePatched, BridgeError> {
        let participant = self.owned_leg(target)?;
        let peer = self
            .legs
            .get(&participant)
            .map(|leg| leg.peer)
            .ok_or(BridgeError::UnknownResource)?;
        let entity_tag = |ufrag: &str| format!("\"{ufrag}\"");
        let current = entity_tag(
            self.endpoint
                .local_ufrag(peer)
                .ok_or(BridgeError::UnknownResource)?,
        );
        if let Some(tag) = if_match.map(str::trim)
            && tag != "*"
            && tag != current
        {
            return Err(BridgeError::EntityTagMismatch(current));
        }
        let Some(credentials) = &fragment.credentials else {
            return Ok(IcePatched::Trickled {
                entity_tag: current,
            });
        };
        let endpoint = &mut self.endpoint;
        let restarted = contained("ice restart", || {
            endpoint.restart_ice(peer, credentials, now)
        })
        .ok_or(BridgeError::StackFailed)
        .and_then(|r| r.map_err(BridgeError::from));
        match restarted {
            Ok(answer) => {
                let ufrag = self.endpoint.local_ufrag(peer).unwrap_or_default();
                debug!(participant = participant.0, peer = %peer, "whip/whep ice restart");
                Ok(IcePatched::Restarted {
                    entity_tag: entity_tag(ufrag),
                    fragment: ice_fragment_of_answer(&answer),
                })
            }
            Err(e) => {
                // The peer may be half-restarted: it leaves rather than linger broken.
                self.drop_leg(core, participant, LeaveReason::Left, now);
                Err(e)
            }
        }
    }

    /// Removes a WebRTC participant: closes its peer (if still there) and leaves its room.
    pub(crate) fn drop_leg(
        &mut self,
        core: &mut Core,
        participant: sfu::ParticipantId,
        reason: LeaveReason,
        now: Instant,
    ) {
        let Some(leg) = self.legs.remove(&participant) else {
            return;
        };
        self.by_peer.remove(&leg.peer);
        if let Some(resource) = &leg.resource {
            self.by_resource.remove(resource);
        }
        // Already gone when its ICE failed; the Disconnected event that follows a close is
        // ignored (the peer is unmapped above).
        let _ = self.endpoint.close(leg.peer);
        if leg.resource.is_none() && matches!(reason, LeaveReason::Timeout) {
            // A WebSocket participant hears why before its session closes.
            core.tell(participant, translate::webrtc_lost());
        }
        core.remove_member(participant);
        let _ = core.sfu.leave(participant, reason, now);
        debug!(
            participant = participant.0,
            ?reason,
            "webrtc participant left"
        );
    }

    /// Feeds a datagram of the WebRTC socket from `from` to the endpoint.
    pub(crate) fn handle_datagram(
        &mut self,
        metrics: &Metrics,
        from: SocketAddr,
        bytes: &[u8],
        now: Instant,
    ) {
        let local = self.local;
        let endpoint = &mut self.endpoint;
        let handled = contained("datagram", || {
            endpoint.handle_datagram(now, local, from, bytes);
        });
        if handled.is_none() {
            metrics.count_drop(DropReason::WebrtcRejected);
        }
    }

    /// Runs the endpoint's timers.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        let endpoint = &mut self.endpoint;
        let _ = contained("timeout", || endpoint.handle_timeout(now));
    }

    /// When the endpoint needs its timers run.
    pub(crate) fn poll_timeout(&mut self) -> Option<Instant> {
        self.endpoint.poll_timeout()
    }

    /// The endpoint's next event.
    pub(crate) fn poll_event(&mut self) -> Option<WebRtcEvent> {
        self.endpoint.poll_event()
    }

    /// The endpoint's next datagram for the socket.
    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.endpoint.poll_transmit()
    }

    /// Handles one endpoint event; a publisher's RTP packet comes back for the hub to forward.
    pub(crate) fn handle_event(
        &mut self,
        core: &mut Core,
        event: WebRtcEvent,
        now: Instant,
    ) -> Option<BridgedRtp> {
        match event {
            WebRtcEvent::Connected(peer) => {
                let participant = *self.by_peer.get(&peer)?;
                if let Some(sub) = self
                    .legs
                    .get(&participant)
                    .and_then(|l| l.subscriber.as_ref())
                {
                    for &track in sub.tracks.values() {
                        let _ = core.sfu.request_keyframe(participant, track, now);
                    }
                }
            }
            WebRtcEvent::Track {
                peer,
                mid,
                rid,
                ssrc,
                kind,
                codec,
                ..
            } => {
                let participant = *self.by_peer.get(&peer)?;
                let publisher = self
                    .legs
                    .get_mut(&participant)
                    .and_then(|l| l.publisher.as_mut())?;
                if publisher.streams.contains_key(&ssrc) {
                    return None;
                }
                if let Some(section) = mid
                    .as_ref()
                    .filter(|m| publisher.simulcast.contains_key(*m))
                {
                    let stream = SimulcastStream {
                        mid: section,
                        rid: rid.as_deref(),
                        ssrc,
                        kind,
                    };
                    publish_layer(&mut core.sfu, publisher, participant, stream, codec, now);
                    return None;
                }
                let mid_taken = mid.as_ref().is_some_and(|m| publisher.mids.contains(m));
                let Some(codec) = codec.filter(|_| !mid_taken) else {
                    publisher.streams.insert(ssrc, None);
                    return None;
                };
                publisher.next_media += 1;
                let media = sfu::MediaId(publisher.next_media);
                let spec = TrackSpec {
                    kind,
                    codec,
                    source: match kind {
                        sfu::TrackKind::Audio => "microphone",
                        sfu::TrackKind::Video => "camera",
                    }
                    .into(),
                    layers: vec![LayerSpec {
                        media,
                        max_bitrate: 0,
                        width: 0,
                        height: 0,
                    }],
                    muted: false,
                };
                match core.sfu.publish(participant, spec, now) {
                    Ok(track) => {
                        debug!(participant = participant.0, %track, ssrc, "webrtc track published");
                        publisher.streams.insert(ssrc, Some(media));
                        publisher.ssrcs.insert(media, ssrc);
                        if let Some(mid) = mid {
                            publisher.mids.insert(mid);
                        }
                    }
                    Err(e) => {
                        debug!(participant = participant.0, error = %e, "webrtc track refused");
                        publisher.streams.insert(ssrc, None);
                    }
                }
            }
            WebRtcEvent::Rtp { peer, ssrc, packet } => {
                let participant = *self.by_peer.get(&peer)?;
                let media = self
                    .legs
                    .get(&participant)
                    .and_then(|l| l.publisher.as_ref())
                    .and_then(|p| p.streams.get(&ssrc).copied().flatten());
                let Some(media) = media else {
                    core.metrics.count_drop(DropReason::WebrtcUnsupportedStream);
                    return None;
                };
                self.packets_in.inc();
                self.bytes_in.inc_by(packet.len() as u64);
                return Some(BridgedRtp {
                    participant,
                    media,
                    packet,
                });
            }
            WebRtcEvent::KeyframeRequest { peer, ssrc } => {
                let participant = *self.by_peer.get(&peer)?;
                let track = self
                    .legs
                    .get(&participant)
                    .and_then(|l| l.subscriber.as_ref())
                    .and_then(|s| s.tracks.get(&ssrc).copied());
                if let Some(track) = track {
                    core.metrics.webrtc_keyframe_requests_in.inc();
                    let _ = core.sfu.request_keyframe(participant, track, now);
                }
            }
            WebRtcEvent::Estimate { peer, estimate } => {
                // The leg's estimate from its TWCC feedback (or REMB) goes to the allocation
                // while the leg can climb again after a fall: REMB rises by itself, TWCC only as
                // the leg proves more, which needs a probe's padding (RTX padding, when the leg
                // negotiated RTX and transport-cc and its receiver reports padding). Without
                // that, a video the allocation paused or lowered there could never come back:
                // such a leg's layers follow its caps (an estimate given before is withdrawn).
                let participant = *self.by_peer.get(&peer)?;
                let usable = self.endpoint.estimate_can_climb(peer);
                let leg = self.legs.get_mut(&participant)?;
                // Only a subscriber's estimate says anything about what it receives.
                leg.subscriber.as_ref()?;
                if !usable {
                    if leg.estimate_given {
                        leg.estimate_given = false;
                        let _ = core.sfu.clear_estimate(participant, now);
                    }
                } else if estimate_moved(leg.estimate, estimate) || !leg.estimate_given {
                    leg.estimate_given = true;
                    let _ = core.sfu.set_estimate(participant, estimate, now);
                }
                if estimate_moved(leg.estimate, estimate) {
                    leg.estimate = Some(estimate);
                    core.metrics
                        .allocation
                        .observe_estimate(Transport::Webrtc, estimate.available_bps);
                }
            }
            WebRtcEvent::Disconnected(peer) => {
                if let Some(participant) = self.by_peer.remove(&peer) {
                    self.drop_leg(core, participant, LeaveReason::Timeout, now);
                }
            }
            _ => {}
        }
        None
    }

    /// Sends the core's keyframe request to a WebRTC publisher as a PLI. Returns `false` when
    /// `to` is not a WebRTC participant.
    pub(crate) fn request_keyframe(
        &mut self,
        metrics: &Metrics,
        to: sfu::ParticipantId,
        media: sfu::MediaId,
        now: Instant,
    ) -> bool {
        let Some(leg) = self.legs.get(&to) else {
            return false;
        };
        if let Some(p) = &leg.publisher
            && let Some(&ssrc) = p.ssrcs.get(&media)
            && self.endpoint.request_keyframe(leg.peer, ssrc, now).is_ok()
        {
            metrics.webrtc_keyframe_requests_out.inc();
        }
        true
    }

    /// Whether `participant` is a WebRTC subscriber whose link a probe can pad (see
    /// [`Endpoint::can_pad`]).
    pub(crate) fn can_pad(&mut self, participant: sfu::ParticipantId) -> bool {
        let Some(leg) = self.legs.get(&participant) else {
            return false;
        };
        leg.subscriber.is_some() && self.endpoint.can_pad(leg.peer)
    }

    /// Sends about `bytes` of a probe's padding to `participant`'s WebRTC leg; returns what
    /// went out (see [`Endpoint::send_padding`]).
    pub(crate) fn send_padding(
        &mut self,
        participant: sfu::ParticipantId,
        bytes: usize,
        now: Instant,
    ) -> usize {
        let Some(leg) = self.legs.get(&participant) else {
            return 0;
        };
        let peer = leg.peer;
        let endpoint = &mut self.endpoint;
        contained("padding", || endpoint.send_padding(peer, bytes, now)).unwrap_or(0)
    }

    /// Brings the bridge's gauges and drop counters up to date.
    pub(crate) fn update_gauges(&mut self, metrics: &Metrics) {
        let stats = self.endpoint.stats();
        let seen = std::mem::replace(&mut self.seen, stats);
        for (reason, now, before) in [
            (
                DropReason::WebrtcUnknownUfrag,
                stats.dropped.unknown_ufrag,
                seen.dropped.unknown_ufrag,
            ),
            (
                DropReason::WebrtcUnknownSource,
                stats.dropped.unknown_source,
                seen.dropped.unknown_source,
            ),
            (
                DropReason::WebrtcUnverifiedCheck,
                stats.dropped.unverified_check,
                seen.dropped.unverified_check,
            ),
            (
                DropReason::WebrtcRejected,
                stats.dropped.rejected_by_peer,
                seen.dropped.rejected_by_peer,
            ),
            (
                DropReason::UdpSendFailed,
                stats.transmits_dropped,
                seen.transmits_dropped,
            ),
        ] {
            if now > before {
                metrics.count_drops(reason, now - before);
            }
        }
        metrics
            .webrtc_datagrams_out
            .inc_by(stats.datagrams_out - seen.datagrams_out);
        metrics
            .webrtc_addresses
            .inc_by(gauge(stats.addresses) - gauge(seen.addresses));
        for (result, now, before) in [
            (NackResult::Granted, stats.nacks.granted, seen.nacks.granted),
            (
                NackResult::Duplicate,
                stats.nacks.duplicate,
                seen.nacks.duplicate,
            ),
            (
                NackResult::OverBudget,
                stats.nacks.over_budget,
                seen.nacks.over_budget,
            ),
            (
                NackResult::NotCached,
                stats.nacks.not_cached,
                seen.nacks.not_cached,
            ),
        ] {
            if now > before {
                metrics
                    .webrtc_nacks
                    .get_or_create(&NackLabel { result })
                    .inc_by(now - before);
            }
        }
        for (kind, now, before) in [
            (FeedbackKind::Nack, stats.feedback.nack, seen.feedback.nack),
            (FeedbackKind::Pli, stats.feedback.pli, seen.feedback.pli),
            (FeedbackKind::Fir, stats.feedback.fir, seen.feedback.fir),
            (FeedbackKind::Twcc, stats.feedback.twcc, seen.feedback.twcc),
            (FeedbackKind::Remb, stats.feedback.remb, seen.feedback.remb),
        ] {
            if now > before {
                metrics
                    .webrtc_feedback
                    .get_or_create(&FeedbackLabel { kind })
                    .inc_by(now - before);
            }
        }
        metrics
            .webrtc_sender_reports
            .inc_by(stats.sender_reports - seen.sender_reports);
        metrics
            .allocation
            .padding_datagrams
            .inc_by(stats.padding_packets - seen.padding_packets);
        metrics
            .allocation
            .padding_bytes
            .inc_by(stats.padding_bytes - seen.padding_bytes);
        metrics
            .webrtc_padding_unreported
            .inc_by(stats.padding_unreported - seen.padding_unreported);
        // Every worker's bridge adds its own change: the gauges are the node's sums.
        metrics
            .webrtc_peers
            .inc_by(gauge(stats.peers) - gauge(seen.peers));
        let legs = gauge(self.legs.len());
        metrics
            .sessions
            .get_or_create(&TransportLabel {
                transport: Transport::Webrtc,
            })
            .inc_by(legs - self.legs_reported);
        self.legs_reported = legs;
    }

    /// Closes every peer (DTLS close_notify is queued) at shutdown.
    pub(crate) fn close_all(&mut self, core: &mut Core, now: Instant) {
        let participants: Vec<sfu::ParticipantId> = self.legs.keys().copied().collect();
        for participant in participants {
            self.drop_leg(core, participant, LeaveReason::Shutdown, now);
        }
    }
}

/// A stream of a simulcast section, as its `Track` event names it.
#[derive(Clone, Copy)]
struct SimulcastStream<'a> {
    mid: &'a str,
    rid: Option<&'a str>,
    ssrc: u32,
    kind: sfu::TrackKind,
}

/// Notes the simulcast sections of an offer the publisher's peer answered. A section not yet
/// published takes the offer's layers; a published one keeps those it was published with.
fn note_simulcast(publisher: &mut Publisher, sections: Vec<SimulcastSection>) {
    for section in sections {
        if !section.ignored.is_empty() {
            debug!(
                mid = section.mid,
                ignored = ?section.ignored,
                "simulcast rids beyond the layer limit are not forwarded"
            );
        }
        if publisher.layered.contains_key(&section.mid) || publisher.mids.contains(&section.mid) {
            continue;
        }
        publisher.simulcast.insert(section.mid, section.layers);
    }
}

/// Maps a stream of a simulcast section to its layer: the section's track is published, with
/// every layer its offer names, when the first of them arrives (and has a codec); each later
/// layer's SSRC maps to its own media id. A rid that is not one of the section's layers (beyond
/// the limit, or none) is not forwarded.
fn publish_layer(
    sfu: &mut sfu::Sfu,
    publisher: &mut Publisher,
    participant: sfu::ParticipantId,
    stream: SimulcastStream<'_>,
    codec: Option<sfu::CodecSpec>,
    now: Instant,
) {
    let Some(layers) = publisher.simulcast.get(stream.mid) else {
        return;
    };
    let index = stream
        .rid
        .and_then(|rid| layers.iter().position(|l| l.rid == rid));
    let media = match (index, publisher.layered.get(stream.mid)) {
        (None, _) => None,
        (Some(index), Some(published)) => published.as_ref().and_then(|m| m.get(index).copied()),
        (Some(index), None) => codec.and_then(|codec| {
            let first = publisher.next_media + 1;
            let medias: Vec<sfu::MediaId> = (0..layers.len() as u32)
                .map(|k| sfu::MediaId(first + k))
                .collect();
            publisher.next_media += layers.len() as u32;
            let spec = TrackSpec {
                kind: stream.kind,
                codec,
                source: "camera".into(),
                layers: layers
                    .iter()
                    .zip(&medias)
                    .map(|(layer, &media)| LayerSpec {
                        media,
                        max_bitrate: layer.max_bitrate,
                        width: layer.width,
                        height: layer.height,
                    })
                    .collect(),
                muted: false,
            };
            let published = match sfu.publish(participant, spec, now) {
                Ok(track) => {
                    debug!(participant = participant.0, %track, layers = medias.len(), "webrtc simulcast track published");
                    Some(medias)
                }
                Err(e) => {
                    debug!(participant = participant.0, error = %e, "webrtc simulcast track refused");
                    None
                }
            };
            publisher.mids.insert(stream.mid.to_owned());
            publisher
                .layered
                .insert(stream.mid.to_owned(), published.clone());
            published.and_then(|m| m.get(index).copied())
        }),
    };
    publisher.streams.insert(stream.ssrc, media);
    if let Some(media) = media {
        publisher.ssrcs.insert(media, stream.ssrc);
    }
}

/// Subscribes a WHEP participant that just joined to its target and answers its offer.
fn subscribe_target(
    sfu: &mut sfu::Sfu,
    endpoint: &mut Endpoint,
    me: sfu::ParticipantId,
    snapshot: &sfu::RoomSnapshot,
    target: u64,
    sdp: &str,
    now: Instant,
) -> Result<(PeerId, String, HashMap<u32, sfu::TrackId>), BridgeError> {
    let by_track: Vec<&sfu::TrackInfo> = snapshot
        .tracks
        .iter()
        .filter(|t| t.track.0 == target)
        .collect();
    let wanted = if by_track.is_empty() {
        snapshot
            .tracks
            .iter()
            .filter(|t| t.participant.0 == target)
            .collect()
    } else {
        by_track
    };
    if wanted.is_empty() {
        return Err(BridgeError::NoSuchTarget(target));
    }
    let (mut audio_left, mut video_left) = receiving_sections(sdp);
    let mut sends = Vec::new();
    let mut tracks = HashMap::new();
    for track in wanted {
        if !offers_codec(sdp, track.kind, &track.codec.name) {
            continue;
        }
        let left = match track.kind {
            sfu::TrackKind::Audio => &mut audio_left,
            sfu::TrackKind::Video => &mut video_left,
        };
        if *left == 0 {
            continue;
        }
        *left -= 1;
        let info = sfu.subscribe(me, track.track, None, now)?;
        sends.push(SendTrack {
            kind: track.kind,
            codec: track.codec.clone(),
            ssrc: info.ssrc,
        });
        tracks.insert(info.ssrc, track.track);
    }
    if sends.is_empty() {
        return Err(BridgeError::NoMatchingSection);
    }
    let (peer, answer) = contained("offer", || {
        endpoint.accept_offer_with_tracks(sdp, &sends, now)
    })
    .ok_or(BridgeError::StackFailed)??;
    Ok((peer, answer, tracks))
}

#[cfg(test)]
mod tests {
    use super::{Publisher, contained, note_simulcast, offers_codec, receiving_sections};
    use strait_media::webrtc::{RidLayer, SimulcastSection};

    fn section(mid: &str, rids: &[&str]) -> SimulcastSection {
        SimulcastSection {
            mid: mid.into(),
            layers: rids
                .iter()
                .map(|rid| RidLayer {
                    rid: (*rid).into(),
                    max_bitrate: 0,
                    width: 0,
                    height: 0,
                    paused: false,
                })
                .collect(),
            ignored: Vec::new(),
        }
    }

    fn rids(publisher: &Publisher, mid: &str) -> Vec<String> {
        publisher.simulcast[mid]
            .iter()
            .map(|l| l.rid.clone())
            .collect()
    }

    #[test]
    fn a_renegotiation_changes_only_sections_not_yet_published() {
        let mut publisher = Publisher::default();
        note_simulcast(
            &mut publisher,
            vec![section("0", &["q", "h"]), section("1", &["a"])],
        );
        // Section 0 is published with its two layers; section 2 is new.
        publisher.layered.insert("0".into(), None);
        publisher.mids.insert("0".into());
        note_simulcast(
            &mut publisher,
            vec![
                section("0", &["q", "h", "f"]),
                section("1", &["a", "b"]),
                section("2", &["x", "y"]),
            ],
        );
        assert_eq!(rids(&publisher, "0"), ["q", "h"]);
        assert_eq!(rids(&publisher, "1"), ["a", "b"]);
        assert_eq!(rids(&publisher, "2"), ["x", "y"]);
    }

    #[test]
    fn a_panic_in_the_stack_is_contained() {
        assert_eq!(contained("test", || 5), Some(5));
        let panicked: Option<()> = contained("test", || panic!("a remote-triggered bug"));
        assert_eq!(panicked, None);
    }

    #[test]
    fn counts_receiving_sections_by_kind() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendrecv\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n\
                   m=video 0 UDP/TLS/RTP/SAVPF 96\r\n\
                   m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n";
        assert_eq!(receiving_sections(sdp), (1, 1));
        assert_eq!(receiving_sections("garbage"), (0, 0));
    }

    #[test]
    fn finds_a_codec_in_a_receiving_section_of_its_kind() {
        use strait_media::sfu::TrackKind::{Audio, Video};
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\na=rtpmap:96 VP8/90000\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 98\r\na=sendonly\r\na=rtpmap:98 VP9/90000\r\n\
                   m=video 0 UDP/TLS/RTP/SAVPF 102\r\na=rtpmap:102 H264/90000\r\n";
        assert!(offers_codec(sdp, Audio, "OPUS"));
        assert!(offers_codec(sdp, Video, "vp8"));
        assert!(
            !offers_codec(sdp, Video, "VP9"),
            "only in a sending section"
        );
        assert!(
            !offers_codec(sdp, Video, "H264"),
            "only in a rejected section"
        );
        assert!(!offers_codec(sdp, Audio, "VP8"), "not of that kind");
        assert!(!offers_codec("garbage", Video, "VP8"));
    }
}
