//! The overload: a load that grows step by step past one media worker, to see load shedding in
//! its stated order (joins refused and the node unready, then the layer ceiling, then video
//! beyond the latest speakers paused) and audio delivered throughout (see [`Overload`] for the
//! schedule).
//!
//! The publishers start first and send until the end: an Opus-like audio track and a VP8-like
//! video track each, every packet stamped with its stream and send time (the gateway rewrites
//! headers, never payloads), every send time logged by stream. Each step then launches its joins
//! at even intervals, the last one at the step's end; a subscriber that joins waits for its
//! room's tracks, subscribes to each and notes when each subscription was granted, then counts
//! what it receives by the step and kind of the packet's send. A sampler task reads `/metrics`
//! and `/readyz` every `sample_every_seconds` and hands the readings to the step under way.
//!
//! What a subscriber should have received in a step is every packet its tracks' publishers sent
//! in the step after its subscription was granted; what it did receive is counted by send time,
//! so a packet still on its way when the step ends counts for its own step. The shares are
//! computed once sending has stopped and the last packets have arrived (the receivers stay quiet
//! for a moment, or a few seconds pass).
//!
//! The order is judged by step: the first step with a refused join, the first with level 2 or
//! more sampled, the first with level 3 sampled, the first in which `shed_video` drops moved.
//! Because a step's last join comes after its last sample, a step that saw any level also saw a
//! join tried under it. The run fails (and says why) when the layer ceiling or paused video came
//! in a step before the first refused join, when a step delivered less audio than
//! `audio_floor_pct`, or when no subscriber got in at all.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strait_client::protocol::TrackKind;
use strait_client::{Client, ClientError, LayerSpec, PublishSpec, Session, SessionEvent};
use strait_load::gateway::{self, Scrape};
use strait_load::procfs;
use strait_load::rtp::{self, AudioSource, Stamp, VideoSource};
use strait_load::scenario::{Overload, Scenario};
use strait_load::{Error, Result};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;

use super::{Args, Target, opus, others_tracks, publisher_of, transport_for, vp8};

/// How long a publisher's start or a subscriber's join (connect, join, subscriptions) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the end of the run waits for every session to close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Once sending stops: the receivers are done when nothing arrived for this long…
const DRAIN_QUIET: Duration = Duration::from_millis(300);
/// … or after this long at most.
const DRAIN_MOST: Duration = Duration::from_secs(3);
/// Index of audio in the per-kind counters.
const AUDIO: usize = 0;
/// Index of video in the per-kind counters.
const VIDEO: usize = 1;

/// The stream index of publisher `p` of `room`, video or audio: the stamp's stream.
fn stream_index(overload: &Overload, room: usize, p: usize, video: bool) -> u32 {
    ((room * overload.publishers + p) * 2 + usize::from(video)) as u32
}

fn room_name(room: usize) -> String {
    format!("overload-{room}")
}

/// One subscription of a subscriber, and from when it should deliver.
#[derive(Debug, Clone, Copy)]
struct Subscribed {
    stream: u32,
    /// When `Subscribe` was sent, µs since the run's base.
    requested: u64,
    /// When its answer came back.
    granted: u64,
}

impl Subscribed {
    fn video(&self) -> bool {
        self.stream % 2 == 1
    }
}

/// State shared by the publishers, the subscribers and the steps.
#[derive(Debug)]
struct OverloadRun {
    base: Instant,
    /// Send times of every packet sent, µs since `base`, by stream (in order: one sender each).
    sent: Vec<Mutex<Vec<u64>>>,
    /// Send times of the keyframes, by stream (empty for audio).
    keyframes: Vec<Mutex<Vec<u64>>>,
    /// When each step started, µs since `base` (`u64::MAX` until it starts, so the values are
    /// sorted).
    step_starts: Vec<AtomicU64>,
    /// Packets the subscribers received, by the step they were sent in and by kind.
    received: Vec<[AtomicU64; 2]>,
    received_total: AtomicU64,
    /// Packets the subscribers' sessions dropped from their full receive queues (this tool
    /// not keeping up), by the step they were counted in.
    queue_drops: Vec<AtomicU64>,
    send_refused: AtomicU64,
    /// Every admitted subscriber's subscriptions.
    subscribers: Mutex<Vec<Vec<Subscribed>>>,
    /// Raised when the publishers stop sending.
    sending_stop: watch::Sender<bool>,
    /// Raised when everyone stops.
    stop: watch::Sender<bool>,
}

impl OverloadRun {
    fn now_us(&self) -> u64 {
        self.base.elapsed().as_micros() as u64
    }

