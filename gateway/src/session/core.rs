//! The session core: one sans-IO state machine for every session, whichever transport carries
//! it — a raw QUIC connection, a WebTransport session, or a WebSocket on `/ws/rtc`.
//!
//! It owns the rules of a session: the hello (a `ClientHello` within the hello timeout, its
//! version, the resume token, the access token), the attach to the media hub and the
//! `ServerHello`, the rate limit on control messages, what each message kind means, violations
//! and their codes, timeouts, and the go-away of a drain. It owns no stream, socket or timer:
//! the drivers (`session::quic` for QUIC and WebTransport, `http::ws` for WebSockets) read
//! frames, carry out what it asks, and tell it the time.
//!
//! ## Drive contract
//!
//! - **handlers**: [`handle_message`](SessionCore::handle_message) (what the control stream
//!   gave: a message, an unknown kind, its end, a malformed frame),
//!   [`handle_attached`](SessionCore::handle_attached) (the hub's answer to an
//!   [`SessionOutput::Attach`]), [`handle_outgoing`](SessionCore::handle_outgoing) (a message
//!   of the hub on its way to the client), [`handle_heard`](SessionCore::handle_heard) (the
//!   client sent anything at all), [`handle_drain`](SessionCore::handle_drain),
//!   [`handle_timeout`](SessionCore::handle_timeout);
//! - **pollers**: [`poll_output`](SessionCore::poll_output) and
//!   [`poll_timeout`](SessionCore::poll_timeout).
//!
//! After each handler, drain `poll_output` until it returns `None`: the outputs come in the order
//! they must be carried out (a `Send` of an `Error` comes before the `End` it explains). Once an
//! [`SessionOutput::End`] has come out the session is over and further input is ignored.
//!
//! ## The two paths
//!
//! A QUIC or WebTransport session starts with the client's `ClientHello` (the access token, or a
//! resume token). A WebSocket session has its token in the URL, verified before the upgrade: the
//! core starts attached-to-be, the server speaks first, and a `ClientHello` is a violation. On
//! the WebSocket path `Publish` and `Subscribe` are refused (what a peer sends and receives is
//! what its SDP offer says), an `Sdp` offer goes to the hub's bridge, `IceCandidate` is ignored
//! (the bridge is ICE-lite), a `Join` for a room the token does not grant is a violation, the
//! session must join within the hello timeout and is closed when it says nothing for the idle
//! timeout; it cannot resume.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use strait_protocol::{
    Ack, ClientHello, ControlMessage, DecodeError, ErrorCode, ErrorMessage, GoAway, IceServer,
    NewResumeToken, PROTOCOL_VERSION, ParticipantId, Pong, RequestId, ResumeToken, RoomId, SdpType,
    ServerHello, SessionLimits,
};

use crate::auth::{AuthError, KeyRing, ResumeSigner, RoomGrant, VerifiedToken};
use crate::metrics::{Metrics, RefusalReason, ResumeLabel, ResumeResult};
use crate::worker::hub::{AttachError, Attached};
use crate::worker::translate;

/// Which transport carries the session (see the module docs for what differs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Path {
    /// A raw QUIC connection or a WebTransport session.
    Quic,
    /// A WebSocket on `/ws/rtc`.
    WebSocket,
}

/// The settings of a session, from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct SessionSettings {
    /// How long a QUIC session may take to send its `ClientHello`, and a WebSocket session to
    /// join a room.
    pub(crate) hello_timeout: Duration,
    /// How long a WebSocket session may say nothing; with the grace period, how long a resume
    /// token is needed after its session was last heard (see [`resume_renewal`]).
    ///
    /// [`resume_renewal`]: SessionSettings::resume_renewal
    pub(crate) idle_timeout: Duration,
    /// How long a lost participant waits for a resume.
    pub(crate) grace_period: Duration,
    /// Control messages per second, sustained.
    pub(crate) max_messages_per_second: u32,
    /// Control messages in a burst.
    pub(crate) message_burst: u32,
    /// The limits a `ServerHello` announces.
    pub(crate) limits: SessionLimits,
    /// This node's incarnation in its cluster, written into the resume tokens it issues (0
    /// outside a cluster).
    pub(crate) node: u64,
}

