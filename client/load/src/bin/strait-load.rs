//! # strait-load
//!
//! The load generator of Strait: it runs a scenario (a TOML file, `client/load/scenarios/`)
//! against a gateway and prints what it measured.
//!
//! A **rooms** scenario opens `rooms.count` rooms of `rooms.publishers` publishers (each sends an
//! Opus-like audio track and/or a VP8-like video track, and receives every other publisher) and
//! `rooms.subscribers` receivers, over raw QUIC, WebTransport or both, started at `ramp_rate`
//! sessions per second. Every packet carries a stamp in its payload (stream, sequence number,
//! send time); senders and receivers are in this process, so the receivers measure end-to-end
//! forwarding latency, loss and reordering over a window of `duration_seconds` after the ramp
//! and a warm-up. Join latency (connect → `ServerHello`, → joined, → first media) is measured for
//! every session.
//!
//! `rooms.churn` makes the receivers move while they receive: a rebind to a new UDP socket
//! (QUIC migration) or a new connection with the resume token, on a schedule; the report gives
//! the gap from a rebind to the next media packet, and from a resume to `Resumed` and to the
//! first media packet on the new connection.
//!
//! A **join storm** starts sessions that connect and join (no media) at a rate that grows every
//! second until the gateway refuses `stop_after_refusals` of them or `max_sessions` is reached;
//! it reports joins per second, join latency, the gateway's CPU per join and its memory per idle
//! session.
//!
//! A **soak** keeps `soak.sessions` sessions open for `duration_seconds` (30 minutes in
//! `soak.toml`) while they come and go: sessions leave and new ones take their place, rooms
//! close and open under new names, sessions resume on new connections, some drop their
//! connection without leaving, and some hold a TURN allocation that they refresh. It samples the
//! gateway's RSS and CPU over time and reports them as a table, with the counts of joins,
//! leaves, resumes and errors (module `soak`).
//!
//! An **overload** grows the load on one media worker step by step until it sheds: publishers
//! of audio and video in `overload.rooms` rooms, then `overload.subscribers_per_step` more
//! subscribers per room at each step. Per step it reports the subscribers in, the joins refused,
//! the gateway's shedding level, queue delay and busy ratio (sampled from `/metrics`), whether
//! `/readyz` said unready, and the share of the audio and of the video sent that reached the
//! subscribers; then the order in which shedding came (joins refused, the layer ceiling, video
//! beyond the latest speakers paused) and audio's worst step. It fails when shedding came out
//! of that order or audio fell below `overload.audio_floor_pct` (module `overload`).
//!
//! The gateway is the `strait` binary started as a child on loopback (`--strait`, its CPU and RSS
//! read from `/proc`), or one already running (`--quic`, `--http`, `--cert-sha256`, and
//! `--gateway-pid` for `/proc`). Bounded: it stops after the scenario's window, only connects to
//! the address it is given, and kills the gateway it started when it ends.
//!
//! ```text
//! cargo build --release -p strait-gateway -p strait-load --bin strait --bin strait-load
//! target/release/strait-load client/load/scenarios/fanout.toml --set rooms.subscribers=200
//! target/release/strait-load client/load/scenarios/smoke.toml --json
//! target/release/strait-load client/load/scenarios/overload.toml
//! ```
//!
//! Linux only for the `/proc` figures.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use strait_client::protocol::{Codec, TrackKind};
use strait_client::{
    Client, ClientConfig, LayerSpec, PublishSpec, Session, SessionEvent, Transport, Trust,
};
use strait_load::gateway::{self, GatewayChild, Scrape};
use strait_load::procfs::{self, CpuMark, CpuUse};
use strait_load::rtp::{AUDIO_PT, AudioSource, Stamp, VIDEO_PT, VideoSource};
use strait_load::scenario::{JoinStorm, Rooms, Scenario, TransportChoice};
use strait_load::stats::{Histogram, pct};
use strait_load::{Error, Result};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

// Beside this file rather than in `src/bin/`, where cargo would take it for a program of its own.
#[path = "strait-load/overload.rs"]
mod overload;
#[path = "strait-load/soak.rs"]
mod soak;

/// Runs a load scenario against a Strait gateway and reports what it measured.
#[derive(Debug, clap::Parser)]
#[command(name = "strait-load")]
struct Args {
    /// The scenario file (TOML, see client/load/scenarios/).
    scenario: PathBuf,
    /// Overrides a scenario value (dotted key, TOML value); repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// The gateway binary to start on loopback.
    #[arg(long, default_value = "target/release/strait")]
    strait: PathBuf,
    /// Use a running gateway at this QUIC address instead (with --http and --cert-sha256).
    #[arg(long, requires_all = ["http", "cert"])]
    quic: Option<SocketAddr>,
    /// The running gateway's HTTP address.
    #[arg(long, requires_all = ["quic", "cert"])]
    http: Option<SocketAddr>,
    /// The running gateway's certificate hash (AA:BB:… or hex).
    #[arg(long = "cert-sha256", value_name = "HEX", value_parser = parse_sha256, requires_all = ["quic", "http"])]
    cert: Option<[u8; 32]>,
    /// The running gateway's process id, for its CPU and memory from /proc.
    #[arg(long)]
    gateway_pid: Option<u32>,
    /// Prints the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long = "no-progress", action = clap::ArgAction::SetFalse)]
    progress: bool,
}

