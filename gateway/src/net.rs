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

/// The process's open-files limit after [`raise_open_files_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit at start.
    pub before: u64,
    /// The soft limit now (the hard limit, where raising it was allowed).
    pub now: u64,
    /// What the configured caps can take at once: HTTP connections, sessions, TURN's
    /// connections and relay sockets, and a margin for the gateway's own sockets.
    pub wanted: u64,
}

/// Raises the soft open-files limit to the hard limit (what an unprivileged process may do):
/// every session, HTTP connection, TURN connection and relay allocation holds a descriptor,
/// and the usual default soft limit of 1024 is far below the configured caps. Where the system
/// does not allow it (or has no such limit), the limit stays as it was.
pub fn raise_open_files_limit(config: &crate::config::Config) -> OpenFiles {
    let (before, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((0, 0));
    let now = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(before);
    let turn = if config.turn.enabled {
        config.turn.max_stream_connections + config.turn.max_allocations
    } else {
        0
    };
    let wanted = (config.http.max_connections + config.limits.max_sessions + turn + 256) as u64;
    OpenFiles {
        before,
        now,
        wanted,
    }
}
