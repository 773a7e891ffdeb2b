//! The embedded TURN server's sockets and tasks, and TURN credentials for participants.
//!
//! The protocol lives in [`strait_media::turn`] (sans-IO); this module owns what touches the
//! operating system:
//!
//! - the [`Server`] core behind one lock, with every UDP socket it sends on;
//! - one task that reads the UDP listener, takes the frames of stream connections and runs the
//!   core's timer;
//! - an accept loop per TCP and TLS listener and a task per connection, which split the byte
//!   stream into STUN and ChannelData frames ([`framing::next_frame`]) and write the core's
//!   replies back (padded ChannelData, RFC 8656 §12.5);
//! - one UDP relay socket per allocation, bound to `turn.relay_ip` on a port from the OS, and a
//!   reader task for it.
//!
//! UDP is read and written in batches through `quinn-udp`: a task woken for a readable socket
//! takes the lock, reads up to 32 datagrams per `recvmmsg` (GRO on; a coalesced run is split at
//! its stride), feeds them to the core and sends what it emitted before reading more — one
//! GSO `sendmsg` per run of equal-sized datagrams for one destination through one socket
//! (`Batch`). No datagram is queued from task to task, and payloads go out in buffers the core
//! gets back ([`Server::recycle`]).
//!
//! The peer policy is enforced twice: by the core when a permission or channel is requested
//! (403) and for every packet it emits, and here again just before a relay socket sends.
//!
//! [`TurnState::mint`] hands out TURN REST credentials for a participant — for the embedded
//! server, or for external TURN servers when `turn.external_urls` is set; the HTTP port's
//! `POST /v1/turn/credentials` serves them to holders of an access token.

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use quinn::udp::{RecvMeta, UdpSocketState};
use serde::Serialize;
use strait_media::turn::framing::{self, next_frame};
use strait_media::turn::{
    AuthFailure, CredentialError, Denial, DropReason, Event, FiveTuple, PeerPolicy, Server,
    ServerConfig, Stats, Transmit, Transport, TurnSecret, TurnSecrets,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

pub(crate) use crate::config::{TurnConfig, TurnListener as Listener};

use crate::metrics::{Metrics, TurnMetrics};

/// Messages queued from connection and relay tasks toward the core task. Beyond it, relay
/// datagrams are dropped and counted; stream tasks wait (backpressure on their TCP reads).
const INBOX: usize = 8_192;
/// Frames queued toward one TCP or TLS client; beyond it they are dropped and counted.
const STREAM_QUEUE: usize = 256;
/// Queued stream inputs handled per wake-up before the outputs are flushed.
const BATCH: usize = 64;
/// Datagrams one `recvmmsg` reads (`quinn-udp`'s batch: 32 on Linux).
const RECV_SLOTS: usize = quinn::udp::BATCH_SIZE;
/// A receive slot holds the largest UDP datagram, or a run of datagrams GRO coalesced.
const SLOT_LEN: usize = 65_536;
/// `recvmmsg` calls per wake-up of one socket before its task yields: up to 128 datagrams.
const RECV_ROUNDS: usize = 4;
/// `SO_RCVBUF` asked for each relay socket (the kernel caps it at `net.core.rmem_max`).
const RELAY_RECV_BUFFER: usize = 1 << 20;
/// The most segments in one GSO send (the kernel's `UDP_MAX_SEGMENTS`).
const GSO_MAX_SEGMENTS: usize = 64;
/// The most bytes in one GSO send (a UDP datagram's length field bounds the whole send).
const GSO_MAX_BYTES: usize = 60_000;
/// Datagrams longer than this are sent alone: a GSO segment must fit the interface MTU, and a
/// refused GSO send turns GSO off for the socket.
const GSO_MAX_SEGMENT: usize = 1_400;
/// A TLS handshake must finish within this.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Listeners bound before the gateway starts.
#[derive(Debug, Default)]
pub struct TurnSockets {
    /// UDP 3478.
    pub udp: Option<std::net::UdpSocket>,
    /// TCP 3478.
    pub tcp: Option<std::net::TcpListener>,
    /// TLS 5349.
    pub tls: Option<std::net::TcpListener>,
}

impl TurnSockets {
    /// Binds the configured listeners, or none when the embedded server is off.
    pub fn bind(config: &TurnConfig) -> std::io::Result<TurnSockets> {
        if !config.enabled {
            return Ok(TurnSockets::default());
        }
        let tcp = |addr: Option<SocketAddr>| -> std::io::Result<Option<std::net::TcpListener>> {
            addr.map(|a| {
                let l = std::net::TcpListener::bind(a)?;
                l.set_nonblocking(true)?;
                Ok(l)
            })
            .transpose()
        };
        Ok(TurnSockets {
            udp: config
                .listen(Listener::Udp)
                .map(|a| crate::net::bind_udp(a, 4 * 1024 * 1024))
                .transpose()?,
            tcp: tcp(config.listen(Listener::Tcp))?,
            tls: tcp(config.listen(Listener::Tls))?,
        })
    }

    /// The bound addresses.
    pub fn addrs(&self) -> TurnAddrs {
        TurnAddrs {
            udp: self.udp.as_ref().and_then(|s| s.local_addr().ok()),
            tcp: self.tcp.as_ref().and_then(|s| s.local_addr().ok()),
            tls: self.tls.as_ref().and_then(|s| s.local_addr().ok()),
        }
    }
}

/// Where the embedded TURN server listens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TurnAddrs {
    /// UDP.
    pub udp: Option<SocketAddr>,
    /// TCP.
    pub tcp: Option<SocketAddr>,
    /// TLS.
    pub tls: Option<SocketAddr>,
}

