//! Taking a session back with its resume token: after a server failure, after a real network
//! loss, on request, and when the server goes away; and what a refused token means.

use std::time::Duration;

use strait_client::protocol::*;
use strait_client::{Client, ClientError, Session, SessionEvent};

use crate::requests::video;
use crate::support::*;

/// Participant 7 in `room`, publishing track 100 and subscribed to track 200 (media 5).
async fn established(
    server: &TestServer,
    config: strait_client::ClientConfig,
) -> (Session, Peer, Vec<MediaId>) {
    let (session, mut peer) = tokio::join!(Client::connect(config), async {
        let mut peer = server.accept().await;
        peer.hello(7, "rt-1", false).await;
        peer
    });
    let session = session.unwrap();
    let (joined, _) = tokio::join!(session.join("room"), peer.join(7));
    joined.unwrap();
    let (published, ()) = tokio::join!(session.publish(video(1)), async {
        let ControlMessage::Publish(p) = peer.recv().await else {
            panic!("expected Publish");
        };
        peer.send(&[ControlMessage::Published(Published {
            request: p.request,
            track: TrackId(100),
        })])
        .await;
    });
    let (subscribed, ()) = tokio::join!(session.subscribe(TrackId(200), None), async {
        let ControlMessage::Subscribe(s) = peer.recv().await else {
            panic!("expected Subscribe");
        };
        peer.send(&[subscribed(s.request)]).await;
    });
    subscribed.unwrap();
    (session, peer, published.unwrap().media)
}

fn subscribed(request: RequestId) -> ControlMessage {
    ControlMessage::Subscribed(Subscribed {
        request,
        track: TrackId(200),
        media: MediaId(5),
        ssrc: 0xfeed,
        layer: 0,
    })
}

/// Accepts the reconnection, checks it presents `token`, and honours it with the snapshot.
async fn honour_resume(server: &TestServer, token: &str, next_token: &str) -> Peer {
    let mut peer = server.accept().await;
    let ControlMessage::ClientHello(hello) = peer.recv().await else {
        panic!("expected ClientHello");
    };
    assert_eq!(hello.token, "test-token");
    assert_eq!(
        hello.resume.as_ref().map(|t| t.0.as_bytes()),
        Some(token.as_bytes()),
        "the resume token must be presented byte for byte"
    );
    peer.send(&[
        server_hello(7, next_token, true),
        joined(RequestId::UNSOLICITED, "room", 7),
        ControlMessage::ParticipantJoined(participant_info(8)),
        ControlMessage::TrackPublished(track_info(200, 8)),
        subscribed(RequestId::UNSOLICITED),
    ])
    .await;
    peer
}

async fn resumed(session: &Session) -> (ParticipantId, u32) {
    event(session, |e| match e {
        SessionEvent::Resumed {
            participant,
            attempts,
            ..
        } => Some((participant, attempts)),
        SessionEvent::ResumeFailed { .. } => panic!("resume refused"),
        _ => None,
    })
    .await
}

/// After a resume: same participant, media ids and subscription; media flows on the new
/// connection.
async fn check_continues(session: &Session, peer: &Peer, media: &[MediaId]) {
    assert_eq!(session.participant(), ParticipantId(7));
    let sub = event(session, |e| match e {
        SessionEvent::Subscribed(s) => Some(s),
        _ => None,
    })
    .await;
    assert_eq!((sub.media, sub.ssrc), (MediaId(5), 0xfeed));
    assert_eq!(session.subscription(TrackId(200)), Some(sub));
    assert_eq!(session.published()[0].media, media);
    assert_eq!(session.room().unwrap().room.0, "room");

    session.send_rtp(media[0], &rtp(42, 10)).unwrap();
    let (got, packet) = peer.recv_media().await;
    assert_eq!(got, media[0]);
    assert_eq!(packet[3], 42);
    peer.send_media(MediaId(5), &rtp(43, 10));
    let packet = within("media", session.recv_media()).await.unwrap();
    assert_eq!((packet.media, packet.rtp[3]), (MediaId(5), 43));
}

