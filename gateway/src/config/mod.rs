//! The gateway's configuration: one serde struct, read from a TOML file, `STRAIT_*` environment
//! variables and command-line overrides (in that order, later wins), unknown keys rejected, then
//! validated into a [`ValidConfig`] before anything starts.
//!
//! Overrides name a key by its path: `quic.listen`, `limits.max_sessions`. In the environment the
//! path is upper-cased with `__` between sections: `STRAIT_LIMITS__MAX_SESSIONS=500`. Values are
//! TOML values (`500`, `"20s"`, `["https://a.example"]`); a value that does not parse as TOML is
//! taken as a string, so `STRAIT_QUIC__LISTEN=0.0.0.0:4433` works without quotes.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

mod cluster;
mod turn;

pub(crate) use self::cluster::redact_url;
pub use self::cluster::{ClusterConfig, PEER_SECRET_MIN_LEN};
pub use self::turn::{Listener as TurnListener, TurnConfig};

/// The whole configuration, as written in the TOML file. Every field has a default, so an empty
/// file (or none) is a complete development configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The QUIC port (WebTransport and native sessions).
    pub quic: QuicConfig,
    /// The HTTP port (health, metrics, certificate hashes, dev tokens, web demo).
    pub http: HttpConfig,
    /// Certificates.
    pub tls: TlsConfig,
    /// Access-token keys and resume tokens.
    pub auth: AuthConfig,
    /// Admission and resource limits.
    pub limits: LimitsConfig,
    /// Session timing.
    pub session: SessionConfig,
    /// WebTransport specifics.
    pub webtransport: WebTransportConfig,
    /// Media forwarding.
    pub media: MediaConfig,
    /// The WebRTC bridge (WHIP/WHEP, ICE-lite/DTLS/SRTP on one UDP port).
    pub webrtc: WebRtcConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// Supervision of the media workers and the TURN server.
    pub health: HealthConfig,
    /// What an overloaded media worker sheds, and when.
    pub shedding: SheddingConfig,
    /// Logging.
    pub log: LogConfig,
    /// The embedded TURN server, or credentials for an external one.
    pub turn: TurnConfig,
    /// Several nodes sharing one Redis (off by default).
    pub cluster: ClusterConfig,
}

/// A QUIC connection's congestion controller (`quic.congestion_controller`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CongestionController {
    /// CUBIC (RFC 9438), quinn's default.
    #[default]
    Cubic,
    /// quinn's BBR (experimental in quinn).
    Bbr,
    /// NewReno (RFC 9002).
    NewReno,
}

/// The QUIC front door.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuicConfig {
    /// UDP address for both ALPNs (`h3` and `strait/1`). Loopback by default: set `0.0.0.0:4433`
    /// or `[::]:4433` to serve other machines.
    pub listen: SocketAddr,
    /// SO_RCVBUF / SO_SNDBUF requested for the UDP socket, in bytes. Larger buffers absorb bursts
    /// of fan-out at the cost of kernel memory.
    pub socket_buffer: usize,
    /// How often an idle connection is kept alive with a PING. Longer than the Strait client's
    /// 5 s, so that only one end pings a connection both keep alive (docs/OPERATIONS.md).
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// A connection silent for this long is closed (and its participant enters the grace period).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Datagram send buffer per connection, in bytes (quinn drops the oldest datagram when it is
    /// full; each session counts those as `send_buffer_full` when it looks at its connection,
    /// several times a second while media flows, never per datagram). It bounds
    /// the delay media can pile up behind a congestion window that lags: 64 KiB is about 350 ms
    /// of a 1.5 Mbit/s video (docs/BENCHMARKS.md §5.1).
    pub datagram_send_buffer: usize,
    /// Above this many handshakes in progress, new connections must prove their address with a
    /// QUIC Retry first (one extra round trip, no state kept for spoofed sources).
    pub retry_above_handshakes: usize,
    /// Peers that support the QUIC acknowledgement-frequency extension (quinn-based clients
    /// among them) are asked to acknowledge once per this many packets that call for an
    /// acknowledgement, instead of every second one: a subscriber's acknowledgements are most
    /// of what the gateway receives and decrypts per forwarded datagram. 0 leaves peers at their
    /// own default. Peers without the extension are not affected.
    pub ack_eliciting_threshold: u32,
    /// With `ack_eliciting_threshold`: the longest a peer may hold an acknowledgement back. It
    /// bounds how late the gateway's congestion control and loss detection hear of a packet.
    #[serde(with = "humantime_serde")]
    pub ack_max_delay: Duration,
    /// The congestion controller of every connection: `cubic` (quinn's default), `bbr` or
    /// `new_reno`. Under random loss Cubic's window shrinks far below what the link carries
    /// and holds a subscriber's datagrams back at each keyframe, which the layer allocation
    /// reads as a narrow link (docs/BENCHMARKS.md §13); quinn's BBR keeps its rate there, but
    /// is marked experimental by quinn.
    pub congestion_controller: CongestionController,
    /// Whether a subscriber's bandwidth estimate reads each packet's acknowledgement (a tap on
    /// the congestion controller; a session sending media refreshes its estimate from them
    /// every 50–250 ms) — the default — or only the connection's counters every 250 ms.
    /// Per-packet feedback sees a queue build or a probe overshoot within a refresh
    /// (docs/BENCHMARKS.md §13); it costs about 1.1 µs of CPU per forwarded datagram (§10.7).
    pub ack_feedback: bool,
    /// Losses that do not shrink the congestion window: a congestion event reaches the
    /// controller only when the path shows a queue (smoothed RTT 20 ms above its minimum), the
    /// congestion is persistent, or more than this share of the bytes was lost lately. A lossy
    /// last hop (Wi-Fi, mobile) drops a few per cent without a queue, and Cubic's window would
    /// shrink far below what the link carries at each loss (docs/BENCHMARKS.md §13). The media's
    /// rate still follows the bandwidth estimate, which holds above 2 % of loss and backs off
    /// above 10 %. 0 passes every event on (the controller alone); at most 0.5.
    pub loss_tolerance: f64,
    /// Stream data a client may send on one stream ahead of what the gateway has read, in bytes.
    /// The gateway reads one stream per session (the control stream) and only after the
    /// handshake; this and `receive_window` bound what a connection can make it buffer.
    pub stream_receive_window: usize,
    /// Stream data a client may send on all its streams together ahead of what the gateway has
    /// read, in bytes: the most a connection (authenticated or not) can make it buffer.
    pub receive_window: usize,
    /// Stream data the gateway buffers toward one client, sent and not yet acknowledged or not
    /// yet sent, in bytes (the control stream: a room's snapshot is the largest burst). A
    /// session whose client does not take it falls behind and is closed when its control queue
    /// (`limits.control_queue`) overflows.
    pub send_window: usize,
}

