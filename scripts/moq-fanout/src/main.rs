//! # moq-fanout
//!
//! Measures what one delivered object costs a running `moq-relay` at 1 → N fan-out, the
//! counterpart of Strait's `strait-fanout-bench` (same flags where they mean the same thing,
//! same phases, same CPU accounting), so that both can be run side by side by
//! `scripts/bench-moq-relay`.
//!
//! The relay is NOT started here: the caller starts it on loopback and passes its URL and pid.
//! Per N this program:
//!
//! 1. connects one publisher (its own moq client and UDP socket), creates broadcast `bench` with
//!    one track `audio`, and announces it;
//! 2. connects N subscribers, `--connect-concurrency` at a time, each with its own client (its
//!    own UDP socket and QUIC connection, like Strait's bench) and its own origin, so the relay,
//!    not this process, does the fan-out; each resolves `bench`, subscribes to `audio`, and counts
//!    the objects it receives;
//! 3. warms up (sends until every subscriber has received something), then lets the counts
//!    settle;
//! 4. reads the relay's idle CPU over `--idle-seconds`;
//! 5. sends `--seconds` × rate objects of `--size` bytes, paced on a 1 ms tick, lets the counts
//!    settle, and reads the relay's CPU (utime + stime of `/proc/<pid>/stat`) again.
//!
//! How an object travels (`--mode`):
//! - `datagram` (default): one moq-lite datagram per object (`track::Producer::append_datagram`),
//!   i.e. one QUIC DATAGRAM per object per subscriber, best effort, never retransmitted: the
//!   closest match to Strait forwarding one RTP packet per QUIC datagram;
//! - `group`: one group holding one frame per object, i.e. one QUIC stream per object per
//!   subscriber (reliable);
//! - `stream`: one group per phase holding every object as a frame, i.e. one long-lived QUIC
//!   stream per subscriber (reliable, ordered).
//!
//! Bounded: every wait has a timeout, the send phase stops after `--seconds`, and the program
//! exits when it is done. Linux only: it reads `/proc`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, ValueEnum};
use moq_net::Timestamp;
use moq_net::bytes::{BufMut, Bytes, BytesMut};
use moq_net::track::{self, Subscription};
use moq_tokio::moq_net;

/// The broadcast and track every run uses.
const BROADCAST: &str = "bench";
const TRACK: &str = "audio";

/// How long one subscriber may take to connect and subscribe, and how long warm-up may last.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// One datagram per object.
    Datagram,
    /// One group (one QUIC stream) per object.
    Group,
    /// One group per phase, one frame per object.
    Stream,
}

/// One publisher, N subscribers, objects of one size at one rate, against a running moq-relay.
#[derive(Debug, Clone, Parser)]
#[command(name = "moq-fanout")]
struct Args {
    /// The relay to dial: `moql://` is raw QUIC, `https://` WebTransport.
    #[arg(long)]
    url: url::Url,
    /// The relay's process id, whose CPU time is read from /proc.
    #[arg(long)]
    relay_pid: u32,
    /// Fan-out sizes to measure, comma-separated (all against the same relay process).
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    subscribers: Vec<usize>,
    /// Length of the send phase, seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Publisher objects per second.
    #[arg(long, default_value_t = 500)]
    rate: u32,
    /// Cap the publisher's rate at F/N, so that N × rate ≤ F.
    #[arg(long, value_name = "F")]
    max_forward_rate: Option<u64>,
    /// Object payload size in bytes.
    #[arg(long, default_value_t = 1000)]
    size: usize,
    /// How objects map onto moq: datagram, group or stream.
    #[arg(long, value_enum, default_value_t = Mode::Datagram)]
    mode: Mode,
    /// Idle window measured before the send phase, seconds (0 skips it).
    #[arg(long, default_value_t = 2.0)]
    idle_seconds: f64,
    /// Subscribers connecting at once.
    #[arg(long, default_value_t = 32)]
    connect_concurrency: usize,
    /// One JSON object per run instead of the table.
    #[arg(long)]
    json: bool,
}

