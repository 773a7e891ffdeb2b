//! Scenarios of `strait-load`, as data: a TOML file (`client/load/scenarios/*.toml`), with `--set
//! key=value` overrides applied to the TOML before it is read. Unknown keys are errors.

use serde::Deserialize;

use super::Result;

/// One scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// A short name for the report.
    pub name: String,
    /// What it measures, for the report.
    #[serde(default)]
    pub description: String,
    /// `quic`, `webtransport`, or `mixed` (every other session over WebTransport).
    #[serde(default)]
    pub transport: TransportChoice,
    /// Sessions started per second while ramping up.
    #[serde(default = "default_ramp_rate")]
    pub ramp_rate: f64,
    /// Sessions connecting at once, at most.
    #[serde(default = "default_connect_concurrency")]
    pub connect_concurrency: usize,
    /// Seconds between the end of the ramp and the measured window (first keyframes, settling).
    #[serde(default = "default_warmup")]
    pub warmup_seconds: f64,
    /// Length of the measured window, seconds (in a soak, the whole run; in an overload, the
    /// most the steps may take together).
    pub duration_seconds: f64,
    /// `key=value` settings passed to the gateway this tool starts (`--set`), on top of the
    /// limits it raises to fit the scenario.
    #[serde(default)]
    pub gateway_settings: Vec<String>,
    /// Rooms, publishers, subscribers and their media (absent in a join storm).
    pub rooms: Option<Rooms>,
    /// A join storm instead of rooms with media.
    pub join_storm: Option<JoinStorm>,
    /// A soak instead: sessions, rooms, resumes and TURN allocations churning for
    /// `duration_seconds`, with the gateway's memory and CPU sampled over time.
    pub soak: Option<Soak>,
    /// An overload instead: a load that grows step by step past one media worker, to see load
    /// shedding's order and that audio survives it.
    pub overload: Option<Overload>,
    /// Seed of the media generators' randomness (frame sizes).
    #[serde(default)]
    pub seed: u64,
    /// Local IP address the sessions' sockets bind to (port 0). By default the unspecified
    /// address, which shares one ephemeral port range (about 28 000 ports on Linux) among all
    /// sessions of the machine; load processes bound to different loopback addresses
    /// (`127.0.0.2`, `127.0.0.3`, …) each have a range of their own.
    #[serde(default)]
    pub bind_ip: Option<std::net::IpAddr>,
    /// The sessions' QUIC keep-alive interval, seconds (the Strait client's default, 5 s, when
    /// absent). How often an idle session sends the gateway a datagram.
    #[serde(default)]
    pub keep_alive_seconds: Option<f64>,
}

/// How sessions connect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportChoice {
    /// Raw QUIC, ALPN `strait/1`.
    #[default]
    Quic,
    /// WebTransport over HTTP/3.
    Webtransport,
    /// Alternating, session by session.
    Mixed,
}

/// `count` rooms alike.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rooms {
    /// How many rooms.
    pub count: usize,
    /// Participants per room that publish (and receive every other publisher's tracks).
    pub publishers: usize,
    /// Participants per room that only receive (every publisher's tracks).
    #[serde(default)]
    pub subscribers: usize,
    /// Whether each publisher sends an audio track.
    #[serde(default)]
    pub audio: Option<Audio>,
    /// Whether each publisher sends a video track.
    #[serde(default)]
    pub video: Option<Video>,
    /// Receivers (the `subscribers`) that move while media flows: rebinds and resumes.
    #[serde(default)]
    pub churn: Option<Churn>,
}

/// What the receivers do to their connection while they receive, each on its own schedule
/// (the first event of receiver `i` of `n` comes `i / n` of a period after the window opens, so
/// the events are spread evenly).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Churn {
    /// Every receiver moves to a new UDP socket (a new local port, as when a phone changes
    /// network) this often, seconds; QUIC migrates the connection. Raw QUIC only.
    pub rebind_every_seconds: Option<f64>,
    /// Every receiver opens a new connection and presents its resume token this often,
    /// seconds (the old connection is closed once the new one is up).
    pub resume_every_seconds: Option<f64>,
}

