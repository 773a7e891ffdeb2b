//! Drain: stopping the gateway sends go-away to every session, refuses new ones, reports not
//! ready, and finishes within the drain deadline.

use std::time::{Duration, Instant};

use strait_client::{Client, ClientError, SessionEvent, Transport};
use strait_protocol::ErrorCode;
use strait_tests::fixture::{TestGateway, WAIT, http_get};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_sends_go_away_and_finishes_within_the_deadline() {
    let deadline = Duration::from_secs(2);
    let gw = TestGateway::start_with(|c| c.shutdown.drain_deadline = deadline).await;
    let http = gw.http_addr();
    let quic = gw.native("drain", "quic").await;
    let wt = gw.webtransport("drain", "wt").await;
    assert_eq!(http_get(http, "/readyz").await, "ready\n");

    let started = Instant::now();
    gw.gateway.begin_shutdown();
    for session in [&quic, &wt] {
        let go_away = tokio::time::timeout(WAIT, async {
            loop {
                match session.next_event().await {
                    Some(SessionEvent::GoAway { code, .. }) => return code,
                    Some(_) => {}
                    None => panic!("session ended before go-away"),
                }
            }
        })
        .await
        .expect("go-away in time");
        assert_eq!(go_away, ErrorCode::GOING_AWAY);
    }
    // While draining: not ready, and new sessions are refused.
    assert_eq!(http_get(http, "/readyz").await, "draining\n");
    let mut config = gw.client_config(Transport::Quic, gw.token("drain", "late"));
    config.auto_resume = false;
    let late = tokio::time::timeout(WAIT, Client::connect(config))
        .await
        .expect("answer");
    assert!(matches!(late, Err(ClientError::Connect(_))), "{late:?}");

    // The clients stay connected (they may try to resume and be refused); the gateway closes
    // them at the deadline and stops.
    tokio::time::timeout(deadline + WAIT, gw.gateway.stopped())
        .await
        .expect("the gateway stops within the drain deadline")
        .expect("clean stop");
    eprintln!("drain took {:?} (deadline {deadline:?})", started.elapsed());
}
