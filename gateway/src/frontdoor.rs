//! The QUIC front door: one UDP socket, one `quinn::Endpoint`, two ALPNs.
//!
//! Admission happens before work: an `Incoming` is refused outright when the node is draining or
//! full, asked to prove its address with a Retry when many handshakes are in flight, and only then
//! accepted under a handshake permit. After the handshake the connection is dispatched by ALPN:
//! `strait/1` becomes a native session at once; `h3` is handed to wtransport, whose session request
//! is checked (path, `Origin` against the allow-list) before anything is allocated for it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::Shared;
use crate::link::Link;
use crate::metrics::RefusalReason;
use crate::tls::ALPN_H3;

/// Binds the UDP socket of the QUIC port with large buffers.
pub fn bind_udp(addr: SocketAddr, buffer: usize) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Dual stack when bound to `[::]`.
        let _ = socket.set_only_v6(false);
    }
    if let Err(e) = socket.set_recv_buffer_size(buffer) {
        tracing::debug!(error = %e, "could not raise SO_RCVBUF");
    }
    if let Err(e) = socket.set_send_buffer_size(buffer) {
        tracing::debug!(error = %e, "could not raise SO_SNDBUF");
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Per-node and per-IP session counts. A permit is held for the whole life of a session.
#[derive(Debug)]
pub struct Admission {
    sessions: Arc<Semaphore>,
    handshakes: Arc<Semaphore>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_per_ip: usize,
    /// Woken whenever a session ends (the drain waits on it).
    ended: tokio::sync::Notify,
}

/// Held while a session lives; releases its slots when dropped.
#[derive(Debug)]
pub struct SessionPermit {
    _node: OwnedSemaphorePermit,
    ip: IpAddr,
    admission: Arc<Admission>,
}

impl Drop for SessionPermit {
    fn drop(&mut self) {
        let mut map = self
            .admission
            .per_ip
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
        drop(map);
        self.admission.ended.notify_waiters();
    }
}

impl Admission {
    /// Limits from the configuration.
    pub fn new(max_sessions: usize, max_per_ip: usize, max_handshakes: usize) -> Arc<Admission> {
        Arc::new(Admission {
            sessions: Arc::new(Semaphore::new(max_sessions)),
            handshakes: Arc::new(Semaphore::new(max_handshakes)),
            per_ip: Mutex::new(HashMap::new()),
            max_per_ip,
            ended: tokio::sync::Notify::new(),
        })
    }

    /// Takes a session slot for `ip`, or says which limit is reached.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<SessionPermit, RefusalReason> {
        let node = self
            .sessions
            .clone()
            .try_acquire_owned()
            .map_err(|_| RefusalReason::Sessions)?;
        let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let count = map.entry(ip).or_insert(0);
        if *count >= self.max_per_ip {
            return Err(RefusalReason::SessionsPerIp);
        }
        *count += 1;
        drop(map);
        Ok(SessionPermit {
            _node: node,
            ip,
            admission: self.clone(),
        })
    }

    /// Sessions (and connections being admitted) now, given the configured maximum.
    pub fn sessions_in_use(&self, max: usize) -> usize {
        max - self.sessions.available_permits()
    }

    /// Resolves when a session ends. Register before checking the count (see `Notify`).
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.ended.notified()
    }

    /// Handshakes in progress.
    pub fn handshakes_in_progress(&self, max: usize) -> usize {
        max - self.handshakes.available_permits()
    }
}

/// Accepts connections until the endpoint is closed, refusing them while the gateway drains.
pub async fn accept_loop(shared: Arc<Shared>, endpoint: quinn::Endpoint) {
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
        let permit = match shared.admission.admit(ip) {
            Ok(p) => p,
            Err(reason) => {
                shared.metrics.refuse(reason);
                incoming.refuse();
                continue;
            }
        };
        let in_progress = shared.admission.handshakes_in_progress(max_handshakes);
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
        let Ok(handshake) = shared.admission.handshakes.clone().try_acquire_owned() else {
            shared.metrics.refuse(RefusalReason::Handshakes);
            incoming.refuse();
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let link = handshake_and_dispatch(&shared, incoming).await;
            drop(handshake);
            if let Some(link) = link {
                crate::session::run(shared, link, started).await;
            }
            drop(permit);
        });
    }
}

async fn handshake_and_dispatch(shared: &Arc<Shared>, incoming: quinn::Incoming) -> Option<Link> {
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
    let timeout = shared.config.session.hello_timeout;
    match alpn.as_deref() {
        Some(p) if p == strait_protocol::ALPN_NATIVE => match connecting.await {
            Ok(connection) => Some(Link::Quic(connection)),
            Err(e) => {
                tracing::debug!(error = %e, "handshake failed");
                shared.metrics.refuse(RefusalReason::Handshake);
                None
            }
        },
        Some(p) if p == ALPN_H3 => {
            let future =
                wtransport::endpoint::IncomingSessionFuture::with_quic_connecting(connecting);
            let request = match tokio::time::timeout(timeout, future).await {
                Ok(Ok(request)) => request,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "webtransport session request failed");
                    shared.metrics.refuse(RefusalReason::Handshake);
                    return None;
                }
                Err(_) => {
                    shared.metrics.refuse(RefusalReason::Handshake);
                    return None;
                }
            };
            if request.path() != shared.config.webtransport.path {
                shared.metrics.refuse(RefusalReason::Path);
                request.not_found().await;
                return None;
            }
            if !shared.origin_allowed(request.origin()) {
                shared.metrics.refuse(RefusalReason::Origin);
                request.forbidden().await;
                return None;
            }
            match request.accept().await {
                Ok(connection) => Some(Link::WebTransport(connection)),
                Err(e) => {
                    tracing::debug!(error = %e, "webtransport accept failed");
                    None
                }
            }
        }
        _ => {
            shared.metrics.refuse(RefusalReason::Alpn);
            None
        }
    }
}
