//! Simulcast: layer choice from bandwidth and preference, switching at keyframes, continuity.

use strait_media::sfu::{MediaId, Notification, TrackId};

use crate::sfu::fixture::{HIGH, Harness, LOW, MID, Stream, p, video_track, vp8};

/// 1 publishes VP8 simulcast on media 10 (low), 11 (mid), 12 (high); 2 is in the room.
fn simulcast_room() -> (Harness, TrackId, [Stream; 3]) {
    let mut h = Harness::new();
    h.join(1, "r");
    h.join(2, "r");
    let track = h.publish(1, video_track("VP8", &[10, 11, 12]));
    h.events();
    let streams = [
        Stream::video(10, 100),
        Stream::video(11, 20_000),
        Stream::video(12, 40_000),
    ];
    (h, track, streams)
}

/// Sends one packet on every layer (keyframes or not) and returns the layers forwarded to 2.
fn send_all(
    h: &mut Harness,
    streams: &mut [Stream; 3],
    key: bool,
) -> Vec<crate::sfu::fixture::Received> {
    let mut out = Vec::new();
    for stream in streams.iter_mut() {
        let packet = stream.next(&vp8(key));
        out.extend(h.send(1, stream.media, &packet));
    }
    out
}

#[test]
fn without_an_estimate_the_top_layer_is_forwarded() {
    let (mut h, track, mut streams) = simulcast_room();
    let sub = h.subscribe(2, track);
    assert_eq!(sub.layer, 2);
    assert_eq!(
        Harness::keyframe_requests(&h.events()),
        [(p(1), track, 2, MediaId(12))]
    );
    let out = send_all(&mut h, &mut streams, true);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].layer, 2);
    assert_eq!(h.sfu.stats().drops.other_layer, 2);
}

#[test]
fn a_bandwidth_drop_switches_down_only_at_a_keyframe_of_the_lower_layer() {
    let (mut h, track, mut streams) = simulcast_room();
    h.subscribe(2, track);
    let first = send_all(&mut h, &mut streams, true);
    h.events();
    assert_eq!(first[0].layer, 2);

    h.advance(33);
    h.sfu
        .set_bandwidth(p(2), u64::from(LOW) + 50_000, h.now)
        .unwrap();
    assert_eq!(h.sfu.subscription(p(2), track).unwrap().target_layer, 0);
    assert_eq!(
        Harness::keyframe_requests(&h.events()),
        [(p(1), track, 0, MediaId(10))]
    );

    // Until layer 0 sends a keyframe, layer 2 keeps flowing, and layer 0's deltas are skipped.
    let mut last = first[0].clone();
    for _ in 0..3 {
        let mut out = send_all(&mut h, &mut streams, false);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].layer, 2);
        assert_eq!(out[0].seq, last.seq.wrapping_add(1));
        last = out.remove(0);
        h.advance(33);
    }
    assert!(h.sfu.stats().drops.waiting_for_keyframe >= 3);

    // A keyframe on layer 0 (and only there).
    h.advance(7);
    let packet = streams[0].next(&vp8(true));
    let switched = h.send(1, 10, &packet);
    assert_eq!(switched.len(), 1);
    let got = &switched[0];
    assert_eq!(got.layer, 0);
    assert_eq!(got.ssrc, last.ssrc, "the SSRC survives the switch");
    assert_eq!(
        got.seq,
        last.seq.wrapping_add(1),
        "sequence numbers stay continuous"
    );
    assert_eq!(
        got.ts,
        last.ts.wrapping_add(40 * 90),
        "40 ms elapsed at 90 kHz"
    );
    assert_eq!(
        Harness::notifications_for(&h.events(), 2),
        [Notification::LayerSwitched { track, layer: 0 }]
    );
    assert_eq!(h.sfu.stats().layer_switches, 1);

    // From now on layer 2 is skipped and layer 0 continues in sequence.
    let out = send_all(&mut h, &mut streams, false);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].layer, out[0].seq), (0, got.seq.wrapping_add(1)));
    assert_eq!(out[0].ts, got.ts.wrapping_add(3000));
    assert_eq!(
        h.sfu.subscription(p(2), track).unwrap().current_layer,
        Some(0)
    );
}

#[test]
fn going_up_needs_headroom_and_waits_out_the_cooldown() {
    let (mut h, track, _) = simulcast_room();
    h.sfu.set_bandwidth(p(2), u64::from(LOW), h.now).unwrap();
    let sub = h.subscribe(2, track);
    assert_eq!(sub.layer, 0, "the estimate chooses the first layer");
    let target = |h: &Harness| h.sfu.subscription(p(2), track).unwrap().target_layer;

    // Layer 1 costs 500 kbit/s; climbing to it needs 20 % more (an estimate is taken again only
    // when it moved by 10 %).
    h.sfu
        .set_bandwidth(p(2), u64::from(MID) + 90_000, h.now)
        .unwrap();
    assert_eq!(target(&h), 0);
    h.sfu
        .set_bandwidth(p(2), u64::from(MID) + 150_000, h.now)
        .unwrap();
    assert_eq!(target(&h), 1);
    // Keeping it needs only its bitrate.
    h.sfu.set_bandwidth(p(2), u64::from(MID), h.now).unwrap();
    assert_eq!(target(&h), 1);
    h.sfu
        .set_bandwidth(p(2), u64::from(MID) * 9 / 10 - 1, h.now)
        .unwrap();
    assert_eq!(target(&h), 0);
    // Shortly after a fall, no climb with an estimate that is back to where it was. The climb
    // to 1 failed (the fall came within CLIMB_TRIAL), so the cooldown is twice
    // `layer_up_cooldown`; when it ends, the allocation tick climbs without a new estimate.
    h.advance(1000);
    h.sfu
        .set_bandwidth(p(2), u64::from(MID) + 150_000, h.now)
        .unwrap();
    assert_eq!(target(&h), 0);
    for _ in 0..4 {
        h.advance(250);
    }
    assert_eq!(target(&h), 0, "the cooldown doubled after a failed climb");
    for _ in 0..8 {
        h.advance(250);
    }
    assert_eq!(target(&h), 1);
    assert_eq!(h.sfu.stats().failed_climbs, 1);
    // An estimate clearly above the one at the last fall (half as much again) lifts the
    // cooldown: the link came back.
    h.sfu.set_bandwidth(p(2), u64::from(LOW), h.now).unwrap();
    assert_eq!(target(&h), 0);
    h.sfu
        .set_bandwidth(p(2), u64::from(HIGH) * 2, h.now)
        .unwrap();
    assert_eq!(target(&h), 2);
}

