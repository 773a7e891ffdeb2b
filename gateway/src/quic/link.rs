//! A session's connection, whatever carries it: a raw QUIC connection (ALPN `strait/1`) or a
//! WebTransport session over HTTP/3. Both give a control stream, datagrams and the QUIC
//! connection's facts (address, RTT, congestion window); the rest of the gateway does not care
//! which it is.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use strait_protocol::{ErrorCode, datagram};
use tokio::io::AsyncRead;

use crate::metrics::Transport;
use crate::worker::hub::ConnId;
use crate::worker::{Connection, DatagramSendError};

/// The writing half of a control stream. Concrete (not a boxed writer) so that the session can
/// wait until the client has acknowledged its last frames before the connection closes: closing a
/// QUIC connection discards stream data not yet delivered, and an `Error` that explains a close
/// must not be lost that way.
#[derive(Debug)]
pub(crate) enum ControlSend {
    /// Raw QUIC.
    Quic(quinn::SendStream),
    /// WebTransport.
    WebTransport(wtransport::SendStream),
}

impl ControlSend {
    fn quic(&self) -> &quinn::SendStream {
        match self {
            ControlSend::Quic(s) => s,
            ControlSend::WebTransport(s) => s.quic_stream(),
        }
    }

    /// Writes all of `bytes`.
    pub(crate) async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        match self {
            ControlSend::Quic(s) => AsyncWriteExt::write_all(s, bytes).await,
            ControlSend::WebTransport(s) => AsyncWriteExt::write_all(s, bytes).await,
        }
    }

    /// Finishes the stream and waits (at most `limit`) until the client has acknowledged
    /// everything written on it.
    pub(crate) async fn finish_and_wait(&mut self, limit: Duration) {
        let finished = match self {
            ControlSend::Quic(s) => s.finish().is_ok(),
            ControlSend::WebTransport(s) => s.quic_stream_mut().finish().is_ok(),
        };
        if finished {
            let _ = tokio::time::timeout(limit, self.quic().stopped()).await;
        }
    }
}
/// The reading half of a control stream.
pub(crate) type ControlRecv = Box<dyn AsyncRead + Send + Unpin>;

/// A session's connection. Cloning is cheap (both variants are handles).
#[derive(Clone, Debug)]
pub(crate) enum Link {
    /// Raw QUIC.
    Quic(quinn::Connection),
    /// WebTransport (its QUIC connection is `conn.quic_connection()`).
    WebTransport(wtransport::Connection),
}

impl Link {
    /// The underlying QUIC connection.
    pub(crate) fn quic(&self) -> &quinn::Connection {
        match self {
            Link::Quic(c) => c,
            Link::WebTransport(c) => c.quic_connection(),
        }
    }

    /// Which transport this is.
    pub(crate) fn transport(&self) -> Transport {
        match self {
            Link::Quic(_) => Transport::Quic,
            Link::WebTransport(_) => Transport::Webtransport,
        }
    }

    /// Accepts the control stream: the first bidirectional stream the client opens.
    pub(crate) async fn accept_control(&self) -> Result<(ControlSend, ControlRecv), String> {
        match self {
            Link::Quic(c) => {
                let (send, recv) = c.accept_bi().await.map_err(|e| e.to_string())?;
                Ok((ControlSend::Quic(send), Box::new(recv)))
            }
            Link::WebTransport(c) => {
                let (send, recv) = c.accept_bi().await.map_err(|e| e.to_string())?;
                Ok((ControlSend::WebTransport(send), Box::new(recv)))
            }
        }
    }

