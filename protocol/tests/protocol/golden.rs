//! Golden vectors: the exact bytes of every message, checked in both directions.
//!
//! `tests/vectors/vectors.json` holds, for every control message kind, every control datagram
//! kind, a few media datagrams, a few QUIC varints and padding datagrams, the value (as
//! serde_json prints the Rust type) next to its wire bytes (hex). This test checks that encoding each value gives exactly its
//! bytes and that decoding the bytes gives exactly the value. The web demo's JavaScript codec is
//! tested against the same file; its format is described in `docs/PROTOCOL.md` ("Golden vectors").
//!
//! The file is generated from the values listed below:
//!
//! ```text
//! STRAIT_BLESS_VECTORS=1 cargo test -p strait-protocol --test protocol golden
//! ```
//!
//! Without the variable the test only reads and checks the file. Regenerate only when the wire
//! format is meant to change (or when a vector is added); a change of bytes for an existing vector
//! is a breaking change of the protocol.

use std::collections::BTreeSet;
use std::path::PathBuf;

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use strait_protocol::datagram::{self, Datagram};
use strait_protocol::*;

const BLESS_VAR: &str = "STRAIT_BLESS_VECTORS";
/// Version of the vectors file layout (not of the protocol).
const FILE_VERSION: u32 = 1;
/// JavaScript numbers are exact up to 2^53 - 1; every number in the file stays below.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/vectors.json")
}

// ---------------------------------------------------------------------------------------------
// The values the file is generated from. Order is the file's order; append, do not reorder.
// ---------------------------------------------------------------------------------------------

/// A participant id above 2^32 (bincode marker 253 + u64) and below 2^53 (exact in JSON).
const BIG_PARTICIPANT: u64 = 0x0001_2345_6789_abcd;
/// A track id above 2^32 and below 2^53.
const BIG_TRACK: u64 = 0x0000_00ff_0000_0001;

fn jwt() -> String {
    "eyJhbGciOiJIUzI1NiIsImtpZCI6ImRldiJ9.eyJzdWIiOiJhbGljZSIsInJvb20iOiJkZW1vIn0.c2lnbmF0dXJl"
        .to_owned()
}

/// A token of 300 bytes: its length needs the bincode marker 251 + u16, and the frame's length
/// needs a two-byte QUIC varint.
fn long_token() -> String {
    format!("eyJhbGciOiJIUzI1NiJ9.{}.c2lnbmF0dXJl", "a".repeat(266))
}

fn opus() -> Codec {
    Codec {
        name: "opus".into(),
        payload_type: 111,
        clock_rate: 48_000,
        channels: 2,
        fmtp: "minptime=10;useinbandfec=1".into(),
    }
}

fn vp8() -> Codec {
    Codec {
        name: "VP8".into(),
        payload_type: 96,
        clock_rate: 90_000,
        channels: 0,
        fmtp: String::new(),
    }
}

fn limits() -> SessionLimits {
    SessionLimits {
        max_frame_size: 65_536,
        max_tracks: 16,
        max_subscriptions: 256,
        max_messages_per_second: 50,
    }
}

fn simulcast_layers() -> Vec<Layer> {
    vec![
        Layer {
            media: MediaId(1),
            max_bitrate: 150_000,
            width: 320,
            height: 180,
        },
        Layer {
            media: MediaId(2),
            max_bitrate: 500_000,
            width: 640,
            height: 360,
        },
        Layer {
            media: MediaId(3),
            max_bitrate: 2_500_000,
            width: 1280,
            height: 720,
        },
    ]
}

