//! The allocation of a subscriber's budget: measured costs, live layers, priorities, pausing.

use std::time::Duration;

use strait_media::bwe::{Estimate, LinkState};
use strait_media::sfu::{MediaId, Notification, PauseReason, TrackId, TrackSpec};

use crate::sfu::fixture::*;

fn estimate(bps: u64, state: LinkState) -> Estimate {
    Estimate {
        available_bps: bps,
        acked_bps: bps,
        proven_bps: bps,
        state,
        queue_delay: Duration::ZERO,
    }
}

/// A camera (or screen share) of three layers whose declared bitrates are all 0, as browser
/// simulcast over WHIP without `max-br` announces them.
fn undeclared(source: &str, media: &[u32]) -> TrackSpec {
    let mut spec = video_track("VP8", media);
    spec.source = source.into();
    for layer in &mut spec.layers {
        layer.max_bitrate = 0;
    }
    spec
}

/// Sends `seconds` of each stream at its rate: one 1 000-byte packet every `8_000 / rate` s,
/// keyframes every packet (so switches happen at once). Returns what participant `to` got.
fn play(
    h: &mut Harness,
    publisher: u64,
    streams: &mut [(Stream, u64)],
    seconds: u64,
    to: u64,
) -> Vec<Received> {
    let mut got = Vec::new();
    let mut payload = vp8(true);
    payload.resize(988, 0xab);
    // 10 ms steps; each stream sends what its rate owes by then.
    let mut owed = vec![0f64; streams.len()];
    for _ in 0..seconds * 100 {
        h.advance(10);
        for ((stream, rate), owe) in streams.iter_mut().zip(owed.iter_mut()) {
            *owe += *rate as f64 / 8_000.0 / 100.0;
            while *owe >= 1.0 {
                *owe -= 1.0;
                let packet = stream.next(&payload);
                got.extend(
                    h.send(publisher, stream.media, &packet)
                        .into_iter()
                        .filter(|r| r.to == p(to)),
                );
            }
        }
    }
    got
}

/// Participant 1 publishes a camera and a screen share (three layers each); 2 is in the room.
fn camera_and_screen() -> (Harness, TrackId, TrackId) {
    let mut h = Harness::new();
    h.join(1, "r");
    h.join(2, "r");
    let camera = h.publish(1, video_track("VP8", &[10, 11, 12]));
    let mut spec = video_track("VP8", &[20, 21, 22]);
    spec.source = "screen".into();
    let screen = h.publish(1, spec);
    (h, camera, screen)
}

fn target(h: &Harness, sub: u64, track: TrackId) -> u8 {
    h.sfu.subscription(p(sub), track).unwrap().target_layer
}

#[test]
fn layers_declared_at_zero_cost_what_they_carry_not_nothing() {
    let mut h = Harness::new();
    h.join(1, "r");
    h.join(2, "r");
    let track = h.publish(1, undeclared("camera", &[10, 11, 12]));
    h.sfu
        .set_estimate(p(2), estimate(550_000, LinkState::Clear), h.now)
        .unwrap();
    // Before anything is measured, the defaults (150 k / 500 k / 1.5 M): layer 1 does not fit
    // 550 k with headroom.
    let sub = h.subscribe(2, track);
    assert_eq!(sub.layer, 0, "a free top layer was chosen");
    // Measured: the real rates are 100 k / 300 k / 900 k, so layer 1 (300 k + 20 %) fits.
    let mut streams = [
        (Stream::video(10, 1), 100_000),
        (Stream::video(11, 1), 300_000),
        (Stream::video(12, 1), 900_000),
    ];
    play(&mut h, 1, &mut streams, 6, 2);
    assert_eq!(target(&h, 2, track), 1);
}

