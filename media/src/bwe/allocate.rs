//! One subscriber's layer allocation: which layer of each video subscription fits its budget,
//! and which video is paused when not even the lowest layers fit.
//!
//! A pure function of what it is given (no clock, no state): the caller keeps the hysteresis
//! state (the previous choices, whether the subscriber may climb now) and passes it in.
//!
//! The order of the passes:
//!
//! Priority groups are served one after the other, highest first: a group gets its floors and
//! climbs as far as it can before the next group gets anything (a screen share is made readable
//! before a camera gets a picture). Within a group (equal priorities, in subscription order):
//!
//! 1. **Floors**: each video gets its lowest live layer while that fits. One that does not fit
//!    is paused, except the first video (in priority order): it keeps (or gets back) its lowest
//!    layer whatever the budget (a picture of the main speaker beats none, and a congestion
//!    signal that lasts a moment must not leave a subscriber with no video at all); the others
//!    are paused to spare the audio. Another paused video comes back only with headroom and
//!    when climbing is allowed.
//! 2. **Climbing**, one step per subscription per round (equal priorities share: a picture for
//!    everyone before a sharp picture for some). A step to a layer the subscription already had
//!    costs the layer's increment; a new step costs the increment plus `headroom_percent` of the
//!    layer's cost, and only when climbing is allowed. A layer that is not live is skipped.
//!
//! Audio is not part of this: the caller reserves it before (it is never paused).

use crate::sfu::MAX_LAYERS;

/// What the allocation chose for one video subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Choice {
    /// Nothing is forwarded; the subscription stays.
    Paused,
    /// This layer is forwarded.
    Layer(u8),
}

/// One video subscription as the allocation sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoWant {
    /// Higher wins: the lowest-priority videos are paused first and climb last.
    pub priority: u8,
    /// The highest layer allowed (the subscriber's cap, the track's top layer, a load ceiling).
    pub cap: u8,
    /// What each layer costs, bits per second.
    pub costs: [u64; MAX_LAYERS],
    /// Whether each layer is being sent (a layer past the track's top is not).
    pub alive: [bool; MAX_LAYERS],
    /// The choice before this allocation; `None` for a subscription being created.
    pub old: Option<Choice>,
}

impl VideoWant {
    /// The lowest live layer within the cap.
    fn floor(&self) -> Option<u8> {
        (0..=self.cap.min(MAX_LAYERS as u8 - 1)).find(|&l| self.alive[usize::from(l)])
    }

    /// The next live layer above `layer` within the cap.
    fn next(&self, layer: u8) -> Option<u8> {
        (layer + 1..=self.cap.min(MAX_LAYERS as u8 - 1)).find(|&l| self.alive[usize::from(l)])
    }

    fn cost(&self, layer: u8) -> u64 {
        self.costs[usize::from(layer)]
    }

    /// Whether the subscription had `layer` or a higher one before.
    fn had(&self, layer: u8) -> bool {
        matches!(self.old, Some(Choice::Layer(old)) if old >= layer)
    }
}

/// The tunables of [`allocate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocatorConfig {
    /// A new step (a climb, or a resume) needs this share of the layer's cost on top of its
    /// increment (default 20 %).
    pub headroom_percent: u64,
    /// Whether videos are paused when their floors do not fit (default yes). When not, every
    /// video keeps at least its lowest layer whatever the budget.
    pub allow_pause: bool,
}

impl Default for AllocatorConfig {
    fn default() -> Self {
        Self {
            headroom_percent: 20,
            allow_pause: true,
        }
    }
}

/// What an allocation gave and what it could not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    /// Bits per second the choices cost.
    pub used_bps: u64,
    /// The smallest extra budget that would let one more subscription take one more step (a
    /// resume or a climb, headroom included); `None` when every subscription has its best live
    /// layer.
    pub shortfall_bps: Option<u64>,
    /// The extra budget that would give every subscription its best live layer within its
    /// cap (each with its headroom): what a probe may aim for, step after step. 0 when
    /// nothing is missing.
    pub missing_bps: u64,
}

