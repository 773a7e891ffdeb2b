//! Layer choice: which simulcast layer each video subscription of a subscriber should forward,
//! given its bandwidth estimate, its caps and hysteresis.
//!
//! The estimate is the subscriber's whole downstream budget. Every video subscription gets its
//! lowest layer first (a picture for everyone beats a sharp picture for some); what is left is
//! handed out one level at a time (all subscriptions to layer 1, then to layer 2), each in
//! subscription order. Hysteresis is asymmetric: keeping a layer costs its bitrate increment,
//! climbing to one costs the increment plus a headroom share of its bitrate and is not allowed
//! shortly after a fall. Audio is not part of the budget: it is small and never dropped.

use std::time::Instant;

use super::{MAX_LAYERS, ParticipantId, Sfu, TrackKind};

/// One video subscription as the allocation sees it.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    track: usize,
    slot: usize,
    /// Highest layer allowed by the subscriber's cap and the track.
    cap: u8,
    /// Target before this allocation; `None` for a subscription being created.
    old: Option<u8>,
    /// Bitrate of each layer (0 when unknown, or past the track's top layer).
    costs: [u64; MAX_LAYERS],
    /// Whether the up-switch cooldown has passed.
    may_climb: bool,
}

impl Sfu {
    /// Re-picks the targets of `subscriber`'s video subscriptions and asks for keyframes of the
    /// layers that changed. A relay member's targets are its caps (the highest layer passed
    /// through), and nothing is asked. `fresh` names a subscription being created (it has no old target, so
    /// even its first climb needs headroom, and it always wants a first keyframe).
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
        let cooldown = self.config.layer_up_cooldown;
        let headroom = u64::from(self.config.layer_up_headroom_percent);
        let mut candidates = Vec::new();
        for r in &p.subscriptions {
            let track = &self.tracks[r.track];
            if track.kind != TrackKind::Video {
                continue;
            }
            let sub = &track.subscriptions[r.slot];
            let top = track.top_layer();
            let mut costs = [0; MAX_LAYERS];
            for (cost, layer) in costs.iter_mut().zip(&track.layers) {
                *cost = u64::from(layer.spec.max_bitrate);
            }
            let cap = sub.max_layer.map_or(top, |m| m.min(top));
            candidates.push(Candidate {
                track: r.track,
                slot: r.slot,
                // While load is shed, no higher than the ceiling.
                cap: self.layer_ceiling.map_or(cap, |ceiling| cap.min(ceiling)),
                old: if fresh == Some((r.track, r.slot)) {
                    None
                } else {
                    Some(sub.target)
                },
                costs,
                may_climb: sub.last_down.is_none_or(|at| now >= at + cooldown),
            });
        }
        let targets = match p.bandwidth {
            None => candidates.iter().map(|c| c.cap).collect(),
            Some(budget) => allocate(&candidates, budget, headroom),
        };

        let mut requests = Vec::new();
        for (c, target) in candidates.iter().zip(targets) {
            if c.old == Some(target) {
                continue;
            }
            let track = &mut self.tracks[c.track];
            let format = track.format;
            let sub = &mut track.subscriptions[c.slot];
            // A fall forced by the budget starts the cooldown; one the subscriber asked for
            // (a lower cap) does not.
            if c.old.is_some_and(|old| target < old) && target < c.cap {
                sub.last_down = Some(now);
            }
            sub.target = target;
            let wants_keyframe = match sub.current {
                None => true,
                Some(current) => current != target && format.detects_keyframes(),
            };
            if wants_keyframe && sub.connected {
                requests.push((c.track, target));
            }
        }
        for (track, layer) in requests {
            self.request_upstream(track, layer, now);
        }
    }
}

/// The target of each candidate for a budget of `budget` bits per second.
fn allocate(candidates: &[Candidate], budget: u64, headroom_percent: u64) -> Vec<u8> {
    let mut targets = vec![0u8; candidates.len()];
    let floor: u64 = candidates.iter().map(|c| c.costs[0]).sum();
    let mut remaining = budget.saturating_sub(floor);
    for level in 1..MAX_LAYERS as u8 {
        for (c, target) in candidates.iter().zip(targets.iter_mut()) {
            if *target != level - 1 || level > c.cap {
                continue;
            }
            let cost = c.costs[usize::from(level)];
            let increment = cost.saturating_sub(c.costs[usize::from(level) - 1]);
            let keeps = c.old.is_some_and(|old| level <= old);
            let needed = if keeps {
                increment
            } else if c.may_climb {
                increment + cost * headroom_percent / 100
            } else {
                continue;
            };
            if remaining >= needed {
                *target = level;
                remaining -= increment;
            }
        }
    }
    targets
}
