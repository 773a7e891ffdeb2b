//! One session: a client's connection from its `ClientHello` to its end, the same for WebTransport
//! and raw QUIC.
//!
//! The session core ([`crate::session::core`]) holds the session's rules; this is its driver for
//! QUIC and WebTransport. Tasks per session: this one (reads control frames and datagrams, watches the connection) and a
//! writer (drains the session's bounded control queue into frames on the control stream). Room and
//! track requests go to the media worker, which answers through the same control queue as it sends
//! room events, so a client sees responses and events in the order they happened.
//!
//! Errors: a malformed frame, an oversized frame or a protocol rule broken closes this session with
//! the matching error code and touches nothing else; a refused request is answered with an `Error`
//! message and the session goes on.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use strait_media::bwe::{
    Estimate, PacketFate, QuicEstimator, QuicEstimatorConfig, QuicSample, RefreshPace,
};
use strait_protocol::datagram::{self, Datagram};
use strait_protocol::{
    ControlMessage, DatagramControl, Decoded, ErrorCode, FrameReader, ParticipantId,
};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::acks::AckFeed;
use super::link::{ControlRecv, ControlSend, Link};
use crate::auth::RoomGrant;
use crate::cluster::Placed;
use crate::metrics::{DropReason, RefusalReason, Transport, TransportLabel};
use crate::session::core::{
    HelloFacts, HubRequest, Incoming, RateLimit, SessionCore, SessionEnd, SessionOutput,
};
use crate::session::{RedirectPath, SessionContext};
use crate::worker::{Attach, Connection, WorkerCommand, WorkerHandle};

/// Bytes taken from the control stream per read. Control messages are small (a `ClientHello`
/// with its token is a few hundred bytes); a larger frame is assembled over several reads. Every
/// session holds this buffer for its whole life, so it is kept small.
const READ_BUFFER: usize = 2048;

/// Reads frames from the control stream.
struct ControlReader {
    recv: ControlRecv,
    frames: FrameReader,
    pending: Bytes,
    buf: Vec<u8>,
}

impl ControlReader {
    fn new(recv: ControlRecv, max_frame_size: usize) -> Self {
        Self {
            recv,
            frames: FrameReader::new(max_frame_size),
            pending: Bytes::new(),
            buf: vec![0; READ_BUFFER],
        }
    }

    /// [`next`](Self::next) that hands the reader back with the message: an owned future, which
    /// the session loop keeps pinned from one turn to the next instead of making a new read
    /// (and locking the connection for it) every time anything else wakes the session.
    async fn into_next(mut self) -> (Self, Incoming) {
        let incoming = self.next().await;
        (self, incoming)
    }

    /// Cancel safety: a frame is only taken out of `pending` once complete, and bytes read from
    /// the stream are stored before any other await, so cancelling loses nothing.
    async fn next(&mut self) -> Incoming {
        loop {
            match self.frames.next_message(&mut self.pending) {
                Ok(Some(Decoded::Message(m))) => return Incoming::Message(m),
                Ok(Some(Decoded::UnknownKind(k))) => return Incoming::Unknown(k),
                Ok(None) => {}
                Err(e) => return Incoming::Malformed(e),
            }
            match self.recv.read(&mut self.buf).await {
                Ok(0) => return Incoming::Finished,
                Ok(n) => self.pending = Bytes::copy_from_slice(&self.buf[..n]),
                Err(e) => return Incoming::Failed(e.to_string()),
            }
        }
    }
}

/// Writes control messages as frames. Runs as its own task; ends when the queue closes or the
/// stream fails.
///
/// Whatever is queued goes out in one write. A batch made only of membership events (someone
/// joined or left the room) waits up to [`COALESCE`] for company before it is written: nobody
/// waits on those, and in a busy room they come in bursts (every member hears of every join), so
/// one packet carries several instead of one packet, and one acknowledgement, each. Any other
/// message (an answer, a keyframe request, a track event) ends the wait at once.
async fn writer(
    mut send: ControlSend,
    mut queue: mpsc::Receiver<ControlMessage>,
    max_frame: usize,
) {
    let mut out = Vec::new();
    while let Some(first) = queue.recv().await {
        out.clear();
        let mut lazy = encode_queued(first, &mut queue, max_frame, &mut out);
        if lazy {
            let until = tokio::time::Instant::now() + COALESCE;
            while lazy && out.len() < WRITE_BATCH {
                tokio::select! {
                    next = queue.recv() => match next {
                        Some(message) => {
                            lazy = encode_queued(message, &mut queue, max_frame, &mut out);
                        }
                        None => break,
                    },
                    () = tokio::time::sleep_until(until) => break,
                }
            }
        }
        if send.write_all(&out).await.is_err() {
            return;
        }
        if queue.is_empty() {
            // An idle session keeps no write buffer.
            out = Vec::new();
        }
    }
    send.finish_and_wait(CLOSE_FLUSH).await;
}

