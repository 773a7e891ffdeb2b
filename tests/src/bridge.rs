//! The WebRTC bridge's test fixture: legacy WebRTC peers (the async `webrtc` crate) that publish
//! with WHIP or subscribe with WHEP or `/ws/rtc`, native publishers that send video, and the
//! waits a test of the bridge makes on a native session (a participant, its track, its media).
//!
//! A test reads as what happens in the room:
//!
//! ```text
//! let gw = TestGateway::start_bridge().await;
//! let viewer = gw.native("stage", "viewer").await;
//! let publisher = gw.whip_publisher("stage", "camera").await;
//! let (camera, track, sub) = subscribe_to_video_of(&viewer, "camera", VideoCodec::Vp8).await;
//! let indices = receive_vp8(&viewer, &sub, 20).await;
//! ```
//!
//! Every wait is bounded by [`WAIT`] and waits for something to happen (an event, a packet, a
//! count); every sender is bounded (at most 60 s of packets) and stops when closed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::shared::marshal::Unmarshal;
use strait_client::{PublishedTrack, Session, SessionEvent, Subscription};
use strait_gateway::auth::Grants;
use strait_protocol::{Codec, ControlMessage, ParticipantId, SdpType, SessionDescription};
use strait_protocol::{TrackId, TrackKind};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::RTCConfiguration;

use crate::fixture::{TestGateway, rtp};
use crate::http::{HttpResponse, post_offer};
use crate::sdp::payload_type_of;
use crate::webrtc_peer::Peer;
use crate::ws::WsClient;

/// Longest any single wait of the bridge tests may take (DTLS with fresh certificates is slow in
/// debug builds).
pub const WAIT: Duration = Duration::from_secs(20);

/// A local VP8 track sending on `ssrc`.
pub fn local_vp8_track(ssrc: u32) -> Arc<TrackLocalStaticRTP> {
    local_video_track(ssrc, VideoCodec::Vp8)
}

/// A local `codec` video track sending on `ssrc`.
pub fn local_video_track(ssrc: u32, codec: VideoCodec) -> Arc<TrackLocalStaticRTP> {
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "whip-stream".into(),
        "whip-video".into(),
        "whip-video".into(),
        RtpCodecKind::Video,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: codec.rtc(),
            ..Default::default()
        }],
    )))
}

/// The video codecs the tests send through the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// VP8.
    Vp8,
    /// VP9.
    Vp9,
    /// H.264, constrained baseline, packetization mode 1.
    H264,
}

impl VideoCodec {
    /// Its name in SDP.
    pub fn name(self) -> &'static str {
        match self {
            Self::Vp8 => "VP8",
            Self::Vp9 => "VP9",
            Self::H264 => "H264",
        }
    }

    /// Its `a=fmtp` parameters.
    pub fn fmtp(self) -> &'static str {
        match self {
            Self::H264 => "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
            Self::Vp8 | Self::Vp9 => "",
        }
    }

    /// The codec as the `webrtc` crate names it.
    pub fn rtc(self) -> RTCRtpCodec {
        RTCRtpCodec {
            mime_type: format!("video/{}", self.name()),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: self.fmtp().into(),
            rtcp_feedback: vec![],
        }
    }

    /// A packet with payload type `pt`; its index at offset 16, as `rtp::vp8` puts it.
    pub fn packet(self, pt: u8, seq: u16, ts: u32, ssrc: u32, key: bool, index: u32) -> Vec<u8> {
        match self {
            Self::Vp8 => {
                let mut p = rtp::vp8(seq, ts, ssrc, key, index);
                p[1] = (p[1] & 0x80) | pt;
                p
            }
            Self::Vp9 => rtp::vp9(pt, seq, ts, ssrc, key, index),
            Self::H264 => rtp::h264(pt, seq, ts, ssrc, key, index),
        }
    }

    /// Whether a whole RTP packet (12-byte header, no extensions) starts a keyframe.
    pub fn is_keyframe(self, packet: &[u8]) -> bool {
        let payload = &packet[12..];
        match self {
            Self::Vp8 => strait_media::sfu::keyframe::vp8_keyframe_start(payload),
            Self::Vp9 => strait_media::sfu::keyframe::vp9_keyframe_start(payload),
            Self::H264 => strait_media::sfu::keyframe::h264_keyframe_start(payload),
        }
    }

    /// A native publisher's spec of one video track in this codec, on payload type `pt`.
    pub fn spec(self, pt: u8) -> strait_client::PublishSpec {
        let mut spec = vp8_spec();
        spec.codec.name = self.name().into();
        spec.codec.payload_type = pt;
        spec.codec.fmtp = self.fmtp().into();
        spec
    }
}

