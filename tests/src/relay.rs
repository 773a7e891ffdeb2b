//! A user-space UDP relay that impairs traffic and moves a client to a new address.
//!
//! The kernel on the build machines has no `netem`, so delay, jitter, reordering, duplication and
//! rate limits come from here. The relay sits between clients and one upstream server (a QUIC
//! server on loopback, say) and behaves like a NAT:
//!
//! ```text
//!  client A ─┐                         ┌─ upstream socket for A ─┐
//!            ├─▶ client-facing socket ─┤                         ├─▶ upstream server
//!  client B ─┘                         └─ upstream socket for B ─┘
//! ```
//!
//! Every client source address gets its own upstream socket, so the server sees that socket's
//! address as the client's. [`UdpRelay::rebind`] swaps those sockets for new ones mid-session: the
//! server sees the client's address change (QUIC connection migration, NAT rebinding) while the
//! client notices nothing. [`UdpRelay::set_blackhole`] simulates a dead path.
//!
//! # Structure
//!
//! The decisions live in a sans-IO core, [`ImpairedLink`], one per direction: it takes datagrams
//! with the current time, decides their fate from a seeded RNG and keeps them in a timer queue
//! until they are due. Around it, the IO shell runs one reader task per socket and one scheduler
//! task per direction that sleeps until the link's next deadline; there is no task per packet.
//!
//! # What it is not
//!
//! It is a test tool for loopback. It forwards only to the configured upstream and answers only
//! the addresses that sent to it; it never resolves names or sends anywhere else. It keeps no
//! per-session idle timeouts: sessions live until the relay is dropped.
//!
//! # Example
//!
//! ```no_run
//! # async fn example(server: std::net::SocketAddr) -> std::io::Result<()> {
//! use std::time::Duration;
//! use strait_tests::relay::{Direction, Impairment, Rebind, RelayConfig, UdpRelay};
//!
//! let relay = UdpRelay::start(RelayConfig::new(server)).await?;
//! // Point the client at `relay.local_addr()` instead of `server`.
//! relay.set_impairment(
//!     Direction::ToUpstream,
//!     Impairment { loss: 0.05, delay: Duration::from_millis(20), seed: 7, ..Impairment::none() },
//! );
//! let new_addrs = relay.rebind(Rebind::NewPort).await?;
//! # let _ = new_addrs;
//! # Ok(())
//! # }
//! ```

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{debug, info, trace, warn};

/// The longest a datagram is ever held back; longer delays are cut to this. It keeps deadline
/// arithmetic far from `Instant` overflow.
const MAX_HOLD: Duration = Duration::from_secs(24 * 60 * 60);

/// The largest UDP payload; the receive buffer of each reader task has this size.
const MAX_DATAGRAM: usize = 65_535;

/// A reader task gives up after this many receive errors in a row (a socket that keeps failing
/// would otherwise spin).
const MAX_CONSECUTIVE_ERRORS: u32 = 64;

// ---------------------------------------------------------------------------------------------
// Impairment model
// ---------------------------------------------------------------------------------------------

/// How one direction of the relay mistreats datagrams.
///
/// # Decision sequence
///
/// Decisions are deterministic for a given `seed`: every datagram that reaches a direction's link
/// takes exactly four `f64` draws in `[0, 1)` from `StdRng::seed_from_u64(seed)` (rand 0.9), in
/// this order, whatever the outcome (datagrams the blackhole or a full client table drop first
/// draw nothing):
///
/// 1. `loss`: the datagram is lost if the draw is below `loss`;
/// 2. `duplicate`: a copy is sent right after it if the draw is below `duplicate`;
/// 3. `reorder`: it is held back if the draw is below `reorder` (see [`Impairment::reorder`]);
/// 4. jitter: the draw `u` adds `(2u - 1) * jitter` to `delay`.
///
/// So the fate of the n-th datagram can be computed from the seed alone. The rate limit and the
/// in-flight bound depend on timing and come after the loss decision.
///
/// Probabilities outside `0..=1` act as the nearest bound; NaN acts as 0.
#[derive(Debug, Clone, PartialEq)]
pub struct Impairment {
    /// Probability that a datagram is dropped.
    pub loss: f64,
    /// Fixed one-way delay added to every datagram.
    pub delay: Duration,
    /// Uniform jitter: each datagram's delay is `delay ± jitter`, never below zero. Jitter larger
    /// than the spacing of datagrams reorders them, as on a real path.
    pub jitter: Duration,
    /// Probability that a datagram is held back and sent right after the next datagram in the same
    /// direction. At most one datagram is held at a time (a datagram that arrives while another is
    /// held releases it and is never held itself). If no next datagram comes within `reorder_gap`
    /// after the held one was due, it is sent on its own.
    pub reorder: f64,
    /// The longest a held-back datagram waits for its successor. Default 20 ms.
    pub reorder_gap: Duration,
    /// Probability that a datagram is sent twice.
    pub duplicate: f64,
    /// Rate limit in bits per second of UDP payload, as a token bucket checked when a datagram
    /// arrives; datagrams that find too few tokens are dropped. `None`: unlimited.
    pub rate_limit: Option<u64>,
    /// Size of the token bucket in bytes (the burst that passes at once). A datagram larger than
    /// this never passes a rate-limited direction. Default 16 KiB.
    pub rate_burst: usize,
    /// Seed of this direction's RNG.
    pub seed: u64,
}

