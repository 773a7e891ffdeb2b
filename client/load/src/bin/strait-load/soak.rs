//! The soak: `soak.sessions` sessions kept open for `duration_seconds` while they come and go
//! (see [`Soak`] for the schedule), with the gateway's memory and CPU sampled every
//! `soak.sample_every_seconds`.
//!
//! Each slot is a task that runs one session after another: mint a token for a new identity,
//! connect and join the group's current room (at `ramp_rate` joins per second at most, shared by
//! every slot), publish or subscribe, resume on schedule, hold a TURN allocation if it is one of
//! those slots, and leave (or vanish) when its time is up. A slot whose session could not start
//! waits a second before the next. At the end every session closes cleanly, within a bounded
//! time; nothing outlives the run.
//!
//! The report is a time series (one row per sample: time, sessions, the gateway's RSS and CPU,
//! the machine's load average, the counts so far) and the totals: joins, leaves, vanishes,
//! resumes that worked and that failed, TURN allocations, refreshes and releases, errors.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};
use strait_client::protocol::{ErrorCode, TrackId, TrackKind};
use strait_client::{Client, ClientConfig, LayerSpec, PublishSpec, Session, SessionEvent};
use strait_load::Result;
use strait_load::gateway;
use strait_load::procfs::{self, CpuMark};
use strait_load::rtp::AudioSource;
use strait_load::scenario::{Scenario, Soak, TransportChoice};
use strait_load::turn::{Refreshed, TurnRelay, udp_server};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use super::{Args, Target, opus, transport_for};

/// How long a connect and join, a leave, a resume or a TURN exchange may take before it counts
/// as failed.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the end of the run waits for every session to close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(60);
/// The pause of a slot whose session could not start, before it tries again.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// Distinct failure texts the report keeps; further ones are counted as `(other)`.
const MAX_ERROR_KINDS: usize = 32;

/// Whether `text` is a soak session's identity, `s{slot}-{generation}`.
fn is_identity(text: &str) -> bool {
    text.strip_prefix('s')
        .and_then(|t| t.split_once('-'))
        .is_some_and(|(a, b)| {
            !a.is_empty() && !b.is_empty() && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit())
        })
}

/// What happened so far, counted by every slot.
#[derive(Debug, Default)]
struct Counters {
    active: AtomicU64,
    joins: AtomicU64,
    join_failures: AtomicU64,
    leaves: AtomicU64,
    leaves_unacknowledged: AtomicU64,
    leave_failures: AtomicU64,
    vanishes: AtomicU64,
    resumes_ok: AtomicU64,
    resumes_failed: AtomicU64,
    sessions_lost: AtomicU64,
    publish_failures: AtomicU64,
    subscriptions: AtomicU64,
    subscribe_refusals: AtomicU64,
    media_sent: AtomicU64,
    media_received: AtomicU64,
    send_refused: AtomicU64,
    turn_allocations: AtomicU64,
    turn_allocate_failures: AtomicU64,
    turn_refreshes: AtomicU64,
    turn_stale_nonces: AtomicU64,
    turn_refresh_failures: AtomicU64,
    turn_releases: AtomicU64,
    turn_release_failures: AtomicU64,
    turn_abandoned: AtomicU64,
    turn_unavailable: AtomicU64,
    turn_mismatches: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// State shared by the slots.
#[derive(Debug)]
struct SoakRun {
    soak: Soak,
    transport: TransportChoice,
    seed: u64,
    /// A session's configuration, the token aside.
    template: ClientConfig,
    http: SocketAddr,
    /// Where TURN sockets bind.
    turn_bind: SocketAddr,
    base: Instant,
    /// When the next join may start (joins are paced at `ramp_rate` per second).
    next_join: Mutex<Instant>,
    join_interval: Duration,
    connecting: Arc<Semaphore>,
    stop: watch::Sender<bool>,
    counters: Counters,
    first_error: Mutex<Option<String>>,
    /// Failures by their text, at most [`MAX_ERROR_KINDS`] texts.
    error_kinds: Mutex<BTreeMap<String, u64>>,
}

impl SoakRun {
    fn seconds(&self) -> f64 {
        self.base.elapsed().as_secs_f64()
    }

