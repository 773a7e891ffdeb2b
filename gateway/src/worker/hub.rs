//! The media hub: the SFU core, every participant's sending side and the WebRTC bridge behind one
//! sans-IO state machine.
//!
//! The hub owns no socket, no connection, no task and no clock. Its driver ([`super::driver`])
//! feeds it what arrives and carries out what it asks for; tests drive it with virtual time.
//!
//! ## Drive contract
//!
//! Like the cores it holds ([`Sfu`], [`Endpoint`](strait_media::webrtc::Endpoint)), the hub's
//! methods come in four classes:
//!
//! - **mutators** for what sessions and the HTTP surface ask: [`attach`](Hub::attach),
//!   [`attach_signaling`](Hub::attach_signaling), [`handle_request`](Hub::handle_request),
//!   [`detach`](Hub::detach), [`leave`](Hub::leave), [`webrtc_offer`](Hub::webrtc_offer),
//!   [`signaling_offer`](Hub::signaling_offer), [`webrtc_patch`](Hub::webrtc_patch),
//!   [`webrtc_delete`](Hub::webrtc_delete), [`signaling_closed`](Hub::signaling_closed),
//!   [`set_estimate`](Hub::set_estimate), [`request_keyframe_for_media`](Hub::request_keyframe_for_media),
//!   [`close_all`](Hub::close_all); those that answer a request return the answer;
//! - **handlers** for input from the network and the clock: [`handle_media`](Hub::handle_media)
//!   (a QUIC or WebTransport publisher's RTP, the hot path), [`handle_udp`](Hub::handle_udp) (a
//!   datagram on the WebRTC socket), [`handle_timeout`](Hub::handle_timeout);
//! - **pollers** for output: [`poll_output`](Hub::poll_output) (control messages and media
//!   datagrams for sessions, in order), [`poll_transmit`](Hub::poll_transmit) (datagrams for the
//!   WebRTC socket), [`poll_ufrag_change`](Hub::poll_ufrag_change) (the ICE ufrags its peers
//!   answer to, for a shared port) and [`poll_timeout`](Hub::poll_timeout) (when to call
//!   `handle_timeout`: the SFU core's and the endpoint's timers, and a probe's next padding);
//! - **getters**: [`stats`](Hub::stats).
//!
//! Every call takes `now`. After any mutator or handler, drain `poll_output` and `poll_transmit`
//! until they return `None`, then wait for input or for `poll_timeout`. Events between the SFU
//! core and the WebRTC endpoint (a WebRTC publisher's RTP, a keyframe request for it) are settled
//! inside each call: a packet crosses between them as a function call, with no queue and no copy.
//!
//! ## Ids
//!
//! Inside the hub there is one id space, the SFU core's ([`sfu::ParticipantId`],
//! [`sfu::MediaId`]). Sessions speak the protocol's ids; the hub converts at its edge, through
//! [`translate`], the only module that maps between the two.
//!
//! ## Outputs
//!
//! [`Output::Control`] messages for one participant come out in the order they were made: a
//! client sees answers and room events in the order they happened. A message for a participant
//! without a session (in its grace period, or a WHIP/WHEP peer) is not made. A media datagram for
//! a participant without a session is dropped and counted (`subscriber_away`); the driver counts
//! what its connections refuse.
//!
//! ## Probes
//!
//! When the SFU core wants to know whether a subscriber's link can take more before it resumes a
//! paused video or climbs a layer, it asks for padding ([`Event::Probe`]). For a QUIC or
//! WebTransport member the hub keeps a [`Padding`] pacer and, at each of its slices (every
//! [`PADDING_INTERVAL`](strait_media::bwe::PADDING_INTERVAL), part of
//! [`poll_timeout`](Hub::poll_timeout)), outputs the bytes due as padding datagrams
//! (`Output::Datagram` with `rtp_len` 0) of at most [`PADDING_DATAGRAM`] bytes each, behind the
//! connection's prefix; the session's estimator then sees what the link carried. For a WebRTC
//! member whose leg negotiated RTX and transport-cc, the bridge writes the bytes due as RTX
//! padding, which the leg's TWCC feedback reports. A probe ends at its `until`, when the core
//! stops it (padding 0), or when the member's session goes.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use strait_media::bwe::{Estimate, Padding};
use strait_media::sfu::{self, Event, Sfu, SfuConfig, SfuError, SfuStats};
use strait_media::webrtc::{IceFragment, PeerId, Transmit, UfragChange};
use strait_protocol::datagram::{self, DatagramPrefix};
use strait_protocol::{ControlMessage, ErrorCode, MediaId, ParticipantId};

use super::bridge::{Bridge, BridgeError, IcePatched, WebRtcOffer, WebRtcResource};
use super::pipe::RoomMessage;
use super::placement::PlacementError;
use super::spread::{PendingJoin, Spread};
use super::translate::{self, Principal};
use crate::auth::VerifiedToken;
use crate::metrics::{DropReason, Metrics, RefusalReason, Transport};

/// The largest padding datagram a probe sends (kind byte and zeros, after the connection's
/// prefix): well under any QUIC path's datagram size, so that none is refused as too large.
pub(crate) const PADDING_DATAGRAM: usize = 1000;

