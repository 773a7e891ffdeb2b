//! A TURN relay held the way a WebRTC client holds one: Allocate over UDP with the credentials of
//! a `ServerHello` (TURN REST style, section 9 of docs/OPERATIONS.md), Refresh on a schedule,
//! release with a zero-lifetime Refresh. The protocol is `rtc-turn`'s sans-IO client; this module
//! only carries its datagrams over a UDP socket, bounded in time.
//!
//! `rtc-turn` reports a refresh's answer only as the result of feeding it in, so a datagram from
//! the server is classified by its STUN message type first (Refresh success `0x0104`, Refresh
//! error `0x0114`, RFC 8656 §7). A 438 (stale nonce) is taken in by `rtc-turn`, which keeps the
//! new nonce; the refresh is then sent once more with it.
//!
//! `Instant::now()` is read here: this module drives a client against a real server.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc_shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc_turn::client::{Client, ClientConfig, Event};
use sansio::Protocol as _;
use tokio::net::UdpSocket;

use super::Result;

/// STUN message type of a Refresh success response.
const REFRESH_SUCCESS: u16 = 0x0104;
/// STUN message type of a Refresh error response.
const REFRESH_ERROR: u16 = 0x0114;
/// Allocations tried at most when the server answers 437 (allocation mismatch).
pub const MISMATCH_TRIES: usize = 3;

/// The UDP address of the first `turn:` URL with `transport=udp` among `urls` (IP literals only:
/// the load tools talk to addresses, never names).
pub fn udp_server(urls: &[String]) -> Option<SocketAddr> {
    urls.iter().find_map(|url| {
        let rest = url.strip_prefix("turn:")?;
        let (host_port, query) = rest.split_once('?').unwrap_or((rest, ""));
        let udp = query.is_empty() || query.split('&').any(|p| p == "transport=udp");
        udp.then(|| host_port.parse().ok()).flatten()
    })
}

/// How a refresh went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refreshed {
    /// The server granted it at once.
    Ok,
    /// The server answered 438 (stale nonce); the second try, with the new nonce, passed.
    AfterStaleNonce,
}

/// One allocation and the socket it was made from.
#[allow(missing_debug_implementations)] // rtc-turn's client has no Debug
pub struct TurnRelay {
    client: Client,
    socket: UdpSocket,
    local: SocketAddr,
    server: SocketAddr,
    relayed: SocketAddr,
    mismatches: u32,
    buf: Vec<u8>,
}

