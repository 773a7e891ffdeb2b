//! A session's connection, whatever carries it: a raw QUIC connection (ALPN `strait/1`) or a
//! WebTransport session over HTTP/3. Both give a control stream, datagrams and the QUIC
//! connection's facts (address, the counters its bandwidth estimate is made of); the rest of the
//! gateway does not care which it is.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use strait_media::bwe::QuicSample;
use strait_protocol::ErrorCode;
use strait_protocol::datagram::{self, DatagramPrefix};
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

/// A session's connection. Cloning is cheap (handles).
#[derive(Clone, Debug)]
pub(crate) struct Link {
    kind: Kind,
    /// What goes in front of each datagram (the WebTransport session's quarter stream id).
    prefix: DatagramPrefix,
    /// Datagrams handed to quinn, for counting those it displaced (see [`Link::displaced`]).
    tally: Arc<Tally>,
}

#[derive(Clone, Debug)]
enum Kind {
    /// Raw QUIC.
    Quic(quinn::Connection),
    /// WebTransport (its QUIC connection is `conn.quic_connection()`).
    WebTransport(wtransport::Connection),
}

#[derive(Debug, Default)]
struct Tally {
    /// Datagrams queued on the connection so far.
    queued: AtomicU64,
    /// Of those, counted as displaced so far.
    displaced: AtomicU64,
}

impl Link {
    /// A raw QUIC connection.
    pub(crate) fn quic_connection(connection: quinn::Connection) -> Link {
        Link {
            kind: Kind::Quic(connection),
            prefix: DatagramPrefix::NONE,
            tally: Arc::default(),
        }
    }

    /// A WebTransport session.
    pub(crate) fn webtransport(connection: wtransport::Connection) -> Link {
        let prefix = DatagramPrefix::webtransport(connection.session_id().into_u64());
        Link {
            kind: Kind::WebTransport(connection),
            prefix,
            tally: Arc::default(),
        }
    }

    /// The underlying QUIC connection.
    pub(crate) fn quic(&self) -> &quinn::Connection {
        match &self.kind {
            Kind::Quic(c) => c,
            Kind::WebTransport(c) => c.quic_connection(),
        }
    }

    /// Which transport this is.
    pub(crate) fn transport(&self) -> Transport {
        match &self.kind {
            Kind::Quic(_) => Transport::Quic,
            Kind::WebTransport(_) => Transport::Webtransport,
        }
    }

