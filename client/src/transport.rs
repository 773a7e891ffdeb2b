//! The two transports behind one small surface: raw QUIC on quinn and WebTransport on wtransport.
//!
//! Both give the session the same things: one client-opened bidirectional control stream,
//! datagrams, a way to learn why the connection ended, and a way to close it with a protocol
//! error code. An enum (rather than a trait object) keeps the datagram path free of dynamic
//! dispatch and allocation beyond the datagram itself. Only the raw QUIC endpoint can be rebound.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strait_protocol::ErrorCode;

use crate::config::{ClientConfig, Transport};
use crate::error::{ClientError, SendError};
use crate::tls;

/// Where a connection goes: the UDP address and the name for TLS and the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    pub(crate) name: String,
}

/// How a connection ended, from the session's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ended {
    /// This side closed it.
    Local,
    /// The server closed it with an application code.
    ByServer { code: ErrorCode, reason: String },
    /// It was lost: idle timeout, reset, transport error.
    Lost(String),
}

/// An endpoint: one UDP socket and what is needed to connect from it.
pub(crate) enum Connector {
    Quic {
        endpoint: quinn::Endpoint,
        config: quinn::ClientConfig,
        socket_buffer: usize,
    },
    WebTransport {
        endpoint: wtransport::Endpoint<wtransport::endpoint::endpoint_side::Client>,
        path: String,
    },
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Connector::Quic { endpoint, .. } => f
                .debug_struct("Connector::Quic")
                .field("local", &endpoint.local_addr().ok())
                .finish_non_exhaustive(),
            Connector::WebTransport { endpoint, .. } => f
                .debug_struct("Connector::WebTransport")
                .field("local", &endpoint.local_addr().ok())
                .finish_non_exhaustive(),
        }
    }
}

/// A UDP socket with large buffers (best effort), non-blocking, bound to `bind`.
pub(crate) fn udp_socket(bind: SocketAddr, buffer: usize) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
    // Larger buffers absorb media bursts; the kernel caps them at its rmem/wmem maximum.
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    socket.set_nonblocking(true)?;
    socket.bind(&bind.into())?;
    Ok(socket.into())
}

fn transport_config(config: &ClientConfig) -> Result<quinn::TransportConfig, ClientError> {
    let mut transport = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(config.idle_timeout)
        .map_err(|_| ClientError::Config("idle_timeout is too large".into()))?;
    transport.max_idle_timeout(Some(idle));
    transport.keep_alive_interval(Some(config.keep_alive));
    Ok(transport)
}

/// Answers every name with the configured server address, so that the WebTransport URL can carry
/// the certificate's name while the client dials the address it was given.
#[derive(Debug)]
struct FixedResolver(SocketAddr);

impl wtransport::config::DnsResolver for FixedResolver {
    fn resolve(&self, _host: &str) -> Pin<Box<dyn wtransport::config::DnsLookupFuture>> {
        let addr = self.0;
        Box::pin(async move { Ok(Some(addr)) })
    }
}

impl Connector {
    /// Binds the socket and prepares TLS for `config.transport`.
    pub(crate) fn new(config: &ClientConfig) -> Result<Self, ClientError> {
        let bind = config.bind.unwrap_or_else(|| match config.server {
            SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
            SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
        });
        let socket = udp_socket(bind, config.socket_buffer)?;
        let transport = transport_config(config)?;
        match config.transport {
            Transport::Quic => {
                let tls = tls::client_config(&config.trust, tls::ALPN_STRAIT)?;
                let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
                    .map_err(|e| ClientError::Tls(e.to_string()))?;
                let mut client = quinn::ClientConfig::new(Arc::new(crypto));
                client.transport_config(Arc::new(transport));
                let endpoint = quinn::Endpoint::new(
                    quinn::EndpointConfig::default(),
                    None,
                    socket,
                    Arc::new(quinn::TokioRuntime),
                )?;
                Ok(Connector::Quic {
                    endpoint,
                    config: client,
                    socket_buffer: config.socket_buffer,
                })
            }
            Transport::WebTransport => {
                let tls = tls::client_config(&config.trust, tls::ALPN_H3)?;
                let wt = wtransport::ClientConfig::builder()
                    .with_bind_socket(socket)
                    .with_custom_tls_and_transport(tls, transport)
                    .dns_resolver(FixedResolver(config.server))
                    .build();
                let endpoint = wtransport::Endpoint::client(wt)?;
                Ok(Connector::WebTransport {
                    endpoint,
                    path: config.path.clone(),
                })
            }
        }
    }

