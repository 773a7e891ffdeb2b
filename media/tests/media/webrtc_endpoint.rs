//! The WebRTC endpoint against real `webrtc` (async webrtc-rs) peers over loopback UDP.
//!
//! The test owns the bridge's one UDP socket and drives the sans-IO [`Endpoint`] with a small
//! loop ([`Bridge::step`]); each client is a `webrtc` peer connection with its own socket and
//! tasks. Every wait is bounded and waits for an event, not for time to pass.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use strait_media::sfu::{CodecSpec, TrackKind};
use strait_media::webrtc::{
    Endpoint, PeerId, SendTrack, WebRtcConfig, WebRtcError, WebRtcEvent, simulcast_sections,
};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription, Registry,
    SettingEngineBuilder, register_default_interceptors,
};
use webrtc::runtime::default_runtime;

use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};

/// Longest any single wait in these tests may take.
const WAIT: Duration = Duration::from_secs(15);

/// The gateway's side: the one UDP socket and the endpoint behind it.
struct Bridge {
    endpoint: Endpoint,
    socket: UdpSocket,
    local: SocketAddr,
    events: VecDeque<WebRtcEvent>,
    /// The last STUN Binding request a client sent, and where from.
    last_check: Option<(SocketAddr, Vec<u8>)>,
}

impl Bridge {
    async fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = socket.local_addr().unwrap();
        let config = WebRtcConfig {
            local_addrs: vec![local],
            ..WebRtcConfig::default()
        };
        Self {
            endpoint: Endpoint::new(config),
            socket,
            local,
            events: VecDeque::new(),
            last_check: None,
        }
    }

    /// One turn of the gateway's loop: wait for a datagram (at most `max_wait`, or until the
    /// endpoint's next timer), feed it, run timers, send what is queued, collect events.
    async fn step(&mut self, max_wait: Duration) {
        let mut buf = [0u8; 2048];
        let now = Instant::now();
        let wait = self
            .endpoint
            .poll_timeout()
            .map_or(max_wait, |t| t.saturating_duration_since(now))
            .min(max_wait);
        if let Ok(Ok((n, from))) = tokio::time::timeout(wait, self.socket.recv_from(&mut buf)).await
        {
            self.feed(from, &buf[..n]);
            // Take whatever else is already waiting, so a burst is not paced by this loop.
            while let Ok((n, from)) = self.socket.try_recv_from(&mut buf) {
                self.feed(from, &buf[..n]);
            }
        }
        self.endpoint.handle_timeout(Instant::now());
        self.flush().await;
    }

    fn feed(&mut self, from: SocketAddr, bytes: &[u8]) {
        if bytes.starts_with(&[0x00, 0x01]) {
            self.last_check = Some((from, bytes.to_vec()));
        }
        self.endpoint
            .handle_datagram(Instant::now(), self.local, from, bytes);
    }

    async fn flush(&mut self) {
        while let Some(t) = self.endpoint.poll_transmit() {
            assert_eq!(t.from, self.local);
            let _ = self.socket.send_to(&t.bytes, t.to).await;
        }
        while let Some(event) = self.endpoint.poll_event() {
            self.events.push_back(event);
        }
    }

    /// Drives the loop until an event `pick` accepts arrives; earlier events stay queued.
    async fn wait_for<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&WebRtcEvent) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(i) = self.events.iter().position(|e| pick(e).is_some()) {
                let event = self.events.remove(i).unwrap();
                return pick(&event).unwrap();
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            self.step(Duration::from_millis(20)).await;
        }
    }

    /// Answers a client's offer, completes ICE and DTLS, returns the peer.
    async fn connect(&mut self, client: &Client, tracks: &[SendTrack]) -> PeerId {
        let offer = client.offer().await;
        let (peer, answer) = self
            .endpoint
            .accept_offer_with_tracks(&offer, tracks, Instant::now())
            .unwrap();
        assert!(
            answer.contains("a=ice-lite"),
            "answer is not ice-lite:\n{answer}"
        );
        assert!(
            answer.contains(&format!(
                "{} {} typ host",
                self.local.ip(),
                self.local.port()
            )),
            "answer lacks the host candidate:\n{answer}"
        );
        client
            .pc
            .set_remote_description(RTCSessionDescription::answer(answer).unwrap())
            .await
            .unwrap();
        self.flush().await;
        self.wait_for("connected", |e| {
            (*e == WebRtcEvent::Connected(peer)).then_some(())
        })
        .await;
        peer
    }
}

/// What a client's callbacks report to the test.
#[derive(Clone)]
struct Handler {
    gathered: mpsc::UnboundedSender<()>,
    connected: mpsc::UnboundedSender<()>,
    tracks: mpsc::UnboundedSender<Arc<dyn TrackRemote>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(());
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if state == RTCPeerConnectionState::Connected {
            let _ = self.connected.send(());
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.tracks.send(track);
    }
}