impl Impairment {
    /// No impairment: every datagram is forwarded at once, in order.
    pub fn none() -> Self {
        Self {
            loss: 0.0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            reorder: 0.0,
            reorder_gap: Duration::from_millis(20),
            duplicate: 0.0,
            rate_limit: None,
            rate_burst: 16 * 1024,
            seed: 0,
        }
    }
}

impl Default for Impairment {
    /// Same as [`Impairment::none`].
    fn default() -> Self {
        Self::none()
    }
}

/// What [`ImpairedLink::handle_datagram`] did with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fate {
    /// The datagram is in the timer queue (or held back for reordering).
    Queued {
        /// A copy was queued too.
        duplicated: bool,
        /// The datagram is held back until the next one (see [`Impairment::reorder`]).
        reordered: bool,
    },
    /// Dropped by the loss draw.
    Lost,
    /// Dropped by the rate limit.
    RateLimited,
    /// Dropped because the link already holds its maximum number of datagrams.
    Overflow,
}

/// The four draws that decide one datagram's fate; see [`Impairment`].
#[derive(Debug, Clone, Copy)]
struct Draws {
    lost: bool,
    duplicated: bool,
    reordered: bool,
    /// In `[-1, 1)`; scales `jitter`.
    jitter: f64,
}

impl Draws {
    fn take(rng: &mut StdRng, impairment: &Impairment) -> Self {
        // Always four draws, in this order, so that the n-th datagram's fate does not depend on
        // the fates of the ones before it.
        let loss: f64 = rng.random();
        let duplicate: f64 = rng.random();
        let reorder: f64 = rng.random();
        let jitter: f64 = rng.random();
        Self {
            lost: loss < impairment.loss,
            duplicated: duplicate < impairment.duplicate,
            reordered: reorder < impairment.reorder,
            jitter: 2.0 * jitter - 1.0,
        }
    }
}

/// A queued datagram; the heap orders by due time, then by arrival (`seq`), so equal deadlines
/// keep FIFO order.
#[derive(Debug)]
struct Scheduled<T> {
    due: Instant,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Scheduled<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<T> Eq for Scheduled<T> {}

impl<T> PartialOrd for Scheduled<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Scheduled<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// A datagram held back for reordering.
#[derive(Debug)]
struct Held<T> {
    /// When it goes out on its own if no successor has come.
    release_at: Instant,
    item: T,
}

/// One direction of impairment, sans IO: datagrams in with the current time, due datagrams out.
///
/// # Drive contract
///
/// - handler: [`handle_datagram`](Self::handle_datagram) for every datagram that arrives;
/// - poller: [`poll_transmit`](Self::poll_transmit) — drain it until it returns `None`, then send
///   what it gave in that order;
/// - timer: [`poll_timeout`](Self::poll_timeout) — call `poll_transmit` again at that instant;
/// - mutator: [`set_impairment`](Self::set_impairment);
/// - getters: [`impairment`](Self::impairment), [`in_flight`](Self::in_flight).
///
/// Time is always an argument, so the link runs as well on virtual time as on a real clock.
///
/// # Bounds
///
/// At most `capacity` datagrams are queued or held at once; beyond that new datagrams are dropped
/// ([`Fate::Overflow`]). The memory cost is `capacity` times the size of `T`.
#[derive(Debug)]
pub struct ImpairedLink<T> {
    impairment: Impairment,
    rng: StdRng,
    capacity: usize,
    /// Bytes available to the rate limit.
    tokens: f64,
    /// When `tokens` was last refilled; `None` until the first datagram.
    refilled_at: Option<Instant>,
    queue: BinaryHeap<Reverse<Scheduled<T>>>,
    held: Option<Held<T>>,
    next_seq: u64,
}

impl<T: Clone> ImpairedLink<T> {
    /// A link applying `impairment` with room for `capacity` datagrams in flight.
    pub fn new(impairment: Impairment, capacity: usize) -> Self {
        Self {
            rng: StdRng::seed_from_u64(impairment.seed),
            tokens: impairment.rate_burst as f64,
            impairment,
            capacity,
            refilled_at: None,
            queue: BinaryHeap::new(),
            held: None,
            next_seq: 0,
        }
    }