#[test]
fn a_layer_the_publisher_stops_is_given_up_within_a_second_and_a_half() {
    let mut h = Harness::new();
    h.join(1, "r");
    h.join(2, "r");
    let track = h.publish(1, video_track("VP8", &[10, 11, 12]));
    h.sfu
        .set_estimate(p(2), estimate(10_000_000, LinkState::Clear), h.now)
        .unwrap();
    h.subscribe(2, track);
    let mut streams = [
        (Stream::video(10, 1), 150_000),
        (Stream::video(11, 1), 500_000),
        (Stream::video(12, 1), 1_500_000),
    ];
    play(&mut h, 1, &mut streams, 3, 2);
    assert_eq!(target(&h, 2, track), 2);
    h.events();
    // The top layer stops; the others go on.
    let mut lower = [streams[0].clone(), streams[1].clone()];
    let got = play(&mut h, 1, &mut lower, 2, 2);
    assert_eq!(target(&h, 2, track), 1);
    let first_mid = got
        .iter()
        .position(|r| r.layer == 1)
        .expect("layer 1 forwarded");
    // 150 k + 500 k of 1 000-byte packets: ≈ 81 packets a second; the switch came within 1.5 s.
    assert!(first_mid < 122, "switched after {first_mid} packets");
    // It comes back when the top layer does.
    play(&mut h, 1, &mut streams, 3, 2);
    assert_eq!(target(&h, 2, track), 2);
}

#[test]
fn the_lowest_priority_video_is_paused_told_and_resumed() {
    let (mut h, camera, screen) = camera_and_screen();
    h.sfu
        .set_estimate(p(2), estimate(3_000_000, LinkState::Clear), h.now)
        .unwrap();
    h.subscribe(2, camera);
    h.subscribe(2, screen);
    h.events();
    // Only one floor fits: the screen share (priority 200 by its source) keeps it.
    h.advance(2_000);
    h.sfu
        .set_estimate(p(2), estimate(200_000, LinkState::Congested), h.now)
        .unwrap();
    let events = h.events();
    assert_eq!(
        Harness::notifications_for(&events, 2)
            .into_iter()
            .filter(|n| matches!(n, Notification::TrackPaused { .. }))
            .collect::<Vec<_>>(),
        [Notification::TrackPaused {
            track: camera,
            reason: PauseReason::Bandwidth
        }]
    );
    assert!(h.sfu.subscription(p(2), camera).unwrap().info.paused);
    assert_eq!(target(&h, 2, screen), 0);
    // Nothing of the paused camera is forwarded; the screen share's low layer is.
    let mut streams: Vec<Stream> = [10, 11, 12, 20, 21, 22]
        .into_iter()
        .map(|m| Stream::video(m, 1))
        .collect();
    assert!(h.send(1, 10, &streams[0].next(&vp8(true))).is_empty());
    assert_eq!(h.send(1, 20, &streams[3].next(&vp8(true))).len(), 1);
    assert_eq!(h.sfu.stats().drops.paused, 1);
    h.events();

    // Back up after the cooldown (every layer being sent meanwhile): resumed, told, and a
    // keyframe asked for its floor.
    h.sfu
        .set_estimate(p(2), estimate(3_000_000, LinkState::Clear), h.now)
        .unwrap();
    for _ in 0..40 {
        h.advance(250);
        for stream in &mut streams {
            let packet = stream.next(&vp8(false));
            h.send(1, stream.media, &packet);
        }
    }
    let events = h.events();
    assert!(
        Harness::notifications_for(&events, 2).contains(&Notification::TrackResumed {
            track: camera,
            reason: PauseReason::Bandwidth
        }),
        "{events:?}"
    );
    assert!(!h.sfu.subscription(p(2), camera).unwrap().info.paused);
    assert!(
        Harness::keyframe_requests(&events)
            .iter()
            .any(|&(to, t, _, _)| to == p(1) && t == camera),
        "{events:?}"
    );
    assert!(h.sfu.stats().resumes >= 1);
}

#[test]
fn a_priority_set_by_the_subscriber_wins_over_the_sources_default() {
    let (mut h, camera, screen) = camera_and_screen();
    h.sfu
        .set_estimate(p(2), estimate(3_000_000, LinkState::Clear), h.now)
        .unwrap();
    h.sfu
        .subscribe_with_priority(p(2), camera, None, Some(255), h.now)
        .unwrap();
    h.subscribe(2, screen);
    // The camera climbs first.
    assert_eq!((target(&h, 2, camera), target(&h, 2, screen)), (2, 1));
    h.sfu
        .set_estimate(p(2), estimate(200_000, LinkState::Congested), h.now)
        .unwrap();
    assert!(!h.sfu.subscription(p(2), camera).unwrap().info.paused);
    assert!(h.sfu.subscription(p(2), screen).unwrap().info.paused);
    // Set back to the default, the screen share wins the next time the floors are shared.
    h.sfu.set_priority(p(2), camera, None, h.now).unwrap();
    h.advance(10_000);
    h.sfu
        .set_estimate(p(2), estimate(3_000_000, LinkState::Clear), h.now)
        .unwrap();
    assert_eq!((target(&h, 2, camera), target(&h, 2, screen)), (1, 2));
}

