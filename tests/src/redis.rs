//! A real `redis-server` for the cluster tests, started by the test on a Unix socket in a
//! directory of its own (no port to race for, nothing persisted), and killed when dropped.
//!
//! The binary is `redis-server` from `PATH`, or `STRAIT_REDIS_SERVER`; `./scripts/test`
//! installs Debian's `redis-server`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use futures::StreamExt as _;
use tempfile::TempDir;

use crate::fixture::WAIT;

/// A running `redis-server`.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    dir: TempDir,
    tls: Option<Tls>,
}

/// TLS on a TCP port, beside the Unix socket.
#[derive(Debug, Clone)]
struct Tls {
    port: u16,
    cert: PathBuf,
    key: PathBuf,
}

impl RedisServer {
    /// Starts one and waits until it answers `PING` (at most 10 s).
    pub async fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("a directory for redis");
        let mut server = RedisServer {
            child: None,
            dir,
            tls: None,
        };
        server.restart().await;
        server
    }

    /// Starts one that also serves TLS on a loopback TCP port with `cert` and `key` (PEM
    /// files; clients are not asked for certificates). The port is one the OS gave a moment
    /// before (bound, then released for redis-server to take).
    pub async fn start_tls(cert: PathBuf, key: PathBuf) -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = tempfile::tempdir().expect("a directory for redis");
        let mut server = RedisServer {
            child: None,
            dir,
            tls: Some(Tls { port, cert, key }),
        };
        server.restart().await;
        server
    }

    /// `rediss://127.0.0.1:<port>` of a server started with [`start_tls`](Self::start_tls).
    pub fn tls_url(&self) -> Option<String> {
        self.tls
            .as_ref()
            .map(|tls| format!("rediss://127.0.0.1:{}", tls.port))
    }

    /// The socket's path.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// The URL for `cluster.redis_url`.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    /// Kills the server (as a crash would: nothing is saved); [`restart`](Self::restart) brings
    /// up an empty one on the same socket.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.socket());
    }

    /// Starts the server (again) and waits until it answers.
    pub async fn restart(&mut self) {
        self.kill();
        let binary =
            std::env::var_os("STRAIT_REDIS_SERVER").unwrap_or_else(|| "redis-server".into());
        let mut command = Command::new(&binary);
        command
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(self.socket())
            .args(["--unixsocketperm", "700"])
            .arg("--dir")
            .arg(self.dir.path());
        if let Some(tls) = &self.tls {
            command
                .args(["--bind", "127.0.0.1", "--tls-port"])
                .arg(tls.port.to_string())
                .arg("--tls-cert-file")
                .arg(&tls.cert)
                .arg("--tls-key-file")
                .arg(&tls.key)
                .args(["--tls-auth-clients", "no"]);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e}; install redis-server (apt-get install redis-server, \
                     as ./scripts/test does) or set STRAIT_REDIS_SERVER",
                    binary.to_string_lossy()
                )
            });
        // redis-server says when it accepts connections; its log is read (and kept being read,
        // so that it never blocks on a full pipe) on a thread of its own.
        let stdout = child.stdout.take().expect("a stdout pipe");
        let (ready, is_ready) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut ready = Some(ready);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // "The server is now ready to accept connections at <socket>" (7.0).
                if line
                    .to_ascii_lowercase()
                    .contains("ready to accept connections")
                    && let Some(ready) = ready.take()
                {
                    let _ = ready.send(());
                }
            }
        });
        self.child = Some(child);
        tokio::time::timeout(WAIT, is_ready)
            .await
            .expect("redis-server ready in time")
            .expect("redis-server said it was ready (it exited before)");
    }

    /// Waits (at most [`WAIT`]) until `read` gives a value, and returns it: `read` looks at
    /// Redis now, and again at each change of any key (keyspace notifications, which this
    /// turns on), expiries included.
    pub async fn wait_until<T>(
        &self,
        what: &str,
        mut read: impl AsyncFnMut(&RedisServer) -> Option<T>,
    ) -> T {
        let client = redis::Client::open(self.url()).expect("redis client");
        let mut conn = self.connection().await.expect("redis connection");
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("notify-keyspace-events")
            .arg("KA")
            .query_async(&mut conn)
            .await
            .expect("keyspace notifications on");
        let mut pubsub = client
            .get_async_pubsub()
            .await
            .expect("a pubsub connection");
        pubsub
            .psubscribe("__keyspace@*__:*")
            .await
            .expect("subscribed to keyspace notifications");
        let mut changes = pubsub.on_message();
        // Subscribed before the first look: no change between the two is missed.
        let waited = tokio::time::timeout(WAIT, async {
            loop {
                if let Some(value) = read(self).await {
                    return value;
                }
                changes
                    .next()
                    .await
                    .expect("the notification stream is open");
            }
        })
        .await;
        waited.unwrap_or_else(|_| panic!("waited in vain for {what}"))
    }

    /// A connection for the test's own commands.
    pub async fn connection(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        redis::Client::open(self.url())?
            .get_multiplexed_async_connection()
            .await
    }

    /// The value of `key` (`None` when it does not exist).
    pub async fn get(&self, key: &str) -> Option<String> {
        let mut conn = self.connection().await.expect("redis connection");
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("GET")
    }

    /// Field `field` of hash `key`.
    pub async fn hget(&self, key: &str, field: &str) -> Option<String> {
        let mut conn = self.connection().await.expect("redis connection");
        redis::cmd("HGET")
            .arg(key)
            .arg(field)
            .query_async(&mut conn)
            .await
            .expect("HGET")
    }

    /// Every key matching `pattern`, sorted.
    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        let mut conn = self.connection().await.expect("redis connection");
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut conn)
            .await
            .expect("KEYS");
        keys.sort();
        keys
    }

    /// `FLUSHALL`.
    pub async fn flush_all(&self) {
        let mut conn = self.connection().await.expect("redis connection");
        let _: () = redis::cmd("FLUSHALL")
            .query_async(&mut conn)
            .await
            .expect("FLUSHALL");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How fast a test cluster's nodes renew and give up their leases.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// `cluster.heartbeat`.
    pub heartbeat: std::time::Duration,
    /// `cluster.lease`.
    pub lease: std::time::Duration,
    /// `cluster.room_lease`.
    pub room_lease: std::time::Duration,
}