    /// Opens a connection (and, for WebTransport, the session) to `target`.
    pub(crate) async fn connect(&self, target: &Target) -> Result<Conn, ClientError> {
        match self {
            Connector::Quic {
                endpoint, config, ..
            } => {
                let connecting = endpoint
                    .connect_with(config.clone(), target.addr, &target.name)
                    .map_err(|e| ClientError::Connect(e.to_string()))?;
                let conn = connecting.await.map_err(|e| quic_connect_error(&e))?;
                Ok(Conn::Quic(conn))
            }
            Connector::WebTransport { endpoint, path } => {
                let host = match target.name.parse::<std::net::IpAddr>() {
                    Ok(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
                    _ => target.name.clone(),
                };
                let url = format!("https://{host}:{}{path}", target.addr.port());
                let conn = endpoint
                    .connect(url)
                    .await
                    .map_err(|e| wt_connect_error(&e))?;
                Ok(Conn::WebTransport(conn))
            }
        }
    }

    /// Moves the endpoint to a new UDP socket bound to `bind` (raw QUIC only). Returns the new
    /// local address.
    pub(crate) fn rebind(&self, bind: Option<SocketAddr>) -> Result<SocketAddr, ClientError> {
        match self {
            Connector::Quic {
                endpoint,
                socket_buffer,
                ..
            } => {
                let bind = match bind {
                    Some(addr) => addr,
                    None => SocketAddr::new(endpoint.local_addr()?.ip(), 0),
                };
                let socket = udp_socket(bind, *socket_buffer)?;
                let local = socket.local_addr()?;
                endpoint.rebind(socket)?;
                Ok(local)
            }
            Connector::WebTransport { .. } => Err(ClientError::Unsupported(
                "rebinding a WebTransport session (wtransport cannot rebind its socket)",
            )),
        }
    }

    /// The local UDP address.
    pub(crate) fn local_addr(&self) -> Result<SocketAddr, ClientError> {
        Ok(match self {
            Connector::Quic { endpoint, .. } => endpoint.local_addr()?,
            Connector::WebTransport { endpoint, .. } => endpoint.local_addr()?,
        })
    }
}

fn quic_connect_error(e: &quinn::ConnectionError) -> ClientError {
    match e {
        // RFC 9001 §4.8: TLS alerts travel as transport error codes 0x0100 + alert.
        quinn::ConnectionError::TransportError(t) if is_crypto(u64::from(t.code)) => {
            ClientError::Tls(e.to_string())
        }
        quinn::ConnectionError::ConnectionClosed(c) if is_crypto(u64::from(c.error_code)) => {
            ClientError::Tls(e.to_string())
        }
        quinn::ConnectionError::ApplicationClosed(a) => ClientError::Closed {
            code: code_from_varint(a.error_code.into_inner()),
            reason: String::from_utf8_lossy(&a.reason).into_owned(),
        },
        _ => ClientError::Connect(e.to_string()),
    }
}

fn is_crypto(code: u64) -> bool {
    (0x100..=0x1ff).contains(&code)
}

fn wt_connect_error(e: &wtransport::error::ConnectingError) -> ClientError {
    use wtransport::error::{ConnectingError, ConnectionError};
    match e {
        // wtransport keeps the QUIC error code private; its text names the certificate failure.
        ConnectingError::ConnectionError(
            ConnectionError::QuicProto(_) | ConnectionError::ConnectionClosed(_),
        ) if e.to_string().contains("certificate") || e.to_string().contains("crypto") => {
            ClientError::Tls(e.to_string())
        }
        ConnectingError::ConnectionError(ConnectionError::ApplicationClosed(a)) => {
            ClientError::Closed {
                code: code_from_varint(a.code().into_inner()),
                reason: String::from_utf8_lossy(a.reason()).into_owned(),
            }
        }
        _ => ClientError::Connect(e.to_string()),
    }
}

/// Error codes are `u32` on the wire; a larger close code is shown as `u32::MAX`.
fn code_from_varint(v: u64) -> ErrorCode {
    ErrorCode(u32::try_from(v).unwrap_or(u32::MAX))
}

/// A live connection.
#[derive(Debug, Clone)]
pub(crate) enum Conn {
    Quic(quinn::Connection),
    WebTransport(wtransport::Connection),
}

/// The sending half of the control stream.
#[derive(Debug)]
pub(crate) enum SendHalf {
    Quic(quinn::SendStream),
    WebTransport(wtransport::SendStream),
}

/// The receiving half of the control stream.
#[derive(Debug)]
pub(crate) enum RecvHalf {
    Quic(quinn::RecvStream),
    WebTransport(wtransport::RecvStream),
}

impl Conn {
    /// Opens the control stream: the first client-opened bidirectional stream.
    pub(crate) async fn open_control(&self) -> Result<(SendHalf, RecvHalf), ClientError> {
        match self {
            Conn::Quic(c) => {
                let (s, r) = c
                    .open_bi()
                    .await
                    .map_err(|e| lost_or_closed(quic_ended(&e)))?;
                Ok((SendHalf::Quic(s), RecvHalf::Quic(r)))
            }
            Conn::WebTransport(c) => {
                let opening = c
                    .open_bi()
                    .await
                    .map_err(|e| lost_or_closed(wt_ended(&e)))?;
                let (s, r) = opening
                    .await
                    .map_err(|e| ClientError::Connect(format!("control stream: {e}")))?;
                Ok((SendHalf::WebTransport(s), RecvHalf::WebTransport(r)))
            }
        }
    }

