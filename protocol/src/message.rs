//! Control messages: everything that travels on the control stream (and, on the legacy path, in
//! WebSocket binary frames).
//!
//! The order of the variants of [`ControlMessage`] and of the fields of every struct is the wire
//! format (bincode encodes an enum as its variant index and a struct as its fields in order). New
//! message kinds are appended at the end; a receiver skips kinds it does not know. New fields are
//! appended at the end of a struct; a receiver ignores bytes after the last field it knows.
//! Reordering anything here is a breaking change that the golden vectors in `tests/vectors/` catch.
//!
//! A field appended to a message that version 1 already had (`Subscribe.priority`,
//! `SetLayerPreference.priority`) is an `Option` that an older peer does not send: it is written
//! as nothing at all when absent (so the message is byte for byte what an older peer sends) and
//! read as absent when the body ends before it (`crate::codec::appended_option`). Only the last
//! field of a message can be such a field.

use serde::{Deserialize, Serialize};

use crate::bounded::{bounded_opt_string, bounded_string, bounded_vec};
use crate::codec::appended_option;
use crate::error_code::ErrorCode;
use crate::ids::{MediaId, ParticipantId, RequestId, ResumeToken, RoomId, TrackId};
use crate::limits::*;
use crate::pause_reason::PauseReason;

/// The protocol version this crate speaks, sent in `ClientHello` and `ServerHello`.
pub const PROTOCOL_VERSION: u16 = 1;

/// The ALPN of native sessions on raw QUIC. WebTransport sessions use `h3`.
pub const ALPN_NATIVE: &[u8] = b"strait/1";

/// The priority of a subscription that names none (`Subscribe.priority` absent), for a track
/// whose `source` is anything but `screen`.
pub const DEFAULT_PRIORITY: u8 = 100;

/// The priority of a subscription that names none, for a track whose `source` is `screen`: a
/// shared screen is paused after the cameras.
pub const SCREEN_PRIORITY: u8 = 200;

/// The priority the server gives a subscription that names none: [`SCREEN_PRIORITY`] for a track
/// whose `source` is exactly `screen`, [`DEFAULT_PRIORITY`] for any other.
#[must_use]
pub fn default_priority(source: &str) -> u8 {
    if source == "screen" {
        SCREEN_PRIORITY
    } else {
        DEFAULT_PRIORITY
    }
}

bounded_string!(de_token, "token", MAX_TOKEN_LEN);
bounded_string!(de_agent, "agent", MAX_NAME_LEN);
bounded_string!(de_identity, "identity", MAX_ID_LEN);
bounded_string!(de_name, "name", MAX_NAME_LEN);
bounded_string!(de_source, "source", MAX_NAME_LEN);
bounded_string!(de_codec_name, "codec.name", MAX_CODEC_NAME_LEN);
bounded_string!(de_fmtp, "codec.fmtp", MAX_FMTP_LEN);
bounded_string!(de_reason, "reason", MAX_REASON_LEN);
bounded_string!(de_url, "url", MAX_URL_LEN);
bounded_string!(de_sdp, "sdp", MAX_SDP_LEN);
bounded_string!(de_candidate, "candidate", MAX_CANDIDATE_LEN);
bounded_string!(de_cert_hash, "cert_hash", CERT_HASH_LEN);
bounded_opt_string!(de_opt_username, "ice.username", MAX_NAME_LEN);
bounded_opt_string!(de_opt_credential, "ice.credential", MAX_TOKEN_LEN);
bounded_opt_string!(de_opt_redirect, "redirect", MAX_URL_LEN);
bounded_opt_string!(de_opt_token, "token", MAX_TOKEN_LEN);
bounded_opt_string!(de_opt_mid, "sdp_mid", MAX_NAME_LEN);
bounded_vec!(de_layers, Layer, "layers", MAX_LAYERS);
bounded_vec!(de_ice_servers, IceServer, "ice_servers", MAX_ICE_SERVERS);

fn de_cert_hashes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    struct Hash(#[serde(deserialize_with = "de_cert_hash")] String);
    let hashes: Vec<Hash> = crate::bounded::vec(d, "cert_hashes", MAX_CERT_HASHES)?;
    Ok(hashes.into_iter().map(|h| h.0).collect())
}

