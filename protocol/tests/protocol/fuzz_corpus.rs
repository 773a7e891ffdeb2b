//! The fuzz targets' checks, run as plain tests: over every file of the committed seed corpus
//! (`fuzz/corpus/<target>/`) and over a seeded sweep of mutations of it, so that they run in CI
//! where cargo-fuzz cannot.
//!
//! The checks themselves live in `fuzz/src/checks.rs`, shared with the fuzz targets. This module
//! also holds the seed generator: `STRAIT_REGENERATE_CORPUS=1 cargo test -p strait-protocol --test
//! protocol fuzz_corpus` rewrites the generated seeds (see `fuzz/README.md`); without the variable
//! the test checks that the committed seeds are exactly what the generator produces.

#[path = "../../fuzz/src/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use checks::{FrameInput, SingleFrameInput};
use strait_protocol::datagram::{self, DatagramControl};
use strait_protocol::*;

/// One fuzz target: its name (the corpus directory) and its check.
struct Target {
    name: &'static str,
    check: fn(&[u8]),
}

const TARGETS: [Target; 4] = [
    Target {
        name: "frame_reader",
        check: checks::frame_reader,
    },
    Target {
        name: "control_decode",
        check: checks::control_decode,
    },
    Target {
        name: "datagram_parse",
        check: checks::datagram_parse,
    },
    Target {
        name: "single_frame",
        check: checks::single_frame,
    },
];

/// Inputs of the mutation sweep, over all targets.
const SWEEP_INPUTS: usize = 20_000;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

/// The committed seeds of `target`, sorted by name so that the sweep is deterministic.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("readable corpus directory").path();
            let name = path
                .file_name()
                .expect("a file")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&path).expect("readable seed"))
        })
        .collect();
    files.sort();
    files
}