/// Appends `first` and whatever else is queued now (up to [`WRITE_BATCH`] bytes) to `out`;
/// returns whether all of it were membership events, which may wait (see [`writer`]).
fn encode_queued(
    first: ControlMessage,
    queue: &mut mpsc::Receiver<ControlMessage>,
    max_frame: usize,
    out: &mut Vec<u8>,
) -> bool {
    let mut lazy = true;
    let mut next = Some(first);
    while let Some(message) = next.take() {
        lazy &= may_wait(&message);
        if let Err(e) = strait_protocol::encode_frame(&message, max_frame, out) {
            tracing::warn!(error = %e, kind = message.kind(), "control message not sent");
        }
        if out.len() < WRITE_BATCH {
            next = queue.try_recv().ok();
        }
    }
    lazy
}

/// Membership events: what [`writer`] may hold back for [`COALESCE`].
fn may_wait(message: &ControlMessage) -> bool {
    matches!(
        message,
        ControlMessage::ParticipantJoined(_) | ControlMessage::ParticipantLeft(_)
    )
}

/// How long membership events may wait for company before they are written.
const COALESCE: Duration = Duration::from_millis(20);

/// Most bytes of frames gathered into one write.
const WRITE_BATCH: usize = 64 * 1024;

/// How long a closing session waits for the client to acknowledge its last control frames (and,
/// before `ServerHello`, to close the connection itself once it has read them).
const CLOSE_FLUSH: Duration = Duration::from_millis(500);

/// Runs a session on an established connection until it ends. The caller holds the admission
/// permits for its lifetime.
pub(crate) async fn run(shared: Arc<SessionContext>, link: Link, accepted_at: Instant) {
    let span = tracing::info_span!(
        "session",
        conn = link.stable_id(),
        transport = ?link.transport(),
        participant = tracing::field::Empty,
    );
    async move {
        let transport = TransportLabel {
            transport: link.transport(),
        };
        let gauge = shared.metrics.sessions.get_or_create(&transport).clone();
        gauge.inc();
        let end = serve(&shared, &link, accepted_at).await;
        gauge.dec();
        match &end {
            SessionEnd::Violation(code, _) => {
                shared.metrics.protocol_errors.inc();
                tracing::debug!(?code, "session closed for a protocol violation");
            }
            other => tracing::debug!(end = ?other, "session ended"),
        }
    }
    .instrument(span)
    .await;
}

/// `messages` as frames, in one buffer (what the session says before its writer runs).
fn frames(messages: &[ControlMessage]) -> Vec<u8> {
    let mut out = Vec::new();
    for message in messages {
        let _ = strait_protocol::encode_frame(message, usize::MAX, &mut out);
    }
    out
}

/// Writes `messages` as frames on the control stream and closes the connection with `code`:
/// how a session that never got its writer (a refused hello) ends.
/// Where a session on `link` is redirected: a node's WebTransport URL or its QUIC address.
fn redirect_path(link: &Link) -> RedirectPath {
    if link.transport() == Transport::Webtransport {
        RedirectPath::WebTransport
    } else {
        RedirectPath::Quic
    }
}

async fn close_with_messages(
    link: &Link,
    send: &mut ControlSend,
    messages: &[ControlMessage],
    code: ErrorCode,
    reason: &str,
) {
    let out = frames(messages);
    if !out.is_empty() {
        // Bounded: the peer may be gone. Waiting for the acknowledgement keeps the close from
        // discarding the explanation.
        let _ = tokio::time::timeout(CLOSE_FLUSH, async {
            if send.write_all(&out).await.is_ok() {
                send.finish_and_wait(CLOSE_FLUSH).await;
                // Acknowledged is not read: a browser discards what its page has not read yet
                // when the connection closes. A client that read the explanation closes first
                // (a redirect, a refusal); the others are closed here once the bound is up.
                let _ = link.quic().closed().await;
            }
        })
        .await;
    }
    link.close(code, reason);
}