    /// The impairment in force.
    pub fn impairment(&self) -> &Impairment {
        &self.impairment
    }

    /// Datagrams queued or held back, not yet returned by `poll_transmit`.
    pub fn in_flight(&self) -> usize {
        self.queue.len() + usize::from(self.held.is_some())
    }

    /// Replaces the impairment for datagrams that arrive from now on: the RNG restarts from the
    /// new seed and the token bucket is full again. Datagrams already queued keep their deadlines.
    pub fn set_impairment(&mut self, impairment: Impairment) {
        self.rng = StdRng::seed_from_u64(impairment.seed);
        self.tokens = impairment.rate_burst as f64;
        self.refilled_at = None;
        self.impairment = impairment;
    }

    /// Decides the fate of a datagram of `len` bytes that arrived at `now`.
    pub fn handle_datagram(&mut self, item: T, len: usize, now: Instant) -> Fate {
        self.release_expired_hold(now);
        let draws = Draws::take(&mut self.rng, &self.impairment);
        if draws.lost {
            return Fate::Lost;
        }
        if !self.take_tokens(len, now) {
            return Fate::RateLimited;
        }
        if self.in_flight() >= self.capacity {
            return Fate::Overflow;
        }

        let due = now + self.delay(draws.jitter);
        let mut reordered = false;
        if let Some(held) = self.held.take() {
            // This is the successor the held datagram was waiting for: it goes right behind.
            self.push(item.clone(), due);
            self.push(held.item, due);
        } else if draws.reordered {
            let release_at = due
                .checked_add(self.impairment.reorder_gap.min(MAX_HOLD))
                .unwrap_or(due);
            self.held = Some(Held {
                release_at,
                item: item.clone(),
            });
            reordered = true;
        } else {
            self.push(item.clone(), due);
        }

        let duplicated = draws.duplicated && self.in_flight() < self.capacity;
        if duplicated {
            self.push(item, due);
        }
        Fate::Queued {
            duplicated,
            reordered,
        }
    }

    /// The next datagram due at `now`, if any. Drain until `None`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<T> {
        self.release_expired_hold(now);
        if self.queue.peek()?.0.due > now {
            return None;
        }
        self.queue.pop().map(|Reverse(scheduled)| scheduled.item)
    }

    /// When `poll_transmit` next has something to give; `None` if nothing is in flight.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let queued = self.queue.peek().map(|Reverse(scheduled)| scheduled.due);
        let held = self.held.as_ref().map(|held| held.release_at);
        match (queued, held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn push(&mut self, item: T, due: Instant) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.push(Reverse(Scheduled { due, seq, item }));
    }

    fn release_expired_hold(&mut self, now: Instant) {
        if self
            .held
            .as_ref()
            .is_some_and(|held| held.release_at <= now)
            && let Some(held) = self.held.take()
        {
            self.push(held.item, held.release_at);
        }
    }

    /// `delay` plus `jitter` scaled by `unit` (in `[-1, 1)`), never below zero.
    fn delay(&self, unit: f64) -> Duration {
        let delay = self.impairment.delay.min(MAX_HOLD).as_secs_f64();
        let jitter = self.impairment.jitter.min(MAX_HOLD).as_secs_f64();
        let seconds = (delay + unit * jitter).clamp(0.0, MAX_HOLD.as_secs_f64());
        Duration::from_secs_f64(seconds)
    }

    fn take_tokens(&mut self, len: usize, now: Instant) -> bool {
        let Some(rate) = self.impairment.rate_limit else {
            return true;
        };
        let burst = self.impairment.rate_burst as f64;
        if let Some(then) = self.refilled_at {
            let elapsed = now.saturating_duration_since(then).as_secs_f64();
            self.tokens = (self.tokens + elapsed * rate as f64 / 8.0).min(burst);
        }
        self.refilled_at = Some(now);
        if self.tokens >= len as f64 {
            self.tokens -= len as f64;
            true
        } else {
            false
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Relay configuration and stats
// ---------------------------------------------------------------------------------------------

/// Which way a datagram travels through the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From a client to the upstream server.
    ToUpstream,
    /// From the upstream server back to a client.
    ToClient,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Self::ToUpstream => 0,
            Self::ToClient => 1,
        }
    }
}

