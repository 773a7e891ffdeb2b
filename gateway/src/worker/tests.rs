//! The hub in virtual time: no socket, no task, no clock. Each test owns a [`Harness`] whose
//! `now` moves only when the test says so; the hub's outputs are collected per participant, and
//! a WebRTC peer (webrtc-rs's sans-IO `rtc`) exchanges datagrams with the hub in memory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use prometheus_client::registry::Registry as MetricsRegistry;
use rtc::interceptor::{Registry, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::marshal::Unmarshal;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use strait_media::bwe::{Estimate, LinkState};
use strait_media::sfu::SfuConfig;
use strait_media::webrtc::DeliverKeyframeRequests;
use strait_protocol::datagram::{self, Datagram, DatagramPrefix};
use strait_protocol::{
    Codec, ControlMessage, ErrorCode, Join, Layer, MediaId, ParticipantId, PauseReason, Publish,
    RequestId, RoomId, SetLayerPreference, Subscribe, TrackId, TrackKind, TrackPaused,
    TrackResumed,
};

use super::bridge::{Bridge, BridgeError, OfferRole, WebRtcOffer};
use super::hub::{AttachError, AttachRequest, Attached, ConnId, Hub, Output};
use super::pipe::RoomMessage;
use crate::auth::{Grants, RoomGrant, VerifiedToken};
use crate::config::WebRtcConfig;
use crate::metrics::{DropLabel, DropReason, Metrics, Transport, TransportLabel};

const VP8_PT: u8 = 96;

/// The address the hub's WebRTC socket is said to be bound to (TEST-NET-2: nothing is sent).
const BRIDGE_ADDR: &str = "198.51.100.1:4478";

/// The address of the in-memory WebRTC peer (TEST-NET-1).
const PEER_ADDR: &str = "192.0.2.1:5000";

/// A hub, its clock, and what it said to each participant.
struct Harness {
    hub: Hub,
    metrics: Arc<Metrics>,
    now: Instant,
    control: HashMap<ParticipantId, Vec<ControlMessage>>,
    datagrams: HashMap<ParticipantId, Vec<Bytes>>,
    gone: Vec<ParticipantId>,
    /// Messages for other workers: (worker, room, message).
    piped: Vec<(usize, String, RoomMessage)>,
}

impl Harness {
    fn new() -> Harness {
        Harness::with(SfuConfig::default())
    }

    fn with(config: SfuConfig) -> Harness {
        let metrics = Arc::new(Metrics::new(&mut MetricsRegistry::default()));
        let bridge = Bridge::new(
            &WebRtcConfig::default(),
            BRIDGE_ADDR.parse().unwrap(),
            &metrics,
            (Instant::now(), std::time::SystemTime::now()),
        );
        Harness {
            hub: Hub::new(config, 7, Some(bridge), metrics.clone()),
            metrics,
            now: Instant::now(),
            control: HashMap::new(),
            datagrams: HashMap::new(),
            gone: Vec::new(),
            piped: Vec::new(),
        }
    }

    /// Collects every output the hub has queued.
    fn drain(&mut self) {
        while let Some(output) = self.hub.poll_output() {
            match output {
                Output::Control { to, message } => {
                    self.control.entry(to).or_default().push(message)
                }
                Output::Datagram { to, datagram, .. } => {
                    self.datagrams.entry(to).or_default().push(datagram);
                }
                Output::Gone { participant } => self.gone.push(participant),
                Output::Pipe { to, room, message } => self.piped.push((to, room, message)),
            }
        }
    }

    /// The control messages `to` got since the last call.
    fn told(&mut self, to: u64) -> Vec<ControlMessage> {
        self.drain();
        self.control.remove(&ParticipantId(to)).unwrap_or_default()
    }

    /// The media datagrams `to` got since the last call.
    fn media(&mut self, to: u64) -> Vec<Bytes> {
        self.drain();
        self.datagrams
            .remove(&ParticipantId(to))
            .unwrap_or_default()
    }

    fn attach(&mut self, participant: u64, conn: u64) -> Result<Attached, AttachError> {
        self.attach_with_prefix(participant, conn, DatagramPrefix::NONE)
    }

    /// Attaches `participant` on a connection whose datagrams start with `prefix` (a
    /// WebTransport session's, or none for raw QUIC).
    fn attach_with_prefix(
        &mut self,
        participant: u64,
        conn: u64,
        prefix: DatagramPrefix,
    ) -> Result<Attached, AttachError> {
        let transport = if prefix == DatagramPrefix::NONE {
            Transport::Quic
        } else {
            Transport::Webtransport
        };
        self.hub.attach(
            AttachRequest {
                participant: ParticipantId(participant),
                conn: ConnId(conn),
                prefix,
                transport,
                resume: false,
                token: Some(token(&format!("user-{participant}"), "lobby")),
            },
            self.now,
        )
    }

    fn resume(&mut self, participant: u64, conn: u64) -> Result<Attached, AttachError> {
        self.hub.attach(
            AttachRequest {
                participant: ParticipantId(participant),
                conn: ConnId(conn),
                prefix: DatagramPrefix::NONE,
                transport: Transport::Quic,
                resume: true,
                token: None,
            },
            self.now,
        )
    }

    fn request(&mut self, participant: u64, message: ControlMessage) -> Vec<ControlMessage> {
        self.hub
            .handle_request(ParticipantId(participant), message, None, None, self.now);
        self.told(participant)
    }

    /// Attaches `participant` and joins the lobby; returns what the join answered.
    fn join(&mut self, participant: u64) -> Vec<ControlMessage> {
        self.attach(participant, participant).expect("attached");
        self.request(
            participant,
            ControlMessage::Join(Join {
                request: RequestId(1),
                room: RoomId("lobby".into()),
                name: String::new(),
            }),
        )
    }

    /// Publishes a one-layer VP8 track on media id 1; returns its track id.
    fn publish_vp8(&mut self, participant: u64) -> TrackId {
        let answer = self.request(
            participant,
            ControlMessage::Publish(Publish {
                request: RequestId(2),
                kind: TrackKind::Video,
                codec: vp8(),
                source: "camera".into(),
                layers: vec![Layer {
                    media: MediaId(1),
                    max_bitrate: 0,
                    width: 0,
                    height: 0,
                }],
                muted: false,
            }),
        );
        match answer.as_slice() {
            [ControlMessage::Published(p)] => p.track,
            other => panic!("expected Published, got {other:?}"),
        }
    }

    /// Subscribes `participant` to `track`; returns (its media id, its SSRC).
    fn subscribe(&mut self, participant: u64, track: TrackId) -> (MediaId, u32) {
        let answer = self.request(
            participant,
            ControlMessage::Subscribe(Subscribe {
                request: RequestId(3),
                track,
                max_layer: None,
                priority: None,
            }),
        );
        match answer.as_slice() {
            [ControlMessage::Subscribed(s)] => (s.media, s.ssrc),
            other => panic!("expected Subscribed, got {other:?}"),
        }
    }

    fn send_vp8(&mut self, publisher: u64, seq: u16, key: bool) {
        let packet = Bytes::from(vp8_packet(seq, u32::from(seq) * 3000, 0x1234, key));
        self.hub
            .handle_media(ParticipantId(publisher), MediaId(1), &packet, self.now);
    }

    /// Moves the clock to `at` and runs the hub's timers that are due.
    fn advance_to(&mut self, at: Instant) {
        self.now = self.now.max(at);
        while let Some(due) = self.hub.poll_timeout()
            && due <= self.now
        {
            self.hub.handle_timeout(self.now);
        }
    }

    fn drops(&self, reason: DropReason) -> u64 {
        self.metrics
            .drops
            .get_or_create(&DropLabel { reason })
            .get()
    }
}

fn token(identity: &str, room: &str) -> VerifiedToken {
    let now = SystemTime::now();
    VerifiedToken {
        key_id: "test".into(),
        identity: identity.into(),
        room: RoomGrant::Room(RoomId(room.into())),
        grants: Grants::participant(),
        name: None,
        issued_at: now,
        expires_at: now + Duration::from_secs(3600),
        not_before: None,
    }
}

fn vp8() -> Codec {
    Codec {
        name: "VP8".into(),
        payload_type: VP8_PT,
        clock_rate: 90_000,
        channels: 0,
        fmtp: String::new(),
    }
}

/// A VP8 packet; `key` marks a keyframe start (payload descriptor S=1, PID 0; P bit 0).
fn vp8_packet(seq: u16, ts: u32, ssrc: u32, key: bool) -> Vec<u8> {
    let mut packet = vec![0x80, VP8_PT, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    packet[2..4].copy_from_slice(&seq.to_be_bytes());
    packet[4..8].copy_from_slice(&ts.to_be_bytes());
    packet[8..12].copy_from_slice(&ssrc.to_be_bytes());
    packet.extend_from_slice(&[0x10, if key { 0x00 } else { 0x01 }, 0, 0, 1, 2, 3, 4]);
    packet
}

/// The media id and the RTP of a media datagram.
fn parse_media(datagram: &Bytes) -> (MediaId, Bytes) {
    match datagram::parse_datagram(datagram) {
        Ok(Datagram::Media { media, rtp }) => (media, rtp),
        other => panic!("not a media datagram: {other:?}"),
    }
}

#[test]
fn join_publish_subscribe_and_forward() {
    let mut h = Harness::new();
    let alice = h.join(1);
    assert!(matches!(alice.as_slice(), [ControlMessage::Joined(_)]));
    let track = h.publish_vp8(1);
    let bob = h.join(2);
    assert!(
        matches!(
            bob.as_slice(),
            [
                ControlMessage::Joined(_),
                ControlMessage::ParticipantJoined(p),
                ControlMessage::TrackPublished(t),
            ] if p.participant == ParticipantId(1) && t.track == track
        ),
        "bob hears the room as it is: {bob:?}"
    );
    assert!(
        matches!(h.told(1).as_slice(), [ControlMessage::ParticipantJoined(p)] if p.participant == ParticipantId(2)),
        "alice hears of bob"
    );
    let (media, ssrc) = h.subscribe(2, track);

    for seq in 0..5 {
        h.send_vp8(1, 100 + seq, seq == 0);
    }
    let got = h.media(2);
    assert_eq!(got.len(), 5, "every packet from the keyframe on");
    for (i, datagram) in got.iter().enumerate() {
        let (on, rtp) = parse_media(datagram);
        assert_eq!(on, media, "on the subscription's media id");
        assert_eq!(
            &rtp[8..12],
            &ssrc.to_be_bytes(),
            "with the subscription's ssrc"
        );
        let seq = u16::from_be_bytes([rtp[2], rtp[3]]);
        if i > 0 {
            let (_, before) = parse_media(&got[i - 1]);
            assert_eq!(
                seq,
                u16::from_be_bytes([before[2], before[3]]).wrapping_add(1)
            );
        }
    }
    assert!(h.media(1).is_empty(), "nothing back to the publisher");

    // Media on a media id nobody published, or from someone not in a room, is counted.
    h.hub.handle_media(
        ParticipantId(1),
        MediaId(9),
        &Bytes::from(vp8_packet(1, 1, 1, true)),
        h.now,
    );
    assert_eq!(h.drops(DropReason::UnknownMedia), 1);
    h.attach(3, 3).expect("attached");
    h.send_vp8(3, 1, true);
    assert_eq!(h.drops(DropReason::NotJoined), 1);
    assert!(h.media(2).is_empty());
}

#[test]
fn a_subscribers_keyframe_request_reaches_the_publisher() {
    let mut h = Harness::new();
    h.join(1);
    let track = h.publish_vp8(1);
    h.join(2);
    h.told(1);
    let (media, _) = h.subscribe(2, track);
    // Subscribing asks for a keyframe already; a later request is throttled per track.
    let first = h.told(1);
    assert!(
        matches!(first.as_slice(), [ControlMessage::KeyframeRequest(k)] if k.track == track),
        "the publisher is asked for a keyframe: {first:?}"
    );
    let interval = SfuConfig::default().keyframe_request_interval;
    h.advance_to(h.now + interval);
    h.told(1);
    h.hub
        .request_keyframe_for_media(ParticipantId(2), media, h.now);
    let again = h.told(1);
    assert!(
        matches!(again.as_slice(), [ControlMessage::KeyframeRequest(k)] if k.track == track),
        "the subscriber's own request goes upstream: {again:?}"
    );
}

#[test]
fn a_lost_session_resumes_with_its_room_and_subscriptions() {
    let mut h = Harness::new();
    h.join(1);
    let track = h.publish_vp8(1);
    h.join(2);
    let (media, _) = h.subscribe(2, track);
    h.send_vp8(1, 1, true);
    assert_eq!(h.media(2).len(), 1);

    // Bob's connection is lost: his grace period starts, and the core holds his media back.
    h.hub.detach(ParticipantId(2), ConnId(2), h.now);
    h.send_vp8(1, 2, false);
    assert!(h.media(2).is_empty());
    assert!(
        h.told(1)
            .iter()
            .all(|m| !matches!(m, ControlMessage::ParticipantLeft(_))),
        "nobody hears bob leave during the grace period"
    );

    // A detach from a connection that is not bob's changes nothing.
    h.hub.detach(ParticipantId(1), ConnId(99), h.now);

    // Bob comes back on a new connection: the room, his subscription, then Ack.
    assert_eq!(h.resume(2, 20), Ok(Attached::Resumed { replaced: None }));
    let snapshot = h.told(2);
    assert!(matches!(snapshot.first(), Some(ControlMessage::Joined(_))));
    assert!(
        snapshot.iter().any(
            |m| matches!(m, ControlMessage::Subscribed(s) if s.track == track && s.media == media)
        ),
        "the subscription is in the snapshot: {snapshot:?}"
    );
    assert!(
        matches!(snapshot.last(), Some(ControlMessage::Ack(a)) if a.request == RequestId::UNSOLICITED)
    );
    h.send_vp8(1, 3, true);
    assert_eq!(h.media(2).len(), 1, "media flows again");

    // Resuming again while attached replaces the connection.
    assert_eq!(
        h.resume(2, 21),
        Ok(Attached::Resumed {
            replaced: Some(ConnId(20))
        })
    );
    // The old connection's late detach is ignored.
    h.hub.detach(ParticipantId(2), ConnId(20), h.now);
    h.send_vp8(1, 4, false);
    assert_eq!(h.media(2).len(), 1);
}

#[test]
fn a_refused_attach_names_its_own_error_code() {
    let mut h = Harness::with(SfuConfig {
        grace_period: Duration::from_secs(5),
        ..SfuConfig::default()
    });
    let no_token = h.hub.attach(
        AttachRequest {
            participant: ParticipantId(1),
            conn: ConnId(1),
            prefix: DatagramPrefix::NONE,
            transport: Transport::Quic,
            resume: false,
            token: None,
        },
        h.now,
    );
    assert_eq!(no_token, Err(AttachError::NoToken));
    assert_eq!(AttachError::NoToken.code(), ErrorCode::UNAUTHORIZED);

    assert_eq!(h.resume(9, 9), Err(AttachError::ParticipantGone));
    assert_eq!(
        AttachError::ParticipantGone.code(),
        ErrorCode::RESUME_FAILED
    );

    h.join(1);
    assert_eq!(h.attach(1, 2), Err(AttachError::IdInUse));

    // The grace period ends: the participant is gone, and so is its resume.
    h.hub.detach(ParticipantId(1), ConnId(1), h.now);
    h.advance_to(h.now + Duration::from_secs(6));
    h.drain();
    assert_eq!(h.gone, [ParticipantId(1)], "the driver is told to let go");
    assert_eq!(h.resume(1, 3), Err(AttachError::ParticipantGone));

    // A room limit refuses the join with LIMIT_EXCEEDED, and the session goes on.
    let mut full = Harness::with(SfuConfig {
        max_participants_per_room: 1,
        ..SfuConfig::default()
    });
    full.join(1);
    let refused = full.join(2);
    assert!(
        matches!(refused.as_slice(), [ControlMessage::Error(e)] if e.code == ErrorCode::LIMIT_EXCEEDED && e.request == Some(RequestId(1))),
        "{refused:?}"
    );
}

#[test]
fn a_participant_that_leaves_is_let_go_and_heard_leaving() {
    let mut h = Harness::new();
    h.join(1);
    h.join(2);
    h.told(1);
    // A leave from another connection than the participant's is ignored.
    h.hub.leave(ParticipantId(2), ConnId(99), h.now);
    assert!(h.told(1).is_empty());
    h.hub.leave(ParticipantId(2), ConnId(2), h.now);
    let told = h.told(1);
    assert!(
        matches!(told.as_slice(), [ControlMessage::ParticipantLeft(l)] if l.participant == ParticipantId(2) && l.reason == ErrorCode::NONE),
        "{told:?}"
    );
    assert_eq!(h.gone, [ParticipantId(2)]);
}

/// webrtc-rs's sans-IO peer connection as a WHIP publisher (VP8, one SSRC) or a WHEP
/// subscriber (one video section), in memory.
struct RtcPeer {
    pc: RTCPeerConnection,
    /// A publisher's sender.
    sender: Option<RTCRtpSenderId>,
    addr: SocketAddr,
    connected: bool,
    plis: usize,
}

const PEER_SSRC: u32 = 0x5eed_0001;

impl RtcPeer {
    fn publisher(now: Instant) -> RtcPeer {
        let mut peer = RtcPeer::new(now);
        let track = MediaStreamTrack::new(
            "stream".into(),
            "video".into(),
            "video".into(),
            RtpCodecKind::Video,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(PEER_SSRC),
                    ..Default::default()
                },
                codec: RTCRtpCodec {
                    mime_type: "video/VP8".into(),
                    clock_rate: 90_000,
                    channels: 0,
                    sdp_fmtp_line: String::new(),
                    rtcp_feedback: vec![],
                },
                ..Default::default()
            }],
        );
        peer.sender = Some(peer.pc.add_track(track).unwrap());
        peer
    }

    /// A WHEP subscriber: one receiving video section; its default interceptors send TWCC
    /// feedback about what it receives.
    fn subscriber(now: Instant) -> RtcPeer {
        let mut peer = RtcPeer::new(now);
        peer.pc
            .add_transceiver_from_kind(
                RtpCodecKind::Video,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    streams: vec![],
                    send_encodings: vec![],
                }),
            )
            .unwrap();
        peer
    }

    fn new(now: Instant) -> RtcPeer {
        let mut media_engine = MediaEngine::default();
        media_engine.register_default_codecs().unwrap();
        // Lets the bridge's keyframe requests (RTCP PLI) reach `poll_read`.
        let registry = Registry::new().with(Slot::from(14_000), DeliverKeyframeRequests::default());
        let registry = register_default_interceptors(registry, &mut media_engine).unwrap();
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_setting_engine(SettingEngineBuilder::new().build())
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .build(now)
            .unwrap();
        let addr: SocketAddr = PEER_ADDR.parse().unwrap();
        pc.add_local_candidate(RTCIceCandidateInit {
            candidate: format!(
                "candidate:1 1 udp 2130706431 {} {} typ host",
                addr.ip(),
                addr.port()
            ),
            ..Default::default()
        })
        .unwrap();
        pc.add_local_candidate(RTCIceCandidateInit::default())
            .unwrap();
        RtcPeer {
            pc,
            sender: None,
            addr,
            connected: false,
            plis: 0,
        }
    }

    fn offer(&mut self, now: Instant) -> String {
        let offer = self.pc.create_offer(None).unwrap();
        self.pc.set_local_description(now, offer).unwrap();
        self.pc.local_description().unwrap().sdp
    }

    /// One exchange both ways between the peer and the hub, and the peer's events.
    fn exchange(&mut self, h: &mut Harness) {
        while let Some(out) = self.pc.poll_write() {
            h.hub.handle_udp(self.addr, &out.message, h.now);
        }
        while let Some(transmit) = h.hub.poll_transmit() {
            assert_eq!(transmit.to, self.addr, "everything goes to the peer");
            let _ = self.pc.handle_read(TaggedBytesMut {
                now: h.now,
                transport: TransportContext {
                    local_addr: self.addr,
                    peer_addr: transmit.from,
                    ecn: None,
                    transport_protocol: TransportProtocol::UDP,
                },
                message: BytesMut::from(&transmit.bytes[..]),
            });
        }
        while let Some(event) = self.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(
                RTCPeerConnectionState::Connected,
            ) = event
            {
                self.connected = true;
            }
        }
        while let Some(message) = self.pc.poll_read() {
            if let RTCMessage::RtcpPacket(_, packets) = message.message {
                self.plis += packets
                    .iter()
                    .filter(|p| p.as_any().downcast_ref::<PictureLossIndication>().is_some())
                    .count();
            }
        }
    }

    /// Exchanges and runs both sides' timers in virtual time until `done` holds (bounded).
    fn run_until(&mut self, h: &mut Harness, mut done: impl FnMut(&RtcPeer, &mut Harness) -> bool) {
        for _ in 0..2_000 {
            self.exchange(h);
            if done(self, h) {
                return;
            }
            let next = [self.pc.poll_timeout(), h.hub.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(h.now + Duration::from_millis(10))
                .max(h.now + Duration::from_millis(1));
            h.advance_to(next);
            let _ = self.pc.handle_timeout(h.now);
        }
        panic!("not reached within 2000 turns of virtual time");
    }

    fn send_vp8(&mut self, h: &Harness, seq: u16, key: bool) {
        let bytes = vp8_packet(seq, u32::from(seq) * 3000, PEER_SSRC, key);
        let packet = rtc::rtp::Packet::unmarshal(&mut &bytes[..]).unwrap();
        let id = self.sender.expect("a publisher");
        let mut sender = self.pc.rtp_sender(id).expect("the sender");
        sender.write_rtp(h.now, packet).expect("written");
    }
}

