//! Prometheus metrics. Labels are enums, never formatted strings; every counter is an atomic, so
//! the forwarding path can count without locks.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// How a session is connected.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Transport {
    /// WebTransport over HTTP/3 (browsers).
    Webtransport,
    /// Raw QUIC, ALPN `strait/1` (native clients).
    Quic,
    /// A WebRTC peer of the bridge (WHIP publisher or WHEP subscriber).
    Webrtc,
}

impl Transport {
    /// The label value (snake case).
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Webtransport => "webtransport",
            Transport::Quic => "quic",
            Transport::Webrtc => "webrtc",
        }
    }
}

impl EncodeLabelValue for Transport {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(self.as_str())
    }
}

/// Label set with one `transport` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabel {
    /// The transport.
    pub transport: Transport,
}

/// Label set with one `worker` label (a media worker's index).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabel {
    /// The worker's index, from 0.
    pub worker: u32,
}

/// Why a packet was not forwarded.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum DropReason {
    /// A datagram that did not parse (unknown kind, bad media id, not RTP).
    MalformedDatagram,
    /// RTP on a media id nobody published.
    UnknownMedia,
    /// The media worker's queue was full.
    WorkerQueueFull,
    /// The subscriber's datagram send buffer was full: the oldest queued datagram was dropped
    /// to make room for a newer one (newest wins).
    SendBufferFull,
    /// The packet was larger than the subscriber's current maximum datagram size.
    TooLargeForDatagram,
    /// Datagrams are not supported or the connection closed while sending.
    SendFailed,
    /// A subscription waits for a keyframe before it forwards.
    WaitingForKeyframe,
    /// The packet belongs to a simulcast layer the subscriber is not on.
    OtherLayer,
    /// The subscriber is disconnected (within its grace period).
    SubscriberAway,
    /// A datagram arrived before the session joined a room.
    NotJoined,
    /// A STUN Binding request on the WebRTC port named an ICE ufrag no peer has.
    WebrtcUnknownUfrag,
    /// A datagram on the WebRTC port came from an address that never completed ICE.
    WebrtcUnknownSource,
    /// A STUN check on the WebRTC port from a new address that did not pass the peer's
    /// integrity check, or that replayed one from another address: the address is not added.
    WebrtcUnverifiedCheck,
    /// Video not forwarded by an overloaded worker: its publisher is not among the latest
    /// speakers (load shedding, level 3); per packet and subscriber.
    ShedVideo,
    /// A WebRTC peer's stack refused a datagram with an error, or panicked on it (contained), or
    /// an RTP datagram of a connected peer yielded no packet (SRTP authentication or replay check
    /// failed, unknown payload type). Failed DTLS records and SRTCP are dropped inside `rtc`
    /// without a trace, so they are not counted here.
    WebrtcRejected,
    /// RTP for a WebRTC subscriber could not be written to its leg (not connected yet, or its
    /// codec not negotiated).
    WebrtcSendFailed,
    /// A stream from a WebRTC publisher that the bridge does not forward (a second simulcast
    /// layer, or an unknown codec).
    WebrtcUnsupportedStream,
    /// Sending on the WebRTC UDP socket failed (its send buffer was full, or the address is
    /// unreachable).
    UdpSendFailed,
    /// The session sent media faster than its budget (`limits.media_packets_per_second` with
    /// `limits.media_burst`): its own packet was dropped before reaching its worker.
    MediaBudget,
    /// A datagram for another media worker (a shared WebRTC port's) found that worker's pipe
    /// full.
    WorkerPipeFull,
    /// The subscription is paused by its subscriber's bandwidth allocation (its link cannot
    /// carry it next to higher-priority video); per packet and subscriber.
    Paused,
}

