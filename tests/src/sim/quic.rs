//! A QUIC connection between two sans-IO quinn-proto endpoints over two simulated [`Link`]s, in
//! virtual time.
//!
//! ```text
//!  server (the gateway side) ──▶ forward link (the narrow one) ──▶ client (the subscriber)
//!  server ◀── reverse link (fast by default) ◀── client
//! ```
//!
//! [`QuicPair::new`] builds both endpoints, connects them and drives the handshake to the end in
//! virtual time. Then the test sends datagrams from the server ([`QuicPair::send_datagram`]),
//! advances time ([`QuicPair::run_until`]), collects what reached the client application
//! ([`QuicPair::take_received`]) and reads the server's transport counters as the gateway's
//! bandwidth estimator would ([`QuicPair::server_sample`]).
//!
//! # Drive contract
//!
//! Nothing happens between calls: `run_until(t)` processes, in time order, every link arrival,
//! every quinn timer and every transmit due up to `t`, then leaves the clock at `t`. Datagrams sent
//! at `now()` leave on the next `run_until`. Every `poll_*` of quinn-proto is drained after every
//! input (the rule of its `Connection` docs). No threads, no sockets, no sleeping.
//!
//! # Determinism
//!
//! The endpoints' RNGs (packet-number skipping, spin bit, key-update period, transport-parameter
//! grease), the links' loss and the publisher are seeded from the pair's seed; rustls gets a fixed
//! clock and a pinned-certificate verifier, so nothing reads the wall clock after the epoch. The
//! certificate is Ed25519 (signatures of a fixed size) and TLS session tickets and QUIC
//! address-validation tokens are off, so the handshake has the same packet sizes every run. What
//! stays random is what cannot be seeded from outside: key shares, nonces and connection-id
//! *values* (ring's and the thread RNG), which change the bytes but never a size or a time. With
//! Cubic or NewReno two runs with the same seed are identical; quinn-proto's BBR seeds its
//! gain-cycle offset from the thread RNG, so BBR runs can differ in detail.
//!
//! # Datagram send buffer
//!
//! quinn-proto's outgoing datagram queue is bounded by `datagram_send_buffer_size` counting, per
//! queued datagram, its payload plus `size_of::<Datagram>()` (32 bytes) of bookkeeping. With
//! [`QuicPairConfig::drop_oldest`] (what `quinn::Connection::send_datagram` does) a full queue
//! drops its oldest datagrams silently; without it the send is refused with
//! `SendDatagramError::Blocked`, which returns the payload. quinn-proto counts neither, so the
//! pair mirrors the queue (lengths in FIFO order, advanced by the `frame_tx.datagram` counter)
//! and counts both in [`DatagramStats`]; a debug assertion checks the mirror against quinn's
//! `send_buffer_space()`.

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use quinn_proto::congestion::{BbrConfig, ControllerFactory, CubicConfig, NewRenoConfig};
use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn_proto::{
    ClientConfig, ConnectError, Connection, ConnectionError, ConnectionHandle, ConnectionStats,
    DatagramEvent, Endpoint, EndpointConfig, Event, NoneTokenStore, SendDatagramError,
    ServerConfig, TimeSource, TransportConfig,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use strait_gateway::{AckFeed, AckTapFactory, DEFAULT_LOSS_TOLERANCE};
use strait_media::bwe::{PacketFate, QuicSample};

use super::link::{Link, LinkConfig, LinkStats};

/// The server's address (198.18.0.0/15, the benchmarking range; nothing is bound).
const SERVER_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)), 4433);
/// The client's address.
const CLIENT_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)), 50000);
/// The name in the server's certificate.
const SERVER_NAME: &str = "strait.sim";
/// The ALPN both sides offer.
const ALPN: &[u8] = b"strait-sim";
/// What rustls and quinn's token code see as the wall clock: 2025-06-15.
const WALL_CLOCK: Duration = Duration::from_secs(1_750_000_000);
/// Rounds of "deliver, handle timers, transmit" at one instant before giving up on quiescence.
const MAX_ROUNDS: usize = 64;
/// Events in a row that do not advance the clock before `run_until` declares the pair stuck.
const MAX_STUCK: u32 = 100_000;
/// quinn-proto's bookkeeping per queued datagram, on top of its payload.
const DATAGRAM_OVERHEAD: usize = size_of::<quinn_proto::Datagram>();

/// The congestion controller of both endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CongestionControl {
    /// quinn-proto's default.
    #[default]
    Cubic,
    /// quinn-proto's BBR (v1; see the module docs on its determinism).
    Bbr,
    /// NewReno.
    NewReno,
}

