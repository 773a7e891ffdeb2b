//! Newtype identifiers. On the wire each is exactly its inner value (bincode encodes newtype
//! structs transparently); the types keep a participant id from being passed as a track id.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

use crate::bounded;
use crate::limits::{MAX_ID_LEN, MAX_TOKEN_LEN};

macro_rules! numeric_id {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl From<$inner> for $name {
            fn from(v: $inner) -> Self {
                Self(v)
            }
        }
    };
}

numeric_id!(
    /// A participant, issued by the server in `ServerHello`; unique across the cluster.
    ParticipantId(u64)
);
numeric_id!(
    /// A published track, issued by the server in `Published`; unique across the cluster.
    TrackId(u64)
);
numeric_id!(
    /// Names an RTP stream inside one session and direction: chosen by the client for what it
    /// publishes (one per simulcast layer), by the server for what it forwards to a subscriber.
    /// Carried as a QUIC varint at the start of every media datagram.
    MediaId(u32)
);
numeric_id!(
    /// Correlates a request with its response or error. `0` marks unsolicited server messages.
    RequestId(u32)
);

impl RequestId {
    /// The id of messages nobody asked for (events, snapshots after a resume).
    pub const UNSOLICITED: RequestId = RequestId(0);
}

/// A room name: 1 to 128 bytes of UTF-8 without control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct RoomId(pub String);

impl RoomId {
    /// Checks the rules a room id must follow, as the decoder does.
    pub fn validate(name: &str) -> Result<(), &'static str> {
        if name.is_empty() {
            return Err("room id is empty");
        }
        if name.len() > MAX_ID_LEN {
            return Err("room id is longer than 128 bytes");
        }
        if name.chars().any(char::is_control) {
            return Err("room id contains a control character");
        }
        Ok(())
    }

    /// The name as a string slice.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RoomId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = bounded::string(d, "room", MAX_ID_LEN)?;
        RoomId::validate(&s).map_err(|why| bounded::invalid::<D::Error>("room", why))?;
        Ok(RoomId(s))
    }
}

/// An opaque token that lets a client take back its session after losing its connection.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ResumeToken(pub String);

impl fmt::Debug for ResumeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Tokens are credentials: never printed.
        write!(f, "ResumeToken(<{} bytes>)", self.0.len())
    }
}

impl<'de> Deserialize<'de> for ResumeToken {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        bounded::string(d, "resume", MAX_TOKEN_LEN).map(ResumeToken)
    }
}
