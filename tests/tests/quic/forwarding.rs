//! Media from every publisher reaches every subscriber, rewritten per leg, over both transports.

use std::collections::{BTreeSet, HashMap};

use std::time::Duration;

use strait_client::{Client, Session, SessionEvent, Transport};
use strait_protocol::TrackId;
use strait_tests::fixture::{TestGateway, WAIT, opus_spec, rtp};
use strait_tests::relay::{Impairment, RelayConfig, UdpRelay};

/// Waits until `session` has seen `TrackPublished` for `count` tracks other than its own.
async fn wait_for_tracks(session: &Session, count: usize) -> Vec<TrackId> {
    tokio::time::timeout(WAIT, async {
        loop {
            let tracks: Vec<TrackId> = session
                .tracks()
                .into_iter()
                .filter(|t| t.participant != session.participant())
                .map(|t| t.track)
                .collect();
            if tracks.len() >= count {
                return tracks;
            }
            match session.next_event().await {
                Some(SessionEvent::TrackPublished(_)) | Some(_) => {}
                None => panic!("session ended while waiting for tracks"),
            }
        }
    })
    .await
    .expect("tracks announced in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_native_and_one_webtransport_client_exchange_media() {
    exchange_media(TestGateway::start().await).await;
}

/// The same with each congestion controller the gateway offers besides its default (Cubic).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_flows_with_bbr_and_new_reno_too() {
    use strait_gateway::config::CongestionController;
    for controller in [CongestionController::Bbr, CongestionController::NewReno] {
        exchange_media(
            TestGateway::start_with(|c| c.quic.congestion_controller = controller).await,
        )
        .await;
    }
}

async fn exchange_media(gw: TestGateway) {
    let alice = gw.native("forward", "alice").await;
    let bob = gw.native("forward", "bob").await;
    let carol = gw.webtransport("forward", "carol").await;
    let sessions = [&alice, &bob, &carol];

    // Everyone publishes one audio track.
    let mut published = Vec::new();
    for s in sessions {
        published.push(s.publish(opus_spec()).await.expect("publish"));
    }
    // Everyone subscribes to the two others.
    let mut subs: Vec<HashMap<u32, TrackId>> = Vec::new();
    for s in sessions {
        let tracks = wait_for_tracks(s, 2).await;
        let mut by_media = HashMap::new();
        for track in tracks {
            let sub = s.subscribe(track, None).await.expect("subscribe");
            by_media.insert(sub.media.0, track);
        }
        subs.push(by_media);
    }

    // Each publisher sends 50 packets with its own SSRC and sequence numbers.
    const N: u32 = 50;
    for (i, s) in sessions.iter().enumerate() {
        let media = published[i].media[0];
        let ssrc = 0x1000 + i as u32;
        for n in 0..N {
            let packet = rtp::opus(1000 + n as u16, n * 960, ssrc, n);
            s.send_rtp(media, &packet).expect("send rtp");
        }
    }

    // Every subscriber receives all 2 × 50 packets, with the subscription's SSRC, sequence
    // numbers rewritten and consecutive, and the payload intact.
    for (i, s) in sessions.iter().enumerate() {
        let mut got: HashMap<u32, Vec<Vec<u8>>> = HashMap::new();
        tokio::time::timeout(WAIT, async {
            while got.values().map(Vec::len).sum::<usize>() < 2 * N as usize {
                let packet = s.recv_media().await.expect("media");
                got.entry(packet.media.0)
                    .or_default()
                    .push(packet.rtp.to_vec());
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "subscriber {i} got {:?} packets",
                got.values().map(Vec::len).collect::<Vec<_>>()
            )
        });
        assert_eq!(got.len(), 2, "subscriber {i} receives two tracks");
        for (media, packets) in &got {
            let track = subs[i][media];
            let sub = s.subscription(track).expect("subscription");
            let indices: BTreeSet<u32> = packets.iter().map(|p| rtp::index_at(p, 12)).collect();
            assert_eq!(indices.len(), N as usize, "every packet arrives once");
            for p in packets {
                assert_eq!(
                    rtp::ssrc(p),
                    sub.ssrc,
                    "SSRC rewritten to the subscription's"
                );
            }
            rtp::assert_consecutive_in_publisher_order(packets, 12);
            // The publisher's own numbering (1000…) is not what the subscriber sees.
            assert!(
                packets
                    .iter()
                    .all(|p| rtp::ssrc(p) < 0x1000 || rtp::ssrc(p) > 0x1002)
            );
        }
    }
    for s in sessions {
        s.close().await;
    }
    gw.stop().await;
}

