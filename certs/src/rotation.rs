//! When to mint, serve, publish and forget development identities: a pure function of the
//! identities' validity and `now`.
//!
//! # Model
//!
//! The gateway holds up to three identities:
//!
//! - **current**: the one its TLS config serves;
//! - **next**: minted ahead of time, published but not served yet;
//! - **previous**: served until the last promotion, published until it expires so that pages
//!   (or other gateway instances) still using it keep working.
//!
//! With `renew_before = R` and `switch_before = S` (`S < R`), one identity's life goes:
//!
//! ```text
//! not_before   (now at mint) - 1h                    not_after - R   not_after - S      not_after
//!     |----------------- current, published alone ---------|---------------|-------------|
//!                                        mint next, publish both ^        ^ promote next  ^ drop
//! ```
//!
//! so the next identity's hash is on `/v1/cert-hashes` for `R - S` before any connection is
//! offered its certificate, and the old one stays listed until it expires. With the defaults
//! (14-day lifetime, `R` = 4 days, `S` = 3 days) a new identity is minted about 10 days after the
//! last, served from day 11, and the old one disappears on day 14.
//!
//! # Drive contract
//!
//! [`RotationPolicy::decide`] returns one [`RotationAction`] at a time. Apply it, then call
//! `decide` again, until it says [`RotationAction::Wait`]; then publish
//! [`RotationDecision::publish`] and call again no later than [`RotationDecision::wake_at`] (or
//! whenever the clock jumps). [`RotationState`] holds the three slots and applies the actions:
//!
//! ```
//! # use std::time::{Duration, SystemTime};
//! # use strait_certs::{DevIdentityConfig, Identity, RotationAction, RotationPolicy, RotationState};
//! let policy = RotationPolicy::default();
//! let config = policy.dev_config(Vec::new());
//! let mut now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
//! let mut state = RotationState::new(Identity::generate_dev(&config, now)?);
//! now += Duration::from_secs(10 * 24 * 3600);
//! let decision = loop {
//!     let decision = state.decide(&policy, now);
//!     match decision.action {
//!         RotationAction::MintNext => {
//!             state.install_next(Identity::generate_dev(&config, now)?);
//!         }
//!         RotationAction::PromoteNext => {
//!             state.promote_next(); // and give the TLS config `state.current()`
//!         }
//!         RotationAction::DropPrevious => {
//!             state.drop_previous();
//!         }
//!         _ => break decision, // Wait
//!     }
//! };
//! assert_eq!(decision.publish.len(), 2); // day 10: current and next
//! # Ok::<(), strait_certs::GenerateError>(())
//! ```

use std::time::{Duration, SystemTime};

use crate::dev::{DEV_BACKDATE, DevIdentityConfig, MAX_DEV_VALIDITY};
use crate::fingerprint::Fingerprint;
use crate::identity::IdentityInfo;

/// When to mint the next development identity, when to start serving it, and (implicitly) when to
/// forget the previous one. See the [module docs](self) for the timeline.
///
/// If `switch_before >= renew_before`, the next identity is served as soon as it is minted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    lifetime: Duration,
    renew_before: Duration,
    switch_before: Duration,
}

/// A [`RotationPolicy`] that would not work.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RotationPolicyError {
    /// The lifetime exceeds what browsers accept for `serverCertificateHashes`.
    #[error("lifetime of {lifetime:?} exceeds the {max:?} that browsers accept")]
    LifetimeTooLong {
        /// The requested lifetime.
        lifetime: Duration,
        /// [`MAX_DEV_VALIDITY`].
        max: Duration,
    },
    /// A freshly minted identity (back-dated by [`DEV_BACKDATE`]) would already be due for
    /// renewal, so the gateway would mint forever.
    #[error(
        "renewing {renew_before:?} before expiry leaves nothing of a {lifetime:?} lifetime \
         back-dated by one hour"
    )]
    RenewTooEarly {
        /// The requested lead time.
        renew_before: Duration,
        /// The requested lifetime.
        lifetime: Duration,
    },
}

impl Default for RotationPolicy {
    /// 14-day identities, minted when 4 days remain, served when 3 days remain.
    fn default() -> Self {
        Self {
            lifetime: MAX_DEV_VALIDITY,
            renew_before: Self::DEFAULT_RENEW_BEFORE,
            switch_before: Self::DEFAULT_SWITCH_BEFORE,
        }
    }
}

