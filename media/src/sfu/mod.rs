//! The SFU core: rooms, participants, tracks, subscriptions and RTP forwarding, sans-IO.
//!
//! State is kept in a shape that makes the hot path cheap: a packet is looked up with one hash
//! probe on `(publisher, media id)`, which yields the track's slab slot and the layer; the track
//! owns its subscriptions in a slab that is iterated in place, and every subscription carries the
//! few fields forwarding needs (whether its subscriber is connected, its layers, its rewrite
//! state). Everything else — rooms, participants, the reverse links from a subscriber to its
//! subscriptions — is touched only by mutators.
//!
//! # Relay members
//!
//! A room can span several instances (media workers, later nodes). Each instance holding part of
//! it puts one **relay member** per link into its local room with [`Sfu::join_relay`]. The relay
//! hears every notification of the room like a member but is invisible to everyone (absent from
//! snapshots, never announced, not counted as a participant), never publishes, and passes every
//! layer of the tracks it subscribes to through unchanged. The link's far end republishes each
//! such track from an ordinary "shadow" participant, with the layer media ids from
//! [`Sfu::track_spec`], chooses layers for its own subscribers, and sends their keyframe
//! requests back, which the near end hands to [`Sfu::request_keyframe_from`] (throttled with the
//! local subscribers' requests). A room lives for its ordinary members only: when the last one
//! leaves, its relay members are removed with [`Event::ParticipantRemoved`] and
//! [`LeaveReason::RoomClosed`], which tells the instance that its link is idle.

mod config;
mod error;
mod forward;
mod ids;
pub mod keyframe;
pub mod rtp;
mod stats;
mod types;

use std::collections::{BTreeSet, VecDeque};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rustc_hash::FxHashMap;
use slab::Slab;
use tracing::debug;

pub use self::config::SfuConfig;
pub use self::error::{RoutingError, SfuError};
pub use self::forward::Forward;
pub use self::ids::{MediaId, ParticipantId, RoomName, TrackId};
pub use self::layers::{
    CLEARLY_HIGHER_PERCENT, CLIMB_HELD, CLIMB_TRIAL, DEFAULT_AUDIO_COST, MAX_COOLDOWN,
    PROBE_AFTER_CLEAR, PROBE_DURATION, PROBE_GRACE, PROBE_PADDING_BPS, PROBE_QUEUE_RISE, REFRESH,
    default_priority,
};
pub use self::stats::{DropStats, SfuStats};
pub use self::types::{
    CodecSpec, Event, LayerInfo, LayerSpec, LeaveReason, Notification, ParticipantInfo,
    ParticipantMeta, PauseReason, ResumeSnapshot, RoomSnapshot, SubscriptionInfo, TrackInfo,
    TrackKind, TrackSpec,
};

use crate::bwe::{Estimate, LayerRates};

use self::forward::{Mapped, Rewriter};
use self::keyframe::PayloadFormat;
use self::rtp::RtpHeader;

/// Most simulcast layers a track may have.
pub const MAX_LAYERS: usize = 3;

/// A subscription's layer state, from [`Sfu::subscription`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionState {
    /// What the subscriber was told at subscribe (the layer is the one forwarded now, or the
    /// target while nothing has been forwarded yet).
    pub info: SubscriptionInfo,
    /// The layer being forwarded; `None` until the first keyframe, and always for a relay
    /// member (it passes every layer through).
    pub current_layer: Option<u8>,
    /// The layer the core wants to forward (it switches at that layer's next keyframe); for a
    /// relay member, the highest layer passed through.
    pub target_layer: u8,
    /// The subscriber's cap, if any.
    pub max_layer: Option<u8>,
}

/// The SFU core of Strait.
///
/// A sans-IO state machine: the gateway owns it in one worker task and drives it with calls that
/// carry the current time. It reads no clock, draws randomness only from the RNG seeded in
/// [`new`](Self::new), performs no I/O and logs nothing per packet.
///
/// Its methods fall into four classes:
///
/// - **getters** read state: [`stats`](Self::stats), [`config`](Self::config),
///   [`room_of`](Self::room_of), [`is_connected`](Self::is_connected),
///   [`is_relay`](Self::is_relay), [`room_snapshot`](Self::room_snapshot),
///   [`track_info`](Self::track_info), [`track_spec`](Self::track_spec),
///   [`subscription`](Self::subscription);
/// - **mutators** apply a decision of the gateway and may queue events: [`join`](Self::join),
///   [`join_relay`](Self::join_relay), [`leave`](Self::leave),
///   [`disconnect`](Self::disconnect), [`reconnect`](Self::reconnect),
///   [`publish`](Self::publish), [`unpublish`](Self::unpublish), [`set_muted`](Self::set_muted),
///   [`subscribe`](Self::subscribe), [`unsubscribe`](Self::unsubscribe),
///   [`set_layer_preference`](Self::set_layer_preference),
///   [`set_bandwidth`](Self::set_bandwidth), [`request_keyframe`](Self::request_keyframe),
///   [`request_keyframe_for_media`](Self::request_keyframe_for_media),
///   [`request_keyframe_from`](Self::request_keyframe_from);
/// - **handlers** feed input: [`handle_rtp`](Self::handle_rtp) (the hot path, which hands each
///   forwarded packet to a callback) and [`handle_timeout`](Self::handle_timeout);
/// - **pollers** give output: [`poll_event`](Self::poll_event) and
///   [`poll_timeout`](Self::poll_timeout).
///
/// The rule: after every mutator or handler call, drain `poll_event` until it returns `None`, then
/// ask `poll_timeout` when to call `handle_timeout` next. The event queue is not bounded by
/// itself; draining after every call keeps it to what one call produces, which the limits in
/// [`SfuConfig`] bound (a leave in a full room: one notification per member per track, plus one).
///
/// A disconnected participant (in its grace period) receives nothing: packets for it are not
/// forwarded and notifications for it are dropped (both counted), because it gets a fresh
/// snapshot from [`reconnect`](Self::reconnect). Keyframe requests for its own tracks wait and are
/// sent when it reconnects.
#[derive(Debug)]
pub struct Sfu {
    config: SfuConfig,
    rng: StdRng,
    participants: FxHashMap<ParticipantId, Participant>,
    rooms: FxHashMap<RoomName, Room>,
    tracks: Slab<Track>,
    track_index: FxHashMap<TrackId, usize>,
    /// `(publisher, its media id)` → `(track slot, layer)`: the one lookup of the hot path.
    incoming: FxHashMap<(ParticipantId, MediaId), (usize, u8)>,
    timers: BTreeSet<(Instant, Timer)>,
    events: VecDeque<Event>,
    stats: SfuStats,
    /// While load is shed: the highest layer any subscription forwards.
    layer_ceiling: Option<u8>,
    /// While load is shed: the publishers whose video is forwarded (the latest speakers).
    video_speakers: Option<rustc_hash::FxHashSet<ParticipantId>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// A disconnected participant's grace period ends.
    Grace(ParticipantId),
    /// A throttled keyframe request for a track's layer may be sent.
    Keyframe(TrackId, u8),
    /// The allocation looks at layer liveness and cooldowns (see [`layers`]).
    Allocate,
}

