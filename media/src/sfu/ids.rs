//! Newtype identifiers of the SFU. They mirror, but do not depend on, the wire protocol's ids: the
//! core works behind any signaling, and the gateway converts at its one translation module.

use std::fmt;

macro_rules! numeric_id {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
    /// A participant. Issued by the caller (the gateway), unique among the participants of one
    /// [`Sfu`](super::Sfu).
    ParticipantId(u64)
);
numeric_id!(
    /// A published track. Allocated by the core: a random non-zero value from its seeded RNG,
    /// unique among live tracks.
    TrackId(u64)
);
numeric_id!(
    /// An RTP stream inside one session and one direction. Chosen by the publisher for each layer
    /// it sends; allocated by the core for each subscription it forwards (small numbers from 1, so
    /// that they stay one-byte varints on the wire).
    MediaId(u32)
);

/// The name of a room. Rooms exist while they have participants.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(pub String);

impl RoomName {
    /// The name as a string slice.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for RoomName {
    fn from(v: &str) -> Self {
        Self(v.to_owned())
    }
}

impl From<String> for RoomName {
    fn from(v: String) -> Self {
        Self(v)
    }
}

impl std::borrow::Borrow<str> for RoomName {
    fn borrow(&self) -> &str {
        &self.0
    }
}
