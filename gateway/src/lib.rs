//! # strait-gateway
//!
//! The Strait gateway: one QUIC port for WebTransport (ALPN `h3`) and native clients (ALPN
//! `strait/1`), an HTTP port for health, readiness, metrics, certificate hashes, WHIP/WHEP and
//! (in development mode) tokens, and UDP ports for the WebRTC peers of the bridge (one per media
//! worker, or one shared).
//!
//! This is the only crate of the workspace that owns a runtime, reads the clock, binds sockets or
//! handles signals. The binary `strait` (`src/main.rs`) is a thin command line over this library;
//! end-to-end tests start the gateway in-process through [`Gateway::start`], on sockets bound to
//! port 0.
//!
//! ## Shape
//!
//! The public surface is what an embedder needs: [`Gateway`] (or [`run`]) with its [`Sockets`],
//! the [`config`], access tokens ([`auth`]) and the [`metrics`]. Inside, by surface:
//!
//! - `config/`: the configuration, validated before anything starts;
//! - `auth/`: access tokens and resume tokens;
//! - `quic/`: the QUIC endpoint (admission, ALPN dispatch, WebTransport session requests), a
//!   session's connection (`Link`) and TLS;
//! - `session/`: the session core (hello, auth, resume, rate limits, go-away) and its drivers;
//! - `http/`: health, metrics, certificate hashes, the web demo, development tokens, WHIP/WHEP,
//!   `/ws/rtc`, TURN credentials;
//! - `worker/`: the media workers — each a hub (the SFU core, its participants' sending side and
//!   the WebRTC bridge, sans-IO) driven on a thread of its own —, the placement of rooms and
//!   participants on them, the pipe between them, and the one translator between protocol and
//!   media types;
//! - `turn/`: the embedded TURN server's sockets and tasks, and TURN credentials;
//! - `peer/`: authenticated links between the nodes of a cluster (ALPN `strait-peer/1`).
//!
//! [`run`] takes a validated configuration, pre-bound sockets and a shutdown future; when the
//! future resolves the gateway drains (refuses new sessions, sends go-away, waits for sessions up
//! to the drain deadline) and closes.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub(crate) mod cluster;
pub mod config;
pub(crate) mod health;
pub(crate) mod http;
pub mod metrics;
pub(crate) mod net;
pub(crate) mod peer;
pub(crate) mod quic;
pub(crate) mod session;
pub(crate) mod turn;
pub(crate) mod worker;

pub use crate::config::DEFAULT_LOSS_TOLERANCE;
#[doc(hidden)]
pub use crate::health::Fault;
pub use crate::net::{OpenFiles, bind_udp, bind_webrtc, raise_open_files_limit};
pub use crate::peer::{PeerError, PeerLink};
pub use crate::quic::acks::{AckFeed, AckTapFactory};
pub use crate::turn::{TurnAddrs, TurnCredentials, TurnSockets};

use std::future::Future;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::registry::Registry;
use rand::{Rng, SeedableRng};
use strait_certs::Fingerprint;
use strait_protocol::ErrorCode;
use tokio_util::sync::CancellationToken;

use crate::auth::{AccessClaims, ApiKey, Authority, Grants, KeyRing, ResumeSigner, Secret};
use crate::cluster::Cluster;
use crate::config::ValidConfig;
use crate::http::HttpState;
use crate::metrics::Metrics;
use crate::quic::frontdoor::FrontDoor;
use crate::quic::tls::CertStore;
use crate::session::{Admission, SessionContext};
use crate::turn::TurnState;

/// One running gateway's parts, as `Gateway` and the drain see them. Each part of the gateway
/// gets only its own context ([`SessionContext`], [`HttpState`], [`FrontDoor`]); nothing but
/// this file sees all of them.
#[derive(Debug)]
struct Node {
    sessions: Arc<SessionContext>,
    http: Arc<HttpState>,
    front: Arc<FrontDoor>,
    certs: Arc<CertStore>,
    turn: Arc<TurnState>,
    admission: Arc<Admission>,
    quic_addr: SocketAddr,
    webrtc_addrs: Vec<SocketAddr>,
    /// The watch over the media workers and the TURN server.
    health: Arc<health::Health>,
    /// Faults for the TURN server (tests of supervision).
    turn_faults: tokio::sync::mpsc::UnboundedSender<Fault>,
    /// The links to other nodes.
    peers: Arc<peer::Peers>,
}