/// A SHA-256 in hex, with or without colons.
fn parse_sha256(text: &str) -> std::result::Result<[u8; 32], String> {
    let text = text.replace(':', "");
    if text.len() != 64 {
        return Err("32 bytes in hex".into());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The gateway under test.

#[derive(Debug)]
struct Target {
    quic: SocketAddr,
    http: SocketAddr,
    cert: [u8; 32],
    pid: Option<String>,
    child: Option<GatewayChild>,
    bind: Option<SocketAddr>,
    keep_alive: Option<Duration>,
}

impl Target {
    async fn open(args: &Args, scenario: &Scenario) -> Result<Target> {
        if let (Some(quic), Some(http), Some(cert)) = (args.quic, args.http, args.cert) {
            if !quic.ip().is_loopback() || !http.ip().is_loopback() {
                eprintln!(
                    "strait-load: note: targeting {quic}, not loopback; make sure it is yours"
                );
            }
            return Ok(Target {
                quic,
                http,
                cert,
                pid: args.gateway_pid.map(|p| p.to_string()),
                child: None,
                bind: scenario.bind_ip.map(|ip| SocketAddr::new(ip, 0)),
                keep_alive: scenario.keep_alive_seconds.map(Duration::from_secs_f64),
            });
        }
        // Raise the limits the scenario would hit by design; the scenario's own settings come
        // last and win. A soak's sessions briefly hold two connections while they resume.
        let sessions = match &scenario.soak {
            Some(soak) => 2 * soak.sessions + 16,
            None => scenario.sessions() + 16,
        };
        let mut settings = vec![
            format!("limits.max_sessions_per_ip={sessions}"),
            format!(
                "limits.max_participants_per_room={}",
                scenario.room_size() + 16
            ),
        ];
        if sessions > 10_000 {
            settings.push(format!("limits.max_sessions={sessions}"));
        }
        if let Some(rooms) = &scenario.rooms {
            settings.push(format!("limits.max_rooms={}", rooms.count + 16));
        }
        if let Some(storm) = &scenario.join_storm {
            settings.push(format!(
                "limits.max_rooms={}",
                storm.max_sessions.div_ceil(storm.room_size) + 16
            ));
        }
        if let Some(overload) = &scenario.overload {
            // The scenario's subject: one media worker that sheds load.
            settings.extend([
                "media.workers=1".to_owned(),
                "shedding.enabled=true".to_owned(),
                format!("limits.max_rooms={}", overload.rooms + 16),
            ]);
        }
        if let Some(soak) = &scenario.soak {
            // Rooms whose vanished participants wait out their grace period linger beside the
            // groups' new rooms.
            settings.push(format!("limits.max_rooms={}", 2 * soak.groups() + 16));
            if let Some(turn) = &soak.turn {
                settings.extend([
                    "turn.enabled=true".to_owned(),
                    r#"turn.transports=["udp"]"#.to_owned(),
                    r#"turn.udp_listen="127.0.0.1:0""#.to_owned(),
                    // Allocations of vanished sessions wait to expire beside the live ones.
                    format!(
                        "turn.max_allocations={}",
                        2 * soak.sessions.div_ceil(turn.every_nth_session) + 16
                    ),
                    // Every allocation starts with a 401, and all of them come from this one
                    // address: the per-source budget of 401s must hold the ramp's.
                    format!(
                        "turn.unauthorized_per_second={}",
                        (2.0 * scenario.ramp_rate).ceil().max(10.0)
                    ),
                    format!(
                        "turn.unauthorized_burst={}",
                        soak.sessions.div_ceil(turn.every_nth_session) + 16
                    ),
                ]);
            }
        }
        settings.extend(scenario.gateway_settings.iter().cloned());
        let child = GatewayChild::start(&args.strait, &settings).await?;
        Ok(Target {
            quic: child.quic,
            http: child.http,
            cert: child.cert,
            pid: Some(child.pid.to_string()),
            child: Some(child),
            bind: scenario.bind_ip.map(|ip| SocketAddr::new(ip, 0)),
            keep_alive: scenario.keep_alive_seconds.map(Duration::from_secs_f64),
        })
    }

    fn cpu(&self) -> Option<CpuMark> {
        self.pid.as_deref().and_then(|p| CpuMark::read(p).ok())
    }

    fn rss_mib(&self, field: &str) -> Option<f64> {
        self.pid
            .as_deref()
            .map(|p| procfs::status_kib(p, field) as f64 / 1024.0)
    }

    fn config(&self, token: String, transport: Transport) -> ClientConfig {
        let mut config = ClientConfig::new(self.quic, Trust::Hashes(vec![self.cert]), token);
        config.transport = transport;
        config.media_queue = 512;
        config.event_queue = 64;
        config.auto_resume = false;
        config.hello_timeout = Duration::from_secs(30);
        config.request_timeout = Duration::from_secs(30);
        // Many sessions in one process: modest socket buffers.
        config.socket_buffer = 512 * 1024;
        config.bind = self.bind;
        if let Some(keep_alive) = self.keep_alive {
            config.keep_alive = keep_alive;
        }
        config
    }
}

fn transport_for(choice: TransportChoice, index: usize) -> Transport {
    match choice {
        TransportChoice::Quic => Transport::Quic,
        TransportChoice::Webtransport => Transport::WebTransport,
        TransportChoice::Mixed if index % 2 == 1 => Transport::WebTransport,
        TransportChoice::Mixed => Transport::Quic,
    }
}

/// Tokens for every identity, minted before anything is timed.
async fn mint_all(target: &Target, who: &[(String, String)]) -> Result<Vec<String>> {
    let permits = Arc::new(Semaphore::new(16));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (room, identity)) in who.iter().cloned().enumerate() {
        let permits = permits.clone();
        let http = target.http;
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            Ok::<_, Error>((i, gateway::mint_token(http, &room, &identity).await?))
        });
    }
    let mut tokens = vec![String::new(); who.len()];
    while let Some(done) = tasks.join_next().await {
        let (i, token) = done??;
        tokens[i] = token;
    }
    Ok(tokens)
}