impl Default for QuicConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 4433)),
            socket_buffer: 4 * 1024 * 1024,
            keep_alive: Duration::from_secs(7),
            idle_timeout: Duration::from_secs(15),
            datagram_send_buffer: 64 * 1024,
            retry_above_handshakes: 64,
            ack_eliciting_threshold: 10,
            ack_max_delay: Duration::from_millis(25),
            congestion_controller: CongestionController::Cubic,
            ack_feedback: true,
            loss_tolerance: DEFAULT_LOSS_TOLERANCE,
            stream_receive_window: 64 * 1024,
            receive_window: 256 * 1024,
            send_window: 1024 * 1024,
        }
    }
}

/// The HTTP surface.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// TCP address. Loopback by default.
    pub listen: SocketAddr,
    /// Serve `POST /v1/dev/token` (mints access tokens for anyone who can reach the port).
    /// `None` means: only in development mode (no API key configured) with `listen` on
    /// loopback. `true` with no API key on another address is refused: it would mint tokens
    /// for anyone on the network.
    pub dev_token_endpoint: Option<bool>,
    /// Connections at once; one beyond it is closed when accepted. Upgraded WebSockets (`/ws/rtc`)
    /// count against the session limits instead.
    pub max_connections: usize,
    /// Time a connection has for a request's headers, from when it opens or finished its last
    /// answer: idle and slow connections are closed after it.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Time a request's body has to arrive in full; later, the request gets 408.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            dev_token_endpoint: None,
            max_connections: 4096,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
        }
    }
}

/// Certificates. Without `cert` and `key` the gateway makes a development certificate
/// (ECDSA P-256, at most 14 days, rotated before it expires) that browsers accept through
/// `serverCertificateHashes`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// PEM private key matching the leaf.
    pub key: Option<PathBuf>,
    /// Extra DNS names or IP addresses for the development certificate (besides `localhost`,
    /// `127.0.0.1` and `::1`).
    pub dev_names: Vec<String>,
}

/// One API key: tokens carry its id in their `kid` header and are signed with its secret.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The key id.
    pub id: String,
    /// The HS256 secret (at least 32 bytes).
    pub secret: String,
}

impl fmt::Debug for ApiKeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyConfig")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Access tokens and resume tokens.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// API keys. Empty means development mode: a key is generated and printed at start.
    pub keys: Vec<ApiKeyConfig>,
    /// Secret that signs resume tokens. Nodes of one cluster share it; when absent a random one
    /// is made per process (resume then works only on the node that issued the token).
    pub resume_secret: Option<String>,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("keys", &self.keys)
            .field(
                "resume_secret",
                &self.resume_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Admission and resource limits. Each is enforced with a clear error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Sessions on this node (each costs a QUIC connection, ~35 KiB idle, plus its queues).
    pub max_sessions: usize,
    /// Sessions from one source IP address (bounds what one host can take).
    pub max_sessions_per_ip: usize,
    /// QUIC handshakes in progress at once (handshakes cost CPU; beyond this they are refused).
    pub max_handshakes: usize,
    /// Largest control frame body accepted, in bytes (at most 1 MiB).
    pub max_frame_size: usize,
    /// Sustained control messages per second per session.
    pub max_messages_per_second: u32,
    /// Burst of control messages allowed above the sustained rate.
    pub message_burst: u32,
    /// Rooms on this node.
    pub max_rooms: usize,
    /// Participants in one room (a join beyond it is refused).
    pub max_participants_per_room: usize,
    /// Tracks one participant may publish.
    pub max_tracks_per_participant: usize,
    /// Tracks one participant may subscribe to.
    pub max_subscriptions_per_participant: usize,
    /// Control messages queued toward one session; a session that does not read them is closed.
    pub control_queue: usize,
    /// Media packets queued from all sessions toward one media worker; beyond it the newest are
    /// dropped and counted (`worker_queue_full`).
    pub media_queue: usize,
    /// Sustained media packets per second one session may send (its budget into its worker);
    /// beyond it, with `media_burst`, its own packets are dropped and counted (`media_budget`)
    /// before they reach the worker, so a flood costs no one else. The default is several times
    /// a simulcast camera with audio (about 450 packets per second).
    pub media_packets_per_second: u32,
    /// Burst of media packets allowed above the sustained rate (a keyframe of every simulcast
    /// layer at once).
    pub media_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_sessions: 10_000,
            max_sessions_per_ip: 256,
            max_handshakes: 512,
            max_frame_size: strait_protocol::limits::DEFAULT_MAX_FRAME_SIZE,
            max_messages_per_second: 50,
            message_burst: 200,
            max_rooms: 10_000,
            max_participants_per_room: 1_000,
            max_tracks_per_participant: 16,
            max_subscriptions_per_participant: 512,
            control_queue: 1_024,
            media_queue: 16_384,
            media_packets_per_second: 2_000,
            media_burst: 1_000,
        }
    }
}