    /// Counts a failure in `counter` and by its text (without the session's identity), and
    /// keeps the first one whole.
    fn note(&self, counter: &AtomicU64, error: impl std::fmt::Display) {
        bump(counter);
        let error = error.to_string();
        let kind = match error.split_once(": ") {
            Some((who, rest)) if is_identity(who) => rest.to_owned(),
            _ => error.clone(),
        };
        let mut kinds = self.error_kinds.lock().expect("poisoned");
        let known = kinds.len() < MAX_ERROR_KINDS || kinds.contains_key(&kind);
        *kinds
            .entry(if known { kind } else { "(other)".to_owned() })
            .or_default() += 1;
        drop(kinds);
        self.first_error
            .lock()
            .expect("poisoned")
            .get_or_insert(error);
    }

    /// Waits for this slot's turn to start a join; `false` when the run stops first.
    async fn paced(&self, stop: &mut watch::Receiver<bool>) -> bool {
        let at = {
            let mut next = self.next_join.lock().expect("poisoned");
            let at = (*next).max(Instant::now());
            *next = at + self.join_interval;
            at
        };
        let stopped = tokio::select! {
            () = tokio::time::sleep_until(at) => false,
            () = stopped(stop) => true,
        };
        !stopped && !*stop.borrow()
    }
}

/// Waits until the run stops (the guard of the watch is not held across an await).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// How a session ended.
#[derive(Debug)]
enum End {
    /// Its time was up (its lifetime, or its room closed).
    Due,
    /// The run is over.
    Stop,
    /// It could not start, or it broke; the slot pauses before the next.
    Failed,
}

/// One row of the time series.
#[derive(Debug, Default, Clone, serde::Serialize)]
struct Sample {
    t_s: f64,
    /// Sessions of this tool connected and joined now.
    sessions: u64,
    /// The gateway's own counts, from `/metrics`.
    gateway_sessions: u64,
    participants: u64,
    rooms: u64,
    turn_allocations: u64,
    rss_mib: Option<f64>,
    /// The gateway's CPU since the previous row, percent of one core.
    cpu_pct: Option<f64>,
    /// This tool's CPU since the previous row, percent of one core.
    load_tool_cpu_pct: Option<f64>,
    /// The machine's one-minute load average.
    load_average: f64,
    joins: u64,
    leaves: u64,
    vanishes: u64,
    resumes_ok: u64,
    resumes_failed: u64,
    errors: u64,
    media_received: u64,
    turn_refreshes: u64,
}

/// TURN totals.
#[derive(Debug, Default, serde::Serialize)]
struct TurnTotals {
    allocations: u64,
    allocate_failures: u64,
    refreshes: u64,
    /// Refreshes answered 438 first and granted on the second try (counted in `refreshes`).
    stale_nonces: u64,
    refresh_failures: u64,
    releases: u64,
    release_failures: u64,
    /// Allocations of sessions that vanished, left to expire.
    abandoned: u64,
    /// Sessions that should have allocated but whose `ServerHello` offered no TURN over UDP.
    unavailable: u64,
    /// Allocations answered 437 (the server still held an allocation, left to expire, for the
    /// new socket's port) and tried again from another port.
    mismatches: u64,
}

/// What a soak reports.
#[derive(Debug, Default, serde::Serialize)]
pub(super) struct SoakReport {
    scenario: String,
    transport: String,
    sessions: usize,
    rooms: usize,
    duration_seconds: f64,
    joins: u64,
    join_failures: u64,
    leaves: u64,
    /// Leaves (counted in `leaves`) whose acknowledgement the gateway's close of the session
    /// overtook: the session ended with code NONE before the answer to `Leave` arrived.
    leaves_unacknowledged: u64,
    leave_failures: u64,
    vanishes: u64,
    resumes_ok: u64,
    resumes_failed: u64,
    sessions_lost: u64,
    publish_failures: u64,
    subscriptions: u64,
    /// Subscriptions refused (most often: the track's publisher had just left).
    subscribe_refusals: u64,
    media_sent: u64,
    media_received: u64,
    send_refused: u64,
    /// Join failures, leave failures, failed resumes, lost sessions and failed publishes.
    pub(super) errors: u64,
    first_error: Option<String>,
    /// Every failure counted above (TURN's too), by its text.
    failures_by_text: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    turn: Option<TurnTotals>,
    gateway_rss_start_mib: Option<f64>,
    gateway_rss_end_mib: Option<f64>,
    gateway_peak_rss_mib: Option<f64>,
    gateway_cpu_pct_of_one_core: Option<f64>,
    gateway_drops: Vec<(String, u64)>,
    /// `strait_turn_drops_total` by reason, over the run.
    gateway_turn_drops: Vec<(String, u64)>,
    samples: Vec<Sample>,
}

impl SoakReport {
    /// Whether the soak did what it is for: sessions joined.
    pub(super) fn worked(&self) -> bool {
        self.joins > 0
    }
}

/// Runs the soak against `target`.
pub(super) async fn run_soak(
    args: &Args,
    scenario: &Scenario,
    soak: &Soak,
    target: &Target,
) -> Result<SoakReport> {
    let template = target.config(String::new(), strait_client::Transport::Quic);
    let turn_bind = SocketAddr::new(
        target
            .bind
            .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |b| b.ip()),
        0,
    );
    let (stop, _) = watch::channel(false);
    let base = Instant::now();
    let run = Arc::new(SoakRun {
        soak: soak.clone(),
        transport: scenario.transport,
        seed: scenario.seed,
        template,
        http: target.http,
        turn_bind,
        base,
        next_join: Mutex::new(base),
        join_interval: Duration::from_secs_f64(1.0 / scenario.ramp_rate),
        connecting: Arc::new(Semaphore::new(scenario.connect_concurrency)),
        stop,
        counters: Counters::default(),
        first_error: Mutex::new(None),
        error_kinds: Mutex::new(BTreeMap::new()),
    });
    let scrape_before = gateway::scrape(target.http).await.unwrap_or_default();
    let rss_start = target.rss_mib("VmRSS:");
    let cpu_start = target.cpu();
    let ticks = procfs::clock_ticks_per_second();

