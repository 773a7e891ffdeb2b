//! The worker's task: a thin driver around the [`Hub`].
//!
//! It owns what the hub must not: the queues from sessions, each session's port (its connection
//! and control queue), the WebRTC socket and the clock. Each turn of its loop takes one kind of
//! input (commands first, then a batch of media, then the datagrams waiting on the WebRTC socket,
//! then the hub's timer), hands it to the hub with the current time, and carries out everything
//! the hub asks for before it waits again.
//!
//! Sends never wait. A media datagram goes to quinn without waiting, framed in the hub's buffer
//! (one lock of the connection, no copy): when a subscriber's datagram buffer is full, quinn
//! drops its oldest queued datagram for the new one (newest wins), which the subscriber's session
//! counts as `send_buffer_full` when it next looks at its connection. A control message goes to the session's bounded queue: a
//! session whose queue is full is not reading its control stream, and it is closed with
//! `LIMIT_EXCEEDED` rather than silently losing messages. A WebRTC datagram goes out with
//! `try_send_to`: a full socket buffer drops it (`udp_send_failed`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use strait_media::webrtc::{UfragChange, binding_request_ufrag};
use strait_protocol::{ControlMessage, ErrorCode, ParticipantId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::batch::BatchSender;
use super::hub::{AttachRequest, Attached, ConnId, Hub, Output};
use super::pipe::{PipeMessage, PipeReceiver, Pipes};
use super::placement::Placement;
use super::shed::{ShedConfig, Shedder, process_cpu_time, thread_cpu_time};
use super::{Attach, MediaIn, Transfer, WorkerCommand};
use super::{Connection, DatagramSendError};
use crate::health::{Fault, Heart, IDLE_BEAT};
use crate::metrics::{DropReason, Metrics, Transport, TransportLabel, WorkerLabel};

/// Longest datagram read from the WebRTC socket; longer ones are truncated (and then refused by
/// the peer's DTLS or SRTP). Peers keep to the path MTU, well below.
const MAX_UDP_DATAGRAM: usize = 2048;

/// Most datagrams taken from the WebRTC socket per turn of the loop, so commands and QUIC media
/// are not starved by a flood.
const DATAGRAM_BATCH: usize = 64;

/// Most media packets taken from the queue per turn of the loop.
const MEDIA_BATCH: usize = 64;

/// Most messages taken from the pipe per turn of the loop.
const PIPE_BATCH: usize = 64;

/// Most commands taken from the queue per turn of the loop beyond the one that woke it (an
/// offer costs far more than a packet).
const COMMAND_BATCH: usize = 16;

/// The connection id of a WebSocket signaling session (its participant has no other).
const SIGNALING_CONN: ConnId = ConnId(0);

/// How a worker's WebRTC socket is shared (see [`super::pipe`]).
#[derive(Debug)]
pub(super) struct Steering {
    /// The pipes into every worker.
    pub(super) pipes: Arc<Pipes>,
    /// Whether every worker's socket is on one port (`webrtc.shared_port`).
    pub(super) shared_port: bool,
    /// How long a remote address is remembered without a datagram (`webrtc.ice_timeout`).
    pub(super) ice_timeout: std::time::Duration,
    /// Load shedding's thresholds and the latest speakers kept at level 3 (`None`: off).
    pub(super) shedding: Option<(ShedConfig, usize)>,
}

/// A worker's load shedding (see [`super::shed`]).
struct Shedding {
    shedder: Shedder,
    speakers: usize,
    /// The largest queue delay since the last decision (for the gauge).
    delay: Duration,
    next_decision: Instant,
    /// The thread's and the process's CPU time at the last reading.
    cpu: Option<(Instant, Duration, Duration)>,
    /// Cores the process may use (the process's CPU is shared among them).
    cores: f64,
    next_cpu: Instant,
    next_speakers: Instant,
    level_gauge: Gauge,
    delay_gauge: Gauge<f64, AtomicU64>,
    busy_gauge: Gauge<f64, AtomicU64>,
}

/// How often the shedding level is decided.
const SHED_DECISION: Duration = Duration::from_millis(250);

/// Where the hub's outputs for one participant go.
#[derive(Debug)]
pub(super) struct Port {
    conn: ConnId,
    /// The connection, for media datagrams and closing (none on the WebSocket path).
    link: Option<Arc<dyn Connection>>,
    /// The session's control queue; `None` once it overflowed.
    control: Option<mpsc::Sender<ControlMessage>>,
    packets_out: Counter,
    bytes_out: Counter,
}

pub(super) struct Driver {
    hub: Hub,
    ports: HashMap<ParticipantId, Port>,
    socket: Option<tokio::net::UdpSocket>,
    /// The WebRTC socket's batched sends.
    batch: BatchSender,
    /// This worker's index.
    index: usize,
    /// The pipes into every worker.
    pipes: Arc<Pipes>,
    /// With a shared WebRTC port: remote addresses whose datagrams belong to another worker's
    /// peer (learnt from their Binding requests), with when one was last seen.
    steering: Option<HashMap<SocketAddr, (usize, Instant)>>,
    /// When `steering` is next swept of addresses not seen for `ice_timeout`.
    next_sweep: Instant,
    ice_timeout: std::time::Duration,
    metrics: Arc<Metrics>,
    placement: Arc<Placement>,
    /// This worker's rooms and participants (`strait_worker_*`).
    rooms: Gauge,
    participants: Gauge,
    /// Beats at every turn of the loop (supervision, `/readyz`).
    heart: Heart,
    shedding: Option<Shedding>,
}

impl Driver {
    pub(super) fn new(
        hub: Hub,
        socket: Option<tokio::net::UdpSocket>,
        metrics: Arc<Metrics>,
        placement: Arc<Placement>,
        index: usize,
        webrtc: Steering,
        heart: Heart,
    ) -> Driver {
        let label = WorkerLabel {
            worker: u32::try_from(index).unwrap_or(u32::MAX),
        };
        let rooms = metrics.worker_rooms.get_or_create(&label).clone();
        let participants = metrics.worker_participants.get_or_create(&label).clone();
        let now = Instant::now();
        let shedding = webrtc.shedding.map(|(config, speakers)| Shedding {
            shedder: Shedder::new(config),
            speakers,
            delay: Duration::ZERO,
            next_decision: now + SHED_DECISION,
            cpu: None,
            cores: std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64),
            next_cpu: now,
            next_speakers: now,
            level_gauge: metrics.worker_shed_level.get_or_create(&label).clone(),
            delay_gauge: metrics.worker_queue_delay.get_or_create(&label).clone(),
            busy_gauge: metrics.worker_busy.get_or_create(&label).clone(),
        });
        Driver {
            hub,
            ports: HashMap::new(),
            socket,
            batch: BatchSender::new(),
            index,
            pipes: webrtc.pipes,
            steering: webrtc.shared_port.then(HashMap::new),
            next_sweep: Instant::now() + webrtc.ice_timeout,
            ice_timeout: webrtc.ice_timeout,
            rooms,
            participants,
            metrics,
            placement,
            heart,
            shedding,
        }
    }

    /// Load shedding's turn: reads the thread's CPU time each second, decides the level every
    /// quarter second, and at level 3 follows the speakers each second.
    fn shed(&mut self, now: Instant) {
        let Some(shed) = self.shedding.as_mut() else {
            return;
        };
        if now >= shed.next_cpu {
            if let (Some(thread), Some(process)) = (thread_cpu_time(), process_cpu_time()) {
                if let Some((at, thread_before, process_before)) = shed.cpu {
                    let wall = now.saturating_duration_since(at).as_secs_f64();
                    if wall > 0.0 {
                        let own = thread.saturating_sub(thread_before).as_secs_f64() / wall;
                        let all = process.saturating_sub(process_before).as_secs_f64()
                            / (wall * shed.cores);
                        let ratio = own.max(all);
                        shed.shedder.observe_busy(ratio);
                        shed.busy_gauge.set(ratio);
                    }
                }
                shed.cpu = Some((now, thread, process));
            }
            shed.next_cpu = now + Duration::from_secs(1);
        }
        let mut changed = None;
        if now >= shed.next_decision {
            shed.delay_gauge
                .set(std::mem::take(&mut shed.delay).as_secs_f64());
            changed = shed.shedder.decide(now);
            shed.next_decision = now + SHED_DECISION;
        }
        let speakers = shed.speakers;
        if let Some(level) = changed {
            shed.level_gauge.set(i64::from(level));
            self.heart.shedding(level);
            tracing::warn!(worker = self.index, level, "load shedding level changed");
            self.hub.set_shed_level(level, speakers, now);
            self.flush();
        } else if shed.shedder.level() >= 3 && now >= shed.next_speakers {
            shed.next_speakers = now + Duration::from_secs(1);
            self.hub.refresh_speakers(speakers, now);
            self.flush();
        }
    }

    /// Brings the metrics' gauges up to date.
    fn update_gauges(&mut self) {
        self.hub.update_gauges();
        let stats = self.hub.stats();
        self.rooms
            .set(i64::try_from(stats.rooms).unwrap_or(i64::MAX));
        self.participants
            .set(i64::try_from(stats.participants).unwrap_or(i64::MAX));
    }

    pub(super) async fn run(
        mut self,
        mut commands: mpsc::Receiver<WorkerCommand>,
        mut media: mpsc::Receiver<MediaIn>,
        mut pipe: PipeReceiver,
        stop: CancellationToken,
    ) {
        let mut batch = Vec::with_capacity(MEDIA_BATCH);
        let mut piped = Vec::with_capacity(PIPE_BATCH);
        let mut buf = vec![0u8; MAX_UDP_DATAGRAM];
        loop {
            // The hub's next timer, or the next beat of an idle worker.
            let beat = Instant::now() + IDLE_BEAT;
            let deadline = Some(self.hub.poll_timeout().map_or(beat, |at| at.min(beat)));
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                command = commands.recv() => match command {
                    Some(command) => self.command(command),
                    None => break,
                },
                n = media.recv_many(&mut batch, MEDIA_BATCH) => {
                    if n == 0 {
                        break;
                    }
                    self.media(&mut batch);
                },
                received = recv_from(self.socket.as_ref(), &mut buf) => match received {
                    Ok((n, from)) => self.udp(from, &buf[..n], Instant::now()),
                    Err(e) => tracing::trace!(error = %e, "webrtc socket receive failed"),
                },
                n = pipe.recv_many(&mut piped, PIPE_BATCH) => {
                    if n == 0 {
                        break;
                    }
                    self.piped(&mut piped);
                },
                () = sleep_until(deadline) => self.hub.handle_timeout(Instant::now()),
            }
            // Whatever woke the loop, every source gets its share of this turn: a flood of one
            // (media, datagrams, commands) cannot starve the others or the timers.
            self.sweep(&mut commands, &mut media, &mut batch, &mut buf);
            while piped.len() < PIPE_BATCH {
                let Some(message) = pipe.try_recv() else {
                    break;
                };
                piped.push(message);
            }
            self.piped(&mut piped);
            self.flush();
            self.update_gauges();
            let now = Instant::now();
            self.heart.beat(now);
            self.shed(now);
        }
        // Shutdown: WebRTC peers hear DTLS close_notify; sessions still attached are closed.
        self.hub.close_all(Instant::now());
        self.flush();
        self.update_gauges();
        for port in self.ports.values() {
            if let Some(link) = &port.link {
                link.close(ErrorCode::GOING_AWAY, "shutting down");
            }
        }
    }

    /// Takes what is already waiting from each source, a bounded batch of each, and runs the
    /// timers when they are due.
    fn sweep(
        &mut self,
        commands: &mut mpsc::Receiver<WorkerCommand>,
        media: &mut mpsc::Receiver<MediaIn>,
        batch: &mut Vec<MediaIn>,
        buf: &mut [u8],
    ) {
        for _ in 0..COMMAND_BATCH {
            let Ok(command) = commands.try_recv() else {
                break;
            };
            self.command(command);
        }
        while batch.len() < MEDIA_BATCH {
            let Ok(packet) = media.try_recv() else {
                break;
            };
            batch.push(packet);
        }
        self.media(batch);
        // Out of `self` for the batch, so that each datagram can be steered through `self`.
        if let Some(socket) = self.socket.take() {
            for _ in 0..DATAGRAM_BATCH {
                let Ok((n, from)) = socket.try_recv_from(buf) else {
                    break;
                };
                self.udp(from, &buf[..n], Instant::now());
            }
            self.socket = Some(socket);
        }
        let now = Instant::now();
        if self.hub.poll_timeout().is_some_and(|at| at <= now) {
            self.hub.handle_timeout(now);
        }
        if now >= self.next_sweep {
            self.next_sweep = now + self.ice_timeout;
            if let Some(steering) = self.steering.as_mut() {
                let timeout = self.ice_timeout;
                steering.retain(|_, (_, seen)| now.saturating_duration_since(*seen) < timeout);
            }
        }
    }

    /// A datagram of this worker's WebRTC socket: to its hub, or — on a shared port — to the
    /// worker that holds its peer (see [`super::pipe`]).
    fn udp(&mut self, from: SocketAddr, bytes: &[u8], now: Instant) {
        if let Some(steering) = self.steering.as_mut() {
            let owner = match binding_request_ufrag(bytes) {
                Some(ufrag) => match self.pipes.ufrag_owner(ufrag) {
                    Some(owner) if owner != self.index => {
                        steering.insert(from, (owner, now));
                        Some(owner)
                    }
                    _ => {
                        steering.remove(&from);
                        None
                    }
                },
                None => steering.get_mut(&from).map(|(owner, seen)| {
                    *seen = now;
                    *owner
                }),
            };
            if let Some(owner) = owner {
                let message = PipeMessage::Datagram {
                    from,
                    bytes: Bytes::copy_from_slice(bytes),
                };
                match self.pipes.send(owner, message) {
                    Ok(()) => {
                        self.metrics.webrtc_steered.inc();
                    }
                    Err(_) => self.metrics.count_drop(DropReason::WorkerPipeFull),
                }
                return;
            }
        }
        self.hub.handle_udp(from, bytes, now);
    }

    /// What other workers handed this one.
    fn piped(&mut self, piped: &mut Vec<PipeMessage>) {
        for message in piped.drain(..) {
            match message {
                PipeMessage::Datagram { from, bytes } => {
                    self.hub.handle_udp(from, &bytes, Instant::now());
                }
                PipeMessage::Room {
                    room,
                    from,
                    message,
                } => self.hub.handle_pipe(&room, from, message, Instant::now()),
            }
        }
    }

    fn media(&mut self, batch: &mut Vec<MediaIn>) {
        // How long the oldest of the batch waited between its session and this worker.
        if let (Some(shed), Some(first)) = (self.shedding.as_mut(), batch.first()) {
            let delay = Instant::now().saturating_duration_since(first.at);
            shed.shedder.observe_delay(delay);
            shed.delay = shed.delay.max(delay);
        }
        for packet in batch.drain(..) {
            self.hub
                .handle_media(packet.participant, packet.media, &packet.rtp, packet.at);
            self.flush();
        }
    }

    fn command(&mut self, command: WorkerCommand) {
        let now = Instant::now();
        match command {
            WorkerCommand::Attach(attach, reply) => {
                let _ = reply.send(self.attach(attach, now));
            }
            WorkerCommand::Request {
                participant,
                message,
                join_started,
                home,
            } => self
                .hub
                .handle_request(participant, message, join_started, home, now),
            WorkerCommand::KeyframeForMedia { participant, media } => {
                self.hub.request_keyframe_for_media(participant, media, now);
            }
            WorkerCommand::Estimate {
                participant,
                estimate,
            } => self.hub.set_estimate(participant, estimate, now),
            WorkerCommand::WebRtcOffer(offer, reply) => {
                let _ = reply.send(self.hub.webrtc_offer(*offer, now));
            }
            WorkerCommand::WebRtcDelete(target, reply) => {
                let _ = reply.send(self.hub.webrtc_delete(&target, now));
            }
            WorkerCommand::WebRtcPatch {
                target,
                fragment,
                if_match,
                reply,
            } => {
                let patched = self
                    .hub
                    .webrtc_patch(&target, &fragment, if_match.as_deref(), now);
                let _ = reply.send(patched);
            }
            WorkerCommand::AttachSignaling {
                participant,
                token,
                control,
            } => {
                if let Err(e) = self
                    .hub
                    .attach_signaling(participant, token, SIGNALING_CONN)
                {
                    // Dropping `control` ends the session.
                    tracing::debug!(participant = participant.0, error = %e, "signaling refused");
                    return;
                }
                let port = Port::new(
                    SIGNALING_CONN,
                    None,
                    control,
                    Transport::Webrtc,
                    &self.metrics,
                );
                self.ports.insert(participant, port);
            }
            WorkerCommand::SignalingOffer { participant, sdp } => {
                self.hub.signaling_offer(participant, &sdp, now);
            }
            WorkerCommand::SignalingClosed { participant } => {
                self.ports.remove(&participant);
                self.hub.signaling_closed(participant, now);
            }
            WorkerCommand::Detached { participant, conn } => {
                if self.ports.get(&participant).is_some_and(|p| p.conn == conn) {
                    self.ports.remove(&participant);
                }
                self.hub.detach(participant, conn, now);
            }
            WorkerCommand::Release { participant, reply } => {
                let transfer = if self.ports.contains_key(&participant) {
                    self.hub.release(participant).and_then(|released| {
                        let port = self.ports.remove(&participant)?;
                        Some(Transfer { released, port })
                    })
                } else {
                    None
                };
                let _ = reply.send(transfer);
            }
            WorkerCommand::Adopt {
                participant,
                transfer,
                reply,
            } => {
                let Transfer { released, port } = transfer;
                let adopted = self.hub.adopt(participant, released);
                if adopted.is_ok() {
                    self.ports.insert(participant, port);
                }
                let _ = reply.send(adopted);
            }
            WorkerCommand::Leave { participant, conn } => {
                if self.ports.get(&participant).is_some_and(|p| p.conn == conn) {
                    self.ports.remove(&participant);
                }
                self.hub.leave(participant, conn, now);
            }
            WorkerCommand::Fault(fault) => match fault {
                Fault::Stall(pause) => {
                    tracing::warn!(worker = self.index, ?pause, "stalling on request");
                    std::thread::sleep(pause);
                }
                Fault::Panic => panic!("fault injected into media worker {}", self.index),
            },
        }
        self.flush();
    }

    fn attach(
        &mut self,
        attach: Attach,
        now: Instant,
    ) -> Result<Attached, super::hub::AttachError> {
        let Attach {
            participant,
            link,
            control,
            resume,
            token,
        } = attach;
        let conn = link.conn_id();
        let transport = link.transport();
        let request = AttachRequest {
            participant,
            conn,
            prefix: link.prefix(),
            transport,
            resume,
            token,
        };
        let attached = self.hub.attach(request, now)?;
        let port = Port::new(conn, Some(link), control, transport, &self.metrics);
        if let Some(old) = self.ports.insert(participant, port)
            && old.conn != conn
            && let Some(link) = &old.link
        {
            link.close(
                ErrorCode::REPLACED,
                "the session resumed on another connection",
            );
        }
        Ok(attached)
    }

    /// Carries out everything the hub asks for.
    fn flush(&mut self) {
        while let Some(output) = self.hub.poll_output() {
            match output {
                Output::Datagram {
                    to,
                    datagram,
                    rtp_len,
                } => {
                    let Some(port) = self.ports.get(&to) else {
                        self.metrics.count_drop(DropReason::SubscriberAway);
                        continue;
                    };
                    let Some(link) = &port.link else {
                        self.metrics.count_drop(DropReason::SubscriberAway);
                        continue;
                    };
                    if rtp_len == 0 {
                        // A probe's padding: counted apart, never as media (nor its refusal
                        // as a media drop).
                        let len = datagram.len() as u64;
                        if link.send_datagram(datagram).is_ok() {
                            let allocation = &self.metrics.allocation;
                            allocation.padding_datagrams.inc();
                            allocation.padding_bytes.inc_by(len);
                        }
                        continue;
                    }
                    match link.send_datagram(datagram) {
                        Ok(()) => {
                            port.packets_out.inc();
                            port.bytes_out.inc_by(rtp_len as u64);
                        }
                        Err(DatagramSendError::TooLarge) => {
                            self.metrics.count_drop(DropReason::TooLargeForDatagram);
                        }
                        Err(DatagramSendError::Failed) => {
                            self.metrics.count_drop(DropReason::SendFailed);
                        }
                    }
                }
                Output::Control { to, message } => {
                    let Some(port) = self.ports.get_mut(&to) else {
                        continue;
                    };
                    let Some(control) = &port.control else {
                        continue;
                    };
                    if control.try_send(message).is_err() {
                        tracing::debug!(
                            participant = to.0,
                            "control queue full; closing the session"
                        );
                        if let Some(link) = port.link.take() {
                            link.close(
                                ErrorCode::LIMIT_EXCEEDED,
                                "control queue overflow: the client does not read",
                            );
                        }
                        port.control = None;
                    }
                }
                Output::Pipe { to, room, message } => {
                    let message = PipeMessage::Room {
                        room,
                        from: self.index,
                        message,
                    };
                    if self.pipes.send(to, message).is_err() {
                        self.metrics.count_drop(DropReason::WorkerPipeFull);
                    }
                }
                Output::Gone { participant } => {
                    self.ports.remove(&participant);
                    self.placement.gone(participant);
                }
            }
        }
        self.flush_transmits();
        while let Some(change) = self.hub.poll_ufrag_change() {
            if self.steering.is_none() {
                continue;
            }
            match change {
                UfragChange::Taken(ufrag) => self.pipes.take_ufrag(ufrag, self.index),
                UfragChange::Released(ufrag) => self.pipes.release_ufrag(&ufrag, self.index),
            }
        }
    }

    /// Sends what the hub has for the WebRTC socket, in batches ([`BatchSender`]).
    fn flush_transmits(&mut self) {
        if let Some(socket) = &self.socket {
            let hub = &mut self.hub;
            let dropped = self.batch.send_all(socket, || hub.poll_transmit());
            if dropped > 0 {
                self.metrics.count_drops(DropReason::UdpSendFailed, dropped);
            }
        }
    }
}

