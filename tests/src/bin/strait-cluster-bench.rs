//! `strait-cluster-bench`: what a cluster of gateways on one Redis costs, and how it fails over.
//!
//! Starts `redis-server` (on a Unix socket, as the cluster tests do) and `--nodes` `strait`
//! processes (`--strait`, default `target/release/strait`) on 127.0.0.2, .3, … with shared
//! `auth.keys` and `auth.resume_secret`, and measures with `strait-client` sessions of this
//! process, all over raw QUIC:
//!
//! 1. **the redirect's cost**: for `--rooms` rooms, a first join through node 1 (which places
//!    the room there), then a join through node 1 (the owner) and one through node 2 (redirected
//!    to node 1), one after the other; the latency of each, from the start of the connect to
//!    `Joined`;
//! 2. **Redis commands per join**: the change of `total_commands_processed` (`INFO stats`; it
//!    counts the commands a script runs as well as the script call) over batches of
//!    `--redis-joins` joins: first joins of new rooms, joins through the owner, joins through
//!    another node; with the breakdown by command (`INFO commandstats`). The bench's own `INFO`
//!    calls are subtracted. Parts 1 and 2 share a cluster whose heartbeat is 10 minutes (lease
//!    30 minutes, room lease an hour), so that no lease or room renewal falls into a batch; the
//!    count over an idle stretch as long as each batch is printed next to it, and so are the
//!    lease renewals the nodes counted meanwhile;
//! 3. **the media gap after `kill -9` of an owner**: `--victims` rooms, each with a publisher
//!    (Opus-like packets of 76 bytes at `--rate` per second) and a subscriber, both joined
//!    through node 1, which owns the rooms; `--bystanders` rooms on the other nodes, the same
//!    way. Their clients use an idle timeout of 3 s, a keep-alive of 1 s and one resume
//!    attempt. Node 1 is killed; when a session ends, its client joins again through another
//!    node (the publisher publishes again, the subscriber subscribes to the new track). Printed:
//!    the victims' gap (last packet before the kill → first after) and its phases, the
//!    bystanders' largest gap between two packets in the same window, and whether each room's
//!    key in Redis names the node where its publisher and subscriber are at the end;
//! 4. **joins per second**: a storm of `--storm` sessions (rooms of `--storm-room-size`) at
//!    `--concurrency`, for each of `--storms` in turn: `one` (all through node 1) or `all`
//!    (spread over every node); joins per second, latency, where the sessions landed, and the
//!    CPU per join of the nodes and of this process.
//!
//! Parts 3 and 4 use `--heartbeat`, `--lease` and `--room-lease` (the gateway's defaults, 1 s,
//! 5 s and 30 s). Parts 1–2, part 3 and each storm have a Redis and nodes of their own.
//! `--parts 1,3` runs some of them (1 and 2 share their cluster). Everything here shares the
//! machine's cores: the nodes, Redis, and this process with its TLS handshakes and sessions.
//!
//! ```text
//! cargo build --release -p strait-gateway -p strait-tests --bin strait --bin strait-cluster-bench
//! target/release/strait-cluster-bench
//! target/release/strait-cluster-bench --parts 3 --victims 100 --bystanders 20
//! target/release/strait-cluster-bench --parts 4 --storms one,all,all,one
//! ```
//!
//! Bounded: every wait has a timeout, every loop a count, traffic stays on loopback, and Redis
//! and the nodes are killed at the end, on error and on Ctrl-C (their handles kill on drop).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::Parser;
use futures::StreamExt;
use strait_client::protocol::TrackId;
use strait_client::{Backoff, Client, ClientConfig, ClientError, Session, SessionEvent, Trust};
use strait_gateway::auth::{AccessClaims, ApiKey, Grants, KeyRing, Secret};
use strait_load::gateway::{GatewayChild, metric, ready};
use strait_load::procfs::{CpuMark, clock_ticks_per_second, load_average};
use strait_tests::fixture::{opus_spec, rtp};
use strait_tests::redis::RedisServer;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Cluster costs and failover, measured on loopback.
#[derive(Debug, Parser)]
#[command(name = "strait-cluster-bench")]
struct Args {
    /// The gateway binary.
    #[arg(long, default_value = "target/release/strait")]
    strait: PathBuf,
    /// Nodes of the cluster (at least 2).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Which parts to run (1 redirect cost, 2 Redis commands per join, 3 failover, 4 join
    /// storm).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4")]
    parts: Vec<u8>,
    /// Part 1: rooms placed on node 1, each joined once through the owner and once through node 2.
    #[arg(long, default_value_t = 200)]
    rooms: usize,
    /// Part 2: joins per batch.
    #[arg(long, default_value_t = 100)]
    redis_joins: usize,
    /// Part 3: rooms on the node that is killed.
    #[arg(long, default_value_t = 100)]
    victims: usize,
    /// Part 3: rooms on the other nodes.
    #[arg(long, default_value_t = 20)]
    bystanders: usize,
    /// Part 3: packets per second of each publisher.
    #[arg(long, default_value_t = 50)]
    rate: u32,
    /// Part 3: longest wait, after the kill, for every victim to receive again (seconds).
    #[arg(long, default_value_t = 60.0)]
    failover_timeout: f64,
    /// Part 4: sessions in each storm.
    #[arg(long, default_value_t = 2000)]
    storm: usize,
    /// Part 4: sessions joining at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Part 4: sessions per room (1: every session places a new room).
    #[arg(long, default_value_t = 1)]
    storm_room_size: usize,
    /// Part 4: the storms to run, in order: `one` (every session through node 1) or `all`
    /// (spread over every node).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "one,all")]
    storms: Vec<StormKind>,
    /// Parts 3 and 4: `cluster.heartbeat`.
    #[arg(long, default_value = "1s")]
    heartbeat: String,
    /// Parts 3 and 4: `cluster.lease`.
    #[arg(long, default_value = "5s")]
    lease: String,
    /// Parts 3 and 4: `cluster.room_lease`.
    #[arg(long, default_value = "30s")]
    room_lease: String,
    /// More `key=value` settings for every node (`strait serve --set`).
    #[arg(long = "set")]
    settings: Vec<String>,
}

