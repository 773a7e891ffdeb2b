//! The QUIC front door: one UDP socket, one `quinn::Endpoint`, two ALPNs for sessions (and a
//! third for the links between nodes, `strait-peer/1`, when `cluster.peer_secret` is set).
//!
//! Admission happens before work: an `Incoming` is refused outright when the node is draining or
//! full, asked to prove its address with a Retry when many handshakes are in flight, and only then
//! accepted under a handshake permit. After the handshake the connection is dispatched by ALPN:
//! `strait/1` becomes a native session at once; `h3` is handed to wtransport, whose session request
//! is checked (path, `Origin` against the allow-list) before anything is allocated for it.

use std::sync::Arc;
use std::time::Instant;

use std::net::SocketAddr;

use super::link::Link;
use super::tls::ALPN_H3;
use crate::metrics::RefusalReason;
use crate::session::{Admission, SessionContext};

/// What the front door needs: the sessions it starts, the admission it applies, and the HTTP
/// port (whose origins WebTransport requests may come from by default).
#[derive(Debug)]
pub(crate) struct FrontDoor {
    /// What sessions need.
    pub(crate) sessions: Arc<SessionContext>,
    /// Session and handshake slots.
    pub(crate) admission: Arc<Admission>,
    /// The HTTP port's bound address.
    pub(crate) http_addr: SocketAddr,
    /// The links to other nodes (ALPN `strait-peer/1`).
    pub(crate) peers: Arc<crate::peer::Peers>,
}

impl FrontDoor {
    /// Whether a WebTransport request with this `Origin` may open a session.
    fn origin_allowed(&self, origin: Option<&str>) -> bool {
        self.sessions.config.webtransport.allows_origin(
            origin,
            self.http_addr,
            self.sessions.config.cluster.public_host.as_deref(),
        )
    }
}

/// Accepts connections until the endpoint is closed, refusing them while the gateway drains.
pub(crate) async fn accept_loop(front: Arc<FrontDoor>, endpoint: quinn::Endpoint) {
    let shared = &front.sessions;
    let max_handshakes = shared.config.limits.max_handshakes;
    // The loop ends when the endpoint is closed; while draining it refuses everything.
    while let Some(incoming) = endpoint.accept().await {
        if shared.drain.is_cancelled() {
            shared.metrics.refuse(RefusalReason::Draining);
            incoming.refuse();
            continue;
        }
        let ip = incoming.remote_address().ip();
        // Admission before work: the node's and the source's session counts.
        let permit = match front.admission.admit(ip) {
            Ok(p) => p,
            Err(reason) => {
                shared.metrics.refuse(reason);
                incoming.refuse();
                continue;
            }
        };
        let in_progress = front.admission.handshakes_in_progress(max_handshakes);
        if in_progress >= shared.config.quic.retry_above_handshakes
            && !incoming.remote_address_validated()
            && incoming.may_retry()
        {
            // Make the client prove its address before the handshake costs anything.
            drop(permit);
            shared.metrics.retries.inc();
            let _ = incoming.retry();
            continue;
        }
        let Ok(handshake) = front.admission.handshake() else {
            shared.metrics.refuse(RefusalReason::Handshakes);
            incoming.refuse();
            continue;
        };
        let front = front.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            // The handshake, and for WebTransport the session request, within the hello
            // timeout: a client that stops half-way (and keeps the connection alive) gives its
            // slots back then rather than at the idle timeout, or never.
            let deadline = started + front.sessions.config.session.hello_timeout;
            let link = match tokio::time::timeout_at(
                deadline.into(),
                handshake_and_dispatch(&front, incoming),
            )
            .await
            {
                Ok(link) => link,
                Err(_) => {
                    // Dropping the handshake closes the connection.
                    tracing::debug!("handshake not completed within the hello timeout");
                    front.sessions.metrics.refuse(RefusalReason::Handshake);
                    None
                }
            };
            drop(handshake);
            if let Some(link) = link {
                super::session::run(front.sessions.clone(), link, started).await;
            }
            drop(permit);
        });
    }
}

async fn handshake_and_dispatch(front: &FrontDoor, incoming: quinn::Incoming) -> Option<Link> {
    let shared = &front.sessions;
    let mut connecting = match incoming.accept() {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "incoming connection failed");
            shared.metrics.refuse(RefusalReason::Handshake);
            return None;
        }
    };
    let alpn = match connecting.handshake_data().await {
        Ok(data) => data
            .downcast::<quinn::crypto::rustls::HandshakeData>()
            .ok()
            .and_then(|d| d.protocol),
        Err(e) => {
            tracing::debug!(error = %e, "handshake failed");
            shared.metrics.refuse(RefusalReason::Handshake);
            return None;
        }
    };
    match alpn.as_deref() {
        Some(p) if p == strait_protocol::ALPN_NATIVE => match connecting.await {
            Ok(connection) => Some(Link::quic_connection(connection)),
            Err(e) => {
                tracing::debug!(error = %e, "handshake failed");
                shared.metrics.refuse(RefusalReason::Handshake);
                None
            }
        },
        Some(p) if p == ALPN_H3 => {
            let future =
                wtransport::endpoint::IncomingSessionFuture::with_quic_connecting(connecting);
            let request = match future.await {
                Ok(request) => request,
                Err(e) => {
                    tracing::debug!(error = %e, "webtransport session request failed");
                    shared.metrics.refuse(RefusalReason::Handshake);
                    return None;
                }
            };
            if request.path() != shared.config.webtransport.path {
                shared.metrics.refuse(RefusalReason::Path);
                request.not_found().await;
                return None;
            }
            if !front.origin_allowed(request.origin()) {
                shared.metrics.refuse(RefusalReason::Origin);
                request.forbidden().await;
                return None;
            }
            match request.accept().await {
                Ok(connection) => Some(Link::webtransport(connection)),
                Err(e) => {
                    tracing::debug!(error = %e, "webtransport accept failed");
                    None
                }
            }
        }
        Some(p) if p == crate::peer::ALPN_PEER => {
            // Another node (offered only with a peer secret): not a session. The link lives on
            // in the node's peers once both proved the secret.
            match connecting.await {
                Ok(connection) => {
                    // A refusal is counted and logged by the peers.
                    let _ = front.peers.accept(connection).await;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "peer handshake failed");
                    shared.metrics.refuse(RefusalReason::Handshake);
                }
            }
            None
        }
        _ => {
            shared.metrics.refuse(RefusalReason::Alpn);
            None
        }
    }
}
