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
    let said = gw
        .wait_http("/readyz", Duration::from_secs(5), |status, _| status == 503)
        .await;
    assert!(said.contains("media worker 0 is stalled"), "{said}");
    let (status, said) = probe(&gw, "/healthz").await;
    assert_eq!(status, 503, "{said}");
    gw.wait_http("/readyz", WAIT, |status, _| status == 200)
        .await;
    assert_eq!(probe(&gw, "/healthz").await.0, 200);

    // A worker that panics: dead, with the cause, for good.
    gw.gateway.inject_fault(Some(1), Fault::Panic).await;
    let said = gw
        .wait_http("/healthz", Duration::from_secs(5), |status, _| {
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
    let said = gw
        .wait_http("/healthz", Duration::from_secs(5), |_, body| {
            body.contains("turn server is dead")
        })
        .await;
    assert!(
        said.contains("fault injected into the TURN server"),
        "{said}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_worker_refuses_joins_and_sheds_video_but_never_audio() {
    use std::sync::Arc;

    use strait_client::ClientError;
    use strait_protocol::ErrorCode;
    use strait_tests::bridge::VideoCodec;
    use strait_tests::fixture::{Streamer, opus_spec, rtp};

    let gw = TestGateway::start_with(|c| {
        c.media.workers = Some(1);
        c.shedding.enabled = true;
        c.shedding.join_queue_delay = Duration::from_millis(150);
        c.shedding.layers_queue_delay = Duration::from_millis(200);
        c.shedding.video_queue_delay = Duration::from_millis(250);
        // Busy ratios out of reach: here the queue delay decides.
        c.shedding.join_busy = 2.0;
        c.shedding.layers_busy = 2.0;
        c.shedding.video_busy = 2.0;
        c.shedding.recover_after = Duration::from_secs(4);
        c.shedding.speakers = 0;
    })
    .await;
    // A camera, a microphone, and someone watching and listening.
    let camera = gw
        .native_video_publisher("busy", "camera", VideoCodec::Vp8, rtp::VP8_PT)
        .await;
    let microphone = Arc::new(gw.native("busy", "microphone").await);
    let audio = microphone
        .publish(opus_spec())
        .await
        .expect("publish audio");
    let streamer = Streamer::start(
        microphone.clone(),
        audio.media[0],
        0xa0d10,
        0,
        3000,
        Duration::from_millis(10),
    );
    let viewer = gw.native("busy", "viewer").await;
    let video_sub = viewer
        .subscribe(camera.track(), None)
        .await
        .expect("subscribe to video");
    let audio_sub = viewer
        .subscribe(audio.track, None)
        .await
        .expect("subscribe to audio");
    let count = |media: strait_protocol::MediaId, packets: &[strait_client::MediaPacket]| {
        packets.iter().filter(|p| p.media == media).count()
    };
    let mut seen = Vec::new();
    tokio::time::timeout(WAIT, async {
        while count(video_sub.media, &seen) < 10 || count(audio_sub.media, &seen) < 10 {
            seen.push(viewer.recv_media().await.expect("media"));
        }
    })
    .await
    .expect("video and audio flow");

    // The worker falls 600 ms behind: every level at once. (The thresholds are far above what
    // a busy test machine does to a debug build now and then.)
    gw.gateway
        .inject_fault(Some(0), Fault::Stall(Duration::from_millis(600)))
        .await;
    gw.wait_metric("strait_worker_shed_level", |level| level == 3.0)
        .await;

    // Level 3 with no speakers kept: no video, all the audio (checked first: the level steps
    // down after four calm seconds).
    // What the worker forwarded before it decided (the backlog of the stall: 60 audio packets
    // and 120 of video, up to a batch) is still on its way: let 100 audio packets go by first.
    let mut backlog = Vec::new();
    tokio::time::timeout(WAIT, async {
        while count(audio_sub.media, &backlog) < 100 {
            backlog.push(viewer.recv_media().await.expect("media"));
        }
    })
    .await
    .expect("audio flows");
    let mut shed = Vec::new();
    tokio::time::timeout(WAIT, async {
        while count(audio_sub.media, &shed) < 40 {
            shed.push(viewer.recv_media().await.expect("media"));
        }
    })
    .await
    .expect("audio flows while video is shed");
    assert!(
        count(video_sub.media, &shed) == 0,
        "video kept flowing: {} packets beside 40 of audio",
        count(video_sub.media, &shed)
    );
    assert!(
        gw.metric_where("strait_drops_total", "reason=\"shed_video\"")
            .await
            > 0.0
    );

    // Level 1 and up: new joins are refused and the node is unready.
    let late = tokio::time::timeout(
        WAIT,
        strait_client::Client::connect(
            gw.client_config(strait_client::Transport::Quic, gw.token("busy", "late")),
        ),
    )
    .await
    .expect("connect in time")
    .expect("a connection is not a join: it is not shed");
    match late.join("busy").await {
        Err(ClientError::Rejected { code, .. }) => assert_eq!(code, ErrorCode::LIMIT_EXCEEDED),
        other => panic!("a join while overloaded: {other:?}"),
    }
    let said = gw
        .wait_http("/readyz", WAIT, |status, _| status == 503)
        .await;
    assert!(said.contains("overloaded: shedding at level"), "{said}");
    assert_eq!(
        probe(&gw, "/healthz").await.0,
        200,
        "overload is not a reason to restart"
    );

    // Calm again: back to level 0 one step at a time, then joins and video are back.
    // (Three steps of four calm seconds: longer than one `WAIT`.)
    gw.wait_metric_within("strait_worker_shed_level", "", 4 * WAIT, |level| {
        level == 0.0
    })
    .await;
    late.join("busy")
        .await
        .expect("a join once the load is gone");
    tokio::time::timeout(WAIT, async {
        loop {
            if viewer.recv_media().await.expect("media").media == video_sub.media {
                return;
            }
        }
    })
    .await
    .expect("video comes back");
    let report = streamer.stop().await;
    assert_eq!(report.failed, 0);
    assert_eq!(probe(&gw, "/readyz").await.0, 200);
    late.close().await;
    viewer.close().await;
    microphone.close().await;
    camera.close().await;
    gw.stop().await;
}
