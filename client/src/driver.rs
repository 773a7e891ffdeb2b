//! The session's background task: reads the control stream and the datagrams, dispatches them,
//! and reconnects (with the resume token) when the connection is lost or the server goes away.
//!
//! One task per session owns the receiving side of everything; it never awaits anything but the
//! connection, its command channel and, while reconnecting, the backoff timer. What it produces
//! goes into drop-oldest queues (media, events) or completes a request's oneshot, so a slow
//! application can never stall it. Writing is the writer task's job ([`crate::shared::run_writer`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strait_protocol::datagram::{self, Datagram, DatagramControl};
use strait_protocol::limits::DEFAULT_MAX_FRAME_SIZE;
use strait_protocol::{
    ClientHello, ControlMessage, DecodeError, Decoded, ErrorCode, FrameReader, Join,
    PROTOCOL_VERSION, Pong, Publish, RequestId, RoomId, ServerHello, TrackId, encode_frame,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};

use crate::config::Trust;
use crate::error::ClientError;
use crate::shared::{HelloInfo, RequestKind, Shared, lock};
use crate::stats::bump;
use crate::transport::{Conn, Ended, Read, RecvHalf, SendHalf, Target, lost_or_closed};
use crate::types::{JoinedRoom, MediaPacket, PublishedTrack, SessionEvent, Subscription};

/// What the session handle asks of the driver.
#[derive(Debug)]
pub(crate) enum Command {
    /// Close the connection with this code and end the session.
    Close { code: ErrorCode, reason: String },
    /// Move to a new connection now, presenting the resume token (tests, network changes).
    ResumeNow,
}

/// The result of the hello exchange on a fresh connection.
#[derive(Debug)]
pub(crate) struct Handshake {
    pub(crate) send: SendHalf,
    pub(crate) recv: RecvHalf,
    pub(crate) reader: FrameReader,
    pub(crate) hello: ServerHello,
    /// Messages that arrived right behind `ServerHello` (a pipelined `Joined`, a snapshot).
    pub(crate) backlog: VecDeque<ControlMessage>,
    pub(crate) unknown: u64,
}

/// Opens the control stream, writes `ClientHello` (and `extra`, already framed, right behind it)
/// and reads until `ServerHello`.
pub(crate) async fn handshake(
    conn: &Conn,
    hello: ClientHello,
    extra: &[u8],
    max_frame_size: usize,
) -> Result<Handshake, ClientError> {
    let (mut send, mut recv) = conn.open_control().await?;
    let mut wire = Vec::with_capacity(256 + extra.len());
    encode_frame(
        &ControlMessage::ClientHello(hello),
        DEFAULT_MAX_FRAME_SIZE,
        &mut wire,
    )?;
    wire.extend_from_slice(extra);
    send.write_all(&wire)
        .await
        .map_err(|why| ClientError::Connect(format!("writing ClientHello: {why}")))?;

    let mut reader = FrameReader::new(max_frame_size);
    let mut backlog = VecDeque::new();
    let mut unknown = 0;
    let mut hello: Option<ServerHello> = None;
    let mut refused: Option<ClientError> = None;
    loop {
        let mut chunk = match recv.read().await {
            Read::Chunk(chunk) => chunk,
            Read::Finished | Read::Failed(_) => {
                return Err(refused.unwrap_or_else(|| {
                    ClientError::Connect("control stream ended before ServerHello".into())
                }));
            }
            // A server that closes the connection during the hello refuses the session.
            Read::Ended(Ended::ByServer { code, reason }) => {
                return Err(refused.unwrap_or(ClientError::Rejected { code, reason }));
            }
            Read::Ended(ended) => {
                return Err(refused.unwrap_or_else(|| lost_or_closed(ended)));
            }
        };
        loop {
            match reader.next_message(&mut chunk) {
                Ok(Some(Decoded::Message(ControlMessage::ServerHello(h)))) if hello.is_none() => {
                    hello = Some(h);
                }
                Ok(Some(Decoded::Message(ControlMessage::GoAway(g))))
                    if hello.is_none() && g.code == ErrorCode::REDIRECT =>
                {
                    // Another node serves the session; the server closes right after.
                    refused = Some(ClientError::Redirected {
                        redirect: Box::new(g),
                    });
                }
                Ok(Some(Decoded::Message(ControlMessage::Error(e))))
                    if hello.is_none() && e.request.is_none() =>
                {
                    // The server refuses the session and closes it right after (after a
                    // redirect, the `Error` only repeats it).
                    if matches!(refused, Some(ClientError::Redirected { .. })) {
                        continue;
                    }
                    refused = Some(ClientError::Rejected {
                        code: e.code,
                        reason: e.reason,
                    });
                }
                Ok(Some(Decoded::Message(m))) => backlog.push_back(m),
                Ok(Some(Decoded::UnknownKind(kind))) => {
                    debug!(kind, "skipped unknown message kind");
                    unknown += 1;
                }
                Ok(None) => break,
                Err(e) => {
                    conn.close(close_code(&e), "malformed frame");
                    return Err(ClientError::Protocol(e));
                }
            }
        }
        if let Some(refused) = refused {
            return Err(refused);
        }
        if let Some(hello) = hello {
            return Ok(Handshake {
                send,
                recv,
                reader,
                hello,
                backlog,
                unknown,
            });
        }
    }
}