/// TURN credentials for one participant, in the shape of the TURN REST API drafts.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct TurnCredentials {
    /// `<expiry unix seconds>:<identity>`.
    pub username: String,
    /// `base64(HMAC-SHA1(secret, username))`.
    pub password: String,
    /// Seconds the credential stays valid.
    pub ttl: u64,
    /// `turn:` / `turns:` URLs to use them with.
    pub uris: Vec<String>,
}

impl std::fmt::Debug for TurnCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("uris", &self.uris)
            .finish()
    }
}

/// TURN as the rest of the gateway sees it: where it listens and how to mint credentials.
#[derive(Debug, Default)]
pub(crate) struct TurnState {
    /// The embedded server's listeners (empty when it is off).
    pub addrs: TurnAddrs,
    secrets: TurnSecrets,
    ttl: Duration,
    uris: Vec<String>,
    /// Whether the credentials are for external TURN servers.
    external: bool,
}

impl TurnState {
    /// From the configuration and the bound listeners. Without configured secrets the embedded
    /// server gets a random one.
    pub(crate) fn new(config: &TurnConfig, sockets: &TurnSockets) -> anyhow::Result<TurnState> {
        let addrs = sockets.addrs();
        if !config.external_urls.is_empty() {
            let secret = config.external_secret.clone().unwrap_or_default();
            return Ok(TurnState {
                addrs,
                secrets: TurnSecrets::new(vec![TurnSecret::new(secret.into_bytes())]),
                ttl: config.credential_ttl,
                uris: config.external_urls.clone(),
                external: true,
            });
        }
        if !config.enabled {
            return Ok(TurnState::default());
        }
        let secrets = if config.secrets.is_empty() {
            let mut bytes = [0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
                .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
            vec![TurnSecret::new(bytes.to_vec())]
        } else {
            config
                .secrets
                .iter()
                .map(|s| TurnSecret::new(s.as_bytes().to_vec()))
                .collect()
        };
        let host = |addr: SocketAddr| match &config.public_host {
            Some(h) => h.clone(),
            None if addr.ip().is_unspecified() => "127.0.0.1".into(),
            None => match addr.ip() {
                IpAddr::V4(ip) => ip.to_string(),
                IpAddr::V6(ip) => format!("[{ip}]"),
            },
        };
        let mut uris = Vec::new();
        if let Some(a) = addrs.udp {
            uris.push(format!("turn:{}:{}?transport=udp", host(a), a.port()));
        }
        if let Some(a) = addrs.tcp {
            uris.push(format!("turn:{}:{}?transport=tcp", host(a), a.port()));
        }
        if let Some(a) = addrs.tls {
            uris.push(format!("turns:{}:{}?transport=tcp", host(a), a.port()));
        }
        Ok(TurnState {
            addrs,
            secrets: TurnSecrets::new(secrets),
            ttl: config.credential_ttl,
            uris,
            external: false,
        })
    }

    /// Replaces the secrets with those of `config` (a reloaded configuration), for minting and
    /// for the running server at once; returns whether they changed. The embedded server's
    /// random secret (no `turn.secrets` configured) and a configuration that switches between
    /// embedded and external TURN are refused: those need a restart.
    pub(crate) fn rotate(&self, config: &TurnConfig) -> Result<bool, String> {
        let secrets: Vec<TurnSecret> = if !config.external_urls.is_empty() {
            let secret = config.external_secret.clone().unwrap_or_default();
            vec![TurnSecret::new(secret.into_bytes())]
        } else if config.enabled && !config.secrets.is_empty() {
            config
                .secrets
                .iter()
                .map(|s| TurnSecret::new(s.as_bytes().to_vec()))
                .collect()
        } else if config.enabled {
            return Err("turn.secrets is empty: the running server keeps its random secret".into());
        } else {
            return Ok(false);
        };
        let external = !config.external_urls.is_empty();
        if !self.available() || self.external != external {
            return Err(
                "switching TURN on, off, or between embedded and external needs a restart".into(),
            );
        }
        if self.secrets.all() == secrets {
            return Ok(false);
        }
        self.secrets.replace(secrets);
        Ok(true)
    }

    /// Whether credentials can be minted (embedded or external TURN is configured).
    pub(crate) fn available(&self) -> bool {
        !self.uris.is_empty()
    }

    /// Mints credentials for `identity` (a participant) valid from `now`.
    pub(crate) fn mint(
        &self,
        identity: &str,
        now: SystemTime,
    ) -> Result<TurnCredentials, CredentialError> {
        if !self.available() {
            return Err(CredentialError::NoSecret);
        }
        let unix = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let c = self.secrets.mint(identity, unix, self.ttl)?;
        Ok(TurnCredentials {
            username: c.username,
            password: c.password,
            ttl: self.ttl.as_secs(),
            uris: self.uris.clone(),
        })
    }

    /// The `ice_servers` of a participant's `ServerHello`: one entry with every TURN URL and
    /// credentials minted for the participant id, or none when TURN is not configured.
    pub(crate) fn ice_servers(
        &self,
        participant: u64,
        now: SystemTime,
    ) -> Vec<strait_protocol::IceServer> {
        match self.mint(&participant.to_string(), now) {
            Ok(c) => vec![strait_protocol::IceServer {
                urls: c.uris,
                username: Some(c.username),
                credential: Some(c.password),
            }],
            Err(_) => Vec::new(),
        }
    }

    fn server_config(&self, config: &TurnConfig) -> anyhow::Result<ServerConfig> {
        let allow = config.allow_list().map_err(anyhow::Error::msg)?;
        Ok(ServerConfig {
            realm: config.realm.clone(),
            secrets: self.secrets.clone(),
            policy: PeerPolicy::new(config.media_addresses.clone(), allow),
            max_allocations: config.max_allocations,
            max_allocations_per_identity: config.max_allocations_per_identity,
            default_lifetime: config.default_lifetime,
            max_lifetime: config.max_lifetime,
            nonce_lifetime: Duration::from_secs(600),
            bandwidth: config.bandwidth_per_allocation,
            unauthorized_per_second: config.unauthorized_per_second,
            unauthorized_burst: config.unauthorized_burst,
            max_tracked_sources: 10_000,
        })
    }
}

/// Why a TCP or TLS connection ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamClose {
    /// Bytes that are neither STUN nor ChannelData.
    Garbage,
    /// Nothing received for `stream_idle_timeout`.
    Idle,
    /// The TLS handshake failed or timed out.
    TlsHandshake,
    /// `max_stream_connections` reached.
    Limit,
}

