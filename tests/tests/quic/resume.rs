//! Resuming a lost session (section 7.8 of the protocol): a client whose path dies comes back
//! with its resume token and gets its room, subscriptions and media back without asking again; a
//! participant that never comes back leaves when its grace period runs out; a resume token that is
//! forged, expired or whose participant is gone gives a fresh session, and without a valid access
//! token no session at all.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use strait_client::{Client, Session, SessionEvent, Transport};
use strait_protocol::{ClientHello, ControlMessage, ErrorCode, ErrorMessage};
use strait_tests::fixture::{
    RawSession, Streamer, TestGateway, WAIT, client_hello, opus_spec, rtp, wait_for_track,
};
use strait_tests::relay::{RelayConfig, UdpRelay};
use tokio::time::Instant;

/// Waits for the first event `pick` accepts, skipping the others.
async fn wait_event<T>(session: &Session, mut pick: impl FnMut(SessionEvent) -> Option<T>) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            let event = session.next_event().await.expect("the session is alive");
            if let Some(t) = pick(event) {
                return t;
            }
        }
    })
    .await
    .expect("the event in time")
}

/// Expects the session-level `Error` that follows a refused resume.
async fn expect_resume_failed(raw: &mut RawSession) {
    match raw.expect_message().await {
        ControlMessage::Error(ErrorMessage {
            request: None,
            code,
            ..
        }) => assert_eq!(code, ErrorCode::RESUME_FAILED),
        other => panic!("expected Error RESUME_FAILED, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_resumes_after_its_path_dies_and_gets_media_back_without_asking() {
    let gw = TestGateway::start().await;
    let relay = UdpRelay::start(RelayConfig::new(gw.quic_addr()))
        .await
        .expect("relay");
    let publisher = gw.native("resume", "pub").await;
    let mut config = gw.client_config_to(
        relay.local_addr(),
        Transport::Quic,
        gw.token("resume", "sub"),
    );
    // A dead path is noticed after a second of silence; reconnecting starts at once.
    config.idle_timeout = Duration::from_secs(1);
    config.keep_alive = Duration::from_millis(200);
    config.backoff.initial = Duration::from_millis(50);
    config.rng_seed = Some(7);
    let subscriber = tokio::time::timeout(WAIT, Client::connect(config))
        .await
        .expect("connect in time")
        .expect("connect through the relay");
    subscriber.join("resume").await.expect("join");
    let me = subscriber.participant();

    let published = publisher.publish(opus_spec()).await.expect("publish");
    let track = wait_for_track(&subscriber).await;
    let subscription = subscriber
        .subscribe(track.track, None)
        .await
        .expect("subscribe");
    let publisher = Arc::new(publisher);
    let streamer = Streamer::start(
        publisher.clone(),
        published.media[0],
        0xabc,
        0,
        4000,
        Duration::from_millis(5),
    );

    // Media flows.
    let mut last_before = 0;
    for _ in 0..20 {
        let packet = tokio::time::timeout(WAIT, subscriber.recv_media())
            .await
            .expect("media in time")
            .expect("media");
        last_before = rtp::index_at(&packet.rtp, 12);
    }

    // The path dies; the client notices and starts reconnecting.
    relay.set_blackhole(true);
    let blackholed = Instant::now();
    wait_event(&subscriber, |e| {
        matches!(e, SessionEvent::ConnectionLost { .. }).then_some(())
    })
    .await;
    let noticed = blackholed.elapsed();
    while let Some(packet) = subscriber.try_recv_media() {
        last_before = last_before.max(rtp::index_at(&packet.rtp, 12));
    }

    // The path comes back: the session is taken back, same participant.
    relay.set_blackhole(false);
    let reopened = Instant::now();
    let (participant, outage, attempts) = wait_event(&subscriber, |e| match e {
        SessionEvent::Resumed {
            participant,
            outage,
            attempts,
        } => Some((participant, outage, attempts)),
        SessionEvent::ResumeFailed { participant } => {
            panic!("resume refused: fresh participant {participant}")
        }
        _ => None,
    })
    .await;
    let resumed_at = Instant::now();
    assert_eq!(participant, me, "the same participant");
    assert_eq!(subscriber.participant(), me);

    // The snapshot restores the subscription as it was: same media id, same SSRC.
    let restored = wait_event(&subscriber, |e| match e {
        SessionEvent::Subscribed(s) if s.track == track.track => Some(s),
        _ => None,
    })
    .await;
    assert_eq!(restored.media, subscription.media, "same media id");
    assert_eq!(restored.ssrc, subscription.ssrc, "same SSRC");
    assert_eq!(subscriber.subscription(track.track), Some(restored));

    // Media arrives again on that media id, without a new Subscribe or Publish.
    let packet = tokio::time::timeout(WAIT, subscriber.recv_media())
        .await
        .expect("media again in time")
        .expect("media");
    assert_eq!(packet.media, subscription.media);
    assert_eq!(rtp::ssrc(&packet.rtp), subscription.ssrc);
    assert!(
        rtp::index_at(&packet.rtp, 12) > last_before,
        "a packet sent after the outage"
    );
    eprintln!(
        "resume: loss noticed {noticed:?} after the blackhole; path reopened -> Resumed seen \
         {:?} (client outage {outage:?}, {attempts} attempt(s)); Resumed -> first media {:?}; \
         path reopened -> first media {:?}",
        resumed_at - reopened,
        packet.received_at.saturating_duration_since(resumed_at),
        packet.received_at - reopened,
    );

    // The publisher noticed nothing and never published again.
    let report = streamer.stop().await;
    assert_eq!(report.not_connected + report.failed, 0, "{report:?}");
    assert_eq!(publisher.published(), vec![published]);
    while let Some(event) = publisher.try_next_event() {
        assert!(
            !matches!(
                event,
                SessionEvent::ConnectionLost { .. }
                    | SessionEvent::Resumed { .. }
                    | SessionEvent::ResumeFailed { .. }
                    | SessionEvent::ParticipantLeft { .. }
            ),
            "the publisher saw {event:?}"
        );
    }
    assert_eq!(gw.metric("strait_tracks").await, 1.0);
    assert_eq!(gw.metric("strait_subscriptions").await, 1.0);
    assert_eq!(gw.metric("strait_participants").await, 2.0);
    assert!(
        gw.metric_where("strait_resumes_total", "result=\"resumed\"")
            .await
            >= 1.0
    );
    publisher.close().await;
    subscriber.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_that_never_comes_back_leaves_when_its_grace_period_ends() {
    let grace = Duration::from_secs(1);
    let gw = TestGateway::start_with(|c| c.session.grace_period = grace).await;
    let relay = UdpRelay::start(RelayConfig::new(gw.quic_addr()))
        .await
        .expect("relay");
    let observer = gw.native("grace", "observer").await;

    // A raw client, so that its resume token is at hand afterwards.
    let mut lost =
        RawSession::connect_to(&gw, relay.local_addr(), Some(Duration::from_secs(1))).await;
    let hello = lost
        .send_hello(client_hello(gw.token("grace", "lost"), None))
        .await;
    lost.join(1, "grace").await;
    let lost_id = hello.participant;
    wait_event(&observer, |e| match e {
        SessionEvent::ParticipantJoined(p) if p.participant == lost_id => Some(()),
        _ => None,
    })
    .await;
    gw.wait_metric("strait_participants", |n| n == 2.0).await;

    // It vanishes for good.
    relay.set_blackhole(true);
    let vanished = Instant::now();
    let reason = wait_event(&observer, |e| match e {
        SessionEvent::ParticipantLeft {
            participant,
            reason,
        } if participant == lost_id => Some(reason),
        _ => None,
    })
    .await;
    assert_eq!(
        reason,
        ErrorCode::TIMEOUT,
        "left because its grace period ran out"
    );
    eprintln!(
        "grace: participant left {:?} after its path died (idle timeout 1s + grace {grace:?})",
        vanished.elapsed()
    );
    assert!(
        vanished.elapsed() >= grace,
        "not before the grace period ran out"
    );
    gw.wait_metric("strait_participants", |n| n == 1.0).await;
    assert!(observer.participants().is_empty());

    // Its resume token is now worth nothing: a fresh participant, told so.
    let (mut again, hello_again) = RawSession::hello_with(
        &gw,
        client_hello(
            gw.token("grace", "lost"),
            Some(hello.resume_token.0.clone()),
        ),
    )
    .await;
    assert!(!hello_again.resumed);
    assert_ne!(hello_again.participant, lost_id);
    expect_resume_failed(&mut again).await;
    again.join(1, "grace").await;
    again.ping(9).await;
    assert!(
        gw.metric_where("strait_resumes_total", "result=\"failed\"")
            .await
            >= 1.0
    );
    observer.close().await;
    again.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_or_expired_resume_tokens_give_a_fresh_session_or_none() {
    // A known resume secret, so that the test can sign a token the gateway accepts as genuine.
    const RESUME_SECRET: &str = "a resume secret of at least thirty-two bytes";
    let gw = TestGateway::start_with(|c| c.auth.resume_secret = Some(RESUME_SECRET.into())).await;
    let signer =
        strait_gateway::auth::ResumeSigner::new(RESUME_SECRET.as_bytes()).expect("a resume signer");

    // Garbage resume token, valid access token: a fresh session and a non-closing error.
    let (mut raw, hello) = RawSession::hello_with(
        &gw,
        client_hello(gw.token("forged", "a"), Some("garbage".into())),
    )
    .await;
    assert!(!hello.resumed);
    expect_resume_failed(&mut raw).await;
    raw.join(1, "forged").await;
    raw.ping(1).await;
    assert!(raw.is_open());

    // A well-formed token with a broken signature.
    let mut tampered = hello.resume_token.0.clone();
    let last = tampered.pop().expect("non-empty token");
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    // A correctly signed token that has expired.
    let expired = signer.issue(
        hello.participant.0,
        0,
        SystemTime::now() - Duration::from_secs(60),
    );
    for token in [tampered, expired] {
        let (mut other, other_hello) =
            RawSession::hello_with(&gw, client_hello(gw.token("forged", "b"), Some(token))).await;
        assert!(!other_hello.resumed);
        assert_ne!(other_hello.participant, hello.participant);
        expect_resume_failed(&mut other).await;
        other.ping(2).await;
    }
    // The session whose participant those tokens named is untouched.
    raw.ping(3).await;

    // Garbage resume token and an invalid access token: no session.
    let mut refused = RawSession::connect(&gw).await;
    refused
        .send_frame(&ControlMessage::ClientHello(ClientHello {
            resume: Some(strait_protocol::ResumeToken("garbage".into())),
            ..client_hello("not-a-token".into(), None)
        }))
        .await;
    let (messages, code) = refused.drain_until_closed().await;
    assert_eq!(code, ErrorCode::UNAUTHORIZED);
    assert_session_error(&messages, ErrorCode::UNAUTHORIZED);

    // The other way round: a valid resume token is enough, even with a bad access token; the
    // connection it takes the participant from is closed with REPLACED.
    let (mut taken, taken_hello) = RawSession::hello_with(
        &gw,
        client_hello("not-a-token".into(), Some(hello.resume_token.0.clone())),
    )
    .await;
    assert!(taken_hello.resumed);
    assert_eq!(taken_hello.participant, hello.participant);
    let (_, skipped) = taken
        .expect_where(|m| matches!(m, ControlMessage::Ack(a) if a.request.0 == 0).then_some(()))
        .await;
    assert!(
        matches!(skipped.first(), Some(ControlMessage::Joined(j)) if j.request.0 == 0),
        "the snapshot starts with Joined: {skipped:?}"
    );
    assert_eq!(raw.closed().await, ErrorCode::REPLACED);
    taken.ping(4).await;
    taken.close().await;
    gw.stop().await;
}

/// If a session-level `Error` arrived before the close, it carries `code` (a close may overtake it).
fn assert_session_error(messages: &[ControlMessage], code: ErrorCode) {
    for m in messages {
        if let ControlMessage::Error(e) = m {
            assert_eq!(e.request, None, "a session-level error");
            assert_eq!(e.code, code);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_older_than_its_first_resume_token_still_resumes() {
    // Short timeouts so that a few seconds are a long call: the token of the `ServerHello` is
    // valid for the grace period plus the idle timeout, five seconds here. The grace period
    // leaves a loaded machine time to reconnect.
    let grace = Duration::from_secs(4);
    let idle = Duration::from_secs(1);
    let gw = TestGateway::start_with(|c| {
        c.session.grace_period = grace;
        c.quic.idle_timeout = idle;
        c.quic.keep_alive = Duration::from_millis(300);
    })
    .await;
    let relay = UdpRelay::start(RelayConfig::new(gw.quic_addr()))
        .await
        .expect("relay");
    let mut config = gw.client_config_to(
        relay.local_addr(),
        Transport::Quic,
        gw.token("long-call", "mobile"),
    );
    config.idle_timeout = Duration::from_secs(1);
    config.keep_alive = Duration::from_millis(200);
    config.backoff.initial = Duration::from_millis(50);
    config.rng_seed = Some(11);
    let session = tokio::time::timeout(WAIT, Client::connect(config))
        .await
        .expect("connect in time")
        .expect("connect through the relay");
    session.join("long-call").await.expect("join");
    let me = session.participant();

    // The call goes on through two renewals (one every grace + idle): by the second the
    // `ServerHello`'s token has expired, so only a renewed one can resume it.
    let issued = Instant::now();
    for renewal in 1..=2u32 {
        tokio::time::timeout(2 * (grace + idle), async {
            while !matches!(
                session.next_event().await.expect("the session is alive"),
                SessionEvent::ResumeTokenRenewed
            ) {}
        })
        .await
        .unwrap_or_else(|_| panic!("renewal {renewal} of the resume token in time"));
    }
    assert!(
        issued.elapsed() >= grace + idle,
        "renewals come an interval apart"
    );
    session.ping().await.expect("the session is alive");

    // Then the path dies, the client notices, the path comes back: the same participant.
    relay.set_blackhole(true);
    wait_event(&session, |e| {
        matches!(e, SessionEvent::ConnectionLost { .. }).then_some(())
    })
    .await;
    relay.set_blackhole(false);
    let participant = wait_event(&session, |e| match e {
        SessionEvent::Resumed { participant, .. } => Some(participant),
        SessionEvent::ResumeFailed { participant } => {
            panic!("resume refused after a long call: fresh participant {participant}")
        }
        _ => None,
    })
    .await;
    assert_eq!(participant, me, "the same participant");
    session.ping().await.expect("the resumed session answers");
    session.close().await;
    gw.stop().await;
}
