//! Links between the nodes of a cluster: one QUIC connection per pair of nodes, on each node's
//! QUIC port, with its own ALPN (`strait-peer/1`), for rooms that span nodes.
//!
//! # Authentication
//!
//! Nodes prove to each other that they hold the cluster's peer secret (`cluster.peer_secret`),
//! bound to the one TLS session they share: right after the handshake the dialer opens a stream
//! and sends a [`PeerHello`] whose proof is
//! `HMAC-SHA256(secret, "strait-peer/1" ‖ role ‖ exporter ‖ node id)`, where `exporter` is 32
//! bytes of the TLS session's keying material (RFC 5705 / RFC 8446 §7.5, label
//! `EXPORTER-strait-peer`) and `role` tells the dialer's proof from the acceptor's; the acceptor
//! checks it and answers with its own. A node that does not hold the secret cannot make a proof,
//! and a proof made for one TLS session is worth nothing in another: whoever sits in the middle
//! terminates two sessions with two different exporters. This is why the dialer accepts any
//! certificate (every node makes its own, self-signed by default) and verifies only that the
//! handshake was signed with it: the proofs authenticate both ends, which a certificate check
//! would do for the acceptor only.
//!
//! Without a peer secret a node does not offer the ALPN at all: a connection that asks for it
//! fails its TLS handshake (no common application protocol).
//!
//! A hello is at most [`MAX_HELLO`] bytes (length-prefixed, the length read and bounded before
//! anything is allocated), and the exchange must finish within [`HELLO_TIMEOUT`]; anything else
//! closes the connection with a typed error ([`PeerError`]) and counts a refusal
//! (`strait_refusals_total{reason="peer"}`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde::{Deserialize, Serialize};

/// The ALPN of links between nodes.
pub(crate) const ALPN_PEER: &[u8] = b"strait-peer/1";

/// The version of the peer protocol this node speaks.
pub(crate) const PEER_VERSION: u32 = 1;

/// The label of the TLS exporter the proofs are bound to.
const EXPORTER_LABEL: &[u8] = b"EXPORTER-strait-peer";

/// The longest hello, bytes.
pub(crate) const MAX_HELLO: usize = 1024;

/// How long the exchange of hellos may take after the TLS handshake.
pub(crate) const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// The QUIC application error code a node closes a peer connection with when the other does not
/// prove the secret (or breaks the exchange).
const CLOSE_REFUSED: u32 = 0x10;

/// Who makes a proof: the dialer's and the acceptor's differ, so that one cannot be sent back as
/// the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Dialer,
    Acceptor,
}

impl Role {
    fn byte(self) -> u8 {
        match self {
            Role::Dialer => b'd',
            Role::Acceptor => b'a',
        }
    }
}

/// What each node says first on a peer link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PeerHello {
    /// The peer protocol's version ([`PEER_VERSION`]).
    pub(crate) version: u32,
    /// The sender's node id (`cluster.node_id`).
    pub(crate) node: String,
    /// The sender's proof (see the module docs).
    pub(crate) proof: [u8; 32],
}

/// Why a peer link could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// This node has no `cluster.peer_secret`.
    #[error("this node has no cluster.peer_secret: it links to no other node")]
    NoSecret,
    /// The QUIC connection could not be made (the other node does not offer the peer ALPN —
    /// it has no peer secret —, is unreachable, or the handshake failed).
    #[error("the peer connection failed: {0}")]
    Connect(String),
    /// The connection or its stream failed during the exchange.
    #[error("the peer link failed during its hello: {0}")]
    Io(String),
    /// The other node's hello is longer than the bound (1 KiB).
    #[error("the peer's hello is longer than {MAX_HELLO} bytes ({0})")]
    TooLarge(usize),
    /// The other node's hello does not decode.
    #[error("the peer's hello is malformed: {0}")]
    Malformed(String),
    /// The other node speaks another version of the peer protocol.
    #[error("the peer speaks version {0} of the peer protocol, this node {PEER_VERSION}")]
    Version(u32),
    /// The other node's proof is wrong: it does not hold this cluster's peer secret.
    #[error("node {0:?} did not prove the cluster's peer secret")]
    BadProof(String),
    /// The exchange did not finish in time (5 s).
    #[error("the peer's hello did not come within {HELLO_TIMEOUT:?}")]
    Timeout,
}