#[test]
fn a_whip_publisher_is_answered_connects_and_reaches_a_quic_subscriber() {
    let mut h = Harness::new();
    h.join(2);
    let mut peer = RtcPeer::publisher(h.now);
    let offer = peer.offer(h.now);
    let answer = h
        .hub
        .webrtc_offer(
            WebRtcOffer {
                participant: ParticipantId(1),
                resource: "resource-1".into(),
                token: token("camera", "lobby"),
                room: RoomId("lobby".into()),
                role: OfferRole::Publish,
                sdp: offer,
            },
            h.now,
        )
        .expect("the offer is answered");
    assert!(answer.contains("a=ice-lite"), "the bridge is ICE-lite");
    assert!(
        answer.contains(&format!("{} typ host", BRIDGE_ADDR.replace(':', " "))),
        "the answer names the bridge's address: {answer}"
    );
    let joined = h.told(2);
    assert!(
        matches!(joined.as_slice(), [ControlMessage::ParticipantJoined(p)] if p.participant == ParticipantId(1) && p.identity == "camera"),
        "the room hears the WHIP participant join: {joined:?}"
    );
    peer.pc
        .set_remote_description(h.now, RTCSessionDescription::answer(answer).unwrap())
        .unwrap();
    peer.run_until(&mut h, |peer, _| peer.connected);

    // The first packet publishes the track; the subscriber hears of it and subscribes.
    peer.send_vp8(&h, 1, true);
    let mut published = None;
    peer.run_until(&mut h, |_, h| {
        published = h.told(2).into_iter().find_map(|m| match m {
            ControlMessage::TrackPublished(t) => Some(t),
            _ => None,
        });
        published.is_some()
    });
    let published = published.unwrap();
    assert_eq!(published.participant, ParticipantId(1));
    assert_eq!(published.codec.name, "VP8");
    let (media, ssrc) = h.subscribe(2, published.track);

    // Subscribing asks the WebRTC publisher for a keyframe: a PLI on the wire.
    peer.run_until(&mut h, |peer, _| peer.plis > 0);

    for seq in 2..6 {
        peer.send_vp8(&h, seq, seq == 2);
    }
    let mut got = Vec::new();
    peer.run_until(&mut h, |_, h| {
        got.extend(h.media(2));
        got.len() >= 4
    });
    for datagram in &got {
        let (on, rtp) = parse_media(datagram);
        assert_eq!(on, media);
        assert_eq!(&rtp[8..12], &ssrc.to_be_bytes());
    }

    // A second offer for the same participant id is refused by the core; the first goes on.
    let mut other = RtcPeer::publisher(h.now);
    let again = h.hub.webrtc_offer(
        WebRtcOffer {
            participant: ParticipantId(1),
            resource: "resource-2".into(),
            token: token("camera", "lobby"),
            room: RoomId("lobby".into()),
            role: OfferRole::Publish,
            sdp: other.offer(h.now),
        },
        h.now,
    );
    assert!(matches!(again, Err(BridgeError::Room(_))), "{again:?}");
}