async fn serve(shared: &Arc<SessionContext>, link: &Link, accepted_at: Instant) -> SessionEnd {
    let config = &shared.config;
    let mut core = SessionCore::quic(shared.settings.clone(), shared.metrics.clone(), accepted_at);

    // 1. The control stream, within the hello timeout.
    let deadline = core.poll_timeout().unwrap_or(accepted_at);
    let (mut send, recv) =
        match tokio::time::timeout_at(deadline.into(), link.accept_control()).await {
            Ok(Ok(parts)) => parts,
            Ok(Err(reason)) => {
                // The connection went away before it opened a stream.
                shared.metrics.refuse(RefusalReason::Hello);
                return SessionEnd::Lost(reason);
            }
            Err(_) => {
                shared.metrics.refuse(RefusalReason::Hello);
                let reason = "no control stream in time".to_owned();
                link.close(ErrorCode::TIMEOUT, &reason);
                return SessionEnd::Closed(ErrorCode::TIMEOUT, reason);
            }
        };
    let mut reader = ControlReader::new(recv, config.limits.max_frame_size);

    // 2. The hello: what the core says before the session is live is written at once, ahead
    // of anything the hub queues.
    let (control_tx, control_rx) = mpsc::channel(config.limits.control_queue);
    let mut first: Vec<ControlMessage> = Vec::new();
    let mut worker_index = 0;
    loop {
        while let Some(output) = core.poll_output() {
            match output {
                SessionOutput::Send(message) => first.push(message),
                SessionOutput::Locate { node } => {
                    // A resume token of another node: there, while that node lives.
                    if let Ok(Some(owner)) = shared.cluster.node_of(node).await {
                        core.handle_redirect(shared.redirect(&owner, redirect_path(link), None));
                    }
                }
                SessionOutput::Attach { resume, token } => {
                    // A new participant's room may be served by another node of the cluster.
                    if resume.is_none()
                        && let Some(RoomGrant::Room(room)) = token.as_ref().map(|t| &t.room)
                    {
                        match shared.cluster.place(&room.0).await {
                            Placed::Here => {}
                            Placed::Elsewhere(owner) => {
                                core.handle_redirect(shared.redirect(
                                    &owner,
                                    redirect_path(link),
                                    token.as_ref(),
                                ));
                                continue;
                            }
                            Placed::Unavailable(reason) => {
                                core.handle_unavailable(reason);
                                continue;
                            }
                        }
                    }
                    let participant = resume.unwrap_or_else(|| shared.new_participant_id());
                    let result = shared
                        .media
                        .attach(Attach {
                            participant,
                            link: Arc::new(link.clone()),
                            control: control_tx.clone(),
                            resume: resume.is_some(),
                            token,
                        })
                        .await
                        .map(|(attached, worker)| {
                            worker_index = worker;
                            attached
                        });
                    let facts = HelloFacts {
                        ice_servers: shared.turn.ice_servers(participant.0, SystemTime::now()),
                        max_datagram_size: link
                            .max_datagram_size()
                            .and_then(|s| u32::try_from(s).ok())
                            .unwrap_or(0),
                    };
                    core.handle_attached(
                        participant,
                        result,
                        facts,
                        shared.credentials(),
                        Instant::now(),
                        SystemTime::now(),
                    );
                }
                SessionOutput::End(end) => {
                    let (code, reason) = match &end {
                        SessionEnd::Violation(code, reason) | SessionEnd::Closed(code, reason) => {
                            (*code, reason.as_str())
                        }
                        SessionEnd::Left | SessionEnd::Lost(_) => (ErrorCode::NONE, ""),
                    };
                    close_with_messages(link, &mut send, &first, code, reason).await;
                    return end;
                }
                SessionOutput::Hub(_) => {}
            }
        }
        if core.is_live() {
            break;
        }
        let deadline = core.poll_timeout().unwrap_or_else(Instant::now);
        match tokio::time::timeout_at(deadline.into(), reader.next()).await {
            Ok(incoming) => core.handle_message(
                incoming,
                shared.credentials(),
                Instant::now(),
                SystemTime::now(),
            ),
            Err(_) => {
                core.handle_timeout(shared.credentials(), Instant::now(), SystemTime::now());
            }
        }
    }
    let Some(participant) = core.participant() else {
        return SessionEnd::Lost("attached without a participant".into());
    };
    // The worker that holds the participant; a `Join` may move it to its room's.
    let mut worker = shared.media.worker(worker_index).clone();
    tracing::Span::current().record("participant", participant.0);

    // 3. ServerHello (and a failed resume's Error), written before anything the worker queued.
    if send.write_all(&frames(&first)).await.is_err() {
        worker
            .send(WorkerCommand::Detached {
                participant,
                conn: link.conn_id(),
            })
            .await;
        return SessionEnd::Lost("control stream failed".into());
    }
    let writer_task = tokio::spawn(
        writer(
            send,
            control_rx,
            strait_protocol::limits::DEFAULT_MAX_FRAME_SIZE,
        )
        .instrument(tracing::Span::current()),
    );

    // 4. The session's life.
    let mut end = session_loop(
        shared,
        link,
        participant,
        &mut core,
        reader,
        &control_tx,
        &mut worker,
    )
    .await;
    if matches!(end, SessionEnd::Lost(_)) && link.closed_by_peer_cleanly() {
        // A close with NONE is a leave (PROTOCOL.md 7.9).
        end = SessionEnd::Left;
    }
    let vitals = link.vitals(shared.config.quic.datagram_send_buffer, Instant::now());
    let displaced = link.displaced(&vitals);
    if displaced > 0 {
        shared
            .metrics
            .count_drops(DropReason::SendBufferFull, displaced);
    }
    let conn = link.conn_id();
    match &end {
        // A session closed for breaking the protocol may not resume (section 7.9): its
        // participant leaves now rather than haunting the room for the grace period.
        SessionEnd::Left | SessionEnd::Violation(..) => {
            worker
                .send(WorkerCommand::Leave { participant, conn })
                .await;
        }
        _ => {
            worker
                .send(WorkerCommand::Detached { participant, conn })
                .await;
        }
    }
    drop(control_tx);
    // The writer flushes what is queued (an Ack, an Error) and ends once the worker has let go
    // of its sender too; it gets a bounded time before the connection closes under it.
    let _ = tokio::time::timeout(Duration::from_secs(1), writer_task).await;
    match &end {
        SessionEnd::Left => link.close(ErrorCode::NONE, "left"),
        SessionEnd::Violation(code, reason) | SessionEnd::Closed(code, reason) => {
            link.close(*code, reason);
        }
        SessionEnd::Lost(_) => {}
    }
    end
}

