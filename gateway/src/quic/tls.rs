//! TLS for the QUIC port: the certificate store, the rustls and quinn server configurations, and
//! the rotation of development certificates.
//!
//! The store is a rustls certificate resolver whose current certificate can be swapped at any time;
//! connections already established keep the certificate they were handshaken with, new ones get
//! the new one. In development mode a background task follows `strait_certs::RotationPolicy`:
//! it mints the next certificate days before the current one expires, publishes both hashes at
//! `/v1/cert-hashes` (browsers pin them through `serverCertificateHashes`), then switches.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use strait_certs::{
    Fingerprint, Identity, IdentityInfo, RotationAction, RotationPolicy, RotationState,
};
use thiserror::Error;

use crate::config::{CongestionController, ValidConfig};

/// ALPN of WebTransport (HTTP/3).
pub(crate) const ALPN_H3: &[u8] = b"h3";

/// Why TLS could not be set up.
#[derive(Debug, Error)]
#[non_exhaustive]
pub(crate) enum TlsError {
    /// The configured certificate or key could not be loaded.
    #[error(transparent)]
    Load(#[from] strait_certs::LoadError),
    /// The development certificate could not be made.
    #[error(transparent)]
    Generate(#[from] strait_certs::GenerateError),
    /// rustls refused the key or the configuration.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    /// quinn refused the rustls configuration.
    #[error("quic crypto: {0}")]
    Quic(String),
}

/// The process-wide crypto provider: ring, explicitly (never the process default).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates the gateway serves and publishes.
#[derive(Debug)]
pub(crate) struct CertStore {
    provider: Arc<CryptoProvider>,
    inner: RwLock<StoreInner>,
}

#[derive(Debug)]
struct StoreInner {
    serving: Arc<CertifiedKey>,
    state: RotationState<Identity>,
}

impl CertStore {
    /// A store serving `identity`.
    pub(crate) fn new(identity: Identity) -> Result<Arc<CertStore>, TlsError> {
        let provider = provider();
        let serving = certified_key(&provider, &identity)?;
        Ok(Arc::new(CertStore {
            provider,
            inner: RwLock::new(StoreInner {
                serving,
                state: RotationState::new(identity),
            }),
        }))
    }

    /// The certificate being served.
    pub(crate) fn current(&self) -> IdentityInfo {
        self.read().state.current().info()
    }

    /// SHA-256 hashes of every certificate a client may meet now or soon: the current one, the
    /// next one once minted, and the previous one until it expires.
    pub(crate) fn published(&self, policy: &RotationPolicy, now: SystemTime) -> Vec<Fingerprint> {
        self.read().state.decide(policy, now).publish
    }

    /// Applies one step of the rotation policy; returns when to call again.
    pub(crate) fn rotate_step(
        &self,
        policy: &RotationPolicy,
        names: &[String],
        now: SystemTime,
    ) -> Result<SystemTime, TlsError> {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let decision = inner.state.decide(policy, now);
        match decision.action {
            RotationAction::Wait => {}
            RotationAction::MintNext => {
                let next = Identity::generate_dev(&policy.dev_config(names.to_vec()), now)?;
                tracing::info!(fingerprint = %next.fingerprint(), "minted the next development certificate");
                inner.state.install_next(next);
            }
            RotationAction::PromoteNext if inner.state.promote_next() => {
                let serving = certified_key(&self.provider, inner.state.current())?;
                inner.serving = serving;
                tracing::info!(fingerprint = %inner.state.current().fingerprint(), "serving the new development certificate");
            }
            RotationAction::DropPrevious => {
                inner.state.drop_previous();
            }
            _ => {}
        }
        // Another step may be due at once (for example mint right after a promote).
        let again = inner.state.decide(policy, now);
        Ok(if matches!(again.action, RotationAction::Wait) {
            again.wake_at
        } else {
            now
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, StoreInner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.read().serving.clone())
    }
}

fn certified_key(
    provider: &CryptoProvider,
    identity: &Identity,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let (chain, key) = identity.to_parts();
    let signer = provider.key_provider.load_private_key(key)?;
    Ok(Arc::new(CertifiedKey::new(chain, signer)))
}

/// Loads the configured certificate, or makes a development one.
pub(crate) fn initial_identity(
    config: &ValidConfig,
    now: SystemTime,
) -> Result<Identity, TlsError> {
    match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => Ok(Identity::from_pem_files(cert, key, now)?),
        _ => {
            let policy = RotationPolicy::default();
            Ok(Identity::generate_dev(
                &policy.dev_config(config.tls.dev_names.clone()),
                now,
            )?)
        }
    }
}

/// The rustls configuration of the QUIC port: TLS 1.3, both ALPNs (and the peer links' when
/// `peers`), certificates from `store`.
pub(crate) fn rustls_config(
    store: Arc<CertStore>,
    peers: bool,
) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![ALPN_H3.to_vec(), strait_protocol::ALPN_NATIVE.to_vec()];
    if peers {
        config.alpn_protocols.push(crate::peer::ALPN_PEER.to_vec());
    }
    Ok(config)
}

/// The quinn server configuration: the rustls configuration plus transport parameters.
pub(crate) fn quinn_server_config(
    store: Arc<CertStore>,
    config: &ValidConfig,
    peers: bool,
) -> Result<quinn::ServerConfig, TlsError> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(rustls_config(store, peers)?)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport_config(config)));
    server.migration(true);
    Ok(server)
}