impl DropReason {
    /// Every reason, in declaration order (`reason as usize` indexes it).
    pub const ALL: [DropReason; 21] = [
        DropReason::MalformedDatagram,
        DropReason::UnknownMedia,
        DropReason::WorkerQueueFull,
        DropReason::SendBufferFull,
        DropReason::TooLargeForDatagram,
        DropReason::SendFailed,
        DropReason::WaitingForKeyframe,
        DropReason::OtherLayer,
        DropReason::SubscriberAway,
        DropReason::NotJoined,
        DropReason::WebrtcUnknownUfrag,
        DropReason::WebrtcUnknownSource,
        DropReason::WebrtcUnverifiedCheck,
        DropReason::ShedVideo,
        DropReason::WebrtcRejected,
        DropReason::WebrtcSendFailed,
        DropReason::WebrtcUnsupportedStream,
        DropReason::UdpSendFailed,
        DropReason::MediaBudget,
        DropReason::WorkerPipeFull,
        DropReason::Paused,
    ];

    /// The label value (snake case).
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::MalformedDatagram => "malformed_datagram",
            DropReason::UnknownMedia => "unknown_media",
            DropReason::WorkerQueueFull => "worker_queue_full",
            DropReason::SendBufferFull => "send_buffer_full",
            DropReason::TooLargeForDatagram => "too_large_for_datagram",
            DropReason::SendFailed => "send_failed",
            DropReason::WaitingForKeyframe => "waiting_for_keyframe",
            DropReason::OtherLayer => "other_layer",
            DropReason::SubscriberAway => "subscriber_away",
            DropReason::NotJoined => "not_joined",
            DropReason::WebrtcUnknownUfrag => "webrtc_unknown_ufrag",
            DropReason::WebrtcUnknownSource => "webrtc_unknown_source",
            DropReason::WebrtcUnverifiedCheck => "webrtc_unverified_check",
            DropReason::ShedVideo => "shed_video",
            DropReason::WebrtcRejected => "webrtc_rejected",
            DropReason::WebrtcSendFailed => "webrtc_send_failed",
            DropReason::WebrtcUnsupportedStream => "webrtc_unsupported_stream",
            DropReason::UdpSendFailed => "udp_send_failed",
            DropReason::MediaBudget => "media_budget",
            DropReason::WorkerPipeFull => "worker_pipe_full",
            DropReason::Paused => "paused",
        }
    }
}

impl EncodeLabelValue for DropReason {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(self.as_str())
    }
}

/// Label set with one `reason` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabel {
    /// The reason.
    pub reason: DropReason,
}

/// What became of one packet a WebRTC subscriber asked for again in a NACK.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum NackResult {
    /// Handed to the retransmission cache (sent again if it still holds the packet).
    Granted,
    /// Already sent again moments ago: not again.
    Duplicate,
    /// Beyond the leg's retransmission budget (twice the stream's packet rate): not sent.
    OverBudget,
    /// No longer (or never) in the stream's packet cache: not sent.
    NotCached,
}

impl EncodeLabelValue for NackResult {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(match self {
            NackResult::Granted => "granted",
            NackResult::Duplicate => "duplicate",
            NackResult::OverBudget => "over_budget",
            NackResult::NotCached => "not_cached",
        })
    }
}

/// A kind of RTCP feedback from WebRTC subscribers.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum FeedbackKind {
    /// Generic NACK.
    Nack,
    /// Picture loss indication.
    Pli,
    /// Full intra request.
    Fir,
    /// Transport-wide congestion control feedback.
    Twcc,
    /// Receiver-estimated maximum bitrate.
    Remb,
}

impl EncodeLabelValue for FeedbackKind {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(match self {
            FeedbackKind::Nack => "nack",
            FeedbackKind::Pli => "pli",
            FeedbackKind::Fir => "fir",
            FeedbackKind::Twcc => "twcc",
            FeedbackKind::Remb => "remb",
        })
    }
}

/// Label set with one `kind` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FeedbackLabel {
    /// The kind.
    pub kind: FeedbackKind,
}

/// Label set with one `result` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NackLabel {
    /// The result.
    pub result: NackResult,
}

