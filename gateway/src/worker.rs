//! The media worker: the one task that owns the SFU core and every participant's sending side.
//!
//! Sessions talk to it through two bounded queues: commands (attach, requests, detach), on which a
//! session waits when the queue is full (backpressure onto that session's control stream), and
//! media packets, which are dropped and counted when the queue is full (the worker is saturated;
//! the arriving packet is the one refused). The worker forwards each packet by calling the SFU core
//! and, for every subscriber, writing the rewritten RTP into a slice of a shared send buffer and
//! handing it to quinn without waiting; no lock is held across a send. When a subscriber's datagram
//! buffer is full, quinn drops its oldest queued datagram for the new one (newest wins) and the
//! worker counts it as `send_buffer_full`.
//!
//! The WebRTC bridge (WHIP/WHEP peers on one UDP socket) runs in this task too; [`bridge`] says
//! why and how.
//!
//! Everything the worker tells a session (answers, room events, keyframe requests, the snapshot
//! after a resume) goes through that session's bounded control queue in order. A session whose
//! queue is full is not reading its control stream; it is closed with `LIMIT_EXCEEDED` rather than
//! silently losing messages.

pub mod bridge;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use prometheus_client::metrics::counter::Counter;
use strait_media::sfu::{self, Event, Sfu, SfuConfig};
use strait_protocol::{ControlMessage, ErrorCode, MediaId, ParticipantId};
use tokio::sync::{mpsc, oneshot};

use crate::auth::VerifiedToken;
use crate::config::ValidConfig;
use crate::link::{DatagramSendError, Link};
use crate::metrics::{DropReason, Metrics, TransportLabel};
use crate::translate::{self, Principal};

use self::bridge::{Bridge, BridgeError, IcePatched, WebRtcOffer, WebRtcResource};

/// A session asks to be attached to a participant (new, or resumed).
#[derive(Debug)]
pub struct Attach {
    /// The participant.
    pub participant: ParticipantId,
    /// The session's connection.
    pub link: Link,
    /// The session's control queue.
    pub control: mpsc::Sender<ControlMessage>,
    /// Take back an existing participant (from a resume token).
    pub resume: bool,
    /// The verified access token (required for a new participant).
    pub token: Option<VerifiedToken>,
}

/// The worker's answer to [`Attach`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachOutcome {
    /// A new participant is attached.
    Attached,
    /// The participant was taken back; its state snapshot is queued.
    Resumed,
    /// Not possible (for a resume: the participant is gone).
    Refused(String),
}

/// What sessions ask of the worker.
#[derive(Debug)]
pub enum WorkerCommand {
    /// Attach a session (see [`Attach`]).
    Attach(Attach, oneshot::Sender<AttachOutcome>),
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
        /// The stable id of the connection that was lost (a newer one may already be attached).
        conn: usize,
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
        /// The stable id of the connection it left from; ignored when another connection has
        /// taken the participant over (it resumed elsewhere).
        conn: usize,
    },
}

/// One RTP packet from a publisher.
#[derive(Debug)]
pub struct MediaIn {
    participant: ParticipantId,
    media: MediaId,
    rtp: Bytes,
    at: Instant,
}

/// How sessions reach the worker.
#[derive(Debug, Clone)]
pub struct WorkerHandle {
    commands: mpsc::Sender<WorkerCommand>,
    media: mpsc::Sender<MediaIn>,
    metrics: Arc<Metrics>,
}

impl WorkerHandle {
    /// Sends a command, waiting while the queue is full. A worker that is gone (shutdown) is
    /// ignored: the session is ending too.
    pub async fn send(&self, command: WorkerCommand) {
        let _ = self.commands.send(command).await;
    }

    /// Sends a command if the queue has room (for datagram-triggered commands, which are lossy
    /// by nature).
    pub fn try_send(&self, command: WorkerCommand) {
        if self.commands.try_send(command).is_err() {
            self.metrics.count_drop(DropReason::WorkerQueueFull);
        }
    }

    /// Attaches a session.
    pub async fn attach(&self, attach: Attach) -> AttachOutcome {
        let (tx, rx) = oneshot::channel();
        if self
            .commands
            .send(WorkerCommand::Attach(attach, tx))
            .await
            .is_err()
        {
            return AttachOutcome::Refused("the gateway is shutting down".into());
        }
        rx.await
            .unwrap_or_else(|_| AttachOutcome::Refused("the gateway is shutting down".into()))
    }