impl StreamClose {
    fn as_str(self) -> &'static str {
        match self {
            StreamClose::Garbage => "garbage",
            StreamClose::Idle => "idle",
            StreamClose::TlsHandshake => "tls_handshake",
            StreamClose::Limit => "limit",
        }
    }
}

enum Input {
    Opened {
        tuple: FiveTuple,
        tx: mpsc::Sender<Vec<u8>>,
    },
    Frame {
        tuple: FiveTuple,
        data: Vec<u8>,
    },
    Closed {
        tuple: FiveTuple,
    },
}

/// A UDP socket with the state `quinn-udp` keeps for it (GSO support, its send fallbacks).
struct Socket {
    io: UdpSocket,
    state: UdpSocketState,
}

impl Socket {
    /// Takes a bound socket: non-blocking, GRO on where the kernel has it.
    fn new(socket: std::net::UdpSocket) -> std::io::Result<Socket> {
        let state = UdpSocketState::new((&socket).into())?;
        Ok(Socket {
            io: UdpSocket::from_std(socket)?,
            state,
        })
    }

    fn send(&self, to: SocketAddr, contents: &[u8], segment: Option<usize>) -> std::io::Result<()> {
        let transmit = quinn::udp::Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size: segment,
            src_ip: None,
        };
        self.state.try_send((&self.io).into(), &transmit)
    }
}

struct Relay {
    socket: Arc<Socket>,
    reader: tokio::task::AbortHandle,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Which socket a batch of datagrams is read from or sent on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// The UDP listener (to and from clients).
    Listener,
    /// The relay socket bound to this address (to and from peers).
    Relay(SocketAddr),
}

/// Datagrams on their way to one destination through one socket, sent with one `sendmsg` and
/// UDP GSO: every segment has the length of the first, except a shorter last one.
#[derive(Debug)]
struct Batch {
    via: Via,
    to: SocketAddr,
    segment: usize,
    count: usize,
    /// A shorter datagram ended the batch.
    closed: bool,
    max_segments: usize,
    bytes: Vec<u8>,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            via: Via::Listener,
            to: SocketAddr::from(([0, 0, 0, 0], 0)),
            segment: 0,
            count: 0,
            closed: false,
            max_segments: 1,
            bytes: Vec::with_capacity(GSO_MAX_BYTES),
        }
    }

    /// Whether a datagram of `len` bytes for `to` through `via` can join this batch.
    fn fits(&self, via: Via, to: SocketAddr, len: usize) -> bool {
        self.count > 0
            && !self.closed
            && self.via == via
            && self.to == to
            && len > 0
            && len <= self.segment
            && self.segment <= GSO_MAX_SEGMENT
            && self.count < self.max_segments
            && self.bytes.len() + len <= GSO_MAX_BYTES
    }

    /// Starts a batch with one datagram; `max_segments` is what the socket supports.
    fn start(&mut self, via: Via, to: SocketAddr, data: &[u8], max_segments: usize) {
        self.bytes.clear();
        self.bytes.extend_from_slice(data);
        self.via = via;
        self.to = to;
        self.segment = data.len();
        self.count = 1;
        self.closed = false;
        self.max_segments = max_segments.min(GSO_MAX_SEGMENTS);
    }

    /// Adds a datagram that [`Batch::fits`].
    fn push(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        self.count += 1;
        self.closed = data.len() < self.segment;
    }
}

/// The segment size to pass to GSO for `count` datagrams (`None` for a single one).
fn segment_size(count: usize, segment: usize) -> Option<usize> {
    (count > 1).then_some(segment)
}

