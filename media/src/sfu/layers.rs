//! Layer choice: which simulcast layer each video subscription of a subscriber forwards, or
//! whether it is paused, given its bandwidth estimate, its caps, priorities and hysteresis.
//!
//! The choice itself is [`bwe::allocate`](crate::bwe::allocate) (floors by priority, pausing,
//! climbing with headroom); this module feeds it and keeps its state:
//!
//! - **Costs** are what each layer really costs (the publisher's measured rate; what it
//!   declared, defaults while neither is known), and a layer the publisher stopped sending for a
//!   second is not offered. Audio subscriptions are reserved first at their measured rate.
//! - **When**: on a real change only — an estimate that moved by [`bwe::ESTIMATE_STEP_PERCENT`] or
//!   changed state, a subscription or preference change, a layer that stopped or started, a
//!   cooldown that ended — plus every [`REFRESH`] to follow measured costs.
//! - **Hysteresis**: a climb needs headroom, a clear link (no queue building) and the end of the
//!   cooldown. A fall forced by the budget starts a cooldown: `layer_up_cooldown` after a climb
//!   held for [`CLIMB_HELD`] (or none); twice the last one after a failed climb (a fall within
//!   [`CLIMB_TRIAL`] of it), up to [`MAX_COOLDOWN`]; the same as the last one in between.
//!   Congestion within [`PROBE_GRACE`] of a climb (or of a probe that a queue stopped) lowers
//!   nothing: it is the climb's keyframe (or the probe's padding) draining.
//! - **Pausing**: a paused subscription forwards nothing and is told so
//!   ([`Notification::TrackPaused`]); when it resumes it starts again at a keyframe of its layer.
//!
//! A subscriber without an estimate gets each subscription's cap (the top layer unless capped):
//! nothing says its link is narrow.

use std::time::{Duration, Instant};

use super::{
    Event, MAX_LAYERS, Notification, ParticipantId, PauseReason, Sfu, Timer, Track, TrackKind,
};
use crate::bwe::{self, AllocatorConfig, Choice, Estimate, LinkState, VideoWant};

/// A fall forced by the budget this soon after a climb makes the climb a failure (and doubles
/// the cooldown).
pub const CLIMB_TRIAL: Duration = Duration::from_secs(10);

/// A climb held this long was a success: the next forced fall starts the cooldown afresh.
pub const CLIMB_HELD: Duration = Duration::from_secs(30);

/// The longest cooldown after failed climbs.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(64);

/// The longest probe cooldown after failed probes: an app-limited leg learns that its link
/// came back only by a probe, so a leg held low keeps being probed this often (a failed probe
/// costs a queue of [`PROBE_QUEUE_RISE`]).
pub(super) const MAX_PROBE_COOLDOWN: Duration = Duration::from_secs(4);

/// An estimate this far above the one at the last forced fall lifts the cooldown.
pub const CLEARLY_HIGHER_PERCENT: u64 = 50;

/// Every subscriber with an estimate is allocated again at least this often.
pub const REFRESH: Duration = Duration::from_secs(5);

/// How often layer liveness and ended cooldowns are looked at.
pub(super) const TICK: Duration = Duration::from_millis(250);

/// A link must have been clear this long before it is probed.
pub const PROBE_AFTER_CLEAR: Duration = Duration::from_secs(1);

/// A probe whose time is up succeeded if the estimate rose by this share; the next may follow
/// after [`PROBE_AFTER_SUCCESS`].
pub(super) const PROBE_RISE_PERCENT: u64 = 15;

/// A probe whose leg's queueing delay rose this much above where it started is building a
/// queue: it stops at once, as a failure (before the queue overflows into media losses).
pub const PROBE_QUEUE_RISE: Duration = Duration::from_millis(10);

/// The longest a forced fall holds probing back.
pub(super) const PROBE_AFTER_FALL: Duration = Duration::from_secs(8);

/// After a probe that a queue stopped, this long the leg's congestion is taken for the
/// probe's: its padding stopped, the queue it built drains, and the media that the leg carried
/// before it keeps its layers. The same after a climb: the new layer starts with a keyframe,
/// a burst that queues for a moment (on top of what a probe that led to the climb left in the
/// queue), and a leg that reads that queue as congestion would undo the climb it just made. A
/// congestion that outlasts this is the link's (a climb it undoes counts as failed).
pub const PROBE_GRACE: Duration = Duration::from_millis(500);

