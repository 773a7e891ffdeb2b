//! The one place where protocol messages meet the SFU core: `strait_protocol` types in,
//! `strait_media::sfu` calls out, and SFU notifications back into protocol messages. Ids cross
//! here too: the protocol's participant and media ids become the SFU core's, and back.
//!
//! Everything else in the gateway handles protocol messages as opaque values or SFU types as
//! opaque values; keeping the mapping here means a change on either side touches one module.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use strait_media::sfu::{self, Sfu, SfuError};
use strait_media::webrtc::WebRtcError;
use strait_protocol::datagram::DatagramPrefix;
use strait_protocol::{
    Ack, Codec, ControlMessage, ErrorCode, ErrorMessage, Joined, KeyframeRequest, LayerInfo,
    LayerSwitched, MediaId, ParticipantId, ParticipantInfo, ParticipantLeft, PauseReason,
    Published, RequestId, RoomId, SdpType, SessionDescription, Subscribed, TrackId, TrackInfo,
    TrackKind, TrackMuted, TrackPaused, TrackResumed, TrackUnpublished, datagram,
};

use super::bridge::{BridgeError, SignalingAnswer};
use crate::auth::VerifiedToken;

/// What a participant's session is allowed to do and who it is.
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    /// The verified access token.
    pub token: VerifiedToken,
    /// The room joined, once joined.
    pub room: Option<RoomId>,
}

/// A refused request: the `Error` to send back.
pub(crate) fn error(
    request: RequestId,
    code: ErrorCode,
    reason: impl Into<String>,
) -> ControlMessage {
    ControlMessage::Error(ErrorMessage {
        request: Some(request),
        code,
        reason: reason.into(),
    })
}

/// The code a client is told for a refusal of the SFU core.
pub(crate) fn sfu_error_code(e: &SfuError) -> ErrorCode {
    match e {
        SfuError::RoomFull { .. }
        | SfuError::TooManyRooms { .. }
        | SfuError::TooManyTracks { .. }
        | SfuError::TooManySubscriptions { .. } => ErrorCode::LIMIT_EXCEEDED,
        SfuError::UnknownTrack(_) | SfuError::UnknownParticipant(_) => ErrorCode::NOT_FOUND,
        SfuError::NotOwner { .. } => ErrorCode::FORBIDDEN,
        _ => ErrorCode::INVALID_REQUEST,
    }
}

fn sfu_error(request: RequestId, e: &SfuError) -> ControlMessage {
    error(request, sfu_error_code(e), e.to_string())
}

/// A protocol participant id as the SFU core's.
pub(crate) fn participant_in(p: ParticipantId) -> sfu::ParticipantId {
    sfu::ParticipantId(p.0)
}

/// A protocol media id as the SFU core's.
pub(crate) fn media_in(m: MediaId) -> sfu::MediaId {
    sfu::MediaId(m.0)
}

fn tid(t: TrackId) -> sfu::TrackId {
    sfu::TrackId(t.0)
}

/// The SFU's participant id in protocol terms.
pub(crate) fn participant_out(p: sfu::ParticipantId) -> ParticipantId {
    ParticipantId(p.0)
}

fn kind_in(k: TrackKind) -> sfu::TrackKind {
    match k {
        TrackKind::Audio => sfu::TrackKind::Audio,
        TrackKind::Video => sfu::TrackKind::Video,
    }
}

fn kind_out(k: sfu::TrackKind) -> TrackKind {
    match k {
        sfu::TrackKind::Audio => TrackKind::Audio,
        sfu::TrackKind::Video => TrackKind::Video,
    }
}

fn codec_out(c: &sfu::CodecSpec) -> Codec {
    Codec {
        name: c.name.clone(),
        payload_type: c.payload_type,
        clock_rate: c.clock_rate,
        channels: c.channels,
        fmtp: c.fmtp.clone(),
    }
}

/// A participant as the protocol describes it.
pub(crate) fn participant_info(p: &sfu::ParticipantInfo) -> ParticipantInfo {
    ParticipantInfo {
        participant: participant_out(p.participant),
        identity: p.identity.clone(),
        name: p.name.clone(),
    }
}

/// A track as the protocol describes it.
pub(crate) fn track_info(t: &sfu::TrackInfo) -> TrackInfo {
    TrackInfo {
        track: TrackId(t.track.0),
        participant: participant_out(t.participant),
        kind: kind_out(t.kind),
        codec: codec_out(&t.codec),
        source: t.source.clone(),
        layers: t
            .layers
            .iter()
            .map(|l| LayerInfo {
                max_bitrate: l.max_bitrate,
                width: l.width,
                height: l.height,
            })
            .collect(),
        muted: t.muted,
    }
}

