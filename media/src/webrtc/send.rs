//! The send path of forwarded RTP: what `rtc`'s interceptors did for a sent stream, done once.
//!
//! A forwarded packet does not go through `rtc`'s peer connection. The endpoint writes it for the
//! leg straight into its send buffer ([`write_leg`]: the subscription's SSRC, sequence number and
//! timestamp, the payload type the leg negotiated, the header extensions it negotiated, and the
//! leg's transport-wide sequence number when it negotiated transport-cc), protects it with the
//! peer's send keys ([`super::srtp`]) and queues it for the socket. Around that:
//!
//! - **the packet cache of a published stream** ([`TrackCache`]): the last packets of each
//!   publisher stream, each held once (a copy of its own, so that it pins no receive buffer)
//!   whatever the number of legs that forward it, to answer NACKs;
//! - **what each leg sent** ([`LegStream`]): which of the stream's packets went out under which
//!   of the leg's sequence numbers and timestamps, so that a NACK in the leg's numbering finds
//!   the cached packet and rewrites it for the leg again; the packet and octet counts and the
//!   last timestamp of its sender reports; the NACK guard's budget ([`super::nack`]).

use std::time::Instant;

use bytes::Bytes;

use super::nack::NackBudget;
use super::srtp::Rollover;

/// The RTP header extension profile of one-byte elements (RFC 8285 §4.2).
const ONE_BYTE_PROFILE: u16 = 0xBEDE;
/// The RTP header extension profile of two-byte elements (RFC 8285 §4.3; the low 4 bits are
/// application bits).
const TWO_BYTE_PROFILE: u16 = 0x1000;
/// Most extension elements kept from one packet; more are dropped (browsers send at most ~8).
const MAX_ELEMENTS: usize = 16;

/// Why a packet could not be written for a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

/// What a leg negotiated for a send stream: how its packets are written.
#[derive(Debug, Clone, Default)]
pub(crate) struct LegFormat {
    /// The payload type of the stream's codec on the leg.
    pub(crate) payload_type: u8,
    /// Extension ids passed on as the publisher sent them.
    pub(crate) extension_ids: Vec<u8>,
    /// The id of the transport-wide sequence number extension, if the leg negotiated it.
    pub(crate) transport_cc: Option<u8>,
    /// The retransmission stream (RFC 4588), if the leg negotiated one: its SSRC and payload
    /// type.
    pub(crate) rtx: Option<(u32, u8)>,
}

/// How a retransmission goes out on the leg's RTX stream (RFC 4588 §4): with the RTX payload
/// type, and the original sequence number in front of the payload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RtxWrap {
    pub(crate) payload_type: u8,
    pub(crate) original_seq: u16,
}