/// Carries out what the core asks of a live session; returns how it ended, if it did.
async fn carry_out(
    shared: &Arc<SessionContext>,
    core: &mut SessionCore,
    participant: ParticipantId,
    control: &mpsc::Sender<ControlMessage>,
    worker: &mut WorkerHandle,
) -> Option<SessionEnd> {
    while let Some(output) = core.poll_output() {
        match output {
            // Queued behind what the hub queued before: answers and events stay in order. A
            // full queue is the client not reading; the hub closes such a session.
            SessionOutput::Send(message) => {
                let _ = control.try_send(message);
            }
            SessionOutput::Hub(HubRequest::Request {
                message,
                join_started,
            }) => {
                if let Some(refusal) = shared.place_join(core.token(), &message).await {
                    let _ = control.try_send(refusal);
                    continue;
                }
                match shared
                    .media
                    .request(participant, message, join_started)
                    .await
                {
                    Ok((routed, command)) => {
                        if let Some(routed) = routed {
                            *worker = routed;
                        }
                        worker.send(command).await;
                    }
                    Err(refusal) => {
                        let _ = control.try_send(refusal);
                    }
                }
            }
            SessionOutput::Hub(HubRequest::Offer { .. })
            | SessionOutput::Attach { .. }
            | SessionOutput::Locate { .. } => {}
            SessionOutput::End(end) => return Some(end),
        }
    }
    None
}

