//! Hostile input: every malformed frame, body and datagram gives a typed error (or is skipped where
//! the protocol says so), never a panic, and decoding never allocates more than the input could
//! justify. A counting allocator measures the largest single allocation made while decoding.
#![allow(
    unsafe_code,
    reason = "a counting global allocator needs `unsafe impl GlobalAlloc`"
)]

use bytes::Bytes;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use strait_protocol::datagram::{self, parse_datagram, parse_media};
use strait_protocol::*;

struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the thread-local is a plain
// `Cell<usize>` with a const initializer and no destructor, so touching it never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(layout.size())));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(new_size)));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns its result with the largest single allocation it made on this thread.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    let out = f();
    (out, LARGEST.with(Cell::get))
}

/// Decodes a body and asserts no allocation exceeded `bound` bytes.
fn decode_bounded(body: &[u8], bound: usize) -> Result<Decoded, DecodeError> {
    let (result, largest) = largest_allocation(|| decode_message(body));
    assert!(
        largest <= bound,
        "decoding {} bytes allocated {largest} bytes at once (bound {bound}): {result:?}",
        body.len()
    );
    result
}

fn body_of(msg: &ControlMessage) -> Vec<u8> {
    let mut out = Vec::new();
    encode_message(msg, &mut out).unwrap();
    out
}

fn hello(token: &str) -> ControlMessage {
    ControlMessage::ClientHello(ClientHello {
        version: PROTOCOL_VERSION,
        token: token.into(),
        resume: None,
        agent: "t".into(),
    })
}

/// bincode varint of `v` (the encoding used inside bodies).
fn bincode_varint(v: u64) -> Vec<u8> {
    match v {
        0..=250 => vec![v as u8],
        251..=0xffff => [&[251u8][..], &(v as u16).to_le_bytes()].concat(),
        0x1_0000..=0xffff_ffff => [&[252u8][..], &(v as u32).to_le_bytes()].concat(),
        _ => [&[253u8][..], &v.to_le_bytes()].concat(),
    }
}

fn quic_varint(v: u64) -> Vec<u8> {
    let mut out = [0u8; 8];
    let n = varint::encode(v, &mut out).unwrap();
    out[..n].to_vec()
}

// --- framing ---

#[test]
fn oversized_length_prefix_is_refused_before_buffering() {
    for announced in [65_537u64, 1 << 20, varint::MAX] {
        let mut reader = FrameReader::new(64 * 1024);
        let mut input = Bytes::from([quic_varint(announced), vec![0u8; 16]].concat());
        let (result, largest) = largest_allocation(|| reader.next_frame(&mut input));
        assert_eq!(
            result,
            Err(DecodeError::FrameTooLarge {
                len: announced,
                max: 64 * 1024
            })
        );
        assert!(reader.buffered() <= 8);
        assert!(
            largest <= 64,
            "allocated {largest} bytes for a refused frame"
        );
    }
}

#[test]
fn oversized_prefix_fed_byte_by_byte_is_refused_once_complete() {
    let mut reader = FrameReader::new(1000);
    let prefix = quic_varint(1001);
    let mut first = Bytes::copy_from_slice(&prefix[..1]);
    assert_eq!(reader.next_frame(&mut first), Ok(None));
    let mut second = Bytes::copy_from_slice(&prefix[1..]);
    assert_eq!(
        reader.next_frame(&mut second),
        Err(DecodeError::FrameTooLarge {
            len: 1001,
            max: 1000
        })
    );
}

#[test]
fn frame_at_the_limit_is_accepted_and_one_more_byte_is_not() {
    let max = 300;
    for (len, ok) in [(max, true), (max + 1, false)] {
        let mut reader = FrameReader::new(max);
        let mut input = Bytes::from([quic_varint(len as u64), vec![7u8; len]].concat());
        let result = reader.next_frame(&mut input);
        assert_eq!(result.is_ok(), ok, "len {len}: {result:?}");
    }
}

#[test]
fn configured_limit_is_clamped_to_the_hard_maximum() {
    assert_eq!(
        FrameReader::new(usize::MAX).max_frame_size(),
        limits::HARD_MAX_FRAME_SIZE
    );
}

