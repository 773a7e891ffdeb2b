//! Errors of the WebRTC endpoint.

use super::PeerId;

/// The error type of the `rtc` crate, re-exported so callers can match on what it refused.
pub use rtc::shared::error::Error as RtcError;

/// What went wrong in a call on [`Endpoint`](super::Endpoint).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebRtcError {
    /// The offer is longer than [`WebRtcConfig::max_sdp_len`](super::WebRtcConfig::max_sdp_len);
    /// it was not parsed.
    #[error("offer of {len} bytes exceeds the limit of {max} bytes")]
    SdpTooLarge {
        /// Length of the offer.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// The offer is not SDP.
    #[error("offer is not valid sdp: {0}")]
    MalformedSdp(String),
    /// The offer has no audio or video section that is not disabled (port 0).
    #[error("offer has no audio or video section")]
    NoMedia,
    /// Every audio and video section offers only codecs the bridge does not forward.
    #[error("offer has no supported codec (offered: {offered:?})")]
    UnsupportedCodecs {
        /// Encoding names the offer listed.
        offered: Vec<String>,
    },
    /// A section's simulcast description is malformed (see [`simulcast`](super::simulcast) for
    /// the rules).
    #[error("offer's simulcast in section {mid:?} is malformed: {reason}")]
    BadSimulcast {
        /// The section's `a=mid` (empty when it has none).
        mid: String,
        /// What is wrong.
        reason: String,
    },
    /// [`WebRtcConfig::max_peers`](super::WebRtcConfig::max_peers) peers exist already.
    #[error("peer limit of {0} reached")]
    TooManyPeers(usize),
    /// No local address is configured, so no host candidate can be offered.
    #[error("no local address configured")]
    NoLocalAddress,
    /// The peer does not exist (never did, or was closed or timed out).
    #[error("unknown peer {0}")]
    UnknownPeer(PeerId),
    /// The peer has no send track (for `send_rtp`) or received stream (for `request_keyframe`)
    /// with this SSRC.
    #[error("peer {peer} has no stream with ssrc {ssrc}")]
    UnknownSsrc {
        /// The peer.
        peer: PeerId,
        /// The SSRC asked for.
        ssrc: u32,
    },
    /// A send track's codec has no payload type negotiated on the peer's leg.
    #[error("codec {0} was not negotiated with the peer")]
    CodecNotNegotiated(String),
    /// The RTP packet handed to `send_rtp` does not parse.
    #[error("malformed rtp packet")]
    MalformedRtp,
    /// A trickle-ICE fragment (WHIP `PATCH`) is malformed or names bad credentials.
    #[error("bad ice fragment: {0}")]
    BadIceFragment(String),
    /// Media cannot be sent to the peer yet: ICE and DTLS have not completed.
    #[error("peer {0} is not connected")]
    NotConnected(PeerId),
    /// The peer's SRTP send keys were not found (see the endpoint's `srtp` module): it gets no
    /// forwarded media.
    #[error("no srtp send keys for peer {0}")]
    NoSrtpKeys(PeerId),
    /// The peer has no remote description to restart ICE on.
    #[error("peer {0} has not been negotiated")]
    NotNegotiated(PeerId),
    /// `rtc` refused the offer, the answer or a write.
    #[error("webrtc stack refused: {0}")]
    Rtc(#[from] RtcError),
    /// Protecting a forwarded packet failed (the crypto provider refused it).
    #[error("srtp: {0}")]
    Srtp(#[from] rtc::crypto::CryptoError),
}