/// Transport parameters shared by every connection.
pub(crate) fn transport_config(config: &ValidConfig) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(config.quic.keep_alive));
    t.max_idle_timeout(quinn::IdleTimeout::try_from(config.quic.idle_timeout).ok());
    t.datagram_send_buffer_size(config.quic.datagram_send_buffer);
    t.datagram_receive_buffer_size(Some(config.quic.datagram_send_buffer));
    // Native sessions use one bidirectional stream; WebTransport adds the CONNECT stream and a
    // few HTTP/3 unidirectional streams. Anything above this is refused by flow control.
    t.max_concurrent_bidi_streams(8u32.into());
    t.max_concurrent_uni_streams(16u32.into());
    // What a client may make the gateway buffer: stream data it has not read yet (anything
    // before the `ClientHello`, every stream but the control stream) is bounded by these
    // windows, for the connection as a whole too (quinn's default there is unlimited). Outgoing
    // stream data waiting for the client (the control stream) is bounded alike.
    t.stream_receive_window(varint(config.quic.stream_receive_window));
    t.receive_window(varint(config.quic.receive_window));
    t.send_window(config.quic.send_window as u64);
    // The configured controller decides; a tap keeps each packet's acknowledgement for the
    // session's bandwidth estimate (`quic.ack_feedback`) and keeps random loss from shrinking
    // the window (`quic.loss_tolerance`; see `acks`).
    let controller: Arc<dyn quinn::congestion::ControllerFactory + Send + Sync> =
        match config.quic.congestion_controller {
            CongestionController::Cubic => Arc::new(quinn::congestion::CubicConfig::default()),
            CongestionController::Bbr => Arc::new(quinn::congestion::BbrConfig::default()),
            CongestionController::NewReno => Arc::new(quinn::congestion::NewRenoConfig::default()),
        };
    if config.quic.ack_feedback || config.quic.loss_tolerance > 0.0 {
        t.congestion_controller_factory(Arc::new(super::acks::AckTapFactory::new(
            controller,
            config.quic.ack_feedback,
            config.quic.loss_tolerance,
        )));
    } else {
        t.congestion_controller_factory(controller);
    }
    if config.quic.ack_eliciting_threshold > 0 {
        let mut ack = quinn::AckFrequencyConfig::default();
        ack.ack_eliciting_threshold(config.quic.ack_eliciting_threshold.into())
            .max_ack_delay(Some(config.quic.ack_max_delay));
        t.ack_frequency_config(Some(ack));
    }
    t
}

/// A window size as a QUIC varint (the configuration bounds it far below the varint's range).
fn varint(bytes: usize) -> quinn::VarInt {
    quinn::VarInt::from_u64(bytes as u64).unwrap_or(quinn::VarInt::MAX)
}

/// Runs the development-certificate rotation until `shutdown` resolves.
pub(crate) async fn rotation_task(
    store: Arc<CertStore>,
    names: Vec<String>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let policy = RotationPolicy::default();
    loop {
        let now = SystemTime::now();
        let wake = match store.rotate_step(&policy, &names, now) {
            Ok(at) => at,
            Err(e) => {
                tracing::warn!(error = %e, "certificate rotation failed; retrying in a minute");
                now + Duration::from_secs(60)
            }
        };
        let wait = wake
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .min(Duration::from_secs(3600));
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Hashes in the form `/v1/cert-hashes` serves them.
pub(crate) fn hashes_json(fingerprints: &[Fingerprint]) -> Vec<CertHash> {
    fingerprints
        .iter()
        .map(|f| CertHash {
            algorithm: "sha-256",
            value: f.to_base64(),
            hex: f.to_hex(),
        })
        .collect()
}

/// One published certificate hash.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct CertHash {
    /// Always `sha-256`, as `serverCertificateHashes` expects.
    pub algorithm: &'static str,
    /// The hash, base64 (decode to bytes for `serverCertificateHashes`).
    pub value: String,
    /// The same hash in lowercase hex.
    pub hex: String,
}

/// The rustls configuration of the TURN TLS listener: the gateway's certificates, TLS 1.2 and 1.3,
/// no ALPN (RFC 7443's `stun.turn` is optional and browsers do not send it).
pub(crate) fn turn_tls_config(store: Arc<CertStore>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(store);
    Ok(Arc::new(config))
}