#[test]
fn a_partial_frame_is_kept_and_never_exceeds_the_limit() {
    let max = 4096;
    let mut reader = FrameReader::new(max);
    let mut wire = Vec::new();
    encode_frame(&hello(&"x".repeat(4000)), max, &mut wire).unwrap();
    let total = wire.len();
    let wire = Bytes::from(wire);
    for i in 0..total - 1 {
        let mut chunk = wire.slice(i..i + 1);
        let (result, largest) = largest_allocation(|| reader.next_frame(&mut chunk));
        assert_eq!(result, Ok(None));
        assert!(reader.buffered() <= max + 8);
        assert!(
            largest <= max + 8,
            "allocated {largest} bytes for a {max}-byte frame"
        );
    }
    let mut last = wire.slice(total - 1..);
    let body = reader.next_frame(&mut last).unwrap().unwrap();
    assert_eq!(
        decode_message(&body),
        Ok(Decoded::Message(hello(&"x".repeat(4000))))
    );
    assert_eq!(reader.buffered(), 0);
}

#[test]
fn a_truncated_body_is_an_error_not_a_panic() {
    let body = body_of(&hello("a-token"));
    for cut in 0..body.len() {
        let result = decode_bounded(&body[..cut], 64);
        assert_eq!(result, Err(DecodeError::Truncated), "cut at {cut}");
    }
}

#[test]
fn an_encoder_refuses_what_the_peer_would_refuse() {
    let mut out = Vec::new();
    let err = encode_frame(&hello(&"x".repeat(2000)), 1000, &mut out).unwrap_err();
    assert!(matches!(err, EncodeError::TooLarge { max: 1000, .. }));
    assert!(
        out.is_empty(),
        "nothing is written when the frame is refused"
    );
}

// --- message kinds and forward compatibility ---

#[test]
fn unknown_message_kinds_are_skipped_and_the_stream_goes_on() {
    let mut wire = Vec::new();
    for kind in [
        ControlMessage::KINDS as u64,
        250,
        251,
        70_000,
        u64::from(u32::MAX) + 5,
    ] {
        let body = [bincode_varint(kind), vec![1, 2, 3]].concat();
        wire.extend(quic_varint(body.len() as u64));
        wire.extend(body);
    }
    encode_frame(&ControlMessage::Ping(Ping { nonce: 9 }), 1 << 16, &mut wire).unwrap();
    let mut reader = FrameReader::default();
    let mut input = Bytes::from(wire);
    let mut seen = Vec::new();
    while let Some(d) = reader.next_message(&mut input).unwrap() {
        seen.push(d);
    }
    assert_eq!(
        seen,
        vec![
            Decoded::UnknownKind(ControlMessage::KINDS),
            Decoded::UnknownKind(250),
            Decoded::UnknownKind(251),
            Decoded::UnknownKind(70_000),
            Decoded::UnknownKind(u32::MAX),
            Decoded::Message(ControlMessage::Ping(Ping { nonce: 9 })),
        ]
    );
}

#[test]
fn trailing_bytes_after_known_fields_are_ignored() {
    let msg = ControlMessage::Pong(Pong { nonce: 300 });
    let body = [body_of(&msg), vec![0xff; 5]].concat();
    assert_eq!(decode_message(&body), Ok(Decoded::Message(msg)));
}

fn subscribe(max_layer: Option<u8>, priority: Option<u8>) -> ControlMessage {
    ControlMessage::Subscribe(Subscribe {
        request: RequestId(5),
        track: TrackId(10),
        max_layer,
        priority,
    })
}

fn set_layer_preference(max_layer: Option<u8>, priority: Option<u8>) -> ControlMessage {
    ControlMessage::SetLayerPreference(SetLayerPreference {
        request: RequestId(5),
        track: TrackId(10),
        max_layer,
        priority,
    })
}