#[test]
fn a_bad_whip_offer_is_refused_with_a_typed_error_and_nothing_joins() {
    let mut h = Harness::new();
    h.join(2);
    let refused = h.hub.webrtc_offer(
        WebRtcOffer {
            participant: ParticipantId(1),
            resource: "r".into(),
            token: token("camera", "lobby"),
            room: RoomId("lobby".into()),
            role: OfferRole::Publish,
            sdp: "v=0\r\nnot an offer\r\n".into(),
        },
        h.now,
    );
    assert!(matches!(refused, Err(BridgeError::Offer(_))), "{refused:?}");
    assert!(h.told(2).is_empty(), "nobody joined");
    assert_eq!(h.hub.stats().participants, 1);
}

/// Carries every pipe message between the hubs of `workers` until none is left; returns how
/// many media messages crossed.
fn shuttle(workers: &mut [&mut Harness]) -> usize {
    let mut media = 0;
    loop {
        let mut moved = false;
        for from in 0..workers.len() {
            workers[from].drain();
            let piped = std::mem::take(&mut workers[from].piped);
            for (to, room, message) in piped {
                moved = true;
                media += usize::from(matches!(message, RoomMessage::Media { .. }));
                let now = workers[to].now;
                workers[to].hub.handle_pipe(&room, from, message, now);
            }
        }
        if !moved {
            return media;
        }
    }
}