/// Why a connection or session was refused before it started.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum RefusalReason {
    /// Too many handshakes in progress.
    Handshakes,
    /// The node's session limit.
    Sessions,
    /// The per-IP session limit.
    SessionsPerIp,
    /// The gateway is draining.
    Draining,
    /// The WebTransport `Origin` is not allowed.
    Origin,
    /// The WebTransport path is not the session path.
    Path,
    /// The ALPN is neither `h3` nor `strait/1`.
    Alpn,
    /// The TLS or QUIC handshake failed.
    Handshake,
    /// Invalid, expired or missing access token.
    Auth,
    /// No `ClientHello` in time, or an unsupported version.
    Hello,
    /// The HTTP port's connection cap (`http.max_connections`).
    HttpConnections,
    /// A join or a WHIP/WHEP offer refused by an overloaded media worker (load shedding).
    Overloaded,
    /// A connection for a link between nodes (ALPN `strait-peer/1`) that did not prove the
    /// cluster's peer secret, or broke the exchange of hellos.
    Peer,
}

impl RefusalReason {
    /// The label value (snake case).
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::Handshakes => "handshakes",
            RefusalReason::Sessions => "sessions",
            RefusalReason::SessionsPerIp => "sessions_per_ip",
            RefusalReason::Draining => "draining",
            RefusalReason::Origin => "origin",
            RefusalReason::Path => "path",
            RefusalReason::Alpn => "alpn",
            RefusalReason::Handshake => "handshake",
            RefusalReason::Auth => "auth",
            RefusalReason::Hello => "hello",
            RefusalReason::HttpConnections => "http_connections",
            RefusalReason::Overloaded => "overloaded",
            RefusalReason::Peer => "peer",
        }
    }
}

impl EncodeLabelValue for RefusalReason {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(self.as_str())
    }
}

/// Label set with one `reason` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabel {
    /// The reason.
    pub reason: RefusalReason,
}

/// What the cluster did (`strait_cluster_events_total{event}`).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum ClusterEvent {
    /// The node's lease was renewed.
    LeaseRenewed,
    /// A command to Redis failed (unreachable, timed out, refused).
    RedisError,
    /// A session or offer was served here: its room was this node's, or became it.
    PlacedHere,
    /// A session or offer was redirected to the room's owner.
    Redirected,
    /// A session or offer was refused because no node could take its room now.
    Unavailable,
    /// A room whose placement was gone from Redis (expired, flushed) was taken back.
    Reclaimed,
    /// A room this node served turned out to be owned by another node.
    Lost,
    /// A room of this draining node was handed to another node.
    HandedOver,
}

impl ClusterEvent {
    /// The label value (snake case).
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterEvent::LeaseRenewed => "lease_renewed",
            ClusterEvent::RedisError => "redis_error",
            ClusterEvent::PlacedHere => "placed_here",
            ClusterEvent::Redirected => "redirected",
            ClusterEvent::Unavailable => "unavailable",
            ClusterEvent::Reclaimed => "reclaimed",
            ClusterEvent::Lost => "lost",
            ClusterEvent::HandedOver => "handed_over",
        }
    }
}

impl EncodeLabelValue for ClusterEvent {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(self.as_str())
    }
}

/// Label set with one `event` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabel {
    /// The event.
    pub event: ClusterEvent,
}

/// How a resume attempt ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum ResumeResult {
    /// The session was restored.
    Resumed,
    /// The token was invalid, expired or its participant gone; a fresh session started.
    Failed,
}

impl ResumeResult {
    /// The label value (snake case).
    pub fn as_str(self) -> &'static str {
        match self {
            ResumeResult::Resumed => "resumed",
            ResumeResult::Failed => "failed",
        }
    }
}

impl EncodeLabelValue for ResumeResult {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(self.as_str())
    }
}

/// Label set with one `result` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResumeLabel {
    /// The result.
    pub result: ResumeResult,
}