    /// Accepts the control stream: the first bidirectional stream the client opens.
    pub(crate) async fn accept_control(&self) -> Result<(ControlSend, ControlRecv), String> {
        match &self.kind {
            Kind::Quic(c) => {
                let (send, recv) = c.accept_bi().await.map_err(|e| e.to_string())?;
                Ok((ControlSend::Quic(send), Box::new(recv)))
            }
            Kind::WebTransport(c) => {
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
        match &self.kind {
            Kind::Quic(c) => c.read_datagram().await.map_err(|e| e.to_string()),
            Kind::WebTransport(c) => {
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
        match &self.kind {
            Kind::Quic(c) => c.max_datagram_size(),
            Kind::WebTransport(c) => c.max_datagram_size(),
        }
    }

    /// What goes in front of each datagram on this connection.
    pub(crate) fn prefix(&self) -> DatagramPrefix {
        self.prefix
    }

    /// Sends a datagram already framed for this connection ([`prefix`](Self::prefix) first)
    /// without waiting: one lock of the QUIC connection, no copy. When the connection's
    /// datagram buffer is full, quinn makes room by dropping the oldest queued datagram (newest
    /// wins, which is what live media wants); [`displaced`](Self::displaced) counts those.
    pub(crate) fn send_framed(&self, datagram: Bytes) -> Result<(), DatagramSendError> {
        self.quic().send_datagram(datagram).map_err(|e| match e {
            quinn::SendDatagramError::TooLarge => DatagramSendError::TooLarge,
            _ => DatagramSendError::Failed,
        })?;
        self.tally.queued.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Datagrams quinn displaced from the full send buffer since the previous call, from a
    /// look at the connection ([`vitals`](Self::vitals): called when the session looks at its
    /// connection, not per datagram).
    ///
    /// Every datagram queued either was sent in a DATAGRAM frame, is still buffered, or was
    /// displaced. The buffered ones are at most the buffer's used bytes over the smallest
    /// datagram (a media datagram's header and RTP header, 14 bytes; a padding datagram is
    /// larger), so the count never runs ahead of what happened, and it is exact whenever the
    /// buffer is empty, which is most of the time outside congestion. The datagrams are counted
    /// before the connection is read, so that one queued between the two reads is not taken
    /// for displaced.
    pub(crate) fn displaced(&self, vitals: &Vitals) -> u64 {
        const SMALLEST: u64 = 14;
        let buffered = vitals.sample.buffered_bytes.div_ceil(SMALLEST);
        let displaced = vitals
            .queued
            .saturating_sub(vitals.datagrams_sent)
            .saturating_sub(buffered);
        let before = self.tally.displaced.fetch_max(displaced, Ordering::Relaxed);
        displaced.saturating_sub(before)
    }

    /// Closes the connection with a protocol error code.
    pub(crate) fn close(&self, code: ErrorCode, reason: &str) {
        let code = quinn::VarInt::from_u32(code.0);
        match &self.kind {
            Kind::Quic(c) => c.close(code, reason.as_bytes()),
            Kind::WebTransport(c) => c.close(
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

    /// Datagrams queued on the connection so far (an atomic counter: no lock of the
    /// connection).
    pub(crate) fn queued(&self) -> u64 {
        self.tally.queued.load(Ordering::Relaxed)
    }

    /// The acknowledgements of the connection's current path, for its bandwidth estimate
    /// (`None` if its congestion controller is not tapped). A path that changed may have a new
    /// controller: ask again after a migration.
    pub(crate) fn ack_feed(&self) -> Option<super::acks::AckFeed> {
        super::acks::AckFeed::of(self.quic().congestion_state())
    }

    /// The connection's address, traffic so far and the counters of its bandwidth estimate,
    /// read `at` (no allocation). quinn 0.11 has no call that gives them all under one lock of
    /// the connection: its statistics, its address and its datagram buffer's free space are three
    /// (taken one after the other, a few microseconds apart, four times a second at most).
    /// `buffer` is the datagram send buffer's configured size (`quic.datagram_send_buffer`).
    pub(crate) fn vitals(&self, buffer: usize, at: Instant) -> Vitals {
        let quic = self.quic();
        let queued = self.tally.queued.load(Ordering::Relaxed);
        let stats = quic.stats();
        let remote = quic.remote_address();
        let buffered = buffer.saturating_sub(quic.datagram_send_buffer_space());
        let path = &stats.path;
        Vitals {
            remote,
            traffic: stats.frame_tx.stream
                + stats.frame_rx.stream
                + stats.frame_tx.datagram
                + stats.frame_rx.datagram,
            sample: QuicSample {
                at,
                sent_bytes: stats.udp_tx.bytes,
                lost_bytes: path.lost_bytes,
                sent_packets: path.sent_packets,
                lost_packets: path.lost_packets,
                srtt: path.rtt,
                min_rtt: path.min_rtt,
                cwnd: path.cwnd,
                congestion_events: path.congestion_events,
                buffered_bytes: u64::try_from(buffered).unwrap_or(u64::MAX),
            },
            queued,
            datagrams_sent: stats.frame_tx.datagram,
        }
    }
}

/// What a session watches on its connection ([`Link::vitals`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Vitals {
    /// The client's current address.
    pub remote: SocketAddr,
    /// Stream and datagram frames carried so far, both directions: it grows while media or
    /// control messages flow, and stays put on a connection that only keeps itself alive
    /// (pings and acknowledgements are not counted).
    pub traffic: u64,
    /// The counters the connection's bandwidth estimate is made of
    /// ([`QuicEstimator`](strait_media::bwe::QuicEstimator)).
    pub sample: QuicSample,
    /// Datagrams handed to quinn so far (for [`Link::displaced`]).
    pub queued: u64,
    /// DATAGRAM frames sent so far.
    pub datagrams_sent: u64,
}

impl Connection for Link {
    fn conn_id(&self) -> ConnId {
        ConnId(self.stable_id() as u64)
    }

    fn transport(&self) -> Transport {
        Link::transport(self)
    }

    fn prefix(&self) -> DatagramPrefix {
        self.prefix
    }

    fn send_datagram(&self, datagram: Bytes) -> Result<(), DatagramSendError> {
        self.send_framed(datagram)
    }

    fn close(&self, code: ErrorCode, reason: &str) {
        Link::close(self, code, reason);
    }
}