impl TurnRelay {
    /// Allocates a relay on `server` from a socket bound to `bind` (port 0), within `timeout`.
    ///
    /// An answer 437 (allocation mismatch) means the server still holds an allocation for this
    /// socket's address: one that a previous socket on the same port left to expire. The
    /// allocation is tried again from a new socket, up to [`MISMATCH_TRIES`] times, the refused
    /// sockets kept open meanwhile so that the system hands out other ports.
    pub async fn allocate(
        server: SocketAddr,
        bind: SocketAddr,
        username: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<TurnRelay> {
        let deadline = Instant::now() + timeout;
        let mut refused = Vec::new();
        loop {
            let socket = UdpSocket::bind(bind).await?;
            match Self::allocate_on(socket, server, username, password, deadline).await {
                Ok(mut relay) => {
                    relay.mismatches = refused.len() as u32;
                    return Ok(relay);
                }
                Err((socket, e)) if e.contains("437") && refused.len() + 1 < MISMATCH_TRIES => {
                    refused.push(socket);
                }
                Err((_, e)) => return Err(e.into()),
            }
        }
    }

    async fn allocate_on(
        socket: UdpSocket,
        server: SocketAddr,
        username: &str,
        password: &str,
        deadline: Instant,
    ) -> std::result::Result<TurnRelay, (UdpSocket, String)> {
        let local = match socket.local_addr() {
            Ok(local) => local,
            Err(e) => return Err((socket, e.to_string())),
        };
        let config = ClientConfig {
            stun_serv_addr: server.to_string(),
            turn_serv_addr: server.to_string(),
            local_addr: local,
            transport_protocol: TransportProtocol::UDP,
            username: username.into(),
            password: password.into(),
            realm: "strait".into(),
            software: String::new(),
            rto_in_ms: 0,
            // Refreshes are this module's to send, on the caller's schedule.
            allocation_refresh_interval_cap: None,
        };
        let client = rtc_turn::crypto::default_provider()
            .map_err(|e| e.to_string())
            .and_then(|provider| Client::new(config, provider).map_err(|e| e.to_string()));
        let mut client = match client {
            Ok(client) => client,
            Err(e) => return Err((socket, e)),
        };
        if let Err(e) = client.allocate(Instant::now()) {
            return Err((socket, format!("allocate: {e}")));
        }
        let mut relay = TurnRelay {
            client,
            socket,
            local,
            server,
            relayed: local,
            mismatches: 0,
            buf: vec![0; 2048],
        };
        let answer = relay
            .drive(deadline, |event, _| match event {
                Some(Event::AllocateResponse(_, relayed)) => Some(Ok(relayed)),
                Some(Event::AllocateError(_, e)) => Some(Err(format!("allocate: {e}"))),
                Some(Event::TransactionTimeout(_)) => Some(Err("allocate: no answer".into())),
                _ => None,
            })
            .await;
        match answer {
            Ok(Ok(relayed)) => {
                relay.relayed = relayed;
                Ok(relay)
            }
            Ok(Err(e)) => Err((relay.socket, e)),
            Err(e) => Err((relay.socket, e.to_string())),
        }
    }

    /// Allocations refused with 437 before this one was granted.
    pub fn mismatches(&self) -> u32 {
        self.mismatches
    }

    /// The relayed address the server gave.
    pub fn relayed(&self) -> SocketAddr {
        self.relayed
    }

    /// Refreshes the allocation with its current lifetime, within `timeout`.
    pub async fn refresh(&mut self, timeout: Duration) -> Result<Refreshed> {
        let deadline = Instant::now() + timeout;
        let mut stale = false;
        loop {
            self.client
                .refresh_allocations(Instant::now())
                .map_err(|e| format!("refresh: {e}"))?;
            let answer = self
                .drive(deadline, |event, refresh| match (event, refresh) {
                    (_, Some(answer)) => Some(answer),
                    (Some(Event::TransactionTimeout(_)), _) => {
                        Some(Err("refresh: no answer".into()))
                    }
                    _ => None,
                })
                .await?;
            match answer {
                Ok(()) if stale => return Ok(Refreshed::AfterStaleNonce),
                Ok(()) => return Ok(Refreshed::Ok),
                // A 438: `rtc-turn` took the new nonce in; one more try.
                Err(e) if e.is_empty() && !stale => stale = true,
                Err(e) if e.is_empty() => return Err("refresh: stale nonce twice".into()),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Releases the allocation (a Refresh with lifetime 0) and waits up to `timeout` for the
    /// answer; the socket closes either way.
    pub async fn release(mut self, timeout: Duration) -> Result<()> {
        let relayed = self.relayed;
        self.client
            .relay(relayed)
            .and_then(|mut r| r.close(Instant::now()))
            .map_err(|e| format!("release: {e}"))?;
        let deadline = Instant::now() + timeout;
        self.drive(deadline, |event, refresh| match (event, refresh) {
            (_, Some(answer)) => Some(answer.map_err(|e| {
                if e.is_empty() {
                    "release: stale nonce".to_owned()
                } else {
                    e
                }
            })),
            (Some(Event::TransactionTimeout(_)), _) => Some(Err("release: no answer".into())),
            _ => None,
        })
        .await?
        .map_err(Into::into)
    }

    /// Sends what the client queued, feeds it what the server sends, and hands every event (and
    /// every Refresh answer: `Ok`, or `Err` with the error, empty for a 438 that the client
    /// took in) to `pick` until it returns something or `deadline` passes.
    async fn drive<T>(
        &mut self,
        deadline: Instant,
        mut pick: impl FnMut(Option<Event>, Option<std::result::Result<(), String>>) -> Option<T>,
    ) -> Result<T> {
        loop {
            while let Some(t) = self.client.poll_write() {
                self.socket.send_to(&t.message, self.server).await?;
            }
            while let Some(event) = self.client.poll_event() {
                if let Some(v) = pick(Some(event), None) {
                    return Ok(v);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err("TURN: no answer in time".into());
            }
            let wake = self
                .client
                .poll_timeout()
                .map_or(deadline, |t| t.min(deadline));
            tokio::select! {
                received = self.socket.recv_from(&mut self.buf) => {
                    let (n, from) = received?;
                    if from != self.server {
                        continue;
                    }
                    let kind = (n >= 2).then(|| u16::from_be_bytes([self.buf[0], self.buf[1]]));
                    let fed = self.feed(n);
                    let refresh = match kind {
                        Some(REFRESH_SUCCESS) => Some(fed),
                        Some(REFRESH_ERROR) => Some(Err(fed.err().unwrap_or_default())),
                        _ => None,
                    };
                    if let Some(answer) = refresh
                        && let Some(v) = pick(None, Some(answer))
                    {
                        return Ok(v);
                    }
                }
                () = tokio::time::sleep_until(wake.into()) => {
                    let _ = self.client.handle_timeout(Instant::now());
                }
            }
        }
    }

    /// Feeds the client the first `n` bytes of the receive buffer.
    fn feed(&mut self, n: usize) -> std::result::Result<(), String> {
        self.client
            .handle_read(TaggedBytesMut {
                now: Instant::now(),
                transport: TransportContext {
                    local_addr: self.local,
                    peer_addr: self.server,
                    transport_protocol: TransportProtocol::UDP,
                    ecn: None,
                },
                message: BytesMut::from(&self.buf[..n]),
            })
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_udp_url_is_found_among_the_others() {
        let urls = [
            "turns:127.0.0.1:5349?transport=tcp".to_owned(),
            "turn:127.0.0.1:3479?transport=tcp".to_owned(),
            "turn:127.0.0.1:3478?transport=udp".to_owned(),
        ];
        assert_eq!(udp_server(&urls), Some("127.0.0.1:3478".parse().unwrap()));
        assert_eq!(udp_server(&urls[..2]), None);
        assert_eq!(
            udp_server(&["turn:127.0.0.1:3478".to_owned()]),
            Some("127.0.0.1:3478".parse().unwrap()),
            "UDP is the default transport of a turn: URL"
        );
        assert_eq!(udp_server(&["turn:turn.example:3478".to_owned()]), None);
    }
}
