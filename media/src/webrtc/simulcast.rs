//! Simulcast from a publisher: the layers of each media section, read from its offer.
//!
//! A publisher that sends simulcast describes it in its offer (RFC 8853, RFC 8851): each
//! simulcast section has `a=simulcast:send <rid>;<rid>;…` and one `a=rid:<rid> send [restrictions]`
//! per layer, and each layer's RTP carries the `sdes:mid` and `sdes:rtp-stream-id` header
//! extensions (which `rtc` uses to bind a layer's SSRC to its rid). The bridge makes one SFU track
//! of such a section, with one layer per rid.
//!
//! Rules, checked before a peer connection is spent on the offer:
//!
//! - The rids of `a=simulcast:send` are taken as the layers **lowest first** (browsers list the
//!   encodings in the order the application gave them to `addTransceiver`, so an application
//!   gives them lowest first). At most [`MAX_SIMULCAST_LAYERS`] are used; the rest are
//!   answered (`rtc` accepts them) but not forwarded: they are listed in
//!   [`SimulcastSection::ignored`] and their packets are dropped and counted by the bridge.
//! - `max-br` (bits per second), `max-width` and `max-height` restrictions of an `a=rid` line
//!   become the layer's bitrate and size; other restrictions are ignored.
//! - A malformed section is refused with [`WebRtcError::BadSimulcast`]: an `a=simulcast` line
//!   that does not parse (unknown direction, a direction given twice, an empty or duplicate rid,
//!   a rid that is not 1 to [`MAX_RID_LEN`] letters, digits, `-` or `_`), alternatives
//!   (`a=simulcast:send q,h` — no browser sends them), a send rid without its `a=rid:<rid> send`
//!   line, an `a=rid` line or restriction value that does not parse, more than one
//!   `a=simulcast` line, simulcast on an audio section, or a simulcast section without `a=mid`.

use rtc::sdp::description::media::MediaDescription;
use rtc::sdp::description::session::SessionDescription;

use super::WebRtcError;

/// Most layers a simulcast section is published with (the SFU core's limit).
pub const MAX_SIMULCAST_LAYERS: usize = crate::sfu::MAX_LAYERS;

/// Longest rid accepted: what the one-byte form of the RTP header extension can carry.
pub const MAX_RID_LEN: usize = 16;

/// One simulcast layer as the offer describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RidLayer {
    /// The RTP stream id (`a=rid`), which its packets carry in the `sdes:rtp-stream-id`
    /// extension.
    pub rid: String,
    /// `max-br` in bits per second; 0 when not given.
    pub max_bitrate: u32,
    /// `max-width` in pixels; 0 when not given.
    pub width: u16,
    /// `max-height` in pixels; 0 when not given.
    pub height: u16,
    /// Offered paused (`~rid`): it may start later.
    pub paused: bool,
}

/// A media section that sends simulcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulcastSection {
    /// The section's `a=mid`.
    pub mid: String,
    /// The layers used, lowest first (1 to [`MAX_SIMULCAST_LAYERS`]).
    pub layers: Vec<RidLayer>,
    /// Send rids beyond the limit, in offer order: answered but not forwarded.
    pub ignored: Vec<String>,
}

/// The simulcast sections of an offer (see the [module docs](self) for the rules). Sections that
/// do not send simulcast are not listed. The length is checked first, as for
/// [`check_offer`](super::check_offer).
pub fn simulcast_sections(
    offer_sdp: &str,
    max_len: usize,
) -> Result<Vec<SimulcastSection>, WebRtcError> {
    if offer_sdp.len() > max_len {
        return Err(WebRtcError::SdpTooLarge {
            len: offer_sdp.len(),
            max: max_len,
        });
    }
    let parsed = SessionDescription::unmarshal(&mut std::io::Cursor::new(offer_sdp.as_bytes()))
        .map_err(|err| WebRtcError::MalformedSdp(err.to_string()))?;
    sections_of(&parsed)
}

/// [`simulcast_sections`] of an offer already parsed.
pub(crate) fn sections_of(
    parsed: &SessionDescription,
) -> Result<Vec<SimulcastSection>, WebRtcError> {
    let mut sections = Vec::new();
    for media in &parsed.media_descriptions {
        if media.media_name.port.value == 0 {
            continue;
        }
        if let Some(section) = section_of(media)? {
            sections.push(section);
        }
    }
    Ok(sections)
}

