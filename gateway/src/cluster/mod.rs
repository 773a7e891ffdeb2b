//! The cluster: several gateways sharing one Redis, each room on one node.
//!
//! - `record`: what a node publishes about itself, and the choice of a node for a room that
//!   has none (pure);
//! - `store`: the keys and the scripts that change them atomically, fenced by epochs;
//! - [`Cluster`]: this node's view — where a room is served ([`Cluster::place`]), the node that
//!   issued a resume token ([`Cluster::node_of`]), readiness — and the task that renews the
//!   node's lease and its rooms' placements ([`Cluster::run`]).
//!
//! Outside a cluster (no `cluster.redis_url`) every room is served here and nothing touches the
//! network. Inside one, Redis is asked only when a room that this node does not serve is
//! joined (one script call), and by the renewal task once per heartbeat; the media path and the
//! rooms already here never wait on it, so a Redis outage stops only new rooms.

mod record;
mod store;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub(crate) use self::record::{NodeRecord, NodeState};
use self::store::{Renewed, Store};
use crate::config::{ClusterConfig, ValidConfig};
use crate::metrics::{ClusterEvent, Metrics};

/// Where a room is served.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Placed {
    /// On this node.
    Here,
    /// On another node: redirect there.
    Elsewhere(Box<NodeRecord>),
    /// Nowhere for now (the cluster's directory is unreachable, or every node is full).
    Unavailable(String),
}

/// The moves of one room away from this node (this node lost it, or handed it over in a
/// drain), for a session of that room to listen to ([`Cluster::moves`]): only that room's
/// sessions wake when it moves.
#[derive(Debug)]
pub(crate) struct Moves(Option<watch::Receiver<Option<Arc<NodeRecord>>>>);

impl Moves {
    /// The room's next owner, once it moves; never resolves outside a cluster or for a session
    /// without one room. Cancel-safe.
    pub(crate) async fn next(&mut self) -> Arc<NodeRecord> {
        if let Some(receiver) = &mut self.0 {
            while receiver.changed().await.is_ok() {
                if let Some(to) = receiver.borrow_and_update().clone() {
                    return to;
                }
            }
        }
        std::future::pending().await
    }

    /// A move announced and not yet taken, if any.
    pub(crate) fn pending(&mut self) -> Option<Arc<NodeRecord>> {
        let receiver = self.0.as_mut()?;
        if receiver.has_changed().unwrap_or(false) {
            receiver.borrow_and_update().clone()
        } else {
            None
        }
    }
}

/// Room renewals and releases in flight at once on the connection to Redis.
const IN_FLIGHT: usize = 64;

/// What the cluster needs to know about this node, asked at each heartbeat.
pub(crate) trait Local: Send + Sync + 'static {
    /// From 0 (idle) to 1 (full).
    fn load(&self) -> f64;
    /// Whether any participant of `room` is on this node.
    fn hosts(&self, room: &str) -> bool;
    /// SHA-256 (lowercase hex) of the certificates served now and next.
    fn cert_hashes(&self) -> Vec<String>;
}

/// This node's view of the cluster (cheap to clone). Outside a cluster, every room is here.
#[derive(Debug, Clone)]
pub(crate) struct Cluster(Option<Arc<Inner>>);

#[derive(Debug)]
struct Inner {
    config: ClusterConfig,
    store: Store,
    incarnation: u64,
    state: Mutex<State>,
    metrics: Arc<Metrics>,
    /// Per room with a session listening, where it went last (see [`Moves`]); rooms nobody
    /// listens to any more are pruned at each heartbeat.
    moves: Mutex<HashMap<String, watch::Sender<Option<Arc<NodeRecord>>>>>,
}

#[derive(Debug)]
struct State {
    /// What this node publishes (its load and hashes are refreshed at each heartbeat).
    me: NodeRecord,
    /// The rooms this node owns: their epoch, and since when no participant of theirs has been
    /// here.
    rooms: HashMap<String, Owned>,
    /// When the lease was last renewed.
    renewed: Option<Instant>,
    rng: StdRng,
}

#[derive(Debug, Clone, Copy)]
struct Owned {
    epoch: u64,
    idle_since: Option<Instant>,
}

impl Cluster {
    /// The view of a node outside any cluster.
    pub(crate) fn single() -> Cluster {
        Cluster(None)
    }