/// The close code for a decode error (section 2 of the protocol).
fn close_code(e: &DecodeError) -> ErrorCode {
    match e {
        DecodeError::FrameTooLarge { .. } => ErrorCode::FRAME_TOO_LARGE,
        _ => ErrorCode::PROTOCOL_VIOLATION,
    }
}

pub(crate) fn hello_info(h: &ServerHello) -> HelloInfo {
    HelloInfo {
        participant: h.participant,
        resume_token: h.resume_token.clone(),
        limits: h.limits,
        max_datagram_size: h.max_datagram_size,
        ice_servers: h.ice_servers.clone(),
    }
}

/// What ends serving one connection.
#[derive(Debug)]
enum Next {
    /// The session is over.
    Terminal(ClientError),
    /// Move to a new connection with the resume token.
    Reconnect {
        cause: String,
        redirect: Option<Target>,
        /// The old connection still works (go-away, a requested move): keep sending media on it
        /// until the new one is up, then close it.
        keep_old: bool,
    },
}

pub(crate) struct Driver {
    pub(crate) shared: Arc<Shared>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) conn: Conn,
    pub(crate) recv: RecvHalf,
    pub(crate) reader: FrameReader,
    pub(crate) backlog: VecDeque<ControlMessage>,
    pub(crate) target: Target,
    pub(crate) writer: tokio::task::JoinHandle<()>,
    pub(crate) rng: StdRng,
    /// The last session-level `Error`, to explain the close that follows it.
    pub(crate) last_error: Option<(ErrorCode, String)>,
    /// Where a `GoAway` told us to go.
    pub(crate) redirect: Option<Target>,
    /// The room moved to another node: the next connection is a new session there, presenting
    /// this access token (the redirect's own, else the configured one), not a resume.
    pub(crate) moving: Option<String>,
}

