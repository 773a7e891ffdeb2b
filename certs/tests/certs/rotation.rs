//! Rotation decisions at the edges, and a simulated month of driving the policy.

use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use strait_certs::{
    Fingerprint, Identity, IdentityInfo, RotationAction, RotationDecision, RotationPolicy,
    RotationState,
};

use crate::support::{DAY, HOUR, t0};

const NS: Duration = Duration::from_nanos(1);

/// Identity facts as `Identity::generate_dev` would produce them when minted at `minted`.
fn minted(tag: u8, at: SystemTime, lifetime: Duration) -> IdentityInfo {
    IdentityInfo {
        fingerprint: Fingerprint::from_bytes([tag; 32]),
        spki_fingerprint: Fingerprint::from_bytes([tag ^ 0xff; 32]),
        not_before: at - HOUR,
        not_after: at - HOUR + lifetime,
    }
}

fn policy() -> RotationPolicy {
    RotationPolicy::default()
}

#[test]
fn default_policy_renews_after_about_ten_days() {
    let cur = minted(1, t0(), policy().lifetime());
    let after = policy().renew_at(&cur).duration_since(t0()).unwrap();
    assert!(
        after > 10 * DAY - 2 * HOUR && after <= 10 * DAY,
        "{after:?}"
    );
    assert_eq!(policy().lifetime(), 14 * DAY);
}

#[test]
fn mints_at_the_renew_point_and_not_before() {
    let p = policy();
    let cur = minted(1, t0(), p.lifetime());
    let renew_at = p.renew_at(&cur);
    assert_eq!(renew_at, cur.not_after - 4 * DAY);

    let just_before = p.decide(&cur, None, None, renew_at - NS);
    assert_eq!(
        just_before,
        RotationDecision {
            action: RotationAction::Wait,
            publish: vec![cur.fingerprint],
            wake_at: renew_at,
        }
    );
    for now in [renew_at, renew_at + NS, renew_at + DAY, cur.not_after + DAY] {
        let d = p.decide(&cur, None, None, now);
        assert_eq!(d.action, RotationAction::MintNext, "{now:?}");
        assert_eq!(d.wake_at, now);
        assert_eq!(d.publish, vec![cur.fingerprint]);
    }
}

#[test]
fn publishes_both_during_the_overlap_and_promotes_at_the_switch_point() {
    let p = policy();
    let cur = minted(1, t0(), p.lifetime());
    let renew_at = p.renew_at(&cur);
    let next = minted(2, renew_at, p.lifetime());
    let switch_at = p.switch_at(&cur);
    assert_eq!(switch_at, renew_at + DAY);

    for now in [renew_at, switch_at - NS] {
        let d = p.decide(&cur, Some(&next), None, now);
        assert_eq!(d.action, RotationAction::Wait);
        assert_eq!(d.publish, vec![cur.fingerprint, next.fingerprint]);
        assert_eq!(d.wake_at, switch_at);
    }
    for now in [switch_at, switch_at + NS, cur.not_after + DAY] {
        let d = p.decide(&cur, Some(&next), None, now);
        assert_eq!(d.action, RotationAction::PromoteNext);
        assert_eq!(d.publish, vec![cur.fingerprint, next.fingerprint]);
    }
}

#[test]
fn keeps_publishing_the_previous_until_it_expires_then_drops_it() {
    let p = policy();
    let old = minted(1, t0(), p.lifetime());
    let cur = minted(2, p.renew_at(&old), p.lifetime());
    let after_switch = p.switch_at(&old);

    let d = p.decide(&cur, None, Some(&old), after_switch);
    assert_eq!(d.action, RotationAction::Wait);
    assert_eq!(d.publish, vec![cur.fingerprint, old.fingerprint]);
    assert_eq!(d.wake_at, old.not_after);

    let d = p.decide(&cur, None, Some(&old), old.not_after - NS);
    assert_eq!(d.action, RotationAction::Wait);
    assert_eq!(d.publish, vec![cur.fingerprint, old.fingerprint]);

    for now in [old.not_after, old.not_after + NS] {
        let d = p.decide(&cur, None, Some(&old), now);
        assert_eq!(d.action, RotationAction::DropPrevious);
        assert_eq!(
            d.publish,
            vec![cur.fingerprint],
            "expired hashes are not published"
        );
    }

    let d = p.decide(&cur, None, None, old.not_after);
    assert_eq!(d.action, RotationAction::Wait);
    assert_eq!(d.publish, vec![cur.fingerprint]);
    assert_eq!(d.wake_at, p.renew_at(&cur));
}

#[test]
fn a_next_identity_from_the_future_is_not_served_early() {
    // The clock stepped back after minting: wait until the next identity is valid.
    let p = policy();
    let cur = minted(1, t0(), p.lifetime());
    let now = p.switch_at(&cur) + HOUR;
    let next = minted(2, now + 3 * HOUR, p.lifetime());
    let d = p.decide(&cur, Some(&next), None, now);
    assert_eq!(d.action, RotationAction::Wait);
    assert_eq!(d.wake_at, next.not_before);
    assert_eq!(
        p.decide(&cur, Some(&next), None, next.not_before).action,
        RotationAction::PromoteNext
    );
}

