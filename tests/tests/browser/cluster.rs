//! The web demo in a cluster: two nodes in this process, on 127.0.0.2 and 127.0.0.3, sharing
//! their API key and resume secret and one real `redis-server`. A native client joins a room
//! through node `a`, which then serves it; headless Chromium opens the demo page of node `b` for
//! that room. `b` redirects the page's session to `a` (a `GoAway` REDIRECT with `a`'s WebTransport
//! URL, its certificate hashes and a token), and the page must follow it: it joins at `a`, the
//! native client receives its camera's VP8, and the page decodes the native client's video.
//! Then, with Redis gone, a page of a new room on `b` is refused with `UNAVAILABLE`, retries, and
//! shows a retryable error. And when the node that serves a page's room is killed, the page goes
//! on through the node it came from: it joins the room there and publishes again.
//!
//! The timings are compressed less than in `tests/tests/cluster.rs`: a browser shares the two
//! cores with both nodes here, and nothing in this test waits for a lease to run out.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use strait_client::{Client, Transport};
use strait_tests::browser::{repo_root, require_chromium, require_node, require_playwright};
use strait_tests::fixture::{TestGateway, WAIT};
use strait_tests::redis::{RedisServer, Timings, cluster_events, join_cluster};

use crate::demo::{BROWSER_LIMIT, record_browser_video, replay_vp8, run_node};

const KEY_ID: &str = "cluster";
const SECRET: &str = "browser-cluster-secret-0123456789abcdefgh";
const RESUME_SECRET: &str = "browser-cluster-resume-secret-0123456789a";

/// A node of the cluster on `ip`, named `id`, that mints development tokens for its page (with
/// the cluster's key: the other node verifies them).
async fn node(redis: &RedisServer, id: &str, ip: [u8; 4]) -> TestGateway {
    let gateway = TestGateway::start_with(|c| {
        c.quic.listen = SocketAddr::from((ip, 0));
        c.http.listen = SocketAddr::from((ip, 0));
        c.http.dev_token_endpoint = Some(true);
        c.webrtc.enabled = false;
        // Looser than the other cluster tests: Chromium shares the two cores.
        let timings = Timings {
            heartbeat: Duration::from_millis(250),
            lease: Duration::from_secs(2),
            room_lease: Duration::from_secs(5),
        };
        join_cluster(c, redis, id, (KEY_ID, SECRET, RESUME_SECRET), timings);
    })
    .await;
    gateway.wait_ready(true).await;
    gateway
}

