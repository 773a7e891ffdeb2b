//! The properties the `rtp_parse`, `webrtc_demux` and `offer_check` fuzz targets check, in one
//! place.
//!
//! This file is compiled twice: by each of those cargo-fuzz targets (`fuzz_targets/*.rs`) and by
//! the plain test module `media/tests/media/fuzz_corpus.rs`, which runs the same checks over the
//! committed seed corpus and a seeded mutation sweep so that they also run where cargo-fuzz
//! cannot. Both include it with `#[path]`, so it depends on nothing but `strait-media` and `rtc`
//! (a dependency of `strait-media`, here for its SDP parser).
//!
//! Every check panics when a property is broken; "the parser refused the input" is never a
//! failure, only a panic or an answer that breaks what the parser promises is.

use std::io::Cursor;
use std::net::SocketAddr;
use std::time::Instant;

use rtc::sdp::description::media::MediaDescription;
use rtc::sdp::description::session::SessionDescription;
use strait_media::sfu::keyframe::PayloadFormat;
use strait_media::sfu::rtp::{FIXED_HEADER_LEN, RtpError, RtpHeader};
use strait_media::webrtc::fuzzing::{Datagram, SUPPORTED_CODECS, classify};
use strait_media::webrtc::simulcast::{MAX_RID_LEN, MAX_SIMULCAST_LAYERS};
use strait_media::webrtc::{
    Endpoint, IceCredentials, IceFragment, WebRtcConfig, WebRtcError, binding_request_ufrag,
    check_offer, simulcast_sections,
};

// --- rtp_parse ---

/// `rtp_parse`: `RtpHeader::parse` gives the answer RFC 3550 §5.1 and §5.3.1 give (computed here
/// independently), so the payload bounds it returns are inside the packet; rewriting the
/// sequence number, timestamp and SSRC as `Forward::write_into` does changes nothing else; the
/// keyframe detectors take any payload it yields.
pub(crate) fn rtp_parse(packet: &[u8]) {
    let parsed = RtpHeader::parse(packet);
    assert_eq!(parsed, rfc3550_header(packet), "differs from RFC 3550");
    let header = match parsed {
        Ok(header) => header,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert!(
        FIXED_HEADER_LEN <= header.payload_start
            && header.payload_start <= header.payload_end
            && header.payload_end <= packet.len(),
        "payload bounds {}..{} outside a {}-byte packet",
        header.payload_start,
        header.payload_end,
        packet.len()
    );
    let payload = &packet[header.payload_start..header.payload_end];

    // What the SFU writes for a subscriber: the same packet with bytes 2..12 replaced.
    let mut rewritten = packet.to_vec();
    rewritten[2..4].copy_from_slice(&header.sequence_number.wrapping_add(1).to_be_bytes());
    rewritten[4..8].copy_from_slice(&header.timestamp.wrapping_add(960).to_be_bytes());
    rewritten[8..12].copy_from_slice(&(!header.ssrc).to_be_bytes());
    assert_eq!(
        RtpHeader::parse(&rewritten),
        Ok(RtpHeader {
            sequence_number: header.sequence_number.wrapping_add(1),
            timestamp: header.timestamp.wrapping_add(960),
            ssrc: !header.ssrc,
            ..header
        }),
        "rewriting the numbering changed the parse"
    );

    for format in [
        PayloadFormat::Audio,
        PayloadFormat::Vp8,
        PayloadFormat::Vp9,
        PayloadFormat::H264,
        PayloadFormat::Av1,
        PayloadFormat::UnknownVideo,
    ] {
        let keyframe = format.is_keyframe_start(payload);
        if matches!(format, PayloadFormat::Audio | PayloadFormat::UnknownVideo) {
            assert!(keyframe, "{format:?} must start anywhere");
        }
    }
}

/// RFC 3550 §5.1 read by the letter, every length in `u64`: the fixed header, 4 bytes per CSRC,
/// the extension's 4-byte header plus its length in 32-bit words (§5.3.1), and padding whose
/// last octet counts itself and must fit the payload.
fn rfc3550_header(packet: &[u8]) -> Result<RtpHeader, RtpError> {
    let len = packet.len();
    let [b0, b1, s0, s1, t0, t1, t2, t3, c0, c1, c2, c3, ..] = *packet else {
        return Err(RtpError::TooShort { len });
    };
    if b0 >> 6 != 2 {
        return Err(RtpError::BadVersion { version: b0 >> 6 });
    }
    let csrc_end = 12 + 4 * u64::from(b0 & 0x0f);
    let header_len = if b0 & 0x10 == 0 {
        csrc_end
    } else {
        let at = csrc_end as usize;
        let Some(extension) = packet.get(at..at + 4) else {
            return Err(RtpError::HeaderTooLong {
                header_len: at + 4,
                len,
            });
        };
        csrc_end + 4 + 4 * u64::from(u16::from_be_bytes([extension[2], extension[3]]))
    };
    if header_len > len as u64 {
        return Err(RtpError::HeaderTooLong {
            header_len: header_len as usize,
            len,
        });
    }
    let header_len = header_len as usize;
    let payload_end = if b0 & 0x20 == 0 {
        len
    } else {
        let padding = packet[len - 1];
        let payload_len = len - header_len;
        if padding == 0 || usize::from(padding) > payload_len {
            return Err(RtpError::BadPadding {
                padding,
                payload_len,
            });
        }
        len - usize::from(padding)
    };
    Ok(RtpHeader {
        marker: b1 & 0x80 != 0,
        payload_type: b1 & 0x7f,
        sequence_number: u16::from_be_bytes([s0, s1]),
        timestamp: u32::from_be_bytes([t0, t1, t2, t3]),
        ssrc: u32::from_be_bytes([c0, c1, c2, c3]),
        payload_start: header_len,
        payload_end,
    })
}

// --- webrtc_demux ---

/// STUN's fixed header (RFC 8489 §5).
const STUN_HEADER_LEN: usize = 20;
/// The USERNAME attribute type (RFC 8489 §14.3).
const ATTR_USERNAME: [u8; 2] = [0x00, 0x06];

/// The bridge socket's own address and a source no peer has been seen from.
const LOCAL: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 4479);
const UNKNOWN_SOURCE: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 9)),
    50_000,
);

