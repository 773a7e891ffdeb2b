//! Supervision: a media worker or the TURN server that stalls makes the gateway unready (and
//! unhealthy) within seconds and ready again when it recovers; one that panics makes it unhealthy
//! for good, with the panic's cause in the answer.

use std::time::Duration;

use strait_gateway::Fault;
use strait_tests::fixture::{TestGateway, WAIT};
use strait_tests::http::http;

/// `path`'s status and body.
async fn probe(gw: &TestGateway, path: &str) -> (u16, String) {
    let response = http(gw, "GET", path, &[], b"").await;
    (response.status, response.body)
}

/// Polls `path` until `pick` accepts its answer, for at most `within`.
async fn until(
    gw: &TestGateway,
    path: &str,
    within: Duration,
    pick: impl Fn(u16, &str) -> bool,
) -> String {
    let mut last = (0, String::new());
    let found = tokio::time::timeout(within, async {
        loop {
            last = probe(gw, path).await;
            if pick(last.0, &last.1) {
                return last.1.clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("{path} still answers {} {:?}", last.0, last.1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalls_make_the_gateway_unready_and_panics_unhealthy_with_their_cause() {
    let gw = TestGateway::start_with(|c| {
        let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        c.media.workers = Some(2);
        c.turn.enabled = true;
        c.turn.transports = vec![strait_gateway::config::TurnListener::Udp];
        c.turn.udp_listen = any;
    })
    .await;
    assert_eq!(probe(&gw, "/readyz").await.0, 200);
    assert_eq!(probe(&gw, "/healthz").await.0, 200);

    // A worker blocked for seven seconds: unready and unhealthy within five, then well again.
    gw.gateway
        .inject_fault(Some(0), Fault::Stall(Duration::from_secs(7)))
        .await;
    let said = until(&gw, "/readyz", Duration::from_secs(5), |status, _| {
        status == 503
    })
    .await;
    assert!(said.contains("media worker 0 is stalled"), "{said}");
    let (status, said) = probe(&gw, "/healthz").await;
    assert_eq!(status, 503, "{said}");
    until(&gw, "/readyz", WAIT, |status, _| status == 200).await;
    assert_eq!(probe(&gw, "/healthz").await.0, 200);

    // A worker that panics: dead, with the cause, for good.
    gw.gateway.inject_fault(Some(1), Fault::Panic).await;
    let said = until(&gw, "/healthz", Duration::from_secs(5), |status, _| {
        status == 503
    })
    .await;
    assert!(
        said.contains("media worker 1 is dead: panicked: fault injected into media worker 1"),
        "{said}"
    );
    let (status, said) = probe(&gw, "/readyz").await;
    assert_eq!(status, 503, "{said}");

    // The TURN server too.
    gw.gateway.inject_fault(None, Fault::Panic).await;
    let said = until(&gw, "/healthz", Duration::from_secs(5), |_, body| {
        body.contains("turn server is dead")
    })
    .await;
    assert!(
        said.contains("fault injected into the TURN server"),
        "{said}"
    );
    gw.stop().await;
}
