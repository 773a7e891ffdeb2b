//! Keyframe detection per codec, and RTP header parsing, on hand-built bytes.

use strait_media::sfu::keyframe::{
    PayloadFormat, av1_keyframe_start, h264_keyframe_start, vp8_keyframe_start, vp9_keyframe_start,
};
use strait_media::sfu::rtp::RtpHeader;

use crate::sfu::fixture::{Harness, Stream, p, video_track};

#[test]
fn vp8() {
    // Descriptor S=1 PID=0, then the payload header's P bit.
    assert!(vp8_keyframe_start(&[0x10, 0x00, 0x9d, 0x01, 0x2a]));
    assert!(!vp8_keyframe_start(&[0x10, 0x01]), "P=1: interframe");
    assert!(
        !vp8_keyframe_start(&[0x00, 0x00]),
        "S=0: not the start of a partition"
    );
    assert!(
        !vp8_keyframe_start(&[0x11, 0x00]),
        "PID=1: not the first partition"
    );
    // X with I and a 7-bit PictureID, then a 15-bit one.
    assert!(vp8_keyframe_start(&[0x90, 0x80, 0x05, 0x00]));
    assert!(vp8_keyframe_start(&[0x90, 0x80, 0x81, 0x23, 0x00]));
    assert!(!vp8_keyframe_start(&[0x90, 0x80, 0x81, 0x23, 0x01]));
    // X with I (15-bit), L, T and K: picture id, TL0PICIDX, TID/Y/KEYIDX, then the header.
    assert!(vp8_keyframe_start(&[
        0x90, 0xf0, 0x85, 0x12, 0x07, 0x40, 0x00
    ]));
    assert!(!vp8_keyframe_start(&[
        0x90, 0xf0, 0x85, 0x12, 0x07, 0x40, 0x01
    ]));
    // Only L: one byte; only K: one byte.
    assert!(vp8_keyframe_start(&[0x90, 0x40, 0x07, 0x00]));
    assert!(vp8_keyframe_start(&[0x90, 0x10, 0x03, 0x00]));
    // Truncated anywhere: not a keyframe.
    for len in 0..7 {
        assert!(!vp8_keyframe_start(
            &[0x90, 0xf0, 0x85, 0x12, 0x07, 0x40, 0x00][..len]
        ));
    }
}

#[test]
fn vp9() {
    assert!(vp9_keyframe_start(&[0x08]), "B=1, P=0, no layer indices");
    assert!(
        vp9_keyframe_start(&[0x0c]),
        "B and E: a one-packet keyframe"
    );
    assert!(!vp9_keyframe_start(&[0x48]), "P=1: inter-predicted");
    assert!(
        !vp9_keyframe_start(&[0x00]),
        "B=0: not the start of a frame"
    );
    assert!(!vp9_keyframe_start(&[0x04]), "only E");
    // I (15-bit picture id) and L: the spatial id must be 0.
    assert!(vp9_keyframe_start(&[0xa8, 0x85, 0x12, 0x00, 0x00]));
    assert!(
        !vp9_keyframe_start(&[0xa8, 0x85, 0x12, 0x02, 0x00]),
        "spatial layer 1"
    );
    assert!(
        vp9_keyframe_start(&[0xa8, 0x05, 0xe0, 0x00]),
        "7-bit id, temporal id 7, sid 0"
    );
    assert!(vp9_keyframe_start(&[0x28, 0x00, 0x00]), "L without I");
    assert!(!vp9_keyframe_start(&[0xa8, 0x85]), "truncated");
    assert!(!vp9_keyframe_start(&[]));
}