#[derive(Debug)]
struct Room {
    /// Ordinary members in join order: the ones snapshots list and the room lives for.
    participants: Vec<ParticipantId>,
    /// Relay members in join order: told everything, seen by nobody.
    relays: Vec<ParticipantId>,
    /// Track slots in publish order.
    tracks: Vec<usize>,
}

#[derive(Debug)]
struct Participant {
    room: RoomName,
    meta: ParticipantMeta,
    /// `Some(end of grace period)` while disconnected.
    disconnected_until: Option<Instant>,
    /// Track slots it publishes, in publish order.
    published: Vec<usize>,
    /// Its subscriptions, in subscription order.
    subscriptions: Vec<SubscriptionRef>,
    /// Its bandwidth estimate and the allocation's hysteresis state.
    alloc: layers::AllocState,
    /// Joined with [`Sfu::join_relay`]: invisible, never publishes, forwards every layer as is.
    relay: bool,
}

impl Participant {
    fn connected(&self) -> bool {
        self.disconnected_until.is_none()
    }
}

/// The subscriber's link to a subscription, which lives in its track.
#[derive(Debug, Clone, Copy)]
struct SubscriptionRef {
    track: usize,
    slot: usize,
    media: MediaId,
    ssrc: u32,
}

#[derive(Debug)]
struct Track {
    id: TrackId,
    owner: ParticipantId,
    room: RoomName,
    kind: TrackKind,
    format: PayloadFormat,
    codec: CodecSpec,
    source: String,
    muted: bool,
    layers: Vec<Layer>,
    subscriptions: Slab<Subscription>,
    /// An audio track: when it last carried voice (see [`shed`]).
    last_voice: Option<Instant>,
    /// What each layer really carries, and whether it is being sent.
    rates: LayerRates,
}

#[derive(Debug)]
struct Layer {
    spec: LayerSpec,
    /// When a keyframe request for this layer last went upstream.
    last_request: Option<Instant>,
    /// A request was held back (throttled, or the publisher is disconnected) and no keyframe has
    /// passed since.
    pending: bool,
    /// When the held-back request may go (its timer), while the publisher is connected.
    pending_due: Option<Instant>,
}

#[derive(Debug)]
struct Subscription {
    subscriber: ParticipantId,
    media: MediaId,
    ssrc: u32,
    /// Mirrors the subscriber's state so the hot path needs no lookup.
    connected: bool,
    max_layer: Option<u8>,
    target: u8,
    current: Option<u8>,
    /// The layer the subscriber was last told about.
    announced: u8,
    /// Its priority, if the subscriber gave one (else the track's source decides).
    priority: Option<u8>,
    /// Paused by the allocation: nothing is forwarded.
    paused: bool,
    rewrite: Rewriter,
    /// The subscriber is a relay member: every layer up to `max_layer` is forwarded unchanged
    /// (no layer choice, no rewrite, no waiting for keyframes), for the other side to choose.
    relay: bool,
}

impl Subscription {
    /// The layer a keyframe is wanted for: the target, unless the codec cannot switch and
    /// forwarding already started.
    fn keyframe_layer(&self, format: PayloadFormat) -> u8 {
        match self.current {
            Some(current) if !format.detects_keyframes() => current,
            _ => self.target,
        }
    }
}

impl Track {
    fn info(&self) -> TrackInfo {
        TrackInfo {
            track: self.id,
            participant: self.owner,
            kind: self.kind,
            codec: self.codec.clone(),
            source: self.source.clone(),
            layers: self
                .layers
                .iter()
                .map(|l| LayerInfo {
                    max_bitrate: l.spec.max_bitrate,
                    width: l.spec.width,
                    height: l.spec.height,
                })
                .collect(),
            muted: self.muted,
        }
    }

    fn spec(&self) -> TrackSpec {
        TrackSpec {
            kind: self.kind,
            codec: self.codec.clone(),
            source: self.source.clone(),
            layers: self.layers.iter().map(|l| l.spec).collect(),
            muted: self.muted,
        }
    }

    fn top_layer(&self) -> u8 {
        // At most MAX_LAYERS layers, checked at publish.
        (self.layers.len() - 1) as u8
    }
}

fn participant_info(id: ParticipantId, p: &Participant) -> ParticipantInfo {
    ParticipantInfo {
        participant: id,
        identity: p.meta.identity.clone(),
        name: p.meta.name.clone(),
    }
}

impl Sfu {
    /// A core with no rooms. `seed` drives every random choice (track ids, SSRCs, initial
    /// sequence numbers and timestamps); the gateway seeds it from the OS, tests from a constant.
    #[must_use]
    pub fn new(config: SfuConfig, seed: u64) -> Self {
        Self {
            config,
            rng: StdRng::seed_from_u64(seed),
            participants: FxHashMap::default(),
            rooms: FxHashMap::default(),
            tracks: Slab::new(),
            track_index: FxHashMap::default(),
            incoming: FxHashMap::default(),
            timers: BTreeSet::new(),
            events: VecDeque::new(),
            stats: SfuStats::default(),
            layer_ceiling: None,
            video_speakers: None,
        }
    }

    // ---------------------------------------------------------------------------------------
    // Getters.

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &SfuConfig {
        &self.config
    }

    /// Counters and gauges.
    #[must_use]
    pub fn stats(&self) -> &SfuStats {
        &self.stats
    }

    /// The room a participant is in.
    #[must_use]
    pub fn room_of(&self, participant: ParticipantId) -> Option<&RoomName> {
        self.participants.get(&participant).map(|p| &p.room)
    }

    /// Whether a participant is connected (`Some(false)` in its grace period, `None` if unknown).
    #[must_use]
    pub fn is_connected(&self, participant: ParticipantId) -> Option<bool> {
        self.participants
            .get(&participant)
            .map(Participant::connected)
    }

    /// What a member of a room sees of it now (the same as [`join`](Self::join) returned, kept
    /// up to date), or `None` when `participant` is in no room.
    #[must_use]
    pub fn room_snapshot(&self, participant: ParticipantId) -> Option<RoomSnapshot> {
        self.participants
            .contains_key(&participant)
            .then(|| self.snapshot(participant))
    }

    /// A published track.
    #[must_use]
    pub fn track_info(&self, track: TrackId) -> Option<TrackInfo> {
        self.track_index
            .get(&track)
            .map(|&slot| self.tracks[slot].info())
    }

    /// A published track as its publisher described it, with each layer's media id and the
    /// current mute state: what it takes to publish the same track on another instance (a
    /// relay's other side) so that its layers keep their media ids there. [`TrackInfo`] leaves
    /// the media ids out because subscribers have no use for them.
    #[must_use]
    pub fn track_spec(&self, track: TrackId) -> Option<TrackSpec> {
        self.track_index
            .get(&track)
            .map(|&slot| self.tracks[slot].spec())
    }

    /// Whether a participant is a relay member (joined with [`join_relay`](Self::join_relay));
    /// `None` if unknown.
    #[must_use]
    pub fn is_relay(&self, participant: ParticipantId) -> Option<bool> {
        self.participants.get(&participant).map(|p| p.relay)
    }

