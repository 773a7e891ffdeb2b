//! WebSocket signaling for legacy WebRTC peers: `GET /ws/rtc?token=…` on the HTTP port.
//!
//! The WebSocket carries the control protocol of `docs/PROTOCOL.md`: each binary message is one
//! frame (varint length + bincode body), bounded by `limits.max_frame_size`. The peer is a full
//! participant: it joins with `Join`, hears `ParticipantJoined`/`Left` and `TrackPublished`/
//! `Unpublished` like a QUIC session (the worker drives it through the same [`crate::worker::translate`]
//! requests), and moves media over WebRTC on the bridge's one UDP socket: it sends an `Sdp` offer
//! and gets the answer, then one `Subscribed` (request id 0) per track it will receive.
//!
//! Flow: the token in the query is checked (the same JWT check as a QUIC session's
//! `ClientHello`); the server then sends `ServerHello` without waiting for a `ClientHello`
//! (which is a violation on this path). Differences from a QUIC session:
//!
//! - `Publish` and `Subscribe` are refused (`INVALID_REQUEST`): what a peer sends and receives is
//!   what its offer says.
//! - Renegotiation is driven by the peer: on `TrackPublished` it adds a receiving section and
//!   sends a new offer on the same peer connection; the answer binds the new sections to tracks
//!   it does not receive yet (and stops sending tracks unpublished since). The gateway never
//!   offers.
//! - `IceCandidate` messages are accepted and ignored: the bridge is ICE-lite and learns the
//!   peer's address from its connectivity checks; the answer carries the bridge's candidates.
//! - No resume: when the WebSocket closes, the participant leaves at once.
//! - Liveness: the server sends a WebSocket Ping every `quic.keep_alive` and closes a session
//!   that sent nothing (not even a Pong) for `quic.idle_timeout`, or that has not joined within
//!   `session.hello_timeout` (`TIMEOUT`).
//!
//! Errors: a malformed or oversized frame, a text message or a refused token is answered with an
//! `Error` (no request id) and a close frame, and touches no other session; a refused request is
//! an `Error` with its request id and the session goes on. An `Error` without a request id from
//! the worker (a refused offer, a lost WebRTC connection) also ends the session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::header::ORIGIN;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde::Deserialize;
use strait_protocol::{ControlMessage, Decoded, ErrorCode, ParticipantId, SingleFrameError};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::HttpState;
use crate::auth::{RoomGrant, VerifiedToken};
use crate::cluster::Placed;
use crate::metrics::RefusalReason;
use crate::session::core::{
    HelloFacts, HubRequest, Incoming, SessionCore, SessionEnd, SessionOutput,
};
use crate::session::{RedirectPath, SessionContext};
use crate::worker::hub::Attached;
use crate::worker::{WorkerCommand, WorkerHandle};

/// Adds the `/ws/rtc` route.
pub(crate) fn routes(router: Router<Arc<HttpState>>) -> Router<Arc<HttpState>> {
    router.route("/ws/rtc", get(upgrade))
}

#[derive(Debug, Deserialize)]
struct Params {
    #[serde(default)]
    token: Option<String>,
}