/// Every metric of the gateway.
#[derive(Debug)]
pub struct Metrics {
    /// Sessions connected now.
    pub sessions: Family<TransportLabel, Gauge>,
    /// Connections to the HTTP port now (not counting upgraded WebSockets).
    pub http_connections: Gauge,
    /// Rooms open now.
    pub rooms: Gauge,
    /// Participants in rooms now (connected or within their grace period).
    pub participants: Gauge,
    /// Participants in rooms now, per media worker.
    pub worker_participants: Family<WorkerLabel, Gauge>,
    /// Rooms now, per media worker.
    pub worker_rooms: Family<WorkerLabel, Gauge>,
    /// Load-shedding level now (0 to 3), per media worker.
    pub worker_shed_level: Family<WorkerLabel, Gauge>,
    /// The largest media queue delay of the last quarter second, per media worker.
    pub worker_queue_delay: Family<WorkerLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// The busy ratio each media worker sheds by: the larger of its thread's CPU time over wall
    /// time and the process's CPU time over wall time and cores, in the last second.
    pub worker_busy: Family<WorkerLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Published tracks now.
    pub tracks: Gauge,
    /// Active subscriptions now.
    pub subscriptions: Gauge,
    /// Media packets received from publishers.
    pub packets_in: Family<TransportLabel, Counter>,
    /// Media bytes received from publishers (RTP bytes).
    pub bytes_in: Family<TransportLabel, Counter>,
    /// Media packets sent to subscribers.
    pub packets_out: Family<TransportLabel, Counter>,
    /// Media bytes sent to subscribers (RTP bytes).
    pub bytes_out: Family<TransportLabel, Counter>,
    /// Packets not forwarded, by reason.
    pub drops: Family<DropLabel, Counter>,
    /// `drops`' counter of each reason, indexed by `reason as usize`.
    drop_counters: Vec<Counter>,
    /// Connections or sessions refused before they started, by reason.
    pub refusals: Family<RefusalLabel, Counter>,
    /// What the cluster did, by event (nothing outside a cluster).
    pub cluster: Family<ClusterLabel, Counter>,
    /// From accepting the connection (before the handshake) to `Joined` sent, in seconds.
    pub join_latency: Histogram,
    /// Client address changes observed on live connections (QUIC migration).
    pub migrations: Counter,
    /// Connection attempts asked to prove their address with a QUIC Retry (under load).
    pub retries: Counter,
    /// Resume attempts, by result.
    pub resumes: Family<ResumeLabel, Counter>,
    /// Sessions closed because they broke the protocol.
    pub protocol_errors: Counter,
    /// Control messages refused by the rate limit.
    pub rate_limited: Counter,
    /// WebRTC peers of the bridge now (WHIP and WHEP).
    pub webrtc_peers: Gauge,
    /// WHIP/WHEP offers refused (bad SDP, unsupported codecs, limits, auth).
    pub webrtc_offers_refused: Counter,
    /// Datagrams of a shared WebRTC port handed to the media worker of their peer.
    pub webrtc_steered: Counter,
    /// Keyframe requests (PLI or FIR) received from WHEP subscribers.
    pub webrtc_keyframe_requests_in: Counter,
    /// PLIs sent to WHIP publishers.
    pub webrtc_keyframe_requests_out: Counter,
    /// Datagrams the WebRTC bridge sent: media, retransmissions, RTCP, STUN and DTLS.
    pub webrtc_datagrams_out: Counter,
    /// Peer source addresses the WebRTC bridges route now.
    pub webrtc_addresses: Gauge,
    /// Packets WebRTC subscribers asked for again, by what became of the request.
    pub webrtc_nacks: Family<NackLabel, Counter>,
    /// RTCP feedback packets from WebRTC subscribers, by kind.
    pub webrtc_feedback: Family<FeedbackLabel, Counter>,
    /// Sender reports the WebRTC bridges sent.
    pub webrtc_sender_reports: Counter,
    /// WebRTC subscriber legs found to leave a probe's padding out of their feedback.
    pub webrtc_padding_unreported: Counter,
    /// What the bandwidth allocation of subscribers did (`strait_allocation_*`).
    pub allocation: AllocationMetrics,
    /// The embedded TURN server (`strait_turn_*`).
    pub turn: TurnMetrics,
}