async fn session_loop(
    shared: &Arc<SessionContext>,
    link: &Link,
    participant: ParticipantId,
    core: &mut SessionCore,
    reader: ControlReader,
    control: &mpsc::Sender<ControlMessage>,
    worker: &mut WorkerHandle,
) -> SessionEnd {
    let buffer = shared.config.quic.datagram_send_buffer;
    let vitals = link.vitals(buffer, Instant::now());
    let mut address = vitals.remote;
    let mut watch = Watch::new(vitals.traffic);
    let mut acks = link.ack_feed();
    // Between two looks, while media goes out, the acknowledgements alone (with the counters
    // of the last look) refresh the estimate.
    let mut pace = RefreshPace::new(link.queued());
    let mut last_sample = vitals.sample;
    // The connection's estimate toward the client, for the worker's layer choice, from its
    // counters and each packet's acknowledgement.
    let mut estimator = QuicEstimator::new(QuicEstimatorConfig::default());
    let mut acked = Vec::new();
    estimate_from(&mut estimator, vitals.sample, acks.as_ref(), &mut acked);
    let mut reported: Option<Estimate> = None;
    let look = tokio::time::sleep(WATCH_ACTIVE);
    let feedback = tokio::time::sleep(RefreshPace::MIN);
    let drain = shared.drain.clone().cancelled_owned();
    let mut moves = shared.cluster.moves(core.room().map(|r| r.0.as_str()));
    let transport = link.transport();
    let label = TransportLabel { transport };
    let packets_in = shared.metrics.packets_in.get_or_create(&label).clone();
    let bytes_in = shared.metrics.bytes_in.get_or_create(&label).clone();
    let mut draining = false;
    // The session's media budget into its worker.
    let limits = &shared.config.limits;
    let mut budget = RateLimit::new(
        limits.media_packets_per_second,
        limits.media_burst,
        Instant::now(),
    );
    // The reads live across the loop's turns: a wake-up for one branch does not start the
    // others over.
    let reading = reader.into_next();
    let receiving = link.read_datagram();
    // The core's timer (a live session's: the next resume token).
    let timer = tokio::time::sleep_until(core_deadline(core));
    tokio::pin!(look, feedback, drain, reading, receiving, timer);

    loop {
        tokio::select! {
            (reader, incoming) = &mut reading => {
                reading.set(reader.into_next());
                if watch.wake() {
                    look.as_mut().reset(tokio::time::Instant::now() + WATCH_ACTIVE);
                }
                core.handle_message(incoming, shared.credentials(), Instant::now(), SystemTime::now());
            },
            datagram = &mut receiving => {
                receiving.set(link.read_datagram());
                match datagram {
                    Ok(bytes) => {
                        if watch.wake() {
                            look.as_mut().reset(tokio::time::Instant::now() + WATCH_ACTIVE);
                        }
                        let datagram = Received { link, participant, bytes: &bytes };
                        handle_datagram(shared, worker, &mut budget, datagram, &packets_in, &bytes_in);
                    }
                    Err(e) => return SessionEnd::Lost(e),
                }
            },
            () = &mut look => {
                let vitals = link.vitals(buffer, Instant::now());
                let displaced = link.displaced(&vitals);
                if displaced > 0 {
                    shared.metrics.count_drops(DropReason::SendBufferFull, displaced);
                }
                let moved = vitals.remote != address;
                if moved {
                    address = vitals.remote;
                    shared.metrics.migrations.inc();
                    tracing::debug!("client address changed");
                    // A new path may have a controller of its own, and then the delays of its
                    // acknowledgements count from another origin: its estimate starts afresh.
                    let feed = link.ack_feed();
                    let carried = match (&acks, &feed) {
                        (Some(old), Some(new)) => old.same(new),
                        (None, None) => true,
                        _ => false,
                    };
                    if !carried {
                        estimator = QuicEstimator::new(QuicEstimatorConfig::default());
                        acks = feed;
                    }
                }
                last_sample = vitals.sample;
                let estimate =
                    estimate_from(&mut estimator, vitals.sample, acks.as_ref(), &mut acked);
                let sent = report_estimate(estimate, &mut reported, participant, worker).await;
                let pause = watch.looked(vitals.traffic, moved || sent);
                look.as_mut().reset(tokio::time::Instant::now() + pause);
            },
            () = &mut feedback, if acks.is_some() => {
                let (refresh, pause) = pace.ticked(link.queued());
                if refresh {
                    // The counters as the last look read them; what is new is acknowledgements.
                    let mut sample = last_sample;
                    sample.at = Instant::now();
                    let estimate =
                        estimate_from(&mut estimator, sample, acks.as_ref(), &mut acked);
                    report_estimate(estimate, &mut reported, participant, worker).await;
                }
                feedback.as_mut().reset(tokio::time::Instant::now() + pause);
            },
            to = moves.next() => {
                let go_away = shared.redirect(&to, redirect_path(link), core.token());
                core.handle_moved(go_away);
            },
            () = &mut drain, if !draining => {
                draining = true;
                // A drain hands the rooms over first: a session whose room went elsewhere is
                // sent there, not just away.
                match moves.pending() {
                    Some(to) => {
                        let go_away = shared.redirect(&to, redirect_path(link), core.token());
                        core.handle_moved(go_away);
                    }
                    None => core.handle_drain(),
                }
            },
            () = &mut timer => {
                core.handle_timeout(shared.credentials(), Instant::now(), SystemTime::now());
                timer.as_mut().reset(core_deadline(core));
            },
        }
        if let Some(end) = carry_out(shared, core, participant, control, worker).await {
            return end;
        }
    }
}

