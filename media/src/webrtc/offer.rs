//! Checks on an offer before a peer connection is spent on it.
//!
//! `rtc` would answer an offer whose sections it cannot use with every section rejected; the
//! bridge prefers to refuse such an offer outright with an error that says what the peer did.

use std::io::Cursor;

use rtc::sdp::description::session::SessionDescription;

use super::WebRtcError;

/// Encoding names the bridge forwards (the SFU core detects keyframes for the video ones),
/// compared case-insensitively as SDP `a=rtpmap` names are.
pub const SUPPORTED_CODECS: [&str; 5] = ["opus", "VP8", "VP9", "H264", "AV1"];

/// Parses `sdp` and checks that it has at least one live audio or video section offering a
/// supported codec, and that its simulcast sections are well formed. The length is checked
/// first, so an oversized offer is never parsed.
pub(crate) fn validate_offer(sdp: &str, max_len: usize) -> Result<(), WebRtcError> {
    if sdp.len() > max_len {
        return Err(WebRtcError::SdpTooLarge {
            len: sdp.len(),
            max: max_len,
        });
    }
    let parsed = SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes()))
        .map_err(|err| WebRtcError::MalformedSdp(err.to_string()))?;
    // RFC 5888: a mid is non-empty and names one section (the bridge maps sections by it).
    let mut mids: Vec<&str> = Vec::new();
    for media in &parsed.media_descriptions {
        for attribute in media.attributes.iter().filter(|a| a.key == "mid") {
            let mid = attribute.value.as_deref().unwrap_or("");
            if mid.is_empty() {
                return Err(WebRtcError::MalformedSdp("an a=mid without a value".into()));
            }
            if mids.contains(&mid) {
                return Err(WebRtcError::MalformedSdp(format!(
                    "more than one a=mid:{mid}"
                )));
            }
            mids.push(mid);
        }
    }
    super::simulcast::sections_of(&parsed)?;
    let mut offered = Vec::new();
    let mut has_media = false;
    for media in &parsed.media_descriptions {
        let kind = media.media_name.media.as_str();
        if !(kind == "audio" || kind == "video") || media.media_name.port.value == 0 {
            continue;
        }
        has_media = true;
        for codec in media.codecs().into_values() {
            if SUPPORTED_CODECS
                .iter()
                .any(|name| name.eq_ignore_ascii_case(&codec.name))
            {
                return Ok(());
            }
            if !offered.contains(&codec.name) {
                offered.push(codec.name);
            }
        }
    }
    if !has_media {
        return Err(WebRtcError::NoMedia);
    }
    offered.sort();
    Err(WebRtcError::UnsupportedCodecs { offered })
}

/// What the first bytes of a datagram say about it, for routing (RFC 7983 §7: a first byte in
/// 0..=3 is STUN).
#[derive(Debug, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// Not STUN (DTLS, SRTP or SRTCP): routed by source address only.
    NotStun,
    /// A STUN Binding request whose USERNAME's first half (the server ufrag, RFC 8445 §7.2.2) is
    /// this.
    BindingRequest {
        /// The USERNAME's bytes before its first `:`; never empty.
        server_ufrag: &'a str,
    },
    /// STUN that cannot start a route: not a Binding request, or one without a usable USERNAME.
    OtherStun,
}

const STUN_HEADER_LEN: usize = 20;
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const BINDING_REQUEST: [u8; 2] = [0x00, 0x01];
const ATTR_USERNAME: u16 = 0x0006;

