//! The hot path: rewrite, fan-out, and what is refused.

use strait_media::sfu::RoutingError;
use strait_media::sfu::rtp::RtpError;
use strait_media::sfu::{MediaId, SubscriptionInfo, TrackId};

use crate::sfu::fixture::{Harness, Stream, audio_track, header_of, opus_payload, p, rtp};

/// A room where 1 publishes audio on media 7 and 2..=n subscribe.
fn audio_room(n: u64) -> (Harness, TrackId, Vec<SubscriptionInfo>, Stream) {
    let mut h = Harness::new();
    for id in 1..=n {
        h.join(id, "r");
    }
    let track = h.publish(1, audio_track(7));
    let subs = (2..=n).map(|id| h.subscribe(id, track)).collect();
    h.events();
    (h, track, subs, Stream::audio(7))
}

#[test]
fn audio_forwards_at_once_with_the_subscriptions_ssrc_and_continuous_numbers() {
    let (mut h, track, subs, mut stream) = audio_room(2);
    let sub = subs[0];
    assert_eq!((sub.track, sub.media, sub.layer), (track, MediaId(1), 0));
    assert_ne!(sub.ssrc, stream.ssrc);

    let mut previous: Option<(u16, u32)> = None;
    for _ in 0..5 {
        let packet = stream.next(&opus_payload());
        let out = h.send(1, 7, &packet);
        assert_eq!(out.len(), 1);
        let got = &out[0];
        assert_eq!(
            (got.to, got.media, got.layer, got.ssrc),
            (p(2), sub.media, 0, sub.ssrc)
        );
        assert_eq!(header_of(&got.bytes), (got.seq, got.ts, sub.ssrc));
        // Only sequence number, timestamp and SSRC change.
        assert_eq!(got.bytes[..2], packet[..2]);
        assert_eq!(got.bytes[12..], packet[12..]);
        if let Some((seq, ts)) = previous {
            assert_eq!(got.seq, seq.wrapping_add(1));
            assert_eq!(got.ts, ts.wrapping_add(960));
        }
        previous = Some((got.seq, got.ts));
        h.advance(20);
    }
    let stats = h.sfu.stats();
    assert_eq!((stats.packets_in, stats.packets_forwarded), (5, 5));
    assert_eq!(stats.bytes_in, stats.bytes_forwarded);
}

#[test]
fn the_publisher_never_receives_its_own_track() {
    let (mut h, _, _, mut stream) = audio_room(3);
    let out = h.send(1, 7, &stream.next(&opus_payload()));
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|r| r.to != p(1)));
}

#[test]
fn one_publisher_fans_out_every_packet_to_every_subscriber() {
    let (mut h, _, subs, mut stream) = audio_room(21);
    let mut received: Vec<Vec<u16>> = vec![Vec::new(); subs.len()];
    for _ in 0..50 {
        let out = h.send(1, 7, &stream.next(&opus_payload()));
        assert_eq!(out.len(), 20);
        for r in out {
            let i = (r.to.0 - 2) as usize;
            assert_eq!((r.media, r.ssrc), (subs[i].media, subs[i].ssrc));
            received[i].push(r.seq);
        }
    }
    for seqs in received {
        assert_eq!(seqs.len(), 50);
        assert!(seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)));
    }
    // Each subscriber has its own SSRC.
    let mut ssrcs: Vec<u32> = subs.iter().map(|s| s.ssrc).collect();
    ssrcs.sort_unstable();
    ssrcs.dedup();
    assert_eq!(ssrcs.len(), 20);
}

#[test]
fn reordered_and_lost_packets_keep_their_relative_numbers() {
    let (mut h, _, _, mut stream) = audio_room(2);
    let packets: Vec<Vec<u8>> = (0..6).map(|_| stream.next(&opus_payload())).collect();
    let mut out = Vec::new();
    for i in [0, 2, 1, 4, 5] {
        out.push((header_of(&packets[i]), h.send(1, 7, &packets[i]).remove(0)));
    }
    let ((seq0, ts0, _), first) = &out[0];
    for ((seq, ts, _), got) in &out {
        assert_eq!(got.seq.wrapping_sub(first.seq), seq.wrapping_sub(*seq0));
        assert_eq!(got.ts.wrapping_sub(first.ts), ts.wrapping_sub(*ts0));
    }
}

#[test]
fn sequence_numbers_wrap() {
    let (mut h, _, _, mut stream) = audio_room(2);
    stream.seq = 65_534;
    let seqs: Vec<u16> = (0..4)
        .map(|_| h.send(1, 7, &stream.next(&opus_payload()))[0].seq)
        .collect();
    for w in seqs.windows(2) {
        assert_eq!(w[1], w[0].wrapping_add(1));
    }
}

