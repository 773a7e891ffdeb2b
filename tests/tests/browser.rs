//! The web demo in a real browser: headless Chromium, driven by `web-demo/test/browser.mjs`
//! (playwright-core), against a gateway started in-process; and the demo's JavaScript codec
//! against the golden vectors under node.
//!
//! These tests need node (≥ 20), Chromium at `/usr/bin/chromium` (or `STRAIT_CHROMIUM`) and
//! `npm ci` run in `web-demo/`. `./scripts/test` installs all three; where one is missing the
//! test fails and says what to install — it never passes without having run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use strait_tests::fixture::{TestGateway, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bound of the whole browser run (the script bounds each of its waits to 30 s).
const BROWSER_LIMIT: Duration = Duration::from_secs(180);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is inside the repository")
        .to_path_buf()
}

const SETUP_HINT: &str = "./scripts/test installs what the browser tests need";

/// Fails with words when node is not installed.
fn require_node() {
    let found = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "node is not installed: install Node.js 20 or newer (Debian: `apt-get install nodejs`); {SETUP_HINT}"
    );
}

/// The Chromium binary, or a failure that says how to install it.
fn require_chromium() -> PathBuf {
    let path = PathBuf::from(
        std::env::var("STRAIT_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
    );
    assert!(
        path.exists(),
        "Chromium is not installed at {}: `apt-get update && apt-get install -y chromium` \
         (or set STRAIT_CHROMIUM to a Chromium binary); {SETUP_HINT}",
        path.display()
    );
    path
}

fn require_playwright(root: &Path) {
    let module = root.join("web-demo/node_modules/playwright-core/package.json");
    assert!(
        module.exists(),
        "playwright-core is not installed: run `npm ci` in web-demo/; {SETUP_HINT}"
    );
}

/// Kills a child's whole process group (node and the Chromium it started) when dropped, so a
/// hung or failed test leaves no browser behind.
struct ProcessGroup(u32);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // `kill -KILL -- -PGID`; the group is gone already when everything exited cleanly.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0)])
            .stderr(Stdio::null())
            .status();
    }
}

struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `node <args>` in the repository root in its own process group, bounded by `limit`;
/// the group is killed on timeout, panic or return.
async fn run_node(args: &[&str], env: &[(&str, String)], limit: Duration) -> Finished {
    let mut command = tokio::process::Command::new("node");
    command
        .args(args)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    let child = command.spawn().expect("start node");
    let _group = ProcessGroup(child.id().expect("node has a pid"));
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("node {args:?} did not finish within {limit:?}; killed"))
        .expect("wait for node");
    Finished {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A gateway whose WebTransport origin policy is the default one: only its own HTTP origin.
async fn gateway() -> TestGateway {
    TestGateway::start_with(|config| config.webtransport.allowed_origins = Vec::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_see_and_hear_each_other_and_a_wrong_certificate_is_explained() {
    let root = repo_root();
    require_node();
    let chromium = require_chromium();
    require_playwright(&root);

    let gw = gateway().await;
    let demo = format!("http://{}/", gw.http_addr());
    let artifacts = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"))
        .join("browser-artifacts");
    let run = run_node(
        &["web-demo/test/browser.mjs"],
        &[
            ("STRAIT_DEMO_URL", demo),
            ("STRAIT_CHROMIUM", chromium.display().to_string()),
            ("STRAIT_ARTIFACTS", artifacts.display().to_string()),
        ],
        BROWSER_LIMIT,
    )
    .await;
    println!("{}", run.stdout);
    eprintln!("{}", run.stderr);
    assert!(
        run.status.success(),
        "the browser test failed ({}); its output is above",
        run.status
    );
    gw.stop().await;
}

#[tokio::test]
async fn the_javascript_codec_passes_every_golden_vector() {
    require_node();
    let run = run_node(
        &["--test", "--test-reporter=tap", "web-demo/test/"],
        &[],
        WAIT * 6,
    )
    .await;
    println!("{}", run.stdout);
    eprintln!("{}", run.stderr);
    assert!(run.status.success(), "node --test web-demo/test/ failed");
    assert!(
        run.stdout.contains("# fail 0"),
        "node's test runner reported failures"
    );
}

/// A raw HTTP/1.1 GET: status code, `Content-Type`, body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect http");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    (status, content_type, response[split + 4..].to_vec())
}

#[tokio::test]
async fn the_gateway_serves_every_file_of_the_demo_from_its_binary() {
    let gw = gateway().await;
    let dir = repo_root().join("web-demo");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("read web-demo/")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".js") || name.ends_with(".html") || name.ends_with(".css"))
        .collect();
    files.sort();
    assert!(files.contains(&"protocol.js".to_owned()), "{files:?}");
    for file in &files {
        let (status, content_type, body) = get(gw.http_addr(), &format!("/{file}")).await;
        assert_eq!(
            status, 200,
            "/{file} is not served: add it to gateway::http::DEMO"
        );
        let expected = match file.rsplit('.').next() {
            Some("js") => "text/javascript; charset=utf-8",
            Some("html") => "text/html; charset=utf-8",
            _ => "text/css; charset=utf-8",
        };
        assert_eq!(content_type, expected, "/{file}");
        let on_disk = std::fs::read(dir.join(file)).expect("read the file");
        assert!(body == on_disk, "/{file} differs from web-demo/{file}");
    }
    let (status, content_type, body) = get(gw.http_addr(), "/").await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/html; charset=utf-8");
    assert!(String::from_utf8_lossy(&body).contains("<script type=\"module\" src=\"app.js\">"));
    gw.stop().await;
}
