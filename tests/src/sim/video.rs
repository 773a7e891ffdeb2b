//! A simulcast publisher in virtual time: VP8-like video layers and Opus-like audio as RTP.
//!
//! Each layer is its own RTP stream (SSRC, sequence numbers) at its own bitrate, all at one frame
//! rate and on one 90 kHz clock derived from the frame index, so a layer that stops and resumes
//! keeps real-time timestamps while its sequence numbers stay continuous (an encoder that stops
//! producing, not packets lost on the way). A frame's size is the layer's mean frame size
//! (`bitrate / 8 / fps`) times a seeded uniform factor in `1 ± size_spread`; keyframes are
//! `keyframe_factor` times larger and happen only on the first frame, on request
//! ([`SimulcastPublisher::request_keyframe`], honoured on the layer's next frame) and when a
//! stopped layer resumes. Each layer draws from its own RNG, so stopping one does not change the
//! others.
//!
//! # Packets
//!
//! The frame is split into near-equal packets of at most `max_packet` bytes of RTP (header
//! included); the marker bit is set on its last packet. The RTP payload of every packet starts
//! like `strait_load::rtp::VideoSource`'s: the VP8 payload descriptor (`0x10`, S=1 PID=0, on the
//! frame's first packet, `0x00` on the others), then on the first packet the VP8 header's first
//! byte (`0x00`: keyframe, `0x01`: delta frame, RFC 7741 §4.3) and a filler byte on the others;
//! then a stamp in `strait_load::rtp`'s layout (stream = 1 + layer, the packet's number on the
//! layer, µs since the publisher's start), which [`strait_load::rtp::Stamp::parse_rtp`] reads back.
//! The bitrate counts RTP payload bytes (headers excluded).
//!
//! Audio is [`strait_load::rtp::AudioSource`] (stream 0, SSRC `0x5374_0000`) at its own cadence.
//!
//! # Drive contract
//!
//! [`SimulcastPublisher::poll_timeout`] says when the next frame or audio packet is due;
//! [`SimulcastPublisher::poll_packets`] returns everything due by `now`, each with its scheduled
//! time, in time order.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strait_load::rtp::{AudioSource, MAGIC, STAMP_LEN, VIDEO_PT};

/// RTP fixed header bytes.
const RTP_HEADER: usize = 12;
/// Descriptor and VP8 header (or filler) bytes before the stamp.
const VP8_PREFIX: usize = 2;

/// One simulcast layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerConfig {
    /// Mean bitrate of its RTP payload, bits per second.
    pub bitrate_bps: u64,
    /// Its RTP SSRC.
    pub ssrc: u32,
}

/// The audio stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioConfig {
    /// Packets per second (50: 20 ms frames).
    pub packets_per_second: u32,
    /// RTP payload bytes per packet.
    pub payload_bytes: usize,
}

/// A [`SimulcastPublisher`]'s configuration. Defaults: three layers at 150, 500 and
/// 1500 kbit/s (SSRCs `0x5376_0001..=3`), 30 frames/s, ±20 % frame sizes, keyframes 3× a mean
/// frame, packets of at most 1200 bytes, and audio at 50 packets/s of 80 bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct PublisherConfig {
    /// The layers, lowest first.
    pub layers: Vec<LayerConfig>,
    /// Frames per second of every layer.
    pub fps: u32,
    /// Frame sizes are uniform in `mean × (1 ± size_spread)`.
    pub size_spread: f64,
    /// A keyframe is this many mean frames.
    pub keyframe_factor: f64,
    /// Largest RTP packet, header included, bytes (at least 46).
    pub max_packet: usize,
    /// The audio stream, if any.
    pub audio: Option<AudioConfig>,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        Self {
            layers: [150_000, 500_000, 1_500_000]
                .into_iter()
                .zip(1u32..)
                .map(|(bitrate_bps, n)| LayerConfig {
                    bitrate_bps,
                    ssrc: 0x5376_0000 | n,
                })
                .collect(),
            fps: 30,
            size_spread: 0.2,
            keyframe_factor: 3.0,
            max_packet: 1200,
            audio: Some(AudioConfig {
                packets_per_second: 50,
                payload_bytes: 80,
            }),
        }
    }
}

/// What a packet carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// A video packet of `layer`, part of frame number `frame` (counted from the start).
    Video {
        /// The layer's index.
        layer: usize,
        /// Whether the frame is a keyframe.
        keyframe: bool,
        /// The frame's index.
        frame: u64,
    },
    /// An audio packet.
    Audio,
}

