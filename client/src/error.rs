//! Typed errors: [`ClientError`] for sessions and requests, [`SendError`] for the media send path.

use std::sync::Arc;

use strait_protocol::{DecodeError, EncodeError, ErrorCode};
use thiserror::Error;

/// Why a connection, a request or a whole session failed.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The configuration is not usable; nothing was sent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A local socket could not be created or bound.
    #[error("i/o error: {0}")]
    Io(Arc<std::io::Error>),
    /// The QUIC or WebTransport connection could not be established (unreachable, refused,
    /// handshake failed for a reason other than the certificate).
    #[error("connect failed: {0}")]
    Connect(String),
    /// The TLS handshake failed: most often the server's certificate is not trusted (wrong hash,
    /// unknown issuer, wrong name).
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// Something did not happen in time: the hello, a request's answer, a ping's pong.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The server sent a control frame that does not decode; the session was closed with
    /// `PROTOCOL_VIOLATION` (or `FRAME_TOO_LARGE`).
    #[error("protocol violation by the server: {0}")]
    Protocol(DecodeError),
    /// The server answered a request with a message of the wrong kind; the session goes on.
    #[error("unexpected answer of kind {kind} to a {expected} request")]
    UnexpectedAnswer {
        /// The request that was made.
        expected: &'static str,
        /// The kind of message that answered it.
        kind: u32,
    },
    /// A message could not be encoded (a field over its protocol limit).
    #[error("cannot encode message: {0}")]
    Encode(EncodeError),
    /// The server refused the request (or the hello) with `Error`.
    #[error("rejected by the server: {code}: {reason}")]
    Rejected {
        /// The server's error code (an open set).
        code: ErrorCode,
        /// Words for a human.
        reason: String,
    },
    /// The server sent the session to another node of its cluster (`GoAway` with code
    /// `REDIRECT`). Before `ServerHello`, [`Client::connect`](crate::Client::connect) follows
    /// up to [`MAX_REDIRECTS`](crate::MAX_REDIRECTS) redirects and returns this one after that,
    /// or when the redirect names no address this client can reach. A live session whose room
    /// moves to another node (a drain, or a node that lost its room) goes there by itself with
    /// [`ClientConfig::rejoin`](crate::ClientConfig::rejoin) when it trusts that node's
    /// certificate, and ends with this error otherwise: connect again with
    /// [`ClientConfig::follow`](crate::ClientConfig::follow).
    #[error("redirected to {}", redirect.redirect.as_deref().unwrap_or("nowhere"))]
    Redirected {
        /// The go-away: where, with which certificate hashes and token.
        redirect: Box<strait_protocol::GoAway>,
    },
    /// The session is over: closed locally, or by the server with this code.
    #[error("session closed: {code}: {reason}")]
    Closed {
        /// The close code (`NONE` for a clean close).
        code: ErrorCode,
        /// The close reason.
        reason: String,
    },
    /// The connection was lost (timeout, reset, network) and was not resumed; for a request in
    /// flight, the connection dropped before its answer and its effect is unknown.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// An RTP packet does not fit a datagram; nothing was sent.
    #[error("RTP packet of {len} bytes exceeds the {max} that fit one datagram")]
    TooLarge {
        /// The packet's length.
        len: usize,
        /// The largest RTP packet that fits on that media id now.
        max: usize,
    },
    /// Not possible on this transport (rebinding a WebTransport session).
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// The argument is not valid (a room id, a layer count…); nothing was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        ClientError::Io(Arc::new(e))
    }
}

impl From<EncodeError> for ClientError {
    fn from(e: EncodeError) -> Self {
        ClientError::Encode(e)
    }
}

/// Why [`crate::Session::send_rtp`] did not send a packet. The packet is borrowed, so the caller
/// still has it; nothing is dropped silently.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SendError {
    /// The packet does not fit one datagram on this media id (`max` = the largest that fits now,
    /// `max_datagram_size − 1 − varint_len(media)`). Repacketize smaller.
    #[error("RTP packet of {len} bytes exceeds the {max} that fit one datagram")]
    TooLarge {
        /// The packet's length.
        len: usize,
        /// The largest RTP packet that fits.
        max: usize,
    },
    /// The payload is not an RTP packet (the server would drop it).
    #[error("not an RTP packet: {0}")]
    InvalidRtp(&'static str),
    /// The session is reconnecting; try again after `Resumed`.
    #[error("not connected (reconnecting)")]
    NotConnected,
    /// The session is over.
    #[error("session closed")]
    Closed,
    /// The peer does not accept datagrams.
    #[error("datagrams are not supported on this connection")]
    Unsupported,
}

impl From<SendError> for ClientError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::TooLarge { len, max } => ClientError::TooLarge { len, max },
            SendError::InvalidRtp(why) => ClientError::InvalidArgument(why),
            SendError::NotConnected => ClientError::ConnectionLost("reconnecting".into()),
            SendError::Closed => ClientError::Closed {
                code: ErrorCode::NONE,
                reason: "session closed".into(),
            },
            SendError::Unsupported => ClientError::Unsupported("datagrams"),
        }
    }
}