impl Node {
    fn config(&self) -> &ValidConfig {
        &self.sessions.config
    }

    fn reload(&self, new: &ValidConfig) -> Reload {
        let turn_secrets = self.turn.rotate(&new.turn_with_media(&self.webrtc_addrs));
        let config = self.config();
        let mut rest = new.get().clone();
        rest.turn.secrets.clone_from(&config.turn.secrets);
        rest.turn
            .external_secret
            .clone_from(&config.turn.external_secret);
        Reload {
            turn_secrets,
            needs_restart: rest != *config.get(),
        }
    }
}

/// `host:port` clients use to reach the QUIC port bound at `addr`.
fn public_authority(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    }
}

/// What a reloaded configuration changed in a running gateway ([`Reloader::reload`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reload {
    /// Whether the TURN secrets were replaced, or why not.
    pub turn_secrets: Result<bool, String>,
    /// Whether the new configuration differs in anything else, which applies only at the next
    /// start.
    pub needs_restart: bool,
}

/// Applies reloaded configurations to a running gateway, from any task.
#[derive(Debug, Clone)]
pub struct Reloader(Arc<Node>);

impl Reloader {
    /// Applies a reloaded configuration (the binary does it on SIGHUP). Only the TURN secrets
    /// change while running — they rotate with an overlap: list the new secret first and keep
    /// the old one until the credentials it minted have expired. Everything else in `new` is
    /// compared and reported, not applied.
    pub fn reload(&self, new: &ValidConfig) -> Reload {
        self.0.reload(new)
    }
}

/// Sockets bound before the gateway starts (port 0 in tests, configured ports in production).
#[derive(Debug)]
pub struct Sockets {
    /// The QUIC port.
    pub quic: UdpSocket,
    /// The HTTP port.
    pub http: TcpListener,
    /// The WebRTC bridge's UDP sockets, one per media worker ([`bind_webrtc`]); required when
    /// `webrtc.enabled`, ignored otherwise.
    pub webrtc: Vec<UdpSocket>,
    /// The embedded TURN server's listeners (none when it is off).
    pub turn: turn::TurnSockets,
}

impl Sockets {
    /// Binds the addresses of the configuration.
    pub fn bind(config: &ValidConfig) -> std::io::Result<Sockets> {
        let quic = net::bind_udp(config.quic.listen, config.quic.socket_buffer)?;
        let http = TcpListener::bind(config.http.listen)?;
        http.set_nonblocking(true)?;
        let webrtc = net::bind_webrtc(config, config.webrtc.socket_buffer)?;
        let turn = turn::TurnSockets::bind(&config.turn)?;
        Ok(Sockets {
            quic,
            http,
            webrtc,
            turn,
        })
    }
}