impl Metrics {
    /// Creates the metrics and registers them under the `strait` prefix.
    pub fn new(registry: &mut Registry) -> Metrics {
        let drops: Family<DropLabel, Counter> = Family::default();
        let drop_counters = DropReason::ALL
            .iter()
            .map(|&reason| drops.get_or_create(&DropLabel { reason }).clone())
            .collect();
        let m = Metrics {
            sessions: Family::default(),
            http_connections: Gauge::default(),
            rooms: Gauge::default(),
            participants: Gauge::default(),
            worker_participants: Family::default(),
            worker_rooms: Family::default(),
            worker_shed_level: Family::default(),
            worker_queue_delay: Family::default(),
            worker_busy: Family::default(),
            tracks: Gauge::default(),
            subscriptions: Gauge::default(),
            packets_in: Family::default(),
            bytes_in: Family::default(),
            packets_out: Family::default(),
            bytes_out: Family::default(),
            drops,
            drop_counters,
            refusals: Family::default(),
            cluster: Family::default(),
            join_latency: Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            migrations: Counter::default(),
            retries: Counter::default(),
            resumes: Family::default(),
            protocol_errors: Counter::default(),
            rate_limited: Counter::default(),
            webrtc_peers: Gauge::default(),
            webrtc_offers_refused: Counter::default(),
            webrtc_steered: Counter::default(),
            webrtc_keyframe_requests_in: Counter::default(),
            webrtc_keyframe_requests_out: Counter::default(),
            webrtc_datagrams_out: Counter::default(),
            webrtc_addresses: Gauge::default(),
            webrtc_nacks: Family::default(),
            webrtc_feedback: Family::default(),
            webrtc_sender_reports: Counter::default(),
            webrtc_padding_unreported: Counter::default(),
            allocation: AllocationMetrics::new(),
            turn: TurnMetrics::default(),
        };
        let r = registry.sub_registry_with_prefix("strait");
        r.register("sessions", "Sessions connected now", m.sessions.clone());
        r.register(
            "http_connections",
            "Connections to the HTTP port now (upgraded WebSockets not counted)",
            m.http_connections.clone(),
        );
        r.register("rooms", "Rooms open now", m.rooms.clone());
        r.register(
            "participants",
            "Participants in rooms now",
            m.participants.clone(),
        );
        r.register(
            "worker_participants",
            "Participants in rooms now, per media worker",
            m.worker_participants.clone(),
        );
        r.register(
            "worker_rooms",
            "Rooms now, per media worker",
            m.worker_rooms.clone(),
        );
        r.register(
            "worker_shed_level",
            "Load-shedding level now (0 none, 1 joins refused, 2 lowest layers, 3 latest speakers' video only), per media worker",
            m.worker_shed_level.clone(),
        );
        r.register(
            "worker_queue_delay_seconds",
            "The largest media queue delay of the last quarter second, per media worker",
            m.worker_queue_delay.clone(),
        );
        r.register(
            "worker_busy_ratio",
            "The larger of the media worker thread's CPU share and the process's share of all cores, in the last second",
            m.worker_busy.clone(),
        );
        r.register("tracks", "Published tracks now", m.tracks.clone());
        r.register(
            "subscriptions",
            "Active subscriptions now",
            m.subscriptions.clone(),
        );
        r.register("packets_in", "Media packets received", m.packets_in.clone());
        r.register("bytes_in", "Media bytes received", m.bytes_in.clone());
        r.register("packets_out", "Media packets sent", m.packets_out.clone());
        r.register("bytes_out", "Media bytes sent", m.bytes_out.clone());
        r.register(
            "drops",
            "Media packets not forwarded, by reason",
            m.drops.clone(),
        );
        r.register(
            "refusals",
            "Connections refused before a session started",
            m.refusals.clone(),
        );
        r.register(
            "cluster_events",
            "Cluster lease renewals, placements, redirects and Redis errors",
            m.cluster.clone(),
        );
        r.register(
            "join_latency_seconds",
            "Connection accepted to Joined sent",
            m.join_latency.clone(),
        );
        r.register(
            "migrations",
            "Client address changes on live connections",
            m.migrations.clone(),
        );
        r.register(
            "retries",
            "Connection attempts asked for a QUIC Retry",
            m.retries.clone(),
        );
        r.register("resumes", "Resume attempts by result", m.resumes.clone());
        r.register(
            "protocol_errors",
            "Sessions closed for breaking the protocol",
            m.protocol_errors.clone(),
        );
        r.register(
            "rate_limited",
            "Control messages refused by the rate limit",
            m.rate_limited.clone(),
        );
        r.register(
            "webrtc_peers",
            "WebRTC peers of the bridge now",
            m.webrtc_peers.clone(),
        );
        r.register(
            "webrtc_offers_refused",
            "WHIP/WHEP offers refused",
            m.webrtc_offers_refused.clone(),
        );
        r.register(
            "webrtc_steered",
            "Datagrams of a shared WebRTC port handed to the media worker of their peer",
            m.webrtc_steered.clone(),
        );
        r.register(
            "webrtc_keyframe_requests_in",
            "Keyframe requests (PLI/FIR) received from WHEP subscribers",
            m.webrtc_keyframe_requests_in.clone(),
        );
        r.register(
            "webrtc_keyframe_requests_out",
            "PLIs sent to WHIP publishers",
            m.webrtc_keyframe_requests_out.clone(),
        );
        r.register(
            "webrtc_datagrams_out",
            "Datagrams the WebRTC bridge sent (media, retransmissions, RTCP, STUN, DTLS)",
            m.webrtc_datagrams_out.clone(),
        );
        r.register(
            "webrtc_addresses",
            "Peer source addresses the WebRTC bridges route now",
            m.webrtc_addresses.clone(),
        );
        r.register(
            "webrtc_nacks",
            "Packets WebRTC subscribers asked for again (NACK), by result",
            m.webrtc_nacks.clone(),
        );
        r.register(
            "webrtc_feedback",
            "RTCP feedback packets from WebRTC subscribers, by kind",
            m.webrtc_feedback.clone(),
        );
        r.register(
            "webrtc_sender_reports",
            "RTCP sender reports the WebRTC bridge sent for forwarded streams",
            m.webrtc_sender_reports.clone(),
        );
        r.register(
            "webrtc_padding_unreported",
            "WebRTC subscriber legs whose feedback left a probe's padding out (not probed again)",
            m.webrtc_padding_unreported.clone(),
        );
        m.allocation.register(r);
        m.turn.register(r.sub_registry_with_prefix("turn"));
        m
    }

