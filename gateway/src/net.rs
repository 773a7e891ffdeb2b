//! Socket helpers shared by the QUIC port, the WebRTC bridge and the TURN listeners.

use std::net::{SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// Binds a UDP socket to `addr` with `buffer` bytes of receive and send buffer (as much of it
/// as the system allows); dual stack when `addr` is `[::]`.
pub fn bind_udp(addr: SocketAddr, buffer: usize) -> std::io::Result<UdpSocket> {
    bind_udp_with(addr, buffer, false)
}

/// [`bind_udp`], with `SO_REUSEPORT` when `reuse_port` (several sockets on one port; the kernel
/// spreads datagrams over them by the hash of their addresses).
fn bind_udp_with(addr: SocketAddr, buffer: usize, reuse_port: bool) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
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

/// Binds the WebRTC bridge's sockets: one per media worker, with `buffer` bytes of buffers.
/// On consecutive ports from `webrtc.listen`'s (each from the OS when that port is 0); with
/// `webrtc.shared_port`, all on that one port with `SO_REUSEPORT` (the first bound decides it
/// when it is 0). None when the bridge is off.
pub fn bind_webrtc(
    config: &crate::config::ValidConfig,
    buffer: usize,
) -> std::io::Result<Vec<UdpSocket>> {
    if !config.webrtc.enabled {
        return Ok(Vec::new());
    }
    let first = config.webrtc.listen;
    let workers = config.media_workers();
    if config.webrtc.shared_port {
        let mut sockets: Vec<UdpSocket> = Vec::with_capacity(workers);
        let mut addr = first;
        for _ in 0..workers {
            let socket = bind_udp_with(addr, buffer, true)?;
            addr = socket.local_addr()?;
            sockets.push(socket);
        }
        return Ok(sockets);
    }
    (0..workers)
        .map(|i| {
            let mut addr = first;
            if first.port() != 0 {
                let port = u16::try_from(usize::from(first.port()) + i).map_err(|_| {
                    std::io::Error::other(format!(
                        "webrtc.listen's port {} leaves no room for {workers} consecutive ports",
                        first.port(),
                    ))
                })?;
                addr.set_port(port);
            }
            bind_udp(addr, buffer)
        })
        .collect()
}
