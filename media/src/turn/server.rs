//! The TURN server state machine (RFC 8656), sans-IO.
//!
//! # Drive contract
//!
//! - **Handlers** take input: [`Server::handle_client`] for every datagram or stream frame from a
//!   client (UDP, TCP or TLS; streams are split with [`super::framing::next_frame`] first),
//!   [`Server::handle_peer`] for every datagram a relay socket receives,
//!   [`Server::handle_client_closed`] when a TCP or TLS connection ends, and
//!   [`Server::handle_timeout`] when [`Server::poll_timeout`] is reached. Each takes `now`;
//!   `handle_client` also takes the unix time (credentials and nonces carry unix seconds).
//! - **Pollers** give output: drain [`Server::poll_transmit`] (packets to clients and to peers)
//!   and [`Server::poll_event`] (allocations made and closed: the caller binds and drops relay
//!   sockets) until they return `None` after every handler call.
//! - **Getters**: [`Server::stats`] (cumulative counters), [`Server::allocation_count`],
//!   [`Server::tracked_sources`].
//! - **Buffers** (optional): hand the `data` of a sent [`Transmit`] back with
//!   [`Server::recycle`] and the core copies the next relayed payload into it instead of
//!   allocating; a relay running at full rate then allocates nothing per packet.
//!
//! A relay socket is bound by the caller during `handle_client`, through the `bind_relay`
//! callback, when an Allocate request has passed every check; the callback returns the relay's
//! address, or `None` when no port is available (the client gets 508).
//!
//! Handlers return `Err(DropReason)` when the input was dropped without a reply; every drop is
//! also counted in [`Stats`]. Nothing panics on input: every length is checked before use, and a
//! STUN message is only decoded after its length was bounded by the datagram or frame holding it.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ring::hmac;
use rtc_crypto::RTCCryptoProvider;
use rtc_stun::attributes::{
    ATTR_CHANNEL_NUMBER, ATTR_DATA, ATTR_EVEN_PORT, ATTR_LIFETIME, ATTR_MESSAGE_INTEGRITY,
    ATTR_NONCE, ATTR_REALM, ATTR_REQUESTED_ADDRESS_FAMILY, ATTR_REQUESTED_TRANSPORT,
    ATTR_RESERVATION_TOKEN, ATTR_USERNAME, ATTR_XOR_PEER_ADDRESS, ATTR_XOR_RELAYED_ADDRESS,
    AttrType,
};
use rtc_stun::error_code::{
    CODE_ADDR_FAMILY_NOT_SUPPORTED, CODE_ALLOC_MISMATCH, CODE_ALLOC_QUOTA_REACHED,
    CODE_BAD_REQUEST, CODE_FORBIDDEN, CODE_INSUFFICIENT_CAPACITY, CODE_PEER_ADDR_FAMILY_MISMATCH,
    CODE_STALE_NONCE, CODE_UNAUTHORIZED, CODE_UNKNOWN_ATTRIBUTE, CODE_UNSUPPORTED_TRANS_PROTO,
    CODE_WRONG_CREDENTIALS, ErrorCode, ErrorCodeAttribute,
};
use rtc_stun::integrity::MessageIntegrity;
use rtc_stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_INDICATION, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, METHOD_ALLOCATE,
    METHOD_BINDING, METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, METHOD_DATA, METHOD_REFRESH,
    METHOD_SEND, Message, MessageClass, MessageType, Method, Setter, TransactionId,
};
use rtc_stun::textattrs::TextAttribute;
use rtc_stun::uattrs::UnknownAttributes;
use rtc_stun::xoraddr::XorMappedAddress;
use thiserror::Error;

use super::credentials::{CredentialError, TurnSecrets, check_username, parse_username};
use super::limit::{SourceLimit, TokenBucket};
use super::policy::{Denial, PeerPolicy};

/// Channel numbers a client may bind (RFC 8656 §12: 0x4000 through 0x4FFF).
pub const CHANNEL_NUMBERS: std::ops::RangeInclusive<u16> = 0x4000..=0x4FFF;
/// RFC 8656 §9: "The Permission Lifetime MUST be 300 seconds (= 5 minutes)."
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// RFC 8656 §12: a channel binding lasts 10 minutes unless refreshed.
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// The largest payload relayed in either direction. A Data indication carrying it still fits
/// STUN's 16-bit length.
pub const MAX_PAYLOAD: usize = 65_535 - 64;
/// Permissions one allocation may hold (each costs a map entry).
pub const MAX_PERMISSIONS: usize = 128;
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Buffers kept by [`Server::recycle`] for reuse; more are freed.
const SPARE_BUFFERS: usize = 256;
/// A recycled buffer larger than this is freed rather than kept (a rare jumbo payload does not
/// pin its memory).
const SPARE_CAPACITY: usize = 2_048;
const PROTO_UDP: u8 = 17;

/// How a client reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP (RFC 6062 framing of STUN and padded ChannelData).
    Tcp,
    /// TLS over TCP.
    Tls,
}

impl Transport {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// The client side of an allocation: transport, client address, server address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    /// The transport.
    pub transport: Transport,
    /// The client's address as the server sees it.
    pub client: SocketAddr,
    /// The server address the client reached.
    pub server: SocketAddr,
}

/// The server's configuration. Each limit bounds memory or what one identity can do.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The realm in every challenge and long-term key (RFC 8489 §9.2).
    pub realm: String,
    /// Shared secrets; every one is accepted (rotation with overlap).
    pub secrets: TurnSecrets,
    /// Where the relay may send.
    pub policy: PeerPolicy,
    /// Allocations on this node (each holds a UDP socket and its maps).
    pub max_allocations: usize,
    /// Allocations one identity (the part of a TURN REST username after its expiry) may hold at
    /// once, whatever credentials they were made with: minting a fresh credential does not
    /// open a fresh quota. Beyond it Allocate gets 486.
    pub max_allocations_per_identity: usize,
    /// Lifetime granted when the client asks for less or nothing (RFC 8656: 10 minutes).
    pub default_lifetime: Duration,
    /// Longest lifetime granted per Allocate or Refresh.
    pub max_lifetime: Duration,
    /// How long a nonce stays fresh; older ones get 438 Stale Nonce.
    pub nonce_lifetime: Duration,
    /// Relayed bytes per second per allocation, both directions together; 0 means unlimited.
    pub bandwidth: u64,
    /// 401 and 438 replies per second to one source: an IPv4 address, or an IPv6 /64 (they go
    /// to unauthenticated, possibly spoofed sources: this bounds reflection).
    pub unauthorized_per_second: u32,
    /// Burst of such replies above the rate.
    pub unauthorized_burst: u32,
    /// Sources tracked by that rate limit, about 200 bytes each. When the table is full the
    /// source seen least recently is forgotten for a new one, which is never refused for want
    /// of room (why: the `limit` module).
    pub max_tracked_sources: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            realm: "strait".into(),
            secrets: TurnSecrets::default(),
            policy: PeerPolicy::default(),
            max_allocations: 1_000,
            max_allocations_per_identity: 8,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3_600),
            nonce_lifetime: Duration::from_secs(600),
            bandwidth: 1_250_000,
            unauthorized_per_second: 10,
            unauthorized_burst: 20,
            max_tracked_sources: 10_000,
        }
    }
}

