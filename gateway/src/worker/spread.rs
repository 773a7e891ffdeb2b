//! A room spread over several workers: the hub's side of it, sans-IO.
//!
//! The room's home worker and each satellite hold an instance of the room in their own SFU core.
//! Each instance has, besides its own participants:
//!
//! - one **relay member** (hidden: nobody sees it, it keeps no room alive), which receives every
//!   notification of the instance: what happens to this hub's own participants is told to the
//!   other workers from there;
//! - a **shadow** for every participant of the other workers: an ordinary participant of the
//!   instance, with the same id, identity and name, publishing stand-ins of its tracks with its
//!   own layer media ids and its track id (so that clients see one id for it on every worker).
//!   A subscriber here subscribes to a shadow's track like to any other, so
//!   its rewrite state (SSRC, sequence numbers, layer, keyframe wait) lives here, on its own
//!   worker.
//!
//! The workers form a star around the home: a satellite talks to the home only, the home passes
//! on what one satellite says to the others. A publisher's packet crosses the pipe once to each
//! other worker (twice, through the home, from one satellite to another), and each worker fans it
//! out to its own subscribers. A keyframe request for a shadow's track goes back to the worker of
//! the publisher. Every message names its subject by participant ids and the publisher's own
//! media ids, which mean the same on every worker (track ids do not).
//!
//! Today every packet of a spread room goes to every other worker of it, wanted or not; sending
//! only what is subscribed there is the next step.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use bytes::Bytes;
use strait_media::sfu::{self, LeaveReason, Notification, ParticipantMeta};
use strait_protocol::{ControlMessage, ParticipantId};

use super::hub::{Core, Output};
use super::pipe::{RemoteMember, RemoteTrack, RoomMessage};

/// Relay members' ids start here: far above every participant id (below 2^53).
const RELAY_IDS: u64 = 1 << 60;

/// A `Join` that waits for the home's snapshot.
#[derive(Debug)]
pub(crate) struct PendingJoin {
    pub(crate) participant: ParticipantId,
    pub(crate) message: ControlMessage,
    pub(crate) join_started: Option<Instant>,
}

/// One spread room, as this hub holds it.
#[derive(Debug)]
struct Link {
    /// The room's home worker.
    home: usize,
    /// Home only: the satellites.
    satellites: BTreeSet<usize>,
    /// The relay member in this hub's instance, once the instance exists.
    relay: Option<sfu::ParticipantId>,
    /// Satellite only: the home's snapshot arrived (joins wait for it).
    open: bool,
    /// Satellite only: joins waiting for the snapshot.
    pending: Vec<PendingJoin>,
}

/// A participant of another worker, standing in this hub's instance of its room.
#[derive(Debug)]
struct Shadow {
    room: String,
    origin: usize,
}

/// Every spread room of this hub.
#[derive(Debug)]
pub(crate) struct Spread {
    /// This hub's worker.
    me: usize,
    links: HashMap<String, Link>,
    relays: HashMap<sfu::ParticipantId, String>,
    shadows: HashMap<sfu::ParticipantId, Shadow>,
    /// Stand-in tracks: (publisher, first layer's media id) → this instance's track.
    stand_ins: HashMap<(sfu::ParticipantId, sfu::MediaId), sfu::TrackId>,
    /// This hub's own tracks in spread rooms: track → (publisher, first layer's media id).
    own_tracks: HashMap<sfu::TrackId, (sfu::ParticipantId, sfu::MediaId)>,
    next_relay: u64,
}

impl Spread {
    /// The spread rooms of worker `me`.
    pub(crate) fn new(me: usize) -> Spread {
        Spread {
            me,
            links: HashMap::new(),
            relays: HashMap::new(),
            shadows: HashMap::new(),
            stand_ins: HashMap::new(),
            own_tracks: HashMap::new(),
            next_relay: RELAY_IDS,
        }
    }

    /// Whether this hub holds any spread room.
    pub(crate) fn any(&self) -> bool {
        !self.links.is_empty()
    }