/// A gateway that is running, as [`Gateway::start`] returns it.
#[derive(Debug)]
pub struct Gateway {
    node: Arc<Node>,
    /// The QUIC port's address.
    pub quic_addr: SocketAddr,
    /// The HTTP port's address.
    pub http_addr: SocketAddr,
    /// The WebRTC bridge's UDP addresses, one per media worker (none when the bridge is off).
    pub webrtc_addrs: Vec<SocketAddr>,
    /// The development API key, when no key was configured (print it for the operator).
    pub dev_key: Option<ApiKey>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Gateway {
    /// Starts a gateway on `sockets` in the current runtime.
    pub async fn start(config: ValidConfig, mut sockets: Sockets) -> anyhow::Result<Gateway> {
        let shutdown = CancellationToken::new();
        let (parts, dev_key) = prepare(config, &mut sockets)?;
        let node = parts.node.clone();
        let quic_addr = sockets.quic.local_addr()?;
        let http_addr = sockets.http.local_addr()?;
        let webrtc_addrs = node.webrtc_addrs.clone();
        let stop = shutdown.clone();
        let task = tokio::spawn(serve(parts, sockets, async move { stop.cancelled().await }));
        Ok(Gateway {
            node,
            quic_addr,
            http_addr,
            webrtc_addrs,
            dev_key,
            shutdown,
            task,
        })
    }

    /// Links this node to the node whose QUIC port is at `addr` (ALPN `strait-peer/1`): both
    /// prove `cluster.peer_secret` (see the `peer` module). Returns the other node's id.
    pub async fn dial_peer(&self, addr: SocketAddr) -> Result<String, PeerError> {
        self.node.peers.dial(addr).await.map(|link| link.node)
    }

    /// The nodes this node is linked to now (dialled or accepted).
    pub fn peers(&self) -> Vec<String> {
        self.node.peers.linked()
    }

    /// The SHA-256 of the certificate served now.
    pub fn cert_fingerprint(&self) -> Fingerprint {
        self.node.certs.current().fingerprint
    }

    /// `host:port` clients use to reach the QUIC port.
    pub fn public_quic_authority(&self) -> String {
        public_authority(self.node.quic_addr)
    }

    /// Where the embedded TURN server listens (all `None` when it is off).
    pub fn turn_addrs(&self) -> TurnAddrs {
        self.node.turn.addrs
    }

    /// TURN credentials for `identity`, valid from `now` (as `POST /v1/turn/credentials` mints
    /// them); an error when no TURN server is configured.
    pub fn turn_credentials(
        &self,
        identity: &str,
        now: SystemTime,
    ) -> Result<TurnCredentials, strait_media::turn::CredentialError> {
        self.node.turn.mint(identity, now)
    }

    /// The gateway's metrics (what `/metrics` serves).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.node.sessions.metrics
    }

    /// Mints an access token with the gateway's minting key.
    pub fn mint(&self, claims: &AccessClaims) -> Result<String, auth::MintError> {
        self.node.sessions.auth.mint(claims)
    }

    /// Takes one step of the development certificate rotation as if it were `now` (the gateway
    /// takes one on its own every day): mint the next certificate, publish its hash, serve it,
    /// each when `policy` says. Returns when the next step is due. A gateway serving a
    /// certificate from files has nothing to rotate and returns an error.
    pub fn rotate_certificates(
        &self,
        policy: &strait_certs::RotationPolicy,
        now: SystemTime,
    ) -> anyhow::Result<SystemTime> {
        if self.node.config().tls.cert.is_some() {
            anyhow::bail!("the certificate comes from files: it is not rotated by the gateway");
        }
        Ok(self
            .node
            .certs
            .rotate_step(policy, &self.node.config().tls.dev_names, now)?)
    }

    /// Injects `fault` into media worker `worker`, or into the TURN server when `worker` is
    /// `None`: what the supervision tests use. Nothing reaches it from the network.
    #[doc(hidden)]
    pub async fn inject_fault(&self, worker: Option<usize>, fault: Fault) {
        match worker {
            Some(index) => {
                self.node
                    .sessions
                    .media
                    .worker(index)
                    .send(worker::WorkerCommand::Fault(fault))
                    .await;
            }
            None => {
                let _ = self.node.turn_faults.send(fault);
            }
        }
    }

    /// Sessions open now (QUIC, WebTransport and `/ws/rtc`; each holds an admission slot).
    pub fn sessions(&self) -> usize {
        self.node
            .admission
            .sessions_in_use(self.node.config().limits.max_sessions)
    }

    /// Waits until at most `n` sessions are open (woken by each session's end, not by a timer).
    pub async fn sessions_at_most(&self, n: usize) {
        loop {
            // Register for the wake-up before looking at the count, so no end is missed.
            let ended = self.node.admission.changed();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.sessions() <= n {
                return;
            }
            ended.await;
        }
    }

    /// A handle that applies reloaded configurations to this gateway ([`Reloader::reload`]).
    pub fn reloader(&self) -> Reloader {
        Reloader(self.node.clone())
    }

    /// Mints an access token for `identity` in `room` with the given grants, valid for an hour.
    pub fn token(&self, room: &str, identity: &str, grants: Grants) -> String {
        let claims = AccessClaims::new(
            identity,
            room,
            grants,
            SystemTime::now(),
            Duration::from_secs(3600),
        );
        self.node.sessions.auth.mint(&claims).unwrap_or_default()
    }

