//! The embedded TURN server's sockets and tasks, and TURN credentials for participants.
//!
//! The protocol lives in [`strait_media::turn`] (sans-IO); this module owns what touches the
//! operating system:
//!
//! - one task that owns the [`Server`] core and the UDP listener, and sends everything the core
//!   emits — replies and ChannelData to clients, payloads to peers from relay sockets;
//! - an accept loop per TCP and TLS listener and a task per connection, which split the byte
//!   stream into STUN and ChannelData frames ([`framing::next_frame`]) and write the core's
//!   replies back (padded ChannelData, RFC 8656 §12.5);
//! - one UDP relay socket per allocation, bound to `turn.relay_ip` on a port from the OS, and a
//!   reader task for it.
//!
//! The peer policy is enforced twice: by the core when a permission or channel is requested
//! (403) and for every packet it emits, and here again just before a relay socket sends.
//!
//! [`TurnState::mint`] hands out TURN REST credentials for a participant — for the embedded
//! server, or for external TURN servers when `turn.external_urls` is set — and
//! `POST /v1/turn/credentials` serves them to holders of an access token.

pub mod config;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

pub use config::{Listener, TurnConfig};

use crate::metrics::{Metrics, TurnMetrics};

/// Messages queued from connection and relay tasks toward the core task. Beyond it, relay
/// datagrams are dropped and counted; stream tasks wait (backpressure on their TCP reads).
const INBOX: usize = 8_192;
/// Frames queued toward one TCP or TLS client; beyond it they are dropped and counted.
const STREAM_QUEUE: usize = 256;
/// Datagrams or queued inputs handled per wake-up before the outputs are flushed.
const BATCH: usize = 64;
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
                .map(|a| crate::frontdoor::bind_udp(a, 4 * 1024 * 1024))
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
pub struct TurnState {
    /// The embedded server's listeners (empty when it is off).
    pub addrs: TurnAddrs,
    secrets: TurnSecrets,
    ttl: Duration,
    uris: Vec<String>,
}

