//! Counters of one session, readable at any time with [`crate::Session::stats`].

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a session's counters (monotonic over the session's life, across resumes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionStats {
    /// Connection attempts made to reconnect (successful or not).
    pub reconnect_attempts: u64,
    /// Resumes the server honoured.
    pub resumes: u64,
    /// Reconnections where the server did not honour the token (a fresh session followed).
    pub resume_failures: u64,
    /// Rooms joined again (and tracks published again) by the session itself, after a refused
    /// resume or a move of the room ([`crate::SessionEvent::Rejoined`]).
    pub rejoins: u64,
    /// Socket rebinds ([`crate::Session::rebind`]).
    pub rebinds: u64,
    /// Media datagrams sent.
    pub media_sent: u64,
    /// Media datagrams received.
    pub media_received: u64,
    /// Received media dropped because the receive queue was full (oldest first).
    pub media_dropped: u64,
    /// Received datagrams dropped as unusable (empty, unknown kind, bad media id or RTP,
    /// undecodable or unknown control, keyframe request for an unknown media id).
    pub datagrams_invalid: u64,
    /// Padding datagrams received (the server probing how much this session's link can take):
    /// dropped as they carry nothing, and not counted in `datagrams_invalid`.
    pub padding_received: u64,
    /// RTP packets refused because they do not fit a datagram.
    pub send_too_large: u64,
    /// RTP packets refused because the session was reconnecting.
    pub send_not_connected: u64,
    /// Events dropped because the event queue was full.
    pub events_dropped: u64,
    /// Control messages of unknown kinds skipped.
    pub unknown_messages: u64,
    /// Control answers (`Pong`) not sent because the control queue was full.
    pub control_dropped: u64,
    /// Receiver reports received (not surfaced otherwise).
    pub receiver_reports: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) reconnect_attempts: AtomicU64,
    pub(crate) resumes: AtomicU64,
    pub(crate) resume_failures: AtomicU64,
    pub(crate) rejoins: AtomicU64,
    pub(crate) rebinds: AtomicU64,
    pub(crate) media_sent: AtomicU64,
    pub(crate) media_received: AtomicU64,
    pub(crate) datagrams_invalid: AtomicU64,
    pub(crate) padding_received: AtomicU64,
    pub(crate) send_too_large: AtomicU64,
    pub(crate) send_not_connected: AtomicU64,
    pub(crate) unknown_messages: AtomicU64,
    pub(crate) control_dropped: AtomicU64,
    pub(crate) receiver_reports: AtomicU64,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self, media_dropped: u64, events_dropped: u64) -> SessionStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SessionStats {
            reconnect_attempts: get(&self.reconnect_attempts),
            resumes: get(&self.resumes),
            resume_failures: get(&self.resume_failures),
            rejoins: get(&self.rejoins),
            rebinds: get(&self.rebinds),
            media_sent: get(&self.media_sent),
            media_received: get(&self.media_received),
            media_dropped,
            datagrams_invalid: get(&self.datagrams_invalid),
            padding_received: get(&self.padding_received),
            send_too_large: get(&self.send_too_large),
            send_not_connected: get(&self.send_not_connected),
            events_dropped,
            unknown_messages: get(&self.unknown_messages),
            control_dropped: get(&self.control_dropped),
            receiver_reports: get(&self.receiver_reports),
        }
    }
}