/// What a proof signs: the ALPN, the role, the session's exporter and the node id.
fn signed(role: Role, exporter: &[u8; 32], node: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(ALPN_PEER.len() + 1 + exporter.len() + node.len());
    message.extend_from_slice(ALPN_PEER);
    message.push(role.byte());
    message.extend_from_slice(exporter);
    message.extend_from_slice(node.as_bytes());
    message
}

/// The proof of `node` in `role` for the TLS session whose exporter is `exporter`.
fn proof(secret: &[u8], role: Role, exporter: &[u8; 32], node: &str) -> [u8; 32] {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, &signed(role, exporter, node));
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Whether `hello` carries the right proof for `role` (compared in constant time).
fn proven(secret: &[u8], role: Role, exporter: &[u8; 32], hello: &PeerHello) -> bool {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    ring::hmac::verify(&key, &signed(role, exporter, &hello.node), &hello.proof).is_ok()
}

fn exporter(connection: &quinn::Connection) -> Result<[u8; 32], PeerError> {
    let mut out = [0u8; 32];
    connection
        .export_keying_material(&mut out, EXPORTER_LABEL, b"")
        .map_err(|e| PeerError::Io(format!("no TLS exporter: {e:?}")))?;
    Ok(out)
}

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_HELLO>()
}