fn de_ice_urls<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    struct Url(#[serde(deserialize_with = "de_url")] String);
    let urls: Vec<Url> = crate::bounded::vec(d, "ice.urls", MAX_ICE_URLS)?;
    Ok(urls.into_iter().map(|u| u.0).collect())
}

/// One message on the control stream. Variant indices (the first bincode varint of a frame body)
/// are fixed; see `docs/PROTOCOL.md` for the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ControlMessage {
    // --- hello / auth ---
    /// 0, client → server: the first message of a session.
    ClientHello(ClientHello),
    /// 1, server → client: the answer to `ClientHello`.
    ServerHello(ServerHello),
    // --- rooms ---
    /// 2, client → server: enter a room.
    Join(Join),
    /// 3, server → client: the join succeeded.
    Joined(Joined),
    /// 4, client → server: leave the room; the server answers `Ack` and closes the session.
    Leave(Leave),
    /// 5, server → client: someone is in the room (sent for everyone present right after `Joined`,
    /// then for each arrival).
    ParticipantJoined(ParticipantInfo),
    /// 6, server → client: someone left the room.
    ParticipantLeft(ParticipantLeft),
    // --- tracks ---
    /// 7, client → server: announce a track this client will send.
    Publish(Publish),
    /// 8, server → client: the track is published.
    Published(Published),
    /// 9, client → server: stop publishing a track.
    Unpublish(Unpublish),
    /// 10, server → client: a track is available in the room (sent for every existing track right
    /// after `Joined`, then as tracks appear).
    TrackPublished(TrackInfo),
    /// 11, server → client: a track went away; its subscriptions ended.
    TrackUnpublished(TrackUnpublished),
    /// 12, client → server: receive a track.
    Subscribe(Subscribe),
    /// 13, server → client: the subscription is active; media follows on `media`.
    Subscribed(Subscribed),
    /// 14, client → server: stop receiving a track.
    Unsubscribe(Unsubscribe),
    /// 15, client → server: which simulcast layer a subscriber wants at most.
    SetLayerPreference(SetLayerPreference),
    /// 16, client → server: mute or unmute one's own track.
    SetMute(SetMute),
    /// 17, server → client: a track was muted or unmuted by its publisher.
    TrackMuted(TrackMuted),
    // --- media control ---
    /// 18, both ways: ask for a keyframe (subscriber → server, server → publisher).
    KeyframeRequest(KeyframeRequest),
    /// 19, server → client: a subscription now carries another simulcast layer.
    LayerSwitched(LayerSwitched),
    // --- session ---
    /// 20, both ways: liveness and RTT probe; answered with `Pong`.
    Ping(Ping),
    /// 21, both ways: the answer to `Ping`.
    Pong(Pong),
    /// 22, server → client: the server is going away; reconnect (to `redirect` if given).
    GoAway(GoAway),
    /// 23, both ways: a request failed, or the session is about to close.
    Error(ErrorMessage),
    /// 24, server → client: the request succeeded and has nothing else to say.
    Ack(Ack),
    // --- legacy signaling (WebSocket path) ---
    /// 25, both ways: an SDP offer or answer.
    Sdp(SessionDescription),
    /// 26, both ways: a trickled ICE candidate.
    IceCandidate(IceCandidate),
    // --- session, continued ---
    /// 27, server → client: a resume token that replaces the last one (sent before the last
    /// one expires, for as long as the session lives).
    NewResumeToken(NewResumeToken),
    // --- bandwidth allocation ---
    /// 28, server → client: the server stopped forwarding a subscription's video; the
    /// subscription stays.
    TrackPaused(TrackPaused),
    /// 29, server → client: the server forwards a paused subscription's video again.
    TrackResumed(TrackResumed),
}

impl ControlMessage {
    /// Number of message kinds this version knows; kinds at or above it are skipped on receipt.
    pub const KINDS: u32 = 30;

