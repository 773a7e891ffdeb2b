//! The session core in virtual time, on both paths: the QUIC one (raw QUIC and WebTransport) and
//! the WebSocket one. Every test feeds the core what a driver would and reads what it asks for.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::registry::Registry;
use strait_protocol::{
    ClientHello, ControlMessage, DecodeError, ErrorCode, ErrorMessage, GoAway, IceCandidate, Join,
    Leave, PROTOCOL_VERSION, ParticipantId, Ping, RequestId, ResumeToken, RoomId, SdpType,
    SessionDescription, Subscribe, TrackId,
};

use super::core::{
    Credentials, HelloFacts, HubRequest, Incoming, SessionCore, SessionEnd, SessionOutput,
    SessionSettings,
};
use crate::auth::{AccessClaims, ApiKey, Grants, KeyRing, ResumeSigner, Secret, VerifiedToken};
use crate::config::Config;
use crate::metrics::{Metrics, RefusalLabel, RefusalReason, ResumeLabel, ResumeResult};
use crate::worker::hub::{AttachError, Attached};

/// Keys, a resume signer, metrics, and a clock that moves only when a test says so.
struct World {
    keys: KeyRing,
    resume: ResumeSigner,
    metrics: Arc<Metrics>,
    settings: SessionSettings,
    now: Instant,
    wall: SystemTime,
}