/// A [`QuicPair`]'s configuration. Defaults: a 1 Mbit/s forward link and a 100 Mbit/s reverse
/// link, 20 ms each way (40 ms RTT), Cubic, the gateway's transport settings (a 64 KiB datagram
/// send buffer with drop-oldest, acknowledgement frequency 10 / 25 ms, random loss kept from the
/// window), a 1400-byte MTU and a
/// 10 s handshake deadline.
#[derive(Debug, Clone, PartialEq)]
pub struct QuicPairConfig {
    /// Server → client: the subscriber's narrow downlink.
    pub forward: LinkConfig,
    /// Client → server: acknowledgements and feedback.
    pub reverse: LinkConfig,
    /// Both endpoints' congestion controller.
    pub congestion: CongestionControl,
    /// quinn's `datagram_send_buffer_size` on both sides, bytes: the gateway's
    /// `quic.datagram_send_buffer` (64 KiB by default; quinn's own default, 1 MiB, holds seconds
    /// of video at a narrow link's rate).
    pub datagram_send_buffer: usize,
    /// Whether a full send buffer drops its oldest datagrams (quinn's `send_datagram`) rather
    /// than refusing the new one.
    pub drop_oldest: bool,
    /// UDP payload size used from the first packet on, at least 1200. MTU discovery is off and
    /// the minimum MTU is set to this too, so quinn's black-hole detection never shrinks it
    /// (queue drops of full-size packets would otherwise look like a black hole).
    pub mtu: u16,
    /// Virtual time the handshake may take.
    pub handshake_timeout: Duration,
    /// The acknowledgement-frequency extension's threshold the server asks of the client (0:
    /// not asked), and its longest delay: the gateway's `quic.ack_eliciting_threshold` and
    /// `quic.ack_max_delay` (10 and 25 ms by default).
    pub ack_frequency: (u32, Duration),
    /// The gateway's `quic.loss_tolerance`: losses that do not shrink the window (0: every
    /// congestion event reaches the controller).
    pub loss_tolerance: f64,
}

impl Default for QuicPairConfig {
    fn default() -> Self {
        Self::new(1_000_000, Duration::from_millis(40))
    }
}

impl QuicPairConfig {
    /// A constant `forward_bps` downlink, a 100 Mbit/s uplink, `rtt` split evenly between the
    /// two directions, and the other defaults.
    pub fn new(forward_bps: u64, rtt: Duration) -> Self {
        Self {
            forward: LinkConfig::constant(forward_bps).delay(rtt / 2),
            reverse: LinkConfig::constant(100_000_000).delay(rtt / 2),
            congestion: CongestionControl::Cubic,
            datagram_send_buffer: 64 * 1024,
            drop_oldest: true,
            mtu: 1400,
            handshake_timeout: Duration::from_secs(10),
            ack_frequency: (10, Duration::from_millis(25)),
            loss_tolerance: DEFAULT_LOSS_TOLERANCE,
        }
    }
}

/// Why a [`QuicPair`] could not be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum SimError {
    /// The configuration is unusable (says why).
    Config(String),
    /// Building the certificate or the TLS configuration failed.
    Crypto(String),
    /// quinn refused to start the connection.
    Connect(ConnectError),
    /// The connection failed during the handshake.
    Handshake(ConnectionError),
    /// The handshake had not finished after this much virtual time.
    HandshakeTimeout(Duration),
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(why) => write!(f, "unusable configuration: {why}"),
            Self::Crypto(why) => write!(f, "tls setup: {why}"),
            Self::Connect(e) => write!(f, "connect: {e}"),
            Self::Handshake(e) => write!(f, "handshake failed: {e}"),
            Self::HandshakeTimeout(after) => write!(f, "handshake not done after {after:?}"),
        }
    }
}

impl std::error::Error for SimError {}

/// The server's datagram sends, as the pair counted them (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DatagramStats {
    /// Datagrams passed to [`QuicPair::send_datagram`].
    pub offered: u64,
    /// Their payload bytes.
    pub offered_bytes: u64,
    /// Sends that returned an error (blocked, too large, unsupported).
    pub refused: u64,
    /// Their payload bytes.
    pub refused_bytes: u64,
    /// Queued datagrams that quinn dropped, oldest first, to make room for newer ones.
    pub dropped_oldest: u64,
    /// Their payload bytes.
    pub dropped_oldest_bytes: u64,
    /// DATAGRAM frames transmitted (quinn's `frame_tx.datagram`).
    pub transmitted: u64,
    /// Datagrams still in quinn's send queue.
    pub queued: u64,
    /// Their payload bytes.
    pub queued_bytes: u64,
}

/// The server's outgoing datagram queue as quinn-proto holds it, mirrored.
#[derive(Debug, Default)]
struct SendQueue {
    lengths: VecDeque<usize>,
    payload: usize,
    /// `frame_tx.datagram` when the mirror was last advanced.
    transmitted: u64,
}

impl SendQueue {
    /// Removes what quinn has transmitted since the last call.
    fn advance(&mut self, transmitted: u64) {
        for _ in self.transmitted..transmitted {
            if let Some(len) = self.lengths.pop_front() {
                self.payload -= len;
            }
        }
        self.transmitted = transmitted;
    }

    fn memory_used(&self) -> usize {
        self.payload + self.lengths.len() * DATAGRAM_OVERHEAD
    }