impl Driver {
    pub(crate) fn rng(seed: Option<u64>) -> StdRng {
        match seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => {
                // No global RNG: seed from the OS through ring.
                let mut seed = [0u8; 8];
                let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed);
                StdRng::seed_from_u64(u64::from_le_bytes(seed))
            }
        }
    }

    /// Runs until the session is over.
    pub(crate) async fn run(mut self) {
        let error = loop {
            match self.serve().await {
                Next::Terminal(error) => break error,
                Next::Reconnect {
                    cause,
                    redirect,
                    keep_old,
                } => {
                    if let Err(error) = self.reconnect(cause, redirect, keep_old).await {
                        break error;
                    }
                }
            }
        };
        self.finish(error);
    }

    fn finish(&mut self, error: ClientError) {
        info!(%error, "session ended");
        let shared = &self.shared;
        shared.set_conn(None);
        // First, so that whoever wakes up below finds the reason.
        shared.terminal.send_replace(Some(error.clone()));
        {
            let mut pending = lock(&shared.pending);
            pending.closed = Some(error.clone());
            for (_, request) in pending.requests.drain() {
                let _ = request.reply.send(Err(error.clone()));
            }
        }
        lock(&shared.pings).clear();
        shared.emit(SessionEvent::Closed(error));
        shared.events.close();
        shared.media.close();
        self.writer.abort();
    }

    /// Serves the current connection until it ends or the session moves.
    async fn serve(&mut self) -> Next {
        while let Some(message) = self.backlog.pop_front() {
            if let Some(next) = self.handle_message(message) {
                return next;
            }
        }
        let mut reading = true;
        loop {
            let conn = self.conn.clone();
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Close { code, reason }) => {
                        conn.close(code, &reason);
                        return Next::Terminal(ClientError::Closed { code, reason });
                    }
                    Some(Command::ResumeNow) => {
                        return Next::Reconnect {
                            cause: "move requested".into(),
                            redirect: None,
                            keep_old: true,
                        };
                    }
                    None => {
                        conn.close(ErrorCode::NONE, "session dropped");
                        return Next::Terminal(ClientError::Closed {
                            code: ErrorCode::NONE,
                            reason: "session dropped".into(),
                        });
                    }
                },
                read = self.recv.read(), if reading => match read {
                    Read::Chunk(chunk) => {
                        if let Some(next) = self.handle_chunk(chunk) {
                            return next;
                        }
                    }
                    Read::Finished => {
                        debug!("server finished the control stream");
                        reading = false;
                    }
                    Read::Ended(ended) => return self.on_ended(ended),
                    Read::Failed(why) => {
                        conn.close(ErrorCode::PROTOCOL_VIOLATION, "control stream reset");
                        return self.on_ended(Ended::Lost(format!("control stream: {why}")));
                    }
                },
                datagram = conn.read_datagram() => match datagram {
                    Ok(datagram) => self.handle_datagram(&datagram),
                    Err(ended) => return self.on_ended(ended),
                },
                ended = conn.closed() => return self.on_ended(ended),
            }
        }
    }

    fn handle_chunk(&mut self, mut chunk: Bytes) -> Option<Next> {
        loop {
            match self.reader.next_message(&mut chunk) {
                Ok(Some(Decoded::Message(message))) => {
                    if let Some(next) = self.handle_message(message) {
                        return Some(next);
                    }
                }
                Ok(Some(Decoded::UnknownKind(kind))) => {
                    debug!(kind, "skipped unknown message kind");
                    bump(&self.shared.counters.unknown_messages);
                }
                Ok(None) => return None,
                Err(e) => return Some(self.violation(e)),
            }
        }
    }

    fn violation(&mut self, e: DecodeError) -> Next {
        warn!(error = %e, "malformed control frame from the server");
        self.conn.close(close_code(&e), "malformed frame");
        Next::Terminal(ClientError::Protocol(e))
    }

    /// Decides what a connection's end means for the session.
    fn on_ended(&mut self, ended: Ended) -> Next {
        let auto = self.shared.config.auto_resume;
        match ended {
            Ended::Local => Next::Terminal(ClientError::Closed {
                code: ErrorCode::NONE,
                reason: "closed locally".into(),
            }),
            // "the server failed; the client may retry" / "reconnect, to the redirect if any".
            Ended::ByServer { code, reason }
                if auto && (code == ErrorCode::INTERNAL || code == ErrorCode::GOING_AWAY) =>
            {
                Next::Reconnect {
                    cause: format!("closed by the server: {code}: {reason}"),
                    redirect: self.redirect.take(),
                    keep_old: false,
                }
            }
            Ended::ByServer { code, reason } => {
                let reason = match self.last_error.take() {
                    Some((c, r)) if c == code && reason.is_empty() => r,
                    _ => reason,
                };
                Next::Terminal(ClientError::Closed { code, reason })
            }
            Ended::Lost(why) if auto => Next::Reconnect {
                cause: why,
                redirect: self.redirect.take(),
                keep_old: false,
            },
            Ended::Lost(why) => Next::Terminal(ClientError::ConnectionLost(why)),
        }
    }

    /// Completes the request `id` with `answer`, updating the state first.
    fn answer(&mut self, id: RequestId, answer: ControlMessage) {
        let Some(request) = lock(&self.shared.pending).requests.remove(&id) else {
            debug!(request = id.0, "answer to a request nobody waits for");
            return;
        };
        let result = match answer {
            ControlMessage::Error(e) => Err(ClientError::Rejected {
                code: e.code,
                reason: e.reason,
            }),
            answer => {
                self.apply_answer(&request.kind, &answer);
                Ok(answer)
            }
        };
        let _ = request.reply.send(result);
    }

    fn apply_answer(&mut self, kind: &RequestKind, answer: &ControlMessage) {
        let mut state = lock(&self.shared.state);
        match (kind, answer) {
            (RequestKind::Join, ControlMessage::Joined(j)) => {
                state.room = Some(JoinedRoom {
                    room: j.room.clone(),
                    me: j.me.clone(),
                });
            }
            (RequestKind::Publish(publish), ControlMessage::Published(p)) => {
                state.published.insert(
                    p.track,
                    PublishedTrack {
                        track: p.track,
                        media: publish.layers.iter().map(|l| l.media).collect(),
                        muted: publish.muted,
                    },
                );
                state.announced.insert(p.track, (**publish).clone());
            }
            (RequestKind::Unpublish { track }, ControlMessage::Ack(_)) => {
                state.published.remove(track);
                state.announced.remove(track);
            }
            (RequestKind::Subscribe, ControlMessage::Subscribed(s)) => {
                state.subscriptions.insert(s.track, subscription(s));
            }
            (RequestKind::Unsubscribe { track }, ControlMessage::Ack(_)) => {
                state.subscriptions.remove(track);
            }
            (RequestKind::SetMute { track, muted }, ControlMessage::Ack(_)) => {
                if let Some(p) = state.published.get_mut(track) {
                    p.muted = *muted;
                }
                if let Some(p) = state.announced.get_mut(track) {
                    p.muted = *muted;
                }
            }
            _ => {}
        }
    }

    /// Applies a control message, then tells [`Session::room_changes`] watchers that the room
    /// state may have changed.
    ///
    /// [`Session::room_changes`]: crate::Session::room_changes
    fn handle_message(&mut self, message: ControlMessage) -> Option<Next> {
        let next = self.apply_message(message);
        self.shared
            .room_changes
            .send_modify(|generation| *generation += 1);
        next
    }

    fn apply_message(&mut self, message: ControlMessage) -> Option<Next> {
        let shared = self.shared.clone();
        let me = lock(&shared.hello).participant;
        match message {
            ControlMessage::Joined(j) if j.request == RequestId::UNSOLICITED => {
                let joined = JoinedRoom {
                    room: j.room,
                    me: j.me,
                };
                lock(&shared.state).room = Some(joined.clone());
                shared.emit(SessionEvent::Joined(joined));
            }
            ControlMessage::Subscribed(s) if s.request == RequestId::UNSOLICITED => {
                let sub = subscription(&s);
                lock(&shared.state).subscriptions.insert(s.track, sub);
                shared.emit(SessionEvent::Subscribed(sub));
            }
            ControlMessage::Error(e) if e.request.is_none() => {
                warn!(code = %e.code, reason = %e.reason, "session error from the server");
                self.last_error = Some((e.code, e.reason.clone()));
                shared.emit(SessionEvent::Error {
                    code: e.code,
                    reason: e.reason,
                });
            }
            m @ (ControlMessage::Joined(_)
            | ControlMessage::Published(_)
            | ControlMessage::Subscribed(_)
            | ControlMessage::Ack(_)
            | ControlMessage::Error(_)) => {
                let id = m.request().unwrap_or(RequestId::UNSOLICITED);
                self.answer(id, m);
            }
            ControlMessage::ParticipantJoined(p) => {
                // "A client SHOULD ignore a ParticipantJoined that names its own participant id."
                if p.participant != me {
                    lock(&shared.state)
                        .participants
                        .insert(p.participant, p.clone());
                    shared.emit(SessionEvent::ParticipantJoined(p));
                }
            }
            ControlMessage::ParticipantLeft(l) => {
                lock(&shared.state).participants.remove(&l.participant);
                shared.emit(SessionEvent::ParticipantLeft {
                    participant: l.participant,
                    reason: l.reason,
                });
            }
            ControlMessage::TrackPublished(t) => {
                // One's own tracks are known from `Published`; a snapshot may repeat them.
                if t.participant != me {
                    lock(&shared.state).tracks.insert(t.track, t.clone());
                    shared.emit(SessionEvent::TrackPublished(t));
                }
            }
            ControlMessage::TrackUnpublished(t) => {
                {
                    let mut state = lock(&shared.state);
                    state.tracks.remove(&t.track);
                    state.subscriptions.remove(&t.track);
                }
                shared.emit(SessionEvent::TrackUnpublished {
                    track: t.track,
                    participant: t.participant,
                });
            }
            ControlMessage::TrackMuted(m) => {
                if let Some(t) = lock(&shared.state).tracks.get_mut(&m.track) {
                    t.muted = m.muted;
                }
                shared.emit(SessionEvent::TrackMuted {
                    track: m.track,
                    muted: m.muted,
                });
            }
            ControlMessage::KeyframeRequest(k) => {
                shared.emit(SessionEvent::KeyframeRequested {
                    track: k.track,
                    layer: k.layer,
                });
            }
            ControlMessage::LayerSwitched(l) => {
                if let Some(s) = lock(&shared.state).subscriptions.get_mut(&l.track) {
                    s.layer = l.layer;
                }
                shared.emit(SessionEvent::LayerSwitched {
                    track: l.track,
                    layer: l.layer,
                });
            }
            // "It SHOULD NOT unsubscribe (the server resumes the video when it can) and answers
            // nothing" (section 6.3): the state and an event for the application, nothing sent.
            ControlMessage::TrackPaused(p) => {
                debug!(track = p.track.0, reason = %p.reason, "subscription paused");
                if let Some(s) = lock(&shared.state).subscriptions.get_mut(&p.track) {
                    s.paused = Some(p.reason);
                }
                shared.emit(SessionEvent::TrackPaused {
                    track: p.track,
                    reason: p.reason,
                });
            }
            ControlMessage::TrackResumed(r) => {
                debug!(track = r.track.0, reason = %r.reason, "subscription resumed");
                if let Some(s) = lock(&shared.state).subscriptions.get_mut(&r.track) {
                    s.paused = None;
                }
                shared.emit(SessionEvent::TrackResumed {
                    track: r.track,
                    reason: r.reason,
                });
            }
            ControlMessage::Ping(p) => {
                self.send_control(&ControlMessage::Pong(Pong { nonce: p.nonce }))
            }
            ControlMessage::Pong(_) => {}
            ControlMessage::GoAway(g) => {
                info!(code = %g.code, redirect = g.redirect.is_some(), "server going away");
                shared.emit(SessionEvent::GoAway {
                    code: g.code,
                    redirect: g.redirect.clone(),
                });
                if g.code == ErrorCode::REDIRECT {
                    // The room moved to another node: a new session there, not a resume (the
                    // participant's state stays behind). With `rejoin` the session goes there
                    // itself when it can trust the node; otherwise the application connects
                    // again with `ClientConfig::follow`.
                    self.conn.close(ErrorCode::NONE, "redirected");
                    let target = g.redirect.as_deref().and_then(|r| self.parse_redirect(r));
                    if shared.config.rejoin
                        && target.is_some()
                        && trusts(&shared.config.trust, &g.cert_hashes)
                    {
                        self.moving = Some(
                            g.token
                                .clone()
                                .unwrap_or_else(|| shared.config.token.clone()),
                        );
                        return Some(Next::Reconnect {
                            cause: "the room moved to another node".into(),
                            redirect: target,
                            keep_old: false,
                        });
                    }
                    return Some(Next::Terminal(ClientError::Redirected {
                        redirect: Box::new(g.clone()),
                    }));
                }
                let redirect = g.redirect.as_deref().and_then(|r| self.parse_redirect(r));
                if shared.config.auto_resume {
                    return Some(Next::Reconnect {
                        cause: "server going away".into(),
                        redirect,
                        keep_old: true,
                    });
                }
                self.redirect = redirect;
            }
            ControlMessage::NewResumeToken(t) => {
                // Only the latest token is worth keeping (section 7.8).
                lock(&shared.hello).resume_token = t.resume_token.clone();
                shared.emit(SessionEvent::ResumeTokenRenewed);
            }
            // Legacy WebRTC signaling has no meaning on this transport.
            ControlMessage::Sdp(_) | ControlMessage::IceCandidate(_) => {}
            // Known kinds only a client sends: the server broke the protocol (section 6.2).
            other @ (ControlMessage::ClientHello(_)
            | ControlMessage::ServerHello(_)
            | ControlMessage::Join(_)
            | ControlMessage::Leave(_)
            | ControlMessage::Publish(_)
            | ControlMessage::Unpublish(_)
            | ControlMessage::Subscribe(_)
            | ControlMessage::Unsubscribe(_)
            | ControlMessage::SetLayerPreference(_)
            | ControlMessage::SetMute(_)) => {
                let kind = other.kind();
                debug!(kind, "server sent a client-only message");
                return Some(self.violation(DecodeError::InvalidField {
                    field: "kind",
                    reason: "a message only a client may send",
                }));
            }
            // A kind a newer protocol crate knows and this client does not handle yet.
            other => {
                debug!(kind = other.kind(), "ignored message");
                bump(&shared.counters.unknown_messages);
            }
        }
        None
    }

    /// Queues a control frame the driver itself answers with (never waits: dropped and counted
    /// when the control queue is full).
    fn send_control(&self, message: &ControlMessage) {
        let mut wire = Vec::with_capacity(16);
        if encode_frame(message, DEFAULT_MAX_FRAME_SIZE, &mut wire).is_err() {
            return;
        }
        let epoch = lock(&self.shared.pending).epoch;
        let frame = crate::shared::OutFrame {
            epoch,
            bytes: Bytes::from(wire),
        };
        if self.shared.frames.try_send(frame).is_err() {
            bump(&self.shared.counters.control_dropped);
        }
    }

    fn handle_datagram(&mut self, bytes: &Bytes) {
        let shared = &self.shared;
        match datagram::parse_datagram(bytes) {
            Ok(Datagram::Media { media, rtp }) => {
                bump(&shared.counters.media_received);
                shared.media.push(MediaPacket {
                    media,
                    rtp,
                    received_at: Instant::now(),
                });
            }
            Ok(Datagram::Control(DatagramControl::Ping { seq, timestamp_us })) => {
                let mut out = Vec::with_capacity(16);
                let pong = DatagramControl::Pong { seq, timestamp_us };
                if datagram::encode_control_datagram(&pong, &mut out).is_ok() {
                    let _ = self.conn.send_datagram(Bytes::from(out));
                }
            }
            Ok(Datagram::Control(DatagramControl::Pong { seq, .. })) => {
                if let Some(waiter) = lock(&shared.pings).remove(&seq) {
                    let _ = waiter.send(Instant::now());
                }
            }
            Ok(Datagram::Control(DatagramControl::KeyframeRequest { media })) => {
                let target = lock(&shared.state).published_media(media);
                match target {
                    Some((track, layer)) => shared.emit(SessionEvent::KeyframeRequested {
                        track,
                        layer: Some(layer),
                    }),
                    None => bump(&shared.counters.datagrams_invalid),
                }
            }
            Ok(Datagram::Control(DatagramControl::ReceiverReport { .. })) => {
                bump(&shared.counters.receiver_reports);
            }
            // "A client drops a padding datagram silently: it is not an unknown kind and not
            // unusable, so it is not counted with those" (section 8.6).
            Ok(Datagram::Padding { .. }) => bump(&shared.counters.padding_received),
            Ok(_) | Err(_) => bump(&shared.counters.datagrams_invalid),
        }
    }

    /// `https://host:port/path` or `host:port`, with a literal IP address for now (a name would
    /// need a resolver here; the gateway redirects to addresses).
    fn parse_redirect(&self, redirect: &str) -> Option<Target> {
        let rest = redirect.strip_prefix("https://").unwrap_or(redirect);
        let authority = rest.split('/').next()?;
        let addr: std::net::SocketAddr = authority.parse().ok()?;
        Some(Target {
            addr,
            name: self
                .shared
                .config
                .server_name
                .clone()
                .unwrap_or_else(|| addr.ip().to_string()),
        })
    }

    /// Moves the session to a new connection, presenting the resume token, with backoff.
    async fn reconnect(
        &mut self,
        cause: String,
        redirect: Option<Target>,
        keep_old: bool,
    ) -> Result<(), ClientError> {
        let shared = self.shared.clone();
        let started = Instant::now();
        info!(%cause, keep_old, "reconnecting");
        if !keep_old {
            shared.set_conn(None);
            shared.emit(SessionEvent::ConnectionLost {
                reason: cause.clone(),
            });
        }
        // Requests in flight on the old control stream can no longer be answered.
        let epoch = shared.next_epoch(&ClientError::ConnectionLost(cause.clone()));
        if let Some(target) = redirect {
            self.target = target;
        }
        let backoff = shared.config.backoff;
        let mut last_error = ClientError::ConnectionLost(cause);
        // The session's node first, then the cluster's other nodes in turn; a redirect goes
        // first of all.
        let mut targets = vec![self.target.clone()];
        for &addr in &shared.config.fallback_servers {
            if addr != self.target.addr {
                targets.push(Target {
                    addr,
                    name: shared
                        .config
                        .server_name
                        .clone()
                        .unwrap_or_else(|| addr.ip().to_string()),
                });
            }
        }
        let mut redirected: Option<Target> = None;
        for attempt in 0..backoff.attempts {
            let target = redirected
                .take()
                .unwrap_or_else(|| targets[attempt as usize % targets.len()].clone());
            let nominal = backoff.delay(attempt);
            // Full jitter on the upper half: between nominal/2 and nominal.
            let delay = if nominal.is_zero() {
                nominal
            } else {
                let half = nominal / 2;
                half + Duration::from_nanos(
                    self.rng
                        .random_range(0..=u64::try_from(half.as_nanos()).unwrap_or(u64::MAX)),
                )
            };
            let attempt_result = tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::ResumeNow) => continue,
                    Some(Command::Close { code, reason }) => {
                        self.conn.close(code, &reason);
                        return Err(ClientError::Closed { code, reason });
                    }
                    None => {
                        self.conn.close(ErrorCode::NONE, "session dropped");
                        return Err(ClientError::Closed {
                            code: ErrorCode::NONE,
                            reason: "session dropped".into(),
                        });
                    }
                },
                result = try_connect(&self.shared, &target, delay, self.moving.as_deref()) => result,
            };
            bump(&shared.counters.reconnect_attempts);
            match attempt_result {
                Ok((conn, handshake)) => {
                    self.target = target;
                    self.switch_over(conn, handshake, epoch, started, attempt + 1, keep_old);
                    return Ok(());
                }
                // Another node of the cluster serves the session (or its room, once the resume
                // failed there): the next attempt goes where it says.
                Err(ClientError::Redirected { redirect }) => {
                    debug!(attempt, to = ?redirect.redirect, "redirected while reconnecting");
                    redirected = redirect
                        .redirect
                        .as_deref()
                        .and_then(|r| self.parse_redirect(r));
                    last_error = ClientError::Redirected { redirect };
                }
                Err(error) if !retryable(&error) => {
                    // The server or its certificate refuses us: retrying will not help.
                    if keep_old {
                        self.conn.close(ErrorCode::NONE, "leaving");
                    }
                    return Err(error);
                }
                Err(error) => {
                    debug!(attempt, %error, "reconnect attempt failed");
                    last_error = error;
                }
            }
        }
        if keep_old {
            self.conn.close(ErrorCode::NONE, "leaving");
        }
        Err(match last_error {
            e @ ClientError::ConnectionLost(_) => e,
            other => ClientError::ConnectionLost(format!("reconnecting failed: {other}")),
        })
    }

    fn switch_over(
        &mut self,
        conn: Conn,
        handshake: Handshake,
        epoch: u64,
        started: Instant,
        attempts: u32,
        keep_old: bool,
    ) {
        let shared = self.shared.clone();
        if keep_old {
            // The server has moved the session to the new connection; the old one is done.
            self.conn
                .close(ErrorCode::NONE, "moved to a new connection");
        }
        let resumed = handshake.hello.resumed;
        let participant = handshake.hello.participant;
        let moved = self.moving.take().is_some();
        *lock(&shared.hello) = hello_info(&handshake.hello);
        let rejoin = {
            let mut state = lock(&shared.state);
            // The snapshot that follows re-announces the room; what it omits is gone.
            state.participants.clear();
            state.tracks.clear();
            state.subscriptions.clear();
            if resumed {
                None
            } else {
                state.published.clear();
                let announced: Vec<(TrackId, Publish)> = state.announced.drain().collect();
                state
                    .room
                    .take()
                    .filter(|_| shared.config.rejoin)
                    .map(|room| (room.room, announced))
            }
        };
        for _ in 0..handshake.unknown {
            bump(&shared.counters.unknown_messages);
        }
        self.conn = conn.clone();
        self.recv = handshake.recv;
        self.reader = handshake.reader;
        self.backlog = handshake.backlog;
        shared.hand_over(epoch, handshake.send);
        shared.set_conn(Some(conn));
        if resumed {
            bump(&shared.counters.resumes);
            let outage = started.elapsed();
            info!(
                participant = participant.0,
                ?outage,
                attempts,
                "session resumed"
            );
            shared.emit(SessionEvent::Resumed {
                participant,
                outage,
                attempts,
            });
        } else if moved {
            info!(
                participant = participant.0,
                "new session where the room moved"
            );
        } else {
            bump(&shared.counters.resume_failures);
            info!(participant = participant.0, "resume refused; fresh session");
            shared.emit(SessionEvent::ResumeFailed { participant });
        }
        if let Some((room, announced)) = rejoin {
            tokio::spawn(rejoin_room(shared, room, announced).in_current_span());
        }
    }
}

