//! Keyframe detection from RTP payloads.
//!
//! The SFU starts a video subscription, and switches its simulcast layer, only at the first packet
//! of a keyframe of the wanted layer: a decoder can start there and nowhere else. Each function
//! looks at the first bytes of one RTP payload (after the RTP header, before padding) and answers
//! "does a keyframe start here?". Every read is bounds-checked; a payload too short to tell is not a
//! keyframe.

/// The payload formats whose keyframes the SFU can recognise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PayloadFormat {
    /// Audio of any codec: every packet is a valid starting point.
    Audio,
    /// VP8, RFC 7741.
    Vp8,
    /// VP9, RFC 9628.
    Vp9,
    /// H.264, RFC 6184 (single NAL unit, STAP-A and FU-A packets).
    H264,
    /// AV1, "RTP Payload Format For AV1" (AOMedia).
    Av1,
    /// A video codec the SFU does not parse: it never waits for a keyframe and never switches
    /// layers once forwarding started.
    UnknownVideo,
}

impl PayloadFormat {
    /// The format of a video codec by its SDP encoding name (case-insensitive).
    #[must_use]
    pub fn video(name: &str) -> Self {
        if name.eq_ignore_ascii_case("VP8") {
            Self::Vp8
        } else if name.eq_ignore_ascii_case("VP9") {
            Self::Vp9
        } else if name.eq_ignore_ascii_case("H264") {
            Self::H264
        } else if name.eq_ignore_ascii_case("AV1") {
            Self::Av1
        } else {
            Self::UnknownVideo
        }
    }

    /// Whether the SFU can tell keyframes of this format apart (and so can switch layers).
    #[must_use]
    pub fn detects_keyframes(self) -> bool {
        !matches!(self, Self::UnknownVideo)
    }

    /// Whether a keyframe (or, for audio, any packet) starts at this payload. Always `true` for
    /// [`Audio`](Self::Audio) and [`UnknownVideo`](Self::UnknownVideo).
    #[must_use]
    pub fn is_keyframe_start(self, payload: &[u8]) -> bool {
        match self {
            Self::Audio | Self::UnknownVideo => true,
            Self::Vp8 => vp8_keyframe_start(payload),
            Self::Vp9 => vp9_keyframe_start(payload),
            Self::H264 => h264_keyframe_start(payload),
            Self::Av1 => av1_keyframe_start(payload),
        }
    }
}

/// VP8 (RFC 7741 §4.2–4.3): a keyframe starts where the payload descriptor has S=1 and PID=0 and
/// the VP8 payload header that follows has P=0 ("P: Inverse key frame flag. When set to 0, the
/// current frame is a key frame").
#[must_use]
pub fn vp8_keyframe_start(payload: &[u8]) -> bool {
    let Some(&b0) = payload.first() else {
        return false;
    };
    let start_of_partition = b0 & 0x10 != 0;
    let partition_id = b0 & 0x07;
    if !start_of_partition || partition_id != 0 {
        return false;
    }
    let mut at = 1;
    if b0 & 0x80 != 0 {
        // X: the extension byte I L T K.
        let Some(&ext) = payload.get(at) else {
            return false;
        };
        at += 1;
        if ext & 0x80 != 0 {
            // I: PictureID, 7 bits, or 15 when its M bit is set.
            let Some(&pic) = payload.get(at) else {
                return false;
            };
            at += if pic & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            // L: TL0PICIDX.
            at += 1;
        }
        if ext & 0x30 != 0 {
            // T or K: TID/Y/KEYIDX share one byte.
            at += 1;
        }
    }
    payload.get(at).is_some_and(|&header| header & 0x01 == 0)
}

/// VP9 (RFC 9628 §4.2): a keyframe starts where the payload descriptor has P=0 ("not
/// inter-picture predicted") and B=1 (start of a frame) and, when layer indices are present, the
/// spatial id is 0 (the lowest spatial layer, where the picture starts).
#[must_use]
pub fn vp9_keyframe_start(payload: &[u8]) -> bool {
    let Some(&b0) = payload.first() else {
        return false;
    };
    let inter_predicted = b0 & 0x40 != 0;
    let start_of_frame = b0 & 0x08 != 0;
    if inter_predicted || !start_of_frame {
        return false;
    }
    if b0 & 0x20 == 0 {
        // No layer indices: a single spatial layer.
        return true;
    }
    let mut at = 1;
    if b0 & 0x80 != 0 {
        // I: picture id, 7 bits, or 15 with its M bit.
        let Some(&pic) = payload.get(at) else {
            return false;
        };
        at += if pic & 0x80 != 0 { 2 } else { 1 };
    }
    // L: TID(3) U(1) SID(3) D(1).
    payload
        .get(at)
        .is_some_and(|&layer| (layer >> 1) & 0x07 == 0)
}

/// H.264 NAL unit types (RFC 6184 Table 1 and H.264 Table 7-1) that start a decodable picture:
/// an IDR slice or the sequence parameter set that precedes one.
fn h264_starts_keyframe(nal_type: u8) -> bool {
    nal_type == 5 || nal_type == 7
}

/// H.264 (RFC 6184 §5): a keyframe starts at a single NAL unit of type 5 (IDR) or 7 (SPS), a
/// STAP-A (24) aggregating one of those, or an FU-A (28) whose S bit is set and whose original
/// type is one of those.
#[must_use]
pub fn h264_keyframe_start(payload: &[u8]) -> bool {
    let Some(&b0) = payload.first() else {
        return false;
    };
    match b0 & 0x1f {
        24 => {
            // STAP-A: [NAL HDR] then repeated [16-bit size][NAL unit].
            let mut at = 1;
            while at + 2 < payload.len() {
                let size = usize::from(u16::from_be_bytes([payload[at], payload[at + 1]]));
                at += 2;
                let Some(&nal) = payload.get(at) else {
                    return false;
                };
                if size == 0 {
                    return false;
                }
                if h264_starts_keyframe(nal & 0x1f) {
                    return true;
                }
                at += size;
            }
            false
        }
        28 => {
            // FU-A: [FU indicator][FU header: S E R Type].
            payload
                .get(1)
                .is_some_and(|&fu| fu & 0x80 != 0 && h264_starts_keyframe(fu & 0x1f))
        }
        nal_type => h264_starts_keyframe(nal_type),
    }
}

/// AV1 (AOMedia RTP payload format §4.4): the aggregation header's N bit "MUST be set to 1 if the
/// packet is the first packet of a coded video sequence", which starts with a keyframe.
#[must_use]
pub fn av1_keyframe_start(payload: &[u8]) -> bool {
    payload.first().is_some_and(|&b0| b0 & 0x08 != 0)
}
