//! Supervision: whether the gateway's long-lived parts — each media worker, the TURN server —
//! are alive and turning.
//!
//! Each part holds a [`Heart`]: it beats at every turn of its loop (at least once a second when
//! idle), and says so when it ends, with the cause of a panic. [`Health::problems`] reads them: a
//! part that ended while the gateway was not stopping is dead, one that has not beaten for
//! `health.stall_timeout` is stalled. `/readyz` and `/healthz` answer 503 with the problems, so an
//! orchestrator stops sending traffic and restarts the process. The HTTP server needs no heart: if
//! it is dead or stalled, nothing answers the probes, which is what the orchestrator sees.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often an idle part beats anyway.
pub(crate) const IDLE_BEAT: Duration = Duration::from_secs(1);

/// The parts of the gateway under watch.
#[derive(Debug)]
pub(crate) struct Health {
    start: Instant,
    stall_timeout: Duration,
    parts: Mutex<Vec<Arc<Part>>>,
    stopping: AtomicBool,
}

#[derive(Debug)]
struct Part {
    name: String,
    /// Milliseconds since `start` at the last beat.
    beat: AtomicU64,
    /// Why it ended, once it has.
    ended: Mutex<Option<String>>,
    /// Its load-shedding level (media workers).
    shedding: std::sync::atomic::AtomicU8,
}

/// What is wrong with a part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Problem {
    /// It ended: a panic (with its message) or a return while the gateway was not stopping.
    Dead {
        /// The part.
        part: String,
        /// Why.
        cause: String,
    },
    /// It has not turned its loop for this long.
    Stalled {
        /// The part.
        part: String,
        /// Since its last beat.
        for_: Duration,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Dead { part, cause } => write!(f, "{part} is dead: {cause}"),
            Problem::Stalled { part, for_ } => {
                write!(
                    f,
                    "{part} is stalled: no progress for {:.1} s",
                    for_.as_secs_f64()
                )
            }
        }
    }
}

impl Health {
    /// Nothing under watch yet; a part is stalled after `stall_timeout` without a beat.
    pub(crate) fn new(stall_timeout: Duration) -> Health {
        Health {
            start: Instant::now(),
            stall_timeout,
            parts: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
        }
    }

    /// Puts a part under watch; it beats through the returned heart.
    pub(crate) fn register(self: &Arc<Self>, name: impl Into<String>) -> Heart {
        let part = Arc::new(Part {
            name: name.into(),
            beat: AtomicU64::new(0),
            ended: Mutex::new(None),
            shedding: std::sync::atomic::AtomicU8::new(0),
        });
        let heart = Heart {
            part: part.clone(),
            health: self.clone(),
        };
        heart.beat(Instant::now());
        self.parts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(part);
        heart
    }

    /// The gateway is stopping: parts that end now are not dead.
    pub(crate) fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// What is wrong now (nothing, when all is well).
    pub(crate) fn problems(&self, now: Instant) -> Vec<Problem> {
        let now_ms = self.millis(now);
        let parts = self
            .parts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut problems = Vec::new();
        for part in parts.iter() {
            let ended = part
                .ended
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            if let Some(cause) = ended {
                problems.push(Problem::Dead {
                    part: part.name.clone(),
                    cause,
                });
                continue;
            }
            let since =
                Duration::from_millis(now_ms.saturating_sub(part.beat.load(Ordering::Relaxed)));
            if since >= self.stall_timeout {
                problems.push(Problem::Stalled {
                    part: part.name.clone(),
                    for_: since,
                });
            }
        }
        problems
    }

    /// The parts shedding load now, with their levels (`/readyz` is unready while there are
    /// any; `/healthz` is not affected: a restart would not help).
    pub(crate) fn shedding(&self) -> Vec<(String, u8)> {
        self.parts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter_map(|p| {
                let level = p.shedding.load(Ordering::Relaxed);
                (level > 0).then(|| (p.name.clone(), level))
            })
            .collect()
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.start).as_millis()).unwrap_or(u64::MAX)
    }
}

/// A part's side of the watch.
#[derive(Debug, Clone)]
pub(crate) struct Heart {
    part: Arc<Part>,
    health: Arc<Health>,
}

impl Heart {
    /// The part's loop turned at `now`.
    pub(crate) fn beat(&self, now: Instant) {
        self.part
            .beat
            .store(self.health.millis(now), Ordering::Relaxed);
    }

    /// The part's load-shedding level changed.
    pub(crate) fn shedding(&self, level: u8) {
        self.part.shedding.store(level, Ordering::Relaxed);
    }

    /// The part ended, normally (`None`) or with a panic's message. An end while the gateway is
    /// not stopping is a death either way; a panic is logged with its cause.
    pub(crate) fn ended(&self, panic: Option<String>) {
        let cause = match panic {
            Some(message) => {
                tracing::error!(part = %self.part.name, cause = %message, "panicked");
                format!("panicked: {message}")
            }
            None if self.health.stopping.load(Ordering::Relaxed) => return,
            None => {
                tracing::error!(part = %self.part.name, "ended while the gateway was running");
                "ended while the gateway was running".to_owned()
            }
        };
        *self
            .part
            .ended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(cause);
    }
}

/// The message of a panic's payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// A fault to inject into a part, to test the watch.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Block the part's thread for this long.
    Stall(Duration),
    /// Panic.
    Panic,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalls_deaths_and_a_clean_stop() {
        let health = Arc::new(Health::new(Duration::from_secs(3)));
        let worker = health.register("media worker 0");
        let turn = health.register("turn");
        let t0 = Instant::now();
        worker.beat(t0);
        turn.beat(t0);
        assert!(health.problems(t0 + Duration::from_secs(2)).is_empty());
        turn.beat(t0 + Duration::from_secs(2));
        let problems = health.problems(t0 + Duration::from_secs(4));
        assert_eq!(problems.len(), 1);
        assert!(matches!(&problems[0], Problem::Stalled { part, .. } if part == "media worker 0"));
        turn.ended(Some("boom".into()));
        let problems = health.problems(t0 + Duration::from_secs(4));
        assert!(problems.contains(&Problem::Dead {
            part: "turn".into(),
            cause: "panicked: boom".into()
        }));
        // Ending while the gateway stops is not a death.
        let other = Arc::new(Health::new(Duration::from_secs(3)));
        let part = other.register("media worker 1");
        other.stopping();
        part.ended(None);
        assert!(other.problems(Instant::now()).is_empty());
    }
}
