//! What goes into and comes out of the core besides RTP: track descriptions, snapshots, events.

use super::ids::{MediaId, ParticipantId, RoomName, TrackId};

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackKind {
    /// Audio: one layer, every packet forwarded as soon as it arrives.
    Audio,
    /// Video: 1 to 3 simulcast layers, forwarding starts and switches at keyframes.
    Video,
}

/// An RTP codec, as SDP describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecSpec {
    /// Encoding name as in SDP `a=rtpmap` (`VP8`, `VP9`, `H264`, `AV1`, `opus`), compared
    /// case-insensitively. It selects the keyframe detector; other video names are forwarded
    /// without layer switching.
    pub name: String,
    /// RTP payload type the publisher uses; forwarded unchanged.
    pub payload_type: u8,
    /// RTP clock rate in Hz (90000 for video, 48000 for Opus). Converts wall time to timestamp
    /// ticks when a subscription switches layers; must not be zero.
    pub clock_rate: u32,
    /// Audio channels (2 for Opus as SDP says it; 0 for video).
    pub channels: u8,
    /// Format parameters as in SDP `a=fmtp` (may be empty). Opaque to the core.
    pub fmtp: String,
}

/// One layer of a track as its publisher describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerSpec {
    /// The media id the publisher sends this layer's RTP on; unique among its live layers.
    pub media: MediaId,
    /// Target bitrate in bits per second; drives layer choice. `0` when unknown, which the layer
    /// choice treats as free.
    pub max_bitrate: u32,
    /// Frame width in pixels (0 for audio or unknown).
    pub width: u16,
    /// Frame height in pixels (0 for audio or unknown).
    pub height: u16,
}

/// A track to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackSpec {
    /// Audio or video.
    pub kind: TrackKind,
    /// The codec of every layer.
    pub codec: CodecSpec,
    /// What the track is (`camera`, `microphone`, `screen`…); free text, passed on to others.
    pub source: String,
    /// Simulcast layers, lowest quality first: 1 to 3 for video, exactly 1 for audio.
    pub layers: Vec<LayerSpec>,
    /// Whether the track starts muted.
    pub muted: bool,
}

/// Who a participant is, as the caller authenticated it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParticipantMeta {
    /// Stable identity (for example the token's subject).
    pub identity: String,
    /// Display name.
    pub name: String,
}

/// A participant as others see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantInfo {
    /// Its id.
    pub participant: ParticipantId,
    /// Stable identity.
    pub identity: String,
    /// Display name.
    pub name: String,
}

/// One layer of a track as subscribers see it (the publisher's media id is not theirs to know).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerInfo {
    /// Target bitrate in bits per second (0 when unknown).
    pub max_bitrate: u32,
    /// Frame width (0 for audio or unknown).
    pub width: u16,
    /// Frame height (0 for audio or unknown).
    pub height: u16,
}

/// A track available in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    /// The track's id.
    pub track: TrackId,
    /// Who publishes it.
    pub participant: ParticipantId,
    /// Audio or video.
    pub kind: TrackKind,
    /// Its codec (forwarded RTP keeps this payload type).
    pub codec: CodecSpec,
    /// What it is.
    pub source: String,
    /// Its layers, lowest first.
    pub layers: Vec<LayerInfo>,
    /// Whether its publisher has muted it.
    pub muted: bool,
}

/// What a participant sees of its room when it joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSnapshot {
    /// The room.
    pub room: RoomName,
    /// The participant itself.
    pub you: ParticipantInfo,
    /// Every other participant present, in join order (disconnected ones in their grace period
    /// included: they are still members; relay members never: they are invisible).
    pub participants: Vec<ParticipantInfo>,
    /// Every track other participants publish, in publish order.
    pub tracks: Vec<TrackInfo>,
}

/// A subscription as its subscriber sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionInfo {
    /// The subscribed track.
    pub track: TrackId,
    /// The media id the core forwards this track on, in the subscriber's session. Unique among
    /// its live subscriptions; freed ones are reused lowest first.
    pub media: MediaId,
    /// The SSRC every forwarded packet carries; stable across layer switches and resumes.
    /// Reserved but unused for a relay member, whose packets keep the publisher's SSRCs.
    pub ssrc: u32,
    /// The layer forwarded first (at subscribe), or now (in a [`ResumeSnapshot`]); for a relay
    /// member, the highest layer passed through.
    pub layer: u8,
    /// The allocation paused it (its subscriber's budget does not cover it): nothing is
    /// forwarded until [`Notification::TrackResumed`].
    pub paused: bool,
}

