//! A session that floods media costs only itself: its packets beyond its budget are dropped
//! before its worker, and everyone else's media keeps flowing.
//!
//! A test binary of its own: it compares loss with and without a flood, so it runs alone, not
//! beside other tests that load the same two cores.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use strait_client::Session;
use strait_protocol::MediaId;
use strait_tests::bridge::{VideoCodec, rtp_of};
use strait_tests::fixture::{TestGateway, WAIT, opus_spec, rtp};

const SPEAKERS: usize = 20;
/// Packets each speaker sends per round, 50 per second (20 ms audio).
const PER_ROUND: u32 = 100;

/// One round: every speaker sends `PER_ROUND` packets, paced at 50 per second, starting at
/// `first`; returns the share the listener did not receive within the round's 2 s and 2 s more.
async fn round(
    speakers: &[(Arc<Session>, MediaId)],
    listener: &Session,
    heard: &HashMap<MediaId, strait_protocol::ParticipantId>,
    first: u32,
) -> f64 {
    let senders: Vec<_> = speakers
        .iter()
        .enumerate()
        .map(|(i, (session, media))| {
            let (session, media) = (Arc::clone(session), *media);
            let ssrc = 0x5000 + u32::try_from(i).unwrap();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(20));
                for n in first..first + PER_ROUND {
                    tick.tick().await;
                    let packet = rtp::opus(n as u16, n * 960, ssrc, n);
                    let _ = session.send_rtp(media, &packet);
                }
            })
        })
        .collect();
    let expected = SPEAKERS * PER_ROUND as usize;
    let mut received = 0usize;
    let receiving = async {
        while received < expected {
            let Some(packet) = listener.recv_media().await else {
                break;
            };
            // Only the speakers' packets of this round count.
            if heard.contains_key(&packet.media) && rtp::index_at(&packet.rtp, 12) >= first {
                received += 1;
            }
        }
    };
    // Every packet of the round, and then 2 s for the last ones to arrive: what has not by then
    // is lost.
    let allowed = Duration::from_millis(20 * u64::from(PER_ROUND)) + Duration::from_secs(2);
    let _ = tokio::time::timeout(allowed, receiving).await;
    for sender in senders {
        sender.await.expect("sender");
    }
    1.0 - received as f64 / expected as f64
}

/// A session floods datagrams (on its own published media id, which a listener subscribes to,
/// and on a media id it never published) beside 20 audio speakers and a WHEP viewer, all on
/// one worker. The listener's loss of the speakers' audio rises by less than half a
/// percentage point, the WHEP viewer stays connected, and the flood is dropped as the
/// flooder's own (`media_budget`). Without the budget the flood filled the listener's datagram
/// buffer and the worker, and the speakers' audio was lost with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_flooding_media_costs_only_itself() {
    let gw = TestGateway::start_with(|c| {
        c.media.workers = Some(1);
        c.limits.media_packets_per_second = 500;
        c.limits.media_burst = 50;
    })
    .await;
    let mut speakers = Vec::new();
    for i in 0..SPEAKERS {
        let session = gw.native("calm", &format!("speaker-{i}")).await;
        let track = session.publish(opus_spec()).await.expect("publish");
        speakers.push((Arc::new(session), track.media[0]));
    }
    let flooder = Arc::new(gw.native("calm", "flooder").await);
    let flood_track = flooder.publish(opus_spec()).await.expect("publish");
    let camera = gw
        .native_video_publisher("calm", "camera", VideoCodec::Vp8, 96)
        .await;
    let viewer = gw.whep_subscriber("calm", camera.published.track).await;
    let mut video = rtp_of(Arc::clone(&viewer.remote));

    // The listener subscribes to every speaker and to the flooder.
    let listener = gw.native("calm", "listener").await;
    let mut heard = HashMap::new();
    tokio::time::timeout(WAIT, async {
        while listener.tracks().len() < SPEAKERS + 2 {
            listener.next_event().await.expect("listener open");
        }
    })
    .await
    .expect("every track announced");
    let speaker_ids: Vec<_> = speakers.iter().map(|(s, _)| s.participant()).collect();
    for track in listener.tracks() {
        let sub = listener
            .subscribe(track.track, None)
            .await
            .expect("subscribe");
        if speaker_ids.contains(&track.participant) {
            heard.insert(sub.media, track.participant);
        }
    }
    assert_eq!(heard.len(), SPEAKERS);

    let calm = round(&speakers, &listener, &heard, 0).await;

    // The flood: bursts of 1000 datagrams every 20 ms (50 000 per second, a hundred times the
    // flooder's budget), half on its published media id, half on one it never published.
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let (flooder, stop) = (Arc::clone(&flooder), Arc::clone(&stop));
        let media = flood_track.media[0];
        tokio::spawn(async move {
            let payload = [0x66u8; 900];
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            // Bounded: at most 60 s of flood.
            for burst in 0..3000u32 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                tick.tick().await;
                for n in 0..1000u32 {
                    let seq = (burst * 1000 + n) as u16;
                    let packet = rtp::packet(111, false, seq, n, 0x0bad, &payload);
                    let on = if n % 2 == 0 { media } else { MediaId(999) };
                    let _ = flooder.send_rtp(on, &packet);
                }
            }
        })
    };
    let flooded = round(&speakers, &listener, &heard, PER_ROUND).await;
    stop.store(true, Ordering::Relaxed);
    flood.await.expect("flood");

    assert!(
        flooded - calm < 0.005,
        "the listener lost {:.2} % of the speakers' audio under the flood, {:.2} % without",
        flooded * 100.0,
        calm * 100.0
    );
    assert!(
        gw.metric_where("strait_drops_total", "reason=\"media_budget\"")
            .await
            > 0.0,
        "the flood was dropped as the flooder's own"
    );
    // The WHEP viewer is still connected and still receives video.
    while video.try_recv().is_ok() {}
    tokio::time::timeout(WAIT, video.recv())
        .await
        .expect("video after the flood")
        .expect("the viewer's track is open");
    assert_eq!(gw.metric("strait_webrtc_peers").await, 1.0);

    viewer.close().await;
    camera.close().await;
    for (session, _) in &speakers {
        session.close().await;
    }
    flooder.close().await;
    listener.close().await;
    gw.stop().await;
}