/// An Opus-like audio track.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audio {
    /// Packets per second (Opus with 20 ms frames: 50).
    #[serde(default = "default_audio_rate")]
    pub packets_per_second: u32,
    /// RTP payload bytes per packet.
    #[serde(default = "default_audio_payload")]
    pub payload_bytes: usize,
}

/// A VP8-like video track.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Video {
    /// Target bitrate, bits per second.
    pub bitrate: u32,
    /// Frames per second.
    #[serde(default = "default_fps")]
    pub fps: u32,
    /// Seconds between keyframes (a keyframe is also sent when the gateway asks).
    #[serde(default = "default_keyframe_interval")]
    pub keyframe_interval_seconds: f64,
    /// A keyframe is this many times the size of an average delta frame.
    #[serde(default = "default_keyframe_ratio")]
    pub keyframe_ratio: f64,
    /// Largest RTP payload per packet (a frame is split into packets of at most this).
    #[serde(default = "default_max_payload")]
    pub max_payload_bytes: usize,
}

/// Sessions that connect and join, faster and faster, and then stay idle.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinStorm {
    /// Sessions started per second at first.
    pub start_rate: f64,
    /// Added to the rate every second.
    pub rate_increase_per_second: f64,
    /// Sessions at most.
    pub max_sessions: usize,
    /// Participants per room (sessions fill rooms one after the other).
    pub room_size: usize,
    /// Stop starting sessions after this many refusals or failures.
    #[serde(default = "default_stop_after")]
    pub stop_after_refusals: usize,
    /// Number of the first session (identities `s{n}`, rooms `storm-{n / room_size}`), so that
    /// several load processes can fill one gateway without sharing names (a process holds one
    /// UDP socket per session, and the open-file limit caps sessions per process).
    #[serde(default)]
    pub first_session: usize,
}

/// A soak: `sessions` sessions kept open for `duration_seconds` while they come and go.
///
/// Session slot `i` belongs to room group `i / room_size`. A group's room closes every
/// `room_lifetime_seconds` (the groups' closings spread evenly over that period): its sessions
/// leave and join the group's next room, under a new name. Between closings, each session leaves
/// after a lifetime drawn uniformly from half to one and a half `session_lifetime_seconds`, and a
/// new session (a new identity) takes its slot at once. A share of departures drop the
/// connection instead of leaving, so the gateway keeps the participant for its grace period.
/// Every session moves to a new connection with its resume token every `resume_every_seconds`.
/// The first `publishers_per_room` slots of a group publish an audio track; the others subscribe
/// to every track of their room. Joins, refills included, start at `ramp_rate` per second at
/// most.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Soak {
    /// Sessions open at once (slots: each is refilled when its session leaves).
    #[serde(default = "default_soak_sessions")]
    pub sessions: usize,
    /// Slots per room.
    #[serde(default = "default_soak_room_size")]
    pub room_size: usize,
    /// How long a room lives before everyone leaves it and its group opens the next, seconds.
    #[serde(default = "default_room_lifetime")]
    pub room_lifetime_seconds: f64,
    /// Mean time a session stays before it leaves, seconds.
    #[serde(default = "default_session_lifetime")]
    pub session_lifetime_seconds: f64,
    /// Share of departures (0 to 1) that close the connection with an error instead of leaving:
    /// the participant stays in its room for the gateway's grace period.
    #[serde(default)]
    pub vanish_share: f64,
    /// Every session resumes on a new connection this often, seconds (none when absent).
    #[serde(default)]
    pub resume_every_seconds: Option<f64>,
    /// Slots of each room that publish an audio track (the others only subscribe).
    #[serde(default = "default_soak_publishers")]
    pub publishers_per_room: usize,
    /// The publishers' audio (no media when absent).
    #[serde(default)]
    pub audio: Option<Audio>,
    /// TURN allocations held by some sessions and refreshed while they live (none when
    /// absent). Needs the gateway's embedded TURN server with a UDP listener.
    #[serde(default)]
    pub turn: Option<SoakTurn>,
    /// Seconds between two samples of the gateway's memory and CPU.
    #[serde(default = "default_sample_every")]
    pub sample_every_seconds: f64,
}