fn bad(mid: Option<&str>, reason: impl Into<String>) -> WebRtcError {
    WebRtcError::BadSimulcast {
        mid: mid.unwrap_or("").to_owned(),
        reason: reason.into(),
    }
}

/// The simulcast layers one section sends, if it sends simulcast.
fn section_of(media: &MediaDescription) -> Result<Option<SimulcastSection>, WebRtcError> {
    let mid = media
        .attributes
        .iter()
        .find(|a| a.key == "mid")
        .and_then(|a| a.value.as_deref());
    let mut simulcast = None;
    for attribute in media.attributes.iter().filter(|a| a.key == "simulcast") {
        if simulcast.is_some() {
            return Err(bad(mid, "more than one a=simulcast line"));
        }
        simulcast = Some(attribute.value.as_deref().unwrap_or(""));
    }
    let Some(simulcast) = simulcast else {
        return Ok(None);
    };
    let send = parse_simulcast(simulcast).map_err(|reason| bad(mid, reason))?;
    if send.is_empty() {
        // Receive-only simulcast concerns what the bridge would send; nothing to publish.
        return Ok(None);
    }
    let Some(mid) = mid else {
        return Err(bad(None, "a simulcast section needs a=mid"));
    };
    if media.media_name.media != "video" {
        return Err(bad(Some(mid), "simulcast is for video sections only"));
    }
    let mut declared = Vec::new();
    for attribute in media.attributes.iter().filter(|a| a.key == "rid") {
        let line = attribute.value.as_deref().unwrap_or("");
        let (rid, layer) = parse_rid(line).map_err(|reason| bad(Some(mid), reason))?;
        if let Some(layer) = layer {
            declared.push((rid, layer));
        }
    }
    let mut layers = Vec::new();
    let mut ignored = Vec::new();
    for (rid, paused) in send {
        let Some((_, layer)) = declared.iter().find(|(id, _)| *id == rid) else {
            return Err(bad(
                Some(mid),
                format!("send rid {rid:?} has no a=rid:{rid} send line"),
            ));
        };
        if layers.len() < MAX_SIMULCAST_LAYERS {
            layers.push(RidLayer {
                rid: rid.to_owned(),
                paused,
                ..layer.clone()
            });
        } else {
            ignored.push(rid.to_owned());
        }
    }
    Ok(Some(SimulcastSection {
        mid: mid.to_owned(),
        layers,
        ignored,
    }))
}

/// The send streams of an `a=simulcast` value (`send <list> [recv <list>]`, either order), in
/// order, each with whether it is paused. Empty when there is no send list.
fn parse_simulcast(value: &str) -> Result<Vec<(&str, bool)>, String> {
    let mut tokens = value.split_ascii_whitespace();
    let mut send = None;
    let mut recv = false;
    while let Some(direction) = tokens.next() {
        let Some(list) = tokens.next() else {
            return Err(format!(
                "a=simulcast direction {direction:?} has no rid list"
            ));
        };
        let streams = parse_stream_list(list)?;
        match direction {
            "send" if send.is_none() => send = Some(streams),
            "recv" if !recv => recv = true,
            "send" | "recv" => return Err(format!("a=simulcast gives {direction} twice")),
            other => return Err(format!("unknown a=simulcast direction {other:?}")),
        }
    }
    if send.is_none() && !recv {
        return Err("empty a=simulcast line".into());
    }
    Ok(send.unwrap_or_default())
}

fn parse_stream_list(list: &str) -> Result<Vec<(&str, bool)>, String> {
    let mut streams: Vec<(&str, bool)> = Vec::new();
    for stream in list.split(';') {
        if stream.contains(',') {
            return Err(format!("rid alternatives ({stream:?}) are not supported"));
        }
        let (rid, paused) = match stream.strip_prefix('~') {
            Some(rid) => (rid, true),
            None => (stream, false),
        };
        check_rid(rid)?;
        if streams.iter().any(|(id, _)| *id == rid) {
            return Err(format!("rid {rid:?} listed twice"));
        }
        streams.push((rid, paused));
    }
    Ok(streams)
}

