//! Admission and limits: connections and requests beyond the configured limits are refused with
//! the documented error, and the sessions already admitted are unaffected.

use strait_client::{Client, ClientError, Transport};
use strait_protocol::ErrorCode;
use strait_tests::fixture::{TestGateway, WAIT, opus_spec};

async fn try_connect(
    gw: &TestGateway,
    identity: &str,
) -> Result<strait_client::Session, ClientError> {
    let mut config = gw.client_config(Transport::Quic, gw.token("limits", identity));
    config.auto_resume = false;
    tokio::time::timeout(WAIT, Client::connect(config))
        .await
        .expect("an answer in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_beyond_the_per_ip_limit_are_refused_before_the_handshake() {
    let gw = TestGateway::start_with(|c| c.limits.max_sessions_per_ip = 2).await;
    let first = try_connect(&gw, "a").await.expect("first session");
    let second = try_connect(&gw, "b").await.expect("second session");
    let refused = try_connect(&gw, "c").await;
    assert!(
        matches!(refused, Err(ClientError::Connect(_))),
        "a third session from the same address is refused: {refused:?}"
    );
    assert_eq!(
        gw.metric("strait_refusals_total").await,
        1.0,
        "the refusal is counted"
    );
    // The admitted sessions are unaffected.
    first.ping().await.expect("first still answers");
    second.ping().await.expect("second still answers");
    // A slot frees when a session ends.
    second.close().await;
    tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(s) = try_connect(&gw, "d").await {
                return s;
            }
            // The gateway releases the slot when the closed session's task ends; retry until it has.
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the freed slot is reused");
    first.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_beyond_the_node_limit_are_refused() {
    let gw = TestGateway::start_with(|c| c.limits.max_sessions = 1).await;
    let first = try_connect(&gw, "a").await.expect("first session");
    let refused = try_connect(&gw, "b").await;
    assert!(
        matches!(refused, Err(ClientError::Connect(_))),
        "{refused:?}"
    );
    first
        .ping()
        .await
        .expect("the admitted session is unaffected");
    first.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_and_track_limits_answer_limit_exceeded() {
    let gw = TestGateway::start_with(|c| {
        c.limits.max_participants_per_room = 1;
        c.limits.max_tracks_per_participant = 1;
    })
    .await;
    let alice = gw.native("limits", "alice").await;
    let bob = try_connect(&gw, "bob").await.expect("bob connects");
    match bob.join("limits").await {
        Err(ClientError::Rejected { code, .. }) => assert_eq!(code, ErrorCode::LIMIT_EXCEEDED),
        other => panic!("a second participant in a room of one is refused: {other:?}"),
    }
    // A refused request does not end the session.
    bob.ping().await.expect("bob's session goes on");

    alice.publish(opus_spec()).await.expect("first track");
    match alice.publish(opus_spec()).await {
        Err(ClientError::Rejected { code, .. }) => assert_eq!(code, ErrorCode::LIMIT_EXCEEDED),
        other => panic!("a second track beyond the limit is refused: {other:?}"),
    }
    alice.ping().await.expect("alice's session goes on");
    alice.close().await;
    bob.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_connections_prove_their_address_with_a_retry_first() {
    // Every handshake counts as "under load" when the threshold is zero.
    let gw = TestGateway::start_with(|c| c.quic.retry_above_handshakes = 0).await;
    let session = try_connect(&gw, "a")
        .await
        .expect("a session after the retry");
    session.ping().await.expect("the session works");
    assert!(
        gw.metric("strait_retries_total").await >= 1.0,
        "the connection was asked for a Retry"
    );
    session.close().await;
    gw.stop().await;
}

/// `POST /v1/dev/token` on `gw`'s HTTP port (reached on loopback whatever it listens on): the
/// status.
async fn dev_token_status(gw: &TestGateway) -> u16 {
    let port = gw.http_addr().port();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect http");
    let body = br#"{"room":"lobby","identity":"mallory"}"#;
    let request = format!(
        "POST /v1/dev/token HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(request.as_bytes()).await.expect("write");
    stream.write_all(body).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("an answer in time")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn development_tokens_are_minted_on_loopback_only() {
    // Development mode (no API key) on loopback: tokens for whoever asks, the developer.
    let gw = TestGateway::start().await;
    assert_eq!(dev_token_status(&gw).await, 200);
    gw.stop().await;

    // The same configuration reachable from the network: no tokens for anyone.
    let gw = TestGateway::start_with(|c| {
        c.http.listen = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
    })
    .await;
    assert_eq!(dev_token_status(&gw).await, 404);
    gw.stop().await;

    // Asking for the endpoint there without keys is refused at start, with the reason.
    let mut config = strait_gateway::config::Config::default();
    config.http.listen = std::net::SocketAddr::from(([0, 0, 0, 0], 8080));
    config.http.dev_token_endpoint = Some(true);
    let refused = config.validate().expect_err("refused");
    assert!(refused.to_string().contains("auth.keys"), "{refused}");
}