/// A local Opus track sending on `ssrc`.
pub fn local_opus_track(ssrc: u32) -> Arc<TrackLocalStaticRTP> {
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "whip-stream".into(),
        "whip-audio".into(),
        "whip-audio".into(),
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: RTCRtpCodec {
                mime_type: "audio/opus".into(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
                rtcp_feedback: vec![],
            },
            ..Default::default()
        }],
    )))
}

/// Hands every RTCP compound packet a local track receives to `on_rtcp`, until the track's
/// sender lets go of it (its peer connection closed). The test peer delivers all RTCP to the
/// application (`DeliverKeyframeRequests::all_rtcp`). Start it after `add_track`, which binds the
/// track to its sender before it returns.
pub fn watch_rtcp(
    track: Arc<TrackLocalStaticRTP>,
    mut on_rtcp: impl FnMut(&[Box<dyn rtc::rtcp::Packet>]) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(event) = track.poll().await {
            if let TrackLocalEvent::OnRtcpPacket(packets) = event {
                on_rtcp(&packets);
            }
        }
    })
}

/// Ends a publisher of the tests: stops its `sender` task (which looks at `stop` before each
/// packet), closes its peer connection, and waits for its RTCP `watcher`, which ends with the
/// connection.
pub async fn close_publisher(
    stop: &AtomicBool,
    sender: tokio::task::JoinHandle<()>,
    peer: &Peer,
    watcher: tokio::task::JoinHandle<()>,
) {
    stop.store(true, Ordering::Relaxed);
    tokio::time::timeout(WAIT, sender)
        .await
        .expect("the sender stops in time")
        .expect("the sender ran to its end");
    let _ = peer.pc.close().await;
    tokio::time::timeout(WAIT, watcher)
        .await
        .expect("the RTCP watcher ends with the connection")
        .expect("the watcher ran to its end");
}

/// A WHIP publisher: a peer with one VP8 track, connected, sending packets every 5 ms (a
/// keyframe first and after each keyframe request it sees) until stopped.
#[derive(Debug)]
pub struct WhipPublisher {
    /// Its peer connection.
    pub peer: Peer,
    /// The WHIP resource (the answer's `Location`).
    pub location: String,
    /// The token it published with (its own: it may end the session).
    pub token: String,
    /// The bridge's answer.
    pub answer: String,
    /// The offer it posted (its host candidate is its address).
    pub offer: String,
    /// The `Link` headers of the answer (TURN servers, when the gateway has them).
    pub links: Vec<String>,
    /// Keyframe requests (PLI/FIR) the peer received.
    pub keyframe_requests: Arc<Count>,
    /// RTCP receiver reports the peer received (the bridge reports on what it receives).
    pub receiver_reports: Arc<Count>,
    /// Video packets written so far (the next one's payload index).
    pub sent: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    sender: tokio::task::JoinHandle<()>,
    watcher: tokio::task::JoinHandle<()>,
}

/// How a [`WhipPublisher`] is set up; the default is one VP8 track over host candidates.
#[derive(Debug, Clone, Default)]
pub struct WhipOptions {
    /// Also publish an Opus track, one packet per tick.
    pub audio: bool,
    /// The peer's ICE configuration (ICE servers, relay-only policy).
    pub configuration: Option<RTCConfiguration>,
    /// The video codec (VP8 when `None`).
    pub codec: Option<VideoCodec>,
}

