//! The media workers: `media.workers` of them, each a [hub](hub::Hub) (the SFU core, its
//! participants' sending side and its WebRTC bridge, sans-IO) and the [driver](driver) that runs
//! it on a thread of its own.
//!
//! - [`hub`]: the state machine; no socket, no task, no clock;
//! - [`bridge`]: the hub's WebRTC part (WHIP/WHEP and `/ws/rtc` peers on its worker's UDP socket);
//! - [`translate`]: the only module where protocol messages and ids meet the SFU core's;
//! - [`driver`]: the loop that feeds the hub and carries out its outputs;
//! - [`placement`]: which worker holds each room and each participant;
//! - [`pipe`]: what one worker hands another (a shared WebRTC port's datagrams).
//!
//! Sessions and the HTTP surface reach the workers through [`Media`]: it seats participants and
//! hands out the [`WorkerHandle`] of their worker — two bounded queues, commands (attach,
//! requests, detach), on which a session waits when the queue is full (backpressure onto that
//! session's control stream), and media packets, which are dropped and counted when the queue is
//! full (the worker is saturated; the arriving packet is the one refused).

mod batch;
pub(crate) mod bridge;
mod driver;
pub(crate) mod hub;
mod pipe;
pub(crate) mod placement;
mod shed;
mod spread;
pub(crate) mod translate;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use strait_media::bwe::Estimate;
use strait_media::sfu::SfuConfig;
use strait_protocol::datagram::DatagramPrefix;
use strait_protocol::{ControlMessage, MediaId, ParticipantId, RoomId};
use tokio::sync::{mpsc, oneshot};

use self::bridge::{Bridge, BridgeError, IcePatched, WebRtcOffer, WebRtcResource};
use self::hub::{AttachError, Attached, ConnId, Hub};
use self::placement::Placement;
use crate::auth::{RoomGrant, VerifiedToken};
use crate::config::ValidConfig;
use crate::metrics::{DropReason, Metrics, Transport};

/// A session's connection as the worker uses it: media datagrams out, and a close. The QUIC
/// port's `Link` (raw QUIC or WebTransport) is one; the worker knows nothing else of QUIC.
pub(crate) trait Connection: std::fmt::Debug + Send + Sync {
    /// Identifies the connection (stable across migrations).
    fn conn_id(&self) -> ConnId;
    /// Which transport carries it, for the metrics' labels.
    fn transport(&self) -> Transport;
    /// What goes in front of each datagram on this connection (written by the hub into the
    /// datagram's own buffer).
    fn prefix(&self) -> DatagramPrefix;
    /// Queues a datagram, already framed, without waiting. A full send buffer drops its oldest
    /// datagram for this one (newest wins); the connection's own session counts those.
    fn send_datagram(&self, datagram: Bytes) -> Result<(), DatagramSendError>;
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
        /// For a `Join`: the room's home worker, when the room is placed.
        home: Option<usize>,
    },
    /// A keyframe request by media id (from a control datagram).
    KeyframeForMedia {
        /// The subscriber.
        participant: ParticipantId,
        /// Its outgoing media id.
        media: MediaId,
    },
    /// The session's estimate of its connection toward the participant (from the QUIC
    /// connection's counters), for the allocation of its layers. Sent when it moved (see
    /// [`estimate_moved`]), so that a steady or idle session costs the worker nothing.
    Estimate {
        /// Who.
        participant: ParticipantId,
        /// The estimate.
        estimate: Estimate,
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
    /// Let go of a participant that has not joined a room, for another worker to take in: the
    /// reply carries it (`None` when it is unknown, in a room, or a WebRTC peer).
    Release {
        /// Who.
        participant: ParticipantId,
        /// Where the participant goes.
        reply: oneshot::Sender<Option<Transfer>>,
    },
    /// Take in a participant another worker let go of.
    Adopt {
        /// Who.
        participant: ParticipantId,
        /// The participant and its session's port.
        transfer: Transfer,
        /// Whether it was taken in.
        reply: oneshot::Sender<Result<(), AttachError>>,
    },
    /// The participant left for good, from connection `conn`.
    Leave {
        /// Who.
        participant: ParticipantId,
        /// The connection it left from; ignored when another connection has taken the
        /// participant over (it resumed elsewhere).
        conn: ConnId,
    },
    /// A fault to inject (tests of supervision).
    Fault(crate::health::Fault),
}

/// A participant on its way from one worker to another (see [`Media::join`]).
#[derive(Debug)]
pub(crate) struct Transfer {
    released: hub::Released,
    port: driver::Port,
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

    /// Queues a media packet that arrived `at`, or drops and counts it when the queue is full.
    pub(crate) fn media(
        &self,
        participant: ParticipantId,
        media: MediaId,
        rtp: Bytes,
        at: Instant,
    ) {
        let packet = MediaIn {
            participant,
            media,
            rtp,
            at,
        };
        if self.media.try_send(packet).is_err() {
            self.metrics.count_drop(DropReason::WorkerQueueFull);
        }
    }
}