fn check_rid(rid: &str) -> Result<(), String> {
    let valid = !rid.is_empty()
        && rid.len() <= MAX_RID_LEN
        && rid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "rid {rid:?} is not 1 to {MAX_RID_LEN} letters, digits, '-' or '_'"
        ))
    }
}

/// An `a=rid` value (`<rid> <send|recv> [restrictions]`): its rid and, for a send rid, the layer
/// its restrictions describe.
fn parse_rid(line: &str) -> Result<(&str, Option<RidLayer>), String> {
    let mut fields = line.split_ascii_whitespace();
    let rid = fields.next().unwrap_or("");
    check_rid(rid)?;
    let direction = fields.next().unwrap_or("");
    let restrictions = fields.next().unwrap_or("");
    if fields.next().is_some() {
        return Err(format!("a=rid:{rid} has extra fields"));
    }
    match direction {
        "send" => {}
        "recv" => return Ok((rid, None)),
        other => return Err(format!("a=rid:{rid} has direction {other:?}")),
    }
    let mut layer = RidLayer {
        rid: rid.to_owned(),
        max_bitrate: 0,
        width: 0,
        height: 0,
        paused: false,
    };
    for restriction in restrictions.split(';').filter(|r| !r.is_empty()) {
        let (key, value) = restriction.split_once('=').unwrap_or((restriction, ""));
        let number = || {
            value
                .parse::<u32>()
                .map_err(|_| format!("a=rid:{rid} {key}={value:?} is not a number"))
        };
        let pixels = || {
            value
                .parse::<u16>()
                .map_err(|_| format!("a=rid:{rid} {key}={value:?} is not a size in pixels"))
        };
        match key {
            "max-br" => layer.max_bitrate = number()?,
            "max-width" => layer.width = pixels()?,
            "max-height" => layer.height = pixels()?,
            _ => {}
        }
    }
    Ok((rid, Some(layer)))
}