/// Identifies one connection of a session (the QUIC connection's stable id, or a number the
/// WebSocket path draws): a participant that resumed elsewhere is not detached by its old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ConnId(pub(crate) u64);

/// What the hub asks its driver to do for a session.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Output {
    /// Queue a control message on the participant's session.
    Control {
        /// The recipient.
        to: ParticipantId,
        /// The message.
        message: ControlMessage,
    },
    /// The hub let go of the participant (it left, or its grace period ended): drop its session's
    /// port. A session still running ends on its own (its control queue closes).
    Gone {
        /// The participant.
        participant: ParticipantId,
    },
    /// Hand a message about a spread room to another worker.
    Pipe {
        /// The worker.
        to: usize,
        /// The room.
        room: String,
        /// The message.
        message: RoomMessage,
    },
    /// Send a datagram (ready to go, prefix included) on the participant's connection: a media
    /// datagram (header and RTP), or a probe's padding datagram.
    Datagram {
        /// The recipient.
        to: ParticipantId,
        /// The datagram.
        datagram: Bytes,
        /// Bytes of RTP in it (for the byte counters); 0 for a padding datagram, which is not
        /// media.
        rtp_len: usize,
    },
}

/// A session asks to be attached to a participant (new, or resumed).
#[derive(Debug)]
pub(crate) struct AttachRequest {
    /// The participant.
    pub(crate) participant: ParticipantId,
    /// The session's connection.
    pub(crate) conn: ConnId,
    /// What goes in front of each datagram on that connection.
    pub(crate) prefix: DatagramPrefix,
    /// Which transport carries that connection (QUIC or WebTransport).
    pub(crate) transport: Transport,
    /// Take back an existing participant (from a resume token).
    pub(crate) resume: bool,
    /// The verified access token (required for a new participant).
    pub(crate) token: Option<VerifiedToken>,
}

/// The hub's answer to an [`AttachRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attached {
    /// A new participant is attached.
    New,
    /// The participant was taken back; its state snapshot is queued. The connection it had,
    /// if any, is named so that the driver closes it (`REPLACED`).
    Resumed {
        /// The connection the participant had until now.
        replaced: Option<ConnId>,
    },
}

/// A participant one hub let go of for another to take in (see [`Hub::release`]).
#[derive(Debug)]
pub(crate) struct Released {
    principal: Principal,
    session: Option<ConnId>,
    prefix: DatagramPrefix,
    transport: Transport,
}

/// Why an attach was refused. Each reaches the client with its own code ([`AttachError::code`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum AttachError {
    /// A resume names a participant that is gone (left, or its grace period ended).
    #[error("the participant is gone")]
    ParticipantGone,
    /// A new participant needs a verified access token.
    #[error("no access token")]
    NoToken,
    /// The participant id is already attached (ids are drawn at random: this is a collision).
    #[error("the participant id is in use")]
    IdInUse,
    /// The SFU core refused to take the participant back.
    #[error(transparent)]
    Room(#[from] SfuError),
    /// The node could not place the participant or its room.
    #[error(transparent)]
    Placement(#[from] PlacementError),
    /// The gateway is stopping.
    #[error("the gateway is shutting down")]
    ShuttingDown,
}

impl AttachError {
    /// The error code a client is told.
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            AttachError::ParticipantGone => ErrorCode::RESUME_FAILED,
            AttachError::NoToken => ErrorCode::UNAUTHORIZED,
            AttachError::IdInUse => ErrorCode::INTERNAL,
            AttachError::Room(e) => translate::sfu_error_code(e),
            AttachError::Placement(e) => e.code(),
            AttachError::ShuttingDown => ErrorCode::GOING_AWAY,
        }
    }
}

/// A participant's sending side, as the hub holds it.
#[derive(Debug)]
struct Member {
    principal: Principal,
    /// The session attached now; `None` during the grace period and for WHIP/WHEP peers.
    session: Option<ConnId>,
    /// What goes in front of each datagram on the session's connection.
    prefix: DatagramPrefix,
    /// Which transport carries its media: its session's (QUIC, WebTransport), or `Webrtc` for a
    /// WHIP/WHEP peer and a `/ws/rtc` participant.
    transport: Transport,
    /// The WebRTC peer, once the participant has one.
    webrtc: Option<PeerId>,
}

/// A probe of a member's link that is running (see the module docs).
#[derive(Debug)]
struct Probe {
    padding: Padding,
    /// For a QUIC or WebTransport member: the connection's prefix and a padding datagram of
    /// [`PADDING_DATAGRAM`] bytes, each padding datagram sent being a slice of it from its
    /// start (no copy, no allocation), and the prefix's length. `None` for a WebRTC member,
    /// whose padding the bridge writes (RTX padding).
    template: Option<(Bytes, usize)>,
}

impl Probe {
    fn quic(prefix: DatagramPrefix, padding: Padding) -> Probe {
        let prefix = prefix.as_slice();
        let mut template = Vec::with_capacity(prefix.len() + PADDING_DATAGRAM);
        template.extend_from_slice(prefix);
        datagram::write_padding(&mut template, PADDING_DATAGRAM);
        Probe {
            padding,
            template: Some((Bytes::from(template), prefix.len())),
        }
    }

