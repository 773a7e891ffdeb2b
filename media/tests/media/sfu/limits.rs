//! Every limit of `SfuConfig` refuses with its own error, and frees up again.

use strait_media::sfu::{LeaveReason, ParticipantMeta, SfuConfig, SfuError};

use crate::sfu::fixture::{Harness, audio_track, p};

fn small() -> Harness {
    Harness::with_config(SfuConfig {
        max_rooms: 2,
        max_participants_per_room: 2,
        max_tracks_per_participant: 2,
        max_subscriptions_per_participant: 2,
        ..SfuConfig::default()
    })
}

#[test]
fn rooms() {
    let mut h = small();
    h.join(1, "a");
    h.join(2, "b");
    let meta = ParticipantMeta::default();
    assert_eq!(
        h.sfu.join(p(3), "c", meta.clone(), h.now),
        Err(SfuError::TooManyRooms { max: 2 })
    );
    // Joining an existing room is still fine.
    h.join(3, "a");
    h.sfu.leave(p(2), LeaveReason::Left, h.now).unwrap();
    h.sfu.join(p(4), "c", meta, h.now).unwrap();
}

#[test]
fn participants_per_room() {
    let mut h = small();
    h.join(1, "a");
    h.join(2, "a");
    let meta = ParticipantMeta::default();
    assert_eq!(
        h.sfu.join(p(3), "a", meta.clone(), h.now),
        Err(SfuError::RoomFull { max: 2 })
    );
    assert_eq!(h.sfu.room_of(p(3)), None);
    h.sfu.leave(p(1), LeaveReason::Left, h.now).unwrap();
    h.sfu.join(p(3), "a", meta, h.now).unwrap();
}

#[test]
fn tracks_per_participant() {
    let mut h = small();
    h.join(1, "a");
    let first = h.publish(1, audio_track(1));
    h.publish(1, audio_track(2));
    assert_eq!(
        h.sfu.publish(p(1), audio_track(3), h.now),
        Err(SfuError::TooManyTracks { max: 2 })
    );
    h.sfu.unpublish(p(1), first, h.now).unwrap();
    h.publish(1, audio_track(3));
}

#[test]
fn subscriptions_per_participant() {
    let mut h = Harness::with_config(SfuConfig {
        max_subscriptions_per_participant: 2,
        ..SfuConfig::default()
    });
    h.join(1, "a");
    h.join(2, "a");
    let tracks = [1, 2, 3].map(|m| h.publish(1, audio_track(m)));
    h.subscribe(2, tracks[0]);
    h.subscribe(2, tracks[1]);
    assert_eq!(
        h.sfu.subscribe(p(2), tracks[2], None, h.now),
        Err(SfuError::TooManySubscriptions { max: 2 })
    );
    h.sfu.unsubscribe(p(2), tracks[0], h.now).unwrap();
    assert_eq!(h.subscribe(2, tracks[2]).media.0, 1);
    // An unpublished track frees its subscriptions too.
    h.sfu.unpublish(p(1), tracks[1], h.now).unwrap();
    h.subscribe(2, tracks[0]);
    assert_eq!(h.sfu.stats().subscriptions, 2);
}
