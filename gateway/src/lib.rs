//! # strait-gateway
//!
//! The Strait gateway: one QUIC port for WebTransport (ALPN `h3`) and native clients (ALPN
//! `strait/1`), an HTTP port for health, readiness, metrics, certificate hashes, WHIP/WHEP and
//! (in development mode) tokens, and one UDP port for every WebRTC peer of the bridge.
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
//! - `worker/`: the media hub (the SFU core, every participant's sending side and the WebRTC
//!   bridge, sans-IO), its driver task, and the one translator between protocol and media types;
//! - `turn/`: the embedded TURN server's sockets and tasks, and TURN credentials.
//!
//! [`run`] takes a validated configuration, pre-bound sockets and a shutdown future; when the
//! future resolves the gateway drains (refuses new sessions, sends go-away, waits for sessions up
//! to the drain deadline) and closes.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod config;
pub(crate) mod http;
pub mod metrics;
pub(crate) mod quic;
pub(crate) mod session;
pub(crate) mod turn;
pub(crate) mod worker;

pub use crate::quic::bind_udp;
pub use crate::turn::{TurnAddrs, TurnCredentials, TurnSockets};

use std::future::Future;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::registry::Registry;
use rand::{Rng, SeedableRng};
use strait_certs::Fingerprint;
use strait_protocol::{ErrorCode, ParticipantId};
use tokio_util::sync::CancellationToken;

use crate::auth::{AccessClaims, ApiKey, Grants, KeyRing, ResumeSigner, Secret};
use crate::config::ValidConfig;
use crate::metrics::Metrics;
use crate::quic::tls::CertStore;
use crate::session::Admission;
use crate::worker::WorkerHandle;

/// State shared by every task of one gateway.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The configuration.
    pub config: ValidConfig,
    /// Keys that verify (and in development mode mint) access tokens.
    pub keys: KeyRing,
    /// The key id used to mint tokens (the development key, or the first configured key).
    pub mint_key: String,
    /// Signs and checks resume tokens.
    pub resume: ResumeSigner,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The registry behind `/metrics`.
    pub registry: Registry,
    /// Certificates served and published.
    pub certs: Arc<CertStore>,
    /// Session slots.
    pub admission: Arc<Admission>,
    /// Cancelled when the drain starts.
    pub drain: CancellationToken,
    /// The media worker.
    pub worker: WorkerHandle,
    /// The QUIC port's bound address.
    pub quic_addr: SocketAddr,
    /// The HTTP port's bound address (its origins are allowed by default).
    pub http_addr: SocketAddr,
    /// The WebRTC bridge's UDP address, when the bridge runs.
    pub webrtc_addr: Option<SocketAddr>,
    /// TURN listeners and credential minting.
    pub turn: turn::TurnState,
    ids: Mutex<rand::rngs::StdRng>,
}

/// What a reloaded configuration changed in a running gateway ([`Shared::reload`]).
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
pub struct Reloader(Arc<Shared>);

impl Reloader {
    /// Applies a reloaded configuration (the binary does it on SIGHUP). Only the TURN secrets
    /// change while running — they rotate with an overlap: list the new secret first and keep
    /// the old one until the credentials it minted have expired. Everything else in `new` is
    /// compared and reported, not applied.
    pub fn reload(&self, new: &ValidConfig) -> Reload {
        self.0.reload(new)
    }
}

impl Shared {
    fn reload(&self, new: &ValidConfig) -> Reload {
        let turn_secrets = self.turn.rotate(&turn_config(new, self.webrtc_addr));
        let mut rest = new.get().clone();
        rest.turn.secrets.clone_from(&self.config.turn.secrets);
        rest.turn
            .external_secret
            .clone_from(&self.config.turn.external_secret);
        Reload {
            turn_secrets,
            needs_restart: rest != *self.config.get(),
        }
    }