impl Harness {
    /// A harness for worker `index` of a node.
    fn worker(index: usize) -> Harness {
        let mut h = Harness::new();
        h.hub.set_worker(index);
        h
    }

    /// Attaches `participant` and asks to join the lobby, whose home is worker `home`.
    fn join_spread(&mut self, participant: u64, home: usize) {
        self.attach(participant, participant).expect("attached");
        let join = ControlMessage::Join(Join {
            request: RequestId(1),
            room: RoomId("lobby".into()),
            name: String::new(),
        });
        self.hub
            .handle_request(ParticipantId(participant), join, None, Some(home), self.now);
    }
}

/// A room spread over two workers: the publisher on the home, a subscriber on each. The
/// satellite's participant joins once the home's snapshot has arrived and sees the publisher;
/// each packet crosses the pipe once, and every subscriber gets every packet once, in order, on
/// its own SSRC with consecutive sequence numbers; a keyframe request of the satellite's
/// subscriber reaches the publisher on the home.
#[test]
fn a_room_spread_over_two_workers_reaches_every_subscriber_once_in_order() {
    let mut home = Harness::worker(0);
    let mut satellite = Harness::worker(1);
    home.join_spread(1, 0);
    assert!(matches!(
        home.told(1).first(),
        Some(ControlMessage::Joined(_))
    ));
    let track = home.publish_vp8(1);
    home.join_spread(2, 0);
    home.told(2);

    // The satellite's participant waits for the home's snapshot, then joins and sees the
    // publisher and its track.
    satellite.join_spread(3, 0);
    assert!(satellite.told(3).is_empty());
    shuttle(&mut [&mut home, &mut satellite]);
    let joined = satellite.told(3);
    assert!(
        matches!(joined.first(), Some(ControlMessage::Joined(_))),
        "{joined:?}"
    );
    let remote = joined
        .iter()
        .find_map(|m| match m {
            ControlMessage::TrackPublished(t) if t.participant == ParticipantId(1) => Some(t.track),
            _ => None,
        })
        .expect("the publisher's track is announced on the satellite");
    assert_eq!(remote, track, "the same track id on both workers");
    // The home's participants hear of the satellite's.
    shuttle(&mut [&mut home, &mut satellite]);
    assert!(home.told(2).iter().any(
        |m| matches!(m, ControlMessage::ParticipantJoined(p) if p.participant == ParticipantId(3))
    ));

    let (_, ssrc_home) = home.subscribe(2, track);
    let (media_satellite, ssrc_satellite) = satellite.subscribe(3, remote);
    shuttle(&mut [&mut home, &mut satellite]);
    for seq in 0..20u16 {
        home.send_vp8(1, 1000 + seq, seq == 0);
    }
    let crossed = shuttle(&mut [&mut home, &mut satellite]);
    assert_eq!(crossed, 20, "each packet crosses the pipe once");
    for (got, ssrc) in [
        (home.media(2), ssrc_home),
        (satellite.media(3), ssrc_satellite),
    ] {
        assert_eq!(got.len(), 20);
        let mut previous: Option<u16> = None;
        for datagram in &got {
            let (_, rtp) = parse_media(datagram);
            assert_eq!(u32::from_be_bytes([rtp[8], rtp[9], rtp[10], rtp[11]]), ssrc);
            let seq = u16::from_be_bytes([rtp[2], rtp[3]]);
            if let Some(previous) = previous {
                assert_eq!(seq, previous.wrapping_add(1));
            }
            previous = Some(seq);
        }
    }

    // A keyframe request on the satellite reaches the publisher on the home.
    home.told(1);
    satellite.now += Duration::from_secs(1);
    home.now += Duration::from_secs(1);
    satellite
        .hub
        .request_keyframe_for_media(ParticipantId(3), media_satellite, satellite.now);
    shuttle(&mut [&mut home, &mut satellite]);
    assert!(
        home.told(1)
            .iter()
            .any(|m| matches!(m, ControlMessage::KeyframeRequest(_))),
        "the publisher is asked for a keyframe"
    );
}

