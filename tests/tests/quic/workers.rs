//! Media workers: rooms are placed on the least loaded worker, participants follow their room,
//! and each worker has its own WebRTC port.

use std::time::SystemTime;

use strait_client::{Client, Transport};
use strait_gateway::auth::{AccessClaims, Grants};
use strait_tests::bridge::{VideoCodec, receive_vp8, subscribe_to_video_of};
use strait_tests::fixture::{TestGateway, WAIT, opus_spec, rtp};
use strait_tests::sdp::candidate_ports;

async fn two_workers() -> TestGateway {
    TestGateway::start_with(|c| c.media.workers = Some(2)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_go_to_the_least_loaded_worker_and_each_worker_has_its_own_webrtc_port() {
    let gw = two_workers().await;
    assert_eq!(gw.webrtc_addrs().len(), 2);
    assert_ne!(gw.webrtc_addrs()[0], gw.webrtc_addrs()[1]);

    // Two native participants in room a: both on worker 0. Room b goes to worker 1, the least
    // loaded; room c to worker 1 too (1 participant against 2).
    let mut sessions = Vec::new();
    for (room, identity) in [("a", "a1"), ("a", "a2"), ("b", "b1"), ("c", "c1")] {
        sessions.push(gw.native(room, identity).await);
    }
    for (worker, rooms, participants) in [(0, 1.0, 2.0), (1, 2.0, 2.0)] {
        let label = format!("worker=\"{worker}\"");
        gw.wait_metric_where("strait_worker_rooms", &label, |v| v == rooms)
            .await;
        gw.wait_metric_where("strait_worker_participants", &label, |v| v == participants)
            .await;
    }
    // The node's gauges are the sums.
    assert_eq!(gw.metric("strait_rooms").await, 3.0);
    assert_eq!(gw.metric("strait_participants").await, 4.0);

    // WebRTC peers of room a get worker 0's port, those of room b worker 1's.
    let in_a = gw.whip_publisher("a", "camera-a").await;
    let in_b = gw.whip_publisher("b", "camera-b").await;
    for (answer, worker) in [(&in_a.answer, 0), (&in_b.answer, 1)] {
        let ports = candidate_ports(answer);
        assert!(!ports.is_empty(), "{answer}");
        assert!(
            ports.iter().all(|p| *p == gw.webrtc_addrs()[worker].port()),
            "{ports:?} against {:?}",
            gw.webrtc_addrs()
        );
    }
    in_a.close().await;
    in_b.close().await;
    for session in sessions {
        session.leave().await.expect("leave");
    }
    gw.stop().await;
}

/// A token for any room seats its participant on the least loaded worker; at its `Join` it
/// moves to the worker of its room, where it exchanges media with the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_seated_elsewhere_moves_to_its_rooms_worker_at_its_join() {
    let gw = two_workers().await;
    let alice = gw.native("far", "alice").await;
    gw.wait_metric_where("strait_worker_participants", "worker=\"0\"", |v| v == 1.0)
        .await;

    let now = SystemTime::now();
    let mut claims = AccessClaims::new("admin", "unused", Grants::participant(), now, WAIT * 6);
    claims.room = None;
    claims.grants.admin = true;
    let token = gw.gateway.mint(&claims).expect("mint");
    let admin = tokio::time::timeout(
        WAIT,
        Client::connect(gw.client_config(Transport::Quic, token)),
    )
    .await
    .expect("connect in time")
    .expect("connect");
    admin.join("far").await.expect("join");
    gw.wait_metric_where("strait_worker_participants", "worker=\"0\"", |v| v == 2.0)
        .await;
    assert_eq!(
        gw.metric_where("strait_worker_participants", "worker=\"1\"")
            .await,
        0.0
    );

    // Media both ways.
    let from_alice = alice.publish(opus_spec()).await.expect("publish");
    let from_admin = admin.publish(opus_spec()).await.expect("publish");
    let track_of = |session: &strait_client::Session| {
        let me = session.participant();
        session
            .tracks()
            .into_iter()
            .find(|t| t.participant != me)
            .map(|t| t.track)
    };
    for (session, other) in [(&alice, "admin"), (&admin, "alice")] {
        tokio::time::timeout(WAIT, async {
            while track_of(session).is_none() {
                if session.next_event().await.is_none() {
                    panic!("the session ended before {other}'s track was announced");
                }
            }
        })
        .await
        .expect("the other's track is announced");
    }
    let to_admin = admin
        .subscribe(track_of(&admin).unwrap(), None)
        .await
        .expect("subscribe");
    let to_alice = alice
        .subscribe(track_of(&alice).unwrap(), None)
        .await
        .expect("subscribe");
    for n in 0..5u32 {
        let seq = u16::try_from(n).unwrap();
        alice
            .send_rtp(from_alice.media[0], &rtp::opus(seq, n * 960, 1, n))
            .unwrap();
        admin
            .send_rtp(from_admin.media[0], &rtp::opus(seq, n * 960, 2, n))
            .unwrap();
    }
    for (session, media) in [(&admin, to_admin.media), (&alice, to_alice.media)] {
        let packet = tokio::time::timeout(WAIT, session.recv_media())
            .await
            .expect("media in time")
            .expect("media");
        assert_eq!(packet.media, media);
    }
    // Leaving frees the seats.
    admin.leave().await.expect("leave");
    alice.leave().await.expect("leave");
    gw.wait_metric_where("strait_worker_participants", "worker=\"0\"", |v| v == 0.0)
        .await;
    gw.stop().await;
}

/// With `webrtc.shared_port`, every worker's socket is on one port and the kernel spreads the
/// peers' datagrams over them by address, not by room: each datagram that lands on a worker
/// not holding its peer is handed to the one that does. Six WHIP publishers in two rooms (one
/// per worker) each get the one port and each reaches its room's native viewer. (Which peers
/// the kernel sends to the wrong worker is up to its hash; with six, at least one is, but for
/// a chance of 1 in 64.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shared_webrtc_port_reaches_the_peers_of_every_worker() {
    let gw = TestGateway::start_with(|c| {
        c.media.workers = Some(2);
        c.webrtc.shared_port = true;
    })
    .await;
    let port = gw.webrtc_addrs()[0].port();
    assert!(gw.webrtc_addrs().iter().all(|a| a.port() == port));

    let viewers = [
        gw.native("a", "viewer-a").await,
        gw.native("b", "viewer-b").await,
    ];
    let mut publishers = Vec::new();
    for i in 0..6 {
        let room = ["a", "b"][i % 2];
        let publisher = gw.whip_publisher(room, &format!("camera-{i}")).await;
        assert!(
            candidate_ports(&publisher.answer)
                .iter()
                .all(|p| *p == port),
            "{}",
            publisher.answer
        );
        let viewer = &viewers[i % 2];
        let (_, _, sub) =
            subscribe_to_video_of(viewer, &format!("camera-{i}"), VideoCodec::Vp8).await;
        receive_vp8(viewer, &sub, 5).await;
        publishers.push(publisher);
    }
    assert_eq!(
        gw.metric_where("strait_drops_total", "reason=\"webrtc_unknown_source\"")
            .await,
        0.0
    );
    for publisher in publishers {
        publisher.close().await;
    }
    for viewer in viewers {
        viewer.leave().await.expect("leave");
    }
    gw.stop().await;
}