    /// A fresh, random participant id (never 0).
    pub(crate) fn new_participant_id(&self) -> ParticipantId {
        let mut rng = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let id: u64 = rng.random();
            // Ids stay below 2^53 so that JavaScript clients can hold them in a Number.
            let id = id & ((1 << 53) - 1);
            if id != 0 {
                return ParticipantId(id);
            }
        }
    }

    /// Whether a WebTransport request with this `Origin` may open a session.
    pub(crate) fn origin_allowed(&self, origin: Option<&str>) -> bool {
        let wt = &self.config.webtransport;
        let Some(origin) = origin else {
            return wt.allow_missing_origin;
        };
        if wt.allowed_origins.is_empty() {
            let port = self.http_addr.port();
            return origin == format!("http://127.0.0.1:{port}")
                || origin == format!("http://localhost:{port}")
                || origin == format!("https://127.0.0.1:{port}")
                || origin == format!("https://localhost:{port}");
        }
        wt.allowed_origins.iter().any(|o| o == "*" || o == origin)
    }

    /// `host:port` clients use to reach the QUIC port.
    pub(crate) fn public_quic_authority(&self) -> String {
        let addr = self.quic_addr;
        if addr.ip().is_unspecified() {
            format!("127.0.0.1:{}", addr.port())
        } else {
            addr.to_string()
        }
    }

    /// Mints an access token with the minting key.
    pub(crate) fn mint(&self, claims: &AccessClaims) -> Result<String, auth::MintError> {
        self.keys.mint(&self.mint_key, claims)
    }
}

/// Sockets bound before the gateway starts (port 0 in tests, configured ports in production).
#[derive(Debug)]
pub struct Sockets {
    /// The QUIC port.
    pub quic: UdpSocket,
    /// The HTTP port.
    pub http: TcpListener,
    /// The WebRTC bridge's UDP port; required when `webrtc.enabled`, ignored otherwise.
    pub webrtc: Option<UdpSocket>,
    /// The embedded TURN server's listeners (none when it is off).
    pub turn: turn::TurnSockets,
}

impl Sockets {
    /// Binds the addresses of the configuration.
    pub fn bind(config: &ValidConfig) -> std::io::Result<Sockets> {
        let quic = quic::bind_udp(config.quic.listen, config.quic.socket_buffer)?;
        let http = TcpListener::bind(config.http.listen)?;
        http.set_nonblocking(true)?;
        let webrtc = if config.webrtc.enabled {
            Some(quic::bind_udp(
                config.webrtc.listen,
                config.webrtc.socket_buffer,
            )?)
        } else {
            None
        };
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
    shared: Arc<Shared>,
    /// The QUIC port's address.
    pub quic_addr: SocketAddr,
    /// The HTTP port's address.
    pub http_addr: SocketAddr,
    /// The WebRTC bridge's UDP address, when the bridge runs.
    pub webrtc_addr: Option<SocketAddr>,
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
        let shared = parts.shared.clone();
        let quic_addr = sockets.quic.local_addr()?;
        let http_addr = sockets.http.local_addr()?;
        let webrtc_addr = shared.webrtc_addr;
        let stop = shutdown.clone();
        let task = tokio::spawn(serve(parts, sockets, async move { stop.cancelled().await }));
        Ok(Gateway {
            shared,
            quic_addr,
            http_addr,
            webrtc_addr,
            dev_key,
            shutdown,
            task,
        })
    }

    /// The SHA-256 of the certificate served now.
    pub fn cert_fingerprint(&self) -> Fingerprint {
        self.shared.certs.current().fingerprint
    }

    /// `host:port` clients use to reach the QUIC port.
    pub fn public_quic_authority(&self) -> String {
        self.shared.public_quic_authority()
    }

    /// Where the embedded TURN server listens (all `None` when it is off).
    pub fn turn_addrs(&self) -> TurnAddrs {
        self.shared.turn.addrs
    }

    /// TURN credentials for `identity`, valid from `now` (as `POST /v1/turn/credentials` mints
    /// them); an error when no TURN server is configured.
    pub fn turn_credentials(
        &self,
        identity: &str,
        now: SystemTime,
    ) -> Result<TurnCredentials, strait_media::turn::CredentialError> {
        self.shared.turn.mint(identity, now)
    }

    /// The gateway's metrics (what `/metrics` serves).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// Mints an access token with the gateway's minting key.
    pub fn mint(&self, claims: &AccessClaims) -> Result<String, auth::MintError> {
        self.shared.mint(claims)
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
        if self.shared.config.tls.cert.is_some() {
            anyhow::bail!("the certificate comes from files: it is not rotated by the gateway");
        }
        Ok(self
            .shared
            .certs
            .rotate_step(policy, &self.shared.config.tls.dev_names, now)?)
    }

    /// Sessions open now (QUIC, WebTransport and `/ws/rtc`; each holds an admission slot).
    pub fn sessions(&self) -> usize {
        self.shared
            .admission
            .sessions_in_use(self.shared.config.limits.max_sessions)
    }