    /// Counts a dropped packet.
    pub fn count_drop(&self, reason: DropReason) {
        self.count_drops(reason, 1);
    }

    /// Counts `n` dropped packets. The counters are resolved once, when the metrics are made:
    /// no lookup in the registry per drop.
    pub fn count_drops(&self, reason: DropReason, n: u64) {
        self.drop_counters[reason as usize].inc_by(n);
    }

    /// Counts a refusal.
    pub fn refuse(&self, reason: RefusalReason) {
        self.refusals.get_or_create(&RefusalLabel { reason }).inc();
    }

    /// Counts one cluster event.
    pub fn cluster_event(&self, event: ClusterEvent) {
        self.cluster.get_or_create(&ClusterLabel { event }).inc();
    }
}

/// The buckets of `strait_subscriber_estimate_bits_per_second`: from an audio-only link to a
/// few full-HD videos.
const ESTIMATE_BUCKETS: [f64; 14] = [
    50e3, 100e3, 200e3, 300e3, 500e3, 750e3, 1e6, 1.5e6, 2e6, 3e6, 5e6, 10e6, 20e6, 50e6,
];

fn estimate_histogram() -> Histogram {
    Histogram::new(ESTIMATE_BUCKETS)
}

/// What the bandwidth allocation of subscribers did: the SFU cores' counters (each media worker
/// adds what its own core counted since it last looked), the padding sent to probe links, and
/// the estimates the workers were given.
#[derive(Debug)]
pub struct AllocationMetrics {
    /// Video subscriptions paused because their subscriber's link could not carry them.
    pub pauses: Counter,
    /// Paused subscriptions resumed.
    pub resumes: Counter,
    /// Climbs to a higher layer (or resumes) undone by the budget within a few seconds; each
    /// doubles that subscriber's cooldown.
    pub failed_climbs: Counter,
    /// Probes of subscribers' links started.
    pub probes: Counter,
    /// Probes that ended without a climb (time up, or the link began to queue).
    pub probes_failed: Counter,
    /// Padding datagrams handed to QUIC to probe subscribers' links.
    pub padding_datagrams: Counter,
    /// Bytes of those datagrams (kind byte and zeros, WebTransport prefix included).
    pub padding_bytes: Counter,
    /// Subscribers' estimates as they reach their media worker (a QUIC or WebTransport session's
    /// when it moved by a tenth (its queueing delay by 5 ms) or changed state, a WebRTC leg's likewise), bits per second.
    pub estimates: Family<TransportLabel, Histogram, fn() -> Histogram>,
    /// `estimates`' histogram of each transport, resolved once (no lookup per estimate).
    by_transport: [Histogram; 3],
}

