//! `track_spec` and `request_keyframe_from`, driven with virtual time through the public API
//! only.

use std::time::{Duration, Instant};

use super::{
    CodecSpec, Event, LayerSpec, MediaId, ParticipantId, ParticipantMeta, RoomSnapshot, Sfu,
    SfuConfig, SfuError, SubscriptionInfo, TrackId, TrackKind, TrackSpec,
};

/// An SFU with a virtual clock.
struct Harness {
    sfu: Sfu,
    now: Instant,
}

fn p(id: u64) -> ParticipantId {
    ParticipantId(id)
}

impl Harness {
    fn new() -> Self {
        Self::with_config(SfuConfig::default())
    }

    fn with_config(config: SfuConfig) -> Self {
        Self {
            sfu: Sfu::new(config, 0x5eed),
            // The only clock read: a base for virtual time.
            now: Instant::now(),
        }
    }

    /// Moves virtual time forward and runs whatever became due.
    fn advance(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        if self.sfu.poll_timeout().is_some_and(|at| at <= self.now) {
            self.sfu.handle_timeout(self.now);
        }
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.sfu.poll_event()).collect()
    }

    fn join(&mut self, id: u64, room: &str) -> RoomSnapshot {
        let meta = ParticipantMeta {
            identity: format!("user-{id}"),
            name: format!("User {id}"),
        };
        self.sfu.join(p(id), room, meta, self.now).expect("join")
    }

    fn publish(&mut self, id: u64, spec: TrackSpec) -> TrackId {
        self.sfu.publish(p(id), spec, self.now).expect("publish")
    }

    fn subscribe(&mut self, id: u64, track: TrackId) -> SubscriptionInfo {
        self.sfu
            .subscribe(p(id), track, None, self.now)
            .expect("subscribe")
    }
}

/// Keyframe requests in `events`, as `(publisher, track, layer, media)`.
fn keyframe_requests(events: &[Event]) -> Vec<(ParticipantId, TrackId, u8, MediaId)> {
    events
        .iter()
        .filter_map(|e| match *e {
            Event::KeyframeRequest {
                to,
                track,
                layer,
                media,
            } => Some((to, track, layer, media)),
            _ => None,
        })
        .collect()
}

fn audio_track(media: u32) -> TrackSpec {
    TrackSpec {
        kind: TrackKind::Audio,
        codec: CodecSpec {
            name: "opus".into(),
            payload_type: 111,
            clock_rate: 48_000,
            channels: 2,
            fmtp: "minptime=10;useinbandfec=1".into(),
        },
        source: "microphone".into(),
        layers: vec![LayerSpec {
            media: MediaId(media),
            max_bitrate: 32_000,
            width: 0,
            height: 0,
        }],
        muted: false,
    }
}

/// A VP8 track with one layer per media id (1 to 3).
fn video_track(media: &[u32]) -> TrackSpec {
    let sizes = [
        (150_000, 320, 180),
        (500_000, 640, 360),
        (1_500_000, 1280, 720),
    ];
    TrackSpec {
        kind: TrackKind::Video,
        codec: CodecSpec {
            name: "VP8".into(),
            payload_type: 96,
            clock_rate: 90_000,
            channels: 0,
            fmtp: String::new(),
        },
        source: "camera".into(),
        layers: media
            .iter()
            .zip(sizes)
            .map(|(&m, (max_bitrate, width, height))| LayerSpec {
                media: MediaId(m),
                max_bitrate,
                width,
                height,
            })
            .collect(),
        muted: false,
    }
}

#[test]
fn track_spec_returns_the_published_spec_with_its_media_ids_and_current_mute_state() {
    let mut h = Harness::new();
    h.join(1, "r");
    let spec = video_track(&[10, 11, 12]);
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
    let track = h.publish(1, video_track(&[10, 11]));
    h.events();

    h.sfu
        .request_keyframe_from(p(1), MediaId(11), h.now)
        .unwrap();
    assert_eq!(
        keyframe_requests(&h.events()),
        [(p(1), track, 1, MediaId(11))]
    );
    assert_eq!(h.sfu.stats().keyframe_requests_sent, 1);

    // Within the window: held back, whoever asks, and sent once when it ends.
    h.advance(100);
    h.sfu
        .request_keyframe_from(p(1), MediaId(11), h.now)
        .unwrap();
    h.subscribe(2, track); // wants layer 1 first
    assert!(keyframe_requests(&h.events()).is_empty());
    assert_eq!(h.sfu.stats().keyframe_requests_throttled, 2);
    // The other layer has its own window.
    h.sfu
        .request_keyframe_from(p(1), MediaId(10), h.now)
        .unwrap();
    assert_eq!(
        keyframe_requests(&h.events()),
        [(p(1), track, 0, MediaId(10))]
    );
    h.advance(400);
    assert_eq!(
        keyframe_requests(&h.events()),
        [(p(1), track, 1, MediaId(11))]
    );
    assert_eq!(h.sfu.stats().keyframe_requests_sent, 3);
}

#[test]
fn request_keyframe_from_refuses_unknown_publishers_and_media_and_ignores_audio() {
    let mut h = Harness::new();
    h.join(1, "r");
    h.publish(1, audio_track(1));
    h.publish(1, video_track(&[10]));
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