impl WhipPublisher {
    /// Publishes to `room` with WHIP as `identity` (a token of its own), connects, and starts
    /// sending; asserts what every WHIP answer must be (201, SDP, a `Location` under the room,
    /// ICE-lite).
    pub async fn start(
        gw: &TestGateway,
        room: &str,
        identity: &str,
        options: WhipOptions,
    ) -> WhipPublisher {
        let WhipOptions {
            audio,
            configuration,
            codec,
        } = options;
        let codec = codec.unwrap_or(VideoCodec::Vp8);
        let token = gw.token(room, identity);
        let token = token.as_str();
        let mut peer = Peer::with_configuration(configuration).await;
        let ssrc = 0x00c0_ffee;
        let track = local_video_track(ssrc, codec);
        peer.pc
            .add_track(Arc::clone(&track) as Arc<dyn TrackLocal>)
            .await
            .unwrap();
        let audio_ssrc = 0x00a0_d10a;
        let audio_track = if audio {
            let t = local_opus_track(audio_ssrc);
            peer.pc
                .add_track(Arc::clone(&t) as Arc<dyn TrackLocal>)
                .await
                .unwrap();
            Some(t)
        } else {
            None
        };
        let offer = peer.offer().await;
        let response = post_offer(gw, &format!("/whip/{room}"), token, &offer).await;
        assert_eq!(response.status, 201, "WHIP answered {response:?}");
        assert_eq!(response.header("content-type"), Some("application/sdp"));
        let location = response
            .header("location")
            .expect("a Location header")
            .to_owned();
        assert!(
            location.starts_with(&format!("/whip/{room}/")),
            "{location}"
        );
        assert!(response.body.contains("a=ice-lite"), "{}", response.body);
        peer.finish(&response.body).await;
        // The payload type the answer gave the codec.
        let pt = payload_type_of(&response.body, codec.name());

        let keyframe_requests = Arc::new(Count::default());
        let receiver_reports = Arc::new(Count::default());
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let requests = Arc::clone(&keyframe_requests);
            let reports = Arc::clone(&receiver_reports);
            watch_rtcp(Arc::clone(&track), move |packets| {
                let count = |f: fn(&dyn std::any::Any) -> bool| {
                    packets.iter().filter(|p| f(p.as_any())).count() as u32
                };
                requests.add(count(|p| p.is::<PictureLossIndication>()));
                reports.add(count(|p| p.is::<ReceiverReport>()));
            })
        };
        let sent = Arc::new(AtomicU32::new(0));
        let sender = {
            let requests = Arc::clone(&keyframe_requests);
            let stop = Arc::clone(&stop);
            let sent = Arc::clone(&sent);
            tokio::spawn(async move {
                let mut answered = 0;
                let mut tick = tokio::time::interval(Duration::from_millis(5));
                // Bounded: at most 60 s of packets.
                for index in 0u32..12_000 {
                    tick.tick().await;
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let asked = requests.get();
                    let key = index == 0 || asked > answered;
                    answered = asked;
                    let bytes = codec.packet(pt, index as u16, index * 3000, ssrc, key, index);
                    let packet = rtc::rtp::Packet::unmarshal(&mut &bytes[..]).unwrap();
                    let _ = track.write_rtp(packet).await;
                    sent.store(index + 1, Ordering::Relaxed);
                    if let Some(audio) = &audio_track {
                        let bytes = rtp::opus(index as u16, index * 240, audio_ssrc, index);
                        let packet = rtc::rtp::Packet::unmarshal(&mut &bytes[..]).unwrap();
                        let _ = audio.write_rtp(packet).await;
                    }
                }
            })
        };
        let links = response
            .headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("link"))
            .map(|(_, value)| value.clone())
            .collect();
        WhipPublisher {
            peer,
            location,
            token: token.to_owned(),
            answer: response.body,
            offer,
            links,
            keyframe_requests,
            receiver_reports,
            sent,
            stop,
            sender,
            watcher,
        }
    }

    /// Keyframe requests the peer received so far.
    pub fn keyframe_requests(&self) -> u32 {
        self.keyframe_requests.get()
    }

    /// Stops sending and closes the peer connection (no `DELETE`).
    pub async fn close(self) {
        close_publisher(&self.stop, self.sender, &self.peer, self.watcher).await;
    }
}

