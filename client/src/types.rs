//! The values the session API takes and returns, and the events it reports.

use std::time::Duration;

use bytes::Bytes;
use strait_protocol::{
    Codec, ErrorCode, MediaId, ParticipantId, ParticipantInfo, PauseReason, RoomId, TrackId,
    TrackInfo, TrackKind,
};
use tokio::time::Instant;

use crate::error::ClientError;

/// One simulcast layer to publish (the media id is chosen by the session).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LayerSpec {
    /// Target bitrate in bits per second (0 when unknown).
    pub max_bitrate: u32,
    /// Frame width in pixels (0 for audio or unknown).
    pub width: u16,
    /// Frame height in pixels (0 for audio or unknown).
    pub height: u16,
}

/// What [`crate::Session::publish`] announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishSpec {
    /// Audio or video.
    pub kind: TrackKind,
    /// The codec of every layer.
    pub codec: Codec,
    /// What the track is (`camera`, `microphone`, `screen`…).
    pub source: String,
    /// 1 to 3 layers, lowest quality first.
    pub layers: Vec<LayerSpec>,
    /// Start muted.
    pub muted: bool,
}

/// A track this session publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedTrack {
    /// The server's id for the track.
    pub track: TrackId,
    /// The media id of each layer, in the order of [`PublishSpec::layers`]: send layer `i`'s RTP
    /// with `send_rtp(media[i], …)`. They stay valid across a resume.
    pub media: Vec<MediaId>,
    /// Whether it is muted.
    pub muted: bool,
}

/// How to receive a track ([`crate::Session::subscribe_with`]), or what a subscription wants
/// from now on ([`crate::Session::set_layer_preference_with`]). The default is what
/// [`crate::Session::subscribe`] with `None` asks for: the best layer, the server's priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscribeOptions {
    /// The highest layer wanted (an index into the track's layers); `None` for the best
    /// available.
    pub max_layer: Option<u8>,
    /// How much the subscription matters when this session's link cannot carry every video it
    /// receives: the server pauses the lowest priority first ([`SessionEvent::TrackPaused`]),
    /// higher wins. `None` leaves it to the server, which derives it from the track's source
    /// (`screen` [`strait_protocol::SCREEN_PRIORITY`], any other
    /// [`strait_protocol::DEFAULT_PRIORITY`]); it is then not sent at all, so a server that
    /// predates priorities reads the same request as before.
    pub priority: Option<u8>,
}

/// A track this session receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    /// The track.
    pub track: TrackId,
    /// The media id its RTP arrives on (see [`MediaPacket::media`]).
    pub media: MediaId,
    /// The SSRC the forwarded RTP carries, whatever the layer; stable across resumes.
    pub ssrc: u32,
    /// The layer being forwarded.
    pub layer: u8,
    /// Why the server paused this subscription's video, while it is paused
    /// ([`SessionEvent::TrackPaused`]); `None` while it is forwarded.
    pub paused: Option<PauseReason>,
}

/// The room this session is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedRoom {
    /// The room.
    pub room: RoomId,
    /// This participant as others see it.
    pub me: ParticipantInfo,
}

/// One received RTP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaPacket {
    /// The media id it arrived on (a [`Subscription::media`]). Datagrams are not ordered with the
    /// control stream, so a packet may arrive just before the `Subscribed` that names its id.
    pub media: MediaId,
    /// The RTP packet as received (header checked, payload untouched); a zero-copy slice of the
    /// datagram.
    pub rtp: Bytes,
    /// When the session's task took it off the connection.
    pub received_at: Instant,
}

