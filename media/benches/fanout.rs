//! Fan-out cost of the hot path: `handle_rtp` of one 1200-byte VP8 packet to N subscribers, the
//! callback writing each rewritten packet into a reused send buffer (what the gateway does before
//! handing it to QUIC). Throughput is in forwarded packets, so criterion's time per element is the
//! cost per forwarded packet.
//!
//! Run: `cargo bench -p strait-media --bench fanout`.

use std::hint::black_box;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use strait_media::sfu::{
    CodecSpec, LayerSpec, MediaId, ParticipantId, ParticipantMeta, Sfu, SfuConfig, TrackKind,
    TrackSpec,
};

const PACKET_LEN: usize = 1200;

/// A 1200-byte VP8 packet: RTP header, payload descriptor S=1 PID=0, payload header P bit.
fn vp8_packet(seq: u16, key: bool) -> Vec<u8> {
    let mut packet = vec![0x80, 96];
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(&90_000u32.to_be_bytes());
    packet.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    packet.extend_from_slice(&[0x10, if key { 0x10 } else { 0x11 }, 0x02, 0x00]);
    packet.resize(PACKET_LEN, 0xab);
    packet
}

/// One publisher of a single-layer VP8 track on media 1, `subscribers` subscribers already
/// forwarding (they have seen a keyframe).
fn room(subscribers: u64, now: Instant) -> Sfu {
    let config = SfuConfig {
        max_participants_per_room: 2_000,
        ..SfuConfig::default()
    };
    let mut sfu = Sfu::new(config, 1);
    let publisher = ParticipantId(0);
    sfu.join(publisher, "bench", ParticipantMeta::default(), now)
        .unwrap();
    let spec = TrackSpec {
        kind: TrackKind::Video,
        codec: CodecSpec {
            name: "VP8".into(),
            payload_type: 96,
            clock_rate: 90_000,
            channels: 0,
            fmtp: String::new(),
        },
        source: "camera".into(),
        layers: vec![LayerSpec {
            media: MediaId(1),
            max_bitrate: 1_500_000,
            width: 1280,
            height: 720,
        }],
        muted: false,
    };
    let track = sfu.publish(publisher, spec, now).unwrap();
    for id in 1..=subscribers {
        sfu.join(ParticipantId(id), "bench", ParticipantMeta::default(), now)
            .unwrap();
        sfu.subscribe(ParticipantId(id), track, None, now).unwrap();
    }
    let mut forwarded = 0;
    sfu.handle_rtp(
        publisher,
        MediaId(1),
        &vp8_packet(0, true),
        now,
        &mut |_| forwarded += 1,
    )
    .unwrap();
    assert_eq!(forwarded, subscribers);
    while sfu.poll_event().is_some() {}
    sfu
}

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout");
    let now = Instant::now();
    for subscribers in [1u64, 10, 100, 1000] {
        let mut sfu = room(subscribers, now);
        let mut packet = vp8_packet(1, false);
        let mut send_buffer = vec![0u8; 1500];
        let mut seq: u16 = 1;
        group.throughput(Throughput::Elements(subscribers));
        group.bench_function(BenchmarkId::from_parameter(subscribers), |b| {
            b.iter(|| {
                seq = seq.wrapping_add(1);
                packet[2..4].copy_from_slice(&seq.to_be_bytes());
                sfu.handle_rtp(ParticipantId(0), MediaId(1), &packet, now, &mut |fwd| {
                    let len = fwd.write_into(&mut send_buffer);
                    black_box(&send_buffer[..len]);
                })
                .unwrap();
            });
        });
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
