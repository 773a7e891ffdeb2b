//! Cost of the bandwidth allocation: one subscriber's allocation over 16 video subscriptions
//! (the pure `bwe::allocate`, and the SFU's whole re-allocation around it: costs, liveness,
//! priorities, applying the choices), and the allocation tick for 1 000 subscribers with
//! estimates (every 250 ms; when nothing changed it only looks, every `REFRESH` it allocates
//! everyone again).
//!
//! Run: `cargo bench -p strait-media --bench allocate`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use strait_media::bwe::{self, AllocatorConfig, Choice, Estimate, VideoWant};
use strait_media::sfu::{
    CodecSpec, LayerSpec, MediaId, ParticipantId, ParticipantMeta, Sfu, SfuConfig, TrackId,
    TrackKind, TrackSpec,
};

fn camera(media: u32) -> TrackSpec {
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
        layers: [150_000, 500_000, 1_500_000]
            .into_iter()
            .enumerate()
            .map(|(l, bitrate)| LayerSpec {
                media: MediaId(media + l as u32),
                max_bitrate: bitrate,
                width: 0,
                height: 0,
            })
            .collect(),
        muted: false,
    }
}

/// `publishers` cameras and `subscribers` subscribers of every camera, each with an estimate.
fn room(publishers: u64, subscribers: u64, now: Instant) -> (Sfu, Vec<TrackId>) {
    let config = SfuConfig {
        max_participants_per_room: 2_000,
        ..SfuConfig::default()
    };
    let mut sfu = Sfu::new(config, 1);
    let mut tracks = Vec::new();
    for p in 0..publishers {
        sfu.join(ParticipantId(p), "bench", ParticipantMeta::default(), now)
            .unwrap();
        tracks.push(sfu.publish(ParticipantId(p), camera(1), now).unwrap());
    }
    for s in 0..subscribers {
        let id = ParticipantId(10_000 + s);
        sfu.join(id, "bench", ParticipantMeta::default(), now)
            .unwrap();
        sfu.set_estimate(id, Estimate::clear(3_000_000 + s), now)
            .unwrap();
        for &track in &tracks {
            sfu.subscribe(id, track, None, now).unwrap();
        }
    }
    while sfu.poll_event().is_some() {}
    (sfu, tracks)
}

fn bench(c: &mut Criterion) {
    let wants: Vec<VideoWant> = (0..16)
        .map(|n| VideoWant {
            priority: if n == 0 { 200 } else { 100 },
            cap: 2,
            costs: [150_000, 500_000, 1_500_000],
            alive: [true; 3],
            old: Some(Choice::Layer(1)),
        })
        .collect();
    let config = AllocatorConfig::default();
    let mut out = Vec::with_capacity(16);
    c.bench_function("bwe::allocate, 16 videos", |b| {
        b.iter(|| {
            black_box(bwe::allocate(
                black_box(&wants),
                6_000_000,
                5_000_000,
                true,
                &config,
                &mut out,
            ))
        });
    });

    let now = Instant::now();
    let (mut sfu, tracks) = room(16, 1, now);
    let subscriber = ParticipantId(10_000);
    let mut priority = 100u8;
    c.bench_function("Sfu re-allocation, 16 videos", |b| {
        b.iter(|| {
            // A priority change re-allocates the subscriber (the choices stay the same).
            priority = if priority == 100 { 101 } else { 100 };
            sfu.set_priority(subscriber, tracks[1], Some(priority), now)
                .unwrap();
            while sfu.poll_event().is_some() {}
        });
    });

    // 1 000 subscribers of 4 cameras: the tick when nothing changed, and when every
    // subscriber's allocation is due (the REFRESH).
    let (mut sfu, _) = room(4, 1_000, now);
    let mut at = now;
    // Every 250 ms; each subscriber is due once per REFRESH (5 s), all on the same tick here:
    // the mean over the ticks of a REFRESH period.
    c.bench_function("allocation tick, 1000 subscribers, mean of 20 ticks", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                at += Duration::from_millis(250);
                let start = Instant::now();
                sfu.handle_timeout(at);
                total += start.elapsed();
                while sfu.poll_event().is_some() {}
            }
            total
        });
    });
    // The worst tick: every subscriber due.
    c.bench_function("allocation tick, 1000 subscribers, all due", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                at += Duration::from_secs(5);
                let start = Instant::now();
                sfu.handle_timeout(at);
                total += start.elapsed();
                while sfu.poll_event().is_some() {}
            }
            total
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
