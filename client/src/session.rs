//! [`Client::connect`] and the [`Session`] handle.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use strait_protocol::datagram::{self, DatagramControl, DatagramError};
use strait_protocol::limits::{DEFAULT_MAX_FRAME_SIZE, HARD_MAX_FRAME_SIZE, MAX_LAYERS};
use strait_protocol::{
    ClientHello, ControlMessage, ErrorCode, IceServer, Join, KeyframeRequest, Layer, Leave,
    MediaId, PROTOCOL_VERSION, ParticipantId, ParticipantInfo, Publish, RequestId, RoomId,
    SessionLimits, SetLayerPreference, SetMute, Subscribe, TrackId, TrackInfo, Unpublish,
    Unsubscribe, encode_frame,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::Instrument;

use crate::config::ClientConfig;
use crate::driver::{
    Command, Driver, PendingGuard, PingGuard, handshake, hello_info, subscription,
};
use crate::error::{ClientError, SendError};
use crate::shared::{OutFrame, PendingRequest, RequestKind, Shared, lock, run_writer};
use crate::stats::{SessionStats, bump};
use crate::transport::{Connector, Target};
use crate::types::{
    JoinedRoom, MediaPacket, PublishSpec, PublishedTrack, SessionEvent, SubscribeOptions,
    Subscription,
};

/// Redirects (`GoAway` with code `REDIRECT`) that [`Client::connect`] follows before it gives
/// up with [`ClientError::Redirected`].
pub const MAX_REDIRECTS: usize = 3;

/// Opens sessions.
#[derive(Debug)]
#[non_exhaustive]
pub struct Client;

impl Client {
    /// Connects, opens the control stream, sends `ClientHello` and waits for `ServerHello`
    /// (all bounded by `config.hello_timeout`).
    ///
    /// Each session owns its UDP socket, so that [`Session::rebind`] moves only this session.
    pub async fn connect(config: ClientConfig) -> Result<Session, ClientError> {
        Self::open(config, None).await.map(|(session, _)| session)
    }

    /// Like [`connect`](Self::connect), with `Join` sent right behind `ClientHello` in the same
    /// write (a one-round-trip join, section 7.1 of the protocol), and waits for `Joined` too.
    pub async fn connect_and_join(
        config: ClientConfig,
        room: &str,
    ) -> Result<(Session, JoinedRoom), ClientError> {
        let (session, joined) = Self::open(config, Some(room)).await?;
        let reply = joined.expect("a join was pipelined");
        let answer = session.await_answer(RequestId(1), reply, "Join").await?;
        match answer {
            ControlMessage::Joined(j) => Ok((
                session,
                JoinedRoom {
                    room: j.room,
                    me: j.me,
                },
            )),
            other => Err(unexpected("Join", &other)),
        }
    }

    async fn open(
        config: ClientConfig,
        join: Option<&str>,
    ) -> Result<(Session, Option<crate::driver::Reply>), ClientError> {
        config.validate()?;
        let connector = Connector::new(&config)?;
        let target = Target {
            addr: config.server,
            name: config.tls_name(),
        };
        // Request id 1 is the pipelined join; the session's counter starts after it.
        let mut extra = Vec::new();
        if let Some(room) = join {
            RoomId::validate(room).map_err(ClientError::InvalidArgument)?;
            let join = ControlMessage::Join(Join {
                request: RequestId(1),
                room: RoomId(room.to_owned()),
                name: config.name.clone(),
            });
            encode_frame(&join, DEFAULT_MAX_FRAME_SIZE, &mut extra)?;
        }
        let hello = ClientHello {
            version: PROTOCOL_VERSION,
            token: config.token.clone(),
            resume: None,
            agent: config.agent.clone(),
        };
        let mut config = config;
        let mut connector = connector;
        let mut target = target;
        let mut hello = hello;
        let mut hops = 0;
        let (conn, hs) = loop {
            let work = async {
                let conn = connector.connect(&target).await?;
                let hs = handshake(&conn, hello.clone(), &extra, config.max_frame_size).await?;
                Ok::<_, ClientError>((conn, hs))
            };
            match tokio::time::timeout(config.hello_timeout, work)
                .await
                .map_err(|_| ClientError::Timeout("ServerHello"))?
            {
                Ok(done) => break done,
                // Another node of the cluster serves the session: go there, a few times at most.
                Err(ClientError::Redirected { redirect }) if hops < MAX_REDIRECTS => {
                    let Some(next) = config.follow(&redirect) else {
                        return Err(ClientError::Redirected { redirect });
                    };
                    hops += 1;
                    tracing::info!(to = ?redirect.redirect, hops, "following a redirect");
                    config = next;
                    connector = Connector::new(&config)?;
                    target = Target {
                        addr: config.server,
                        name: config.tls_name(),
                    };
                    hello.token.clone_from(&config.token);
                }
                Err(e) => return Err(e),
            }
        };

        let participant = hs.hello.participant;
        let (frames_tx, frames_rx) = mpsc::channel(config.control_queue);
        let (commands_tx, commands_rx) = mpsc::channel(8);
        let seed = config.rng_seed;
        let shared = Arc::new(Shared::new(
            config,
            connector,
            conn.clone(),
            hello_info(&hs.hello),
            frames_tx,
        ));
        shared.next_request.store(2, Ordering::Relaxed);
        for _ in 0..hs.unknown {
            bump(&shared.counters.unknown_messages);
        }
        let reply = join.map(|_| {
            let (tx, rx) = oneshot::channel();
            lock(&shared.pending).requests.insert(
                RequestId(1),
                PendingRequest {
                    kind: RequestKind::Join,
                    reply: tx,
                },
            );
            rx
        });
        let span = tracing::info_span!("session", participant = participant.0);
        shared.hand_over(0, hs.send);
        let writer = tokio::spawn(run_writer(shared.clone(), frames_rx).instrument(span.clone()));
        let driver = Driver {
            shared: shared.clone(),
            commands: commands_rx,
            conn,
            recv: hs.recv,
            reader: hs.reader,
            backlog: hs.backlog,
            target,
            writer,
            rng: Driver::rng(seed),
            last_error: None,
            redirect: None,
            moving: None,
        };
        tokio::spawn(driver.run().instrument(span));
        tracing::info!(participant = participant.0, "session established");
        Ok((
            Session {
                shared,
                commands: commands_tx,
            },
            reply,
        ))
    }
}

/// One session with the gateway. Methods take `&self`: share it with an `Arc` between the task
/// that sends media and the one that receives it. Dropping it closes the session (code `NONE`).
///
/// Request methods (`join`, `publish`…) are cancel-safe in the sense that dropping one never
/// corrupts the control stream: the frame is either queued whole or not at all; the request may
/// still reach the server.
#[derive(Debug)]
pub struct Session {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
}

fn unexpected(expected: &'static str, got: &ControlMessage) -> ClientError {
    ClientError::UnexpectedAnswer {
        expected,
        kind: got.kind(),
    }
}

impl Session {
    // ----- getters -----

    /// This participant's id (issued in `ServerHello`; a new one after a refused resume).
    #[must_use]
    pub fn participant(&self) -> ParticipantId {
        lock(&self.shared.hello).participant
    }

    /// The limits the server announced.
    #[must_use]
    pub fn limits(&self) -> SessionLimits {
        lock(&self.shared.hello).limits
    }

    /// STUN/TURN servers from `ServerHello` (for a WebRTC fallback).
    #[must_use]
    pub fn ice_servers(&self) -> Vec<IceServer> {
        lock(&self.shared.hello).ice_servers.clone()
    }

    /// `ServerHello.max_datagram_size`: the server's value at hello time.
    #[must_use]
    pub fn server_max_datagram_size(&self) -> u32 {
        lock(&self.shared.hello).max_datagram_size
    }

    /// The largest datagram the connection accepts now (it changes with path-MTU discovery);
    /// `None` while reconnecting.
    #[must_use]
    pub fn max_datagram_size(&self) -> Option<usize> {
        self.shared.conn().and_then(|c| c.max_datagram_size())
    }

    /// The largest RTP packet that fits one datagram on `media` now.
    #[must_use]
    pub fn max_rtp_size(&self, media: MediaId) -> Option<usize> {
        self.max_datagram_size()
            .map(|max| datagram::max_rtp_len(max, media))
    }

    /// The room, once joined.
    #[must_use]
    pub fn room(&self) -> Option<JoinedRoom> {
        lock(&self.shared.state).room.clone()
    }

    /// The other participants in the room, as last announced.
    #[must_use]
    pub fn participants(&self) -> Vec<ParticipantInfo> {
        lock(&self.shared.state)
            .participants
            .values()
            .cloned()
            .collect()
    }

    /// The others' tracks in the room, as last announced.
    #[must_use]
    pub fn tracks(&self) -> Vec<TrackInfo> {
        lock(&self.shared.state).tracks.values().cloned().collect()
    }

    /// A watch that changes after every control message the session applies to its room
    /// state ([`participants`](Self::participants), [`tracks`](Self::tracks), subscriptions).
    /// Unlike [`next_event`](Self::next_event) it takes nothing from anyone: take one, read the
    /// state, and `changed().await` before reading it again.
    #[must_use]
    pub fn room_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.room_changes.subscribe()
    }

    /// This session's published tracks.
    #[must_use]
    pub fn published(&self) -> Vec<PublishedTrack> {
        lock(&self.shared.state)
            .published
            .values()
            .cloned()
            .collect()
    }

    /// This session's subscriptions.
    #[must_use]
    pub fn subscriptions(&self) -> Vec<Subscription> {
        lock(&self.shared.state)
            .subscriptions
            .values()
            .copied()
            .collect()
    }

    /// The subscription to `track`, if any.
    #[must_use]
    pub fn subscription(&self, track: TrackId) -> Option<Subscription> {
        lock(&self.shared.state).subscriptions.get(&track).copied()
    }

    /// The server's address as the connection sees it; `None` while reconnecting.
    #[must_use]
    pub fn remote_address(&self) -> Option<SocketAddr> {
        self.shared.conn().map(|c| c.remote_address())
    }

    /// The local UDP address.
    pub fn local_address(&self) -> Result<SocketAddr, ClientError> {
        self.shared.connector.local_addr()
    }

    /// The transport's round-trip estimate; `None` while reconnecting.
    #[must_use]
    pub fn transport_rtt(&self) -> Option<Duration> {
        self.shared.conn().map(|c| c.rtt())
    }

    /// The session's counters.
    #[must_use]
    pub fn stats(&self) -> SessionStats {
        self.shared
            .counters
            .snapshot(self.shared.media.dropped(), self.shared.events.dropped())
    }

    /// Whether the session is over.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.shared.terminal_error().is_some()
    }

    // ----- requests -----

    /// Enters `room` (the one the token grants). Participants and tracks already there follow
    /// as events.
    pub async fn join(&self, room: &str) -> Result<JoinedRoom, ClientError> {
        RoomId::validate(room).map_err(ClientError::InvalidArgument)?;
        let name = self.shared.config.name.clone();
        let answer = self
            .request(RequestKind::Join, |request| {
                ControlMessage::Join(Join {
                    request,
                    room: RoomId(room.to_owned()),
                    name,
                })
            })
            .await?;
        match answer {
            ControlMessage::Joined(j) => Ok(JoinedRoom {
                room: j.room,
                me: j.me,
            }),
            other => Err(unexpected("Join", &other)),
        }
    }

    /// Announces a track; the session picks a fresh media id for each layer.
    pub async fn publish(&self, spec: PublishSpec) -> Result<PublishedTrack, ClientError> {
        if spec.layers.is_empty() || spec.layers.len() > MAX_LAYERS {
            return Err(ClientError::InvalidArgument("a track has 1 to 3 layers"));
        }
        let media: Vec<MediaId> = spec.layers.iter().map(|_| self.media_id()).collect();
        let layers = spec
            .layers
            .iter()
            .zip(&media)
            .map(|(l, m)| Layer {
                media: *m,
                max_bitrate: l.max_bitrate,
                width: l.width,
                height: l.height,
            })
            .collect();
        let publish = Publish {
            request: RequestId(0),
            kind: spec.kind,
            codec: spec.codec,
            source: spec.source,
            layers,
            muted: spec.muted,
        };
        let kind = RequestKind::Publish(Box::new(publish.clone()));
        let answer = self
            .request(kind, |request| {
                ControlMessage::Publish(Publish { request, ..publish })
            })
            .await?;
        match answer {
            ControlMessage::Published(p) => Ok(PublishedTrack {
                track: p.track,
                media,
                muted: spec.muted,
            }),
            other => Err(unexpected("Publish", &other)),
        }
    }

    /// A media id no live layer of this session uses: a counter (ids below 64 take one byte on
    /// the wire), skipping ids still in use after it wraps.
    fn media_id(&self) -> MediaId {
        loop {
            let id = MediaId(self.shared.next_media.fetch_add(1, Ordering::Relaxed));
            if lock(&self.shared.state).published_media(id).is_none() {
                return id;
            }
        }
    }

    /// Stops publishing `track`.
    pub async fn unpublish(&self, track: TrackId) -> Result<(), ClientError> {
        self.ack(RequestKind::Unpublish { track }, |request| {
            ControlMessage::Unpublish(Unpublish { request, track })
        })
        .await
    }

    /// Receives `track`, at most layer `max_layer` (`None`: the best available), at the priority
    /// the server gives it by default. [`Session::subscribe_with`] names a priority.
    pub async fn subscribe(
        &self,
        track: TrackId,
        max_layer: Option<u8>,
    ) -> Result<Subscription, ClientError> {
        self.subscribe_with(
            track,
            SubscribeOptions {
                max_layer,
                priority: None,
            },
        )
        .await
    }

    /// Receives `track` as `options` say: at most layer `options.max_layer`, and at priority
    /// `options.priority` when this session's link cannot carry every video it receives (the
    /// server pauses the lowest first, [`SessionEvent::TrackPaused`]).
    ///
    /// The subscription may be paused from its start: then a [`SessionEvent::TrackPaused`]
    /// follows right after this returns (which returns what `Subscribed` said;
    /// [`Session::subscription`] has the latest state).
    pub async fn subscribe_with(
        &self,
        track: TrackId,
        options: SubscribeOptions,
    ) -> Result<Subscription, ClientError> {
        let answer = self
            .request(RequestKind::Subscribe, |request| {
                ControlMessage::Subscribe(Subscribe {
                    request,
                    track,
                    max_layer: options.max_layer,
                    priority: options.priority,
                })
            })
            .await?;
        match answer {
            ControlMessage::Subscribed(s) => Ok(subscription(&s)),
            other => Err(unexpected("Subscribe", &other)),
        }
    }

    /// Stops receiving `track`.
    pub async fn unsubscribe(&self, track: TrackId) -> Result<(), ClientError> {
        self.ack(RequestKind::Unsubscribe { track }, |request| {
            ControlMessage::Unsubscribe(Unsubscribe { request, track })
        })
        .await
    }

    /// Caps the layer forwarded on a subscription (`None`: the best available). Like the
    /// protocol's `SetLayerPreference` without a priority, it also returns the subscription to
    /// the server's default priority; [`Session::set_layer_preference_with`] names one.
    pub async fn set_layer_preference(
        &self,
        track: TrackId,
        max_layer: Option<u8>,
    ) -> Result<(), ClientError> {
        self.set_layer_preference_with(
            track,
            SubscribeOptions {
                max_layer,
                priority: None,
            },
        )
        .await
    }

    /// Replaces what a subscription wants: its layer cap and its priority (`None` in either:
    /// the best available layer, the server's default priority).
    pub async fn set_layer_preference_with(
        &self,
        track: TrackId,
        options: SubscribeOptions,
    ) -> Result<(), ClientError> {
        self.ack(RequestKind::SetLayerPreference, |request| {
            ControlMessage::SetLayerPreference(SetLayerPreference {
                request,
                track,
                max_layer: options.max_layer,
                priority: options.priority,
            })
        })
        .await
    }

    /// Mutes or unmutes one's own track.
    pub async fn set_mute(&self, track: TrackId, muted: bool) -> Result<(), ClientError> {
        self.ack(RequestKind::SetMute { track, muted }, |request| {
            ControlMessage::SetMute(SetMute {
                request,
                track,
                muted,
            })
        })
        .await
    }

    /// Leaves the room; the server acknowledges and the session ends (code `NONE`).
    pub async fn leave(&self) -> Result<(), ClientError> {
        self.ack(RequestKind::Leave, |request| {
            ControlMessage::Leave(Leave { request })
        })
        .await?;
        self.close().await;
        Ok(())
    }

    /// Asks for a keyframe on a subscribed track, on the control stream (`layer: None` = every
    /// layer, as the protocol defines it). Waits only for the frame to be queued.
    pub async fn request_keyframe(
        &self,
        track: TrackId,
        layer: Option<u8>,
    ) -> Result<(), ClientError> {
        let message = ControlMessage::KeyframeRequest(KeyframeRequest { track, layer });
        self.send_frame(&message).await
    }

    /// Asks for a keyframe on a subscription's media id with a control datagram (lower latency,
    /// may be lost).
    pub fn request_keyframe_datagram(&self, media: MediaId) -> Result<(), SendError> {
        self.send_control_datagram(&DatagramControl::KeyframeRequest { media })
    }

    /// Measures the round trip with a datagram `Ping` (bounded by `request_timeout`; datagrams
    /// can be lost, so a timeout does not mean the session is gone).
    pub async fn ping(&self) -> Result<Duration, ClientError> {
        let shared = &*self.shared;
        let seq = shared.next_ping.fetch_add(1, Ordering::Relaxed);
        let sent = Instant::now();
        let timestamp_us =
            u64::try_from(sent.duration_since(shared.started).as_micros()).unwrap_or(u64::MAX);
        let (tx, rx) = oneshot::channel();
        lock(&shared.pings).insert(seq, tx);
        let _guard = PingGuard { shared, seq };
        self.send_control_datagram(&DatagramControl::Ping { seq, timestamp_us })?;
        match tokio::time::timeout(shared.config.request_timeout, rx).await {
            Ok(Ok(received)) => Ok(received.duration_since(sent)),
            Ok(Err(_)) => Err(self.ended()),
            Err(_) => Err(ClientError::Timeout("Pong")),
        }
    }

    // ----- media -----

    /// Sends one RTP packet on `media` (a layer of a published track) as a media datagram.
    ///
    /// Never blocks and never drops silently: a packet that does not fit one datagram is refused
    /// with [`SendError::TooLarge`] and counted; while reconnecting it is refused with
    /// [`SendError::NotConnected`]. Once queued, the QUIC stack may drop it under congestion
    /// (oldest queued datagram first), as any datagram.
    pub fn send_rtp(&self, media: MediaId, rtp: &[u8]) -> Result<(), SendError> {
        datagram::check_rtp(rtp).map_err(|e| match e {
            DatagramError::InvalidRtp(why) => SendError::InvalidRtp(why),
            _ => SendError::InvalidRtp("invalid packet"),
        })?;
        let shared = &*self.shared;
        let guard = shared.conn.read().unwrap_or_else(|p| p.into_inner());
        let Some(conn) = guard.as_ref() else {
            drop(guard);
            return Err(self.not_connected());
        };
        let max = conn
            .max_datagram_size()
            .map(|max| datagram::max_rtp_len(max, media))
            .ok_or(SendError::Unsupported)?;
        if rtp.len() > max {
            bump(&shared.counters.send_too_large);
            return Err(SendError::TooLarge {
                len: rtp.len(),
                max,
            });
        }
        let mut buf = BytesMut::zeroed(datagram::media_header_len(media) + rtp.len());
        datagram::write_media_datagram(media, rtp, &mut buf)
            .map_err(|_| SendError::InvalidRtp("media id"))?;
        match conn.send_datagram(buf.freeze()) {
            Ok(()) => {
                bump(&shared.counters.media_sent);
                Ok(())
            }
            // The path MTU fell between the check and the send.
            Err(SendError::TooLarge { max: dgram_max, .. }) => {
                bump(&shared.counters.send_too_large);
                Err(SendError::TooLarge {
                    len: rtp.len(),
                    max: datagram::max_rtp_len(dgram_max, media),
                })
            }
            Err(SendError::NotConnected) => {
                drop(guard);
                Err(self.not_connected())
            }
            Err(e) => Err(e),
        }
    }

    fn not_connected(&self) -> SendError {
        if self.shared.terminal_error().is_some() {
            SendError::Closed
        } else {
            bump(&self.shared.counters.send_not_connected);
            SendError::NotConnected
        }
    }

    /// Waits for the next received RTP packet; `None` once the session is over and the queue
    /// drained. The queue holds `config.media_queue` packets; when full the oldest is dropped and
    /// counted in [`SessionStats::media_dropped`]. Cancel-safe.
    pub async fn recv_media(&self) -> Option<MediaPacket> {
        self.shared.media.pop().await
    }

    /// Takes a received RTP packet if one is waiting.
    #[must_use]
    pub fn try_recv_media(&self) -> Option<MediaPacket> {
        self.shared.media.try_pop()
    }

    /// Waits for the next event; `None` after [`SessionEvent::Closed`]. Cancel-safe.
    pub async fn next_event(&self) -> Option<SessionEvent> {
        if let Some(lagged) = self.lagged() {
            return Some(lagged);
        }
        self.shared.events.pop().await
    }

    /// Takes an event if one is waiting.
    #[must_use]
    pub fn try_next_event(&self) -> Option<SessionEvent> {
        self.lagged().or_else(|| self.shared.events.try_pop())
    }

    fn lagged(&self) -> Option<SessionEvent> {
        let dropped = self.shared.events.dropped();
        let reported = self.shared.events_reported.swap(dropped, Ordering::Relaxed);
        (dropped > reported).then(|| SessionEvent::EventsDropped {
            count: dropped - reported,
        })
    }

    // ----- connection -----

    /// Moves the session to a new UDP socket on the same local IP (a new port), the way a phone
    /// changes network; QUIC migrates the connection. Returns the new local address.
    /// Raw QUIC only ([`ClientError::Unsupported`] on WebTransport).
    pub fn rebind(&self) -> Result<SocketAddr, ClientError> {
        self.rebind_inner(None)
    }

    /// Like [`rebind`](Self::rebind), to a given local address.
    pub fn rebind_to(&self, local: SocketAddr) -> Result<SocketAddr, ClientError> {
        self.rebind_inner(Some(local))
    }

    fn rebind_inner(&self, local: Option<SocketAddr>) -> Result<SocketAddr, ClientError> {
        let addr = self.shared.connector.rebind(local)?;
        bump(&self.shared.counters.rebinds);
        // Send something at once so that the server sees the new path without waiting for the
        // next keep-alive.
        let _ = self.send_control_datagram(&DatagramControl::Ping {
            seq: 0,
            timestamp_us: 0,
        });
        tracing::debug!(%addr, "rebound");
        Ok(addr)
    }

    /// Moves the session to a new connection now, presenting the resume token (the old
    /// connection is closed once the new one is up). Completion is reported by
    /// [`SessionEvent::Resumed`] or [`SessionEvent::ResumeFailed`].
    pub async fn resume_now(&self) -> Result<(), ClientError> {
        self.commands
            .send(Command::ResumeNow)
            .await
            .map_err(|_| self.ended())
    }

    /// Closes the session with code `NONE` and waits for its task to finish.
    pub async fn close(&self) {
        self.close_with(ErrorCode::NONE, "closed").await;
    }

    /// Closes the session with `code` and `reason` and waits for its task to finish.
    pub async fn close_with(&self, code: ErrorCode, reason: &str) {
        let _ = self
            .commands
            .send(Command::Close {
                code,
                reason: reason.to_owned(),
            })
            .await;
        self.closed().await;
    }

    /// Waits until the session is over and says why. Cancel-safe.
    pub async fn closed(&self) -> ClientError {
        let mut rx = self.shared.terminal.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone().unwrap_or_else(unreachable_closed),
            Err(_) => unreachable_closed(),
        }
    }

    // ----- internals -----

    fn ended(&self) -> ClientError {
        self.shared.ended()
    }

    fn send_control_datagram(&self, control: &DatagramControl) -> Result<(), SendError> {
        let mut out = Vec::with_capacity(24);
        datagram::encode_control_datagram(control, &mut out)
            .map_err(|_| SendError::InvalidRtp("control datagram"))?;
        match self.shared.conn() {
            Some(conn) => conn.send_datagram(Bytes::from(out)),
            None => Err(self.not_connected()),
        }
    }

    fn max_frame(&self) -> usize {
        self.shared.max_frame()
    }

    /// Queues a frame that expects no answer.
    async fn send_frame(&self, message: &ControlMessage) -> Result<(), ClientError> {
        let mut wire = Vec::with_capacity(32);
        encode_frame(message, self.max_frame(), &mut wire)?;
        let epoch = {
            let pending = lock(&self.shared.pending);
            if let Some(e) = &pending.closed {
                return Err(e.clone());
            }
            pending.epoch
        };
        self.shared
            .frames
            .send(OutFrame {
                epoch,
                bytes: Bytes::from(wire),
            })
            .await
            .map_err(|_| self.ended())
    }

    async fn ack(
        &self,
        kind: RequestKind,
        build: impl FnOnce(RequestId) -> ControlMessage,
    ) -> Result<(), ClientError> {
        let name = kind.name();
        match self.request(kind, build).await? {
            ControlMessage::Ack(_) => Ok(()),
            other => Err(unexpected(name, &other)),
        }
    }

    /// Sends a request and waits for its answer (bounded by `request_timeout`).
    async fn request(
        &self,
        kind: RequestKind,
        build: impl FnOnce(RequestId) -> ControlMessage,
    ) -> Result<ControlMessage, ClientError> {
        self.shared.request(kind, build).await
    }

    async fn await_answer(
        &self,
        id: RequestId,
        reply: crate::driver::Reply,
        name: &'static str,
    ) -> Result<ControlMessage, ClientError> {
        self.shared.await_answer(id, reply, name).await
    }
}

