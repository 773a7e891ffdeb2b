//! The wire surface of the server's bandwidth allocation: subscription priorities, paused and
//! resumed subscriptions, padding datagrams that probe the link.

use bytes::Bytes;
use strait_client::protocol::datagram::{self, Datagram, DatagramControl};
use strait_client::protocol::*;
use strait_client::{Session, SessionEvent, SubscribeOptions, Subscription};

use crate::requests::joined_session;
use crate::support::*;

/// Subscribes to `track` with `options`; the server answers `Subscribed` then `then`. Returns
/// the subscription and the `Subscribe` the server read.
async fn subscribe(
    session: &Session,
    peer: &mut Peer,
    track: u64,
    options: SubscribeOptions,
    then: &[ControlMessage],
) -> (Subscription, Subscribe) {
    let (subscribed, sent) = tokio::join!(session.subscribe_with(TrackId(track), options), async {
        let ControlMessage::Subscribe(s) = peer.recv().await else {
            panic!("expected Subscribe");
        };
        let mut answer = vec![ControlMessage::Subscribed(Subscribed {
            request: s.request,
            track: s.track,
            media: MediaId(5),
            ssrc: 0xfeed,
            layer: 0,
        })];
        answer.extend_from_slice(then);
        peer.send(&answer).await;
        s
    });
    (subscribed.unwrap(), sent)
}

#[tokio::test]
async fn a_priority_is_sent_only_when_the_application_names_one() {
    let server = TestServer::start();
    let (session, mut peer) = joined_session(&server).await;

    let (_, plain) = subscribe(&session, &mut peer, 200, SubscribeOptions::default(), &[]).await;
    assert_eq!((plain.max_layer, plain.priority), (None, None));
    let screen = SubscribeOptions {
        max_layer: Some(1),
        priority: Some(SCREEN_PRIORITY),
    };
    let (_, named) = subscribe(&session, &mut peer, 201, screen, &[]).await;
    assert_eq!((named.max_layer, named.priority), (Some(1), Some(200)));

    // `SetLayerPreference` replaces both; the plain call returns to the server's default.
    let lowest = SubscribeOptions {
        max_layer: None,
        priority: Some(0),
    };
    for (options, call_with) in [(lowest, true), (SubscribeOptions::default(), false)] {
        let call = async {
            if call_with {
                session
                    .set_layer_preference_with(TrackId(201), options)
                    .await
            } else {
                session.set_layer_preference(TrackId(201), None).await
            }
        };
        let (answer, sent) = tokio::join!(call, async {
            let ControlMessage::SetLayerPreference(l) = peer.recv().await else {
                panic!("expected SetLayerPreference");
            };
            peer.send(&[ControlMessage::Ack(Ack { request: l.request })])
                .await;
            l
        });
        answer.unwrap();
        assert_eq!(
            (sent.track, sent.max_layer, sent.priority),
            (TrackId(201), options.max_layer, options.priority)
        );
    }
}

#[tokio::test]
async fn a_paused_subscription_is_reported_kept_and_resumed() {
    let server = TestServer::start();
    let (session, mut peer) = joined_session(&server).await;
    // Paused from its start: `Subscribed`, then `TrackPaused`.
    let paused = ControlMessage::TrackPaused(TrackPaused {
        track: TrackId(200),
        reason: PauseReason::BANDWIDTH,
    });
    let (subscription, _) = subscribe(
        &session,
        &mut peer,
        200,
        SubscribeOptions::default(),
        &[paused],
    )
    .await;
    assert_eq!(subscription.paused, None, "as `Subscribed` said");
    let reason = event(&session, |e| match e {
        SessionEvent::TrackPaused { track, reason } => Some((track, reason)),
        _ => None,
    })
    .await;
    assert_eq!(reason, (TrackId(200), PauseReason::BANDWIDTH));
    let kept = session
        .subscription(TrackId(200))
        .expect("still subscribed");
    assert_eq!(kept.paused, Some(PauseReason::BANDWIDTH));
    assert_eq!(kept.media, subscription.media);

    // A reason this build does not know is carried as a number.
    peer.send(&[
        ControlMessage::TrackResumed(TrackResumed {
            track: TrackId(200),
            reason: PauseReason::BANDWIDTH,
        }),
        ControlMessage::TrackPaused(TrackPaused {
            track: TrackId(200),
            reason: PauseReason(9),
        }),
    ])
    .await;
    let resumed = event(&session, |e| match e {
        SessionEvent::TrackResumed { track, reason } => Some((track, reason)),
        _ => None,
    })
    .await;
    assert_eq!(resumed, (TrackId(200), PauseReason::BANDWIDTH));
    let again = event(&session, |e| match e {
        SessionEvent::TrackPaused { reason, .. } => Some(reason),
        _ => None,
    })
    .await;
    assert_eq!(again, PauseReason(9));
    assert_eq!(
        session.subscription(TrackId(200)).unwrap().paused,
        Some(PauseReason(9))
    );
    let stats = session.stats();
    assert_eq!(stats.unknown_messages, 0);
    assert!(!session.is_closed());
}

#[tokio::test]
async fn padding_datagrams_are_dropped_without_counting_them_as_invalid() {
    let server = TestServer::start();
    let (session, peer) = joined_session(&server).await;
    for len in [1, 200, 1000] {
        let mut padding = Vec::new();
        datagram::write_padding(&mut padding, len);
        peer.conn.send_datagram(Bytes::from(padding)).unwrap();
    }
    // A kind nobody knows still counts.
    peer.conn
        .send_datagram(Bytes::from_static(&[0x7f, 1, 2]))
        .unwrap();
    // The client answers this ping after handling the datagrams sent before it.
    peer.send_control_datagram(DatagramControl::Ping {
        seq: 3,
        timestamp_us: 1,
    });
    loop {
        let d = peer.recv_datagram().await;
        if let Ok(Datagram::Control(DatagramControl::Pong { seq: 3, .. })) =
            datagram::parse_datagram(&d)
        {
            break;
        }
    }
    let stats = session.stats();
    assert_eq!(
        (
            stats.padding_received,
            stats.datagrams_invalid,
            stats.media_received
        ),
        (3, 1, 0)
    );
    assert!(session.try_recv_media().is_none());
}
