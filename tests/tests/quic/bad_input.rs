//! Bad input from one client: each gets the typed answer the protocol names, the session is
//! closed only where the protocol says so (sections 2, 5, 7.1 and 9), and nobody else notices.
//!
//! The misbehaving client is a [`RawSession`]: a bare QUIC connection that writes whatever bytes
//! the test gives it. Sessions that must stay open prove it by answering a `Ping` afterwards.

use std::sync::Arc;
use std::time::Duration;

use strait_client::{Client, ClientError};
use strait_protocol::{
    ClientHello, ControlMessage, ErrorCode, ErrorMessage, Join, Layer, MediaId, Publish, RequestId,
    RoomId, Subscribe, TrackId, TrackKind,
};
use strait_tests::fixture::{
    RawSession, Streamer, TestGateway, WAIT, client_hello, opus_spec, rtp, wait_for_track,
};
use tokio::time::Instant;

/// Waits for the answer to request `request` (an answer or an `Error` with that id).
async fn answer(raw: &mut RawSession, request: u32) -> ControlMessage {
    let (m, _) = raw
        .expect_where(|m| (m.request() == Some(RequestId(request))).then(|| m.clone()))
        .await;
    m
}

/// Asserts that `message` is an `Error` answering `request` with `code`.
#[track_caller]
fn assert_refused(message: &ControlMessage, request: u32, code: ErrorCode) {
    match message {
        ControlMessage::Error(ErrorMessage {
            request: Some(r),
            code: c,
            ..
        }) if *r == RequestId(request) => assert_eq!(*c, code, "{message:?}"),
        other => panic!("expected Error {code:?} for request {request}, got {other:?}"),
    }
}

/// Asserts the end of a session closed by the gateway: the close code is `code`, and a
/// session-level `Error` that arrived before it (a close may overtake it, section 7.1) says the
/// same.
#[track_caller]
/// The session was closed with `code`, and the `Error` that explains it arrived first (the
/// gateway waits for its acknowledgement before it closes).
fn assert_closed_with(messages: &[ControlMessage], close: ErrorCode, code: ErrorCode) {
    assert_eq!(close, code, "close code; messages before it: {messages:?}");
    let explained = messages
        .iter()
        .any(|m| matches!(m, ControlMessage::Error(e) if e.request.is_none() && e.code == code));
    assert!(
        explained,
        "an Error with {code:?} precedes the close: {messages:?}"
    );
}

fn publish(request: u32, media: u32) -> ControlMessage {
    let spec = opus_spec();
    ControlMessage::Publish(Publish {
        request: RequestId(request),
        kind: TrackKind::Audio,
        codec: spec.codec,
        source: spec.source,
        layers: vec![Layer {
            media: MediaId(media),
            max_bitrate: 0,
            width: 0,
            height: 0,
        }],
        muted: false,
    })
}

fn subscribe(request: u32, track: TrackId) -> ControlMessage {
    ControlMessage::Subscribe(Subscribe {
        request: RequestId(request),
        track,
        max_layer: None,
        priority: None,
    })
}

