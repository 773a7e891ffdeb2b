//! Limits and tunables of the SFU core.

use std::time::Duration;

/// Configuration of an [`Sfu`](super::Sfu). A plain struct: start from [`SfuConfig::default`] and
/// change what you need. Every limit is enforced with its own [`SfuError`](super::SfuError).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SfuConfig {
    /// Rooms that may exist at once (default 10 000). A room costs a name and two small lists;
    /// the limit bounds what a flood of joins to distinct room names can allocate.
    pub max_rooms: usize,
    /// Participants in one room (default 1000). Joins and leaves notify every member, so this
    /// bounds the events one call can produce, and with the subscription limit the fan-out of a
    /// single packet.
    pub max_participants_per_room: usize,
    /// Tracks one participant may publish at once (default 16). Each track costs its layers'
    /// state (about 200 bytes) plus its subscriber list.
    pub max_tracks_per_participant: usize,
    /// Subscriptions one participant may hold at once (default 256). Each costs about 120 bytes
    /// and one iteration step for every packet of its track; in a room of N participants who
    /// subscribe to everything, memory grows as N², which this caps at N × limit.
    pub max_subscriptions_per_participant: usize,
    /// Minimum time between two keyframe requests sent upstream for the same track and layer
    /// (default 500 ms). Requests inside the window are coalesced into one sent when it ends,
    /// unless a keyframe of that layer passes first. Protects publishers from PLI storms.
    pub keyframe_request_interval: Duration,
    /// How long a disconnected participant keeps its place, tracks and subscriptions (default
    /// 20 s), waiting for [`Sfu::reconnect`](super::Sfu::reconnect).
    pub grace_period: Duration,
    /// Layer choice hysteresis, going up: a subscription moves to a higher layer only when the
    /// bandwidth left for it exceeds that layer's bitrate by this many percent (default 20).
    pub layer_up_headroom_percent: u32,
    /// Layer choice hysteresis, over time: after a subscription's target went down, it does not
    /// go up again for this long (default 2 s), so a fluctuating estimate does not make the
    /// picture oscillate (every switch costs a keyframe).
    pub layer_up_cooldown: Duration,
    /// A learned scaling of each subscriber's budget ([`BudgetPolicy`](crate::bwe::BudgetPolicy)),
    /// off by default (docs/BENCHMARKS.md §13.3: none found beats the heuristic).
    pub budget_policy: Option<crate::bwe::BudgetPolicy>,
}

impl Default for SfuConfig {
    fn default() -> Self {
        Self {
            max_rooms: 10_000,
            max_participants_per_room: 1_000,
            max_tracks_per_participant: 16,
            max_subscriptions_per_participant: 256,
            keyframe_request_interval: Duration::from_millis(500),
            grace_period: Duration::from_secs(20),
            layer_up_headroom_percent: 20,
            layer_up_cooldown: Duration::from_secs(2),
            budget_policy: None,
        }
    }
}