    let mut slots = tokio::task::JoinSet::new();
    for slot in 0..soak.sessions {
        slots.spawn(run_slot(run.clone(), slot));
    }

    // The time series, until the end of the run.
    let end = base + Duration::from_secs_f64(scenario.duration_seconds);
    let every = Duration::from_secs_f64(soak.sample_every_seconds);
    let mut samples = Vec::new();
    let mut cpu_prev = cpu_start;
    let mut tool_prev = CpuMark::read("self").ok();
    if args.progress {
        eprintln!(
            "{:>7} {:>6} {:>6} {:>9} {:>6} {:>5} {:>7} {:>7} {:>7} {:>6}",
            "t (s)",
            "sess",
            "gw",
            "RSS MiB",
            "CPU%",
            "load",
            "joins",
            "resumes",
            "failed",
            "errors"
        );
    }
    let mut next = base;
    loop {
        next = (next + every).min(end);
        tokio::time::sleep_until(next).await;
        let cpu_now = target.cpu();
        let tool_now = CpuMark::read("self").ok();
        let scrape = gateway::scrape(target.http).await.unwrap_or_default();
        let pct = |a: Option<CpuMark>, b: Option<CpuMark>| {
            a.zip(b).map(|(a, b)| {
                let used = a.until(&b, ticks);
                100.0 * used.cpu_s / used.wall_s.max(1e-9)
            })
        };
        let c = &run.counters;
        let sample = Sample {
            t_s: base.elapsed().as_secs_f64(),
            sessions: get(&c.active),
            gateway_sessions: scrape.sessions,
            participants: scrape.participants,
            rooms: scrape.rooms,
            turn_allocations: scrape.turn_allocations,
            rss_mib: target.rss_mib("VmRSS:"),
            cpu_pct: pct(cpu_prev, cpu_now),
            load_tool_cpu_pct: pct(tool_prev, tool_now),
            load_average: procfs::load_average(),
            joins: get(&c.joins),
            leaves: get(&c.leaves),
            vanishes: get(&c.vanishes),
            resumes_ok: get(&c.resumes_ok),
            resumes_failed: get(&c.resumes_failed),
            errors: errors(c),
            media_received: get(&c.media_received),
            turn_refreshes: get(&c.turn_refreshes),
        };
        cpu_prev = cpu_now;
        tool_prev = tool_now;
        if args.progress {
            eprintln!(
                "{:>7.0} {:>6} {:>6} {:>9} {:>6} {:>5.2} {:>7} {:>7} {:>7} {:>6}",
                sample.t_s,
                sample.sessions,
                sample.gateway_sessions,
                sample.rss_mib.map_or("-".into(), |r| format!("{r:.1}")),
                sample.cpu_pct.map_or("-".into(), |c| format!("{c:.1}")),
                sample.load_average,
                sample.joins,
                sample.resumes_ok,
                sample.resumes_failed,
                sample.errors,
            );
        }
        samples.push(sample);
        if next >= end {
            break;
        }
    }