/// Session timing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Time allowed between the handshake and `ClientHello`.
    #[serde(with = "humantime_serde")]
    pub hello_timeout: Duration,
    /// How long a participant whose connection was lost stays in its room, waiting to resume.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            hello_timeout: Duration::from_secs(10),
            grace_period: Duration::from_secs(20),
        }
    }
}

/// WebTransport specifics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebTransportConfig {
    /// The session path.
    pub path: String,
    /// Origins allowed to open sessions (`https://app.example`); `"*"` allows any. Empty means
    /// the gateway's own HTTP origins (`http://127.0.0.1:<port>`, `http://localhost:<port>`, and
    /// the HTTP listener's address and `cluster.public_host` with that port).
    pub allowed_origins: Vec<String>,
    /// Allow requests without an `Origin` header (non-browser clients; browsers always send one).
    pub allow_missing_origin: bool,
}

impl WebTransportConfig {
    /// Whether a browser page of `origin` (the request's `Origin` header, if any) may open a
    /// session, over WebTransport or on `/ws/rtc`: listed origins (`*` for any), or with an
    /// empty list the gateway's own HTTP origins — `127.0.0.1`, `localhost`, the address the
    /// HTTP port listens on (`http`, unless it listens on every address) and `public_host` (a
    /// cluster node's), each with `http`'s port, over `http` or `https`.
    pub fn allows_origin(
        &self,
        origin: Option<&str>,
        http: SocketAddr,
        public_host: Option<&str>,
    ) -> bool {
        let Some(origin) = origin else {
            return self.allow_missing_origin;
        };
        if !self.allowed_origins.is_empty() {
            return self.allowed_origins.iter().any(|o| o == "*" || o == origin);
        }
        let listen = (!http.ip().is_unspecified()).then(|| match http.ip() {
            IpAddr::V6(v6) => format!("[{v6}]"),
            ip => ip.to_string(),
        });
        let hosts = ["127.0.0.1", "localhost"]
            .into_iter()
            .chain(listen.as_deref())
            .chain(public_host);
        let port = http.port();
        hosts.into_iter().any(|host| {
            origin == format!("http://{host}:{port}") || origin == format!("https://{host}:{port}")
        })
    }
}

impl Default for WebTransportConfig {
    fn default() -> Self {
        Self {
            path: "/rtc".into(),
            allowed_origins: Vec::new(),
            allow_missing_origin: true,
        }
    }
}

/// Media forwarding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Minimum interval between keyframe requests sent upstream for one track layer.
    #[serde(with = "humantime_serde")]
    pub keyframe_request_interval: Duration,
    /// Media workers: threads that each hold a share of the rooms (their SFU state, their
    /// participants' sending side and their WebRTC peers). Unset: one per available core.
    pub workers: Option<usize>,
    /// Participants of one room on its home worker beyond which the room spreads over other
    /// workers (each fans the room's packets out to its own share of the participants).
    pub room_spread_at: usize,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            keyframe_request_interval: Duration::from_millis(500),
            workers: None,
            room_spread_at: 500,
        }
    }
}