/// Requests, for the [`Session`] handle and for the driver's own rejoin alike.
impl Shared {
    pub(crate) fn ended(&self) -> ClientError {
        self.terminal_error().unwrap_or_else(unreachable_closed)
    }

    pub(crate) fn max_frame(&self) -> usize {
        let announced = lock(&self.hello).limits.max_frame_size;
        usize::try_from(announced)
            .unwrap_or(HARD_MAX_FRAME_SIZE)
            .min(HARD_MAX_FRAME_SIZE)
    }

    /// Sends a request and waits for its answer (bounded by `request_timeout`).
    pub(crate) async fn request(
        &self,
        kind: RequestKind,
        build: impl FnOnce(RequestId) -> ControlMessage,
    ) -> Result<ControlMessage, ClientError> {
        let id = self.request_id();
        let name = kind.name();
        let mut wire = Vec::with_capacity(64);
        encode_frame(&build(id), self.max_frame(), &mut wire)?;
        let (tx, rx) = oneshot::channel();
        let epoch = {
            let mut pending = lock(&self.pending);
            if let Some(e) = &pending.closed {
                return Err(e.clone());
            }
            pending
                .requests
                .insert(id, PendingRequest { kind, reply: tx });
            pending.epoch
        };
        let guard = PendingGuard { shared: self, id };
        self.frames
            .send(OutFrame {
                epoch,
                bytes: Bytes::from(wire),
            })
            .await
            .map_err(|_| self.ended())?;
        let answer = self.await_answer(id, rx, name).await;
        drop(guard);
        answer
    }

    pub(crate) async fn await_answer(
        &self,
        id: RequestId,
        reply: crate::driver::Reply,
        name: &'static str,
    ) -> Result<ControlMessage, ClientError> {
        let result = tokio::time::timeout(self.config.request_timeout, reply).await;
        match result {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(self.ended()),
            Err(_) => {
                lock(&self.pending).requests.remove(&id);
                tracing::debug!(request = id.0, name, "request timed out");
                Err(ClientError::Timeout("an answer"))
            }
        }
    }
}

fn unreachable_closed() -> ClientError {
    ClientError::Closed {
        code: ErrorCode::NONE,
        reason: "session task ended".into(),
    }
}