    /// Datagrams and payload bytes still queued once `transmitted` frames have left.
    fn queued_after(&self, transmitted: u64) -> (usize, usize) {
        let gone =
            usize::try_from(transmitted.saturating_sub(self.transmitted)).unwrap_or(usize::MAX);
        let left = self.lengths.iter().skip(gone);
        (left.clone().count(), left.sum())
    }
}

/// One endpoint with its single connection.
struct Side {
    endpoint: Endpoint,
    conn: Option<(ConnectionHandle, Connection)>,
    timeout: Option<Instant>,
    connected: bool,
    drained: bool,
    lost: Option<ConnectionError>,
    received: Vec<(Instant, Bytes)>,
    buf: Vec<u8>,
}

impl fmt::Debug for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Side")
            .field("connected", &self.connected)
            .field("drained", &self.drained)
            .field("lost", &self.lost)
            .field("timeout", &self.timeout)
            .field("received", &self.received.len())
            .finish_non_exhaustive()
    }
}

impl Side {
    fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            conn: None,
            timeout: None,
            connected: false,
            drained: false,
            lost: None,
            received: Vec::new(),
            buf: Vec::new(),
        }
    }

    fn connection(&self) -> Option<&Connection> {
        self.conn.as_ref().map(|(_, conn)| conn)
    }

    /// A UDP datagram from `remote` reached this endpoint at `now`.
    fn handle_packet(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        data: BytesMut,
        out: &mut Link<BytesMut>,
    ) {
        self.buf.clear();
        match self
            .endpoint
            .handle(now, remote, None, None, data, &mut self.buf)
        {
            Some(DatagramEvent::NewConnection(incoming)) => {
                self.buf.clear();
                if self.conn.is_some() {
                    // One connection per pair; a second Initial is refused.
                    let transmit = self.endpoint.refuse(incoming, &mut self.buf);
                    out.send(
                        now,
                        transmit.size,
                        BytesMut::from(&self.buf[..transmit.size]),
                    );
                    return;
                }
                match self.endpoint.accept(incoming, now, &mut self.buf, None) {
                    Ok((ch, conn)) => self.conn = Some((ch, conn)),
                    Err(error) => {
                        if let Some(transmit) = error.response {
                            out.send(
                                now,
                                transmit.size,
                                BytesMut::from(&self.buf[..transmit.size]),
                            );
                        }
                        self.lost = Some(error.cause);
                    }
                }
            }
            Some(DatagramEvent::ConnectionEvent(ch, event)) => {
                if let Some((ours, conn)) = &mut self.conn
                    && *ours == ch
                {
                    conn.handle_event(event);
                }
            }
            Some(DatagramEvent::Response(transmit)) => {
                out.send(
                    now,
                    transmit.size,
                    BytesMut::from(&self.buf[..transmit.size]),
                );
            }
            None => {}
        }
    }

    /// Timers due at `now`, then every `poll_*` drained; returns whether anything was sent.
    fn drive(&mut self, now: Instant, out: &mut Link<BytesMut>) -> bool {
        if self.drained {
            return false;
        }
        let Some((ch, conn)) = &mut self.conn else {
            return false;
        };
        if self.timeout.is_some_and(|t| t <= now) {
            conn.handle_timeout(now);
        }
        while let Some(event) = conn.poll_endpoint_events() {
            let drained = event.is_drained();
            if let Some(event) = self.endpoint.handle_event(*ch, event) {
                conn.handle_event(event);
            }
            self.drained |= drained;
        }
        while let Some(event) = conn.poll() {
            match event {
                Event::Connected => self.connected = true,
                Event::ConnectionLost { reason } => self.lost = Some(reason),
                _ => {}
            }
        }
        while let Some(datagram) = conn.datagrams().recv() {
            self.received.push((now, datagram));
        }
        let mut sent = false;
        loop {
            self.buf.clear();
            let Some(transmit) = conn.poll_transmit(now, 1, &mut self.buf) else {
                break;
            };
            out.send(
                now,
                transmit.size,
                BytesMut::from(&self.buf[..transmit.size]),
            );
            sent = true;
        }
        self.timeout = if self.drained {
            None
        } else {
            conn.poll_timeout()
        };
        sent
    }
}

/// A quinn-proto server and client connected over two [`Link`]s in virtual time (see the module
/// docs).
///
/// Method classes: getters (`now`, `server_sample`, `datagram_stats`, `forward`, `reverse`,
/// `server_stats`, `client_stats`, `server`, `client`), mutators that queue work for later
/// (`send_datagram`, `client_send_datagram`, `set_forward_rate`), the one driver (`run_until`,
/// `run_for`) and takers of what arrived (`take_received`, `take_server_received`).
#[derive(Debug)]
pub struct QuicPair {
    config: QuicPairConfig,
    /// The server connection's acknowledgements, once it is up.
    server_feed: Option<AckFeed>,
    epoch: Instant,
    now: Instant,
    server: Side,
    client: Side,
    forward: Link<BytesMut>,
    reverse: Link<BytesMut>,
    send_queue: SendQueue,
    datagrams: DatagramStats,
    stuck: u32,
}