    /// The step a packet sent at `us` belongs to (`None`: before the first step).
    fn step_of(&self, us: u64) -> Option<usize> {
        // The started steps' starts, then `u64::MAX`: sorted, so a binary search.
        let (mut low, mut high) = (0, self.step_starts.len());
        while low < high {
            let middle = (low + high) / 2;
            if self.step_starts[middle].load(Ordering::Relaxed) <= us {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        low.checked_sub(1)
    }

    /// Packets of `stream` sent in `[from, to)`, µs since `base`.
    fn sent_between(&self, stream: u32, from: u64, to: u64) -> u64 {
        if from >= to {
            return 0;
        }
        let sent = self.sent[stream as usize].lock().expect("poisoned");
        (sent.partition_point(|&t| t < to) - sent.partition_point(|&t| t < from)) as u64
    }

    /// When `subscription` should deliver from: audio from its grant; video from the first
    /// keyframe sent after it was asked for (a subscription starts at a keyframe), `None` while
    /// there was none.
    fn delivers_from(&self, subscription: &Subscribed) -> Option<u64> {
        if !subscription.video() {
            return Some(subscription.granted);
        }
        let keyframes = self.keyframes[subscription.stream as usize]
            .lock()
            .expect("poisoned");
        let first = keyframes.partition_point(|&t| t < subscription.requested);
        keyframes.get(first).copied()
    }

    /// What the subscribers should have received of the packets sent in `[from, to)`, by kind.
    fn expected_between(&self, from: u64, to: u64) -> [u64; 2] {
        let mut expected = [0; 2];
        for subscriptions in self.subscribers.lock().expect("poisoned").iter() {
            for subscription in subscriptions {
                if let Some(start) = self.delivers_from(subscription) {
                    expected[usize::from(subscription.video())] +=
                        self.sent_between(subscription.stream, from.max(start), to);
                }
            }
        }
        expected
    }

    fn received_in(&self, step: usize) -> [u64; 2] {
        let r = &self.received[step];
        [
            r[AUDIO].load(Ordering::Relaxed),
            r[VIDEO].load(Ordering::Relaxed),
        ]
    }
}

/// How one join of a step went.
#[derive(Debug)]
enum Joined {
    /// In, subscribed to every track of its room.
    Admitted,
    /// The gateway refused the join (`Rejected`): its words.
    Refused(String),
    /// Anything else (a timeout, a refused subscription, a lost connection).
    Failed(String),
}

/// One reading of the gateway.
#[derive(Debug)]
struct Sample {
    /// When the answers were in: the levels they show were reached before.
    at: Instant,
    scrape: Option<Scrape>,
    ready: Option<bool>,
}

/// The samples of one step, folded.
#[derive(Debug, Default)]
struct Readings {
    samples: u64,
    unready: u64,
    level_min: Option<u64>,
    level_max: u64,
    delay_max_s: f64,
    busy_max: f64,
    last: Option<Scrape>,
}

impl Readings {
    fn take(&mut self, sample: Sample) {
        self.samples += 1;
        if sample.ready == Some(false) {
            self.unready += 1;
        }
        if let Some(s) = sample.scrape {
            self.level_min = Some(self.level_min.map_or(s.shed_level, |l| l.min(s.shed_level)));
            self.level_max = self.level_max.max(s.shed_level);
            self.delay_max_s = self.delay_max_s.max(s.queue_delay_seconds);
            self.busy_max = self.busy_max.max(s.busy_ratio);
            self.last = Some(s);
        }
    }

    /// Into the step's report; the gateway's counters since `previous`, which becomes this
    /// step's last reading.
    fn fill(self, report: &mut StepReport, previous: &mut Scrape) {
        report.samples = self.samples;
        report.unready_samples = self.unready;
        report.level_min = self.level_min.unwrap_or(0);
        report.level_max = self.level_max;
        report.queue_delay_max_ms = self.delay_max_s * 1000.0;
        report.busy_max = self.busy_max;
        if let Some(now) = self.last {
            report.gateway_overloaded_refusals = now
                .refusals_of("overloaded")
                .saturating_sub(previous.refusals_of("overloaded"));
            report.gateway_shed_video_drops = now
                .drops_of("shed_video")
                .saturating_sub(previous.drops_of("shed_video"));
            report.gateway_drops = now.drops_since(previous);
            *previous = now;
        }
    }
}

/// The joins' outcomes over the run.
#[derive(Debug, Default)]
struct Tally {
    admitted: u64,
    refused: u64,
    first_refusal: Option<String>,
    first_failure: Option<String>,
}

impl Tally {
    fn count(&mut self, report: &mut StepReport, outcome: Joined) {
        match outcome {
            Joined::Admitted => self.admitted += 1,
            Joined::Refused(why) => {
                self.refused += 1;
                report.joins_refused += 1;
                self.first_refusal.get_or_insert(why);
            }
            Joined::Failed(why) => {
                report.joins_failed += 1;
                self.first_failure.get_or_insert(why);
            }
        }
    }
}

/// One step of the report.
#[derive(Debug, Default, Clone, serde::Serialize)]
struct StepReport {
    step: usize,
    /// When the step started, seconds since the publishers were ready.
    started_s: f64,
    seconds: f64,
    /// Subscribers in at the end of the step, over all rooms.
    subscribers: u64,
    joins_attempted: u64,
    joins_refused: u64,
    /// Refused joins so far, this step's included.
    joins_refused_total: u64,
    /// Joins that neither got in nor were refused (timeouts, lost connections).
    joins_failed: u64,
    samples: u64,
    /// Samples in which `/readyz` answered 503.
    unready_samples: u64,
    level_min: u64,
    level_max: u64,
    queue_delay_max_ms: f64,
    busy_max: f64,
    /// `strait_refusals_total{reason="overloaded"}` during the step.
    gateway_overloaded_refusals: u64,
    /// `strait_drops_total{reason="shed_video"}` during the step (per packet and subscriber).
    gateway_shed_video_drops: u64,
    /// `strait_drops_total` by reason during the step (`shed_video` included).
    gateway_drops: Vec<(String, u64)>,
    /// Media the subscribers' sessions dropped from full receive queues: this tool not keeping
    /// up (audio and video alike).
    receiver_queue_drops: u64,
    /// UDP datagrams the machine dropped for full socket receive buffers (the gateway's and
    /// this tool's sockets, and any other).
    udp_receive_buffer_errors: Option<u64>,
    /// The machine's one-minute load average at the end of the step.
    load_average: f64,
    audio_expected: u64,
    audio_received: u64,
    audio_delivered_pct: Option<f64>,
    video_expected: u64,
    video_received: u64,
    video_delivered_pct: Option<f64>,
}

/// The gateway's readings before the first step.
#[derive(Debug, Default, serde::Serialize)]
struct BeforeSteps {
    samples: u64,
    unready_samples: u64,
    level_max: u64,
    queue_delay_max_ms: f64,
    busy_max: f64,
}

/// The order the shedding came in, and audio's worst step.
#[derive(Debug, Default, serde::Serialize)]
struct Summary {
    first_refused_step: Option<usize>,
    first_unready_step: Option<usize>,
    /// The first step with level 2 or more sampled (the layer ceiling).
    first_level2_step: Option<usize>,
    /// The first step with level 3 sampled (video beyond the latest speakers paused).
    first_level3_step: Option<usize>,
    /// The first step in which `shed_video` drops moved.
    first_video_shed_step: Option<usize>,
    min_audio_delivered_pct: Option<f64>,
    min_audio_step: Option<usize>,
    audio_floor_pct: f64,
    /// Why the run stopped.
    ended: String,
}

/// What an overload reports.
#[derive(Debug, Default, serde::Serialize)]
pub(super) struct OverloadReport {
    scenario: String,
    transport: String,
    rooms: usize,
    publishers_per_room: usize,
    subscribers_per_step: usize,
    audio_packets_per_second: u32,
    video_bitrate: u32,
    video_fps: u32,
    /// The gateway while the publishers started and warmed up, alone.
    before_steps: BeforeSteps,
    steps: Vec<StepReport>,
    summary: Summary,
    /// The words of the first refusal.
    first_refusal: Option<String>,
    first_failure: Option<String>,
    send_refused: u64,
    gateway_refusals: Vec<(String, u64)>,
    gateway_drops: Vec<(String, u64)>,
    /// Why the run failed; empty when it did not.
    pub(super) failures: Vec<String>,
}

/// Runs the overload against `target`.
pub(super) async fn run_overload(
    args: &Args,
    scenario: &Scenario,
    overload: &Overload,
    target: &Target,
) -> Result<OverloadReport> {
    let (sending_stop, _) = watch::channel(false);
    let (stop, _) = watch::channel(false);
    let streams = overload.rooms * overload.publishers * 2;
    let run = Arc::new(OverloadRun {
        base: Instant::now(),
        sent: (0..streams).map(|_| Mutex::new(Vec::new())).collect(),
        keyframes: (0..streams).map(|_| Mutex::new(Vec::new())).collect(),
        step_starts: (0..overload.steps)
            .map(|_| AtomicU64::new(u64::MAX))
            .collect(),
        received: (0..overload.steps)
            .map(|_| [AtomicU64::new(0), AtomicU64::new(0)])
            .collect(),
        received_total: AtomicU64::new(0),
        queue_drops: (0..overload.steps).map(|_| AtomicU64::new(0)).collect(),
        send_refused: AtomicU64::new(0),
        subscribers: Mutex::new(Vec::new()),
        sending_stop,
        stop,
    });
    let permits = Arc::new(Semaphore::new(scenario.connect_concurrency));
    let mut tasks = tokio::task::JoinSet::new();

    // The sampler: every `sample_every_seconds`, `/metrics` and `/readyz`, until the end.
    let (samples_in, mut samples) = mpsc::channel::<Sample>(1024);
    let sampler = tokio::spawn(sample(
        target.http,
        Duration::from_secs_f64(overload.sample_every_seconds),
        samples_in,
        run.stop.subscribe(),
    ));
    let baseline = gateway::scrape(target.http).await.unwrap_or_default();

    // The publishers, at `ramp_rate` per second; every one must start, and they start sending
    // once all of them are in (a refused publisher would leave nothing to measure).
    let mut starting = tokio::task::JoinSet::new();
    let interval = Duration::from_secs_f64(1.0 / scenario.ramp_rate);
    let ramp = Instant::now();
    for (i, (room, p)) in (0..overload.rooms)
        .flat_map(|room| (0..overload.publishers).map(move |p| (room, p)))
        .enumerate()
    {
        tokio::time::sleep_until(ramp + interval.mul_f64(i as f64)).await;
        let permit = permits.clone().acquire_owned().await?;
        let token =
            gateway::mint_token(target.http, &room_name(room), &format!("r{room}-p{p}")).await?;
        let config = target.config(token, transport_for(scenario.transport, i));
        let overload = overload.clone();
        starting.spawn(async move {
            let _permit = permit;
            let started =
                tokio::time::timeout(STEP_TIMEOUT, start_publisher(config, &overload, room))
                    .await
                    .map_err(|_| format!("r{room}-p{p}: not publishing after 30 s"))?
                    .map_err(|e| format!("r{room}-p{p}: {e}"))?;
            Ok::<_, Error>((room, p, started))
        });
    }
    let mut publishers = Vec::new();
    while let Some(started) = starting.join_next().await {
        publishers.push(started??);
    }
    for (room, p, (session, audio, video)) in publishers {
        tasks.spawn(publish(
            run.clone(),
            overload.clone(),
            session,
            [audio, video],
            room,
            p,
            scenario.seed,
        ));
    }
    tokio::time::sleep(Duration::from_secs_f64(scenario.warmup_seconds)).await;
    // The readings so far: the publishers alone.
    let mut before = Readings::default();
    while let Ok(sample) = samples.try_recv() {
        before.take(sample);
    }
    let mut before_steps = StepReport::default();
    let mut previous = baseline.clone();
    before.fill(&mut before_steps, &mut previous);

    // The steps. A join's outcome comes back with its step; a sample taken after a step's last
    // join was launched counts for the next step, so that every sample of a step has a join of
    // the step after it (the samples after the last step's last join are not counted).
    let (outcomes_in, mut outcomes) = mpsc::unbounded_channel::<(usize, Joined)>();
    let steps_started = Instant::now();
    let limit = steps_started + Duration::from_secs_f64(scenario.duration_seconds);
    let step_length = Duration::from_secs_f64(overload.step_seconds);
    let joins_per_step = overload.rooms * overload.subscribers_per_step;
    let mut reports: Vec<StepReport> = Vec::new();
    let mut settled: Vec<usize> = Vec::new();
    // Steps whose deadline passed with joins unsettled (counted as failed then).
    let mut closed: Vec<bool> = Vec::new();
    let mut tally = Tally::default();
    let mut carried: Vec<Sample> = Vec::new();
    let mut subscriber = 0usize;
    let mut ended = "every step ran".to_owned();
    if args.progress {
        eprintln!(
            "{:>4} {:>6} {:>12} {:>6} {:>6} {:>7} {:>9} {:>5} {:>7} {:>7}",
            "step",
            "subs",
            "refused/tot",
            "failed",
            "level",
            "unready",
            "delay ms",
            "busy",
            "audio%",
            "video%"
        );
    }
    for step in 0..overload.steps {
        let start = Instant::now();
        run.step_starts[step].store(run.now_us(), Ordering::Relaxed);
        reports.push(StepReport {
            step: step + 1,
            started_s: steps_started.elapsed().as_secs_f64(),
            ..StepReport::default()
        });
        settled.push(0);
        closed.push(false);
        let mut readings = Readings::default();
        for sample in carried.drain(..) {
            readings.take(sample);
        }
        let mut launched = 0;
        let mut last_launch: Option<Instant> = None;
        let udp_errors = procfs::udp_receive_buffer_errors();
        // A step lasts `step_seconds`, and until its joins have settled (bounded).
        let deadline = start + step_length + STEP_TIMEOUT + Duration::from_secs(5);
        loop {
            let next_join = (launched < joins_per_step).then(|| {
                start + step_length.mul_f64((launched + 1) as f64 / joins_per_step as f64)
            });
            if next_join.is_none() && settled[step] >= launched {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep_until(next_join.unwrap_or(deadline)), if next_join.is_some() => {
                    let room = launched % overload.rooms;
                    launched += 1;
                    subscriber += 1;
                    if launched == joins_per_step {
                        last_launch = Some(Instant::now());
                    }
                    tasks.spawn(subscribe(
                        Joiner {
                            run: run.clone(),
                            overload: overload.clone(),
                            config: target
                                .config(String::new(), transport_for(scenario.transport, subscriber)),
                            http: target.http,
                            permits: permits.clone(),
                            room,
                            identity: format!("r{room}-s{subscriber}"),
                        },
                        step,
                        outcomes_in.clone(),
                    ));
                }
                Some((k, outcome)) = outcomes.recv() => {
                    if !closed[k] {
                        settled[k] += 1;
                        tally.count(&mut reports[k], outcome);
                    } else if matches!(outcome, Joined::Admitted) {
                        // Counted as failed at the deadline, but in and receiving now.
                        tally.admitted += 1;
                    }
                }
                Some(sample) = samples.recv() => {
                    if last_launch.is_some_and(|last| sample.at >= last) {
                        carried.push(sample);
                    } else {
                        readings.take(sample);
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    tally.first_failure.get_or_insert_with(|| {
                        format!("step {}: joins unsettled after {:.0} s", step + 1, (deadline - start).as_secs_f64())
                    });
                    reports[step].joins_failed += (launched - settled[step]) as u64;
                    closed[step] = true;
                    break;
                }
            }
        }
        let report = &mut reports[step];
        report.joins_attempted = launched as u64;
        report.subscribers = tally.admitted;
        report.seconds = start.elapsed().as_secs_f64();
        readings.fill(report, &mut previous);
        report.joins_refused_total = tally.refused;
        report.udp_receive_buffer_errors = udp_errors
            .zip(procfs::udp_receive_buffer_errors())
            .map(|(before, after)| after.saturating_sub(before));
        report.load_average = procfs::load_average();
        if args.progress {
            // The shares so far: packets still on their way are counted in the final report.
            let expected =
                run.expected_between(run.step_starts[step].load(Ordering::Relaxed), run.now_us());
            let received = run.received_in(step);
            eprintln!(
                "{:>4} {:>6} {:>12} {:>6} {:>6} {:>7} {:>9.0} {:>5.2} {:>7} {:>7}",
                step + 1,
                report.subscribers,
                format!("{}/{}", report.joins_refused, report.joins_refused_total),
                report.joins_failed,
                format!("{}-{}", report.level_min, report.level_max),
                format!("{}/{}", report.unready_samples, report.samples),
                report.queue_delay_max_ms,
                report.busy_max,
                show_pct(share(received[AUDIO], expected[AUDIO])),
                show_pct(share(received[VIDEO], expected[VIDEO])),
            );
        }
        if overload.stop_at_full_shedding && report.samples > 0 && report.level_min >= 3 {
            ended = format!("step {} ran entirely at level 3", step + 1);
            break;
        }
        if Instant::now() >= limit && step + 1 < overload.steps {
            ended = format!(
                "duration_seconds ({:.0} s) was up",
                scenario.duration_seconds
            );
            break;
        }
    }

    // Sending stops; the last packets arrive (until the receivers are quiet, bounded).
    let _ = run.sending_stop.send(true);
    let drain_until = Instant::now() + DRAIN_MOST;
    let mut seen = run.received_total.load(Ordering::Relaxed);
    while Instant::now() < drain_until {
        tokio::time::sleep(DRAIN_QUIET).await;
        let now = run.received_total.load(Ordering::Relaxed);
        if now == seen {
            break;
        }
        seen = now;
    }
    let scrape_after = gateway::scrape(target.http).await.unwrap_or_default();

    // Everyone closes; bounded.
    let _ = run.stop.send(true);
    drop(outcomes_in);
    let closing = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(CLOSE_TIMEOUT, closing).await.is_err() {
        eprintln!(
            "strait-load: {} sessions still closing after {} s; stopped",
            tasks.len(),
            CLOSE_TIMEOUT.as_secs()
        );
        tasks.abort_all();
    }
    let _ = tokio::time::timeout(Duration::from_secs(15), sampler).await;

    // The shares, by send time: step k runs from its start to the next step's start (the last
    // step to the last packet sent, as `step_of` counts it).
    for (k, report) in reports.iter_mut().enumerate() {
        let from = run.step_starts[k].load(Ordering::Relaxed);
        let to = run
            .step_starts
            .get(k + 1)
            .map_or(u64::MAX, |s| s.load(Ordering::Relaxed));
        let expected = run.expected_between(from, to);
        let received = run.received_in(k);
        report.audio_expected = expected[AUDIO];
        report.audio_received = received[AUDIO];
        report.audio_delivered_pct = share(received[AUDIO], expected[AUDIO]);
        report.video_expected = expected[VIDEO];
        report.video_received = received[VIDEO];
        report.video_delivered_pct = share(received[VIDEO], expected[VIDEO]);
        report.receiver_queue_drops = run.queue_drops[k].load(Ordering::Relaxed);
    }
    let summary = summarize(&reports, overload.audio_floor_pct, ended);
    let failures = judge(&reports, &summary);
    Ok(OverloadReport {
        scenario: scenario.name.clone(),
        transport: format!("{:?}", scenario.transport).to_lowercase(),
        rooms: overload.rooms,
        publishers_per_room: overload.publishers,
        subscribers_per_step: overload.subscribers_per_step,
        audio_packets_per_second: overload.audio.packets_per_second,
        video_bitrate: overload.video.bitrate,
        video_fps: overload.video.fps,
        before_steps: BeforeSteps {
            samples: before_steps.samples,
            unready_samples: before_steps.unready_samples,
            level_max: before_steps.level_max,
            queue_delay_max_ms: before_steps.queue_delay_max_ms,
            busy_max: before_steps.busy_max,
        },
        steps: reports,
        summary,
        first_refusal: tally.first_refusal,
        first_failure: tally.first_failure,
        send_refused: run.send_refused.load(Ordering::Relaxed),
        gateway_refusals: scrape_after.refusals_since(&baseline),
        gateway_drops: scrape_after.drops_since(&baseline),
        failures,
    })
}

/// `part` of `whole` in percent; `None` when nothing was expected.
fn share(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| 100.0 * part as f64 / whole as f64)
}

fn show_pct(pct: Option<f64>) -> String {
    pct.map_or("-".to_owned(), |p| format!("{p:.1}"))
}

/// The first steps of each kind of shedding, and audio's worst step.
fn summarize(steps: &[StepReport], audio_floor_pct: f64, ended: String) -> Summary {
    let first = |seen: &dyn Fn(&StepReport) -> bool| steps.iter().find(|s| seen(s)).map(|s| s.step);
    let worst = steps
        .iter()
        .filter_map(|s| s.audio_delivered_pct.map(|p| (p, s.step)))
        .min_by(|a, b| a.0.total_cmp(&b.0));
    Summary {
        first_refused_step: first(&|s| s.joins_refused > 0),
        first_unready_step: first(&|s| s.unready_samples > 0),
        first_level2_step: first(&|s| s.level_max >= 2),
        first_level3_step: first(&|s| s.level_max >= 3),
        first_video_shed_step: first(&|s| s.gateway_shed_video_drops > 0),
        min_audio_delivered_pct: worst.map(|w| w.0),
        min_audio_step: worst.map(|w| w.1),
        audio_floor_pct,
        ended,
    }
}

/// Why the run failed: shedding out of order, audio below its floor, nobody admitted.
fn judge(steps: &[StepReport], summary: &Summary) -> Vec<String> {
    let mut failures = Vec::new();
    let refused = summary.first_refused_step;
    let refusals = refused.map_or("no join was ever refused".to_owned(), |r| {
        format!("the first join was refused at step {r}")
    });
    let shed = [
        ("the layer ceiling (level 2)", summary.first_level2_step),
        (
            "video paused beyond the speakers (level 3)",
            summary.first_level3_step,
        ),
        (
            "video shed (`shed_video` drops)",
            summary.first_video_shed_step,
        ),
    ];
    for (what, step) in shed {
        if let Some(step) = step
            && refused.is_none_or(|r| step < r)
        {
            failures.push(format!(
                "out of order: {what} at step {step}, but {refusals}"
            ));
        }
    }
    for s in steps {
        if let Some(pct) = s.audio_delivered_pct
            && pct < summary.audio_floor_pct
        {
            failures.push(format!(
                "step {}: audio delivered {pct:.1} %, below the floor of {:.1} %",
                s.step, summary.audio_floor_pct
            ));
        }
    }
    if steps.iter().all(|s| s.audio_expected == 0) {
        failures.push("no subscriber got in: nothing was measured".to_owned());
    }
    failures
}

/// Connects, joins and publishes one publisher's audio and video.
async fn start_publisher(
    config: strait_client::ClientConfig,
    overload: &Overload,
    room: usize,
) -> Result<(
    Arc<Session>,
    strait_client::PublishedTrack,
    strait_client::PublishedTrack,
)> {
    let session = Client::connect(config).await?;
    session.join(&room_name(room)).await?;
    let audio = session
        .publish(PublishSpec {
            kind: TrackKind::Audio,
            codec: opus(),
            source: "microphone".into(),
            layers: vec![LayerSpec::default()],
            muted: false,
        })
        .await?;
    let video = session
        .publish(PublishSpec {
            kind: TrackKind::Video,
            codec: vp8(),
            source: "camera".into(),
            layers: vec![LayerSpec {
                max_bitrate: overload.video.bitrate,
                width: 1280,
                height: 720,
            }],
            muted: false,
        })
        .await?;
    Ok((Arc::new(session), audio, video))
}

/// Sends a publisher's audio and video until sending stops, logging every send time; answers
/// the gateway's keyframe requests with a keyframe.
async fn publish(
    run: Arc<OverloadRun>,
    overload: Overload,
    session: Arc<Session>,
    [audio, video]: [strait_client::PublishedTrack; 2],
    room: usize,
    p: usize,
    seed: u64,
) {
    let audio_stream = stream_index(&overload, room, p, false);
    let video_stream = stream_index(&overload, room, p, true);
    let mut audio_source = AudioSource::new(
        audio_stream,
        overload.audio.packets_per_second,
        overload.audio.payload_bytes,
    );
    let mut video_source = VideoSource::new(video_stream, &overload.video, seed);
    let period = |rate: u32| Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut audio_tick = tokio::time::interval(period(overload.audio.packets_per_second));
    let mut video_tick = tokio::time::interval(period(overload.video.fps));
    let mut sending_stop = run.sending_stop.subscribe();
    let mut stop = run.stop.subscribe();
    let send = |media, rtp: &[u8], stream: u32, sent_us: u64| match session.send_rtp(media, rtp) {
        Ok(()) => run.sent[stream as usize]
            .lock()
            .expect("poisoned")
            .push(sent_us),
        Err(_) => {
            run.send_refused.fetch_add(1, Ordering::Relaxed);
        }
    };
    loop {
        tokio::select! {
            _ = sending_stop.wait_for(|s| *s) => break,
            _ = audio_tick.tick() => {
                let now = run.now_us();
                let rtp = audio_source.next_packet(now);
                send(audio.media[0], &rtp, audio_stream, now);
            }
            _ = video_tick.tick() => {
                let now = run.now_us();
                let frame = video_source.next_frame(now);
                if frame.first().is_some_and(|rtp| rtp::vp8_keyframe_start(rtp)) {
                    run.keyframes[video_stream as usize]
                        .lock()
                        .expect("poisoned")
                        .push(now);
                }
                for rtp in frame {
                    send(video.media[0], &rtp, video_stream, now);
                }
            }
            event = session.next_event() => match event {
                Some(SessionEvent::KeyframeRequested { .. }) => video_source.request_keyframe(),
                Some(SessionEvent::Closed(_)) | None => break,
                Some(_) => {}
            },
        }
    }
    // Stays in the room (its tracks with it) until everyone stops.
    let _ = stop.wait_for(|s| *s).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), session.close()).await;
}

