//! The QUIC port: one UDP socket and one `quinn::Endpoint` for WebTransport (ALPN `h3`) and
//! native sessions (ALPN `strait/1`).
//!
//! - [`frontdoor`]: admission, the handshake and the dispatch by ALPN;
//! - [`link`]: a session's connection, whichever of the two carries it;
//! - [`session`]: the session core's driver for QUIC and WebTransport sessions;
//! - [`tls`]: certificates served (and rotated in development mode), the rustls and quinn
//!   configurations.

pub(crate) mod acks;
pub(crate) mod frontdoor;
pub(crate) mod link;
pub(crate) mod session;
pub(crate) mod tls;