/// The pause after a successful probe.
pub(super) const PROBE_AFTER_SUCCESS: Duration = Duration::from_millis(500);

/// How long a probe lasts at most.
pub const PROBE_DURATION: Duration = Duration::from_secs(3);

/// The least and the most padding a probe sends, bits per second (and at most the link's
/// acknowledged rate, above the least).
pub const PROBE_PADDING_BPS: (u64, u64) = (100_000, 5_000_000);

/// A layer's cost for an audio track whose rate is not measured yet, bits per second.
pub const DEFAULT_AUDIO_COST: u64 = 40_000;

/// The priority of a subscription that asked for none: screen shares over everything else.
#[must_use]
pub fn default_priority(source: &str) -> u8 {
    if source.eq_ignore_ascii_case("screen") || source.eq_ignore_ascii_case("screen_share") {
        200
    } else {
        100
    }
}

/// One subscriber's allocation state.
#[derive(Debug, Clone, Default)]
pub(super) struct AllocState {
    /// Its latest estimate, if the gateway gave one.
    pub estimate: Option<Estimate>,
    /// The budget and link state of the last allocation run.
    last_run: Option<Estimate>,
    /// When it last ran.
    last_run_at: Option<Instant>,
    /// Whether climbing was allowed in that run.
    last_may_climb: bool,
    /// The current cooldown (it doubles after failed climbs).
    cooldown: Duration,
    /// No new step before this…
    blocked_until: Option<Instant>,
    /// …unless the estimate is [`CLEARLY_HIGHER_PERCENT`] above this one, at the last forced
    /// fall (conditions changed: a cooldown guards against flapping at one level, not against
    /// a link that came back).
    fell_at_bps: u64,
    /// When a subscription last climbed or resumed.
    last_climb: Option<Instant>,
    /// What the last run used and could not give (for probing).
    pub outcome: bwe::Outcome,
    /// What its audio subscriptions take, as reserved by the last run.
    audio_bps: u64,
    /// The layers of its video subscriptions (live ones) at the last run, to see them change.
    pub live_layers: u64,
    /// Since when the link has been clear.
    clear_since: Option<Instant>,
    /// The end of the probe running, if one is.
    probe_until: Option<Instant>,
    /// The estimate when the running probe started.
    probe_from: u64,
    /// The queueing delay when the running probe started.
    probe_queue: Duration,
    /// The running probe's goal and the rate it asks the leg for now (it ramps up to the goal).
    probe_goal: u64,
    probe_level: u64,
    /// What the running probe must reach for the next single step (a resume or a climb): a
    /// probe that reached it before a queue stopped it did its work.
    probe_step_goal: u64,
    /// Whether the last probe failed.
    probe_failed: bool,
    /// Until then, a probe that a queue stopped (or a climb's keyframe) may still be what the
    /// leg's signals show: they do not lower the media's layers (see [`PROBE_GRACE`]).
    grace_until: Option<Instant>,
    /// When the running probe last stepped up (it steps once per [`TICK`]).
    probe_stepped_at: Option<Instant>,
    /// No probe before this (the probe cooldown, doubled after each failed probe).
    probe_blocked_until: Option<Instant>,
    /// The current probe cooldown.
    probe_cooldown: Duration,
}

impl AllocState {
    /// The padding the running probe asks for: its level above what the media takes now,
    /// within [`PROBE_PADDING_BPS`].
    fn probe_padding(&self) -> u64 {
        self.probe_level
            .saturating_sub(self.outcome.used_bps + self.audio_bps)
            .clamp(PROBE_PADDING_BPS.0, PROBE_PADDING_BPS.1)
    }

    /// Whether new steps are allowed at `now` as far as the cooldown goes.
    fn unblocked(&self, now: Instant) -> bool {
        self.blocked_until.is_none_or(|until| now >= until)
            || self.estimate.is_some_and(|e| {
                e.available_bps * 100 >= self.fell_at_bps * (100 + CLEARLY_HIGHER_PERCENT)
            })
    }
}