/// Where [`UdpRelay::rebind`] moves the upstream sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rebind {
    /// Same IP, a new port from the OS (NAT rebinding).
    NewPort,
    /// A new IP, port from the OS (e.g. `127.0.0.2`, which is loopback on Linux). Later clients'
    /// upstream sockets bind to this IP too.
    To(IpAddr),
}

/// Configuration of a [`UdpRelay`]. Build it with [`RelayConfig::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The client-facing address. Default `127.0.0.1:0` (a port from the OS).
    pub listen: SocketAddr,
    /// The server every client datagram is forwarded to. The relay sends nowhere else.
    pub upstream: SocketAddr,
    /// Where each client's upstream socket binds. Default `127.0.0.1:0`. A fixed port fits only
    /// one client; later clients' datagrams are then dropped (counted as `send_errors`).
    pub upstream_bind: SocketAddr,
    /// Impairment towards the server. Default none.
    pub to_upstream: Impairment,
    /// Impairment towards the clients. Default none.
    pub to_client: Impairment,
    /// Datagrams in flight (queued for delay or held for reordering) per direction. Default
    /// 10 000, which bounds the queue to that many payloads (about 15 MB of 1500-byte datagrams);
    /// beyond it datagrams are dropped and counted as `dropped_overflow`.
    pub max_in_flight: usize,
    /// Distinct client addresses, each costing one upstream socket and one task. Default 64;
    /// datagrams from further clients are dropped and counted as `dropped_overflow`.
    pub max_clients: usize,
    /// `SO_RCVBUF` and `SO_SNDBUF` asked for on every socket, in bytes. Default 4 MiB; the kernel
    /// caps it at `net.core.rmem_max`/`wmem_max`, and a refusal is only logged.
    pub socket_buffer: usize,
}

impl RelayConfig {
    /// A relay to `upstream` with every other field at its default.
    pub fn new(upstream: SocketAddr) -> Self {
        let loopback = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        Self {
            listen: loopback,
            upstream,
            upstream_bind: loopback,
            to_upstream: Impairment::none(),
            to_client: Impairment::none(),
            max_in_flight: 10_000,
            max_clients: 64,
            socket_buffer: 4 * 1024 * 1024,
        }
    }
}

/// Counters of one direction. Every received datagram ends up forwarded or in exactly one
/// `dropped_*` counter (or `send_errors`); duplicates add one forward each. Whenever no send is
/// under way: `received + duplicated == forwarded + dropped() + send_errors + in_flight`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Datagrams read from the socket (from the upstream server only, for `ToClient`).
    pub received: u64,
    /// Datagrams written to the socket, duplicates included.
    pub forwarded: u64,
    /// Dropped by the loss draw.
    pub dropped_loss: u64,
    /// Dropped by the rate limit.
    pub dropped_rate: u64,
    /// Dropped because the in-flight queue or the client table was full.
    pub dropped_overflow: u64,
    /// Dropped by the blackhole, on arrival or when due.
    pub dropped_blackhole: u64,
    /// Extra copies queued.
    pub duplicated: u64,
    /// Datagrams held back to go out after their successor.
    pub reordered: u64,
    /// Datagrams the socket refused to send, or that found no upstream socket.
    pub send_errors: u64,
    /// Datagrams that reached an upstream socket from an address other than the upstream server;
    /// never forwarded, not counted in `received`.
    pub ignored_foreign: u64,
    /// Datagrams queued or held right now.
    pub in_flight: usize,
}

impl DirectionStats {
    /// All drops: loss, rate, overflow and blackhole.
    pub fn dropped(&self) -> u64 {
        self.dropped_loss + self.dropped_rate + self.dropped_overflow + self.dropped_blackhole
    }
}

/// A snapshot of the relay's counters and sockets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Client to server.
    pub to_upstream: DirectionStats,
    /// Server to client.
    pub to_client: DirectionStats,
    /// Completed calls to [`UdpRelay::rebind`].
    pub rebinds: u64,
    /// Client source addresses with a session, in ascending order.
    pub clients: Vec<SocketAddr>,
    /// The upstream socket address of each client in `clients`, same order: what the server sees.
    pub upstream_addrs: Vec<SocketAddr>,
}

// ---------------------------------------------------------------------------------------------
// The relay (IO shell)
// ---------------------------------------------------------------------------------------------

/// A datagram on its way, with the client it belongs to.
#[derive(Debug, Clone)]
struct Packet {
    client: SocketAddr,
    payload: Bytes,
}

/// One client's NAT mapping.
#[derive(Debug)]
struct Session {
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    reader: JoinHandle<()>,
}