#[test]
fn a_jump_in_the_publishers_numbering_continues_downstream() {
    let (mut h, _, _, mut stream) = audio_room(2);
    let before = h.send(1, 7, &stream.next(&opus_payload())).remove(0);
    // The publisher restarts its numbering far away (e.g. a new encoder).
    stream.seq = stream.seq.wrapping_add(40_000);
    h.advance(20);
    let after = h.send(1, 7, &stream.next(&opus_payload())).remove(0);
    assert_eq!(after.seq, before.seq.wrapping_add(1));
    assert_eq!(after.ts, before.ts.wrapping_add(960), "20 ms at 48 kHz");
    let next = h.send(1, 7, &stream.next(&opus_payload())).remove(0);
    assert_eq!(next.seq, after.seq.wrapping_add(1));
}

#[test]
fn csrcs_extensions_and_padding_pass_through() {
    let (mut h, _, subs, _) = audio_room(2);
    // V=2 P=1 X=1 CC=1; one CSRC; a one-word extension; payload; 3 bytes of padding.
    let mut packet = vec![
        0xb1,
        0x80 | 111,
        0x12,
        0x34,
        0,
        0,
        0x10,
        0,
        0xde,
        0xad,
        0xbe,
        0xef,
    ];
    packet.extend_from_slice(&[0, 0, 0, 9]);
    packet.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xff, 0, 0]);
    packet.extend_from_slice(&[1, 2, 3, 4]);
    packet.extend_from_slice(&[0, 0, 3]);
    let got = h.send(1, 7, &packet).remove(0);
    assert_eq!(got.bytes.len(), packet.len());
    assert_eq!(got.bytes[..2], packet[..2]);
    assert_eq!(got.bytes[12..], packet[12..]);
    assert_eq!(header_of(&got.bytes).2, subs[0].ssrc);
}

#[test]
fn malformed_packets_and_unknown_media_are_typed_errors_and_counted() {
    let (mut h, _, _, _) = audio_room(2);
    let now = h.now;
    let mut sfu_call = |publisher: u64, media: u32, packet: &[u8]| {
        h.sfu
            .handle_rtp(p(publisher), MediaId(media), packet, now, &mut |_| {
                panic!("nothing may be forwarded")
            })
    };
    assert_eq!(
        sfu_call(1, 7, &[0x80, 111, 0]),
        Err(RoutingError::Malformed(RtpError::TooShort { len: 3 }))
    );
    let mut v1 = rtp(111, 1, 1, 1, &[1]);
    v1[0] = 0x40;
    assert_eq!(
        sfu_call(1, 7, &v1),
        Err(RoutingError::Malformed(RtpError::BadVersion { version: 1 }))
    );
    let mut csrcs = rtp(111, 1, 1, 1, &[1, 2, 3, 4]);
    csrcs[0] = 0x82; // two CSRCs: 20 bytes of header in a 16-byte packet
    assert_eq!(
        sfu_call(1, 7, &csrcs),
        Err(RoutingError::Malformed(RtpError::HeaderTooLong {
            header_len: 20,
            len: 16
        }))
    );
    let mut ext = rtp(111, 1, 1, 1, &[0xbe, 0xde, 0, 9]);
    ext[0] = 0x90; // extension of nine words in a 16-byte packet
    assert_eq!(
        sfu_call(1, 7, &ext),
        Err(RoutingError::Malformed(RtpError::HeaderTooLong {
            header_len: 52,
            len: 16
        }))
    );
    let mut pad = rtp(111, 1, 1, 1, &[1, 9]);
    pad[0] = 0xa0; // padding of 9 in a 2-byte payload
    assert_eq!(
        sfu_call(1, 7, &pad),
        Err(RoutingError::Malformed(RtpError::BadPadding {
            padding: 9,
            payload_len: 2
        }))
    );
    let good = rtp(111, 1, 1, 1, &[1]);
    assert_eq!(
        sfu_call(1, 8, &good),
        Err(RoutingError::UnknownMedia { media: MediaId(8) })
    );
    // A subscriber sending on the publisher's media id is not the publisher.
    assert_eq!(
        sfu_call(2, 7, &good),
        Err(RoutingError::UnknownMedia { media: MediaId(7) })
    );

    let stats = h.sfu.stats();
    assert_eq!(stats.drops.malformed, 5);
    assert_eq!(stats.drops.unknown_media, 2);
    assert_eq!(stats.packets_in, 7);
    assert_eq!(stats.packets_forwarded, 0);
}

#[test]
fn write_into_writes_exactly_the_packet_at_the_start_of_a_larger_buffer() {
    let (mut h, _, subs, mut stream) = audio_room(2);
    let packet = stream.next(&opus_payload());
    let mut buf = [0xaa_u8; 64];
    let mut written = 0;
    h.sfu
        .handle_rtp(p(1), MediaId(7), &packet, h.now, &mut |fwd| {
            assert!(!fwd.is_empty());
            assert_eq!(fwd.original(), &packet[..]);
            written = fwd.write_into(&mut buf);
        })
        .unwrap();
    assert_eq!(written, packet.len());
    assert_eq!(header_of(&buf).2, subs[0].ssrc);
    assert!(buf[written..].iter().all(|&b| b == 0xaa));
}
