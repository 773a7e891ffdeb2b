//! WebSocket signaling (`GET /ws/rtc?token=…`): a legacy WebRTC peer's control session, in the
//! same rooms as native clients. The media side (an offer with real tracks) is exercised by
//! headless Chromium in `tests/browser/demo.rs`; these tests cover the signaling and its bad input.

use bytes::Bytes;
use strait_client::SessionEvent;
use strait_protocol::{
    ControlMessage, ErrorCode, Join, Leave, Ping, Publish, RequestId, RoomId, SdpType,
    SessionDescription,
};
use strait_tests::fixture::{TestGateway, WAIT, opus_spec};
use strait_tests::ws::WsClient;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_websocket_participant_and_a_native_one_see_each_other() {
    let gw = TestGateway::start().await;
    let native = gw.native("hall", "native").await;
    let mut ws = WsClient::hello(&gw, &gw.token("hall", "legacy")).await;
    ws.join("hall").await;
    ws.expect(|m| match m {
        ControlMessage::ParticipantJoined(p) if p.identity == "native" => Some(()),
        _ => None,
    })
    .await;

    // The native side hears of the WebSocket participant like of anyone else.
    let legacy = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(p) = native
                .participants()
                .into_iter()
                .find(|p| p.identity == "legacy")
            {
                return p.participant;
            }
            native.next_event().await.expect("session open");
        }
    })
    .await
    .expect("the native client sees the websocket participant");

    // Tracks published later are announced.
    let published = native.publish(opus_spec()).await.expect("publish");
    let announced = ws
        .expect(|m| match m {
            ControlMessage::TrackPublished(t) => Some(t.track),
            _ => None,
        })
        .await;
    assert_eq!(announced, published.track);

    // Liveness, and a request this path does not take (media is negotiated by SDP).
    ws.send(&ControlMessage::Ping(Ping { nonce: 42 })).await;
    ws.expect(|m| match m {
        ControlMessage::Pong(p) if p.nonce == 42 => Some(()),
        _ => None,
    })
    .await;
    let publish = ControlMessage::Publish(Publish {
        request: RequestId(7),
        kind: strait_protocol::TrackKind::Audio,
        codec: opus_spec().codec,
        source: "microphone".into(),
        layers: vec![strait_protocol::Layer {
            media: strait_protocol::MediaId(1),
            max_bitrate: 0,
            width: 0,
            height: 0,
        }],
        muted: false,
    });
    ws.send(&publish).await;
    let refused = ws
        .expect(|m| match m {
            ControlMessage::Error(e) if e.request == Some(RequestId(7)) => Some(e.code),
            _ => None,
        })
        .await;
    assert_eq!(refused, ErrorCode::INVALID_REQUEST);

    // Leave: Ack, a normal close, and the room hears of it.
    ws.send(&ControlMessage::Leave(Leave {
        request: RequestId(9),
    }))
    .await;
    ws.expect(|m| matches!(m, ControlMessage::Ack(a) if a.request == RequestId(9)).then_some(()))
        .await;
    assert!(ws.next().await.is_none());
    assert_eq!(ws.closed.as_ref().map(|c| c.0), Some(1000));
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(SessionEvent::ParticipantLeft { participant, .. }) =
                native.next_event().await
                && participant == legacy
            {
                return;
            }
        }
    })
    .await
    .expect("the native client sees the websocket participant leave");
    gw.stop().await;
}

#[tokio::test]
async fn missing_expired_and_wrong_room_tokens_are_refused_in_words() {
    let gw = TestGateway::start().await;

    let mut none = WsClient::connect(&gw, None).await;
    let reason = none.expect_closed_with(ErrorCode::UNAUTHORIZED).await;
    assert!(reason.contains("token"), "{reason}");

    let mut expired = WsClient::connect(&gw, Some(&gw.expired_token("hall", "late"))).await;
    let error = expired
        .expect(|m| match m {
            ControlMessage::Error(e) => Some(e.clone()),
            _ => None,
        })
        .await;
    assert!(
        error.code == ErrorCode::TOKEN_EXPIRED || error.code == ErrorCode::UNAUTHORIZED,
        "{error:?}"
    );
    assert!(expired.next().await.is_none());

    let mut garbage = WsClient::connect(&gw, Some("not-a-jwt")).await;
    garbage.expect_closed_with(ErrorCode::UNAUTHORIZED).await;

    let mut elsewhere = WsClient::hello(&gw, &gw.token("hall", "visitor")).await;
    elsewhere
        .send(&ControlMessage::Join(Join {
            request: RequestId(1),
            room: RoomId("vault".into()),
            name: String::new(),
        }))
        .await;
    let reason = elsewhere.expect_closed_with(ErrorCode::FORBIDDEN).await;
    assert!(reason.contains("vault"), "{reason}");
    gw.stop().await;
}

