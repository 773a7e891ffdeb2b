//! The `strait` binary: SIGTERM with a connected client sends it go-away and exits within the drain
//! deadline; SIGHUP rotates the TURN secrets; `config print` redacts secrets; `token create`
//! needs a configured key.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use strait_client::{Client, ClientConfig, SessionEvent, Trust};
use strait_protocol::ErrorCode;

const WAIT: Duration = Duration::from_secs(15);

/// Kills the child when dropped, whatever happened in the test.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What `strait serve` prints at start.
struct Started {
    quic: SocketAddr,
    http: SocketAddr,
    fingerprint: [u8; 32],
}

fn parse_fingerprint(s: &str) -> [u8; 32] {
    let bytes: Vec<u8> = s
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).expect("hex"))
        .collect();
    bytes.try_into().expect("32 bytes")
}

fn start(args: &[&str]) -> (Killed, Started, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_strait"))
        .args([
            "serve",
            "--quic-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--webrtc-listen",
            "127.0.0.1:0",
        ])
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("strait starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let child = Killed(child);
    let (mut quic, mut http, mut fingerprint) = (None, None, None);
    let deadline = Instant::now() + WAIT;
    while quic.is_none() || http.is_none() || fingerprint.is_none() {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the start banner in time");
        let words: Vec<&str> = line.split_whitespace().collect();
        if line.trim_start().starts_with("QUIC / WebTransport") {
            quic = words.get(3).and_then(|w| w.parse().ok());
        } else if line.trim_start().starts_with("HTTP") {
            http = words
                .get(1)
                .and_then(|w| w.trim_start_matches("http://").parse().ok());
        } else if line.trim_start().starts_with("certificate sha-256") {
            fingerprint = words.get(2).map(|w| parse_fingerprint(w));
        }
    }
    let started = Started {
        quic: quic.expect("quic"),
        http: http.expect("http"),
        fingerprint: fingerprint.expect("fingerprint"),
    };
    (child, started, rx)
}

async fn dev_token(http: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = r#"{"room":"signals","identity":"alice"}"#;
    let mut stream = tokio::net::TcpStream::connect(http).await.expect("connect");
    let request = format!(
        "POST /v1/dev/token HTTP/1.1\r\nHost: {http}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let json = response.split_once("\r\n\r\n").expect("body").1;
    let start = json.find("\"token\":\"").expect("token field") + 9;
    json[start..].split('"').next().expect("token").to_owned()
}

/// `POST /v1/turn/credentials` with `token`: the minted username and password.
async fn turn_credentials(http: SocketAddr, token: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(http).await.expect("connect");
    let request = format!(
        "POST /v1/turn/credentials HTTP/1.1\r\nHost: {http}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let json = response.split_once("\r\n\r\n").expect("body").1;
    let field = |name: &str| {
        let key = format!("\"{name}\":\"");
        let start = json
            .find(&key)
            .unwrap_or_else(|| panic!("{name} in {json}"))
            + key.len();
        json[start..].split('"').next().expect(name).to_owned()
    };
    (field("username"), field("password"))
}

/// Waits for a line of the child's log that contains `what`.
fn wait_for_line(lines: &mpsc::Receiver<String>, what: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no log line with {what:?} in time"));
        if line.contains(what) {
            return line;
        }
    }
}

fn signal(child: &Killed, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rotates_the_turn_secrets_and_a_broken_file_changes_nothing() {
    const FIRST: &str = "the first secret, long enough";
    const SECOND: &str = "the second secret, long enough";
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("strait.toml");
    let write = |secrets: &[&str], extra: &str| {
        let list: Vec<String> = secrets.iter().map(|s| format!("\"{s}\"")).collect();
        std::fs::write(
            &path,
            format!(
                "{extra}[turn]\nenabled = true\nudp_listen = \"127.0.0.1:0\"\n\
                 tcp_listen = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\n\
                 secrets = [{}]\n",
                list.join(", ")
            ),
        )
        .expect("write the configuration");
    };
    let password_under = |secret: &str, username: &str| {
        strait_media::turn::credentials::TurnSecret::new(secret.as_bytes().to_vec())
            .password(username)
    };
    write(&[FIRST], "");
    let (child, started, lines) = start(&["--config", path.to_str().expect("a UTF-8 path")]);
    let token = dev_token(started.http).await;
    let (username, password) = turn_credentials(started.http, &token).await;
    assert_eq!(password, password_under(FIRST, &username));

    // The new secret first, the old one kept: the new one mints from now on.
    write(&[SECOND, FIRST], "");
    signal(&child, "HUP");
    wait_for_line(&lines, "TURN secrets replaced");
    let (username, password) = turn_credentials(started.http, &token).await;
    assert_eq!(password, password_under(SECOND, &username));

    // A file that does not load changes nothing, and the gateway keeps serving.
    std::fs::write(&path, "[turn\nenabled = maybe\n").expect("write");
    signal(&child, "HUP");
    wait_for_line(&lines, "configuration reload refused");
    let (username, password) = turn_credentials(started.http, &token).await;
    assert_eq!(password, password_under(SECOND, &username));

    // Other settings are reported as waiting for a restart.
    write(&[SECOND], "[limits]\nmax_sessions = 77\n");
    signal(&child, "HUP");
    wait_for_line(&lines, "TURN secrets replaced");
    wait_for_line(&lines, "apply at the next start");
    drop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_connected_clients_and_exits_within_the_deadline() {
    let (mut child, started, _lines) = start(&["--set", "shutdown.drain_deadline=\"2s\""]);
    let token = dev_token(started.http).await;
    let mut config = ClientConfig::new(
        started.quic,
        Trust::Hashes(vec![started.fingerprint]),
        token,
    );
    config.auto_resume = false;
    let session = tokio::time::timeout(WAIT, Client::connect(config))
        .await
        .expect("connect in time")
        .expect("connect");
    session.join("signals").await.expect("join");

    let pid = child.0.id().to_string();
    let sent = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());

    let code = tokio::time::timeout(WAIT, async {
        loop {
            match session.next_event().await {
                Some(SessionEvent::GoAway { code, .. }) => return code,
                Some(_) => {}
                None => panic!("session ended before go-away"),
            }
        }
    })
    .await
    .expect("go-away in time");
    assert_eq!(code, ErrorCode::GOING_AWAY);

    // The process exits by itself once the deadline has passed (the client does not leave).
    let exit = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = child.0.try_wait().expect("wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .expect("join");
    let status = exit.expect("strait exits after SIGTERM");
    assert!(status.success(), "clean exit: {status:?}");
    eprintln!(
        "exited {:?} after SIGTERM (drain deadline 2s)",
        sent.elapsed()
    );
}

#[test]
fn config_print_redacts_secrets() {
    let secret = "s".repeat(40);
    let output = Command::new(env!("CARGO_BIN_EXE_strait"))
        .args(["config", "print", "--set"])
        .arg(format!(
            "auth.keys=[{{id = \"k1\", secret = \"{secret}\"}}]"
        ))
        .output()
        .expect("runs");
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).expect("utf-8");
    assert!(text.contains("k1"));
    assert!(!text.contains(&secret), "the secret is not printed");
    assert!(text.contains("<redacted>"));
}

#[test]
fn public_ips_for_the_webrtc_bridge_come_from_repeated_flags() {
    let output = Command::new(env!("CARGO_BIN_EXE_strait"))
        .args([
            "config",
            "print",
            "--webrtc-listen",
            "0.0.0.0:4478",
            "--public-ip",
            "203.0.113.7",
            "--public-ip",
            "2001:db8::1",
        ])
        .output()
        .expect("runs");
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).expect("utf-8");
    assert!(text.contains("listen = \"0.0.0.0:4478\""), "{text}");
    assert!(text.contains("\"203.0.113.7\""), "{text}");
    assert!(text.contains("\"2001:db8::1\""), "{text}");

    // An unspecified listen address needs an address to advertise.
    let output = Command::new(env!("CARGO_BIN_EXE_strait"))
        .args(["config", "print", "--webrtc-listen", "0.0.0.0:4478"])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("webrtc.public_ips"), "{stderr}");
}

#[test]
fn unknown_config_keys_are_refused_with_their_name() {
    let output = Command::new(env!("CARGO_BIN_EXE_strait"))
        .args([
            "config",
            "print",
            "--set",
            "quic.listen_adress=\"1.2.3.4:5\"",
        ])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("listen_adress"), "{stderr}");
}