/// The TURN part of a soak: every `every_nth_session`-th slot's sessions allocate a relay over
/// UDP with the credentials of their `ServerHello`, refresh it every `refresh_every_seconds`,
/// and release it when they leave (a session that vanishes leaves it to expire).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoakTurn {
    /// 1 for every slot, 4 for one slot in four.
    pub every_nth_session: usize,
    /// Seconds between two refreshes of one allocation.
    pub refresh_every_seconds: f64,
}

/// An overload: a load that grows past one media worker, step by step, to watch load shedding.
///
/// `rooms` rooms of `publishers` publishers, each sending `audio` and `video`, start first (at
/// `ramp_rate` per second), then `warmup_seconds` pass. Each of the `steps` steps then adds
/// `subscribers_per_step` subscribers to every room, their joins spread evenly over the step's
/// `step_seconds` with the last one at its end (so a join follows every level the step saw);
/// each subscribes to every track of its room, and a refused join is counted and closed. The
/// gateway's shedding level, queue delay and busy ratio and `/readyz` are sampled every
/// `sample_every_seconds`. The run ends after the last step, after a step whose every sample
/// was at level 3 (with `stop_at_full_shedding`), or after `duration_seconds`.
///
/// It fails when the audio delivered to the subscribers in any step falls below
/// `audio_floor_pct` of what they should have received, or when shedding came out of order:
/// the layer ceiling (level 2) or paused video (level 3, `shed_video` drops) in a step before
/// the first refused join.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overload {
    /// Rooms, all on one media worker when the gateway has one.
    #[serde(default = "default_overload_rooms")]
    pub rooms: usize,
    /// Publishers per room, each with an audio and a video track.
    #[serde(default = "default_overload_publishers")]
    pub publishers: usize,
    /// Subscribers added to every room at each step.
    #[serde(default = "default_overload_step")]
    pub subscribers_per_step: usize,
    /// How long a step lasts at least, seconds (longer while its last joins are under way).
    #[serde(default = "default_step_seconds")]
    pub step_seconds: f64,
    /// Steps at most.
    #[serde(default = "default_overload_steps")]
    pub steps: usize,
    /// Seconds between two samples of the gateway's `/metrics` and `/readyz`.
    #[serde(default = "default_overload_sample")]
    pub sample_every_seconds: f64,
    /// End the run after a step whose every sample was at level 3: more load sheds nothing new.
    #[serde(default = "default_true")]
    pub stop_at_full_shedding: bool,
    /// The run fails if, in any step, the subscribers received less than this share of the
    /// audio sent to them, percent.
    #[serde(default = "default_audio_floor")]
    pub audio_floor_pct: f64,
    /// Every publisher's audio. Its payloads must be longer than 8 bytes: the gateway takes
    /// those for voice, and at level 3 forwards the video of the latest speakers only.
    pub audio: Audio,
    /// Every publisher's video (one layer).
    pub video: Video,
}

