//! The WebRTC bridge end to end: legacy WebRTC peers (the async `webrtc` crate) publish with WHIP
//! and subscribe with WHEP to an in-process gateway, in the same rooms as native QUIC clients.
//!
//! The set-up (a gateway, WHIP and WHEP peers, native publishers, waits on a native session) is
//! the fixture of `strait_tests::bridge`. Every wait is bounded and waits for something to happen
//! (an event, a packet, a metric); all ports come from the OS.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::shared::marshal::Unmarshal;
use strait_client::{Session, SessionEvent};
use strait_gateway::auth::Grants;
use strait_protocol::{ControlMessage, TrackKind};
use strait_tests::bridge::{
    Count, VideoCodec, WAIT, WhipOptions, WhipPublisher, WsSubscriber, close_publisher,
    local_vp8_track, next_packet_on, next_remote_track, published_video_of, receive_rtp,
    receive_video, receive_vp8, reoffer, reoffer_with_video_section, rtp_and_reports_of,
    rtp_and_sender_reports_of, rtp_of, signal_offer, subscribe_to_video_of, vp8_spec,
    wait_for_leave, wait_for_leave_reason, wait_for_participant, wait_for_tracks_of, watch_rtcp,
};
use strait_tests::fixture::{TestGateway, rtp};
use strait_tests::http::{bearer, delete, http, patch, post_offer};
use strait_tests::sdp::{candidate_ports, host_candidates, payload_type_of};
use strait_tests::turn_client::TurnClient;
use strait_tests::turn_peer::TurnPublisher;
use strait_tests::webrtc_peer::Peer;
use strait_tests::ws::WsClient;
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::TrackRemoteEvent;
use webrtc::peer_connection::{
    RTCConfigurationBuilder, RTCIceServer, RTCIceTransportPolicy, RTCSessionDescription,
};

// ---------------------------------------------------------------------------------------------
// SDP helpers.

/// A VP8 payload type a native publisher uses in one test, unlike any the WebRTC leg negotiates.
const NATIVE_VP8_PT: u8 = 120;

/// `sdp` without the codec `name`: its payload types (and the RTX types that repair them) leave
/// the `m=` lines and their `a=rtpmap`, `a=fmtp` and `a=rtcp-fb` lines go.
fn without_codec(sdp: &str, name: &str) -> String {
    let prefix = format!("{}/", name.to_ascii_uppercase());
    let mut gone: Vec<String> = sdp
        .lines()
        .filter_map(|l| l.strip_prefix("a=rtpmap:"))
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, codec)| codec.to_ascii_uppercase().starts_with(&prefix))
        .map(|(pt, _)| pt.to_owned())
        .collect();
    let rtx: Vec<String> = sdp
        .lines()
        .filter_map(|l| l.strip_prefix("a=fmtp:"))
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, params)| {
            gone.iter()
                .any(|pt| params.trim_end() == format!("apt={pt}"))
        })
        .map(|(pt, _)| pt.to_owned())
        .collect();
    gone.extend(rtx);
    let names = |l: &str, attr: &str| {
        l.strip_prefix(attr)
            .and_then(|rest| rest.split([' ', '\r']).next())
            .is_some_and(|pt| gone.iter().any(|g| g == pt))
    };
    sdp.lines()
        .filter(|l| {
            !["a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"]
                .iter()
                .any(|a| names(l, a))
        })
        .map(|l| match l.strip_prefix("m=") {
            Some(m) => {
                let fields: Vec<&str> = m
                    .split_whitespace()
                    .enumerate()
                    .filter(|(i, f)| *i < 3 || !gone.iter().any(|g| g == f))
                    .map(|(_, f)| f)
                    .collect();
                format!("m={}\r\n", fields.join(" "))
            }
            None => format!("{}\r\n", l.trim_end()),
        })
        .collect()
}

/// The payload type an SDP maps to VP8.
fn vp8_payload_type(sdp: &str) -> u8 {
    payload_type_of(sdp, "VP8")
}

// ---------------------------------------------------------------------------------------------
// Media across the bridge.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_only_whip_publisher_reaches_a_native_subscriber_through_the_embedded_turn() {
    // The bridge and the embedded TURN server on loopback; nothing else configured: the
    // bridge's port is the relay's media address by itself.
    let gw = TestGateway::start_bridge_with_turn().await;
    let viewer = gw.native("stage", "viewer").await;
    let turn = gw.gateway.turn_addrs().udp.expect("TURN over UDP");
    let credentials = gw
        .gateway
        .turn_credentials("camera", std::time::SystemTime::now())
        .expect("credentials");
    let configuration = RTCConfigurationBuilder::new()
        .with_ice_servers(vec![RTCIceServer {
            urls: vec![format!("turn:{turn}?transport=udp")],
            username: credentials.username,
            credential: credentials.password,
        }])
        .with_ice_transport_policy(RTCIceTransportPolicy::Relay)
        .build();
    let publisher = gw
        .whip_publisher_with(
            "stage",
            "camera",
            WhipOptions {
                configuration: Some(configuration),
                ..WhipOptions::default()
            },
        )
        .await;
    // Relay candidates only: the offer names the relay's address, not the peer's own socket.
    assert!(publisher.offer.contains("typ relay"), "{}", publisher.offer);
    assert!(!publisher.offer.contains("typ host"), "{}", publisher.offer);

    let (_, _, sub) = subscribe_to_video_of(&viewer, "camera", VideoCodec::Vp8).await;
    let indices = receive_vp8(&viewer, &sub, 20).await;
    assert!(indices.windows(2).all(|w| w[0] < w[1]), "{indices:?}");
    // Through the relay: the TURN server relayed the media to the bridge.
    let relayed = gw
        .metric_where("strait_turn_relayed_packets_total", "direction=\"to_peer\"")
        .await;
    assert!(relayed >= 20.0, "relayed {relayed}");
    assert_eq!(gw.metric("strait_turn_allocations").await, 1.0);

    // The answer names every TURN server with credentials of the peer's own (RFC 9725 `Link`
    // headers), and they are good for an allocation.
    assert_eq!(publisher.links.len(), 3, "{:?}", publisher.links);
    let udp = publisher
        .links
        .iter()
        .find(|l| l.starts_with(&format!("<turn:{turn}?transport=udp>")))
        .unwrap_or_else(|| panic!("a UDP TURN link in {:?}", publisher.links));
    assert!(udp.contains("rel=\"ice-server\""), "{udp}");
    assert!(udp.contains("credential-type=\"password\""), "{udp}");
    let field = |name: &str| {
        let start = udp.find(&format!("{name}=\"")).expect(name) + name.len() + 2;
        let len = udp[start..].find('"').expect("closing quote");
        udp[start..start + len].to_owned()
    };
    let (username, password) = (field("username"), field("credential"));
    let mut client = TurnClient::udp(turn, &username, &password).await;
    let relay = client.allocate().await;
    assert_eq!(relay.ip(), std::net::IpAddr::from([127, 0, 0, 1]));

    publisher.close().await;
    viewer.close().await;
    gw.stop().await;
}