/// A subscription as the protocol describes it.
pub(crate) fn subscribed(request: RequestId, s: &sfu::SubscriptionInfo) -> ControlMessage {
    ControlMessage::Subscribed(Subscribed {
        request,
        track: TrackId(s.track.0),
        media: MediaId(s.media.0),
        ssrc: s.ssrc,
        layer: s.layer,
    })
}

/// A subscription's `Subscribed`, then its `TrackPaused` when it is paused: "a subscription
/// created while paused is answered `Subscribed`, then `TrackPaused`; so is a paused subscription
/// in the snapshot after a resume" (PROTOCOL.md, TrackPaused). The core pauses for the
/// subscriber's bandwidth only (load shedding lowers layers and drops video, it pauses nothing),
/// so the reason is `BANDWIDTH`.
fn subscribed_then_paused(
    request: RequestId,
    s: &sfu::SubscriptionInfo,
    out: &mut Vec<ControlMessage>,
) {
    out.push(subscribed(request, s));
    if s.paused {
        out.push(ControlMessage::TrackPaused(TrackPaused {
            track: TrackId(s.track.0),
            reason: PauseReason::BANDWIDTH,
        }));
    }
}

fn pause_reason_out(reason: sfu::PauseReason) -> PauseReason {
    match reason {
        sfu::PauseReason::Bandwidth => PauseReason::BANDWIDTH,
        sfu::PauseReason::Load => PauseReason::LOAD,
    }
}

/// The messages that tell a client the state of its room: `Joined`, then everyone present, then
/// every track. Used after a join and after a resume (with request id 0).
pub(crate) fn room_snapshot(
    request: RequestId,
    snapshot: &sfu::RoomSnapshot,
) -> Vec<ControlMessage> {
    let mut out = Vec::with_capacity(1 + snapshot.participants.len() + snapshot.tracks.len());
    out.push(ControlMessage::Joined(Joined {
        request,
        room: RoomId(snapshot.room.as_str().to_owned()),
        me: participant_info(&snapshot.you),
    }));
    out.extend(
        snapshot
            .participants
            .iter()
            .map(|p| ControlMessage::ParticipantJoined(participant_info(p))),
    );
    out.extend(
        snapshot
            .tracks
            .iter()
            .map(|t| ControlMessage::TrackPublished(track_info(t))),
    );
    out
}

/// A resumed session's snapshot, all with request id 0: the room (`Joined`, everyone else
/// present, every track of the others), its subscriptions (each paused one followed by its
/// `TrackPaused`), and `Ack` to mark the end. Its own tracks are not repeated: they are
/// unchanged and the client published them.
pub(crate) fn resume_snapshot(snapshot: &sfu::ResumeSnapshot) -> Vec<ControlMessage> {
    let mut out = room_snapshot(RequestId::UNSOLICITED, &snapshot.room);
    for s in &snapshot.subscriptions {
        subscribed_then_paused(RequestId::UNSOLICITED, s, &mut out);
    }
    out.push(snapshot_end());
    out
}

/// The end of a resume snapshot: `Ack` with request id 0.
pub(crate) fn snapshot_end() -> ControlMessage {
    ack(RequestId::UNSOLICITED)
}

/// A notification from the SFU as the message its recipient gets.
pub(crate) fn notification(n: &sfu::Notification) -> Option<ControlMessage> {
    Some(match n {
        sfu::Notification::ParticipantJoined(p) => {
            ControlMessage::ParticipantJoined(participant_info(p))
        }
        sfu::Notification::ParticipantLeft {
            participant,
            reason,
        } => ControlMessage::ParticipantLeft(ParticipantLeft {
            participant: participant_out(*participant),
            reason: match reason {
                sfu::LeaveReason::Left => ErrorCode::NONE,
                sfu::LeaveReason::Timeout => ErrorCode::TIMEOUT,
                sfu::LeaveReason::Shutdown => ErrorCode::GOING_AWAY,
                _ => ErrorCode::NONE,
            },
        }),
        sfu::Notification::TrackPublished(t) => ControlMessage::TrackPublished(track_info(t)),
        sfu::Notification::TrackUnpublished { track, participant } => {
            ControlMessage::TrackUnpublished(TrackUnpublished {
                track: TrackId(track.0),
                participant: participant_out(*participant),
            })
        }
        sfu::Notification::TrackMuted { track, muted } => ControlMessage::TrackMuted(TrackMuted {
            track: TrackId(track.0),
            muted: *muted,
        }),
        sfu::Notification::LayerSwitched { track, layer } => {
            ControlMessage::LayerSwitched(LayerSwitched {
                track: TrackId(track.0),
                layer: *layer,
            })
        }
        sfu::Notification::TrackPaused { track, reason } => {
            ControlMessage::TrackPaused(TrackPaused {
                track: TrackId(track.0),
                reason: pause_reason_out(*reason),
            })
        }
        sfu::Notification::TrackResumed { track, reason } => {
            ControlMessage::TrackResumed(TrackResumed {
                track: TrackId(track.0),
                reason: pause_reason_out(*reason),
            })
        }
        _ => return None,
    })
}

