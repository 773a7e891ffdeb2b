//! Client configuration: a plain struct with documented defaults, checked by [`ClientConfig::validate`]
//! before anything is bound or sent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use strait_protocol::limits::{
    DEFAULT_MAX_FRAME_SIZE, HARD_MAX_FRAME_SIZE, MAX_NAME_LEN, MAX_TOKEN_LEN,
};

use crate::error::ClientError;

/// How the client reaches the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// Raw QUIC with ALPN `strait/1`, on quinn directly so that the socket can be rebound
    /// ([`crate::Session::rebind`]).
    Quic,
    /// WebTransport over HTTP/3 (ALPN `h3`) to `https://<server_name>:<port><path>`, on wtransport.
    /// The same protocol as a browser speaks; no rebinding.
    WebTransport,
}

/// Which server certificates the client accepts.
#[derive(Clone)]
#[non_exhaustive]
pub enum Trust {
    /// Accept exactly a leaf certificate whose SHA-256 (of its DER encoding) is one of these, as
    /// browsers' `serverCertificateHashes` do. The handshake signature is still verified with the
    /// certificate's key; names, issuers and dates are not looked at (the hash pins the
    /// certificate). The gateway publishes its current hashes at `/v1/cert-hashes`.
    Hashes(Vec<[u8; 32]>),
    /// Verify the chain against these roots and the server name (Web PKI rules), as for any TLS
    /// server. Load the system's roots into a store to get the usual behaviour.
    Roots(Arc<rustls::RootCertStore>),
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trust::Hashes(h) => write!(f, "Trust::Hashes({} hashes)", h.len()),
            Trust::Roots(r) => write!(f, "Trust::Roots({} roots)", r.len()),
        }
    }
}

/// Reconnection with exponential backoff, used when a connection is lost or the server goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the second attempt (the first is immediate). Default 100 ms.
    pub initial: Duration,
    /// Largest delay between attempts; each delay doubles up to this and is jittered down by up
    /// to half. Default 5 s.
    pub max: Duration,
    /// Attempts before giving up with [`ClientError::ConnectionLost`]. The server keeps a lost
    /// session for 20 s by default, so attempts past that only ever get a fresh session.
    /// Default 8.
    pub attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            attempts: 8,
        }
    }
}