/// Makes `config` a node named `id` of the test cluster on `redis`: the cluster's one API key
/// (`key_id`, `secret`) and resume secret, shared by every node, and `timings`.
pub fn join_cluster(
    config: &mut strait_gateway::config::Config,
    redis: &RedisServer,
    id: &str,
    (key_id, secret, resume_secret): (&str, &str, &str),
    timings: Timings,
) {
    config.auth.keys = vec![strait_gateway::config::ApiKeyConfig {
        id: key_id.into(),
        secret: secret.into(),
    }];
    config.auth.resume_secret = Some(resume_secret.into());
    config.cluster.redis_url = Some(redis.url());
    config.cluster.node_id = Some(id.into());
    config.cluster.heartbeat = timings.heartbeat;
    config.cluster.lease = timings.lease;
    config.cluster.room_lease = timings.room_lease;
}

/// A raw-QUIC client of the node process `node` that goes on through `fallback` when `node`
/// dies: it trusts both nodes' certificates, counts the connection lost after 2 s of silence and
/// tries again for up to ~20 s (40 attempts, backoff capped at 0.5 s).
pub fn failover_client(
    node: &strait_load::gateway::GatewayChild,
    fallback: &crate::fixture::TestGateway,
    token: String,
) -> strait_client::ClientConfig {
    let fallback_hash = *fallback.gateway.cert_fingerprint().as_bytes();
    let mut config = fallback.client_config(strait_client::Transport::Quic, token);
    config.server = node.quic;
    config.server_name = None;
    config.trust = strait_client::Trust::Hashes(vec![node.cert, fallback_hash]);
    config.fallback_servers = vec![fallback.quic_addr()];
    config.idle_timeout = std::time::Duration::from_secs(2);
    config.keep_alive = std::time::Duration::from_millis(500);
    config.backoff = strait_client::Backoff {
        initial: std::time::Duration::from_millis(100),
        max: std::time::Duration::from_millis(500),
        attempts: 40,
    };
    config
}

/// The count of `event` in `gateway`'s `strait_cluster_events_total` (placements, redirects,
/// Redis errors…).
pub async fn cluster_events(gateway: &crate::fixture::TestGateway, event: &str) -> f64 {
    let body = crate::fixture::http_get(gateway.http_addr(), "/metrics").await;
    crate::fixture::metric_value_where(
        &body,
        "strait_cluster_events_total",
        &format!("event=\"{event}\""),
    )
}
