//! A TURN client for tests and benchmarks: `rtc-turn`'s sans-IO client driven over a real UDP
//! socket, TCP stream or TLS stream, with streams split into frames by the server's own framing
//! function.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc_shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc_turn::client::{Client, ClientConfig, Event};
use sansio::Protocol;
use strait_media::turn::framing::next_frame;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::fixture::{TestGateway, WAIT};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// How the client reaches the server.
#[allow(missing_debug_implementations)] // holds boxed streams
pub enum Link {
    /// A UDP socket.
    Udp(UdpSocket),
    /// A TCP or TLS stream, split, with the bytes of an incomplete frame.
    Stream {
        /// Read half.
        rd: Box<dyn AsyncRead + Unpin + Send>,
        /// Write half.
        wr: Box<dyn AsyncWrite + Unpin + Send>,
        /// Bytes read but not yet a whole frame.
        pending: Vec<u8>,
    },
}

impl Link {
    /// Sends one message (to `to` over UDP).
    pub async fn send(&mut self, data: &[u8], to: SocketAddr) {
        match self {
            Link::Udp(s) => {
                s.send_to(data, to).await.expect("udp send");
            }
            Link::Stream { wr, .. } => wr.write_all(data).await.expect("stream write"),
        }
    }

    /// The next datagram, or the next frame of the stream (`None` when the stream ended).
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        match self {
            Link::Udp(s) => {
                let mut buf = vec![0u8; 65_536];
                let (n, _) = s.recv_from(&mut buf).await.ok()?;
                buf.truncate(n);
                Some(buf)
            }
            Link::Stream { rd, pending, .. } => loop {
                if let Ok(Some(frame)) = next_frame(pending) {
                    let out = pending[..frame.message_len()].to_vec();
                    pending.drain(..frame.consumed());
                    return Some(out);
                }
                let mut chunk = [0u8; 4096];
                let n = rd.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                pending.extend_from_slice(&chunk[..n]);
            },
        }
    }
}

/// The `rtc-turn` client and its socket.
#[allow(missing_debug_implementations)] // the client has no Debug
pub struct TurnClient {
    /// The sans-IO client.
    pub client: Client,
    /// Its socket.
    pub link: Link,
    local: SocketAddr,
    server: SocketAddr,
    protocol: TransportProtocol,
}

impl TurnClient {
    fn config(
        local: SocketAddr,
        server: SocketAddr,
        protocol: TransportProtocol,
        username: &str,
        password: &str,
    ) -> Client {
        let config = ClientConfig {
            stun_serv_addr: server.to_string(),
            turn_serv_addr: server.to_string(),
            local_addr: local,
            transport_protocol: protocol,
            username: username.into(),
            password: password.into(),
            realm: "strait".into(),
            software: String::new(),
            rto_in_ms: 0,
            allocation_refresh_interval_cap: None,
        };
        Client::new(config, rtc_crypto::default_provider().unwrap()).expect("client")
    }

    /// A client over UDP.
    pub async fn udp(server: SocketAddr, username: &str, password: &str) -> TurnClient {
        let socket = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
        let local = socket.local_addr().unwrap();
        TurnClient {
            client: Self::config(local, server, TransportProtocol::UDP, username, password),
            link: Link::Udp(socket),
            local,
            server,
            protocol: TransportProtocol::UDP,
        }
    }

    /// A client over TCP.
    pub async fn tcp(server: SocketAddr, username: &str, password: &str) -> TurnClient {
        let stream = TcpStream::connect(server).await.unwrap();
        let local = stream.local_addr().unwrap();
        let (rd, wr) = tokio::io::split(stream);
        TurnClient::stream(
            server,
            local,
            Box::new(rd),
            Box::new(wr),
            username,
            password,
        )
    }

    /// A client over TLS, trusting `t`'s certificate.
    pub async fn tls(
        t: &TestGateway,
        server: SocketAddr,
        username: &str,
        password: &str,
    ) -> TurnClient {
        let trust = strait_client::Trust::Hashes(vec![*t.gateway.cert_fingerprint().as_bytes()]);
        let config = strait_client::tls_client_config(&trust, b"stun.turn").expect("tls config");
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let stream = TcpStream::connect(server).await.unwrap();
        let local = stream.local_addr().unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector
            .connect(name, stream)
            .await
            .expect("TLS handshake");
        let (rd, wr) = tokio::io::split(tls);
        TurnClient::stream(
            server,
            local,
            Box::new(rd),
            Box::new(wr),
            username,
            password,
        )
    }