    /// Receives the next datagram's payload.
    ///
    /// WebTransport datagrams are read straight from the QUIC connection as well as through
    /// wtransport's `receive_datagram`. Alone, that one hands datagrams over one at a time from
    /// its driver task through a one-slot channel; under load the hand-over falls behind and the
    /// backlog turns into seconds of latency (docs/BENCHMARKS.md §5.2). The driver still reads
    /// whenever its slot is free, so both are polled, its channel first: a datagram it took is
    /// delivered before any read after it. A datagram naming another session is skipped.
    pub(crate) async fn read_datagram(&self) -> Result<Bytes, String> {
        match self {
            Link::Quic(c) => c.read_datagram().await.map_err(|e| e.to_string()),
            Link::WebTransport(c) => {
                let session = c.session_id().into_u64();
                loop {
                    tokio::select! {
                        biased;
                        d = c.receive_datagram() => {
                            return d.map(|d| d.payload()).map_err(|e| e.to_string());
                        }
                        d = c.quic_connection().read_datagram() => {
                            let d = d.map_err(|e| e.to_string())?;
                            if let Some(payload) = datagram::strip_webtransport_prefix(&d, session) {
                                return Ok(payload);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Largest datagram payload that can be sent now, if datagrams are on.
    pub(crate) fn max_datagram_size(&self) -> Option<usize> {
        match self {
            Link::Quic(c) => c.max_datagram_size(),
            Link::WebTransport(c) => c.max_datagram_size(),
        }
    }

    /// Sends a datagram without waiting. When the connection's datagram buffer is full, quinn
    /// makes room by dropping the oldest queued datagram (newest wins, which is what live media
    /// wants); that displacement is reported as `Ok(true)` so the caller can count it.
    pub(crate) fn send_datagram(&self, payload: Bytes) -> Result<bool, DatagramSendError> {
        // WebTransport adds its session id (a varint, 1 to 8 bytes) in front of the payload.
        let displaced = self.quic().datagram_send_buffer_space() < payload.len() + 8;
        match self {
            Link::Quic(c) => c.send_datagram(payload).map_err(|e| match e {
                quinn::SendDatagramError::TooLarge => DatagramSendError::TooLarge,
                _ => DatagramSendError::Failed,
            }),
            Link::WebTransport(c) => c.send_datagram(payload).map_err(|e| match e {
                wtransport::error::SendDatagramError::TooLarge => DatagramSendError::TooLarge,
                _ => DatagramSendError::Failed,
            }),
        }
        .map(|()| displaced)
    }

    /// Closes the connection with a protocol error code.
    pub(crate) fn close(&self, code: ErrorCode, reason: &str) {
        let code = quinn::VarInt::from_u32(code.0);
        match self {
            Link::Quic(c) => c.close(code, reason.as_bytes()),
            Link::WebTransport(c) => c.close(
                wtransport::VarInt::from_u32(code.into_inner() as u32),
                reason.as_bytes(),
            ),
        }
    }

    /// Whether the client closed the connection on purpose with `NONE` (a leave).
    pub(crate) fn closed_by_peer_cleanly(&self) -> bool {
        matches!(
            self.quic().close_reason(),
            Some(quinn::ConnectionError::ApplicationClosed(close))
                if close.error_code == quinn::VarInt::from_u32(ErrorCode::NONE.0)
        )
    }

    /// Stable id of the QUIC connection (never the address).
    pub(crate) fn stable_id(&self) -> usize {
        self.quic().stable_id()
    }

    /// The connection's address, bandwidth estimate and traffic so far, read at once (one lock
    /// of the connection, no allocation).
    pub(crate) fn vitals(&self) -> Vitals {
        let quic = self.quic();
        let stats = quic.stats();
        let rtt = stats.path.rtt.max(Duration::from_millis(1));
        let bps = u128::from(stats.path.cwnd) * 8 * 1_000_000 / rtt.as_micros().max(1);
        Vitals {
            remote: quic.remote_address(),
            bandwidth: u64::try_from(bps).unwrap_or(u64::MAX),
            traffic: stats.frame_tx.stream
                + stats.frame_rx.stream
                + stats.frame_tx.datagram
                + stats.frame_rx.datagram,
        }
    }
}

/// What a session watches on its connection ([`Link::vitals`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Vitals {
    /// The client's current address.
    pub remote: SocketAddr,
    /// Estimated sending rate toward the client, bits per second (congestion window per RTT).
    pub bandwidth: u64,
    /// Stream and datagram frames carried so far, both directions: it grows while media or
    /// control messages flow, and stays put on a connection that only keeps itself alive
    /// (pings and acknowledgements are not counted).
    pub traffic: u64,
}

impl Connection for Link {
    fn conn_id(&self) -> ConnId {
        ConnId(self.stable_id() as u64)
    }

    fn transport(&self) -> Transport {
        Link::transport(self)
    }

    fn send_datagram(&self, datagram: Bytes) -> Result<bool, DatagramSendError> {
        Link::send_datagram(self, datagram)
    }

    fn close(&self, code: ErrorCode, reason: &str) {
        Link::close(self, code, reason);
    }
}