/// Waits until `session` learns of a participant with `identity` and returns its id.
pub async fn wait_for_participant(session: &Session, identity: &str) -> ParticipantId {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(p) = session
                .participants()
                .into_iter()
                .find(|p| p.identity == identity)
            {
                return p.participant;
            }
            session.next_event().await.expect("session open");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{identity} never joined"))
}

/// Waits until `session` learns of a track published by `participant`.
pub async fn wait_for_track_of(session: &Session, participant: ParticipantId) -> TrackId {
    wait_for_video_of(session, participant, VideoCodec::Vp8).await
}

/// Waits until `session` learns of a `codec` video track published by `participant`.
pub async fn wait_for_video_of(
    session: &Session,
    participant: ParticipantId,
    codec: VideoCodec,
) -> TrackId {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(t) = session
                .tracks()
                .into_iter()
                .find(|t| t.participant == participant)
            {
                assert_eq!(t.kind, TrackKind::Video);
                assert!(
                    t.codec.name.eq_ignore_ascii_case(codec.name()),
                    "{:?}",
                    t.codec
                );
                return t.track;
            }
            session.next_event().await.expect("session open");
        }
    })
    .await
    .expect("the WebRTC publisher's track is announced")
}

/// Waits until `identity` joins `session`'s room and publishes its VP8 track; returns the
/// participant, the track and what `session` knows of it.
pub async fn published_video_of(
    session: &Session,
    identity: &str,
) -> (ParticipantId, TrackId, strait_protocol::TrackInfo) {
    let participant = wait_for_participant(session, identity).await;
    let track = wait_for_track_of(session, participant).await;
    let info = session
        .tracks()
        .into_iter()
        .find(|t| t.track == track)
        .expect("the track");
    (participant, track, info)
}

/// Waits until `participant` leaves `session`'s room.
pub async fn wait_for_leave(session: &Session, participant: ParticipantId) {
    tokio::time::timeout(WAIT, async {
        loop {
            if !session
                .participants()
                .iter()
                .any(|p| p.participant == participant)
            {
                return;
            }
            session.next_event().await.expect("session open");
        }
    })
    .await
    .expect("the WebRTC participant leaves the room");
}

/// Receives `count` packets of `sub`; asserts they carry its SSRC, consecutive sequence numbers,
/// and start with a keyframe. Returns their payload indices.
pub async fn receive_vp8(session: &Session, sub: &Subscription, count: usize) -> Vec<u32> {
    receive_video(session, sub, count, VideoCodec::Vp8).await
}

