//! The in-process pipe between media workers: what one worker hands another, and where it goes.
//!
//! Each worker has one bounded inbound queue; any worker may send on any other's. Today it
//! carries the datagrams of a shared WebRTC port (`webrtc.shared_port`) to the worker that holds
//! their peer. A message names everything its receiver needs (no pointer into the sender's
//! state), so the same messages can cross a process boundary later.
//!
//! ## Steering a shared WebRTC port
//!
//! With `SO_REUSEPORT` the kernel spreads a port's datagrams over the workers' sockets by the
//! hash of their addresses, not by room, so a datagram often lands on a worker that does not hold
//! its peer. The receiving worker routes it:
//!
//! - a STUN Binding request names its peer's local ufrag (RFC 8445 §7.2.2): the worker that
//!   holds that ufrag (each registers those its endpoint takes, [`Pipes::take_ufrag`]) is the
//!   owner, and the receiving worker remembers the datagram's source address for it;
//! - any other datagram (DTLS, SRTP, SRTCP) goes to the worker remembered for its source
//!   address, or, when none is, to the receiving worker's own endpoint (which drops and counts a
//!   stranger's).
//!
//! A peer always checks connectivity with a Binding request before anything else and repeats one
//! every few seconds (ICE consent), so the route is learnt before DTLS starts and refreshed while
//! the peer lives.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::mpsc;

/// Messages queued toward one worker, at most; beyond it a message is dropped and counted
/// (`worker_pipe_full`).
pub(crate) const PIPE_CAPACITY: usize = 4096;

/// What one worker hands another.
#[derive(Debug)]
pub(crate) enum PipeMessage {
    /// A datagram that arrived on a shared WebRTC port at another worker's socket.
    Datagram {
        /// Its source address.
        from: SocketAddr,
        /// Its bytes.
        bytes: Bytes,
    },
    /// Something about a room spread over several workers (see [`RoomMessage`]).
    Room {
        /// The room.
        room: String,
        /// The worker that sends it.
        from: usize,
        /// What happened.
        message: RoomMessage,
    },
}

/// What the workers that hold parts of one room tell each other. The room's home worker is the
/// hub of a star: each satellite talks to the home only, and the home passes on what one
/// satellite says to the others. Every message names its subject by values that mean the same on
/// every worker: participant ids (drawn once for the node), track ids (stand-ins keep the
/// original's) and a publisher's own media ids.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RoomMessage {
    /// Satellite → home: a participant is about to join the room here; send the room.
    Open,
    /// Home → satellite: everyone in the room and every track, as the home sees them.
    Snapshot {
        /// The participants (other than the satellite's own).
        members: Vec<RemoteMember>,
        /// Their tracks.
        tracks: Vec<RemoteTrack>,
    },
    /// A participant joined (on the worker `origin`).
    Joined(RemoteMember),
    /// A participant left.
    Left {
        /// Who.
        participant: u64,
        /// Whether its grace period ran out (else it left).
        timed_out: bool,
    },
    /// A track was published.
    Published(RemoteTrack),
    /// A track was unpublished.
    Unpublished {
        /// Its publisher.
        participant: u64,
        /// The media id of its first layer, as its publisher sends it.
        media: u32,
    },
    /// A track was muted or unmuted.
    Muted {
        /// Its publisher.
        participant: u64,
        /// The media id of its first layer.
        media: u32,
        /// Muted now.
        muted: bool,
    },
    /// One RTP packet of a publisher, as it sent it: each worker rewrites it for its own
    /// subscribers.
    Media {
        /// The publisher.
        participant: u64,
        /// Its media id for the layer.
        media: u32,
        /// The packet.
        rtp: Bytes,
    },
    /// A subscriber somewhere asks the publisher for a keyframe of a layer.
    KeyframeRequest {
        /// The publisher.
        participant: u64,
        /// Its media id for the layer.
        media: u32,
    },
    /// Satellite → home: nobody of the room is left here.
    Close,
}

/// A participant of a spread room, as other workers learn of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteMember {
    /// Its id.
    pub(crate) participant: u64,
    /// The worker its session is on.
    pub(crate) origin: usize,
    /// Its identity (the token's subject).
    pub(crate) identity: String,
    /// Its display name.
    pub(crate) name: String,
}

/// A track of a spread room, with everything needed to publish its stand-in elsewhere.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RemoteTrack {
    /// Its id (the same on every worker: stand-ins are published with it).
    pub(crate) track: u64,
    /// Its publisher.
    pub(crate) participant: u64,
    /// What it is, with its publisher's layer media ids.
    pub(crate) spec: strait_media::sfu::TrackSpec,
}

/// Why a message was not handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PipeError {
    /// The receiving worker's queue is full.
    Full,
    /// The receiving worker has stopped.
    Closed,
}

/// Every worker's inbound queues, and which worker holds each local ICE ufrag.
///
/// Each worker has two lanes: datagrams and media in a bounded queue ([`PIPE_CAPACITY`]; full:
/// the message is refused, and counted by the sender), and a spread room's state (who joined,
/// left, published…) in a queue that never refuses: losing one would leave the room's instances
/// disagreeing for good. The state lane holds as many messages as the room's control events,
/// which the sessions' rate limits bound; it is read first.
#[derive(Debug)]
pub(crate) struct Pipes {
    senders: Vec<mpsc::Sender<PipeMessage>>,
    state: Vec<mpsc::UnboundedSender<PipeMessage>>,
    ufrags: Mutex<HashMap<String, usize>>,
}