/// A relay-only publisher (webrtc-rs's `rtc` over a TURN client on `transport`) reaches a
/// native subscriber through the embedded TURN server.
async fn relay_only_rtc_publisher(transport: &str) {
    let gw = TestGateway::start_bridge_with_turn().await;
    let viewer = gw.native("relay", "viewer").await;
    let token = gw.token("relay", "camera");
    let credentials = gw
        .gateway
        .turn_credentials("camera", std::time::SystemTime::now())
        .expect("credentials");
    let (user, pass) = (&credentials.username, &credentials.password);
    let addrs = gw.gateway.turn_addrs();
    let client = match transport {
        "udp" => TurnClient::udp(addrs.udp.expect("TURN over UDP"), user, pass).await,
        "tcp" => TurnClient::tcp(addrs.tcp.expect("TURN over TCP"), user, pass).await,
        _ => TurnClient::tls(&gw, addrs.tls.expect("TURN over TLS"), user, pass).await,
    };
    let publisher = TurnPublisher::start(&gw, client, "relay", &token).await;
    assert!(publisher.offer.contains("typ relay"), "{}", publisher.offer);
    assert!(!publisher.offer.contains("typ host"), "{}", publisher.offer);
    assert_eq!(publisher.relay.ip(), std::net::IpAddr::from([127, 0, 0, 1]));

    let (_, _, sub) = subscribe_to_video_of(&viewer, "camera", VideoCodec::Vp8).await;
    let indices = receive_vp8(&viewer, &sub, 20).await;
    assert!(indices.windows(2).all(|w| w[0] < w[1]), "{indices:?}");
    // Through the relay: the TURN server relayed the media to the bridge, over `transport`.
    let relayed = gw
        .metric_where("strait_turn_relayed_packets_total", "direction=\"to_peer\"")
        .await;
    assert!(relayed >= 20.0, "relayed {relayed}");
    assert_eq!(gw.metric("strait_turn_allocations").await, 1.0);

    publisher.close().await;
    viewer.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_only_rtc_publisher_reaches_a_native_subscriber_through_turn_over_udp() {
    relay_only_rtc_publisher("udp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_only_rtc_publisher_reaches_a_native_subscriber_through_turn_over_tcp() {
    relay_only_rtc_publisher("tcp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_only_rtc_publisher_reaches_a_native_subscriber_through_turn_over_tls() {
    relay_only_rtc_publisher("tls").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_publisher_reaches_a_native_subscriber_and_receives_its_keyframe_requests() {
    let gw = TestGateway::start_bridge().await;
    let viewer = gw.native("stage", "viewer").await;
    let publisher = gw.whip_publisher("stage", "camera").await;
    let token = &publisher.token;

    // The WebRTC peer is a participant like any other: it joins, then publishes.
    let (camera, track, sub) = subscribe_to_video_of(&viewer, "camera", VideoCodec::Vp8).await;

    // The subscription's keyframe request reaches the WebRTC publisher as a PLI; it answers with
    // a keyframe, and the native subscriber receives from there, rewritten to its own leg.
    let indices = receive_vp8(&viewer, &sub, 20).await;
    assert!(indices.windows(2).all(|w| w[0] < w[1]), "{indices:?}");
    assert!(publisher.keyframe_requests() >= 1);

    // The bridge reports on what it receives from the publisher (RTCP receiver reports).
    publisher
        .receiver_reports
        .wait_above(0, "a receiver report from the bridge")
        .await;

    // An explicit keyframe request from the QUIC subscriber becomes another PLI.
    let before = publisher.keyframe_requests();
    viewer
        .request_keyframe(track, None)
        .await
        .expect("keyframe request");
    publisher
        .keyframe_requests
        .wait_above(before, "a PLI for the native keyframe request")
        .await;
    assert!(gw.metric("strait_webrtc_keyframe_requests_out_total").await >= 2.0);
    assert!(
        gw.metric_where("strait_packets_in_total", "transport=\"webrtc\"")
            .await
            >= 20.0
    );
    assert_eq!(
        gw.metric_where("strait_drops_total", "reason=\"webrtc_rejected\"")
            .await,
        0.0,
        "a well-behaved publisher's packets are not counted as rejected"
    );

    // Someone else's token cannot end the session; the publisher's own can.
    let intruder = gw.token("stage", "intruder");
    let refused = delete(&gw, &publisher.location, &intruder).await;
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(gw.metric("strait_webrtc_peers").await, 1.0);
    let deleted = delete(&gw, &publisher.location, token).await;
    assert_eq!(deleted.status, 200, "{deleted:?}");
    wait_for_leave(&viewer, camera).await;
    gw.wait_metric("strait_webrtc_peers", |v| v == 0.0).await;
    let again = delete(&gw, &publisher.location, token).await;
    assert_eq!(again.status, 404, "{again:?}");

    publisher.close().await;
    viewer.close().await;
    gw.stop().await;
}

/// The first `a=ice-ufrag` and `a=ice-pwd` of an SDP or fragment.
fn ice_credentials(sdp: &str) -> (String, String) {
    let find = |prefix: &str| {
        sdp.lines()
            .find_map(|l| l.trim_end().strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {sdp}"))
            .to_owned()
    };
    (find("a=ice-ufrag:"), find("a=ice-pwd:"))
}

/// `sdp` with its ICE credentials replaced.
fn replace_ice_credentials(sdp: &str, ufrag: &str, pwd: &str) -> String {
    sdp.lines()
        .map(|l| {
            if l.starts_with("a=ice-ufrag:") {
                format!("a=ice-ufrag:{ufrag}\r\n")
            } else if l.starts_with("a=ice-pwd:") {
                format!("a=ice-pwd:{pwd}\r\n")
            } else {
                format!("{}\r\n", l.trim_end())
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_patch_trickles_and_restarts_ice_and_media_goes_on() {
    let gw = TestGateway::start_bridge().await;
    let viewer = gw.native("patch", "viewer").await;
    let publisher = gw.whip_publisher("patch", "camera").await;
    let token = publisher.token.clone();
    let (_, track, sub) = subscribe_to_video_of(&viewer, "camera", VideoCodec::Vp8).await;
    let before = receive_vp8(&viewer, &sub, 10).await;
    let location = publisher.location.clone();
    let (old_ufrag, _) = ice_credentials(&publisher.answer);
    let old_tag = format!("\"{old_ufrag}\"");

    // Trickled candidates are acknowledged with the session's entity tag.
    let candidates =
        "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\na=end-of-candidates\r\n";
    let trickled = patch(&gw, &location, &token, Some(&old_tag), candidates).await;
    assert_eq!(trickled.status, 204, "{trickled:?}");
    assert_eq!(trickled.header("etag"), Some(old_tag.as_str()));

    // Refusals: another entity tag, someone else's session, bad fragments, a wrong type.
    let stale = patch(&gw, &location, &token, Some("\"stale\""), candidates).await;
    assert_eq!(stale.status, 412, "{stale:?}");
    let intruder = patch(
        &gw,
        &location,
        &gw.token("patch", "intruder"),
        None,
        candidates,
    )
    .await;
    assert_eq!(intruder.status, 403, "{intruder:?}");
    for (fragment, why) in [
        ("a=ice-ufrag:abcd\r\n", "together"),
        ("v=0\r\n", "a= and m="),
        (
            "a=ice-ufrag:ab\r\na=ice-pwd:abcdefghijklmnopqrstuvwxyz\r\n",
            "ice-ufrag",
        ),
    ] {
        let bad = patch(&gw, &location, &token, None, fragment).await;
        assert_eq!(bad.status, 400, "{fragment:?}: {bad:?}");
        assert!(bad.body.contains(why), "{fragment:?}: {bad:?}");
    }
    let auth = bearer(&token);
    let wrong_type = http(
        &gw,
        "PATCH",
        &location,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/sdp"),
        ],
        candidates.as_bytes(),
    )
    .await;
    assert_eq!(wrong_type.status, 415, "{wrong_type:?}");
    let huge = "a=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n".repeat(1000);
    let too_long = patch(&gw, &location, &token, None, &huge).await;
    assert_eq!(too_long.status, 413, "{too_long:?}");

    // ICE restart: the peer's new credentials in a fragment; the bridge answers with new ones.
    publisher.peer.pc.restart_ice().await.unwrap();
    let offer = publisher.peer.pc.create_offer(None).await.unwrap();
    publisher
        .peer
        .pc
        .set_local_description(offer.clone())
        .await
        .unwrap();
    let (ufrag, pwd) = ice_credentials(&offer.sdp);
    let fragment = format!("a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n");
    let restarted = patch(&gw, &location, &token, Some("*"), &fragment).await;
    assert_eq!(restarted.status, 200, "{restarted:?}");
    assert_eq!(
        restarted.header("content-type"),
        Some("application/trickle-ice-sdpfrag")
    );
    let (new_ufrag, new_pwd) = ice_credentials(&restarted.body);
    assert_ne!(new_ufrag, old_ufrag, "the bridge's credentials change");
    assert_eq!(
        restarted.header("etag"),
        Some(format!("\"{new_ufrag}\"").as_str())
    );
    assert!(
        restarted.body.contains("a=candidate:"),
        "{}",
        restarted.body
    );
    let answer = replace_ice_credentials(&publisher.answer, &new_ufrag, &new_pwd);
    publisher
        .peer
        .pc
        .set_remote_description(RTCSessionDescription::answer(answer).unwrap())
        .await
        .unwrap();

    // The peer's checks now name the new credentials, and only those are routed: the old ufrag
    // is unknown to the bridge. Media keeps flowing over the restarted ICE.
    let stray = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let unknown_before = gw
        .metric_where("strait_drops_total", "reason=\"webrtc_unknown_ufrag\"")
        .await;
    stray
        .send_to(
            &stun_binding_request(format!("{old_ufrag}:x").as_bytes()),
            gw.webrtc_addr(),
        )
        .await
        .unwrap();
    gw.wait_metric_where(
        "strait_drops_total",
        "reason=\"webrtc_unknown_ufrag\"",
        |v| v > unknown_before,
    )
    .await;
    // Both directions work over the restarted ICE (a restart drops the selected pair on both
    // sides, so nothing flows until the new checks succeed): packets the publisher sends after
    // the restart reach the viewer, and then (the pair is selected on both sides) a keyframe
    // request reaches the publisher.
    let sent = publisher.sent.load(Ordering::Relaxed);
    tokio::time::timeout(WAIT, async {
        loop {
            let packet = viewer.recv_media().await.expect("media");
            if packet.media.0 == sub.media.0 && rtp::index_at(&packet.rtp, 16) >= sent + 20 {
                return;
            }
        }
    })
    .await
    .expect("packets sent after the ICE restart reach the viewer");
    let asked = publisher.keyframe_requests();
    viewer
        .request_keyframe(track, None)
        .await
        .expect("keyframe request");
    publisher
        .keyframe_requests
        .wait_above(asked, "a PLI over the restarted ICE")
        .await;
    assert!(before.windows(2).all(|w| w[0] < w[1]), "{before:?}");
    assert_eq!(gw.metric("strait_webrtc_peers").await, 1.0);

    publisher.close().await;
    viewer.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whep_subscribers_nack_is_answered_from_the_tracks_packet_cache() {
    let gw = TestGateway::start_with(|c| {
        c.media.keyframe_request_interval = Duration::from_millis(50);
        c.webrtc.nack_cache_packets = 256;
    })
    .await;
    let presenter = gw
        .native_video_publisher("nack", "presenter", VideoCodec::Vp8, rtp::VP8_PT)
        .await;
    // Without a replay window, a retransmission of a packet the subscriber has reaches it.
    let peer = Peer::without_srtp_replay_protection().await;
    let viewer = gw.whep_subscriber_on(peer, "nack", presenter.track()).await;
    let (remote, ssrc) = (&viewer.remote, viewer.ssrc().await);
    let mut rx = rtp_of(Arc::clone(remote));

    // 400 packets: by the last one the first is far beyond a 256-packet cache, and the last
    // stays in it for more than a second (256 packets at 5 ms) while the NACK travels.
    let received = receive_rtp(&mut rx, 400, "400 packets reach the WHEP subscriber").await;
    let old = received[0].header.sequence_number;
    let recent = received.last().unwrap().clone();

    // One NACK for both, the old one first: the bridge answers in order, so once the recent
    // packet is back, the old one would have come before it had it been kept. The recent one is
    // named twice: it is sent once.
    let granted = r#"result="granted""#;
    let not_cached = r#"result="not_cached""#;
    let nacks = "strait_webrtc_nacks_total";
    let (granted_before, not_cached_before) = (
        gw.metric_where(nacks, granted).await,
        gw.metric_where(nacks, not_cached).await,
    );
    remote
        .write_rtcp(vec![Box::new(TransportLayerNack {
            sender_ssrc: 0,
            media_ssrc: ssrc,
            nacks: vec![
                NackPair {
                    packet_id: old,
                    lost_packets: 0,
                },
                NackPair {
                    packet_id: recent.header.sequence_number,
                    lost_packets: 0,
                },
                NackPair {
                    packet_id: recent.header.sequence_number,
                    lost_packets: 0,
                },
            ],
        })])
        .await
        .unwrap();
    let mut after = Vec::new();
    let again = tokio::time::timeout(WAIT, async {
        loop {
            let packet = rx.recv().await.expect("rtp");
            if packet.header.sequence_number == recent.header.sequence_number {
                return packet;
            }
            after.push(packet.header.sequence_number);
        }
    })
    .await
    .expect("the NACKed packet is sent again");
    assert_eq!(
        again.payload, recent.payload,
        "the same packet, from the cache"
    );
    assert_eq!(again.header.timestamp, recent.header.timestamp);
    assert_eq!(again.header.ssrc, ssrc, "in the leg's own stream");
    assert!(
        !after.contains(&old),
        "a packet older than the cache was resent: {after:?}"
    );
    gw.wait_metric_where(nacks, not_cached, |v| v > not_cached_before)
        .await;
    let granted_now = gw
        .wait_metric_where(nacks, granted, |v| v > granted_before)
        .await;
    assert_eq!(
        granted_now - granted_before,
        1.0,
        "the packet was sent once"
    );
    assert_eq!(
        gw.metric_where(nacks, not_cached).await - not_cached_before,
        1.0
    );
    assert!(
        gw.metric_where("strait_webrtc_feedback_total", r#"kind="nack""#)
            .await
            >= 1.0
    );

    viewer.close().await;
    presenter.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_from_a_whip_publisher_reaches_a_native_subscriber() {
    let gw = TestGateway::start_bridge().await;
    let viewer = gw.native("avc", "viewer").await;
    let publisher = gw
        .whip_publisher_with(
            "avc",
            "camera",
            WhipOptions {
                codec: Some(VideoCodec::H264),
                ..WhipOptions::default()
            },
        )
        .await;
    assert!(
        publisher.answer.contains("H264/90000"),
        "{}",
        publisher.answer
    );
    let (_, _, sub) = subscribe_to_video_of(&viewer, "camera", VideoCodec::H264).await;
    // From an IDR on (the keyframe request reached the publisher), payloads intact.
    let indices = receive_video(&viewer, &sub, 20, VideoCodec::H264).await;
    assert!(indices.windows(2).all(|w| w[0] < w[1]), "{indices:?}");
    assert!(publisher.keyframe_requests() >= 1);
    publisher.close().await;
    viewer.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vp9_from_a_native_publisher_reaches_a_whep_subscriber_that_negotiates_it() {
    let gw = TestGateway::start_bridge().await;
    let presenter = gw
        .native_video_publisher("vp9", "presenter", VideoCodec::Vp9, NATIVE_VP8_PT)
        .await;
    let published = &presenter.published;
    // A WHEP offer that cannot receive VP9 is refused in words, before any media.
    let mut vp8_only = Peer::new().await;
    vp8_only.receive_only(RtpCodecKind::Video).await;
    let offer = without_codec(&vp8_only.offer().await, "VP9");
    assert!(!offer.contains("VP9"), "{offer}");
    let token = gw.token("vp9", "old-viewer");
    let path = format!("/whep/vp9/{}", published.track.0);
    let refused = post_offer(&gw, &path, &token, &offer).await;
    assert_eq!(refused.status, 422, "{refused:?}");
    assert!(refused.body.contains("codec"), "{refused:?}");
    let _ = vp8_only.pc.close().await;

    let viewer = gw.whep_subscriber("vp9", published.track).await;
    let negotiated = payload_type_of(&viewer.response.body, "VP9");
    let mut rx = rtp_of(Arc::clone(&viewer.remote));
    let packets = receive_rtp(&mut rx, 20, "20 VP9 packets reach the WHEP subscriber").await;
    // The first packets may go before the track's reader is attached; a keyframe comes among
    // the first (the subscription asked for one).
    assert!(
        packets.iter().any(|p| p.payload[0] == 0x0c),
        "a VP9 keyframe arrives"
    );
    for p in &packets {
        assert_eq!(
            p.header.payload_type, negotiated,
            "the leg's VP9 payload type"
        );
        assert_eq!(p.payload[0] & !0x40, 0x0c, "the VP9 descriptor is intact");
    }

    viewer.close().await;
    presenter.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_publisher_reaches_a_whep_subscriber_whose_pli_reaches_the_publisher() {
    let gw = TestGateway::start_bridge().await;
    // The native leg uses a payload type the WebRTC leg will not negotiate for VP8. The native
    // publisher sends a keyframe first and after every keyframe request it is sent.
    let presenter = gw
        .native_video_publisher("show", "presenter", VideoCodec::Vp8, NATIVE_VP8_PT)
        .await;
    let keyframe_requests = &presenter.keyframe_requests;

    // The subscriber receives the native publisher's VP8, starting at a keyframe, with the SSRC
    // its answer announced and consecutive sequence numbers.
    let viewer = gw.whep_subscriber("show", presenter.track()).await;
    let (remote, ssrc) = (&viewer.remote, viewer.ssrc().await);
    let (mut rx, sender_reports) = rtp_and_reports_of(Arc::clone(remote));
    let packets = receive_rtp(&mut rx, 20, "20 packets reach the WHEP subscriber").await;
    // Per leg: the payload type the answer negotiated for VP8, the SSRC it announced, consecutive
    // sequence numbers, and timestamps that keep the publisher's spacing.
    let negotiated = vp8_payload_type(&viewer.response.body);
    assert_ne!(negotiated, NATIVE_VP8_PT);
    let indices: Vec<u32> = packets
        .iter()
        .map(|p| u32::from_be_bytes(p.payload[4..8].try_into().unwrap()))
        .collect();
    assert!(indices.windows(2).all(|w| w[0] < w[1]), "{indices:?}");
    for (k, p) in packets.iter().enumerate() {
        assert_eq!(p.header.payload_type, negotiated, "the leg's payload type");
        assert_eq!(p.header.ssrc, ssrc);
        assert_eq!(
            p.header.sequence_number,
            packets[0].header.sequence_number.wrapping_add(k as u16)
        );
        assert_eq!(
            p.header.timestamp.wrapping_sub(packets[0].header.timestamp),
            (indices[k] - indices[0]) * 3000,
            "timestamps keep their spacing"
        );
        assert_eq!(p.payload[0], 0x10, "VP8 payload intact");
    }

    // The leg sends RTCP sender reports about what it sends.
    sender_reports
        .wait_above(0, "a sender report on the WHEP leg")
        .await;

    // A PLI from the WebRTC subscriber reaches the native publisher as a keyframe request.
    let before = keyframe_requests.get();
    remote
        .write_rtcp(vec![Box::new(PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: ssrc,
        })])
        .await
        .unwrap();
    keyframe_requests
        .wait_above(before, "the PLI to reach the native publisher")
        .await;
    assert!(gw.metric("strait_webrtc_keyframe_requests_in_total").await >= 1.0);

    let deleted = delete(&gw, &viewer.location, &viewer.token).await;
    assert_eq!(deleted.status, 200, "{deleted:?}");
    gw.wait_metric("strait_webrtc_peers", |v| v == 0.0).await;

    viewer.close().await;
    presenter.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_publisher_and_subscriber_share_one_udp_port() {
    let gw = TestGateway::start_bridge().await;
    let observer = gw.native("duo", "observer").await;
    let publisher = gw
        .whip_publisher_with(
            "duo",
            "camera",
            WhipOptions {
                audio: true,
                ..WhipOptions::default()
            },
        )
        .await;
    let camera = wait_for_participant(&observer, "camera").await;
    wait_for_tracks_of(
        &observer,
        camera,
        2,
        "both tracks of the WHIP publisher to be announced",
    )
    .await;

    // A WHEP subscriber names the WHIP publisher (a participant id): it gets all its tracks, one
    // per receiving section of its offer.
    let mut viewer = Peer::new().await;
    for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
        viewer.receive_only(kind).await;
    }
    let offer = viewer.offer().await;
    let token = gw.token("duo", "viewer");
    let response = post_offer(&gw, &format!("/whep/duo/{}", camera.0), &token, &offer).await;
    assert_eq!(response.status, 201, "WHEP answered {response:?}");
    viewer.finish(&response.body).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    for _ in 0..2 {
        let remote = next_remote_track(&mut viewer, "audio and video").await;
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(event) = remote.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(packet) = event
                    && tx.send(packet).is_err()
                {
                    break;
                }
            }
        });
    }
    let (mut audio, mut video) = (0, 0);
    tokio::time::timeout(WAIT, async {
        while audio < 10 || video < 10 {
            let packet = rx.recv().await.expect("rtp");
            if packet.payload.first() == Some(&0x10) {
                video += 1;
            } else {
                audio += 1;
            }
        }
    })
    .await
    .expect("the WHIP publisher's audio and video reach the WHEP subscriber");

    // Both peers were given one bridge port, their room's worker's, and nothing else.
    let port = candidate_ports(&publisher.answer)[0];
    assert!(gw.webrtc_addrs().iter().any(|a| a.port() == port));
    for sdp in [&publisher.answer, &response.body] {
        let ports = candidate_ports(sdp);
        assert!(!ports.is_empty(), "{sdp}");
        assert!(ports.iter().all(|p| *p == port), "{ports:?} vs {port}");
    }
    assert_eq!(gw.metric("strait_webrtc_peers").await, 2.0);
    assert_eq!(
        gw.metric_where("strait_sessions", "transport=\"webrtc\"")
            .await,
        2.0
    );

    let _ = viewer.pc.close().await;
    publisher.close().await;
    observer.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webrtc_peer_that_goes_silent_leaves_its_room_at_the_ice_timeout() {
    let gw = TestGateway::start_with(|c| c.webrtc.ice_timeout = Duration::from_secs(1)).await;
    let observer = gw.native("quiet", "observer").await;
    let publisher = gw.whip_publisher("quiet", "camera").await;
    let camera = wait_for_participant(&observer, "camera").await;

    // The peer vanishes without a DELETE: no more consent checks reach the bridge.
    publisher.close().await;
    let reason = wait_for_leave_reason(&observer, camera).await;
    assert_eq!(reason, strait_protocol::ErrorCode::TIMEOUT);
    gw.wait_metric("strait_webrtc_peers", |v| v == 0.0).await;
    observer.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_peer_whose_webrtc_goes_silent_is_told_and_leaves() {
    let gw = TestGateway::start_with(|c| c.webrtc.ice_timeout = Duration::from_secs(1)).await;
    let observer = gw.native("quiet", "observer").await;
    observer.publish(vp8_spec()).await.expect("publish");
    let WsSubscriber { mut ws, peer, .. } = gw.ws_subscriber("quiet", "legacy", 1).await;
    let legacy = wait_for_participant(&observer, "legacy").await;

    // The WebRTC side vanishes while the WebSocket stays open: the session is told and closed,
    // and the room sees the participant leave.
    let _ = peer.pc.close().await;
    let reason = ws
        .expect_closed_with(strait_protocol::ErrorCode::TIMEOUT)
        .await;
    assert!(reason.contains("webrtc"), "{reason}");
    let left = wait_for_leave_reason(&observer, legacy).await;
    assert_eq!(left, strait_protocol::ErrorCode::TIMEOUT);
    gw.wait_metric("strait_webrtc_peers", |v| v == 0.0).await;
    observer.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_opus_and_vp8_reach_a_webtransport_subscriber() {
    let gw = TestGateway::start_bridge().await;
    let viewer = gw.webtransport("radio", "listener").await;
    let publisher = gw
        .whip_publisher_with(
            "radio",
            "host",
            WhipOptions {
                audio: true,
                ..WhipOptions::default()
            },
        )
        .await;
    let host = wait_for_participant(&viewer, "host").await;

    // Both streams are announced as tracks of the WebRTC participant, with their codecs.
    let tracks = wait_for_tracks_of(&viewer, host, 2, "two tracks announced").await;
    let audio = tracks
        .iter()
        .find(|t| t.kind == TrackKind::Audio)
        .expect("an audio track");
    assert!(audio.codec.name.eq_ignore_ascii_case("opus"), "{audio:?}");
    assert_eq!((audio.codec.clock_rate, audio.codec.channels), (48_000, 2));
    let video = tracks
        .iter()
        .find(|t| t.kind == TrackKind::Video)
        .expect("a video track");

    let audio_sub = viewer
        .subscribe(audio.track, None)
        .await
        .expect("subscribe");
    let video_sub = viewer
        .subscribe(video.track, None)
        .await
        .expect("subscribe");
    let (mut audio_packets, mut video_packets) = (Vec::new(), Vec::new());
    tokio::time::timeout(WAIT, async {
        while audio_packets.len() < 20 || video_packets.len() < 20 {
            let packet = viewer.recv_media().await.expect("media");
            if packet.media == audio_sub.media {
                audio_packets.push(packet.rtp);
            } else if packet.media == video_sub.media {
                video_packets.push(packet.rtp);
            }
        }
    })
    .await
    .expect("audio and video reach the WebTransport subscriber");
    assert!(audio_packets.iter().all(|p| rtp::ssrc(p) == audio_sub.ssrc));
    rtp::assert_consecutive_in_publisher_order(&audio_packets, 12);
    assert!(VideoCodec::Vp8.is_keyframe(&video_packets[0]));
    assert!(video_packets.iter().all(|p| rtp::ssrc(p) == video_sub.ssrc));

    publisher.close().await;
    viewer.close().await;
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Simulcast from a WebRTC publisher.

/// The rids the simulcast publisher sends, lowest first; the fourth is one too many.
const RIDS: [&str; 4] = ["q", "h", "f", "x"];
/// The `max-br` each rid declares in the offer.
const RID_BITRATES: [u32; 4] = [100_000, 300_000, 900_000, 2_000_000];

fn simulcast_ssrc(layer: usize) -> u32 {
    0x5100_0000 + layer as u32
}

/// The layer a simulcast test packet was sent on and whether it starts a keyframe, read from the
/// packet as a subscriber receives it (header extensions, if any, skipped).
fn simulcast_layer_of(packet: &[u8]) -> (u32, bool) {
    let parsed = rtc::rtp::Packet::unmarshal(&mut &packet[..]).expect("an rtp packet");
    let payload = &parsed.payload;
    let index = u32::from_be_bytes(payload[4..8].try_into().expect("4 bytes"));
    (
        index >> 24,
        payload[0] & 0x10 != 0 && payload[1] & 0x01 == 0,
    )
}

/// How a test publisher signals its offer.
#[derive(Debug, Clone, Copy)]
enum Signaling {
    /// WHIP, with restrictions (`max-br`, `max-width`, `max-height`) added to its rids.
    Whip,
    /// `/ws/rtc`, the offer as the peer wrote it.
    WebSocket,
}

/// A WebRTC publisher sending one VP8 track as four simulcast encodings (rids `q`, `h`, `f`, `x`,
/// each with its own SSRC), a packet on each every 5 ms. Each payload carries its layer in the
/// top byte of its index; each layer sends a keyframe first and after each PLI naming its SSRC.
struct SimulcastPublisher {
    peer: Peer,
    /// The WHIP resource, when it signaled with WHIP.
    location: Option<String>,
    /// Its `/ws/rtc` session, when it signaled over a WebSocket.
    ws: Option<WsClient>,
    /// PLIs the peer received, per layer (by the SSRC they name).
    plis: Arc<[Count; 4]>,
    stop: Arc<AtomicBool>,
    sending: tokio::task::JoinHandle<()>,
    watcher: tokio::task::JoinHandle<()>,
}

impl SimulcastPublisher {
    async fn start(
        gw: &TestGateway,
        room: &str,
        token: &str,
        signaling: Signaling,
    ) -> SimulcastPublisher {
        let mut peer = Peer::new().await;
        let codings = RIDS
            .iter()
            .enumerate()
            .map(|(k, rid)| RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    rid: (*rid).into(),
                    ssrc: Some(simulcast_ssrc(k)),
                    ..Default::default()
                },
                codec: VideoCodec::Vp8.rtc(),
                ..Default::default()
            })
            .collect();
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            "whip-stream".into(),
            "whip-simulcast".into(),
            "whip-simulcast".into(),
            RtpCodecKind::Video,
            codings,
        )));
        let sender = peer
            .pc
            .add_track(Arc::clone(&track) as Arc<dyn TrackLocal>)
            .await
            .unwrap();
        let offer = peer.offer().await;
        assert!(offer.contains("a=simulcast:send q;h;f;x"), "{offer}");
        let (answer, location, ws) = match signaling {
            Signaling::Whip => {
                // Restrictions on each rid, as an application may add them to its offer.
                let mut restricted = offer.clone();
                for (k, (rid, bitrate)) in RIDS.iter().zip(RID_BITRATES).enumerate() {
                    let line = format!("a=rid:{rid} send\r\n");
                    assert!(restricted.contains(&line), "{offer}");
                    let (width, height) = (320 << k, 180 << k);
                    restricted = restricted.replace(
                        &line,
                        &format!(
                            "a=rid:{rid} send max-br={bitrate};max-width={width};max-height={height}\r\n"
                        ),
                    );
                }
                let response = post_offer(gw, &format!("/whip/{room}"), token, &restricted).await;
                assert_eq!(response.status, 201, "WHIP answered {response:?}");
                let location = response.header("location").expect("Location").to_owned();
                (response.body, Some(location), None)
            }
            Signaling::WebSocket => {
                let mut ws = WsClient::hello(gw, token).await;
                ws.join(room).await;
                let (answer, _) = signal_offer(&mut ws, offer.clone(), 0).await;
                (answer, None, Some(ws))
            }
        };
        assert!(answer.contains("a=simulcast:recv q;h;f;x"), "{answer}");
        peer.finish(&answer).await;

        let params = sender.get_parameters().await.unwrap();
        let extension = |uri: &str| {
            params
                .rtp_parameters
                .header_extensions
                .iter()
                .find(|e| e.uri == uri)
                .map(|e| e.id as u8)
                .unwrap_or_else(|| panic!("{uri} is negotiated"))
        };
        let mid_id = extension("urn:ietf:params:rtp-hdrext:sdes:mid");
        let rid_id = extension("urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id");
        let mid = offer
            .lines()
            .find_map(|l| l.strip_prefix("a=mid:"))
            .expect("a mid")
            .to_owned();

        let plis: Arc<[Count; 4]> = Arc::new(Default::default());
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let plis = Arc::clone(&plis);
            watch_rtcp(Arc::clone(&track), move |packets| {
                for packet in packets {
                    let Some(pli) = packet.as_any().downcast_ref::<PictureLossIndication>() else {
                        continue;
                    };
                    if let Some(k) = (0..RIDS.len()).find(|&k| simulcast_ssrc(k) == pli.media_ssrc)
                    {
                        plis[k].add(1);
                    }
                }
            })
        };
        let sending = {
            let plis = Arc::clone(&plis);
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut answered = [0u32; 4];
                let mut tick = tokio::time::interval(Duration::from_millis(5));
                // Bounded: at most 60 s of packets.
                for index in 0u32..12_000 {
                    tick.tick().await;
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    for (k, rid) in RIDS.iter().enumerate() {
                        let asked = plis[k].get();
                        let key = index == 0 || asked > answered[k];
                        answered[k] = asked;
                        // Each layer has its own sequence and timestamp spaces, as in a browser.
                        let layer = k as u32;
                        let bytes = rtp::vp8(
                            (index as u16).wrapping_add(k as u16 * 10_000),
                            index * 3000 + layer * 1_000_000,
                            simulcast_ssrc(k),
                            key,
                            (layer << 24) | index,
                        );
                        let mut packet = rtc::rtp::Packet::unmarshal(&mut &bytes[..]).unwrap();
                        packet
                            .header
                            .set_extension(mid_id, Bytes::from(mid.clone().into_bytes()))
                            .unwrap();
                        packet
                            .header
                            .set_extension(rid_id, Bytes::from_static(rid.as_bytes()))
                            .unwrap();
                        let _ = track.write_rtp(packet).await;
                    }
                }
            })
        };
        SimulcastPublisher {
            peer,
            location,
            ws,
            plis,
            stop,
            sending,
            watcher,
        }
    }

    async fn close(self) {
        close_publisher(&self.stop, self.sending, &self.peer, self.watcher).await;
        drop(self.ws);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulcast_whip_publisher_is_one_track_whose_subscribers_switch_layers_at_keyframes() {
    let gw = TestGateway::start_bridge().await;
    let viewer = gw.native("sim", "viewer").await;
    let token = gw.token("sim", "camera");
    let publisher = SimulcastPublisher::start(&gw, "sim", &token, Signaling::Whip).await;

    // One track for the section, with the first three rids as its layers, lowest first, and the
    // restrictions of their a=rid lines.
    let (camera, track, info) = published_video_of(&viewer, "camera").await;
    let layers: Vec<(u32, u16, u16)> = info
        .layers
        .iter()
        .map(|l| (l.max_bitrate, l.width, l.height))
        .collect();
    assert_eq!(
        layers,
        [
            (100_000, 320, 180),
            (300_000, 640, 360),
            (900_000, 1280, 720)
        ]
    );

    // Capped at the lowest layer: the subscriber receives layer 0 only, from a keyframe asked
    // for by a PLI on that layer's SSRC.
    let sub = viewer.subscribe(track, Some(0)).await.expect("subscribe");
    let mut received = Vec::new();
    for _ in 0..20 {
        received.push(next_packet_on(&viewer, sub.media.0).await);
    }
    assert!(simulcast_layer_of(&received[0]).1, "starts at a keyframe");
    assert!(received.iter().all(|p| simulcast_layer_of(p).0 == 0));
    assert!(
        publisher.plis[0].get() >= 1,
        "a PLI on the lowest layer's SSRC"
    );
    assert_eq!(
        publisher.plis[2].get(),
        0,
        "nothing asked of the top layer yet"
    );

    // Raised to the top layer: its keyframe is asked for by a PLI on its own SSRC, and the lowest
    // layer keeps flowing until that keyframe arrives; from it on, only the top layer.
    viewer
        .set_layer_preference(track, Some(2))
        .await
        .expect("layer preference");
    publisher.plis[2]
        .wait_above(0, "a PLI on the top layer's SSRC")
        .await;
    // The subscriber's estimate may take it through the middle layer first (it climbs as its
    // link shows it carries more, and the layers' costs are measured as they flow); every switch
    // happens at a keyframe of the new layer.
    let mut last = 0;
    let switch_at = loop {
        let packet = next_packet_on(&viewer, sub.media.0).await;
        let (layer, key) = simulcast_layer_of(&packet);
        if layer != last {
            assert!(key, "a switch happens at a keyframe of the new layer");
            last = layer;
        }
        received.push(packet);
        if layer == 2 {
            break received.len() - 1;
        }
        assert!(received.len() < 20_000, "the switch never happened");
    };
    assert!(
        simulcast_layer_of(&received[switch_at]).1,
        "the switch happens at a keyframe of the new layer"
    );
    for _ in 0..20 {
        received.push(next_packet_on(&viewer, sub.media.0).await);
    }
    assert!(
        received[switch_at..]
            .iter()
            .all(|p| simulcast_layer_of(p).0 == 2)
    );
    // One stream for the subscriber across the switch: its SSRC, consecutive sequence numbers,
    // timestamps that move forward.
    let first = rtp::seq(&received[0]);
    for (k, packet) in received.iter().enumerate() {
        assert_eq!(rtp::ssrc(packet), sub.ssrc, "the subscription's SSRC");
        assert_eq!(
            rtp::seq(packet),
            first.wrapping_add(k as u16),
            "consecutive"
        );
    }
    let timestamp = |p: &Bytes| u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
    let step = timestamp(&received[switch_at]).wrapping_sub(timestamp(&received[switch_at - 1]));
    assert!(
        step > 0 && step < 90_000,
        "timestamp step at the switch: {step}"
    );
    tokio::time::timeout(WAIT, async {
        loop {
            match viewer.next_event().await.expect("session open") {
                SessionEvent::LayerSwitched { track: t, layer: 2 } if t == track => return,
                _ => {}
            }
        }
    })
    .await
    .expect("LayerSwitched to the top layer");

    // A WHEP subscriber of the simulcast track gets the core's choice (the top layer, with no
    // bandwidth estimate) as one stream, without the publisher's rid extension.
    let watcher = gw.whep_subscriber("sim", track).await;
    let ssrc = watcher.ssrc().await;
    let mut rx = rtp_of(Arc::clone(&watcher.remote));
    let packets = receive_rtp(&mut rx, 20, "20 packets reach the WHEP subscriber").await;
    for (k, p) in packets.iter().enumerate() {
        let index = u32::from_be_bytes(p.payload[4..8].try_into().unwrap());
        assert_eq!(index >> 24, 2, "the top layer only");
        assert_eq!(p.header.ssrc, ssrc);
        assert_eq!(
            p.header.sequence_number,
            packets[0].header.sequence_number.wrapping_add(k as u16)
        );
        assert!(
            p.header.extensions.iter().all(|e| e.payload != b"f"[..]),
            "the publisher's rid is not passed on"
        );
    }

    // The fourth rid is answered but not forwarded: its packets are dropped and counted.
    gw.wait_metric_where(
        "strait_drops_total",
        "reason=\"webrtc_unsupported_stream\"",
        |v| v > 0.0,
    )
    .await;
    assert_eq!(publisher.plis[3].get(), 0);
    assert_eq!(
        viewer
            .tracks()
            .iter()
            .filter(|t| t.participant == camera)
            .count(),
        1,
        "one track for all the layers"
    );

    // The publisher leaves: its track goes with all its layers.
    let location = publisher.location.clone().expect("a WHIP resource");
    let deleted = delete(&gw, &location, &token).await;
    assert_eq!(deleted.status, 200, "{deleted:?}");
    wait_for_leave(&viewer, camera).await;
    assert!(!viewer.tracks().iter().any(|t| t.track == track));

    watcher.close().await;
    publisher.close().await;
    viewer.close().await;
    gw.stop().await;
}

/// A WHEP subscriber that negotiates no transport-cc is estimated by its REMB: told 150
/// kbit/s, the allocation gives it the lowest layer of a simulcast track (its only video is
/// never paused); told 5 Mbit/s, the top one. Every switch at a keyframe of the new layer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whep_subscribers_remb_chooses_its_simulcast_layer() {
    use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
    use std::sync::atomic::AtomicU64;

    let gw = TestGateway::start_bridge().await;
    let viewer = gw.native("remb", "viewer").await;
    let token = gw.token("remb", "camera");
    let publisher = SimulcastPublisher::start(&gw, "remb", &token, Signaling::Whip).await;
    let (_, track, _) = published_video_of(&viewer, "camera").await;

    let mut peer = Peer::new().await;
    peer.receive_only(RtpCodecKind::Video).await;
    let offer: String = peer
        .offer()
        .await
        .lines()
        .filter(|l| !l.contains("transport-wide-cc"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let watcher = gw.token_with(
        "remb",
        "watcher",
        Grants {
            publish: false,
            subscribe: true,
            admin: false,
        },
    );
    let response = post_offer(&gw, &format!("/whep/remb/{}", track.0), &watcher, &offer).await;
    assert_eq!(response.status, 201, "{response:?}");
    assert!(!response.body.contains("transport-wide-cc"));
    peer.finish(&response.body).await;
    let remote = next_remote_track(&mut peer, "the WHEP subscription").await;
    let ssrc = remote.ssrcs().await[0];
    let mut rx = rtp_of(Arc::clone(&remote));

    // The receiver's estimate, every 100 ms (at most a minute).
    let bitrate = Arc::new(AtomicU64::new(150_000));
    let reporter = {
        let (remote, bitrate) = (Arc::clone(&remote), Arc::clone(&bitrate));
        tokio::spawn(async move {
            for _ in 0..600 {
                let remb = ReceiverEstimatedMaximumBitrate {
                    sender_ssrc: 1,
                    bitrate: bitrate.load(Ordering::Relaxed) as f32,
                    ssrcs: vec![ssrc],
                };
                let _ = remote.write_rtcp(vec![Box::new(remb)]).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let layer =
        |p: &rtc::rtp::Packet| u32::from_be_bytes(p.payload[4..8].try_into().unwrap()) >> 24;
    let until_layer = async |rx: &mut mpsc::UnboundedReceiver<rtc::rtp::Packet>, want: u32| {
        for _ in 0..20_000 {
            let p = receive_rtp(rx, 1, "packets reach the WHEP subscriber").await;
            if layer(&p[0]) == want {
                return;
            }
        }
        panic!("never on layer {want}");
    };
    until_layer(&mut rx, 0).await;
    let low = receive_rtp(&mut rx, 20, "20 packets on the lowest layer").await;
    assert!(
        low.iter().all(|p| layer(p) == 0),
        "held on the lowest layer"
    );

    bitrate.store(5_000_000, Ordering::Relaxed);
    until_layer(&mut rx, 2).await;
    let high = receive_rtp(&mut rx, 20, "20 packets on the top layer").await;
    assert!(high.iter().all(|p| layer(p) == 2), "held on the top layer");
    // One stream for the subscriber throughout: its SSRC, consecutive sequence numbers.
    for w in low.windows(2).chain(high.windows(2)) {
        assert_eq!(w[1].header.ssrc, ssrc);
        assert_eq!(
            w[1].header.sequence_number,
            w[0].header.sequence_number.wrapping_add(1)
        );
    }
    gw.wait_metric_where(
        "strait_subscriber_estimate_bits_per_second_count",
        "transport=\"webrtc\"",
        |v| v > 0.0,
    )
    .await;

    reporter.abort();
    let _ = peer.pc.close().await;
    publisher.close().await;
    viewer.close().await;
    gw.stop().await;
}

/// A `/ws/rtc` peer publishes simulcast the same way: one track whose layers are its first three
/// rids (sizes and bitrates unknown), each subscriber on the layer its cap allows; when its
/// session ends, the track goes with all its layers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_peer_publishes_simulcast_too() {
    let gw = TestGateway::start_bridge().await;
    let viewer = gw.native("sim", "viewer").await;
    let token = gw.token("sim", "legacy");
    let publisher = SimulcastPublisher::start(&gw, "sim", &token, Signaling::WebSocket).await;
    let (legacy, track, info) = published_video_of(&viewer, "legacy").await;
    assert_eq!(info.layers.len(), 3);
    assert!(
        info.layers
            .iter()
            .all(|l| l.max_bitrate == 0 && l.width == 0)
    );

    let sub = viewer.subscribe(track, Some(1)).await.expect("subscribe");
    // Its cap's layer, perhaps after the lowest while its estimate shows it carries more; each
    // layer starts at a keyframe.
    let mut received = Vec::new();
    let mut last = None;
    loop {
        let packet = next_packet_on(&viewer, sub.media.0).await;
        let (layer, key) = simulcast_layer_of(&packet);
        if last != Some(layer) {
            assert!(key, "layer {layer} starts at a keyframe");
            assert!(layer <= 1, "above the cap");
            last = Some(layer);
        }
        if layer == 1 {
            received.push(packet);
            if received.len() == 20 {
                break;
            }
        } else {
            // Down again while the layers' costs are learnt: the run starts over.
            received.clear();
        }
    }
    // The publisher's RTCP reader counts the PLI on its own task: wait for it.
    publisher.plis[1]
        .wait_above(0, "a PLI on the middle layer's SSRC")
        .await;

    publisher.close().await;
    wait_for_leave(&viewer, legacy).await;
    assert!(!viewer.tracks().iter().any(|t| t.track == track));
    viewer.close().await;
    gw.stop().await;
}

/// A `/ws/rtc` subscriber of a simulcast track gets one layer — the top one until it asks — and
/// picks another with `SetLayerPreference`, as a QUIC subscriber does: the switch happens at the
/// new layer's keyframe, on one SSRC with continuous sequence numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_subscriber_chooses_its_simulcast_layer() {
    let gw = TestGateway::start_bridge().await;
    let viewer = gw.native("sim", "viewer").await;
    let token = gw.token("sim", "camera");
    let publisher = SimulcastPublisher::start(&gw, "sim", &token, Signaling::Whip).await;
    let (_, track, _) = published_video_of(&viewer, "camera").await;

    let WsSubscriber {
        mut ws,
        mut peer,
        subscribed,
        ..
    } = gw.ws_subscriber("sim", "legacy", 1).await;
    assert_eq!(subscribed[0].track, track);
    let remote = next_remote_track(&mut peer, "the simulcast track").await;
    let mut rx = rtp_of(remote);
    let layer_of = |p: &rtc::rtp::Packet| {
        u32::from_be_bytes(p.payload[4..8].try_into().expect("4 bytes")) >> 24
    };
    let first = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("RTP")
        .expect("rtp");
    assert_eq!(layer_of(&first), 2, "the top layer first");

    ws.send(&ControlMessage::SetLayerPreference(
        strait_protocol::SetLayerPreference {
            request: strait_protocol::RequestId(41),
            track,
            max_layer: Some(0),
            priority: None,
        },
    ))
    .await;
    ws.expect(|m| {
        matches!(m, ControlMessage::LayerSwitched(s) if s.track == track && s.layer == 0)
            .then_some(())
    })
    .await;
    // Layer 2 until layer 0's keyframe, then layer 0 only, the sequence running on.
    let mut previous = first;
    let mut on_zero = 0;
    tokio::time::timeout(WAIT, async {
        while on_zero < 20 {
            let packet = rx.recv().await.expect("rtp");
            assert_eq!(
                packet.header.sequence_number,
                previous.header.sequence_number.wrapping_add(1),
                "one continuous sequence across the switch"
            );
            assert_eq!(packet.header.ssrc, previous.header.ssrc);
            match (layer_of(&previous), layer_of(&packet)) {
                (2, 0) => assert!(
                    packet.payload[0] & 0x10 != 0 && packet.payload[1] & 0x01 == 0,
                    "the switch happens at a keyframe"
                ),
                (0, 2) => panic!("back to layer 2 after the switch"),
                _ => {}
            }
            if layer_of(&packet) == 0 {
                on_zero += 1;
            }
            previous = packet;
        }
    })
    .await
    .expect("layer 0 reaches the WebSocket subscriber");
    assert!(
        publisher.plis[0].get() >= 1,
        "a PLI on the lowest layer's SSRC"
    );

    let _ = peer.pc.close().await;
    drop(ws);
    publisher.close().await;
    viewer.close().await;
    gw.stop().await;
}

/// An offer whose simulcast description does not parse is refused with 400 and a reason, before
/// any peer is created; the gateway carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_simulcast_offer_is_refused_with_its_reason() {
    let gw = TestGateway::start_bridge().await;
    let token = gw.token("sim", "camera");
    let mut peer = Peer::new().await;
    let codings = ["q", "h"]
        .iter()
        .enumerate()
        .map(|(k, rid)| RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                rid: (*rid).into(),
                ssrc: Some(simulcast_ssrc(k)),
                ..Default::default()
            },
            codec: VideoCodec::Vp8.rtc(),
            ..Default::default()
        })
        .collect();
    peer.pc
        .add_track(Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            "s".into(),
            "v".into(),
            "v".into(),
            RtpCodecKind::Video,
            codings,
        ))) as Arc<dyn TrackLocal>)
        .await
        .unwrap();
    let offer = peer.offer().await;
    for (bad, reason) in [
        ("a=simulcast:send q;h;q", "listed twice"),
        ("a=simulcast:send q;h;z", "has no a=rid:z send"),
        ("a=simulcast:send q,h", "alternatives"),
        ("a=simulcast:upward q;h", "unknown a=simulcast direction"),
    ] {
        let sdp = offer.replace("a=simulcast:send q;h", bad);
        assert_ne!(sdp, offer);
        let response = post_offer(&gw, "/whip/sim", &token, &sdp).await;
        assert_eq!(response.status, 400, "{bad}: {response:?}");
        assert!(response.body.contains(reason), "{bad}: {}", response.body);
    }
    assert_eq!(gw.metric("strait_webrtc_peers").await, 0.0);
    // The same offer, well formed, is accepted.
    let response = post_offer(&gw, "/whip/sim", &token, &offer).await;
    assert_eq!(response.status, 201, "{response:?}");
    let _ = peer.pc.close().await;
    gw.stop().await;
}

/// A `webrtc` crate peer on `/ws/rtc` receives a native track present when it offers, then
/// renegotiates on the same connection for a track published later, and again after the first
/// track is unpublished: each answer binds what the new offer asks for, and media keeps flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_peer_renegotiates_as_tracks_come_and_go() {
    let gw = TestGateway::start_bridge().await;
    let presenter = Arc::new(gw.native("forum", "presenter").await);
    let first = presenter.publish(vp8_spec()).await.expect("publish");
    let media = Arc::new(std::sync::Mutex::new(vec![first.media[0]]));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (session, media, stop) = (
            Arc::clone(&presenter),
            Arc::clone(&media),
            Arc::clone(&stop),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            let mut index = 0u32;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let mut key = index.is_multiple_of(50);
                while let Some(event) = session.try_next_event() {
                    key |= matches!(event, SessionEvent::KeyframeRequested { .. });
                }
                let packet = rtp::vp8(index as u16, index * 3000, 0x0052_0000, key, index);
                let targets = media.lock().unwrap().clone();
                for m in targets {
                    let _ = session.send_rtp(m, &packet);
                }
                index += 1;
            }
        })
    };

    let WsSubscriber {
        mut ws,
        mut peer,
        subscribed,
        ..
    } = gw.ws_subscriber("forum", "legacy", 1).await;
    assert_eq!(subscribed[0].track, first.track);
    let remote = next_remote_track(&mut peer, "the first track").await;
    assert_eq!(remote.ssrcs().await[0], subscribed[0].ssrc);
    let mut first_rtp = rtp_of(remote);
    tokio::time::timeout(WAIT, first_rtp.recv())
        .await
        .expect("the first track's RTP")
        .expect("rtp");

    // A track published after the offer: the peer adds a section and offers again.
    let second = presenter.publish(vp8_spec()).await.expect("publish");
    media.lock().unwrap().push(second.media[0]);
    ws.expect(|m| {
        matches!(m, ControlMessage::TrackPublished(t) if t.track == second.track).then_some(())
    })
    .await;
    let offer = reoffer_with_video_section(&mut peer).await;
    let (answer, subscribed) = signal_offer(&mut ws, offer, 1).await;
    assert_eq!(subscribed[0].track, second.track);
    peer.pc
        .set_remote_description(RTCSessionDescription::answer(answer).unwrap())
        .await
        .unwrap();
    let remote = next_remote_track(&mut peer, "the second track").await;
    assert_eq!(remote.ssrcs().await[0], subscribed[0].ssrc);
    let mut second_rtp = rtp_of(remote);
    tokio::time::timeout(WAIT, second_rtp.recv())
        .await
        .expect("the second track's RTP after renegotiating")
        .expect("rtp");

    // The first track goes away; an offer with no new section is answered (the bridge drops
    // the first track's sender) and the second track keeps flowing.
    media.lock().unwrap().retain(|m| *m != first.media[0]);
    presenter.unpublish(first.track).await.expect("unpublish");
    ws.expect(|m| {
        matches!(m, ControlMessage::TrackUnpublished(t) if t.track == first.track).then_some(())
    })
    .await;
    let offer = reoffer(&mut peer).await;
    let (answer, _) = signal_offer(&mut ws, offer, 0).await;
    peer.pc
        .set_remote_description(RTCSessionDescription::answer(answer).unwrap())
        .await
        .unwrap();
    while second_rtp.try_recv().is_ok() {}
    tokio::time::timeout(WAIT, second_rtp.recv())
        .await
        .expect("the second track's RTP after the third negotiation")
        .expect("rtp");
    assert_eq!(
        gw.metric("strait_webrtc_peers").await,
        1.0,
        "one peer all along"
    );
    assert_eq!(gw.metric("strait_webrtc_offers_refused_total").await, 0.0);

    stop.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(WAIT, sender).await;
    let _ = peer.pc.close().await;
    presenter.close().await;
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Bad input.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_peer_restarts_ice_with_a_new_offer() {
    let gw = TestGateway::start_bridge().await;
    let presenter = gw
        .native_video_publisher("lounge", "presenter", VideoCodec::Vp8, rtp::VP8_PT)
        .await;
    let keyframe_requests = &presenter.keyframe_requests;

    let WsSubscriber {
        mut ws,
        mut peer,
        answer: first_answer,
        subscribed,
    } = gw.ws_subscriber("lounge", "legacy", 1).await;
    let remote = next_remote_track(&mut peer, "the subscription").await;
    let ssrc = subscribed[0].ssrc;
    let mut rx = rtp_of(Arc::clone(&remote));
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("RTP before the restart")
        .expect("rtp");

    // The peer restarts ICE: its new offer has new credentials, and so has the answer; no track
    // is added or lost.
    peer.pc.restart_ice().await.unwrap();
    let offer = reoffer(&mut peer).await;
    let (answer, subscribed) = signal_offer(&mut ws, offer, 0).await;
    assert!(subscribed.is_empty());
    assert_ne!(
        ice_credentials(&answer),
        ice_credentials(&first_answer),
        "the bridge's credentials change"
    );
    peer.pc
        .set_remote_description(RTCSessionDescription::answer(answer).unwrap())
        .await
        .unwrap();

    // Both directions work over the restarted ICE (a restart drops the selected pair on both
    // sides): 100 more packets (half a second, more than were in flight at the restart) reach
    // the peer, and then (the pair is selected on both sides) the peer's PLI reaches the
    // publisher.
    while rx.try_recv().is_ok() {}
    tokio::time::timeout(WAIT, async {
        for _ in 0..100 {
            let packet = rx.recv().await.expect("rtp");
            assert_eq!(packet.header.ssrc, ssrc);
        }
    })
    .await
    .expect("media reaches the peer after the ICE restart");
    let asked = keyframe_requests.get();
    remote
        .write_rtcp(vec![Box::new(PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: ssrc,
        })])
        .await
        .unwrap();
    keyframe_requests
        .wait_above(asked, "a PLI over the restarted ICE")
        .await;

    let _ = peer.pc.close().await;
    drop(ws);
    presenter.close().await;
    gw.stop().await;
}