#[test]
fn a_subscription_made_on_a_narrow_link_starts_paused_without_a_notification() {
    let mut h = Harness::new();
    h.join(1, "r");
    h.join(2, "r");
    let first = h.publish(1, video_track("VP8", &[10, 11, 12]));
    let second = h.publish(1, video_track("VP8", &[20, 21, 22]));
    h.sfu
        .set_estimate(p(2), estimate(200_000, LinkState::Clear), h.now)
        .unwrap();
    assert!(!h.subscribe(2, first).paused);
    h.events();
    let info = h.subscribe(2, second);
    assert!(info.paused);
    assert!(
        Harness::notifications_for(&h.events(), 2)
            .iter()
            .all(|n| !matches!(n, Notification::TrackPaused { .. }))
    );
}

#[test]
fn a_muted_video_frees_its_budget() {
    let mut h = Harness::new();
    h.join(1, "r");
    h.join(2, "r");
    let first = h.publish(1, video_track("VP8", &[10, 11, 12]));
    let second = h.publish(1, video_track("VP8", &[20, 21, 22]));
    h.sfu
        .set_estimate(p(2), estimate(2_000_000, LinkState::Clear), h.now)
        .unwrap();
    h.subscribe(2, first);
    h.subscribe(2, second);
    // The first keeps its top layer (keeping needs no headroom); the second climbs to the
    // middle with what is left.
    assert_eq!((target(&h, 2, first), target(&h, 2, second)), (2, 1));
    h.sfu.set_muted(p(1), first, true, h.now).unwrap();
    assert_eq!(target(&h, 2, second), 2);
    let _ = MediaId(0);
}

fn probes(events: &[strait_media::sfu::Event]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            strait_media::sfu::Event::Probe { padding_bps, .. } => Some(*padding_bps),
            _ => None,
        })
        .collect()
}

/// Advances by allocation ticks, at most `ticks` of them, until a probe event comes; returns
/// the first tick's probe events that were not empty (empty if none came).
fn next_probe(h: &mut Harness, ticks: usize) -> Vec<u64> {
    for _ in 0..ticks {
        h.advance(250);
        let padding = probes(&h.events());
        if !padding.is_empty() {
            return padding;
        }
    }
    Vec::new()
}

/// Subscriber `sub`'s link, still clear at `bps`, shows its queueing delay risen by
/// `PROBE_QUEUE_RISE`: the running probe stops at once.
fn queue_rises(h: &mut Harness, sub: u64, bps: u64) {
    let mut queueing = estimate(bps, LinkState::Clear);
    queueing.queue_delay = strait_media::sfu::PROBE_QUEUE_RISE;
    h.sfu.set_estimate(p(sub), queueing, h.now).unwrap();
    assert_eq!(probes(&h.events()), [0], "the probe stops");
}

/// Participant 1 publishes a camera of three layers; participant 2, whose leg is estimated
/// clear at `bps`, subscribes to it.
fn subscribed_at(bps: u64) -> (Harness, TrackId) {
    let mut h = Harness::new();
    h.join(1, "r");
    h.join(2, "r");
    let track = h.publish(1, video_track("VP8", &[10, 11, 12]));
    h.sfu
        .set_estimate(p(2), estimate(bps, LinkState::Clear), h.now)
        .unwrap();
    h.subscribe(2, track);
    (h, track)
}

