//! The receiving end: which video frames a subscriber could render, its freezes, and how much
//! audio arrived.
//!
//! # Frames
//!
//! Per video SSRC — the stream *as the SFU forwards it*, which may switch layers at keyframes
//! with continuous sequence numbers — packets are grouped into frames by RTP timestamp. A frame is
//! *complete* when its first packet (VP8 payload descriptor with S=1, partition 0), its last
//! (marker bit) and every sequence number in between have arrived. It is *decodable* when it is a
//! keyframe, or when it starts right after the last rendered frame (its first sequence number is
//! that frame's last + 1): every frame since the last keyframe was then complete and rendered. A
//! missing packet (or a whole missing frame, which leaves a gap in the sequence numbers) breaks
//! the chain, and nothing renders until the next keyframe. A decodable frame is *rendered* at the
//! instant it becomes decodable (no jitter buffer: a burst renders in a burst). A complete frame
//! that is not decodable yet waits, in case a late packet completes its predecessor. Frames that
//! are never rendered are counted in [`VideoReport::frames_dropped`] once something newer
//! renders; frames of which no packet arrived are not counted at all.
//!
//! # Freezes
//!
//! The W3C `freezeCount` definition (webrtc-stats, as libwebrtc computes it): when a frame
//! renders, the time since the previous rendered frame is a freeze if it exceeds
//! `max(3 × mean, mean + 150 ms)`, where `mean` is the average of the last 30 inter-frame
//! intervals (rendered frames, freezes included), once at least 5 are known. A freeze's duration
//! (in [`VideoReport::total_freeze`]) is the whole interval. A freeze still going on (nothing
//! rendered since) is not counted until the next frame renders;
//! [`VideoStream::ongoing_freeze`] reports it.
//!
//! # Audio
//!
//! Audio is counted per SSRC; [`MediaReceiver::audio_delivered_ratio`] divides by what the
//! publisher says it sent.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use strait_load::rtp::{AUDIO_PT, VIDEO_PT, vp8_keyframe_start};

/// Frames assembled or waiting at once, per stream, before the oldest is given up.
const MAX_PENDING_FRAMES: usize = 128;

/// The freeze rule's parameters; the defaults are W3C's and libwebrtc's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FreezeConfig {
    /// Inter-frame intervals averaged.
    pub window: usize,
    /// Intervals needed before any freeze is detected.
    pub min_samples: usize,
    /// A freeze is longer than `factor × mean` …
    pub factor: u32,
    /// … and longer than `mean + margin`.
    pub margin: Duration,
}

impl Default for FreezeConfig {
    fn default() -> Self {
        Self {
            window: 30,
            min_samples: 5,
            factor: 3,
            margin: Duration::from_millis(150),
        }
    }
}

/// One video stream's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VideoReport {
    /// RTP packets received.
    pub packets: u64,
    /// Frames rendered.
    pub frames_rendered: u64,
    /// Of those, keyframes.
    pub keyframes_rendered: u64,
    /// Frames with at least one packet received that were never rendered (incomplete, or not
    /// decodable), counted once something newer rendered.
    pub frames_dropped: u64,
    /// Freezes (see the module docs).
    pub freeze_count: u64,
    /// Their summed duration.
    pub total_freeze: Duration,
    /// The longest.
    pub longest_freeze: Duration,
    /// When the first frame rendered.
    pub first_render: Option<Instant>,
    /// When the last frame rendered.
    pub last_render: Option<Instant>,
}

/// A frame being assembled.
#[derive(Debug)]
struct Assembly {
    timestamp: u32,
    seqs: BTreeSet<u64>,
    start: Option<u64>,
    end: Option<u64>,
    keyframe: bool,
}

impl Assembly {
    fn complete(&self) -> Option<Frame> {
        let (start, end) = (self.start?, self.end?);
        let len = end.checked_sub(start)? + 1;
        (self.seqs.range(start..=end).count() as u64 == len).then_some(Frame {
            start,
            end,
            keyframe: self.keyframe,
        })
    }
}

/// A complete frame: its first and last (extended) sequence numbers.
#[derive(Debug, Clone, Copy)]
struct Frame {
    start: u64,
    end: u64,
    keyframe: bool,
}

/// The rendering side of one video stream (see the module docs).
#[derive(Debug)]
pub struct VideoStream {
    config: FreezeConfig,
    highest: Option<u64>,
    assembling: Vec<Assembly>,
    waiting: Vec<Frame>,
    rendered_end: Option<u64>,
    intervals: VecDeque<Duration>,
    report: VideoReport,
}

