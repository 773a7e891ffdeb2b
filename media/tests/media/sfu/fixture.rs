//! Drives an `Sfu` with virtual time and synthetic RTP.

use std::time::{Duration, Instant};

use strait_media::sfu::{
    CodecSpec, Event, LayerSpec, MediaId, Notification, ParticipantId, ParticipantMeta,
    RoomSnapshot, Sfu, SfuConfig, SubscriptionInfo, TrackId, TrackKind, TrackSpec,
};

/// Layer bitrates of the simulcast fixture track.
pub(crate) const LOW: u32 = 150_000;
pub(crate) const MID: u32 = 500_000;
pub(crate) const HIGH: u32 = 1_500_000;

/// One forwarded packet as a subscriber would receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Received {
    pub(crate) to: ParticipantId,
    pub(crate) media: MediaId,
    pub(crate) track: TrackId,
    pub(crate) layer: u8,
    pub(crate) ssrc: u32,
    pub(crate) seq: u16,
    pub(crate) ts: u32,
    pub(crate) bytes: Vec<u8>,
}

/// An SFU with a virtual clock.
pub(crate) struct Harness {
    pub(crate) sfu: Sfu,
    pub(crate) base: Instant,
    pub(crate) now: Instant,
}

pub(crate) fn p(id: u64) -> ParticipantId {
    ParticipantId(id)
}

impl Harness {
    pub(crate) fn new() -> Self {
        Self::with_config(SfuConfig::default())
    }

    pub(crate) fn with_config(config: SfuConfig) -> Self {
        // The only clock read: a base for virtual time.
        let base = Instant::now();
        Self {
            sfu: Sfu::new(config, 0x5eed),
            base,
            now: base,
        }
    }

    /// Moves virtual time forward and runs whatever became due, as the gateway's loop would.
    pub(crate) fn advance(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        if self.sfu.poll_timeout().is_some_and(|at| at <= self.now) {
            self.sfu.handle_timeout(self.now);
        }
    }

    /// Drains the event queue.
    pub(crate) fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.sfu.poll_event()).collect()
    }

    /// Drains the event queue, keeping the notifications for `to`.
    pub(crate) fn notifications_for(events: &[Event], to: u64) -> Vec<Notification> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Notify {
                    to: t,
                    notification,
                } if *t == p(to) => Some(notification.clone()),
                _ => None,
            })
            .collect()
    }

    /// Keyframe requests in `events`, as `(publisher, track, layer, media)`.
    pub(crate) fn keyframe_requests(
        events: &[Event],
    ) -> Vec<(ParticipantId, TrackId, u8, MediaId)> {
        events
            .iter()
            .filter_map(|e| match *e {
                Event::KeyframeRequest {
                    to,
                    track,
                    layer,
                    media,
                } => Some((to, track, layer, media)),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn join(&mut self, id: u64, room: &str) -> RoomSnapshot {
        let meta = ParticipantMeta {
            identity: format!("user-{id}"),
            name: format!("User {id}"),
        };
        self.sfu.join(p(id), room, meta, self.now).expect("join")
    }

    pub(crate) fn join_relay(&mut self, id: u64, room: &str) -> RoomSnapshot {
        self.sfu
            .join_relay(p(id), room, self.now)
            .expect("join_relay")
    }

    pub(crate) fn publish(&mut self, id: u64, spec: TrackSpec) -> TrackId {
        self.sfu.publish(p(id), spec, self.now).expect("publish")
    }

    pub(crate) fn subscribe(&mut self, id: u64, track: TrackId) -> SubscriptionInfo {
        self.sfu
            .subscribe(p(id), track, None, self.now)
            .expect("subscribe")
    }

    /// Feeds one packet and returns what was forwarded, each rewritten with `write_into`.
    pub(crate) fn send(&mut self, publisher: u64, media: u32, packet: &[u8]) -> Vec<Received> {
        let mut received = Vec::new();
        let mut buf = [0u8; 1500];
        self.sfu
            .handle_rtp(p(publisher), MediaId(media), packet, self.now, &mut |fwd| {
                let len = fwd.write_into(&mut buf);
                assert_eq!(len, fwd.len());
                received.push(Received {
                    to: fwd.to,
                    media: fwd.media,
                    track: fwd.track,
                    layer: fwd.layer,
                    ssrc: fwd.ssrc(),
                    seq: fwd.sequence_number(),
                    ts: fwd.timestamp(),
                    bytes: buf[..len].to_vec(),
                });
            })
            .expect("handle_rtp");
        received
    }
}

pub(crate) fn opus() -> CodecSpec {
    CodecSpec {
        name: "opus".into(),
        payload_type: 111,
        clock_rate: 48_000,
        channels: 2,
        fmtp: "minptime=10;useinbandfec=1".into(),
    }
}

pub(crate) fn video_codec(name: &str) -> CodecSpec {
    CodecSpec {
        name: name.into(),
        payload_type: 96,
        clock_rate: 90_000,
        channels: 0,
        fmtp: String::new(),
    }
}

pub(crate) fn audio_track(media: u32) -> TrackSpec {
    TrackSpec {
        kind: TrackKind::Audio,
        codec: opus(),
        source: "microphone".into(),
        layers: vec![LayerSpec {
            media: MediaId(media),
            max_bitrate: 32_000,
            width: 0,
            height: 0,
        }],
        muted: false,
    }
}

/// A video track of `codec` with one layer per media id (1 to 3), bitrates LOW, MID, HIGH.
pub(crate) fn video_track(codec: &str, media: &[u32]) -> TrackSpec {
    let sizes = [(LOW, 320, 180), (MID, 640, 360), (HIGH, 1280, 720)];
    TrackSpec {
        kind: TrackKind::Video,
        codec: video_codec(codec),
        source: "camera".into(),
        layers: media
            .iter()
            .zip(sizes)
            .map(|(&m, (max_bitrate, width, height))| LayerSpec {
                media: MediaId(m),
                max_bitrate,
                width,
                height,
            })
            .collect(),
        muted: false,
    }
}

/// An RTP packet with a fixed header only.
pub(crate) fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x80, pt];
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(&ts.to_be_bytes());
    packet.extend_from_slice(&ssrc.to_be_bytes());
    packet.extend_from_slice(payload);
    packet
}