/// Runs `check` on `data`, printing the input in hex before passing on a failure.
fn run(target: &Target, what: &str, data: &[u8]) {
    if let Err(panic) = std::panic::catch_unwind(|| (target.check)(data)) {
        eprintln!("{} failed on {what}: {}", target.name, hex::encode(data));
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn every_committed_seed_passes_its_target() {
    for target in &TARGETS {
        let files = corpus(target.name);
        assert!(
            files.len() >= 10,
            "{} has only {} seeds",
            target.name,
            files.len()
        );
        for (name, data) in &files {
            run(target, name, data);
        }
    }
}

#[test]
fn the_seed_corpus_stays_small() {
    let (mut count, mut bytes) = (0, 0);
    for target in &TARGETS {
        for (_, data) in corpus(target.name) {
            count += 1;
            bytes += data.len();
        }
    }
    assert!(
        count < 100 && bytes < 200 * 1024,
        "{count} seeds, {bytes} bytes"
    );
}

/// xorshift64*: small, seeded, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Bytes that sit on varint and length boundaries, where decoders go wrong.
const INTERESTING: [u8; 12] = [
    0x00, 0x01, 0x1a, 0x3f, 0x40, 0x7f, 0x80, 0xc0, 0xfb, 0xfc, 0xfd, 0xff,
];

fn mutate(rng: &mut Rng, data: &mut Vec<u8>, others: &[(String, Vec<u8>)]) {
    for _ in 0..1 + rng.below(4) {
        match rng.below(7) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let keep = rng.below(data.len() + 1);
                data.truncate(keep);
            }
            3 => {
                // Splice: a prefix of this input, then a suffix of another seed.
                let (_, other) = &others[rng.below(others.len())];
                let cut = rng.below(data.len() + 1);
                let from = rng.below(other.len() + 1);
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            4 => {
                let i = rng.below(data.len() + 1);
                let b = rng.next() as u8;
                data.insert(i, b);
            }
            5 if !data.is_empty() => {
                // Repeat a slice (repeated frames, duplicated fields).
                let start = rng.below(data.len());
                let end = start + rng.below(data.len() - start) + 1;
                let copy = data[start..end].to_vec();
                let at = rng.below(data.len() + 1);
                data.splice(at..at, copy);
            }
            _ if !data.is_empty() => {
                let i = rng.below(data.len());
                data.remove(i);
            }
            _ => data.push(rng.next() as u8),
        }
    }
}

#[test]
fn seeded_mutation_sweep_passes_every_target() {
    let mut rng = Rng(0x5354_5241_4954_0001);
    for target in &TARGETS {
        let files = corpus(target.name);
        for i in 0..SWEEP_INPUTS / TARGETS.len() {
            let (name, seed) = &files[rng.below(files.len())];
            let mut data = seed.clone();
            mutate(&mut rng, &mut data, &files);
            run(target, &format!("mutation {i} of {name}"), &data);
        }
    }
}

// Regressions found by the `frame_reader` check: a length prefix that completed at the very end
// of a chunk was only looked at when more input arrived.

#[test]
fn empty_frame_whose_prefix_arrives_split_is_returned_at_once() {
    let mut reader = FrameReader::new(256);
    assert_eq!(
        reader.next_frame(&mut Bytes::from_static(&[0x40])),
        Ok(None)
    );
    assert_eq!(
        reader.next_frame(&mut Bytes::from_static(&[0x00])),
        Ok(Some(Bytes::new()))
    );
    assert_eq!(reader.buffered(), 0);
}

#[test]
fn too_large_prefix_completed_at_the_end_of_a_chunk_is_refused_at_once() {
    let mut reader = FrameReader::new(256);
    assert_eq!(
        reader.next_frame(&mut Bytes::from_static(&[0xff; 3])),
        Ok(None)
    );
    assert!(matches!(
        reader.next_frame(&mut Bytes::from_static(&[0xff; 5])),
        Err(DecodeError::FrameTooLarge { max: 256, .. })
    ));
}

// --- seed generator ---

/// A seed: target, file name, bytes. Names say `valid-` for inputs the decoder accepts and
/// `hostile-` for the ones it must refuse cleanly.
struct Seed {
    target: &'static str,
    name: String,
    bytes: Vec<u8>,
}

fn valid_messages() -> Vec<(&'static str, ControlMessage)> {
    let codec = Codec {
        name: "VP8".into(),
        payload_type: 96,
        clock_rate: 90_000,
        channels: 0,
        fmtp: String::new(),
    };
    let layer = |media, max_bitrate, width, height| Layer {
        media: MediaId(media),
        max_bitrate,
        width,
        height,
    };
    vec![
        (
            "client-hello",
            ControlMessage::ClientHello(ClientHello {
                version: PROTOCOL_VERSION,
                token: "eyJhbGciOiJFZERTQSJ9.eyJyb29tIjoibG9iYnkifQ.c2lnbmF0dXJl".into(),
                resume: Some(ResumeToken("r-0123456789abcdef".into())),
                agent: "strait-client/0.1".into(),
            }),
        ),
        (
            "server-hello",
            ControlMessage::ServerHello(ServerHello {
                version: PROTOCOL_VERSION,
                participant: ParticipantId(42),
                resume_token: ResumeToken("r-0123456789abcdef".into()),
                resumed: false,
                ice_servers: vec![IceServer {
                    urls: vec![
                        "stun:stun.example.net:3478".into(),
                        "turn:turn.example.net".into(),
                    ],
                    username: Some("1700000000:42".into()),
                    credential: Some("c2VjcmV0".into()),
                }],
                limits: SessionLimits {
                    max_frame_size: 65_536,
                    max_tracks: 8,
                    max_subscriptions: 64,
                    max_messages_per_second: 50,
                },
                max_datagram_size: 1200,
            }),
        ),
        (
            "join",
            ControlMessage::Join(Join {
                request: RequestId(1),
                room: RoomId("lobby".into()),
                name: "Ada".into(),
            }),
        ),
        (
            "joined",
            ControlMessage::Joined(Joined {
                request: RequestId(1),
                room: RoomId("lobby".into()),
                me: ParticipantInfo {
                    participant: ParticipantId(42),
                    identity: "ada".into(),
                    name: "Ada".into(),
                },
            }),
        ),
        (
            "publish",
            ControlMessage::Publish(Publish {
                request: RequestId(2),
                kind: TrackKind::Video,
                codec: codec.clone(),
                source: "camera".into(),
                layers: vec![
                    layer(1, 150_000, 320, 180),
                    layer(2, 500_000, 640, 360),
                    layer(70_000, 1_500_000, 1280, 720),
                ],
                muted: false,
            }),
        ),
        (
            "track-published",
            ControlMessage::TrackPublished(TrackInfo {
                track: TrackId(7),
                participant: ParticipantId(42),
                kind: TrackKind::Audio,
                codec: Codec {
                    name: "opus".into(),
                    payload_type: 111,
                    clock_rate: 48_000,
                    channels: 2,
                    fmtp: "minptime=10;useinbandfec=1".into(),
                },
                source: "microphone".into(),
                layers: vec![LayerInfo {
                    max_bitrate: 64_000,
                    width: 0,
                    height: 0,
                }],
                muted: true,
            }),
        ),
        (
            "subscribe",
            ControlMessage::Subscribe(Subscribe {
                request: RequestId(3),
                track: TrackId(7),
                max_layer: Some(1),
                priority: Some(200),
            }),
        ),
        (
            "subscribed",
            ControlMessage::Subscribed(Subscribed {
                request: RequestId(3),
                track: TrackId(7),
                media: MediaId(16_384),
                ssrc: 0xdead_beef,
                layer: 1,
            }),
        ),
        (
            "set-layer-preference",
            ControlMessage::SetLayerPreference(SetLayerPreference {
                request: RequestId(5),
                track: TrackId(7),
                max_layer: None,
                priority: None,
            }),
        ),
        (
            "keyframe-request",
            ControlMessage::KeyframeRequest(KeyframeRequest {
                track: TrackId(7),
                layer: None,
            }),
        ),
        (
            "ping",
            ControlMessage::Ping(Ping {
                nonce: 0x0123_4567_89ab_cdef,
            }),
        ),
        (
            "participant-left",
            ControlMessage::ParticipantLeft(ParticipantLeft {
                participant: ParticipantId(43),
                reason: ErrorCode(0x1234),
            }),
        ),
        (
            "goaway",
            ControlMessage::GoAway(GoAway {
                code: ErrorCode::GOING_AWAY,
                redirect: Some("https://edge-2.example.net:4433/rtc".into()),
                cert_hashes: vec![
                    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(),
                ],
                token: Some("eyJhbGciOiJIUzI1NiJ9.e30.c2ln".into()),
            }),
        ),
        (
            "error",
            ControlMessage::Error(ErrorMessage {
                request: Some(RequestId(4)),
                code: ErrorCode::NOT_FOUND,
                reason: "no such track".into(),
            }),
        ),
        (
            "sdp",
            ControlMessage::Sdp(SessionDescription {
                kind: SdpType::Offer,
                sdp: "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n".into(),
            }),
        ),
        (
            "ice-candidate",
            ControlMessage::IceCandidate(IceCandidate {
                candidate: "candidate:1 1 UDP 2122252543 192.0.2.1 54321 typ host".into(),
                sdp_mid: Some("0".into()),
                sdp_mline_index: Some(0),
            }),
        ),
        (
            "new-resume-token",
            ControlMessage::NewResumeToken(NewResumeToken {
                resume_token: ResumeToken("AQAAAAAAAAAqAAAAAAAAAAA".into()),
            }),
        ),
        (
            "track-paused",
            ControlMessage::TrackPaused(TrackPaused {
                track: TrackId(7),
                reason: PauseReason::BANDWIDTH,
            }),
        ),
        (
            "track-resumed",
            ControlMessage::TrackResumed(TrackResumed {
                track: TrackId(70_000),
                reason: PauseReason(9),
            }),
        ),
    ]
}

fn body(message: &ControlMessage) -> Vec<u8> {
    let mut out = Vec::new();
    encode_message(message, &mut out).expect("encodes");
    out
}

/// `body` with a varint length prefix, as `encode_frame` writes it but without its checks (so that
/// hostile bodies can be framed).
fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint::put(body.len() as u64, &mut out).expect("small");
    out.extend_from_slice(body);
    out
}