// ---- bandwidth allocation ----

/// A clear link's estimate of `bps`.
fn clear(bps: u64) -> Estimate {
    Estimate {
        available_bps: bps,
        acked_bps: bps,
        proven_bps: bps,
        state: LinkState::Clear,
        queue_delay: Duration::ZERO,
    }
}

/// What fits one video's lowest layer (150 kbit/s by default, with room to resume it) and not
/// two.
const ONE_VIDEO: u64 = 200_000;

fn paused(track: TrackId) -> ControlMessage {
    ControlMessage::TrackPaused(TrackPaused {
        track,
        reason: PauseReason::BANDWIDTH,
    })
}

fn resumed(track: TrackId) -> ControlMessage {
    ControlMessage::TrackResumed(TrackResumed {
        track,
        reason: PauseReason::BANDWIDTH,
    })
}

impl Harness {
    /// Publishes a one-layer VP8 track from `source` (`camera`, `screen`) on media id 1.
    fn publish_source(&mut self, participant: u64, source: &str) -> TrackId {
        let answer = self.request(
            participant,
            ControlMessage::Publish(Publish {
                request: RequestId(2),
                kind: TrackKind::Video,
                codec: vp8(),
                source: source.into(),
                layers: vec![Layer {
                    media: MediaId(1),
                    max_bitrate: 0,
                    width: 0,
                    height: 0,
                }],
                muted: false,
            }),
        );
        match answer.as_slice() {
            [ControlMessage::Published(p)] => p.track,
            other => panic!("expected Published, got {other:?}"),
        }
    }