/// The WebRTC bridge: legacy WebRTC peers publish with WHIP (`POST /whip/{room}`) and subscribe
/// with WHEP (`POST /whep/{room}/{track}`) on the HTTP port; their ICE, DTLS and SRTP all run on
/// one UDP socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebRtcConfig {
    /// Serve WHIP/WHEP and bind the UDP socket. When off, `/whip` and `/whep` answer 404.
    pub enabled: bool,
    /// UDP address of the one socket every WebRTC peer uses. Loopback by default.
    pub listen: SocketAddr,
    /// Addresses advertised to peers as host candidates (with the bound port). Empty: the
    /// listen address, which must then not be unspecified (`0.0.0.0`, `[::]`). Behind 1:1 NAT
    /// put the public address here. The first one is the address the peers' packets are
    /// matched against.
    pub public_ips: Vec<IpAddr>,
    /// SO_RCVBUF / SO_SNDBUF requested for the UDP socket, in bytes.
    pub socket_buffer: usize,
    /// Most WebRTC peers (WHIP and WHEP sessions) at once; an offer beyond it is answered 503.
    /// Each peer holds DTLS and SRTP state and interceptor buffers (tens of KiB) until it leaves
    /// or its ICE times out.
    pub max_peers: usize,
    /// Longest SDP offer accepted, in bytes; a longer one is answered 413 without being parsed.
    pub max_sdp_bytes: usize,
    /// A peer from which no ICE consent check has arrived for this long is removed from its room
    /// (ICE failed).
    #[serde(with = "humantime_serde")]
    pub ice_timeout: Duration,
    /// One UDP port for every media worker (`SO_REUSEPORT`, datagrams handed to the worker of
    /// their peer), instead of a port per worker.
    pub shared_port: bool,
    /// Packets kept per published stream (track and layer) forwarded to WebRTC subscribers, to
    /// answer their NACKs (a power of two, 1 to 32768). Each packet is held once for all the
    /// stream's legs: 512 packets of 1.5 Mbit/s video are about 3 s and 600 KiB per stream; each
    /// leg remembers its own numbering of them (12 bytes a packet).
    pub nack_cache_packets: u16,
}

impl Default for WebRtcConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 4478)),
            public_ips: Vec::new(),
            socket_buffer: 4 * 1024 * 1024,
            max_peers: 1024,
            max_sdp_bytes: 64 * 1024,
            ice_timeout: Duration::from_secs(25),
            nack_cache_packets: 512,
            shared_port: false,
        }
    }
}

/// Graceful shutdown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// After SIGTERM: how long sessions get to leave after the go-away before they are closed.
    #[serde(with = "humantime_serde")]
    pub drain_deadline: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_deadline: Duration::from_secs(10),
        }
    }
}

/// Supervision: when a part of the gateway counts as stalled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// A media worker or the TURN server that has not turned its loop for this long is stalled:
    /// `/readyz` and `/healthz` answer 503 until it turns again.
    #[serde(with = "humantime_serde")]
    pub stall_timeout: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            stall_timeout: Duration::from_secs(3),
        }
    }
}

/// Load shedding (see `docs/OPERATIONS.md`): an overloaded media worker refuses new joins (level
/// 1), then forwards only the lowest simulcast layers (2), then video only from the latest
/// speakers (3). Audio and control are never shed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SheddingConfig {
    /// Shed load at all.
    pub enabled: bool,
    /// Queue delay (the oldest media datagram of a batch, from its session to the worker) that
    /// enters level 1.
    #[serde(with = "humantime_serde")]
    pub join_queue_delay: Duration,
    /// Queue delay that enters level 2.
    #[serde(with = "humantime_serde")]
    pub layers_queue_delay: Duration,
    /// Queue delay that enters level 3.
    #[serde(with = "humantime_serde")]
    pub video_queue_delay: Duration,
    /// Busy ratio (the larger of the worker thread's CPU time over wall time and the process's
    /// over wall time and cores, each second) that enters level 1.
    pub join_busy: f64,
    /// Busy ratio that enters level 2.
    pub layers_busy: f64,
    /// Busy ratio that enters level 3 (above 1: never by CPU alone).
    pub video_busy: f64,
    /// Time with both measures below a level's thresholds before stepping down from it.
    #[serde(with = "humantime_serde")]
    pub recover_after: Duration,
    /// At level 3, the latest speakers whose video is still forwarded.
    pub speakers: usize,
}

impl Default for SheddingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            join_queue_delay: Duration::from_millis(50),
            layers_queue_delay: Duration::from_millis(100),
            video_queue_delay: Duration::from_millis(200),
            join_busy: 0.90,
            layers_busy: 0.97,
            video_busy: 0.99,
            recover_after: Duration::from_secs(5),
            speakers: 4,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// `tracing` filter directives (`info`, `strait_gateway=debug`). `RUST_LOG` wins when set.
    /// The default keeps the WebRTC stack (`rtc*`) at `error`: it logs a `warn` for every
    /// datagram it refuses, which a peer could otherwise turn into a log flood.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info,rtc=error".into(),
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML (after overrides) does not match the schema: an unknown key, a wrong type.
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// An override is not `key=value` or names no key.
    #[error("invalid override `{0}`: expected section.key=value")]
    Override(String),
    /// A value breaks a rule.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Where the configuration comes from.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// A TOML file.
    pub file: Option<PathBuf>,
    /// `(key path, value)` pairs from the environment (see [`env_overrides`]).
    pub env: Vec<(String, String)>,
    /// `(key path, value)` pairs from the command line.
    pub cli: Vec<(String, String)>,
}

/// Collects `STRAIT_SECTION__KEY=value` variables as `("section.key", value)`. Variables that do
/// not have the `__` form (for example `STRAIT_CONFIG`) are not configuration keys and are left
/// out.
pub fn env_overrides(vars: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vars
        .into_iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix("STRAIT_")?;
            rest.contains("__")
                .then(|| (rest.to_ascii_lowercase().replace("__", "."), v))
        })
        .collect();
    out.sort();
    out
}