/// The live layers of `track` at `now` as a bit set; every declared layer while the track has
/// not been heard at all (nothing to learn from yet), none while it is silent or muted.
pub(super) fn live_layers(track: &Track, now: Instant) -> [bool; MAX_LAYERS] {
    let mut alive = [false; MAX_LAYERS];
    if track.muted {
        return alive;
    }
    let heard = track.rates.heard();
    for (layer, a) in alive.iter_mut().enumerate().take(track.layers.len()) {
        *a = !heard || track.rates.alive(layer as u8, now);
    }
    if heard && !alive.contains(&true) {
        return [false; MAX_LAYERS];
    }
    alive
}

fn mask(alive: &[bool; MAX_LAYERS]) -> u64 {
    alive
        .iter()
        .enumerate()
        .fold(0, |m, (i, &a)| if a { m | 1 << i } else { m })
}

impl Sfu {
    /// The live layers of every video subscription in `subscriptions`, folded into one word
    /// (to see a change, not to decode).
    fn live_mask(&self, subscriptions: &[super::SubscriptionRef], now: Instant) -> u64 {
        let mut m = 0u64;
        for (k, r) in subscriptions.iter().enumerate() {
            let track = &self.tracks[r.track];
            if track.kind == TrackKind::Video {
                m ^= mask(&live_layers(track, now)).rotate_left(((k * 3) % 64) as u32);
            }
        }
        m
    }