fn control_values() -> Vec<(&'static str, ControlMessage)> {
    use ControlMessage as M;
    vec![
        (
            "client_hello",
            M::ClientHello(ClientHello {
                version: PROTOCOL_VERSION,
                token: jwt(),
                resume: None,
                agent: "strait-client/0.1".into(),
            }),
        ),
        (
            "client_hello_short",
            M::ClientHello(ClientHello {
                version: PROTOCOL_VERSION,
                token: "tok".into(),
                resume: None,
                agent: "js/1".into(),
            }),
        ),
        (
            "client_hello_resume",
            M::ClientHello(ClientHello {
                version: PROTOCOL_VERSION,
                token: jwt(),
                resume: Some(ResumeToken("rt-7f3a9c0e51d24b86".into())),
                agent: "Mozilla/5.0 (X11; Linux x86_64) Chrome/138.0".into(),
            }),
        ),
        (
            "client_hello_long_token",
            M::ClientHello(ClientHello {
                version: PROTOCOL_VERSION,
                token: long_token(),
                resume: None,
                agent: String::new(),
            }),
        ),
        (
            "server_hello_no_ice",
            M::ServerHello(ServerHello {
                version: PROTOCOL_VERSION,
                participant: ParticipantId(1),
                resume_token: ResumeToken("rt-1".into()),
                resumed: false,
                ice_servers: vec![],
                limits: limits(),
                max_datagram_size: 1160,
            }),
        ),
        (
            "server_hello_two_ice_resumed",
            M::ServerHello(ServerHello {
                version: PROTOCOL_VERSION,
                participant: ParticipantId(BIG_PARTICIPANT),
                resume_token: ResumeToken("rt-7f3a9c0e51d24b86".into()),
                resumed: true,
                ice_servers: vec![
                    IceServer {
                        urls: vec!["stun:rtc.example.com:3478".into()],
                        username: None,
                        credential: None,
                    },
                    IceServer {
                        urls: vec![
                            "turn:rtc.example.com:3478?transport=udp".into(),
                            "turns:rtc.example.com:5349?transport=tcp".into(),
                        ],
                        username: Some("1767225600:74565".into()),
                        credential: Some("q1w2e3r4t5y6u7i8o9p0".into()),
                    },
                ],
                limits: limits(),
                max_datagram_size: 1413,
            }),
        ),
        (
            "join",
            M::Join(Join {
                request: RequestId(1),
                room: RoomId("demo".into()),
                name: "Alice".into(),
            }),
        ),
        (
            "join_utf8",
            M::Join(Join {
                request: RequestId(300),
                room: RoomId("salle-été-🎥".into()),
                name: "Zoë 王".into(),
            }),
        ),
        (
            "joined",
            M::Joined(Joined {
                request: RequestId(1),
                room: RoomId("demo".into()),
                me: ParticipantInfo {
                    participant: ParticipantId(BIG_PARTICIPANT),
                    identity: "alice".into(),
                    name: "Alice".into(),
                },
            }),
        ),
        (
            "joined_snapshot",
            M::Joined(Joined {
                request: RequestId::UNSOLICITED,
                room: RoomId("demo".into()),
                me: ParticipantInfo {
                    participant: ParticipantId(7),
                    identity: "bob".into(),
                    name: String::new(),
                },
            }),
        ),
        (
            "leave",
            M::Leave(Leave {
                request: RequestId(9),
            }),
        ),
        (
            "participant_joined",
            M::ParticipantJoined(ParticipantInfo {
                participant: ParticipantId(2),
                identity: "bob".into(),
                name: "Bob".into(),
            }),
        ),
        (
            "participant_left",
            M::ParticipantLeft(ParticipantLeft {
                participant: ParticipantId(2),
                reason: ErrorCode::NONE,
            }),
        ),
        (
            "participant_left_timeout",
            M::ParticipantLeft(ParticipantLeft {
                participant: ParticipantId(BIG_PARTICIPANT),
                reason: ErrorCode::TIMEOUT,
            }),
        ),
        (
            "publish_audio_one_layer",
            M::Publish(Publish {
                request: RequestId(2),
                kind: TrackKind::Audio,
                codec: opus(),
                source: "microphone".into(),
                layers: vec![Layer {
                    media: MediaId(0),
                    max_bitrate: 64_000,
                    width: 0,
                    height: 0,
                }],
                muted: false,
            }),
        ),
        (
            "publish_video_three_layers",
            M::Publish(Publish {
                request: RequestId(3),
                kind: TrackKind::Video,
                codec: vp8(),
                source: "camera".into(),
                layers: simulcast_layers(),
                muted: true,
            }),
        ),
        (
            "published",
            M::Published(Published {
                request: RequestId(3),
                track: TrackId(BIG_TRACK),
            }),
        ),
        (
            "unpublish",
            M::Unpublish(Unpublish {
                request: RequestId(4),
                track: TrackId(BIG_TRACK),
            }),
        ),
        (
            "track_published_audio",
            M::TrackPublished(TrackInfo {
                track: TrackId(10),
                participant: ParticipantId(2),
                kind: TrackKind::Audio,
                codec: opus(),
                source: "microphone".into(),
                layers: vec![LayerInfo {
                    max_bitrate: 64_000,
                    width: 0,
                    height: 0,
                }],
                muted: false,
            }),
        ),
        (
            "track_published_video_muted",
            M::TrackPublished(TrackInfo {
                track: TrackId(BIG_TRACK),
                participant: ParticipantId(BIG_PARTICIPANT),
                kind: TrackKind::Video,
                codec: vp8(),
                source: "camera".into(),
                layers: simulcast_layers()
                    .into_iter()
                    .map(|l| LayerInfo {
                        max_bitrate: l.max_bitrate,
                        width: l.width,
                        height: l.height,
                    })
                    .collect(),
                muted: true,
            }),
        ),
        (
            "track_unpublished",
            M::TrackUnpublished(TrackUnpublished {
                track: TrackId(10),
                participant: ParticipantId(2),
            }),
        ),
        (
            "subscribe_best",
            M::Subscribe(Subscribe {
                request: RequestId(5),
                track: TrackId(10),
                max_layer: None,
                priority: None,
            }),
        ),
        (
            "subscribe_max_layer_0",
            M::Subscribe(Subscribe {
                request: RequestId(6),
                track: TrackId(BIG_TRACK),
                max_layer: Some(0),
                priority: None,
            }),
        ),
        (
            "subscribed",
            M::Subscribed(Subscribed {
                request: RequestId(6),
                track: TrackId(BIG_TRACK),
                media: MediaId(64),
                ssrc: 0x9abc_def0,
                layer: 0,
            }),
        ),
        (
            "subscribed_snapshot",
            M::Subscribed(Subscribed {
                request: RequestId::UNSOLICITED,
                track: TrackId(10),
                media: MediaId(1),
                ssrc: 250,
                layer: 2,
            }),
        ),
        (
            "unsubscribe",
            M::Unsubscribe(Unsubscribe {
                request: RequestId(7),
                track: TrackId(10),
            }),
        ),
        (
            "set_layer_preference",
            M::SetLayerPreference(SetLayerPreference {
                request: RequestId(8),
                track: TrackId(BIG_TRACK),
                max_layer: Some(1),
                priority: None,
            }),
        ),
        (
            "set_layer_preference_best",
            M::SetLayerPreference(SetLayerPreference {
                request: RequestId(251),
                track: TrackId(BIG_TRACK),
                max_layer: None,
                priority: None,
            }),
        ),
        (
            "set_mute",
            M::SetMute(SetMute {
                request: RequestId(70_000),
                track: TrackId(10),
                muted: true,
            }),
        ),
        (
            "track_muted",
            M::TrackMuted(TrackMuted {
                track: TrackId(10),
                muted: false,
            }),
        ),
        (
            "keyframe_request_layer",
            M::KeyframeRequest(KeyframeRequest {
                track: TrackId(BIG_TRACK),
                layer: Some(2),
            }),
        ),
        (
            "keyframe_request_all_layers",
            M::KeyframeRequest(KeyframeRequest {
                track: TrackId(10),
                layer: None,
            }),
        ),
        (
            "layer_switched",
            M::LayerSwitched(LayerSwitched {
                track: TrackId(BIG_TRACK),
                layer: 1,
            }),
        ),
        ("ping", M::Ping(Ping { nonce: 7 })),
        (
            "ping_large_nonce",
            M::Ping(Ping {
                nonce: 1_767_225_600_123_456,
            }),
        ),
        ("pong", M::Pong(Pong { nonce: 7 })),
        (
            "go_away_redirect",
            M::GoAway(GoAway {
                code: ErrorCode::GOING_AWAY,
                redirect: Some("https://node-2.example.com:4433/rtc".into()),
                cert_hashes: Vec::new(),
                token: None,
            }),
        ),
        (
            "go_away_cluster_redirect",
            M::GoAway(GoAway {
                code: ErrorCode::REDIRECT,
                redirect: Some("https://127.0.0.3:4433/rtc".into()),
                cert_hashes: vec![
                    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
                ],
                token: Some("eyJhbGciOiJIUzI1NiJ9.e30.c2ln".into()),
            }),
        ),
        (
            "go_away",
            M::GoAway(GoAway {
                code: ErrorCode::GOING_AWAY,
                redirect: None,
                cert_hashes: Vec::new(),
                token: None,
            }),
        ),
        (
            "error_for_request",
            M::Error(ErrorMessage {
                request: Some(RequestId(3)),
                code: ErrorCode::FORBIDDEN,
                reason: "token does not grant publish".into(),
            }),
        ),
        (
            "error_session",
            M::Error(ErrorMessage {
                request: None,
                code: ErrorCode::UNSUPPORTED_VERSION,
                reason: "version 9 is not supported; this server speaks 1".into(),
            }),
        ),
        (
            "error_unknown_code",
            M::Error(ErrorMessage {
                request: Some(RequestId(70_000)),
                code: ErrorCode(0x0001_0000),
                reason: String::new(),
            }),
        ),
        (
            "ack",
            M::Ack(Ack {
                request: RequestId(4),
            }),
        ),
        (
            "sdp_offer",
            M::Sdp(SessionDescription {
                kind: SdpType::Offer,
                sdp: "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
                      a=group:BUNDLE 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
                      c=IN IP4 0.0.0.0\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n"
                    .into(),
            }),
        ),
        (
            "sdp_answer",
            M::Sdp(SessionDescription {
                kind: SdpType::Answer,
                sdp: "v=0\r\n".into(),
            }),
        ),
        (
            "ice_candidate",
            M::IceCandidate(IceCandidate {
                candidate: "candidate:1 1 udp 2130706431 192.0.2.10 4478 typ host".into(),
                sdp_mid: Some("0".into()),
                sdp_mline_index: Some(0),
            }),
        ),
        (
            "ice_candidate_end",
            M::IceCandidate(IceCandidate {
                candidate: String::new(),
                sdp_mid: None,
                sdp_mline_index: None,
            }),
        ),
        (
            "new_resume_token",
            M::NewResumeToken(NewResumeToken {
                resume_token: ResumeToken("rt-2".into()),
            }),
        ),
        // `priority`, appended to `Subscribe` and `SetLayerPreference` (PROTOCOL.md §5). Without
        // it the bytes are those of `subscribe_best` and the others above, unchanged.
        (
            "subscribe_screen_priority",
            M::Subscribe(Subscribe {
                request: RequestId(11),
                track: TrackId(12),
                max_layer: None,
                priority: Some(SCREEN_PRIORITY),
            }),
        ),
        (
            "subscribe_max_layer_priority_0",
            M::Subscribe(Subscribe {
                request: RequestId(12),
                track: TrackId(BIG_TRACK),
                max_layer: Some(2),
                priority: Some(0),
            }),
        ),
        (
            "set_layer_preference_priority",
            M::SetLayerPreference(SetLayerPreference {
                request: RequestId(13),
                track: TrackId(12),
                max_layer: Some(0),
                priority: Some(255),
            }),
        ),
        (
            "track_paused_bandwidth",
            M::TrackPaused(TrackPaused {
                track: TrackId(BIG_TRACK),
                reason: PauseReason::BANDWIDTH,
            }),
        ),
        (
            "track_paused_unknown_reason",
            M::TrackPaused(TrackPaused {
                track: TrackId(10),
                reason: PauseReason(0xfe),
            }),
        ),
        (
            "track_resumed_load",
            M::TrackResumed(TrackResumed {
                track: TrackId(10),
                reason: PauseReason::LOAD,
            }),
        ),
    ]
}

