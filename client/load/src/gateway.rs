//! The `strait` binary as a child process on loopback, and the few HTTP calls the load tools
//! make to it (`POST /v1/dev/token`, `GET /metrics`).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStderr, Command};

use super::{Error, Result};

/// The gateway process; killed when dropped.
#[derive(Debug)]
pub struct GatewayChild {
    child: Child,
    /// Its process id, for `/proc`.
    pub pid: u32,
    /// The QUIC / WebTransport address it serves.
    pub quic: SocketAddr,
    /// The HTTP address (tokens, metrics).
    pub http: SocketAddr,
    /// SHA-256 of its certificate, to pin.
    pub cert: [u8; 32],
}

impl Drop for GatewayChild {
    fn drop(&mut self) {
        // SIGKILL; `kill_on_drop` on the command is the second line of defence.
        let _ = self.child.start_kill();
    }
}

impl GatewayChild {
    /// Starts `strait serve` on loopback port 0 (QUIC, HTTP and the WebRTC bridge's UDP port)
    /// with `settings` (`key=value`, each passed as `--set`) and `log.filter=warn,rtc=error`, and
    /// reads the addresses and the certificate fingerprint it prints.
    pub async fn start(strait: &Path, settings: &[String]) -> Result<GatewayChild> {
        Self::start_on(strait, "127.0.0.1:0".parse()?, settings).await
    }

    /// [`start`](Self::start) with the QUIC port at `quic` (a node started again where it ran
    /// before).
    pub async fn start_on(
        strait: &Path,
        quic: SocketAddr,
        settings: &[String],
    ) -> Result<GatewayChild> {
        let mut command = Command::new(strait);
        command
            .arg("serve")
            .arg("--quic-listen")
            .arg(quic.to_string())
            .args([
                "--http-listen",
                "127.0.0.1:0",
                "--webrtc-listen",
                "127.0.0.1:0",
            ]);
        // Capacity is what the scenarios measure: load shedding would refuse their joins past
        // it. A scenario that studies shedding turns it back on (a later `--set` wins).
        command.arg("--set").arg("shedding.enabled=false");
        for setting in settings {
            command.arg("--set").arg(setting);
        }
        command
            .arg("--set")
            .arg("log.filter=warn,rtc=error")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", strait.display()))?;
        let pid = child.id().ok_or("the gateway exited at once")?;
        let stderr = child.stderr.take().ok_or("no stderr pipe")?;
        let mut lines = BufReader::new(stderr).lines();
        let mut quic = None;
        let mut http = None;
        let mut cert = None;
        let mut seen = String::new();
        let banner = async {
            while quic.is_none() || http.is_none() || cert.is_none() {
                let Some(line) = lines.next_line().await? else {
                    return Err::<(), Error>(
                        format!("the gateway exited before it was serving:\n{seen}").into(),
                    );
                };
                let _ = writeln!(seen, "{line}");
                if line.contains("QUIC / WebTransport") {
                    quic = line.split_whitespace().find_map(|w| w.parse().ok());
                } else if let Some(rest) = line.split("http://").nth(1)
                    && line.trim_start().starts_with("HTTP")
                {
                    http = rest.split_whitespace().next().and_then(|a| a.parse().ok());
                } else if line.contains("certificate sha-256") {
                    cert = line.split_whitespace().last().and_then(parse_fingerprint);
                }
            }
            Ok(())
        };
        tokio::time::timeout(Duration::from_secs(30), banner)
            .await
            .map_err(|_| "the gateway did not print its addresses within 30 s")??;
        // Keep draining stderr so the child never blocks on a full pipe; show what it logs.
        tokio::spawn(forward_stderr(lines));
        Ok(GatewayChild {
            child,
            pid,
            quic: quic.ok_or("no QUIC address")?,
            http: http.ok_or("no HTTP address")?,
            cert: cert.ok_or("no certificate fingerprint")?,
        })
    }