    /// Re-picks the targets of `subscriber`'s video subscriptions, pauses and resumes them, and
    /// asks for keyframes of the layers that changed. A relay member's targets are its caps
    /// (the highest layer passed through), and nothing is asked. `fresh` names a subscription
    /// being created (it has no old choice, it always wants a first keyframe, and a pause is not
    /// notified: the caller tells the subscriber with its answer).
    pub(super) fn retarget(
        &mut self,
        subscriber: ParticipantId,
        now: Instant,
        fresh: Option<(usize, usize)>,
    ) {
        let Some(p) = self.participants.get(&subscriber) else {
            return;
        };
        if p.relay {
            // A relay passes through every layer up to its cap; the other side chooses.
            for r in &p.subscriptions {
                let track = &mut self.tracks[r.track];
                let top = track.top_layer();
                let sub = &mut track.subscriptions[r.slot];
                sub.target = sub.max_layer.map_or(top, |m| m.min(top));
            }
            return;
        }
        let estimate = p.alloc.estimate;
        let mut wants = Vec::new();
        let mut refs = Vec::new();
        let mut audio = 0u64;
        let live_mask = self.live_mask(&p.subscriptions, now);
        for r in &p.subscriptions {
            let track = &self.tracks[r.track];
            let sub = &track.subscriptions[r.slot];
            if track.kind != TrackKind::Video {
                if !track.muted {
                    audio += track.rates.rate(0).unwrap_or(DEFAULT_AUDIO_COST);
                }
                continue;
            }
            let top = track.top_layer();
            let cap = sub.max_layer.map_or(top, |m| m.min(top));
            let mut costs = [0; MAX_LAYERS];
            for (layer, (cost, l)) in costs.iter_mut().zip(&track.layers).enumerate() {
                *cost = track.rates.cost(layer as u8, l.spec.max_bitrate);
            }
            let alive = live_layers(track, now);
            wants.push(VideoWant {
                priority: sub
                    .priority
                    .unwrap_or_else(|| default_priority(&track.source)),
                // While load is shed, no higher than the ceiling.
                cap: self.layer_ceiling.map_or(cap, |ceiling| cap.min(ceiling)),
                costs,
                alive,
                old: if fresh == Some((r.track, r.slot)) {
                    None
                } else if sub.paused {
                    Some(Choice::Paused)
                } else {
                    Some(Choice::Layer(sub.target))
                },
            });
            refs.push((r.track, r.slot));
        }

        let p = self
            .participants
            .get_mut(&subscriber)
            .expect("looked up above");
        let choices: Vec<Choice> = match estimate {
            None => wants.iter().map(|w| Choice::Layer(w.cap)).collect(),
            Some(estimate) => {
                let a = &mut p.alloc;
                if a.cooldown.is_zero() {
                    a.cooldown = self.config.layer_up_cooldown;
                }
                let may_climb = estimate.state == LinkState::Clear && a.unblocked(now);
                let config = AllocatorConfig {
                    headroom_percent: u64::from(self.config.layer_up_headroom_percent),
                    ..AllocatorConfig::default()
                };
                // A learned policy, if one is configured, scales what the estimate allows.
                let scale = self
                    .config
                    .budget_policy
                    .and_then(|policy| policy.scale(&estimate))
                    .unwrap_or(1000);
                let budget =
                    (estimate.available_bps.saturating_mul(scale) / 1000).saturating_sub(audio);
                let mut out = Vec::with_capacity(wants.len());
                // New steps on evidence: what the leg has shown it carries, audio aside.
                let climb =
                    (estimate.proven_bps.saturating_mul(scale) / 1000).saturating_sub(audio);
                a.outcome = bwe::allocate(&wants, budget, climb, may_climb, &config, &mut out);
                a.audio_bps = audio;
                a.last_run = Some(estimate);
                a.last_run_at = Some(now);
                a.last_may_climb = may_climb;
                out
            }
        };
        p.alloc.live_layers = live_mask;

        // Apply: falls forced by the budget start (or grow) the cooldown; climbs are noted.
        let mut forced_fall = false;
        let mut climbed = false;
        let mut requests = Vec::new();
        let mut notes = Vec::new();
        for ((want, (slot, sub_slot)), choice) in wants.iter().zip(refs).zip(choices) {
            if want.old == Some(choice) {
                continue;
            }
            let track = &mut self.tracks[slot];
            let (id, format) = (track.id, track.format);
            let sub = &mut track.subscriptions[sub_slot];
            match (want.old, choice) {
                (Some(Choice::Layer(_)), Choice::Paused) => {
                    sub.paused = true;
                    forced_fall = true;
                    self.stats.pauses += 1;
                    notes.push(Notification::TrackPaused {
                        track: id,
                        reason: PauseReason::Bandwidth,
                    });
                }
                (None, Choice::Paused) => {
                    sub.paused = true;
                    self.stats.pauses += 1;
                }
                (Some(Choice::Paused), Choice::Layer(layer)) => {
                    sub.paused = false;
                    sub.target = layer;
                    // It starts again at a keyframe, as a new segment of the same stream.
                    sub.current = None;
                    climbed = true;
                    self.stats.resumes += 1;
                    notes.push(Notification::TrackResumed {
                        track: id,
                        reason: PauseReason::Bandwidth,
                    });
                    if sub.connected {
                        requests.push((slot, layer));
                    }
                }
                (old, Choice::Layer(layer)) => {
                    if let Some(Choice::Layer(old)) = old {
                        // A fall the subscriber asked for (a lower cap) is not forced.
                        if layer < old && layer < want.cap {
                            forced_fall = true;
                        } else if layer > old {
                            climbed = true;
                        }
                    }
                    sub.paused = false;
                    sub.target = layer;
                    let wants_keyframe = match sub.current {
                        None => true,
                        Some(current) => current != layer && format.detects_keyframes(),
                    };
                    if wants_keyframe && sub.connected {
                        requests.push((slot, layer));
                    }
                }
                (_, Choice::Paused) => {}
            }
        }
        if let Some(p) = self.participants.get_mut(&subscriber) {
            let a = &mut p.alloc;
            if forced_fall {
                let since_climb = a.last_climb.map(|at| now.saturating_duration_since(at));
                a.cooldown = match since_climb {
                    Some(t) if t < CLIMB_TRIAL => {
                        self.stats.failed_climbs += 1;
                        (a.cooldown * 2).min(MAX_COOLDOWN)
                    }
                    Some(t) if t < CLIMB_HELD => a.cooldown,
                    _ => self.config.layer_up_cooldown,
                };
                a.blocked_until = Some(now + a.cooldown);
                a.fell_at_bps = a.estimate.map_or(0, |e| e.available_bps);
                // A link that just fell is not probed before twice the cooldown (at most
                // PROBE_AFTER_FALL).
                let probe_after = now + (a.cooldown * 2).min(PROBE_AFTER_FALL);
                a.probe_blocked_until = Some(
                    a.probe_blocked_until
                        .map_or(probe_after, |until| until.max(probe_after)),
                );
            } else if climbed {
                a.last_climb = Some(now);
                // Its keyframe's burst is its own queue, not the link's (see PROBE_GRACE).
                a.grace_until = Some(now + PROBE_GRACE);
            }
        }
        if climbed {
            self.continue_probe(subscriber, now);
        } else {
            self.maybe_probe(subscriber, now);
        }
        for notification in notes {
            self.notify(subscriber, notification);
        }
        for (track, layer) in requests {
            self.request_upstream(track, layer, now);
        }
    }

