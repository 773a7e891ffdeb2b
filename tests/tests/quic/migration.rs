//! A live session survives a change of the client's address (QUIC connection migration) with no
//! resume: a native client rebinding its socket mid-stream, as subscriber and as publisher, and a
//! WebTransport client behind a NAT (the relay) that moves to a new port and to a new IP.
//!
//! Each test streams Opus packets (one every 5 ms) across the move and checks that the gateway
//! counted a migration, that the session kept its participant without `ConnectionLost`, `Resumed`
//! or `ResumeFailed`, and that media kept arriving. The largest gap between arrivals around the
//! move is printed, not asserted: loopback timings say nothing about a real network.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use strait_client::{Client, Session, SessionEvent, Transport};
use strait_protocol::{MediaId, ParticipantId};
use strait_tests::fixture::{Streamer, TestGateway, WAIT, opus_spec, rtp, wait_for_track};
use strait_tests::relay::{Rebind, RelayConfig, UdpRelay};
use tokio::time::Instant;

/// The gateway's counter of client address changes on live connections.
const MIGRATIONS: &str = "strait_migrations_total";
/// One packet every 5 ms: 200 packets per second, about what an Opus stream sends in 20 ms
/// frames times four, so that a gap is measured to a few milliseconds.
const PERIOD: Duration = Duration::from_millis(5);
/// Packets received before the move.
const BEFORE_MOVE: usize = 100;
/// Packets received after the move before the stream counts as recovered.
const AFTER_MOVE: usize = 100;
/// Upper bound on the packets one stream sends (10 s at 5 ms): the loop is bounded.
const MAX_PACKETS: u32 = 2000;

/// A publisher and a subscriber of one Opus track.
struct Call {
    publisher: Arc<Session>,
    subscriber: Arc<Session>,
    /// The publisher's media id for the track.
    media_out: MediaId,
    /// The subscriber's media id and SSRC for the track.
    media_in: MediaId,
    ssrc_in: u32,
    /// The next packet index to send.
    next_index: u32,
}

impl Call {
    async fn set_up(publisher: Session, subscriber: Session) -> Call {
        let published = publisher.publish(opus_spec()).await.expect("publish");
        let track = wait_for_track(&subscriber).await;
        assert_eq!(track.track, published.track);
        let sub = subscriber
            .subscribe(track.track, None)
            .await
            .expect("subscribe");
        Call {
            publisher: Arc::new(publisher),
            subscriber: Arc::new(subscriber),
            media_out: published.media[0],
            media_in: sub.media,
            ssrc_in: sub.ssrc,
            next_index: 0,
        }
    }