/// The address in the first host candidate of an SDP.
fn host_candidate(sdp: &str) -> std::net::SocketAddr {
    *host_candidates(sdp).first().expect("a host candidate")
}

/// Sends `payload` as a UDP datagram from `from` to `to` (both IPv4) through a raw socket, as if
/// the peer at `from` had sent it. Needs root (CAP_NET_RAW); `None` without it.
fn spoof_udp(from: std::net::SocketAddr, to: std::net::SocketAddr, payload: &[u8]) -> Option<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    let (std::net::SocketAddr::V4(from), std::net::SocketAddr::V4(to)) = (from, to) else {
        return None;
    };
    // IPPROTO_RAW: the header below is sent as written (IP_HDRINCL); the kernel fills the IP
    // checksum. A zero UDP checksum means "none" over IPv4.
    let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(255))).ok()?;
    let total = 20 + 8 + payload.len();
    let mut packet = Vec::with_capacity(total);
    packet.extend_from_slice(&[0x45, 0]);
    packet.extend_from_slice(&u16::try_from(total).ok()?.to_be_bytes());
    packet.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    packet.extend_from_slice(&from.ip().octets());
    packet.extend_from_slice(&to.ip().octets());
    packet.extend_from_slice(&from.port().to_be_bytes());
    packet.extend_from_slice(&to.port().to_be_bytes());
    packet.extend_from_slice(&u16::try_from(8 + payload.len()).ok()?.to_be_bytes());
    packet.extend_from_slice(&[0, 0]);
    packet.extend_from_slice(payload);
    socket
        .send_to(&packet, &std::net::SocketAddr::V4(to).into())
        .ok()?;
    Some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_srtp_and_srtcp_after_dtls_disturb_no_one() {
    let gw = TestGateway::start_bridge().await;
    let bystanders = Bystanders::start(&gw).await;
    let peer = host_candidate(&bystanders.publisher.offer);
    // The bridge port of the publisher's room's worker.
    let port = host_candidate(&bystanders.publisher.answer);

    // From the publisher's own 5-tuple, after DTLS: RTP and RTCP that fail SRTP authentication,
    // and a truncated RTP header. The peer's `rtc` stack drops them; the two RTP datagrams are
    // counted as rejected (SRTCP that fails is dropped inside `rtc` unseen).
    let mut rtp_junk = rtp::vp8(7, 7, 0x00c0_ffee, true, 7);
    rtp_junk.extend_from_slice(&[0xee; 10]);
    let rtcp_junk = [
        0x80, 200, 0, 6, 0, 0xc0, 0xff, 0xee, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
    ];
    let sent = [&rtp_junk[..], &rtcp_junk[..], &[0x80, 96, 0][..]]
        .iter()
        .all(|payload| spoof_udp(peer, port, payload).is_some());
    // Never a silent pass: without the raw socket this test has not run, and says so.
    assert!(
        sent,
        "sending from the peer's address needs a raw socket: run this test as root \
         (CI does)"
    );
    // A marker from an address that never did ICE: once it is counted, the junk before it was
    // handled too (one socket, read in order) — routed to the peer, not counted as a stranger.
    spoof_udp("127.0.0.1:9".parse().unwrap(), port, &rtcp_junk).expect("raw socket");
    gw.wait_metric_where(
        "strait_drops_total",
        "reason=\"webrtc_unknown_source\"",
        |v| v >= 1.0,
    )
    .await;
    assert_eq!(
        gw.metric_where("strait_drops_total", "reason=\"webrtc_unknown_source\"")
            .await,
        1.0
    );
    assert_eq!(
        gw.metric_where("strait_drops_total", "reason=\"webrtc_rejected\"")
            .await,
        2.0,
        "the junk RTP and the truncated RTP are counted"
    );

    // The publisher whose address was used keeps going, and so does everyone else.
    bystanders.still_fine().await;
    assert_eq!(gw.metric("strait_webrtc_peers").await, 1.0);
    bystanders.close().await;
    gw.stop().await;
}