/// Sends `estimate` to the worker when it is a real change from the last one sent (its state
/// changed or it moved by a tenth: steady and idle sessions cost the worker nothing). Returns
/// whether it did.
async fn report_estimate(
    estimate: Option<Estimate>,
    reported: &mut Option<Estimate>,
    participant: ParticipantId,
    worker: &WorkerHandle,
) -> bool {
    let Some(estimate) = estimate.filter(|&e| crate::worker::estimate_moved(*reported, e)) else {
        return false;
    };
    *reported = Some(estimate);
    tracing::trace!(
        available_bps = estimate.available_bps,
        state = ?estimate.state,
        "estimate"
    );
    worker
        .send(WorkerCommand::Estimate {
            participant,
            estimate,
        })
        .await;
    true
}

/// The estimate after a reading of the connection's counters and the acknowledgements its
/// feed kept since the last one (`scratch` is reused); from the counters alone when its
/// controller is not tapped.
fn estimate_from(
    estimator: &mut QuicEstimator,
    sample: QuicSample,
    feed: Option<&AckFeed>,
    scratch: &mut Vec<PacketFate>,
) -> Option<Estimate> {
    match feed {
        Some(feed) => {
            scratch.clear();
            feed.drain(scratch);
            estimator.update_with_acks(sample, scratch)
        }
        None => estimator.update(sample),
    }
}

/// When the core's timer is due, or far away when it has none.
fn core_deadline(core: &SessionCore) -> tokio::time::Instant {
    core.poll_timeout().map_or_else(
        || tokio::time::Instant::now() + Duration::from_secs(24 * 3600),
        tokio::time::Instant::from_std,
    )
}

/// How often a session looks at its connection (address, bandwidth estimate) while it carries
/// traffic: media or control messages, either way. Each look is one reading of the connection's
/// counters for its [`QuicEstimator`].
const WATCH_ACTIVE: Duration = Duration::from_millis(250);

/// The longest pause between two looks at a connection that carries nothing but keep-alives.
const WATCH_QUIET_MAX: Duration = Duration::from_secs(4);

/// When a session looks at its connection next.
///
/// QUIC gives no event for a client's new address or a new congestion window, so the session
/// polls them. A session in use is looked at every [`WATCH_ACTIVE`]: a migration is counted
/// within that, and the SFU's layer choice gets estimates that fresh. A look that finds nothing
/// changed and no traffic since the previous one doubles the pause, up to [`WATCH_QUIET_MAX`], so
/// an idle session costs a wake-up every few seconds rather than four a second; its migration is
/// still counted, within that pause. Anything the session receives itself (a control message, a
/// datagram) brings the short pause back at once, and traffic it only sends (media toward a
/// subscriber, room events) keeps it at the next look.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Watch {
    pause: Duration,
    traffic: u64,
}

impl Watch {
    fn new(traffic: u64) -> Watch {
        Watch {
            pause: WATCH_ACTIVE,
            traffic,
        }
    }

    /// After a look that saw `traffic` frames so far and found the address or the estimate
    /// `changed` (or not): the pause until the next look.
    fn looked(&mut self, traffic: u64, changed: bool) -> Duration {
        let quiet = !changed && traffic == self.traffic;
        self.traffic = traffic;
        self.pause = if quiet {
            (self.pause * 2).min(WATCH_QUIET_MAX)
        } else {
            WATCH_ACTIVE
        };
        self.pause
    }

    /// The session received something. Returns whether the next look must come sooner (the
    /// watch was pausing longer than [`WATCH_ACTIVE`]).
    fn wake(&mut self) -> bool {
        let slower = self.pause > WATCH_ACTIVE;
        self.pause = WATCH_ACTIVE;
        slower
    }
}