impl RotationPolicy {
    /// Default lead time for minting: 4 days, so a 14-day identity is replaced after about 10.
    pub const DEFAULT_RENEW_BEFORE: Duration = Duration::from_secs(4 * 24 * 60 * 60);
    /// Default lead time for serving the next identity: 3 days, so its hash is published a day
    /// before any connection is offered its certificate.
    pub const DEFAULT_SWITCH_BEFORE: Duration = Duration::from_secs(3 * 24 * 60 * 60);

    /// A policy for identities of `lifetime` (the whole validity period, as in
    /// [`DevIdentityConfig::validity`]), minting the next when less than `renew_before` remains
    /// and serving it when less than `switch_before` remains.
    ///
    /// Requires `lifetime <= MAX_DEV_VALIDITY` and `renew_before + DEV_BACKDATE < lifetime`.
    pub fn new(
        lifetime: Duration,
        renew_before: Duration,
        switch_before: Duration,
    ) -> Result<Self, RotationPolicyError> {
        if lifetime > MAX_DEV_VALIDITY {
            return Err(RotationPolicyError::LifetimeTooLong {
                lifetime,
                max: MAX_DEV_VALIDITY,
            });
        }
        if renew_before.saturating_add(DEV_BACKDATE) >= lifetime {
            return Err(RotationPolicyError::RenewTooEarly {
                renew_before,
                lifetime,
            });
        }
        Ok(Self {
            lifetime,
            renew_before,
            switch_before,
        })
    }

    /// The validity period to mint identities with.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Mint the next identity once less than this remains of the current one.
    pub fn renew_before(&self) -> Duration {
        self.renew_before
    }

    /// Serve the next identity once less than this remains of the current one.
    pub fn switch_before(&self) -> Duration {
        self.switch_before
    }

    /// A [`DevIdentityConfig`] with this policy's lifetime and the given extra names.
    pub fn dev_config(&self, names: Vec<String>) -> DevIdentityConfig {
        DevIdentityConfig {
            names,
            validity: self.lifetime,
        }
    }

    /// When the next identity should be minted: `current.not_after - renew_before`.
    pub fn renew_at(&self, current: &IdentityInfo) -> SystemTime {
        before(current.not_after, self.renew_before)
    }

    /// When the next identity should be served: `current.not_after - switch_before`.
    pub fn switch_at(&self, current: &IdentityInfo) -> SystemTime {
        before(current.not_after, self.switch_before)
    }

    /// The one thing to do now, what to publish, and when to ask again. Pure: the same inputs
    /// give the same decision.
    ///
    /// In order of precedence:
    /// 1. [`DropPrevious`](RotationAction::DropPrevious) if `previous` has reached its
    ///    `not_after`;
    /// 2. [`PromoteNext`](RotationAction::PromoteNext) if there is a `next`, `now` has reached
    ///    [`switch_at`](Self::switch_at)`(current)` and `next` has reached its `not_before`;
    /// 3. [`MintNext`](RotationAction::MintNext) if there is no `next` and `now` has reached
    ///    [`renew_at`](Self::renew_at)`(current)`;
    /// 4. otherwise [`Wait`](RotationAction::Wait) until the earliest of those instants.
    ///
    /// Catching up after a long sleep takes several steps (promote, drop, mint, promote, drop),
    /// each of which the caller applies before asking again.
    pub fn decide(
        &self,
        current: &IdentityInfo,
        next: Option<&IdentityInfo>,
        previous: Option<&IdentityInfo>,
        now: SystemTime,
    ) -> RotationDecision {
        let mut publish = Vec::with_capacity(3);
        publish.push(current.fingerprint);
        publish.extend(next.map(|n| n.fingerprint));
        let previous_live = previous.filter(|p| now < p.not_after);
        publish.extend(previous_live.map(|p| p.fingerprint));

        let action = if previous.is_some() && previous_live.is_none() {
            RotationAction::DropPrevious
        } else if next.is_some_and(|n| now >= self.switch_at(current) && now >= n.not_before) {
            RotationAction::PromoteNext
        } else if next.is_none() && now >= self.renew_at(current) {
            RotationAction::MintNext
        } else {
            RotationAction::Wait
        };

        let wake_at = if action == RotationAction::Wait {
            // Every candidate is after `now`, or the action would not be `Wait`.
            let due = match next {
                Some(n) => self.switch_at(current).max(n.not_before),
                None => self.renew_at(current),
            };
            previous_live.map_or(due, |p| due.min(p.not_after))
        } else {
            now
        };

        RotationDecision {
            action,
            publish,
            wake_at,
        }
    }
}