    /// Starts the drain (as SIGTERM does) and waits until the gateway has stopped.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await?
    }

    /// Starts the drain without waiting.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until the gateway has stopped.
    pub async fn stopped(self) -> anyhow::Result<()> {
        self.task.await?
    }
}

struct Parts {
    node: Arc<Node>,
    workers: worker::Threads,
    worker_stop: CancellationToken,
    turn_faults: tokio::sync::mpsc::UnboundedReceiver<Fault>,
}

fn prepare(config: ValidConfig, sockets: &mut Sockets) -> anyhow::Result<(Parts, Option<ApiKey>)> {
    let now = SystemTime::now();
    let identity = quic::tls::initial_identity(&config, now)?;
    let certs = CertStore::new(identity)?;

    let mut keys = KeyRing::new();
    let mut dev_key = None;
    let mint_key = if config.auth.keys.is_empty() {
        let key = ApiKey::generate_dev()?;
        let id = key.id().to_owned();
        keys.insert(key.clone());
        dev_key = Some(key);
        id
    } else {
        for k in &config.auth.keys {
            keys.insert(ApiKey::new(k.id.clone(), Secret::new(k.secret.clone()))?);
        }
        config.auth.keys[0].id.clone()
    };
    let resume = match &config.auth.resume_secret {
        Some(secret) => ResumeSigner::new(secret.as_bytes())?,
        None => ResumeSigner::generate()?,
    };

    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let mut seed_rng = rand::rngs::StdRng::from_seed(random_seed()?);
    let worker_stop = CancellationToken::new();
    let health = Arc::new(health::Health::new(config.health.stall_timeout));
    let webrtc = if config.webrtc.enabled {
        let sockets = std::mem::take(&mut sockets.webrtc);
        anyhow::ensure!(
            sockets.len() == config.media_workers(),
            "webrtc.enabled is set: {} WebRTC sockets are needed (one per media worker), {} \
             were given",
            config.media_workers(),
            sockets.len()
        );
        sockets
    } else {
        Vec::new()
    };
    let webrtc_addrs = webrtc
        .iter()
        .map(UdpSocket::local_addr)
        .collect::<std::io::Result<Vec<_>>>()?;
    let (media, workers) = worker::spawn(
        &config,
        &metrics,
        &mut || seed_rng.random(),
        webrtc,
        &worker_stop,
        &health,
    )?;
    let admission = Admission::new(
        config.limits.max_sessions,
        config.limits.max_sessions_per_ip,
        config.limits.max_handshakes,
    );
    let (turn_faults, turn_fault_rx) = tokio::sync::mpsc::unbounded_channel();
    let turn = Arc::new(TurnState::new(
        &config.turn_with_media(&webrtc_addrs),
        &sockets.turn,
    )?);
    let quic_addr = sockets.quic.local_addr()?;
    let http_addr = sockets.http.local_addr()?;
    let cluster = Cluster::new(
        &config,
        quic_addr,
        http_addr,
        metrics.clone(),
        random_seed()?,
    )?;
    let peers = Arc::new(peer::Peers::new(
        cluster
            .node_id()
            .or_else(|| config.cluster.node_id.clone())
            .unwrap_or_else(|| "strait".into()),
        config.cluster.peer_secret.as_deref(),
        metrics.clone(),
    ));
    let auth = Authority {
        keys,
        mint_key,
        resume,
    };
    let sessions = Arc::new(SessionContext::new(
        config,
        auth,
        metrics,
        media,
        turn.clone(),
        cluster,
        random_seed()?,
    ));
    let http = Arc::new(HttpState {
        sessions: sessions.clone(),
        admission: admission.clone(),
        registry,
        certs: certs.clone(),
        webrtc: !webrtc_addrs.is_empty(),
        quic_authority: public_authority(quic_addr),
        http_addr,
        health: health.clone(),
    });
    let front = Arc::new(FrontDoor {
        sessions: sessions.clone(),
        admission: admission.clone(),
        http_addr,
        peers: peers.clone(),
    });
    let node = Arc::new(Node {
        sessions,
        http,
        front,
        certs,
        turn,
        admission,
        quic_addr,
        webrtc_addrs,
        health,
        turn_faults,
        peers,
    });
    Ok((
        Parts {
            node,
            workers,
            worker_stop,
            turn_faults: turn_fault_rx,
        },
        dev_key,
    ))
}