impl TurnState {
    /// From the configuration and the bound listeners. Without configured secrets the embedded
    /// server gets a random one.
    pub fn new(config: &TurnConfig, sockets: &TurnSockets) -> anyhow::Result<TurnState> {
        let addrs = sockets.addrs();
        if !config.external_urls.is_empty() {
            let secret = config.external_secret.clone().unwrap_or_default();
            return Ok(TurnState {
                addrs,
                secrets: TurnSecrets::new(vec![TurnSecret::new(secret.into_bytes())]),
                ttl: config.credential_ttl,
                uris: config.external_urls.clone(),
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
        })
    }

    /// Whether credentials can be minted (embedded or external TURN is configured).
    pub fn available(&self) -> bool {
        !self.uris.is_empty()
    }

    /// Mints credentials for `identity` (a participant) valid from `now`.
    pub fn mint(
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
    pub fn ice_servers(
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
            max_allocations_per_credential: config.max_allocations_per_credential,
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
    Peer {
        relay: SocketAddr,
        peer: SocketAddr,
        data: Vec<u8>,
    },
}

struct Relay {
    socket: Arc<UdpSocket>,
    reader: tokio::task::AbortHandle,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Runs the embedded TURN server until `stop` is cancelled.
pub async fn serve(
    state: Arc<crate::Shared>,
    sockets: TurnSockets,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    // The configured TURN settings, with the bridge's WebRTC addresses as media addresses.
    let config = crate::turn_config(&state.config, state.webrtc_addr);
    let metrics = state.metrics.clone();
    let server_config = state.turn.server_config(&config)?;
    let policy = server_config.policy.clone();
    let mut seed = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
        .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
    let mut server = Server::new(server_config, seed)?;

    let (inbox_tx, mut inbox) = mpsc::channel::<Input>(INBOX);
    let mut udp = match sockets.udp {
        Some(s) => {
            s.set_nonblocking(true)?;
            Some(UdpSocket::from_std(s)?)
        }
        None => None,
    };
    let udp_local = udp.as_ref().map(UdpSocket::local_addr).transpose()?;
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

    let addrs = state.turn.addrs;
    tracing::info!(udp = ?addrs.udp, tcp = ?addrs.tcp, tls = ?addrs.tls, "turn is serving");
    let mut relays: HashMap<SocketAddr, Relay> = HashMap::new();
    let mut streams: HashMap<FiveTuple, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    let mut last = Stats::default();
    let relay_ip = config.relay_ip;
    let turn = &metrics.turn;
    let timer = tokio::time::sleep(Duration::from_secs(3_600));
    tokio::pin!(timer);
    let mut armed: Option<Instant> = None;
    loop {
        let wake = server.poll_timeout();
        // One timer, re-armed only when the core's deadline moves (not one per packet).
        if wake != armed {
            if let Some(at) = wake {
                timer.as_mut().reset(at.into());
            }
            armed = wake;
        }
        macro_rules! feed {
            ($tuple:expr, $data:expr) => {
                let _ =
                    server.handle_client($tuple, $data, Instant::now(), unix_now(), &mut |_| {
                        bind_relay(&mut relays, relay_ip, &inbox_tx, turn)
                    });
            };
        }
        tokio::select! {
            () = stop.cancelled() => break,
            r = recv(udp.as_ref(), &mut buf) => {
                if let Err(e) = &r
                    && !transient(e)
                {
                    tracing::warn!(error = %e, "turn udp listener failed; it stops");
                    udp = None;
                }
                if let (Ok((n, from)), Some(local)) = (r, udp_local) {
                    feed!(FiveTuple { transport: Transport::Udp, client: from, server: local }, &buf[..n]);
                    // Take what else is queued without going back through select! and the timer.
                    if let Some(socket) = &udp {
                        for _ in 1..BATCH {
                            let Ok((n, from)) = socket.try_recv_from(&mut buf) else {
                                break;
                            };
                            feed!(FiveTuple { transport: Transport::Udp, client: from, server: local }, &buf[..n]);
                        }
                    }
                }
            }
            Some(input) = inbox.recv() => {
                let mut next = Some(input);
                let mut taken = 0;
                while let Some(input) = next.take() {
                    match input {
                        Input::Opened { tuple, tx } => { streams.insert(tuple, tx); }
                        Input::Frame { tuple, data } => { feed!(tuple, &data); }
                        Input::Closed { tuple } => {
                            streams.remove(&tuple);
                            server.handle_client_closed(&tuple);
                        }
                        Input::Peer { relay, peer, data } => {
                            let _ = server.handle_peer(relay, peer, &data, Instant::now());
                        }
                    }
                    taken += 1;
                    if taken < BATCH {
                        next = inbox.try_recv().ok();
                    }
                }
            }
            () = &mut timer, if armed.is_some() => {
                armed = None;
                server.handle_timeout(Instant::now());
            }
        }
        while let Some(t) = server.poll_transmit() {
            match t {
                Transmit::Client { to, data } => match to.transport {
                    Transport::Udp => {
                        if let Some(udp) = &udp
                            && udp.try_send_to(&data, to.client).is_err()
                        {
                            turn.drop_reason("send_failed");
                        }
                    }
                    Transport::Tcp | Transport::Tls => {
                        if let Some(tx) = streams.get(&to)
                            && tx.try_send(data).is_err()
                        {
                            turn.drop_reason("stream_queue_full");
                        }
                    }
                },
                Transmit::Peer { relay, peer, data } => {
                    // The core checked the policy; check again at the socket.
                    if let Err(denial) = policy.check(peer) {
                        turn.denial(denial.as_str());
                        continue;
                    }
                    match relays.get(&relay) {
                        Some(r) if r.socket.try_send_to(&data, peer).is_ok() => {}
                        _ => turn.drop_reason("send_failed"),
                    }
                }
            }
        }
        while let Some(event) = server.poll_event() {
            match event {
                Event::Allocated { relay, client } => {
                    tracing::debug!(%relay, transport = client.transport.as_str(), "turn allocation");
                }
                Event::Closed { relay, reason, .. } => {
                    tracing::debug!(%relay, ?reason, "turn allocation closed");
                    if let Some(r) = relays.remove(&relay) {
                        r.reader.abort();
                    }
                }
                _ => {}
            }
        }
        sync_stats(server.stats(), &mut last, turn);
        turn.allocations.set(server.allocation_count() as i64);
    }
    for (_, r) in relays.drain() {
        r.reader.abort();
    }
    accept.abort_all();
    turn.allocations.set(0);
    Ok(())
}

fn transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionRefused, ConnectionReset, Interrupted, WouldBlock};
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionReset | Interrupted | WouldBlock
    )
}

async fn recv(udp: Option<&UdpSocket>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match udp {
        Some(udp) => udp.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

fn bind_relay(
    relays: &mut HashMap<SocketAddr, Relay>,
    ip: IpAddr,
    inbox: &mpsc::Sender<Input>,
    metrics: &TurnMetrics,
) -> Option<SocketAddr> {
    let socket = std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).ok()?;
    socket.set_nonblocking(true).ok()?;
    let socket = Arc::new(UdpSocket::from_std(socket).ok()?);
    let addr = socket.local_addr().ok()?;
    let reader = tokio::spawn(relay_reader(
        socket.clone(),
        addr,
        inbox.clone(),
        metrics.relay_queue_full.clone(),
    ));
    relays.insert(
        addr,
        Relay {
            socket,
            reader: reader.abort_handle(),
        },
    );
    Some(addr)
}

async fn relay_reader(
    socket: Arc<UdpSocket>,
    relay: SocketAddr,
    inbox: mpsc::Sender<Input>,
    queue_full: prometheus_client::metrics::counter::Counter,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            // ICMP errors for earlier sends surface here on some systems; the socket is fine.
            Err(e) if transient(&e) => continue,
            Err(e) => {
                tracing::debug!(%relay, error = %e, "turn relay socket failed");
                return;
            }
        };
        let input = Input::Peer {
            relay,
            peer,
            data: buf[..n].to_vec(),
        };
        match inbox.try_send(input) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                queue_full.inc();
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return,
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

/// The rustls configuration of the TLS listener: the gateway's certificates, TLS 1.2 and 1.3,
/// no ALPN (RFC 7443's `stun.turn` is optional and browsers do not send it).
pub fn tls_config(store: Arc<crate::tls::CertStore>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let config = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(store);
    Ok(Arc::new(config))
}

/// `POST /v1/turn/credentials` with `Authorization: Bearer <access token>`: TURN credentials
/// for the token's identity. 404 when TURN is not configured, 401 without a valid token.
pub async fn credentials_endpoint(
    axum::extract::State(shared): axum::extract::State<Arc<crate::Shared>>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    if !shared.turn.available() {
        return (StatusCode::NOT_FOUND, "TURN is not configured\n").into_response();
    }
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let now = SystemTime::now();
    let Some(Ok(verified)) = token.map(|t| shared.keys.verify(t, now)) else {
        return (
            StatusCode::UNAUTHORIZED,
            "a valid access token is required\n",
        )
            .into_response();
    };
    match shared.turn.mint(&verified.identity, now) {
        Ok(creds) => axum::Json(creds).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
