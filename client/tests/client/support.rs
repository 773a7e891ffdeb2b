//! A scripted stand-in for the gateway: a quinn endpoint on 127.0.0.1 with a self-signed ECDSA
//! P-256 certificate and ALPN `strait/1`. Each test drives the server side by hand through
//! [`Peer`] (read the next message, answer it, send datagrams), so every exchange is explicit.
//! [`Relay`] is a UDP relay that can black-hole traffic, to lose a connection for real.

#![allow(
    dead_code,
    reason = "each test module uses a different part of the fixture"
)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use strait_client::protocol::datagram::{self, Datagram, DatagramControl};
use strait_client::protocol::limits::DEFAULT_MAX_FRAME_SIZE;
use strait_client::protocol::*;
use strait_client::{Backoff, ClientConfig, Session, SessionEvent, Trust, certificate_hash};

/// Generous bound on anything a test waits for.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// Awaits `fut`, failing the test if it takes longer than [`WAIT`].
pub(crate) async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// A self-signed ECDSA P-256 identity: certificate DER, PKCS#8 key DER.
pub(crate) fn identity() -> (Vec<u8>, Vec<u8>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    (
        certified.cert.der().to_vec(),
        certified.signing_key.serialize_der(),
    )
}

/// A CA certificate and a leaf for `localhost` it signed: (CA DER, leaf DER, leaf key).
pub(crate) fn ca_signed_identity() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    (
        ca.der().to_vec(),
        leaf.der().to_vec(),
        leaf_key.serialize_der(),
    )
}

#[derive(Clone)]
pub(crate) struct TestServer {
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) addr: SocketAddr,
    pub(crate) cert_hash: [u8; 32],
}

impl TestServer {
    pub(crate) fn start() -> Self {
        let (cert, key) = identity();
        Self::start_with(cert, key)
    }

    /// A server presenting `cert` (DER) with its PKCS#8 `key`.
    pub(crate) fn start_with(cert: Vec<u8>, key: Vec<u8>) -> Self {
        let cert_hash = certificate_hash(&cert);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert)],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
            )
            .unwrap();
        tls.alpn_protocols = vec![b"strait/1".to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
        let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = endpoint.local_addr().unwrap();
        Self {
            endpoint,
            addr,
            cert_hash,
        }
    }

    /// A client configuration that trusts this server, with short, test-friendly timings.
    pub(crate) fn config(&self) -> ClientConfig {
        config_for(self.addr, self.cert_hash)
    }

    /// Accepts the next connection and its control stream.
    pub(crate) async fn accept(&self) -> Peer {
        within("a connection", async {
            let incoming = self.endpoint.accept().await.expect("endpoint open");
            let conn = incoming.await.expect("handshake");
            let (send, recv) = conn.accept_bi().await.expect("control stream");
            Peer {
                conn,
                send,
                recv,
                reader: FrameReader::new(DEFAULT_MAX_FRAME_SIZE),
                inbox: VecDeque::new(),
            }
        })
        .await
    }

    /// Accepts the next connection attempt and returns how its handshake ended.
    pub(crate) async fn accept_handshake(
        &self,
    ) -> Result<quinn::Connection, quinn::ConnectionError> {
        let incoming = within("a connection attempt", self.endpoint.accept())
            .await
            .expect("endpoint open");
        incoming.await
    }
}

pub(crate) fn config_for(addr: SocketAddr, hash: [u8; 32]) -> ClientConfig {
    let mut config = ClientConfig::new(addr, Trust::Hashes(vec![hash]), "test-token");
    config.bind = Some("127.0.0.1:0".parse().unwrap());
    config.name = "tester".into();
    config.hello_timeout = WAIT;
    config.request_timeout = WAIT;
    config.backoff = Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
        attempts: 20,
    };
    config.rng_seed = Some(7);
    config
}

/// The server's side of one connection.
pub(crate) struct Peer {
    pub(crate) conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    reader: FrameReader,
    inbox: VecDeque<ControlMessage>,
}

impl Peer {
    /// The next control message from the client (unknown kinds fail the test).
    pub(crate) async fn recv(&mut self) -> ControlMessage {
        loop {
            if let Some(message) = self.inbox.pop_front() {
                return message;
            }
            let chunk = within("a control frame", self.recv.read_chunk(64 * 1024, true))
                .await
                .expect("control stream readable")
                .expect("control stream open");
            let mut bytes = chunk.bytes;
            while let Some(decoded) = self.reader.next_message(&mut bytes).expect("valid frame") {
                match decoded {
                    Decoded::Message(m) => self.inbox.push_back(m),
                    Decoded::UnknownKind(k) => panic!("client sent unknown kind {k}"),
                }
            }
        }
    }

    /// Sends messages in one write.
    pub(crate) async fn send(&mut self, messages: &[ControlMessage]) {
        let mut wire = Vec::new();
        for m in messages {
            encode_frame(m, DEFAULT_MAX_FRAME_SIZE, &mut wire).unwrap();
        }
        self.send_raw(&wire).await;
    }

    /// Ends the server's side of the control stream (a refusal that does not close the
    /// connection itself).
    pub(crate) fn finish(&mut self) {
        let _ = self.send.finish();
    }

    /// Writes bytes as they are on the control stream.
    pub(crate) async fn send_raw(&mut self, bytes: &[u8]) {
        self.send
            .write_all(bytes)
            .await
            .expect("control stream writable");
    }

    /// Reads `ClientHello` and answers `ServerHello`; returns the hello.
    pub(crate) async fn hello(
        &mut self,
        participant: u64,
        resume_token: &str,
        resumed: bool,
    ) -> ClientHello {
        let ControlMessage::ClientHello(hello) = self.recv().await else {
            panic!("expected ClientHello first");
        };
        self.send(&[server_hello(participant, resume_token, resumed)])
            .await;
        hello
    }