/// Joins `room` again and announces the tracks of `announced` again (with their media ids),
/// after a refused resume or a move: the session's own requests, as the application would send
/// them; the publishes go out together once the join is answered.
async fn rejoin_room(shared: Arc<Shared>, room: RoomId, mut announced: Vec<(TrackId, Publish)>) {
    let name = shared.config.name.clone();
    let joined = shared
        .request(RequestKind::Join, |request| {
            ControlMessage::Join(Join {
                request,
                room: room.clone(),
                name,
            })
        })
        .await;
    let joined = match joined {
        Ok(ControlMessage::Joined(j)) => JoinedRoom {
            room: j.room,
            me: j.me,
        },
        Ok(other) => return rejoin_failed(&shared, unexpected_answer("Join", &other)),
        Err(error) => return rejoin_failed(&shared, error),
    };
    announced.sort_by_key(|(track, _)| track.0);
    let mut publishes = tokio::task::JoinSet::new();
    for (index, (_, publish)) in announced.iter().enumerate() {
        let shared = shared.clone();
        let publish = publish.clone();
        publishes.spawn(async move {
            let kind = RequestKind::Publish(Box::new(publish.clone()));
            let answer = shared
                .request(kind, |request| {
                    ControlMessage::Publish(Publish { request, ..publish })
                })
                .await;
            (index, answer)
        });
    }
    let mut tracks = vec![None; announced.len()];
    while let Some(done) = publishes.join_next().await {
        match done {
            Ok((index, Ok(ControlMessage::Published(p)))) => tracks[index] = Some(p.track),
            Ok((_, Ok(other))) => {
                return rejoin_failed(&shared, unexpected_answer("Publish", &other));
            }
            Ok((_, Err(error))) => return rejoin_failed(&shared, error),
            Err(join) => {
                return rejoin_failed(&shared, ClientError::ConnectionLost(join.to_string()));
            }
        }
    }
    let tracks: Vec<(TrackId, TrackId)> = announced
        .iter()
        .zip(tracks)
        .filter_map(|((old, _), new)| Some((*old, new?)))
        .collect();
    bump(&shared.counters.rejoins);
    info!(room = %joined.room.0, tracks = tracks.len(), "rejoined the room");
    shared.emit(SessionEvent::Rejoined {
        room: joined,
        tracks,
    });
}

