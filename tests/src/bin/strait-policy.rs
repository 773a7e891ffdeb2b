//! The learned budget policy of the bandwidth allocation (`strait_media::bwe::BudgetPolicy`),
//! trained and judged on the simulated network: a seeded random search over its four weights on
//! training seeds, then the best of them against the heuristic (no policy) on held-out seeds, by
//! the quality score of `strait_tests::sim::scenarios::quality` (mean layer − 2 × freeze seconds
//! − 0.2 × switches) over the traces of `POLICY_TRACES`, on both legs. A policy ships only if it
//! beats the heuristic's mean score by at least 5 % on the held-out seeds and is no worse at
//! their 10th percentile. Virtual time; a run takes a few minutes.
//!
//! ```text
//! cargo run --release -p strait-tests --bin strait-policy -- [--candidates 120]
//! ```
//!
//! `--candidates 0` searches nothing: it judges the shipped weights (`BudgetPolicy::LEARNED`)
//! against the heuristic of today's allocation.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strait_media::bwe::BudgetPolicy;
use strait_media::sfu::SfuConfig;
use strait_tests::sim::{LegKind, scenarios};

/// Seeds the search trains on, and the seeds it is judged on (never seen in training).
const TRAIN: [u64; 4] = [101, 102, 103, 104];
const HELD_OUT: [u64; 6] = [201, 202, 203, 204, 205, 206];

/// Every run's score for `policy` on `seeds` (every trace, both legs).
fn scores(policy: Option<BudgetPolicy>, seeds: &[u64]) -> Vec<f64> {
    let sfu = SfuConfig {
        budget_policy: policy,
        ..SfuConfig::default()
    };
    let mut out = Vec::new();
    for leg in [LegKind::Quic, LegKind::WebRtc] {
        for name in scenarios::POLICY_TRACES {
            for &seed in seeds {
                let (r, length) = scenarios::run_policy_trace(name, leg, seed, &sfu);
                out.push(scenarios::quality(
                    &r,
                    std::time::Duration::from_secs(2),
                    length,
                ));
            }
        }
    }
    out
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn p10(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[(v.len() - 1) / 10]
}

fn main() {
    let mut candidates = 120usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--candidates" {
            candidates = args
                .next()
                .and_then(|n| n.parse().ok())
                .expect("--candidates N");
        }
    }
    let mut rng = StdRng::seed_from_u64(16);
    let baseline_train = mean(&scores(None, &TRAIN));
    println!("heuristic, training seeds: mean score {baseline_train:.3}");
    let mut best: Option<(f64, BudgetPolicy)> = None;
    if candidates == 0 {
        let policy = BudgetPolicy::LEARNED;
        best = Some((mean(&scores(Some(policy), &TRAIN)), policy));
    }
    for n in 0..candidates {
        let policy = BudgetPolicy {
            bias: rng.random_range(800..=1200),
            queue: rng.random_range(-40..=10),
            ratio: rng.random_range(-40..=40),
            warning: rng.random_range(-200..=50),
        };
        let score = mean(&scores(Some(policy), &TRAIN));
        println!("candidate {n:>3}: {policy:?} → {score:.3}");
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, policy));
        }
    }
    let (train_score, policy) = best.expect("at least one candidate");
    println!(
        "\nbest on the training seeds: {policy:?} ({train_score:.3} against {baseline_train:.3})"
    );
    let heuristic = scores(None, &HELD_OUT);
    let learned = scores(Some(policy), &HELD_OUT);
    let (hm, lm) = (mean(&heuristic), mean(&learned));
    let (h10, l10) = (p10(&heuristic), p10(&learned));
    println!("held-out seeds ({} runs each):", heuristic.len());
    println!("  heuristic: mean {hm:.3}, 10th percentile {h10:.3}");
    println!("  learned:   mean {lm:.3}, 10th percentile {l10:.3}");
    let gain = (lm - hm) / hm.abs().max(f64::EPSILON) * 100.0;
    let ships = gain >= 5.0 && l10 >= h10;
    println!(
        "  gain {gain:+.1} % of the mean; {}",
        if ships {
            "it ships (≥ 5 % and no worse at the 10th percentile)"
        } else {
            "it does not ship (needs ≥ 5 % and no worse at the 10th percentile)"
        }
    );
}