/// A legacy WebRTC peer (the async `webrtc` crate) on 127.0.0.1.
struct Client {
    pc: Box<dyn PeerConnection>,
    gathered: tokio::sync::Mutex<mpsc::UnboundedReceiver<()>>,
    connected: mpsc::UnboundedReceiver<()>,
    tracks: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
}

impl Client {
    async fn new() -> Self {
        Self::with_srtp_profiles(Vec::new()).await
    }

    /// A client that offers only `profiles` for DTLS-SRTP (all it supports when empty).
    async fn with_srtp_profiles(profiles: Vec<SrtpProtectionProfile>) -> Self {
        let mut media_engine = MediaEngine::default();
        media_engine.register_default_codecs().unwrap();
        let registry = register_default_interceptors(Registry::new(), &mut media_engine).unwrap();
        let (gathered_tx, gathered) = mpsc::unbounded_channel();
        let (connected_tx, connected) = mpsc::unbounded_channel();
        let (tracks_tx, tracks) = mpsc::unbounded_channel();
        let handler = Arc::new(Handler {
            gathered: gathered_tx,
            connected: connected_tx,
            tracks: tracks_tx,
        });
        let pc = PeerConnectionBuilder::new()
            .with_setting_engine({
                let engine = SettingEngineBuilder::new().with_include_loopback_candidate(true);
                if profiles.is_empty() {
                    engine.build()
                } else {
                    engine.with_srtp_protection_profiles(profiles).build()
                }
            })
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .with_handler(handler)
            .with_runtime(default_runtime().unwrap())
            .with_udp_addrs(vec!["127.0.0.1:0"])
            .build()
            .await
            .unwrap();
        Self {
            pc: Box::new(pc),
            gathered: tokio::sync::Mutex::new(gathered),
            connected,
            tracks,
        }
    }

    /// Creates the offer and waits for gathering, so the offer carries the host candidate.
    async fn offer(&self) -> String {
        let offer = self.pc.create_offer(None).await.unwrap();
        self.pc.set_local_description(offer).await.unwrap();
        let mut gathered = self.gathered.lock().await;
        tokio::time::timeout(WAIT, gathered.recv())
            .await
            .expect("ice gathering did not complete");
        self.pc.local_description().await.unwrap().sdp
    }
}

fn vp8() -> CodecSpec {
    CodecSpec {
        name: "VP8".into(),
        payload_type: 96,
        clock_rate: 90_000,
        channels: 0,
        fmtp: String::new(),
    }
}

fn local_vp8_track(ssrc: u32) -> Arc<TrackLocalStaticRTP> {
    local_track(RtpCodecKind::Video, ("video/VP8", ""), 90_000, 0, ssrc)
}

fn local_opus_track(ssrc: u32) -> Arc<TrackLocalStaticRTP> {
    local_track(
        RtpCodecKind::Audio,
        ("audio/opus", "minptime=10;useinbandfec=1"),
        48_000,
        2,
        ssrc,
    )
}

fn local_track(
    kind: RtpCodecKind,
    (mime_type, fmtp): (&str, &str),
    clock_rate: u32,
    channels: u16,
    ssrc: u32,
) -> Arc<TrackLocalStaticRTP> {
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "client-stream".into(),
        format!("client-{kind}"),
        format!("client-{kind}"),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: RTCRtpCodec {
                mime_type: mime_type.into(),
                clock_rate,
                channels,
                sdp_fmtp_line: fmtp.into(),
                rtcp_feedback: vec![],
            },
            ..Default::default()
        }],
    )))
}

/// A client publishing one VP8 track of SSRC `ssrc`, connected to the bridge.
async fn publisher(bridge: &mut Bridge, ssrc: u32) -> (Client, Arc<TrackLocalStaticRTP>, PeerId) {
    let client = Client::new().await;
    let track = local_vp8_track(ssrc);
    client
        .pc
        .add_track(Arc::clone(&track) as Arc<dyn TrackLocal>)
        .await
        .unwrap();
    let peer = bridge.connect(&client, &[]).await;
    (client, track, peer)
}

fn rtp_packet(pt: u8, ssrc: u32, seq: u16, payload: &[u8]) -> rtc::rtp::Packet {
    rtc::rtp::Packet {
        header: rtc::rtp::Header {
            version: 2,
            marker: true,
            payload_type: pt,
            sequence_number: seq,
            timestamp: u32::from(seq) * 3000,
            ssrc,
            ..Default::default()
        },
        payload: Bytes::copy_from_slice(payload),
    }
}

/// A recvonly client connected to the bridge with one VP8 send track of SSRC `ssrc`.
async fn subscriber(bridge: &mut Bridge, ssrc: u32) -> (Client, PeerId) {
    subscriber_with(bridge, ssrc, Client::new().await).await
}

