//! Keyframe gating of video subscriptions and keyframe requests upstream.

use strait_media::sfu::{Event, MediaId, SfuError, TrackId};

use crate::sfu::fixture::{Harness, Stream, audio_track, p, video_track, vp8, vp8_continuation};

/// 1 publishes a single-layer VP8 track on media 5; 2 and 3 are in the room.
fn video_room() -> (Harness, TrackId) {
    let mut h = Harness::new();
    for id in 1..=3 {
        h.join(id, "r");
    }
    let track = h.publish(1, video_track("VP8", &[5]));
    h.events();
    (h, track)
}

#[test]
fn a_new_video_subscription_asks_for_a_keyframe_and_waits_for_it() {
    let (mut h, track) = video_room();
    let mut stream = Stream::video(5, 1000);
    let sub = h.subscribe(2, track);
    assert_eq!(
        Harness::keyframe_requests(&h.events()),
        [(p(1), track, 0, MediaId(5))]
    );
    assert_eq!(h.sfu.subscription(p(2), track).unwrap().current_layer, None);

    assert!(h.send(1, 5, &stream.next(&vp8(false))).is_empty());
    assert!(h.send(1, 5, &stream.next(&vp8_continuation())).is_empty());
    assert_eq!(h.sfu.stats().drops.waiting_for_keyframe, 2);

    let key = h.send(1, 5, &stream.next(&vp8(true)));
    assert_eq!(key.len(), 1);
    assert_eq!(
        (key[0].to, key[0].media, key[0].ssrc),
        (p(2), sub.media, sub.ssrc)
    );
    let rest = h.send(1, 5, &stream.next(&vp8_continuation()));
    assert_eq!(rest[0].seq, key[0].seq.wrapping_add(1));
    let delta = h.send(1, 5, &stream.next(&vp8(false)));
    assert_eq!(delta[0].seq, key[0].seq.wrapping_add(2));
    assert_eq!(
        h.sfu.subscription(p(2), track).unwrap().current_layer,
        Some(0)
    );
    // Starting on the announced layer is not a switch.
    assert!(Harness::notifications_for(&h.events(), 2).is_empty());
    assert_eq!(h.sfu.stats().layer_switches, 0);
}

#[test]
fn requests_within_the_interval_are_coalesced_and_sent_when_it_ends() {
    let (mut h, track) = video_room();
    h.subscribe(2, track);
    assert_eq!(Harness::keyframe_requests(&h.events()).len(), 1);
    h.advance(100);
    h.subscribe(3, track);
    h.sfu.request_keyframe(p(2), track, h.now).unwrap();
    assert!(
        Harness::keyframe_requests(&h.events()).is_empty(),
        "throttled"
    );
    assert_eq!(h.sfu.stats().keyframe_requests_throttled, 2);
    assert_eq!(
        h.sfu.poll_timeout(),
        Some(h.base + std::time::Duration::from_millis(500))
    );

    // No keyframe came: the held-back request goes when the window ends, once.
    h.advance(399);
    assert!(h.events().is_empty());
    h.advance(1);
    assert_eq!(
        Harness::keyframe_requests(&h.events()),
        [(p(1), track, 0, MediaId(5))]
    );
    assert_eq!(h.sfu.stats().keyframe_requests_sent, 2);
    assert_eq!(h.sfu.poll_timeout(), None);

    // After the interval, a new request goes at once.
    h.advance(500);
    h.sfu.request_keyframe(p(3), track, h.now).unwrap();
    assert_eq!(Harness::keyframe_requests(&h.events()).len(), 1);
    assert_eq!(h.sfu.stats().keyframe_requests_sent, 3);
}

#[test]
fn a_keyframe_answers_held_back_requests() {
    let (mut h, track) = video_room();
    let mut stream = Stream::video(5, 1);
    h.subscribe(2, track);
    h.advance(100);
    h.subscribe(3, track);
    h.events();
    assert!(h.sfu.poll_timeout().is_some());
    let out = h.send(1, 5, &stream.next(&vp8(true)));
    assert_eq!(out.len(), 2, "both start at the keyframe");
    assert_eq!(h.sfu.poll_timeout(), None, "nothing left to ask for");
    h.advance(1000);
    assert!(h.events().is_empty());
    assert_eq!(h.sfu.stats().keyframe_requests_sent, 1);
}

#[test]
fn a_subscribers_request_reaches_the_publisher() {
    let (mut h, track) = video_room();
    h.subscribe(2, track);
    h.events();
    h.advance(600);
    h.sfu.request_keyframe(p(2), track, h.now).unwrap();
    assert_eq!(
        h.events(),
        [Event::KeyframeRequest {
            to: p(1),
            track,
            layer: 0,
            media: MediaId(5)
        }]
    );
    assert_eq!(
        h.sfu.request_keyframe(p(3), track, h.now),
        Err(SfuError::NotSubscribed(track))
    );
}

#[test]
fn audio_needs_no_keyframe() {
    let mut h = Harness::new();
    h.join(1, "r");
    h.join(2, "r");
    let track = h.publish(1, audio_track(1));
    h.subscribe(2, track);
    h.sfu.request_keyframe(p(2), track, h.now).unwrap();
    assert!(Harness::keyframe_requests(&h.events()).is_empty());
}

#[test]
fn requests_for_a_disconnected_publisher_wait_for_its_return() {
    let (mut h, track) = video_room();
    h.sfu.disconnect(p(1), h.now).unwrap();
    h.subscribe(2, track);
    assert!(Harness::keyframe_requests(&h.events()).is_empty());
    h.advance(1000);
    assert!(h.events().is_empty());
    h.sfu.reconnect(p(1), h.now).unwrap();
    assert_eq!(
        Harness::keyframe_requests(&h.events()),
        [(p(1), track, 0, MediaId(5))]
    );
}

#[test]
fn a_codec_without_keyframe_detection_forwards_at_once() {
    let mut h = Harness::new();
    h.join(1, "r");
    h.join(2, "r");
    let track = h.publish(1, video_track("H265", &[5]));
    let mut stream = Stream::video(5, 1);
    h.subscribe(2, track);
    assert_eq!(h.send(1, 5, &stream.next(&[0x02, 0x01, 0xff])).len(), 1);
    assert_eq!(h.send(1, 5, &stream.next(&[0x02, 0x01, 0xfe])).len(), 1);
}

#[test]
fn a_request_can_name_the_subscription_by_its_media_id() {
    let (mut h, track) = video_room();
    let sub = h.subscribe(2, track);
    h.events();
    h.advance(600);
    h.sfu
        .request_keyframe_for_media(p(2), sub.media, h.now)
        .unwrap();
    assert_eq!(
        Harness::keyframe_requests(&h.events()),
        [(p(1), track, 0, MediaId(5))]
    );
    assert_eq!(
        h.sfu.request_keyframe_for_media(p(2), MediaId(9), h.now),
        Err(SfuError::UnknownMedia(MediaId(9)))
    );
}