/// Chooses a layer (or a pause) for each of `wants` within `budget_bps`, writing one [`Choice`]
/// per want into `out` (cleared first). `may_climb` allows new steps (climbs and resumes), which
/// must also fit, headroom included, within `climb_bps` (what the link has shown it carries:
/// a new step is taken on evidence, a held one on the estimate); steps back to what a
/// subscription had are always allowed when they fit the budget.
pub fn allocate(
    wants: &[VideoWant],
    budget_bps: u64,
    climb_bps: u64,
    may_climb: bool,
    config: &AllocatorConfig,
    out: &mut Vec<Choice>,
) -> Outcome {
    out.clear();
    out.extend(wants.iter().map(|w| w.old.unwrap_or(Choice::Layer(0))));
    let mut order: Vec<usize> = (0..wants.len()).collect();
    // Stable: equal priorities keep subscription order.
    order.sort_by_key(|&i| std::cmp::Reverse(wants[i].priority));
    let headroom = |cost: u64| cost * config.headroom_percent / 100;

    let mut remaining = budget_bps;
    let mut used = 0u64;
    let mut shortfall: Option<u64> = None;
    let mut note_short = |needed: u64, remaining: u64| {
        let gap = needed.saturating_sub(remaining).max(1);
        shortfall = Some(shortfall.map_or(gap, |s| s.min(gap)));
    };

    // By priority group, highest first: each group gets its floors, then climbs as far as it
    // can, before the next group gets anything.
    let mut playing_any = false;
    let mut start = 0;
    while start < order.len() {
        let priority = wants[order[start]].priority;
        let end = order[start..]
            .iter()
            .position(|&i| wants[i].priority != priority)
            .map_or(order.len(), |n| start + n);
        let group = &order[start..end];
        // Floors, in subscription order.
        for &i in group {
            let w = &wants[i];
            let Some(floor) = w.floor() else {
                // Nothing of it is being sent: keep what it had (nothing to forward, nothing
                // to pay).
                continue;
            };
            let cost = w.cost(floor);
            let resuming = w.old == Some(Choice::Paused);
            let needed = if resuming {
                cost + headroom(cost)
            } else {
                cost
            };
            let climb_room = climb_bps.saturating_sub(used);
            let fits = remaining >= needed && (!resuming || (may_climb && climb_room >= needed));
            let graced = !playing_any;
            if fits || !config.allow_pause || graced {
                out[i] = Choice::Layer(floor);
                remaining = remaining.saturating_sub(cost);
                used += cost;
                playing_any = true;
            } else {
                out[i] = Choice::Paused;
                note_short(needed, remaining.min(climb_room));
            }
        }
        // Climbing, one step per subscription per round.
        loop {
            let mut stepped = false;
            for &i in group {
                let w = &wants[i];
                let Choice::Layer(at) = out[i] else { continue };
                if w.floor().is_none() {
                    continue;
                }
                let Some(next) = w.next(at) else { continue };
                let increment = w.cost(next).saturating_sub(w.cost(at));
                let keeps = w.had(next);
                let needed = if keeps {
                    increment
                } else {
                    increment + headroom(w.cost(next))
                };
                let climb_room = climb_bps.saturating_sub(used);
                if remaining >= needed && (keeps || (may_climb && climb_room >= needed)) {
                    out[i] = Choice::Layer(next);
                    remaining -= increment;
                    used += increment;
                    stepped = true;
                } else {
                    note_short(
                        needed,
                        if keeps {
                            remaining
                        } else {
                            remaining.min(climb_room)
                        },
                    );
                }
            }
            if !stepped {
                break;
            }
        }
        start = end;
    }
    // Everything at its best: each subscription's best live layer within its cap, headroom
    // included, beyond what this allocation uses.
    let full: u64 = wants
        .iter()
        .filter_map(|w| {
            let best = (0..=w.cap.min(MAX_LAYERS as u8 - 1))
                .rev()
                .find(|&l| w.alive[usize::from(l)])?;
            Some(w.cost(best) + headroom(w.cost(best)))
        })
        .sum();
    Outcome {
        used_bps: used,
        shortfall_bps: shortfall,
        missing_bps: if shortfall.is_some() {
            full.saturating_sub(used).max(shortfall.unwrap_or(0))
        } else {
            0
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COSTS: [u64; MAX_LAYERS] = [150_000, 500_000, 1_500_000];

    fn camera(old: Option<Choice>) -> VideoWant {
        VideoWant {
            priority: 100,
            cap: 2,
            costs: COSTS,
            alive: [true; MAX_LAYERS],
            old,
        }
    }

    fn run(wants: &[VideoWant], budget: u64, may_climb: bool) -> (Vec<Choice>, Outcome) {
        let mut out = Vec::new();
        let outcome = allocate(
            wants,
            budget,
            budget,
            may_climb,
            &AllocatorConfig::default(),
            &mut out,
        );
        (out, outcome)
    }

    use Choice::{Layer, Paused};

    #[test]
    fn what_is_missing_is_every_subscription_at_its_best_beyond_what_is_used() {
        // Two cameras at 400 k: one floor (the other paused). Missing: both tops with their
        // headroom (2 × 1.8 M) beyond the 150 k used.
        let (out, o) = run(&[camera(None), camera(None)], 200_000, true);
        assert_eq!(out, [Layer(0), Paused]);
        assert_eq!(o.missing_bps, 2 * 1_800_000 - 150_000);
        // A cap counts: a camera capped at the middle layer misses at most 600 k.
        let mut capped = camera(None);
        capped.cap = 1;
        let (_, o) = run(&[capped], 200_000, true);
        assert_eq!(o.missing_bps, 600_000 - 150_000);
        // Nothing missing at the top.
        let (_, o) = run(&[camera(None)], 10_000_000, true);
        assert_eq!((o.shortfall_bps, o.missing_bps), (None, 0));
    }

    #[test]
    fn a_new_subscription_climbs_as_far_as_the_budget_and_headroom_allow() {
        // Top layer: 1.5 M + 20 % headroom on top of the floor's 150 k.
        let (out, o) = run(&[camera(None)], 150_000 + 1_350_000 + 300_000, true);
        assert_eq!(out, [Layer(2)]);
        assert_eq!(o.used_bps, 1_500_000);
        assert_eq!(o.shortfall_bps, None);
        let (out, o) = run(&[camera(None)], 1_799_999, true);
        assert_eq!(out, [Layer(1)]);
        assert_eq!(o.shortfall_bps, Some(1));
    }

    #[test]
    fn keeping_a_layer_needs_no_headroom_and_climbing_needs_permission() {
        let (out, _) = run(&[camera(Some(Layer(2)))], 1_500_000, false);
        assert_eq!(out, [Layer(2)]);
        let (out, _) = run(&[camera(Some(Layer(1)))], 5_000_000, false);
        assert_eq!(out, [Layer(1)]);
        let (out, _) = run(&[camera(Some(Layer(1)))], 5_000_000, true);
        assert_eq!(out, [Layer(2)]);
    }

    #[test]
    fn floors_come_first_and_the_lowest_priority_is_paused_first() {
        let screen = VideoWant {
            priority: 200,
            ..camera(Some(Layer(0)))
        };
        let wants = [
            camera(Some(Layer(0))),
            camera(Some(Layer(0))),
            screen,
            camera(Some(Layer(0))),
        ];
        // Room for two floors: the screen share and the first camera.
        let (out, o) = run(&wants, 320_000, true);
        assert_eq!(out, [Layer(0), Paused, Layer(0), Paused]);
        assert_eq!(o.used_bps, 300_000);
        assert!(o.shortfall_bps.is_some());
        // More budget: the screen share climbs to its top before a camera leaves its floor.
        let (out, _) = run(&wants, 600_000 + 1_350_000 + 300_000, true);
        assert_eq!(out, [Layer(0), Layer(0), Layer(2), Layer(0)]);
    }

    #[test]
    fn the_first_video_is_never_paused_and_the_others_come_back_with_headroom() {
        let (out, o) = run(&[camera(Some(Layer(0))), camera(Some(Layer(0)))], 0, true);
        assert_eq!(out, [Layer(0), Paused]);
        assert_eq!(o.used_bps, 150_000);
        // The only video of a subscriber keeps a picture whatever the budget.
        let (out, _) = run(&[camera(Some(Paused))], 0, false);
        assert_eq!(out, [Layer(0)]);
        // A second video comes back only with headroom and permission.
        let playing = camera(Some(Layer(0)));
        let (out, _) = run(&[playing, camera(Some(Paused))], 300_000, true);
        assert_eq!(out, [Layer(0), Paused]);
        let (out, _) = run(&[playing, camera(Some(Paused))], 330_000, false);
        assert_eq!(out, [Layer(0), Paused]);
        let (out, _) = run(&[playing, camera(Some(Paused))], 330_000, true);
        assert_eq!(out, [Layer(0), Layer(0)]);
    }

    #[test]
    fn without_pausing_every_video_keeps_its_floor() {
        let config = AllocatorConfig {
            allow_pause: false,
            ..AllocatorConfig::default()
        };
        let mut out = Vec::new();
        allocate(
            &[camera(Some(Layer(1))), camera(Some(Layer(1)))],
            0,
            0,
            true,
            &config,
            &mut out,
        );
        assert_eq!(out, [Layer(0), Layer(0)]);
    }

    #[test]
    fn a_layer_that_is_not_sent_is_skipped_and_a_silent_track_keeps_its_choice() {
        let top_stopped = VideoWant {
            alive: [true, true, false],
            ..camera(Some(Layer(2)))
        };
        let (out, _) = run(&[top_stopped], 10_000_000, true);
        assert_eq!(out, [Layer(1)]);
        let middle_missing = VideoWant {
            alive: [true, false, true],
            ..camera(Some(Layer(0)))
        };
        let (out, _) = run(&[middle_missing], 10_000_000, true);
        assert_eq!(out, [Layer(2)]);
        let silent = VideoWant {
            alive: [false; MAX_LAYERS],
            ..camera(Some(Layer(2)))
        };
        let (out, o) = run(&[silent], 0, true);
        assert_eq!(out, [Layer(2)]);
        assert_eq!(o.used_bps, 0);
    }

    #[test]
    fn the_cap_bounds_the_climb() {
        let capped = VideoWant {
            cap: 1,
            ..camera(None)
        };
        let (out, o) = run(&[capped], 10_000_000, true);
        assert_eq!(out, [Layer(1)]);
        assert_eq!(o.shortfall_bps, None);
    }
}
