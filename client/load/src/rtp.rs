//! Synthetic RTP for the load generator: Opus-like audio and VP8-like video whose payload carries
//! a stamp (stream, sequence number, send time) that the receivers in the same process read back.
//!
//! The gateway rewrites the RTP header (sequence number, timestamp, SSRC) but never the payload,
//! so the stamp is in the payload: at offset 0 for audio, at offset 2 for video (after the VP8
//! payload descriptor byte and the VP8 header byte, RFC 7741 §4.2–4.3, so that the gateway's
//! keyframe detection sees a real keyframe start).

use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};

/// Marks a stamped payload.
pub const MAGIC: [u8; 4] = *b"SLD1";
/// Bytes of the stamp.
pub const STAMP_LEN: usize = 20;
/// Payload type of the synthetic audio.
pub const AUDIO_PT: u8 = 111;
/// Payload type of the synthetic video.
pub const VIDEO_PT: u8 = 96;

/// What a receiver reads from a stamped packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The load generator's index of the published track.
    pub stream: u32,
    /// The packet's number on that stream, from 0, never rewritten.
    pub seq: u32,
    /// When it was sent, µs since the run's base instant.
    pub sent_us: u64,
}

impl Stamp {
    fn write(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&MAGIC);
        out[4..8].copy_from_slice(&self.stream.to_be_bytes());
        out[8..12].copy_from_slice(&self.seq.to_be_bytes());
        out[12..20].copy_from_slice(&self.sent_us.to_be_bytes());
    }

    fn read(at: &[u8]) -> Option<Stamp> {
        if at.len() < STAMP_LEN || at[..4] != MAGIC {
            return None;
        }
        Some(Stamp {
            stream: u32::from_be_bytes(at[4..8].try_into().ok()?),
            seq: u32::from_be_bytes(at[8..12].try_into().ok()?),
            sent_us: u64::from_be_bytes(at[12..20].try_into().ok()?),
        })
    }

    /// The stamp of a received RTP packet (its header length read from the packet: CSRCs and
    /// the extension are skipped); `None` if it carries none.
    pub fn parse_rtp(rtp: &[u8]) -> Option<Stamp> {
        let payload = payload(rtp)?;
        Stamp::read(payload).or_else(|| Stamp::read(payload.get(2..)?))
    }
}

/// The payload of an RTP packet (after CSRCs and the header extension); `None` if it is
/// shorter than its header says.
pub fn payload(rtp: &[u8]) -> Option<&[u8]> {
    let b0 = *rtp.first()?;
    let mut at = 12 + 4 * usize::from(b0 & 0x0f);
    if b0 & 0x10 != 0 {
        let words = u16::from_be_bytes([*rtp.get(at + 2)?, *rtp.get(at + 3)?]);
        at += 4 + 4 * usize::from(words);
    }
    rtp.get(at..)
}

/// Whether a VP8 RTP packet starts a keyframe: the payload descriptor's S bit set with partition
/// index 0, and the P bit of the VP8 payload header clear ("P: Inverse key frame flag. When set
/// to 0, the current frame is a key frame", RFC 7741 §4.3).
pub fn vp8_keyframe_start(rtp: &[u8]) -> bool {
    let Some(payload) = payload(rtp) else {
        return false;
    };
    let Some(&descriptor) = payload.first() else {
        return false;
    };
    if descriptor & 0x10 == 0 || descriptor & 0x07 != 0 {
        return false;
    }
    // RFC 7741 §4.2: X, then I (with M: a 15-bit picture id), L, and T or K.
    let mut at = 1;
    if descriptor & 0x80 != 0 {
        let Some(&extension) = payload.get(1) else {
            return false;
        };
        at = 2;
        if extension & 0x80 != 0 {
            at += match payload.get(at) {
                Some(id) if id & 0x80 != 0 => 2,
                Some(_) => 1,
                None => return false,
            };
        }
        if extension & 0x40 != 0 {
            at += 1;
        }
        if extension & 0x30 != 0 {
            at += 1;
        }
    }
    payload.get(at).is_some_and(|header| header & 0x01 == 0)
}