/// Parses `section.key=value`.
pub fn parse_override(s: &str) -> Result<(String, String), ConfigError> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| ConfigError::Override(s.to_owned()))?;
    if k.is_empty() || !k.contains('.') {
        return Err(ConfigError::Override(s.to_owned()));
    }
    Ok((k.trim().to_owned(), v.to_owned()))
}

fn parse_value(raw: &str) -> toml::Value {
    // A TOML value when it is one; otherwise the raw text as a string.
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn apply_override(root: &mut toml::Table, path: &str, raw: &str) -> Result<(), ConfigError> {
    let mut parts: Vec<&str> = path.split('.').collect();
    let Some(last) = parts.pop() else {
        return Err(ConfigError::Override(path.to_owned()));
    };
    let mut table = root;
    for part in parts {
        let entry = table
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| ConfigError::Override(path.to_owned()))?;
    }
    table.insert(last.to_owned(), parse_value(raw));
    Ok(())
}

impl Config {
    /// Reads and merges the sources (file, then environment, then command line).
    pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
        let mut table = match &sources.file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str::<toml::Table>(&text)
                    .map_err(|e| ConfigError::Parse(format!("{}: {e}", path.display())))?
            }
            None => toml::Table::new(),
        };
        for (k, v) in sources.env.iter().chain(&sources.cli) {
            apply_override(&mut table, k, v)?;
        }
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.message().to_owned()))
    }

    /// Checks every rule; the result is the only thing [`crate::run`] accepts.
    pub fn validate(self) -> Result<ValidConfig, ConfigError> {
        let invalid = |s: String| Err(ConfigError::Invalid(s));
        let l = &self.limits;
        for (name, value) in [
            ("limits.max_sessions", l.max_sessions),
            ("limits.max_sessions_per_ip", l.max_sessions_per_ip),
            ("limits.max_handshakes", l.max_handshakes),
            ("limits.max_rooms", l.max_rooms),
            (
                "limits.max_participants_per_room",
                l.max_participants_per_room,
            ),
            (
                "limits.max_tracks_per_participant",
                l.max_tracks_per_participant,
            ),
            (
                "limits.max_subscriptions_per_participant",
                l.max_subscriptions_per_participant,
            ),
            ("limits.control_queue", l.control_queue),
            ("limits.media_queue", l.media_queue),
        ] {
            if value == 0 {
                return invalid(format!("{name} must be at least 1"));
            }
        }
        if l.max_frame_size < 1024
            || l.max_frame_size > strait_protocol::limits::HARD_MAX_FRAME_SIZE
        {
            return invalid(format!(
                "limits.max_frame_size must be between 1024 and {} bytes",
                strait_protocol::limits::HARD_MAX_FRAME_SIZE
            ));
        }
        if l.media_packets_per_second == 0 || l.media_burst == 0 {
            return invalid(
                "limits.media_packets_per_second and limits.media_burst must be at least 1".into(),
            );
        }
        if l.max_messages_per_second == 0 {
            return invalid("limits.max_messages_per_second must be at least 1".into());
        }
        if self.quic.idle_timeout < Duration::from_secs(1) {
            return invalid("quic.idle_timeout must be at least 1s".into());
        }
        if self.quic.keep_alive >= self.quic.idle_timeout {
            return invalid("quic.keep_alive must be shorter than quic.idle_timeout".into());
        }
        if self.quic.ack_eliciting_threshold > 0
            && !(Duration::from_millis(1)..=Duration::from_millis(200))
                .contains(&self.quic.ack_max_delay)
        {
            return invalid("quic.ack_max_delay must be from 1ms to 200ms".into());
        }
        if !(0.0..=0.5).contains(&self.quic.loss_tolerance) {
            return invalid("quic.loss_tolerance must be from 0 to 0.5".into());
        }
        if self.quic.datagram_send_buffer < 16 * 1024 {
            return invalid("quic.datagram_send_buffer must be at least 16 KiB".into());
        }
        let q = &self.quic;
        if q.stream_receive_window < 4 * 1024
            || q.stream_receive_window > q.receive_window
            || q.receive_window > 16 * 1024 * 1024
        {
            return invalid(
                "quic.stream_receive_window must be at least 4 KiB and at most \
                 quic.receive_window, which is at most 16 MiB"
                    .into(),
            );
        }
        if !(64 * 1024..=64 * 1024 * 1024).contains(&q.send_window) {
            return invalid("quic.send_window must be from 64 KiB to 64 MiB".into());
        }
        let shed = &self.shedding;
        if !(shed.join_queue_delay <= shed.layers_queue_delay
            && shed.layers_queue_delay <= shed.video_queue_delay
            && shed.join_queue_delay >= Duration::from_millis(1))
        {
            return invalid(
                "shedding: join_queue_delay <= layers_queue_delay <= video_queue_delay, from 1ms"
                    .into(),
            );
        }
        if !(shed.join_busy > 0.0
            && shed.join_busy <= shed.layers_busy
            && shed.layers_busy <= shed.video_busy
            && shed.video_busy <= 2.0)
        {
            return invalid(
                "shedding: 0 < join_busy <= layers_busy <= video_busy <= 2 (above 1: never)".into(),
            );
        }
        if shed.recover_after < Duration::from_millis(100) || shed.speakers > 1000 {
            return invalid(
                "shedding.recover_after must be at least 100ms and shedding.speakers at most 1000"
                    .into(),
            );
        }
        if !(Duration::from_millis(1500)..=Duration::from_secs(60))
            .contains(&self.health.stall_timeout)
        {
            return invalid("health.stall_timeout must be from 1.5s to 60s".into());
        }
        if self.http.max_connections == 0 {
            return invalid("http.max_connections must be at least 1".into());
        }
        if self.http.header_timeout < Duration::from_millis(100)
            || self.http.body_timeout < Duration::from_millis(100)
        {
            return invalid(
                "http.header_timeout and http.body_timeout must be at least 100ms".into(),
            );
        }
        if self.http.dev_token_endpoint == Some(true)
            && self.auth.keys.is_empty()
            && !self.http.listen.ip().is_loopback()
        {
            return invalid(format!(
                "http.dev_token_endpoint = true with no auth.keys on {} would mint tokens for \
                 anyone who reaches the port: configure auth.keys, or listen on loopback",
                self.http.listen
            ));
        }
        match (&self.tls.cert, &self.tls.key) {
            (Some(_), None) | (None, Some(_)) => {
                return invalid("tls.cert and tls.key go together".into());
            }
            _ => {}
        }
        for key in &self.auth.keys {
            if key.id.is_empty() || key.id.len() > 64 {
                return invalid("auth.keys: an id must be 1 to 64 bytes".into());
            }
            if key.secret.len() < 32 {
                return invalid(format!(
                    "auth.keys: the secret of key `{}` must be at least 32 bytes",
                    key.id
                ));
            }
        }
        if let Some(secret) = &self.auth.resume_secret
            && secret.len() < 32
        {
            return invalid("auth.resume_secret must be at least 32 bytes".into());
        }
        if self.webrtc.enabled {
            if self.webrtc.public_ips.is_empty() && self.webrtc.listen.ip().is_unspecified() {
                return invalid(
                    "webrtc.public_ips must name the address peers reach when webrtc.listen is \
                     unspecified (0.0.0.0 or [::])"
                        .into(),
                );
            }
            if self.webrtc.public_ips.iter().any(IpAddr::is_unspecified) {
                return invalid("webrtc.public_ips must not be unspecified addresses".into());
            }
            if self.webrtc.max_peers == 0 || self.webrtc.max_sdp_bytes == 0 {
                return invalid(
                    "webrtc.max_peers and webrtc.max_sdp_bytes must be at least 1".into(),
                );
            }
            if !self.webrtc.nack_cache_packets.is_power_of_two() {
                return invalid(
                    "webrtc.nack_cache_packets must be a power of two from 1 to 32768".into(),
                );
            }
            if self.webrtc.ice_timeout < Duration::from_secs(1) {
                return invalid("webrtc.ice_timeout must be at least 1s".into());
            }
        }
        if self.media.room_spread_at == 0 {
            return invalid("media.room_spread_at must be at least 1".into());
        }
        if let Some(workers) = self.media.workers
            && !(1..=MAX_MEDIA_WORKERS).contains(&workers)
        {
            return invalid(format!(
                "media.workers must be from 1 to {MAX_MEDIA_WORKERS} (unset: one per core)"
            ));
        }
        if !self.webtransport.path.starts_with('/') {
            return invalid("webtransport.path must start with `/`".into());
        }
        if self.session.hello_timeout.is_zero() || self.shutdown.drain_deadline.is_zero() {
            return invalid(
                "session.hello_timeout and shutdown.drain_deadline must be positive".into(),
            );
        }
        self.turn.validate().map_err(ConfigError::Invalid)?;
        self.cluster.validate().map_err(ConfigError::Invalid)?;
        if self.cluster.enabled()
            && (self.auth.keys.is_empty() || self.auth.resume_secret.is_none())
        {
            // Every node must verify the tokens the others mint (redirects) and read the resume
            // tokens the others issue.
            return invalid(
                "cluster.redis_url needs auth.keys and auth.resume_secret, the same on every node"
                    .into(),
            );
        }
        Ok(ValidConfig(self))
    }

    /// The configuration as TOML, with every secret replaced by `<redacted>`.
    pub fn to_redacted_toml(&self) -> String {
        let mut copy = self.clone();
        for key in &mut copy.auth.keys {
            key.secret = "<redacted>".into();
        }
        if copy.auth.resume_secret.is_some() {
            copy.auth.resume_secret = Some("<redacted>".into());
        }
        for secret in &mut copy.turn.secrets {
            *secret = "<redacted>".into();
        }
        if copy.turn.external_secret.is_some() {
            copy.turn.external_secret = Some("<redacted>".into());
        }
        if copy.cluster.peer_secret.is_some() {
            copy.cluster.peer_secret = Some("<redacted>".into());
        }
        toml::to_string_pretty(&copy).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }
}