/// `webrtc_demux`: a datagram on the bridge's UDP port, from an address that has not done ICE.
/// `classify` says STUN exactly when the first byte is 0 to 3 (RFC 7983 §7) and reads nothing past
/// the message length the STUN header declares; `binding_request_ufrag` agrees with it; a ufrag
/// it finds is the part before the first `:` of the first USERNAME attribute of a Binding
/// request, inside the datagram; an endpoint without that ufrag drops the datagram, counts it
/// under the right reason and answers nothing.
pub(crate) fn webrtc_demux(bytes: &[u8]) {
    let class = classify(bytes);
    assert_eq!(classify(bytes), class, "classifying twice gave two answers");

    // RFC 7983 §7: 0..=3 STUN, 16..=19 ZRTP, 20..=63 DTLS, 64..=79 TURN channel, 128..=191
    // RTP/RTCP. Only STUN can start a route.
    let stun = matches!(bytes.first(), Some(0..=3));
    assert_eq!(
        class != Datagram::NotStun,
        stun,
        "first byte {:?} classified as {class:?}",
        bytes.first()
    );
    if stun && (bytes.len() < STUN_HEADER_LEN || bytes[4..8] != [0x21, 0x12, 0xa4, 0x42]) {
        assert_eq!(class, Datagram::OtherStun, "not a STUN header, yet routed");
    }

    let ufrag = binding_request_ufrag(bytes);
    match class {
        Datagram::BindingRequest { server_ufrag } => {
            assert_eq!(ufrag, Some(server_ufrag));
            check_ufrag(bytes, server_ufrag);
        }
        _ => assert_eq!(ufrag, None, "binding_request_ufrag disagrees with classify"),
    }

    // Bounded: what follows the declared message length is never looked at.
    if stun && bytes.len() >= STUN_HEADER_LEN {
        let declared = STUN_HEADER_LEN + usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
        if declared < bytes.len() {
            assert_eq!(
                classify(&bytes[..declared]),
                class,
                "bytes past the declared length changed the answer"
            );
        }
    }

    let mut endpoint = Endpoint::new(WebRtcConfig {
        local_addrs: vec![LOCAL],
        ..WebRtcConfig::default()
    });
    endpoint.handle_datagram(Instant::now(), LOCAL, UNKNOWN_SOURCE, bytes);
    let stats = endpoint.stats();
    assert_eq!(stats.datagrams_in, 1);
    let routed = matches!(class, Datagram::BindingRequest { .. });
    assert_eq!(
        (stats.dropped.unknown_ufrag, stats.dropped.unknown_source),
        if routed { (1, 0) } else { (0, 1) },
        "dropped under the wrong reason: {:?}",
        stats.dropped
    );
    assert_eq!(stats.dropped.rejected_by_peer, 0);
    assert!(
        endpoint.poll_transmit().is_none(),
        "answered an unknown source"
    );
    assert!(endpoint.poll_event().is_none());
    assert_eq!(endpoint.peer_count(), 0);
}