/// A worker's end of its pipe (both lanes).
#[derive(Debug)]
pub(crate) struct PipeReceiver {
    media: mpsc::Receiver<PipeMessage>,
    state: mpsc::UnboundedReceiver<PipeMessage>,
}

impl PipeReceiver {
    /// Waits for messages and takes up to `limit` into `into`, the state lane's first; 0 when
    /// the pipes are gone (both lanes close together). Cancel-safe.
    pub(crate) async fn recv_many(&mut self, into: &mut Vec<PipeMessage>, limit: usize) -> usize {
        let first = tokio::select! {
            biased;
            message = self.state.recv() => message,
            message = self.media.recv() => message,
        };
        let Some(first) = first else {
            return 0;
        };
        into.push(first);
        let mut n = 1;
        while n < limit {
            let Some(message) = self.try_recv() else {
                break;
            };
            into.push(message);
            n += 1;
        }
        n
    }

    /// A message waiting now, the state lane's first.
    pub(crate) fn try_recv(&mut self) -> Option<PipeMessage> {
        self.state
            .try_recv()
            .ok()
            .or_else(|| self.media.try_recv().ok())
    }
}

impl Pipes {
    /// Pipes into `workers` workers: the shared sending side, and each worker's receiver.
    pub(crate) fn new(workers: usize) -> (Pipes, Vec<PipeReceiver>) {
        let mut senders = Vec::with_capacity(workers);
        let mut state = Vec::with_capacity(workers);
        let mut receivers = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (media_tx, media_rx) = mpsc::channel(PIPE_CAPACITY);
            let (state_tx, state_rx) = mpsc::unbounded_channel();
            senders.push(media_tx);
            state.push(state_tx);
            receivers.push(PipeReceiver {
                media: media_rx,
                state: state_rx,
            });
        }
        let pipes = Pipes {
            senders,
            state,
            ufrags: Mutex::new(HashMap::new()),
        };
        (pipes, receivers)
    }

    /// Hands `message` to worker `to` without waiting: a spread room's state on the lane that
    /// never refuses, anything else on the bounded one.
    pub(crate) fn send(&self, to: usize, message: PipeMessage) -> Result<(), PipeError> {
        let is_state = matches!(
            &message,
            PipeMessage::Room { message, .. } if !matches!(message, RoomMessage::Media { .. })
        );
        if is_state {
            let sender = self.state.get(to).ok_or(PipeError::Closed)?;
            return sender.send(message).map_err(|_| PipeError::Closed);
        }
        let sender = self.senders.get(to).ok_or(PipeError::Closed)?;
        sender.try_send(message).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => PipeError::Full,
            mpsc::error::TrySendError::Closed(_) => PipeError::Closed,
        })
    }

    fn ufrags(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.ufrags.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Worker `worker`'s endpoint took `ufrag`.
    pub(crate) fn take_ufrag(&self, ufrag: String, worker: usize) {
        self.ufrags().insert(ufrag, worker);
    }

    /// Worker `worker`'s endpoint released `ufrag` (ignored when another took it since).
    pub(crate) fn release_ufrag(&self, ufrag: &str, worker: usize) {
        let mut ufrags = self.ufrags();
        if ufrags.get(ufrag) == Some(&worker) {
            ufrags.remove(ufrag);
        }
    }

    /// The worker whose endpoint holds `ufrag`.
    pub(crate) fn ufrag_owner(&self, ufrag: &str) -> Option<usize> {
        self.ufrags().get(ufrag).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ufrag_belongs_to_the_worker_that_took_it_last() {
        let (pipes, _receivers) = Pipes::new(2);
        pipes.take_ufrag("abcd".into(), 1);
        assert_eq!(pipes.ufrag_owner("abcd"), Some(1));
        // Released by another worker: not its to release.
        pipes.release_ufrag("abcd", 0);
        assert_eq!(pipes.ufrag_owner("abcd"), Some(1));
        pipes.release_ufrag("abcd", 1);
        assert_eq!(pipes.ufrag_owner("abcd"), None);
    }

    #[test]
    fn a_full_pipe_refuses_and_a_stopped_worker_is_told_apart() {
        let (pipes, mut receivers) = Pipes::new(2);
        let datagram = || PipeMessage::Datagram {
            from: "127.0.0.1:9".parse().unwrap(),
            bytes: Bytes::from_static(b"x"),
        };
        for _ in 0..PIPE_CAPACITY {
            pipes.send(1, datagram()).unwrap();
        }
        assert_eq!(pipes.send(1, datagram()), Err(PipeError::Full));
        // A spread room's state still goes through, and is read first.
        let state = PipeMessage::Room {
            room: "r".into(),
            from: 0,
            message: RoomMessage::Close,
        };
        pipes.send(1, state).unwrap();
        assert!(matches!(
            receivers[1].try_recv(),
            Some(PipeMessage::Room { .. })
        ));
        assert!(matches!(
            receivers[1].try_recv(),
            Some(PipeMessage::Datagram { .. })
        ));
        pipes.send(1, datagram()).unwrap();
        drop(receivers.remove(0));
        assert_eq!(pipes.send(0, datagram()), Err(PipeError::Closed));
        assert_eq!(pipes.send(7, datagram()), Err(PipeError::Closed));
    }
}
