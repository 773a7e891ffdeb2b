//! A room in the simulation: simulcast publishers, the real SFU core, and one subscriber whose
//! leg — QUIC or WebRTC ([`LegKind`]) — crosses a simulated link: the whole loop of the
//! bandwidth allocation.
//!
//! Each step does what the gateway does, in virtual time:
//!
//! - the publishers' packets go through [`Sfu::handle_rtp`]; what it forwards to the subscriber
//!   is framed as a media datagram and given to the server side of the [`QuicPair`], or sent on
//!   the [`WebRtcLeg`] (the bridge's RTP with transport-wide sequence numbers);
//! - QUIC: every [`RoomConfig::sample_interval`] the server connection's counters and the
//!   acknowledgements its congestion controller's tap kept feed a [`QuicEstimator`]
//!   ([`QuicEstimator::update_with_acks`]), and between them the acknowledgements alone at the
//!   pace of [`RefreshPace`], as the gateway's session does; WebRTC: each TWCC feedback that reaches the leg feeds its
//!   `WebRtcEstimator`. The estimate goes to [`Sfu::set_estimate`] when it is a real change
//!   ([`Estimate::moved_from`]), as the gateway's session and bridge do;
//! - the core's events are carried out: keyframe requests reach the publisher, probes send
//!   padding paced by [`Padding`] (QUIC padding datagrams of kind `0x02`, or RTX padding on the
//!   WebRTC leg);
//! - the subscriber renders what arrives ([`MediaReceiver`]) and, like a browser's decoder, asks
//!   for a keyframe when a stream has a gap (at most every 250 ms per stream), and again every
//!   500 ms while its picture is frozen.
//!
//! Every 100 ms the room records what each video subscription forwards, for the tests'
//! measures: layer switches, allocation changes, time to a layer, pauses.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use strait_media::bwe::{
    Estimate, LinkState, PacketFate, Padding, QuicEstimator, QuicEstimatorConfig, QuicSample,
    RefreshPace,
};
use strait_media::sfu::{
    self, CodecSpec, Event, LayerSpec, MediaId, Notification, ParticipantId, ParticipantMeta, Sfu,
    SfuConfig, TrackId, TrackKind, TrackSpec,
};
use strait_protocol::datagram;

use super::freeze::{FreezeConfig, MediaReceiver, VideoReport};
use super::link::RateBin;
use super::quic::{QuicPair, QuicPairConfig, SimError};
use super::video::{MediaKind, PublisherConfig, SimulcastPublisher};
use super::webrtc::{WebRtcLeg, WebRtcLegConfig};

/// One publisher of the room.
#[derive(Debug, Clone)]
pub struct PublisherSpec {
    /// Its media.
    pub media: PublisherConfig,
    /// The video track's source (`camera`, `screen`…): the default priority follows it.
    pub source: String,
    /// Whether each layer's bitrate is announced (`max_bitrate`), as a QUIC client or WHIP with
    /// `max-br` does; when not, the layers are announced at 0.
    pub declared: bool,
    /// When it starts sending, from the room's start.
    pub starts_after: Duration,
}

impl PublisherSpec {
    /// A camera with the default publisher (150 k / 500 k / 1.5 M, audio), declared bitrates.
    pub fn camera() -> Self {
        Self {
            media: PublisherConfig::default(),
            source: "camera".into(),
            declared: true,
            starts_after: Duration::ZERO,
        }
    }
}

/// The subscriber's kind of leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegKind {
    /// A native or WebTransport subscriber: quinn-proto with the gateway's settings.
    Quic,
    /// A WHEP or `/ws/rtc` subscriber: the bridge's RTP and the browser's TWCC feedback.
    WebRtc,
}

/// What a [`SimRoom`] is made of.
#[derive(Debug, Clone)]
pub struct RoomConfig {
    /// The subscriber's links (for a WebRTC leg, its `forward` and `reverse` links are used).
    pub link: QuicPairConfig,
    /// The subscriber's kind of leg.
    pub leg: LegKind,
    /// The publishers, each with one video track and its audio.
    pub publishers: Vec<PublisherSpec>,
    /// How often the server's counters (and acknowledgements) feed the estimator: the
    /// gateway's look at an active session (250 ms).
    pub sample_interval: Duration,
    /// Whether the estimator reads each packet's acknowledgement (`quic.ack_feedback`, on by
    /// default) — then between two samples it is refreshed from the acknowledgements alone at
    /// the pace of [`RefreshPace`], with the last sample's counters, as the gateway's session
    /// does — or the counters alone.
    pub ack_feedback: bool,
    /// The estimator's thresholds.
    pub estimator: QuicEstimatorConfig,
    /// The SFU's configuration.
    pub sfu: SfuConfig,
}