impl Backoff {
    /// The nominal delay before attempt `attempt` (0-based; attempt 0 has none).
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        if attempt == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(attempt - 1).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// Everything a session needs. Build it with [`ClientConfig::new`] and change the fields that
/// matter; every field has a documented default.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The gateway's UDP address.
    pub server: SocketAddr,
    /// Other nodes of the gateway's cluster, to reconnect through when the node of the session
    /// does not answer (it died): reconnection attempts go round the session's node and these,
    /// in order. At another node the resume fails (a participant's state stays on its node),
    /// the session goes on afresh there and [`SessionEvent::ResumeFailed`] says so: join and
    /// publish again. `trust` must accept their certificates (with [`Trust::Hashes`], list
    /// every node's). Raw QUIC only. Default: none.
    ///
    /// [`SessionEvent::ResumeFailed`]: crate::SessionEvent::ResumeFailed
    pub fallback_servers: Vec<SocketAddr>,
    /// The name the certificate is checked against (SNI) and the host of the WebTransport URL.
    /// Default: the IP address of `server`. With [`Trust::Hashes`] any name is accepted.
    pub server_name: Option<String>,
    /// Raw QUIC or WebTransport. Default [`Transport::Quic`].
    pub transport: Transport,
    /// Path of the WebTransport URL. Default `/rtc`.
    pub path: String,
    /// Which server certificates are accepted.
    pub trust: Trust,
    /// The access token (a JWT, at most 4096 bytes), sent in `ClientHello`.
    pub token: String,
    /// The display name sent in `Join` (at most 256 bytes). Default empty.
    pub name: String,
    /// The agent string sent in `ClientHello` (at most 256 bytes). Default `strait-client/<version>`.
    pub agent: String,
    /// Local address to bind. Default: the unspecified address of `server`'s family, port 0.
    pub bind: Option<SocketAddr>,
    /// QUIC keep-alive interval; keeps NAT bindings open and detects loss. Default 5 s.
    pub keep_alive: Duration,
    /// QUIC idle timeout: silence after which the connection counts as lost (and a resume
    /// starts). Default 15 s, below the server's 20 s grace period.
    pub idle_timeout: Duration,
    /// Bound on the handshake plus `ClientHello` → `ServerHello`. Default 10 s.
    pub hello_timeout: Duration,
    /// Bound on each request's answer, and on a datagram ping's pong. Default 10 s.
    pub request_timeout: Duration,
    /// Reconnect with the resume token when the connection is lost (not when it is closed on
    /// purpose by either side) or the server goes away. Default on.
    pub auto_resume: bool,
    /// After a resume the server refused (the session's node died, or its grace period was
    /// over) and after a move of the room to another node (`GoAway` with `REDIRECT`), join the
    /// room again and publish the session's tracks again, with the same media ids, by itself
    /// ([`SessionEvent::Rejoined`]). Without it, a refused resume leaves a fresh session that
    /// the application joins and publishes, and a move ends the session with
    /// [`ClientError::Redirected`]. A move is followed only when `trust` accepts the new node's
    /// certificate (with [`Trust::Hashes`], the hashes the redirect names must be listed).
    /// Default on.
    ///
    /// [`SessionEvent::Rejoined`]: crate::SessionEvent::Rejoined
    pub rejoin: bool,
    /// Reconnection backoff.
    pub backoff: Backoff,
    /// Received media packets held for [`crate::Session::recv_media`]; when full the oldest is
    /// dropped and counted. Costs up to this many datagrams (~1.2 KB each). Default 1024.
    pub media_queue: usize,
    /// Session events held for [`crate::Session::next_event`]; when full the oldest is dropped,
    /// counted and reported by [`crate::SessionEvent::EventsDropped`]. Default 1024.
    pub event_queue: usize,
    /// Control frames waiting for the control stream; when full, requests wait (backpressure).
    /// Default 64.
    pub control_queue: usize,
    /// Largest control frame the client accepts from the server (at least 64 KiB, at most 1 MiB);
    /// bounds the memory one frame can take. Default 64 KiB.
    pub max_frame_size: usize,
    /// SO_RCVBUF / SO_SNDBUF asked for on the UDP socket (best effort; the kernel may cap it).
    /// Default 2 MiB.
    pub socket_buffer: usize,
    /// Seed of the backoff jitter; `None` seeds from the OS. Set it for reproducible tests.
    pub rng_seed: Option<u64>,
}

impl ClientConfig {
    /// A configuration with the defaults for everything but the server, the trust and the token.
    pub fn new(server: SocketAddr, trust: Trust, token: impl Into<String>) -> Self {
        Self {
            server,
            fallback_servers: Vec::new(),
            server_name: None,
            transport: Transport::Quic,
            path: "/rtc".into(),
            trust,
            token: token.into(),
            name: String::new(),
            agent: concat!("strait-client/", env!("CARGO_PKG_VERSION")).into(),
            bind: None,
            keep_alive: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(15),
            hello_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            auto_resume: true,
            rejoin: true,
            backoff: Backoff::default(),
            media_queue: 1024,
            event_queue: 1024,
            control_queue: 64,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            socket_buffer: 2 * 1024 * 1024,
            rng_seed: None,
        }
    }