impl SessionSettings {
    /// How often a live QUIC session gets a new resume token: every grace period plus idle
    /// timeout. A token is valid for twice that, so the one a client holds when its path dies
    /// (at most one renewal old) outlasts the idle timeout that notices the loss and the grace
    /// period that waits for the resume.
    pub(crate) fn resume_renewal(&self) -> Duration {
        self.grace_period + self.idle_timeout
    }

    /// The settings of the configuration.
    pub(crate) fn new(config: &crate::config::Config) -> SessionSettings {
        let l = &config.limits;
        SessionSettings {
            hello_timeout: config.session.hello_timeout,
            idle_timeout: config.quic.idle_timeout,
            grace_period: config.session.grace_period,
            max_messages_per_second: l.max_messages_per_second,
            message_burst: l.message_burst,
            limits: SessionLimits {
                max_frame_size: u32::try_from(l.max_frame_size).unwrap_or(u32::MAX),
                max_tracks: u32::try_from(l.max_tracks_per_participant).unwrap_or(u32::MAX),
                max_subscriptions: u32::try_from(l.max_subscriptions_per_participant)
                    .unwrap_or(u32::MAX),
                max_messages_per_second: l.max_messages_per_second,
            },
            node: 0,
        }
    }
}

/// What verifies access tokens and signs resume tokens.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Credentials<'a> {
    /// Access tokens.
    pub(crate) keys: &'a KeyRing,
    /// Resume tokens.
    pub(crate) resume: &'a ResumeSigner,
}

/// What the control stream gave, whatever the transport.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A message.
    Message(ControlMessage),
    /// A message of a kind this version does not know (skipped).
    Unknown(u32),
    /// The client finished its control stream (or closed the WebSocket).
    Finished,
    /// A frame that does not decode.
    Malformed(DecodeError),
    /// A frame that breaks a rule of the transport's framing (WebSocket), with its code.
    Refused(ErrorCode, String),
    /// The transport failed.
    Failed(String),
}

/// How a session ended, from the gateway's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SessionEnd {
    /// The client left (`Leave`) or closed cleanly: the participant leaves its room now.
    Left,
    /// The connection was lost: the participant waits for a resume during the grace period.
    Lost(String),
    /// The session broke the protocol; it is closed with this code and reason.
    Violation(ErrorCode, String),
    /// The gateway closed it (timeout, refused hello, failed authentication, refused attach).
    Closed(ErrorCode, String),
}

/// What the core asks its driver to do, in order.
#[derive(Debug, PartialEq)]
pub(crate) enum SessionOutput {
    /// Send this message to the client.
    Send(ControlMessage),
    /// Attach to the hub: take back `resume`, or a new participant (the driver draws its id)
    /// with `token`. Answer with [`SessionCore::handle_attached`].
    Attach {
        /// The participant to take back, from a verified resume token.
        resume: Option<ParticipantId>,
        /// The verified access token (required for a new participant).
        token: Option<VerifiedToken>,
    },
    /// The resume token was issued by another node of the cluster (its incarnation): if that
    /// node lives, answer with [`SessionCore::handle_redirect`]; otherwise go on with the
    /// `Attach` that follows (the resume fails here and the session starts afresh).
    Locate {
        /// The issuing node's incarnation.
        node: u64,
    },
    /// Hand a request to the hub.
    Hub(HubRequest),
    /// The session is over.
    End(SessionEnd),
}

/// A request for the hub.
#[derive(Debug, PartialEq)]
pub(crate) enum HubRequest {
    /// A room or track request; `join_started` is when the session began, for the first
    /// `Join`'s latency.
    Request {
        /// The request.
        message: ControlMessage,
        /// When the session began, for a first `Join`.
        join_started: Option<Instant>,
    },
    /// A WebSocket participant's SDP offer.
    Offer {
        /// The offer.
        sdp: String,
    },
}

/// What the driver knows for the `ServerHello` of an attached participant.
#[derive(Debug, Clone, Default)]
pub(crate) struct HelloFacts {
    /// TURN servers with credentials for the participant.
    pub(crate) ice_servers: Vec<IceServer>,
    /// The connection's largest datagram now (0 on the WebSocket path).
    pub(crate) max_datagram_size: u32,
}