/// A bincode varint carrying `value` in its 8-byte form (marker 253).
fn bincode_u64(value: u64) -> Vec<u8> {
    let mut out = vec![253];
    out.extend_from_slice(&value.to_le_bytes());
    out
}

/// The first message kind this version does not know.
const UNKNOWN_KIND: u8 = ControlMessage::KINDS as u8;

/// What `decode_message` must answer for a hostile body.
type Expected = fn(&Result<Decoded, DecodeError>) -> bool;

/// Hostile control bodies: (name, bytes, what `decode_message` must answer).
fn hostile_bodies() -> Vec<(&'static str, Vec<u8>, Expected)> {
    let publish = |layers: Vec<Layer>| {
        body(&ControlMessage::Publish(Publish {
            request: RequestId(2),
            kind: TrackKind::Audio,
            codec: Codec {
                name: "opus".into(),
                payload_type: 111,
                clock_rate: 48_000,
                channels: 2,
                fmtp: String::new(),
            },
            source: "microphone".into(),
            layers,
            muted: false,
        }))
    };
    let layer = |media| Layer {
        media: MediaId(media),
        max_bitrate: 0,
        width: 0,
        height: 0,
    };
    let hello = body(&valid_messages()[0].1);
    let mut long_room = vec![2, 1, 129];
    long_room.extend_from_slice(&[b'r'; 129]);
    long_room.push(0);
    let mut long_token = vec![0, 1, 0xfb];
    long_token.extend_from_slice(&4097u16.to_le_bytes());
    long_token.extend_from_slice(&[b't'; 4097]);
    long_token.extend_from_slice(&[0, 0]);
    // ClientHello: version 1, then a token length of 2^62 and no bytes.
    let mut huge_string = vec![0, 1];
    huge_string.extend_from_slice(&bincode_u64(1 << 62));
    // ServerHello: version 1, participant 42, empty resume token, not resumed, 2^32 ICE servers.
    let mut huge_list = vec![1, 1, 42, 0, 0];
    huge_list.extend_from_slice(&bincode_u64(1 << 32));
    // Publish with a track kind of 5.
    let mut bad_enum = publish(vec![layer(1)]);
    bad_enum[2] = 5;
    vec![
        ("hostile-empty", vec![], |r| {
            r == &Err(DecodeError::Truncated)
        }),
        ("hostile-unknown-kind", vec![UNKNOWN_KIND, 1, 2, 3], |r| {
            r == &Ok(Decoded::UnknownKind(u32::from(UNKNOWN_KIND)))
        }),
        // Subscribe whose appended priority has an option tag of 2.
        (
            "hostile-subscribe-priority-tag-2",
            vec![12, 3, 7, 0, 2, 9],
            |r| matches!(r, Err(DecodeError::UnknownVariant { found: 2, .. })),
        ),
        ("hostile-unknown-kind-wide", vec![0xfb, 0x00, 0x10], |r| {
            r == &Ok(Decoded::UnknownKind(4096))
        }),
        ("hostile-kind-marker-254", vec![0xfe; 17], |r| {
            matches!(r, Err(DecodeError::Malformed(_)))
        }),
        (
            "hostile-truncated",
            hello[..hello.len() / 2].to_vec(),
            |r| r == &Err(DecodeError::Truncated),
        ),
        (
            "hostile-invalid-utf8",
            vec![0, 1, 2, 0xff, 0xfe, 0, 0],
            |r| r == &Err(DecodeError::InvalidUtf8),
        ),
        ("hostile-string-len-2-62", huge_string, |r| r.is_err()),
        ("hostile-list-count-2-32", huge_list, |r| {
            matches!(
                r,
                Err(DecodeError::TooManyItems {
                    field: "ice_servers",
                    ..
                })
            )
        }),
        ("hostile-token-too-long", long_token, |r| {
            matches!(
                r,
                Err(DecodeError::FieldTooLong {
                    field: "token",
                    len: 4097,
                    ..
                })
            )
        }),
        ("hostile-room-empty", vec![2, 1, 0, 0], |r| {
            matches!(r, Err(DecodeError::InvalidField { field: "room", .. }))
        }),
        ("hostile-room-too-long", long_room, |r| {
            matches!(r, Err(DecodeError::FieldTooLong { field: "room", .. }))
        }),
        ("hostile-publish-no-layers", publish(vec![]), |r| {
            matches!(
                r,
                Err(DecodeError::InvalidField {
                    field: "layers",
                    ..
                })
            )
        }),
        (
            "hostile-publish-same-media",
            publish(vec![layer(1), layer(1)]),
            |r| {
                matches!(
                    r,
                    Err(DecodeError::InvalidField {
                        field: "layers",
                        ..
                    })
                )
            },
        ),
        (
            "hostile-publish-four-layers",
            publish((1..=4).map(layer).collect()),
            |r| {
                matches!(
                    r,
                    Err(DecodeError::TooManyItems {
                        field: "layers",
                        count: 4,
                        ..
                    })
                )
            },
        ),
        ("hostile-track-kind-5", bad_enum, |r| {
            // serde's derived enums report an unknown index as a custom error, so this
            // is `Malformed` rather than `UnknownVariant`.
            matches!(
                r,
                Err(DecodeError::UnknownVariant { found: 5, .. } | DecodeError::Malformed(_))
            )
        }),
        ("hostile-bool-2", vec![16, 1, 7, 2], |r| {
            matches!(r, Err(DecodeError::Malformed(_)))
        }),
    ]
}