    /// A subscription's state.
    #[must_use]
    pub fn subscription(
        &self,
        subscriber: ParticipantId,
        track: TrackId,
    ) -> Option<SubscriptionState> {
        let (r, _) = self.find_subscription(subscriber, track).ok()?;
        let sub = &self.tracks[r.track].subscriptions[r.slot];
        Some(SubscriptionState {
            info: SubscriptionInfo {
                track,
                media: sub.media,
                ssrc: sub.ssrc,
                layer: sub.current.unwrap_or(sub.target),
                paused: sub.paused,
            },
            current_layer: sub.current,
            target_layer: sub.target,
            max_layer: sub.max_layer,
        })
    }

    // ---------------------------------------------------------------------------------------
    // Pollers.

    /// The next event, in the order they happened. Drain until `None` after every call.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called next: the earliest end of a
    /// grace period, or of a keyframe-throttle window with a request waiting. `None` when nothing
    /// is scheduled.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|&(at, _)| at)
    }

    // ---------------------------------------------------------------------------------------
    // Handlers.

    /// Runs what is due at `now`: removes participants whose grace period ended (as
    /// [`leave`](Self::leave) with [`LeaveReason::Timeout`], then
    /// [`Event::ParticipantRemoved`], then one with [`LeaveReason::RoomClosed`] for each relay
    /// member of a room that closed with it) and sends held-back keyframe requests.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::Grace(participant) => {
                    let expired = self
                        .participants
                        .get(&participant)
                        .is_some_and(|p| p.disconnected_until == Some(at));
                    if expired {
                        debug!(%participant, "grace period ended");
                        let relays =
                            self.remove_participant(participant, LeaveReason::Timeout, now);
                        self.events.push_back(Event::ParticipantRemoved {
                            participant,
                            reason: LeaveReason::Timeout,
                        });
                        self.relays_removed(relays);
                    }
                }
                Timer::Allocate => self.allocation_tick(now),
                Timer::Keyframe(track, layer) => {
                    let Some(&slot) = self.track_index.get(&track) else {
                        continue;
                    };
                    let l = &mut self.tracks[slot].layers[usize::from(layer)];
                    l.pending_due = None;
                    if l.pending {
                        self.request_upstream(slot, layer, now);
                    }
                }
            }
        }
    }

    /// The hot path: one RTP packet from `publisher` on its media id `media`.
    ///
    /// Calls `out` once for every subscriber that should receive it, with the rewrite for that
    /// subscriber; nothing is allocated per subscriber and nothing is logged. A subscription
    /// receives the packet when it forwards this layer, or when it waits for this layer and the
    /// packet starts a keyframe (then it starts or switches here, and
    /// [`Notification::LayerSwitched`] is queued if the layer differs from what the subscriber
    /// was last told).
    ///
    /// Errors (each counted in [`SfuStats::drops`]): the sender is not in a room, the media id is
    /// not a live layer of this publisher, or the RTP header is malformed.
    pub fn handle_rtp(
        &mut self,
        publisher: ParticipantId,
        media: MediaId,
        packet: &[u8],
        now: Instant,
        out: &mut impl FnMut(Forward<'_>),
    ) -> Result<(), RoutingError> {
        let Self {
            tracks,
            incoming,
            participants,
            stats,
            events,
            timers,
            video_speakers,
            ..
        } = self;
        stats.packets_in += 1;
        stats.bytes_in += packet.len() as u64;
        let Some(&(slot, layer)) = incoming.get(&(publisher, media)) else {
            if participants.contains_key(&publisher) {
                stats.drops.unknown_media += 1;
                return Err(RoutingError::UnknownMedia { media });
            }
            stats.drops.not_joined += 1;
            return Err(RoutingError::NotJoined {
                participant: publisher,
            });
        };
        let header = match RtpHeader::parse(packet) {
            Ok(header) => header,
            Err(e) => {
                stats.drops.malformed += 1;
                return Err(RoutingError::Malformed(e));
            }
        };
        let track = &mut tracks[slot];
        track.rates.record(layer, packet.len(), now);
        let format = track.format;
        let switchable = format.detects_keyframes();
        let clock_rate = track.codec.clock_rate;
        let payload = &packet[header.payload_start..header.payload_end];
        match track.kind {
            TrackKind::Audio if payload.len() > shed::VOICE_PAYLOAD_BYTES => {
                track.last_voice = Some(now);
            }
            TrackKind::Video
                if video_speakers
                    .as_ref()
                    .is_some_and(|speakers| !speakers.contains(&publisher)) =>
            {
                // Shed: this publisher is not among the latest speakers.
                stats.drops.shed += track.subscriptions.len() as u64;
                return Ok(());
            }
            _ => {}
        }
        let (seq, ts) = (header.sequence_number, header.timestamp);
        let mut keyframe: Option<bool> = None;
        let bytes = packet.len() as u64;

        for (_, sub) in &mut track.subscriptions {
            if !sub.connected {
                stats.drops.subscriber_disconnected += 1;
                continue;
            }
            if sub.paused {
                stats.drops.paused += 1;
                continue;
            }
            let rewritten = if sub.relay {
                // The other side chooses layers and starts at keyframes itself: pass it through.
                if sub.max_layer.is_some_and(|max| layer > max) {
                    stats.drops.other_layer += 1;
                    continue;
                }
                (header.ssrc, seq, ts)
            } else {
                let (seq, ts) = match sub.current {
                    Some(current) if current == layer => match sub.rewrite.map(seq, ts, now) {
                        Mapped::Send(seq, ts) => (seq, ts),
                        Mapped::Stale => {
                            stats.drops.waiting_for_keyframe += 1;
                            continue;
                        }
                        Mapped::Discontinuity => {
                            sub.rewrite.start_segment(seq, ts, now, clock_rate)
                        }
                    },
                    current if sub.target == layer && (switchable || current.is_none()) => {
                        if !*keyframe.get_or_insert_with(|| format.is_keyframe_start(payload)) {
                            stats.drops.waiting_for_keyframe += 1;
                            continue;
                        }
                        let rewritten = sub.rewrite.start_segment(seq, ts, now, clock_rate);
                        sub.current = Some(layer);
                        if current.is_some() {
                            stats.layer_switches += 1;
                            debug!(subscriber = %sub.subscriber, track = %track.id, layer, "layer switched");
                        }
                        if sub.announced != layer {
                            sub.announced = layer;
                            events.push_back(Event::Notify {
                                to: sub.subscriber,
                                notification: Notification::LayerSwitched {
                                    track: track.id,
                                    layer,
                                },
                            });
                        }
                        rewritten
                    }
                    _ => {
                        stats.drops.other_layer += 1;
                        continue;
                    }
                };
                (sub.ssrc, seq, ts)
            };
            stats.packets_forwarded += 1;
            stats.bytes_forwarded += bytes;
            out(Forward::new(
                sub.subscriber,
                sub.media,
                track.id,
                layer,
                packet,
                rewritten,
            ));
        }

        // A keyframe answers every request held back for this layer.
        let l = &mut track.layers[usize::from(layer)];
        if l.pending
            && switchable
            && *keyframe.get_or_insert_with(|| format.is_keyframe_start(payload))
        {
            l.pending = false;
            if let Some(due) = l.pending_due.take() {
                timers.remove(&(due, Timer::Keyframe(track.id, layer)));
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // Mutators: membership.

    /// `participant` joins `room`, creating it if needed. Returns what the joiner should see;
    /// every other member gets [`Notification::ParticipantJoined`].
    pub fn join(
        &mut self,
        participant: ParticipantId,
        room: &str,
        meta: ParticipantMeta,
        now: Instant,
    ) -> Result<RoomSnapshot, SfuError> {
        let _ = now;
        if self.participants.contains_key(&participant) {
            return Err(SfuError::AlreadyJoined(participant));
        }
        if room.is_empty() {
            return Err(SfuError::InvalidRoomName);
        }
        match self.rooms.get(room) {
            Some(r) if r.participants.len() >= self.config.max_participants_per_room => {
                return Err(SfuError::RoomFull {
                    max: self.config.max_participants_per_room,
                });
            }
            None if self.rooms.len() >= self.config.max_rooms => {
                return Err(SfuError::TooManyRooms {
                    max: self.config.max_rooms,
                });
            }
            _ => {}
        }
        let name = RoomName::from(room);
        if !self.rooms.contains_key(room) {
            self.rooms.insert(
                name.clone(),
                Room {
                    participants: Vec::new(),
                    relays: Vec::new(),
                    tracks: Vec::new(),
                },
            );
            self.stats.rooms += 1;
        }
        let p = Participant {
            room: name.clone(),
            meta,
            disconnected_until: None,
            published: Vec::new(),
            subscriptions: Vec::new(),
            alloc: layers::AllocState::default(),
            relay: false,
        };
        let info = participant_info(participant, &p);
        self.participants.insert(participant, p);
        self.stats.participants += 1;
        let others = self.room_members(&name, participant);
        if let Some(r) = self.rooms.get_mut(room) {
            r.participants.push(participant);
        }
        for &other in &others {
            self.notify(other, Notification::ParticipantJoined(info.clone()));
        }
        debug!(%participant, room = %name, "joined");
        Ok(self.snapshot(participant))
    }

    /// `participant` joins the existing `room` as a **relay member**: the local end of a link to
    /// another instance holding part of the same room. Returns the room as it is (every
    /// ordinary member and every track).
    ///
    /// A relay member:
    ///
    /// - receives every notification the room produces about others, like any member (joins,
    ///   leaves, tracks published, unpublished and muted);
    /// - is invisible: no snapshot lists it, nobody is told of its join or leave, and it counts
    ///   neither towards `max_participants_per_room` nor in [`SfuStats::participants`] (it has
    ///   its own gauge, [`SfuStats::relays`]);
    /// - subscribes like others, but its subscriptions pass every layer through unchanged (the
    ///   publisher's SSRC, sequence numbers and timestamps; [`Forward::layer`] says which
    ///   layer), from the next packet, with no layer choice: the other side republishes the track
    ///   with the same layer media ids ([`track_spec`](Self::track_spec)) and chooses layers for
    ///   its own subscribers, asking for keyframes through
    ///   [`request_keyframe_from`](Self::request_keyframe_from).
    ///   [`set_layer_preference`](Self::set_layer_preference) caps the layers passed through;
    ///   bandwidth estimates are kept but unused. `max_subscriptions_per_participant` does not
    ///   apply: a relay may need every track of the room, which the room's own limits bound;
    /// - never publishes ([`SfuError::RelayCannotPublish`]): tracks of the other side are
    ///   published by ordinary "shadow" participants joined with [`join`](Self::join);
    /// - does not keep the room alive: when its last ordinary member goes, the room closes and
    ///   each relay member is removed with it, with [`Event::ParticipantRemoved`] and
    ///   [`LeaveReason::RoomClosed`]. That is also why the room must exist already
    ///   ([`SfuError::UnknownRoom`]).
    ///
    /// It leaves, disconnects and reconnects like any participant, silently for the others.
    pub fn join_relay(
        &mut self,
        participant: ParticipantId,
        room: &str,
        now: Instant,
    ) -> Result<RoomSnapshot, SfuError> {
        let _ = now;
        if self.participants.contains_key(&participant) {
            return Err(SfuError::AlreadyJoined(participant));
        }
        if room.is_empty() {
            return Err(SfuError::InvalidRoomName);
        }
        let Some(r) = self.rooms.get_mut(room) else {
            return Err(SfuError::UnknownRoom(RoomName::from(room)));
        };
        r.relays.push(participant);
        let name = RoomName::from(room);
        self.participants.insert(
            participant,
            Participant {
                room: name.clone(),
                meta: ParticipantMeta::default(),
                disconnected_until: None,
                published: Vec::new(),
                subscriptions: Vec::new(),
                alloc: layers::AllocState::default(),
                relay: true,
            },
        );
        self.stats.relays += 1;
        debug!(%participant, room = %name, "relay joined");
        Ok(self.snapshot(participant))
    }

    /// `participant` leaves its room: its tracks are unpublished (everyone else gets
    /// [`Notification::TrackUnpublished`], and subscriptions to them end), its subscriptions end,
    /// and the others get [`Notification::ParticipantLeft`] (not for a relay member, which nobody
    /// knew of). The room goes when its last ordinary member leaves, and its relay members with
    /// it ([`Event::ParticipantRemoved`] with [`LeaveReason::RoomClosed`] for each). No
    /// [`Event::ParticipantRemoved`] is produced for `participant` itself: the caller knows.
    pub fn leave(
        &mut self,
        participant: ParticipantId,
        reason: LeaveReason,
        now: Instant,
    ) -> Result<(), SfuError> {
        if !self.participants.contains_key(&participant) {
            return Err(SfuError::UnknownParticipant(participant));
        }
        debug!(%participant, ?reason, "left");
        let relays = self.remove_participant(participant, reason, now);
        self.relays_removed(relays);
        Ok(())
    }

    /// The participant's connection is lost: its grace period starts. It stays in its room with
    /// its tracks and subscriptions, but nothing is forwarded to it and notifications for it are
    /// dropped. Calling it again while disconnected changes nothing (the first deadline holds).
    pub fn disconnect(&mut self, participant: ParticipantId, now: Instant) -> Result<(), SfuError> {
        let grace = self.config.grace_period;
        let p = self
            .participants
            .get_mut(&participant)
            .ok_or(SfuError::UnknownParticipant(participant))?;
        if p.disconnected_until.is_some() {
            return Ok(());
        }
        let deadline = now + grace;
        p.disconnected_until = Some(deadline);
        self.timers.insert((deadline, Timer::Grace(participant)));
        self.set_subscriptions_connected(participant, false);
        debug!(%participant, "disconnected");
        Ok(())
    }

    /// The participant is back (a resumed session). Cancels its grace period and returns the room
    /// as it is now, its tracks and its subscriptions (same media ids and SSRCs as before). Asks
    /// publishers for keyframes for its video subscriptions (not a relay member's: the other side
    /// asks for what its subscribers need), and sends keyframe requests for its
    /// own tracks that waited while it was away. Also accepted for a connected participant (a
    /// resume that raced the loss detection): it then only returns the snapshot and asks for
    /// keyframes.
    pub fn reconnect(
        &mut self,
        participant: ParticipantId,
        now: Instant,
    ) -> Result<ResumeSnapshot, SfuError> {
        let p = self
            .participants
            .get_mut(&participant)
            .ok_or(SfuError::UnknownParticipant(participant))?;
        if let Some(deadline) = p.disconnected_until.take() {
            self.timers.remove(&(deadline, Timer::Grace(participant)));
            self.set_subscriptions_connected(participant, true);
        }
        let p = &self.participants[&participant];
        let mut wanted = Vec::new();
        // A relay's other side asks for the keyframes its own subscribers need.
        for r in p.subscriptions.iter().filter(|_| !p.relay) {
            let track = &self.tracks[r.track];
            if track.kind == TrackKind::Video {
                wanted.push((
                    r.track,
                    track.subscriptions[r.slot].keyframe_layer(track.format),
                ));
            }
        }
        for &slot in &p.published {
            for (layer, l) in self.tracks[slot].layers.iter().enumerate() {
                if l.pending && l.pending_due.is_none() {
                    wanted.push((slot, layer as u8));
                }
            }
        }
        for (slot, layer) in wanted {
            self.request_upstream(slot, layer, now);
        }
        debug!(%participant, "reconnected");
        let p = &self.participants[&participant];
        let published = p
            .published
            .iter()
            .map(|&slot| self.tracks[slot].info())
            .collect();
        let subscriptions = p
            .subscriptions
            .iter()
            .map(|r| {
                let sub = &self.tracks[r.track].subscriptions[r.slot];
                SubscriptionInfo {
                    track: self.tracks[r.track].id,
                    media: sub.media,
                    ssrc: sub.ssrc,
                    layer: sub.current.unwrap_or(sub.target),
                    paused: sub.paused,
                }
            })
            .collect();
        Ok(ResumeSnapshot {
            room: self.snapshot(participant),
            published,
            subscriptions,
        })
    }

    // ---------------------------------------------------------------------------------------
    // Mutators: tracks.

    /// `participant` publishes a track. Layers: 1 to 3, lowest first, exactly 1 for audio; their
    /// media ids unique among the publisher's live layers. Every other member gets
    /// [`Notification::TrackPublished`]. A relay member may not publish
    /// ([`SfuError::RelayCannotPublish`]).
    pub fn publish(
        &mut self,
        participant: ParticipantId,
        spec: TrackSpec,
        now: Instant,
    ) -> Result<TrackId, SfuError> {
        self.publish_with(participant, spec, None, now)
    }

    /// [`publish`](Self::publish), with the track id `id` rather than a fresh one: for the
    /// stand-in of a track published on another instance of the room, so that clients see one
    /// id for it everywhere. Refused when the id is in use ([`SfuError::TrackIdInUse`]) or 0.
    pub fn publish_as(
        &mut self,
        participant: ParticipantId,
        spec: TrackSpec,
        id: TrackId,
        now: Instant,
    ) -> Result<TrackId, SfuError> {
        if id.0 == 0 || self.track_index.contains_key(&id) {
            return Err(SfuError::TrackIdInUse(id));
        }
        self.publish_with(participant, spec, Some(id), now)
    }

    fn publish_with(
        &mut self,
        participant: ParticipantId,
        spec: TrackSpec,
        id: Option<TrackId>,
        now: Instant,
    ) -> Result<TrackId, SfuError> {
        let _ = now;
        let p = self
            .participants
            .get(&participant)
            .ok_or(SfuError::UnknownParticipant(participant))?;
        if p.relay {
            return Err(SfuError::RelayCannotPublish(participant));
        }
        if p.published.len() >= self.config.max_tracks_per_participant {
            return Err(SfuError::TooManyTracks {
                max: self.config.max_tracks_per_participant,
            });
        }
        self.validate_layers(participant, &spec)?;
        if spec.codec.clock_rate == 0 {
            return Err(SfuError::InvalidCodec("clock rate is zero"));
        }
        let id = match id {
            Some(id) => id,
            None => loop {
                let candidate = TrackId(self.rng.random());
                if candidate.0 != 0 && !self.track_index.contains_key(&candidate) {
                    break candidate;
                }
            },
        };
        let format = match spec.kind {
            TrackKind::Audio => PayloadFormat::Audio,
            TrackKind::Video => PayloadFormat::video(&spec.codec.name),
        };
        let room = p.room.clone();
        let track = Track {
            id,
            owner: participant,
            room: room.clone(),
            kind: spec.kind,
            format,
            codec: spec.codec,
            source: spec.source,
            muted: spec.muted,
            last_voice: None,
            rates: LayerRates::default(),
            layers: spec
                .layers
                .iter()
                .map(|&spec| Layer {
                    spec,
                    last_request: None,
                    pending: false,
                    pending_due: None,
                })
                .collect(),
            subscriptions: Slab::new(),
        };
        let info = track.info();
        let slot = self.tracks.insert(track);
        self.track_index.insert(id, slot);
        for (layer, l) in spec.layers.iter().enumerate() {
            self.incoming
                .insert((participant, l.media), (slot, layer as u8));
        }
        if let Some(p) = self.participants.get_mut(&participant) {
            p.published.push(slot);
        }
        if let Some(r) = self.rooms.get_mut(&room) {
            r.tracks.push(slot);
        }
        self.stats.tracks += 1;
        for other in self.room_members(&room, participant) {
            self.notify(other, Notification::TrackPublished(info.clone()));
        }
        debug!(%participant, track = %id, kind = ?info.kind, codec = %info.codec.name, layers = info.layers.len(), "published");
        Ok(id)
    }

    /// `participant` stops publishing `track`: subscriptions to it end and every other member
    /// gets [`Notification::TrackUnpublished`].
    pub fn unpublish(
        &mut self,
        participant: ParticipantId,
        track: TrackId,
        now: Instant,
    ) -> Result<(), SfuError> {
        let slot = self.owned_track(participant, track)?;
        self.remove_track(slot, now);
        debug!(%participant, %track, "unpublished");
        Ok(())
    }

    /// `participant` mutes or unmutes its `track`; on a change, every other member gets
    /// [`Notification::TrackMuted`]. Forwarding is unaffected (a muted publisher sends little or
    /// nothing).
    pub fn set_muted(
        &mut self,
        participant: ParticipantId,
        track: TrackId,
        muted: bool,
        now: Instant,
    ) -> Result<(), SfuError> {
        let slot = self.owned_track(participant, track)?;
        let t = &mut self.tracks[slot];
        if t.muted == muted {
            return Ok(());
        }
        t.muted = muted;
        let room = t.room.clone();
        let subscribers: Vec<ParticipantId> =
            t.subscriptions.iter().map(|(_, s)| s.subscriber).collect();
        for other in self.room_members(&room, participant) {
            self.notify(other, Notification::TrackMuted { track, muted });
        }
        // A muted video costs its subscribers nothing; unmuted, it counts again.
        for subscriber in subscribers {
            self.retarget(subscriber, now, None);
        }
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // Mutators: subscriptions.

    /// `subscriber` subscribes to `track`, optionally capped at `max_layer`. Allocates the
    /// outgoing media id (lowest free from 1) and SSRC (random, unique for the subscriber) and
    /// picks the starting layer from the subscriber's bandwidth estimate (the cap or the top
    /// layer when it has none). Audio forwards from the next packet; video from the next
    /// keyframe of its layer, which is requested from the publisher now (throttled).
    ///
    /// A relay member's subscription is different (see [`join_relay`](Self::join_relay)): every
    /// layer up to `max_layer` passes through unchanged from the next packet, nothing is
    /// requested, the returned layer is the highest passed through, and the returned SSRC is
    /// reserved but unused (packets keep the publisher's).
    ///
    /// The subscription has the default priority of its track's source
    /// ([`default_priority`]); [`subscribe_with_priority`](Self::subscribe_with_priority) sets
    /// one.
    pub fn subscribe(
        &mut self,
        subscriber: ParticipantId,
        track: TrackId,
        max_layer: Option<u8>,
        now: Instant,
    ) -> Result<SubscriptionInfo, SfuError> {
        self.subscribe_with_priority(subscriber, track, max_layer, None, now)
    }

    /// As [`subscribe`](Self::subscribe), with a priority (`None`: the default of the track's
    /// source). Under congestion the lowest-priority video is paused first and climbs last. The
    /// answer says whether the subscription starts paused (its budget does not cover even the
    /// lowest layer); the subscriber is not sent [`Notification::TrackPaused`] for that.
    pub fn subscribe_with_priority(
        &mut self,
        subscriber: ParticipantId,
        track: TrackId,
        max_layer: Option<u8>,
        priority: Option<u8>,
        now: Instant,
    ) -> Result<SubscriptionInfo, SfuError> {
        let p = self
            .participants
            .get(&subscriber)
            .ok_or(SfuError::UnknownParticipant(subscriber))?;
        let &slot = self
            .track_index
            .get(&track)
            .ok_or(SfuError::UnknownTrack(track))?;
        let t = &self.tracks[slot];
        if t.owner == subscriber {
            return Err(SfuError::OwnTrack(track));
        }
        if t.room != p.room {
            return Err(SfuError::NotInRoom(track));
        }
        if p.subscriptions.iter().any(|r| r.track == slot) {
            return Err(SfuError::AlreadySubscribed(track));
        }
        let max = self.config.max_subscriptions_per_participant;
        if !p.relay && p.subscriptions.len() >= max {
            return Err(SfuError::TooManySubscriptions { max });
        }
        let media = lowest_free_media(&p.subscriptions);
        let ssrc = loop {
            let candidate: u32 = self.rng.random();
            if candidate != 0 && p.subscriptions.iter().all(|r| r.ssrc != candidate) {
                break candidate;
            }
        };
        let first_seq: u16 = self.rng.random();
        let first_ts: u32 = self.rng.random();
        let connected = p.connected();
        let relay = p.relay;
        let kind = t.kind;
        let t = &mut self.tracks[slot];
        let sub_slot = t.subscriptions.insert(Subscription {
            subscriber,
            media,
            ssrc,
            connected,
            max_layer,
            target: 0,
            current: None,
            announced: 0,
            priority,
            paused: false,
            rewrite: Rewriter::new(first_seq, first_ts),
            relay,
        });
        if let Some(p) = self.participants.get_mut(&subscriber) {
            p.subscriptions.push(SubscriptionRef {
                track: slot,
                slot: sub_slot,
                media,
                ssrc,
            });
        }
        self.stats.subscriptions += 1;
        if kind == TrackKind::Video || relay {
            self.retarget(subscriber, now, Some((slot, sub_slot)));
        }
        let sub = &mut self.tracks[slot].subscriptions[sub_slot];
        sub.announced = sub.target;
        debug!(%subscriber, %track, %media, layer = sub.target, "subscribed");
        Ok(SubscriptionInfo {
            track,
            media,
            ssrc,
            layer: sub.target,
            paused: sub.paused,
        })
    }

    /// `subscriber` stops receiving `track`. Its media id becomes free for reuse.
    pub fn unsubscribe(
        &mut self,
        subscriber: ParticipantId,
        track: TrackId,
        now: Instant,
    ) -> Result<(), SfuError> {
        let (r, index) = self.find_subscription(subscriber, track)?;
        self.tracks[r.track].subscriptions.remove(r.slot);
        if let Some(p) = self.participants.get_mut(&subscriber) {
            p.subscriptions.remove(index);
        }
        self.stats.subscriptions -= 1;
        // The bandwidth it used may now lift the others.
        self.retarget(subscriber, now, None);
        debug!(%subscriber, %track, "unsubscribed");
        Ok(())
    }

    /// Caps the layer of one subscription (`None`: the best the bandwidth allows). A cap above the
    /// track's top layer means the top layer.
    pub fn set_layer_preference(
        &mut self,
        subscriber: ParticipantId,
        track: TrackId,
        max_layer: Option<u8>,
        now: Instant,
    ) -> Result<(), SfuError> {
        let (r, _) = self.find_subscription(subscriber, track)?;
        self.tracks[r.track].subscriptions[r.slot].max_layer = max_layer;
        self.retarget(subscriber, now, None);
        Ok(())
    }

    /// Sets the priority of one subscription (`None`: the default of the track's source) and
    /// allocates again.
    pub fn set_priority(
        &mut self,
        subscriber: ParticipantId,
        track: TrackId,
        priority: Option<u8>,
        now: Instant,
    ) -> Result<(), SfuError> {
        let (r, _) = self.find_subscription(subscriber, track)?;
        self.tracks[r.track].subscriptions[r.slot].priority = priority;
        self.retarget(subscriber, now, None);
        Ok(())
    }

    /// The subscriber's downstream estimate (see [`crate::bwe`]), fed at the gateway's steady
    /// tick. When it is a real change (it moved by [`ESTIMATE_STEP_PERCENT`](crate::bwe::ESTIMATE_STEP_PERCENT) from the last
    /// allocation's, or its state changed) the subscriber's video subscriptions are allocated
    /// again: audio is reserved first; each video gets its lowest live layer by priority, and
    /// the lowest-priority videos are paused when those do not fit
    /// ([`Notification::TrackPaused`]); then the highest priority climbs first. A climb needs
    /// the layer's increment plus `layer_up_headroom_percent` of its cost, a clear link, and
    /// the end of the cooldown that a forced fall starts (doubled after a failed climb). A
    /// changed target takes effect at that layer's next keyframe, which is requested
    /// (throttled). Returns whether it allocated.
    pub fn set_estimate(
        &mut self,
        subscriber: ParticipantId,
        estimate: Estimate,
        now: Instant,
    ) -> Result<bool, SfuError> {
        if !self.participants.contains_key(&subscriber) {
            return Err(SfuError::UnknownParticipant(subscriber));
        }
        Ok(self.apply_estimate(subscriber, estimate, now))
    }

    /// Forgets `subscriber`'s estimate: its subscriptions go back to their caps (paused ones
    /// resume, with `TrackResumed`) and a running probe stops. For a leg whose estimate can no
    /// longer be trusted to climb again (its receiver stopped reporting what a probe sends).
    /// Returns whether it had one.
    pub fn clear_estimate(
        &mut self,
        subscriber: ParticipantId,
        now: Instant,
    ) -> Result<bool, SfuError> {
        if !self.participants.contains_key(&subscriber) {
            return Err(SfuError::UnknownParticipant(subscriber));
        }
        Ok(self.drop_estimate(subscriber, now))
    }

    /// A bare bandwidth figure as the estimate (a clear link that may carry
    /// `bits_per_second`): for a leg with no congestion signals of its own. See
    /// [`set_estimate`](Self::set_estimate).
    pub fn set_bandwidth(
        &mut self,
        subscriber: ParticipantId,
        bits_per_second: u64,
        now: Instant,
    ) -> Result<(), SfuError> {
        self.set_estimate(subscriber, Estimate::clear(bits_per_second), now)
            .map(drop)
    }

    /// `subscriber` asks for a keyframe on its subscription to `track` (a PLI or a QUIC
    /// `KeyframeRequest`). Routed to the publisher for the layer the subscription wants,
    /// throttled per track and layer; for a relay member's subscription, for every layer it
    /// passes through (use [`request_keyframe_from`](Self::request_keyframe_from) to ask for
    /// one). Ignored for audio.
    pub fn request_keyframe(
        &mut self,
        subscriber: ParticipantId,
        track: TrackId,
        now: Instant,
    ) -> Result<(), SfuError> {
        let (r, _) = self.find_subscription(subscriber, track)?;
        let t = &self.tracks[r.track];
        if t.kind == TrackKind::Video {
            let sub = &t.subscriptions[r.slot];
            let layers = if sub.relay {
                0..=sub.target
            } else {
                let layer = sub.keyframe_layer(t.format);
                layer..=layer
            };
            for layer in layers {
                self.request_upstream(r.track, layer, now);
            }
        }
        Ok(())
    }

    /// Like [`request_keyframe`](Self::request_keyframe), naming the subscription by the media id
    /// it is forwarded on (what a QUIC subscriber's datagram `KeyframeRequest` carries).
    pub fn request_keyframe_for_media(
        &mut self,
        subscriber: ParticipantId,
        media: MediaId,
        now: Instant,
    ) -> Result<(), SfuError> {
        let p = self
            .participants
            .get(&subscriber)
            .ok_or(SfuError::UnknownParticipant(subscriber))?;
        let r = p
            .subscriptions
            .iter()
            .find(|r| r.media == media)
            .ok_or(SfuError::UnknownMedia(media))?;
        let track = self.tracks[r.track].id;
        self.request_keyframe(subscriber, track, now)
    }

    /// Asks `publisher` for a keyframe of the layer it sends on its media id `media`, as if a
    /// subscriber of that layer had asked: throttled per track and layer
    /// (`keyframe_request_interval`) together with subscribers' requests, held while the
    /// publisher is disconnected, and sent as [`Event::KeyframeRequest`]. For a relay's other
    /// side, whose subscribers ask the shadow publisher for a layer by this same media id.
    /// Ignored for audio.
    ///
    /// Errors: the publisher is unknown, or none of its live layers uses `media`
    /// ([`SfuError::UnknownMedia`]).
    pub fn request_keyframe_from(
        &mut self,
        publisher: ParticipantId,
        media: MediaId,
        now: Instant,
    ) -> Result<(), SfuError> {
        if !self.participants.contains_key(&publisher) {
            return Err(SfuError::UnknownParticipant(publisher));
        }
        let &(slot, layer) = self
            .incoming
            .get(&(publisher, media))
            .ok_or(SfuError::UnknownMedia(media))?;
        if self.tracks[slot].kind == TrackKind::Video {
            self.request_upstream(slot, layer, now);
        }
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // Internals.

    /// Queues a notification, or drops it (counted) when the recipient is disconnected.
    fn notify(&mut self, to: ParticipantId, notification: Notification) {
        if self
            .participants
            .get(&to)
            .is_some_and(Participant::connected)
        {
            self.events.push_back(Event::Notify { to, notification });
        } else {
            self.stats.notifications_dropped += 1;
        }
    }

    /// Who hears about what happens in `room`: its members other than `except`, ordinary ones
    /// in join order, then relay members in join order.
    fn room_members(&self, room: &RoomName, except: ParticipantId) -> Vec<ParticipantId> {
        self.rooms
            .get(room)
            .map(|r| {
                r.participants
                    .iter()
                    .chain(&r.relays)
                    .copied()
                    .filter(|&p| p != except)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn snapshot(&self, participant: ParticipantId) -> RoomSnapshot {
        let p = &self.participants[&participant];
        let room = &self.rooms[&p.room];
        RoomSnapshot {
            room: p.room.clone(),
            you: participant_info(participant, p),
            participants: room
                .participants
                .iter()
                .filter(|&&other| other != participant)
                .map(|&other| participant_info(other, &self.participants[&other]))
                .collect(),
            tracks: room
                .tracks
                .iter()
                .map(|&slot| &self.tracks[slot])
                .filter(|t| t.owner != participant)
                .map(Track::info)
                .collect(),
        }
    }

    fn validate_layers(
        &self,
        participant: ParticipantId,
        spec: &TrackSpec,
    ) -> Result<(), SfuError> {
        let layers = &spec.layers;
        if layers.is_empty() {
            return Err(SfuError::InvalidLayers("a track needs at least one layer"));
        }
        if layers.len() > MAX_LAYERS {
            return Err(SfuError::InvalidLayers("a track has at most three layers"));
        }
        if spec.kind == TrackKind::Audio && layers.len() != 1 {
            return Err(SfuError::InvalidLayers(
                "an audio track has exactly one layer",
            ));
        }
        for (i, l) in layers.iter().enumerate() {
            if layers[..i].iter().any(|o| o.media == l.media)
                || self.incoming.contains_key(&(participant, l.media))
            {
                return Err(SfuError::DuplicateMedia(l.media));
            }
            if i > 0 {
                let below = layers[i - 1].max_bitrate;
                if below != 0 && l.max_bitrate != 0 && l.max_bitrate < below {
                    return Err(SfuError::InvalidLayers(
                        "layers must be listed lowest first",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The slot of `track`, checking that `participant` publishes it.
    fn owned_track(&self, participant: ParticipantId, track: TrackId) -> Result<usize, SfuError> {
        if !self.participants.contains_key(&participant) {
            return Err(SfuError::UnknownParticipant(participant));
        }
        let &slot = self
            .track_index
            .get(&track)
            .ok_or(SfuError::UnknownTrack(track))?;
        if self.tracks[slot].owner != participant {
            return Err(SfuError::NotOwner(track));
        }
        Ok(slot)
    }

    /// The subscriber's link to its subscription to `track`, and its index in its list.
    fn find_subscription(
        &self,
        subscriber: ParticipantId,
        track: TrackId,
    ) -> Result<(SubscriptionRef, usize), SfuError> {
        let p = self
            .participants
            .get(&subscriber)
            .ok_or(SfuError::UnknownParticipant(subscriber))?;
        let &slot = self
            .track_index
            .get(&track)
            .ok_or(SfuError::UnknownTrack(track))?;
        p.subscriptions
            .iter()
            .enumerate()
            .find(|(_, r)| r.track == slot)
            .map(|(i, r)| (*r, i))
            .ok_or(SfuError::NotSubscribed(track))
    }

    fn set_subscriptions_connected(&mut self, participant: ParticipantId, connected: bool) {
        if let Some(p) = self.participants.get(&participant) {
            for r in &p.subscriptions {
                self.tracks[r.track].subscriptions[r.slot].connected = connected;
            }
        }
    }

    /// Removes a participant that exists, with everything it owns, notifying the others (unless
    /// it is a relay member). When it was the room's last ordinary member, the room closes and
    /// its relay members are removed too: they are returned, for the caller to announce with
    /// [`relays_removed`](Self::relays_removed) once it has announced its own removal.
    fn remove_participant(
        &mut self,
        participant: ParticipantId,
        reason: LeaveReason,
        now: Instant,
    ) -> Vec<ParticipantId> {
        let Some(p) = self.participants.get_mut(&participant) else {
            return Vec::new();
        };
        let subscriptions = std::mem::take(&mut p.subscriptions);
        let published = p.published.clone();
        if let Some(deadline) = p.disconnected_until {
            self.timers.remove(&(deadline, Timer::Grace(participant)));
        }
        let room = p.room.clone();
        let relay = p.relay;
        for r in &subscriptions {
            self.tracks[r.track].subscriptions.remove(r.slot);
            self.stats.subscriptions -= 1;
        }
        // The subscribers of the leaving participant's tracks may afford more elsewhere, but
        // only once the participant is gone: retargeting earlier could ask it for a keyframe of
        // one of its tracks not yet removed.
        let mut affected = Vec::new();
        for slot in published {
            affected.extend(self.remove_track_quietly(slot));
        }
        if !relay {
            for other in self.room_members(&room, participant) {
                self.notify(
                    other,
                    Notification::ParticipantLeft {
                        participant,
                        reason,
                    },
                );
            }
        }
        self.participants.remove(&participant);
        if relay {
            self.stats.relays -= 1;
        } else {
            self.stats.participants -= 1;
        }
        let mut relays = Vec::new();
        if let Some(r) = self.rooms.get_mut(&room) {
            r.participants.retain(|&o| o != participant);
            r.relays.retain(|&o| o != participant);
            if r.participants.is_empty() {
                // Relay members do not keep a room: they go with it. They subscribe to nothing
                // by now (only ordinary members publish, and none is left).
                relays = std::mem::take(&mut r.relays);
                self.rooms.remove(&room);
                self.stats.rooms -= 1;
                for &relay in &relays {
                    if let Some(p) = self.participants.remove(&relay) {
                        if let Some(deadline) = p.disconnected_until {
                            self.timers.remove(&(deadline, Timer::Grace(relay)));
                        }
                        self.stats.relays -= 1;
                        debug!(participant = %relay, room = %room, "relay removed with its room");
                    }
                }
            }
        }
        affected.sort_unstable();
        affected.dedup();
        for subscriber in affected {
            if self.participants.contains_key(&subscriber) {
                self.retarget(subscriber, now, None);
            }
        }
        relays
    }

    /// Announces the relay members [`remove_participant`](Self::remove_participant) removed
    /// with their room.
    fn relays_removed(&mut self, relays: Vec<ParticipantId>) {
        for participant in relays {
            self.events.push_back(Event::ParticipantRemoved {
                participant,
                reason: LeaveReason::RoomClosed,
            });
        }
    }

    /// Removes a track, ending its subscriptions and notifying the room; its subscribers are
    /// then retargeted (they may afford more elsewhere).
    fn remove_track(&mut self, slot: usize, now: Instant) {
        for subscriber in self.remove_track_quietly(slot) {
            self.retarget(subscriber, now, None);
        }
    }

    /// Removes a track, ending its subscriptions and notifying the room. Returns the subscribers
    /// it had, for the caller to retarget.
    fn remove_track_quietly(&mut self, slot: usize) -> Vec<ParticipantId> {
        let track = self.tracks.remove(slot);
        self.track_index.remove(&track.id);
        for (layer, l) in track.layers.iter().enumerate() {
            self.incoming.remove(&(track.owner, l.spec.media));
            if let Some(due) = l.pending_due {
                self.timers
                    .remove(&(due, Timer::Keyframe(track.id, layer as u8)));
            }
        }
        for (sub_slot, sub) in &track.subscriptions {
            if let Some(p) = self.participants.get_mut(&sub.subscriber) {
                p.subscriptions
                    .retain(|r| !(r.track == slot && r.slot == sub_slot));
            }
            self.stats.subscriptions -= 1;
        }
        if let Some(p) = self.participants.get_mut(&track.owner) {
            p.published.retain(|&s| s != slot);
        }
        if let Some(r) = self.rooms.get_mut(&track.room) {
            r.tracks.retain(|&s| s != slot);
        }
        self.stats.tracks -= 1;
        for other in self.room_members(&track.room, track.owner) {
            self.notify(
                other,
                Notification::TrackUnpublished {
                    track: track.id,
                    participant: track.owner,
                },
            );
        }
        track
            .subscriptions
            .iter()
            .map(|(_, sub)| sub.subscriber)
            .collect()
    }

    /// Sends a keyframe request for a track's layer to its publisher, unless one went within
    /// `keyframe_request_interval` (then it is held back until the window ends) or the publisher
    /// is disconnected (then it waits for its reconnect). A keyframe passing clears a held-back
    /// request.
    fn request_upstream(&mut self, slot: usize, layer: u8, now: Instant) {
        let interval = self.config.keyframe_request_interval;
        let track = &mut self.tracks[slot];
        let owner_connected = self
            .participants
            .get(&track.owner)
            .is_some_and(Participant::connected);
        let (id, owner) = (track.id, track.owner);
        let l = &mut track.layers[usize::from(layer)];
        if let Some(last) = l.last_request {
            let open = last + interval;
            if now < open {
                self.stats.keyframe_requests_throttled += 1;
                l.pending = true;
                if owner_connected && l.pending_due.is_none() {
                    l.pending_due = Some(open);
                    self.timers.insert((open, Timer::Keyframe(id, layer)));
                }
                return;
            }
        }
        if !owner_connected {
            l.pending = true;
            return;
        }
        l.last_request = Some(now);
        l.pending = false;
        if let Some(due) = l.pending_due.take() {
            self.timers.remove(&(due, Timer::Keyframe(id, layer)));
        }
        let media = l.spec.media;
        self.stats.keyframe_requests_sent += 1;
        self.events.push_back(Event::KeyframeRequest {
            to: owner,
            track: id,
            layer,
            media,
        });
    }
}

/// The lowest media id from 1 that none of `subscriptions` uses.
fn lowest_free_media(subscriptions: &[SubscriptionRef]) -> MediaId {
    let mut used: Vec<u32> = subscriptions.iter().map(|r| r.media.0).collect();
    used.sort_unstable();
    let mut candidate = 1;
    for id in used {
        if id == candidate {
            candidate += 1;
        } else if id > candidate {
            break;
        }
    }
    MediaId(candidate)
}

mod layers;
mod shed;