/// Where `ufrag` sits in `bytes`: in a Binding request, at the start of the value of the first
/// USERNAME attribute (found by walking the attributes from the header, each padded to four
/// bytes), followed by a `:` inside that value, which lies inside the declared message.
fn check_ufrag(bytes: &[u8], ufrag: &str) {
    assert!(!ufrag.is_empty() && !ufrag.contains(':'), "ufrag {ufrag:?}");
    assert_eq!(
        bytes[0..2],
        [0x00, 0x01],
        "routed a STUN message that is no Binding request"
    );
    assert_eq!(
        bytes[4..8],
        [0x21, 0x12, 0xa4, 0x42],
        "routed without the magic cookie"
    );
    let start = (ufrag.as_ptr() as usize)
        .checked_sub(bytes.as_ptr() as usize)
        .expect("the ufrag borrows from the datagram");
    assert!(
        start + ufrag.len() <= bytes.len(),
        "the ufrag runs past the datagram"
    );
    let end =
        (STUN_HEADER_LEN + usize::from(u16::from_be_bytes([bytes[2], bytes[3]]))).min(bytes.len());

    let mut at = STUN_HEADER_LEN;
    loop {
        assert!(at + 4 <= end, "no USERNAME attribute before the ufrag");
        let value_len = usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]));
        if bytes[at..at + 2] == ATTR_USERNAME {
            assert_eq!(
                at + 4,
                start,
                "the ufrag is not where the first USERNAME starts"
            );
            assert!(
                at + 4 + value_len <= end,
                "the USERNAME runs past the message"
            );
            assert!(
                ufrag.len() < value_len,
                "no room for the ':' in the USERNAME"
            );
            assert_eq!(
                bytes[start + ufrag.len()],
                b':',
                "the ufrag is not followed by ':'"
            );
            return;
        }
        at += 4 + value_len.div_ceil(4) * 4;
    }
}

// --- offer_check ---

/// Offer limits the `offer_check` input header picks from: the default 64 KiB, tiny ones so that
/// the too-large path is reached often, and none at all.
pub(crate) const OFFER_LIMITS: [usize; 8] =
    [64 * 1024, 0, 16, 100, 1000, 4096, 16 * 1024, usize::MAX];

/// How an `offer_check` input is laid out: a header byte whose low three bits index
/// [`OFFER_LIMITS`], then the text (invalid UTF-8 replaced, as a signaling path that took it as
/// UTF-8 would never see it).
#[derive(Debug)]
pub(crate) struct OfferInput {
    pub(crate) max_len: usize,
    pub(crate) text: String,
}