impl RoomConfig {
    /// One camera behind `link`.
    pub fn new(link: QuicPairConfig) -> Self {
        Self {
            link,
            leg: LegKind::Quic,
            publishers: vec![PublisherSpec::camera()],
            sample_interval: Duration::from_millis(250),
            ack_feedback: true,
            estimator: QuicEstimatorConfig::default(),
            sfu: SfuConfig::default(),
        }
    }
}

/// What one video subscription did in a 100 ms slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Since the room's start.
    pub at: Duration,
    /// The layer being forwarded (`None`: nothing yet, or paused).
    pub current: Option<u8>,
    /// The layer the allocation chose.
    pub target: u8,
    /// Paused by the allocation.
    pub paused: bool,
}

#[derive(Debug)]
struct Publisher {
    id: ParticipantId,
    source: SimulcastPublisher,
    video: TrackId,
    audio: TrackId,
    /// The subscriber's SSRC of the video subscription.
    video_ssrc: u32,
    audio_ssrc: u32,
    starts: Instant,
    started: bool,
}

/// The subscriber's leg.
#[derive(Debug)]
enum Leg {
    Quic(Box<QuicPair>),
    WebRtc(Box<WebRtcLeg>),
}

impl Leg {
    fn now(&self) -> Instant {
        match self {
            Leg::Quic(pair) => pair.now(),
            Leg::WebRtc(leg) => leg.now(),
        }
    }

    fn epoch(&self) -> Instant {
        match self {
            Leg::Quic(pair) => pair.epoch(),
            Leg::WebRtc(leg) => leg.epoch(),
        }
    }

    fn run_until(&mut self, until: Instant) {
        match self {
            Leg::Quic(pair) => pair.run_until(until),
            Leg::WebRtc(leg) => leg.run_until(until),
        }
    }

    /// When the leg has something to do before the room's own next event (a WebRTC leg's
    /// feedback, whose estimate the room passes on when it comes); a QUIC pair runs to any
    /// time it is given.
    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Leg::Quic(_) => None,
            Leg::WebRtc(leg) => leg.poll_timeout(),
        }
    }
}

/// The room (see the module docs).
#[derive(Debug)]
pub struct SimRoom {
    leg: Leg,
    sfu: Sfu,
    subscriber: ParticipantId,
    publishers: Vec<Publisher>,
    estimator: QuicEstimator,
    sample_interval: Duration,
    next_sample: Instant,
    ack_feedback: bool,
    refresh: RefreshPace,
    next_refresh: Instant,
    /// The counters of the last sample (a refresh reuses them).
    last_sample: Option<QuicSample>,
    last_sent: Option<Estimate>,
    estimates: Vec<(Duration, Estimate)>,
    probes: Vec<(Duration, u64)>,
    /// The acknowledgements of one sample (reused).
    acks: Vec<PacketFate>,
    padding: Option<Padding>,
    padding_bytes: u64,
    receiver: MediaReceiver,
    /// Per subscriber SSRC: the last sequence number seen and when a keyframe was last asked.
    streams: BTreeMap<u32, (u16, Option<Instant>)>,
    next_slot: Instant,
    timeline: Vec<Vec<Slot>>,
    pause_notes: u64,
    resume_notes: u64,
    scratch: Vec<u8>,
    refused: u64,
}

fn codec(kind: TrackKind) -> CodecSpec {
    match kind {
        TrackKind::Audio => CodecSpec {
            name: "opus".into(),
            payload_type: 111,
            clock_rate: 48_000,
            channels: 2,
            fmtp: String::new(),
        },
        TrackKind::Video => CodecSpec {
            name: "VP8".into(),
            payload_type: 96,
            clock_rate: 90_000,
            channels: 0,
            fmtp: String::new(),
        },
    }
}