/// `client`, made recvonly and connected to the bridge with one VP8 send track of SSRC `ssrc`.
async fn subscriber_with(bridge: &mut Bridge, ssrc: u32, client: Client) -> (Client, PeerId) {
    client
        .pc
        .add_transceiver_from_kind(
            RtpCodecKind::Video,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    let track = SendTrack {
        kind: TrackKind::Video,
        codec: vp8(),
        ssrc,
    };
    let peer = bridge.connect(&client, &[track]).await;
    (client, peer)
}

/// Sends RTP through the bridge until the client's `on_track` fires; returns the track.
async fn first_remote_track(
    bridge: &mut Bridge,
    client: &mut Client,
    peer: PeerId,
    ssrc: u32,
) -> Arc<dyn TrackRemote> {
    let deadline = Instant::now() + WAIT;
    let mut seq = 0u16;
    loop {
        // The payload type is deliberately not the negotiated one: the endpoint maps it.
        let packet = marshal(&rtp_packet(100, 0xdead, seq, &[0x10, 0, 0, 0]));
        bridge
            .endpoint
            .send_rtp(peer, ssrc, &packet, Instant::now())
            .unwrap();
        seq += 1;
        bridge.step(Duration::from_millis(10)).await;
        if let Ok(track) = client.tracks.try_recv() {
            return track;
        }
        assert!(Instant::now() < deadline, "on_track never fired");
    }
}

fn marshal(packet: &rtc::rtp::Packet) -> Vec<u8> {
    use rtc::shared::marshal::Marshal;
    packet.marshal().unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_rtp_reaches_the_bridge_and_strays_are_dropped() {
    let mut bridge = Bridge::start().await;
    let mut client = Client::new().await;
    let ssrc = 0x1111_2222;
    let track = local_vp8_track(ssrc);
    let audio_ssrc = 0x000a_0d10;
    let audio = local_opus_track(audio_ssrc);
    for t in [&track, &audio] {
        client
            .pc
            .add_track(Arc::clone(t) as Arc<dyn TrackLocal>)
            .await
            .unwrap();
    }
    let peer = bridge.connect(&client, &[]).await;
    tokio::time::timeout(WAIT, client.connected.recv())
        .await
        .expect("client never connected");

    // Strays on the shared socket: STUN naming a ufrag nobody has, and media from an address
    // that never did ICE. Both are dropped and counted; the peer carries on.
    let stray = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut stun = vec![0x00, 0x01, 0x00, 0x10, 0x21, 0x12, 0xa4, 0x42];
    stun.extend_from_slice(&[9; 12]);
    stun.extend_from_slice(&[0x00, 0x06, 0x00, 0x09]);
    stun.extend_from_slice(b"nobody:me\0\0\0");
    stray.send_to(&stun, bridge.local).await.unwrap();
    stray
        .send_to(&marshal(&rtp_packet(96, 1, 1, b"x")), bridge.local)
        .await
        .unwrap();

    let count = 20u8;
    for i in 0..count {
        let payload = [0x10, i, 0xaa, 0xbb];
        track
            .write_rtp(rtp_packet(96, ssrc, u16::from(i) + 1, &payload))
            .await
            .unwrap();
        audio
            .write_rtp(rtp_packet(111, audio_ssrc, u16::from(i) + 1, &[0xfc, i]))
            .await
            .unwrap();
        bridge.step(Duration::from_millis(5)).await;
    }

    let (kind, codec) = bridge
        .wait_for("audio track", |e| match e {
            WebRtcEvent::Track {
                peer: p,
                ssrc: s,
                kind,
                codec,
                ..
            } if *p == peer && *s == audio_ssrc => Some((*kind, codec.clone())),
            _ => None,
        })
        .await;
    assert_eq!(kind, TrackKind::Audio);
    let codec = codec.expect("codec of the audio track");
    assert!(codec.name.eq_ignore_ascii_case("opus"), "{codec:?}");
    assert_eq!(
        (codec.clock_rate, codec.channels, codec.payload_type),
        (48_000, 2, 111)
    );

    let (mid, kind, codec) = bridge
        .wait_for("track", |e| match e {
            WebRtcEvent::Track {
                peer: p,
                ssrc: s,
                mid,
                kind,
                codec,
                ..
            } if *p == peer && *s == ssrc => Some((mid.clone(), *kind, codec.clone())),
            _ => None,
        })
        .await;
    assert_eq!(kind, TrackKind::Video);
    assert!(mid.is_some());
    let codec = codec.expect("codec of the track");
    assert!(codec.name.eq_ignore_ascii_case("vp8"), "{codec:?}");
    assert_eq!((codec.clock_rate, codec.payload_type), (90_000, 96));

    let mut payloads = Vec::new();
    while payloads.len() < usize::from(count) {
        let packet = bridge
            .wait_for("rtp", |e| match e {
                WebRtcEvent::Rtp {
                    peer: p,
                    ssrc: s,
                    packet,
                } if *p == peer && *s == ssrc => Some(packet.clone()),
                _ => None,
            })
            .await;
        payloads.push(packet[12..].to_vec());
    }
    let expected: Vec<Vec<u8>> = (0..count).map(|i| vec![0x10, i, 0xaa, 0xbb]).collect();
    assert_eq!(payloads, expected);

    let stats = bridge.endpoint.stats();
    assert_eq!(stats.dropped.unknown_ufrag, 1);
    assert_eq!(stats.dropped.unknown_source, 1);
    assert!(bridge.endpoint.is_connected(peer));

    // The bridge can ask the publisher for a keyframe.
    bridge
        .endpoint
        .request_keyframe(peer, ssrc, Instant::now())
        .unwrap();
    bridge.flush().await;
    client.pc.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_receives_rtp_sent_through_the_bridge() {
    receives_rtp_sent_through_the_bridge(Vec::new()).await;
}

// The endpoint protects forwarded RTP with keys of its own context: each SRTP profile a peer
// may choose must authenticate there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_rtp_authenticates_under_every_srtp_profile() {
    for profile in [
        SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
        SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_32,
        SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
        SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm,
    ] {
        receives_rtp_sent_through_the_bridge(vec![profile]).await;
    }
}

async fn receives_rtp_sent_through_the_bridge(profiles: Vec<SrtpProtectionProfile>) {
    let mut bridge = Bridge::start().await;
    let ssrc = 0x5150;
    let client = Client::with_srtp_profiles(profiles).await;
    let (mut client, peer) = subscriber_with(&mut bridge, ssrc, client).await;
    let track = first_remote_track(&mut bridge, &mut client, peer, ssrc).await;
    assert_eq!(track.ssrcs().await, vec![ssrc]);

    let (tx, mut rx) = mpsc::unbounded_channel();
    let reader = Arc::clone(&track);
    tokio::spawn(async move {
        while let Some(event) = reader.poll().await {
            if let TrackRemoteEvent::OnRtpPacket(packet) = event {
                let _ = tx.send(packet);
            }
        }
    });

    let base = 1000u16;
    let mut received = Vec::new();
    let deadline = Instant::now() + WAIT;
    for i in 0..10u16 {
        let payload = [0x10, 0x42, u8::try_from(i).unwrap()];
        let packet = marshal(&rtp_packet(100, 0xdead, base + i, &payload));
        bridge
            .endpoint
            .send_rtp(peer, ssrc, &packet, Instant::now())
            .unwrap();
        bridge.step(Duration::from_millis(5)).await;
    }
    while received.len() < 10 {
        assert!(
            Instant::now() < deadline,
            "only {} packets arrived",
            received.len()
        );
        bridge.step(Duration::from_millis(10)).await;
        while let Ok(packet) = rx.try_recv() {
            if packet.header.sequence_number >= base {
                received.push(packet);
            }
        }
    }
    for (i, packet) in received.iter().enumerate() {
        assert_eq!(packet.header.ssrc, ssrc);
        assert_eq!(
            packet.header.sequence_number,
            base + u16::try_from(i).unwrap()
        );
        assert_eq!(&packet.payload[..], &[0x10, 0x42, u8::try_from(i).unwrap()]);
    }
    client.pc.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_pli_surfaces_as_keyframe_request() {
    let mut bridge = Bridge::start().await;
    let ssrc = 0x7070;
    let (mut client, peer) = subscriber(&mut bridge, ssrc).await;
    let track = first_remote_track(&mut bridge, &mut client, peer, ssrc).await;
    track
        .write_rtcp(vec![Box::new(PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: ssrc,
        })])
        .await
        .unwrap();
    let asked = bridge
        .wait_for("keyframe request", |e| match e {
            WebRtcEvent::KeyframeRequest { peer: p, ssrc } if *p == peer => Some(*ssrc),
            _ => None,
        })
        .await;
    assert_eq!(asked, ssrc);
    client.pc.close().await.unwrap();
}

const AUDIO_ONLY_PCMU: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwxyz\r\n\
a=fingerprint:sha-256 00:11\r\na=setup:actpass\r\na=rtcp-mux\r\na=rtpmap:0 PCMU/8000\r\n";

const DATA_ONLY: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
a=sctp-port:5000\r\n";

#[test]
fn bad_offers_get_typed_errors() {
    let config = WebRtcConfig {
        local_addrs: vec!["127.0.0.1:4000".parse().unwrap()],
        ..WebRtcConfig::default()
    };
    let mut endpoint = Endpoint::new(config);
    let now = Instant::now();

    let err = endpoint
        .accept_offer("hello, I am not sdp", now)
        .unwrap_err();
    assert!(matches!(err, WebRtcError::MalformedSdp(_)), "{err}");

    let err = endpoint.accept_offer(DATA_ONLY, now).unwrap_err();
    assert!(matches!(err, WebRtcError::NoMedia), "{err}");

    let err = endpoint.accept_offer(AUDIO_ONLY_PCMU, now).unwrap_err();
    match err {
        WebRtcError::UnsupportedCodecs { offered } => assert_eq!(offered, vec!["PCMU"]),
        other => panic!("{other}"),
    }

    let huge = format!(
        "{AUDIO_ONLY_PCMU}{}",
        "a=x-padding:0123456789\r\n".repeat(3000)
    );
    let err = endpoint.accept_offer(&huge, now).unwrap_err();
    assert!(
        matches!(err, WebRtcError::SdpTooLarge { max: 65_536, .. }),
        "{err}"
    );

    assert_eq!(endpoint.stats().offers_refused, 4);
    assert_eq!(endpoint.peer_count(), 0);
    assert!(endpoint.poll_transmit().is_none());
    assert!(endpoint.poll_event().is_none());
}

#[test]
fn stray_datagrams_are_dropped_and_counted() {
    let config = WebRtcConfig {
        local_addrs: vec!["127.0.0.1:4000".parse().unwrap()],
        ..WebRtcConfig::default()
    };
    let mut endpoint = Endpoint::new(config);
    let local = "127.0.0.1:4000".parse().unwrap();
    let from = "127.0.0.1:5000".parse().unwrap();
    let mut stun = vec![0x00, 0x01, 0x00, 0x10, 0x21, 0x12, 0xa4, 0x42];
    stun.extend_from_slice(&[9; 12]);
    stun.extend_from_slice(&[0x00, 0x06, 0x00, 0x09]);
    stun.extend_from_slice(b"nobody:me\0\0\0");
    endpoint.handle_datagram(Instant::now(), local, from, &stun);
    endpoint.handle_datagram(Instant::now(), local, from, &[0x80, 96, 0, 1]);
    endpoint.handle_datagram(Instant::now(), local, from, &stun[..10]);
    let stats = endpoint.stats();
    assert_eq!(stats.datagrams_in, 3);
    assert_eq!(stats.dropped.unknown_ufrag, 1);
    assert_eq!(stats.dropped.unknown_source, 2);
    assert!(endpoint.poll_transmit().is_none());
}

/// The SFU shape on one socket: a publisher's RTP forwarded to a subscriber, the subscriber's
/// PLI relayed to the publisher, and the subscriber's departure reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_to_subscriber_on_one_socket() {
    let mut bridge = Bridge::start().await;
    let (publisher_client, publisher_track, publisher) = publisher(&mut bridge, 0xaaaa).await;
    let out_ssrc = 0xbbbb;
    let (mut subscriber_client, subscriber) = subscriber(&mut bridge, out_ssrc).await;
    assert_ne!(publisher, subscriber);

    let deadline = Instant::now() + WAIT;
    let mut seq = 1u16;
    let remote = loop {
        assert!(Instant::now() < deadline, "nothing reached the subscriber");
        publisher_track
            .write_rtp(rtp_packet(96, 0xaaaa, seq, &[0x10, 0x77, seq as u8]))
            .await
            .unwrap();
        seq += 1;
        bridge.step(Duration::from_millis(10)).await;
        // The gateway's job, reduced to its core: every publisher packet to the subscriber.
        let forwarded: Vec<Bytes> = bridge
            .events
            .iter()
            .filter_map(|e| match e {
                WebRtcEvent::Rtp { peer, packet, .. } if *peer == publisher => Some(packet.clone()),
                _ => None,
            })
            .collect();
        bridge
            .events
            .retain(|e| !matches!(e, WebRtcEvent::Rtp { .. }));
        for packet in forwarded {
            bridge
                .endpoint
                .send_rtp(subscriber, out_ssrc, &packet, Instant::now())
                .unwrap();
        }
        bridge.flush().await;
        if let Ok(track) = subscriber_client.tracks.try_recv() {
            break track;
        }
    };
    assert_eq!(remote.ssrcs().await, vec![out_ssrc]);

    remote
        .write_rtcp(vec![Box::new(PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: out_ssrc,
        })])
        .await
        .unwrap();
    bridge
        .wait_for("keyframe request", |e| {
            (*e == WebRtcEvent::KeyframeRequest {
                peer: subscriber,
                ssrc: out_ssrc,
            })
            .then_some(())
        })
        .await;
    bridge
        .endpoint
        .request_keyframe(publisher, 0xaaaa, Instant::now())
        .unwrap();

    // A remote close_notify is not surfaced by `rtc` (the peer would go at the ICE timeout);
    // the gateway closes a leaving subscriber itself.
    bridge.endpoint.close(subscriber).unwrap();
    bridge.flush().await;
    bridge
        .wait_for("subscriber gone", |e| {
            (*e == WebRtcEvent::Disconnected(subscriber)).then_some(())
        })
        .await;
    assert!(matches!(
        bridge.endpoint.send_rtp(
            subscriber,
            out_ssrc,
            &[0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1],
            Instant::now()
        ),
        Err(WebRtcError::UnknownPeer(_))
    ));
    subscriber_client.pc.close().await.unwrap();
    assert!(bridge.endpoint.is_connected(publisher));
    assert_eq!(bridge.endpoint.peer_count(), 1);
    publisher_client.pc.close().await.unwrap();
}

