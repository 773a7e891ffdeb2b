//! The web demo in a real browser: headless Chromium, driven by `web-demo/test/browser.mjs`
//! (playwright-core), against a gateway started in-process; and the demo's JavaScript codec
//! against the golden vectors under node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use strait_client::protocol::{Codec, MediaId, TrackInfo, TrackKind};
use strait_client::{LayerSpec, PublishSpec, Session, SessionEvent, Subscription};
use strait_media::sfu::keyframe::vp8_keyframe_start;
use strait_media::sfu::rtp::RtpHeader;
use strait_tests::browser::{
    ProcessGroup, repo_root, require_chromium, require_node, require_playwright,
};
use strait_tests::fixture::{TestGateway, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bound of the whole browser run (the script bounds each of its waits to 30 s, and all of them
/// to 270 s).
pub(crate) const BROWSER_LIMIT: Duration = Duration::from_secs(300);

pub(crate) struct Finished {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs `node <args>` in the repository root in its own process group, bounded by `limit`;
/// the group is killed on timeout, panic or return.
pub(crate) async fn run_node(args: &[&str], env: &[(&str, String)], limit: Duration) -> Finished {
    let mut command = tokio::process::Command::new("node");
    command
        .args(args)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    let child = command.spawn().expect("start node");
    let _group = ProcessGroup(child.id().expect("node has a pid"));
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("node {args:?} did not finish within {limit:?}; killed"))
        .expect("wait for node");
    Finished {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A gateway whose WebTransport origin policy is the default one: only its own HTTP origin.
async fn gateway() -> TestGateway {
    TestGateway::start_with(|config| config.webtransport.allowed_origins = Vec::new()).await
}

/// Runs `web-demo/test/browser.mjs` against `gw` (with `scenario` as `STRAIT_SCENARIO`) and
/// fails with its output unless every check passed.
async fn run_demo_script(gw: &TestGateway, scenario: &str) {
    let root = repo_root();
    require_node();
    let chromium = require_chromium();
    require_playwright(&root);
    let artifacts = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"))
        .join("browser-artifacts");
    let run = run_node(
        &["web-demo/test/browser.mjs"],
        &[
            ("STRAIT_DEMO_URL", format!("http://{}/", gw.http_addr())),
            ("STRAIT_CHROMIUM", chromium.display().to_string()),
            ("STRAIT_ARTIFACTS", artifacts.display().to_string()),
            ("STRAIT_SCENARIO", scenario.to_owned()),
        ],
        BROWSER_LIMIT,
    )
    .await;
    println!("{}", run.stdout);
    eprintln!("{}", run.stderr);
    assert!(
        run.status.success(),
        "the browser test ({scenario}) failed ({}); its output is above",
        run.status
    );
}

/// Two WebTransport pages see and hear each other; a WebTransport page and WebRTC fallback pages
/// see each other in one room; a wrong certificate is explained, or makes the page fall back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_see_and_hear_each_other_and_a_wrong_certificate_is_explained() {
    let _heavy = crate::HEAVY.lock().await;
    let gw = gateway().await;
    run_demo_script(&gw, "rooms").await;
    gw.stop().await;
}

/// A page on the WebRTC fallback uses the TURN servers and credentials of `ServerHello`: it
/// gathers relay candidates through the embedded TURN server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_page_uses_the_turn_servers_of_server_hello() {
    let gw = TestGateway::start_with(|config| {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        config.webtransport.allowed_origins = Vec::new();
        config.turn.enabled = true;
        config.turn.udp_listen = any;
        config.turn.tcp_listen = any;
        config.turn.tls_listen = any;
    })
    .await;
    run_demo_script(&gw, "turn").await;
    gw.stop().await;
}

/// A page forced onto the WebRTC fallback, against a gateway whose bridge is off (no `/ws/rtc`),
/// says so in words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_page_explains_a_gateway_without_the_webrtc_bridge() {
    let gw = TestGateway::start_with(|config| {
        config.webtransport.allowed_origins = Vec::new();
        config.webrtc.enabled = false;
    })
    .await;
    run_demo_script(&gw, "no-bridge").await;
    gw.stop().await;
}

#[tokio::test]
async fn the_javascript_codec_passes_every_golden_vector() {
    require_node();
    let run = run_node(
        &["--test", "--test-reporter=tap", "web-demo/test/"],
        &[],
        WAIT * 6,
    )
    .await;
    println!("{}", run.stdout);
    eprintln!("{}", run.stderr);
    assert!(run.status.success(), "node --test web-demo/test/ failed");
    assert!(
        run.stdout.contains("# fail 0"),
        "node's test runner reported failures"
    );
}

/// A raw HTTP/1.1 GET: status code, `Content-Type`, body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect http");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    (status, content_type, response[split + 4..].to_vec())
}

