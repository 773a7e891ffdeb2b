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

/// How many media workers a test gateway runs: `STRAIT_TEST_MEDIA_WORKERS`, else 2 (more than
/// one, so that every test crosses workers wherever its rooms land; a test may set its own).
pub fn media_workers() -> usize {
    std::env::var("STRAIT_TEST_MEDIA_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

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
        config.webrtc.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.media.workers = Some(media_workers());
        // A loaded test machine delays workers now and then: tests of other things must not
        // have their joins shed. The shedding tests turn it on.
        config.shedding.enabled = false;
        tweak(&mut config);
        let config: ValidConfig = config.validate().expect("test configuration is valid");
        let quic =
            strait_gateway::bind_udp(config.quic.listen, 4 * 1024 * 1024).expect("bind quic");
        let http = TcpListener::bind(config.http.listen).expect("bind http");
        http.set_nonblocking(true).expect("nonblocking");
        // The WebRTC bridge's UDP ports (one per media worker), from the OS like the others.
        let webrtc = strait_gateway::bind_webrtc(&config, 1024 * 1024).expect("bind webrtc");
        let turn = strait_gateway::TurnSockets::bind(&config.turn).expect("bind turn");
        let gateway = Gateway::start(
            config,
            Sockets {
                quic,
                http,
                webrtc,
                turn,
            },
        )
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

    /// A WebRTC bridge UDP address: the first media worker's (the bridge is on by default).
    /// Every worker's bridge treats input from strangers alike; a peer's own port is in its
    /// answer's candidates.
    pub fn webrtc_addr(&self) -> SocketAddr {
        *self
            .gateway
            .webrtc_addrs
            .first()
            .expect("the webrtc bridge is on")
    }

    /// The WebRTC bridge's UDP addresses, one per media worker.
    pub fn webrtc_addrs(&self) -> &[SocketAddr] {
        &self.gateway.webrtc_addrs
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

    /// An H.264 packet (RFC 6184) in the shape of [`vp8`]: one NAL unit, an IDR slice (type 5)
    /// when `key`, else a non-IDR slice (type 1); the index at offset 16.
    pub fn h264(pt: u8, seq: u16, ts: u32, ssrc: u32, key: bool, index: u32) -> Vec<u8> {
        let mut payload = vec![if key { 0x65 } else { 0x41 }, 0x88, 0x84, 0x21];
        payload.extend_from_slice(&index.to_be_bytes());
        payload.extend_from_slice(&[0xab; 400]);
        packet(pt, true, seq, ts, ssrc, &payload)
    }

    /// A VP9 packet (RFC 9628) in the shape of [`vp8`]: a descriptor with B and E set, and P
    /// (inter-predicted) unless `key`; the index at offset 16.
    pub fn vp9(pt: u8, seq: u16, ts: u32, ssrc: u32, key: bool, index: u32) -> Vec<u8> {
        let mut payload = vec![if key { 0x0c } else { 0x4c }, 0, 0, 0];
        payload.extend_from_slice(&index.to_be_bytes());
        payload.extend_from_slice(&[0xab; 400]);
        packet(pt, true, seq, ts, ssrc, &payload)
    }

    /// The index carried by a packet built by [`opus`] (offset 12) or [`vp8`], [`h264`] and
    /// [`vp9`] (offset 16).
    pub fn index_at(packet: &[u8], offset: usize) -> u32 {
        u32::from_be_bytes(packet[offset..offset + 4].try_into().expect("4 bytes"))
    }

    /// Sequence number of an RTP packet.
    pub fn seq(packet: &[u8]) -> u16 {
        u16::from_be_bytes([packet[2], packet[3]])
    }

    /// Asserts that `packets`, put in the publisher's order (the index at `offset` in each),
    /// carry consecutive sequence numbers: the rewrite follows the publisher's numbering, not
    /// the order of arrival. Datagrams may arrive reordered — a WebTransport receiver reads them
    /// from two paths — so arrival order is not checked.
    pub fn assert_consecutive_in_publisher_order<P: AsRef<[u8]>>(packets: &[P], offset: usize) {
        let mut ordered: Vec<&[u8]> = packets.iter().map(AsRef::as_ref).collect();
        ordered.sort_by_key(|p| index_at(p, offset));
        let first = seq(ordered[0]);
        for (k, p) in ordered.iter().enumerate() {
            assert_eq!(
                seq(p),
                first.wrapping_add(k as u16),
                "consecutive sequence numbers in the publisher's order"
            );
        }
    }

    /// SSRC of an RTP packet.
    pub fn ssrc(packet: &[u8]) -> u32 {
        u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]])
    }
}