/// The default `quic.loss_tolerance`: losses up to this share of the bytes, without a queue in
/// the RTT, do not shrink a connection's congestion window (the bandwidth estimate's own
/// congestion threshold).
pub const DEFAULT_LOSS_TOLERANCE: f64 = 0.10;

/// Most media workers a node runs.
pub const MAX_MEDIA_WORKERS: usize = 256;

/// A configuration that passed [`Config::validate`].
#[derive(Debug, Clone, PartialEq)]
pub struct ValidConfig(Config);

impl ValidConfig {
    /// How many media workers run: `media.workers`, or one per available core.
    #[must_use]
    pub fn media_workers(&self) -> usize {
        self.media.workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, std::num::NonZeroUsize::get)
                .min(MAX_MEDIA_WORKERS)
        })
    }

    /// The TURN settings with this node's WebRTC addresses (each advertised IP with each port
    /// bound in `webrtc`, one per media worker) added to `media_addresses`, so that the relay
    /// reaches the bridge without more settings.
    pub(crate) fn turn_with_media(&self, webrtc: &[SocketAddr]) -> TurnConfig {
        let mut turn = self.turn.clone();
        for bound in webrtc {
            let ips = if self.webrtc.public_ips.is_empty() {
                vec![bound.ip()]
            } else {
                self.webrtc.public_ips.clone()
            };
            for ip in ips {
                let addr = SocketAddr::new(ip, bound.port());
                if !turn.media_addresses.contains(&addr) {
                    turn.media_addresses.push(addr);
                }
            }
        }
        turn
    }

    /// The validated values.
    #[must_use]
    pub fn get(&self) -> &Config {
        &self.0
    }

    /// Development mode: no API key configured.
    #[must_use]
    pub fn dev_mode(&self) -> bool {
        self.0.auth.keys.is_empty()
    }

    /// Whether `POST /v1/dev/token` is served: as configured, else in development mode on a
    /// loopback HTTP address only.
    #[must_use]
    pub fn dev_token_endpoint(&self) -> bool {
        self.0
            .http
            .dev_token_endpoint
            .unwrap_or_else(|| self.dev_mode() && self.0.http.listen.ip().is_loopback())
    }
}