/// The sequence number, timestamp and SSRC of a packet.
pub(crate) fn header_of(packet: &[u8]) -> (u16, u32, u32) {
    (
        u16::from_be_bytes([packet[2], packet[3]]),
        u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]),
        u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]),
    )
}

/// A VP8 payload: descriptor with S=1, PID=0, then the payload header (P=0 for a keyframe).
pub(crate) fn vp8(key: bool) -> Vec<u8> {
    let mut payload = vec![0x10, if key { 0x10 } else { 0x11 }, 0x02, 0x00];
    payload.extend_from_slice(&[0xab; 20]);
    payload
}

/// A VP8 payload that continues a frame (S=0).
pub(crate) fn vp8_continuation() -> Vec<u8> {
    let mut payload = vec![0x00];
    payload.extend_from_slice(&[0xcd; 20]);
    payload
}

/// An Opus payload.
pub(crate) fn opus_payload() -> Vec<u8> {
    vec![0xfc, 0xff, 0xfe, 0x01, 0x02]
}

/// A publisher's RTP stream on one media id: consecutive sequence numbers, a frame per packet.
#[derive(Debug, Clone)]
pub(crate) struct Stream {
    pub(crate) media: u32,
    pub(crate) pt: u8,
    pub(crate) ssrc: u32,
    pub(crate) seq: u16,
    pub(crate) ts: u32,
    pub(crate) ts_step: u32,
}

impl Stream {
    pub(crate) fn video(media: u32, first_seq: u16) -> Self {
        Self {
            media,
            pt: 96,
            ssrc: 0x1000 + media,
            seq: first_seq,
            ts: 90_000,
            ts_step: 3000,
        }
    }

    pub(crate) fn audio(media: u32) -> Self {
        Self {
            media,
            pt: 111,
            ssrc: 0x2000 + media,
            seq: 100,
            ts: 48_000,
            ts_step: 960,
        }
    }

    /// The next packet with this payload.
    pub(crate) fn next(&mut self, payload: &[u8]) -> Vec<u8> {
        let packet = rtp(self.pt, self.seq, self.ts, self.ssrc, payload);
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(self.ts_step);
        packet
    }
}
