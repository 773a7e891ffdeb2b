//! Sending the WebRTC socket's datagrams in batches: one `sendmmsg` system call for up to
//! [`BATCH`] datagrams, whoever they go to.
//!
//! One forwarded packet becomes a datagram for every WebRTC subscriber of its track, all from the
//! bridge's one socket to different addresses, so GSO (one destination per call) does not apply
//! and `quinn-udp` 0.5 sends one destination per call too; `sendmmsg` takes them all at once.
//! The socket is non-blocking and nothing waits: a datagram the kernel does not take (a full
//! socket buffer) is dropped and counted, as `try_send_to` did for each datagram before. Other
//! systems than Linux send one datagram per call.

use strait_media::webrtc::Transmit;

/// Most datagrams per system call (the kernel's `UIO_MAXIOV` is 1024; 64 keeps one batch's
/// headers small and a fan-out to 100 peers in two calls).
pub(super) const BATCH: usize = 64;

/// Reused state of the batched sends.
pub(super) struct BatchSender {
    batch: Vec<Transmit>,
    #[cfg(target_os = "linux")]
    headers: nix::sys::socket::MultiHeaders<nix::sys::socket::SockaddrStorage>,
    #[cfg(target_os = "linux")]
    addrs: Vec<Option<nix::sys::socket::SockaddrStorage>>,
}

impl std::fmt::Debug for BatchSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchSender")
            .field("queued", &self.batch.len())
            .finish_non_exhaustive()
    }
}

impl BatchSender {
    pub(super) fn new() -> BatchSender {
        BatchSender {
            batch: Vec::with_capacity(BATCH),
            #[cfg(target_os = "linux")]
            headers: nix::sys::socket::MultiHeaders::preallocate(BATCH, None),
            #[cfg(target_os = "linux")]
            addrs: Vec::with_capacity(BATCH),
        }
    }

    /// Sends every datagram `next` gives from `socket`, [`BATCH`] at a time; returns how many
    /// the kernel refused (dropped).
    pub(super) fn send_all(
        &mut self,
        socket: &tokio::net::UdpSocket,
        mut next: impl FnMut() -> Option<Transmit>,
    ) -> u64 {
        let mut dropped = 0;
        loop {
            self.batch.clear();
            while self.batch.len() < BATCH {
                match next() {
                    Some(t) => self.batch.push(t),
                    None => break,
                }
            }
            if self.batch.is_empty() {
                return dropped;
            }
            dropped += self.send_batch(socket);
        }
    }

    #[cfg(target_os = "linux")]
    fn send_batch(&mut self, socket: &tokio::net::UdpSocket) -> u64 {
        use std::io::IoSlice;
        use std::os::fd::AsRawFd;

        use nix::sys::socket::{MsgFlags, SockaddrStorage, sendmmsg};

        let mut dropped = 0;
        let mut at = 0;
        // Each turn sends at least one datagram or drops one: at most `BATCH` turns.
        while at < self.batch.len() {
            let rest = &self.batch[at..];
            let slices: Vec<[IoSlice<'_>; 1]> =
                rest.iter().map(|t| [IoSlice::new(&t.bytes)]).collect();
            self.addrs.clear();
            self.addrs
                .extend(rest.iter().map(|t| Some(SockaddrStorage::from(t.to))));
            let headers = &mut self.headers;
            let addrs = &self.addrs;
            let sent = socket.try_io(tokio::io::Interest::WRITABLE, || {
                sendmmsg(
                    socket.as_raw_fd(),
                    headers,
                    &slices,
                    addrs,
                    [],
                    MsgFlags::empty(),
                )
                .map(Iterator::count)
                .map_err(std::io::Error::from)
            });
            match sent {
                Ok(n) if n > 0 => at += n,
                // The first datagram was refused: it is dropped, the rest tried again.
                _ => {
                    dropped += 1;
                    at += 1;
                }
            }
        }
        dropped
    }

    #[cfg(not(target_os = "linux"))]
    fn send_batch(&mut self, socket: &tokio::net::UdpSocket) -> u64 {
        let mut dropped = 0;
        for t in &self.batch {
            if socket.try_send_to(&t.bytes, t.to).is_err() {
                dropped += 1;
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[tokio::test]
    async fn datagrams_to_many_peers_leave_in_batches_and_all_arrive() {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let from = socket.local_addr().unwrap();
        let mut peers = Vec::new();
        for _ in 0..3 {
            peers.push(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        }
        // 150 datagrams (three batches), round-robin to the three peers.
        let mut queue: std::collections::VecDeque<Transmit> = (0..150u8)
            .map(|i| Transmit {
                from,
                to: peers[usize::from(i) % 3].local_addr().unwrap(),
                bytes: Bytes::from(vec![i; 100]),
            })
            .collect();
        let mut sender = BatchSender::new();
        // As in the driver, whose socket the runtime has long seen writable.
        socket.writable().await.unwrap();
        let dropped = sender.send_all(&socket, || queue.pop_front());
        assert_eq!(dropped, 0);
        for (p, peer) in peers.iter().enumerate() {
            let mut buf = [0u8; 200];
            for k in 0..50u8 {
                let (n, src) = peer.recv_from(&mut buf).await.unwrap();
                assert_eq!(src, from);
                assert_eq!(n, 100);
                assert_eq!(buf[0], k * 3 + p as u8, "in order, to the right peer");
            }
        }
    }
}