fn default_ramp_rate() -> f64 {
    100.0
}
fn default_connect_concurrency() -> usize {
    64
}
fn default_warmup() -> f64 {
    2.0
}
fn default_audio_rate() -> u32 {
    50
}
fn default_audio_payload() -> usize {
    120
}
fn default_fps() -> u32 {
    30
}
fn default_keyframe_interval() -> f64 {
    2.0
}
fn default_keyframe_ratio() -> f64 {
    5.0
}
fn default_max_payload() -> usize {
    1100
}
fn default_stop_after() -> usize {
    10
}
fn default_soak_sessions() -> usize {
    2000
}
fn default_soak_room_size() -> usize {
    10
}
fn default_room_lifetime() -> f64 {
    300.0
}
fn default_session_lifetime() -> f64 {
    120.0
}
fn default_soak_publishers() -> usize {
    1
}
fn default_sample_every() -> f64 {
    10.0
}
fn default_overload_rooms() -> usize {
    10
}
fn default_overload_publishers() -> usize {
    2
}
fn default_overload_step() -> usize {
    10
}
fn default_step_seconds() -> f64 {
    5.0
}
fn default_overload_steps() -> usize {
    12
}
fn default_overload_sample() -> f64 {
    0.25
}
fn default_true() -> bool {
    true
}
fn default_audio_floor() -> f64 {
    95.0
}

impl Scenario {
    /// Reads a scenario from TOML text, after the `key=value` overrides (dotted keys, TOML
    /// values; a value that is not valid TOML is taken as a string).
    pub fn parse(text: &str, overrides: &[String]) -> Result<Scenario> {
        let mut table: toml::Table = toml::from_str(text)?;
        for item in overrides {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| format!("--set `{item}`: expected key=value"))?;
            let value = parse_value(value.trim());
            set_path(&mut table, key.trim(), value).map_err(|e| format!("--set `{item}`: {e}"))?;
        }
        let scenario: Scenario = toml::Value::Table(table).try_into()?;
        scenario.validate()?;
        Ok(scenario)
    }

    fn validate(&self) -> Result<()> {
        if !(self.duration_seconds > 0.0 && self.duration_seconds <= 3600.0) {
            return Err("duration_seconds must be in (0, 3600]".into());
        }
        if !(self.warmup_seconds >= 0.0 && self.warmup_seconds <= 600.0) {
            return Err("warmup_seconds must be in [0, 600]".into());
        }
        if self.ramp_rate.is_nan() || self.ramp_rate <= 0.0 || self.connect_concurrency == 0 {
            return Err("ramp_rate and connect_concurrency must be positive".into());
        }
        // Below the client's 15 s idle timeout.
        if !self
            .keep_alive_seconds
            .is_none_or(|k| (0.1..=14.0).contains(&k))
        {
            return Err("keep_alive_seconds must be in [0.1, 14]".into());
        }
        let kinds = usize::from(self.rooms.is_some())
            + usize::from(self.join_storm.is_some())
            + usize::from(self.soak.is_some())
            + usize::from(self.overload.is_some());
        if kinds != 1 {
            return Err(
                "a scenario has exactly one of [rooms], [join_storm], [soak] and [overload]".into(),
            );
        }
        match (&self.rooms, &self.join_storm, &self.soak, &self.overload) {
            (Some(rooms), ..) => {
                if rooms.count == 0 || rooms.publishers == 0 {
                    return Err("rooms.count and rooms.publishers must be at least 1".into());
                }
                if rooms.audio.is_none() && rooms.video.is_none() {
                    return Err("rooms: at least one of audio and video".into());
                }
                if rooms.count * (rooms.publishers + rooms.subscribers) > 100_000 {
                    return Err("more than 100 000 sessions".into());
                }
                if let Some(video) = &rooms.video {
                    video.validate("video")?;
                }
                if let Some(audio) = &rooms.audio {
                    audio.validate("audio")?;
                }
                if let Some(churn) = &rooms.churn {
                    let period_ok = |p: Option<f64>| p.is_none_or(|p| (0.1..=3600.0).contains(&p));
                    if !period_ok(churn.rebind_every_seconds)
                        || !period_ok(churn.resume_every_seconds)
                    {
                        return Err("churn: periods must be in [0.1, 3600] seconds".into());
                    }
                    if churn.rebind_every_seconds.is_some()
                        && self.transport != TransportChoice::Quic
                    {
                        return Err("churn.rebind_every_seconds needs transport = \"quic\"".into());
                    }
                    if rooms.subscribers == 0 {
                        return Err(
                            "churn: the receivers that move are `subscribers`; add some".into()
                        );
                    }
                }
            }
            (_, Some(storm), ..) => {
                if storm.max_sessions == 0 || storm.max_sessions > 100_000 || storm.room_size == 0 {
                    return Err("join_storm: max_sessions in 1..=100000, room_size >= 1".into());
                }
                if !(storm.start_rate > 0.0 && storm.rate_increase_per_second >= 0.0) {
                    return Err("join_storm: start_rate > 0, rate_increase_per_second >= 0".into());
                }
            }
            (_, _, Some(soak), _) => soak.validate()?,
            (_, _, _, Some(overload)) => overload.validate()?,
            _ => unreachable!("exactly one kind, counted above"),
        }
        Ok(())
    }

    /// Sessions the scenario opens at most.
    pub fn sessions(&self) -> usize {
        match (&self.rooms, &self.join_storm, &self.soak, &self.overload) {
            (Some(r), ..) => r.count * (r.publishers + r.subscribers),
            (_, Some(s), ..) => s.max_sessions,
            (_, _, Some(s), _) => s.sessions,
            (_, _, _, Some(o)) => o.rooms * o.room_size(),
            _ => 0,
        }
    }

    /// Participants in one room at most.
    pub fn room_size(&self) -> usize {
        match (&self.rooms, &self.join_storm, &self.soak, &self.overload) {
            (Some(r), ..) => r.publishers + r.subscribers,
            (_, Some(s), ..) => s.room_size,
            (_, _, Some(s), _) => s.room_size,
            (_, _, _, Some(o)) => o.room_size(),
            _ => 0,
        }
    }
}