const SLOT: Duration = Duration::from_millis(100);
const KEYFRAME_ASK_INTERVAL: Duration = Duration::from_millis(250);
const FROZEN_ASK_INTERVAL: Duration = Duration::from_millis(500);

impl SimRoom {
    /// A room whose subscriber is connected and subscribed to every track at the start.
    pub fn new(seed: u64, config: &RoomConfig) -> Result<Self, SimError> {
        let leg = match config.leg {
            LegKind::Quic => Leg::Quic(Box::new(QuicPair::new(seed, config.link.clone())?)),
            LegKind::WebRtc => {
                let leg = WebRtcLeg::new(
                    seed,
                    WebRtcLegConfig {
                        forward: config.link.forward.clone(),
                        reverse: config.link.reverse.clone(),
                        ..WebRtcLegConfig::default()
                    },
                )
                .map_err(|e| SimError::Config(e.to_string()))?;
                Leg::WebRtc(Box::new(leg))
            }
        };
        let start = leg.now();
        let mut sfu = Sfu::new(config.sfu.clone(), seed);
        let room = "sim";
        let meta = |name: &str| ParticipantMeta {
            identity: name.into(),
            name: name.into(),
        };
        let subscriber = ParticipantId(1);
        let mut publishers = Vec::new();
        for (n, spec) in config.publishers.iter().enumerate() {
            let id = ParticipantId(10 + n as u64);
            sfu.join(id, room, meta(&format!("p{n}")), start)
                .map_err(|e| SimError::Config(e.to_string()))?;
            let source = SimulcastPublisher::new(
                spec.media.clone(),
                start + spec.starts_after,
                seed ^ ((n as u64 + 1) * 0x9e37),
            );
            let layers = spec
                .media
                .layers
                .iter()
                .enumerate()
                .map(|(l, layer)| LayerSpec {
                    media: MediaId(1 + l as u32),
                    max_bitrate: if spec.declared {
                        u32::try_from(layer.bitrate_bps).unwrap_or(u32::MAX)
                    } else {
                        0
                    },
                    width: 0,
                    height: 0,
                })
                .collect();
            let video = sfu
                .publish(
                    id,
                    TrackSpec {
                        kind: TrackKind::Video,
                        codec: codec(TrackKind::Video),
                        source: spec.source.clone(),
                        layers,
                        muted: false,
                    },
                    start,
                )
                .map_err(|e| SimError::Config(e.to_string()))?;
            let audio = sfu
                .publish(
                    id,
                    TrackSpec {
                        kind: TrackKind::Audio,
                        codec: codec(TrackKind::Audio),
                        source: "microphone".into(),
                        layers: vec![LayerSpec {
                            media: MediaId(100),
                            max_bitrate: 0,
                            width: 0,
                            height: 0,
                        }],
                        muted: false,
                    },
                    start,
                )
                .map_err(|e| SimError::Config(e.to_string()))?;
            publishers.push(Publisher {
                id,
                source,
                video,
                audio,
                video_ssrc: 0,
                audio_ssrc: 0,
                starts: start + spec.starts_after,
                started: false,
            });
        }
        sfu.join(subscriber, room, meta("subscriber"), start)
            .map_err(|e| SimError::Config(e.to_string()))?;
        for p in &mut publishers {
            let video = sfu
                .subscribe(subscriber, p.video, None, start)
                .map_err(|e| SimError::Config(e.to_string()))?;
            let audio = sfu
                .subscribe(subscriber, p.audio, None, start)
                .map_err(|e| SimError::Config(e.to_string()))?;
            p.video_ssrc = video.ssrc;
            p.audio_ssrc = audio.ssrc;
        }
        let timeline = vec![Vec::new(); publishers.len()];
        let mut room = Self {
            leg,
            sfu,
            subscriber,
            publishers,
            estimator: QuicEstimator::new(config.estimator),
            sample_interval: config.sample_interval,
            next_sample: start,
            ack_feedback: config.ack_feedback,
            refresh: RefreshPace::new(0),
            next_refresh: start + RefreshPace::MIN,
            last_sample: None,
            last_sent: None,
            estimates: Vec::new(),
            probes: Vec::new(),
            acks: Vec::new(),
            padding: None,
            padding_bytes: 0,
            receiver: MediaReceiver::new(FreezeConfig::default()),
            streams: BTreeMap::new(),
            next_slot: start,
            timeline,
            pause_notes: 0,
            resume_notes: 0,
            scratch: Vec::new(),
            refused: 0,
        };
        room.drain_events(start);
        Ok(room)
    }