fn rejoin_failed(shared: &Shared, error: ClientError) {
    info!(%error, "rejoining the room failed");
    shared.emit(SessionEvent::RejoinFailed { error });
}

fn unexpected_answer(expected: &'static str, got: &ControlMessage) -> ClientError {
    ClientError::UnexpectedAnswer {
        expected,
        kind: got.kind(),
    }
}

/// Whether `trust` accepts a node whose certificates have these hashes (hex): with pinned
/// hashes, every one the redirect names must be pinned; with roots, the name check decides.
fn trusts(trust: &Trust, hashes: &[String]) -> bool {
    match trust {
        Trust::Roots(_) => true,
        Trust::Hashes(pinned) => {
            !hashes.is_empty()
                && hashes
                    .iter()
                    .all(|h| crate::config::decode_hex_32(h).is_some_and(|h| pinned.contains(&h)))
        }
    }
}

/// One connection attempt: a resume with the session's token, or with `moving` a new session
/// under that access token.
async fn try_connect(
    shared: &Shared,
    target: &Target,
    delay: Duration,
    moving: Option<&str>,
) -> Result<(Conn, Handshake), ClientError> {
    tokio::time::sleep(delay).await;
    let hello = match moving {
        Some(token) => ClientHello {
            version: PROTOCOL_VERSION,
            token: token.to_owned(),
            resume: None,
            agent: shared.config.agent.clone(),
        },
        None => {
            let resume = lock(&shared.hello).resume_token.clone();
            ClientHello {
                version: PROTOCOL_VERSION,
                token: shared.config.token.clone(),
                resume: (!resume.0.is_empty()).then_some(resume),
                agent: shared.config.agent.clone(),
            }
        }
    };
    let max_frame = shared.config.max_frame_size;
    let work = async {
        let conn = shared.connector.connect(target).await?;
        let handshake = handshake(&conn, hello, &[], max_frame).await?;
        Ok::<_, ClientError>((conn, handshake))
    };
    tokio::time::timeout(shared.config.hello_timeout, work)
        .await
        .map_err(|_| ClientError::Timeout("ServerHello"))?
}

