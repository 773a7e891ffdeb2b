//! Membership: join, leave, publish, unpublish, mute, and what everyone is told.

use strait_media::sfu::{
    Event, LeaveReason, Notification, ParticipantInfo, RoomName, SfuError, TrackKind,
};

use crate::sfu::fixture::{Harness, audio_track, p, video_track};

#[test]
fn joiner_gets_a_snapshot_and_the_others_are_told_in_join_order() {
    let mut h = Harness::new();
    let first = h.join(1, "lobby");
    assert_eq!(first.room, RoomName::from("lobby"));
    assert_eq!(first.you.participant, p(1));
    assert!(first.participants.is_empty() && first.tracks.is_empty());
    h.join(2, "lobby");
    let track = h.publish(1, audio_track(1));
    h.events();

    let third = h.join(3, "lobby");
    assert_eq!(third.you.identity, "user-3");
    let others: Vec<_> = third.participants.iter().map(|i| i.participant).collect();
    assert_eq!(others, [p(1), p(2)]);
    assert_eq!(third.tracks.len(), 1);
    assert_eq!(third.tracks[0].track, track);
    assert_eq!(third.tracks[0].participant, p(1));
    assert_eq!(third.tracks[0].kind, TrackKind::Audio);

    let events = h.events();
    let joined = ParticipantInfo {
        participant: p(3),
        identity: "user-3".into(),
        name: "User 3".into(),
    };
    assert_eq!(
        events,
        [
            Event::Notify {
                to: p(1),
                notification: Notification::ParticipantJoined(joined.clone())
            },
            Event::Notify {
                to: p(2),
                notification: Notification::ParticipantJoined(joined)
            },
        ]
    );
}

#[test]
fn rooms_are_separate() {
    let mut h = Harness::new();
    h.join(1, "a");
    let track = h.publish(1, audio_track(1));
    let b = h.join(2, "b");
    assert!(b.participants.is_empty() && b.tracks.is_empty());
    assert!(
        h.events().is_empty(),
        "nobody in room a is told about room b"
    );
    assert_eq!(
        h.sfu.subscribe(p(2), track, None, h.now),
        Err(SfuError::NotInRoom(track))
    );
    assert_eq!(h.sfu.stats().rooms, 2);
}

#[test]
fn publish_tells_everyone_else_and_not_the_publisher() {
    let mut h = Harness::new();
    h.join(1, "r");
    h.join(2, "r");
    h.join(3, "r");
    h.events();
    let track = h.publish(2, video_track("VP8", &[10, 11]));
    let events = h.events();
    assert_eq!(events.len(), 2);
    for (event, to) in events.iter().zip([1, 3]) {
        let Event::Notify {
            to: t,
            notification: Notification::TrackPublished(info),
        } = event
        else {
            panic!("unexpected {event:?}");
        };
        assert_eq!(*t, p(to));
        assert_eq!(info.track, track);
        assert_eq!(info.participant, p(2));
        assert_eq!(info.layers.len(), 2);
        assert_eq!(info.codec.name, "VP8");
    }
}

#[test]
fn mute_is_announced_once_per_change() {
    let mut h = Harness::new();
    h.join(1, "r");
    h.join(2, "r");
    let track = h.publish(1, audio_track(1));
    h.events();
    h.sfu.set_muted(p(1), track, true, h.now).unwrap();
    h.sfu.set_muted(p(1), track, true, h.now).unwrap();
    assert_eq!(
        h.events(),
        [Event::Notify {
            to: p(2),
            notification: Notification::TrackMuted { track, muted: true }
        }]
    );
    assert!(h.sfu.track_info(track).unwrap().muted);
    assert_eq!(
        h.sfu.set_muted(p(2), track, false, h.now),
        Err(SfuError::NotOwner(track))
    );
}