/// A keyframe request for a publisher.
pub(crate) fn keyframe_request(track: sfu::TrackId, layer: u8) -> ControlMessage {
    ControlMessage::KeyframeRequest(KeyframeRequest {
        track: TrackId(track.0),
        layer: Some(layer),
    })
}

/// Applies one request of participant `me` to the SFU; returns the messages to send back (the
/// answer, or an `Error`).
pub(crate) fn request(
    sfu: &mut Sfu,
    me: sfu::ParticipantId,
    principal: &mut Principal,
    message: ControlMessage,
    now: Instant,
) -> Vec<ControlMessage> {
    match message {
        ControlMessage::Join(join) => {
            if principal.room.is_some() {
                return vec![error(
                    join.request,
                    ErrorCode::INVALID_REQUEST,
                    "already in a room",
                )];
            }
            if !principal.token.allows_room(&join.room) {
                return vec![error(
                    join.request,
                    ErrorCode::FORBIDDEN,
                    format!("the access token does not grant room `{}`", join.room),
                )];
            }
            let name = if join.name.is_empty() {
                principal.token.name.clone().unwrap_or_default()
            } else {
                join.name
            };
            let meta = sfu::ParticipantMeta {
                identity: principal.token.identity.clone(),
                name,
            };
            match sfu.join(me, join.room.as_str(), meta, now) {
                Ok(snapshot) => {
                    principal.room = Some(join.room);
                    room_snapshot(join.request, &snapshot)
                }
                Err(e) => vec![sfu_error(join.request, &e)],
            }
        }
        ControlMessage::Publish(p) => {
            if principal.room.is_none() {
                return vec![error(
                    p.request,
                    ErrorCode::INVALID_REQUEST,
                    "join a room before publishing",
                )];
            }
            if !principal.token.grants.publish {
                return vec![error(
                    p.request,
                    ErrorCode::FORBIDDEN,
                    "the access token does not grant publish",
                )];
            }
            let spec = sfu::TrackSpec {
                kind: kind_in(p.kind),
                codec: sfu::CodecSpec {
                    name: p.codec.name,
                    payload_type: p.codec.payload_type,
                    clock_rate: p.codec.clock_rate,
                    channels: p.codec.channels,
                    fmtp: p.codec.fmtp,
                },
                source: p.source,
                layers: p
                    .layers
                    .iter()
                    .map(|l| sfu::LayerSpec {
                        media: sfu::MediaId(l.media.0),
                        max_bitrate: l.max_bitrate,
                        width: l.width,
                        height: l.height,
                    })
                    .collect(),
                muted: p.muted,
            };
            match sfu.publish(me, spec, now) {
                Ok(track) => vec![ControlMessage::Published(Published {
                    request: p.request,
                    track: TrackId(track.0),
                })],
                Err(e) => vec![sfu_error(p.request, &e)],
            }
        }
        ControlMessage::Unpublish(u) => match sfu.unpublish(me, tid(u.track), now) {
            Ok(()) => vec![ack(u.request)],
            Err(e) => vec![sfu_error(u.request, &e)],
        },
        ControlMessage::Subscribe(s) => {
            if principal.room.is_none() {
                return vec![error(
                    s.request,
                    ErrorCode::INVALID_REQUEST,
                    "join a room before subscribing",
                )];
            }
            if !principal.token.grants.subscribe {
                return vec![error(
                    s.request,
                    ErrorCode::FORBIDDEN,
                    "the access token does not grant subscribe",
                )];
            }
            // Absent priority: the core's default for the track's source (PROTOCOL.md §6.3).
            match sfu.subscribe_with_priority(me, tid(s.track), s.max_layer, s.priority, now) {
                Ok(info) => {
                    let mut out = Vec::with_capacity(2);
                    subscribed_then_paused(s.request, &info, &mut out);
                    out
                }
                Err(e) => vec![sfu_error(s.request, &e)],
            }
        }
        ControlMessage::Unsubscribe(u) => match sfu.unsubscribe(me, tid(u.track), now) {
            Ok(()) => vec![ack(u.request)],
            Err(e) => vec![sfu_error(u.request, &e)],
        },
        ControlMessage::SetLayerPreference(l) => {
            // "Both fields replace what the subscription had: an absent field returns to its
            // default" (PROTOCOL.md, SetLayerPreference). The core has a call for each, and each
            // allocates again: the cap is set only when it changed, so that a request for the
            // priority alone allocates once; when both change the cap goes first, which on its
            // own only moves layers (pauses follow the floors by priority, not the caps).
            let track = tid(l.track);
            let cap_kept = sfu
                .subscription(me, track)
                .is_some_and(|s| s.max_layer == l.max_layer);
            let set = if cap_kept {
                Ok(())
            } else {
                sfu.set_layer_preference(me, track, l.max_layer, now)
            };
            match set.and_then(|()| sfu.set_priority(me, track, l.priority, now)) {
                Ok(()) => vec![ack(l.request)],
                Err(e) => vec![sfu_error(l.request, &e)],
            }
        }
        ControlMessage::SetMute(m) => match sfu.set_muted(me, tid(m.track), m.muted, now) {
            Ok(()) => vec![ack(m.request)],
            Err(e) => vec![sfu_error(m.request, &e)],
        },
        ControlMessage::KeyframeRequest(k) => {
            // Unanswered either way; an unknown track is not worth an error to a subscriber.
            let _ = sfu.request_keyframe(me, tid(k.track), now);
            Vec::new()
        }
        other => match other.request() {
            Some(request) => vec![error(
                request,
                ErrorCode::INVALID_REQUEST,
                format!("message kind {} is not a client request", other.kind()),
            )],
            None => vec![ControlMessage::Error(ErrorMessage {
                request: None,
                code: ErrorCode::INVALID_REQUEST,
                reason: format!("message kind {} is not a client request", other.kind()),
            })],
        },
    }
}