#[derive(Debug)]
enum State {
    /// Waiting for the `ClientHello` (QUIC) until the deadline.
    Hello { deadline: Instant },
    /// Waiting for the hub's answer to an attach.
    Attaching {
        /// The resume being tried (else a new participant).
        resume: Option<ParticipantId>,
        /// The access token, if it verified.
        token: Option<VerifiedToken>,
        /// Why a resume failed, told to the client after its `ServerHello`.
        resume_failed: Option<String>,
        /// Whether the client asked for a resume.
        asked_resume: bool,
    },
    /// Attached: requests flow.
    Live,
    /// Over.
    Ended,
}

/// The session core (see the module docs).
#[derive(Debug)]
pub(crate) struct SessionCore {
    path: Path,
    settings: SessionSettings,
    metrics: Arc<Metrics>,
    state: State,
    participant: Option<ParticipantId>,
    /// The session's access token (the WebSocket path checks its rooms on `Join`; a cluster
    /// moves the sessions of a room by it).
    token: Option<VerifiedToken>,
    rate: RateLimit,
    started: Instant,
    join_timed: bool,
    joined: bool,
    draining: bool,
    last_heard: Instant,
    /// When the live QUIC session gets a new resume token.
    renew_at: Option<Instant>,
    outputs: VecDeque<SessionOutput>,
}

impl SessionCore {
    /// A QUIC or WebTransport session whose connection was accepted at `started`: it waits for
    /// the `ClientHello` until `started` + the hello timeout.
    pub(crate) fn quic(settings: SessionSettings, metrics: Arc<Metrics>, started: Instant) -> Self {
        let deadline = started + settings.hello_timeout;
        Self::new(
            Path::Quic,
            settings,
            metrics,
            State::Hello { deadline },
            started,
        )
    }

    /// A WebSocket session whose token (from the URL) was verified, or refused with a code and
    /// a reason, at `now`.
    pub(crate) fn websocket(
        settings: SessionSettings,
        metrics: Arc<Metrics>,
        verified: Result<VerifiedToken, (ErrorCode, String)>,
        now: Instant,
    ) -> Self {
        let mut core = Self::new(Path::WebSocket, settings, metrics, State::Ended, now);
        match verified {
            Ok(token) => {
                core.token = Some(token.clone());
                core.state = State::Attaching {
                    resume: None,
                    token: Some(token.clone()),
                    resume_failed: None,
                    asked_resume: false,
                };
                core.outputs.push_back(SessionOutput::Attach {
                    resume: None,
                    token: Some(token),
                });
            }
            Err((code, reason)) => {
                core.metrics.refuse(RefusalReason::Auth);
                core.close(code, reason);
            }
        }
        core
    }

    fn new(
        path: Path,
        settings: SessionSettings,
        metrics: Arc<Metrics>,
        state: State,
        now: Instant,
    ) -> Self {
        let rate = RateLimit::new(
            settings.max_messages_per_second,
            settings.message_burst,
            now,
        );
        SessionCore {
            path,
            settings,
            metrics,
            state,
            participant: None,
            token: None,
            rate,
            started: now,
            join_timed: false,
            joined: false,
            draining: false,
            last_heard: now,
            renew_at: None,
            outputs: VecDeque::new(),
        }
    }

    // ---- getters ----

    /// The participant, once attached.
    pub(crate) fn participant(&self) -> Option<ParticipantId> {
        self.participant
    }

    /// Whether the session is attached and its requests flow.
    pub(crate) fn is_live(&self) -> bool {
        matches!(self.state, State::Live)
    }

    /// Whether the session is over.
    pub(crate) fn is_ended(&self) -> bool {
        matches!(self.state, State::Ended)
    }

    // ---- pollers ----

    /// The next thing to do.
    pub(crate) fn poll_output(&mut self) -> Option<SessionOutput> {
        self.outputs.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        match (&self.state, self.path) {
            (State::Hello { deadline }, _) => Some(*deadline),
            (State::Live, Path::Quic) => self.renew_at,
            (State::Live, Path::WebSocket) => {
                let idle = self.last_heard + self.settings.idle_timeout;
                if self.joined {
                    Some(idle)
                } else {
                    Some(idle.min(self.started + self.settings.hello_timeout))
                }
            }
            _ => None,
        }
    }

    // ---- handlers ----

