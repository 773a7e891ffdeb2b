//! Requests and answers on the control stream: correlation, refusals, events, skipped and
//! malformed frames.

use strait_client::protocol::*;
use strait_client::{Client, ClientError, LayerSpec, PublishSpec, Session, SessionEvent};

use crate::support::*;

/// A session that said hello as participant 1; the server side is returned for scripting.
pub(crate) async fn connected(server: &TestServer) -> (Session, Peer) {
    let (session, peer) = tokio::join!(Client::connect(server.config()), async {
        let mut peer = server.accept().await;
        peer.hello(1, "rt-1", false).await;
        peer
    });
    (session.unwrap(), peer)
}

/// A session that joined `room` as participant 1.
pub(crate) async fn joined_session(server: &TestServer) -> (Session, Peer) {
    let (session, mut peer) = connected(server).await;
    let (joined, _) = tokio::join!(session.join("room"), peer.join(1));
    joined.unwrap();
    (session, peer)
}

pub(crate) fn video(layers: usize) -> PublishSpec {
    PublishSpec {
        kind: TrackKind::Video,
        codec: vp8(),
        source: "camera".into(),
        layers: vec![LayerSpec::default(); layers],
        muted: false,
    }
}

#[tokio::test]
async fn join_publish_and_subscribe_round_trip() {
    let server = TestServer::start();
    let (session, mut peer) = connected(&server).await;

    // Join: the answer, then the room as events.
    let (room, ()) = tokio::join!(session.join("room"), async {
        let join = peer.join(1).await;
        assert_eq!(join.room.0, "room");
        peer.send(&[
            ControlMessage::ParticipantJoined(participant_info(1)), // oneself: ignored
            ControlMessage::ParticipantJoined(participant_info(2)),
            ControlMessage::TrackPublished(track_info(200, 2)),
        ])
        .await;
    });
    assert_eq!(room.unwrap().room.0, "room");
    let who = event(&session, |e| match e {
        SessionEvent::ParticipantJoined(p) => Some(p.participant),
        _ => None,
    })
    .await;
    assert_eq!(who, ParticipantId(2));
    let track = event(&session, |e| match e {
        SessionEvent::TrackPublished(t) => Some(t.track),
        _ => None,
    })
    .await;
    assert_eq!(track, TrackId(200));
    assert_eq!(session.participants().len(), 1);
    assert_eq!(session.tracks()[0].track, TrackId(200));

    // Publish and subscribe at once; the server answers the second first.
    let (published, subscribed, ()) = tokio::join!(
        session.publish(video(2)),
        session.subscribe(TrackId(200), Some(1)),
        async {
            let ControlMessage::Publish(publish) = peer.recv().await else {
                panic!("expected Publish");
            };
            let ControlMessage::Subscribe(subscribe) = peer.recv().await else {
                panic!("expected Subscribe");
            };
            assert_ne!(publish.request, subscribe.request);
            assert_eq!(publish.layers.len(), 2);
            assert_ne!(publish.layers[0].media, publish.layers[1].media);
            assert_eq!(subscribe.max_layer, Some(1));
            peer.send(&[
                ControlMessage::Subscribed(Subscribed {
                    request: subscribe.request,
                    track: subscribe.track,
                    media: MediaId(5),
                    ssrc: 0xfeed,
                    layer: 0,
                }),
                ControlMessage::Published(Published {
                    request: publish.request,
                    track: TrackId(100),
                }),
            ])
            .await;
        }
    );
    let published = published.unwrap();
    assert_eq!(published.track, TrackId(100));
    assert_eq!(published.media.len(), 2);
    let subscription = subscribed.unwrap();
    assert_eq!(
        (subscription.media, subscription.ssrc),
        (MediaId(5), 0xfeed)
    );
    assert_eq!(session.subscription(TrackId(200)), Some(subscription));
    assert_eq!(session.published()[0].media, published.media);

    // Requests answered with `Ack`.
    let (muted, ()) = tokio::join!(session.set_mute(TrackId(100), true), async {
        let ControlMessage::SetMute(m) = peer.recv().await else {
            panic!("expected SetMute");
        };
        assert!(m.muted);
        peer.send(&[ControlMessage::Ack(Ack { request: m.request })])
            .await;
    });
    muted.unwrap();
    assert!(session.published()[0].muted);
    let (layer, ()) = tokio::join!(session.set_layer_preference(TrackId(200), None), async {
        let ControlMessage::SetLayerPreference(m) = peer.recv().await else {
            panic!("expected SetLayerPreference");
        };
        peer.send(&[ControlMessage::Ack(Ack { request: m.request })])
            .await;
    });
    layer.unwrap();
    let (unsubscribed, ()) = tokio::join!(session.unsubscribe(TrackId(200)), async {
        let ControlMessage::Unsubscribe(m) = peer.recv().await else {
            panic!("expected Unsubscribe");
        };
        peer.send(&[ControlMessage::Ack(Ack { request: m.request })])
            .await;
    });
    unsubscribed.unwrap();
    assert_eq!(session.subscription(TrackId(200)), None);
}