    /// Waits until at most `n` sessions are open (woken by each session's end, not by a timer).
    pub async fn sessions_at_most(&self, n: usize) {
        loop {
            // Register for the wake-up before looking at the count, so no end is missed.
            let ended = self.shared.admission.changed();
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
        Reloader(self.shared.clone())
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
        self.shared.mint(&claims).unwrap_or_default()
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
    shared: Arc<Shared>,
    worker_task: tokio::task::JoinHandle<()>,
    worker_stop: CancellationToken,
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
    let webrtc = if config.webrtc.enabled {
        let socket = sockets.webrtc.take().ok_or_else(|| {
            anyhow::anyhow!("webrtc.enabled is set but no WebRTC socket was given")
        })?;
        Some(socket)
    } else {
        None
    };
    let webrtc_addr = webrtc.as_ref().map(UdpSocket::local_addr).transpose()?;
    let (worker, worker_task) = worker::spawn(
        &config,
        metrics.clone(),
        seed_rng.random(),
        webrtc,
        worker_stop.clone(),
    )?;
    let admission = Admission::new(
        config.limits.max_sessions,
        config.limits.max_sessions_per_ip,
        config.limits.max_handshakes,
    );
    let shared = Arc::new(Shared {
        quic_addr: sockets.quic.local_addr()?,
        http_addr: sockets.http.local_addr()?,
        webrtc_addr,
        turn: turn::TurnState::new(&turn_config(&config, webrtc_addr), &sockets.turn)?,
        config,
        keys,
        mint_key,
        resume,
        metrics,
        registry,
        certs,
        admission,
        drain: CancellationToken::new(),
        worker,
        ids: Mutex::new(rand::rngs::StdRng::from_seed(random_seed()?)),
    });
    Ok((
        Parts {
            shared,
            worker_task,
            worker_stop,
        },
        dev_key,
    ))
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

/// The TURN configuration with this node's WebRTC addresses (each advertised IP with the bound
/// port) added to `media_addresses`, so that the relay reaches the bridge without more settings.
pub(crate) fn turn_config(config: &config::Config, webrtc: Option<SocketAddr>) -> turn::TurnConfig {
    let mut turn = config.turn.clone();
    if let Some(bound) = webrtc {
        let ips = if config.webrtc.public_ips.is_empty() {
            vec![bound.ip()]
        } else {
            config.webrtc.public_ips.clone()
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
        shared,
        worker_task,
        worker_stop,
    } = parts;
    let config = shared.config.clone();

    let server_config = quic::tls::quinn_server_config(shared.certs.clone(), &config)?;
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server_config),
        sockets.quic,
        Arc::new(quinn::TokioRuntime),
    )?;
    let http_listener = tokio::net::TcpListener::from_std(sockets.http)?;
    tracing::info!(
        quic = %endpoint.local_addr()?,
        http = %http_listener.local_addr()?,
        "strait is serving"
    );

    let background = CancellationToken::new();
    let accept = tokio::spawn(quic::frontdoor::accept_loop(
        shared.clone(),
        endpoint.clone(),
    ));
    let rotation = if config.tls.cert.is_none() {
        Some(tokio::spawn(quic::tls::rotation_task(
            shared.certs.clone(),
            config.tls.dev_names.clone(),
            background.clone(),
        )))
    } else {
        None
    };
    let http_stop = background.clone();
    let router = http::router(shared.clone());
    let http_task = tokio::spawn(async move {
        // The peer address is what `/ws/rtc` admits WebSocket sessions by.
        let router = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(http_listener, router)
            .with_graceful_shutdown(async move { http_stop.cancelled().await })
            .await
    });
    let turn_task = if config.turn.enabled {
        let tls = turn::tls_config(shared.certs.clone())?;
        Some(tokio::spawn(turn::serve(
            shared.clone(),
            sockets.turn,
            Some(tls),
            background.clone(),
        )))
    } else {
        None
    };

    shutdown.await;

    // Drain: refuse new sessions, go-away to everyone, wait for them up to the deadline.
    tracing::info!("draining");
    shared.drain.cancel();
    let deadline = Instant::now() + config.shutdown.drain_deadline;
    let sessions = shared.admission.clone();
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
    // Every session has ended or been closed: stop the worker.
    worker_stop.cancel();
    drop(shared);
    let _ = worker_task.await;
    tracing::info!("stopped");
    Ok(())
}