fn datagram_control_values() -> Vec<(&'static str, DatagramControl)> {
    vec![
        (
            "ping",
            DatagramControl::Ping {
                seq: 1,
                timestamp_us: 1_767_225_600_000_000,
            },
        ),
        (
            "pong",
            DatagramControl::Pong {
                seq: 1,
                timestamp_us: 1_767_225_600_000_000,
            },
        ),
        (
            "receiver_report",
            DatagramControl::ReceiverReport {
                media: MediaId(64),
                highest_seq: 70_000,
                lost: 3,
                jitter: 250,
            },
        ),
        (
            "keyframe_request",
            DatagramControl::KeyframeRequest { media: MediaId(0) },
        ),
        (
            "keyframe_request_media_300",
            DatagramControl::KeyframeRequest {
                media: MediaId(300),
            },
        ),
    ]
}

/// A minimal RTP packet: V=2, no padding, no extension, no CSRC, marker set, PT 96, seq 1,
/// timestamp 3000, SSRC 0x12345678, 4 bytes of payload.
fn rtp_minimal() -> Vec<u8> {
    let mut p = vec![0x80, 0xe0, 0x00, 0x01, 0x00, 0x00, 0x0b, 0xb8];
    p.extend_from_slice(&[0x12, 0x34, 0x56, 0x78]);
    p.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    p
}