impl TestGateway {
    /// A metric's value from `/metrics`, summed over the samples whose labels contain `label`
    /// (`reason="UnknownMedia"`, say).
    pub async fn metric_where(&self, name: &str, label: &str) -> f64 {
        let body = http_get(self.http_addr(), "/metrics").await;
        metric_value_where(&body, name, label)
    }

    /// Waits until `name` (summed over its labels) satisfies `condition`, and returns its value.
    /// Polls `/metrics` (the gateway has no change notification); bounded by [`WAIT`].
    pub async fn wait_metric(&self, name: &str, condition: impl Fn(f64) -> bool) -> f64 {
        self.wait_metric_where(name, "", condition).await
    }

    /// Like [`wait_metric`](Self::wait_metric), over the samples whose labels contain `label`.
    pub async fn wait_metric_where(
        &self,
        name: &str,
        label: &str,
        condition: impl Fn(f64) -> bool,
    ) -> f64 {
        self.wait_metric_within(name, label, WAIT, condition).await
    }

    /// Like [`wait_metric_where`](Self::wait_metric_where), bounded by `within` instead of
    /// [`WAIT`] (for what the gateway does on a timer of its own that is longer).
    pub async fn wait_metric_within(
        &self,
        name: &str,
        label: &str,
        within: Duration,
        condition: impl Fn(f64) -> bool,
    ) -> f64 {
        let mut last = f64::NAN;
        let waited = tokio::time::timeout(within, async {
            loop {
                last = self.metric_where(name, label).await;
                if condition(last) {
                    return last;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        waited.unwrap_or_else(|_| panic!("metric {name}{{{label}}} stuck at {last}"))
    }

    /// Polls `GET path` until `pick(status, body)` accepts the answer, for at most `within`;
    /// returns the body. Health and readiness change with time (a stall, a lease) and the
    /// gateway sends no notification of them, so this looks every 25 ms.
    pub async fn wait_http(
        &self,
        path: &str,
        within: Duration,
        pick: impl Fn(u16, &str) -> bool,
    ) -> String {
        let mut last = (0, String::new());
        let found = tokio::time::timeout(within, async {
            loop {
                let response = crate::http::http(self, "GET", path, &[], b"").await;
                last = (response.status, response.body);
                if pick(last.0, &last.1) {
                    return last.1.clone();
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("{path} still answers {} {:?}", last.0, last.1))
    }

    /// Waits (at most [`WAIT`]) until `/readyz` says `ready`, or (`ready` false) that it is not.
    pub async fn wait_ready(&self, ready: bool) {
        self.wait_http("/readyz", WAIT, |status, body| {
            (status == 200 && body == "ready\n") == ready
        })
        .await;
    }

    /// A fresh access token for `identity` in `room` that expired an hour ago.
    pub fn expired_token(&self, room: &str, identity: &str) -> String {
        let issued = std::time::SystemTime::now() - Duration::from_secs(2 * 3600);
        let claims = strait_gateway::auth::AccessClaims::new(
            identity,
            room,
            Grants::participant(),
            issued,
            Duration::from_secs(3600),
        );
        self.gateway.mint(&claims).expect("mint an expired token")
    }
}

/// Like [`metric_value`], over the samples whose label set contains `label`.
pub fn metric_value_where(body: &str, name: &str, label: &str) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let metric = key.split('{').next()?;
            (metric == name && key.contains(label))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// A raw protocol session: a quinn connection with ALPN `strait/1` and its control stream, driven
/// frame by frame, for sending what a well-behaved client never would.
///
/// Nothing is sent on connect: the control stream exists for the server only once the first
/// bytes are written on it (a QUIC stream is opened by its first frame).
#[derive(Debug)]
pub struct RawSession {
    /// The client endpoint (its own UDP socket on `127.0.0.1:0`).
    pub endpoint: quinn::Endpoint,
    /// The connection.
    pub conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    reader: strait_protocol::FrameReader,
    pending: bytes::Bytes,
    /// Frames of unknown kinds the server sent (skipped).
    pub unknown_kinds: u32,
}

impl RawSession {
    /// Connects to the gateway directly.
    pub async fn connect(gw: &TestGateway) -> RawSession {
        Self::connect_to(gw, gw.quic_addr(), None).await
    }

    /// Connects to `addr` (a relay in front of `gw`), pinning `gw`'s certificate, with the given
    /// QUIC idle timeout and a keep-alive at a quarter of it (quinn's defaults when `None`: no
    /// keep-alive), so that only a dead path ends the connection.
    pub async fn connect_to(
        gw: &TestGateway,
        addr: SocketAddr,
        idle_timeout: Option<Duration>,
    ) -> RawSession {
        let hash = *gw.gateway.cert_fingerprint().as_bytes();
        let tls = strait_client::tls_client_config(
            &Trust::Hashes(vec![hash]),
            strait_client::ALPN_STRAIT,
        )
        .expect("tls config");
        let crypto =
            quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls config");
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        if let Some(idle) = idle_timeout {
            transport.max_idle_timeout(Some(idle.try_into().expect("idle timeout")));
            transport.keep_alive_interval(Some(idle / 4));
        }
        config.transport_config(Arc::new(transport));
        let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("client endpoint");
        endpoint.set_default_client_config(config);
        let conn = tokio::time::timeout(WAIT, async {
            endpoint
                .connect(addr, "127.0.0.1")
                .expect("connect")
                .await
                .expect("handshake")
        })
        .await
        .expect("handshake in time");
        let (send, recv) = conn.open_bi().await.expect("open the control stream");
        RawSession {
            endpoint,
            conn,
            send,
            recv,
            reader: strait_protocol::FrameReader::default(),
            pending: bytes::Bytes::new(),
            unknown_kinds: 0,
        }
    }

    /// Connects and exchanges hellos with `hello`; returns the session and the `ServerHello`.
    /// Panics if the server answers anything else first.
    pub async fn hello_with(
        gw: &TestGateway,
        hello: strait_protocol::ClientHello,
    ) -> (RawSession, strait_protocol::ServerHello) {
        let mut raw = Self::connect(gw).await;
        let server_hello = raw.send_hello(hello).await;
        (raw, server_hello)
    }

    /// Connects with a valid access token for `identity` in `room` (no resume).
    pub async fn hello(
        gw: &TestGateway,
        room: &str,
        identity: &str,
    ) -> (RawSession, strait_protocol::ServerHello) {
        Self::hello_with(gw, client_hello(gw.token(room, identity), None)).await
    }

    /// Sends `hello` and waits for `ServerHello`.
    pub async fn send_hello(
        &mut self,
        hello: strait_protocol::ClientHello,
    ) -> strait_protocol::ServerHello {
        use strait_protocol::ControlMessage;
        self.send_frame(&ControlMessage::ClientHello(hello)).await;
        match self.expect_message().await {
            ControlMessage::ServerHello(h) => h,
            other => panic!("expected ServerHello, got {other:?}"),
        }
    }

    /// Writes one frame carrying `message`.
    pub async fn send_frame(&mut self, message: &strait_protocol::ControlMessage) {
        let mut wire = Vec::new();
        strait_protocol::encode_frame(message, usize::MAX, &mut wire).expect("encode");
        self.send_raw(&wire).await;
    }

    /// Writes bytes on the control stream as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.send
            .write_all(bytes)
            .await
            .expect("write control bytes");
    }

    /// Sends a datagram as it is.
    pub fn send_datagram(&self, payload: &[u8]) {
        self.conn
            .send_datagram(bytes::Bytes::copy_from_slice(payload))
            .expect("send datagram");
    }

    /// The next message from the server (frames of unknown kinds are skipped and counted);
    /// `None` once the control stream or the connection has ended. Panics on a malformed frame.
    /// Cancel-safe.
    pub async fn next_message(&mut self) -> Option<strait_protocol::ControlMessage> {
        use strait_protocol::Decoded;
        loop {
            match self.reader.next_message(&mut self.pending) {
                Ok(Some(Decoded::Message(m))) => return Some(m),
                Ok(Some(Decoded::UnknownKind(_))) => {
                    self.unknown_kinds += 1;
                    continue;
                }
                Ok(None) => {}
                Err(e) => panic!("malformed frame from the gateway: {e}"),
            }
            match self.recv.read_chunk(64 * 1024, true).await {
                Ok(Some(chunk)) => self.pending = chunk.bytes,
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// The next message, within [`WAIT`]; panics if none comes.
    pub async fn expect_message(&mut self) -> strait_protocol::ControlMessage {
        tokio::time::timeout(WAIT, self.next_message())
            .await
            .expect("a message in time")
            .expect("the control stream is open")
    }

    /// Reads messages until one matches `pick`; panics if the stream ends first or nothing
    /// matches within [`WAIT`]. Returns the match and what was skipped.
    pub async fn expect_where<T>(
        &mut self,
        mut pick: impl FnMut(&strait_protocol::ControlMessage) -> Option<T>,
    ) -> (T, Vec<strait_protocol::ControlMessage>) {
        let mut skipped = Vec::new();
        let found = tokio::time::timeout(WAIT, async {
            while let Some(m) = self.next_message().await {
                if let Some(t) = pick(&m) {
                    return Some(t);
                }
                skipped.push(m);
            }
            None
        })
        .await;
        match found {
            Ok(Some(t)) => (t, skipped),
            Ok(None) => panic!(
                "control stream ended ({:?}) before the expected message; got {skipped:?}",
                self.conn.close_reason()
            ),
            Err(_) => panic!("expected message not received in time; got {skipped:?}"),
        }
    }

    /// Joins `room` with request id `request` and waits for `Joined`.
    pub async fn join(&mut self, request: u32, room: &str) -> strait_protocol::Joined {
        use strait_protocol::{ControlMessage, Join, RequestId, RoomId};
        self.send_frame(&ControlMessage::Join(Join {
            request: RequestId(request),
            room: RoomId(room.into()),
            name: String::new(),
        }))
        .await;
        let (joined, _) = self
            .expect_where(|m| match m {
                ControlMessage::Joined(j) if j.request == RequestId(request) => Some(Ok(j.clone())),
                ControlMessage::Error(e) if e.request == Some(RequestId(request)) => {
                    Some(Err(e.clone()))
                }
                _ => None,
            })
            .await;
        joined.unwrap_or_else(|e| panic!("join refused: {e:?}"))
    }

    /// Sends `Ping { nonce }` and waits for its `Pong`; returns what came before it.
    pub async fn ping(&mut self, nonce: u64) -> Vec<strait_protocol::ControlMessage> {
        use strait_protocol::{ControlMessage, Ping};
        self.send_frame(&ControlMessage::Ping(Ping { nonce })).await;
        let ((), skipped) = self
            .expect_where(|m| {
                matches!(m, ControlMessage::Pong(p) if p.nonce == nonce).then_some(())
            })
            .await;
        skipped
    }

    /// Waits (within [`WAIT`]) until the connection is closed and returns the application close
    /// code; panics if it ended any other way.
    pub async fn closed(&self) -> strait_protocol::ErrorCode {
        let error = tokio::time::timeout(WAIT, self.conn.closed())
            .await
            .expect("the gateway closes the connection in time");
        match error {
            quinn::ConnectionError::ApplicationClosed(close) => strait_protocol::ErrorCode(
                u32::try_from(close.error_code.into_inner()).expect("a u32 close code"),
            ),
            other => panic!("the connection ended without an application close: {other}"),
        }
    }

    /// Reads every message until the control stream ends, then returns them with the close code.
    /// The gateway sends `Error` before closing, but a close can overtake that frame (section
    /// 7.1 of the protocol), so callers check the `Error` only when it arrived.
    pub async fn drain_until_closed(
        &mut self,
    ) -> (
        Vec<strait_protocol::ControlMessage>,
        strait_protocol::ErrorCode,
    ) {
        let mut messages = Vec::new();
        tokio::time::timeout(WAIT, async {
            while let Some(m) = self.next_message().await {
                messages.push(m);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the gateway did not end the session; got {messages:?}"));
        let code = self.closed().await;
        (messages, code)
    }

    /// Whether the connection is still open.
    pub fn is_open(&self) -> bool {
        self.conn.close_reason().is_none()
    }

    /// Closes the connection with `NONE` (a leave) and waits, briefly, until the close is sent.
    /// Call it before stopping the gateway, which otherwise waits for the session until its drain
    /// deadline.
    pub async fn close(self) {
        self.conn.close(
            quinn::VarInt::from_u32(strait_protocol::ErrorCode::NONE.0),
            b"done",
        );
        let _ = tokio::time::timeout(WAIT, self.endpoint.wait_idle()).await;
    }
}

/// A `ClientHello` for protocol version 1.
pub fn client_hello(token: String, resume: Option<String>) -> strait_protocol::ClientHello {
    strait_protocol::ClientHello {
        version: strait_protocol::PROTOCOL_VERSION,
        token,
        resume: resume.map(strait_protocol::ResumeToken),
        agent: "strait-tests/raw".into(),
    }
}

/// A publish spec for one Opus layer (payload type [`rtp::OPUS_PT`]).
pub fn opus_spec() -> strait_client::PublishSpec {
    strait_client::PublishSpec {
        kind: strait_protocol::TrackKind::Audio,
        codec: strait_protocol::Codec {
            name: "opus".into(),
            payload_type: rtp::OPUS_PT,
            clock_rate: 48_000,
            channels: 2,
            fmtp: String::new(),
        },
        source: "microphone".into(),
        layers: vec![strait_client::LayerSpec::default()],
        muted: false,
    }
}

/// Waits until `session` knows a track of another participant and returns it.
pub async fn wait_for_track(session: &Session) -> strait_protocol::TrackInfo {
    tokio::time::timeout(WAIT, async {
        loop {
            let me = session.participant();
            if let Some(track) = session.tracks().into_iter().find(|t| t.participant != me) {
                return track;
            }
            if session.next_event().await.is_none() {
                panic!("session ended while waiting for a track");
            }
        }
    })
    .await
    .expect("a track announced in time")
}

/// What a [`Streamer`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamReport {
    /// Packets handed to the session.
    pub sent: u32,
    /// Packets refused because the session was reconnecting.
    pub not_connected: u32,
    /// Packets refused for another reason.
    pub failed: u32,
}

/// A publisher task: one Opus packet every `period` on `media`, carrying its index, until stopped
/// or `max_packets` have been attempted (the loop is bounded in count, hence in time).
#[derive(Debug)]
pub struct Streamer {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<StreamReport>,
}

impl Streamer {
    /// Starts sending packets `first..first + max_packets` with SSRC `ssrc`.
    pub fn start(
        session: Arc<Session>,
        media: strait_protocol::MediaId,
        ssrc: u32,
        first: u32,
        max_packets: u32,
        period: Duration,
    ) -> Streamer {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut report = StreamReport::default();
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for index in first..first.saturating_add(max_packets) {
                tick.tick().await;
                if stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                // RTP sequence numbers wrap at 2^16.
                let packet = rtp::opus(index as u16, index.wrapping_mul(960), ssrc, index);
                match session.send_rtp(media, &packet) {
                    Ok(()) => report.sent += 1,
                    Err(strait_client::SendError::NotConnected) => report.not_connected += 1,
                    Err(_) => report.failed += 1,
                }
            }
            report
        });
        Streamer { stop, task }
    }

    /// Stops the loop and returns what it did.
    pub async fn stop(self) -> StreamReport {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the streamer stops in time")
            .expect("the streamer does not panic")
    }
}

/// The `strait` binary next to the running test (`target/<profile>/strait`), or `$STRAIT_BIN`:
/// for tests that run a node as a process of its own (to kill or pause it).
pub fn strait_binary() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("STRAIT_BIN") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("the test's path");
    let dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target/<profile>");
    let binary = dir.join(format!("strait{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build -p strait-gateway --bin strait` first (scripts/test \
         does), or set STRAIT_BIN",
        binary.display()
    );
    binary
}