/// Where a drain of one socket stopped.
enum Drained {
    /// The socket has nothing more to read.
    Empty,
    /// The round budget was used up with datagrams still queued.
    More,
    /// The socket failed (or the relay is gone); its reader stops.
    Failed(Option<std::io::Error>),
}

/// The TURN core and every socket it sends on, behind one lock. The TURN task (listener, stream
/// inputs, timer) and each relay socket's reader take the lock, read a batch of datagrams into
/// the shared receive slots, feed them to the core and send what it emits, without handing
/// packets from task to task.
struct Core {
    server: Server,
    policy: PeerPolicy,
    relay_ip: IpAddr,
    metrics: Arc<Metrics>,
    last: Stats,
    listener: Option<(Arc<Socket>, SocketAddr)>,
    relays: HashMap<SocketAddr, Relay>,
    streams: HashMap<FiveTuple, mpsc::Sender<Vec<u8>>>,
    /// `RECV_SLOTS` slots of `SLOT_LEN` bytes for `recvmmsg`.
    slots: Vec<u8>,
    meta: [RecvMeta; RECV_SLOTS],
    batch: Batch,
    this: Weak<Mutex<Core>>,
}

fn lock(core: &Mutex<Core>) -> std::sync::MutexGuard<'_, Core> {
    core.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Core {
    /// Reads what `via` has queued, up to `RECV_ROUNDS` batches of `RECV_SLOTS` datagrams, and
    /// sends what the core emits after each batch.
    fn drain(&mut self, via: Via) -> Drained {
        let socket = match via {
            Via::Listener => self.listener.as_ref().map(|(s, _)| s.clone()),
            Via::Relay(addr) => self.relays.get(&addr).map(|r| r.socket.clone()),
        };
        let Some(socket) = socket else {
            return Drained::Failed(None);
        };
        for _ in 0..RECV_ROUNDS {
            let received = {
                let mut slots = self.slots.chunks_exact_mut(SLOT_LEN);
                let mut bufs: [IoSliceMut<'_>; RECV_SLOTS] =
                    std::array::from_fn(|_| IoSliceMut::new(slots.next().unwrap_or_default()));
                socket.io.try_io(tokio::io::Interest::READABLE, || {
                    socket
                        .state
                        .recv((&socket.io).into(), &mut bufs, &mut self.meta)
                })
            };
            let n = match received {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Drained::Empty,
                // ICMP errors for earlier sends surface here; the socket is fine.
                Err(e) if transient(&e) => continue,
                Err(e) => return Drained::Failed(Some(e)),
            };
            self.feed(via, n);
            self.flush();
        }
        Drained::More
    }

    /// Hands the `n` datagrams in the receive slots to the core. A slot holds several datagrams
    /// of `stride` bytes when GRO coalesced them.
    fn feed(&mut self, via: Via, n: usize) {
        let now = Instant::now();
        let unix = unix_now();
        let Core {
            server,
            relays,
            slots,
            meta,
            listener,
            relay_ip,
            this,
            ..
        } = self;
        for (m, slot) in meta.iter().zip(slots.chunks_exact(SLOT_LEN)).take(n) {
            let data = &slot[..m.len.min(SLOT_LEN)];
            let empty: &[u8] = &[];
            let datagrams = std::iter::once(empty)
                .filter(|_| data.is_empty())
                .chain(data.chunks(m.stride.max(1)));
            for datagram in datagrams {
                match via {
                    Via::Listener => {
                        let Some((_, local)) = listener else {
                            return;
                        };
                        let tuple = FiveTuple {
                            transport: Transport::Udp,
                            client: m.addr,
                            server: *local,
                        };
                        let _ = server.handle_client(tuple, datagram, now, unix, &mut |_| {
                            bind_relay(relays, *relay_ip, this)
                        });
                    }
                    Via::Relay(relay) => {
                        let _ = server.handle_peer(relay, m.addr, datagram, now);
                    }
                }
            }
        }
    }

    /// A datagram or frame from a TCP or TLS client.
    fn feed_frame(&mut self, tuple: FiveTuple, data: &[u8]) {
        let Core {
            server,
            relays,
            relay_ip,
            this,
            ..
        } = self;
        let _ = server.handle_client(tuple, data, Instant::now(), unix_now(), &mut |_| {
            bind_relay(relays, *relay_ip, this)
        });
    }

    /// Sends everything the core emitted — datagrams to one destination through one socket
    /// batched with GSO — and acts on its events.
    fn flush(&mut self) {
        // The counters first: whoever sees a packet arrive sees it counted.
        sync_stats(self.server.stats(), &mut self.last, &self.metrics.turn);
        while let Some(t) = self.server.poll_transmit() {
            match t {
                Transmit::Client { to, data } => match to.transport {
                    Transport::Udp => self.queue(Via::Listener, to.client, data),
                    Transport::Tcp | Transport::Tls => {
                        if let Some(tx) = self.streams.get(&to)
                            && tx.try_send(data).is_err()
                        {
                            self.metrics.turn.drop_reason("stream_queue_full");
                        }
                    }
                },
                Transmit::Peer { relay, peer, data } => {
                    // The core checked the policy; check again at the socket.
                    if let Err(denial) = self.policy.check(peer) {
                        self.metrics.turn.denial(denial.as_str());
                        self.server.recycle(data);
                        continue;
                    }
                    self.queue(Via::Relay(relay), peer, data);
                }
            }
        }
        self.send_batch();
        while let Some(event) = self.server.poll_event() {
            match event {
                Event::Allocated { relay, client } => {
                    tracing::debug!(%relay, transport = client.transport.as_str(), "turn allocation");
                }
                Event::Closed { relay, reason, .. } => {
                    tracing::debug!(%relay, ?reason, "turn allocation closed");
                    if let Some(r) = self.relays.remove(&relay) {
                        r.reader.abort();
                    }
                }
                _ => {}
            }
        }
        self.metrics
            .turn
            .allocations
            .set(self.server.allocation_count() as i64);
    }

    /// Adds a datagram to the batch, sending the batch first when it cannot join it.
    fn queue(&mut self, via: Via, to: SocketAddr, data: Vec<u8>) {
        if self.batch.fits(via, to, data.len()) {
            self.batch.push(&data);
        } else {
            self.send_batch();
            let max_segments = self.socket(via).map_or(1, |s| s.state.max_gso_segments());
            self.batch.start(via, to, &data, max_segments);
        }
        self.server.recycle(data);
    }

    fn socket(&self, via: Via) -> Option<&Arc<Socket>> {
        match via {
            Via::Listener => self.listener.as_ref().map(|(s, _)| s),
            Via::Relay(addr) => self.relays.get(&addr).map(|r| &r.socket),
        }
    }

    /// Sends the batch with one `sendmsg`. When GSO is refused (a NIC or driver without it;
    /// `quinn-udp` then stops using it on that socket) the datagrams go one by one.
    fn send_batch(&mut self) {
        let count = std::mem::take(&mut self.batch.count);
        if count == 0 {
            return;
        }
        let batch = &self.batch;
        let failed = match self.socket(batch.via) {
            None => count,
            Some(socket) => {
                match socket.send(batch.to, &batch.bytes, segment_size(count, batch.segment)) {
                    Ok(()) => 0,
                    Err(e) if count > 1 && e.kind() != std::io::ErrorKind::WouldBlock => batch
                        .bytes
                        .chunks(batch.segment)
                        .filter(|d| socket.send(batch.to, d, None).is_err())
                        .count(),
                    Err(_) => count,
                }
            }
        };
        if failed > 0 {
            self.metrics.turn.drops_by("send_failed", failed as u64);
        }
    }
}

/// Runs the embedded TURN server until `stop` is cancelled. `config` holds the node's media
/// addresses ([`TurnConfig::with_media_of`]); `tls` is the TLS listener's configuration.
/// What watches the TURN server's loop: its heart, and faults to inject (tests of supervision).
#[derive(Debug)]
pub(crate) struct Supervision {
    /// Beats at every turn of the loop.
    pub(crate) heart: crate::health::Heart,
    /// Faults to act on.
    pub(crate) faults: mpsc::UnboundedReceiver<crate::health::Fault>,
}

pub(crate) async fn serve(
    config: TurnConfig,
    state: Arc<TurnState>,
    metrics: Arc<Metrics>,
    sockets: TurnSockets,
    tls: Option<Arc<rustls::ServerConfig>>,
    supervision: Supervision,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let Supervision { heart, mut faults } = supervision;
    let mut beat = tokio::time::interval(crate::health::IDLE_BEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let server_config = state.server_config(&config)?;
    let policy = server_config.policy.clone();
    let mut seed = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
        .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
    let server = Server::new(server_config, seed)?;

    let (inbox_tx, mut inbox) = mpsc::channel::<Input>(INBOX);
    let listener = match sockets.udp {
        Some(s) => {
            let local = s.local_addr()?;
            Some((Arc::new(Socket::new(s)?), local))
        }
        None => None,
    };
    let limit = Arc::new(Semaphore::new(config.max_stream_connections));
    let mut accept = tokio::task::JoinSet::new();
    if let Some(listener) = sockets.tcp {
        accept.spawn(accept_loop(
            tokio::net::TcpListener::from_std(listener)?,
            None,
            inbox_tx.clone(),
            limit.clone(),
            config.stream_idle_timeout,
            metrics.clone(),
            stop.clone(),
        ));
    }
    if let (Some(listener), Some(tls)) = (sockets.tls, tls) {
        accept.spawn(accept_loop(
            tokio::net::TcpListener::from_std(listener)?,
            Some(tokio_rustls::TlsAcceptor::from(tls)),
            inbox_tx.clone(),
            limit.clone(),
            config.stream_idle_timeout,
            metrics.clone(),
            stop.clone(),
        ));
    }

    let addrs = state.addrs;
    tracing::info!(udp = ?addrs.udp, tcp = ?addrs.tcp, tls = ?addrs.tls, "turn is serving");
    let mut udp = listener.as_ref().map(|(s, _)| s.clone());
    let core = Arc::new_cyclic(|this| {
        Mutex::new(Core {
            server,
            policy,
            relay_ip: config.relay_ip,
            metrics: metrics.clone(),
            last: Stats::default(),
            listener,
            relays: HashMap::new(),
            streams: HashMap::new(),
            slots: vec![0u8; RECV_SLOTS * SLOT_LEN],
            meta: [RecvMeta::default(); RECV_SLOTS],
            batch: Batch::new(),
            this: this.clone(),
        })
    });
    let timer = tokio::time::sleep(Duration::from_secs(3_600));
    tokio::pin!(timer);
    let mut armed: Option<Instant> = None;
    // Keeps the inbox open when no stream listener holds a sender.
    let _inbox = inbox_tx;
    let mut more = false;
    loop {
        let wake = lock(&core).server.poll_timeout();
        // One timer, re-armed only when the core's deadline moves (not one per packet).
        if wake != armed {
            if let Some(at) = wake {
                timer.as_mut().reset(at.into());
            }
            armed = wake;
        }
        tokio::select! {
            () = stop.cancelled() => break,
            r = readable(udp.as_deref()) => {
                let mut c = lock(&core);
                let failed = match r.map(|()| c.drain(Via::Listener)) {
                    Err(e) | Ok(Drained::Failed(Some(e))) => Some(e.to_string()),
                    Ok(Drained::Failed(None)) => Some("gone".to_owned()),
                    Ok(Drained::More) => {
                        more = true;
                        None
                    }
                    Ok(Drained::Empty) => None,
                };
                if let Some(error) = failed {
                    tracing::warn!(%error, "turn udp listener failed; it stops");
                    udp = None;
                    c.listener = None;
                }
            }
            Some(input) = inbox.recv() => {
                let mut c = lock(&core);
                let mut next = Some(input);
                let mut taken = 0;
                while let Some(input) = next.take() {
                    match input {
                        Input::Opened { tuple, tx } => { c.streams.insert(tuple, tx); }
                        Input::Frame { tuple, data } => c.feed_frame(tuple, &data),
                        Input::Closed { tuple } => {
                            c.streams.remove(&tuple);
                            c.server.handle_client_closed(&tuple);
                        }
                    }
                    taken += 1;
                    if taken < BATCH {
                        next = inbox.try_recv().ok();
                    }
                }
                c.flush();
            }
            () = &mut timer, if armed.is_some() => {
                armed = None;
                let mut c = lock(&core);
                c.server.handle_timeout(Instant::now());
                c.flush();
            }
            _ = beat.tick() => {}
            Some(fault) = faults.recv() => match fault {
                crate::health::Fault::Stall(pause) => {
                    tracing::warn!(?pause, "the TURN server stalls on request");
                    std::thread::sleep(pause);
                }
                crate::health::Fault::Panic => panic!("fault injected into the TURN server"),
            },
        }
        heart.beat(Instant::now());
        // A drain that stopped on its budget resumes on the next turn, after other tasks ran.
        if std::mem::take(&mut more) {
            tokio::task::yield_now().await;
        }
    }
    let mut c = lock(&core);
    for (_, r) in c.relays.drain() {
        r.reader.abort();
    }
    accept.abort_all();
    c.metrics.turn.allocations.set(0);
    Ok(())
}

fn transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionRefused, ConnectionReset, Interrupted};
    matches!(e.kind(), ConnectionRefused | ConnectionReset | Interrupted)
}