    /// Subscribes `participant` to `track` with `priority`; returns everything it was told.
    fn subscribe_with(
        &mut self,
        participant: u64,
        track: TrackId,
        priority: Option<u8>,
    ) -> Vec<ControlMessage> {
        self.request(
            participant,
            ControlMessage::Subscribe(Subscribe {
                request: RequestId(3),
                track,
                max_layer: None,
                priority,
            }),
        )
    }

    /// The media id `answer` (a subscription's) announces.
    fn media_of(answer: &[ControlMessage]) -> MediaId {
        match answer.first() {
            Some(ControlMessage::Subscribed(s)) => s.media,
            other => panic!("expected Subscribed, got {other:?}"),
        }
    }

    /// Gives `participant`'s session estimate to the hub; returns what it was told.
    fn estimate(&mut self, participant: u64, estimate: Estimate) -> Vec<ControlMessage> {
        self.hub
            .set_estimate(ParticipantId(participant), estimate, self.now);
        self.told(participant)
    }

    /// The media ids of the media datagrams `to` got since the last call (padding ignored).
    fn media_ids(&mut self, to: u64) -> Vec<MediaId> {
        self.media(to)
            .iter()
            .filter(|d| d.first() == Some(&datagram::KIND_MEDIA))
            .map(|d| parse_media(d).0)
            .collect()
    }
}

/// An estimate too small for two videos pauses the one of lower priority (its subscriber is
/// told `TrackPaused`, and nothing of it is forwarded, counted as `paused`), even though it was
/// subscribed first; a wider link resumes it (`TrackResumed`), from a keyframe.
#[test]
fn a_narrow_link_pauses_the_lower_priority_video_and_resumes_it_when_it_widens() {
    let mut h = Harness::new();
    h.join(1);
    let low = h.publish_vp8(1);
    h.join(2);
    let high = h.publish_vp8(2);
    h.join(3);
    let low_media = Harness::media_of(&h.subscribe_with(3, low, Some(50)));
    let high_media = Harness::media_of(&h.subscribe_with(3, high, None));
    h.told(3);

    assert_eq!(h.estimate(3, clear(ONE_VIDEO)), [paused(low)]);
    h.send_vp8(1, 1, true);
    h.send_vp8(2, 1, true);
    assert_eq!(
        h.media_ids(3),
        [high_media],
        "only the higher priority plays"
    );
    h.hub.update_gauges();
    assert_eq!(h.drops(DropReason::Paused), 1);
    assert_eq!(h.metrics.allocation.pauses.get(), 1);

    // Climbing back waits for the cooldown a forced pause starts; the publishers go on
    // sending (a silent layer is not resumed).
    let end = h.now + SfuConfig::default().layer_up_cooldown;
    let mut seq = 2;
    while h.now <= end {
        h.advance_to(h.now + Duration::from_millis(100));
        h.send_vp8(1, seq, false);
        h.send_vp8(2, seq, false);
        seq += 1;
    }
    assert!(h.told(3).is_empty());
    h.media(3);
    assert_eq!(h.estimate(3, clear(2_000_000)), [resumed(low)]);
    h.send_vp8(1, seq, true);
    assert_eq!(h.media_ids(3), [low_media], "from the next keyframe");
    h.hub.update_gauges();
    assert_eq!(h.metrics.allocation.resumes.get(), 1);
    let quic = TransportLabel {
        transport: Transport::Quic,
    };
    let estimates = h.metrics.allocation.estimates.get_or_create(&quic).clone();
    assert_eq!(estimates.count(), 2, "each estimate is counted");
}