    /// Whether `room` is spread (this hub is its home with satellites, or a satellite).
    pub(crate) fn is_spread(&self, room: &str) -> bool {
        self.links.contains_key(room)
    }

    /// A `Join` of `room` on this hub, whose home is `home`: `Some` gives it back to be applied
    /// now; `None` keeps it until the home's snapshot has arrived (asking for it if this is the
    /// room's first join here).
    pub(crate) fn join(
        &mut self,
        core: &mut Core,
        room: &str,
        home: usize,
        join: PendingJoin,
    ) -> Option<PendingJoin> {
        if home == self.me {
            return Some(join);
        }
        let link = self.links.entry(room.to_owned()).or_insert_with(|| Link {
            home,
            satellites: BTreeSet::new(),
            relay: None,
            open: false,
            pending: Vec::new(),
        });
        if link.open {
            return Some(join);
        }
        if link.pending.is_empty() {
            core.push(Output::Pipe {
                to: home,
                room: room.to_owned(),
                message: RoomMessage::Open,
            });
        }
        link.pending.push(join);
        None
    }

    /// A participant of this hub joined `room`: a home with satellites puts its relay member
    /// in now if the instance had none.
    pub(crate) fn joined(&mut self, core: &mut Core, room: &str, now: Instant) {
        let Some(link) = self.links.get(room) else {
            return;
        };
        if link.relay.is_none() {
            self.add_relay(core, room, now);
        }
    }

    fn add_relay(&mut self, core: &mut Core, room: &str, now: Instant) {
        let relay = sfu::ParticipantId(self.next_relay);
        self.next_relay += 1;
        if core.sfu.join_relay(relay, room, now).is_ok() {
            self.relays.insert(relay, room.to_owned());
            if let Some(link) = self.links.get_mut(room) {
                link.relay = Some(relay);
            }
        }
    }

    /// Where a message about this hub's own participants of `room` goes: every satellite from
    /// the home, the home from a satellite.
    fn send_out(&self, core: &mut Core, room: &str, message: &RoomMessage, except: Option<usize>) {
        let Some(link) = self.links.get(room) else {
            return;
        };
        if link.home == self.me {
            for &satellite in &link.satellites {
                if Some(satellite) != except {
                    core.push(Output::Pipe {
                        to: satellite,
                        room: room.to_owned(),
                        message: message.clone(),
                    });
                }
            }
        } else if Some(link.home) != except {
            core.push(Output::Pipe {
                to: link.home,
                room: room.to_owned(),
                message: message.clone(),
            });
        }
    }

    /// A packet of `publisher` (this hub's own, or a shadow's from the pipe) forwarded here:
    /// handed on to the other workers of its room when the room is spread.
    pub(crate) fn media(
        &self,
        core: &mut Core,
        room: &str,
        publisher: sfu::ParticipantId,
        media: sfu::MediaId,
        rtp: &Bytes,
    ) {
        if !self.links.contains_key(room) {
            return;
        }
        let origin = self.shadows.get(&publisher).map(|s| s.origin);
        let message = RoomMessage::Media {
            participant: publisher.0,
            media: media.0,
            rtp: rtp.clone(),
        };
        match origin {
            None => self.send_out(core, room, &message, None),
            // Only the home passes a satellite's packets on.
            Some(from) if self.links.get(room).is_some_and(|l| l.home == self.me) => {
                self.send_out(core, room, &message, Some(from));
            }
            Some(_) => {}
        }
    }

    /// The room of a shadow or of a relay member, for the hub's routing.
    pub(crate) fn shadow_room(&self, participant: sfu::ParticipantId) -> Option<&str> {
        self.shadows.get(&participant).map(|s| s.room.as_str())
    }