impl Audio {
    fn validate(&self, what: &str) -> Result<()> {
        if self.packets_per_second == 0
            || self.packets_per_second > 1000
            || !(40..=1100).contains(&self.payload_bytes)
        {
            return Err(format!(
                "{what}: packets_per_second in 1..=1000, payload_bytes in 40..=1100"
            )
            .into());
        }
        Ok(())
    }
}

impl Video {
    fn validate(&self, what: &str) -> Result<()> {
        if self.bitrate == 0 || self.fps == 0 || self.fps > 120 {
            return Err(format!("{what}: bitrate > 0 and fps in 1..=120").into());
        }
        if !(100..=1150).contains(&self.max_payload_bytes) {
            return Err(format!("{what}.max_payload_bytes must be in 100..=1150").into());
        }
        if !(self.keyframe_interval_seconds > 0.0 && self.keyframe_ratio >= 1.0) {
            return Err(
                format!("{what}: keyframe_interval_seconds > 0, keyframe_ratio >= 1").into(),
            );
        }
        Ok(())
    }
}

impl Overload {
    fn validate(&self) -> Result<()> {
        if self.rooms == 0 || self.publishers == 0 || self.subscribers_per_step == 0 {
            return Err(
                "overload: rooms, publishers and subscribers_per_step must be at least 1".into(),
            );
        }
        if !(1..=1000).contains(&self.steps) {
            return Err("overload: steps in 1..=1000".into());
        }
        if self.rooms * self.room_size() > 100_000 {
            return Err("overload: more than 100 000 sessions".into());
        }
        if !(0.5..=600.0).contains(&self.step_seconds)
            || !(0.05..=10.0).contains(&self.sample_every_seconds)
        {
            return Err(
                "overload: step_seconds in [0.5, 600], sample_every_seconds in [0.05, 10]".into(),
            );
        }
        if !(0.0..=100.0).contains(&self.audio_floor_pct) {
            return Err("overload: audio_floor_pct in [0, 100]".into());
        }
        self.audio.validate("overload.audio")?;
        self.video.validate("overload.video")
    }

    /// Participants in one room at the end: its publishers and every step's subscribers.
    pub fn room_size(&self) -> usize {
        self.publishers + self.subscribers_per_step * self.steps
    }
}