    /// Hands a WHIP or WHEP offer to the bridge; returns the answer SDP.
    pub async fn webrtc_offer(&self, offer: WebRtcOffer) -> Result<String, BridgeError> {
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
    pub async fn webrtc_patch(
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
    pub async fn webrtc_delete(&self, delete: WebRtcResource) -> Result<(), BridgeError> {
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
    pub fn media(&self, participant: ParticipantId, media: MediaId, rtp: Bytes) {
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

/// A participant's sending side, as the worker holds it.
struct Slot {
    principal: Principal,
    /// The live connection, or `None` during the grace period.
    link: Option<Link>,
    control: Option<mpsc::Sender<ControlMessage>>,
    /// The WebRTC peer, for a WHIP or WHEP participant (which has no link).
    webrtc: Option<strait_media::webrtc::PeerId>,
    packets_out: Counter,
    bytes_out: Counter,
}

/// The worker's state.
struct Worker {
    sfu: Sfu,
    slots: HashMap<ParticipantId, Slot>,
    metrics: Arc<Metrics>,
    /// Reused for every packet's datagrams: the header is built here once per subscriber.
    scratch: BytesMut,
    /// The WebRTC bridge, when enabled.
    bridge: Option<Bridge>,
}

/// Starts the worker; it runs until `stop` is cancelled or every handle is dropped. With a
/// `webrtc` socket (already bound), the worker runs the WebRTC bridge on it. Must be called
/// within a tokio runtime.
pub fn spawn(
    config: &ValidConfig,
    metrics: Arc<Metrics>,
    seed: u64,
    webrtc: Option<std::net::UdpSocket>,
    stop: tokio_util::sync::CancellationToken,
) -> std::io::Result<(WorkerHandle, tokio::task::JoinHandle<()>)> {
    let (commands_tx, commands_rx) = mpsc::channel(1024);
    let (media_tx, media_rx) = mpsc::channel(config.limits.media_queue);
    let sfu_config = SfuConfig {
        max_rooms: config.limits.max_rooms,
        max_participants_per_room: config.limits.max_participants_per_room,
        max_tracks_per_participant: config.limits.max_tracks_per_participant,
        max_subscriptions_per_participant: config.limits.max_subscriptions_per_participant,
        keyframe_request_interval: config.media.keyframe_request_interval,
        grace_period: config.session.grace_period,
        ..SfuConfig::default()
    };
    let bridge = match webrtc {
        Some(socket) => Some(Bridge::new(socket, &config.webrtc, &metrics)?),
        None => None,
    };
    let worker = Worker {
        sfu: Sfu::new(sfu_config, seed),
        slots: HashMap::new(),
        metrics: metrics.clone(),
        scratch: BytesMut::with_capacity(64 * 1024),
        bridge,
    };
    let handle = WorkerHandle {
        commands: commands_tx,
        media: media_tx,
        metrics,
    };
    let task = tokio::spawn(worker.run(commands_rx, media_rx, stop));
    Ok((handle, task))
}

impl Worker {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<WorkerCommand>,
        mut media: mpsc::Receiver<MediaIn>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut batch = Vec::with_capacity(64);
        let socket = self.bridge.as_ref().map(|b| b.socket.clone());
        let mut buf = vec![0u8; MAX_UDP_DATAGRAM];
        loop {
            let deadline = earliest(self.sfu.poll_timeout(), self.webrtc_poll_timeout());
            let mut datagram: Option<(usize, SocketAddr)> = None;
            tokio::select! {
                // Commands first: a subscribe should not wait behind a burst of media.
                biased;
                command = commands.recv() => match command {
                    Some(command) => self.command(command),
                    None => break,
                },
                n = media.recv_many(&mut batch, 64) => {
                    if n == 0 {
                        break;
                    }
                    for packet in batch.drain(..) {
                        self.forward(
                            packet.participant,
                            sfu::MediaId(packet.media.0),
                            &packet.rtp,
                            packet.at,
                        );
                    }
                },
                received = recv_from(socket.as_deref(), &mut buf) => match received {
                    Ok(received) => datagram = Some(received),
                    Err(e) => tracing::trace!(error = %e, "webrtc socket receive failed"),
                },
                () = sleep_until(deadline) => {
                    let now = Instant::now();
                    self.sfu.handle_timeout(now);
                    self.webrtc_timeout(now);
                },
                () = stop.cancelled() => break,
            }
            if let (Some((n, from)), Some(socket)) = (datagram, socket.as_deref()) {
                self.webrtc_datagram(&buf[..n], from);
                // Take what else is already waiting, so a burst is not paced by this loop.
                for _ in 1..DATAGRAM_BATCH {
                    let Ok((n, from)) = socket.try_recv_from(&mut buf) else {
                        break;
                    };
                    self.webrtc_datagram(&buf[..n], from);
                }
            }
            // Bridge events feed the core and the core's events reach WebRTC peers: go round
            // until both are quiet, then send what the bridge queued.
            loop {
                let webrtc = self.drain_webrtc_events();
                let sfu = self.drain_events();
                if !webrtc && !sfu {
                    break;
                }
            }
            self.flush_webrtc();
            self.update_gauges();
        }
        self.close_webrtc();
        // Shutdown: close whatever is still attached.
        for slot in self.slots.values() {
            if let Some(link) = &slot.link {
                link.close(ErrorCode::GOING_AWAY, "shutting down");
            }
        }
    }

    fn command(&mut self, command: WorkerCommand) {
        let now = Instant::now();
        match command {
            WorkerCommand::Attach(attach, reply) => {
                let outcome = self.attach(attach, now);
                let _ = reply.send(outcome);
            }
            WorkerCommand::Request {
                participant,
                message,
                join_started,
            } => {
                let Some(slot) = self.slots.get_mut(&participant) else {
                    return;
                };
                let was_joined = slot.principal.room.is_some();
                let answers = translate::request(
                    &mut self.sfu,
                    participant,
                    &mut slot.principal,
                    message,
                    now,
                );
                if !was_joined
                    && slot.principal.room.is_some()
                    && let Some(started) = join_started
                {
                    self.metrics
                        .join_latency
                        .observe(now.saturating_duration_since(started).as_secs_f64());
                }
                for answer in answers {
                    self.tell(participant, answer);
                }
            }
            WorkerCommand::KeyframeForMedia { participant, media } => {
                let _ = self.sfu.request_keyframe_for_media(
                    sfu::ParticipantId(participant.0),
                    sfu::MediaId(media.0),
                    now,
                );
            }
            WorkerCommand::Bandwidth {
                participant,
                bits_per_second,
            } => {
                let _ =
                    self.sfu
                        .set_bandwidth(sfu::ParticipantId(participant.0), bits_per_second, now);
            }
            WorkerCommand::WebRtcOffer(offer, reply) => {
                let _ = reply.send(self.webrtc_offer(*offer, now));
            }
            WorkerCommand::WebRtcDelete(delete, reply) => {
                let _ = reply.send(self.webrtc_delete(&delete, now));
            }
            WorkerCommand::WebRtcPatch {
                target,
                fragment,
                if_match,
                reply,
            } => {
                let patched = self.webrtc_patch(&target, &fragment, if_match.as_deref(), now);
                let _ = reply.send(patched);
            }
            WorkerCommand::AttachSignaling {
                participant,
                token,
                control,
            } => {
                let label = TransportLabel {
                    transport: crate::metrics::Transport::Webrtc,
                };
                self.slots.insert(
                    participant,
                    Slot {
                        principal: Principal { token, room: None },
                        link: None,
                        control: Some(control),
                        webrtc: None,
                        packets_out: self.metrics.packets_out.get_or_create(&label).clone(),
                        bytes_out: self.metrics.bytes_out.get_or_create(&label).clone(),
                    },
                );
            }
            WorkerCommand::SignalingOffer { participant, sdp } => {
                match self.signaling_offer(participant, &sdp, now) {
                    Ok(messages) => {
                        for message in messages {
                            self.tell(participant, message);
                        }
                    }
                    Err(e) => {
                        self.metrics.webrtc_offers_refused.inc();
                        let code = match &e {
                            BridgeError::Offer(
                                strait_media::webrtc::WebRtcError::TooManyPeers(_),
                            )
                            | BridgeError::Room(_) => ErrorCode::LIMIT_EXCEEDED,
                            BridgeError::Disabled | BridgeError::ShuttingDown => {
                                ErrorCode::GOING_AWAY
                            }
                            _ => ErrorCode::INVALID_REQUEST,
                        };
                        // Session-level: the session closes once it has sent it.
                        self.tell(
                            participant,
                            ControlMessage::Error(strait_protocol::ErrorMessage {
                                request: None,
                                code,
                                reason: format!("offer refused: {e}"),
                            }),
                        );
                    }
                }
            }
            WorkerCommand::SignalingClosed { participant } => {
                self.signaling_closed(participant, now);
            }
            WorkerCommand::Detached { participant, conn } => {
                let Some(slot) = self.slots.get_mut(&participant) else {
                    return;
                };
                if slot.link.as_ref().map(Link::stable_id) != Some(conn) {
                    // A newer connection took this participant over already.
                    return;
                }
                slot.link = None;
                slot.control = None;
                if slot.principal.room.is_some() {
                    let _ = self.sfu.disconnect(sfu::ParticipantId(participant.0), now);
                } else {
                    self.slots.remove(&participant);
                }
            }
            WorkerCommand::Leave { participant, conn } => {
                let current = self
                    .slots
                    .get(&participant)
                    .and_then(|s| s.link.as_ref().map(Link::stable_id));
                if current.is_some_and(|c| c != conn) {
                    return;
                }
                if let Some(slot) = self.slots.remove(&participant)
                    && slot.principal.room.is_some()
                {
                    let _ = self.sfu.leave(
                        sfu::ParticipantId(participant.0),
                        sfu::LeaveReason::Left,
                        now,
                    );
                }
            }
        }
    }

    fn attach(&mut self, attach: Attach, now: Instant) -> AttachOutcome {
        let Attach {
            participant,
            link,
            control,
            resume,
            token,
        } = attach;
        let label = TransportLabel {
            transport: link.transport(),
        };
        let packets_out = self.metrics.packets_out.get_or_create(&label).clone();
        let bytes_out = self.metrics.bytes_out.get_or_create(&label).clone();
        if resume {
            let Some(slot) = self.slots.get_mut(&participant) else {
                return AttachOutcome::Refused("the participant is gone".into());
            };
            if let Some(old) = slot.link.replace(link) {
                old.close(
                    ErrorCode::REPLACED,
                    "the session resumed on another connection",
                );
            }
            slot.control = Some(control.clone());
            slot.packets_out = packets_out;
            slot.bytes_out = bytes_out;
            if slot.principal.room.is_some() {
                match self.sfu.reconnect(sfu::ParticipantId(participant.0), now) {
                    Ok(snapshot) => {
                        for message in translate::resume_snapshot(&snapshot) {
                            self.tell(participant, message);
                        }
                    }
                    Err(e) => {
                        self.slots.remove(&participant);
                        return AttachOutcome::Refused(e.to_string());
                    }
                }
            } else {
                self.tell(participant, translate::snapshot_end());
            }
            return AttachOutcome::Resumed;
        }
        let Some(token) = token else {
            return AttachOutcome::Refused("no access token".into());
        };
        self.slots.insert(
            participant,
            Slot {
                principal: Principal { token, room: None },
                link: Some(link),
                control: Some(control),
                webrtc: None,
                packets_out,
                bytes_out,
            },
        );
        AttachOutcome::Attached
    }

    /// Queues a message to a participant's session; a full queue closes that session.
    fn tell(&mut self, participant: ParticipantId, message: ControlMessage) {
        let Some(slot) = self.slots.get_mut(&participant) else {
            return;
        };
        let Some(control) = &slot.control else {
            return;
        };
        if control.try_send(message).is_err() {
            tracing::debug!(
                participant = participant.0,
                "control queue full; closing the session"
            );
            if let Some(link) = slot.link.take() {
                link.close(
                    ErrorCode::LIMIT_EXCEEDED,
                    "control queue overflow: the client does not read",
                );
            }
            slot.control = None;
        }
    }

    /// Forwards one publisher packet to every subscriber, whatever its transport.
    fn forward(&mut self, publisher: ParticipantId, media: sfu::MediaId, rtp: &[u8], at: Instant) {
        let Worker {
            sfu,
            slots,
            metrics,
            scratch,
            bridge,
        } = self;
        let result = sfu.handle_rtp(
            sfu::ParticipantId(publisher.0),
            media,
            rtp,
            at,
            &mut |fwd: sfu::Forward<'_>| {
                let Some(slot) = slots.get(&ParticipantId(fwd.to.0)) else {
                    return;
                };
                if let Some(peer) = slot.webrtc {
                    let Some(bridge) = bridge.as_mut() else {
                        return;
                    };
                    match bridge.send(peer, &fwd, at) {
                        Ok(()) => {
                            slot.packets_out.inc();
                            slot.bytes_out.inc_by(fwd.len() as u64);
                        }
                        Err(_) => metrics.count_drop(DropReason::WebrtcSendFailed),
                    }
                    return;
                }
                let Some(link) = &slot.link else {
                    metrics.count_drop(DropReason::SubscriberAway);
                    return;
                };
                let media = MediaId(fwd.media.0);
                let header = strait_protocol::datagram::media_header_len(media);
                let len = header + fwd.len();
                if link.max_datagram_size().is_none_or(|max| len > max) {
                    metrics.count_drop(DropReason::TooLargeForDatagram);
                    return;
                }
                if scratch.capacity() < len {
                    // One allocation serves many datagrams: each is a slice of this buffer.
                    scratch.reserve(len.max(64 * 1024));
                }
                scratch.resize(len, 0);
                let written =
                    strait_protocol::datagram::write_media_header(media, &mut scratch[..])
                        .unwrap_or(header);
                fwd.write_into(&mut scratch[written..]);
                let datagram = scratch.split_to(len).freeze();
                match link.send_datagram(datagram) {
                    Ok(displaced) => {
                        slot.packets_out.inc();
                        slot.bytes_out.inc_by(fwd.len() as u64);
                        if displaced {
                            metrics.count_drop(DropReason::SendBufferFull);
                        }
                    }
                    Err(DatagramSendError::TooLarge) => {
                        metrics.count_drop(DropReason::TooLargeForDatagram)
                    }
                    Err(DatagramSendError::Failed) => metrics.count_drop(DropReason::SendFailed),
                }
            },
        );
        if let Err(e) = result {
            match e {
                sfu::RtpError::UnknownMedia { .. } => metrics.count_drop(DropReason::UnknownMedia),
                sfu::RtpError::NotJoined { .. } => metrics.count_drop(DropReason::NotJoined),
                _ => metrics.count_drop(DropReason::MalformedDatagram),
            }
        }
    }

    /// Handles every queued core event; returns whether there was one.
    fn drain_events(&mut self) -> bool {
        let mut any = false;
        while let Some(event) = self.sfu.poll_event() {
            any = true;
            match event {
                Event::Notify { to, notification } => {
                    if let Some(message) = translate::notification(&notification) {
                        self.tell(ParticipantId(to.0), message);
                    }
                }
                Event::KeyframeRequest {
                    to,
                    track,
                    layer,
                    media,
                } => {
                    let to = ParticipantId(to.0);
                    if !self.webrtc_keyframe_request(to, media) {
                        self.tell(to, translate::keyframe_request(track, layer));
                    }
                }
                Event::ParticipantRemoved { participant, .. } => {
                    self.slots.remove(&ParticipantId(participant.0));
                }
                _ => {}
            }
        }
        any
    }

    fn update_gauges(&mut self) {
        self.update_webrtc_gauges();
        let stats = self.sfu.stats();
        self.metrics.rooms.set(gauge(stats.rooms));
        self.metrics.participants.set(gauge(stats.participants));
        self.metrics.tracks.set(gauge(stats.tracks));
        self.metrics.subscriptions.set(gauge(stats.subscriptions));
    }
}

fn gauge(v: impl TryInto<i64>) -> i64 {
    v.try_into().unwrap_or(i64::MAX)
}

/// Longest datagram read from the WebRTC socket; longer ones are truncated (and then refused by
/// the peer's DTLS or SRTP). Peers keep to the path MTU, well below.
const MAX_UDP_DATAGRAM: usize = 2048;

/// Most datagrams taken from the WebRTC socket per turn of the loop, so commands and QUIC media
/// are not starved by a flood.
const DATAGRAM_BATCH: usize = 64;

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Receives from the WebRTC socket, or never when there is none. Cancel-safe (tokio's
/// `recv_from` is).
async fn recv_from(
    socket: Option<&tokio::net::UdpSocket>,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match socket {
        Some(socket) => socket.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
