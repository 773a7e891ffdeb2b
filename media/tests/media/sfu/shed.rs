//! Load shedding: a layer ceiling takes subscriptions down to the lowest simulcast layer (and
//! lifting it brings them back), and video is then forwarded only from the latest speakers,
//! while every audio packet still goes through.

use strait_media::sfu::TrackId;

use crate::sfu::fixture::{Harness, Stream, audio_track, p, video_track, vp8};

/// 1 publishes VP8 simulcast on media 10 (low), 11 (mid), 12 (high); 2 subscribes.
fn simulcast_room() -> (Harness, TrackId, [Stream; 3]) {
    let mut h = Harness::new();
    h.join(1, "r");
    h.join(2, "r");
    let track = h.publish(1, video_track("VP8", &[10, 11, 12]));
    let streams = [
        Stream::video(10, 100),
        Stream::video(11, 20_000),
        Stream::video(12, 40_000),
    ];
    (h, track, streams)
}

/// One keyframe on every layer; the layers forwarded.
fn keyframes(h: &mut Harness, streams: &mut [Stream; 3]) -> Vec<u8> {
    let mut layers = Vec::new();
    for stream in streams.iter_mut() {
        let packet = stream.next(&vp8(true));
        layers.extend(h.send(1, stream.media, &packet).iter().map(|r| r.layer));
    }
    layers
}

#[test]
fn a_layer_ceiling_takes_every_subscription_down_and_lifting_it_brings_them_back() {
    let (mut h, track, mut streams) = simulcast_room();
    assert_eq!(h.subscribe(2, track).layer, 2);
    assert_eq!(keyframes(&mut h, &mut streams), [2]);
    h.events();

    h.sfu.set_layer_ceiling(Some(0), h.now);
    assert_eq!(h.sfu.layer_ceiling(), Some(0));
    let asked = Harness::keyframe_requests(&h.events());
    assert!(
        asked
            .iter()
            .any(|&(_, t, layer, _)| t == track && layer == 0),
        "{asked:?}"
    );
    h.advance(600);
    assert_eq!(
        keyframes(&mut h, &mut streams),
        [0],
        "the lowest layer only"
    );

    h.sfu.set_layer_ceiling(None, h.now);
    h.advance(600);
    // The low layer's keyframe still goes out (it is first), then the switch up.
    assert_eq!(
        keyframes(&mut h, &mut streams).last(),
        Some(&2),
        "the top layer again"
    );
    assert_eq!(keyframes(&mut h, &mut streams), [2]);
}

#[test]
fn only_the_latest_speakers_video_is_forwarded_and_audio_always() {
    let mut h = Harness::new();
    for id in 1..=4 {
        h.join(id, "r");
    }
    // 1, 2 and 3 each publish audio (media 1) and video (media 2); 4 subscribes to all.
    let mut tracks = Vec::new();
    for id in 1..=3 {
        let audio = h.publish(id, audio_track(1));
        let video = h.publish(id, video_track("VP8", &[2]));
        h.subscribe(4, audio);
        h.subscribe(4, video);
        tracks.push((audio, video));
    }
    let mut audio: Vec<Stream> = (0..3).map(|_| Stream::audio(1)).collect();
    let mut video: Vec<Stream> = (0..3).map(|_| Stream::video(2, 100)).collect();
    let voice = vec![0x5a; 60];
    let silence = vec![0xf8, 0xff, 0xfe];
    // 3 spoke first, then 1; 2 only sends silence.
    h.send(3, 1, &audio[2].next(&voice));
    h.advance(20);
    h.send(1, 1, &audio[0].next(&voice));
    h.send(2, 1, &audio[1].next(&silence));
    for (i, stream) in video.iter_mut().enumerate() {
        let id = i as u64 + 1;
        assert_eq!(h.send(id, 2, &stream.next(&vp8(true))).len(), 1);
    }
    h.events();

    // Video from the latest speaker only.
    h.sfu.set_video_speakers(Some(1), h.now);
    assert_eq!(h.sfu.video_speakers(), Some(1));
    for (i, stream) in video.iter_mut().enumerate() {
        let id = i as u64 + 1;
        let forwarded = h.send(id, 2, &stream.next(&vp8(false))).len();
        assert_eq!(forwarded, usize::from(id == 1), "video of {id}");
    }
    assert_eq!(h.sfu.stats().drops.shed, 2);
    // Audio of everyone, speaking or not.
    for (i, stream) in audio.iter_mut().enumerate() {
        let id = i as u64 + 1;
        assert_eq!(
            h.send(id, 1, &stream.next(&silence)).len(),
            1,
            "audio of {id}"
        );
    }

    // Two speakers: 3 (who spoke before 1) comes back, at a keyframe it is asked for.
    h.sfu.set_video_speakers(Some(2), h.now);
    // (Asked at once, or when the keyframe throttle of the track allows.)
    h.advance(1000);
    let asked = Harness::keyframe_requests(&h.events());
    assert!(
        asked
            .iter()
            .any(|&(who, t, _, _)| who == p(3) && t == tracks[2].1),
        "{asked:?}"
    );
    assert_eq!(
        h.send(3, 2, &video[2].next(&vp8(false))).len(),
        0,
        "not before a keyframe"
    );
    assert_eq!(h.send(3, 2, &video[2].next(&vp8(true))).len(), 1);
    assert_eq!(
        h.send(2, 2, &video[1].next(&vp8(true))).len(),
        0,
        "2 is still shed"
    );

    // Shedding ends: everyone's video again.
    h.sfu.set_video_speakers(None, h.now);
    assert_eq!(h.send(2, 2, &video[1].next(&vp8(true))).len(), 1);
}