    // Everyone closes; bounded.
    let _ = run.stop.send(true);
    let closing = async { while slots.join_next().await.is_some() {} };
    if tokio::time::timeout(CLOSE_TIMEOUT, closing).await.is_err() {
        eprintln!(
            "strait-load: {} slots still closing after {} s; stopped",
            slots.len(),
            CLOSE_TIMEOUT.as_secs()
        );
        slots.abort_all();
    }
    let cpu = cpu_start.zip(target.cpu()).map(|(a, b)| a.until(&b, ticks));
    let scrape_after = gateway::scrape(target.http).await.unwrap_or_default();
    let c = &run.counters;
    Ok(SoakReport {
        scenario: scenario.name.clone(),
        transport: format!("{:?}", scenario.transport).to_lowercase(),
        sessions: soak.sessions,
        rooms: soak.groups(),
        duration_seconds: scenario.duration_seconds,
        joins: get(&c.joins),
        join_failures: get(&c.join_failures),
        leaves: get(&c.leaves),
        leaves_unacknowledged: get(&c.leaves_unacknowledged),
        leave_failures: get(&c.leave_failures),
        vanishes: get(&c.vanishes),
        resumes_ok: get(&c.resumes_ok),
        resumes_failed: get(&c.resumes_failed),
        sessions_lost: get(&c.sessions_lost),
        publish_failures: get(&c.publish_failures),
        subscriptions: get(&c.subscriptions),
        subscribe_refusals: get(&c.subscribe_refusals),
        media_sent: get(&c.media_sent),
        media_received: get(&c.media_received),
        send_refused: get(&c.send_refused),
        errors: errors(c),
        first_error: run.first_error.lock().expect("poisoned").clone(),
        failures_by_text: run.error_kinds.lock().expect("poisoned").clone(),
        turn: soak.turn.as_ref().map(|_| TurnTotals {
            allocations: get(&c.turn_allocations),
            allocate_failures: get(&c.turn_allocate_failures),
            refreshes: get(&c.turn_refreshes),
            stale_nonces: get(&c.turn_stale_nonces),
            refresh_failures: get(&c.turn_refresh_failures),
            releases: get(&c.turn_releases),
            release_failures: get(&c.turn_release_failures),
            abandoned: get(&c.turn_abandoned),
            unavailable: get(&c.turn_unavailable),
            mismatches: get(&c.turn_mismatches),
        }),
        gateway_rss_start_mib: rss_start,
        gateway_rss_end_mib: target.rss_mib("VmRSS:"),
        gateway_peak_rss_mib: target.rss_mib("VmHWM:"),
        gateway_cpu_pct_of_one_core: cpu.map(|c| 100.0 * c.cpu_s / c.wall_s.max(1e-9)),
        gateway_drops: scrape_after.drops_since(&scrape_before),
        gateway_turn_drops: since(&scrape_after.turn_drops, &scrape_before.turn_drops),
        samples,
    })
}