/// The QUIC endpoint's configuration. With `auth.resume_secret` set, its stateless-reset key
/// and the key its connection ids are checked with are derived from that secret and the node's
/// id, so that the same node started again recognises the connection ids of its previous run
/// and resets those connections at their next packet (they learn at once that it restarted,
/// instead of after their idle timeout); otherwise quinn's random keys.
fn endpoint_config(config: &ValidConfig) -> quinn::EndpointConfig {
    let Some(secret) = &config.auth.resume_secret else {
        return quinn::EndpointConfig::default();
    };
    let node = config.cluster.node_id.as_deref().unwrap_or("");
    let master = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let derive = |purpose: &[u8]| {
        let mut input = purpose.to_vec();
        input.extend_from_slice(node.as_bytes());
        ring::hmac::sign(&master, &input)
    };
    let reset = derive(b"strait stateless reset key\0");
    let mut endpoint = quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        reset.as_ref(),
    )));
    let cid = derive(b"strait connection id key\0");
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(&cid.as_ref()[..8]);
    let cid_key = u64::from_le_bytes(cid_key);
    endpoint.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    endpoint
}

/// What the cluster asks about this node at each heartbeat.
#[derive(Clone)]
struct NodeLocal {
    sessions: Arc<SessionContext>,
    admission: Arc<Admission>,
    certs: Arc<CertStore>,
}

impl cluster::Local for NodeLocal {
    fn load(&self) -> f64 {
        let max = self.sessions.config.limits.max_sessions;
        let sessions = self.admission.sessions_in_use(max) as f64 / max.max(1) as f64;
        let workers = self.sessions.config.media_workers();
        let busy = (0..workers)
            .map(|worker| {
                let label = metrics::WorkerLabel {
                    worker: u32::try_from(worker).unwrap_or(u32::MAX),
                };
                self.sessions
                    .metrics
                    .worker_busy
                    .get_or_create(&label)
                    .get()
            })
            .fold(0.0, f64::max);
        sessions.max(busy).clamp(0.0, 1.0)
    }

    fn hosts(&self, room: &str) -> bool {
        self.sessions
            .media
            .placement()
            .room_worker(&strait_protocol::RoomId(room.to_owned()))
            .is_some()
    }

    fn cert_hashes(&self) -> Vec<String> {
        if self.certs.current().lifetime() > strait_certs::MAX_DEV_VALIDITY {
            // A certificate from a CA is verified by name, not pinned.
            return Vec::new();
        }
        let policy = strait_certs::RotationPolicy::default();
        self.certs
            .published(&policy, SystemTime::now())
            .iter()
            .map(Fingerprint::to_hex)
            .collect()
    }
}

/// 32 bytes from the operating system's random source.
fn random_seed() -> anyhow::Result<[u8; 32]> {
    use ring::rand::SecureRandom;
    let mut seed = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut seed)
        .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
    Ok(seed)
}

/// Runs a gateway until `shutdown` resolves, then drains and stops.
pub async fn run(
    config: ValidConfig,
    sockets: Sockets,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut sockets = sockets;
    let (parts, dev_key) = prepare(config, &mut sockets)?;
    if let Some(key) = &dev_key {
        tracing::info!(
            key_id = key.id(),
            "development mode: an API key was generated"
        );
    }
    serve(parts, sockets, shutdown).await
}

