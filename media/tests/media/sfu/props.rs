//! Property: random sessions over a lossy, reordering network never panic, and forwarding keeps
//! every subscription's numbering an order-preserving image of the publisher's.

use std::collections::{HashMap, HashSet, VecDeque};

use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use strait_media::sfu::{
    Event, LeaveReason, MediaId, Notification, ParticipantId, ParticipantMeta, TrackId, TrackKind,
};

use crate::sfu::fixture::{
    Harness, audio_track, header_of, opus_payload, p, rtp, video_track, vp8,
};

#[derive(Debug, Clone, Copy)]
enum Op {
    Join(u64, bool),
    Leave(u64),
    Disconnect(u64),
    Reconnect(u64),
    PublishAudio(u64, u32),
    PublishVideo(u64, u32, usize),
    Unpublish(usize),
    Subscribe(u64, usize, Option<u8>),
    Unsubscribe(u64, usize),
    Preference(u64, usize, Option<u8>),
    Bandwidth(u64, u64),
    Keyframe(u64, usize),
    /// Frames on every layer of a track; the first one a keyframe on a random subset of layers.
    Media {
        track: usize,
        key: bool,
        packets: u8,
    },
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let who = 1..=5u64;
    let idx = 0..8usize;
    let layer = proptest::option::of(0..4u8);
    prop_oneof![
        2 => (who.clone(), any::<bool>()).prop_map(|(p, other)| Op::Join(p, other)),
        1 => who.clone().prop_map(Op::Leave),
        1 => who.clone().prop_map(Op::Disconnect),
        1 => who.clone().prop_map(Op::Reconnect),
        1 => (who.clone(), 1..12u32).prop_map(|(p, m)| Op::PublishAudio(p, m)),
        2 => (who.clone(), 1..12u32, 1..=3usize).prop_map(|(p, m, n)| Op::PublishVideo(p, m, n)),
        1 => idx.clone().prop_map(Op::Unpublish),
        4 => (who.clone(), idx.clone(), layer.clone()).prop_map(|(p, t, l)| Op::Subscribe(p, t, l)),
        1 => (who.clone(), idx.clone()).prop_map(|(p, t)| Op::Unsubscribe(p, t)),
        3 => (who.clone(), idx.clone(), layer).prop_map(|(p, t, l)| Op::Preference(p, t, l)),
        6 => (who.clone(), prop::sample::select(vec![0, 160_000, 300_000, 700_000, 2_500_000]))
            .prop_map(|(p, b)| Op::Bandwidth(p, b)),
        1 => (who, idx.clone()).prop_map(|(p, t)| Op::Keyframe(p, t)),
        12 => (idx, prop::bool::weighted(0.5), 1..12u8)
            .prop_map(|(track, key, packets)| Op::Media { track, key, packets }),
        3 => (0..3_000u64).prop_map(Op::Advance),
    ]
}

/// A published track as the test knows it.
#[derive(Debug, Clone)]
struct Published {
    id: TrackId,
    owner: u64,
    media: Vec<u32>,
}

/// What a subscription has received so far.
#[derive(Debug, Default)]
struct Seen {
    /// Layer of the current run, and the (input, output) numbers of its first packet.
    run: Option<(u8, u16, u16)>,
    /// Highest output sequence number so far.
    max_out: Option<u16>,
    outs: HashSet<u16>,
}

fn pick(tracks: &[Published], index: usize) -> Option<Published> {
    if tracks.is_empty() {
        None
    } else {
        Some(tracks[index % tracks.len()].clone())
    }
}

struct World {
    h: Harness,
    rng: SmallRng,
    tracks: Vec<Published>,
    /// Next (sequence number, timestamp) per (publisher, media id).
    streams: HashMap<(u64, u32), (u16, u32)>,
    /// Packets in flight: (publisher, media id, packet).
    network: VecDeque<(u64, u32, Vec<u8>)>,
    seen: HashMap<(ParticipantId, TrackId, u32), Seen>,
    connected: HashMap<u64, bool>,
}