    /// Streams across `move_path`, which runs once `BEFORE_MOVE` packets have arrived, until
    /// `AFTER_MOVE` more have arrived; waits until the gateway counts one more migration.
    /// Returns the largest inter-arrival gap from the move on.
    async fn stream_across(
        &mut self,
        gw: &TestGateway,
        what: &str,
        move_path: impl Future<Output = ()>,
    ) -> Duration {
        let migrations_before = gw.metric(MIGRATIONS).await;
        let first = self.next_index;
        let streamer = Streamer::start(
            self.publisher.clone(),
            self.media_out,
            0x5eed,
            first,
            MAX_PACKETS,
            PERIOD,
        );
        let mut arrivals: Vec<(u32, Instant)> = Vec::new();
        let mut moved_at = None;
        let mut move_path = Some(move_path);
        let received = tokio::time::timeout(WAIT, async {
            loop {
                let packet = self
                    .subscriber
                    .recv_media()
                    .await
                    .expect("the subscriber's session is alive");
                assert_eq!(
                    packet.media, self.media_in,
                    "media on the subscription's id"
                );
                assert_eq!(
                    rtp::ssrc(&packet.rtp),
                    self.ssrc_in,
                    "the subscription's SSRC"
                );
                let index = rtp::index_at(&packet.rtp, 12);
                if index < first {
                    // Sent by the previous stream of this call after it was told to stop.
                    continue;
                }
                arrivals.push((index, packet.received_at));
                if arrivals.len() == BEFORE_MOVE
                    && let Some(step) = move_path.take()
                {
                    step.await;
                    moved_at = Some(Instant::now());
                }
                if arrivals.len() >= BEFORE_MOVE + AFTER_MOVE {
                    return;
                }
            }
        })
        .await;
        let report = streamer.stop().await;
        self.next_index = first + report.sent + report.not_connected + report.failed;
        assert!(
            received.is_ok(),
            "{what}: media stopped after the move: {} packets arrived, streamer {report:?}",
            arrivals.len()
        );
        assert_eq!(
            report.not_connected, 0,
            "{what}: the publisher never lost its session"
        );
        assert_eq!(report.failed, 0, "{what}: every packet was accepted");
        let moved_at = moved_at.expect("the move ran");

        let migrations =
            gw.wait_metric(MIGRATIONS, |m| m > migrations_before).await - migrations_before;

        // The gap: the largest inter-arrival time from the last packet before the move on.
        let from = arrivals
            .iter()
            .rposition(|(_, at)| *at <= moved_at)
            .unwrap_or(0);
        let gap = arrivals[from..]
            .windows(2)
            .map(|w| w[1].1.saturating_duration_since(w[0].1))
            .max()
            .unwrap_or_default();
        let last = arrivals.iter().map(|(i, _)| *i).max().unwrap_or(first);
        let lost = (last - first + 1) as usize - arrivals.len();
        eprintln!(
            "migration ({what}): media gap {gap:?} around the move, {lost} of {} packets lost, \
             {migrations} migration(s) counted",
            last - first + 1
        );
        gap
    }
}