/// What a subscriber's task needs to join.
#[derive(Debug)]
struct Joiner {
    run: Arc<OverloadRun>,
    overload: Overload,
    /// Its token is minted when the join starts.
    config: strait_client::ClientConfig,
    http: std::net::SocketAddr,
    permits: Arc<Semaphore>,
    room: usize,
    identity: String,
}

/// One subscriber of `step`: joins its room (the outcome told on `outcome`), subscribes to
/// every track of the room, then counts what it receives until the run stops.
async fn subscribe(joiner: Joiner, step: usize, outcome: mpsc::UnboundedSender<(usize, Joined)>) {
    let Joiner {
        run,
        overload,
        mut config,
        http,
        permits,
        room,
        identity,
    } = joiner;
    let mut stop = run.stop.subscribe();
    let joined = tokio::time::timeout(STEP_TIMEOUT, async {
        let _permit = permits.acquire_owned().await.map_err(|e| e.to_string())?;
        config.token = gateway::mint_token(http, &room_name(room), &identity)
            .await
            .map_err(|e| format!("{identity}: token: {e}"))?;
        let session = Client::connect(config)
            .await
            .map_err(|e| format!("{identity}: connect: {e}"))?;
        match session.join(&room_name(room)).await {
            Ok(_) => {}
            Err(ClientError::Rejected { code, reason }) => {
                session.close().await;
                return Ok(Err(format!("{code}: {reason}")));
            }
            Err(e) => return Err(format!("{identity}: join: {e}")),
        }
        let subscriptions = subscribe_all(&run, &overload, &session)
            .await
            .map_err(|e| format!("{identity}: {e}"))?;
        Ok::<_, String>(Ok((session, subscriptions)))
    })
    .await;
    let (session, subscriptions) = match joined {
        Ok(Ok(Ok(joined))) => joined,
        Ok(Ok(Err(refusal))) => {
            let _ = outcome.send((step, Joined::Refused(refusal)));
            return;
        }
        Ok(Err(failure)) => {
            let _ = outcome.send((step, Joined::Failed(failure)));
            return;
        }
        Err(_) => {
            let _ = outcome.send((
                step,
                Joined::Failed(format!(
                    "{identity}: not subscribed after {} s",
                    STEP_TIMEOUT.as_secs()
                )),
            ));
            return;
        }
    };
    run.subscribers
        .lock()
        .expect("poisoned")
        .push(subscriptions.clone());
    let _ = outcome.send((step, Joined::Admitted));
    // Each video subscription: the send time of the keyframe it started at.
    let mut video_from: Vec<Option<u64>> = vec![None; subscriptions.len()];
    // The session's receive-queue drops, counted into the step under way now and then.
    let mut dropped = 0;
    let mut count_drops = |session: &Session| {
        let now = session.stats().media_dropped;
        if now > dropped
            && let Some(step) = run.step_of(run.now_us())
        {
            run.queue_drops[step].fetch_add(now - dropped, Ordering::Relaxed);
        }
        dropped = now;
    };
    let mut packets = 0u64;
    loop {
        let packet = tokio::select! {
            packet = session.recv_media() => packet,
            _ = stop.wait_for(|s| *s) => break,
        };
        let Some(packet) = packet else { break };
        run.received_total.fetch_add(1, Ordering::Relaxed);
        packets += 1;
        if packets.is_multiple_of(64) {
            count_drops(&session);
        }
        let Some(stamp) = Stamp::parse_rtp(&packet.rtp) else {
            continue;
        };
        let Some(i) = subscriptions.iter().position(|s| s.stream == stamp.stream) else {
            continue;
        };
        // Counted as `delivers_from` expects it: audio sent after the grant, video from the
        // first keyframe sent after the request.
        let s = &subscriptions[i];
        let from = if s.video() {
            if video_from[i].is_none()
                && stamp.sent_us >= s.requested
                && rtp::vp8_keyframe_start(&packet.rtp)
            {
                video_from[i] = Some(stamp.sent_us);
            }
            video_from[i]
        } else {
            Some(s.granted)
        };
        if from.is_some_and(|from| stamp.sent_us >= from)
            && let Some(step) = run.step_of(stamp.sent_us)
        {
            run.received[step][usize::from(s.video())].fetch_add(1, Ordering::Relaxed);
        }
    }
    count_drops(&session);
    let _ = tokio::time::timeout(Duration::from_secs(5), session.close()).await;
}