    /// The room's start.
    pub fn start(&self) -> Instant {
        self.leg.epoch()
    }

    /// Virtual now.
    pub fn now(&self) -> Instant {
        self.leg.now()
    }

    /// The subscriber's QUIC leg, if it has one (to read its counters).
    pub fn quic(&mut self) -> Option<&mut QuicPair> {
        match &mut self.leg {
            Leg::Quic(pair) => Some(pair),
            Leg::WebRtc(_) => None,
        }
    }

    /// The subscriber's kind of leg.
    pub fn leg_kind(&self) -> LegKind {
        match self.leg {
            Leg::Quic(_) => LegKind::Quic,
            Leg::WebRtc(_) => LegKind::WebRtc,
        }
    }

    /// The forward link's offered, admitted and possible bits in bins of `bin` over
    /// `[from, to)` (see [`super::Link::rate_bins`]).
    pub fn forward_rate_bins(&self, from: Duration, to: Duration, bin: Duration) -> Vec<RateBin> {
        match &self.leg {
            Leg::Quic(pair) => pair.forward().rate_bins(from, to, bin),
            Leg::WebRtc(leg) => leg.forward().rate_bins(from, to, bin),
        }
    }

    /// Every packet the forward link was offered, as it saw it.
    pub fn forward_records(&self) -> &[super::PacketRecord] {
        match &self.leg {
            Leg::Quic(pair) => pair.forward().records(),
            Leg::WebRtc(leg) => leg.forward().records(),
        }
    }

    /// The `q`-quantile of the forward link's queueing delay over `[from, to)`.
    pub fn forward_queue_delay_percentile(
        &self,
        q: f64,
        from: Duration,
        to: Duration,
    ) -> Option<Duration> {
        match &self.leg {
            Leg::Quic(pair) => pair.forward().queue_delay_percentile(q, from, to),
            Leg::WebRtc(leg) => leg.forward().queue_delay_percentile(q, from, to),
        }
    }

    /// The share of `bin`-long windows of `[from, to)` in which the leg offered the forward
    /// link more than it carried.
    pub fn forward_share_above_capacity(&self, from: Duration, to: Duration, bin: Duration) -> f64 {
        match &self.leg {
            Leg::Quic(pair) => pair.forward().share_above_capacity(from, to, bin),
            Leg::WebRtc(leg) => leg.forward().share_above_capacity(from, to, bin),
        }
    }

    /// Sets the forward link's random loss from now on.
    pub fn set_forward_loss(&mut self, loss: f64) {
        match &mut self.leg {
            Leg::Quic(pair) => pair.set_forward_loss(loss),
            Leg::WebRtc(leg) => leg.set_forward_loss(loss),
        }
    }

    /// The SFU core.
    pub fn sfu(&self) -> &Sfu {
        &self.sfu
    }

    /// Publisher `n`'s media (to stop a layer, say).
    pub fn publisher(&mut self, n: usize) -> &mut SimulcastPublisher {
        &mut self.publishers[n].source
    }

    /// Sets the priority of the subscriber's subscription to publisher `n`'s video.
    pub fn set_priority(&mut self, n: usize, priority: Option<u8>) {
        let now = self.now();
        let track = self.publishers[n].video;
        let _ = self.sfu.set_priority(self.subscriber, track, priority, now);
        self.drain_events(now);
    }

    /// Runs everything up to `until`.
    pub fn run_until(&mut self, until: Instant) {
        let mut guard = 0u64;
        loop {
            guard += 1;
            assert!(guard < 50_000_000, "the simulation does not advance");
            let mut next = until.min(self.next_sample).min(self.next_slot);
            if self.ack_feedback && matches!(self.leg, Leg::Quic(_)) {
                next = next.min(self.next_refresh);
            }
            for p in &self.publishers {
                next = next.min(p.source.poll_timeout().max(p.starts));
            }
            if let Some(at) = self.padding.as_ref().and_then(Padding::poll_timeout) {
                next = next.min(at);
            }
            if let Some(at) = self.sfu.poll_timeout() {
                next = next.min(at);
            }
            if let Some(at) = self.leg.poll_timeout() {
                next = next.min(at);
            }
            let next = next.max(self.leg.now());
            self.leg.run_until(next);
            self.receive(next);
            if next >= until && self.leg.now() >= until {
                self.step(next);
                break;
            }
            self.step(next);
        }
    }