/// Waits until the listener is readable (forever without one).
async fn readable(udp: Option<&Socket>) -> std::io::Result<()> {
    match udp {
        Some(udp) => udp.io.readable().await,
        None => std::future::pending().await,
    }
}

fn bind_relay(
    relays: &mut HashMap<SocketAddr, Relay>,
    ip: IpAddr,
    core: &Weak<Mutex<Core>>,
) -> Option<SocketAddr> {
    let bound = std::net::UdpSocket::bind(SocketAddr::new(ip, 0))
        .inspect(|s| {
            // Room for a burst while the reader waits for the lock or a core.
            let _ = socket2::SockRef::from(s).set_recv_buffer_size(RELAY_RECV_BUFFER);
        })
        .and_then(Socket::new)
        .and_then(|s| Ok((s.io.local_addr()?, s)));
    let (addr, socket) = match bound {
        Ok(b) => b,
        Err(e) => {
            tracing::debug!(error = %e, "turn relay socket could not be bound");
            return None;
        }
    };
    let socket = Arc::new(socket);
    let reader = tokio::spawn(relay_reader(socket.clone(), addr, core.clone()));
    relays.insert(
        addr,
        Relay {
            socket,
            reader: reader.abort_handle(),
        },
    );
    Some(addr)
}

/// Reads one relay socket: on each wake-up, takes the core's lock and drains the socket.
async fn relay_reader(socket: Arc<Socket>, relay: SocketAddr, core: Weak<Mutex<Core>>) {
    loop {
        if socket.io.readable().await.is_err() {
            return;
        }
        let Some(core) = core.upgrade() else {
            return;
        };
        let drained = lock(&core).drain(Via::Relay(relay));
        match drained {
            Drained::Empty => {}
            Drained::More => tokio::task::yield_now().await,
            Drained::Failed(error) => {
                if let Some(e) = error {
                    tracing::debug!(%relay, error = %e, "turn relay socket failed");
                }
                return;
            }
        }
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    inbox: mpsc::Sender<Input>,
    limit: Arc<Semaphore>,
    idle: Duration,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let Ok(local) = listener.local_addr() else {
        return;
    };
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((stream, remote)) = accepted else {
            continue;
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            metrics.turn.stream_closed(StreamClose::Limit.as_str());
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (inbox, metrics, tls, stop) =
            (inbox.clone(), metrics.clone(), tls.clone(), stop.clone());
        tokio::spawn(async move {
            let _permit = permit;
            metrics.turn.stream_connections.inc();
            let tuple = FiveTuple {
                transport: if tls.is_some() {
                    Transport::Tls
                } else {
                    Transport::Tcp
                },
                client: remote,
                server: local,
            };
            let closed = match tls {
                None => connection(stream, tuple, inbox, idle, stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(stream)) => connection(stream, tuple, inbox, idle, stop).await,
                        _ => Some(StreamClose::TlsHandshake),
                    }
                }
            };
            if let Some(reason) = closed {
                metrics.turn.stream_closed(reason.as_str());
            }
            metrics.turn.stream_connections.dec();
        });
    }
}