/// An RTP packet with one CSRC and a one-byte header extension (profile 0xBEDE, one word).
fn rtp_csrc_extension() -> Vec<u8> {
    let mut p = vec![0x91, 0x6f, 0xff, 0xff, 0x00, 0x01, 0x00, 0x00];
    p.extend_from_slice(&[0xca, 0xfe, 0xba, 0xbe]); // SSRC
    p.extend_from_slice(&[0x00, 0x00, 0x00, 0x2a]); // CSRC
    p.extend_from_slice(&[0xbe, 0xde, 0x00, 0x01]); // extension header: 1 word follows
    p.extend_from_slice(&[0x10, 0xff, 0x00, 0x00]); // id 1, len 1, value 0xff, padding
    p.extend_from_slice(&[0x01, 0x02, 0x03]); // payload
    p
}

fn media_values() -> Vec<(&'static str, MediaId, Vec<u8>)> {
    vec![
        ("media_0", MediaId(0), rtp_minimal()),
        ("media_63", MediaId(63), rtp_minimal()),
        ("media_64_two_byte_varint", MediaId(64), rtp_minimal()),
        (
            "media_16384_four_byte_varint",
            MediaId(16_384),
            rtp_minimal(),
        ),
        (
            "media_2pow30_eight_byte_varint",
            MediaId(1 << 30),
            rtp_minimal(),
        ),
        ("media_1_csrc_extension", MediaId(1), rtp_csrc_extension()),
    ]
}