    /// Kills the child and waits for it.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

async fn forward_stderr(mut lines: tokio::io::Lines<BufReader<ChildStderr>>) {
    while let Ok(Some(line)) = lines.next_line().await {
        // The rest of the start banner (the development key) is not news; log lines are.
        if !line.starts_with("  ") {
            eprintln!("gateway: {line}");
        }
    }
}

/// `AA:BB:…` (32 bytes) into bytes.
pub fn parse_fingerprint(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    let mut parts = s.split(':');
    for byte in &mut out {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// One HTTP/1.1 request on its own connection; the body of a 200 answer.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<String> {
    let (status, head, body) = request(addr, method, path, body).await?;
    if status != 200 {
        return Err(format!("{method} {path}: {head}: {body}").into());
    }
    Ok(body)
}

/// Whether the gateway says it is ready (`GET /readyz`: 200 yes, 503 no).
pub async fn ready(http_addr: SocketAddr) -> Result<bool> {
    match request(http_addr, "GET", "/readyz", None).await? {
        (200, ..) => Ok(true),
        (503, ..) => Ok(false),
        (_, status, body) => Err(format!("GET /readyz: {status}: {body}").into()),
    }
}

/// One HTTP/1.1 request on its own connection: the answer's status code, status line and body.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String, String)> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let mut request =
            format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        if let Some(body) = body {
            let _ = write!(
                request,
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            );
        }
        request.push_str("\r\n");
        request.push_str(body.unwrap_or(""));
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| format!("{method} {path}: no answer within 10 s"))??;
    let text = String::from_utf8(response).map_err(|_| format!("{method} {path}: not UTF-8"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{method} {path}: no header end"))?;
    let status = head.lines().next().unwrap_or_default();
    let code = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{method} {path}: no status in `{status}`"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((code, status.to_owned(), body))
}

/// The body of an HTTP/1.1 response sent with `Transfer-Encoding: chunked`, joined (chunk
/// extensions ignored; stops at the last chunk or at anything malformed).
pub fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
        else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// A participant token for `identity` in `room` from the development endpoint.
pub async fn mint_token(http_addr: SocketAddr, room: &str, identity: &str) -> Result<String> {
    let body = serde_json::json!({ "room": room, "identity": identity }).to_string();
    let answer = http(http_addr, "POST", "/v1/dev/token", Some(&body)).await?;
    let value: serde_json::Value = serde_json::from_str(&answer)?;
    Ok(value
        .get("token")
        .and_then(|t| t.as_str())
        .ok_or("no token in the answer")?
        .to_owned())
}

/// One metric from `/metrics`, summed over the samples whose labels contain `label` (`""` for
/// all of them).
pub async fn metric(http_addr: SocketAddr, name: &str, label: &str) -> Result<f64> {
    let body = http(http_addr, "GET", "/metrics", None).await?;
    Ok(body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(key, _)| key.split('{').next() == Some(name) && key.contains(label))
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum())
}

/// The counters and gauges of `/metrics` the load tools read.
#[derive(Debug, Default, Clone)]
pub struct Scrape {
    /// `strait_packets_in_total`, summed over its labels.
    pub packets_in: u64,
    /// `strait_packets_out_total`, summed over its labels.
    pub packets_out: u64,
    /// `strait_drops_total` by `reason`, summed over its other labels.
    pub drops: Vec<(String, u64)>,
    /// `strait_sessions`, summed over its labels.
    pub sessions: u64,
    /// `strait_participants`.
    pub participants: u64,
    /// `strait_rooms`.
    pub rooms: u64,
    /// `strait_turn_allocations`.
    pub turn_allocations: u64,
    /// `strait_turn_drops_total` by `reason`.
    pub turn_drops: Vec<(String, u64)>,
    /// `strait_refusals_total` by `reason`.
    pub refusals: Vec<(String, u64)>,
    /// `strait_worker_shed_level`, the highest over the media workers.
    pub shed_level: u64,
    /// `strait_worker_queue_delay_seconds`, the highest over the media workers.
    pub queue_delay_seconds: f64,
    /// `strait_worker_busy_ratio`, the highest over the media workers.
    pub busy_ratio: f64,
}

impl Scrape {
    /// Drops by reason between `before` and `self`, the reasons that moved only.
    pub fn drops_since(&self, before: &Scrape) -> Vec<(String, u64)> {
        moved(&self.drops, &before.drops)
    }

    /// Refusals by reason between `before` and `self`, the reasons that moved only.
    pub fn refusals_since(&self, before: &Scrape) -> Vec<(String, u64)> {
        moved(&self.refusals, &before.refusals)
    }

    /// `strait_drops_total{reason}` now (0 when never counted).
    pub fn drops_of(&self, reason: &str) -> u64 {
        count_of(&self.drops, reason)
    }

    /// `strait_refusals_total{reason}` now (0 when never counted).
    pub fn refusals_of(&self, reason: &str) -> u64 {
        count_of(&self.refusals, reason)
    }
}

fn count_of(counts: &[(String, u64)], reason: &str) -> u64 {
    counts
        .iter()
        .find(|(r, _)| r == reason)
        .map_or(0, |(_, v)| *v)
}

fn moved(after: &[(String, u64)], before: &[(String, u64)]) -> Vec<(String, u64)> {
    after
        .iter()
        .map(|(reason, now)| (reason.clone(), now.saturating_sub(count_of(before, reason))))
        .filter(|(_, d)| *d > 0)
        .collect()
}

/// Reads the packet and drop counters from `/metrics`.
pub async fn scrape(http_addr: SocketAddr) -> Result<Scrape> {
    let body = http(http_addr, "GET", "/metrics", None).await?;
    let mut s = Scrape::default();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(exact) = value.parse::<f64>() else {
            continue;
        };
        let value = exact as u64;
        let name = key.split('{').next().unwrap_or(key);
        match name {
            "strait_worker_shed_level" => s.shed_level = s.shed_level.max(value),
            "strait_worker_queue_delay_seconds" => {
                s.queue_delay_seconds = s.queue_delay_seconds.max(exact);
            }
            "strait_worker_busy_ratio" => s.busy_ratio = s.busy_ratio.max(exact),
            "strait_packets_in_total" => s.packets_in += value,
            "strait_packets_out_total" => s.packets_out += value,
            "strait_sessions" => s.sessions += value,
            "strait_participants" => s.participants = value,
            "strait_rooms" => s.rooms = value,
            "strait_turn_allocations" => s.turn_allocations = value,
            "strait_drops_total" | "strait_turn_drops_total" | "strait_refusals_total" => {
                let reason = key
                    .split("reason=\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .unwrap_or("?");
                let drops = match name {
                    "strait_drops_total" => &mut s.drops,
                    "strait_turn_drops_total" => &mut s.turn_drops,
                    _ => &mut s.refusals,
                };
                match drops.iter_mut().find(|(r, _)| r == reason) {
                    Some((_, v)) => *v += value,
                    None => drops.push((reason.to_owned(), value)),
                }
            }
            _ => {}
        }
    }
    Ok(s)
}