/// A burst larger than a subscriber's datagram send buffer: quinn displaces the oldest queued
/// datagrams (newest wins), and the subscriber's session counts them as `send_buffer_full` —
/// never more than were queued for it and not received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_displaced_from_a_full_send_buffer_are_counted() {
    const BURST: u32 = 1000;
    let gw = TestGateway::start_with(|c| {
        c.quic.datagram_send_buffer = 16 * 1024;
        c.limits.media_burst = BURST;
    })
    .await;
    let publisher = gw.native("burst", "publisher").await;
    // The subscriber is 200 ms away (a delaying relay): the gateway's congestion window lets
    // only a few datagrams be in flight toward it, so a burst must fill its send buffer.
    let mut relay = RelayConfig::new(gw.quic_addr());
    relay.to_client = Impairment {
        delay: Duration::from_millis(200),
        ..Impairment::none()
    };
    let relay = UdpRelay::start(relay).await.expect("relay");
    let config = gw.client_config_to(
        relay.local_addr(),
        Transport::Quic,
        gw.token("burst", "subscriber"),
    );
    let subscriber = tokio::time::timeout(WAIT, Client::connect(config))
        .await
        .expect("connect in time")
        .expect("connect");
    subscriber.join("burst").await.expect("join");
    let track = publisher.publish(opus_spec()).await.expect("publish");
    let tracks = wait_for_tracks(&subscriber, 1).await;
    subscriber
        .subscribe(tracks[0], None)
        .await
        .expect("subscribe");

    // In chunks of 10 KB, within the datagram buffers on the publisher's path (16 KiB here),
    // each sent once the gateway has received the previous one: the whole burst reaches it.
    let payload = [0x55u8; 1000];
    for n in 0..BURST {
        if n > 0 && n % 10 == 0 {
            gw.wait_metric("strait_packets_in_total", |v| v >= f64::from(n))
                .await;
        }
        let seq = u16::try_from(n).unwrap();
        let packet = rtp::packet(111, false, seq, n * 960, 7, &payload);
        publisher
            .send_rtp(track.media[0], &packet)
            .expect("send rtp");
    }
    let displaced = gw
        .wait_metric_where("strait_drops_total", "reason=\"send_buffer_full\"", |v| {
            v >= 1.0
        })
        .await;
    let mut received = 0u32;
    while subscriber.try_recv_media().is_some() {
        received += 1;
    }
    let queued = gw.metric("strait_packets_out_total").await;
    assert!(
        displaced <= queued - f64::from(received),
        "{displaced} counted displaced, {queued} queued, {received} received"
    );
    publisher.close().await;
    subscriber.close().await;
    gw.stop().await;
}

/// A native subscriber's connection is estimated (the worker receives its estimate) with each
/// packet's acknowledgement read (`quic.ack_feedback`, the default) and without: then the
/// session reads its connection's counters alone, though the congestion controller is still
/// tapped for `quic.loss_tolerance`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribers_link_is_estimated_with_and_without_per_packet_feedback() {
    for feedback in [true, false] {
        let gw = TestGateway::start_with(|c| c.quic.ack_feedback = feedback).await;
        let alice = gw.native("estimate", "alice").await;
        let bob = gw.native("estimate", "bob").await;
        let published = alice.publish(opus_spec()).await.expect("publish");
        for track in wait_for_tracks(&bob, 1).await {
            bob.subscribe(track, None).await.expect("subscribe");
        }
        // Alice sends at an audio rhythm (her own pacing, bounded) until the worker has an
        // estimate of bob's link.
        let media = published.media[0];
        let sending = async {
            for n in 0..1000u32 {
                let packet = rtp::opus(n as u16, n * 960, 0x5e, n);
                alice.send_rtp(media, &packet).expect("send rtp");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::select! {
            _ = gw.wait_metric_where(
                "strait_subscriber_estimate_bits_per_second_count",
                "transport=\"quic\"",
                |v| v > 0.0,
            ) => {}
            () = sending => panic!("no estimate of bob's link after 20 s (ack_feedback = {feedback})"),
        }
        alice.close().await;
        bob.close().await;
        gw.stop().await;
    }
}