    /// Takes a new estimate for `subscriber` and allocates again if it is a real change (see
    /// the module docs). Starts the allocation tick if it is not running.
    pub(super) fn apply_estimate(
        &mut self,
        subscriber: ParticipantId,
        estimate: Estimate,
        now: Instant,
    ) -> bool {
        let Some(p) = self.participants.get_mut(&subscriber) else {
            return false;
        };
        p.alloc.estimate = Some(estimate);
        if estimate.state == LinkState::Clear {
            p.alloc.clear_since.get_or_insert(now);
        } else {
            p.alloc.clear_since = None;
        }
        let queueing = p.alloc.probe_until.is_some()
            && (estimate.state != LinkState::Clear
                || estimate.queue_delay >= p.alloc.probe_queue + PROBE_QUEUE_RISE);
        let changed = p
            .alloc
            .last_run
            .is_none_or(|last| estimate.moved_from(&last));
        if !self.timers.iter().any(|&(_, t)| t == Timer::Allocate) {
            self.timers.insert((now + TICK, Timer::Allocate));
        }
        if queueing {
            // The probe made a queue (or met one): it failed, unless the leg carried the next
            // step's level first.
            let a = &self.participants[&subscriber].alloc;
            let reached = estimate.proven_bps >= a.probe_step_goal;
            self.end_probe(subscriber, reached, now);
            if let Some(p) = self.participants.get_mut(&subscriber) {
                // The next ramp starts from what the leg sends: the level reached was too much.
                p.alloc.probe_failed = true;
                p.alloc.grace_until = Some(now + PROBE_GRACE);
            }
        }
        let a = &mut self
            .participants
            .get_mut(&subscriber)
            .expect("looked up above")
            .alloc;
        if a.grace_until.is_some_and(|until| now >= until) {
            a.grace_until = None;
        }
        let graced = estimate.state != LinkState::Clear && a.grace_until.is_some();
        if changed && !graced {
            self.retarget(subscriber, now, None);
        }
        self.ramp_probe(subscriber, now);
        changed
    }

    /// Forgets `subscriber`'s estimate (its leg can no longer be judged by one): a running
    /// probe stops, and its subscriptions go back to their caps (paused ones resume). Returns
    /// whether it had one.
    pub(super) fn drop_estimate(&mut self, subscriber: ParticipantId, now: Instant) -> bool {
        let Some(p) = self.participants.get_mut(&subscriber) else {
            return false;
        };
        if p.alloc.estimate.is_none() {
            return false;
        }
        let probing = p.alloc.probe_until.is_some();
        p.alloc = AllocState::default();
        if probing {
            self.events.push_back(Event::Probe {
                to: subscriber,
                padding_bps: 0,
                until: now,
            });
        }
        self.retarget(subscriber, now, None);
        true
    }