impl AllocationMetrics {
    fn new() -> AllocationMetrics {
        let estimates: Family<TransportLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(estimate_histogram);
        let by_transport =
            [Transport::Quic, Transport::Webtransport, Transport::Webrtc].map(|transport| {
                estimates
                    .get_or_create(&TransportLabel { transport })
                    .clone()
            });
        AllocationMetrics {
            pauses: Counter::default(),
            resumes: Counter::default(),
            failed_climbs: Counter::default(),
            probes: Counter::default(),
            probes_failed: Counter::default(),
            padding_datagrams: Counter::default(),
            padding_bytes: Counter::default(),
            estimates,
            by_transport,
        }
    }

    fn register(&self, r: &mut Registry) {
        r.register(
            "allocation_pauses",
            "Video subscriptions paused because their subscriber's link could not carry them",
            self.pauses.clone(),
        );
        r.register(
            "allocation_resumes",
            "Paused video subscriptions resumed",
            self.resumes.clone(),
        );
        r.register(
            "allocation_failed_climbs",
            "Climbs to a higher layer undone by the subscriber's budget within the trial time",
            self.failed_climbs.clone(),
        );
        r.register(
            "allocation_probes",
            "Probes of subscribers' links started",
            self.probes.clone(),
        );
        r.register(
            "allocation_probes_failed",
            "Probes of subscribers' links that ended without a climb",
            self.probes_failed.clone(),
        );
        r.register(
            "padding_datagrams",
            "Padding datagrams sent to probe subscribers' links",
            self.padding_datagrams.clone(),
        );
        r.register(
            "padding_bytes",
            "Bytes of padding datagrams sent to probe subscribers' links",
            self.padding_bytes.clone(),
        );
        r.register(
            "subscriber_estimate_bits_per_second",
            "Subscribers' downstream bandwidth estimates as they reach their media worker",
            self.estimates.clone(),
        );
    }

    /// Notes an estimate of a subscriber on `transport`.
    pub fn observe_estimate(&self, transport: Transport, available_bps: u64) {
        let index = match transport {
            Transport::Quic => 0,
            Transport::Webtransport => 1,
            Transport::Webrtc => 2,
        };
        self.by_transport[index].observe(available_bps as f64);
    }
}

/// A label value taken from a reason enum's `as_str()` (always a `&'static str` constant, never
/// a formatted string).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub struct StaticLabel(pub &'static str);

impl EncodeLabelValue for StaticLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(self.0)
    }
}

/// Label set with one `reason` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TurnReasonLabel {
    /// The reason.
    pub reason: StaticLabel,
}

/// Label set with one `direction` label (`to_peer`, `to_client`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TurnDirectionLabel {
    /// The direction.
    pub direction: StaticLabel,
}