/// Padding datagrams: name and whole length (kind byte included).
fn padding_values() -> Vec<(&'static str, usize)> {
    vec![("padding_kind_only", 1), ("padding_16", 16)]
}

fn varint_values() -> Vec<u64> {
    vec![
        0,
        37,
        63,
        64,
        15_293,
        16_383,
        16_384,
        494_878_333,
        (1 << 30) - 1,
        1 << 30,
        MAX_SAFE_INTEGER,
    ]
}

// ---------------------------------------------------------------------------------------------
// The file layout (what bless writes).
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct VectorFile {
    version: u32,
    about: &'static str,
    control: Vec<ControlVector>,
    datagram_control: Vec<DatagramControlVector>,
    media: Vec<MediaVector>,
    varint: Vec<VarintVector>,
    padding: Vec<PaddingVector>,
}

#[derive(Serialize)]
struct ControlVector {
    name: &'static str,
    kind: u32,
    frame: String,
    message: ControlMessage,
}

#[derive(Serialize)]
struct DatagramControlVector {
    name: &'static str,
    datagram: String,
    message: DatagramControl,
}

#[derive(Serialize)]
struct MediaVector {
    name: &'static str,
    media: u32,
    rtp: String,
    datagram: String,
}

#[derive(Serialize)]
struct VarintVector {
    value: u64,
    hex: String,
}

#[derive(Serialize)]
struct PaddingVector {
    name: &'static str,
    len: usize,
    datagram: String,
}

const ABOUT: &str = "Strait wire protocol golden vectors. Generated by \
                     protocol/tests/protocol/golden.rs (STRAIT_BLESS_VECTORS=1); the format is \
                     described in docs/PROTOCOL.md, section 'Golden vectors'. Hex is lowercase, \
                     without separators.";