    fn webrtc(padding: Padding) -> Probe {
        Probe {
            padding,
            template: None,
        }
    }
}

/// The hub's room state: the SFU core, its members and the outputs for sessions. The
/// [`Bridge`] acts on it through these methods.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) sfu: Sfu,
    members: HashMap<sfu::ParticipantId, Member>,
    outputs: VecDeque<Output>,
    pub(crate) metrics: Arc<Metrics>,
    /// Reused for every packet's datagrams: each is a slice of it.
    scratch: BytesMut,
    /// Rooms a participant of this hub left since the last settle (a spread room's instance
    /// here may have emptied).
    left_rooms: Vec<String>,
    /// The probes running, by member: few at a time (a probe lasts under two seconds, and a
    /// subscriber waits seconds between two), so [`Hub::poll_timeout`] looks at each.
    probes: HashMap<sfu::ParticipantId, Probe>,
}

impl Core {
    /// Queues an output.
    pub(crate) fn push(&mut self, output: Output) {
        self.outputs.push_back(output);
    }

    /// Queues a message for a participant's session, if it has one.
    pub(crate) fn tell(&mut self, to: sfu::ParticipantId, message: ControlMessage) {
        if self.members.get(&to).is_some_and(|m| m.session.is_some()) {
            self.outputs.push_back(Output::Control {
                to: translate::participant_out(to),
                message,
            });
        }
    }

    /// Adds a member with a session; refused when its id is taken (ids are drawn at random:
    /// a collision).
    fn insert_member(
        &mut self,
        participant: sfu::ParticipantId,
        member: Member,
    ) -> Result<(), AttachError> {
        if self.members.contains_key(&participant) {
            return Err(AttachError::IdInUse);
        }
        self.members.insert(participant, member);
        Ok(())
    }

    /// The principal of a member.
    pub(crate) fn principal(&self, participant: sfu::ParticipantId) -> Option<&Principal> {
        self.members.get(&participant).map(|m| &m.principal)
    }

    /// Adds a member that joined through the bridge (WHIP/WHEP: no session).
    pub(crate) fn add_webrtc_member(
        &mut self,
        participant: sfu::ParticipantId,
        principal: Principal,
        peer: PeerId,
    ) {
        self.members.insert(
            participant,
            Member {
                principal,
                session: None,
                prefix: DatagramPrefix::NONE,
                transport: Transport::Webrtc,
                webrtc: Some(peer),
            },
        );
    }

    /// A subscriber's downstream estimate, on `transport`: given to the SFU core, which allocates
    /// the subscriber's layers again when it is a real change, and counted.
    pub(crate) fn set_estimate(
        &mut self,
        participant: sfu::ParticipantId,
        transport: Transport,
        estimate: Estimate,
        now: Instant,
    ) {
        // An error is a participant not in a room (yet): nothing to allocate, nothing counted.
        if self.sfu.set_estimate(participant, estimate, now).is_ok() {
            self.metrics
                .allocation
                .observe_estimate(transport, estimate.available_bps);
        }
    }

    /// Starts (or, with `padding_bps` 0, stops) a probe of a member's link: padding at
    /// `padding_bps` until `until`, from the next [`Hub::handle_timeout`]. For a QUIC or
    /// WebTransport member with a session (one in its grace period has no connection to send
    /// it on), and for a WebRTC member whose leg the bridge can pad (`webrtc_pad`); any other
    /// probe sends nothing (the core judges it by the estimates that follow all the same).
    fn probe(
        &mut self,
        participant: sfu::ParticipantId,
        (padding_bps, until): (u64, Instant),
        webrtc_pad: bool,
        now: Instant,
    ) {
        if padding_bps == 0 {
            self.probes.remove(&participant);
            return;
        }
        let Some(member) = self.members.get(&participant) else {
            return;
        };
        let padding = Padding::new(padding_bps, until, now);
        if member.webrtc.is_some() || member.transport == Transport::Webrtc {
            if webrtc_pad {
                self.probes.insert(participant, Probe::webrtc(padding));
            }
            return;
        }
        if member.session.is_none() {
            return;
        }
        self.probes
            .insert(participant, Probe::quic(member.prefix, padding));
    }

    /// Notes the WebRTC peer of a member signaled over a WebSocket.
    pub(crate) fn set_webrtc_peer(&mut self, participant: sfu::ParticipantId, peer: PeerId) {
        if let Some(member) = self.members.get_mut(&participant) {
            member.webrtc = Some(peer);
        }
    }

    /// The member leaves for good: it is let go, and leaves its room if it joined one.
    fn leave(&mut self, participant: sfu::ParticipantId, now: Instant) {
        if let Some(principal) = self.remove_member(participant)
            && principal.room.is_some()
        {
            let _ = self.sfu.leave(participant, sfu::LeaveReason::Left, now);
        }
    }