/// Asserts that nothing but room events happened to `session`: no loss, no resume, no close.
fn assert_survived(session: &Session, participant: ParticipantId, who: &str) {
    assert_eq!(
        session.participant(),
        participant,
        "{who} kept its participant"
    );
    assert!(!session.is_closed(), "{who}'s session is open");
    while let Some(event) = session.try_next_event() {
        assert!(
            !matches!(
                event,
                SessionEvent::ConnectionLost { .. }
                    | SessionEvent::Resumed { .. }
                    | SessionEvent::ResumeFailed { .. }
                    | SessionEvent::Closed(_)
            ),
            "{who} saw {event:?}: the move must not cost the session"
        );
    }
    assert_eq!(session.stats().resumes, 0, "{who} never resumed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_subscriber_rebinds_mid_stream_without_a_resume() {
    let gw = TestGateway::start().await;
    let publisher = gw.native("migrate-sub", "pub").await;
    let subscriber = gw.native("migrate-sub", "sub").await;
    let mut call = Call::set_up(publisher, subscriber).await;
    let ids = (call.publisher.participant(), call.subscriber.participant());
    let old = call.subscriber.local_address().expect("local address");

    let subscriber = call.subscriber.clone();
    call.stream_across(&gw, "native subscriber rebinds", async move {
        let new = subscriber.rebind().expect("rebind");
        assert_ne!(new.port(), old.port(), "a new local port");
    })
    .await;

    assert_survived(&call.subscriber, ids.1, "the subscriber");
    assert_survived(&call.publisher, ids.0, "the publisher");
    assert_eq!(call.subscriber.stats().rebinds, 1);
    call.publisher.close().await;
    call.subscriber.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_publisher_rebinds_mid_stream_without_a_resume() {
    let gw = TestGateway::start().await;
    let publisher = gw.native("migrate-pub", "pub").await;
    let subscriber = gw.native("migrate-pub", "sub").await;
    let mut call = Call::set_up(publisher, subscriber).await;
    let ids = (call.publisher.participant(), call.subscriber.participant());

    let publisher = call.publisher.clone();
    call.stream_across(&gw, "native publisher rebinds", async move {
        publisher.rebind().expect("rebind");
    })
    .await;

    assert_survived(&call.publisher, ids.0, "the publisher");
    assert_survived(&call.subscriber, ids.1, "the subscriber");
    call.publisher.close().await;
    call.subscriber.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webtransport_client_behind_a_rebinding_nat_keeps_its_session() {
    let gw = TestGateway::start().await;
    let relay = UdpRelay::start(RelayConfig::new(gw.quic_addr()))
        .await
        .expect("relay");
    let publisher = gw.native("migrate-wt", "pub").await;
    let config = gw.client_config_to(
        relay.local_addr(),
        Transport::WebTransport,
        gw.token("migrate-wt", "wt-sub"),
    );
    let subscriber = tokio::time::timeout(WAIT, Client::connect(config))
        .await
        .expect("connect in time")
        .expect("connect through the relay");
    subscriber.join("migrate-wt").await.expect("join");
    let mut call = Call::set_up(publisher, subscriber).await;
    let ids = (call.publisher.participant(), call.subscriber.participant());

    // NAT rebinding: same IP, new port.
    let before = relay.stats().upstream_addrs;
    let mut after = Vec::new();
    call.stream_across(&gw, "webtransport behind a NAT, new port", async {
        after = relay.rebind(Rebind::NewPort).await.expect("relay rebinds");
    })
    .await;
    assert_eq!(before.len(), 1, "one client behind the relay");
    assert_ne!(before, after, "the gateway sees a new address");
    assert_survived(&call.subscriber, ids.1, "the webtransport subscriber");

    // A new IP (127.0.0.2 is loopback on Linux, but not everywhere).
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    if std::net::UdpSocket::bind((ip, 0)).is_err() {
        eprintln!("migration: skipping the move to 127.0.0.2: it cannot be bound here");
    } else {
        call.stream_across(&gw, "webtransport behind a NAT, new IP", async {
            let addrs = relay.rebind(Rebind::To(ip)).await.expect("relay rebinds");
            assert!(addrs.iter().all(|a| a.ip() == ip), "moved to {ip}");
        })
        .await;
        assert_survived(&call.subscriber, ids.1, "the webtransport subscriber");
    }
    assert_survived(&call.publisher, ids.0, "the publisher");
    call.publisher.close().await;
    call.subscriber.close().await;
    gw.stop().await;
}

/// Waits for the room event `pick` accepts; an event that says the session was lost, resumed or
/// closed fails the test on the spot.
async fn room_event<T>(
    session: &Session,
    who: &str,
    pick: impl Fn(&SessionEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            let event = session.next_event().await.expect("the session is alive");
            assert!(
                !matches!(
                    event,
                    SessionEvent::ConnectionLost { .. }
                        | SessionEvent::Resumed { .. }
                        | SessionEvent::ResumeFailed { .. }
                        | SessionEvent::Closed(_)
                ),
                "{who} saw {event:?}: the move must not cost the session"
            );
            if let Some(t) = pick(&event) {
                return t;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{who}: the room event in time"))
}

/// A participant with no media either way (its session looks at the connection at the slow,
/// idle pace) is still seen moving, and room events still reach it on its new path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_native_participant_that_rebinds_is_counted_and_keeps_its_session() {
    let gw = TestGateway::start().await;
    let idle = gw.native("migrate-idle", "idle").await;
    let id = idle.participant();
    let old = idle.local_address().expect("local address");
    let before = gw.metric(MIGRATIONS).await;

    let new = idle.rebind().expect("rebind");
    assert_ne!(new.port(), old.port(), "a new local port");
    gw.wait_metric(MIGRATIONS, |m| m > before).await;

    // Membership events (which the gateway batches) arrive on the new path, in order.
    let other = gw.native("migrate-idle", "other").await;
    let other_id = other.participant();
    room_event(&idle, "the idle participant", |e| match e {
        SessionEvent::ParticipantJoined(p) if p.participant == other_id => Some(()),
        _ => None,
    })
    .await;
    other.close().await;
    room_event(&idle, "the idle participant", |e| match e {
        SessionEvent::ParticipantLeft { participant, .. } if *participant == other_id => Some(()),
        _ => None,
    })
    .await;
    assert_survived(&idle, id, "the idle participant");
    assert_eq!(idle.stats().rebinds, 1);
    idle.close().await;
    gw.stop().await;
}