    /// Time passed: the hello (QUIC) or the join (WebSocket) may be late, the WebSocket client
    /// silent for too long, or a live QUIC session due for a new resume token (`wall` signs it).
    pub(crate) fn handle_timeout(
        &mut self,
        credentials: Credentials<'_>,
        now: Instant,
        wall: SystemTime,
    ) {
        match (&self.state, self.path) {
            (State::Hello { deadline }, _) if now >= *deadline => {
                self.metrics.refuse(RefusalReason::Hello);
                self.close(ErrorCode::TIMEOUT, "no ClientHello in time".into());
            }
            (State::Live, Path::Quic) => {
                if let (Some(at), Some(participant)) = (self.renew_at, self.participant)
                    && now >= at
                {
                    let resume_token = self.resume_token(credentials, participant, now, wall);
                    self.send(ControlMessage::NewResumeToken(NewResumeToken {
                        resume_token,
                    }));
                }
            }
            (State::Live, Path::WebSocket) => {
                if now >= self.last_heard + self.settings.idle_timeout {
                    let idle = self.settings.idle_timeout;
                    self.close(
                        ErrorCode::TIMEOUT,
                        format!("nothing heard from the client for {idle:?}"),
                    );
                } else if !self.joined && now >= self.started + self.settings.hello_timeout {
                    self.close(ErrorCode::TIMEOUT, "no Join in time".into());
                }
            }
            _ => {}
        }
    }

    /// The client sent something (a message, or on a WebSocket a ping or pong frame): the
    /// WebSocket path's idle timeout starts again. The driver calls it for every frame it
    /// reads, before [`handle_message`](Self::handle_message).
    pub(crate) fn handle_heard(&mut self, now: Instant) {
        self.last_heard = now;
    }

    /// The gateway drains: the client is told to go away, once.
    pub(crate) fn handle_drain(&mut self) {
        if self.draining || self.is_ended() {
            return;
        }
        self.draining = true;
        if self.is_live() {
            self.send(ControlMessage::GoAway(GoAway {
                code: ErrorCode::GOING_AWAY,
                redirect: None,
                cert_hashes: Vec::new(),
                token: None,
            }));
        }
    }

    /// The hub let go of the participant (its control queue closed): the gateway is stopping
    /// (`draining`), or the session did not read its messages fast enough.
    pub(crate) fn handle_hub_gone(&mut self, draining: bool) {
        if self.is_ended() {
            return;
        }
        if draining {
            self.close(ErrorCode::GOING_AWAY, "the gateway is shutting down".into());
        } else {
            self.close(
                ErrorCode::LIMIT_EXCEEDED,
                "control queue overflow: the client does not read".into(),
            );
        }
    }

    /// A message of the hub on its way to the client: a `Joined` ends the WebSocket path's join
    /// deadline; an `Error` without a request id (a refused offer, a lost WebRTC connection)
    /// ends the session once it is sent.
    pub(crate) fn handle_outgoing(&mut self, message: &ControlMessage) {
        if self.is_ended() {
            return;
        }
        match message {
            ControlMessage::Joined(_) => self.joined = true,
            ControlMessage::Error(ErrorMessage {
                request: None,
                code,
                reason,
            }) => {
                self.state = State::Ended;
                self.outputs
                    .push_back(SessionOutput::End(SessionEnd::Closed(
                        *code,
                        reason.clone(),
                    )));
            }
            _ => {}
        }
    }

    /// What the control stream gave, at `now` (`wall` for token checks).
    pub(crate) fn handle_message(
        &mut self,
        incoming: Incoming,
        credentials: Credentials<'_>,
        now: Instant,
        wall: SystemTime,
    ) {
        if self.is_ended() {
            return;
        }
        match incoming {
            Incoming::Message(message) => match self.state {
                State::Hello { .. } => self.hello(message, credentials, wall),
                State::Live => self.request(message, now),
                // A client that speaks before its ServerHello: only the WebSocket path's server
                // speaks first, and the attach is a moment; treat it as a request.
                State::Attaching { .. } => self.request(message, now),
                State::Ended => {}
            },
            Incoming::Unknown(kind) => tracing::debug!(kind, "skipped an unknown message kind"),
            Incoming::Finished => {
                if matches!(self.state, State::Hello { .. }) {
                    self.metrics.refuse(RefusalReason::Hello);
                    self.violation(
                        ErrorCode::PROTOCOL_VIOLATION,
                        "control stream finished before ClientHello".into(),
                    );
                } else {
                    self.end(SessionEnd::Left);
                }
            }
            Incoming::Malformed(e) => {
                if matches!(self.state, State::Hello { .. }) {
                    self.metrics.refuse(RefusalReason::Hello);
                }
                // A frame over the limit is FRAME_TOO_LARGE before the hello too (section 2).
                let code = match e {
                    DecodeError::FrameTooLarge { .. } => ErrorCode::FRAME_TOO_LARGE,
                    _ => ErrorCode::PROTOCOL_VIOLATION,
                };
                self.violation(code, format!("malformed control frame: {e}"));
            }
            Incoming::Refused(code, reason) => self.violation(code, reason),
            Incoming::Failed(e) => {
                if matches!(self.state, State::Hello { .. }) {
                    self.metrics.refuse(RefusalReason::Hello);
                    self.violation(ErrorCode::PROTOCOL_VIOLATION, e);
                } else {
                    self.end(SessionEnd::Lost(e));
                }
            }
        }
    }