    /// The wire kind (variant index) of this message.
    #[must_use]
    pub fn kind(&self) -> u32 {
        match self {
            Self::ClientHello(_) => 0,
            Self::ServerHello(_) => 1,
            Self::Join(_) => 2,
            Self::Joined(_) => 3,
            Self::Leave(_) => 4,
            Self::ParticipantJoined(_) => 5,
            Self::ParticipantLeft(_) => 6,
            Self::Publish(_) => 7,
            Self::Published(_) => 8,
            Self::Unpublish(_) => 9,
            Self::TrackPublished(_) => 10,
            Self::TrackUnpublished(_) => 11,
            Self::Subscribe(_) => 12,
            Self::Subscribed(_) => 13,
            Self::Unsubscribe(_) => 14,
            Self::SetLayerPreference(_) => 15,
            Self::SetMute(_) => 16,
            Self::TrackMuted(_) => 17,
            Self::KeyframeRequest(_) => 18,
            Self::LayerSwitched(_) => 19,
            Self::Ping(_) => 20,
            Self::Pong(_) => 21,
            Self::GoAway(_) => 22,
            Self::Error(_) => 23,
            Self::Ack(_) => 24,
            Self::Sdp(_) => 25,
            Self::IceCandidate(_) => 26,
            Self::NewResumeToken(_) => 27,
            Self::TrackPaused(_) => 28,
            Self::TrackResumed(_) => 29,
        }
    }

    /// The request this message answers or makes, if it carries one.
    #[must_use]
    pub fn request(&self) -> Option<RequestId> {
        Some(match self {
            Self::Join(m) => m.request,
            Self::Joined(m) => m.request,
            Self::Leave(m) => m.request,
            Self::Publish(m) => m.request,
            Self::Published(m) => m.request,
            Self::Unpublish(m) => m.request,
            Self::Subscribe(m) => m.request,
            Self::Subscribed(m) => m.request,
            Self::Unsubscribe(m) => m.request,
            Self::SetLayerPreference(m) => m.request,
            Self::SetMute(m) => m.request,
            Self::Ack(m) => m.request,
            Self::Error(m) => return m.request,
            _ => return None,
        })
    }
}

/// The first message a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientHello {
    /// The protocol version the client speaks ([`PROTOCOL_VERSION`]).
    pub version: u16,
    /// The access token (a JWT) that names the identity, room and grants.
    #[serde(deserialize_with = "de_token")]
    pub token: String,
    /// A resume token from an earlier `ServerHello`, to take back a lost session.
    pub resume: Option<ResumeToken>,
    /// Free text naming the client software, for logs (`strait-client/0.1`, a browser's UA).
    #[serde(deserialize_with = "de_agent")]
    pub agent: String,
}

/// The server's answer to `ClientHello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHello {
    /// The protocol version the server speaks on this session.
    pub version: u16,
    /// Who the client is in this session (the same id as before when resumed).
    pub participant: ParticipantId,
    /// Present this in a later `ClientHello.resume` to restore the session after a disconnect.
    pub resume_token: ResumeToken,
    /// `true` when `ClientHello.resume` was honoured: room, tracks and subscriptions are intact and
    /// a state snapshot (`Joined`, `ParticipantJoined`…, `TrackPublished`…, `Subscribed`…) follows.
    pub resumed: bool,
    /// STUN/TURN servers the client may use for WebRTC fallback.
    #[serde(deserialize_with = "de_ice_servers")]
    pub ice_servers: Vec<IceServer>,
    /// Limits that apply to this session.
    pub limits: SessionLimits,
    /// The largest datagram the server can currently send or receive on this connection; media
    /// packets must fit `max_datagram_size - 1 - varint_len(media id)`.
    pub max_datagram_size: u32,
}

/// A resume token that replaces the one of the `ServerHello` (or of the last `NewResumeToken`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewResumeToken {
    /// Present this in a later `ClientHello.resume` to restore the session after a disconnect.
    pub resume_token: ResumeToken,
}

