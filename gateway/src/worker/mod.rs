//! The media worker: the [hub](hub::Hub) (the SFU core, every participant's sending side and the
//! WebRTC bridge, sans-IO) and the [driver](driver) task that runs it.
//!
//! - [`hub`]: the state machine; no socket, no task, no clock;
//! - [`bridge`]: the hub's WebRTC part (WHIP/WHEP and `/ws/rtc` peers on one UDP socket);
//! - [`translate`]: the only module where protocol messages and ids meet the SFU core's;
//! - [`driver`]: the task that feeds the hub and carries out its outputs.
//!
//! Sessions and the HTTP surface reach the worker through a [`WorkerHandle`]: two bounded queues,
//! commands (attach, requests, detach), on which a session waits when the queue is full
//! (backpressure onto that session's control stream), and media packets, which are dropped and
//! counted when the queue is full (the worker is saturated; the arriving packet is the one
//! refused).

pub(crate) mod bridge;
mod driver;
pub(crate) mod hub;
pub(crate) mod translate;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use strait_media::sfu::SfuConfig;
use strait_protocol::{ControlMessage, MediaId, ParticipantId};
use tokio::sync::{mpsc, oneshot};

use self::bridge::{Bridge, BridgeError, IcePatched, WebRtcOffer, WebRtcResource};
use self::hub::{AttachError, Attached, ConnId, Hub};
use crate::auth::VerifiedToken;
use crate::config::ValidConfig;
use crate::metrics::{DropReason, Metrics, Transport};

/// A session's connection as the worker uses it: media datagrams out, and a close. The QUIC
/// port's `Link` (raw QUIC or WebTransport) is one; the worker knows nothing else of QUIC.
pub(crate) trait Connection: std::fmt::Debug + Send + Sync {
    /// Identifies the connection (stable across migrations).
    fn conn_id(&self) -> ConnId;
    /// Which transport carries it, for the metrics' labels.
    fn transport(&self) -> Transport;
    /// Queues a datagram without waiting; `Ok(true)` when an older queued datagram was dropped
    /// to make room for it (newest wins).
    fn send_datagram(&self, datagram: Bytes) -> Result<bool, DatagramSendError>;
    /// Closes the connection with a protocol error code.
    fn close(&self, code: strait_protocol::ErrorCode, reason: &str);
}

/// Why a datagram was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DatagramSendError {
    /// Larger than the connection's largest datagram now.
    TooLarge,
    /// The connection is closed, or the peer does not take datagrams.
    Failed,
}

/// A session asks to be attached to a participant (new, or resumed).
#[derive(Debug)]
pub(crate) struct Attach {
    /// The participant.
    pub participant: ParticipantId,
    /// The session's connection.
    pub link: Arc<dyn Connection>,
    /// The session's control queue.
    pub control: mpsc::Sender<ControlMessage>,
    /// Take back an existing participant (from a resume token).
    pub resume: bool,
    /// The verified access token (required for a new participant).
    pub token: Option<VerifiedToken>,
}

/// What sessions ask of the worker.
#[derive(Debug)]
pub(crate) enum WorkerCommand {
    /// Attach a session (see [`Attach`]).
    Attach(Attach, oneshot::Sender<Result<Attached, AttachError>>),
    /// A room or track request from a participant.
    Request {
        /// Who.
        participant: ParticipantId,
        /// The request.
        message: ControlMessage,
        /// For a `Join`: when the connection was accepted (for the join latency metric).
        join_started: Option<Instant>,
    },
    /// A keyframe request by media id (from a control datagram).
    KeyframeForMedia {
        /// The subscriber.
        participant: ParticipantId,
        /// Its outgoing media id.
        media: MediaId,
    },
    /// The connection's bandwidth estimate.
    Bandwidth {
        /// Who.
        participant: ParticipantId,
        /// Estimated bits per second toward the participant.
        bits_per_second: u64,
    },
    /// The connection `conn` was lost: start the grace period.
    Detached {
        /// Who.
        participant: ParticipantId,
        /// The connection that was lost (a newer one may already be attached).
        conn: ConnId,
    },
    /// A WHIP or WHEP offer; the answer is the answer SDP.
    WebRtcOffer(
        Box<WebRtcOffer>,
        oneshot::Sender<Result<String, BridgeError>>,
    ),
    /// A DELETE of a WHIP or WHEP resource.
    WebRtcDelete(WebRtcResource, oneshot::Sender<Result<(), BridgeError>>),
    /// A PATCH of a WHIP or WHEP resource: trickle ICE or an ICE restart.
    WebRtcPatch {
        /// The resource and who asks.
        target: WebRtcResource,
        /// The request's trickle-ICE fragment.
        fragment: strait_media::webrtc::IceFragment,
        /// The request's `If-Match`, if any.
        if_match: Option<String>,
        /// Where the outcome goes.
        reply: oneshot::Sender<Result<IcePatched, BridgeError>>,
    },
    /// A WebSocket signaling session starts: a new participant whose messages go to `control`
    /// and whose media, once it has sent an offer, runs on the bridge.
    AttachSignaling {
        /// The new participant.
        participant: ParticipantId,
        /// The verified access token.
        token: VerifiedToken,
        /// The session's control queue; the participant's end drops it, which ends the session.
        control: mpsc::Sender<ControlMessage>,
    },
    /// A WebSocket participant's SDP offer; the answer (or a session-level `Error`) is queued
    /// on its control queue.
    SignalingOffer {
        /// Who.
        participant: ParticipantId,
        /// The offer.
        sdp: String,
    },
    /// A WebSocket signaling session ended: its participant leaves now.
    SignalingClosed {
        /// Who.
        participant: ParticipantId,
    },
    /// The participant left for good, from connection `conn`.
    Leave {
        /// Who.
        participant: ParticipantId,
        /// The connection it left from; ignored when another connection has taken the
        /// participant over (it resumed elsewhere).
        conn: ConnId,
    },
}

