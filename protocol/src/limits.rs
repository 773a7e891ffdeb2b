//! Bounds on everything the decoder reads from the network.
//!
//! Each constant bounds an allocation that a peer can cause. The frame size limit is configurable per
//! endpoint ([`crate::FrameReader::new`]) up to [`HARD_MAX_FRAME_SIZE`]; the field limits are part of
//! the protocol (version 1) and documented in `docs/PROTOCOL.md`.

/// Default maximum size of one control frame body. A Chromium SDP offer is about 6 KB; 64 KiB leaves
/// room for large offers while capping what one peer can make the server buffer per stream.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 64 * 1024;

/// The largest frame size an endpoint may be configured to accept (1 MiB). The codec also passes
/// this as bincode's decode limit, so no single decode can claim more.
pub const HARD_MAX_FRAME_SIZE: usize = 1024 * 1024;

/// Room ids and participant identities: bytes of UTF-8.
pub const MAX_ID_LEN: usize = 128;
/// Access tokens (JWTs) and resume tokens.
pub const MAX_TOKEN_LEN: usize = 4096;
/// Display names, track sources, client agent strings.
pub const MAX_NAME_LEN: usize = 256;
/// Codec names (`VP8`, `opus`, `H264`…).
pub const MAX_CODEC_NAME_LEN: usize = 32;
/// Codec format parameters (SDP `a=fmtp` value).
pub const MAX_FMTP_LEN: usize = 512;
/// Human-readable reasons in errors and go-away messages.
pub const MAX_REASON_LEN: usize = 1024;
/// URLs (ICE servers, go-away redirects).
pub const MAX_URL_LEN: usize = 1024;
/// SDP offers and answers on the legacy signaling path.
pub const MAX_SDP_LEN: usize = 60 * 1024;
/// One ICE candidate line.
pub const MAX_CANDIDATE_LEN: usize = 1024;
/// Simulcast layers of one published track.
pub const MAX_LAYERS: usize = 3;
/// ICE servers offered in `ServerHello`.
pub const MAX_ICE_SERVERS: usize = 8;
/// URLs of one ICE server.
pub const MAX_ICE_URLS: usize = 8;
/// Certificate hashes in a go-away (a node's current and next certificate).
pub const MAX_CERT_HASHES: usize = 4;
/// One certificate hash: SHA-256 in lowercase hex.
pub const CERT_HASH_LEN: usize = 64;