#[derive(Debug)]
struct State {
    links: [ImpairedLink<Packet>; 2],
    stats: [DirectionStats; 2],
    sessions: BTreeMap<SocketAddr, Session>,
    blackhole: bool,
    /// Where new upstream sockets bind; moved by `Rebind::To`.
    upstream_bind: SocketAddr,
    rebinds: u64,
    /// Set when the relay stops, so that no task opens a session afterwards.
    closed: bool,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    max_clients: usize,
    socket_buffer: usize,
    client_socket: Arc<UdpSocket>,
    local_addr: SocketAddr,
    state: Mutex<State>,
    /// Wakes the scheduler of each direction when its link changes.
    wake: [Notify; 2],
    /// Wakes [`UdpRelay::wait_until`] callers when a counter changes.
    changed: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves counters, not invariants, half-updated.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The relay. Its tasks stop when it is dropped or on [`shutdown`](Self::shutdown).
///
/// Methods fall in three classes: getters ([`local_addr`](Self::local_addr),
/// [`stats`](Self::stats), [`wait_until`](Self::wait_until)), mutators
/// ([`set_impairment`](Self::set_impairment), [`set_blackhole`](Self::set_blackhole),
/// [`rebind`](Self::rebind)) and lifecycle ([`start`](Self::start),
/// [`shutdown`](Self::shutdown)).
pub struct UdpRelay {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl fmt::Debug for UdpRelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpRelay")
            .field("local_addr", &self.shared.local_addr)
            .field("upstream", &self.shared.upstream)
            .finish_non_exhaustive()
    }
}

impl UdpRelay {
    /// Binds the client-facing socket and starts relaying to `config.upstream`.
    ///
    /// Must be called inside a Tokio runtime.
    pub async fn start(config: RelayConfig) -> io::Result<Self> {
        let client_socket = Arc::new(bind_udp(config.listen, config.socket_buffer)?);
        let local_addr = client_socket.local_addr()?;
        let state = State {
            links: [
                ImpairedLink::new(config.to_upstream, config.max_in_flight),
                ImpairedLink::new(config.to_client, config.max_in_flight),
            ],
            stats: Default::default(),
            sessions: BTreeMap::new(),
            blackhole: false,
            upstream_bind: config.upstream_bind,
            rebinds: 0,
            closed: false,
        };
        let shared = Arc::new(Shared {
            upstream: config.upstream,
            max_clients: config.max_clients,
            socket_buffer: config.socket_buffer,
            client_socket,
            local_addr,
            state: Mutex::new(state),
            wake: [Notify::new(), Notify::new()],
            changed: Notify::new(),
        });
        let tasks = vec![
            tokio::spawn(read_clients(shared.clone())),
            tokio::spawn(schedule(shared.clone(), Direction::ToUpstream)),
            tokio::spawn(schedule(shared.clone(), Direction::ToClient)),
        ];
        info!("relay started");
        debug!(%local_addr, upstream = %config.upstream, "relay addresses");
        Ok(Self { shared, tasks })
    }

    /// The client-facing address: where clients send instead of the upstream server.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Same as [`local_addr`](Self::local_addr): the address clients send to.
    pub fn client_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The upstream server.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// A snapshot of the counters and sockets.
    pub fn stats(&self) -> RelayStats {
        let state = self.shared.lock();
        let mut stats = RelayStats {
            to_upstream: state.stats[0].clone(),
            to_client: state.stats[1].clone(),
            rebinds: state.rebinds,
            clients: state.sessions.keys().copied().collect(),
            upstream_addrs: state.sessions.values().map(|s| s.local).collect(),
        };
        stats.to_upstream.in_flight = state.links[0].in_flight();
        stats.to_client.in_flight = state.links[1].in_flight();
        stats
    }