    /// Starts a probe of `subscriber`'s link when something is left to climb to, climbing is
    /// allowed, the link has been clear for [`PROBE_AFTER_CLEAR`], and no probe runs or cools
    /// down. The padding asks the link for the step that is missing, with a fifth more.
    fn maybe_probe(&mut self, subscriber: ParticipantId, now: Instant) {
        let Some(p) = self.participants.get_mut(&subscriber) else {
            return;
        };
        let connected = p.connected();
        let a = &mut p.alloc;
        let (Some(estimate), Some(shortfall)) = (a.estimate, a.outcome.shortfall_bps) else {
            return;
        };
        let ready = estimate.state == LinkState::Clear
            && a.clear_since
                .is_some_and(|at| now >= at + PROBE_AFTER_CLEAR)
            && a.probe_until.is_none()
            && a.probe_blocked_until.is_none_or(|until| now >= until);
        if !ready || !connected {
            return;
        }
        // Enough for the leg to show it carries the missing step, reached step by step (see
        // `bwe::probe_level`); a probe that stops short leaves the leg's proven rate higher for
        // the next.
        let sending = a.outcome.used_bps + a.audio_bps;
        // It aims at everything missing, so that it ramps on until a climb comes of it (or a
        // queue stops it), and the probe after it starts from there.
        let goal = bwe::probe_goal(&estimate, sending, a.outcome.missing_bps.max(shortfall));
        a.probe_step_goal = bwe::probe_goal(&estimate, sending, shortfall);
        // A ramp goes on from what the leg has shown after a probe that succeeded; after one
        // that failed, that may be a level the link only just carried: from what it sends.
        let base = if a.probe_failed {
            sending
        } else {
            sending.max(estimate.proven_bps)
        };
        let level = bwe::probe_level(base, None, goal);
        a.probe_goal = goal;
        a.probe_level = level;
        a.probe_stepped_at = Some(now);
        let padding_bps = a.probe_padding();
        let until = now + PROBE_DURATION;
        a.probe_until = Some(until);
        a.probe_from = estimate.available_bps;
        a.probe_queue = estimate.queue_delay;
        self.stats.probes += 1;
        self.events.push_back(Event::Probe {
            to: subscriber,
            padding_bps,
            until,
        });
    }

    /// A climb came of `subscriber`'s probe: a success. While more is missing, the probe goes on
    /// at the level it reached, the climbed media taking the place of that much padding (the
    /// link carried that level); otherwise it ends.
    fn continue_probe(&mut self, subscriber: ParticipantId, now: Instant) {
        let Some(p) = self.participants.get_mut(&subscriber) else {
            return;
        };
        let a = &mut p.alloc;
        let (Some(_), Some(estimate), Some(shortfall)) =
            (a.probe_until, a.estimate, a.outcome.shortfall_bps)
        else {
            self.end_probe(subscriber, true, now);
            return;
        };
        // The probe's cooldown is settled when it ends (`end_probe`).
        let sending = a.outcome.used_bps + a.audio_bps;
        a.probe_goal = bwe::probe_goal(&estimate, sending, a.outcome.missing_bps.max(shortfall));
        a.probe_step_goal = bwe::probe_goal(&estimate, sending, shortfall);
        a.probe_level = a.probe_level.max(sending);
        a.probe_stepped_at = Some(now);
        a.probe_from = estimate.available_bps;
        a.probe_queue = estimate.queue_delay;
        a.probe_failed = false;
        let until = now + PROBE_DURATION;
        a.probe_until = Some(until);
        let padding_bps = a.probe_padding();
        self.events.push_back(Event::Probe {
            to: subscriber,
            padding_bps,
            until,
        });
    }

    /// Raises the padding of `subscriber`'s probe, if one runs, its link stays clear and its
    /// estimate has shown 70 % of the level it asks for now, by one step towards its goal (see
    /// [`bwe::probe_level`]): at most once per [`TICK`], the period at which
    /// the gateway reads a leg's counters, so that the leg was seen at the last step (an
    /// estimate showing a queue would have stopped the probe; none comes when nothing moved).
    fn ramp_probe(&mut self, subscriber: ParticipantId, now: Instant) {
        let Some(p) = self.participants.get_mut(&subscriber) else {
            return;
        };
        let a = &mut p.alloc;
        let (Some(until), Some(estimate)) = (a.probe_until, a.estimate) else {
            return;
        };
        let seen = a
            .probe_stepped_at
            .is_none_or(|stepped| now >= stepped + TICK);
        // The leg has shown most of the level it was asked for: a ramp that outruns what the
        // estimate has seen overshoots the link before the estimate can show the step (its
        // proven rate lags by a window, and counts packets, not every header).
        let shown = estimate.proven_bps.saturating_mul(10) >= a.probe_level.saturating_mul(7);
        if !seen
            || !shown
            || now >= until
            || estimate.state != LinkState::Clear
            || a.probe_level >= a.probe_goal
        {
            return;
        }
        a.probe_stepped_at = Some(now);
        let sending = a.outcome.used_bps + a.audio_bps;
        a.probe_level = bwe::probe_level(sending, Some(a.probe_level), a.probe_goal);
        let padding_bps = a.probe_padding();
        self.events.push_back(Event::Probe {
            to: subscriber,
            padding_bps,
            until,
        });
    }