fn encode_frame_hex(message: &ControlMessage) -> String {
    let mut wire = Vec::new();
    encode_frame(message, limits::DEFAULT_MAX_FRAME_SIZE, &mut wire).expect("encodes");
    hex::encode(wire)
}

fn encode_datagram_control_hex(control: &DatagramControl) -> String {
    let mut wire = Vec::new();
    datagram::encode_control_datagram(control, &mut wire).expect("encodes");
    hex::encode(wire)
}

fn encode_media_hex(media: MediaId, rtp: &[u8]) -> String {
    let mut wire = vec![0u8; rtp.len() + 9];
    let n = datagram::write_media_datagram(media, rtp, &mut wire).expect("fits");
    hex::encode(&wire[..n])
}

fn encode_padding_hex(len: usize) -> String {
    let mut wire = Vec::new();
    datagram::write_padding(&mut wire, len);
    hex::encode(wire)
}

fn encode_varint_hex(value: u64) -> String {
    let mut out = [0u8; 8];
    let n = varint::encode(value, &mut out).expect("encodes");
    hex::encode(&out[..n])
}

fn generate() -> String {
    let file = VectorFile {
        version: FILE_VERSION,
        about: ABOUT,
        control: control_values()
            .into_iter()
            .map(|(name, message)| ControlVector {
                name,
                kind: message.kind(),
                frame: encode_frame_hex(&message),
                message,
            })
            .collect(),
        datagram_control: datagram_control_values()
            .into_iter()
            .map(|(name, message)| DatagramControlVector {
                name,
                datagram: encode_datagram_control_hex(&message),
                message,
            })
            .collect(),
        media: media_values()
            .into_iter()
            .map(|(name, media, rtp)| MediaVector {
                name,
                media: media.0,
                datagram: encode_media_hex(media, &rtp),
                rtp: hex::encode(rtp),
            })
            .collect(),
        varint: varint_values()
            .into_iter()
            .map(|value| VarintVector {
                value,
                hex: encode_varint_hex(value),
            })
            .collect(),
        padding: padding_values()
            .into_iter()
            .map(|(name, len)| PaddingVector {
                name,
                len,
                datagram: encode_padding_hex(len),
            })
            .collect(),
    };
    let mut text = serde_json::to_string_pretty(&file).expect("serializes");
    text.push('\n');
    text
}

// ---------------------------------------------------------------------------------------------
// Checks.
// ---------------------------------------------------------------------------------------------

fn str_field<'a>(entry: &'a Value, key: &str) -> &'a str {
    entry[key]
        .as_str()
        .unwrap_or_else(|| panic!("`{key}` missing or not a string in {entry}"))
}

fn u64_field(entry: &Value, key: &str) -> u64 {
    entry[key]
        .as_u64()
        .unwrap_or_else(|| panic!("`{key}` missing or not an unsigned integer in {entry}"))
}

fn unhex(entry: &Value, key: &str) -> Vec<u8> {
    hex::decode(str_field(entry, key)).unwrap_or_else(|e| panic!("`{key}` is not hex: {e}"))
}

fn array<'a>(file: &'a Value, key: &str) -> &'a [Value] {
    file[key]
        .as_array()
        .unwrap_or_else(|| panic!("`{key}` missing or not an array"))
}

/// Every number in the file must be exact as a JavaScript number.
fn assert_js_safe(value: &Value, path: &str) {
    match value {
        Value::Number(n) => {
            let n = n
                .as_u64()
                .unwrap_or_else(|| panic!("{path}: {n} is not a u64"));
            assert!(n <= MAX_SAFE_INTEGER, "{path}: {n} is above 2^53 - 1");
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                assert_js_safe(v, &format!("{path}[{i}]"));
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                assert_js_safe(v, &format!("{path}.{k}"));
            }
        }
        _ => {}
    }
}