/// An RTP packet of `len` bytes (at least 12): version 2, payload type 96, `csrc` CSRCs and, if
/// `ext_words` is set, a one-byte-header extension of that many words.
fn rtp(len: usize, csrc: u8, ext_words: Option<u16>) -> Vec<u8> {
    let mut out = vec![
        0x80 | csrc,
        96,
        0x12,
        0x34,
        0,
        0,
        0x0b,
        0xb8,
        0xca,
        0xfe,
        0xba,
        0xbe,
    ];
    for i in 0..csrc {
        out.extend_from_slice(&[0, 0, 0, i]);
    }
    if let Some(words) = ext_words {
        out[0] |= 0x10;
        out.extend_from_slice(&[0xbe, 0xde]);
        out.extend_from_slice(&words.to_be_bytes());
        out.extend(std::iter::repeat_n(0x22, 4 * usize::from(words)));
    }
    assert!(out.len() <= len);
    out.resize(len, 0x5a);
    out
}

fn media(id: u32, rtp: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; datagram::media_header_len(MediaId(id)) + rtp.len()];
    datagram::write_media_datagram(MediaId(id), rtp, &mut out).expect("fits");
    out
}

fn control(c: &DatagramControl) -> Vec<u8> {
    let mut out = Vec::new();
    datagram::encode_control_datagram(c, &mut out).expect("encodes");
    out
}