#[tokio::test]
async fn bad_frames_close_only_their_own_session() {
    let gw = TestGateway::start().await;
    let mut bystander = WsClient::hello(&gw, &gw.token("hall", "bystander")).await;
    bystander.join("hall").await;

    // A known kind with a broken body.
    let mut broken = WsClient::hello(&gw, &gw.token("hall", "broken")).await;
    broken
        .send_raw(Message::Binary(Bytes::from_static(&[3, 2, 0xff, 0xff])))
        .await;
    broken
        .expect_closed_with(ErrorCode::PROTOCOL_VIOLATION)
        .await;

    // Two frames in one message.
    let mut doubled = WsClient::hello(&gw, &gw.token("hall", "doubled")).await;
    let mut two = Vec::new();
    for nonce in [1, 2] {
        strait_protocol::encode_frame(&ControlMessage::Ping(Ping { nonce }), usize::MAX, &mut two)
            .unwrap();
    }
    doubled.send_raw(Message::Binary(Bytes::from(two))).await;
    doubled
        .expect_closed_with(ErrorCode::PROTOCOL_VIOLATION)
        .await;

    // A length prefix over the limit (64 KiB by default): refused from the prefix.
    let mut large = WsClient::hello(&gw, &gw.token("hall", "large")).await;
    let mut frame = vec![0x80, 0x02, 0x00, 0x00]; // varint 131072
    frame.extend_from_slice(&[0; 64]);
    large.send_raw(Message::Binary(Bytes::from(frame))).await;
    large.expect_closed_with(ErrorCode::FRAME_TOO_LARGE).await;

    // Text is not used.
    let mut text = WsClient::hello(&gw, &gw.token("hall", "text")).await;
    text.send_raw(Message::text("{\"Ping\":{}}")).await;
    text.expect_closed_with(ErrorCode::PROTOCOL_VIOLATION).await;

    // A ClientHello: the token is in the URL on this path.
    let mut hello = WsClient::hello(&gw, &gw.token("hall", "hello")).await;
    hello
        .send(&ControlMessage::ClientHello(
            strait_tests::fixture::client_hello(gw.token("hall", "hello"), None),
        ))
        .await;
    hello
        .expect_closed_with(ErrorCode::PROTOCOL_VIOLATION)
        .await;

    // The bystander is unaffected.
    bystander
        .send(&ControlMessage::Ping(Ping { nonce: 5 }))
        .await;
    bystander
        .expect(|m| matches!(m, ControlMessage::Pong(p) if p.nonce == 5).then_some(()))
        .await;
    bystander.leave().await;
    gw.stop().await;
}

#[tokio::test]
async fn offers_before_joining_or_without_sdp_are_refused() {
    let gw = TestGateway::start().await;
    let offer = |sdp: &str| {
        ControlMessage::Sdp(SessionDescription {
            kind: SdpType::Offer,
            sdp: sdp.into(),
        })
    };

    let mut early = WsClient::hello(&gw, &gw.token("hall", "early")).await;
    early
        .send(&offer(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n",
        ))
        .await;
    let reason = early.expect_closed_with(ErrorCode::INVALID_REQUEST).await;
    assert!(reason.contains("join"), "{reason}");

    let mut garbage = WsClient::hello(&gw, &gw.token("hall", "garbage")).await;
    garbage.join("hall").await;
    garbage.send(&offer("this is not sdp")).await;
    let reason = garbage.expect_closed_with(ErrorCode::INVALID_REQUEST).await;
    assert!(reason.contains("offer refused"), "{reason}");

    let mut silent = WsClient::hello(&gw, &gw.token("hall", "silent")).await;
    silent.join("hall").await;
    silent
        .send(&offer(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n",
        ))
        .await;
    silent.expect_closed_with(ErrorCode::INVALID_REQUEST).await;

    let mut answer = WsClient::hello(&gw, &gw.token("hall", "answerer")).await;
    answer
        .send(&ControlMessage::Sdp(SessionDescription {
            kind: SdpType::Answer,
            sdp: "v=0\r\n".into(),
        }))
        .await;
    answer
        .expect_closed_with(ErrorCode::PROTOCOL_VIOLATION)
        .await;
    assert_eq!(gw.metric("strait_webrtc_peers").await, 0.0);
    gw.stop().await;
}