impl VideoStream {
    /// A stream with nothing received.
    pub fn new(config: FreezeConfig) -> Self {
        Self {
            config,
            highest: None,
            assembling: Vec::new(),
            waiting: Vec::new(),
            rendered_end: None,
            intervals: VecDeque::new(),
            report: VideoReport::default(),
        }
    }

    /// The figures so far.
    pub fn report(&self) -> VideoReport {
        self.report
    }

    /// The freeze threshold now: `max(factor × mean, mean + margin)` over the recent intervals,
    /// once there are enough of them.
    pub fn freeze_threshold(&self) -> Option<Duration> {
        if self.intervals.len() < self.config.min_samples.max(1) {
            return None;
        }
        let mean = self.intervals.iter().sum::<Duration>() / self.intervals.len() as u32;
        Some((mean * self.config.factor).max(mean + self.config.margin))
    }

    /// How long nothing has rendered, if that is already longer than the freeze threshold.
    pub fn ongoing_freeze(&self, now: Instant) -> Option<Duration> {
        let gap = now.saturating_duration_since(self.report.last_render?);
        (gap > self.freeze_threshold()?).then_some(gap)
    }

    /// An RTP packet of this stream arrived at `now`.
    pub fn on_packet(&mut self, now: Instant, rtp: &[u8]) {
        let Some(header) = Header::parse(rtp) else {
            return;
        };
        self.report.packets += 1;
        let seq = self.extend(header.seq);
        if self.rendered_end.is_some_and(|end| seq <= end) {
            return; // Late: something at least as new already rendered.
        }
        let index = match self
            .assembling
            .iter()
            .position(|a| a.timestamp == header.timestamp)
        {
            Some(index) => index,
            None => {
                if self.assembling.len() + self.waiting.len() >= MAX_PENDING_FRAMES {
                    self.give_up_oldest();
                }
                self.assembling.push(Assembly {
                    timestamp: header.timestamp,
                    seqs: BTreeSet::new(),
                    start: None,
                    end: None,
                    keyframe: false,
                });
                self.assembling.len() - 1
            }
        };
        let assembly = &mut self.assembling[index];
        assembly.seqs.insert(seq);
        let descriptor = header.payload.first().copied().unwrap_or(0);
        if descriptor & 0x10 != 0 && descriptor & 0x07 == 0 {
            assembly.start = Some(seq);
            assembly.keyframe = vp8_keyframe_start(rtp);
        }
        if header.marker {
            assembly.end = Some(seq);
        }
        if let Some(frame) = assembly.complete() {
            self.assembling.swap_remove(index);
            self.on_complete(now, frame);
        }
    }

    fn extend(&mut self, seq: u16) -> u64 {
        let extended = match self.highest {
            None => u64::from(seq) + (1 << 16),
            Some(highest) => {
                let delta = i64::from(seq.wrapping_sub(highest as u16) as i16);
                highest.saturating_add_signed(delta)
            }
        };
        self.highest = Some(self.highest.map_or(extended, |h| h.max(extended)));
        extended
    }

    fn decodable(&self, frame: &Frame) -> bool {
        match self.rendered_end {
            None => frame.keyframe,
            Some(end) => frame.start > end && (frame.keyframe || frame.start == end + 1),
        }
    }

    fn on_complete(&mut self, now: Instant, frame: Frame) {
        if !self.decodable(&frame) {
            self.waiting.push(frame);
            return;
        }
        self.render(now, frame);
        // Complete frames that were waiting for this one.
        while let Some(end) = self.rendered_end
            && let Some(i) = self.waiting.iter().position(|f| f.start == end + 1)
        {
            let next = self.waiting.swap_remove(i);
            self.render(now, next);
        }
    }

    fn render(&mut self, now: Instant, frame: Frame) {
        self.rendered_end = Some(frame.end);
        let r = &mut self.report;
        r.frames_rendered += 1;
        r.keyframes_rendered += u64::from(frame.keyframe);
        r.first_render.get_or_insert(now);
        if let Some(last) = r.last_render {
            let interval = now.saturating_duration_since(last);
            if let Some(threshold) = self.freeze_threshold()
                && interval > threshold
            {
                let r = &mut self.report;
                r.freeze_count += 1;
                r.total_freeze += interval;
                r.longest_freeze = r.longest_freeze.max(interval);
            }
            self.intervals.push_back(interval);
            if self.intervals.len() > self.config.window.max(1) {
                self.intervals.pop_front();
            }
        }
        self.report.last_render = Some(now);
        // Whatever is older than this frame will never render.
        let before = self.assembling.len() + self.waiting.len();
        self.assembling
            .retain(|a| a.seqs.last().is_some_and(|&s| s > frame.end));
        self.waiting.retain(|f| f.start > frame.end);
        let after = self.assembling.len() + self.waiting.len();
        self.report.frames_dropped += (before - after) as u64;
    }