impl QuicPair {
    /// Connects a pair whose virtual clock starts at the current instant: the only reading of the
    /// wall clock, and nothing depends on its value.
    pub fn new(seed: u64, config: QuicPairConfig) -> Result<Self, SimError> {
        Self::with_epoch(Instant::now(), seed, config)
    }

    /// Connects a pair whose virtual clock starts at `epoch` (for a test that shares one base
    /// between several simulated parts); the handshake runs from there.
    pub fn with_epoch(epoch: Instant, seed: u64, config: QuicPairConfig) -> Result<Self, SimError> {
        if config.mtu < 1200 {
            return Err(SimError::Config(format!(
                "mtu {} is below QUIC's 1200",
                config.mtu
            )));
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let server_seed: [u8; 32] = rng.random();
        let client_seed: [u8; 32] = rng.random();
        let forward_seed: u64 = rng.random();
        let reverse_seed: u64 = rng.random();

        let (server_crypto, client_crypto) = crypto()?;
        let transport = Arc::new(transport(&config));
        let mut server_config = ServerConfig::with_crypto(Arc::new(server_crypto));
        server_config
            .transport_config(transport.clone())
            .migration(false)
            .time_source(Arc::new(FixedWallClock));
        server_config.validation_token.sent(0);
        let mut client_config = ClientConfig::new(Arc::new(client_crypto));
        client_config
            .transport_config(transport)
            .token_store(Arc::new(NoneTokenStore));

        let endpoint_config = Arc::new(EndpointConfig::default());
        let server = Endpoint::new(
            endpoint_config.clone(),
            Some(Arc::new(server_config)),
            true,
            Some(server_seed),
        );
        let mut client = Endpoint::new(endpoint_config, None, true, Some(client_seed));
        let (ch, conn) = client
            .connect(epoch, client_config, SERVER_ADDR, SERVER_NAME)
            .map_err(SimError::Connect)?;
        let mut client = Side::new(client);
        client.conn = Some((ch, conn));

        let mut pair = Self {
            forward: Link::new(config.forward.clone(), epoch, forward_seed),
            reverse: Link::new(config.reverse.clone(), epoch, reverse_seed),
            config,
            server_feed: None,
            epoch,
            now: epoch,
            server: Side::new(server),
            client,
            send_queue: SendQueue::default(),
            datagrams: DatagramStats::default(),
            stuck: 0,
        };
        let deadline = epoch + pair.config.handshake_timeout;
        while !(pair.client.connected && pair.server.connected) {
            if let Some(reason) = pair.client.lost.take().or_else(|| pair.server.lost.take()) {
                return Err(SimError::Handshake(reason));
            }
            if !pair.step(deadline) {
                return Err(SimError::HandshakeTimeout(pair.config.handshake_timeout));
            }
        }
        Ok(pair)
    }

    /// The virtual clock.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The instant the virtual clock started from (the links' traces count from it).
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Virtual time since the epoch.
    pub fn elapsed(&self) -> Duration {
        self.now - self.epoch
    }

    /// The configuration.
    pub fn config(&self) -> &QuicPairConfig {
        &self.config
    }

    /// Queues a datagram on the server's connection (the gateway side); it leaves on the next
    /// `run_until`. A refusal returns quinn's error (with the payload when blocked); refusals
    /// and drop-oldest evictions are counted in [`Self::datagram_stats`].
    pub fn send_datagram(&mut self, data: Bytes) -> Result<(), SendDatagramError> {
        let len = data.len();
        self.datagrams.offered += 1;
        self.datagrams.offered_bytes += len as u64;
        let Some((_, conn)) = &mut self.server.conn else {
            self.datagrams.refused += 1;
            self.datagrams.refused_bytes += len as u64;
            return Err(SendDatagramError::Disabled);
        };
        let queue = &mut self.send_queue;
        queue.advance(conn.stats().frame_tx.datagram);
        let size = self.config.datagram_send_buffer;
        debug_assert_eq!(
            conn.datagrams().send_buffer_space(),
            size.saturating_sub(queue.memory_used())
                .saturating_sub(DATAGRAM_OVERHEAD),
            "the mirror of quinn's datagram queue drifted"
        );
        if let Err(error) = conn.datagrams().send(data, self.config.drop_oldest) {
            self.datagrams.refused += 1;
            self.datagrams.refused_bytes += len as u64;
            return Err(error);
        }
        // quinn's make_space_for: pop the oldest until the new one fits.
        while queue.memory_used() + len + DATAGRAM_OVERHEAD > size {
            let Some(old) = queue.lengths.pop_front() else {
                break;
            };
            queue.payload -= old;
            self.datagrams.dropped_oldest += 1;
            self.datagrams.dropped_oldest_bytes += old as u64;
        }
        queue.lengths.push_back(len);
        queue.payload += len;
        Ok(())
    }

    /// Queues a datagram on the client's connection (feedback towards the gateway), drop-oldest.
    pub fn client_send_datagram(&mut self, data: Bytes) -> Result<(), SendDatagramError> {
        match &mut self.client.conn {
            Some((_, conn)) => conn.datagrams().send(data, true),
            None => Err(SendDatagramError::Disabled),
        }
    }

    /// The server's datagram counters.
    pub fn datagram_stats(&self) -> DatagramStats {
        let mut stats = self.datagrams;
        if let Some(conn) = self.server.connection() {
            stats.transmitted = conn.stats().frame_tx.datagram;
            let (queued, bytes) = self.send_queue.queued_after(stats.transmitted);
            stats.queued = queued as u64;
            stats.queued_bytes = bytes as u64;
        }
        stats
    }

    /// Drives both endpoints and both links, in event order, up to `until`; the clock is then
    /// `until` (or stays where it is if `until` is earlier).
    ///
    /// # Panics
    ///
    /// If quinn keeps asking to be woken at the current instant without the clock moving
    /// (100 000 times in a row), which would otherwise loop forever.
    pub fn run_until(&mut self, until: Instant) {
        while self.step(until) {}
        self.now = self.now.max(until);
    }

    /// `run_until(now + duration)`.
    pub fn run_for(&mut self, duration: Duration) {
        self.run_until(self.now + duration);
    }

    /// Datagrams that reached the client application since the last call, with their arrival
    /// times, in order.
    pub fn take_received(&mut self) -> Vec<(Instant, Bytes)> {
        std::mem::take(&mut self.client.received)
    }

    /// Datagrams that reached the server application since the last call.
    pub fn take_server_received(&mut self) -> Vec<(Instant, Bytes)> {
        std::mem::take(&mut self.server.received)
    }

    /// The server connection's counters as the gateway's estimator reads them:
    ///
    /// | `QuicSample` | quinn-proto 0.11.19 `ConnectionStats` |
    /// |---|---|
    /// | `sent_bytes` | `udp_tx.bytes` (UDP payload bytes sent) |
    /// | `sent_packets` | `path.sent_packets` (QUIC packets; what `lost_packets` counts against) |
    /// | `lost_bytes`, `lost_packets` | `path.lost_bytes`, `path.lost_packets` |
    /// | `srtt` | `path.rtt` (smoothed) |
    /// | `min_rtt` | `path.min_rtt` (minimum of the RTT samples, ack delay not removed) |
    /// | `cwnd` | `path.cwnd` |
    /// | `congestion_events` | `path.congestion_events` |
    /// | `buffered_bytes` | payload bytes in quinn's datagram send queue (the pair's mirror) |
    pub fn server_sample(&self) -> QuicSample {
        let stats = self.server_stats();
        QuicSample {
            at: self.now,
            sent_bytes: stats.udp_tx.bytes,
            lost_bytes: stats.path.lost_bytes,
            sent_packets: stats.path.sent_packets,
            lost_packets: stats.path.lost_packets,
            srtt: stats.path.rtt,
            min_rtt: stats.path.min_rtt,
            cwnd: stats.path.cwnd,
            congestion_events: stats.path.congestion_events,
            buffered_bytes: self.send_queue.queued_after(stats.frame_tx.datagram).1 as u64,
        }
    }

    /// Moves the acknowledgements the server connection received since the last call into
    /// `out` (see `strait_gateway::AckFeed`).
    pub fn server_acks(&mut self, out: &mut Vec<PacketFate>) {
        if self.server_feed.is_none() {
            self.server_feed = self
                .server
                .connection()
                .and_then(|c| AckFeed::of(c.congestion_state().clone_box()));
        }
        if let Some(feed) = &self.server_feed {
            feed.drain(out);
        }
    }

    /// The server connection's statistics (defaults if it was never accepted).
    pub fn server_stats(&self) -> ConnectionStats {
        self.server
            .connection()
            .map(Connection::stats)
            .unwrap_or_default()
    }

    /// The client connection's statistics.
    pub fn client_stats(&self) -> ConnectionStats {
        self.client
            .connection()
            .map(Connection::stats)
            .unwrap_or_default()
    }

    /// The server's connection, for what the pair does not wrap.
    pub fn server(&self) -> Option<&Connection> {
        self.server.connection()
    }

    /// The client's connection.
    pub fn client(&self) -> Option<&Connection> {
        self.client.connection()
    }

    /// Why a side's connection was lost, if it was (`(server, client)`).
    pub fn lost(&self) -> (Option<&ConnectionError>, Option<&ConnectionError>) {
        (self.server.lost.as_ref(), self.client.lost.as_ref())
    }

    /// The server → client link.
    pub fn forward(&self) -> &Link<BytesMut> {
        &self.forward
    }

    /// The client → server link.
    pub fn reverse(&self) -> &Link<BytesMut> {
        &self.reverse
    }

    /// The forward link's counters.
    pub fn forward_stats(&self) -> LinkStats {
        self.forward.stats()
    }

    /// The reverse link's counters.
    pub fn reverse_stats(&self) -> LinkStats {
        self.reverse.stats()
    }

    /// Replaces the forward link's rate trace (still counted from the epoch).
    pub fn set_forward_rate(&mut self, rate: super::link::RateTrace) {
        self.forward.set_rate(rate);
    }

    /// Replaces the forward link's random loss probability, from now on.
    pub fn set_forward_loss(&mut self, loss: f64) {
        self.forward.set_loss(loss);
    }

    /// Everything due at `now`, until quiescent.
    fn drive_now(&mut self) {
        let now = self.now;
        for _ in 0..MAX_ROUNDS {
            let mut busy = false;
            while let Some((_, packet)) = self.forward.poll_delivery(now) {
                self.client
                    .handle_packet(now, SERVER_ADDR, packet, &mut self.reverse);
                busy = true;
            }
            while let Some((_, packet)) = self.reverse.poll_delivery(now) {
                self.server
                    .handle_packet(now, CLIENT_ADDR, packet, &mut self.forward);
                busy = true;
            }
            busy |= self.client.drive(now, &mut self.reverse);
            busy |= self.server.drive(now, &mut self.forward);
            if !busy {
                return;
            }
        }
    }

    /// Drives `now`, then moves the clock to the next event if it is not after `until`; returns
    /// whether it did.
    fn step(&mut self, until: Instant) -> bool {
        self.drive_now();
        let next = [
            self.client.timeout,
            self.server.timeout,
            self.forward.poll_timeout(),
            self.reverse.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min();
        match next {
            Some(t) if t <= until => {
                if t > self.now {
                    self.now = t;
                    self.stuck = 0;
                } else {
                    self.stuck += 1;
                    assert!(
                        self.stuck < MAX_STUCK,
                        "the pair asks to be woken at {:?} without moving on",
                        self.now - self.epoch
                    );
                }
                true
            }
            _ => false,
        }
    }
}

/// Both endpoints' transport parameters.
fn transport(config: &QuicPairConfig) -> TransportConfig {
    let mut transport = TransportConfig::default();
    let congestion: Arc<dyn ControllerFactory + Send + Sync> = match config.congestion {
        CongestionControl::Cubic => Arc::new(CubicConfig::default()),
        CongestionControl::Bbr => Arc::new(BbrConfig::default()),
        CongestionControl::NewReno => Arc::new(NewRenoConfig::default()),
    };
    transport
        // As the gateway does: the configured controller, its acknowledgements tapped and
        // random loss kept from its window.
        .congestion_controller_factory(Arc::new(AckTapFactory::new(
            congestion,
            true,
            config.loss_tolerance,
        )))
        .datagram_send_buffer_size(config.datagram_send_buffer)
        .initial_mtu(config.mtu)
        .min_mtu(config.mtu)
        .mtu_discovery_config(None)
        // A test decides when the connection ends; a long outage must not close it.
        .max_idle_timeout(None);
    let (threshold, max_delay) = config.ack_frequency;
    if threshold > 0 {
        let mut ack = quinn_proto::AckFrequencyConfig::default();
        ack.ack_eliciting_threshold(threshold.into())
            .max_ack_delay(Some(max_delay));
        transport.ack_frequency_config(Some(ack));
    }
    transport
}

/// A fresh Ed25519 identity and the two rustls configurations (fresh each time, so that no
/// session resumption carries over from one pair to the next).
fn crypto() -> Result<(QuicServerConfig, QuicClientConfig), SimError> {
    let err = |e: &dyn fmt::Display| SimError::Crypto(e.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let clock: Arc<dyn rustls::time_provider::TimeProvider> = Arc::new(FixedWallClock);

    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(|e| err(&e))?;
    let mut params =
        rcgen::CertificateParams::new(vec![SERVER_NAME.to_owned()]).map_err(|e| err(&e))?;
    // A fixed serial: the default one is derived from the key and its DER length can vary.
    params.serial_number = Some(rcgen::SerialNumber::from(1u64));
    let cert = params.self_signed(&key).map_err(|e| err(&e))?;
    let cert = cert.der().clone();

    let mut server = rustls::ServerConfig::builder_with_details(provider.clone(), clock.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| err(&e))?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.clone()],
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .map_err(|e| err(&e))?;
    server.alpn_protocols = vec![ALPN.to_vec()];
    server.send_tls13_tickets = 0;

    let verifier = Arc::new(PinnedCert {
        cert,
        algorithms: provider.signature_verification_algorithms,
    });
    let mut client = rustls::ClientConfig::builder_with_details(provider, clock)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| err(&e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    client.alpn_protocols = vec![ALPN.to_vec()];
    client.resumption = rustls::client::Resumption::disabled();

    let server = QuicServerConfig::try_from(server).map_err(|e| err(&e))?;
    let client = QuicClientConfig::try_from(client).map_err(|e| err(&e))?;
    Ok((server, client))
}

/// The wall clock rustls and quinn's token code see: fixed, so the simulation never reads the
/// real one.
#[derive(Debug)]
struct FixedWallClock;

impl rustls::time_provider::TimeProvider for FixedWallClock {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(WALL_CLOCK))
    }
}

impl TimeSource for FixedWallClock {
    fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + WALL_CLOCK
    }
}