impl World {
    fn deliver(&mut self, publisher: u64, media: u32, packet: &[u8]) {
        let in_seq = header_of(packet).0;
        let mut forwards = Vec::new();
        let _ = self
            .h
            .sfu
            .handle_rtp(p(publisher), MediaId(media), packet, self.h.now, &mut |f| {
                let mut buf = vec![0; f.len()];
                f.write_into(&mut buf);
                forwards.push((f.to, f.media, f.track, f.layer, header_of(&buf)));
            });
        for (to, media, track, layer, (out_seq, _, ssrc)) in forwards {
            assert_ne!(to, p(publisher), "forwarded to its own publisher");
            assert_eq!(
                self.connected.get(&to.0),
                Some(&true),
                "forwarded to {to}, not connected"
            );
            let state = self
                .h
                .sfu
                .subscription(to, track)
                .expect("forwarded without a subscription");
            assert_eq!((state.info.media, state.info.ssrc), (media, ssrc));
            let seen = self.seen.entry((to, track, ssrc)).or_default();
            match seen.run {
                Some((run_layer, first_in, first_out)) if run_layer == layer => {
                    assert_eq!(
                        out_seq.wrapping_sub(first_out),
                        in_seq.wrapping_sub(first_in),
                        "the mapping within a layer is a translation"
                    );
                    assert!(
                        (out_seq.wrapping_sub(first_out) as i16) > 0,
                        "nothing older than the keyframe a layer started at"
                    );
                }
                _ => {
                    if let Some(max) = seen.max_out {
                        assert_eq!(
                            out_seq,
                            max.wrapping_add(1),
                            "a new layer continues the numbering"
                        );
                    }
                    seen.run = Some((layer, in_seq, out_seq));
                }
            }
            assert!(
                seen.outs.insert(out_seq),
                "sequence number {out_seq} sent twice"
            );
            if seen
                .max_out
                .is_none_or(|max| (out_seq.wrapping_sub(max) as i16) > 0)
            {
                seen.max_out = Some(out_seq);
            }
        }
    }

    /// Sends through the lossy, reordering network.
    fn transmit(&mut self, publisher: u64, media: u32, packet: Vec<u8>) {
        if self.rng.random_bool(0.1) {
            return;
        }
        self.network.push_back((publisher, media, packet));
        let depth = self.rng.random_range(0..8);
        while self.network.len() > depth {
            let i = self.rng.random_range(0..self.network.len().min(6));
            let (publisher, media, packet) = self.network.remove(i).expect("in range");
            self.deliver(publisher, media, &packet);
        }
    }

    fn flush(&mut self) {
        while let Some((publisher, media, packet)) = self.network.pop_front() {
            self.deliver(publisher, media, &packet);
        }
    }