impl Soak {
    fn validate(&self) -> Result<()> {
        if self.sessions == 0 || self.sessions > 100_000 || self.room_size == 0 {
            return Err("soak: sessions in 1..=100000, room_size >= 1".into());
        }
        let seconds_ok = |s: f64| (0.1..=86_400.0).contains(&s);
        if !seconds_ok(self.room_lifetime_seconds)
            || !seconds_ok(self.session_lifetime_seconds)
            || !seconds_ok(self.sample_every_seconds)
            || !self.resume_every_seconds.is_none_or(seconds_ok)
        {
            return Err("soak: lifetimes and periods must be in [0.1, 86400] seconds".into());
        }
        if !(0.0..=1.0).contains(&self.vanish_share) {
            return Err("soak: vanish_share must be in [0, 1]".into());
        }
        if self.publishers_per_room > self.room_size {
            return Err("soak: publishers_per_room must be at most room_size".into());
        }
        if let Some(audio) = &self.audio {
            audio.validate("soak.audio")?;
        }
        if let Some(turn) = &self.turn
            && (turn.every_nth_session == 0 || !seconds_ok(turn.refresh_every_seconds))
        {
            return Err(
                "soak.turn: every_nth_session >= 1, refresh_every_seconds in [0.1, 86400]".into(),
            );
        }
        Ok(())
    }

    /// Rooms open at once.
    pub fn groups(&self) -> usize {
        self.sessions.div_ceil(self.room_size)
    }

    /// The room of `group` at `t` seconds into the soak: its number (how many rooms the group
    /// opened before it) and when it closes, seconds into the soak. The groups' rooms close at
    /// offsets spread evenly over one room lifetime, so that about `groups /
    /// room_lifetime_seconds` rooms close every second rather than all at once.
    pub fn room_at(&self, group: usize, t: f64) -> (u64, f64) {
        let life = self.room_lifetime_seconds;
        let shift = life * (group % self.groups().max(1)) as f64 / self.groups().max(1) as f64;
        let epoch = ((t + shift) / life).floor().max(0.0);
        (epoch as u64, (epoch + 1.0) * life - shift)
    }
}

fn parse_value(text: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_owned()))
}