/// [`receive_vp8`] for any codec.
pub async fn receive_video(
    session: &Session,
    sub: &Subscription,
    count: usize,
    codec: VideoCodec,
) -> Vec<u32> {
    let (media, ssrc) = (sub.media.0, sub.ssrc);
    let mut packets: Vec<Bytes> = Vec::new();
    tokio::time::timeout(WAIT, async {
        while packets.len() < count {
            let packet = session.recv_media().await.expect("media");
            if packet.media.0 == media {
                packets.push(packet.rtp);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} packets arrived", packets.len()));
    assert!(
        codec.is_keyframe(&packets[0]),
        "forwarding starts at a keyframe"
    );
    let first = rtp::seq(&packets[0]);
    for (k, p) in packets.iter().enumerate() {
        assert_eq!(rtp::ssrc(p), ssrc, "the subscription's SSRC");
        assert_eq!(rtp::seq(p), first.wrapping_add(k as u16), "consecutive");
    }
    packets.iter().map(|p| rtp::index_at(p, 16)).collect()
}

/// A count that another task raises, with a wait for it to pass a value (no polling).
#[derive(Debug, Default)]
pub struct Count {
    value: AtomicU32,
    raised: tokio::sync::Notify,
}

impl Count {
    /// Raises the count by `n`.
    pub fn add(&self, n: u32) {
        if n > 0 {
            self.value.fetch_add(n, Ordering::Relaxed);
            self.raised.notify_waiters();
        }
    }

    /// The count now.
    pub fn get(&self) -> u32 {
        self.value.load(Ordering::Relaxed)
    }

    /// Waits until the count is above `before`, or fails naming `what`.
    pub async fn wait_above(&self, before: u32, what: &str) {
        tokio::time::timeout(WAIT, async {
            loop {
                // Registered before the check, so a raise in between is not missed.
                let raised = self.raised.notified();
                if self.get() > before {
                    return;
                }
                raised.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
    }
}

/// The spec of a native VP8 track on payload type [`rtp::VP8_PT`].
pub fn vp8_spec() -> strait_client::PublishSpec {
    strait_client::PublishSpec {
        kind: TrackKind::Video,
        codec: Codec {
            name: "VP8".into(),
            payload_type: rtp::VP8_PT,
            clock_rate: 90_000,
            channels: 0,
            fmtp: String::new(),
        },
        source: "camera".into(),
        layers: vec![strait_client::LayerSpec::default()],
        muted: false,
    }
}

impl TestGateway {
    /// A gateway for the bridge's tests: keyframe requests close together are not held back
    /// long, and offers may be up to 16 KiB.
    pub async fn start_bridge() -> TestGateway {
        TestGateway::start_with(|c| {
            // Keyframe requests close together in a test are not held back long.
            c.media.keyframe_request_interval = Duration::from_millis(50);
            c.webrtc.max_sdp_bytes = 16 * 1024;
        })
        .await
    }

    /// A gateway with the bridge and the embedded TURN server on UDP, TCP and TLS (loopback).
    pub async fn start_bridge_with_turn() -> TestGateway {
        TestGateway::start_with(|c| {
            let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
            c.turn.enabled = true;
            c.turn.udp_listen = any;
            c.turn.tcp_listen = any;
            c.turn.tls_listen = any;
            c.media.keyframe_request_interval = Duration::from_millis(50);
        })
        .await
    }

    /// `identity` publishes one VP8 track to `room` with WHIP and sends on it (see
    /// [`WhipPublisher`]).
    pub async fn whip_publisher(&self, room: &str, identity: &str) -> WhipPublisher {
        WhipPublisher::start(self, room, identity, WhipOptions::default()).await
    }

    /// [`whip_publisher`](Self::whip_publisher), set up by `options`.
    pub async fn whip_publisher_with(
        &self,
        room: &str,
        identity: &str,
        options: WhipOptions,
    ) -> WhipPublisher {
        WhipPublisher::start(self, room, identity, options).await
    }

    /// A WHEP subscriber of `track` in `room` (see [`WhepSubscriber`]).
    pub async fn whep_subscriber(&self, room: &str, track: TrackId) -> WhepSubscriber {
        WhepSubscriber::start(self, Peer::new().await, room, track).await
    }

    /// [`whep_subscriber`](Self::whep_subscriber) on a peer of the caller's.
    pub async fn whep_subscriber_on(
        &self,
        peer: Peer,
        room: &str,
        track: TrackId,
    ) -> WhepSubscriber {
        WhepSubscriber::start(self, peer, room, track).await
    }

    /// `identity` joins `room` natively and publishes one `codec` video track on payload type
    /// `pt`, sending on it (see [`NativeVideoPublisher`]).
    pub async fn native_video_publisher(
        &self,
        room: &str,
        identity: &str,
        codec: VideoCodec,
        pt: u8,
    ) -> NativeVideoPublisher {
        let session = Arc::new(self.native(room, identity).await);
        let published = session.publish(codec.spec(pt)).await.expect("publish");
        NativeVideoPublisher::start(session, published, pt, codec)
    }

    /// `identity` joins `room` on `/ws/rtc` and offers one recvonly video section (see
    /// [`WsSubscriber`]).
    pub async fn ws_subscriber(
        &self,
        room: &str,
        identity: &str,
        subscriptions: usize,
    ) -> WsSubscriber {
        let mut ws = WsClient::hello(self, &self.token(room, identity)).await;
        ws.join(room).await;
        let mut peer = Peer::new().await;
        peer.receive_only(RtpCodecKind::Video).await;
        let offer = peer.offer().await;
        let (answer, subscribed) = signal_offer(&mut ws, offer, subscriptions).await;
        peer.finish(&answer).await;
        WsSubscriber {
            ws,
            peer,
            answer,
            subscribed,
        }
    }
}

/// A native publisher of one video track: a packet every 5 ms, a keyframe first and after every
/// keyframe request it is sent (counted), until closed.
pub struct NativeVideoPublisher {
    /// Its session.
    pub session: Arc<Session>,
    /// The track it publishes.
    pub published: PublishedTrack,
    /// Keyframe requests the session received.
    pub keyframe_requests: Arc<Count>,
    stop: Arc<AtomicBool>,
    sender: tokio::task::JoinHandle<()>,
}

impl NativeVideoPublisher {
    /// Starts sending `codec` packets on payload type `pt` on the first layer of `published`.
    pub fn start(
        session: Arc<Session>,
        published: PublishedTrack,
        pt: u8,
        codec: VideoCodec,
    ) -> NativeVideoPublisher {
        let media = published.media[0];
        let keyframe_requests = Arc::new(Count::default());
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::clone(&keyframe_requests);
        let stopped = Arc::clone(&stop);
        let sending = Arc::clone(&session);
        let sender = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            // Bounded: at most 60 s of packets.
            for index in 0u32..12_000 {
                tick.tick().await;
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                let mut key = index == 0;
                while let Some(event) = sending.try_next_event() {
                    if matches!(event, SessionEvent::KeyframeRequested { .. }) {
                        requests.add(1);
                        key = true;
                    }
                }
                let packet = codec.packet(pt, index as u16, index * 3000, 0x0051_0000, key, index);
                let _ = sending.send_rtp(media, &packet);
            }
        });
        NativeVideoPublisher {
            session,
            published,
            keyframe_requests,
            stop,
            sender,
        }
    }

    /// The track it publishes.
    pub fn track(&self) -> TrackId {
        self.published.track
    }

    /// Stops sending and closes the session.
    pub async fn close(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = tokio::time::timeout(WAIT, self.sender).await;
        self.session.close().await;
    }
}

impl std::fmt::Debug for NativeVideoPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeVideoPublisher")
            .field("published", &self.published)
            .finish_non_exhaustive()
    }
}

/// A WHEP subscriber: one recvonly video section, a subscribe-only token, connected, and the
/// remote track it was given.
pub struct WhepSubscriber {
    /// Its peer connection.
    pub peer: Peer,
    /// The bridge's answer.
    pub response: HttpResponse,
    /// The WHEP resource (the answer's `Location`).
    pub location: String,
    /// Its subscribe-only token.
    pub token: String,
    /// The track it receives.
    pub remote: Arc<dyn TrackRemote>,
}

impl WhepSubscriber {
    /// Subscribes `peer` to `track` of `room` with WHEP and connects; asserts 201 and a
    /// `Location` under the request's path.
    pub async fn start(gw: &TestGateway, mut peer: Peer, room: &str, track: TrackId) -> Self {
        peer.receive_only(RtpCodecKind::Video).await;
        let offer = peer.offer().await;
        let token = gw.token_with(
            room,
            "watcher",
            Grants {
                publish: false,
                subscribe: true,
                admin: false,
            },
        );
        let path = format!("/whep/{room}/{}", track.0);
        let response = post_offer(gw, &path, &token, &offer).await;
        assert_eq!(response.status, 201, "WHEP answered {response:?}");
        let location = response.header("location").expect("Location").to_owned();
        assert!(location.starts_with(&format!("{path}/")), "{location}");
        peer.finish(&response.body).await;
        let remote = next_remote_track(&mut peer, "the WHEP subscription").await;
        WhepSubscriber {
            peer,
            response,
            location,
            token,
            remote,
        }
    }

    /// The remote track's SSRC.
    pub async fn ssrc(&self) -> u32 {
        self.remote.ssrcs().await[0]
    }

    /// Closes the peer connection (no `DELETE`).
    pub async fn close(self) {
        let _ = self.peer.pc.close().await;
    }
}

impl std::fmt::Debug for WhepSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhepSubscriber")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// A `/ws/rtc` participant whose peer connection receives: its signaling session, its peer
/// (connected), the answer to its first offer and the subscriptions that came with it.
#[derive(Debug)]
pub struct WsSubscriber {
    /// Its signaling session.
    pub ws: WsClient,
    /// Its peer connection.
    pub peer: Peer,
    /// The answer to its first offer.
    pub answer: String,
    /// The `Subscribed` messages that followed the answer.
    pub subscribed: Vec<strait_protocol::Subscribed>,
}

/// The next remote track `peer` is given, or a failure naming `what` it was waiting for.
pub async fn next_remote_track(peer: &mut Peer, what: &str) -> Arc<dyn TrackRemote> {
    tokio::time::timeout(WAIT, peer.tracks.recv())
        .await
        .unwrap_or_else(|_| panic!("on_track fires for {what}"))
        .expect("a track")
}

/// Takes the next `count` RTP packets from `rx`, or fails naming `what`.
pub async fn receive_rtp(
    rx: &mut mpsc::UnboundedReceiver<rtc::rtp::Packet>,
    count: usize,
    what: &str,
) -> Vec<rtc::rtp::Packet> {
    let mut packets = Vec::new();
    tokio::time::timeout(WAIT, async {
        while packets.len() < count {
            packets.push(rx.recv().await.expect("rtp"));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: only {} packets arrived", packets.len()));
    packets
}

/// Waits until `identity` joins `session`'s room and publishes a `codec` video track, and
/// subscribes to it; returns the participant, the track and the subscription.
pub async fn subscribe_to_video_of(
    session: &Session,
    identity: &str,
    codec: VideoCodec,
) -> (ParticipantId, TrackId, Subscription) {
    let participant = wait_for_participant(session, identity).await;
    let track = wait_for_video_of(session, participant, codec).await;
    let sub = session.subscribe(track, None).await.expect("subscribe");
    (participant, track, sub)
}

/// Waits until `session` knows `count` tracks of `participant`, or fails naming `what`.
pub async fn wait_for_tracks_of(
    session: &Session,
    participant: ParticipantId,
    count: usize,
    what: &str,
) -> Vec<strait_protocol::TrackInfo> {
    tokio::time::timeout(WAIT, async {
        loop {
            let tracks: Vec<_> = session
                .tracks()
                .into_iter()
                .filter(|t| t.participant == participant)
                .collect();
            if tracks.len() == count {
                return tracks;
            }
            session.next_event().await.expect("session open");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Waits until `session` sees `participant` leave and returns the reason.
pub async fn wait_for_leave_reason(
    session: &Session,
    participant: ParticipantId,
) -> strait_protocol::ErrorCode {
    tokio::time::timeout(WAIT, async {
        loop {
            if let SessionEvent::ParticipantLeft {
                participant: left,
                reason,
            } = session.next_event().await.expect("session open")
                && left == participant
            {
                return reason;
            }
        }
    })
    .await
    .expect("the silent peer leaves the room")
}

/// The next packet `session` receives on `media`.
pub async fn next_packet_on(session: &Session, media: u32) -> Bytes {
    tokio::time::timeout(WAIT, async {
        loop {
            let packet = session.recv_media().await.expect("media");
            if packet.media.0 == media {
                return packet.rtp;
            }
        }
    })
    .await
    .expect("a packet on the subscription")
}

/// Adds a recvonly video section to `peer` and returns its new offer (gathering is complete
/// already: the candidates of the first offer are in it).
pub async fn reoffer_with_video_section(peer: &mut Peer) -> String {
    peer.receive_only(RtpCodecKind::Video).await;
    reoffer(peer).await
}

/// Creates a new offer on `peer` and sets it as its local description.
pub async fn reoffer(peer: &mut Peer) -> String {
    let offer = peer.pc.create_offer(None).await.unwrap();
    peer.pc.set_local_description(offer).await.unwrap();
    peer.pc.local_description().await.unwrap().sdp
}

/// Sends an offer on the WebSocket; returns the answer and the `Subscribed` that follow it.
pub async fn signal_offer(
    ws: &mut WsClient,
    sdp: String,
    subscriptions: usize,
) -> (String, Vec<strait_protocol::Subscribed>) {
    ws.send(&ControlMessage::Sdp(SessionDescription {
        kind: SdpType::Offer,
        sdp,
    }))
    .await;
    let answer = ws
        .expect(|m| match m {
            ControlMessage::Sdp(d) if d.kind == SdpType::Answer => Some(d.sdp.clone()),
            _ => None,
        })
        .await;
    let mut subscribed = Vec::new();
    while subscribed.len() < subscriptions {
        subscribed.push(
            ws.expect(|m| match m {
                ControlMessage::Subscribed(s) => Some(*s),
                _ => None,
            })
            .await,
        );
    }
    (answer, subscribed)
}

/// Reads a remote track's RTP into a channel.
pub fn rtp_of(track: Arc<dyn TrackRemote>) -> mpsc::UnboundedReceiver<rtc::rtp::Packet> {
    rtp_and_reports_of(track).0
}

/// [`rtp_of`], and the RTCP sender reports that arrive about the track, each with the number of
/// RTP packets of the track that arrived before it.
pub fn rtp_and_sender_reports_of(
    track: Arc<dyn TrackRemote>,
) -> (
    mpsc::UnboundedReceiver<rtc::rtp::Packet>,
    mpsc::UnboundedReceiver<(SenderReport, u32)>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (reports_tx, reports) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut received = 0u32;
        while let Some(event) = track.poll().await {
            let open = match event {
                TrackRemoteEvent::OnRtpPacket(packet) => {
                    received += 1;
                    tx.send(packet).is_ok()
                }
                TrackRemoteEvent::OnRtcpPacket(packets) => packets
                    .iter()
                    .filter_map(|p| p.as_any().downcast_ref::<SenderReport>())
                    .all(|report| reports_tx.send((report.clone(), received)).is_ok()),
                _ => true,
            };
            if !open {
                break;
            }
        }
    });
    (rx, reports)
}

/// [`rtp_of`], and a count of the RTCP sender reports that arrive about the track.
pub fn rtp_and_reports_of(
    track: Arc<dyn TrackRemote>,
) -> (mpsc::UnboundedReceiver<rtc::rtp::Packet>, Arc<Count>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let reports = Arc::new(Count::default());
    let counted = Arc::clone(&reports);
    tokio::spawn(async move {
        while let Some(event) = track.poll().await {
            let open = match event {
                TrackRemoteEvent::OnRtpPacket(packet) => tx.send(packet).is_ok(),
                TrackRemoteEvent::OnRtcpPacket(packets) => {
                    let n = packets.iter().filter(|p| p.as_any().is::<SenderReport>());
                    counted.add(n.count() as u32);
                    true
                }
                _ => true,
            };
            if !open {
                break;
            }
        }
    });
    (rx, reports)
}