/// Metrics of the embedded TURN server.
#[derive(Debug, Default)]
pub struct TurnMetrics {
    /// Allocations now.
    pub allocations: Gauge,
    /// Allocations made.
    pub allocations_created: Counter,
    /// Allocate requests refused by a quota (486 per identity, 508 per node).
    pub quota_refusals: Counter,
    /// Sources the 401 rate limiter forgot to make room for new ones (its table was full).
    pub rate_limit_evictions: Counter,
    /// Packets relayed, by direction.
    pub relayed_packets: Family<TurnDirectionLabel, Counter>,
    /// Payload bytes relayed, by direction.
    pub relayed_bytes: Family<TurnDirectionLabel, Counter>,
    /// Peer addresses refused (403, or a packet not sent), by deny reason.
    pub denials: Family<TurnReasonLabel, Counter>,
    /// Requests not authenticated, by reason (`challenge` is the normal first round).
    pub auth_failures: Family<TurnReasonLabel, Counter>,
    /// Inputs dropped without a reply, and sends that failed, by reason.
    pub drops: Family<TurnReasonLabel, Counter>,
    /// TCP and TLS connections now.
    pub stream_connections: Gauge,
    /// TCP and TLS connections closed by the server, by reason (garbage, idle, ...).
    pub stream_closes: Family<TurnReasonLabel, Counter>,
}

impl TurnMetrics {
    fn register(&self, r: &mut Registry) {
        r.register(
            "allocations",
            "TURN allocations now",
            self.allocations.clone(),
        );
        r.register(
            "allocations_created",
            "TURN allocations made",
            self.allocations_created.clone(),
        );
        r.register(
            "quota_refusals",
            "TURN allocations refused by a quota",
            self.quota_refusals.clone(),
        );
        r.register(
            "rate_limit_evictions",
            "Sources the TURN 401 rate limiter forgot, least recently seen first, to track new ones",
            self.rate_limit_evictions.clone(),
        );
        r.register(
            "relayed_packets",
            "Packets relayed by TURN, by direction",
            self.relayed_packets.clone(),
        );
        r.register(
            "relayed_bytes",
            "Payload bytes relayed by TURN, by direction",
            self.relayed_bytes.clone(),
        );
        r.register(
            "denials",
            "Peer addresses refused by the TURN policy, by reason",
            self.denials.clone(),
        );
        r.register(
            "auth_failures",
            "TURN requests not authenticated, by reason",
            self.auth_failures.clone(),
        );
        r.register(
            "drops",
            "TURN inputs dropped without a reply, by reason",
            self.drops.clone(),
        );
        r.register(
            "stream_connections",
            "TURN TCP and TLS connections now",
            self.stream_connections.clone(),
        );
        r.register(
            "stream_closes",
            "TURN TCP and TLS connections closed by the server, by reason",
            self.stream_closes.clone(),
        );
    }

    /// Counts relayed traffic in one direction.
    pub fn relayed(&self, direction: &'static str, packets: u64, bytes: u64) {
        if packets == 0 {
            return;
        }
        let label = TurnDirectionLabel {
            direction: StaticLabel(direction),
        };
        self.relayed_packets.get_or_create(&label).inc_by(packets);
        self.relayed_bytes.get_or_create(&label).inc_by(bytes);
    }

    fn reason(reason: &'static str) -> TurnReasonLabel {
        TurnReasonLabel {
            reason: StaticLabel(reason),
        }
    }

    /// Counts `n` denials for `reason`.
    pub fn denials_by(&self, reason: &'static str, n: u64) {
        self.denials.get_or_create(&Self::reason(reason)).inc_by(n);
    }

    /// Counts one denial.
    pub fn denial(&self, reason: &'static str) {
        self.denials_by(reason, 1);
    }

    /// Counts `n` authentication failures for `reason`.
    pub fn auth_failures_by(&self, reason: &'static str, n: u64) {
        self.auth_failures
            .get_or_create(&Self::reason(reason))
            .inc_by(n);
    }

    /// Counts `n` drops for `reason`.
    pub fn drops_by(&self, reason: &'static str, n: u64) {
        self.drops.get_or_create(&Self::reason(reason)).inc_by(n);
    }

    /// Counts one drop.
    pub fn drop_reason(&self, reason: &'static str) {
        self.drops_by(reason, 1);
    }

    /// Counts a connection closed by the server.
    pub fn stream_closed(&self, reason: &'static str) {
        self.stream_closes
            .get_or_create(&Self::reason(reason))
            .inc();
    }
}