/// A datagram a session received.
#[derive(Clone, Copy)]
struct Received<'a> {
    link: &'a Link,
    participant: ParticipantId,
    bytes: &'a Bytes,
}

fn handle_datagram(
    shared: &Arc<SessionContext>,
    worker: &WorkerHandle,
    budget: &mut RateLimit,
    received: Received<'_>,
    packets_in: &prometheus_client::metrics::counter::Counter,
    bytes_in: &prometheus_client::metrics::counter::Counter,
) {
    let Received {
        link,
        participant,
        bytes,
    } = received;
    match datagram::parse_datagram(bytes) {
        Ok(Datagram::Media { media, rtp }) => {
            packets_in.inc();
            bytes_in.inc_by(rtp.len() as u64);
            // One reading of the clock per packet, for the budget and the worker alike.
            let now = Instant::now();
            if budget.allow(now) {
                worker.media(participant, media, rtp, now);
            } else {
                shared.metrics.count_drop(DropReason::MediaBudget);
            }
        }
        Ok(Datagram::Control(DatagramControl::Ping { seq, timestamp_us })) => {
            let mut out = Vec::with_capacity(24);
            out.extend_from_slice(link.prefix().as_slice());
            if datagram::encode_control_datagram(
                &DatagramControl::Pong { seq, timestamp_us },
                &mut out,
            )
            .is_ok()
            {
                let _ = link.send_framed(Bytes::from(out));
            }
        }
        Ok(Datagram::Control(DatagramControl::KeyframeRequest { media })) => {
            worker.try_send(WorkerCommand::KeyframeForMedia { participant, media });
        }
        Ok(Datagram::Control(_)) => {}
        // "A variant index this version does not know is dropped and counted" (section 8.5).
        Ok(Datagram::UnknownControl(_)) => shared.metrics.count_drop(DropReason::MalformedDatagram),
        // Only the server sends padding (section 8.6): counted as before the kind existed.
        Ok(Datagram::Padding { .. }) => shared.metrics.count_drop(DropReason::MalformedDatagram),
        Err(_) => shared.metrics.count_drop(DropReason::MalformedDatagram),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_connection_is_looked_at_less_and_less_often_up_to_the_maximum() {
        let mut watch = Watch::new(7);
        let pauses: Vec<_> = (0..6).map(|_| watch.looked(7, false)).collect();
        assert_eq!(
            pauses,
            [
                Duration::from_millis(500),
                Duration::from_secs(1),
                Duration::from_secs(2),
                Duration::from_secs(4),
                WATCH_QUIET_MAX,
                WATCH_QUIET_MAX,
            ]
        );
    }

    #[test]
    fn traffic_or_a_change_brings_the_short_pause_back() {
        let mut watch = Watch::new(0);
        for _ in 0..5 {
            watch.looked(0, false);
        }
        assert_eq!(watch.looked(1, false), WATCH_ACTIVE, "frames flowed");
        for _ in 0..5 {
            watch.looked(1, false);
        }
        assert_eq!(
            watch.looked(1, true),
            WATCH_ACTIVE,
            "the address or estimate moved"
        );
        assert_eq!(watch.looked(1, false), WATCH_ACTIVE * 2);
    }

    #[test]
    fn receiving_something_cuts_a_long_pause_short_once() {
        let mut watch = Watch::new(0);
        assert!(!watch.wake(), "already at the short pause");
        watch.looked(0, false);
        watch.looked(0, false);
        assert!(watch.wake(), "a long pause is cut short");
        assert!(!watch.wake(), "and only once");
        assert_eq!(watch.looked(0, false), WATCH_ACTIVE * 2);
    }

    #[test]
    fn only_membership_events_may_wait_for_company() {
        use strait_protocol::{Ack, ParticipantInfo, ParticipantLeft, RequestId};
        let joined = ControlMessage::ParticipantJoined(ParticipantInfo {
            participant: ParticipantId(2),
            identity: "bob".into(),
            name: String::new(),
        });
        let left = ControlMessage::ParticipantLeft(ParticipantLeft {
            participant: ParticipantId(2),
            reason: ErrorCode::NONE,
        });
        assert!(may_wait(&joined));
        assert!(may_wait(&left));
        let ack = ControlMessage::Ack(Ack {
            request: RequestId(1),
        });
        assert!(!may_wait(&ack));
        assert!(!may_wait(&ControlMessage::Pong(strait_protocol::Pong {
            nonce: 1
        })));
    }
}