/// A packet to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// To a client, on the transport it used.
    Client {
        /// The client.
        to: FiveTuple,
        /// The bytes (a STUN message or ChannelData, padded on streams).
        data: Vec<u8>,
    },
    /// To a peer, from a relay socket. The peer passed the policy just before.
    Peer {
        /// The relay socket's address.
        relay: SocketAddr,
        /// The peer.
        peer: SocketAddr,
        /// The payload.
        data: Vec<u8>,
    },
}

/// Why an allocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// Its lifetime ran out.
    Expired,
    /// A Refresh with lifetime 0.
    Released,
    /// The client's TCP or TLS connection closed.
    ConnectionClosed,
}

/// Something the caller acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// An allocation was made on the relay address `bind_relay` returned.
    Allocated {
        /// The client.
        client: FiveTuple,
        /// The relay address.
        relay: SocketAddr,
    },
    /// An allocation ended: drop its relay socket.
    Closed {
        /// The client.
        client: FiveTuple,
        /// The relay address.
        relay: SocketAddr,
        /// Why.
        reason: CloseReason,
    },
}

/// Why an input was dropped without a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
#[non_exhaustive]
pub enum DropReason {
    /// Not a well-formed STUN message.
    #[error("a malformed STUN message")]
    MalformedStun,
    /// Neither STUN nor ChannelData.
    #[error("neither STUN nor ChannelData")]
    UnknownKind,
    /// A ChannelData number outside 0x4000-0x4FFF.
    #[error("a ChannelData number out of range")]
    BadChannelNumber,
    /// A ChannelData length that does not match the datagram.
    #[error("a ChannelData length that does not match the datagram")]
    BadChannelDataLength,
    /// A STUN message a client does not send to a server (a response, an unknown indication).
    #[error("a STUN message a server does not accept")]
    UnexpectedMessage,
    /// Data on a 5-tuple without an allocation.
    #[error("no allocation on this 5-tuple")]
    NoAllocation,
    /// ChannelData on a channel not bound.
    #[error("no channel bound with this number")]
    UnknownChannel,
    /// Data to or from a peer without a permission.
    #[error("no permission for the peer")]
    NoPermission,
    /// The peer address is denied by the policy.
    #[error("the peer address is denied")]
    Denied,
    /// The allocation's bandwidth is spent.
    #[error("the allocation's bandwidth is exhausted")]
    Bandwidth,
    /// A payload larger than [`MAX_PAYLOAD`].
    #[error("the payload is too large to relay")]
    TooLarge,
    /// A 401 or 438 reply was suppressed by the per-source rate limit.
    #[error("401 replies to this source are rate limited")]
    RateLimited,
    /// A datagram on a relay address without an allocation.
    #[error("no allocation on this relay address")]
    UnknownRelay,
}

impl DropReason {
    /// Every reason.
    pub const ALL: [DropReason; 13] = [
        DropReason::MalformedStun,
        DropReason::UnknownKind,
        DropReason::BadChannelNumber,
        DropReason::BadChannelDataLength,
        DropReason::UnexpectedMessage,
        DropReason::NoAllocation,
        DropReason::UnknownChannel,
        DropReason::NoPermission,
        DropReason::Denied,
        DropReason::Bandwidth,
        DropReason::TooLarge,
        DropReason::RateLimited,
        DropReason::UnknownRelay,
    ];

    /// The label value (snake case).
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::MalformedStun => "malformed_stun",
            DropReason::UnknownKind => "unknown_kind",
            DropReason::BadChannelNumber => "bad_channel_number",
            DropReason::BadChannelDataLength => "bad_channel_data_length",
            DropReason::UnexpectedMessage => "unexpected_message",
            DropReason::NoAllocation => "no_allocation",
            DropReason::UnknownChannel => "unknown_channel",
            DropReason::NoPermission => "no_permission",
            DropReason::Denied => "denied",
            DropReason::Bandwidth => "bandwidth",
            DropReason::TooLarge => "too_large",
            DropReason::RateLimited => "rate_limited",
            DropReason::UnknownRelay => "unknown_relay",
        }
    }
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthFailure {
    /// No MESSAGE-INTEGRITY: the normal first round, answered with a 401 challenge.
    Challenge,
    /// USERNAME, REALM or NONCE missing or unreadable next to MESSAGE-INTEGRITY (400).
    Malformed,
    /// The nonce is too old or not ours (438).
    StaleNonce,
    /// The username is not `<expiry>:<identity>` (401).
    BadUsername,
    /// The credential has expired (401).
    Expired,
    /// Another realm (401).
    WrongRealm,
    /// MESSAGE-INTEGRITY matches no secret (401).
    WrongPassword,
    /// A request on an allocation made with another username (441).
    WrongCredentials,
}

impl AuthFailure {
    /// Every reason.
    pub const ALL: [AuthFailure; 8] = [
        AuthFailure::Challenge,
        AuthFailure::Malformed,
        AuthFailure::StaleNonce,
        AuthFailure::BadUsername,
        AuthFailure::Expired,
        AuthFailure::WrongRealm,
        AuthFailure::WrongPassword,
        AuthFailure::WrongCredentials,
    ];

    /// The label value (snake case).
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Challenge => "challenge",
            AuthFailure::Malformed => "malformed",
            AuthFailure::StaleNonce => "stale_nonce",
            AuthFailure::BadUsername => "bad_username",
            AuthFailure::Expired => "expired",
            AuthFailure::WrongRealm => "wrong_realm",
            AuthFailure::WrongPassword => "wrong_password",
            AuthFailure::WrongCredentials => "wrong_credentials",
        }
    }
}