const DATA_ONLY: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
a=sctp-port:5000\r\n";

const AUDIO_ONLY_PCMU: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwxyz\r\n\
a=fingerprint:sha-256 00:11\r\na=setup:actpass\r\na=rtcp-mux\r\na=rtpmap:0 PCMU/8000\r\n";

/// A live WHIP publisher and a native subscriber receiving it: the peers that bad input must
/// not disturb.
struct Bystanders {
    publisher: WhipPublisher,
    viewer: Session,
    media: u32,
    ssrc: u32,
}

impl Bystanders {
    async fn start(gw: &TestGateway) -> Bystanders {
        let viewer = gw.native("calm", "viewer").await;
        let publisher = gw.whip_publisher("calm", "camera").await;
        let (_, _, sub) = subscribe_to_video_of(&viewer, "camera", VideoCodec::Vp8).await;
        receive_vp8(&viewer, &sub, 5).await;
        Bystanders {
            publisher,
            viewer,
            media: sub.media.0,
            ssrc: sub.ssrc,
        }
    }

    /// Media still flows from the WHIP publisher to the native subscriber.
    async fn still_fine(&self) {
        // Skip what is queued, then see fresh packets arrive.
        while self.viewer.try_recv_media().is_some() {}
        tokio::time::timeout(WAIT, async {
            let mut fresh = 0;
            while fresh < 10 {
                let packet = self.viewer.recv_media().await.expect("media");
                if packet.media.0 == self.media {
                    assert_eq!(rtp::ssrc(&packet.rtp), self.ssrc);
                    fresh += 1;
                }
            }
        })
        .await
        .expect("the bystander's media keeps flowing");
    }