    /// Checks the fields against the protocol's limits and each other.
    pub fn validate(&self) -> Result<(), ClientError> {
        let bad = |why: &str| Err(ClientError::Config(why.to_owned()));
        if self.token.len() > MAX_TOKEN_LEN {
            return bad("token is longer than 4096 bytes");
        }
        if self.name.len() > MAX_NAME_LEN || self.agent.len() > MAX_NAME_LEN {
            return bad("name and agent must be at most 256 bytes");
        }
        if let Trust::Hashes(h) = &self.trust
            && h.is_empty()
        {
            return bad("Trust::Hashes needs at least one hash");
        }
        if self.keep_alive.is_zero() || self.keep_alive >= self.idle_timeout {
            return bad("keep_alive must be non-zero and shorter than idle_timeout");
        }
        if self.hello_timeout.is_zero() || self.request_timeout.is_zero() {
            return bad("timeouts must be non-zero");
        }
        if self.media_queue == 0 || self.event_queue == 0 || self.control_queue == 0 {
            return bad("queue capacities must be non-zero");
        }
        if !(DEFAULT_MAX_FRAME_SIZE..=HARD_MAX_FRAME_SIZE).contains(&self.max_frame_size) {
            return bad("max_frame_size must be between 64 KiB and 1 MiB");
        }
        if self.backoff.attempts == 0 || self.backoff.initial > self.backoff.max {
            return bad("backoff needs attempts > 0 and initial <= max");
        }
        if !self.path.starts_with('/') {
            return bad("path must start with '/'");
        }
        if !self.fallback_servers.is_empty() && self.transport != Transport::Quic {
            return bad("fallback_servers need Transport::Quic");
        }
        Ok(())
    }

    /// The configuration for following `redirect` (a `GoAway` with code `REDIRECT`, as
    /// [`ClientError::Redirected`](crate::ClientError::Redirected) carries it): its address,
    /// its certificate hashes when this configuration pins hashes, its token when it carries
    /// one. `None` when the redirect names no IP address and port (this client has no
    /// resolver) or its hashes do not decode. [`Client::connect`](crate::Client::connect)
    /// follows redirects before `ServerHello` by itself; a session whose room moves later ends
    /// with `Redirected`, and the application connects again with this configuration.
    pub fn follow(&self, redirect: &strait_protocol::GoAway) -> Option<ClientConfig> {
        let url = redirect.redirect.as_deref()?;
        let rest = url.strip_prefix("https://").unwrap_or(url);
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], Some(&rest[at..])),
            None => (rest, None),
        };
        let mut next = self.clone();
        next.server = authority.parse().ok()?;
        next.server_name = None;
        if let Some(path) = path {
            next.path = path.to_owned();
        }
        if matches!(self.trust, Trust::Hashes(_)) && !redirect.cert_hashes.is_empty() {
            let hashes = redirect
                .cert_hashes
                .iter()
                .map(|h| decode_hex_32(h))
                .collect::<Option<Vec<_>>>()?;
            next.trust = Trust::Hashes(hashes);
        }
        if let Some(token) = &redirect.token {
            next.token.clone_from(token);
        }
        Some(next)
    }

    /// The TLS server name: `server_name`, or the server's IP address.
    pub(crate) fn tls_name(&self) -> String {
        self.server_name
            .clone()
            .unwrap_or_else(|| self.server.ip().to_string())
    }
}

/// 32 bytes from 64 hex digits.
pub(crate) fn decode_hex_32(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let digit = |b: u8| (b as char).to_digit(16);
        out[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_max() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(500),
            attempts: 10,
        };
        let delays: Vec<u128> = (0..6).map(|a| b.delay(a).as_millis()).collect();
        assert_eq!(delays, [0, 100, 200, 400, 500, 500]);
        assert_eq!(b.delay(40), Duration::from_millis(500));
    }

    #[test]
    fn validate_refuses_empty_hash_list() {
        let cfg = ClientConfig::new("127.0.0.1:1".parse().unwrap(), Trust::Hashes(vec![]), "t");
        assert!(matches!(cfg.validate(), Err(ClientError::Config(_))));
        let cfg = ClientConfig::new(
            "127.0.0.1:1".parse().unwrap(),
            Trust::Hashes(vec![[0; 32]]),
            "t",
        );
        cfg.validate().unwrap();
    }
}
