//! Sessions: a client's life from its hello to its end.
//!
//! - [`core`]: the session core, sans-IO: hello, auth, resume, the attach to the hub, rate
//!   limits, violations, timeouts, go-away — the same for every transport. Its drivers are
//!   `quic::session` (raw QUIC and WebTransport) and `http::ws` (`/ws/rtc`);
//! - [`SessionContext`]: what every session's driver needs from its gateway;
//! - `admission`: session slots per node and per source address.

mod admission;
pub(crate) mod core;

#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strait_protocol::{ControlMessage, ErrorCode, GoAway, ParticipantId};
use tokio_util::sync::CancellationToken;

use self::core::{Credentials, SessionSettings};
use crate::auth::{AccessClaims, Authority, RoomGrant, VerifiedToken};
use crate::cluster::{Cluster, NodeRecord, Placed};
use crate::config::ValidConfig;
use crate::metrics::Metrics;
use crate::turn::TurnState;
use crate::worker::{Media, translate};

/// Which of a node's addresses a redirected session goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RedirectPath {
    /// Its WebTransport URL.
    WebTransport,
    /// Its QUIC address (native clients).
    Quic,
    /// Its `/ws/rtc` URL.
    WebSocket,
}

/// What every session's driver needs from its gateway, and nothing else.
#[derive(Debug)]
pub(crate) struct SessionContext {
    /// The configuration.
    pub(crate) config: ValidConfig,
    /// The session core's settings, from the configuration.
    pub(crate) settings: SessionSettings,
    /// Access and resume tokens.
    pub(crate) auth: Authority,
    /// Metrics.
    pub(crate) metrics: Arc<Metrics>,
    /// The media workers.
    pub(crate) media: Media,
    /// Cancelled when the drain starts.
    pub(crate) drain: CancellationToken,
    /// TURN credentials for the `ServerHello`.
    pub(crate) turn: Arc<TurnState>,
    /// Where rooms are served (every room here outside a cluster).
    pub(crate) cluster: Cluster,
    /// Draws participant ids.
    ids: Mutex<StdRng>,
}

impl SessionContext {
    /// The context; participant ids are drawn from an RNG seeded with `seed`.
    pub(crate) fn new(
        config: ValidConfig,
        auth: Authority,
        metrics: Arc<Metrics>,
        media: Media,
        turn: Arc<TurnState>,
        cluster: Cluster,
        seed: [u8; 32],
    ) -> SessionContext {
        let mut settings = SessionSettings::new(&config);
        settings.node = cluster.incarnation();
        SessionContext {
            settings,
            cluster,
            config,
            auth,
            metrics,
            media,
            drain: CancellationToken::new(),
            turn,
            ids: Mutex::new(StdRng::from_seed(seed)),
        }
    }

    /// A fresh, random participant id (never 0).
    pub(crate) fn new_participant_id(&self) -> ParticipantId {
        let mut rng = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let id: u64 = rng.random();
            // Ids stay below 2^53 so that JavaScript clients can hold them in a Number.
            let id = id & ((1 << 53) - 1);
            if id != 0 {
                return ParticipantId(id);
            }
        }
    }

    /// A short-lived access token with `token`'s claims (for its one room) for another node of
    /// the cluster to verify (every node shares the keys); `None` for a token of every room.
    pub(crate) fn redirect_token(&self, token: &VerifiedToken) -> Option<String> {
        let RoomGrant::Room(room) = &token.room else {
            return None;
        };
        let mut claims = AccessClaims::new(
            token.identity.clone(),
            room.0.clone(),
            token.grants,
            SystemTime::now(),
            self.cluster.redirect_token_ttl(),
        );
        claims.name.clone_from(&token.name);
        self.auth.mint(&claims).ok()
    }

    /// The go-away that sends a session to `owner`: the URL for `path` (its WebTransport URL,
    /// its QUIC address, or its `/ws/rtc`), its certificate hashes and, with `token`, a
    /// short-lived access token with the same claims.
    pub(crate) fn redirect(
        &self,
        owner: &NodeRecord,
        path: RedirectPath,
        token: Option<&VerifiedToken>,
    ) -> GoAway {
        let redirect = match path {
            RedirectPath::WebTransport => owner.webtransport.clone(),
            RedirectPath::Quic => owner.quic.clone(),
            RedirectPath::WebSocket => {
                let host = owner.http.strip_prefix("http://").unwrap_or(&owner.http);
                format!("ws://{host}/ws/rtc")
            }
        };
        GoAway {
            code: ErrorCode::REDIRECT,
            redirect: Some(redirect),
            cert_hashes: owner.cert_hashes.clone(),
            token: token.and_then(|t| self.redirect_token(t)),
        }
    }

    /// In a cluster, a `Join` under a token for every room (an admin's; a token for one room
    /// was placed at the hello) is placed like a session: `Some(answer)` refuses it — with
    /// `REDIRECT` naming the node that serves the room, or `UNAVAILABLE`.
    pub(crate) async fn place_join(
        &self,
        token: Option<&VerifiedToken>,
        message: &ControlMessage,
    ) -> Option<ControlMessage> {
        let ControlMessage::Join(join) = message else {
            return None;
        };
        if !matches!(token.map(|t| &t.room), Some(RoomGrant::Any)) {
            return None;
        }
        match self.cluster.place(&join.room.0).await {
            Placed::Here => None,
            Placed::Elsewhere(owner) => Some(translate::error(
                join.request,
                ErrorCode::REDIRECT,
                format!(
                    "room `{}` is served by node {} ({}): join it there",
                    join.room, owner.id, owner.quic
                ),
            )),
            Placed::Unavailable(reason) => Some(translate::error(
                join.request,
                ErrorCode::UNAVAILABLE,
                reason,
            )),
        }
    }

    /// What the session core checks tokens with.
    pub(crate) fn credentials(&self) -> Credentials<'_> {
        Credentials {
            keys: &self.auth.keys,
            resume: &self.auth.resume,
        }
    }
}

pub(crate) use self::admission::Admission;