/// Something that happened to the session, from [`crate::Session::next_event`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SessionEvent {
    /// Someone is in the room (sent for everyone present after a join or a resume).
    ParticipantJoined(ParticipantInfo),
    /// Someone left the room.
    ParticipantLeft {
        /// Who.
        participant: ParticipantId,
        /// Why (`NONE` for a voluntary leave).
        reason: ErrorCode,
    },
    /// A track is available (sent for every track present after a join or a resume).
    TrackPublished(TrackInfo),
    /// A track went away; a subscription to it ended.
    TrackUnpublished {
        /// The track.
        track: TrackId,
        /// Its publisher.
        participant: ParticipantId,
    },
    /// A track was muted or unmuted by its publisher.
    TrackMuted {
        /// The track.
        track: TrackId,
        /// The new state.
        muted: bool,
    },
    /// The server wants a keyframe on one of this session's tracks (`layer: None` = every layer).
    KeyframeRequested {
        /// The track.
        track: TrackId,
        /// The layer, if one.
        layer: Option<u8>,
    },
    /// The server paused a subscription's video: nothing arrives on its media id until
    /// [`SessionEvent::TrackResumed`]. The subscription stays; keep showing the last frame or a
    /// placeholder, and do not unsubscribe. A subscription can be paused from its start (this
    /// event right after `subscribe` returns).
    TrackPaused {
        /// The subscribed track.
        track: TrackId,
        /// Why: [`PauseReason::BANDWIDTH`] (this session's link cannot carry it; the lowest
        /// priority is paused first) or [`PauseReason::LOAD`] (the server sheds load). An open
        /// set: a newer server may give a reason this build prints as a number.
        reason: PauseReason,
    },
    /// The server forwards a paused subscription's video again.
    TrackResumed {
        /// The subscribed track.
        track: TrackId,
        /// The reason of the pause that ended.
        reason: PauseReason,
    },
    /// A subscription now carries another layer.
    LayerSwitched {
        /// The subscribed track.
        track: TrackId,
        /// The layer now forwarded.
        layer: u8,
    },
    /// The room as restored after a resume (`Joined` with request id 0).
    Joined(JoinedRoom),
    /// A subscription as restored after a resume (`Subscribed` with request id 0).
    Subscribed(Subscription),
    /// The server is draining; with `auto_resume` the session moves by itself.
    GoAway {
        /// Why (`GOING_AWAY`).
        code: ErrorCode,
        /// Where to reconnect, if the server said.
        redirect: Option<String>,
    },
    /// A session-level `Error` from the server; the server closes the session after it.
    Error {
        /// The code.
        code: ErrorCode,
        /// Words for a human.
        reason: String,
    },
    /// The connection was lost; a reconnection with the resume token starts (media sends fail
    /// with [`crate::SendError::NotConnected`] meanwhile, requests wait).
    ConnectionLost {
        /// What happened.
        reason: String,
    },
    /// The session was taken back on a new connection: room, tracks, media ids and subscriptions
    /// are intact. The server re-announces the room next (`Joined`, `ParticipantJoined`…,
    /// `TrackPublished`…, `Subscribed`…): treat those as a refresh, not as news.
    Resumed {
        /// The same participant id as before.
        participant: ParticipantId,
        /// From the loss being noticed (or the move starting) to `ServerHello`.
        outage: Duration,
        /// Connection attempts it took.
        attempts: u32,
    },
    /// The server did not honour the resume token (its node died, say): this is a fresh
    /// session with a new participant id. With [`ClientConfig::rejoin`] (the default) the
    /// session joins its room and publishes its tracks again by itself, and
    /// [`SessionEvent::Rejoined`] or [`SessionEvent::RejoinFailed`] follows; without it, join and
    /// publish again.
    ///
    /// [`ClientConfig::rejoin`]: crate::ClientConfig::rejoin
    ResumeFailed {
        /// The new participant id.
        participant: ParticipantId,
    },
    /// After a refused resume or a move of the room to another node, the session joined its
    /// room again and published its tracks again, with the same media ids (keep sending on
    /// them). Subscriptions are not restored: the room's tracks are announced afresh
    /// (`TrackPublished`, new track ids); subscribe to the ones wanted.
    Rejoined {
        /// The room, and who this session is in it now.
        room: JoinedRoom,
        /// Each track published again: its old id and its new one.
        tracks: Vec<(TrackId, TrackId)>,
    },
    /// Joining the room again (or publishing a track again) failed; the session is connected
    /// but not in the room (or lacks the tracks not listed in an earlier `Rejoined`).
    RejoinFailed {
        /// Why.
        error: ClientError,
    },
    /// The server renewed the resume token (`NewResumeToken`); the session keeps the latest
    /// and presents it at its next resume. Nothing to do.
    ResumeTokenRenewed,
    /// Events were dropped because nobody took them in time (the event queue was full); the
    /// session's state accessors are still up to date.
    EventsDropped {
        /// How many since the last report.
        count: u64,
    },
    /// The session is over; no more events follow.
    Closed(ClientError),
}
