//! Disconnect, grace period, resume and expiry.

use std::time::Duration;

use strait_media::sfu::{Event, LeaveReason, MediaId, Notification, SfuError};

use crate::sfu::fixture::{Harness, Stream, audio_track, opus_payload, p, video_track, vp8};

#[test]
fn nothing_is_forwarded_to_a_disconnected_subscriber() {
    let mut h = Harness::new();
    for id in 1..=3 {
        h.join(id, "r");
    }
    let track = h.publish(1, audio_track(1));
    h.subscribe(2, track);
    h.subscribe(3, track);
    let mut stream = Stream::audio(1);
    assert_eq!(h.send(1, 1, &stream.next(&opus_payload())).len(), 2);

    h.sfu.disconnect(p(2), h.now).unwrap();
    assert_eq!(h.sfu.is_connected(p(2)), Some(false));
    let out = h.send(1, 1, &stream.next(&opus_payload()));
    assert_eq!(out.iter().map(|r| r.to).collect::<Vec<_>>(), [p(3)]);
    assert_eq!(h.sfu.stats().drops.subscriber_disconnected, 1);

    // Notifications for it are dropped and counted; the others still get theirs.
    h.events();
    h.join(4, "r");
    let events = h.events();
    assert!(Harness::notifications_for(&events, 2).is_empty());
    assert_eq!(Harness::notifications_for(&events, 3).len(), 1);
    assert_eq!(h.sfu.stats().notifications_dropped, 1);
}

#[test]
fn a_resume_within_grace_keeps_media_ids_and_ssrcs_and_asks_for_keyframes() {
    let mut h = Harness::new();
    h.join(1, "r");
    h.join(2, "r");
    let audio = h.publish(1, audio_track(1));
    let video = h.publish(1, video_track("VP8", &[2]));
    let own = h.publish(2, audio_track(1));
    let a = h.subscribe(2, audio);
    let v = h.subscribe(2, video);
    let mut audio_stream = Stream::audio(1);
    let mut video_stream = Stream::video(2, 7);
    let before = h.send(1, 1, &audio_stream.next(&opus_payload())).remove(0);
    h.send(1, 2, &video_stream.next(&vp8(true)));

    h.sfu.disconnect(p(2), h.now).unwrap();
    h.advance(5_000);
    h.send(1, 1, &audio_stream.next(&opus_payload()));
    h.events();
    let resumed = h.sfu.reconnect(p(2), h.now).unwrap();
    assert_eq!(resumed.subscriptions, [a, v]);
    assert_eq!(
        resumed
            .published
            .iter()
            .map(|t| t.track)
            .collect::<Vec<_>>(),
        [own]
    );
    assert_eq!(resumed.room.participants.len(), 1);
    assert_eq!(resumed.room.tracks.len(), 2);
    assert_eq!(
        Harness::keyframe_requests(&h.events()),
        [(p(1), video, 0, MediaId(2))]
    );
    assert_eq!(h.sfu.poll_timeout(), None, "the grace timer is gone");

    // Media flows again on the same media id and SSRC; the gap shows as loss.
    let after = h.send(1, 1, &audio_stream.next(&opus_payload())).remove(0);
    assert_eq!((after.media, after.ssrc), (before.media, before.ssrc));
    assert_eq!(after.seq, before.seq.wrapping_add(2));
}

#[test]
fn the_grace_period_ends_in_a_timeout_leave() {
    let mut h = Harness::new();
    h.join(1, "r");
    h.join(2, "r");
    let track = h.publish(1, audio_track(1));
    h.subscribe(2, track);
    h.events();
    h.sfu.disconnect(p(1), h.now).unwrap();
    // A second disconnect does not move the deadline.
    h.advance(1_000);
    h.sfu.disconnect(p(1), h.now).unwrap();
    assert_eq!(h.sfu.poll_timeout(), Some(h.base + Duration::from_secs(20)));

    h.advance(18_999);
    assert!(h.events().is_empty());
    assert_eq!(h.sfu.is_connected(p(1)), Some(false));
    h.advance(1);
    let events = h.events();
    assert_eq!(
        events,
        [
            Event::Notify {
                to: p(2),
                notification: Notification::TrackUnpublished {
                    track,
                    participant: p(1)
                }
            },
            Event::Notify {
                to: p(2),
                notification: Notification::ParticipantLeft {
                    participant: p(1),
                    reason: LeaveReason::Timeout
                }
            },
            Event::ParticipantRemoved {
                participant: p(1),
                reason: LeaveReason::Timeout
            },
        ]
    );
    assert_eq!(h.sfu.is_connected(p(1)), None);
    assert_eq!(
        h.sfu.reconnect(p(1), h.now),
        Err(SfuError::UnknownParticipant(p(1)))
    );
    assert_eq!(h.sfu.stats().subscriptions, 0);
    assert_eq!(h.sfu.poll_timeout(), None);
}

#[test]
fn a_resume_cancels_the_timeout() {
    let mut h = Harness::new();
    h.join(1, "r");
    h.join(2, "r");
    h.events();
    h.sfu.disconnect(p(1), h.now).unwrap();
    h.advance(19_000);
    h.sfu.reconnect(p(1), h.now).unwrap();
    h.advance(10_000);
    assert!(h.events().is_empty());
    assert_eq!(h.sfu.is_connected(p(1)), Some(true));
    // Leaving while disconnected works too, and clears the timer.
    h.sfu.disconnect(p(1), h.now).unwrap();
    h.sfu.leave(p(1), LeaveReason::Left, h.now).unwrap();
    assert_eq!(h.sfu.poll_timeout(), None);
}