/// Writes `original` into `out` as the leg sends it: `ssrc`, `sequence_number` and `timestamp`
/// replaced, the payload type set to the leg's, the header extensions whose id the leg passes
/// on kept (others removed), the transport-wide sequence number `twcc` added when the leg
/// negotiated it; CSRCs, marker, payload and padding unchanged — or, with `rtx`, as an RTX
/// packet (its payload type, the original sequence number before the payload, no padding).
/// Returns the header's length (fixed part, CSRCs and extension block), which SRTP leaves in
/// the clear.
pub(crate) fn write_leg(
    original: &[u8],
    (ssrc, sequence_number, timestamp): (u32, u16, u32),
    format: &LegFormat,
    twcc: u16,
    rtx: Option<RtxWrap>,
    out: &mut Vec<u8>,
) -> Result<usize, Malformed> {
    if original.len() < 12 || original[0] >> 6 != 2 {
        return Err(Malformed);
    }
    let csrc_end = 12 + 4 * usize::from(original[0] & 0x0f);
    if original.len() < csrc_end {
        return Err(Malformed);
    }
    // The extension elements to keep: (id, start, length) in `original`.
    let mut kept = [(0u8, 0usize, 0usize); MAX_ELEMENTS];
    let mut count = 0;
    let mut two_byte = false;
    let mut payload_start = csrc_end;
    if original[0] & 0x10 != 0 {
        let Some(ext) = original.get(csrc_end..csrc_end + 4) else {
            return Err(Malformed);
        };
        let profile = u16::from_be_bytes([ext[0], ext[1]]);
        let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        let start = csrc_end + 4;
        let end = start + 4 * words;
        if original.len() < end {
            return Err(Malformed);
        }
        payload_start = end;
        let block = &original[start..end];
        let mut keep = |id: u8, at: usize, len: usize| {
            if count < MAX_ELEMENTS
                && Some(id) != format.transport_cc
                && format.extension_ids.contains(&id)
            {
                kept[count] = (id, start + at, len);
                count += 1;
            }
        };
        if profile == ONE_BYTE_PROFILE {
            let mut at = 0;
            while at < block.len() {
                let byte = block[at];
                if byte == 0 {
                    at += 1;
                    continue;
                }
                let id = byte >> 4;
                // RFC 8285 §4.2: id 15 ends the processing of the block.
                if id == 15 {
                    break;
                }
                let len = usize::from(byte & 0x0f) + 1;
                if at + 1 + len > block.len() {
                    return Err(Malformed);
                }
                keep(id, at + 1, len);
                at += 1 + len;
            }
        } else if profile & 0xfff0 == TWO_BYTE_PROFILE {
            two_byte = true;
            let mut at = 0;
            while at < block.len() {
                let id = block[at];
                if id == 0 {
                    at += 1;
                    continue;
                }
                let Some(&len) = block.get(at + 1) else {
                    return Err(Malformed);
                };
                let len = usize::from(len);
                if at + 2 + len > block.len() {
                    return Err(Malformed);
                }
                keep(id, at + 2, len);
                at += 2 + len;
            }
        }
        // Another profile: nothing the leg negotiated; the block is dropped.
    }
    let twcc = format.transport_cc.map(|id| (id, twcc.to_be_bytes()));
    // The one-byte form holds ids 1..=14 and 1..=16 bytes; anything else needs two bytes.
    two_byte |= twcc.is_some_and(|(id, _)| id > 14)
        || kept[..count]
            .iter()
            .any(|&(id, _, len)| id > 14 || len == 0 || len > 16);

    out.clear();
    out.extend_from_slice(&original[..csrc_end]);
    let payload_type = rtx.map_or(format.payload_type, |r| r.payload_type);
    out[1] = (original[1] & 0x80) | (payload_type & 0x7f);
    out[2..4].copy_from_slice(&sequence_number.to_be_bytes());
    out[4..8].copy_from_slice(&timestamp.to_be_bytes());
    out[8..12].copy_from_slice(&ssrc.to_be_bytes());
    if count == 0 && twcc.is_none() {
        out[0] &= !0x10;
    } else {
        out[0] |= 0x10;
        let profile = if two_byte {
            TWO_BYTE_PROFILE
        } else {
            ONE_BYTE_PROFILE
        };
        out.extend_from_slice(&profile.to_be_bytes());
        // The length, in words, once the elements are written.
        out.extend_from_slice(&[0, 0]);
        let block_start = out.len();
        let element = |out: &mut Vec<u8>, id: u8, data: &[u8]| {
            if two_byte {
                // Lengths fit: elements come from a block of at most 255 bytes each.
                out.extend_from_slice(&[id, data.len() as u8]);
            } else {
                out.push((id << 4) | (data.len() as u8 - 1));
            }
            out.extend_from_slice(data);
        };
        for &(id, at, len) in &kept[..count] {
            element(out, id, &original[at..at + len]);
        }
        if let Some((id, seq)) = twcc {
            element(out, id, &seq);
        }
        while !(out.len() - block_start).is_multiple_of(4) {
            out.push(0);
        }
        let words = u16::try_from((out.len() - block_start) / 4).map_err(|_| Malformed)?;
        out[block_start - 2..block_start].copy_from_slice(&words.to_be_bytes());
    }
    let header_len = out.len();
    match rtx {
        None => out.extend_from_slice(&original[payload_start..]),
        Some(wrap) => {
            let padding = if original[0] & 0x20 != 0 {
                usize::from(original[original.len() - 1])
            } else {
                0
            };
            let end = original.len().saturating_sub(padding).max(payload_start);
            out[0] &= !0x20;
            out.extend_from_slice(&wrap.original_seq.to_be_bytes());
            out.extend_from_slice(&original[payload_start..end]);
        }
    }
    Ok(header_len)
}

/// The last packets of one publisher stream, by the publisher's sequence number, each held
/// once for every leg that forwards it.
#[derive(Debug)]
pub(crate) struct TrackCache {
    slots: Box<[Option<(u16, Bytes)>]>,
    /// Send streams that forward this stream; the cache goes with the last.
    pub(crate) legs: usize,
}