    /// The hub's answer to the last [`SessionOutput::Attach`]: `participant` is the one asked
    /// for (a resume) or the id the driver drew; `facts` fill the `ServerHello`.
    pub(crate) fn handle_attached(
        &mut self,
        participant: ParticipantId,
        result: Result<Attached, AttachError>,
        facts: HelloFacts,
        credentials: Credentials<'_>,
        now: Instant,
        wall: SystemTime,
    ) {
        let State::Attaching {
            resume,
            token,
            resume_failed,
            asked_resume,
        } = std::mem::replace(&mut self.state, State::Ended)
        else {
            return;
        };
        let resumed = match (result, resume) {
            (Ok(Attached::Resumed { .. }), Some(_)) => true,
            (Ok(_), _) => false,
            (Err(e), Some(_)) => {
                // The participant is gone: a new one, if the access token allows.
                let why = e.to_string();
                match token {
                    Some(token) => {
                        self.state = State::Attaching {
                            resume: None,
                            token: Some(token.clone()),
                            resume_failed: Some(why),
                            asked_resume,
                        };
                        self.outputs.push_back(SessionOutput::Attach {
                            resume: None,
                            token: Some(token),
                        });
                    }
                    None => {
                        self.count_resume(false);
                        self.metrics.refuse(RefusalReason::Auth);
                        self.close(
                            ErrorCode::UNAUTHORIZED,
                            "resume failed and no valid access token".into(),
                        );
                    }
                }
                return;
            }
            (Err(e), None) => {
                self.close(e.code(), e.to_string());
                return;
            }
        };
        if asked_resume {
            self.count_resume(resumed);
        }
        self.participant = Some(participant);
        self.state = State::Live;
        let resume_token = match self.path {
            Path::Quic => self.resume_token(credentials, participant, now, wall),
            // This path does not resume.
            Path::WebSocket => ResumeToken(String::new()),
        };
        self.send(ControlMessage::ServerHello(ServerHello {
            version: PROTOCOL_VERSION,
            participant,
            resume_token,
            resumed,
            ice_servers: facts.ice_servers,
            limits: self.settings.limits,
            max_datagram_size: facts.max_datagram_size,
        }));
        if let Some(why) = resume_failed {
            self.send(ControlMessage::Error(ErrorMessage {
                request: None,
                code: ErrorCode::RESUME_FAILED,
                reason: format!("resume failed: {why}; joined as a new participant"),
            }));
        }
        if self.draining {
            self.draining = false;
            self.handle_drain();
        }
    }

    /// Another node serves this session (its room, or the participant its resume token names):
    /// the client gets `go_away` (code `REDIRECT`) and the session closes with `REDIRECT`
    /// before any `ServerHello`. Only before the attach; ignored otherwise.
    pub(crate) fn handle_redirect(&mut self, go_away: GoAway) {
        if !matches!(self.state, State::Attaching { .. }) {
            return;
        }
        self.outputs.retain(|o| {
            !matches!(
                o,
                SessionOutput::Attach { .. } | SessionOutput::Locate { .. }
            )
        });
        self.send(ControlMessage::GoAway(go_away));
        self.close(
            ErrorCode::REDIRECT,
            "another node serves this session".into(),
        );
    }

