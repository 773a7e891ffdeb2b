//! What the [`crate::Session`] handle, the driver task and the writer task share.
//!
//! Locks here are `std` mutexes held for a few map operations and never across an `.await`.
//!
//! **Epochs.** Every connection of a session has an epoch; it moves on when a connection is lost
//! (or left for another). At that moment every request in flight fails with
//! [`ClientError::ConnectionLost`] — its answer can no longer arrive — and frames still queued for
//! the old connection are discarded by the writer, so a request whose caller was told it failed
//! is never sent later on the new connection. Requests made while reconnecting carry the new
//! epoch and wait in the control queue until the new control stream is handed to the writer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use bytes::Bytes;
use strait_protocol::{
    ControlMessage, IceServer, MediaId, ParticipantId, ParticipantInfo, Publish, RequestId,
    ResumeToken, SessionLimits, TrackId, TrackInfo,
};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::queue::DropOldest;
use crate::stats::Counters;
use crate::transport::{Conn, Connector, SendHalf};
use crate::types::{JoinedRoom, MediaPacket, PublishedTrack, SessionEvent, Subscription};

/// Locks a mutex, going on after a panic elsewhere (the data is plain maps, always consistent).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What `ServerHello` said, updated on every resume.
#[derive(Debug, Clone)]
pub(crate) struct HelloInfo {
    pub(crate) participant: ParticipantId,
    pub(crate) resume_token: ResumeToken,
    pub(crate) limits: SessionLimits,
    pub(crate) max_datagram_size: u32,
    pub(crate) ice_servers: Vec<IceServer>,
}

/// The session's view of its room, kept up to date by the driver.
#[derive(Debug, Default)]
pub(crate) struct RoomState {
    pub(crate) room: Option<JoinedRoom>,
    pub(crate) participants: HashMap<ParticipantId, ParticipantInfo>,
    pub(crate) tracks: HashMap<TrackId, TrackInfo>,
    pub(crate) published: HashMap<TrackId, PublishedTrack>,
    /// How each published track was announced (request id aside), to announce it again after a
    /// rejoin with the same media ids.
    pub(crate) announced: HashMap<TrackId, Publish>,
    pub(crate) subscriptions: HashMap<TrackId, Subscription>,
}

impl RoomState {
    /// The published track and layer a media id belongs to.
    pub(crate) fn published_media(&self, media: MediaId) -> Option<(TrackId, u8)> {
        self.published.values().find_map(|p| {
            let layer = p.media.iter().position(|m| *m == media)?;
            Some((p.track, u8::try_from(layer).ok()?))
        })
    }
}

/// What a request was, so that the driver can update the state when its answer arrives.
#[derive(Debug, Clone)]
pub(crate) enum RequestKind {
    Join,
    Leave,
    /// The `Publish` as sent: its layers' media ids, and what to send again after a rejoin.
    Publish(Box<Publish>),
    Unpublish {
        track: TrackId,
    },
    Subscribe,
    Unsubscribe {
        track: TrackId,
    },
    SetLayerPreference,
    SetMute {
        track: TrackId,
        muted: bool,
    },
}

impl RequestKind {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            RequestKind::Join => "Join",
            RequestKind::Leave => "Leave",
            RequestKind::Publish(_) => "Publish",
            RequestKind::Unpublish { .. } => "Unpublish",
            RequestKind::Subscribe => "Subscribe",
            RequestKind::Unsubscribe { .. } => "Unsubscribe",
            RequestKind::SetLayerPreference => "SetLayerPreference",
            RequestKind::SetMute { .. } => "SetMute",
        }
    }
}

pub(crate) type Answer = Result<ControlMessage, ClientError>;

#[derive(Debug)]
pub(crate) struct PendingRequest {
    pub(crate) kind: RequestKind,
    pub(crate) reply: oneshot::Sender<Answer>,
}

#[derive(Debug, Default)]
pub(crate) struct Pending {
    pub(crate) epoch: u64,
    pub(crate) requests: HashMap<RequestId, PendingRequest>,
    /// Set when the session is over: no request is accepted any more.
    pub(crate) closed: Option<ClientError>,
}