/// One RTP packet from the publisher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaPacket {
    /// When it was produced (its scheduled time).
    pub at: Instant,
    /// What it is.
    pub kind: MediaKind,
    /// The whole RTP packet.
    pub rtp: Bytes,
}

/// A layer's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerStats {
    /// Frames produced.
    pub frames: u64,
    /// Of those, keyframes.
    pub keyframes: u64,
    /// RTP packets produced.
    pub packets: u64,
    /// RTP bytes produced, headers included.
    pub bytes: u64,
}

#[derive(Debug)]
struct Layer {
    config: LayerConfig,
    rng: StdRng,
    seq: u16,
    timestamp_base: u32,
    stopped: bool,
    keyframe_next: bool,
    stats: LayerStats,
}

/// Simulcast video layers and audio in virtual time (see the module docs).
#[derive(Debug)]
pub struct SimulcastPublisher {
    config: PublisherConfig,
    start: Instant,
    layers: Vec<Layer>,
    /// The next frame's index.
    frame: u64,
    audio: Option<(AudioSource, u32, u64)>,
}

impl SimulcastPublisher {
    /// A publisher whose first frame and audio packet are due at `start`; `seed` drives frame
    /// sizes and the initial sequence numbers and timestamps.
    pub fn new(config: PublisherConfig, start: Instant, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let layers = config
            .layers
            .iter()
            .map(|&layer| Layer {
                config: layer,
                rng: StdRng::seed_from_u64(rng.random()),
                seq: rng.random(),
                timestamp_base: rng.random(),
                stopped: false,
                keyframe_next: true,
                stats: LayerStats::default(),
            })
            .collect();
        let audio = config.audio.map(|audio| {
            let pps = audio.packets_per_second.max(1);
            (AudioSource::new(0, pps, audio.payload_bytes), pps, 0)
        });
        Self {
            config,
            start,
            layers,
            frame: 0,
            audio,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PublisherConfig {
        &self.config
    }

    /// The SSRC of `layer`.
    pub fn ssrc(&self, layer: usize) -> u32 {
        self.layers[layer].config.ssrc
    }

    /// The audio stream's SSRC (`AudioSource`'s for stream 0).
    pub fn audio_ssrc(&self) -> u32 {
        0x5374_0000
    }

    /// Audio packets sent so far.
    pub fn audio_sent(&self) -> u64 {
        self.audio
            .as_ref()
            .map_or(0, |(source, _, _)| u64::from(source.sent()))
    }

    /// A layer's counters.
    pub fn layer_stats(&self, layer: usize) -> LayerStats {
        self.layers[layer].stats
    }

    /// Makes `layer`'s next frame a keyframe.
    pub fn request_keyframe(&mut self, layer: usize) {
        self.layers[layer].keyframe_next = true;
    }

    /// Stops producing `layer` (its sequence numbers pause with it).
    pub fn stop_layer(&mut self, layer: usize) {
        self.layers[layer].stopped = true;
    }

    /// Resumes `layer`, starting with a keyframe.
    pub fn resume_layer(&mut self, layer: usize) {
        let layer = &mut self.layers[layer];
        if layer.stopped {
            layer.stopped = false;
            layer.keyframe_next = true;
        }
    }

    /// Whether `layer` is stopped.
    pub fn is_stopped(&self, layer: usize) -> bool {
        self.layers[layer].stopped
    }

    fn frame_at(&self, frame: u64) -> Instant {
        let fps = u64::from(self.config.fps.max(1));
        self.start + Duration::from_nanos(frame * 1_000_000_000 / fps)
    }

    fn audio_at(&self) -> Option<Instant> {
        let (_, pps, next) = self.audio.as_ref()?;
        Some(self.start + Duration::from_nanos(next * 1_000_000_000 / u64::from(*pps)))
    }

    /// When the next frame or audio packet is due.
    pub fn poll_timeout(&self) -> Instant {
        let video = self.frame_at(self.frame);
        self.audio_at().map_or(video, |audio| audio.min(video))
    }

    /// Every packet due by `now`, in time order (video first at a tie).
    pub fn poll_packets(&mut self, now: Instant) -> Vec<MediaPacket> {
        let mut out = Vec::new();
        loop {
            let video = self.frame_at(self.frame);
            let audio = self.audio_at();
            if video <= now && audio.is_none_or(|a| video <= a) {
                self.produce_frame(video, &mut out);
            } else if let Some(at) = audio.filter(|&a| a <= now) {
                if let Some((source, _, next)) = &mut self.audio {
                    let sent_us = (at - self.start).as_micros() as u64;
                    out.push(MediaPacket {
                        at,
                        kind: MediaKind::Audio,
                        rtp: Bytes::from(source.next_packet(sent_us)),
                    });
                    *next += 1;
                }
            } else {
                return out;
            }
        }
    }

    fn produce_frame(&mut self, at: Instant, out: &mut Vec<MediaPacket>) {
        let frame = self.frame;
        self.frame += 1;
        let fps = u64::from(self.config.fps.max(1));
        let ticks = (frame * 90_000 / fps) as u32;
        let sent_us = (at - self.start).as_micros() as u64;
        let max_payload = self
            .config
            .max_packet
            .max(RTP_HEADER + VP8_PREFIX + STAMP_LEN)
            - RTP_HEADER;
        for (index, layer) in self.layers.iter_mut().enumerate() {
            if layer.stopped {
                continue;
            }
            let keyframe = std::mem::take(&mut layer.keyframe_next);
            let spread = self.config.size_spread.clamp(0.0, 0.99);
            let factor = if spread > 0.0 {
                layer.rng.random_range(1.0 - spread..=1.0 + spread)
            } else {
                1.0
            };
            let mean = layer.config.bitrate_bps as f64 / 8.0 / fps as f64;
            let scale = if keyframe {
                self.config.keyframe_factor
            } else {
                1.0
            };
            let total = ((mean * factor * scale) as usize).max(VP8_PREFIX + STAMP_LEN);
            let count = total.div_ceil(max_payload);
            let timestamp = layer.timestamp_base.wrapping_add(ticks);
            for k in 0..count {
                // Near-equal parts: the first `total % count` get one byte more.
                let len =
                    (total / count + usize::from(k < total % count)).max(VP8_PREFIX + STAMP_LEN);
                let first = k == 0;
                let mut rtp = Vec::with_capacity(RTP_HEADER + len);
                rtp.push(0x80);
                rtp.push(VIDEO_PT | if k + 1 == count { 0x80 } else { 0 });
                rtp.extend_from_slice(&layer.seq.to_be_bytes());
                rtp.extend_from_slice(&timestamp.to_be_bytes());
                rtp.extend_from_slice(&layer.config.ssrc.to_be_bytes());
                rtp.push(if first { 0x10 } else { 0x00 });
                rtp.push(if first && keyframe { 0x00 } else { 0x01 });
                rtp.extend_from_slice(&MAGIC);
                rtp.extend_from_slice(&(index as u32 + 1).to_be_bytes());
                rtp.extend_from_slice(&(layer.stats.packets as u32).to_be_bytes());
                rtp.extend_from_slice(&sent_us.to_be_bytes());
                rtp.resize(RTP_HEADER + len, 0x5a);
                layer.seq = layer.seq.wrapping_add(1);
                layer.stats.packets += 1;
                layer.stats.bytes += rtp.len() as u64;
                out.push(MediaPacket {
                    at,
                    kind: MediaKind::Video {
                        layer: index,
                        keyframe,
                        frame,
                    },
                    rtp: Bytes::from(rtp),
                });
            }
            layer.stats.frames += 1;
            layer.stats.keyframes += u64::from(keyframe);
        }
    }
}

#[cfg(test)]
mod tests {
    use strait_load::rtp::{Stamp, vp8_keyframe_start};

    use super::*;

    fn seq(rtp: &[u8]) -> u16 {
        u16::from_be_bytes([rtp[2], rtp[3]])
    }

    #[test]
    fn layers_average_their_bitrates_in_packets_of_at_most_1200_bytes() {
        let start = Instant::now();
        let mut publisher = SimulcastPublisher::new(PublisherConfig::default(), start, 1);
        let packets = publisher.poll_packets(start + Duration::from_millis(9_999));
        for (layer, want) in [150_000.0, 500_000.0, 1_500_000.0].into_iter().enumerate() {
            let stats = publisher.layer_stats(layer);
            assert_eq!(stats.frames, 300);
            assert_eq!(stats.keyframes, 1);
            let payload = stats.bytes - stats.packets * RTP_HEADER as u64;
            let rate = payload as f64 * 8.0 / 10.0;
            assert!((rate / want - 1.0).abs() < 0.03, "layer {layer}: {rate}");
        }
        assert!(packets.iter().all(|p| p.rtp.len() <= 1200));
        assert!(packets.windows(2).all(|w| w[0].at <= w[1].at));
        let audio: Vec<_> = packets
            .iter()
            .filter(|p| p.kind == MediaKind::Audio)
            .collect();
        assert_eq!(audio.len(), 500);
        assert_eq!(audio[0].rtp.len(), 12 + 80);
        assert_eq!(publisher.audio_sent(), 500);
    }

    #[test]
    fn frames_look_like_vp8_and_keyframes_come_on_request() {
        let start = Instant::now();
        let mut publisher = SimulcastPublisher::new(PublisherConfig::default(), start, 2);
        let top = publisher.ssrc(2);
        let mut frames: Vec<Vec<Bytes>> = Vec::new();
        for frame in 0..40u64 {
            if frame == 20 {
                publisher.request_keyframe(2);
            }
            let at = start + Duration::from_nanos(frame * 1_000_000_000 / 30);
            let packets: Vec<Bytes> = publisher
                .poll_packets(at)
                .into_iter()
                .filter(|p| u32::from_be_bytes(p.rtp[8..12].try_into().unwrap()) == top)
                .map(|p| p.rtp)
                .collect();
            frames.push(packets);
        }
        for (n, packets) in frames.iter().enumerate() {
            let first = &packets[0];
            assert_eq!(first[12], 0x10);
            assert_eq!(vp8_keyframe_start(first), n == 0 || n == 20, "frame {n}");
            assert!(
                packets[1..]
                    .iter()
                    .all(|p| p[12] == 0x00 && !vp8_keyframe_start(p))
            );
            let last = packets.last().unwrap();
            assert!(last[1] & 0x80 != 0);
            assert!(
                packets[..packets.len() - 1]
                    .iter()
                    .all(|p| p[1] & 0x80 == 0)
            );
            let ts = |p: &Bytes| u32::from_be_bytes(p[4..8].try_into().unwrap());
            assert!(packets.iter().all(|p| ts(p) == ts(first)));
            let stamp = Stamp::parse_rtp(first).expect("stamped");
            assert_eq!(stamp.stream, 3);
        }
        // Continuous sequence numbers and 3000 ticks per frame.
        let all: Vec<&Bytes> = frames.iter().flatten().collect();
        assert!(
            all.windows(2)
                .all(|w| seq(w[1]) == seq(w[0]).wrapping_add(1))
        );
        let ts0 = u32::from_be_bytes(frames[0][0][4..8].try_into().unwrap());
        let ts1 = u32::from_be_bytes(frames[1][0][4..8].try_into().unwrap());
        assert_eq!(ts1.wrapping_sub(ts0), 3000);
    }

    #[test]
    fn a_stopped_layer_sends_nothing_and_resumes_with_a_keyframe() {
        let start = Instant::now();
        let mut publisher = SimulcastPublisher::new(PublisherConfig::default(), start, 3);
        let mut other = SimulcastPublisher::new(PublisherConfig::default(), start, 3);
        publisher.poll_packets(start);
        other.poll_packets(start);
        publisher.stop_layer(1);
        let stopped = publisher.poll_packets(start + Duration::from_secs(1));
        assert!(
            stopped
                .iter()
                .all(|p| !matches!(p.kind, MediaKind::Video { layer: 1, .. }))
        );
        // The other layers are unchanged by the stop.
        let same = |p: &&MediaPacket| !matches!(p.kind, MediaKind::Video { layer: 1, .. });
        let reference = other.poll_packets(start + Duration::from_secs(1));
        assert_eq!(
            stopped.iter().filter(same).collect::<Vec<_>>(),
            reference.iter().filter(same).collect::<Vec<_>>()
        );
        let last_seq = publisher.layer_stats(1).packets;
        publisher.resume_layer(1);
        let resumed = publisher.poll_packets(start + Duration::from_millis(1040));
        let first = resumed
            .iter()
            .find(|p| matches!(p.kind, MediaKind::Video { layer: 1, .. }))
            .unwrap();
        assert!(vp8_keyframe_start(&first.rtp));
        assert_eq!(publisher.layer_stats(1).keyframes, 2);
        assert!(publisher.layer_stats(1).packets > last_seq);
    }

    #[test]
    fn the_same_seed_gives_the_same_packets() {
        let start = Instant::now();
        let run = |seed| {
            let mut publisher = SimulcastPublisher::new(PublisherConfig::default(), start, seed);
            publisher.poll_packets(start + Duration::from_secs(2))
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }
}