#[test]
fn token_create_mints_with_a_configured_key_and_explains_dev_mode() {
    let secret = "k".repeat(40);
    let output = Command::new(env!("CARGO_BIN_EXE_strait"))
        .args([
            "token",
            "create",
            "--room",
            "r1",
            "--identity",
            "bob",
            "--set",
        ])
        .arg(format!(
            "auth.keys=[{{id = \"main\", secret = \"{secret}\"}}]"
        ))
        .output()
        .expect("runs");
    assert!(output.status.success(), "{output:?}");
    let token = String::from_utf8(output.stdout).expect("utf-8");
    assert_eq!(token.trim().split('.').count(), 3, "a JWT");

    let output = Command::new(env!("CARGO_BIN_EXE_strait"))
        .args(["token", "create", "--room", "r1", "--identity", "bob"])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no API key"));
}

#[test]
fn serve_raises_its_open_files_limit_and_says_so() {
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).expect("getrlimit");
    if hard <= 512 {
        eprintln!("the hard open-files limit here is {hard}: nothing to raise");
        return;
    }
    // Started from a shell with a low soft limit, as a default 1024 would be.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(
            "ulimit -S -n 512 && exec \"$0\" serve --quic-listen 127.0.0.1:0 \
             --http-listen 127.0.0.1:0 --webrtc-listen 127.0.0.1:0",
        )
        .arg(env!("CARGO_BIN_EXE_strait"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("strait starts");
    let stderr = child.stderr.take().expect("stderr");
    let child = Killed(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + WAIT;
    let line = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the open-files line of the banner in time");
        if line.contains("open files limit") {
            break line;
        }
    };
    assert!(
        line.ends_with(&format!("open files limit     {hard} (raised from 512)")),
        "{line}"
    );
    drop(child);
}