    /// Removes a member (its room state is the caller's to end); the driver drops its port.
    pub(crate) fn remove_member(&mut self, participant: sfu::ParticipantId) -> Option<Principal> {
        let member = self.members.remove(&participant)?;
        self.probes.remove(&participant);
        self.outputs.push_back(Output::Gone {
            participant: translate::participant_out(participant),
        });
        if let Some(room) = &member.principal.room {
            self.left_rooms.push(room.as_str().to_owned());
        }
        Some(member.principal)
    }
}

/// The media hub (see the module docs).
#[derive(Debug)]
pub(crate) struct Hub {
    core: Core,
    bridge: Option<Bridge>,
    /// The rooms spread over this and other workers.
    spread: Spread,
    /// Rooms, participants, tracks and subscriptions last added to the metrics' gauges.
    reported: [i64; 4],
    /// The SFU core's counters last added to the metrics' counters.
    reported_counts: Counts,
    /// The load-shedding level (see `worker::shed`): from 1, joins and offers are refused.
    shed_level: u8,
}

impl Hub {
    /// A hub with the SFU configured by `config`, seeded with `seed`, and the WebRTC bridge when
    /// one is given.
    pub(crate) fn new(
        config: SfuConfig,
        seed: u64,
        bridge: Option<Bridge>,
        metrics: Arc<Metrics>,
    ) -> Hub {
        Hub {
            core: Core {
                sfu: Sfu::new(config, seed),
                members: HashMap::new(),
                outputs: VecDeque::new(),
                metrics,
                scratch: BytesMut::with_capacity(64 * 1024),
                left_rooms: Vec::new(),
                probes: HashMap::new(),
            },
            bridge,
            spread: Spread::new(0),
            reported: [0; 4],
            reported_counts: Counts::default(),
            shed_level: 0,
        }
    }

    // ---- load shedding ----

    /// Sheds load at `level` (see `worker::shed`): from 1 new joins and WHIP/WHEP offers are
    /// refused, from 2 every subscription forwards the lowest layer, at 3 video only from the
    /// latest `speakers`. Audio and control are never shed.
    pub(crate) fn set_shed_level(&mut self, level: u8, speakers: usize, now: Instant) {
        self.shed_level = level;
        let sfu = &mut self.core.sfu;
        sfu.set_layer_ceiling((level >= 2).then_some(0), now);
        sfu.set_video_speakers((level >= 3).then_some(speakers), now);
        self.settle(now);
    }

    /// At level 3: follows who speaks now.
    pub(crate) fn refresh_speakers(&mut self, speakers: usize, now: Instant) {
        if self.shed_level >= 3 {
            self.core.sfu.set_video_speakers(Some(speakers), now);
            self.settle(now);
        }
    }

    // ---- pollers ----

    /// The next thing to do for a session.
    pub(crate) fn poll_output(&mut self) -> Option<Output> {
        self.core.outputs.pop_front()
    }