    /// Waits until `condition` holds for the stats, and returns those stats.
    ///
    /// Checks at once, then after every change of a counter. It never returns if the condition
    /// never holds: wrap it in `tokio::time::timeout`. Cancel safe.
    pub async fn wait_until(&self, mut condition: impl FnMut(&RelayStats) -> bool) -> RelayStats {
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            // Registered before reading the stats, so no change between the two is missed.
            changed.as_mut().enable();
            let stats = self.stats();
            if condition(&stats) {
                return stats;
            }
            changed.await;
        }
    }

    /// Replaces one direction's impairment for datagrams arriving from now on; see
    /// [`ImpairedLink::set_impairment`].
    pub fn set_impairment(&self, direction: Direction, impairment: Impairment) {
        let d = direction.index();
        debug!(?direction, ?impairment, "relay impairment set");
        self.shared.lock().links[d].set_impairment(impairment);
        self.shared.wake[d].notify_one();
    }

    /// The impairment in force in one direction.
    pub fn impairment(&self, direction: Direction) -> Impairment {
        self.shared.lock().links[direction.index()]
            .impairment()
            .clone()
    }

    /// Drops every datagram both ways while `on`, those already queued included (they are dropped
    /// when due). Datagrams dropped this way take no RNG draws.
    pub fn set_blackhole(&self, on: bool) {
        debug!(on, "relay blackhole");
        self.shared.lock().blackhole = on;
        self.shared.changed.notify_waiters();
    }

    /// Whether the blackhole is on.
    pub fn blackhole(&self) -> bool {
        self.shared.lock().blackhole
    }

    /// Replaces every client's upstream socket with a new one, so that the server sees the client
    /// move. Returns the new upstream addresses in the order of [`RelayStats::clients`]; when it
    /// returns, every datagram sent upstream leaves from the new sockets. The old sockets close:
    /// datagrams the server still sends to them are lost, as behind a real NAT that rebinds.
    ///
    /// New sockets are all bound before any is swapped, so on error nothing has changed.
    pub async fn rebind(&self, to: Rebind) -> io::Result<Vec<SocketAddr>> {
        let mut state = self.shared.lock();
        let ip = match to {
            Rebind::NewPort => state.upstream_bind.ip(),
            Rebind::To(ip) => ip,
        };
        let bind = SocketAddr::new(ip, 0);
        let mut fresh = Vec::with_capacity(state.sessions.len());
        for &client in state.sessions.keys() {
            match bind_udp(bind, self.shared.socket_buffer)
                .and_then(|socket| open_session(&self.shared, client, socket))
            {
                Ok(session) => fresh.push((client, session)),
                Err(error) => {
                    for (_, session) in fresh {
                        session.reader.abort();
                    }
                    return Err(error);
                }
            }
        }
        let mut addrs = Vec::with_capacity(fresh.len());
        for (client, session) in fresh {
            addrs.push(session.local);
            debug!(%client, upstream_addr = %session.local, "relay rebound");
            if let Some(old) = state.sessions.insert(client, session) {
                old.reader.abort();
            }
        }
        state.upstream_bind = bind;
        state.rebinds += 1;
        drop(state);
        self.shared.changed.notify_waiters();
        Ok(addrs)
    }

    /// Stops every task and waits until they have ended, so that every socket is closed when it
    /// returns. Datagrams still queued are discarded.
    pub async fn shutdown(mut self) {
        for task in self.stop() {
            // The only error is the cancellation we asked for (or a panic, already reported).
            let _ = task.await;
        }
    }

    fn stop(&mut self) -> Vec<JoinHandle<()>> {
        let mut tasks = std::mem::take(&mut self.tasks);
        {
            let mut state = self.shared.lock();
            state.closed = true;
            tasks.extend(
                std::mem::take(&mut state.sessions)
                    .into_values()
                    .map(|s| s.reader),
            );
        }
        for task in &tasks {
            task.abort();
        }
        info!("relay stopped");
        tasks
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        if !self.tasks.is_empty() {
            self.stop();
        }
    }
}