/// A room beyond `media.room_spread_at` participants on its home spreads to the other worker:
/// a native publisher and a subscriber on the home, two subscribers (one over WebTransport) on
/// the satellite. Every subscriber gets every packet once, in order, on its own SSRC with
/// consecutive sequence numbers, and a keyframe request from the satellite's side reaches the
/// publisher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_spread_over_two_workers_reaches_every_subscriber_once_in_order() {
    let gw = TestGateway::start_with(|c| {
        c.media.workers = Some(2);
        c.media.room_spread_at = 2;
    })
    .await;
    let publisher = gw.native("big", "publisher").await;
    let near = gw.native("big", "near").await;
    let far = gw.native("big", "far").await;
    let far_wt = gw.webtransport("big", "far-wt").await;
    for (worker, participants) in [(0, 2.0), (1, 2.0)] {
        gw.wait_metric_where(
            "strait_worker_participants",
            &format!("worker=\"{worker}\""),
            |v| v >= participants,
        )
        .await;
    }
    let track = publisher
        .publish(strait_tests::bridge::VideoCodec::Vp8.spec(96))
        .await
        .expect("publish");
    let mut subscriptions = Vec::new();
    for session in [&near, &far, &far_wt] {
        let me = session.participant();
        let remote = tokio::time::timeout(WAIT, async {
            loop {
                if let Some(t) = session
                    .tracks()
                    .into_iter()
                    .find(|t| t.participant != me && t.participant == publisher.participant())
                {
                    return t.track;
                }
                session.next_event().await.expect("session open");
            }
        })
        .await
        .expect("the publisher's track is announced on both workers");
        assert_eq!(remote, track.track, "one track id on every worker");
        let sub = session.subscribe(remote, None).await.expect("subscribe");
        subscriptions.push((remote, sub));
    }

    // A keyframe first, then 99 more packets.
    const N: u32 = 100;
    for n in 0..N {
        let packet = rtp::vp8(u16::try_from(n).unwrap(), n * 3000, 0x0b16, n == 0, n);
        publisher.send_rtp(track.media[0], &packet).expect("send");
    }
    for (session, (_, sub)) in [&near, &far, &far_wt].into_iter().zip(&subscriptions) {
        let mut got = Vec::new();
        tokio::time::timeout(WAIT, async {
            while got.len() < N as usize {
                let packet = session.recv_media().await.expect("media");
                if packet.media == sub.media {
                    got.push(packet.rtp.to_vec());
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{} of {N} packets arrived", got.len()));
        for packet in &got {
            assert_eq!(rtp::ssrc(packet), sub.ssrc);
        }
        let indices: std::collections::BTreeSet<u32> =
            got.iter().map(|p| rtp::index_at(p, 16)).collect();
        assert_eq!(indices.len(), N as usize, "every packet once");
        rtp::assert_consecutive_in_publisher_order(&got, 16);
    }

    // A keyframe request of a subscriber on the satellite reaches the publisher on the home.
    far.request_keyframe(subscriptions[1].0, None)
        .await
        .expect("keyframe request");
    tokio::time::timeout(WAIT, async {
        loop {
            match publisher.next_event().await {
                Some(strait_client::SessionEvent::KeyframeRequested { .. }) => return,
                Some(_) => {}
                None => panic!("the publisher's session ended"),
            }
        }
    })
    .await
    .expect("the publisher is asked for a keyframe");

    for session in [publisher, near, far, far_wt] {
        session.leave().await.expect("leave");
    }
    gw.stop().await;
}