/// Runs one TCP or TLS connection; returns why it ended early, if it did.
async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    tuple: FiveTuple,
    inbox: mpsc::Sender<Input>,
    idle: Duration,
    stop: CancellationToken,
) -> Option<StreamClose> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(STREAM_QUEUE);
    if inbox.send(Input::Opened { tuple, tx }).await.is_err() {
        return None;
    }
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut pending: Vec<u8> = Vec::with_capacity(4_096);
    let mut chunk = vec![0u8; 16_384];
    let outcome = 'conn: loop {
        tokio::select! {
            () = stop.cancelled() => break None,
            read = tokio::time::timeout(idle, rd.read(&mut chunk)) => {
                let n = match read {
                    Err(_) => break Some(StreamClose::Idle),
                    Ok(Ok(0) | Err(_)) => break None,
                    Ok(Ok(n)) => n,
                };
                pending.extend_from_slice(&chunk[..n]);
                loop {
                    match next_frame(&pending) {
                        Ok(Some(frame)) => {
                            let data = pending[..frame.message_len()].to_vec();
                            pending.drain(..frame.consumed());
                            if inbox.send(Input::Frame { tuple, data }).await.is_err() {
                                break 'conn None;
                            }
                        }
                        Ok(None) => break,
                        Err(_) => break 'conn Some(StreamClose::Garbage),
                    }
                }
                debug_assert!(pending.len() < framing::MAX_FRAME_LEN + chunk.len());
            }
            out = rx.recv() => match out {
                Some(out) => {
                    if wr.write_all(&out).await.is_err() {
                        break None;
                    }
                }
                None => break None,
            },
        }
    };
    let _ = wr.shutdown().await;
    let _ = inbox.send(Input::Closed { tuple }).await;
    outcome
}