#[tokio::test]
async fn the_gateway_serves_every_file_of_the_demo_from_its_binary() {
    let gw = gateway().await;
    let dir = repo_root().join("web-demo");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("read web-demo/")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".js") || name.ends_with(".html") || name.ends_with(".css"))
        .collect();
    files.sort();
    assert!(files.contains(&"protocol.js".to_owned()), "{files:?}");
    for file in &files {
        let (status, content_type, body) = get(gw.http_addr(), &format!("/{file}")).await;
        assert_eq!(
            status, 200,
            "/{file} is not served: add it to gateway::http::DEMO"
        );
        let expected = match file.rsplit('.').next() {
            Some("js") => "text/javascript; charset=utf-8",
            Some("html") => "text/html; charset=utf-8",
            _ => "text/css; charset=utf-8",
        };
        assert_eq!(content_type, expected, "/{file}");
        let on_disk = std::fs::read(dir.join(file)).expect("read the file");
        assert!(body == on_disk, "/{file} differs from web-demo/{file}");
    }
    let (status, content_type, body) = get(gw.http_addr(), "/").await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/html; charset=utf-8");
    assert!(String::from_utf8_lossy(&body).contains("<script type=\"module\" src=\"app.js\">"));
    gw.stop().await;
}

/// Waits (bounded) until `session` knows a video track of another participant.
pub(crate) async fn wait_for_video(session: &Session, limit: Duration) -> TrackInfo {
    tokio::time::timeout(limit, async {
        loop {
            let me = session.participant();
            if let Some(track) = session
                .tracks()
                .into_iter()
                .find(|t| t.participant != me && t.kind == TrackKind::Video)
            {
                return track;
            }
            if session.next_event().await.is_none() {
                panic!("the native session ended while waiting for a video track");
            }
        }
    })
    .await
    .expect("a video track is published by the browser in time")
}

/// Waits for the browser's video track in `session`'s room (the first video of another
/// participant), subscribes to it and records 45 frames of it from a keyframe on.
pub(crate) async fn record_browser_video(session: &Session) -> (TrackInfo, Vec<Vec<u8>>) {
    let track = wait_for_video(session, WAIT * 6).await;
    let sub = session
        .subscribe(track.track, None)
        .await
        .expect("subscribe");
    let recorded = record_vp8(session, &sub, 45).await;
    assert!(recorded.len() >= 45, "{} packets", recorded.len());
    (track, recorded)
}

/// Receives a subscription's RTP from its first VP8 keyframe until `frames` whole frames have
/// arrived; asks for a keyframe every second until one comes. A gap in the sequence numbers (a
/// datagram lost on the way) starts the recording over at the next keyframe: a replay of a
/// keyframe with a hole would never decode.
pub(crate) async fn record_vp8(
    session: &Session,
    sub: &Subscription,
    frames: usize,
) -> Vec<Vec<u8>> {
    let mut recorded: Vec<Vec<u8>> = Vec::new();
    let mut timestamps = 0usize;
    let mut last_ts = None;
    let mut last_seq: Option<u16> = None;
    let mut ask = tokio::time::interval(Duration::from_secs(1));
    tokio::time::timeout(WAIT * 3, async {
        loop {
            let packet = tokio::select! {
                packet = session.recv_media() => packet.expect("the native session ended"),
                _ = ask.tick(), if recorded.is_empty() => {
                    let _ = session.request_keyframe(sub.track, None).await;
                    continue;
                }
            };
            if packet.media != sub.media {
                continue;
            }
            let rtp = packet.rtp.to_vec();
            let header = RtpHeader::parse(&rtp).expect("the gateway forwards valid RTP");
            let payload = &rtp[header.payload_start..header.payload_end];
            let seq = u16::from_be_bytes([rtp[2], rtp[3]]);
            if last_seq.is_some_and(|last| seq != last.wrapping_add(1)) {
                recorded.clear();
                timestamps = 0;
                last_ts = None;
            }
            if recorded.is_empty() && !vp8_keyframe_start(payload) {
                last_seq = None;
                continue;
            }
            last_seq = Some(seq);
            let ts = u32::from_be_bytes([rtp[4], rtp[5], rtp[6], rtp[7]]);
            if last_ts != Some(ts) {
                last_ts = Some(ts);
                timestamps += 1;
                if timestamps > frames {
                    return;
                }
            }
            recorded.push(rtp);
        }
    })
    .await
    .expect("the browser's VP8, from a keyframe on, reaches the native client");
    recorded
}