/// Accepts exactly the pair's own certificate and checks the handshake signatures with it (no
/// chain, no validity period: nothing to read a clock for).
#[derive(Debug)]
struct PinnedCert {
    cert: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
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

    const MS: Duration = Duration::from_millis(1);

    /// Sends `bps` of `size`-byte datagrams (each numbered) for `seconds`, then lets the links
    /// drain for one second; returns the pair and what arrived.
    fn offer(
        seed: u64,
        config: QuicPairConfig,
        bps: u64,
        size: usize,
        seconds: u64,
    ) -> (QuicPair, Vec<(Instant, Bytes)>) {
        let mut pair = QuicPair::new(seed, config).expect("handshake");
        let start = pair.now();
        let end = start + Duration::from_secs(seconds);
        let count = bps * seconds / 8 / size as u64;
        let mut received = Vec::new();
        for n in 0..count {
            pair.run_until(start + Duration::from_nanos(n * seconds * 1_000_000_000 / count));
            let mut payload = vec![0u8; size];
            payload[..8].copy_from_slice(&n.to_be_bytes());
            // A refusal is counted in datagram_stats; the offer goes on.
            let _ = pair.send_datagram(Bytes::from(payload));
            received.extend(pair.take_received());
        }
        pair.run_until(end + Duration::from_secs(1));
        received.extend(pair.take_received());
        (pair, received)
    }