/// Whether a header extension names the stream (`sdes:mid`, `sdes:rtp-stream-id`,
/// `sdes:repaired-rtp-stream-id`): its value belongs to the leg it arrived on and means
/// something else, or nothing, on another leg.
pub(crate) fn is_stream_identity(uri: &str) -> bool {
    matches!(
        uri,
        "urn:ietf:params:rtp-hdrext:sdes:mid"
            | "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
            | "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(video: &str) -> String {
        format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=rtpmap:96 VP8/90000\r\n{video}"
        )
    }

    fn sections(video: &str) -> Result<Vec<SimulcastSection>, WebRtcError> {
        simulcast_sections(&offer(video), 64 * 1024)
    }

    fn reason(video: &str) -> String {
        match sections(video) {
            Err(WebRtcError::BadSimulcast { reason, .. }) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn layers_follow_the_simulcast_order_with_their_restrictions() {
        let found = sections(
            "a=rid:f send max-width=1280;max-height=720;max-br=2500000\r\n\
             a=rid:q send pt=96;max-br=150000\r\na=rid:h send\r\n\
             a=simulcast:send q;h;~f\r\n",
        )
        .unwrap();
        assert_eq!(found.len(), 1);
        let section = &found[0];
        assert_eq!(section.mid, "1");
        assert!(section.ignored.is_empty());
        let rids: Vec<&str> = section.layers.iter().map(|l| l.rid.as_str()).collect();
        assert_eq!(rids, ["q", "h", "f"]);
        assert_eq!(section.layers[0].max_bitrate, 150_000);
        assert_eq!(section.layers[1].max_bitrate, 0);
        assert_eq!(
            section.layers[2],
            RidLayer {
                rid: "f".into(),
                max_bitrate: 2_500_000,
                width: 1280,
                height: 720,
                paused: true,
            }
        );
    }

    #[test]
    fn rids_beyond_three_are_ignored_and_listed() {
        let found = sections(
            "a=rid:a send\r\na=rid:b send\r\na=rid:c send\r\na=rid:d send\r\na=rid:e send\r\n\
             a=simulcast:send a;b;c;d;e\r\n",
        )
        .unwrap();
        let rids: Vec<&str> = found[0].layers.iter().map(|l| l.rid.as_str()).collect();
        assert_eq!(rids, ["a", "b", "c"]);
        assert_eq!(found[0].ignored, ["d", "e"]);
    }

    #[test]
    fn sections_without_send_simulcast_are_not_listed() {
        assert!(sections("").unwrap().is_empty());
        assert!(sections("a=rid:q send\r\n").unwrap().is_empty());
        assert!(
            sections("a=rid:q recv\r\na=rid:h recv\r\na=simulcast:recv q;h\r\n")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn malformed_simulcast_is_refused_with_a_reason() {
        let cases = [
            ("a=simulcast:send\r\n", "no rid list"),
            ("a=simulcast:\r\n", "empty"),
            (
                "a=rid:q send\r\na=simulcast:sideways q\r\n",
                "unknown a=simulcast direction",
            ),
            ("a=rid:q send\r\na=simulcast:send q send q\r\n", "twice"),
            ("a=rid:q send\r\na=simulcast:send q;q\r\n", "listed twice"),
            ("a=rid:q send\r\na=simulcast:send q;\r\n", "is not 1 to"),
            ("a=rid:q send\r\na=simulcast:send q,h\r\n", "alternatives"),
            (
                "a=rid:q send\r\na=simulcast:send q;h\r\n",
                "has no a=rid:h send",
            ),
            (
                "a=rid:q recv\r\na=simulcast:send q\r\n",
                "has no a=rid:q send",
            ),
            (
                "a=rid:q send\r\na=simulcast:send q;h\u{e9}\r\n",
                "is not 1 to",
            ),
            (
                "a=rid:q send\r\na=simulcast:send qqqqqqqqqqqqqqqqq\r\n",
                "is not 1 to",
            ),
            ("a=rid:q sideways\r\na=simulcast:send q\r\n", "direction"),
            (
                "a=rid:q send max-br=fast\r\na=simulcast:send q\r\n",
                "not a number",
            ),
            (
                "a=rid:q send max-width=99999\r\na=simulcast:send q\r\n",
                "pixels",
            ),
            (
                "a=rid:q send\r\na=simulcast:send q\r\na=simulcast:send q\r\n",
                "more than one",
            ),
        ];
        for (lines, expected) in cases {
            let got = reason(lines);
            assert!(got.contains(expected), "{lines:?}: {got:?}");
        }
    }

    #[test]
    fn simulcast_needs_a_mid_and_a_video_section() {
        let no_mid = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
                      m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n\
                      a=rid:q send\r\na=simulcast:send q\r\n";
        assert!(matches!(
            simulcast_sections(no_mid, 4096),
            Err(WebRtcError::BadSimulcast { .. })
        ));
        let audio = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
                     m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
                     a=rtpmap:111 opus/48000/2\r\na=rid:q send\r\na=simulcast:send q\r\n";
        let err = simulcast_sections(audio, 4096).unwrap_err();
        assert!(err.to_string().contains("video sections only"), "{err}");
    }

    #[test]
    fn an_oversized_offer_is_not_parsed() {
        assert!(matches!(
            simulcast_sections(&offer(""), 10),
            Err(WebRtcError::SdpTooLarge { .. })
        ));
    }

    proptest::proptest! {
        /// Whatever the simulcast and rid lines say, the answer is a typed result and never
        /// more than three layers.
        #[test]
        fn any_simulcast_lines_give_a_typed_answer(
            simulcast in "[a-z~;, 0-9_-]{0,40}",
            rids in proptest::collection::vec("[a-z0-9~]{0,4} (send|recv|[a-z]{0,4})( [a-z=;0-9-]{0,30})?", 0..6),
        ) {
            let mut video = String::new();
            for rid in &rids {
                video.push_str(&format!("a=rid:{rid}\r\n"));
            }
            video.push_str(&format!("a=simulcast:{simulcast}\r\n"));
            if let Ok(found) = sections(&video) {
                for section in found {
                    proptest::prop_assert!(!section.layers.is_empty());
                    proptest::prop_assert!(section.layers.len() <= MAX_SIMULCAST_LAYERS);
                }
            }
        }
    }
}