/// One RTP packet from a publisher.
#[derive(Debug)]
pub(crate) struct MediaIn {
    participant: ParticipantId,
    media: MediaId,
    rtp: Bytes,
    at: Instant,
}

/// How sessions reach the worker.
#[derive(Debug, Clone)]
pub(crate) struct WorkerHandle {
    commands: mpsc::Sender<WorkerCommand>,
    media: mpsc::Sender<MediaIn>,
    metrics: Arc<Metrics>,
}

impl WorkerHandle {
    /// Sends a command, waiting while the queue is full. A worker that is gone (shutdown) is
    /// ignored: the session is ending too.
    pub(crate) async fn send(&self, command: WorkerCommand) {
        let _ = self.commands.send(command).await;
    }

    /// Sends a command if the queue has room (for datagram-triggered commands, which are lossy
    /// by nature).
    pub(crate) fn try_send(&self, command: WorkerCommand) {
        if self.commands.try_send(command).is_err() {
            self.metrics.count_drop(DropReason::WorkerQueueFull);
        }
    }

    /// Attaches a session.
    pub(crate) async fn attach(&self, attach: Attach) -> Result<Attached, AttachError> {
        let (tx, rx) = oneshot::channel();
        if self
            .commands
            .send(WorkerCommand::Attach(attach, tx))
            .await
            .is_err()
        {
            return Err(AttachError::ShuttingDown);
        }
        rx.await.unwrap_or(Err(AttachError::ShuttingDown))
    }

    /// Hands a WHIP or WHEP offer to the bridge; returns the answer SDP.
    pub(crate) async fn webrtc_offer(&self, offer: WebRtcOffer) -> Result<String, BridgeError> {
        let (tx, rx) = oneshot::channel();
        if self
            .commands
            .send(WorkerCommand::WebRtcOffer(Box::new(offer), tx))
            .await
            .is_err()
        {
            return Err(BridgeError::ShuttingDown);
        }
        rx.await.unwrap_or(Err(BridgeError::ShuttingDown))
    }

    /// Trickle ICE or an ICE restart on a WHIP or WHEP session.
    pub(crate) async fn webrtc_patch(
        &self,
        target: WebRtcResource,
        fragment: strait_media::webrtc::IceFragment,
        if_match: Option<String>,
    ) -> Result<IcePatched, BridgeError> {
        let (tx, rx) = oneshot::channel();
        let command = WorkerCommand::WebRtcPatch {
            target,
            fragment,
            if_match,
            reply: tx,
        };
        if self.commands.send(command).await.is_err() {
            return Err(BridgeError::ShuttingDown);
        }
        rx.await.unwrap_or(Err(BridgeError::ShuttingDown))
    }

    /// Ends a WHIP or WHEP session.
    pub(crate) async fn webrtc_delete(&self, delete: WebRtcResource) -> Result<(), BridgeError> {
        let (tx, rx) = oneshot::channel();
        if self
            .commands
            .send(WorkerCommand::WebRtcDelete(delete, tx))
            .await
            .is_err()
        {
            return Err(BridgeError::ShuttingDown);
        }
        rx.await.unwrap_or(Err(BridgeError::ShuttingDown))
    }

    /// Queues a media packet, or drops and counts it when the queue is full.
    pub(crate) fn media(&self, participant: ParticipantId, media: MediaId, rtp: Bytes) {
        let packet = MediaIn {
            participant,
            media,
            rtp,
            at: Instant::now(),
        };
        if self.media.try_send(packet).is_err() {
            self.metrics.count_drop(DropReason::WorkerQueueFull);
        }
    }
}

/// Starts the worker; it runs until `stop` is cancelled or every handle is dropped. With a
/// `webrtc` socket (already bound), the hub runs the WebRTC bridge on it. Must be called within
/// a tokio runtime.
pub(crate) fn spawn(
    config: &ValidConfig,
    metrics: Arc<Metrics>,
    seed: u64,
    webrtc: Option<std::net::UdpSocket>,
    stop: tokio_util::sync::CancellationToken,
) -> std::io::Result<(WorkerHandle, tokio::task::JoinHandle<()>)> {
    let (commands_tx, commands_rx) = mpsc::channel(1024);
    let (media_tx, media_rx) = mpsc::channel(config.limits.media_queue);
    let (bridge, socket) = match webrtc {
        Some(socket) => {
            socket.set_nonblocking(true)?;
            let bound = socket.local_addr()?;
            let socket = tokio::net::UdpSocket::from_std(socket)?;
            (
                Some(Bridge::new(&config.webrtc, bound, &metrics)),
                Some(socket),
            )
        }
        None => (None, None),
    };
    let hub = Hub::new(sfu_config(config), seed, bridge, metrics.clone());
    let handle = WorkerHandle {
        commands: commands_tx,
        media: media_tx,
        metrics: metrics.clone(),
    };
    let driver = driver::Driver::new(hub, socket, metrics);
    let task = tokio::spawn(driver.run(commands_rx, media_rx, stop));
    Ok((handle, task))
}

/// The SFU core's configuration, from the gateway's.
pub(crate) fn sfu_config(config: &ValidConfig) -> SfuConfig {
    SfuConfig {
        max_rooms: config.limits.max_rooms,
        max_participants_per_room: config.limits.max_participants_per_room,
        max_tracks_per_participant: config.limits.max_tracks_per_participant,
        max_subscriptions_per_participant: config.limits.max_subscriptions_per_participant,
        keyframe_request_interval: config.media.keyframe_request_interval,
        grace_period: config.session.grace_period,
        ..SfuConfig::default()
    }
}
