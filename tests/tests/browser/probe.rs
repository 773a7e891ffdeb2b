//! Headless Chromium as a plain WHEP player of a simulcast track whose top layer is above where
//! a new viewer's estimate starts: the player climbs to it only through probes, padding-only
//! RTX packets that Chromium must report in its transport-wide feedback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use strait_client::protocol::{Codec, TrackKind};
use strait_client::{LayerSpec, PublishSpec, Session, SessionEvent};
use strait_gateway::auth::Grants;
use strait_tests::browser::{repo_root, require_chromium, require_node, require_playwright};
use strait_tests::fixture::TestGateway;
use strait_tests::sim::{MediaKind, PublisherConfig, SimulcastPublisher};

use crate::demo::{BROWSER_LIMIT, run_node};

/// The layers: the top one (3 Mbit/s) is above a new viewer's start (2.5 Mbit/s).
const LAYERS_BPS: [u64; 3] = [150_000, 500_000, 3_000_000];

/// Publishes `publisher`'s three layers in real time on `session` (`media[i]` for layer `i`),
/// answering keyframe requests, until the task is dropped.
async fn publish(session: Arc<Session>, media: Vec<strait_client::protocol::MediaId>) {
    let mut config = PublisherConfig {
        audio: None,
        ..PublisherConfig::default()
    };
    for (layer, bps) in config.layers.iter_mut().zip(LAYERS_BPS) {
        layer.bitrate_bps = bps;
    }
    let mut source = SimulcastPublisher::new(config, Instant::now(), 7);
    let (keyframes_tx, mut keyframes) = tokio::sync::mpsc::unbounded_channel();
    let events = {
        let session = Arc::clone(&session);
        tokio::spawn(async move {
            while let Some(event) = session.next_event().await {
                if let SessionEvent::KeyframeRequested { layer, .. } = event
                    && keyframes_tx.send(layer).is_err()
                {
                    return;
                }
            }
        })
    };
    let _events = AbortOnDrop(events);
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                for packet in source.poll_packets(Instant::now()) {
                    if let MediaKind::Video { layer, .. } = packet.kind {
                        let _ = session.send_rtp(media[layer], &packet.rtp);
                    }
                }
            }
            Some(layer) = keyframes.recv() => match layer {
                Some(layer) => source.request_keyframe(usize::from(layer)),
                None => (0..LAYERS_BPS.len()).for_each(|l| source.request_keyframe(l)),
            },
        }
    }
}

/// Aborts its task when dropped (with the publishing task that holds it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A WHEP player in Chromium, placed below the top layer by its start estimate (it gets its cap
/// until the first estimate), climbs back to the 3 Mbit/s top layer: the gateway probes its link with RTX padding, Chromium's TWCC feedback reports it,
/// and the estimate that follows lets the allocation climb. The leg is never found to leave
/// padding out of its feedback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chromium_whep_player_climbs_to_a_top_layer_through_probes() {
    let root = repo_root();
    require_node();
    let chromium = require_chromium();
    require_playwright(&root);
    let _heavy = crate::HEAVY.lock().await;

    // Keyframe requests close together are not held back long (each layer switch asks one).
    let gw = TestGateway::start_with(|c| {
        c.media.keyframe_request_interval = Duration::from_millis(50);
    })
    .await;
    let camera = Arc::new(gw.native("probe", "camera").await);
    let published = camera
        .publish(PublishSpec {
            kind: TrackKind::Video,
            codec: Codec {
                name: "VP8".into(),
                payload_type: 96,
                clock_rate: 90_000,
                channels: 0,
                fmtp: String::new(),
            },
            source: "camera".into(),
            layers: LAYERS_BPS
                .iter()
                .map(|&bps| LayerSpec {
                    max_bitrate: u32::try_from(bps).expect("fits"),
                    width: 0,
                    height: 0,
                })
                .collect(),
            muted: false,
        })
        .await
        .expect("publish");
    let sending = tokio::spawn(publish(Arc::clone(&camera), published.media.clone()));

    let token = gw.token_with(
        "probe",
        "player",
        Grants {
            publish: false,
            subscribe: true,
            admin: false,
        },
    );
    let env = [
        ("STRAIT_DEMO_URL", format!("http://{}/", gw.http_addr())),
        ("STRAIT_CHROMIUM", chromium.display().to_string()),
        (
            "STRAIT_WHEP_PATH",
            format!("/whep/probe/{}", published.track.0),
        ),
        ("STRAIT_TOKEN", token),
        ("STRAIT_BELOW_BPS", "1500000".into()),
        ("STRAIT_TOP_BPS", "2400000".into()),
    ];
    let run = run_node(&["web-demo/test/whep-probe.mjs"], &env, BROWSER_LIMIT).await;
    println!("{}", run.stdout);
    eprintln!("{}", run.stderr);
    let probes = gw.metric("strait_allocation_probes_total").await;
    let failed = gw.metric("strait_allocation_probes_failed_total").await;
    let padding = gw.metric("strait_padding_datagrams_total").await;
    let unreported = gw.metric("strait_webrtc_padding_unreported_total").await;
    println!(
        "probes {probes} ({failed} failed), padding packets {padding}, legs leaving padding out \
         {unreported}"
    );
    assert!(
        run.status.success() && run.stdout.contains("whep-probe: PASS"),
        "the WHEP player did not reach the top layer ({}); its output is above",
        run.status
    );
    assert!(probes >= 1.0, "the player's link was never probed");
    assert!(padding > 0.0, "no padding went out");
    assert_eq!(unreported, 0.0, "Chromium's feedback left the padding out");

    sending.abort();
    gw.stop().await;
}