/// A peer that goes silent is removed once ICE fails — on the endpoint's clock, not the test's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peer_times_out() {
    let mut bridge = Bridge::start().await;
    let (client, _track, peer) = publisher(&mut bridge, 0xcccc).await;
    // Stop reading the socket and jump the endpoint's clock past the ICE failed timeout.
    let mut now = Instant::now();
    let end = now + Duration::from_secs(60);
    while now < end && bridge.endpoint.peer_count() > 0 {
        now = bridge
            .endpoint
            .poll_timeout()
            .map_or(end, |t| t.max(now + Duration::from_millis(100)));
        bridge.endpoint.handle_timeout(now);
        while bridge.endpoint.poll_transmit().is_some() {}
    }
    bridge.flush().await;
    bridge
        .wait_for("timeout", |e| {
            (*e == WebRtcEvent::Disconnected(peer)).then_some(())
        })
        .await;
    client.pc.close().await.unwrap();
}

/// A complete offer (audio and video, with ICE credentials and a fingerprint) to mutate.
const VALID_OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0 1\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwxyz\r\n\
a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
a=setup:actpass\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10\r\n\
a=ssrc:1111 cname:x\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendonly\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwxyz\r\n\
a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
a=setup:actpass\r\na=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack pli\r\n\
a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\na=ssrc-group:FID 2222 3333\r\n\
a=ssrc:2222 cname:x\r\na=ssrc:3333 cname:x\r\n\
a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n";

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// A peer's offer with any line replaced by junk is answered or refused, never a panic: the
    /// gateway's media worker runs this for every WHIP/WHEP offer.
    #[test]
    fn accept_offer_survives_mutated_offers(
        edits in proptest::collection::vec((0usize..64, "[ -~]{0,48}"), 1..4),
        with_tracks in proptest::prelude::any::<bool>(),
    ) {
        let mut lines: Vec<String> = VALID_OFFER.split("\r\n").map(str::to_owned).collect();
        for (at, junk) in &edits {
            let at = at % lines.len();
            lines[at] = junk.clone();
        }
        let offer = lines.join("\r\n");
        let config = WebRtcConfig {
            local_addrs: vec!["127.0.0.1:4000".parse().unwrap()],
            ..WebRtcConfig::default()
        };
        let mut endpoint = Endpoint::new(config);
        let tracks = if with_tracks {
            vec![SendTrack { kind: TrackKind::Video, codec: vp8(), ssrc: 9 }]
        } else {
            Vec::new()
        };
        let _ = endpoint.accept_offer_with_tracks(&offer, &tracks, Instant::now());
        while endpoint.poll_transmit().is_some() {}
        while endpoint.poll_event().is_some() {}
    }
}