/// Runs `web-demo/test/browser.mjs` with `scenario` against the page of `entry`, with `env`
/// besides; fails with its output unless every check passed.
async fn run_page(entry: &TestGateway, scenario: &str, env: &[(&str, String)]) {
    let mut env = env.to_vec();
    env.extend([
        ("STRAIT_DEMO_URL", format!("http://{}/", entry.http_addr())),
        ("STRAIT_CHROMIUM", require_chromium().display().to_string()),
        ("STRAIT_SCENARIO", scenario.to_owned()),
        (
            "STRAIT_ARTIFACTS",
            std::env::var("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| repo_root().join("target"))
                .join("browser-artifacts")
                .display()
                .to_string(),
        ),
    ]);
    let run = run_node(&["web-demo/test/browser.mjs"], &env, BROWSER_LIMIT).await;
    println!("{}", run.stdout);
    eprintln!("{}", run.stderr);
    assert!(
        run.status.success(),
        "the browser test ({scenario}) failed ({}); its output is above",
        run.status
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_one_node_follows_the_redirect_to_the_node_that_serves_its_room() {
    require_node();
    require_chromium();
    require_playwright(&repo_root());

    let mut redis = RedisServer::start().await;
    let a = node(&redis, "a", [127, 0, 0, 2]).await;
    let b = node(&redis, "b", [127, 0, 0, 3]).await;

    // The native participant joins through `a` first: `a` serves the room.
    let room = "cluster-demo";
    let config = a.client_config(Transport::Quic, a.token(room, "native"));
    let (native, _) = tokio::time::timeout(WAIT, Client::connect_and_join(config, room))
        .await
        .expect("joins in time")
        .expect("joins through a");
    let native = Arc::new(native);
    assert_eq!(native.remote_address(), Some(a.quic_addr()));
    assert_eq!(
        redis
            .hget("{strait}:room:cluster-demo", "node")
            .await
            .as_deref(),
        Some("a")
    );

    // Chromium opens the page of `b`; its session must end up at `a`.
    let target = format!("https://{}/rtc", a.quic_addr());
    let env = [
        ("STRAIT_ROOM", room.to_owned()),
        ("STRAIT_REDIRECT_TO", target),
        ("STRAIT_PEER", "native".to_owned()),
    ];
    let browser = run_page(&b, "redirect", &env);
    let native_side = async {
        // The page's camera reaches the native client at `a`: the page is in `a`'s room.
        let (track, recorded) = record_browser_video(&native).await;
        let carol = native
            .participants()
            .into_iter()
            .find(|p| p.participant == track.participant)
            .expect("the publisher of the track is in the room");
        assert_eq!(carol.name, "carol", "{carol:?}");
        println!(
            "the native client at a received {} packets of the redirected page's VP8",
            recorded.len()
        );
        // Sends them back as its own video, for the page to decode, until the page is done.
        replay_vp8(Arc::clone(&native), recorded).await
    };
    tokio::select! {
        () = browser => {}
        _ = native_side => unreachable!("the replay runs until the browser is done"),
    }
    // `b` redirected the page once and placed nothing; `a` placed the room once.
    assert_eq!(cluster_events(&b, "redirected").await, 1.0);
    assert_eq!(cluster_events(&b, "placed_here").await, 0.0);
    assert_eq!(cluster_events(&a, "redirected").await, 0.0);

    // Without Redis, `b` cannot place a new room: the page retries, then says so.
    redis.kill();
    b.wait_ready(false).await;
    run_page(&b, "unavailable", &[]).await;

    native.close().await;
    a.stop().await;
    b.stop().await;
}

/// The node `k` that serves a room runs as a process of its own; a native client and a page of
/// node `b` (redirected to `k`) are in the room. `k` is killed (SIGKILL): the page notices, cannot
/// resume anywhere, starts afresh at `b` (which it learnt from `b`'s `/v1/nodes`), joins the room
/// and publishes again; the native client does the same by itself (`ClientConfig::rejoin`); each
/// sees the other's video again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_whose_node_dies_goes_on_through_another_node_and_publishes_again() {
    use strait_load::gateway::GatewayChild;
    use strait_tests::fixture::strait_binary;

    require_node();
    require_chromium();
    require_playwright(&repo_root());

    let redis = RedisServer::start().await;
    let b = node(&redis, "b", [127, 0, 0, 3]).await;
    let settings = [
        format!("auth.keys=[{{id=\"{KEY_ID}\",secret=\"{SECRET}\"}}]"),
        format!("auth.resume_secret={RESUME_SECRET}"),
        "cluster.node_id=k".into(),
        format!("cluster.redis_url={}", redis.url()),
        "cluster.heartbeat=250ms".into(),
        "cluster.lease=2s".into(),
        "cluster.room_lease=5s".into(),
        "webrtc.enabled=false".into(),
        "webtransport.allowed_origins=[\"*\"]".into(),
    ];
    let k = GatewayChild::start(&strait_binary(), &settings)
        .await
        .expect("node k starts");
    redis
        .wait_until("k's lease", async |r: &RedisServer| {
            r.get("{strait}:node:k").await
        })
        .await;

    // The native participant joins at k (so k serves the room), with b to fall back to.
    let room = "cluster-loss";
    let config = strait_tests::redis::failover_client(&k, &b, b.token(room, "native"));
    let (native, _) = tokio::time::timeout(WAIT, Client::connect_and_join(config, room))
        .await
        .expect("joins in time")
        .expect("joins at k");
    let native = Arc::new(native);

    let env = [
        ("STRAIT_ROOM", room.to_owned()),
        ("STRAIT_REDIRECT_TO", format!("https://{}/rtc", k.quic)),
        (
            "STRAIT_FALLBACK_TO",
            format!("https://{}/rtc", b.quic_addr()),
        ),
        ("STRAIT_PEER", "native".to_owned()),
    ];
    let browser = run_page(&b, "node-loss", &env);
    let native_side = async {
        // The page publishes at k: then k dies.
        let (_, recorded) = record_browser_video(&native).await;
        println!(
            "the native client at k received {} packets of the page's VP8",
            recorded.len()
        );
        // It sends them back as its own video (published at k first), for the page to decode;
        // its session moves to b by itself after k dies, and the replay goes on there.
        let replay = replay_vp8(Arc::clone(&native), recorded);
        tokio::pin!(replay);
        let mut changes = native.room_changes();
        tokio::select! {
            _ = &mut replay => unreachable!("the replay runs until the browser is done"),
            _ = changes.wait_for(|_| !native.published().is_empty()) => {}
        }
        println!("the native client publishes at k; killing k");
        k.stop().await;
        replay.await
    };
    tokio::select! {
        () = browser => {}
        _ = native_side => unreachable!("the replay runs until the browser is done"),
    }
    assert_eq!(native.remote_address(), Some(b.quic_addr()));
    assert_eq!(native.stats().rejoins, 1);
    assert_eq!(
        redis
            .hget(&format!("{{strait}}:room:{room}"), "node")
            .await
            .as_deref(),
        Some("b")
    );
    native.close().await;
    b.stop().await;
}