/// Every worker of the node, and where rooms and participants are: how sessions and the HTTP
/// surface find the worker that holds what they ask about.
#[derive(Debug, Clone)]
pub(crate) struct Media {
    workers: Arc<[WorkerHandle]>,
    placement: Arc<Placement>,
}

impl Media {
    /// The worker at `index` (the last one for an index out of range).
    pub(crate) fn worker(&self, index: usize) -> &WorkerHandle {
        &self.workers[index.min(self.workers.len() - 1)]
    }

    /// Where rooms and participants are.
    pub(crate) fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Seats a new participant: on the worker of the room its token names, or (a token for any
    /// room) on the least loaded worker until its `Join`. Returns the worker's index.
    pub(crate) fn seat(
        &self,
        participant: ParticipantId,
        token: &VerifiedToken,
    ) -> Result<usize, AttachError> {
        let room = match &token.room {
            RoomGrant::Room(room) => Some(room),
            RoomGrant::Any => None,
        };
        Ok(self.placement.seat(participant, room)?)
    }

    /// Attaches a session: a new participant is seated first (see [`seat`](Self::seat)); a
    /// resumed one is found where it is. Returns the answer and the worker's index.
    pub(crate) async fn attach(&self, attach: Attach) -> Result<(Attached, usize), AttachError> {
        let participant = attach.participant;
        if attach.resume {
            let worker = self
                .placement
                .worker_of(participant)
                .ok_or(AttachError::ParticipantGone)?;
            return Ok((self.worker(worker).attach(attach).await?, worker));
        }
        let token = attach.token.as_ref().ok_or(AttachError::NoToken)?;
        let worker = self.seat(participant, token)?;
        match self.worker(worker).attach(attach).await {
            Ok(attached) => Ok((attached, worker)),
            Err(e) => {
                self.placement.gone(participant);
                Err(e)
            }
        }
    }

    /// A room or track request of `participant`, ready for its worker: a `Join` is routed to a
    /// worker of its room first ([`join`](Self::join)), and the handle of that worker comes back
    /// for the session to keep. A `Join` that cannot be placed gets its `Error` answer instead.
    pub(crate) async fn request(
        &self,
        participant: ParticipantId,
        message: ControlMessage,
        join_started: Option<Instant>,
    ) -> Result<(Option<WorkerHandle>, WorkerCommand), ControlMessage> {
        let mut routed = None;
        let mut home = None;
        if let ControlMessage::Join(join) = &message {
            match self.join(participant, &join.room).await {
                Ok((worker, room_home)) => {
                    routed = Some(self.worker(worker).clone());
                    home = Some(room_home);
                }
                Err(e) => return Err(translate::error(join.request, e.code(), e.to_string())),
            }
        }
        let command = WorkerCommand::Request {
            participant,
            message,
            join_started,
            home,
        };
        Ok((routed, command))
    }

    /// Where a participant's `Join` of `room` goes: its room's worker. A participant seated
    /// elsewhere (a token for any room) moves there first: its worker lets go of it and the
    /// room's worker takes it in, with its session's port, before the `Join` is sent.
    pub(crate) async fn join(
        &self,
        participant: ParticipantId,
        room: &RoomId,
    ) -> Result<(usize, usize), AttachError> {
        let place = self.placement.join(participant, room)?;
        let Some(from) = place.moved_from else {
            return Ok((place.worker, place.home));
        };
        let (reply, released) = oneshot::channel();
        self.worker(from)
            .send(WorkerCommand::Release { participant, reply })
            .await;
        let transfer = released
            .await
            .map_err(|_| AttachError::ShuttingDown)?
            .ok_or(AttachError::ParticipantGone)?;
        let (reply, adopted) = oneshot::channel();
        self.worker(place.worker)
            .send(WorkerCommand::Adopt {
                participant,
                transfer,
                reply,
            })
            .await;
        adopted.await.unwrap_or(Err(AttachError::ShuttingDown))?;
        Ok((place.worker, place.home))
    }
}

/// The worker threads, for the gateway's shutdown.
#[derive(Debug)]
pub(crate) struct Threads {
    threads: Vec<std::thread::JoinHandle<()>>,
    stopped: Vec<oneshot::Receiver<()>>,
}

impl Threads {
    /// Waits until every worker has stopped (after the `stop` given to [`spawn`] is
    /// cancelled).
    pub(crate) async fn join(self) {
        for stopped in self.stopped {
            let _ = stopped.await;
        }
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

/// Starts `media.workers` workers, each on a thread of its own with its own hub; they run until
/// `stop` is cancelled. With WebRTC sockets (already bound, one per worker), each worker's hub
/// runs the WebRTC bridge on its own socket.
pub(crate) fn spawn(
    config: &ValidConfig,
    metrics: &Arc<Metrics>,
    seeds: &mut dyn FnMut() -> u64,
    webrtc: Vec<std::net::UdpSocket>,
    stop: &tokio_util::sync::CancellationToken,
    health: &Arc<crate::health::Health>,
) -> std::io::Result<(Media, Threads)> {
    let count = config.media_workers();
    let placement = Arc::new(Placement::new(
        count,
        config.limits.max_rooms,
        config.media.room_spread_at,
    ));
    let (pipes, pipe_receivers) = pipe::Pipes::new(count);
    let pipes = Arc::new(pipes);
    let mut pipe_receivers = pipe_receivers.into_iter();
    let mut sockets = webrtc.into_iter();
    let mut handles = Vec::with_capacity(count);
    let mut threads = Threads {
        threads: Vec::with_capacity(count),
        stopped: Vec::with_capacity(count),
    };
    for index in 0..count {
        let (commands_tx, commands_rx) = mpsc::channel(1024);
        let (media_tx, media_rx) = mpsc::channel(config.limits.media_queue);
        let socket = if config.webrtc.enabled {
            let socket = sockets.next().ok_or_else(|| {
                std::io::Error::other(format!("no WebRTC socket for media worker {index}"))
            })?;
            socket.set_nonblocking(true)?;
            Some(socket)
        } else {
            None
        };
        let bridge = match &socket {
            Some(socket) => Some(Bridge::new(
                &config.webrtc,
                socket.local_addr()?,
                metrics,
                // Sender reports carry the wall-clock time; the sans-IO bridge reads no clock.
                (Instant::now(), std::time::SystemTime::now()),
            )),
            None => None,
        };
        let mut hub = Hub::new(sfu_config(config), seeds(), bridge, metrics.clone());
        hub.set_worker(index);
        handles.push(WorkerHandle {
            commands: commands_tx,
            media: media_tx,
            metrics: metrics.clone(),
        });
        let (stopped_tx, stopped_rx) = oneshot::channel();
        let pipe = pipe_receivers
            .next()
            .ok_or_else(|| std::io::Error::other("no pipe for a media worker"))?;
        let steering = driver::Steering {
            pipes: pipes.clone(),
            shared_port: config.webrtc.shared_port,
            ice_timeout: config.webrtc.ice_timeout,
            shedding: config.shedding.enabled.then(|| {
                let s = &config.shedding;
                (
                    shed::ShedConfig {
                        queue_delay: [
                            s.join_queue_delay,
                            s.layers_queue_delay,
                            s.video_queue_delay,
                        ],
                        busy: [s.join_busy, s.layers_busy, s.video_busy],
                        recover_after: s.recover_after,
                    },
                    s.speakers,
                )
            }),
        };
        let metrics = metrics.clone();
        let placement = placement.clone();
        let stop = stop.clone();
        let heart = health.register(format!("media worker {index}"));
        let thread = std::thread::Builder::new()
            .name(format!("strait-media-{index}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        tracing::error!(worker = index, error = %e, "media worker cannot start");
                        return;
                    }
                };
                let watch = heart.clone();
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    runtime.block_on(async move {
                        let socket = match socket.map(tokio::net::UdpSocket::from_std).transpose()
                        {
                            Ok(socket) => socket,
                            Err(e) => {
                                tracing::error!(worker = index, error = %e, "webrtc socket unusable");
                                return;
                            }
                        };
                        let driver = driver::Driver::new(
                            hub, socket, metrics, placement, index, steering, heart,
                        );
                        driver.run(commands_rx, media_rx, pipe, stop).await;
                    });
                }));
                // A panic is logged with its cause and makes the worker dead for `/readyz` and
                // `/healthz`; so does an end while the gateway is not stopping.
                watch.ended(ran.err().map(|payload| crate::health::panic_message(&*payload)));
                let _ = stopped_tx.send(());
            })?;
        threads.threads.push(thread);
        threads.stopped.push(stopped_rx);
    }
    let media = Media {
        workers: handles.into(),
        placement,
    };
    Ok((media, threads))
}

/// Whether a leg's estimate moved enough since the one last given to the SFU core to be worth
/// giving again: its state changed, its available or proven rate moved by
/// [`ESTIMATE_STEP_PERCENT`](strait_media::bwe::ESTIMATE_STEP_PERCENT) or
/// more (the step at which the core allocates again; a smaller move changes nothing there), or
/// its queueing delay by [`QUEUE_STEP`](strait_media::bwe::QUEUE_STEP) (what stops a probe). The
/// first estimate always is; an unchanged one never is, even at 0.
pub(crate) fn estimate_moved(last: Option<Estimate>, next: Estimate) -> bool {
    last.is_none_or(|last| next.moved_from(&last))
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