    /// Runs for `duration` more.
    pub fn run_for(&mut self, duration: Duration) {
        let until = self.now() + duration;
        self.run_until(until);
    }

    fn receive(&mut self, now: Instant) {
        match &mut self.leg {
            Leg::Quic(pair) => {
                for (at, datagram) in pair.take_received() {
                    match datagram::parse_media(&datagram) {
                        Ok((_, rtp)) => {
                            self.receiver.on_rtp(at, rtp);
                            self.watch_gap(rtp, now);
                        }
                        Err(_) => {
                            // Padding (or anything else): dropped, as a client does.
                        }
                    }
                }
            }
            Leg::WebRtc(leg) => {
                for (at, rtp) in leg.take_received() {
                    self.receiver.on_rtp(at, &rtp);
                    self.watch_gap(&rtp, now);
                }
            }
        }
    }

    /// Asks for a keyframe when a video stream skips a sequence number.
    fn watch_gap(&mut self, rtp: &[u8], now: Instant) {
        if rtp.len() < 12 {
            return;
        }
        let seq = u16::from_be_bytes([rtp[2], rtp[3]]);
        let ssrc = u32::from_be_bytes([rtp[8], rtp[9], rtp[10], rtp[11]]);
        let Some(p) = self.publishers.iter().find(|p| p.video_ssrc == ssrc) else {
            return;
        };
        let track = p.video;
        let entry = self
            .streams
            .entry(ssrc)
            .or_insert((seq.wrapping_sub(1), None));
        let gap = seq.wrapping_sub(entry.0) > 1 && seq.wrapping_sub(entry.0) < 0x8000;
        if seq.wrapping_sub(entry.0) < 0x8000 {
            entry.0 = seq;
        }
        if gap && entry.1.is_none_or(|at| now >= at + KEYFRAME_ASK_INTERVAL) {
            entry.1 = Some(now);
            let _ = self.sfu.request_keyframe(self.subscriber, track, now);
        }
    }