impl OfferInput {
    pub(crate) fn parse(data: &[u8]) -> OfferInput {
        let (max_len, text) = match data.split_first() {
            Some((&header, text)) => (OFFER_LIMITS[usize::from(header) % OFFER_LIMITS.len()], text),
            None => (OFFER_LIMITS[0], data),
        };
        OfferInput {
            max_len,
            text: String::from_utf8_lossy(text).into_owned(),
        }
    }

    /// The inverse of [`OfferInput::parse`], for building seeds.
    #[allow(dead_code, reason = "used by the seed generator in tests only")]
    pub(crate) fn build(limit_index: u8, text: &[u8]) -> Vec<u8> {
        assert!(usize::from(limit_index) < OFFER_LIMITS.len());
        let mut out = vec![limit_index];
        out.extend_from_slice(text);
        out
    }
}

/// `offer_check`: the checks a WHIP/WHEP offer (`check_offer`) and a WHIP `PATCH` fragment
/// (`IceFragment::parse`) go through before the WebRTC stack sees them. An offer over the limit
/// is refused unparsed; under it the limit makes no difference. What `check_offer` accepts is SDP
/// (to the parser the bridge uses), has a live audio or video section offering a codec the
/// bridge forwards, and has well-formed simulcast (1 to 3 layers of valid, distinct rids); each
/// refusal is the one the parsed offer calls for. A fragment is refused over the limit, and the
/// credentials it accepts are well-formed ones it names.
pub(crate) fn offer_check(data: &[u8]) {
    let OfferInput { max_len, text } = OfferInput::parse(data);
    let sdp = text.as_str();
    let answer = check_offer(sdp, max_len);
    assert_eq!(
        format!("{:?}", check_offer(sdp, max_len)),
        format!("{answer:?}"),
        "checking twice gave two answers"
    );
    check_fragment(sdp, max_len);

    if sdp.len() > max_len {
        // Refused from the length alone: whatever the text, it is never parsed.
        assert!(
            matches!(answer, Err(WebRtcError::SdpTooLarge { len, max }) if len == sdp.len() && max == max_len),
            "{} bytes over a limit of {max_len}: {answer:?}",
            sdp.len()
        );
        assert!(matches!(
            simulcast_sections(sdp, max_len),
            Err(WebRtcError::SdpTooLarge { .. })
        ));
        return;
    }
    if max_len != usize::MAX {
        assert_eq!(
            format!("{:?}", check_offer(sdp, usize::MAX)),
            format!("{answer:?}"),
            "an offer within the limit is judged by the limit"
        );
    }

    match (
        answer,
        SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes())),
    ) {
        (Err(WebRtcError::MalformedSdp(reason)), Err(_)) => assert!(!reason.is_empty()),
        (Err(WebRtcError::MalformedSdp(reason)), Ok(parsed)) => {
            // Parsed, but its mids break RFC 5888: one empty, or two alike.
            let mut mids: Vec<&str> = parsed
                .media_descriptions
                .iter()
                .flat_map(|m| m.attributes.iter().filter(|a| a.key == "mid"))
                .map(|a| a.value.as_deref().unwrap_or(""))
                .collect();
            let empty = mids.iter().any(|m| m.is_empty());
            let count = mids.len();
            mids.sort_unstable();
            mids.dedup();
            assert!(
                empty || mids.len() < count,
                "refused as malformed ({reason}), yet the SDP parser takes it and its mids are fine"
            );
        }
        (answer, Err(e)) => panic!("answered {answer:?} for SDP that does not parse ({e})"),
        (answer, Ok(parsed)) => check_parsed_offer(sdp, max_len, &answer, &parsed),
    }
}