impl Port {
    fn new(
        conn: ConnId,
        link: Option<Arc<dyn Connection>>,
        control: mpsc::Sender<ControlMessage>,
        transport: Transport,
        metrics: &Metrics,
    ) -> Port {
        let label = TransportLabel { transport };
        Port {
            conn,
            link,
            control: Some(control),
            packets_out: metrics.packets_out.get_or_create(&label).clone(),
            bytes_out: metrics.bytes_out.get_or_create(&label).clone(),
        }
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use bytes::Bytes;
    use prometheus_client::registry::Registry;
    use strait_media::sfu::SfuConfig;
    use strait_protocol::{Join, RequestId, RoomId};
    use tokio::sync::oneshot;

    use super::*;
    use crate::auth::{Grants, RoomGrant, VerifiedToken};

    /// A connection that records how it was closed.
    #[derive(Debug)]
    struct Recorded {
        id: u64,
        closed: Mutex<Option<ErrorCode>>,
    }

    impl Connection for Recorded {
        fn conn_id(&self) -> ConnId {
            ConnId(self.id)
        }

        fn transport(&self) -> Transport {
            Transport::Quic
        }

        fn prefix(&self) -> strait_protocol::datagram::DatagramPrefix {
            strait_protocol::datagram::DatagramPrefix::NONE
        }

        fn send_datagram(&self, _: Bytes) -> Result<(), DatagramSendError> {
            Ok(())
        }

        fn close(&self, code: ErrorCode, _: &str) {
            *self.closed.lock().unwrap() = Some(code);
        }
    }

    fn token(identity: &str) -> VerifiedToken {
        let now = std::time::SystemTime::now();
        VerifiedToken {
            key_id: "test".into(),
            identity: identity.into(),
            room: RoomGrant::Room(RoomId("lobby".into())),
            grants: Grants::participant(),
            name: None,
            issued_at: now,
            expires_at: now + Duration::from_secs(60),
            not_before: None,
        }
    }

    /// Attaches participant `id` on connection `id` with a control queue of `capacity`, and
    /// joins the lobby.
    fn join(
        driver: &mut Driver,
        id: u64,
        capacity: usize,
    ) -> (Arc<Recorded>, mpsc::Receiver<ControlMessage>) {
        let connection = Arc::new(Recorded {
            id,
            closed: Mutex::new(None),
        });
        let (control, queue) = mpsc::channel(capacity);
        let (reply, _) = oneshot::channel();
        driver.command(WorkerCommand::Attach(
            Attach {
                participant: ParticipantId(id),
                link: connection.clone(),
                control,
                resume: false,
                token: Some(token(&format!("user-{id}"))),
            },
            reply,
        ));
        driver.command(WorkerCommand::Request {
            participant: ParticipantId(id),
            message: ControlMessage::Join(Join {
                request: RequestId(1),
                room: RoomId("lobby".into()),
                name: String::new(),
            }),
            join_started: None,
            home: None,
        });
        (connection, queue)
    }

    /// A session that does not read its control queue is closed with LIMIT_EXCEEDED; its
    /// connection's detach then starts the grace period like any lost connection's, and the
    /// participant leaves at its end. (The worker used to forget the closed connection, ignore
    /// the detach, and keep the participant in its room for good.)
    #[test]
    fn a_session_that_does_not_read_its_queue_is_closed_and_then_leaves_its_room() {
        let metrics = Arc::new(Metrics::new(&mut Registry::default()));
        let config = SfuConfig {
            grace_period: Duration::from_millis(10),
            ..SfuConfig::default()
        };
        let hub = Hub::new(config, 1, None, metrics.clone());
        let mut driver = Driver::new(
            hub,
            None,
            metrics,
            Arc::new(Placement::new(1, 10, 100)),
            0,
            Steering {
                pipes: Arc::new(Pipes::new(1).0),
                shared_port: false,
                ice_timeout: Duration::from_secs(25),
                shedding: None,
            },
            Arc::new(crate::health::Health::new(Duration::from_secs(3))).register("worker"),
        );
        let (_, mut alice) = join(&mut driver, 1, 64);
        // Bob's queue holds two messages: his `Joined` and Alice's presence. Nobody reads it.
        let (bob_connection, _bob) = join(&mut driver, 2, 2);
        assert_eq!(*bob_connection.closed.lock().unwrap(), None);
        // Carol joins: Bob's notice of her does not fit, and Bob is closed.
        let (_, _carol) = join(&mut driver, 3, 64);
        assert_eq!(
            *bob_connection.closed.lock().unwrap(),
            Some(ErrorCode::LIMIT_EXCEEDED)
        );
        // His session sees its connection closed and reports it lost.
        driver.command(WorkerCommand::Detached {
            participant: ParticipantId(2),
            conn: ConnId(2),
        });
        driver
            .hub
            .handle_timeout(Instant::now() + Duration::from_secs(1));
        driver.flush();
        let mut left = None;
        while let Ok(message) = alice.try_recv() {
            if let ControlMessage::ParticipantLeft(l) = message {
                left = Some(l);
            }
        }
        let left = left.expect("alice hears bob leave");
        assert_eq!(left.participant, ParticipantId(2));
        assert_eq!(left.reason, ErrorCode::TIMEOUT);
        assert!(!driver.ports.contains_key(&ParticipantId(2)));
    }

    fn driver(metrics: &Arc<Metrics>) -> Driver {
        let hub = Hub::new(SfuConfig::default(), 1, None, metrics.clone());
        Driver::new(
            hub,
            None,
            metrics.clone(),
            Arc::new(Placement::new(1, 10, 100)),
            0,
            Steering {
                pipes: Arc::new(Pipes::new(1).0),
                shared_port: false,
                ice_timeout: Duration::from_secs(25),
                shedding: None,
            },
            Arc::new(crate::health::Health::new(Duration::from_secs(3))).register("worker"),
        )
    }

    /// Publishes a one-layer VP8 camera track from `id`; returns its track id.
    fn publish(
        driver: &mut Driver,
        id: u64,
        queue: &mut mpsc::Receiver<ControlMessage>,
    ) -> strait_protocol::TrackId {
        use strait_protocol::{Codec, Layer, MediaId, Publish, TrackKind};
        driver.command(WorkerCommand::Request {
            participant: ParticipantId(id),
            message: ControlMessage::Publish(Publish {
                request: RequestId(2),
                kind: TrackKind::Video,
                codec: Codec {
                    name: "VP8".into(),
                    payload_type: 96,
                    clock_rate: 90_000,
                    channels: 0,
                    fmtp: String::new(),
                },
                source: "camera".into(),
                layers: vec![Layer {
                    media: MediaId(1),
                    max_bitrate: 0,
                    width: 0,
                    height: 0,
                }],
                muted: false,
            }),
            join_started: None,
            home: None,
        });
        loop {
            match queue.try_recv() {
                Ok(ControlMessage::Published(p)) => return p.track,
                Ok(_) => {}
                Err(e) => panic!("no Published: {e}"),
            }
        }
    }

    /// A probe's padding datagrams are counted apart from media: `padding_datagrams` and
    /// `padding_bytes`, never `packets_out` or a media drop.
    #[test]
    fn padding_is_counted_apart_from_media() {
        use strait_media::bwe::{Estimate, LinkState};
        use strait_protocol::Subscribe;

        let metrics = Arc::new(Metrics::new(&mut Registry::default()));
        let mut driver = driver(&metrics);
        let (_, mut alice) = join(&mut driver, 1, 64);
        let first = publish(&mut driver, 1, &mut alice);
        let (_, mut bob) = join(&mut driver, 2, 64);
        let second = publish(&mut driver, 2, &mut bob);
        let (_, _carol) = join(&mut driver, 3, 64);
        for track in [first, second] {
            driver.command(WorkerCommand::Request {
                participant: ParticipantId(3),
                message: ControlMessage::Subscribe(Subscribe {
                    request: RequestId(3),
                    track,
                    max_layer: None,
                    priority: None,
                }),
                join_started: None,
                home: None,
            });
        }
        // Room for one video: the second is paused, and the core probes the link once it has
        // been clear a while and the pause's cooldown is over.
        let start = Instant::now();
        driver.command(WorkerCommand::Estimate {
            participant: ParticipantId(3),
            estimate: Estimate {
                available_bps: 200_000,
                acked_bps: 200_000,
                proven_bps: 200_000,
                state: LinkState::Clear,
                queue_delay: Duration::ZERO,
            },
        });
        // The hub's clock, a slice at a time, until padding went out (bounded).
        let mut at = start;
        while metrics.allocation.padding_datagrams.get() == 0 {
            assert!(at < start + Duration::from_secs(30), "no probe");
            at += strait_media::bwe::PADDING_INTERVAL;
            driver.hub.handle_timeout(at);
            driver.flush();
        }
        let allocation = &metrics.allocation;
        assert!(allocation.padding_datagrams.get() > 0, "padding was sent");
        assert!(
            allocation.padding_bytes.get() >= allocation.padding_datagrams.get(),
            "at least its kind byte each"
        );
        let label = TransportLabel {
            transport: Transport::Quic,
        };
        assert_eq!(metrics.packets_out.get_or_create(&label).get(), 0);
        assert_eq!(metrics.bytes_out.get_or_create(&label).get(), 0);
    }
}