#[test]
fn h264() {
    assert!(h264_keyframe_start(&[0x65, 0x88, 0x84]), "IDR slice");
    assert!(h264_keyframe_start(&[0x67, 0x42, 0xc0, 0x1f]), "SPS");
    assert!(!h264_keyframe_start(&[0x41, 0x9a]), "non-IDR slice");
    assert!(!h264_keyframe_start(&[0x68, 0xce]), "PPS alone");
    // STAP-A with SPS and PPS.
    assert!(h264_keyframe_start(&[
        0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce
    ]));
    // STAP-A with PPS then IDR.
    assert!(h264_keyframe_start(&[
        0x78, 0x00, 0x02, 0x68, 0xce, 0x00, 0x02, 0x65, 0x88
    ]));
    // STAP-A with SEI and a non-IDR slice.
    assert!(!h264_keyframe_start(&[
        0x78, 0x00, 0x02, 0x06, 0x05, 0x00, 0x02, 0x41, 0x9a
    ]));
    // A STAP-A whose size runs past the end, or is zero.
    assert!(!h264_keyframe_start(&[
        0x78, 0x00, 0x09, 0x41, 0x9a, 0x00, 0x02, 0x65
    ]));
    assert!(!h264_keyframe_start(&[0x78, 0x00, 0x00, 0x65]));
    assert!(!h264_keyframe_start(&[0x78, 0x00]));
    // FU-A: start of an IDR; middle of an IDR; start of a non-IDR.
    assert!(h264_keyframe_start(&[0x7c, 0x85, 0x88]));
    assert!(!h264_keyframe_start(&[0x7c, 0x05, 0x88]));
    assert!(!h264_keyframe_start(&[0x7c, 0x81, 0x9a]));
    assert!(!h264_keyframe_start(&[0x7c]));
    assert!(!h264_keyframe_start(&[]));
}

#[test]
fn av1() {
    assert!(
        av1_keyframe_start(&[0x08, 0x0a]),
        "N=1: a new coded video sequence"
    );
    assert!(av1_keyframe_start(&[0x18]), "W=1, N=1");
    assert!(!av1_keyframe_start(&[0x10]), "W=1, N=0");
    assert!(!av1_keyframe_start(&[0x80]), "Z=1: a continuation");
    assert!(!av1_keyframe_start(&[]));
}

#[test]
fn formats_by_name() {
    assert_eq!(PayloadFormat::video("vp8"), PayloadFormat::Vp8);
    assert_eq!(PayloadFormat::video("VP9"), PayloadFormat::Vp9);
    assert_eq!(PayloadFormat::video("h264"), PayloadFormat::H264);
    assert_eq!(PayloadFormat::video("AV1"), PayloadFormat::Av1);
    assert_eq!(PayloadFormat::video("H265"), PayloadFormat::UnknownVideo);
    assert!(!PayloadFormat::UnknownVideo.detects_keyframes());
    assert!(PayloadFormat::Audio.is_keyframe_start(&[]));
}

#[test]
fn rtp_header_fields_and_payload_bounds() {
    let mut packet = vec![
        0xb1,
        0x80 | 96,
        0x12,
        0x34,
        0xde,
        0xad,
        0xbe,
        0xef,
        0,
        0,
        0,
        7,
    ];
    packet.extend_from_slice(&[0, 0, 0, 9]); // CSRC
    packet.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xff, 0, 0]); // one-word extension
    packet.extend_from_slice(&[1, 2, 3]); // payload
    packet.extend_from_slice(&[0, 2]); // two bytes of padding
    let header = RtpHeader::parse(&packet).unwrap();
    assert!(header.marker);
    assert_eq!(header.payload_type, 96);
    assert_eq!(header.sequence_number, 0x1234);
    assert_eq!(header.timestamp, 0xdead_beef);
    assert_eq!(header.ssrc, 7);
    assert_eq!(
        &packet[header.payload_start..header.payload_end],
        &[1, 2, 3]
    );
}

#[test]
fn h264_subscriptions_start_at_an_sps() {
    let mut h = Harness::new();
    h.join(1, "r");
    h.join(2, "r");
    let track = h.publish(1, video_track("H264", &[3]));
    h.subscribe(2, track);
    let mut stream = Stream::video(3, 1);
    assert!(
        h.send(1, 3, &stream.next(&[0x7c, 0x05, 0x88])).is_empty(),
        "middle of an IDR"
    );
    assert!(h.send(1, 3, &stream.next(&[0x41, 0x9a])).is_empty());
    let stap = [0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce];
    assert_eq!(h.send(1, 3, &stream.next(&stap)).len(), 1);
    assert_eq!(h.send(1, 3, &stream.next(&[0x7c, 0x85, 0x88])).len(), 1);
    assert_eq!(
        h.sfu.subscription(p(2), track).unwrap().current_layer,
        Some(0)
    );
}