    /// The one room the session's access token grants (`None` before the hello, or for a token
    /// of every room).
    pub(crate) fn room(&self) -> Option<&RoomId> {
        match self.token.as_ref().map(|t| &t.room) {
            Some(RoomGrant::Room(room)) => Some(room),
            _ => None,
        }
    }

    /// The session's room moved to another node of the cluster (this node lost it, or drains):
    /// a live session gets `go_away` (code `REDIRECT`: a new session there, no resume) and
    /// closes with `REDIRECT`. Ignored before the session is live or after it ended.
    pub(crate) fn handle_moved(&mut self, go_away: GoAway) {
        if !self.is_live() {
            return;
        }
        self.send(ControlMessage::GoAway(go_away));
        self.close(ErrorCode::REDIRECT, "the room moved to another node".into());
    }

    /// The access token the session presented, once verified.
    pub(crate) fn token(&self) -> Option<&VerifiedToken> {
        self.token.as_ref()
    }

    /// No node can serve the session's room now (the cluster directory is unreachable, or
    /// every node is full): the session closes with `UNAVAILABLE` (retryable). Only before the
    /// attach; ignored otherwise.
    pub(crate) fn handle_unavailable(&mut self, reason: String) {
        if !matches!(self.state, State::Attaching { .. }) {
            return;
        }
        self.outputs.retain(|o| {
            !matches!(
                o,
                SessionOutput::Attach { .. } | SessionOutput::Locate { .. }
            )
        });
        self.close(ErrorCode::UNAVAILABLE, reason);
    }

    fn hello(&mut self, message: ControlMessage, credentials: Credentials<'_>, wall: SystemTime) {
        let hello: ClientHello = match message {
            ControlMessage::ClientHello(hello) => hello,
            other => {
                self.metrics.refuse(RefusalReason::Hello);
                self.violation(
                    ErrorCode::PROTOCOL_VIOLATION,
                    format!("expected ClientHello, got kind {}", other.kind()),
                );
                return;
            }
        };
        if hello.version != PROTOCOL_VERSION {
            self.metrics.refuse(RefusalReason::Hello);
            self.close(
                ErrorCode::UNSUPPORTED_VERSION,
                format!(
                    "version {} is not supported; this server speaks {PROTOCOL_VERSION}",
                    hello.version
                ),
            );
            return;
        }
        let mut resume = None;
        let mut resume_failed = None;
        let mut issued_elsewhere = None;
        if let Some(token) = &hello.resume {
            match credentials.resume.verify(&token.0, wall) {
                Ok(claims) => {
                    resume = Some(ParticipantId(claims.participant));
                    if claims.node != 0 && claims.node != self.settings.node {
                        issued_elsewhere = Some(claims.node);
                    }
                }
                Err(e) => resume_failed = Some(e.to_string()),
            }
        }
        let token = match credentials.keys.verify(&hello.token, wall) {
            Ok(token) => Some(token),
            Err(e) if resume.is_none() => {
                self.metrics.refuse(RefusalReason::Auth);
                if hello.resume.is_some() {
                    self.count_resume(false);
                }
                self.close(e.code(), auth_reason(&e));
                return;
            }
            Err(_) => None,
        };
        self.token.clone_from(&token);
        self.state = State::Attaching {
            resume,
            token: token.clone(),
            resume_failed,
            asked_resume: hello.resume.is_some(),
        };
        if let Some(node) = issued_elsewhere {
            self.outputs.push_back(SessionOutput::Locate { node });
        }
        self.outputs
            .push_back(SessionOutput::Attach { resume, token });
    }

    fn request(&mut self, message: ControlMessage, now: Instant) {
        if !self.rate.allow(now) {
            self.metrics.rate_limited.inc();
            // A refused request is answered; anything else (a ping) is dropped and counted,
            // because an Error without a request id would mean a close.
            if let Some(request) = message.request() {
                let per_second = self.settings.max_messages_per_second;
                self.send(translate::error(
                    request,
                    ErrorCode::RATE_LIMITED,
                    format!("more than {per_second} control messages per second"),
                ));
            }
            return;
        }
        match message {
            ControlMessage::Ping(p) => self.send(ControlMessage::Pong(Pong { nonce: p.nonce })),
            ControlMessage::Pong(_) => {}
            ControlMessage::Leave(l) => {
                self.send(ControlMessage::Ack(Ack { request: l.request }));
                self.end(SessionEnd::Left);
            }
            ControlMessage::ClientHello(_) => {
                let reason = match self.path {
                    Path::Quic => "a second ClientHello",
                    Path::WebSocket => {
                        "no ClientHello on the WebSocket path: the token is in the URL"
                    }
                };
                self.violation(ErrorCode::PROTOCOL_VIOLATION, reason.into());
            }
            message if self.path == Path::WebSocket => self.websocket_request(message),
            message => {
                let join_started = (!self.join_timed && matches!(message, ControlMessage::Join(_)))
                    .then_some(self.started);
                self.join_timed |= join_started.is_some();
                self.hub(HubRequest::Request {
                    message,
                    join_started,
                });
            }
        }
    }