#[test]
fn invalid_policies_are_refused() {
    assert!(RotationPolicy::new(15 * DAY, 4 * DAY, 3 * DAY).is_err());
    assert!(RotationPolicy::new(4 * DAY, 4 * DAY, 3 * DAY).is_err());
    assert!(RotationPolicy::new(7 * DAY, 2 * DAY, DAY).is_ok());
}

/// Drives `state` until the policy says wait, minting with `mint`; returns the final decision
/// and the actions taken.
fn settle(
    state: &mut RotationState<IdentityInfo>,
    p: &RotationPolicy,
    now: SystemTime,
    mint: &mut impl FnMut(SystemTime) -> IdentityInfo,
) -> (RotationDecision, Vec<RotationAction>) {
    let mut actions = Vec::new();
    for _ in 0..16 {
        let d = state.decide(p, now);
        match d.action {
            RotationAction::Wait => return (d, actions),
            RotationAction::MintNext => assert!(state.install_next(mint(now)).is_none()),
            RotationAction::PromoteNext => assert!(state.promote_next()),
            RotationAction::DropPrevious => assert!(state.drop_previous().is_some()),
            other => panic!("unknown action {other:?}"),
        }
        actions.push(d.action);
    }
    panic!("the policy did not settle at {now:?}");
}

#[test]
fn catches_up_after_a_long_sleep() {
    let p = policy();
    let mut tag = 0u8;
    let mut mint = |at| {
        tag += 1;
        minted(tag, at, p.lifetime())
    };
    let mut state = RotationState::new(mint(t0()));
    let first = *state.current();
    // Asleep past the renew point and for a while: mint, promote (switch point passed too).
    let now = t0() + 12 * DAY;
    let (d, actions) = settle(&mut state, &p, now, &mut mint);
    assert_eq!(
        actions,
        [RotationAction::MintNext, RotationAction::PromoteNext]
    );
    assert_eq!(
        d.publish,
        vec![state.current().fingerprint, first.fingerprint]
    );
    // Asleep for a month: drop, mint, promote, drop.
    let now = t0() + 40 * DAY;
    let (d, actions) = settle(&mut state, &p, now, &mut mint);
    use RotationAction::*;
    assert_eq!(actions, [DropPrevious, MintNext, PromoteNext, DropPrevious]);
    assert_eq!(d.publish, vec![state.current().fingerprint]);
    assert!(state.current().is_valid_at(now));
}

#[test]
fn rotation_state_holds_real_identities() {
    let p = policy();
    let config = p.dev_config(vec!["gw.example".into()]);
    let mut state = RotationState::new(Identity::generate_dev(&config, t0()).unwrap());
    let first = state.current().fingerprint();
    let now = p.renew_at(&state.current().info());
    assert_eq!(state.decide(&p, now).action, RotationAction::MintNext);
    state.install_next(Identity::generate_dev(&config, now).unwrap());
    let second = state.next().unwrap().fingerprint();
    assert_eq!(state.decide(&p, now).publish, vec![first, second]);
    let now = p.switch_at(&state.current().info());
    assert_eq!(state.decide(&p, now).action, RotationAction::PromoteNext);
    assert!(state.promote_next());
    assert_eq!(state.current().fingerprint(), second);
    assert_eq!(state.previous().unwrap().fingerprint(), first);
    assert!(!state.promote_next(), "nothing left to promote");
}

proptest! {
    /// Waking up late by up to a day, again and again for 90 days: the served identity is always
    /// valid, always published, at most three hashes are published, expired ones never, and a
    /// new identity is served about every ten days.
    #[test]
    fn a_simulated_quarter_keeps_every_invariant(
        lateness in proptest::collection::vec(0u64..=24 * 3600, 1..400),
    ) {
        let p = policy();
        let mut tag = 0u8;
        let mut mint = |at| {
            tag = tag.wrapping_add(1);
            minted(tag, at, p.lifetime())
        };
        let mut state = RotationState::new(mint(t0()));
        let mut now = t0();
        let mut promotions = 0;
        let end = t0() + 90 * DAY;
        let mut late = lateness.iter().cycle();
        while now < end {
            let (d, actions) = settle(&mut state, &p, now, &mut mint);
            promotions += actions.iter().filter(|a| **a == RotationAction::PromoteNext).count();
            let cur = *state.current();
            prop_assert!(cur.is_valid_at(now), "served an invalid identity at {:?}", now);
            prop_assert_eq!(d.publish.first(), Some(&cur.fingerprint));
            prop_assert!(d.publish.len() <= 3);
            if let Some(prev) = state.previous() {
                prop_assert!(now < prev.not_after);
            }
            prop_assert!(d.wake_at > now);
            now = d.wake_at + Duration::from_secs(*late.next().unwrap());
        }
        // 90 days at one rotation per ~10 days, waking up to a day late each time.
        prop_assert!((7..=9).contains(&promotions), "{} promotions", promotions);
    }
}
