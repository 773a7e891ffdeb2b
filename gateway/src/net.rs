//! Socket helpers shared by the QUIC port, the WebRTC bridge and the TURN listeners.

use std::net::{SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// Binds a UDP socket to `addr` with `buffer` bytes of receive and send buffer (as much of it
/// as the system allows); dual stack when `addr` is `[::]`.
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