impl TrackCache {
    /// A cache of `size` packets (a power of two).
    pub(crate) fn new(size: usize) -> TrackCache {
        TrackCache {
            slots: vec![None; size].into_boxed_slice(),
            legs: 0,
        }
    }

    fn slot(&self, seq: u16) -> usize {
        usize::from(seq) & (self.slots.len() - 1)
    }

    /// Keeps a copy of `packet` (the publisher's, numbered `seq`) unless it is there already.
    pub(crate) fn insert(&mut self, seq: u16, packet: &[u8]) {
        let at = self.slot(seq);
        match &self.slots[at] {
            Some((held, _)) if *held == seq => {}
            _ => self.slots[at] = Some((seq, Bytes::copy_from_slice(packet))),
        }
    }

    /// The publisher's packet `seq`, if still held.
    pub(crate) fn get(&self, seq: u16) -> Option<&Bytes> {
        match &self.slots[self.slot(seq)] {
            Some((held, packet)) if *held == seq => Some(packet),
            _ => None,
        }
    }

    /// Bytes held (packets and slots), for the memory figures.
    pub(crate) fn held_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Option<(u16, Bytes)>>()
            + self
                .slots
                .iter()
                .flatten()
                .map(|(_, p)| p.len())
                .sum::<usize>()
    }
}

/// One packet a leg sent: its number and timestamp on the leg, and the publisher's number.
#[derive(Debug, Clone, Copy, Default)]
struct Sent {
    leg_seq: u16,
    original_seq: u16,
    timestamp: u32,
    valid: bool,
}

/// What one send stream of a leg has sent (see the module docs).
#[derive(Debug)]
pub(crate) struct LegStream {
    /// The leg's numbering of its last packets, by the leg's sequence number.
    sent: Box<[Sent]>,
    /// What NACKs may still get.
    pub(crate) budget: NackBudget,
    /// Packets and payload octets sent (RFC 3550 §6.4.1: wrapping counts).
    pub(crate) packets: u32,
    pub(crate) octets: u32,
    /// Packets sent when the last sender report went.
    pub(crate) reported: u32,
    /// The timestamp of the newest packet sent, and when it was sent.
    pub(crate) last: Option<(u32, Instant)>,
    /// The next sequence number of its RTX stream.
    pub(crate) rtx_seq: u16,
    /// The SRTP rollover counters of the stream and of its RTX stream.
    pub(crate) rollover: Rollover,
    pub(crate) rtx_rollover: Rollover,
}

impl LegStream {
    /// A stream remembering its last `size` packets (a power of two).
    pub(crate) fn new(size: usize) -> LegStream {
        LegStream {
            sent: vec![Sent::default(); size].into_boxed_slice(),
            budget: NackBudget::default(),
            packets: 0,
            octets: 0,
            reported: 0,
            last: None,
            rtx_seq: 0,
            rollover: Rollover::default(),
            rtx_rollover: Rollover::default(),
        }
    }

    /// An original packet went out.
    pub(crate) fn sent(
        &mut self,
        (leg_seq, timestamp): (u16, u32),
        original_seq: u16,
        payload_len: usize,
        now: Instant,
    ) {
        let len = self.sent.len();
        self.sent[usize::from(leg_seq) & (len - 1)] = Sent {
            leg_seq,
            original_seq,
            timestamp,
            valid: true,
        };
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add(payload_len as u32);
        if self
            .last
            .is_none_or(|(ts, _)| (timestamp.wrapping_sub(ts) as i32) >= 0)
        {
            self.last = Some((timestamp, now));
        }
        self.budget.sent(leg_seq);
    }

    /// Forgets which packets it sent (they were another stream's, whose cache it left).
    pub(crate) fn forget(&mut self) {
        self.sent.fill(Sent::default());
    }

    /// The publisher's number and the leg's timestamp of the leg's packet `leg_seq`, if it is
    /// among the last remembered.
    pub(crate) fn lookup(&self, leg_seq: u16) -> Option<(u16, u32)> {
        let s = self.sent[usize::from(leg_seq) & (self.sent.len() - 1)];
        (s.valid && s.leg_seq == leg_seq).then_some((s.original_seq, s.timestamp))
    }

    /// Bytes this stream holds, for the memory figures.
    pub(crate) fn held_bytes(&self) -> usize {
        std::mem::size_of::<LegStream>()
            + self.sent.len() * std::mem::size_of::<Sent>()
            + self.budget.held_bytes()
    }
}