    /// The next datagram for the WebRTC socket.
    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.bridge.as_mut()?.poll_transmit()
    }

    /// The next local ICE ufrag the bridge took or released (for steering a shared WebRTC
    /// port's datagrams to this hub).
    pub(crate) fn poll_ufrag_change(&mut self) -> Option<UfragChange> {
        self.bridge.as_mut()?.poll_ufrag_change()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due next: the SFU core's timers, the
    /// WebRTC endpoint's, and the next slice of a probe's padding.
    pub(crate) fn poll_timeout(&mut self) -> Option<Instant> {
        let sfu = self.core.sfu.poll_timeout();
        let webrtc = self.bridge.as_mut().and_then(Bridge::poll_timeout);
        let padding = self
            .core
            .probes
            .values()
            .filter_map(|p| p.padding.poll_timeout())
            .min();
        [sfu, webrtc, padding].into_iter().flatten().min()
    }

    // ---- getters ----

    /// What the hub holds now (the SFU core's counts).
    pub(crate) fn stats(&self) -> &SfuStats {
        self.core.sfu.stats()
    }

    /// Sets the index of this hub's worker (for spread rooms; 0 until set).
    pub(crate) fn set_worker(&mut self, index: usize) {
        self.spread = Spread::new(index);
    }

    // ---- handlers ----

    /// A message of another worker about a spread room.
    pub(crate) fn handle_pipe(
        &mut self,
        room: &str,
        from: usize,
        message: RoomMessage,
        now: Instant,
    ) {
        let handled = self.spread.handle(&mut self.core, room, from, message, now);
        if let Some((publisher, media, rtp)) = handled.media {
            forward(
                &mut self.core,
                self.bridge.as_mut(),
                &self.spread,
                publisher,
                media,
                &rtp,
                now,
            );
        }
        for join in handled.joins {
            self.apply_request(join.participant, join.message, join.join_started, now);
        }
        self.settle(now);
    }

    /// One RTP packet from a QUIC or WebTransport publisher: forwarded to every subscriber,
    /// whatever its transport.
    pub(crate) fn handle_media(
        &mut self,
        publisher: ParticipantId,
        media: MediaId,
        rtp: &Bytes,
        now: Instant,
    ) {
        forward(
            &mut self.core,
            self.bridge.as_mut(),
            &self.spread,
            translate::participant_in(publisher),
            translate::media_in(media),
            rtp,
            now,
        );
        self.settle(now);
    }

    /// A datagram that arrived on the WebRTC socket from `from`.
    pub(crate) fn handle_udp(&mut self, from: std::net::SocketAddr, bytes: &[u8], now: Instant) {
        if let Some(bridge) = self.bridge.as_mut() {
            bridge.handle_datagram(&self.core.metrics, from, bytes, now);
        }
        self.settle(now);
    }

    /// Runs the timers of the SFU core and the WebRTC endpoint, and sends the padding due.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.core.sfu.handle_timeout(now);
        if let Some(bridge) = self.bridge.as_mut() {
            bridge.handle_timeout(now);
        }
        self.settle(now);
        self.send_padding(now);
    }

    /// Outputs the padding datagrams due at `now` (a WebRTC member's through the bridge), and
    /// forgets the probes that are over.
    fn send_padding(&mut self, now: Instant) {
        let Core {
            probes, outputs, ..
        } = &mut self.core;
        let mut bridge = self.bridge.as_mut();
        probes.retain(|&id, probe| {
            let mut due = probe.padding.take(now);
            match &probe.template {
                Some((template, prefix_len)) => {
                    while due > 0 {
                        let len = due.min(PADDING_DATAGRAM);
                        due -= len;
                        outputs.push_back(Output::Datagram {
                            to: translate::participant_out(id),
                            datagram: template.slice(..prefix_len + len),
                            rtp_len: 0,
                        });
                    }
                }
                None => {
                    if due > 0
                        && let Some(bridge) = bridge.as_deref_mut()
                    {
                        bridge.send_padding(id, due, now);
                    }
                }
            }
            probe.padding.poll_timeout().is_some()
        });
    }

    // ---- mutators: sessions ----

    /// Attaches a session to a new participant, or takes a participant back on a resume.
    pub(crate) fn attach(
        &mut self,
        request: AttachRequest,
        now: Instant,
    ) -> Result<Attached, AttachError> {
        let AttachRequest {
            participant,
            conn,
            prefix,
            transport,
            resume,
            token,
        } = request;
        let id = translate::participant_in(participant);
        let attached = if resume {
            let core = &mut self.core;
            let Some(member) = core.members.get_mut(&id) else {
                return Err(AttachError::ParticipantGone);
            };
            if member.webrtc.is_some() {
                // A WebRTC participant has no session to resume.
                return Err(AttachError::ParticipantGone);
            }
            let replaced = member.session.replace(conn).filter(|old| *old != conn);
            member.prefix = prefix;
            member.transport = transport;
            // A probe's padding was framed for the connection this one replaces.
            core.probes.remove(&id);
            if member.principal.room.is_some() {
                match core.sfu.reconnect(id, now) {
                    Ok(snapshot) => {
                        for message in translate::resume_snapshot(&snapshot) {
                            core.tell(id, message);
                        }
                    }
                    Err(e) => {
                        core.remove_member(id);
                        return Err(e.into());
                    }
                }
            } else {
                core.tell(id, translate::snapshot_end());
            }
            Attached::Resumed { replaced }
        } else {
            let Some(token) = token else {
                return Err(AttachError::NoToken);
            };
            self.core.insert_member(
                id,
                Member {
                    principal: Principal { token, room: None },
                    session: Some(conn),
                    prefix,
                    transport,
                    webrtc: None,
                },
            )?;
            Attached::New
        };
        self.settle(now);
        Ok(attached)
    }

    /// A WebSocket signaling session starts: a new participant whose messages go to its
    /// session and whose media, once it has sent an offer, runs on the bridge.
    pub(crate) fn attach_signaling(
        &mut self,
        participant: ParticipantId,
        token: VerifiedToken,
        conn: ConnId,
    ) -> Result<(), AttachError> {
        self.core.insert_member(
            translate::participant_in(participant),
            Member {
                principal: Principal { token, room: None },
                session: Some(conn),
                prefix: DatagramPrefix::NONE,
                // Its media runs on the bridge once it has sent an offer.
                transport: Transport::Webrtc,
                webrtc: None,
            },
        )
    }

    /// A room or track request of a participant; the answer (or an `Error`) is queued for its
    /// session. `join_started` is when the session's connection was accepted, for a `Join`'s
    /// latency.
    pub(crate) fn handle_request(
        &mut self,
        participant: ParticipantId,
        message: ControlMessage,
        join_started: Option<Instant>,
        home: Option<usize>,
        now: Instant,
    ) {
        if self.shed_level >= 1
            && let ControlMessage::Join(join) = &message
        {
            // Shed: no new joins on an overloaded worker (a resumed session is already in).
            self.core.metrics.refuse(RefusalReason::Overloaded);
            let refusal = translate::error(
                join.request,
                ErrorCode::LIMIT_EXCEEDED,
                "the gateway is overloaded: try again later",
            );
            self.core
                .tell(translate::participant_in(participant), refusal);
            return;
        }
        // A `Join` of a room spread from another worker waits for that worker's snapshot.
        let room = match &message {
            ControlMessage::Join(join) => Some(join.room.as_str().to_owned()),
            _ => None,
        };
        if let (Some(room), Some(home)) = (&room, home) {
            let pending = PendingJoin {
                participant,
                message,
                join_started,
            };
            if let Some(join) = self.spread.join(&mut self.core, room, home, pending) {
                self.apply_request(join.participant, join.message, join.join_started, now);
            }
        } else {
            self.apply_request(participant, message, join_started, now);
        }
        self.settle(now);
    }

    fn apply_request(
        &mut self,
        participant: ParticipantId,
        message: ControlMessage,
        join_started: Option<Instant>,
        now: Instant,
    ) {
        let id = translate::participant_in(participant);
        let core = &mut self.core;
        let Some(member) = core.members.get_mut(&id) else {
            return;
        };
        let was_joined = member.principal.room.is_some();
        let answers = translate::request(&mut core.sfu, id, &mut member.principal, message, now);
        let joined = (!was_joined)
            .then(|| {
                member
                    .principal
                    .room
                    .as_ref()
                    .map(|r| r.as_str().to_owned())
            })
            .flatten();
        if joined.is_some()
            && let Some(started) = join_started
        {
            core.metrics
                .join_latency
                .observe(now.saturating_duration_since(started).as_secs_f64());
        }
        for answer in answers {
            core.tell(id, answer);
        }
        if let Some(room) = joined {
            self.spread.joined(&mut self.core, &room, now);
        }
    }

    /// A subscriber's keyframe request by its outgoing media id (from a control datagram).
    pub(crate) fn request_keyframe_for_media(
        &mut self,
        participant: ParticipantId,
        media: MediaId,
        now: Instant,
    ) {
        let _ = self.core.sfu.request_keyframe_for_media(
            translate::participant_in(participant),
            translate::media_in(media),
            now,
        );
        self.settle(now);
    }

    /// A QUIC or WebTransport session's estimate of its connection toward its participant
    /// (from the connection's counters, see `quic::session`), for the allocation of the
    /// participant's layers. Ignored for a participant this hub does not hold.
    pub(crate) fn set_estimate(
        &mut self,
        participant: ParticipantId,
        estimate: Estimate,
        now: Instant,
    ) {
        let id = translate::participant_in(participant);
        let Some(member) = self.core.members.get(&id) else {
            return;
        };
        let transport = member.transport;
        self.core.set_estimate(id, transport, estimate, now);
        self.settle(now);
    }

    /// The connection `conn` of a participant was lost: its grace period starts. Ignored when
    /// another connection has taken the participant over.
    pub(crate) fn detach(&mut self, participant: ParticipantId, conn: ConnId, now: Instant) {
        let id = translate::participant_in(participant);
        let Some(member) = self.core.members.get_mut(&id) else {
            return;
        };
        if member.session != Some(conn) {
            return;
        }
        member.session = None;
        self.core.probes.remove(&id);
        if member.principal.room.is_some() {
            let _ = self.core.sfu.disconnect(id, now);
        } else {
            self.core.remove_member(id);
        }
        self.settle(now);
    }

    /// The participant left for good from connection `conn` (ignored when another connection
    /// has taken it over).
    pub(crate) fn leave(&mut self, participant: ParticipantId, conn: ConnId, now: Instant) {
        let id = translate::participant_in(participant);
        let current = self.core.members.get(&id).and_then(|m| m.session);
        if current.is_some_and(|c| c != conn) {
            return;
        }
        self.core.leave(id, now);
        self.settle(now);
    }

    /// Lets go of a participant that has not joined a room, so that it can move to another
    /// hub ([`adopt`](Self::adopt)); no `Gone` is output (its session goes on). `None` when it
    /// is unknown, in a room, or a WebRTC peer.
    pub(crate) fn release(&mut self, participant: ParticipantId) -> Option<Released> {
        let id = translate::participant_in(participant);
        let member = self.core.members.get(&id)?;
        if member.principal.room.is_some() || member.webrtc.is_some() {
            return None;
        }
        let member = self.core.members.remove(&id)?;
        self.core.probes.remove(&id);
        Some(Released {
            principal: member.principal,
            session: member.session,
            prefix: member.prefix,
            transport: member.transport,
        })
    }

    /// Takes in a participant another hub [released](Self::release).
    pub(crate) fn adopt(
        &mut self,
        participant: ParticipantId,
        released: Released,
    ) -> Result<(), AttachError> {
        self.core.insert_member(
            translate::participant_in(participant),
            Member {
                principal: released.principal,
                session: released.session,
                prefix: released.prefix,
                transport: released.transport,
                webrtc: None,
            },
        )
    }

    // ---- mutators: the WebRTC bridge ----

    /// Answers a WHIP or WHEP offer: a new peer and a new participant of the room.
    pub(crate) fn webrtc_offer(
        &mut self,
        offer: WebRtcOffer,
        now: Instant,
    ) -> Result<String, BridgeError> {
        let bridge = self.bridge.as_mut().ok_or(BridgeError::Disabled)?;
        if self.shed_level >= 1 {
            self.core.metrics.refuse(RefusalReason::Overloaded);
            return Err(BridgeError::Overloaded);
        }
        let answer = bridge.offer(&mut self.core, offer, now);
        self.settle(now);
        answer
    }

    /// The offer of a participant signaled over a WebSocket; the answer (or a session-level
    /// `Error`) is queued for its session.
    pub(crate) fn signaling_offer(&mut self, participant: ParticipantId, sdp: &str, now: Instant) {
        let id = translate::participant_in(participant);
        let result = match self.bridge.as_mut() {
            Some(bridge) => bridge.signaling_offer(&mut self.core, id, sdp, now),
            None => Err(BridgeError::Disabled),
        };
        match result {
            Ok(answer) => {
                for message in translate::signaling_answer(&answer) {
                    self.core.tell(id, message);
                }
            }
            Err(e) => {
                self.core.metrics.webrtc_offers_refused.inc();
                // Session-level: the session closes once it has sent it.
                self.core.tell(id, translate::offer_refused(&e));
            }
        }
        self.settle(now);
    }

    /// A WebSocket signaling session ended: its participant leaves now.
    pub(crate) fn signaling_closed(&mut self, participant: ParticipantId, now: Instant) {
        let id = translate::participant_in(participant);
        match self.bridge.as_mut() {
            Some(bridge) if bridge.has_leg(id) => {
                bridge.drop_leg(&mut self.core, id, sfu::LeaveReason::Left, now);
            }
            _ => self.core.leave(id, now),
        }
        self.settle(now);
    }

    /// Ends a WHIP or WHEP session on its owner's request.
    pub(crate) fn webrtc_delete(
        &mut self,
        target: &WebRtcResource,
        now: Instant,
    ) -> Result<(), BridgeError> {
        let bridge = self.bridge.as_mut().ok_or(BridgeError::Disabled)?;
        let participant = bridge.owned_leg(target)?;
        bridge.drop_leg(&mut self.core, participant, sfu::LeaveReason::Left, now);
        self.settle(now);
        Ok(())
    }

    /// A WHIP or WHEP `PATCH`: trickle ICE or an ICE restart.
    pub(crate) fn webrtc_patch(
        &mut self,
        target: &WebRtcResource,
        fragment: &IceFragment,
        if_match: Option<&str>,
        now: Instant,
    ) -> Result<IcePatched, BridgeError> {
        let bridge = self.bridge.as_mut().ok_or(BridgeError::Disabled)?;
        let patched = bridge.patch(&mut self.core, target, fragment, if_match, now);
        self.settle(now);
        patched
    }

    /// Closes every WebRTC peer (their DTLS `close_notify` is queued for the socket) and lets go
    /// of every session, at shutdown.
    pub(crate) fn close_all(&mut self, now: Instant) {
        if let Some(bridge) = self.bridge.as_mut() {
            bridge.close_all(&mut self.core, now);
        }
        self.settle(now);
    }

    /// Brings the metrics' gauges and the bridge's counters up to date.
    pub(crate) fn update_gauges(&mut self) {
        if let Some(bridge) = self.bridge.as_mut() {
            bridge.update_gauges(&self.core.metrics);
        }
        // Every worker's hub adds its own change: the gauges and counters are the node's sums.
        let stats = self.core.sfu.stats();
        let counts = Counts::of(stats);
        if counts != self.reported_counts {
            let before = std::mem::replace(&mut self.reported_counts, counts);
            let metrics = &self.core.metrics;
            let allocation = &metrics.allocation;
            metrics.count_drops(
                DropReason::ShedVideo,
                counts.shed.saturating_sub(before.shed),
            );
            metrics.count_drops(
                DropReason::Paused,
                counts.paused.saturating_sub(before.paused),
            );
            for (counter, now, before) in [
                (&allocation.pauses, counts.pauses, before.pauses),
                (&allocation.resumes, counts.resumes, before.resumes),
                (
                    &allocation.failed_climbs,
                    counts.failed_climbs,
                    before.failed_climbs,
                ),
                (&allocation.probes, counts.probes, before.probes),
                (
                    &allocation.probes_failed,
                    counts.probes_failed,
                    before.probes_failed,
                ),
            ] {
                counter.inc_by(now.saturating_sub(before));
            }
        }
        let now = [
            gauge(stats.rooms),
            gauge(stats.participants),
            gauge(stats.tracks),
            gauge(stats.subscriptions),
        ];
        let metrics = &self.core.metrics;
        let gauges = [
            &metrics.rooms,
            &metrics.participants,
            &metrics.tracks,
            &metrics.subscriptions,
        ];
        for ((gauge, now), before) in gauges.into_iter().zip(now).zip(self.reported) {
            if now != before {
                gauge.inc_by(now - before);
            }
        }
        self.reported = now;
    }

    /// Handles the events of the WebRTC endpoint and of the SFU core until both are quiet: the
    /// bridge's events feed the core and the core's events reach WebRTC peers.
    fn settle(&mut self, now: Instant) {
        loop {
            let webrtc = self.drain_webrtc_events(now);
            let sfu = self.drain_sfu_events(now);
            if !webrtc && !sfu {
                if self.core.left_rooms.is_empty() {
                    break;
                }
                // A spread room's instance with none of this hub's participants left closes.
                for room in std::mem::take(&mut self.core.left_rooms) {
                    // Only a spread room's instance is looked at: other rooms close on their own.
                    if !self.spread.is_spread(&room) {
                        continue;
                    }
                    let anyone = self.core.members.values().any(|m| {
                        m.principal
                            .room
                            .as_ref()
                            .is_some_and(|r| r.as_str() == room)
                    });
                    if !anyone {
                        self.spread.emptied(&mut self.core, &room, now);
                    }
                }
            }
        }
    }

    fn drain_webrtc_events(&mut self, now: Instant) -> bool {
        let mut any = false;
        while let Some(event) = self.bridge.as_mut().and_then(Bridge::poll_event) {
            any = true;
            let Some(bridge) = self.bridge.as_mut() else {
                break;
            };
            if let Some(rtp) = bridge.handle_event(&mut self.core, event, now) {
                forward(
                    &mut self.core,
                    self.bridge.as_mut(),
                    &self.spread,
                    rtp.participant,
                    rtp.media,
                    &rtp.packet,
                    now,
                );
            }
        }
        any
    }

    fn drain_sfu_events(&mut self, now: Instant) -> bool {
        let mut any = false;
        while let Some(event) = self.core.sfu.poll_event() {
            any = true;
            match event {
                Event::Notify { to, notification } => {
                    if self.spread.notification(&mut self.core, to, &notification) {
                        continue;
                    }
                    if let Some(message) = translate::notification(&notification) {
                        self.core.tell(to, message);
                    }
                }
                Event::KeyframeRequest {
                    to,
                    track,
                    layer,
                    media,
                } => {
                    if self.spread.keyframe_request(&mut self.core, to, media) {
                        continue;
                    }
                    let sent = self
                        .bridge
                        .as_mut()
                        .is_some_and(|b| b.request_keyframe(&self.core.metrics, to, media, now));
                    if !sent {
                        self.core
                            .tell(to, translate::keyframe_request(track, layer));
                    }
                }
                Event::ParticipantRemoved { participant, .. } => {
                    self.spread.relay_removed(participant);
                    self.core.remove_member(participant);
                }
                Event::Probe {
                    to,
                    padding_bps,
                    until,
                } => {
                    let webrtc_pad =
                        padding_bps > 0 && self.bridge.as_mut().is_some_and(|b| b.can_pad(to));
                    self.core.probe(to, (padding_bps, until), webrtc_pad, now);
                }
                _ => {}
            }
        }
        any
    }
}