async fn serve(
    parts: Parts,
    sockets: Sockets,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let Parts {
        node,
        workers,
        worker_stop,
        turn_faults,
    } = parts;
    let config = node.config().clone();

    let server_config =
        quic::tls::quinn_server_config(node.certs.clone(), &config, node.peers.enabled())?;
    let endpoint = quinn::Endpoint::new(
        endpoint_config(&config),
        Some(server_config),
        sockets.quic,
        Arc::new(quinn::TokioRuntime),
    )?;
    node.peers.set_endpoint(endpoint.clone());
    let http_listener = tokio::net::TcpListener::from_std(sockets.http)?;
    tracing::info!(
        quic = %endpoint.local_addr()?,
        http = %http_listener.local_addr()?,
        "strait is serving"
    );

    let background = CancellationToken::new();
    let accept = tokio::spawn(quic::frontdoor::accept_loop(
        node.front.clone(),
        endpoint.clone(),
    ));
    let rotation = if config.tls.cert.is_none() {
        Some(tokio::spawn(quic::tls::rotation_task(
            node.certs.clone(),
            config.tls.dev_names.clone(),
            background.clone(),
        )))
    } else {
        None
    };
    let http_stop = background.clone();
    let router = http::router(node.http.clone());
    let limits = http::server::HttpLimits {
        max_connections: config.http.max_connections,
        header_timeout: config.http.header_timeout,
        body_timeout: config.http.body_timeout,
    };
    let http_task = tokio::spawn(http::server::serve(
        http_listener,
        router,
        limits,
        node.sessions.metrics.clone(),
        http_stop,
    ));
    let cluster_stop = CancellationToken::new();
    let local = NodeLocal {
        sessions: node.sessions.clone(),
        admission: node.admission.clone(),
        certs: node.certs.clone(),
    };
    let cluster_task = tokio::spawn(
        node.sessions
            .cluster
            .clone()
            .run(local.clone(), cluster_stop.clone()),
    );
    if let Some(id) = node.sessions.cluster.node_id() {
        tracing::info!(
            node = %id,
            redis = %config::redact_url(config.cluster.redis_url.as_deref().unwrap_or_default()),
            "joining the cluster"
        );
    }
    let turn_task = if config.turn.enabled {
        let tls = quic::tls::turn_tls_config(node.certs.clone())?;
        let heart = node.health.register("turn server");
        let serving = turn::serve(
            config.turn_with_media(&node.webrtc_addrs),
            node.turn.clone(),
            node.sessions.metrics.clone(),
            sockets.turn,
            Some(tls),
            turn::Supervision {
                heart: heart.clone(),
                faults: turn_faults,
            },
            background.clone(),
        );
        Some(tokio::spawn(async move {
            // A panic is logged with its cause and makes the server dead for `/readyz` and
            // `/healthz`; so do an error and an end while the gateway is not stopping.
            let result =
                futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(serving)).await;
            match result {
                Ok(Ok(())) => heart.ended(None),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "the TURN server failed");
                    heart.ended(None);
                }
                Err(payload) => heart.ended(Some(health::panic_message(&*payload))),
            }
        }))
    } else {
        drop(turn_faults);
        None
    };

    shutdown.await;

    // Drain: refuse new sessions, go-away to everyone, wait for them up to the deadline. What
    // ends from now on is stopping, not dying.
    node.health.stopping();
    tracing::info!("draining");
    node.sessions.cluster.set_draining();
    // In a cluster the rooms go to other nodes first, and their sessions with them.
    let moved = node.sessions.cluster.hand_over_rooms(&local).await;
    if moved > 0 {
        tracing::info!(rooms = moved, "rooms handed over to other nodes");
    }
    node.sessions.drain.cancel();
    let deadline = Instant::now() + config.shutdown.drain_deadline;
    let sessions = node.admission.clone();
    let max = config.limits.max_sessions;
    loop {
        // Register for the wake-up before looking at the count, so no session end is missed.
        let ended = sessions.changed();
        tokio::pin!(ended);
        ended.as_mut().enable();
        if sessions.sessions_in_use(max) == 0 || Instant::now() >= deadline {
            break;
        }
        tokio::select! {
            () = ended => {}
            () = tokio::time::sleep_until(deadline.into()) => {}
        }
    }
    let left = sessions.sessions_in_use(max);
    if left > 0 {
        tracing::info!(sessions = left, "drain deadline reached; closing the rest");
    }
    endpoint.close(
        quinn::VarInt::from_u32(ErrorCode::GOING_AWAY.0),
        b"going away",
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    background.cancel();
    let _ = accept.await;
    if let Some(rotation) = rotation {
        let _ = rotation.await;
    }
    let _ = http_task.await;
    if let Some(turn_task) = turn_task {
        let _ = turn_task.await;
    }
    // Give the node's rooms and lease back to the cluster.
    cluster_stop.cancel();
    let _ = cluster_task.await;
    // Every session has ended or been closed: stop the workers.
    worker_stop.cancel();
    drop(node);
    workers.join().await;
    tracing::info!("stopped");
    Ok(())
}