impl World {
    fn new() -> World {
        let mut keys = KeyRing::new();
        keys.insert(
            ApiKey::new(
                "test",
                Secret::new("a test secret that is long enough to sign"),
            )
            .unwrap(),
        );
        let mut config = Config::default();
        config.limits.max_messages_per_second = 10;
        config.limits.message_burst = 3;
        World {
            keys,
            resume: ResumeSigner::new(b"a resume secret of at least thirty-two bytes").unwrap(),
            metrics: Arc::new(Metrics::new(&mut Registry::default())),
            settings: SessionSettings::new(&config),
            now: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    fn credentials(&self) -> Credentials<'_> {
        Credentials {
            keys: &self.keys,
            resume: &self.resume,
        }
    }

    fn token(&self, room: &str) -> String {
        let claims = AccessClaims::new(
            "alice",
            room,
            Grants::participant(),
            self.wall,
            Duration::from_secs(600),
        );
        self.keys.mint("test", &claims).unwrap()
    }

    fn verified(&self, room: &str) -> VerifiedToken {
        self.keys.verify(&self.token(room), self.wall).unwrap()
    }

    fn quic(&self) -> SessionCore {
        SessionCore::quic(self.settings.clone(), self.metrics.clone(), self.now)
    }

    fn websocket(&self, room: &str) -> SessionCore {
        SessionCore::websocket(
            self.settings.clone(),
            self.metrics.clone(),
            Ok(self.verified(room)),
            self.now,
        )
    }

    fn give(&self, core: &mut SessionCore, message: ControlMessage) -> Vec<SessionOutput> {
        self.feed(core, Incoming::Message(message))
    }

    fn feed(&self, core: &mut SessionCore, incoming: Incoming) -> Vec<SessionOutput> {
        core.handle_message(incoming, self.credentials(), self.now, self.wall);
        drain(core)
    }

    fn attached(
        &self,
        core: &mut SessionCore,
        participant: u64,
        result: Result<Attached, AttachError>,
    ) -> Vec<SessionOutput> {
        core.handle_attached(
            ParticipantId(participant),
            result,
            HelloFacts::default(),
            self.credentials(),
            self.now,
            self.wall,
        );
        drain(core)
    }

    /// A QUIC session through its hello, attached as participant 7.
    fn live_quic(&self) -> SessionCore {
        let mut core = self.quic();
        self.give(&mut core, hello(self.token("lobby"), None));
        self.attached(&mut core, 7, Ok(Attached::New));
        assert!(core.is_live());
        core
    }

    /// A WebSocket session attached as participant 8.
    fn live_websocket(&self) -> SessionCore {
        let mut core = self.websocket("lobby");
        drain(&mut core);
        self.attached(&mut core, 8, Ok(Attached::New));
        assert!(core.is_live());
        core
    }

    fn refusals(&self, reason: RefusalReason) -> u64 {
        self.metrics
            .refusals
            .get_or_create(&RefusalLabel { reason })
            .get()
    }
}

fn drain(core: &mut SessionCore) -> Vec<SessionOutput> {
    std::iter::from_fn(|| core.poll_output()).collect()
}

fn hello(token: String, resume: Option<String>) -> ControlMessage {
    ControlMessage::ClientHello(ClientHello {
        version: PROTOCOL_VERSION,
        token,
        resume: resume.map(ResumeToken),
        agent: "test".into(),
    })
}

fn join(request: u32, room: &str) -> ControlMessage {
    ControlMessage::Join(Join {
        request: RequestId(request),
        room: RoomId(room.into()),
        name: String::new(),
    })
}

/// The code of a session-level `Error` and the end that follows it.
fn closed_with(outputs: &[SessionOutput]) -> (ErrorCode, &SessionEnd) {
    match outputs {
        [
            SessionOutput::Send(ControlMessage::Error(ErrorMessage {
                request: None,
                code,
                ..
            })),
            SessionOutput::End(end),
        ] => (*code, end),
        other => panic!("expected an Error and the end, got {other:?}"),
    }
}

fn server_hello(outputs: &[SessionOutput]) -> &strait_protocol::ServerHello {
    match outputs.first() {
        Some(SessionOutput::Send(ControlMessage::ServerHello(h))) => h,
        other => panic!("expected ServerHello, got {other:?}"),
    }
}

// ---- QUIC and WebTransport ----

#[test]
fn quic_hello_attaches_and_answers_with_a_resume_token() {
    let w = World::new();
    let mut core = w.quic();
    assert_eq!(core.poll_timeout(), Some(w.now + w.settings.hello_timeout));
    let asked = w.give(&mut core, hello(w.token("lobby"), None));
    match asked.as_slice() {
        [
            SessionOutput::Attach {
                resume: None,
                token: Some(t),
            },
        ] => assert_eq!(t.identity, "alice"),
        other => panic!("expected an attach, got {other:?}"),
    }
    let answered = w.attached(&mut core, 7, Ok(Attached::New));
    let hello = server_hello(&answered);
    assert_eq!(hello.participant, ParticipantId(7));
    assert!(!hello.resumed);
    assert_eq!(hello.limits, w.settings.limits);
    let claims = w.resume.verify(&hello.resume_token.0, w.wall).unwrap();
    assert_eq!(
        claims.participant, 7,
        "the resume token names the participant"
    );
    assert_eq!(answered.len(), 1);
    assert_eq!(core.participant(), Some(ParticipantId(7)));
    let renewal = w.settings.resume_renewal();
    assert_eq!(
        core.poll_timeout(),
        Some(w.now + renewal),
        "once live, the only timer is the resume token's renewal"
    );

    // Requests now go to the hub; the first Join carries when the session began.
    let sent = w.give(&mut core, join(1, "lobby"));
    assert_eq!(
        sent,
        [SessionOutput::Hub(HubRequest::Request {
            message: join(1, "lobby"),
            join_started: Some(w.now),
        })]
    );
}

#[test]
fn a_live_quic_session_gets_a_new_resume_token_before_the_last_expires() {
    let w = World::new();
    let mut core = w.quic();
    w.give(&mut core, hello(w.token("lobby"), None));
    let first = server_hello(&w.attached(&mut core, 7, Ok(Attached::New)))
        .resume_token
        .clone();
    let renewal = w.settings.resume_renewal();
    let mut now = w.now;
    let mut wall = w.wall;
    // A call many tokens long: each renewal comes one interval after the last, and each token
    // outlives the next renewal by the idle timeout plus the grace period.
    for round in 0..5u32 {
        assert_eq!(core.poll_timeout(), Some(now + renewal), "round {round}");
        core.handle_timeout(w.credentials(), now + renewal / 2, wall + renewal / 2);
        assert!(drain(&mut core).is_empty(), "not before it is due");
        now += renewal;
        wall += renewal;
        core.handle_timeout(w.credentials(), now, wall);
        let token = match drain(&mut core).as_slice() {
            [SessionOutput::Send(ControlMessage::NewResumeToken(t))] => t.resume_token.clone(),
            other => panic!("expected a NewResumeToken, got {other:?}"),
        };
        let claims = w.resume.verify(&token.0, wall).expect("valid when sent");
        assert_eq!(claims.participant, 7);
        // Still valid when the path dies just before the next renewal and the loss takes the
        // idle timeout to notice and the grace period to resume.
        let latest_resume = wall + renewal + w.settings.idle_timeout + w.settings.grace_period;
        w.resume
            .verify(&token.0, latest_resume - Duration::from_secs(1))
            .expect("valid for as long as a resume can come");
    }
    // The first token has long expired: without renewals, a call this old could not resume.
    assert!(w.resume.verify(&first.0, wall).is_err());
}

#[test]
fn quic_hello_must_come_in_time_first_and_in_this_version() {
    let w = World::new();
    let mut late = w.quic();
    late.handle_timeout(
        w.credentials(),
        w.now + w.settings.hello_timeout / 2,
        w.wall,
    );
    assert!(drain(&mut late).is_empty(), "not yet");
    late.handle_timeout(w.credentials(), w.now + w.settings.hello_timeout, w.wall);
    let out = drain(&mut late);
    assert_eq!(
        closed_with(&out),
        (
            ErrorCode::TIMEOUT,
            &SessionEnd::Closed(ErrorCode::TIMEOUT, "no ClientHello in time".into())
        )
    );

    let mut first = w.quic();
    let out = w.give(&mut first, join(1, "lobby"));
    assert!(matches!(
        closed_with(&out),
        (ErrorCode::PROTOCOL_VIOLATION, SessionEnd::Violation(..))
    ));

    let mut old = w.quic();
    let mut message = hello(w.token("lobby"), None);
    if let ControlMessage::ClientHello(h) = &mut message {
        h.version = PROTOCOL_VERSION + 1;
    }
    let out = w.give(&mut old, message);
    assert_eq!(closed_with(&out).0, ErrorCode::UNSUPPORTED_VERSION);

    let mut huge = w.quic();
    let out = w.feed(
        &mut huge,
        Incoming::Malformed(DecodeError::FrameTooLarge {
            len: 1 << 20,
            max: 1024,
        }),
    );
    assert_eq!(closed_with(&out).0, ErrorCode::FRAME_TOO_LARGE);
    assert_eq!(w.refusals(RefusalReason::Hello), 4);

    // Input after the end is ignored.
    assert!(w.give(&mut huge, hello(w.token("lobby"), None)).is_empty());
}

#[test]
fn quic_bad_token_is_refused_with_its_code() {
    let w = World::new();
    let mut core = w.quic();
    let out = w.give(&mut core, hello("not-a-jwt".into(), None));
    let (code, end) = closed_with(&out);
    assert_eq!(code, ErrorCode::UNAUTHORIZED);
    assert!(
        matches!(end, SessionEnd::Closed(ErrorCode::UNAUTHORIZED, reason) if reason.starts_with("access token refused"))
    );
    assert_eq!(w.refusals(RefusalReason::Auth), 1);

    // An expired token: its own code.
    let mut expired = w.quic();
    let claims = AccessClaims::new(
        "alice",
        "lobby",
        Grants::participant(),
        w.wall - Duration::from_secs(7200),
        Duration::from_secs(600),
    );
    let token = w.keys.mint("test", &claims).unwrap();
    let out = w.give(&mut expired, hello(token, None));
    assert_eq!(closed_with(&out).0, ErrorCode::TOKEN_EXPIRED);
}

#[test]
fn quic_resume_takes_the_participant_back_or_starts_afresh() {
    let w = World::new();
    let token = w.resume.issue(7, 0, w.wall + Duration::from_secs(30));

    // The participant is still there: taken back.
    let mut core = w.quic();
    let asked = w.give(&mut core, hello(w.token("lobby"), Some(token.clone())));
    assert!(matches!(
        asked.as_slice(),
        [SessionOutput::Attach {
            resume: Some(ParticipantId(7)),
            token: Some(_)
        }]
    ));
    let out = w.attached(&mut core, 7, Ok(Attached::Resumed { replaced: None }));
    assert!(server_hello(&out).resumed);
    assert_eq!(out.len(), 1);

    // The participant is gone: a new one, told why after its ServerHello.
    let mut gone = w.quic();
    w.give(&mut gone, hello(w.token("lobby"), Some(token.clone())));
    let again = w.attached(&mut gone, 7, Err(AttachError::ParticipantGone));
    assert!(matches!(
        again.as_slice(),
        [SessionOutput::Attach {
            resume: None,
            token: Some(_)
        }]
    ));
    let out = w.attached(&mut gone, 9, Ok(Attached::New));
    assert_eq!(server_hello(&out).participant, ParticipantId(9));
    assert!(!server_hello(&out).resumed);
    assert!(matches!(
        &out[1],
        SessionOutput::Send(ControlMessage::Error(e)) if e.code == ErrorCode::RESUME_FAILED && e.request.is_none()
    ));
    assert!(gone.is_live(), "a failed resume is not a close");

    // Gone, and no valid access token to start afresh: refused.
    let mut neither = w.quic();
    w.give(&mut neither, hello("expired".into(), Some(token)));
    let out = w.attached(&mut neither, 7, Err(AttachError::ParticipantGone));
    assert_eq!(closed_with(&out).0, ErrorCode::UNAUTHORIZED);

    // A forged resume token with a valid access token: a fresh attach.
    let mut forged = w.quic();
    let asked = w.give(&mut forged, hello(w.token("lobby"), Some("forged".into())));
    assert!(matches!(
        asked.as_slice(),
        [SessionOutput::Attach {
            resume: None,
            token: Some(_)
        }]
    ));
    let out = w.attached(&mut forged, 10, Ok(Attached::New));
    assert!(
        matches!(&out[1], SessionOutput::Send(ControlMessage::Error(e)) if e.code == ErrorCode::RESUME_FAILED)
    );

    let count = |result| {
        w.metrics
            .resumes
            .get_or_create(&ResumeLabel { result })
            .get()
    };
    assert_eq!(count(ResumeResult::Resumed), 1);
    assert_eq!(count(ResumeResult::Failed), 3);
}

#[test]
fn a_refused_attach_reaches_the_client_with_its_own_code() {
    let w = World::new();
    for (error, code) in [
        (AttachError::ShuttingDown, ErrorCode::GOING_AWAY),
        (AttachError::NoToken, ErrorCode::UNAUTHORIZED),
        (AttachError::IdInUse, ErrorCode::INTERNAL),
    ] {
        let mut core = w.quic();
        w.give(&mut core, hello(w.token("lobby"), None));
        let out = w.attached(&mut core, 7, Err(error));
        assert_eq!(closed_with(&out).0, code);
        assert!(core.is_ended());
    }
}

#[test]
fn quic_rate_limit_answers_requests_and_drops_the_rest() {
    let mut w = World::new();
    let mut core = w.live_quic();
    // A burst of three passes.
    for n in 0..3 {
        let out = w.give(&mut core, join(n, "lobby"));
        assert!(matches!(out.as_slice(), [SessionOutput::Hub(_)]));
    }
    // The fourth request is answered RATE_LIMITED with its request id; a ping is dropped.
    let out = w.give(&mut core, join(4, "lobby"));
    assert!(matches!(
        out.as_slice(),
        [SessionOutput::Send(ControlMessage::Error(e))] if e.code == ErrorCode::RATE_LIMITED && e.request == Some(RequestId(4))
    ));
    assert!(
        w.give(&mut core, ControlMessage::Ping(Ping { nonce: 1 }))
            .is_empty()
    );
    assert_eq!(w.metrics.rate_limited.get(), 2);
    assert!(core.is_live(), "the session goes on");
    // A tenth of a second later, at ten a second, one more passes.
    w.now += Duration::from_millis(100);
    let out = w.give(&mut core, ControlMessage::Ping(Ping { nonce: 2 }));
    assert!(
        matches!(out.as_slice(), [SessionOutput::Send(ControlMessage::Pong(p))] if p.nonce == 2)
    );
}

#[test]
fn quic_go_away_once_then_leave() {
    let w = World::new();
    let mut core = w.live_quic();
    core.handle_drain();
    let out = drain(&mut core);
    assert!(matches!(
        out.as_slice(),
        [SessionOutput::Send(ControlMessage::GoAway(g))] if g.code == ErrorCode::GOING_AWAY && g.redirect.is_none()
    ));
    core.handle_drain();
    assert!(drain(&mut core).is_empty(), "said once");
    let out = w.give(
        &mut core,
        ControlMessage::Leave(Leave {
            request: RequestId(5),
        }),
    );
    assert!(matches!(
        out.as_slice(),
        [SessionOutput::Send(ControlMessage::Ack(a)), SessionOutput::End(SessionEnd::Left)] if a.request == RequestId(5)
    ));

    // A drain during the hello: the go-away follows the ServerHello.
    let mut early = w.quic();
    early.handle_drain();
    w.give(&mut early, hello(w.token("lobby"), None));
    let out = w.attached(&mut early, 7, Ok(Attached::New));
    assert!(matches!(
        &out[1],
        SessionOutput::Send(ControlMessage::GoAway(_))
    ));
}

#[test]
fn quic_second_hello_and_finished_stream() {
    let w = World::new();
    let mut core = w.live_quic();
    let out = w.give(&mut core, hello(w.token("lobby"), None));
    assert!(matches!(
        closed_with(&out),
        (ErrorCode::PROTOCOL_VIOLATION, SessionEnd::Violation(..))
    ));

    let mut other = w.live_quic();
    assert_eq!(
        w.feed(&mut other, Incoming::Finished),
        [SessionOutput::End(SessionEnd::Left)]
    );
    let mut lost = w.live_quic();
    assert_eq!(
        w.feed(&mut lost, Incoming::Failed("reset".into())),
        [SessionOutput::End(SessionEnd::Lost("reset".into()))]
    );
}

// ---- WebSocket ----

#[test]
fn websocket_hello_is_the_servers_and_cannot_resume() {
    let w = World::new();
    let mut core = w.websocket("lobby");
    let asked = drain(&mut core);
    assert!(matches!(
        asked.as_slice(),
        [SessionOutput::Attach {
            resume: None,
            token: Some(_)
        }]
    ));
    let out = w.attached(&mut core, 8, Ok(Attached::New));
    let hello = server_hello(&out);
    assert_eq!(hello.participant, ParticipantId(8));
    assert!(hello.resume_token.0.is_empty(), "this path does not resume");
    // A ClientHello on this path is a violation.
    let out = w.give(&mut core, self::hello(w.token("lobby"), None));
    assert!(matches!(
        closed_with(&out),
        (ErrorCode::PROTOCOL_VIOLATION, SessionEnd::Violation(..))
    ));
}

#[test]
fn websocket_bad_token_is_told_before_the_close() {
    let w = World::new();
    let mut core = SessionCore::websocket(
        w.settings.clone(),
        w.metrics.clone(),
        Err((
            ErrorCode::UNAUTHORIZED,
            "the `token` query parameter is required".into(),
        )),
        w.now,
    );
    let out = drain(&mut core);
    assert_eq!(closed_with(&out).0, ErrorCode::UNAUTHORIZED);
    assert_eq!(w.refusals(RefusalReason::Auth), 1);
}

#[test]
fn websocket_requests_follow_the_offer_not_publish_and_subscribe() {
    let mut w = World::new();
    let mut core = w.live_websocket();
    let out = w.give(
        &mut core,
        ControlMessage::Subscribe(Subscribe {
            request: RequestId(2),
            track: TrackId(1),
            max_layer: None,
            priority: None,
        }),
    );
    assert!(matches!(
        out.as_slice(),
        [SessionOutput::Send(ControlMessage::Error(e))] if e.code == ErrorCode::INVALID_REQUEST && e.request == Some(RequestId(2))
    ));
    assert!(
        w.give(
            &mut core,
            ControlMessage::IceCandidate(IceCandidate {
                candidate: "candidate:1 1 udp 1 192.0.2.1 5000 typ host".into(),
                sdp_mid: None,
                sdp_mline_index: None,
            })
        )
        .is_empty()
    );
    let offer = ControlMessage::Sdp(SessionDescription {
        kind: SdpType::Offer,
        sdp: "v=0".into(),
    });
    assert_eq!(
        w.give(&mut core, offer),
        [SessionOutput::Hub(HubRequest::Offer { sdp: "v=0".into() })]
    );
    // (Past the burst of three: let the rate limit refill.)
    w.now += Duration::from_millis(300);
    let out = w.give(&mut core, join(3, "lobby"));
    assert!(matches!(
        out.as_slice(),
        [SessionOutput::Hub(HubRequest::Request {
            join_started: None,
            ..
        })]
    ));
    let answer = ControlMessage::Sdp(SessionDescription {
        kind: SdpType::Answer,
        sdp: "v=0".into(),
    });
    let out = w.give(&mut core, answer);
    assert!(matches!(
        closed_with(&out),
        (ErrorCode::PROTOCOL_VIOLATION, _)
    ));

    let mut elsewhere = w.live_websocket();
    let out = w.give(&mut elsewhere, join(1, "another-room"));
    assert!(matches!(
        closed_with(&out),
        (ErrorCode::FORBIDDEN, SessionEnd::Violation(..))
    ));
}

#[test]
fn websocket_must_join_in_time_and_stay_heard() {
    let mut w = World::new();
    let start = w.now;
    let mut core = w.live_websocket();
    assert_eq!(core.poll_timeout(), Some(start + w.settings.hello_timeout));
    w.now = start + w.settings.hello_timeout;
    core.handle_heard(w.now);
    core.handle_timeout(w.credentials(), w.now, w.wall);
    let out = drain(&mut core);
    assert!(
        matches!(closed_with(&out), (ErrorCode::TIMEOUT, SessionEnd::Closed(_, r)) if r == "no Join in time")
    );

    // Joined: only silence ends it now, and anything heard resets the clock.
    let mut core = w.live_websocket();
    let joined_at = w.now;
    core.handle_outgoing(&ControlMessage::Joined(strait_protocol::Joined {
        request: RequestId(1),
        room: RoomId("lobby".into()),
        me: strait_protocol::ParticipantInfo {
            participant: ParticipantId(8),
            identity: "alice".into(),
            name: String::new(),
        },
    }));
    let idle = w.settings.idle_timeout;
    assert_eq!(core.poll_timeout(), Some(joined_at + idle));
    core.handle_heard(joined_at + idle / 2);
    core.handle_timeout(w.credentials(), joined_at + idle, w.wall);
    assert!(drain(&mut core).is_empty(), "heard half-way: not idle yet");
    core.handle_timeout(w.credentials(), joined_at + idle / 2 + idle, w.wall);
    let out = drain(&mut core);
    assert_eq!(closed_with(&out).0, ErrorCode::TIMEOUT);
}

#[test]
fn websocket_hub_errors_and_release_end_the_session() {
    let w = World::new();
    let mut core = w.live_websocket();
    // A session-level Error from the hub (a refused offer) was sent already: the end follows,
    // without a second Error.
    core.handle_outgoing(&ControlMessage::Error(ErrorMessage {
        request: None,
        code: ErrorCode::INVALID_REQUEST,
        reason: "offer refused".into(),
    }));
    assert_eq!(
        drain(&mut core),
        [SessionOutput::End(SessionEnd::Closed(
            ErrorCode::INVALID_REQUEST,
            "offer refused".into()
        ))]
    );
    // An answer to a request does not end it.
    let mut core = w.live_websocket();
    core.handle_outgoing(&ControlMessage::Error(ErrorMessage {
        request: Some(RequestId(1)),
        code: ErrorCode::NOT_FOUND,
        reason: "no such track".into(),
    }));
    assert!(drain(&mut core).is_empty());
    // The hub let go: a full queue, or a drain.
    core.handle_hub_gone(false);
    assert_eq!(closed_with(&drain(&mut core)).0, ErrorCode::LIMIT_EXCEEDED);
    let mut core = w.live_websocket();
    core.handle_hub_gone(true);
    assert_eq!(closed_with(&drain(&mut core)).0, ErrorCode::GOING_AWAY);
}

#[test]
fn websocket_rate_limit_and_go_away() {
    let w = World::new();
    let mut core = w.live_websocket();
    for n in 0..3 {
        w.give(&mut core, ControlMessage::Ping(Ping { nonce: n }));
    }
    let out = w.give(&mut core, join(9, "lobby"));
    assert!(matches!(
        out.as_slice(),
        [SessionOutput::Send(ControlMessage::Error(e))] if e.code == ErrorCode::RATE_LIMITED && e.request == Some(RequestId(9))
    ));
    core.handle_drain();
    assert!(matches!(
        drain(&mut core).as_slice(),
        [SessionOutput::Send(ControlMessage::GoAway(_))]
    ));
}

// ---- clusters ----

#[test]
fn a_resume_token_of_another_node_is_located_first_and_redirected_there() {
    let mut w = World::new();
    w.settings.node = 0xa1;
    let token = w.resume.issue(7, 0xb2, w.wall + Duration::from_secs(30));

    let mut core = w.quic();
    let asked = w.give(&mut core, hello(w.token("lobby"), Some(token.clone())));
    assert!(
        matches!(
            asked.as_slice(),
            [
                SessionOutput::Locate { node: 0xb2 },
                SessionOutput::Attach {
                    resume: Some(ParticipantId(7)),
                    ..
                }
            ]
        ),
        "{asked:?}"
    );
    // That node lives: the client goes there, before any ServerHello.
    let go_away = GoAway {
        code: ErrorCode::REDIRECT,
        redirect: Some("127.0.0.3:4433".into()),
        cert_hashes: vec!["ab".repeat(32)],
        token: None,
    };
    core.handle_redirect(go_away.clone());
    let out = drain(&mut core);
    assert_eq!(out[0], SessionOutput::Send(ControlMessage::GoAway(go_away)));
    assert_eq!(closed_with(&out[1..]).0, ErrorCode::REDIRECT);

    // A token of this node, or of no cluster, is not located.
    for node in [0xa1, 0] {
        let own = w.resume.issue(7, node, w.wall + Duration::from_secs(30));
        let mut core = w.quic();
        let asked = w.give(&mut core, hello(w.token("lobby"), Some(own)));
        assert!(matches!(asked.as_slice(), [SessionOutput::Attach { .. }]));
    }
}

#[test]
fn the_resume_tokens_a_node_issues_name_it_and_unavailable_closes_retryably() {
    let mut w = World::new();
    w.settings.node = 0xa1;
    let mut core = w.quic();
    w.give(&mut core, hello(w.token("lobby"), None));
    let out = w.attached(&mut core, 7, Ok(Attached::New));
    let claims = w
        .resume
        .verify(&server_hello(&out).resume_token.0, w.wall)
        .unwrap();
    assert_eq!(claims.node, 0xa1);

    let mut refused = w.quic();
    w.give(&mut refused, hello(w.token("new-room"), None));
    refused.handle_unavailable("the cluster directory is unreachable; retry shortly".into());
    let out = drain(&mut refused);
    assert_eq!(closed_with(&out).0, ErrorCode::UNAVAILABLE);
    // Once live, neither applies.
    core.handle_unavailable("late".into());
    assert!(drain(&mut core).is_empty() && core.is_live());
}