/// Waits until the room shows every publisher's tracks, subscribes to each, and says when each
/// subscription was asked for and granted.
async fn subscribe_all(
    run: &OverloadRun,
    overload: &Overload,
    session: &Session,
) -> std::result::Result<Vec<Subscribed>, String> {
    // Bounded by the caller's timeout.
    let Some(tracks) = others_tracks(session, 2 * overload.publishers).await else {
        return Err("the session ended while waiting for the room's tracks".into());
    };
    let names: std::collections::HashMap<_, _> = session
        .participants()
        .into_iter()
        .map(|p| (p.participant, p.identity))
        .collect();
    let mut subscriptions = Vec::with_capacity(tracks.len());
    for track in tracks {
        let Some((room, p)) = names.get(&track.participant).and_then(|i| publisher_of(i)) else {
            continue;
        };
        let requested = run.now_us();
        session
            .subscribe(track.track, None)
            .await
            .map_err(|e| format!("subscribe: {e}"))?;
        subscriptions.push(Subscribed {
            stream: stream_index(overload, room, p, track.kind == TrackKind::Video),
            requested,
            granted: run.now_us(),
        });
    }
    Ok(subscriptions)
}

/// Reads `/metrics` and `/readyz` every `every` until the run stops, and hands each reading on.
async fn sample(
    http: std::net::SocketAddr,
    every: Duration,
    samples: mpsc::Sender<Sample>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let (scrape, ready) = tokio::join!(gateway::scrape(http), gateway::ready(http));
        let sample = Sample {
            at: Instant::now(),
            scrape: scrape.ok(),
            ready: ready.ok(),
        };
        if samples.send(sample).await.is_err() {
            return;
        }
    }
}