/// One encoded control frame on its way to the writer.
#[derive(Debug)]
pub(crate) struct OutFrame {
    pub(crate) epoch: u64,
    pub(crate) bytes: Bytes,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: ClientConfig,
    pub(crate) connector: Connector,
    /// The live connection; `None` while reconnecting and after the end.
    pub(crate) conn: RwLock<Option<Conn>>,
    pub(crate) hello: Mutex<HelloInfo>,
    pub(crate) state: Mutex<RoomState>,
    pub(crate) pending: Mutex<Pending>,
    /// Datagram pings waiting for their pong, by sequence number.
    pub(crate) pings: Mutex<HashMap<u32, oneshot::Sender<Instant>>>,
    /// Control frames for the writer task (bounded: requests wait when it is full).
    pub(crate) frames: mpsc::Sender<OutFrame>,
    /// A new control stream for the writer (a slot of one: the newest wins).
    pub(crate) handoff: Mutex<Option<(u64, SendHalf)>>,
    pub(crate) handoff_ready: Notify,
    pub(crate) media: DropOldest<MediaPacket>,
    pub(crate) events: DropOldest<SessionEvent>,
    /// Dropped events already reported with `EventsDropped`.
    pub(crate) events_reported: AtomicU64,
    pub(crate) counters: Counters,
    pub(crate) next_request: AtomicU32,
    pub(crate) next_media: AtomicU32,
    pub(crate) next_ping: AtomicU32,
    /// Epoch of datagram ping timestamps.
    pub(crate) started: Instant,
    /// `Some` once the session is over, with why.
    pub(crate) terminal: watch::Sender<Option<ClientError>>,
    /// Counts control messages applied to the room state (participants, tracks,
    /// subscriptions), so that a caller can wait for the state to change.
    pub(crate) room_changes: watch::Sender<u64>,
}

impl Shared {
    pub(crate) fn new(
        config: ClientConfig,
        connector: Connector,
        conn: Conn,
        hello: HelloInfo,
        frames: mpsc::Sender<OutFrame>,
    ) -> Self {
        let (terminal, _) = watch::channel(None);
        Self {
            media: DropOldest::new(config.media_queue),
            events: DropOldest::new(config.event_queue),
            config,
            connector,
            conn: RwLock::new(Some(conn)),
            hello: Mutex::new(hello),
            state: Mutex::new(RoomState::default()),
            pending: Mutex::new(Pending::default()),
            pings: Mutex::new(HashMap::new()),
            frames,
            handoff: Mutex::new(None),
            handoff_ready: Notify::new(),
            events_reported: AtomicU64::new(0),
            counters: Counters::default(),
            next_request: AtomicU32::new(1),
            next_media: AtomicU32::new(1),
            next_ping: AtomicU32::new(1),
            started: Instant::now(),
            terminal,
            room_changes: watch::channel(0).0,
        }
    }

    /// A fresh non-zero request id (0 marks unsolicited server messages).
    pub(crate) fn request_id(&self) -> RequestId {
        loop {
            let id = self.next_request.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return RequestId(id);
            }
        }
    }

    /// The current connection, if any.
    pub(crate) fn conn(&self) -> Option<Conn> {
        self.conn.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set_conn(&self, conn: Option<Conn>) {
        *self.conn.write().unwrap_or_else(|p| p.into_inner()) = conn;
    }

    /// The error the session ended with, if it has.
    pub(crate) fn terminal_error(&self) -> Option<ClientError> {
        self.terminal.borrow().clone()
    }

    /// Hands a new control stream to the writer.
    pub(crate) fn hand_over(&self, epoch: u64, send: SendHalf) {
        *lock(&self.handoff) = Some((epoch, send));
        self.handoff_ready.notify_one();
    }

    /// Moves to a new epoch: every request in flight fails with `error`.
    pub(crate) fn next_epoch(&self, error: &ClientError) -> u64 {
        let mut pending = lock(&self.pending);
        pending.epoch += 1;
        for (_, request) in pending.requests.drain() {
            let _ = request.reply.send(Err(error.clone()));
        }
        pending.epoch
    }

    pub(crate) fn emit(&self, event: SessionEvent) {
        self.events.push(event);
    }
}

/// The writer task: writes control frames on the current control stream, in order.
///
/// Only this task writes to the stream, so a caller giving up on a request (dropping its future)
/// can never leave half a frame behind. Frames of an older epoch are discarded; a frame of a newer
/// epoch waits for its stream.
pub(crate) async fn run_writer(shared: Arc<Shared>, mut frames: mpsc::Receiver<OutFrame>) {
    let mut stream: Option<(u64, SendHalf)> = None;
    let mut held: Option<OutFrame> = None;
    loop {
        if let Some(new) = lock(&shared.handoff).take() {
            stream = Some(new);
        }
        let Some((epoch, send)) = stream.as_mut() else {
            shared.handoff_ready.notified().await;
            continue;
        };
        let frame = match held.take() {
            Some(frame) => frame,
            None => tokio::select! {
                biased;
                // A new stream (or a stale permit): the top of the loop takes it, if any.
                () = shared.handoff_ready.notified() => continue,
                frame = frames.recv() => match frame {
                    Some(frame) => frame,
                    None => return,
                },
            },
        };
        if frame.epoch < *epoch {
            continue;
        }
        if frame.epoch > *epoch {
            held = Some(frame);
            stream = None;
            continue;
        }
        if let Err(why) = send.write_all(&frame.bytes).await {
            tracing::debug!(%why, "control stream write failed");
            // The driver notices the connection's end and moves to a new epoch.
            stream = None;
        }
    }
}