    /// Queues one datagram. Never blocks; quinn drops its oldest queued datagram when full.
    pub(crate) fn send_datagram(&self, datagram: Bytes) -> Result<(), SendError> {
        match self {
            Conn::Quic(c) => c.send_datagram(datagram).map_err(|e| match e {
                quinn::SendDatagramError::TooLarge => SendError::TooLarge {
                    len: 0,
                    max: c.max_datagram_size().unwrap_or(0),
                },
                quinn::SendDatagramError::ConnectionLost(_) => SendError::NotConnected,
                _ => SendError::Unsupported,
            }),
            Conn::WebTransport(c) => c.send_datagram(datagram).map_err(|e| match e {
                wtransport::error::SendDatagramError::TooLarge => SendError::TooLarge {
                    len: 0,
                    max: c.max_datagram_size().unwrap_or(0),
                },
                wtransport::error::SendDatagramError::NotConnected => SendError::NotConnected,
                wtransport::error::SendDatagramError::UnsupportedByPeer => SendError::Unsupported,
            }),
        }
    }

    /// The largest datagram payload the stack accepts now (it changes with the path MTU).
    pub(crate) fn max_datagram_size(&self) -> Option<usize> {
        match self {
            Conn::Quic(c) => c.max_datagram_size(),
            Conn::WebTransport(c) => c.max_datagram_size(),
        }
    }