    /// Reads `Join` and answers `Joined`; returns the join.
    pub(crate) async fn join(&mut self, participant: u64) -> Join {
        let ControlMessage::Join(join) = self.recv().await else {
            panic!("expected Join");
        };
        self.send(&[joined(join.request, &join.room.0, participant)])
            .await;
        join
    }

    /// The next datagram from the client.
    pub(crate) async fn recv_datagram(&self) -> Bytes {
        within("a datagram", self.conn.read_datagram())
            .await
            .expect("connection open")
    }

    /// The next media datagram, parsed.
    pub(crate) async fn recv_media(&self) -> (MediaId, Bytes) {
        loop {
            let d = self.recv_datagram().await;
            if let Ok(Datagram::Media { media, rtp }) = datagram::parse_datagram(&d) {
                return (media, rtp);
            }
        }
    }

    pub(crate) fn send_media(&self, media: MediaId, rtp: &[u8]) {
        let mut buf = vec![0u8; datagram::media_header_len(media) + rtp.len()];
        datagram::write_media_datagram(media, rtp, &mut buf).unwrap();
        self.conn.send_datagram(Bytes::from(buf)).unwrap();
    }

    pub(crate) fn send_control_datagram(&self, control: DatagramControl) {
        let mut out = Vec::new();
        datagram::encode_control_datagram(&control, &mut out).unwrap();
        self.conn.send_datagram(Bytes::from(out)).unwrap();
    }

    /// Answers datagram pings until the connection ends; counts nothing else.
    pub(crate) fn spawn_pong(&self) -> tokio::task::JoinHandle<()> {
        let conn = self.conn.clone();
        tokio::spawn(async move {
            while let Ok(d) = conn.read_datagram().await {
                if let Ok(Datagram::Control(DatagramControl::Ping { seq, timestamp_us })) =
                    datagram::parse_datagram(&d)
                {
                    let mut out = Vec::new();
                    let pong = DatagramControl::Pong { seq, timestamp_us };
                    datagram::encode_control_datagram(&pong, &mut out).unwrap();
                    let _ = conn.send_datagram(Bytes::from(out));
                }
            }
        })
    }
}

pub(crate) fn server_hello(participant: u64, resume_token: &str, resumed: bool) -> ControlMessage {
    ControlMessage::ServerHello(ServerHello {
        version: PROTOCOL_VERSION,
        participant: ParticipantId(participant),
        resume_token: ResumeToken(resume_token.into()),
        resumed,
        ice_servers: vec![],
        limits: SessionLimits {
            max_frame_size: 65_536,
            max_tracks: 16,
            max_subscriptions: 256,
            max_messages_per_second: 50,
        },
        max_datagram_size: 1160,
    })
}

pub(crate) fn joined(request: RequestId, room: &str, participant: u64) -> ControlMessage {
    ControlMessage::Joined(Joined {
        request,
        room: RoomId(room.into()),
        me: participant_info(participant),
    })
}

pub(crate) fn participant_info(participant: u64) -> ParticipantInfo {
    ParticipantInfo {
        participant: ParticipantId(participant),
        identity: format!("user-{participant}"),
        name: String::new(),
    }
}

pub(crate) fn vp8() -> Codec {
    Codec {
        name: "VP8".into(),
        payload_type: 96,
        clock_rate: 90_000,
        channels: 0,
        fmtp: String::new(),
    }
}

pub(crate) fn track_info(track: u64, participant: u64) -> TrackInfo {
    TrackInfo {
        track: TrackId(track),
        participant: ParticipantId(participant),
        kind: TrackKind::Video,
        codec: vp8(),
        source: "camera".into(),
        layers: vec![],
        muted: false,
    }
}

/// A valid RTP packet: V=2, PT 96, the given sequence number, `payload` bytes of 0xab.
pub(crate) fn rtp(seq: u16, payload: usize) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&3000u32.to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.resize(12 + payload, 0xab);
    p
}

/// Waits for the first event `pick` accepts, skipping others.
pub(crate) async fn event<T>(
    session: &Session,
    mut pick: impl FnMut(SessionEvent) -> Option<T>,
) -> T {
    within("an event", async {
        loop {
            let event = session.next_event().await.expect("session open");
            if let Some(found) = pick(event) {
                return found;
            }
        }
    })
    .await
}

/// A UDP relay between one client and a server that can drop everything, both ways.
pub(crate) struct Relay {
    pub(crate) addr: SocketAddr,
    blocked: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub(crate) async fn start(upstream: SocketAddr) -> Self {
        let front = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let back = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        back.connect(upstream).await.unwrap();
        let addr = front.local_addr().unwrap();
        let blocked = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let blocked = blocked.clone();
            async move {
                let mut client: Option<SocketAddr> = None;
                let (mut up, mut down) = (vec![0u8; 65_536], vec![0u8; 65_536]);
                loop {
                    tokio::select! {
                        r = front.recv_from(&mut up) => {
                            let Ok((n, from)) = r else { return };
                            client = Some(from);
                            if !blocked.load(Ordering::SeqCst) {
                                let _ = back.send(&up[..n]).await;
                            }
                        }
                        r = back.recv(&mut down) => {
                            let Ok(n) = r else { return };
                            if let (Some(to), false) = (client, blocked.load(Ordering::SeqCst)) {
                                let _ = front.send_to(&down[..n], to).await;
                            }
                        }
                    }
                }
            }
        });
        Self {
            addr,
            blocked,
            task,
        }
    }

    pub(crate) fn set_blocked(&self, blocked: bool) {
        self.blocked.store(blocked, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