/// `Subscribe.priority` reaches the core: a camera subscribed at 255 takes the place of a
/// screen share at its default (200, above a camera's default 100), which is paused.
#[test]
fn a_subscribe_priority_reaches_the_sfu() {
    let mut h = Harness::new();
    h.join(1);
    let screen = h.publish_source(1, "screen");
    h.join(2);
    let camera = h.publish_source(2, "camera");
    h.join(3);
    assert!(h.estimate(3, clear(ONE_VIDEO)).is_empty());
    let answer = h.subscribe_with(3, screen, None);
    assert!(matches!(answer.as_slice(), [ControlMessage::Subscribed(_)]));
    let answer = h.subscribe_with(3, camera, Some(255));
    assert!(
        matches!(answer.as_slice(), [ControlMessage::Subscribed(s), p] if s.track == camera && *p == paused(screen)),
        "{answer:?}"
    );
}

/// A subscription the budget does not cover is created paused: `Subscribed`, then
/// `TrackPaused`; and the snapshot of a resumed session says so again after its `Subscribed`.
#[test]
fn a_subscription_created_paused_is_answered_subscribed_then_track_paused() {
    let mut h = Harness::new();
    h.join(1);
    let screen = h.publish_source(1, "screen");
    h.join(2);
    let camera = h.publish_source(2, "camera");
    h.join(3);
    h.estimate(3, clear(ONE_VIDEO));
    let answer = h.subscribe_with(3, screen, None);
    assert!(matches!(answer.as_slice(), [ControlMessage::Subscribed(_)]));
    // The camera's default priority is below the screen share's: it does not fit.
    let answer = h.subscribe_with(3, camera, None);
    assert!(
        matches!(answer.as_slice(), [ControlMessage::Subscribed(s), p] if s.track == camera && *p == paused(camera)),
        "{answer:?}"
    );
    h.send_vp8(2, 1, true);
    assert!(h.media_ids(3).is_empty(), "nothing of it is forwarded");

    h.hub.detach(ParticipantId(3), ConnId(3), h.now);
    assert_eq!(h.resume(3, 30), Ok(Attached::Resumed { replaced: None }));
    let snapshot = h.told(3);
    let at = |track: TrackId| {
        snapshot
            .iter()
            .position(|m| matches!(m, ControlMessage::Subscribed(s) if s.track == track))
            .expect("in the snapshot")
    };
    assert_eq!(snapshot.get(at(camera) + 1), Some(&paused(camera)));
    assert!(
        !matches!(
            snapshot.get(at(screen) + 1),
            Some(ControlMessage::TrackPaused(_))
        ),
        "{snapshot:?}"
    );
}

/// `SetLayerPreference.priority` sets a subscription's priority, and an absent one returns it
/// to the default.
#[test]
fn set_layer_preference_sets_the_priority_and_an_absent_one_restores_the_default() {
    let mut h = Harness::new();
    h.join(1);
    let first = h.publish_vp8(1);
    h.join(2);
    let second = h.publish_vp8(2);
    h.join(3);
    h.estimate(3, clear(ONE_VIDEO));
    h.subscribe_with(3, first, None);
    // Equal priorities: the first subscribed plays.
    assert_eq!(h.subscribe_with(3, second, None)[1..], [paused(second)]);

    let prefer = |priority| {
        ControlMessage::SetLayerPreference(SetLayerPreference {
            request: RequestId(4),
            track: second,
            max_layer: None,
            priority,
        })
    };
    let told = h.request(3, prefer(Some(150)));
    assert_eq!(told.len(), 3, "{told:?}");
    assert!(
        told[1..].contains(&paused(first)) && told[1..].contains(&resumed(second)),
        "the second outranks the first: {told:?}"
    );
    assert!(matches!(told[0], ControlMessage::Ack(_)));

    // Back to the default: a tie, which goes to the first subscribed (a subscriber's first video
    // is never left paused).
    let told = h.request(3, prefer(None));
    assert_eq!(told.len(), 3, "{told:?}");
    assert!(
        told[1..].contains(&resumed(first)) && told[1..].contains(&paused(second)),
        "{told:?}"
    );
}

/// A probe of a QUIC or WebTransport subscriber's link sends padding datagrams (kind 0x02, each
/// at most 1000 bytes, behind the connection's prefix) for the probe's duration; a probe the core
/// stops early (a climb came of it) stops its padding at once.
#[test]
fn a_probe_sends_padding_behind_the_prefix_for_its_duration_and_stops_when_told() {
    const SESSION: u64 = 4;
    let prefix = DatagramPrefix::webtransport(SESSION);
    let mut h = Harness::new();
    h.join(1);
    let first = h.publish_vp8(1);
    h.join(2);
    let second = h.publish_vp8(2);
    h.attach_with_prefix(3, 3, prefix).expect("attached");
    h.request(
        3,
        ControlMessage::Join(Join {
            request: RequestId(1),
            room: RoomId("lobby".into()),
            name: String::new(),
        }),
    );
    h.subscribe_with(3, first, None);
    h.subscribe_with(3, second, None);
    assert_eq!(h.estimate(3, clear(ONE_VIDEO)), [paused(second)]);

    // The core probes once the link has been clear a while: collect what subscriber 3 gets,
    // slice by slice of virtual time, until the first probe is over and the link is quiet.
    let step = strait_media::bwe::PADDING_INTERVAL;
    let mut padding: Vec<(Instant, usize)> = Vec::new();
    let deadline = h.now + Duration::from_secs(20);
    while h.now < deadline {
        h.advance_to(h.now + step);
        for d in h.media(3) {
            let payload =
                datagram::strip_webtransport_prefix(&d, SESSION).expect("behind the prefix");
            assert_eq!(
                payload.first(),
                Some(&datagram::KIND_PADDING),
                "only padding"
            );
            assert!(matches!(
                datagram::parse_datagram(&payload),
                Ok(Datagram::Padding { .. })
            ));
            assert!(payload.len() <= 1000, "{}", payload.len());
            padding.push((h.now, payload.len()));
        }
        if padding
            .last()
            .is_some_and(|&(at, _)| h.now >= at + Duration::from_secs(1))
        {
            break;
        }
    }
    let (start, _) = *padding.first().expect("a probe sent padding");
    let (end, _) = *padding.last().expect("a probe sent padding");
    let lasted = end - start;
    let duration = strait_media::sfu::PROBE_DURATION;
    assert!(
        lasted + step * 2 >= duration && lasted <= duration,
        "padding for {lasted:?}, the probe lasts {duration:?}"
    );
    let bytes: usize = padding.iter().map(|&(_, len)| len).sum();
    assert!(bytes > 1000, "{bytes} bytes of padding");
    assert!(h.told(3).is_empty(), "padding alone changes nothing");

    // The next probe; a wide link during it resumes the paused video, which ends the probe:
    // its padding stops at once.
    let deadline = h.now + Duration::from_secs(20);
    while h.media(3).is_empty() {
        assert!(h.now < deadline, "no second probe");
        h.advance_to(h.now + step);
    }
    assert_eq!(h.estimate(3, clear(2_000_000)), [resumed(second)]);
    h.media(3);
    h.advance_to(h.now + Duration::from_millis(500));
    assert!(h.media(3).is_empty(), "the padding stopped");
}