    /// Waits for the next datagram. Cancel-safe.
    pub(crate) async fn read_datagram(&self) -> Result<Bytes, Ended> {
        match self {
            Conn::Quic(c) => c.read_datagram().await.map_err(|e| quic_ended(&e)),
            Conn::WebTransport(c) => {
                // Straight from the QUIC connection as well as through wtransport's
                // `receive_datagram`, which alone hands datagrams over one at a time from its
                // driver task and falls behind under load. Its driver still reads whenever its
                // one slot is free, so its channel is polled first: a datagram it took comes
                // before any read after it.
                let session = c.session_id().into_u64();
                loop {
                    tokio::select! {
                        biased;
                        d = c.receive_datagram() => {
                            return d.map(|d| d.payload()).map_err(|e| wt_ended(&e));
                        }
                        d = c.quic_connection().read_datagram() => {
                            let d = d.map_err(|e| quic_ended(&e))?;
                            if let Some(payload) =
                                strait_protocol::datagram::strip_webtransport_prefix(&d, session)
                            {
                                return Ok(payload);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Waits until the connection ends and says how. Cancel-safe.
    pub(crate) async fn closed(&self) -> Ended {
        match self {
            Conn::Quic(c) => quic_ended(&c.closed().await),
            Conn::WebTransport(c) => wt_ended(&c.closed().await),
        }
    }

    /// Closes the connection with a protocol error code.
    pub(crate) fn close(&self, code: ErrorCode, reason: &str) {
        match self {
            Conn::Quic(c) => c.close(quinn::VarInt::from_u32(code.0), reason.as_bytes()),
            Conn::WebTransport(c) => {
                c.close(wtransport::VarInt::from_u32(code.0), reason.as_bytes())
            }
        }
    }

    /// The server's address as this side sees it.
    pub(crate) fn remote_address(&self) -> SocketAddr {
        match self {
            Conn::Quic(c) => c.remote_address(),
            Conn::WebTransport(c) => c.remote_address(),
        }
    }

    /// The transport's current round-trip estimate.
    pub(crate) fn rtt(&self) -> Duration {
        match self {
            Conn::Quic(c) => c.rtt(),
            Conn::WebTransport(c) => c.rtt(),
        }
    }
}

impl SendHalf {
    /// Writes all of `bytes`. Not cancel-safe: only the writer task calls it.
    pub(crate) async fn write_all(&mut self, bytes: &[u8]) -> Result<(), String> {
        match self {
            SendHalf::Quic(s) => s.write_all(bytes).await.map_err(|e| e.to_string()),
            SendHalf::WebTransport(s) => s.write_all(bytes).await.map_err(|e| e.to_string()),
        }
    }
}

/// What reading the control stream gave.
#[derive(Debug)]
pub(crate) enum Read {
    Chunk(Bytes),
    /// The server finished its side of the control stream.
    Finished,
    /// The connection ended.
    Ended(Ended),
    /// The stream alone failed (reset by the server).
    Failed(String),
}

impl RecvHalf {
    /// Reads the next chunk of the control stream. Cancel-safe (quinn's `read_chunk` is).
    pub(crate) async fn read(&mut self) -> Read {
        let stream = match self {
            RecvHalf::Quic(s) => s,
            // After the WebTransport stream header (sent by the client side only), the control
            // stream's bytes are the QUIC stream's bytes.
            RecvHalf::WebTransport(s) => s.quic_stream_mut(),
        };
        match stream.read_chunk(64 * 1024, true).await {
            Ok(Some(chunk)) => Read::Chunk(chunk.bytes),
            Ok(None) => Read::Finished,
            Err(quinn::ReadError::ConnectionLost(e)) => Read::Ended(quic_ended(&e)),
            Err(e) => Read::Failed(e.to_string()),
        }
    }
}

pub(crate) fn quic_ended(e: &quinn::ConnectionError) -> Ended {
    match e {
        quinn::ConnectionError::LocallyClosed => Ended::Local,
        quinn::ConnectionError::ApplicationClosed(a) => Ended::ByServer {
            code: code_from_varint(a.error_code.into_inner()),
            reason: String::from_utf8_lossy(&a.reason).into_owned(),
        },
        other => Ended::Lost(other.to_string()),
    }
}

fn wt_ended(e: &wtransport::error::ConnectionError) -> Ended {
    use wtransport::error::ConnectionError;
    match e {
        ConnectionError::LocallyClosed => Ended::Local,
        ConnectionError::ApplicationClosed(a) => Ended::ByServer {
            code: code_from_varint(a.code().into_inner()),
            reason: String::from_utf8_lossy(a.reason()).into_owned(),
        },
        other => Ended::Lost(other.to_string()),
    }
}

/// The error a request sees when the connection ended under it.
pub(crate) fn lost_or_closed(ended: Ended) -> ClientError {
    match ended {
        Ended::Local => ClientError::Closed {
            code: ErrorCode::NONE,
            reason: "closed locally".into(),
        },
        Ended::ByServer { code, reason } => ClientError::Closed { code, reason },
        Ended::Lost(why) => ClientError::ConnectionLost(why),
    }
}
