//! Headless Chromium behind the embedded TURN server: a page restricted to relay candidates
//! (`iceTransportPolicy: 'relay'`) publishes its fake camera with WHIP, using the TURN
//! credentials the gateway minted, over TURN on UDP, on TCP and on TLS; a native client in the
//! same room receives its VP8, and the page's `getStats()` shows a selected candidate pair whose
//! local candidate is a relay candidate of that transport.
//!
//! Driven by `web-demo/test/turn.mjs` (playwright-core).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use strait_client::{Session, SessionEvent};
use strait_protocol::{ParticipantId, TrackId, TrackKind};
use strait_tests::browser::{
    ProcessGroup, repo_root, require_chromium, require_node, require_playwright,
};
use strait_tests::fixture::{TestGateway, WAIT};
use tokio::io::{AsyncBufReadExt, BufReader};

fn require_tools(root: &Path) -> PathBuf {
    require_node();
    require_playwright(root);
    require_chromium()
}

async fn wait_for_video_of(session: &Session, identity: &str) -> TrackId {
    let found = tokio::time::timeout(WAIT * 2, async {
        loop {
            let who: Option<ParticipantId> = session
                .participants()
                .into_iter()
                .find(|p| p.identity == identity)
                .map(|p| p.participant);
            if let Some(who) = who
                && let Some(t) = session
                    .tracks()
                    .into_iter()
                    .find(|t| t.participant == who && t.kind == TrackKind::Video)
            {
                return t.track;
            }
            match session.next_event().await {
                Some(SessionEvent::Closed(e)) => panic!("the viewer's session ended: {e}"),
                None => panic!("the viewer's session ended"),
                _ => {}
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("{identity} published no video in time"))
}

/// How long the call goes on after the page's video first arrives.
#[derive(Debug, Clone, Copy)]
enum Call {
    /// Thirty packets and done.
    Short,
    /// Credentials valid for 10 s and allocations granted for 10 s (Chromium refreshes at half
    /// the lifetime): the video must keep coming until 30 s after the credentials were minted.
    OutlivesItsCredentials,
}

/// The credential TTL of [`Call::OutlivesItsCredentials`], the shortest the gateway accepts.
const SHORT_TTL: Duration = Duration::from_secs(10);

async fn relay_publish(transport: &str, call: Call) {
    let root = repo_root();
    let chromium = require_tools(&root);
    let gw = TestGateway::start_with(|c| {
        let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        c.turn.enabled = true;
        c.turn.udp_listen = any;
        c.turn.tcp_listen = any;
        c.turn.tls_listen = any;
        c.media.keyframe_request_interval = Duration::from_millis(200);
        if let Call::OutlivesItsCredentials = call {
            c.turn.credential_ttl = SHORT_TTL;
            c.turn.default_lifetime = SHORT_TTL;
            c.turn.max_lifetime = SHORT_TTL;
        }
    })
    .await;
    let room = format!("relay-{transport}");
    let viewer = gw.native(&room, "viewer").await;
    let token = gw.token(&room, "chromium");
    let minted = tokio::time::Instant::now();
    let credentials = gw
        .gateway
        .turn_credentials("chromium", SystemTime::now())
        .expect("credentials");
    let (scheme, query) = match transport {
        "udp" => ("turn:", "?transport=udp"),
        "tcp" => ("turn:", "?transport=tcp"),
        _ => ("turns:", "?transport=tcp"),
    };
    let url = credentials
        .uris
        .iter()
        .find(|u| u.starts_with(scheme) && u.ends_with(query))
        .unwrap_or_else(|| panic!("no {transport} URL in {:?}", credentials.uris))
        .clone();
    let ice = format!(
        r#"{{"urls":["{url}"],"username":"{}","credential":"{}"}}"#,
        credentials.username, credentials.password
    );

    let mut command = tokio::process::Command::new("node");
    command
        .arg("web-demo/test/turn.mjs")
        .current_dir(&root)
        .env("STRAIT_ORIGIN", format!("http://{}", gw.http_addr()))
        .env("STRAIT_ROOM", &room)
        .env("STRAIT_TOKEN", &token)
        .env("STRAIT_ICE", &ice)
        .env("STRAIT_CHROMIUM", &chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn().expect("start node");
    let _group = ProcessGroup(child.id().expect("node has a pid"));
    let stdin = child.stdin.take();
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();

    // The page reports the pair its connection selected.
    let selected = tokio::time::timeout(WAIT * 4, async {
        while let Some(line) = lines.next_line().await.expect("read node's output") {
            println!("{line}");
            if let Some(json) = line.strip_prefix("selected ") {
                return json.to_owned();
            }
        }
        panic!("the page ended without connecting (its reasons are on stderr above)");
    })
    .await
    .expect("the page connects through the relay in time");
    let selected: serde_json::Value = serde_json::from_str(&selected).expect("JSON");
    assert_eq!(selected["local"]["type"], "relay", "{selected}");
    assert_eq!(selected["local"]["relayProtocol"], transport, "{selected}");
    assert_eq!(selected["offerHasHostCandidates"], false, "{selected}");
    let remote_port = selected["remote"]["port"].as_u64();
    assert!(
        gw.webrtc_addrs()
            .iter()
            .any(|a| Some(u64::from(a.port())) == remote_port),
        "{selected}"
    );

    // Its video reaches the native client.
    let track = wait_for_video_of(&viewer, "chromium").await;
    let sub = viewer.subscribe(track, None).await.expect("subscribe");
    let mut packets = 0;
    tokio::time::timeout(WAIT * 2, async {
        while packets < 30 {
            let packet = viewer.recv_media().await.expect("media");
            if packet.media == sub.media {
                packets += 1;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {packets} packets of the page's video arrived"));
    let relayed = gw
        .metric_where("strait_turn_relayed_packets_total", "direction=\"to_peer\"")
        .await;
    assert!(relayed >= 30.0, "relayed {relayed}");

    if let Call::OutlivesItsCredentials = call {
        // The call goes on past the credentials' expiry and through several Refreshes made
        // with them; without those the allocation would expire 10 s after the last one. A
        // second without video is a broken call (the page sends about 30 frames a second).
        let until = minted + 3 * SHORT_TTL;
        let mut last = tokio::time::Instant::now();
        let mut late = 0u32;
        while tokio::time::Instant::now() < until {
            let packet = tokio::time::timeout(Duration::from_secs(1), viewer.recv_media())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "the relayed video stopped {:?} after the credentials were minted",
                        last - minted
                    )
                })
                .expect("media");
            if packet.media == sub.media {
                last = tokio::time::Instant::now();
                late += u32::from(last > minted + 2 * SHORT_TTL);
            }
        }
        assert!(late > 0, "video in the last ten seconds");
        assert_eq!(
            gw.metric_where("strait_turn_auth_failures_total", "reason=\"expired\"")
                .await,
            0.0
        );
        // (Chromium may hold one allocation per local address it gathers from.)
        assert!(gw.metric("strait_turn_allocations").await >= 1.0);
        eprintln!(
            "long relayed call: video until {:?} after the credentials were minted (TTL \
             {SHORT_TTL:?})",
            last - minted
        );
    }

    drop(stdin);
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("node exits once its input closes")
        .expect("wait for node");
    assert!(status.success(), "node failed: {status}");
    viewer.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_publishes_through_turn_over_udp() {
    relay_publish("udp", Call::Short).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_relayed_call_outlives_its_turn_credentials() {
    relay_publish("udp", Call::OutlivesItsCredentials).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_publishes_through_turn_over_tcp() {
    relay_publish("tcp", Call::Short).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_publishes_through_turn_over_tls() {
    relay_publish("tls", Call::Short).await;
}