fn progress(enabled: bool, len: u64, what: &str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

// ---------------------------------------------------------------------------------------------
// Rooms with media.

/// Who a session is: room and index, publisher or receiver.
#[derive(Debug, Clone, Copy)]
struct Role {
    room: usize,
    publisher: Option<usize>,
    index: usize,
}

impl Role {
    fn identity(&self) -> String {
        match self.publisher {
            Some(p) => format!("r{}-p{p}", self.room),
            None => format!("r{}-s{}", self.room, self.index),
        }
    }

    fn room_name(&self) -> String {
        format!("load-{}", self.room)
    }
}

/// The stream index of publisher `p` of `room`, kind `video` or audio.
fn stream_index(rooms: &Rooms, room: usize, p: usize, video: bool) -> u32 {
    ((room * rooms.publishers + p) * 2 + usize::from(video)) as u32
}

/// The other participants' tracks, once the session shows at least `expected` of them (waited
/// for on its room changes); `None` if the session ends first. Unbounded: the caller bounds it.
async fn others_tracks(
    session: &Session,
    expected: usize,
) -> Option<Vec<strait_client::protocol::TrackInfo>> {
    let me = session.participant();
    let mut changes = session.room_changes();
    loop {
        let tracks: Vec<_> = session
            .tracks()
            .into_iter()
            .filter(|t| t.participant != me)
            .collect();
        if tracks.len() >= expected {
            return Some(tracks);
        }
        changes.changed().await.ok()?;
    }
}

/// The (room, publisher) an identity `r{room}-p{p}` names.
fn publisher_of(identity: &str) -> Option<(usize, usize)> {
    let (room, p) = identity.strip_prefix('r')?.split_once("-p")?;
    Some((room.parse().ok()?, p.parse().ok()?))
}

/// State shared by every session task of a rooms run.
#[derive(Debug)]
struct Run {
    base: Instant,
    /// The measured window, µs since `base` (`u64::MAX` until set).
    window_start: AtomicU64,
    window_end: AtomicU64,
    /// Packets sent inside the window, by stream index.
    window_sent: Vec<AtomicU64>,
    sent_total: AtomicU64,
    send_refused: AtomicU64,
    received_total: AtomicU64,
    ready: AtomicUsize,
    failed: AtomicUsize,
    /// Raised whenever `ready` or `failed` moves.
    settled: tokio::sync::Notify,
    first_error: Mutex<Option<String>>,
    joins: Mutex<JoinTimes>,
    stop: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct JoinTimes {
    connect: Histogram,
    joined: Histogram,
    first_media: Histogram,
}

impl Run {
    fn now_us(&self) -> u64 {
        self.base.elapsed().as_micros() as u64
    }

    fn in_window(&self, us: u64) -> bool {
        us >= self.window_start.load(Ordering::Relaxed)
            && us < self.window_end.load(Ordering::Relaxed)
    }

    fn fail(&self, e: impl std::fmt::Display) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.settled.notify_one();
        self.first_error
            .lock()
            .expect("poisoned")
            .get_or_insert_with(|| e.to_string());
    }
}

/// What one receiving session measured in the window.
#[derive(Debug, Default)]
struct Received {
    latency: Histogram,
    in_window: u64,
    expected_streams: Vec<u32>,
    out_of_order: u64,
    media_dropped: u64,
    /// Rebind → next media packet.
    rebind_gap: Histogram,
    /// `resume_now` → `Resumed`.
    resume_handshake: Histogram,
    /// `resume_now` → first media packet on the new connection.
    resume_to_media: Histogram,
    rebinds: u64,
    resumes: u64,
    churn_failures: u64,
}

/// What woke a receiver up.
#[derive(Debug)]
enum Step {
    Packet(Option<strait_client::MediaPacket>),
    Stop,
    Move,
    Event(Option<SessionEvent>),
}

/// When receiver `slot` of `slots` next rebinds or resumes: every `period` seconds from the
/// window's start, shifted by `slot / slots` of a period, inside the window only.
#[derive(Debug)]
struct Schedule {
    period_us: u64,
    offset_us: u64,
    done: u64,
}

impl Schedule {
    fn new(period_s: Option<f64>, slot: usize, slots: usize) -> Option<Schedule> {
        let period_us = (period_s? * 1e6) as u64;
        Some(Schedule {
            period_us,
            offset_us: period_us * slot as u64 / slots.max(1) as u64,
            done: 0,
        })
    }

    /// The next due time, µs since the run's base, if it falls in the window.
    fn due_us(&self, run: &Run) -> Option<u64> {
        let start = run.window_start.load(Ordering::Relaxed);
        if start == u64::MAX {
            return None;
        }
        let due = start + self.offset_us + self.done * self.period_us;
        (due < run.window_end.load(Ordering::Relaxed)).then_some(due)
    }
}

fn opus() -> Codec {
    Codec {
        name: "opus".into(),
        payload_type: AUDIO_PT,
        clock_rate: 48_000,
        channels: 2,
        fmtp: String::new(),
    }
}

fn vp8() -> Codec {
    Codec {
        name: "VP8".into(),
        payload_type: VIDEO_PT,
        clock_rate: 90_000,
        channels: 0,
        fmtp: String::new(),
    }
}

/// One session of a rooms run: connect, join, publish, wait for the room's tracks, subscribe,
/// then receive until told to stop.
async fn participant(
    run: Arc<Run>,
    rooms: Arc<Rooms>,
    role: Role,
    config: ClientConfig,
    seed: u64,
    permit: OwnedSemaphorePermit,
) -> Option<Received> {
    match participant_inner(&run, &rooms, role, config, seed, permit).await {
        Ok(r) => Some(r),
        Err(e) => {
            run.fail(format!("{}: {e}", role.identity()));
            None
        }
    }
}

async fn participant_inner(
    run: &Arc<Run>,
    rooms: &Arc<Rooms>,
    role: Role,
    config: ClientConfig,
    seed: u64,
    permit: OwnedSemaphorePermit,
) -> Result<Received> {
    let started = Instant::now();
    let session = Arc::new(Client::connect(config).await?);
    let connected = started.elapsed();
    session.join(&role.room_name()).await?;
    let joined = started.elapsed();
    {
        let mut joins = run.joins.lock().expect("poisoned");
        joins.connect.record_us(connected.as_micros() as u64);
        joins.joined.record_us(joined.as_micros() as u64);
    }
    let mut stop = run.stop.subscribe();
    let mut sender = None;
    if let Some(p) = role.publisher {
        sender = Some(tokio::spawn(publish(
            run.clone(),
            session.clone(),
            rooms.clone(),
            role.room,
            p,
            seed,
        )));
    }
    // Every other publisher's tracks: wait until the room shows them (publishers start first).
    let own = usize::from(rooms.audio.is_some()) + usize::from(rooms.video.is_some());
    let expected = own * (rooms.publishers - usize::from(role.publisher.is_some()));
    let tracks = match tokio::time::timeout(
        Duration::from_secs(60),
        others_tracks(&session, expected),
    )
    .await
    {
        Ok(Some(tracks)) => tracks,
        Ok(None) => return Err("the session ended while waiting for tracks".into()),
        Err(_) => {
            let me = session.participant();
            let seen = session
                .tracks()
                .iter()
                .filter(|t| t.participant != me)
                .count();
            return Err(format!("saw {seen} of {expected} tracks in 60 s").into());
        }
    };
    let names: HashMap<_, _> = session
        .participants()
        .into_iter()
        .map(|p| (p.participant, p.identity))
        .collect();
    let mut received = Received::default();
    for track in &tracks {
        session.subscribe(track.track, None).await?;
        let publisher = names.get(&track.participant).and_then(|i| publisher_of(i));
        if let Some((room, p)) = publisher {
            received.expected_streams.push(stream_index(
                rooms,
                room,
                p,
                track.kind == TrackKind::Video,
            ));
        }
    }
    run.ready.fetch_add(1, Ordering::Relaxed);
    run.settled.notify_one();
    drop(permit);

    // Receivers that move: their schedules (none for publishers).
    let churn = rooms.churn.clone().unwrap_or_default();
    let (slot, slots) = (
        role.room * rooms.subscribers + role.index,
        rooms.count * rooms.subscribers,
    );
    let receiver = role.publisher.is_none();
    let mut rebind = Schedule::new(churn.rebind_every_seconds, slot, slots).filter(|_| receiver);
    let mut resume = Schedule::new(churn.resume_every_seconds, slot, slots).filter(|_| receiver);
    let moves = rebind.is_some() || resume.is_some();
    // The move in progress: when it started, and (resume) when `Resumed` arrived.
    let mut rebound_at: Option<Instant> = None;
    let mut resume_started: Option<Instant> = None;
    let mut resumed_at: Option<Instant> = None;

    // Receive until stopped.
    let mut streams: HashMap<u32, u32> = HashMap::new();
    let mut first = true;
    loop {
        // The next scheduled move; before the window opens, look again in 100 ms.
        let next_move = if moves {
            let due = [&rebind, &resume]
                .into_iter()
                .flatten()
                .filter_map(|s| s.due_us(run))
                .min();
            Some(
                due.map_or(Instant::now() + Duration::from_millis(100), |us| {
                    run.base + Duration::from_micros(us)
                }),
            )
        } else {
            None
        };
        let step = tokio::select! {
            packet = session.recv_media() => Step::Packet(packet),
            _ = stop.wait_for(|s| *s) => Step::Stop,
            _ = tokio::time::sleep_until(next_move.unwrap_or_else(Instant::now)), if next_move.is_some() => Step::Move,
            event = session.next_event(), if resume.is_some() => Step::Event(event),
        };
        let packet = match step {
            Step::Packet(packet) => packet,
            Step::Stop => break,
            Step::Move => {
                let now_us = run.now_us();
                let due = |s: &Schedule| s.due_us(run).is_some_and(|d| d <= now_us);
                if let Some(s) = rebind.as_mut().filter(|s| due(s)) {
                    s.done += 1;
                    match session.rebind() {
                        Ok(_) => {
                            received.rebinds += 1;
                            rebound_at = Some(Instant::now());
                        }
                        Err(_) => received.churn_failures += 1,
                    }
                }
                if let Some(s) = resume.as_mut().filter(|s| due(s)) {
                    s.done += 1;
                    // One resume at a time: a move still waiting for `Resumed` is left alone.
                    if resume_started.is_none() {
                        let started = Instant::now();
                        if session.resume_now().await.is_ok() {
                            received.resumes += 1;
                            resume_started = Some(started);
                            resumed_at = None;
                        } else {
                            received.churn_failures += 1;
                        }
                    }
                }
                continue;
            }
            Step::Event(event) => {
                match event {
                    Some(SessionEvent::Resumed { outage, .. }) => {
                        // `outage` runs from the move's start to `ServerHello` on the new
                        // connection; media taken off the connection after that instant came
                        // on the new one.
                        if let Some(started) = resume_started {
                            received
                                .resume_handshake
                                .record_us(outage.as_micros() as u64);
                            resumed_at = Some(started + outage);
                        }
                    }
                    Some(SessionEvent::ResumeFailed { .. }) => {
                        received.churn_failures += 1;
                        resume_started = None;
                    }
                    Some(SessionEvent::Closed(_)) | None => break,
                    Some(_) => {}
                }
                continue;
            }
        };
        let Some(packet) = packet else { break };
        if let Some(at) = rebound_at.take() {
            received
                .rebind_gap
                .record_us(packet.received_at.duration_since(at).as_micros() as u64);
        }
        if let (Some(started), Some(resumed)) = (resume_started, resumed_at)
            && packet.received_at >= resumed
        {
            received
                .resume_to_media
                .record_us(packet.received_at.duration_since(started).as_micros() as u64);
            resume_started = None;
            resumed_at = None;
        }
        if first {
            first = false;
            let us = packet.received_at.duration_since(started).as_micros() as u64;
            run.joins
                .lock()
                .expect("poisoned")
                .first_media
                .record_us(us);
        }
        run.received_total.fetch_add(1, Ordering::Relaxed);
        let Some(stamp) = Stamp::parse_rtp(&packet.rtp) else {
            continue;
        };
        let max = streams.entry(stamp.stream).or_insert(0);
        if stamp.seq < *max {
            received.out_of_order += 1;
        } else {
            *max = stamp.seq;
        }
        if run.in_window(stamp.sent_us) {
            received.in_window += 1;
            let at = packet.received_at.duration_since(run.base).as_micros() as u64;
            received.latency.record_us(at.saturating_sub(stamp.sent_us));
        }
    }
    received.media_dropped = session.stats().media_dropped;
    if let Some(sender) = sender {
        let _ = sender.await;
    }
    session.close().await;
    Ok(received)
}

/// Publishes the room's tracks for publisher `p` and sends media until stopped.
async fn publish(
    run: Arc<Run>,
    session: Arc<Session>,
    rooms: Arc<Rooms>,
    room: usize,
    p: usize,
    seed: u64,
) {
    let mut audio = None;
    let mut video = None;
    if let Some(spec) = &rooms.audio {
        match session
            .publish(PublishSpec {
                kind: TrackKind::Audio,
                codec: opus(),
                source: "microphone".into(),
                layers: vec![LayerSpec::default()],
                muted: false,
            })
            .await
        {
            Ok(track) => {
                let source = AudioSource::new(
                    stream_index(&rooms, room, p, false),
                    spec.packets_per_second,
                    spec.payload_bytes,
                );
                audio = Some((track, source, spec.packets_per_second));
            }
            Err(e) => return run.fail(format!("r{room}-p{p}: publish audio: {e}")),
        }
    }
    if let Some(spec) = &rooms.video {
        match session
            .publish(PublishSpec {
                kind: TrackKind::Video,
                codec: vp8(),
                source: "camera".into(),
                layers: vec![LayerSpec {
                    max_bitrate: spec.bitrate,
                    width: 1280,
                    height: 720,
                }],
                muted: false,
            })
            .await
        {
            Ok(track) => {
                let source = VideoSource::new(stream_index(&rooms, room, p, true), spec, seed);
                video = Some((track, source, spec.fps));
            }
            Err(e) => return run.fail(format!("r{room}-p{p}: publish video: {e}")),
        }
    }
    // Keyframe requests from the gateway (a new subscriber) make the next frame a keyframe.
    let keyframe = Arc::new(AtomicBool::new(false));
    let events = {
        let session = session.clone();
        let keyframe = keyframe.clone();
        tokio::spawn(async move {
            while let Some(event) = session.next_event().await {
                match event {
                    SessionEvent::KeyframeRequested { .. } => {
                        keyframe.store(true, Ordering::Relaxed);
                    }
                    SessionEvent::Closed(_) => break,
                    _ => {}
                }
            }
        })
    };
    let period = |rate: u32| Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut audio_tick = tokio::time::interval(period(audio.as_ref().map_or(1, |a| a.2)));
    let mut video_tick = tokio::time::interval(period(video.as_ref().map_or(1, |v| v.2)));
    let mut stop = run.stop.subscribe();
    let send = |media, rtp: &[u8], stream: u32, sent_us: u64| match session.send_rtp(media, rtp) {
        Ok(()) => {
            run.sent_total.fetch_add(1, Ordering::Relaxed);
            if run.in_window(sent_us) {
                run.window_sent[stream as usize].fetch_add(1, Ordering::Relaxed);
            }
        }
        Err(_) => {
            run.send_refused.fetch_add(1, Ordering::Relaxed);
        }
    };
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = audio_tick.tick(), if audio.is_some() => {
                if let Some((track, source, _)) = audio.as_mut() {
                    let now = run.now_us();
                    let rtp = source.next_packet(now);
                    send(track.media[0], &rtp, stream_index(&rooms, room, p, false), now);
                }
            }
            _ = video_tick.tick(), if video.is_some() => {
                if let Some((track, source, _)) = video.as_mut() {
                    if keyframe.swap(false, Ordering::Relaxed) {
                        source.request_keyframe();
                    }
                    let now = run.now_us();
                    for rtp in source.next_frame(now) {
                        send(track.media[0], &rtp, stream_index(&rooms, room, p, true), now);
                    }
                }
            }
        }
    }
    events.abort();
}