    #[test]
    fn the_handshake_completes_in_virtual_time() {
        let pair = QuicPair::new(1, QuicPairConfig::new(1_000_000, 40 * MS)).expect("handshake");
        // One RTT and a bit: Initial, then the server's flight through the 1 Mbit/s link.
        assert!(pair.elapsed() >= 40 * MS, "{:?}", pair.elapsed());
        assert!(pair.elapsed() < 200 * MS, "{:?}", pair.elapsed());
        assert!(pair.server().is_some_and(|c| !c.is_handshaking()));
        let sample = pair.server_sample();
        assert!(sample.srtt >= 40 * MS, "{sample:?}");
        assert_eq!(sample.buffered_bytes, 0);
        println!("handshake done at {:?}: {sample:?}", pair.elapsed());
    }

    #[test]
    fn the_server_learns_when_each_of_its_packets_was_acknowledged() {
        let (mut pair, received) =
            offer(3, QuicPairConfig::new(1_000_000, 40 * MS), 400_000, 1000, 2);
        let mut acks = Vec::new();
        pair.server_acks(&mut acks);
        // Every datagram arrived and every packet that carried one was acknowledged (the
        // handshake's packets and pings besides).
        assert_eq!(received.len(), 100);
        assert!(acks.len() >= 100, "{}", acks.len());
        assert!(acks.windows(2).all(|w| w[0].departure <= w[1].departure));
        // An acknowledgement comes at least a round trip after its packet left (arrivals
        // count from the first acknowledgement, departures are instants: compare spans).
        let first = acks[0];
        let last = acks[acks.len() - 1];
        let sent_span = last.departure - first.departure;
        let acked_span = last.arrival.unwrap() - first.arrival.unwrap();
        assert!(
            acked_span + 30 * MS >= sent_span,
            "{sent_span:?} {acked_span:?}"
        );
        let bytes: u64 = acks.iter().map(|a| u64::from(a.size)).sum();
        assert!(bytes >= 100 * 1000, "{bytes}");
        // Drained: nothing twice.
        let mut again = Vec::new();
        pair.server_acks(&mut again);
        assert!(again.is_empty(), "{}", again.len());
    }