/// A STUN or TURN server, as in the WebRTC `RTCIceServer` dictionary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:`, `turn:` or `turns:` URLs.
    #[serde(deserialize_with = "de_ice_urls")]
    pub urls: Vec<String>,
    /// TURN username (`<expiry>:<participant>`), if any.
    #[serde(deserialize_with = "de_opt_username")]
    pub username: Option<String>,
    /// TURN password, if any.
    #[serde(deserialize_with = "de_opt_credential")]
    pub credential: Option<String>,
}

/// Limits the server enforces on a session, announced so clients can stay within them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionLimits {
    /// Largest control frame body the server accepts, in bytes.
    pub max_frame_size: u32,
    /// Tracks one participant may publish at once.
    pub max_tracks: u32,
    /// Tracks one participant may subscribe to at once.
    pub max_subscriptions: u32,
    /// Control messages per second a client may send on average.
    pub max_messages_per_second: u32,
}

/// Enter a room. The client may send it right after `ClientHello` without waiting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Join {
    /// Correlates the answer.
    pub request: RequestId,
    /// The room; must be the room the token grants.
    pub room: RoomId,
    /// A display name for others to see (may be empty).
    #[serde(deserialize_with = "de_name")]
    pub name: String,
}

/// The join succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Joined {
    /// The `Join` this answers (`0` in the snapshot after a resume).
    pub request: RequestId,
    /// The room joined.
    pub room: RoomId,
    /// The joining participant as others see it.
    pub me: ParticipantInfo,
}

/// Leave the room and end the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leave {
    /// Correlates the `Ack`.
    pub request: RequestId,
}

/// A participant of a room, as everyone sees it (the transport it uses is not revealed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    /// The participant's id.
    pub participant: ParticipantId,
    /// The identity from its access token.
    #[serde(deserialize_with = "de_identity")]
    pub identity: String,
    /// Its display name (may be empty).
    #[serde(deserialize_with = "de_name")]
    pub name: String,
}

/// A participant left the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantLeft {
    /// Who left.
    pub participant: ParticipantId,
    /// Why: `NONE` for a voluntary leave, `TIMEOUT` when its grace period ran out, others as
    /// applicable.
    pub reason: ErrorCode,
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum TrackKind {
    /// 0
    Audio,
    /// 1
    Video,
}

/// An RTP codec, as SDP describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Codec {
    /// Encoding name as in SDP `a=rtpmap` (`VP8`, `VP9`, `H264`, `AV1`, `opus`), compared
    /// case-insensitively.
    #[serde(deserialize_with = "de_codec_name")]
    pub name: String,
    /// RTP payload type the sender uses (96–127 for dynamic types).
    pub payload_type: u8,
    /// RTP clock rate in Hz (90000 for video, 48000 for Opus).
    pub clock_rate: u32,
    /// Audio channels (2 for Opus as SDP says it; 0 for video).
    pub channels: u8,
    /// Format parameters as in SDP `a=fmtp` (may be empty).
    #[serde(deserialize_with = "de_fmtp")]
    pub fmtp: String,
}

/// One simulcast layer (or the only layer) of a published track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// The media id the publisher sends this layer's RTP on (publisher's choice, unique among its
    /// live published layers).
    pub media: MediaId,
    /// Target bitrate of this layer in bits per second (0 when unknown).
    pub max_bitrate: u32,
    /// Frame width in pixels (0 for audio or unknown).
    pub width: u16,
    /// Frame height in pixels (0 for audio or unknown).
    pub height: u16,
}

/// Announce a track. Layers are listed from the lowest quality to the highest (1 to 3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publish {
    /// Correlates the answer.
    pub request: RequestId,
    /// Audio or video.
    pub kind: TrackKind,
    /// The codec of every layer.
    pub codec: Codec,
    /// What the track is (`camera`, `microphone`, `screen`…); free text.
    #[serde(deserialize_with = "de_source")]
    pub source: String,
    /// Simulcast layers, lowest first.
    #[serde(deserialize_with = "de_layers")]
    pub layers: Vec<Layer>,
    /// Start muted.
    pub muted: bool,
}

/// The track is published; media on its layers' media ids is now forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// The `Publish` this answers.
    pub request: RequestId,
    /// The server's id for the track.
    pub track: TrackId,
}

