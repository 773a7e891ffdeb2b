//! Relay members (`Sfu::join_relay`), `track_spec`, `publish_as` and `request_keyframe_from`:
//! what a room whose instances span several workers builds on.

use strait_media::sfu::{
    Event, LeaveReason, MediaId, Notification, ParticipantMeta, SfuConfig, SfuError, TrackId,
};

use super::fixture::{Harness, audio_track, p, rtp, video_track, vp8};

#[test]
fn a_relay_member_hears_of_joins_publishes_mutes_and_leaves_of_others() {
    let mut h = Harness::new();
    h.join(1, "r");
    let track = h.publish(1, audio_track(1));
    let snapshot = h.join_relay(9, "r");
    let members: Vec<_> = snapshot
        .participants
        .iter()
        .map(|i| i.participant)
        .collect();
    assert_eq!(members, [p(1)]);
    assert_eq!(snapshot.tracks.len(), 1);
    assert_eq!(snapshot.tracks[0].track, track);
    assert_eq!(snapshot.you.participant, p(9));
    h.events();

    h.join(2, "r");
    let video = h.publish(2, video_track("VP8", &[10, 11]));
    h.sfu.set_muted(p(2), video, true, h.now).unwrap();
    h.sfu.unpublish(p(1), track, h.now).unwrap();
    h.sfu.leave(p(2), LeaveReason::Kicked, h.now).unwrap();
    let heard = Harness::notifications_for(&h.events(), 9);
    assert_eq!(heard.len(), 6, "{heard:?}");
    assert!(matches!(&heard[0], Notification::ParticipantJoined(i) if i.participant == p(2)));
    assert!(matches!(&heard[1], Notification::TrackPublished(i) if i.track == video));
    assert_eq!(
        heard[2],
        Notification::TrackMuted {
            track: video,
            muted: true
        }
    );
    assert_eq!(
        heard[3],
        Notification::TrackUnpublished {
            track,
            participant: p(1)
        }
    );
    assert_eq!(
        heard[4],
        Notification::TrackUnpublished {
            track: video,
            participant: p(2)
        }
    );
    assert_eq!(
        heard[5],
        Notification::ParticipantLeft {
            participant: p(2),
            reason: LeaveReason::Kicked
        }
    );
}

#[test]
fn nobody_hears_of_a_relay_member_and_snapshots_and_counts_leave_it_out() {
    let mut h = Harness::with_config(SfuConfig {
        max_participants_per_room: 2,
        ..SfuConfig::default()
    });
    h.join(1, "r");
    h.events();
    h.join_relay(9, "r");
    assert!(
        h.events().is_empty(),
        "a relay's join is announced to nobody"
    );
    assert_eq!(h.sfu.is_relay(p(9)), Some(true));
    assert_eq!(h.sfu.is_relay(p(1)), Some(false));

    let second = h.join(2, "r");
    let members: Vec<_> = second.participants.iter().map(|i| i.participant).collect();
    assert_eq!(members, [p(1)], "the relay does not take a place either");
    assert_eq!(
        h.sfu.join(p(3), "r", ParticipantMeta::default(), h.now),
        Err(SfuError::RoomFull { max: 2 })
    );
    let stats = h.sfu.stats();
    assert_eq!((stats.participants, stats.relays, stats.rooms), (2, 1, 1));

    let own = h.sfu.room_snapshot(p(1)).unwrap();
    assert_eq!(own.participants.len(), 1);
    assert_eq!(own.participants[0].participant, p(2));
    h.sfu.disconnect(p(1), h.now).unwrap();
    let resumed = h.sfu.reconnect(p(1), h.now).unwrap();
    let members: Vec<_> = resumed
        .room
        .participants
        .iter()
        .map(|i| i.participant)
        .collect();
    assert_eq!(members, [p(2)]);
    h.events();

    h.sfu.leave(p(9), LeaveReason::Left, h.now).unwrap();
    assert!(
        h.events().is_empty(),
        "a relay's leave is announced to nobody"
    );
    assert_eq!(h.sfu.stats().relays, 0);
    assert_eq!(h.sfu.room_of(p(9)), None);
}