/// The counters of `after` that moved since `before`, by label.
fn since(after: &[(String, u64)], before: &[(String, u64)]) -> Vec<(String, u64)> {
    after
        .iter()
        .map(|(k, v)| {
            let was = before.iter().find(|(b, _)| b == k).map_or(0, |(_, v)| *v);
            (k.clone(), v.saturating_sub(was))
        })
        .filter(|(_, d)| *d > 0)
        .collect()
}

fn errors(c: &Counters) -> u64 {
    get(&c.join_failures)
        + get(&c.leave_failures)
        + get(&c.resumes_failed)
        + get(&c.sessions_lost)
        + get(&c.publish_failures)
}

/// One slot: sessions one after the other until the run stops.
async fn run_slot(run: Arc<SoakRun>, slot: usize) {
    let soak = &run.soak;
    let group = slot / soak.room_size;
    let mut rng =
        SmallRng::seed_from_u64(run.seed ^ (slot as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut stop = run.stop.subscribe();
    let mut generation = 0u64;
    loop {
        if !run.paced(&mut stop).await {
            return;
        }
        let now = run.seconds();
        let (room, closes) = soak.room_at(group, now);
        let plan = Plan {
            slot,
            room: format!("soak-{group}-{room}"),
            identity: format!("s{slot}-{generation}"),
            leave_at: (now + soak.session_lifetime_seconds * rng.random_range(0.5..1.5))
                .min(closes),
            vanish: rng.random::<f64>() < soak.vanish_share,
            resume_phase: rng.random::<f64>(),
        };
        generation += 1;
        match session(&run, plan, &mut stop).await {
            End::Due => {}
            End::Stop => return,
            End::Failed => {
                tokio::select! {
                    () = tokio::time::sleep(RETRY_PAUSE) => {}
                    () = stopped(&mut stop) => return,
                }
            }
        }
    }
}

/// One session's life, drawn by its slot.
#[derive(Debug)]
struct Plan {
    slot: usize,
    room: String,
    identity: String,
    /// Seconds into the run.
    leave_at: f64,
    vanish: bool,
    /// The first resume comes this share of a period after the join.
    resume_phase: f64,
}

async fn session(run: &Arc<SoakRun>, plan: Plan, stop: &mut watch::Receiver<bool>) -> End {
    let c = &run.counters;
    let token = match gateway::mint_token(run.http, &plan.room, &plan.identity).await {
        Ok(token) => token,
        Err(e) => {
            run.note(&c.join_failures, format!("{}: token: {e}", plan.identity));
            return End::Failed;
        }
    };
    let mut config = run.template.clone();
    config.token = token;
    config.transport = transport_for(run.transport, plan.slot);
    let permit = tokio::select! {
        permit = run.connecting.clone().acquire_owned() => match permit {
            Ok(permit) => permit,
            Err(_) => return End::Stop,
        },
        () = stopped(stop) => return End::Stop,
    };
    let joined = tokio::time::timeout(STEP_TIMEOUT, async {
        let session = Client::connect(config).await?;
        session.join(&plan.room).await?;
        Ok::<_, strait_client::ClientError>(session)
    })
    .await;
    drop(permit);
    let session = match joined {
        Ok(Ok(session)) => session,
        Ok(Err(e)) => {
            run.note(&c.join_failures, format!("{}: join: {e}", plan.identity));
            return End::Failed;
        }
        Err(_) => {
            run.note(
                &c.join_failures,
                format!("{}: join: timed out", plan.identity),
            );
            return End::Failed;
        }
    };
    bump(&c.joins);
    c.active.fetch_add(1, Ordering::Relaxed);
    let end = live(run, &plan, &session, stop).await;
    c.active.fetch_sub(1, Ordering::Relaxed);
    end
}

/// A joined session until it is due to go, then its departure.
async fn live(
    run: &Arc<SoakRun>,
    plan: &Plan,
    session: &Session,
    stop: &mut watch::Receiver<bool>,
) -> End {
    let soak = &run.soak;
    let c = &run.counters;
    let position = plan.slot % soak.room_size;

    // TURN: a task of its own, told when the session ends (and whether it vanished).
    let (turn_done, turn_wait) = watch::channel(None::<bool>);
    let turn = soak
        .turn
        .as_ref()
        .filter(|t| plan.slot.is_multiple_of(t.every_nth_session))
        .map(|t| {
            tokio::spawn(hold_turn(
                run.clone(),
                session.ice_servers(),
                Duration::from_secs_f64(t.refresh_every_seconds),
                turn_wait,
            ))
        });

    // The room's publishers publish audio.
    let mut audio = None;
    let mut audio_tick = None;
    if position < soak.publishers_per_room
        && let Some(spec) = &soak.audio
    {
        let published = session
            .publish(PublishSpec {
                kind: TrackKind::Audio,
                codec: opus(),
                source: "microphone".into(),
                layers: vec![LayerSpec::default()],
                muted: false,
            })
            .await;
        match published {
            Ok(track) => {
                let source = AudioSource::new(
                    plan.slot as u32,
                    spec.packets_per_second,
                    spec.payload_bytes,
                );
                audio = Some((track.media[0], source));
                audio_tick = Some(tokio::time::interval(Duration::from_secs_f64(
                    1.0 / f64::from(spec.packets_per_second),
                )));
            }
            Err(e) => run.note(
                &c.publish_failures,
                format!("{}: publish: {e}", plan.identity),
            ),
        }
    }

    let leave_at = run.base + Duration::from_secs_f64(plan.leave_at);
    let period = soak.resume_every_seconds.map(Duration::from_secs_f64);
    let mut next_resume = period.map(|p| Instant::now() + p.mul_f64(plan.resume_phase));
    // A resume under way: when it started.
    let mut resuming: Option<Instant> = None;
    let mut changes = session.room_changes();
    let mut refused: HashMap<TrackId, Instant> = HashMap::new();
    subscribe_new(run, session, &mut refused).await;
    let far = Instant::now() + Duration::from_secs(86_400);

    let end = loop {
        tokio::select! {
            () = stopped(stop) => break End::Stop,
            // A session whose resume is under way leaves once it is over (or has failed).
            () = tokio::time::sleep_until(leave_at), if resuming.is_none() => break End::Due,
            () = tokio::time::sleep_until(next_resume.unwrap_or(far)), if next_resume.is_some() && resuming.is_none() => {
                next_resume = period.map(|p| Instant::now() + p);
                match session.resume_now().await {
                    Ok(()) => resuming = Some(Instant::now()),
                    Err(e) => {
                        run.note(&c.resumes_failed, format!("{}: resume: {e}", plan.identity));
                        break End::Failed;
                    }
                }
            }
            () = tokio::time::sleep_until(resuming.map_or(far, |t| t + STEP_TIMEOUT)), if resuming.is_some() => {
                run.note(&c.resumes_failed, format!("{}: resume: no outcome in {} s", plan.identity, STEP_TIMEOUT.as_secs()));
                break End::Failed;
            }
            event = session.next_event() => match event {
                Some(SessionEvent::Resumed { .. }) => {
                    if resuming.take().is_some() {
                        bump(&c.resumes_ok);
                    }
                }
                Some(SessionEvent::ResumeFailed { .. }) => {
                    // A fresh session now, in no room: this slot starts over.
                    run.note(&c.resumes_failed, format!("{}: resume refused", plan.identity));
                    break End::Failed;
                }
                Some(SessionEvent::Closed(e)) => {
                    run.note(&c.sessions_lost, format!("{}: closed: {e}", plan.identity));
                    break End::Failed;
                }
                None => {
                    run.note(&c.sessions_lost, format!("{}: closed", plan.identity));
                    break End::Failed;
                }
                Some(_) => {}
            },
            changed = changes.changed() => {
                if changed.is_err() {
                    run.note(&c.sessions_lost, format!("{}: room state ended", plan.identity));
                    break End::Failed;
                }
                subscribe_new(run, session, &mut refused).await;
            }
            packet = session.recv_media() => match packet {
                Some(_) => bump(&c.media_received),
                None => {
                    run.note(&c.sessions_lost, format!("{}: media ended", plan.identity));
                    break End::Failed;
                }
            },
            () = tick(&mut audio_tick) => {
                if let Some((media, source)) = audio.as_mut() {
                    let rtp = source.next_packet(run.base.elapsed().as_micros() as u64);
                    match session.send_rtp(*media, &rtp) {
                        Ok(()) => bump(&c.media_sent),
                        // Refused while the session moves to a new connection.
                        Err(_) => bump(&c.send_refused),
                    }
                }
            }
        }
    };

    // The departure.
    let vanish = matches!(end, End::Due) && plan.vanish;
    let _ = turn_done.send(Some(vanish));
    match end {
        End::Due if vanish => {
            session
                .close_with(ErrorCode::INTERNAL, "the soak's client vanished")
                .await;
            bump(&c.vanishes);
        }
        End::Due => match tokio::time::timeout(STEP_TIMEOUT, session.leave()).await {
            Ok(Ok(())) => bump(&c.leaves),
            // The gateway took the leave and closed the session (code NONE, `left`) before its
            // answer reached the client: a leave, whose acknowledgement the close cut off.
            Ok(Err(strait_client::ClientError::Closed { code, .. })) if code == ErrorCode::NONE => {
                bump(&c.leaves);
                bump(&c.leaves_unacknowledged);
            }
            Ok(Err(e)) => run.note(&c.leave_failures, format!("{}: leave: {e}", plan.identity)),
            Err(_) => {
                run.note(
                    &c.leave_failures,
                    format!("{}: leave: timed out", plan.identity),
                );
                session.close().await;
            }
        },
        End::Stop | End::Failed => session.close().await,
    }
    if let Some(turn) = turn {
        let _ = tokio::time::timeout(STEP_TIMEOUT, turn).await;
    }
    end
}

/// The next tick of `interval`; never without one.
async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Subscribes to every track of the room that the session is not subscribed to yet (and not
/// its own). A refused track is tried again no sooner than [`RETRY_PAUSE`] later: every control
/// message the session receives, a refusal included, counts as a room change.
async fn subscribe_new(run: &SoakRun, session: &Session, refused: &mut HashMap<TrackId, Instant>) {
    let c = &run.counters;
    let me = session.participant();
    let tracks = session.tracks();
    let now = Instant::now();
    refused.retain(|t, at| now < *at + RETRY_PAUSE && tracks.iter().any(|x| x.track == *t));
    for track in tracks.iter().filter(|t| t.participant != me) {
        if refused.contains_key(&track.track) || session.subscription(track.track).is_some() {
            continue;
        }
        match session.subscribe(track.track, None).await {
            Ok(_) => bump(&c.subscriptions),
            // The publisher may have left in between: churn, not an error.
            Err(_) => {
                bump(&c.subscribe_refusals);
                refused.insert(track.track, Instant::now());
            }
        }
    }
}

/// Holds a TURN allocation for one session: allocate with the `ServerHello`'s credentials,
/// refresh every `period`, and release it when the session leaves (a session that vanished
/// leaves it to expire).
async fn hold_turn(
    run: Arc<SoakRun>,
    servers: Vec<strait_client::protocol::IceServer>,
    period: Duration,
    mut done: watch::Receiver<Option<bool>>,
) {
    let c = &run.counters;
    let credentials = servers.iter().find_map(|s| {
        Some((
            udp_server(&s.urls)?,
            s.username.clone()?,
            s.credential.clone()?,
        ))
    });
    let Some((server, username, password)) = credentials else {
        bump(&c.turn_unavailable);
        return;
    };
    let mut relay = match TurnRelay::allocate(
        server,
        run.turn_bind,
        &username,
        &password,
        STEP_TIMEOUT,
    )
    .await
    {
        Ok(relay) => {
            bump(&c.turn_allocations);
            c.turn_mismatches
                .fetch_add(u64::from(relay.mismatches()), Ordering::Relaxed);
            relay
        }
        Err(e) => {
            run.note(&c.turn_allocate_failures, format!("TURN allocate: {e}"));
            return;
        }
    };
    let mut tick = tokio::time::interval_at(Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let vanished = loop {
        tokio::select! {
            changed = done.changed() => {
                break changed.is_ok() && *done.borrow() == Some(true);
            }
            _ = tick.tick() => match relay.refresh(STEP_TIMEOUT).await {
                Ok(Refreshed::Ok) => bump(&c.turn_refreshes),
                Ok(Refreshed::AfterStaleNonce) => {
                    bump(&c.turn_refreshes);
                    bump(&c.turn_stale_nonces);
                }
                Err(e) => run.note(&c.turn_refresh_failures, format!("TURN refresh: {e}")),
            },
        }
    };
    if vanished {
        bump(&c.turn_abandoned);
        return;
    }
    match relay.release(Duration::from_secs(5)).await {
        Ok(()) => bump(&c.turn_releases),
        Err(e) => run.note(&c.turn_release_failures, format!("TURN release: {e}")),
    }
}

/// Prints the report: the totals, then the time series as a table.
pub(super) fn print_soak(r: &SoakReport) {
    println!(
        "strait-load: scenario `{}` over {}",
        r.scenario, r.transport
    );
    println!(
        "  sessions      {} in {} rooms for {:.0} s",
        r.sessions, r.rooms, r.duration_seconds
    );
    println!(
        "  joins         {} ({} failed); leaves {} ({} closed before their answer, {} failed); vanished {}; lost {}",
        r.joins,
        r.join_failures,
        r.leaves,
        r.leaves_unacknowledged,
        r.leave_failures,
        r.vanishes,
        r.sessions_lost
    );
    println!(
        "  resumes       {} ok, {} failed",
        r.resumes_ok, r.resumes_failed
    );
    println!(
        "  media         {} sent ({} refused), {} received; {} subscriptions ({} refused); {} publish failures",
        r.media_sent,
        r.send_refused,
        r.media_received,
        r.subscriptions,
        r.subscribe_refusals,
        r.publish_failures
    );
    if let Some(t) = &r.turn {
        println!(
            "  TURN          {} allocations ({} failed, {} without a server, {} tried again after a 437), {} refreshes ({} after a stale nonce, {} failed), {} released ({} failed), {} left to expire",
            t.allocations,
            t.allocate_failures,
            t.unavailable,
            t.mismatches,
            t.refreshes,
            t.stale_nonces,
            t.refresh_failures,
            t.releases,
            t.release_failures,
            t.abandoned
        );
    }
    println!("  errors        {}", r.errors);
    if let Some(e) = &r.first_error {
        println!("  first error   {e}");
    }
    for (text, n) in &r.failures_by_text {
        println!("                {n} × {text}");
    }
    let mib = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1} MiB"));
    println!(
        "  gateway       RSS {} at the start, {} at the end (peak {}); CPU {} of a core over the run",
        mib(r.gateway_rss_start_mib),
        mib(r.gateway_rss_end_mib),
        mib(r.gateway_peak_rss_mib),
        r.gateway_cpu_pct_of_one_core
            .map_or("-".to_owned(), |c| format!("{c:.1} %"))
    );
    if !r.gateway_drops.is_empty() {
        let drops: Vec<_> = r
            .gateway_drops
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("                drops {}", drops.join(", "));
    }
    if !r.gateway_turn_drops.is_empty() {
        let drops: Vec<_> = r
            .gateway_turn_drops
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("                TURN drops {}", drops.join(", "));
    }
    println!();
    println!(
        "| t (s) | sessions | gateway sessions | rooms | TURN allocations | RSS (MiB) | CPU (% of a core) | load avg | joins | leaves | vanished | resumes ok | resumes failed | errors |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in &r.samples {
        println!(
            "| {:.0} | {} | {} | {} | {} | {} | {} | {:.2} | {} | {} | {} | {} | {} | {} |",
            s.t_s,
            s.sessions,
            s.gateway_sessions,
            s.rooms,
            s.turn_allocations,
            s.rss_mib.map_or("-".into(), |v| format!("{v:.1}")),
            s.cpu_pct.map_or("-".into(), |v| format!("{v:.1}")),
            s.load_average,
            s.joins,
            s.leaves,
            s.vanishes,
            s.resumes_ok,
            s.resumes_failed,
            s.errors
        );
    }
}