#[derive(Debug, Default, serde::Serialize)]
struct Quantiles {
    p50_ms: Option<f64>,
    p95_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
    samples: u64,
}

impl Quantiles {
    fn of(h: &Histogram) -> Quantiles {
        let q = |x| h.quantile_us(x).map(|us| us as f64 / 1000.0);
        Quantiles {
            p50_ms: q(0.5),
            p95_ms: q(0.95),
            p99_ms: q(0.99),
            max_ms: q(1.0),
            samples: h.count(),
        }
    }

    fn show(&self) -> String {
        let f = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
        format!(
            "p50 {} / p95 {} / p99 {} / max {} ms ({} samples)",
            f(self.p50_ms),
            f(self.p95_ms),
            f(self.p99_ms),
            f(self.max_ms),
            self.samples
        )
    }
}

#[derive(Debug, Default, serde::Serialize)]
struct GatewayFigures {
    cpu_pct_of_one_core: Option<f64>,
    system_pct: Option<f64>,
    rss_mib: Option<f64>,
    peak_rss_mib: Option<f64>,
    packets_in: u64,
    packets_out: u64,
    us_per_forwarded_packet: Option<f64>,
    drops: HashMap<String, u64>,
}

impl GatewayFigures {
    fn of(target: &Target, cpu: Option<CpuUse>, before: &Scrape, after: &Scrape) -> Self {
        let packets_out = after.packets_out.saturating_sub(before.packets_out);
        GatewayFigures {
            cpu_pct_of_one_core: cpu.map(|c| 100.0 * c.cpu_s / c.wall_s.max(1e-9)),
            system_pct: cpu.map(|c| c.system_pct),
            rss_mib: target.rss_mib("VmRSS:"),
            peak_rss_mib: target.rss_mib("VmHWM:"),
            packets_in: after.packets_in.saturating_sub(before.packets_in),
            packets_out,
            us_per_forwarded_packet: cpu
                .filter(|_| packets_out > 0)
                .map(|c| c.cpu_s * 1e6 / packets_out as f64),
            drops: after.drops_since(before).into_iter().collect(),
        }
    }
}