/// `check_offer`'s answer against what the parsed offer holds.
fn check_parsed_offer(
    sdp: &str,
    max_len: usize,
    answer: &Result<(), WebRtcError>,
    parsed: &SessionDescription,
) {
    let live: Vec<&MediaDescription> = parsed
        .media_descriptions
        .iter()
        .filter(|m| {
            matches!(m.media_name.media.as_str(), "audio" | "video") && m.media_name.port.value != 0
        })
        .collect();
    let mut offered: Vec<String> = live
        .iter()
        .flat_map(|m| m.codecs().into_values().map(|c| c.name))
        .collect();
    offered.sort();
    offered.dedup();
    let supported = offered.iter().any(|name| {
        SUPPORTED_CODECS
            .iter()
            .any(|s| s.eq_ignore_ascii_case(name))
    });
    let sections = simulcast_sections(sdp, max_len);

    match answer {
        Ok(()) => {
            assert!(
                supported,
                "accepted without a live section offering {SUPPORTED_CODECS:?}"
            );
            let sections = sections.expect("accepted with malformed simulcast");
            for section in &sections {
                assert!(
                    (1..=MAX_SIMULCAST_LAYERS).contains(&section.layers.len()),
                    "section {:?} has {} layers",
                    section.mid,
                    section.layers.len()
                );
                let rids: Vec<&str> = section
                    .layers
                    .iter()
                    .map(|l| l.rid.as_str())
                    .chain(section.ignored.iter().map(String::as_str))
                    .collect();
                for (i, rid) in rids.iter().enumerate() {
                    assert!(
                        (1..=MAX_RID_LEN).contains(&rid.len())
                            && rid
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                        "accepted rid {rid:?}"
                    );
                    assert!(!rids[..i].contains(rid), "rid {rid:?} used twice");
                }
                assert!(
                    parsed.media_descriptions.iter().any(|m| {
                        m.media_name.media == "video"
                            && m.attributes.iter().any(|a| {
                                a.key == "mid" && a.value.as_deref() == Some(section.mid.as_str())
                            })
                    }),
                    "simulcast section {:?} is no video section of the offer",
                    section.mid
                );
            }
        }
        Err(WebRtcError::BadSimulcast { .. }) => {
            assert_eq!(
                format!("{sections:?}"),
                format!("{answer:?}"),
                "the offer check and simulcast_sections disagree"
            );
        }
        Err(WebRtcError::NoMedia) => {
            assert!(sections.is_ok(), "simulcast is checked before media");
            assert!(
                live.is_empty(),
                "refused as without media, yet it has a live section"
            );
        }
        Err(WebRtcError::UnsupportedCodecs { offered: refused }) => {
            assert!(sections.is_ok(), "simulcast is checked before codecs");
            assert!(
                !live.is_empty(),
                "refused for its codecs, yet it has no live section"
            );
            assert!(
                !supported,
                "refused although it offers a codec the bridge forwards"
            );
            assert_eq!(
                refused, &offered,
                "the refusal lists other codecs than offered"
            );
        }
        Err(other) => panic!("check_offer answered {other:?}"),
    }
}

/// `IceFragment::parse` on the same text: refused over the limit; accepted credentials are
/// well-formed and are the ones its `a=ice-ufrag` and `a=ice-pwd` lines name.
fn check_fragment(text: &str, max_len: usize) {
    let fragment = IceFragment::parse(text, max_len);
    if text.len() > max_len {
        assert!(
            matches!(fragment, Err(WebRtcError::SdpTooLarge { .. })),
            "an over-limit fragment was parsed: {fragment:?}"
        );
        return;
    }
    let Ok(fragment) = fragment else {
        return;
    };
    assert!(fragment.candidates <= text.lines().count());
    if let Some(IceCredentials { ufrag, pwd }) = &fragment.credentials {
        assert_eq!(
            IceCredentials::new(ufrag, pwd).ok().as_ref(),
            fragment.credentials.as_ref(),
            "accepted malformed credentials"
        );
        let named = |prefix: &str, value: &str| {
            text.lines()
                .any(|l| l.trim_end().strip_prefix(prefix) == Some(value))
        };
        assert!(named("a=ice-ufrag:", ufrag) && named("a=ice-pwd:", pwd));
    }
}