#[test]
fn the_offer_to_mutate_is_accepted_as_it_is() {
    let config = WebRtcConfig {
        local_addrs: vec!["127.0.0.1:4000".parse().unwrap()],
        ..WebRtcConfig::default()
    };
    let mut endpoint = Endpoint::new(config);
    let (_, answer) = endpoint
        .accept_offer(VALID_OFFER, Instant::now())
        .expect("the base offer is valid");
    assert!(answer.contains("a=ice-lite"), "{answer}");
}

/// A client publishing one VP8 track as simulcast encodings `rids` (SSRCs `first_ssrc`, +1, …).
fn local_simulcast_track(rids: &[&str], first_ssrc: u32) -> Arc<TrackLocalStaticRTP> {
    let codings = rids
        .iter()
        .zip(first_ssrc..)
        .map(|(rid, ssrc)| RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                rid: (*rid).into(),
                ssrc: Some(ssrc),
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
        })
        .collect();
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "client-stream".into(),
        "client-simulcast".into(),
        "client-simulcast".into(),
        RtpCodecKind::Video,
        codings,
    )))
}

/// `rtc` answers a simulcast offer as an ICE-lite answerer (`a=simulcast:recv`, one `a=rid … recv`
/// per layer), binds each layer's SSRC by the mid and rid header extensions of its packets, and
/// the endpoint reports each layer as a `Track` with its rid, then its RTP under its own SSRC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulcast_layers_are_reported_by_rid() {
    let mut bridge = Bridge::start().await;
    let client = Client::new().await;
    let rids = ["q", "h", "f"];
    let first_ssrc = 0x5150_0000;
    let track = local_simulcast_track(&rids, first_ssrc);
    let sender = client
        .pc
        .add_track(Arc::clone(&track) as Arc<dyn TrackLocal>)
        .await
        .unwrap();
    let offer = client.offer().await;
    let sections = simulcast_sections(&offer, 64 * 1024).unwrap();
    assert_eq!(sections.len(), 1);
    let layers: Vec<&str> = sections[0].layers.iter().map(|l| l.rid.as_str()).collect();
    assert_eq!(layers, rids);
    let (peer, answer) = bridge
        .endpoint
        .accept_offer(&offer, Instant::now())
        .unwrap();
    assert!(answer.contains("a=simulcast:recv q;h;f"), "{answer}");
    for rid in rids {
        assert!(answer.contains(&format!("a=rid:{rid} recv")), "{answer}");
    }
    client
        .pc
        .set_remote_description(RTCSessionDescription::answer(answer).unwrap())
        .await
        .unwrap();
    bridge.flush().await;
    bridge
        .wait_for("connected", |e| {
            (*e == WebRtcEvent::Connected(peer)).then_some(())
        })
        .await;

    let params = sender.get_parameters().await.unwrap();
    let extension = |uri: &str| {
        params
            .rtp_parameters
            .header_extensions
            .iter()
            .find(|e| e.uri == uri)
            .map(|e| e.id as u8)
            .unwrap_or_else(|| panic!("{uri} negotiated"))
    };
    let mid_id = extension("urn:ietf:params:rtp-hdrext:sdes:mid");
    let rid_id = extension("urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id");
    let mid = sections[0].mid.clone();
    for seq in 1..=5u16 {
        for (k, rid) in rids.iter().enumerate() {
            let ssrc = first_ssrc + k as u32;
            let mut packet = rtp_packet(96, ssrc, seq, &[0x10, k as u8, 0, 0]);
            packet
                .header
                .set_extension(mid_id, Bytes::from(mid.clone().into_bytes()))
                .unwrap();
            packet
                .header
                .set_extension(rid_id, Bytes::from_static(rid.as_bytes()))
                .unwrap();
            track.write_rtp(packet).await.unwrap();
        }
        bridge.step(Duration::from_millis(5)).await;
    }
    for (k, rid) in rids.iter().enumerate() {
        let ssrc = first_ssrc + k as u32;
        let (got_mid, got_rid, codec) = bridge
            .wait_for("a layer's track", |e| match e {
                WebRtcEvent::Track {
                    peer: p,
                    ssrc: s,
                    mid,
                    rid,
                    codec,
                    ..
                } if *p == peer && *s == ssrc => Some((mid.clone(), rid.clone(), codec.clone())),
                _ => None,
            })
            .await;
        assert_eq!(got_mid.as_deref(), Some(mid.as_str()));
        assert_eq!(got_rid.as_deref(), Some(*rid));
        assert!(codec.expect("a codec").name.eq_ignore_ascii_case("vp8"));
        let packet = bridge
            .wait_for("a layer's rtp", |e| match e {
                WebRtcEvent::Rtp {
                    peer: p,
                    ssrc: s,
                    packet,
                } if *p == peer && *s == ssrc => Some(packet.clone()),
                _ => None,
            })
            .await;
        let parsed = {
            use rtc::shared::marshal::Unmarshal;
            rtc::rtp::Packet::unmarshal(&mut &packet[..]).unwrap()
        };
        assert_eq!(parsed.payload[1], k as u8, "the layer's own payload");
        // The bridge can ask each layer for a keyframe.
        bridge
            .endpoint
            .request_keyframe(peer, ssrc, Instant::now())
            .unwrap();
    }
    bridge.flush().await;
    client.pc.close().await.unwrap();
}