/// A WHEP subscriber's estimate, from the TWCC feedback its stack sends about what the bridge
/// forwards to it, reaches the hub (`WebRtcEvent::Estimate`), which counts it for the `webrtc`
/// transport (it does not give it to the SFU core yet: a WebRTC leg cannot be probed, so a
/// video paused there could never come back).
#[test]
fn a_whep_subscribers_twcc_feedback_becomes_its_estimate() {
    let mut h = Harness::new();
    h.join(1);
    let track = h.publish_vp8(1);
    let mut peer = RtcPeer::subscriber(h.now);
    let offer = peer.offer(h.now);
    let answer = h
        .hub
        .webrtc_offer(
            WebRtcOffer {
                participant: ParticipantId(2),
                resource: "whep-1".into(),
                token: token("viewer", "lobby"),
                room: RoomId("lobby".into()),
                role: OfferRole::Subscribe(track.0),
                sdp: offer,
            },
            h.now,
        )
        .expect("the offer is answered");
    assert!(
        answer.contains("transport-wide-cc"),
        "transport-cc is negotiated: {answer}"
    );
    peer.pc
        .set_remote_description(h.now, RTCSessionDescription::answer(answer).unwrap())
        .unwrap();
    peer.run_until(&mut h, |peer, _| peer.connected);

    let webrtc = h
        .metrics
        .allocation
        .estimates
        .get_or_create(&TransportLabel {
            transport: Transport::Webrtc,
        })
        .clone();
    assert_eq!(webrtc.count(), 0);
    let mut seq = 0u16;
    peer.run_until(&mut h, |_, h| {
        // A frame every 10 ms of virtual time or so, from the QUIC publisher.
        seq += 1;
        h.send_vp8(1, seq, seq % 100 == 1);
        webrtc.count() > 0
    });
    assert!(webrtc.sum() > 0.0, "an estimate of {} bit/s", webrtc.sum());
}

/// `TrackPaused` and `TrackResumed` are the server's to send: from a client they are refused as
/// any other server message without a request id is (`LayerSwitched` here).
#[test]
fn a_client_sending_track_paused_or_resumed_is_refused_like_any_server_message() {
    let mut h = Harness::new();
    h.join(1);
    let track = h.publish_vp8(1);
    let refusal = |told: Vec<ControlMessage>| match told.as_slice() {
        [ControlMessage::Error(e)] if e.request.is_none() => (e.code, e.reason.clone()),
        other => panic!("expected an Error, got {other:?}"),
    };
    let switched = refusal(h.request(
        1,
        ControlMessage::LayerSwitched(strait_protocol::LayerSwitched { track, layer: 0 }),
    ));
    assert_eq!(switched.0, ErrorCode::INVALID_REQUEST);
    for (message, kind) in [
        (
            ControlMessage::TrackPaused(TrackPaused {
                track,
                reason: PauseReason::BANDWIDTH,
            }),
            28,
        ),
        (
            ControlMessage::TrackResumed(TrackResumed {
                track,
                reason: PauseReason::LOAD,
            }),
            29,
        ),
    ] {
        let (code, reason) = refusal(h.request(1, message));
        assert_eq!(code, switched.0);
        assert_eq!(reason, switched.1.replace("19", &kind.to_string()));
    }
}

/// What a session or a WebRTC leg passes on to its worker: the first estimate, a new state, a
/// move of a tenth or more; never a smaller move or the same estimate again (an idle link's 0
/// included), so that a steady or idle leg costs the worker nothing.
#[test]
fn an_estimate_is_passed_on_when_it_moved_a_tenth_or_changed_state() {
    use super::estimate_moved;
    let at = |bps, state| Estimate {
        available_bps: bps,
        acked_bps: bps,
        proven_bps: bps,
        state,
        queue_delay: Duration::ZERO,
    };
    let last = Some(at(1_000_000, LinkState::Clear));
    assert!(estimate_moved(None, at(0, LinkState::Clear)));
    assert!(!estimate_moved(last, at(1_000_000, LinkState::Clear)));
    assert!(!estimate_moved(last, at(1_090_000, LinkState::Clear)));
    assert!(!estimate_moved(last, at(910_000, LinkState::Clear)));
    assert!(estimate_moved(last, at(1_100_000, LinkState::Clear)));
    assert!(estimate_moved(last, at(900_000, LinkState::Clear)));
    assert!(estimate_moved(last, at(1_000_000, LinkState::Warning)));
    let idle = Some(at(0, LinkState::Clear));
    assert!(!estimate_moved(idle, at(0, LinkState::Clear)));
    assert!(estimate_moved(idle, at(1, LinkState::Clear)));
}