#[test]
fn an_appended_priority_is_absent_when_the_body_ends_before_it() {
    for (kind, message) in [
        (
            12u8,
            subscribe as fn(Option<u8>, Option<u8>) -> ControlMessage,
        ),
        (15, set_layer_preference),
    ] {
        let decode = |tail: &[u8]| decode_message(&[&[kind, 5, 10][..], tail].concat());
        // Written by a client that predates the field: the body ends after `max_layer`.
        assert_eq!(decode(&[0]), Ok(Decoded::Message(message(None, None))));
        assert_eq!(
            decode(&[1, 2]),
            Ok(Decoded::Message(message(Some(2), None)))
        );
        // Present: an ordinary option, and what follows it is ignored as ever.
        assert_eq!(decode(&[0, 0]), Ok(Decoded::Message(message(None, None))));
        assert_eq!(
            decode(&[0, 1, 200]),
            Ok(Decoded::Message(message(None, Some(200))))
        );
        assert_eq!(
            decode(&[1, 0, 1, 0, 0xff, 0xff]),
            Ok(Decoded::Message(message(Some(0), Some(0))))
        );
        // Only the appended field may be missing, and a present one must be whole and valid.
        assert_eq!(decode(&[]), Err(DecodeError::Truncated));
        assert_eq!(decode(&[1]), Err(DecodeError::Truncated));
        assert_eq!(decode(&[0, 1]), Err(DecodeError::Truncated));
        assert_eq!(
            decode(&[0, 2, 200]),
            Err(DecodeError::UnknownVariant {
                ty: "Option<T>",
                found: 2
            })
        );
    }
}

#[test]
fn a_truncated_subscribe_is_an_error_except_right_before_its_priority() {
    let body = body_of(&subscribe(Some(1), Some(200)));
    let old = body_of(&subscribe(Some(1), None));
    assert_eq!(body.len(), old.len() + 2);
    for cut in 0..body.len() {
        let result = decode_bounded(&body[..cut], 64);
        if cut == old.len() {
            assert_eq!(result, Ok(Decoded::Message(subscribe(Some(1), None))));
        } else {
            assert_eq!(result, Err(DecodeError::Truncated), "cut at {cut}");
        }
    }
}

#[test]
fn invalid_varint_markers_are_malformed() {
    assert!(matches!(
        decode_message(&[254, 0, 0]),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        decode_message(&[255]),
        Err(DecodeError::Malformed(_))
    ));
    assert_eq!(decode_message(&[]), Err(DecodeError::Truncated));
    assert_eq!(decode_message(&[251, 1]), Err(DecodeError::Truncated));
}

// --- strings ---

#[test]
fn invalid_utf8_is_a_typed_error() {
    let mut body = body_of(&hello("abcd"));
    let at = body.windows(4).position(|w| w == b"abcd").unwrap();
    body[at + 1] = 0xff;
    assert_eq!(decode_bounded(&body, 64), Err(DecodeError::InvalidUtf8));
}

#[test]
fn a_string_longer_than_its_field_limit_is_refused_before_it_is_copied() {
    let token = "t".repeat(limits::MAX_TOKEN_LEN + 1);
    let body = body_of(&hello(&token));
    assert_eq!(
        decode_bounded(&body, 64),
        Err(DecodeError::FieldTooLong {
            field: "token",
            len: limits::MAX_TOKEN_LEN + 1,
            max: limits::MAX_TOKEN_LEN
        })
    );
}

#[test]
fn a_huge_string_length_with_few_bytes_allocates_nothing() {
    // ClientHello: kind 0, version 1, then the token's length claims far more than is present.
    for claimed in [1_000u64, 1 << 19, 1 << 21, 1 << 40, u64::MAX] {
        let body = [vec![0u8, 1], bincode_varint(claimed), b"short".to_vec()].concat();
        let result = decode_bounded(&body, 64);
        assert!(
            matches!(
                result,
                Err(DecodeError::Truncated | DecodeError::LengthOutOfBounds)
            ),
            "claimed {claimed}: {result:?}"
        );
    }
}

#[test]
fn room_ids_follow_their_rules() {
    let join = |room: &str| {
        let mut body = vec![2u8, 5];
        body.extend(bincode_varint(room.len() as u64));
        body.extend(room.as_bytes());
        body.extend([0u8]); // empty name
        body
    };
    assert!(matches!(
        decode_message(&join("lobby")),
        Ok(Decoded::Message(_))
    ));
    assert!(matches!(
        decode_message(&join("")),
        Err(DecodeError::InvalidField { field: "room", .. })
    ));
    assert!(matches!(
        decode_message(&join("a\nb")),
        Err(DecodeError::InvalidField { field: "room", .. })
    ));
    assert_eq!(
        decode_message(&join(&"r".repeat(129))),
        Err(DecodeError::FieldTooLong {
            field: "room",
            len: 129,
            max: 128
        })
    );
}