/// Classifies a datagram and, for a Binding request, finds the server ufrag in its USERNAME.
/// Bounded by the datagram: every attribute length is checked against what remains, and nothing
/// past the message length the STUN header declares is read.
pub fn classify(bytes: &[u8]) -> Datagram<'_> {
    match bytes.first() {
        Some(0..=3) => {}
        _ => return Datagram::NotStun,
    }
    if bytes.len() < STUN_HEADER_LEN
        || bytes[4..8] != MAGIC_COOKIE
        || bytes[0..2] != BINDING_REQUEST
    {
        return Datagram::OtherStun;
    }
    let declared = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
    let end = (STUN_HEADER_LEN + declared).min(bytes.len());
    let mut at = STUN_HEADER_LEN;
    while at + 4 <= end {
        let kind = u16::from_be_bytes([bytes[at], bytes[at + 1]]);
        let len = usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]));
        let value_start = at + 4;
        if value_start + len > end {
            return Datagram::OtherStun;
        }
        if kind == ATTR_USERNAME {
            let Ok(username) = std::str::from_utf8(&bytes[value_start..value_start + len]) else {
                return Datagram::OtherStun;
            };
            return match username.split_once(':') {
                Some((server_ufrag, _client)) if !server_ufrag.is_empty() => {
                    Datagram::BindingRequest { server_ufrag }
                }
                _ => Datagram::OtherStun,
            };
        }
        // Attributes are padded to a multiple of four bytes (RFC 8489 §14).
        at = value_start + len.div_ceil(4) * 4;
    }
    Datagram::OtherStun
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding_request(username: &[u8]) -> Vec<u8> {
        let padded = username.len().div_ceil(4) * 4;
        let mut out = vec![0x00, 0x01];
        out.extend_from_slice(&u16::try_from(4 + padded).unwrap().to_be_bytes());
        out.extend_from_slice(&MAGIC_COOKIE);
        out.extend_from_slice(&[7; 12]);
        out.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        out.extend_from_slice(&u16::try_from(username.len()).unwrap().to_be_bytes());
        out.extend_from_slice(username);
        out.resize(STUN_HEADER_LEN + 4 + padded, 0);
        out
    }

    #[test]
    fn finds_the_server_ufrag() {
        let packet = binding_request(b"srvr:clnt");
        assert_eq!(
            classify(&packet),
            Datagram::BindingRequest {
                server_ufrag: "srvr"
            }
        );
    }

    fn offer_with_mids(mids: &[&str]) -> String {
        let mut sdp = String::from("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n");
        for mid in mids {
            sdp.push_str(&format!(
                "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:{mid}\r\na=rtpmap:111 opus/48000/2\r\n"
            ));
        }
        sdp
    }

    #[test]
    fn an_empty_or_repeated_mid_is_malformed() {
        assert!(validate_offer(&offer_with_mids(&["0", "1"]), 64 * 1024).is_ok());
        for mids in [&["0", "0"][..], &[""][..], &["0", ""][..]] {
            assert!(
                matches!(
                    validate_offer(&offer_with_mids(mids), 64 * 1024),
                    Err(WebRtcError::MalformedSdp(_))
                ),
                "mids {mids:?}"
            );
        }
    }

    proptest::proptest! {
        /// Whatever arrives on the shared socket, routing it never panics and a route is found
        /// only for a Binding request that names a ufrag.
        #[test]
        fn classify_takes_any_datagram(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            if let Datagram::BindingRequest { server_ufrag } = classify(&bytes) {
                proptest::prop_assert!(!server_ufrag.is_empty());
                proptest::prop_assert_eq!(&bytes[0..2], &BINDING_REQUEST[..]);
            }
        }

        /// Whatever a signaling request carries, the offer check answers with a typed result.
        #[test]
        fn validate_offer_takes_any_text(text in "(v=0\r\n)?([a-z]=[ -~]{0,40}\r\n){0,20}") {
            let _ = validate_offer(&text, 64 * 1024);
            let _ = validate_offer(&text, 8);
        }

        /// Media sections with arbitrary fields and codec lines.
        #[test]
        fn validate_offer_takes_any_media_section(
            media in "(audio|video|application|[a-z]{0,6})",
            port in "[0-9/]{0,8}",
            formats in "[0-9a-z ]{0,20}",
            attributes in proptest::collection::vec(
                "a=(rtpmap|fmtp|rtcp-fb|mid|rid|simulcast|ssrc|extmap):[ -~]{0,30}",
                0..8,
            ),
        ) {
            let mut sdp = String::from("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n");
            sdp.push_str(&format!("m={media} {port} UDP/TLS/RTP/SAVPF {formats}\r\n"));
            for attribute in &attributes {
                sdp.push_str(attribute);
                sdp.push_str("\r\n");
            }
            let _ = validate_offer(&sdp, 64 * 1024);
        }
    }

    #[test]
    fn truncated_or_foreign_datagrams_are_not_routed() {
        let packet = binding_request(b"srvr:clnt");
        assert_eq!(classify(&packet[..22]), Datagram::OtherStun);
        assert_eq!(classify(&binding_request(b"nocolon")), Datagram::OtherStun);
        assert_eq!(classify(&[0x80, 96, 0, 1]), Datagram::NotStun);
        assert_eq!(classify(&[22, 254, 253]), Datagram::NotStun);
        assert_eq!(classify(&[]), Datagram::NotStun);
    }
}