/// A UDP socket bound to `addr` with large buffers.
fn bind_udp(addr: SocketAddr, buffer: usize) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(error) = socket.set_recv_buffer_size(buffer) {
        debug!(%error, buffer, "relay could not raise SO_RCVBUF");
    }
    if let Err(error) = socket.set_send_buffer_size(buffer) {
        debug!(%error, buffer, "relay could not raise SO_SNDBUF");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// A session for `client` around an already bound upstream socket, with its reader task.
fn open_session(
    shared: &Arc<Shared>,
    client: SocketAddr,
    socket: UdpSocket,
) -> io::Result<Session> {
    let local = socket.local_addr()?;
    let socket = Arc::new(socket);
    let reader = tokio::spawn(read_upstream(shared.clone(), client, socket.clone()));
    Ok(Session {
        socket,
        local,
        reader,
    })
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Counts a link's verdict on a datagram.
fn account(stats: &mut DirectionStats, fate: Fate) {
    match fate {
        Fate::Queued {
            duplicated,
            reordered,
        } => {
            stats.duplicated += u64::from(duplicated);
            stats.reordered += u64::from(reordered);
        }
        Fate::Lost => stats.dropped_loss += 1,
        Fate::RateLimited => stats.dropped_rate += 1,
        Fate::Overflow => stats.dropped_overflow += 1,
    }
}

/// Reads the client-facing socket: opens sessions and feeds the `ToUpstream` link.
async fn read_clients(shared: Arc<Shared>) {
    let mut buf = vec![0; MAX_DATAGRAM];
    let mut errors = 0;
    loop {
        let (len, client) = match shared.client_socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(error) => {
                errors += 1;
                debug!(%error, "relay client socket receive failed");
                if errors >= MAX_CONSECUTIVE_ERRORS {
                    warn!(%error, "relay client socket keeps failing; reader stops");
                    return;
                }
                continue;
            }
        };
        errors = 0;
        trace!(len, "relay datagram from client");
        let payload = Bytes::copy_from_slice(&buf[..len]);
        {
            let mut state = shared.lock();
            if state.closed {
                return;
            }
            let state = &mut *state;
            let stats = &mut state.stats[0];
            stats.received += 1;
            if state.blackhole {
                stats.dropped_blackhole += 1;
            } else if !state.sessions.contains_key(&client)
                && state.sessions.len() >= shared.max_clients
            {
                stats.dropped_overflow += 1;
            } else {
                let mut ready = true;
                if !state.sessions.contains_key(&client) {
                    match bind_udp(state.upstream_bind, shared.socket_buffer)
                        .and_then(|socket| open_session(&shared, client, socket))
                    {
                        Ok(session) => {
                            debug!(%client, upstream_addr = %session.local, "relay session opened");
                            state.sessions.insert(client, session);
                        }
                        Err(error) => {
                            debug!(%error, "relay could not open an upstream socket");
                            stats.send_errors += 1;
                            ready = false;
                        }
                    }
                }
                if ready {
                    let fate =
                        state.links[0].handle_datagram(Packet { client, payload }, len, now());
                    account(stats, fate);
                }
            }
        }
        shared.wake[0].notify_one();
        shared.changed.notify_waiters();
    }
}

/// Reads one client's upstream socket and feeds the `ToClient` link.
async fn read_upstream(shared: Arc<Shared>, client: SocketAddr, socket: Arc<UdpSocket>) {
    let mut buf = vec![0; MAX_DATAGRAM];
    let mut errors = 0;
    loop {
        let (len, from) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(error) => {
                errors += 1;
                debug!(%error, "relay upstream socket receive failed");
                if errors >= MAX_CONSECUTIVE_ERRORS {
                    warn!(%error, "relay upstream socket keeps failing; reader stops");
                    return;
                }
                continue;
            }
        };
        errors = 0;
        {
            let mut state = shared.lock();
            if state.closed {
                return;
            }
            let state = &mut *state;
            let stats = &mut state.stats[1];
            if from != shared.upstream {
                trace!(len, "relay ignored a datagram not from upstream");
                stats.ignored_foreign += 1;
            } else {
                trace!(len, "relay datagram from upstream");
                stats.received += 1;
                if state.blackhole {
                    stats.dropped_blackhole += 1;
                } else {
                    let payload = Bytes::copy_from_slice(&buf[..len]);
                    let fate =
                        state.links[1].handle_datagram(Packet { client, payload }, len, now());
                    account(stats, fate);
                }
            }
        }
        shared.wake[1].notify_one();
        shared.changed.notify_waiters();
    }
}