    #[test]
    fn a_rate_under_the_link_arrives_whole() {
        let (pair, received) = offer(3, QuicPairConfig::new(1_000_000, 40 * MS), 600_000, 1000, 5);
        let stats = pair.datagram_stats();
        println!(
            "{stats:?} {:?} {:?}",
            pair.forward_stats(),
            pair.server_sample()
        );
        assert_eq!(stats.offered, 375);
        assert_eq!(stats.refused, 0);
        assert_eq!(stats.dropped_oldest, 0);
        assert_eq!(received.len(), 375, "every datagram arrives");
        assert_eq!(pair.forward_stats().dropped_packets, 0);
        let numbers: Vec<u64> = received
            .iter()
            .map(|(_, d)| u64::from_be_bytes(d[..8].try_into().unwrap()))
            .collect();
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "in order");
        let sample = pair.server_sample();
        assert_eq!(sample.lost_packets, 0);
        // 20 ms each way, 8.4 ms of serialization at most; nothing queues for long.
        assert!(
            sample.min_rtt >= 40 * MS && sample.min_rtt < 60 * MS,
            "{sample:?}"
        );
    }

    #[test]
    fn an_offer_above_the_link_is_cut_to_its_rate_and_the_sender_sees_congestion() {
        let (pair, received) = offer(
            4,
            QuicPairConfig::new(1_000_000, 40 * MS),
            3_000_000,
            1000,
            5,
        );
        let stats = pair.datagram_stats();
        let sample = pair.server_sample();
        let link = pair.forward_stats();
        // Payload that arrived from 1 s to 5 s after the start, once Cubic has found the link.
        let start = pair.epoch();
        let first = received[0].0;
        let window = (first + Duration::from_secs(1))..(first + Duration::from_secs(5));
        let bytes: usize = received
            .iter()
            .filter(|(at, _)| window.contains(at))
            .map(|(_, d)| d.len())
            .sum();
        let rate = bytes as f64 * 8.0 / 4.0;
        let span = pair.now() - start;
        let above = pair
            .forward()
            .share_above_capacity(Duration::ZERO, span, 100 * MS);
        println!(
            "payload delivered {rate:.0} bit/s from 1 s to 5 s; {stats:?}; {link:?}; {sample:?}; \
             bins above capacity {above:.3}"
        );
        // The payload is ~97 % of the UDP bytes; the link runs at 1 Mbit/s; Cubic's sawtooth
        // behind a 100 ms queue leaves a little of it unused.
        assert!(rate > 800_000.0 && rate < 1_000_000.0, "{rate}");
        assert_eq!(
            sample.lost_packets, link.dropped_packets,
            "every queue drop is a loss"
        );
        assert!(
            stats.dropped_oldest > 0,
            "the send buffer overflowed: {stats:?}"
        );
        assert!(
            sample.congestion_events > 0 || sample.lost_packets > 0,
            "{sample:?}"
        );
        assert!(sample.srtt > sample.min_rtt, "{sample:?}");
        // Everything offered is accounted for.
        assert_eq!(
            stats.offered,
            stats.refused + stats.dropped_oldest + stats.transmitted + stats.queued
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_run() {
        let run = |seed| {
            let (pair, received) = offer(
                seed,
                QuicPairConfig::new(1_000_000, 40 * MS),
                3_000_000,
                1000,
                3,
            );
            let arrivals: Vec<(Duration, Bytes)> = received
                .into_iter()
                .map(|(at, d)| (at - pair.epoch(), d))
                .collect();
            let mut sample = pair.server_sample();
            sample.at = pair.epoch(); // the epochs differ; everything relative to them must not
            (
                arrivals,
                pair.datagram_stats(),
                pair.forward_stats(),
                pair.reverse_stats(),
                sample,
                pair.forward().records().to_vec(),
            )
        };
        let a = run(9);
        let b = run(9);
        assert_eq!(a.0, b.0, "same arrivals at the same times");
        assert_eq!(a.1, b.1);
        assert_eq!(a.2, b.2);
        assert_eq!(a.3, b.3);
        assert_eq!(a.5, b.5);
        let (sa, sb) = (a.4, b.4);
        assert_eq!(
            (
                sa.sent_bytes,
                sa.lost_packets,
                sa.cwnd,
                sa.srtt,
                sa.congestion_events
            ),
            (
                sb.sent_bytes,
                sb.lost_packets,
                sb.cwnd,
                sb.srtt,
                sb.congestion_events
            )
        );
    }

    #[test]
    fn a_refusing_buffer_returns_the_payload_and_counts_it() {
        let mut config = QuicPairConfig::new(1_000_000, 40 * MS);
        config.drop_oldest = false;
        config.datagram_send_buffer = 5 * 1024;
        let mut pair = QuicPair::new(5, config).expect("handshake");
        let mut refused = None;
        for _ in 0..10 {
            if let Err(e) = pair.send_datagram(Bytes::from(vec![7u8; 1000])) {
                refused = Some(e);
            }
        }
        match refused {
            Some(SendDatagramError::Blocked(payload)) => assert_eq!(payload.len(), 1000),
            other => panic!("expected a blocked send, got {other:?}"),
        }
        let stats = pair.datagram_stats();
        // 5 KiB holds four 1000-byte datagrams with quinn's 32 bytes each (4128 bytes); a fifth
        // would need 5160.
        assert_eq!((stats.offered, stats.refused), (10, 6));
        assert_eq!(pair.server_sample().buffered_bytes, 4000);
        pair.run_for(Duration::from_secs(1));
        assert_eq!(pair.take_received().len(), 4);
        assert_eq!(pair.server_sample().buffered_bytes, 0);
    }

    #[test]
    fn bbr_connects_and_carries_traffic() {
        let mut config = QuicPairConfig::new(2_000_000, 40 * MS);
        config.congestion = CongestionControl::Bbr;
        let (pair, received) = offer(6, config, 1_000_000, 1000, 2);
        assert_eq!(received.len(), 250);
        assert_eq!(pair.datagram_stats().dropped_oldest, 0);
    }
}