#[test]
fn a_clear_link_with_a_layer_to_climb_to_is_probed_and_a_probe_that_queues_fails() {
    // What an app-limited leg on the lowest layer is given: not enough for the middle one.
    let (mut h, track) = subscribed_at(250_000);
    assert_eq!(target(&h, 2, track), 0);
    assert!(
        probes(&h.events()).is_empty(),
        "probed before the link was clear long enough"
    );
    h.advance(2_000);
    // The tick probes for the missing step, ramping: the leg is asked for 1.2 × the 250 k it
    // has shown, 150 k of padding on top of the 150 k of media it takes…
    assert_eq!(probes(&h.events()), [150_000]);
    // …and a tick later, the link still clear, for 1.2 × that.
    h.advance(250);
    assert_eq!(probes(&h.events()), [210_000]);
    // The padding raised the estimate: a climb came of it. The top layer is still missing,
    // so the probe goes on at the level it reached, the middle layer's media in the place of
    // that much padding (the least padding a probe sends, here).
    h.sfu
        .set_estimate(p(2), estimate(700_000, LinkState::Clear), h.now)
        .unwrap();
    assert_eq!(target(&h, 2, track), 1);
    assert_eq!(
        probes(&h.events()),
        [strait_media::sfu::PROBE_PADDING_BPS.0]
    );
    assert_eq!(h.sfu.stats().probes_failed, 0);

    // Still clear, but the queueing delay rose by 10 ms since the probe went on: it stops
    // before the queue overflows into media losses.
    queue_rises(&mut h, 2, 700_000);
    assert_eq!(h.sfu.stats().probes_failed, 1);
    assert_eq!(target(&h, 2, track), 1);
    // The queue gone, but the failed probe started the probe cooldown (`layer_up_cooldown`,
    // 2 s: the probe that went on after the climb is the same probe, settled when it ends):
    // nothing at 1.5 s.
    h.sfu
        .set_estimate(p(2), estimate(700_000, LinkState::Clear), h.now)
        .unwrap();
    for _ in 0..6 {
        h.advance(250);
    }
    assert!(probes(&h.events()).is_empty());
    // It comes by 3.5 s, and ramps from there.
    let mut padding = Vec::new();
    for _ in 0..8 {
        h.advance(250);
        padding.extend(probes(&h.events()));
    }
    assert!(padding.len() > 1, "{padding:?}");
    assert!(padding.windows(2).all(|w| w[0] < w[1]), "{padding:?}");
}

#[test]
fn congestion_right_after_a_probe_stopped_is_the_probes_until_it_outlasts_the_grace() {
    let (mut h, track) = subscribed_at(700_000);
    assert_eq!(target(&h, 2, track), 1);
    // A probe for the top layer starts once the link has been clear for a while.
    let padding = next_probe(&mut h, 12);
    assert_eq!(padding.len(), 1, "{padding:?}");
    // Its padding builds a queue: it stops…
    queue_rises(&mut h, 2, 700_000);
    // …and the congestion its queue shows a moment later lowers nothing: the padding stopped.
    h.advance(100);
    h.sfu
        .set_estimate(p(2), estimate(300_000, LinkState::Congested), h.now)
        .unwrap();
    assert_eq!(
        target(&h, 2, track),
        1,
        "the probe's congestion cost the media"
    );
    // A congestion that outlasts the grace is the link's: the layer falls.
    h.advance(500);
    assert_eq!(target(&h, 2, track), 0);
}

#[test]
fn congestion_right_after_a_climb_is_its_keyframes_until_it_outlasts_the_grace() {
    let (mut h, track) = subscribed_at(250_000);
    assert_eq!(target(&h, 2, track), 0);
    h.advance(2_000);
    h.sfu
        .set_estimate(p(2), estimate(700_000, LinkState::Clear), h.now)
        .unwrap();
    assert_eq!(
        target(&h, 2, track),
        1,
        "a clear link that carries it climbs"
    );
    // The new layer's keyframe queues for a moment: the congestion it shows lowers nothing…
    h.advance(100);
    h.sfu
        .set_estimate(p(2), estimate(300_000, LinkState::Congested), h.now)
        .unwrap();
    assert_eq!(target(&h, 2, track), 1, "the climb's keyframe undid it");
    // …but a congestion that outlasts the grace is the link's: the layer falls, and the climb
    // counts as failed.
    h.advance(500);
    assert_eq!(target(&h, 2, track), 0);
    assert_eq!(h.sfu.stats().failed_climbs, 1);
}