fn before(t: SystemTime, lead: Duration) -> SystemTime {
    t.checked_sub(lead).unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The step [`RotationPolicy::decide`] asks for.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RotationAction {
    /// Nothing to do before [`RotationDecision::wake_at`].
    Wait,
    /// Mint a new identity (with [`RotationPolicy::dev_config`]) and keep it as `next`; keep
    /// serving `current`.
    MintNext,
    /// Serve `next`: it becomes `current`, `current` becomes `previous` (an older `previous`, if
    /// any, is forgotten), and the TLS config is reloaded.
    PromoteNext,
    /// Forget `previous`: it has expired, so no client can use it.
    DropPrevious,
}

/// The answer of [`RotationPolicy::decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationDecision {
    /// The step to take now.
    pub action: RotationAction,
    /// The certificate hashes to publish for the identities as given (before `action` is
    /// applied): current first, then next, then previous while it has not expired.
    pub publish: Vec<Fingerprint>,
    /// When to call [`decide`](RotationPolicy::decide) again if nothing else happens: `now` if
    /// `action` is not [`Wait`](RotationAction::Wait), otherwise the next instant at which the
    /// decision changes.
    pub wake_at: SystemTime,
}

/// The three identity slots of the [model](self), with the transitions that
/// [`RotationAction`]s ask for. `T` is [`Identity`](crate::Identity) in the gateway and
/// [`IdentityInfo`] in tests.
#[derive(Debug, Clone)]
pub struct RotationState<T> {
    current: T,
    next: Option<T>,
    previous: Option<T>,
}

impl<T: AsRef<IdentityInfo>> RotationState<T> {
    /// Starts with `current` served and nothing else.
    pub fn new(current: T) -> Self {
        Self {
            current,
            next: None,
            previous: None,
        }
    }

    /// The identity to serve.
    pub fn current(&self) -> &T {
        &self.current
    }

    /// The identity minted ahead of time, if any.
    pub fn next(&self) -> Option<&T> {
        self.next.as_ref()
    }

    /// The identity served before the last promotion, if not yet dropped.
    pub fn previous(&self) -> Option<&T> {
        self.previous.as_ref()
    }

    /// [`RotationPolicy::decide`] for these slots.
    pub fn decide(&self, policy: &RotationPolicy, now: SystemTime) -> RotationDecision {
        policy.decide(
            self.current.as_ref(),
            self.next.as_ref().map(AsRef::as_ref),
            self.previous.as_ref().map(AsRef::as_ref),
            now,
        )
    }

    /// Applies [`RotationAction::MintNext`]: stores `next`, returning any `next` it replaces.
    pub fn install_next(&mut self, next: T) -> Option<T> {
        self.next.replace(next)
    }

    /// Applies [`RotationAction::PromoteNext`]: `next` becomes `current` and `current` becomes
    /// `previous`. Returns `false`, changing nothing, if there is no `next`.
    pub fn promote_next(&mut self) -> bool {
        let Some(next) = self.next.take() else {
            return false;
        };
        let old = std::mem::replace(&mut self.current, next);
        self.previous = Some(old);
        true
    }

    /// Applies [`RotationAction::DropPrevious`], returning the dropped identity.
    pub fn drop_previous(&mut self) -> Option<T> {
        self.previous.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000)
    }

    fn info(tag: u8, minted: SystemTime, lifetime: Duration) -> IdentityInfo {
        IdentityInfo {
            fingerprint: Fingerprint::from_bytes([tag; 32]),
            spki_fingerprint: Fingerprint::from_bytes([!tag; 32]),
            not_before: minted - HOUR,
            not_after: minted - HOUR + lifetime,
        }
    }

    #[test]
    fn validation() {
        assert!(RotationPolicy::new(15 * DAY, DAY, DAY).is_err());
        assert!(RotationPolicy::new(14 * DAY, 14 * DAY - HOUR, DAY).is_err());
        assert!(RotationPolicy::new(14 * DAY, 14 * DAY - 2 * HOUR, DAY).is_ok());
        let p = RotationPolicy::default();
        assert_eq!(
            RotationPolicy::new(p.lifetime(), p.renew_before(), p.switch_before()),
            Ok(p)
        );
    }

    #[test]
    fn switch_after_renew_serves_next_at_once() {
        let policy = RotationPolicy::new(14 * DAY, 2 * DAY, 5 * DAY).unwrap();
        let cur = info(1, t0(), 14 * DAY);
        let at = policy.renew_at(&cur);
        assert_eq!(
            policy.decide(&cur, None, None, at).action,
            RotationAction::MintNext
        );
        let next = info(2, at, 14 * DAY);
        let d = policy.decide(&cur, Some(&next), None, at);
        assert_eq!(d.action, RotationAction::PromoteNext);
    }
}