    /// A keyframe request the SFU core made of `publisher`: `true` when it is a shadow, whose
    /// request goes to its worker.
    pub(crate) fn keyframe_request(
        &self,
        core: &mut Core,
        publisher: sfu::ParticipantId,
        media: sfu::MediaId,
    ) -> bool {
        let Some(shadow) = self.shadows.get(&publisher) else {
            return false;
        };
        let Some(link) = self.links.get(&shadow.room) else {
            return true;
        };
        // A satellite asks the home, which asks the shadow's worker.
        let to = if link.home == self.me {
            shadow.origin
        } else {
            link.home
        };
        core.push(Output::Pipe {
            to,
            room: shadow.room.clone(),
            message: RoomMessage::KeyframeRequest {
                participant: publisher.0,
                media: media.0,
            },
        });
        true
    }

    /// A notification the SFU core made for `to`: `true` when `to` is a relay member, whose
    /// notifications about this hub's own participants are told to the room's other workers.
    pub(crate) fn notification(
        &mut self,
        core: &mut Core,
        to: sfu::ParticipantId,
        notification: &Notification,
    ) -> bool {
        let Some(room) = self.relays.get(&to).cloned() else {
            return false;
        };
        let own = |p: &sfu::ParticipantId| !self.shadows.contains_key(p);
        let message = match notification {
            Notification::ParticipantJoined(info) if own(&info.participant) => {
                RoomMessage::Joined(RemoteMember {
                    participant: info.participant.0,
                    origin: self.me,
                    identity: info.identity.clone(),
                    name: info.name.clone(),
                })
            }
            Notification::ParticipantLeft {
                participant,
                reason,
            } if own(participant) => RoomMessage::Left {
                participant: participant.0,
                timed_out: matches!(reason, LeaveReason::Timeout),
            },
            Notification::TrackPublished(info) if own(&info.participant) => {
                let Some(spec) = core.sfu.track_spec(info.track) else {
                    return true;
                };
                let Some(first) = spec.layers.first().map(|l| l.media) else {
                    return true;
                };
                self.own_tracks
                    .insert(info.track, (info.participant, first));
                RoomMessage::Published(RemoteTrack {
                    track: info.track.0,
                    participant: info.participant.0,
                    spec,
                })
            }
            Notification::TrackUnpublished { track, participant } if own(participant) => {
                let Some((_, media)) = self.own_tracks.remove(track) else {
                    return true;
                };
                RoomMessage::Unpublished {
                    participant: participant.0,
                    media: media.0,
                }
            }
            Notification::TrackMuted { track, muted } => {
                let Some(&(participant, media)) = self.own_tracks.get(track) else {
                    return true;
                };
                RoomMessage::Muted {
                    participant: participant.0,
                    media: media.0,
                    muted: *muted,
                }
            }
            _ => return true,
        };
        self.send_out(core, &room, &message, None);
        true
    }

    /// The relay member `participant` was removed with its instance (the room closed here).
    pub(crate) fn relay_removed(&mut self, participant: sfu::ParticipantId) {
        if let Some(room) = self.relays.remove(&participant)
            && let Some(link) = self.links.get_mut(&room)
        {
            link.relay = None;
        }
    }

    /// The last participant of this hub left `room`: a satellite tears its instance down (its
    /// shadows leave) and tells the home.
    pub(crate) fn emptied(&mut self, core: &mut Core, room: &str, now: Instant) {
        let Some(link) = self.links.get(room) else {
            return;
        };
        if link.home == self.me {
            return;
        }
        let home = link.home;
        self.drop_shadows(core, room, None, now);
        if let Some(link) = self.links.remove(room)
            && let Some(relay) = link.relay
        {
            self.relays.remove(&relay);
            let _ = core.sfu.leave(relay, LeaveReason::Left, now);
        }
        core.push(Output::Pipe {
            to: home,
            room: room.to_owned(),
            message: RoomMessage::Close,
        });
    }