/// A WebRTC publisher's packet, out of the bridge, for [`forward`].
#[derive(Debug)]
pub(crate) struct BridgedRtp {
    pub(crate) participant: sfu::ParticipantId,
    pub(crate) media: sfu::MediaId,
    pub(crate) packet: Bytes,
}

/// Forwards one publisher packet to every subscriber, whatever its transport.
fn forward(
    core: &mut Core,
    mut bridge: Option<&mut Bridge>,
    spread: &Spread,
    publisher: sfu::ParticipantId,
    media: sfu::MediaId,
    rtp: &Bytes,
    now: Instant,
) {
    // Only packets of spread rooms cross the pipe; a node without any pays one check.
    if spread.any() {
        let room = core
            .members
            .get(&publisher)
            .and_then(|m| m.principal.room.as_ref())
            .map(|r| r.as_str())
            .or_else(|| spread.shadow_room(publisher))
            .filter(|room| spread.is_spread(room))
            .map(str::to_owned);
        if let Some(room) = room {
            spread.media(core, &room, publisher, media, rtp);
        }
    }
    let Core {
        sfu,
        members,
        outputs,
        metrics,
        scratch,
        ..
    } = core;
    let result = sfu.handle_rtp(publisher, media, rtp, now, &mut |fwd: sfu::Forward<'_>| {
        let Some(member) = members.get(&fwd.to) else {
            return;
        };
        if let Some(peer) = member.webrtc {
            let Some(bridge) = bridge.as_deref_mut() else {
                return;
            };
            bridge.send(metrics, peer, &fwd, now);
            return;
        }
        if member.session.is_none() {
            metrics.count_drop(DropReason::SubscriberAway);
            return;
        }
        let (datagram, rtp_len) = translate::media_datagram(&fwd, member.prefix, scratch);
        outputs.push_back(Output::Datagram {
            to: translate::participant_out(fwd.to),
            datagram,
            rtp_len,
        });
    });
    if let Err(e) = result {
        metrics.count_drop(match e {
            sfu::RoutingError::UnknownMedia { .. } => DropReason::UnknownMedia,
            sfu::RoutingError::NotJoined { .. } => DropReason::NotJoined,
            _ => DropReason::MalformedDatagram,
        });
    }
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The SFU core's counters that the hub adds to the metrics (each hub its own change since it
/// last looked: the metrics are the node's sums).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    shed: u64,
    paused: u64,
    pauses: u64,
    resumes: u64,
    failed_climbs: u64,
    probes: u64,
    probes_failed: u64,
}

impl Counts {
    fn of(stats: &SfuStats) -> Counts {
        Counts {
            shed: stats.drops.shed,
            paused: stats.drops.paused,
            pauses: stats.pauses,
            resumes: stats.resumes,
            failed_climbs: stats.failed_climbs,
            probes: stats.probes,
            probes_failed: stats.probes_failed,
        }
    }
}