    fn websocket_request(&mut self, message: ControlMessage) {
        match message {
            ControlMessage::IceCandidate(_) => {}
            ControlMessage::Join(join)
                if !self
                    .token
                    .as_ref()
                    .is_some_and(|t| t.allows_room(&join.room)) =>
            {
                self.violation(
                    ErrorCode::FORBIDDEN,
                    format!("the access token does not grant room `{}`", join.room),
                );
            }
            ControlMessage::Publish(p) => self.refuse(
                p.request,
                "on the WebSocket path, publish by sending tracks in the SDP offer",
            ),
            ControlMessage::Subscribe(s) => self.refuse(
                s.request,
                "on the WebSocket path, subscribe by receiving sections in the SDP offer",
            ),
            ControlMessage::Sdp(description) => {
                if description.kind != SdpType::Offer {
                    self.violation(
                        ErrorCode::PROTOCOL_VIOLATION,
                        "the gateway sends no offers: send an offer, not an answer".into(),
                    );
                } else {
                    self.hub(HubRequest::Offer {
                        sdp: description.sdp,
                    });
                }
            }
            message => self.hub(HubRequest::Request {
                message,
                join_started: None,
            }),
        }
    }

    /// A resume token for `participant`, valid for two renewal intervals; the next one is due
    /// after one.
    fn resume_token(
        &mut self,
        credentials: Credentials<'_>,
        participant: ParticipantId,
        now: Instant,
        wall: SystemTime,
    ) -> ResumeToken {
        let renewal = self.settings.resume_renewal();
        self.renew_at = Some(now + renewal);
        ResumeToken(
            credentials
                .resume
                .issue(participant.0, self.settings.node, wall + 2 * renewal),
        )
    }

    fn count_resume(&self, resumed: bool) {
        let result = if resumed {
            ResumeResult::Resumed
        } else {
            ResumeResult::Failed
        };
        self.metrics
            .resumes
            .get_or_create(&ResumeLabel { result })
            .inc();
    }

    fn send(&mut self, message: ControlMessage) {
        self.outputs.push_back(SessionOutput::Send(message));
    }

    fn hub(&mut self, request: HubRequest) {
        self.outputs.push_back(SessionOutput::Hub(request));
    }

    fn refuse(&mut self, request: RequestId, reason: &str) {
        self.send(translate::error(
            request,
            ErrorCode::INVALID_REQUEST,
            reason,
        ));
    }

    fn end(&mut self, end: SessionEnd) {
        self.state = State::Ended;
        self.outputs.push_back(SessionOutput::End(end));
    }

    /// Tells the client why, then ends the session as closed by the gateway.
    fn close(&mut self, code: ErrorCode, reason: String) {
        self.send(session_error(code, &reason));
        self.end(SessionEnd::Closed(code, reason));
    }

    /// Tells the client why, then ends the session for a protocol violation.
    fn violation(&mut self, code: ErrorCode, reason: String) {
        self.send(session_error(code, &reason));
        self.end(SessionEnd::Violation(code, reason));
    }
}

fn session_error(code: ErrorCode, reason: &str) -> ControlMessage {
    ControlMessage::Error(ErrorMessage {
        request: None,
        code,
        reason: reason.into(),
    })
}

fn auth_reason(e: &AuthError) -> String {
    format!("access token refused: {e}")
}

/// A token bucket for control messages.
#[derive(Debug)]
pub(crate) struct RateLimit {
    tokens: f64,
    burst: f64,
    per_second: f64,
    last: Instant,
}

impl RateLimit {
    pub(crate) fn new(per_second: u32, burst: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            per_second: f64::from(per_second),
            last: now,
        }
    }

    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