    async fn close(self) {
        self.publisher.close().await;
        self.viewer.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_offers_get_clear_statuses_and_disturb_no_one() {
    let gw = TestGateway::start_bridge().await;
    let bystanders = Bystanders::start(&gw).await;
    let token = gw.token("calm", "someone");
    let mut refused = 0.0;

    // Garbage, no media, only unsupported codecs, oversized.
    let garbage = post_offer(&gw, "/whip/calm", &token, "hello, I am not sdp").await;
    assert_eq!(garbage.status, 400, "{garbage:?}");
    assert!(garbage.body.contains("not valid sdp"), "{garbage:?}");
    let no_media = post_offer(&gw, "/whip/calm", &token, DATA_ONLY).await;
    assert_eq!(no_media.status, 422, "{no_media:?}");
    assert!(no_media.body.contains("no audio or video"), "{no_media:?}");
    let pcmu = post_offer(&gw, "/whip/calm", &token, AUDIO_ONLY_PCMU).await;
    assert_eq!(pcmu.status, 422, "{pcmu:?}");
    assert!(pcmu.body.contains("PCMU"), "{pcmu:?}");
    let huge = format!(
        "{AUDIO_ONLY_PCMU}{}",
        "a=x-padding:0123456789\r\n".repeat(1000)
    );
    let oversized = post_offer(&gw, "/whip/calm", &token, &huge).await;
    assert_eq!(oversized.status, 413, "{oversized:?}");
    refused += 4.0;

    // Not SDP by its content type.
    let auth = bearer(&token);
    let wrong_type = http(
        &gw,
        "POST",
        "/whip/calm",
        &[("Authorization", &auth), ("Content-Type", "text/plain")],
        AUDIO_ONLY_PCMU.as_bytes(),
    )
    .await;
    assert_eq!(wrong_type.status, 415, "{wrong_type:?}");
    refused += 1.0;

    // WHEP for a track nobody publishes, or not an id at all.
    let unknown = post_offer(&gw, "/whep/calm/12345", &token, AUDIO_ONLY_PCMU).await;
    assert_eq!(
        unknown.status, 422,
        "unsupported codecs are refused first: {unknown:?}"
    );
    refused += 1.0;
    let not_an_id = post_offer(&gw, "/whep/calm/camera", &token, AUDIO_ONLY_PCMU).await;
    assert_eq!(not_an_id.status, 404, "{not_an_id:?}");
    refused += 1.0;

    assert_eq!(
        gw.metric("strait_webrtc_offers_refused_total").await,
        refused
    );
    // Only the bystander's peer exists, and it still works.
    assert_eq!(gw.metric("strait_webrtc_peers").await, 1.0);
    bystanders.still_fine().await;
    bystanders.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_for_an_unknown_track_is_not_found() {
    let gw = TestGateway::start_bridge().await;
    let bystanders = Bystanders::start(&gw).await;
    let mut viewer = Peer::new().await;
    viewer.receive_only(RtpCodecKind::Video).await;
    let offer = viewer.offer().await;
    let token = gw.token("calm", "viewer2");
    let response = post_offer(&gw, "/whep/calm/424242", &token, &offer).await;
    assert_eq!(response.status, 404, "{response:?}");
    assert_eq!(gw.metric("strait_webrtc_peers").await, 1.0);
    let _ = viewer.pc.close().await;
    bystanders.still_fine().await;
    bystanders.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_needs_a_token_for_its_room_and_grant() {
    let gw = TestGateway::start_bridge().await;
    let offer = AUDIO_ONLY_PCMU;

    let none = http(
        &gw,
        "POST",
        "/whip/calm",
        &[("Content-Type", "application/sdp")],
        offer.as_bytes(),
    )
    .await;
    assert_eq!(none.status, 401, "{none:?}");
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));

    let forged = post_offer(&gw, "/whip/calm", "not.a.token", offer).await;
    assert_eq!(forged.status, 401, "{forged:?}");

    let expired = post_offer(
        &gw,
        "/whip/calm",
        &gw.expired_token("calm", "camera"),
        offer,
    )
    .await;
    assert_eq!(expired.status, 401, "{expired:?}");
    assert!(expired.body.contains("expired"), "{expired:?}");

    let elsewhere = post_offer(&gw, "/whip/calm", &gw.token("other", "camera"), offer).await;
    assert_eq!(elsewhere.status, 403, "{elsewhere:?}");
    assert!(elsewhere.body.contains("room"), "{elsewhere:?}");

    let viewer_only = gw.token_with(
        "calm",
        "camera",
        Grants {
            publish: false,
            subscribe: true,
            admin: false,
        },
    );
    let no_grant = post_offer(&gw, "/whip/calm", &viewer_only, offer).await;
    assert_eq!(no_grant.status, 403, "{no_grant:?}");
    assert!(no_grant.body.contains("publish"), "{no_grant:?}");

    // Deleting needs a token too, and an unknown resource is not found.
    let anonymous = http(&gw, "DELETE", "/whip/calm/0123456789abcdef", &[], b"").await;
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    let unknown = delete(&gw, "/whip/calm/0123456789abcdef", &gw.token("calm", "x")).await;
    assert_eq!(unknown.status, 404, "{unknown:?}");

    // Patching needs a token too, and an unknown resource is not found.
    let anonymous = http(
        &gw,
        "PATCH",
        "/whip/calm/0123456789abcdef",
        &[("Content-Type", "application/trickle-ice-sdpfrag")],
        b"a=end-of-candidates\r\n",
    )
    .await;
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    let unknown = patch(
        &gw,
        "/whip/calm/0123456789abcdef",
        &gw.token("calm", "x"),
        None,
        "a=end-of-candidates\r\n",
    )
    .await;
    assert_eq!(unknown.status, 404, "{unknown:?}");

    assert_eq!(gw.metric("strait_webrtc_offers_refused_total").await, 5.0);
    assert_eq!(gw.metric("strait_webrtc_peers").await, 0.0);
    gw.stop().await;
}

/// A STUN Binding request whose USERNAME is `username`.
fn stun_binding_request(username: &[u8]) -> Vec<u8> {
    let padded = username.len().div_ceil(4) * 4;
    let mut out = vec![0x00, 0x01];
    out.extend_from_slice(&u16::try_from(4 + padded).unwrap().to_be_bytes());
    out.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    out.extend_from_slice(&[7; 12]);
    out.extend_from_slice(&[0x00, 0x06]);
    out.extend_from_slice(&u16::try_from(username.len()).unwrap().to_be_bytes());
    out.extend_from_slice(username);
    out.resize(20 + 4 + padded, 0);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strays_on_the_webrtc_port_are_dropped_and_counted() {
    let gw = TestGateway::start_bridge().await;
    let bystanders = Bystanders::start(&gw).await;
    let stray = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = gw.webrtc_addr();

    // STUN naming an ICE ufrag no peer has.
    stray
        .send_to(&stun_binding_request(b"nobody:me"), port)
        .await
        .unwrap();
    gw.wait_metric_where(
        "strait_drops_total",
        "reason=\"webrtc_unknown_ufrag\"",
        |v| v >= 1.0,
    )
    .await;

    // RTP, DTLS and empty datagrams from an address that never did ICE.
    stray
        .send_to(&rtp::vp8(1, 1, 0xbad, true, 1), port)
        .await
        .unwrap();
    stray.send_to(&[22, 254, 253, 0, 0], port).await.unwrap();
    stray.send_to(&[], port).await.unwrap();
    gw.wait_metric_where(
        "strait_drops_total",
        "reason=\"webrtc_unknown_source\"",
        |v| v >= 3.0,
    )
    .await;

    bystanders.still_fine().await;
    assert_eq!(gw.metric("strait_webrtc_peers").await, 1.0);
    bystanders.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_beyond_the_peer_limit_are_refused_with_503() {
    let gw = TestGateway::start_with(|c| c.webrtc.max_peers = 1).await;
    let observer = gw.native("full", "observer").await;
    let first = gw.whip_publisher("full", "first").await;
    wait_for_participant(&observer, "first").await;

    let mut second = Peer::new().await;
    second
        .pc
        .add_track(local_vp8_track(7) as Arc<dyn TrackLocal>)
        .await
        .unwrap();
    let offer = second.offer().await;
    let refused = post_offer(&gw, "/whip/full", &gw.token("full", "second"), &offer).await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(refused.body.contains("limit"), "{refused:?}");
    assert_eq!(gw.metric("strait_webrtc_peers").await, 1.0);
    assert_eq!(gw.metric("strait_webrtc_offers_refused_total").await, 1.0);
    // The refused peer never joined the room.
    assert!(
        !observer
            .participants()
            .iter()
            .any(|p| p.identity == "second")
    );

    let _ = second.pc.close().await;
    first.close().await;
    observer.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_bridge_binds_nothing_and_serves_no_whip() {
    let gw = TestGateway::start_with(|c| c.webrtc.enabled = false).await;
    assert!(gw.gateway.webrtc_addrs.is_empty());
    let response = post_offer(&gw, "/whip/calm", &gw.token("calm", "x"), AUDIO_ONLY_PCMU).await;
    assert_eq!(response.status, 404, "{response:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_flood_gets_at_most_twice_the_streams_rate_in_retransmissions() {
    let gw = TestGateway::start_with(|c| {
        c.media.keyframe_request_interval = Duration::from_millis(50);
        c.webrtc.nack_cache_packets = 512;
    })
    .await;
    // A packet every 5 ms: 200 packets a second.
    let presenter = gw
        .native_video_publisher("storm", "presenter", VideoCodec::Vp8, rtp::VP8_PT)
        .await;
    // The attacker sees every retransmission (no replay window); a bystander watches too.
    let attacker = gw
        .whep_subscriber_on(
            Peer::without_srtp_replay_protection().await,
            "storm",
            presenter.track(),
        )
        .await;
    let bystander = gw.whep_subscriber("storm", presenter.track()).await;
    let (remote, ssrc) = (&attacker.remote, attacker.ssrc().await);
    let mut rx = rtp_of(Arc::clone(remote));
    let mut watched = rtp_of(Arc::clone(&bystander.remote));
    let received = receive_rtp(&mut rx, 300, "300 packets reach the attacker").await;
    let seqs: Vec<u16> = received.iter().map(|p| p.header.sequence_number).collect();
    let last_before = *seqs.last().unwrap();

    // What the bridge sends from here on (handed to the socket or dropped for a full queue).
    let sent_before = gw.metric("strait_webrtc_datagrams_out_total").await;
    // Fifty RTCP packets, each asking again for all 300 packets, as fast as they go out.
    let pairs =
        rtc::rtcp::transport_feedbacks::transport_layer_nack::nack_pairs_from_sequence_numbers(
            &seqs,
        );
    for _ in 0..50 {
        remote
            .write_rtcp(vec![Box::new(TransportLayerNack {
                sender_ssrc: 0,
                media_ssrc: ssrc,
                nacks: pairs.clone(),
            })])
            .await
            .unwrap();
    }

    // Over the next 400 packets of the stream (two seconds), count what comes again.
    let mut originals = 0u32;
    let mut again = 0u32;
    let mut highest = last_before;
    tokio::time::timeout(WAIT, async {
        while originals < 400 {
            let packet = rx.recv().await.expect("rtp");
            let seq = packet.header.sequence_number;
            if seq.wrapping_sub(highest) as i16 > 0 {
                originals += u32::from(seq.wrapping_sub(highest));
                highest = seq;
            } else {
                again += 1;
            }
        }
    })
    .await
    .expect("the stream goes on during the flood");
    let sent = gw.metric("strait_webrtc_datagrams_out_total").await - sent_before;
    // Beyond the two subscribers' share of the stream: retransmissions, RTCP, STUN answers.
    let extra = sent - 2.0 * f64::from(originals);
    eprintln!(
        "NACK flood: 50 x {} packets asked for again; the bridge sent {sent} datagrams ({extra} \
         beyond the stream's) over {originals} new packets; {again} came back to the attacker",
        seqs.len()
    );
    // Retransmissions: at most twice the stream's packets over the window plus the burst a
    // stream may have saved up (128); the rest (reports, consent answers, timing) is small.
    assert!(
        extra <= f64::from(2 * originals + 128 + 64),
        "the bridge sent {extra} datagrams beyond {originals} packets of the stream per subscriber"
    );
    assert!(
        gw.metric_where("strait_webrtc_nacks_total", "result=\"duplicate\"")
            .await
            + gw.metric_where("strait_webrtc_nacks_total", "result=\"over_budget\"")
                .await
            > 0.0
    );

    // The bystander got the stream in order, nothing missing, throughout.
    let seen = receive_rtp(&mut watched, 600, "the bystander's stream").await;
    for pair in seen.windows(2) {
        let step = pair[1]
            .header
            .sequence_number
            .wrapping_sub(pair[0].header.sequence_number);
        assert_eq!(step, 1, "the bystander missed or repeated packets");
    }

    attacker.close().await;
    bystander.close().await;
    presenter.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_checks_neither_grow_the_address_table_nor_draw_media() {
    const SPOOFED: u8 = 200;
    let gw = TestGateway::start_bridge().await;
    let presenter = gw
        .native_video_publisher("spoof", "presenter", VideoCodec::Vp8, rtp::VP8_PT)
        .await;
    let viewer = gw.whep_subscriber("spoof", presenter.track()).await;
    let mut rx = rtp_of(Arc::clone(&viewer.remote));
    receive_rtp(&mut rx, 50, "the viewer's stream").await;
    let (server_ufrag, _) = ice_credentials(&viewer.response.body);
    let port = candidate_ports(&viewer.response.body)[0];
    let bridge = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let before = gw.metric("strait_webrtc_addresses").await;
    let unverified_before = gw
        .metric_where("strait_drops_total", "reason=\"webrtc_unverified_check\"")
        .await;

    // Checks naming the viewer's ufrag from 200 other addresses (any 127/8 address is local),
    // without the password; then an SRTP-looking datagram from each.
    let mut spoofed = Vec::new();
    for i in 0..SPOOFED {
        let socket = tokio::net::UdpSocket::bind((std::net::Ipv4Addr::new(127, 0, 1, i + 1), 0))
            .await
            .expect("bind a spoofed source");
        let check = stun_binding_request(format!("{server_ufrag}:spoof{i}").as_bytes());
        socket.send_to(&check, bridge).await.unwrap();
        socket
            .send_to(&[0x80, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9], bridge)
            .await
            .unwrap();
        spoofed.push(socket);
    }
    // Every check is refused and counted.
    gw.wait_metric_where(
        "strait_drops_total",
        "reason=\"webrtc_unverified_check\"",
        |n| n >= unverified_before + f64::from(SPOOFED),
    )
    .await;
    let grown = gw.metric("strait_webrtc_addresses").await - before;
    assert!(
        grown <= 0.0,
        "{grown} addresses were added for checks that did not pass integrity"
    );

    // A second of media later, nothing but the viewer's own traffic went anywhere: no spoofed
    // address got SRTP (nor a success answer).
    receive_rtp(&mut rx, 200, "the viewer's stream goes on").await;
    let mut buf = [0u8; 2048];
    for socket in &spoofed {
        while let Ok((n, _)) = socket.try_recv_from(&mut buf) {
            assert!(
                !(128..=191).contains(&buf[0]),
                "SRTP reached a spoofed address {:?}",
                socket.local_addr()
            );
            assert!(
                !(n >= 2 && buf[0] == 0x01 && buf[1] == 0x01),
                "a spoofed check was answered with success"
            );
        }
    }

    viewer.close().await;
    presenter.close().await;
    gw.stop().await;
}

/// The transport-cc extension id an SDP answer maps.
fn transport_cc_id(sdp: &str) -> u8 {
    sdp.lines()
        .find_map(|line| {
            let rest = line.trim().strip_prefix("a=extmap:")?;
            let (id, uri) = rest.split_once(' ')?;
            uri.starts_with("http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc")
                .then(|| id.split('/').next()?.parse().ok())
                .flatten()
        })
        .expect("the answer maps transport-cc")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whep_leg_gets_its_own_transport_sequence_sender_reports_that_match_and_its_feedback_counted()
 {
    let gw = TestGateway::start_with(|c| {
        c.media.keyframe_request_interval = Duration::from_millis(50);
    })
    .await;
    let presenter = gw
        .native_video_publisher("twcc", "presenter", VideoCodec::Vp8, rtp::VP8_PT)
        .await;
    let viewer = gw.whep_subscriber("twcc", presenter.track()).await;
    let id = transport_cc_id(&viewer.response.body);
    let (mut rx, mut reports) = rtp_and_sender_reports_of(Arc::clone(&viewer.remote));

    // Transport-wide numbers on this leg: one more per packet, no gaps (loopback loses none).
    let packets = receive_rtp(&mut rx, 300, "300 packets reach the WHEP subscriber").await;
    let twcc: Vec<u16> = packets
        .iter()
        .map(|p| {
            let value = p
                .header
                .get_extension(id)
                .expect("every packet carries the transport sequence");
            u16::from_be_bytes([value[0], value[1]])
        })
        .collect();
    for pair in twcc.windows(2) {
        assert_eq!(
            pair[1],
            pair[0].wrapping_add(1),
            "a gap or a repeat: {twcc:?}"
        );
    }
    // The subscriber's transport-wide feedback reaches the hub.
    gw.wait_metric_where("strait_webrtc_feedback_total", r#"kind="twcc""#, |v| {
        v > 0.0
    })
    .await;

    // A sender report counts what the leg sent: what the subscriber received by the time it
    // arrived, within one packet in flight (nothing is lost on loopback).
    let (report, received) = tokio::time::timeout(WAIT, async {
        loop {
            let (report, received) = reports.recv().await.expect("sender reports");
            // A report after the packets above.
            if report.packet_count >= 300 {
                return (report, received);
            }
        }
    })
    .await
    .expect("a sender report arrives");
    assert!(
        report.packet_count.abs_diff(received) <= 1,
        "the report counts {} packets, the subscriber received {received}",
        report.packet_count
    );
    assert_eq!(report.ssrc, viewer.ssrc().await);
    assert!(
        report.octet_count > report.packet_count,
        "octets are counted"
    );
    assert!(gw.metric("strait_webrtc_sender_reports_total").await >= 1.0);

    viewer.close().await;
    presenter.close().await;
    gw.stop().await;
}