#[tokio::test]
async fn a_session_resumes_after_the_server_fails() {
    let server = TestServer::start();
    let (session, peer, media) = established(&server, server.config()).await;

    // "INTERNAL: the server failed; the client may retry."
    peer.conn.close(ErrorCode::INTERNAL.0.into(), b"crashed");
    let lost = event(&session, |e| match e {
        SessionEvent::ConnectionLost { reason } => Some(reason),
        _ => None,
    })
    .await;
    assert!(lost.contains("crashed"), "{lost}");

    let peer = honour_resume(&server, "rt-1", "rt-2").await;
    let (participant, attempts) = resumed(&session).await;
    assert_eq!(participant, ParticipantId(7));
    assert!(attempts >= 1);
    check_continues(&session, &peer, &media).await;
    let stats = session.stats();
    assert_eq!((stats.resumes, stats.resume_failures), (1, 0));

    // The next resume presents the newest token.
    peer.conn.close(ErrorCode::INTERNAL.0.into(), b"again");
    let _peer = honour_resume(&server, "rt-2", "rt-3").await;
    resumed(&session).await;
}

#[tokio::test]
async fn a_request_in_flight_fails_when_the_connection_is_lost() {
    let server = TestServer::start();
    let (session, mut peer, _media) = established(&server, server.config()).await;
    let (result, ()) = tokio::join!(session.unsubscribe(TrackId(200)), async {
        let ControlMessage::Unsubscribe(_) = peer.recv().await else {
            panic!("expected Unsubscribe");
        };
        peer.conn.close(ErrorCode::INTERNAL.0.into(), b"crashed");
    });
    assert!(
        matches!(result, Err(ClientError::ConnectionLost(_))),
        "got {result:?}"
    );
    // Its effect is unknown to the client until the snapshot: the subscription is restored.
    let _peer = honour_resume(&server, "rt-1", "rt-2").await;
    resumed(&session).await;
    let sub = event(&session, |e| match e {
        SessionEvent::Subscribed(s) => Some(s),
        _ => None,
    })
    .await;
    assert_eq!(session.subscription(TrackId(200)), Some(sub));
}

#[tokio::test]
async fn a_session_resumes_after_a_network_loss() {
    let server = TestServer::start();
    let relay = Relay::start(server.addr).await;
    let mut config = config_for(relay.addr, server.cert_hash);
    config.keep_alive = Duration::from_millis(100);
    config.idle_timeout = Duration::from_millis(600);
    let (session, peer, media) = established(&server, config).await;

    // Everything is lost both ways until the client's idle timeout fires.
    relay.set_blocked(true);
    event(&session, |e| {
        matches!(e, SessionEvent::ConnectionLost { .. }).then_some(())
    })
    .await;
    assert!(matches!(
        session.send_rtp(media[0], &rtp(1, 10)),
        Err(strait_client::SendError::NotConnected)
    ));
    relay.set_blocked(false);

    let new_peer = honour_resume(&server, "rt-1", "rt-2").await;
    resumed(&session).await;
    check_continues(&session, &new_peer, &media).await;
    drop(peer);
}

#[tokio::test]
async fn resume_now_moves_to_a_new_connection_and_closes_the_old_one() {
    let server = TestServer::start();
    let (session, old, media) = established(&server, server.config()).await;
    session.resume_now().await.unwrap();
    let peer = honour_resume(&server, "rt-1", "rt-2").await;
    resumed(&session).await;
    check_continues(&session, &peer, &media).await;
    match within("the old connection to close", old.conn.closed()).await {
        quinn::ConnectionError::ApplicationClosed(c) => assert_eq!(c.error_code.into_inner(), 0),
        other => panic!("expected a clean close, got {other}"),
    }
}

#[tokio::test]
async fn go_away_makes_the_session_move() {
    let server = TestServer::start();
    let (session, mut old, media) = established(&server, server.config()).await;
    old.send(&[ControlMessage::GoAway(GoAway {
        code: ErrorCode::GOING_AWAY,
        redirect: None,
        cert_hashes: Vec::new(),
        token: None,
    })])
    .await;
    let code = event(&session, |e| match e {
        SessionEvent::GoAway { code, .. } => Some(code),
        _ => None,
    })
    .await;
    assert_eq!(code, ErrorCode::GOING_AWAY);
    let peer = honour_resume(&server, "rt-1", "rt-2").await;
    resumed(&session).await;
    check_continues(&session, &peer, &media).await;
}

