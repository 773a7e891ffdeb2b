//! A client of the gateway's WebSocket signaling (`/ws/rtc`): control messages as one frame per
//! binary WebSocket message, as a legacy WebRTC peer's signaling would send them.

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use strait_protocol::{ControlMessage, Decoded, ErrorCode, FrameReader, Join, RequestId, RoomId};
use tokio_tungstenite::tungstenite::Message;

use crate::fixture::{TestGateway, WAIT};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A signaling client: one frame per binary message.
pub struct WsClient {
    socket: Socket,
    /// The server's close frame (status, reason) once it closed.
    pub closed: Option<(u16, String)>,
}

impl std::fmt::Debug for WsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsClient")
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl WsClient {
    /// Opens `/ws/rtc` with `token` in the query (or none).
    pub async fn connect(gw: &TestGateway, token: Option<&str>) -> WsClient {
        let url = match token {
            Some(token) => format!("ws://{}/ws/rtc?token={token}", gw.http_addr()),
            None => format!("ws://{}/ws/rtc", gw.http_addr()),
        };
        let (socket, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("websocket connects in time")
            .expect("websocket upgrade");
        WsClient {
            socket,
            closed: None,
        }
    }

    /// Connects and takes the `ServerHello`.
    pub async fn hello(gw: &TestGateway, token: &str) -> WsClient {
        let mut client = WsClient::connect(gw, Some(token)).await;
        match client.next().await {
            Some(ControlMessage::ServerHello(h)) => assert!(!h.resumed),
            other => panic!("expected ServerHello, got {other:?}"),
        }
        client
    }

    /// Sends one message as one frame in one binary message.
    pub async fn send(&mut self, message: &ControlMessage) {
        let mut out = Vec::new();
        strait_protocol::encode_frame(message, usize::MAX, &mut out).expect("encode");
        self.send_raw(Message::Binary(Bytes::from(out))).await;
    }

    /// Sends any WebSocket message as it is.
    pub async fn send_raw(&mut self, message: Message) {
        self.socket.send(message).await.expect("websocket send");
    }

    /// The next control message, or `None` once the server closed (its close frame is kept).
    pub async fn next(&mut self) -> Option<ControlMessage> {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.socket.next().await {
                    Some(Ok(Message::Binary(bytes))) => {
                        let mut input = bytes;
                        let mut reader = FrameReader::default();
                        match reader.next_message(&mut input).expect("a valid frame") {
                            Some(Decoded::Message(m)) => {
                                assert!(input.is_empty(), "one frame per message");
                                return Some(m);
                            }
                            other => panic!("unexpected frame {other:?}"),
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        self.closed = Some(
                            frame
                                .map(|f| (u16::from(f.code), f.reason.to_string()))
                                .unwrap_or((1005, String::new())),
                        );
                        return None;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return None,
                }
            }
        })
        .await
        .expect("a message or a close in time")
    }

    /// Skips messages until one for which `f` gives a value.
    pub async fn expect<T>(&mut self, mut f: impl FnMut(&ControlMessage) -> Option<T>) -> T {
        let mut seen = Vec::new();
        loop {
            match self.next().await {
                Some(m) => {
                    if let Some(v) = f(&m) {
                        return v;
                    }
                    seen.push(m);
                }
                None => panic!("closed ({:?}) after {seen:?}", self.closed),
            }
        }
    }

    /// Expects the session-level `Error` with `code`, then the close; returns the reason.
    pub async fn expect_closed_with(&mut self, code: ErrorCode) -> String {
        let reason = self
            .expect(|m| match m {
                ControlMessage::Error(e) if e.request.is_none() => Some(e.clone()),
                _ => None,
            })
            .await;
        assert_eq!(reason.code, code, "{reason:?}");
        assert!(
            self.next().await.is_none(),
            "the session closes after the error"
        );
        let (ws_code, ws_reason) = self.closed.clone().expect("a close frame");
        assert_ne!(ws_code, 1000, "not a normal close");
        assert!(!ws_reason.is_empty(), "the close frame says why");
        reason.reason
    }

    /// Sends `Leave` and waits for the server to close.
    pub async fn leave(mut self) {
        self.send(&ControlMessage::Leave(strait_protocol::Leave {
            request: RequestId(u32::MAX),
        }))
        .await;
        while self.next().await.is_some() {}
    }

    /// Joins `room` and waits for `Joined`.
    pub async fn join(&mut self, room: &str) {
        self.send(&ControlMessage::Join(Join {
            request: RequestId(1),
            room: RoomId(room.into()),
            name: String::new(),
        }))
        .await;
        self.expect(|m| matches!(m, ControlMessage::Joined(_)).then_some(()))
            .await;
    }
}
