//! Why the server paused (or resumed) a subscription's video: an open set, like [`ErrorCode`].
//!
//! A newer server may give a reason this build does not know; it is carried and printed as a
//! number, never refused, so that new reasons need no new protocol version.
//!
//! [`ErrorCode`]: crate::ErrorCode

use serde::{Deserialize, Serialize};
use std::fmt;

/// The reason carried by `TrackPaused` and `TrackResumed`: one byte on the wire. Unknown values
/// are valid and print as `PauseReason(7)`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PauseReason(pub u8);

impl PauseReason {
    /// The subscriber's link cannot carry this video next to its other subscriptions; the video
    /// of the lowest priority is paused first (`Subscribe.priority`).
    pub const BANDWIDTH: PauseReason = PauseReason(0);
    /// The server sheds load.
    pub const LOAD: PauseReason = PauseReason(1);

    /// Every reason this version defines, for documentation and tests.
    pub const KNOWN: &'static [PauseReason] = &[PauseReason::BANDWIDTH, PauseReason::LOAD];

    /// The constant's name, if this reason is one this version knows.
    #[must_use]
    pub fn name(self) -> Option<&'static str> {
        match self.0 {
            0 => Some("BANDWIDTH"),
            1 => Some("LOAD"),
            _ => None,
        }
    }

    /// A short description for logs and for humans.
    #[must_use]
    pub fn description(self) -> &'static str {
        match self.0 {
            0 => "low bandwidth",
            1 => "server load",
            _ => "unknown reason",
        }
    }
}

impl fmt::Debug for PauseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "PauseReason::{name}"),
            None => write!(f, "PauseReason({})", self.0),
        }
    }
}

impl fmt::Display for PauseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(_) => write!(f, "{} ({})", self.description(), self.0),
            None => write!(f, "unknown pause reason {}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PauseReason;

    #[test]
    fn unknown_reasons_are_carried_and_printed() {
        let reason = PauseReason(7);
        assert_eq!(reason.name(), None);
        assert_eq!(format!("{reason:?}"), "PauseReason(7)");
        assert_eq!(reason.to_string(), "unknown pause reason 7");
        assert_eq!(
            format!("{:?}", PauseReason::BANDWIDTH),
            "PauseReason::BANDWIDTH"
        );
        assert_eq!(PauseReason::LOAD.to_string(), "server load (1)");
    }

    #[test]
    fn known_reasons_are_distinct_and_named() {
        for (i, a) in PauseReason::KNOWN.iter().enumerate() {
            assert!(a.name().is_some());
            assert!(PauseReason::KNOWN[..i].iter().all(|b| b != a));
        }
    }
}