impl std::ops::Deref for ValidConfig {
    type Target = Config;

    fn deref(&self) -> &Config {
        &self.0
    }
}

/// Reads the configuration file named by `path` (if any) plus the process environment and the
/// given command-line overrides, and validates it.
pub fn load_and_validate(
    path: Option<&Path>,
    cli: Vec<(String, String)>,
) -> Result<ValidConfig, ConfigError> {
    let sources = Sources {
        file: path.map(Path::to_path_buf),
        env: env_overrides(std::env::vars()),
        cli,
    };
    Config::load(&sources)?.validate()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(
        file: Option<&str>,
        env: &[(&str, &str)],
        cli: &[(&str, &str)],
    ) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = file.map(|text| {
            let p = dir.path().join("strait.toml");
            std::fs::write(&p, text).unwrap();
            p
        });
        let owned = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<Vec<_>>()
        };
        Config::load(&Sources {
            file: path,
            env: env_overrides(owned(env)),
            cli: owned(cli),
        })
    }

    #[test]
    fn no_sources_is_the_default_development_config() {
        let config = load(None, &[], &[]).unwrap();
        assert_eq!(config, Config::default());
        let valid = config.validate().unwrap();
        assert!(valid.dev_mode());
        assert!(valid.dev_token_endpoint());
    }

    #[test]
    fn file_then_env_then_cli() {
        let file = "[limits]\nmax_sessions = 10\n[quic]\nidle_timeout = \"30s\"\n";
        let config = load(
            Some(file),
            &[
                ("STRAIT_LIMITS__MAX_SESSIONS", "20"),
                ("STRAIT_QUIC__LISTEN", "0.0.0.0:5000"),
            ],
            &[("limits.max_sessions", "30")],
        )
        .unwrap();
        assert_eq!(config.limits.max_sessions, 30);
        assert_eq!(config.quic.idle_timeout, Duration::from_secs(30));
        assert_eq!(
            config.quic.listen,
            "0.0.0.0:5000".parse::<std::net::SocketAddr>().unwrap()
        );
    }

    #[test]
    fn unknown_keys_are_rejected_everywhere() {
        let err = load(Some("[quic]\nlisten_addr = \"1.2.3.4:1\"\n"), &[], &[]).unwrap_err();
        assert!(err.to_string().contains("listen_addr"), "{err}");
        let err = load(None, &[("STRAIT_LIMITS__MAX_SESSION", "1")], &[]).unwrap_err();
        assert!(err.to_string().contains("max_session"), "{err}");
        let err = load(None, &[], &[("nosuch.key", "1")]).unwrap_err();
        assert!(err.to_string().contains("nosuch"), "{err}");
    }

    #[test]
    fn a_peer_secret_shorter_than_32_bytes_is_refused() {
        let err = load(None, &[], &[("cluster.peer_secret", "too short")])
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("cluster.peer_secret"), "{err}");
        let ok = load(None, &[], &[("cluster.peer_secret", &"x".repeat(32))]).unwrap();
        assert!(ok.validate().is_ok());
    }

    #[test]
    fn the_loss_tolerance_is_a_share_up_to_a_half() {
        assert_eq!(load(None, &[], &[]).unwrap().quic.loss_tolerance, 0.10);
        let config = load(Some("[quic]\nloss_tolerance = 0\n"), &[], &[]).unwrap();
        assert_eq!(config.quic.loss_tolerance, 0.0);
        for bad in ["0.6", "-0.1"] {
            let err = load(None, &[], &[("quic.loss_tolerance", bad)])
                .unwrap()
                .validate()
                .unwrap_err();
            assert!(err.to_string().contains("loss_tolerance"), "{err}");
        }
    }

    #[test]
    fn the_congestion_controller_is_named_and_anything_else_is_refused() {
        assert_eq!(
            load(None, &[], &[]).unwrap().quic.congestion_controller,
            CongestionController::Cubic
        );
        let config = load(Some("[quic]\ncongestion_controller = \"bbr\"\n"), &[], &[]).unwrap();
        assert_eq!(config.quic.congestion_controller, CongestionController::Bbr);
        let config = load(
            None,
            &[("STRAIT_QUIC__CONGESTION_CONTROLLER", "new_reno")],
            &[],
        )
        .unwrap();
        assert_eq!(
            config.quic.congestion_controller,
            CongestionController::NewReno
        );
        let err = load(
            Some("[quic]\ncongestion_controller = \"vegas\"\n"),
            &[],
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("vegas"), "{err}");
        assert!(load(None, &[], &[]).unwrap().quic.ack_feedback);
        let config = load(None, &[], &[("quic.ack_feedback", "false")]).unwrap();
        assert!(!config.quic.ack_feedback);
    }

    #[test]
    fn env_variables_without_a_section_are_not_keys() {
        assert!(env_overrides([("STRAIT_CONFIG".to_string(), "x".to_string())]).is_empty());
        assert!(env_overrides([("HOME".to_string(), "x".to_string())]).is_empty());
    }

    #[test]
    fn overrides_must_name_a_key() {
        assert!(parse_override("limits.max_sessions=5").is_ok());
        assert!(parse_override("nokey").is_err());
        assert!(parse_override("=5").is_err());
        assert!(parse_override("flat=5").is_err());
    }

    #[test]
    fn validation_names_the_broken_rule() {
        let check = |cli: &[(&str, &str)], needle: &str| {
            let err = load(None, &[], cli).unwrap().validate().unwrap_err();
            assert!(
                err.to_string().contains(needle),
                "{err} should mention {needle}"
            );
        };
        check(&[("limits.max_sessions", "0")], "limits.max_sessions");
        check(&[("limits.max_frame_size", "2000000")], "max_frame_size");
        check(&[("quic.keep_alive", "\"20s\"")], "keep_alive");
        check(&[("tls.cert", "\"/a.pem\"")], "tls.key");
        check(
            &[("auth.keys", "[{id = \"k\", secret = \"short\"}]")],
            "at least 32 bytes",
        );
        check(&[("webtransport.path", "\"rtc\"")], "webtransport.path");
        check(
            &[("webrtc.listen", "\"0.0.0.0:4478\"")],
            "webrtc.public_ips",
        );
        check(
            &[("webrtc.public_ips", "[\"0.0.0.0\"]")],
            "webrtc.public_ips",
        );
        check(&[("webrtc.nack_cache_packets", "1000")], "power of two");
        check(&[("webrtc.nack_cache_packets", "0")], "power of two");
    }

    #[test]
    fn printing_redacts_secrets() {
        let mut config = Config::default();
        config.auth.keys.push(ApiKeyConfig {
            id: "k1".into(),
            secret: "s".repeat(40),
        });
        config.auth.resume_secret = Some("r".repeat(40));
        config.cluster.peer_secret = Some("p".repeat(40));
        let text = config.to_redacted_toml();
        assert!(!text.contains(&"s".repeat(40)));
        assert!(!text.contains(&"r".repeat(40)));
        assert!(!text.contains(&"p".repeat(40)));
        assert!(!format!("{config:?}").contains(&"p".repeat(40)));
        assert!(text.contains("<redacted>"));
        assert!(!format!("{config:?}").contains(&"s".repeat(40)));
        // What is printed parses back into a configuration.
        let _: Config = toml::from_str(&text).unwrap();
    }

    #[test]
    fn a_page_of_the_address_the_http_port_listens_on_is_the_gateways_own() {
        let web = WebTransportConfig::default();
        let http: SocketAddr = "127.0.0.3:8080".parse().unwrap();
        // A node of a local cluster listens on 127.0.0.3: its own demo page may open sessions.
        assert!(web.allows_origin(Some("http://127.0.0.3:8080"), http, None));
        assert!(web.allows_origin(Some("http://localhost:8080"), http, None));
        assert!(!web.allows_origin(Some("http://127.0.0.4:8080"), http, None));
        assert!(!web.allows_origin(Some("http://127.0.0.3:9090"), http, None));
        // So may a page of the name it is published under.
        let public = Some("node-3.example.net");
        assert!(web.allows_origin(Some("https://node-3.example.net:8080"), http, public));
        // Listening on every address names no host of its own.
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(!web.allows_origin(Some("http://0.0.0.0:8080"), any, None));
    }
}