async fn upgrade(
    State(http): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let shared = http.sessions.clone();
    if shared.drain.is_cancelled() {
        shared.metrics.refuse(RefusalReason::Draining);
        return (StatusCode::SERVICE_UNAVAILABLE, "the gateway is draining\n").into_response();
    }
    // A page of another site must not open sessions with its visitors' tokens (WebSockets are
    // not bound by CORS): the same `Origin` rule as WebTransport, before anything is allocated.
    let origin = headers
        .get(ORIGIN)
        .map(|v| v.to_str().unwrap_or("\u{fffd}"));
    if !shared.config.webtransport.allows_origin(
        origin,
        http.http_addr,
        shared.config.cluster.public_host.as_deref(),
    ) {
        shared.metrics.refuse(RefusalReason::Origin);
        return (StatusCode::FORBIDDEN, "this Origin may not open sessions\n").into_response();
    }
    // The same session limits as QUIC sessions (per node, per source address), held for the
    // session's life; the drain waits for these sessions too.
    let permit = match http.admission.admit(peer.ip()) {
        Ok(permit) => permit,
        Err(reason) => {
            shared.metrics.refuse(reason);
            return (StatusCode::SERVICE_UNAVAILABLE, "session limit reached\n").into_response();
        }
    };
    // Verified before the upgrade; a refusal is still told over the WebSocket, where a browser
    // can read it (it cannot read the status of a refused upgrade).
    let verified = match params.token.as_deref() {
        Some(token) => shared
            .auth
            .keys
            .verify(token, SystemTime::now())
            .map_err(|e| (e.code(), format!("access token refused: {e}"))),
        None => Err((
            ErrorCode::UNAUTHORIZED,
            "the `token` query parameter is required".to_owned(),
        )),
    };
    // A frame is its body plus a varint prefix of at most 8 bytes; tungstenite refuses a longer
    // message before buffering it.
    let max_message = shared.config.limits.max_frame_size + 8;
    upgrade
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .on_upgrade(move |socket| async move {
            let participant = shared.new_participant_id();
            let span = tracing::info_span!("ws_session", participant = participant.0);
            run(shared, socket, participant, verified)
                .instrument(span)
                .await;
            drop(permit);
        })
}

async fn run(
    shared: Arc<SessionContext>,
    mut socket: WebSocket,
    participant: ParticipantId,
    verified: Result<VerifiedToken, (ErrorCode, String)>,
) {
    let config = &shared.config;
    let mut core = SessionCore::websocket(
        shared.settings.clone(),
        shared.metrics.clone(),
        verified,
        Instant::now(),
    );
    let (control_tx, mut control_rx) = mpsc::channel(config.limits.control_queue);
    let mut control_tx = Some(control_tx);
    let mut worker = None;
    let end = match serve(
        &shared,
        &mut socket,
        participant,
        &mut core,
        &mut control_tx,
        &mut control_rx,
        &mut worker,
    )
    .await
    {
        Ok(end) => end,
        Err(Lost) => SessionEnd::Lost("the websocket failed".into()),
    };
    // The queue's sender went to the hub with the attach.
    if let Some(worker) = worker {
        worker
            .send(WorkerCommand::SignalingClosed { participant })
            .await;
    }
    match end {
        SessionEnd::Left => {
            let _ = socket
                .send(Message::Close(Some(CloseFrame {
                    code: close_code::NORMAL,
                    reason: "left".into(),
                })))
                .await;
            closing_handshake(&mut socket).await;
        }
        SessionEnd::Closed(code, reason) | SessionEnd::Violation(code, reason) => {
            if code == ErrorCode::PROTOCOL_VIOLATION || code == ErrorCode::FRAME_TOO_LARGE {
                shared.metrics.protocol_errors.inc();
            }
            close(&mut socket, code, &reason).await;
        }
        SessionEnd::Lost(_) => {}
    }
    tracing::debug!("websocket session ended");
}

/// The WebSocket failed.
struct Lost;

/// Sends one message as one binary WebSocket message.
async fn send(socket: &mut WebSocket, message: &ControlMessage) -> Result<(), Lost> {
    let mut out = Vec::with_capacity(64);
    if let Err(e) = strait_protocol::encode_frame(message, usize::MAX, &mut out) {
        tracing::warn!(error = %e, kind = message.kind(), "control message not sent");
        return Ok(());
    }
    socket
        .send(Message::Binary(Bytes::from(out)))
        .await
        .map_err(|_| Lost)
}

/// Closes the WebSocket with the close code that matches `code` (the client was told why in an
/// `Error` already).
async fn close(socket: &mut WebSocket, code: ErrorCode, reason: &str) {
    let ws_code = if code == ErrorCode::FRAME_TOO_LARGE {
        close_code::SIZE
    } else if code == ErrorCode::GOING_AWAY || code == ErrorCode::REDIRECT {
        close_code::AWAY
    } else if code == ErrorCode::UNAVAILABLE {
        close_code::AGAIN
    } else {
        close_code::POLICY
    };
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: ws_code,
            reason: close_reason(reason).into(),
        })))
        .await;
    closing_handshake(socket).await;
}

