//! Codec micro-benchmarks: the hot control messages, framing, and the media datagram path.
//!
//! `cargo bench -p strait-protocol --bench codec` (add `-- --warm-up-time 1 --measurement-time 2`
//! for a quick run). Buffers are reused across iterations as the gateway reuses them, so the
//! figures are the codec's cost, not the allocator's.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use strait_protocol::datagram::{self, DatagramControl};
use strait_protocol::limits::DEFAULT_MAX_FRAME_SIZE;
use strait_protocol::*;

/// The control messages sent most often (per keyframe, per subscription, per track, per session).
fn hot_messages() -> Vec<(&'static str, ControlMessage)> {
    vec![
        (
            "ping",
            ControlMessage::Ping(Ping {
                nonce: 0x0123_4567_89ab_cdef,
            }),
        ),
        (
            "keyframe_request",
            ControlMessage::KeyframeRequest(KeyframeRequest {
                track: TrackId(1_000_007),
                layer: Some(2),
            }),
        ),
        (
            "subscribe",
            ControlMessage::Subscribe(Subscribe {
                request: RequestId(17),
                track: TrackId(1_000_007),
                max_layer: None,
                priority: None,
            }),
        ),
        (
            "track_published",
            ControlMessage::TrackPublished(TrackInfo {
                track: TrackId(1_000_007),
                participant: ParticipantId(4_242),
                kind: TrackKind::Video,
                codec: Codec {
                    name: "VP8".into(),
                    payload_type: 96,
                    clock_rate: 90_000,
                    channels: 0,
                    fmtp: String::new(),
                },
                source: "camera".into(),
                layers: vec![
                    LayerInfo {
                        max_bitrate: 150_000,
                        width: 320,
                        height: 180,
                    },
                    LayerInfo {
                        max_bitrate: 500_000,
                        width: 640,
                        height: 360,
                    },
                    LayerInfo {
                        max_bitrate: 1_500_000,
                        width: 1280,
                        height: 720,
                    },
                ],
                muted: false,
            }),
        ),
        (
            "client_hello",
            ControlMessage::ClientHello(ClientHello {
                version: PROTOCOL_VERSION,
                // A typical EdDSA JWT is 250–400 bytes.
                token: "eyJhbGciOiJFZERTQSJ9.".repeat(16),
                resume: None,
                agent: "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0".into(),
            }),
        ),
    ]
}

fn control_messages(c: &mut Criterion) {
    let mut group = c.benchmark_group("control");
    let mut buf = Vec::with_capacity(1024);
    for (name, message) in hot_messages() {
        group.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| {
                buf.clear();
                encode_message(black_box(&message), &mut buf).unwrap();
                black_box(buf.len())
            });
        });
        let mut body = Vec::new();
        encode_message(&message, &mut body).unwrap();
        group.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| decode_message(black_box(&body)).unwrap());
        });
    }
    group.finish();
}

fn frame_reader(c: &mut Criterion) {
    let small = [
        ControlMessage::Ping(Ping { nonce: 99 }),
        ControlMessage::KeyframeRequest(KeyframeRequest {
            track: TrackId(7),
            layer: None,
        }),
        ControlMessage::Subscribe(Subscribe {
            request: RequestId(3),
            track: TrackId(7),
            max_layer: Some(1),
            priority: None,
        }),
    ];
    let mut wire = Vec::new();
    for i in 0..1000 {
        encode_frame(&small[i % small.len()], DEFAULT_MAX_FRAME_SIZE, &mut wire).unwrap();
    }
    let wire = Bytes::from(wire);

    let mut group = c.benchmark_group("frame_reader");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("next_frame/1000_small", |b| {
        b.iter(|| {
            let mut reader = FrameReader::new(DEFAULT_MAX_FRAME_SIZE);
            let mut input = black_box(wire.clone());
            let mut frames = 0usize;
            while let Some(body) = reader.next_frame(&mut input).unwrap() {
                frames += body.len();
            }
            frames
        });
    });
    group.bench_function("next_message/1000_small", |b| {
        b.iter(|| {
            let mut reader = FrameReader::new(DEFAULT_MAX_FRAME_SIZE);
            let mut input = black_box(wire.clone());
            let mut messages = 0usize;
            while let Some(decoded) = reader.next_message(&mut input).unwrap() {
                black_box(&decoded);
                messages += 1;
            }
            assert_eq!(messages, 1000);
        });
    });
    group.finish();
}

fn datagrams(c: &mut Criterion) {
    // A 1200-byte media datagram: media id 300 (two-byte varint), RTP with one header extension
    // word and a payload.
    let media = MediaId(300);
    let mut rtp = vec![
        0x90, 96, 0x12, 0x34, 0, 0, 0x0b, 0xb8, 0xca, 0xfe, 0xba, 0xbe,
    ];
    rtp.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xaa, 0, 0]);
    rtp.resize(1200 - datagram::media_header_len(media), 0x5a);
    let mut packet = vec![0u8; 1200];
    datagram::write_media_datagram(media, &rtp, &mut packet).unwrap();

    let mut group = c.benchmark_group("datagram");
    group.throughput(Throughput::Bytes(1200));
    group.bench_function("parse_media/1200", |b| {
        b.iter(|| datagram::parse_media(black_box(&packet)).unwrap().0);
    });
    let mut out = [0u8; 1500];
    group.bench_function("write_media_datagram/1200", |b| {
        b.iter(|| {
            datagram::write_media_datagram(black_box(media), black_box(&rtp), &mut out).unwrap()
        });
    });
    group.throughput(Throughput::Elements(1));
    let report = DatagramControl::ReceiverReport {
        media,
        highest_seq: 70_000,
        lost: 3,
        jitter: 120,
    };
    let mut buf = Vec::with_capacity(64);
    group.bench_function("encode_control/receiver_report", |b| {
        b.iter(|| {
            buf.clear();
            datagram::encode_control_datagram(black_box(&report), &mut buf).unwrap();
            black_box(buf.len())
        });
    });
    let mut encoded = Vec::new();
    datagram::encode_control_datagram(&report, &mut encoded).unwrap();
    let encoded = Bytes::from(encoded);
    group.bench_function("parse_control/receiver_report", |b| {
        b.iter(|| datagram::parse_datagram(black_box(&encoded)).unwrap());
    });
    group.finish();
}

criterion_group!(benches, control_messages, frame_reader, datagrams);
criterion_main!(benches);