    fn step(&mut self, now: Instant) {
        // The estimate, as the gateway's session (QUIC) or bridge (WebRTC) feeds it.
        let sample = now >= self.next_sample;
        if sample {
            self.next_sample = now + self.sample_interval;
        }
        let estimates: Vec<Estimate> = match &mut self.leg {
            Leg::Quic(pair) => {
                // Between samples, the acknowledgements alone with the last sample's counters,
                // at the gateway's pace.
                let mut refresh = false;
                if self.ack_feedback && now >= self.next_refresh {
                    let (due, pause) = self.refresh.ticked(pair.server_stats().frame_tx.datagram);
                    refresh = due && !sample;
                    self.next_refresh = now + pause;
                }
                let reading = if sample {
                    let s = pair.server_sample();
                    self.last_sample = Some(s);
                    Some(s)
                } else if refresh {
                    self.last_sample.map(|s| QuicSample { at: now, ..s })
                } else {
                    None
                };
                let estimate = reading.and_then(|s| {
                    if self.ack_feedback {
                        self.acks.clear();
                        pair.server_acks(&mut self.acks);
                        self.estimator.update_with_acks(s, &self.acks)
                    } else {
                        self.estimator.update(s)
                    }
                });
                estimate.into_iter().collect()
            }
            Leg::WebRtc(leg) => leg.take_estimates().into_iter().map(|(_, e)| e).collect(),
        };
        for estimate in estimates {
            self.estimates.push((now - self.start(), estimate));
            let report = self.last_sent.is_none_or(|last| estimate.moved_from(&last));
            if report {
                self.last_sent = Some(estimate);
                let _ = self.sfu.set_estimate(self.subscriber, estimate, now);
            }
        }
        if self.sfu.poll_timeout().is_some_and(|at| at <= now) {
            self.sfu.handle_timeout(now);
        }
        // The publishers' media through the core.
        for n in 0..self.publishers.len() {
            if now < self.publishers[n].starts {
                continue;
            }
            self.publishers[n].started = true;
            for packet in self.publishers[n].source.poll_packets(now) {
                let media = match packet.kind {
                    MediaKind::Video { layer, .. } => MediaId(1 + layer as u32),
                    MediaKind::Audio => MediaId(100),
                };
                self.forward(n, media, &packet.rtp, now);
            }
        }
        // A probe's padding.
        if let Some(padding) = self.padding.as_mut() {
            let mut bytes = padding.take(now);
            match &mut self.leg {
                Leg::Quic(pair) => {
                    while bytes > 0 {
                        let len = bytes.min(1000);
                        bytes -= len;
                        self.scratch.clear();
                        datagram::write_padding(&mut self.scratch, len);
                        self.padding_bytes += len as u64;
                        if pair
                            .send_datagram(Bytes::copy_from_slice(&self.scratch))
                            .is_err()
                        {
                            self.refused += 1;
                        }
                    }
                }
                Leg::WebRtc(leg) => {
                    if bytes > 0 {
                        self.padding_bytes += leg.send_padding(now, bytes) as u64;
                    }
                }
            }
        }
        // A decoder that cannot render asks for a keyframe again while it waits (a browser
        // sends PLIs while its picture is frozen), not only when it sees a gap.
        for n in 0..self.publishers.len() {
            let p = &self.publishers[n];
            let paused = self
                .sfu
                .subscription(self.subscriber, p.video)
                .is_none_or(|s| s.info.paused);
            let frozen = self
                .receiver
                .video(p.video_ssrc)
                .is_some_and(|v| v.ongoing_freeze(now).is_some());
            if paused || !frozen {
                continue;
            }
            let (ssrc, track) = (p.video_ssrc, p.video);
            let entry = self.streams.entry(ssrc).or_insert((0, None));
            if entry.1.is_none_or(|at| now >= at + FROZEN_ASK_INTERVAL) {
                entry.1 = Some(now);
                let _ = self.sfu.request_keyframe(self.subscriber, track, now);
            }
        }
        self.drain_events(now);
        if now >= self.next_slot {
            self.next_slot += SLOT;
            let at = now - self.start();
            for (n, p) in self.publishers.iter().enumerate() {
                if let Some(s) = self.sfu.subscription(self.subscriber, p.video) {
                    self.timeline[n].push(Slot {
                        at,
                        current: if s.info.paused { None } else { s.current_layer },
                        target: s.target_layer,
                        paused: s.info.paused,
                    });
                }
            }
        }
    }