    /// This node's view, from the configuration and its bound ports; nothing is sent before
    /// [`run`](Self::run).
    pub(crate) fn new(
        config: &ValidConfig,
        quic: SocketAddr,
        http: SocketAddr,
        metrics: Arc<Metrics>,
        seed: [u8; 32],
    ) -> anyhow::Result<Cluster> {
        let cluster = &config.cluster;
        let Some(url) = &cluster.redis_url else {
            return Ok(Cluster::single());
        };
        let store = Store::new(cluster, url)?;
        let mut rng = StdRng::from_seed(seed);
        // Never 0: 0 marks resume tokens issued outside a cluster.
        let incarnation = rng.random::<u64>() | 1;
        let id = cluster
            .node_id
            .clone()
            .unwrap_or_else(|| format!("node-{:08x}", rng.random::<u32>()));
        let host = match &cluster.public_host {
            Some(host) => host.clone(),
            None => match quic.ip() {
                ip if ip.is_unspecified() => "127.0.0.1".into(),
                ip => ip.to_string(),
            },
        };
        let host = match host.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
            _ => host,
        };
        let me = NodeRecord {
            id,
            incarnation: format!("{incarnation:016x}"),
            state: NodeState::Serving,
            quic: format!("{host}:{}", quic.port()),
            webtransport: format!("https://{host}:{}{}", quic.port(), config.webtransport.path),
            http: format!("http://{host}:{}", http.port()),
            region: cluster.region.clone(),
            cert_hashes: Vec::new(),
            load: 0.0,
        };
        Ok(Cluster(Some(Arc::new(Inner {
            config: cluster.clone(),
            store,
            incarnation,
            state: Mutex::new(State {
                me,
                rooms: HashMap::new(),
                renewed: None,
                rng,
            }),
            metrics,
            moves: Mutex::new(HashMap::new()),
        }))))
    }

    /// The moves of `room` away from this node, for a session of it to listen to (a session
    /// without one room, or outside a cluster, hears none). Only moves from now on are heard.
    pub(crate) fn moves(&self, room: Option<&str>) -> Moves {
        let (Some(inner), Some(room)) = (&self.0, room) else {
            return Moves(None);
        };
        let mut moves = inner.moves.lock().unwrap_or_else(|e| e.into_inner());
        let sender = moves
            .entry(room.to_owned())
            .or_insert_with(|| watch::channel(None).0);
        Moves(Some(sender.subscribe()))
    }

    /// Hands every room of this (draining) node that has participants here to other serving
    /// nodes and tells their sessions here where to go; returns how many moved. Rooms no other
    /// node can take stay (their sessions get the plain go-away of the drain); empty ones are
    /// given back at the end. Outside a cluster, or with Redis unreachable, nothing moves.
    pub(crate) async fn hand_over_rooms(&self, local: &impl Local) -> usize {
        let Some(inner) = &self.0 else {
            return 0;
        };
        inner.hand_over_rooms(local).await
    }

    /// This node's incarnation, put into the resume tokens it issues (0 outside a cluster).
    pub(crate) fn incarnation(&self) -> u64 {
        self.0.as_ref().map_or(0, |inner| inner.incarnation)
    }

    /// This node's id in the cluster.
    pub(crate) fn node_id(&self) -> Option<String> {
        self.0.as_ref().map(|inner| inner.lock().me.id.clone())
    }

    /// This node's HTTP URL (`http://host:port`) in a cluster: what absolute WHIP/WHEP
    /// resource URLs start with.
    pub(crate) fn public_http(&self) -> Option<String> {
        self.0.as_ref().map(|inner| inner.lock().me.http.clone())
    }

    /// How long the access token in a redirect is valid.
    pub(crate) fn redirect_token_ttl(&self) -> Duration {
        self.0.as_ref().map_or(Duration::from_secs(60), |inner| {
            inner.config.redirect_token_ttl
        })
    }

    /// Where `room` is served: here if this node owns it; else its live owner's node; else the
    /// node chosen for it (this one while its load is under `cluster.load_threshold`), which
    /// takes it at once — so that concurrent first joins through several nodes all end at one
    /// owner.
    pub(crate) async fn place(&self, room: &str) -> Placed {
        let Some(inner) = &self.0 else {
            return Placed::Here;
        };
        let placed = inner.place(room).await;
        let event = match &placed {
            Placed::Here => ClusterEvent::PlacedHere,
            Placed::Elsewhere(_) => ClusterEvent::Redirected,
            Placed::Unavailable(_) => ClusterEvent::Unavailable,
        };
        inner.metrics.cluster_event(event);
        placed
    }

    /// The live node of incarnation `incarnation` (from a resume token), if it is not this one.
    /// `Ok(None)`: no such node lives (or this is it); `Err`: the directory is unreachable.
    pub(crate) async fn node_of(&self, incarnation: u64) -> Result<Option<NodeRecord>, String> {
        let Some(inner) = &self.0 else {
            return Ok(None);
        };
        if incarnation == 0 || incarnation == inner.incarnation {
            return Ok(None);
        }
        let wanted = format!("{incarnation:016x}");
        match inner.store.nodes().await {
            // A draining node is letting its sessions go: a token of its is not sent back.
            Ok(nodes) => Ok(nodes
                .into_iter()
                .find(|n| n.incarnation == wanted && n.state == NodeState::Serving)),
            Err(e) => {
                inner.metrics.cluster_event(ClusterEvent::RedisError);
                Err(e.to_string())
            }
        }
    }

    /// The serving nodes of the cluster (this one included, if serving), for clients to fall
    /// back to when their node dies. Empty outside a cluster; `Err` when the directory is
    /// unreachable.
    pub(crate) async fn serving_nodes(&self) -> Result<Vec<NodeRecord>, String> {
        let Some(inner) = &self.0 else {
            return Ok(Vec::new());
        };
        match inner.store.nodes().await {
            Ok(mut nodes) => {
                nodes.retain(|n| n.state == NodeState::Serving);
                nodes.sort_by(|a, b| a.id.cmp(&b.id));
                Ok(nodes)
            }
            Err(e) => {
                inner.metrics.cluster_event(ClusterEvent::RedisError);
                Err(e.to_string())
            }
        }
    }

    /// `Err(why)` while this node cannot vouch for its lease (never renewed, or not for longer
    /// than the lease): it is unready, though everything already here goes on.
    pub(crate) fn ready(&self) -> Result<(), String> {
        let Some(inner) = &self.0 else {
            return Ok(());
        };
        match inner.lock().renewed {
            Some(at) if at.elapsed() <= inner.config.lease => Ok(()),
            Some(at) => Err(format!(
                "cluster: lease not renewed for {} ms",
                at.elapsed().as_millis()
            )),
            None => Err("cluster: not registered yet".into()),
        }
    }

    /// Marks this node draining in its next lease renewal: it takes no new rooms.
    pub(crate) fn set_draining(&self) {
        if let Some(inner) = &self.0 {
            inner.lock().me.state = NodeState::Draining;
        }
    }

    /// Renews the lease every heartbeat and each owned room every third of the room lease,
    /// releases rooms that have had no participant here for two heartbeats, until `stop`; then
    /// releases every room and the lease. Returns at once outside a cluster.
    pub(crate) async fn run(self, local: impl Local, stop: CancellationToken) {
        let Some(inner) = self.0 else {
            return;
        };
        let heartbeat = inner.config.heartbeat;
        let room_every = inner.config.room_lease / 3;
        let mut ticks = tokio::time::interval(heartbeat);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rooms_renewed = Instant::now();
        let mut failing = true;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = ticks.tick() => {}
            }
            let me = {
                let mut state = inner.lock();
                state.me.load = local.load();
                state.me.cert_hashes = local.cert_hashes();
                state.me.clone()
            };
            let lease_ms = millis(inner.config.lease);
            match inner.store.heartbeat(&me, lease_ms).await {
                Ok(()) => {
                    inner.lock().renewed = Some(Instant::now());
                    inner.metrics.cluster_event(ClusterEvent::LeaseRenewed);
                    if failing {
                        tracing::info!(node = %me.id, "cluster lease renewed");
                    }
                }
                Err(e) => {
                    inner.metrics.cluster_event(ClusterEvent::RedisError);
                    if !failing {
                        tracing::warn!(error = %e, "cluster lease not renewed");
                    }
                    failing = true;
                    continue;
                }
            }
            // Right after an outage every room is renewed (and re-claimed if it was lost from
            // Redis); otherwise every third of the room lease.
            let renew_all = failing || rooms_renewed.elapsed() >= room_every;
            failing = false;
            inner.release_idle(&local, &me, heartbeat).await;
            inner.prune_moves();
            if renew_all {
                rooms_renewed = Instant::now();
                inner.renew_rooms(&me).await;
            }
        }
        // Stopping: give back every room and the lease, so that others take them at once.
        let me = inner.lock().me.clone();
        let rooms: Vec<(String, u64)> = inner
            .lock()
            .rooms
            .drain()
            .map(|(room, owned)| (room, owned.epoch))
            .collect();
        for (room, epoch) in rooms {
            let _ = inner.store.release(&room, &me, epoch).await;
        }
        let _ = inner.store.unregister(&me).await;
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn place(&self, room: &str) -> Placed {
        let me = {
            let state = self.lock();
            if state.rooms.contains_key(room) {
                return Placed::Here;
            }
            match state.renewed {
                Some(at) if at.elapsed() <= self.config.lease => {}
                _ => {
                    return Placed::Unavailable(
                        "the cluster directory is unreachable; retry shortly".into(),
                    );
                }
            }
            state.me.clone()
        };
        let candidate = if me.state == NodeState::Serving && me.load < self.config.load_threshold {
            me.clone()
        } else {
            let nodes = match self.store.nodes().await {
                Ok(nodes) => nodes,
                Err(e) => return self.unreachable(&e),
            };
            let chosen = {
                let mut state = self.lock();
                let rng = &mut state.rng;
                record::choose(&me, &nodes, self.config.load_threshold, |n| {
                    rng.random_range(0..n)
                })
                .cloned()
            };
            match chosen {
                Some(node) => node,
                None => return Placed::Unavailable("every node of the cluster is full".into()),
            }
        };
        match self
            .store
            .claim(room, &candidate, millis(self.config.room_lease))
            .await
        {
            Ok(Some((owner, epoch))) => {
                if owner.id == me.id && owner.incarnation == me.incarnation {
                    self.lock().rooms.entry(room.to_owned()).or_insert(Owned {
                        epoch,
                        idle_since: Some(Instant::now()),
                    });
                    Placed::Here
                } else {
                    Placed::Elsewhere(Box::new(owner))
                }
            }
            Ok(None) => Placed::Unavailable(format!(
                "node {} left the cluster while the room was placed; retry",
                candidate.id
            )),
            Err(e) => self.unreachable(&e),
        }
    }

    fn unreachable(&self, e: &store::StoreError) -> Placed {
        self.metrics.cluster_event(ClusterEvent::RedisError);
        tracing::warn!(error = %e, "cluster directory unreachable");
        Placed::Unavailable("the cluster directory is unreachable; retry shortly".into())
    }

    /// Releases the rooms that have had nobody here for two heartbeats.
    async fn release_idle(&self, local: &impl Local, me: &NodeRecord, heartbeat: Duration) {
        let now = Instant::now();
        let idle: Vec<(String, u64)> = {
            let mut state = self.lock();
            let mut idle = Vec::new();
            for (room, owned) in &mut state.rooms {
                if local.hosts(room) {
                    owned.idle_since = None;
                    continue;
                }
                let since = *owned.idle_since.get_or_insert(now);
                if now.duration_since(since) >= 2 * heartbeat {
                    idle.push((room.clone(), owned.epoch));
                }
            }
            idle
        };
        let releases = futures::stream::iter(idle)
            .map(|(room, epoch)| async move {
                let released = self.store.release(&room, me, epoch).await;
                (room, released)
            })
            .buffer_unordered(IN_FLIGHT);
        futures::pin_mut!(releases);
        while let Some((room, released)) = releases.next().await {
            match released {
                Ok(_) => {
                    let mut state = self.lock();
                    // A join may have come back meanwhile: keep the entry then (the next
                    // renewal re-claims the room if the release went through).
                    if !local.hosts(&room) {
                        state.rooms.remove(&room);
                    }
                }
                Err(e) => {
                    self.metrics.cluster_event(ClusterEvent::RedisError);
                    tracing::debug!(error = %e, room, "room release failed; retried");
                }
            }
        }
    }

    async fn renew_rooms(&self, me: &NodeRecord) {
        let rooms: Vec<(String, u64)> = self
            .lock()
            .rooms
            .iter()
            .map(|(room, owned)| (room.clone(), owned.epoch))
            .collect();
        let ttl = millis(self.config.room_lease);
        // Many at once on the one multiplexed connection (they pipeline), so that a node with
        // thousands of rooms renews them in a few round trips, not one each, and its next lease
        // renewal is not late.
        let renewals = futures::stream::iter(rooms)
            .map(|(room, epoch)| async move {
                let renewed = self.store.renew(&room, me, epoch, ttl).await;
                (room, renewed)
            })
            .buffer_unordered(IN_FLIGHT);
        futures::pin_mut!(renewals);
        while let Some((room, renewed)) = renewals.next().await {
            match renewed {
                Ok(Renewed::Kept(epoch)) => self.set_epoch(&room, epoch),
                Ok(Renewed::Reclaimed(epoch)) => {
                    self.metrics.cluster_event(ClusterEvent::Reclaimed);
                    tracing::info!(room, epoch, "room placement re-claimed");
                    self.set_epoch(&room, epoch);
                }
                Ok(Renewed::Lost(owner)) => {
                    // This node was paused or cut off long enough for another to take the
                    // room: its sessions here go there.
                    self.metrics.cluster_event(ClusterEvent::Lost);
                    tracing::warn!(room, owner = %owner.id, "room now owned by another node");
                    self.lock().rooms.remove(&room);
                    self.announce_move(&room, owner);
                }
                Err(e) => {
                    self.metrics.cluster_event(ClusterEvent::RedisError);
                    tracing::debug!(error = %e, room, "room renewal failed");
                }
            }
        }
    }

    async fn hand_over_rooms(&self, local: &impl Local) -> usize {
        let me = {
            let mut state = self.lock();
            state.me.state = NodeState::Draining;
            state.me.clone()
        };
        // Say so at once: no node sends new rooms here from now on.
        if self
            .store
            .heartbeat(&me, millis(self.config.lease))
            .await
            .is_err()
        {
            self.metrics.cluster_event(ClusterEvent::RedisError);
            return 0;
        }
        let nodes: Vec<NodeRecord> = match self.store.nodes().await {
            Ok(nodes) => nodes.into_iter().filter(|n| n.id != me.id).collect(),
            Err(_) => {
                self.metrics.cluster_event(ClusterEvent::RedisError);
                return 0;
            }
        };
        let rooms: Vec<(String, u64)> = self
            .lock()
            .rooms
            .iter()
            .filter(|(room, _)| local.hosts(room))
            .map(|(room, owned)| (room.clone(), owned.epoch))
            .collect();
        let mut moved = 0;
        for (room, epoch) in rooms {
            let target = {
                let mut state = self.lock();
                let rng = &mut state.rng;
                record::choose(&me, &nodes, self.config.load_threshold, |n| {
                    rng.random_range(0..n)
                })
                .filter(|n| n.id != me.id)
                .cloned()
            };
            let Some(target) = target else {
                break;
            };
            let ttl = millis(self.config.room_lease);
            match self.store.hand_over(&room, &me, epoch, &target, ttl).await {
                Ok(Some(owner)) => {
                    self.lock().rooms.remove(&room);
                    self.metrics.cluster_event(ClusterEvent::HandedOver);
                    self.announce_move(&room, owner);
                    moved += 1;
                }
                Ok(None) => {}
                Err(e) => {
                    self.metrics.cluster_event(ClusterEvent::RedisError);
                    tracing::warn!(error = %e, "rooms not handed over");
                    break;
                }
            }
        }
        moved
    }

    /// Tells the sessions of `room` here that `to` owns it now.
    fn announce_move(&self, room: &str, to: NodeRecord) {
        let moves = self.moves.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = moves.get(room) {
            sender.send_replace(Some(Arc::new(to)));
        }
    }

    /// Forgets the rooms nobody listens to any more.
    fn prune_moves(&self) {
        let mut moves = self.moves.lock().unwrap_or_else(|e| e.into_inner());
        moves.retain(|_, sender| sender.receiver_count() > 0);
    }

    fn set_epoch(&self, room: &str, epoch: u64) {
        if let Some(owned) = self.lock().rooms.get_mut(room) {
            owned.epoch = epoch;
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