/// Publishes `recorded` (RTP starting at a keyframe) again and again as a native VP8 track, with
/// continuous sequence numbers and timestamps, one frame every 33 ms; starts over at the keyframe
/// when the gateway asks for one. At the first keyframe request (a subscriber is there), publishes
/// a second track with the same frames. Runs until dropped.
pub(crate) async fn replay_vp8(session: Arc<Session>, recorded: Vec<Vec<u8>>) -> ! {
    let first_ts = u32::from_be_bytes([
        recorded[0][4],
        recorded[0][5],
        recorded[0][6],
        recorded[0][7],
    ]);
    let ts_of = |p: &[u8]| u32::from_be_bytes([p[4], p[5], p[6], p[7]]).wrapping_sub(first_ts);
    let span = recorded.last().map_or(0, |p| ts_of(p)) + 3000;
    let mut media = vec![publish_vp8(&session).await];
    let mut tick = tokio::time::interval(Duration::from_millis(33));
    let (mut seq, mut base) = (0u16, 0u32);
    let mut at = 0usize;
    loop {
        tick.tick().await;
        let mut restart = false;
        while let Some(event) = session.try_next_event() {
            restart |= matches!(event, SessionEvent::KeyframeRequested { .. });
        }
        if restart && media.len() == 1 {
            // Refused while the session reconnects (its node died): tried at the next request.
            if let Ok(second) = try_publish_vp8(&session).await {
                media.push(second);
            }
        }
        if restart && at != 0 {
            base = base.wrapping_add(span);
            at = 0;
        }
        // One frame: every packet with the timestamp of the next one.
        let ts = ts_of(&recorded[at]);
        while at < recorded.len() && ts_of(&recorded[at]) == ts {
            let mut packet = recorded[at].clone();
            packet[1] = (packet[1] & 0x80) | VP8_PT;
            packet[2..4].copy_from_slice(&seq.to_be_bytes());
            packet[4..8].copy_from_slice(&base.wrapping_add(ts).to_be_bytes());
            for &m in &media {
                let _ = session.send_rtp(m, &packet);
            }
            seq = seq.wrapping_add(1);
            at += 1;
        }
        if at == recorded.len() {
            base = base.wrapping_add(span);
            at = 0;
        }
    }
}

async fn publish_vp8(session: &Session) -> MediaId {
    try_publish_vp8(session).await.expect("publish")
}

async fn try_publish_vp8(session: &Session) -> Result<MediaId, strait_client::ClientError> {
    let published = session
        .publish(PublishSpec {
            kind: TrackKind::Video,
            codec: Codec {
                name: "VP8".into(),
                payload_type: VP8_PT,
                clock_rate: 90_000,
                channels: 0,
                fmtp: String::new(),
            },
            source: "camera".into(),
            layers: vec![LayerSpec {
                max_bitrate: 0,
                width: 0,
                height: 0,
            }],
            muted: false,
        })
        .await?;
    Ok(published.media[0])
}

const VP8_PT: u8 = 96;

/// Headless Chromium as a legacy WebRTC peer on `/ws/rtc`: its fake camera's VP8 reaches a
/// native QUIC client; that client publishes the frames it received again, natively, in another
/// room, where a second Chromium page subscribes through `/ws/rtc` and decodes them, then
/// renegotiates for a second track published after it joined and decodes that one too. Every
/// answer names only the bridge's one UDP port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_on_websocket_signaling_publishes_to_and_decodes_from_native_clients() {
    let root = repo_root();
    require_node();
    let chromium = require_chromium();
    require_playwright(&root);

    let gw = gateway().await;
    let recorder = gw.native("ws-camera", "recorder").await;
    let presenter = Arc::new(gw.native("ws-screen", "presenter").await);
    let env = [
        ("STRAIT_DEMO_URL", format!("http://{}/", gw.http_addr())),
        ("STRAIT_CHROMIUM", chromium.display().to_string()),
        ("STRAIT_PUBLISH_TOKEN", gw.token("ws-camera", "camera")),
        ("STRAIT_PUBLISH_ROOM", "ws-camera".into()),
        ("STRAIT_VIEW_TOKEN", gw.token("ws-screen", "viewer")),
        ("STRAIT_VIEW_ROOM", "ws-screen".into()),
        (
            "STRAIT_WEBRTC_PORTS",
            gw.webrtc_addrs()
                .iter()
                .map(|a| a.port().to_string())
                .collect::<Vec<_>>()
                .join(","),
        ),
    ];
    let browser = run_node(&["web-demo/test/ws-rtc.mjs"], &env, BROWSER_LIMIT);

    let native = async {
        // (a) The browser publishes VP8; the native client receives it from a keyframe on.
        let (track, recorded) = record_browser_video(&recorder).await;
        assert!(track.codec.name.eq_ignore_ascii_case("VP8"), "{track:?}");
        println!(
            "the native client received {} packets of the browser's VP8",
            recorded.len()
        );

        // (b) A native publisher sends those frames; the browser must decode them, and a second
        // track after renegotiating. Runs until the browser is done.
        replay_vp8(Arc::clone(&presenter), recorded).await
    };
    let run = tokio::select! {
        run = browser => run,
        _ = native => unreachable!("the replay runs until the browser is done"),
    };
    println!("{}", run.stdout);
    eprintln!("{}", run.stderr);
    if !run.stdout.contains("ws-rtc: PASS") {
        // Where the gateway dropped packets, if it did: a viewer's lost packets are either
        // the gateway's (counted here) or the way to the browser's.
        let metrics = gw.gateway.metrics();
        for reason in strait_gateway::metrics::DropReason::ALL {
            let dropped = metrics
                .drops
                .get_or_create(&strait_gateway::metrics::DropLabel { reason })
                .get();
            if dropped > 0 {
                println!("the gateway dropped {dropped} packets: {}", reason.as_str());
            }
        }
    }
    assert!(
        run.status.success() && run.stdout.contains("ws-rtc: PASS"),
        "the WebSocket signaling browser test failed ({}); its output is above",
        run.status
    );
    gw.stop().await;
}