/// The payload's length of an RTP packet (without header, extensions and padding), for the
/// octet count of sender reports; 0 when malformed.
pub(crate) fn payload_len(packet: &[u8], header_len: usize) -> usize {
    let padding = if packet.first().is_some_and(|b| b & 0x20 != 0) {
        packet.last().map_or(0, |&p| usize::from(p))
    } else {
        0
    };
    packet.len().saturating_sub(header_len + padding)
}

/// The most padding one padding-only packet carries: RFC 3550 §5.1 counts it in one octet.
pub(crate) const MAX_PADDING: usize = 255;

/// Writes a padding-only packet of the leg's RTX stream into `out` (RFC 3550 §5.1 padding, no
/// payload: a receiver drops an RTX packet too short for the original sequence number, RFC
/// 4588 §4): `padding` bytes (1 to [`MAX_PADDING`]) after the header and, when the leg
/// negotiated transport-cc, the transport-wide sequence number `twcc` as its one extension
/// element, so that the leg's feedback reports the packet. Returns the header's length (what
/// SRTP leaves in the clear).
pub(crate) fn write_padding(
    (ssrc, sequence_number, timestamp): (u32, u16, u32),
    payload_type: u8,
    transport_cc: Option<u8>,
    twcc: u16,
    padding: usize,
    out: &mut Vec<u8>,
) -> usize {
    let padding = padding.clamp(1, MAX_PADDING);
    out.clear();
    let extension = if transport_cc.is_some() { 0x10 } else { 0 };
    out.push(0x80 | 0x20 | extension);
    out.push(payload_type & 0x7f);
    out.extend_from_slice(&sequence_number.to_be_bytes());
    out.extend_from_slice(&timestamp.to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    if let Some(id) = transport_cc {
        // One word of one-byte elements: the id with length 2 (written as 1), the number, and
        // a zero byte of padding to the word.
        out.extend_from_slice(&ONE_BYTE_PROFILE.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.push(id << 4 | 1);
        out.extend_from_slice(&twcc.to_be_bytes());
        out.push(0);
    }
    let header_len = out.len();
    out.resize(header_len + padding - 1, 0);
    out.push(padding as u8);
    header_len
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::shared::marshal::{Marshal, MarshalSize, Unmarshal};

    fn packet(extensions: &[(u8, &[u8])], profile: u16) -> Vec<u8> {
        let mut header = rtc::rtp::Header {
            version: 2,
            marker: true,
            payload_type: 96,
            sequence_number: 7,
            timestamp: 1000,
            ssrc: 0x1111,
            csrc: vec![0xAABB],
            ..Default::default()
        };
        if !extensions.is_empty() {
            header.extension = true;
            header.extension_profile = profile;
            for (id, data) in extensions {
                header
                    .set_extension(*id, Bytes::copy_from_slice(data))
                    .expect("extension");
            }
        }
        let packet = rtc::rtp::Packet {
            header,
            payload: Bytes::from_static(b"payload!"),
        };
        packet.marshal().expect("marshal").to_vec()
    }

    #[test]
    fn a_leg_keeps_what_it_negotiated_and_gets_its_own_transport_sequence() {
        let original = packet(&[(1, b"mid"), (3, &[9, 9]), (5, &[1])], ONE_BYTE_PROFILE);
        let format = LegFormat {
            payload_type: 100,
            extension_ids: vec![3, 5],
            transport_cc: Some(3),
            rtx: None,
        };
        let mut out = Vec::new();
        let header_len = write_leg(
            &original,
            (0x2222, 40, 5000),
            &format,
            0x0102,
            None,
            &mut out,
        )
        .expect("write");
        let parsed = rtc::rtp::Packet::unmarshal(&mut &out[..]).expect("parse");
        assert_eq!(parsed.header.ssrc, 0x2222);
        assert_eq!(parsed.header.sequence_number, 40);
        assert_eq!(parsed.header.timestamp, 5000);
        assert_eq!(parsed.header.payload_type, 100);
        assert!(parsed.header.marker);
        assert_eq!(parsed.header.csrc, vec![0xAABB]);
        // The publisher's value of id 3 is replaced by the leg's own, id 1 (not negotiated) gone.
        assert_eq!(parsed.header.get_extension(1), None);
        assert_eq!(
            parsed.header.get_extension(3).as_deref(),
            Some(&[1u8, 2][..])
        );
        assert_eq!(parsed.header.get_extension(5).as_deref(), Some(&[1u8][..]));
        assert_eq!(&parsed.payload[..], b"payload!");
        assert_eq!(header_len, parsed.header.marshal_size());
        assert_eq!(
            crate::webrtc::srtp::header_of_len(1, 2, header_len).marshal_size(),
            header_len
        );

        // On the RTX stream: its payload type, the original number before the payload.
        let wrap = RtxWrap {
            payload_type: 101,
            original_seq: 40,
        };
        write_leg(
            &original,
            (0x3333, 1, 5000),
            &format,
            0,
            Some(wrap),
            &mut out,
        )
        .expect("rtx");
        let parsed = rtc::rtp::Packet::unmarshal(&mut &out[..]).expect("parse");
        assert_eq!(parsed.header.payload_type, 101);
        assert_eq!(&parsed.payload[..], b"\x00\x28payload!");

        // Nothing kept and no transport-cc: no extension block at all.
        let bare = LegFormat {
            payload_type: 96,
            ..LegFormat::default()
        };
        let header_len = write_leg(&original, (1, 2, 3), &bare, 0, None, &mut out).expect("write");
        assert_eq!(header_len, 16);
        assert_eq!(out[0] & 0x10, 0);

        // Two-byte elements stay two-byte; a truncated block is malformed.
        let original = packet(&[(20, &[1, 2, 3])], TWO_BYTE_PROFILE);
        let format = LegFormat {
            payload_type: 96,
            extension_ids: vec![20],
            transport_cc: Some(4),
            rtx: None,
        };
        write_leg(&original, (1, 2, 3), &format, 9, None, &mut out).expect("write");
        let parsed = rtc::rtp::Packet::unmarshal(&mut &out[..]).expect("parse");
        assert_eq!(
            parsed.header.get_extension(20).as_deref(),
            Some(&[1u8, 2, 3][..])
        );
        assert_eq!(
            parsed.header.get_extension(4).as_deref(),
            Some(&[0u8, 9][..])
        );
        assert_eq!(
            write_leg(&original[..18], (1, 2, 3), &format, 9, None, &mut out),
            Err(Malformed)
        );
    }

    #[test]
    fn the_cache_holds_each_packet_once_and_the_leg_finds_it_by_its_own_number() {
        let mut cache = TrackCache::new(4);
        let a = Bytes::from_static(b"a");
        cache.insert(10, &a);
        cache.insert(10, b"other");
        assert_eq!(cache.get(10).map(|p| &p[..]), Some(&b"a"[..]));
        cache.insert(14, b"b");
        assert_eq!(cache.get(10), None, "evicted by a packet four later");

        let now = Instant::now();
        let mut leg = LegStream::new(4);
        leg.sent((500, 90_000), 14, 1, now);
        assert_eq!(leg.lookup(500), Some((14, 90_000)));
        assert_eq!(leg.lookup(504), None);
        assert_eq!((leg.packets, leg.octets), (1, 1));
    }

    #[test]
    fn a_padding_packet_is_an_rtx_packet_without_payload_numbered_for_transport_cc() {
        let mut out = Vec::new();
        let header = write_padding((0x1234_5678, 7, 90_000), 97, Some(3), 0xabcd, 200, &mut out);
        assert_eq!(header, 20);
        assert_eq!(out.len(), 220);
        // Version 2, padding and extension bits, no CSRC; no marker; payload type 97.
        assert_eq!(out[0], 0x80 | 0x20 | 0x10);
        assert_eq!(out[1], 97);
        assert_eq!(&out[2..4], &7u16.to_be_bytes());
        assert_eq!(&out[8..12], &0x1234_5678u32.to_be_bytes());
        // The one-byte profile, one word: id 3, two bytes of transport-wide number.
        assert_eq!(&out[12..20], &[0xbe, 0xde, 0, 1, 0x31, 0xab, 0xcd, 0]);
        // The padding counts itself in its last octet; nothing is left for a payload.
        assert_eq!(usize::from(out[out.len() - 1]), out.len() - header);
        assert_eq!(payload_len(&out, header), 0);
        // At most 255 bytes of padding in one packet; without transport-cc, no extension.
        let header = write_padding((1, 0, 0), 97, None, 0, 1_000, &mut out);
        assert_eq!((header, out.len(), out[0]), (12, 12 + MAX_PADDING, 0xa0));
    }
}
