//! A legacy WebRTC peer for the bridge's tests and benchmarks: a `webrtc`-crate peer
//! connection on 127.0.0.1 (loopback candidates included), with the interceptor that lets it see
//! the keyframe requests it is sent, and waits for ICE gathering, connection and remote tracks.
//! Every wait is bounded by [`WAIT`].

use std::sync::Arc;

use rtc::interceptor::Slot;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use strait_media::webrtc::DeliverKeyframeRequests;
use tokio::sync::mpsc;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfiguration, RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription,
    Registry, SettingEngineBuilder, register_default_interceptors,
};
use webrtc::runtime::default_runtime;

use crate::fixture::WAIT;

/// Forwards the peer connection's events the tests wait for.
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

/// A `webrtc` peer connection on 127.0.0.1 that sees the keyframe requests it is sent.
pub struct Peer {
    /// The peer connection.
    pub pc: Box<dyn PeerConnection>,
    gathered: mpsc::UnboundedReceiver<()>,
    connected: mpsc::UnboundedReceiver<()>,
    /// Remote tracks, as `on_track` reports them.
    pub tracks: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").finish_non_exhaustive()
    }
}

impl Peer {
    /// A peer with the default configuration.
    pub async fn new() -> Self {
        Self::with_configuration(None).await
    }

    /// A peer with an ICE configuration (servers, transport policy).
    pub async fn with_configuration(configuration: Option<RTCConfiguration>) -> Self {
        Self::build(configuration, true).await
    }

    /// A peer whose SRTP accepts a packet it has already received (no replay window), so that
    /// a retransmission of such a packet reaches its track: how a test sees NACKs answered.
    pub async fn without_srtp_replay_protection() -> Self {
        Self::build(None, false).await
    }

    async fn build(configuration: Option<RTCConfiguration>, replay_protection: bool) -> Self {
        let mut media_engine = MediaEngine::default();
        media_engine.register_default_codecs().unwrap();
        let registry =
            Registry::new().with(Slot::from(14_000), DeliverKeyframeRequests::all_rtcp());
        let registry = register_default_interceptors(registry, &mut media_engine).unwrap();
        let (gathered_tx, gathered) = mpsc::unbounded_channel();
        let (connected_tx, connected) = mpsc::unbounded_channel();
        let (tracks_tx, tracks) = mpsc::unbounded_channel();
        let handler = Arc::new(Handler {
            gathered: gathered_tx,
            connected: connected_tx,
            tracks: tracks_tx,
        });
        let mut builder = PeerConnectionBuilder::new();
        if let Some(configuration) = configuration {
            builder = builder.with_configuration(configuration);
        }
        let pc = builder
            .with_setting_engine({
                let mut settings =
                    SettingEngineBuilder::new().with_include_loopback_candidate(true);
                if !replay_protection {
                    settings = settings.with_srtp_replay_protection_window(0);
                }
                settings.build()
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
            gathered,
            connected,
            tracks,
        }
    }

    /// Adds a section that receives `kind` only (a subscriber's).
    pub async fn receive_only(&mut self, kind: RtpCodecKind) {
        self.pc
            .add_transceiver_from_kind(
                kind,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    ..Default::default()
                }),
            )
            .await
            .unwrap();
    }

    /// Creates the offer and waits for gathering, so that it carries the host candidate.
    pub async fn offer(&mut self) -> String {
        let offer = self.pc.create_offer(None).await.unwrap();
        self.pc.set_local_description(offer).await.unwrap();
        tokio::time::timeout(WAIT, self.gathered.recv())
            .await
            .expect("ice gathering completes");
        self.pc.local_description().await.unwrap().sdp
    }

    /// Waits until the peer connection reports `connected` (again, after an ICE restart).
    pub async fn wait_connected(&mut self) {
        tokio::time::timeout(WAIT, self.connected.recv())
            .await
            .expect("the peer connects to the bridge");
    }

    /// Applies the answer and waits until ICE and DTLS are up.
    pub async fn finish(&mut self, answer: &str) {
        self.pc
            .set_remote_description(RTCSessionDescription::answer(answer.to_owned()).unwrap())
            .await
            .unwrap();
        self.wait_connected().await;
    }
}
