//! The QUIC port: one UDP socket and one `quinn::Endpoint` for WebTransport (ALPN `h3`) and
//! native sessions (ALPN `strait/1`).
//!
//! - [`frontdoor`]: admission, the handshake and the dispatch by ALPN;
//! - [`link`]: a session's connection, whichever of the two carries it;
//! - [`tls`]: certificates served (and rotated in development mode), the rustls and quinn
//!   configurations.

use std::net::{SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

pub(crate) mod frontdoor;
pub(crate) mod link;
pub(crate) mod tls;

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