#[tokio::test]
async fn a_refused_resume_starts_a_fresh_session_that_the_application_joins_without_rejoin() {
    let server = TestServer::start();
    let mut config = server.config();
    config.rejoin = false;
    let (session, peer, _media) = established(&server, config).await;
    peer.conn.close(ErrorCode::INTERNAL.0.into(), b"crashed");

    let mut peer = server.accept().await;
    let hello = peer.hello(70, "rt-new", false).await;
    assert!(hello.resume.is_some());
    let participant = event(&session, |e| match e {
        SessionEvent::ResumeFailed { participant } => Some(participant),
        SessionEvent::Resumed { .. } => panic!("not resumed"),
        _ => None,
    })
    .await;
    assert_eq!(participant, ParticipantId(70));
    assert_eq!(session.participant(), ParticipantId(70));
    assert!(session.room().is_none());
    assert!(session.published().is_empty());
    assert!(session.subscriptions().is_empty());
    assert_eq!(session.stats().resume_failures, 1);

    // The application joins again.
    let (joined, _) = tokio::join!(session.join("room"), peer.join(70));
    joined.unwrap();
    assert_eq!(session.stats().rejoins, 0);
}

#[tokio::test]
async fn a_refused_resume_rejoins_the_room_and_publishes_again_on_the_same_media_ids() {
    let server = TestServer::start();
    let (session, peer, media) = established(&server, server.config()).await;
    peer.conn.close(ErrorCode::INTERNAL.0.into(), b"crashed");

    // Another node, say, which knows nothing of the session: a fresh one.
    let mut peer = server.accept().await;
    peer.hello(70, "rt-new", false).await;
    event(&session, |e| {
        matches!(e, SessionEvent::ResumeFailed { .. }).then_some(())
    })
    .await;
    // The session joins its room again by itself, then announces its track again.
    let join = peer.join(70).await;
    assert_eq!(join.room.0, "room");
    assert_eq!(join.name, "tester");
    let ControlMessage::Publish(p) = peer.recv().await else {
        panic!("expected the track to be published again");
    };
    assert_eq!(
        p.layers.iter().map(|l| l.media).collect::<Vec<_>>(),
        media,
        "the same media ids"
    );
    assert_eq!(p.kind, TrackKind::Video);
    assert!(!p.muted);
    peer.send(&[ControlMessage::Published(Published {
        request: p.request,
        track: TrackId(101),
    })])
    .await;
    let (room, tracks) = event(&session, |e| match e {
        SessionEvent::Rejoined { room, tracks } => Some((room, tracks)),
        SessionEvent::RejoinFailed { error } => panic!("rejoin failed: {error}"),
        _ => None,
    })
    .await;
    assert_eq!(room.room.0, "room");
    assert_eq!(tracks, vec![(TrackId(100), TrackId(101))]);
    let published = session.published();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].track, TrackId(101));
    assert_eq!(published[0].media, media);
    assert!(
        session.subscriptions().is_empty(),
        "subscriptions are the application's"
    );
    assert_eq!(session.stats().rejoins, 1);

    // Media goes on on the same media id, over the new connection.
    let rtp = [0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9, 0xaa];
    session.send_rtp(media[0], &rtp).expect("sent");
    let datagram = within("the media datagram", peer.conn.read_datagram())
        .await
        .expect("a datagram");
    assert!(datagram.ends_with(&rtp[..]));
}

#[tokio::test]
async fn a_refused_join_after_a_refused_resume_is_reported() {
    let server = TestServer::start();
    let (session, peer, _media) = established(&server, server.config()).await;
    peer.conn.close(ErrorCode::INTERNAL.0.into(), b"crashed");
    let mut peer = server.accept().await;
    peer.hello(70, "rt-new", false).await;
    let ControlMessage::Join(join) = peer.recv().await else {
        panic!("expected Join");
    };
    peer.send(&[ControlMessage::Error(ErrorMessage {
        request: Some(join.request),
        code: ErrorCode::FORBIDDEN,
        reason: "not in this room".into(),
    })])
    .await;
    let error = event(&session, |e| match e {
        SessionEvent::RejoinFailed { error } => Some(error),
        SessionEvent::Rejoined { .. } => panic!("the join was refused"),
        _ => None,
    })
    .await;
    assert!(
        matches!(
            error,
            ClientError::Rejected {
                code: ErrorCode::FORBIDDEN,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(session.room().is_none());
    assert!(!session.is_closed(), "the session stays open");
}

#[tokio::test]
async fn a_clean_close_by_the_server_is_not_resumed() {
    let server = TestServer::start();
    let (session, peer, _media) = established(&server, server.config()).await;
    peer.conn.close(ErrorCode::REPLACED.0.into(), b"replaced");
    match within("the end", session.closed()).await {
        ClientError::Closed { code, reason } => {
            assert_eq!(code, ErrorCode::REPLACED);
            assert_eq!(reason, "replaced");
        }
        other => panic!("expected Closed, got {other:?}"),
    }
    assert_eq!(session.stats().reconnect_attempts, 0);
}
