//! A gateway started in-process for a test, and the pieces tests build on it: clients of both
//! transports, raw QUIC connections for sending malformed input, and synthetic RTP.
//!
//! Everything binds to `127.0.0.1:0`; the gateway stops (drains and closes) when the test calls
//! [`TestGateway::stop`] or, abruptly, when the `TestGateway` is dropped with its runtime.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use strait_client::{Client, ClientConfig, Session, Transport, Trust};
use strait_gateway::auth::Grants;
use strait_gateway::config::{Config, ValidConfig};
use strait_gateway::{Gateway, Sockets};

/// Generous bound for anything a test waits for on loopback.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running gateway on loopback.
#[derive(Debug)]
pub struct TestGateway {
    /// The gateway.
    pub gateway: Gateway,
}

impl TestGateway {
    /// Starts a gateway with the default configuration, adjusted by `tweak`.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestGateway {
        let mut config = Config::default();
        config.quic.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.http.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.webtransport.allowed_origins = vec!["*".into()];
        tweak(&mut config);
        let config: ValidConfig = config.validate().expect("test configuration is valid");
        let quic = strait_gateway::frontdoor::bind_udp(config.quic.listen, 4 * 1024 * 1024)
            .expect("bind quic");
        let http = TcpListener::bind(config.http.listen).expect("bind http");
        http.set_nonblocking(true).expect("nonblocking");
        let gateway = Gateway::start(config, Sockets { quic, http })
            .await
            .expect("gateway starts");
        TestGateway { gateway }
    }

    /// Starts a gateway with the default configuration.
    pub async fn start() -> TestGateway {
        Self::start_with(|_| {}).await
    }

    /// The QUIC address.
    pub fn quic_addr(&self) -> SocketAddr {
        self.gateway.quic_addr
    }

    /// The HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.gateway.http_addr
    }

    /// A token for `identity` in `room` with publish and subscribe.
    pub fn token(&self, room: &str, identity: &str) -> String {
        self.gateway.token(room, identity, Grants::participant())
    }

    /// A token with the given grants.
    pub fn token_with(&self, room: &str, identity: &str, grants: Grants) -> String {
        self.gateway.token(room, identity, grants)
    }

    /// A client configuration for this gateway that pins its certificate.
    pub fn client_config(&self, transport: Transport, token: String) -> ClientConfig {
        self.client_config_to(self.quic_addr(), transport, token)
    }

    /// A client configuration that connects to `addr` (a relay in front of the gateway) and pins
    /// this gateway's certificate.
    pub fn client_config_to(
        &self,
        addr: SocketAddr,
        transport: Transport,
        token: String,
    ) -> ClientConfig {
        let hash = *self.gateway.cert_fingerprint().as_bytes();
        let mut config = ClientConfig::new(addr, Trust::Hashes(vec![hash]), token);
        config.transport = transport;
        config.server_name = Some("127.0.0.1".into());
        config
    }

    /// Connects a native (raw QUIC) client and joins `room` as `identity`.
    pub async fn native(&self, room: &str, identity: &str) -> Session {
        self.connect(Transport::Quic, room, identity).await
    }

    /// Connects a WebTransport client and joins `room` as `identity`.
    pub async fn webtransport(&self, room: &str, identity: &str) -> Session {
        self.connect(Transport::WebTransport, room, identity).await
    }

    async fn connect(&self, transport: Transport, room: &str, identity: &str) -> Session {
        let config = self.client_config(transport, self.token(room, identity));
        let session = tokio::time::timeout(WAIT, Client::connect(config))
            .await
            .expect("connect in time")
            .expect("connect");
        tokio::time::timeout(WAIT, session.join(room))
            .await
            .expect("join in time")
            .expect("join");
        session
    }

    /// A metric's value from `/metrics` (the sum over its label sets), or 0 when absent.
    pub async fn metric(&self, name: &str) -> f64 {
        let body = http_get(self.http_addr(), "/metrics").await;
        metric_value(&body, name)
    }

    /// Drains and stops the gateway.
    pub async fn stop(self) {
        tokio::time::timeout(WAIT * 3, self.gateway.shutdown())
            .await
            .expect("gateway stops in time")
            .expect("gateway stops cleanly");
    }

    /// Shared gateway state (metrics, configuration).
    pub fn shared(&self) -> &Arc<strait_gateway::Shared> {
        &self.gateway.shared
    }
}

/// Sums the samples of `name` (with any labels) in a Prometheus text body.
pub fn metric_value(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let metric = key.split('{').next()?;
            (metric == name)
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// A minimal HTTP/1.1 GET on loopback (the tests need no HTTP client crate).
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect http");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

/// Synthetic RTP for tests.
pub mod rtp {
    /// Payload type used for Opus in tests.
    pub const OPUS_PT: u8 = 111;
    /// Payload type used for VP8 in tests.
    pub const VP8_PT: u8 = 96;

    /// An RTP packet: version 2, the given header fields, `payload` after the 12-byte header.
    pub fn packet(pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = Vec::with_capacity(12 + payload.len());
        p.push(0x80);
        p.push(pt | if marker { 0x80 } else { 0 });
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    /// An Opus packet whose payload carries `index` (so receivers can tell packets apart).
    pub fn opus(seq: u16, ts: u32, ssrc: u32, index: u32) -> Vec<u8> {
        let mut payload = index.to_be_bytes().to_vec();
        payload.extend_from_slice(&[0xfc; 60]);
        packet(OPUS_PT, false, seq, ts, ssrc, &payload)
    }

    /// A VP8 packet, start of a frame; `key` makes it a keyframe. The payload carries `index`.
    pub fn vp8(seq: u16, ts: u32, ssrc: u32, key: bool, index: u32) -> Vec<u8> {
        // Payload descriptor: S=1, PID 0. VP8 header first byte: P bit 0 for a keyframe.
        let mut payload = vec![0x10, if key { 0x00 } else { 0x01 }, 0, 0];
        payload.extend_from_slice(&index.to_be_bytes());
        payload.extend_from_slice(&[0xab; 400]);
        packet(VP8_PT, true, seq, ts, ssrc, &payload)
    }

    /// The index carried by a packet built by [`opus`] (offset 12) or [`vp8`] (offset 16).
    pub fn index_at(packet: &[u8], offset: usize) -> u32 {
        u32::from_be_bytes(packet[offset..offset + 4].try_into().expect("4 bytes"))
    }

    /// Sequence number of an RTP packet.
    pub fn seq(packet: &[u8]) -> u16 {
        u16::from_be_bytes([packet[2], packet[3]])
    }

    /// SSRC of an RTP packet.
    pub fn ssrc(packet: &[u8]) -> u32 {
        u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]])
    }
}