    fn stream(
        server: SocketAddr,
        local: SocketAddr,
        rd: Box<dyn AsyncRead + Unpin + Send>,
        wr: Box<dyn AsyncWrite + Unpin + Send>,
        username: &str,
        password: &str,
    ) -> TurnClient {
        TurnClient {
            client: Self::config(local, server, TransportProtocol::TCP, username, password),
            link: Link::Stream {
                rd,
                wr,
                pending: Vec::new(),
            },
            local,
            server,
            protocol: TransportProtocol::TCP,
        }
    }

    /// Feeds the client one message (a datagram or a frame) read from the server.
    pub fn feed(&mut self, message: &[u8]) {
        let tagged = TaggedBytesMut {
            now: Instant::now(),
            transport: TransportContext {
                local_addr: self.local,
                peer_addr: self.server,
                transport_protocol: self.protocol,
                ecn: None,
            },
            message: BytesMut::from(message),
        };
        let _ = self.client.handle_read(tagged);
    }

    /// Sends what the client has queued for the server.
    pub async fn flush(&mut self) {
        while let Some(t) = self.client.poll_write() {
            self.link.send(&t.message, self.server).await;
        }
    }

    /// Drives the client until `pick` accepts an event.
    pub async fn until<T>(&mut self, mut pick: impl FnMut(Event) -> Option<T>) -> T {
        let run = async {
            loop {
                while let Some(t) = self.client.poll_write() {
                    self.link.send(&t.message, self.server).await;
                }
                while let Some(event) = self.client.poll_event() {
                    if let Some(v) = pick(event) {
                        return v;
                    }
                }
                let wake = self
                    .client
                    .poll_timeout()
                    .unwrap_or_else(|| Instant::now() + Duration::from_millis(100));
                tokio::select! {
                    msg = self.link.recv() => {
                        self.feed(&msg.expect("the server closed the connection"));
                    }
                    () = tokio::time::sleep_until(wake.into()) => {
                        let _ = self.client.handle_timeout(Instant::now());
                    }
                }
            }
        };
        tokio::time::timeout(WAIT, run)
            .await
            .expect("the expected TURN event in time")
    }

    /// Allocates; returns the relay address.
    pub async fn allocate(&mut self) -> SocketAddr {
        self.client.allocate(Instant::now()).expect("allocate");
        self.until(|e| match e {
            Event::AllocateResponse(_, relay) => Some(Ok(relay)),
            Event::AllocateError(_, err) => Some(Err(err.to_string())),
            _ => None,
        })
        .await
        .expect("the allocation succeeds")
    }

    /// CreatePermission; `Err` holds the error text (with the code).
    pub async fn permit(&mut self, relay: SocketAddr, peer: SocketAddr) -> Result<(), String> {
        self.client
            .relay(relay)
            .unwrap()
            .create_permission(Instant::now(), peer)
            .expect("create permission");
        self.until(|e| match e {
            Event::CreatePermissionResponse(_, _) => Some(Ok(())),
            Event::CreatePermissionError(_, err) => Some(Err(err.to_string())),
            _ => None,
        })
        .await
    }

    /// Sends through the relay (a Send indication, or ChannelData once a channel is bound).
    pub async fn send_to(&mut self, relay: SocketAddr, peer: SocketAddr, data: &[u8]) {
        self.client
            .relay(relay)
            .unwrap()
            .send_to(Instant::now(), data, peer)
            .expect("send");
        self.flush().await;
    }

    /// Waits for data from a peer; returns the channel it came over (`None` for a Data
    /// indication), the peer and the data.
    pub async fn receive(&mut self) -> (Option<u16>, SocketAddr, Vec<u8>) {
        self.until(|e| match e {
            Event::DataIndicationOrChannelData(channel, from, data) => {
                Some((channel.map(|c| c.0), from, data.to_vec()))
            }
            _ => None,
        })
        .await
    }
}