#[test]
fn leave_unpublishes_then_says_goodbye_and_ends_subscriptions() {
    let mut h = Harness::new();
    h.join(1, "r");
    h.join(2, "r");
    h.join(3, "r");
    let audio = h.publish(1, audio_track(1));
    let video = h.publish(1, video_track("VP8", &[2]));
    h.subscribe(2, audio);
    let mine = h.publish(2, audio_track(1));
    h.subscribe(1, mine);
    h.events();

    h.sfu.leave(p(1), LeaveReason::Left, h.now).unwrap();
    let events = h.events();
    for to in [2, 3] {
        assert_eq!(
            Harness::notifications_for(&events, to),
            [
                Notification::TrackUnpublished {
                    track: audio,
                    participant: p(1)
                },
                Notification::TrackUnpublished {
                    track: video,
                    participant: p(1)
                },
                Notification::ParticipantLeft {
                    participant: p(1),
                    reason: LeaveReason::Left
                },
            ]
        );
    }
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::ParticipantRemoved { .. }))
    );
    assert_eq!(h.sfu.subscription(p(2), audio), None);
    assert_eq!(h.sfu.track_info(audio), None);
    assert_eq!(h.sfu.room_of(p(1)), None);
    let stats = h.sfu.stats();
    assert_eq!(
        (stats.participants, stats.tracks, stats.subscriptions),
        (2, 1, 0)
    );
    // Its media ids are gone: a packet on them is unknown.
    let packet = crate::sfu::fixture::rtp(111, 1, 1, 1, &[1]);
    let err = h.sfu.handle_rtp(
        p(1),
        strait_media::sfu::MediaId(1),
        &packet,
        h.now,
        &mut |_| {},
    );
    assert!(err.is_err());
    assert_eq!(
        h.sfu.leave(p(1), LeaveReason::Left, h.now),
        Err(SfuError::UnknownParticipant(p(1)))
    );
}

#[test]
fn the_room_goes_with_its_last_member() {
    let mut h = Harness::new();
    h.join(1, "r");
    h.join(2, "r");
    assert_eq!(h.sfu.stats().rooms, 1);
    h.sfu.leave(p(1), LeaveReason::Left, h.now).unwrap();
    assert_eq!(h.sfu.stats().rooms, 1);
    h.sfu.leave(p(2), LeaveReason::Kicked, h.now).unwrap();
    assert_eq!(h.sfu.stats().rooms, 0);
    assert_eq!(h.sfu.stats().participants, 0);
    // The name is free again, and the ids can join anew.
    let snapshot = h.join(1, "r");
    assert!(snapshot.participants.is_empty());
}

#[test]
fn unpublish_ends_subscriptions_and_frees_media_ids_lowest_first() {
    let mut h = Harness::new();
    h.join(1, "r");
    h.join(2, "r");
    let a = h.publish(1, audio_track(1));
    let b = h.publish(1, audio_track(2));
    let c = h.publish(1, audio_track(3));
    let media: Vec<u32> = [a, b, c]
        .iter()
        .map(|&t| h.subscribe(2, t).media.0)
        .collect();
    assert_eq!(media, [1, 2, 3]);
    h.events();

    h.sfu.unpublish(p(1), b, h.now).unwrap();
    assert_eq!(
        h.events(),
        [Event::Notify {
            to: p(2),
            notification: Notification::TrackUnpublished {
                track: b,
                participant: p(1)
            }
        }]
    );
    assert_eq!(h.sfu.subscription(p(2), b), None);
    assert_eq!(
        h.sfu.unsubscribe(p(2), b, h.now),
        Err(SfuError::UnknownTrack(b))
    );

    // The freed id 2 comes back first, then 4.
    let d = h.publish(1, audio_track(2));
    let e = h.publish(1, audio_track(4));
    assert_eq!(h.subscribe(2, d).media.0, 2);
    assert_eq!(h.subscribe(2, e).media.0, 4);

    h.sfu.unsubscribe(p(2), a, h.now).unwrap();
    assert_eq!(
        h.sfu.unsubscribe(p(2), a, h.now),
        Err(SfuError::NotSubscribed(a))
    );
    let f = h.publish(1, audio_track(5));
    assert_eq!(h.subscribe(2, f).media.0, 1);
    assert_eq!(h.sfu.stats().subscriptions, 4);
    // Unpublishing someone else's track is refused.
    assert_eq!(h.sfu.unpublish(p(2), c, h.now), Err(SfuError::NotOwner(c)));
}

