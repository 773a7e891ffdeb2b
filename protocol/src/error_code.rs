//! Wire error codes: an open set.
//!
//! A newer peer may send a code this build does not know; it is carried and printed as a number,
//! never refused. The same values are used as QUIC application close codes and as WebTransport
//! session close codes, so one table covers every way a session can end.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A protocol error code. Unknown values are valid and print as `ErrorCode(0x…)`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ErrorCode(pub u32);

macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $value:literal, $text:literal;)*) => {
        impl ErrorCode {
            $($(#[$doc])* pub const $name: ErrorCode = ErrorCode($value);)*

            /// Every code this version defines, for documentation and tests.
            pub const KNOWN: &'static [ErrorCode] = &[$(ErrorCode::$name),*];

            /// The constant's name, if this code is one this version knows.
            #[must_use]
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some(stringify!($name)),)*
                    _ => None,
                }
            }

            /// A short description for logs and for humans.
            #[must_use]
            pub fn description(self) -> &'static str {
                match self.0 {
                    $($value => $text,)*
                    _ => "unknown error code",
                }
            }
        }
    };
}

codes! {
    /// Clean close, or a voluntary leave.
    NONE = 0x00, "no error";
    /// The server failed; the client may retry.
    INTERNAL = 0x01, "internal error";
    /// A frame or datagram could not be decoded; the session is closed.
    PROTOCOL_VIOLATION = 0x02, "protocol violation";
    /// `ClientHello.version` is not supported; the session is closed.
    UNSUPPORTED_VERSION = 0x03, "unsupported protocol version";
    /// The access token is missing, malformed or its signature is wrong; the session is closed.
    UNAUTHORIZED = 0x04, "unauthorized";
    /// The access token has expired; the session is closed.
    TOKEN_EXPIRED = 0x05, "token expired";
    /// The token does not grant this action (publish, subscribe, another room).
    FORBIDDEN = 0x06, "forbidden";
    /// The room, participant or track does not exist.
    NOT_FOUND = 0x07, "not found";
    /// A configured limit would be exceeded (sessions, rooms, participants, tracks).
    LIMIT_EXCEEDED = 0x08, "limit exceeded";
    /// Too many messages; slow down.
    RATE_LIMITED = 0x09, "rate limited";
    /// A well-formed request that is not valid now (publish before join, subscribing to one's own
    /// track, a duplicate media id).
    INVALID_REQUEST = 0x0a, "invalid request";
    /// The resume token is unknown, forged or expired; the server continues with a fresh session.
    RESUME_FAILED = 0x0b, "resume failed";
    /// The server is draining; reconnect, to the redirect if one is given.
    GOING_AWAY = 0x0c, "server going away";
    /// A control frame exceeded the maximum frame size; the session is closed.
    FRAME_TOO_LARGE = 0x0d, "frame too large";
    /// No `ClientHello` arrived in time, or the session was idle too long.
    TIMEOUT = 0x0e, "timeout";
    /// The same participant connected again elsewhere; this session is replaced.
    REPLACED = 0x0f, "session replaced";
    /// The codec or media description is not supported by this server.
    UNSUPPORTED_MEDIA = 0x10, "unsupported media";
    /// Another node of the cluster serves this room (or this resumed session): reconnect there,
    /// with what the `GoAway` carries. Sent before `ServerHello`.
    REDIRECT = 0x11, "redirect";
    /// The server cannot serve this now (its cluster's directory is unreachable); retry later.
    UNAVAILABLE = 0x12, "unavailable";
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "ErrorCode::{name}"),
            None => write!(f, "ErrorCode({:#x})", self.0),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(_) => write!(f, "{} ({:#x})", self.description(), self.0),
            None => write!(f, "unknown error code {:#x}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn unknown_codes_are_carried_and_printed() {
        let code = ErrorCode(0x1234);
        assert_eq!(code.name(), None);
        assert_eq!(format!("{code:?}"), "ErrorCode(0x1234)");
        assert_eq!(code.to_string(), "unknown error code 0x1234");
        assert_eq!(
            format!("{:?}", ErrorCode::FORBIDDEN),
            "ErrorCode::FORBIDDEN"
        );
        assert_eq!(ErrorCode::FORBIDDEN.to_string(), "forbidden (0x6)");
    }

    #[test]
    fn known_codes_are_distinct() {
        let mut values: Vec<u32> = ErrorCode::KNOWN.iter().map(|c| c.0).collect();
        values.sort_unstable();
        values.dedup();
        assert_eq!(values.len(), ErrorCode::KNOWN.len());
    }
}