    fn apply(&mut self, op: Op) {
        let now = self.h.now;
        let sfu = &mut self.h.sfu;
        match op {
            Op::Join(id, other) => {
                let room = if other { "other" } else { "main" };
                if sfu
                    .join(p(id), room, ParticipantMeta::default(), now)
                    .is_ok()
                {
                    self.connected.insert(id, true);
                }
            }
            Op::Leave(id) => {
                if sfu.leave(p(id), LeaveReason::Left, now).is_ok() {
                    self.connected.remove(&id);
                }
            }
            Op::Disconnect(id) => {
                if sfu.disconnect(p(id), now).is_ok() {
                    self.connected.insert(id, false);
                }
            }
            Op::Reconnect(id) => {
                if let Ok(resumed) = sfu.reconnect(p(id), now) {
                    self.connected.insert(id, true);
                    for s in resumed.subscriptions {
                        let state = sfu.subscription(p(id), s.track).expect("resumed");
                        assert_eq!((state.info.media, state.info.ssrc), (s.media, s.ssrc));
                    }
                }
            }
            Op::PublishAudio(id, m) => {
                if let Ok(track) = sfu.publish(p(id), audio_track(m), now) {
                    self.tracks.push(Published {
                        id: track,
                        owner: id,
                        media: vec![m],
                    });
                }
            }
            Op::PublishVideo(id, m, layers) => {
                let media: Vec<u32> = (0..layers as u32).map(|i| m + 20 * i).collect();
                if let Ok(track) = sfu.publish(p(id), video_track("VP8", &media), now) {
                    self.tracks.push(Published {
                        id: track,
                        owner: id,
                        media,
                    });
                }
            }
            Op::Unpublish(i) => {
                if let Some(t) = pick(&self.tracks, i) {
                    let _ = sfu.unpublish(p(t.owner), t.id, now);
                }
            }
            Op::Subscribe(id, i, max) => {
                if let Some(t) = pick(&self.tracks, i) {
                    let _ = sfu.subscribe(p(id), t.id, max, now);
                }
            }
            Op::Unsubscribe(id, i) => {
                if let Some(t) = pick(&self.tracks, i) {
                    let _ = sfu.unsubscribe(p(id), t.id, now);
                }
            }
            Op::Preference(id, i, max) => {
                if let Some(t) = pick(&self.tracks, i) {
                    let _ = sfu.set_layer_preference(p(id), t.id, max, now);
                }
            }
            Op::Bandwidth(id, bps) => {
                let _ = sfu.set_bandwidth(p(id), bps, now);
            }
            Op::Keyframe(id, i) => {
                if let Some(t) = pick(&self.tracks, i) {
                    let _ = sfu.request_keyframe(p(id), t.id, now);
                }
            }
            Op::Media {
                track,
                key,
                packets,
            } => {
                let Some(t) = pick(&self.tracks, track) else {
                    return;
                };
                let is_audio = self
                    .h
                    .sfu
                    .track_info(t.id)
                    .is_none_or(|i| i.kind == TrackKind::Audio);
                for n in 0..packets {
                    for &media in &t.media {
                        let key = key && n == 0 && self.rng.random_bool(0.7);
                        let (seq, ts) = self.streams.entry((t.owner, media)).or_insert((65_500, 0));
                        let payload = if is_audio { opus_payload() } else { vp8(key) };
                        let packet = rtp(96, *seq, *ts, media, &payload);
                        *seq = seq.wrapping_add(1);
                        *ts = ts.wrapping_add(3000);
                        self.transmit(t.owner, media, packet);
                    }
                }
            }
            Op::Advance(ms) => {
                self.flush();
                self.h.advance(ms);
            }
        }
        for event in self.h.events() {
            if let Event::Notify {
                to,
                notification: Notification::TrackPaused { track, .. },
            } = &event
            {
                // A paused subscription resumes as a new segment (like a switch).
                for ((sub, t, _), seen) in &mut self.seen {
                    if sub == to && t == track {
                        seen.run = None;
                    }
                }
            }
            match event {
                Event::Notify { to, .. } | Event::KeyframeRequest { to, .. } => {
                    assert_eq!(self.connected.get(&to.0), Some(&true), "event for {to}");
                }
                Event::ParticipantRemoved {
                    participant,
                    reason,
                } => {
                    assert_eq!(reason, LeaveReason::Timeout);
                    assert_eq!(self.connected.remove(&participant.0), Some(false));
                }
                _ => {}
            }
        }
        // A subscription paused while its subscriber was away is not notified (nothing is sent
        // to a disconnected participant): it resumes as a new segment all the same.
        for ((sub, track, _), seen) in &mut self.seen {
            if self
                .h
                .sfu
                .subscription(*sub, *track)
                .is_some_and(|s| s.info.paused)
            {
                seen.run = None;
            }
        }
        let sfu = &self.h.sfu;
        self.tracks.retain(|t| sfu.track_info(t.id).is_some());
        let stats = self.h.sfu.stats();
        assert_eq!(stats.participants, self.connected.len() as u64);
        if let Some(at) = self.h.sfu.poll_timeout() {
            assert!(at > self.h.now, "a due timer was left behind");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn random_sessions_keep_numbering_monotonic(
        ops in prop::collection::vec(op(), 1..160),
        seed in any::<u64>(),
    ) {
        let mut world = World {
            h: Harness::new(),
            rng: SmallRng::seed_from_u64(seed),
            tracks: Vec::new(),
            streams: HashMap::new(),
            network: VecDeque::new(),
            seen: HashMap::new(),
            connected: HashMap::new(),
        };
        // A room with media to start from, so that most cases forward something.
        let prologue = [
            Op::Join(1, false), Op::Join(2, false), Op::Join(3, false), Op::Join(4, false),
            Op::PublishVideo(1, 1, 3), Op::PublishAudio(1, 2), Op::PublishVideo(2, 1, 2),
            Op::Subscribe(2, 0, None), Op::Subscribe(3, 0, None), Op::Subscribe(4, 1, None),
            Op::Subscribe(3, 2, None),
        ];
        for op in prologue.into_iter().chain(ops) {
            world.apply(op);
        }
        world.flush();
        world.h.advance(30_000);
        world.h.events();
    }
}