/// Prints the report: a table of the steps, then the order and the verdict.
pub(super) fn print_overload(r: &OverloadReport) {
    println!(
        "strait-load: scenario `{}` over {}: rooms {}, publishers {} per room (audio {} packets/s, video {} kbit/s at {} frames/s), {} more subscribers per room each step",
        r.scenario,
        r.transport,
        r.rooms,
        r.publishers_per_room,
        r.audio_packets_per_second,
        r.video_bitrate / 1000,
        r.video_fps,
        r.subscribers_per_step
    );
    let b = &r.before_steps;
    println!(
        "  before steps  publishers alone: level {} at most, queue delay {:.0} ms, busy {:.2}, unready in {} of {} samples",
        b.level_max, b.queue_delay_max_ms, b.busy_max, b.unready_samples, b.samples
    );
    println!();
    println!(
        "| step | subscribers | joins refused (total) | joins failed | level (min–max) | unready samples | queue delay (max) | busy (max) | audio delivered | video delivered | video shed | other losses: gateway / tool / kernel | load avg |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in &r.steps {
        println!(
            "| {} | {} | {} ({}) | {} | {}–{} | {}/{} | {:.0} ms | {:.2} | {} % | {} % | {} | {} / {} / {} | {:.1} |",
            s.step,
            s.subscribers,
            s.joins_refused,
            s.joins_refused_total,
            s.joins_failed,
            s.level_min,
            s.level_max,
            s.unready_samples,
            s.samples,
            s.queue_delay_max_ms,
            s.busy_max,
            show_pct(s.audio_delivered_pct),
            show_pct(s.video_delivered_pct),
            s.gateway_shed_video_drops,
            s.gateway_drops
                .iter()
                .filter(|(reason, _)| reason != "shed_video")
                .map(|(_, n)| n)
                .sum::<u64>(),
            s.receiver_queue_drops,
            s.udp_receive_buffer_errors
                .map_or("-".to_owned(), |n| n.to_string()),
            s.load_average,
        );
    }
    println!();
    let at = |step: Option<usize>| step.map_or("never".to_owned(), |s| format!("step {s}"));
    let m = &r.summary;
    println!(
        "  order         joins refused from {} (unready from {}); layer ceiling (level 2) from {}; video beyond the speakers paused (level 3) from {}, shed_video drops from {}",
        at(m.first_refused_step),
        at(m.first_unready_step),
        at(m.first_level2_step),
        at(m.first_level3_step),
        at(m.first_video_shed_step),
    );
    println!(
        "  audio         lowest delivery {} % ({}), floor {:.1} %",
        show_pct(m.min_audio_delivered_pct),
        at(m.min_audio_step),
        m.audio_floor_pct
    );
    println!("  ended         {}", m.ended);
    if let Some(why) = &r.first_refusal {
        println!("  refusal       {why}");
    }
    if let Some(why) = &r.first_failure {
        println!("  first failure {why}");
    }
    let list = |counts: &[(String, u64)]| {
        if counts.is_empty() {
            return "0".to_owned();
        }
        let mut counts: Vec<_> = counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
        counts.sort();
        counts.join(", ")
    };
    println!(
        "  gateway       refusals {}; drops {}",
        list(&r.gateway_refusals),
        list(&r.gateway_drops)
    );
    if r.send_refused > 0 {
        println!("  refused sends {}", r.send_refused);
    }
    if r.failures.is_empty() {
        println!("  result        ok");
    } else {
        for failure in &r.failures {
            println!("  FAILED        {failure}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A step with its refusals, highest level, `shed_video` drops and audio share.
    fn step(step: usize, refused: u64, level: u64, shed: u64, audio: f64) -> StepReport {
        StepReport {
            step,
            joins_refused: refused,
            level_max: level,
            gateway_shed_video_drops: shed,
            audio_expected: 100,
            audio_delivered_pct: Some(audio),
            ..StepReport::default()
        }
    }

    fn verdict(steps: &[StepReport]) -> (Summary, Vec<String>) {
        let summary = summarize(steps, 95.0, String::new());
        let failures = judge(steps, &summary);
        (summary, failures)
    }

    #[test]
    fn joins_refused_then_layers_then_video_is_the_order() {
        let (summary, failures) = verdict(&[
            step(1, 0, 0, 0, 100.0),
            step(2, 5, 1, 0, 99.0),
            step(3, 10, 2, 0, 98.0),
            step(4, 10, 3, 700, 96.0),
        ]);
        assert_eq!(summary.first_refused_step, Some(2));
        assert_eq!(summary.first_level2_step, Some(3));
        assert_eq!(summary.first_level3_step, Some(4));
        assert_eq!(summary.first_video_shed_step, Some(4));
        assert_eq!(summary.min_audio_delivered_pct, Some(96.0));
        assert_eq!(summary.min_audio_step, Some(4));
        assert_eq!(failures, Vec::<String>::new());
        // All at once in one step is in order too: the worker may go straight to level 3.
        let (_, failures) = verdict(&[step(1, 0, 0, 0, 100.0), step(2, 3, 3, 50, 99.0)]);
        assert_eq!(failures, Vec::<String>::new());
    }

    #[test]
    fn video_shed_before_a_refused_join_or_audio_below_its_floor_fails() {
        let (_, failures) = verdict(&[
            step(1, 0, 2, 0, 100.0),
            step(2, 0, 3, 10, 100.0),
            step(3, 4, 3, 10, 100.0),
        ]);
        assert_eq!(failures.len(), 3, "{failures:?}");
        assert!(failures[0].contains("level 2) at step 1"), "{failures:?}");
        assert!(failures[2].contains("drops) at step 2"), "{failures:?}");
        let (_, failures) = verdict(&[step(1, 0, 3, 10, 100.0)]);
        assert!(
            failures[0].contains("no join was ever refused"),
            "{failures:?}"
        );
        let (_, failures) = verdict(&[step(1, 2, 1, 0, 94.9)]);
        assert_eq!(
            failures,
            ["step 1: audio delivered 94.9 %, below the floor of 95.0 %"]
        );
        let mut empty = step(1, 2, 1, 0, 100.0);
        empty.audio_expected = 0;
        empty.audio_delivered_pct = None;
        let (_, failures) = verdict(&[empty]);
        assert_eq!(failures, ["no subscriber got in: nothing was measured"]);
    }

    #[test]
    fn a_packet_belongs_to_the_step_it_was_sent_in() {
        let (sending_stop, _) = watch::channel(false);
        let (stop, _) = watch::channel(false);
        let run = OverloadRun {
            base: Instant::now(),
            sent: vec![Mutex::new(vec![5, 10, 15, 20, 25])],
            keyframes: vec![Mutex::new(Vec::new())],
            step_starts: [10, 20, u64::MAX].map(AtomicU64::new).into(),
            received: Vec::new(),
            received_total: AtomicU64::new(0),
            queue_drops: Vec::new(),
            send_refused: AtomicU64::new(0),
            subscribers: Mutex::new(Vec::new()),
            sending_stop,
            stop,
        };
        assert_eq!(run.step_of(9), None, "before the first step");
        assert_eq!(run.step_of(10), Some(0));
        assert_eq!(run.step_of(19), Some(0));
        assert_eq!(run.step_of(20), Some(1));
        assert_eq!(run.step_of(u64::MAX - 1), Some(1), "the last step runs on");
        assert_eq!(run.sent_between(0, 10, 20), 2);
        assert_eq!(run.sent_between(0, 20, u64::MAX), 2);
        assert_eq!(run.sent_between(0, 12, 11), 0);
    }
}