#[derive(Debug, Default, serde::Serialize)]
struct RoomsReport {
    scenario: String,
    transport: String,
    rooms: usize,
    sessions: usize,
    sessions_ready: usize,
    sessions_failed: usize,
    first_error: Option<String>,
    ramp_seconds: f64,
    connect: Quantiles,
    joined: Quantiles,
    first_media: Quantiles,
    window_seconds: f64,
    packets_sent_in_window: u64,
    expected_deliveries: u64,
    delivered: u64,
    loss_pct: f64,
    out_of_order: u64,
    send_refused: u64,
    receiver_queue_drops: u64,
    latency: Quantiles,
    #[serde(skip_serializing_if = "Option::is_none")]
    churn: Option<ChurnReport>,
    gateway: GatewayFigures,
    load_cpu_pct_of_one_core: f64,
}

/// What the receivers' moves cost them.
#[derive(Debug, Default, serde::Serialize)]
struct ChurnReport {
    rebinds: u64,
    /// Rebind → next media packet received.
    rebind_gap: Quantiles,
    resumes: u64,
    /// `resume_now` → `Resumed` (the new connection's handshake and the resume).
    resume_handshake: Quantiles,
    /// `resume_now` → first media packet on the new connection.
    resume_to_first_media: Quantiles,
    failures: u64,
    /// Inter-arrival time of media at a receiver that does not move, for scale: a gap is never
    /// shorter than the wait for the next packet.
    media_interval_ms: Option<f64>,
}