fn rtp_header(out: &mut Vec<u8>, pt: u8, marker: bool, seq: u16, timestamp: u32, ssrc: u32) {
    out.push(0x80);
    out.push(pt | if marker { 0x80 } else { 0 });
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&timestamp.to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
}

/// An Opus-like stream: one packet of `payload_bytes` every `1 / rate` s, 48 kHz clock.
#[derive(Debug)]
pub struct AudioSource {
    stream: u32,
    payload_bytes: usize,
    step: u32,
    rtp_seq: u16,
    timestamp: u32,
    seq: u32,
}

impl AudioSource {
    /// A stream with the load generator's index `stream`.
    pub fn new(stream: u32, packets_per_second: u32, payload_bytes: usize) -> Self {
        Self {
            stream,
            payload_bytes: payload_bytes.max(STAMP_LEN),
            step: 48_000 / packets_per_second.max(1),
            rtp_seq: 1,
            timestamp: 0,
            seq: 0,
        }
    }

    /// The next packet, stamped with `sent_us`.
    pub fn next_packet(&mut self, sent_us: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + self.payload_bytes);
        rtp_header(
            &mut out,
            AUDIO_PT,
            false,
            self.rtp_seq,
            self.timestamp,
            0x5374_0000 | self.stream,
        );
        let at = out.len();
        out.resize(at + self.payload_bytes, 0x5a);
        Stamp {
            stream: self.stream,
            seq: self.seq,
            sent_us,
        }
        .write(&mut out[at..]);
        self.rtp_seq = self.rtp_seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(self.step);
        self.seq += 1;
        out
    }

    /// Packets sent so far.
    pub fn sent(&self) -> u32 {
        self.seq
    }
}

/// A VP8-like stream: frames at `fps`, sized to average `bitrate`, a keyframe every
/// `keyframe_interval` (or when asked), each frame split into packets of at most
/// `max_payload` bytes (full packets, then the rest), the marker bit on a frame's last packet.
#[derive(Debug)]
pub struct VideoSource {
    stream: u32,
    delta_bytes: f64,
    keyframe_bytes: usize,
    frames_per_keyframe: u64,
    max_payload: usize,
    frame: u64,
    force_keyframe: bool,
    rtp_seq: u16,
    timestamp: u32,
    step: u32,
    seq: u32,
    rng: SmallRng,
}

impl VideoSource {
    /// A stream with the load generator's index `stream`; `seed` makes frame sizes repeatable.
    pub fn new(stream: u32, video: &super::scenario::Video, seed: u64) -> Self {
        let fps = video.fps.max(1);
        let frame_bytes = f64::from(video.bitrate) / 8.0 / f64::from(fps);
        let gop = (video.keyframe_interval_seconds * f64::from(fps))
            .round()
            .max(1.0);
        // gop · average = keyframe + (gop − 1) · delta, keyframe = ratio · delta.
        let delta = gop * frame_bytes / (video.keyframe_ratio + gop - 1.0);
        Self {
            stream,
            delta_bytes: delta,
            keyframe_bytes: (delta * video.keyframe_ratio) as usize,
            frames_per_keyframe: gop as u64,
            max_payload: video.max_payload_bytes,
            frame: 0,
            force_keyframe: false,
            rtp_seq: 1,
            timestamp: 0,
            step: 90_000 / fps,
            seq: 0,
            rng: SmallRng::seed_from_u64(seed ^ u64::from(stream)),
        }
    }

    /// Makes the next frame a keyframe (the gateway asked for one).
    pub fn request_keyframe(&mut self) {
        self.force_keyframe = true;
    }