/// Cumulative counters. The gateway exports them as metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Allocations made.
    pub allocations_created: u64,
    /// Allocate requests refused by a quota (486 per identity, 508 per node).
    pub quota_refusals: u64,
    /// Sources the 401 rate limit forgot to make room for a new one: its table was full. A
    /// steady climb is a flood of spoofed sources.
    pub rate_limit_evictions: u64,
    /// Packets relayed from clients to peers.
    pub to_peer_packets: u64,
    /// Payload bytes relayed from clients to peers.
    pub to_peer_bytes: u64,
    /// Packets relayed from peers to clients.
    pub to_client_packets: u64,
    /// Payload bytes relayed from peers to clients.
    pub to_client_bytes: u64,
    denials: [u64; Denial::ALL.len()],
    auth_failures: [u64; AuthFailure::ALL.len()],
    drops: [u64; DropReason::ALL.len()],
}

impl Stats {
    /// Peer addresses refused (403 or a dropped packet) for `reason`.
    pub fn denials(&self, reason: Denial) -> u64 {
        self.denials[denial_index(reason)]
    }

    /// Requests not authenticated for `reason`.
    pub fn auth_failures(&self, reason: AuthFailure) -> u64 {
        self.auth_failures[reason as usize]
    }

    /// Inputs dropped for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }
}

fn denial_index(d: Denial) -> usize {
    Denial::ALL.iter().position(|x| *x == d).unwrap_or(0)
}

/// Why the server could not be built.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The crypto provider (ring) is unavailable.
    #[error("crypto provider: {0}")]
    Crypto(String),
}

struct Allocation {
    relay: SocketAddr,
    username: String,
    /// The long-term key the allocation was made with; later requests on it are checked
    /// against it.
    key: Vec<u8>,
    allocate_tid: TransactionId,
    expires: Instant,
    permissions: HashMap<IpAddr, Instant>,
    channels: HashMap<u16, (SocketAddr, Instant)>,
    peers: HashMap<SocketAddr, u16>,
    bucket: TokenBucket,
}

impl Allocation {
    /// Whether `len` bytes may be relayed between this allocation and `peer` now, in either
    /// direction: the peer's IP needs a live permission (RFC 8656 §10.3, §11.3: otherwise the
    /// datagram is discarded), and the allocation's bandwidth bucket (`bandwidth` bytes per
    /// second, 0 for none) must hold them.
    fn admit(
        &mut self,
        peer: SocketAddr,
        len: usize,
        bandwidth: u64,
        now: Instant,
    ) -> Result<(), DropReason> {
        if self.permissions.get(&peer.ip()).is_none_or(|e| *e <= now) {
            return Err(DropReason::NoPermission);
        }
        if bandwidth > 0 && !self.bucket.take(len as u64, bandwidth, bandwidth, now) {
            return Err(DropReason::Bandwidth);
        }
        Ok(())
    }
}

/// The TURN server.
pub struct Server {
    config: ServerConfig,
    crypto: Arc<dyn RTCCryptoProvider>,
    nonce_key: hmac::Key,
    rng: StdRng,
    allocations: HashMap<FiveTuple, Allocation>,
    by_relay: HashMap<SocketAddr, FiveTuple>,
    /// Allocations held per identity (see [`quota_key`]); an identity without allocations has
    /// no entry, so the map is no larger than `allocations`.
    per_identity: HashMap<String, usize>,
    /// The budget of 401 and 438 replies per source.
    unauthorized: SourceLimit,
    next_sweep: Option<Instant>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
    spare: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("realm", &self.config.realm)
            .field("allocations", &self.allocations.len())
            .finish_non_exhaustive()
    }
}

/// The outcome of checking a request's credentials.
struct Authenticated {
    username: String,
    key: Vec<u8>,
}