#[test]
fn a_relay_member_passes_every_layer_through_unchanged_from_the_next_packet() {
    let mut h = Harness::new();
    h.join(1, "r");
    h.join(2, "r");
    let track = h.publish(1, video_track("VP8", &[10, 11]));
    h.join_relay(9, "r");
    h.events();
    let relay = h.subscribe(9, track);
    assert_eq!(relay.layer, 1, "the highest layer passed through");
    assert!(
        Harness::keyframe_requests(&h.events()).is_empty(),
        "the other side asks for its keyframes itself"
    );
    let ordinary = h.subscribe(2, track);
    h.events();

    // Mid-stream delta frames: the ordinary subscriber waits for a keyframe, the relay does not.
    let low = rtp(96, 500, 9000, 0xaaaa, &vp8(false));
    let high = rtp(96, 7000, 9000, 0xbbbb, &vp8(false));
    let sent = h.send(1, 10, &low);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].to, sent[0].media, sent[0].track, sent[0].layer),
        (p(9), relay.media, track, 0)
    );
    assert_eq!(sent[0].bytes, low);
    let sent = h.send(1, 11, &high);
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].to, sent[0].layer), (p(9), 1));
    assert_eq!(
        sent[0].bytes, high,
        "SSRC, sequence number and timestamp kept"
    );

    // A keyframe of the top layer starts the ordinary subscriber (rewritten); the relay still
    // gets the original.
    let key = rtp(96, 7001, 12_000, 0xbbbb, &vp8(true));
    let sent = h.send(1, 11, &key);
    assert_eq!(sent.len(), 2);
    let to_relay = sent.iter().find(|s| s.to == p(9)).unwrap();
    let to_ordinary = sent.iter().find(|s| s.to == p(2)).unwrap();
    assert_eq!(to_relay.bytes, key);
    assert_eq!(to_ordinary.media, ordinary.media);
    assert_ne!(to_ordinary.bytes, key);

    // A cap keeps the layers above it off the link.
    h.sfu
        .set_layer_preference(p(9), track, Some(0), h.now)
        .unwrap();
    assert_eq!(h.sfu.subscription(p(9), track).unwrap().target_layer, 0);
    let sent = h.send(1, 11, &rtp(96, 7002, 15_000, 0xbbbb, &vp8(false)));
    assert!(sent.iter().all(|s| s.to != p(9)));
    let sent = h.send(1, 10, &rtp(96, 501, 12_000, 0xaaaa, &vp8(false)));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to, p(9));
    assert!(h.events().iter().all(|e| !matches!(
        e,
        Event::Notify {
            notification: Notification::LayerSwitched { .. },
            to
        } if *to == p(9)
    )));
}

#[test]
fn a_relay_member_receives_audio_like_others() {
    let mut h = Harness::new();
    h.join(1, "r");
    h.join(2, "r");
    let track = h.publish(1, audio_track(1));
    h.join_relay(9, "r");
    let relay = h.subscribe(9, track);
    h.subscribe(2, track);
    let packet = rtp(111, 100, 48_000, 0x2001, &[0xfc, 0xff, 0xfe]);
    let sent = h.send(1, 1, &packet);
    let mut to: Vec<_> = sent.iter().map(|s| s.to).collect();
    to.sort_unstable();
    assert_eq!(to, [p(2), p(9)]);
    let to_relay = sent.iter().find(|s| s.to == p(9)).unwrap();
    assert_eq!((to_relay.media, to_relay.layer), (relay.media, 0));
    assert_eq!(to_relay.bytes, packet);
    assert_eq!(h.sfu.stats().packets_forwarded, 2);
}

#[test]
fn a_relay_member_cannot_publish() {
    let mut h = Harness::new();
    h.join(1, "r");
    h.join_relay(9, "r");
    h.events();
    assert_eq!(
        h.sfu.publish(p(9), audio_track(1), h.now),
        Err(SfuError::RelayCannotPublish(p(9)))
    );
    assert_eq!(h.sfu.stats().tracks, 0);
    assert!(h.events().is_empty());
}