async fn run_rooms(
    args: &Args,
    scenario: &Scenario,
    rooms: &Rooms,
    target: &Target,
) -> Result<RoomsReport> {
    let mut roles = Vec::new();
    for room in 0..rooms.count {
        for p in 0..rooms.publishers {
            roles.push(Role {
                room,
                publisher: Some(p),
                index: p,
            });
        }
    }
    for room in 0..rooms.count {
        for s in 0..rooms.subscribers {
            roles.push(Role {
                room,
                publisher: None,
                index: s,
            });
        }
    }
    let who: Vec<_> = roles
        .iter()
        .map(|r| (r.room_name(), r.identity()))
        .collect();
    let tokens = mint_all(target, &who).await?;
    let streams = rooms.count * rooms.publishers * 2;
    let (stop, _) = watch::channel(false);
    let run = Arc::new(Run {
        base: Instant::now(),
        window_start: AtomicU64::new(u64::MAX),
        window_end: AtomicU64::new(u64::MAX),
        window_sent: (0..streams).map(|_| AtomicU64::new(0)).collect(),
        sent_total: AtomicU64::new(0),
        send_refused: AtomicU64::new(0),
        received_total: AtomicU64::new(0),
        ready: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        settled: tokio::sync::Notify::new(),
        first_error: Mutex::new(None),
        joins: Mutex::new(JoinTimes::default()),
        stop,
    });
    let shared_rooms = Arc::new(rooms.clone());
    let total = roles.len();

    // The ramp: `ramp_rate` sessions per second, at most `connect_concurrency` connecting.
    let bar = progress(args.progress, total as u64, "sessions ready");
    let ramp_started = Instant::now();
    let permits = Arc::new(Semaphore::new(scenario.connect_concurrency));
    let mut tasks = Vec::with_capacity(total);
    let interval = Duration::from_secs_f64(1.0 / scenario.ramp_rate);
    for (i, (role, token)) in roles.iter().zip(tokens).enumerate() {
        let due = ramp_started + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        let permit = permits.clone().acquire_owned().await?;
        let config = target.config(token, transport_for(scenario.transport, i));
        let run = run.clone();
        let rooms = shared_rooms.clone();
        let role = *role;
        let seed = scenario.seed;
        // The permit is held until the session is ready (or failed).
        tasks.push(tokio::spawn(participant(
            run.clone(),
            rooms,
            role,
            config,
            seed,
            permit,
        )));
        bar.set_position(
            (run.ready.load(Ordering::Relaxed) + run.failed.load(Ordering::Relaxed)) as u64,
        );
    }
    // Until every session is ready or failed (bounded). `notify_one` keeps a wake-up raised
    // between the count and the wait.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let done = run.ready.load(Ordering::Relaxed) + run.failed.load(Ordering::Relaxed);
        bar.set_position(done as u64);
        if done >= total
            || tokio::time::timeout_at(deadline, run.settled.notified())
                .await
                .is_err()
        {
            break;
        }
    }
    let ramp_seconds = ramp_started.elapsed().as_secs_f64();
    bar.finish_and_clear();

    // Warm-up, then the window.
    tokio::time::sleep(Duration::from_secs_f64(scenario.warmup_seconds)).await;
    let scrape_before = gateway::scrape(target.http).await.unwrap_or_default();
    let cpu_before = target.cpu();
    let load_before = CpuMark::read("self").ok();
    let start = run.now_us();
    let window = Duration::from_secs_f64(scenario.duration_seconds);
    run.window_end
        .store(start + window.as_micros() as u64, Ordering::Relaxed);
    run.window_start.store(start, Ordering::Relaxed);
    let bar = progress(
        args.progress,
        scenario.duration_seconds.ceil() as u64,
        "s measured",
    );
    let window_started = Instant::now();
    while window_started.elapsed() < window {
        tokio::time::sleep(Duration::from_millis(250)).await;
        bar.set_position(window_started.elapsed().as_secs());
        bar.set_message(format!(
            "s measured; {} packets received",
            run.received_total.load(Ordering::Relaxed)
        ));
    }
    bar.finish_and_clear();
    let cpu = cpu_before
        .zip(target.cpu())
        .map(|(a, b)| a.until(&b, procfs::clock_ticks_per_second()));
    let load_cpu = load_before
        .zip(CpuMark::read("self").ok())
        .map(|(a, b)| a.until(&b, procfs::clock_ticks_per_second()));
    let scrape_after = gateway::scrape(target.http).await.unwrap_or_default();
    // Let the window's last packets arrive, then stop everyone.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = run.stop.send(true);
    let mut latency = Histogram::default();
    let (mut delivered, mut out_of_order, mut queue_drops, mut expected) = (0, 0, 0, 0);
    let mut churn = ChurnTotals::default();
    for task in tasks {
        if let Ok(Ok(Some(r))) = tokio::time::timeout(Duration::from_secs(10), task).await {
            churn.add(&r);
            latency.merge(&r.latency);
            delivered += r.in_window;
            out_of_order += r.out_of_order;
            queue_drops += r.media_dropped;
            expected += r
                .expected_streams
                .iter()
                .map(|s| run.window_sent[*s as usize].load(Ordering::Relaxed))
                .sum::<u64>();
        }
    }
    let joins = std::mem::take(&mut *run.joins.lock().expect("poisoned"));
    Ok(RoomsReport {
        scenario: scenario.name.clone(),
        transport: format!("{:?}", scenario.transport).to_lowercase(),
        rooms: rooms.count,
        sessions: total,
        sessions_ready: run.ready.load(Ordering::Relaxed),
        sessions_failed: run.failed.load(Ordering::Relaxed),
        first_error: run.first_error.lock().expect("poisoned").clone(),
        ramp_seconds,
        connect: Quantiles::of(&joins.connect),
        joined: Quantiles::of(&joins.joined),
        first_media: Quantiles::of(&joins.first_media),
        window_seconds: scenario.duration_seconds,
        packets_sent_in_window: run
            .window_sent
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum(),
        expected_deliveries: expected,
        delivered,
        loss_pct: pct(expected.saturating_sub(delivered), expected),
        out_of_order,
        send_refused: run.send_refused.load(Ordering::Relaxed),
        receiver_queue_drops: queue_drops,
        latency: Quantiles::of(&latency),
        churn: rooms.churn.as_ref().map(|_| churn.report(&run, rooms)),
        gateway: GatewayFigures::of(target, cpu, &scrape_before, &scrape_after),
        load_cpu_pct_of_one_core: load_cpu.map_or(0.0, |c| 100.0 * c.cpu_s / c.wall_s.max(1e-9)),
    })
}

#[derive(Debug, Default)]
struct ChurnTotals {
    rebind_gap: Histogram,
    resume_handshake: Histogram,
    resume_to_media: Histogram,
    rebinds: u64,
    resumes: u64,
    failures: u64,
}

impl ChurnTotals {
    fn add(&mut self, r: &Received) {
        self.rebind_gap.merge(&r.rebind_gap);
        self.resume_handshake.merge(&r.resume_handshake);
        self.resume_to_media.merge(&r.resume_to_media);
        self.rebinds += r.rebinds;
        self.resumes += r.resumes;
        self.failures += r.churn_failures;
    }