    /// Removes the shadows of `room` (those of worker `origin` only, when given).
    fn drop_shadows(&mut self, core: &mut Core, room: &str, origin: Option<usize>, now: Instant) {
        let gone: Vec<sfu::ParticipantId> = self
            .shadows
            .iter()
            .filter(|(_, s)| s.room == room && origin.is_none_or(|o| s.origin == o))
            .map(|(p, _)| *p)
            .collect();
        for participant in gone {
            self.shadows.remove(&participant);
            self.stand_ins.retain(|(p, _), _| *p != participant);
            let _ = core.sfu.leave(participant, LeaveReason::Left, now);
        }
    }

    /// A shadow joins this hub's instance of `room` (making the instance if it is the first).
    fn add_shadow(&mut self, core: &mut Core, room: &str, member: &RemoteMember, now: Instant) {
        let participant = sfu::ParticipantId(member.participant);
        if member.origin == self.me || self.shadows.contains_key(&participant) {
            return;
        }
        let meta = ParticipantMeta {
            identity: member.identity.clone(),
            name: member.name.clone(),
        };
        if core.sfu.join(participant, room, meta, now).is_ok() {
            self.shadows.insert(
                participant,
                Shadow {
                    room: room.to_owned(),
                    origin: member.origin,
                },
            );
        }
        let needs_relay = self.links.get(room).is_some_and(|l| l.relay.is_none());
        if needs_relay {
            self.add_relay(core, room, now);
        }
    }

    /// A shadow publishes the stand-in of a track of its participant.
    fn add_stand_in(&mut self, core: &mut Core, track: &RemoteTrack, now: Instant) {
        let participant = sfu::ParticipantId(track.participant);
        let Some(first) = track.spec.layers.first().map(|l| l.media) else {
            return;
        };
        if !self.shadows.contains_key(&participant)
            || self.stand_ins.contains_key(&(participant, first))
        {
            return;
        }
        let id = sfu::TrackId(track.track);
        if core
            .sfu
            .publish_as(participant, track.spec.clone(), id, now)
            .is_ok()
        {
            self.stand_ins.insert((participant, first), id);
        }
    }