    fn give_up_oldest(&mut self) {
        let oldest_assembly = self
            .assembling
            .iter()
            .enumerate()
            .min_by_key(|(_, a)| a.seqs.first().copied().unwrap_or(u64::MAX))
            .map(|(i, a)| (i, a.seqs.first().copied().unwrap_or(u64::MAX)));
        let oldest_waiting = self
            .waiting
            .iter()
            .enumerate()
            .min_by_key(|(_, f)| f.start)
            .map(|(i, f)| (i, f.start));
        match (oldest_assembly, oldest_waiting) {
            (Some((i, a)), Some((_, w))) if a <= w => {
                self.assembling.swap_remove(i);
            }
            (_, Some((i, _))) => {
                self.waiting.swap_remove(i);
            }
            (Some((i, _)), None) => {
                self.assembling.swap_remove(i);
            }
            (None, None) => return,
        }
        self.report.frames_dropped += 1;
    }
}

/// The parts of an RTP header the receiver reads.
struct Header<'a> {
    payload_type: u8,
    marker: bool,
    seq: u16,
    timestamp: u32,
    ssrc: u32,
    payload: &'a [u8],
}

impl<'a> Header<'a> {
    fn parse(rtp: &'a [u8]) -> Option<Self> {
        if rtp.len() < 12 || rtp[0] >> 6 != 2 {
            return None;
        }
        let mut payload = strait_load::rtp::payload(rtp)?;
        if rtp[0] & 0x20 != 0 {
            let padding = usize::from(*rtp.last()?);
            payload = payload.get(..payload.len().checked_sub(padding)?)?;
        }
        Some(Self {
            payload_type: rtp[1] & 0x7f,
            marker: rtp[1] & 0x80 != 0,
            seq: u16::from_be_bytes([rtp[2], rtp[3]]),
            timestamp: u32::from_be_bytes([rtp[4], rtp[5], rtp[6], rtp[7]]),
            ssrc: u32::from_be_bytes([rtp[8], rtp[9], rtp[10], rtp[11]]),
            payload,
        })
    }
}

/// A subscriber's media: video streams by SSRC (payload type 96, `strait_load`'s), audio by
/// SSRC (payload type 111); anything else is counted and ignored.
#[derive(Debug)]
pub struct MediaReceiver {
    config: FreezeConfig,
    video: BTreeMap<u32, VideoStream>,
    audio: BTreeMap<u32, u64>,
    other: u64,
}

impl Default for MediaReceiver {
    fn default() -> Self {
        Self::new(FreezeConfig::default())
    }
}

impl MediaReceiver {
    /// A receiver with nothing received.
    pub fn new(config: FreezeConfig) -> Self {
        Self {
            config,
            video: BTreeMap::new(),
            audio: BTreeMap::new(),
            other: 0,
        }
    }

    /// An RTP packet arrived at `now`.
    pub fn on_rtp(&mut self, now: Instant, rtp: &[u8]) {
        let Some(header) = Header::parse(rtp) else {
            self.other += 1;
            return;
        };
        match header.payload_type {
            VIDEO_PT => self
                .video
                .entry(header.ssrc)
                .or_insert_with(|| VideoStream::new(self.config))
                .on_packet(now, rtp),
            AUDIO_PT => *self.audio.entry(header.ssrc).or_default() += 1,
            _ => self.other += 1,
        }
    }

    /// A video stream, if any of its packets arrived.
    pub fn video(&self, ssrc: u32) -> Option<&VideoStream> {
        self.video.get(&ssrc)
    }

    /// Every video stream's report, by SSRC.
    pub fn video_reports(&self) -> BTreeMap<u32, VideoReport> {
        self.video
            .iter()
            .map(|(&ssrc, s)| (ssrc, s.report()))
            .collect()
    }

    /// Audio packets received on `ssrc`.
    pub fn audio_received(&self, ssrc: u32) -> u64 {
        self.audio.get(&ssrc).copied().unwrap_or(0)
    }

    /// Received / sent on an audio SSRC (1.0 when nothing was sent).
    pub fn audio_delivered_ratio(&self, ssrc: u32, sent: u64) -> f64 {
        if sent == 0 {
            return 1.0;
        }
        self.audio_received(ssrc) as f64 / sent as f64
    }