/// What a participant gets back when it resumes within its grace period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeSnapshot {
    /// The room as it is now; notifications missed while disconnected are not replayed.
    pub room: RoomSnapshot,
    /// The participant's own tracks that are still published.
    pub published: Vec<TrackInfo>,
    /// Its subscriptions that are still active, with the same media ids and SSRCs as before.
    pub subscriptions: Vec<SubscriptionInfo>,
}

/// Why a participant left its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LeaveReason {
    /// It asked to leave (or closed its session cleanly).
    Left,
    /// Its connection was lost and it did not come back within the grace period.
    Timeout,
    /// An administrator or a policy removed it.
    Kicked,
    /// The server is shutting down or draining.
    Shutdown,
    /// The room closed under a relay member: its last ordinary member left
    /// ([`Sfu::join_relay`](super::Sfu::join_relay)). Only in [`Event::ParticipantRemoved`].
    RoomClosed,
}

/// Something a participant should be told.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notification {
    /// Someone joined the recipient's room.
    ParticipantJoined(ParticipantInfo),
    /// Someone left the recipient's room (its tracks were unpublished just before).
    ParticipantLeft {
        /// Who left.
        participant: ParticipantId,
        /// Why.
        reason: LeaveReason,
    },
    /// A track was published in the recipient's room.
    TrackPublished(TrackInfo),
    /// A track went away; a subscription to it, if any, has ended.
    TrackUnpublished {
        /// The track.
        track: TrackId,
        /// Who published it.
        participant: ParticipantId,
    },
    /// A track's mute state changed.
    TrackMuted {
        /// The track.
        track: TrackId,
        /// The new state.
        muted: bool,
    },
    /// The layer forwarded on one of the recipient's subscriptions changed (at a keyframe).
    LayerSwitched {
        /// The subscribed track.
        track: TrackId,
        /// The layer now forwarded.
        layer: u8,
    },
    /// One of the recipient's video subscriptions is paused: nothing of it is forwarded, the
    /// subscription stays.
    TrackPaused {
        /// The subscribed track.
        track: TrackId,
        /// Why.
        reason: PauseReason,
    },
    /// A paused subscription forwards again (from a keyframe).
    TrackResumed {
        /// The subscribed track.
        track: TrackId,
        /// Why it had been paused.
        reason: PauseReason,
    },
}

/// Why a subscription is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PauseReason {
    /// The subscriber's link cannot carry it: the lowest-priority video is paused first.
    Bandwidth,
    /// The node sheds load.
    Load,
}

/// Output of the core for the gateway, from [`Sfu::poll_event`](super::Sfu::poll_event).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Tell a participant something. Never produced for a disconnected participant: those
    /// notifications are dropped (and counted) because it gets a fresh snapshot on reconnect.
    Notify {
        /// The recipient.
        to: ParticipantId,
        /// What to tell it.
        notification: Notification,
    },
    /// Ask a publisher for a keyframe of one layer of one of its tracks (already throttled).
    KeyframeRequest {
        /// The publisher.
        to: ParticipantId,
        /// The track.
        track: TrackId,
        /// The layer index (0 is the lowest).
        layer: u8,
        /// The publisher's media id for that layer.
        media: MediaId,
    },
    /// The core removed a participant on its own (its grace period ran out, or it was a relay
    /// member of a room that closed); the gateway can forget its session (or link). Not produced
    /// for the participant [`Sfu::leave`](super::Sfu::leave) was called for, which the gateway
    /// knows of.
    ParticipantRemoved {
        /// The participant, already gone from the core.
        participant: ParticipantId,
        /// Why.
        reason: LeaveReason,
    },
    /// Probe a subscriber's link before climbing: send it padding at `padding_bps` on top of
    /// its media until `until` (a padding datagram on QUIC, which clients drop). A probe with
    /// `padding_bps` 0 ends the one running (it succeeded early, or the link began to queue).
    /// Its outcome is judged by the estimates that follow.
    Probe {
        /// The subscriber.
        to: ParticipantId,
        /// Padding to send, bits per second (0: stop).
        padding_bps: u64,
        /// When to stop.
        until: std::time::Instant,
    },
}