    fn report(&self, run: &Run, rooms: &Rooms) -> ChurnReport {
        // Packets per second one receiver expects: every publisher's tracks.
        let window_s =
            (run.window_end
                .load(Ordering::Relaxed)
                .saturating_sub(run.window_start.load(Ordering::Relaxed))) as f64
                / 1e6;
        let per_publisher: u64 = (0..rooms.publishers)
            .flat_map(|p| {
                [
                    stream_index(rooms, 0, p, false),
                    stream_index(rooms, 0, p, true),
                ]
            })
            .map(|s| run.window_sent[s as usize].load(Ordering::Relaxed))
            .sum();
        let rate = per_publisher as f64 / window_s.max(1e-9);
        ChurnReport {
            rebinds: self.rebinds,
            rebind_gap: Quantiles::of(&self.rebind_gap),
            resumes: self.resumes,
            resume_handshake: Quantiles::of(&self.resume_handshake),
            resume_to_first_media: Quantiles::of(&self.resume_to_media),
            failures: self.failures,
            media_interval_ms: (rate > 0.0).then(|| 1000.0 / rate),
        }
    }
}

fn opt(v: Option<f64>, unit: &str) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.2}{unit}"))
}

fn print_rooms(r: &RoomsReport) {
    println!(
        "strait-load: scenario `{}` over {}",
        r.scenario, r.transport
    );
    println!(
        "  sessions      {} in {} rooms: {} ready, {} failed (ramp {:.1} s)",
        r.sessions, r.rooms, r.sessions_ready, r.sessions_failed, r.ramp_seconds
    );
    if let Some(e) = &r.first_error {
        println!("  first error   {e}");
    }
    println!("  connect       {}", r.connect.show());
    println!("  joined        {}", r.joined.show());
    println!("  first media   {}", r.first_media.show());
    println!(
        "  window        {:.1} s: {} packets sent, {} of {} deliveries ({:.3} % lost), {} out of order",
        r.window_seconds,
        r.packets_sent_in_window,
        r.delivered,
        r.expected_deliveries,
        r.loss_pct,
        r.out_of_order
    );
    println!("  latency       {}", r.latency.show());
    println!(
        "  refused sends {}, receiver queue drops {}",
        r.send_refused, r.receiver_queue_drops
    );
    if let Some(c) = &r.churn {
        println!(
            "  media interval {} at a receiver (for scale)",
            opt(c.media_interval_ms, " ms")
        );
        if c.rebinds > 0 {
            println!(
                "  rebinds       {}: gap to next media {}",
                c.rebinds,
                c.rebind_gap.show()
            );
        }
        if c.resumes > 0 {
            println!(
                "  resumes       {}: to Resumed {}",
                c.resumes,
                c.resume_handshake.show()
            );
            println!(
                "                to first media {}",
                c.resume_to_first_media.show()
            );
        }
        println!("  move failures {}", c.failures);
    }
    print_gateway(&r.gateway);
    println!(
        "  load tool     {:.0} % of a core",
        r.load_cpu_pct_of_one_core
    );
}

fn print_gateway(g: &GatewayFigures) {
    println!(
        "  gateway       CPU {} of a core ({} sys), {} per forwarded packet; RSS {} (peak {})",
        opt(g.cpu_pct_of_one_core, " %"),
        opt(g.system_pct, " %"),
        opt(g.us_per_forwarded_packet, " µs"),
        opt(g.rss_mib, " MiB"),
        opt(g.peak_rss_mib, " MiB"),
    );
    let mut drops: Vec<_> = g.drops.iter().map(|(k, v)| format!("{k}={v}")).collect();
    drops.sort();
    println!(
        "                packets in {}, out {}, drops {}",
        g.packets_in,
        g.packets_out,
        if drops.is_empty() {
            "0".to_owned()
        } else {
            drops.join(", ")
        }
    );
}

// ---------------------------------------------------------------------------------------------
// Join storm.

#[derive(Debug, Default, serde::Serialize)]
struct StormReport {
    scenario: String,
    transport: String,
    attempted: usize,
    joined: usize,
    refused: usize,
    first_error: Option<String>,
    storm_seconds: f64,
    final_start_rate: f64,
    joins_per_second_overall: f64,
    joins_per_second_peak: f64,
    connect: Quantiles,
    joined_latency: Quantiles,
    gateway_cpu_ms_per_join: Option<f64>,
    gateway_rss_before_mib: Option<f64>,
    gateway_rss_idle_mib: Option<f64>,
    gateway_kib_per_idle_session: Option<f64>,
    gateway_idle_cpu_pct_of_one_core: Option<f64>,
}