    /// Ends `subscriber`'s probe, if one runs: a success (a climb came of it, or the estimate
    /// rose) resets the probe cooldown and lets the next probe follow after
    /// [`PROBE_AFTER_SUCCESS`]; a failure doubles the cooldown. The padding is stopped unless the probe's time is up.
    fn end_probe(&mut self, subscriber: ParticipantId, success: bool, now: Instant) {
        let Some(p) = self.participants.get_mut(&subscriber) else {
            return;
        };
        let a = &mut p.alloc;
        let Some(until) = a.probe_until.take() else {
            return;
        };
        let base = self.config.layer_up_cooldown;
        a.probe_failed = !success;
        a.probe_cooldown = if success {
            base
        } else {
            self.stats.probes_failed += 1;
            (a.probe_cooldown * 2).clamp(base, MAX_PROBE_COOLDOWN)
        };
        a.probe_blocked_until = Some(if success {
            now + PROBE_AFTER_SUCCESS
        } else {
            now + a.probe_cooldown
        });
        if now < until {
            self.events.push_back(Event::Probe {
                to: subscriber,
                padding_bps: 0,
                until: now,
            });
        }
    }

    /// The allocation tick: allocates again every subscriber with an estimate whose layers
    /// started or stopped, whose cooldown ended with something left to climb to, or whose last
    /// allocation is older than [`REFRESH`]. Reschedules itself while any subscriber has an
    /// estimate.
    pub(super) fn allocation_tick(&mut self, now: Instant) {
        let mut due = Vec::new();
        let mut others = Vec::new();
        for (&id, p) in &self.participants {
            if p.relay || p.alloc.estimate.is_none() {
                continue;
            }
            let a = &p.alloc;
            let stale = a.last_run_at.is_none_or(|at| now >= at + REFRESH);
            let unblocked =
                a.outcome.shortfall_bps.is_some() && !a.last_may_climb && a.unblocked(now);
            let live = self.live_mask(&p.subscriptions, now);
            let probe_over = a.probe_until.is_some_and(|until| now >= until);
            let grace_over =
                a.grace_until.is_some_and(|until| now >= until) && a.estimate != a.last_run;
            if stale || unblocked || live != a.live_layers || probe_over || grace_over {
                due.push(id);
            } else if a.outcome.shortfall_bps.is_some() {
                others.push(id);
            }
        }
        for id in others {
            self.maybe_probe(id, now);
        }
        let probing: Vec<ParticipantId> = self
            .participants
            .iter()
            .filter(|(_, p)| p.alloc.probe_until.is_some())
            .map(|(&id, _)| id)
            .collect();
        for id in probing {
            self.ramp_probe(id, now);
        }
        let any = !due.is_empty()
            || self
                .participants
                .values()
                .any(|p| p.alloc.estimate.is_some());
        for id in due {
            if let Some(p) = self.participants.get_mut(&id)
                && p.alloc.grace_until.is_some_and(|until| now >= until)
            {
                p.alloc.grace_until = None;
            }
            let probe_over = self.participants[&id]
                .alloc
                .probe_until
                .is_some_and(|until| now >= until);
            self.retarget(id, now, None);
            if probe_over {
                // Time is up and no climb came of it (a climb would have ended it): it
                // succeeded if the link carried the padding without a queue, so that the
                // estimate rose; the next probe goes on from there.
                let a = &self.participants[&id].alloc;
                let rose = a.estimate.is_some_and(|e| {
                    e.state == LinkState::Clear
                        && e.available_bps * 100 >= a.probe_from * (100 + PROBE_RISE_PERCENT)
                });
                self.end_probe(id, rose, now);
            }
        }
        if any {
            self.timers.insert((now + TICK, Timer::Allocate));
        }
    }
}