#[test]
fn a_relay_member_joins_only_an_existing_room_once() {
    let mut h = Harness::new();
    assert_eq!(
        h.sfu.join_relay(p(9), "r", h.now),
        Err(SfuError::UnknownRoom("r".into()))
    );
    assert_eq!(
        h.sfu.join_relay(p(9), "", h.now),
        Err(SfuError::InvalidRoomName)
    );
    h.join(1, "r");
    assert_eq!(
        h.sfu.join_relay(p(1), "r", h.now),
        Err(SfuError::AlreadyJoined(p(1)))
    );
    h.join_relay(9, "r");
    assert_eq!(
        h.sfu.join_relay(p(9), "r", h.now),
        Err(SfuError::AlreadyJoined(p(9)))
    );
    assert_eq!(
        h.sfu.join(p(9), "r", ParticipantMeta::default(), h.now),
        Err(SfuError::AlreadyJoined(p(9)))
    );
    assert_eq!(h.sfu.stats().rooms, 1);
}

#[test]
fn the_room_closes_when_its_last_ordinary_member_leaves_and_takes_its_relay_members() {
    let mut h = Harness::new();
    h.join(1, "r");
    h.join(2, "r");
    let track = h.publish(2, audio_track(1));
    h.join_relay(8, "r");
    h.join_relay(9, "r");
    h.subscribe(9, track);
    h.sfu.leave(p(1), LeaveReason::Left, h.now).unwrap();
    h.events();

    h.sfu.leave(p(2), LeaveReason::Left, h.now).unwrap();
    let events = h.events();
    let to_relay = |to| Event::Notify {
        to: p(to),
        notification: Notification::TrackUnpublished {
            track,
            participant: p(2),
        },
    };
    let left = |to| Event::Notify {
        to: p(to),
        notification: Notification::ParticipantLeft {
            participant: p(2),
            reason: LeaveReason::Left,
        },
    };
    let removed = |id| Event::ParticipantRemoved {
        participant: p(id),
        reason: LeaveReason::RoomClosed,
    };
    assert_eq!(
        events,
        [
            to_relay(8),
            to_relay(9),
            left(8),
            left(9),
            removed(8),
            removed(9)
        ]
    );
    let stats = h.sfu.stats();
    assert_eq!(
        (
            stats.rooms,
            stats.participants,
            stats.relays,
            stats.subscriptions
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(h.sfu.room_of(p(9)), None);
    assert_eq!(
        h.sfu.leave(p(9), LeaveReason::Left, h.now),
        Err(SfuError::UnknownParticipant(p(9)))
    );
    assert_eq!(h.sfu.poll_timeout(), None);

    // The name is free again: a new room, with no trace of the old relays.
    let fresh = h.join(3, "r");
    assert!(fresh.participants.is_empty());
    assert!(h.events().is_empty());
}

#[test]
fn a_room_closed_by_a_grace_timeout_removes_its_member_before_its_relay_members() {
    let mut h = Harness::new();
    h.join(1, "r");
    h.join_relay(9, "r");
    h.sfu.disconnect(p(1), h.now).unwrap();
    h.events();
    h.advance(20_000);
    assert_eq!(
        h.events(),
        [
            Event::Notify {
                to: p(9),
                notification: Notification::ParticipantLeft {
                    participant: p(1),
                    reason: LeaveReason::Timeout
                }
            },
            Event::ParticipantRemoved {
                participant: p(1),
                reason: LeaveReason::Timeout
            },
            Event::ParticipantRemoved {
                participant: p(9),
                reason: LeaveReason::RoomClosed
            },
        ]
    );
    assert_eq!(h.sfu.stats().rooms, 0);
}

#[test]
fn a_relay_member_that_times_out_goes_unannounced_and_hears_nothing_while_away() {
    let mut h = Harness::new();
    h.join(1, "r");
    h.join_relay(9, "r");
    h.sfu.disconnect(p(9), h.now).unwrap();
    h.events();
    h.join(2, "r");
    assert!(Harness::notifications_for(&h.events(), 9).is_empty());
    assert_eq!(h.sfu.stats().notifications_dropped, 1);

    h.advance(20_000);
    assert_eq!(
        h.events(),
        [Event::ParticipantRemoved {
            participant: p(9),
            reason: LeaveReason::Timeout
        }]
    );
    let stats = h.sfu.stats();
    assert_eq!((stats.participants, stats.relays, stats.rooms), (2, 0, 1));
}

#[test]
fn a_relay_member_is_not_held_to_the_subscription_limit() {
    let mut h = Harness::with_config(SfuConfig {
        max_subscriptions_per_participant: 1,
        ..SfuConfig::default()
    });
    h.join(1, "r");
    h.join(2, "r");
    let first = h.publish(1, audio_track(1));
    let second = h.publish(1, audio_track(2));
    h.subscribe(2, first);
    assert_eq!(
        h.sfu.subscribe(p(2), second, None, h.now),
        Err(SfuError::TooManySubscriptions { max: 1 })
    );
    h.join_relay(9, "r");
    let a = h.subscribe(9, first);
    let b = h.subscribe(9, second);
    assert_ne!(a.media, b.media);
}

#[test]
fn track_spec_returns_the_published_spec_with_its_media_ids_and_current_mute_state() {
    let mut h = Harness::new();
    h.join(1, "r");
    let spec = video_track("VP8", &[10, 11, 12]);
    let track = h.publish(1, spec.clone());
    assert_eq!(h.sfu.track_spec(track), Some(spec.clone()));

    h.sfu.set_muted(p(1), track, true, h.now).unwrap();
    let muted = h.sfu.track_spec(track).unwrap();
    assert!(muted.muted);
    let media: Vec<_> = muted.layers.iter().map(|l| l.media).collect();
    assert_eq!(media, [MediaId(10), MediaId(11), MediaId(12)]);

    // What a relay's other side does with it: the same track from a shadow participant.
    let mut other = Harness::new();
    other.join(101, "r");
    let shadow = other.publish(101, muted.clone());
    assert_eq!(other.sfu.track_spec(shadow), Some(muted));

    h.sfu.unpublish(p(1), track, h.now).unwrap();
    assert_eq!(h.sfu.track_spec(track), None);
}

#[test]
fn request_keyframe_from_asks_for_the_layer_on_that_media_and_shares_the_throttle() {
    let mut h = Harness::new();
    h.join(1, "r");
    h.join(2, "r");
    let track = h.publish(1, video_track("VP8", &[10, 11]));
    h.events();

    h.sfu
        .request_keyframe_from(p(1), MediaId(11), h.now)
        .unwrap();
    assert_eq!(
        Harness::keyframe_requests(&h.events()),
        [(p(1), track, 1, MediaId(11))]
    );
    assert_eq!(h.sfu.stats().keyframe_requests_sent, 1);

    // Within the window: held back, whoever asks, and sent once when it ends.
    h.advance(100);
    h.sfu
        .request_keyframe_from(p(1), MediaId(11), h.now)
        .unwrap();
    h.subscribe(2, track); // wants layer 1 first
    assert!(Harness::keyframe_requests(&h.events()).is_empty());
    assert_eq!(h.sfu.stats().keyframe_requests_throttled, 2);
    // The other layer has its own window.
    h.sfu
        .request_keyframe_from(p(1), MediaId(10), h.now)
        .unwrap();
    assert_eq!(
        Harness::keyframe_requests(&h.events()),
        [(p(1), track, 0, MediaId(10))]
    );
    h.advance(400);
    assert_eq!(
        Harness::keyframe_requests(&h.events()),
        [(p(1), track, 1, MediaId(11))]
    );
    assert_eq!(h.sfu.stats().keyframe_requests_sent, 3);
}

#[test]
fn request_keyframe_from_refuses_unknown_publishers_and_media_and_ignores_audio() {
    let mut h = Harness::new();
    h.join(1, "r");
    h.publish(1, audio_track(1));
    h.publish(1, video_track("VP8", &[10]));
    h.events();
    assert_eq!(
        h.sfu.request_keyframe_from(p(7), MediaId(10), h.now),
        Err(SfuError::UnknownParticipant(p(7)))
    );
    assert_eq!(
        h.sfu.request_keyframe_from(p(1), MediaId(99), h.now),
        Err(SfuError::UnknownMedia(MediaId(99)))
    );
    assert_eq!(h.sfu.request_keyframe_from(p(1), MediaId(1), h.now), Ok(()));
    assert!(h.events().is_empty());
}

#[test]
fn a_relay_subscription_asks_for_keyframes_of_every_layer_it_passes_through() {
    let mut h = Harness::new();
    h.join(1, "r");
    let track = h.publish(1, video_track("VP8", &[10, 11, 12]));
    h.join_relay(9, "r");
    h.subscribe(9, track);
    h.events();
    h.sfu.request_keyframe(p(9), track, h.now).unwrap();
    assert_eq!(
        Harness::keyframe_requests(&h.events()),
        [
            (p(1), track, 0, MediaId(10)),
            (p(1), track, 1, MediaId(11)),
            (p(1), track, 2, MediaId(12)),
        ]
    );
}

mod props {
    //! Property: whatever members and relay members do, relays stay invisible, never outlive
    //! their room's last ordinary member, and the counts agree with who is there.

    use std::collections::{HashMap, HashSet};

    use proptest::prelude::*;

    use super::super::fixture::{Harness, audio_track, p};
    use strait_media::sfu::{Event, LeaveReason, Notification, ParticipantMeta, SfuError, TrackId};

    /// Ordinary members are 1 to 4, relay members 11 to 13.
    const FIRST_RELAY: u64 = 11;

    #[derive(Debug, Clone, Copy)]
    enum Op {
        Join(u64, bool),
        JoinRelay(u64, bool),
        Leave(u64),
        Disconnect(u64),
        Reconnect(u64),
        Publish(u64, u32),
        Unpublish(usize),
        Subscribe(u64, usize),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let member = 1..=4u64;
        let relay = FIRST_RELAY..=13u64;
        let anyone = prop_oneof![member.clone(), relay.clone()];
        prop_oneof![
            3 => (member.clone(), any::<bool>()).prop_map(|(id, b)| Op::Join(id, b)),
            3 => (relay, any::<bool>()).prop_map(|(id, b)| Op::JoinRelay(id, b)),
            2 => anyone.clone().prop_map(Op::Leave),
            1 => anyone.clone().prop_map(Op::Disconnect),
            1 => anyone.clone().prop_map(Op::Reconnect),
            2 => (anyone.clone(), 1..4u32).prop_map(|(id, m)| Op::Publish(id, m)),
            1 => (0..6usize).prop_map(Op::Unpublish),
            2 => (anyone, 0..6usize).prop_map(|(id, t)| Op::Subscribe(id, t)),
            1 => (0..25_000u64).prop_map(Op::Advance),
        ]
    }

    fn room(b: bool) -> &'static str {
        if b { "b" } else { "a" }
    }

    /// Who is where, as the calls and events say.
    #[derive(Default)]
    struct Model {
        members: HashMap<u64, &'static str>,
        tracks: Vec<(TrackId, u64)>,
    }

    impl Model {
        fn check(&mut self, h: &mut Harness) {
            for event in h.events() {
                match event {
                    Event::Notify { to, notification } => {
                        assert!(self.members.contains_key(&to.0), "{notification:?} to {to}");
                        let about = match notification {
                            Notification::ParticipantJoined(info) => Some(info.participant),
                            Notification::ParticipantLeft { participant, .. }
                            | Notification::TrackUnpublished { participant, .. } => {
                                Some(participant)
                            }
                            Notification::TrackPublished(info) => Some(info.participant),
                            _ => None,
                        };
                        assert!(about.is_none_or(|a| a.0 < FIRST_RELAY), "told of a relay");
                    }
                    Event::ParticipantRemoved {
                        participant,
                        reason,
                    } => {
                        let was = self.members.remove(&participant.0);
                        assert!(was.is_some(), "{participant} removed twice");
                        if reason == LeaveReason::RoomClosed {
                            assert!(participant.0 >= FIRST_RELAY);
                        } else {
                            assert_eq!(reason, LeaveReason::Timeout);
                        }
                    }
                    _ => {}
                }
            }
            let sfu = &h.sfu;
            self.tracks.retain(|&(t, _)| sfu.track_info(t).is_some());
            let ordinary: HashSet<_> = self
                .members
                .iter()
                .filter(|&(&id, _)| id < FIRST_RELAY)
                .map(|(_, &room)| room)
                .collect();
            for (&id, &room) in &self.members {
                assert_eq!(sfu.room_of(p(id)).map(|r| r.as_str()), Some(room));
                assert!(ordinary.contains(room), "relay {id} outlived room {room}");
                let snapshot = sfu.room_snapshot(p(id)).expect("a member");
                assert!(
                    snapshot
                        .participants
                        .iter()
                        .all(|i| i.participant.0 < FIRST_RELAY)
                );
            }
            let relays = self.members.keys().filter(|&&id| id >= FIRST_RELAY).count();
            let stats = sfu.stats();
            assert_eq!(stats.relays, relays as u64);
            assert_eq!(stats.participants, (self.members.len() - relays) as u64);
            assert_eq!(stats.rooms, ordinary.len() as u64);
            if let Some(at) = sfu.poll_timeout() {
                assert!(at > h.now, "a due timer was left behind");
            }
        }

        fn apply(&mut self, h: &mut Harness, op: Op) {
            let now = h.now;
            let sfu = &mut h.sfu;
            match op {
                Op::Join(id, b) => {
                    let meta = ParticipantMeta::default();
                    if sfu.join(p(id), room(b), meta, now).is_ok() {
                        self.members.insert(id, room(b));
                    }
                }
                Op::JoinRelay(id, b) => match sfu.join_relay(p(id), room(b), now) {
                    Ok(_) => {
                        self.members.insert(id, room(b));
                    }
                    Err(SfuError::UnknownRoom(_)) => {
                        assert!(
                            self.members
                                .iter()
                                .all(|(&o, &r)| o >= FIRST_RELAY || r != room(b))
                        );
                    }
                    Err(e) => assert_eq!(e, SfuError::AlreadyJoined(p(id))),
                },
                Op::Leave(id) => {
                    if sfu.leave(p(id), LeaveReason::Left, now).is_ok() {
                        self.members.remove(&id);
                    }
                }
                Op::Disconnect(id) => {
                    let _ = sfu.disconnect(p(id), now);
                }
                Op::Reconnect(id) => {
                    let _ = sfu.reconnect(p(id), now);
                }
                Op::Publish(id, media) => match sfu.publish(p(id), audio_track(media), now) {
                    Ok(track) => self.tracks.push((track, id)),
                    Err(SfuError::RelayCannotPublish(who)) => {
                        assert!(who == p(id) && id >= FIRST_RELAY);
                    }
                    Err(_) => assert!(id < FIRST_RELAY || !self.members.contains_key(&id)),
                },
                Op::Unpublish(i) => {
                    if let Some(&(track, owner)) = self.tracks.get(i) {
                        let _ = sfu.unpublish(p(owner), track, now);
                    }
                }
                Op::Subscribe(id, i) => {
                    if let Some(&(track, _)) = self.tracks.get(i) {
                        let _ = sfu.subscribe(p(id), track, None, now);
                    }
                }
                Op::Advance(ms) => h.advance(ms),
            }
            self.check(h);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn relay_members_stay_invisible_and_never_outlive_their_room(
            ops in prop::collection::vec(op(), 1..120),
        ) {
            let mut h = Harness::new();
            let mut model = Model::default();
            for op in ops {
                model.apply(&mut h, op);
            }
            model.apply(&mut h, Op::Advance(30_000));
        }
    }
}

#[test]
fn publish_as_keeps_the_given_track_id_and_refuses_one_in_use() {
    let mut h = Harness::new();
    h.join(1, "r");
    h.join(2, "r");
    let original = h.publish(1, video_track("VP8", &[10]));
    // The stand-in of a track of another instance keeps that track's id.
    let mut other = Harness::new();
    other.join(7, "r");
    let stand_in = other
        .sfu
        .publish_as(p(7), video_track("VP8", &[10]), original, other.now)
        .expect("publish_as");
    assert_eq!(stand_in, original);
    assert_eq!(
        other.sfu.track_spec(original),
        Some(video_track("VP8", &[10]))
    );
    // An id in use, or 0, is refused; nothing is published.
    assert_eq!(
        h.sfu
            .publish_as(p(2), video_track("VP8", &[20]), original, h.now),
        Err(SfuError::TrackIdInUse(original))
    );
    assert_eq!(
        h.sfu
            .publish_as(p(2), video_track("VP8", &[20]), TrackId(0), h.now),
        Err(SfuError::TrackIdInUse(TrackId(0)))
    );
    assert_eq!(h.sfu.stats().tracks, 1);
}