    /// Packets that were neither video nor audio (or not RTP).
    pub fn other_packets(&self) -> u64 {
        self.other
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::sim::video::{
        LayerConfig, MediaKind, MediaPacket, PublisherConfig, SimulcastPublisher,
    };

    const MS: Duration = Duration::from_millis(1);

    fn one_layer(bitrate_bps: u64) -> PublisherConfig {
        PublisherConfig {
            layers: vec![LayerConfig {
                bitrate_bps,
                ssrc: 0x100,
            }],
            audio: None,
            ..PublisherConfig::default()
        }
    }

    fn frame_time(start: Instant, frame: u64) -> Instant {
        start + Duration::from_nanos(frame * 1_000_000_000 / 30)
    }

    #[test]
    fn a_steady_stream_renders_every_frame_without_freezing() {
        let start = Instant::now();
        let mut publisher = SimulcastPublisher::new(one_layer(500_000), start, 1);
        let mut receiver = MediaReceiver::default();
        for p in publisher.poll_packets(start + Duration::from_millis(9_999)) {
            receiver.on_rtp(p.at + 30 * MS, &p.rtp);
        }
        let report = receiver.video(0x100).unwrap().report();
        assert_eq!(report.frames_rendered, 300);
        assert_eq!(report.keyframes_rendered, 1);
        assert_eq!((report.freeze_count, report.frames_dropped), (0, 0));
    }

    #[test]
    fn a_500_ms_hole_is_exactly_one_freeze() {
        let start = Instant::now();
        let mut publisher = SimulcastPublisher::new(one_layer(500_000), start, 2);
        let mut receiver = MediaReceiver::default();
        for frame in 0..150 {
            let at = frame_time(start, frame);
            // The encoder pauses from 2.0 s to 2.5 s (frames 60..75): sequence numbers continue.
            if frame == 60 {
                publisher.stop_layer(0);
            }
            if frame == 75 {
                publisher.resume_layer(0);
            }
            for p in publisher.poll_packets(at) {
                receiver.on_rtp(p.at, &p.rtp);
            }
        }
        let report = receiver.video(0x100).unwrap().report();
        println!("{report:?}");
        assert_eq!(report.frames_rendered, 135);
        assert_eq!(report.freeze_count, 1);
        // From frame 59 to frame 75: 16 frame intervals.
        let gap = frame_time(start, 75) - frame_time(start, 59);
        assert_eq!(report.total_freeze, gap);
        assert_eq!(report.longest_freeze, gap);
    }

    #[test]
    fn a_late_burst_is_one_freeze_too() {
        // The network holds everything sent between 2.0 s and 2.5 s and delivers it at 2.5 s.
        let start = Instant::now();
        let mut publisher = SimulcastPublisher::new(one_layer(500_000), start, 3);
        let mut receiver = MediaReceiver::default();
        let hold = frame_time(start, 60)..frame_time(start, 75);
        for p in publisher.poll_packets(frame_time(start, 149)) {
            let at = if hold.contains(&p.at) { hold.end } else { p.at };
            receiver.on_rtp(at, &p.rtp);
        }
        let report = receiver.video(0x100).unwrap().report();
        assert_eq!(report.frames_rendered, 150);
        assert_eq!(report.freeze_count, 1);
    }

    #[test]
    fn a_lost_packet_stops_rendering_until_the_next_keyframe() {
        let start = Instant::now();
        let mut publisher = SimulcastPublisher::new(one_layer(1_500_000), start, 4);
        let mut receiver = MediaReceiver::default();
        let mut lost_one = false;
        for frame in 0..120 {
            if frame == 90 {
                publisher.request_keyframe(0);
            }
            for p in publisher.poll_packets(frame_time(start, frame)) {
                // The second packet of frame 60 (a delta frame of ~6 packets) is lost.
                let MediaKind::Video { frame: f, .. } = p.kind else {
                    continue;
                };
                if f == 60 && !lost_one && p.rtp[12] == 0x00 {
                    lost_one = true;
                    continue;
                }
                receiver.on_rtp(p.at, &p.rtp);
            }
            let stream = receiver.video(0x100).unwrap();
            let rendered = stream.report().frames_rendered;
            match frame {
                0..60 => assert_eq!(rendered, frame + 1),
                // Frames 60..90 are never decodable: 60 misses a packet, the rest follow it.
                60..90 => assert_eq!(rendered, 60, "frame {frame}"),
                _ => assert_eq!(rendered, frame + 1 - 30, "frame {frame}"),
            }
        }
        assert!(lost_one);
        let report = receiver.video(0x100).unwrap().report();
        assert_eq!(report.keyframes_rendered, 2);
        assert_eq!(report.frames_dropped, 30);
        assert_eq!(report.freeze_count, 1);
        assert_eq!(
            report.total_freeze,
            frame_time(start, 90) - frame_time(start, 59)
        );
    }

    #[test]
    fn an_ongoing_freeze_shows_before_the_next_frame() {
        let start = Instant::now();
        let mut publisher = SimulcastPublisher::new(one_layer(150_000), start, 5);
        let mut receiver = MediaReceiver::default();
        for p in publisher.poll_packets(frame_time(start, 29)) {
            receiver.on_rtp(p.at, &p.rtp);
        }
        let stream = receiver.video(0x100).unwrap();
        let last = frame_time(start, 29);
        assert_eq!(stream.ongoing_freeze(last + 100 * MS), None);
        assert_eq!(stream.ongoing_freeze(last + 300 * MS), Some(300 * MS));
        assert_eq!(stream.report().freeze_count, 0);
    }

    /// What an SFU does when it switches a subscriber from one layer to another at a keyframe:
    /// one outgoing SSRC, continuous sequence numbers, timestamps continued.
    struct Rewriter {
        seq: u16,
        offset: u32,
        last_out: Option<u32>,
    }

    impl Rewriter {
        fn rewrite(&mut self, p: &MediaPacket, switched: bool) -> Bytes {
            let mut rtp = p.rtp.to_vec();
            let ts = u32::from_be_bytes(rtp[4..8].try_into().unwrap());
            if switched && let Some(last) = self.last_out {
                // The new layer's first frame comes one frame after the last one forwarded.
                self.offset = last.wrapping_add(3000).wrapping_sub(ts);
            }
            let out = ts.wrapping_add(self.offset);
            self.last_out = Some(out);
            rtp[2..4].copy_from_slice(&self.seq.to_be_bytes());
            rtp[4..8].copy_from_slice(&out.to_be_bytes());
            rtp[8..12].copy_from_slice(&0xabcd_u32.to_be_bytes());
            self.seq = self.seq.wrapping_add(1);
            Bytes::from(rtp)
        }
    }

    #[test]
    fn a_stream_that_switches_layers_at_keyframes_renders_throughout() {
        let start = Instant::now();
        let mut publisher = SimulcastPublisher::new(PublisherConfig::default(), start, 6);
        let mut receiver = MediaReceiver::default();
        let mut rewriter = Rewriter {
            seq: 65_500, // wraps during the run
            offset: 0,
            last_out: None,
        };
        // Layer 0 first; at 1 s ask layer 2 for a keyframe and switch to it when it comes.
        let mut current = 0;
        let mut target = 0;
        let mut switched = false;
        for frame in 0..90 {
            if frame == 30 {
                target = 2;
                publisher.request_keyframe(2);
            }
            for p in publisher.poll_packets(frame_time(start, frame)) {
                let MediaKind::Video {
                    layer, keyframe, ..
                } = p.kind
                else {
                    continue;
                };
                if layer == target && target != current && keyframe {
                    current = target;
                    switched = true;
                } else if layer != current {
                    continue;
                }
                let first_of_switch = std::mem::take(&mut switched);
                let rtp = rewriter.rewrite(&p, first_of_switch);
                receiver.on_rtp(p.at, &rtp);
            }
        }
        assert_eq!(current, 2);
        let report = receiver.video(0xabcd).unwrap().report();
        // Layer 0's frames 0..=30 (its frame 30 leaves before layer 2's keyframe), then layer
        // 2's frames 30..90.
        assert_eq!(report.frames_rendered, 91);
        assert_eq!(report.keyframes_rendered, 2);
        assert_eq!(report.freeze_count, 0);
    }

    #[test]
    fn audio_is_counted_against_what_was_sent() {
        let start = Instant::now();
        let mut publisher = SimulcastPublisher::new(PublisherConfig::default(), start, 7);
        let mut receiver = MediaReceiver::default();
        let audio = publisher.audio_ssrc();
        for (n, p) in publisher
            .poll_packets(start + Duration::from_millis(1990))
            .into_iter()
            .filter(|p| p.kind == MediaKind::Audio)
            .enumerate()
        {
            if n % 10 != 3 {
                receiver.on_rtp(p.at, &p.rtp);
            }
        }
        assert_eq!(publisher.audio_sent(), 100);
        assert_eq!(receiver.audio_received(audio), 90);
        assert!((receiver.audio_delivered_ratio(audio, publisher.audio_sent()) - 0.9).abs() < 1e-9);
    }
}