/// Where the sessions of a storm connect first.
#[derive(Debug, Clone, Copy, PartialEq, clap::ValueEnum)]
enum StormKind {
    /// Every session through node 1.
    One,
    /// Session `i` through node `i mod nodes`.
    All,
}

const KEY_ID: &str = "cluster-bench";
const SECRET: &str = "cluster-bench-secret-0123456789abcdefghij";
const RESUME_SECRET: &str = "cluster-bench-resume-secret-0123456789ab";

/// Bound on one connect-and-join (the client's own hello and request timeouts come first).
const JOIN_WAIT: Duration = Duration::from_secs(30);
/// Bound on one request (publish, subscribe) or one close.
const REQUEST_WAIT: Duration = Duration::from_secs(15);
/// Bound on a cluster's start, its nodes' readiness included.
const START_WAIT: Duration = Duration::from_secs(60);
/// Joins again after a lost session, at most (each through the next entry node).
const REJOIN_ATTEMPTS: usize = 8;
/// Times one failover client joins again, at most.
const MAX_REJOINS: usize = 3;
/// Longest a publisher sends, whatever happens.
const MAX_SEND: Duration = Duration::from_secs(600);

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        (2..=200).contains(&args.nodes),
        "--nodes must be 2 to 200 (the nodes listen on 127.0.0.2 upwards)"
    );
    ensure!(
        args.rooms > 0 && args.redis_joins > 0 && args.victims > 0 && args.rate > 0,
        "--rooms, --redis-joins, --victims and --rate must be positive"
    );
    ensure!(
        args.storm > 0 && args.concurrency > 0 && args.storm_room_size > 0,
        "--storm, --concurrency and --storm-room-size must be positive"
    );
    println!(
        "strait-cluster-bench: {} nodes of {}, load average {:.2} at the start",
        args.nodes,
        args.strait.display(),
        load_average()
    );
    // On Ctrl-C the run is dropped, and with it every handle: the nodes and Redis are killed.
    tokio::select! {
        result = run(&args) => result,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    }
}

async fn run(args: &Args) -> Result<()> {
    if args.parts.contains(&1) || args.parts.contains(&2) {
        // Renewals ten minutes apart: none falls into the batches of part 2.
        let timings = Timings {
            heartbeat: "10min".into(),
            lease: "30min".into(),
            room_lease: "60min".into(),
        };
        let cluster = Cluster::start(args, &timings).await?;
        let hosts = if args.parts.contains(&1) {
            part_redirect(&cluster, args.rooms).await?
        } else {
            place_rooms(&cluster, args.rooms).await?
        };
        if args.parts.contains(&2) {
            part_redis(&cluster, args.redis_joins, args.rooms).await?;
        }
        close_all(hosts).await;
        cluster.stop().await;
    }
    let timings = Timings {
        heartbeat: args.heartbeat.clone(),
        lease: args.lease.clone(),
        room_lease: args.room_lease.clone(),
    };
    if args.parts.contains(&3) {
        let mut cluster = Cluster::start(args, &timings).await?;
        part_failover(args, &mut cluster).await?;
        cluster.stop().await;
    }
    if args.parts.contains(&4) {
        part_storm(args, &timings).await?;
    }
    println!("\nload average {:.2} at the end", load_average());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The cluster
// ---------------------------------------------------------------------------------------------

/// `cluster.heartbeat`, `cluster.lease` and `cluster.room_lease`, as the gateway parses them.
struct Timings {
    heartbeat: String,
    lease: String,
    room_lease: String,
}

/// Where a client connects first: a node's QUIC address and its certificate's hash.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Entry {
    quic: SocketAddr,
    cert: [u8; 32],
}

/// Access tokens signed with the key every node shares.
#[derive(Clone)]
struct Minter(Arc<KeyRing>);

impl Minter {
    fn new() -> Result<Minter> {
        let key = ApiKey::new(KEY_ID, Secret::new(SECRET)).map_err(|e| anyhow!("key: {e}"))?;
        let mut ring = KeyRing::new();
        ring.insert(key);
        Ok(Minter(Arc::new(ring)))
    }

    /// A participant's token for `room`, valid for an hour.
    fn token(&self, room: &str, identity: &str) -> Result<String> {
        let claims = AccessClaims::new(
            identity,
            room,
            Grants::participant(),
            SystemTime::now(),
            Duration::from_secs(3600),
        );
        self.0
            .mint(KEY_ID, &claims)
            .map_err(|e| anyhow!("minting a token: {e}"))
    }
}

/// Redis and the nodes; each is killed when this is dropped.
struct Cluster {
    /// Node `i` (node `i + 1` in the output), `None` once killed.
    nodes: Vec<Option<GatewayChild>>,
    entries: Vec<Entry>,
    ids: Vec<String>,
    minter: Minter,
    /// Last: dropped after the nodes.
    redis: RedisServer,
}