/// How long a closing session waits for the client's close frame.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// After our close frame, waits (bounded) for the client's (RFC 6455 §7.1.1: the server closes
/// the TCP connection after the closing handshake), so that the client reads the `Error` and
/// the close frame before the connection goes.
async fn closing_handshake(socket: &mut WebSocket) {
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// A close frame's reason is at most 123 bytes (RFC 6455 §5.5: 125 minus the code).
fn close_reason(reason: &str) -> &str {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// Decodes one WebSocket message: exactly one whole frame.
fn decode(bytes: &[u8], max_frame_size: usize) -> Result<Decoded, (ErrorCode, String)> {
    strait_protocol::decode_single_frame(bytes, max_frame_size).map_err(|e| {
        let reason = match e {
            SingleFrameError::TrailingBytes { .. } => {
                "a WebSocket message holds more than one frame".into()
            }
            SingleFrameError::Incomplete => "a WebSocket message holds an incomplete frame".into(),
            _ => e.to_string(),
        };
        (e.code(), reason)
    })
}

/// What one WebSocket message gives the session core.
fn incoming(message: Option<Result<Message, axum::Error>>, max_frame: usize) -> Option<Incoming> {
    Some(match message {
        None | Some(Ok(Message::Close(_))) => Incoming::Finished,
        Some(Err(e)) => Incoming::Failed(e.to_string()),
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => return None,
        Some(Ok(Message::Text(_))) => Incoming::Refused(
            ErrorCode::PROTOCOL_VIOLATION,
            "text messages are not used: send each frame as a binary message".into(),
        ),
        Some(Ok(Message::Binary(bytes))) => match decode(&bytes, max_frame) {
            Ok(Decoded::Message(m)) => Incoming::Message(m),
            Ok(Decoded::UnknownKind(kind)) => Incoming::Unknown(kind),
            Err((code, reason)) => Incoming::Refused(code, reason),
        },
    })
}

async fn serve(
    shared: &Arc<SessionContext>,
    socket: &mut WebSocket,
    participant: ParticipantId,
    core: &mut SessionCore,
    control_tx: &mut Option<mpsc::Sender<ControlMessage>>,
    control: &mut mpsc::Receiver<ControlMessage>,
    worker: &mut Option<WorkerHandle>,
) -> Result<SessionEnd, Lost> {
    let config = &shared.config;
    let max_frame = config.limits.max_frame_size;
    let drain = shared.drain.clone();
    let mut draining = false;
    let mut moves = shared.cluster.moves(core.room().map(|r| r.0.as_str()));
    // Liveness: a WebSocket Ping every `keep_alive` (browsers answer on their own); the core
    // closes a session that sends nothing for `idle_timeout`, or that has not joined within
    // `hello_timeout`.
    let mut keep_alive = tokio::time::interval(config.quic.keep_alive);
    keep_alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // What the core asks for.
        while let Some(output) = core.poll_output() {
            match output {
                SessionOutput::Send(message) => send(socket, &message).await?,
                SessionOutput::Attach { token, .. } => {
                    let Some(token) = token else {
                        continue;
                    };
                    // The room may be served by another node of the cluster.
                    if let RoomGrant::Room(room) = &token.room {
                        match shared.cluster.place(&room.0).await {
                            Placed::Here => {}
                            Placed::Elsewhere(owner) => {
                                let to = RedirectPath::WebSocket;
                                core.handle_redirect(shared.redirect(&owner, to, Some(&token)));
                                continue;
                            }
                            Placed::Unavailable(reason) => {
                                core.handle_unavailable(reason);
                                continue;
                            }
                        }
                    }
                    let attached = match shared.media.seat(participant, &token) {
                        Ok(index) => {
                            let Some(control) = control_tx.take() else {
                                continue;
                            };
                            let handle = shared.media.worker(index).clone();
                            handle
                                .send(WorkerCommand::AttachSignaling {
                                    participant,
                                    token,
                                    control,
                                })
                                .await;
                            *worker = Some(handle);
                            Ok(Attached::New)
                        }
                        Err(e) => Err(e),
                    };
                    let facts = HelloFacts {
                        // TURN servers with credentials for this participant, when configured.
                        ice_servers: shared.turn.ice_servers(participant.0, SystemTime::now()),
                        max_datagram_size: 0,
                    };
                    core.handle_attached(
                        participant,
                        attached,
                        facts,
                        shared.credentials(),
                        Instant::now(),
                        SystemTime::now(),
                    );
                }
                SessionOutput::Hub(HubRequest::Request { message, .. }) => {
                    if let Some(refusal) = shared.place_join(core.token(), &message).await {
                        send(socket, &refusal).await?;
                        continue;
                    }
                    match shared.media.request(participant, message, None).await {
                        Ok((routed, command)) => {
                            if routed.is_some() {
                                *worker = routed;
                            }
                            if let Some(worker) = worker.as_ref() {
                                worker.send(command).await;
                            }
                        }
                        Err(refusal) => send(socket, &refusal).await?,
                    }
                }
                SessionOutput::Hub(HubRequest::Offer { sdp }) => {
                    if let Some(worker) = worker.as_ref() {
                        worker
                            .send(WorkerCommand::SignalingOffer { participant, sdp })
                            .await;
                    }
                }
                // The WebSocket path does not resume.
                SessionOutput::Locate { .. } => {}
                SessionOutput::End(end) => return Ok(end),
            }
        }
        let deadline = core.poll_timeout();
        tokio::select! {
            // Cancel-safe: `recv` is a stream's `next`.
            message = socket.recv() => {
                let now = Instant::now();
                core.handle_heard(now);
                if let Some(incoming) = incoming(message, max_frame) {
                    core.handle_message(incoming, shared.credentials(), now, SystemTime::now());
                }
            },
            out = control.recv() => match out {
                Some(message) => {
                    send(socket, &message).await?;
                    core.handle_outgoing(&message);
                }
                // The worker let go of the participant: the gateway is stopping, or the session
                // did not read its messages fast enough (its queue overflowed).
                None => core.handle_hub_gone(draining || drain.is_cancelled()),
            },
            _ = keep_alive.tick() => {
                socket.send(Message::Ping(Bytes::new())).await.map_err(|_| Lost)?;
            },
            () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now).into()),
                if deadline.is_some() => {
                    core.handle_timeout(shared.credentials(), Instant::now(), SystemTime::now());
                }
            to = moves.next() => {
                let go_away = shared.redirect(&to, RedirectPath::WebSocket, core.token());
                core.handle_moved(go_away);
            },
            () = drain.cancelled(), if !draining => {
                draining = true;
                match moves.pending() {
                    Some(to) => {
                        let path = RedirectPath::WebSocket;
                        core.handle_moved(shared.redirect(&to, path, core.token()));
                    }
                    None => core.handle_drain(),
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_must_hold_exactly_one_frame() {
        let ping = ControlMessage::Ping(strait_protocol::Ping { nonce: 3 });
        let mut one = Vec::new();
        strait_protocol::encode_frame(&ping, usize::MAX, &mut one).unwrap();
        assert_eq!(decode(&one, 1024), Ok(Decoded::Message(ping.clone())));
        let mut two = one.clone();
        two.extend_from_slice(&one);
        assert_eq!(
            decode(&two, 1024).unwrap_err().0,
            ErrorCode::PROTOCOL_VIOLATION
        );
        assert_eq!(
            decode(&one[..one.len() - 1], 1024).unwrap_err().0,
            ErrorCode::PROTOCOL_VIOLATION
        );
        // A length prefix over the limit is refused from the prefix alone.
        assert_eq!(
            decode(&[0x44, 0x00], 16).unwrap_err().0,
            ErrorCode::FRAME_TOO_LARGE
        );
    }

    #[test]
    fn close_reasons_fit_a_close_frame() {
        let long = "é".repeat(100);
        let cut = close_reason(&long);
        assert!(cut.len() <= 123);
        assert!(long.starts_with(cut));
        assert_eq!(close_reason("short"), "short");
    }
}