#[tokio::test]
async fn websocket_sessions_count_against_the_session_limits() {
    let gw = TestGateway::start_with(|config| config.limits.max_sessions_per_ip = 1).await;
    let mut first = WsClient::hello(&gw, &gw.token("hall", "first")).await;
    let url = format!(
        "ws://{}/ws/rtc?token={}",
        gw.http_addr(),
        gw.token("hall", "second")
    );
    let refused = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("an answer in time");
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503);
        }
        other => panic!("expected a 503 refusal, got {:?}", other.map(|_| ())),
    }
    // The slot comes back when the first session ends: wait for the admission's own signal
    // that a session ended.
    first
        .send(&ControlMessage::Leave(Leave {
            request: RequestId(1),
        }))
        .await;
    while first.next().await.is_some() {}
    tokio::time::timeout(WAIT, gw.gateway.sessions_at_most(0))
        .await
        .expect("the slot is released when the first session ends");
    let url = format!(
        "ws://{}/ws/rtc?token={}",
        gw.http_addr(),
        gw.token("hall", "second")
    );
    let (second, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("an answer in time")
        .expect("the freed slot admits the second session");
    drop(second);
    gw.stop().await;
}

#[tokio::test]
async fn a_session_that_does_not_join_or_goes_quiet_is_closed() {
    let gw = TestGateway::start_with(|config| {
        config.session.hello_timeout = std::time::Duration::from_millis(300);
        config.quic.keep_alive = std::time::Duration::from_millis(200);
        config.quic.idle_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    let mut idle = WsClient::hello(&gw, &gw.token("hall", "idle")).await;
    let reason = idle.expect_closed_with(ErrorCode::TIMEOUT).await;
    assert!(reason.contains("Join"), "{reason}");

    // A joined client that stops reading (and so answering pings) is closed at the idle timeout,
    // and leaves its room.
    let observer = gw.native("hall", "observer").await;
    let mut quiet = WsClient::hello(&gw, &gw.token("hall", "quiet")).await;
    quiet.join("hall").await;
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(SessionEvent::ParticipantLeft { reason, .. }) = observer.next_event().await
            {
                return reason;
            }
        }
    })
    .await
    .expect("the quiet participant leaves at the idle timeout");
    drop(quiet);
    observer.close().await;
    gw.stop().await;
}

/// Opens `/ws/rtc` with `origin` as the `Origin` header (none when `None`): the upgrade's status.
async fn upgrade_status(gw: &TestGateway, origin: Option<&str>) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!(
        "ws://{}/ws/rtc?token={}",
        gw.http_addr(),
        gw.token("origins", "o")
    );
    let mut request = url.into_client_request().expect("request");
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().expect("header value"));
    }
    let answer = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("an answer in time");
    match answer {
        Ok((socket, response)) => {
            drop(socket);
            response.status().as_u16()
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("no HTTP answer: {e}"),
    }
}

#[tokio::test]
async fn a_foreign_origin_is_refused_before_the_upgrade() {
    let gw = TestGateway::start_with(|config| {
        config.webtransport.allowed_origins = vec!["https://app.example".into()];
    })
    .await;
    assert_eq!(upgrade_status(&gw, Some("https://evil.example")).await, 403);
    assert_eq!(upgrade_status(&gw, Some("null")).await, 403);
    assert_eq!(upgrade_status(&gw, Some("https://app.example")).await, 101);
    // Non-browser clients send no Origin; `allow_missing_origin` (on by default) lets them in.
    assert_eq!(upgrade_status(&gw, None).await, 101);
    assert!(
        gw.metric_where("strait_refusals_total", "reason=\"origin\"")
            .await
            >= 2.0
    );
    gw.stop().await;

    // With no list, only the gateway's own HTTP origins; without `allow_missing_origin`, an
    // Origin is required.
    let gw = TestGateway::start_with(|config| {
        config.webtransport.allowed_origins = Vec::new();
        config.webtransport.allow_missing_origin = false;
    })
    .await;
    let own = format!("http://localhost:{}", gw.http_addr().port());
    assert_eq!(upgrade_status(&gw, Some(&own)).await, 101);
    assert_eq!(upgrade_status(&gw, Some("http://localhost:1")).await, 403);
    assert_eq!(upgrade_status(&gw, None).await, 403);
    gw.stop().await;
}