/// Stop publishing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unpublish {
    /// Correlates the `Ack`.
    pub request: RequestId,
    /// The track to remove.
    pub track: TrackId,
}

/// Summary of one layer of a track, as subscribers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// Target bitrate in bits per second (0 when unknown).
    pub max_bitrate: u32,
    /// Frame width (0 for audio or unknown).
    pub width: u16,
    /// Frame height (0 for audio or unknown).
    pub height: u16,
}

bounded_vec!(de_layer_infos, LayerInfo, "layers", MAX_LAYERS);

/// A track available in the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackInfo {
    /// The track's id.
    pub track: TrackId,
    /// Who publishes it.
    pub participant: ParticipantId,
    /// Audio or video.
    pub kind: TrackKind,
    /// Its codec (the payload type is the one subscribers will see).
    pub codec: Codec,
    /// What it is (`camera`, `microphone`…).
    #[serde(deserialize_with = "de_source")]
    pub source: String,
    /// Its layers, lowest first.
    #[serde(deserialize_with = "de_layer_infos")]
    pub layers: Vec<LayerInfo>,
    /// Whether its publisher has muted it.
    pub muted: bool,
}

/// A track went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackUnpublished {
    /// The track.
    pub track: TrackId,
    /// Who published it.
    pub participant: ParticipantId,
}

/// Receive a track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribe {
    /// Correlates the answer.
    pub request: RequestId,
    /// The track.
    pub track: TrackId,
    /// The highest layer wanted (index into the track's layers); `None` for the best available.
    pub max_layer: Option<u8>,
    /// How much this subscription matters when the subscriber's link cannot carry every one:
    /// the server pauses the video of the lowest priority first (`TrackPaused`), higher wins.
    /// `None` leaves it to the server, which derives it from the track's `source`
    /// ([`default_priority`]: `screen` 200, anything else 100).
    ///
    /// Appended to version 1: an older client does not send it. `None` is written as nothing at
    /// all, and a body that ends before the field reads as `None` (`docs/PROTOCOL.md` §5).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "appended_option"
    )]
    pub priority: Option<u8>,
}

/// A subscription is active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribed {
    /// The `Subscribe` this answers (`0` in the snapshot after a resume).
    pub request: RequestId,
    /// The track.
    pub track: TrackId,
    /// The media id the server forwards this track's RTP on, in server → client datagrams.
    pub media: MediaId,
    /// The SSRC the forwarded RTP carries (stable across layer switches and resumes).
    pub ssrc: u32,
    /// The layer forwarded first.
    pub layer: u8,
}

/// Stop receiving a track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsubscribe {
    /// Correlates the `Ack`.
    pub request: RequestId,
    /// The track.
    pub track: TrackId,
}

/// Cap the simulcast layer forwarded on a subscription, and set its priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetLayerPreference {
    /// Correlates the `Ack`.
    pub request: RequestId,
    /// The subscribed track.
    pub track: TrackId,
    /// The highest layer wanted; `None` for the best available.
    pub max_layer: Option<u8>,
    /// The subscription's priority from now on, as in `Subscribe.priority` (higher wins). Like
    /// `max_layer` it replaces what was set before: `None` returns to the server's default
    /// ([`default_priority`]).
    ///
    /// Appended to version 1: an older client does not send it. `None` is written as nothing at
    /// all, and a body that ends before the field reads as `None` (`docs/PROTOCOL.md` §5).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "appended_option"
    )]
    pub priority: Option<u8>,
}

/// Mute or unmute a track one publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetMute {
    /// Correlates the `Ack`.
    pub request: RequestId,
    /// One's own track.
    pub track: TrackId,
    /// The new state.
    pub muted: bool,
}

/// A track's mute state changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackMuted {
    /// The track.
    pub track: TrackId,
    /// The new state.
    pub muted: bool,
}

/// Ask for a keyframe. From a subscriber: for a subscribed track (the server decides whether to
/// forward it upstream, throttled per track). From the server to a publisher: for one of its tracks,
/// for the given layer or all layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyframeRequest {
    /// The track.
    pub track: TrackId,
    /// The layer, or `None` for every layer.
    pub layer: Option<u8>,
}