    /// The next frame's packets, each stamped with `sent_us`.
    pub fn next_frame(&mut self, sent_us: u64) -> Vec<Vec<u8>> {
        let keyframe = self.force_keyframe || self.frame.is_multiple_of(self.frames_per_keyframe);
        self.force_keyframe = false;
        self.frame += 1;
        let size = if keyframe {
            self.keyframe_bytes
        } else {
            // ±25 % around the average delta frame.
            (self.delta_bytes * self.rng.random_range(0.75..1.25)) as usize
        };
        let chunk = self.max_payload;
        let mut left = size.max(STAMP_LEN + 2);
        let mut packets = Vec::with_capacity(left.div_ceil(chunk));
        let mut first = true;
        while left > 0 {
            let payload = left.min(chunk).max(STAMP_LEN + 2);
            left = left.saturating_sub(payload);
            let mut out = Vec::with_capacity(12 + payload);
            rtp_header(
                &mut out,
                VIDEO_PT,
                left == 0,
                self.rtp_seq,
                self.timestamp,
                0x5376_0000 | self.stream,
            );
            // VP8 payload descriptor: S=1, PID=0 on the frame's first packet; then the VP8
            // header's first byte (P=0: keyframe) or, on later packets, a filler byte.
            out.push(if first { 0x10 } else { 0x00 });
            out.push(if first && keyframe { 0x00 } else { 0x01 });
            let at = out.len();
            out.resize(12 + payload, 0x5a);
            Stamp {
                stream: self.stream,
                seq: self.seq,
                sent_us,
            }
            .write(&mut out[at..]);
            self.rtp_seq = self.rtp_seq.wrapping_add(1);
            self.seq += 1;
            first = false;
            packets.push(out);
        }
        self.timestamp = self.timestamp.wrapping_add(self.step);
        packets
    }

    /// Packets sent so far.
    pub fn sent(&self) -> u32 {
        self.seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Video;

    fn video() -> Video {
        Video {
            bitrate: 1_500_000,
            fps: 30,
            keyframe_interval_seconds: 2.0,
            keyframe_ratio: 5.0,
            max_payload_bytes: 1100,
        }
    }

    #[test]
    fn video_averages_its_bitrate_and_starts_with_a_vp8_keyframe() {
        let mut source = VideoSource::new(3, &video(), 7);
        let mut bytes = 0;
        for frame in 0..300 {
            let packets = source.next_frame(frame);
            if frame == 0 {
                // Payload descriptor S=1 PID=0, then P=0.
                assert_eq!(&packets[0][12..14], &[0x10, 0x00]);
            }
            // A keyframe every 2 s at 30 frames/s: frames 0, 60, 120, …; only its first packet
            // starts it.
            assert_eq!(vp8_keyframe_start(&packets[0]), frame % 60 == 0, "{frame}");
            assert!(packets[1..].iter().all(|p| !vp8_keyframe_start(p)));
            assert!(
                packets.last().unwrap()[1] & 0x80 != 0,
                "marker on the last packet"
            );
            for p in &packets {
                assert!(p.len() <= 12 + 1100);
                assert_eq!(Stamp::parse_rtp(p).unwrap().stream, 3);
                bytes += p.len() - 14;
            }
        }
        let bitrate = bytes as f64 * 8.0 / 10.0;
        assert!((bitrate / 1_500_000.0 - 1.0).abs() < 0.05, "{bitrate}");
    }

    #[test]
    fn a_keyframe_start_is_found_behind_a_descriptor_extension() {
        let header = [0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1];
        let with = |payload: &[u8]| [&header[..], payload].concat();
        // X=1 with I (a 15-bit picture id), L and T: 1 + 1 + 2 + 1 + 1 bytes, then P=0.
        assert!(vp8_keyframe_start(&with(&[
            0x90, 0xe0, 0x81, 0x02, 0x03, 0x04, 0x00
        ])));
        assert!(!vp8_keyframe_start(&with(&[
            0x90, 0xe0, 0x81, 0x02, 0x03, 0x04, 0x01
        ])));
        // Not the start of a partition, or partition 1.
        assert!(!vp8_keyframe_start(&with(&[0x00, 0x00])));
        assert!(!vp8_keyframe_start(&with(&[0x11, 0x00])));
        assert!(!vp8_keyframe_start(&with(&[0x90])));
    }

    #[test]
    fn audio_stamps_read_back() {
        let mut source = AudioSource::new(9, 50, 120);
        source.next_packet(1);
        let p = source.next_packet(42);
        assert_eq!(p.len(), 132);
        assert_eq!(
            Stamp::parse_rtp(&p),
            Some(Stamp {
                stream: 9,
                seq: 1,
                sent_us: 42
            })
        );
    }
}