/// Simulcast beyond three rids is accepted (the extra rids are listed as ignored); a malformed
/// simulcast description is refused with a typed error before any peer exists.
#[test]
fn simulcast_offers_are_bounded_and_checked() {
    let config = WebRtcConfig {
        local_addrs: vec!["127.0.0.1:4000".parse().unwrap()],
        ..WebRtcConfig::default()
    };
    let mut endpoint = Endpoint::new(config);
    let now = Instant::now();
    let video = |lines: &str| {
        VALID_OFFER.replace(
            "a=rtpmap:96 VP8/90000\r\n",
            &format!("a=rtpmap:96 VP8/90000\r\n{lines}"),
        )
    };

    let five = video(
        "a=rid:a send\r\na=rid:b send\r\na=rid:c send\r\na=rid:d send\r\na=rid:e send\r\n\
         a=simulcast:send a;b;c;d;e\r\n",
    );
    let sections = simulcast_sections(&five, 64 * 1024).unwrap();
    assert_eq!(sections[0].layers.len(), 3);
    assert_eq!(sections[0].ignored, ["d", "e"]);
    let (_, answer) = endpoint.accept_offer(&five, now).unwrap();
    assert!(answer.contains("a=simulcast:recv a;b;c;d;e"), "{answer}");

    for bad in [
        "a=rid:q send\r\na=simulcast:send q;q\r\n",
        "a=rid:q send\r\na=simulcast:send q;h\r\n",
        "a=rid:q send max-br=lots\r\na=simulcast:send q\r\n",
        "a=rid:q send\r\na=simulcast:across q\r\n",
    ] {
        let err = endpoint.accept_offer(&video(bad), now).unwrap_err();
        assert!(
            matches!(err, WebRtcError::BadSimulcast { .. }),
            "{bad:?}: {err}"
        );
        assert!(
            matches!(
                strait_media::webrtc::check_offer(&video(bad), 64 * 1024),
                Err(WebRtcError::BadSimulcast { .. })
            ),
            "{bad:?}"
        );
    }
    assert_eq!(endpoint.stats().offers_refused, 4);
    assert_eq!(endpoint.peer_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_replayed_from_another_address_is_neither_answered_nor_routed() {
    let mut bridge = Bridge::start().await;
    let (client, _peer) = subscriber(&mut bridge, 0x7777).await;
    let (from, check) = bridge.last_check.clone().expect("the client's checks");
    let before = bridge.endpoint.stats();
    assert_eq!(before.addresses, 1, "the client's own address");

    // Someone who saw the check sends it again from elsewhere.
    let spoofed: SocketAddr = "127.0.0.9:5000".parse().unwrap();
    assert_ne!(spoofed, from);
    bridge
        .endpoint
        .handle_datagram(Instant::now(), bridge.local, spoofed, &check);
    while let Some(t) = bridge.endpoint.poll_transmit() {
        assert_ne!(t.to, spoofed, "the replay was answered");
    }
    let after = bridge.endpoint.stats();
    assert_eq!(after.addresses, 1, "the spoofed address is not routed");
    assert_eq!(
        after.dropped.unverified_check,
        before.dropped.unverified_check + 1
    );

    // Unverified checks (no integrity) from many addresses add nothing either.
    for i in 0..100u16 {
        let stray = SocketAddr::from(([127, 0, 2, 1], 6000 + i));
        let mut bytes = check.clone();
        // Another transaction, and the integrity no longer matches.
        bytes[19] ^= 0x5a;
        bridge
            .endpoint
            .handle_datagram(Instant::now(), bridge.local, stray, &bytes);
    }
    while bridge.endpoint.poll_transmit().is_some() {}
    let stats = bridge.endpoint.stats();
    assert_eq!(stats.addresses, 1);
    assert_eq!(
        stats.dropped.unverified_check,
        before.dropped.unverified_check + 101
    );
    client.pc.close().await.unwrap();
}

// A probe's padding on a WebRTC leg: padding-only packets on the RTX stream of its video, each
// numbered in the leg's transport-wide sequence; the receiver drops them (no media packet comes
// of them) and the leg's media goes on. (Whether the receiver's feedback reports them is the
// receiver's: webrtc-rs's records only packets of streams it bound with the extension, not an
// RTX stream's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn padding_goes_out_on_the_rtx_stream_and_media_goes_on() {
    let mut bridge = Bridge::start().await;
    let ssrc = 0x5151;
    let (mut client, peer) = subscriber(&mut bridge, ssrc).await;
    assert!(!bridge.endpoint.can_pad(PeerId(u64::MAX)));
    assert_eq!(bridge.endpoint.send_padding(peer, 1_000, Instant::now()), 0);
    let track = first_remote_track(&mut bridge, &mut client, peer, ssrc).await;
    assert!(
        bridge.endpoint.can_pad(peer),
        "the leg negotiated no RTX or no transport-cc"
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    let reader = Arc::clone(&track);
    tokio::spawn(async move {
        while let Some(event) = reader.poll().await {
            if let TrackRemoteEvent::OnRtpPacket(packet) = event {
                let _ = tx.send(packet);
            }
        }
    });

    // Padding only, for a while: 40 kB in 100 ms slices.
    let before = bridge.endpoint.stats();
    let mut sent = 0;
    for _ in 0..10 {
        sent += bridge.endpoint.send_padding(peer, 4_000, Instant::now());
        bridge.step(Duration::from_millis(100)).await;
    }
    let stats = bridge.endpoint.stats();
    // At most 255 bytes of padding a packet; each with its header, extension and SRTP tag.
    assert_eq!(
        stats.padding_packets - before.padding_packets,
        10 * 4_000u64.div_ceil(255)
    );
    assert_eq!(stats.padding_bytes - before.padding_bytes, sent as u64);
    assert!(sent > 40_000, "{sent}");
    assert_eq!(stats.forwarded, before.forwarded);

    // Media still flows after it, and nothing of the padding came out as media.
    let mut seq = 5_000u16;
    let deadline = Instant::now() + WAIT;
    let mut media = Vec::new();
    while !media
        .iter()
        .any(|p: &rtc::rtp::Packet| p.header.sequence_number >= 5_000)
    {
        assert!(Instant::now() < deadline, "no media after the padding");
        let packet = marshal(&rtp_packet(100, 0xdead, seq, &[0x10, 0, 0, 1]));
        bridge
            .endpoint
            .send_rtp(peer, ssrc, &packet, Instant::now())
            .unwrap();
        seq += 1;
        bridge.step(Duration::from_millis(10)).await;
        while let Ok(packet) = rx.try_recv() {
            media.push(packet);
        }
    }
    assert!(
        media
            .iter()
            .all(|p| p.header.ssrc == ssrc && !p.payload.is_empty()),
        "padding surfaced as media"
    );
    client.pc.close().await.unwrap();
}