#[test]
fn subscribe_errors_name_what_was_wrong() {
    let mut h = Harness::new();
    h.join(1, "r");
    h.join(2, "r");
    let track = h.publish(1, audio_track(1));
    let now = h.now;
    assert_eq!(
        h.sfu.subscribe(p(1), track, None, now),
        Err(SfuError::OwnTrack(track))
    );
    let missing = strait_media::sfu::TrackId(42);
    assert_eq!(
        h.sfu.subscribe(p(2), missing, None, now),
        Err(SfuError::UnknownTrack(missing))
    );
    assert_eq!(
        h.sfu.subscribe(p(9), track, None, now),
        Err(SfuError::UnknownParticipant(p(9)))
    );
    h.subscribe(2, track);
    assert_eq!(
        h.sfu.subscribe(p(2), track, None, now),
        Err(SfuError::AlreadySubscribed(track))
    );
}

#[test]
fn join_errors_name_what_was_wrong() {
    let mut h = Harness::new();
    h.join(1, "r");
    let meta = strait_media::sfu::ParticipantMeta::default();
    assert_eq!(
        h.sfu.join(p(1), "s", meta.clone(), h.now),
        Err(SfuError::AlreadyJoined(p(1)))
    );
    assert_eq!(
        h.sfu.join(p(2), "", meta, h.now),
        Err(SfuError::InvalidRoomName)
    );
}

#[test]
fn publish_validates_layers_and_media_ids() {
    let mut h = Harness::new();
    h.join(1, "r");
    let now = h.now;
    let mut none = video_track("VP8", &[]);
    none.layers.clear();
    assert!(matches!(
        h.sfu.publish(p(1), none, now),
        Err(SfuError::InvalidLayers(_))
    ));
    let mut four = video_track("VP8", &[1, 2, 3]);
    four.layers.push(four.layers[2]);
    four.layers[3].media = strait_media::sfu::MediaId(4);
    assert!(matches!(
        h.sfu.publish(p(1), four, now),
        Err(SfuError::InvalidLayers(_))
    ));
    let mut stereo = audio_track(1);
    stereo.layers.push(stereo.layers[0]);
    stereo.layers[1].media = strait_media::sfu::MediaId(2);
    assert!(matches!(
        h.sfu.publish(p(1), stereo, now),
        Err(SfuError::InvalidLayers(_))
    ));
    let mut reversed = video_track("VP8", &[1, 2]);
    reversed.layers.reverse();
    assert!(matches!(
        h.sfu.publish(p(1), reversed, now),
        Err(SfuError::InvalidLayers(_))
    ));
    let twice = video_track("VP8", &[5, 5]);
    assert_eq!(
        h.sfu.publish(p(1), twice, now),
        Err(SfuError::DuplicateMedia(strait_media::sfu::MediaId(5)))
    );
    let mut silent = audio_track(1);
    silent.codec.clock_rate = 0;
    assert!(matches!(
        h.sfu.publish(p(1), silent, now),
        Err(SfuError::InvalidCodec(_))
    ));

    let track = h.publish(1, video_track("VP8", &[1, 2]));
    assert_eq!(
        h.sfu.publish(p(1), audio_track(2), now),
        Err(SfuError::DuplicateMedia(strait_media::sfu::MediaId(2)))
    );
    // Once unpublished, its media ids are free again.
    h.sfu.unpublish(p(1), track, now).unwrap();
    h.publish(1, audio_track(2));
    assert_eq!(h.sfu.stats().tracks, 1);
}