impl Cluster {
    async fn start(args: &Args, timings: &Timings) -> Result<Cluster> {
        let redis = RedisServer::start().await;
        let mut cluster = Cluster {
            nodes: Vec::new(),
            entries: Vec::new(),
            ids: Vec::new(),
            minter: Minter::new()?,
            redis,
        };
        let per_ip = 2 * args.storm.max(args.rooms + args.redis_joins * 3) + 1000;
        for i in 0..args.nodes {
            let id = format!("n{}", i + 1);
            let mut settings = vec![
                format!("auth.keys=[{{id=\"{KEY_ID}\",secret=\"{SECRET}\"}}]"),
                format!("auth.resume_secret={RESUME_SECRET}"),
                format!("cluster.redis_url={}", cluster.redis.url()),
                format!("cluster.node_id={id}"),
                format!("cluster.heartbeat={}", timings.heartbeat),
                format!("cluster.lease={}", timings.lease),
                format!("cluster.room_lease={}", timings.room_lease),
                "webrtc.enabled=false".into(),
                format!("limits.max_sessions_per_ip={per_ip}"),
                format!("limits.max_sessions={}", per_ip.max(10_000)),
            ];
            settings.extend(args.settings.iter().cloned());
            let octet = u8::try_from(2 + i).context("too many nodes")?;
            let listen = SocketAddr::from((Ipv4Addr::new(127, 0, 0, octet), 0));
            let node = tokio::time::timeout(
                START_WAIT,
                GatewayChild::start_on(&args.strait, listen, &settings),
            )
            .await
            .map_err(|_| anyhow!("node {id} did not start in time"))?
            .map_err(|e| anyhow!("node {id}: {e}"))?;
            cluster.entries.push(Entry {
                quic: node.quic,
                cert: node.cert,
            });
            cluster.nodes.push(Some(node));
            cluster.ids.push(id);
        }
        // Readiness (the lease renewed, as the node itself records it) is the node's own state:
        // nothing notifies it, so `/readyz` is asked every 50 ms, within `START_WAIT`. (The lease
        // key appearing in Redis comes a moment before the node has taken note of its renewal.)
        let deadline = Instant::now() + START_WAIT;
        for (i, node) in cluster.nodes.iter().flatten().enumerate() {
            while !ready(node.http).await.unwrap_or(false) {
                ensure!(
                    Instant::now() < deadline,
                    "node {} never became ready",
                    i + 1
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        println!(
            "\ncluster: redis-server and {} nodes (heartbeat {}, lease {}, room lease {})",
            args.nodes, timings.heartbeat, timings.lease, timings.room_lease
        );
        Ok(cluster)
    }

    fn node(&self, i: usize) -> Result<&GatewayChild> {
        self.nodes
            .get(i)
            .and_then(Option::as_ref)
            .ok_or_else(|| anyhow!("node {} is not running", i + 1))
    }

    /// The name (`node 2`) of the node at `addr`.
    fn name_of(&self, addr: Option<SocketAddr>) -> String {
        self.index_of(addr)
            .map_or_else(|| "nowhere".into(), |i| format!("node {}", i + 1))
    }

    fn index_of(&self, addr: Option<SocketAddr>) -> Option<usize> {
        let addr = addr?;
        self.entries.iter().position(|e| e.quic == addr)
    }

    /// kill -9 of node `i`, and waits for it to be gone.
    async fn kill(&mut self, i: usize) -> Result<()> {
        let node = self
            .nodes
            .get_mut(i)
            .and_then(Option::take)
            .ok_or_else(|| anyhow!("node {} is not running", i + 1))?;
        node.stop().await;
        Ok(())
    }

    /// Kills every node, then Redis.
    async fn stop(mut self) {
        for node in self.nodes.iter_mut().filter_map(Option::take) {
            node.stop().await;
        }
    }

    /// A session of `identity` in `room` through node `entry`, and how long the connect and
    /// join took.
    async fn join(&self, entry: usize, room: &str, identity: &str) -> Result<(Session, Duration)> {
        let token = self.minter.token(room, identity)?;
        let config = client_config(self.entries[entry], token, false);
        let started = Instant::now();
        let (session, _) = tokio::time::timeout(JOIN_WAIT, Client::connect_and_join(config, room))
            .await
            .map_err(|_| anyhow!("{identity} in {room}: no Joined within {JOIN_WAIT:?}"))?
            .with_context(|| format!("{identity} joining {room} through node {}", entry + 1))?;
        Ok((session, started.elapsed()))
    }

    /// `strait_cluster_events_total{event}` of node `i`.
    async fn events(&self, i: usize, event: &str) -> Result<f64> {
        metric(
            self.node(i)?.http,
            "strait_cluster_events_total",
            &format!("event=\"{event}\""),
        )
        .await
        .map_err(|e| anyhow!("{e}"))
    }
}

/// A client configuration for `entry`; `failover` shortens the detection of a dead node: idle
/// timeout 3 s, keep-alive 1 s, one resume attempt.
fn client_config(entry: Entry, token: String, failover: bool) -> ClientConfig {
    let mut config = ClientConfig::new(entry.quic, Trust::Hashes(vec![entry.cert]), token);
    if failover {
        config.idle_timeout = Duration::from_secs(3);
        config.keep_alive = Duration::from_secs(1);
        config.backoff = Backoff {
            attempts: 1,
            ..Backoff::default()
        };
    }
    config
}

/// Closes every session, 64 at a time, each within [`REQUEST_WAIT`].
async fn close_all(sessions: Vec<Session>) {
    futures::stream::iter(sessions)
        .for_each_concurrent(64, |session| async move {
            let _ = tokio::time::timeout(REQUEST_WAIT, session.close()).await;
        })
        .await;
}

// ---------------------------------------------------------------------------------------------
// Figures
// ---------------------------------------------------------------------------------------------

/// Nearest-rank percentiles of a sample.
struct Spread {
    n: usize,
    p50: Duration,
    p95: Duration,
    p99: Duration,
    max: Duration,
}

impl Spread {
    fn of(values: &[Duration]) -> Option<Spread> {
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        let n = sorted.len();
        let rank = |q: f64| sorted[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
        (n > 0).then(|| Spread {
            n,
            p50: rank(0.50),
            p95: rank(0.95),
            p99: rank(0.99),
            max: sorted[n - 1],
        })
    }

    /// `p50 … ms, p95 …, p99 …, max … (n = …)`, with `decimals` after the point.
    fn show(values: &[Duration], decimals: usize) -> String {
        match Spread::of(values) {
            Some(s) => format!(
                "p50 {} ms, p95 {}, p99 {}, max {} (n = {})",
                ms(s.p50, decimals),
                ms(s.p95, decimals),
                ms(s.p99, decimals),
                ms(s.max, decimals),
                s.n
            ),
            None => "no samples".into(),
        }
    }
}

fn ms(d: Duration, decimals: usize) -> String {
    format!("{:.*}", decimals, d.as_secs_f64() * 1000.0)
}

// ---------------------------------------------------------------------------------------------
// Part 1: the redirect's cost
// ---------------------------------------------------------------------------------------------

/// Places `rooms` rooms on node 1 (a first join each); the sessions keep them there.
async fn place_rooms(cluster: &Cluster, rooms: usize) -> Result<Vec<Session>> {
    let mut hosts = Vec::with_capacity(rooms);
    for r in 0..rooms {
        let room = format!("redirect-{r}");
        let (host, _) = cluster.join(0, &room, "host").await?;
        ensure!(
            cluster.index_of(host.remote_address()) == Some(0),
            "{room} was placed on {}, not node 1",
            cluster.name_of(host.remote_address())
        );
        hosts.push(host);
    }
    Ok(hosts)
}

async fn part_redirect(cluster: &Cluster, rooms: usize) -> Result<Vec<Session>> {
    println!(
        "\n## 1. Join latency, connect → Joined, one join at a time ({rooms} rooms on node 1)"
    );
    let redirected_before = cluster.events(1, "redirected").await?;
    let (mut first, mut owner, mut other) = (Vec::new(), Vec::new(), Vec::new());
    let mut hosts = Vec::with_capacity(rooms);
    for r in 0..rooms {
        let room = format!("redirect-{r}");
        let (host, took) = cluster.join(0, &room, "host").await?;
        ensure!(
            cluster.index_of(host.remote_address()) == Some(0),
            "{room} was placed on {}, not node 1",
            cluster.name_of(host.remote_address())
        );
        first.push(took);
        // Alternate the order, so that neither kind always comes right after the first join.
        let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for entry in order {
            let (guest, took) = cluster
                .join(entry, &room, &format!("guest-{entry}"))
                .await?;
            ensure!(
                cluster.index_of(guest.remote_address()) == Some(0),
                "a guest of {room} through node {} ended on {}",
                entry + 1,
                cluster.name_of(guest.remote_address())
            );
            let _ = tokio::time::timeout(REQUEST_WAIT, guest.close()).await;
            (if entry == 0 { &mut owner } else { &mut other }).push(took);
        }
        hosts.push(host);
    }
    let redirected = cluster.events(1, "redirected").await? - redirected_before;
    println!(
        "first join (places the room on node 1):   {}",
        Spread::show(&first, 2)
    );
    println!(
        "through the owner (node 1):               {}",
        Spread::show(&owner, 2)
    );
    println!(
        "through node 2 (one redirect to node 1):  {}",
        Spread::show(&other, 2)
    );
    if let (Some(o), Some(r)) = (Spread::of(&owner), Spread::of(&other)) {
        println!(
            "the redirect adds {} ms at p50 ({:.2}×), {} ms at p99; node 2 counted {redirected:.0} \
             redirects",
            ms(r.p50.saturating_sub(o.p50), 2),
            r.p50.as_secs_f64() / o.p50.as_secs_f64(),
            ms(r.p99.saturating_sub(o.p99), 2),
        );
    }
    Ok(hosts)
}

// ---------------------------------------------------------------------------------------------
// Part 2: Redis commands per join
// ---------------------------------------------------------------------------------------------

/// `total_commands_processed` and the calls of each command, from one `INFO`.
#[derive(Debug, Default)]
struct Commands {
    total: u64,
    calls: BTreeMap<String, u64>,
}

impl Commands {
    async fn read(conn: &mut redis::aio::MultiplexedConnection) -> Result<Commands> {
        let info: String = redis::cmd("INFO")
            .arg("stats")
            .arg("commandstats")
            .query_async(conn)
            .await
            .context("INFO")?;
        let mut out = Commands::default();
        for line in info.lines() {
            if let Some(total) = line.strip_prefix("total_commands_processed:") {
                out.total = total.trim().parse().context("total_commands_processed")?;
            } else if let Some(rest) = line.strip_prefix("cmdstat_")
                && let Some((name, stats)) = rest.split_once(':')
                && let Some(calls) = stats
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("calls="))
                    .and_then(|c| c.parse().ok())
            {
                out.calls.insert(name.to_owned(), calls);
            }
        }
        Ok(out)
    }

    /// The commands since `before`, without the `INFO` that read `before` (Redis counts a
    /// command once it has answered it, so that one shows up here and this one does not).
    fn since(&self, before: &Commands) -> (u64, BTreeMap<String, u64>) {
        let total = self.total.saturating_sub(before.total).saturating_sub(1);
        let calls = self
            .calls
            .iter()
            .filter(|(name, _)| name.as_str() != "info")
            .map(|(name, n)| {
                (
                    name.clone(),
                    n - before.calls.get(name).copied().unwrap_or(0),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        (total, calls)
    }
}

/// Lease renewals counted by every node.
async fn lease_renewals(cluster: &Cluster) -> Result<f64> {
    let mut sum = 0.0;
    for i in 0..cluster.nodes.len() {
        sum += cluster.events(i, "lease_renewed").await?;
    }
    Ok(sum)
}

async fn part_redis(cluster: &Cluster, joins: usize, rooms: usize) -> Result<()> {
    println!(
        "\n## 2. Redis commands per join (batches of {joins} joins, one at a time; heartbeat 10 \
         min)"
    );
    let mut conn = cluster
        .redis
        .connection()
        .await
        .context("a connection to redis")?;
    let renewed_before = lease_renewals(cluster).await?;
    let batches = [
        ("first joins of new rooms, through node 1", 0, true),
        ("joins through the owner (node 1)", 0, false),
        ("joins through node 2 (redirected to node 1)", 1, false),
    ];
    for (b, (label, entry, fresh)) in batches.into_iter().enumerate() {
        let mut sessions = Vec::with_capacity(joins);
        let before = Commands::read(&mut conn).await?;
        let started = Instant::now();
        for j in 0..joins {
            let room = if fresh {
                format!("fresh-{j}")
            } else {
                format!("redirect-{}", j % rooms)
            };
            let (session, _) = cluster
                .join(entry, &room, &format!("counted-{b}-{j}"))
                .await?;
            sessions.push(session);
        }
        let after = Commands::read(&mut conn).await?;
        let took = started.elapsed();
        // The same stretch without joins: what the cluster sends on its own.
        let idle_before = Commands::read(&mut conn).await?;
        tokio::time::sleep(took).await;
        let (idle, _) = Commands::read(&mut conn).await?.since(&idle_before);
        close_all(sessions).await;

        let (total, calls) = after.since(&before);
        let per_join = |n: u64| n as f64 / joins as f64;
        let breakdown: Vec<String> = calls
            .iter()
            .map(|(name, n)| format!("{name} {:.2}", per_join(*n)))
            .collect();
        println!(
            "{label}: {:.2} commands per join ({total} in {:.2} s; idle over the same time: \
             {idle}){}{}",
            per_join(total),
            took.as_secs_f64(),
            if breakdown.is_empty() {
                ""
            } else {
                "; by command: "
            },
            breakdown.join(", ")
        );
    }
    let renewed = lease_renewals(cluster).await? - renewed_before;
    println!(
        "(each script call counts once, plus once per command it runs; lease renewals by the \
         nodes during the batches: {renewed:.0})"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Part 3: failover after kill -9
// ---------------------------------------------------------------------------------------------

/// What the failover clients share with the part's driver.
struct Failover {
    /// Set from the kill to the end of the window: subscribers record their gaps meanwhile.
    watching: AtomicBool,
    /// A permit per subscriber at its first packet.
    receiving: Semaphore,
    /// A permit per subscriber at its first packet after joining again.
    recovered: Semaphore,
    /// Initial joins at once.
    setup: Semaphore,
    minter: Minter,
}

/// One failover client: its room, where it joins first, where it joins again (in order).
#[derive(Clone)]
struct Member {
    room: String,
    /// The room's number, for its publisher's SSRC.
    index: u32,
    first: Entry,
    fallbacks: Vec<Entry>,
    shared: Arc<Failover>,
    stop: watch::Receiver<bool>,
}

#[derive(Debug, Default)]
struct PublisherLog {
    ended: Option<Instant>,
    end_reason: Option<String>,
    rejoined: Option<Instant>,
    published: Option<Instant>,
    attempts: usize,
    errors: Vec<String>,
    now_on: Option<SocketAddr>,
}

#[derive(Debug, Default)]
struct SubscriberLog {
    /// The last packet of the first session.
    last_before: Option<Instant>,
    /// `ConnectionLost` on the first session.
    lost: Option<Instant>,
    ended: Option<Instant>,
    end_reason: Option<String>,
    rejoined: Option<Instant>,
    subscribed: Option<Instant>,
    /// The first packet after joining again.
    first_after: Option<Instant>,
    attempts: usize,
    errors: Vec<String>,
    /// The latest packet, and the largest gap between two packets while watching.
    latest: Option<Instant>,
    max_gap: Duration,
    now_on: Option<SocketAddr>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A short name for why something failed.
fn why(e: &ClientError) -> String {
    match e {
        ClientError::Rejected { code, .. } => format!("rejected {code}"),
        ClientError::Closed { code, .. } => format!("closed {code}"),
        ClientError::ConnectionLost(_) => "connection lost".into(),
        ClientError::Timeout(what) => format!("timeout ({what})"),
        ClientError::Connect(_) => "connect failed".into(),
        ClientError::Redirected { .. } => "redirected".into(),
        other => other.to_string(),
    }
}

/// Joins `room` again through the member's fallbacks in turn: the session, the attempts it
/// took and why the others failed.
async fn rejoin(member: &Member, identity: &str) -> Result<(Session, usize, Vec<String>)> {
    let mut errors = Vec::new();
    for attempt in 0..REJOIN_ATTEMPTS {
        let entry = member.fallbacks[attempt % member.fallbacks.len()];
        let token = member.shared.minter.token(&member.room, identity)?;
        let config = client_config(entry, token, true);
        match tokio::time::timeout(JOIN_WAIT, Client::connect_and_join(config, &member.room)).await
        {
            Ok(Ok((session, _))) => return Ok((session, attempt + 1, errors)),
            Ok(Err(e)) => errors.push(why(&e)),
            Err(_) => errors.push("no Joined in time".into()),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!(
        "{identity} of {} could not join again: {errors:?}",
        member.room
    )
}

/// Subscribes to the first track of the room (waiting for one to be published).
async fn subscribe_first(session: &Session) -> Result<()> {
    let deadline = Instant::now() + JOIN_WAIT;
    let track: TrackId = loop {
        if let Some(track) = session.tracks().first() {
            break track.track;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        ensure!(!left.is_zero(), "no track was published");
        match tokio::time::timeout(left, session.next_event()).await {
            Ok(Some(SessionEvent::Closed(e))) => bail!("the session ended: {e}"),
            Ok(None) => bail!("the session ended"),
            _ => {}
        }
    };
    tokio::time::timeout(REQUEST_WAIT, session.subscribe(track, None))
        .await
        .map_err(|_| anyhow!("no Subscribed in time"))??;
    Ok(())
}

async fn publisher(member: Member, log: Arc<Mutex<PublisherLog>>, rate: u32) -> Result<()> {
    let mut stop = member.stop.clone();
    let permit = member.shared.setup.acquire().await?;
    let token = member.shared.minter.token(&member.room, "publisher")?;
    let config = client_config(member.first, token, true);
    let (mut session, _) =
        tokio::time::timeout(JOIN_WAIT, Client::connect_and_join(config, &member.room))
            .await
            .map_err(|_| anyhow!("publisher of {}: no Joined", member.room))??;
    let mut track = tokio::time::timeout(REQUEST_WAIT, session.publish(opus_spec()))
        .await
        .map_err(|_| anyhow!("no Published in time"))??;
    lock(&log).now_on = session.remote_address();
    drop(permit);

    let ssrc = 0x5eed_0000 ^ member.index;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut rejoins = 0;
    for index in 0..rate.saturating_mul(MAX_SEND.as_secs() as u32) {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        while session.try_next_event().is_some() {}
        if session.is_closed() {
            if rejoins == MAX_REJOINS {
                break;
            }
            rejoins += 1;
            let reason = session.closed().await;
            {
                let mut log = lock(&log);
                log.ended.get_or_insert_with(Instant::now);
                log.end_reason.get_or_insert_with(|| why(&reason));
            }
            let (again, attempts, errors) = rejoin(&member, "publisher").await?;
            session = again;
            let rejoined = Instant::now();
            track = tokio::time::timeout(REQUEST_WAIT, session.publish(opus_spec()))
                .await
                .map_err(|_| anyhow!("no Published in time"))??;
            let mut log = lock(&log);
            log.rejoined.get_or_insert(rejoined);
            log.published.get_or_insert_with(Instant::now);
            log.attempts += attempts;
            log.errors.extend(errors);
            log.now_on = session.remote_address();
            continue;
        }
        let packet = rtp::opus(index as u16, index.wrapping_mul(960), ssrc, index);
        // Refused while the session reconnects: that packet is part of the gap.
        let _ = session.send_rtp(track.media[0], &packet);
    }
    let _ = tokio::time::timeout(REQUEST_WAIT, session.close()).await;
    Ok(())
}

async fn subscriber(member: Member, log: Arc<Mutex<SubscriberLog>>) -> Result<()> {
    let mut stop = member.stop.clone();
    let shared = Arc::clone(&member.shared);
    let permit = shared.setup.acquire().await?;
    let token = shared.minter.token(&member.room, "subscriber")?;
    let config = client_config(member.first, token, true);
    let (mut session, _) =
        tokio::time::timeout(JOIN_WAIT, Client::connect_and_join(config, &member.room))
            .await
            .map_err(|_| anyhow!("subscriber of {}: no Joined", member.room))??;
    // Not held while the track is awaited: its publisher may still be waiting for a permit.
    drop(permit);
    subscribe_first(&session).await?;
    lock(&log).now_on = session.remote_address();

    for generation in 0..=MAX_REJOINS {
        let mut events_open = true;
        loop {
            tokio::select! {
                packet = session.recv_media() => {
                    let Some(packet) = packet else { break };
                    let at = packet.received_at;
                    let mut log = lock(&log);
                    if generation == 0 {
                        if log.last_before.is_none() {
                            shared.receiving.add_permits(1);
                        }
                        log.last_before = Some(at);
                    } else if log.first_after.is_none() {
                        log.first_after = Some(at);
                        shared.recovered.add_permits(1);
                    }
                    if shared.watching.load(Ordering::Relaxed)
                        && let Some(latest) = log.latest
                    {
                        log.max_gap = log.max_gap.max(at.saturating_duration_since(latest));
                    }
                    log.latest = Some(at);
                }
                event = session.next_event(), if events_open => match event {
                    Some(SessionEvent::ConnectionLost { .. }) if generation == 0 => {
                        lock(&log).lost.get_or_insert_with(Instant::now);
                    }
                    None => events_open = false,
                    _ => {}
                },
                _ = stop.changed() => {
                    let _ = tokio::time::timeout(REQUEST_WAIT, session.close()).await;
                    return Ok(());
                }
            }
        }
        // The session is over (its resume attempt failed): join again elsewhere.
        let reason = tokio::time::timeout(REQUEST_WAIT, session.closed())
            .await
            .map_err(|_| anyhow!("the session never ended"))?;
        {
            let mut log = lock(&log);
            log.ended.get_or_insert_with(Instant::now);
            log.end_reason.get_or_insert_with(|| why(&reason));
        }
        if generation == MAX_REJOINS {
            break;
        }
        let (again, attempts, errors) = rejoin(&member, "subscriber").await?;
        session = again;
        let rejoined = Instant::now();
        {
            let mut log = lock(&log);
            log.rejoined.get_or_insert(rejoined);
            log.attempts += attempts;
            log.errors.extend(errors);
            log.now_on = session.remote_address();
        }
        subscribe_first(&session).await?;
        lock(&log).subscribed.get_or_insert_with(Instant::now);
    }
    Ok(())
}

struct Room {
    name: String,
    victim: bool,
    publisher: Arc<Mutex<PublisherLog>>,
    subscriber: Arc<Mutex<SubscriberLog>>,
}

async fn part_failover(args: &Args, cluster: &mut Cluster) -> Result<()> {
    println!(
        "\n## 3. Media gap after kill -9 of node 1 ({} victim rooms on it, {} bystander rooms on \
         the others; publishers at {} packets/s; clients: idle timeout 3 s, keep-alive 1 s, one \
         resume attempt)",
        args.victims, args.bystanders, args.rate
    );
    let shared = Arc::new(Failover {
        watching: AtomicBool::new(false),
        receiving: Semaphore::new(0),
        recovered: Semaphore::new(0),
        setup: Semaphore::new(16),
        minter: cluster.minter.clone(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let survivors: Vec<Entry> = cluster.entries[1..].to_vec();
    let mut rooms = Vec::new();
    let mut tasks = JoinSet::new();
    for r in 0..args.victims + args.bystanders {
        let victim = r < args.victims;
        // Rejoins go round the other nodes, each room starting at its own.
        let start = r % survivors.len();
        let mut fallbacks = survivors.clone();
        let first_fallback = if victim { start } else { start + 1 };
        fallbacks.rotate_left(first_fallback % survivors.len());
        let name = if victim {
            format!("victim-{r}")
        } else {
            format!("bystander-{}", r - args.victims)
        };
        let member = Member {
            room: name.clone(),
            index: u32::try_from(r).context("too many rooms")?,
            first: if victim {
                cluster.entries[0]
            } else {
                survivors[start]
            },
            fallbacks,
            shared: Arc::clone(&shared),
            stop: stop_rx.clone(),
        };
        let room = Room {
            name,
            victim,
            publisher: Arc::default(),
            subscriber: Arc::default(),
        };
        tasks.spawn(publisher(
            member.clone(),
            Arc::clone(&room.publisher),
            args.rate,
        ));
        tasks.spawn(subscriber(member, Arc::clone(&room.subscriber)));
        rooms.push(room);
    }
    let total = u32::try_from(rooms.len()).context("too many rooms")?;
    let victims = u32::try_from(args.victims).context("too many victims")?;
    if tokio::time::timeout(
        Duration::from_secs(120),
        shared.receiving.acquire_many(total),
    )
    .await
    .is_err()
    {
        let _ = stop_tx.send(true);
        let mut failures = Vec::new();
        while let Ok(Some(done)) =
            tokio::time::timeout(Duration::from_secs(5), tasks.join_next()).await
        {
            if let Ok(Err(e)) = done {
                failures.push(e.to_string());
            }
        }
        bail!(
            "not every subscriber received within 120 s; failures: {:?}",
            &failures[..failures.len().min(5)]
        );
    }
    for room in &rooms {
        let at = lock(&room.subscriber).now_on;
        let pub_at = lock(&room.publisher).now_on;
        let expected = cluster.index_of(at);
        ensure!(
            at == pub_at && (expected == Some(0)) == room.victim,
            "{} is on {} and {}",
            room.name,
            cluster.name_of(pub_at),
            cluster.name_of(at)
        );
    }
    println!(
        "every subscriber receives; media flows 2 s before the kill (load average {:.2})",
        load_average()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    shared.watching.store(true, Ordering::Relaxed);
    let killed = Instant::now();
    cluster.kill(0).await?;
    let wait = Duration::from_secs_f64(args.failover_timeout);
    let all_back = tokio::time::timeout(wait, shared.recovered.acquire_many(victims))
        .await
        .is_ok();
    let window_end = Instant::now();
    shared.watching.store(false, Ordering::Relaxed);

    // Where every room is owned now, against where its sessions are.
    let mut conn = cluster.redis.connection().await?;
    let mut owner_mismatches = Vec::new();
    for room in &rooms {
        let owner: Option<String> = redis::cmd("HGET")
            .arg(format!("{{strait}}:room:{}", room.name))
            .arg("node")
            .query_async(&mut conn)
            .await?;
        let publisher_at = cluster.index_of(lock(&room.publisher).now_on);
        let subscriber_at = cluster.index_of(lock(&room.subscriber).now_on);
        let key_at = owner
            .as_deref()
            .and_then(|id| cluster.ids.iter().position(|n| n == id));
        if !(key_at.is_some() && key_at == publisher_at && key_at == subscriber_at) {
            owner_mismatches.push(format!(
                "{}: key {owner:?}, publisher on {:?}, subscriber on {:?}",
                room.name,
                publisher_at.map(|i| i + 1),
                subscriber_at.map(|i| i + 1)
            ));
        }
    }

    let _ = stop_tx.send(true);
    let mut failures = Vec::new();
    let drained = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(Err(e)) => failures.push(e.to_string()),
                Err(e) => failures.push(e.to_string()),
                Ok(Ok(())) => {}
            }
        }
    })
    .await;
    if drained.is_err() {
        tasks.abort_all();
        failures.push("some clients did not stop within 60 s (aborted)".into());
    }

    report_failover(&rooms, killed, window_end, all_back, wait);
    if owner_mismatches.is_empty() {
        println!(
            "ownership: every room's key names the node where its publisher and subscriber are ({} \
             rooms; node 1 is dead, so no room can be served on two nodes at once here)",
            rooms.len()
        );
    } else {
        println!(
            "ownership: {} rooms whose key does not name their sessions' node, e.g. {:?}",
            owner_mismatches.len(),
            &owner_mismatches[..owner_mismatches.len().min(5)]
        );
    }
    if !failures.is_empty() {
        println!(
            "client failures: {} (e.g. {:?})",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
    }
    Ok(())
}

/// One figure of a victim room (`None` when it has none).
type Measure<'a> = &'a dyn Fn(&Room) -> Option<Duration>;

fn report_failover(
    rooms: &[Room],
    killed: Instant,
    window_end: Instant,
    all_back: bool,
    wait: Duration,
) {
    let since = |at: Option<Instant>| at.map(|at| at.saturating_duration_since(killed));
    let collect = |f: Measure<'_>| -> Vec<Duration> {
        rooms.iter().filter(|r| r.victim).filter_map(f).collect()
    };
    let gaps = collect(&|r| {
        let s = lock(&r.subscriber);
        Some(s.first_after?.saturating_duration_since(s.last_before?))
    });
    let victims = rooms.iter().filter(|r| r.victim).count();
    println!(
        "victims' gap, last packet before the kill → first after: {}{}",
        Spread::show(&gaps, 0),
        if all_back {
            String::new()
        } else {
            format!(
                "; {} of {victims} victims did not receive again within {wait:?}",
                victims - gaps.len()
            )
        }
    );
    let last = collect(&|r| {
        let s = lock(&r.subscriber);
        Some(killed.saturating_duration_since(s.last_before?))
    });
    println!(
        "  last packet before the kill, this long before it: {}",
        Spread::show(&last, 0)
    );
    let phases: [(&str, Measure<'_>); 7] = [
        ("subscriber's connection lost (idle timeout)", &|r| {
            since(lock(&r.subscriber).lost)
        }),
        ("subscriber's session over (resume failed)", &|r| {
            since(lock(&r.subscriber).ended)
        }),
        ("publisher's session over", &|r| {
            since(lock(&r.publisher).ended)
        }),
        ("subscriber joined again", &|r| {
            since(lock(&r.subscriber).rejoined)
        }),
        ("publisher published again", &|r| {
            since(lock(&r.publisher).published)
        }),
        ("subscriber subscribed again", &|r| {
            since(lock(&r.subscriber).subscribed)
        }),
        ("first packet after", &|r| {
            since(lock(&r.subscriber).first_after)
        }),
    ];
    println!("  after the kill (victims):");
    for (label, f) in phases {
        println!("    {label:<45} {}", Spread::show(&collect(f), 0));
    }
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut attempts: BTreeMap<usize, usize> = BTreeMap::new();
    for room in rooms.iter().filter(|r| r.victim) {
        let (p, s) = (lock(&room.publisher), lock(&room.subscriber));
        for reason in [&p.end_reason, &s.end_reason].into_iter().flatten() {
            *reasons.entry(reason.clone()).or_default() += 1;
        }
        for e in p.errors.iter().chain(&s.errors) {
            *errors.entry(e.clone()).or_default() += 1;
        }
        for n in [p.attempts, s.attempts] {
            *attempts.entry(n).or_default() += 1;
        }
    }
    println!("  how the victims' sessions ended: {reasons:?}");
    println!(
        "  joins-again attempts per client (attempts: clients): {attempts:?}; failed attempts: \
         {errors:?}"
    );
    let mut worst = Duration::ZERO;
    let mut ended = 0;
    for room in rooms.iter().filter(|r| !r.victim) {
        let s = lock(&room.subscriber);
        let tail = s
            .latest
            .map_or(Duration::MAX, |l| window_end.saturating_duration_since(l));
        worst = worst.max(s.max_gap).max(tail);
        ended += usize::from(s.ended.is_some() || lock(&room.publisher).ended.is_some());
    }
    println!(
        "bystanders' largest gap between two packets from the kill to the last victim's \
         recovery ({:.1} s): {} ms; bystander sessions that ended: {ended}",
        window_end.saturating_duration_since(killed).as_secs_f64(),
        ms(worst, 1)
    );
}

// ---------------------------------------------------------------------------------------------
// Part 4: join storm
// ---------------------------------------------------------------------------------------------

async fn part_storm(args: &Args, timings: &Timings) -> Result<()> {
    println!(
        "\n## 4. Join storm: {} sessions, rooms of {}, {} at once; each run on a Redis and nodes \
         of its own",
        args.storm, args.storm_room_size, args.concurrency
    );
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    for (run, kind) in args.storms.iter().enumerate() {
        let cluster = Cluster::start(args, timings).await?;
        let (label, entries): (&str, Vec<usize>) = match kind {
            StormKind::One => ("all through node 1", vec![0]),
            StormKind::All => ("spread over every node", (0..cluster.nodes.len()).collect()),
        };
        storm(args, &cluster, label, &entries, &format!("storm-{run}")).await?;
        cluster.stop().await;
    }
    println!(
        "({} nodes, Redis and this process, which makes every session's TLS handshake, share this \
         machine's {cores} cores: compare the runs with each other, not with a cluster of \
         machines)",
        args.nodes,
    );
    Ok(())
}

async fn storm(
    args: &Args,
    cluster: &Cluster,
    label: &str,
    entries: &[usize],
    prefix: &str,
) -> Result<()> {
    // Tokens and configurations first, out of the measured time.
    let mut configs = Vec::with_capacity(args.storm);
    for i in 0..args.storm {
        let room = format!("{prefix}-{}", i / args.storm_room_size);
        let token = cluster.minter.token(&room, &format!("guest-{i}"))?;
        let entry = cluster.entries[entries[i % entries.len()]];
        configs.push(Some((client_config(entry, token, false), room)));
    }
    let configs = Arc::new(Mutex::new(configs));
    let next = Arc::new(AtomicUsize::new(0));
    let joined = Arc::new(Mutex::new(Vec::with_capacity(args.storm)));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(args.storm)));
    let errors: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();

    let ticks = clock_ticks_per_second();
    let pids: Vec<String> = cluster
        .nodes
        .iter()
        .flatten()
        .map(|n| n.pid.to_string())
        .collect();
    let marks = pids
        .iter()
        .map(|pid| CpuMark::read(pid).map_err(|e| anyhow!("{e}")))
        .collect::<Result<Vec<_>>>()?;
    let own = CpuMark::read("self").map_err(|e| anyhow!("{e}"))?;
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..args.concurrency.min(args.storm) {
        let (configs, next, joined, latencies, errors) = (
            Arc::clone(&configs),
            Arc::clone(&next),
            Arc::clone(&joined),
            Arc::clone(&latencies),
            Arc::clone(&errors),
        );
        let count = args.storm;
        workers.spawn(async move {
            // Each worker takes the next session until none is left: at most `count` in all.
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let Some((config, room)) = lock(&configs)[i].take() else {
                    continue;
                };
                let t0 = Instant::now();
                match tokio::time::timeout(JOIN_WAIT, Client::connect_and_join(config, &room)).await
                {
                    Ok(Ok((session, _))) => {
                        lock(&latencies).push(t0.elapsed());
                        lock(&joined).push(session);
                    }
                    Ok(Err(e)) => *lock(&errors).entry(why(&e)).or_default() += 1,
                    Err(_) => *lock(&errors).entry("no Joined in time".into()).or_default() += 1,
                }
            }
        });
    }
    let finished = tokio::time::timeout(Duration::from_secs(600), async {
        while workers.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        workers.abort_all();
    }
    let wall = started.elapsed();
    let mut cpu = 0.0;
    for (pid, mark) in pids.iter().zip(&marks) {
        let later = CpuMark::read(pid).map_err(|e| anyhow!("{e}"))?;
        cpu += mark.until(&later, ticks).cpu_s;
    }
    let own = own
        .until(&CpuMark::read("self").map_err(|e| anyhow!("{e}"))?, ticks)
        .cpu_s;

    let sessions = std::mem::take(&mut *lock(&joined));
    let latencies = std::mem::take(&mut *lock(&latencies));
    let mut landed: BTreeMap<String, usize> = BTreeMap::new();
    for session in &sessions {
        *landed
            .entry(cluster.name_of(session.remote_address()))
            .or_default() += 1;
    }
    let n = sessions.len();
    println!(
        "{label}: {n} of {} joined in {:.2} s: {:.0} joins/s; connect → Joined {}",
        args.storm,
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64(),
        Spread::show(&latencies, 1)
    );
    println!(
        "  landed on {landed:?}; the nodes' CPU {:.2} s in all ({:.2} ms per join, {:.0} % of a \
         core over the storm); this process {:.2} s ({:.2} ms per join){}",
        cpu,
        1000.0 * cpu / n.max(1) as f64,
        100.0 * cpu / wall.as_secs_f64(),
        own,
        1000.0 * own / n.max(1) as f64,
        if lock(&errors).is_empty() {
            String::new()
        } else {
            format!("; failed joins: {:?}", lock(&errors))
        }
    );
    if finished.is_err() {
        println!("  the storm did not finish within 600 s: its workers were stopped");
    }
    // The nodes give these rooms back two heartbeats after their last participant leaves; the
    // next storm uses rooms of its own either way.
    close_all(sessions).await;
    Ok(())
}