/// Sends one direction's due datagrams, then sleeps until the link's next deadline or a wake-up.
async fn schedule(shared: Arc<Shared>, direction: Direction) {
    let d = direction.index();
    let mut batch: Vec<(Arc<UdpSocket>, SocketAddr, Bytes)> = Vec::new();
    loop {
        let next = {
            let mut state = shared.lock();
            let state = &mut *state;
            let now = now();
            // Bounded: each call removes one of at most `max_in_flight` datagrams.
            while let Some(packet) = state.links[d].poll_transmit(now) {
                let stats = &mut state.stats[d];
                if state.blackhole {
                    stats.dropped_blackhole += 1;
                    continue;
                }
                match direction {
                    Direction::ToUpstream => match state.sessions.get(&packet.client) {
                        Some(session) => {
                            batch.push((session.socket.clone(), shared.upstream, packet.payload));
                        }
                        None => stats.send_errors += 1,
                    },
                    Direction::ToClient => {
                        batch.push((shared.client_socket.clone(), packet.client, packet.payload));
                    }
                }
            }
            state.links[d].poll_timeout()
        };

        let (mut forwarded, mut failed) = (0, 0);
        for (socket, to, payload) in batch.drain(..) {
            match socket.send_to(&payload, to).await {
                Ok(_) => forwarded += 1,
                Err(error) => {
                    debug!(%error, ?direction, "relay send failed");
                    failed += 1;
                }
            }
        }
        if forwarded + failed > 0 {
            let mut state = shared.lock();
            state.stats[d].forwarded += forwarded;
            state.stats[d].send_errors += failed;
            drop(state);
            shared.changed.notify_waiters();
        }

        let woken = shared.wake[d].notified();
        match next {
            Some(deadline) => {
                tokio::select! {
                    () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {}
                    () = woken => {}
                }
            }
            None => woken.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(impairment: Impairment) -> ImpairedLink<u32> {
        ImpairedLink::new(impairment, 100)
    }

    fn drain(link: &mut ImpairedLink<u32>, now: Instant) -> Vec<u32> {
        std::iter::from_fn(|| link.poll_transmit(now)).collect()
    }

    #[test]
    fn without_impairment_datagrams_leave_at_once_in_order() {
        let now = Instant::now();
        let mut link = link(Impairment::none());
        for i in 0..10 {
            assert!(matches!(
                link.handle_datagram(i, 100, now),
                Fate::Queued { .. }
            ));
        }
        assert_eq!(drain(&mut link, now), (0..10).collect::<Vec<_>>());
        assert_eq!(link.poll_timeout(), None);
    }

    #[test]
    fn delay_holds_datagrams_until_due() {
        let start = Instant::now();
        let delay = Duration::from_millis(50);
        let mut link = link(Impairment {
            delay,
            ..Impairment::none()
        });
        link.handle_datagram(1, 100, start);
        assert_eq!(
            link.poll_transmit(start + delay - Duration::from_millis(1)),
            None
        );
        assert_eq!(link.poll_timeout(), Some(start + delay));
        assert_eq!(drain(&mut link, start + delay), [1]);
    }

    #[test]
    fn jitter_stays_within_its_bounds() {
        let start = Instant::now();
        let (delay, jitter) = (Duration::from_millis(50), Duration::from_millis(20));
        let mut link = link(Impairment {
            delay,
            jitter,
            seed: 3,
            ..Impairment::none()
        });
        for i in 0..50 {
            link.handle_datagram(i, 100, start);
            let due = link.poll_timeout().unwrap();
            assert!(due >= start + delay - jitter && due <= start + delay + jitter);
            assert_eq!(drain(&mut link, due), [i]);
        }
    }

    #[test]
    fn a_held_datagram_goes_right_after_its_successor() {
        let now = Instant::now();
        let mut link = link(Impairment {
            reorder: 1.0,
            ..Impairment::none()
        });
        for i in 0..6 {
            link.handle_datagram(i, 100, now);
        }
        assert_eq!(drain(&mut link, now), [1, 0, 3, 2, 5, 4]);
    }

    #[test]
    fn a_held_datagram_without_successor_leaves_after_the_gap() {
        let now = Instant::now();
        let gap = Duration::from_millis(30);
        let mut link = link(Impairment {
            reorder: 1.0,
            reorder_gap: gap,
            ..Impairment::none()
        });
        let fate = link.handle_datagram(7, 100, now);
        assert_eq!(
            fate,
            Fate::Queued {
                duplicated: false,
                reordered: true
            }
        );
        assert_eq!(drain(&mut link, now), Vec::<u32>::new());
        assert_eq!(link.poll_timeout(), Some(now + gap));
        assert_eq!(drain(&mut link, now + gap), [7]);
    }

    #[test]
    fn the_same_seed_gives_the_same_fates() {
        let impairment = Impairment {
            loss: 0.3,
            duplicate: 0.2,
            reorder: 0.2,
            seed: 99,
            ..Impairment::none()
        };
        let now = Instant::now();
        let fates = |mut link: ImpairedLink<u32>| -> Vec<Fate> {
            (0..200)
                .map(|i| link.handle_datagram(i, 100, now))
                .collect()
        };
        let first = fates(link(impairment.clone()));
        assert_eq!(first, fates(link(impairment)));
        assert!(first.contains(&Fate::Lost));
    }

    #[test]
    fn the_in_flight_bound_drops_the_excess() {
        let now = Instant::now();
        let mut link = ImpairedLink::new(
            Impairment {
                delay: Duration::from_secs(1),
                ..Impairment::none()
            },
            3,
        );
        let fates: Vec<Fate> = (0..5).map(|i| link.handle_datagram(i, 100, now)).collect();
        assert_eq!(fates[3..], [Fate::Overflow, Fate::Overflow]);
        assert_eq!(link.in_flight(), 3);
    }

    #[test]
    fn the_token_bucket_passes_the_burst_then_the_rate() {
        let now = Instant::now();
        let mut link = link(Impairment {
            rate_limit: Some(8_000), // 1000 bytes per second
            rate_burst: 1_000,
            ..Impairment::none()
        });
        assert!(matches!(
            link.handle_datagram(0, 600, now),
            Fate::Queued { .. }
        ));
        assert_eq!(link.handle_datagram(1, 600, now), Fate::RateLimited);
        let later = now + Duration::from_millis(200); // 400 + 200 bytes
        assert!(matches!(
            link.handle_datagram(2, 600, later),
            Fate::Queued { .. }
        ));
    }
}
