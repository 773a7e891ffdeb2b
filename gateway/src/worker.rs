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
//! Everything the worker tells a session (answers, room events, keyframe requests, the snapshot
//! after a resume) goes through that session's bounded control queue in order. A session whose
//! queue is full is not reading its control stream; it is closed with `LIMIT_EXCEEDED` rather than
//! silently losing messages.

use std::collections::HashMap;
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
}

/// Starts the worker; it runs until `stop` is cancelled or every handle is dropped.
pub fn spawn(
    config: &ValidConfig,
    metrics: Arc<Metrics>,
    seed: u64,
    stop: tokio_util::sync::CancellationToken,
) -> (WorkerHandle, tokio::task::JoinHandle<()>) {
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
    let worker = Worker {
        sfu: Sfu::new(sfu_config, seed),
        slots: HashMap::new(),
        metrics: metrics.clone(),
        scratch: BytesMut::with_capacity(64 * 1024),
    };
    let handle = WorkerHandle {
        commands: commands_tx,
        media: media_tx,
        metrics,
    };
    let task = tokio::spawn(worker.run(commands_rx, media_rx, stop));
    (handle, task)
}

impl Worker {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<WorkerCommand>,
        mut media: mpsc::Receiver<MediaIn>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut batch = Vec::with_capacity(64);
        loop {
            let deadline = self.sfu.poll_timeout();
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
                        self.forward(&packet);
                    }
                },
                () = sleep_until(deadline) => {
                    self.sfu.handle_timeout(Instant::now());
                },
                () = stop.cancelled() => break,
            }
            self.drain_events();
            self.update_gauges();
        }
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

    fn forward(&mut self, packet: &MediaIn) {
        let Worker {
            sfu,
            slots,
            metrics,
            scratch,
        } = self;
        let result = sfu.handle_rtp(
            sfu::ParticipantId(packet.participant.0),
            sfu::MediaId(packet.media.0),
            &packet.rtp,
            packet.at,
            &mut |fwd: sfu::Forward<'_>| {
                let Some(slot) = slots.get(&ParticipantId(fwd.to.0)) else {
                    return;
                };
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

    fn drain_events(&mut self) {
        while let Some(event) = self.sfu.poll_event() {
            match event {
                Event::Notify { to, notification } => {
                    if let Some(message) = translate::notification(&notification) {
                        self.tell(ParticipantId(to.0), message);
                    }
                }
                Event::KeyframeRequest {
                    to, track, layer, ..
                } => {
                    self.tell(
                        ParticipantId(to.0),
                        translate::keyframe_request(track, layer),
                    );
                }
                Event::ParticipantRemoved { participant, .. } => {
                    self.slots.remove(&ParticipantId(participant.0));
                }
                _ => {}
            }
        }
    }

    fn update_gauges(&self) {
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

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
