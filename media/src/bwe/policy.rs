//! An optional learned scaling of a subscriber's budget (off, and not offered by the gateway:
//! the one found does not beat the heuristic, docs/BENCHMARKS.md §13.3).
//!
//! A small linear policy, its weights constants found by search on the simulated network
//! (`strait-policy` in the tests crate): from the estimate's queueing delay, its acknowledged
//! rate against what it makes available, and whether it is a warning, a factor on the budget
//! (and on what the link has shown it carries) within hard clamps. Outside the range it was
//! trained on (congestion, a queue above 150 ms, no rate) it gives nothing and the heuristic
//! allocation stands as it is. Integers throughout (thousandths), so that a configuration holding
//! one stays comparable.

use std::time::Duration;

use super::{Estimate, LinkState};

/// The factor's clamps, in thousandths.
pub(super) const SCALE_CLAMP: (i64, i64) = (700, 1300);

/// The queueing delay above which the policy gives nothing (outside its training range).
pub(super) const MAX_QUEUE: Duration = Duration::from_millis(150);

/// The weights of the policy, in thousandths (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BudgetPolicy {
    /// The factor with no queue, an acknowledged rate of nothing and a clear link.
    pub bias: i64,
    /// Per 10 ms of queueing delay.
    pub queue: i64,
    /// Per tenth of acknowledged / available.
    pub ratio: i64,
    /// When the link is a warning.
    pub warning: i64,
}

impl BudgetPolicy {
    /// The identity: a factor of 1 whatever the estimate.
    pub const IDENTITY: BudgetPolicy = BudgetPolicy {
        bias: 1000,
        queue: 0,
        ratio: 0,
        warning: 0,
    };

    /// The weights `strait-policy` found (a seeded random search of 120 candidates on four
    /// training seeds of five traces on both legs). They do not beat the heuristic on held-out
    /// seeds (docs/BENCHMARKS.md §13.3), so nothing uses them by default.
    pub const LEARNED: BudgetPolicy = BudgetPolicy {
        bias: 898,
        queue: -8,
        ratio: 18,
        warning: -131,
    };

    /// The factor on the budget for `estimate`, in thousandths; `None` outside the training
    /// range (then the heuristic stands).
    #[must_use]
    pub fn scale(&self, estimate: &Estimate) -> Option<u64> {
        if estimate.state == LinkState::Congested
            || estimate.queue_delay > MAX_QUEUE
            || estimate.available_bps == 0
        {
            return None;
        }
        let queue = i64::try_from(estimate.queue_delay.as_millis() / 10).unwrap_or(i64::MAX);
        let ratio =
            i64::try_from((estimate.acked_bps.saturating_mul(10) / estimate.available_bps).min(30))
                .unwrap_or(30);
        let warning = i64::from(estimate.state == LinkState::Warning);
        let scale = self.bias + self.queue * queue + self.ratio * ratio + self.warning * warning;
        Some(scale.clamp(SCALE_CLAMP.0, SCALE_CLAMP.1) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_factor_is_clamped_and_outside_the_training_range_there_is_none() {
        let greedy = BudgetPolicy {
            bias: 5000,
            ..BudgetPolicy::IDENTITY
        };
        assert_eq!(greedy.scale(&Estimate::clear(1_000_000)), Some(1300));
        let mut congested = Estimate::clear(1_000_000);
        congested.state = LinkState::Congested;
        assert_eq!(greedy.scale(&congested), None);
        let mut queued = Estimate::clear(1_000_000);
        queued.queue_delay = Duration::from_millis(200);
        assert_eq!(greedy.scale(&queued), None);
        assert_eq!(
            BudgetPolicy::IDENTITY.scale(&Estimate::clear(1)),
            Some(1000)
        );
        let queue_shy = BudgetPolicy {
            queue: -20,
            ..BudgetPolicy::IDENTITY
        };
        let mut some_queue = Estimate::clear(1_000_000);
        some_queue.queue_delay = Duration::from_millis(50);
        assert_eq!(queue_shy.scale(&some_queue), Some(900));
    }
}