/// Adds what the core counted since the last call to the metrics.
fn sync_stats(now: &Stats, last: &mut Stats, m: &TurnMetrics) {
    if now == last {
        return;
    }
    let d = |a: u64, b: u64| a.saturating_sub(b);
    m.allocations_created
        .inc_by(d(now.allocations_created, last.allocations_created));
    m.quota_refusals
        .inc_by(d(now.quota_refusals, last.quota_refusals));
    m.rate_limit_evictions
        .inc_by(d(now.rate_limit_evictions, last.rate_limit_evictions));
    m.relayed(
        "to_peer",
        d(now.to_peer_packets, last.to_peer_packets),
        d(now.to_peer_bytes, last.to_peer_bytes),
    );
    m.relayed(
        "to_client",
        d(now.to_client_packets, last.to_client_packets),
        d(now.to_client_bytes, last.to_client_bytes),
    );
    for r in Denial::ALL {
        let n = d(now.denials(r), last.denials(r));
        if n > 0 {
            m.denials_by(r.as_str(), n);
        }
    }
    for r in AuthFailure::ALL {
        let n = d(now.auth_failures(r), last.auth_failures(r));
        if n > 0 {
            m.auth_failures_by(r.as_str(), n);
        }
    }
    for r in DropReason::ALL {
        let n = d(now.drops(r), last.drops(r));
        if n > 0 {
            m.drops_by(r.as_str(), n);
        }
    }
    *last = now.clone();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_secrets_reach_the_running_server_and_minting() {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut config = TurnConfig {
            enabled: true,
            udp_listen: any,
            tcp_listen: any,
            tls_listen: any,
            secrets: vec!["the first secret, long enough".into()],
            ..TurnConfig::default()
        };
        let sockets = TurnSockets::bind(&config).unwrap();
        let state = TurnState::new(&config, &sockets).unwrap();
        let server = state.server_config(&config).unwrap();
        let now = SystemTime::now();
        let before = state.mint("42", now).unwrap();

        config
            .secrets
            .insert(0, "the second secret, long enough".into());
        assert_eq!(state.rotate(&config), Ok(true));
        assert_eq!(
            state.rotate(&config),
            Ok(false),
            "nothing new the second time"
        );
        // The server core holds the same list: it now accepts both, newest first.
        let passwords: Vec<String> = server.secrets.passwords(&before.username).collect();
        assert_eq!(passwords.len(), 2);
        assert_eq!(
            passwords[1], before.password,
            "the old secret still verifies"
        );
        let after = state.mint("42", now).unwrap();
        assert_ne!(after.password, before.password, "the new secret mints");
        assert_eq!(
            server.secrets.passwords(&after.username).next(),
            Some(after.password)
        );

        config.secrets.clear();
        assert!(state.rotate(&config).unwrap_err().contains("random secret"));
        config.secrets = vec!["x".repeat(20)];
        config.external_urls = vec!["turn:turn.example.net:3478".into()];
        assert!(state.rotate(&config).unwrap_err().contains("restart"));
    }

    /// Feeds datagrams of `sizes` for one destination through a batch as `Core::queue` does;
    /// returns the sends: (segment size, datagram count, bytes).
    fn batches(sizes: &[usize], max_segments: usize) -> Vec<(Option<usize>, usize, usize)> {
        let to: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let via = Via::Relay("127.0.0.1:5000".parse().unwrap());
        let mut batch = Batch::new();
        let mut sent = Vec::new();
        let mut flush = |b: &mut Batch| {
            let count = std::mem::take(&mut b.count);
            if count > 0 {
                let segment = segment_size(count, b.segment);
                // What GSO splits the bytes into is what was queued.
                if let Some(s) = segment {
                    assert_eq!(b.bytes.len().div_ceil(s), count);
                }
                sent.push((segment, count, b.bytes.len()));
            }
        };
        for (i, &n) in sizes.iter().enumerate() {
            let data = vec![i as u8; n];
            if batch.fits(via, to, n) {
                batch.push(&data);
            } else {
                flush(&mut batch);
                batch.start(via, to, &data, max_segments);
            }
        }
        flush(&mut batch);
        sent
    }

    #[test]
    fn a_batch_is_a_run_of_equal_sizes_ended_by_a_shorter_one() {
        assert_eq!(
            batches(&[1200, 1200, 1200, 700, 1200], 64),
            vec![(Some(1200), 4, 4300), (None, 1, 1200)]
        );
        // A longer datagram starts a new batch; an empty one goes alone.
        assert_eq!(
            batches(&[500, 600, 600, 0, 600, 0], 64),
            vec![
                (None, 1, 500),
                (Some(600), 2, 1200),
                (None, 1, 0),
                (None, 1, 600),
                (None, 1, 0)
            ]
        );
        // Past the largest GSO segment every datagram goes alone.
        assert_eq!(
            batches(&[1401, 1401, 1400, 1400], 64),
            vec![(None, 1, 1401), (None, 1, 1401), (Some(1400), 2, 2800)]
        );
    }

    #[test]
    fn a_batch_stops_at_the_segment_and_byte_limits() {
        // A socket without GSO: one datagram per send.
        assert_eq!(batches(&[100, 100, 100], 1), vec![(None, 1, 100); 3]);
        // 64 segments at most, whatever the socket claims.
        let sent = batches(&[10; 130], 1_000);
        assert_eq!(
            sent,
            vec![(Some(10), 64, 640), (Some(10), 64, 640), (Some(10), 2, 20)]
        );
        // 60 000 bytes at most.
        let sent = batches(&[1_400; 50], 64);
        let per = GSO_MAX_BYTES / 1_400;
        assert_eq!(sent[0], (Some(1_400), per, per * 1_400));
        assert_eq!(sent.iter().map(|s| s.1).sum::<usize>(), 50);
        assert!(sent.iter().all(|s| s.2 <= GSO_MAX_BYTES));
    }

    #[test]
    fn external_turn_only_mints_credentials_for_its_urls() {
        let config = TurnConfig {
            external_urls: vec!["turns:turn.example.com:443?transport=tcp".into()],
            external_secret: Some("an external shared secret".into()),
            ..TurnConfig::default()
        };
        config.validate().unwrap();
        let state = TurnState::new(&config, &TurnSockets::default()).unwrap();
        assert!(state.available());
        assert_eq!(state.addrs, TurnAddrs::default());
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let creds = state.mint("42", now).unwrap();
        assert_eq!(creds.username, "1800000300:42");
        assert_eq!(
            creds.password,
            TurnSecret::new(b"an external shared secret".to_vec()).password(&creds.username)
        );
        assert_eq!(creds.uris, config.external_urls);
        assert!(!format!("{creds:?}").contains(&creds.password));
    }

    #[test]
    fn without_turn_nothing_is_minted() {
        let state = TurnState::new(&TurnConfig::default(), &TurnSockets::default()).unwrap();
        assert!(!state.available());
        assert_eq!(
            state.mint("42", SystemTime::now()),
            Err(CredentialError::NoSecret)
        );
    }

    #[test]
    fn embedded_turn_urls_name_the_bound_listeners() {
        let config = TurnConfig {
            enabled: true,
            udp_listen: "127.0.0.1:0".parse().unwrap(),
            tcp_listen: "127.0.0.1:0".parse().unwrap(),
            tls_listen: "127.0.0.1:0".parse().unwrap(),
            secrets: vec!["a long enough secret".into()],
            ..TurnConfig::default()
        };
        let sockets = TurnSockets::bind(&config).unwrap();
        let addrs = sockets.addrs();
        let state = TurnState::new(&config, &sockets).unwrap();
        let creds = state.mint("7", SystemTime::now()).unwrap();
        assert_eq!(
            creds.uris,
            vec![
                format!("turn:127.0.0.1:{}?transport=udp", addrs.udp.unwrap().port()),
                format!("turn:127.0.0.1:{}?transport=tcp", addrs.tcp.unwrap().port()),
                format!(
                    "turns:127.0.0.1:{}?transport=tcp",
                    addrs.tls.unwrap().port()
                ),
            ]
        );
    }
}
