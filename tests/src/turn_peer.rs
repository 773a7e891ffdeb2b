//! A relay-only WebRTC publisher: webrtc-rs's sans-IO `rtc` peer connection whose one ICE
//! candidate is an allocation on a TURN server, reached over UDP, TCP or TLS with
//! [`TurnClient`].
//!
//! The async `webrtc` crate gathers relay candidates over UDP only (it skips `?transport=tcp` and
//! `turns:` URLs), so the tests of TURN over TCP and TLS drive `rtc` themselves: every datagram
//! the peer connection sends from the relay address goes out as a Send indication or ChannelData
//! on the TURN connection, and every Data indication or ChannelData that comes back is handed to
//! the peer connection as a datagram received on the relay address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::shared::marshal::Unmarshal;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc_turn::client::Event;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::fixture::{TestGateway, WAIT, rtp};
use crate::http::{HttpResponse, post_offer};
use crate::sdp::{host_candidates, payload_type_of};
use crate::turn_client::TurnClient;

/// The SSRC of the publisher's VP8 track.
pub const SSRC: u32 = 0x7e1a_0001;

/// A WHIP publisher whose media goes through a TURN relay; it sends VP8 every 5 ms (a keyframe
/// every 20 packets) once connected, until closed.
#[allow(missing_debug_implementations)] // holds a task
pub struct TurnPublisher {
    /// The offer it posted (its only candidate is the relay's).
    pub offer: String,
    /// The WHIP response.
    pub response: HttpResponse,
    /// The relay address the TURN server allocated.
    pub relay: SocketAddr,
    /// RTP packets written so far.
    pub sent: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl TurnPublisher {
    /// Allocates on `turn`, offers a VP8 track with the relay candidate only, posts the offer to
    /// `/whip/{room}` with `token`, and drives the peer connection through the relay. Returns
    /// once ICE and DTLS are up.
    pub async fn start(
        gw: &TestGateway,
        mut turn: TurnClient,
        room: &str,
        token: &str,
    ) -> TurnPublisher {
        let relay = turn.allocate().await;
        let now = Instant::now();
        let mut media_engine = MediaEngine::default();
        media_engine.register_default_codecs().unwrap();
        let registry =
            register_default_interceptors(rtc::interceptor::Registry::new(), &mut media_engine)
                .unwrap();
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_setting_engine(SettingEngineBuilder::new().build())
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .build(now)
            .unwrap();
        let sender = pc.add_track(vp8_track()).unwrap();
        // RFC 8445 §5.1.2.1: relayed candidates get type preference 0.
        let priority = (65_535u32 << 8) | 255;
        pc.add_local_candidate(RTCIceCandidateInit {
            candidate: format!(
                "candidate:1 1 udp {priority} {} {} typ relay raddr 0.0.0.0 rport 0",
                relay.ip(),
                relay.port()
            ),
            ..Default::default()
        })
        .unwrap();
        pc.add_local_candidate(RTCIceCandidateInit::default())
            .unwrap();
        let offer = pc.create_offer(None).unwrap();
        pc.set_local_description(now, offer).unwrap();
        let offer = pc.local_description().unwrap().sdp;

        let response = post_offer(gw, &format!("/whip/{room}"), token, &offer).await;
        assert_eq!(response.status, 201, "WHIP answered {response:?}");
        pc.set_remote_description(
            Instant::now(),
            RTCSessionDescription::answer(response.body.clone()).unwrap(),
        )
        .unwrap();
        for bridge in host_candidates(&response.body) {
            turn.permit(relay, bridge)
                .await
                .expect("the bridge's address is a permitted peer");
        }

        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU32::new(0));
        let (connected_tx, connected_rx) = oneshot::channel();
        let task = tokio::spawn(drive(
            pc,
            sender,
            turn,
            relay,
            Arc::clone(&stop),
            Arc::clone(&sent),
            connected_tx,
        ));
        tokio::time::timeout(WAIT, connected_rx)
            .await
            .expect("the peer connects through the relay in time")
            .expect("the driver reports the connection");
        TurnPublisher {
            offer,
            response,
            relay,
            sent,
            stop,
            task,
        }
    }

    /// Stops sending and the driver.
    pub async fn close(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = tokio::time::timeout(WAIT, self.task).await;
    }
}

fn vp8_track() -> MediaStreamTrack {
    MediaStreamTrack::new(
        "turn-stream".into(),
        "turn-video".into(),
        "turn-video".into(),
        RtpCodecKind::Video,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(SSRC),
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
    )
}

/// The event loop: the peer connection's datagrams through the relay and back, its timers and
/// the TURN client's, and VP8 once connected. Bounded by `stop` and at most 60 s of packets.
async fn drive(
    mut pc: RTCPeerConnection,
    sender: RTCRtpSenderId,
    mut turn: TurnClient,
    relay: SocketAddr,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU32>,
    connected_tx: oneshot::Sender<()>,
) {
    let pt = pc
        .remote_description()
        .map(|d| payload_type_of(&d.sdp, "VP8"))
        .unwrap_or(rtp::VP8_PT);
    let mut connected_tx = Some(connected_tx);
    let mut next_rtp: Option<Instant> = None;
    let mut index = 0u32;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        // The peer connection's output: datagrams through the relay, and its events.
        while let Some(out) = pc.poll_write() {
            let to = out.transport.peer_addr;
            turn.send_to(relay, to, &out.message).await;
        }
        while let Some(event) = pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(
                RTCPeerConnectionState::Connected,
            ) = event
                && let Some(tx) = connected_tx.take()
            {
                let _ = tx.send(());
                next_rtp = Some(Instant::now());
            }
        }
        while pc.poll_read().is_some() {}
        turn.flush().await;

        let now = Instant::now();
        if let Some(at) = next_rtp
            && now >= at
        {
            let bytes = rtp::vp8(
                index as u16,
                index * 3000,
                SSRC,
                index.is_multiple_of(20),
                index,
            );
            let mut packet = rtc::rtp::Packet::unmarshal(&mut &bytes[..]).unwrap();
            packet.header.payload_type = pt;
            if let Some(mut s) = pc.rtp_sender(sender) {
                let _ = s.write_rtp(now, packet);
            }
            index += 1;
            sent.store(index, Ordering::Relaxed);
            next_rtp = Some(at + Duration::from_millis(5));
            continue;
        }

        let mut wake = now + Duration::from_millis(50);
        for t in [pc.poll_timeout(), turn.client.poll_timeout(), next_rtp]
            .into_iter()
            .flatten()
        {
            wake = wake.min(t);
        }
        tokio::select! {
            message = turn.link.recv() => {
                let Some(message) = message else { return };
                turn.feed(&message);
                while let Some(event) = turn.client.poll_event() {
                    if let Event::DataIndicationOrChannelData(_, from, data) = event {
                        let _ = pc.handle_read(TaggedBytesMut {
                            now: Instant::now(),
                            transport: TransportContext {
                                local_addr: relay,
                                peer_addr: from,
                                ecn: None,
                                transport_protocol: TransportProtocol::UDP,
                            },
                            message: BytesMut::from(&data[..]),
                        });
                    }
                }
            }
            () = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                let _ = pc.handle_timeout(now);
                let _ = turn.client.handle_timeout(now);
            }
        }
    }
    let _ = pc.close();
}