#[tokio::test]
async fn an_error_answer_is_rejected_with_its_code_and_the_session_goes_on() {
    let server = TestServer::start();
    let (session, mut peer) = joined_session(&server).await;
    let (result, ()) = tokio::join!(session.subscribe(TrackId(9), None), async {
        let ControlMessage::Subscribe(s) = peer.recv().await else {
            panic!("expected Subscribe");
        };
        peer.send(&[ControlMessage::Error(ErrorMessage {
            request: Some(s.request),
            code: ErrorCode::FORBIDDEN,
            reason: "no subscribe grant".into(),
        })])
        .await;
    });
    match result {
        Err(ClientError::Rejected { code, reason }) => {
            assert_eq!(code, ErrorCode::FORBIDDEN);
            assert_eq!(reason, "no subscribe grant");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    // An unknown code is carried as a number.
    let (result, ()) = tokio::join!(session.unpublish(TrackId(3)), async {
        let ControlMessage::Unpublish(u) = peer.recv().await else {
            panic!("expected Unpublish");
        };
        peer.send(&[ControlMessage::Error(ErrorMessage {
            request: Some(u.request),
            code: ErrorCode(0x4242),
            reason: String::new(),
        })])
        .await;
    });
    assert!(matches!(
        result,
        Err(ClientError::Rejected {
            code: ErrorCode(0x4242),
            ..
        })
    ));
    assert!(!session.is_closed());
}

#[tokio::test]
async fn an_unknown_message_kind_is_skipped() {
    let server = TestServer::start();
    let (session, mut peer) = connected(&server).await;
    let (room, ()) = tokio::join!(session.join("room"), async {
        let ControlMessage::Join(join) = peer.recv().await else {
            panic!("expected Join");
        };
        // Kind 30 (unknown in version 1) with a body, then kind 300 (a two-byte varint).
        peer.send_raw(&[0x04, 30, 0x01, 0x02, 0x03]).await;
        peer.send_raw(&[0x04, 0xfb, 0x2c, 0x01, 0x00]).await;
        peer.send(&[joined(join.request, "room", 1)]).await;
    });
    room.unwrap();
    assert_eq!(session.stats().unknown_messages, 2);
    assert!(!session.is_closed());
}

#[tokio::test]
async fn a_malformed_frame_closes_the_session_with_a_protocol_error() {
    let server = TestServer::start();
    let (session, mut peer) = connected(&server).await;
    let (result, ()) = tokio::join!(session.join("room"), async {
        let _ = peer.recv().await;
        // `Joined` (kind 3) cut short after its kind.
        peer.send_raw(&[0x01, 0x03]).await;
    });
    assert!(
        matches!(result, Err(ClientError::Protocol(DecodeError::Truncated))),
        "got {result:?}"
    );
    assert!(matches!(session.closed().await, ClientError::Protocol(_)));
    let close = within("the close", peer.conn.closed()).await;
    match close {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(
                c.error_code.into_inner(),
                u64::from(ErrorCode::PROTOCOL_VIOLATION.0)
            );
        }
        other => panic!("expected an application close, got {other}"),
    }
    // The last event says why.
    let closed = event(&session, |e| match e {
        SessionEvent::Closed(error) => Some(error),
        _ => None,
    })
    .await;
    assert!(matches!(closed, ClientError::Protocol(_)));
}

#[tokio::test]
async fn server_events_and_keyframe_requests_become_session_events() {
    let server = TestServer::start();
    let (session, mut peer) = joined_session(&server).await;
    let (published, ()) = tokio::join!(session.publish(video(3)), async {
        let ControlMessage::Publish(p) = peer.recv().await else {
            panic!("expected Publish");
        };
        peer.send(&[ControlMessage::Published(Published {
            request: p.request,
            track: TrackId(100),
        })])
        .await;
    });
    let published = published.unwrap();

    peer.send(&[
        ControlMessage::KeyframeRequest(KeyframeRequest {
            track: TrackId(100),
            layer: None,
        }),
        ControlMessage::Ping(Ping { nonce: 77 }),
    ])
    .await;
    let requested = event(&session, |e| match e {
        SessionEvent::KeyframeRequested { track, layer } => Some((track, layer)),
        _ => None,
    })
    .await;
    assert_eq!(requested, (TrackId(100), None));
    // The control-stream ping is answered.
    assert_eq!(peer.recv().await, ControlMessage::Pong(Pong { nonce: 77 }));

    // A keyframe request by datagram names a media id: the session maps it to track and layer.
    peer.send_control_datagram(
        strait_client::protocol::datagram::DatagramControl::KeyframeRequest {
            media: published.media[2],
        },
    );
    let requested = event(&session, |e| match e {
        SessionEvent::KeyframeRequested { track, layer } => Some((track, layer)),
        _ => None,
    })
    .await;
    assert_eq!(requested, (TrackId(100), Some(2)));

    // Leaving: `Ack`, then the session ends cleanly.
    let (left, ()) = tokio::join!(session.leave(), async {
        let ControlMessage::Leave(l) = peer.recv().await else {
            panic!("expected Leave");
        };
        peer.send(&[ControlMessage::Ack(Ack { request: l.request })])
            .await;
    });
    left.unwrap();
    assert!(matches!(
        session.closed().await,
        ClientError::Closed {
            code: ErrorCode::NONE,
            ..
        }
    ));
}

#[tokio::test]
async fn room_changes_wake_a_waiter_without_taking_events() {
    let server = TestServer::start();
    let (session, mut peer) = joined_session(&server).await;
    let mut changes = session.room_changes();
    assert!(session.tracks().is_empty());

    peer.send(&[ControlMessage::TrackPublished(track_info(300, 2))])
        .await;
    tokio::time::timeout(WAIT, changes.changed())
        .await
        .expect("the room changes in time")
        .expect("the session is open");
    assert_eq!(session.tracks()[0].track, TrackId(300));
    // The event is still there for whoever reads events.
    let track = event(&session, |e| match e {
        SessionEvent::TrackPublished(t) => Some(t.track),
        _ => None,
    })
    .await;
    assert_eq!(track, TrackId(300));
}