fn set_path(table: &mut toml::Table, key: &str, value: toml::Value) -> Result<()> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().ok_or("empty key")?;
    let mut at = table;
    for part in parts {
        at = at
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| format!("`{part}` is not a table"))?;
    }
    at.insert(last.to_owned(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FANOUT: &str = r#"
        name = "fanout"
        duration_seconds = 10
        [rooms]
        count = 1
        publishers = 1
        subscribers = 100
        [rooms.video]
        bitrate = 1_500_000
    "#;

    #[test]
    fn overrides_replace_values_and_add_tables() {
        let s = Scenario::parse(
            FANOUT,
            &[
                "rooms.subscribers=7".into(),
                "rooms.audio.packets_per_second=50".into(),
                "transport=webtransport".into(),
            ],
        )
        .unwrap();
        let rooms = s.rooms.unwrap();
        assert_eq!(rooms.subscribers, 7);
        assert_eq!(rooms.audio.unwrap().packets_per_second, 50);
        assert_eq!(s.transport, TransportChoice::Webtransport);
        assert_eq!(rooms.video.unwrap().fps, 30);
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(Scenario::parse(FANOUT, &["rooms.subscriber=7".into()]).is_err());
    }

    const SOAK: &str = r#"
        name = "soak"
        duration_seconds = 60
        [soak]
        sessions = 100
        room_size = 10
        room_lifetime_seconds = 100
    "#;

    #[test]
    fn a_soak_has_defaults_and_takes_overrides() {
        let s = Scenario::parse(SOAK, &["soak.turn.every_nth_session=4".into()]);
        assert!(s.is_err(), "a [soak.turn] needs its refresh period");
        let s = Scenario::parse(
            SOAK,
            &[
                "soak.sessions=2000".into(),
                "soak.turn.every_nth_session=4".into(),
                "soak.turn.refresh_every_seconds=60".into(),
            ],
        )
        .unwrap();
        let soak = s.soak.as_ref().unwrap();
        assert_eq!(s.sessions(), 2000);
        assert_eq!(soak.groups(), 200);
        assert_eq!(soak.session_lifetime_seconds, 120.0);
        assert_eq!(soak.turn.as_ref().unwrap().every_nth_session, 4);
        assert!(soak.audio.is_none());
        assert!(Scenario::parse(SOAK, &["soak.vanish_share=1.5".into()]).is_err());
        assert!(Scenario::parse(SOAK, &["soak.publishers_per_room=11".into()]).is_err());
        let both = format!(
            "{SOAK}\n[join_storm]\nstart_rate = 1.0\nrate_increase_per_second = 0.0\nmax_sessions = 1\nroom_size = 1\n"
        );
        assert!(
            Scenario::parse(&both, &[]).is_err(),
            "one kind per scenario"
        );
    }

    const OVERLOAD: &str = r#"
        name = "overload"
        duration_seconds = 60
        [overload]
        [overload.audio]
        [overload.video]
        bitrate = 320_000
    "#;

    #[test]
    fn an_overload_has_the_defaults_of_its_experiment_and_checks_its_limits() {
        let s = Scenario::parse(OVERLOAD, &[]).unwrap();
        let o = s.overload.as_ref().unwrap();
        assert_eq!((o.rooms, o.publishers, o.subscribers_per_step), (10, 2, 10));
        assert_eq!(
            (o.steps, o.step_seconds, o.sample_every_seconds),
            (12, 5.0, 0.25)
        );
        assert!(o.stop_at_full_shedding);
        assert_eq!(o.audio_floor_pct, 95.0);
        assert_eq!(o.audio.packets_per_second, 50);
        // Every room ends with its publishers and every step's subscribers.
        assert_eq!(s.room_size(), 2 + 10 * 12);
        assert_eq!(s.sessions(), 10 * 122);
        for bad in [
            "overload.subscribers_per_step=0",
            "overload.steps=0",
            "overload.audio_floor_pct=101",
            "overload.sample_every_seconds=0",
            "overload.audio.payload_bytes=8",
            "overload.video.fps=0",
        ] {
            assert!(Scenario::parse(OVERLOAD, &[bad.into()]).is_err(), "{bad}");
        }
        let without_video = OVERLOAD.replace("[overload.video]\n        bitrate = 320_000", "");
        assert!(
            Scenario::parse(&without_video, &[]).is_err(),
            "audio and video are both needed"
        );
        let both = format!("{OVERLOAD}\n[rooms]\ncount = 1\npublishers = 1\n");
        assert!(
            Scenario::parse(&both, &[]).is_err(),
            "one kind per scenario"
        );
    }

    #[test]
    fn the_groups_rooms_close_one_after_the_other_each_once_a_lifetime() {
        let s = Scenario::parse(SOAK, &[]).unwrap();
        let soak = s.soak.unwrap();
        // 10 groups, a lifetime of 100 s: group g's first room closes at 100 - 10 g.
        let first: Vec<f64> = (0..10).map(|g| soak.room_at(g, 0.0).1).collect();
        let expected: Vec<f64> = (0..10).map(|g| 100.0 - 10.0 * g as f64).collect();
        assert_eq!(first, expected);
        for g in 0..10 {
            let (room, closes) = soak.room_at(g, 0.0);
            assert_eq!(room, 0);
            assert_eq!(
                soak.room_at(g, closes - 0.001).0,
                0,
                "still open just before"
            );
            let (next, next_closes) = soak.room_at(g, closes);
            assert_eq!(next, 1, "the next room opens as the first closes");
            assert_eq!(next_closes, closes + 100.0);
        }
    }

    #[test]
    fn shipped_scenarios_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            Scenario::parse(&text, &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }
}