// --- lists ---

fn server_hello_with_ice_count(count: u64) -> Vec<u8> {
    // kind 1, version 1, participant 7, resume token "r", resumed false, then the list count.
    let mut body = vec![1u8, 1, 7, 1, b'r', 0];
    body.extend(bincode_varint(count));
    body
}

#[test]
fn list_counts_beyond_limits_are_refused_before_reserving() {
    for count in [9u64, 1000, 1 << 32, u64::MAX] {
        let body = server_hello_with_ice_count(count);
        let result = decode_bounded(&body, 256);
        assert!(
            matches!(
                result,
                Err(DecodeError::TooManyItems {
                    field: "ice_servers",
                    max: 8,
                    ..
                }) | Err(DecodeError::LengthOutOfBounds)
            ),
            "count {count}: {result:?}"
        );
    }
}

#[test]
fn nested_list_counts_are_bounded_too() {
    // One ICE server whose URL list announces 2^32 entries.
    let mut body = server_hello_with_ice_count(1);
    body.extend(bincode_varint(1 << 32));
    let result = decode_bounded(&body, 256);
    assert_eq!(
        result,
        Err(DecodeError::TooManyItems {
            field: "ice.urls",
            count: 1 << 32,
            max: 8
        })
    );
}

fn publish(layers: Vec<Layer>) -> ControlMessage {
    ControlMessage::Publish(Publish {
        request: RequestId(1),
        kind: TrackKind::Video,
        codec: Codec {
            name: "VP8".into(),
            payload_type: 96,
            clock_rate: 90_000,
            channels: 0,
            fmtp: String::new(),
        },
        source: "camera".into(),
        layers,
        muted: false,
    })
}

fn layer(media: u32) -> Layer {
    Layer {
        media: MediaId(media),
        max_bitrate: 0,
        width: 0,
        height: 0,
    }
}

#[test]
fn publish_needs_one_to_three_layers_with_distinct_media_ids() {
    let decode = |layers| decode_message(&body_of(&publish(layers)));
    assert!(matches!(decode(vec![layer(1)]), Ok(Decoded::Message(_))));
    assert!(matches!(
        decode(vec![]),
        Err(DecodeError::InvalidField {
            field: "layers",
            ..
        })
    ));
    assert!(matches!(
        decode(vec![layer(1), layer(1)]),
        Err(DecodeError::InvalidField {
            field: "layers",
            ..
        })
    ));
    assert_eq!(
        decode(vec![layer(1), layer(2), layer(3), layer(4)]),
        Err(DecodeError::TooManyItems {
            field: "layers",
            count: 4,
            max: 3
        })
    );
}

// --- other malformed values ---

#[test]
fn bad_bool_option_and_enum_bytes_are_errors() {
    // SetMute { request 1, track 2, muted: 2 }
    assert!(matches!(
        decode_message(&[16, 1, 2, 2]),
        Err(DecodeError::Malformed(_))
    ));
    // Subscribe { request 1, track 2, max_layer: tag 7 }
    assert!(matches!(
        decode_message(&[12, 1, 2, 7]),
        Err(DecodeError::UnknownVariant { .. })
    ));
    // TrackPaused { track 1 } without its reason.
    assert_eq!(decode_message(&[28, 1]), Err(DecodeError::Truncated));
    // Publish with track kind 9.
    assert_eq!(
        decode_message(&[7, 1, 9]),
        Err(DecodeError::UnknownVariant {
            ty: "TrackKind",
            found: 9
        })
    );
    // An SDP of kind 2.
    assert_eq!(
        decode_message(&[25, 2, 0]),
        Err(DecodeError::UnknownVariant {
            ty: "SdpType",
            found: 2
        })
    );
    // An integer wider than its field: version (u16) given as a u32 marker.
    assert!(matches!(
        decode_message(&[0, 252, 0, 0, 1, 0]),
        Err(DecodeError::Malformed(_))
    ));
}