    fn forward(&mut self, n: usize, media: MediaId, rtp: &[u8], now: Instant) {
        let publisher = self.publishers[n].id;
        let subscriber = self.subscriber;
        let mut out: Vec<(MediaId, Vec<u8>)> = Vec::new();
        let _ = self
            .sfu
            .handle_rtp(publisher, media, rtp, now, &mut |fwd: sfu::Forward<'_>| {
                if fwd.to == subscriber {
                    let mut bytes = vec![0; fwd.len()];
                    fwd.write_into(&mut bytes);
                    out.push((MediaId(fwd.media.0), bytes));
                }
            });
        for (media, rtp) in out {
            match &mut self.leg {
                Leg::Quic(pair) => {
                    let media = strait_protocol::MediaId(media.0);
                    let mut buf = vec![0; datagram::media_header_len(media) + rtp.len()];
                    if datagram::write_media_datagram(media, &rtp, &mut buf).is_ok()
                        && pair.send_datagram(Bytes::from(buf)).is_err()
                    {
                        self.refused += 1;
                    }
                }
                Leg::WebRtc(leg) => {
                    if leg.send_rtp(now, &rtp).is_err() {
                        self.refused += 1;
                    }
                }
            }
        }
        self.drain_events(now);
    }

    fn drain_events(&mut self, now: Instant) {
        while let Some(event) = self.sfu.poll_event() {
            match event {
                Event::KeyframeRequest { to, layer, .. } => {
                    if let Some(p) = self.publishers.iter_mut().find(|p| p.id == to) {
                        p.source.request_keyframe(usize::from(layer));
                    }
                }
                Event::Probe {
                    to,
                    padding_bps,
                    until,
                } if to == self.subscriber => {
                    self.probes.push((now - self.start(), padding_bps));
                    self.padding = (padding_bps > 0).then(|| Padding::new(padding_bps, until, now));
                }
                Event::Notify {
                    notification: Notification::TrackPaused { .. },
                    ..
                } => self.pause_notes += 1,
                Event::Notify {
                    notification: Notification::TrackResumed { .. },
                    ..
                } => self.resume_notes += 1,
                _ => {}
            }
        }
    }

    /// Every probe event for the subscriber: when, and the padding it asked for (0 stops it).
    pub fn probes(&self) -> &[(Duration, u64)] {
        &self.probes
    }

    /// How many publishers' videos the subscriber has.
    pub fn videos(&self) -> usize {
        self.timeline.len()
    }

    /// Publisher `n`'s video subscription, slot by slot.
    pub fn timeline(&self, n: usize) -> &[Slot] {
        &self.timeline[n]
    }

    /// Publisher `n`'s video as the subscriber rendered it.
    pub fn video_report(&self, n: usize) -> Option<VideoReport> {
        self.receiver
            .video(self.publishers[n].video_ssrc)
            .map(|v| v.report())
    }

    /// The share of publisher `n`'s audio that reached the subscriber, of what was sent after
    /// `from` (approximately: packets received over packets sent).
    pub fn audio_ratio(&self, n: usize) -> f64 {
        let p = &self.publishers[n];
        self.receiver
            .audio_delivered_ratio(p.audio_ssrc, p.source.audio_sent())
    }

    /// The estimates the estimator produced, with their time since the start.
    pub fn estimates(&self) -> &[(Duration, Estimate)] {
        &self.estimates
    }

    /// Padding bytes sent by probes.
    pub fn padding_bytes(&self) -> u64 {
        self.padding_bytes
    }

    /// `TrackPaused` and `TrackResumed` notifications the subscriber was sent.
    pub fn pause_notifications(&self) -> (u64, u64) {
        (self.pause_notes, self.resume_notes)
    }

    /// Datagrams quinn refused (a full send buffer without drop-oldest).
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Whether the estimate was ever `state`.
    pub fn ever(&self, state: LinkState) -> bool {
        self.estimates.iter().any(|(_, e)| e.state == state)
    }
}

/// Measures over a timeline.
pub mod measure {
    use std::time::Duration;

    use super::Slot;

    /// Changes of the forwarded layer (pauses and resumes included) within `[from, to)`.
    pub fn switches(slots: &[Slot], from: Duration, to: Duration) -> usize {
        let within: Vec<&Slot> = slots.iter().filter(|s| s.at >= from && s.at < to).collect();
        within
            .windows(2)
            .filter(|w| w[0].current.is_some() || w[1].current.is_some())
            .filter(|w| w[0].current != w[1].current)
            .count()
    }

    /// Changes of the allocation's choice (target layer or pause) within `[from, to)`.
    pub fn allocation_changes(slots: &[Slot], from: Duration, to: Duration) -> usize {
        let within: Vec<&Slot> = slots.iter().filter(|s| s.at >= from && s.at < to).collect();
        within
            .windows(2)
            .filter(|w| (w[0].target, w[0].paused) != (w[1].target, w[1].paused))
            .count()
    }

    /// The first slot at or after `from` whose forwarded layer is at least `layer`.
    pub fn first_at_least(slots: &[Slot], from: Duration, layer: u8) -> Option<Duration> {
        slots
            .iter()
            .find(|s| s.at >= from && s.current.is_some_and(|c| c >= layer))
            .map(|s| s.at - from)
    }

    /// The mean forwarded layer within `[from, to)` (a paused slot counts as −1).
    pub fn mean_layer(slots: &[Slot], from: Duration, to: Duration) -> f64 {
        let within: Vec<f64> = slots
            .iter()
            .filter(|s| s.at >= from && s.at < to)
            .map(|s| s.current.map_or(-1.0, f64::from))
            .collect();
        within.iter().sum::<f64>() / within.len().max(1) as f64
    }
}