/// The layer forwarded on a subscription changed (at a keyframe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerSwitched {
    /// The subscribed track.
    pub track: TrackId,
    /// The layer now forwarded.
    pub layer: u8,
}

/// The server stopped forwarding a subscription's video (the subscription stays; nothing is
/// forwarded on its media id until `TrackResumed`). A client keeps showing the last frame or a
/// placeholder, does not unsubscribe, and answers nothing. A subscription created while paused is
/// answered `Subscribed`, then `TrackPaused`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackPaused {
    /// The subscribed track.
    pub track: TrackId,
    /// Why: [`PauseReason::BANDWIDTH`] (the subscriber's link cannot carry it), or
    /// [`PauseReason::LOAD`] (the server sheds load); an open set.
    pub reason: PauseReason,
}

/// The server forwards a paused subscription's video again (it should start at a keyframe). No
/// answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackResumed {
    /// The subscribed track.
    pub track: TrackId,
    /// The reason of the pause that ended.
    pub reason: PauseReason,
}

/// A liveness probe on the control stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// Echoed in the `Pong`.
    pub nonce: u64,
}

/// The answer to a `Ping`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    /// The `Ping`'s nonce.
    pub nonce: u64,
}

/// The server is going away, or (`REDIRECT`, before `ServerHello`) another node serves the
/// session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoAway {
    /// Why: `GOING_AWAY` when draining, `REDIRECT` when another node serves the room.
    pub code: ErrorCode,
    /// Where to reconnect (`https://host:port/rtc` or `host:port`), if another node can take the
    /// session; without it, reconnect to the same address after a backoff.
    #[serde(deserialize_with = "de_opt_redirect")]
    pub redirect: Option<String>,
    /// The SHA-256 hashes (lowercase hex) of the certificates `redirect` serves, for clients
    /// that pin hashes (`serverCertificateHashes`); empty when it has a certificate from a CA.
    #[serde(deserialize_with = "de_cert_hashes")]
    pub cert_hashes: Vec<String>,
    /// A short-lived access token to present at `redirect` instead of the client's own (absent:
    /// present the same one).
    #[serde(deserialize_with = "de_opt_token")]
    pub token: Option<String>,
}

/// A request failed, or the session is about to close with this code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMessage {
    /// The request that failed, or `None` for a session-level error.
    pub request: Option<RequestId>,
    /// What went wrong.
    pub code: ErrorCode,
    /// Words for a human; never contains secrets.
    #[serde(deserialize_with = "de_reason")]
    pub reason: String,
}

/// The request succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The request.
    pub request: RequestId,
}

/// Offer or answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum SdpType {
    /// 0
    Offer,
    /// 1
    Answer,
}

/// An SDP offer or answer on the legacy WebRTC signaling path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDescription {
    /// Offer or answer.
    pub kind: SdpType,
    /// The SDP text.
    #[serde(deserialize_with = "de_sdp")]
    pub sdp: String,
}

/// A trickled ICE candidate, as in the WebRTC `RTCIceCandidateInit` dictionary. An empty
/// `candidate` marks the end of candidates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceCandidate {
    /// The `candidate:` attribute line.
    #[serde(deserialize_with = "de_candidate")]
    pub candidate: String,
    /// The media stream identification tag, if known.
    #[serde(deserialize_with = "de_opt_mid")]
    pub sdp_mid: Option<String>,
    /// The m-line index, if known.
    pub sdp_mline_index: Option<u16>,
}

// Closed enums decode through `bounded::unit_enum` so that an unknown index is a typed
// `DecodeError::UnknownVariant` rather than serde's free-text error.
impl<'de> Deserialize<'de> for TrackKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match crate::bounded::unit_enum(d, "TrackKind", &["Audio", "Video"])? {
            0 => Ok(TrackKind::Audio),
            _ => Ok(TrackKind::Video),
        }
    }
}

impl<'de> Deserialize<'de> for SdpType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match crate::bounded::unit_enum(d, "SdpType", &["Offer", "Answer"])? {
            0 => Ok(SdpType::Offer),
            _ => Ok(SdpType::Answer),
        }
    }
}
