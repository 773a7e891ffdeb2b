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
    /// Length of the measured window, seconds.
    pub duration_seconds: f64,
    /// `key=value` settings passed to the gateway this tool starts (`--set`), on top of the
    /// limits it raises to fit the scenario.
    #[serde(default)]
    pub gateway_settings: Vec<String>,
    /// Rooms, publishers, subscribers and their media (absent in a join storm).
    pub rooms: Option<Rooms>,
    /// A join storm instead of rooms with media.
    pub join_storm: Option<JoinStorm>,
    /// Seed of the media generators' randomness (frame sizes).
    #[serde(default)]
    pub seed: u64,
    /// Local IP address the sessions' sockets bind to (port 0). By default the unspecified
    /// address, which shares one ephemeral port range (about 28 000 ports on Linux) among all
    /// sessions of the machine; load processes bound to different loopback addresses
    /// (`127.0.0.2`, `127.0.0.3`, …) each have a range of their own.
    #[serde(default)]
    pub bind_ip: Option<std::net::IpAddr>,
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
        match (&self.rooms, &self.join_storm) {
            (Some(rooms), None) => {
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
                    if video.bitrate == 0 || video.fps == 0 || video.fps > 120 {
                        return Err("video: bitrate > 0 and fps in 1..=120".into());
                    }
                    if !(100..=1150).contains(&video.max_payload_bytes) {
                        return Err("video.max_payload_bytes must be in 100..=1150".into());
                    }
                    if !(video.keyframe_interval_seconds > 0.0 && video.keyframe_ratio >= 1.0) {
                        return Err(
                            "video: keyframe_interval_seconds > 0, keyframe_ratio >= 1".into()
                        );
                    }
                }
                if let Some(audio) = &rooms.audio
                    && (audio.packets_per_second == 0
                        || audio.packets_per_second > 1000
                        || !(40..=1100).contains(&audio.payload_bytes))
                {
                    return Err(
                        "audio: packets_per_second in 1..=1000, payload_bytes in 40..=1100".into(),
                    );
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
            (None, Some(storm)) => {
                if storm.max_sessions == 0 || storm.max_sessions > 100_000 || storm.room_size == 0 {
                    return Err("join_storm: max_sessions in 1..=100000, room_size >= 1".into());
                }
                if !(storm.start_rate > 0.0 && storm.rate_increase_per_second >= 0.0) {
                    return Err("join_storm: start_rate > 0, rate_increase_per_second >= 0".into());
                }
            }
            _ => return Err("a scenario has exactly one of [rooms] and [join_storm]".into()),
        }
        Ok(())
    }

    /// Sessions the scenario opens at most.
    pub fn sessions(&self) -> usize {
        match (&self.rooms, &self.join_storm) {
            (Some(r), _) => r.count * (r.publishers + r.subscribers),
            (_, Some(s)) => s.max_sessions,
            _ => 0,
        }
    }

    /// Participants in one room at most.
    pub fn room_size(&self) -> usize {
        match (&self.rooms, &self.join_storm) {
            (Some(r), _) => r.publishers + r.subscribers,
            (_, Some(s)) => s.room_size,
            _ => 0,
        }
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
