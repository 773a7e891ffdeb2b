//! Errors of the SFU's mutators.

use thiserror::Error;

use super::ids::{MediaId, ParticipantId, RoomName, TrackId};
use super::rtp::RtpError;

/// Why a call to the SFU core was refused. Nothing changed when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SfuError {
    /// A track with this id exists already ([`Sfu::publish_as`](super::Sfu::publish_as)).
    #[error("track id {0} is in use")]
    TrackIdInUse(TrackId),
    /// The participant is not in any room (never joined, or already left or removed).
    #[error("unknown participant {0}")]
    UnknownParticipant(ParticipantId),
    /// The participant id is already in a room.
    #[error("participant {0} has already joined a room")]
    AlreadyJoined(ParticipantId),
    /// The room name is empty.
    #[error("room name is empty")]
    InvalidRoomName,
    /// No such room: a relay member joins only a room that has members
    /// ([`Sfu::join_relay`](super::Sfu::join_relay)).
    #[error("no room named {0}")]
    UnknownRoom(RoomName),
    /// The room already holds `max_participants_per_room` participants.
    #[error("room is full ({max} participants)")]
    RoomFull {
        /// The limit.
        max: usize,
    },
    /// Creating the room would exceed `max_rooms`.
    #[error("too many rooms ({max})")]
    TooManyRooms {
        /// The limit.
        max: usize,
    },
    /// The participant already publishes `max_tracks_per_participant` tracks.
    #[error("too many published tracks ({max})")]
    TooManyTracks {
        /// The limit.
        max: usize,
    },
    /// The participant already holds `max_subscriptions_per_participant` subscriptions.
    #[error("too many subscriptions ({max})")]
    TooManySubscriptions {
        /// The limit.
        max: usize,
    },
    /// No such track (never published, or unpublished since).
    #[error("unknown track {0}")]
    UnknownTrack(TrackId),
    /// The track belongs to someone else, and only its publisher may do this.
    #[error("track {0} is not published by this participant")]
    NotOwner(TrackId),
    /// A participant tried to subscribe to its own track.
    #[error("track {0} is the subscriber's own track")]
    OwnTrack(TrackId),
    /// The track is published in another room than the subscriber's.
    #[error("track {0} is not in the participant's room")]
    NotInRoom(TrackId),
    /// The participant already subscribes to this track.
    #[error("already subscribed to track {0}")]
    AlreadySubscribed(TrackId),
    /// None of the participant's subscriptions forwards on this media id (or, for
    /// [`Sfu::request_keyframe_from`](super::Sfu::request_keyframe_from), none of the
    /// publisher's live layers comes on it).
    #[error("no subscription or published layer on media id {0}")]
    UnknownMedia(MediaId),
    /// The participant does not subscribe to this track.
    #[error("not subscribed to track {0}")]
    NotSubscribed(TrackId),
    /// A layer's media id is already used by another live layer of the publisher, or twice in
    /// the same track.
    #[error("media id {0} is already in use by this publisher")]
    DuplicateMedia(MediaId),
    /// The track's layer list breaks a rule (count, order, audio with several layers).
    #[error("invalid layers: {0}")]
    InvalidLayers(&'static str),
    /// The codec description cannot be used (for example a zero clock rate).
    #[error("invalid codec: {0}")]
    InvalidCodec(&'static str),
    /// A relay member tried to publish: tracks of a relay's other side are published by ordinary
    /// participants ([`Sfu::join_relay`](super::Sfu::join_relay)).
    #[error("participant {0} is a relay member and cannot publish")]
    RelayCannotPublish(ParticipantId),
}

/// Why [`Sfu::handle_rtp`](super::Sfu::handle_rtp) did not forward a packet. Each is counted in
/// [`SfuStats::drops`](super::SfuStats::drops).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RoutingError {
    /// The publisher is in a room, but none of its live layers uses this media id (never
    /// published, or unpublished since).
    #[error("no published layer on media id {media}")]
    UnknownMedia {
        /// The media id the packet came on.
        media: MediaId,
    },
    /// The sender is not in any room (media before its join, or after it left).
    #[error("participant {participant} has not joined a room")]
    NotJoined {
        /// The sender.
        participant: ParticipantId,
    },
    /// The packet's RTP header does not parse.
    #[error(transparent)]
    Malformed(#[from] RtpError),
}