/// Whether a failed reconnection attempt is worth another one.
fn retryable(error: &ClientError) -> bool {
    match error {
        ClientError::Rejected { code, .. } => [
            ErrorCode::INTERNAL,
            ErrorCode::GOING_AWAY,
            ErrorCode::RATE_LIMITED,
            ErrorCode::TIMEOUT,
        ]
        .contains(code),
        ClientError::Tls(_) | ClientError::Protocol(_) | ClientError::Config(_) => false,
        _ => true,
    }
}

/// A subscription as `Subscribed` announces it: forwarded, until a `TrackPaused` says otherwise
/// (the server sends one right after a `Subscribed` whose video is paused).
pub(crate) fn subscription(s: &strait_protocol::Subscribed) -> Subscription {
    Subscription {
        track: s.track,
        media: s.media,
        ssrc: s.ssrc,
        layer: s.layer,
        paused: None,
    }
}

/// A waiter for a request's answer, removed from the pending map when dropped (cancelled or
/// timed out) so that a late answer is ignored.
pub(crate) struct PendingGuard<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) id: RequestId,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(&self.shared.pending).requests.remove(&self.id);
    }
}

/// A waiter for a datagram pong, removed when dropped.
pub(crate) struct PingGuard<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) seq: u32,
}

impl Drop for PingGuard<'_> {
    fn drop(&mut self) {
        lock(&self.shared.pings).remove(&self.seq);
    }
}

/// Where a request's answer (or its failure) arrives.
pub(crate) type Reply = oneshot::Receiver<crate::shared::Answer>;