#[test]
fn the_preference_caps_the_layer() {
    let (mut h, track, mut streams) = simulcast_room();
    let sub = h.sfu.subscribe(p(2), track, Some(1), h.now).unwrap();
    assert_eq!(sub.layer, 1);
    let out = send_all(&mut h, &mut streams, true);
    assert_eq!(out.iter().map(|r| r.layer).collect::<Vec<_>>(), [1]);
    h.events();

    h.sfu
        .set_layer_preference(p(2), track, Some(0), h.now)
        .unwrap();
    assert_eq!(
        Harness::keyframe_requests(&h.events()),
        [(p(1), track, 0, MediaId(10))]
    );
    h.advance(33);
    let out = send_all(&mut h, &mut streams, true);
    assert_eq!(out.iter().map(|r| r.layer).collect::<Vec<_>>(), [0]);
    // Plenty of bandwidth does not lift the cap; a cap above the top means the top.
    h.sfu.set_bandwidth(p(2), 100_000_000, h.now).unwrap();
    assert_eq!(h.sfu.subscription(p(2), track).unwrap().target_layer, 0);
    h.sfu
        .set_layer_preference(p(2), track, Some(9), h.now)
        .unwrap();
    assert_eq!(h.sfu.subscription(p(2), track).unwrap().target_layer, 2);
}

#[test]
fn subscriptions_share_the_budget_lowest_layers_first() {
    let mut h = Harness::new();
    h.join(1, "r");
    h.join(2, "r");
    let a = h.publish(1, video_track("VP8", &[10, 11, 12]));
    let b = h.publish(1, video_track("VP8", &[20, 21, 22]));
    // Enough for both low layers and one mid layer with headroom, not two.
    h.sfu
        .set_bandwidth(p(2), u64::from(2 * LOW + (MID - LOW) + MID / 5), h.now)
        .unwrap();
    assert_eq!(h.subscribe(2, a).layer, 1);
    assert_eq!(h.subscribe(2, b).layer, 0);
    // Unsubscribing one frees its share for the other.
    h.sfu.unsubscribe(p(2), a, h.now).unwrap();
    assert_eq!(h.sfu.subscription(p(2), b).unwrap().target_layer, 1);
}

#[test]
fn switching_up_also_waits_for_a_keyframe() {
    let (mut h, track, mut streams) = simulcast_room();
    h.sfu.subscribe(p(2), track, Some(0), h.now).unwrap();
    let start = send_all(&mut h, &mut streams, true);
    assert_eq!(start[0].layer, 0);
    h.sfu
        .set_layer_preference(p(2), track, None, h.now)
        .unwrap();
    h.advance(33);
    let out = send_all(&mut h, &mut streams, false);
    assert_eq!(out.iter().map(|r| r.layer).collect::<Vec<_>>(), [0]);
    h.advance(33);
    // Layer 0's keyframe still goes out on layer 0; layer 2's is where the switch happens.
    let out = send_all(&mut h, &mut streams, true);
    assert_eq!(out.iter().map(|r| r.layer).collect::<Vec<_>>(), [0, 2]);
    assert_eq!(out[1].seq, out[0].seq.wrapping_add(1));
    assert_eq!(out[0].seq, start[0].seq.wrapping_add(2));
}

#[test]
fn a_late_packet_from_before_the_switch_keyframe_is_not_forwarded() {
    let (mut h, track, mut streams) = simulcast_room();
    h.subscribe(2, track);
    let start = send_all(&mut h, &mut streams, true);
    assert_eq!(start[0].layer, 2);
    h.sfu
        .set_layer_preference(p(2), track, Some(0), h.now)
        .unwrap();
    // Layer 0 sends a delta, then a keyframe; the delta is delayed past the keyframe.
    let late = streams[0].next(&vp8(false));
    let key = streams[0].next(&vp8(true));
    let switched = h.send(1, 10, &key);
    assert_eq!(
        (switched[0].layer, switched[0].seq),
        (0, start[0].seq.wrapping_add(1))
    );
    let before = h.sfu.stats().drops.waiting_for_keyframe;
    assert!(
        h.send(1, 10, &late).is_empty(),
        "its number would repeat one already sent"
    );
    assert_eq!(h.sfu.stats().drops.waiting_for_keyframe, before + 1);
    let next = h.send(1, 10, &streams[0].next(&vp8(false)));
    assert_eq!(next[0].seq, switched[0].seq.wrapping_add(1));
}
