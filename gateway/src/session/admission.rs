//! Session slots: per node, per source address, and handshakes in flight.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::RefusalReason;

/// Per-node and per-IP session counts. A permit is held for the whole life of a session.
#[derive(Debug)]
pub(crate) struct Admission {
    sessions: Arc<Semaphore>,
    handshakes: Arc<Semaphore>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_per_ip: usize,
    /// Woken whenever a session ends (the drain waits on it).
    ended: tokio::sync::Notify,
}

/// Held while a session lives; releases its slots when dropped.
#[derive(Debug)]
pub(crate) struct SessionPermit {
    _node: OwnedSemaphorePermit,
    ip: IpAddr,
    admission: Arc<Admission>,
}

impl Drop for SessionPermit {
    fn drop(&mut self) {
        let mut map = self
            .admission
            .per_ip
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
        drop(map);
        self.admission.ended.notify_waiters();
    }
}

impl Admission {
    /// Limits from the configuration.
    pub(crate) fn new(
        max_sessions: usize,
        max_per_ip: usize,
        max_handshakes: usize,
    ) -> Arc<Admission> {
        Arc::new(Admission {
            sessions: Arc::new(Semaphore::new(max_sessions)),
            handshakes: Arc::new(Semaphore::new(max_handshakes)),
            per_ip: Mutex::new(HashMap::new()),
            max_per_ip,
            ended: tokio::sync::Notify::new(),
        })
    }

    /// Takes a session slot for `ip`, or says which limit is reached.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<SessionPermit, RefusalReason> {
        let node = self
            .sessions
            .clone()
            .try_acquire_owned()
            .map_err(|_| RefusalReason::Sessions)?;
        let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let count = map.entry(ip).or_insert(0);
        if *count >= self.max_per_ip {
            return Err(RefusalReason::SessionsPerIp);
        }
        *count += 1;
        drop(map);
        Ok(SessionPermit {
            _node: node,
            ip,
            admission: self.clone(),
        })
    }

    /// Sessions (and connections being admitted) now, given the configured maximum.
    pub(crate) fn sessions_in_use(&self, max: usize) -> usize {
        max - self.sessions.available_permits()
    }

    /// Resolves when a session ends. Register before checking the count (see `Notify`).
    pub(crate) fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.ended.notified()
    }

    /// Handshakes in progress.
    pub(crate) fn handshakes_in_progress(&self, max: usize) -> usize {
        max - self.handshakes.available_permits()
    }

    /// A handshake slot, if one is free; the handshake holds it until it ends.
    pub(crate) fn handshake(&self) -> Result<OwnedSemaphorePermit, RefusalReason> {
        self.handshakes
            .clone()
            .try_acquire_owned()
            .map_err(|_| RefusalReason::Handshakes)
    }
}