fn ack(request: RequestId) -> ControlMessage {
    ControlMessage::Ack(Ack { request })
}

/// A forwarded packet as the media datagram its subscriber gets (section 8 of PROTOCOL.md:
/// the media header with the subscription's media id, then the rewritten RTP), after the
/// connection's `prefix` (a WebTransport session's quarter stream id), written into a slice of
/// `scratch`. Returns the datagram and its RTP length.
pub(crate) fn media_datagram(
    fwd: &sfu::Forward<'_>,
    prefix: DatagramPrefix,
    scratch: &mut BytesMut,
) -> (Bytes, usize) {
    let media = MediaId(fwd.media.0);
    let prefix = prefix.as_slice();
    let header = prefix.len() + datagram::media_header_len(media);
    let len = header + fwd.len();
    if scratch.capacity() < len {
        // One allocation serves many datagrams: each is a slice of this buffer.
        scratch.reserve(len.max(64 * 1024));
    }
    scratch.resize(len, 0);
    scratch[..prefix.len()].copy_from_slice(prefix);
    let written = prefix.len()
        + datagram::write_media_header(media, &mut scratch[prefix.len()..])
            .unwrap_or(header - prefix.len());
    fwd.write_into(&mut scratch[written..]);
    (scratch.split_to(len).freeze(), fwd.len())
}

/// The code and message for an offer the bridge refused on the WebSocket path: a session-level
/// `Error`, after which the session closes.
pub(crate) fn offer_refused(e: &BridgeError) -> ControlMessage {
    let code = match e {
        BridgeError::Offer(WebRtcError::TooManyPeers(_)) | BridgeError::Room(_) => {
            ErrorCode::LIMIT_EXCEEDED
        }
        BridgeError::Disabled | BridgeError::ShuttingDown => ErrorCode::GOING_AWAY,
        _ => ErrorCode::INVALID_REQUEST,
    };
    ControlMessage::Error(ErrorMessage {
        request: None,
        code,
        reason: format!("offer refused: {e}"),
    })
}

/// The bridge's answer to a WebSocket participant's offer: the `Sdp` answer, then one
/// `Subscribed` (request id 0) per track the peer will receive, each followed by its
/// `TrackPaused` when it starts paused (the peer's estimate does not cover it).
pub(crate) fn signaling_answer(answer: &SignalingAnswer) -> Vec<ControlMessage> {
    let mut out = Vec::with_capacity(1 + answer.subscriptions.len());
    out.push(ControlMessage::Sdp(SessionDescription {
        kind: SdpType::Answer,
        sdp: answer.sdp.clone(),
    }));
    for s in &answer.subscriptions {
        subscribed_then_paused(RequestId::UNSOLICITED, s, &mut out);
    }
    out
}

/// What a WebSocket participant hears when its WebRTC connection is lost (its session closes).
pub(crate) fn webrtc_lost() -> ControlMessage {
    ControlMessage::Error(ErrorMessage {
        request: None,
        code: ErrorCode::TIMEOUT,
        reason: "the webrtc connection was lost".into(),
    })
}
