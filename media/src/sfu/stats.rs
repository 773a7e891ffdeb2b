//! Counters and gauges of the SFU core, for metrics.

/// Counters (monotonic since construction) and gauges (current values) of an
/// [`Sfu`](super::Sfu). Read with [`Sfu::stats`](super::Sfu::stats); the gateway exports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SfuStats {
    /// RTP packets given to `handle_rtp`, valid or not.
    pub packets_in: u64,
    /// Bytes of those packets.
    pub bytes_in: u64,
    /// Packets handed to the gateway as [`Forward`](super::Forward)s (one per subscriber).
    pub packets_forwarded: u64,
    /// Bytes of those packets.
    pub bytes_forwarded: u64,
    /// Packets not forwarded, by reason.
    pub drops: DropStats,
    /// Keyframe requests sent to publishers.
    pub keyframe_requests_sent: u64,
    /// Keyframe requests held back because one was sent for the same track and layer within
    /// `keyframe_request_interval`.
    pub keyframe_requests_throttled: u64,
    /// Subscriptions that changed the layer they forward (at a keyframe).
    pub layer_switches: u64,
    /// Video subscriptions paused by the allocation (their subscriber's budget).
    pub pauses: u64,
    /// Paused subscriptions resumed.
    pub resumes: u64,
    /// Climbs followed within `CLIMB_TRIAL` by a fall forced by the budget (each doubles the
    /// subscriber's cooldown).
    pub failed_climbs: u64,
    /// Probes of subscribers' links started ([`Event::Probe`](super::Event::Probe)).
    pub probes: u64,
    /// Probes that ended without a climb (time up, or the link began to queue).
    pub probes_failed: u64,
    /// Notifications not delivered because their recipient was disconnected.
    pub notifications_dropped: u64,
    /// Rooms now.
    pub rooms: u64,
    /// Participants now (connected or in their grace period), relay members not included.
    pub participants: u64,
    /// Relay members now ([`Sfu::join_relay`](super::Sfu::join_relay)).
    pub relays: u64,
    /// Published tracks now.
    pub tracks: u64,
    /// Subscriptions now.
    pub subscriptions: u64,
}

/// Packets not forwarded, by reason. Counts in the first three are per packet; the others are per
/// packet and subscriber (a packet skipped by three subscribers counts three).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropStats {
    /// The publisher has no live layer on the packet's media id.
    pub unknown_media: u64,
    /// The sender is not in any room.
    pub not_joined: u64,
    /// The RTP header is malformed (too short, wrong version, bad lengths or padding).
    pub malformed: u64,
    /// The subscription waits for a keyframe of this layer (to start or to switch), or the
    /// packet is older than the keyframe it started at.
    pub waiting_for_keyframe: u64,
    /// The subscription forwards another layer of the track.
    pub other_layer: u64,
    /// The subscriber is disconnected (in its grace period).
    pub subscriber_disconnected: u64,
    /// Video not forwarded while load is shed: its publisher is not among the latest speakers
    /// ([`Sfu::set_video_speakers`](super::Sfu::set_video_speakers)).
    pub shed: u64,
    /// The subscription is paused by the allocation.
    pub paused: u64,
}