async fn write_hello(send: &mut quinn::SendStream, hello: &PeerHello) -> Result<(), PeerError> {
    let body = bincode::serde::encode_to_vec(hello, bincode_config())
        .map_err(|e| PeerError::Malformed(e.to_string()))?;
    let len = u16::try_from(body.len()).map_err(|_| PeerError::TooLarge(body.len()))?;
    let mut frame = Vec::with_capacity(2 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    send.write_all(&frame)
        .await
        .map_err(|e| PeerError::Io(e.to_string()))
}

async fn read_hello(recv: &mut quinn::RecvStream) -> Result<PeerHello, PeerError> {
    let mut len = [0u8; 2];
    recv.read_exact(&mut len)
        .await
        .map_err(|e| PeerError::Io(e.to_string()))?;
    let len = usize::from(u16::from_be_bytes(len));
    if len > MAX_HELLO {
        return Err(PeerError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| PeerError::Io(e.to_string()))?;
    let (hello, used): (PeerHello, usize) =
        bincode::serde::decode_from_slice(&body, bincode_config())
            .map_err(|e| PeerError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(PeerError::Malformed(format!(
            "{} bytes after the hello",
            body.len() - used
        )));
    }
    if hello.version != PEER_VERSION {
        return Err(PeerError::Version(hello.version));
    }
    Ok(hello)
}

/// An authenticated link to another node.
#[derive(Debug, Clone)]
pub struct PeerLink {
    /// The other node's id, as it proved it.
    pub node: String,
    /// The connection.
    pub(crate) connection: quinn::Connection,
}

/// This node's side of the peer links: its id and secret, the links up now, and the endpoint it
/// dials from (its QUIC port, once it serves).
#[derive(Debug)]
pub(crate) struct Peers {
    node: String,
    metrics: Arc<crate::metrics::Metrics>,
    secret: Option<Vec<u8>>,
    /// The node's QUIC endpoint, once it serves.
    endpoint: tokio::sync::watch::Sender<Option<quinn::Endpoint>>,
    links: Mutex<BTreeMap<String, PeerLink>>,
}

impl Peers {
    /// `node`'s peers, with `secret` (`cluster.peer_secret`; none: no links); refusals are
    /// counted in `metrics`.
    pub(crate) fn new(
        node: String,
        secret: Option<&str>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        Self {
            node,
            metrics,
            secret: secret.map(|s| s.as_bytes().to_vec()),
            endpoint: tokio::sync::watch::Sender::new(None),
            links: Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether this node links to others (it has a peer secret, and offers the ALPN).
    pub(crate) fn enabled(&self) -> bool {
        self.secret.is_some()
    }

    /// The endpoint to dial from: the node's QUIC port.
    pub(crate) fn set_endpoint(&self, endpoint: quinn::Endpoint) {
        self.endpoint.send_replace(Some(endpoint));
    }

    /// The nodes linked now.
    pub(crate) fn linked(&self) -> Vec<String> {
        let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        links.retain(|_, link| link.connection.close_reason().is_none());
        links.keys().cloned().collect()
    }

    fn keep(&self, link: &PeerLink) {
        self.links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(link.node.clone(), link.clone());
    }

    /// Takes a connection that asked for the peer ALPN: checks the dialer's proof, answers with
    /// this node's, and keeps the link. A connection that fails is closed.
    pub(crate) async fn accept(
        &self,
        connection: quinn::Connection,
    ) -> Result<PeerLink, PeerError> {
        let secret = self.secret.as_deref().ok_or(PeerError::NoSecret)?;
        let exchange = async {
            let (mut send, mut recv) = connection
                .accept_bi()
                .await
                .map_err(|e| PeerError::Io(e.to_string()))?;
            let exporter = exporter(&connection)?;
            let theirs = read_hello(&mut recv).await?;
            if !proven(secret, Role::Dialer, &exporter, &theirs) {
                return Err(PeerError::BadProof(theirs.node));
            }
            // Kept before the answer: once the dialer has it, the link is known here (a link
            // whose connection closes is dropped from the list).
            let link = PeerLink {
                node: theirs.node,
                connection: connection.clone(),
            };
            self.keep(&link);
            let ours = PeerHello {
                version: PEER_VERSION,
                node: self.node.clone(),
                proof: proof(secret, Role::Acceptor, &exporter, &self.node),
            };
            write_hello(&mut send, &ours).await?;
            Ok(link)
        };
        let result = within(exchange).await;
        if result.is_err() {
            // Counted before the connection closes: the dialer learns of it by the close.
            self.metrics.refuse(crate::metrics::RefusalReason::Peer);
        }
        refuse_on_error(&connection, result)
    }

    /// Dials the node at `addr`, proves the secret, checks its proof, and keeps the link.
    pub(crate) async fn dial(&self, addr: SocketAddr) -> Result<PeerLink, PeerError> {
        let secret = self.secret.as_deref().ok_or(PeerError::NoSecret)?;
        // A node that is starting serves within moments.
        let mut serving = self.endpoint.subscribe();
        let endpoint = tokio::time::timeout(HELLO_TIMEOUT, serving.wait_for(Option::is_some))
            .await
            .ok()
            .and_then(Result::ok)
            .and_then(|e| e.clone())
            .ok_or_else(|| PeerError::Connect("the node does not serve".into()))?;
        let connection = endpoint
            .connect_with(client_config()?, addr, "strait-peer")
            .map_err(|e| PeerError::Connect(e.to_string()))?
            .await
            .map_err(|e| PeerError::Connect(e.to_string()))?;
        let exchange = async {
            let (mut send, mut recv) = connection
                .open_bi()
                .await
                .map_err(|e| PeerError::Io(e.to_string()))?;
            let exporter = exporter(&connection)?;
            let ours = PeerHello {
                version: PEER_VERSION,
                node: self.node.clone(),
                proof: proof(secret, Role::Dialer, &exporter, &self.node),
            };
            write_hello(&mut send, &ours).await?;
            let theirs = read_hello(&mut recv).await?;
            if !proven(secret, Role::Acceptor, &exporter, &theirs) {
                return Err(PeerError::BadProof(theirs.node));
            }
            Ok(PeerLink {
                node: theirs.node,
                connection: connection.clone(),
            })
        };
        let link = refuse_on_error(&connection, within(exchange).await)?;
        self.keep(&link);
        Ok(link)
    }
}

/// Runs a hello exchange within [`HELLO_TIMEOUT`].
async fn within(
    exchange: impl Future<Output = Result<PeerLink, PeerError>>,
) -> Result<PeerLink, PeerError> {
    tokio::time::timeout(HELLO_TIMEOUT, exchange)
        .await
        .unwrap_or(Err(PeerError::Timeout))
}

/// Closes `connection` when its exchange failed.
fn refuse_on_error(
    connection: &quinn::Connection,
    result: Result<PeerLink, PeerError>,
) -> Result<PeerLink, PeerError> {
    if let Err(e) = &result {
        tracing::warn!(error = %e, remote = %connection.remote_address(), "peer link refused");
        connection.close(CLOSE_REFUSED.into(), b"peer hello refused");
    }
    result
}

/// The client side of a peer link: TLS 1.3 on `ring`, the peer ALPN, any certificate whose key
/// signed the handshake (the proofs authenticate the nodes; see the module docs).
fn client_config() -> Result<quinn::ClientConfig, PeerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(SignedByItsKey {
        algorithms: provider.signature_verification_algorithms,
    });
    let mut crypto = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| PeerError::Connect(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    crypto.alpn_protocols = vec![ALPN_PEER.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(crypto)
        .map_err(|e| PeerError::Connect(e.to_string()))?;
    Ok(quinn::ClientConfig::new(Arc::new(crypto)))
}

/// Accepts any certificate and checks that its key signed the handshake.
#[derive(Debug)]
struct SignedByItsKey {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for SignedByItsKey {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The nodes' proofs over this session's exporter authenticate the link.
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a cluster secret of at least 32 bytes";

    fn hello(node: &str, proof: [u8; 32]) -> PeerHello {
        PeerHello {
            version: PEER_VERSION,
            node: node.into(),
            proof,
        }
    }

    #[test]
    fn a_proof_holds_for_its_secret_role_session_and_node_only() {
        let exporter = [7u8; 32];
        let made = proof(SECRET, Role::Dialer, &exporter, "a");
        assert!(proven(SECRET, Role::Dialer, &exporter, &hello("a", made)));
        // Another secret, the other role, another session, another node: refused.
        assert!(!proven(
            b"another secret, also 32 bytes long!",
            Role::Dialer,
            &exporter,
            &hello("a", made)
        ));
        assert!(!proven(
            SECRET,
            Role::Acceptor,
            &exporter,
            &hello("a", made)
        ));
        assert!(!proven(SECRET, Role::Dialer, &[8u8; 32], &hello("a", made)));
        assert!(!proven(SECRET, Role::Dialer, &exporter, &hello("b", made)));
    }

    #[test]
    fn a_hello_fits_its_bound_and_decodes_back() {
        let h = hello(&"n".repeat(64), [1u8; 32]);
        let body = bincode::serde::encode_to_vec(&h, bincode_config()).unwrap();
        assert!(body.len() < MAX_HELLO, "{}", body.len());
        let (back, _): (PeerHello, usize) =
            bincode::serde::decode_from_slice(&body, bincode_config()).unwrap();
        assert_eq!(back, h);
        // A string longer than the bound inside is refused by the decoder's limit too (the
        // frame's length is bounded before it is read).
        let long = hello(&"n".repeat(2 * MAX_HELLO), [1u8; 32]);
        let body = bincode::serde::encode_to_vec(&long, bincode::config::standard()).unwrap();
        let decoded: Result<(PeerHello, usize), _> =
            bincode::serde::decode_from_slice(&body, bincode_config());
        assert!(decoded.is_err());
    }
}