impl Args {
    fn validate(&self) -> Result<()> {
        if self.subscribers.is_empty() || self.subscribers.contains(&0) {
            bail!("--subscribers: every N must be at least 1");
        }
        if !(self.seconds > 0.0 && self.seconds <= 3600.0) {
            bail!("--seconds must be in (0, 3600]");
        }
        if self.rate == 0 || self.connect_concurrency == 0 {
            bail!("--rate and --connect-concurrency must be at least 1");
        }
        if !(0.0..=60.0).contains(&self.idle_seconds) {
            bail!("--idle-seconds must be in [0, 60]");
        }
        // A moq-lite datagram that does not fit one QUIC datagram is dropped, not split.
        if !(16..=1100).contains(&self.size) {
            bail!("--size must be between 16 and 1100 bytes");
        }
        if !matches!(
            self.url.host_str(),
            Some("127.0.0.1" | "localhost" | "[::1]" | "::1")
        ) {
            bail!("--url must point at loopback");
        }
        Ok(())
    }

    /// The publisher's rate for fan-out `n` (the same rule as strait-fanout-bench).
    fn rate_for(&self, n: usize) -> u32 {
        match self.max_forward_rate {
            Some(cap) => u32::try_from(cap / n as u64)
                .unwrap_or(u32::MAX)
                .clamp(1, self.rate),
            None => self.rate,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// /proc.

/// Clock ticks per second (`getconf CLK_TCK`), 100 if it cannot be asked.
fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// (utime, stime) in clock ticks of `/proc/<pid>/stat`; `pid` may be `self`.
fn cpu_split(pid: &str) -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let (_, rest) = stat
        .rsplit_once(')')
        .ok_or_else(|| anyhow!("bad /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime = fields.get(11).ok_or_else(|| anyhow!("no utime"))?.parse()?;
    let stime = fields.get(12).ok_or_else(|| anyhow!("no stime"))?.parse()?;
    Ok((utime, stime))
}

fn cpu_ticks(pid: &str) -> Result<u64> {
    let (user, system) = cpu_split(pid)?;
    Ok(user + system)
}

/// A `/proc/<pid>/status` line in KiB (0 if absent).
fn status_kib(pid: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Clients.

/// A moq client of its own (its own UDP socket on 127.0.0.1), trusting the relay's self-signed
/// certificate without verification (loopback only), dialing once, never redialing.
fn new_client() -> Result<moq_tokio::Client> {
    let mut connect = moq_tokio::connect::Config::default();
    connect.bind = Some("127.0.0.1:0".parse()?);
    connect.tls.insecure = Some(true);
    connect.once = Some(true);
    connect.timeout = CONNECT_TIMEOUT;
    Ok(connect
        .init(Default::default())
        .map_err(|e| anyhow!("moq client: {e}"))?
        .with_reconnect(false))
}

/// One subscriber: what must stay alive for its session to go on, and its count.
struct Subscriber {
    _connection: moq_tokio::Connection,
    _origin: moq_net::origin::Producer,
    client: moq_tokio::Client,
    reader: tokio::task::JoinHandle<()>,
    received: Arc<AtomicU64>,
}

/// Counts what one subscription delivers until it ends.
async fn count(mut sub: track::Subscriber, mode: Mode, received: Arc<AtomicU64>) {
    match mode {
        Mode::Datagram => {
            while let Ok(Some(_)) = sub.recv_datagram().await {
                received.fetch_add(1, Ordering::Relaxed);
            }
        }
        Mode::Group | Mode::Stream => {
            while let Ok(Some(mut group)) = sub.recv_group().await {
                while let Ok(Some(_)) = group.read_frame().await {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

async fn connect_subscriber(url: url::Url, mode: Mode) -> Result<Subscriber> {
    let client = new_client()?;
    // An origin per subscriber: sharing one would let this process deduplicate the
    // subscriptions and the relay would fan out to one session only.
    let origin = moq_tokio::origin::spawn();
    let connection = client
        .clone()
        .with_subscriber(origin.clone())
        .connect(url)
        .established()
        .await
        .map_err(|e| anyhow!("connect: {e}"))?;
    let broadcast = origin
        .consume()
        .routed_broadcast(BROADCAST)
        .await
        .map_err(|e| anyhow!("resolve broadcast: {e}"))?;
    // A reordering budget, so that a stream-mode group overtaken by the next one is not given
    // up at once; datagrams ignore it.
    let subscription = Subscription::default().with_max_age(Duration::from_secs(2));
    let sub = broadcast
        .track(TRACK)
        .map_err(|e| anyhow!("track: {e}"))?
        .subscribe(subscription)
        .await
        .map_err(|e| anyhow!("subscribe: {e}"))?;
    let received = Arc::new(AtomicU64::new(0));
    let reader = tokio::spawn(count(sub, mode, received.clone()));
    Ok(Subscriber {
        _connection: connection,
        _origin: origin,
        client,
        reader,
        received,
    })
}

async fn connect_subscribers(args: &Args, n: usize) -> Result<Vec<Subscriber>> {
    let permits = Arc::new(tokio::sync::Semaphore::new(args.connect_concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let permits = permits.clone();
        let url = args.url.clone();
        let mode = args.mode;
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            tokio::time::timeout(CONNECT_TIMEOUT, connect_subscriber(url, mode))
                .await
                .map_err(|_| anyhow!("sub-{i}: timed out connecting and subscribing"))?
                .map_err(|e| anyhow!("sub-{i}: {e}"))
        });
    }
    let mut subs = Vec::with_capacity(n);
    let (mut failed, mut first_error) = (0, None);
    while let Some(joined) = tasks.join_next().await {
        match joined.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok(sub) => subs.push(sub),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        None => Ok(subs),
        Some(e) => Err(anyhow!("{failed} of {n} subscribers failed; first: {e}")),
    }
}

fn received(subs: &[Subscriber]) -> u64 {
    subs.iter()
        .map(|s| s.received.load(Ordering::Relaxed))
        .sum()
}

/// Waits until `received` stops moving: two looks 100 ms apart that see the same count, at most
/// 3 s (the rule strait-fanout-bench uses).
async fn settle(subs: &[Subscriber]) {
    let until = Instant::now() + Duration::from_secs(3);
    let mut last = received(subs);
    let mut still = 0;
    while still < 2 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = received(subs);
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
}

// ---------------------------------------------------------------------------------------------
// The publisher.

struct Publisher {
    connection: moq_tokio::Connection,
    _origin: moq_net::origin::Producer,
    broadcast: moq_net::broadcast::Producer,
    client: moq_tokio::Client,
    track: track::Producer,
    mode: Mode,
    /// The open group in stream mode.
    group: Option<moq_net::group::Producer>,
    size: usize,
    seq: u64,
    started: Instant,
}

impl Publisher {
    async fn connect(args: &Args) -> Result<Self> {
        let client = new_client()?;
        let origin = moq_tokio::origin::spawn();
        let broadcast = origin
            .create_broadcast(BROADCAST)
            .map_err(|e| anyhow!("create broadcast: {e}"))?;
        // The track exists before the announcement, so a subscriber that acts on the
        // announcement finds it.
        let track = broadcast
            .create_track(TRACK, None)
            .map_err(|e| anyhow!("create track: {e}"))?;
        broadcast
            .announce(Default::default())
            .map_err(|e| anyhow!("announce: {e}"))?;
        let connection = tokio::time::timeout(
            CONNECT_TIMEOUT,
            client
                .clone()
                .with_publisher(origin.consume())
                .connect(args.url.clone())
                .established(),
        )
        .await
        .map_err(|_| anyhow!("publisher: timed out connecting"))?
        .map_err(|e| anyhow!("publisher: connect: {e}"))?;
        Ok(Self {
            connection,
            _origin: origin,
            broadcast,
            client,
            track,
            mode: args.mode,
            group: None,
            size: args.size,
            seq: 0,
            started: Instant::now(),
        })
    }

    /// One object: a sequence number, then filler.
    fn object(&mut self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.size);
        buf.put_u64(self.seq);
        buf.put_bytes(0x5a, self.size - 8);
        self.seq += 1;
        buf.freeze()
    }

    /// Sends one object; false if moq refused it.
    fn send(&mut self) -> bool {
        let object = self.object();
        let ms = self.started.elapsed().as_millis() as u64;
        let Ok(timestamp) = Timestamp::from_millis(ms) else {
            return false;
        };
        match self.mode {
            Mode::Datagram => self.track.append_datagram(timestamp, object).is_ok(),
            Mode::Group => self.track.write_frame(timestamp, object).is_ok(),
            Mode::Stream => {
                if self.group.is_none() {
                    match self.track.append_group() {
                        Ok(group) => self.group = Some(group),
                        Err(_) => return false,
                    }
                }
                let group = self.group.as_mut().expect("just opened");
                group.write_frame(timestamp, object).is_ok()
            }
        }
    }

    /// Ends the open group of stream mode, so the next phase starts a new one.
    fn end_phase(&mut self) {
        if let Some(group) = self.group.take() {
            let _ = group.finish();
        }
    }

    /// Sends `total` objects at `rate` per second; returns (sent, refused).
    async fn send_paced(&mut self, rate: u32, total: u64) -> (u64, u64) {
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let (mut sent, mut refused, mut attempted) = (0u64, 0u64, 0u64);
        while attempted < total {
            tick.tick().await;
            let due = ((started.elapsed().as_secs_f64() * f64::from(rate)) as u64 + 1).min(total);
            while attempted < due {
                attempted += 1;
                if self.send() {
                    sent += 1;
                } else {
                    refused += 1;
                }
            }
        }
        (sent, refused)
    }
}

// ---------------------------------------------------------------------------------------------
// One run.

#[derive(Debug, Default)]
struct RunResult {
    subscribers: usize,
    /// The moq version the publisher's session negotiated with the relay.
    version: String,
    rate: u32,
    setup_s: f64,
    sent: u64,
    send_errors: u64,
    received: u64,
    expected: u64,
    window_s: f64,
    relay_cpu_s: f64,
    idle_cpu_pct: f64,
    system_pct: f64,
    us_per_object: f64,
    net_us_per_object: f64,
    rss_mib: f64,
    bench_cpu_s: f64,
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

impl RunResult {
    fn loss_pct(&self) -> f64 {
        pct(self.expected.saturating_sub(self.received), self.expected)
    }
}

async fn run_once(args: &Args, n: usize) -> Result<RunResult> {
    let pid = args.relay_pid.to_string();
    let ticks = clock_ticks_per_second();
    let rate = args.rate_for(n);
    let setup_started = Instant::now();

    // 1. The publisher, 2. N subscribers.
    let mut publisher = Publisher::connect(args).await?;
    let version = publisher
        .connection
        .version()
        .map_or_else(|| "?".to_owned(), |v| v.to_string());
    let subs = connect_subscribers(args, n).await?;
    let setup_s = setup_started.elapsed().as_secs_f64();

    // 3. Warm-up: until every subscriber has received something.
    let warm_until = Instant::now() + WARM_UP_TIMEOUT;
    loop {
        publisher
            .send_paced(rate, u64::from(rate / 10).max(1))
            .await;
        if subs.iter().all(|s| s.received.load(Ordering::Relaxed) > 0) {
            break;
        }
        if Instant::now() > warm_until {
            let silent = subs
                .iter()
                .filter(|s| s.received.load(Ordering::Relaxed) == 0)
                .count();
            bail!("{silent} of {n} subscribers received nothing in warm-up");
        }
    }
    publisher.end_phase();
    settle(&subs).await;

    // 4. The relay's idle CPU (keep-alives, timers), to subtract.
    let idle_cpu_per_s = if args.idle_seconds > 0.0 {
        let before = cpu_ticks(&pid)?;
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(args.idle_seconds)).await;
        (cpu_ticks(&pid)? - before) as f64 / ticks / started.elapsed().as_secs_f64()
    } else {
        0.0
    };

    // 5. The send window.
    let received_before = received(&subs);
    let bench_before = cpu_ticks("self")?;
    let (user_before, system_before) = cpu_split(&pid)?;
    let window_started = Instant::now();
    let total = (args.seconds * f64::from(rate)).round().max(1.0) as u64;
    let (sent, send_errors) = publisher.send_paced(rate, total).await;
    publisher.end_phase();
    settle(&subs).await;
    let (user_after, system_after) = cpu_split(&pid)?;
    let window_s = window_started.elapsed().as_secs_f64();
    let bench_after = cpu_ticks("self")?;
    let delivered = received(&subs) - received_before;

    let system_ticks = system_after - system_before;
    let used_ticks = user_after - user_before + system_ticks;
    let relay_cpu_s = used_ticks as f64 / ticks;
    let per_object = |cpu: f64| {
        if delivered == 0 {
            0.0
        } else {
            cpu * 1e6 / delivered as f64
        }
    };
    let result = RunResult {
        subscribers: n,
        version,
        rate,
        setup_s,
        sent,
        send_errors,
        received: delivered,
        expected: sent * n as u64,
        window_s,
        relay_cpu_s,
        idle_cpu_pct: idle_cpu_per_s * 100.0,
        system_pct: pct(system_ticks, used_ticks),
        us_per_object: per_object(relay_cpu_s),
        net_us_per_object: per_object((relay_cpu_s - idle_cpu_per_s * window_s).max(0.0)),
        rss_mib: status_kib(&pid, "VmRSS:") as f64 / 1024.0,
        bench_cpu_s: (bench_after - bench_before) as f64 / ticks,
    };

    // Tear down: the broadcast ends, every QUIC connection is closed (the relay is told, rather
    // than left waiting out idle timeouts before the next N).
    publisher.broadcast.close();
    for sub in &subs {
        sub.reader.abort();
    }
    let mut clients: Vec<moq_tokio::Client> = subs.iter().map(|s| s.client.clone()).collect();
    clients.push(publisher.client.clone());
    drop(subs);
    drop(publisher);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        for client in clients {
            client.close().await;
        }
    })
    .await;
    Ok(result)
}

// ---------------------------------------------------------------------------------------------
// Output.

const HEADER: &str = "      N   rate/s  setup s      sent   received  loss %  window s  relay CPU s  sys %  µs/obj  net µs/obj  idle %  RSS MiB  bench CPU s  version";

fn row(r: &RunResult) -> String {
    format!(
        "{:>7}  {:>7}  {:>7.1}  {:>8}  {:>9}  {:>6.2}  {:>8.2}  {:>11.2}  {:>5.0}  {:>6.2}  {:>10.2}  {:>6.1}  {:>7.1}  {:>11.2}  {}",
        r.subscribers,
        r.rate,
        r.setup_s,
        r.sent,
        r.received,
        r.loss_pct(),
        r.window_s,
        r.relay_cpu_s,
        r.system_pct,
        r.us_per_object,
        r.net_us_per_object,
        r.idle_cpu_pct,
        r.rss_mib,
        r.bench_cpu_s,
        r.version,
    )
}

fn json(r: &RunResult, mode: Mode) -> String {
    format!(
        concat!(
            "{{\"subscribers\":{},\"rate\":{},\"mode\":\"{:?}\",\"setup_s\":{:.3},\"sent\":{},",
            "\"send_errors\":{},\"received\":{},\"expected\":{},\"loss_pct\":{:.4},",
            "\"window_s\":{:.3},\"relay_cpu_s\":{:.3},\"idle_cpu_pct\":{:.2},\"system_pct\":{:.1},",
            "\"us_per_object\":{:.4},\"net_us_per_object\":{:.4},\"rss_mib\":{:.1},",
            "\"bench_cpu_s\":{:.3},\"version\":\"{}\"}}"
        ),
        r.subscribers,
        r.rate,
        mode,
        r.setup_s,
        r.sent,
        r.send_errors,
        r.received,
        r.expected,
        r.loss_pct(),
        r.window_s,
        r.relay_cpu_s,
        r.idle_cpu_pct,
        r.system_pct,
        r.us_per_object,
        r.net_us_per_object,
        r.rss_mib,
        r.bench_cpu_s,
        r.version,
    )
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(e) = args.validate() {
        eprintln!("moq-fanout: {e}");
        std::process::exit(2);
    }
    if moq_tokio::crypto::install_default().is_err() {
        eprintln!("moq-fanout: could not install the rustls crypto provider");
        std::process::exit(2);
    }
    if !args.json {
        println!(
            "moq-fanout: {} s per run, {}-byte objects, mode {:?}, relay pid {} at {}",
            args.seconds, args.size, args.mode, args.relay_pid, args.url
        );
        println!("{HEADER}");
    }
    let mut failures = 0;
    for &n in &args.subscribers {
        match run_once(&args, n).await {
            Ok(r) if args.json => println!("{}", json(&r, args.mode)),
            Ok(r) => println!("{}", row(&r)),
            Err(e) => {
                failures += 1;
                eprintln!("moq-fanout: N = {n}: {e:#}");
            }
        }
    }
    if failures > 0 {
        std::process::exit(1);
    }
}