fn seeds() -> Vec<Seed> {
    let mut seeds = Vec::new();
    let mut add = |target, name: &str, bytes| {
        seeds.push(Seed {
            target,
            name: name.to_owned(),
            bytes,
        });
    };
    let messages = valid_messages();
    let message = |name: &str| {
        &messages
            .iter()
            .find(|(n, _)| *n == name)
            .expect("a message")
            .1
    };

    // control_decode: message bodies.
    for (name, message) in &messages {
        add("control_decode", &format!("valid-{name}"), body(message));
    }
    for (name, bytes, _) in hostile_bodies() {
        add("control_decode", name, bytes);
    }

    // frame_reader: header byte (max frame size index, split count), chunk lengths, stream. Index
    // 0 is 256 bytes, 1 is 0, 3 is 16, 6 is 1024.
    let stream: Vec<u8> = messages.iter().flat_map(|(_, m)| frame(&body(m))).collect();
    let fr = "frame_reader";
    add(
        fr,
        "valid-all-kinds-whole",
        FrameInput::build(6, &[], &stream),
    );
    add(
        fr,
        "valid-all-kinds-split",
        FrameInput::build(6, &[1, 0, 3, 7, 2, 40, 255, 9], &stream),
    );
    let ping = frame(&body(message("ping")));
    add(
        fr,
        "valid-ping-bytewise",
        FrameInput::build(0, &[1; 9], &ping),
    );
    let join = frame(&body(message("join")));
    add(fr, "hostile-max-0", FrameInput::build(1, &[], &join));
    add(
        fr,
        "hostile-too-large-for-16",
        FrameInput::build(3, &[], &join),
    );
    add(
        fr,
        "hostile-prefix-2-62",
        FrameInput::build(0, &[3], &[0xff; 12]),
    );
    add(
        fr,
        "hostile-prefix-2-62-split",
        FrameInput::build(0, &[3], &[0xff; 8]),
    );
    add(
        fr,
        "hostile-prefix-257",
        FrameInput::build(0, &[1], &[0x41, 0x01, 0, 0, 0]),
    );
    let mut truncated = vec![0x40, 100];
    truncated.extend_from_slice(&[20; 10]);
    add(
        fr,
        "hostile-truncated-frame",
        FrameInput::build(0, &[4], &truncated),
    );
    let mut unknown_then_ping = frame(&[UNKNOWN_KIND, 1, 2, 3]);
    unknown_then_ping.extend_from_slice(&ping);
    add(
        fr,
        "hostile-unknown-kind-then-ping",
        FrameInput::build(0, &[2], &unknown_then_ping),
    );
    let hostile = hostile_bodies();
    for (name, bytes, _) in &hostile {
        if matches!(
            *name,
            "hostile-invalid-utf8" | "hostile-string-len-2-62" | "hostile-list-count-2-32"
        ) {
            add(fr, name, FrameInput::build(0, &[], &frame(bytes)));
        }
    }
    add(fr, "hostile-empty", vec![]);
    add(
        fr,
        "hostile-empty-frame",
        FrameInput::build(0, &[], &[0x00]),
    );
    add(
        fr,
        "hostile-empty-frame-split-prefix",
        FrameInput::build(0, &[1], &[0x40, 0x00]),
    );

    // datagram_parse: whole datagrams.
    let dp = "datagram_parse";
    add(dp, "valid-media-min", media(1, &rtp(12, 0, None)));
    add(dp, "valid-media-1200", media(300, &rtp(1197, 2, Some(1))));
    add(
        dp,
        "valid-media-id-4-bytes",
        media(1 << 20, &rtp(40, 0, None)),
    );
    add(
        dp,
        "valid-media-id-8-bytes",
        media(u32::MAX, &rtp(80, 15, None)),
    );
    let mut non_minimal = vec![0, 0x40, 0x01];
    non_minimal.extend_from_slice(&rtp(20, 0, None));
    add(dp, "valid-media-id-non-minimal", non_minimal);
    for (name, c) in [
        (
            "ping",
            DatagramControl::Ping {
                seq: 1,
                timestamp_us: 1_700_000_000_000_000,
            },
        ),
        (
            "pong",
            DatagramControl::Pong {
                seq: 1,
                timestamp_us: 12,
            },
        ),
        (
            "receiver-report",
            DatagramControl::ReceiverReport {
                media: MediaId(3),
                highest_seq: 70_000,
                lost: 2,
                jitter: 90,
            },
        ),
        (
            "keyframe-request",
            DatagramControl::KeyframeRequest {
                media: MediaId(16_384),
            },
        ),
    ] {
        add(dp, &format!("valid-control-{name}"), control(&c));
    }
    let mut id_2_32 = vec![0, 0xc0, 0, 0, 1, 0, 0, 0, 0];
    id_2_32.extend_from_slice(&rtp(12, 0, None));
    add(dp, "hostile-media-id-2-32", id_2_32);
    add(dp, "hostile-media-id-cut-short", vec![0, 0x80, 0x01]);
    let mut v0 = media(1, &rtp(12, 0, None));
    v0[2] &= 0x3f;
    add(dp, "hostile-rtp-version-0", v0);
    add(
        dp,
        "hostile-rtp-11-bytes",
        media(1, &rtp(12, 0, None)[..11]),
    );
    add(
        dp,
        "hostile-rtp-csrc-overflow",
        media(1, &rtp(72, 15, None)[..40]),
    );
    let mut ext = rtp(12, 0, None);
    ext[0] |= 0x10;
    add(dp, "hostile-rtp-extension-cut-short", media(1, &ext));
    add(
        dp,
        "hostile-rtp-extension-overflow",
        media(1, &rtp(32, 0, Some(4))[..24]),
    );
    add(dp, "hostile-control-unknown-kind", vec![1, 9, 0]);
    add(
        dp,
        "hostile-control-unknown-kind-wide",
        vec![1, 0xfb, 0x09, 0x00],
    );
    let ping = control(&DatagramControl::Ping {
        seq: 1,
        timestamp_us: 1_700_000_000_000_000,
    });
    add(
        dp,
        "hostile-control-truncated",
        ping[..ping.len() - 2].to_vec(),
    );
    add(dp, "hostile-control-empty", vec![1]);
    add(dp, "hostile-unknown-kind", vec![3, 1, 2, 3]);
    let mut padding = Vec::new();
    datagram::write_padding(&mut padding, 48);
    add(dp, "valid-padding", padding);
    add(dp, "hostile-empty", vec![]);

    // single_frame: header byte (max frame size index), then one WebSocket message. Index 0 is
    // 256 bytes, 1 is 0, 3 is 16, 6 is 1024, 7 is 4096.
    let sf = "single_frame";
    for name in ["ping", "join"] {
        add(
            sf,
            &format!("valid-{name}"),
            SingleFrameInput::build(0, &frame(&body(message(name)))),
        );
    }
    for name in ["client-hello", "sdp"] {
        add(
            sf,
            &format!("valid-{name}"),
            SingleFrameInput::build(6, &frame(&body(message(name)))),
        );
    }
    add(
        sf,
        "valid-unknown-kind",
        SingleFrameInput::build(0, &frame(&[UNKNOWN_KIND, 1, 2, 3])),
    );
    let ping_body = body(message("ping"));
    let ping = frame(&ping_body);
    let mut long_prefix = vec![0xc0, 0, 0, 0, 0, 0, 0, ping_body.len() as u8];
    long_prefix.extend_from_slice(&ping_body);
    add(
        sf,
        "valid-ping-8-byte-prefix",
        SingleFrameInput::build(0, &long_prefix),
    );
    add(sf, "hostile-empty-message", SingleFrameInput::build(0, &[]));
    add(
        sf,
        "hostile-empty-frame",
        SingleFrameInput::build(0, &[0x00]),
    );
    add(
        sf,
        "hostile-prefix-cut",
        SingleFrameInput::build(0, &[0x40]),
    );
    add(
        sf,
        "hostile-body-cut",
        SingleFrameInput::build(0, &ping[..ping.len() - 1]),
    );
    add(
        sf,
        "hostile-two-frames",
        SingleFrameInput::build(0, &[ping.as_slice(), ping.as_slice()].concat()),
    );
    add(
        sf,
        "hostile-trailing-byte",
        SingleFrameInput::build(0, &[ping.as_slice(), &[0]].concat()),
    );
    add(sf, "hostile-max-0", SingleFrameInput::build(1, &ping));
    add(
        sf,
        "hostile-too-large-prefix-only",
        SingleFrameInput::build(3, &[0x44, 0x00]),
    );
    // What `bad_frames_close_only_their_own_session` sends: 131072 announced, 64 bytes given.
    let mut announced_128k = vec![0x80, 0x02, 0x00, 0x00];
    announced_128k.extend_from_slice(&[0; 64]);
    add(
        sf,
        "hostile-too-large-128k",
        SingleFrameInput::build(7, &announced_128k),
    );
    add(
        sf,
        "hostile-prefix-2-62",
        SingleFrameInput::build(0, &[0xff; 8]),
    );
    add(
        sf,
        "hostile-broken-join",
        SingleFrameInput::build(0, &[3, 2, 0xff, 0xff]),
    );
    seeds
}