fn join(request: u32, room: &str) -> ControlMessage {
    ControlMessage::Join(Join {
        request: RequestId(request),
        room: RoomId(room.into()),
        name: String::new(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_frame_closes_that_session_and_no_other() {
    let gw = TestGateway::start().await;
    let publisher = Arc::new(gw.native("bad", "pub").await);
    let subscriber = gw.native("bad", "sub").await;
    let published = publisher.publish(opus_spec()).await.expect("publish");
    let track = wait_for_track(&subscriber).await;
    let sub = subscriber
        .subscribe(track.track, None)
        .await
        .expect("subscribe");
    let streamer = Streamer::start(
        publisher.clone(),
        published.media[0],
        0xbad,
        0,
        2000,
        Duration::from_millis(5),
    );

    let (mut bad, hello) = RawSession::hello(&gw, "bad", "mallory").await;
    bad.join(1, "bad").await;
    gw.wait_metric("strait_participants", |n| n == 3.0).await;
    let errors_before = gw.metric("strait_protocol_errors_total").await;

    // A frame whose body starts with 0xff: not a message kind (section 5).
    bad.send_raw(&[0x01, 0xff]).await;
    let (messages, code) = bad.drain_until_closed().await;
    assert_closed_with(&messages, code, ErrorCode::PROTOCOL_VIOLATION);
    gw.wait_metric("strait_protocol_errors_total", |n| n > errors_before)
        .await;

    // It leaves the room at once: a violation cannot be resumed (section 7.9), so keeping its
    // participant for the grace period would only show the others a ghost.
    let left = tokio::time::timeout(WAIT, async {
        loop {
            match subscriber.next_event().await {
                Some(strait_client::SessionEvent::ParticipantLeft {
                    participant,
                    reason,
                }) if participant == hello.participant => {
                    return reason;
                }
                Some(_) => {}
                None => panic!("the subscriber's session ended"),
            }
        }
    })
    .await
    .expect("the others see the offender leave");
    eprintln!("bad input: the offender left the room with reason {left:?}");
    gw.wait_metric("strait_participants", |n| n == 2.0).await;

    // The others go on: media keeps flowing and both answer pings.
    let closed_at = Instant::now();
    let mut after = 0;
    tokio::time::timeout(WAIT, async {
        while after < 50 {
            let packet = subscriber.recv_media().await.expect("media");
            assert_eq!(packet.media, sub.media);
            if packet.received_at > closed_at {
                after += 1;
            }
        }
    })
    .await
    .expect("media keeps flowing to the subscriber");
    subscriber.ping().await.expect("the subscriber answers");
    publisher.ping().await.expect("the publisher answers");
    let report = streamer.stop().await;
    assert_eq!(report.failed + report.not_connected, 0, "{report:?}");
    publisher.close().await;
    subscriber.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_closes_with_frame_too_large() {
    let gw = TestGateway::start().await;
    let (mut bystander, _) = RawSession::hello(&gw, "big", "bystander").await;
    bystander.join(1, "big").await;

    // After the hello: a length prefix of 65 537 (a 4-byte varint), no body.
    let (mut raw, _) = RawSession::hello(&gw, "big", "big").await;
    raw.send_raw(&[0x80, 0x01, 0x00, 0x01]).await;
    let (messages, code) = raw.drain_until_closed().await;
    assert_closed_with(&messages, code, ErrorCode::FRAME_TOO_LARGE);

    // As the very first frame, in place of the ClientHello: the same rule (section 2).
    let mut first = RawSession::connect(&gw).await;
    first.send_raw(&[0x80, 0x01, 0x00, 0x01]).await;
    let (messages, code) = first.drain_until_closed().await;
    assert_closed_with(&messages, code, ErrorCode::FRAME_TOO_LARGE);

    bystander.ping(1).await;
    bystander.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_message_kinds_are_skipped() {
    let gw = TestGateway::start().await;

    // Before the hello: skipped too.
    let mut raw = RawSession::connect(&gw).await;
    raw.send_raw(&[0x02, 0x1e, 0x00]).await;
    let hello = raw
        .send_hello(client_hello(gw.token("unknown", "u"), None))
        .await;
    assert!(!hello.resumed);
    raw.join(1, "unknown").await;

    // Kind 30 (the first this version does not know), kind 250, and kind 300 (a multi-byte
    // bincode varint, `fb 2c 01`) with trailing bytes.
    raw.send_raw(&[0x02, 0x1e, 0x00]).await;
    raw.send_raw(&[0x01, 0xfa]).await;
    raw.send_raw(&[0x05, 0xfb, 0x2c, 0x01, 0x07, 0x07]).await;
    let skipped = raw.ping(7).await;
    assert!(
        skipped.is_empty(),
        "nothing answers an unknown kind: {skipped:?}"
    );
    assert!(raw.is_open());
    raw.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_out_of_order_are_refused_and_the_session_goes_on() {
    let gw = TestGateway::start().await;
    let (mut raw, _) = RawSession::hello(&gw, "order", "o").await;

    raw.send_frame(&publish(1, 1)).await;
    assert_refused(&answer(&mut raw, 1).await, 1, ErrorCode::INVALID_REQUEST);
    raw.send_frame(&subscribe(2, TrackId(12_345))).await;
    assert_refused(&answer(&mut raw, 2).await, 2, ErrorCode::INVALID_REQUEST);

    // Now in order: join, then a second join is refused.
    raw.join(3, "order").await;
    raw.send_frame(&join(4, "order")).await;
    assert_refused(&answer(&mut raw, 4).await, 4, ErrorCode::INVALID_REQUEST);
    raw.send_frame(&publish(5, 1)).await;
    assert!(matches!(
        answer(&mut raw, 5).await,
        ControlMessage::Published(_)
    ));
    raw.ping(1).await;
    assert!(raw.is_open());
    raw.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_and_expired_access_tokens_close_the_session() {
    let gw = TestGateway::start().await;
    let (mut bystander, _) = RawSession::hello(&gw, "tokens", "bystander").await;

    let cases = [
        ("garbage".to_owned(), ErrorCode::UNAUTHORIZED),
        (
            // A valid token with its signature altered.
            format!("{}x", gw.token("tokens", "t")),
            ErrorCode::UNAUTHORIZED,
        ),
        (gw.expired_token("tokens", "t"), ErrorCode::TOKEN_EXPIRED),
    ];
    for (token, expected) in cases {
        let mut raw = RawSession::connect(&gw).await;
        raw.send_frame(&ControlMessage::ClientHello(client_hello(
            token.clone(),
            None,
        )))
        .await;
        let (messages, code) = raw.drain_until_closed().await;
        assert_closed_with(&messages, code, expected);

        // The SDK reports the same code as a typed refusal.
        let mut config = gw.client_config(strait_client::Transport::Quic, token);
        config.auto_resume = false;
        match tokio::time::timeout(WAIT, Client::connect(config))
            .await
            .expect("answer in time")
        {
            Err(ClientError::Rejected { code, .. }) => assert_eq!(code, expected),
            other => panic!("expected a rejection with {expected:?}, got {other:?}"),
        }
    }
    bystander.ping(1).await;
    bystander.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_another_room_is_forbidden() {
    let gw = TestGateway::start().await;
    let (mut raw, _) = RawSession::hello(&gw, "room-a", "r").await;
    raw.send_frame(&join(1, "room-b")).await;
    assert_refused(&answer(&mut raw, 1).await, 1, ErrorCode::FORBIDDEN);
    raw.ping(1).await;
    raw.join(2, "room-a").await;
    assert!(raw.is_open());
    raw.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tracks_and_ones_own_tracks_cannot_be_subscribed() {
    let gw = TestGateway::start().await;
    let (mut raw, _) = RawSession::hello(&gw, "tracks", "t").await;
    raw.join(1, "tracks").await;
    raw.send_frame(&publish(2, 1)).await;
    let own = match answer(&mut raw, 2).await {
        ControlMessage::Published(p) => p.track,
        other => panic!("expected Published, got {other:?}"),
    };

    raw.send_frame(&subscribe(3, TrackId(own.0 ^ 0x5555))).await;
    assert_refused(&answer(&mut raw, 3).await, 3, ErrorCode::NOT_FOUND);
    raw.send_frame(&subscribe(4, own)).await;
    assert_refused(&answer(&mut raw, 4).await, 4, ErrorCode::INVALID_REQUEST);
    raw.ping(1).await;
    assert!(raw.is_open());
    raw.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_the_gateway_cannot_use_are_dropped_and_counted() {
    let gw = TestGateway::start().await;
    let (mut raw, _) = RawSession::hello(&gw, "dgram", "d").await;
    raw.join(1, "dgram").await;
    let unknown = "reason=\"unknown_media\"";
    let malformed = "reason=\"malformed_datagram\"";
    let unknown_before = gw.metric_where("strait_drops_total", unknown).await;
    let malformed_before = gw.metric_where("strait_drops_total", malformed).await;

    // Valid RTP on a media id this session never published.
    for n in 0..10u16 {
        let mut datagram = vec![0x00, 42];
        datagram.extend_from_slice(&rtp::opus(n, 0, 1, u32::from(n)));
        raw.send_datagram(&datagram);
    }
    gw.wait_metric_where("strait_drops_total", unknown, |n| {
        n >= unknown_before + 10.0
    })
    .await;

    // An unknown kind byte, media that is not RTP, an undecodable control datagram and a control
    // datagram of a kind from a newer version (section 8: dropped and counted).
    for datagram in [
        &[0x07, 1, 2][..],
        &[0x00, 1, 0x80],
        &[0x01, 0x00],
        &[0x01, 0x40],
    ] {
        raw.send_datagram(datagram);
    }
    gw.wait_metric_where("strait_drops_total", malformed, |n| {
        n >= malformed_before + 4.0
    })
    .await;

    raw.ping(1).await;
    assert!(raw.is_open());
    raw.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_control_messages_is_rate_limited_without_closing() {
    let (per_second, burst) = (2, 5);
    let gw = TestGateway::start_with(|c| {
        c.limits.max_messages_per_second = per_second;
        c.limits.message_burst = burst;
    })
    .await;
    let (mut raw, hello) = RawSession::hello(&gw, "flood", "f").await;
    assert_eq!(hello.limits.max_messages_per_second, per_second);
    raw.join(1, "flood").await;
    let limited_before = gw.metric("strait_rate_limited_total").await;

    // 30 requests in one write, each answered exactly once: NOT_FOUND while the bucket lasts
    // (the join took one of its 5 tokens), RATE_LIMITED after.
    const FLOOD: u32 = 30;
    let mut wire = Vec::new();
    for request in 100..100 + FLOOD {
        strait_protocol::encode_frame(&subscribe(request, TrackId(999)), usize::MAX, &mut wire)
            .expect("encode");
    }
    raw.send_raw(&wire).await;
    // Refusals come from the session at once, answers from the media worker: the order of
    // answers is not the order of requests (they are matched by request id, section 7.2).
    let mut answers = std::collections::BTreeMap::new();
    while answers.len() < FLOOD as usize {
        match raw.expect_message().await {
            ControlMessage::Error(ErrorMessage {
                request: Some(r),
                code,
                ..
            }) if (100..100 + FLOOD).contains(&r.0) => {
                assert!(
                    answers.insert(r.0, code).is_none(),
                    "one answer per request"
                );
            }
            other => panic!("expected answers to the flood, got {other:?}"),
        }
    }
    let count = |code| answers.values().filter(|c| **c == code).count() as u32;
    let (limited, not_found) = (count(ErrorCode::RATE_LIMITED), count(ErrorCode::NOT_FOUND));
    assert_eq!(
        limited + not_found,
        FLOOD,
        "only those two answers: {answers:?}"
    );
    eprintln!("rate limit: {not_found} served, {limited} refused of {FLOOD}");
    assert!(not_found <= burst, "at most the burst is served");
    assert!(
        limited >= FLOOD - burst - 1,
        "the rest is refused ({limited})"
    );
    gw.wait_metric("strait_rate_limited_total", |n| {
        n >= limited_before + f64::from(limited)
    })
    .await;

    // Not closed: once the bucket refills (2 per second), requests are served again. Every
    // request gets an answer (NOT_FOUND when served, RATE_LIMITED when refused); a refused ping
    // would get none, so requests are what probes the bucket.
    let answered = tokio::time::timeout(WAIT, async {
        for request in 1000.. {
            raw.send_frame(&subscribe(request, TrackId(999))).await;
            match raw.next_message().await.expect("session open") {
                ControlMessage::Error(e) if e.code == ErrorCode::NOT_FOUND => return request,
                ControlMessage::Error(e) if e.code == ErrorCode::RATE_LIMITED => {
                    // Refused: wait for the bucket (a token every 500 ms) before asking again.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        unreachable!("an unbounded range")
    })
    .await
    .expect("a request is served once the bucket refills");
    eprintln!("rate limit: request {answered} served after the refill");
    assert!(raw.is_open());
    raw.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_client_hello_is_a_protocol_violation() {
    let gw = TestGateway::start().await;
    let (mut raw, _) = RawSession::hello(&gw, "twice", "t").await;
    raw.join(1, "twice").await;
    raw.send_frame(&ControlMessage::ClientHello(client_hello(
        gw.token("twice", "t"),
        None,
    )))
    .await;
    let (messages, code) = raw.drain_until_closed().await;
    assert_closed_with(&messages, code, ErrorCode::PROTOCOL_VIOLATION);
    gw.wait_metric("strait_participants", |n| n == 0.0).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_hello_in_time_closes_with_timeout() {
    let hello_timeout = Duration::from_millis(300);
    let gw = TestGateway::start_with(|c| c.session.hello_timeout = hello_timeout).await;

    // Connected, control stream not even opened.
    let started = Instant::now();
    let silent = RawSession::connect(&gw).await;
    assert_eq!(silent.closed().await, ErrorCode::TIMEOUT);
    assert!(started.elapsed() >= hello_timeout);

    // Control stream opened with half a frame.
    let mut slow = RawSession::connect(&gw).await;
    slow.send_raw(&[0x20, 0x00]).await;
    let (messages, code) = slow.drain_until_closed().await;
    assert_closed_with(&messages, code, ErrorCode::TIMEOUT);
    eprintln!(
        "hello timeout: both closed {:?} after the first connected",
        started.elapsed()
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_protocol_version_is_unsupported() {
    let gw = TestGateway::start().await;
    let mut raw = RawSession::connect(&gw).await;
    raw.send_frame(&ControlMessage::ClientHello(ClientHello {
        version: 2,
        ..client_hello(gw.token("version", "v"), None)
    }))
    .await;
    let (messages, code) = raw.drain_until_closed().await;
    assert_closed_with(&messages, code, ErrorCode::UNSUPPORTED_VERSION);
    assert!(
        messages
            .iter()
            .all(|m| !matches!(m, ControlMessage::ServerHello(_))),
        "no session: {messages:?}"
    );
    gw.stop().await;
}