fn check_control(entry: &Value) -> u32 {
    let name = str_field(entry, "name");
    let message: ControlMessage = serde_json::from_value(entry["message"].clone())
        .unwrap_or_else(|e| panic!("{name}: message does not deserialize: {e}"));
    let frame = unhex(entry, "frame");
    let kind = u64_field(entry, "kind");
    assert_eq!(u64::from(message.kind()), kind, "{name}: kind");
    // The JSON is exactly serde_json's form of the value (no ignored or misspelled fields).
    assert_eq!(
        serde_json::to_value(&message).expect("serializes"),
        entry["message"],
        "{name}: message JSON is not canonical"
    );

    // Value -> bytes.
    assert_eq!(
        encode_frame_hex(&message),
        hex::encode(&frame),
        "{name}: encoding"
    );

    // Bytes -> value, the whole frame at once.
    let mut reader = FrameReader::new(limits::DEFAULT_MAX_FRAME_SIZE);
    let mut input = Bytes::from(frame.clone());
    let decoded = reader.next_message(&mut input);
    assert_eq!(
        decoded,
        Ok(Some(Decoded::Message(message.clone()))),
        "{name}: decoding"
    );
    assert!(input.is_empty(), "{name}: bytes left after the frame");

    // Bytes -> value, one byte at a time.
    let mut reader = FrameReader::new(limits::DEFAULT_MAX_FRAME_SIZE);
    let mut got = Vec::new();
    for &b in &frame {
        let mut chunk = Bytes::copy_from_slice(&[b]);
        if let Some(d) = reader.next_message(&mut chunk).expect("decodes") {
            got.push(d);
        }
        assert!(chunk.is_empty());
    }
    assert_eq!(
        got,
        vec![Decoded::Message(message.clone())],
        "{name}: byte by byte"
    );

    // The body alone decodes too, and its first byte is the kind (all kinds are below 251).
    let (len, prefix) = varint::decode(&frame).expect("length prefix");
    assert_eq!(len as usize, frame.len() - prefix, "{name}: frame length");
    assert_eq!(u64::from(frame[prefix]), kind, "{name}: first body byte");
    assert_eq!(
        decode_message(&frame[prefix..]),
        Ok(Decoded::Message(message.clone())),
        "{name}: body decoding"
    );
    message.kind()
}

fn check_datagram_control(entry: &Value) -> u8 {
    let name = str_field(entry, "name");
    let message: DatagramControl = serde_json::from_value(entry["message"].clone())
        .unwrap_or_else(|e| panic!("{name}: message does not deserialize: {e}"));
    assert_eq!(
        serde_json::to_value(message).expect("serializes"),
        entry["message"],
        "{name}: message JSON is not canonical"
    );
    let wire = unhex(entry, "datagram");
    assert_eq!(
        wire.first(),
        Some(&datagram::KIND_CONTROL),
        "{name}: kind byte"
    );
    assert_eq!(
        encode_datagram_control_hex(&message),
        hex::encode(&wire),
        "{name}: encoding"
    );
    assert_eq!(
        datagram::parse_datagram(&Bytes::from(wire.clone())),
        Ok(Datagram::Control(message)),
        "{name}: decoding"
    );
    // The variant index is the byte after the kind byte (every index is below 251).
    wire[1]
}

fn check_media(entry: &Value) {
    let name = str_field(entry, "name");
    let media = MediaId(u32::try_from(u64_field(entry, "media")).expect("media id fits u32"));
    let rtp = unhex(entry, "rtp");
    let wire = unhex(entry, "datagram");
    assert_eq!(
        encode_media_hex(media, &rtp),
        hex::encode(&wire),
        "{name}: encoding"
    );
    assert_eq!(
        datagram::parse_datagram(&Bytes::from(wire.clone())),
        Ok(Datagram::Media {
            media,
            rtp: Bytes::from(rtp.clone())
        }),
        "{name}: decoding"
    );
    assert_eq!(
        wire.len() - rtp.len(),
        datagram::media_header_len(media),
        "{name}: header length"
    );
}

fn check_padding(entry: &Value) {
    let name = str_field(entry, "name");
    let len = usize::try_from(u64_field(entry, "len")).expect("a length");
    let wire = unhex(entry, "datagram");
    assert_eq!(wire.len(), len, "{name}: length");
    assert_eq!(
        wire.first(),
        Some(&datagram::KIND_PADDING),
        "{name}: kind byte"
    );
    assert_eq!(
        encode_padding_hex(len),
        hex::encode(&wire),
        "{name}: encoding"
    );
    assert_eq!(
        datagram::parse_datagram(&Bytes::from(wire)),
        Ok(Datagram::Padding { len }),
        "{name}: decoding"
    );
}