#[test]
fn hostile_control_bodies_get_the_expected_answer() {
    for (name, bytes, expected) in hostile_bodies() {
        let got = decode_message(&bytes);
        assert!(expected(&got), "{name}: got {got:?}");
    }
}

#[test]
fn generated_seeds_pass_their_targets() {
    for seed in seeds() {
        let target = TARGETS
            .iter()
            .find(|t| t.name == seed.target)
            .expect("a target");
        run(target, &seed.name, &seed.bytes);
    }
}

/// With `STRAIT_REGENERATE_CORPUS=1`, writes the generated seeds into `fuzz/corpus/<target>/`
/// (files it does not generate, such as crashes kept as regressions, are left alone). Without it,
/// checks that every generated seed is committed unchanged, so a wire change cannot leave the
/// corpus stale.
#[test]
fn committed_seeds_match_the_generator() {
    let regenerate = std::env::var_os("STRAIT_REGENERATE_CORPUS").is_some_and(|v| v == "1");
    for seed in seeds() {
        let dir = corpus_dir(seed.target);
        let path = dir.join(&seed.name);
        if regenerate {
            std::fs::create_dir_all(&dir).expect("corpus directory");
            std::fs::write(&path, &seed.bytes).expect("seed written");
        } else {
            let committed = std::fs::read(&path).unwrap_or_else(|e| {
                panic!(
                    "{} missing ({e}); regenerate with STRAIT_REGENERATE_CORPUS=1",
                    path.display()
                )
            });
            assert_eq!(
                committed,
                seed.bytes,
                "{} is stale; regenerate with STRAIT_REGENERATE_CORPUS=1",
                path.display()
            );
        }
    }
}