    /// What another worker of `room` said. Returns the joins that waited for a snapshot, to be
    /// applied now, and a packet to forward here as its publisher's (a shadow's).
    pub(crate) fn handle(
        &mut self,
        core: &mut Core,
        room: &str,
        from: usize,
        message: RoomMessage,
        now: Instant,
    ) -> Handled {
        let mut handled = Handled::default();
        let home = self.links.get(room).map(|l| l.home == self.me);
        match message {
            RoomMessage::Open => {
                let link = self.links.entry(room.to_owned()).or_insert_with(|| Link {
                    home: self.me,
                    satellites: BTreeSet::new(),
                    relay: None,
                    open: true,
                    pending: Vec::new(),
                });
                link.satellites.insert(from);
                if link.relay.is_none() {
                    self.add_relay(core, room, now);
                }
                let relay = self.links.get(room).and_then(|l| l.relay);
                let (members, tracks) = self.snapshot(core, relay, from);
                core.push(Output::Pipe {
                    to: from,
                    room: room.to_owned(),
                    message: RoomMessage::Snapshot { members, tracks },
                });
            }
            RoomMessage::Snapshot { members, tracks } => {
                let Some(link) = self.links.get_mut(room) else {
                    return handled;
                };
                link.open = true;
                handled.joins = std::mem::take(&mut link.pending);
                for member in &members {
                    self.add_shadow(core, room, member, now);
                }
                for track in &tracks {
                    self.add_stand_in(core, track, now);
                }
            }
            RoomMessage::Joined(member) => {
                self.add_shadow(core, room, &member, now);
                if home == Some(true) {
                    self.send_out(core, room, &RoomMessage::Joined(member), Some(from));
                }
            }
            RoomMessage::Left {
                participant,
                timed_out,
            } => {
                let id = sfu::ParticipantId(participant);
                if self.shadows.remove(&id).is_some() {
                    self.stand_ins.retain(|(p, _), _| *p != id);
                    let reason = if timed_out {
                        LeaveReason::Timeout
                    } else {
                        LeaveReason::Left
                    };
                    let _ = core.sfu.leave(id, reason, now);
                }
                if home == Some(true) {
                    let message = RoomMessage::Left {
                        participant,
                        timed_out,
                    };
                    self.send_out(core, room, &message, Some(from));
                }
            }
            RoomMessage::Published(track) => {
                self.add_stand_in(core, &track, now);
                if home == Some(true) {
                    self.send_out(core, room, &RoomMessage::Published(track), Some(from));
                }
            }
            RoomMessage::Unpublished { participant, media } => {
                let key = (sfu::ParticipantId(participant), sfu::MediaId(media));
                if let Some(track) = self.stand_ins.remove(&key) {
                    let _ = core.sfu.unpublish(key.0, track, now);
                }
                if home == Some(true) {
                    let message = RoomMessage::Unpublished { participant, media };
                    self.send_out(core, room, &message, Some(from));
                }
            }
            RoomMessage::Muted {
                participant,
                media,
                muted,
            } => {
                let key = (sfu::ParticipantId(participant), sfu::MediaId(media));
                if let Some(&track) = self.stand_ins.get(&key) {
                    let _ = core.sfu.set_muted(key.0, track, muted, now);
                }
                if home == Some(true) {
                    let message = RoomMessage::Muted {
                        participant,
                        media,
                        muted,
                    };
                    self.send_out(core, room, &message, Some(from));
                }
            }
            RoomMessage::Media {
                participant,
                media,
                rtp,
            } => {
                handled.media = Some((sfu::ParticipantId(participant), sfu::MediaId(media), rtp));
            }
            RoomMessage::KeyframeRequest { participant, media } => {
                let publisher = sfu::ParticipantId(participant);
                if !self.keyframe_request(core, publisher, sfu::MediaId(media)) {
                    let _ = core
                        .sfu
                        .request_keyframe_from(publisher, sfu::MediaId(media), now);
                }
            }
            RoomMessage::Close => {
                self.drop_shadows(core, room, Some(from), now);
                let empty = self.links.get_mut(room).is_some_and(|link| {
                    link.satellites.remove(&from);
                    link.satellites.is_empty()
                });
                if empty
                    && let Some(link) = self.links.remove(room)
                    && let Some(relay) = link.relay
                {
                    self.relays.remove(&relay);
                    let _ = core.sfu.leave(relay, LeaveReason::Left, now);
                }
            }
        }
        handled
    }

    /// The room as the home's relay member sees it, less what the satellite `to` holds itself.
    fn snapshot(
        &self,
        core: &Core,
        relay: Option<sfu::ParticipantId>,
        to: usize,
    ) -> (Vec<RemoteMember>, Vec<RemoteTrack>) {
        let Some(snapshot) = relay.and_then(|r| core.sfu.room_snapshot(r)) else {
            return (Vec::new(), Vec::new());
        };
        let origin = |p: &sfu::ParticipantId| self.shadows.get(p).map_or(self.me, |s| s.origin);
        let members = snapshot
            .participants
            .iter()
            .filter(|p| origin(&p.participant) != to)
            .map(|p| RemoteMember {
                participant: p.participant.0,
                origin: origin(&p.participant),
                identity: p.identity.clone(),
                name: p.name.clone(),
            })
            .collect();
        let tracks = snapshot
            .tracks
            .iter()
            .filter(|t| origin(&t.participant) != to)
            .filter_map(|t| {
                Some(RemoteTrack {
                    track: t.track.0,
                    participant: t.participant.0,
                    spec: core.sfu.track_spec(t.track)?,
                })
            })
            .collect();
        (members, tracks)
    }
}

/// What [`Spread::handle`] leaves to the hub.
#[derive(Debug, Default)]
pub(crate) struct Handled {
    /// Joins that waited for the home's snapshot.
    pub(crate) joins: Vec<PendingJoin>,
    /// A packet of a shadow to forward here.
    pub(crate) media: Option<(sfu::ParticipantId, sfu::MediaId, Bytes)>,
}