async fn run_storm(
    args: &Args,
    scenario: &Scenario,
    storm: &JoinStorm,
    target: &Target,
) -> Result<StormReport> {
    let who: Vec<_> = (storm.first_session..storm.first_session + storm.max_sessions)
        .map(|i| (format!("storm-{}", i / storm.room_size), format!("s{i}")))
        .collect();
    let tokens = mint_all(target, &who).await?;
    let rss_before = target.rss_mib("VmRSS:");
    let cpu_before = target.cpu();

    let joined = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let times: Arc<Mutex<(Histogram, Histogram, Vec<f64>)>> = Arc::default();
    let sessions: Arc<Mutex<Vec<Session>>> = Arc::default();
    let permits = Arc::new(Semaphore::new(scenario.connect_concurrency));
    let bar = progress(args.progress, storm.max_sessions as u64, "joined");
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut launched = 0;
    let mut rate = storm.start_rate;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    while launched < storm.max_sessions
        && refused.load(Ordering::Relaxed) < storm.stop_after_refusals
    {
        tick.tick().await;
        let t = started.elapsed().as_secs_f64();
        rate = storm.start_rate + storm.rate_increase_per_second * t;
        let due =
            (storm.start_rate * t + storm.rate_increase_per_second * t * t / 2.0) as usize + 1;
        while launched < due.min(storm.max_sessions) {
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                break;
            };
            let i = launched;
            launched += 1;
            let config = target.config(tokens[i].clone(), transport_for(scenario.transport, i));
            let room = who[i].0.clone();
            let (joined, refused, first_error, times, sessions) = (
                joined.clone(),
                refused.clone(),
                first_error.clone(),
                times.clone(),
                sessions.clone(),
            );
            tasks.spawn(async move {
                let _permit = permit;
                let t0 = Instant::now();
                let outcome = async {
                    let session = Client::connect(config).await?;
                    let connected = t0.elapsed();
                    session.join(&room).await?;
                    Ok::<_, Error>((session, connected, t0.elapsed()))
                }
                .await;
                match outcome {
                    Ok((session, connected, done)) => {
                        joined.fetch_add(1, Ordering::Relaxed);
                        let mut times = times.lock().expect("poisoned");
                        times.0.record_us(connected.as_micros() as u64);
                        times.1.record_us(done.as_micros() as u64);
                        times.2.push(started.elapsed().as_secs_f64());
                        sessions.lock().expect("poisoned").push(session);
                    }
                    Err(e) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        first_error
                            .lock()
                            .expect("poisoned")
                            .get_or_insert_with(|| e.to_string());
                    }
                }
            });
        }
        bar.set_position(joined.load(Ordering::Relaxed) as u64);
        bar.set_message(format!(
            "joined; starting {rate:.0}/s, {} refused",
            refused.load(Ordering::Relaxed)
        ));
        // Reap finished tasks so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    let drain = async { while tasks.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(Duration::from_secs(60), drain).await;
    let storm_seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let cpu_storm = cpu_before
        .zip(target.cpu())
        .map(|(a, b)| a.until(&b, procfs::clock_ticks_per_second()));

    // Idle: every session kept open; memory and CPU of the gateway with them.
    tokio::time::sleep(Duration::from_secs_f64(scenario.warmup_seconds)).await;
    let idle_before = target.cpu();
    tokio::time::sleep(Duration::from_secs_f64(scenario.duration_seconds)).await;
    let idle = idle_before
        .zip(target.cpu())
        .map(|(a, b)| a.until(&b, procfs::clock_ticks_per_second()));
    let rss_idle = target.rss_mib("VmRSS:");
    let joined_n = joined.load(Ordering::Relaxed);
    let (connect, joined_latency, done_at) = std::mem::take(&mut *times.lock().expect("poisoned"));
    let mut per_second: HashMap<u64, usize> = HashMap::new();
    for t in &done_at {
        *per_second.entry(*t as u64).or_default() += 1;
    }
    let last = done_at.iter().copied().fold(0.0, f64::max);
    let report = StormReport {
        scenario: scenario.name.clone(),
        transport: format!("{:?}", scenario.transport).to_lowercase(),
        attempted: launched,
        joined: joined_n,
        refused: refused.load(Ordering::Relaxed),
        first_error: first_error.lock().expect("poisoned").clone(),
        storm_seconds,
        final_start_rate: rate,
        joins_per_second_overall: if last > 0.0 {
            joined_n as f64 / last
        } else {
            0.0
        },
        joins_per_second_peak: per_second.values().copied().max().unwrap_or(0) as f64,
        connect: Quantiles::of(&connect),
        joined_latency: Quantiles::of(&joined_latency),
        gateway_cpu_ms_per_join: cpu_storm
            .filter(|_| joined_n > 0)
            .map(|c| c.cpu_s * 1e3 / joined_n as f64),
        gateway_rss_before_mib: rss_before,
        gateway_rss_idle_mib: rss_idle,
        gateway_kib_per_idle_session: rss_before
            .zip(rss_idle)
            .filter(|_| joined_n > 0)
            .map(|(a, b)| (b - a) * 1024.0 / joined_n as f64),
        gateway_idle_cpu_pct_of_one_core: idle.map(|c| 100.0 * c.cpu_s / c.wall_s.max(1e-9)),
    };
    for session in std::mem::take(&mut *sessions.lock().expect("poisoned")) {
        drop(session);
    }
    Ok(report)
}

fn print_storm(r: &StormReport) {
    println!(
        "strait-load: scenario `{}` over {}",
        r.scenario, r.transport
    );
    println!(
        "  sessions      {} attempted, {} joined, {} refused or failed, in {:.1} s (start rate at the end {:.0}/s)",
        r.attempted, r.joined, r.refused, r.storm_seconds, r.final_start_rate
    );
    if let Some(e) = &r.first_error {
        println!("  first error   {e}");
    }
    println!(
        "  joins/s       {:.0} overall, {:.0} in the best second",
        r.joins_per_second_overall, r.joins_per_second_peak
    );
    println!("  connect       {}", r.connect.show());
    println!("  joined        {}", r.joined_latency.show());
    println!(
        "  gateway       {} CPU per join; RSS {} before, {} with the sessions idle: {} per idle session; idle CPU {} of a core",
        opt(r.gateway_cpu_ms_per_join, " ms"),
        opt(r.gateway_rss_before_mib, " MiB"),
        opt(r.gateway_rss_idle_mib, " MiB"),
        opt(r.gateway_kib_per_idle_session, " KiB"),
        opt(r.gateway_idle_cpu_pct_of_one_core, " %"),
    );
}

// ---------------------------------------------------------------------------------------------

async fn run(args: &Args) -> Result<bool> {
    let text = std::fs::read_to_string(&args.scenario)
        .map_err(|e| format!("{}: {e}", args.scenario.display()))?;
    let scenario = Scenario::parse(&text, &args.sets)
        .map_err(|e| format!("{}: {e}", args.scenario.display()))?;
    let target = Target::open(args, &scenario).await?;
    let ok = match (
        &scenario.rooms,
        &scenario.join_storm,
        &scenario.soak,
        &scenario.overload,
    ) {
        (Some(rooms), ..) => {
            let report = run_rooms(args, &scenario, rooms, &target).await?;
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print_rooms(&report);
            }
            report.sessions_failed == 0 && report.delivered > 0
        }
        (_, Some(storm), ..) => {
            let report = run_storm(args, &scenario, storm, &target).await?;
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print_storm(&report);
            }
            report.joined > 0
        }
        (_, _, Some(soak), _) => {
            let report = soak::run_soak(args, &scenario, soak, &target).await?;
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                soak::print_soak(&report);
            }
            report.worked()
        }
        (_, _, _, Some(overload)) => {
            let report = overload::run_overload(args, &scenario, overload, &target).await?;
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                overload::print_overload(&report);
            }
            for failure in &report.failures {
                eprintln!("strait-load: overload: {failure}");
            }
            report.failures.is_empty()
        }
        _ => unreachable!("validated"),
    };
    if let Some(child) = target.child {
        child.stop().await;
    }
    Ok(ok)
}

#[tokio::main]
async fn main() {
    let args = <Args as clap::Parser>::parse();
    match run(&args).await {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("strait-load: {e}");
            std::process::exit(1);
        }
    }
}