impl Server {
    /// A server; `seed` keys the nonces and seeds the transaction ids of Data indications.
    pub fn new(config: ServerConfig, seed: [u8; 32]) -> Result<Server, ServerError> {
        let crypto =
            rtc_crypto::default_provider().map_err(|e| ServerError::Crypto(e.to_string()))?;
        let unauthorized = SourceLimit::new(
            config.unauthorized_per_second,
            config.unauthorized_burst,
            config.max_tracked_sources,
        );
        Ok(Server {
            nonce_key: hmac::Key::new(hmac::HMAC_SHA256, &seed),
            rng: StdRng::from_seed(seed),
            crypto,
            config,
            allocations: HashMap::new(),
            by_relay: HashMap::new(),
            per_identity: HashMap::new(),
            unauthorized,
            next_sweep: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            spare: Vec::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Cumulative counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Allocations now.
    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    /// Sources the 401 rate limit tracks now (IPv4 addresses and IPv6 /64s), at most
    /// [`ServerConfig::max_tracked_sources`].
    pub fn tracked_sources(&self) -> usize {
        self.unauthorized.len()
    }

    /// The next packet to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Takes back the `data` of a [`Transmit`] that was sent: relayed payloads are copied into
    /// such buffers before new ones are allocated. Up to 256 buffers of up to 2 KiB capacity are
    /// kept; others are freed.
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS && buf.capacity() <= SPARE_CAPACITY {
            buf.clear();
            self.spare.push(buf);
        }
    }

    /// An empty buffer for an outgoing packet: a recycled one when there is one.
    fn buffer(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`Server::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_sweep
    }

    /// Expires allocations, permissions, channels and idle rate-limit entries.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_sweep.is_none_or(|t| now < t) {
            return;
        }
        let expired: Vec<FiveTuple> = self
            .allocations
            .iter()
            .filter(|(_, a)| a.expires <= now)
            .map(|(t, _)| *t)
            .collect();
        for tuple in expired {
            self.remove_allocation(&tuple, CloseReason::Expired);
        }
        for alloc in self.allocations.values_mut() {
            alloc.permissions.retain(|_, exp| *exp > now);
            let peers = &mut alloc.peers;
            alloc.channels.retain(|_, (peer, exp)| {
                let keep = *exp > now;
                if !keep {
                    peers.remove(peer);
                }
                keep
            });
        }
        self.unauthorized.sweep(now);
        self.next_sweep = (!self.allocations.is_empty() || !self.unauthorized.is_empty())
            .then_some(now + SWEEP_INTERVAL);
    }

    /// A TCP or TLS connection ended: its allocation goes with it (RFC 8656 §3.1).
    pub fn handle_client_closed(&mut self, client: &FiveTuple) {
        self.remove_allocation(client, CloseReason::ConnectionClosed);
    }

    /// A datagram (UDP) or a frame (TCP, TLS) from a client.
    pub fn handle_client(
        &mut self,
        client: FiveTuple,
        data: &[u8],
        now: Instant,
        unix: u64,
        bind_relay: &mut dyn FnMut(&FiveTuple) -> Option<SocketAddr>,
    ) -> Result<(), DropReason> {
        let result = match data.first().map(|b| b >> 6) {
            Some(0) => self.handle_stun(client, data, now, unix, bind_relay),
            Some(1) => self.handle_channel_data(client, data, now),
            _ => Err(DropReason::UnknownKind),
        };
        self.count(result)
    }

    /// A datagram a relay socket received from `peer`.
    pub fn handle_peer(
        &mut self,
        relay: SocketAddr,
        peer: SocketAddr,
        data: &[u8],
        now: Instant,
    ) -> Result<(), DropReason> {
        let result = self.relay_to_client(relay, peer, data, now);
        self.count(result)
    }

    fn count(&mut self, result: Result<(), DropReason>) -> Result<(), DropReason> {
        if let Err(reason) = result {
            self.stats.drops[reason as usize] += 1;
        }
        result
    }

    fn schedule(&mut self, now: Instant) {
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + SWEEP_INTERVAL);
        }
    }

    // ---- client to peer ----

    fn handle_channel_data(
        &mut self,
        client: FiveTuple,
        data: &[u8],
        now: Instant,
    ) -> Result<(), DropReason> {
        let (Some(&[n0, n1, l0, l1]), payload) = (data.first_chunk::<4>(), data.get(4..)) else {
            return Err(DropReason::BadChannelDataLength);
        };
        let number = u16::from_be_bytes([n0, n1]);
        if !CHANNEL_NUMBERS.contains(&number) {
            return Err(DropReason::BadChannelNumber);
        }
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        let payload = payload.unwrap_or_default();
        // RFC 8656 §12.5: the length must not exceed the data; up to three bytes of padding may
        // follow it.
        if len > payload.len() || payload.len() > len.next_multiple_of(4) {
            return Err(DropReason::BadChannelDataLength);
        }
        let payload = &payload[..len];
        let alloc = self
            .allocations
            .get(&client)
            .ok_or(DropReason::NoAllocation)?;
        let (peer, expires) = *alloc
            .channels
            .get(&number)
            .ok_or(DropReason::UnknownChannel)?;
        if expires <= now {
            return Err(DropReason::UnknownChannel);
        }
        self.relay_to_peer(client, peer, payload, now)
    }

    fn relay_to_peer(
        &mut self,
        client: FiveTuple,
        peer: SocketAddr,
        payload: &[u8],
        now: Instant,
    ) -> Result<(), DropReason> {
        if payload.len() > MAX_PAYLOAD {
            return Err(DropReason::TooLarge);
        }
        if let Err(denial) = self.config.policy.check(peer) {
            self.stats.denials[denial_index(denial)] += 1;
            return Err(DropReason::Denied);
        }
        let bandwidth = self.config.bandwidth;
        let alloc = self
            .allocations
            .get_mut(&client)
            .ok_or(DropReason::NoAllocation)?;
        alloc.admit(peer, payload.len(), bandwidth, now)?;
        let relay = alloc.relay;
        self.stats.to_peer_packets += 1;
        self.stats.to_peer_bytes += payload.len() as u64;
        let mut data = self.buffer();
        data.extend_from_slice(payload);
        self.transmits
            .push_back(Transmit::Peer { relay, peer, data });
        Ok(())
    }

    // ---- peer to client ----

    fn relay_to_client(
        &mut self,
        relay: SocketAddr,
        peer: SocketAddr,
        data: &[u8],
        now: Instant,
    ) -> Result<(), DropReason> {
        let client = *self.by_relay.get(&relay).ok_or(DropReason::UnknownRelay)?;
        if data.len() > MAX_PAYLOAD {
            return Err(DropReason::TooLarge);
        }
        let bandwidth = self.config.bandwidth;
        let alloc = self
            .allocations
            .get_mut(&client)
            .ok_or(DropReason::NoAllocation)?;
        alloc.admit(peer, data.len(), bandwidth, now)?;
        let channel = alloc
            .peers
            .get(&peer)
            .copied()
            .filter(|n| alloc.channels.get(n).is_some_and(|(_, exp)| *exp > now));
        let out = match channel {
            Some(number) => {
                let mut out = self.buffer();
                out.reserve(4 + data.len() + 3);
                out.extend_from_slice(&number.to_be_bytes());
                out.extend_from_slice(&(data.len() as u16).to_be_bytes());
                out.extend_from_slice(data);
                // RFC 8656 §12.5: padded to four bytes over streams.
                if client.transport != Transport::Udp {
                    out.resize(out.len().next_multiple_of(4), 0);
                }
                out
            }
            None => {
                let mut tid = TransactionId::default();
                self.rng.fill(&mut tid.0);
                let mut m = Message::new();
                m.set_type(MessageType::new(METHOD_DATA, CLASS_INDICATION));
                m.transaction_id = tid;
                m.write_header();
                add_xor(&mut m, ATTR_XOR_PEER_ADDRESS, peer);
                m.add(ATTR_DATA, data);
                m.raw
            }
        };
        self.stats.to_client_packets += 1;
        self.stats.to_client_bytes += data.len() as u64;
        self.transmits.push_back(Transmit::Client {
            to: client,
            data: out,
        });
        Ok(())
    }

    // ---- STUN ----

    fn handle_stun(
        &mut self,
        client: FiveTuple,
        data: &[u8],
        now: Instant,
        unix: u64,
        bind_relay: &mut dyn FnMut(&FiveTuple) -> Option<SocketAddr>,
    ) -> Result<(), DropReason> {
        let msg = decode(data)?;
        let (method, class) = (msg.typ.method, msg.typ.class);
        if class == CLASS_INDICATION {
            return match method {
                METHOD_SEND => self.handle_send(client, &msg, now),
                // A Binding indication is a keep-alive.
                METHOD_BINDING => Ok(()),
                _ => Err(DropReason::UnexpectedMessage),
            };
        }
        if class != CLASS_REQUEST {
            return Err(DropReason::UnexpectedMessage);
        }
        if let Some(unknown) = unknown_required(&msg) {
            let reply = self.error(&msg, CODE_UNKNOWN_ATTRIBUTE, None, |m| {
                add(m, &UnknownAttributes(unknown));
            });
            return self.send(client, reply);
        }
        match method {
            METHOD_BINDING => {
                let reply = self.response(&msg, CLASS_SUCCESS_RESPONSE, None, |m| {
                    add(m, &xor_mapped(client.client));
                });
                self.send(client, reply)
            }
            METHOD_ALLOCATE | METHOD_REFRESH | METHOD_CREATE_PERMISSION | METHOD_CHANNEL_BIND => {
                let mut msg = msg;
                let auth = match self.authenticate(client, method, &mut msg, now, unix) {
                    Ok(auth) => auth,
                    Err(result) => return result,
                };
                match method {
                    METHOD_ALLOCATE => self.allocate(client, &msg, &auth, now, bind_relay),
                    METHOD_REFRESH => self.refresh(client, &msg, &auth, now),
                    METHOD_CREATE_PERMISSION => self.create_permission(client, &msg, &auth, now),
                    _ => self.channel_bind(client, &msg, &auth, now),
                }
            }
            _ => {
                let reply = self.error(&msg, CODE_BAD_REQUEST, None, |_| {});
                self.send(client, reply)
            }
        }
    }

    fn send(&mut self, to: FiveTuple, data: Vec<u8>) -> Result<(), DropReason> {
        self.transmits.push_back(Transmit::Client { to, data });
        Ok(())
    }

    /// Checks the long-term credential (RFC 8489 §9.2.4). On failure the reply (if any) is
    /// queued and the handler's result returned in `Err`.
    ///
    /// The credential's expiry is checked on Allocate only (the TURN REST scheme): a request on
    /// an existing allocation needs the allocation's username and passes integrity with the key
    /// the allocation was made with, however old the credential and whichever secrets are
    /// configured now. A call thus keeps its relay for as long as the client refreshes it.
    fn authenticate(
        &mut self,
        client: FiveTuple,
        method: Method,
        msg: &mut Message,
        now: Instant,
        unix: u64,
    ) -> Result<Authenticated, Result<(), DropReason>> {
        if !msg.contains(ATTR_MESSAGE_INTEGRITY) {
            return Err(self.challenge(
                client,
                msg,
                CODE_UNAUTHORIZED,
                AuthFailure::Challenge,
                now,
                unix,
            ));
        }
        let text = |m: &Message, attr: AttrType| TextAttribute::get_from_as(m, attr).ok();
        let (Some(username), Some(realm), Some(nonce)) = (
            text(msg, ATTR_USERNAME),
            text(msg, ATTR_REALM),
            text(msg, ATTR_NONCE),
        ) else {
            self.stats.auth_failures[AuthFailure::Malformed as usize] += 1;
            let reply = self.error(msg, CODE_BAD_REQUEST, None, |_| {});
            return Err(self.send(client, reply));
        };
        if !self.nonce_fresh(&nonce.text, client.client.ip(), unix) {
            return Err(self.challenge(
                client,
                msg,
                CODE_STALE_NONCE,
                AuthFailure::StaleNonce,
                now,
                unix,
            ));
        }
        if realm.text != self.config.realm {
            return Err(self.challenge(
                client,
                msg,
                CODE_UNAUTHORIZED,
                AuthFailure::WrongRealm,
                now,
                unix,
            ));
        }
        if method != METHOD_ALLOCATE
            && let Some(allocation) = self.allocations.get(&client)
            && allocation.username == username.text
        {
            let key = allocation.key.clone();
            if MessageIntegrity::check(msg, &key, self.crypto.crypto()).is_ok() {
                return Ok(Authenticated {
                    username: username.text,
                    key,
                });
            }
            return Err(self.challenge(
                client,
                msg,
                CODE_UNAUTHORIZED,
                AuthFailure::WrongPassword,
                now,
                unix,
            ));
        }
        match check_username(&username.text, unix) {
            Ok(_) => {}
            Err(CredentialError::Expired { .. }) => {
                return Err(self.challenge(
                    client,
                    msg,
                    CODE_UNAUTHORIZED,
                    AuthFailure::Expired,
                    now,
                    unix,
                ));
            }
            Err(_) => {
                return Err(self.challenge(
                    client,
                    msg,
                    CODE_UNAUTHORIZED,
                    AuthFailure::BadUsername,
                    now,
                    unix,
                ));
            }
        }
        let crypto = self.crypto.crypto();
        let mut found = None;
        for password in self.config.secrets.passwords(&username.text) {
            let Ok(key) = MessageIntegrity::long_term_integrity_key(
                username.text.clone(),
                realm.text.clone(),
                password,
                crypto,
            ) else {
                continue;
            };
            if MessageIntegrity::check(msg, &key, crypto).is_ok() {
                found = Some(key);
                break;
            }
        }
        match found {
            Some(key) => Ok(Authenticated {
                username: username.text,
                key,
            }),
            None => Err(self.challenge(
                client,
                msg,
                CODE_UNAUTHORIZED,
                AuthFailure::WrongPassword,
                now,
                unix,
            )),
        }
    }

    /// A 401 or 438 with REALM and a fresh NONCE, within the per-source rate limit.
    fn challenge(
        &mut self,
        client: FiveTuple,
        msg: &Message,
        code: ErrorCode,
        failure: AuthFailure,
        now: Instant,
        unix: u64,
    ) -> Result<(), DropReason> {
        self.stats.auth_failures[failure as usize] += 1;
        let ip = client.client.ip();
        let allowed = self.unauthorized.take(ip, now);
        self.stats.rate_limit_evictions = self.unauthorized.evictions();
        if !allowed {
            return Err(DropReason::RateLimited);
        }
        self.schedule(now);
        let nonce = self.make_nonce(ip, unix);
        let realm = self.config.realm.clone();
        let reply = self.error(msg, code, None, |m| {
            add(m, &TextAttribute::new(ATTR_REALM, realm));
            add(m, &TextAttribute::new(ATTR_NONCE, nonce));
        });
        self.send(client, reply)
    }

    fn make_nonce(&self, ip: IpAddr, unix: u64) -> String {
        let tag = self.nonce_tag(ip, unix);
        format!("{unix:016x}{tag:016x}")
    }

    fn nonce_tag(&self, ip: IpAddr, issued: u64) -> u64 {
        let mut input = Vec::with_capacity(24);
        input.extend_from_slice(&issued.to_be_bytes());
        match ip {
            IpAddr::V4(v4) => input.extend_from_slice(&v4.octets()),
            IpAddr::V6(v6) => input.extend_from_slice(&v6.octets()),
        }
        let tag = hmac::sign(&self.nonce_key, &input);
        let mut first = [0u8; 8];
        first.copy_from_slice(&tag.as_ref()[..8]);
        u64::from_be_bytes(first)
    }

    fn nonce_fresh(&self, nonce: &str, ip: IpAddr, unix: u64) -> bool {
        if nonce.len() != 32 || !nonce.is_ascii() {
            return false;
        }
        let (Ok(issued), Ok(tag)) = (
            u64::from_str_radix(&nonce[..16], 16),
            u64::from_str_radix(&nonce[16..], 16),
        ) else {
            return false;
        };
        let expected = self.nonce_tag(ip, issued);
        if !rtc_crypto::constant_time_eq(&expected.to_be_bytes(), &tag.to_be_bytes()) {
            return false;
        }
        issued <= unix.saturating_add(60)
            && unix.saturating_sub(issued) <= self.config.nonce_lifetime.as_secs()
    }

    fn allocate(
        &mut self,
        client: FiveTuple,
        msg: &Message,
        auth: &Authenticated,
        now: Instant,
        bind_relay: &mut dyn FnMut(&FiveTuple) -> Option<SocketAddr>,
    ) -> Result<(), DropReason> {
        let key = Some(auth.key.as_slice());
        if let Some(existing) = self.allocations.get(&client) {
            // RFC 8656 §7.2: a retransmitted Allocate gets the same success again.
            let reply = if existing.allocate_tid == msg.transaction_id
                && existing.username == auth.username
            {
                let (relay, remaining) = (
                    existing.relay,
                    existing.expires.saturating_duration_since(now),
                );
                self.response(msg, CLASS_SUCCESS_RESPONSE, key, |m| {
                    add_xor(m, ATTR_XOR_RELAYED_ADDRESS, relay);
                    add(m, &lifetime(remaining));
                    add(m, &xor_mapped(client.client));
                })
            } else {
                self.error(msg, CODE_ALLOC_MISMATCH, key, |_| {})
            };
            return self.send(client, reply);
        }
        let refuse = |this: &mut Self, code: ErrorCode| {
            let reply = this.error(msg, code, key, |_| {});
            this.send(client, reply)
        };
        match msg.get(ATTR_REQUESTED_TRANSPORT) {
            Ok(v) if v.len() == 4 && v[0] == PROTO_UDP => {}
            Ok(v) if v.len() == 4 => return refuse(self, CODE_UNSUPPORTED_TRANS_PROTO),
            _ => return refuse(self, CODE_BAD_REQUEST),
        }
        // No reserved port pairs: EVEN-PORT and RESERVATION-TOKEN cannot be honoured.
        if msg.contains(ATTR_EVEN_PORT) || msg.contains(ATTR_RESERVATION_TOKEN) {
            return refuse(self, CODE_INSUFFICIENT_CAPACITY);
        }
        if let Ok(v) = msg.get(ATTR_REQUESTED_ADDRESS_FAMILY)
            && v.first() != Some(&0x01)
        {
            return refuse(self, CODE_ADDR_FAMILY_NOT_SUPPORTED);
        }
        let held = self
            .per_identity
            .get(quota_key(&auth.username))
            .copied()
            .unwrap_or(0);
        if held >= self.config.max_allocations_per_identity {
            self.stats.quota_refusals += 1;
            return refuse(self, CODE_ALLOC_QUOTA_REACHED);
        }
        if self.allocations.len() >= self.config.max_allocations {
            self.stats.quota_refusals += 1;
            return refuse(self, CODE_INSUFFICIENT_CAPACITY);
        }
        let granted = self.lifetime_for(msg);
        let Some(relay) = bind_relay(&client) else {
            return refuse(self, CODE_INSUFFICIENT_CAPACITY);
        };
        let burst = self.config.bandwidth;
        self.allocations.insert(
            client,
            Allocation {
                relay,
                username: auth.username.clone(),
                key: auth.key.clone(),
                allocate_tid: msg.transaction_id,
                expires: now + granted,
                permissions: HashMap::new(),
                channels: HashMap::new(),
                peers: HashMap::new(),
                bucket: TokenBucket::new(burst, now),
            },
        );
        self.by_relay.insert(relay, client);
        *self
            .per_identity
            .entry(quota_key(&auth.username).to_owned())
            .or_insert(0) += 1;
        self.stats.allocations_created += 1;
        self.schedule(now);
        self.events.push_back(Event::Allocated { client, relay });
        let reply = self.response(msg, CLASS_SUCCESS_RESPONSE, key, |m| {
            add_xor(m, ATTR_XOR_RELAYED_ADDRESS, relay);
            add(m, &lifetime(granted));
            add(m, &xor_mapped(client.client));
        });
        self.send(client, reply)
    }

    /// RFC 8656 §7.2: the requested lifetime, at least the default, at most the cap.
    fn lifetime_for(&self, msg: &Message) -> Duration {
        let requested = msg
            .get(ATTR_LIFETIME)
            .ok()
            .and_then(|v| v.first_chunk::<4>().map(|b| u32::from_be_bytes(*b)))
            .map(|s| Duration::from_secs(u64::from(s)));
        let default = self.config.default_lifetime.min(self.config.max_lifetime);
        requested
            .map(|r| r.max(default).min(self.config.max_lifetime))
            .unwrap_or(default)
    }

    /// Looks up the client's allocation and checks it belongs to the authenticated username.
    /// On failure the error reply is queued and `Err` holds the handler's result.
    fn own_allocation(
        &mut self,
        client: FiveTuple,
        msg: &Message,
        auth: &Authenticated,
    ) -> Result<(), Result<(), DropReason>> {
        let code = match self.allocations.get(&client) {
            None => CODE_ALLOC_MISMATCH,
            Some(a) if a.username != auth.username => {
                self.stats.auth_failures[AuthFailure::WrongCredentials as usize] += 1;
                CODE_WRONG_CREDENTIALS
            }
            Some(_) => return Ok(()),
        };
        let reply = self.error(msg, code, Some(&auth.key), |_| {});
        Err(self.send(client, reply))
    }

    fn refresh(
        &mut self,
        client: FiveTuple,
        msg: &Message,
        auth: &Authenticated,
        now: Instant,
    ) -> Result<(), DropReason> {
        if let Err(result) = self.own_allocation(client, msg, auth) {
            return result;
        }
        let zero = msg
            .get(ATTR_LIFETIME)
            .ok()
            .and_then(|v| v.first_chunk::<4>().map(|b| u32::from_be_bytes(*b)))
            == Some(0);
        let granted = if zero {
            self.remove_allocation(&client, CloseReason::Released);
            Duration::ZERO
        } else {
            let granted = self.lifetime_for(msg);
            if let Some(a) = self.allocations.get_mut(&client) {
                a.expires = now + granted;
            }
            granted
        };
        let reply = self.response(msg, CLASS_SUCCESS_RESPONSE, Some(&auth.key), |m| {
            add(m, &lifetime(granted));
        });
        self.send(client, reply)
    }

    fn create_permission(
        &mut self,
        client: FiveTuple,
        msg: &Message,
        auth: &Authenticated,
        now: Instant,
    ) -> Result<(), DropReason> {
        if let Err(result) = self.own_allocation(client, msg, auth) {
            return result;
        }
        let key = Some(auth.key.as_slice());
        let mut peers = Vec::new();
        for attr in msg
            .attributes
            .0
            .iter()
            .filter(|a| a.typ == ATTR_XOR_PEER_ADDRESS)
        {
            match parse_xor_addr(&attr.value, &msg.transaction_id) {
                Some(peer) => peers.push(peer),
                None => {
                    let reply = self.error(msg, CODE_BAD_REQUEST, key, |_| {});
                    return self.send(client, reply);
                }
            }
        }
        if peers.is_empty() {
            let reply = self.error(msg, CODE_BAD_REQUEST, key, |_| {});
            return self.send(client, reply);
        }
        // RFC 8656 §9.2: all or nothing — one refused address refuses the request.
        for peer in &peers {
            if let Err(denial) = self.config.policy.check_ip(peer.ip()) {
                self.stats.denials[denial_index(denial)] += 1;
                let reply = self.error(msg, CODE_FORBIDDEN, key, |_| {});
                return self.send(client, reply);
            }
        }
        let Some(alloc) = self.allocations.get_mut(&client) else {
            return Err(DropReason::NoAllocation);
        };
        if peers.iter().any(|p| p.is_ipv4() != alloc.relay.is_ipv4()) {
            let reply = self.error(msg, CODE_PEER_ADDR_FAMILY_MISMATCH, key, |_| {});
            return self.send(client, reply);
        }
        let new = peers
            .iter()
            .filter(|p| !alloc.permissions.contains_key(&p.ip()))
            .count();
        if alloc.permissions.len() + new > MAX_PERMISSIONS {
            let reply = self.error(msg, CODE_INSUFFICIENT_CAPACITY, key, |_| {});
            return self.send(client, reply);
        }
        for peer in peers {
            alloc
                .permissions
                .insert(peer.ip(), now + PERMISSION_LIFETIME);
        }
        let reply = self.response(msg, CLASS_SUCCESS_RESPONSE, key, |_| {});
        self.send(client, reply)
    }

    fn channel_bind(
        &mut self,
        client: FiveTuple,
        msg: &Message,
        auth: &Authenticated,
        now: Instant,
    ) -> Result<(), DropReason> {
        if let Err(result) = self.own_allocation(client, msg, auth) {
            return result;
        }
        let key = Some(auth.key.as_slice());
        let number = msg
            .get(ATTR_CHANNEL_NUMBER)
            .ok()
            .filter(|v| v.len() == 4)
            .map(|v| u16::from_be_bytes([v[0], v[1]]));
        let peer = msg
            .get(ATTR_XOR_PEER_ADDRESS)
            .ok()
            .and_then(|v| parse_xor_addr(&v, &msg.transaction_id));
        let (Some(number), Some(peer)) = (number, peer) else {
            let reply = self.error(msg, CODE_BAD_REQUEST, key, |_| {});
            return self.send(client, reply);
        };
        if !CHANNEL_NUMBERS.contains(&number) {
            let reply = self.error(msg, CODE_BAD_REQUEST, key, |_| {});
            return self.send(client, reply);
        }
        if let Err(denial) = self.config.policy.check(peer) {
            self.stats.denials[denial_index(denial)] += 1;
            let reply = self.error(msg, CODE_FORBIDDEN, key, |_| {});
            return self.send(client, reply);
        }
        let Some(alloc) = self.allocations.get_mut(&client) else {
            return Err(DropReason::NoAllocation);
        };
        if peer.is_ipv4() != alloc.relay.is_ipv4() {
            let reply = self.error(msg, CODE_PEER_ADDR_FAMILY_MISMATCH, key, |_| {});
            return self.send(client, reply);
        }
        // RFC 8656 §11.2: a number bound to another peer, or a peer bound to another number,
        // is refused.
        let number_taken = alloc.channels.get(&number).is_some_and(|(p, _)| *p != peer);
        let peer_taken = alloc.peers.get(&peer).is_some_and(|n| *n != number);
        let new_permission = !alloc.permissions.contains_key(&peer.ip());
        if number_taken || peer_taken {
            let reply = self.error(msg, CODE_BAD_REQUEST, key, |_| {});
            return self.send(client, reply);
        }
        if new_permission && alloc.permissions.len() >= MAX_PERMISSIONS {
            let reply = self.error(msg, CODE_INSUFFICIENT_CAPACITY, key, |_| {});
            return self.send(client, reply);
        }
        alloc
            .channels
            .insert(number, (peer, now + CHANNEL_LIFETIME));
        alloc.peers.insert(peer, number);
        alloc
            .permissions
            .insert(peer.ip(), now + PERMISSION_LIFETIME);
        let reply = self.response(msg, CLASS_SUCCESS_RESPONSE, key, |_| {});
        self.send(client, reply)
    }

    fn handle_send(
        &mut self,
        client: FiveTuple,
        msg: &Message,
        now: Instant,
    ) -> Result<(), DropReason> {
        if !self.allocations.contains_key(&client) {
            return Err(DropReason::NoAllocation);
        }
        let peer = msg
            .get(ATTR_XOR_PEER_ADDRESS)
            .ok()
            .and_then(|v| parse_xor_addr(&v, &msg.transaction_id))
            .ok_or(DropReason::MalformedStun)?;
        let data = msg.get(ATTR_DATA).map_err(|_| DropReason::MalformedStun)?;
        self.relay_to_peer(client, peer, &data, now)
    }

    fn remove_allocation(&mut self, client: &FiveTuple, reason: CloseReason) {
        let Some(alloc) = self.allocations.remove(client) else {
            return;
        };
        self.by_relay.remove(&alloc.relay);
        let identity = quota_key(&alloc.username);
        if let Some(n) = self.per_identity.get_mut(identity) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_identity.remove(identity);
            }
        }
        self.events.push_back(Event::Closed {
            client: *client,
            relay: alloc.relay,
            reason,
        });
    }

    // ---- message building ----

    fn response(
        &self,
        req: &Message,
        class: MessageClass,
        key: Option<&[u8]>,
        attrs: impl FnOnce(&mut Message),
    ) -> Vec<u8> {
        build(
            req.typ.method,
            class,
            req.transaction_id,
            key,
            &*self.crypto,
            attrs,
        )
    }

    fn error(
        &self,
        req: &Message,
        code: ErrorCode,
        key: Option<&[u8]>,
        attrs: impl FnOnce(&mut Message),
    ) -> Vec<u8> {
        self.response(req, CLASS_ERROR_RESPONSE, key, |m| {
            add(
                m,
                &ErrorCodeAttribute {
                    code,
                    reason: reason_phrase(code).as_bytes().to_vec(),
                },
            );
            attrs(m);
        })
    }
}

/// What an allocation counts against in `max_allocations_per_identity`: the identity of its
/// TURN REST username. The username embeds its expiry, so keying by the whole of it let every
/// freshly minted credential of one identity open a fresh quota.
///
/// An allocation's username was parsed when it was made, so the fallback (the whole username)
/// is not reached; it keeps the function total, and counting up and down both go through it.
fn quota_key(username: &str) -> &str {
    parse_username(username).map_or(username, |u| u.identity)
}

fn build(
    method: Method,
    class: MessageClass,
    tid: TransactionId,
    key: Option<&[u8]>,
    crypto: &dyn RTCCryptoProvider,
    attrs: impl FnOnce(&mut Message),
) -> Vec<u8> {
    let mut m = Message::new();
    m.set_type(MessageType::new(method, class));
    m.transaction_id = tid;
    m.write_header();
    attrs(&mut m);
    if let Some(key) = key {
        add(
            &mut m,
            &MessageIntegrity::new_raw_integrity_with_provider(key.to_vec(), crypto.crypto()),
        );
    }
    m.raw
}

/// Adds an attribute whose encoding cannot fail for the values this module builds (addresses,
/// short texts, error codes); a failure leaves the attribute out rather than panicking.
fn add(m: &mut Message, setter: &dyn Setter) {
    if let Err(e) = setter.add_to(m) {
        tracing::debug!(error = %e, "turn: attribute left out");
    }
}

fn reason_phrase(code: ErrorCode) -> &'static str {
    match code.0 {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        420 => "Unknown Attribute",
        437 => "Allocation Mismatch",
        438 => "Stale Nonce",
        440 => "Address Family not Supported",
        441 => "Wrong Credentials",
        442 => "Unsupported Transport Protocol",
        443 => "Peer Address Family Mismatch",
        486 => "Allocation Quota Reached",
        508 => "Insufficient Capacity",
        _ => "Error",
    }
}

fn lifetime(d: Duration) -> impl Setter {
    rtc_turn::proto::lifetime::Lifetime(d)
}

fn xor_mapped(addr: SocketAddr) -> XorMappedAddress {
    XorMappedAddress {
        ip: addr.ip(),
        port: addr.port(),
    }
}

fn add_xor(m: &mut Message, attr: AttrType, addr: SocketAddr) {
    if let Err(e) = xor_mapped(addr).add_to_as(m, attr) {
        tracing::debug!(error = %e, "turn: address attribute left out");
    }
}

/// Decodes an XOR-*-ADDRESS value (RFC 8489 §14.2); `None` when malformed.
fn parse_xor_addr(v: &[u8], tid: &TransactionId) -> Option<SocketAddr> {
    let &[_, family, p0, p1] = v.first_chunk::<4>()?;
    let cookie = 0x2112_A442u32.to_be_bytes();
    let port = u16::from_be_bytes([p0 ^ cookie[0], p1 ^ cookie[1]]);
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&cookie);
    mask[4..].copy_from_slice(&tid.0);
    match (family, v.len()) {
        (0x01, 8) => {
            let mut ip = [0u8; 4];
            for i in 0..4 {
                ip[i] = v[4 + i] ^ mask[i];
            }
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
        }
        (0x02, 20) => {
            let mut ip = [0u8; 16];
            for i in 0..16 {
                ip[i] = v[4 + i] ^ mask[i];
            }
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        _ => None,
    }
}

/// Decodes a STUN message whose length field matches the input exactly.
fn decode(data: &[u8]) -> Result<Message, DropReason> {
    if data.len() < 20 || data.len() > 20 + usize::from(u16::MAX) {
        return Err(DropReason::MalformedStun);
    }
    let declared = usize::from(u16::from_be_bytes([data[2], data[3]]));
    if declared % 4 != 0 || 20 + declared != data.len() {
        return Err(DropReason::MalformedStun);
    }
    let mut msg = Message::new();
    msg.raw.clear();
    msg.raw.extend_from_slice(data);
    msg.decode().map_err(|_| DropReason::MalformedStun)?;
    Ok(msg)
}

/// Comprehension-required attributes (type below 0x8000) this server does not understand.
fn unknown_required(msg: &Message) -> Option<Vec<AttrType>> {
    const KNOWN: [u16; 16] = [
        0x0006, 0x0008, 0x0009, 0x000C, 0x000D, 0x0012, 0x0013, 0x0014, 0x0015, 0x0017, 0x0018,
        0x0019, 0x001A, 0x0022, 0x0024, 0x0025,
    ];
    let unknown: Vec<AttrType> = msg
        .attributes
        .0
        .iter()
        .map(|a| a.typ)
        .filter(|t| t.required() && !KNOWN.contains(&t.0))
        .take(16)
        .collect();
    (!unknown.is_empty()).then_some(unknown)
}