fn check_varint(entry: &Value) {
    let value = u64_field(entry, "value");
    let wire = unhex(entry, "hex");
    assert_eq!(
        encode_varint_hex(value),
        hex::encode(&wire),
        "varint {value}: encoding"
    );
    assert_eq!(
        varint::decode(&wire),
        Ok((value, wire.len())),
        "varint {value}: decoding"
    );
}

#[test]
fn golden_vectors() {
    let path = vectors_path();
    if std::env::var_os(BLESS_VAR).is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("creates dir");
        std::fs::write(&path, generate()).expect("writes vectors");
        eprintln!("wrote {}", path.display());
    }
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (generate it with {BLESS_VAR}=1)", path.display()));
    let file: Value = serde_json::from_str(&text).expect("vectors.json is JSON");
    assert_eq!(file["version"], FILE_VERSION, "file layout version");
    assert_js_safe(&file, "$");

    let mut control_kinds = BTreeSet::new();
    let mut names = BTreeSet::new();
    for entry in array(&file, "control") {
        assert!(names.insert(str_field(entry, "name")), "duplicate name");
        control_kinds.insert(check_control(entry));
    }
    let all: BTreeSet<u32> = (0..ControlMessage::KINDS).collect();
    assert_eq!(
        control_kinds, all,
        "every control message kind has a vector"
    );

    let mut datagram_kinds = BTreeSet::new();
    names.clear();
    for entry in array(&file, "datagram_control") {
        assert!(names.insert(str_field(entry, "name")), "duplicate name");
        datagram_kinds.insert(u32::from(check_datagram_control(entry)));
    }
    let all: BTreeSet<u32> = (0..DatagramControl::KINDS).collect();
    assert_eq!(
        datagram_kinds, all,
        "every control datagram kind has a vector"
    );

    let media = array(&file, "media");
    assert!(!media.is_empty());
    media.iter().for_each(check_media);
    let varints = array(&file, "varint");
    assert!(!varints.is_empty());
    varints.iter().for_each(check_varint);
    let padding = array(&file, "padding");
    assert!(!padding.is_empty());
    padding.iter().for_each(check_padding);

    // Last: the file is exactly what the values above generate (a vector edited by hand, or a
    // value added here without regenerating, is caught). Checked after the semantic checks so
    // that a wire-format change is reported as such first.
    assert!(
        text == generate(),
        "{} is out of date with the values in tests/protocol/golden.rs; if the change is intended, \
         regenerate it with {BLESS_VAR}=1",
        path.display()
    );
}

/// A `Subscribe` or `SetLayerPreference` without `priority` is byte for byte what version 1 sent
/// before the field was appended (these frames are copied from the vectors file of that time),
/// and a body that ends before the field decodes with `priority: None`.
#[test]
fn a_message_without_its_appended_priority_is_the_version_1_encoding() {
    let before_priority = [
        ("subscribe_best", "040c050a00"),
        ("subscribe_max_layer_0", "0d0c06fd01000000ff0000000100"),
        ("set_layer_preference", "0d0f08fd01000000ff0000000101"),
        (
            "set_layer_preference_best",
            "0e0ffbfb00fd01000000ff00000000",
        ),
    ];
    let values = control_values();
    for (name, frame) in before_priority {
        let (_, message) = values
            .iter()
            .find(|(n, _)| *n == name)
            .expect("a vector of that name");
        assert_eq!(encode_frame_hex(message), frame, "{name}: encoding");
        let priority = match message {
            ControlMessage::Subscribe(s) => s.priority,
            ControlMessage::SetLayerPreference(l) => l.priority,
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(priority, None, "{name}");
        let wire = hex::decode(frame).expect("hex");
        assert_eq!(
            decode_single_frame(&wire, limits::DEFAULT_MAX_FRAME_SIZE),
            Ok(Decoded::Message(message.clone())),
            "{name}: decoding"
        );
    }
}