// --- datagrams ---

fn rtp(len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len.max(12)];
    p[0] = 0x80;
    p
}

#[test]
fn malformed_datagrams_are_typed_errors() {
    let parse = |b: Vec<u8>| parse_datagram(&Bytes::from(b));
    assert_eq!(parse(vec![]), Err(DatagramError::Empty));
    assert_eq!(
        parse(vec![0x7f, 1, 2]),
        Err(DatagramError::UnknownKind(0x7f))
    );
    // Media id varint cut short (a 4-byte varint with one byte present).
    assert_eq!(parse(vec![0x00, 0x80]), Err(DatagramError::InvalidMediaId));
    // Media id beyond 32 bits.
    let big = [vec![0x00], quic_varint(1 << 40), rtp(12)].concat();
    assert_eq!(parse(big), Err(DatagramError::InvalidMediaId));
    // RTP problems.
    assert!(matches!(
        parse([vec![0, 1], vec![0x80; 11]].concat()),
        Err(DatagramError::InvalidRtp(_))
    ));
    let mut v1 = rtp(20);
    v1[0] = 0x40;
    assert!(matches!(
        parse([vec![0, 1], v1].concat()),
        Err(DatagramError::InvalidRtp(_))
    ));
    let mut csrcs = rtp(20);
    csrcs[0] = 0x80 | 3; // 3 CSRCs need 24 bytes
    assert!(matches!(
        parse([vec![0, 1], csrcs].concat()),
        Err(DatagramError::InvalidRtp(_))
    ));
    let mut ext = rtp(16);
    ext[0] = 0x90;
    ext[14] = 0;
    ext[15] = 2; // two extension words do not fit
    assert!(matches!(
        parse([vec![0, 1], ext].concat()),
        Err(DatagramError::InvalidRtp(_))
    ));
    // Control datagram that does not decode.
    assert!(matches!(
        parse(vec![0x01, 0]),
        Err(DatagramError::InvalidControl(_))
    ));
    assert!(matches!(
        parse(vec![0x01]),
        Err(DatagramError::InvalidControl(DecodeError::Truncated))
    ));
    // parse_media refuses other kinds.
    assert_eq!(parse_media(&[0x01, 0]), Err(DatagramError::NotMedia(0x01)));
}

#[test]
fn padding_datagrams_are_reported_as_padding_not_as_unknown_kinds() {
    let parse = |b: &[u8]| parse_datagram(&Bytes::copy_from_slice(b));
    assert_eq!(parse(&[0x02]), Ok(Datagram::Padding { len: 1 }));
    assert_eq!(parse(&[0x02, 0xff, 0, 1]), Ok(Datagram::Padding { len: 4 }));
    assert_eq!(parse(&[0x03, 0, 0]), Err(DatagramError::UnknownKind(0x03)));
    assert_eq!(parse_media(&[0x02, 0]), Err(DatagramError::NotMedia(0x02)));
    let mut out = Vec::new();
    datagram::write_padding(&mut out, 0);
    assert_eq!(out, [0x02], "a padding datagram has at least its kind byte");
}

#[test]
fn unknown_control_datagram_kinds_are_skipped() {
    let d = Bytes::from_static(&[0x01, 4, 1, 2]);
    assert_eq!(parse_datagram(&d), Ok(Datagram::UnknownControl(4)));
    let d = Bytes::from_static(&[0x01, 251, 0x2c, 0x01, 9]);
    assert_eq!(parse_datagram(&d), Ok(Datagram::UnknownControl(300)));
}

#[test]
fn building_into_a_small_buffer_fails_without_writing_past_it() {
    let packet = rtp(100);
    let mut buf = [0u8; 50];
    assert_eq!(
        datagram::write_media_datagram(MediaId(1), &packet, &mut buf),
        Err(DatagramError::BufferTooSmall {
            needed: 102,
            have: 50
        })
    );
    assert_eq!(datagram::max_rtp_len(1200, MediaId(1)), 1198);
    assert_eq!(datagram::max_rtp_len(1200, MediaId(64)), 1197);
}
